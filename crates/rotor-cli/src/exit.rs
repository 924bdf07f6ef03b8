//! The process exit codes, as `rotor --help` lists them.

use crate::client::ServiceError;

/// How a `rotor` command ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ExitCode {
    /// It did what was asked.
    Success,
    /// Any other error: bad local files, a wrong state, a service error that is not one below.
    Error,
    /// The command line is not valid.
    Usage,
    /// A unit verified the command and refused it; nothing changed on that unit.
    RefusedByUnit,
    /// The service or a unit could not be reached.
    Unreachable,
    /// A unit's identity or response did not verify, or an audit chain did not.
    NotVerified,
    /// The service refused the API key or token (HTTP 401 or 403): unknown or expired key, or a
    /// role or instance it does not cover.
    AccessDenied,
}

/// The text `rotor --help` ends with.
pub const HELP: &str = "Exit codes: 0 success, 1 error, 2 usage, 3 refused by a unit (nothing changed on it), \
4 service or unit unreachable, 5 a unit's identity or response did not verify, \
6 authentication or authorization failed at the service (a bad or expired API key, or a role \
that does not allow the command).";

impl ExitCode {
    /// The code for an error: the first typed service error in its chain decides.
    pub fn of(err: &anyhow::Error) -> Self {
        if err.chain().any(|e| {
            e.downcast_ref::<crate::session::TrustError>().is_some()
                || e.is::<crate::cmd::audit::AuditNotVerified>()
        }) {
            return Self::NotVerified;
        }
        let Some(service) = err.chain().find_map(|e| e.downcast_ref::<ServiceError>()) else {
            return Self::Error;
        };
        match service {
            ServiceError::UnitRefused(_) => Self::RefusedByUnit,
            ServiceError::Unreachable(_) => Self::Unreachable,
            ServiceError::NotAuthentic | ServiceError::UnitUntrusted(_) => Self::NotVerified,
            ServiceError::AccessDenied { .. } => Self::AccessDenied,
            ServiceError::Failed { .. } | ServiceError::Unexpected(_) => Self::Error,
        }
    }

    /// The number the process exits with.
    pub fn code(self) -> i32 {
        match self {
            Self::Success => 0,
            Self::Error => 1,
            Self::Usage => 2,
            Self::RefusedByUnit => 3,
            Self::Unreachable => 4,
            Self::NotVerified => 5,
            Self::AccessDenied => 6,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use anyhow::Context as _;

    #[test]
    fn a_typed_error_decides_the_code_through_added_context() {
        let denied: anyhow::Error = ServiceError::AccessDenied {
            what: "the API key",
            message: "unknown".to_owned(),
        }
        .into();
        assert_eq!(ExitCode::of(&denied), ExitCode::AccessDenied);
        let refused = Err::<(), _>(ServiceError::UnitRefused(rotor_proto::error::ErrorBody {
            code: rotor_unit::error::ErrorCode::VpMismatch,
            message: "m".to_owned(),
        }))
        .context("crypto unit 1 refused to commit")
        .unwrap_err();
        assert_eq!(ExitCode::of(&refused).code(), 3);
        let down: anyhow::Error = ServiceError::Unreachable("x".to_owned()).into();
        assert_eq!(ExitCode::of(&down).code(), 4);
        assert_eq!(ExitCode::of(&anyhow::anyhow!("local")).code(), 1);
    }
}

//! Who calls: the identity from the bearer token, the instance from `Bluemix-Instance` (or, on
//! rotor's own `/v1/instances/{id}/…` routes, from the path).

use axum::http::{HeaderMap, header};
use uuid::Uuid;

use rotor_util::time::unix_now;

use super::KpState;
use super::error::{KpError, KpResult};
use crate::iam::{Claims, Role};

/// The caller: the instance it acts on and the identity its token proves.
pub(crate) struct Caller {
    pub(crate) instance: Uuid,
    pub(crate) claims: Claims,
    /// `X-Kms-Key-Ring`: the ring the caller says the key is in (a filter on lists).
    pub(crate) key_ring: Option<String>,
}

impl KpState {
    /// The caller of a Key Protect route, which names its instance in `Bluemix-Instance`.
    pub(crate) fn caller(&self, headers: &HeaderMap, needed: Role) -> KpResult<Caller> {
        let claims = self.claims(headers)?;
        let instance = headers
            .get("bluemix-instance")
            .and_then(|v| v.to_str().ok())
            .ok_or(KpError::InvalidHeader {
                name: "Bluemix-Instance",
                problem: "is missing",
            })?;
        let instance = Uuid::parse_str(instance.trim()).map_err(|_| KpError::InvalidHeader {
            name: "Bluemix-Instance",
            problem: "is not an instance id",
        })?;
        let mut caller = self.admit(claims, instance, needed)?;
        caller.key_ring = key_ring_header(headers);
        Ok(caller)
    }

    /// The caller of a route that names its instance in the path (`/v1/instances/{id}/…`).
    pub(crate) fn caller_in_path(
        &self,
        headers: &HeaderMap,
        instance: &str,
        needed: Role,
    ) -> KpResult<Caller> {
        let claims = self.claims(headers)?;
        let instance = Uuid::parse_str(instance)
            .map_err(|_| KpError::InstanceNotFound(instance.to_owned()))?;
        self.admit(claims, instance, needed)
    }

    /// Records a key use refused to a caller whose token is valid but does not allow it (wrong
    /// role or instance), in the chain of the instance it named, if this service serves it.
    pub(super) fn audit_refused_caller(
        &self,
        headers: &HeaderMap,
        key: &str,
        action: &str,
        err: &KpError,
    ) {
        let instance = headers
            .get("bluemix-instance")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| Uuid::parse_str(v.trim()).ok())
            .filter(|instance| self.units.contains(*instance));
        if let (Some(instance), Ok(claims)) = (instance, self.claims(headers)) {
            let code = err.reason().code.to_owned();
            let verdict = rotor_proto::audit::Verdict::Refused { code };
            self.audit
                .record(instance, action, key, &claims.sub, verdict);
        }
    }

    fn claims(&self, headers: &HeaderMap) -> KpResult<Claims> {
        let authorization = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok());
        Ok(self.iam.verify(authorization, unix_now())?)
    }

    /// The caller, if its token grants `needed` on `instance` and this service serves it.
    fn admit(&self, claims: Claims, instance: Uuid, needed: Role) -> KpResult<Caller> {
        claims.allows(Some(instance), needed)?;
        if !self.units.contains(instance) {
            return Err(KpError::InstanceNotFound(instance.to_string()));
        }
        Ok(Caller {
            instance,
            claims,
            key_ring: None,
        })
    }
}

/// The `X-Kms-Key-Ring` header, when it names a ring.
pub(super) fn key_ring_header(headers: &HeaderMap) -> Option<String> {
    headers
        .get("x-kms-key-ring")
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|ring| !ring.is_empty())
        .map(str::to_owned)
}

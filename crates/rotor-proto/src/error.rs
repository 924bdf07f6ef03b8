//! Every way a unit refuses a request. Each variant has a stable code, its own message that says
//! what to do, and an explicit HTTP status; the HPCS/EP11 return code it mirrors is noted where
//! one exists.

use rotor_crypto::Vp;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::registers::{Register, RotationLock};

/// A rejection as a unit reports it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    /// Stable machine-readable code.
    pub code: ErrorCode,
    /// What is wrong and what to do.
    pub message: String,
}

/// Defines [`ErrorCode`] from one list: each variant with its wire text, written once.
macro_rules! error_codes {
    ($($(#[doc = $doc:literal])* $variant:ident = $text:literal,)*) => {
        /// Every code a unit answers with, for admin commands and key operations alike. On the
        /// wire it is its snake_case text (`"bad_counter"`); callers match on the enum, never on
        /// text.
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        #[non_exhaustive]
        pub enum ErrorCode {
            $($(#[doc = $doc])* $variant,)*
            /// A code this build does not know (a newer unit); the message still explains it.
            Unknown,
        }

        impl ErrorCode {
            /// The code as it appears on the wire.
            pub fn as_str(self) -> &'static str {
                match self {
                    $(Self::$variant => $text,)*
                    Self::Unknown => "unknown",
                }
            }

            /// The code for its wire text; [`Self::Unknown`] for text this build does not know.
            pub fn from_wire(text: &str) -> Self {
                match text {
                    $($text => Self::$variant,)*
                    _ => Self::Unknown,
                }
            }
        }
    };
}

error_codes! {
    /// The command names another unit (signed commands cannot be reused elsewhere).
    WrongUnit = "wrong_unit",
    /// The counter is not the unit's next one: a replay or a stale command (EP11 163).
    BadCounter = "bad_counter",
    /// The same admin signed twice.
    DuplicateSigner = "duplicate_signer",
    /// A signer is not an installed admin (EP11 257).
    NotAnAdmin = "not_an_admin",
    /// A signature does not verify (EP11 192/193).
    BadSignature = "bad_signature",
    /// Fewer distinct admin signatures than the command class needs (EP11 208).
    TooFewSignatures = "too_few_signatures",
    /// Only admin changes, thresholds and zeroize work in imprint mode (EP11 179).
    ImprintMode = "imprint_mode",
    /// The admin is already installed (EP11 256/38).
    AdminExists = "admin_exists",
    /// Eight admins are installed already (EP11 261/39).
    AdminLimit = "admin_limit",
    /// Admin name empty, too long or not printable.
    AdminName = "admin_name",
    /// The public key is not a valid point for its algorithm.
    BadPublicKey = "bad_public_key",
    /// No admin with that identifier.
    UnknownAdmin = "unknown_admin",
    /// Removing the admin would leave fewer admins than a threshold needs (EP11 209/66).
    BelowThreshold = "below_threshold",
    /// A threshold outside 1..=8 (EP11 209/76, 209/77, 209/36, 209/56).
    ThresholdRange = "threshold_range",
    /// A threshold above the number of installed admins (EP11 209/57, 209/58).
    ThresholdAboveAdmins = "threshold_above_admins",
    /// The register is not in the state the command needs.
    RegisterState = "register_state",
    /// The VP given does not match the register (EP11 101/48).
    VpMismatch = "vp_mismatch",
    /// The parts combine to the key already in the current register.
    SameAsCurrent = "same_as_current",
    /// Not 2 or 3 key parts.
    PartCount = "part_count",
    /// No pending importer key, or not the one the material was encrypted to.
    NoImporter = "no_importer",
    /// Encrypted key material did not open; deliberately without detail.
    ImportFailed = "import_failed",
    /// Only recovery units may do this (EP11 80/52, 80/131).
    RecoveryOnly = "recovery_only",
    /// A request that does not parse.
    BadRequest = "bad_request",
    /// A response whose signature, unit or challenge does not check out.
    ResponseNotAuthentic = "response_not_authentic",
    /// The unit could not make its state durable; nothing was acknowledged.
    Storage = "storage",
    /// A master key rotation pins the registers; the command would clear or replace them.
    RotationInProgress = "rotation_in_progress",
    /// No master key rotation is under way on this unit.
    NoRotation = "no_rotation",
    /// The service reported keys still under the master key being rotated away from.
    KeysRemain = "keys_remain",
    /// The unit's current register is empty.
    NoMasterKey = "no_master_key",
    /// The blob is wrapped under a master key this unit does not hold.
    OtherMasterKey = "other_master_key",
    /// A blob or ciphertext did not authenticate; deliberately without detail.
    InvalidCiphertext = "invalid_ciphertext",
    /// Key material, a DEK or a batch has a size the unit refuses.
    BadSize = "bad_size",
    /// Root key material never leaves a unit.
    NotExtractable = "not_extractable",
    /// A batch names another master key than the one the unit wraps under.
    WrongTarget = "wrong_target",
    /// No new master key pinned by a rotation to rewrap to.
    NoNewMasterKey = "no_new_master_key",
    /// The caller is not the service of the unit's instance (its client certificate states
    /// another role or instance, or there is none).
    Unauthorized = "unauthorized",
    /// A fresh or zeroized unit takes its first admin only with its enrollment secret (or the
    /// admin key it was started with).
    EnrollmentRequired = "enrollment_required",
}

impl Serialize for ErrorCode {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for ErrorCode {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = std::borrow::Cow::<'de, str>::deserialize(deserializer)?;
        Ok(Self::from_wire(&text))
    }
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl PartialEq<&str> for ErrorCode {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

/// A refused request. A refused command changes nothing on the unit.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum UnitError {
    /// The command names another unit (signed commands cannot be reused elsewhere).
    WrongUnit {
        /// The unit that received it.
        unit: Uuid,
        /// The unit it names.
        named: Uuid,
    },
    /// The counter is not the unit's next one: a replay or a stale command (EP11 163).
    BadCounter {
        /// What the unit expected.
        expected: u64,
        /// What the command carried.
        got: u64,
    },
    /// The same admin signed twice.
    DuplicateSigner(String),
    /// A signer is not an installed admin (EP11 257).
    NotAnAdmin(String),
    /// A signature does not verify (EP11 192/193).
    BadSignature(String),
    /// Fewer distinct admin signatures than the command class needs (EP11 208).
    TooFewSignatures {
        /// The command.
        action: &'static str,
        /// How many it needs.
        required: u8,
        /// How many valid distinct ones it has.
        got: usize,
    },
    /// Only admin changes, thresholds and zeroize work in imprint mode (EP11 179).
    ImprintMode(&'static str),
    /// The admin is already installed (EP11 256/38).
    AdminExists(String),
    /// Eight admins are installed already (EP11 261/39).
    AdminLimit,
    /// Admin name empty, too long or not printable.
    AdminName(String),
    /// The public key is not a valid point for its algorithm.
    BadPublicKey,
    /// No admin with that identifier.
    UnknownAdmin(String),
    /// Removing the admin would leave fewer admins than a threshold needs (EP11 209/66).
    BelowThreshold {
        /// Admins left afterwards.
        left: usize,
        /// The larger threshold.
        threshold: u8,
    },
    /// A threshold outside 1..=8 (EP11 209/76, 209/77, 209/36, 209/56).
    ThresholdRange {
        /// Which threshold.
        which: &'static str,
        /// The value given.
        value: u8,
    },
    /// A threshold above the number of installed admins (EP11 209/57, 209/58).
    ThresholdAboveAdmins {
        /// Which threshold.
        which: &'static str,
        /// The value given.
        value: u8,
        /// Installed admins.
        admins: usize,
    },
    /// The register is not in the state the command needs.
    RegisterState {
        /// Which register.
        register: Register,
        /// What the command needs.
        needs: &'static str,
        /// What it holds.
        found: &'static str,
    },
    /// The VP given does not match the register (EP11 101/48).
    VpMismatch {
        /// Which register.
        register: Register,
        /// The VP the command expected.
        expected: Vp,
        /// The VP the register holds.
        found: Vp,
    },
    /// The parts combine to the key already in the current register.
    SameAsCurrent,
    /// Not 2 or 3 key parts.
    PartCount(usize),
    /// No pending importer key, or not the one the material was encrypted to.
    NoImporter,
    /// Encrypted key material did not open; deliberately without detail.
    ImportFailed,
    /// Only recovery units may do this (EP11 80/52, 80/131).
    RecoveryOnly(&'static str),
    /// A request that does not parse.
    BadRequest(String),
    /// A response whose signature, unit or challenge does not check out.
    ResponseNotAuthentic,
    /// The unit could not make its state durable; nothing was acknowledged.
    Storage,
    /// A master key rotation pins the registers; the command would clear or replace them.
    RotationInProgress {
        /// The command.
        action: &'static str,
        /// The rotation's state on this unit.
        lock: RotationLock,
    },
    /// No master key rotation is under way on this unit.
    NoRotation,
    /// The service reported the reencryption finished with keys still under the old master key.
    KeysRemain {
        /// The service's count of keys still under the old master key.
        remaining: u64,
    },
    /// A fresh or zeroized unit takes its first admin only with a proof made with its
    /// enrollment secret, or only the admin key it was started with. Deliberately without
    /// detail on what did not match.
    EnrollmentRequired,
}

impl UnitError {
    /// Stable code for machines.
    pub fn error_code(&self) -> ErrorCode {
        match self {
            Self::WrongUnit { .. } => ErrorCode::WrongUnit,
            Self::BadCounter { .. } => ErrorCode::BadCounter,
            Self::DuplicateSigner(_) => ErrorCode::DuplicateSigner,
            Self::NotAnAdmin(_) => ErrorCode::NotAnAdmin,
            Self::BadSignature(_) => ErrorCode::BadSignature,
            Self::TooFewSignatures { .. } => ErrorCode::TooFewSignatures,
            Self::ImprintMode(_) => ErrorCode::ImprintMode,
            Self::AdminExists(_) => ErrorCode::AdminExists,
            Self::AdminLimit => ErrorCode::AdminLimit,
            Self::AdminName(_) => ErrorCode::AdminName,
            Self::BadPublicKey => ErrorCode::BadPublicKey,
            Self::UnknownAdmin(_) => ErrorCode::UnknownAdmin,
            Self::BelowThreshold { .. } => ErrorCode::BelowThreshold,
            Self::ThresholdRange { .. } => ErrorCode::ThresholdRange,
            Self::ThresholdAboveAdmins { .. } => ErrorCode::ThresholdAboveAdmins,
            Self::RegisterState { .. } => ErrorCode::RegisterState,
            Self::VpMismatch { .. } => ErrorCode::VpMismatch,
            Self::SameAsCurrent => ErrorCode::SameAsCurrent,
            Self::PartCount(_) => ErrorCode::PartCount,
            Self::NoImporter => ErrorCode::NoImporter,
            Self::ImportFailed => ErrorCode::ImportFailed,
            Self::RecoveryOnly(_) => ErrorCode::RecoveryOnly,
            Self::BadRequest(_) => ErrorCode::BadRequest,
            Self::ResponseNotAuthentic => ErrorCode::ResponseNotAuthentic,
            Self::Storage => ErrorCode::Storage,
            Self::RotationInProgress { .. } => ErrorCode::RotationInProgress,
            Self::NoRotation => ErrorCode::NoRotation,
            Self::KeysRemain { .. } => ErrorCode::KeysRemain,
            Self::EnrollmentRequired => ErrorCode::EnrollmentRequired,
        }
    }

    /// The stable code as text.
    pub fn code(&self) -> &'static str {
        self.error_code().as_str()
    }

    /// The HTTP status a unit answers with.
    pub fn http_status(&self) -> u16 {
        match self {
            Self::BadRequest(_) | Self::BadPublicKey | Self::AdminName(_) | Self::PartCount(_) => {
                400
            }
            Self::WrongUnit { .. }
            | Self::DuplicateSigner(_)
            | Self::NotAnAdmin(_)
            | Self::BadSignature(_)
            | Self::TooFewSignatures { .. }
            | Self::EnrollmentRequired
            | Self::RecoveryOnly(_) => 403,
            Self::Storage | Self::ResponseNotAuthentic => 500,
            _ => 409,
        }
    }

    /// The wire form.
    pub fn to_body(&self) -> ErrorBody {
        ErrorBody {
            code: self.error_code(),
            message: self.to_string(),
        }
    }
}

impl std::fmt::Display for UnitError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::WrongUnit { unit, named } => write!(
                f,
                "command is signed for unit {named}, not this unit ({unit}); sign a new command for this unit"
            ),
            Self::BadCounter { expected, got } => write!(
                f,
                "transaction counter {got} is not this unit's next ({expected}): the command is a replay or stale; query the unit and sign again"
            ),
            Self::DuplicateSigner(ski) => {
                write!(
                    f,
                    "admin {ski} signed more than once; each admin counts once"
                )
            }
            Self::NotAnAdmin(ski) => write!(
                f,
                "signer {ski} is not an administrator of this unit; select signature keys of installed admins"
            ),
            Self::BadSignature(ski) => write!(
                f,
                "signature by admin {ski} does not verify for this command"
            ),
            Self::TooFewSignatures {
                action,
                required,
                got,
            } => write!(
                f,
                "{action} needs {required} distinct admin signature(s), got {got}; select more signature keys with 'rotor sigkeys use'"
            ),
            Self::ImprintMode(action) => write!(
                f,
                "{action} is not allowed in imprint mode; install admins and set thresholds first"
            ),
            Self::AdminExists(ski) => write!(f, "admin {ski} is already installed"),
            Self::AdminLimit => write!(f, "this unit already has the maximum of 8 admins"),
            Self::AdminName(why) => write!(f, "invalid admin name: {why}"),
            Self::BadPublicKey => {
                write!(f, "the admin public key is not a valid point for its curve")
            }
            Self::UnknownAdmin(ski) => write!(f, "no admin {ski} is installed on this unit"),
            Self::BelowThreshold { left, threshold } => write!(
                f,
                "removing this admin would leave {left} admin(s), fewer than the threshold of {threshold}; lower the thresholds or add an admin first"
            ),
            Self::ThresholdRange { which, value } => {
                write!(f, "{which} threshold {value} is out of range; use 1 to 8")
            }
            Self::ThresholdAboveAdmins {
                which,
                value,
                admins,
            } => write!(
                f,
                "{which} threshold {value} exceeds the {admins} installed admin(s); add admins first"
            ),
            Self::RegisterState {
                register,
                needs,
                found,
            } => write!(
                f,
                "the {register} register is {found}, but this command needs it {needs}"
            ),
            Self::VpMismatch {
                register,
                expected,
                found,
            } => write!(
                f,
                "the {register} register holds a key with VP {found}, not the expected {expected}; check 'rotor mk' on every unit"
            ),
            Self::SameAsCurrent => write!(
                f,
                "these key parts combine to the master key already in the current register; use new parts"
            ),
            Self::PartCount(n) => {
                write!(f, "a master key is loaded from 2 or 3 key parts, not {n}")
            }
            Self::NoImporter => write!(
                f,
                "no matching importer key is pending on this unit; create one and encrypt the key material to it"
            ),
            Self::ImportFailed => write!(f, "the encrypted key material could not be opened"),
            Self::RecoveryOnly(action) => {
                write!(f, "{action} is permitted on recovery units only")
            }
            Self::BadRequest(why) => write!(f, "malformed request: {why}"),
            Self::ResponseNotAuthentic => write!(
                f,
                "the unit's response is not signed by its pinned identity key or does not answer this request"
            ),
            Self::Storage => write!(
                f,
                "the unit could not store its state durably; the command was not applied"
            ),
            Self::RotationInProgress { action, lock } => match lock {
                RotationLock::Reencrypted => write!(
                    f,
                    "{action} is refused: key storage is already reencrypted to the new register, so keys depend on it; finish with 'rotor mk rotate' (or 'rotor auto rotate'), which promotes every unit"
                ),
                _ => write!(
                    f,
                    "{action} is refused: a master key rotation is {} key storage and pins both registers; run 'rotor mk rotate' (or 'rotor auto rotate') again to finish it, or 'rotor mk rotate --abort' to rewrap back to the current master key",
                    if *lock == RotationLock::Aborting {
                        "rewrapping back"
                    } else {
                        "reencrypting"
                    }
                ),
            },
            Self::NoRotation => write!(
                f,
                "no master key rotation is under way on this unit; there is nothing to abort or finish"
            ),
            Self::KeysRemain { remaining } => write!(
                f,
                "the service reports {remaining} key(s) still under the master key being rotated away from; the rotation lock stays until none is left"
            ),
            Self::EnrollmentRequired => write!(
                f,
                "this unit has no admin yet and takes its first one only with its enrollment secret (printed by 'rotor unit serve' and written to its info file), or only the admin key it was started with (--initial-admin); pass the secret with --enrollment-secret or ROTOR_ENROLLMENT_SECRET"
            ),
        }
    }
}

impl std::error::Error for UnitError {}

/// What the service's own routes (the admin relay, rotation, key storage counts, audit) answer
/// with in `{"code", "message"}` when the refusal is the service's rather than a unit's; a
/// unit's refusal is relayed with its [`ErrorCode`]. It serializes as its [`Self::as_str`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ServiceErrorCode {
    /// No such instance or unit on this service.
    NotFound,
    /// The request itself is malformed.
    BadRequest,
    /// A unit did not answer.
    UnitUnreachable,
    /// A unit's signed status failed its checks (another identity, a counter gone back).
    UnitUntrusted,
    /// The rotation asked for contradicts the one under way.
    RotationConflict,
    /// Key storage failed.
    Storage,
    /// The audit chain could not be read.
    AuditUnavailable,
}

impl ServiceErrorCode {
    /// The code as it appears on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::NotFound => "not_found",
            Self::BadRequest => "bad_request",
            Self::UnitUnreachable => "unit_unreachable",
            Self::UnitUntrusted => "unit_untrusted",
            Self::RotationConflict => "rotation_conflict",
            Self::Storage => "storage",
            Self::AuditUnavailable => "audit_unavailable",
        }
    }
}

impl Serialize for ServiceErrorCode {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::{ErrorCode, ServiceErrorCode};

    #[test]
    fn codes_cross_the_wire_as_their_text_and_unknown_ones_are_kept_apart() {
        let json = serde_json::to_string(&ErrorCode::BadCounter).unwrap();
        assert_eq!(json, r#""bad_counter""#);
        let back: ErrorCode = serde_json::from_str(&json).unwrap();
        assert_eq!(back, ErrorCode::BadCounter);
        let newer: ErrorCode = serde_json::from_str(r#""a_code_from_a_newer_unit""#).unwrap();
        assert_eq!(newer, ErrorCode::Unknown);
        assert_eq!(
            ErrorCode::from_wire("no_new_master_key"),
            ErrorCode::NoNewMasterKey
        );
    }

    #[test]
    fn service_codes_keep_their_wire_text() {
        // The CLI and scripts match on these texts: a change here is a change of the wire.
        let codes = [
            ServiceErrorCode::NotFound,
            ServiceErrorCode::BadRequest,
            ServiceErrorCode::UnitUnreachable,
            ServiceErrorCode::UnitUntrusted,
            ServiceErrorCode::RotationConflict,
            ServiceErrorCode::Storage,
            ServiceErrorCode::AuditUnavailable,
        ];
        assert_eq!(
            serde_json::to_value(codes).unwrap(),
            serde_json::json!([
                "not_found",
                "bad_request",
                "unit_unreachable",
                "unit_untrusted",
                "rotation_conflict",
                "storage",
                "audit_unavailable"
            ])
        );
    }
}

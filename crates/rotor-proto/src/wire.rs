//! What crosses the wire between the workstation, the service and a unit.
//!
//! An admin command names the unit, the unit's next transaction counter and one [`Action`] with
//! its parameters; admins sign the canonical JSON of that [`Command`]. The service only relays,
//! and the unit checks every signature itself. Every unit response is a [`SignedResponse`]: the
//! payload text, signed by the unit's identity key and bound to the caller's random challenge.

use rotor_crypto::{Envelope, PublicKey, Secret32, SigningKey, Vp};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::error::{ErrorBody, UnitError};
// Admin commands and statuses name the registers; their users import them from here too.
pub use crate::registers::{CurrentState, NewState, Register, RotationLock};

/// Domain separation for admin signatures.
const COMMAND_DOMAIN: &[u8] = b"rotor admin command v1\0";
/// Domain separation for enrollment proofs.
const ENROLLMENT_DOMAIN: &[u8] = b"rotor enrollment proof v1\0";
/// Domain separation for enrollment secret identifiers.
const ENROLLMENT_ID_DOMAIN: &[u8] = b"rotor enrollment secret id v1\0";
/// Domain separation for unit response signatures.
const RESPONSE_DOMAIN: &[u8] = b"rotor unit response v1\0";
/// Context bound into every key part envelope.
pub const PART_CONTEXT: &[u8] = b"rotor key part v1";
/// Context bound into every master key transfer envelope.
pub const TRANSFER_CONTEXT: &[u8] = b"rotor master key transfer v1";

/// The most admins a unit holds (as in HPCS).
pub const MAX_ADMINS: usize = 8;
/// The longest admin name, in characters (as in HPCS).
pub const MAX_ADMIN_NAME: usize = 30;
/// The largest value of either threshold.
pub const MAX_THRESHOLD: u8 = 8;

/// An admin's subject key identifier: SHA-256 of the uncompressed public point.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Ski(#[serde(with = "hex::serde")] pub [u8; 32]);

impl Ski {
    /// The identifier of a public key.
    pub fn of(key: &PublicKey) -> Self {
        Self(key.ski())
    }

    /// 64 hex characters.
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }
}

impl std::fmt::Debug for Ski {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Ski({})", self.to_hex())
    }
}

impl std::fmt::Display for Ski {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.to_hex())
    }
}

/// A unit's identity fingerprint: SHA-256 (FIPS 180-4) of its identity public key's
/// uncompressed SEC1 encoding. Administrators compare it out of band to enroll a unit.
pub use rotor_crypto::Fingerprint;

/// The one-time secret that lets whoever holds it install the first admin of a fresh or
/// zeroized unit. Printed by the unit at start; never sent over the wire itself, only proofs
/// made with it ([`Command::enrollment_proof`]).
#[derive(Clone)]
pub struct EnrollmentSecret(pub Secret32);

impl EnrollmentSecret {
    /// 64 hex characters, as the unit prints it.
    pub fn to_hex(&self) -> zeroize::Zeroizing<String> {
        zeroize::Zeroizing::new(hex::encode(self.0.expose()))
    }

    /// Parses the printed form.
    pub fn from_hex(text: &str) -> Option<Self> {
        let bytes = zeroize::Zeroizing::new(hex::decode(text.trim()).ok()?);
        Secret32::from_slice(&bytes).map(Self)
    }

    /// A short public name for the secret, which a unit shows in its status so that a
    /// workstation holding several secrets knows which one is this unit's: the first 8 bytes
    /// of SHA-256 over a domain label and the secret, as hex. It reveals nothing usable about
    /// the 256-bit secret.
    pub fn id(&self) -> String {
        let mut input = zeroize::Zeroizing::new(ENROLLMENT_ID_DOMAIN.to_vec());
        input.extend_from_slice(self.0.expose());
        hex::encode(&rotor_crypto::sha256(&input)[..8])
    }
}

impl std::fmt::Debug for EnrollmentSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("EnrollmentSecret(..)")
    }
}

/// HMAC-SHA-256 under an [`EnrollmentSecret`] over one [`Command`]'s signing bytes: proves the
/// sender holds the secret, and binds it to that command (unit, counter, action and admin key),
/// so a relay cannot reuse it for another admin.
#[derive(Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct EnrollmentProof(#[serde(with = "hex::serde")] pub [u8; 32]);

impl std::fmt::Debug for EnrollmentProof {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("EnrollmentProof(..)")
    }
}

/// Operational units serve keys; recovery units may also generate and export a master key.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UnitKind {
    /// Serves key operations; cannot export a master key.
    Operational,
    /// Can generate a random master key and export it to other units.
    Recovery,
}

impl UnitKind {
    /// As HPCS prints it.
    pub fn label(self) -> &'static str {
        match self {
            Self::Operational => "OPERATIONAL",
            Self::Recovery => "RECOVERY",
        }
    }
}

/// One state-changing admin command.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "action", rename_all = "snake_case", deny_unknown_fields)]
pub enum Action {
    /// Install an administrator.
    AddAdmin {
        /// Display name, 1 to 30 characters.
        name: String,
        /// The admin's public signature key.
        public_key: PublicKey,
    },
    /// Remove an administrator.
    RemoveAdmin {
        /// Which admin.
        ski: Ski,
    },
    /// Set both thresholds; from imprint mode this is how a unit leaves it.
    SetThresholds {
        /// Signatures most commands need.
        signature: u8,
        /// Signatures admin removal needs.
        revocation: u8,
    },
    /// Make a fresh importer key, to which key parts or a transferred key are encrypted.
    CreateImporter,
    /// Load the new register from 2 or 3 key parts encrypted to the pending importer key.
    LoadNew {
        /// The importer public key the parts were encrypted to.
        #[serde(with = "hex::serde")]
        importer: Vec<u8>,
        /// One envelope per part.
        parts: Vec<Envelope>,
    },
    /// Load the new register from a master key exported by a recovery unit.
    ImportNew {
        /// The importer public key the key was encrypted to.
        #[serde(with = "hex::serde")]
        importer: Vec<u8>,
        /// The exported key.
        key: Envelope,
    },
    /// Commit the new register; fails unless its VP is the expected one.
    Commit {
        /// The VP the admins expect.
        vp: Vp,
    },
    /// Promote the committed new register to current and clear new.
    SetImmediate {
        /// The VP the admins expect.
        vp: Vp,
    },
    /// Clear the new register.
    ClearNew,
    /// Clear the current register.
    ClearCurrent,
    /// Recovery units only: a random master key, into current if empty, else into new.
    GenerateRandom,
    /// Recovery units only: export a register, encrypted to another unit's importer key.
    Export {
        /// Which register.
        register: Register,
        /// The unit that will import it.
        recipient_unit: Uuid,
        /// That unit's importer public key.
        #[serde(with = "hex::serde")]
        recipient_importer: Vec<u8>,
    },
    /// Pin the committed new register for a master key rotation: from now on the unit wraps
    /// new keys under it, and nothing may clear or replace either register until the service
    /// reports the reencryption finished (or admins abort it).
    PinNew {
        /// The VP the admins expect in the new register.
        vp: Vp,
    },
    /// Abort the rotation of the pinned new register: the service rewraps key storage back
    /// to the current master key, then releases the pin.
    AbortRotation {
        /// The VP of the pinned new register.
        vp: Vp,
    },
    /// Clear both registers and all admins: back to imprint mode.
    Zeroize,
}

impl Action {
    /// A short name for messages.
    pub fn name(&self) -> &'static str {
        match self {
            Self::AddAdmin { .. } => "add admin",
            Self::RemoveAdmin { .. } => "remove admin",
            Self::SetThresholds { .. } => "set thresholds",
            Self::CreateImporter => "create importer key",
            Self::LoadNew { .. } => "load new register",
            Self::ImportNew { .. } => "import new register",
            Self::Commit { .. } => "commit",
            Self::SetImmediate { .. } => "set immediate",
            Self::ClearNew => "clear new register",
            Self::ClearCurrent => "clear current register",
            Self::GenerateRandom => "generate random master key",
            Self::Export { .. } => "export master key",
            Self::PinNew { .. } => "pin new register",
            Self::AbortRotation { .. } => "abort rotation",
            Self::Zeroize => "zeroize",
        }
    }
}

/// An admin command, bound to one unit and its next transaction counter.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Command {
    /// The unit this command is for.
    pub unit: Uuid,
    /// Must equal the unit's transaction counter plus one.
    pub counter: u64,
    /// What to do.
    pub action: Action,
}

impl Command {
    /// The bytes admins sign: a domain label and the command's canonical JSON.
    pub fn signing_bytes(&self) -> Vec<u8> {
        let mut out = COMMAND_DOMAIN.to_vec();
        // Serializing plain data to JSON cannot fail.
        out.extend_from_slice(&serde_json::to_vec(self).unwrap_or_default());
        out
    }

    /// The bytes an enrollment proof is computed over.
    fn enrollment_bytes(&self) -> Vec<u8> {
        let mut out = ENROLLMENT_DOMAIN.to_vec();
        out.extend_from_slice(&self.signing_bytes());
        out
    }

    /// The proof that the sender of this command holds `secret`.
    pub fn enrollment_proof(&self, secret: &EnrollmentSecret) -> EnrollmentProof {
        EnrollmentProof(rotor_crypto::hmac_sha256(
            &secret.0,
            &self.enrollment_bytes(),
        ))
    }

    /// Checks, in constant time, that `proof` was made for this command with `secret`.
    pub fn verify_enrollment(&self, secret: &EnrollmentSecret, proof: &EnrollmentProof) -> bool {
        rotor_crypto::verify_hmac_sha256(&secret.0, &self.enrollment_bytes(), &proof.0).is_ok()
    }

    /// Signs this command with each key.
    pub fn sign(self, keys: &[&SigningKey]) -> SignedCommand {
        let message = self.signing_bytes();
        let signatures = keys
            .iter()
            .map(|key| CommandSignature {
                ski: Ski::of(&key.public_key()),
                signature: key.sign(&message),
            })
            .collect();
        SignedCommand {
            command: self,
            signatures,
            enrollment: None,
        }
    }
}

/// One admin's signature over a [`Command`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CommandSignature {
    /// Which admin signed.
    pub ski: Ski,
    /// ECDSA `r ‖ s` over [`Command::signing_bytes`].
    #[serde(with = "hex::serde")]
    pub signature: Vec<u8>,
}

/// A command with its signatures.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SignedCommand {
    /// The command.
    pub command: Command,
    /// Admin signatures; may be empty where imprint mode allows it.
    #[serde(default)]
    pub signatures: Vec<CommandSignature>,
    /// The first admin of a fresh or zeroized unit: proof of its enrollment secret.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enrollment: Option<EnrollmentProof>,
}

/// The body of a command request: the signed command and the caller's fresh challenge.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CommandRequest {
    /// Random bytes the response must echo, so a stale response cannot be replayed.
    #[serde(with = "hex::serde")]
    pub challenge: Vec<u8>,
    /// The command.
    pub signed: SignedCommand,
}

/// An installed administrator, as a unit reports it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AdminInfo {
    /// Display name.
    pub name: String,
    /// Identifier.
    pub ski: Ski,
    /// Public key.
    pub public_key: PublicKey,
}

/// One register as reported: its state and the VP of its key (all zeros when empty).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RegisterInfo<S> {
    /// State.
    pub state: S,
    /// Verification pattern.
    pub vp: Vp,
}

/// Everything a unit tells about itself. Contains no secret.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct UnitStatus {
    /// The unit's id.
    pub unit: Uuid,
    /// Operational or recovery.
    pub kind: UnitKind,
    /// The key that signs every response; the CLI pins it.
    pub identity: PublicKey,
    /// No thresholds set yet.
    pub imprint: bool,
    /// Installed admins.
    pub admins: Vec<AdminInfo>,
    /// Signatures most commands need (0 in imprint mode).
    pub signature_threshold: u8,
    /// Signatures admin removal needs (0 in imprint mode).
    pub revocation_threshold: u8,
    /// The last transaction counter used; the next command carries this plus one.
    pub counter: u64,
    /// Current register.
    pub current: RegisterInfo<CurrentState>,
    /// New register.
    pub new: RegisterInfo<NewState>,
    /// The pending importer public key, if one was made and not yet used.
    #[serde(default, with = "hex::serde")]
    pub importer: Vec<u8>,
    /// Where the unit stands in a master key rotation.
    #[serde(default)]
    pub rotation: RotationLock,
    /// While the unit waits for its first admin under an enrollment secret: that secret's
    /// [`EnrollmentSecret::id`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enrollment_id: Option<String>,
}

/// What a successful command produced besides the new status.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Outcome {
    /// Nothing more to say.
    Done,
    /// A fresh importer key's public half.
    Importer {
        /// Uncompressed SEC1.
        #[serde(with = "hex::serde")]
        public_key: Vec<u8>,
    },
    /// A random key went into a register.
    Generated {
        /// Which register.
        register: Register,
        /// Its VP.
        vp: Vp,
    },
    /// An exported master key.
    Exported {
        /// Its VP.
        vp: Vp,
        /// Encrypted to the recipient's importer key.
        key: Envelope,
    },
}

/// The payload of every unit response.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ResponsePayload {
    /// The responding unit.
    pub unit: Uuid,
    /// The caller's challenge, echoed.
    #[serde(with = "hex::serde")]
    pub challenge: Vec<u8>,
    /// The result.
    pub result: UnitResult,
}

/// A successful or rejected request.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UnitResult {
    /// A status query.
    Status(UnitStatus),
    /// A command that took effect.
    Applied {
        /// What it produced.
        outcome: Outcome,
        /// The unit's status afterwards.
        status: UnitStatus,
    },
    /// A rejected request; nothing changed.
    Rejected(ErrorBody),
}

/// A unit response: payload text and the unit identity's signature over it.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct SignedResponse {
    /// [`ResponsePayload`] as JSON text, exactly as signed.
    pub payload: String,
    /// ECDSA `r ‖ s` by the unit identity key.
    #[serde(with = "hex::serde")]
    pub signature: Vec<u8>,
}

fn response_message(payload: &str) -> Vec<u8> {
    let mut message = RESPONSE_DOMAIN.to_vec();
    message.extend_from_slice(payload.as_bytes());
    message
}

impl SignedResponse {
    /// Signs a payload with the unit identity key.
    pub fn sign(identity: &SigningKey, payload: &ResponsePayload) -> Self {
        let payload = serde_json::to_string(payload).unwrap_or_default();
        let signature = identity.sign(&response_message(&payload));
        Self { payload, signature }
    }

    /// Checks the signature with `identity`, then that the payload answers `challenge` from
    /// `unit`, and returns it.
    pub fn verify(
        &self,
        identity: &PublicKey,
        unit: Uuid,
        challenge: &[u8],
    ) -> Result<ResponsePayload, UnitError> {
        identity
            .verify(&response_message(&self.payload), &self.signature)
            .map_err(|_| UnitError::ResponseNotAuthentic)?;
        let payload = self.open_unverified()?;
        if payload.unit != unit || payload.challenge != challenge {
            return Err(UnitError::ResponseNotAuthentic);
        }
        Ok(payload)
    }

    /// Parses the payload without checking the signature: only for learning a unit's identity
    /// before it is pinned, after which [`SignedResponse::verify`] must be used.
    pub fn open_unverified(&self) -> Result<ResponsePayload, UnitError> {
        serde_json::from_str(&self.payload).map_err(|_| UnitError::ResponseNotAuthentic)
    }
}

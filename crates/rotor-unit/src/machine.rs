//! The unit's registers, admins and quorum rules as a pure state machine: no I/O, no clock, and
//! randomness only through [`Entropy`], so tests can drive it with any command sequence.
//!
//! The rules are HPCS's (see the signature table and transition table in the reference):
//!
//! | command | imprint mode | after imprint |
//! |---|---|---|
//! | add admin | none for the first admin (which needs the enrollment secret), then 1 | signature threshold |
//! | remove admin | 1 | revocation threshold |
//! | set thresholds | the *new* signature threshold (leaves imprint) | signature threshold |
//! | create importer, load, import, set immediate, clear new/current, generate | refused | 1 |
//! | commit, export, pin new, abort rotation | refused | signature threshold |
//! | zeroize | none without admins, else 1 | 1 |
//!
//! Unlike HPCS, imprint mode is claimed, not grabbed: a unit without admins takes its first one
//! only with a proof made with its one-time enrollment secret ([`Enrollment`]), and from then on
//! imprint-mode commands need the signature of an installed admin.
//!
//! A master key rotation adds a lock HPCS lacks: once the new register is pinned, load, import,
//! generate, clear new and clear current are refused, and set immediate waits until the
//! service reports key storage reencrypted ([`UnitState::finish_reencryption`]).

use std::collections::BTreeSet;

use rotor_crypto::{ImporterKey, PublicKey, Secret32, Vp, combine_parts, seal_to};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::error::UnitError;
use crate::keys::Masters;
use crate::wire::{
    Action, AdminInfo, CurrentState, EnrollmentSecret, MAX_ADMIN_NAME, MAX_ADMINS, MAX_THRESHOLD,
    NewState, Outcome, PART_CONTEXT, Register, RegisterInfo, RotationLock, SignedCommand, Ski,
    TRANSFER_CONTEXT, UnitKind, UnitStatus,
};

/// Where fresh secrets come from. The daemon uses the OS CSPRNG; tests may use anything.
pub trait Entropy {
    /// A fresh 256-bit key.
    fn secret(&mut self) -> Secret32;
    /// A fresh importer key pair.
    fn importer(&mut self) -> ImporterKey;
}

/// The operating system's CSPRNG.
#[derive(Debug, Default)]
pub struct OsEntropy;

impl Entropy for OsEntropy {
    fn secret(&mut self) -> Secret32 {
        Secret32::random()
    }

    fn importer(&mut self) -> ImporterKey {
        ImporterKey::generate()
    }
}

/// An installed administrator.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Admin {
    /// Display name.
    pub name: String,
    /// Public key.
    pub public_key: PublicKey,
}

impl Admin {
    /// Identifier.
    pub fn ski(&self) -> Ski {
        Ski::of(&self.public_key)
    }
}

/// The new register.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub enum NewRegister {
    /// No key.
    #[default]
    Empty,
    /// Loaded, not committed.
    Uncommitted(Secret32),
    /// Committed.
    Committed(Secret32),
}

impl NewRegister {
    fn state(&self) -> NewState {
        match self {
            Self::Empty => NewState::Empty,
            Self::Uncommitted(_) => NewState::FullUncommitted,
            Self::Committed(_) => NewState::FullCommitted,
        }
    }

    fn key(&self) -> Option<&Secret32> {
        match self {
            Self::Empty => None,
            Self::Uncommitted(key) | Self::Committed(key) => Some(key),
        }
    }
}

/// How a unit without admins takes its first one.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum Enrollment {
    /// An admin is installed; the unit is claimed.
    Claimed,
    /// The first admin command must carry a proof made with this one-time secret.
    Secret(Secret32),
    /// The first admin must be this key, given to the unit at start by its operator.
    InitialAdmin(Ski),
}

/// Everything a unit remembers, master keys included. Lives only inside the unit and, sealed,
/// in its state file.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct UnitState {
    /// The unit's id; commands name it.
    pub unit: Uuid,
    /// Operational or recovery.
    pub kind: UnitKind,
    /// Installed admins, in installation order.
    pub admins: Vec<Admin>,
    /// 0 in imprint mode, else 1..=8.
    pub signature_threshold: u8,
    /// 0 in imprint mode, else 1..=8.
    pub revocation_threshold: u8,
    /// The last counter accepted. Never reset, not even by zeroize, so no old command replays.
    pub counter: u64,
    /// Current register.
    pub current: Option<Secret32>,
    /// New register.
    pub new: NewRegister,
    /// The importer key waiting for key material, if any.
    pub importer: Option<ImporterKey>,
    /// Where the unit stands in a master key rotation.
    pub rotation: RotationLock,
    /// How the first admin is accepted while there is none. The last field: states sealed
    /// before it existed read as [`Enrollment::Claimed`] (see the store).
    pub enrollment: Enrollment,
}

impl UnitState {
    /// A fresh unit in imprint mode, waiting for a first admin that proves `enrollment_secret`.
    pub fn new(unit: Uuid, kind: UnitKind, enrollment_secret: Secret32) -> Self {
        Self::empty(unit, kind, Enrollment::Secret(enrollment_secret))
    }

    /// Imprint mode with no admin, no key and counter 0.
    fn empty(unit: Uuid, kind: UnitKind, enrollment: Enrollment) -> Self {
        Self {
            unit,
            kind,
            admins: Vec::new(),
            signature_threshold: 0,
            revocation_threshold: 0,
            counter: 0,
            current: None,
            new: NewRegister::Empty,
            importer: None,
            rotation: RotationLock::None,
            enrollment,
        }
    }

    /// The secret that installs the first admin, while the unit waits for it under one.
    pub fn enrollment_secret(&self) -> Option<EnrollmentSecret> {
        match &self.enrollment {
            Enrollment::Secret(secret) => Some(EnrollmentSecret(secret.clone())),
            Enrollment::Claimed | Enrollment::InitialAdmin(_) => None,
        }
    }

    /// The unit's operator names its first admin at start: only that key will be accepted as
    /// the first admin (no enrollment secret). Refused once the unit has an admin.
    pub fn with_initial_admin(&self, ski: Ski) -> Result<Self, UnitError> {
        if !self.admins.is_empty() {
            return Err(UnitError::AdminExists(ski.to_hex()));
        }
        let mut next = self.clone();
        next.enrollment = Enrollment::InitialAdmin(ski);
        Ok(next)
    }

    /// Restores the invariant "no admins ⇔ not claimed" for a state sealed before enrollment
    /// existed (read as claimed): a unit without admins gets `secret`.
    pub fn with_enrollment_restored(mut self, secret: Secret32) -> Self {
        if self.admins.is_empty() && matches!(self.enrollment, Enrollment::Claimed) {
            self.enrollment = Enrollment::Secret(secret);
        }
        self
    }

    /// The master keys key operations may use, or `None` without a current master key.
    pub fn masters(&self) -> Option<Masters> {
        let current = self.current.clone()?;
        let new = match &self.new {
            NewRegister::Committed(key) => Some(key.clone()),
            _ => None,
        };
        Some(Masters {
            current,
            new,
            wrap_under_new: matches!(
                self.rotation,
                RotationLock::Reencrypting | RotationLock::Reencrypted
            ),
        })
    }

    /// The service reports that no key storage blob is left under the master key being
    /// rotated away from: a reencrypting unit may now be promoted; an aborting one is released.
    /// `to` names the master key everything is now wrapped under. Repeating it changes nothing.
    pub fn finish_reencryption(&self, to: &Vp) -> Result<Self, UnitError> {
        let new_vp = self.new.key().map(Secret32::vp);
        let current_vp = self.current.as_ref().map(Secret32::vp);
        let is = |vp: Option<Vp>| vp.is_some_and(|vp| vp.matches(to));
        let mut next = self.clone();
        match self.rotation {
            RotationLock::Reencrypting if is(new_vp) => next.rotation = RotationLock::Reencrypted,
            RotationLock::Aborting if is(current_vp) => next.rotation = RotationLock::None,
            RotationLock::Reencrypted if is(new_vp) => {}
            RotationLock::None if is(current_vp) => {}
            _ => return Err(UnitError::NoRotation),
        }
        Ok(next)
    }

    /// Imprint mode: no thresholds set yet.
    pub fn imprint(&self) -> bool {
        self.signature_threshold == 0
    }

    /// The public view of this state.
    pub fn status(&self, identity: PublicKey) -> UnitStatus {
        UnitStatus {
            unit: self.unit,
            kind: self.kind,
            identity,
            imprint: self.imprint(),
            admins: self
                .admins
                .iter()
                .map(|admin| AdminInfo {
                    name: admin.name.clone(),
                    ski: admin.ski(),
                    public_key: admin.public_key.clone(),
                })
                .collect(),
            signature_threshold: self.signature_threshold,
            revocation_threshold: self.revocation_threshold,
            counter: self.counter,
            current: RegisterInfo {
                state: if self.current.is_some() {
                    CurrentState::Valid
                } else {
                    CurrentState::Empty
                },
                vp: self.current.as_ref().map_or(Vp::EMPTY, Secret32::vp),
            },
            new: RegisterInfo {
                state: self.new.state(),
                vp: self.new.key().map_or(Vp::EMPTY, Secret32::vp),
            },
            importer: self
                .importer
                .as_ref()
                .and_then(|importer| importer.public_sec1().ok())
                .unwrap_or_default(),
            rotation: self.rotation,
            enrollment_id: self.enrollment_secret().map(|secret| secret.id()),
        }
    }

    /// How many distinct admin signatures `action` needs in this state.
    pub fn required_signatures(&self, action: &Action) -> Result<u8, UnitError> {
        if self.imprint() {
            // Once claimed, imprint mode belongs to the installed admins.
            let claimed = u8::from(!self.admins.is_empty());
            return match action {
                Action::AddAdmin { .. } | Action::RemoveAdmin { .. } | Action::Zeroize => {
                    Ok(claimed)
                }
                Action::SetThresholds { signature, .. } => Ok(*signature),
                other => Err(UnitError::ImprintMode(other.name())),
            };
        }
        Ok(match action {
            Action::AddAdmin { .. }
            | Action::SetThresholds { .. }
            | Action::Commit { .. }
            | Action::Export { .. }
            | Action::PinNew { .. }
            | Action::AbortRotation { .. } => self.signature_threshold,
            Action::RemoveAdmin { .. } => self.revocation_threshold,
            Action::CreateImporter
            | Action::LoadNew { .. }
            | Action::ImportNew { .. }
            | Action::SetImmediate { .. }
            | Action::ClearNew
            | Action::ClearCurrent
            | Action::GenerateRandom
            | Action::Zeroize => 1,
        })
    }

    /// Checks unit, counter and signatures; returns how many distinct admins signed.
    fn authorize(&self, signed: &SignedCommand) -> Result<usize, UnitError> {
        let command = &signed.command;
        if command.unit != self.unit {
            return Err(UnitError::WrongUnit {
                unit: self.unit,
                named: command.unit,
            });
        }
        let expected = self.counter.saturating_add(1);
        if command.counter != expected {
            return Err(UnitError::BadCounter {
                expected,
                got: command.counter,
            });
        }
        let message = command.signing_bytes();
        let mut signers = BTreeSet::new();
        for signature in &signed.signatures {
            if !signers.insert(signature.ski) {
                return Err(UnitError::DuplicateSigner(signature.ski.to_hex()));
            }
            let admin = self
                .admins
                .iter()
                .find(|admin| admin.ski() == signature.ski)
                .ok_or_else(|| UnitError::NotAnAdmin(signature.ski.to_hex()))?;
            admin
                .public_key
                .verify(&message, &signature.signature)
                .map_err(|_| UnitError::BadSignature(signature.ski.to_hex()))?;
        }
        Ok(signers.len())
    }

    /// Applies one signed command. On success returns the next state and what the command
    /// produced; on error `self` is untouched, so a refused command changes nothing.
    pub fn apply(
        &self,
        signed: &SignedCommand,
        entropy: &mut dyn Entropy,
    ) -> Result<(Self, Outcome), UnitError> {
        let action = &signed.command.action;
        let required = self.required_signatures(action)?;
        let signers = self.authorize(signed)?;
        if signers < usize::from(required) {
            return Err(UnitError::TooFewSignatures {
                action: action.name(),
                required,
                got: signers,
            });
        }
        if self.admins.is_empty()
            && let Action::AddAdmin { public_key, .. } = action
        {
            self.check_enrollment(signed, public_key)?;
        }
        let mut next = self.clone();
        next.counter = signed.command.counter;
        let outcome = next.transition(action, entropy)?;
        Ok((next, outcome))
    }

    /// The first admin: a proof made with the enrollment secret for exactly this command, or
    /// the admin key the unit was started with.
    fn check_enrollment(
        &self,
        signed: &SignedCommand,
        public_key: &PublicKey,
    ) -> Result<(), UnitError> {
        let accepted = match &self.enrollment {
            Enrollment::Secret(secret) => signed.enrollment.is_some_and(|proof| {
                signed
                    .command
                    .verify_enrollment(&EnrollmentSecret(secret.clone()), &proof)
            }),
            Enrollment::InitialAdmin(ski) => Ski::of(public_key) == *ski,
            // No admins yet a claimed unit: never accept without a proof it cannot check.
            Enrollment::Claimed => false,
        };
        if accepted {
            Ok(())
        } else {
            Err(UnitError::EnrollmentRequired)
        }
    }

    fn transition(
        &mut self,
        action: &Action,
        entropy: &mut dyn Entropy,
    ) -> Result<Outcome, UnitError> {
        let locked = self.rotation != RotationLock::None;
        let in_progress = || UnitError::RotationInProgress {
            action: action.name(),
            lock: self.rotation,
        };
        match action {
            Action::LoadNew { .. }
            | Action::ImportNew { .. }
            | Action::ClearNew
            | Action::ClearCurrent
            | Action::GenerateRandom
            | Action::PinNew { .. }
                if locked =>
            {
                return Err(in_progress());
            }
            Action::SetImmediate { .. } if locked && self.rotation != RotationLock::Reencrypted => {
                return Err(in_progress());
            }
            _ => {}
        }
        match action {
            Action::AddAdmin { name, public_key } => {
                let outcome = self.add_admin(name, public_key)?;
                self.enrollment = Enrollment::Claimed;
                Ok(outcome)
            }
            Action::RemoveAdmin { ski } => {
                let outcome = self.remove_admin(*ski)?;
                if self.admins.is_empty() {
                    self.enrollment = Enrollment::Secret(entropy.secret());
                }
                Ok(outcome)
            }
            Action::SetThresholds {
                signature,
                revocation,
            } => self.set_thresholds(*signature, *revocation),
            Action::CreateImporter => {
                let importer = entropy.importer();
                let public_key = importer.public_sec1().map_err(|_| UnitError::Storage)?;
                self.importer = Some(importer);
                Ok(Outcome::Importer { public_key })
            }
            Action::LoadNew { importer, parts } => {
                self.expect_new_empty()?;
                if !(2..=3).contains(&parts.len()) {
                    return Err(UnitError::PartCount(parts.len()));
                }
                let pending = self.take_importer(importer)?;
                let context = envelope_context(PART_CONTEXT, self.unit);
                let opened = parts
                    .iter()
                    .map(|part| pending.open_part(part, &context))
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(|_| UnitError::ImportFailed)?;
                let key = combine_parts(&opened);
                if self
                    .current
                    .as_ref()
                    .is_some_and(|current| current.ct_eq(&key))
                {
                    return Err(UnitError::SameAsCurrent);
                }
                self.new = NewRegister::Uncommitted(key);
                Ok(Outcome::Done)
            }
            Action::ImportNew { importer, key } => {
                self.expect_new_empty()?;
                let pending = self.take_importer(importer)?;
                let context = envelope_context(TRANSFER_CONTEXT, self.unit);
                let key = pending
                    .open(key, &context)
                    .map_err(|_| UnitError::ImportFailed)?;
                self.new = NewRegister::Uncommitted(key);
                Ok(Outcome::Done)
            }
            Action::Commit { vp } => match &self.new {
                NewRegister::Uncommitted(key) => {
                    check_vp(Register::New, key, vp)?;
                    self.new = NewRegister::Committed(key.clone());
                    Ok(Outcome::Done)
                }
                other => Err(UnitError::RegisterState {
                    register: Register::New,
                    needs: "Full Uncommitted",
                    found: other.state().label(),
                }),
            },
            Action::SetImmediate { vp } => match &self.new {
                NewRegister::Committed(key) => {
                    check_vp(Register::New, key, vp)?;
                    self.current = Some(key.clone());
                    self.new = NewRegister::Empty;
                    self.rotation = RotationLock::None;
                    Ok(Outcome::Done)
                }
                other => Err(UnitError::RegisterState {
                    register: Register::New,
                    needs: "Full Committed",
                    found: other.state().label(),
                }),
            },
            Action::ClearNew => {
                self.new = NewRegister::Empty;
                Ok(Outcome::Done)
            }
            Action::ClearCurrent => {
                self.current = None;
                Ok(Outcome::Done)
            }
            Action::GenerateRandom => {
                if self.kind != UnitKind::Recovery {
                    return Err(UnitError::RecoveryOnly(action.name()));
                }
                let key = entropy.secret();
                let vp = key.vp();
                if self.current.is_none() {
                    self.current = Some(key);
                    Ok(Outcome::Generated {
                        register: Register::Current,
                        vp,
                    })
                } else if matches!(self.new, NewRegister::Empty) {
                    self.new = NewRegister::Uncommitted(key);
                    Ok(Outcome::Generated {
                        register: Register::New,
                        vp,
                    })
                } else {
                    Err(UnitError::RegisterState {
                        register: Register::New,
                        needs: "Empty (or the current register Empty)",
                        found: self.new.state().label(),
                    })
                }
            }
            Action::Export {
                register,
                recipient_unit,
                recipient_importer,
            } => {
                if self.kind != UnitKind::Recovery {
                    return Err(UnitError::RecoveryOnly(action.name()));
                }
                let key = match register {
                    Register::Current => self.current.as_ref().ok_or(UnitError::RegisterState {
                        register: Register::Current,
                        needs: "Valid",
                        found: "Empty",
                    })?,
                    Register::New => self.new.key().ok_or(UnitError::RegisterState {
                        register: Register::New,
                        needs: "Full",
                        found: "Empty",
                    })?,
                };
                let context = envelope_context(TRANSFER_CONTEXT, *recipient_unit);
                let envelope = seal_to(recipient_importer, &context, key)
                    .map_err(|_| UnitError::BadPublicKey)?;
                Ok(Outcome::Exported {
                    vp: key.vp(),
                    key: envelope,
                })
            }
            Action::PinNew { vp } => {
                if self.current.is_none() {
                    return Err(UnitError::RegisterState {
                        register: Register::Current,
                        needs: "Valid",
                        found: "Empty",
                    });
                }
                match &self.new {
                    NewRegister::Committed(key) => check_vp(Register::New, key, vp)?,
                    other => {
                        return Err(UnitError::RegisterState {
                            register: Register::New,
                            needs: "Full Committed",
                            found: other.state().label(),
                        });
                    }
                }
                self.rotation = RotationLock::Reencrypting;
                Ok(Outcome::Done)
            }
            Action::AbortRotation { vp } => {
                if !matches!(
                    self.rotation,
                    RotationLock::Reencrypting | RotationLock::Reencrypted
                ) {
                    return Err(UnitError::NoRotation);
                }
                if let Some(key) = self.new.key() {
                    check_vp(Register::New, key, vp)?;
                }
                self.rotation = RotationLock::Aborting;
                Ok(Outcome::Done)
            }
            Action::Zeroize => {
                // A claimed unit gets a new secret; an unclaimed one keeps what it waits for,
                // so the secret its operator holds stays valid.
                let enrollment = if self.admins.is_empty() {
                    self.enrollment.clone()
                } else {
                    Enrollment::Secret(entropy.secret())
                };
                *self = Self {
                    counter: self.counter,
                    ..Self::empty(self.unit, self.kind, enrollment)
                };
                Ok(Outcome::Done)
            }
        }
    }

    fn add_admin(&mut self, name: &str, public_key: &PublicKey) -> Result<Outcome, UnitError> {
        let length = name.chars().count();
        if length == 0 || length > MAX_ADMIN_NAME {
            return Err(UnitError::AdminName(format!(
                "must be 1 to {MAX_ADMIN_NAME} characters, got {length}"
            )));
        }
        if name.chars().any(char::is_control) {
            return Err(UnitError::AdminName(
                "contains control characters".to_owned(),
            ));
        }
        let public_key = PublicKey::parse(public_key.alg, &public_key.sec1)
            .map_err(|_| UnitError::BadPublicKey)?;
        let ski = Ski::of(&public_key);
        if self.admins.iter().any(|admin| admin.ski() == ski) {
            return Err(UnitError::AdminExists(ski.to_hex()));
        }
        if self.admins.len() >= MAX_ADMINS {
            return Err(UnitError::AdminLimit);
        }
        self.admins.push(Admin {
            name: name.to_owned(),
            public_key,
        });
        Ok(Outcome::Done)
    }

    fn remove_admin(&mut self, ski: Ski) -> Result<Outcome, UnitError> {
        let index = self
            .admins
            .iter()
            .position(|admin| admin.ski() == ski)
            .ok_or_else(|| UnitError::UnknownAdmin(ski.to_hex()))?;
        let left = self.admins.len() - 1;
        let threshold = self.signature_threshold.max(self.revocation_threshold);
        if left < usize::from(threshold) {
            return Err(UnitError::BelowThreshold { left, threshold });
        }
        self.admins.remove(index);
        Ok(Outcome::Done)
    }

    fn set_thresholds(&mut self, signature: u8, revocation: u8) -> Result<Outcome, UnitError> {
        for (which, value) in [("signature", signature), ("revocation", revocation)] {
            if !(1..=MAX_THRESHOLD).contains(&value) {
                return Err(UnitError::ThresholdRange { which, value });
            }
            if usize::from(value) > self.admins.len() {
                return Err(UnitError::ThresholdAboveAdmins {
                    which,
                    value,
                    admins: self.admins.len(),
                });
            }
        }
        self.signature_threshold = signature;
        self.revocation_threshold = revocation;
        Ok(Outcome::Done)
    }

    fn expect_new_empty(&self) -> Result<(), UnitError> {
        match self.new {
            NewRegister::Empty => Ok(()),
            ref other => Err(UnitError::RegisterState {
                register: Register::New,
                needs: "Empty",
                found: other.state().label(),
            }),
        }
    }

    /// Takes the pending importer key if it is the one the material was encrypted to; an
    /// importer key is used once.
    fn take_importer(&mut self, public: &[u8]) -> Result<ImporterKey, UnitError> {
        let pending = self.importer.take().ok_or(UnitError::NoImporter)?;
        match pending.public_sec1() {
            Ok(sec1) if sec1 == public => Ok(pending),
            _ => Err(UnitError::NoImporter),
        }
    }
}

fn check_vp(register: Register, key: &Secret32, expected: &Vp) -> Result<(), UnitError> {
    let found = key.vp();
    if found.matches(expected) {
        Ok(())
    } else {
        Err(UnitError::VpMismatch {
            register,
            expected: *expected,
            found,
        })
    }
}

/// The context an envelope for `unit` is bound to.
pub fn envelope_context(label: &[u8], unit: Uuid) -> Vec<u8> {
    let mut context = label.to_vec();
    context.extend_from_slice(unit.as_bytes());
    context
}

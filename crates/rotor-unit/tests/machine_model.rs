//! Model-based test of the unit state machine ([`UnitState::apply`]).
//!
//! Random command sequences run against the real machine and against [`Model`], a small,
//! independent restatement of the HPCS rules the machine documents. For every step the model
//! predicts acceptance (and the resulting state and outcome) or the exact rejection code, and
//! the test checks that the machine agrees, that a rejected command leaves the state untouched
//! and that, after every accepted one, the unit's status and registers are what the model says.
//!
//! The master key rotation lock is part of the model too: pin new and abort rotation are
//! commands like any other, and between commands the service may report key storage
//! reencrypted ([`UnitState::finish_reencryption`], a [`Step::Finish`] here). After every step
//! the lock and the master keys key operations would use ([`UnitState::masters`]) must agree.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::OnceLock;

use proptest::prelude::*;
use proptest::strategy::ValueTree;
use proptest::test_runner::TestRunner;
use rotor_crypto::{
    Envelope, ImporterKey, PublicKey, Secret32, SigAlg, SigningKey, VP_COMPARED_LEN, Vp, seal_to,
    sha256, verification_pattern,
};
use rotor_unit::UnitError;
use rotor_unit::machine::{Entropy, NewRegister, UnitState, envelope_context};
use rotor_unit::wire::{
    Action, AdminInfo, Command, CommandSignature, CurrentState, EnrollmentSecret, NewState,
    Outcome, PART_CONTEXT, Register, RegisterInfo, RotationLock, SignedCommand, Ski,
    TRANSFER_CONTEXT, UnitKind, UnitStatus,
};
use uuid::Uuid;

/// Admin signing keys the generator draws from: one more than a unit holds, so that the
/// admin limit is reachable.
const POOL: usize = 9;
/// Index of the key that is never installed as an admin.
const NON_ADMIN: usize = POOL;
/// Which pool key is P-521 (HPCS TKE style); the others are P-256.
const P521_INDEX: usize = 2;
/// The unit under test.
const UNIT: Uuid = Uuid::from_u128(0x5eed_0000_0000_4000_8000_0000_0000_0001);
/// Some other unit.
const OTHER_UNIT: Uuid = Uuid::from_u128(0x5eed_0000_0000_4000_8000_0000_0000_0002);
/// Sequences are at most this long (after the optional setup prefix).
const MAX_STEPS: usize = 40;

// ---------------------------------------------------------------------------------------------
// Fixed key material
// ---------------------------------------------------------------------------------------------

struct Keys {
    /// `POOL` admin candidates, then the non-admin at `NON_ADMIN`.
    signers: Vec<SigningKey>,
    publics: Vec<PublicKey>,
    /// The unit identity passed to `status` (never checked by the machine).
    identity: PublicKey,
    /// A valid importer public key that is never pending on the unit.
    bogus_importer: Vec<u8>,
}

fn keys() -> &'static Keys {
    static KEYS: OnceLock<Keys> = OnceLock::new();
    KEYS.get_or_init(|| {
        let signers: Vec<SigningKey> = (0..=POOL)
            .map(|i| {
                SigningKey::generate(if i == P521_INDEX {
                    SigAlg::P521Sha512
                } else {
                    SigAlg::P256Sha256
                })
            })
            .collect();
        let publics = signers.iter().map(SigningKey::public_key).collect();
        Keys {
            signers,
            publics,
            identity: SigningKey::generate(SigAlg::P256Sha256).public_key(),
            // Never fails for a freshly generated key; an empty key would only make sealing fail.
            bogus_importer: ImporterKey::generate().public_sec1().unwrap_or_default(),
        }
    })
}

fn ski(index: usize) -> Ski {
    Ski::of(&keys().publics[index])
}

/// A deterministic 256-bit value, distinct for each `(label, a, b, c)`.
fn derive(label: &[u8], a: u64, b: u64, c: u64) -> [u8; 32] {
    let mut input = label.to_vec();
    for word in [a, b, c] {
        input.extend_from_slice(&word.to_be_bytes());
    }
    sha256(&input)
}

fn xor(a: [u8; 32], b: [u8; 32]) -> [u8; 32] {
    let mut out = a;
    for (o, b) in out.iter_mut().zip(b) {
        *o ^= b;
    }
    out
}

/// The compressed SEC1 form of an uncompressed point (`02|03 ‖ X`).
fn compress(sec1: &[u8]) -> Vec<u8> {
    let coordinate = (sec1.len() - 1) / 2;
    let y_odd = sec1[sec1.len() - 1] & 1;
    let mut out = vec![0x02 | y_odd];
    out.extend_from_slice(&sec1[1..=coordinate]);
    out
}

/// Entropy whose secrets the model can predict: the `n`th secret drawn during step `step` of a
/// case salted with `salt` is `derive("entropy", salt, step, n)`. Importer keys stay random; the
/// test learns them from the outcome and the status.
struct TestEntropy {
    salt: u64,
    step: u64,
    drawn: u64,
}

fn entropy_key(salt: u64, step: u64, n: u64) -> [u8; 32] {
    derive(b"entropy", salt, step, n)
}

impl Entropy for TestEntropy {
    fn secret(&mut self) -> Secret32 {
        let key = entropy_key(self.salt, self.step, self.drawn);
        self.drawn += 1;
        Secret32::from_bytes(key)
    }

    fn importer(&mut self) -> ImporterKey {
        ImporterKey::generate()
    }
}

// ---------------------------------------------------------------------------------------------
// The model
// ---------------------------------------------------------------------------------------------

#[derive(Clone, Debug, PartialEq, Eq)]
enum ModelNew {
    Empty,
    Full { key: [u8; 32], committed: bool },
}

#[derive(Clone, Debug)]
struct Model {
    kind: UnitKind,
    /// Installed admins in installation order: pool index and name.
    admins: Vec<(usize, String)>,
    signature: u8,
    revocation: u8,
    counter: u64,
    current: Option<[u8; 32]>,
    new: ModelNew,
    /// The pending importer public key, learnt from the `CreateImporter` outcome.
    importer: Option<Vec<u8>>,
    rotation: RotationLock,
}

/// The master keys key operations may use, as [`UnitState::masters`] reports them.
#[derive(Clone, Debug, PartialEq, Eq)]
struct ModelMasters {
    current: [u8; 32],
    /// The new register, only once committed.
    new: Option<[u8; 32]>,
    wrap_under_new: bool,
    /// The key new blobs are wrapped under.
    wrapping: [u8; 32],
}

/// What the model knows about one encrypted secret.
#[derive(Clone, Debug)]
struct SealedFacts {
    key: [u8; 32],
    /// The importer public key it was sealed to.
    sealed_to: Vec<u8>,
    /// Sealed under the context the unit expects.
    context_ok: bool,
    /// Not tampered with.
    intact: bool,
}

impl SealedFacts {
    fn opens_with(&self, importer: &[u8]) -> bool {
        self.sealed_to == importer && self.context_ok && self.intact
    }
}

#[derive(Clone, Debug)]
enum ModelAction {
    AddAdmin {
        key: usize,
        name: String,
        point_ok: bool,
    },
    RemoveAdmin {
        key: usize,
    },
    SetThresholds {
        signature: u8,
        revocation: u8,
    },
    CreateImporter,
    LoadNew {
        importer: Vec<u8>,
        parts: Vec<SealedFacts>,
    },
    ImportNew {
        importer: Vec<u8>,
        key: SealedFacts,
    },
    Commit {
        vp: Vp,
    },
    SetImmediate {
        vp: Vp,
    },
    ClearNew,
    ClearCurrent,
    GenerateRandom {
        key: [u8; 32],
    },
    Export {
        register: Register,
        recipient_ok: bool,
    },
    PinNew {
        vp: Vp,
    },
    AbortRotation {
        vp: Vp,
    },
    Zeroize,
}

#[derive(Clone, Debug)]
struct ModelCommand {
    unit_ok: bool,
    counter: u64,
    /// Signatures in order: pool index of the signer and whether the signature verifies.
    signatures: Vec<(usize, bool)>,
    /// It carries a proof of the unit's current enrollment secret, made for this command.
    enrollment_ok: bool,
    action: ModelAction,
}

/// What a successful command must produce.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Expect {
    Done,
    /// A fresh importer key (random, so only its presence is predicted).
    Importer,
    Generated {
        register: Register,
        key: [u8; 32],
    },
    Exported {
        key: [u8; 32],
    },
}

fn vp_matches(key: &[u8; 32], vp: &Vp) -> bool {
    verification_pattern(key).0[..VP_COMPARED_LEN] == vp.0[..VP_COMPARED_LEN]
}

impl Model {
    fn new(kind: UnitKind) -> Self {
        Self {
            kind,
            admins: Vec::new(),
            signature: 0,
            revocation: 0,
            counter: 0,
            current: None,
            new: ModelNew::Empty,
            importer: None,
            rotation: RotationLock::None,
        }
    }

    fn imprint(&self) -> bool {
        self.signature == 0
    }

    fn is_admin(&self, key: usize) -> bool {
        self.admins.iter().any(|(k, _)| *k == key)
    }

    fn new_key(&self) -> Option<[u8; 32]> {
        match self.new {
            ModelNew::Empty => None,
            ModelNew::Full { key, .. } => Some(key),
        }
    }

    fn required(&self, action: &ModelAction) -> Result<u8, &'static str> {
        use ModelAction as A;
        if self.imprint() {
            // The first admin comes with the enrollment secret; the installed ones then own
            // imprint mode.
            return match action {
                A::AddAdmin { .. } | A::RemoveAdmin { .. } | A::Zeroize => {
                    Ok(u8::from(!self.admins.is_empty()))
                }
                A::SetThresholds { signature, .. } => Ok(*signature),
                _ => Err("imprint_mode"),
            };
        }
        Ok(match action {
            A::AddAdmin { .. }
            | A::SetThresholds { .. }
            | A::Commit { .. }
            | A::Export { .. }
            | A::PinNew { .. }
            | A::AbortRotation { .. } => self.signature,
            A::RemoveAdmin { .. } => self.revocation,
            _ => 1,
        })
    }

    /// Whether the rotation lock refuses `action`. Nothing may clear or replace a register
    /// (or pin again) while a rotation is under way; promotion waits for the reencryption.
    fn locked_out(&self, action: &ModelAction) -> bool {
        use ModelAction as A;
        match action {
            A::LoadNew { .. }
            | A::ImportNew { .. }
            | A::ClearNew
            | A::ClearCurrent
            | A::GenerateRandom { .. }
            | A::PinNew { .. } => self.rotation != RotationLock::None,
            A::SetImmediate { .. } => matches!(
                self.rotation,
                RotationLock::Reencrypting | RotationLock::Aborting
            ),
            _ => false,
        }
    }

    /// The service reports key storage entirely under the master key with VP `to`.
    fn finish(&self, to: &Vp) -> Result<Self, &'static str> {
        let holds = |key: Option<[u8; 32]>| key.is_some_and(|key| vp_matches(&key, to));
        let (from_register, to_lock) = match self.rotation {
            RotationLock::None => (self.current, RotationLock::None),
            RotationLock::Reencrypting => (self.new_key(), RotationLock::Reencrypted),
            RotationLock::Reencrypted => (self.new_key(), RotationLock::Reencrypted),
            RotationLock::Aborting => (self.current, RotationLock::None),
        };
        if !holds(from_register) {
            return Err("no_rotation");
        }
        let mut next = self.clone();
        next.rotation = to_lock;
        Ok(next)
    }

    fn masters(&self) -> Option<ModelMasters> {
        let current = self.current?;
        let new = match self.new {
            ModelNew::Full {
                key,
                committed: true,
            } => Some(key),
            _ => None,
        };
        let wrap_under_new = matches!(
            self.rotation,
            RotationLock::Reencrypting | RotationLock::Reencrypted
        );
        Some(ModelMasters {
            current,
            new,
            wrap_under_new,
            wrapping: match new {
                Some(new) if wrap_under_new => new,
                _ => current,
            },
        })
    }

    fn apply(&self, command: &ModelCommand) -> Result<(Self, Expect), &'static str> {
        let required = self.required(&command.action)?;
        if !command.unit_ok {
            return Err("wrong_unit");
        }
        if command.counter != self.counter + 1 {
            return Err("bad_counter");
        }
        let mut seen = BTreeSet::new();
        for &(signer, verifies) in &command.signatures {
            if !seen.insert(signer) {
                return Err("duplicate_signer");
            }
            if !self.is_admin(signer) {
                return Err("not_an_admin");
            }
            if !verifies {
                return Err("bad_signature");
            }
        }
        if seen.len() < usize::from(required) {
            return Err("too_few_signatures");
        }
        if self.admins.is_empty()
            && matches!(command.action, ModelAction::AddAdmin { .. })
            && !command.enrollment_ok
        {
            return Err("enrollment_required");
        }
        let mut next = self.clone();
        next.counter = command.counter;
        let expect = next.transition(&command.action)?;
        Ok((next, expect))
    }

    fn transition(&mut self, action: &ModelAction) -> Result<Expect, &'static str> {
        use ModelAction as A;
        if self.locked_out(action) {
            return Err("rotation_in_progress");
        }
        match action {
            A::AddAdmin {
                key,
                name,
                point_ok,
            } => {
                let length = name.chars().count();
                if !(1..=30).contains(&length) || name.chars().any(char::is_control) {
                    return Err("admin_name");
                }
                if !point_ok {
                    return Err("bad_public_key");
                }
                if self.is_admin(*key) {
                    return Err("admin_exists");
                }
                if self.admins.len() >= 8 {
                    return Err("admin_limit");
                }
                self.admins.push((*key, name.clone()));
            }
            A::RemoveAdmin { key } => {
                let Some(index) = self.admins.iter().position(|(k, _)| k == key) else {
                    return Err("unknown_admin");
                };
                if self.admins.len() - 1 < usize::from(self.signature.max(self.revocation)) {
                    return Err("below_threshold");
                }
                self.admins.remove(index);
            }
            A::SetThresholds {
                signature,
                revocation,
            } => {
                for value in [*signature, *revocation] {
                    if !(1..=8).contains(&value) {
                        return Err("threshold_range");
                    }
                    if usize::from(value) > self.admins.len() {
                        return Err("threshold_above_admins");
                    }
                }
                self.signature = *signature;
                self.revocation = *revocation;
            }
            A::CreateImporter => return Ok(Expect::Importer),
            A::LoadNew { importer, parts } => {
                if self.new != ModelNew::Empty {
                    return Err("register_state");
                }
                if !(2..=3).contains(&parts.len()) {
                    return Err("part_count");
                }
                if self.importer.as_ref() != Some(importer) {
                    return Err("no_importer");
                }
                if !parts.iter().all(|part| part.opens_with(importer)) {
                    return Err("import_failed");
                }
                let key = parts.iter().fold([0u8; 32], |acc, part| xor(acc, part.key));
                if self.current == Some(key) {
                    return Err("same_as_current");
                }
                self.importer = None;
                self.new = ModelNew::Full {
                    key,
                    committed: false,
                };
            }
            A::ImportNew { importer, key } => {
                if self.new != ModelNew::Empty {
                    return Err("register_state");
                }
                if self.importer.as_ref() != Some(importer) {
                    return Err("no_importer");
                }
                if !key.opens_with(importer) {
                    return Err("import_failed");
                }
                self.importer = None;
                self.new = ModelNew::Full {
                    key: key.key,
                    committed: false,
                };
            }
            A::Commit { vp } => match self.new {
                ModelNew::Full {
                    key,
                    committed: false,
                } => {
                    if !vp_matches(&key, vp) {
                        return Err("vp_mismatch");
                    }
                    self.new = ModelNew::Full {
                        key,
                        committed: true,
                    };
                }
                _ => return Err("register_state"),
            },
            A::SetImmediate { vp } => match self.new {
                ModelNew::Full {
                    key,
                    committed: true,
                } => {
                    if !vp_matches(&key, vp) {
                        return Err("vp_mismatch");
                    }
                    self.current = Some(key);
                    self.new = ModelNew::Empty;
                    self.rotation = RotationLock::None;
                }
                _ => return Err("register_state"),
            },
            A::ClearNew => self.new = ModelNew::Empty,
            A::ClearCurrent => self.current = None,
            A::GenerateRandom { key } => {
                if self.kind != UnitKind::Recovery {
                    return Err("recovery_only");
                }
                if self.current.is_none() {
                    self.current = Some(*key);
                    return Ok(Expect::Generated {
                        register: Register::Current,
                        key: *key,
                    });
                }
                if self.new == ModelNew::Empty {
                    self.new = ModelNew::Full {
                        key: *key,
                        committed: false,
                    };
                    return Ok(Expect::Generated {
                        register: Register::New,
                        key: *key,
                    });
                }
                return Err("register_state");
            }
            A::Export {
                register,
                recipient_ok,
            } => {
                if self.kind != UnitKind::Recovery {
                    return Err("recovery_only");
                }
                let key = match register {
                    Register::Current => self.current,
                    Register::New => self.new_key(),
                };
                let Some(key) = key else {
                    return Err("register_state");
                };
                if !recipient_ok {
                    return Err("bad_public_key");
                }
                return Ok(Expect::Exported { key });
            }
            A::PinNew { vp } => {
                if self.current.is_none() {
                    return Err("register_state");
                }
                let ModelNew::Full {
                    key,
                    committed: true,
                } = self.new
                else {
                    return Err("register_state");
                };
                if !vp_matches(&key, vp) {
                    return Err("vp_mismatch");
                }
                self.rotation = RotationLock::Reencrypting;
            }
            A::AbortRotation { vp } => {
                if !matches!(
                    self.rotation,
                    RotationLock::Reencrypting | RotationLock::Reencrypted
                ) {
                    return Err("no_rotation");
                }
                if !self.new_key().is_some_and(|key| vp_matches(&key, vp)) {
                    return Err("vp_mismatch");
                }
                self.rotation = RotationLock::Aborting;
            }
            A::Zeroize => {
                self.admins.clear();
                self.signature = 0;
                self.revocation = 0;
                self.current = None;
                self.new = ModelNew::Empty;
                self.importer = None;
                self.rotation = RotationLock::None;
            }
        }
        Ok(Expect::Done)
    }

    /// The status the real unit must report in this state.
    fn status(&self) -> UnitStatus {
        let keys = keys();
        UnitStatus {
            unit: UNIT,
            kind: self.kind,
            identity: keys.identity.clone(),
            imprint: self.imprint(),
            admins: self
                .admins
                .iter()
                .map(|(index, name)| AdminInfo {
                    name: name.clone(),
                    ski: ski(*index),
                    public_key: keys.publics[*index].clone(),
                })
                .collect(),
            signature_threshold: self.signature,
            revocation_threshold: self.revocation,
            counter: self.counter,
            current: RegisterInfo {
                state: if self.current.is_some() {
                    CurrentState::Valid
                } else {
                    CurrentState::Empty
                },
                vp: self
                    .current
                    .as_ref()
                    .map_or(Vp::EMPTY, verification_pattern),
            },
            new: RegisterInfo {
                state: match self.new {
                    ModelNew::Empty => NewState::Empty,
                    ModelNew::Full {
                        committed: false, ..
                    } => NewState::FullUncommitted,
                    ModelNew::Full {
                        committed: true, ..
                    } => NewState::FullCommitted,
                },
                vp: self
                    .new_key()
                    .as_ref()
                    .map_or(Vp::EMPTY, verification_pattern),
            },
            importer: self.importer.clone().unwrap_or_default(),
            rotation: self.rotation,
            enrollment_id: None,
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Generated steps
// ---------------------------------------------------------------------------------------------

#[derive(Clone, Debug)]
enum Name {
    Plain,
    /// 30 two-byte characters: the longest allowed.
    Max,
    Empty,
    TooLong,
    Control,
}

#[derive(Clone, Debug)]
enum Encoding {
    Uncompressed,
    /// The same key, compressed: the machine must normalise it (so duplicates are caught).
    Compressed,
    /// Not a point.
    Garbage,
}

/// How encrypted key material is prepared.
#[derive(Clone, Debug)]
enum Parts {
    Fresh,
    /// Parts that XOR to the current key (fresh parts when current is empty).
    SameAsCurrent,
    /// Part `n % count` sealed to an importer key that is not pending.
    SealedToOther(u8),
    /// Part `n % count` sealed under the wrong context.
    WrongContext(u8),
    /// Part `n % count` has a flipped ciphertext byte.
    Corrupt(u8),
}

/// A VP named by a command or a finished reencryption.
#[derive(Clone, Debug)]
enum VpPick {
    /// The VP of the new register.
    Right,
    /// Right in the 28 compared bytes, garbage in the last four (old HPCS style).
    OldStyle,
    Wrong,
    /// The VP of the current register.
    OfCurrent,
}

#[derive(Clone, Debug)]
enum Act {
    AddAdmin {
        key: usize,
        name: Name,
        encoding: Encoding,
    },
    /// `installed`: installed admin number `key % admins` (if any), else pool key `key`.
    RemoveAdmin {
        installed: bool,
        key: usize,
    },
    SetThresholds {
        signature: u8,
        revocation: u8,
    },
    CreateImporter,
    /// `pending`: name the pending importer key (else a key that is not pending).
    LoadNew {
        count: usize,
        pending: bool,
        parts: Parts,
    },
    ImportNew {
        pending: bool,
        parts: Parts,
    },
    Commit(VpPick),
    SetImmediate(VpPick),
    ClearNew,
    ClearCurrent,
    GenerateRandom,
    Export {
        register: Register,
        recipient_ok: bool,
    },
    PinNew(VpPick),
    AbortRotation(VpPick),
    Zeroize,
}

#[derive(Clone, Debug)]
enum Signers {
    /// `required + extra` of the installed admins (clamped), starting at `rotate`.
    Quorum { extra: i8, rotate: u8 },
    /// The pool keys (and the non-admin, bit `POOL`) whose bits are set, in index order.
    Subset(u16),
}

#[derive(Clone, Debug)]
enum Tamper {
    /// Insert a copy of signature `which` at `at`.
    Duplicate {
        which: u8,
        at: u8,
    },
    /// Insert a (valid) signature by the non-admin key at `at`.
    NonAdmin {
        at: u8,
    },
    /// Flip a bit of signature `which`.
    Corrupt {
        which: u8,
        byte: u8,
    },
    WrongUnit,
    /// A counter other than the next one.
    Counter(u8),
}

/// The enrollment proof a command carries (which counts only for a unit's first admin).
#[derive(Clone, Debug)]
enum Enroll {
    /// One of the others, picked from the case's salt and the step's index when the command
    /// is built, so that the generator's random stream (and what it reaches) stays as it was.
    Drawn,
    /// Made with the unit's current secret for this very command.
    Right,
    Missing,
    /// Made with another secret (a stale one, or a guess).
    OtherSecret,
    /// Made with the right secret for another command (a relay reusing it).
    OtherCommand,
}

/// One signed admin command.
#[derive(Clone, Debug)]
struct CommandStep {
    act: Act,
    signers: Signers,
    tampers: Vec<Tamper>,
    enroll: Enroll,
}

#[derive(Clone, Debug)]
enum Step {
    Command(CommandStep),
    /// The service reports key storage reencrypted to the master key with the VP picked
    /// ([`UnitState::finish_reencryption`]: unsigned, the counter stays).
    Finish(VpPick),
}

#[derive(Clone, Debug)]
enum Setup {
    None,
    /// Install pool keys `0..admins` (in imprint mode, unsigned) and set the thresholds.
    Admins {
        admins: usize,
        signature: u8,
        revocation: u8,
    },
    /// The same, then create an importer, load `parts` parts, commit, set immediate and create
    /// another importer (ready for a second load).
    WithKey {
        admins: usize,
        signature: u8,
        revocation: u8,
        parts: usize,
    },
    /// `WithKey`, then load a second key, commit it and pin it: a rotation is reencrypting
    /// (or, with `abort`, aborting).
    Pinned {
        admins: usize,
        signature: u8,
        revocation: u8,
        parts: usize,
        abort: bool,
    },
}

#[derive(Clone, Debug)]
struct Case {
    salt: u64,
    /// A prefix of ordinary steps that gets the unit out of imprint mode, so that the random
    /// steps spend their time on more than imprint-mode refusals.
    setup: Setup,
    steps: Vec<Step>,
}

impl Case {
    fn all_steps(&self) -> Vec<Step> {
        let quorum = |act| {
            Step::Command(CommandStep {
                act,
                signers: Signers::Quorum {
                    extra: 0,
                    rotate: 0,
                },
                tampers: Vec::new(),
                enroll: Enroll::Right,
            })
        };
        let mut steps = Vec::new();
        let (admins, signature, revocation, parts, pin) = match self.setup {
            Setup::None => (0, 0, 0, None, None),
            Setup::Admins {
                admins,
                signature,
                revocation,
            } => (admins, signature, revocation, None, None),
            Setup::WithKey {
                admins,
                signature,
                revocation,
                parts,
            } => (admins, signature, revocation, Some(parts), None),
            Setup::Pinned {
                admins,
                signature,
                revocation,
                parts,
                abort,
            } => (admins, signature, revocation, Some(parts), Some(abort)),
        };
        if admins > 0 {
            for key in 0..admins {
                steps.push(quorum(Act::AddAdmin {
                    key,
                    name: Name::Plain,
                    encoding: Encoding::Uncompressed,
                }));
            }
            steps.push(quorum(Act::SetThresholds {
                signature,
                revocation,
            }));
        }
        if let Some(count) = parts {
            steps.push(quorum(Act::CreateImporter));
            steps.push(quorum(Act::LoadNew {
                count,
                pending: true,
                parts: Parts::Fresh,
            }));
            steps.push(quorum(Act::Commit(VpPick::Right)));
            steps.push(quorum(Act::SetImmediate(VpPick::Right)));
            steps.push(quorum(Act::CreateImporter));
            if let Some(abort) = pin {
                steps.push(quorum(Act::LoadNew {
                    count,
                    pending: true,
                    parts: Parts::Fresh,
                }));
                steps.push(quorum(Act::Commit(VpPick::Right)));
                steps.push(quorum(Act::PinNew(VpPick::Right)));
                if abort {
                    steps.push(quorum(Act::AbortRotation(VpPick::Right)));
                }
            }
        }
        steps.extend(self.steps.iter().cloned());
        steps
    }
}

fn parts_strategy() -> impl Strategy<Value = Parts> {
    prop_oneof![
        8 => Just(Parts::Fresh),
        5 => Just(Parts::SameAsCurrent),
        2 => any::<u8>().prop_map(Parts::SealedToOther),
        2 => any::<u8>().prop_map(Parts::WrongContext),
        2 => any::<u8>().prop_map(Parts::Corrupt),
    ]
}

fn vp_strategy() -> impl Strategy<Value = VpPick> {
    prop_oneof![
        8 => Just(VpPick::Right),
        1 => Just(VpPick::OldStyle),
        3 => Just(VpPick::Wrong),
        2 => Just(VpPick::OfCurrent),
    ]
}

fn act_strategy() -> impl Strategy<Value = Act> {
    let name = prop_oneof![
        12 => Just(Name::Plain),
        1 => Just(Name::Max),
        1 => Just(Name::Empty),
        1 => Just(Name::TooLong),
        1 => Just(Name::Control),
    ];
    let encoding = prop_oneof![
        10 => Just(Encoding::Uncompressed),
        2 => Just(Encoding::Compressed),
        1 => Just(Encoding::Garbage),
    ];
    let threshold = prop_oneof![3 => 1u8..=4, 1 => 0u8..=9];
    let count = prop_oneof![1 => Just(1usize), 4 => Just(2), 4 => Just(3), 1 => Just(4)];
    prop_oneof![
        10 => (0..POOL, name, encoding).prop_map(|(key, name, encoding)| Act::AddAdmin { key, name, encoding }),
        4 => (any::<bool>(), 0..=POOL).prop_map(|(installed, key)| Act::RemoveAdmin { installed, key }),
        6 => (threshold.clone(), threshold)
            .prop_map(|(signature, revocation)| Act::SetThresholds { signature, revocation }),
        6 => Just(Act::CreateImporter),
        8 => (count, prop::bool::weighted(0.85), parts_strategy())
            .prop_map(|(count, pending, parts)| Act::LoadNew { count, pending, parts }),
        2 => (prop::bool::weighted(0.85), parts_strategy())
            .prop_map(|(pending, parts)| Act::ImportNew { pending, parts }),
        6 => vp_strategy().prop_map(Act::Commit),
        6 => vp_strategy().prop_map(Act::SetImmediate),
        4 => Just(Act::ClearNew),
        2 => Just(Act::ClearCurrent),
        4 => Just(Act::GenerateRandom),
        4 => (prop_oneof![Just(Register::Current), Just(Register::New)], prop::bool::weighted(0.9))
            .prop_map(|(register, recipient_ok)| Act::Export { register, recipient_ok }),
        4 => rotation_vp_strategy().prop_map(Act::PinNew),
        3 => rotation_vp_strategy().prop_map(Act::AbortRotation),
        1 => Just(Act::Zeroize),
    ]
}

/// The VP pin new and abort rotation name: wrong more often than for the register commands,
/// since they only get that far once a committed new register is there.
fn rotation_vp_strategy() -> impl Strategy<Value = VpPick> {
    prop_oneof![
        5 => Just(VpPick::Right),
        1 => Just(VpPick::OldStyle),
        2 => Just(VpPick::Wrong),
        2 => Just(VpPick::OfCurrent),
    ]
}

/// Which master key a finished reencryption names: the new register's about as often as the
/// current one's (each is right in some lock state).
fn finish_strategy() -> impl Strategy<Value = VpPick> {
    prop_oneof![
        4 => Just(VpPick::Right),
        1 => Just(VpPick::OldStyle),
        2 => Just(VpPick::Wrong),
        4 => Just(VpPick::OfCurrent),
    ]
}

fn step_strategy() -> impl Strategy<Value = Step> {
    let signers = prop_oneof![
        12 => (prop_oneof![1 => Just(-1i8), 8 => Just(0), 1 => Just(1)], any::<u8>())
            .prop_map(|(extra, rotate)| Signers::Quorum { extra, rotate }),
        1 => any::<u16>().prop_map(Signers::Subset),
    ];
    let tamper = prop_oneof![
        (any::<u8>(), any::<u8>()).prop_map(|(which, at)| Tamper::Duplicate { which, at }),
        any::<u8>().prop_map(|at| Tamper::NonAdmin { at }),
        (any::<u8>(), any::<u8>()).prop_map(|(which, byte)| Tamper::Corrupt { which, byte }),
        Just(Tamper::WrongUnit),
        (0u8..4).prop_map(Tamper::Counter),
    ];
    let tampers = prop_oneof![
        10 => Just(Vec::new()),
        3 => prop::collection::vec(tamper.clone(), 1),
        1 => prop::collection::vec(tamper, 2),
    ];
    let command = (act_strategy(), signers, tampers).prop_map(|(act, signers, tampers)| {
        Step::Command(CommandStep {
            act,
            signers,
            tampers,
            enroll: Enroll::Drawn,
        })
    });
    prop_oneof![
        8 => command,
        2 => finish_strategy().prop_map(Step::Finish),
    ]
}

fn case_strategy() -> impl Strategy<Value = Case> {
    let thresholds = (1..=POOL).prop_flat_map(|admins| {
        let most = admins.min(4) as u8;
        (Just(admins), 1..=most, 1..=most)
    });
    let setup = prop_oneof![
        1 => Just(Setup::None),
        2 => thresholds.clone().prop_map(|(admins, signature, revocation)| Setup::Admins {
            admins,
            signature,
            revocation,
        }),
        3 => (thresholds.clone(), 2usize..=3).prop_map(|((admins, signature, revocation), parts)| Setup::WithKey {
            admins,
            signature,
            revocation,
            parts,
        }),
        4 => (thresholds, 2usize..=3, prop::bool::weighted(0.3))
            .prop_map(|((admins, signature, revocation), parts, abort)| Setup::Pinned {
                admins,
                signature,
                revocation,
                parts,
                abort,
            }),
    ];
    (
        any::<u64>(),
        setup,
        prop::collection::vec(step_strategy(), 1..=MAX_STEPS),
    )
        .prop_map(|(salt, setup, steps)| Case { salt, setup, steps })
}

// ---------------------------------------------------------------------------------------------
// Turning a step into a signed command and the model's view of it
// ---------------------------------------------------------------------------------------------

struct Built {
    signed: SignedCommand,
    model: ModelCommand,
    /// For exports: the recipient importer key and unit, to open the exported envelope.
    recipient: Option<(ImporterKey, Uuid)>,
}

fn fail(what: impl std::fmt::Display) -> TestCaseError {
    TestCaseError::fail(what.to_string())
}

/// Seals one secret the way `parts` says, for part `index` of `count`.
fn seal_material(
    key: [u8; 32],
    given_importer: &[u8],
    parts: &Parts,
    index: usize,
    count: usize,
    label: &[u8],
) -> Result<(Envelope, SealedFacts), TestCaseError> {
    let targeted = |n: &u8| usize::from(*n) % count == index;
    let sealed_to = match parts {
        Parts::SealedToOther(n) if targeted(n) => ImporterKey::generate()
            .public_sec1()
            .map_err(|_| fail("importer"))?,
        _ => given_importer.to_vec(),
    };
    let context_ok = !matches!(parts, Parts::WrongContext(n) if targeted(n));
    let context = if context_ok {
        envelope_context(label, UNIT)
    } else if index.is_multiple_of(2) {
        envelope_context(label, OTHER_UNIT)
    } else {
        // Right unit, wrong purpose.
        let other = if label == PART_CONTEXT {
            TRANSFER_CONTEXT
        } else {
            PART_CONTEXT
        };
        envelope_context(other, UNIT)
    };
    let mut envelope =
        seal_to(&sealed_to, &context, &Secret32::from_bytes(key)).map_err(|_| fail("seal"))?;
    let intact = !matches!(parts, Parts::Corrupt(n) if targeted(n));
    if !intact {
        let at = usize::from(key[0]) % envelope.sealed.len();
        envelope.sealed[at] ^= 0x01;
    }
    Ok((
        envelope,
        SealedFacts {
            key,
            sealed_to,
            context_ok,
            intact,
        },
    ))
}

/// The VP `pick` names in the model's state.
fn pick_vp(pick: &VpPick, model: &Model, salt: u64, index: u64) -> Vp {
    let right = model
        .new_key()
        .as_ref()
        .map_or(Vp::EMPTY, verification_pattern);
    match pick {
        VpPick::Right => right,
        VpPick::OldStyle => {
            let mut vp = right;
            vp.0[VP_COMPARED_LEN..].copy_from_slice(&[0xde, 0xad, 0xbe, 0xef]);
            vp
        }
        VpPick::Wrong => verification_pattern(&derive(b"wrong vp", salt, index, 0)),
        VpPick::OfCurrent => model
            .current
            .as_ref()
            .map_or(Vp::EMPTY, verification_pattern),
    }
}

fn build(
    step: &CommandStep,
    model: &Model,
    state: &UnitState,
    salt: u64,
    index: u64,
) -> Result<Built, TestCaseError> {
    let keys = keys();
    let pending = state.status(keys.identity.clone()).importer;
    let importer_named = |want_pending: bool| {
        if want_pending && !pending.is_empty() {
            pending.clone()
        } else {
            keys.bogus_importer.clone()
        }
    };
    let mut recipient = None;
    let (action, model_action) = match &step.act {
        Act::AddAdmin {
            key,
            name,
            encoding,
        } => {
            let name = match name {
                Name::Plain => format!("admin {key}"),
                Name::Max => "é".repeat(30),
                Name::Empty => String::new(),
                Name::TooLong => "x".repeat(31),
                Name::Control => "tab\there".to_owned(),
            };
            let public = &keys.publics[*key];
            let public_key = match encoding {
                Encoding::Uncompressed => public.clone(),
                Encoding::Compressed => PublicKey {
                    alg: public.alg,
                    sec1: compress(&public.sec1),
                },
                Encoding::Garbage => PublicKey {
                    alg: public.alg,
                    sec1: vec![0x04; public.sec1.len()],
                },
            };
            (
                Action::AddAdmin {
                    name: name.clone(),
                    public_key,
                },
                ModelAction::AddAdmin {
                    key: *key,
                    name,
                    point_ok: !matches!(encoding, Encoding::Garbage),
                },
            )
        }
        Act::RemoveAdmin { installed, key } => {
            let key = match model.admins.len() {
                admins if *installed && admins > 0 => model.admins[key % admins].0,
                _ => *key,
            };
            (
                Action::RemoveAdmin { ski: ski(key) },
                ModelAction::RemoveAdmin { key },
            )
        }
        Act::SetThresholds {
            signature,
            revocation,
        } => (
            Action::SetThresholds {
                signature: *signature,
                revocation: *revocation,
            },
            ModelAction::SetThresholds {
                signature: *signature,
                revocation: *revocation,
            },
        ),
        Act::CreateImporter => (Action::CreateImporter, ModelAction::CreateImporter),
        Act::LoadNew {
            count,
            pending: want_pending,
            parts,
        } => {
            let importer = importer_named(*want_pending);
            let mut secrets: Vec<[u8; 32]> = (0..*count)
                .map(|i| derive(b"part", salt, index, i as u64))
                .collect();
            if let (Parts::SameAsCurrent, Some(current)) = (parts, model.current) {
                let others = secrets[..count - 1]
                    .iter()
                    .fold([0u8; 32], |acc, part| xor(acc, *part));
                secrets[count - 1] = xor(current, others);
            }
            let mut envelopes = Vec::new();
            let mut facts = Vec::new();
            for (i, secret) in secrets.into_iter().enumerate() {
                let (envelope, fact) =
                    seal_material(secret, &importer, parts, i, *count, PART_CONTEXT)?;
                envelopes.push(envelope);
                facts.push(fact);
            }
            (
                Action::LoadNew {
                    importer: importer.clone(),
                    parts: envelopes,
                },
                ModelAction::LoadNew {
                    importer,
                    parts: facts,
                },
            )
        }
        Act::ImportNew {
            pending: want_pending,
            parts,
        } => {
            let importer = importer_named(*want_pending);
            let secret = match (parts, model.current) {
                (Parts::SameAsCurrent, Some(current)) => current,
                _ => derive(b"transfer", salt, index, 0),
            };
            let (envelope, fact) = seal_material(secret, &importer, parts, 0, 1, TRANSFER_CONTEXT)?;
            (
                Action::ImportNew {
                    importer: importer.clone(),
                    key: envelope,
                },
                ModelAction::ImportNew {
                    importer,
                    key: fact,
                },
            )
        }
        Act::Commit(pick) => {
            let vp = pick_vp(pick, model, salt, index);
            (Action::Commit { vp }, ModelAction::Commit { vp })
        }
        Act::SetImmediate(pick) => {
            let vp = pick_vp(pick, model, salt, index);
            (
                Action::SetImmediate { vp },
                ModelAction::SetImmediate { vp },
            )
        }
        Act::PinNew(pick) => {
            let vp = pick_vp(pick, model, salt, index);
            (Action::PinNew { vp }, ModelAction::PinNew { vp })
        }
        Act::AbortRotation(pick) => {
            let vp = pick_vp(pick, model, salt, index);
            (
                Action::AbortRotation { vp },
                ModelAction::AbortRotation { vp },
            )
        }
        Act::ClearNew => (Action::ClearNew, ModelAction::ClearNew),
        Act::ClearCurrent => (Action::ClearCurrent, ModelAction::ClearCurrent),
        Act::GenerateRandom => (
            Action::GenerateRandom,
            ModelAction::GenerateRandom {
                key: entropy_key(salt, index, 0),
            },
        ),
        Act::Export {
            register,
            recipient_ok,
        } => {
            let importer = ImporterKey::generate();
            let recipient_unit = Uuid::from_bytes(
                derive(b"recipient", salt, index, 0)[..16]
                    .try_into()
                    .map_err(fail)?,
            );
            let recipient_importer = if *recipient_ok {
                importer.public_sec1().map_err(|_| fail("importer"))?
            } else {
                vec![0x04; 65]
            };
            recipient = Some((importer, recipient_unit));
            (
                Action::Export {
                    register: *register,
                    recipient_unit,
                    recipient_importer,
                },
                ModelAction::Export {
                    register: *register,
                    recipient_ok: *recipient_ok,
                },
            )
        }
        Act::Zeroize => (Action::Zeroize, ModelAction::Zeroize),
    };

    // Command-level tampering, before signing: the signatures cover what is sent.
    let mut unit_ok = true;
    let mut counter = model.counter + 1;
    for tamper in &step.tampers {
        match tamper {
            Tamper::WrongUnit => unit_ok = false,
            Tamper::Counter(which) => {
                counter = match which {
                    0 => model.counter, // a replay
                    1 => model.counter + 2,
                    2 => 0,
                    _ => u64::MAX,
                };
            }
            _ => {}
        }
    }
    let command = Command {
        unit: if unit_ok { UNIT } else { OTHER_UNIT },
        counter,
        action,
    };

    // Who signs.
    let signer_indices: Vec<usize> = match step.signers {
        Signers::Quorum { extra, rotate } => {
            let required = i16::from(model.required(&model_action).unwrap_or(1));
            let admins: Vec<usize> = model.admins.iter().map(|(k, _)| *k).collect();
            let wanted = (required + i16::from(extra)).clamp(0, admins.len() as i16) as usize;
            if admins.is_empty() {
                Vec::new()
            } else {
                let start = usize::from(rotate) % admins.len();
                (0..wanted)
                    .map(|i| admins[(start + i) % admins.len()])
                    .collect()
            }
        }
        Signers::Subset(mask) => (0..=POOL).filter(|i| mask & (1 << i) != 0).collect(),
    };
    let signing_keys: Vec<&SigningKey> = signer_indices.iter().map(|&i| &keys.signers[i]).collect();
    let message = command.signing_bytes();
    let mut signed = command.sign(&signing_keys);
    let mut facts: Vec<(usize, bool)> = signer_indices.iter().map(|&i| (i, true)).collect();
    // The honest bytes of each signature, kept in step with insertions, so that a signature
    // counts as corrupted only if it ends up different (two flips of one byte cancel out).
    let mut honest: Vec<Vec<u8>> = signed
        .signatures
        .iter()
        .map(|s| s.signature.clone())
        .collect();

    // Signature-level tampering.
    for tamper in &step.tampers {
        let len = signed.signatures.len();
        match tamper {
            Tamper::Duplicate { which, at } if len > 0 => {
                let which = usize::from(*which) % len;
                let at = usize::from(*at) % (len + 1);
                let copy = signed.signatures[which].clone();
                signed.signatures.insert(at, copy);
                facts.insert(at, facts[which]);
                honest.insert(at, honest[which].clone());
            }
            Tamper::NonAdmin { at } => {
                let at = usize::from(*at) % (len + 1);
                signed.signatures.insert(
                    at,
                    CommandSignature {
                        ski: ski(NON_ADMIN),
                        signature: keys.signers[NON_ADMIN].sign(&message),
                    },
                );
                facts.insert(at, (NON_ADMIN, true));
                honest.insert(at, signed.signatures[at].signature.clone());
            }
            Tamper::Corrupt { which, byte } if len > 0 => {
                let which = usize::from(*which) % len;
                let signature = &mut signed.signatures[which].signature;
                let at = usize::from(*byte) % signature.len();
                signature[at] ^= 0x01;
            }
            _ => {}
        }
    }
    for ((fact, signature), honest) in facts.iter_mut().zip(&signed.signatures).zip(&honest) {
        fact.1 = fact.1 && signature.signature == *honest;
    }

    let secret = state.enrollment_secret();
    let enroll = match step.enroll {
        Enroll::Drawn => match derive(b"enroll", salt, index, 0)[0] % 11 {
            0 => Enroll::Missing,
            1 => Enroll::OtherSecret,
            2 => Enroll::OtherCommand,
            _ => Enroll::Right,
        },
        ref chosen => chosen.clone(),
    };
    let (proof, enrollment_ok) = match (&enroll, &secret) {
        (Enroll::Right, Some(secret)) => (Some(signed.command.enrollment_proof(secret)), true),
        (Enroll::OtherSecret, _) => {
            let other = EnrollmentSecret(Secret32::from_bytes(derive(
                b"other secret",
                salt,
                index,
                0,
            )));
            (Some(signed.command.enrollment_proof(&other)), false)
        }
        (Enroll::OtherCommand, Some(secret)) => {
            let other = Command {
                counter: signed.command.counter.wrapping_add(1),
                ..signed.command.clone()
            };
            (Some(other.enrollment_proof(secret)), false)
        }
        _ => (None, false),
    };
    signed.enrollment = proof;

    Ok(Built {
        signed,
        model: ModelCommand {
            unit_ok,
            counter,
            signatures: facts,
            enrollment_ok,
            action: model_action,
        },
        recipient,
    })
}

// ---------------------------------------------------------------------------------------------
// Running a case
// ---------------------------------------------------------------------------------------------

/// How often each result was seen: `ok:<action>` or a rejection code.
type Stats = BTreeMap<String, usize>;

fn registers(state: &UnitState) -> (Option<[u8; 32]>, ModelNew) {
    let current = state.current.as_ref().map(|key| *key.expose());
    let new = match &state.new {
        NewRegister::Empty => ModelNew::Empty,
        NewRegister::Uncommitted(key) => ModelNew::Full {
            key: *key.expose(),
            committed: false,
        },
        NewRegister::Committed(key) => ModelNew::Full {
            key: *key.expose(),
            committed: true,
        },
    };
    (current, new)
}

fn check_outcome(
    expect: &Expect,
    outcome: &Outcome,
    recipient: Option<&(ImporterKey, Uuid)>,
    previous_importer: Option<&Vec<u8>>,
) -> Result<(), TestCaseError> {
    match (expect, outcome) {
        (Expect::Done, Outcome::Done) => {}
        (Expect::Importer, Outcome::Importer { public_key }) => {
            prop_assert_eq!(public_key.len(), 65);
            prop_assert_eq!(public_key[0], 0x04);
            prop_assert!(
                previous_importer != Some(public_key),
                "a new importer key must be fresh"
            );
        }
        (Expect::Generated { register, key }, Outcome::Generated { register: got, vp }) => {
            prop_assert_eq!(register, got);
            prop_assert_eq!(*vp, verification_pattern(key));
        }
        (Expect::Exported { key }, Outcome::Exported { vp, key: envelope }) => {
            prop_assert_eq!(*vp, verification_pattern(key));
            let (importer, unit) = recipient.ok_or_else(|| fail("export without a recipient"))?;
            let opened = importer
                .open(envelope, &envelope_context(TRANSFER_CONTEXT, *unit))
                .map_err(|_| fail("the exported envelope does not open for its recipient"))?;
            prop_assert_eq!(opened.expose(), key);
        }
        (expect, outcome) => prop_assert!(
            false,
            "expected outcome {:?}, machine produced {:?}",
            expect,
            outcome
        ),
    }
    Ok(())
}

/// After every step the unit and the model agree on all that can be observed: the status
/// (counter, registers' VPs, pending importer key and rotation lock included), the register
/// contents and the master keys key operations would use.
fn check_agrees(state: &UnitState, model: &Model) -> Result<(), TestCaseError> {
    let status = state.status(keys().identity.clone());
    // A unit waits for its first admin under an enrollment secret exactly while it has none.
    prop_assert_eq!(status.enrollment_id.is_some(), model.admins.is_empty());
    prop_assert_eq!(
        UnitStatus {
            enrollment_id: None,
            ..status
        },
        model.status()
    );
    let (current, new) = registers(state);
    prop_assert_eq!(current, model.current);
    prop_assert_eq!(&new, &model.new);
    prop_assert_eq!(state.importer.is_some(), model.importer.is_some());
    prop_assert_eq!(state.rotation, model.rotation);
    let masters = state.masters().map(|masters| ModelMasters {
        current: *masters.current.expose(),
        new: masters.new.as_ref().map(|key| *key.expose()),
        wrap_under_new: masters.wrap_under_new,
        wrapping: *masters.wrapping().expose(),
    });
    prop_assert_eq!(masters, model.masters());
    Ok(())
}

/// One signed command against both; on agreement, both move on.
fn run_command(
    step: &CommandStep,
    state: &mut UnitState,
    model: &mut Model,
    salt: u64,
    index: u64,
    stats: &mut Stats,
) -> Result<(), TestCaseError> {
    let identity = keys().identity.clone();
    let built = build(step, model, state, salt, index)?;
    let predicted = model.apply(&built.model);
    let before = serde_json::to_string(&*state).map_err(fail)?;
    let before_status = state.status(identity.clone());
    let lock = model.rotation;
    let mut entropy = TestEntropy {
        salt,
        step: index,
        drawn: 0,
    };
    let result = state.apply(&built.signed, &mut entropy);
    let context = || format!("step {index}: {step:?}\nmodel before: {model:?}");
    match (predicted, result) {
        (Err(code), Err(error)) => {
            prop_assert_eq!(code, error.code(), "{}\nmachine said: {}", context(), error);
            // A refusal changes nothing: not the state, not the status, not the counter.
            prop_assert_eq!(
                &serde_json::to_string(&*state).map_err(fail)?,
                &before,
                "{}",
                context()
            );
            let after_status = state.status(identity);
            prop_assert_eq!(&after_status, &before_status, "{}", context());
            prop_assert_eq!(after_status.counter, model.counter, "{}", context());
            *stats.entry(code.to_owned()).or_default() += 1;
            if code == "rotation_in_progress" {
                *stats.entry(format!("{code}:{}", lock.label())).or_default() += 1;
            }
            if matches!(
                built.model.action,
                ModelAction::PinNew { .. } | ModelAction::AbortRotation { .. }
            ) {
                let name = built.signed.command.action.name();
                *stats.entry(format!("{name} refused:{code}")).or_default() += 1;
            }
        }
        (Ok((mut next_model, expect)), Ok((next_state, outcome))) => {
            check_outcome(
                &expect,
                &outcome,
                built.recipient.as_ref(),
                model.importer.as_ref(),
            )
            .map_err(|error| fail(format!("{}\n{error}", context())))?;
            if let Outcome::Importer { public_key } = &outcome {
                next_model.importer = Some(public_key.clone());
            }
            prop_assert_eq!(
                next_state.counter,
                built.signed.command.counter,
                "{}",
                context()
            );
            let name = built.signed.command.action.name();
            *stats.entry(format!("ok:{name}")).or_default() += 1;
            if lock != RotationLock::None {
                *stats
                    .entry(format!("ok:{name}@{}", lock.label()))
                    .or_default() += 1;
            }
            *state = next_state;
            *model = next_model;
        }
        (Err(code), Ok((_, outcome))) => {
            prop_assert!(
                false,
                "{}\nmodel expected rejection {:?}, machine accepted with {:?}",
                context(),
                code,
                outcome
            );
        }
        (Ok((_, expect)), Err(error)) => {
            prop_assert!(
                false,
                "{}\nmodel expected acceptance ({:?}), machine refused: {} ({})",
                context(),
                expect,
                error.code(),
                error
            );
        }
    }
    Ok(())
}

/// The service reports a reencryption finished: `finish:<from>-><to>` or `finish refused:<from>`.
fn run_finish(
    pick: &VpPick,
    state: &mut UnitState,
    model: &mut Model,
    salt: u64,
    index: u64,
    stats: &mut Stats,
) -> Result<(), TestCaseError> {
    let to = pick_vp(pick, model, salt, index);
    let from = model.rotation.label();
    let context = || format!("step {index}: finish to {to} ({pick:?})\nmodel before: {model:?}");
    match (model.finish(&to), state.finish_reencryption(&to)) {
        (Err(code), Err(error)) => {
            prop_assert_eq!(code, error.code(), "{}\nmachine said: {}", context(), error);
            *stats.entry(format!("finish refused:{from}")).or_default() += 1;
        }
        (Ok(next_model), Ok(next_state)) => {
            prop_assert_eq!(next_state.counter, state.counter, "{}", context());
            *stats
                .entry(format!("finish:{from}->{}", next_model.rotation.label()))
                .or_default() += 1;
            *state = next_state;
            *model = next_model;
        }
        (Err(code), Ok(next_state)) => prop_assert!(
            false,
            "{}\nmodel expected rejection {:?}, machine moved to {:?}",
            context(),
            code,
            next_state.rotation
        ),
        (Ok(next_model), Err(error)) => prop_assert!(
            false,
            "{}\nmodel expected {:?}, machine refused: {} ({})",
            context(),
            next_model.rotation,
            error.code(),
            error
        ),
    }
    Ok(())
}

fn run_case(kind: UnitKind, case: &Case, stats: &mut Stats) -> Result<(), TestCaseError> {
    let secret = Secret32::from_bytes(derive(b"enrollment secret", case.salt, 0, 0));
    let mut state = UnitState::new(UNIT, kind, secret);
    let mut model = Model::new(kind);
    check_agrees(&state, &model)?;
    for (index, step) in case.all_steps().iter().enumerate() {
        let index = index as u64;
        match step {
            Step::Command(command) => {
                run_command(command, &mut state, &mut model, case.salt, index, stats)?;
            }
            Step::Finish(pick) => {
                run_finish(pick, &mut state, &mut model, case.salt, index, stats)?;
            }
        }
        check_agrees(&state, &model)
            .map_err(|error| fail(format!("step {index}: {step:?}\nmodel: {model:?}\n{error}")))?;
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn operational_unit_follows_the_model(case in case_strategy()) {
        run_case(UnitKind::Operational, &case, &mut Stats::new())?;
    }

    #[test]
    fn recovery_unit_follows_the_model(case in case_strategy()) {
        run_case(UnitKind::Recovery, &case, &mut Stats::new())?;
    }
}

/// The generator is only as good as what it reaches: on a fixed seed, every rejection code the
/// machine can give a command and every action's success must come up, and so must every
/// rotation lock state, with the commands it refuses and each way out of it.
#[test]
fn generator_reaches_every_rule() {
    let mut runner = TestRunner::deterministic();
    let strategy = case_strategy();
    let mut stats = Stats::new();
    for round in 0..64 {
        let kind = if round % 2 == 0 {
            UnitKind::Operational
        } else {
            UnitKind::Recovery
        };
        let case = strategy.new_tree(&mut runner).unwrap().current();
        run_case(kind, &case, &mut stats).unwrap();
    }
    let codes = [
        "imprint_mode",
        "wrong_unit",
        "bad_counter",
        "duplicate_signer",
        "not_an_admin",
        "bad_signature",
        "too_few_signatures",
        "admin_name",
        "bad_public_key",
        "admin_exists",
        "admin_limit",
        "unknown_admin",
        "below_threshold",
        "threshold_range",
        "threshold_above_admins",
        "register_state",
        "part_count",
        "no_importer",
        "import_failed",
        "same_as_current",
        "vp_mismatch",
        "recovery_only",
        "rotation_in_progress",
        "no_rotation",
        "enrollment_required",
    ];
    let actions = [
        "add admin",
        "remove admin",
        "set thresholds",
        "create importer key",
        "load new register",
        "import new register",
        "commit",
        "set immediate",
        "clear new register",
        "clear current register",
        "generate random master key",
        "export master key",
        "pin new register",
        "abort rotation",
        "zeroize",
    ];
    // The rotation lock in each of its states, and each way out of them.
    let rotation = [
        "rotation_in_progress:reencrypting",
        "rotation_in_progress:reencrypted",
        "rotation_in_progress:aborting",
        "pin new register refused:vp_mismatch",
        "abort rotation refused:vp_mismatch",
        "ok:abort rotation@reencrypting",
        "ok:abort rotation@reencrypted",
        "ok:set immediate@reencrypted",
        "finish:none->none",
        "finish:reencrypting->reencrypted",
        "finish:reencrypted->reencrypted",
        "finish:aborting->none",
        "finish refused:none",
        "finish refused:reencrypting",
        "finish refused:reencrypted",
        "finish refused:aborting",
    ];
    println!("results over the fixed cases: {stats:?}");
    let missing: Vec<String> = codes
        .iter()
        .map(|code| (*code).to_owned())
        .chain(actions.iter().map(|action| format!("ok:{action}")))
        .chain(rotation.iter().map(|key| (*key).to_owned()))
        .filter(|key| !stats.contains_key(key))
        .collect();
    assert!(
        missing.is_empty(),
        "never reached: {missing:?}\nseen: {stats:?}"
    );
}

// ---------------------------------------------------------------------------------------------
// Concrete scenarios
// ---------------------------------------------------------------------------------------------

/// Signs `action` for the unit's next counter; the first admin also gets the enrollment proof.
fn command(state: &UnitState, action: Action, signers: &[usize]) -> SignedCommand {
    let keys = keys();
    let signing_keys: Vec<&SigningKey> = signers.iter().map(|&i| &keys.signers[i]).collect();
    let command = Command {
        unit: state.unit,
        counter: state.counter + 1,
        action,
    };
    let proof = state
        .enrollment_secret()
        .filter(|_| matches!(command.action, Action::AddAdmin { .. }))
        .map(|secret| command.enrollment_proof(&secret));
    let mut signed = command.sign(&signing_keys);
    signed.enrollment = proof;
    signed
}

/// A fresh unit of `kind` with a fixed enrollment secret.
fn fresh(kind: UnitKind) -> UnitState {
    UnitState::new(UNIT, kind, Secret32::from_bytes([0x5e; 32]))
}

fn entropy() -> TestEntropy {
    TestEntropy {
        salt: 0,
        step: 0,
        drawn: 0,
    }
}

/// Signs `action` for the unit's next counter with the given pool keys and applies it.
fn run(
    state: &UnitState,
    action: Action,
    signers: &[usize],
) -> Result<(UnitState, Outcome), UnitError> {
    state.apply(&command(state, action, signers), &mut entropy())
}

#[test]
fn full_ceremony_loads_commits_and_promotes_the_xor_of_three_parts() {
    let keys = keys();
    let identity = keys.identity.clone();
    let mut state = fresh(UnitKind::Operational);
    // Three admins (one of them P-521), installed in imprint mode: the first with the
    // enrollment secret, the others signed by the first.
    for (admin, signers) in [(0, &[][..]), (P521_INDEX, &[0]), (3, &[0])] {
        (state, _) = run(
            &state,
            Action::AddAdmin {
                name: format!("admin {admin}"),
                public_key: keys.publics[admin].clone(),
            },
            signers,
        )
        .unwrap();
    }
    assert!(state.status(identity.clone()).imprint);
    let thresholds = Action::SetThresholds {
        signature: 2,
        revocation: 2,
    };
    // Leaving imprint mode needs as many signatures as the new signature threshold.
    assert_eq!(
        run(&state, thresholds.clone(), &[0]).unwrap_err().code(),
        "too_few_signatures"
    );
    (state, _) = run(&state, thresholds, &[0, P521_INDEX]).unwrap();
    let status = state.status(identity.clone());
    assert!(!status.imprint);
    assert_eq!(
        (status.signature_threshold, status.revocation_threshold),
        (2, 2)
    );
    assert_eq!(
        status.admins.iter().map(|a| a.ski).collect::<Vec<_>>(),
        vec![ski(0), ski(P521_INDEX), ski(3)]
    );

    let (next, outcome) = run(&state, Action::CreateImporter, &[3]).unwrap();
    state = next;
    let Outcome::Importer { public_key } = outcome else {
        panic!("no importer key: {outcome:?}");
    };
    assert_eq!(state.status(identity.clone()).importer, public_key);

    let parts: Vec<[u8; 32]> = (0..3).map(|i| derive(b"ceremony part", 0, 0, i)).collect();
    let key = parts.iter().fold([0u8; 32], |acc, part| xor(acc, *part));
    let context = envelope_context(PART_CONTEXT, UNIT);
    let envelopes = parts
        .iter()
        .map(|part| seal_to(&public_key, &context, &Secret32::from_bytes(*part)).unwrap())
        .collect();
    (state, _) = run(
        &state,
        Action::LoadNew {
            importer: public_key,
            parts: envelopes,
        },
        &[0],
    )
    .unwrap();
    let status = state.status(identity.clone());
    assert_eq!(status.new.state, NewState::FullUncommitted);
    assert_eq!(status.new.vp, verification_pattern(&key));
    assert!(status.importer.is_empty(), "the importer key is used once");

    let vp = verification_pattern(&key);
    assert_eq!(
        run(&state, Action::Commit { vp }, &[0]).unwrap_err().code(),
        "too_few_signatures"
    );
    (state, _) = run(&state, Action::Commit { vp }, &[P521_INDEX, 3]).unwrap();
    assert_eq!(
        state.status(identity.clone()).new.state,
        NewState::FullCommitted
    );

    (state, _) = run(&state, Action::SetImmediate { vp }, &[3]).unwrap();
    let status = state.status(identity);
    assert_eq!(status.current.state, CurrentState::Valid);
    assert_eq!(status.current.vp, vp);
    assert_eq!(status.current.vp, Secret32::from_bytes(key).vp());
    assert_eq!(status.new.state, NewState::Empty);
    assert_eq!(status.new.vp, Vp::EMPTY);
    assert_eq!(status.counter, 8);
    assert!(
        state
            .current
            .as_ref()
            .is_some_and(|current| current.expose() == &key)
    );
}

#[test]
fn an_accepted_command_cannot_be_replayed() {
    let keys = keys();
    let state = fresh(UnitKind::Recovery);
    let signed = command(
        &state,
        Action::AddAdmin {
            name: "first".to_owned(),
            public_key: keys.publics[0].clone(),
        },
        &[],
    );
    let (state, _) = state.apply(&signed, &mut entropy()).unwrap();
    assert_eq!(state.counter, 1);
    let error = state.apply(&signed, &mut entropy()).unwrap_err();
    assert_eq!(error.code(), "bad_counter");

    // Zeroize keeps the counter, so the replay still fails afterwards.
    let (state, _) = run(&state, Action::Zeroize, &[0]).unwrap();
    assert_eq!(state.counter, 2);
    assert!(state.status(keys.identity.clone()).admins.is_empty());
    let error = state.apply(&signed, &mut entropy()).unwrap_err();
    assert_eq!(error.code(), "bad_counter");
}

#[test]
fn the_first_admin_needs_a_proof_of_the_enrollment_secret_for_exactly_its_command() {
    let keys = keys();
    let secret = Secret32::from_bytes([0x5e; 32]);
    let state = fresh(UnitKind::Operational);
    let add = |key: usize| Action::AddAdmin {
        name: format!("admin {key}"),
        public_key: keys.publics[key].clone(),
    };
    let next = |action: Action| Command {
        unit: UNIT,
        counter: state.counter + 1,
        action,
    };
    let refused = |signed: SignedCommand| {
        let error = state.apply(&signed, &mut entropy()).unwrap_err();
        assert_eq!(error, UnitError::EnrollmentRequired);
        assert_eq!(error.http_status(), 403);
    };
    // No proof; a proof made with another secret; the right secret's proof for another admin
    // (what a relay holding one proof could try).
    refused(next(add(0)).sign(&[]));
    let mut guessed = next(add(0)).sign(&[]);
    guessed.enrollment =
        Some(next(add(0)).enrollment_proof(&EnrollmentSecret(Secret32::from_bytes([1; 32]))));
    refused(guessed);
    let mut reused = next(add(NON_ADMIN)).sign(&[]);
    reused.enrollment = Some(next(add(0)).enrollment_proof(&EnrollmentSecret(secret.clone())));
    refused(reused);

    // The right proof installs the admin and uses the secret up.
    let (claimed, _) = run(&state, add(0), &[]).unwrap();
    assert!(claimed.enrollment_secret().is_none());
    assert_eq!(claimed.status(keys.identity.clone()).enrollment_id, None);
    // From now on imprint mode belongs to the installed admin.
    for action in [add(1), Action::RemoveAdmin { ski: ski(0) }, Action::Zeroize] {
        let error = run(&claimed, action, &[]).unwrap_err();
        assert_eq!(error.code(), "too_few_signatures");
    }
    let (two, _) = run(&claimed, add(1), &[0]).unwrap();
    assert_eq!(two.admins.len(), 2);

    // Zeroizing a claimed unit makes a new secret; the old one no longer works.
    let (zeroized, _) = run(&two, Action::Zeroize, &[1]).unwrap();
    let new_secret = zeroized.enrollment_secret().unwrap();
    assert_ne!(
        new_secret.id(),
        EnrollmentSecret(secret.clone()).id(),
        "zeroize must make a new enrollment secret"
    );
    let first = Command {
        unit: UNIT,
        counter: zeroized.counter + 1,
        action: add(0),
    };
    let mut stale = first.clone().sign(&[]);
    stale.enrollment = Some(first.enrollment_proof(&EnrollmentSecret(secret)));
    assert_eq!(
        zeroized.apply(&stale, &mut entropy()).unwrap_err(),
        UnitError::EnrollmentRequired
    );
    // Zeroizing a unit that has no admin keeps the secret its operator holds.
    let (again, _) = run(&zeroized, Action::Zeroize, &[]).unwrap();
    assert_eq!(again.enrollment_secret().unwrap().id(), new_secret.id());
    // Removing the last admin in imprint mode makes a new secret too.
    let (one, _) = run(&again, add(2), &[]).unwrap();
    let mut other_draws = TestEntropy {
        salt: 1,
        step: 1,
        drawn: 0,
    };
    let remove = command(&one, Action::RemoveAdmin { ski: ski(2) }, &[2]);
    let (none, _) = one.apply(&remove, &mut other_draws).unwrap();
    assert!(none.admins.is_empty());
    assert!(
        none.enrollment_secret()
            .is_some_and(|s| s.id() != new_secret.id())
    );
}

#[test]
fn a_unit_started_with_an_initial_admin_takes_only_that_key_first() {
    let keys = keys();
    let state = fresh(UnitKind::Recovery)
        .with_initial_admin(ski(3))
        .unwrap();
    assert!(state.enrollment_secret().is_none());
    let add = |key: usize| Action::AddAdmin {
        name: format!("admin {key}"),
        public_key: keys.publics[key].clone(),
    };
    // Another key is refused.
    assert_eq!(
        run(&state, add(0), &[]).unwrap_err(),
        UnitError::EnrollmentRequired
    );
    let (claimed, _) = run(&state, add(3), &[]).unwrap();
    assert_eq!(claimed.admins.len(), 1);
    // Only while the unit has no admin.
    assert_eq!(
        claimed.with_initial_admin(ski(0)).unwrap_err().code(),
        "admin_exists"
    );
}

//! Model-based property test of the rotation planner ([`plan`]).
//!
//! `rotor mk rotate` (flow Parts) and `rotor auto rotate` (flow Auto) loop "read the real
//! state → plan → do one step" until the plan says done or the command completed the rotation.
//! Here the units are the real pure state machine ([`UnitState`], in memory: every step is a
//! command signed by as many admins as it needs, applied with `UnitState::apply`, and the
//! planner reads `UnitState::status`), while the service is a small simulator ([`Sim`]) that
//! follows `rotor-server/src/rotation.rs` (journal, `begin`, the engine telling units
//! `finish_reencryption`, `complete`), with the keystore as a count of blobs under each master
//! key. The real `plan` then drives random valid starting worlds while a random event tape
//! kills the command between any two effects (so a step may be only partly done) and reruns
//! it, lets the service's engine run on by itself, has the service create keys, and has
//! operators try what the rotation lock must refuse.
//!
//! Checked: the loop ends within [`MAX_PLANS`] steps; at the end every unit has the rotation's
//! key current and nothing else, and every blob is under it; at every point each blob's master
//! key is held usable by every unit (so no unit is promoted while blobs remain under its old
//! key, and no register blobs depend on is cleared or replaced); the auto flow generates one
//! random key only; `plan` never fails and never proposes a step the units (a `UnitError` from
//! the machine) or the service refuse.

// A failed expectation is the test failing.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeMap;
use std::sync::{Mutex, OnceLock};

use proptest::prelude::*;
use proptest::strategy::ValueTree;
use proptest::test_runner::TestRunner;
use rotor_cli::plan::{Flow, JournalView, Step, UnitView, plan};
use rotor_crypto::{
    ImporterKey, PublicKey, Secret32, SigAlg, SigningKey, Vp, combine_parts, seal_to, sha256,
};
use rotor_unit::UnitError;
use rotor_unit::machine::{Entropy, NewRegister, UnitState, envelope_context};
use rotor_unit::wire::{
    Action, Command, Outcome, PART_CONTEXT, RotationLock, TRANSFER_CONTEXT, UnitKind,
};
use uuid::Uuid;

/// Plans one scenario may take across all its runs before it counts as not terminating.
const MAX_PLANS: usize = 200;
/// Kills per scenario; later kill events are ignored.
const MAX_KILLS: usize = 5;
/// Random cases per flow. The units are the real machine, so every command is really signed
/// and verified (P-256, fixed admin keys) and key transfers really sealed and opened: the whole
/// file takes about 30 s on two shared cores, nearly all of it curve arithmetic.
const CASES: u32 = 1000;

/// A master key, named by a small number; its secret and VP are fixed per name ([`secret`],
/// [`vp`]), so traces can name keys and the VPs units report can be read back ([`key_of`]).
type Key = u8;
/// The current master key every world starts with.
const FROM: Key = 1;
/// The key parts loaded and committed before `rotor mk rotate` (flow Parts).
const LOADED: Key = 2;
/// The master key an earlier, completed rotation came from.
const OLDER: Key = 3;
/// A key an earlier rotation aborted.
const ABORTED: Key = 4;
/// The first key `GenerateRandom` makes; later ones count up.
const FIRST_RANDOM: Key = 16;
/// Key material operators try to force into locked units.
const FOREIGN: Key = 0xEE;

// ---------------------------------------------------------------------------------------------
// Key names and the real units
// ---------------------------------------------------------------------------------------------

/// Fixed material: the admins' signing keys, the units' identity, and one real master key per
/// key name (two key parts each, combined as the unit combines them).
struct Material {
    admins: Vec<SigningKey>,
    identity: PublicKey,
    /// An importer public key no unit ever has pending.
    bogus_importer: Vec<u8>,
    /// Indexed by key name.
    keys: Vec<(Secret32, Vp)>,
}

fn material() -> &'static Material {
    static MATERIAL: OnceLock<Material> = OnceLock::new();
    MATERIAL.get_or_init(|| {
        // Fixed scalars: the test is reproducible, and a signature costs one P-256 signing.
        let signing = |byte: u8| SigningKey::from_scalar(SigAlg::P256Sha256, &[byte; 32]).unwrap();
        let keys = (0..=Key::MAX)
            .map(|key| {
                let secret = combine_parts(&parts(key));
                let vp = secret.vp();
                (secret, vp)
            })
            .collect();
        Material {
            admins: vec![signing(0x11), signing(0x22)],
            identity: signing(0x33).public_key(),
            bogus_importer: ImporterKey::generate().public_sec1().unwrap(),
            keys,
        }
    })
}

/// The two key parts of the master key named `key`.
fn parts(key: Key) -> [Secret32; 2] {
    [0u8, 1].map(|part| Secret32::from_bytes(sha256(&[b'p', b'm', key, part])))
}

fn secret(key: Key) -> Secret32 {
    material().keys[usize::from(key)].0.clone()
}

fn vp(key: Key) -> Vp {
    material().keys[usize::from(key)].1
}

/// The name of the master key with this VP; every key a unit ever holds has one.
fn key_of(vp: &Vp) -> Key {
    let index = material()
        .keys
        .iter()
        .position(|(_, known)| known.matches(vp))
        .unwrap_or_else(|| panic!("no model key has the VP {vp}"));
    Key::try_from(index).unwrap()
}

fn short(vp: &Vp) -> String {
    format!("k{}", key_of(vp))
}

/// The units' entropy: `GenerateRandom` draws the key names from `.0` on, in order.
struct Draws(Key);

impl Entropy for Draws {
    fn secret(&mut self) -> Secret32 {
        let key = secret(self.0);
        self.0 = self.0.wrapping_add(1);
        key
    }

    fn importer(&mut self) -> ImporterKey {
        ImporterKey::generate()
    }
}

/// A real unit state machine ([`UnitState`]) with the number `rotor units` gives it.
#[derive(Clone)]
struct Unit {
    number: usize,
    state: UnitState,
}

impl std::fmt::Debug for Unit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let name = |key: Option<Key>| key.map_or_else(|| "-".to_owned(), |key| format!("k{key}"));
        let new = match self.state.new {
            NewRegister::Empty => "Empty",
            NewRegister::Uncommitted(_) => "Uncommitted",
            NewRegister::Committed(_) => "Committed",
        };
        write!(
            f,
            "unit {} ({:?}): current {}, new {new} {}, {:?}{}",
            self.number,
            self.state.kind,
            name(self.current()),
            name(self.new_key()),
            self.state.rotation,
            if self.state.importer.is_some() {
                ", importer pending"
            } else {
                ""
            }
        )
    }
}

impl Unit {
    /// A unit as the starting worlds have it, set up through its own commands: two admins
    /// installed in imprint mode, thresholds set, `FROM` loaded from parts, committed and made
    /// current, and for the key part flow `LOADED` loaded and committed. Built once per kind
    /// of unit and cloned.
    fn initialized(number: usize, kind: UnitKind, threshold: u8, loaded: bool) -> Self {
        type Shape = (usize, bool, u8, bool);
        static BUILT: Mutex<BTreeMap<Shape, UnitState>> = Mutex::new(BTreeMap::new());
        let shape = (number, kind == UnitKind::Recovery, threshold, loaded);
        let mut built = BUILT.lock().unwrap();
        let state = built.entry(shape).or_insert_with(|| {
            let id = Uuid::from_u128(0x706c_616e_0000_4000_8000_0000_0000_0000 | number as u128);
            let mut unit = Self {
                number,
                state: UnitState::new(id, kind, Secret32::from_bytes([0x5e; 32])),
            };
            for (index, admin) in material().admins.iter().enumerate() {
                unit.run(Action::AddAdmin {
                    name: format!("admin {index}"),
                    public_key: admin.public_key(),
                });
            }
            unit.run(Action::SetThresholds {
                signature: threshold,
                revocation: threshold,
            });
            unit.load(FROM);
            unit.run(Action::SetImmediate { vp: vp(FROM) });
            if loaded {
                unit.load(LOADED);
            }
            unit.state
        });
        Self {
            number,
            state: state.clone(),
        }
    }

    /// Setup only: `rotor mk load` and `rotor mk commit`.
    fn load(&mut self, key: Key) {
        let Outcome::Importer { public_key } = self.run(Action::CreateImporter) else {
            panic!("create importer returned no importer");
        };
        let context = envelope_context(PART_CONTEXT, self.state.unit);
        let parts = parts(key)
            .iter()
            .map(|part| seal_to(&public_key, &context, part).unwrap())
            .collect();
        self.run(Action::LoadNew {
            importer: public_key,
            parts,
        });
        self.run(Action::Commit { vp: vp(key) });
    }

    /// Setup only: a command that must be accepted.
    fn run(&mut self, action: Action) -> Outcome {
        let (next, outcome) = self.apply(action, &mut Draws(FOREIGN)).unwrap();
        self.state = next;
        outcome
    }

    /// `action` signed by as many admins as it needs (none for the first admin), applied to the
    /// real machine: the next state and the outcome, or the refusal. Like the machine, this
    /// changes nothing; the caller keeps or replaces `self.state`.
    fn apply(
        &self,
        action: Action,
        entropy: &mut dyn Entropy,
    ) -> Result<(UnitState, Outcome), (String, UnitError)> {
        let label = label(&action);
        let needed = self
            .state
            .required_signatures(&action)
            .map_or(0, usize::from);
        let signers: Vec<&SigningKey> = material().admins.iter().take(needed).collect();
        let command = Command {
            unit: self.state.unit,
            counter: self.state.counter + 1,
            action,
        };
        // The first admin comes in with the unit's enrollment secret.
        let proof = self
            .state
            .enrollment_secret()
            .filter(|_| self.state.admins.is_empty())
            .map(|secret| command.enrollment_proof(&secret));
        let mut signed = command.sign(&signers);
        signed.enrollment = proof;
        self.state
            .apply(&signed, entropy)
            .map_err(|err| (format!("unit {} refuses {label}: {err}", self.number), err))
    }

    fn current(&self) -> Option<Key> {
        self.state.current.as_ref().map(|key| key_of(&key.vp()))
    }

    fn new_key(&self) -> Option<Key> {
        match &self.state.new {
            NewRegister::Empty => None,
            NewRegister::Uncommitted(key) | NewRegister::Committed(key) => Some(key_of(&key.vp())),
        }
    }

    fn committed(&self) -> Option<Key> {
        match &self.state.new {
            NewRegister::Committed(key) => Some(key_of(&key.vp())),
            _ => None,
        }
    }

    fn lock(&self) -> RotationLock {
        self.state.rotation
    }

    /// Whether key operations on this unit can use `key` (`Masters::for_vp`).
    fn holds(&self, key: Key) -> bool {
        self.state
            .masters()
            .is_some_and(|masters| masters.for_vp(&vp(key)).is_ok())
    }

    /// The key new blobs are wrapped under (`Masters::wrapping`).
    fn wrapping(&self) -> Option<Key> {
        self.state
            .masters()
            .map(|masters| key_of(&masters.wrapping().vp()))
    }

    /// What `rotor` reads: the unit's status, as the planner sees it.
    fn view(&self) -> UnitView {
        UnitView::of(self.number, &self.state.status(material().identity.clone()))
    }
}

/// An action as the trace shows it.
fn label(action: &Action) -> String {
    match action {
        Action::Commit { vp }
        | Action::SetImmediate { vp }
        | Action::PinNew { vp }
        | Action::AbortRotation { vp } => {
            if material().keys.iter().any(|(_, known)| known.matches(vp)) {
                format!("{} {}", action.name(), short(vp))
            } else {
                format!("{} {vp}", action.name())
            }
        }
        Action::Export { register, .. } => format!("{} {register}", action.name()),
        other => other.name().to_owned(),
    }
}

// ---------------------------------------------------------------------------------------------
// The service's journal
// ---------------------------------------------------------------------------------------------

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    Reencrypting,
    Reencrypted,
    Aborted,
    Completed,
}

impl Phase {
    fn label(self) -> &'static str {
        match self {
            Self::Reencrypting => "reencrypting",
            Self::Reencrypted => "reencrypted",
            Self::Aborted => "aborted",
            Self::Completed => "completed",
        }
    }

    fn open(self) -> bool {
        !matches!(self, Self::Aborted | Self::Completed)
    }

    /// The service's phase this model phase stands for.
    fn served(self) -> rotor_server::rotation::Phase {
        match self {
            Self::Reencrypting => rotor_server::rotation::Phase::Reencrypting,
            Self::Reencrypted => rotor_server::rotation::Phase::Reencrypted,
            Self::Aborted => rotor_server::rotation::Phase::Aborted,
            Self::Completed => rotor_server::rotation::Phase::Completed,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Journal {
    from: Key,
    to: Key,
    phase: Phase,
}

// ---------------------------------------------------------------------------------------------
// Generated input: the starting world and the event tape
// ---------------------------------------------------------------------------------------------

/// What the journal says about an earlier rotation.
#[derive(Clone, Copy, Debug)]
enum Prior {
    None,
    /// `OLDER` → `FROM`, completed.
    Completed,
    /// `FROM` → `ABORTED`, aborted.
    AbortedOther,
    /// `FROM` → `LOADED`, aborted: the same key parts are tried again.
    AbortedSame,
}

/// A valid starting point: every unit has `FROM` current, the same admins and thresholds; for
/// Parts every new register holds `LOADED` committed, for Auto every new register is empty.
#[derive(Clone, Debug)]
struct Setup {
    flow: Flow,
    /// One entry per unit: whether it is a recovery unit.
    recovery: Vec<bool>,
    blobs: u64,
    /// Blobs the engine moves per batch.
    batch: u64,
    threshold: u8,
    prior: Prior,
}

/// What happens at a scheduling point, between two effects of the command.
#[derive(Clone, Copy, Debug)]
enum Event {
    /// Nothing: the command goes on.
    Go,
    /// The command is killed here and run again.
    Kill,
    /// The service's engine does this many moves by itself.
    Engine(u8),
    /// The service creates a key through the operational unit with this index (modulo).
    CreateKey(u8),
    /// An operator tries something on the unit with this index (modulo): see [`Sim::tamper`].
    Tamper(Tamper, u8),
}

#[derive(Clone, Copy, Debug)]
enum Tamper {
    ClearNew,
    LoadNew,
    ClearCurrent,
    /// Refused while the unit is Reencrypting; once Reencrypted it is a manual promotion
    /// (`rotor mk setimm`), which the rerun must take as done.
    SetImmediate,
    Generate,
    Pin,
    Import,
}

fn setup(flow: Flow) -> impl Strategy<Value = Setup> {
    let prior = prop_oneof![
        Just(Prior::None),
        Just(Prior::Completed),
        Just(Prior::AbortedOther),
        Just(Prior::AbortedSame),
    ];
    (
        prop::collection::vec(prop::bool::weighted(0.3), 2..=4),
        0u64..=20,
        1u64..=6,
        1u8..=2,
        prior,
    )
        .prop_map(move |(mut recovery, blobs, batch, threshold, prior)| {
            // Auto needs a recovery unit to generate in; every instance an operational one.
            if flow == Flow::Auto && !recovery.contains(&true) {
                *recovery.last_mut().unwrap() = true;
            }
            if !recovery.contains(&false) {
                recovery[0] = false;
            }
            Setup {
                flow,
                recovery,
                blobs,
                batch,
                threshold,
                prior,
            }
        })
}

fn events() -> impl Strategy<Value = Vec<Event>> {
    let tamper = prop_oneof![
        Just(Tamper::ClearNew),
        Just(Tamper::LoadNew),
        Just(Tamper::ClearCurrent),
        Just(Tamper::SetImmediate),
        Just(Tamper::Generate),
        Just(Tamper::Pin),
        Just(Tamper::Import),
    ];
    // `Go` first so that shrinking turns events into nothing happening.
    let event = prop_oneof![
        10 => Just(Event::Go),
        2 => Just(Event::Kill),
        3 => (1u8..=4).prop_map(Event::Engine),
        1 => any::<u8>().prop_map(Event::CreateKey),
        1 => (tamper, any::<u8>()).prop_map(|(tamper, unit)| Event::Tamper(tamper, unit)),
    ];
    prop::collection::vec(event, 0..160)
}

// ---------------------------------------------------------------------------------------------
// The simulated world and the command loop
// ---------------------------------------------------------------------------------------------

/// How one run of the command ended.
enum Exit {
    Finished,
    Killed,
}

/// Situations a scenario went through, so the generator's reach can be checked.
#[derive(Clone, Copy, Debug, Default)]
struct Reached {
    /// Killed with an importer pending on a unit whose new register is still empty.
    kill_mid_distribute: bool,
    /// Killed while some but not all blobs were moved.
    kill_mid_rewrap: bool,
    /// Killed with the journal reencrypting, some units Reencrypted and some Reencrypting.
    kill_mid_finish: bool,
    /// Killed after some units were promoted, not all.
    kill_mid_promote: bool,
    /// Killed after the service recorded the rotation completed.
    kill_after_complete: bool,
    /// Killed with some units pinned and no journal yet.
    kill_mid_pin: bool,
    /// A key was created under the new master key before reencryption began.
    key_under_new_early: bool,
    /// An operator's action on a locked unit was refused.
    tamper_refused: bool,
    /// An operator cleared an unpinned unit's new register.
    cleared_unpinned: bool,
    /// An operator promoted a Reencrypted unit by hand.
    promoted_by_hand: bool,
}

struct Sim<'a> {
    flow: Flow,
    units: Vec<Unit>,
    journal: Option<Journal>,
    /// The keystore: how many blobs lie under each master key.
    blobs: BTreeMap<Key, u64>,
    /// Blobs ever stored: the initial ones and those created meanwhile.
    total: u64,
    batch: u64,
    /// The units' entropy: the next key `GenerateRandom` makes.
    entropy: Draws,
    /// Keys `GenerateRandom` made, in order.
    generated: Vec<Key>,
    /// The service recorded this scenario's rotation completed.
    completed: bool,
    /// A planned step is under way: its plan read the state before this point.
    stepping: bool,
    events: &'a [Event],
    next_event: usize,
    kills: usize,
    plans: usize,
    reached: Reached,
    trace: Vec<String>,
}

impl<'a> Sim<'a> {
    fn new(setup: &Setup, events: &'a [Event]) -> Self {
        let units = setup
            .recovery
            .iter()
            .enumerate()
            .map(|(index, &recovery)| {
                let kind = if recovery {
                    UnitKind::Recovery
                } else {
                    UnitKind::Operational
                };
                Unit::initialized(index + 1, kind, setup.threshold, setup.flow == Flow::Parts)
            })
            .collect();
        let journal = match setup.prior {
            Prior::None => None,
            Prior::Completed => Some((OLDER, FROM, Phase::Completed)),
            Prior::AbortedOther => Some((FROM, ABORTED, Phase::Aborted)),
            Prior::AbortedSame => Some((FROM, LOADED, Phase::Aborted)),
        }
        .map(|(from, to, phase)| Journal { from, to, phase });
        Self {
            flow: setup.flow,
            units,
            journal,
            blobs: BTreeMap::from([(FROM, setup.blobs)]),
            total: setup.blobs,
            batch: setup.batch,
            entropy: Draws(FIRST_RANDOM),
            generated: Vec::new(),
            completed: false,
            stepping: false,
            events,
            next_event: 0,
            kills: 0,
            plans: 0,
            reached: Reached::default(),
            trace: Vec::new(),
        }
    }

    /// Runs the command, and again after every kill, until it ends; then checks the end state.
    fn run(&mut self) -> Result<(), String> {
        loop {
            self.trace.push(format!("$ rotor {:?} rotate", self.flow));
            match self.command()? {
                Exit::Finished => return self.check_end(),
                // A rerun of `rotor auto rotate` after the service recorded completion is a
                // request for another rotation: the state is exactly that of a fresh request
                // (journal completed, every unit on the new key), so the scenario ends here.
                Exit::Killed if self.completed && self.flow == Flow::Auto => {
                    return self.check_end();
                }
                Exit::Killed => {}
            }
        }
    }

    /// One run of `rotate()`: read, plan, do one step, until done or completed.
    fn command(&mut self) -> Result<Exit, String> {
        let mut completed_now = false;
        loop {
            self.stepping = false;
            if self.point()? {
                return Ok(Exit::Killed);
            }
            if completed_now {
                // The command reads the state once more, reports and returns.
                return Ok(Exit::Finished);
            }
            let views: Vec<UnitView> = self.units.iter().map(Unit::view).collect();
            let journal = self.journal.map(|j| JournalView {
                from: vp(j.from),
                to: vp(j.to),
                phase: j.phase.served(),
            });
            let step = plan(self.flow, &views, journal.as_ref())
                .map_err(|err| format!("plan failed on a reachable state: {err:#}"))?;
            self.plans += 1;
            self.stepping = true;
            self.trace.push(format!("plan: {}", describe(&step)));
            if self.plans > MAX_PLANS {
                return Err(format!("no end after {MAX_PLANS} planned steps"));
            }
            // The state may change between the read and the step (engine, key creation).
            if self.point()? {
                return Ok(Exit::Killed);
            }
            match step {
                Step::Generate { unit } => {
                    self.generate(unit)?;
                }
                Step::Distribute {
                    source,
                    register,
                    target,
                    vp: planned,
                } => {
                    // `transfer_new`: importer on the target, export from the source, import.
                    let Outcome::Importer { public_key } =
                        self.act(target, Action::CreateImporter)?
                    else {
                        return Err("create importer returned no importer".to_owned());
                    };
                    if self.point()? {
                        return Ok(Exit::Killed);
                    }
                    let recipient_unit = self.units[self.unit_index(target)?].state.unit;
                    let export = Action::Export {
                        register,
                        recipient_unit,
                        recipient_importer: public_key.clone(),
                    };
                    let Outcome::Exported { vp, key } = self.act(source, export)? else {
                        return Err("export returned no key".to_owned());
                    };
                    // The CLI does not compare VPs here: the plan must have picked the right
                    // register.
                    if !vp.matches(&planned) {
                        return Err(format!(
                            "unit {source} exported {} from its {register} register, not the planned {}",
                            short(&vp),
                            short(&planned)
                        ));
                    }
                    if self.point()? {
                        return Ok(Exit::Killed);
                    }
                    let import = Action::ImportNew {
                        importer: public_key,
                        key,
                    };
                    self.act(target, import)?;
                }
                Step::Commit { unit, vp } => {
                    self.act(unit, Action::Commit { vp })?;
                }
                Step::Pin { unit, vp } => {
                    self.act(unit, Action::PinNew { vp })?;
                }
                Step::Reencrypt { from, to } => {
                    self.begin(key_of(&from), key_of(&to))?;
                    // `wait_for`: the engine works while the command polls.
                    while self.journal.is_some_and(|j| j.phase == Phase::Reencrypting) {
                        if self.point()? {
                            return Ok(Exit::Killed);
                        }
                        self.engine_move()
                            .map_err(|why| format!("reencryption never finishes: {why}"))?;
                    }
                }
                Step::Promote { unit, vp } => {
                    self.promote(unit, vp)?;
                }
                Step::Complete => {
                    self.complete()?;
                    completed_now = true;
                }
                Step::Done { .. } => return Ok(Exit::Finished),
            }
        }
    }

    /// A scheduling point: takes the next event from the tape. True when the command is killed.
    fn point(&mut self) -> Result<bool, String> {
        let event = self
            .events
            .get(self.next_event)
            .copied()
            .unwrap_or(Event::Go);
        self.next_event += 1;
        match event {
            Event::Go => {}
            Event::Kill if self.kills < MAX_KILLS => {
                self.kills += 1;
                self.note_kill();
                self.trace.push("-- killed".to_owned());
                return Ok(true);
            }
            Event::Kill => {}
            Event::Engine(moves) => {
                for _ in 0..moves {
                    // The engine retries by itself; a stuck engine shows when the command
                    // waits for it.
                    if !matches!(self.engine_move(), Ok(true)) {
                        break;
                    }
                }
            }
            Event::CreateKey(index) => self.create_key(index)?,
            Event::Tamper(tamper, index) => self.tamper(tamper, index)?,
        }
        Ok(false)
    }

    fn unit_index(&self, number: usize) -> Result<usize, String> {
        self.units
            .iter()
            .position(|u| u.number == number)
            .ok_or_else(|| format!("the plan named unit {number}, which does not exist"))
    }

    /// A step's action on a unit: a refusal (a `UnitError` from the machine) means the plan
    /// proposed something impossible, and a rerun would propose it again.
    fn act(&mut self, number: usize, action: Action) -> Result<Outcome, String> {
        let index = self.unit_index(number)?;
        let label = label(&action);
        let (next, outcome) = self.units[index]
            .apply(action, &mut self.entropy)
            .map_err(|(why, _)| format!("the planned step was refused: {why}"))?;
        self.units[index].state = next;
        self.trace
            .push(format!("  {label} -> {:?}", self.units[index]));
        self.check_safety()?;
        Ok(outcome)
    }

    /// `GenerateRandom`: only ever for the first random key of the scenario.
    fn generate(&mut self, number: usize) -> Result<(), String> {
        if self.flow == Flow::Parts {
            return Err("the key part flow planned a random key".to_owned());
        }
        if let Some(&first) = self.generated.first()
            && let Some(holder) = self
                .units
                .iter()
                .find(|u| u.current() == Some(first) || u.new_key() == Some(first))
        {
            return Err(format!(
                "a second random key is generated although unit {} holds the first, k{first}",
                holder.number
            ));
        }
        let Outcome::Generated { vp, .. } = self.act(number, Action::GenerateRandom)? else {
            return Err("generate returned no key".to_owned());
        };
        self.generated.push(key_of(&vp));
        Ok(())
    }

    /// `SetImmediate`, checked first against blobs still under the key it retires.
    fn promote(&mut self, number: usize, vp: Vp) -> Result<(), String> {
        let index = self.unit_index(number)?;
        if let Some(old) = self.units[index].current() {
            let left = self.count(old);
            if left > 0 && old != key_of(&vp) {
                return Err(format!(
                    "unit {number} is promoted while {left} blob(s) remain under its current key k{old}"
                ));
            }
        }
        self.act(number, Action::SetImmediate { vp })?;
        Ok(())
    }

    /// `Rotations::begin`: start or resume; every unit must be pinned or promoted.
    fn begin(&mut self, from: Key, to: Key) -> Result<(), String> {
        let refuse =
            |why: String| format!("the service refused to reencrypt k{from} -> k{to}: {why}");
        let resume = match self.journal {
            Some(j) if j.phase.open() => {
                if (j.from, j.to) != (from, to) {
                    return Err(refuse(format!("another rotation is open: {j:?}")));
                }
                true
            }
            _ if from == to => return Err(refuse("the new key is the current one".to_owned())),
            _ => false,
        };
        for u in &self.units {
            let promoted = u.current() == Some(to);
            let pinned = u.current() == Some(from)
                && u.committed() == Some(to)
                && matches!(
                    u.lock(),
                    RotationLock::Reencrypting | RotationLock::Reencrypted
                );
            if !(promoted || pinned) {
                return Err(refuse(format!("{u:?} is not ready")));
            }
        }
        match self.journal {
            // A unit that missed the news (restored, or down at the time) hears it now.
            Some(j) if resume && j.phase == Phase::Reencrypted => {
                for index in 0..self.units.len() {
                    self.finish(index, to).map_err(&refuse)?;
                }
            }
            _ if resume => {}
            _ => {
                self.journal = Some(Journal {
                    from,
                    to,
                    phase: Phase::Reencrypting,
                });
            }
        }
        self.trace
            .push(format!("  service: begin -> {:?}", self.journal));
        Ok(())
    }

    /// One move of the engine, if a journal is reencrypting: a batch of blobs, else telling one
    /// more unit, else recording the phase. `Ok(false)` when there is nothing to do; an error
    /// when the engine cannot go on.
    fn engine_move(&mut self) -> Result<bool, String> {
        let Some(mut journal) = self.journal else {
            return Ok(false);
        };
        if journal.phase != Phase::Reencrypting {
            return Ok(false);
        }
        let remaining = self.count(journal.from);
        if remaining > 0 {
            if !self.units.iter().any(|u| {
                u.state.kind == UnitKind::Operational
                    && u.holds(journal.from)
                    && u.holds(journal.to)
            }) {
                return Err(format!(
                    "{remaining} blob(s) under k{} and no operational unit holds both keys",
                    journal.from
                ));
            }
            let moved = remaining.min(self.batch);
            *self.blobs.entry(journal.from).or_default() -= moved;
            *self.blobs.entry(journal.to).or_default() += moved;
            self.trace.push(format!("  engine: moved {moved} blob(s)"));
            self.check_safety()?;
            return Ok(true);
        }
        // `tell_units`: every unit in order; repeating it changes nothing.
        for index in 0..self.units.len() {
            if self.finish(index, journal.to)? {
                self.trace.push(format!(
                    "  engine: finish on unit {}",
                    self.units[index].number
                ));
                self.check_safety()?;
                return Ok(true);
            }
        }
        journal.phase = Phase::Reencrypted;
        self.journal = Some(journal);
        self.trace.push("  engine: journal reencrypted".to_owned());
        Ok(true)
    }

    /// The service tells a unit key storage is reencrypted to `to`
    /// (`UnitState::finish_reencryption`); true when the unit's lock changed.
    fn finish(&mut self, index: usize, to: Key) -> Result<bool, String> {
        let unit = &mut self.units[index];
        let next = unit
            .state
            .finish_reencryption(&vp(to))
            .map_err(|err| format!("{unit:?} refuses finish-reencryption to k{to}: {err}"))?;
        let changed = next.rotation != unit.state.rotation;
        unit.state = next;
        Ok(changed)
    }

    /// `Rotations::complete`: every unit must be promoted and key storage reencrypted.
    fn complete(&mut self) -> Result<(), String> {
        let mut journal = self
            .journal
            .ok_or("the service refused to complete: no journal")?;
        if journal.phase != Phase::Completed {
            if let Some(u) = self.units.iter().find(|u| u.current() != Some(journal.to)) {
                return Err(format!(
                    "the service refused to complete: unit {} is not promoted",
                    u.number
                ));
            }
            if journal.phase != Phase::Reencrypted {
                return Err(format!(
                    "the service refused to complete a {} rotation",
                    journal.phase.label()
                ));
            }
            journal.phase = Phase::Completed;
        }
        self.journal = Some(journal);
        self.completed = true;
        self.trace.push("  service: completed".to_owned());
        Ok(())
    }

    /// The service creates a key through an operational unit, under the key it wraps with.
    fn create_key(&mut self, index: u8) -> Result<(), String> {
        let operational: Vec<&Unit> = self
            .units
            .iter()
            .filter(|u| u.state.kind == UnitKind::Operational)
            .collect();
        let unit = operational[usize::from(index) % operational.len()];
        let Some(key) = unit.wrapping() else {
            return Ok(());
        };
        if self.journal.is_none_or(|j| !j.phase.open()) && unit.current() != Some(key) {
            self.reached.key_under_new_early = true;
        }
        self.trace.push(format!(
            "  service: key created via unit {} under k{key}",
            unit.number
        ));
        *self.blobs.entry(key).or_default() += 1;
        self.total += 1;
        self.check_safety()
    }

    /// An operator's action on a locked unit: the lock must refuse it and change nothing, except
    /// a manual promotion once the unit is Reencrypted. On an unlocked unit only clearing the
    /// new register is tried, where the flow recovers from it.
    fn tamper(&mut self, tamper: Tamper, index: u8) -> Result<(), String> {
        let index = usize::from(index) % self.units.len();
        let unit = &self.units[index];
        if unit.lock() == RotationLock::None {
            return match tamper {
                Tamper::ClearNew => self.clear_unpinned(index),
                _ => Ok(()),
            };
        }
        let own = unit.new_key().map_or_else(|| vp(FOREIGN), vp);
        // Material sealed to the importer the unit has pending, if any, as a workstation would.
        let importer = unit.state.importer.as_ref().map_or_else(
            || material().bogus_importer.clone(),
            |pending| pending.public_sec1().unwrap(),
        );
        let seal = |label: &[u8], key: &Secret32| {
            seal_to(&importer, &envelope_context(label, unit.state.unit), key).unwrap()
        };
        let action = match tamper {
            Tamper::ClearNew => Action::ClearNew,
            Tamper::LoadNew => Action::LoadNew {
                importer: importer.clone(),
                parts: parts(FOREIGN)
                    .iter()
                    .map(|part| seal(PART_CONTEXT, part))
                    .collect(),
            },
            Tamper::ClearCurrent => Action::ClearCurrent,
            Tamper::SetImmediate if unit.lock() == RotationLock::Reencrypted => {
                return self.promote_by_hand(index);
            }
            Tamper::SetImmediate => Action::SetImmediate { vp: own },
            Tamper::Generate => Action::GenerateRandom,
            Tamper::Pin => Action::PinNew { vp: own },
            Tamper::Import => Action::ImportNew {
                importer: importer.clone(),
                key: seal(TRANSFER_CONTEXT, &secret(FOREIGN)),
            },
        };
        let label = label(&action);
        match unit.apply(action, &mut Draws(FOREIGN)) {
            Err((why, UnitError::RotationInProgress { .. })) => {
                self.trace.push(format!("  operator: {why}"));
                self.reached.tamper_refused = true;
                Ok(())
            }
            Err((why, _)) => Err(format!("{why}, not because of the rotation lock: {unit:?}")),
            Ok(_) => Err(format!("{unit:?} accepted {label}")),
        }
    }

    /// An operator clears the new register of an operational unit before anything is pinned,
    /// while a recovery unit still holds the key: nothing depends on it yet, and the automatic
    /// flow must give the key back (the key part flow asks for the parts to be loaded again).
    fn clear_unpinned(&mut self, index: usize) -> Result<(), String> {
        let unit = &self.units[index];
        let Some(key) = unit.new_key() else {
            return Ok(());
        };
        let kept = self
            .units
            .iter()
            .any(|u| u.state.kind == UnitKind::Recovery && u.new_key() == Some(key));
        let pinned = self.units.iter().any(|u| u.lock() != RotationLock::None);
        // Not while a step is under way: the step would be refused for acting on what its plan
        // read, which is a race with the operator, not a planning error.
        if self.flow != Flow::Auto
            || unit.state.kind != UnitKind::Operational
            || !kept
            || pinned
            || self.stepping
        {
            return Ok(());
        }
        let (next, _) = unit
            .apply(Action::ClearNew, &mut Draws(FOREIGN))
            .map_err(|(why, _)| why)?;
        self.units[index].state = next;
        self.trace.push(format!(
            "  operator: clear new on unit {}",
            self.units[index].number
        ));
        self.reached.cleared_unpinned = true;
        self.check_safety()
    }

    /// An operator promotes a Reencrypted unit with `rotor mk setimm`, between two runs' steps
    /// (during a step it would only race the step's own read).
    fn promote_by_hand(&mut self, index: usize) -> Result<(), String> {
        let unit = &self.units[index];
        let Some(key) = unit.committed() else {
            return Ok(());
        };
        if self.stepping {
            return Ok(());
        }
        let (next, _) = unit
            .apply(Action::SetImmediate { vp: vp(key) }, &mut Draws(FOREIGN))
            .map_err(|(why, _)| why)?;
        self.units[index].state = next;
        self.trace.push(format!(
            "  operator: set immediate on unit {}",
            self.units[index].number
        ));
        self.reached.promoted_by_hand = true;
        self.check_safety()
    }

    fn count(&self, key: Key) -> u64 {
        self.blobs.get(&key).copied().unwrap_or(0)
    }

    /// After every change: no blob is lost, and every unit can use every key blobs lie under.
    /// A unit promoted early, or a new register cleared or replaced while blobs depend on it,
    /// breaks the second part.
    fn check_safety(&self) -> Result<(), String> {
        let stored: u64 = self.blobs.values().sum();
        if stored != self.total {
            return Err(format!("{stored} blob(s) stored, {} expected", self.total));
        }
        for (&key, &count) in &self.blobs {
            if count == 0 {
                continue;
            }
            if let Some(u) = self.units.iter().find(|u| !u.holds(key)) {
                return Err(format!(
                    "{count} blob(s) lie under k{key}, which this unit cannot use: {u:?}"
                ));
            }
        }
        Ok(())
    }

    /// The rotation is over: one key current everywhere, nothing else, all blobs under it.
    fn check_end(&self) -> Result<(), String> {
        let journal = self.journal.ok_or("no journal at the end")?;
        if journal.phase != Phase::Completed || journal.from != FROM {
            return Err(format!("the rotation ended with the journal {journal:?}"));
        }
        let to = match self.flow {
            Flow::Parts => LOADED,
            Flow::Auto => {
                if self.generated.len() != 1 {
                    return Err(format!("random keys generated: {:?}", self.generated));
                }
                self.generated[0]
            }
        };
        if journal.to != to {
            return Err(format!("the rotation went to k{}, not k{to}", journal.to));
        }
        for u in &self.units {
            if u.current() != Some(to) || u.new_key().is_some() || u.lock() != RotationLock::None {
                return Err(format!("at the end: {u:?}"));
            }
        }
        if self.count(to) != self.total {
            return Err(format!(
                "{} of {} blob(s) under k{to} at the end: {:?}",
                self.count(to),
                self.total,
                self.blobs
            ));
        }
        Ok(())
    }

    /// Notes which partial state a kill left, for the reach check.
    fn note_kill(&mut self) {
        let locked = |lock: RotationLock| self.units.iter().filter(|u| u.lock() == lock).count();
        let (reencrypting, reencrypted) = (
            locked(RotationLock::Reencrypting),
            locked(RotationLock::Reencrypted),
        );
        let phase = self.journal.filter(|j| j.phase.open()).map(|j| j.phase);
        let left = self.journal.map(|j| self.count(j.from));
        let importing = self
            .units
            .iter()
            .any(|u| u.state.importer.is_some() && u.new_key().is_none());
        let units = self.units.len();
        let reached = &mut self.reached;
        reached.kill_mid_distribute |= importing;
        reached.kill_mid_rewrap |= phase == Some(Phase::Reencrypting)
            && left.is_some_and(|left| left > 0 && left < self.total);
        reached.kill_mid_finish |=
            phase == Some(Phase::Reencrypting) && reencrypted > 0 && reencrypting > 0;
        reached.kill_mid_promote |=
            phase == Some(Phase::Reencrypted) && reencrypted > 0 && reencrypted < units;
        reached.kill_mid_pin |= phase.is_none() && reencrypting > 0 && reencrypting < units;
        reached.kill_after_complete |= self.completed;
    }
}

fn describe(step: &Step) -> String {
    match step {
        Step::Generate { unit } => format!("generate in unit {unit}"),
        Step::Distribute {
            source,
            register,
            target,
            vp,
        } => format!(
            "distribute {} from unit {source}'s {register} register to unit {target}",
            short(vp)
        ),
        Step::Commit { unit, vp } => format!("commit {} on unit {unit}", short(vp)),
        Step::Pin { unit, vp } => format!("pin {} on unit {unit}", short(vp)),
        Step::Reencrypt { from, to } => format!("reencrypt {} -> {}", short(from), short(to)),
        Step::Promote { unit, vp } => format!("promote unit {unit} to {}", short(vp)),
        Step::Complete => "complete".to_owned(),
        Step::Done { from, to } => format!("done {} -> {}", short(from), short(to)),
    }
}

/// Runs one scenario; on failure the message carries the trace.
fn scenario(setup: &Setup, events: &[Event]) -> Result<Reached, String> {
    let mut sim = Sim::new(setup, events);
    match sim.run() {
        Ok(()) => Ok(sim.reached),
        Err(why) => Err(format!(
            "{why}\nsetup: {setup:?}\ntrace:\n{}",
            sim.trace.join("\n")
        )),
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(CASES))]

    #[test]
    fn key_part_rotation_always_ends_rotated(setup in setup(Flow::Parts), events in events()) {
        scenario(&setup, &events).map_err(TestCaseError::fail)?;
    }

    #[test]
    fn automatic_rotation_always_ends_rotated(setup in setup(Flow::Auto), events in events()) {
        scenario(&setup, &events).map_err(TestCaseError::fail)?;
    }
}

/// Every single kill point, one at a time, in worlds with a recovery unit anywhere: the random
/// tapes reach these too, but only by chance.
#[test]
fn a_single_kill_anywhere_is_resumed() {
    for flow in [Flow::Parts, Flow::Auto] {
        for recovery in [
            vec![false, false, true],
            vec![true, false, false],
            vec![false, true],
        ] {
            let setup = Setup {
                flow,
                recovery,
                blobs: 5,
                batch: 2,
                threshold: 2,
                prior: Prior::None,
            };
            // More points than any run of these worlds has.
            for at in 0..120 {
                let mut events = vec![Event::Go; at];
                events.push(Event::Kill);
                if let Err(why) = scenario(&setup, &events) {
                    panic!("kill at point {at}: {why}");
                }
            }
        }
    }
}

/// The generator is only as good as what it reaches: on a fixed seed, the partial states the
/// planner must resume from all come up.
#[test]
fn the_generator_reaches_every_partial_state() {
    let mut runner = TestRunner::deterministic();
    let mut seen = Reached::default();
    for round in 0..600 {
        let flow = if round % 2 == 0 {
            Flow::Parts
        } else {
            Flow::Auto
        };
        let setup = setup(flow).new_tree(&mut runner).unwrap().current();
        let events = events().new_tree(&mut runner).unwrap().current();
        let reached = scenario(&setup, &events).unwrap();
        seen.kill_mid_distribute |= reached.kill_mid_distribute;
        seen.kill_mid_rewrap |= reached.kill_mid_rewrap;
        seen.kill_mid_finish |= reached.kill_mid_finish;
        seen.kill_mid_promote |= reached.kill_mid_promote;
        seen.kill_after_complete |= reached.kill_after_complete;
        seen.kill_mid_pin |= reached.kill_mid_pin;
        seen.key_under_new_early |= reached.key_under_new_early;
        seen.tamper_refused |= reached.tamper_refused;
        seen.cleared_unpinned |= reached.cleared_unpinned;
        seen.promoted_by_hand |= reached.promoted_by_hand;
    }
    let Reached {
        kill_mid_distribute,
        kill_mid_rewrap,
        kill_mid_finish,
        kill_mid_promote,
        kill_after_complete,
        kill_mid_pin,
        key_under_new_early,
        tamper_refused,
        cleared_unpinned,
        promoted_by_hand,
    } = seen;
    assert!(
        kill_mid_distribute
            && kill_mid_rewrap
            && kill_mid_finish
            && kill_mid_promote
            && kill_after_complete
            && kill_mid_pin
            && key_under_new_early
            && tamper_refused
            && cleared_unpinned
            && promoted_by_hand,
        "{seen:?}"
    );
}

//! A unit killed with SIGKILL in a loop of state-changing commands restarts with a consistent,
//! complete state.
//!
//! Each round starts `rotor unit serve` on the same directory, drives it with a stream of valid
//! state-changing commands (admins, thresholds, importer keys, key parts, commit, set immediate,
//! clears, zeroize) from a separate task that keeps its own model of the acknowledged state, and
//! SIGKILLs the process after a random delay, often in the middle of a request. After every
//! restart the unit must present the same id and identity key, and its status must be the model
//! after the acknowledged commands, or after those plus the one command that was in flight (it
//! may have become durable without its answer arriving). Nothing else is acceptable.
//!
//! The seed is printed; rerun with `ROTOR_CRASH_SEED=<seed>` to repeat the same command choices
//! and kill delays (process timing still varies).

// Test helpers may panic: a failed expectation is the test failing. Spawned processes are
// killed and waited for in `Drop`.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::zombie_processes
)]

mod support;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use rotor_crypto::{PublicKey, Secret32, SigAlg, SigningKey, Vp, combine_parts, seal_to};
use rotor_unit::client::{ClientError, UnitClient};
use rotor_unit::daemon::ServeInfo;
use rotor_unit::machine::envelope_context;
use rotor_unit::wire::{
    Action, Command as UnitCommand, CurrentState, EnrollmentSecret, NewState, Outcome,
    PART_CONTEXT, SignedCommand, Ski, UnitStatus,
};
use uuid::Uuid;

/// Kill/restart rounds.
const ROUNDS: usize = 50;
/// Kill delay range after the unit answered its first status query, in milliseconds.
const MIN_KILL_MS: u64 = 2;
const MAX_KILL_MS: u64 = 120;
/// How long a unit may take to start.
const START_TIMEOUT: Duration = Duration::from_secs(20);

// ---------------------------------------------------------------------------------------------
// Randomness: SplitMix64, seeded from the environment or the clock, so a failure can be replayed.
// ---------------------------------------------------------------------------------------------

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `lo..=hi`.
    fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next() % (hi - lo + 1)
    }

    fn index(&mut self, len: usize) -> usize {
        (self.next() % len as u64) as usize
    }

    /// `k` distinct indices out of `0..n`.
    fn subset(&mut self, n: usize, k: usize) -> Vec<usize> {
        let mut all: Vec<usize> = (0..n).collect();
        for i in (1..n).rev() {
            let j = self.index(i + 1);
            all.swap(i, j);
        }
        all.truncate(k);
        all
    }
}

fn seed() -> u64 {
    if let Some(seed) = std::env::var("ROTOR_CRASH_SEED")
        .ok()
        .and_then(|s| s.trim().parse().ok())
    {
        return seed;
    }
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or_default();
    nanos ^ (u64::from(std::process::id()) << 40)
}

// ---------------------------------------------------------------------------------------------
// The expected model of a unit's public state.
// ---------------------------------------------------------------------------------------------

#[derive(Clone, Debug, PartialEq, Eq)]
enum NewReg {
    Empty,
    Uncommitted(Vp),
    Committed(Vp),
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Importer {
    None,
    Known(Vec<u8>),
    /// A fresh importer key the client has not seen (an in-flight "create importer").
    Fresh,
}

#[derive(Clone, Debug, PartialEq, Eq)]
struct Model {
    counter: u64,
    /// Name and SKI, in installation order.
    admins: Vec<(String, Ski)>,
    signature: u8,
    revocation: u8,
    current: Option<Vp>,
    new: NewReg,
    importer: Importer,
}

impl Model {
    /// The model a status reports; also checks the status is internally consistent.
    fn of(status: &UnitStatus) -> Result<Self, String> {
        let current = match status.current.state {
            CurrentState::Empty if status.current.vp == Vp::EMPTY => None,
            CurrentState::Valid if status.current.vp != Vp::EMPTY => Some(status.current.vp),
            _ => {
                return Err(format!(
                    "inconsistent current register {:?}",
                    status.current
                ));
            }
        };
        let new = match status.new.state {
            NewState::Empty if status.new.vp == Vp::EMPTY => NewReg::Empty,
            NewState::FullUncommitted if status.new.vp != Vp::EMPTY => {
                NewReg::Uncommitted(status.new.vp)
            }
            NewState::FullCommitted if status.new.vp != Vp::EMPTY => {
                NewReg::Committed(status.new.vp)
            }
            _ => return Err(format!("inconsistent new register {:?}", status.new)),
        };
        if status.imprint != (status.signature_threshold == 0) {
            return Err(format!(
                "imprint flag {} with signature threshold {}",
                status.imprint, status.signature_threshold
            ));
        }
        if (status.signature_threshold == 0) != (status.revocation_threshold == 0) {
            return Err(format!(
                "thresholds {}/{}: only one of them is zero",
                status.signature_threshold, status.revocation_threshold
            ));
        }
        for admin in &status.admins {
            if Ski::of(&admin.public_key) != admin.ski {
                return Err(format!("admin {} reports a SKI of another key", admin.name));
            }
        }
        Ok(Self {
            counter: status.counter,
            admins: status
                .admins
                .iter()
                .map(|a| (a.name.clone(), a.ski))
                .collect(),
            signature: status.signature_threshold,
            revocation: status.revocation_threshold,
            current,
            new,
            importer: if status.importer.is_empty() {
                Importer::None
            } else {
                Importer::Known(status.importer.clone())
            },
        })
    }

    /// Whether `actual` (a model read from a status) is this expected model.
    fn admits(&self, actual: &Self) -> bool {
        let importer_ok = match (&self.importer, &actual.importer) {
            (Importer::Fresh, Importer::Known(_)) => true,
            (expected, found) => expected == found,
        };
        importer_ok
            && Self {
                importer: Importer::None,
                ..self.clone()
            } == Self {
                importer: Importer::None,
                ..actual.clone()
            }
    }
}

// ---------------------------------------------------------------------------------------------
// The driver: plans valid commands from its model, sends them, records acknowledgements.
// ---------------------------------------------------------------------------------------------

/// One command the client saw acknowledged.
#[derive(Debug)]
struct Acked {
    round: usize,
    counter: u64,
    action: &'static str,
}

struct Driver {
    rng: Rng,
    model: Model,
    /// Every admin key ever made, by SKI.
    keys: HashMap<Ski, SigningKey>,
    admin_serial: usize,
    acked: Vec<Acked>,
    /// The command sent last whose answer never arrived, and the model it would lead to.
    in_flight: Option<(&'static str, Model)>,
    /// Something that must not happen while the unit is up (a rejection, a wrong status).
    failure: Option<String>,
    round: usize,
    unit: Uuid,
    /// The running unit's info file, which holds its enrollment secret while it has no admin.
    info_file: PathBuf,
}

struct Plan {
    action: Action,
    signers: Vec<Ski>,
    /// The first admin: the command carries a proof of the enrollment secret.
    enroll: bool,
    expected: Model,
}

impl Driver {
    /// The planned command for the next counter, signed, with an enrollment proof if it needs
    /// one.
    fn sign(&self, plan: &Plan) -> SignedCommand {
        let keys: Vec<&SigningKey> = plan.signers.iter().map(|ski| &self.keys[ski]).collect();
        let command = UnitCommand {
            unit: self.unit,
            counter: self.model.counter + 1,
            action: plan.action.clone(),
        };
        let enrollment = plan.enroll.then(|| {
            let info: ServeInfo =
                serde_json::from_slice(&std::fs::read(&self.info_file).unwrap()).unwrap();
            let secret = info
                .enrollment_secret
                .expect("an enrollment secret without admins");
            command.enrollment_proof(&EnrollmentSecret::from_hex(&secret).unwrap())
        });
        let mut signed = command.sign(&keys);
        signed.enrollment = enrollment;
        signed
    }

    /// `k` admin SKIs to sign with (sometimes one more than needed, which is allowed).
    fn signers(&mut self, k: u8) -> Vec<Ski> {
        let n = self.model.admins.len();
        let mut k = usize::from(k).min(n);
        if k < n && self.rng.range(0, 4) == 0 {
            k += 1;
        }
        self.rng
            .subset(n, k)
            .into_iter()
            .map(|i| self.model.admins[i].1)
            .collect()
    }

    fn new_admin(&mut self) -> (String, SigningKey) {
        self.admin_serial += 1;
        let alg = if self.rng.range(0, 5) == 0 {
            SigAlg::P521Sha512
        } else {
            SigAlg::P256Sha256
        };
        let key = SigningKey::generate(alg);
        self.keys.insert(Ski::of(&key.public_key()), key.clone());
        (format!("admin {}", self.admin_serial), key)
    }

    /// Chooses a command the unit must accept in the modelled state.
    fn plan(&mut self) -> Plan {
        let m = self.model.clone();
        let n = m.admins.len();
        let imprint = m.signature == 0;
        let mut expected = Model {
            counter: m.counter + 1,
            ..m.clone()
        };
        // (weight, choice) for every command that is valid now.
        let mut options: Vec<(u64, u8)> = Vec::new();
        let limit = m.signature.max(m.revocation);
        if n < 8 {
            options.push((if imprint { 6 } else { 2 }, 0));
        }
        if n > usize::from(limit) {
            options.push((2, 1));
        }
        if n > 0 {
            options.push((if imprint { 5 } else { 2 }, 2));
        }
        options.push((1, 3));
        if !imprint {
            options.push((if m.importer == Importer::None { 5 } else { 1 }, 4));
            if matches!(m.importer, Importer::Known(_)) && m.new == NewReg::Empty {
                options.push((10, 5));
            }
            if matches!(m.new, NewReg::Uncommitted(_)) {
                options.push((8, 6));
            }
            if matches!(m.new, NewReg::Committed(_)) {
                options.push((8, 7));
            }
            options.push((1, 8));
            if m.current.is_some() {
                options.push((1, 9));
            }
        }
        let total: u64 = options.iter().map(|(w, _)| w).sum();
        let mut pick = self.rng.range(0, total - 1);
        let mut choice = options[0].1;
        for (weight, option) in &options {
            if pick < *weight {
                choice = *option;
                break;
            }
            pick -= weight;
        }
        let (action, signers) = match choice {
            0 => {
                let (name, key) = self.new_admin();
                expected
                    .admins
                    .push((name.clone(), Ski::of(&key.public_key())));
                // In imprint mode the first admin needs the enrollment secret, the next ones
                // an installed admin.
                let signers = self.signers(if imprint {
                    u8::from(n > 0)
                } else {
                    m.signature
                });
                (
                    Action::AddAdmin {
                        name,
                        public_key: key.public_key(),
                    },
                    signers,
                )
            }
            1 => {
                let index = self.rng.index(n);
                let ski = m.admins[index].1;
                expected.admins.remove(index);
                let needed = if imprint { 1 } else { m.revocation };
                (Action::RemoveAdmin { ski }, self.signers(needed))
            }
            2 => {
                let top = n.min(3) as u64;
                let signature = self.rng.range(1, top) as u8;
                let revocation = self.rng.range(1, top) as u8;
                expected.signature = signature;
                expected.revocation = revocation;
                // From imprint mode the new signature threshold counts, else the current one.
                let needed = if imprint { signature } else { m.signature };
                (
                    Action::SetThresholds {
                        signature,
                        revocation,
                    },
                    self.signers(needed),
                )
            }
            3 => {
                expected = Model {
                    counter: m.counter + 1,
                    admins: Vec::new(),
                    signature: 0,
                    revocation: 0,
                    current: None,
                    new: NewReg::Empty,
                    importer: Importer::None,
                };
                let needed = if imprint { u8::from(n > 0) } else { 1 };
                (Action::Zeroize, self.signers(needed))
            }
            4 => {
                expected.importer = Importer::Fresh;
                (Action::CreateImporter, self.signers(1))
            }
            5 => {
                let Importer::Known(importer) = m.importer else {
                    unreachable!("planned a load without an importer key")
                };
                let parts: Vec<Secret32> = (0..self.rng.range(2, 3))
                    .map(|_| Secret32::random())
                    .collect();
                let vp = combine_parts(&parts).vp();
                let context = envelope_context(PART_CONTEXT, self.unit);
                let envelopes = parts
                    .iter()
                    .map(|part| seal_to(&importer, &context, part).expect("seal a part"))
                    .collect();
                expected.importer = Importer::None;
                expected.new = NewReg::Uncommitted(vp);
                (
                    Action::LoadNew {
                        importer,
                        parts: envelopes,
                    },
                    self.signers(1),
                )
            }
            6 => {
                let NewReg::Uncommitted(vp) = m.new else {
                    unreachable!()
                };
                expected.new = NewReg::Committed(vp);
                (Action::Commit { vp }, self.signers(m.signature))
            }
            7 => {
                let NewReg::Committed(vp) = m.new else {
                    unreachable!()
                };
                expected.current = Some(vp);
                expected.new = NewReg::Empty;
                (Action::SetImmediate { vp }, self.signers(1))
            }
            8 => {
                expected.new = NewReg::Empty;
                (Action::ClearNew, self.signers(1))
            }
            _ => {
                expected.current = None;
                (Action::ClearCurrent, self.signers(1))
            }
        };
        Plan {
            enroll: n == 0 && matches!(action, Action::AddAdmin { .. }),
            action,
            signers,
            expected,
        }
    }

    fn new(seed: u64, unit: Uuid, model: Model, info_file: PathBuf) -> Self {
        Self {
            rng: Rng(seed),
            model,
            keys: HashMap::new(),
            admin_serial: 0,
            acked: Vec::new(),
            in_flight: None,
            failure: None,
            round: 0,
            unit,
            info_file,
        }
    }

    /// Sends planned commands until one goes unanswered (the unit was killed) or something
    /// that must not happen does.
    async fn run(mut self, client: UnitClient, identity: PublicKey) -> Self {
        loop {
            let plan = self.plan();
            let name = plan.action.name();
            let counter = self.model.counter + 1;
            let signed = self.sign(&plan);
            match client.command(&identity, signed).await {
                Ok((outcome, status)) => {
                    let actual = match Model::of(&status) {
                        Ok(actual) => actual,
                        Err(why) => {
                            self.failure = Some(format!(
                                "{name} (counter {counter}) acknowledged with a bad status: {why}"
                            ));
                            return self;
                        }
                    };
                    if !plan.expected.admits(&actual) {
                        self.failure = Some(format!(
                            "{name} (counter {counter}) acknowledged, but the status is not the model:\n expected {:?}\n found    {actual:?}",
                            plan.expected
                        ));
                        return self;
                    }
                    if let Outcome::Importer { public_key } = &outcome
                        && actual.importer != Importer::Known(public_key.clone())
                    {
                        self.failure = Some(format!(
                            "create importer returned a key the status does not show: {actual:?}"
                        ));
                        return self;
                    }
                    self.acked.push(Acked {
                        round: self.round,
                        counter,
                        action: name,
                    });
                    self.model = actual;
                }
                Err(ClientError::Unreachable(_)) => {
                    self.in_flight = Some((name, plan.expected));
                    return self;
                }
                Err(other) => {
                    self.failure = Some(format!(
                        "{name} (counter {counter}) failed while the unit was up: {other}\n model: {:?}",
                        self.model
                    ));
                    return self;
                }
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The unit process.
// ---------------------------------------------------------------------------------------------

/// A running `rotor unit serve`; SIGKILLed and reaped on drop.
struct UnitProcess {
    child: Child,
    log: PathBuf,
}

impl UnitProcess {
    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for UnitProcess {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Starts a unit on `dir` and waits until its info file appears.
fn start_unit(dir: &Path, info_file: &Path, log: &Path) -> (UnitProcess, ServeInfo) {
    let _ = std::fs::remove_file(info_file);
    let home = dir.with_file_name("home");
    let child = Command::new(env!("CARGO_BIN_EXE_rotor"))
        .env("ROTOR_HOME", home)
        // The file mode: this test is about durability, and a passphrase's Argon2id on each of
        // the many restarts would only slow it down.
        .args([
            "unit",
            "serve",
            "--seal",
            "file",
            "--listen",
            "127.0.0.1:0",
            "--dir",
        ])
        .arg(dir)
        .arg("--info-file")
        .arg(info_file)
        .args(support::TestPki::open_or_create(&dir.with_extension("pki")).unit_args("unit"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(log).expect("create the unit log"))
        .spawn()
        .expect("start rotor unit serve");
    let mut process = UnitProcess {
        child,
        log: log.to_owned(),
    };
    let deadline = Instant::now() + START_TIMEOUT;
    loop {
        if let Ok(text) = std::fs::read_to_string(info_file)
            && let Ok(info) = serde_json::from_str::<ServeInfo>(&text)
        {
            return (process, info);
        }
        if let Ok(Some(status)) = process.child.try_wait() {
            panic!(
                "the unit did not start ({status}); its state must always open:\n{}",
                process.log()
            );
        }
        assert!(Instant::now() < deadline, "the unit did not start in time");
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Garbage planted as `state.tmp`, as an interrupted write might leave it.
const STALE_STATE_TMP: &[u8] = b"stale garbage from an interrupted write";

/// Whether a kill left a `state.tmp` of the unit's own behind (an interrupted save).
fn interrupted_save_left(dir: &Path) -> bool {
    std::fs::read(dir.join("state.tmp")).is_ok_and(|bytes| bytes != STALE_STATE_TMP)
}

// ---------------------------------------------------------------------------------------------
// The test.
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_during_commands_never_loses_or_tears_the_state() {
    let seed = seed();
    println!("unit_crash seed {seed}; rerun with ROTOR_CRASH_SEED={seed}");
    let started = Instant::now();
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("unit");
    let mut rng = Rng(seed);
    let mut pinned: Option<(Uuid, PublicKey)> = None;
    let mut driver: Option<Driver> = None;
    let mut durable_in_flight = 0;
    let mut lost_in_flight = 0;
    let mut leftovers_seen = 0;
    let mut planted = 0;

    // ROUNDS kills, then one more start that checks the last kill and that the unit still works.
    for round in 0..=ROUNDS {
        let info_file = root.path().join(format!("info-{round}.json"));
        let log = root.path().join(format!("unit-{round}.log"));
        let (mut process, info) = start_unit(&dir, &info_file, &log);
        let http = support::TestPki::open_or_create(&dir.with_extension("pki")).service_http();

        // The state opens, with the same unit id and identity key as before.
        let (unit, identity) = match &pinned {
            Some(pin) => pin.clone(),
            None => {
                let client = UnitClient::new(
                    http.clone(),
                    format!("https://{}/v1", info.address),
                    info.unit,
                );
                let status = client.status(None).await.expect("first status");
                pinned = Some((status.unit, status.identity.clone()));
                (status.unit, status.identity)
            }
        };
        assert_eq!(
            info.unit, unit,
            "round {round} (seed {seed}): the unit id changed"
        );
        let client = UnitClient::new(http, format!("https://{}/v1", info.address), unit);
        let status = client.status(Some(&identity)).await.unwrap_or_else(|err| {
            panic!("round {round} (seed {seed}): status after restart: {err}")
        });
        assert_eq!(status.unit, unit);
        assert_eq!(status.identity, identity);
        let actual =
            Model::of(&status).unwrap_or_else(|why| panic!("round {round} (seed {seed}): {why}"));

        // It is the acknowledged state, or that plus the one command in flight.
        let mut current = match driver.take() {
            None => Driver::new(rng.next(), unit, actual, info_file.clone()),
            Some(mut previous) => {
                let acked = previous.model.clone();
                let in_flight = previous.in_flight.take();
                let describe = || {
                    let last: Vec<String> = previous
                        .acked
                        .iter()
                        .rev()
                        .take(5)
                        .map(|a| format!("#{} {} (round {})", a.counter, a.action, a.round))
                        .collect();
                    format!(
                        "round {round} (seed {seed}): after SIGKILL the unit is neither the acknowledged state nor that plus the command in flight\n last acknowledged: {last:?}\n acknowledged model: {acked:?}\n in flight: {in_flight:?}\n found: {actual:?}"
                    )
                };
                assert!(
                    actual.counter == acked.counter || actual.counter == acked.counter + 1,
                    "counter {} after {} acknowledged: {}",
                    actual.counter,
                    acked.counter,
                    describe()
                );
                if acked.admits(&actual) {
                    if in_flight.is_some() {
                        lost_in_flight += 1;
                    }
                } else if in_flight
                    .as_ref()
                    .is_some_and(|(_, expected)| expected.admits(&actual))
                {
                    durable_in_flight += 1;
                } else {
                    panic!("{}", describe());
                }
                previous.model = actual;
                previous.round = round;
                previous.info_file = info_file.clone();
                previous
            }
        };
        if round == ROUNDS {
            // The restarted unit still accepts commands.
            let plan = current.plan();
            let signed = current.sign(&plan);
            let (_, status) = client
                .command(&identity, signed)
                .await
                .expect("a command after the last restart");
            assert!(plan.expected.admits(&Model::of(&status).unwrap()));
            process.kill();
            assert!(!process.log().contains("panicked"), "{}", process.log());
            driver = Some(current);
            break;
        }

        let task = tokio::spawn(current.run(client, identity.clone()));
        let delay = rng.range(MIN_KILL_MS, MAX_KILL_MS);
        tokio::time::sleep(Duration::from_millis(delay)).await;
        process.kill();
        let finished = tokio::time::timeout(Duration::from_secs(30), task)
            .await
            .expect("the driver stops once the unit is killed")
            .expect("the driver task");
        if let Some(failure) = &finished.failure {
            panic!(
                "round {round} (seed {seed}): {failure}\nunit log:\n{}",
                process.log()
            );
        }
        let log_text = process.log();
        assert!(!log_text.contains("panicked"), "round {round}: {log_text}");
        driver = Some(finished);

        // Whatever temporary file a kill left behind must not matter; every fifth round also
        // plants stale ones.
        if interrupted_save_left(&dir) {
            leftovers_seen += 1;
        }
        if round % 5 == 4 {
            std::fs::write(dir.join("state.tmp"), STALE_STATE_TMP).unwrap();
            std::fs::write(dir.join("seal.tmp"), [0xa5u8; 7]).unwrap();
            planted += 1;
        }
    }

    let driver = driver.unwrap();
    let mut histogram: HashMap<&str, usize> = HashMap::new();
    for acked in &driver.acked {
        *histogram.entry(acked.action).or_default() += 1;
    }
    let mut histogram: Vec<_> = histogram.into_iter().collect();
    histogram.sort();
    println!(
        "{ROUNDS} SIGKILLs in {:.1?}: {} commands acknowledged, final counter {}; in-flight command durable after {durable_in_flight} kills, lost after {lost_in_flight}; a state.tmp of an interrupted save left after {leftovers_seen} kills, stale .tmp files planted {planted} times\nacknowledged: {histogram:?}",
        started.elapsed(),
        driver.acked.len(),
        driver.model.counter,
    );
    assert!(
        driver.acked.len() >= ROUNDS,
        "too few commands went through to test anything"
    );
}

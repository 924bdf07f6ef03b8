//! Corrupt or truncated state, sigkey and part files, wrong passwords and malformed requests give
//! clear errors, never a panic, and change nothing.
//!
//! - unit state: truncated, flipped or re-keyed `state.sealed`, a missing or wrong `seal.key`,
//!   and a directory already served: `rotor unit serve` exits non-zero naming the file and
//!   leaves the directory byte-identical;
//! - workstation files: corrupt sigkey and part files are listed as unreadable, refused when
//!   selected or used, and a wrong password changes nothing on the unit;
//! - HTTP: malformed bodies, queries and ids, against a unit and against the service, get a 4xx
//!   (from a unit: a signed `bad_request` rejection), never a 5xx, and the unit is unchanged.

// Test helpers may panic: a failed expectation is the test failing. Spawned processes are
// killed and waited for in `Drop`.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::zombie_processes
)]

mod support;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use rotor_crypto::{PublicKey, Secret32, SigAlg, SigningKey, combine_parts};
use rotor_server::dev::DevInfo;
use rotor_unit::client::UnitClient;
use rotor_unit::daemon::ServeInfo;
use rotor_unit::wire::{
    Action, Command as UnitCommand, CommandRequest, EnrollmentSecret, NewState, SignedResponse,
    UnitResult, UnitStatus,
};
use serde_json::{Value, json};
use uuid::Uuid;

const PASSWORD: &str = "bad input test password";
const START_TIMEOUT: Duration = Duration::from_secs(30);

// ---------------------------------------------------------------------------------------------
// Processes
// ---------------------------------------------------------------------------------------------

/// A spawned process, SIGKILLed and reaped on drop.
struct Guard(Child);

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn rotor() -> Command {
    Command::new(env!("CARGO_BIN_EXE_rotor"))
}

/// Polls `info_file` until it parses as `T`; fails if `child` exits first.
fn wait_for<T: serde::de::DeserializeOwned>(child: &mut Child, info_file: &Path, log: &Path) -> T {
    let deadline = Instant::now() + START_TIMEOUT;
    loop {
        if let Ok(text) = std::fs::read_to_string(info_file)
            && let Ok(info) = serde_json::from_str::<T>(&text)
        {
            return info;
        }
        if let Ok(Some(status)) = child.try_wait() {
            panic!(
                "process exited ({status}) before it was ready: {}",
                std::fs::read_to_string(log).unwrap_or_default()
            );
        }
        assert!(Instant::now() < deadline, "process did not become ready");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// A running `rotor unit serve`.
struct UnitProc {
    guard: Guard,
    info: ServeInfo,
    log: PathBuf,
    pki: support::TestPki,
}

impl UnitProc {
    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn stop(mut self) {
        let _ = self.guard.0.kill();
        let _ = self.guard.0.wait();
        let log = self.log();
        assert!(!log.contains("panicked"), "unit log: {log}");
    }

    fn client(&self) -> UnitClient {
        UnitClient::new(self.http(), self.base(), self.info.unit)
    }

    /// A client presenting the service certificate of the unit's instance.
    fn http(&self) -> reqwest::Client {
        self.pki.service_http()
    }

    fn base(&self) -> String {
        format!("https://{}/v1", self.info.address)
    }
}

/// The deployment CA beside a unit directory (created on first use).
fn pki_beside(dir: &Path) -> support::TestPki {
    support::TestPki::open_or_create(&dir.with_extension("pki"))
}

fn serve_command(dir: &Path, info_file: &Path) -> Command {
    let mut command = rotor();
    command
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
        .args(pki_beside(dir).unit_args("unit"))
        .env("ROTOR_HOME", dir.with_file_name("home"))
        .stdin(Stdio::null())
        .stdout(Stdio::null());
    command
}

fn start_unit(dir: &Path) -> UnitProc {
    let info_file = dir.with_extension("info.json");
    let log = dir.with_extension("log");
    let _ = std::fs::remove_file(&info_file);
    let child = serve_command(dir, &info_file)
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .expect("start rotor unit serve");
    let mut guard = Guard(child);
    let info = wait_for::<ServeInfo>(&mut guard.0, &info_file, &log);
    UnitProc {
        guard,
        info,
        log,
        pki: pki_beside(dir),
    }
}

/// Runs `rotor unit serve` on `dir`, which must refuse to start: returns its stderr.
fn serve_refused(dir: &Path) -> String {
    let info_file = dir.with_extension("refused.json");
    let _ = std::fs::remove_file(&info_file);
    let child = serve_command(dir, &info_file)
        .stderr(Stdio::piped())
        .spawn()
        .expect("start rotor unit serve");
    let mut guard = Guard(child);
    let deadline = Instant::now() + START_TIMEOUT;
    let status = loop {
        if let Some(status) = guard.0.try_wait().unwrap() {
            break status;
        }
        assert!(
            !info_file.exists(),
            "rotor unit serve started on a bad directory"
        );
        assert!(
            Instant::now() < deadline,
            "rotor unit serve neither started nor exited"
        );
        std::thread::sleep(Duration::from_millis(10));
    };
    let mut stderr = String::new();
    use std::io::Read;
    guard
        .0
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    assert!(
        !status.success(),
        "rotor unit serve exited successfully: {stderr}"
    );
    assert_eq!(status.code(), Some(1), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(!info_file.exists());
    stderr
}

/// A running `rotor dev` with one operational unit.
struct Dev {
    _guard: Guard,
    info: DevInfo,
    token: String,
}

fn start_dev(root: &Path) -> Dev {
    let info_file = root.join("dev.json");
    let log = root.join("dev.log");
    let child = rotor()
        .args([
            "dev",
            "--imprint",
            "--units",
            "1",
            "--recovery-units",
            "0",
            "--dir",
        ])
        .arg(root.join("dev"))
        .arg("--info-file")
        .arg(&info_file)
        .env("ROTOR_HOME", root.join("home"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .expect("start rotor dev");
    let mut guard = Guard(child);
    let info = wait_for::<DevInfo>(&mut guard.0, &info_file, &log);
    let token = access_token(&info);
    Dev {
        _guard: guard,
        info,
        token,
    }
}

/// A bearer token for the dev instance's API key.
fn access_token(info: &DevInfo) -> String {
    support::access_token(info, &info.api_key)
}

impl Dev {
    fn unit_base(&self) -> String {
        format!(
            "{}/v1/instances/{}/units/{}",
            self.info.endpoint, self.info.instance, self.info.units[0].id
        )
    }

    fn relay(&self) -> UnitClient {
        UnitClient::new(self.http(), self.unit_base(), self.info.units[0].id)
    }

    /// A client that presents the instance's token on every request.
    fn http(&self) -> reqwest::Client {
        let mut headers = reqwest::header::HeaderMap::new();
        let value = format!("Bearer {}", self.token);
        headers.insert(reqwest::header::AUTHORIZATION, value.parse().unwrap());
        rotor_tls::config::http_client(&rotor_tls::ClientTls::trusting(&self.info.ca_cert))
            .unwrap()
            .default_headers(headers)
            .build()
            .unwrap()
    }
}

// ---------------------------------------------------------------------------------------------
// Files
// ---------------------------------------------------------------------------------------------

/// Every file under `dir` with its bytes.
fn snapshot(dir: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    fn walk(dir: &Path, out: &mut BTreeMap<PathBuf, Vec<u8>>) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for entry in entries {
            let path = entry.unwrap().path();
            if path.is_dir() {
                walk(&path, out);
            } else {
                out.insert(path.clone(), std::fs::read(&path).unwrap());
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(dir, &mut out);
    out
}

fn assert_unchanged(before: &BTreeMap<PathBuf, Vec<u8>>, dir: &Path, what: &str) {
    let after = snapshot(dir);
    let names = |s: &BTreeMap<PathBuf, Vec<u8>>| s.keys().cloned().collect::<Vec<_>>();
    assert_eq!(
        names(before),
        names(&after),
        "{what}: files appeared or vanished"
    );
    for (path, bytes) in before {
        assert!(after[path] == *bytes, "{what}: {} changed", path.display());
    }
}

/// Flips one hex digit of a hex string.
fn flip_hex(text: &str, at: usize) -> String {
    let mut chars: Vec<char> = text.chars().collect();
    chars[at] = if chars[at] == '0' { '1' } else { '0' };
    chars.into_iter().collect()
}

fn edit_json(path: &Path, edit: impl FnOnce(&mut Value)) {
    let mut value: Value = serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap();
    edit(&mut value);
    std::fs::write(path, serde_json::to_vec_pretty(&value).unwrap()).unwrap();
}

fn truncate(path: &Path, len: usize) {
    let bytes = std::fs::read(path).unwrap();
    std::fs::write(path, &bytes[..len.min(bytes.len())]).unwrap();
}

// ---------------------------------------------------------------------------------------------
// The CLI on a workstation directory
// ---------------------------------------------------------------------------------------------

struct Ws {
    home: PathBuf,
    endpoint: Option<String>,
    api_key: Option<String>,
    /// The CA the endpoint's certificate chains to.
    ca_cert: Option<PathBuf>,
}

impl Ws {
    fn run_with(&self, password: &str, args: &[&str]) -> Output {
        let mut command = rotor();
        command
            .args(args)
            .env("ROTOR_HOME", &self.home)
            .env("ROTOR_PASSWORD", password)
            .env_remove("ROTOR_ENDPOINT")
            .stdin(Stdio::null());
        if let Some(endpoint) = &self.endpoint {
            command.arg("--endpoint").arg(endpoint);
        }
        if let Some(ca_cert) = &self.ca_cert {
            command.arg("--ca-cert").arg(ca_cert);
        }
        match &self.api_key {
            Some(key) => command.env("ROTOR_API_KEY", key),
            None => command.env_remove("ROTOR_API_KEY"),
        };
        command.output().expect("run rotor")
    }

    fn ok(&self, args: &[&str]) -> String {
        let output = self.run_with(PASSWORD, args);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(output.status.success(), "rotor {args:?} failed: {stderr}");
        assert!(!stderr.contains("panicked"), "{stderr}");
        String::from_utf8_lossy(&output.stdout).into_owned()
    }

    fn json(&self, args: &[&str]) -> Value {
        let mut full = args.to_vec();
        full.push("--json");
        serde_json::from_str(&self.ok(&full)).expect("json output")
    }

    /// Runs a command that must fail with exit code 1 and every fragment in its message, and
    /// must not change the workstation directory.
    fn fails_with(&self, password: &str, args: &[&str], fragments: &[&str]) -> String {
        let before = snapshot(&self.home);
        let output = self.run_with(password, args);
        let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
        assert_eq!(output.status.code(), Some(1), "rotor {args:?}: {stderr}");
        for fragment in fragments {
            assert!(
                stderr.contains(fragment),
                "rotor {args:?}: expected '{fragment}' in: {stderr}"
            );
        }
        assert!(!stderr.contains("panicked"), "{stderr}");
        assert_unchanged(&before, &self.home, &format!("rotor {args:?}"));
        stderr
    }

    fn fails(&self, args: &[&str], fragments: &[&str]) -> String {
        self.fails_with(PASSWORD, args, fragments)
    }

    fn sigkey(&self, number: u32) -> PathBuf {
        self.home.join("sigkeys").join(format!("{number}.sigkey"))
    }

    fn part(&self, number: u32) -> PathBuf {
        self.home.join("parts").join(format!("{number}.part"))
    }
}

// ---------------------------------------------------------------------------------------------
// Unit state files
// ---------------------------------------------------------------------------------------------

#[test]
fn corrupt_unit_state_is_refused_and_left_untouched() {
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("unit");
    // A unit with some state: one admin installed.
    let unit = start_unit(&dir);
    let id = unit.info.unit;
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let status_before = runtime.block_on(async {
        let client = unit.client();
        let status = client.status(None).await.unwrap();
        let admin = SigningKey::generate(SigAlg::P256Sha256);
        let command = UnitCommand {
            unit: id,
            counter: status.counter + 1,
            action: Action::AddAdmin {
                name: "alice".to_owned(),
                public_key: admin.public_key(),
            },
        };
        let secret = unit.info.enrollment_secret.as_ref().unwrap();
        let proof = command.enrollment_proof(&EnrollmentSecret::from_hex(secret).unwrap());
        let mut signed = command.sign(&[]);
        signed.enrollment = Some(proof);
        client.command(&status.identity, signed).await.unwrap().1
    });
    unit.stop();

    let state = dir.join("state.sealed");
    let key = dir.join("seal.key");
    let good_state = std::fs::read(&state).unwrap();
    let good_key = std::fs::read(&key).unwrap();
    let magic_len = b"rotor-unit-state-v3\n".len();
    assert!(good_state.len() > magic_len + 12 + 16);
    let corrupt_message = "is corrupt, truncated or sealed under another key";

    // Each broken directory: serve refuses, names the file, and leaves every byte in place.
    let check = |what: &str, fragments: &[&str]| {
        let before = snapshot(&dir);
        let stderr = serve_refused(&dir);
        for fragment in fragments {
            assert!(
                stderr.contains(fragment),
                "{what}: expected '{fragment}' in: {stderr}"
            );
        }
        assert_unchanged(&before, &dir, what);
    };
    let restore = || {
        std::fs::write(&state, &good_state).unwrap();
        std::fs::write(&key, &good_key).unwrap();
    };
    let state_name = state.display().to_string();
    let key_name = key.display().to_string();

    for len in [
        0,
        1,
        magic_len - 1,
        magic_len,
        magic_len + 12,
        magic_len + 12 + 15,
        good_state.len() / 2,
        good_state.len() - 1,
    ] {
        std::fs::write(&state, &good_state[..len]).unwrap();
        check(
            &format!("state truncated to {len} bytes"),
            &[&state_name, corrupt_message],
        );
    }
    restore();

    for at in [
        0,
        magic_len - 1,
        magic_len,
        magic_len + 11,
        magic_len + 12,
        good_state.len() / 2,
        good_state.len() - 1,
    ] {
        let mut flipped = good_state.clone();
        flipped[at] ^= 0x40;
        std::fs::write(&state, &flipped).unwrap();
        check(
            &format!("state byte {at} flipped"),
            &[&state_name, corrupt_message],
        );
    }
    // Extra bytes after a valid state break the authentication tag too.
    let mut longer = good_state.clone();
    longer.extend_from_slice(b"junk");
    std::fs::write(&state, &longer).unwrap();
    check("state with trailing bytes", &[&state_name, corrupt_message]);
    restore();

    std::fs::remove_file(&key).unwrap();
    check(
        "seal.key deleted",
        &[&key_name, "is missing but the unit state exists"],
    );
    assert!(!key.exists(), "a new sealing key was made beside old state");
    restore();

    for bad in [&[][..], &[7u8; 5][..], &[7u8; 31][..], &[7u8; 33][..]] {
        std::fs::write(&key, bad).unwrap();
        check(
            &format!("seal.key of {} bytes", bad.len()),
            &[&key_name, "is not a 32-byte sealing key"],
        );
    }
    std::fs::write(&key, Secret32::random().expose()).unwrap();
    check("another sealing key", &[&state_name, corrupt_message]);
    restore();

    // The restored directory is the same unit, with the same state.
    let unit = start_unit(&dir);
    assert_eq!(unit.info.unit, id);
    let status_after = runtime.block_on(async {
        unit.client()
            .status(Some(&status_before.identity))
            .await
            .unwrap()
    });
    assert_eq!(status_after, status_before);
    unit.stop();
}

#[test]
fn a_second_unit_on_a_served_directory_is_refused() {
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("unit");
    let unit = start_unit(&dir);
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let before = runtime.block_on(async { unit.client().status(None).await.unwrap() });
    let files = snapshot(&dir);
    let stderr = serve_refused(&dir);
    assert!(
        stderr.contains("in use by another unit process"),
        "{stderr}"
    );
    assert!(stderr.contains(&dir.display().to_string()), "{stderr}");
    assert_unchanged(&files, &dir, "second unit serve");
    // The first one still serves, unchanged.
    let after =
        runtime.block_on(async { unit.client().status(Some(&before.identity)).await.unwrap() });
    assert_eq!(after, before);
    unit.stop();
}

// ---------------------------------------------------------------------------------------------
// Workstation files
// ---------------------------------------------------------------------------------------------

#[test]
fn corrupt_sigkey_files_are_listed_as_unreadable_and_refused() {
    let root = tempfile::tempdir().unwrap();
    let ws = Ws {
        home: root.path().join("home"),
        endpoint: None,
        api_key: None,
        ca_cert: None,
    };
    for i in 1..=8 {
        ws.ok(&["sigkeys", "new", "--name", &format!("key {i}")]);
    }
    ws.ok(&["sigkeys", "use", "1"]);

    // 2..=6 are unreadable; 7 and 8 read (their damage only shows when unlocked).
    let length = std::fs::read(ws.sigkey(2)).unwrap().len();
    truncate(&ws.sigkey(2), length / 2);
    truncate(&ws.sigkey(3), 0);
    std::fs::write(ws.sigkey(4), b"{ this is not json").unwrap();
    edit_json(&ws.sigkey(5), |v| {
        v["protection"]["sealed"] = json!("zz not hex");
    });
    edit_json(&ws.sigkey(6), |v| {
        let sec1 = v["public_key"]["sec1"].as_str().unwrap().to_owned();
        v["public_key"]["sec1"] = json!(format!("04{}", "0".repeat(sec1.len() - 2)));
    });
    edit_json(&ws.sigkey(7), |v| {
        let sealed = v["protection"]["sealed"].as_str().unwrap().to_owned();
        v["protection"]["sealed"] = json!(flip_hex(&sealed, sealed.len() / 2));
    });
    edit_json(&ws.sigkey(8), |v| v["name"] = json!("mallory"));

    let listed = ws.json(&["sigkeys"]);
    let entries = listed["sigkeys"].as_array().unwrap();
    assert_eq!(entries.len(), 8, "{listed}");
    for entry in entries {
        let number = entry["number"].as_u64().unwrap();
        if (2..=6).contains(&number) {
            let error = entry["error"].as_str().unwrap_or_default();
            assert!(
                error.contains(&format!("{number}.sigkey is not a valid rotor file")),
                "sigkey {number}: {entry}"
            );
            assert!(error.contains("restore it from your backup"), "{entry}");
        } else {
            assert!(entry.get("error").is_none(), "sigkey {number}: {entry}");
        }
    }
    assert_eq!(entries[6]["name"], "key 7");
    assert_eq!(entries[7]["name"], "mallory");
    let text = ws.ok(&["sigkeys"]);
    assert_eq!(text.matches("(unreadable:").count(), 5, "{text}");

    for number in 2..=6 {
        let n = number.to_string();
        ws.fails(
            &["sigkeys", "use", &n],
            &[&format!("{number}.sigkey is not a valid rotor file")],
        );
        // A good key beside a bad one: the selection stays what it was.
        ws.fails(
            &["sigkeys", "use", "1", &n],
            &[&format!("{number}.sigkey is not a valid rotor file")],
        );
    }
    ws.fails(
        &["sigkeys", "use", "42"],
        &["there is no signature key number 42"],
    );
    assert_eq!(
        ws.json(&["sigkeys"])["sigkeys"][0]["selected"],
        true,
        "the selection changed"
    );

    // Names: 1 to 30 printable characters; nothing is written otherwise.
    let long = "x".repeat(31);
    for name in [long.as_str(), "", "tab\there"] {
        ws.fails(
            &["sigkeys", "new", "--name", name],
            &["an admin name has 1 to 30 printable characters"],
        );
    }
    ws.fails(
        &["sigkeys", "new", "--name", "ok", "--curve", "p384"],
        &["unknown curve 'p384'"],
    );
    ws.fails_with(
        "short",
        &["sigkeys", "new", "--name", "ok"],
        &["at least 8 characters"],
    );
    ws.ok(&["sigkeys", "new", "--name", &"y".repeat(30)]);

    // A corrupt settings file is named, not ignored.
    std::fs::write(ws.home.join("settings.json"), b"{\"selected_sigkeys\": [1,").unwrap();
    ws.fails(&["sigkeys"], &["settings.json is not a valid rotor file"]);
}

#[test]
fn bad_part_values_are_refused_and_corrupt_parts_listed_as_unreadable() {
    let root = tempfile::tempdir().unwrap();
    let ws = Ws {
        home: root.path().join("home"),
        endpoint: None,
        api_key: None,
        ca_cert: None,
    };
    let hex64 = "ab".repeat(32);
    for value in [
        "zz".repeat(32),
        "ab".repeat(31),
        "ab".repeat(33),
        format!("{}g", &hex64[..63]),
        "abc".to_owned(),
        String::new(),
    ] {
        ws.fails(
            &["parts", "new", "--value", &value],
            &["--value must be 64 hex characters (32 bytes)"],
        );
    }
    let created = ws.json(&["parts", "new", "--value", &hex64]);
    let expected = Secret32::from_bytes([0xab; 32]).vp();
    assert_eq!(created["vp"], expected.to_hex());
    for _ in 0..4 {
        ws.ok(&["parts", "new", "--description", "custodian"]);
    }
    truncate(&ws.part(2), 10);
    std::fs::write(ws.part(3), b"[]").unwrap();
    edit_json(&ws.part(4), |v| v["vp"] = json!("not a vp"));
    edit_json(&ws.part(5), |v| v["description"] = json!("someone else"));

    let listed = ws.json(&["parts"]);
    let entries = listed["parts"].as_array().unwrap();
    assert_eq!(entries.len(), 5, "{listed}");
    for entry in entries {
        let number = entry["number"].as_u64().unwrap();
        if (2..=4).contains(&number) {
            assert!(
                entry["error"]
                    .as_str()
                    .unwrap_or_default()
                    .contains(&format!("{number}.part is not a valid rotor file")),
                "part {number}: {entry}"
            );
        } else {
            assert!(entry.get("error").is_none(), "part {number}: {entry}");
        }
    }
    assert_eq!(entries[0]["vp"], expected.to_hex());
    let text = ws.ok(&["parts"]);
    assert_eq!(text.matches("(unreadable:").count(), 3, "{text}");
    ws.fails(
        &["parts", "rm", "9", "--yes"],
        &["there is no key part number 9"],
    );
}

/// Product bug (reported): `Home::next_path` computes the next number as `last + 1`, which
/// overflows when a file is numbered `u32::MAX`, so `rotor sigkeys new` / `rotor parts new` panic
/// ("attempt to add with overflow", crates/rotor-cli/src/workstation.rs `next_path`). A stray
/// file in the workstation directory must give an error (or a free number), never a panic.
#[test]
fn a_file_numbered_at_the_limit_gives_an_error_not_a_panic() {
    let root = tempfile::tempdir().unwrap();
    let ws = Ws {
        home: root.path().join("home"),
        endpoint: None,
        api_key: None,
        ca_cert: None,
    };
    ws.ok(&["sigkeys", "new", "--name", "alice"]);
    ws.ok(&["parts", "new"]);
    let top = u32::MAX.to_string();
    std::fs::copy(ws.sigkey(1), ws.sigkey(u32::MAX)).unwrap();
    std::fs::copy(ws.part(1), ws.part(u32::MAX)).unwrap();
    // Listing copes.
    assert_eq!(
        ws.json(&["sigkeys"])["sigkeys"].as_array().unwrap().len(),
        2
    );
    assert_eq!(ws.json(&["parts"])["parts"].as_array().unwrap().len(), 2);
    for args in [
        &["sigkeys", "new", "--name", "bob"][..],
        &["parts", "new"][..],
    ] {
        let before = snapshot(&ws.home);
        let output = ws.run_with(PASSWORD, args);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(
            !stderr.contains("panicked"),
            "rotor {args:?} panicked on a file numbered {top}:\n{stderr}"
        );
        match output.status.code() {
            Some(0) => {}
            Some(1) => {
                assert!(stderr.contains("error: "), "{stderr}");
                assert_unchanged(&before, &ws.home, &format!("rotor {args:?}"));
            }
            other => panic!("rotor {args:?} exited with {other:?}: {stderr}"),
        }
    }
}

/// Product bug (reported): a sigkey or part file whose public fields or sealed bytes were changed
/// is reported as "wrong password for FILE" (`FileError::WrongPassword`, whose own doc comment
/// says it also means tampering) even when the password is right, so the user hunts for a
/// password instead of restoring the file. The message must say the file may have been changed.
#[test]
fn a_modified_file_is_not_blamed_only_on_the_password() {
    let root = tempfile::tempdir().unwrap();
    let ws = Ws {
        home: root.path().join("home"),
        endpoint: Some("http://127.0.0.1:9".to_owned()),
        api_key: None,
        ca_cert: None,
    };
    ws.ok(&["parts", "new", "--description", "custodian A"]);
    ws.ok(&["parts", "new", "--description", "custodian B"]);
    // A custodian "fixes" the description by hand; the password is still the right one (part 1
    // opens with it).
    edit_json(&ws.part(2), |v| v["description"] = json!("custodian C"));
    let stderr = ws.fails(&["mk", "load", "1", "2"], &["2.part"]);
    let lower = stderr.to_lowercase();
    assert!(
        [
            "changed", "modified", "tampered", "damaged", "corrupt", "altered"
        ]
        .iter()
        .any(|word| lower.contains(word)),
        "a modified file is reported as only a wrong password: {stderr}"
    );
}

/// Sends nothing but reads: the unit's verified status through the service.
fn relay_status(
    runtime: &tokio::runtime::Runtime,
    dev: &Dev,
    pinned: Option<&PublicKey>,
) -> UnitStatus {
    runtime.block_on(async { dev.relay().status(pinned).await.unwrap() })
}

#[test]
fn wrong_passwords_and_corrupt_files_change_nothing_on_a_unit() {
    let root = tempfile::tempdir().unwrap();
    let dev = start_dev(root.path());
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let ws = Ws {
        home: root.path().join("home"),
        endpoint: Some(dev.info.endpoint.clone()),
        api_key: Some(dev.info.api_key.clone()),
        ca_cert: Some(dev.info.ca_cert.clone()),
    };
    ws.ok(&["units", "select", "--all"]);
    ws.ok(&["sigkeys", "new", "--name", "alice"]);
    ws.ok(&["sigkeys", "new", "--name", "bob"]);
    // The first admin with the unit's enrollment secret, the second signed by the first.
    ws.ok(&["sigkeys", "use", "1"]);
    let secrets = dev.info.enrollment_secrets();
    ws.ok(&["admins", "add", "1", "2", "--enrollment-secret", &secrets]);
    ws.ok(&["thresholds", "set", "--signature", "1", "--revocation", "1"]);
    for _ in 0..5 {
        ws.ok(&["parts", "new"]);
    }
    let before = relay_status(&runtime, &dev, None);
    assert!(!before.imprint);
    assert_eq!(before.new.state, NewState::Empty);
    assert!(before.importer.is_empty());
    let unchanged = |what: &str| {
        let now = relay_status(&runtime, &dev, Some(&before.identity));
        assert_eq!(now, before, "{what} changed the unit");
    };

    // A wrong password opens no part; the unit is not even asked for an importer key.
    ws.fails_with(
        "not the password",
        &["mk", "load", "1", "2"],
        &["wrong password for", "1.part"],
    );
    unchanged("a wrong part password");

    // Damaged parts: the tag no longer verifies, or the file no longer parses.
    edit_json(&ws.part(3), |v| {
        let sealed = v["protection"]["sealed"].as_str().unwrap().to_owned();
        v["protection"]["sealed"] = json!(flip_hex(&sealed, 3));
    });
    edit_json(&ws.part(4), |v| v["description"] = json!("relabelled"));
    truncate(&ws.part(5), 40);
    ws.fails(&["mk", "load", "1", "3"], &["3.part"]);
    ws.fails(&["mk", "load", "1", "4"], &["4.part"]);
    ws.fails(
        &["mk", "load", "1", "5"],
        &["5.part is not a valid rotor file"],
    );
    unchanged("a damaged part");

    // A wrong password for the signature key: nothing is signed, nothing sent.
    ws.fails_with(
        "not the password",
        &["mk", "clear-new", "--yes"],
        &["wrong password for", "1.sigkey"],
    );
    unchanged("a wrong signature key password");

    // A damaged signature key of an installed admin cannot sign.
    edit_json(&ws.sigkey(2), |v| v["name"] = json!("bob the impostor"));
    ws.ok(&["sigkeys", "use", "2"]);
    ws.fails(&["mk", "clear-new", "--yes"], &["2.sigkey"]);
    edit_json(&ws.sigkey(2), |v| {
        v["name"] = json!("bob");
        let sealed = v["protection"]["sealed"].as_str().unwrap().to_owned();
        v["protection"]["sealed"] = json!(flip_hex(&sealed, sealed.len() - 1));
    });
    ws.fails(&["mk", "clear-new", "--yes"], &["2.sigkey"]);
    edit_json(&ws.sigkey(2), |v| v["protection"]["kdf"] = json!("scrypt"));
    ws.fails(
        &["mk", "clear-new", "--yes"],
        &[
            "2.sigkey is not a valid rotor file",
            "unknown key derivation 'scrypt'",
        ],
    );
    edit_json(&ws.sigkey(2), |v| {
        v["protection"]["kdf"] = json!("argon2id");
        v["protection"]["m_cost"] = json!(u32::MAX);
    });
    ws.fails(
        &["mk", "clear-new", "--yes"],
        &[
            "2.sigkey is not a valid rotor file",
            "unusable key derivation parameters",
        ],
    );
    edit_json(&ws.sigkey(2), |v| {
        v["protection"]["m_cost"] = json!(19 * 1024);
        v["protection"]["salt"] = json!("");
    });
    ws.fails(
        &["mk", "clear-new", "--yes"],
        &[
            "2.sigkey is not a valid rotor file",
            "unusable key derivation parameters",
        ],
    );
    unchanged("a damaged signature key");

    // With the right password and intact files the same load works: the refusals above were
    // the inputs, not the setup.
    ws.ok(&["sigkeys", "use", "1"]);
    ws.ok(&["mk", "load", "1", "2"]);
    let after = relay_status(&runtime, &dev, Some(&before.identity));
    assert_eq!(after.new.state, NewState::FullUncommitted);
    let part = |n: u32| {
        let path = ws.part(n);
        rotor_cli::workstation::PartFile::read(&path)
            .unwrap()
            .unlock(&path, PASSWORD)
            .unwrap()
    };
    assert_eq!(after.new.vp, combine_parts(&[part(1), part(2)]).vp());
}

// ---------------------------------------------------------------------------------------------
// Malformed HTTP requests
// ---------------------------------------------------------------------------------------------

/// A request body that would be accepted: an imprint-mode "add admin" for the unit's next
/// counter, so that any leniency towards a damaged variant of it shows as a changed unit.
fn valid_request(status: &UnitStatus, secret: &EnrollmentSecret) -> Value {
    let admin = SigningKey::generate(SigAlg::P256Sha256);
    let command = UnitCommand {
        unit: status.unit,
        counter: status.counter + 1,
        action: Action::AddAdmin {
            name: "would be added".to_owned(),
            public_key: admin.public_key(),
        },
    };
    let proof = command.enrollment_proof(secret);
    let mut signed = command.sign(&[]);
    signed.enrollment = Some(proof);
    serde_json::to_value(CommandRequest {
        challenge: vec![0x5a; 16],
        signed,
    })
    .unwrap()
}

/// Malformed command bodies and the fragment each rejection must contain.
fn bad_command_bodies(
    status: &UnitStatus,
    secret: &EnrollmentSecret,
) -> Vec<(String, Vec<u8>, &'static str)> {
    let base = valid_request(status, secret);
    let edited = |edit: &dyn Fn(&mut Value)| {
        let mut value = base.clone();
        edit(&mut value);
        serde_json::to_vec(&value).unwrap()
    };
    vec![
        (
            "not JSON".into(),
            b"this is not json".to_vec(),
            "command body",
        ),
        ("empty body".into(), Vec::new(), "command body"),
        ("JSON null".into(), b"null".to_vec(), "command body"),
        ("JSON array".into(), b"[]".to_vec(), "command body"),
        (
            "truncated JSON".into(),
            serde_json::to_vec(&base).unwrap()[..40].to_vec(),
            "command body",
        ),
        (
            "not UTF-8".into(),
            vec![0xff, 0xfe, 0x7b, 0x00],
            "command body",
        ),
        (
            "deeply nested".into(),
            "[".repeat(100_000).into_bytes(),
            "command body",
        ),
        (
            "unknown top-level field".into(),
            edited(&|v| v["extra"] = json!(1)),
            "unknown field `extra`",
        ),
        (
            "unknown field in signed".into(),
            edited(&|v| v["signed"]["extra"] = json!(true)),
            "unknown field `extra`",
        ),
        (
            "unknown field in command".into(),
            edited(&|v| v["signed"]["command"]["priority"] = json!("high")),
            "unknown field `priority`",
        ),
        (
            "unknown field in action".into(),
            edited(&|v| v["signed"]["command"]["action"]["role"] = json!("root")),
            "unknown field `role`",
        ),
        (
            "unknown field in a signature".into(),
            edited(&|v| {
                v["signed"]["signatures"] =
                    json!([{"ski": "00".repeat(32), "signature": "00", "note": 1}]);
            }),
            "unknown field `note`",
        ),
        (
            "unknown action".into(),
            edited(&|v| v["signed"]["command"]["action"]["action"] = json!("explode")),
            "unknown variant `explode`",
        ),
        (
            "missing challenge".into(),
            edited(&|v| {
                v.as_object_mut().unwrap().remove("challenge");
            }),
            "missing field `challenge`",
        ),
        (
            "missing signed command".into(),
            edited(&|v| {
                v.as_object_mut().unwrap().remove("signed");
            }),
            "missing field `signed`",
        ),
        (
            "non-hex challenge".into(),
            edited(&|v| v["challenge"] = json!("zz")),
            "command body",
        ),
        (
            "odd-length challenge".into(),
            edited(&|v| v["challenge"] = json!("abc")),
            "command body",
        ),
        (
            "numeric challenge".into(),
            edited(&|v| v["challenge"] = json!(5)),
            "command body",
        ),
        (
            "empty challenge".into(),
            edited(&|v| v["challenge"] = json!("")),
            "challenge must be 1 to 64 bytes",
        ),
        (
            "65-byte challenge".into(),
            edited(&|v| v["challenge"] = json!("00".repeat(65))),
            "challenge must be 1 to 64 bytes",
        ),
        (
            "half a megabyte challenge".into(),
            edited(&|v| v["challenge"] = json!("00".repeat(256 * 1024))),
            "challenge must be 1 to 64 bytes",
        ),
        (
            "negative counter".into(),
            edited(&|v| v["signed"]["command"]["counter"] = json!(-1)),
            "command body",
        ),
        (
            "counter beyond u64".into(),
            serde_json::to_vec(&base)
                .map(|bytes| {
                    String::from_utf8(bytes).unwrap().replace(
                        &format!("\"counter\":{}", status.counter + 1),
                        "\"counter\":18446744073709551616",
                    )
                })
                .unwrap()
                .into_bytes(),
            "command body",
        ),
        (
            "unit id not a UUID".into(),
            edited(&|v| v["signed"]["command"]["unit"] = json!("unit-1")),
            "command body",
        ),
        (
            "public key not hex".into(),
            edited(&|v| v["signed"]["command"]["action"]["public_key"]["sec1"] = json!("xyz")),
            "command body",
        ),
        (
            "unknown curve".into(),
            edited(&|v| v["signed"]["command"]["action"]["public_key"]["alg"] = json!("p384")),
            "command body",
        ),
    ]
}

/// Malformed status query strings and the fragment each rejection must contain.
fn bad_status_queries() -> Vec<(String, &'static str)> {
    vec![
        (String::new(), "missing challenge"),
        ("?other=1".into(), "missing challenge"),
        ("?challenge=".into(), "challenge must be 1 to 64 bytes"),
        ("?challenge=zz".into(), "challenge is not hex"),
        ("?challenge=abc".into(), "challenge is not hex"),
        ("?challenge=0%00".into(), "challenge is not hex"),
        ("?challenge=%FF%FE".into(), "challenge is not hex"),
        (
            format!("?challenge={}", "00".repeat(65)),
            "challenge must be 1 to 64 bytes",
        ),
    ]
}

/// Asserts `response` is a unit's signed `bad_request` rejection mentioning `fragment`.
async fn signed_rejection(
    response: reqwest::Response,
    identity: &PublicKey,
    unit: Uuid,
    what: &str,
    fragment: &str,
) {
    let code = response.status().as_u16();
    let body = response.bytes().await.unwrap();
    let text = String::from_utf8_lossy(&body);
    assert_eq!(code, 400, "{what}: {text}");
    let signed: SignedResponse = serde_json::from_slice(&body)
        .unwrap_or_else(|err| panic!("{what}: not a signed unit response ({err}): {text}"));
    let payload = signed
        .verify(identity, unit, &[])
        .unwrap_or_else(|err| panic!("{what}: response does not verify ({err}): {text}"));
    match payload.result {
        UnitResult::Rejected(error) => {
            assert_eq!(error.code, "bad_request", "{what}: {}", error.message);
            assert!(
                error.message.contains(fragment),
                "{what}: expected '{fragment}' in: {}",
                error.message
            );
            assert!(
                error.message.starts_with("malformed request: "),
                "{what}: {}",
                error.message
            );
        }
        other => panic!("{what}: not a rejection: {other:?}"),
    }
}

/// Asserts a 4xx that the service (not a unit) answered with `code`.
async fn service_error(response: reqwest::Response, what: &str, status: u16, code: &str) -> Value {
    let got = response.status().as_u16();
    let text = response.text().await.unwrap();
    assert_eq!(got, status, "{what}: {text}");
    let body: Value = serde_json::from_str(&text)
        .unwrap_or_else(|err| panic!("{what}: not JSON ({err}): {text}"));
    assert_eq!(body["code"], code, "{what}: {text}");
    assert!(
        !body["message"].as_str().unwrap_or_default().is_empty(),
        "{what}: {text}"
    );
    body
}

#[tokio::test(flavor = "multi_thread")]
async fn malformed_requests_to_a_unit_get_signed_bad_request() {
    let root = tempfile::tempdir().unwrap();
    let unit = start_unit(&root.path().join("unit"));
    let client = unit.client();
    let before = client.status(None).await.unwrap();
    assert!(before.imprint);
    let secret = EnrollmentSecret::from_hex(unit.info.enrollment_secret.as_ref().unwrap()).unwrap();
    let http = unit.http();
    let base = unit.base();

    for (what, body, fragment) in bad_command_bodies(&before, &secret) {
        let response = http
            .post(format!("{base}/command"))
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .unwrap();
        signed_rejection(response, &before.identity, before.unit, &what, fragment).await;
    }
    for (query, fragment) in bad_status_queries() {
        let response = http
            .get(format!("{base}/status{query}"))
            .send()
            .await
            .unwrap();
        signed_rejection(
            response,
            &before.identity,
            before.unit,
            &format!("status{query}"),
            fragment,
        )
        .await;
    }

    // A body beyond any sensible size is refused before it is parsed: 413, or the connection
    // is dropped before the upload ends; never a 5xx. (Its own client: a connection the server
    // gave up on must not be reused.)
    let response = unit
        .http()
        .post(format!("{base}/command"))
        .body(vec![b' '; 3 << 20])
        .send()
        .await;
    if let Ok(response) = response {
        assert!(response.status().is_client_error(), "{}", response.status());
    }
    // Wrong method and unknown route: 4xx as well.
    let response = http.get(format!("{base}/command")).send().await.unwrap();
    assert!(response.status().is_client_error(), "{}", response.status());
    let response = http.get(format!("{base}/zeroize")).send().await.unwrap();
    assert!(response.status().is_client_error(), "{}", response.status());

    // Nothing changed, and the same valid request is still accepted.
    let after = client.status(Some(&before.identity)).await.unwrap();
    assert_eq!(after, before, "a malformed request changed the unit");
    let response = http
        .post(format!("{base}/command"))
        .json(&valid_request(&before, &secret))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 200);
    assert_eq!(
        client.status(Some(&before.identity)).await.unwrap().counter,
        before.counter + 1
    );
    unit.stop();
}

#[tokio::test(flavor = "multi_thread")]
async fn malformed_requests_to_the_service_get_4xx_and_change_nothing() {
    let root = tempfile::tempdir().unwrap();
    let dev = tokio::task::block_in_place(|| start_dev(root.path()));
    let relay = dev.relay();
    let before = relay.status(None).await.unwrap();
    let secret = EnrollmentSecret::from_hex(&dev.info.enrollment_secrets()).unwrap();
    let http = dev.http();
    let endpoint = &dev.info.endpoint;
    let instance = dev.info.instance;
    let unit = dev.info.units[0].id;
    let base = dev.unit_base();

    // Unknown or malformed ids: the service's own 404, for status and command alike.
    let stranger = Uuid::new_v4();
    // An instance the token does not cover is refused before anything else, so a caller cannot
    // learn which instances exist.
    for request in [
        http.get(format!(
            "{endpoint}/v1/instances/{stranger}/units/{unit}/status?challenge=00"
        )),
        http.post(format!(
            "{endpoint}/v1/instances/{stranger}/units/{unit}/command"
        ))
        .json(&valid_request(&before, &secret)),
    ] {
        let response = request.send().await.unwrap();
        assert_eq!(response.status().as_u16(), 403);
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["errorCode"], "instance_not_allowed", "{body}");
    }
    for (what, path, message) in [
        (
            "unknown unit",
            format!("{instance}/units/{stranger}"),
            "no unit",
        ),
        (
            "unit id not a UUID",
            format!("{instance}/units/not-a-uuid"),
            "no unit not-a-uuid",
        ),
        (
            "instance id not a UUID",
            format!("instance-1/units/{unit}"),
            "no instance instance-1",
        ),
        (
            "unit id a UUID prefix",
            format!("{instance}/units/{}", &unit.to_string()[..8]),
            "no unit",
        ),
    ] {
        let url = format!("{endpoint}/v1/instances/{path}");
        let response = http
            .get(format!("{url}/status?challenge=00"))
            .send()
            .await
            .unwrap();
        let body = service_error(response, what, 404, "not_found").await;
        assert!(
            body["message"].as_str().unwrap().contains(message),
            "{what}: {body}"
        );
        let response = http
            .post(format!("{url}/command"))
            .json(&valid_request(&before, &secret))
            .send()
            .await
            .unwrap();
        service_error(response, what, 404, "not_found").await;
    }

    // Malformed bodies and queries are relayed and refused by the unit, signed.
    for (what, body, fragment) in bad_command_bodies(&before, &secret) {
        let response = http
            .post(format!("{base}/command"))
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .unwrap();
        signed_rejection(
            response,
            &before.identity,
            unit,
            &format!("relayed {what}"),
            fragment,
        )
        .await;
    }
    for (query, fragment) in bad_status_queries() {
        let response = http
            .get(format!("{base}/status{query}"))
            .send()
            .await
            .unwrap();
        signed_rejection(
            response,
            &before.identity,
            unit,
            &format!("relayed status{query}"),
            fragment,
        )
        .await;
    }

    // Bodies: exactly 1 MiB is relayed (and refused by the unit); one byte more is not relayed.
    // (Their own client: a connection the server gave up on must not be reused.)
    let max = rotor_server::api::MAX_BODY;
    let http = dev.http();
    let response = http
        .post(format!("{base}/command"))
        .body(vec![b' '; max])
        .send()
        .await
        .unwrap();
    signed_rejection(
        response,
        &before.identity,
        unit,
        "1 MiB of spaces",
        "command body",
    )
    .await;
    let response = http
        .post(format!("{base}/command"))
        .body(vec![b'{'; max + 1])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 413, "oversized body");
    let response = http
        .post(format!("{base}/command"))
        .body(vec![b'x'; 8 * max])
        .send()
        .await;
    // The service may answer 413 or drop the connection before the upload ends; never a 5xx.
    if let Ok(response) = response {
        assert!(response.status().is_client_error(), "{}", response.status());
    }
    // The same without a length up front: chunked, and a body cut off mid-way.
    let address = endpoint.trim_start_matches("https://").to_owned();
    let path = base.trim_start_matches(endpoint.as_str()).to_owned();
    let head = raw_http(
        &dev.info.ca_cert,
        &address,
        format!(
            "POST {path}/command HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
        )
        .into_bytes(),
        |stream| chunked_flood(stream, 2 * max),
    )
    .await;
    assert!(
        head.starts_with("HTTP/1.1 413"),
        "chunked oversized body: {head}"
    );
    let head = raw_http(
        &dev.info.ca_cert,
        &address,
        format!(
            "POST {path}/command HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\nConnection: close\r\n\r\n{{\"challenge\""
        )
        .into_bytes(),
        |_| Box::pin(async {}),
    )
    .await;
    assert!(!head.starts_with("HTTP/1.1 5"), "cut-off body: {head}");

    // After all that the unit is unchanged and the service still relays a valid command.
    let after = relay.status(Some(&before.identity)).await.unwrap();
    assert_eq!(after, before, "a malformed request changed the unit");
    let response = dev
        .http()
        .post(format!("{base}/command"))
        .json(&valid_request(&before, &secret))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 200);
    assert_eq!(
        relay.status(Some(&before.identity)).await.unwrap().counter,
        before.counter + 1
    );
    let log = std::fs::read_to_string(root.path().join("dev.log")).unwrap_or_default();
    assert!(!log.contains("panicked"), "{log}");
    let unit_log = std::fs::read_to_string(root.path().join("dev/units/operational-0/unit.log"))
        .unwrap_or_default();
    assert!(!unit_log.contains("panicked"), "{unit_log}");
}

type Writer<'a> = std::pin::Pin<Box<dyn Future<Output = ()> + Send + 'a>>;
/// A TLS connection to the service, as a client with the dev CA opens it.
type Stream = tokio_rustls::client::TlsStream<tokio::net::TcpStream>;

/// Writes `head`, then whatever `rest` writes, half-closes, and returns the response's first
/// line (empty if the server closed without answering).
async fn raw_http(
    ca: &Path,
    address: &str,
    head: Vec<u8>,
    rest: impl for<'a> FnOnce(&'a mut Stream) -> Writer<'a>,
) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let config = rotor_tls::config::client_config(&rotor_tls::ClientTls::trusting(ca)).unwrap();
    let connector = tokio_rustls::TlsConnector::from(std::sync::Arc::new(config));
    let tcp = tokio::net::TcpStream::connect(address).await.unwrap();
    let host = address.rsplit_once(':').unwrap().0.to_owned();
    let name = rustls::pki_types::ServerName::try_from(host).unwrap();
    let mut stream = connector.connect(name, tcp).await.unwrap();
    stream.write_all(&head).await.unwrap();
    rest(&mut stream).await;
    let _ = stream.shutdown().await;
    let mut response = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut response)).await;
    String::from_utf8_lossy(&response)
        .lines()
        .next()
        .unwrap_or_default()
        .to_owned()
}

/// Sends `total` bytes as 64 KiB chunks, stopping quietly if the server hangs up.
fn chunked_flood(stream: &mut Stream, total: usize) -> Writer<'_> {
    Box::pin(async move {
        use tokio::io::AsyncWriteExt;
        let chunk = vec![b'a'; 64 * 1024];
        let mut sent = 0;
        while sent < total {
            let mut frame = format!("{:x}\r\n", chunk.len()).into_bytes();
            frame.extend_from_slice(&chunk);
            frame.extend_from_slice(b"\r\n");
            if stream.write_all(&frame).await.is_err() {
                return;
            }
            sent += chunk.len();
        }
        let _ = stream.write_all(b"0\r\n\r\n").await;
    })
}

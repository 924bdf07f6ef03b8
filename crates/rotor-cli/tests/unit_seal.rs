//! A unit's secrets at rest and its first admin, through real `rotor unit serve` processes:
//!
//! - a passphrase unit prints its fingerprint, opens only with its passphrase (a copy of its
//!   directory does not open without it), and `rotor unit id` shows it offline;
//! - a token unit (SoftHSM2) opens only with its token and PIN;
//! - a directory written by the code before sealing sources (`seal.key` beside a version 2
//!   state, tests/fixtures/unit-v2) is converted by `rotor unit reseal` and keeps its unit;
//! - a fresh unit refuses its first admin without its enrollment secret, through `rotor dev`.

// Test helpers may panic: a failed expectation is the test failing. Spawned processes are
// killed and waited for in `Drop`.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::zombie_processes
)]

mod support;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use rotor_unit::client::UnitClient;
use rotor_unit::daemon::ServeInfo;
use rotor_unit::wire::{EnrollmentSecret, Fingerprint, UnitStatus};
use serde_json::Value;
use support::Workstation;

const SOFTHSM_MODULE: &str = "/usr/lib/softhsm/libsofthsm2.so";
const START_TIMEOUT: Duration = Duration::from_secs(30);
const PASSPHRASE: &str = "unit passphrase for the tests";

fn rotor() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_rotor"));
    command
        .env_remove("ROTOR_UNIT_PASSPHRASE")
        .env_remove("ROTOR_UNIT_NEW_PASSPHRASE")
        .env_remove("ROTOR_PIN")
        .env_remove("ROTOR_PKCS11_MODULE")
        .stdin(Stdio::null());
    command
}

/// A running `rotor unit serve`, killed on drop.
struct Served {
    child: Child,
    info: ServeInfo,
    log: PathBuf,
    pki: support::TestPki,
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Served {
    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    async fn status(&self) -> UnitStatus {
        UnitClient::new(
            self.pki.service_http(),
            format!("https://{}/v1", self.info.address),
            self.info.unit,
        )
        .status(None)
        .await
        .unwrap()
    }
}

/// The deployment CA beside a unit directory (created on first use).
fn pki_beside(dir: &Path) -> support::TestPki {
    support::TestPki::open_or_create(&dir.with_extension("pki"))
}

/// `rotor unit serve --dir DIR ARGS` with `env`; waits for its info file.
fn serve(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Served {
    let info_file = dir.with_extension("info.json");
    let log = dir.with_extension("log");
    let _ = std::fs::remove_file(&info_file);
    let mut command = rotor();
    command
        .args(["unit", "serve", "--listen", "127.0.0.1:0", "--dir"])
        .arg(dir)
        .arg("--info-file")
        .arg(&info_file)
        .args(pki_beside(dir).unit_args("unit"))
        .args(args)
        .envs(env.iter().copied())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap());
    let child = command.spawn().expect("start rotor unit serve");
    let mut served = Served {
        child,
        info: ServeInfo {
            unit: uuid::Uuid::nil(),
            kind: rotor_unit::wire::UnitKind::Operational,
            address: "127.0.0.1:9".parse().unwrap(),
            fingerprint: Fingerprint::from_hex(&"00".repeat(32)).unwrap(),
            enrollment_secret: None,
        },
        log,
        pki: pki_beside(dir),
    };
    let deadline = Instant::now() + START_TIMEOUT;
    loop {
        if let Ok(text) = std::fs::read_to_string(&info_file)
            && let Ok(info) = serde_json::from_str::<ServeInfo>(&text)
        {
            served.info = info;
            return served;
        }
        if let Ok(Some(status)) = served.child.try_wait() {
            panic!("the unit exited ({status}): {}", served.log());
        }
        assert!(Instant::now() < deadline, "the unit did not start in time");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// `rotor unit serve` that must refuse to start: exit code 1, its stderr contains `message`,
/// and no file of `dir` changed.
fn refused(dir: &Path, args: &[&str], env: &[(&str, &str)], message: &str) {
    let before = snapshot(dir);
    let output = rotor()
        .args(["unit", "serve", "--listen", "127.0.0.1:0", "--dir"])
        .arg(dir)
        .args(pki_beside(dir).unit_args("unit"))
        .args(args)
        .envs(env.iter().copied())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains(message),
        "expected '{message}' in: {stderr}"
    );
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert_eq!(
        snapshot(dir),
        before,
        "a refused start changed {}",
        dir.display()
    );
}

/// The files of `dir` and their bytes, but the (empty) lock file a start may create.
fn snapshot(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut files: Vec<(String, Vec<u8>)> = std::fs::read_dir(dir)
        .unwrap()
        .filter(|entry| entry.as_ref().unwrap().file_name() != "lock")
        .map(|entry| {
            let path = entry.unwrap().path();
            (
                path.file_name().unwrap().to_string_lossy().into_owned(),
                std::fs::read(&path).unwrap(),
            )
        })
        .collect();
    files.sort();
    files
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), to.join(entry.file_name())).unwrap();
    }
}

fn run(args: &[&str], env: &[(&str, &str)]) -> Output {
    rotor()
        .args(args)
        .envs(env.iter().copied())
        .output()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_passphrase_unit_opens_only_with_its_passphrase_and_shows_its_identity_offline() {
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("unit");
    let with_passphrase = [("ROTOR_UNIT_PASSPHRASE", PASSPHRASE)];
    let unit = serve(&dir, &["--recovery"], &with_passphrase);
    let status = unit.status().await;
    assert_eq!(unit.info.fingerprint, Fingerprint::of(&status.identity));
    let log = unit.log();
    assert!(
        log.contains(&format!("identity fingerprint: {}", unit.info.fingerprint)),
        "{log}"
    );
    let secret = unit.info.enrollment_secret.clone().unwrap();
    assert!(log.contains(secret.as_str()), "{log}");
    assert_eq!(
        status.enrollment_id,
        Some(EnrollmentSecret::from_hex(&secret).unwrap().id())
    );
    assert!(!dir.join("seal.key").exists());
    let identity = unit.info.clone();
    drop(unit);

    // Offline, without the passphrase.
    let shown = run(&["unit", "id", "--dir", dir.to_str().unwrap()], &[]);
    assert!(shown.status.success());
    let text = String::from_utf8_lossy(&shown.stdout);
    assert!(text.contains(&identity.unit.to_string()), "{text}");
    assert!(text.contains("recovery"), "{text}");
    assert!(text.contains(&identity.fingerprint.to_hex()), "{text}");
    let json = run(
        &["unit", "id", "--json", "--dir", dir.to_str().unwrap()],
        &[],
    );
    let json: Value = serde_json::from_slice(&json.stdout).unwrap();
    assert_eq!(json["fingerprint"], identity.fingerprint.to_hex());
    assert_eq!(json["unit"], identity.unit.to_string());

    // A wrong passphrase, none at all, or the file source: refused, nothing changed.
    refused(
        &dir,
        &["--recovery"],
        &[("ROTOR_UNIT_PASSPHRASE", "not the unit passphrase")],
        "the passphrase does not open this unit's state",
    );
    refused(&dir, &["--recovery"], &[], "set ROTOR_UNIT_PASSPHRASE");
    refused(
        &dir,
        &["--recovery", "--seal", "file"],
        &[],
        "sealed by a passphrase key, not a file one",
    );
    // A copy of the directory is as locked as the original.
    let copy = root.path().join("copy");
    copy_dir(&dir, &copy);
    refused(
        &copy,
        &["--recovery"],
        &[("ROTOR_UNIT_PASSPHRASE", "a guess at the passphrase")],
        "the passphrase does not open",
    );

    // The right passphrase: the same unit, still waiting for its first admin.
    let again = serve(&dir, &["--recovery"], &with_passphrase);
    assert_eq!(again.info.unit, identity.unit);
    assert_eq!(again.info.fingerprint, identity.fingerprint);
    assert_eq!(again.info.enrollment_secret, Some(secret));
}

/// A SoftHSM2 configuration with its own token directory, and a token in it.
fn softhsm(root: &Path, name: &str, label: &str, pin: &str) -> PathBuf {
    let tokens = root.join(format!("{name}-tokens"));
    std::fs::create_dir_all(&tokens).unwrap();
    let conf = root.join(format!("{name}-softhsm2.conf"));
    std::fs::write(
        &conf,
        format!(
            "directories.tokendir = {}\nobjectstore.backend = file\nlog.level = ERROR\n",
            tokens.display()
        ),
    )
    .unwrap();
    let output = Command::new("softhsm2-util")
        .args([
            "--init-token",
            "--free",
            "--label",
            label,
            "--pin",
            pin,
            "--so-pin",
            "87654321",
        ])
        .env("SOFTHSM2_CONF", &conf)
        .output()
        .expect("softhsm2-util (Debian package softhsm2)");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    conf
}

#[tokio::test(flavor = "multi_thread")]
async fn a_token_unit_opens_only_with_its_token_and_pin() {
    let root = tempfile::tempdir().unwrap();
    let conf = softhsm(root.path(), "hsm", "rotor-seal", "123456");
    let dir = root.path().join("unit");
    let args = ["--seal", "token", "--seal-token", "rotor-seal"];
    let conf_text = conf.to_str().unwrap();
    let env = [
        ("SOFTHSM2_CONF", conf_text),
        ("ROTOR_PKCS11_MODULE", SOFTHSM_MODULE),
        ("ROTOR_PIN", "123456"),
    ];
    let unit = serve(&dir, &args, &env);
    let identity = unit.info.clone();
    let status = unit.status().await;
    assert_eq!(identity.fingerprint, Fingerprint::of(&status.identity));
    drop(unit);
    assert!(!dir.join("seal.key").exists());

    refused(
        &dir,
        &args,
        &[
            ("SOFTHSM2_CONF", conf_text),
            ("ROTOR_PKCS11_MODULE", SOFTHSM_MODULE),
            ("ROTOR_PIN", "000000"),
        ],
        "the token refused the PIN",
    );
    refused(
        &dir,
        &[],
        &[("ROTOR_UNIT_PASSPHRASE", PASSPHRASE)],
        "sealed by a token key, not a passphrase one",
    );
    refused(
        &dir,
        &["--seal", "token", "--seal-token", "another-token"],
        &env,
        "sealed by a key in token 'rotor-seal', not 'another-token'",
    );
    // The directory copied to a machine with a token of the same label but without the key.
    let elsewhere = softhsm(root.path(), "elsewhere", "rotor-seal", "123456");
    let copy = root.path().join("copy");
    copy_dir(&dir, &copy);
    refused(
        &copy,
        &args,
        &[
            ("SOFTHSM2_CONF", elsewhere.to_str().unwrap()),
            ("ROTOR_PKCS11_MODULE", SOFTHSM_MODULE),
            ("ROTOR_PIN", "123456"),
        ],
        "holds no single secret key labelled 'rotor-unit-seal-",
    );

    let again = serve(&dir, &args, &env);
    assert_eq!(again.info.unit, identity.unit);
    assert_eq!(again.info.fingerprint, identity.fingerprint);
}

/// The fixture: a unit directory written by the code before sealing sources (`seal.key`
/// beside a version 2 `state.sealed`): an operational unit with one admin, thresholds 1/1 and a
/// master key in its current register.
fn old_unit_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/unit-v2")
}

#[tokio::test(flavor = "multi_thread")]
async fn an_old_unit_directory_is_resealed_to_a_passphrase_and_keeps_its_unit() {
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("unit");
    copy_dir(&old_unit_dir(), &dir);

    // As it was written, it opens in the file mode only.
    refused(
        &dir,
        &[],
        &[("ROTOR_UNIT_PASSPHRASE", PASSPHRASE)],
        "sealed by a file key, not a passphrase one; start it with --seal file (or convert it with 'rotor unit reseal')",
    );
    let dir_text = dir.to_str().unwrap();
    let short = run(
        &["unit", "reseal", "--dir", dir_text, "--seal", "passphrase"],
        &[("ROTOR_UNIT_NEW_PASSPHRASE", "short")],
    );
    assert_eq!(short.status.code(), Some(1));
    assert!(
        dir.join("seal.key").exists(),
        "a refused reseal removed seal.key"
    );

    let resealed = run(
        &["unit", "reseal", "--dir", dir_text, "--seal", "passphrase"],
        &[("ROTOR_UNIT_NEW_PASSPHRASE", PASSPHRASE)],
    );
    let stdout = String::from_utf8_lossy(&resealed.stdout);
    assert!(
        resealed.status.success(),
        "{}",
        String::from_utf8_lossy(&resealed.stderr)
    );
    assert!(stdout.contains("seal.key removed"), "{stdout}");
    assert!(!dir.join("seal.key").exists());
    refused(&dir, &["--seal", "file"], &[], "sealed by a passphrase key");

    let unit = serve(&dir, &[], &[("ROTOR_UNIT_PASSPHRASE", PASSPHRASE)]);
    let status = unit.status().await;
    let fixture: Value = serde_json::from_slice(
        &std::fs::read(old_unit_dir().with_extension("expected.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(status.unit.to_string(), fixture["unit"]);
    assert_eq!(status.counter, fixture["counter"]);
    assert_eq!(status.current.vp.to_hex(), fixture["current_vp"]);
    assert_eq!(status.admins.len(), 1);
    assert_eq!(status.admins[0].name, fixture["admin"]);
    assert!(!status.imprint);
    assert_eq!(status.enrollment_id, None, "a claimed unit needs no secret");
    let shown = run(&["unit", "id", "--dir", dir_text], &[]);
    assert!(String::from_utf8_lossy(&shown.stdout).contains(&unit.info.fingerprint.to_hex()));
}

/// The workstation command `args` with only the enrollment secrets given (none if empty).
fn with_secrets(ws: &Workstation, secrets: &str, args: &[&str]) -> Output {
    let mut full = args.to_vec();
    full.extend(["--enrollment-secret", secrets]);
    ws.run(&full)
}

fn admins_per_unit(ws: &Workstation) -> Vec<usize> {
    ws.json(&["admins"])["units"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u["admins"].as_array().unwrap().len())
        .collect()
}

#[test]
fn a_fresh_unit_refuses_its_first_admin_without_its_enrollment_secret() {
    let root = tempfile::tempdir().unwrap();
    let (_dev, info) = support::start_dev(
        root.path(),
        &["--imprint", "--units", "2", "--recovery-units", "0"],
    );
    let ws = Workstation {
        home: root.path().join("home"),
        info: info.clone(),
        password: support::PASSWORD,
    };
    ws.ok(&["units", "select", "--all"]);
    ws.ok(&["sigkeys", "new", "--name", "alice"]);
    ws.ok(&["sigkeys", "new", "--name", "bob"]);

    // No secret, or a guessed one: refused with what to do, and no unit changed.
    let guessed = "ab".repeat(32);
    for secrets in ["", guessed.as_str()] {
        let output = with_secrets(&ws, secrets, &["admins", "add", "1"]);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(3), "{stderr}");
        assert!(stderr.contains("enrollment secret"), "{stderr}");
        assert!(stderr.contains("--enrollment-secret"), "{stderr}");
        assert_eq!(admins_per_unit(&ws), vec![0, 0]);
    }
    let output = with_secrets(&ws, "not a secret", &["admins", "add", "1"]);
    assert_eq!(output.status.code(), Some(1));

    // With the units' own secrets (ROTOR_ENROLLMENT_SECRET from their info files).
    let secrets = info.enrollment_secrets();
    ws.ok(&["admins", "add", "1"]);
    assert_eq!(admins_per_unit(&ws), vec![1, 1]);
    assert!(
        info.enrollment_secrets().is_empty(),
        "the secrets are used up"
    );
    // The next admin needs an installed admin's signature, not a secret.
    ws.fails(
        &["admins", "add", "2"],
        3,
        "needs 1 distinct admin signature",
    );
    ws.ok(&["sigkeys", "use", "1"]);
    ws.ok(&["admins", "add", "2"]);
    assert_eq!(admins_per_unit(&ws), vec![2, 2]);

    // Zeroized, each unit has a new secret; the old ones no longer install anyone.
    ws.ok(&["units", "zeroize", "--yes"]);
    assert_eq!(admins_per_unit(&ws), vec![0, 0]);
    let renewed = info.enrollment_secrets();
    assert_eq!(renewed.split(',').count(), 2);
    for old in secrets.split(',') {
        assert!(!renewed.contains(old), "zeroize kept an enrollment secret");
    }
    let output = with_secrets(&ws, &secrets, &["admins", "add", "1"]);
    assert_eq!(output.status.code(), Some(3));
    ws.ok(&["admins", "add", "1"]);
    assert_eq!(admins_per_unit(&ws), vec![1, 1]);
}

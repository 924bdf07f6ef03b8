//! Admin signature keys and master key parts on PKCS#11 tokens (SoftHSM2), through the `rotor`
//! binary against `rotor dev` with three real unit processes:
//!
//! - three admins whose keys are on two tokens and one file (and a second token as a backup key
//!   of the first admin), thresholds 2/2, three parts on tokens (one also on a backup token), a
//!   full ceremony, then a key-part rotation whose third part loads from its backup token;
//! - a wrong PIN is refused clearly and changes nothing;
//! - a token failing in the middle of a multi-unit command (`ROTOR_TEST_TOKEN_FAIL_AFTER`)
//!   leaves every unit consistent, and running the command again finishes.

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
use std::process::{Command, Output, Stdio};

use rotor_crypto::{Secret32, combine_parts};
use serde_json::Value;
use support::Workstation;

const SOFTHSM_MODULE: &str = "/usr/lib/softhsm/libsofthsm2.so";
const PIN: &str = "246810";
const SO_PIN: &str = "13579135";

/// Throwaway SoftHSM2 tokens in their own directory, each token's files found by label.
struct Tokens {
    conf: PathBuf,
    dirs: BTreeMap<String, PathBuf>,
}

impl Tokens {
    fn new(dir: &Path, labels: &[&str]) -> Self {
        let store = dir.join("tokens");
        std::fs::create_dir_all(&store).unwrap();
        let conf = dir.join("softhsm2.conf");
        std::fs::write(
            &conf,
            format!(
                "directories.tokendir = {}\nobjectstore.backend = file\nlog.level = ERROR\n",
                store.display()
            ),
        )
        .unwrap();
        let mut dirs = BTreeMap::new();
        for label in labels {
            let before: Vec<PathBuf> = entries(&store);
            let status = Command::new("softhsm2-util")
                .args(["--init-token", "--free", "--label", label])
                .args(["--pin", PIN, "--so-pin", SO_PIN])
                .env("SOFTHSM2_CONF", &conf)
                .stdout(Stdio::null())
                .status()
                .expect("softhsm2-util (Debian package softhsm2)");
            assert!(status.success(), "softhsm2-util --init-token {label}");
            let new: Vec<PathBuf> = entries(&store)
                .into_iter()
                .filter(|entry| !before.contains(entry))
                .collect();
            assert_eq!(new.len(), 1, "one directory per token");
            dirs.insert((*label).to_owned(), new[0].clone());
        }
        Self { conf, dirs }
    }

    /// Takes the token out, as if unplugged: its files leave the token directory (SoftHSM2
    /// takes every directory in it for a token).
    fn unplug(&self, label: &str) {
        let dir = &self.dirs[label];
        let away = self.conf.with_file_name(format!("unplugged-{label}"));
        std::fs::rename(dir, away).unwrap();
    }
}

fn entries(dir: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .collect()
}

/// The `rotor` binary on the test's workstation, with its tokens and PIN.
struct Bench {
    ws: Workstation,
    tokens: Tokens,
}

impl Bench {
    fn run(&self, args: &[&str], env: &[(&str, &str)]) -> Output {
        Command::new(env!("CARGO_BIN_EXE_rotor"))
            .args(args)
            .env("ROTOR_HOME", &self.ws.home)
            .env("ROTOR_ENDPOINT", &self.ws.info.endpoint)
            .env("ROTOR_CA_CERT", &self.ws.info.ca_cert)
            .env("ROTOR_API_KEY", &self.ws.info.api_key)
            .env("ROTOR_PASSWORD", self.ws.password)
            .env(
                "ROTOR_ENROLLMENT_SECRET",
                self.ws.info.enrollment_secrets().as_str(),
            )
            .env("SOFTHSM2_CONF", &self.tokens.conf)
            .env("ROTOR_PKCS11_MODULE", SOFTHSM_MODULE)
            .env("ROTOR_PIN", PIN)
            .env_remove("ROTOR_TEST_TOKEN_FAIL_AFTER")
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .output()
            .expect("run rotor")
    }

    fn ok(&self, args: &[&str]) -> String {
        let output = self.run(args, &[]);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(output.status.success(), "rotor {args:?} failed: {stderr}");
        String::from_utf8_lossy(&output.stdout).into_owned()
    }

    fn json(&self, args: &[&str]) -> Value {
        let mut full = args.to_vec();
        full.push("--json");
        serde_json::from_str(&self.ok(&full)).expect("json output")
    }

    /// Runs a command with `env` that must fail with `code` and say `message`; returns stderr.
    fn fails(&self, args: &[&str], env: &[(&str, &str)], code: i32, message: &str) -> String {
        let output = self.run(args, env);
        let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
        assert_eq!(output.status.code(), Some(code), "rotor {args:?}: {stderr}");
        assert!(
            stderr.contains(message),
            "rotor {args:?}: expected '{message}' in: {stderr}"
        );
        assert!(!stderr.contains("panicked"), "{stderr}");
        stderr
    }

    /// Every unit's registers, admins and counters, as `rotor mk` and `rotor admins` show them.
    fn units(&self) -> (Value, Value) {
        (self.json(&["mk"])["units"].clone(), self.json(&["admins"]))
    }
}

/// A part value the test knows, so it can tell the master key a load must give.
fn part_value() -> (Secret32, String) {
    let part = Secret32::random();
    let text = hex::encode(part.expose());
    (part, text)
}

#[test]
fn a_ceremony_and_a_key_part_rotation_with_admin_keys_and_parts_on_tokens() {
    let dir = tempfile::tempdir().unwrap();
    let tokens = Tokens::new(dir.path(), &["alpha", "beta", "gamma"]);
    let (_dev, info) = support::start_dev(
        dir.path(),
        &["--imprint", "--recovery-units", "0", "--units", "3"],
    );
    let bench = Bench {
        ws: Workstation {
            home: dir.path().join("home"),
            info,
            password: support::PASSWORD,
        },
        tokens,
    };

    // Alice's key on token alpha (and a backup key on gamma), bob's on beta (P-521), carol's in
    // a file.
    bench.ok(&["units", "select", "--all"]);
    bench.ok(&["sigkeys", "new", "--token", "alpha", "--name", "alice"]);
    bench.ok(&[
        "sigkeys", "new", "--token", "beta", "--name", "bob", "--curve", "p521",
    ]);
    bench.ok(&["sigkeys", "new", "--name", "carol"]);
    bench.ok(&["sigkeys", "new", "--token", "gamma", "--name", "alice"]);
    let listed = bench.json(&["sigkeys"])["sigkeys"].clone();
    let places: Vec<&str> = listed
        .as_array()
        .unwrap()
        .iter()
        .map(|key| key["place"].as_str().unwrap())
        .collect();
    assert_eq!(
        places,
        ["token 'alpha'", "token 'beta'", "file", "token 'gamma'"]
    );
    assert_eq!(listed[1]["curve"], "p521");
    let table = bench.ok(&["sigkeys"]);
    assert!(
        table.contains("KEPT IN") && table.contains("token 'beta'"),
        "{table}"
    );

    // The first admin with each unit's enrollment secret, signed inside token alpha.
    bench.ok(&["sigkeys", "use", "1"]);
    bench.ok(&["admins", "add", "1", "2", "3", "4"]);
    // A token key and a file key sign together.
    bench.ok(&["sigkeys", "use", "1", "3"]);
    bench.ok(&["thresholds", "set", "--signature", "2", "--revocation", "2"]);
    for unit in bench.json(&["thresholds"])["units"].as_array().unwrap() {
        assert_eq!(unit["imprint"], false);
        assert_eq!(unit["signature"], 2);
    }

    // Three parts on tokens; the third also on a backup token.
    let (p1, v1) = part_value();
    let (p2, v2) = part_value();
    let (p3, v3) = part_value();
    bench.ok(&["parts", "new", "--token", "alpha", "--value", &v1]);
    bench.ok(&["parts", "new", "--token", "beta", "--value", &v2]);
    bench.ok(&[
        "parts", "new", "--token", "gamma", "--token", "beta", "--value", &v3,
    ]);
    let parts = bench.json(&["parts"])["parts"].clone();
    assert_eq!(parts[2]["place"], "token 'gamma' and 'beta'");
    // Each token computes the verification pattern of the value it was given.
    let verified = bench.json(&["parts", "verify", "3"]);
    assert_eq!(verified["vp"], p3.vp().to_hex());
    assert_eq!(
        verified["verified_on"],
        serde_json::json!(["gamma", "beta"])
    );
    assert_eq!(parts[0]["vp"], p1.vp().to_hex());
    assert!(
        !std::fs::read_to_string(bench.ws.home.join("parts/1.part"))
            .unwrap()
            .contains(&v1),
        "a token part's record holds no part"
    );
    bench.ok(&["mk", "load", "1", "2", "3"]);
    let first = combine_parts(&[p1, p2, p3]).vp();
    let (mk, _) = bench.units();
    for unit in mk.as_array().unwrap() {
        assert_eq!(unit["new"]["state"], "Full Uncommitted");
        assert_eq!(unit["new"]["vp"], first.to_hex());
    }

    // A wrong PIN is refused clearly and changes nothing.
    bench.ok(&["sigkeys", "use", "2", "4"]);
    let before = bench.units();
    bench.fails(
        &["mk", "commit"],
        &[("ROTOR_PIN", "999999")],
        1,
        "token 'beta' refused the PIN; nothing was changed",
    );
    assert_eq!(bench.units(), before, "a wrong PIN changed a unit");

    // Bob's P-521 token key and alice's backup token key commit; the key becomes current.
    bench.ok(&["mk", "commit"]);
    bench.ok(&["mk", "setimm", "--yes"]);
    for unit in bench.json(&["mk"])["units"].as_array().unwrap() {
        assert_eq!(unit["current"]["state"], "Valid");
        assert_eq!(unit["current"]["vp"], first.to_hex());
    }

    // A key-part rotation with three parts generated inside their tokens (no value ever on
    // this workstation), the last copied to a backup token and loaded from it because its
    // first token is gone.
    bench.ok(&["parts", "new", "--token", "alpha"]);
    bench.ok(&["parts", "new", "--token", "beta"]);
    bench.ok(&["parts", "new", "--token", "gamma", "--token", "alpha"]);
    let generated = bench.json(&["parts"])["parts"].clone();
    assert_eq!(generated[5]["place"], "token 'gamma' and 'alpha'");
    let generated_vps: Vec<&str> = (3..6)
        .map(|n| generated[n]["vp"].as_str().unwrap())
        .collect();
    assert!(
        generated_vps[0] != generated_vps[1] && generated_vps[1] != generated_vps[2],
        "each generated part is its own: {generated_vps:?}"
    );
    // The backup copy, made between the tokens, is the same part.
    let verified = bench.json(&["parts", "verify", "6"]);
    assert_eq!(
        verified["verified_on"],
        serde_json::json!(["gamma", "alpha"])
    );
    bench.tokens.unplug("gamma");
    bench.fails(
        &["parts", "new", "--token", "gamma"],
        &[],
        1,
        "token 'gamma' is not present",
    );
    bench.ok(&["sigkeys", "use", "1", "2"]);
    bench.ok(&["mk", "load", "4", "5", "6"]);
    let (mk, _) = bench.units();
    let second = mk[0]["new"]["vp"].as_str().unwrap().to_owned();
    for unit in mk.as_array().unwrap() {
        assert_eq!(unit["new"]["state"], "Full Uncommitted");
        assert_eq!(
            unit["new"]["vp"],
            second.as_str(),
            "every unit combined the same parts"
        );
    }
    assert_ne!(second, first.to_hex());
    bench.ok(&["mk", "commit"]);

    // The token fails part way through the promotions: every unit holds either the old key
    // current and the new one committed, or the new key current; none is in between.
    let stderr = bench.fails(
        &["mk", "rotate", "--yes"],
        &[("ROTOR_TEST_TOKEN_FAIL_AFTER", "9")],
        1,
        "the token failed",
    );
    let mk = bench.json(&["mk"])["units"].clone();
    let mut promoted = 0;
    for unit in mk.as_array().unwrap() {
        if unit["current"]["vp"] == second.as_str() {
            promoted += 1;
            assert_eq!(unit["new"]["state"], "Empty", "{unit}");
        } else {
            assert_eq!(unit["current"]["vp"], first.to_hex(), "{unit}");
            assert_eq!(unit["new"]["state"], "Full Committed", "{unit}");
            assert_eq!(unit["new"]["vp"], second.as_str(), "{unit}");
        }
    }
    assert!(
        (1..3).contains(&promoted),
        "the failure came in the middle of the promotions ({promoted} promoted): {stderr}"
    );

    // Running it again finishes the rotation.
    let out = bench.ok(&["mk", "rotate", "--yes"]);
    assert!(out.contains("Master key rotation started."), "{out}");
    assert!(out.contains("Master key rotation successful."), "{out}");
    for unit in bench.json(&["mk"])["units"].as_array().unwrap() {
        assert_eq!(unit["current"]["state"], "Valid");
        assert_eq!(unit["current"]["vp"], second.as_str());
        assert_eq!(unit["new"]["state"], "Empty");
    }

    // A chosen key id (PIV slots need theirs); a key pair already under that id (made by the
    // token's own tools) is taken, once.
    let made = bench.json(&[
        "sigkeys", "new", "--token", "alpha", "--name", "dave", "--key-id", "0a",
    ]);
    bench.ok(&["sigkeys", "rm", "--yes", &made["number"].to_string()]);
    let taken = bench.json(&[
        "sigkeys", "new", "--token", "alpha", "--name", "dave", "--key-id", "0a",
    ]);
    assert_eq!(taken["ski"], made["ski"]);
    bench.fails(
        &[
            "sigkeys", "new", "--token", "alpha", "--name", "erin", "--key-id", "0a",
        ],
        &[],
        1,
        "already is the key pair with this id on token 'alpha'",
    );
    bench.fails(
        &[
            "sigkeys", "new", "--token", "alpha", "--name", "erin", "--key-id", "0a", "--curve",
            "p521",
        ],
        &[],
        1,
        "is not a p521 key",
    );
}

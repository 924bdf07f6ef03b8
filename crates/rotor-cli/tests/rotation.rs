//! Master key rotation against real processes: both HPCS flows end to end through the CLI, and
//! each failure of the HPCS rotation reproduced by SIGKILL of the CLI, the service or a unit in
//! its phase, then finished by running the same command once more. After every rotation each
//! DEK must unwrap to its original plaintext and all key storage must sit under the new key.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::zombie_processes
)]

mod support;

use std::path::Path;
use std::time::{Duration, Instant};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use serde_json::{Value, json};
use support::rotation::{
    assert_rotated_to, current_vp, journal, seed, token, verify, wait_journal,
};
use support::units::{kill_unit, unit_dir, wait_gone};
use support::{DevProcess, Workstation};

/// An instance of `rotor dev` with 2 operational units and 1 recovery unit, initialized by the
/// key-part ceremony.
fn start(dir: &Path) -> (DevProcess, rotor_server::dev::DevInfo) {
    support::start_dev(dir, &["--units", "2", "--recovery-units", "1"])
}

/// Unit `index`'s new register state, read straight from the unit.
async fn new_register(info: &rotor_server::dev::DevInfo, index: usize) -> Option<String> {
    let url = format!(
        "https://{}/v1/status?challenge=00",
        info.units[index].address
    );
    let signed: Value = support::unit_http(info)
        .get(url)
        .send()
        .await
        .ok()?
        .json()
        .await
        .ok()?;
    let payload: Value = serde_json::from_str(signed["payload"].as_str()?).ok()?;
    payload["result"]["status"]["new"]["state"]
        .as_str()
        .map(str::to_owned)
}

/// Restarts unit `index` on its old address, as an operator would after a crash.
fn restart_unit(info: &rotor_server::dev::DevInfo, index: usize) -> DevProcess {
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_rotor"));
    command
        .args(["unit", "serve", "--listen"])
        .arg(info.units[index].address.to_string())
        .arg("--dir")
        .arg(unit_dir(info, index))
        .args(support::dev_unit_tls_args(info, &unit_dir(info, index)))
        // The passphrase `rotor dev` seals its units with, kept in its directory.
        .env(
            "ROTOR_UNIT_PASSPHRASE",
            std::fs::read_to_string(info.dir.join("units.passphrase")).unwrap(),
        )
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
    if index == 2 {
        command.arg("--recovery");
    }
    let child = DevProcess::from(command.spawn().unwrap());
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::net::TcpStream::connect(info.units[index].address).is_err() {
        assert!(Instant::now() < deadline, "unit did not come back");
        std::thread::sleep(Duration::from_millis(20));
    }
    child
}

#[tokio::test(flavor = "multi_thread")]
async fn both_flows_end_to_end() {
    let dir = tempfile::tempdir().unwrap();
    let (_dev, info) = tokio::task::block_in_place(|| start(dir.path()));
    let ws = Workstation::of_dev(&info);
    let seeded = seed(&info, 3_000).await;
    let first = current_vp(&ws);

    // An application keeps its own blob and a DEK wrapped under it.
    let token = token(&info).await;
    let blob_call = |op: &'static str, body: Value| {
        let (info, token) = (info.clone(), token.clone());
        async move {
            support::kp_call(
                &info,
                &token,
                reqwest::Method::POST,
                &format!("/v1/blobs/{op}"),
                body,
            )
            .await
        }
    };
    let (status, made) = blob_call("generate", json!({})).await;
    assert_eq!(status, 200, "{made}");
    assert_eq!(made["vp"], first.as_str());
    let old_blob = made["blob"].clone();
    let (status, wrapped) = blob_call(
        "wrap",
        json!({"blob": old_blob, "plaintext": B64.encode(b"app DEK")}),
    )
    .await;
    assert_eq!(status, 200, "{wrapped}");
    let unwraps = |blob: Value| {
        let body = json!({"blob": blob, "ciphertext": wrapped["ciphertext"]});
        let call = blob_call("unwrap", body);
        async move {
            let (status, body) = call.await;
            (status == 200).then(|| B64.decode(body["plaintext"].as_str().unwrap()).unwrap())
        }
    };
    // No new master key committed yet: nothing to rewrap to.
    let (status, refused) = blob_call("rewrap", json!({"blob": old_blob})).await;
    assert_eq!(status, 409, "{refused}");
    assert!(
        refused.to_string().contains("NO_NEW_MASTER_KEY_ERR"),
        "{refused}"
    );

    // Key parts: load, commit, rotate.
    load_new_parts(&ws);
    let committed = ws.json(&["mk"])["units"][0]["new"]["vp"]
        .as_str()
        .unwrap()
        .to_owned();
    // Merely committed: a committed register can still be cleared, so no rewrap to it yet.
    let (status, refused) = blob_call("rewrap", json!({"blob": old_blob})).await;
    assert_eq!(status, 409, "{refused}");
    // The rotation holds before promotion (recorded in the journal); the application rewraps
    // its blob to the pinned new master key.
    let held = ws.json(&["mk", "rotate", "--hold-before-promote", "--yes"]);
    assert_eq!(held["held_before_promote"], true, "{held}");
    assert_eq!(held["to_vp"], committed.as_str());
    assert_eq!(journal(&ws)["hold_before_promote"], true);
    assert_eq!(current_vp(&ws), first);
    let (status, rewrapped) = blob_call("rewrap", json!({"blob": old_blob})).await;
    assert_eq!(status, 200, "{rewrapped}");
    assert_eq!(rewrapped["vp"], committed.as_str());
    let new_blob = rewrapped["blob"].clone();
    assert_eq!(
        unwraps(old_blob.clone()).await.as_deref(),
        Some(&b"app DEK"[..])
    );
    assert_eq!(
        unwraps(new_blob.clone()).await.as_deref(),
        Some(&b"app DEK"[..])
    );

    // Released: the same command, without the hold, promotes every unit.
    let out = ws.ok(&["mk", "rotate", "--yes"]);
    assert!(out.contains("The master key rotation is complete"), "{out}");
    let second = current_vp(&ws);
    assert_eq!(second, committed);
    assert_ne!(first, second);
    assert_rotated_to(&ws, &second);
    verify(&info, &seeded).await;
    // The rewrapped blob works; the old one died with the old master key.
    assert_eq!(unwraps(new_blob).await.as_deref(), Some(&b"app DEK"[..]));
    assert_eq!(unwraps(old_blob).await, None);
    // Again: nothing to do.
    let again = ws.json(&["mk", "rotate"]);
    assert_eq!(again["already_done"], true, "{again}");

    // Recovery units: a random key made in the recovery unit, exported to the others.
    let rotated = ws.json(&["auto", "rotate"]);
    let third = rotated["to_vp"].as_str().unwrap().to_owned();
    assert_eq!(rotated["from_vp"], second.as_str());
    assert_ne!(third, second);
    assert_rotated_to(&ws, &third);
    verify(&info, &seeded).await;

    // Killed after the service recorded completion but before reporting, the command left its
    // note on the workstation: running it again reports that rotation, no second one.
    std::fs::write(
        ws.home.join("rotations.json"),
        json!({ info.instance.to_string(): third }).to_string(),
    )
    .unwrap();
    let again = ws.json(&["auto", "rotate"]);
    assert_eq!(again["to_vp"], third.as_str(), "{again}");
    assert_eq!(current_vp(&ws), third);
    // With the note gone, the same command is a new rotation.
    let fourth = ws.json(&["auto", "rotate"]);
    assert_ne!(fourth["to_vp"], third.as_str(), "{fourth}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_unit_killed_before_the_new_key_is_everywhere() {
    let dir = tempfile::tempdir().unwrap();
    let (_dev, info) = tokio::task::block_in_place(|| start(dir.path()));
    let ws = Workstation::of_dev(&info);
    let seeded = seed(&info, 1_000).await;

    // Unit 2 dies as soon as the recovery unit has made the new key.
    let cli = ws.spawn(&["auto", "rotate"]);
    while new_register(&info, 2).await.as_deref() != Some("Full Uncommitted") {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    kill_unit(&unit_dir(&info, 1));
    let output = cli.wait_with_output().unwrap();
    assert_eq!(output.status.code(), Some(4), "the CLI cannot reach unit 2");
    let _unit = restart_unit(&info, 1);
    let mk = ws.json(&["mk"]);
    let made = mk["units"][2]["new"]["vp"].as_str().unwrap().to_owned();
    // Unit 1 may or may not have received it before the CLI failed; unit 2 has not.
    let first = &mk["units"][0]["new"];
    assert!(
        first["state"] == "Empty" || first["vp"] == made.as_str(),
        "{mk}"
    );
    assert_eq!(mk["units"][1]["new"]["state"], "Empty", "{mk}");

    // One resume: the same key (no second random key), everywhere, then reencryption.
    let rotated = ws.json(&["auto", "rotate"]);
    assert_eq!(rotated["to_vp"], made.as_str());
    assert_rotated_to(&ws, &made);
    verify(&info, &seeded).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn cli_and_units_killed_during_reencryption() {
    let dir = tempfile::tempdir().unwrap();
    let (_dev, info) = tokio::task::block_in_place(|| start(dir.path()));
    let ws = Workstation::of_dev(&info);
    let seeded = seed(&info, 60_000).await;

    let mut cli = ws.spawn(&["auto", "rotate"]);
    let during = wait_journal(&info, |j| {
        j["phase"] == "reencrypting" && j["done"].as_u64() > Some(0)
    })
    .await;
    kill_unit(&unit_dir(&info, 0));
    kill_unit(&unit_dir(&info, 1));
    cli.kill().unwrap();
    cli.wait().unwrap();
    let stalled = journal(&ws_only(&ws, "3"));
    assert_eq!(stalled["phase"], "reencrypting", "{stalled}");
    assert!(stalled["remaining"].as_u64().unwrap() > 0, "{stalled}");
    let to = during["to"].as_str().unwrap().to_owned();

    // The interlock, on the unit that is still up: nothing may clear or replace a register.
    let recovery = ws_only(&ws, "3");
    recovery.fails(&["mk", "clear-new", "--yes"], 3, "rotation_in_progress");
    recovery.fails(&["mk", "clear-current", "--yes"], 3, "rotation_in_progress");
    recovery.fails(&["mk", "load", "1", "2", "3"], 3, "rotation_in_progress");
    recovery.fails(&["mk", "setimm", "--yes"], 3, "rotation_in_progress");
    ws.ok(&["units", "select", "--all"]);

    // The units come back; the service, which never stopped, finishes on its own.
    let _unit0 = restart_unit(&info, 0);
    let _unit1 = restart_unit(&info, 1);
    wait_journal(&info, |j| j["phase"] == "reencrypted").await;
    // Still pinned: key storage depends on the new register now.
    ws.fails(&["mk", "clear-new", "--yes"], 3, "already reencrypted");

    // One resume, and no new random key: the rotation in the journal is finished.
    let rotated = ws.json(&["auto", "rotate"]);
    assert_eq!(rotated["to_vp"], to.as_str());
    assert_rotated_to(&ws, &to);
    verify(&info, &seeded).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn an_abort_rewraps_key_storage_back() {
    let dir = tempfile::tempdir().unwrap();
    let (_dev, info) = tokio::task::block_in_place(|| start(dir.path()));
    let ws = Workstation::of_dev(&info);
    let seeded = seed(&info, 40_000).await;
    let first = current_vp(&ws);
    ws.fails(&["mk", "rotate", "--abort", "--yes"], 1, "no rotation");

    load_new_parts(&ws);
    let mut cli = ws.spawn(&["mk", "rotate", "--yes"]);
    let during = wait_journal(&info, |j| {
        j["phase"] == "reencrypting" && j["done"].as_u64() > Some(0)
    })
    .await;
    cli.kill().unwrap();
    cli.wait().unwrap();

    let aborted = ws.json(&["mk", "rotate", "--abort", "--yes"]);
    assert_eq!(aborted["aborted"], true, "{aborted}");
    let mk = ws.json(&["mk"]);
    assert_eq!(mk["rotation"]["phase"], "aborted");
    for unit in mk["units"].as_array().unwrap() {
        assert_eq!(unit["current"]["vp"], first.as_str(), "{unit}");
        assert_eq!(unit["new"]["vp"], during["to"], "{unit}");
        assert_eq!(unit["rotation"], "none", "{unit}");
    }
    let storage = mk["key_storage"].as_array().unwrap();
    assert_eq!(storage.len(), 1, "{storage:?}");
    assert_eq!(storage[0]["vp"], first.as_str());
    verify(&info, &seeded).await;
    // Released: the new register may be cleared now.
    ws.ok(&["mk", "clear-new", "--yes"]);
}

/// Three new key parts (numbers 4 to 6) loaded and committed on every unit.
fn load_new_parts(ws: &Workstation) {
    for custodian in ["D", "E", "F"] {
        ws.ok(&["parts", "new", "--description", custodian]);
    }
    ws.ok(&["mk", "load", "4", "5", "6"]);
    ws.ok(&["mk", "commit"]);
}

/// The same workstation with only unit `number` selected.
fn ws_only(ws: &Workstation, number: &str) -> Workstation {
    ws.ok(&["units", "deselect", "--all"]);
    ws.ok(&["units", "select", number]);
    Workstation {
        home: ws.home.clone(),
        info: ws.info.clone(),
        password: ws.password,
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn service_killed_during_reencryption_then_units_promoted_in_part() {
    let dir = tempfile::tempdir().unwrap();
    let (dev, info) = tokio::task::block_in_place(|| start(dir.path()));
    let ws = Workstation::of_dev(&info);
    let seeded = seed(&info, 60_000).await;

    load_new_parts(&ws);
    let mut cli = ws.spawn(&["mk", "rotate", "--yes"]);
    let during = wait_journal(&info, |j| {
        j["phase"] == "reencrypting" && j["done"].as_u64() > Some(0)
    })
    .await;
    let to = during["to"].as_str().unwrap().to_owned();
    // The service and its units die at once (SIGKILL of `rotor dev`), and the CLI with them.
    drop(dev);
    cli.kill().unwrap();
    cli.wait().unwrap();

    // Restarted, the service resumes the reencryption by itself.
    for index in 0..3 {
        wait_gone(&unit_dir(&info, index));
    }
    std::fs::remove_file(dir.path().join("dev.json")).unwrap();
    let (_dev, info) = tokio::task::block_in_place(|| start(dir.path()));
    let ws = Workstation::of_dev(&info);
    wait_journal(&info, |j| j["phase"] == "reencrypted").await;

    // An operator promotes one unit by hand (the HPCS trap), and another unit dies.
    ws.ok(&["units", "deselect", "--all"]);
    ws.ok(&["units", "select", "1"]);
    ws.ok(&["mk", "setimm", "--yes"]);
    ws.ok(&["units", "select", "--all"]);
    kill_unit(&unit_dir(&info, 1));
    ws.fails(&["mk", "rotate", "--yes"], 4, "");
    let _unit = restart_unit(&info, 1);

    // One resume: unit 1 counts as done, the others are promoted.
    ws.ok(&["mk", "rotate", "--yes"]);
    assert_rotated_to(&ws, &to);
    verify(&info, &seeded).await;
}

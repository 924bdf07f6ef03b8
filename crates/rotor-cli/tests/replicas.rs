//! Several service replicas on one PostgreSQL database (`rotor dev --postgres --replicas 2`):
//! a change made through one replica holds on the next request to the other, concurrent changes
//! through both end consistent, and a master key rotation survives a replica killed (SIGKILL)
//! and the database restarted in the middle of it, with every DEK unwrapping afterwards.

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
use rotor_server::dev::DevInfo;
use serde_json::{Value, json};
use support::rotation::{assert_rotated_to, seed, token, verify, wait_journal};
use support::{DevProcess, Workstation};

fn start(dir: &Path) -> (DevProcess, DevInfo) {
    let (dev, info) = support::start_dev(
        dir,
        &[
            "--units",
            "2",
            "--recovery-units",
            "1",
            "--postgres",
            "--replicas",
            "2",
        ],
    );
    assert_eq!(info.endpoints.len(), 2, "{:?}", info.endpoints);
    (dev, info)
}

/// The dev instance as seen through replica `index` only.
fn through(info: &DevInfo, index: usize) -> DevInfo {
    DevInfo {
        endpoint: info.endpoints[index].clone(),
        ..info.clone()
    }
}

async fn call(info: &DevInfo, token: &str, path: &str, body: Value) -> (u16, Value) {
    support::kp_call(info, token, reqwest::Method::POST, path, body).await
}

async fn create_root_key(info: &DevInfo, token: &str, name: &str) -> String {
    let (status, created) = call(
        info,
        token,
        "/api/v2/keys",
        json!({"metadata": {"collectionType": "application/vnd.ibm.kms.key+json", "collectionTotal": 1},
               "resources": [{"type": "application/vnd.ibm.kms.key+json", "name": name, "extractable": false}]}),
    )
    .await;
    assert_eq!(status, 201, "{created}");
    created["resources"][0]["id"].as_str().unwrap().to_owned()
}

async fn key_state(info: &DevInfo, token: &str, id: &str) -> (u64, u64) {
    let (status, body) = support::kp_call(
        info,
        token,
        reqwest::Method::GET,
        &format!("/api/v2/keys/{id}"),
        json!(null),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let key = &body["resources"][0];
    let versions = {
        let (status, versions) = support::kp_call(
            info,
            token,
            reqwest::Method::GET,
            &format!("/api/v2/keys/{id}/versions"),
            json!(null),
        )
        .await;
        assert_eq!(status, 200, "{versions}");
        versions["metadata"]["collectionTotal"].as_u64().unwrap()
    };
    (key["state"].as_u64().unwrap(), versions)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_change_on_one_replica_holds_on_the_other() {
    let dir = tempfile::tempdir().unwrap();
    let (_dev, info) = tokio::task::block_in_place(|| start(dir.path()));
    let (a, b) = (through(&info, 0), through(&info, 1));
    // A token minted by one replica works on the other.
    let token = token(&a).await;
    let id = create_root_key(&a, &token, "shared").await;
    let dek = B64.encode(b"a DEK shared by both replicas");
    let wrap = format!("/api/v2/keys/{id}/actions/wrap");
    let (status, wrapped) = call(&b, &token, &wrap, json!({ "plaintext": dek })).await;
    assert_eq!(status, 200, "{wrapped}");

    let (status, body) = call(
        &a,
        &token,
        &format!("/api/v2/keys/{id}/actions/disable"),
        json!({}),
    )
    .await;
    assert_eq!(status, 204, "{body}");
    let (status, refused) = call(&b, &token, &wrap, json!({ "plaintext": dek })).await;
    assert_eq!(
        status, 409,
        "wrap with a key disabled on the other replica: {refused}"
    );
    let unwrap = format!("/api/v2/keys/{id}/actions/unwrap");
    let (status, refused) = call(
        &b,
        &token,
        &unwrap,
        json!({ "ciphertext": wrapped["ciphertext"] }),
    )
    .await;
    assert_eq!(status, 409, "unwrap with a disabled key: {refused}");

    let (status, body) = call(
        &b,
        &token,
        &format!("/api/v2/keys/{id}/actions/enable"),
        json!({}),
    )
    .await;
    assert_eq!(status, 204, "{body}");
    let (status, unwrapped) = call(
        &a,
        &token,
        &unwrap,
        json!({ "ciphertext": wrapped["ciphertext"] }),
    )
    .await;
    assert_eq!(status, 200, "{unwrapped}");
    assert_eq!(unwrapped["plaintext"], dek.as_str());
}

#[tokio::test(flavor = "multi_thread")]
async fn rotate_on_one_replica_races_disable_on_the_other() {
    let dir = tempfile::tempdir().unwrap();
    let (_dev, info) = tokio::task::block_in_place(|| start(dir.path()));
    let (a, b) = (through(&info, 0), through(&info, 1));
    let token = token(&a).await;
    for round in 0..12 {
        let id = create_root_key(&a, &token, &format!("race-{round}")).await;
        let (rotate_path, disable_path) = (
            format!("/api/v2/keys/{id}/actions/rotate"),
            format!("/api/v2/keys/{id}/actions/disable"),
        );
        let rotate = call(&a, &token, &rotate_path, json!({}));
        let disable = call(&b, &token, &disable_path, json!({}));
        let ((rotated, rotate_body), (disabled, disable_body)) = tokio::join!(rotate, disable);
        assert_eq!(disabled, 204, "disable: {disable_body}");
        assert!(
            rotated == 204 || rotated == 409,
            "rotate ended with {rotated}: {rotate_body}"
        );
        // Both replicas tell the same story, and it is the one the answers told: the key is
        // disabled, with a second version exactly when the rotation was accepted.
        let expected = (2, if rotated == 204 { 2 } else { 1 });
        assert_eq!(key_state(&a, &token, &id).await, expected, "round {round}");
        assert_eq!(key_state(&b, &token, &id).await, expected, "round {round}");
    }
}

/// The process of service replica `number` (1, 2) of the dev instance.
fn replica_pid(info: &DevInfo, number: usize) -> Option<i32> {
    let config = info
        .dir
        .join("service")
        .join("replicas")
        .join(format!("replica-{number}.toml"));
    let wanted = config.to_string_lossy().into_owned();
    std::fs::read_dir("/proc")
        .ok()?
        .flatten()
        .find_map(|entry| {
            let pid: i32 = entry.file_name().to_str()?.parse().ok()?;
            let cmdline = std::fs::read(entry.path().join("cmdline")).ok()?;
            let args: Vec<&[u8]> = cmdline.split(|b| *b == 0).collect();
            args.contains(&wanted.as_bytes()).then_some(pid)
        })
}

#[tokio::test(flavor = "multi_thread")]
async fn a_replica_killed_during_reencryption() {
    let dir = tempfile::tempdir().unwrap();
    let (_dev, info) = tokio::task::block_in_place(|| start(dir.path()));
    let ws = Workstation::of_dev(&info);
    let seeded = seed(&info, 60_000).await;

    let cli = ws.spawn(&["auto", "rotate"]);
    let during = wait_journal(&info, |j| {
        j["phase"] == "reencrypting"
            && j["workers"]
                .as_array()
                .is_some_and(|w| w.iter().any(|w| w == "replica-2"))
    })
    .await;
    let pid = replica_pid(&info, 2).expect("replica 2 runs");
    std::process::Command::new("kill")
        .args(["-KILL", &pid.to_string()])
        .status()
        .unwrap();
    let output = tokio::task::spawn_blocking(move || cli.wait_with_output())
        .await
        .unwrap()
        .unwrap();
    assert!(output.status.success(), "auto rotate with replica 2 killed");
    let to = during["to"].as_str().unwrap().to_owned();
    assert_rotated_to(&ws, &to);
    verify(&info, &seeded).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn the_database_restarted_during_reencryption() {
    let dir = tempfile::tempdir().unwrap();
    let (_dev, info) = tokio::task::block_in_place(|| start(dir.path()));
    let ws = Workstation::of_dev(&info);
    let seeded = seed(&info, 60_000).await;

    let mut cli = ws.spawn(&["auto", "rotate"]);
    let during = wait_journal(&info, |j| {
        j["phase"] == "reencrypting" && j["done"].as_u64() > Some(0)
    })
    .await;
    // An immediate restart: every PostgreSQL process stops at once, without a checkpoint, and
    // the server recovers from its write-ahead log when it starts, as after a crash.
    let data = support::postgres_data_dir(&info);
    let log = info.dir.join("postgres").join("postgres.log");
    support::pg_ctl(
        &data,
        &[
            "restart",
            "-m",
            "immediate",
            "-w",
            "-l",
            &log.to_string_lossy(),
        ],
    );
    let _ = cli.kill();
    let _ = cli.wait();
    // One resume command finishes it, whatever the rotation command saw.
    let deadline = Instant::now() + Duration::from_secs(120);
    let rotated = loop {
        let output = ws.run(&["auto", "rotate", "--json"]);
        if output.status.success() {
            break serde_json::from_slice::<Value>(&output.stdout).unwrap();
        }
        assert!(
            Instant::now() < deadline,
            "auto rotate never finished: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        tokio::time::sleep(Duration::from_secs(1)).await;
    };
    let to = during["to"].as_str().unwrap();
    assert_eq!(rotated["to_vp"], to);
    assert_rotated_to(&ws, to);
    verify(&info, &seeded).await;
}

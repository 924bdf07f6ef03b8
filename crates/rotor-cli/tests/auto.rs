//! `rotor auto init` and `rotor auto recover` against real unit processes: a random master key
//! made in a recovery unit reaches every unit encrypted, a rerun continues or changes nothing,
//! and a unit that lost its master key gets it back while stored keys keep working.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::zombie_processes
)]

mod support;

use serde_json::{Value, json};
use support::Workstation;

/// Initialize with the admins of signature keys 1, 2 and 3 and thresholds 2/2.
const INIT: &[&str] = &[
    "auto",
    "init",
    "--admins",
    "1",
    "2",
    "3",
    "--signature",
    "2",
    "--revocation",
    "2",
];

fn registers(ws: &Workstation) -> Vec<Value> {
    ws.json(&["mk"])["units"].as_array().unwrap().clone()
}

fn current_vps(ws: &Workstation) -> Vec<String> {
    registers(ws)
        .iter()
        .map(|u| {
            assert_eq!(u["current"]["state"], "Valid", "{u}");
            assert_eq!(u["new"]["state"], "Empty", "{u}");
            u["current"]["vp"].as_str().unwrap().to_owned()
        })
        .collect()
}

async fn kp(info: &rotor_server::dev::DevInfo, path: &str, body: Value) -> (u16, Value) {
    let token = support::access_token(info, &info.api_key);
    support::kp_call(info, &token, reqwest::Method::POST, path, body).await
}

#[tokio::test(flavor = "multi_thread")]
async fn auto_init_and_recover_with_a_recovery_unit() {
    let dir = tempfile::tempdir().unwrap();
    let (_dev, info) = tokio::task::block_in_place(|| {
        support::start_dev(
            dir.path(),
            &["--imprint", "--units", "2", "--recovery-units", "1"],
        )
    });
    let ws = Workstation {
        home: dir.path().join("home"),
        info: info.clone(),
        password: support::PASSWORD,
    };
    for name in ["alice", "bob", "carol"] {
        ws.ok(&["sigkeys", "new", "--name", name]);
    }
    ws.ok(&["sigkeys", "use", "1", "2"]);
    // Every unit of the instance must be selected.
    ws.ok(&["units", "select", "1", "2"]);
    ws.fails(INIT, 1, "not all crypto units");
    ws.ok(&["units", "select", "--all"]);
    let out = ws.ok(INIT);
    assert!(
        out.contains("Generating a random master key value"),
        "{out}"
    );
    assert!(
        out.contains("Transferring the master key value to 2 of 2 crypto units"),
        "{out}"
    );
    let vps = current_vps(&ws);
    assert_eq!(vps.len(), 3);
    assert!(vps.iter().all(|vp| *vp == vps[0]));
    assert_ne!(vps[0], "0".repeat(64));
    assert_eq!(ws.json(&["units", "compare"])["differences"], json!([]));

    // A rerun changes nothing: same master key, no transaction on any unit.
    let counters = |ws: &Workstation| -> Vec<u64> {
        ws.json(&["units", "compare"])["units"]
            .as_array()
            .unwrap()
            .iter()
            .map(|u| u["status"]["counter"].as_u64().unwrap())
            .collect()
    };
    let before = counters(&ws);
    ws.ok(INIT);
    assert_eq!(current_vps(&ws), vps);
    assert_eq!(counters(&ws), before);
    // Other thresholds than the ones installed: refused, nothing changed.
    ws.fails(
        &[
            "auto",
            "init",
            "--admins",
            "1",
            "2",
            "3",
            "--signature",
            "1",
            "--revocation",
            "1",
        ],
        1,
        "already left imprint mode",
    );

    // A stored key and a DEK wrapped under it.
    let create = json!({
        "metadata": {"collectionType": "application/vnd.ibm.kms.key+json", "collectionTotal": 1},
        "resources": [{"type": "application/vnd.ibm.kms.key+json", "name": "survives", "extractable": false}],
    });
    let (status, key) = kp(&info, "/api/v2/keys", create).await;
    assert_eq!(status, 201, "{key}");
    let id = key["resources"][0]["id"].as_str().unwrap().to_owned();
    // Key storage is counted per master key and matched to the register holding it.
    let storage = ws.json(&["mk"])["key_storage"].clone();
    assert_eq!(
        storage,
        json!([{"instance": info.instance, "vp": vps[0], "key_versions": 1, "held_in": "current"}])
    );
    let (status, wrapped) = kp(
        &info,
        &format!("/api/v2/keys/{id}/actions/wrap"),
        json!({"plaintext": "AAECAwQFBgcICQ=="}),
    )
    .await;
    assert_eq!(status, 200, "{wrapped}");

    // Unit 1 loses its master key, and also holds a leftover new register.
    ws.ok(&["units", "deselect", "--all"]);
    ws.ok(&["units", "select", "1"]);
    ws.ok(&["mk", "clear-current", "--yes"]);
    ws.ok(&["parts", "new"]);
    ws.ok(&["parts", "new"]);
    ws.ok(&["mk", "load", "1", "2"]);
    // Seen from unit 1 alone, the stored key sits under a master key no selected unit holds.
    let output = ws.run(&["mk", "--json"]);
    assert!(output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("which no selected crypto unit holds"),
        "{stderr}"
    );
    let seen: Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(seen["key_storage"][0]["held_in"], Value::Null);
    ws.ok(&["units", "select", "--all"]);
    let lost = registers(&ws);
    assert_eq!(lost[0]["current"]["state"], "Empty");
    assert_eq!(lost[0]["new"]["state"], "Full Uncommitted");

    let out = ws.ok(&["auto", "recover"]);
    assert!(out.contains("recovered on 1 crypto unit"), "{out}");
    assert_eq!(current_vps(&ws), vps);
    assert!(
        ws.ok(&["auto", "recover"])
            .contains("already holds the master key")
    );

    // Both operational units unwrap the DEK again (the service tries them in turn).
    for _ in 0..4 {
        let (status, plain) = kp(
            &info,
            &format!("/api/v2/keys/{id}/actions/unwrap"),
            json!({"ciphertext": wrapped["ciphertext"]}),
        )
        .await;
        assert_eq!(status, 200, "{plain}");
        assert_eq!(plain["plaintext"], "AAECAwQFBgcICQ==");
    }
}

//! `rotor audit verify` on a real instance: intact after a ceremony, key events and a master key
//! rotation; then, with the service stopped and its stored chains edited in its SQLite
//! database, it names the exact entry that was changed, removed or reordered (exit code 5).

// Test helpers: a failure to read or edit the test database fails the test.
#![allow(clippy::unwrap_used)]

mod support;

use std::path::Path;

use rusqlite::{Connection, params};
use serde_json::{Value, json};
use support::{DevProcess, Workstation};

fn start(dir: &Path) -> (DevProcess, rotor_server::dev::DevInfo) {
    // A restart must wait for the new info file, not read the old one.
    let _ = std::fs::remove_file(dir.join("dev.json"));
    support::start_dev(dir, &["--units", "2", "--recovery-units", "0"])
}

/// Stops `rotor dev` and waits until its unit processes let go of their directories.
fn stop(dev: DevProcess, info: &rotor_server::dev::DevInfo) {
    drop(dev);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while info
        .units
        .iter()
        .any(|unit| std::net::TcpStream::connect(unit.address).is_ok())
    {
        assert!(std::time::Instant::now() < deadline, "units did not stop");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

fn database(info: &rotor_server::dev::DevInfo) -> Connection {
    Connection::open(info.dir.join("service").join("keys.db")).unwrap()
}

fn entry(db: &Connection, chain: &str, seq: i64) -> (Vec<u8>, Vec<u8>) {
    db.query_row(
        "SELECT entry, signature FROM audit_entries WHERE chain = ?1 AND seq = ?2",
        params![chain, seq],
        |row| Ok((row.get(0)?, row.get(1)?)),
    )
    .unwrap()
}

fn put(db: &Connection, chain: &str, seq: i64, (entry, signature): &(Vec<u8>, Vec<u8>)) {
    db.execute(
        "INSERT INTO audit_entries (chain, seq, entry, signature) VALUES (?1, ?2, ?3, ?4)
         ON CONFLICT (chain, seq) DO UPDATE SET entry = excluded.entry, signature = excluded.signature",
        params![chain, seq, entry, signature],
    )
    .unwrap();
}

fn remove(db: &Connection, chain: &str, seq: i64) {
    db.execute(
        "DELETE FROM audit_entries WHERE chain = ?1 AND seq = ?2",
        params![chain, seq],
    )
    .unwrap();
}

fn length(db: &Connection, chain: &str) -> i64 {
    db.query_row(
        "SELECT COUNT(*) FROM audit_entries WHERE chain = ?1",
        params![chain],
        |row| row.get(0),
    )
    .unwrap()
}

/// Key events: keys created, one disabled, a wrap with it refused, one deleted.
async fn key_events(info: &rotor_server::dev::DevInfo) {
    let (dev, key) = (info.clone(), info.api_key.clone());
    let token = tokio::task::spawn_blocking(move || support::access_token(&dev, &key))
        .await
        .unwrap();
    let mut ids = Vec::new();
    for name in ["audit-a", "audit-b", "audit-c"] {
        let body = json!({
            "metadata": {"collectionType": "application/vnd.ibm.kms.key+json", "collectionTotal": 1},
            "resources": [{"type": "application/vnd.ibm.kms.key+json", "name": name, "extractable": false}]
        });
        let (status, created) =
            support::kp_call(info, &token, reqwest::Method::POST, "/api/v2/keys", body).await;
        assert_eq!(status, 201, "{created}");
        ids.push(created["resources"][0]["id"].as_str().unwrap().to_owned());
    }
    let post = reqwest::Method::POST;
    let path = format!("/api/v2/keys/{}/actions/disable", ids[0]);
    let (status, body) = support::kp_call(info, &token, post.clone(), &path, json!({})).await;
    assert_eq!(status, 204, "{body}");
    let path = format!("/api/v2/keys/{}/actions/wrap", ids[0]);
    let (status, body) = support::kp_call(info, &token, post, &path, json!({})).await;
    assert_eq!(status, 409, "{body}");
    let (status, body) = support::kp_call(
        info,
        &token,
        reqwest::Method::DELETE,
        &format!("/api/v2/keys/{}", ids[1]),
        Value::Null,
    )
    .await;
    assert!(status == 204 || status == 200, "{status} {body}");
}

#[tokio::test(flavor = "multi_thread")]
async fn verify_passes_on_a_real_instance_and_names_each_tampered_entry() {
    let dir = tempfile::tempdir().unwrap();
    let (dev, info) = tokio::task::block_in_place(|| start(dir.path()));
    let ws = Workstation::of_dev(&info);
    key_events(&info).await;
    // A key-part rotation: admin commands on every unit, and the key event chain
    // countersigned at each.
    for custodian in ["D", "E", "F"] {
        ws.ok(&["parts", "new", "--description", custodian]);
    }
    ws.ok(&["mk", "load", "4", "5", "6"]);
    ws.ok(&["mk", "commit"]);
    ws.ok(&["mk", "rotate", "--yes"]);

    let report = ws.json(&["audit", "verify"]);
    assert_eq!(report["intact"], true, "{report}");
    let chains = report["chains"].as_array().unwrap();
    assert_eq!(chains.len(), 3, "{report}");
    // Create x3, disable, the refused wrap, delete.
    assert_eq!(chains[0]["entries"], 6, "{report}");
    assert_eq!(chains[0]["countersigned"], 6, "{report}");
    assert!(chains[1]["entries"].as_u64().unwrap() >= 6, "{report}");
    let shown = ws.json(&["audit"]);
    let events = &shown["instances"][0]["key_events"];
    assert_eq!(events[4]["record"]["event"], "wrap", "{shown}");
    assert_eq!(
        events[4]["record"]["verdict"]["refused"]["code"], "KEY_ACTION_INVALID_STATE_ERR",
        "{shown}"
    );

    let instance_chain = format!("instance:{}", info.instance);
    let unit_1 = format!("unit:{}", info.units[0].id);
    let unit_2 = format!("unit:{}", info.units[1].id);

    // A byte of key event 2 changed, admin entries 1 and 2 of unit 1 swapped, admin entry 2 of
    // unit 2 removed.
    tokio::task::block_in_place(|| stop(dev, &info));
    let db = database(&info);
    let original = entry(&db, &instance_chain, 2);
    let mut changed = original.clone();
    let middle = changed.0.len() / 2;
    changed.0[middle] ^= 0x20;
    put(&db, &instance_chain, 2, &changed);
    let (first, second) = (entry(&db, &unit_1, 1), entry(&db, &unit_1, 2));
    put(&db, &unit_1, 1, &second);
    put(&db, &unit_1, 2, &first);
    let removed = entry(&db, &unit_2, 2);
    remove(&db, &unit_2, 2);
    drop(db);
    let (dev, info) = tokio::task::block_in_place(|| start(dir.path()));
    let ws = Workstation::of_dev(&info);
    ws.fails(&["audit", "verify"], 5, "entry 2 was changed");
    ws.fails(
        &["audit", "verify", "--unit", "1"],
        5,
        "entry 1 is out of order",
    );
    ws.fails(
        &["audit", "verify", "--unit", "2"],
        5,
        "entry 2 was removed",
    );

    // Everything put back, then the last key event removed.
    tokio::task::block_in_place(|| stop(dev, &info));
    let db = database(&info);
    put(&db, &instance_chain, 2, &original);
    put(&db, &unit_1, 1, &first);
    put(&db, &unit_1, 2, &second);
    put(&db, &unit_2, 2, &removed);
    let last = length(&db, &instance_chain);
    remove(&db, &instance_chain, last);
    drop(db);
    let (_dev, info) = tokio::task::block_in_place(|| start(dir.path()));
    let ws = Workstation::of_dev(&info);
    ws.fails(
        &["audit", "verify"],
        5,
        &format!("entry {last} was removed"),
    );
    ws.ok(&["audit", "verify", "--unit", "1"]);
    ws.ok(&["audit", "verify", "--unit", "2"]);
}

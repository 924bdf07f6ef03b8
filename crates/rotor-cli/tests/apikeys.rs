//! API keys kept in the store: managed with `rotor apikeys` while the service runs, honoured by
//! every replica at once (two service processes on one data directory), and a revoked or
//! rotated key's tokens refused within the documented bound. The configured keys keep working
//! beside them, and only a Manager manages keys.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::zombie_processes
)]

mod support;

use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::Value;

/// Starts a second `rotor server` on the dev instance's data directory and units: another
/// replica sharing its store and token signing key. Its configuration holds one API key, the
/// dev `manager`.
fn start_replica(info: &rotor_server::dev::DevInfo, dir: &Path) -> (support::DevProcess, String) {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let config = support::service_config(
        info,
        info.dir.join("service"),
        format!("127.0.0.1:{port}").parse().unwrap(),
        info.units.clone(),
        "manager",
        rotor_server::iam::Role::Manager,
    );
    let path = dir.join("replica.toml");
    std::fs::write(&path, config.to_toml()).unwrap();
    let child = std::process::Command::new(env!("CARGO_BIN_EXE_rotor"))
        .args(["server", "--config"])
        .arg(&path)
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(dir.join("replica.log")).unwrap())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            Instant::now() < deadline,
            "the second replica did not start"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    (child.into(), format!("https://127.0.0.1:{port}"))
}

/// The status of a Key Protect call (`HEAD /api/v2/keys`) with `token` at `endpoint`.
async fn kp_status(
    info: &rotor_server::dev::DevInfo,
    endpoint: &str,
    token: &str,
) -> reqwest::StatusCode {
    support::api_http(info)
        .head(format!("{endpoint}/api/v2/keys"))
        .bearer_auth(token)
        .header("bluemix-instance", info.instance.to_string())
        .send()
        .await
        .unwrap()
        .status()
}

/// The status of a token request for `api_key` at `endpoint`.
async fn token_status(
    info: &rotor_server::dev::DevInfo,
    endpoint: &str,
    api_key: &str,
) -> reqwest::StatusCode {
    support::api_http(info)
        .post(format!("{endpoint}/identity/token"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(format!(
            "grant_type=urn%3Aibm%3Aparams%3Aoauth%3Agrant-type%3Aapikey&apikey={api_key}"
        ))
        .send()
        .await
        .unwrap()
        .status()
}

/// Waits, with a generous deadline, until `token` is refused (401) at `endpoint`.
async fn until_refused(info: &rotor_server::dev::DevInfo, endpoint: &str, token: &str) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let status = kp_status(info, endpoint, token).await;
        if status == reqwest::StatusCode::UNAUTHORIZED {
            return;
        }
        assert_eq!(status, reqwest::StatusCode::OK, "before the refusal");
        assert!(
            Instant::now() < deadline,
            "the token of a revoked or rotated key is still accepted"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The workstation of `info` acting with `api_key`.
fn acting_as(
    info: &rotor_server::dev::DevInfo,
    home: &Path,
    api_key: &str,
) -> support::Workstation {
    support::Workstation {
        home: home.to_owned(),
        info: rotor_server::dev::DevInfo {
            api_key: api_key.to_owned(),
            ..info.clone()
        },
        password: support::PASSWORD,
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn stored_api_keys_work_on_every_replica_and_their_revocation_is_bounded() {
    let dir = tempfile::tempdir().unwrap();
    let (_dev, info) = tokio::task::block_in_place(|| {
        support::start_dev(
            dir.path(),
            &["--imprint", "--units", "1", "--recovery-units", "0"],
        )
    });
    let (_replica, other) = tokio::task::block_in_place(|| start_replica(&info, dir.path()));
    let home = dir.path().join("home");
    // The dev manager's key comes from the configuration (the bootstrap).
    let manager = acting_as(&info, &home, &info.api_keys["manager"]);
    let instance = info.instance.to_string();

    // Created on one replica, the key gets a token on the other, which the API accepts.
    let created = tokio::task::block_in_place(|| {
        manager.json(&[
            "apikeys",
            "create",
            "--name",
            "ci",
            "--instance",
            &instance,
            "--role",
            "Writer",
        ])
    });
    let id = created["api_key"]["id"].as_str().unwrap().to_owned();
    let key = created["key"].as_str().unwrap().to_owned();
    assert!(key.starts_with("rotor_"), "{created}");
    assert_eq!(created["api_key"]["role"], "Writer");
    assert_eq!(created["api_key"]["created_by"], "manager");
    let token = support::access_token_at(&other, &info.ca_cert, &key);
    assert_eq!(kp_status(&info, &other, &token).await, 200);
    assert_eq!(kp_status(&info, &info.endpoint, &token).await, 200);

    // The list shows it, never a hash or the key.
    let listed = tokio::task::block_in_place(|| manager.json(&["apikeys", "list"]));
    let keys = listed["api_keys"].as_array().unwrap();
    assert_eq!(keys.len(), 1, "{listed}");
    assert_eq!(keys[0]["name"], "ci");
    assert!(!listed.to_string().contains(&key));
    assert!(keys[0].get("key_sha256").is_none());
    let table = tokio::task::block_in_place(|| manager.ok(&["apikeys", "list"]));
    assert!(table.contains("ci") && table.contains("active"), "{table}");

    // Only a Manager manages keys, and only for instances its own key covers.
    tokio::task::block_in_place(|| {
        let writer = acting_as(&info, &home, &info.api_keys["writer"]);
        writer.fails(&["apikeys", "list"], 6, "Manager role");
        let stored_writer = acting_as(&info, &home, &key);
        stored_writer.fails(
            &[
                "apikeys",
                "create",
                "--name",
                "x",
                "--instance",
                &instance,
                "--role",
                "Reader",
            ],
            6,
            "Manager role",
        );
        manager.fails(
            &[
                "apikeys",
                "create",
                "--name",
                "all",
                "--instance",
                "*",
                "--role",
                "Reader",
            ],
            6,
            "does not cover instance '*'",
        );
        manager.fails(
            &[
                "apikeys",
                "create",
                "--name",
                "ci",
                "--instance",
                &instance,
                "--role",
                "Reader",
            ],
            1,
            "exists already",
        );
    });

    // A stored Manager key manages keys too, on the other replica.
    let ops = tokio::task::block_in_place(|| {
        manager.json(&[
            "apikeys",
            "create",
            "--name",
            "ops",
            "--instance",
            &instance,
            "--role",
            "Manager",
        ])
    });
    let ops = support::Workstation {
        info: rotor_server::dev::DevInfo {
            endpoint: other.clone(),
            ..acting_as(&info, &home, ops["key"].as_str().unwrap()).info
        },
        home: home.clone(),
        password: support::PASSWORD,
    };

    // Rotated on the other replica: the old value is refused at once everywhere, its token
    // within the bound, and the new value works.
    let rotated = tokio::task::block_in_place(|| ops.json(&["apikeys", "rotate", &id, "--yes"]));
    assert_eq!(rotated["api_key"]["generation"], 2);
    assert_eq!(rotated["api_key"]["rotated_by"], "ops");
    let new_key = rotated["key"].as_str().unwrap().to_owned();
    assert_ne!(new_key, key);
    assert_eq!(token_status(&info, &info.endpoint, &key).await, 400);
    assert_eq!(token_status(&info, &other, &key).await, 400);
    until_refused(&info, &info.endpoint, &token).await;
    until_refused(&info, &other, &token).await;
    let new_token = support::access_token(&info, &new_key);
    assert_eq!(kp_status(&info, &other, &new_token).await, 200);

    // Revoked on the first replica: the key is refused at once everywhere, its token on the
    // other replica within the bound.
    let revoked: Value =
        tokio::task::block_in_place(|| manager.json(&["apikeys", "revoke", &id, "--yes"]));
    assert_eq!(revoked["api_key"]["revoked_by"], "manager");
    assert_eq!(token_status(&info, &other, &new_key).await, 400);
    assert_eq!(token_status(&info, &info.endpoint, &new_key).await, 400);
    until_refused(&info, &other, &new_token).await;
    assert_eq!(kp_status(&info, &info.endpoint, &new_token).await, 401);
    tokio::task::block_in_place(|| {
        ops.fails(&["apikeys", "rotate", &id, "--yes"], 1, "is revoked");
        let table = ops.ok(&["apikeys", "list"]);
        assert!(
            table.contains("revoked") && table.contains("by manager"),
            "{table}"
        );
    });

    // The configured keys still work, on both replicas.
    let bootstrap = support::access_token(&info, &info.api_keys["manager"]);
    assert_eq!(kp_status(&info, &info.endpoint, &bootstrap).await, 200);
    assert_eq!(kp_status(&info, &other, &bootstrap).await, 200);
    let reader = support::access_token(&info, &info.api_keys["reader"]);
    assert_eq!(kp_status(&info, &info.endpoint, &reader).await, 200);
}

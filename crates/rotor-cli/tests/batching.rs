//! The coalesced path to the units: 64 clients unwrap, wrap and rewrap at once, so the service
//! carries their requests to the units in shared batches. Every answer must be the caller's
//! own (each DEK is distinct and bound to its own AAD), and when a unit is SIGKILLed in the
//! middle, its batches go to the other unit and no request fails.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use serde_json::{Value, json};
use support::units::{kill_unit, unit_dir};

/// Concurrent clients.
const CLIENTS: usize = 64;
/// Root keys the DEKs are spread over.
const KEYS: usize = 8;
/// DEKs per client.
const DEKS_PER_CLIENT: usize = 4;

struct Dek {
    key: String,
    aad: String,
    dek: Vec<u8>,
    ciphertext: String,
}

async fn post(
    http: &reqwest::Client,
    info: &rotor_server::dev::DevInfo,
    token: &str,
    path: &str,
    body: &Value,
) -> Result<Value, String> {
    let response = http
        .post(format!("{}{path}", info.endpoint))
        .bearer_auth(token)
        .header("bluemix-instance", info.instance.to_string())
        .json(body)
        .send()
        .await
        .map_err(|err| format!("{path}: {err}"))?;
    let status = response.status();
    let text = response.text().await.map_err(|err| err.to_string())?;
    if !status.is_success() {
        return Err(format!("{path}: {status} {text}"));
    }
    serde_json::from_str(&text).map_err(|err| err.to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_requests_get_their_own_answers_and_survive_a_unit_killed_mid_batch() {
    let dir = tempfile::tempdir().unwrap();
    let (_dev, info) = support::start_dev(dir.path(), &["--units", "2", "--recovery-units", "1"]);
    let token = support::rotation::token(&info).await;
    let http = reqwest::Client::builder()
        .use_preconfigured_tls(
            rotor_tls::config::client_config(&rotor_tls::ClientTls::trusting(&info.ca_cert))
                .unwrap(),
        )
        .pool_max_idle_per_host(CLIENTS)
        .build()
        .unwrap();

    let mut keys = Vec::new();
    for n in 0..KEYS {
        let created = post(
            &http,
            &info,
            &token,
            "/api/v2/keys",
            &json!({
                "metadata": {"collectionType": "application/vnd.ibm.kms.key+json", "collectionTotal": 1},
                "resources": [{"type": "application/vnd.ibm.kms.key+json", "name": format!("batch-{n}")}],
            }),
        )
        .await
        .unwrap();
        keys.push(created["resources"][0]["id"].as_str().unwrap().to_owned());
    }

    // Each client's DEKs, wrapped through the batched path too.
    let mut wrapping = tokio::task::JoinSet::new();
    for client in 0..CLIENTS {
        let (http, info, token, keys) = (http.clone(), info.clone(), token.clone(), keys.clone());
        wrapping.spawn(async move {
            let mut deks = Vec::new();
            for n in 0..DEKS_PER_CLIENT {
                let key = keys[(client + n) % KEYS].clone();
                let aad = format!("client-{client}-dek-{n}");
                let mut dek = vec![0u8; 32];
                rotor_crypto::fill_random(&mut dek);
                let wrapped = post(
                    &http,
                    &info,
                    &token,
                    &format!("/api/v2/keys/{key}/actions/wrap"),
                    &json!({"plaintext": B64.encode(&dek), "aad": [aad]}),
                )
                .await
                .unwrap();
                let ciphertext = wrapped["ciphertext"].as_str().unwrap().to_owned();
                deks.push(Dek {
                    key,
                    aad,
                    dek,
                    ciphertext,
                });
            }
            deks
        });
    }
    let mut all: Vec<Vec<Dek>> = Vec::new();
    while let Some(deks) = wrapping.join_next().await {
        all.push(deks.unwrap());
    }

    // Every client unwraps and rewraps its DEKs in a loop while one unit is killed.
    let stop = Arc::new(AtomicBool::new(false));
    let requests = Arc::new(AtomicU64::new(0));
    let mut clients = tokio::task::JoinSet::new();
    for deks in all {
        let (http, info, token) = (http.clone(), info.clone(), token.clone());
        let (stop, requests) = (stop.clone(), requests.clone());
        clients.spawn(async move {
            let mut failures = Vec::new();
            let mut round = 0usize;
            while !stop.load(Ordering::Relaxed) {
                let dek = &deks[round % deks.len()];
                round += 1;
                let unwrapped = post(
                    &http,
                    &info,
                    &token,
                    &format!("/api/v2/keys/{}/actions/unwrap", dek.key),
                    &json!({"ciphertext": dek.ciphertext, "aad": [dek.aad]}),
                )
                .await;
                match unwrapped {
                    Ok(body) if body["plaintext"] == json!(B64.encode(&dek.dek)) => {}
                    Ok(body) => failures.push(format!("unwrap returned another DEK: {body}")),
                    Err(err) => failures.push(err),
                }
                let rewrapped = post(
                    &http,
                    &info,
                    &token,
                    &format!("/api/v2/keys/{}/actions/rewrap", dek.key),
                    &json!({"ciphertext": dek.ciphertext, "aad": [dek.aad]}),
                )
                .await;
                match rewrapped {
                    Ok(body) if body["ciphertext"].is_string() => {}
                    Ok(body) => failures.push(format!("rewrap answered {body}")),
                    Err(err) => failures.push(err),
                }
                requests.fetch_add(2, Ordering::Relaxed);
            }
            failures
        });
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let before_kill = requests.load(Ordering::Relaxed);
    let unit = unit_dir(&info, 1);
    tokio::task::spawn_blocking(move || kill_unit(&unit))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_secs(3)).await;
    stop.store(true, Ordering::Relaxed);
    let mut failures = Vec::new();
    while let Some(mine) = clients.join_next().await {
        failures.extend(mine.unwrap());
    }
    let total = requests.load(Ordering::Relaxed);
    assert!(
        before_kill > 0 && total > before_kill,
        "the load ran on both sides of the kill: {before_kill}, {total}"
    );
    assert!(
        failures.is_empty(),
        "{} of {total} requests failed: {:?}",
        failures.len(),
        &failures[..failures.len().min(5)]
    );
}

//! Rotation helpers shared by the rotation and replica tests: keys seeded with known DEKs,
//! their verification, and the rotation journal as the service and the CLI show it.

use std::time::{Duration, Instant};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use serde_json::{Value, json};

use super::Workstation;

/// A root key made for the test with the DEK it wraps.
pub(crate) struct Seeded {
    pub(crate) id: String,
    pub(crate) ciphertext: String,
    pub(crate) dek: Vec<u8>,
    pub(crate) aad: Vec<String>,
}

pub(crate) async fn token(info: &rotor_server::dev::DevInfo) -> String {
    let dev = info.clone();
    let key = info.api_keys["writer"].clone();
    tokio::task::spawn_blocking(move || super::access_token(&dev, &key))
        .await
        .unwrap()
}

/// `count` root keys made in bulk, plus one made through the Key Protect API, wrapping a DEK
/// with AAD, and rotated once so that its first-version ciphertext needs the old version.
pub(crate) async fn seed(
    info: &rotor_server::dev::DevInfo,
    count: usize,
) -> std::sync::Arc<Vec<Seeded>> {
    let token = token(info).await;
    let http = super::api_http(info);
    let mut seeded = Vec::new();
    for chunk in 0..count.div_ceil(5_000) {
        let n = 5_000.min(count - chunk * 5_000);
        let deks: Vec<Vec<u8>> = (0..n)
            .map(|i| format!("dek {chunk} {i}").into_bytes())
            .collect();
        let items: Vec<Value> = deks
            .iter()
            .enumerate()
            .map(|(i, dek)| json!({"name": format!("k{chunk}-{i}"), "dek": B64.encode(dek)}))
            .collect();
        let response = http
            .post(format!(
                "{}/v1/instances/{}/keys/batch",
                info.endpoint, info.instance
            ))
            .bearer_auth(&token)
            .json(&json!({ "keys": items }))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 201);
        let body: Value = response.json().await.unwrap();
        for (key, dek) in body["keys"].as_array().unwrap().iter().zip(deks) {
            seeded.push(Seeded {
                id: key["id"].as_str().unwrap().to_owned(),
                ciphertext: key["ciphertext"].as_str().unwrap().to_owned(),
                dek,
                aad: Vec::new(),
            });
        }
    }
    let (status, created) = super::kp_call(
        info,
        &token,
        reqwest::Method::POST,
        "/api/v2/keys",
        json!({"metadata": {"collectionType": "application/vnd.ibm.kms.key+json", "collectionTotal": 1},
               "resources": [{"type": "application/vnd.ibm.kms.key+json", "name": "api-made", "extractable": false}]}),
    )
    .await;
    assert_eq!(status, 201, "{created}");
    let id = created["resources"][0]["id"].as_str().unwrap().to_owned();
    let aad = vec!["tenant-a".to_owned()];
    let dek = b"a DEK with additional data".to_vec();
    let (status, wrapped) = super::kp_call(
        info,
        &token,
        reqwest::Method::POST,
        &format!("/api/v2/keys/{id}/actions/wrap"),
        json!({"plaintext": B64.encode(&dek), "aad": aad}),
    )
    .await;
    assert_eq!(status, 200, "{wrapped}");
    let (status, _) = super::kp_call(
        info,
        &token,
        reqwest::Method::POST,
        &format!("/api/v2/keys/{id}/actions/rotate"),
        json!({}),
    )
    .await;
    assert_eq!(status, 204);
    seeded.push(Seeded {
        id,
        ciphertext: wrapped["ciphertext"].as_str().unwrap().to_owned(),
        dek,
        aad,
    });
    std::sync::Arc::new(seeded)
}

/// Unwraps every seeded DEK through the Key Protect API, 16 at a time; panics on any mismatch.
pub(crate) async fn verify(
    info: &rotor_server::dev::DevInfo,
    seeded: &std::sync::Arc<Vec<Seeded>>,
) {
    use std::sync::atomic::{AtomicUsize, Ordering};
    let token = std::sync::Arc::new(token(info).await);
    let next = std::sync::Arc::new(AtomicUsize::new(0));
    let workers: Vec<_> = (0..16)
        .map(|_| {
            let (info, token, next, seeded) =
                (info.clone(), token.clone(), next.clone(), seeded.clone());
            tokio::spawn(async move {
                let mut failures = Vec::new();
                while let Some(key) = seeded.get(next.fetch_add(1, Ordering::Relaxed)) {
                    let (status, body) = super::kp_call(
                        &info,
                        &token,
                        reqwest::Method::POST,
                        &format!("/api/v2/keys/{}/actions/unwrap", key.id),
                        json!({"ciphertext": key.ciphertext, "aad": key.aad}),
                    )
                    .await;
                    let plain = body["plaintext"].as_str().and_then(|p| B64.decode(p).ok());
                    if status != 200 || plain.as_deref() != Some(key.dek.as_slice()) {
                        failures.push(format!("{}: {status} {body}", key.id));
                    }
                }
                failures
            })
        })
        .collect();
    let mut failures = Vec::new();
    for worker in workers {
        failures.extend(worker.await.unwrap());
    }
    assert!(
        failures.is_empty(),
        "{} of {} keys do not unwrap: {:?}",
        failures.len(),
        seeded.len(),
        &failures[..failures.len().min(3)]
    );
}

/// Every unit has `vp` current and an empty new register, and all key storage is under `vp`.
pub(crate) fn assert_rotated_to(ws: &Workstation, vp: &str) {
    let mk = ws.json(&["mk"]);
    for unit in mk["units"].as_array().unwrap() {
        assert_eq!(unit["current"]["vp"], vp, "{unit}");
        assert_eq!(unit["new"]["state"], "Empty", "{unit}");
        assert_eq!(unit["rotation"], "none", "{unit}");
    }
    let storage = mk["key_storage"].as_array().unwrap();
    assert_eq!(storage.len(), 1, "{storage:?}");
    assert_eq!(storage[0]["vp"], vp);
    assert_eq!(mk["rotation"]["phase"], "completed");
}

pub(crate) fn current_vp(ws: &Workstation) -> String {
    ws.json(&["mk"])["units"][0]["current"]["vp"]
        .as_str()
        .unwrap()
        .to_owned()
}

pub(crate) fn journal(ws: &Workstation) -> Value {
    ws.json(&["mk"])["rotation"].clone()
}

/// Polls the rotation journal through the admin API until `done` says so.
pub(crate) async fn wait_journal(
    info: &rotor_server::dev::DevInfo,
    done: impl Fn(&Value) -> bool,
) -> Value {
    let dev = info.clone();
    let key = info.api_key.clone();
    let token = tokio::task::spawn_blocking(move || super::access_token(&dev, &key))
        .await
        .unwrap();
    let url = format!("{}/v1/instances/{}/rotation", info.endpoint, info.instance);
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let body: Value = super::api_http(info)
            .get(&url)
            .bearer_auth(&token)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        if done(&body["rotation"]) {
            return body["rotation"].clone();
        }
        assert!(Instant::now() < deadline, "journal never got there: {body}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

//! A root key whose rotation policy is due gets a new version, made inside a real unit, and
//! DEKs wrapped before still unwrap; a key whose policy is not due, an imported key and a key
//! without a policy are left alone.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::zombie_processes
)]

mod support;

use std::collections::HashMap;
use std::sync::Arc;

use rotor_server::iam::{Iam, IamConfig};
use rotor_server::kp::{KpState, rotate_due};
use rotor_server::pool::{PoolUnit, UnitPool};
use rotor_store::{KeyStore, SqliteStore};
use rotor_unit::backend::{HttpUnit, UnitLink};
use serde_json::{Value, json};

fn key_body(name: &str, extra: Value) -> Value {
    let mut resource =
        json!({"type": "application/vnd.ibm.kms.key+json", "name": name, "extractable": false});
    if let (Some(target), Some(fields)) = (resource.as_object_mut(), extra.as_object()) {
        target.extend(fields.clone());
    }
    json!({"metadata": {"collectionType": "application/vnd.ibm.kms.key+json", "collectionTotal": 1}, "resources": [resource]})
}

#[tokio::test(flavor = "multi_thread")]
async fn due_rotation_policies_rotate_inside_a_unit() {
    let dir = tempfile::tempdir().unwrap();
    let (_dev, info) = tokio::task::block_in_place(|| {
        support::start_dev(dir.path(), &["--units", "2", "--recovery-units", "0"])
    });
    let token = support::access_token(&info, &info.api_key);
    let post = reqwest::Method::POST;

    let policy = json!({"rotation": {"enabled": true, "interval_month": 1}});
    let (status, due) = support::kp_call(
        &info,
        &token,
        post.clone(),
        "/api/v2/keys",
        key_body("due", policy.clone()),
    )
    .await;
    assert_eq!(status, 201, "{due}");
    let due_id = due["resources"][0]["id"].as_str().unwrap().to_owned();
    let (_, fresh) = support::kp_call(
        &info,
        &token,
        post.clone(),
        "/api/v2/keys",
        key_body("fresh", policy.clone()),
    )
    .await;
    let fresh_id = fresh["resources"][0]["id"].as_str().unwrap().to_owned();
    let (_, plain) = support::kp_call(
        &info,
        &token,
        post.clone(),
        "/api/v2/keys",
        key_body("no-policy", json!({})),
    )
    .await;
    let plain_id = plain["resources"][0]["id"].as_str().unwrap().to_owned();
    let (status, wrapped) = support::kp_call(
        &info,
        &token,
        post.clone(),
        &format!("/api/v2/keys/{due_id}/actions/wrap"),
        json!({"plaintext": "c2VjcmV0IGRlaw==", "aad": ["policy"]}),
    )
    .await;
    assert_eq!(status, 200, "{wrapped}");

    // Back-date two keys by 31 days in the keystore the service uses.
    let store = SqliteStore::open(&info.dir.join("service").join("keys.db")).unwrap();
    let month_and_a_day = 31 * 24 * 3600 * 1000;
    for id in [&due_id, &plain_id] {
        store
            .update(info.instance, id.parse().unwrap(), &mut |key| {
                key.created -= month_and_a_day;
                Ok(())
            })
            .unwrap();
    }

    // The policy check, against the instance's real units.
    let units = info
        .units
        .iter()
        .map(|unit| PoolUnit {
            id: unit.id,
            operational: true,
            link: UnitLink::Http(HttpUnit::new(support::unit_http(&info), unit.address)),
        })
        .collect();
    let store = Arc::new(store);
    let units = UnitPool::new(HashMap::from([(info.instance, units)]));
    let state = KpState {
        store: store.clone(),
        iam: Arc::new(Iam::new(
            rotor_crypto::Secret32::random(),
            &IamConfig::default(),
        )),
        units: units.clone(),
        purge_after_seconds: 0,
        replica: "test".into(),
        trusted_proxies: Arc::default(),
        listen_port: 0,
        last_sync: Arc::default(),
        audit: rotor_server::audit::AuditTrail::new(store, units),
    };
    assert_eq!(rotate_due(&state, info.instance).await.unwrap(), 1);
    // Rotated now, so not due again.
    assert_eq!(rotate_due(&state, info.instance).await.unwrap(), 0);

    let get = reqwest::Method::GET;
    let versions = |id: String| {
        let (info, token, get) = (info.clone(), token.clone(), get.clone());
        async move {
            let (_, body) = support::kp_call(
                &info,
                &token,
                get,
                &format!("/api/v2/keys/{id}/versions"),
                Value::Null,
            )
            .await;
            body["resources"].as_array().unwrap().len()
        }
    };
    assert_eq!(versions(due_id.clone()).await, 2);
    assert_eq!(versions(fresh_id).await, 1);
    assert_eq!(versions(plain_id).await, 1);
    let (_, metadata) = support::kp_call(
        &info,
        &token,
        get.clone(),
        &format!("/api/v2/keys/{due_id}/metadata"),
        Value::Null,
    )
    .await;
    assert!(
        metadata["resources"][0]["lastRotateDate"].is_string(),
        "{metadata}"
    );

    // The DEK wrapped before the rotation still unwraps, under the old version.
    let (status, unwrapped) = support::kp_call(
        &info,
        &token,
        post,
        &format!("/api/v2/keys/{due_id}/actions/unwrap"),
        json!({"ciphertext": wrapped["ciphertext"], "aad": ["policy"]}),
    )
    .await;
    assert_eq!(status, 200, "{unwrapped}");
    assert_eq!(unwrapped["plaintext"], "c2VjcmV0IGRlaw==");
    assert!(
        unwrapped["rewrappedKeyVersion"]["id"].is_string(),
        "{unwrapped}"
    );
}

//! Key operations on an instance whose units hold no master key fail with an error that says so,
//! and change nothing; the admin (unit) routes refuse tokens without the Manager or Crypto Unit
//! Administrator role.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::zombie_processes
)]

mod support;

use serde_json::{Value, json};

#[tokio::test(flavor = "multi_thread")]
async fn no_master_key_is_a_clear_error_and_admin_routes_need_their_role() {
    let dir = tempfile::tempdir().unwrap();
    let (_dev, info) = tokio::task::block_in_place(|| {
        support::start_dev(
            dir.path(),
            &["--imprint", "--units", "2", "--recovery-units", "0"],
        )
    });
    let http = support::api_http(&info);
    let manager = support::access_token(&info, &info.api_keys["manager"]);
    let count = || async {
        let response = http
            .head(format!("{}/api/v2/keys", info.endpoint))
            .bearer_auth(&manager)
            .header("bluemix-instance", info.instance.to_string())
            .send()
            .await
            .unwrap();
        response.headers()["key-total"].to_str().unwrap().to_owned()
    };
    assert_eq!(count().await, "0");

    // The units are in imprint mode: no master key, so no key can be made.
    let body = json!({
        "metadata": {"collectionType": "application/vnd.ibm.kms.key+json", "collectionTotal": 1},
        "resources": [{"type": "application/vnd.ibm.kms.key+json", "name": "no-master-key", "extractable": false}],
    });
    let response = http
        .post(format!("{}/api/v2/keys", info.endpoint))
        .bearer_auth(&manager)
        .header("bluemix-instance", info.instance.to_string())
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 409);
    let error: Value = response.json().await.unwrap();
    let reason = &error["resources"][0]["reasons"][0];
    assert_eq!(reason["code"], "NO_MASTER_KEY_ERR", "{error}");
    assert!(
        reason["message"]
            .as_str()
            .unwrap()
            .contains("usable current master key"),
        "{error}"
    );
    assert_eq!(count().await, "0");

    // Unit administration: Manager and Crypto Unit Administrator may, Reader and Writer may not.
    for (identity, allowed) in [
        ("manager", true),
        ("admin", true),
        ("reader", false),
        ("writer", false),
    ] {
        let token = support::access_token(&info, &info.api_keys[identity]);
        let listed = http
            .get(format!("{}/v1/instances", info.endpoint))
            .bearer_auth(&token)
            .send()
            .await
            .unwrap();
        let unit = &info.units[0];
        let status = http
            .get(format!(
                "{}/v1/instances/{}/units/{}/status?challenge=00",
                info.endpoint, info.instance, unit.id
            ))
            .bearer_auth(&token)
            .send()
            .await
            .unwrap();
        let expected = if allowed { 200 } else { 403 };
        assert_eq!(
            listed.status().as_u16(),
            expected,
            "{identity} listing instances"
        );
        assert_eq!(
            status.status().as_u16(),
            expected,
            "{identity} querying a unit"
        );
        if !allowed {
            let body: Value = status.json().await.unwrap();
            assert_eq!(body["errorCode"], "role_insufficient", "{identity}: {body}");
        }
    }
    // The keystore and token signing key are private to the service.
    use std::os::unix::fs::PermissionsExt as _;
    let mode =
        |path: std::path::PathBuf| std::fs::metadata(path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(info.dir.join("service")), 0o700);
    assert_eq!(mode(info.dir.join("service").join("iam.key")), 0o600);
    let anonymous = http
        .get(format!("{}/v1/instances", info.endpoint))
        .send()
        .await
        .unwrap();
    assert_eq!(anonymous.status().as_u16(), 401);
}

//! Operations on a dev instance: `GET /metrics` on the service (a token that may read it) and
//! on a unit (its own service's certificate only), counting requests by route template; JSON
//! logs in which the service and the unit that served a request both carry the client's
//! correlation id.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use serde_json::{Value, json};

const CORRELATION_ID: &str = "ops-test.42_a";

/// The JSON log lines of `file` whose request span carries `id` (the process's own messages
/// to its operator, such as a unit's fingerprint, are plain text beside them).
fn lines_with(file: &std::path::Path, id: &str) -> Vec<Value> {
    std::fs::read_to_string(file)
        .unwrap()
        .lines()
        .filter_map(|line| serde_json::from_str::<Value>(line).ok())
        .filter(|line| line["span"]["correlation_id"] == id)
        .collect()
}

/// The value of the sample of `family` whose labels include every one of `labels`.
fn sample(text: &str, family: &str, labels: &[&str]) -> Option<f64> {
    text.lines()
        .filter(|line| line.starts_with(&format!("{family}{{")))
        .find(|line| labels.iter().all(|label| line.contains(label)))
        .and_then(|line| line.rsplit(' ').next()?.parse().ok())
}

#[tokio::test(flavor = "multi_thread")]
async fn metrics_and_json_logs_follow_a_request_through_the_service_and_its_unit() {
    let dir = tempfile::tempdir().unwrap();
    let service_log = dir.path().join("dev.log");
    let (_dev, info) = tokio::task::block_in_place(|| {
        support::start_dev_with(
            dir.path(),
            &["--units", "1", "--recovery-units", "0"],
            &[("ROTOR_LOG", "info"), ("ROTOR_LOG_FORMAT", "json")],
            std::fs::File::create(&service_log).unwrap(),
        )
    });
    let http = support::api_http(&info);
    let token = |name: &str| support::access_token(&info, &info.api_keys[name]);
    let (manager, reader, admin) = (token("manager"), token("reader"), token("admin"));

    // A key created with the client's correlation id, which comes back under both names.
    let created = http
        .post(format!("{}/api/v2/keys", info.endpoint))
        .bearer_auth(&manager)
        .header("bluemix-instance", info.instance.to_string())
        .header("x-correlation-id", CORRELATION_ID)
        .json(&json!({
            "metadata": {"collectionType": "application/vnd.ibm.kms.key+json", "collectionTotal": 1},
            "resources": [{"type": "application/vnd.ibm.kms.key+json", "name": "ops", "extractable": false}],
        }))
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), 201);
    for name in ["x-correlation-id", "correlation-id"] {
        assert_eq!(created.headers()[name], CORRELATION_ID, "{name}");
    }
    let body: Value = created.json().await.unwrap();
    let key = body["resources"][0]["id"].as_str().unwrap().to_owned();
    let read = http
        .get(format!("{}/api/v2/keys/{key}", info.endpoint))
        .bearer_auth(&reader)
        .header("bluemix-instance", info.instance.to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(read.status(), 200);

    // The service's metrics: refused without a token and to a role below Reader.
    let metrics_url = format!("{}/metrics", info.endpoint);
    let anonymous = http.get(&metrics_url).send().await.unwrap();
    assert_eq!(anonymous.status(), 401);
    let unit_admin = http
        .get(&metrics_url)
        .bearer_auth(&admin)
        .send()
        .await
        .unwrap();
    assert_eq!(unit_admin.status(), 403);
    let answered = http
        .get(&metrics_url)
        .bearer_auth(&reader)
        .send()
        .await
        .unwrap();
    assert_eq!(answered.status(), 200);
    assert!(
        answered.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/plain; version=0.0.4")
    );
    let text = answered.text().await.unwrap();
    let requests = "rotor_http_requests_total";
    let created_count = sample(
        &text,
        requests,
        &[
            r#"route="/api/v2/keys""#,
            r#"method="POST""#,
            r#"status="201""#,
        ],
    );
    assert!(created_count >= Some(1.0), "{text}");
    let read_count = sample(
        &text,
        requests,
        &[
            r#"route="/api/v2/keys/{id}""#,
            r#"method="GET""#,
            r#"status="200""#,
        ],
    );
    assert!(read_count >= Some(1.0), "{text}");
    // The refusals before this answer were counted too, under their route.
    let refused = sample(&text, requests, &[r#"route="/metrics""#, r#"status="401""#]);
    assert!(refused >= Some(1.0), "{text}");
    assert!(!text.contains(&key), "a key id in the metrics:\n{text}");
    let unit = info.units[0].id.to_string();
    let up = sample(&text, "rotor_unit_up", &[&format!(r#"unit="{unit}""#)]);
    assert_eq!(up, Some(1.0), "{text}");
    assert!(text.contains("\nprocess_resident_memory_bytes "), "{text}");

    // The unit's metrics: to its own service's certificate, not to another instance's.
    let pki = info.dir.join("pki");
    let unit_metrics = format!("https://{}/metrics", info.units[0].address);
    let own = support::service_http(&pki, &pki.join("service"));
    let answered = own.get(&unit_metrics).send().await.unwrap();
    assert_eq!(answered.status(), 200);
    let text = answered.text().await.unwrap();
    let served = text
        .lines()
        .filter(|line| line.starts_with("rotor_http_requests_total{"))
        .any(|line| line.contains(r#"route="/v1/keys/"#) && line.contains(r#"status="200""#));
    assert!(served, "{text}");
    let mut ca = rotor_tls::pki::Authority::open(&pki).unwrap();
    ca.issue(
        &rotor_tls::pki::Subject {
            role: rotor_tls::Role::Service {
                instance: uuid::Uuid::new_v4(),
            },
            dns_names: vec![],
            ip_addresses: vec![],
        },
        1,
    )
    .unwrap()
    .write(&dir.path().join("other"))
    .unwrap();
    let other = support::service_http(&pki, &dir.path().join("other"));
    assert_eq!(other.get(&unit_metrics).send().await.unwrap().status(), 401);

    // The same correlation id in the service's JSON log and in the unit's.
    let in_service = lines_with(&service_log, CORRELATION_ID);
    assert!(
        in_service
            .iter()
            .any(|line| line["fields"]["message"] == "request served"
                && line["span"]["route"] == "/api/v2/keys"),
        "{in_service:?}"
    );
    let unit_dir = std::fs::read_dir(info.dir.join("units"))
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .find(|dir| dir.join("unit.log").exists())
        .unwrap();
    let in_unit = lines_with(&unit_dir.join("unit.log"), CORRELATION_ID);
    assert!(
        in_unit.iter().any(|line| line["span"]["route"]
            .as_str()
            .unwrap()
            .starts_with("/v1/keys/")),
        "{in_unit:?}"
    );
}

#![allow(clippy::unwrap_used, clippy::expect_used)]

use axum::Router;
use axum::body::Body;
use axum::http::{Request, StatusCode};
use axum::routing::get;
use tower::ServiceExt as _;

use crate::correlation::{self, CorrelationId, HEADER, KEY_PROTECT_HEADER};

#[test]
fn a_correlation_id_is_taken_only_when_well_formed() {
    assert!(CorrelationId::parse("req-1.A_b").is_some());
    assert!(CorrelationId::parse(&"a".repeat(64)).is_some());
    assert!(CorrelationId::parse(&"a".repeat(65)).is_none());
    assert!(CorrelationId::parse("").is_none());
    assert!(CorrelationId::parse("two words").is_none());
    assert!(CorrelationId::parse("line\nbreak").is_none());
    assert!(CorrelationId::parse("é").is_none());
}

/// A router with one templated route that answers the correlation id its task sees.
fn router() -> Router {
    Router::new()
        .route(
            "/things/{id}",
            get(|| async {
                correlation::current()
                    .map(|id| id.to_string())
                    .unwrap_or_default()
            }),
        )
        .layer(axum::middleware::from_fn(crate::observe))
}

async fn call(headers: &[(&str, &str)], path: &str) -> (StatusCode, String, String, String) {
    let mut request = Request::get(path);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let response = router()
        .oneshot(request.body(Body::empty()).unwrap())
        .await
        .unwrap();
    let status = response.status();
    let header = |name| {
        response
            .headers()
            .get(name)
            .map(|value| value.to_str().unwrap().to_owned())
            .unwrap_or_default()
    };
    let (ours, key_protect) = (header(HEADER), header(KEY_PROTECT_HEADER));
    let body = axum::body::to_bytes(response.into_body(), 1 << 16)
        .await
        .unwrap();
    (
        status,
        ours,
        key_protect,
        String::from_utf8(body.to_vec()).unwrap(),
    )
}

#[tokio::test]
async fn the_client_id_is_seen_by_the_handler_and_returned_under_both_names() {
    let (status, ours, key_protect, seen) =
        call(&[("x-correlation-id", "abc-1")], "/things/7").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!((ours.as_str(), key_protect.as_str()), ("abc-1", "abc-1"));
    assert_eq!(seen, "abc-1");

    let (_, ours, _, seen) = call(&[("correlation-id", "kp-2")], "/things/7").await;
    assert_eq!((ours.as_str(), seen.as_str()), ("kp-2", "kp-2"));

    // A Key Protect SDK sends its caller's id as Correlation-Id beside an X-Correlation-Id of
    // its own: the caller's wins.
    let both = [
        ("x-correlation-id", "sdk-made"),
        ("correlation-id", "callers"),
    ];
    let (_, ours, key_protect, seen) = call(&both, "/things/7").await;
    assert_eq!([ours, key_protect, seen], ["callers"; 3]);
    let malformed_kp = [
        ("x-correlation-id", "sdk-made"),
        ("correlation-id", "bad id"),
    ];
    let (_, ours, _, _) = call(&malformed_kp, "/things/7").await;
    assert_eq!(ours, "sdk-made");
}

#[tokio::test]
async fn a_malformed_or_missing_id_is_replaced_by_a_fresh_uuid() {
    for headers in [&[("x-correlation-id", "bad id!")][..], &[]] {
        let (_, ours, key_protect, seen) = call(headers, "/things/7").await;
        assert!(uuid::Uuid::parse_str(&ours).is_ok(), "{ours}");
        assert_eq!(key_protect, ours);
        assert_eq!(seen, ours);
    }
}

#[tokio::test]
async fn requests_are_counted_by_route_template_never_by_path() {
    call(&[], "/things/d3c0ded1d").await;
    call(&[], "/nowhere/5ec7e7").await;
    let text = crate::metrics::render().unwrap();
    let line = text
        .lines()
        .find(|line| {
            line.starts_with("rotor_http_requests_total{")
                && line.contains(r#"route="/things/{id}""#)
                && line.contains(r#"method="GET""#)
                && line.contains(r#"status="200""#)
        })
        .expect(&text);
    let count: u64 = line.rsplit(' ').next().unwrap().parse().unwrap();
    assert!(count >= 1, "{line}");
    assert!(text.contains("rotor_http_request_duration_seconds_bucket{"));
    assert!(text.contains(r#"route="unmatched""#), "{text}");
    assert!(!text.contains("d3c0ded1d") && !text.contains("5ec7e7"));
    #[cfg(target_os = "linux")]
    assert!(text.contains("process_resident_memory_bytes"), "{text}");
}

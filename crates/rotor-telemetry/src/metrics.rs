//! The process's Prometheus registry and its text exposition (`GET /metrics`).
//!
//! Registered here: `rotor_http_requests_total` and `rotor_http_request_duration_seconds` by
//! `route` (the template, never the path), `method` and `status`, and on Linux the process
//! collector's `process_*` metrics (CPU seconds, resident and virtual memory, open and maximum
//! file descriptors, start time, threads). The service registers its own beside them through
//! [`register`]. No metric carries a key id, a key's material or a secret.

use std::sync::LazyLock;
use std::time::Duration;

use axum::http::Method;
use axum::http::header::CONTENT_TYPE;
use axum::response::{IntoResponse, Response};
use prometheus::core::Collector;
use prometheus::{
    Histogram, HistogramOpts, HistogramVec, IntCounterVec, IntGaugeVec, Opts, Registry,
};

/// The media type of the text exposition format.
pub const CONTENT_TYPE_TEXT: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Latency buckets in seconds: a key operation takes about a millisecond, an import token
/// (RSA-4096 generated in a unit) seconds, a rewrap batch up to tens of seconds.
const LATENCY_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
    60.0,
];

static REGISTRY: LazyLock<Registry> = LazyLock::new(|| {
    let registry = Registry::new();
    #[cfg(target_os = "linux")]
    if let Err(err) = registry.register(Box::new(
        prometheus::process_collector::ProcessCollector::for_self(),
    )) {
        tracing::error!(error = %err, "process metrics not registered");
    }
    registry
});

/// Registers `collector` in the process's registry; a collector whose names clash with one
/// already there is refused and logged (its metrics are then not exposed).
pub fn register<C: Collector + Clone + 'static>(collector: C) -> C {
    if let Err(err) = REGISTRY.register(Box::new(collector.clone())) {
        tracing::error!(error = %err, "metrics not registered");
    }
    collector
}

/// A counter family with `labels`, registered. The names are the program's own constants:
/// a name Prometheus refuses is a programming error, logged, and the family stays unexposed.
pub fn counter_vec(name: &str, help: &str, labels: &[&str]) -> Option<IntCounterVec> {
    IntCounterVec::new(Opts::new(name, help), labels)
        .inspect_err(|err| tracing::error!(name, error = %err, "bad metric"))
        .ok()
        .map(register)
}

/// A gauge family with `labels`, registered (see [`counter_vec`]).
pub fn gauge_vec(name: &str, help: &str, labels: &[&str]) -> Option<IntGaugeVec> {
    IntGaugeVec::new(Opts::new(name, help), labels)
        .inspect_err(|err| tracing::error!(name, error = %err, "bad metric"))
        .ok()
        .map(register)
}

/// A histogram with `buckets`, registered (see [`counter_vec`]).
pub fn histogram(name: &str, help: &str, buckets: Vec<f64>) -> Option<Histogram> {
    Histogram::with_opts(HistogramOpts::new(name, help).buckets(buckets))
        .inspect_err(|err| tracing::error!(name, error = %err, "bad metric"))
        .ok()
        .map(register)
}

struct Http {
    requests: IntCounterVec,
    duration: HistogramVec,
}

static HTTP: LazyLock<Option<Http>> = LazyLock::new(|| {
    let labels = ["route", "method", "status"];
    let requests = counter_vec(
        "rotor_http_requests_total",
        "HTTP requests answered, by route template, method and status",
        &labels,
    )?;
    let duration = HistogramVec::new(
        HistogramOpts::new(
            "rotor_http_request_duration_seconds",
            "Time to answer an HTTP request, by route template, method and status",
        )
        .buckets(LATENCY_BUCKETS.to_vec()),
        &labels,
    )
    .inspect_err(|err| tracing::error!(error = %err, "bad metric"))
    .ok()
    .map(register)?;
    Some(Http { requests, duration })
});

/// The method as a label: the standard ones by name, any other as `other`, so that a client
/// inventing methods cannot grow the label set.
pub fn method_label(method: &Method) -> &'static str {
    match *method {
        Method::GET => "GET",
        Method::HEAD => "HEAD",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::PATCH => "PATCH",
        Method::DELETE => "DELETE",
        Method::OPTIONS => "OPTIONS",
        _ => "other",
    }
}

/// Counts and times one answered request.
pub fn observe_request(route: &str, method: &str, status: u16, elapsed: Duration) {
    if let Some(http) = HTTP.as_ref() {
        let status = status.to_string();
        let labels = [route, method, status.as_str()];
        http.requests.with_label_values(&labels).inc();
        http.duration
            .with_label_values(&labels)
            .observe(elapsed.as_secs_f64());
    }
}

/// Every registered metric in the text exposition format.
pub fn render() -> Result<String, prometheus::Error> {
    LazyLock::force(&HTTP);
    prometheus::TextEncoder::new().encode_to_string(&REGISTRY.gather())
}

/// `GET /metrics`: [`render`] as a response (500 if encoding failed, which is logged).
pub fn response() -> Response {
    match render() {
        Ok(text) => ([(CONTENT_TYPE, CONTENT_TYPE_TEXT)], text).into_response(),
        Err(err) => {
            tracing::error!(error = %err, "metrics not rendered");
            axum::http::StatusCode::INTERNAL_SERVER_ERROR.into_response()
        }
    }
}

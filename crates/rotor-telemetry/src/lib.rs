//! What operators watch, shared by the service and the units:
//!
//! - [`metrics`]: the process's Prometheus registry (HTTP requests, the process itself, and
//!   whatever the service registers beside them) and its text exposition;
//! - [`correlation`]: the id that ties together the log lines of one request, in this process
//!   and in the units the service calls for it;
//! - [`observe`]: the one middleware layer both routers carry, which gives every request its
//!   correlation id and span, counts and times it by route template, and logs it.

#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod correlation;
pub mod metrics;

use std::time::Instant;

use axum::extract::{MatchedPath, Request};
use axum::middleware::Next;
use axum::response::Response;
use tracing::Instrument as _;

use crate::correlation::CorrelationId;

/// The route label of a request that matched no route (a 404 or 405 of the router itself).
const UNMATCHED: &str = "unmatched";

/// The middleware of every route of the service and of a unit (`Router::layer(
/// axum::middleware::from_fn(observe))`): takes the request's correlation id (or makes one),
/// runs the request inside a `request` span carrying it, returns it in the response headers,
/// counts and times the request by route template, method and status, and logs one line for it.
pub async fn observe(mut request: Request, next: Next) -> Response {
    let started = Instant::now();
    // The template (`/api/v2/keys/{id}`), never the path: ids must not become label values.
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or(UNMATCHED, MatchedPath::as_str)
        .to_owned();
    let method = metrics::method_label(request.method());
    let id = CorrelationId::of(request.headers());
    request.extensions_mut().insert(id.clone());
    let span = tracing::info_span!("request", correlation_id = %id, method, route = %route);
    let mut response = correlation::scope(id.clone(), next.run(request))
        .instrument(span.clone())
        .await;
    let status = response.status();
    let elapsed = started.elapsed();
    metrics::observe_request(&route, method, status.as_u16(), elapsed);
    span.in_scope(|| {
        tracing::info!(
            status = status.as_u16(),
            duration_ms = elapsed.as_secs_f64() * 1000.0,
            "request served"
        );
    });
    id.set_on(response.headers_mut());
    response
}

#[cfg(test)]
mod tests;

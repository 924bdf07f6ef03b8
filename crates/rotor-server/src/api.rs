//! The service's HTTP API for administrators:
//!
//! - `GET /v1/instances`: instances and their units;
//! - `GET /v1/instances/{instance}/units/{unit}/status?challenge=HEX`: relayed to the unit;
//! - `POST /v1/instances/{instance}/units/{unit}/command`: relayed to the unit.
//!
//! The service relays admin traffic byte for byte. It cannot forge a command (units check the
//! admins' signatures) nor a response (the CLI checks the unit's signature).

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path, RawQuery, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::Serialize;
use uuid::Uuid;

use crate::config::{Config, UnitConfig};

/// The largest request body the service accepts.
pub const MAX_BODY: usize = 1 << 20;

/// Shared state of the service.
#[derive(Clone)]
pub struct Service {
    config: Arc<Config>,
    http: reqwest::Client,
}

/// An error the service itself answers with.
#[derive(Debug, Serialize)]
struct ApiError {
    code: &'static str,
    message: String,
    #[serde(skip)]
    status: StatusCode,
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status;
        (status, axum::Json(self)).into_response()
    }
}

fn not_found(what: &str, id: &str) -> ApiError {
    ApiError {
        code: "not_found",
        message: format!("no {what} {id} on this service; run 'rotor units' to list them"),
        status: StatusCode::NOT_FOUND,
    }
}

#[derive(Serialize)]
struct InstanceView<'a> {
    id: Uuid,
    name: &'a str,
    units: &'a [UnitConfig],
}

impl Service {
    /// A service for `config`.
    pub fn new(config: Config) -> Self {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .build()
            .unwrap_or_default();
        Self {
            config: Arc::new(config),
            http,
        }
    }

    /// The configuration served.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// All routes.
    pub fn router(self) -> Router {
        Router::new()
            .route("/health", get(|| async { "ok" }))
            .route("/v1/instances", get(instances))
            .route(
                "/v1/instances/{instance}/units/{unit}/status",
                get(relay_status),
            )
            .route(
                "/v1/instances/{instance}/units/{unit}/command",
                post(relay_command),
            )
            .layer(DefaultBodyLimit::max(MAX_BODY))
            .with_state(self)
    }

    fn unit(&self, instance: &str, unit: &str) -> Result<&UnitConfig, ApiError> {
        let instance_config = Uuid::parse_str(instance)
            .ok()
            .and_then(|id| self.config.instances.iter().find(|i| i.id == id))
            .ok_or_else(|| not_found("instance", instance))?;
        Uuid::parse_str(unit)
            .ok()
            .and_then(|id| instance_config.units.iter().find(|u| u.id == id))
            .ok_or_else(|| not_found("unit", unit))
    }

    async fn relay(&self, unit: &UnitConfig, request: reqwest::RequestBuilder) -> Response {
        match request.send().await {
            Ok(response) => {
                let status = StatusCode::from_u16(response.status().as_u16())
                    .unwrap_or(StatusCode::BAD_GATEWAY);
                match response.bytes().await {
                    Ok(body) => {
                        (status, [(header::CONTENT_TYPE, "application/json")], body).into_response()
                    }
                    Err(err) => unreachable_unit(unit, &err),
                }
            }
            Err(err) => unreachable_unit(unit, &err),
        }
    }
}

fn unreachable_unit(unit: &UnitConfig, err: &reqwest::Error) -> Response {
    tracing::warn!(unit = %unit.id, error = %err, "unit unreachable");
    ApiError {
        code: "unit_unreachable",
        message: format!(
            "unit {} at {} did not answer; check that it runs",
            unit.id, unit.address
        ),
        status: StatusCode::BAD_GATEWAY,
    }
    .into_response()
}

async fn instances(State(service): State<Service>) -> Response {
    let view: Vec<InstanceView<'_>> = service
        .config
        .instances
        .iter()
        .map(|instance| InstanceView {
            id: instance.id,
            name: &instance.name,
            units: &instance.units,
        })
        .collect();
    axum::Json(serde_json::json!({ "instances": view })).into_response()
}

async fn relay_status(
    State(service): State<Service>,
    Path((instance, unit)): Path<(String, String)>,
    RawQuery(query): RawQuery,
) -> Response {
    let unit = match service.unit(&instance, &unit) {
        Ok(unit) => unit,
        Err(err) => return err.into_response(),
    };
    let url = format!(
        "http://{}/v1/status?{}",
        unit.address,
        query.unwrap_or_default()
    );
    service.relay(unit, service.http.get(url)).await
}

async fn relay_command(
    State(service): State<Service>,
    Path((instance, unit)): Path<(String, String)>,
    body: Bytes,
) -> Response {
    let unit = match service.unit(&instance, &unit) {
        Ok(unit) => unit,
        Err(err) => return err.into_response(),
    };
    let url = format!("http://{}/v1/command", unit.address);
    let request = service
        .http
        .post(url)
        .header(header::CONTENT_TYPE, "application/json")
        .body(body);
    service.relay(unit, request).await
}

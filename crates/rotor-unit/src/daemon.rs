//! `rotor unit serve`: the HTTP face of a unit. Two routes, both answered with a
//! [`SignedResponse`]:
//!
//! - `GET /v1/status?challenge=HEX`: the unit's public status;
//! - `POST /v1/command` with a [`CommandRequest`]: apply one signed admin command.
//!
//! A command is applied to a copy of the state, the copy is sealed and made durable, and only
//! then does it replace the state in memory and get acknowledged.

use std::collections::HashMap;
use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::Path;
use axum::extract::{Query, State};
use axum::http::HeaderMap;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use rotor_crypto::SigningKey;
use tokio::net::TcpListener;
use tokio::sync::Mutex;

use crate::error::UnitError;
use crate::keyapi::{self, RootKeyCache};
use crate::keys::{KeyError, Masters};
use crate::machine::{OsEntropy, UnitState};
use crate::store::UnitStore;
use crate::wire::{CommandRequest, ResponsePayload, SignedResponse, UnitResult};

/// The largest challenge accepted, in bytes.
const MAX_CHALLENGE: usize = 64;

struct Inner {
    store: UnitStore,
    state: UnitState,
}

/// A running unit's shared state.
#[derive(Clone)]
pub struct Unit {
    identity: Arc<SigningKey>,
    inner: Arc<Mutex<Inner>>,
    service_token: Option<Arc<Vec<u8>>>,
    cache: Arc<RootKeyCache>,
}

impl Unit {
    /// Wraps an opened unit directory.
    pub fn new(store: UnitStore, identity: SigningKey, state: UnitState) -> Self {
        Self {
            identity: Arc::new(identity),
            inner: Arc::new(Mutex::new(Inner { store, state })),
            service_token: None,
            cache: Arc::default(),
        }
    }

    /// Enables key operations for callers presenting `token` (the service).
    pub fn with_service_token(mut self, token: Vec<u8>) -> Self {
        self.service_token = Some(Arc::new(token));
        self
    }

    /// Runs a key operation with the unit's master keys; JSON or, for batches, postcard.
    async fn key_op<Req, Resp>(
        &self,
        headers: &HeaderMap,
        body: &[u8],
        batch: bool,
        op: fn(&Masters, &RootKeyCache, &Req) -> Result<Resp, KeyError>,
    ) -> Response
    where
        Req: for<'de> serde::Deserialize<'de>,
        Resp: serde::Serialize,
    {
        if let Err(reply) =
            keyapi::authorized(headers, self.service_token.as_deref().map(Vec::as_slice))
        {
            return reply.into_response();
        }
        let decoded = if batch {
            keyapi::decode_batch(body)
        } else {
            keyapi::decode(body)
        };
        let request: Req = match decoded {
            Ok(request) => request,
            Err(reply) => return reply.into_response(),
        };
        let Some(masters) = self.inner.lock().await.state.masters() else {
            return keyapi::key_error(&KeyError::NoMasterKey).into_response();
        };
        match op(&masters, &self.cache, &request) {
            Ok(result) if batch => match postcard::to_stdvec(&result) {
                Ok(bytes) => {
                    ([(header::CONTENT_TYPE, keyapi::BATCH_CONTENT_TYPE)], bytes).into_response()
                }
                Err(_) => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
            },
            Ok(result) => axum::Json(result).into_response(),
            Err(err) => keyapi::key_error(&err).into_response(),
        }
    }

    /// The service reports the reencryption finished; the unit records it durably.
    async fn finish_reencryption(&self, headers: &HeaderMap, body: &[u8]) -> Response {
        if let Err(reply) =
            keyapi::authorized(headers, self.service_token.as_deref().map(Vec::as_slice))
        {
            return reply.into_response();
        }
        let request: keyapi::FinishReencryption = match keyapi::decode(body) {
            Ok(request) => request,
            Err(reply) => return reply.into_response(),
        };
        let mut inner = self.inner.lock().await;
        let next = match inner.state.finish_reencryption(&request.to) {
            Ok(next) => next,
            Err(err) => {
                return keyapi::error_response(StatusCode::CONFLICT, err.code(), err.to_string())
                    .into_response();
            }
        };
        if next.rotation != inner.state.rotation {
            let saved = rotor_util::blocking(|| inner.store.save(&self.identity, &next));
            if let Err(err) = saved {
                tracing::error!(error = %err, "state not saved; reencryption not recorded");
                let err = UnitError::Storage;
                return keyapi::error_response(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    err.code(),
                    err.to_string(),
                )
                .into_response();
            }
            tracing::info!(rotation = next.rotation.label(), "reencryption finished");
            inner.state = next;
        }
        axum::Json(inner.state.status(self.identity.public_key())).into_response()
    }

    /// The routes of a unit.
    pub fn router(self) -> Router {
        Router::new()
            .route("/v1/status", get(status))
            .route("/v1/command", post(command))
            .route("/v1/keys/{op}", post(key_operation))
            .with_state(self)
    }

    /// Serves until the listener fails.
    pub async fn serve(self, listener: TcpListener) -> std::io::Result<()> {
        axum::serve(listener, self.router()).await
    }

    async fn respond(&self, challenge: Vec<u8>, result: Result<UnitResult, UnitError>) -> Response {
        let unit = self.inner.lock().await.state.unit;
        let (status, result) = match result {
            Ok(result) => (StatusCode::OK, result),
            Err(err) => (
                StatusCode::from_u16(err.http_status()).unwrap_or(StatusCode::BAD_REQUEST),
                UnitResult::Rejected(err.to_body()),
            ),
        };
        let payload = ResponsePayload {
            unit,
            challenge,
            result,
        };
        let signed = SignedResponse::sign(&self.identity, &payload);
        let body = serde_json::to_vec(&signed).unwrap_or_default();
        (status, [(header::CONTENT_TYPE, "application/json")], body).into_response()
    }
}

fn parse_challenge(text: Option<&String>) -> Result<Vec<u8>, UnitError> {
    let text = text.ok_or_else(|| UnitError::BadRequest("missing challenge".to_owned()))?;
    let bytes =
        hex::decode(text).map_err(|_| UnitError::BadRequest("challenge is not hex".to_owned()))?;
    if bytes.is_empty() || bytes.len() > MAX_CHALLENGE {
        return Err(UnitError::BadRequest(format!(
            "challenge must be 1 to {MAX_CHALLENGE} bytes"
        )));
    }
    Ok(bytes)
}

async fn status(
    State(unit): State<Unit>,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    match parse_challenge(query.get("challenge")) {
        Ok(challenge) => {
            let status = unit
                .inner
                .lock()
                .await
                .state
                .status(unit.identity.public_key());
            unit.respond(challenge, Ok(UnitResult::Status(status)))
                .await
        }
        Err(err) => unit.respond(Vec::new(), Err(err)).await,
    }
}

async fn key_operation(
    State(unit): State<Unit>,
    Path(op): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    match op.as_str() {
        "generate" => {
            unit.key_op(&headers, &body, false, |masters, _, request| {
                keyapi::generate(masters, request)
            })
            .await
        }
        "import" => {
            unit.key_op(&headers, &body, false, |masters, _, request| {
                keyapi::import(masters, request)
            })
            .await
        }
        "export" => unit.key_op(&headers, &body, false, keyapi::export).await,
        "import-token" => {
            unit.key_op(&headers, &body, false, |masters, _, request| {
                keyapi::import_token(masters, request)
            })
            .await
        }
        "secure-import" => {
            unit.key_op(&headers, &body, false, |masters, _, request| {
                keyapi::secure_import(masters, request)
            })
            .await
        }
        "wrap" => unit.key_op(&headers, &body, false, keyapi::wrap).await,
        "unwrap" => unit.key_op(&headers, &body, false, keyapi::unwrap).await,
        "rewrap" => unit.key_op(&headers, &body, false, keyapi::rewrap).await,
        "rewrap-batch" => {
            unit.key_op(&headers, &body, true, keyapi::rewrap_batch)
                .await
        }
        "generate-batch" => {
            unit.key_op(&headers, &body, true, keyapi::generate_batch)
                .await
        }
        "rewrap-to-new" => {
            unit.key_op(&headers, &body, false, keyapi::rewrap_to_new)
                .await
        }
        "finish-reencryption" => unit.finish_reencryption(&headers, &body).await,
        other => keyapi::error_response(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("no key operation '{other}'"),
        )
        .into_response(),
    }
}

async fn command(State(unit): State<Unit>, body: Bytes) -> Response {
    let request: CommandRequest = match serde_json::from_slice(&body) {
        Ok(request) => request,
        Err(err) => {
            let err = UnitError::BadRequest(format!("command body: {err}"));
            return unit.respond(Vec::new(), Err(err)).await;
        }
    };
    let challenge = request.challenge.clone();
    if challenge.is_empty() || challenge.len() > MAX_CHALLENGE {
        let err = UnitError::BadRequest(format!("challenge must be 1 to {MAX_CHALLENGE} bytes"));
        return unit.respond(Vec::new(), Err(err)).await;
    }
    let result = {
        let mut inner = unit.inner.lock().await;
        match inner.state.apply(&request.signed, &mut OsEntropy) {
            Ok((next, outcome)) => {
                let saved = rotor_util::blocking(|| inner.store.save(&unit.identity, &next));
                match saved {
                    Ok(()) => {
                        tracing::info!(
                            action = request.signed.command.action.name(),
                            counter = next.counter,
                            "command applied"
                        );
                        let status = next.status(unit.identity.public_key());
                        inner.state = next;
                        Ok(UnitResult::Applied { outcome, status })
                    }
                    Err(err) => {
                        tracing::error!(error = %err, "state not saved; command refused");
                        Err(UnitError::Storage)
                    }
                }
            }
            Err(err) => {
                tracing::info!(
                    action = request.signed.command.action.name(),
                    code = err.code(),
                    "command refused"
                );
                Err(err)
            }
        }
    };
    unit.respond(challenge, result).await
}

/// What `rotor unit serve --info-file` writes once the unit listens.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct ServeInfo {
    /// The unit's id.
    pub unit: uuid::Uuid,
    /// Operational or recovery.
    pub kind: crate::wire::UnitKind,
    /// The address it listens on.
    pub address: std::net::SocketAddr,
}

impl ServeInfo {
    /// Writes the info file atomically, so a reader never sees half of it.
    pub fn write(&self, path: &std::path::Path) -> std::io::Result<()> {
        rotor_util::fs::write_durable(path, &serde_json::to_vec_pretty(self).unwrap_or_default())
    }
}

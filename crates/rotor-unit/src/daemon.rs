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
use axum::extract::{Query, State};
use axum::http::HeaderMap;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use rotor_crypto::SigningKey;
use tokio::net::TcpListener;
use tokio::sync::Mutex;

use rotor_crypto::{constant_time_eq, sha256};
use rotor_proto::error::ErrorCode;
use rotor_proto::keyops::{
    BATCH_CONTENT_TYPE, Encoding, ExportRequest, FinishReencryption, ForgetKey, Forgotten,
    GenerateBatch, GenerateRequest, ImportRequest, ImportTokenRequest, RewrapBatch, RewrapRequest,
    RewrapToNew, SecureImportRequest, UnitOp, UnwrapRequest, WrapRequest,
};
use rotor_proto::wire::{ErrorBody, Outcome, SignedCommand, UnitStatus};

use crate::error::UnitError;
use crate::keyapi::{KeyOperation, RootKeyCache};
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

    /// Runs one key operation in process: the HTTP route and the service's in-process backend
    /// both come here.
    pub async fn call<Op: Served>(&self, request: &Op) -> Result<Op::Reply, ErrorBody> {
        request.serve(self).await
    }

    /// The unit's status.
    pub async fn status(&self) -> UnitStatus {
        self.inner
            .lock()
            .await
            .state
            .status(self.identity.public_key())
    }

    /// Applies one signed admin command: to a copy of the state, which is sealed and made
    /// durable before it replaces the state in memory and the command is acknowledged.
    pub async fn apply(&self, signed: &SignedCommand) -> Result<(Outcome, UnitStatus), UnitError> {
        let mut inner = self.inner.lock().await;
        match inner.state.apply(signed, &mut OsEntropy) {
            Ok((next, outcome)) => {
                let saved = rotor_util::blocking(|| inner.store.save(&self.identity, &next));
                match saved {
                    Ok(()) => {
                        tracing::info!(
                            action = signed.command.action.name(),
                            counter = next.counter,
                            "command applied"
                        );
                        let status = next.status(self.identity.public_key());
                        inner.state = next;
                        Ok((outcome, status))
                    }
                    Err(err) => {
                        tracing::error!(error = %err, "state not saved; command refused");
                        Err(UnitError::Storage)
                    }
                }
            }
            Err(err) => {
                tracing::info!(
                    action = signed.command.action.name(),
                    code = err.code(),
                    "command refused"
                );
                Err(err)
            }
        }
    }

    async fn with_masters<T>(
        &self,
        work: impl FnOnce(&Masters, &RootKeyCache) -> Result<T, KeyError>,
    ) -> Result<T, ErrorBody> {
        let masters = self.inner.lock().await.state.masters();
        let masters = masters.ok_or_else(|| KeyError::NoMasterKey.to_body())?;
        work(&masters, &self.cache).map_err(|err| err.to_body())
    }

    /// The service reports the reencryption finished; the unit records it durably.
    async fn finish_reencryption(
        &self,
        request: &FinishReencryption,
    ) -> Result<UnitStatus, ErrorBody> {
        let mut inner = self.inner.lock().await;
        let next = inner
            .state
            .finish_reencryption(&request.to)
            .map_err(|err| err.to_body())?;
        if next.rotation != inner.state.rotation {
            let saved = rotor_util::blocking(|| inner.store.save(&self.identity, &next));
            if let Err(err) = saved {
                tracing::error!(error = %err, "state not saved; reencryption not recorded");
                return Err(UnitError::Storage.to_body());
            }
            tracing::info!(rotation = next.rotation.label(), "reencryption finished");
            inner.state = next;
        }
        Ok(inner.state.status(self.identity.public_key()))
    }

    /// The routes of a unit.
    pub fn router(self) -> Router {
        Router::new()
            .route("/v1/status", get(status))
            .route("/v1/command", post(command))
            .merge(key_routes())
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
            let status = unit.status().await;
            unit.respond(challenge, Ok(UnitResult::Status(status)))
                .await
        }
        Err(err) => unit.respond(Vec::new(), Err(err)).await,
    }
}

/// How the unit serves an operation: most with its master keys alone ([`KeyOperation`]); the
/// end of a reencryption changes the unit's state; forgetting a key touches only the cache.
pub trait Served: UnitOp {
    /// Runs the operation on `unit`.
    fn serve(&self, unit: &Unit) -> impl Future<Output = Result<Self::Reply, ErrorBody>> + Send;
}

impl<Op: KeyOperation> Served for Op {
    async fn serve(&self, unit: &Unit) -> Result<Self::Reply, ErrorBody> {
        unit.with_masters(|masters, cache| {
            if Op::BLOCKING {
                rotor_util::blocking(|| self.perform(masters, cache))
            } else {
                self.perform(masters, cache)
            }
        })
        .await
    }
}

impl Served for ForgetKey {
    async fn serve(&self, unit: &Unit) -> Result<Forgotten, ErrorBody> {
        let versions = unit.cache.forget(self.instance, self.key);
        tracing::info!(key = %self.key, versions, "deleted key dropped from the cache");
        Ok(Forgotten { versions })
    }
}

impl Served for FinishReencryption {
    async fn serve(&self, unit: &Unit) -> Result<UnitStatus, ErrorBody> {
        unit.finish_reencryption(self).await
    }
}

/// `POST /v1/keys/{name}` for every operation.
fn key_routes() -> Router<Unit> {
    fn route<Op: Served>(router: Router<Unit>) -> Router<Unit> {
        router.route(&format!("/v1/keys/{}", Op::NAME), post(key_operation::<Op>))
    }
    let router = Router::new();
    let router = route::<GenerateRequest>(router);
    let router = route::<ImportRequest>(router);
    let router = route::<ExportRequest>(router);
    let router = route::<ImportTokenRequest>(router);
    let router = route::<SecureImportRequest>(router);
    let router = route::<WrapRequest>(router);
    let router = route::<UnwrapRequest>(router);
    let router = route::<RewrapRequest>(router);
    let router = route::<RewrapToNew>(router);
    let router = route::<RewrapBatch>(router);
    let router = route::<GenerateBatch>(router);
    let router = route::<ForgetKey>(router);
    route::<FinishReencryption>(router)
}

/// The HTTP status of a key operation's refusal.
fn key_status(code: ErrorCode) -> StatusCode {
    match code {
        ErrorCode::BadRequest | ErrorCode::InvalidCiphertext | ErrorCode::BadSize => {
            StatusCode::BAD_REQUEST
        }
        ErrorCode::Unauthorized => StatusCode::UNAUTHORIZED,
        ErrorCode::NotExtractable | ErrorCode::KeyOperationsDisabled => StatusCode::FORBIDDEN,
        ErrorCode::Storage => StatusCode::INTERNAL_SERVER_ERROR,
        _ => StatusCode::CONFLICT,
    }
}

fn refusal(body: ErrorBody) -> Response {
    (key_status(body.code), axum::Json(body)).into_response()
}

/// Checks the `Authorization: Bearer` header against the service token.
fn authorized(headers: &HeaderMap, token: Option<&[u8]>) -> Result<(), ErrorBody> {
    let Some(token) = token else {
        return Err(ErrorBody {
            code: ErrorCode::KeyOperationsDisabled,
            message: "key operations are disabled on this unit: start it with --service-token-file"
                .to_owned(),
        });
    };
    let presented = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or_default();
    if constant_time_eq(&sha256(presented.as_bytes()), &sha256(token)) {
        Ok(())
    } else {
        Err(ErrorBody {
            code: ErrorCode::Unauthorized,
            message: "key operations need the service token".to_owned(),
        })
    }
}

async fn key_operation<Op: Served>(
    State(unit): State<Unit>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if let Err(refused) = authorized(&headers, unit.service_token.as_deref().map(Vec::as_slice)) {
        return refusal(refused);
    }
    let request: Op = match decode(Op::ENCODING, &body) {
        Ok(request) => request,
        Err(why) => {
            return refusal(ErrorBody {
                code: ErrorCode::BadRequest,
                message: format!("malformed request: {why}"),
            });
        }
    };
    match unit.call(&request).await {
        Ok(reply) => match Op::ENCODING {
            Encoding::Json => axum::Json(reply).into_response(),
            Encoding::Postcard => match postcard::to_stdvec(&reply) {
                Ok(bytes) => ([(header::CONTENT_TYPE, BATCH_CONTENT_TYPE)], bytes).into_response(),
                Err(_) => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
            },
        },
        Err(refused) => refusal(refused),
    }
}

fn decode<T: serde::de::DeserializeOwned>(encoding: Encoding, body: &[u8]) -> Result<T, String> {
    match encoding {
        Encoding::Json => serde_json::from_slice(body).map_err(|err| err.to_string()),
        Encoding::Postcard => postcard::from_bytes(body).map_err(|err| err.to_string()),
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
    let result = unit
        .apply(&request.signed)
        .await
        .map(|(outcome, status)| UnitResult::Applied { outcome, status });
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

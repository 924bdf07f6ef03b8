//! `rotor unit serve`: the HTTP face of a unit. Two routes, both answered with a
//! [`SignedResponse`]:
//!
//! - `GET /v1/status?challenge=HEX`: the unit's public status;
//! - `POST /v1/command` with a [`CommandRequest`]: apply one signed admin command.
//!
//! A command is applied to a copy of the state; its audit entry is appended durably, the copy is
//! sealed and made durable, and only then does it replace the state in memory and get
//! acknowledged. A refused command is recorded too.
//!
//! For the service only (its token, like the key operations): `GET /v1/audit?after=N&challenge=HEX`,
//! the admin chain's entries after `N` with the live head signed over the challenge
//! ([`AuditBatch`]), the key operations under `/v1/keys/`, and `GET /metrics` (Prometheus text:
//! requests by route and status, the process).

use std::collections::HashMap;
use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use rotor_crypto::SigningKey;
use tokio::net::TcpListener;
use tokio::sync::Mutex;
use uuid::Uuid;

use rotor_proto::audit::{
    AdminRecord, AuditBatch, Countersign, Countersignature, SignedHead, Verdict,
};
use rotor_proto::error::ErrorBody;
use rotor_proto::error::ErrorCode;
use rotor_proto::keyops::{
    BATCH_CONTENT_TYPE, Encoding, ExportRequest, FinishReencryption, ForgetKey, Forgotten,
    GenerateBatch, GenerateRequest, Grep11Request, ImportRequest, ImportTokenRequest, KeyBatch,
    RewrapBatch, RewrapRequest, RewrapToNew, SecureImportRequest, UnitOp, UnwrapRequest,
    WrapRequest,
};
use rotor_proto::wire::{EnrollmentSecret, Fingerprint, Outcome, SignedCommand, UnitStatus};

use crate::audit::AuditLog;
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
    audit: AuditLog,
}

/// Told the unit's new enrollment secret (or `None` once claimed) whenever it changes.
pub type EnrollmentNotice = Arc<dyn Fn(Option<&EnrollmentSecret>) + Send + Sync>;

/// A running unit's shared state.
#[derive(Clone)]
pub struct Unit {
    identity: Arc<SigningKey>,
    inner: Arc<Mutex<Inner>>,
    cache: Arc<RootKeyCache>,
    enrollment_notice: Option<EnrollmentNotice>,
}

impl Unit {
    /// Wraps an opened unit directory and its audit log.
    pub fn new(store: UnitStore, identity: SigningKey, state: UnitState, audit: AuditLog) -> Self {
        Self {
            identity: Arc::new(identity),
            inner: Arc::new(Mutex::new(Inner {
                store,
                state,
                audit,
            })),
            cache: Arc::default(),
            enrollment_notice: None,
        }
    }

    /// Calls `notice` whenever the enrollment secret changes (first admin installed, unit
    /// zeroized), so that its operator learns the new one.
    pub fn with_enrollment_notice(mut self, notice: EnrollmentNotice) -> Self {
        self.enrollment_notice = Some(notice);
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

    /// Applies one signed admin command: to a copy of the state; the audit entry is appended,
    /// then the copy is sealed and made durable before it replaces the state in memory and the
    /// command is acknowledged. A refusal is recorded as well.
    pub async fn apply(&self, signed: &SignedCommand) -> Result<(Outcome, UnitStatus), UnitError> {
        let mut inner = self.inner.lock().await;
        match inner.state.apply(signed, &mut OsEntropy) {
            Ok((next, outcome)) => {
                // Recorded first: a command is carried out only once its entry is durable.
                self.record(&mut inner, signed, next.counter, Verdict::Accepted)?;
                let saved = rotor_util::blocking(|| inner.store.save(&self.identity, &next));
                match saved {
                    Ok(()) => {
                        tracing::info!(
                            action = signed.command.action.name(),
                            counter = next.counter,
                            "command applied"
                        );
                        let status = next.status(self.identity.public_key());
                        let before = inner.state.enrollment_secret().map(|s| s.id());
                        let after = next.enrollment_secret();
                        inner.state = next;
                        if let Some(notice) = &self.enrollment_notice
                            && before != after.as_ref().map(EnrollmentSecret::id)
                        {
                            notice(after.as_ref());
                        }
                        Ok((outcome, status))
                    }
                    Err(err) => {
                        tracing::error!(error = %err, "state not saved; command refused");
                        let counter = inner.state.counter;
                        let storage = Verdict::Refused {
                            code: UnitError::Storage.code().to_owned(),
                        };
                        // The entry before said accepted: this one says it did not take effect.
                        self.record(&mut inner, signed, counter, storage)?;
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
                let counter = inner.state.counter;
                let refused = Verdict::Refused {
                    code: err.code().to_owned(),
                };
                self.record(&mut inner, signed, counter, refused)?;
                Err(err)
            }
        }
    }

    /// Appends a command's entry to the admin chain, durably.
    fn record(
        &self,
        inner: &mut Inner,
        signed: &SignedCommand,
        counter: u64,
        verdict: Verdict,
    ) -> Result<(), UnitError> {
        let record = AdminRecord {
            signers: signed.signatures.iter().map(|s| s.ski).collect(),
            action: signed.command.action.name().to_owned(),
            command: rotor_crypto::sha256(&signed.command.signing_bytes()),
            counter,
            verdict,
        };
        let unit = inner.state.unit;
        let time_ms = u64::try_from(rotor_util::time::now_ms()).unwrap_or_default();
        rotor_util::blocking(|| {
            inner
                .audit
                .append(&self.identity, unit, time_ms, record)
                .map_err(|err| {
                    tracing::error!(error = %err, "audit entry not written; command refused");
                    UnitError::Storage
                })
        })
    }

    /// The admin chain after entry `after`, with the live head signed over `challenge`.
    pub async fn audit(&self, after: u64, challenge: Vec<u8>) -> AuditBatch {
        let inner = self.inner.lock().await;
        let unit = inner.state.unit;
        AuditBatch {
            unit,
            entries: inner.audit.after(after).to_vec(),
            head: SignedHead::sign(&self.identity, unit, inner.audit.head(), challenge),
        }
    }

    /// Countersigns the head of an instance's key event chain, with the unit's clock.
    async fn countersign(&self, request: &Countersign) -> Countersignature {
        let unit = self.inner.lock().await.state.unit;
        let time_ms = u64::try_from(rotor_util::time::now_ms()).unwrap_or_default();
        Countersignature::sign(
            &self.identity,
            unit,
            request.instance,
            request.head,
            time_ms,
        )
    }

    async fn with_masters<T>(
        &self,
        work: impl FnOnce(&Masters, &RootKeyCache) -> Result<T, KeyError>,
    ) -> Result<T, ErrorBody> {
        let masters = self.inner.lock().await.state.masters();
        let masters = masters.ok_or_else(|| KeyError::NoMasterKey.to_body())?;
        work(&masters, &self.cache).map_err(|err| err.to_body())
    }

    /// The service reports the reencryption finished; the unit records it durably. A report
    /// that still counts keys under the old master key is refused: nothing changes.
    async fn finish_reencryption(
        &self,
        request: &FinishReencryption,
    ) -> Result<UnitStatus, ErrorBody> {
        if request.remaining != 0 {
            return Err(UnitError::KeysRemain {
                remaining: request.remaining,
            }
            .to_body());
        }
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

    /// The routes of a unit, answered only to the service of `instance` (the client
    /// certificate each request carries, see [`rotor_tls::PeerCertificate`]): `/metrics`
    /// included. Every request, refused or not, is logged with its correlation id and counted.
    pub fn router(self, instance: Uuid) -> Router {
        Router::new()
            .route("/v1/status", get(status))
            .route("/v1/command", post(command))
            .route("/v1/audit", get(audit))
            .route(
                "/metrics",
                get(|| async { rotor_telemetry::metrics::response() }),
            )
            .merge(key_routes())
            .layer(axum::middleware::from_fn(
                move |request: axum::extract::Request, next: axum::middleware::Next| {
                    service_of_instance(instance, request, next)
                },
            ))
            .layer(axum::middleware::from_fn(rotor_telemetry::observe))
            .with_state(self)
    }

    /// Serves over mutual TLS until the future is dropped: `tls` demands a client certificate
    /// from the deployment CA, and the routes admit only the service of `instance`.
    pub async fn serve(
        self,
        listener: TcpListener,
        tls: Arc<rustls::ServerConfig>,
        instance: Uuid,
    ) {
        let router = self.router(instance);
        rotor_tls::serve::serve(
            listener,
            rotor_tls::Transport::Tls(tls),
            router,
            rotor_tls::serve::Limits::UNIT,
        )
        .await;
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

impl Served for Countersign {
    async fn serve(&self, unit: &Unit) -> Result<Countersignature, ErrorBody> {
        Ok(unit.countersign(self).await)
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
    let router = route::<KeyBatch>(router);
    let router = route::<RewrapToNew>(router);
    let router = route::<RewrapBatch>(router);
    let router = route::<GenerateBatch>(router);
    let router = route::<Countersign>(router);
    let router = route::<ForgetKey>(router);
    let router = route::<Grep11Request>(router);
    route::<FinishReencryption>(router)
}

/// The HTTP status of a key operation's refusal.
fn key_status(code: ErrorCode) -> StatusCode {
    match code {
        ErrorCode::BadRequest | ErrorCode::InvalidCiphertext | ErrorCode::BadSize => {
            StatusCode::BAD_REQUEST
        }
        ErrorCode::Unauthorized => StatusCode::UNAUTHORIZED,
        ErrorCode::NotExtractable => StatusCode::FORBIDDEN,
        ErrorCode::Storage => StatusCode::INTERNAL_SERVER_ERROR,
        _ => StatusCode::CONFLICT,
    }
}

fn refusal(body: ErrorBody) -> Response {
    (key_status(body.code), axum::Json(body)).into_response()
}

/// Admits a request only when its client certificate is the service's for `instance`: the
/// chain was verified in the handshake; the role and instance it states are checked here. A
/// unit of one instance thus never answers the service of another, and nobody else reaches
/// its admin commands.
async fn service_of_instance(
    instance: Uuid,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let role = request
        .extensions()
        .get::<rotor_tls::PeerCertificate>()
        .map(|peer| rotor_tls::Role::of_certificate(&peer.0));
    match role {
        Some(Ok(rotor_tls::Role::Service { instance: theirs })) if theirs == instance => {
            next.run(request).await
        }
        Some(Ok(role)) => {
            tracing::warn!(%role, "refused a client certificate of another role or instance");
            refusal(ErrorBody {
                code: ErrorCode::Unauthorized,
                message: format!(
                    "this unit answers only the service of instance {instance}; the client certificate is for {role}"
                ),
            })
        }
        Some(Err(err)) => refusal(ErrorBody {
            code: ErrorCode::Unauthorized,
            message: format!("the client certificate states no rotor role: {err}"),
        }),
        None => refusal(ErrorBody {
            code: ErrorCode::Unauthorized,
            message: "a unit answers only over mutual TLS, to its instance's service".to_owned(),
        }),
    }
}

async fn key_operation<Op: Served>(State(unit): State<Unit>, body: Bytes) -> Response {
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

/// `GET /v1/audit?after=N&challenge=HEX`, for the service (admitted by the router's
/// mutual-TLS check, as every route).
async fn audit(State(unit): State<Unit>, Query(query): Query<HashMap<String, String>>) -> Response {
    let after = match query.get("after").map(|n| n.parse::<u64>()) {
        None => Ok(0),
        Some(Ok(after)) => Ok(after),
        Some(Err(_)) => Err(UnitError::BadRequest("after is not a number".to_owned())),
    };
    match after.and_then(|after| Ok((after, parse_challenge(query.get("challenge"))?))) {
        Ok((after, challenge)) => axum::Json(unit.audit(after, challenge).await).into_response(),
        Err(err) => refusal(err.to_body()),
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
    pub unit: Uuid,
    /// Operational or recovery.
    pub kind: crate::wire::UnitKind,
    /// The address it listens on.
    pub address: std::net::SocketAddr,
    /// SHA-256 of the unit's identity public key, to enroll it by.
    pub fingerprint: Fingerprint,
    /// While the unit has no admin: the one-time secret that installs the first one (hex).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enrollment_secret: Option<zeroize::Zeroizing<String>>,
}

impl ServeInfo {
    /// Writes the info file atomically, so a reader never sees half of it.
    pub fn write(&self, path: &std::path::Path) -> std::io::Result<()> {
        rotor_util::fs::write_durable(path, &serde_json::to_vec_pretty(self).unwrap_or_default())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::machine::NewRegister;
    use crate::wire::{RotationLock, UnitKind};
    use rotor_crypto::Secret32;

    // Saving the state blocks in place, which needs the multi-threaded runtime.
    #[tokio::test(flavor = "multi_thread")]
    async fn a_finish_report_that_still_counts_old_keys_is_refused_and_changes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let (store, identity, mut state) = UnitStore::open(
            dir.path(),
            UnitKind::Operational,
            &crate::seal::SealSource::File,
        )
        .unwrap();
        let new = Secret32::random();
        let to = new.vp();
        state.current = Some(Secret32::random());
        state.new = NewRegister::Committed(new);
        state.rotation = RotationLock::Reencrypting;
        let audit = AuditLog::open(dir.path()).unwrap();
        let unit = Unit::new(store, identity, state, audit);

        let refused = unit
            .finish_reencryption(&FinishReencryption { to, remaining: 3 })
            .await
            .unwrap_err();
        assert_eq!(refused.code, ErrorCode::KeysRemain);
        assert!(refused.message.contains("3 key(s)"), "{}", refused.message);
        assert_eq!(unit.status().await.rotation, RotationLock::Reencrypting);

        let finished = unit
            .finish_reencryption(&FinishReencryption { to, remaining: 0 })
            .await
            .unwrap();
        assert_eq!(finished.rotation, RotationLock::Reencrypted);
    }
}

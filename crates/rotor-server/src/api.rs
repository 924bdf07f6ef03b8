//! The service's HTTP API for administrators:
//!
//! - `GET /v1/instances`: instances and their units;
//! - `GET /v1/instances/{instance}/units/{unit}/status?challenge=HEX`: relayed to the unit;
//! - `POST /v1/instances/{instance}/units/{unit}/command`: relayed to the unit;
//! - `GET /v1/instances/{instance}/keystore`: key versions per master key VP;
//! - `GET|POST /v1/instances/{instance}/rotation`, `POST .../rotation/abort`,
//!   `POST .../rotation/complete`: the master key rotation ([`crate::rotation`]);
//! - `GET /v1/instances/{instance}/audit`: the instance's key event chain with the units'
//!   countersignatures; `GET /v1/instances/{instance}/units/{unit}/audit?challenge=HEX`: the
//!   unit's admin chain as stored here (brought up to date first) with the unit's live head,
//!   signed over the caller's challenge ([`crate::audit`]);
//!
//! The service relays admin traffic byte for byte. It cannot forge a command (units check the
//! admins' signatures) nor a response (the CLI checks the unit's signature). These routes need a
//! bearer token with the Manager or Crypto Unit Administrator role for the instance.
//!
//! `GET /metrics` answers the Prometheus text of [`crate::metrics`] to a token that may read it.
//!
//! The same listener serves the Key Protect API ([`crate::kp`], with rotor's application blobs
//! and bulk key creation beside it), the token endpoint and the API keys kept in the store
//! (`/v1/apikeys`, [`crate::iam`]) and `/openapi.json`.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path, RawQuery, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use rotor_proto::error::ServiceErrorCode;
use serde::Serialize;
use uuid::Uuid;

use crate::config::{Config, UnitConfig};
use rotor_util::time::unix_now;

use crate::audit::AuditTrail;
use crate::iam::{Iam, Role, load_or_create_secret};
use crate::kp::KpState;
use crate::pool::{PoolUnit, UnitPool};
use crate::rotation::{Journal, KeystoreView, MasterKeyCount, RotationError, Rotations};
use rotor_unit::backend::{HttpUnit, UnitLink};

/// The largest request body the service accepts.
pub const MAX_BODY: usize = 1 << 20;

/// The HTTPS client for one unit: mutual TLS with the instance's service certificate,
/// connections kept open for the hot path.
fn unit_client(
    config: &Config,
    instance: &crate::config::InstanceConfig,
    unit: &UnitConfig,
) -> Result<HttpUnit, StartError> {
    let (Some(units_tls), Some(cert), Some(key)) = (
        &config.units_tls,
        &instance.client_cert,
        &instance.client_key,
    ) else {
        return Err(StartError(format!(
            "instance {} has units but no TLS settings for them ([units_tls], client_cert, client_key)",
            instance.id
        )));
    };
    let tls = HttpUnit::client_tls(
        &units_tls.ca,
        units_tls.crl.as_deref(),
        (cert, key),
        instance.id,
        unit.id,
    );
    let http = rotor_tls::config::http_client(&tls)
        .map_err(|err| StartError(format!("unit {}: {err}", unit.id)))?
        .timeout(Duration::from_secs(30))
        .pool_max_idle_per_host(64)
        .build()
        .map_err(|err| StartError(format!("unit {}: {err}", unit.id)))?;
    Ok(HttpUnit::new(http, unit.address))
}

/// Shared state of the service.
#[derive(Clone)]
pub struct Service {
    config: Arc<Config>,
    /// The units reached over the network, for the admin relay.
    relays: Arc<HashMap<Uuid, HttpUnit>>,
    iam: Arc<Iam>,
    kp: KpState,
    rotations: Rotations,
    audit: AuditTrail,
}

/// Why the service could not start.
#[derive(Debug)]
pub struct StartError(pub String);

impl std::fmt::Display for StartError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for StartError {}

/// An error the service itself answers with.
#[derive(Debug, Serialize)]
struct ApiError {
    code: ServiceErrorCode,
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
        code: ServiceErrorCode::NotFound,
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
    /// Opens the keystore and token key in the data directory and connects to the units of
    /// the configuration over HTTP.
    pub fn open(config: Config) -> Result<Self, StartError> {
        let mut relays = HashMap::new();
        let mut instances = Vec::new();
        for instance in &config.instances {
            let mut units = Vec::new();
            for unit in &instance.units {
                let link = unit_client(&config, instance, unit)?;
                relays.insert(unit.id, link.clone());
                units.push(PoolUnit {
                    id: unit.id,
                    operational: unit.kind == rotor_unit::wire::UnitKind::Operational,
                    link: UnitLink::Http(link),
                });
            }
            instances.push((instance.id, units));
        }
        let mut service =
            Self::open_with_units(config, UnitPool::new(instances.into_iter().collect()))?;
        service.relays = Arc::new(relays);
        Ok(service)
    }

    /// Opens the keystore and token key in the data directory and serves key operations
    /// through `units` (units as processes, or in process for tests).
    pub fn open_with_units(config: Config, units: UnitPool) -> Result<Self, StartError> {
        // The keystore and the token signing key live here: readable by the service only.
        std::fs::create_dir_all(&config.data_dir)
            .and_then(|()| {
                use std::os::unix::fs::PermissionsExt as _;
                std::fs::set_permissions(&config.data_dir, std::fs::Permissions::from_mode(0o700))
            })
            .map_err(|err| {
                StartError(format!(
                    "cannot prepare {}: {err}",
                    config.data_dir.display()
                ))
            })?;
        let secret = load_or_create_secret(&config.data_dir.join("iam.key"))
            .map_err(|err| StartError(err.to_string()))?;
        crate::metrics::register();
        let crate::store::OpenedStore {
            keys: store,
            audit: audit_store,
            api_keys,
        } = crate::store::open_store(&config)
            .map_err(|err| StartError(format!("cannot open the keystore: {err}")))?;
        let served = config.instances.iter().map(|instance| instance.id);
        let iam = Arc::new(Iam::new(secret, &config.iam).with_api_key_store(api_keys, served));
        let configured = config
            .instances
            .iter()
            .flat_map(|instance| &instance.units)
            .filter_map(|unit| Some((unit.id, unit.identity?)))
            .collect();
        let units = units.with_trust(Arc::clone(&store), configured);
        let audit = AuditTrail::new(audit_store, units.clone());
        let replica: Arc<str> = config.replica_name.clone().map_or_else(
            || format!("replica-{}", &Uuid::new_v4().simple().to_string()[..8]).into(),
            Into::into,
        );
        let rotations = Rotations::new(Arc::clone(&store), units.clone(), Arc::clone(&replica));
        let kp = KpState {
            store,
            iam: Arc::clone(&iam),
            units,
            purge_after_seconds: config.purge_after_seconds,
            trusted_proxies: config.trusted_proxies.clone().into(),
            listen_port: config.listen.port(),
            last_sync: Arc::default(),
            audit: audit.clone(),
            replica,
        };
        Ok(Self {
            config: Arc::new(config),
            relays: Arc::default(),
            iam,
            kp,
            rotations,
            audit,
        })
    }

    fn admin(
        &self,
        headers: &HeaderMap,
        instance: Option<Uuid>,
    ) -> Result<crate::iam::Claims, crate::iam::IamError> {
        let authorization = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok());
        let claims = self.iam.verify(authorization, unix_now())?;
        claims.allows(instance, Role::CryptoUnitAdministrator)?;
        Ok(claims)
    }

    /// The configuration served.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Starts the service's background work: master key rotations left under way, rotation
    /// of keys whose rotation policy is due, the periodic check of every unit's signed status,
    /// and the audit chains' copies and countersignatures. Call once, inside the runtime.
    pub fn start_background(&self) -> tokio::task::JoinHandle<()> {
        self.rotations.resume_all();
        let units = self.kp.units.clone();
        let (kp, audit) = (self.kp.clone(), self.audit.clone());
        let rotations = self.rotations.clone();
        tokio::spawn(async move {
            tokio::join!(
                crate::kp::rotate_by_policy(kp),
                units.watch(),
                audit.run(),
                rotations.watch()
            );
        })
    }

    /// The GREP11 gRPC service's routes, served on their own port (`grep11_listen`).
    pub fn grep11_router(&self) -> Router {
        crate::grep11::Grep11Service::new(self.kp.clone()).router()
    }

    /// All routes.
    pub fn router(self) -> Router {
        let kp = crate::kp::router(self.kp.clone());
        let iam = crate::iam::router(Arc::clone(&self.iam))
            .merge(crate::iam::apikeys_router(Arc::clone(&self.iam)));
        Router::new()
            .route("/health", get(|| async { "ok" }))
            .route("/metrics", get(metrics))
            .route(
                "/openapi.json",
                get(|| async { axum::Json(crate::openapi::document()) }),
            )
            .route("/v1/instances", get(instances))
            .route(
                "/v1/instances/{instance}/units/{unit}/status",
                get(relay_status),
            )
            .route(
                "/v1/instances/{instance}/units/{unit}/command",
                post(relay_command),
            )
            .route("/v1/instances/{instance}/keystore", get(keystore))
            .route(
                "/v1/instances/{instance}/rotation",
                get(rotation_status).post(rotation_begin),
            )
            .route(
                "/v1/instances/{instance}/rotation/abort",
                post(rotation_abort),
            )
            .route(
                "/v1/instances/{instance}/rotation/complete",
                post(rotation_complete),
            )
            .route("/v1/instances/{instance}/audit", get(key_event_audit))
            .route(
                "/v1/instances/{instance}/units/{unit}/audit",
                get(unit_audit),
            )
            .with_state(self)
            .merge(kp)
            .merge(iam)
            .layer(DefaultBodyLimit::max(MAX_BODY))
            .layer(axum::middleware::from_fn(rotor_telemetry::observe))
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
        match rotor_unit::backend::correlated(request).send().await {
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
        code: ServiceErrorCode::UnitUnreachable,
        message: format!(
            "unit {} at {} did not answer; check that it runs",
            unit.id, unit.address
        ),
        status: StatusCode::BAD_GATEWAY,
    }
    .into_response()
}

/// `GET /metrics` (Prometheus text), for a token that may read it ([`crate::metrics`]).
async fn metrics(State(service): State<Service>, headers: HeaderMap) -> Response {
    let instances = service.config.instances.iter().map(|instance| instance.id);
    crate::metrics::response(crate::metrics::authorize(
        &service.iam,
        &headers,
        instances,
        unix_now(),
    ))
}

async fn instances(State(service): State<Service>, headers: HeaderMap) -> Response {
    let claims = match service.admin(&headers, None) {
        Ok(claims) => claims,
        Err(err) => return err.into_response(),
    };
    let view: Vec<InstanceView<'_>> = service
        .config
        .instances
        .iter()
        .filter(|instance| claims.covers(instance.id))
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
    headers: HeaderMap,
    Path((instance, unit)): Path<(String, String)>,
    RawQuery(query): RawQuery,
) -> Response {
    if let Err(err) = service.admin(&headers, Uuid::parse_str(&instance).ok()) {
        return err.into_response();
    }
    let unit = match service.unit(&instance, &unit) {
        Ok(unit) => unit,
        Err(err) => return err.into_response(),
    };
    let Some(link) = service.relays.get(&unit.id) else {
        return not_found("unit reached over the network", &unit.id.to_string()).into_response();
    };
    let url = format!("{}/status?{}", link.base(), query.unwrap_or_default());
    service.relay(unit, link.http().get(url)).await
}

/// How many key versions of the instance sit under each master key (by VP).
async fn keystore(
    State(service): State<Service>,
    headers: HeaderMap,
    Path(instance): Path<String>,
) -> Response {
    let Some(id) = Uuid::parse_str(&instance)
        .ok()
        .filter(|id| service.config.instances.iter().any(|i| i.id == *id))
    else {
        return not_found("instance", &instance).into_response();
    };
    if let Err(err) = service.admin(&headers, Some(id)) {
        return err.into_response();
    }
    let store = Arc::clone(&service.kp.store);
    match rotor_util::blocking(|| store.count_by_vp(id)) {
        Ok(counts) => axum::Json(KeystoreView {
            instance: id,
            master_keys: counts
                .into_iter()
                .map(|(vp, key_versions)| MasterKeyCount { vp, key_versions })
                .collect(),
        })
        .into_response(),
        Err(err) => {
            tracing::error!(error = %err, "key storage failed");
            ApiError {
                code: ServiceErrorCode::Storage,
                message: "key storage failed".to_owned(),
                status: StatusCode::INTERNAL_SERVER_ERROR,
            }
            .into_response()
        }
    }
}

async fn relay_command(
    State(service): State<Service>,
    headers: HeaderMap,
    Path((instance, unit)): Path<(String, String)>,
    body: Bytes,
) -> Response {
    if let Err(err) = service.admin(&headers, Uuid::parse_str(&instance).ok()) {
        return err.into_response();
    }
    let unit = match service.unit(&instance, &unit) {
        Ok(unit) => unit,
        Err(err) => return err.into_response(),
    };
    let Some(link) = service.relays.get(&unit.id) else {
        return not_found("unit reached over the network", &unit.id.to_string()).into_response();
    };
    let request = link
        .http()
        .post(format!("{}/command", link.base()))
        .header(header::CONTENT_TYPE, "application/json")
        .body(body);
    let response = service.relay(unit, request).await;
    // The command, accepted or refused, is now in the unit's chain: copy it, and have the key
    // event chain countersigned.
    if let Ok(instance) = Uuid::parse_str(&instance) {
        service.audit.after_admin_command(instance, unit.id).await;
    }
    response
}

fn rotation_error(err: &RotationError) -> Response {
    ApiError {
        code: err.code(),
        message: err.to_string(),
        status: StatusCode::from_u16(err.http_status()).unwrap_or(StatusCode::CONFLICT),
    }
    .into_response()
}

/// `{"rotation": journal}`, or the refusal.
fn journal_reply(result: Result<Journal, RotationError>) -> Response {
    match result {
        Ok(journal) => axum::Json(serde_json::json!({ "rotation": journal })).into_response(),
        Err(err) => rotation_error(&err),
    }
}

fn bad_request(message: impl Into<String>) -> Response {
    ApiError {
        code: ServiceErrorCode::BadRequest,
        message: message.into(),
        status: StatusCode::BAD_REQUEST,
    }
    .into_response()
}

impl Service {
    /// The instance named in the path, if the caller administers it.
    fn admin_instance(&self, headers: &HeaderMap, instance: &str) -> Result<Uuid, Box<Response>> {
        let id = Uuid::parse_str(instance)
            .ok()
            .filter(|id| self.config.instances.iter().any(|i| i.id == *id))
            .ok_or_else(|| Box::new(not_found("instance", instance).into_response()))?;
        self.admin(headers, Some(id))
            .map_err(|err| Box::new(err.into_response()))?;
        Ok(id)
    }
}

/// The rotation journal with live progress; `{"rotation": null}` if there never was one.
async fn rotation_status(
    State(service): State<Service>,
    headers: HeaderMap,
    Path(instance): Path<String>,
) -> Response {
    let id = match service.admin_instance(&headers, &instance) {
        Ok(id) => id,
        Err(response) => return *response,
    };
    match service.rotations.view(id) {
        Ok(view) => axum::Json(serde_json::json!({ "rotation": view })).into_response(),
        Err(err) => rotation_error(&err),
    }
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct BeginRotation {
    from_vp: rotor_crypto::Vp,
    to_vp: rotor_crypto::Vp,
    /// Hold before promotion (recorded in the journal).
    #[serde(default)]
    hold_before_promote: bool,
}

/// Starts (or continues) reencryption from `from_vp` to `to_vp`.
async fn rotation_begin(
    State(service): State<Service>,
    headers: HeaderMap,
    Path(instance): Path<String>,
    body: Bytes,
) -> Response {
    let id = match service.admin_instance(&headers, &instance) {
        Ok(id) => id,
        Err(response) => return *response,
    };
    let request: BeginRotation = match serde_json::from_slice(&body) {
        Ok(request) => request,
        Err(err) => {
            return bad_request(format!(
                "expected {{\"from_vp\": HEX, \"to_vp\": HEX}}: {err}"
            ));
        }
    };
    journal_reply(
        service
            .rotations
            .begin(
                id,
                request.from_vp,
                request.to_vp,
                request.hold_before_promote,
            )
            .await,
    )
}

/// Rewraps key storage back to the old master key, once every unit accepted the abort.
async fn rotation_abort(
    State(service): State<Service>,
    headers: HeaderMap,
    Path(instance): Path<String>,
) -> Response {
    let id = match service.admin_instance(&headers, &instance) {
        Ok(id) => id,
        Err(response) => return *response,
    };
    journal_reply(service.rotations.abort(id).await)
}

/// Closes the rotation once every unit is promoted.
async fn rotation_complete(
    State(service): State<Service>,
    headers: HeaderMap,
    Path(instance): Path<String>,
) -> Response {
    let id = match service.admin_instance(&headers, &instance) {
        Ok(id) => id,
        Err(response) => return *response,
    };
    journal_reply(service.rotations.complete(id).await)
}

fn audit_failed(err: &dyn std::fmt::Display) -> Response {
    tracing::error!(error = %err, "audit chain unavailable");
    ApiError {
        code: ServiceErrorCode::AuditUnavailable,
        message: format!("the audit chain could not be read: {err}"),
        status: StatusCode::BAD_GATEWAY,
    }
    .into_response()
}

/// The instance's key event chain and its countersignatures (the head is countersigned first if
/// it moved since).
async fn key_event_audit(
    State(service): State<Service>,
    headers: HeaderMap,
    Path(instance): Path<String>,
) -> Response {
    let id = match service.admin_instance(&headers, &instance) {
        Ok(id) => id,
        Err(response) => return *response,
    };
    if let Err(err) = service.audit.countersign(id).await {
        tracing::warn!(instance = %id, error = %err, "key event chain not countersigned");
    }
    let store = Arc::clone(service.audit.store());
    let read = rotor_util::blocking(|| {
        Ok::<_, rotor_store::StoreError>((
            store.audit_entries(rotor_store::AuditChain::Instance(id))?,
            store.countersignatures(id)?,
        ))
    });
    match read {
        Ok((entries, countersignatures)) => axum::Json(rotor_proto::audit::KeyEventChain {
            instance: id,
            entries,
            countersignatures,
        })
        .into_response(),
        Err(err) => audit_failed(&err),
    }
}

#[derive(serde::Deserialize)]
struct ChallengeQuery {
    challenge: String,
}

/// The unit's admin chain as stored here, after copying what is new, with the unit's live head.
async fn unit_audit(
    State(service): State<Service>,
    headers: HeaderMap,
    Path((instance, unit)): Path<(String, String)>,
    axum::extract::Query(query): axum::extract::Query<ChallengeQuery>,
) -> Response {
    let id = match service.admin_instance(&headers, &instance) {
        Ok(id) => id,
        Err(response) => return *response,
    };
    let unit = match service.unit(&instance, &unit) {
        Ok(unit) => unit.id,
        Err(err) => return err.into_response(),
    };
    let Ok(challenge) = hex::decode(&query.challenge) else {
        return bad_request("challenge is not hex");
    };
    let head = match service.audit.sync_unit(id, unit, challenge).await {
        Ok(head) => head,
        Err(err) => return audit_failed(&err),
    };
    let store = Arc::clone(service.audit.store());
    match rotor_util::blocking(|| store.audit_entries(rotor_store::AuditChain::Unit(unit))) {
        Ok(entries) => axum::Json(rotor_proto::audit::AuditBatch {
            unit,
            entries,
            head,
        })
        .into_response(),
        Err(err) => audit_failed(&err),
    }
}

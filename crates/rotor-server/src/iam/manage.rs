//! `/v1/apikeys`: API keys managed while the service runs, kept in the store and so seen by
//! every replica at once. Manager role only.
//!
//! - `GET /v1/apikeys`: the keys (revoked ones included) whose instances the caller's token
//!   covers, as `{"api_keys": [KEY…]}`;
//! - `POST /v1/apikeys` with `{"name", "role", "instances"}`: a new key, answered once as
//!   `{"api_key": KEY, "key": "rotor_…"}` (201);
//! - `POST /v1/apikeys/{id}/rotate`: a new key text for the same key, answered once the same
//!   way; the old text and its tokens stop working;
//! - `DELETE /v1/apikeys/{id}`: revokes the key for good; its tokens stop working.
//!
//! A caller manages only keys whose every instance its token covers (a token for all instances
//! covers `"*"`), and sees no other: a key it may not manage is not found.
//! Tokens of a rotated or revoked key stop working on every replica within
//! [`API_KEY_REFRESH_SECONDS`] (see [`super::stored`]).

use axum::extract::Path as UrlPath;
use axum::http::HeaderMap;
use axum::routing::{delete, get};
use rotor_store::{ApiKeyChange, ApiKeyRecord, StoreError};
use rotor_util::time::{now_ms, rfc3339};
use zeroize::Zeroizing;

use super::*;

/// The collection path.
pub const APIKEYS_PATH: &str = "/v1/apikeys";

/// The longest key name.
const MAX_NAME_CHARS: usize = 100;

/// Why a request to manage API keys was refused.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ApiKeyError {
    /// The caller's token is missing, invalid or lacks the Manager role.
    #[error(transparent)]
    Iam(#[from] IamError),
    /// The body is not what the route takes.
    #[error("{0}")]
    BadRequest(String),
    /// The new key would name an instance the caller's token does not cover.
    #[error(
        "your access token does not cover instance '{0}': a key may cover only instances yours does"
    )]
    InstanceNotCovered(String),
    /// No key with this id that the caller may manage.
    #[error("no API key {0} that you may manage; 'rotor apikeys list' shows them")]
    NotFound(String),
    /// An unrevoked key (or a configured one) has this name.
    #[error("an API key named '{0}' exists already; choose another name")]
    NameTaken(String),
    /// The key is revoked: it cannot be rotated.
    #[error("API key {0} is revoked; create a new one")]
    Revoked(Uuid),
    /// The store failed; the details are logged.
    #[error("the service cannot store API keys at the moment; try again")]
    Storage,
}

impl ApiKeyError {
    fn status(&self) -> StatusCode {
        match self {
            Self::Iam(err) => {
                StatusCode::from_u16(err.http_status()).unwrap_or(StatusCode::UNAUTHORIZED)
            }
            Self::BadRequest(_) => StatusCode::BAD_REQUEST,
            Self::InstanceNotCovered(_) => StatusCode::FORBIDDEN,
            Self::NotFound(_) => StatusCode::NOT_FOUND,
            Self::NameTaken(_) | Self::Revoked(_) => StatusCode::CONFLICT,
            Self::Storage => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn code(&self) -> &'static str {
        match self {
            Self::Iam(err) => err.error_code(),
            Self::BadRequest(_) => "bad_request",
            Self::InstanceNotCovered(_) => "instance_not_allowed",
            Self::NotFound(_) => "api_key_not_found",
            Self::NameTaken(_) => "api_key_name_taken",
            Self::Revoked(_) => "api_key_revoked",
            Self::Storage => "storage",
        }
    }
}

/// `{"code", "message"}` with the status of [`ApiKeyError::status`] (token errors keep their
/// own body and `WWW-Authenticate`).
impl IntoResponse for ApiKeyError {
    fn into_response(self) -> Response {
        if let Self::Iam(err) = self {
            return err.into_response();
        }
        let body = serde_json::json!({ "code": self.code(), "message": self.to_string() });
        (self.status(), axum::Json(body)).into_response()
    }
}

fn storage_failed(err: StoreError) -> ApiKeyError {
    tracing::error!(error = %err, "the API key store failed");
    ApiKeyError::Storage
}

/// A key as the routes show it: never its hash.
#[derive(Debug, Serialize, Deserialize)]
pub struct ApiKeyView {
    /// Its id.
    pub id: Uuid,
    /// Its name.
    pub name: String,
    /// Its role.
    pub role: String,
    /// The instances it covers.
    pub instances: Vec<String>,
    /// Raised at each rotation.
    pub generation: u32,
    /// When it was created (RFC 3339).
    pub created: String,
    /// Who created it.
    pub created_by: String,
    /// When it was last rotated.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rotated: Option<String>,
    /// Who last rotated it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rotated_by: Option<String>,
    /// When it was revoked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revoked: Option<String>,
    /// Who revoked it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revoked_by: Option<String>,
}

impl From<&ApiKeyRecord> for ApiKeyView {
    fn from(key: &ApiKeyRecord) -> Self {
        let at = |change: &Option<ApiKeyChange>| change.as_ref().map(|c| rfc3339(c.at));
        let by = |change: &Option<ApiKeyChange>| change.as_ref().map(|c| c.by.clone());
        Self {
            id: key.id,
            name: key.name.clone(),
            role: key.role.clone(),
            instances: key.instances.clone(),
            generation: key.generation,
            created: rfc3339(key.created),
            created_by: key.created_by.clone(),
            rotated: at(&key.rotated),
            rotated_by: by(&key.rotated),
            revoked: at(&key.revoked),
            revoked_by: by(&key.revoked),
        }
    }
}

/// The body of `POST /v1/apikeys`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateBody {
    name: String,
    role: Role,
    instances: Vec<String>,
}

/// What `iam` needs to manage keys: the verified Manager caller and the store.
fn manager<'a>(iam: &'a Iam, headers: &HeaderMap) -> Result<(Claims, &'a StoredKeys), ApiKeyError> {
    let authorization = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    let claims = iam.verify(authorization, unix_now())?;
    claims.allows(None, Role::Manager)?;
    let stored = iam.stored.as_ref().ok_or(ApiKeyError::Storage)?;
    Ok((claims, stored))
}

/// Whether the caller's token covers every instance of a key.
fn covers_all(claims: &Claims, instances: &[String]) -> bool {
    claims.instances.iter().any(|entry| entry == "*")
        || instances
            .iter()
            .all(|instance| Uuid::parse_str(instance).is_ok_and(|instance| claims.covers(instance)))
}

/// The key `id`, if the caller may manage it.
fn managed(stored: &StoredKeys, claims: &Claims, id: &str) -> Result<ApiKeyRecord, ApiKeyError> {
    let not_found = || ApiKeyError::NotFound(id.to_owned());
    let uuid = Uuid::parse_str(id).map_err(|_| not_found())?;
    rotor_util::blocking(|| stored.store.api_key(uuid))
        .map_err(storage_failed)?
        .filter(|key| covers_all(claims, &key.instances))
        .ok_or_else(not_found)
}

/// A fresh key text and its SHA-256. An unsalted, fast hash is the right one here: the key is
/// 256 random bits, so no dictionary or brute force can find it from its hash, and a slow
/// password hash would only make each token request slower.
fn fresh_key() -> (Zeroizing<String>, [u8; 32]) {
    let (key, _) = new_api_key();
    let key = Zeroizing::new(key);
    let hash = sha256(key.as_bytes());
    (key, hash)
}

/// Checks a new key's name and instances against the caller and this service.
fn check_new(
    iam: &Iam,
    stored: &StoredKeys,
    claims: &Claims,
    body: &CreateBody,
) -> Result<(), ApiKeyError> {
    let name = body.name.trim();
    if name.is_empty() || name != body.name || name.chars().count() > MAX_NAME_CHARS {
        return Err(ApiKeyError::BadRequest(format!(
            "name must be 1 to {MAX_NAME_CHARS} characters, without leading or trailing spaces"
        )));
    }
    if name.chars().any(char::is_control) {
        return Err(ApiKeyError::BadRequest(
            "name must not hold control characters".to_owned(),
        ));
    }
    if iam.keys.iter().any(|key| key.name == name) {
        return Err(ApiKeyError::NameTaken(name.to_owned()));
    }
    if body.instances.is_empty() {
        return Err(ApiKeyError::BadRequest(
            "instances must list the instance ids the key covers, or \"*\" for all".to_owned(),
        ));
    }
    let mut seen = HashSet::new();
    for instance in &body.instances {
        if !seen.insert(instance.as_str()) {
            return Err(ApiKeyError::BadRequest(format!(
                "instance '{instance}' is listed twice"
            )));
        }
        if instance != "*" {
            let served = Uuid::parse_str(instance)
                .ok()
                .filter(|id| stored.served.contains(id));
            if served.is_none() {
                return Err(ApiKeyError::BadRequest(format!(
                    "instance '{instance}' is neither \"*\" nor an instance this service serves"
                )));
            }
        }
        if !covers_all(claims, std::slice::from_ref(instance)) {
            return Err(ApiKeyError::InstanceNotCovered(instance.clone()));
        }
    }
    Ok(())
}

/// The key and its text, shown this once.
fn with_key(key: &ApiKeyRecord, text: &str) -> serde_json::Value {
    serde_json::json!({ "api_key": ApiKeyView::from(key), "key": text })
}

async fn list(State(iam): State<Arc<Iam>>, headers: HeaderMap) -> Result<Response, ApiKeyError> {
    let (claims, stored) = manager(&iam, &headers)?;
    let keys = rotor_util::blocking(|| stored.store.api_keys()).map_err(storage_failed)?;
    let views: Vec<ApiKeyView> = keys
        .iter()
        .filter(|key| covers_all(&claims, &key.instances))
        .map(ApiKeyView::from)
        .collect();
    Ok(axum::Json(serde_json::json!({ "api_keys": views })).into_response())
}

async fn create(
    State(iam): State<Arc<Iam>>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiKeyError> {
    let (claims, stored) = manager(&iam, &headers)?;
    let body: CreateBody = serde_json::from_slice(&body).map_err(|err| {
        ApiKeyError::BadRequest(format!(
            "expected {{\"name\": TEXT, \"role\": \"Reader\"|\"Writer\"|\"Manager\"|\"Crypto Unit Administrator\", \"instances\": [ID or \"*\", …]}}: {err}"
        ))
    })?;
    check_new(&iam, stored, &claims, &body)?;
    let (text, key_sha256) = fresh_key();
    let key = ApiKeyRecord {
        id: Uuid::new_v4(),
        name: body.name,
        key_sha256,
        role: body.role.name().to_owned(),
        instances: body.instances,
        generation: 1,
        created: now_ms(),
        created_by: claims.sub.clone(),
        rotated: None,
        revoked: None,
    };
    match rotor_util::blocking(|| stored.store.create_api_key(&key)) {
        Ok(()) => {}
        Err(StoreError::Conflict(_)) => return Err(ApiKeyError::NameTaken(key.name)),
        Err(err) => return Err(storage_failed(err)),
    }
    tracing::info!(api_key = %key.id, name = %key.name, role = %key.role, by = %claims.sub, "created an API key");
    Ok((StatusCode::CREATED, axum::Json(with_key(&key, &text))).into_response())
}

async fn rotate(
    State(iam): State<Arc<Iam>>,
    headers: HeaderMap,
    UrlPath(id): UrlPath<String>,
) -> Result<Response, ApiKeyError> {
    let (claims, stored) = manager(&iam, &headers)?;
    let key = managed(stored, &claims, &id)?;
    let (text, key_sha256) = fresh_key();
    let rotated = rotor_util::blocking(|| {
        stored
            .store
            .rotate_api_key(key.id, &key_sha256, now_ms(), &claims.sub)
    })
    .map_err(|err| match err {
        StoreError::Refused(_) => ApiKeyError::Revoked(key.id),
        StoreError::NotFound(_) => ApiKeyError::NotFound(id.clone()),
        other => storage_failed(other),
    })?;
    stored.forget_snapshot();
    tracing::info!(api_key = %key.id, name = %key.name, by = %claims.sub, generation = rotated.generation, "rotated an API key");
    Ok(axum::Json(with_key(&rotated, &text)).into_response())
}

async fn revoke(
    State(iam): State<Arc<Iam>>,
    headers: HeaderMap,
    UrlPath(id): UrlPath<String>,
) -> Result<Response, ApiKeyError> {
    let (claims, stored) = manager(&iam, &headers)?;
    let key = managed(stored, &claims, &id)?;
    let revoked =
        rotor_util::blocking(|| stored.store.revoke_api_key(key.id, now_ms(), &claims.sub))
            .map_err(|err| match err {
                StoreError::NotFound(_) => ApiKeyError::NotFound(id.clone()),
                other => storage_failed(other),
            })?;
    stored.forget_snapshot();
    tracing::info!(api_key = %key.id, name = %key.name, by = %claims.sub, "revoked an API key");
    Ok(axum::Json(serde_json::json!({ "api_key": ApiKeyView::from(&revoked) })).into_response())
}

/// The routes of `/v1/apikeys`, to merge into the service's router.
pub fn router(iam: Arc<Iam>) -> Router {
    Router::new()
        .route(APIKEYS_PATH, get(list).post(create))
        .route(&format!("{APIKEYS_PATH}/{{id}}/rotate"), post(rotate))
        .route(&format!("{APIKEYS_PATH}/{{id}}"), delete(revoke))
        .with_state(iam)
}

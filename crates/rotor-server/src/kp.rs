//! The Key Protect API v2, as IBM's `keyprotect` SDK speaks it: keys (create, import, list,
//! get, metadata, versions, patch), actions (wrap, unwrap, rewrap, rotate, enable, disable,
//! set and unset for deletion, sync), delete, restore, purge, aliases, key rings, key policies
//! and instance policies.
//!
//! The service holds only wrapped blobs: generation, import, wrap, unwrap and rewrap run inside
//! one of the instance's operational units (another is tried when one is unreachable or has no
//! usable master key).

use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use rotor_proto::error::ErrorCode;
use rotor_store::{
    Deletion, DeletionAuthorization, KeyMeta, KeyRing, KeyState, KeyStore, KeyVersion, ListFilter,
    StoreError,
};
use rotor_unit::daemon::Served;
use rotor_unit::keyapi::{
    ExportRequest, GenerateBatch, GenerateItem, GenerateRequest, GeneratedBatch, ImportRequest,
    ImportTokenKeys, ImportTokenRequest, KeyRef, Plaintext, RewrapRequest, SealedKey,
    SecureImportRequest, UnwrapRequest, WrapRequest, Wrapped,
};
use rotor_unit::keys::{Binding, ciphertext_version};
use serde::Deserialize;
use serde_json::{Value, json};
use uuid::Uuid;
use zeroize::Zeroizing;

use rotor_util::time::{now_ms, rfc3339, unix_now};

use crate::iam::{Claims, Iam, IamError, Role};
use crate::pool::{PoolError, UnitPool};

const KEY_TYPE: &str = "application/vnd.ibm.kms.key+json";
const ERROR_TYPE: &str = "application/vnd.ibm.kms.error+json";
/// How long a dual-authorization "set for deletion" holds (Key Protect: 7 days).
const DELETION_AUTHORIZATION_MS: i64 = 7 * 24 * 3600 * 1000;
/// How long a deleted key can be restored (Key Protect: 30 days).
const RESTORE_WINDOW_MS: i64 = 30 * 24 * 3600 * 1000;

/// What the Key Protect routes share.
#[derive(Clone)]
pub struct KpState {
    /// Key storage.
    pub store: Arc<dyn KeyStore>,
    /// Token verification.
    pub iam: Arc<Iam>,
    /// The units of every instance.
    pub units: UnitPool,
    /// How long after deletion a key may be purged, in seconds (Key Protect: 4 hours).
    pub purge_after_seconds: u64,
    /// Held for reading while a new blob is wrapped and stored; a rotation takes it for
    /// writing to count what is left under the old master key (see [`crate::rotation`]).
    pub gate: Arc<tokio::sync::RwLock<()>>,
}

/// A Key Protect error: status, IBM-style code, message.
#[derive(Debug)]
pub struct KpError {
    status: StatusCode,
    code: &'static str,
    message: String,
}

impl KpError {
    pub(crate) fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
        }
    }

    pub(crate) fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "BAD_BODY_ERR", message)
    }

    fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "KEY_NOT_FOUND_ERR", message)
    }

    fn conflict(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::CONFLICT, code, message)
    }
}

impl IntoResponse for KpError {
    fn into_response(self) -> Response {
        let reason = self.status.canonical_reason().unwrap_or("Error");
        let body = json!({
            "metadata": {"collectionType": ERROR_TYPE, "collectionTotal": 1},
            "resources": [{
                "errorMsg": format!("{reason}: {}", self.message),
                "reasons": [{"code": self.code, "message": self.message, "status": self.status.as_u16()}],
            }],
        });
        (self.status, axum::Json(body)).into_response()
    }
}

impl From<IamError> for KpError {
    fn from(err: IamError) -> Self {
        let status = StatusCode::from_u16(err.http_status()).unwrap_or(StatusCode::UNAUTHORIZED);
        let code = if status == StatusCode::FORBIDDEN {
            "FORBIDDEN_ERR"
        } else {
            "UNAUTHORIZED_ERR"
        };
        Self::new(status, code, err.to_string())
    }
}

impl From<PoolError> for KpError {
    fn from(err: PoolError) -> Self {
        match err {
            PoolError::UnknownInstance(_) => Self::not_found("unknown instance"),
            PoolError::NoOperationalUnit => Self::conflict(
                "NO_CRYPTO_UNIT_ERR",
                "this instance has no operational crypto unit",
            ),
            PoolError::Refused(body) => match body.code {
                ErrorCode::NoNewMasterKey => Self::conflict("NO_NEW_MASTER_KEY_ERR", body.message),
                ErrorCode::InvalidCiphertext => Self::new(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "UNPROCESSABLE_CIPHERTEXT_ERR",
                    "the ciphertext is invalid, was made with another key, or the additional authenticated data differs",
                ),
                _ => Self::bad_request(body.message),
            },
            PoolError::Unavailable { .. } | PoolError::UnitUnreachable { .. } => {
                Self::conflict("NO_MASTER_KEY_ERR", err.to_string())
            }
        }
    }
}

impl From<StoreError> for KpError {
    fn from(err: StoreError) -> Self {
        match err {
            StoreError::NotFound(message) => Self::not_found(message),
            StoreError::Conflict(message) => Self::conflict("CONFLICT_ERR", message),
            StoreError::Refused(message) => Self::conflict("KEY_ACTION_INVALID_STATE_ERR", message),
            other => {
                tracing::error!(error = %other, "key storage failed");
                Self::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "INTERNAL_SERVER_ERR",
                    "key storage failed",
                )
            }
        }
    }
}

pub(crate) type KpResult<T> = Result<T, KpError>;

pub(crate) use rotor_util::blocking;

/// The caller: instance from `Bluemix-Instance`, identity from the bearer token.
pub(crate) struct Caller {
    pub(crate) instance: Uuid,
    claims: Claims,
}

impl KpState {
    pub(crate) fn caller(&self, headers: &HeaderMap, needed: Role) -> KpResult<Caller> {
        let authorization = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok());
        let claims = self.iam.verify(authorization, unix_now())?;
        let instance = headers
            .get("bluemix-instance")
            .and_then(|v| v.to_str().ok())
            .ok_or_else(|| KpError::bad_request("the Bluemix-Instance header is missing"))?;
        let instance = Uuid::parse_str(instance.trim()).map_err(|_| {
            KpError::bad_request("the Bluemix-Instance header is not an instance id")
        })?;
        claims.allows(Some(instance), needed)?;
        if !self.units.contains(instance) {
            return Err(KpError::new(
                StatusCode::NOT_FOUND,
                "INSTANCE_NOT_FOUND_ERR",
                format!("instance {instance} does not exist on this service"),
            ));
        }
        Ok(Caller { instance, claims })
    }

    /// Runs a key operation on the instance's units (see [`UnitPool::call`]).
    pub(crate) async fn unit_call<Op: Served>(
        &self,
        instance: Uuid,
        request: &Op,
    ) -> KpResult<Op::Reply> {
        self.units
            .call(instance, request)
            .await
            .map_err(KpError::from)
    }

    /// [`Self::unit_call`] with a request built from stored blobs (see
    /// [`UnitPool::call_fresh`]).
    async fn unit_call_fresh<Op: Served>(
        &self,
        instance: Uuid,
        build: impl Fn() -> KpResult<Op>,
    ) -> KpResult<Op::Reply> {
        self.units.call_fresh(instance, build).await
    }

    fn find_key(&self, caller: &Caller, id: &str) -> KpResult<KeyMeta> {
        blocking(|| self.store.key(caller.instance, id))?
            .ok_or_else(|| KpError::not_found(format!("key {id} does not exist")))
    }

    fn key_version(&self, key: &KeyMeta, version: u32) -> KpResult<KeyRef> {
        let stored =
            blocking(|| self.store.version(key.instance, key.id, version))?.ok_or_else(|| {
                KpError::not_found(format!(
                    "version {version} of key {} does not exist",
                    key.id
                ))
            })?;
        Ok(key_ref(key, &stored))
    }
}

fn key_ref(key: &KeyMeta, version: &KeyVersion) -> KeyRef {
    KeyRef {
        binding: Binding {
            instance: key.instance,
            key: key.id,
            version: version.version,
            extractable: key.extractable,
        },
        blob: version.blob.clone(),
    }
}

fn crn(instance: Uuid, kind: &str, id: &str) -> String {
    format!("crn:v1:rotor:private:kms:local:a/rotor:{instance}:{kind}:{id}")
}

/// The JSON of a key, as Key Protect shows it.
fn key_json(
    key: &KeyMeta,
    newest: Option<&KeyVersion>,
    payload: Option<&[u8]>,
    purge_after_seconds: u64,
) -> Value {
    let mut out = json!({
        "type": KEY_TYPE,
        "id": key.id,
        "name": key.name,
        "description": key.description,
        "state": u8::from(key.state),
        "extractable": key.extractable,
        "imported": key.imported,
        "crn": crn(key.instance, "key", &key.id.to_string()),
        "keyRingID": key.key_ring,
        "algorithmType": "AES",
        "createdBy": key.created_by,
        "creationDate": rfc3339(key.created),
        "lastUpdateDate": rfc3339(key.updated),
        "deleted": key.deletion.is_some(),
        "dualAuthDelete": {"enabled": key.policies.dual_auth_delete.unwrap_or(false)},
        "aliases": key.aliases,
        "labels": key.labels,
    });
    if let Some(rotated) = key.last_rotated {
        out["lastRotateDate"] = json!(rfc3339(rotated));
    }
    if let Some(version) = newest {
        out["keyVersion"] = json!({"id": version.id, "creationDate": rfc3339(version.created)});
    }
    if let Some(deletion) = &key.deletion {
        let purge_from = deletion.at + i64::try_from(purge_after_seconds).unwrap_or(0) * 1000;
        out["deletionDate"] = json!(rfc3339(deletion.at));
        out["deletedBy"] = json!(deletion.by);
        out["restoreExpirationDate"] = json!(rfc3339(deletion.at + RESTORE_WINDOW_MS));
        out["purgeAllowedFrom"] = json!(rfc3339(purge_from));
        out["purgeAllowed"] = json!(now_ms() >= purge_from);
    }
    if let Some(pending) = &key.deletion_authorization {
        out["dualAuthDelete"]["keySetForDeletion"] = json!(true);
        out["dualAuthDelete"]["authExpiration"] = json!(rfc3339(pending.until));
    }
    if let Some(payload) = payload {
        out["payload"] = json!(B64.encode(payload));
    }
    out
}

fn collection(kind: &str, resources: Vec<Value>) -> Value {
    json!({
        "metadata": {"collectionType": kind, "collectionTotal": resources.len()},
        "resources": resources,
    })
}

pub(crate) fn parse_json(body: &[u8]) -> KpResult<Value> {
    serde_json::from_slice(body)
        .map_err(|err| KpError::bad_request(format!("the body is not valid JSON: {err}")))
}

/// The single resource of a collection body.
fn single_resource(body: &[u8]) -> KpResult<Value> {
    let value = parse_json(body)?;
    match value
        .get("resources")
        .and_then(Value::as_array)
        .map(Vec::as_slice)
    {
        Some([resource]) if resource.is_object() => Ok(resource.clone()),
        _ => Err(KpError::bad_request(
            "the body must hold exactly one resource in 'resources'",
        )),
    }
}

pub(crate) fn decode_b64(field: &str, value: &Value) -> KpResult<Option<Vec<u8>>> {
    match value.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(text)) => B64
            .decode(text.trim())
            .map(Some)
            .map_err(|_| KpError::bad_request(format!("'{field}' is not valid base64"))),
        Some(_) => Err(KpError::bad_request(format!(
            "'{field}' must be a base64 string"
        ))),
    }
}

pub(crate) fn aad_of(value: &Value) -> KpResult<Vec<String>> {
    match value.get("aad") {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::Array(items)) => items
            .iter()
            .map(|item| {
                item.as_str()
                    .map(str::to_owned)
                    .ok_or_else(|| KpError::bad_request("'aad' must be a list of strings"))
            })
            .collect(),
        Some(_) => Err(KpError::bad_request("'aad' must be a list of strings")),
    }
}

fn check_name(name: &str) -> KpResult<()> {
    let length = name.chars().count();
    if !(2..=90).contains(&length) || name.chars().any(char::is_control) {
        return Err(KpError::bad_request(
            "a key name has 2 to 90 printable characters",
        ));
    }
    Ok(())
}

fn check_alias(alias: &str) -> KpResult<()> {
    let valid = (2..=90).contains(&alias.len())
        && alias
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        && Uuid::parse_str(alias).is_err();
    if valid {
        Ok(())
    } else {
        Err(KpError::bad_request(
            "an alias has 2 to 90 characters of letters, digits, '-' and '_', and is not a UUID",
        ))
    }
}

/// Refuses cryptographic use of a key that is not active.
fn usable(key: &KeyMeta) -> KpResult<()> {
    if key.deletion.is_some() {
        return Err(KpError::new(
            StatusCode::GONE,
            "KEY_DELETED_ERR",
            format!("key {} is deleted", key.id),
        ));
    }
    match key.state {
        KeyState::Active => Ok(()),
        other => Err(KpError::conflict(
            "KEY_ACTION_INVALID_STATE_ERR",
            format!(
                "key {} is {}; enable it first",
                key.id,
                if other == KeyState::Suspended {
                    "disabled"
                } else {
                    "not active"
                }
            ),
        )),
    }
}

/// Whether deleting this key needs a second identity.
/// Whether deleting this key needs a second identity: its own policy, which it inherited from
/// the instance policy in force when it was created unless it was created with an override.
fn dual_auth(key: &KeyMeta) -> bool {
    key.policies.dual_auth_delete.unwrap_or(false)
}

/// Whether the instance's dual-authorization policy is on.
fn instance_dual_auth(state: &KpState, instance: Uuid) -> KpResult<bool> {
    let policies = blocking(|| state.store.instance_policies(instance))?;
    Ok(policies["dualAuthDelete"]["enabled"]
        .as_bool()
        .unwrap_or(false))
}

async fn create_key(
    State(state): State<KpState>,
    headers: HeaderMap,
    body: Bytes,
) -> KpResult<Response> {
    let caller = state.caller(&headers, Role::Writer)?;
    let resource = single_resource(&body)?;
    create_from(&state, &caller, &headers, &resource).await
}

async fn create_key_with_overrides(
    State(state): State<KpState>,
    headers: HeaderMap,
    body: Bytes,
) -> KpResult<Response> {
    let caller = state.caller(&headers, Role::Writer)?;
    let resource = single_resource(&body)?;
    create_from(&state, &caller, &headers, &resource).await
}

async fn create_from(
    state: &KpState,
    caller: &Caller,
    headers: &HeaderMap,
    resource: &Value,
) -> KpResult<Response> {
    let name = resource["name"]
        .as_str()
        .ok_or_else(|| KpError::bad_request("'name' is required"))?
        .to_owned();
    check_name(&name)?;
    let description = resource["description"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    if description.chars().count() > 240 {
        return Err(KpError::bad_request(
            "a description has at most 240 characters",
        ));
    }
    let extractable = match &resource["extractable"] {
        Value::Null => false,
        Value::Bool(b) => *b,
        _ => return Err(KpError::bad_request("'extractable' must be true or false")),
    };
    let aliases: Vec<String> = match &resource["aliases"] {
        Value::Null => Vec::new(),
        Value::Array(items) => items
            .iter()
            .filter_map(Value::as_str)
            .map(str::to_owned)
            .collect(),
        _ => return Err(KpError::bad_request("'aliases' must be a list of strings")),
    };
    if aliases.len() > 5 {
        return Err(KpError::bad_request("a key has at most 5 aliases"));
    }
    for alias in &aliases {
        check_alias(alias)?;
    }
    let key_ring = headers
        .get("x-kms-key-ring")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("default")
        .to_owned();
    let rings = blocking(|| state.store.key_rings(caller.instance))?;
    if !rings.iter().any(|ring| ring.id == key_ring) {
        return Err(KpError::not_found(format!(
            "key ring '{key_ring}' does not exist"
        )));
    }
    let payload = decode_b64("payload", resource)?;
    let id = Uuid::new_v4();
    let binding = Binding {
        instance: caller.instance,
        key: id,
        version: 1,
        extractable,
    };
    let imported = payload.is_some();
    let secure = resource.get("encryptedNonce").is_some_and(|v| !v.is_null());
    let _gate = state.gate.read().await;
    let sealed: SealedKey = match payload {
        Some(encrypted_material) if secure => {
            secure_import(
                state,
                caller.instance,
                binding,
                resource,
                encrypted_material,
            )
            .await?
        }
        Some(material) => {
            state
                .unit_call(caller.instance, &ImportRequest { binding, material })
                .await?
        }
        None if secure => {
            return Err(KpError::bad_request(
                "a secure import needs the encrypted key material in 'payload'",
            ));
        }
        None => {
            state
                .unit_call(
                    caller.instance,
                    &GenerateRequest {
                        binding,
                        length: 32,
                    },
                )
                .await?
        }
    };
    let now = now_ms();
    let mut policies = rotor_store::KeyPolicies {
        dual_auth_delete: match resource["dualAuthDelete"]["enabled"].as_bool() {
            Some(enabled) => Some(enabled),
            None => instance_dual_auth(state, caller.instance)?.then_some(true),
        },
        ..rotor_store::KeyPolicies::default()
    };
    if let Some(months) = resource["rotation"]["interval_month"].as_u64() {
        policies.rotation_interval_month =
            u8::try_from(months).ok().filter(|m| (1..=12).contains(m));
        policies.rotation_enabled = resource["rotation"]["enabled"].as_bool();
    }
    let key = KeyMeta {
        instance: caller.instance,
        id,
        name,
        description,
        extractable,
        imported,
        state: KeyState::Active,
        key_ring,
        aliases,
        created: now,
        created_by: caller.claims.sub.clone(),
        updated: now,
        last_rotated: None,
        deletion: None,
        deletion_authorization: None,
        policies,
        newest_version: 1,
        labels: Vec::new(),
    };
    let version = KeyVersion {
        version: 1,
        id: Uuid::new_v4(),
        vp: sealed.vp,
        blob: sealed.blob,
        created: now,
    };
    blocking(|| state.store.create_key(&key, &version))?;
    tracing::info!(instance = %key.instance, key = %key.id, extractable, imported, "key created");
    let body = collection(
        KEY_TYPE,
        vec![key_json(
            &key,
            Some(&version),
            sealed.material.as_deref(),
            state.purge_after_seconds,
        )],
    );
    Ok((StatusCode::CREATED, axum::Json(body)).into_response())
}

/// Creates root keys in bulk: one unit round trip makes every key and wraps the given DEK
/// under it, and one keystore transaction stores them all. Returns, in order, each key's id and
/// its DEK ciphertext (no AAD).
pub async fn create_keys_batch(
    state: &KpState,
    instance: Uuid,
    created_by: &str,
    keys: Vec<(String, Zeroizing<Vec<u8>>)>,
) -> KpResult<Vec<(Uuid, Vec<u8>)>> {
    if keys.is_empty() || keys.len() > MAX_BATCH_CREATE {
        return Err(KpError::bad_request(format!(
            "a batch creates 1 to {MAX_BATCH_CREATE} keys"
        )));
    }
    for (name, dek) in &keys {
        check_name(name)?;
        if dek.is_empty() || dek.len() > 7_500 {
            return Err(KpError::bad_request("each 'dek' is 1 to 7500 bytes"));
        }
    }
    let dual_auth = instance_dual_auth(state, instance)?.then_some(true);
    let items: Vec<GenerateItem> = keys
        .iter()
        .map(|(_, dek)| GenerateItem {
            binding: Binding {
                instance,
                key: Uuid::new_v4(),
                version: 1,
                extractable: false,
            },
            dek: dek.clone(),
        })
        .collect();
    let ids: Vec<Uuid> = items.iter().map(|item| item.binding.key).collect();
    let _gate = state.gate.read().await;
    let generated: GeneratedBatch = state.unit_call(instance, &GenerateBatch { items }).await?;
    if generated.keys.len() != ids.len() {
        return Err(KpError::conflict(
            "NO_MASTER_KEY_ERR",
            "the crypto unit answered a batch with the wrong number of keys",
        ));
    }
    let now = now_ms();
    let mut records = Vec::with_capacity(ids.len());
    let mut answer = Vec::with_capacity(ids.len());
    for (((name, _), id), (blob, ciphertext)) in keys.into_iter().zip(ids).zip(generated.keys) {
        let key = KeyMeta {
            instance,
            id,
            name,
            description: String::new(),
            extractable: false,
            imported: false,
            state: KeyState::Active,
            key_ring: "default".to_owned(),
            aliases: Vec::new(),
            created: now,
            created_by: created_by.to_owned(),
            updated: now,
            last_rotated: None,
            deletion: None,
            deletion_authorization: None,
            policies: rotor_store::KeyPolicies {
                dual_auth_delete: dual_auth,
                ..rotor_store::KeyPolicies::default()
            },
            newest_version: 1,
            labels: Vec::new(),
        };
        let version = KeyVersion {
            version: 1,
            id: Uuid::new_v4(),
            blob,
            vp: generated.vp,
            created: now,
        };
        records.push((key, version));
        answer.push((id, ciphertext));
    }
    blocking(|| state.store.create_keys(&records))?;
    tracing::info!(%instance, count = answer.len(), "keys created in a batch");
    Ok(answer)
}

/// The most keys one batch creates.
pub const MAX_BATCH_CREATE: usize = 10_000;

/// Imports key material encrypted to the instance's import token, inside a unit.
async fn secure_import(
    state: &KpState,
    instance: Uuid,
    binding: Binding,
    resource: &Value,
    encrypted_material: Vec<u8>,
) -> KpResult<SealedKey> {
    let iv = decode_b64("iv", resource)?
        .ok_or_else(|| KpError::bad_request("a secure import needs 'iv'"))?;
    let encrypted_nonce = decode_b64("encryptedNonce", resource)?.unwrap_or_default();
    let algorithm = resource["encryptionAlgorithm"]
        .as_str()
        .unwrap_or("RSAES_OAEP_SHA_256")
        .to_owned();
    let token = blocking(|| state.store.update_import_token(instance, &mut |_| Ok(())))?
        .ok_or_else(no_import_token)?;
    let token: ImportToken =
        serde_json::from_value(token).map_err(|_| unreadable_import_token())?;
    if now_ms() >= token.expires {
        return Err(import_token_expired());
    }
    let request = SecureImportRequest {
        binding,
        token: token.id,
        sealed_private_key: B64.decode(&token.sealed_private_key).unwrap_or_default(),
        algorithm,
        encrypted_material,
        nonce: B64.decode(&token.nonce).unwrap_or_default(),
        encrypted_nonce,
        iv,
    };
    state.unit_call(instance, &request).await.map_err(|err| {
        if err.code == "UNPROCESSABLE_CIPHERTEXT_ERR" {
            KpError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "IMPORT_VERIFICATION_ERR",
                "the encrypted key material, nonce or IV do not verify against the import token",
            )
        } else {
            err
        }
    })
}

fn no_import_token() -> KpError {
    KpError::new(
        StatusCode::NOT_FOUND,
        "IMPORT_TOKEN_NOT_FOUND_ERR",
        "no import token: create one with POST /api/v2/import_token",
    )
}

fn unreadable_import_token() -> KpError {
    tracing::error!("the stored import token does not parse");
    KpError::new(
        StatusCode::INTERNAL_SERVER_ERROR,
        "INTERNAL_SERVER_ERR",
        "the stored import token is unreadable",
    )
}

fn import_token_expired() -> KpError {
    KpError::conflict(
        "IMPORT_TOKEN_EXPIRED_ERR",
        "the import token has expired; create a new one",
    )
}

/// An instance's import token as stored.
#[derive(serde::Serialize, Deserialize)]
struct ImportToken {
    id: Uuid,
    created: i64,
    expires: i64,
    max_retrievals: u32,
    remaining: u32,
    /// X.509 SubjectPublicKeyInfo DER, base64.
    public_key: String,
    /// The private key sealed under the master key (by a unit), base64.
    sealed_private_key: String,
    /// Random, base64.
    nonce: String,
}

fn import_token_json(token: &ImportToken) -> Value {
    json!({
        "creationDate": rfc3339(token.created),
        "expirationDate": rfc3339(token.expires),
        "maxAllowedRetrievals": token.max_retrievals,
        "remainingRetrievals": token.remaining,
    })
}

async fn create_import_token(
    State(state): State<KpState>,
    headers: HeaderMap,
    body: Bytes,
) -> KpResult<Response> {
    let caller = state.caller(&headers, Role::Manager)?;
    let value = if body.is_empty() {
        json!({})
    } else {
        parse_json(&body)?
    };
    let expiration = match &value["expiration"] {
        Value::Null => 600,
        other => other
            .as_u64()
            .filter(|s| (300..=86_400).contains(s))
            .ok_or_else(|| KpError::bad_request("'expiration' is 300 to 86400 seconds"))?,
    };
    let max_retrievals = match &value["maxAllowedRetrievals"] {
        Value::Null => 1,
        other => other
            .as_u64()
            .and_then(|n| u32::try_from(n).ok())
            .filter(|n| (1..=500).contains(n))
            .ok_or_else(|| KpError::bad_request("'maxAllowedRetrievals' is 1 to 500"))?,
    };
    let id = Uuid::new_v4();
    let request = ImportTokenRequest {
        instance: caller.instance,
        token: id,
    };
    let _gate = state.gate.read().await;
    let keys: ImportTokenKeys = state.unit_call(caller.instance, &request).await?;
    let mut nonce = [0u8; 12];
    rotor_crypto::fill_random(&mut nonce);
    let created = now_ms();
    let token = ImportToken {
        id,
        created,
        expires: created + i64::try_from(expiration).unwrap_or(600) * 1000,
        max_retrievals,
        remaining: max_retrievals,
        public_key: B64.encode(&keys.public_key),
        sealed_private_key: B64.encode(&keys.sealed_private_key),
        nonce: B64.encode(nonce),
    };
    let stored = serde_json::to_value(&token).map_err(|_| unreadable_import_token())?;
    blocking(|| {
        state
            .store
            .update_import_token(caller.instance, &mut |slot| {
                *slot = Some(stored.clone());
                Ok(())
            })
    })?;
    Ok((StatusCode::CREATED, axum::Json(import_token_json(&token))).into_response())
}

async fn get_import_token(State(state): State<KpState>, headers: HeaderMap) -> KpResult<Response> {
    let caller = state.caller(&headers, Role::Writer)?;
    let mut refusal = None;
    let stored = blocking(|| {
        state
            .store
            .update_import_token(caller.instance, &mut |slot| {
                let Some(value) = slot.as_mut() else {
                    return Ok(());
                };
                let expires = value["expires"].as_i64().unwrap_or(0);
                let remaining = value["remaining"].as_u64().unwrap_or(0);
                if now_ms() >= expires {
                    refusal = Some(import_token_expired());
                    return Err(StoreError::Refused(String::new()));
                }
                if remaining == 0 {
                    refusal = Some(KpError::conflict(
                        "IMPORT_TOKEN_EXHAUSTED_ERR",
                        "the import token was retrieved as often as allowed; create a new one",
                    ));
                    return Err(StoreError::Refused(String::new()));
                }
                value["remaining"] = json!(remaining - 1);
                Ok(())
            })
    });
    if let Some(refusal) = refusal {
        return Err(refusal);
    }
    let token: ImportToken = serde_json::from_value(stored?.ok_or_else(no_import_token)?)
        .map_err(|_| unreadable_import_token())?;
    let der = B64.decode(&token.public_key).unwrap_or_default();
    let mut pem = String::from("-----BEGIN PUBLIC KEY-----\n");
    for line in B64.encode(&der).as_bytes().chunks(64) {
        pem.push_str(&String::from_utf8_lossy(line));
        pem.push('\n');
    }
    pem.push_str("-----END PUBLIC KEY-----\n");
    let mut body = import_token_json(&token);
    body["payload"] = json!(B64.encode(pem.as_bytes()));
    body["nonce"] = json!(token.nonce);
    Ok(axum::Json(body).into_response())
}

#[derive(Deserialize)]
struct ListQuery {
    limit: Option<String>,
    offset: Option<String>,
    state: Option<String>,
    extractable: Option<String>,
    #[serde(rename = "totalCount")]
    total_count: Option<String>,
}

/// The filter a query asks for, or `None` when it asks only for states no key can be in.
fn list_filter(query: &ListQuery, headers: &HeaderMap) -> KpResult<Option<ListFilter>> {
    let number = |field: &str, value: &Option<String>, default: u32, max: u32| -> KpResult<u32> {
        match value {
            None => Ok(default),
            Some(text) => text
                .parse::<u32>()
                .ok()
                .filter(|n| *n <= max)
                .ok_or_else(|| {
                    KpError::bad_request(format!("'{field}' must be a number from 0 to {max}"))
                }),
        }
    };
    let mut states = Vec::new();
    let mut asked = false;
    for part in query.state.as_deref().unwrap_or_default().split(',') {
        let part = part.trim();
        if part.is_empty() {
            continue;
        }
        asked = true;
        match part.parse::<u8>() {
            // Pre-activation: rotor makes keys active at once, so no key is in it.
            Ok(0) => {}
            Ok(n) => states.push(
                KeyState::try_from(n)
                    .map_err(|_| KpError::bad_request("'state' is a list of 0, 1, 2, 3 and 5"))?,
            ),
            Err(_) => {
                return Err(KpError::bad_request(
                    "'state' is a list of 0, 1, 2, 3 and 5",
                ));
            }
        }
    }
    if asked && states.is_empty() {
        return Ok(None);
    }
    let extractable = match query.extractable.as_deref() {
        None => None,
        Some("true") => Some(true),
        Some("false") => Some(false),
        Some(_) => return Err(KpError::bad_request("'extractable' must be true or false")),
    };
    Ok(Some(ListFilter {
        limit: number("limit", &query.limit, 200, 5000)?,
        offset: number("offset", &query.offset, 0, u32::MAX)?,
        states,
        extractable,
        key_ring: headers
            .get("x-kms-key-ring")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned),
    }))
}

async fn list_keys(
    State(state): State<KpState>,
    headers: HeaderMap,
    Query(query): Query<ListQuery>,
) -> KpResult<Response> {
    let caller = state.caller(&headers, Role::Reader)?;
    let (keys, total) = match list_filter(&query, &headers)? {
        Some(filter) => blocking(|| state.store.list(caller.instance, &filter))?,
        None => (Vec::new(), 0),
    };
    let resources = keys
        .iter()
        .map(|key| key_json(key, None, None, state.purge_after_seconds))
        .collect();
    let mut body = collection(KEY_TYPE, resources);
    if query.total_count.as_deref() == Some("true") {
        body["metadata"]["totalCount"] = json!(total);
    }
    Ok(axum::Json(body).into_response())
}

async fn key_total(
    State(state): State<KpState>,
    headers: HeaderMap,
    Query(query): Query<ListQuery>,
) -> KpResult<Response> {
    let caller = state.caller(&headers, Role::Reader)?;
    let total = match list_filter(&query, &headers)? {
        Some(filter) => {
            let filter = ListFilter { limit: 0, ..filter };
            blocking(|| state.store.list(caller.instance, &filter))?.1
        }
        None => 0,
    };
    let mut response = StatusCode::OK.into_response();
    if let Ok(value) = HeaderValue::from_str(&total.to_string()) {
        response.headers_mut().insert("key-total", value);
    }
    Ok(response)
}

async fn get_key(
    State(state): State<KpState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> KpResult<Response> {
    let caller = state.caller(&headers, Role::Reader)?;
    let key = state.find_key(&caller, &id)?;
    if key.deletion.is_some() {
        return Err(KpError::new(
            StatusCode::GONE,
            "KEY_DELETED_ERR",
            format!("key {} is deleted", key.id),
        ));
    }
    let newest = state.key_version(&key, key.newest_version)?;
    let versions = blocking(|| {
        state
            .store
            .version(key.instance, key.id, key.newest_version)
    })?;
    // A standard key's material is for Writers and above, as Key Protect's Reader cannot read it.
    let may_read_material = caller.claims.role.permits(Role::Writer);
    let payload = if key.extractable && key.state == KeyState::Active && may_read_material {
        let exported: Plaintext = state
            .unit_call(caller.instance, &ExportRequest { key: newest })
            .await?;
        Some(exported.plaintext)
    } else {
        None
    };
    let body = collection(
        KEY_TYPE,
        vec![key_json(
            &key,
            versions.as_ref(),
            payload.as_deref(),
            state.purge_after_seconds,
        )],
    );
    Ok(axum::Json(body).into_response())
}

async fn get_metadata(
    State(state): State<KpState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> KpResult<Response> {
    let caller = state.caller(&headers, Role::Reader)?;
    let key = state.find_key(&caller, &id)?;
    let newest = blocking(|| {
        state
            .store
            .version(key.instance, key.id, key.newest_version)
    })?;
    let body = collection(
        KEY_TYPE,
        vec![key_json(
            &key,
            newest.as_ref(),
            None,
            state.purge_after_seconds,
        )],
    );
    Ok(axum::Json(body).into_response())
}

async fn get_versions(
    State(state): State<KpState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> KpResult<Response> {
    let caller = state.caller(&headers, Role::Reader)?;
    let key = state.find_key(&caller, &id)?;
    let versions = blocking(|| state.store.versions(key.instance, key.id))?;
    let resources = versions
        .iter()
        .rev()
        .map(|v| json!({"id": v.id, "creationDate": rfc3339(v.created)}))
        .collect();
    Ok(axum::Json(collection(
        "application/vnd.ibm.kms.key_version+json",
        resources,
    ))
    .into_response())
}

async fn patch_key(
    State(state): State<KpState>,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: Bytes,
) -> KpResult<Response> {
    let caller = state.caller(&headers, Role::Manager)?;
    let key = state.find_key(&caller, &id)?;
    let value = parse_json(&body)?;
    let ring = value["keyRingID"]
        .as_str()
        .ok_or_else(|| KpError::bad_request("'keyRingID' is required"))?
        .to_owned();
    let rings = blocking(|| state.store.key_rings(caller.instance))?;
    if !rings.iter().any(|r| r.id == ring) {
        return Err(KpError::not_found(format!(
            "key ring '{ring}' does not exist"
        )));
    }
    let updated = blocking(|| {
        state.store.update(key.instance, key.id, &mut |k| {
            k.key_ring.clone_from(&ring);
            Ok(())
        })
    })?;
    let body = collection(
        KEY_TYPE,
        vec![key_json(&updated, None, None, state.purge_after_seconds)],
    );
    Ok(axum::Json(body).into_response())
}

async fn key_action(
    State(state): State<KpState>,
    headers: HeaderMap,
    Path((id, action)): Path<(String, String)>,
    body: Bytes,
) -> KpResult<Response> {
    run_action(&state, &headers, &id, &action, &body).await
}

#[derive(Deserialize)]
struct ActionQuery {
    action: Option<String>,
}

/// The older form `POST /keys/{id}?action=wrap`.
async fn key_action_query(
    State(state): State<KpState>,
    headers: HeaderMap,
    Path(id): Path<String>,
    Query(query): Query<ActionQuery>,
    body: Bytes,
) -> KpResult<Response> {
    let action = query
        .action
        .ok_or_else(|| KpError::bad_request("the 'action' query parameter is missing"))?;
    run_action(&state, &headers, &id, &action, &body).await
}

async fn run_action(
    state: &KpState,
    headers: &HeaderMap,
    id: &str,
    action: &str,
    body: &[u8],
) -> KpResult<Response> {
    let needed = match action {
        "wrap" | "unwrap" | "rewrap" => Role::Reader,
        "rotate" | "enable" | "disable" | "sync" => Role::Writer,
        "setKeyForDeletion" | "unsetKeyForDeletion" => Role::Writer,
        other => return Err(KpError::bad_request(format!("unknown action '{other}'"))),
    };
    let caller = state.caller(headers, needed)?;
    let key = state.find_key(&caller, id)?;
    let value = if body.is_empty() {
        json!({})
    } else {
        parse_json(body)?
    };
    match action {
        "wrap" => wrap(state, &caller, &key, &value).await,
        "unwrap" => unwrap(state, &caller, &key, &value, false).await,
        "rewrap" => unwrap(state, &caller, &key, &value, true).await,
        "rotate" => rotate(state, &caller, &key, &value).await,
        "enable" | "disable" => {
            if key.deletion.is_some() {
                return Err(KpError::new(
                    StatusCode::GONE,
                    "KEY_DELETED_ERR",
                    "the key is deleted",
                ));
            }
            let (from, to) = if action == "enable" {
                (KeyState::Suspended, KeyState::Active)
            } else {
                (KeyState::Active, KeyState::Suspended)
            };
            blocking(|| {
                state.store.update(key.instance, key.id, &mut |k| {
                    if k.state != from && k.state != to {
                        return Err(StoreError::Refused(format!(
                            "key {} cannot be {action}d in its state",
                            k.id
                        )));
                    }
                    k.state = to;
                    Ok(())
                })
            })?;
            Ok(StatusCode::NO_CONTENT.into_response())
        }
        "setKeyForDeletion" | "unsetKeyForDeletion" => {
            if !dual_auth(&key) {
                return Err(KpError::conflict(
                    "NOT_DUAL_AUTH_ERR",
                    "this key does not need dual authorization to be deleted",
                ));
            }
            let sub = caller.claims.sub.as_str();
            let set = action == "setKeyForDeletion";
            blocking(|| {
                state.store.update(key.instance, key.id, &mut |k| {
                    k.deletion_authorization = set.then(|| DeletionAuthorization {
                        by: sub.to_owned(),
                        until: now_ms() + DELETION_AUTHORIZATION_MS,
                    });
                    Ok(())
                })
            })?;
            Ok(StatusCode::NO_CONTENT.into_response())
        }
        _ => Ok(StatusCode::NO_CONTENT.into_response()),
    }
}

async fn wrap(
    state: &KpState,
    caller: &Caller,
    key: &KeyMeta,
    value: &Value,
) -> KpResult<Response> {
    usable(key)?;
    if key.extractable {
        return Err(KpError::bad_request(
            "only root keys wrap data encryption keys",
        ));
    }
    let plaintext = decode_b64("plaintext", value)?;
    let aad = aad_of(value)?;
    let request = || {
        Ok(WrapRequest {
            key: state.key_version(key, key.newest_version)?,
            plaintext: plaintext.clone(),
            aad: aad.clone(),
        })
    };
    let version_id = blocking(|| {
        state
            .store
            .version(key.instance, key.id, key.newest_version)
    })?
    .map(|v| v.id);
    let wrapped: Wrapped = state.unit_call_fresh(caller.instance, request).await?;
    let mut body = json!({
        "ciphertext": B64.encode(&wrapped.ciphertext),
        "keyVersion": {"id": version_id},
    });
    if let Some(plaintext) = wrapped.plaintext {
        body["plaintext"] = json!(B64.encode(plaintext));
    }
    Ok(axum::Json(body).into_response())
}

async fn unwrap(
    state: &KpState,
    caller: &Caller,
    key: &KeyMeta,
    value: &Value,
    rewrap: bool,
) -> KpResult<Response> {
    usable(key)?;
    let ciphertext = decode_b64("ciphertext", value)?
        .ok_or_else(|| KpError::bad_request("'ciphertext' is required"))?;
    let aad = aad_of(value)?;
    let unprocessable = || {
        KpError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "UNPROCESSABLE_CIPHERTEXT_ERR",
            "the ciphertext is invalid, was made with another key, or the additional authenticated data differs",
        )
    };
    let version = ciphertext_version(&ciphertext)
        .filter(|v| *v >= 1 && *v <= key.newest_version)
        .ok_or_else(unprocessable)?;
    let from_id = blocking(|| state.store.version(key.instance, key.id, version))?.map(|v| v.id);
    let newest_id = blocking(|| {
        state
            .store
            .version(key.instance, key.id, key.newest_version)
    })?
    .map(|v| v.id);
    let rewrap_request = |reveal_plaintext| {
        Ok(RewrapRequest {
            from: state.key_version(key, version)?,
            to: state.key_version(key, key.newest_version)?,
            ciphertext: ciphertext.clone(),
            aad: aad.clone(),
            reveal_plaintext,
        })
    };
    if rewrap {
        let wrapped: Wrapped = state
            .unit_call_fresh(caller.instance, || rewrap_request(false))
            .await?;
        return Ok(axum::Json(json!({
            "ciphertext": B64.encode(&wrapped.ciphertext),
            "keyVersion": {"id": from_id},
            "rewrappedKeyVersion": {"id": newest_id},
        }))
        .into_response());
    }
    if version == key.newest_version {
        let request = || {
            Ok(UnwrapRequest {
                key: state.key_version(key, version)?,
                ciphertext: ciphertext.clone(),
                aad: aad.clone(),
            })
        };
        let plain: Plaintext = state.unit_call_fresh(caller.instance, request).await?;
        return Ok(axum::Json(json!({
            "plaintext": B64.encode(&plain.plaintext),
            "keyVersion": {"id": from_id},
        }))
        .into_response());
    }
    // An older version: as Key Protect does, hand back the DEK wrapped under the newest version
    // too, in one pass through the unit.
    let wrapped: Wrapped = state
        .unit_call_fresh(caller.instance, || rewrap_request(true))
        .await?;
    Ok(axum::Json(json!({
        "plaintext": B64.encode(wrapped.plaintext.unwrap_or_default()),
        "ciphertext": B64.encode(&wrapped.ciphertext),
        "keyVersion": {"id": from_id},
        "rewrappedKeyVersion": {"id": newest_id},
    }))
    .into_response())
}

async fn rotate(
    state: &KpState,
    caller: &Caller,
    key: &KeyMeta,
    value: &Value,
) -> KpResult<Response> {
    usable(key)?;
    if key.extractable {
        return Err(KpError::bad_request(
            "standard keys cannot be rotated; only root keys",
        ));
    }
    let payload = decode_b64("payload", value)?;
    if key.imported && payload.is_none() {
        return Err(KpError::bad_request(
            "an imported root key is rotated with new key material in 'payload'",
        ));
    }
    if !key.imported && payload.is_some() {
        return Err(KpError::bad_request(
            "a generated root key is rotated without a payload",
        ));
    }
    let version = key.newest_version + 1;
    let binding = Binding {
        instance: key.instance,
        key: key.id,
        version,
        extractable: false,
    };
    add_version(state, caller.instance, key, binding, payload).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// How often the rotation policy is checked.
const POLICY_CHECK: std::time::Duration = std::time::Duration::from_secs(60);
/// A policy month, as Key Protect counts it.
const MONTH_MS: i64 = 30 * 24 * 3600 * 1000;

/// Rotates every generated root key whose rotation policy is due, forever. Imported keys are
/// skipped: their new material must come from their owner.
pub async fn rotate_by_policy(state: KpState) {
    loop {
        tokio::time::sleep(POLICY_CHECK).await;
        for instance in state.units.instances() {
            if let Err(err) = rotate_due(&state, instance).await {
                tracing::warn!(instance = %instance, error = ?err, "rotation by policy failed; retrying later");
            }
        }
    }
}

/// Rotates the keys of `instance` whose rotation policy is due; returns how many.
pub async fn rotate_due(state: &KpState, instance: Uuid) -> KpResult<usize> {
    let filter = ListFilter {
        limit: u32::MAX,
        states: vec![KeyState::Active],
        extractable: Some(false),
        ..ListFilter::default()
    };
    let (keys, _) = blocking(|| state.store.list(instance, &filter))?;
    let mut rotated = 0;
    for key in keys {
        let (Some(months), Some(true)) = (
            key.policies.rotation_interval_month,
            key.policies.rotation_enabled,
        ) else {
            continue;
        };
        let last = key.last_rotated.unwrap_or(key.created);
        if key.imported || key.deletion.is_some() || now_ms() < last + i64::from(months) * MONTH_MS
        {
            continue;
        }
        let binding = Binding {
            instance,
            key: key.id,
            version: key.newest_version + 1,
            extractable: false,
        };
        add_version(state, instance, &key, binding, None).await?;
        rotated += 1;
    }
    Ok(rotated)
}

/// Makes (or imports) the next version of a root key inside a unit and stores it.
async fn add_version(
    state: &KpState,
    instance: Uuid,
    key: &KeyMeta,
    binding: Binding,
    payload: Option<Vec<u8>>,
) -> KpResult<()> {
    let version = binding.version;
    let _gate = state.gate.read().await;
    let sealed: SealedKey = match payload {
        Some(material) => {
            state
                .unit_call(instance, &ImportRequest { binding, material })
                .await?
        }
        None => {
            state
                .unit_call(
                    instance,
                    &GenerateRequest {
                        binding,
                        length: 32,
                    },
                )
                .await?
        }
    };
    let now = now_ms();
    let mut updated = key.clone();
    updated.newest_version = version;
    updated.last_rotated = Some(now);
    updated.updated = now;
    let record = KeyVersion {
        version,
        id: Uuid::new_v4(),
        blob: sealed.blob,
        vp: sealed.vp,
        created: now,
    };
    blocking(|| {
        state
            .store
            .add_version(&updated, key.newest_version, &record)
    })?;
    tracing::info!(key = %key.id, version, "key rotated");
    Ok(())
}

async fn delete_key(
    State(state): State<KpState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> KpResult<Response> {
    let caller = state.caller(&headers, Role::Manager)?;
    let key = state.find_key(&caller, &id)?;
    if key.deletion.is_some() {
        return Err(KpError::new(
            StatusCode::GONE,
            "KEY_DELETED_ERR",
            format!("key {} is already deleted", key.id),
        ));
    }
    let needs_second = dual_auth(&key);
    let sub = caller.claims.sub.as_str();
    let deleted = blocking(|| {
        state.store.update(key.instance, key.id, &mut |k| {
            if needs_second {
                match &k.deletion_authorization {
                    Some(pending) if pending.until > now_ms() && pending.by != sub => {}
                    Some(pending) if pending.by == sub => {
                        return Err(StoreError::Refused(
                            "dual authorization: the key was set for deletion by you; another identity must delete it".to_owned(),
                        ));
                    }
                    _ => {
                        return Err(StoreError::Refused(
                            "dual authorization: set the key for deletion first, then another identity deletes it".to_owned(),
                        ));
                    }
                }
            }
            k.state = KeyState::Destroyed;
            k.deletion = Some(Deletion {
                at: now_ms(),
                by: sub.to_owned(),
            });
            k.deletion_authorization = None;
            Ok(())
        })
    })?;
    tracing::info!(key = %key.id, "key deleted");
    let body = collection(
        KEY_TYPE,
        vec![key_json(&deleted, None, None, state.purge_after_seconds)],
    );
    Ok(axum::Json(body).into_response())
}

async fn restore_key(
    State(state): State<KpState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> KpResult<Response> {
    let caller = state.caller(&headers, Role::Manager)?;
    let key = state.find_key(&caller, &id)?;
    let restored = blocking(|| {
        state.store.update(key.instance, key.id, &mut |k| {
            match &k.deletion {
                None => return Err(StoreError::Refused(format!("key {} is not deleted", k.id))),
                Some(deletion) if now_ms() > deletion.at + RESTORE_WINDOW_MS => {
                    return Err(StoreError::Refused(
                        "a key can be restored only within 30 days of its deletion".to_owned(),
                    ));
                }
                Some(_) => {}
            }
            k.deletion = None;
            k.state = KeyState::Active;
            Ok(())
        })
    })?;
    let body = collection(
        KEY_TYPE,
        vec![key_json(&restored, None, None, state.purge_after_seconds)],
    );
    Ok((StatusCode::CREATED, axum::Json(body)).into_response())
}

async fn purge_key(
    State(state): State<KpState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> KpResult<Response> {
    let caller = state.caller(&headers, Role::Manager)?;
    let key = state.find_key(&caller, &id)?;
    let Some(deletion) = &key.deletion else {
        return Err(KpError::conflict(
            "KEY_ACTION_INVALID_STATE_ERR",
            "only a deleted key can be purged; delete it first",
        ));
    };
    let allowed_from = deletion.at + i64::try_from(state.purge_after_seconds).unwrap_or(0) * 1000;
    if now_ms() < allowed_from {
        return Err(KpError::conflict(
            "PURGE_NOT_ALLOWED_ERR",
            format!("the key can be purged from {}", rfc3339(allowed_from)),
        ));
    }
    blocking(|| state.store.purge(key.instance, key.id))?;
    tracing::info!(key = %key.id, "key purged");
    let body = collection(
        KEY_TYPE,
        vec![key_json(&key, None, None, state.purge_after_seconds)],
    );
    Ok(axum::Json(body).into_response())
}

async fn create_alias(
    State(state): State<KpState>,
    headers: HeaderMap,
    Path((id, alias)): Path<(String, String)>,
) -> KpResult<Response> {
    let caller = state.caller(&headers, Role::Writer)?;
    check_alias(&alias)?;
    let key = state.find_key(&caller, &id)?;
    if key.aliases.len() >= 5 {
        return Err(KpError::bad_request("a key has at most 5 aliases"));
    }
    blocking(|| state.store.add_alias(key.instance, key.id, &alias))?;
    let resource = json!({
        "keyId": key.id,
        "alias": alias,
        "creationDate": rfc3339(now_ms()),
        "createdBy": caller.claims.sub,
    });
    Ok((
        StatusCode::CREATED,
        axum::Json(collection(
            "application/vnd.ibm.kms.alias+json",
            vec![resource],
        )),
    )
        .into_response())
}

async fn delete_alias(
    State(state): State<KpState>,
    headers: HeaderMap,
    Path((id, alias)): Path<(String, String)>,
) -> KpResult<Response> {
    let caller = state.caller(&headers, Role::Writer)?;
    let key = state.find_key(&caller, &id)?;
    blocking(|| state.store.remove_alias(key.instance, key.id, &alias))?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

fn ring_json(ring: &KeyRing) -> Value {
    json!({"id": ring.id, "creationDate": rfc3339(ring.created), "createdBy": ring.created_by})
}

async fn list_key_rings(State(state): State<KpState>, headers: HeaderMap) -> KpResult<Response> {
    let caller = state.caller(&headers, Role::Reader)?;
    let rings = blocking(|| state.store.key_rings(caller.instance))?;
    let resources = rings.iter().map(ring_json).collect();
    Ok(axum::Json(collection(
        "application/vnd.ibm.kms.key_ring+json",
        resources,
    ))
    .into_response())
}

async fn create_key_ring(
    State(state): State<KpState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> KpResult<Response> {
    let caller = state.caller(&headers, Role::Manager)?;
    let valid =
        (2..=100).contains(&id.len()) && id.chars().all(|c| c.is_ascii_alphanumeric() || c == '-');
    if !valid {
        return Err(KpError::bad_request(
            "a key ring id has 2 to 100 letters, digits and '-'",
        ));
    }
    let ring = KeyRing {
        id,
        created: now_ms(),
        created_by: caller.claims.sub.clone(),
    };
    blocking(|| state.store.create_key_ring(caller.instance, &ring))?;
    Ok((
        StatusCode::CREATED,
        axum::Json(collection(
            "application/vnd.ibm.kms.key_ring+json",
            vec![ring_json(&ring)],
        )),
    )
        .into_response())
}

async fn delete_key_ring(
    State(state): State<KpState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> KpResult<Response> {
    let caller = state.caller(&headers, Role::Manager)?;
    blocking(|| state.store.delete_key_ring(caller.instance, &id))?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

fn key_policies_json(key: &KeyMeta) -> Vec<Value> {
    let base = |body: Value| {
        let mut policy = json!({
            "type": "application/vnd.ibm.kms.policy+json",
            "crn": crn(key.instance, "key", &key.id.to_string()),
            "createdBy": key.created_by,
            "creationDate": rfc3339(key.created),
            "lastUpdateDate": rfc3339(key.policies.updated.as_ref().map_or(key.created, |u| u.at)),
            "updatedBy": key.policies.updated.as_ref().map_or(key.created_by.clone(), |u| u.by.clone()),
        });
        if let (Some(target), Some(fields)) = (policy.as_object_mut(), body.as_object()) {
            target.extend(fields.clone());
        }
        policy
    };
    let mut out = Vec::new();
    if let Some(months) = key.policies.rotation_interval_month {
        out.push(base(json!({"rotation": {"interval_month": months, "enabled": key.policies.rotation_enabled.unwrap_or(true)}})));
    }
    if let Some(enabled) = key.policies.dual_auth_delete {
        out.push(base(json!({"dualAuthDelete": {"enabled": enabled}})));
    }
    out
}

async fn get_key_policies(
    State(state): State<KpState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> KpResult<Response> {
    let caller = state.caller(&headers, Role::Reader)?;
    let key = state.find_key(&caller, &id)?;
    Ok(axum::Json(collection(
        "application/vnd.ibm.kms.policy+json",
        key_policies_json(&key),
    ))
    .into_response())
}

async fn put_key_policies(
    State(state): State<KpState>,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: Bytes,
) -> KpResult<Response> {
    let caller = state.caller(&headers, Role::Manager)?;
    let key = state.find_key(&caller, &id)?;
    let value = parse_json(&body)?;
    let resources = value["resources"]
        .as_array()
        .filter(|r| !r.is_empty())
        .ok_or_else(|| KpError::bad_request("'resources' must list the policies to set"))?
        .clone();
    let mut rotation = None;
    let mut dual = None;
    for resource in &resources {
        if let Some(policy) = resource.get("rotation") {
            let months = policy["interval_month"]
                .as_u64()
                .and_then(|m| u8::try_from(m).ok())
                .filter(|m| (1..=12).contains(m))
                .ok_or_else(|| KpError::bad_request("'rotation.interval_month' must be 1 to 12"))?;
            rotation = Some((months, policy["enabled"].as_bool().unwrap_or(true)));
        } else if let Some(policy) = resource.get("dualAuthDelete") {
            dual = Some(policy["enabled"].as_bool().ok_or_else(|| {
                KpError::bad_request("'dualAuthDelete.enabled' must be true or false")
            })?);
        } else {
            return Err(KpError::bad_request(
                "a key policy is 'rotation' or 'dualAuthDelete'",
            ));
        }
    }
    let sub = caller.claims.sub.as_str();
    let updated = blocking(|| {
        state.store.update(key.instance, key.id, &mut |k| {
            if let Some((months, enabled)) = rotation {
                k.policies.rotation_interval_month = Some(months);
                k.policies.rotation_enabled = Some(enabled);
            }
            if let Some(enabled) = dual {
                if !enabled && k.policies.dual_auth_delete == Some(true) {
                    return Err(StoreError::Refused(
                        "dual authorization for deletion cannot be turned off for a key once it is on".to_owned(),
                    ));
                }
                k.policies.dual_auth_delete = Some(enabled);
            }
            k.policies.updated = Some(Deletion {
                at: now_ms(),
                by: sub.to_owned(),
            });
            Ok(())
        })
    })?;
    Ok(axum::Json(collection(
        "application/vnd.ibm.kms.policy+json",
        key_policies_json(&updated),
    ))
    .into_response())
}

/// Instance policy types that rotor enforces.
const INSTANCE_POLICY_TYPES: &[&str] = &["dualAuthDelete"];

async fn get_instance_policies(
    State(state): State<KpState>,
    headers: HeaderMap,
) -> KpResult<Response> {
    let caller = state.caller(&headers, Role::Manager)?;
    let policies = blocking(|| state.store.instance_policies(caller.instance))?;
    let resources = policies
        .as_object()
        .map(|map| {
            map.iter()
                .map(|(kind, data)| json!({"policy_type": kind, "policy_data": data}))
                .collect()
        })
        .unwrap_or_default();
    Ok(axum::Json(collection("application/vnd.ibm.kms.policy+json", resources)).into_response())
}

async fn put_instance_policies(
    State(state): State<KpState>,
    headers: HeaderMap,
    body: Bytes,
) -> KpResult<Response> {
    let caller = state.caller(&headers, Role::Manager)?;
    let value = parse_json(&body)?;
    let resources = value["resources"]
        .as_array()
        .filter(|r| !r.is_empty())
        .ok_or_else(|| KpError::bad_request("'resources' must list the policies to set"))?;
    let mut policies = blocking(|| state.store.instance_policies(caller.instance))?;
    for resource in resources {
        let kind = resource["policy_type"]
            .as_str()
            .ok_or_else(|| KpError::bad_request("each policy needs a 'policy_type'"))?;
        if !INSTANCE_POLICY_TYPES.contains(&kind) {
            return Err(KpError::bad_request(format!(
                "instance policy '{kind}' is not supported; supported: {}",
                INSTANCE_POLICY_TYPES.join(", ")
            )));
        }
        let enabled = resource["policy_data"]["enabled"]
            .as_bool()
            .ok_or_else(|| KpError::bad_request("'policy_data.enabled' must be true or false"))?;
        policies[kind] = json!({"enabled": enabled});
    }
    blocking(|| {
        state
            .store
            .set_instance_policies(caller.instance, &policies)
    })?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

async fn registrations(State(state): State<KpState>, headers: HeaderMap) -> KpResult<Response> {
    state.caller(&headers, Role::Reader)?;
    Ok(axum::Json(collection(
        "application/vnd.ibm.kms.registration+json",
        Vec::new(),
    ))
    .into_response())
}

async fn key_registrations(
    State(state): State<KpState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> KpResult<Response> {
    let caller = state.caller(&headers, Role::Reader)?;
    state.find_key(&caller, &id)?;
    Ok(axum::Json(collection(
        "application/vnd.ibm.kms.registration+json",
        Vec::new(),
    ))
    .into_response())
}

/// All Key Protect routes.
pub fn router(state: KpState) -> Router {
    Router::new()
        .route(
            "/api/v2/keys",
            post(create_key).get(list_keys).head(key_total),
        )
        .route(
            "/api/v2/keys_with_policy_overrides",
            post(create_key_with_overrides),
        )
        .route("/api/v2/keys/registrations", get(registrations))
        .route(
            "/api/v2/keys/{id}",
            get(get_key)
                .post(key_action_query)
                .patch(patch_key)
                .delete(delete_key),
        )
        .route("/api/v2/keys/{id}/metadata", get(get_metadata))
        .route("/api/v2/keys/{id}/versions", get(get_versions))
        .route("/api/v2/keys/{id}/purge", axum::routing::delete(purge_key))
        .route("/api/v2/keys/{id}/restore", post(restore_key))
        .route("/api/v2/keys/{id}/registrations", get(key_registrations))
        .route("/api/v2/keys/{id}/actions/{action}", post(key_action))
        .route("/v1/blobs/{op}", post(crate::blobs::blob_operation))
        .route(
            "/api/v2/keys/{id}/policies",
            get(get_key_policies).put(put_key_policies),
        )
        .route(
            "/api/v2/keys/{id}/aliases/{alias}",
            post(create_alias).delete(delete_alias),
        )
        .route("/api/v2/key_rings", get(list_key_rings))
        .route(
            "/api/v2/key_rings/{id}",
            post(create_key_ring).delete(delete_key_ring),
        )
        .route(
            "/api/v2/instance/policies",
            get(get_instance_policies).put(put_instance_policies),
        )
        .route(
            "/api/v2/import_token",
            post(create_import_token).get(get_import_token),
        )
        .with_state(state)
        .layer(axum::middleware::map_response(json_rejections))
}

/// Rejections made by the HTTP layer before a handler runs (an oversized body, a malformed
/// query) come as plain text; Key Protect clients expect its JSON error shape.
async fn json_rejections(response: Response) -> Response {
    let status = response.status();
    let is_json = response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("json"));
    if !status.is_client_error() || is_json {
        return response;
    }
    let text = axum::body::to_bytes(response.into_body(), 4096)
        .await
        .map(|bytes| String::from_utf8_lossy(&bytes).trim().to_owned())
        .ok()
        .filter(|text| !text.is_empty())
        .unwrap_or_else(|| {
            status
                .canonical_reason()
                .unwrap_or("Bad Request")
                .to_owned()
        });
    let code = if status == StatusCode::PAYLOAD_TOO_LARGE {
        "BODY_TOO_LARGE_ERR"
    } else {
        "BAD_REQUEST_ERR"
    };
    KpError::new(status, code, text).into_response()
}

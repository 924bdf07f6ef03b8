//! The unit's key operations for the service: generate, import, export (standard keys only),
//! wrap, unwrap and rewrap. They need no admin signatures, but only the service may call them:
//! every request carries the service token the unit was started with.
//!
//! Root key material and DEKs are unwrapped only here. Unwrapped root keys are cached in memory
//! (keyed by blob and binding) so that hot keys cost one AES-GCM operation per request.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use axum::Json;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use rotor_crypto::{Vp, constant_time_eq, fill_random, sha256};
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use crate::keys::{
    Binding, BlobBinding, KeyError, Masters, open_key, seal_key, unwrap_dek, wrap_dek,
};

/// Base64 (RFC 4648 §4) for byte fields, as the Key Protect API uses.
pub mod b64 {
    use base64::Engine as _;
    use base64::engine::general_purpose::STANDARD;
    use serde::{Deserialize, Deserializer, Serializer};

    /// Serializes bytes as base64.
    pub fn serialize<S: Serializer>(bytes: &[u8], serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&STANDARD.encode(bytes))
    }

    /// Deserializes base64 into bytes.
    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Vec<u8>, D::Error> {
        let text = String::deserialize(deserializer)?;
        STANDARD.decode(text).map_err(serde::de::Error::custom)
    }
}

/// A stored root key version: its binding and blob.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyRef {
    /// What the blob is bound to.
    pub binding: Binding,
    /// The wrapped material.
    #[serde(with = "b64")]
    pub blob: Vec<u8>,
}

/// `POST /v1/keys/generate`
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GenerateRequest {
    /// The new key version's binding.
    pub binding: Binding,
    /// Material length in bytes (16, 24 or 32).
    pub length: usize,
}

/// `POST /v1/keys/import`
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ImportRequest {
    /// The new key version's binding.
    pub binding: Binding,
    /// The material.
    #[serde(with = "b64")]
    pub material: Vec<u8>,
}

/// A new blob, and the material only when the key is extractable.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct SealedKey {
    /// The blob to store.
    #[serde(with = "b64")]
    pub blob: Vec<u8>,
    /// The master key it is wrapped under.
    pub vp: Vp,
    /// The generated material, for a standard (extractable) key only.
    #[serde(default, with = "option_b64", skip_serializing_if = "Option::is_none")]
    pub material: Option<Vec<u8>>,
}

/// `POST /v1/keys/export`: the material of a standard key.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExportRequest {
    /// The key version.
    pub key: KeyRef,
}

/// Key material or a DEK, in the clear, for the one caller that asked.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Plaintext {
    /// The bytes.
    #[serde(with = "b64")]
    pub plaintext: Vec<u8>,
}

/// `POST /v1/keys/wrap`
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WrapRequest {
    /// The newest root key version.
    pub key: KeyRef,
    /// The DEK; a fresh 32-byte one is generated when absent.
    #[serde(default, with = "option_b64", skip_serializing_if = "Option::is_none")]
    pub plaintext: Option<Vec<u8>>,
    /// Additional authenticated data.
    #[serde(default)]
    pub aad: Vec<String>,
}

/// The result of a wrap.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Wrapped {
    /// The DEK ciphertext.
    #[serde(with = "b64")]
    pub ciphertext: Vec<u8>,
    /// The generated DEK, when the request brought none.
    #[serde(default, with = "option_b64", skip_serializing_if = "Option::is_none")]
    pub plaintext: Option<Vec<u8>>,
}

/// `POST /v1/keys/unwrap`
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UnwrapRequest {
    /// The root key version the ciphertext names.
    pub key: KeyRef,
    /// The DEK ciphertext.
    #[serde(with = "b64")]
    pub ciphertext: Vec<u8>,
    /// Additional authenticated data given at wrap time.
    #[serde(default)]
    pub aad: Vec<String>,
}

/// `POST /v1/keys/rewrap`: unwrap with one version, wrap with another, inside the unit.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RewrapRequest {
    /// The version the ciphertext names.
    pub from: KeyRef,
    /// The newest version.
    pub to: KeyRef,
    /// The DEK ciphertext.
    #[serde(with = "b64")]
    pub ciphertext: Vec<u8>,
    /// Additional authenticated data.
    #[serde(default)]
    pub aad: Vec<String>,
    /// Also return the DEK (an unwrap of an older version, answered with the DEK and its
    /// ciphertext under the newest version in one pass).
    #[serde(default)]
    pub reveal_plaintext: bool,
}

/// `POST /v1/keys/import-token`: a fresh RSA key pair for secure import.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ImportTokenRequest {
    /// The instance.
    pub instance: uuid::Uuid,
    /// The token's id.
    pub token: uuid::Uuid,
}

/// The public key to hand out and the private key, sealed under the master key.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ImportTokenKeys {
    /// X.509 `SubjectPublicKeyInfo` DER.
    #[serde(with = "b64")]
    pub public_key: Vec<u8>,
    /// The PKCS#8 private key wrapped under the master key.
    #[serde(with = "b64")]
    pub sealed_private_key: Vec<u8>,
}

/// `POST /v1/keys/secure-import`: key material encrypted to an import token.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SecureImportRequest {
    /// The new key version's binding.
    pub binding: Binding,
    /// The import token's id.
    pub token: uuid::Uuid,
    /// Its sealed private key.
    #[serde(with = "b64")]
    pub sealed_private_key: Vec<u8>,
    /// `RSAES_OAEP_SHA_256` or `RSAES_OAEP_SHA_1`.
    pub algorithm: String,
    /// The key material, RSA-OAEP encrypted to the token's public key.
    #[serde(with = "b64")]
    pub encrypted_material: Vec<u8>,
    /// The token's nonce.
    #[serde(with = "b64")]
    pub nonce: Vec<u8>,
    /// The nonce, AES-GCM encrypted under the key material: proof the importer holds it.
    #[serde(with = "b64")]
    pub encrypted_nonce: Vec<u8>,
    /// The AES-GCM IV of `encrypted_nonce`.
    #[serde(with = "b64")]
    pub iv: Vec<u8>,
}

/// `POST /v1/keys/rewrap-batch` (postcard body): stored blobs to rewrap to `to`, the master key
/// the unit wraps new blobs under. One round trip carries thousands of blobs.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct RewrapBatch {
    /// The target master key.
    pub to: Vp,
    /// The blobs.
    pub items: Vec<BatchItem>,
}

/// One blob of a [`RewrapBatch`].
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct BatchItem {
    /// What it is bound to.
    pub binding: BlobBinding,
    /// The blob.
    pub blob: Vec<u8>,
}

/// The answer to a [`RewrapBatch`]: per item, the rewrapped blob, or `None` if the blob does
/// not authenticate (the service reports it; nothing else can be done with it).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct RewrapBatchResult {
    /// In request order.
    pub blobs: Vec<Option<Vec<u8>>>,
}

/// `POST /v1/keys/generate-batch` (postcard body): new 256-bit root keys (version 1), each
/// wrapping one DEK, for bulk creation.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct GenerateBatch {
    /// The keys to make.
    pub items: Vec<GenerateItem>,
}

/// One key of a [`GenerateBatch`].
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct GenerateItem {
    /// The new key's binding.
    pub binding: Binding,
    /// The DEK to wrap under it (no AAD).
    pub dek: Zeroizing<Vec<u8>>,
}

/// The answer to a [`GenerateBatch`], in request order.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct GeneratedBatch {
    /// Master key the blobs are wrapped under.
    pub vp: Vp,
    /// Per key: the blob and the DEK ciphertext.
    pub keys: Vec<(Vec<u8>, Vec<u8>)>,
}

/// `POST /v1/keys/finish-reencryption`: no blob is left under the master key the instance
/// rotates away from; `to` is the one they are all under now.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FinishReencryption {
    /// The master key all key storage is wrapped under.
    pub to: Vp,
}

/// The most blobs or keys in one batch request (10,000 rewrap items take about 1.3 MB).
pub const MAX_BATCH: usize = 10_000;

/// Content type of batch bodies (postcard).
pub const BATCH_CONTENT_TYPE: &str = "application/x-postcard";

/// The error body of a key operation.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct KeyErrorBody {
    /// Stable code.
    pub code: String,
    /// What is wrong.
    pub message: String,
}

mod option_b64 {
    use base64::Engine as _;
    use base64::engine::general_purpose::STANDARD;
    use serde::{Deserialize, Deserializer, Serializer};

    pub(crate) fn serialize<S: Serializer>(
        bytes: &Option<Vec<u8>>,
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        match bytes {
            Some(bytes) => serializer.serialize_str(&STANDARD.encode(bytes)),
            None => serializer.serialize_none(),
        }
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<Option<Vec<u8>>, D::Error> {
        Option::<String>::deserialize(deserializer)?
            .map(|text| STANDARD.decode(text).map_err(serde::de::Error::custom))
            .transpose()
    }
}

/// Unwrapped key material, shared between the cache and requests using it.
type Material = Arc<Zeroizing<Vec<u8>>>;

/// Largest number of unwrapped root keys kept in memory.
const CACHE_LIMIT: usize = 100_000;

/// Unwrapped root keys, keyed by SHA-256 of binding and blob. The blob names its master key's
/// VP, which every lookup checks against the current register first, so clearing or replacing
/// the register makes cached keys unreachable.
#[derive(Default)]
pub struct RootKeyCache {
    keys: Mutex<HashMap<[u8; 32], Material>>,
}

impl RootKeyCache {
    fn cache_key(key: &KeyRef) -> [u8; 32] {
        let mut input = serde_json::to_vec(&key.binding).unwrap_or_default();
        input.extend_from_slice(&key.blob);
        sha256(&input)
    }

    /// The material of `key`, unwrapped under `master` or taken from the cache.
    pub fn open(&self, masters: &Masters, key: &KeyRef) -> Result<Material, KeyError> {
        let master = masters.for_blob(&key.blob)?;
        let id = Self::cache_key(key);
        if let Some(found) = self
            .keys
            .lock()
            .ok()
            .and_then(|keys| keys.get(&id).cloned())
        {
            return Ok(found);
        }
        let material = Arc::new(open_key(master, &key.binding, &key.blob)?);
        if let Ok(mut keys) = self.keys.lock() {
            if keys.len() >= CACHE_LIMIT {
                keys.clear();
            }
            keys.insert(id, Arc::clone(&material));
        }
        Ok(material)
    }
}

/// An error answer of a key operation.
pub(crate) struct ErrorReply {
    status: StatusCode,
    body: KeyErrorBody,
}

impl IntoResponse for ErrorReply {
    fn into_response(self) -> Response {
        (self.status, Json(self.body)).into_response()
    }
}

/// Errors of key operations, as HTTP.
pub(crate) fn key_error(err: &KeyError) -> ErrorReply {
    let (status, code) = match err {
        KeyError::NoMasterKey => (StatusCode::CONFLICT, "no_master_key"),
        KeyError::OtherMasterKey { .. } => (StatusCode::CONFLICT, "other_master_key"),
        KeyError::Invalid => (StatusCode::BAD_REQUEST, "invalid_ciphertext"),
        KeyError::Size(_) => (StatusCode::BAD_REQUEST, "bad_size"),
        KeyError::NotExtractable => (StatusCode::FORBIDDEN, "not_extractable"),
        KeyError::WrongTarget { .. } => (StatusCode::CONFLICT, "wrong_target"),
        KeyError::NoNewMasterKey => (StatusCode::CONFLICT, "no_new_master_key"),
    };
    error_response(status, code, err.to_string())
}

pub(crate) fn error_response(status: StatusCode, code: &str, message: String) -> ErrorReply {
    ErrorReply {
        status,
        body: KeyErrorBody {
            code: code.to_owned(),
            message,
        },
    }
}

/// Checks the `Authorization: Bearer` header against the service token.
pub(crate) fn authorized(headers: &HeaderMap, token: Option<&[u8]>) -> Result<(), ErrorReply> {
    let Some(token) = token else {
        return Err(error_response(
            StatusCode::FORBIDDEN,
            "key_operations_disabled",
            "key operations are disabled on this unit: start it with --service-token-file"
                .to_owned(),
        ));
    };
    let presented = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or_default();
    if constant_time_eq(&sha256(presented.as_bytes()), &sha256(token)) {
        Ok(())
    } else {
        Err(error_response(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "key operations need the service token".to_owned(),
        ))
    }
}

/// The operations, given the current master key.
pub(crate) fn generate(
    masters: &Masters,
    request: &GenerateRequest,
) -> Result<SealedKey, KeyError> {
    let master = masters.wrapping();
    if ![16, 24, 32].contains(&request.length) {
        return Err(KeyError::Size(
            "generated keys are 16, 24 or 32 bytes".to_owned(),
        ));
    }
    let mut material = Zeroizing::new(vec![0u8; request.length]);
    fill_random(&mut material);
    let blob = seal_key(master, &request.binding, &material)?;
    Ok(SealedKey {
        blob,
        vp: master.vp(),
        material: request.binding.extractable.then(|| material.to_vec()),
    })
}

pub(crate) fn import(masters: &Masters, request: &ImportRequest) -> Result<SealedKey, KeyError> {
    let master = masters.wrapping();
    if !request.binding.extractable && ![16, 24, 32].contains(&request.material.len()) {
        return Err(KeyError::Size(
            "root key material must be 16, 24 or 32 bytes".to_owned(),
        ));
    }
    let blob = seal_key(master, &request.binding, &request.material)?;
    Ok(SealedKey {
        blob,
        vp: master.vp(),
        material: None,
    })
}

pub(crate) fn import_token(
    masters: &Masters,
    request: &ImportTokenRequest,
) -> Result<ImportTokenKeys, KeyError> {
    let master = masters.wrapping();
    let (public_key, private) = rotor_crypto::rsa_oaep_generate().map_err(|_| KeyError::Invalid)?;
    Ok(ImportTokenKeys {
        public_key,
        sealed_private_key: crate::keys::seal_import_key(
            master,
            request.instance,
            request.token,
            &private,
        ),
    })
}

pub(crate) fn secure_import(
    masters: &Masters,
    request: &SecureImportRequest,
) -> Result<SealedKey, KeyError> {
    let hash = match request.algorithm.as_str() {
        "RSAES_OAEP_SHA_256" => rotor_crypto::OaepHash::Sha256,
        "RSAES_OAEP_SHA_1" => rotor_crypto::OaepHash::Sha1,
        other => {
            return Err(KeyError::Size(format!(
                "encryption algorithm '{other}' is not RSAES_OAEP_SHA_256 or RSAES_OAEP_SHA_1"
            )));
        }
    };
    let private = crate::keys::open_import_key(
        masters.for_blob(&request.sealed_private_key)?,
        request.binding.instance,
        request.token,
        &request.sealed_private_key,
    )?;
    let material = rotor_crypto::rsa_oaep_decrypt(&private, hash, &request.encrypted_material)
        .map_err(|_| KeyError::Invalid)?;
    let nonce =
        rotor_crypto::open_aes_gcm_with_key(&material, &request.iv, &request.encrypted_nonce)
            .map_err(|_| KeyError::Invalid)?;
    if !constant_time_eq(&nonce, &request.nonce) {
        return Err(KeyError::Invalid);
    }
    import(
        masters,
        &ImportRequest {
            binding: request.binding.clone(),
            material: material.to_vec(),
        },
    )
}

pub(crate) fn export(
    masters: &Masters,
    cache: &RootKeyCache,
    request: &ExportRequest,
) -> Result<Plaintext, KeyError> {
    if !request.key.binding.extractable {
        return Err(KeyError::NotExtractable);
    }
    let material = cache.open(masters, &request.key)?;
    Ok(Plaintext {
        plaintext: material.to_vec(),
    })
}

pub(crate) fn wrap(
    masters: &Masters,
    cache: &RootKeyCache,
    request: &WrapRequest,
) -> Result<Wrapped, KeyError> {
    if request.key.binding.extractable {
        return Err(KeyError::Size("only root keys wrap other keys".to_owned()));
    }
    let root = cache.open(masters, &request.key)?;
    let (dek, generated) = match &request.plaintext {
        Some(plaintext) => (Zeroizing::new(plaintext.clone()), false),
        None => {
            let mut dek = Zeroizing::new(vec![0u8; 32]);
            fill_random(&mut dek);
            (dek, true)
        }
    };
    let ciphertext = wrap_dek(&root, &request.key.binding, &dek, &request.aad)?;
    Ok(Wrapped {
        ciphertext,
        plaintext: generated.then(|| dek.to_vec()),
    })
}

pub(crate) fn unwrap(
    masters: &Masters,
    cache: &RootKeyCache,
    request: &UnwrapRequest,
) -> Result<Plaintext, KeyError> {
    let root = cache.open(masters, &request.key)?;
    let plaintext = unwrap_dek(
        &root,
        &request.key.binding,
        &request.ciphertext,
        &request.aad,
    )?;
    Ok(Plaintext {
        plaintext: plaintext.to_vec(),
    })
}

pub(crate) fn rewrap(
    masters: &Masters,
    cache: &RootKeyCache,
    request: &RewrapRequest,
) -> Result<Wrapped, KeyError> {
    let from = cache.open(masters, &request.from)?;
    let to = cache.open(masters, &request.to)?;
    let plaintext = unwrap_dek(
        &from,
        &request.from.binding,
        &request.ciphertext,
        &request.aad,
    )?;
    let ciphertext = wrap_dek(&to, &request.to.binding, &plaintext, &request.aad)?;
    Ok(Wrapped {
        ciphertext,
        plaintext: request.reveal_plaintext.then(|| plaintext.to_vec()),
    })
}

/// Rewraps one application-held blob to the committed new master key (GREP11's
/// `RewrapKeyBlob`).
pub(crate) fn rewrap_to_new(
    masters: &Masters,
    _: &RootKeyCache,
    request: &KeyRef,
) -> Result<SealedKey, KeyError> {
    let new = masters.new.as_ref().ok_or(KeyError::NoNewMasterKey)?;
    let blob = crate::keys::rewrap_blob(
        masters,
        new,
        &BlobBinding::Key(request.binding.clone()),
        &request.blob,
    )?;
    Ok(SealedKey {
        blob,
        vp: new.vp(),
        material: None,
    })
}

pub(crate) fn rewrap_batch(
    masters: &Masters,
    _: &RootKeyCache,
    request: &RewrapBatch,
) -> Result<RewrapBatchResult, KeyError> {
    let to = masters.wrapping();
    if !to.vp().matches(&request.to) {
        return Err(KeyError::WrongTarget {
            requested: request.to,
            wrapping: to.vp(),
        });
    }
    if request.items.len() > MAX_BATCH {
        return Err(KeyError::Size(format!(
            "at most {MAX_BATCH} blobs per batch"
        )));
    }
    // A blob under a master key this unit lacks fails the whole batch, so that the service
    // sends it to a unit that holds both registers.
    for item in &request.items {
        masters.for_blob(&item.blob)?;
    }
    let blobs = request
        .items
        .iter()
        .map(|item| crate::keys::rewrap_blob(masters, to, &item.binding, &item.blob).ok())
        .collect();
    Ok(RewrapBatchResult { blobs })
}

pub(crate) fn generate_batch(
    masters: &Masters,
    _: &RootKeyCache,
    request: &GenerateBatch,
) -> Result<GeneratedBatch, KeyError> {
    if request.items.len() > MAX_BATCH {
        return Err(KeyError::Size(format!(
            "at most {MAX_BATCH} keys per batch"
        )));
    }
    let master = masters.wrapping();
    let keys = request
        .items
        .iter()
        .map(|item| {
            if item.binding.extractable {
                return Err(KeyError::Size(
                    "bulk creation makes root keys only".to_owned(),
                ));
            }
            let mut material = Zeroizing::new(vec![0u8; 32]);
            fill_random(&mut material);
            let blob = seal_key(master, &item.binding, &material)?;
            let ciphertext = wrap_dek(&material, &item.binding, &item.dek, &[])?;
            Ok((blob, ciphertext))
        })
        .collect::<Result<_, _>>()?;
    Ok(GeneratedBatch {
        vp: master.vp(),
        keys,
    })
}

/// Decodes a request body, or answers 400.
pub(crate) fn decode<T: for<'de> Deserialize<'de>>(body: &[u8]) -> Result<T, ErrorReply> {
    serde_json::from_slice(body).map_err(|err| {
        error_response(
            StatusCode::BAD_REQUEST,
            "bad_request",
            format!("malformed request: {err}"),
        )
    })
}

/// Decodes a batch (postcard) body, or answers 400.
pub(crate) fn decode_batch<T: for<'de> Deserialize<'de>>(body: &[u8]) -> Result<T, ErrorReply> {
    postcard::from_bytes(body).map_err(|err| {
        error_response(
            StatusCode::BAD_REQUEST,
            "bad_request",
            format!("malformed batch: {err}"),
        )
    })
}

/// Why a key operation through [`KeyClient`] failed.
#[derive(Debug)]
#[non_exhaustive]
pub enum KeyCallError {
    /// The unit did not answer.
    Unreachable(String),
    /// The unit answered with an error.
    Refused {
        /// HTTP status.
        status: u16,
        /// The unit's error.
        body: KeyErrorBody,
    },
}

impl std::fmt::Display for KeyCallError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Unreachable(why) => write!(f, "crypto unit unreachable: {why}"),
            Self::Refused { body, .. } => write!(f, "{} ({})", body.message, body.code),
        }
    }
}

impl std::error::Error for KeyCallError {}

/// The service's connection to one unit's key operations.
#[derive(Clone, Debug)]
pub struct KeyClient {
    http: reqwest::Client,
    base: String,
    token: Arc<String>,
}

impl KeyClient {
    /// A client for the unit at `address`, presenting `token`.
    pub fn new(http: reqwest::Client, address: std::net::SocketAddr, token: Arc<String>) -> Self {
        Self {
            http,
            base: format!("http://{address}/v1/keys"),
            token,
        }
    }

    /// The unit's public status. The service reads it over loopback to check the rotation
    /// lock; it does not check the response signature (the CLI does, for admins).
    pub async fn status(&self) -> Result<crate::wire::UnitStatus, KeyCallError> {
        let mut challenge = [0u8; 16];
        fill_random(&mut challenge);
        let url = format!(
            "{}?challenge={}",
            self.base.replace("/v1/keys", "/v1/status"),
            hex::encode(challenge)
        );
        let unreachable = |err: &dyn std::fmt::Display| KeyCallError::Unreachable(err.to_string());
        let signed: crate::wire::SignedResponse = self
            .http
            .get(url)
            .send()
            .await
            .map_err(|err| unreachable(&err))?
            .json()
            .await
            .map_err(|err| unreachable(&err))?;
        match signed
            .open_unverified()
            .map_err(|err| unreachable(&err))?
            .result
        {
            crate::wire::UnitResult::Status(status) => Ok(status),
            _ => Err(KeyCallError::Unreachable(
                "the unit did not answer with its status".to_owned(),
            )),
        }
    }

    /// Calls operation `op` (generate, import, export, wrap, unwrap, rewrap, ...) with JSON.
    pub async fn call<Req: Serialize, Resp: for<'de> Deserialize<'de>>(
        &self,
        op: &str,
        request: &Req,
    ) -> Result<Resp, KeyCallError> {
        let body = serde_json::to_vec(request)
            .map_err(|err| KeyCallError::Unreachable(format!("request: {err}")))?;
        let answer = self.send(op, body, "application/json").await?;
        serde_json::from_slice(&answer)
            .map_err(|err| KeyCallError::Unreachable(format!("bad answer: {err}")))
    }

    /// Calls a batch operation (`rewrap-batch`, `generate-batch`): postcard bodies, which cost
    /// far less than JSON for thousands of blobs.
    pub async fn call_batch<Req: Serialize, Resp: for<'de> Deserialize<'de>>(
        &self,
        op: &str,
        request: &Req,
    ) -> Result<Resp, KeyCallError> {
        let body = postcard::to_stdvec(request)
            .map_err(|err| KeyCallError::Unreachable(format!("request: {err}")))?;
        let answer = self.send(op, body, BATCH_CONTENT_TYPE).await?;
        postcard::from_bytes(&answer)
            .map_err(|err| KeyCallError::Unreachable(format!("bad answer: {err}")))
    }

    async fn send(
        &self,
        op: &str,
        body: Vec<u8>,
        content_type: &'static str,
    ) -> Result<axum::body::Bytes, KeyCallError> {
        let response = self
            .http
            .post(format!("{}/{op}", self.base))
            .bearer_auth(self.token.as_str())
            .header(header::CONTENT_TYPE, content_type)
            .body(body)
            .send()
            .await
            .map_err(|err| KeyCallError::Unreachable(err.to_string()))?;
        let status = response.status();
        let body = response
            .bytes()
            .await
            .map_err(|err| KeyCallError::Unreachable(err.to_string()))?;
        if status.is_success() {
            return Ok(body);
        }
        let body = serde_json::from_slice(&body).unwrap_or_else(|_| KeyErrorBody {
            code: "unit_error".to_owned(),
            message: String::from_utf8_lossy(&body).chars().take(300).collect(),
        });
        Err(KeyCallError::Refused {
            status: status.as_u16(),
            body,
        })
    }
}

//! An IAM-compatible token service and the role checks of the Key Protect API.
//!
//! Clients exchange an API key for an access token the way they do with IBM Cloud IAM:
//!
//! ```text
//! POST /identity/token
//! Content-Type: application/x-www-form-urlencoded
//!
//! grant_type=urn:ibm:params:oauth:grant-type:apikey&apikey=rotor_…
//! ```
//!
//! and send it as `Authorization: Bearer TOKEN`. Tokens are JWTs signed with HMAC-SHA-256
//! (`HS256`) under a 32-byte key kept in a file beside the configuration, so that tokens survive a
//! restart. Their claims name the API key (`sub`), its role and the instances it covers.
//!
//! API keys are configured by their SHA-256 only; the keys themselves are never stored:
//!
//! ```toml
//! token_ttl_seconds = 3600          # the default
//!
//! [[api_keys]]
//! name = "alice"
//! key_sha256 = "9f86d0…"            # printf %s "$KEY" | sha256sum
//! role = "Manager"                  # Reader, Writer, Manager or "Crypto Unit Administrator"
//! instances = ["6f1c2d0e-0b7e-4a53-9d1e-2f0c6c1d7a10"]   # or ["*"], the default
//! ```
//!
//! Tokens are stateless: removing an API key from the configuration or changing its role takes
//! effect for the tokens already issued only when they expire, as with IBM Cloud IAM.

use std::collections::HashSet;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use rotor_crypto::{Secret32, fill_random, hmac_sha256, sha256, verify_hmac_sha256};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// The only grant type the token endpoint accepts.
pub const GRANT_TYPE_APIKEY: &str = "urn:ibm:params:oauth:grant-type:apikey";
/// The path of the token endpoint.
pub const TOKEN_PATH: &str = "/identity/token";
/// The issuer (`iss`) of every token.
pub const ISSUER: &str = "rotor";
/// The prefix of API keys made by [`new_api_key`].
pub const API_KEY_PREFIX: &str = "rotor_";
/// The lifetime of a token when the configuration does not say (as IBM Cloud IAM).
pub const DEFAULT_TOKEN_TTL_SECONDS: u64 = 3600;
/// The longest token lifetime [`IamConfig::check`] accepts: one day.
pub const MAX_TOKEN_TTL_SECONDS: u64 = 86_400;

/// `refresh_token` in token responses: refresh tokens are not supported, clients present their
/// API key again.
const REFRESH_NOT_SUPPORTED: &str = "not_supported";
/// base64url of `{"alg":"HS256","typ":"JWT"}`.
const JWT_HEADER: &str = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9";
/// The only algorithm accepted in a token header.
const JWT_ALG: &str = "HS256";
/// Longer `Authorization` values are refused before any decoding.
const MAX_TOKEN_LEN: usize = 8192;
/// The largest token request body.
const MAX_TOKEN_REQUEST: usize = 16 * 1024;
/// Length of a key file.
const SECRET_LEN: usize = 32;

/// The IAM part of the service's configuration.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IamConfig {
    /// How long an access token is valid, in seconds (3600 unless set).
    #[serde(default = "default_token_ttl")]
    pub token_ttl_seconds: u64,
    /// The API keys that may request tokens.
    #[serde(default)]
    pub api_keys: Vec<ApiKeyConfig>,
}

fn default_token_ttl() -> u64 {
    DEFAULT_TOKEN_TTL_SECONDS
}

impl Default for IamConfig {
    fn default() -> Self {
        Self {
            token_ttl_seconds: DEFAULT_TOKEN_TTL_SECONDS,
            api_keys: Vec::new(),
        }
    }
}

/// One API key, known by its SHA-256 only.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiKeyConfig {
    /// A name for people; the `sub` of the tokens issued to this key.
    pub name: String,
    /// Hex SHA-256 of the API key's UTF-8 text (as `printf %s "$KEY" | sha256sum` prints it).
    pub key_sha256: String,
    /// What the key may do.
    pub role: Role,
    /// The instance UUIDs the key covers, or `"*"` for all (the default).
    #[serde(default = "all_instances")]
    pub instances: Vec<String>,
}

fn all_instances() -> Vec<String> {
    vec!["*".to_owned()]
}

/// An IAM service role, named as IBM names them.
///
/// For key routes `Reader` < `Writer` < `Manager`, a higher role permitting everything a lower one
/// does. Admin (crypto unit) routes need `Crypto Unit Administrator`, which `Manager` also
/// permits, as in Hyper Protect Crypto Services.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Role {
    /// Reads key metadata and uses root keys: wrap, unwrap, rewrap.
    Reader,
    /// Also creates, imports, rotates, enables and disables keys, manages aliases, sets keys
    /// for deletion, and reads standard keys' material.
    Writer,
    /// Also deletes, restores and purges keys, sets policies, manages key rings and import
    /// tokens, and runs crypto unit commands.
    Manager,
    /// Runs crypto unit commands only.
    #[serde(rename = "Crypto Unit Administrator")]
    CryptoUnitAdministrator,
}

impl Role {
    /// Whether this role may do what `needed` may.
    pub fn permits(self, needed: Role) -> bool {
        match (self, needed) {
            (have, needed) if have == needed => true,
            (Role::Manager, _) => true,
            (Role::Writer, Role::Reader) => true,
            _ => false,
        }
    }

    /// IBM's name of the role, as it appears in configurations and tokens.
    pub fn name(self) -> &'static str {
        match self {
            Role::Reader => "Reader",
            Role::Writer => "Writer",
            Role::Manager => "Manager",
            Role::CryptoUnitAdministrator => "Crypto Unit Administrator",
        }
    }
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// A fresh random API key (`rotor_` and 32 random bytes in base64url) and the hex SHA-256 to put
/// in the configuration as `key_sha256`.
pub fn new_api_key() -> (String, String) {
    let mut bytes = [0u8; 32];
    fill_random(&mut bytes);
    let key = format!("{API_KEY_PREFIX}{}", URL_SAFE_NO_PAD.encode(bytes));
    bytes.fill(0);
    let hash = hex::encode(sha256(key.as_bytes()));
    (key, hash)
}

pub use rotor_util::time::unix_now;

/// Why a token was not issued, a request not authorized, or the IAM setup not usable.
///
/// No message ever contains a token or an API key.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum IamError {
    /// The request carries no bearer token.
    #[error(
        "no access token: send 'Authorization: Bearer TOKEN' with a token from POST /identity/token"
    )]
    MissingToken,
    /// The token is not a JWT this service could have issued.
    #[error("the access token is malformed; request a new one from POST /identity/token")]
    MalformedToken,
    /// The token's header names another algorithm than HS256 (such as `none`).
    #[error(
        "the access token is not signed with HS256; request a new one from POST /identity/token"
    )]
    UnsupportedAlgorithm,
    /// The token's signature does not verify under this service's key.
    #[error(
        "the access token's signature does not verify (it was altered, or issued by another \
         service or under another key); request a new one from POST /identity/token"
    )]
    BadSignature,
    /// The token is past its expiry.
    #[error("the access token expired; request a new one from POST /identity/token")]
    Expired,
    /// The token's role does not permit the request.
    #[error("this request needs the {needed} role; the access token carries the {have} role")]
    WrongRole {
        /// The role the request needs.
        needed: Role,
        /// The role in the token.
        have: Role,
    },
    /// The token does not cover the instance addressed.
    #[error("the access token does not cover instance {instance}")]
    InstanceNotAllowed {
        /// The instance addressed.
        instance: Uuid,
    },
    /// No configured API key has the SHA-256 of the key presented.
    #[error(
        "Provided API key could not be found; check the key, or its SHA-256 in the service's \
         IAM configuration"
    )]
    UnknownApiKey,
    /// The API key is missing from the token request.
    #[error("Property 'apikey' either missing or empty.")]
    MissingApiKey,
    /// The token request's grant type is missing or not the API key grant.
    #[error(
        "Property 'grant_type' missing, empty or not supported: only \
         urn:ibm:params:oauth:grant-type:apikey is"
    )]
    BadGrantType,
    /// The token request's body is not a form.
    #[error("the request body is not a valid application/x-www-form-urlencoded form: {0}")]
    MalformedForm(&'static str),
    /// The key file that signs tokens cannot be used.
    #[error("IAM token signing key file {path}: {problem}")]
    SecretFile {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        problem: String,
    },
    /// The IAM configuration cannot be used.
    #[error("invalid IAM configuration: {0}")]
    InvalidConfig(String),
}

impl IamError {
    /// The HTTP status to answer with: 400 for token endpoint errors (as IBM Cloud IAM), 401 when
    /// a request's token is missing or does not verify, 403 when its role or instances do not
    /// permit the request, 500 for setup problems.
    pub fn http_status(&self) -> u16 {
        match self {
            Self::UnknownApiKey
            | Self::MissingApiKey
            | Self::BadGrantType
            | Self::MalformedForm(_) => 400,
            Self::MissingToken
            | Self::MalformedToken
            | Self::UnsupportedAlgorithm
            | Self::BadSignature
            | Self::Expired => 401,
            Self::WrongRole { .. } | Self::InstanceNotAllowed { .. } => 403,
            Self::SecretFile { .. } | Self::InvalidConfig(_) => 500,
        }
    }

    /// A stable code: IBM IAM's `BXNIM…` codes for token endpoint errors, rotor's own for the
    /// others.
    pub fn error_code(&self) -> &'static str {
        match self {
            Self::UnknownApiKey => "BXNIM0415E",
            Self::MissingApiKey | Self::BadGrantType | Self::MalformedForm(_) => "BXNIM0109E",
            Self::MissingToken => "token_missing",
            Self::MalformedToken => "token_malformed",
            Self::UnsupportedAlgorithm => "token_algorithm_unsupported",
            Self::BadSignature => "token_signature_invalid",
            Self::Expired => "token_expired",
            Self::WrongRole { .. } => "role_insufficient",
            Self::InstanceNotAllowed { .. } => "instance_not_allowed",
            Self::SecretFile { .. } => "iam_key_file",
            Self::InvalidConfig(_) => "iam_config_invalid",
        }
    }
}

/// IBM IAM's error body: `{"errorCode": "...", "errorMessage": "..."}` with [`IamError::http_status`],
/// and `WWW-Authenticate: Bearer` on 401.
impl IntoResponse for IamError {
    fn into_response(self) -> Response {
        let status =
            StatusCode::from_u16(self.http_status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let body = axum::Json(serde_json::json!({
            "errorCode": self.error_code(),
            "errorMessage": self.to_string(),
        }));
        if status == StatusCode::UNAUTHORIZED {
            (status, [(header::WWW_AUTHENTICATE, "Bearer")], body).into_response()
        } else {
            (status, body).into_response()
        }
    }
}

fn invalid(message: String) -> IamError {
    IamError::InvalidConfig(message)
}

impl IamConfig {
    /// Rejects a lifetime of 0 or over a day, empty or duplicate names, hashes that are not 64
    /// hex characters, the same hash twice, and instances that are neither UUIDs nor `"*"`.
    pub fn check(&self) -> Result<(), IamError> {
        if self.token_ttl_seconds == 0 || self.token_ttl_seconds > MAX_TOKEN_TTL_SECONDS {
            return Err(invalid(format!(
                "token_ttl_seconds is {}; it must be between 1 and {MAX_TOKEN_TTL_SECONDS}",
                self.token_ttl_seconds
            )));
        }
        let mut names = HashSet::new();
        let mut hashes = HashSet::new();
        for key in &self.api_keys {
            if key.name.trim().is_empty() {
                return Err(invalid("an API key has an empty name".to_owned()));
            }
            if !names.insert(key.name.as_str()) {
                return Err(invalid(format!(
                    "the API key name '{}' appears more than once",
                    key.name
                )));
            }
            let Some(hash) = decode_sha256_hex(&key.key_sha256) else {
                return Err(invalid(format!(
                    "key_sha256 of API key '{}' is not 64 hex characters (a SHA-256)",
                    key.name
                )));
            };
            if !hashes.insert(hash) {
                return Err(invalid(format!(
                    "API key '{}' has the same key_sha256 as another key",
                    key.name
                )));
            }
            for instance in &key.instances {
                if instance != "*" && Uuid::parse_str(instance).is_err() {
                    return Err(invalid(format!(
                        "API key '{}' names instance '{instance}', which is neither a UUID nor \"*\"",
                        key.name
                    )));
                }
            }
        }
        Ok(())
    }
}

fn decode_sha256_hex(text: &str) -> Option<[u8; 32]> {
    let bytes = hex::decode(text.trim()).ok()?;
    bytes.try_into().ok()
}

/// Equality of two byte strings whose time depends on their lengths only.
fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let diff = a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y));
    std::hint::black_box(diff) == 0
}

/// An access token as IBM Cloud IAM returns it.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenResponse {
    /// The JWT to send as `Authorization: Bearer …`.
    pub access_token: String,
    /// Always `not_supported`: clients present their API key again.
    pub refresh_token: String,
    /// Always `Bearer`.
    pub token_type: String,
    /// Lifetime in seconds.
    pub expires_in: u64,
    /// Expiry, in seconds since the Unix epoch (the token's `exp`).
    pub expiration: u64,
}

impl std::fmt::Debug for TokenResponse {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenResponse")
            .field("access_token", &"..")
            .field("token_type", &self.token_type)
            .field("expires_in", &self.expires_in)
            .field("expiration", &self.expiration)
            .finish()
    }
}

/// What a verified token says.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Claims {
    /// The name of the API key the token was issued to.
    pub sub: String,
    /// Its role.
    pub role: Role,
    /// The instance UUIDs it covers, or `"*"` for all.
    pub instances: Vec<String>,
    /// Issued at, in seconds since the Unix epoch.
    pub iat: u64,
    /// Expires at, in seconds since the Unix epoch.
    pub exp: u64,
}

impl Claims {
    /// Whether the token covers `instance`.
    pub fn covers(&self, instance: Uuid) -> bool {
        self.instances
            .iter()
            .any(|entry| entry == "*" || Uuid::parse_str(entry).is_ok_and(|id| id == instance))
    }

    /// Checks that the token's role permits `needed` and, for a request addressing an instance,
    /// that the token covers it.
    pub fn allows(&self, instance: Option<Uuid>, needed: Role) -> Result<(), IamError> {
        if !self.role.permits(needed) {
            return Err(IamError::WrongRole {
                needed,
                have: self.role,
            });
        }
        match instance {
            Some(instance) if !self.covers(instance) => {
                Err(IamError::InstanceNotAllowed { instance })
            }
            _ => Ok(()),
        }
    }
}

/// The token's payload on the wire.
#[derive(Serialize, Deserialize)]
struct JwtClaims {
    iss: String,
    sub: String,
    iat: u64,
    exp: u64,
    role: Role,
    instances: Vec<String>,
}

/// The token's header on the wire; other fields are ignored.
#[derive(Deserialize)]
struct JwtHeader {
    alg: String,
}

/// Issues and verifies access tokens.
#[derive(Debug)]
pub struct Iam {
    secret: Secret32,
    ttl: u64,
    keys: Vec<ApiKeyConfig>,
}

impl Iam {
    /// A token service signing with `secret` for the API keys of `config`. Call
    /// [`IamConfig::check`] first: a key whose hash is not valid hex never matches.
    pub fn new(secret: Secret32, config: &IamConfig) -> Self {
        Self {
            secret,
            ttl: config.token_ttl_seconds,
            keys: config.api_keys.clone(),
        }
    }

    /// Exchanges an API key for a token valid from `now` for the configured lifetime.
    pub fn issue(&self, api_key: &str, now: u64) -> Result<TokenResponse, IamError> {
        let presented = sha256(api_key.as_bytes());
        let mut found = None;
        // Every configured key is compared, matched or not.
        for key in &self.keys {
            let matches = decode_sha256_hex(&key.key_sha256)
                .is_some_and(|expected| ct_eq(&presented, &expected));
            if matches && found.is_none() {
                found = Some(key);
            }
        }
        let Some(key) = found else {
            tracing::warn!("token request with an unknown API key");
            return Err(IamError::UnknownApiKey);
        };
        let exp = now.saturating_add(self.ttl);
        let payload = serde_json::json!({
            "iss": ISSUER,
            "sub": key.name,
            "iat": now,
            "exp": exp,
            "role": key.role.name(),
            "instances": key.instances,
        })
        .to_string();
        let signing_input = format!("{JWT_HEADER}.{}", URL_SAFE_NO_PAD.encode(payload));
        let signature = hmac_sha256(&self.secret, signing_input.as_bytes());
        let access_token = format!("{signing_input}.{}", URL_SAFE_NO_PAD.encode(signature));
        tracing::info!(api_key = %key.name, role = %key.role, exp, "issued an access token");
        Ok(TokenResponse {
            access_token,
            refresh_token: REFRESH_NOT_SUPPORTED.to_owned(),
            token_type: "Bearer".to_owned(),
            expires_in: self.ttl,
            expiration: exp,
        })
    }

    /// Verifies the `Authorization` header of a request (`Bearer TOKEN`, the scheme in any case)
    /// at `now`: the token must be an HS256 JWT signed with this service's key and not expired.
    pub fn verify(&self, authorization_header: Option<&str>, now: u64) -> Result<Claims, IamError> {
        let header = authorization_header.ok_or(IamError::MissingToken)?.trim();
        let (scheme, token) = header
            .split_once(|c: char| c.is_ascii_whitespace())
            .ok_or(IamError::MissingToken)?;
        if !scheme.eq_ignore_ascii_case("bearer") {
            return Err(IamError::MissingToken);
        }
        let token = token.trim();
        if token.is_empty() {
            return Err(IamError::MissingToken);
        }
        if token.len() > MAX_TOKEN_LEN {
            return Err(IamError::MalformedToken);
        }
        let mut parts = token.split('.');
        let (Some(header_b64), Some(payload_b64), Some(signature_b64), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(IamError::MalformedToken);
        };

        let jwt_header: JwtHeader = decode_json(header_b64)?;
        if jwt_header.alg != JWT_ALG {
            return Err(IamError::UnsupportedAlgorithm);
        }
        let signature = URL_SAFE_NO_PAD
            .decode(signature_b64)
            .map_err(|_| IamError::MalformedToken)?;
        let signing_input_len = header_b64.len() + 1 + payload_b64.len();
        let signing_input = token
            .get(..signing_input_len)
            .ok_or(IamError::MalformedToken)?;
        verify_hmac_sha256(&self.secret, signing_input.as_bytes(), &signature)
            .map_err(|_| IamError::BadSignature)?;

        let claims: JwtClaims = decode_json(payload_b64)?;
        if claims.iss != ISSUER {
            return Err(IamError::MalformedToken);
        }
        if claims.exp <= now {
            return Err(IamError::Expired);
        }
        Ok(Claims {
            sub: claims.sub,
            role: claims.role,
            instances: claims.instances,
            iat: claims.iat,
            exp: claims.exp,
        })
    }
}

fn decode_json<T: serde::de::DeserializeOwned>(part: &str) -> Result<T, IamError> {
    let bytes = URL_SAFE_NO_PAD
        .decode(part)
        .map_err(|_| IamError::MalformedToken)?;
    serde_json::from_slice(&bytes).map_err(|_| IamError::MalformedToken)
}

fn secret_error(path: &Path, problem: impl Into<String>) -> IamError {
    IamError::SecretFile {
        path: path.to_owned(),
        problem: problem.into(),
    }
}

/// Reads the 32-byte key that signs tokens from `path`, or creates it (mode 0600, through a
/// temporary file linked into place, so that a crash or a concurrent start never leaves a partial
/// key). A file of another length is refused.
pub fn load_or_create_secret(path: &Path) -> Result<Secret32, IamError> {
    if let Some(secret) = read_secret(path)? {
        return Ok(secret);
    }
    create_secret(path)
}

fn read_secret(path: &Path) -> Result<Option<Secret32>, IamError> {
    let mut file = match File::open(path) {
        Ok(file) => file,
        Err(err) if err.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(err) => return Err(secret_error(path, format!("cannot be read: {err}"))),
    };
    let metadata = file
        .metadata()
        .map_err(|err| secret_error(path, format!("cannot be read: {err}")))?;
    if !metadata.is_file() {
        return Err(secret_error(path, "is not a regular file"));
    }
    if metadata.len() != SECRET_LEN as u64 {
        return Err(secret_error(
            path,
            format!(
                "holds {} bytes instead of {SECRET_LEN}, so it is not a rotor IAM key file; \
                 remove it to create a new key (tokens issued under the old key then stop \
                 verifying)",
                metadata.len()
            ),
        ));
    }
    if metadata.mode() & 0o077 != 0 {
        tracing::warn!(
            path = %path.display(),
            "the IAM token signing key file is readable by other users; restrict it to mode 0600"
        );
    }
    let mut bytes = [0u8; SECRET_LEN];
    file.read_exact(&mut bytes)
        .map_err(|err| secret_error(path, format!("cannot be read: {err}")))?;
    let secret = Secret32::from_bytes(bytes);
    bytes.fill(0);
    Ok(Some(secret))
}

fn create_secret(path: &Path) -> Result<Secret32, IamError> {
    let file_name = path
        .file_name()
        .ok_or_else(|| secret_error(path, "is not a file path"))?;
    let dir = match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent,
        _ => Path::new("."),
    };
    let mut suffix = [0u8; 8];
    fill_random(&mut suffix);
    let tmp = dir.join(format!(
        ".{}.{}.tmp",
        file_name.to_string_lossy(),
        hex::encode(suffix)
    ));

    let secret = Secret32::random();
    let placed = write_new(&tmp, secret.expose()).and_then(|()| link_into_place(&tmp, path));
    // The temporary name is gone already when the file was renamed into place.
    let _ = fs::remove_file(&tmp);
    match placed {
        Ok(true) => {
            File::open(dir)
                .and_then(|d| d.sync_all())
                .map_err(|err| secret_error(path, format!("cannot sync its directory: {err}")))?;
            tracing::info!(path = %path.display(), "created the IAM token signing key");
            Ok(secret)
        }
        // Another process created the file first: use its key.
        Ok(false) => read_secret(path)?
            .ok_or_else(|| secret_error(path, "disappeared while it was being created")),
        Err(err) => Err(secret_error(path, format!("cannot be created: {err}"))),
    }
}

fn write_new(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    file.write_all(bytes)?;
    file.sync_all()
}

/// Gives the complete temporary file its final name unless that exists already. Returns whether
/// the file was placed.
fn link_into_place(tmp: &Path, path: &Path) -> io::Result<bool> {
    match fs::hard_link(tmp, path) {
        Ok(()) => Ok(true),
        Err(err) if err.kind() == io::ErrorKind::AlreadyExists => Ok(false),
        // File systems without hard links: a rename, which cannot detect a concurrent creator.
        Err(_) => fs::rename(tmp, path).map(|()| true),
    }
}

/// Decodes an `application/x-www-form-urlencoded` body into its name/value pairs, in order.
fn parse_form(body: &[u8]) -> Result<Vec<(String, String)>, IamError> {
    body.split(|&b| b == b'&')
        .filter(|pair| !pair.is_empty())
        .map(|pair| {
            let (name, value) = match pair.iter().position(|&b| b == b'=') {
                Some(at) => (pair.get(..at), pair.get(at + 1..)),
                None => (Some(pair), Some(&[][..])),
            };
            let (Some(name), Some(value)) = (name, value) else {
                return Err(IamError::MalformedForm("a pair cannot be split"));
            };
            Ok((percent_decode(name)?, percent_decode(value)?))
        })
        .collect()
}

fn percent_decode(input: &[u8]) -> Result<String, IamError> {
    let mut out = Vec::with_capacity(input.len());
    let mut bytes = input.iter().copied();
    while let Some(byte) = bytes.next() {
        match byte {
            b'+' => out.push(b' '),
            b'%' => {
                let high = bytes.next().and_then(hex_digit);
                let low = bytes.next().and_then(hex_digit);
                let (Some(high), Some(low)) = (high, low) else {
                    return Err(IamError::MalformedForm(
                        "'%' is not followed by two hex digits",
                    ));
                };
                out.push(high << 4 | low);
            }
            other => out.push(other),
        }
    }
    String::from_utf8(out).map_err(|_| IamError::MalformedForm("a value is not UTF-8"))
}

fn hex_digit(byte: u8) -> Option<u8> {
    char::from(byte)
        .to_digit(16)
        .and_then(|digit| u8::try_from(digit).ok())
}

/// The one value of `name` in a form, if any; a name given twice is refused.
fn form_value<'a>(form: &'a [(String, String)], name: &str) -> Result<Option<&'a str>, IamError> {
    let mut values = form.iter().filter(|(n, _)| n == name).map(|(_, v)| v);
    let first = values.next();
    if values.next().is_some() {
        return Err(IamError::MalformedForm(
            "a parameter appears more than once",
        ));
    }
    Ok(first.map(String::as_str))
}

/// The token endpoint without HTTP: the form body of a token request, answered at `now`.
fn token_request(iam: &Iam, body: &[u8], now: u64) -> Result<TokenResponse, IamError> {
    let form = parse_form(body)?;
    if form_value(&form, "grant_type")? != Some(GRANT_TYPE_APIKEY) {
        return Err(IamError::BadGrantType);
    }
    match form_value(&form, "apikey")? {
        Some(api_key) if !api_key.is_empty() => iam.issue(api_key, now),
        _ => Err(IamError::MissingApiKey),
    }
}

/// `POST /identity/token`: exchanges an API key (form body
/// `grant_type=urn:ibm:params:oauth:grant-type:apikey&apikey=KEY`) for an access token, answering
/// as IBM Cloud IAM does; errors are `{"errorCode", "errorMessage"}` with status 400.
pub async fn token(State(iam): State<Arc<Iam>>, body: Bytes) -> Response {
    match token_request(&iam, &body, unix_now()) {
        Ok(response) => (
            StatusCode::OK,
            [
                (header::CACHE_CONTROL, "no-store"),
                (header::PRAGMA, "no-cache"),
            ],
            axum::Json(response),
        )
            .into_response(),
        Err(err) => err.into_response(),
    }
}

/// A router with only `POST /identity/token`, to merge into the service's router.
pub fn router(iam: Arc<Iam>) -> Router {
    Router::new()
        .route(TOKEN_PATH, post(token))
        .layer(DefaultBodyLimit::max(MAX_TOKEN_REQUEST))
        .with_state(iam)
}

#[cfg(test)]
mod tests {
    use super::*;

    const INSTANCE: &str = "6f1c2d0e-0b7e-4a53-9d1e-2f0c6c1d7a10";
    const OTHER_INSTANCE: &str = "0b3e5a2c-1d4f-4e6a-8b7c-9d0e1f2a3b4c";
    const NOW: u64 = 1_750_000_000;

    fn key(name: &str, role: Role, instances: &[&str]) -> (String, ApiKeyConfig) {
        let (api_key, key_sha256) = new_api_key();
        let config = ApiKeyConfig {
            name: name.to_owned(),
            key_sha256,
            role,
            instances: instances.iter().map(|s| (*s).to_owned()).collect(),
        };
        (api_key, config)
    }

    /// A service with a Writer key on INSTANCE, a Manager on all instances and a Crypto Unit
    /// Administrator on INSTANCE; returns it and the three API keys.
    fn setup() -> (Iam, [String; 3]) {
        let (writer, writer_config) = key("writer", Role::Writer, &[INSTANCE]);
        let (manager, manager_config) = key("manager", Role::Manager, &["*"]);
        let (admin, admin_config) = key("admin", Role::CryptoUnitAdministrator, &[INSTANCE]);
        let config = IamConfig {
            token_ttl_seconds: 600,
            api_keys: vec![writer_config, manager_config, admin_config],
        };
        config.check().unwrap();
        (
            Iam::new(Secret32::random(), &config),
            [writer, manager, admin],
        )
    }

    fn bearer(token: &str) -> String {
        format!("Bearer {token}")
    }

    fn b64(data: &[u8]) -> String {
        URL_SAFE_NO_PAD.encode(data)
    }

    #[test]
    fn issue_then_verify_round_trips() {
        let (iam, [writer, manager, admin]) = setup();
        let response = iam.issue(&writer, NOW).unwrap();
        assert_eq!(response.token_type, "Bearer");
        assert_eq!(response.refresh_token, "not_supported");
        assert_eq!(response.expires_in, 600);
        assert_eq!(response.expiration, NOW + 600);

        let claims = iam
            .verify(Some(&bearer(&response.access_token)), NOW + 1)
            .unwrap();
        assert_eq!(
            claims,
            Claims {
                sub: "writer".to_owned(),
                role: Role::Writer,
                instances: vec![INSTANCE.to_owned()],
                iat: NOW,
                exp: NOW + 600,
            }
        );

        let manager_claims = iam
            .verify(
                Some(&bearer(&iam.issue(&manager, NOW).unwrap().access_token)),
                NOW,
            )
            .unwrap();
        assert_eq!(manager_claims.sub, "manager");
        assert_eq!(manager_claims.instances, vec!["*".to_owned()]);
        let admin_claims = iam
            .verify(
                Some(&bearer(&iam.issue(&admin, NOW).unwrap().access_token)),
                NOW,
            )
            .unwrap();
        assert_eq!(admin_claims.role, Role::CryptoUnitAdministrator);
    }

    #[test]
    fn the_scheme_is_case_insensitive_and_other_schemes_carry_no_token() {
        let (iam, [writer, _, _]) = setup();
        let token = iam.issue(&writer, NOW).unwrap().access_token;
        for scheme in ["bearer", "BEARER", "Bearer", "bEaReR"] {
            let header = format!("{scheme} {token}");
            assert!(iam.verify(Some(&header), NOW).is_ok(), "{scheme}");
        }
        assert_eq!(iam.verify(None, NOW), Err(IamError::MissingToken));
        assert_eq!(iam.verify(Some(""), NOW), Err(IamError::MissingToken));
        assert_eq!(iam.verify(Some("Bearer"), NOW), Err(IamError::MissingToken));
        assert_eq!(
            iam.verify(Some("Bearer   "), NOW),
            Err(IamError::MissingToken)
        );
        assert_eq!(
            iam.verify(Some(&format!("Basic {token}")), NOW),
            Err(IamError::MissingToken)
        );
        assert_eq!(iam.verify(Some(&token), NOW), Err(IamError::MissingToken));
        for garbage in [
            "abc",
            "a.b",
            "a.b.c.d",
            "...",
            "!!!.???.***",
            "eyJhbGciOiJIUzI1NiJ9.e30",
        ] {
            assert_eq!(
                iam.verify(Some(&bearer(garbage)), NOW),
                Err(IamError::MalformedToken),
                "{garbage}"
            );
        }
        let huge = "a".repeat(MAX_TOKEN_LEN + 1);
        assert_eq!(
            iam.verify(Some(&bearer(&huge)), NOW),
            Err(IamError::MalformedToken)
        );
    }

    #[test]
    fn a_tampered_payload_does_not_verify() {
        let (iam, [writer, _, _]) = setup();
        let token = iam.issue(&writer, NOW).unwrap().access_token;
        let parts: Vec<&str> = token.split('.').collect();
        let forged_claims = serde_json::json!({
            "iss": "rotor", "sub": "writer", "iat": NOW, "exp": NOW + 600,
            "role": "Manager", "instances": ["*"],
        });
        let forged = format!(
            "{}.{}.{}",
            parts[0],
            b64(forged_claims.to_string().as_bytes()),
            parts[2]
        );
        assert_eq!(
            iam.verify(Some(&bearer(&forged)), NOW),
            Err(IamError::BadSignature)
        );
    }

    #[test]
    fn a_tampered_signature_does_not_verify() {
        let (iam, [writer, _, _]) = setup();
        let token = iam.issue(&writer, NOW).unwrap().access_token;
        let (signing_input, signature) = token.rsplit_once('.').unwrap();
        let mut bytes = URL_SAFE_NO_PAD.decode(signature).unwrap();
        bytes[0] ^= 1;
        let forged = format!("{signing_input}.{}", b64(&bytes));
        assert_eq!(
            iam.verify(Some(&bearer(&forged)), NOW),
            Err(IamError::BadSignature)
        );
        let truncated = format!("{signing_input}.{}", b64(&bytes[..16]));
        assert_eq!(
            iam.verify(Some(&bearer(&truncated)), NOW),
            Err(IamError::BadSignature)
        );
        let unsigned = format!("{signing_input}.");
        assert_eq!(
            iam.verify(Some(&bearer(&unsigned)), NOW),
            Err(IamError::BadSignature)
        );
    }

    #[test]
    fn alg_none_and_other_algorithms_are_refused() {
        let (iam, [writer, _, _]) = setup();
        let token = iam.issue(&writer, NOW).unwrap().access_token;
        let payload = token.split('.').nth(1).unwrap();
        for header in [
            r#"{"alg":"none","typ":"JWT"}"#,
            r#"{"alg":"None"}"#,
            r#"{"alg":"HS512","typ":"JWT"}"#,
            r#"{"alg":"RS256","typ":"JWT"}"#,
        ] {
            for signature in ["", "AAAA"] {
                let forged = format!("{}.{payload}.{signature}", b64(header.as_bytes()));
                assert_eq!(
                    iam.verify(Some(&bearer(&forged)), NOW),
                    Err(IamError::UnsupportedAlgorithm),
                    "{header}"
                );
            }
        }
        // A header without alg is malformed.
        let forged = format!("{}.{payload}.", b64(br#"{"typ":"JWT"}"#));
        assert_eq!(
            iam.verify(Some(&bearer(&forged)), NOW),
            Err(IamError::MalformedToken)
        );
    }

    #[test]
    fn a_token_signed_under_another_key_does_not_verify() {
        let (iam, [writer, _, _]) = setup();
        let token = iam.issue(&writer, NOW).unwrap().access_token;
        let other = Iam {
            secret: Secret32::random(),
            ttl: iam.ttl,
            keys: iam.keys,
        };
        assert_eq!(
            other.verify(Some(&bearer(&token)), NOW),
            Err(IamError::BadSignature)
        );
    }

    #[test]
    fn an_expired_token_is_refused_with_its_own_error() {
        let (iam, [writer, _, _]) = setup();
        let token = iam.issue(&writer, NOW).unwrap().access_token;
        assert!(iam.verify(Some(&bearer(&token)), NOW + 599).is_ok());
        let err = iam.verify(Some(&bearer(&token)), NOW + 600).unwrap_err();
        assert_eq!(err, IamError::Expired);
        assert_eq!(
            iam.verify(Some(&bearer(&token)), u64::MAX),
            Err(IamError::Expired)
        );
        let message = err.to_string();
        assert!(message.contains("expired"), "{message}");
        assert!(message.contains("request a new"), "{message}");
        assert_eq!(err.http_status(), 401);
    }

    #[test]
    fn a_validly_signed_token_from_another_issuer_is_malformed() {
        let (iam, _) = setup();
        let payload = serde_json::json!({
            "iss": "someone-else", "sub": "x", "iat": NOW, "exp": NOW + 10,
            "role": "Reader", "instances": ["*"],
        });
        let signing_input = format!("{JWT_HEADER}.{}", b64(payload.to_string().as_bytes()));
        let signature = hmac_sha256(&iam.secret, signing_input.as_bytes());
        let token = format!("{signing_input}.{}", b64(&signature));
        assert_eq!(
            iam.verify(Some(&bearer(&token)), NOW),
            Err(IamError::MalformedToken)
        );
    }

    #[test]
    fn roles_and_instances_are_checked() {
        let (iam, [writer, manager, admin]) = setup();
        let verify = |key: &str| {
            iam.verify(
                Some(&bearer(&iam.issue(key, NOW).unwrap().access_token)),
                NOW,
            )
            .unwrap()
        };
        let instance = Uuid::parse_str(INSTANCE).unwrap();
        let other = Uuid::parse_str(OTHER_INSTANCE).unwrap();

        let writer = verify(&writer);
        assert_eq!(writer.allows(Some(instance), Role::Reader), Ok(()));
        assert_eq!(writer.allows(Some(instance), Role::Writer), Ok(()));
        let err = writer.allows(Some(instance), Role::Manager).unwrap_err();
        assert_eq!(
            err,
            IamError::WrongRole {
                needed: Role::Manager,
                have: Role::Writer
            }
        );
        assert!(err.to_string().contains("needs the Manager role"), "{err}");
        assert_eq!(err.http_status(), 403);
        let err = writer.allows(Some(other), Role::Reader).unwrap_err();
        assert_eq!(err, IamError::InstanceNotAllowed { instance: other });
        assert_eq!(err.http_status(), 403);
        assert_eq!(writer.allows(None, Role::Writer), Ok(()));
        assert!(matches!(
            writer.allows(None, Role::CryptoUnitAdministrator),
            Err(IamError::WrongRole { .. })
        ));

        let manager = verify(&manager);
        for role in [
            Role::Reader,
            Role::Writer,
            Role::Manager,
            Role::CryptoUnitAdministrator,
        ] {
            assert_eq!(manager.allows(Some(instance), role), Ok(()));
            assert_eq!(manager.allows(Some(other), role), Ok(()));
        }

        let admin = verify(&admin);
        assert_eq!(
            admin.allows(Some(instance), Role::CryptoUnitAdministrator),
            Ok(())
        );
        assert!(matches!(
            admin.allows(Some(instance), Role::Reader),
            Err(IamError::WrongRole {
                needed: Role::Reader,
                have: Role::CryptoUnitAdministrator
            })
        ));
        assert_eq!(
            admin.allows(Some(other), Role::CryptoUnitAdministrator),
            Err(IamError::InstanceNotAllowed { instance: other })
        );
    }

    #[test]
    fn role_ordering() {
        use Role::*;
        let all = [Reader, Writer, Manager, CryptoUnitAdministrator];
        let permitted =
            |have: Role| -> Vec<Role> { all.into_iter().filter(|&n| have.permits(n)).collect() };
        assert_eq!(permitted(Reader), vec![Reader]);
        assert_eq!(permitted(Writer), vec![Reader, Writer]);
        assert_eq!(permitted(Manager), all.to_vec());
        assert_eq!(
            permitted(CryptoUnitAdministrator),
            vec![CryptoUnitAdministrator]
        );
    }

    #[test]
    fn roles_use_ibm_names() {
        for (role, name) in [
            (Role::Reader, "Reader"),
            (Role::Writer, "Writer"),
            (Role::Manager, "Manager"),
            (Role::CryptoUnitAdministrator, "Crypto Unit Administrator"),
        ] {
            assert_eq!(serde_json::to_value(role).unwrap(), name);
            assert_eq!(role.to_string(), name);
            assert_eq!(
                serde_json::from_value::<Role>(serde_json::json!(name)).unwrap(),
                role
            );
        }
        assert!(
            serde_json::from_value::<Role>(serde_json::json!("CryptoUnitAdministrator")).is_err()
        );
    }

    #[test]
    fn new_api_key_hash_matches() {
        let (api_key, hash) = new_api_key();
        assert!(api_key.starts_with(API_KEY_PREFIX));
        assert_eq!(api_key.len(), API_KEY_PREFIX.len() + 43);
        assert_eq!(hash, hex::encode(sha256(api_key.as_bytes())));
        assert_eq!(hash.len(), 64);
        let (other, other_hash) = new_api_key();
        assert_ne!(api_key, other);
        assert_ne!(hash, other_hash);
    }

    #[test]
    fn unknown_keys_are_refused_without_echoing_them() {
        let (iam, [writer, _, _]) = setup();
        for presented in [
            "rotor_nope".to_owned(),
            String::new(),
            format!("{writer} "),
            writer[..writer.len() - 1].to_owned(),
        ] {
            let err = iam.issue(&presented, NOW).unwrap_err();
            assert_eq!(err, IamError::UnknownApiKey);
            assert_eq!(err.http_status(), 400);
            assert_eq!(err.error_code(), "BXNIM0415E");
            if !presented.is_empty() {
                assert!(!err.to_string().contains(&presented));
            }
        }
        // Uppercase hex in the configuration matches too.
        let (api_key, mut config) = key("upper", Role::Reader, &["*"]);
        config.key_sha256 = config.key_sha256.to_uppercase();
        let iam = Iam::new(
            Secret32::random(),
            &IamConfig {
                api_keys: vec![config],
                ..IamConfig::default()
            },
        );
        assert!(iam.issue(&api_key, NOW).is_ok());
    }

    #[test]
    fn no_error_message_contains_the_token() {
        let (iam, [writer, _, _]) = setup();
        let token = iam.issue(&writer, NOW).unwrap().access_token;
        let (signing_input, _) = token.rsplit_once('.').unwrap();
        for header in [
            bearer(&token),
            format!("{signing_input}.AAAA"),
            format!("Bearer {signing_input}.AAAA"),
        ] {
            if let Err(err) = iam.verify(Some(&header), NOW + 10_000) {
                let message = err.to_string();
                assert!(!message.contains(signing_input), "{message}");
                assert!(!format!("{err:?}").contains(signing_input));
            }
        }
        let response = iam.issue(&writer, NOW).unwrap();
        assert!(!format!("{response:?}").contains(&response.access_token));
    }

    #[test]
    fn the_token_decodes_like_ibm_sdks_decode_it() {
        let (iam, [writer, _, _]) = setup();
        let response = iam.issue(&writer, NOW).unwrap();
        let json = serde_json::to_value(&response).unwrap();
        let object = json.as_object().unwrap();
        let mut fields: Vec<&str> = object.keys().map(String::as_str).collect();
        fields.sort_unstable();
        assert_eq!(
            fields,
            [
                "access_token",
                "expiration",
                "expires_in",
                "refresh_token",
                "token_type"
            ]
        );
        assert_eq!(json["token_type"], "Bearer");
        assert!(json["expires_in"].is_u64());
        assert!(json["expiration"].is_u64());

        // As ibm-cloud-sdk-core's JWTTokenManager does: split on '.', base64url-decode the
        // header and the payload, read JSON; exp and iat are integers.
        let parts: Vec<&str> = response.access_token.split('.').collect();
        assert_eq!(parts.len(), 3);
        let decode = |part: &str| -> serde_json::Value {
            serde_json::from_slice(&URL_SAFE_NO_PAD.decode(part).unwrap()).unwrap()
        };
        let header = decode(parts[0]);
        assert_eq!(header, serde_json::json!({"alg": "HS256", "typ": "JWT"}));
        let payload = decode(parts[1]);
        assert_eq!(payload["iss"], "rotor");
        assert_eq!(payload["sub"], "writer");
        assert_eq!(payload["role"], "Writer");
        assert_eq!(payload["instances"], serde_json::json!([INSTANCE]));
        assert_eq!(payload["iat"].as_u64(), Some(NOW));
        assert_eq!(payload["exp"].as_u64(), Some(NOW + 600));
        assert_eq!(payload["exp"].as_u64(), Some(response.expiration));
        assert!(!parts.iter().any(|part| part.contains('=')));
        assert_eq!(URL_SAFE_NO_PAD.decode(parts[2]).unwrap().len(), 32);

        // And a role with a space round-trips through the wire claims.
        let claims: JwtClaims = serde_json::from_value(serde_json::json!({
            "iss": "rotor", "sub": "a", "iat": 1, "exp": 2,
            "role": "Crypto Unit Administrator", "instances": [],
        }))
        .unwrap();
        assert_eq!(claims.role, Role::CryptoUnitAdministrator);
    }

    #[test]
    fn secret_file_is_created_0600_and_reused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("iam.key");
        let first = load_or_create_secret(&path).unwrap();
        let metadata = fs::metadata(&path).unwrap();
        assert_eq!(metadata.mode() & 0o777, 0o600);
        assert_eq!(metadata.len(), 32);
        assert_eq!(fs::read(&path).unwrap(), first.expose().to_vec());
        let second = load_or_create_secret(&path).unwrap();
        assert!(first.ct_eq(&second));
        // Nothing but the key is left in the directory.
        let names: Vec<_> = fs::read_dir(dir.path())
            .unwrap()
            .map(|entry| entry.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from("iam.key")]);

        // Tokens survive a restart.
        let (api_key, config) = key("k", Role::Reader, &["*"]);
        let config = IamConfig {
            api_keys: vec![config],
            ..IamConfig::default()
        };
        let token = Iam::new(first, &config).issue(&api_key, NOW).unwrap();
        let restarted = Iam::new(load_or_create_secret(&path).unwrap(), &config);
        assert!(
            restarted
                .verify(Some(&bearer(&token.access_token)), NOW)
                .is_ok()
        );
    }

    #[test]
    fn a_secret_file_of_the_wrong_length_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("short.key");
        fs::write(&path, [1u8, 2, 3, 4, 5]).unwrap();
        let err = load_or_create_secret(&path).unwrap_err();
        assert!(matches!(err, IamError::SecretFile { .. }));
        let message = err.to_string();
        assert!(message.contains(&path.display().to_string()), "{message}");
        assert!(message.contains("5 bytes"), "{message}");
        assert_eq!(fs::read(&path).unwrap(), vec![1, 2, 3, 4, 5]);

        let missing_dir = dir.path().join("no-such-dir").join("iam.key");
        let err = load_or_create_secret(&missing_dir).unwrap_err();
        assert!(err.to_string().contains(&missing_dir.display().to_string()));
    }

    #[test]
    fn form_parsing() {
        let form = parse_form(b"grant_type=urn%3Aibm%3Aparams%3Aoauth%3Agrant-type%3Aapikey&apikey=a+b%2Bc%20d&empty=&flag&&x=%e2%82%ac").unwrap();
        assert_eq!(
            form,
            vec![
                ("grant_type".to_owned(), GRANT_TYPE_APIKEY.to_owned()),
                ("apikey".to_owned(), "a b+c d".to_owned()),
                ("empty".to_owned(), String::new()),
                ("flag".to_owned(), String::new()),
                ("x".to_owned(), "€".to_owned()),
            ]
        );
        assert_eq!(parse_form(b"").unwrap(), vec![]);
        assert_eq!(
            parse_form(b"a=b=c").unwrap(),
            vec![("a".to_owned(), "b=c".to_owned())]
        );
        for bad in [&b"a=%"[..], b"a=%4", b"a=%zz", b"a=%ff", b"a=\xff"] {
            assert!(
                matches!(parse_form(bad), Err(IamError::MalformedForm(_))),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn token_requests() {
        let (iam, [writer, _, _]) = setup();
        let body = format!(
            "grant_type=urn%3Aibm%3Aparams%3Aoauth%3Agrant-type%3Aapikey&apikey={writer}&response_type=cloud_iam"
        );
        let response = token_request(&iam, body.as_bytes(), NOW).unwrap();
        assert_eq!(
            iam.verify(Some(&bearer(&response.access_token)), NOW)
                .unwrap()
                .sub,
            "writer"
        );
        // The grant type unencoded, as some clients send it.
        let body = format!("apikey={writer}&grant_type={GRANT_TYPE_APIKEY}");
        assert!(token_request(&iam, body.as_bytes(), NOW).is_ok());

        let cases: [(String, IamError); 7] = [
            (format!("apikey={writer}"), IamError::BadGrantType),
            (
                format!("grant_type=password&apikey={writer}"),
                IamError::BadGrantType,
            ),
            (
                format!("grant_type={GRANT_TYPE_APIKEY}"),
                IamError::MissingApiKey,
            ),
            (
                format!("grant_type={GRANT_TYPE_APIKEY}&apikey="),
                IamError::MissingApiKey,
            ),
            (
                format!("grant_type={GRANT_TYPE_APIKEY}&apikey=rotor_unknown"),
                IamError::UnknownApiKey,
            ),
            (
                format!("grant_type={GRANT_TYPE_APIKEY}&apikey={writer}&apikey=x"),
                IamError::MalformedForm("a parameter appears more than once"),
            ),
            (
                format!("grant_type={GRANT_TYPE_APIKEY}&apikey=%"),
                IamError::MalformedForm("'%' is not followed by two hex digits"),
            ),
        ];
        for (body, expected) in cases {
            let err = token_request(&iam, body.as_bytes(), NOW).unwrap_err();
            assert_eq!(err, expected, "{body}");
            assert_eq!(err.http_status(), 400);
            assert!(err.error_code().starts_with("BXNIM"));
        }
        assert_eq!(IamError::BadGrantType.error_code(), "BXNIM0109E");
    }

    async fn call(iam: &Arc<Iam>, body: String) -> (StatusCode, serde_json::Value) {
        let response = token(State(Arc::clone(iam)), Bytes::from(body)).await;
        let status = response.status();
        let bytes = axum::body::to_bytes(response.into_body(), 1 << 20)
            .await
            .unwrap();
        (status, serde_json::from_slice(&bytes).unwrap())
    }

    #[tokio::test]
    async fn the_token_handler_answers_like_ibm_iam() {
        let (iam, [writer, _, _]) = setup();
        let iam = Arc::new(iam);
        let before = unix_now();
        let (status, json) = call(
            &iam,
            format!("grant_type={GRANT_TYPE_APIKEY}&apikey={writer}"),
        )
        .await;
        assert_eq!(status, StatusCode::OK);
        let token = json["access_token"].as_str().unwrap();
        let claims = iam.verify(Some(&bearer(token)), unix_now()).unwrap();
        assert!(claims.iat >= before && claims.iat <= unix_now());
        assert_eq!(json["expiration"].as_u64(), Some(claims.exp));

        let (status, json) = call(&iam, "grant_type=x&apikey=y".to_owned()).await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert_eq!(json["errorCode"], "BXNIM0109E");
        let (status, json) = call(
            &iam,
            format!("grant_type={GRANT_TYPE_APIKEY}&apikey=rotor_secret_guess"),
        )
        .await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert_eq!(json["errorCode"], "BXNIM0415E");
        assert!(
            !json["errorMessage"]
                .as_str()
                .unwrap()
                .contains("rotor_secret_guess")
        );

        let response = IamError::Expired.into_response();
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
        assert_eq!(
            response.headers().get(header::WWW_AUTHENTICATE).unwrap(),
            "Bearer"
        );
    }

    #[test]
    fn config_parses_with_defaults_and_is_checked() {
        let config: IamConfig = toml::from_str(&format!(
            r#"
            [[api_keys]]
            name = "alice"
            key_sha256 = "{}"
            role = "Crypto Unit Administrator"

            [[api_keys]]
            name = "bob"
            key_sha256 = "{}"
            role = "Reader"
            instances = ["{INSTANCE}"]
            "#,
            "ab".repeat(32),
            "cd".repeat(32)
        ))
        .unwrap();
        assert_eq!(config.token_ttl_seconds, 3600);
        assert_eq!(config.api_keys[0].instances, vec!["*".to_owned()]);
        assert_eq!(config.api_keys[0].role, Role::CryptoUnitAdministrator);
        assert_eq!(config.api_keys[1].instances, vec![INSTANCE.to_owned()]);
        config.check().unwrap();
        assert_eq!(IamConfig::default().token_ttl_seconds, 3600);
        assert_eq!(
            toml::from_str::<IamConfig>("").unwrap(),
            IamConfig::default()
        );

        assert!(toml::from_str::<IamConfig>("ttl = 5").is_err());
        assert!(
            toml::from_str::<IamConfig>(
                "[[api_keys]]\nname = \"a\"\nkey_sha256 = \"00\"\nrole = \"Reader\"\nkey = \"x\""
            )
            .is_err()
        );

        let bad = |edit: &dyn Fn(&mut IamConfig)| {
            let mut config = config.clone();
            edit(&mut config);
            matches!(config.check(), Err(IamError::InvalidConfig(_)))
        };
        assert!(bad(&|c| c.token_ttl_seconds = 0));
        assert!(bad(&|c| c.token_ttl_seconds = MAX_TOKEN_TTL_SECONDS + 1));
        assert!(bad(&|c| c.api_keys[1].name = "alice".to_owned()));
        assert!(bad(&|c| c.api_keys[1].name = " ".to_owned()));
        assert!(bad(&|c| c.api_keys[1].key_sha256 = "ab".repeat(32)));
        assert!(bad(&|c| c.api_keys[1].key_sha256 = "ab".repeat(31)));
        assert!(bad(&|c| c.api_keys[1].key_sha256 = "zz".repeat(32)));
        assert!(bad(&|c| c.api_keys[1].instances = vec!["prod".to_owned()]));
    }

    #[test]
    fn constant_time_equality() {
        assert!(ct_eq(b"", b""));
        assert!(ct_eq(b"abc", b"abc"));
        assert!(!ct_eq(b"abc", b"abd"));
        assert!(!ct_eq(b"abc", b"ab"));
    }
}

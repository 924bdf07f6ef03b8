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
//! instances = ["6f1c2d0e-0b7e-4a53-9d1e-2f0c6c1d7a10"]   # or ["*"]; required
//! ```
//!
//! The configured keys are a bootstrap: further keys are kept in the store and managed through
//! `/v1/apikeys` (`rotor apikeys`) while the service runs, on every replica at once.
//!
//! Tokens of configured keys are stateless: removing one from the configuration or changing its
//! role takes effect for the tokens already issued only when they expire, as with IBM Cloud IAM.
//! Tokens of stored keys name the key and its generation, and stop working at most
//! [`API_KEY_REFRESH_SECONDS`] after the key is revoked or rotated ([`stored`]).
//!
//! The parts: [`config`] (API keys and roles as configured), [`token`] (issuing and verifying
//! tokens), [`stored`] (keys kept in the store, and their revocation), [`manage`] (the routes that
//! manage them), [`secret`] (the signing key file), [`endpoint`] (the token route) and [`error`].

use std::collections::HashSet;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, RawQuery, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use rotor_crypto::constant_time_eq;
use rotor_crypto::{Secret32, fill_random, hmac_sha256, sha256, verify_hmac_sha256};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

mod config;
mod endpoint;
mod error;
mod manage;
mod secret;
mod stored;
#[cfg(test)]
mod tests;
mod token;

use config::decode_sha256_hex;
pub use config::{ApiKeyConfig, IamConfig, Role, new_api_key};
pub use endpoint::{router, token};
pub use error::IamError;
pub use manage::{APIKEYS_PATH, ApiKeyError, ApiKeyView, router as apikeys_router};
pub use rotor_util::time::unix_now;
pub use secret::load_or_create_secret;
use stored::StoredKeys;
pub use stored::{API_KEY_REFRESH_SECONDS, ApiKeyRef};
pub use token::{Claims, Iam, TokenResponse};

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

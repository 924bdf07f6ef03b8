//! The one place that talks HTTP to the service: the token exchange, the instance listing, the
//! relay of unit status and commands, key storage counts, the rotation routes and the stored API
//! keys. Answers come back typed; failures are a [`ServiceError`] that tells a connection
//! failure, a refused credential, a unit's signed refusal and any other service error apart.

use std::sync::OnceLock;

use rotor_crypto::{PublicKey, Vp};
use rotor_proto::error::{ErrorBody, ServiceErrorCode};
use rotor_server::config::UnitConfig;
use rotor_server::iam::{APIKEYS_PATH, ApiKeyView, Role};
use rotor_server::rotation::{Journal, RotationView};
use rotor_unit::client::{ClientError, UnitClient};
use rotor_unit::error::UnitError;
use rotor_unit::wire::{Outcome, SignedCommand, UnitStatus};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use uuid::Uuid;
use zeroize::Zeroizing;

/// Why a request to the service (or through it to a unit) gave no usable answer.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ServiceError {
    /// No HTTP exchange with the service happened, or the service could not reach the unit.
    #[error("cannot reach {0}")]
    Unreachable(String),
    /// The service refused the API key or the token: unknown or expired, or a role or instance
    /// it does not cover.
    #[error("the service refused {what}: {message}")]
    AccessDenied {
        /// What was refused: the API key or the request.
        what: &'static str,
        /// The service's explanation.
        message: String,
    },
    /// The unit verified the command and refused it; nothing changed on it.
    #[error("{} ({})", .0.message, .0.code)]
    UnitRefused(ErrorBody),
    /// The unit's answer is not signed by its identity key or does not answer this request.
    #[error("{}", UnitError::ResponseNotAuthentic)]
    NotAuthentic,
    /// The service refuses a unit whose signed status shows another identity than the one it
    /// knows, or a counter that went backwards.
    #[error("the service refuses a crypto unit: {0}")]
    UnitUntrusted(String),
    /// Any other error the service answered with.
    #[error("the service answered {status}: {message}")]
    Failed {
        /// HTTP status.
        status: u16,
        /// The service's explanation.
        message: String,
    },
    /// A success whose body is not what a rotor service sends.
    #[error("{0} did not answer like a rotor service")]
    Unexpected(String),
}

/// The error bodies the service sends: `{"code", "message"}` from its own routes and the
/// relay, `{"errorCode", "errorMessage"}` (IBM IAM's shape) from token checks.
#[derive(Deserialize)]
struct ErrorReply {
    #[serde(alias = "errorCode")]
    code: String,
    #[serde(alias = "errorMessage")]
    message: String,
}

impl ServiceError {
    /// Classifies an error answer of the service.
    fn from_reply(url: &str, status: u16, body: &[u8]) -> Self {
        let reply: Option<ErrorReply> = serde_json::from_slice(body).ok();
        let message = match &reply {
            Some(reply) => format!("{} ({})", reply.message, reply.code),
            None => String::from_utf8_lossy(body).chars().take(500).collect(),
        };
        let code = reply.as_ref().map(|reply| reply.code.as_str());
        let unit_unreachable = code == Some(ServiceErrorCode::UnitUnreachable.as_str());
        if code == Some(ServiceErrorCode::UnitUntrusted.as_str()) {
            return Self::UnitUntrusted(message);
        }
        match status {
            401 | 403 => Self::AccessDenied {
                what: "the request",
                message: format!(
                    "{message}; check the API key given to 'rotor login' (or ROTOR_API_KEY) and its role"
                ),
            },
            502..=504 if unit_unreachable => {
                Self::Unreachable(format!("a crypto unit through {url}: {message}"))
            }
            // A gateway in front of the service that cannot pass the request on.
            502..=504 if reply.is_none() => {
                Self::Unreachable(format!("the service behind {url}: {message}"))
            }
            _ => Self::Failed { status, message },
        }
    }

    /// A unit client's failure, relayed through the service at `url`.
    fn from_unit(url: &str, err: ClientError) -> Self {
        match err {
            ClientError::Unreachable(why) => Self::Unreachable(format!("the service: {why}")),
            ClientError::Relay { status, body } => Self::from_reply(url, status, body.as_bytes()),
            ClientError::Rejected(body) => Self::UnitRefused(body),
            ClientError::NotAuthentic => Self::NotAuthentic,
            other => Self::Unexpected(format!("{url} ({other})")),
        }
    }
}

/// One instance as the service lists it.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct InstanceEntry {
    /// Instance id.
    pub id: Uuid,
    /// Name.
    pub name: String,
    /// Units.
    pub units: Vec<UnitConfig>,
}

#[derive(Deserialize)]
struct InstancesReply {
    instances: Vec<InstanceEntry>,
}

/// How many key versions of an instance sit under one master key (the service builds this
/// reply field by field, so it is mirrored here).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct MasterKeyCount {
    /// The master key.
    pub vp: Vp,
    /// Key versions wrapped under it.
    pub key_versions: u64,
}

#[derive(Deserialize)]
struct KeystoreReply {
    master_keys: Vec<MasterKeyCount>,
}

#[derive(Deserialize)]
struct RotationReply<T> {
    rotation: Option<T>,
}

#[derive(Deserialize)]
struct TokenReply {
    access_token: String,
}

#[derive(Deserialize)]
struct ApiKeysReply {
    api_keys: Vec<ApiKeyView>,
}

#[derive(Deserialize)]
struct RevokedApiKey {
    api_key: ApiKeyView,
}

/// A stored API key just created or rotated, with its value.
#[derive(Deserialize)]
pub struct NewApiKey {
    /// The key.
    pub api_key: ApiKeyView,
    /// Its value, shown this once.
    pub key: Zeroizing<String>,
}

#[derive(Serialize)]
struct BeginRotation {
    from_vp: Vp,
    to_vp: Vp,
    hold_before_promote: bool,
}

/// A connection to the service with one API key; the key is exchanged for a token on first
/// use.
pub struct ServiceClient {
    http: reqwest::Client,
    endpoint: String,
    api_key: String,
    token: OnceLock<String>,
}

impl ServiceClient {
    /// A client for the service at `endpoint` (a trailing slash is ignored), whose HTTPS
    /// certificate chains to `ca_cert` (or, without it, to the system's trusted roots).
    pub fn new(
        endpoint: &str,
        api_key: String,
        ca_cert: Option<&std::path::Path>,
    ) -> Result<Self, ServiceError> {
        let http = match ca_cert {
            Some(ca) => rotor_tls::config::http_client(&rotor_tls::ClientTls::trusting(ca))
                .map_err(|err| ServiceError::Unexpected(format!("--ca-cert: {err}")))?
                .build(),
            None => reqwest::Client::builder().build(),
        }
        .map_err(|err| ServiceError::Unexpected(format!("cannot set up HTTPS: {err}")))?;
        Ok(Self {
            http,
            endpoint: endpoint.trim_end_matches('/').to_owned(),
            api_key,
            token: OnceLock::new(),
        })
    }

    /// The service's base URL.
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// Sends a request; a failure to exchange it is [`ServiceError::Unreachable`].
    async fn send(
        url: &str,
        request: reqwest::RequestBuilder,
    ) -> Result<(u16, axum::body::Bytes), ServiceError> {
        let unreachable =
            |err: reqwest::Error| ServiceError::Unreachable(format!("the service: {url}: {err}"));
        let response = request.send().await.map_err(unreachable)?;
        let status = response.status().as_u16();
        Ok((status, response.bytes().await.map_err(unreachable)?))
    }

    /// A bearer token for the API key.
    async fn token(&self) -> Result<String, ServiceError> {
        if let Some(token) = self.token.get() {
            return Ok(token.clone());
        }
        let url = format!("{}/identity/token", self.endpoint);
        let form = format!(
            "grant_type=urn%3Aibm%3Aparams%3Aoauth%3Agrant-type%3Aapikey&apikey={}",
            form_escape(&self.api_key)
        );
        let request = self
            .http
            .post(&url)
            .header(
                reqwest::header::CONTENT_TYPE,
                "application/x-www-form-urlencoded",
            )
            .body(form);
        let (status, body) = Self::send(&url, request).await?;
        match status {
            200..=299 => {}
            // The token endpoint answers as IBM IAM does: 400 for an unknown API key.
            400..=499 => {
                return Err(ServiceError::AccessDenied {
                    what: "the API key",
                    message: serde_json::from_slice::<ErrorReply>(&body)
                        .map_or_else(|_| "unknown error".to_owned(), |reply| reply.message),
                });
            }
            _ => return Err(ServiceError::from_reply(&url, status, &body)),
        }
        let token: TokenReply = serde_json::from_slice(&body)
            .map_err(|_| ServiceError::Unexpected(format!("the token endpoint {url}")))?;
        let _ = self.token.set(token.access_token.clone());
        Ok(token.access_token)
    }

    /// Calls a route with the bearer token and decodes its JSON answer.
    async fn call<T: DeserializeOwned>(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<&BeginRotation>,
    ) -> Result<T, ServiceError> {
        self.call_with(method, path, body).await
    }

    /// [`Self::call`] with any JSON body.
    async fn call_with<T: DeserializeOwned, B: Serialize>(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<&B>,
    ) -> Result<T, ServiceError> {
        let url = format!("{}{path}", self.endpoint);
        let mut request = self
            .http
            .request(method, &url)
            .bearer_auth(self.token().await?);
        if let Some(body) = body {
            request = request.json(body);
        }
        let (status, reply) = Self::send(&url, request).await?;
        if !(200..300).contains(&status) {
            return Err(ServiceError::from_reply(&url, status, &reply));
        }
        serde_json::from_slice(&reply).map_err(|_| ServiceError::Unexpected(url))
    }

    /// The key event chain of `instance` with its countersignatures.
    pub async fn key_event_chain(
        &self,
        instance: Uuid,
    ) -> Result<rotor_proto::audit::KeyEventChain, ServiceError> {
        let path = format!("/v1/instances/{instance}/audit");
        self.call(reqwest::Method::GET, &path, None).await
    }

    /// The admin chain of `unit` as the service stores it, with the unit's live head signed
    /// over `challenge`.
    pub async fn unit_chain(
        &self,
        instance: Uuid,
        unit: Uuid,
        challenge: &[u8],
    ) -> Result<rotor_proto::audit::AuditBatch, ServiceError> {
        let path = format!(
            "/v1/instances/{instance}/units/{unit}/audit?challenge={}",
            hex::encode(challenge)
        );
        self.call(reqwest::Method::GET, &path, None).await
    }

    /// Instances and their units.
    pub async fn instances(&self) -> Result<Vec<InstanceEntry>, ServiceError> {
        let reply: InstancesReply = self
            .call(reqwest::Method::GET, "/v1/instances", None)
            .await?;
        Ok(reply.instances)
    }

    /// How many key versions of `instance` sit under each master key.
    pub async fn keystore(&self, instance: Uuid) -> Result<Vec<MasterKeyCount>, ServiceError> {
        let path = format!("/v1/instances/{instance}/keystore");
        let reply: KeystoreReply = self.call(reqwest::Method::GET, &path, None).await?;
        Ok(reply.master_keys)
    }

    /// The instance's rotation journal with live progress, if there ever was a rotation.
    pub async fn rotation(&self, instance: Uuid) -> Result<Option<RotationView>, ServiceError> {
        let path = format!("/v1/instances/{instance}/rotation");
        let reply: RotationReply<RotationView> =
            self.call(reqwest::Method::GET, &path, None).await?;
        Ok(reply.rotation)
    }

    /// Starts or resumes reencryption of key storage from `from` to `to`.
    pub async fn begin_rotation(
        &self,
        instance: Uuid,
        from: Vp,
        to: Vp,
        hold_before_promote: bool,
    ) -> Result<Option<Journal>, ServiceError> {
        let path = format!("/v1/instances/{instance}/rotation");
        let body = BeginRotation {
            from_vp: from,
            to_vp: to,
            hold_before_promote,
        };
        let reply: RotationReply<Journal> =
            self.call(reqwest::Method::POST, &path, Some(&body)).await?;
        Ok(reply.rotation)
    }

    /// Rewraps key storage back to the old master key (every unit accepted the abort).
    pub async fn abort_rotation(&self, instance: Uuid) -> Result<Option<Journal>, ServiceError> {
        let path = format!("/v1/instances/{instance}/rotation/abort");
        let reply: RotationReply<Journal> = self.call(reqwest::Method::POST, &path, None).await?;
        Ok(reply.rotation)
    }

    /// Closes the rotation once every unit is promoted.
    pub async fn complete_rotation(&self, instance: Uuid) -> Result<Option<Journal>, ServiceError> {
        let path = format!("/v1/instances/{instance}/rotation/complete");
        let reply: RotationReply<Journal> = self.call(reqwest::Method::POST, &path, None).await?;
        Ok(reply.rotation)
    }

    /// The stored API keys the caller may manage.
    pub async fn api_keys(&self) -> Result<Vec<ApiKeyView>, ServiceError> {
        let reply: ApiKeysReply = self.call(reqwest::Method::GET, APIKEYS_PATH, None).await?;
        Ok(reply.api_keys)
    }

    /// Creates a stored API key; the answer holds its value, shown this once.
    pub async fn create_api_key(
        &self,
        name: &str,
        role: Role,
        instances: &[String],
    ) -> Result<NewApiKey, ServiceError> {
        let body = serde_json::json!({ "name": name, "role": role, "instances": instances });
        self.call_with(reqwest::Method::POST, APIKEYS_PATH, Some(&body))
            .await
    }

    /// Gives a stored API key a new value; the answer holds it, shown this once.
    pub async fn rotate_api_key(&self, id: Uuid) -> Result<NewApiKey, ServiceError> {
        let path = format!("{APIKEYS_PATH}/{id}/rotate");
        self.call(reqwest::Method::POST, &path, None).await
    }

    /// Revokes a stored API key.
    pub async fn revoke_api_key(&self, id: Uuid) -> Result<ApiKeyView, ServiceError> {
        let path = format!("{APIKEYS_PATH}/{id}");
        let reply: RevokedApiKey = self.call(reqwest::Method::DELETE, &path, None).await?;
        Ok(reply.api_key)
    }

    /// A unit of `instance`, reached through the service's relay.
    async fn unit(&self, instance: Uuid, unit: Uuid) -> Result<(String, UnitClient), ServiceError> {
        let base = format!("{}/v1/instances/{instance}/units/{unit}", self.endpoint);
        let client =
            UnitClient::new(self.http.clone(), base.clone(), unit).with_bearer(self.token().await?);
        Ok((base, client))
    }

    /// A unit's status, signed by the identity it presents (whether that is the enrolled one
    /// is the caller's check).
    pub async fn unit_status(
        &self,
        instance: Uuid,
        unit: Uuid,
    ) -> Result<UnitStatus, ServiceError> {
        let (base, client) = self.unit(instance, unit).await?;
        client
            .status(None)
            .await
            .map_err(|err| ServiceError::from_unit(&base, err))
    }

    /// Sends a signed command to a unit; its answer must be signed by `identity`.
    pub async fn unit_command(
        &self,
        instance: Uuid,
        unit: Uuid,
        identity: &PublicKey,
        command: SignedCommand,
    ) -> Result<(Outcome, UnitStatus), ServiceError> {
        let (base, client) = self.unit(instance, unit).await?;
        client
            .command(identity, command)
            .await
            .map_err(|err| ServiceError::from_unit(&base, err))
    }
}

/// Escapes a value for an `application/x-www-form-urlencoded` body.
fn form_escape(value: &str) -> String {
    value
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                char::from(b).to_string()
            }
            other => format!("%{other:02X}"),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn service_answers_are_classified_by_status_and_code() {
        let url = "http://service/v1/x";
        let denied = ServiceError::from_reply(
            url,
            403,
            br#"{"errorCode":"role_insufficient","errorMessage":"needs the Manager role"}"#,
        );
        assert!(
            matches!(&denied, ServiceError::AccessDenied { message, .. } if message.contains("needs the Manager role (role_insufficient)")),
            "{denied}"
        );
        let down = ServiceError::from_reply(
            url,
            502,
            br#"{"code":"unit_unreachable","message":"unit u did not answer"}"#,
        );
        assert!(matches!(down, ServiceError::Unreachable(_)), "{down}");
        let conflict = ServiceError::from_reply(
            url,
            409,
            br#"{"code":"rotation_open","message":"another rotation is open"}"#,
        );
        assert_eq!(
            conflict.to_string(),
            "the service answered 409: another rotation is open (rotation_open)"
        );
        let failed = ServiceError::from_reply(url, 500, b"oops");
        assert!(matches!(failed, ServiceError::Failed { status: 500, .. }));
    }

    #[test]
    fn form_values_are_escaped() {
        assert_eq!(form_escape("a b&c=d"), "a%20b%26c%3Dd");
    }
}

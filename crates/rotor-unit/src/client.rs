//! Talking to a unit, directly or through the service's relay, with every response checked
//! against the unit's identity key.

use rotor_crypto::{PublicKey, fill_random};
use uuid::Uuid;

use crate::error::{ErrorBody, UnitError};
use crate::wire::{CommandRequest, Outcome, SignedCommand, SignedResponse, UnitResult, UnitStatus};

/// Why a unit request did not produce a verified answer.
#[derive(Debug)]
#[non_exhaustive]
pub enum ClientError {
    /// No HTTP exchange happened.
    Unreachable(String),
    /// Something other than the unit answered (the relay, a proxy) with an error.
    Relay {
        /// HTTP status.
        status: u16,
        /// Body text.
        body: String,
    },
    /// The unit verified the request and refused it; nothing changed.
    Rejected(ErrorBody),
    /// The response is not signed by the expected identity or does not answer this request.
    NotAuthentic,
    /// The unit presents a different identity key than the one expected.
    IdentityChanged {
        /// The unit.
        unit: Uuid,
    },
}

impl std::fmt::Display for ClientError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Unreachable(why) => write!(f, "cannot reach the service: {why}"),
            Self::Relay { status, body } => write!(f, "the service answered {status}: {body}"),
            Self::Rejected(body) => write!(f, "{} ({})", body.message, body.code),
            Self::NotAuthentic => f.write_str(&UnitError::ResponseNotAuthentic.to_string()),
            Self::IdentityChanged { unit } => write!(
                f,
                "unit {unit} presents a different identity key than the one expected; refusing it"
            ),
        }
    }
}

impl std::error::Error for ClientError {}

/// A connection to one unit.
#[derive(Debug, Clone)]
pub struct UnitClient {
    http: reqwest::Client,
    base: String,
    unit: Uuid,
    bearer: Option<String>,
}

fn challenge() -> Vec<u8> {
    let mut bytes = vec![0u8; 16];
    fill_random(&mut bytes);
    bytes
}

impl UnitClient {
    /// `base` is the URL under which `/status` and `/command` are served: a unit's own
    /// `https://ADDR/v1`, or the service's `.../v1/instances/ID/units/ID`.
    pub fn new(http: reqwest::Client, base: String, unit: Uuid) -> Self {
        Self {
            http,
            base,
            unit,
            bearer: None,
        }
    }

    /// Presents `token` to the service on every request.
    pub fn with_bearer(mut self, token: String) -> Self {
        self.bearer = Some(token);
        self
    }

    /// The unit this client talks to.
    pub fn unit(&self) -> Uuid {
        self.unit
    }

    async fn exchange(
        &self,
        request: reqwest::RequestBuilder,
    ) -> Result<SignedResponse, ClientError> {
        let request = match &self.bearer {
            Some(token) => request.bearer_auth(token),
            None => request,
        };
        let response = request
            .send()
            .await
            .map_err(|err| ClientError::Unreachable(err.to_string()))?;
        let status = response.status().as_u16();
        let body = response
            .bytes()
            .await
            .map_err(|err| ClientError::Unreachable(err.to_string()))?;
        serde_json::from_slice(&body).map_err(|_| ClientError::Relay {
            status,
            body: String::from_utf8_lossy(&body).chars().take(500).collect(),
        })
    }

    /// Queries the unit. With `pinned` the response must be signed by that key; without, it must
    /// be signed by the identity key it reports, which the caller must then check against the
    /// unit's enrollment ([`crate::trust::Enrollment`]).
    pub async fn status(&self, pinned: Option<&PublicKey>) -> Result<UnitStatus, ClientError> {
        let challenge = challenge();
        let url = format!("{}/status?challenge={}", self.base, hex::encode(&challenge));
        let signed = self.exchange(self.http.get(url)).await?;
        let claimed = match signed
            .open_unverified()
            .map_err(|_| ClientError::NotAuthentic)?
            .result
        {
            UnitResult::Status(status) => status.identity,
            UnitResult::Rejected(body) => return Err(ClientError::Rejected(body)),
            UnitResult::Applied { .. } => return Err(ClientError::NotAuthentic),
        };
        if pinned.is_some_and(|pinned| *pinned != claimed) {
            return Err(ClientError::IdentityChanged { unit: self.unit });
        }
        let identity = pinned.unwrap_or(&claimed);
        let payload = signed
            .verify(identity, self.unit, &challenge)
            .map_err(|_| ClientError::NotAuthentic)?;
        match payload.result {
            UnitResult::Status(status) if status.unit == self.unit => Ok(status),
            _ => Err(ClientError::NotAuthentic),
        }
    }

    /// Sends a signed command; the response must be signed by `identity`.
    pub async fn command(
        &self,
        identity: &PublicKey,
        signed: SignedCommand,
    ) -> Result<(Outcome, UnitStatus), ClientError> {
        let challenge = challenge();
        let request = CommandRequest {
            challenge: challenge.clone(),
            signed,
        };
        let url = format!("{}/command", self.base);
        let response = self.exchange(self.http.post(url).json(&request)).await?;
        let payload = response
            .verify(identity, self.unit, &challenge)
            .map_err(|_| ClientError::NotAuthentic)?;
        match payload.result {
            UnitResult::Applied { outcome, status } => Ok((outcome, status)),
            UnitResult::Rejected(body) => Err(ClientError::Rejected(body)),
            UnitResult::Status(_) => Err(ClientError::NotAuthentic),
        }
    }
}

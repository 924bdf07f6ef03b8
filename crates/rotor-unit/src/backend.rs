//! How the service reaches a unit's key operations, behind one trait with two implementations:
//! [`HttpUnit`], a unit process over the network, and [`Unit`] itself, called in process (tests
//! and models run the service against units in milliseconds this way). [`UnitLink`] holds
//! either, so a pool of units can mix them.

use std::sync::Arc;

use axum::http::header;
use rotor_crypto::fill_random;
use rotor_proto::audit::AuditBatch;
use rotor_proto::error::ErrorCode;
use rotor_proto::keyops::{BATCH_CONTENT_TYPE, Encoding};
use rotor_proto::wire::{ErrorBody, SignedResponse, UnitResult, UnitStatus};

use crate::daemon::{Served, Unit};

/// Why a key operation did not produce an answer.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum CallError {
    /// The unit did not answer, or answered something that is not a reply.
    Unreachable(String),
    /// The unit answered with a refusal.
    Refused(ErrorBody),
}

impl CallError {
    /// The unit's code, when it refused.
    pub fn code(&self) -> Option<ErrorCode> {
        match self {
            Self::Refused(body) => Some(body.code),
            Self::Unreachable(_) => None,
        }
    }
}

impl std::fmt::Display for CallError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Unreachable(why) => write!(f, "crypto unit unreachable: {why}"),
            Self::Refused(body) => write!(f, "{} ({})", body.message, body.code),
        }
    }
}

impl std::error::Error for CallError {}

/// One unit's key operations, wherever the unit runs.
pub trait UnitBackend: Send + Sync {
    /// Runs one key operation.
    fn call<Op: Served>(
        &self,
        request: &Op,
    ) -> impl Future<Output = Result<Op::Reply, CallError>> + Send;

    /// The unit's status (registers, VPs, rotation lock).
    fn status(&self) -> impl Future<Output = Result<UnitStatus, CallError>> + Send;

    /// The unit's admin chain after entry `after`, with its live head signed over `challenge`.
    fn audit(
        &self,
        after: u64,
        challenge: Vec<u8>,
    ) -> impl Future<Output = Result<AuditBatch, CallError>> + Send;
}

impl UnitBackend for Unit {
    async fn call<Op: Served>(&self, request: &Op) -> Result<Op::Reply, CallError> {
        Unit::call(self, request).await.map_err(CallError::Refused)
    }

    async fn status(&self) -> Result<UnitStatus, CallError> {
        Ok(Unit::status(self).await)
    }

    async fn audit(&self, after: u64, challenge: Vec<u8>) -> Result<AuditBatch, CallError> {
        Ok(Unit::audit(self, after, challenge).await)
    }
}

/// `request` with the correlation id of the request this task serves, if any, so that the
/// unit's log lines for it carry the same id as the service's.
pub fn correlated(request: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
    match rotor_telemetry::correlation::current() {
        Some(id) => request.header(rotor_telemetry::correlation::HEADER, id.header_value()),
        None => request,
    }
}

/// A unit process, reached over HTTPS with mutual TLS: the client presents the service
/// certificate of the unit's instance and accepts only that instance's unit certificate (see
/// [`HttpUnit::client_tls`]).
#[derive(Clone, Debug)]
pub struct HttpUnit {
    http: reqwest::Client,
    base: Arc<str>,
}

impl HttpUnit {
    /// A client for the unit at `address`; `http` must carry the TLS of
    /// [`HttpUnit::client_tls`].
    pub fn new(http: reqwest::Client, address: std::net::SocketAddr) -> Self {
        Self {
            http,
            base: format!("https://{address}/v1").into(),
        }
    }

    /// The TLS a client of unit `unit` of `instance` needs: the deployment CA and its revocation
    /// list, and the service's certificate for that instance.
    pub fn client_tls(
        ca: &std::path::Path,
        crl: Option<&std::path::Path>,
        service_cert: (&std::path::Path, &std::path::Path),
        instance: uuid::Uuid,
        unit: uuid::Uuid,
    ) -> rotor_tls::ClientTls {
        rotor_tls::ClientTls {
            ca: ca.to_owned(),
            crl: crl.map(std::path::Path::to_owned),
            identity: Some((service_cert.0.to_owned(), service_cert.1.to_owned())),
            expected: rotor_tls::ExpectedPeer::UnitOf { instance, unit },
        }
    }

    /// The HTTP client (with its TLS) this unit is reached with.
    pub fn http(&self) -> &reqwest::Client {
        &self.http
    }

    /// `https://ADDRESS/v1`.
    pub fn base(&self) -> &str {
        &self.base
    }

    async fn send(
        &self,
        name: &str,
        body: Vec<u8>,
        content_type: &'static str,
    ) -> Result<axum::body::Bytes, CallError> {
        let unreachable = |err: reqwest::Error| CallError::Unreachable(err.to_string());
        let response = correlated(self.http.post(format!("{}/keys/{name}", self.base)))
            .header(header::CONTENT_TYPE, content_type)
            .body(body)
            .send()
            .await
            .map_err(unreachable)?;
        let status = response.status();
        let body = response.bytes().await.map_err(unreachable)?;
        if status.is_success() {
            return Ok(body);
        }
        Err(match serde_json::from_slice(&body) {
            Ok(refusal) => CallError::Refused(refusal),
            Err(_) => CallError::Unreachable(format!(
                "the unit answered {status}: {}",
                String::from_utf8_lossy(&body)
                    .chars()
                    .take(300)
                    .collect::<String>()
            )),
        })
    }
}

impl UnitBackend for HttpUnit {
    async fn call<Op: Served>(&self, request: &Op) -> Result<Op::Reply, CallError> {
        let bad_request =
            |err: &dyn std::fmt::Display| CallError::Unreachable(format!("request: {err}"));
        let bad_answer =
            |err: &dyn std::fmt::Display| CallError::Unreachable(format!("bad answer: {err}"));
        match Op::ENCODING {
            Encoding::Json => {
                let body = serde_json::to_vec(request).map_err(|err| bad_request(&err))?;
                let answer = self.send(Op::NAME, body, "application/json").await?;
                serde_json::from_slice(&answer).map_err(|err| bad_answer(&err))
            }
            // Batches carry thousands of blobs: postcard costs far less than JSON.
            Encoding::Postcard => {
                let body = postcard::to_stdvec(request).map_err(|err| bad_request(&err))?;
                let answer = self.send(Op::NAME, body, BATCH_CONTENT_TYPE).await?;
                postcard::from_bytes(&answer).map_err(|err| bad_answer(&err))
            }
        }
    }

    /// The unit's status, signed by the identity key it reports, for this request's challenge
    /// (whether that identity is the right one is the caller's check: see
    /// [`crate::trust::Enrollment`]).
    async fn status(&self) -> Result<UnitStatus, CallError> {
        let mut challenge = [0u8; 16];
        fill_random(&mut challenge);
        let url = format!("{}/status?challenge={}", self.base, hex::encode(challenge));
        let unreachable = |err: &dyn std::fmt::Display| CallError::Unreachable(err.to_string());
        let signed: SignedResponse = correlated(self.http.get(url))
            .send()
            .await
            .map_err(|err| unreachable(&err))?
            .json()
            .await
            .map_err(|err| unreachable(&err))?;
        let claimed = signed.open_unverified().map_err(|err| unreachable(&err))?;
        let UnitResult::Status(status) = claimed.result else {
            return Err(CallError::Unreachable(
                "the unit did not answer with its status".to_owned(),
            ));
        };
        let verified = signed
            .verify(&status.identity, claimed.unit, &challenge)
            .map_err(|err| unreachable(&err))?;
        match verified.result {
            UnitResult::Status(status) if status.unit == claimed.unit => Ok(status),
            _ => Err(CallError::Unreachable(
                "the unit's status does not verify".to_owned(),
            )),
        }
    }

    async fn audit(&self, after: u64, challenge: Vec<u8>) -> Result<AuditBatch, CallError> {
        let unreachable = |err: &dyn std::fmt::Display| CallError::Unreachable(err.to_string());
        let url = format!(
            "{}/audit?after={after}&challenge={}",
            self.base,
            hex::encode(challenge)
        );
        let response = correlated(self.http.get(url))
            .send()
            .await
            .map_err(|err| unreachable(&err))?;
        let status = response.status();
        let body = response.bytes().await.map_err(|err| unreachable(&err))?;
        if status.is_success() {
            return serde_json::from_slice(&body).map_err(|err| unreachable(&err));
        }
        Err(match serde_json::from_slice(&body) {
            Ok(refusal) => CallError::Refused(refusal),
            Err(_) => CallError::Unreachable(format!("the unit answered {status}")),
        })
    }
}

/// A unit process or an in-process unit.
#[derive(Clone)]
pub enum UnitLink {
    /// Over HTTP.
    Http(HttpUnit),
    /// In this process.
    InProcess(Unit),
}

impl UnitBackend for UnitLink {
    async fn call<Op: Served>(&self, request: &Op) -> Result<Op::Reply, CallError> {
        match self {
            Self::Http(unit) => unit.call(request).await,
            Self::InProcess(unit) => UnitBackend::call(unit, request).await,
        }
    }

    async fn status(&self) -> Result<UnitStatus, CallError> {
        match self {
            Self::Http(unit) => unit.status().await,
            Self::InProcess(unit) => UnitBackend::status(unit).await,
        }
    }

    async fn audit(&self, after: u64, challenge: Vec<u8>) -> Result<AuditBatch, CallError> {
        match self {
            Self::Http(unit) => unit.audit(after, challenge).await,
            Self::InProcess(unit) => UnitBackend::audit(unit, after, challenge).await,
        }
    }
}

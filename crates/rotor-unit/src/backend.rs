//! How the service reaches a unit's key operations, behind one trait with two implementations:
//! [`HttpUnit`], a unit process over the network, and [`Unit`] itself, called in process (tests
//! and models run the service against units in milliseconds this way). [`UnitLink`] holds
//! either, so a pool of units can mix them.

use std::sync::Arc;

use axum::http::header;
use rotor_crypto::fill_random;
use rotor_proto::audit::AuditBatch;
use rotor_proto::error::ErrorCode;
use std::sync::atomic::{AtomicBool, Ordering};

use rotor_proto::error::ErrorBody;
use rotor_proto::keyops::{
    BATCH_CONTENT_TYPE, BatchedKeyOp, BatchedKeyReply, Encoding, KeyBatch, MAX_KEY_BATCH, UnitOp,
};
use rotor_proto::wire::{SignedResponse, UnitResult, UnitStatus};
use tokio::sync::{Semaphore, mpsc, oneshot};

use crate::daemon::{Served, Unit};

/// Why a key operation did not produce an answer.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum CallError {
    /// The unit did not answer, or answered something that is not a reply.
    Unreachable(String),
    /// The unit answered with a refusal.
    Refused(ErrorBody),
    /// The unit does not serve this operation (a unit of an older version).
    NotServed,
}

impl CallError {
    /// The unit's code, when it refused.
    pub fn code(&self) -> Option<ErrorCode> {
        match self {
            Self::Refused(body) => Some(body.code),
            Self::Unreachable(_) | Self::NotServed => None,
        }
    }
}

impl std::fmt::Display for CallError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Unreachable(why) => write!(f, "crypto unit unreachable: {why}"),
            Self::Refused(body) => write!(f, "{} ({})", body.message, body.code),
            Self::NotServed => f.write_str("the crypto unit does not serve this operation"),
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
///
/// Wraps, unwraps and rewraps do not each make their own exchange: they queue for the unit's
/// [`Coalescer`], which carries whatever is queued as one [`KeyBatch`] over a kept-alive
/// connection, with a few batches in flight at once.
#[derive(Clone, Debug)]
pub struct HttpUnit {
    http: reqwest::Client,
    base: Arc<str>,
    /// The queue of the unit's coalescing task, started by the first wrap, unwrap or rewrap.
    queue: Arc<std::sync::OnceLock<mpsc::UnboundedSender<Queued>>>,
    /// Set when the unit has no batch route (an older unit): requests then go one by one.
    unbatched: Arc<AtomicBool>,
}

/// A key operation waiting in a [`Coalescer`], with where its answer goes.
struct Queued {
    op: BatchedKeyOp,
    answer: oneshot::Sender<Result<BatchedKeyReply, CallError>>,
}

/// Batches of one unit on their way at once, each on its own kept-alive connection.
///
/// The coalescing task takes the first queued request, waits until fewer than this many
/// batches are on their way, takes everything queued meanwhile (up to [`MAX_KEY_BATCH`]), lets
/// the other tasks run once so that requests arriving at this moment join, and sends the batch.
/// An idle service thus sends a lone request at once, and a busy one ever fuller batches: the
/// wait for company is bounded by one turn of the scheduler, not by a timer (tokio's timers
/// tick in milliseconds, far more than a request should wait).
const BATCHES_IN_FLIGHT: usize = 4;

impl HttpUnit {
    /// A client for the unit at `address`; `http` must carry the TLS of
    /// [`HttpUnit::client_tls`].
    pub fn new(http: reqwest::Client, address: std::net::SocketAddr) -> Self {
        Self {
            http,
            base: format!("https://{address}/v1").into(),
            queue: Arc::default(),
            unbatched: Arc::default(),
        }
    }

    /// Runs a wrap, unwrap or rewrap through the unit's coalescer.
    async fn call_batched(&self, op: BatchedKeyOp) -> Result<BatchedKeyReply, CallError> {
        let queue = self.queue.get_or_init(|| {
            let (queue, queued) = mpsc::unbounded_channel();
            // The task's copy has a queue of its own, never started: when the last clone that
            // holds this queue is dropped, the queue closes and the task ends.
            let sender = Self {
                http: self.http.clone(),
                base: self.base.clone(),
                queue: Arc::default(),
                unbatched: self.unbatched.clone(),
            };
            tokio::spawn(coalesce(sender, queued));
            queue
        });
        let (answer, answered) = oneshot::channel();
        queue
            .send(Queued { op, answer })
            .map_err(|_| CallError::Unreachable("the unit's request queue closed".to_owned()))?;
        answered
            .await
            .map_err(|_| CallError::Unreachable("the unit's batch was dropped".to_owned()))?
    }

    /// Sends one batch and hands each waiting caller its own answer. A unit without the batch
    /// route (404) is asked item by item, now and from then on.
    async fn send_batch(&self, batch: Vec<Queued>) {
        let (ops, answers): (Vec<_>, Vec<_>) = batch
            .into_iter()
            .map(|queued| (queued.op, queued.answer))
            .unzip();
        let request = KeyBatch { items: ops };
        match self.call_one(&request).await {
            Ok(result) if result.items.len() == answers.len() => {
                for (answer, item) in answers.into_iter().zip(result.items) {
                    let _ = answer.send(item.map_err(CallError::Refused));
                }
            }
            Ok(_) => {
                let why = CallError::Unreachable(
                    "the unit answered a batch with another number of items".to_owned(),
                );
                for answer in answers {
                    let _ = answer.send(Err(why.clone()));
                }
            }
            Err(CallError::NotServed) => {
                tracing::warn!(
                    "the crypto unit has no batch route (an older version): sending its key operations one by one"
                );
                self.unbatched.store(true, Ordering::Relaxed);
                for (answer, op) in answers.into_iter().zip(request.items) {
                    let reply = match op {
                        BatchedKeyOp::Wrap(op) => {
                            self.call_one(&op).await.map(BatchedKeyReply::Wrapped)
                        }
                        BatchedKeyOp::Unwrap(op) => {
                            self.call_one(&op).await.map(BatchedKeyReply::Plaintext)
                        }
                        BatchedKeyOp::Rewrap(op) => {
                            self.call_one(&op).await.map(BatchedKeyReply::Wrapped)
                        }
                    };
                    let _ = answer.send(reply);
                }
            }
            Err(err) => {
                for answer in answers {
                    let _ = answer.send(Err(err.clone()));
                }
            }
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
            // A route the unit does not have: an older unit without this operation.
            Err(_) if status == reqwest::StatusCode::NOT_FOUND => CallError::NotServed,
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

/// Requests per batch the coalescers sent, over every unit: how much company requests find.
static BATCH_SIZE: std::sync::LazyLock<Option<prometheus::Histogram>> =
    std::sync::LazyLock::new(|| {
        rotor_telemetry::metrics::histogram(
            "rotor_unit_key_batch_size",
            "Wrap, unwrap and rewrap requests carried to a crypto unit in one batch",
            vec![1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0],
        )
    });

/// The coalescing task of one unit: see [`BATCHES_IN_FLIGHT`].
async fn coalesce(unit: HttpUnit, mut queued: mpsc::UnboundedReceiver<Queued>) {
    let in_flight = Arc::new(Semaphore::new(BATCHES_IN_FLIGHT));
    while let Some(first) = queued.recv().await {
        let Ok(permit) = in_flight.clone().acquire_owned().await else {
            return;
        };
        let mut batch = vec![first];
        for turn in 0..2 {
            while batch.len() < MAX_KEY_BATCH {
                match queued.try_recv() {
                    Ok(next) => batch.push(next),
                    Err(_) => break,
                }
            }
            if turn == 0 && batch.len() < MAX_KEY_BATCH {
                tokio::task::yield_now().await;
            }
        }
        if let Some(sizes) = BATCH_SIZE.as_ref() {
            sizes.observe(batch.len() as f64);
        }
        let unit = unit.clone();
        tokio::spawn(async move {
            unit.send_batch(batch).await;
            drop(permit);
        });
    }
}

impl HttpUnit {
    /// One exchange for one operation.
    async fn call_one<Op: UnitOp>(&self, request: &Op) -> Result<Op::Reply, CallError> {
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
}

impl UnitBackend for HttpUnit {
    async fn call<Op: Served>(&self, request: &Op) -> Result<Op::Reply, CallError> {
        if !self.unbatched.load(Ordering::Relaxed)
            && let Some(op) = request.batched()
        {
            let reply = self.call_batched(op).await?;
            return Op::unbatched(reply).ok_or_else(|| {
                CallError::Unreachable("the unit answered another kind of reply".to_owned())
            });
        }
        self.call_one(request).await
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

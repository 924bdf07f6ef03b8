//! The units of every instance, and the one failover policy for reaching them: which unit
//! serves a key operation, when to skip to the next, when to give up, and when to try again
//! with freshly read blobs. The Key Protect routes, application-held blobs and the rotation
//! engine all go through here.
//!
//! Every status the pool reads is signed by the unit; with a keystore to remember units in
//! ([`UnitPool::with_trust`]), the signer must be the identity the configuration names (or, if
//! it names none, the one met first) and the transaction counter must never go backwards. A
//! unit that fails either check is unusable, for key operations too, until a status passes.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use rotor_crypto::Fingerprint;

use rotor_proto::error::ErrorBody;
use rotor_proto::error::ErrorCode;
use rotor_proto::keyops::{FinishReencryption, ForgetKey, RewrapBatch, RewrapBatchResult};
use rotor_proto::wire::UnitStatus;
use rotor_store::{KeyStore, UnitRecord};
use rotor_unit::backend::{CallError, UnitBackend, UnitLink};
use rotor_unit::daemon::Served;
use rotor_unit::trust::{Enrollment, TrustRefusal};
use rotor_util::blocking;
use uuid::Uuid;

use crate::metrics;

/// How long the rotation engine waits before it asks the units again when none could rewrap.
const RETRY_PAUSE: Duration = Duration::from_millis(500);
/// How often the service reads every unit's signed status, so a unit restarted on an older
/// copy of its state, or replaced, is noticed without waiting for an admin request.
const CHECK_INTERVAL: Duration = Duration::from_secs(30);

/// One unit of an instance.
#[derive(Clone)]
pub struct PoolUnit {
    /// The unit's id.
    pub id: Uuid,
    /// Operational units serve key operations and rewrap batches; every unit, recovery units
    /// included, is told when a reencryption finishes.
    pub operational: bool,
    /// How to reach it.
    pub link: UnitLink,
}

struct InstanceUnits {
    units: Vec<PoolUnit>,
    /// The operational ones among them, kept apart so the hot path allocates nothing.
    operational: Vec<PoolUnit>,
    /// Where the next key operation starts, so load spreads over the units.
    next: AtomicUsize,
}

/// Why the pool could not get an answer.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum PoolError {
    /// The service has no such instance.
    UnknownInstance(Uuid),
    /// The instance has no operational unit.
    NoOperationalUnit,
    /// A unit refused the request itself (a ciphertext that does not authenticate, a size it
    /// refuses, no pinned new master key): every other unit would answer the same.
    Refused(ErrorBody),
    /// No unit could serve it: none reachable, or none holds the master key it needs.
    Unavailable {
        /// The last unit's answer, for the log and the message.
        last: String,
    },
    /// A unit failed a request that every unit must answer.
    UnitFailed {
        /// The unit.
        unit: Uuid,
        /// Its answer, or why there was none.
        why: CallError,
    },
    /// A unit's signed status shows another identity or a counter that went backwards: the
    /// unit is unusable.
    Untrusted {
        /// The unit.
        unit: Uuid,
        /// What its status shows.
        why: String,
    },
}

impl std::fmt::Display for PoolError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::UnknownInstance(id) => write!(f, "instance {id} does not exist on this service"),
            Self::NoOperationalUnit => f.write_str("this instance has no operational crypto unit"),
            Self::Refused(body) => write!(f, "{} ({})", body.message, body.code),
            Self::Unavailable { last } => write!(
                f,
                "no crypto unit of this instance could serve the request: none has a usable current master key or none is reachable (last: {last})"
            ),
            Self::UnitFailed { unit, why } => write!(f, "unit {unit}: {why}"),
            Self::Untrusted { unit, why } => write!(
                f,
                "crypto unit {unit} is refused and unusable: {why}; restore its latest state, or if it was replaced on purpose, enroll the new identity in the service configuration"
            ),
        }
    }
}

impl std::error::Error for PoolError {}

/// Whether a unit's refusal is about the request itself, so that no other unit is asked.
fn ends_the_search(code: ErrorCode) -> bool {
    matches!(
        code,
        ErrorCode::InvalidCiphertext
            | ErrorCode::BadSize
            | ErrorCode::NotExtractable
            | ErrorCode::BadRequest
            | ErrorCode::NoNewMasterKey
    )
}

/// What the pool checks units' statuses against.
struct Trust {
    /// Each unit's pinned identity and last counter, shared by the service's replicas.
    store: Arc<dyn KeyStore>,
    /// The identity fingerprints the configuration names.
    configured: HashMap<Uuid, Fingerprint>,
}

/// The units of every instance.
#[derive(Clone, Default)]
pub struct UnitPool {
    instances: Arc<HashMap<Uuid, InstanceUnits>>,
    trust: Option<Arc<Trust>>,
    /// Units whose last status check failed, with why: key operations skip them.
    refused: Arc<RwLock<HashMap<Uuid, String>>>,
}

impl UnitPool {
    /// A pool over the units of each instance.
    pub fn new(instances: HashMap<Uuid, Vec<PoolUnit>>) -> Self {
        let instances = instances
            .into_iter()
            .map(|(id, units)| {
                let operational = units
                    .iter()
                    .filter(|unit| unit.operational)
                    .cloned()
                    .collect();
                let units = InstanceUnits {
                    units,
                    operational,
                    next: AtomicUsize::new(0),
                };
                (id, units)
            })
            .collect();
        Self {
            instances: Arc::new(instances),
            trust: None,
            refused: Arc::default(),
        }
    }

    /// Checks every status against the identities in `store` and `configured` (see the
    /// module documentation), and remembers each unit's identity and counter there.
    pub fn with_trust(
        mut self,
        store: Arc<dyn KeyStore>,
        configured: HashMap<Uuid, Fingerprint>,
    ) -> Self {
        self.trust = Some(Arc::new(Trust { store, configured }));
        self
    }

    /// Why `unit` is refused, if it is.
    fn refusal(&self, unit: Uuid) -> Option<String> {
        self.refused
            .read()
            .ok()
            .and_then(|refused| refused.get(&unit).cloned())
    }

    fn set_refusal(&self, unit: Uuid, why: Option<String>) {
        if let Ok(mut refused) = self.refused.write() {
            match why {
                Some(why) => refused.insert(unit, why),
                None => refused.remove(&unit),
            };
        }
    }

    /// Records what an answer says about `unit` in the metrics: it answered (a refusal
    /// included) and is up unless its status check failed, or it did not answer.
    fn note_answer<T>(&self, instance: Uuid, unit: Uuid, answer: &Result<T, CallError>) {
        match answer {
            Ok(_) => metrics::unit_up(instance, unit, self.refusal(unit).is_none()),
            Err(CallError::Refused(body)) => {
                metrics::unit_up(instance, unit, self.refusal(unit).is_none());
                metrics::refusal(instance, unit, body.code);
            }
            Err(_) => metrics::unit_up(instance, unit, false),
        }
    }

    /// Checks a unit's signed status against its pinned or configured identity and its last
    /// counter, and records the counter. A refusal marks the unit unusable and is logged.
    fn check(&self, unit: Uuid, status: &UnitStatus) -> Result<(), PoolError> {
        let Some(trust) = &self.trust else {
            return Ok(());
        };
        let verdict = blocking(|| -> Result<Result<(), String>, rotor_store::StoreError> {
            if status.unit != unit {
                return Ok(Err(format!("it answers as unit {}", status.unit)));
            }
            let presented = status.identity.fingerprint();
            if let Some(configured) = trust.configured.get(&unit)
                && *configured != presented
            {
                return Ok(Err(TrustRefusal::IdentityChanged {
                    enrolled: *configured,
                    presented,
                }
                .to_string()));
            }
            if let Some(record) = trust.store.unit_record(unit)? {
                let known = Enrollment::new(record.identity.fingerprint(), record.last_counter);
                if let Err(refusal) = known.check(&status.identity, status.counter) {
                    return Ok(Err(refusal.to_string()));
                }
            } else {
                tracing::info!(%unit, fingerprint = %presented, "crypto unit identity pinned on first contact");
            }
            trust.store.note_unit(
                unit,
                &UnitRecord {
                    identity: status.identity.clone(),
                    last_counter: status.counter,
                },
            )?;
            Ok(Ok(()))
        });
        let why = match verdict {
            Ok(Ok(())) => {
                if self.refusal(unit).is_some() {
                    tracing::info!(%unit, "crypto unit passes its status check again; usable");
                }
                self.set_refusal(unit, None);
                return Ok(());
            }
            Ok(Err(why)) => why,
            Err(err) => format!("its record in key storage cannot be read or written: {err}"),
        };
        tracing::error!(%unit, reason = %why, "crypto unit refused: unusable for key operations and rotations");
        self.set_refusal(unit, Some(why.clone()));
        Err(PoolError::Untrusted { unit, why })
    }

    /// Reads and checks every unit's status now and then (see [`CHECK_INTERVAL`]); a refused
    /// unit is logged and skipped until it passes. Runs until the task is aborted.
    pub async fn watch(self) {
        loop {
            for (instance, units) in self.instances.iter() {
                for unit in &units.units {
                    let answer = unit.link.status().await;
                    match &answer {
                        Ok(status) => {
                            let _ = self.check(unit.id, status);
                        }
                        Err(err) => {
                            tracing::debug!(unit = %unit.id, error = %err, "crypto unit status not read");
                        }
                    }
                    self.note_answer(*instance, unit.id, &answer);
                }
            }
            tokio::time::sleep(CHECK_INTERVAL).await;
        }
    }

    /// The instances the pool knows.
    pub fn instances(&self) -> impl Iterator<Item = Uuid> + '_ {
        self.instances.keys().copied()
    }

    /// Whether the pool knows `instance`.
    pub fn contains(&self, instance: Uuid) -> bool {
        self.instances.contains_key(&instance)
    }

    /// Every unit of `instance`.
    pub fn units(&self, instance: Uuid) -> Result<&[PoolUnit], PoolError> {
        self.instances
            .get(&instance)
            .map(|units| units.units.as_slice())
            .ok_or(PoolError::UnknownInstance(instance))
    }

    /// The operational units of `instance`, and where the next key operation starts.
    fn operational(&self, instance: Uuid) -> Result<(&[PoolUnit], usize), PoolError> {
        let found = self
            .instances
            .get(&instance)
            .ok_or(PoolError::UnknownInstance(instance))?;
        if found.operational.is_empty() {
            return Err(PoolError::NoOperationalUnit);
        }
        Ok((
            &found.operational,
            found.next.fetch_add(1, Ordering::Relaxed),
        ))
    }

    /// Runs a key operation on the operational units of `instance`, starting from a rotating
    /// position: a unit that is unreachable or lacks the master key is skipped for the next;
    /// a refusal of the request itself is final.
    pub async fn call<Op: Served>(
        &self,
        instance: Uuid,
        request: &Op,
    ) -> Result<Op::Reply, PoolError> {
        let (units, start) = self.operational(instance)?;
        let mut last = String::new();
        for offset in 0..units.len() {
            let unit = &units[(start + offset) % units.len()];
            if let Some(why) = self.refusal(unit.id) {
                metrics::failover(instance, unit.id);
                last = why;
                continue;
            }
            let answer = unit.link.call(request).await;
            self.note_answer(instance, unit.id, &answer);
            match answer {
                Ok(reply) => return Ok(reply),
                Err(CallError::Refused(body)) if ends_the_search(body.code) => {
                    return Err(PoolError::Refused(body));
                }
                Err(err) => {
                    tracing::warn!(unit = %unit.id, error = %err, "crypto unit could not serve a key operation; trying the next");
                    metrics::failover(instance, unit.id);
                    last = err.to_string();
                }
            }
        }
        Err(PoolError::Unavailable { last })
    }

    /// [`Self::call`] with a request built from stored blobs. When no unit can serve it, the
    /// request is built again and tried once more: a rotation may have rewrapped a blob
    /// between the read and a unit's promotion.
    pub async fn call_fresh<Op: Served, E: From<PoolError>>(
        &self,
        instance: Uuid,
        build: impl Fn() -> Result<Op, E>,
    ) -> Result<Op::Reply, E> {
        match self.call(instance, &build()?).await {
            Err(PoolError::Unavailable { .. }) => Ok(self.call(instance, &build()?).await?),
            other => Ok(other?),
        }
    }

    /// The checked status of every unit of `instance`; every unit must answer and pass.
    pub async fn statuses(&self, instance: Uuid) -> Result<Vec<UnitStatus>, PoolError> {
        let mut statuses = Vec::new();
        for unit in self.units(instance)? {
            let answer = unit.link.status().await;
            let checked = match &answer {
                Ok(status) => self.check(unit.id, status),
                Err(_) => Ok(()),
            };
            self.note_answer(instance, unit.id, &answer);
            let status = answer.map_err(|why| PoolError::UnitFailed { unit: unit.id, why })?;
            checked?;
            statuses.push(status);
        }
        Ok(statuses)
    }

    /// Tells every unit of `instance` that key storage is entirely under `request.to`.
    pub async fn finish_reencryption(
        &self,
        instance: Uuid,
        request: &FinishReencryption,
    ) -> Result<(), PoolError> {
        for unit in self.units(instance)? {
            if let Some(why) = self.refusal(unit.id) {
                return Err(PoolError::Untrusted { unit: unit.id, why });
            }
            unit.link
                .call(request)
                .await
                .map_err(|why| PoolError::UnitFailed { unit: unit.id, why })?;
        }
        Ok(())
    }

    /// Tells every operational unit of `instance` to drop a deleted or purged key from its
    /// cache. Best effort: a unit that cannot be told is logged, and its cache still lets the
    /// key go when it fills up, restarts or changes master key.
    pub async fn forget(&self, instance: Uuid, request: &ForgetKey) {
        let Ok((units, _)) = self.operational(instance) else {
            return;
        };
        for unit in units {
            if let Err(err) = unit.link.call(request).await {
                tracing::warn!(unit = %unit.id, key = %request.key, error = %err, "a crypto unit could not be told to drop a deleted key from its cache");
            }
        }
    }

    /// Rewraps one batch for the rotation engine on the first operational unit that can,
    /// starting with the `first`-th; asks again until one answers (a unit may be restarting).
    /// `None` when every unit wraps under another master key than the batch's target: the
    /// rotation changed direction meanwhile.
    pub async fn rewrap_batch(
        &self,
        instance: Uuid,
        first: usize,
        request: &RewrapBatch,
    ) -> Result<Option<RewrapBatchResult>, PoolError> {
        let (units, _) = self.operational(instance)?;
        loop {
            let mut wrong_target = 0;
            for offset in 0..units.len() {
                let unit = &units[(first + offset) % units.len()];
                if self.refusal(unit.id).is_some() {
                    metrics::failover(instance, unit.id);
                    continue;
                }
                let answer = unit.link.call(request).await;
                self.note_answer(instance, unit.id, &answer);
                match answer {
                    Ok(result) => return Ok(Some(result)),
                    Err(err) if err.code() == Some(ErrorCode::WrongTarget) => wrong_target += 1,
                    Err(err) => {
                        tracing::warn!(unit = %unit.id, error = %err, "a unit could not rewrap a batch; trying the next");
                        metrics::failover(instance, unit.id);
                    }
                }
            }
            if wrong_target == units.len() {
                return Ok(None);
            }
            tokio::time::sleep(RETRY_PAUSE).await;
        }
    }

    /// How many operational units `instance` has, so the engine runs as many workers.
    pub fn operational_count(&self, instance: Uuid) -> usize {
        self.instances
            .get(&instance)
            .map_or(0, |units| units.operational.len())
    }
}

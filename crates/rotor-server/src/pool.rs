//! The units of every instance, and the one failover policy for reaching them: which unit
//! serves a key operation, when to skip to the next, when to give up, and when to try again
//! with freshly read blobs. The Key Protect routes, application-held blobs and the rotation
//! engine all go through here.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use rotor_proto::error::ErrorCode;
use rotor_proto::keyops::{FinishReencryption, ForgetKey, RewrapBatch, RewrapBatchResult};
use rotor_proto::wire::{ErrorBody, UnitStatus};
use rotor_unit::backend::{CallError, UnitBackend, UnitLink};
use rotor_unit::daemon::Served;
use uuid::Uuid;

/// How long the rotation engine waits before it asks the units again when none could rewrap.
const RETRY_PAUSE: Duration = Duration::from_millis(500);

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
    /// refuses, no committed new master key): every other unit would answer the same.
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

/// The units of every instance.
#[derive(Clone, Default)]
pub struct UnitPool {
    instances: Arc<HashMap<Uuid, InstanceUnits>>,
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
            match unit.link.call(request).await {
                Ok(reply) => return Ok(reply),
                Err(CallError::Refused(body)) if ends_the_search(body.code) => {
                    return Err(PoolError::Refused(body));
                }
                Err(err) => {
                    tracing::warn!(unit = %unit.id, error = %err, "crypto unit could not serve a key operation; trying the next");
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

    /// The status of every unit of `instance`; every unit must answer.
    pub async fn statuses(&self, instance: Uuid) -> Result<Vec<UnitStatus>, PoolError> {
        let mut statuses = Vec::new();
        for unit in self.units(instance)? {
            let status = unit
                .link
                .status()
                .await
                .map_err(|why| PoolError::UnitFailed { unit: unit.id, why })?;
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
                match unit.link.call(request).await {
                    Ok(result) => return Ok(Some(result)),
                    Err(err) if err.code() == Some(ErrorCode::WrongTarget) => wrong_target += 1,
                    Err(err) => {
                        tracing::warn!(unit = %unit.id, error = %err, "a unit could not rewrap a batch; trying the next");
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

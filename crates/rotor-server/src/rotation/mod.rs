//! Master key rotation of an instance's key storage, shared by every service replica.
//!
//! [`Journal`] (in `rotor_proto::rotation`, re-exported here) is the durable record of one
//! rotation (from-VP, to-VP, phase, progress, the slices of the current pass) and a pure state
//! machine; [`Rotations`] is the engine that drives it. Each pass over key storage is planned as
//! slices by position; a replica claims a slice under a lease in the store, rewraps every blob
//! of it still under the source master key in batches inside a unit, writes each one back only
//! if it is unchanged meanwhile, and renews the lease after every batch. A replica that stops
//! renewing loses its slice to another one when the lease expires. When every slice is done,
//! one replica (under the lease `rotation:<instance>:finish`) closes the source master key (the
//! store then refuses new key versions under it), counts what is left, and either plans another
//! pass or tells every unit that key storage is reencrypted, so that admins may promote it.
//! Everything lives in the store, so a restarted (or another) replica picks up where one
//! stopped.
//!
//! This module holds [`Rotations`] and its public API (begin, abort, complete, view, resume),
//! [`RotationError`], and the engine's tuning; the work itself is in its children: `pass`
//! (the loop over a rotation's passes and their final step), `slice` (the reader / workers /
//! writer pipeline over one slice), `rewrap` (the rewraps in units: batches of key storage
//! and the import token), `journal` (journal writes and progress) and `leases`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use std::time::{Duration, Instant};

use rotor_crypto::Vp;
use rotor_proto::error::ServiceErrorCode;
pub use rotor_proto::rotation::{
    Journal, JournalConflict, KeystoreView, MasterKeyCount, Phase, RotationView, Start,
};
use rotor_store::{KeyStore, StoreError};

use rotor_unit::wire::{NewState, RotationLock, UnitStatus};
use rotor_util::blocking;
use rotor_util::time::now_ms;

use crate::pool::{PoolError, UnitPool};
use uuid::Uuid;

mod journal;
mod leases;
mod pass;
mod rewrap;
mod slice;

/// Blobs per unit round trip and per keystore transaction.
const BATCH: u32 = 10_000;
/// Batches in flight between the keystore and the units.
const PIPELINE_DEPTH: usize = 4;
/// Pause before retrying when no unit could serve a batch.
const RETRY_PAUSE: Duration = Duration::from_millis(500);
/// How often progress is written to the journal.
const JOURNAL_INTERVAL: Duration = Duration::from_secs(1);
/// Slices a pass is planned in: enough for every replica to hold one and take over another.
const SLICES: u32 = 16;
/// How long a lease on a slice (or on the final step) holds without renewal: how long a slice
/// of a replica that died waits before another one takes it over.
const LEASE_MS: i64 = 5_000;
/// How often replicas look for rotations to work on, and for free slices.
const POLL: Duration = Duration::from_millis(250);

/// Why a rotation request was refused.
#[derive(Debug)]
#[non_exhaustive]
pub enum RotationError {
    /// The request does not fit the instance's state; nothing changed.
    Conflict(String),
    /// A unit did not answer; nothing changed.
    Unreachable(String),
    /// A unit's signed status shows another identity or a rolled-back state; nothing changed.
    Untrusted(String),
    /// No such instance.
    NotFound(String),
    /// The keystore failed.
    Storage(StoreError),
}

impl RotationError {
    /// HTTP status.
    pub fn http_status(&self) -> u16 {
        match self {
            Self::Conflict(_) => 409,
            Self::Unreachable(_) | Self::Untrusted(_) => 502,
            Self::NotFound(_) => 404,
            Self::Storage(_) => 500,
        }
    }

    /// Stable code.
    pub fn code(&self) -> ServiceErrorCode {
        match self {
            Self::Conflict(_) => ServiceErrorCode::RotationConflict,
            Self::Unreachable(_) => ServiceErrorCode::UnitUnreachable,
            Self::Untrusted(_) => ServiceErrorCode::UnitUntrusted,
            Self::NotFound(_) => ServiceErrorCode::NotFound,
            Self::Storage(_) => ServiceErrorCode::Storage,
        }
    }
}

/// The refusal of a change to a rotation when the instance has none on record.
fn no_rotation() -> RotationError {
    RotationError::Conflict("no rotation is on record for this instance".to_owned())
}

impl std::fmt::Display for RotationError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Conflict(why)
            | Self::Unreachable(why)
            | Self::Untrusted(why)
            | Self::NotFound(why) => f.write_str(why),
            Self::Storage(_) => f.write_str("key storage failed"),
        }
    }
}

impl std::error::Error for RotationError {}

impl From<JournalConflict> for RotationError {
    fn from(conflict: JournalConflict) -> Self {
        Self::Conflict(conflict.to_string())
    }
}

impl From<StoreError> for RotationError {
    fn from(err: StoreError) -> Self {
        tracing::error!(error = %err, "key storage failed during a rotation");
        Self::Storage(err)
    }
}

/// Progress of this replica's current run, kept in memory.
#[derive(Clone, Debug, Default)]
struct Live {
    running: bool,
    since: Option<Instant>,
    moved: u64,
}

/// The rotation engine of every instance, on this replica.
#[derive(Clone)]
pub struct Rotations {
    store: Arc<dyn KeyStore>,
    units: UnitPool,
    /// This replica's name in leases.
    replica: Arc<str>,
    live: Arc<Mutex<HashMap<Uuid, Live>>>,
}

impl Rotations {
    /// The engine over `store` and the units of each instance, working as `replica`.
    pub fn new(store: Arc<dyn KeyStore>, units: UnitPool, replica: Arc<str>) -> Self {
        Self {
            store,
            units,
            replica,
            live: Arc::default(),
        }
    }

    fn known(&self, instance: Uuid) -> Result<(), RotationError> {
        if self.units.contains(instance) {
            Ok(())
        } else {
            Err(RotationError::NotFound(format!("no instance {instance}")))
        }
    }

    /// The journal on record.
    pub fn journal(&self, instance: Uuid) -> Result<Option<Journal>, RotationError> {
        Ok(blocking(|| self.store.rotation_journal(instance))?)
    }

    fn count_under(&self, instance: Uuid, vp: &Vp) -> Result<u64, RotationError> {
        Ok(blocking(|| self.store.count_under(instance, vp))?)
    }

    async fn statuses(&self, instance: Uuid) -> Result<Vec<UnitStatus>, RotationError> {
        self.units.statuses(instance).await.map_err(|err| match err {
            PoolError::UnknownInstance(_) => RotationError::NotFound(err.to_string()),
            PoolError::Untrusted { .. } => RotationError::Untrusted(err.to_string()),
            _ => RotationError::Unreachable(format!(
                "{err}; every unit of the instance must be reachable to start or change a rotation"
            )),
        })
    }

    /// Starts the rotation `from` → `to`, or continues the same one. Every unit must have the
    /// new register pinned (or be promoted already).
    /// `hold` records whether the admins hold the rotation before promotion; a resumed
    /// rotation takes the latest request's choice.
    pub async fn begin(
        &self,
        instance: Uuid,
        from: Vp,
        to: Vp,
        hold: bool,
    ) -> Result<Journal, RotationError> {
        Journal::start(self.journal(instance)?.as_ref(), from, to)?;
        for status in self.statuses(instance).await? {
            let promoted = status.current.vp.matches(&to);
            let pinned = status.current.vp.matches(&from)
                && status.new.state == NewState::FullCommitted
                && status.new.vp.matches(&to)
                && matches!(
                    status.rotation,
                    RotationLock::Reencrypting | RotationLock::Reencrypted
                );
            if !(promoted || pinned) {
                return Err(RotationError::Conflict(format!(
                    "unit {} is not ready: current {} ({}), new {} ({}), rotation {}; every unit needs current {from} and new {to} committed and pinned",
                    status.unit,
                    status.current.vp,
                    status.current.state.label(),
                    status.new.vp,
                    status.new.state.label(),
                    status.rotation.label()
                )));
            }
        }
        let total = self.count_under(instance, &from)?;
        // Decided again against the journal as it stands when written: of two replicas asked
        // at once, one begins the rotation and the other resumes it.
        let mut outcome = Err(JournalConflict::SameMasterKey);
        let journal = blocking(|| {
            self.store.update_rotation_journal(instance, &mut |slot| {
                outcome = Journal::start(slot.as_ref(), from, to);
                match (&outcome, slot.as_mut()) {
                    (Ok(Start::New), _) => {
                        let mut journal = Journal::begin(from, to, total, now_ms());
                        journal.hold_before_promote = hold;
                        *slot = Some(journal);
                        Ok(true)
                    }
                    (Ok(Start::Resume), Some(journal)) if journal.hold_before_promote != hold => {
                        journal.hold_before_promote = hold;
                        Ok(true)
                    }
                    _ => Ok(false),
                }
            })
        })?;
        let start = outcome?;
        let journal = journal.ok_or_else(|| {
            RotationError::Conflict("the rotation journal vanished; try again".to_owned())
        })?;
        match start {
            Start::New => {
                tracing::info!(%instance, %from, %to, total, "master key rotation started");
            }
            Start::Resume if journal.phase == Phase::Reencrypted => {
                // A unit that missed the news (restored, or down at the time) hears it now.
                let remaining = self.count_under(instance, &from)?;
                self.tell_units(instance, &to, remaining)
                    .await
                    .map_err(RotationError::Unreachable)?;
            }
            Start::Resume => {}
        }
        self.spawn(instance);
        Ok(journal)
    }

    /// Admins aborted the rotation on every unit: rewrap everything back.
    pub async fn abort(&self, instance: Uuid) -> Result<Journal, RotationError> {
        let journal = self.journal(instance)?.ok_or_else(no_rotation)?;
        for status in self.statuses(instance).await? {
            let released =
                status.rotation == RotationLock::None && status.current.vp.matches(&journal.from);
            if status.rotation != RotationLock::Aborting && !released {
                return Err(RotationError::Conflict(format!(
                    "unit {} has not accepted the abort (rotation {}); sign the abort on every unit first",
                    status.unit,
                    status.rotation.label()
                )));
            }
        }
        let total = self.count_under(instance, &journal.to)?;
        let mut refusal = None;
        let journal = blocking(|| {
            self.store.update_rotation_journal(instance, &mut |slot| {
                let Some(journal) = slot.as_mut() else {
                    refusal = Some(JournalConflict::NothingToAbort);
                    return Ok(false);
                };
                if journal.phase == Phase::Aborting {
                    return Ok(false);
                }
                match journal.abort(total, now_ms()) {
                    Ok(()) => Ok(true),
                    Err(conflict) => {
                        refusal = Some(conflict);
                        Ok(false)
                    }
                }
            })
        })?;
        if let Some(conflict) = refusal {
            return Err(conflict.into());
        }
        let journal = journal.ok_or_else(no_rotation)?;
        tracing::info!(%instance, "master key rotation aborted by admins");
        self.spawn(instance);
        Ok(journal)
    }

    /// Every unit is promoted: the rotation is complete.
    pub async fn complete(&self, instance: Uuid) -> Result<Journal, RotationError> {
        let journal = self.journal(instance)?.ok_or_else(no_rotation)?;
        if journal.phase == Phase::Completed {
            return Ok(journal);
        }
        for status in self.statuses(instance).await? {
            if !status.current.vp.matches(&journal.to) {
                return Err(RotationError::Conflict(format!(
                    "unit {} still has current master key {}; promote it to {} first",
                    status.unit, status.current.vp, journal.to
                )));
            }
        }
        let mut refusal = None;
        let journal = blocking(|| {
            self.store.update_rotation_journal(instance, &mut |slot| {
                let Some(stored) = slot.as_mut() else {
                    return Ok(false);
                };
                if stored.from != journal.from || stored.to != journal.to {
                    refusal = Some(JournalConflict::OtherRotationOpen {
                        from: stored.from,
                        to: stored.to,
                    });
                    return Ok(false);
                }
                match stored.complete(now_ms()) {
                    Ok(()) => Ok(true),
                    Err(conflict) => {
                        refusal = Some(conflict);
                        Ok(false)
                    }
                }
            })
        })?;
        if let Some(conflict) = refusal {
            return Err(conflict.into());
        }
        tracing::info!(%instance, to = %journal_to(journal.as_ref()), "master key rotation completed");
        journal.ok_or_else(no_rotation)
    }

    /// The journal with live progress, and which replicas work on it.
    pub fn view(&self, instance: Uuid) -> Result<Option<RotationView>, RotationError> {
        self.known(instance)?;
        let Some(journal) = self.journal(instance)? else {
            return Ok(None);
        };
        let live = self
            .live
            .lock()
            .ok()
            .and_then(|live| live.get(&instance).cloned())
            .unwrap_or_default();
        let prefix = format!("rotation:{instance}:");
        let mut workers: Vec<String> = blocking(|| self.store.leases(&prefix, now_ms()))?
            .into_iter()
            .map(|lease| lease.holder)
            .collect();
        workers.sort();
        workers.dedup();
        let running = live.running || !workers.is_empty();
        // While replicas work, the journal's count is current (written every second) and
        // costs no scan of the keystore.
        let remaining = match journal.direction() {
            Some(_) if running => journal.total.saturating_sub(journal.done),
            Some((source, _)) => self.count_under(instance, &source)?,
            None => 0,
        };
        let elapsed = live
            .since
            .map_or(0.0, |since| since.elapsed().as_secs_f64());
        #[allow(clippy::cast_precision_loss)] // a rate, shown rounded
        let rate = if elapsed > 0.0 && live.running {
            live.moved as f64 / elapsed
        } else {
            0.0
        };
        #[allow(clippy::cast_precision_loss)]
        let seconds_left = (rate > 0.0).then(|| remaining as f64 / rate);
        Ok(Some(RotationView {
            journal,
            remaining,
            rate,
            seconds_left,
            running,
            workers,
        }))
    }

    /// Joins every rotation the journal says is under way (at service start).
    pub fn resume_all(&self) {
        for instance in self.units.instances() {
            match self.journal(instance) {
                Ok(Some(journal)) if journal.direction().is_some() => {
                    if !self.is_running(instance) {
                        tracing::info!(%instance, phase = journal.phase.label(), "joining master key rotation");
                    }
                    self.spawn(instance);
                }
                Ok(_) => {}
                Err(err) => {
                    tracing::error!(%instance, error = %err, "cannot read rotation journal")
                }
            }
        }
    }

    /// Joins, forever, every rotation another replica begins or resumes.
    pub async fn watch(self) {
        loop {
            tokio::time::sleep(POLL * 4).await;
            self.resume_all();
        }
    }

    fn is_running(&self, instance: Uuid) -> bool {
        self.live
            .lock()
            .ok()
            .is_some_and(|live| live.get(&instance).is_some_and(|entry| entry.running))
    }

    /// Runs the engine for `instance` unless it runs already on this replica.
    fn spawn(&self, instance: Uuid) {
        {
            let Ok(mut live) = self.live.lock() else {
                return;
            };
            let entry = live.entry(instance).or_default();
            if entry.running {
                return;
            }
            *entry = Live {
                running: true,
                since: Some(Instant::now()),
                moved: 0,
            };
        }
        let engine = self.clone();
        tokio::spawn(async move {
            if let Err(err) = engine.run(instance).await {
                tracing::error!(%instance, error = %err, "rotation engine stopped; it resumes when the rotation is run again or the service restarts");
            }
            if let Ok(mut live) = engine.live.lock()
                && let Some(entry) = live.get_mut(&instance)
            {
                entry.running = false;
            }
        });
    }
}

/// For the log: the target master key of a journal.
fn journal_to(journal: Option<&Journal>) -> String {
    journal.map_or_else(String::new, |journal| journal.to.to_string())
}

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

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use std::time::{Duration, Instant};

use rotor_crypto::Vp;
use rotor_proto::keyops::{BatchItem, FinishReencryption, RewrapBatch};
use rotor_proto::rotation::Range;
pub use rotor_proto::rotation::{
    Journal, JournalConflict, KeystoreView, MasterKeyCount, Phase, RotationView, Start,
};
use rotor_store::{BlobReplacement, KeyStore, StoreError, StoredBlob};

use rotor_unit::keys::{Binding, BlobBinding};
use rotor_unit::wire::{NewState, RotationLock, UnitStatus};
use rotor_util::blocking;
use rotor_util::time::now_ms;

use crate::pool::{PoolError, UnitPool};
use tokio::sync::mpsc;
use uuid::Uuid;

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
    pub fn code(&self) -> &'static str {
        match self {
            Self::Conflict(_) => "rotation_conflict",
            Self::Unreachable(_) => "unit_unreachable",
            Self::Untrusted(_) => "unit_untrusted",
            Self::NotFound(_) => "not_found",
            Self::Storage(_) => "storage",
        }
    }
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

/// The name of a lease on the slice of `instance` starting at `lo`.
fn slice_lease(instance: Uuid, lo: i64) -> String {
    format!("rotation:{instance}:slice:{lo}")
}

/// A lease's name as a metric label: slices by their instance only, so that the label set
/// stays small whatever the size of key storage.
fn lease_label(name: &str) -> String {
    name.rsplit_once(":slice:")
        .map_or_else(|| name.to_owned(), |(head, _)| format!("{head}:slice"))
}

/// The name of the lease on the final step of a pass of `instance`.
fn finish_lease(instance: Uuid) -> String {
    format!("rotation:{instance}:finish")
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

    /// Applies `change` to the journal on record, atomically with every other replica, and
    /// stores it if `change` says so; returns whether it did.
    fn update(
        &self,
        instance: Uuid,
        mut change: impl FnMut(&mut Journal) -> bool,
    ) -> Result<bool, RotationError> {
        let mut changed = false;
        let journal = blocking(|| {
            self.store.update_rotation_journal(instance, &mut |slot| {
                changed = slot.as_mut().is_some_and(&mut change);
                Ok(changed)
            })
        })?;
        if let Some(journal) = journal {
            crate::metrics::rotation_progress(instance, journal.phase, journal.total, journal.done);
        }
        Ok(changed)
    }

    fn count_under(&self, instance: Uuid, vp: &Vp) -> Result<u64, RotationError> {
        Ok(blocking(|| self.store.count_under(instance, vp))?)
    }

    fn take_lease(&self, name: &str) -> Result<bool, RotationError> {
        let held = blocking(|| {
            self.store
                .take_lease(name, &self.replica, now_ms(), LEASE_MS)
        })?;
        crate::metrics::lease_held(&lease_label(name), held);
        Ok(held)
    }

    fn release_lease(&self, name: &str) {
        crate::metrics::lease_held(&lease_label(name), false);
        if let Err(err) = blocking(|| self.store.release_lease(name, &self.replica)) {
            // It expires on its own.
            tracing::warn!(lease = name, error = %err, "cannot release a lease");
        }
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
        let journal = self.journal(instance)?.ok_or_else(|| {
            RotationError::Conflict("no rotation is on record for this instance".to_owned())
        })?;
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
        let journal = journal.ok_or_else(|| {
            RotationError::Conflict("no rotation is on record for this instance".to_owned())
        })?;
        tracing::info!(%instance, "master key rotation aborted by admins");
        self.spawn(instance);
        Ok(journal)
    }

    /// Every unit is promoted: the rotation is complete.
    pub async fn complete(&self, instance: Uuid) -> Result<Journal, RotationError> {
        let journal = self.journal(instance)?.ok_or_else(|| {
            RotationError::Conflict("no rotation is on record for this instance".to_owned())
        })?;
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
        journal.ok_or_else(|| {
            RotationError::Conflict("no rotation is on record for this instance".to_owned())
        })
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

    fn note_moved(&self, instance: Uuid, count: u64) {
        if let Ok(mut live) = self.live.lock()
            && let Some(entry) = live.get_mut(&instance)
        {
            entry.moved += count;
        }
    }

    /// Works on the rotation of `instance` until no slice is left for this replica and the
    /// rotation is reencrypted (or aborted), or another replica finishes it.
    async fn run(&self, instance: Uuid) -> Result<(), RotationError> {
        // What the last final count on this replica found left, to notice blobs that no pass
        // can move.
        let mut last_left: Option<u64> = None;
        loop {
            let Some(journal) = self.journal(instance)? else {
                return Ok(());
            };
            let Some((source, target)) = journal.direction() else {
                return Ok(());
            };
            let direction = Some((source, target));
            if journal.ranges.is_empty() && !journal.closing {
                let bounds = blocking(|| self.store.positions_under(instance, &source))?;
                if let Some((lo, hi)) = bounds {
                    self.update(instance, |journal| {
                        journal.direction() == direction && journal.plan(lo, hi, SLICES)
                    })?;
                    continue;
                }
            }
            if let Some(slice) = self.claim_slice(instance, &journal)? {
                let lease = slice_lease(instance, slice.lo);
                let finished = self.rewrap_slice(instance, direction, slice, &lease).await;
                if matches!(finished, Ok(true)) {
                    self.update(instance, |journal| {
                        journal.direction() == direction && journal.finish_range(slice.lo, now_ms())
                    })?;
                }
                self.release_lease(&lease);
                finished?;
                continue;
            }
            if journal.open_ranges().next().is_some() {
                // Other replicas hold the remaining slices: wait for them, or for their
                // leases to expire.
                tokio::time::sleep(POLL).await;
                continue;
            }
            let lease = finish_lease(instance);
            if !self.take_lease(&lease)? {
                tokio::time::sleep(POLL).await;
                continue;
            }
            let outcome = self.finish_pass(instance, direction, &mut last_left).await;
            self.release_lease(&lease);
            if outcome? {
                return Ok(());
            }
        }
    }

    /// Claims an open slice of the current pass whose lease is free.
    fn claim_slice(
        &self,
        instance: Uuid,
        journal: &Journal,
    ) -> Result<Option<Range>, RotationError> {
        for slice in journal.open_ranges() {
            if self.take_lease(&slice_lease(instance, slice.lo))? {
                return Ok(Some(slice));
            }
        }
        Ok(None)
    }

    /// The final step of a pass, under the finish lease: closes the source master key, counts
    /// what is left under it, and either plans another pass or tells every unit that key
    /// storage is reencrypted. Returns whether the rotation left this direction.
    async fn finish_pass(
        &self,
        instance: Uuid,
        direction: Option<(Vp, Vp)>,
        last_left: &mut Option<u64>,
    ) -> Result<bool, RotationError> {
        let Some((source, target)) = direction else {
            return Ok(true);
        };
        moved_tokens(self, instance, &source, &target).await?;
        // From here on the store refuses key versions under the source master key, so the
        // count below misses none, whichever replica stores one.
        let closed = self.update(instance, |journal| {
            let current = journal.direction() == direction;
            if current && !journal.closing {
                journal.close_source(now_ms());
            }
            current
        })?;
        if !closed {
            return Ok(false);
        }
        let remaining = self.count_under(instance, &source)?;
        if remaining > 0 {
            if *last_left == Some(remaining) {
                let why = format!(
                    "{remaining} blob(s) under {source} could not be rewrapped; they do not authenticate or no unit holds both master keys"
                );
                self.note_waiting(instance, direction, why)?;
                tokio::time::sleep(RETRY_PAUSE * 10).await;
            }
            *last_left = Some(remaining);
            // Another pass over what is left (keys stored before the units were pinned,
            // slices whose writes lost a race).
            self.update(instance, |journal| {
                let current = journal.direction() == direction;
                if current {
                    journal.next_pass(now_ms());
                }
                current
            })?;
            let bounds = blocking(|| self.store.positions_under(instance, &source))?;
            if let Some((lo, hi)) = bounds {
                self.update(instance, |journal| {
                    journal.direction() == direction && journal.plan(lo, hi, SLICES)
                })?;
            }
            return Ok(false);
        }
        match self.tell_units(instance, &target, remaining).await {
            Ok(()) => {
                let finished = self.update(instance, |journal| {
                    let current = journal.direction() == direction;
                    if current {
                        journal.source_empty(now_ms());
                    }
                    current
                })?;
                if finished {
                    tracing::info!(%instance, "KMS CRK rewrap successful: no key is left under the old master key");
                }
                Ok(true)
            }
            Err(why) => {
                self.note_waiting(instance, direction, why)?;
                tokio::time::sleep(RETRY_PAUSE).await;
                Ok(false)
            }
        }
    }

    /// Records why the engine waits, unless the journal changed direction meanwhile.
    fn note_waiting(
        &self,
        instance: Uuid,
        direction: Option<(Vp, Vp)>,
        why: String,
    ) -> Result<(), RotationError> {
        self.update(instance, |journal| {
            let current = journal.direction() == direction;
            if current {
                journal.waiting = Some(why.clone());
                journal.updated = now_ms();
            }
            current
        })?;
        Ok(())
    }

    /// Tells every unit that key storage is entirely under `target`, with the keystore's count
    /// of keys still under the source master key (units refuse anything but 0).
    async fn tell_units(&self, instance: Uuid, target: &Vp, remaining: u64) -> Result<(), String> {
        let request = FinishReencryption {
            to: *target,
            remaining,
        };
        self.units
            .finish_reencryption(instance, &request)
            .await
            .map_err(|err| format!("waiting for {err}"))
    }

    /// Rewraps every blob of `slice` still under the source: read, rewrap in a unit, write back
    /// if unchanged; three stages in a pipeline. The lease is renewed after every batch written.
    /// Returns whether the slice was read to its end (false: the lease was lost or the
    /// direction changed).
    async fn rewrap_slice(
        &self,
        instance: Uuid,
        direction: Option<(Vp, Vp)>,
        slice: Range,
        lease: &str,
    ) -> Result<bool, RotationError> {
        let Some((source, target)) = direction else {
            return Ok(false);
        };
        let units = self.units.operational_count(instance);
        if units == 0 {
            return Err(RotationError::Conflict(
                "the instance has no operational unit to rewrap key storage".to_owned(),
            ));
        }
        let (read_tx, read_rx) = mpsc::channel::<Vec<StoredBlob>>(PIPELINE_DEPTH);
        let (done_tx, mut done_rx) = mpsc::channel::<Vec<BlobReplacement>>(PIPELINE_DEPTH);

        let store = Arc::clone(&self.store);
        let started = Instant::now();
        let reader = tokio::task::spawn_blocking(move || -> Result<Duration, StoreError> {
            let mut after = slice.lo.saturating_sub(1);
            let mut reading = Duration::ZERO;
            loop {
                let started = Instant::now();
                let batch = store.blobs_under(instance, &source, after, slice.hi, BATCH)?;
                reading += started.elapsed();
                let Some(last) = batch.last() else {
                    return Ok(reading);
                };
                after = last.position;
                if read_tx.blocking_send(batch).is_err() {
                    return Ok(reading);
                }
            }
        });

        let read_rx = Arc::new(tokio::sync::Mutex::new(read_rx));
        let mut workers = Vec::new();
        for first in 0..units.clamp(1, 4) {
            let read_rx = Arc::clone(&read_rx);
            let done_tx = done_tx.clone();
            let units = self.units.clone();
            workers.push(tokio::spawn(async move {
                loop {
                    let Some(batch) = read_rx.lock().await.recv().await else {
                        return;
                    };
                    let replacements =
                        rewrap_in_units(&units, first, instance, &target, batch).await;
                    if done_tx.send(replacements).await.is_err() {
                        return;
                    }
                }
            }));
        }
        drop(done_tx);

        let mut moved = 0;
        let mut unsaved = 0;
        let mut last_saved = Instant::now();
        let mut writing = Duration::ZERO;
        let mut complete = true;
        while let Some(replacements) = done_rx.recv().await {
            let store = Arc::clone(&self.store);
            let started = Instant::now();
            let replaced = blocking(|| store.replace_blobs(&replacements))?;
            writing += started.elapsed();
            moved += replaced;
            unsaved += replaced;
            self.note_moved(instance, replaced);
            if !self.take_lease(lease)? {
                tracing::warn!(%instance, lease, "lost the lease on a slice of key storage; another replica takes it over");
                complete = false;
                break;
            }
            if last_saved.elapsed() >= JOURNAL_INTERVAL {
                if !self.record(instance, direction, unsaved)? {
                    // The direction changed (an abort): stop this slice.
                    complete = false;
                    break;
                }
                unsaved = 0;
                last_saved = Instant::now();
            }
        }
        drop(done_rx);
        for worker in workers {
            let _ = worker.await;
        }
        let reading = match reader.await {
            Ok(result) => result?,
            Err(err) => {
                return Err(RotationError::Storage(StoreError::Database(
                    err.to_string(),
                )));
            }
        };
        tracing::info!(
            %instance,
            lo = slice.lo,
            hi = slice.hi,
            moved,
            seconds = started.elapsed().as_secs_f64(),
            reading = reading.as_secs_f64(),
            writing = writing.as_secs_f64(),
            "slice of key storage rewrapped"
        );
        let current = self.record(instance, direction, unsaved)?;
        Ok(complete && current)
    }

    /// Adds `count` moved blobs to the journal if it still moves in `direction`.
    fn record(
        &self,
        instance: Uuid,
        direction: Option<(Vp, Vp)>,
        count: u64,
    ) -> Result<bool, RotationError> {
        // Written only when there is progress to add; the answer is whether the direction
        // still holds either way.
        let mut current = false;
        self.update(instance, |journal| {
            current = journal.direction() == direction;
            if current && count > 0 {
                journal.record(count, now_ms());
                journal.waiting = None;
            }
            current && count > 0
        })?;
        Ok(current)
    }
}

/// For the log: the target master key of a journal.
fn journal_to(journal: Option<&Journal>) -> String {
    journal.map_or_else(String::new, |journal| journal.to.to_string())
}

/// Rewraps one batch in the first unit that can, starting with `first` (see
/// [`UnitPool::rewrap_batch`]). Blobs that do not authenticate are left as they are.
async fn rewrap_in_units(
    units: &UnitPool,
    first: usize,
    instance: Uuid,
    target: &Vp,
    batch: Vec<StoredBlob>,
) -> Vec<BlobReplacement> {
    let request = RewrapBatch {
        to: *target,
        items: batch
            .iter()
            .map(|stored| BatchItem {
                binding: BlobBinding::Key(Binding {
                    instance,
                    key: stored.key,
                    version: stored.version,
                    extractable: stored.extractable,
                }),
                blob: stored.blob.clone(),
            })
            .collect(),
    };
    match units.rewrap_batch(instance, first, &request).await {
        Ok(Some(result)) => batch
            .into_iter()
            .zip(result.blobs)
            .filter_map(|(stored, new)| {
                Some(BlobReplacement {
                    position: stored.position,
                    old: stored.blob,
                    new: new?,
                    vp: *target,
                })
            })
            .collect(),
        // Every unit wraps under another master key: the rotation changed direction.
        Ok(None) => Vec::new(),
        Err(err) => {
            tracing::warn!(error = %err, "no unit can rewrap key storage");
            Vec::new()
        }
    }
}

/// Rewraps the instance's import token private key, if it is under `source`. A token whose
/// row does not parse is reported and left behind: it is short-lived, and a new one can be
/// made after the rotation, which it must not stop.
async fn moved_tokens(
    engine: &Rotations,
    instance: Uuid,
    source: &Vp,
    target: &Vp,
) -> Result<(), RotationError> {
    let token = match blocking(|| engine.store.import_token(instance)) {
        Ok(Some(token)) => token,
        Ok(None) => return Ok(()),
        Err(err @ StoreError::Corrupt(_)) => {
            tracing::error!(%instance, error = %err, "the import token stays under the old master key; create a new one after the rotation");
            return Ok(());
        }
        Err(err) => return Err(err.into()),
    };
    if !rotor_unit::keys::blob_vp(&token.sealed_private_key).is_some_and(|vp| vp.matches(source)) {
        return Ok(());
    }
    let request = RewrapBatch {
        to: *target,
        items: vec![BatchItem {
            binding: BlobBinding::ImportToken {
                instance,
                token: token.id,
            },
            blob: token.sealed_private_key.clone(),
        }],
    };
    let Ok(Some(result)) = engine.units.rewrap_batch(instance, 0, &request).await else {
        return Ok(());
    };
    let Some(Some(rewrapped)) = result.blobs.into_iter().next() else {
        return Ok(());
    };
    blocking(|| {
        engine.store.update_import_token(instance, &mut |slot| {
            // Only the token that was read, unless it was replaced meanwhile.
            if let Some(stored) = slot.as_mut()
                && stored.id == token.id
                && stored.sealed_private_key == token.sealed_private_key
            {
                stored.sealed_private_key.clone_from(&rewrapped);
            }
            Ok(())
        })
    })?;
    Ok(())
}

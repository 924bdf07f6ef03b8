//! Master key rotation of an instance's key storage.
//!
//! [`Journal`] (in `rotor_proto::rotation`, re-exported here) is the durable record of one
//! rotation (from-VP, to-VP, phase, progress) and a pure state machine; [`Rotations`] is the
//! engine that drives it: it rewraps every blob still under the source master key in batches
//! inside a unit, writes each one back only if it is unchanged meanwhile, and, when none is
//! left, tells every unit that key storage is reencrypted so that admins may promote it. The
//! engine resumes from the journal and the keystore alone, so a restarted service picks up
//! where it stopped.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rotor_crypto::Vp;
use rotor_proto::keyops::{BatchItem, FinishReencryption, RewrapBatch};
pub use rotor_proto::rotation::{
    Journal, JournalConflict, KeystoreView, MasterKeyCount, Phase, RotationView, Start,
};
use rotor_store::{BlobReplacement, KeyStore, StoreError, StoredBlob};

use rotor_unit::keys::{Binding, BlobBinding};
use rotor_unit::wire::{NewState, RotationLock, UnitStatus};
use rotor_util::blocking;
use rotor_util::time::now_ms;

use crate::pool::{PoolError, UnitPool};
use tokio::sync::{RwLock, mpsc};
use uuid::Uuid;

/// Blobs per unit round trip and per keystore transaction.
const BATCH: u32 = 10_000;
/// Batches in flight between the keystore and the units.
const PIPELINE_DEPTH: usize = 4;
/// Pause before retrying when no unit could serve a batch.
const RETRY_PAUSE: Duration = Duration::from_millis(500);
/// How often progress is written to the journal.
const JOURNAL_INTERVAL: Duration = Duration::from_secs(1);

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

/// Progress of the engine's current run, kept in memory.
#[derive(Clone, Debug, Default)]
struct Live {
    running: bool,
    since: Option<Instant>,
    moved: u64,
    /// Blobs moved in the current direction, the journal's count plus what this run moved
    /// since (the journal itself is written once a second).
    done: u64,
}

/// The rotation engine of every instance.
#[derive(Clone)]
pub struct Rotations {
    store: Arc<dyn KeyStore>,
    units: UnitPool,
    gate: Arc<RwLock<()>>,
    live: Arc<Mutex<HashMap<Uuid, Live>>>,
    /// Held for every read-change-write of a journal, so the engine's progress never
    /// overwrites a phase that an admin request changed meanwhile.
    journal_lock: Arc<tokio::sync::Mutex<()>>,
}

impl Rotations {
    /// The engine over `store` and the units of each instance. Key creation holds `gate` for
    /// reading while it wraps and stores a new key, so the final count of a rotation (taken
    /// with the gate held for writing) sees every key made before the units were pinned.
    pub fn new(store: Arc<dyn KeyStore>, units: UnitPool, gate: Arc<RwLock<()>>) -> Self {
        Self {
            store,
            units,
            gate,
            live: Arc::default(),
            journal_lock: Arc::default(),
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

    fn save(&self, instance: Uuid, journal: &Journal) -> Result<(), RotationError> {
        blocking(|| self.store.put_rotation_journal(instance, journal))?;
        crate::metrics::rotation_progress(instance, journal.phase, journal.total, journal.done);
        Ok(())
    }

    /// Applies `change` to the journal on record and stores it if `change` says so; returns
    /// whether it did.
    async fn update(
        &self,
        instance: Uuid,
        change: impl FnOnce(&mut Journal) -> bool,
    ) -> Result<bool, RotationError> {
        let _lock = self.journal_lock.lock().await;
        let Some(mut journal) = self.journal(instance)? else {
            return Ok(false);
        };
        if !change(&mut journal) {
            return Ok(false);
        }
        self.save(instance, &journal)?;
        Ok(true)
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
    pub async fn begin(&self, instance: Uuid, from: Vp, to: Vp) -> Result<Journal, RotationError> {
        let lock = self.journal_lock.lock().await;
        let existing = self.journal(instance)?;
        let start = Journal::start(existing.as_ref(), from, to)?;
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
        let journal = match (start, existing) {
            (Start::Resume, Some(journal)) => {
                if journal.phase == Phase::Reencrypted {
                    // A unit that missed the news (restored, or down at the time) hears it now.
                    let remaining = self.count_under(instance, &from)?;
                    self.tell_units(instance, &to, remaining)
                        .await
                        .map_err(RotationError::Unreachable)?;
                }
                journal
            }
            _ => {
                let journal =
                    Journal::begin(from, to, self.count_under(instance, &from)?, now_ms());
                self.save(instance, &journal)?;
                tracing::info!(%instance, %from, %to, total = journal.total, "master key rotation started");
                journal
            }
        };
        drop(lock);
        self.spawn(instance);
        Ok(journal)
    }

    /// Admins aborted the rotation on every unit: rewrap everything back.
    pub async fn abort(&self, instance: Uuid) -> Result<Journal, RotationError> {
        let lock = self.journal_lock.lock().await;
        let mut journal = self.journal(instance)?.ok_or_else(|| {
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
        if journal.phase != Phase::Aborting {
            let total = self.count_under(instance, &journal.to)?;
            journal.abort(total, now_ms())?;
            self.save(instance, &journal)?;
            tracing::info!(%instance, "master key rotation aborted by admins");
        }
        drop(lock);
        self.spawn(instance);
        Ok(journal)
    }

    /// Every unit is promoted: the rotation is complete.
    pub async fn complete(&self, instance: Uuid) -> Result<Journal, RotationError> {
        let _lock = self.journal_lock.lock().await;
        let mut journal = self.journal(instance)?.ok_or_else(|| {
            RotationError::Conflict("no rotation is on record for this instance".to_owned())
        })?;
        if journal.phase != Phase::Completed {
            for status in self.statuses(instance).await? {
                if !status.current.vp.matches(&journal.to) {
                    return Err(RotationError::Conflict(format!(
                        "unit {} still has current master key {}; promote it to {} first",
                        status.unit, status.current.vp, journal.to
                    )));
                }
            }
            journal.complete(now_ms())?;
            self.save(instance, &journal)?;
            tracing::info!(%instance, to = %journal.to, "master key rotation completed");
        }
        Ok(journal)
    }

    /// The journal with live progress.
    pub fn view(&self, instance: Uuid) -> Result<Option<RotationView>, RotationError> {
        self.known(instance)?;
        let Some(mut journal) = self.journal(instance)? else {
            return Ok(None);
        };
        let live = self
            .live
            .lock()
            .ok()
            .and_then(|live| live.get(&instance).cloned())
            .unwrap_or_default();
        // While the engine runs, its own count is current and costs no scan of the keystore.
        let remaining = match journal.direction() {
            Some(_) if live.running => {
                // Batches in flight when admins aborted may still land on the old count.
                journal.done = journal.done.max(live.done).min(journal.total);
                journal.total.saturating_sub(journal.done)
            }
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
            running: live.running,
            workers: Vec::new(),
        }))
    }

    /// Resumes every rotation the journal says is under way (at service start).
    pub fn resume_all(&self) {
        for instance in self.units.instances() {
            match self.journal(instance) {
                Ok(Some(journal)) if journal.direction().is_some() => {
                    tracing::info!(%instance, phase = journal.phase.label(), "resuming master key rotation");
                    self.spawn(instance);
                }
                Ok(_) => {}
                Err(err) => {
                    tracing::error!(%instance, error = %err, "cannot read rotation journal")
                }
            }
        }
    }

    /// Runs the engine for `instance` unless it runs already.
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
                done: 0,
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
            entry.done += count;
            crate::metrics::rotation_done(instance, entry.done);
        }
    }

    fn note_done(&self, instance: Uuid, done: u64) {
        if let Ok(mut live) = self.live.lock()
            && let Some(entry) = live.get_mut(&instance)
        {
            entry.done = done;
            crate::metrics::rotation_done(instance, done);
        }
    }

    async fn run(&self, instance: Uuid) -> Result<(), RotationError> {
        loop {
            let Some(journal) = self.journal(instance)? else {
                return Ok(());
            };
            let Some((source, target)) = journal.direction() else {
                return Ok(());
            };
            let direction = Some((source, target));
            self.note_done(instance, journal.done);
            let moved = self.pass(instance, direction).await?;
            if self.journal(instance)?.and_then(|j| j.direction()) != direction {
                // Admins aborted meanwhile: start over in the new direction.
                continue;
            }
            moved_tokens(self, instance, &source, &target).await?;
            // Key creation holds the gate while it wraps and stores; with the gate held here,
            // every key made before the units were pinned is in the count.
            let remaining = {
                let _gate = self.gate.write().await;
                self.count_under(instance, &source)?
            };
            if remaining > 0 {
                if moved == 0 {
                    let why = format!(
                        "{remaining} blob(s) under {source} could not be rewrapped; they do not authenticate or no unit holds both master keys"
                    );
                    self.note_waiting(instance, direction, why).await?;
                    tokio::time::sleep(RETRY_PAUSE * 10).await;
                }
                continue;
            }
            match self.tell_units(instance, &target, remaining).await {
                Ok(()) => {
                    let finished = self
                        .update(instance, |journal| {
                            let current = journal.direction() == direction;
                            if current {
                                journal.source_empty(now_ms());
                            }
                            current
                        })
                        .await?;
                    if finished {
                        tracing::info!(%instance, "KMS CRK rewrap successful: no key is left under the old master key");
                        return Ok(());
                    }
                }
                Err(why) => {
                    self.note_waiting(instance, direction, why).await?;
                    tokio::time::sleep(RETRY_PAUSE).await;
                }
            }
        }
    }

    /// Records why the engine waits, unless the journal changed direction meanwhile.
    async fn note_waiting(
        &self,
        instance: Uuid,
        direction: Option<(Vp, Vp)>,
        why: String,
    ) -> Result<(), RotationError> {
        self.update(instance, |journal| {
            let current = journal.direction() == direction;
            if current {
                journal.waiting = Some(why);
                journal.updated = now_ms();
            }
            current
        })
        .await?;
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

    /// One pass over every blob under `source`: read, rewrap in a unit, write back if
    /// unchanged; three stages in a pipeline. Returns how many blobs moved.
    async fn pass(
        &self,
        instance: Uuid,
        direction: Option<(Vp, Vp)>,
    ) -> Result<u64, RotationError> {
        let Some((source, target)) = direction else {
            return Ok(0);
        };
        let (source, target) = (&source, &target);
        let units = self.units.operational_count(instance);
        if units == 0 {
            return Err(RotationError::Conflict(
                "the instance has no operational unit to rewrap key storage".to_owned(),
            ));
        }
        let (read_tx, read_rx) = mpsc::channel::<Vec<StoredBlob>>(PIPELINE_DEPTH);
        let (done_tx, mut done_rx) = mpsc::channel::<Vec<BlobReplacement>>(PIPELINE_DEPTH);

        let store = Arc::clone(&self.store);
        let source_vp = *source;
        let pass_started = Instant::now();
        let reader = tokio::task::spawn_blocking(move || -> Result<Duration, StoreError> {
            let mut after = 0;
            let mut reading = Duration::ZERO;
            loop {
                let started = Instant::now();
                let batch = store.blobs_under(instance, &source_vp, after, i64::MAX, BATCH)?;
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
            let target = *target;
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
        while let Some(replacements) = done_rx.recv().await {
            let store = Arc::clone(&self.store);
            let started = Instant::now();
            let replaced = blocking(|| store.replace_blobs(&replacements))?;
            writing += started.elapsed();
            moved += replaced;
            unsaved += replaced;
            self.note_moved(instance, replaced);
            if last_saved.elapsed() >= JOURNAL_INTERVAL {
                if !self.record(instance, direction, unsaved).await? {
                    // The direction changed (an abort): stop this pass.
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
            moved,
            seconds = pass_started.elapsed().as_secs_f64(),
            reading = reading.as_secs_f64(),
            writing = writing.as_secs_f64(),
            "rewrap pass finished"
        );
        self.record(instance, direction, unsaved).await?;
        Ok(moved)
    }

    /// Adds `count` moved blobs to the journal if it still moves in `direction`.
    async fn record(
        &self,
        instance: Uuid,
        direction: Option<(Vp, Vp)>,
        count: u64,
    ) -> Result<bool, RotationError> {
        self.update(instance, |journal| {
            let current = journal.direction() == direction;
            if current {
                journal.record(count, now_ms());
                journal.waiting = None;
            }
            current
        })
        .await
    }
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

//! Rewrapping one slice of key storage: a reader, workers that rewrap batches in units, and a
//! writer that stores them back, in a pipeline.

use std::sync::Arc;
use std::time::{Duration, Instant};

use rotor_crypto::Vp;
use rotor_proto::rotation::Range;
use rotor_store::{BlobReplacement, StoreError, StoredBlob};
use rotor_util::blocking;
use tokio::sync::mpsc;
use uuid::Uuid;

use super::rewrap::rewrap_in_units;
use super::{BATCH, JOURNAL_INTERVAL, PIPELINE_DEPTH, RotationError, Rotations};

impl Rotations {
    /// Rewraps every blob of `slice` still under the source: read, rewrap in a unit, write back
    /// if unchanged; three stages in a pipeline. The lease is renewed after every batch written.
    /// Returns whether the slice was read to its end (false: the lease was lost or the
    /// direction changed).
    pub(super) async fn rewrap_slice(
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
}

//! The engine's loop over the passes of one rotation: plan a pass in slices, claim and rewrap
//! them, and, under the finish lease, close the source master key and either plan another pass
//! or tell every unit that key storage is reencrypted.

use rotor_crypto::Vp;
use rotor_proto::keyops::FinishReencryption;
use rotor_proto::rotation::Range;
use rotor_util::blocking;
use rotor_util::time::now_ms;
use uuid::Uuid;

use super::leases::{finish_lease, slice_lease};
use super::rewrap::moved_tokens;
use super::{Journal, POLL, RETRY_PAUSE, RotationError, Rotations, SLICES};

impl Rotations {
    /// Works on the rotation of `instance` until no slice is left for this replica and the
    /// rotation is reencrypted (or aborted), or another replica finishes it.
    pub(super) async fn run(&self, instance: Uuid) -> Result<(), RotationError> {
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

    /// Tells every unit that key storage is entirely under `target`, with the keystore's count
    /// of keys still under the source master key (units refuse anything but 0).
    pub(super) async fn tell_units(
        &self,
        instance: Uuid,
        target: &Vp,
        remaining: u64,
    ) -> Result<(), String> {
        let request = FinishReencryption {
            to: *target,
            remaining,
        };
        self.units
            .finish_reencryption(instance, &request)
            .await
            .map_err(|err| format!("waiting for {err}"))
    }
}

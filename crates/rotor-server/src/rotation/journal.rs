//! Writes to the rotation journal (atomic with every other replica), and this replica's live
//! progress.

use rotor_crypto::Vp;
use rotor_util::blocking;
use rotor_util::time::now_ms;
use uuid::Uuid;

use super::{Journal, RotationError, Rotations};

impl Rotations {
    /// Applies `change` to the journal on record, atomically with every other replica, and
    /// stores it if `change` says so; returns whether it did.
    pub(super) fn update(
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

    /// Records why the engine waits, unless the journal changed direction meanwhile.
    pub(super) fn note_waiting(
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

    /// Adds `count` moved blobs to the journal if it still moves in `direction`.
    pub(super) fn record(
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

    pub(super) fn note_moved(&self, instance: Uuid, count: u64) {
        if let Ok(mut live) = self.live.lock()
            && let Some(entry) = live.get_mut(&instance)
        {
            entry.moved += count;
        }
    }
}

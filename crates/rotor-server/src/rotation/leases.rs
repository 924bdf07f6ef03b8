//! The leases of a rotation in the store: on each slice of a pass, and on a pass's final step.

use rotor_util::blocking;
use rotor_util::time::now_ms;
use uuid::Uuid;

use super::{LEASE_MS, RotationError, Rotations};

/// The name of a lease on the slice of `instance` starting at `lo`.
pub(super) fn slice_lease(instance: Uuid, lo: i64) -> String {
    format!("rotation:{instance}:slice:{lo}")
}

/// A lease's name as a metric label: slices by their instance only, so that the label set
/// stays small whatever the size of key storage.
fn lease_label(name: &str) -> String {
    name.rsplit_once(":slice:")
        .map_or_else(|| name.to_owned(), |(head, _)| format!("{head}:slice"))
}

/// The name of the lease on the final step of a pass of `instance`.
pub(super) fn finish_lease(instance: Uuid) -> String {
    format!("rotation:{instance}:finish")
}

impl Rotations {
    pub(super) fn take_lease(&self, name: &str) -> Result<bool, RotationError> {
        let held = blocking(|| {
            self.store
                .take_lease(name, &self.replica, now_ms(), LEASE_MS)
        })?;
        crate::metrics::lease_held(&lease_label(name), held);
        Ok(held)
    }

    pub(super) fn release_lease(&self, name: &str) {
        crate::metrics::lease_held(&lease_label(name), false);
        if let Err(err) = blocking(|| self.store.release_lease(name, &self.replica)) {
            // It expires on its own.
            tracing::warn!(lease = name, error = %err, "cannot release a lease");
        }
    }
}

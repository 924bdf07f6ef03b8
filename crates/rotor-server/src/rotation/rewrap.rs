//! The rewraps a rotation asks of units: a batch of key storage, and the instance's import token.

use rotor_crypto::Vp;
use rotor_proto::keyops::{BatchItem, RewrapBatch};
use rotor_store::{BlobReplacement, StoreError, StoredBlob};
use rotor_unit::keys::{Binding, BlobBinding};
use rotor_util::blocking;
use uuid::Uuid;

use super::{RotationError, Rotations};
use crate::pool::UnitPool;

/// Rewraps one batch in the first unit that can, starting with `first` (see
/// [`UnitPool::rewrap_batch`]). Blobs that do not authenticate are left as they are.
pub(super) async fn rewrap_in_units(
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
pub(super) async fn moved_tokens(
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

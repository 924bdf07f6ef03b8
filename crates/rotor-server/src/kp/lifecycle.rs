//! Key lifecycle rules shared by the routes: which state allows use, dual authorization, and
//! how a root key gets its next version.

use rotor_store::StoreError;
use rotor_store::{KeyMeta, KeyState, KeyVersion};
use rotor_unit::keyapi::{GenerateRequest, ImportRequest, SealedKey};
use rotor_unit::keys::Binding;
use uuid::Uuid;
use zeroize::Zeroizing;

use rotor_util::time::now_ms;

use super::error::{KpError, KpResult};
use super::{KpState, blocking};

/// How long a dual-authorization "set for deletion" holds (Key Protect: 7 days).
pub(super) const DELETION_AUTHORIZATION_MS: i64 = 7 * 24 * 3600 * 1000;

/// How long a deleted key can be restored (Key Protect: 30 days).
pub(super) const RESTORE_WINDOW_MS: i64 = 30 * 24 * 3600 * 1000;

/// Refuses cryptographic use of a key that is not active.
pub(super) fn usable(key: &KeyMeta) -> KpResult<()> {
    if key.deletion.is_some() {
        return Err(KpError::KeyDeleted(key.id));
    }
    match key.state {
        KeyState::Active => Ok(()),
        other => Err(KpError::InvalidState(format!(
            "key {} is {}; enable it first",
            key.id,
            if other == KeyState::Suspended {
                "disabled"
            } else {
                "not active"
            }
        ))),
    }
}

/// Whether deleting this key needs a second identity.
/// Whether deleting this key needs a second identity: its own policy, which it inherited from
/// the instance policy in force when it was created unless it was created with an override.
pub(super) fn dual_auth(key: &KeyMeta) -> bool {
    key.policies.dual_auth_delete.unwrap_or(false)
}

/// Makes (or imports) the next version of a root key inside a unit and stores it.
pub(super) async fn add_version(
    state: &KpState,
    instance: Uuid,
    key: &KeyMeta,
    binding: Binding,
    payload: Option<Zeroizing<Vec<u8>>>,
) -> KpResult<()> {
    let version = binding.version;
    let now = now_ms();
    let mut updated = key.clone();
    updated.newest_version = version;
    updated.last_rotated = Some(now);
    updated.updated = now;
    let mut retried = false;
    loop {
        let sealed: SealedKey = match payload.clone() {
            Some(material) => {
                state
                    .unit_call(
                        instance,
                        &ImportRequest {
                            binding: binding.clone(),
                            material,
                        },
                    )
                    .await?
            }
            None => {
                state
                    .unit_call(
                        instance,
                        &GenerateRequest {
                            binding: binding.clone(),
                            length: 32,
                        },
                    )
                    .await?
            }
        };
        let record = KeyVersion {
            version,
            id: Uuid::new_v4(),
            blob: sealed.blob,
            vp: sealed.vp,
            created: now,
        };
        match blocking(|| {
            state
                .store
                .add_version(&updated, key.newest_version, &record)
        }) {
            // Wrapped before the units moved to the new master key, stored after a rotation
            // closed the old one: wrap again, under the new one.
            Err(StoreError::Retired(_)) if !retried => retried = true,
            result => break result?,
        }
    }
    tracing::info!(key = %key.id, version, "key rotated");
    Ok(())
}

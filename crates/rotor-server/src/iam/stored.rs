//! API keys kept in the store (`rotor apikeys`), beside the configured ones, and how long a
//! revoked or rotated key's tokens keep working: at most [`API_KEY_REFRESH_SECONDS`].
//!
//! A token request reads the store itself, so a key created, rotated or revoked on one replica
//! is honoured or refused by the next token request on every replica. Tokens are verified
//! without a store read per request: each one names its key's id and generation, and each
//! replica checks them against a snapshot of the unrevoked keys that it uses for at most
//! [`API_KEY_REFRESH_SECONDS`] after the read began. A snapshot read after the revocation
//! committed no longer holds the key, so from that long after a revocation or rotation its
//! tokens are refused (401) everywhere; the replica that made the change refuses them at once.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use rotor_store::{ApiKeyRecord, ApiKeyStore};

use super::*;

/// The longest time, in seconds, that a token of a revoked or rotated stored API key is still
/// accepted by a replica that did not make the change.
pub const API_KEY_REFRESH_SECONDS: u64 = 5;

/// The stored key a token was issued to: its id and the generation it had then.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApiKeyRef {
    /// The key's id.
    pub id: Uuid,
    /// Its generation when the token was issued.
    pub generation: u32,
}

/// The unrevoked stored keys' generations, as read from the store when `read_at` began.
struct Snapshot {
    read_at: Instant,
    generations: HashMap<Uuid, u32>,
}

/// The store of API keys and this replica's snapshot of them.
pub(super) struct StoredKeys {
    pub(super) store: Arc<dyn ApiKeyStore>,
    /// The instances this service serves: a key may name only these (or `"*"`).
    pub(super) served: HashSet<Uuid>,
    snapshot: Mutex<Option<Snapshot>>,
}

impl std::fmt::Debug for StoredKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoredKeys").finish_non_exhaustive()
    }
}

impl StoredKeys {
    pub(super) fn new(store: Arc<dyn ApiKeyStore>, served: HashSet<Uuid>) -> Self {
        Self {
            store,
            served,
            snapshot: Mutex::new(None),
        }
    }

    /// The unrevoked key whose SHA-256 is `presented`, read from the store.
    pub(super) fn find(&self, presented: &[u8; 32]) -> Result<Option<ApiKeyRecord>, IamError> {
        let found =
            rotor_util::blocking(|| self.store.api_key_by_hash(presented)).map_err(unavailable)?;
        // The store found the row by its hash; comparing again in constant time keeps the
        // decision itself free of timing. The lookup's own timing can tell at most something
        // about the SHA-256 of what was presented, which says nothing about any stored key:
        // a stored key is 256 random bits, so its hash cannot be turned back into it.
        Ok(found.filter(|key| constant_time_eq(&key.key_sha256, presented)))
    }

    /// Whether the key a token names is unrevoked and still at the token's generation, by a
    /// snapshot at most [`API_KEY_REFRESH_SECONDS`] old (read again when older).
    pub(super) fn check(&self, key: ApiKeyRef) -> Result<(), IamError> {
        let mut snapshot = self
            .snapshot
            .lock()
            .map_err(|_| IamError::ApiKeyStoreUnavailable)?;
        let bound = Duration::from_secs(API_KEY_REFRESH_SECONDS);
        let fresh = snapshot
            .as_ref()
            .is_some_and(|current| current.read_at.elapsed() < bound);
        if !fresh {
            let read_at = Instant::now();
            let keys = rotor_util::blocking(|| self.store.api_keys()).map_err(unavailable)?;
            let generations = keys
                .into_iter()
                .filter(|key| key.revoked.is_none())
                .map(|key| (key.id, key.generation))
                .collect();
            *snapshot = Some(Snapshot {
                read_at,
                generations,
            });
        }
        let current = snapshot
            .as_ref()
            .and_then(|snapshot| snapshot.generations.get(&key.id));
        if current == Some(&key.generation) {
            Ok(())
        } else {
            Err(IamError::ApiKeyRevoked)
        }
    }

    /// Drops the snapshot, so that this replica's next check reads the change it just made.
    pub(super) fn forget_snapshot(&self) {
        if let Ok(mut snapshot) = self.snapshot.lock() {
            *snapshot = None;
        }
    }
}

fn unavailable(err: rotor_store::StoreError) -> IamError {
    tracing::error!(error = %err, "the API key store failed");
    IamError::ApiKeyStoreUnavailable
}

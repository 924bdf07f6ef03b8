//! API keys kept in the store (`rotor apikeys`), beside the configured ones, and how long a
//! revoked or rotated key's tokens keep working: at most [`API_KEY_REFRESH_SECONDS`].
//!
//! A token request reads the store itself, so a key created, rotated or revoked on one replica
//! is honoured or refused by the next token request on every replica. Tokens are verified
//! without a store read per request: each one names its key's id and generation, and each
//! replica checks them against a snapshot of the keys' generations and revocations that it uses
//! for at most [`API_KEY_REFRESH_SECONDS`] after the read began. A snapshot read after the
//! revocation committed shows it, so from that long after a revocation or rotation its tokens
//! are refused (401) everywhere; the replica that made the change refuses them at once.

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

/// Every stored key's generation and whether it is revoked, as read from the store when
/// `read_at` began.
struct Snapshot {
    read_at: Instant,
    keys: HashMap<Uuid, KeyState>,
}

#[derive(Clone, Copy)]
struct KeyState {
    generation: u32,
    revoked: bool,
}

/// What a snapshot says of a token's key.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Verdict {
    /// Unrevoked, at the token's generation.
    Current,
    /// Revoked, or rotated past the token's generation: final, since revocation is final and
    /// generations only grow.
    Ended,
    /// The token is newer than the snapshot: the key or its generation is not in it yet.
    Unknown,
}

impl Snapshot {
    fn verdict(&self, token: ApiKeyRef) -> Verdict {
        match self.keys.get(&token.id) {
            Some(key) if key.revoked || key.generation > token.generation => Verdict::Ended,
            Some(key) if key.generation == token.generation => Verdict::Current,
            _ => Verdict::Unknown,
        }
    }
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
    /// snapshot at most [`API_KEY_REFRESH_SECONDS`] old (read again when older). A token newer
    /// than the snapshot (a key made or rotated on another replica since) has it read again at
    /// once; only this service can sign tokens, so only real keys cause such reads.
    pub(super) fn check(&self, key: ApiKeyRef) -> Result<(), IamError> {
        let mut snapshot = self
            .snapshot
            .lock()
            .map_err(|_| IamError::ApiKeyStoreUnavailable)?;
        let bound = Duration::from_secs(API_KEY_REFRESH_SECONDS);
        let mut verdict = snapshot
            .as_ref()
            .filter(|current| current.read_at.elapsed() < bound)
            .map_or(Verdict::Unknown, |current| current.verdict(key));
        if verdict == Verdict::Unknown {
            let fresh = self.read()?;
            verdict = fresh.verdict(key);
            *snapshot = Some(fresh);
        }
        match verdict {
            Verdict::Current => Ok(()),
            Verdict::Unknown | Verdict::Ended => Err(IamError::ApiKeyRevoked),
        }
    }

    fn read(&self) -> Result<Snapshot, IamError> {
        let read_at = Instant::now();
        let keys = rotor_util::blocking(|| self.store.api_keys()).map_err(unavailable)?;
        let keys = keys
            .into_iter()
            .map(|key| {
                let state = KeyState {
                    generation: key.generation,
                    revoked: key.revoked.is_some(),
                };
                (key.id, state)
            })
            .collect();
        Ok(Snapshot { read_at, keys })
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

//! API keys kept in the store: created, rotated and revoked while the service runs, and seen by
//! every replica of the service at once, because they share the store.
//!
//! A key is kept by the SHA-256 of its text only; the key itself is shown once to whoever made
//! it and never stored. Its role and instances are fixed at creation. Rotating it replaces the
//! hash and raises its generation; revoking it is final. Records are never removed, so a key
//! id is never reused and the list says who revoked what.

use uuid::Uuid;

use crate::StoreError;

/// One stored API key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ApiKeyRecord {
    /// Its id, named in the tokens issued to it.
    pub id: Uuid,
    /// A name for people; the subject (`sub`) of its tokens. No two unrevoked keys share one.
    pub name: String,
    /// SHA-256 of the key's UTF-8 text. No two keys, revoked ones included, share one.
    pub key_sha256: [u8; 32],
    /// The IAM role name: `Reader`, `Writer`, `Manager` or `Crypto Unit Administrator`. The
    /// service checks it; the store keeps it as given.
    pub role: String,
    /// The instance UUIDs the key covers, or `"*"` for all, as text, in the order given.
    pub instances: Vec<String>,
    /// 1 at creation, raised by one at each rotation: tokens name the generation they were
    /// issued for, so a rotation ends the tokens of the key it replaced.
    pub generation: u32,
    /// When it was created (Unix milliseconds).
    pub created: i64,
    /// Who created it (the subject of the creating token).
    pub created_by: String,
    /// Its last rotation, if any.
    pub rotated: Option<ApiKeyChange>,
    /// Its revocation, if revoked.
    pub revoked: Option<ApiKeyChange>,
}

/// When a key was rotated or revoked, and by whom.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ApiKeyChange {
    /// Unix milliseconds.
    pub at: i64,
    /// The subject of the token that asked for it.
    pub by: String,
}

/// Storage of API keys. Every method is one transaction: durable when it returns `Ok`, and a
/// failed call changes nothing.
///
/// The SQLite schema (migration 9) is a table `api_keys` with one row per key: `id TEXT
/// PRIMARY KEY` (the UUID, hyphenated), `name TEXT`, `key_sha256 BLOB UNIQUE` (32 bytes),
/// `role TEXT`, `instances TEXT` (a JSON array of strings), `generation INTEGER`,
/// `created INTEGER`, `created_by TEXT`, `rotated INTEGER NULL`, `rotated_by TEXT NULL`,
/// `revoked INTEGER NULL`, `revoked_by TEXT NULL` (times in Unix milliseconds: 64-bit
/// integers, `BIGINT` on PostgreSQL, `BYTEA` for the blob), and a unique index on `name` over
/// the rows whose `revoked` is null. Another backend may lay it out differently as long as
/// each method below keeps its contract.
pub trait ApiKeyStore: Send + Sync {
    /// Stores a new key. Refused with [`StoreError::Conflict`], storing nothing, when a key has
    /// the same id or the same hash, or an unrevoked key has the same name.
    fn create_api_key(&self, key: &ApiKeyRecord) -> Result<(), StoreError>;

    /// The key `id`, revoked or not.
    fn api_key(&self, id: Uuid) -> Result<Option<ApiKeyRecord>, StoreError>;

    /// The unrevoked key whose hash is `key_sha256`, if any (a token request's lookup).
    fn api_key_by_hash(&self, key_sha256: &[u8; 32]) -> Result<Option<ApiKeyRecord>, StoreError>;

    /// Every key, revoked ones included, oldest first (by creation time, then id).
    fn api_keys(&self) -> Result<Vec<ApiKeyRecord>, StoreError>;

    /// Replaces the hash of the unrevoked key `id` with `key_sha256`, raises its generation by
    /// one and records the rotation (`at`, `by`); returns the key as stored. Refused with
    /// [`StoreError::NotFound`] when there is no such key, [`StoreError::Refused`] when it is
    /// revoked, [`StoreError::Conflict`] when another key has this hash.
    fn rotate_api_key(
        &self,
        id: Uuid,
        key_sha256: &[u8; 32],
        at: i64,
        by: &str,
    ) -> Result<ApiKeyRecord, StoreError>;

    /// Revokes the key `id` (`at`, `by`) and returns it as stored. Revoking a revoked key
    /// changes nothing and returns it with its first revocation. [`StoreError::NotFound`] when
    /// there is no such key.
    fn revoke_api_key(&self, id: Uuid, at: i64, by: &str) -> Result<ApiKeyRecord, StoreError>;
}

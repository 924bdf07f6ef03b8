//! rotor's key storage: per instance, keys with their metadata, every version's wrapped blob
//! (tagged with the VP of the master key that wraps it), aliases, key rings, instance
//! policies, the import token and the master key rotation journal. The storage never sees key
//! material in the clear. Each row kind is a typed record; a row that does not parse is a
//! [`StoreError::Corrupt`] that names it.
//!
//! [`KeyStore`] is the seam; [`SqliteStore`] implements it on an embedded SQLite database in WAL
//! mode with `synchronous = FULL`, so every acknowledged change is durable, and
//! [`postgres::PgStore`] on a PostgreSQL database that several service replicas share.

#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod apikeys;
pub mod audit;
#[cfg(test)]
mod conformance;
#[cfg(test)]
mod fixtures;
pub mod postgres;
mod records;
mod sqlite;

use rotor_crypto::{PublicKey, Vp};
use rotor_proto::rotation::Journal;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

pub use apikeys::{ApiKeyChange, ApiKeyRecord, ApiKeyStore};
pub use audit::{AuditChain, AuditStore};
pub use postgres::{PgConfig, PgStore};
pub use sqlite::SqliteStore;

/// One instance policy as stored: its data as given (attributes validated and normalized by the
/// service) and who set it when. Records stored before the times were kept read with them empty.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct InstancePolicyRecord {
    /// Whether the policy is on.
    pub enabled: bool,
    /// Its attributes, per policy type (Key Protect's `policy_data.attributes`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attributes: Option<serde_json::Value>,
    /// When it was first set (Unix milliseconds).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created: Option<i64>,
    /// Who first set it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_by: Option<String>,
    /// When it last changed (Unix milliseconds).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub updated: Option<i64>,
    /// Who last changed it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub updated_by: Option<String>,
}

/// An instance's policies, by Key Protect policy type name (`dualAuthDelete`, `allowedIP`, …).
pub type InstancePolicies = std::collections::BTreeMap<String, InstancePolicyRecord>;

/// Key states as the Key Protect API numbers them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(into = "u8", try_from = "u8")]
pub enum KeyState {
    /// Usable.
    Active = 1,
    /// Disabled: no cryptographic use until enabled again.
    Suspended = 2,
    /// Not usable.
    Deactivated = 3,
    /// Deleted.
    Destroyed = 5,
}

impl From<KeyState> for u8 {
    fn from(state: KeyState) -> Self {
        state as Self
    }
}

impl TryFrom<u8> for KeyState {
    type Error = String;

    fn try_from(value: u8) -> Result<Self, Self::Error> {
        match value {
            1 => Ok(Self::Active),
            2 => Ok(Self::Suspended),
            3 => Ok(Self::Deactivated),
            5 => Ok(Self::Destroyed),
            other => Err(format!("unknown key state {other}")),
        }
    }
}

/// Who deleted a key and when.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Deletion {
    /// Milliseconds since the epoch.
    pub at: i64,
    /// The deleting identity.
    pub by: String,
}

/// A pending authorization for deleting a key under dual authorization.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeletionAuthorization {
    /// Who set the key for deletion.
    pub by: String,
    /// Until when (ms) the authorization holds.
    pub until: i64,
}

/// A key's policies.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyPolicies {
    /// Automatic rotation interval in months, when set.
    #[serde(default)]
    pub rotation_interval_month: Option<u8>,
    /// Whether rotation by policy is enabled.
    #[serde(default)]
    pub rotation_enabled: Option<bool>,
    /// Whether deletion needs two identities.
    #[serde(default)]
    pub dual_auth_delete: Option<bool>,
    /// When each policy was last changed (ms) and by whom.
    #[serde(default)]
    pub updated: Option<Deletion>,
}

/// Everything about a key except its versions' blobs.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyMeta {
    /// Owning instance.
    pub instance: Uuid,
    /// Key id.
    pub id: Uuid,
    /// Display name.
    pub name: String,
    /// Description.
    #[serde(default)]
    pub description: String,
    /// Standard key (material may be read) or root key (never leaves a unit).
    pub extractable: bool,
    /// Imported rather than generated.
    pub imported: bool,
    /// State.
    pub state: KeyState,
    /// Key ring.
    pub key_ring: String,
    /// Aliases.
    #[serde(default)]
    pub aliases: Vec<String>,
    /// Creation time (ms).
    pub created: i64,
    /// Creating identity.
    pub created_by: String,
    /// Last change (ms).
    pub updated: i64,
    /// Last rotation (ms).
    #[serde(default)]
    pub last_rotated: Option<i64>,
    /// Set when deleted.
    #[serde(default)]
    pub deletion: Option<Deletion>,
    /// Set while a dual-authorization deletion is pending.
    #[serde(default)]
    pub deletion_authorization: Option<DeletionAuthorization>,
    /// Policies.
    #[serde(default)]
    pub policies: KeyPolicies,
    /// The newest version number.
    pub newest_version: u32,
    /// Free-form labels.
    #[serde(default)]
    pub labels: Vec<String>,
}

/// One version of a key: its wrapped material.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyVersion {
    /// 1, 2, …
    pub version: u32,
    /// The public id of this version.
    pub id: Uuid,
    /// The material wrapped under a master key (see `rotor_unit::keys`).
    pub blob: Vec<u8>,
    /// The VP of that master key.
    pub vp: Vp,
    /// Creation time (ms).
    pub created: i64,
}

/// A key ring.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyRing {
    /// Its id (name).
    pub id: String,
    /// Creation time (ms).
    pub created: i64,
    /// Creating identity.
    pub created_by: String,
}

/// An instance's import token for secure import: an RSA key pair made inside a unit, whose
/// private key is stored only sealed under the master key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ImportToken {
    /// Its id, part of the sealed private key's binding.
    pub id: Uuid,
    /// Creation time (ms).
    pub created: i64,
    /// Expiry time (ms).
    pub expires: i64,
    /// How many times the public key may be retrieved in all.
    pub max_retrievals: u32,
    /// How many retrievals are left.
    pub remaining: u32,
    /// X.509 SubjectPublicKeyInfo DER.
    pub public_key: Vec<u8>,
    /// Random bytes the importer encrypts under the key material, to prove it holds it.
    pub nonce: Vec<u8>,
    /// The private key sealed under the master key by a unit (a blob that names its VP).
    pub sealed_private_key: Vec<u8>,
}

/// What to list.
#[derive(Clone, Debug, Default)]
pub struct ListFilter {
    /// At most this many.
    pub limit: u32,
    /// Skip this many.
    pub offset: u32,
    /// Only these states (empty: all but destroyed).
    pub states: Vec<KeyState>,
    /// Only standard (true) or root (false) keys.
    pub extractable: Option<bool>,
    /// Only this key ring.
    pub key_ring: Option<String>,
}

/// A storage failure.
#[derive(Debug)]
#[non_exhaustive]
pub enum StoreError {
    /// The database failed; nothing was changed.
    Database(String),
    /// A stored record does not parse.
    Corrupt(String),
    /// The name is taken (alias or key ring).
    Conflict(String),
    /// No such record.
    NotFound(String),
    /// The change was refused by the caller's check; nothing was changed.
    Refused(String),
    /// A master key rotation is counting what is left under this master key, so no new key
    /// version may be stored under it; wrap again (the units now wrap under the new master
    /// key). Nothing was changed.
    Retired(Vp),
}

impl std::fmt::Display for StoreError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Database(why) => write!(f, "key storage failed: {why}"),
            Self::Corrupt(why) => {
                write!(f, "key storage holds a record that does not parse: {why}")
            }
            Self::Conflict(why) | Self::NotFound(why) | Self::Refused(why) => f.write_str(why),
            Self::Retired(vp) => write!(
                f,
                "a master key rotation is retiring master key {vp}; wrap the key again"
            ),
        }
    }
}

impl std::error::Error for StoreError {}

impl From<rusqlite::Error> for StoreError {
    fn from(err: rusqlite::Error) -> Self {
        Self::Database(err.to_string())
    }
}

/// Key storage. Every method is one transaction: it is durable when it returns `Ok`, and a
/// failed call changes nothing.
///
/// Every method that stores a new key version ([`create_key`](Self::create_key),
/// [`create_keys`](Self::create_keys), [`add_version`](Self::add_version)) refuses one under
/// the master key a rotation is closing ([`Journal::closed_source`]) with
/// [`StoreError::Retired`], atomically with the journal: a rotation's final count, taken after
/// it closed the source, misses no key version, whichever replica stores it.
pub trait KeyStore: Send + Sync {
    /// Adds a key with its first version.
    fn create_key(&self, key: &KeyMeta, first: &KeyVersion) -> Result<(), StoreError>;
    /// A key by id or alias.
    fn key(&self, instance: Uuid, id_or_alias: &str) -> Result<Option<KeyMeta>, StoreError>;
    /// Whether the point reads ([`Self::key`], [`Self::version`], [`Self::versions`]) may run
    /// on an async worker thread: they never wait for a writer and block at most on local file
    /// pages. Without that promise, callers move them off the async workers.
    fn point_reads_are_quick(&self) -> bool {
        false
    }
    /// Keys matching a filter, and how many match in all.
    fn list(&self, instance: Uuid, filter: &ListFilter) -> Result<(Vec<KeyMeta>, u64), StoreError>;
    /// Reads a key, lets `change` edit it, and stores the result, atomically. Returns the new
    /// metadata. If `change` fails, nothing is stored.
    fn update(
        &self,
        instance: Uuid,
        id: Uuid,
        change: &mut dyn FnMut(&mut KeyMeta) -> Result<(), StoreError>,
    ) -> Result<KeyMeta, StoreError>;
    /// Adds a version (a rotation) in one transaction: the stored metadata takes `key`'s
    /// `newest_version`, `last_rotated` and `updated`, and keeps everything else as stored (a
    /// change made meanwhile, by this replica or another, stays). Refused with
    /// [`StoreError::Conflict`] if the key's newest version is no longer `expected_newest`, and
    /// with [`StoreError::Refused`] if the stored key is no longer active (disabled or deleted
    /// meanwhile).
    fn add_version(
        &self,
        key: &KeyMeta,
        expected_newest: u32,
        version: &KeyVersion,
    ) -> Result<(), StoreError>;
    /// All versions of a key, oldest first.
    fn versions(&self, instance: Uuid, id: Uuid) -> Result<Vec<KeyVersion>, StoreError>;
    /// One version.
    fn version(
        &self,
        instance: Uuid,
        id: Uuid,
        version: u32,
    ) -> Result<Option<KeyVersion>, StoreError>;
    /// Removes a key, its versions and aliases for good.
    fn purge(&self, instance: Uuid, id: Uuid) -> Result<(), StoreError>;
    /// Adds an alias to a key; fails if the alias is taken in the instance.
    fn add_alias(&self, instance: Uuid, id: Uuid, alias: &str) -> Result<KeyMeta, StoreError>;
    /// Removes an alias from a key.
    fn remove_alias(&self, instance: Uuid, id: Uuid, alias: &str) -> Result<KeyMeta, StoreError>;
    /// Key rings of an instance (`default` always exists).
    fn key_rings(&self, instance: Uuid) -> Result<Vec<KeyRing>, StoreError>;
    /// Creates a key ring.
    fn create_key_ring(&self, instance: Uuid, ring: &KeyRing) -> Result<(), StoreError>;
    /// Deletes an empty key ring (keys purged or moved first).
    fn delete_key_ring(&self, instance: Uuid, id: &str) -> Result<(), StoreError>;
    /// The instance's policies, by Key Protect policy type name.
    fn instance_policies(&self, instance: Uuid) -> Result<InstancePolicies, StoreError>;
    /// Replaces the instance's policies.
    fn set_instance_policies(
        &self,
        instance: Uuid,
        policies: &InstancePolicies,
    ) -> Result<(), StoreError>;
    /// The instance's import token, if it has one.
    fn import_token(&self, instance: Uuid) -> Result<Option<ImportToken>, StoreError>;
    /// Reads the instance's import token, lets `change` edit (or remove) it, and stores the
    /// result, atomically; returns what was stored. If `change` fails, nothing is stored.
    fn update_import_token(
        &self,
        instance: Uuid,
        change: &mut dyn FnMut(&mut Option<ImportToken>) -> Result<(), StoreError>,
    ) -> Result<Option<ImportToken>, StoreError>;
    /// How many key versions of an instance sit under each master key VP.
    fn count_by_vp(&self, instance: Uuid) -> Result<Vec<(Vp, u64)>, StoreError>;
    /// How many key versions of an instance sit under the master key `vp`.
    fn count_under(&self, instance: Uuid, vp: &Vp) -> Result<u64, StoreError>;
    /// Creates many keys (each with its first version) in one transaction.
    fn create_keys(&self, keys: &[(KeyMeta, KeyVersion)]) -> Result<(), StoreError>;
    /// Up to `limit` key version blobs of `instance` under `vp`, in storage order, with
    /// positions after `after` and up to `until` (inclusive).
    fn blobs_under(
        &self,
        instance: Uuid,
        vp: &Vp,
        after: i64,
        until: i64,
        limit: u32,
    ) -> Result<Vec<StoredBlob>, StoreError>;
    /// The lowest and highest positions of `instance`'s key versions under `vp`, if any.
    fn positions_under(&self, instance: Uuid, vp: &Vp) -> Result<Option<(i64, i64)>, StoreError>;
    /// Replaces each blob that still holds exactly the bytes it was read with, in one
    /// transaction; returns how many were replaced (the others changed meanwhile).
    fn replace_blobs(&self, replacements: &[BlobReplacement]) -> Result<u64, StoreError>;
    /// The instance's master key rotation journal, if it ever had one.
    fn rotation_journal(&self, instance: Uuid) -> Result<Option<Journal>, StoreError>;
    /// Replaces the instance's rotation journal.
    fn put_rotation_journal(&self, instance: Uuid, journal: &Journal) -> Result<(), StoreError>;
    /// Reads the instance's rotation journal, lets `change` edit it, and stores the result if
    /// `change` returns `true`, atomically with respect to every other writer (other replicas
    /// included). Returns the journal as it stands afterwards. If `change` fails, nothing is
    /// stored.
    fn update_rotation_journal(
        &self,
        instance: Uuid,
        change: &mut dyn FnMut(&mut Option<Journal>) -> Result<bool, StoreError>,
    ) -> Result<Option<Journal>, StoreError>;
    /// Takes the lease `name` for `holder` until `now + ttl_ms` if it is free, expired, or
    /// held by `holder` already (a renewal). Returns whether `holder` holds it now. Leases
    /// make work that must run once at a time (a slice of a rotation, a purge) run on one
    /// replica, and pass to another when the holder stops renewing.
    fn take_lease(
        &self,
        name: &str,
        holder: &str,
        now: i64,
        ttl_ms: i64,
    ) -> Result<bool, StoreError>;
    /// Gives the lease up if `holder` holds it.
    fn release_lease(&self, name: &str, holder: &str) -> Result<(), StoreError>;
    /// The leases whose names begin with `prefix` and which have not expired at `now`, by
    /// name.
    fn leases(&self, prefix: &str, now: i64) -> Result<Vec<Lease>, StoreError>;
    /// What the service knows of a unit's identity, if it has met the unit.
    fn unit_record(&self, unit: Uuid) -> Result<Option<UnitRecord>, StoreError>;
    /// Pins the unit's identity if none is pinned, and raises its last counter to
    /// `record.last_counter` if the identity is the pinned one. The counter never goes down,
    /// whatever order replicas write in.
    fn note_unit(&self, unit: Uuid, record: &UnitRecord) -> Result<(), StoreError>;
}

/// What [`KeyStore::add_version`] does to the stored metadata, the same for every backend.
fn apply_new_version(
    stored: &mut KeyMeta,
    key: &KeyMeta,
    expected_newest: u32,
) -> Result<(), StoreError> {
    if stored.newest_version != expected_newest {
        return Err(StoreError::Conflict(format!(
            "key {} was rotated meanwhile; try again",
            key.id
        )));
    }
    if stored.state != KeyState::Active || stored.deletion.is_some() {
        return Err(StoreError::Refused(format!(
            "key {} was disabled or deleted meanwhile; it was not rotated",
            key.id
        )));
    }
    stored.newest_version = key.newest_version;
    stored.last_rotated = key.last_rotated;
    stored.updated = key.updated;
    Ok(())
}

/// A lease on work, held by one replica until it expires.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Lease {
    /// What it is for.
    pub name: String,
    /// Who holds it.
    pub holder: String,
    /// Until when (Unix milliseconds).
    pub expires: i64,
}

/// A unit as the service knows it: its identity key, pinned on first contact (checked against
/// the fingerprint of the configuration when there is one), and the highest transaction
/// counter seen in its signed statuses.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UnitRecord {
    /// The unit's identity public key.
    pub identity: PublicKey,
    /// The highest counter seen.
    pub last_counter: u64,
}

/// A stored key version blob, as a rotation reads it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredBlob {
    /// Its position in storage (increasing).
    pub position: i64,
    /// The key.
    pub key: Uuid,
    /// The version.
    pub version: u32,
    /// Whether the key is a standard (extractable) key.
    pub extractable: bool,
    /// The wrapped material.
    pub blob: Vec<u8>,
}

/// A rewrapped blob to store in place of the one read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BlobReplacement {
    /// [`StoredBlob::position`].
    pub position: i64,
    /// The bytes that were read; the replacement applies only if they are still stored.
    pub old: Vec<u8>,
    /// The new blob.
    pub new: Vec<u8>,
    /// The master key it is wrapped under.
    pub vp: Vp,
}

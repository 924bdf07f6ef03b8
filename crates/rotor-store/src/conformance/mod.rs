//! One conformance suite for every backend: each case runs on SQLite and on PostgreSQL (a
//! throwaway cluster shared by the cases running at once, a fresh database per case). Cases
//! that only make sense on one backend (SQLite's migrations from old files, PostgreSQL killed
//! mid-write) live with it.
//!
//! Here the runner: the two targets (a database a case opens), and the macro that makes each
//! case one test per backend. The cases, by topic: `keys`, `state` (import tokens, journals,
//! policies, unit identities, leases), `rotation` (blobs under a master key), `audit` and
//! `concurrency`; and `postgres_only` (the database killed mid-write, TLS to it).

use std::sync::{Arc, Mutex, Weak};

use rotor_proto::audit::{KeyEventRecord, Verdict};
use uuid::Uuid;

use crate::fixtures::key;
use crate::postgres::{PgConfig, PgStore, TempCluster};
use crate::{AuditStore, KeyMeta, KeyStore, ListFilter, SqliteStore};

mod audit;
mod concurrency;
mod keys;
mod postgres_only;
mod rotation;
mod state;

/// Both store traits.
pub(crate) trait Store: KeyStore + AuditStore {}
impl<T: KeyStore + AuditStore> Store for T {}

/// A database a case opens (again, to see what survived).
pub(crate) trait Target: Send + Sync {
    fn open(&self) -> Box<dyn Store>;

    /// `count` stores on the database, as that many service replicas would have.
    fn replicas(&self, count: usize) -> Vec<Arc<dyn Store>> {
        (0..count).map(|_| Arc::from(self.open())).collect()
    }
}

struct SqliteTarget {
    dir: tempfile::TempDir,
}

impl Target for SqliteTarget {
    fn open(&self) -> Box<dyn Store> {
        Box::new(SqliteStore::open(&self.dir.path().join("keys.db")).unwrap())
    }

    /// An embedded database has one writing process: its replicas are threads sharing a store.
    fn replicas(&self, count: usize) -> Vec<Arc<dyn Store>> {
        let store: Arc<dyn Store> = Arc::from(self.open());
        vec![store; count]
    }
}

/// A cluster shared by the cases that run at once; it stops when the last of them ends.
struct SharedCluster {
    cluster: TempCluster,
    _dir: tempfile::TempDir,
}

static CLUSTER: Mutex<Weak<SharedCluster>> = Mutex::new(Weak::new());

fn shared_cluster() -> Arc<SharedCluster> {
    let mut shared = CLUSTER.lock().unwrap();
    if let Some(cluster) = shared.upgrade() {
        return cluster;
    }
    let dir = tempfile::tempdir().unwrap();
    let cluster = Arc::new(SharedCluster {
        cluster: TempCluster::start(&dir.path().join("pg")).unwrap(),
        _dir: dir,
    });
    *shared = Arc::downgrade(&cluster);
    cluster
}

struct PgTarget {
    url: String,
    _cluster: Arc<SharedCluster>,
}

impl PgTarget {
    fn new() -> Self {
        let cluster = shared_cluster();
        let name = format!("t{}", Uuid::new_v4().simple());
        let url = cluster.cluster.create_database(&name).unwrap();
        Self {
            url,
            _cluster: cluster,
        }
    }
}

impl Target for PgTarget {
    fn open(&self) -> Box<dyn Store> {
        Box::new(
            PgStore::connect(&PgConfig {
                url: self.url.clone(),
                ca_cert: None,
                max_connections: 8,
            })
            .unwrap(),
        )
    }
}

/// Runs `case` on each backend, as one `#[test]` per backend.
macro_rules! conformance {
    ($($module:ident :: $case:ident),* $(,)?) => {
        mod on_sqlite {
            $(#[test]
            fn $case() {
                let target = super::SqliteTarget { dir: tempfile::tempdir().unwrap() };
                super::$module::$case(&target);
            })*
        }
        mod on_postgres {
            $(#[test]
            fn $case() {
                super::$module::$case(&super::PgTarget::new());
            })*
        }
    };
}

conformance!(
    keys::keys_versions_aliases_and_rings_survive_reopening,
    state::import_tokens_and_journals_survive_reopening,
    keys::alias_conflicts_and_refused_updates_change_nothing,
    keys::listing_filters_and_pages,
    keys::key_rings_are_created_once_and_deleted_only_when_empty,
    state::instance_policies_are_replaced_whole,
    rotation::a_reported_vp_that_differs_from_the_blob_prefix_is_refused_and_stores_nothing,
    rotation::blobs_are_read_in_position_ranges_and_replaced_only_if_unchanged,
    state::a_unit_identity_is_pinned_once_and_its_counter_never_goes_down,
    state::a_journal_update_stores_only_what_the_change_accepts,
    rotation::no_key_version_is_stored_under_a_master_key_a_rotation_closed,
    state::a_lease_has_one_holder_until_it_expires,
    audit::key_events_chain_and_countersignatures_are_kept,
    audit::unit_entries_must_continue_the_stored_chain,
    concurrency::concurrent_updates_lose_nothing,
    concurrency::concurrent_rotations_of_one_key_add_each_version_once,
    concurrency::concurrent_rewrites_replace_each_blob_once,
    concurrency::concurrent_lease_takers_have_one_winner,
    concurrency::concurrent_appends_keep_one_chain,
);

fn unaliased(instance: Uuid, name: &str) -> KeyMeta {
    KeyMeta {
        aliases: Vec::new(),
        ..key(instance, name)
    }
}

fn all(limit: u32) -> ListFilter {
    ListFilter {
        limit,
        ..ListFilter::default()
    }
}

fn event(key: &str) -> KeyEventRecord {
    KeyEventRecord {
        event: "create".to_owned(),
        key: key.to_owned(),
        caller: "alice".to_owned(),
        verdict: Verdict::Accepted,
    }
}

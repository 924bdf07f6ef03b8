//! One conformance suite for every backend: each case runs on SQLite and on PostgreSQL (a
//! throwaway cluster shared by the cases running at once, a fresh database per case). Cases
//! that only make sense on one backend (SQLite's migrations from old files, PostgreSQL killed
//! mid-write) live with it.

use std::sync::{Arc, Barrier, Mutex, Weak};

use rotor_crypto::{PublicKey, SigAlg, SigningKey, Vp};
use rotor_proto::audit::{
    AdminRecord, ChainHead, Countersignature, KeyEventRecord, StoredEntry, Verdict, entry_hash,
};
use rotor_proto::rotation::Journal;
use rotor_util::time::now_ms;
use uuid::Uuid;

use crate::postgres::{PgConfig, PgStore, TempCluster};
use crate::{
    AuditChain, AuditStore, BlobReplacement, ImportToken, InstancePolicies, InstancePolicyRecord,
    KeyMeta, KeyPolicies, KeyRing, KeyState, KeyStore, KeyVersion, Lease, ListFilter, SqliteStore,
    StoreError, UnitRecord,
};

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
    ($($case:ident),* $(,)?) => {
        mod on_sqlite {
            $(#[test]
            fn $case() {
                let target = super::SqliteTarget { dir: tempfile::tempdir().unwrap() };
                super::$case(&target);
            })*
        }
        mod on_postgres {
            $(#[test]
            fn $case() {
                super::$case(&super::PgTarget::new());
            })*
        }
    };
}

conformance!(
    keys_versions_aliases_and_rings_survive_reopening,
    import_tokens_and_journals_survive_reopening,
    alias_conflicts_and_refused_updates_change_nothing,
    listing_filters_and_pages,
    key_rings_are_created_once_and_deleted_only_when_empty,
    instance_policies_are_replaced_whole,
    a_reported_vp_that_differs_from_the_blob_prefix_is_refused_and_stores_nothing,
    blobs_are_read_in_position_ranges_and_replaced_only_if_unchanged,
    a_unit_identity_is_pinned_once_and_its_counter_never_goes_down,
    a_journal_update_stores_only_what_the_change_accepts,
    no_key_version_is_stored_under_a_master_key_a_rotation_closed,
    a_lease_has_one_holder_until_it_expires,
    key_events_chain_and_countersignatures_are_kept,
    unit_entries_must_continue_the_stored_chain,
    concurrent_updates_lose_nothing,
    concurrent_rotations_of_one_key_add_each_version_once,
    concurrent_rewrites_replace_each_blob_once,
    concurrent_lease_takers_have_one_winner,
    concurrent_appends_keep_one_chain,
);

pub(crate) fn key(instance: Uuid, name: &str) -> KeyMeta {
    KeyMeta {
        instance,
        id: Uuid::new_v4(),
        name: name.to_owned(),
        description: String::new(),
        extractable: false,
        imported: false,
        state: KeyState::Active,
        key_ring: "default".to_owned(),
        aliases: vec![format!("{name}-alias")],
        created: now_ms(),
        created_by: "test".to_owned(),
        updated: now_ms(),
        last_rotated: None,
        deletion: None,
        deletion_authorization: None,
        policies: KeyPolicies::default(),
        newest_version: 1,
        labels: Vec::new(),
    }
}

/// Version `n`, its blob wrapped (by its prefix) under VP `[vp; 32]`.
pub(crate) fn version(n: u32, vp: u8) -> KeyVersion {
    KeyVersion {
        version: n,
        id: Uuid::new_v4(),
        blob: [vec![vp; 32], vec![n as u8; 28]].concat(),
        vp: Vp([vp; 32]),
        created: now_ms(),
    }
}

pub(crate) fn token() -> ImportToken {
    ImportToken {
        id: Uuid::new_v4(),
        created: 1,
        expires: 2,
        max_retrievals: 3,
        remaining: 3,
        public_key: vec![1, 2, 3],
        nonce: vec![4; 12],
        sealed_private_key: vec![5; 40],
    }
}

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

fn keys_versions_aliases_and_rings_survive_reopening(target: &dyn Target) {
    let instance = Uuid::new_v4();
    let first = key(instance, "first");
    {
        let store = target.open();
        store.create_key(&first, &version(1, 1)).unwrap();
        let rotated = KeyMeta {
            newest_version: 2,
            ..first.clone()
        };
        store.add_version(&rotated, 1, &version(2, 2)).unwrap();
        // A second rotation based on the stale version is refused.
        assert!(matches!(
            store.add_version(&rotated, 1, &version(3, 2)),
            Err(StoreError::Conflict(_))
        ));
        store
            .create_key_ring(
                instance,
                &KeyRing {
                    id: "ring".to_owned(),
                    created: 1,
                    created_by: "t".to_owned(),
                },
            )
            .unwrap();
    }
    let store = target.open();
    let by_alias = store.key(instance, "first-alias").unwrap().unwrap();
    assert_eq!(by_alias.id, first.id);
    assert_eq!(by_alias.newest_version, 2);
    let versions = store.versions(instance, first.id).unwrap();
    assert_eq!(
        versions.iter().map(|v| v.version).collect::<Vec<_>>(),
        [1, 2]
    );
    assert_eq!(
        store.version(instance, first.id, 2).unwrap().as_ref(),
        Some(&versions[1])
    );
    assert_eq!(store.version(instance, first.id, 3).unwrap(), None);
    assert_eq!(
        store.count_by_vp(instance).unwrap(),
        vec![(Vp([1; 32]), 1), (Vp([2; 32]), 1)]
    );
    assert!(store.count_by_vp(Uuid::new_v4()).unwrap().is_empty());
    assert_eq!(store.key_rings(instance).unwrap().len(), 2);
    // Another instance sees nothing.
    assert!(
        store
            .key(Uuid::new_v4(), &first.id.to_string())
            .unwrap()
            .is_none()
    );
}

fn import_tokens_and_journals_survive_reopening(target: &dyn Target) {
    let instance = Uuid::new_v4();
    let stored = token();
    let journal = Journal::begin(Vp([1; 32]), Vp([2; 32]), 10, 5);
    {
        let store = target.open();
        assert_eq!(store.import_token(instance).unwrap(), None);
        assert_eq!(store.rotation_journal(instance).unwrap(), None);
        store
            .update_import_token(instance, &mut |slot| {
                *slot = Some(stored.clone());
                Ok(())
            })
            .unwrap();
        store.put_rotation_journal(instance, &journal).unwrap();
    }
    let store = target.open();
    assert_eq!(store.import_token(instance).unwrap(), Some(stored.clone()));
    assert_eq!(store.rotation_journal(instance).unwrap(), Some(journal));
    // A refused change stores nothing.
    let refused = store.update_import_token(instance, &mut |slot| {
        *slot = None;
        Err(StoreError::Refused("no".to_owned()))
    });
    assert!(matches!(refused, Err(StoreError::Refused(_))));
    assert_eq!(store.import_token(instance).unwrap(), Some(stored));
    let removed = store
        .update_import_token(instance, &mut |slot| {
            *slot = None;
            Ok(())
        })
        .unwrap();
    assert_eq!(removed, None);
    assert_eq!(store.import_token(instance).unwrap(), None);
}

fn alias_conflicts_and_refused_updates_change_nothing(target: &dyn Target) {
    let store = target.open();
    let instance = Uuid::new_v4();
    let a = key(instance, "a");
    let b = key(instance, "b");
    store.create_key(&a, &version(1, 1)).unwrap();
    store.create_key(&b, &version(1, 1)).unwrap();
    assert!(matches!(
        store.add_alias(instance, b.id, "a-alias"),
        Err(StoreError::Conflict(_))
    ));
    // A key whose alias is taken is not created at all.
    let c = KeyMeta {
        aliases: vec!["b-alias".to_owned()],
        ..key(instance, "c")
    };
    assert!(matches!(
        store.create_key(&c, &version(1, 1)),
        Err(StoreError::Conflict(_))
    ));
    assert!(store.key(instance, &c.id.to_string()).unwrap().is_none());
    let added = store.add_alias(instance, b.id, "second").unwrap();
    assert_eq!(added.aliases, ["b-alias", "second"]);
    assert_eq!(store.key(instance, "second").unwrap().unwrap().id, b.id);
    let removed = store.remove_alias(instance, b.id, "second").unwrap();
    assert_eq!(removed.aliases, ["b-alias"]);
    assert!(store.key(instance, "second").unwrap().is_none());
    assert!(matches!(
        store.remove_alias(instance, b.id, "second"),
        Err(StoreError::NotFound(_))
    ));
    let refused = store.update(instance, a.id, &mut |k| {
        k.state = KeyState::Suspended;
        Err(StoreError::Refused("no".to_owned()))
    });
    assert!(refused.is_err());
    assert_eq!(
        store
            .key(instance, &a.id.to_string())
            .unwrap()
            .unwrap()
            .state,
        KeyState::Active
    );
    let updated = store
        .update(instance, a.id, &mut |k| {
            k.description = "changed".to_owned();
            Ok(())
        })
        .unwrap();
    assert_eq!(store.key(instance, "a-alias").unwrap().unwrap(), updated);
    assert!(matches!(
        store.update(instance, Uuid::new_v4(), &mut |_| Ok(())),
        Err(StoreError::NotFound(_))
    ));
    let (listed, total) = store.list(instance, &all(1)).unwrap();
    assert_eq!((listed.len(), total), (1, 2));
    store.purge(instance, a.id).unwrap();
    assert!(matches!(
        store.purge(instance, a.id),
        Err(StoreError::NotFound(_))
    ));
    assert!(store.key(instance, "a-alias").unwrap().is_none());
    assert!(store.versions(instance, a.id).unwrap().is_empty());
}

fn listing_filters_and_pages(target: &dyn Target) {
    let store = target.open();
    let instance = Uuid::new_v4();
    let mut keys: Vec<KeyMeta> = (0..5)
        .map(|n| KeyMeta {
            created: 1000 + n,
            ..unaliased(instance, &format!("k{n}"))
        })
        .collect();
    keys[1].state = KeyState::Suspended;
    keys[2].state = KeyState::Destroyed;
    keys[3].extractable = true;
    keys[4].key_ring = "ring".to_owned();
    let batch: Vec<(KeyMeta, KeyVersion)> =
        keys.iter().map(|k| (k.clone(), version(1, 1))).collect();
    store.create_keys(&batch).unwrap();
    let ids = |filter: &ListFilter| -> (Vec<Uuid>, u64) {
        let (listed, total) = store.list(instance, filter).unwrap();
        (listed.iter().map(|k| k.id).collect(), total)
    };
    // Destroyed keys are left out unless asked for; the order is by creation.
    assert_eq!(
        ids(&all(10)),
        (vec![keys[0].id, keys[1].id, keys[3].id, keys[4].id], 4)
    );
    assert_eq!(
        ids(&ListFilter {
            offset: 1,
            ..all(2)
        }),
        (vec![keys[1].id, keys[3].id], 4)
    );
    assert_eq!(
        ids(&ListFilter {
            states: vec![KeyState::Destroyed, KeyState::Suspended],
            ..all(10)
        }),
        (vec![keys[1].id, keys[2].id], 2)
    );
    assert_eq!(
        ids(&ListFilter {
            extractable: Some(true),
            ..all(10)
        }),
        (vec![keys[3].id], 1)
    );
    assert_eq!(
        ids(&ListFilter {
            key_ring: Some("ring".to_owned()),
            extractable: Some(false),
            ..all(10)
        }),
        (vec![keys[4].id], 1)
    );
    assert_eq!(store.list(Uuid::new_v4(), &all(10)).unwrap(), (vec![], 0));
}

fn key_rings_are_created_once_and_deleted_only_when_empty(target: &dyn Target) {
    let store = target.open();
    let instance = Uuid::new_v4();
    let ring = |id: &str| KeyRing {
        id: id.to_owned(),
        created: 7,
        created_by: "t".to_owned(),
    };
    assert!(matches!(
        store.create_key_ring(instance, &ring("default")),
        Err(StoreError::Conflict(_))
    ));
    store.create_key_ring(instance, &ring("b")).unwrap();
    store.create_key_ring(instance, &ring("B")).unwrap();
    assert!(matches!(
        store.create_key_ring(instance, &ring("b")),
        Err(StoreError::Conflict(_))
    ));
    assert_eq!(
        store
            .key_rings(instance)
            .unwrap()
            .iter()
            .map(|r| r.id.as_str())
            .collect::<Vec<_>>(),
        ["default", "B", "b"]
    );
    let k = KeyMeta {
        key_ring: "b".to_owned(),
        ..unaliased(instance, "k")
    };
    store.create_key(&k, &version(1, 1)).unwrap();
    assert!(matches!(
        store.delete_key_ring(instance, "b"),
        Err(StoreError::Refused(_))
    ));
    assert!(matches!(
        store.delete_key_ring(instance, "default"),
        Err(StoreError::Refused(_))
    ));
    store.purge(instance, k.id).unwrap();
    store.delete_key_ring(instance, "b").unwrap();
    assert!(matches!(
        store.delete_key_ring(instance, "b"),
        Err(StoreError::NotFound(_))
    ));
    assert_eq!(store.key_rings(instance).unwrap().len(), 2);
}

fn instance_policies_are_replaced_whole(target: &dyn Target) {
    let store = target.open();
    let instance = Uuid::new_v4();
    assert!(store.instance_policies(instance).unwrap().is_empty());
    let mut policies = InstancePolicies::new();
    policies.insert(
        "dualAuthDelete".to_owned(),
        InstancePolicyRecord {
            enabled: true,
            created: Some(1),
            created_by: Some("alice".to_owned()),
            ..InstancePolicyRecord::default()
        },
    );
    policies.insert(
        "allowedIP".to_owned(),
        InstancePolicyRecord {
            enabled: false,
            attributes: Some(serde_json::json!({"allowed_ip": ["10.0.0.0/8"]})),
            ..InstancePolicyRecord::default()
        },
    );
    store.set_instance_policies(instance, &policies).unwrap();
    assert_eq!(store.instance_policies(instance).unwrap(), policies);
    policies.remove("allowedIP");
    store.set_instance_policies(instance, &policies).unwrap();
    assert_eq!(store.instance_policies(instance).unwrap(), policies);
    assert!(store.instance_policies(Uuid::new_v4()).unwrap().is_empty());
}

fn a_reported_vp_that_differs_from_the_blob_prefix_is_refused_and_stores_nothing(
    target: &dyn Target,
) {
    let store = target.open();
    let instance = Uuid::new_v4();
    let a = key(instance, "a");
    // The blob is wrapped under VP 1; the reply claims VP 2.
    let lying = KeyVersion {
        vp: Vp([2; 32]),
        ..version(1, 1)
    };
    assert!(matches!(
        store.create_key(&a, &lying),
        Err(StoreError::Refused(_))
    ));
    assert!(store.key(instance, &a.id.to_string()).unwrap().is_none());
    assert!(store.count_by_vp(instance).unwrap().is_empty());

    store.create_key(&a, &version(1, 1)).unwrap();
    let rotated = KeyMeta {
        newest_version: 2,
        ..a
    };
    let lying = KeyVersion {
        vp: Vp([2; 32]),
        ..version(2, 1)
    };
    assert!(matches!(
        store.add_version(&rotated, 1, &lying),
        Err(StoreError::Refused(_))
    ));
    let stored = store
        .blobs_under(instance, &Vp([1; 32]), 0, i64::MAX, 10)
        .unwrap();
    let rewrapped = [vec![3u8; 32], vec![9u8; 28]].concat();
    let refused = store.replace_blobs(&[BlobReplacement {
        position: stored[0].position,
        old: stored[0].blob.clone(),
        new: rewrapped.clone(),
        vp: Vp([2; 32]),
    }]);
    assert!(
        matches!(refused, Err(StoreError::Refused(_))),
        "{refused:?}"
    );
    assert_eq!(store.count_by_vp(instance).unwrap(), vec![(Vp([1; 32]), 1)]);

    // A truthful reply is stored under the blob's own prefix.
    let replaced = store
        .replace_blobs(&[BlobReplacement {
            position: stored[0].position,
            old: stored[0].blob.clone(),
            new: rewrapped,
            vp: Vp([3; 32]),
        }])
        .unwrap();
    assert_eq!(replaced, 1);
    assert_eq!(store.count_by_vp(instance).unwrap(), vec![(Vp([3; 32]), 1)]);
}

fn blobs_are_read_in_position_ranges_and_replaced_only_if_unchanged(target: &dyn Target) {
    let store = target.open();
    let (instance, other) = (Uuid::new_v4(), Uuid::new_v4());
    let (old, new) = (Vp([1; 32]), Vp([2; 32]));
    let mut batch: Vec<(KeyMeta, KeyVersion)> = (0..50)
        .map(|n| {
            let mut k = unaliased(instance, &format!("k{n}"));
            k.extractable = n % 2 == 0;
            (k, version(1, 1))
        })
        .collect();
    batch.push((unaliased(other, "elsewhere"), version(1, 1)));
    store.create_keys(&batch).unwrap();
    assert_eq!(store.count_under(instance, &old).unwrap(), 50);
    assert_eq!(store.count_under(other, &old).unwrap(), 1);
    assert_eq!(store.count_under(instance, &new).unwrap(), 0);
    assert_eq!(store.positions_under(instance, &new).unwrap(), None);
    let (lo, hi) = store.positions_under(instance, &old).unwrap().unwrap();

    // Every blob of the instance, in increasing positions, in pages.
    let mut read = Vec::new();
    let mut after = lo - 1;
    loop {
        let page = store.blobs_under(instance, &old, after, hi, 7).unwrap();
        let Some(last) = page.last() else { break };
        assert!(page.len() <= 7);
        after = last.position;
        read.extend(page);
    }
    assert_eq!(read.len(), 50);
    assert!(read.windows(2).all(|w| w[0].position < w[1].position));
    assert_eq!((read[0].position, read[49].position), (lo, hi));
    for (blob, (key, first)) in read.iter().zip(&batch) {
        assert_eq!(
            (blob.key, blob.version, blob.extractable, &blob.blob),
            (key.id, 1, key.extractable, &first.blob)
        );
    }
    // `until` is inclusive, `after` exclusive.
    let middle = store
        .blobs_under(instance, &old, read[9].position, read[19].position, 100)
        .unwrap();
    assert_eq!(middle, read[10..20]);

    // Rows changed since they were read are left alone.
    let rewrap = |blob: &crate::StoredBlob| BlobReplacement {
        position: blob.position,
        old: blob.blob.clone(),
        new: [vec![2u8; 32], blob.key.as_bytes().to_vec()].concat(),
        vp: new,
    };
    let mut stale = rewrap(&read[0]);
    stale.old = vec![0; 60];
    let replacements: Vec<BlobReplacement> = std::iter::once(stale)
        .chain(read[1..].iter().map(rewrap))
        .collect();
    assert_eq!(store.replace_blobs(&replacements).unwrap(), 49);
    assert_eq!(store.replace_blobs(&replacements).unwrap(), 0);
    assert_eq!(store.replace_blobs(&[]).unwrap(), 0);
    assert_eq!(store.count_under(instance, &old).unwrap(), 1);
    assert_eq!(store.count_under(instance, &new).unwrap(), 49);
    assert_eq!(
        store.positions_under(instance, &old).unwrap(),
        Some((lo, lo))
    );
    let (key1, _) = &batch[1];
    let stored = store.version(instance, key1.id, 1).unwrap().unwrap();
    assert_eq!((stored.vp, &stored.blob), (new, &replacements[1].new));
}

fn a_unit_identity_is_pinned_once_and_its_counter_never_goes_down(target: &dyn Target) {
    let unit = Uuid::new_v4();
    let identity = SigningKey::generate(SigAlg::P256Sha256).public_key();
    let other = SigningKey::generate(SigAlg::P256Sha256).public_key();
    let record = |identity: &PublicKey, last_counter| UnitRecord {
        identity: identity.clone(),
        last_counter,
    };
    {
        let store = target.open();
        assert_eq!(store.unit_record(unit).unwrap(), None);
        store.note_unit(unit, &record(&identity, 4)).unwrap();
        store.note_unit(unit, &record(&identity, 2)).unwrap();
        store.note_unit(unit, &record(&other, 9)).unwrap();
        assert_eq!(store.unit_record(unit).unwrap(), Some(record(&identity, 4)));
        store.note_unit(unit, &record(&identity, 7)).unwrap();
    }
    let store = target.open();
    assert_eq!(store.unit_record(unit).unwrap(), Some(record(&identity, 7)));
}

fn a_journal_update_stores_only_what_the_change_accepts(target: &dyn Target) {
    let store = target.open();
    let instance = Uuid::new_v4();
    let begun = Journal::begin(Vp([1; 32]), Vp([2; 32]), 10, 5);
    let seen = store
        .update_rotation_journal(instance, &mut |journal| {
            assert!(journal.is_none());
            *journal = Some(begun.clone());
            Ok(true)
        })
        .unwrap();
    assert_eq!(seen, Some(begun.clone()));
    // Declined: the edit is returned but not stored.
    let declined = store
        .update_rotation_journal(instance, &mut |journal| {
            if let Some(journal) = journal {
                journal.record(3, 6);
            }
            Ok(false)
        })
        .unwrap();
    assert_eq!(declined.map(|j| j.done), Some(3));
    assert_eq!(
        store.rotation_journal(instance).unwrap(),
        Some(begun.clone())
    );
    let failed = store.update_rotation_journal(instance, &mut |journal| {
        *journal = None;
        Err(StoreError::Refused("no".to_owned()))
    });
    assert!(matches!(failed, Err(StoreError::Refused(_))));
    assert_eq!(store.rotation_journal(instance).unwrap(), Some(begun));
    let removed = store
        .update_rotation_journal(instance, &mut |journal| {
            *journal = None;
            Ok(true)
        })
        .unwrap();
    assert_eq!(removed, None);
    assert_eq!(store.rotation_journal(instance).unwrap(), None);
}

fn no_key_version_is_stored_under_a_master_key_a_rotation_closed(target: &dyn Target) {
    let store = target.open();
    let (instance, other) = (Uuid::new_v4(), Uuid::new_v4());
    let a = key(instance, "a");
    store.create_key(&a, &version(1, 1)).unwrap();
    let mut journal = Journal::begin(Vp([1; 32]), Vp([2; 32]), 1, 5);
    store.put_rotation_journal(instance, &journal).unwrap();
    // Open but not closing: versions under the source are still stored.
    let b = key(instance, "b");
    store.create_key(&b, &version(1, 1)).unwrap();
    journal.close_source(6);
    store
        .update_rotation_journal(instance, &mut |stored| {
            *stored = Some(journal.clone());
            Ok(true)
        })
        .unwrap();
    let c = key(instance, "c");
    assert!(matches!(
        store.create_key(&c, &version(1, 1)),
        Err(StoreError::Retired(vp)) if vp == Vp([1; 32])
    ));
    assert!(store.key(instance, "c-alias").unwrap().is_none());
    let rotated = KeyMeta {
        newest_version: 2,
        ..a
    };
    assert!(matches!(
        store.add_version(&rotated, 1, &version(2, 1)),
        Err(StoreError::Retired(_))
    ));
    let bulk = vec![
        (unaliased(instance, "d"), version(1, 2)),
        (unaliased(instance, "e"), version(1, 1)),
    ];
    assert!(matches!(
        store.create_keys(&bulk),
        Err(StoreError::Retired(_))
    ));
    assert_eq!(store.count_under(instance, &Vp([1; 32])).unwrap(), 2);
    assert_eq!(store.count_under(instance, &Vp([2; 32])).unwrap(), 0);
    // Under the target master key, and in other instances, versions are stored.
    store.create_key(&c, &version(1, 2)).unwrap();
    store.add_version(&rotated, 1, &version(2, 2)).unwrap();
    store.create_key(&key(other, "f"), &version(1, 1)).unwrap();
    // Put (not only update) closes too.
    journal.close_source(7);
    store.put_rotation_journal(other, &journal).unwrap();
    assert!(matches!(
        store.create_key(&key(other, "g"), &version(1, 1)),
        Err(StoreError::Retired(_))
    ));
}

fn a_lease_has_one_holder_until_it_expires(target: &dyn Target) {
    let store = target.open();
    assert!(store.take_lease("rotation/1", "a", 100, 50).unwrap());
    assert!(!store.take_lease("rotation/1", "b", 120, 50).unwrap());
    // A renewal by the holder extends it.
    assert!(store.take_lease("rotation/1", "a", 140, 50).unwrap());
    assert!(!store.take_lease("rotation/1", "b", 170, 50).unwrap());
    assert!(store.take_lease("rotation/2", "b", 170, 50).unwrap());
    assert!(store.take_lease("purge", "b", 170, 50).unwrap());
    assert_eq!(
        store.leases("rotation/", 170).unwrap(),
        vec![
            Lease {
                name: "rotation/1".to_owned(),
                holder: "a".to_owned(),
                expires: 190,
            },
            Lease {
                name: "rotation/2".to_owned(),
                holder: "b".to_owned(),
                expires: 220,
            },
        ]
    );
    // Expired: another replica takes it over.
    assert!(store.take_lease("rotation/1", "b", 190, 50).unwrap());
    assert_eq!(store.leases("rotation/1", 200).unwrap()[0].holder, "b");
    // Only the holder releases it.
    store.release_lease("rotation/1", "a").unwrap();
    assert_eq!(store.leases("rotation/1", 200).unwrap().len(), 1);
    store.release_lease("rotation/1", "b").unwrap();
    assert!(store.leases("rotation/1", 200).unwrap().is_empty());
    assert!(store.take_lease("rotation/1", "a", 200, 50).unwrap());
    assert!(store.leases("rotation/", 10_000).unwrap().is_empty());
}

fn event(key: &str) -> KeyEventRecord {
    KeyEventRecord {
        event: "create".to_owned(),
        key: key.to_owned(),
        caller: "alice".to_owned(),
        verdict: Verdict::Accepted,
    }
}

fn key_events_chain_and_countersignatures_are_kept(target: &dyn Target) {
    let store = target.open();
    let instance = Uuid::new_v4();
    let chain = AuditChain::Instance(instance);
    assert_eq!(store.audit_head(chain).unwrap(), ChainHead::EMPTY);
    for key in ["a", "b", "c"] {
        store
            .append_key_event(instance, &mut |mut head| {
                let bytes = head.append(5, event(key));
                (head, bytes)
            })
            .unwrap();
    }
    let entries = store.audit_entries(chain).unwrap();
    assert_eq!(entries.len(), 3);
    let head = store.audit_head(chain).unwrap();
    assert_eq!(head.seq, 3);
    assert_eq!(head.hash, entry_hash(&entries[2].entry));
    assert_eq!(
        store.audit_head(AuditChain::Unit(instance)).unwrap(),
        ChainHead::EMPTY
    );

    let identity = SigningKey::generate(SigAlg::P256Sha256);
    let (unit, other_unit) = (Uuid::new_v4(), Uuid::new_v4());
    let first = Countersignature::sign(&identity, unit, instance, head, 1);
    let second = Countersignature::sign(&identity, other_unit, instance, head, 2);
    store.add_countersignature(&second).unwrap();
    store.add_countersignature(&first).unwrap();
    // The same unit countersigning the same entry again replaces its countersignature.
    let again = Countersignature::sign(&identity, unit, instance, head, 3);
    store.add_countersignature(&again).unwrap();
    let mut expected = vec![again, second];
    expected.sort_by_key(|c| c.unit);
    assert_eq!(store.countersignatures(instance).unwrap(), expected);
    assert!(store.countersignatures(Uuid::new_v4()).unwrap().is_empty());
}

fn admin_entries(count: u64) -> (Vec<StoredEntry>, ChainHead) {
    let mut head = ChainHead::EMPTY;
    let entries = (1..=count)
        .map(|counter| StoredEntry {
            entry: head.append(
                9,
                AdminRecord {
                    signers: Vec::new(),
                    action: "zeroize".to_owned(),
                    command: [0; 32],
                    counter,
                    verdict: Verdict::Accepted,
                },
            ),
            signature: vec![1],
        })
        .collect();
    (entries, head)
}

fn unit_entries_must_continue_the_stored_chain(target: &dyn Target) {
    let store = target.open();
    let unit = Uuid::new_v4();
    let (entries, head) = admin_entries(3);
    store.append_unit_entries(unit, &entries[..1]).unwrap();
    let refused = store.append_unit_entries(unit, &entries[2..]);
    assert!(matches!(refused, Err(StoreError::Refused(_))));
    assert_eq!(
        store.append_unit_entries(unit, &entries[1..]).unwrap(),
        head
    );
    assert_eq!(
        store.audit_entries(AuditChain::Unit(unit)).unwrap(),
        entries
    );
    assert_eq!(store.audit_head(AuditChain::Unit(unit)).unwrap(), head);
}

/// Threads, each with its own replica's store, started together.
const WRITERS: usize = 4;

fn in_parallel(target: &dyn Target, work: impl Fn(&dyn Store, usize) + Sync) {
    let stores = target.replicas(WRITERS);
    let barrier = Barrier::new(WRITERS);
    std::thread::scope(|scope| {
        for (n, store) in stores.iter().enumerate() {
            let (barrier, work) = (&barrier, &work);
            scope.spawn(move || {
                barrier.wait();
                work(store.as_ref(), n);
            });
        }
    });
}

fn concurrent_updates_lose_nothing(target: &dyn Target) {
    const EACH: usize = 25;
    let setup = target.open();
    let instance = Uuid::new_v4();
    let k = key(instance, "k");
    setup.create_key(&k, &version(1, 1)).unwrap();
    in_parallel(target, |store, n| {
        for i in 0..EACH {
            store
                .update(instance, k.id, &mut |key| {
                    key.labels.push(format!("{n}-{i}"));
                    Ok(())
                })
                .unwrap();
            store
                .update_import_token(instance, &mut |slot| {
                    let stored = slot.get_or_insert_with(|| ImportToken {
                        remaining: 0,
                        ..token()
                    });
                    stored.remaining += 1;
                    Ok(())
                })
                .unwrap();
        }
    });
    let labels = setup.key(instance, "k-alias").unwrap().unwrap().labels;
    assert_eq!(labels.len(), WRITERS * EACH);
    let remaining = setup.import_token(instance).unwrap().unwrap().remaining;
    assert_eq!(remaining as usize, WRITERS * EACH);
}

fn concurrent_rotations_of_one_key_add_each_version_once(target: &dyn Target) {
    const TRIES: usize = 10;
    let setup = target.open();
    let instance = Uuid::new_v4();
    let k = key(instance, "k");
    setup.create_key(&k, &version(1, 1)).unwrap();
    let added = Mutex::new(0usize);
    in_parallel(target, |store, _| {
        for _ in 0..TRIES {
            let current = store.key(instance, "k-alias").unwrap().unwrap();
            let next = current.newest_version + 1;
            let rotated = KeyMeta {
                newest_version: next,
                ..current.clone()
            };
            match store.add_version(&rotated, current.newest_version, &version(next, 1)) {
                Ok(()) => *added.lock().unwrap() += 1,
                Err(StoreError::Conflict(_)) => {}
                Err(other) => panic!("unexpected {other:?}"),
            }
        }
    });
    let added = *added.lock().unwrap();
    // A rotation is refused only when another one succeeded since it read the key, and each
    // success refuses at most one attempt of every other thread.
    assert!(added >= TRIES, "{added}");
    let versions = setup.versions(instance, k.id).unwrap();
    assert_eq!(versions.len(), added + 1);
    assert!(versions.iter().zip(1..).all(|(v, n)| v.version == n));
    let newest = setup
        .key(instance, "k-alias")
        .unwrap()
        .unwrap()
        .newest_version;
    assert_eq!(newest as usize, added + 1);
}

fn concurrent_rewrites_replace_each_blob_once(target: &dyn Target) {
    let setup = target.open();
    let instance = Uuid::new_v4();
    let batch: Vec<(KeyMeta, KeyVersion)> = (0..200)
        .map(|n| (unaliased(instance, &format!("k{n}")), version(1, 1)))
        .collect();
    setup.create_keys(&batch).unwrap();
    let read = setup
        .blobs_under(instance, &Vp([1; 32]), 0, i64::MAX, 1000)
        .unwrap();
    let replaced = Mutex::new(0u64);
    in_parallel(target, |store, n| {
        // Each writer rewraps every blob to its own bytes, in its own order.
        let mut replacements: Vec<BlobReplacement> = read
            .iter()
            .map(|blob| BlobReplacement {
                position: blob.position,
                old: blob.blob.clone(),
                new: [vec![2u8; 32], vec![n as u8; 28]].concat(),
                vp: Vp([2; 32]),
            })
            .collect();
        if n % 2 == 1 {
            replacements.reverse();
        }
        for chunk in replacements.chunks(50) {
            *replaced.lock().unwrap() += store.replace_blobs(chunk).unwrap();
        }
    });
    assert_eq!(*replaced.lock().unwrap(), 200);
    assert_eq!(setup.count_under(instance, &Vp([2; 32])).unwrap(), 200);
}

fn concurrent_lease_takers_have_one_winner(target: &dyn Target) {
    for round in 0..10 {
        let winners = Mutex::new(Vec::new());
        let name = format!("lease-{round}");
        in_parallel(target, |store, n| {
            if store
                .take_lease(&name, &format!("r{n}"), 1000, 100)
                .unwrap()
            {
                winners.lock().unwrap().push(n);
            }
        });
        let winners = winners.into_inner().unwrap();
        assert_eq!(winners.len(), 1, "{winners:?}");
    }
}

fn concurrent_appends_keep_one_chain(target: &dyn Target) {
    const EACH: usize = 10;
    let setup = target.open();
    let instance = Uuid::new_v4();
    in_parallel(target, |store, n| {
        for i in 0..EACH {
            store
                .append_key_event(instance, &mut |mut head| {
                    let bytes = head.append(5, event(&format!("{n}-{i}")));
                    (head, bytes)
                })
                .unwrap();
        }
    });
    let chain = AuditChain::Instance(instance);
    let entries = setup.audit_entries(chain).unwrap();
    assert_eq!(entries.len(), WRITERS * EACH);
    let head = setup.audit_head(chain).unwrap();
    assert_eq!(head.seq as usize, WRITERS * EACH);
    assert_eq!(head.hash, entry_hash(&entries[entries.len() - 1].entry));
}

/// PostgreSQL killed with SIGKILL while writers store keys, then started again: every key a
/// writer was told is stored is there with its first version, and no key is half-stored.
#[test]
fn postgres_keeps_every_acknowledged_write_across_a_crash() {
    let dir = tempfile::tempdir().unwrap();
    let mut cluster = TempCluster::start(&dir.path().join("pg")).unwrap();
    let config = PgConfig {
        url: cluster.url(),
        ca_cert: None,
        max_connections: 4,
    };
    let store = PgStore::connect(&config).unwrap();
    let instance = Uuid::new_v4();
    let acknowledged = Mutex::new(Vec::new());
    let stop = std::sync::atomic::AtomicBool::new(false);
    std::thread::scope(|scope| {
        for _ in 0..2 {
            scope.spawn(|| {
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let k = key(instance, &Uuid::new_v4().to_string());
                    if store.create_key(&k, &version(1, 1)).is_ok() {
                        acknowledged.lock().unwrap().push(k.id);
                    }
                }
            });
        }
        while acknowledged.lock().unwrap().len() < 200 {
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        cluster.kill_and_restart().unwrap();
        let before = acknowledged.lock().unwrap().len();
        while acknowledged.lock().unwrap().len() < before + 200 {
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
    });
    drop(store);
    let store = PgStore::connect(&config).unwrap();
    let acknowledged = acknowledged.into_inner().unwrap();
    for id in &acknowledged {
        let stored = store.key(instance, &id.to_string()).unwrap();
        assert!(stored.is_some(), "acknowledged key {id} is missing");
        assert_eq!(store.versions(instance, *id).unwrap().len(), 1);
    }
    // Nothing half-written: every stored key has its version and alias, and no more.
    let (keys, total) = store.list(instance, &all(u32::MAX / 2)).unwrap();
    assert!(total as usize >= acknowledged.len());
    for k in &keys {
        assert_eq!(store.versions(instance, k.id).unwrap().len(), 1);
        assert_eq!(
            store.key(instance, &k.aliases[0]).unwrap().map(|s| s.id),
            Some(k.id)
        );
    }
    assert_eq!(store.count_under(instance, &Vp([1; 32])).unwrap(), total);
}

/// Writes `text` as `name` in the cluster's data directory, owned by the cluster's user and
/// readable by it alone (PostgreSQL refuses a key file others can read).
fn cluster_file(cluster: &TempCluster, name: &str, text: &str) {
    use std::os::unix::fs::{MetadataExt as _, PermissionsExt as _};
    let data = cluster.dir().join("data");
    let owner = std::fs::metadata(&data).unwrap();
    let path = data.join(name);
    std::fs::write(&path, text).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    std::os::unix::fs::chown(&path, Some(owner.uid()), Some(owner.gid())).unwrap();
}

/// A CA and a certificate it signs for 127.0.0.1: (CA PEM, certificate PEM, key PEM).
fn database_certificate() -> (String, String, String) {
    use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
    let ca_key = KeyPair::generate().unwrap();
    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca_pem = ca.self_signed(&ca_key).unwrap().pem();
    let issuer = Issuer::new(ca, ca_key);
    let key = KeyPair::generate().unwrap();
    let cert = CertificateParams::new(vec!["127.0.0.1".to_owned()])
        .unwrap()
        .signed_by(&key, &issuer)
        .unwrap();
    (ca_pem, cert.pem(), key.serialize_pem())
}

/// With a CA certificate configured, the store speaks TLS to the database and accepts only a
/// server certificate that CA signed.
#[test]
fn postgres_over_tls_verifies_the_database_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let cluster = TempCluster::start(&dir.path().join("pg")).unwrap();
    let (ca, cert, key) = database_certificate();
    cluster_file(&cluster, "server.crt", &cert);
    cluster_file(&cluster, "server.key", &key);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let (client, connection) = tokio_postgres::connect(&cluster.url(), tokio_postgres::NoTls)
            .await
            .unwrap();
        let connection = tokio::spawn(connection);
        client
            .batch_execute("ALTER SYSTEM SET ssl = on")
            .await
            .unwrap();
        client
            .batch_execute("SELECT pg_reload_conf()")
            .await
            .unwrap();
        drop(client);
        let _ = connection.await;
    });
    let ca_file = dir.path().join("ca.pem");
    std::fs::write(&ca_file, &ca).unwrap();
    let config = PgConfig {
        url: cluster.url(),
        ca_cert: Some(ca_file),
        max_connections: 2,
    };
    // The reload takes effect in new sessions shortly after.
    let started = std::time::Instant::now();
    let store = loop {
        match PgStore::connect(&config) {
            Ok(store) => break store,
            Err(err) if started.elapsed().as_secs() > 10 => panic!("{err}"),
            Err(_) => std::thread::sleep(std::time::Duration::from_millis(100)),
        }
    };
    assert!(store.take_lease("tls", "a", 1, 10).unwrap());
    assert_eq!(store.leases("tls", 1).unwrap().len(), 1);

    let (other_ca, _, _) = database_certificate();
    let other_file = dir.path().join("other-ca.pem");
    std::fs::write(&other_file, other_ca).unwrap();
    let refused = PgStore::connect(&PgConfig {
        ca_cert: Some(other_file),
        ..config.clone()
    });
    assert!(
        matches!(refused, Err(StoreError::Database(_))),
        "{refused:?}"
    );
    let missing = PgStore::connect(&PgConfig {
        ca_cert: Some(dir.path().join("absent.pem")),
        ..config
    });
    assert!(
        matches!(missing, Err(StoreError::Database(_))),
        "{missing:?}"
    );
}

use super::migrations::{MIGRATIONS, Migration};
use super::*;
use crate::{KeyPolicies, KeyState};
use rotor_crypto::PublicKey;

fn key(instance: Uuid, name: &str) -> KeyMeta {
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

fn version(n: u32, vp: u8) -> KeyVersion {
    KeyVersion {
        version: n,
        id: Uuid::new_v4(),
        blob: [vec![vp; 32], vec![n as u8; 28]].concat(),
        vp: Vp([vp; 32]),
        created: now_ms(),
    }
}

#[test]
fn keys_versions_aliases_and_rings_survive_reopening() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("keys.db");
    let instance = Uuid::new_v4();
    let first = key(instance, "first");
    {
        let store = SqliteStore::open(&path).unwrap();
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
    let store = SqliteStore::open(&path).unwrap();
    let by_alias = store.key(instance, "first-alias").unwrap().unwrap();
    assert_eq!(by_alias.id, first.id);
    assert_eq!(by_alias.newest_version, 2);
    assert_eq!(store.versions(instance, first.id).unwrap().len(), 2);
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

fn token() -> ImportToken {
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

fn corrupt_message(result: Result<impl std::fmt::Debug, StoreError>) -> String {
    match result {
        Err(StoreError::Corrupt(why)) => why,
        other => panic!("expected a corrupt row, got {other:?}"),
    }
}

#[test]
fn a_corrupt_key_row_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(&dir.path().join("keys.db")).unwrap();
    let instance = Uuid::new_v4();
    let a = key(instance, "a");
    store.create_key(&a, &version(1, 1)).unwrap();
    store
        .lock()
        .unwrap()
        .execute(
            "UPDATE keys SET doc = '{\"name\": 7}' WHERE id = ?1",
            params![a.id.to_string()],
        )
        .unwrap();
    let why = corrupt_message(store.key(instance, &a.id.to_string()));
    assert!(
        why.contains(&format!("key {} of instance {instance}", a.id)),
        "{why}"
    );
    let why = corrupt_message(store.list(
        instance,
        &ListFilter {
            limit: 10,
            ..ListFilter::default()
        },
    ));
    assert!(why.contains(&format!("key {}", a.id)), "{why}");
}

#[test]
fn a_corrupt_key_version_row_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(&dir.path().join("keys.db")).unwrap();
    let instance = Uuid::new_v4();
    let a = key(instance, "a");
    store.create_key(&a, &version(1, 1)).unwrap();
    store
        .lock()
        .unwrap()
        .execute(
            "UPDATE key_versions SET vp = x'01' WHERE key_id = ?1",
            params![a.id.to_string()],
        )
        .unwrap();
    let why = corrupt_message(store.version(instance, a.id, 1));
    assert!(why.contains(&format!("version 1 of key {}", a.id)), "{why}");
}

#[test]
fn a_corrupt_import_token_row_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(&dir.path().join("keys.db")).unwrap();
    let (unparsable, keyless) = (Uuid::new_v4(), Uuid::new_v4());
    {
        let connection = store.lock().unwrap();
        connection
            .execute(
                "INSERT INTO import_tokens (instance, doc, sealed_private_key) VALUES (?1, '{\"id\": 1}', x'00')",
                params![unparsable.to_string()],
            )
            .unwrap();
        let doc = import_token_doc(keyless, &token()).unwrap();
        connection
            .execute(
                "INSERT INTO import_tokens (instance, doc) VALUES (?1, ?2)",
                params![keyless.to_string(), doc],
            )
            .unwrap();
    }
    for instance in [unparsable, keyless] {
        let why = corrupt_message(store.import_token(instance));
        assert!(
            why.contains(&format!("import token of instance {instance}")),
            "{why}"
        );
    }
}

#[test]
fn a_corrupt_rotation_journal_row_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(&dir.path().join("keys.db")).unwrap();
    let instance = Uuid::new_v4();
    store
        .lock()
        .unwrap()
        .execute(
            "INSERT INTO rotations (instance, doc) VALUES (?1, '{\"phase\": \"sideways\"}')",
            params![instance.to_string()],
        )
        .unwrap();
    let why = corrupt_message(store.rotation_journal(instance));
    assert!(
        why.contains(&format!("rotation journal of instance {instance}")),
        "{why}"
    );
}

#[test]
fn a_corrupt_instance_policy_row_is_named_and_an_old_one_still_reads() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(&dir.path().join("keys.db")).unwrap();
    let (old, broken) = (Uuid::new_v4(), Uuid::new_v4());
    let insert = |instance: Uuid, doc: &str| {
        store
            .lock()
            .unwrap()
            .execute(
                "INSERT INTO instance_policies (instance, doc) VALUES (?1, ?2)",
                params![instance.to_string(), doc],
            )
            .unwrap();
    };
    // The shape written before records carried attributes and times.
    insert(old, r#"{"dualAuthDelete": {"enabled": true}}"#);
    let policies = store.instance_policies(old).unwrap();
    assert!(policies["dualAuthDelete"].enabled);
    assert_eq!(policies["dualAuthDelete"].created, None);
    insert(broken, r#"{"allowedIP": {"enabled": "yes"}}"#);
    let why = corrupt_message(store.instance_policies(broken));
    assert!(
        why.contains(&format!("instance policy allowedIP of instance {broken}")),
        "{why}"
    );
    let mut changed = policies;
    changed.get_mut("dualAuthDelete").unwrap().enabled = false;
    store.set_instance_policies(old, &changed).unwrap();
    assert_eq!(store.instance_policies(old).unwrap(), changed);
}

#[test]
fn import_tokens_and_journals_survive_reopening() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("keys.db");
    let instance = Uuid::new_v4();
    let stored = token();
    let journal = Journal::begin(Vp([1; 32]), Vp([2; 32]), 10, 5);
    {
        let store = SqliteStore::open(&path).unwrap();
        store
            .update_import_token(instance, &mut |slot| {
                *slot = Some(stored.clone());
                Ok(())
            })
            .unwrap();
        store.put_rotation_journal(instance, &journal).unwrap();
    }
    let store = SqliteStore::open(&path).unwrap();
    let read = store.import_token(instance).unwrap();
    assert_eq!(read, Some(stored));
    assert_eq!(store.rotation_journal(instance).unwrap(), Some(journal));
    let removed = store
        .update_import_token(instance, &mut |slot| {
            *slot = None;
            Ok(())
        })
        .unwrap();
    assert_eq!(removed, None);
    assert_eq!(store.import_token(instance).unwrap(), None);
}

/// Rows as the previous version (schema 4) wrote them still open, the token's sealed
/// private key moved out of its document into its own column.
#[test]
fn rows_of_the_previous_version_still_open() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("keys.db");
    let (instance, broken) = (Uuid::new_v4(), Uuid::new_v4());
    let token_id = Uuid::new_v4();
    {
        let mut connection = connect(&path).unwrap();
        connection
            .execute_batch("CREATE TABLE schema_migrations (version INTEGER PRIMARY KEY, applied INTEGER NOT NULL)")
            .unwrap();
        let tx = connection.transaction().unwrap();
        for (index, migration) in MIGRATIONS.iter().take(4).enumerate() {
            let Migration::Sql(sql) = migration else {
                panic!("the first four migrations are SQL");
            };
            tx.execute_batch(sql).unwrap();
            tx.execute(
                "INSERT INTO schema_migrations (version, applied) VALUES (?1, 0)",
                params![i64::try_from(index + 1).unwrap()],
            )
            .unwrap();
        }
        let old_token = format!(
            r#"{{"id":"{token_id}","created":1,"expires":2,"max_retrievals":5,"remaining":4,"public_key":"AQID","sealed_private_key":"BQUF","nonce":"BAQE"}}"#
        );
        tx.execute(
            "INSERT INTO import_tokens (instance, doc) VALUES (?1, ?2)",
            params![instance.to_string(), old_token],
        )
        .unwrap();
        tx.execute(
            "INSERT INTO import_tokens (instance, doc) VALUES (?1, ?2)",
            params![
                broken.to_string(),
                r#"{"sealed_private_key":"not base64!"}"#
            ],
        )
        .unwrap();
        let old_journal = format!(
            r#"{{"from":"{}","to":"{}","phase":"reencrypting","total":3,"done":1,"started":1,"updated":2}}"#,
            Vp([1; 32]),
            Vp([2; 32])
        );
        tx.execute(
            "INSERT INTO rotations (instance, doc) VALUES (?1, ?2)",
            params![instance.to_string(), old_journal],
        )
        .unwrap();
        tx.commit().unwrap();
    }
    let store = SqliteStore::open(&path).unwrap();
    let token = store.import_token(instance).unwrap().unwrap();
    assert_eq!(token.id, token_id);
    assert_eq!(token.remaining, 4);
    assert_eq!(token.public_key, vec![1, 2, 3]);
    assert_eq!(token.sealed_private_key, vec![5, 5, 5]);
    assert_eq!(token.nonce, vec![4, 4, 4]);
    let doc: String = store
        .lock()
        .unwrap()
        .query_row(
            "SELECT doc FROM import_tokens WHERE instance = ?1",
            params![instance.to_string()],
            |row| row.get(0),
        )
        .unwrap();
    assert!(!doc.contains("sealed_private_key"), "{doc}");
    let journal = store.rotation_journal(instance).unwrap().unwrap();
    assert_eq!((journal.done, journal.waiting), (1, None));
    // A token the migration could not convert reads as corrupt, naming its instance.
    let why = corrupt_message(store.import_token(broken));
    assert!(
        why.contains(&format!("import token of instance {broken}")),
        "{why}"
    );
}

#[test]
fn alias_conflicts_and_refused_updates_change_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(&dir.path().join("keys.db")).unwrap();
    let instance = Uuid::new_v4();
    let a = key(instance, "a");
    let b = key(instance, "b");
    store.create_key(&a, &version(1, 1)).unwrap();
    store.create_key(&b, &version(1, 1)).unwrap();
    assert!(matches!(
        store.add_alias(instance, b.id, "a-alias"),
        Err(StoreError::Conflict(_))
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
    let (listed, total) = store
        .list(
            instance,
            &ListFilter {
                limit: 1,
                ..ListFilter::default()
            },
        )
        .unwrap();
    assert_eq!((listed.len(), total), (1, 2));
    store.purge(instance, a.id).unwrap();
    assert!(store.key(instance, "a-alias").unwrap().is_none());
    assert!(store.versions(instance, a.id).unwrap().is_empty());
}

#[test]
fn a_reported_vp_that_differs_from_the_blob_prefix_is_refused_and_stores_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(&dir.path().join("keys.db")).unwrap();
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

#[test]
fn a_unit_identity_is_pinned_once_and_its_counter_never_goes_down() {
    use rotor_crypto::{SigAlg, SigningKey};
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("keys.db");
    let unit = Uuid::new_v4();
    let identity = SigningKey::generate(SigAlg::P256Sha256).public_key();
    let other = SigningKey::generate(SigAlg::P256Sha256).public_key();
    let record = |identity: &PublicKey, last_counter| UnitRecord {
        identity: identity.clone(),
        last_counter,
    };
    {
        let store = SqliteStore::open(&path).unwrap();
        assert_eq!(store.unit_record(unit).unwrap(), None);
        store.note_unit(unit, &record(&identity, 4)).unwrap();
        store.note_unit(unit, &record(&identity, 2)).unwrap();
        store.note_unit(unit, &record(&other, 9)).unwrap();
        assert_eq!(store.unit_record(unit).unwrap(), Some(record(&identity, 4)));
        store.note_unit(unit, &record(&identity, 7)).unwrap();
    }
    let store = SqliteStore::open(&path).unwrap();
    assert_eq!(store.unit_record(unit).unwrap(), Some(record(&identity, 7)));
}

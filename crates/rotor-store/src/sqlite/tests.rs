//! What only the SQLite store has: rows written by earlier versions, and rows that do not
//! parse. Everything every backend does is in the conformance suite.

use super::migrations::{MIGRATIONS, Migration};
use super::*;
use crate::fixtures::{key, token, version};

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

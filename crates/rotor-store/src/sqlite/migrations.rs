//! The schema, as numbered migrations applied in order inside transactions.

use super::*;

/// One schema version.
pub(super) enum Migration {
    /// Statements SQL alone can run.
    Sql(&'static str),
    /// A change of stored data that needs more than SQL (decoding base64, for one).
    Rust(fn(&Transaction<'_>) -> Result<(), StoreError>),
}

/// Schema versions, applied in order, each once.
pub(super) const MIGRATIONS: &[Migration] = &[
    // 1: keys, versions, aliases, key rings, instance policies.
    Migration::Sql("CREATE TABLE keys (
        instance TEXT NOT NULL,
        id TEXT NOT NULL,
        state INTEGER NOT NULL,
        extractable INTEGER NOT NULL,
        key_ring TEXT NOT NULL,
        created INTEGER NOT NULL,
        doc TEXT NOT NULL,
        PRIMARY KEY (instance, id)
    );
    CREATE INDEX keys_by_creation ON keys (instance, created, id);
    CREATE TABLE key_versions (
        instance TEXT NOT NULL,
        key_id TEXT NOT NULL,
        version INTEGER NOT NULL,
        id TEXT NOT NULL,
        blob BLOB NOT NULL,
        vp BLOB NOT NULL,
        created INTEGER NOT NULL,
        PRIMARY KEY (instance, key_id, version)
    );
    CREATE INDEX key_versions_by_vp ON key_versions (vp);
    CREATE TABLE aliases (
        instance TEXT NOT NULL,
        alias TEXT NOT NULL,
        key_id TEXT NOT NULL,
        PRIMARY KEY (instance, alias)
    );
    CREATE TABLE key_rings (
        instance TEXT NOT NULL,
        id TEXT NOT NULL,
        created INTEGER NOT NULL,
        created_by TEXT NOT NULL,
        PRIMARY KEY (instance, id)
    );
    CREATE TABLE instance_policies (
        instance TEXT PRIMARY KEY,
        doc TEXT NOT NULL
    );"),
    // 2: the import token of each instance.
    Migration::Sql("CREATE TABLE import_tokens (
        instance TEXT PRIMARY KEY,
        doc TEXT NOT NULL
    );"),
    // 3: the master key rotation journal of each instance.
    Migration::Sql("CREATE TABLE rotations (
        instance TEXT PRIMARY KEY,
        doc TEXT NOT NULL
    );"),
    // 4: each version knows whether its key is extractable (part of a blob's binding), so a
    // rotation reads blobs and bindings sequentially, without a lookup per key.
    Migration::Sql("ALTER TABLE key_versions ADD COLUMN extractable INTEGER NOT NULL DEFAULT 0;
    UPDATE key_versions SET extractable = (
        SELECT k.extractable FROM keys k WHERE k.instance = key_versions.instance AND k.id = key_versions.key_id
    );"),
    // 5: an import token's sealed private key moves from its document into a column of bytes.
    Migration::Rust(sealed_private_keys_to_column),
    // 6: each unit's identity key, pinned on first contact, and the highest transaction
    // counter seen in its signed statuses (rollback detection, shared by replicas).
    Migration::Sql("CREATE TABLE unit_identities (
        unit TEXT PRIMARY KEY,
        identity TEXT NOT NULL,
        last_counter INTEGER NOT NULL
    );"),
    // 7: the audit chains: entries as the units and the service wrote them (`chain` is
    // `unit:<id>` or `instance:<id>`), each chain's head, and the units' countersignatures of
    // the key event chains.
    Migration::Sql("CREATE TABLE audit_entries (
        chain TEXT NOT NULL,
        seq INTEGER NOT NULL,
        entry BLOB NOT NULL,
        signature BLOB NOT NULL,
        PRIMARY KEY (chain, seq)
    );
    CREATE TABLE audit_heads (
        chain TEXT PRIMARY KEY,
        seq INTEGER NOT NULL,
        hash BLOB NOT NULL
    );
    CREATE TABLE audit_countersignatures (
        instance TEXT NOT NULL,
        seq INTEGER NOT NULL,
        unit TEXT NOT NULL,
        doc TEXT NOT NULL,
        PRIMARY KEY (instance, seq, unit)
    );"),
    // 8: the master key a rotation is closing, beside its journal, so storing a key version
    // checks it in the same transaction; leases on work that one replica does at a time.
    Migration::Sql("ALTER TABLE rotations ADD COLUMN closed_vp BLOB;
    CREATE TABLE leases (
        name TEXT PRIMARY KEY,
        holder TEXT NOT NULL,
        expires INTEGER NOT NULL
    );"),
    // 9: API keys managed through the API, shared by every replica (`crate::apikeys`).
    Migration::Sql("CREATE TABLE api_keys (
        id TEXT PRIMARY KEY,
        name TEXT NOT NULL,
        key_sha256 BLOB NOT NULL UNIQUE,
        role TEXT NOT NULL,
        instances TEXT NOT NULL,
        generation INTEGER NOT NULL,
        created INTEGER NOT NULL,
        created_by TEXT NOT NULL,
        rotated INTEGER,
        rotated_by TEXT,
        revoked INTEGER,
        revoked_by TEXT
    );
    CREATE UNIQUE INDEX api_keys_unrevoked_name ON api_keys (name) WHERE revoked IS NULL;"),
];

/// Migration 5. A document whose sealed private key does not decode is left as it is: it
/// then reads as corrupt, naming its instance, instead of stopping every instance's start.
pub(super) fn sealed_private_keys_to_column(tx: &Transaction<'_>) -> Result<(), StoreError> {
    /// Base64 text, as the previous version stored the sealed private key.
    #[derive(Deserialize)]
    struct Base64(#[serde(with = "b64")] Vec<u8>);

    tx.execute_batch("ALTER TABLE import_tokens ADD COLUMN sealed_private_key BLOB")?;
    let rows = tx
        .prepare("SELECT instance, doc FROM import_tokens")?
        .query_map([], |row| {
            Ok((row.get::<_, String>(0)?, row.get::<_, String>(1)?))
        })?
        .collect::<Result<Vec<_>, _>>()?;
    for (instance, doc) in rows {
        let Ok(mut fields) = serde_json::from_str::<serde_json::Map<_, _>>(&doc) else {
            continue;
        };
        let Some(Ok(Base64(sealed))) = fields
            .remove("sealed_private_key")
            .map(serde_json::from_value::<Base64>)
        else {
            continue;
        };
        tx.execute(
            "UPDATE import_tokens SET doc = ?2, sealed_private_key = ?3 WHERE instance = ?1",
            params![
                instance,
                serde_json::Value::Object(fields).to_string(),
                sealed
            ],
        )?;
    }
    Ok(())
}

pub(super) fn migrate(connection: &mut Connection) -> Result<(), StoreError> {
    connection.execute_batch("CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY, applied INTEGER NOT NULL)")?;
    let applied: u32 = connection.query_row(
        "SELECT COALESCE(MAX(version), 0) FROM schema_migrations",
        [],
        |row| row.get(0),
    )?;
    let known = u32::try_from(MIGRATIONS.len()).unwrap_or(u32::MAX);
    if applied > known {
        return Err(StoreError::Database(format!(
            "the database has schema version {applied}, newer than this rotor ({known}); upgrade rotor"
        )));
    }
    for (index, migration) in MIGRATIONS.iter().enumerate().skip(applied as usize) {
        let tx = connection.transaction()?;
        match migration {
            Migration::Sql(sql) => tx.execute_batch(sql)?,
            Migration::Rust(change) => change(&tx)?,
        }
        tx.execute(
            "INSERT INTO schema_migrations (version, applied) VALUES (?1, ?2)",
            params![i64::try_from(index + 1).unwrap_or(i64::MAX), now_ms()],
        )?;
        tx.commit()?;
    }
    Ok(())
}

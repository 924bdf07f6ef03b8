//! The PostgreSQL schema, as numbered migrations. Each is applied in its own transaction under
//! an advisory lock, so replicas that start at once apply it once.

use super::*;

/// The advisory lock key of schema changes.
const MIGRATION_LOCK: &str = "rotor:schema";

/// Schema versions, applied in order, each once. Version 1 is the schema of the SQLite store's
/// version 8, with positions as an identity column.
const MIGRATIONS: &[&str] = &[
    // 1: everything. `key_versions` fills pages to 45%, so a batch that rewrites every row of
    // a page finds room there for every new row version, and has no index on `blob` or `vp`:
    // a rewrite's updates stay in their page (HOT) and touch no index. Counting under a VP
    // scans.
    r#"CREATE TABLE keys (
        instance uuid NOT NULL,
        id uuid NOT NULL,
        state smallint NOT NULL,
        extractable boolean NOT NULL,
        key_ring text NOT NULL,
        created bigint NOT NULL,
        doc text NOT NULL,
        PRIMARY KEY (instance, id)
    );
    CREATE INDEX keys_by_creation ON keys (instance, created, id);
    CREATE TABLE key_versions (
        position bigint GENERATED ALWAYS AS IDENTITY,
        instance uuid NOT NULL,
        key_id uuid NOT NULL,
        version bigint NOT NULL,
        id uuid NOT NULL,
        extractable boolean NOT NULL,
        vp bytea NOT NULL,
        created bigint NOT NULL,
        blob bytea NOT NULL,
        PRIMARY KEY (instance, key_id, version)
    ) WITH (fillfactor = 45);
    CREATE UNIQUE INDEX key_versions_by_position ON key_versions (position);
    CREATE TABLE aliases (
        instance uuid NOT NULL,
        alias text NOT NULL,
        key_id uuid NOT NULL,
        PRIMARY KEY (instance, alias)
    );
    CREATE INDEX aliases_by_key ON aliases (instance, key_id);
    CREATE TABLE key_rings (
        instance uuid NOT NULL,
        id text COLLATE "C" NOT NULL,
        created bigint NOT NULL,
        created_by text NOT NULL,
        PRIMARY KEY (instance, id)
    );
    CREATE TABLE instance_policies (
        instance uuid PRIMARY KEY,
        doc text NOT NULL
    );
    CREATE TABLE import_tokens (
        instance uuid PRIMARY KEY,
        doc text NOT NULL,
        sealed_private_key bytea
    );
    CREATE TABLE rotations (
        instance uuid PRIMARY KEY,
        doc text NOT NULL,
        closed_vp bytea
    );
    CREATE TABLE leases (
        name text COLLATE "C" PRIMARY KEY,
        holder text NOT NULL,
        expires bigint NOT NULL
    );
    CREATE TABLE unit_identities (
        unit uuid PRIMARY KEY,
        identity text NOT NULL,
        last_counter bigint NOT NULL
    );
    CREATE TABLE audit_entries (
        chain text NOT NULL,
        seq bigint NOT NULL,
        entry bytea NOT NULL,
        signature bytea NOT NULL,
        PRIMARY KEY (chain, seq)
    );
    CREATE TABLE audit_heads (
        chain text PRIMARY KEY,
        seq bigint NOT NULL,
        hash bytea NOT NULL
    );
    CREATE TABLE audit_countersignatures (
        instance uuid NOT NULL,
        seq bigint NOT NULL,
        unit uuid NOT NULL,
        doc text NOT NULL,
        PRIMARY KEY (instance, seq, unit)
    );"#,
    // 2: API keys managed through the API (the SQLite store's version 9).
    r#"CREATE TABLE api_keys (
        id uuid PRIMARY KEY,
        name text NOT NULL,
        key_sha256 bytea NOT NULL UNIQUE,
        role text NOT NULL,
        instances text NOT NULL,
        generation bigint NOT NULL,
        created bigint NOT NULL,
        created_by text NOT NULL,
        rotated bigint,
        rotated_by text,
        revoked bigint,
        revoked_by text
    );
    CREATE UNIQUE INDEX api_keys_unrevoked_name ON api_keys (name) WHERE revoked IS NULL;"#,
];

/// Brings the schema up to date, one migration per transaction.
pub(super) async fn migrate(client: &mut Client) -> Result<(), StoreError> {
    let known = i32::try_from(MIGRATIONS.len()).unwrap_or(i32::MAX);
    loop {
        let tx = client.transaction().await?;
        lock(&tx, MIGRATION_LOCK).await?;
        tx.batch_execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations (
                version integer PRIMARY KEY,
                applied bigint NOT NULL
            )",
        )
        .await?;
        let applied: i32 = tx
            .query_one(
                "SELECT COALESCE(max(version), 0) FROM schema_migrations",
                &[],
            )
            .await?
            .get(0);
        if applied > known {
            return Err(StoreError::Database(format!(
                "the database has schema version {applied}, newer than this rotor ({known}); upgrade rotor"
            )));
        }
        let Some(migration) = usize::try_from(applied)
            .ok()
            .and_then(|applied| MIGRATIONS.get(applied))
        else {
            return Ok(());
        };
        tx.batch_execute(migration).await?;
        tx.execute(
            "INSERT INTO schema_migrations (version, applied) VALUES ($1, $2)",
            &[&(applied + 1), &now_ms()],
        )
        .await?;
        tx.commit().await?;
    }
}

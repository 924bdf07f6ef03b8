//! [`KeyStore`] on SQLite: WAL journal, `synchronous = FULL`, one connection behind a mutex
//! (SQLite has one writer anyway), schema migrations numbered in `MIGRATIONS`.

use std::path::Path;
use std::sync::{Mutex, MutexGuard};

use std::fmt::Display;

use rotor_crypto::Vp;
use rotor_proto::keyops::b64;
use rotor_proto::rotation::Journal;
use rusqlite::{Connection, OptionalExtension, Transaction, params};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::{
    BlobReplacement, ImportToken, KeyMeta, KeyRing, KeyStore, KeyVersion, ListFilter, StoreError,
    StoredBlob,
};

/// One schema version.
enum Migration {
    /// Statements SQL alone can run.
    Sql(&'static str),
    /// A change of stored data that needs more than SQL (decoding base64, for one).
    Rust(fn(&Transaction<'_>) -> Result<(), StoreError>),
}

/// Schema versions, applied in order, each once.
const MIGRATIONS: &[Migration] = &[
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
];

/// Migration 5. A document whose sealed private key does not decode is left as it is: it
/// then reads as corrupt, naming its instance, instead of stopping every instance's start.
fn sealed_private_keys_to_column(tx: &Transaction<'_>) -> Result<(), StoreError> {
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

/// The embedded key storage.
#[derive(Debug)]
pub struct SqliteStore {
    connection: Mutex<Connection>,
    /// A second connection for the long reads of a rotation: in WAL mode it reads while the
    /// first one writes.
    reader: Mutex<Connection>,
}

/// Page cache per connection, in KiB (SQLite's default is 2 MiB).
const CACHE_KIB: i64 = 65_536;
/// Largest part of the database file reads map into memory.
const MMAP_BYTES: i64 = 1 << 30;

fn connect(path: &Path) -> Result<Connection, StoreError> {
    let connection = Connection::open(path)?;
    connection.pragma_update(None, "journal_mode", "WAL")?;
    connection.pragma_update(None, "synchronous", "FULL")?;
    connection.pragma_update(None, "cache_size", -CACHE_KIB)?;
    // Reads map the file instead of copying each page out of the OS cache.
    connection.pragma_update(None, "mmap_size", MMAP_BYTES)?;
    connection.busy_timeout(std::time::Duration::from_secs(10))?;
    Ok(connection)
}

use rotor_util::time::now_ms;

/// A row that does not parse, named by its kind and id so that an operator can find it.
fn corrupt(row: impl Display, why: impl Display) -> StoreError {
    StoreError::Corrupt(format!("{row}: {why}"))
}

fn parse_doc(instance: Uuid, id: &str, doc: &str) -> Result<KeyMeta, StoreError> {
    serde_json::from_str(doc)
        .map_err(|err| corrupt(format_args!("key {id} of instance {instance}"), err))
}

fn to_doc(key: &KeyMeta) -> Result<String, StoreError> {
    serde_json::to_string(key).map_err(|err| corrupt(format_args!("key {}", key.id), err))
}

fn vp_of(bytes: &[u8], row: impl Display) -> Result<Vp, StoreError> {
    bytes
        .try_into()
        .map(Vp)
        .map_err(|_| corrupt(row, "its VP is not 32 bytes"))
}

/// An import token's document: every field but the sealed private key, which has its own
/// column. Field names are those of the previous version's documents.
#[derive(Serialize, Deserialize)]
struct ImportTokenDoc {
    id: Uuid,
    created: i64,
    expires: i64,
    max_retrievals: u32,
    remaining: u32,
    #[serde(with = "b64")]
    public_key: Vec<u8>,
    #[serde(with = "b64")]
    nonce: Vec<u8>,
}

fn parse_import_token(
    instance: Uuid,
    doc: &str,
    sealed_private_key: Option<Vec<u8>>,
) -> Result<ImportToken, StoreError> {
    let row = format!("import token of instance {instance}");
    let doc: ImportTokenDoc = serde_json::from_str(doc).map_err(|err| corrupt(&row, err))?;
    let sealed_private_key =
        sealed_private_key.ok_or_else(|| corrupt(&row, "it has no sealed private key"))?;
    Ok(ImportToken {
        id: doc.id,
        created: doc.created,
        expires: doc.expires,
        max_retrievals: doc.max_retrievals,
        remaining: doc.remaining,
        public_key: doc.public_key,
        nonce: doc.nonce,
        sealed_private_key,
    })
}

/// The instance's import token, if it has one.
fn read_import_token(
    connection: &Connection,
    instance: Uuid,
) -> Result<Option<ImportToken>, StoreError> {
    let row: Option<(String, Option<Vec<u8>>)> = connection
        .query_row(
            "SELECT doc, sealed_private_key FROM import_tokens WHERE instance = ?1",
            params![instance.to_string()],
            |row| Ok((row.get(0)?, row.get(1)?)),
        )
        .optional()?;
    row.map(|(doc, sealed)| parse_import_token(instance, &doc, sealed))
        .transpose()
}

fn import_token_doc(instance: Uuid, token: &ImportToken) -> Result<String, StoreError> {
    serde_json::to_string(&ImportTokenDoc {
        id: token.id,
        created: token.created,
        expires: token.expires,
        max_retrievals: token.max_retrievals,
        remaining: token.remaining,
        public_key: token.public_key.clone(),
        nonce: token.nonce.clone(),
    })
    .map_err(|err| corrupt(format_args!("import token of instance {instance}"), err))
}

fn parse_journal(instance: Uuid, doc: &str) -> Result<Journal, StoreError> {
    serde_json::from_str(doc)
        .map_err(|err| corrupt(format_args!("rotation journal of instance {instance}"), err))
}

/// version, id, blob, vp, created
type VersionRow = (u32, String, Vec<u8>, Vec<u8>, i64);

fn version_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<VersionRow> {
    Ok((
        row.get(0)?,
        row.get(1)?,
        row.get(2)?,
        row.get(3)?,
        row.get(4)?,
    ))
}

fn to_version(
    key: Uuid,
    (version, id, blob, vp, created): VersionRow,
) -> Result<KeyVersion, StoreError> {
    let row = format!("version {version} of key {key}");
    Ok(KeyVersion {
        version,
        id: Uuid::parse_str(&id).map_err(|err| corrupt(&row, err))?,
        blob,
        vp: vp_of(&vp, &row)?,
        created,
    })
}

fn load(tx: &Transaction<'_>, instance: Uuid, id: Uuid) -> Result<KeyMeta, StoreError> {
    let doc: Option<String> = tx
        .query_row(
            "SELECT doc FROM keys WHERE instance = ?1 AND id = ?2",
            params![instance.to_string(), id.to_string()],
            |row| row.get(0),
        )
        .optional()?;
    let doc = doc.ok_or_else(|| StoreError::NotFound(format!("key {id} does not exist")))?;
    parse_doc(instance, &id.to_string(), &doc)
}

fn save(tx: &Transaction<'_>, key: &KeyMeta) -> Result<(), StoreError> {
    tx.execute(
        "UPDATE keys SET state = ?3, extractable = ?4, key_ring = ?5, doc = ?6 WHERE instance = ?1 AND id = ?2",
        params![
            key.instance.to_string(),
            key.id.to_string(),
            u8::from(key.state),
            key.extractable,
            key.key_ring,
            to_doc(key)?
        ],
    )?;
    Ok(())
}

impl SqliteStore {
    /// Opens (creating if needed) the database at `path` and brings its schema up to date.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        let mut connection = connect(path)?;
        migrate(&mut connection)?;
        Ok(Self {
            connection: Mutex::new(connection),
            reader: Mutex::new(connect(path)?),
        })
    }

    fn lock(&self) -> Result<MutexGuard<'_, Connection>, StoreError> {
        self.connection
            .lock()
            .map_err(|_| StoreError::Database("a previous operation panicked".to_owned()))
    }

    fn lock_reader(&self) -> Result<MutexGuard<'_, Connection>, StoreError> {
        self.reader
            .lock()
            .map_err(|_| StoreError::Database("a previous operation panicked".to_owned()))
    }
}

fn migrate(connection: &mut Connection) -> Result<(), StoreError> {
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

impl KeyStore for SqliteStore {
    fn create_key(&self, key: &KeyMeta, first: &KeyVersion) -> Result<(), StoreError> {
        self.create_keys(std::slice::from_ref(&(key.clone(), first.clone())))?;
        Ok(())
    }

    fn key(&self, instance: Uuid, id_or_alias: &str) -> Result<Option<KeyMeta>, StoreError> {
        let connection = self.lock()?;
        let id = match Uuid::parse_str(id_or_alias) {
            Ok(id) => Some(id.to_string()),
            Err(_) => connection
                .query_row(
                    "SELECT key_id FROM aliases WHERE instance = ?1 AND alias = ?2",
                    params![instance.to_string(), id_or_alias],
                    |row| row.get(0),
                )
                .optional()?,
        };
        let Some(id) = id else {
            return Ok(None);
        };
        let doc: Option<String> = connection
            .query_row(
                "SELECT doc FROM keys WHERE instance = ?1 AND id = ?2",
                params![instance.to_string(), id],
                |row| row.get(0),
            )
            .optional()?;
        doc.map(|doc| parse_doc(instance, &id, &doc)).transpose()
    }

    fn list(&self, instance: Uuid, filter: &ListFilter) -> Result<(Vec<KeyMeta>, u64), StoreError> {
        let connection = self.lock()?;
        let mut clauses = vec!["instance = ?1".to_owned()];
        let states: Vec<String> = if filter.states.is_empty() {
            vec!["1".into(), "2".into(), "3".into()]
        } else {
            filter
                .states
                .iter()
                .map(|s| u8::from(*s).to_string())
                .collect()
        };
        clauses.push(format!("state IN ({})", states.join(",")));
        if let Some(extractable) = filter.extractable {
            clauses.push(format!("extractable = {}", u8::from(extractable)));
        }
        let mut args = vec![instance.to_string()];
        if let Some(ring) = &filter.key_ring {
            args.push(ring.clone());
            clauses.push("key_ring = ?2".to_owned());
        }
        let condition = clauses.join(" AND ");
        let total: i64 = connection.query_row(
            &format!("SELECT COUNT(*) FROM keys WHERE {condition}"),
            rusqlite::params_from_iter(args.iter()),
            |row| row.get(0),
        )?;
        let total = u64::try_from(total).unwrap_or(0);
        let mut statement = connection.prepare(&format!(
            "SELECT id, doc FROM keys WHERE {condition} ORDER BY created, id LIMIT {} OFFSET {}",
            filter.limit, filter.offset
        ))?;
        let docs = statement
            .query_map(rusqlite::params_from_iter(args.iter()), |row| {
                Ok((row.get::<_, String>(0)?, row.get::<_, String>(1)?))
            })?
            .collect::<Result<Vec<_>, _>>()?;
        let keys = docs
            .iter()
            .map(|(id, doc)| parse_doc(instance, id, doc))
            .collect::<Result<Vec<_>, _>>()?;
        Ok((keys, total))
    }

    fn update(
        &self,
        instance: Uuid,
        id: Uuid,
        change: &mut dyn FnMut(&mut KeyMeta) -> Result<(), StoreError>,
    ) -> Result<KeyMeta, StoreError> {
        let mut connection = self.lock()?;
        let tx = connection.transaction()?;
        let mut key = load(&tx, instance, id)?;
        change(&mut key)?;
        key.updated = now_ms();
        save(&tx, &key)?;
        tx.commit()?;
        Ok(key)
    }

    fn add_version(
        &self,
        key: &KeyMeta,
        expected_newest: u32,
        version: &KeyVersion,
    ) -> Result<(), StoreError> {
        let mut connection = self.lock()?;
        let tx = connection.transaction()?;
        let stored = load(&tx, key.instance, key.id)?;
        if stored.newest_version != expected_newest {
            return Err(StoreError::Conflict(format!(
                "key {} was rotated meanwhile; try again",
                key.id
            )));
        }
        insert_version(&tx, key, version)?;
        save(&tx, key)?;
        tx.commit()?;
        Ok(())
    }

    fn versions(&self, instance: Uuid, id: Uuid) -> Result<Vec<KeyVersion>, StoreError> {
        let connection = self.lock()?;
        let mut statement = connection.prepare(
            "SELECT version, id, blob, vp, created FROM key_versions WHERE instance = ?1 AND key_id = ?2 ORDER BY version",
        )?;
        let rows = statement
            .query_map(params![instance.to_string(), id.to_string()], version_row)?
            .collect::<Result<Vec<_>, _>>()?;
        rows.into_iter().map(|row| to_version(id, row)).collect()
    }

    fn version(
        &self,
        instance: Uuid,
        id: Uuid,
        version: u32,
    ) -> Result<Option<KeyVersion>, StoreError> {
        let connection = self.lock()?;
        let row = connection
            .query_row(
                "SELECT version, id, blob, vp, created FROM key_versions WHERE instance = ?1 AND key_id = ?2 AND version = ?3",
                params![instance.to_string(), id.to_string(), version],
                version_row,
            )
            .optional()?;
        row.map(|row| to_version(id, row)).transpose()
    }

    fn purge(&self, instance: Uuid, id: Uuid) -> Result<(), StoreError> {
        let mut connection = self.lock()?;
        let tx = connection.transaction()?;
        let (instance, id) = (instance.to_string(), id.to_string());
        tx.execute(
            "DELETE FROM key_versions WHERE instance = ?1 AND key_id = ?2",
            params![instance, id],
        )?;
        tx.execute(
            "DELETE FROM aliases WHERE instance = ?1 AND key_id = ?2",
            params![instance, id],
        )?;
        let removed = tx.execute(
            "DELETE FROM keys WHERE instance = ?1 AND id = ?2",
            params![instance, id],
        )?;
        if removed == 0 {
            return Err(StoreError::NotFound(format!("key {id} does not exist")));
        }
        tx.commit()?;
        Ok(())
    }

    fn add_alias(&self, instance: Uuid, id: Uuid, alias: &str) -> Result<KeyMeta, StoreError> {
        let mut connection = self.lock()?;
        let tx = connection.transaction()?;
        let mut key = load(&tx, instance, id)?;
        insert_alias(&tx, instance, id, alias)?;
        key.aliases.push(alias.to_owned());
        key.updated = now_ms();
        save(&tx, &key)?;
        tx.commit()?;
        Ok(key)
    }

    fn remove_alias(&self, instance: Uuid, id: Uuid, alias: &str) -> Result<KeyMeta, StoreError> {
        let mut connection = self.lock()?;
        let tx = connection.transaction()?;
        let mut key = load(&tx, instance, id)?;
        let removed = tx.execute(
            "DELETE FROM aliases WHERE instance = ?1 AND alias = ?2 AND key_id = ?3",
            params![instance.to_string(), alias, id.to_string()],
        )?;
        if removed == 0 {
            return Err(StoreError::NotFound(format!(
                "key {id} has no alias '{alias}'"
            )));
        }
        key.aliases.retain(|a| a != alias);
        key.updated = now_ms();
        save(&tx, &key)?;
        tx.commit()?;
        Ok(key)
    }

    fn key_rings(&self, instance: Uuid) -> Result<Vec<KeyRing>, StoreError> {
        let connection = self.lock()?;
        let mut statement =
            connection.prepare("SELECT id, created, created_by FROM key_rings WHERE instance = ?1 ORDER BY created, id")?;
        let mut rings = vec![KeyRing {
            id: "default".to_owned(),
            created: 0,
            created_by: "rotor".to_owned(),
        }];
        let stored = statement
            .query_map(params![instance.to_string()], |row| {
                Ok(KeyRing {
                    id: row.get(0)?,
                    created: row.get(1)?,
                    created_by: row.get(2)?,
                })
            })?
            .collect::<Result<Vec<_>, _>>()?;
        rings.extend(stored);
        Ok(rings)
    }

    fn create_key_ring(&self, instance: Uuid, ring: &KeyRing) -> Result<(), StoreError> {
        if ring.id == "default" {
            return Err(StoreError::Conflict(
                "key ring 'default' already exists".to_owned(),
            ));
        }
        let connection = self.lock()?;
        let inserted = connection.execute(
            "INSERT OR IGNORE INTO key_rings (instance, id, created, created_by) VALUES (?1, ?2, ?3, ?4)",
            params![instance.to_string(), ring.id, ring.created, ring.created_by],
        )?;
        if inserted == 0 {
            return Err(StoreError::Conflict(format!(
                "key ring '{}' already exists",
                ring.id
            )));
        }
        Ok(())
    }

    fn delete_key_ring(&self, instance: Uuid, id: &str) -> Result<(), StoreError> {
        if id == "default" {
            return Err(StoreError::Refused(
                "the default key ring cannot be deleted".to_owned(),
            ));
        }
        let mut connection = self.lock()?;
        let tx = connection.transaction()?;
        let keys: i64 = tx.query_row(
            "SELECT COUNT(*) FROM keys WHERE instance = ?1 AND key_ring = ?2",
            params![instance.to_string(), id],
            |row| row.get(0),
        )?;
        if keys > 0 {
            return Err(StoreError::Refused(format!(
                "key ring '{id}' still holds {keys} key(s); purge them or move them to another key ring first"
            )));
        }
        let removed = tx.execute(
            "DELETE FROM key_rings WHERE instance = ?1 AND id = ?2",
            params![instance.to_string(), id],
        )?;
        if removed == 0 {
            return Err(StoreError::NotFound(format!(
                "key ring '{id}' does not exist"
            )));
        }
        tx.commit()?;
        Ok(())
    }

    fn instance_policies(&self, instance: Uuid) -> Result<serde_json::Value, StoreError> {
        let connection = self.lock()?;
        let doc: Option<String> = connection
            .query_row(
                "SELECT doc FROM instance_policies WHERE instance = ?1",
                params![instance.to_string()],
                |row| row.get(0),
            )
            .optional()?;
        match doc {
            Some(doc) => {
                serde_json::from_str(&doc).map_err(|err| StoreError::Corrupt(err.to_string()))
            }
            None => Ok(serde_json::json!({})),
        }
    }

    fn set_instance_policies(
        &self,
        instance: Uuid,
        policies: &serde_json::Value,
    ) -> Result<(), StoreError> {
        let connection = self.lock()?;
        connection.execute(
            "INSERT INTO instance_policies (instance, doc) VALUES (?1, ?2)
             ON CONFLICT (instance) DO UPDATE SET doc = excluded.doc",
            params![instance.to_string(), policies.to_string()],
        )?;
        Ok(())
    }

    fn import_token(&self, instance: Uuid) -> Result<Option<ImportToken>, StoreError> {
        read_import_token(&*self.lock()?, instance)
    }

    fn update_import_token(
        &self,
        instance: Uuid,
        change: &mut dyn FnMut(&mut Option<ImportToken>) -> Result<(), StoreError>,
    ) -> Result<Option<ImportToken>, StoreError> {
        let mut connection = self.lock()?;
        let tx = connection.transaction()?;
        let mut token = read_import_token(&tx, instance)?;
        change(&mut token)?;
        match &token {
            Some(token) => tx.execute(
                "INSERT INTO import_tokens (instance, doc, sealed_private_key) VALUES (?1, ?2, ?3)
                 ON CONFLICT (instance) DO UPDATE
                 SET doc = excluded.doc, sealed_private_key = excluded.sealed_private_key",
                params![
                    instance.to_string(),
                    import_token_doc(instance, token)?,
                    token.sealed_private_key
                ],
            )?,
            None => tx.execute(
                "DELETE FROM import_tokens WHERE instance = ?1",
                params![instance.to_string()],
            )?,
        };
        tx.commit()?;
        Ok(token)
    }

    fn count_by_vp(&self, instance: Uuid) -> Result<Vec<(Vp, u64)>, StoreError> {
        let connection = self.lock()?;
        let mut statement = connection.prepare(
            "SELECT vp, COUNT(*) FROM key_versions WHERE instance = ?1 GROUP BY vp ORDER BY vp",
        )?;
        let rows = statement
            .query_map(params![instance.to_string()], |row| {
                Ok((row.get::<_, Vec<u8>>(0)?, row.get::<_, i64>(1)?))
            })?
            .collect::<Result<Vec<_>, _>>()?;
        rows.into_iter()
            .map(|(vp, count)| {
                let vp = vp_of(&vp, format_args!("a key version of instance {instance}"))?;
                Ok((vp, u64::try_from(count).unwrap_or(0)))
            })
            .collect()
    }

    fn count_under(&self, instance: Uuid, vp: &Vp) -> Result<u64, StoreError> {
        let connection = self.lock_reader()?;
        let count: i64 = connection
            .prepare_cached(
                "SELECT COUNT(*) FROM key_versions INDEXED BY key_versions_by_vp WHERE instance = ?1 AND vp = ?2",
            )?
            .query_row(params![instance.to_string(), vp.0.to_vec()], |row| row.get(0))?;
        Ok(u64::try_from(count).unwrap_or(0))
    }

    fn create_keys(&self, keys: &[(KeyMeta, KeyVersion)]) -> Result<(), StoreError> {
        let mut connection = self.lock()?;
        let tx = connection.transaction()?;
        {
            let mut insert_key = tx.prepare_cached(
                "INSERT INTO keys (instance, id, state, extractable, key_ring, created, doc) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            )?;
            // One key or many: the same statements, one transaction.
            for (key, first) in keys {
                insert_key.execute(params![
                    key.instance.to_string(),
                    key.id.to_string(),
                    u8::from(key.state),
                    key.extractable,
                    key.key_ring,
                    key.created,
                    to_doc(key)?
                ])?;
                insert_version(&tx, key, first)?;
                for alias in &key.aliases {
                    insert_alias(&tx, key.instance, key.id, alias)?;
                }
            }
        }
        tx.commit()?;
        Ok(())
    }

    fn blobs_under(
        &self,
        instance: Uuid,
        vp: &Vp,
        after: i64,
        limit: u32,
    ) -> Result<Vec<StoredBlob>, StoreError> {
        let connection = self.lock_reader()?;
        let mut statement = connection.prepare_cached(
            "SELECT rowid, key_id, version, extractable, blob
             FROM key_versions INDEXED BY key_versions_by_vp
             WHERE vp = ?1 AND instance = ?2 AND rowid > ?3
             ORDER BY rowid LIMIT ?4",
        )?;
        let rows = statement
            .query_map(
                params![vp.0.to_vec(), instance.to_string(), after, limit],
                |row| {
                    Ok((
                        row.get::<_, i64>(0)?,
                        row.get::<_, String>(1)?,
                        row.get::<_, u32>(2)?,
                        row.get::<_, bool>(3)?,
                        row.get::<_, Vec<u8>>(4)?,
                    ))
                },
            )?
            .collect::<Result<Vec<_>, _>>()?;
        rows.into_iter()
            .map(|(position, key, version, extractable, blob)| {
                Ok(StoredBlob {
                    position,
                    key: Uuid::parse_str(&key).map_err(|err| {
                        corrupt(format_args!("version {version} of key {key}"), err)
                    })?,
                    version,
                    extractable,
                    blob,
                })
            })
            .collect()
    }

    fn replace_blobs(&self, replacements: &[BlobReplacement]) -> Result<u64, StoreError> {
        let mut connection = self.lock()?;
        let tx = connection.transaction()?;
        let mut replaced = 0u64;
        {
            let mut update = tx.prepare_cached(
                "UPDATE key_versions SET blob = ?1, vp = ?2 WHERE rowid = ?3 AND blob = ?4",
            )?;
            for item in replacements {
                let changed = update.execute(params![
                    item.new,
                    item.vp.0.to_vec(),
                    item.position,
                    item.old
                ])?;
                replaced += u64::try_from(changed).unwrap_or(0);
            }
        }
        tx.commit()?;
        Ok(replaced)
    }

    fn rotation_journal(&self, instance: Uuid) -> Result<Option<Journal>, StoreError> {
        let connection = self.lock()?;
        let doc: Option<String> = connection
            .query_row(
                "SELECT doc FROM rotations WHERE instance = ?1",
                params![instance.to_string()],
                |row| row.get(0),
            )
            .optional()?;
        doc.map(|doc| parse_journal(instance, &doc)).transpose()
    }

    fn put_rotation_journal(&self, instance: Uuid, journal: &Journal) -> Result<(), StoreError> {
        let doc = serde_json::to_string(journal)
            .map_err(|err| corrupt(format_args!("rotation journal of instance {instance}"), err))?;
        let connection = self.lock()?;
        connection.execute(
            "INSERT INTO rotations (instance, doc) VALUES (?1, ?2)
             ON CONFLICT (instance) DO UPDATE SET doc = excluded.doc",
            params![instance.to_string(), doc],
        )?;
        Ok(())
    }
}

fn insert_version(
    tx: &Transaction<'_>,
    key: &KeyMeta,
    version: &KeyVersion,
) -> Result<(), StoreError> {
    tx.prepare_cached(
        "INSERT INTO key_versions (instance, key_id, version, id, blob, vp, created, extractable) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
    )?
    .execute(params![
            key.instance.to_string(),
            key.id.to_string(),
            version.version,
            version.id.to_string(),
            version.blob,
            version.vp.0.to_vec(),
            version.created,
            key.extractable
        ])?;
    Ok(())
}

fn insert_alias(
    tx: &Transaction<'_>,
    instance: Uuid,
    key: Uuid,
    alias: &str,
) -> Result<(), StoreError> {
    let inserted = tx.execute(
        "INSERT OR IGNORE INTO aliases (instance, alias, key_id) VALUES (?1, ?2, ?3)",
        params![instance.to_string(), alias, key.to_string()],
    )?;
    if inserted == 0 {
        return Err(StoreError::Conflict(format!(
            "alias '{alias}' is already in use in this instance"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{KeyPolicies, KeyState};

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
            blob: vec![n as u8; 60],
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
}

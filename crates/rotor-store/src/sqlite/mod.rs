//! [`KeyStore`] on SQLite: WAL journal, `synchronous = FULL`, one connection behind a mutex
//! (SQLite has one writer anyway), schema migrations numbered in `MIGRATIONS`.
//!
//! The parts: [`migrations`] (the numbered schema), [`rows`] (how each row kind is written and
//! read, and a row that does not parse named by its kind and id), and here the store itself.

use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard};

use rotor_crypto::Vp;
use rotor_proto::keyops::b64;
use rotor_proto::rotation::Journal;
use rusqlite::{Connection, OptionalExtension, Transaction, params};
use serde::Deserialize;
use uuid::Uuid;

use crate::{
    BlobReplacement, ImportToken, InstancePolicies, KeyMeta, KeyRing, KeyStore, KeyVersion, Lease,
    ListFilter, StoreError, StoredBlob, UnitRecord,
};
use rotor_util::time::now_ms;

use rows::*;

mod apikeys;
mod audit;
mod migrations;
mod rows;
#[cfg(test)]
mod tests;

/// The embedded key storage.
#[derive(Debug)]
pub struct SqliteStore {
    connection: Mutex<Connection>,
    /// A second connection for the long reads of a rotation: in WAL mode it reads while the
    /// first one writes.
    reader: Mutex<Connection>,
    /// Connections for the point reads of the request path (a key, its versions): in WAL mode
    /// they read while the writer writes, so an unwrap never waits for a rotation's batch or
    /// for another request's read.
    point_readers: Vec<Mutex<Connection>>,
    next_point_reader: AtomicUsize,
}

/// Point-read connections: enough for the service's worker threads to read side by side.
const POINT_READERS: usize = 4;
/// Page cache of a point-read connection, in KiB: its reads are served by the memory map.
const POINT_READER_CACHE_KIB: i64 = 8_192;

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

impl SqliteStore {
    /// Opens (creating if needed) the database at `path` and brings its schema up to date.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        let mut connection = connect(path)?;
        migrations::migrate(&mut connection)?;
        let point_readers = (0..POINT_READERS)
            .map(|_| {
                let reader = connect(path)?;
                reader.pragma_update(None, "cache_size", -POINT_READER_CACHE_KIB)?;
                Ok(Mutex::new(reader))
            })
            .collect::<Result<_, StoreError>>()?;
        Ok(Self {
            connection: Mutex::new(connection),
            reader: Mutex::new(connect(path)?),
            point_readers,
            next_point_reader: AtomicUsize::new(0),
        })
    }

    /// A free point-read connection, else the next one in turn.
    fn lock_point_reader(&self) -> Result<MutexGuard<'_, Connection>, StoreError> {
        let start = self.next_point_reader.fetch_add(1, Ordering::Relaxed);
        let count = self.point_readers.len();
        for offset in 0..count {
            if let Ok(reader) = self.point_readers[(start + offset) % count].try_lock() {
                return Ok(reader);
            }
        }
        self.point_readers[start % count]
            .lock()
            .map_err(|_| StoreError::Database("a previous operation panicked".to_owned()))
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

/// Stores `journal` with the master key it closes beside it (see [`KeyStore`]).
fn write_journal(
    connection: &Connection,
    instance: Uuid,
    journal: &Journal,
) -> Result<(), StoreError> {
    let doc = serde_json::to_string(journal)
        .map_err(|err| corrupt(format_args!("rotation journal of instance {instance}"), err))?;
    let closed = journal.closed_source().map(|vp| vp.0.to_vec());
    connection.execute(
        "INSERT INTO rotations (instance, doc, closed_vp) VALUES (?1, ?2, ?3)
         ON CONFLICT (instance) DO UPDATE SET doc = excluded.doc, closed_vp = excluded.closed_vp",
        params![instance.to_string(), doc, closed],
    )?;
    Ok(())
}

impl KeyStore for SqliteStore {
    fn create_key(&self, key: &KeyMeta, first: &KeyVersion) -> Result<(), StoreError> {
        self.create_keys(std::slice::from_ref(&(key.clone(), first.clone())))?;
        Ok(())
    }

    fn point_reads_are_quick(&self) -> bool {
        true
    }

    fn key(&self, instance: Uuid, id_or_alias: &str) -> Result<Option<KeyMeta>, StoreError> {
        let connection = self.lock_point_reader()?;
        let id = match Uuid::parse_str(id_or_alias) {
            Ok(id) => Some(id.to_string()),
            Err(_) => connection
                .prepare_cached("SELECT key_id FROM aliases WHERE instance = ?1 AND alias = ?2")?
                .query_row(params![instance.to_string(), id_or_alias], |row| row.get(0))
                .optional()?,
        };
        let Some(id) = id else {
            return Ok(None);
        };
        let doc: Option<String> = connection
            .prepare_cached("SELECT doc FROM keys WHERE instance = ?1 AND id = ?2")?
            .query_row(params![instance.to_string(), id], |row| row.get(0))
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
        let mut stored = load(&tx, key.instance, key.id)?;
        crate::apply_new_version(&mut stored, key, expected_newest)?;
        insert_version(&tx, &stored, version)?;
        save(&tx, &stored)?;
        tx.commit()?;
        Ok(())
    }

    fn versions(&self, instance: Uuid, id: Uuid) -> Result<Vec<KeyVersion>, StoreError> {
        let connection = self.lock_point_reader()?;
        let mut statement = connection.prepare_cached(
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
        let connection = self.lock_point_reader()?;
        let row = connection
            .prepare_cached(
                "SELECT version, id, blob, vp, created FROM key_versions WHERE instance = ?1 AND key_id = ?2 AND version = ?3",
            )?
            .query_row(
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

    fn instance_policies(&self, instance: Uuid) -> Result<InstancePolicies, StoreError> {
        let connection = self.lock()?;
        let doc: Option<String> = connection
            .query_row(
                "SELECT doc FROM instance_policies WHERE instance = ?1",
                params![instance.to_string()],
                |row| row.get(0),
            )
            .optional()?;
        doc.map_or_else(
            || Ok(InstancePolicies::new()),
            |doc| parse_instance_policies(instance, &doc),
        )
    }

    fn set_instance_policies(
        &self,
        instance: Uuid,
        policies: &InstancePolicies,
    ) -> Result<(), StoreError> {
        let doc = serde_json::to_string(policies).map_err(|err| {
            corrupt(
                format_args!("instance policies of instance {instance}"),
                err,
            )
        })?;
        let connection = self.lock()?;
        connection.execute(
            "INSERT INTO instance_policies (instance, doc) VALUES (?1, ?2)
             ON CONFLICT (instance) DO UPDATE SET doc = excluded.doc",
            params![instance.to_string(), doc],
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
        until: i64,
        limit: u32,
    ) -> Result<Vec<StoredBlob>, StoreError> {
        let connection = self.lock_reader()?;
        let mut statement = connection.prepare_cached(
            "SELECT rowid, key_id, version, extractable, blob
             FROM key_versions INDEXED BY key_versions_by_vp
             WHERE vp = ?1 AND instance = ?2 AND rowid > ?3 AND rowid <= ?4
             ORDER BY rowid LIMIT ?5",
        )?;
        let rows = statement
            .query_map(
                params![vp.0.to_vec(), instance.to_string(), after, until, limit],
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

    fn positions_under(&self, instance: Uuid, vp: &Vp) -> Result<Option<(i64, i64)>, StoreError> {
        let connection = self.lock_reader()?;
        let bounds: (Option<i64>, Option<i64>) = connection
            .prepare_cached(
                "SELECT MIN(rowid), MAX(rowid) FROM key_versions INDEXED BY key_versions_by_vp
                 WHERE vp = ?1 AND instance = ?2",
            )?
            .query_row(params![vp.0.to_vec(), instance.to_string()], |row| {
                Ok((row.get(0)?, row.get(1)?))
            })?;
        Ok(bounds.0.zip(bounds.1))
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
                let vp = recorded_vp(
                    &item.new,
                    &item.vp,
                    format_args!("the rewrapped blob at position {}", item.position),
                )?;
                let changed = update.execute(params![item.new, vp, item.position, item.old])?;
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
        let connection = self.lock()?;
        write_journal(&connection, instance, journal)
    }

    fn update_rotation_journal(
        &self,
        instance: Uuid,
        change: &mut dyn FnMut(&mut Option<Journal>) -> Result<bool, StoreError>,
    ) -> Result<Option<Journal>, StoreError> {
        let mut connection = self.lock()?;
        let tx = connection.transaction()?;
        let doc: Option<String> = tx
            .query_row(
                "SELECT doc FROM rotations WHERE instance = ?1",
                params![instance.to_string()],
                |row| row.get(0),
            )
            .optional()?;
        let mut journal = doc.map(|doc| parse_journal(instance, &doc)).transpose()?;
        if change(&mut journal)? {
            match &journal {
                Some(journal) => write_journal(&tx, instance, journal)?,
                None => {
                    tx.execute(
                        "DELETE FROM rotations WHERE instance = ?1",
                        params![instance.to_string()],
                    )?;
                }
            }
            tx.commit()?;
        }
        Ok(journal)
    }

    fn take_lease(
        &self,
        name: &str,
        holder: &str,
        now: i64,
        ttl_ms: i64,
    ) -> Result<bool, StoreError> {
        let connection = self.lock()?;
        let taken = connection.execute(
            "INSERT INTO leases (name, holder, expires) VALUES (?1, ?2, ?3)
             ON CONFLICT (name) DO UPDATE SET holder = excluded.holder, expires = excluded.expires
             WHERE leases.holder = excluded.holder OR leases.expires <= ?4",
            params![name, holder, now.saturating_add(ttl_ms), now],
        )?;
        Ok(taken == 1)
    }

    fn release_lease(&self, name: &str, holder: &str) -> Result<(), StoreError> {
        self.lock()?.execute(
            "DELETE FROM leases WHERE name = ?1 AND holder = ?2",
            params![name, holder],
        )?;
        Ok(())
    }

    fn leases(&self, prefix: &str, now: i64) -> Result<Vec<Lease>, StoreError> {
        let connection = self.lock()?;
        let mut statement = connection.prepare_cached(
            "SELECT name, holder, expires FROM leases
             WHERE substr(name, 1, length(?1)) = ?1 AND expires > ?2 ORDER BY name",
        )?;
        let leases = statement
            .query_map(params![prefix, now], |row| {
                Ok(Lease {
                    name: row.get(0)?,
                    holder: row.get(1)?,
                    expires: row.get(2)?,
                })
            })?
            .collect::<Result<Vec<_>, _>>()?;
        Ok(leases)
    }

    fn unit_record(&self, unit: Uuid) -> Result<Option<UnitRecord>, StoreError> {
        let row: Option<(String, i64)> = self
            .lock()?
            .query_row(
                "SELECT identity, last_counter FROM unit_identities WHERE unit = ?1",
                params![unit.to_string()],
                |row| Ok((row.get(0)?, row.get(1)?)),
            )
            .optional()?;
        row.map(|(identity, last_counter)| unit_record_of(unit, &identity, last_counter))
            .transpose()
    }

    fn note_unit(&self, unit: Uuid, record: &UnitRecord) -> Result<(), StoreError> {
        let identity = serde_json::to_string(&record.identity)
            .map_err(|err| corrupt(format_args!("identity of unit {unit}"), err))?;
        let counter = i64::try_from(record.last_counter).unwrap_or(i64::MAX);
        self.lock()?.execute(
            "INSERT INTO unit_identities (unit, identity, last_counter) VALUES (?1, ?2, ?3)
             ON CONFLICT (unit) DO UPDATE SET last_counter = MAX(last_counter, excluded.last_counter)
             WHERE identity = excluded.identity",
            params![unit.to_string(), identity, counter],
        )?;
        Ok(())
    }
}

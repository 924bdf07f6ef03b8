//! [`ApiKeyStore`] on SQLite: table `api_keys` (migration 9).

use rusqlite::Row;

use super::*;
use crate::apikeys::{ApiKeyChange, ApiKeyRecord, ApiKeyStore};

const COLUMNS: &str = "id, name, key_sha256, role, instances, generation, created, created_by, \
                       rotated, rotated_by, revoked, revoked_by";

/// A row as SQLite returns it, before its fields are checked.
struct RawApiKey {
    id: String,
    name: String,
    key_sha256: Vec<u8>,
    role: String,
    instances: String,
    generation: i64,
    created: i64,
    created_by: String,
    rotated: Option<(i64, String)>,
    revoked: Option<(i64, String)>,
}

fn raw(row: &Row<'_>) -> rusqlite::Result<RawApiKey> {
    let change = |at: usize, by: usize| -> rusqlite::Result<Option<(i64, String)>> {
        Ok(row
            .get::<_, Option<i64>>(at)?
            .zip(row.get::<_, Option<String>>(by)?))
    };
    Ok(RawApiKey {
        id: row.get(0)?,
        name: row.get(1)?,
        key_sha256: row.get(2)?,
        role: row.get(3)?,
        instances: row.get(4)?,
        generation: row.get(5)?,
        created: row.get(6)?,
        created_by: row.get(7)?,
        rotated: change(8, 9)?,
        revoked: change(10, 11)?,
    })
}

impl RawApiKey {
    fn parse(self) -> Result<ApiKeyRecord, StoreError> {
        let row = format_args!("API key {}", self.id).to_string();
        let id = Uuid::parse_str(&self.id).map_err(|err| corrupt(&row, err))?;
        let key_sha256 = <[u8; 32]>::try_from(self.key_sha256)
            .map_err(|_| corrupt(&row, "its hash is not 32 bytes"))?;
        let instances = serde_json::from_str(&self.instances).map_err(|err| corrupt(&row, err))?;
        let generation = u32::try_from(self.generation)
            .map_err(|_| corrupt(&row, "its generation is out of range"))?;
        let change = |(at, by)| ApiKeyChange { at, by };
        Ok(ApiKeyRecord {
            id,
            name: self.name,
            key_sha256,
            role: self.role,
            instances,
            generation,
            created: self.created,
            created_by: self.created_by,
            rotated: self.rotated.map(change),
            revoked: self.revoked.map(change),
        })
    }
}

/// A unique index refused the change: the id, hash or unrevoked name is taken.
fn conflict_or(err: rusqlite::Error, what: &str) -> StoreError {
    if err.sqlite_error_code() == Some(rusqlite::ErrorCode::ConstraintViolation) {
        StoreError::Conflict(what.to_owned())
    } else {
        err.into()
    }
}

fn select(
    connection: &Connection,
    condition: &str,
    param: &dyn rusqlite::ToSql,
) -> Result<Option<ApiKeyRecord>, StoreError> {
    connection
        .query_row(
            &format!("SELECT {COLUMNS} FROM api_keys WHERE {condition}"),
            [param],
            raw,
        )
        .optional()?
        .map(RawApiKey::parse)
        .transpose()
}

impl ApiKeyStore for SqliteStore {
    fn create_api_key(&self, key: &ApiKeyRecord) -> Result<(), StoreError> {
        let instances = serde_json::to_string(&key.instances)
            .map_err(|err| corrupt(format_args!("API key {}", key.id), err))?;
        let connection = self.lock()?;
        connection
            .execute(
                &format!("INSERT INTO api_keys ({COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)"),
                params![
                    key.id.to_string(),
                    key.name,
                    key.key_sha256.to_vec(),
                    key.role,
                    instances,
                    i64::from(key.generation),
                    key.created,
                    key.created_by,
                    key.rotated.as_ref().map(|c| c.at),
                    key.rotated.as_ref().map(|c| c.by.as_str()),
                    key.revoked.as_ref().map(|c| c.at),
                    key.revoked.as_ref().map(|c| c.by.as_str()),
                ],
            )
            .map_err(|err| {
                conflict_or(
                    err,
                    &format!(
                        "an API key named '{}' exists already (or one with the same id or key)",
                        key.name
                    ),
                )
            })?;
        Ok(())
    }

    fn api_key(&self, id: Uuid) -> Result<Option<ApiKeyRecord>, StoreError> {
        select(&*self.lock()?, "id = ?1", &id.to_string())
    }

    fn api_key_by_hash(&self, key_sha256: &[u8; 32]) -> Result<Option<ApiKeyRecord>, StoreError> {
        select(
            &*self.lock()?,
            "key_sha256 = ?1 AND revoked IS NULL",
            &key_sha256.to_vec(),
        )
    }

    fn api_keys(&self) -> Result<Vec<ApiKeyRecord>, StoreError> {
        let connection = self.lock()?;
        let mut statement = connection.prepare(&format!(
            "SELECT {COLUMNS} FROM api_keys ORDER BY created, id"
        ))?;
        let rows = statement
            .query_map([], raw)?
            .collect::<Result<Vec<_>, _>>()?;
        rows.into_iter().map(RawApiKey::parse).collect()
    }

    fn rotate_api_key(
        &self,
        id: Uuid,
        key_sha256: &[u8; 32],
        at: i64,
        by: &str,
    ) -> Result<ApiKeyRecord, StoreError> {
        let mut connection = self.lock()?;
        let tx = connection.transaction()?;
        let key = select(&tx, "id = ?1", &id.to_string())?
            .ok_or_else(|| StoreError::NotFound(format!("no API key {id}")))?;
        if key.revoked.is_some() {
            return Err(StoreError::Refused(format!(
                "API key {id} is revoked; create a new one"
            )));
        }
        let generation = key
            .generation
            .checked_add(1)
            .ok_or_else(|| StoreError::Refused(format!("API key {id} was rotated too often")))?;
        tx.execute(
            "UPDATE api_keys SET key_sha256 = ?2, generation = ?3, rotated = ?4, rotated_by = ?5
             WHERE id = ?1",
            params![
                id.to_string(),
                key_sha256.to_vec(),
                i64::from(generation),
                at,
                by
            ],
        )
        .map_err(|err| conflict_or(err, "another API key has this key"))?;
        tx.commit()?;
        Ok(ApiKeyRecord {
            key_sha256: *key_sha256,
            generation,
            rotated: Some(ApiKeyChange {
                at,
                by: by.to_owned(),
            }),
            ..key
        })
    }

    fn revoke_api_key(&self, id: Uuid, at: i64, by: &str) -> Result<ApiKeyRecord, StoreError> {
        let mut connection = self.lock()?;
        let tx = connection.transaction()?;
        let key = select(&tx, "id = ?1", &id.to_string())?
            .ok_or_else(|| StoreError::NotFound(format!("no API key {id}")))?;
        if key.revoked.is_some() {
            return Ok(key);
        }
        tx.execute(
            "UPDATE api_keys SET revoked = ?2, revoked_by = ?3 WHERE id = ?1",
            params![id.to_string(), at, by],
        )?;
        tx.commit()?;
        Ok(ApiKeyRecord {
            revoked: Some(ApiKeyChange {
                at,
                by: by.to_owned(),
            }),
            ..key
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(name: &str, hash: u8) -> ApiKeyRecord {
        ApiKeyRecord {
            id: Uuid::new_v4(),
            name: name.to_owned(),
            key_sha256: [hash; 32],
            role: "Manager".to_owned(),
            instances: vec![Uuid::new_v4().to_string(), "*".to_owned()],
            generation: 1,
            created: now_ms(),
            created_by: "ops".to_owned(),
            rotated: None,
            revoked: None,
        }
    }

    #[test]
    fn keys_are_found_by_id_and_hash_and_survive_reopening() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("keys.db");
        let first = record("ci", 1);
        let second = ApiKeyRecord {
            created: first.created + 1,
            ..record("backup", 2)
        };
        {
            let store = SqliteStore::open(&path).unwrap();
            store.create_api_key(&first).unwrap();
            store.create_api_key(&second).unwrap();
        }
        let store = SqliteStore::open(&path).unwrap();
        assert_eq!(store.api_key(first.id).unwrap(), Some(first.clone()));
        assert_eq!(
            store.api_key_by_hash(&[2; 32]).unwrap(),
            Some(second.clone())
        );
        assert_eq!(store.api_key_by_hash(&[3; 32]).unwrap(), None);
        assert_eq!(store.api_key(Uuid::new_v4()).unwrap(), None);
        assert_eq!(store.api_keys().unwrap(), vec![first, second]);
    }

    #[test]
    fn names_hashes_and_ids_are_unique_and_a_refused_key_stores_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(&dir.path().join("keys.db")).unwrap();
        let first = record("ci", 1);
        store.create_api_key(&first).unwrap();
        for clash in [
            record("ci", 2),
            record("other", 1),
            ApiKeyRecord {
                name: "third".to_owned(),
                key_sha256: [3; 32],
                ..first.clone()
            },
        ] {
            assert!(
                matches!(store.create_api_key(&clash), Err(StoreError::Conflict(_))),
                "{clash:?}"
            );
        }
        assert_eq!(store.api_keys().unwrap(), vec![first.clone()]);
        // Once revoked, its name is free again; its hash is not.
        store.revoke_api_key(first.id, now_ms(), "ops").unwrap();
        store.create_api_key(&record("ci", 4)).unwrap();
        assert!(matches!(
            store.create_api_key(&record("new", 1)),
            Err(StoreError::Conflict(_))
        ));
        assert_eq!(store.api_keys().unwrap().len(), 2);
    }

    #[test]
    fn rotation_replaces_the_hash_and_raises_the_generation() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(&dir.path().join("keys.db")).unwrap();
        let key = record("ci", 1);
        store.create_api_key(&key).unwrap();
        let other = record("other", 2);
        store.create_api_key(&other).unwrap();
        let rotated = store.rotate_api_key(key.id, &[5; 32], 77, "alice").unwrap();
        assert_eq!(rotated.generation, 2);
        assert_eq!(
            rotated.rotated,
            Some(ApiKeyChange {
                at: 77,
                by: "alice".to_owned()
            })
        );
        assert_eq!(store.api_key(key.id).unwrap(), Some(rotated.clone()));
        assert_eq!(store.api_key_by_hash(&[1; 32]).unwrap(), None);
        assert_eq!(
            store.api_key_by_hash(&[5; 32]).unwrap(),
            Some(rotated.clone())
        );
        // Onto another key's hash: refused, nothing changed.
        assert!(matches!(
            store.rotate_api_key(key.id, &[2; 32], 78, "alice"),
            Err(StoreError::Conflict(_))
        ));
        assert_eq!(store.api_key(key.id).unwrap(), Some(rotated));
        assert!(matches!(
            store.rotate_api_key(Uuid::new_v4(), &[6; 32], 79, "alice"),
            Err(StoreError::NotFound(_))
        ));
    }

    #[test]
    fn revocation_is_final_and_keeps_its_first_record() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(&dir.path().join("keys.db")).unwrap();
        let key = record("ci", 1);
        store.create_api_key(&key).unwrap();
        let revoked = store.revoke_api_key(key.id, 10, "alice").unwrap();
        assert_eq!(
            revoked.revoked,
            Some(ApiKeyChange {
                at: 10,
                by: "alice".to_owned()
            })
        );
        assert_eq!(store.revoke_api_key(key.id, 20, "bob").unwrap(), revoked);
        assert_eq!(store.api_key(key.id).unwrap(), Some(revoked.clone()));
        assert_eq!(store.api_key_by_hash(&[1; 32]).unwrap(), None);
        assert!(matches!(
            store.rotate_api_key(key.id, &[2; 32], 30, "alice"),
            Err(StoreError::Refused(_))
        ));
        assert_eq!(store.api_key(key.id).unwrap(), Some(revoked));
        assert!(matches!(
            store.revoke_api_key(Uuid::new_v4(), 10, "alice"),
            Err(StoreError::NotFound(_))
        ));
    }

    #[test]
    fn a_row_that_does_not_parse_is_corrupt_and_named() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(&dir.path().join("keys.db")).unwrap();
        let key = record("ci", 1);
        store.create_api_key(&key).unwrap();
        store
            .lock()
            .unwrap()
            .execute("UPDATE api_keys SET instances = 'not json'", [])
            .unwrap();
        let err = store.api_key(key.id).unwrap_err();
        assert!(
            matches!(&err, StoreError::Corrupt(why) if why.contains(&key.id.to_string())),
            "{err}"
        );
    }
}

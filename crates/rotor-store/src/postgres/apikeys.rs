//! [`ApiKeyStore`] on PostgreSQL: table `api_keys` (migration 2). A rotation or revocation
//! locks its row, so replicas that change one key at once apply both changes in turn.

use tokio_postgres::Row;
use tokio_postgres::error::SqlState;

use super::*;
use crate::apikeys::{ApiKeyChange, ApiKeyRecord, ApiKeyStore};

const COLUMNS: &str = "id, name, key_sha256, role, instances, generation, created, created_by, \
                       rotated, rotated_by, revoked, revoked_by";

fn parse(row: &Row) -> Result<ApiKeyRecord, StoreError> {
    let id: Uuid = row.get(0);
    let what = format!("API key {id}");
    let hash: Vec<u8> = row.get(2);
    let key_sha256 =
        <[u8; 32]>::try_from(hash).map_err(|_| corrupt(&what, "its hash is not 32 bytes"))?;
    let instances: String = row.get(4);
    let instances = serde_json::from_str(&instances).map_err(|err| corrupt(&what, err))?;
    let generation = u32::try_from(row.get::<_, i64>(5))
        .map_err(|_| corrupt(&what, "its generation is out of range"))?;
    let change =
        |at: Option<i64>, by: Option<String>| at.zip(by).map(|(at, by)| ApiKeyChange { at, by });
    Ok(ApiKeyRecord {
        id,
        name: row.get(1),
        key_sha256,
        role: row.get(3),
        instances,
        generation,
        created: row.get(6),
        created_by: row.get(7),
        rotated: change(row.get(8), row.get(9)),
        revoked: change(row.get(10), row.get(11)),
    })
}

/// A unique index refused the change: the id, hash or unrevoked name is taken.
fn conflict_or(err: tokio_postgres::Error, what: String) -> StoreError {
    if err.code() == Some(&SqlState::UNIQUE_VIOLATION) {
        StoreError::Conflict(what)
    } else {
        err.into()
    }
}

async fn locked(tx: &Tx<'_>, id: Uuid) -> Result<ApiKeyRecord, StoreError> {
    let row = tx
        .query_opt(
            &format!("SELECT {COLUMNS} FROM api_keys WHERE id = $1 FOR UPDATE"),
            &[&id],
        )
        .await?
        .ok_or_else(|| StoreError::NotFound(format!("no API key {id}")))?;
    parse(&row)
}

impl ApiKeyStore for PgStore {
    fn create_api_key(&self, key: &ApiKeyRecord) -> Result<(), StoreError> {
        let instances = serde_json::to_string(&key.instances)
            .map_err(|err| corrupt(format_args!("API key {}", key.id), err))?;
        self.run(async {
            let client = self.client().await?;
            client
                .execute(
                    &format!(
                        "INSERT INTO api_keys ({COLUMNS})
                         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)"
                    ),
                    &[
                        &key.id,
                        &key.name,
                        &key.key_sha256.as_slice(),
                        &key.role,
                        &instances,
                        &i64::from(key.generation),
                        &key.created,
                        &key.created_by,
                        &key.rotated.as_ref().map(|c| c.at),
                        &key.rotated.as_ref().map(|c| c.by.as_str()),
                        &key.revoked.as_ref().map(|c| c.at),
                        &key.revoked.as_ref().map(|c| c.by.as_str()),
                    ],
                )
                .await
                .map_err(|err| {
                    conflict_or(
                        err,
                        format!(
                            "an API key named '{}' exists already (or one with the same id or key)",
                            key.name
                        ),
                    )
                })?;
            Ok(())
        })
    }

    fn api_key(&self, id: Uuid) -> Result<Option<ApiKeyRecord>, StoreError> {
        self.run(async {
            let client = self.client().await?;
            client
                .query_opt(
                    &format!("SELECT {COLUMNS} FROM api_keys WHERE id = $1"),
                    &[&id],
                )
                .await?
                .as_ref()
                .map(parse)
                .transpose()
        })
    }

    fn api_key_by_hash(&self, key_sha256: &[u8; 32]) -> Result<Option<ApiKeyRecord>, StoreError> {
        self.run(async {
            let client = self.client().await?;
            client
                .query_opt(
                    &format!(
                        "SELECT {COLUMNS} FROM api_keys WHERE key_sha256 = $1 AND revoked IS NULL"
                    ),
                    &[&key_sha256.as_slice()],
                )
                .await?
                .as_ref()
                .map(parse)
                .transpose()
        })
    }

    fn api_keys(&self) -> Result<Vec<ApiKeyRecord>, StoreError> {
        self.run(async {
            let client = self.client().await?;
            client
                .query(
                    &format!("SELECT {COLUMNS} FROM api_keys ORDER BY created, id"),
                    &[],
                )
                .await?
                .iter()
                .map(parse)
                .collect()
        })
    }

    fn rotate_api_key(
        &self,
        id: Uuid,
        key_sha256: &[u8; 32],
        at: i64,
        by: &str,
    ) -> Result<ApiKeyRecord, StoreError> {
        self.run(async {
            let mut client = self.client().await?;
            let tx = client.transaction().await?;
            let key = locked(&tx, id).await?;
            if key.revoked.is_some() {
                return Err(StoreError::Refused(format!(
                    "API key {id} is revoked; create a new one"
                )));
            }
            let generation = key.generation.checked_add(1).ok_or_else(|| {
                StoreError::Refused(format!("API key {id} was rotated too often"))
            })?;
            tx.execute(
                "UPDATE api_keys SET key_sha256 = $2, generation = $3, rotated = $4, rotated_by = $5
                 WHERE id = $1",
                &[
                    &id,
                    &key_sha256.as_slice(),
                    &i64::from(generation),
                    &at,
                    &by,
                ],
            )
            .await
            .map_err(|err| conflict_or(err, "another API key has this key".to_owned()))?;
            tx.commit().await?;
            Ok(ApiKeyRecord {
                key_sha256: *key_sha256,
                generation,
                rotated: Some(ApiKeyChange {
                    at,
                    by: by.to_owned(),
                }),
                ..key
            })
        })
    }

    fn revoke_api_key(&self, id: Uuid, at: i64, by: &str) -> Result<ApiKeyRecord, StoreError> {
        self.run(async {
            let mut client = self.client().await?;
            let tx = client.transaction().await?;
            let key = locked(&tx, id).await?;
            if key.revoked.is_some() {
                return Ok(key);
            }
            tx.execute(
                "UPDATE api_keys SET revoked = $2, revoked_by = $3 WHERE id = $1",
                &[&id, &at, &by],
            )
            .await?;
            tx.commit().await?;
            Ok(ApiKeyRecord {
                revoked: Some(ApiKeyChange {
                    at,
                    by: by.to_owned(),
                }),
                ..key
            })
        })
    }
}

//! Keys on PostgreSQL: a key by id or alias, listing, changes under the key's row lock,
//! rotations (a new version), purging, aliases and key rings.

use tokio_postgres::types::ToSql;

use super::*;

async fn load(tx: &Tx<'_>, instance: Uuid, id: Uuid) -> Result<KeyMeta, StoreError> {
    let row = tx
        .query_opt(
            "SELECT doc FROM keys WHERE instance = $1 AND id = $2 FOR UPDATE",
            &[&instance, &id],
        )
        .await?
        .ok_or_else(|| StoreError::NotFound(format!("key {id} does not exist")))?;
    parse_doc(instance, &id.to_string(), row.get(0))
}

async fn save(tx: &Tx<'_>, key: &KeyMeta) -> Result<(), StoreError> {
    tx.execute(
        "UPDATE keys SET state = $3, extractable = $4, key_ring = $5, doc = $6
         WHERE instance = $1 AND id = $2",
        &[
            &key.instance,
            &key.id,
            &state_code(key),
            &key.extractable,
            &key.key_ring,
            &to_doc(key)?,
        ],
    )
    .await?;
    Ok(())
}

fn to_version(key: Uuid, row: &tokio_postgres::Row) -> Result<KeyVersion, StoreError> {
    let version: i64 = row.get(0);
    let name = format!("version {version} of key {key}");
    Ok(KeyVersion {
        version: u32::try_from(version).map_err(|err| corrupt(&name, err))?,
        id: row.get(1),
        blob: row.get(2),
        vp: vp_of(row.get(3), &name)?,
        created: row.get(4),
    })
}

pub(super) fn key(
    store: &PgStore,
    instance: Uuid,
    id_or_alias: &str,
) -> Result<Option<KeyMeta>, StoreError> {
    // PostgreSQL text cannot hold NUL, so no alias has one; asking would fail the query.
    if id_or_alias.contains('\0') {
        return Ok(None);
    }
    store.run(async {
        let client = store.client().await?;
        let id = match Uuid::parse_str(id_or_alias) {
            Ok(id) => Some(id),
            Err(_) => client
                .query_opt(
                    "SELECT key_id FROM aliases WHERE instance = $1 AND alias = $2",
                    &[&instance, &id_or_alias],
                )
                .await?
                .map(|row| row.get(0)),
        };
        let Some(id) = id else {
            return Ok(None);
        };
        let row = client
            .query_opt(
                "SELECT doc FROM keys WHERE instance = $1 AND id = $2",
                &[&instance, &id],
            )
            .await?;
        row.map(|row| parse_doc(instance, &id.to_string(), row.get(0)))
            .transpose()
    })
}

pub(super) fn list(
    store: &PgStore,
    instance: Uuid,
    filter: &ListFilter,
) -> Result<(Vec<KeyMeta>, u64), StoreError> {
    let states: Vec<i16> = if filter.states.is_empty() {
        vec![1, 2, 3]
    } else {
        filter
            .states
            .iter()
            .map(|s| i16::from(u8::from(*s)))
            .collect()
    };
    let mut args: Vec<&(dyn ToSql + Sync)> = vec![&instance, &states];
    let mut condition = "instance = $1 AND state = ANY($2)".to_owned();
    if let Some(extractable) = &filter.extractable {
        args.push(extractable);
        condition.push_str(&format!(" AND extractable = ${}", args.len()));
    }
    if let Some(ring) = &filter.key_ring {
        args.push(ring);
        condition.push_str(&format!(" AND key_ring = ${}", args.len()));
    }
    let (limit, offset) = (i64::from(filter.limit), i64::from(filter.offset));
    store.run(async {
        let client = store.client().await?;
        let total: i64 = client
            .query_one(
                &format!("SELECT count(*) FROM keys WHERE {condition}"),
                &args,
            )
            .await?
            .get(0);
        let mut page_args = args.clone();
        page_args.push(&limit);
        page_args.push(&offset);
        let rows = client
            .query(
                &format!(
                    "SELECT id, doc FROM keys WHERE {condition} ORDER BY created, id
                     LIMIT ${} OFFSET ${}",
                    args.len() + 1,
                    args.len() + 2
                ),
                &page_args,
            )
            .await?;
        let keys = rows
            .iter()
            .map(|row| parse_doc(instance, &row.get::<_, Uuid>(0).to_string(), row.get(1)))
            .collect::<Result<Vec<_>, _>>()?;
        Ok((keys, u64::try_from(total).unwrap_or(0)))
    })
}

pub(super) fn update(
    store: &PgStore,
    instance: Uuid,
    id: Uuid,
    change: &mut dyn FnMut(&mut KeyMeta) -> Result<(), StoreError>,
) -> Result<KeyMeta, StoreError> {
    store.run(async {
        let mut client = store.client().await?;
        let tx = client.transaction().await?;
        let mut key = load(&tx, instance, id).await?;
        change(&mut key)?;
        key.updated = now_ms();
        save(&tx, &key).await?;
        tx.commit().await?;
        Ok(key)
    })
}

pub(super) fn add_version(
    store: &PgStore,
    key: &KeyMeta,
    expected_newest: u32,
    version: &KeyVersion,
) -> Result<(), StoreError> {
    let vp = recorded_vp(
        &version.blob,
        &version.vp,
        format_args!("version {} of key {}", version.version, key.id),
    )?;
    store.run(async {
        let mut client = store.client().await?;
        let tx = client.transaction().await?;
        let mut stored = load(&tx, key.instance, key.id).await?;
        crate::apply_new_version(&mut stored, key, expected_newest)?;
        check_not_retired(&tx, &[(key.instance, version.vp, vp.clone())]).await?;
        tx.execute(
            "INSERT INTO key_versions (instance, key_id, version, id, extractable, vp, created, blob)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
            &[
                &key.instance,
                &key.id,
                &i64::from(version.version),
                &version.id,
                &key.extractable,
                &vp,
                &version.created,
                &version.blob,
            ],
        )
        .await?;
        save(&tx, &stored).await?;
        tx.commit().await?;
        Ok(())
    })
}

pub(super) fn versions(
    store: &PgStore,
    instance: Uuid,
    id: Uuid,
) -> Result<Vec<KeyVersion>, StoreError> {
    store.run(async {
        let client = store.client().await?;
        let rows = client
            .query(
                "SELECT version, id, blob, vp, created FROM key_versions
                 WHERE instance = $1 AND key_id = $2 ORDER BY version",
                &[&instance, &id],
            )
            .await?;
        rows.iter().map(|row| to_version(id, row)).collect()
    })
}

pub(super) fn version(
    store: &PgStore,
    instance: Uuid,
    id: Uuid,
    version: u32,
) -> Result<Option<KeyVersion>, StoreError> {
    store.run(async {
        let client = store.client().await?;
        let statement = client
            .prepare_cached(
                "SELECT version, id, blob, vp, created FROM key_versions
                 WHERE instance = $1 AND key_id = $2 AND version = $3",
            )
            .await?;
        let row = client
            .query_opt(&statement, &[&instance, &id, &i64::from(version)])
            .await?;
        row.map(|row| to_version(id, &row)).transpose()
    })
}

pub(super) fn purge(store: &PgStore, instance: Uuid, id: Uuid) -> Result<(), StoreError> {
    store.run(async {
        let mut client = store.client().await?;
        let tx = client.transaction().await?;
        tx.execute(
            "DELETE FROM key_versions WHERE instance = $1 AND key_id = $2",
            &[&instance, &id],
        )
        .await?;
        tx.execute(
            "DELETE FROM aliases WHERE instance = $1 AND key_id = $2",
            &[&instance, &id],
        )
        .await?;
        let removed = tx
            .execute(
                "DELETE FROM keys WHERE instance = $1 AND id = $2",
                &[&instance, &id],
            )
            .await?;
        if removed == 0 {
            return Err(StoreError::NotFound(format!("key {id} does not exist")));
        }
        tx.commit().await?;
        Ok(())
    })
}

pub(super) fn add_alias(
    store: &PgStore,
    instance: Uuid,
    id: Uuid,
    alias: &str,
) -> Result<KeyMeta, StoreError> {
    store.run(async {
        let mut client = store.client().await?;
        let tx = client.transaction().await?;
        let mut key = load(&tx, instance, id).await?;
        insert_alias(&tx, instance, id, alias).await?;
        key.aliases.push(alias.to_owned());
        key.updated = now_ms();
        save(&tx, &key).await?;
        tx.commit().await?;
        Ok(key)
    })
}

pub(super) fn remove_alias(
    store: &PgStore,
    instance: Uuid,
    id: Uuid,
    alias: &str,
) -> Result<KeyMeta, StoreError> {
    store.run(async {
        let mut client = store.client().await?;
        let tx = client.transaction().await?;
        let mut key = load(&tx, instance, id).await?;
        let removed = tx
            .execute(
                "DELETE FROM aliases WHERE instance = $1 AND alias = $2 AND key_id = $3",
                &[&instance, &alias, &id],
            )
            .await?;
        if removed == 0 {
            return Err(StoreError::NotFound(format!(
                "key {id} has no alias '{alias}'"
            )));
        }
        key.aliases.retain(|a| a != alias);
        key.updated = now_ms();
        save(&tx, &key).await?;
        tx.commit().await?;
        Ok(key)
    })
}

pub(super) fn key_rings(store: &PgStore, instance: Uuid) -> Result<Vec<KeyRing>, StoreError> {
    store.run(async {
        let client = store.client().await?;
        let rows = client
            .query(
                "SELECT id, created, created_by FROM key_rings WHERE instance = $1
                 ORDER BY created, id",
                &[&instance],
            )
            .await?;
        let mut rings = vec![KeyRing {
            id: "default".to_owned(),
            created: 0,
            created_by: "rotor".to_owned(),
        }];
        rings.extend(rows.iter().map(|row| KeyRing {
            id: row.get(0),
            created: row.get(1),
            created_by: row.get(2),
        }));
        Ok(rings)
    })
}

pub(super) fn create_key_ring(
    store: &PgStore,
    instance: Uuid,
    ring: &KeyRing,
) -> Result<(), StoreError> {
    if ring.id == "default" {
        return Err(StoreError::Conflict(
            "key ring 'default' already exists".to_owned(),
        ));
    }
    store.run(async {
        let client = store.client().await?;
        let inserted = client
            .execute(
                "INSERT INTO key_rings (instance, id, created, created_by) VALUES ($1, $2, $3, $4)
                 ON CONFLICT DO NOTHING",
                &[&instance, &ring.id, &ring.created, &ring.created_by],
            )
            .await?;
        if inserted == 0 {
            return Err(StoreError::Conflict(format!(
                "key ring '{}' already exists",
                ring.id
            )));
        }
        Ok(())
    })
}

pub(super) fn delete_key_ring(store: &PgStore, instance: Uuid, id: &str) -> Result<(), StoreError> {
    if id == "default" {
        return Err(StoreError::Refused(
            "the default key ring cannot be deleted".to_owned(),
        ));
    }
    store.run(async {
        let mut client = store.client().await?;
        let tx = client.transaction().await?;
        let keys: i64 = tx
            .query_one(
                "SELECT count(*) FROM keys WHERE instance = $1 AND key_ring = $2",
                &[&instance, &id],
            )
            .await?
            .get(0);
        if keys > 0 {
            return Err(StoreError::Refused(format!(
                "key ring '{id}' still holds {keys} key(s); purge them or move them to another key ring first"
            )));
        }
        let removed = tx
            .execute(
                "DELETE FROM key_rings WHERE instance = $1 AND id = $2",
                &[&instance, &id],
            )
            .await?;
        if removed == 0 {
            return Err(StoreError::NotFound(format!(
                "key ring '{id}' does not exist"
            )));
        }
        tx.commit().await?;
        Ok(())
    })
}

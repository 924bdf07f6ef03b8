//! Work on many key versions at once: creating keys by binary `COPY`, counting and reading
//! the versions under a master key in position order, and rewriting their blobs through each
//! connection's staging table (see the module documentation of the parent).

use std::pin::pin;

use tokio_postgres::binary_copy::BinaryCopyInWriter;
use tokio_postgres::error::SqlState;
use tokio_postgres::types::Type;

use super::*;

/// Each connection's staging table for [`KeyStore::replace_blobs`], emptied at every commit.
pub(super) const STAGING: &str = "CREATE TEMPORARY TABLE blob_staging (
    position bigint NOT NULL,
    old bytea NOT NULL,
    new bytea NOT NULL,
    vp bytea NOT NULL
) ON COMMIT DELETE ROWS";

/// How many times a bulk rewrite is retried when the database chose it as a deadlock victim
/// (two writers locking the same rows in different orders); each try is all or nothing.
const DEADLOCK_TRIES: u32 = 5;

fn is_deadlock(err: &tokio_postgres::Error) -> bool {
    matches!(
        err.code(),
        Some(code) if *code == SqlState::T_R_DEADLOCK_DETECTED || *code == SqlState::T_R_SERIALIZATION_FAILURE
    )
}

/// A version as `COPY` writes it, with the VP column taken from the blob.
struct VersionRow<'a> {
    key: &'a KeyMeta,
    version: &'a KeyVersion,
    vp: Vec<u8>,
}

pub(super) fn count_by_vp(store: &PgStore, instance: Uuid) -> Result<Vec<(Vp, u64)>, StoreError> {
    store.run(async {
        let client = store.client().await?;
        let rows = client
            .query(
                "SELECT vp, count(*) FROM key_versions WHERE instance = $1
                 GROUP BY vp ORDER BY vp",
                &[&instance],
            )
            .await?;
        rows.iter()
            .map(|row| {
                let vp = vp_of(
                    row.get(0),
                    format_args!("a key version of instance {instance}"),
                )?;
                Ok((vp, u64::try_from(row.get::<_, i64>(1)).unwrap_or(0)))
            })
            .collect()
    })
}

pub(super) fn count_under(store: &PgStore, instance: Uuid, vp: &Vp) -> Result<u64, StoreError> {
    store.run(async {
        let count: i64 = store
            .client()
            .await?
            .query_one(
                "SELECT count(*) FROM key_versions WHERE instance = $1 AND vp = $2",
                &[&instance, &vp.0.as_slice()],
            )
            .await?
            .get(0);
        Ok(u64::try_from(count).unwrap_or(0))
    })
}

pub(super) fn create_keys(
    store: &PgStore,
    keys: &[(KeyMeta, KeyVersion)],
) -> Result<(), StoreError> {
    if keys.is_empty() {
        return Ok(());
    }
    let rows = keys
        .iter()
        .map(|(key, version)| {
            let vp = recorded_vp(
                &version.blob,
                &version.vp,
                format_args!("version {} of key {}", version.version, key.id),
            )?;
            Ok(VersionRow { key, version, vp })
        })
        .collect::<Result<Vec<_>, StoreError>>()?;
    let docs = keys
        .iter()
        .map(|(key, _)| to_doc(key))
        .collect::<Result<Vec<_>, _>>()?;
    let checked: Vec<(Uuid, Vp, Vec<u8>)> = rows
        .iter()
        .map(|row| (row.key.instance, row.version.vp, row.vp.clone()))
        .collect();
    store.run(async {
        let mut client = store.client().await?;
        let tx = client.transaction().await?;
        check_not_retired(&tx, &checked).await?;
        let sink = tx
            .copy_in(
                "COPY keys (instance, id, state, extractable, key_ring, created, doc)
                 FROM STDIN BINARY",
            )
            .await?;
        let types = [
            Type::UUID,
            Type::UUID,
            Type::INT2,
            Type::BOOL,
            Type::TEXT,
            Type::INT8,
            Type::TEXT,
        ];
        let mut writer = pin!(BinaryCopyInWriter::new(sink, &types));
        for ((key, _), doc) in keys.iter().zip(&docs) {
            writer
                .as_mut()
                .write(&[
                    &key.instance,
                    &key.id,
                    &state_code(key),
                    &key.extractable,
                    &key.key_ring,
                    &key.created,
                    doc,
                ])
                .await?;
        }
        writer.finish().await?;
        let sink = tx
            .copy_in(
                "COPY key_versions (instance, key_id, version, id, extractable, vp, created, blob)
                 FROM STDIN BINARY",
            )
            .await?;
        let types = [
            Type::UUID,
            Type::UUID,
            Type::INT8,
            Type::UUID,
            Type::BOOL,
            Type::BYTEA,
            Type::INT8,
            Type::BYTEA,
        ];
        let mut writer = pin!(BinaryCopyInWriter::new(sink, &types));
        for row in &rows {
            writer
                .as_mut()
                .write(&[
                    &row.key.instance,
                    &row.key.id,
                    &i64::from(row.version.version),
                    &row.version.id,
                    &row.key.extractable,
                    &row.vp,
                    &row.version.created,
                    &row.version.blob,
                ])
                .await?;
        }
        writer.finish().await?;
        for (key, _) in keys {
            for alias in &key.aliases {
                insert_alias(&tx, key.instance, key.id, alias).await?;
            }
        }
        tx.commit().await?;
        Ok(())
    })
}

pub(super) fn blobs_under(
    store: &PgStore,
    instance: Uuid,
    vp: &Vp,
    after: i64,
    until: i64,
    limit: u32,
) -> Result<Vec<StoredBlob>, StoreError> {
    store.run(async {
        let mut client = store.client().await?;
        let tx = client.transaction().await?;
        // Walk the position index in order and stop at the limit, whatever the statistics
        // say (right after a bulk load they say nothing, and a bitmap scan sorting half the
        // table would be chosen).
        tx.batch_execute(
            "SET LOCAL enable_bitmapscan = off; SET LOCAL enable_seqscan = off;
             SET LOCAL enable_sort = off",
        )
        .await?;
        let statement = tx
            .prepare_cached(
                "SELECT position, key_id, version, extractable, blob FROM key_versions
                 WHERE instance = $1 AND vp = $2 AND position > $3 AND position <= $4
                 ORDER BY position LIMIT $5",
            )
            .await?;
        let rows = tx
            .query(
                &statement,
                &[
                    &instance,
                    &vp.0.as_slice(),
                    &after,
                    &until,
                    &i64::from(limit),
                ],
            )
            .await?;
        rows.iter()
            .map(|row| {
                let (key, version): (Uuid, i64) = (row.get(1), row.get(2));
                Ok(StoredBlob {
                    position: row.get(0),
                    key,
                    version: u32::try_from(version).map_err(|err| {
                        corrupt(format_args!("version {version} of key {key}"), err)
                    })?,
                    extractable: row.get(3),
                    blob: row.get(4),
                })
            })
            .collect()
    })
}

pub(super) fn positions_under(
    store: &PgStore,
    instance: Uuid,
    vp: &Vp,
) -> Result<Option<(i64, i64)>, StoreError> {
    store.run(async {
        let row = store
            .client()
            .await?
            .query_one(
                "SELECT min(position), max(position) FROM key_versions
                 WHERE instance = $1 AND vp = $2",
                &[&instance, &vp.0.as_slice()],
            )
            .await?;
        let bounds: (Option<i64>, Option<i64>) = (row.get(0), row.get(1));
        Ok(bounds.0.zip(bounds.1))
    })
}

pub(super) fn replace_blobs(
    store: &PgStore,
    replacements: &[BlobReplacement],
) -> Result<u64, StoreError> {
    if replacements.is_empty() {
        return Ok(0);
    }
    let vps = replacements
        .iter()
        .map(|item| {
            recorded_vp(
                &item.new,
                &item.vp,
                format_args!("the rewrapped blob at position {}", item.position),
            )
        })
        .collect::<Result<Vec<_>, _>>()?;
    store.run(async {
        let mut client = store.client().await?;
        let mut tries = 0;
        loop {
            tries += 1;
            match rewrite(&mut client, replacements, &vps).await {
                Err(err) if tries < DEADLOCK_TRIES && is_deadlock(&err) => continue,
                result => return Ok(result?),
            }
        }
    })
}

/// One try of [`KeyStore::replace_blobs`]: the batch copied into the staging table, then one
/// compare-and-swap `UPDATE` of every row that still holds the bytes it was read with.
async fn rewrite(
    client: &mut Client,
    replacements: &[BlobReplacement],
    vps: &[Vec<u8>],
) -> Result<u64, tokio_postgres::Error> {
    let tx = client.transaction().await?;
    // The staging table has no statistics; the join must still probe by position rather than
    // scan the whole table.
    tx.batch_execute("SET LOCAL enable_hashjoin = off; SET LOCAL enable_mergejoin = off")
        .await?;
    let sink = tx
        .copy_in("COPY blob_staging (position, old, new, vp) FROM STDIN BINARY")
        .await?;
    let types = [Type::INT8, Type::BYTEA, Type::BYTEA, Type::BYTEA];
    let mut writer = pin!(BinaryCopyInWriter::new(sink, &types));
    for (item, vp) in replacements.iter().zip(vps) {
        writer
            .as_mut()
            .write(&[&item.position, &item.old, &item.new, vp])
            .await?;
    }
    writer.finish().await?;
    let statement = tx
        .prepare_cached(
            "UPDATE key_versions SET blob = s.new, vp = s.vp FROM blob_staging s
             WHERE key_versions.position = s.position AND key_versions.blob = s.old",
        )
        .await?;
    let replaced = tx.execute(&statement, &[]).await?;
    tx.commit().await?;
    Ok(replaced)
}

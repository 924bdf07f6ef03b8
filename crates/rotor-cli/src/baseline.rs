//! The baseline `rotor demo --baseline` measures in the same run as the rotation: the bare
//! SQLite rewrite of the same rows. One process reads the demo's keystore in batches of 10,000
//! rows by rowid, does one AES-256-GCM decrypt and one encrypt of a 32-byte key per row (the
//! crypto of a rewrap, with no unit hop), and writes each row back by rowid in one transaction
//! per batch, with the service's durability settings (WAL, `synchronous = FULL`). It runs after
//! the demo has verified every key, on the demo's throwaway keystore, whose blobs it overwrites.
//!
//! On PostgreSQL (`rotor demo --postgres`) the baseline is the fastest plain rewrite of the same
//! rows: batches of 10,000 read by position, the same crypto per row, and each batch written
//! back in one transaction as the store does it: a binary `COPY` into a staging table and one
//! `UPDATE … FROM` that replaces a blob only if it still holds the bytes read.

use std::path::Path;
use std::time::Instant;

use anyhow::{Context, Result};
use rotor_crypto::{Secret32, open_aes256gcm, seal_aes256gcm};
use rusqlite::{Connection, params};
use tokio_postgres::binary_copy::BinaryCopyInWriter;
use tokio_postgres::types::Type;

/// Rows per read and per transaction.
const BATCH: i64 = 10_000;

/// Rewrites every key version blob of the keystore at `path`; returns rows and seconds.
pub fn bare_rewrite(path: &Path) -> Result<(u64, f64)> {
    let connection = Connection::open(path).context("cannot open the demo keystore")?;
    connection.pragma_update(None, "journal_mode", "WAL")?;
    connection.pragma_update(None, "synchronous", "FULL")?;
    connection.busy_timeout(std::time::Duration::from_secs(10))?;
    let old = Secret32::random();
    let new = Secret32::random();
    let sealed = seal_aes256gcm(&old, b"baseline", &[7u8; 32]);
    let started = Instant::now();
    let mut rows = 0u64;
    let mut after = 0i64;
    loop {
        let batch: Vec<(i64, Vec<u8>)> = connection
            .prepare_cached(
                "SELECT rowid, blob FROM key_versions WHERE rowid > ?1 ORDER BY rowid LIMIT ?2",
            )?
            .query_map(params![after, BATCH], |row| Ok((row.get(0)?, row.get(1)?)))?
            .collect::<Result<_, _>>()?;
        let Some((last, _)) = batch.last() else {
            break;
        };
        after = *last;
        let tx = connection.unchecked_transaction()?;
        {
            let mut update = tx.prepare_cached(
                "UPDATE key_versions SET blob = ?1, vp = ?2 WHERE rowid = ?3 AND blob = ?4",
            )?;
            for (rowid, blob) in &batch {
                let key = open_aes256gcm(&old, b"baseline", &sealed)
                    .map_err(|_| anyhow::anyhow!("baseline decryption failed"))?;
                let mut rewrapped = new.vp().0.to_vec();
                rewrapped.extend_from_slice(&seal_aes256gcm(&new, b"baseline", &key));
                update.execute(params![rewrapped, new.vp().0.to_vec(), rowid, blob])?;
                rows += 1;
            }
        }
        tx.commit()?;
    }
    Ok((rows, started.elapsed().as_secs_f64()))
}

/// Rewrites every key version blob of the PostgreSQL database at `url`; returns rows and
/// seconds.
pub async fn bare_rewrite_postgres(url: &str) -> Result<(u64, f64)> {
    let (mut client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .context("cannot connect to the demo database")?;
    let connection = tokio::spawn(connection);
    client
        .batch_execute(
            "CREATE TEMPORARY TABLE baseline_staging (
                position bigint NOT NULL,
                old bytea NOT NULL,
                new bytea NOT NULL,
                vp bytea NOT NULL
            ) ON COMMIT DELETE ROWS",
        )
        .await?;
    let select = client
        .prepare("SELECT position, blob FROM key_versions WHERE position > $1 ORDER BY position LIMIT $2")
        .await?;
    let old = Secret32::random();
    let new = Secret32::random();
    let sealed = seal_aes256gcm(&old, b"baseline", &[7u8; 32]);
    let new_vp = new.vp().0.to_vec();
    let started = Instant::now();
    let mut rows = 0u64;
    let mut after = 0i64;
    loop {
        let batch = client.query(&select, &[&after, &BATCH]).await?;
        let Some(last) = batch.last() else {
            break;
        };
        after = last.get(0);
        let tx = client.transaction().await?;
        tx.batch_execute("SET LOCAL enable_hashjoin = off; SET LOCAL enable_mergejoin = off")
            .await?;
        let sink = tx
            .copy_in("COPY baseline_staging (position, old, new, vp) FROM STDIN BINARY")
            .await?;
        let mut writer = std::pin::pin!(BinaryCopyInWriter::new(
            sink,
            &[Type::INT8, Type::BYTEA, Type::BYTEA, Type::BYTEA]
        ));
        for row in &batch {
            let (position, blob): (i64, &[u8]) = (row.get(0), row.get(1));
            let key = open_aes256gcm(&old, b"baseline", &sealed)
                .map_err(|_| anyhow::anyhow!("baseline decryption failed"))?;
            let mut rewrapped = new_vp.clone();
            rewrapped.extend_from_slice(&seal_aes256gcm(&new, b"baseline", &key));
            writer
                .as_mut()
                .write(&[&position, &blob, &rewrapped, &new_vp])
                .await?;
        }
        writer.finish().await?;
        let replaced = tx
            .execute(
                "UPDATE key_versions SET blob = s.new, vp = s.vp FROM baseline_staging s
                 WHERE key_versions.position = s.position AND key_versions.blob = s.old",
                &[],
            )
            .await?;
        tx.commit().await?;
        rows += replaced;
    }
    let seconds = started.elapsed().as_secs_f64();
    drop(client);
    let _ = connection.await;
    Ok((rows, seconds))
}

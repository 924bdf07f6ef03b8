//! What the service keeps beside the keys: instance policies, import tokens (under their
//! advisory lock), master key rotation journals (under the journal lock), leases, and the
//! units it has met.

use super::*;

fn import_token_lock(instance: Uuid) -> String {
    format!("rotor:import-token:{instance}")
}

/// Stores `journal` with the master key it closes beside it; the caller holds the journal lock.
async fn write_journal(tx: &Tx<'_>, instance: Uuid, journal: &Journal) -> Result<(), StoreError> {
    let doc = serde_json::to_string(journal)
        .map_err(|err| corrupt(format_args!("rotation journal of instance {instance}"), err))?;
    let closed = journal.closed_source().map(|vp| vp.0.to_vec());
    tx.execute(
        "INSERT INTO rotations (instance, doc, closed_vp) VALUES ($1, $2, $3)
         ON CONFLICT (instance) DO UPDATE SET doc = excluded.doc, closed_vp = excluded.closed_vp",
        &[&instance, &doc, &closed],
    )
    .await?;
    Ok(())
}

async fn read_journal(tx: &Tx<'_>, instance: Uuid) -> Result<Option<Journal>, StoreError> {
    let row = tx
        .query_opt(
            "SELECT doc FROM rotations WHERE instance = $1",
            &[&instance],
        )
        .await?;
    row.map(|row| parse_journal(instance, row.get(0)))
        .transpose()
}

pub(super) fn instance_policies(
    store: &PgStore,
    instance: Uuid,
) -> Result<InstancePolicies, StoreError> {
    store.run(async {
        let client = store.client().await?;
        let row = client
            .query_opt(
                "SELECT doc FROM instance_policies WHERE instance = $1",
                &[&instance],
            )
            .await?;
        row.map_or_else(
            || Ok(InstancePolicies::new()),
            |row| parse_instance_policies(instance, row.get(0)),
        )
    })
}

pub(super) fn set_instance_policies(
    store: &PgStore,
    instance: Uuid,
    policies: &InstancePolicies,
) -> Result<(), StoreError> {
    let doc = serde_json::to_string(policies).map_err(|err| {
        corrupt(
            format_args!("instance policies of instance {instance}"),
            err,
        )
    })?;
    store.run(async {
        store
            .client()
            .await?
            .execute(
                "INSERT INTO instance_policies (instance, doc) VALUES ($1, $2)
                 ON CONFLICT (instance) DO UPDATE SET doc = excluded.doc",
                &[&instance, &doc],
            )
            .await?;
        Ok(())
    })
}

pub(super) fn import_token(
    store: &PgStore,
    instance: Uuid,
) -> Result<Option<ImportToken>, StoreError> {
    store.run(async {
        let client = store.client().await?;
        let row = client
            .query_opt(
                "SELECT doc, sealed_private_key FROM import_tokens WHERE instance = $1",
                &[&instance],
            )
            .await?;
        row.map(|row| parse_import_token(instance, row.get(0), row.get(1)))
            .transpose()
    })
}

pub(super) fn update_import_token(
    store: &PgStore,
    instance: Uuid,
    change: &mut dyn FnMut(&mut Option<ImportToken>) -> Result<(), StoreError>,
) -> Result<Option<ImportToken>, StoreError> {
    store.run(async {
        let mut client = store.client().await?;
        let tx = client.transaction().await?;
        lock(&tx, &import_token_lock(instance)).await?;
        let row = tx
            .query_opt(
                "SELECT doc, sealed_private_key FROM import_tokens WHERE instance = $1",
                &[&instance],
            )
            .await?;
        let mut token = row
            .map(|row| parse_import_token(instance, row.get(0), row.get(1)))
            .transpose()?;
        change(&mut token)?;
        match &token {
            Some(token) => {
                tx.execute(
                    "INSERT INTO import_tokens (instance, doc, sealed_private_key)
                     VALUES ($1, $2, $3)
                     ON CONFLICT (instance) DO UPDATE
                     SET doc = excluded.doc, sealed_private_key = excluded.sealed_private_key",
                    &[
                        &instance,
                        &import_token_doc(instance, token)?,
                        &token.sealed_private_key,
                    ],
                )
                .await?
            }
            None => {
                tx.execute(
                    "DELETE FROM import_tokens WHERE instance = $1",
                    &[&instance],
                )
                .await?
            }
        };
        tx.commit().await?;
        Ok(token)
    })
}

pub(super) fn rotation_journal(
    store: &PgStore,
    instance: Uuid,
) -> Result<Option<Journal>, StoreError> {
    store.run(async {
        let mut client = store.client().await?;
        let tx = client.transaction().await?;
        read_journal(&tx, instance).await
    })
}

pub(super) fn put_rotation_journal(
    store: &PgStore,
    instance: Uuid,
    journal: &Journal,
) -> Result<(), StoreError> {
    store.run(async {
        let mut client = store.client().await?;
        let tx = client.transaction().await?;
        lock(&tx, &journal_lock(instance)).await?;
        write_journal(&tx, instance, journal).await?;
        tx.commit().await?;
        Ok(())
    })
}

pub(super) fn update_rotation_journal(
    store: &PgStore,
    instance: Uuid,
    change: &mut dyn FnMut(&mut Option<Journal>) -> Result<bool, StoreError>,
) -> Result<Option<Journal>, StoreError> {
    store.run(async {
        let mut client = store.client().await?;
        let tx = client.transaction().await?;
        lock(&tx, &journal_lock(instance)).await?;
        let mut journal = read_journal(&tx, instance).await?;
        if change(&mut journal)? {
            match &journal {
                Some(journal) => write_journal(&tx, instance, journal).await?,
                None => {
                    tx.execute("DELETE FROM rotations WHERE instance = $1", &[&instance])
                        .await?;
                }
            }
            tx.commit().await?;
        }
        Ok(journal)
    })
}

pub(super) fn take_lease(
    store: &PgStore,
    name: &str,
    holder: &str,
    now: i64,
    ttl_ms: i64,
) -> Result<bool, StoreError> {
    store.run(async {
        let taken = store
            .client()
            .await?
            .execute(
                "INSERT INTO leases (name, holder, expires) VALUES ($1, $2, $3)
                 ON CONFLICT (name) DO UPDATE SET holder = excluded.holder, expires = excluded.expires
                 WHERE leases.holder = excluded.holder OR leases.expires <= $4",
                &[&name, &holder, &now.saturating_add(ttl_ms), &now],
            )
            .await?;
        Ok(taken == 1)
    })
}

pub(super) fn release_lease(store: &PgStore, name: &str, holder: &str) -> Result<(), StoreError> {
    store.run(async {
        store
            .client()
            .await?
            .execute(
                "DELETE FROM leases WHERE name = $1 AND holder = $2",
                &[&name, &holder],
            )
            .await?;
        Ok(())
    })
}

pub(super) fn leases(store: &PgStore, prefix: &str, now: i64) -> Result<Vec<Lease>, StoreError> {
    store.run(async {
        let rows = store
            .client()
            .await?
            .query(
                "SELECT name, holder, expires FROM leases
                 WHERE starts_with(name, $1) AND expires > $2 ORDER BY name",
                &[&prefix, &now],
            )
            .await?;
        Ok(rows
            .iter()
            .map(|row| Lease {
                name: row.get(0),
                holder: row.get(1),
                expires: row.get(2),
            })
            .collect())
    })
}

pub(super) fn unit_record(store: &PgStore, unit: Uuid) -> Result<Option<UnitRecord>, StoreError> {
    store.run(async {
        let row = store
            .client()
            .await?
            .query_opt(
                "SELECT identity, last_counter FROM unit_identities WHERE unit = $1",
                &[&unit],
            )
            .await?;
        row.map(|row| unit_record_of(unit, row.get(0), row.get(1)))
            .transpose()
    })
}

pub(super) fn note_unit(
    store: &PgStore,
    unit: Uuid,
    record: &UnitRecord,
) -> Result<(), StoreError> {
    let identity = serde_json::to_string(&record.identity)
        .map_err(|err| corrupt(format_args!("identity of unit {unit}"), err))?;
    let counter = i64::try_from(record.last_counter).unwrap_or(i64::MAX);
    store.run(async {
        store
            .client()
            .await?
            .execute(
                "INSERT INTO unit_identities (unit, identity, last_counter) VALUES ($1, $2, $3)
                 ON CONFLICT (unit) DO UPDATE
                 SET last_counter = greatest(unit_identities.last_counter, excluded.last_counter)
                 WHERE unit_identities.identity = excluded.identity",
                &[&unit, &identity, &counter],
            )
            .await?;
        Ok(())
    })
}

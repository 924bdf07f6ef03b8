//! [`AuditStore`] on PostgreSQL: tables `audit_entries`, `audit_heads` and
//! `audit_countersignatures`. An append holds its chain's advisory lock, so replicas that
//! append to one chain at once each continue the head the other left.

use rotor_proto::audit::{
    AdminRecord, ChainHead, Countersignature, Entry, StoredEntry, entry_hash,
};

use super::*;
use crate::audit::{AuditChain, AuditStore};

fn chain_lock(chain: &str) -> String {
    format!("rotor:audit:{chain}")
}

async fn head_of(
    client: &impl deadpool_postgres::GenericClient,
    chain: &str,
) -> Result<ChainHead, StoreError> {
    let row = client
        .query_opt(
            "SELECT seq, hash FROM audit_heads WHERE chain = $1",
            &[&chain],
        )
        .await?;
    let Some(row) = row else {
        return Ok(ChainHead::EMPTY);
    };
    let (seq, hash): (i64, Vec<u8>) = (row.get(0), row.get(1));
    Ok(ChainHead {
        seq: u64::try_from(seq)
            .map_err(|_| corrupt(format_args!("head of {chain}"), "negative"))?,
        hash: hash
            .try_into()
            .map_err(|_| corrupt(format_args!("head of {chain}"), "its hash is not 32 bytes"))?,
    })
}

async fn insert(
    tx: &Tx<'_>,
    chain: &str,
    head: ChainHead,
    stored: &StoredEntry,
) -> Result<(), StoreError> {
    let seq = i64::try_from(head.seq).unwrap_or(i64::MAX);
    tx.execute(
        "INSERT INTO audit_entries (chain, seq, entry, signature) VALUES ($1, $2, $3, $4)",
        &[&chain, &seq, &stored.entry, &stored.signature],
    )
    .await?;
    tx.execute(
        "INSERT INTO audit_heads (chain, seq, hash) VALUES ($1, $2, $3)
         ON CONFLICT (chain) DO UPDATE SET seq = excluded.seq, hash = excluded.hash",
        &[&chain, &seq, &head.hash.as_slice()],
    )
    .await?;
    Ok(())
}

impl AuditStore for PgStore {
    fn audit_head(&self, chain: AuditChain) -> Result<ChainHead, StoreError> {
        self.run(async { head_of(&self.client().await?, &chain.key()).await })
    }

    fn append_key_event(
        &self,
        instance: Uuid,
        build: &mut dyn FnMut(ChainHead) -> (ChainHead, Vec<u8>),
    ) -> Result<ChainHead, StoreError> {
        let chain = AuditChain::Instance(instance).key();
        self.run(async {
            let mut client = self.client().await?;
            let tx = client.transaction().await?;
            lock(&tx, &chain_lock(&chain)).await?;
            let (head, entry) = build(head_of(&tx, &chain).await?);
            let stored = StoredEntry {
                entry,
                signature: Vec::new(),
            };
            insert(&tx, &chain, head, &stored).await?;
            tx.commit().await?;
            Ok(head)
        })
    }

    fn append_unit_entries(
        &self,
        unit: Uuid,
        entries: &[StoredEntry],
    ) -> Result<ChainHead, StoreError> {
        let chain = AuditChain::Unit(unit).key();
        self.run(async {
            let mut client = self.client().await?;
            let tx = client.transaction().await?;
            lock(&tx, &chain_lock(&chain)).await?;
            let mut head = head_of(&tx, &chain).await?;
            for stored in entries {
                let entry = Entry::<AdminRecord>::decode(&stored.entry);
                let next =
                    entry.filter(|entry| entry.seq == head.seq + 1 && entry.prev == head.hash);
                if next.is_none() {
                    return Err(StoreError::Refused(format!(
                        "unit {unit} served an audit entry that does not continue entry {} of its chain",
                        head.seq
                    )));
                }
                head = ChainHead {
                    seq: head.seq + 1,
                    hash: entry_hash(&stored.entry),
                };
                insert(&tx, &chain, head, stored).await?;
            }
            tx.commit().await?;
            Ok(head)
        })
    }

    fn audit_entries(&self, chain: AuditChain) -> Result<Vec<StoredEntry>, StoreError> {
        self.run(async {
            let rows = self
                .client()
                .await?
                .query(
                    "SELECT entry, signature FROM audit_entries WHERE chain = $1 ORDER BY seq",
                    &[&chain.key()],
                )
                .await?;
            Ok(rows
                .iter()
                .map(|row| StoredEntry {
                    entry: row.get(0),
                    signature: row.get(1),
                })
                .collect())
        })
    }

    fn add_countersignature(&self, countersignature: &Countersignature) -> Result<(), StoreError> {
        let doc = serde_json::to_string(countersignature)
            .map_err(|err| corrupt("countersignature", err))?;
        let seq = i64::try_from(countersignature.head.seq).unwrap_or(i64::MAX);
        self.run(async {
            self.client()
                .await?
                .execute(
                    "INSERT INTO audit_countersignatures (instance, seq, unit, doc)
                     VALUES ($1, $2, $3, $4)
                     ON CONFLICT (instance, seq, unit) DO UPDATE SET doc = excluded.doc",
                    &[
                        &countersignature.instance,
                        &seq,
                        &countersignature.unit,
                        &doc,
                    ],
                )
                .await?;
            Ok(())
        })
    }

    fn countersignatures(&self, instance: Uuid) -> Result<Vec<Countersignature>, StoreError> {
        self.run(async {
            let rows = self
                .client()
                .await?
                .query(
                    "SELECT seq, doc FROM audit_countersignatures WHERE instance = $1
                     ORDER BY seq, unit",
                    &[&instance],
                )
                .await?;
            rows.iter()
                .map(|row| {
                    let seq: i64 = row.get(0);
                    serde_json::from_str(row.get(1)).map_err(|err| {
                        corrupt(
                            format_args!("countersignature of entry {seq} of instance {instance}"),
                            err,
                        )
                    })
                })
                .collect()
        })
    }
}

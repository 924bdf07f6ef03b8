//! [`AuditStore`] on SQLite: tables `audit_entries`, `audit_heads` and
//! `audit_countersignatures` (migration 7).

use rotor_proto::audit::{
    AdminRecord, ChainHead, Countersignature, Entry, StoredEntry, entry_hash,
};

use super::*;
use crate::audit::{AuditChain, AuditStore};

fn head_of(tx: &Transaction<'_>, chain: &str) -> Result<ChainHead, StoreError> {
    let row: Option<(i64, Vec<u8>)> = tx
        .query_row(
            "SELECT seq, hash FROM audit_heads WHERE chain = ?1",
            params![chain],
            |row| Ok((row.get(0)?, row.get(1)?)),
        )
        .optional()?;
    match row {
        None => Ok(ChainHead::EMPTY),
        Some((seq, hash)) => Ok(ChainHead {
            seq: u64::try_from(seq)
                .map_err(|_| corrupt(format_args!("head of {chain}"), "negative"))?,
            hash: hash.try_into().map_err(|_| {
                corrupt(format_args!("head of {chain}"), "its hash is not 32 bytes")
            })?,
        }),
    }
}

fn insert(
    tx: &Transaction<'_>,
    chain: &str,
    head: ChainHead,
    stored: &StoredEntry,
) -> Result<(), StoreError> {
    let seq = i64::try_from(head.seq).unwrap_or(i64::MAX);
    tx.execute(
        "INSERT INTO audit_entries (chain, seq, entry, signature) VALUES (?1, ?2, ?3, ?4)",
        params![chain, seq, stored.entry, stored.signature],
    )?;
    tx.execute(
        "INSERT INTO audit_heads (chain, seq, hash) VALUES (?1, ?2, ?3)
         ON CONFLICT (chain) DO UPDATE SET seq = excluded.seq, hash = excluded.hash",
        params![chain, seq, head.hash.to_vec()],
    )?;
    Ok(())
}

impl AuditStore for SqliteStore {
    fn audit_head(&self, chain: AuditChain) -> Result<ChainHead, StoreError> {
        let mut connection = self.lock()?;
        let tx = connection.transaction()?;
        head_of(&tx, &chain.key())
    }

    fn append_key_event(
        &self,
        instance: Uuid,
        build: &mut dyn FnMut(ChainHead) -> (ChainHead, Vec<u8>),
    ) -> Result<ChainHead, StoreError> {
        let chain = AuditChain::Instance(instance).key();
        let mut connection = self.lock()?;
        let tx = connection.transaction()?;
        let (head, entry) = build(head_of(&tx, &chain)?);
        let stored = StoredEntry {
            entry,
            signature: Vec::new(),
        };
        insert(&tx, &chain, head, &stored)?;
        tx.commit()?;
        Ok(head)
    }

    fn append_unit_entries(
        &self,
        unit: Uuid,
        entries: &[StoredEntry],
    ) -> Result<ChainHead, StoreError> {
        let chain = AuditChain::Unit(unit).key();
        let mut connection = self.lock()?;
        let tx = connection.transaction()?;
        let mut head = head_of(&tx, &chain)?;
        for stored in entries {
            let entry = Entry::<AdminRecord>::decode(&stored.entry);
            let next = entry.filter(|entry| entry.seq == head.seq + 1 && entry.prev == head.hash);
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
            insert(&tx, &chain, head, stored)?;
        }
        tx.commit()?;
        Ok(head)
    }

    fn audit_entries(&self, chain: AuditChain) -> Result<Vec<StoredEntry>, StoreError> {
        let connection = self.lock()?;
        let entries = connection
            .prepare("SELECT entry, signature FROM audit_entries WHERE chain = ?1 ORDER BY seq")?
            .query_map(params![chain.key()], |row| {
                Ok(StoredEntry {
                    entry: row.get(0)?,
                    signature: row.get(1)?,
                })
            })?
            .collect::<Result<Vec<_>, _>>()?;
        Ok(entries)
    }

    fn add_countersignature(&self, countersignature: &Countersignature) -> Result<(), StoreError> {
        let doc = serde_json::to_string(countersignature)
            .map_err(|err| corrupt("countersignature", err))?;
        let connection = self.lock()?;
        connection.execute(
            "INSERT INTO audit_countersignatures (instance, seq, unit, doc) VALUES (?1, ?2, ?3, ?4)
             ON CONFLICT (instance, seq, unit) DO UPDATE SET doc = excluded.doc",
            params![
                countersignature.instance.to_string(),
                i64::try_from(countersignature.head.seq).unwrap_or(i64::MAX),
                countersignature.unit.to_string(),
                doc
            ],
        )?;
        Ok(())
    }

    fn countersignatures(&self, instance: Uuid) -> Result<Vec<Countersignature>, StoreError> {
        let connection = self.lock()?;
        let docs = connection
            .prepare(
                "SELECT seq, doc FROM audit_countersignatures WHERE instance = ?1 ORDER BY seq, unit",
            )?
            .query_map(params![instance.to_string()], |row| {
                Ok((row.get::<_, i64>(0)?, row.get::<_, String>(1)?))
            })?
            .collect::<Result<Vec<_>, _>>()?;
        docs.into_iter()
            .map(|(seq, doc)| {
                serde_json::from_str(&doc).map_err(|err| {
                    corrupt(
                        format_args!("countersignature of entry {seq} of instance {instance}"),
                        err,
                    )
                })
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rotor_proto::audit::{KeyEventRecord, Verdict};

    fn event(key: &str) -> KeyEventRecord {
        KeyEventRecord {
            event: "create".to_owned(),
            key: key.to_owned(),
            caller: "alice".to_owned(),
            verdict: Verdict::Accepted,
        }
    }

    #[test]
    fn key_events_chain_and_the_head_outlives_a_removed_entry() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(&dir.path().join("keys.db")).unwrap();
        let instance = Uuid::new_v4();
        for key in ["a", "b", "c"] {
            store
                .append_key_event(instance, &mut |mut head| {
                    let bytes = head.append(5, event(key));
                    (head, bytes)
                })
                .unwrap();
        }
        let chain = AuditChain::Instance(instance);
        let entries = store.audit_entries(chain).unwrap();
        assert_eq!(entries.len(), 3);
        let head = store.audit_head(chain).unwrap();
        assert_eq!(head.seq, 3);
        assert_eq!(head.hash, entry_hash(&entries[2].entry));
        store
            .lock()
            .unwrap()
            .execute("DELETE FROM audit_entries WHERE seq = 3", [])
            .unwrap();
        assert_eq!(store.audit_head(chain).unwrap(), head);
        assert!(store.audit_head(AuditChain::Unit(instance)).unwrap() == ChainHead::EMPTY);
    }
}

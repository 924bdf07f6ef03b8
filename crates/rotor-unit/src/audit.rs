//! The unit's admin chain on disk: `audit.log` in the unit directory, append-only.
//!
//! Each record is `length (4 bytes, big-endian) ‖ postcard(StoredEntry)`: the entry's bytes and
//! the unit's signature over the head it makes. A record is appended and fsynced before the
//! command it records is carried out and acknowledged. A record cut short by a crash was never
//! acknowledged (its command was not carried out): opening the log drops it. Anything else that
//! does not read refuses to open the unit, naming the file.

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use rotor_crypto::SigningKey;
use rotor_proto::audit::{AdminRecord, ChainHead, StoredEntry, head_message};
use uuid::Uuid;

/// The file in the unit directory.
pub const AUDIT_LOG: &str = "audit.log";

/// Why the audit log could not be opened or appended to.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AuditLogError {
    /// A file system operation failed.
    #[error("cannot {action} {}: {source}", path.display())]
    Io {
        /// What was being done.
        action: &'static str,
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: io::Error,
    },
    /// A complete record does not read, or the chain does not link.
    #[error(
        "{} is corrupt at record {record}; restore the unit directory from backup",
        path.display()
    )]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// The first record that does not read (1-based).
        record: u64,
    },
}

/// The admin chain of one unit, open for appending.
#[derive(Debug)]
pub struct AuditLog {
    path: PathBuf,
    file: File,
    entries: Vec<StoredEntry>,
    head: ChainHead,
}

impl AuditLog {
    /// Opens (creating if needed) `audit.log` in `dir`, dropping a record cut short by a crash.
    pub fn open(dir: &Path) -> Result<Self, AuditLogError> {
        let path = dir.join(AUDIT_LOG);
        let io_error = |action| {
            let path = path.clone();
            move |source| AuditLogError::Io {
                action,
                path,
                source,
            }
        };
        let mut file = OpenOptions::new()
            .read(true)
            .append(true)
            .create(true)
            .mode(0o600)
            .open(&path)
            .map_err(io_error("open"))?;
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes).map_err(io_error("read"))?;
        let (entries, complete) = parse(&bytes).map_err(|record| AuditLogError::Corrupt {
            path: path.clone(),
            record,
        })?;
        if complete < bytes.len() {
            tracing::warn!(path = %path.display(), "dropping an audit record cut short by a crash");
            file.set_len(complete as u64)
                .and_then(|()| file.sync_all())
                .map_err(io_error("truncate"))?;
        }
        let head = match entries.last() {
            Some(last) => {
                ChainHead::of_entry::<AdminRecord>(&last.entry).ok_or(AuditLogError::Corrupt {
                    path: path.clone(),
                    record: entries.len() as u64,
                })?
            }
            None => ChainHead::EMPTY,
        };
        Ok(Self {
            path,
            file,
            entries,
            head,
        })
    }

    /// The head of the chain.
    pub fn head(&self) -> ChainHead {
        self.head
    }

    /// The entries after sequence number `after`.
    pub fn after(&self, after: u64) -> &[StoredEntry] {
        let start = usize::try_from(after)
            .unwrap_or(usize::MAX)
            .min(self.entries.len());
        &self.entries[start..]
    }

    /// Appends `record` durably, with the unit's signature over the new head. On error nothing
    /// was appended (the file is cut back to where it was).
    pub fn append(
        &mut self,
        identity: &SigningKey,
        unit: Uuid,
        time_ms: u64,
        record: AdminRecord,
    ) -> Result<(), AuditLogError> {
        let mut head = self.head;
        let entry = head.append(time_ms, record);
        let signature = identity.sign(&head_message(unit, &head, &[]));
        let stored = StoredEntry { entry, signature };
        let body = postcard::to_stdvec(&stored).unwrap_or_default();
        let mut bytes = u32::try_from(body.len())
            .unwrap_or(u32::MAX)
            .to_be_bytes()
            .to_vec();
        bytes.extend_from_slice(&body);
        let written = self
            .file
            .write_all(&bytes)
            .and_then(|()| self.file.sync_data());
        if let Err(source) = written {
            let length = self.file.metadata().map(|m| m.len()).unwrap_or_default();
            let back = length.saturating_sub(bytes.len() as u64);
            // Best effort: a partial record left behind is dropped at the next open anyway.
            let _ = self.file.set_len(back);
            return Err(AuditLogError::Io {
                action: "append to",
                path: self.path.clone(),
                source,
            });
        }
        self.entries.push(stored);
        self.head = head;
        Ok(())
    }
}

/// The complete records of `bytes` and where they end; `Err(record)` names the first complete
/// record that does not read.
fn parse(bytes: &[u8]) -> Result<(Vec<StoredEntry>, usize), u64> {
    let mut entries = Vec::new();
    let mut at = 0;
    while let Some(length) = bytes.get(at..at + 4) {
        let length = u32::from_be_bytes([length[0], length[1], length[2], length[3]]) as usize;
        let Some(body) = bytes.get(at + 4..at + 4 + length) else {
            break;
        };
        let record = entries.len() as u64 + 1;
        let stored: StoredEntry = postcard::from_bytes(body).map_err(|_| record)?;
        entries.push(stored);
        at += 4 + length;
    }
    Ok((entries, at))
}

#[cfg(test)]
mod tests {
    use super::*;
    use rotor_proto::audit::{Verdict, verify};
    use std::collections::BTreeMap;

    fn record(counter: u64) -> AdminRecord {
        AdminRecord {
            signers: Vec::new(),
            action: "set thresholds".to_owned(),
            command: [1; 32],
            counter,
            verdict: Verdict::Accepted,
        }
    }

    #[test]
    fn entries_survive_reopening_and_a_torn_last_record_is_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let identity = SigningKey::generate(rotor_crypto::SigAlg::P256Sha256);
        let unit = Uuid::new_v4();
        let mut log = AuditLog::open(dir.path()).unwrap();
        for counter in 1..=3 {
            log.append(&identity, unit, 10, record(counter)).unwrap();
        }
        let head = log.head();
        drop(log);
        // A crash in the middle of a fourth append.
        let mut file = OpenOptions::new()
            .append(true)
            .open(dir.path().join(AUDIT_LOG))
            .unwrap();
        file.write_all(&[0, 0, 0, 90, 1, 2, 3]).unwrap();
        drop(file);

        let mut log = AuditLog::open(dir.path()).unwrap();
        assert_eq!(log.head(), head);
        log.append(&identity, unit, 11, record(4)).unwrap();
        let public = identity.public_key();
        let check = |head: &ChainHead, signature: &[u8]| {
            public
                .verify(&head_message(unit, head, &[]), signature)
                .is_ok()
        };
        let anchors = BTreeMap::from([(4, log.head().hash)]);
        let entries = verify::<AdminRecord>(log.after(0), &anchors, Some(&check)).unwrap();
        assert_eq!(entries.len(), 4);
        assert_eq!(log.after(3).len(), 1);
        assert_eq!(log.after(9).len(), 0);
    }

    #[test]
    fn a_complete_record_that_does_not_read_refuses_to_open() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(AUDIT_LOG), [0, 0, 0, 2, 0xff, 0xff]).unwrap();
        let err = AuditLog::open(dir.path()).unwrap_err();
        assert!(
            matches!(err, AuditLogError::Corrupt { record: 1, .. }),
            "{err}"
        );
    }
}

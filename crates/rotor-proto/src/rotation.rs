//! A master key rotation as service, keystore and workstation share it: the durable
//! [`Journal`] (a pure state machine: from-VP, to-VP, phase, progress), the [`RotationView`]
//! the service shows, and the [`KeystoreView`] of how many key versions sit under each master
//! key.
//!
//! Phases: `reencrypting` → `reencrypted` → `completed` (every unit promoted), or, when admins
//! abort, `aborting` → `aborted` (everything back under the old master key).

use rotor_crypto::Vp;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// Where a rotation stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    /// Blobs are being rewrapped from `from` to `to`.
    Reencrypting,
    /// Every blob is under `to`; units may be promoted.
    Reencrypted,
    /// Admins aborted: blobs are being rewrapped back from `to` to `from`.
    Aborting,
    /// The abort finished: everything is under `from` again.
    Aborted,
    /// Every unit was promoted to `to`.
    Completed,
}

impl Phase {
    /// For messages.
    pub fn label(self) -> &'static str {
        match self {
            Self::Reencrypting => "reencrypting",
            Self::Reencrypted => "reencrypted",
            Self::Aborting => "aborting",
            Self::Aborted => "aborted",
            Self::Completed => "completed",
        }
    }
}

/// The durable record of one master key rotation of an instance.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Journal {
    /// The master key key storage was under.
    pub from: Vp,
    /// The master key key storage moves to.
    pub to: Vp,
    /// Where it stands.
    pub phase: Phase,
    /// Blobs under the source master key when the current direction began.
    pub total: u64,
    /// Blobs rewrapped in the current direction.
    pub done: u64,
    /// Unix milliseconds.
    pub started: i64,
    /// Unix milliseconds of the last change.
    pub updated: i64,
    /// Unix milliseconds when it reached `reencrypted` or `aborted`.
    #[serde(default)]
    pub reencrypted: Option<i64>,
    /// Why the engine is waiting, if it is.
    #[serde(default)]
    pub waiting: Option<String>,
}

/// What a request to rotate from one master key to another does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Start {
    /// No rotation is open: begin one.
    New,
    /// The same rotation is open: continue it.
    Resume,
}

/// Why the journal refuses a change: it does not fit the rotation on record.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum JournalConflict {
    /// Another rotation is open.
    OtherRotationOpen {
        /// Its source master key.
        from: Vp,
        /// Its target master key.
        to: Vp,
    },
    /// Admins aborted this rotation; it is moving back.
    Aborting,
    /// The requested target is the source.
    SameMasterKey,
    /// No rotation is open to abort.
    NothingToAbort,
    /// Completion needs the phase `reencrypted`; the rotation is in this one.
    NotReencrypted(Phase),
}

impl std::fmt::Display for JournalConflict {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::OtherRotationOpen { from, to } => write!(
                f,
                "a rotation from {from} to {to} is open on this instance; finish it (run the rotation again) or abort it first"
            ),
            Self::Aborting => f.write_str(
                "admins aborted this rotation; key storage is being rewrapped back to the old master key",
            ),
            Self::SameMasterKey => f.write_str(
                "the new master key is the current one; load a different new master key",
            ),
            Self::NothingToAbort => {
                f.write_str("no rotation is open on this instance; there is nothing to abort")
            }
            Self::NotReencrypted(phase) => write!(
                f,
                "the rotation is {}, not reencrypted; it cannot complete yet",
                phase.label()
            ),
        }
    }
}

impl std::error::Error for JournalConflict {}

impl Journal {
    /// A rotation that begins with `total` blobs under `from`.
    pub fn begin(from: Vp, to: Vp, total: u64, now: i64) -> Self {
        Self {
            from,
            to,
            phase: Phase::Reencrypting,
            total,
            done: 0,
            started: now,
            updated: now,
            reencrypted: None,
            waiting: None,
        }
    }

    /// Neither completed nor aborted: the registers stay pinned.
    pub fn open(&self) -> bool {
        !matches!(self.phase, Phase::Aborted | Phase::Completed)
    }

    /// The engine's direction (source, target), while it has blobs to move.
    pub fn direction(&self) -> Option<(Vp, Vp)> {
        match self.phase {
            Phase::Reencrypting => Some((self.from, self.to)),
            Phase::Aborting => Some((self.to, self.from)),
            _ => None,
        }
    }

    /// Decides what a request to rotate `from` → `to` does, given this journal on record.
    pub fn start(existing: Option<&Self>, from: Vp, to: Vp) -> Result<Start, JournalConflict> {
        match existing {
            Some(journal) if journal.open() => {
                if !(journal.from.matches(&from) && journal.to.matches(&to)) {
                    return Err(JournalConflict::OtherRotationOpen {
                        from: journal.from,
                        to: journal.to,
                    });
                }
                if journal.phase == Phase::Aborting {
                    return Err(JournalConflict::Aborting);
                }
                Ok(Start::Resume)
            }
            _ if from.matches(&to) => Err(JournalConflict::SameMasterKey),
            _ => Ok(Start::New),
        }
    }

    /// Records `count` more blobs moved.
    pub fn record(&mut self, count: u64, now: i64) {
        self.done = self.done.saturating_add(count);
        self.updated = now;
    }

    /// No blob is left under the source master key and every unit knows it.
    pub fn source_empty(&mut self, now: i64) {
        self.phase = match self.phase {
            Phase::Reencrypting => Phase::Reencrypted,
            Phase::Aborting => Phase::Aborted,
            other => other,
        };
        self.reencrypted = Some(now);
        self.waiting = None;
        self.updated = now;
    }

    /// Admins aborted: move everything back, starting from `total` blobs under `to`.
    pub fn abort(&mut self, total: u64, now: i64) -> Result<(), JournalConflict> {
        match self.phase {
            Phase::Reencrypting | Phase::Reencrypted => {
                self.phase = Phase::Aborting;
                self.total = total;
                self.done = 0;
                self.reencrypted = None;
                self.updated = now;
                Ok(())
            }
            Phase::Aborting => Ok(()),
            _ => Err(JournalConflict::NothingToAbort),
        }
    }

    /// Every unit was promoted.
    pub fn complete(&mut self, now: i64) -> Result<(), JournalConflict> {
        match self.phase {
            Phase::Reencrypted => {
                self.phase = Phase::Completed;
                self.updated = now;
                Ok(())
            }
            Phase::Completed => Ok(()),
            other => Err(JournalConflict::NotReencrypted(other)),
        }
    }
}

/// A rotation as `GET /v1/instances/{id}/rotation` shows it.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct RotationView {
    /// The journal.
    #[serde(flatten)]
    pub journal: Journal,
    /// Blobs still under the source master key.
    pub remaining: u64,
    /// Blobs per second in this run of the engine.
    pub rate: f64,
    /// Estimated seconds left.
    pub seconds_left: Option<f64>,
    /// Whether the engine is working on it now.
    pub running: bool,
}

/// An instance's key storage as `GET /v1/instances/{id}/keystore` shows it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeystoreView {
    /// The instance.
    pub instance: Uuid,
    /// How many key versions sit under each master key, by VP.
    pub master_keys: Vec<MasterKeyCount>,
}

/// How many key versions sit under one master key.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MasterKeyCount {
    /// The master key's VP.
    pub vp: Vp,
    /// Key versions wrapped under it.
    pub key_versions: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vp(byte: u8) -> Vp {
        Vp([byte; 32])
    }

    #[test]
    fn a_rotation_resumes_only_itself() {
        assert_eq!(Journal::start(None, vp(1), vp(2)).unwrap(), Start::New);
        assert!(Journal::start(None, vp(1), vp(1)).is_err());
        let mut journal = Journal::begin(vp(1), vp(2), 10, 0);
        assert_eq!(
            Journal::start(Some(&journal), vp(1), vp(2)).unwrap(),
            Start::Resume
        );
        assert!(Journal::start(Some(&journal), vp(1), vp(3)).is_err());
        journal.record(10, 1);
        journal.source_empty(2);
        assert_eq!(journal.phase, Phase::Reencrypted);
        assert_eq!(journal.direction(), None);
        journal.complete(3).unwrap();
        assert!(!journal.open());
        assert_eq!(
            Journal::start(Some(&journal), vp(2), vp(3)).unwrap(),
            Start::New
        );
    }

    #[test]
    fn an_abort_reverses_the_direction_and_cannot_complete() {
        let mut journal = Journal::begin(vp(1), vp(2), 10, 0);
        journal.record(4, 1);
        journal.abort(4, 2).unwrap();
        assert_eq!(journal.direction(), Some((vp(2), vp(1))));
        assert_eq!(journal.done, 0);
        assert!(Journal::start(Some(&journal), vp(1), vp(2)).is_err());
        assert!(journal.complete(3).is_err());
        journal.source_empty(3);
        assert_eq!(journal.phase, Phase::Aborted);
        assert!(journal.abort(0, 4).is_err());
        assert_eq!(
            Journal::start(Some(&journal), vp(1), vp(2)).unwrap(),
            Start::New
        );
    }
}

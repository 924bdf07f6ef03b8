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
    /// The current pass's slices of key storage, which replicas claim one at a time; empty
    /// until the pass is planned.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ranges: Vec<Range>,
    /// Set when the final count of the current direction began: from then on no key version
    /// may be stored under the source master key, so the count misses none.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub closing: bool,
    /// The admins hold the rotation before promotion (`--hold-before-promote`): key storage
    /// is under the new master key, new blobs go under it, and applications rewrap their own
    /// blobs (GREP11 `RewrapKeyBlob`, `/v1/blobs/rewrap`) before the old one is retired.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub hold_before_promote: bool,
}

/// A slice of key storage by position (`lo..=hi`), rewrapped by one replica at a time.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Range {
    /// First position.
    pub lo: i64,
    /// Last position.
    pub hi: i64,
    /// Every blob of the slice was read and rewrapped once in this pass.
    pub done: bool,
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
            ranges: Vec::new(),
            closing: false,
            hold_before_promote: false,
        }
    }

    /// The master key whose new key versions storage refuses: the source, once the final count
    /// of the current direction began.
    pub fn closed_source(&self) -> Option<Vp> {
        self.direction()
            .filter(|_| self.closing)
            .map(|(source, _)| source)
    }

    /// Plans a pass over positions `lo..=hi` in about `pieces` slices, unless one is planned.
    /// Returns whether it planned.
    pub fn plan(&mut self, lo: i64, hi: i64, pieces: u32) -> bool {
        if !self.ranges.is_empty() || hi < lo {
            return false;
        }
        let span = i128::from(hi) - i128::from(lo) + 1;
        let step = (span / i128::from(pieces.max(1))).max(1);
        let mut start = i128::from(lo);
        while start <= i128::from(hi) {
            let end = (start + step - 1).min(i128::from(hi));
            self.ranges.push(Range {
                // Both ends lie within lo..=hi, so they fit.
                lo: i64::try_from(start).unwrap_or(lo),
                hi: i64::try_from(end).unwrap_or(hi),
                done: false,
            });
            start = end + 1;
        }
        true
    }

    /// Slices of the current pass not yet done.
    pub fn open_ranges(&self) -> impl Iterator<Item = Range> + '_ {
        self.ranges.iter().copied().filter(|range| !range.done)
    }

    /// Marks the slice starting at `lo` done; returns whether it was open.
    pub fn finish_range(&mut self, lo: i64, now: i64) -> bool {
        match self
            .ranges
            .iter_mut()
            .find(|range| range.lo == lo && !range.done)
        {
            Some(range) => {
                range.done = true;
                self.updated = now;
                true
            }
            None => false,
        }
    }

    /// A pass was planned and every slice of it is done.
    pub fn pass_done(&self) -> bool {
        !self.ranges.is_empty() && self.ranges.iter().all(|range| range.done)
    }

    /// Forgets the finished pass, so that another one can be planned over what is left.
    pub fn next_pass(&mut self, now: i64) {
        self.ranges.clear();
        self.updated = now;
    }

    /// The final count begins: storage refuses new key versions under the source from now on.
    pub fn close_source(&mut self, now: i64) {
        self.closing = true;
        self.updated = now;
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
        self.ranges.clear();
        self.closing = false;
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
                self.ranges.clear();
                self.closing = false;
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
    /// The service replicas that hold a slice of key storage (or the final step) now.
    #[serde(default)]
    pub workers: Vec<String>,
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
    fn a_pass_is_planned_once_and_done_when_every_slice_is() {
        let mut journal = Journal::begin(vp(1), vp(2), 10, 0);
        assert!(!journal.pass_done());
        assert!(journal.plan(5, 104, 4));
        assert!(!journal.plan(0, 1000, 4));
        let ranges: Vec<_> = journal.open_ranges().map(|r| (r.lo, r.hi)).collect();
        assert_eq!(ranges, [(5, 29), (30, 54), (55, 79), (80, 104)]);
        for (lo, _) in &ranges {
            assert!(journal.finish_range(*lo, 1));
            assert!(!journal.finish_range(*lo, 1));
        }
        assert!(journal.pass_done());
        assert_eq!(journal.closed_source(), None);
        journal.close_source(2);
        assert_eq!(journal.closed_source(), Some(vp(1)));
        journal.next_pass(3);
        assert!(!journal.pass_done());
        assert!(journal.plan(7, 7, 4));
        assert_eq!(journal.ranges.len(), 1);
        journal.abort(1, 4).unwrap();
        assert!(journal.ranges.is_empty());
        assert_eq!(journal.closed_source(), None);
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

//! The tamper-evident audit chains, as pure data and rules.
//!
//! Two chains share one shape:
//!
//! - each unit's **admin chain**: every admin command the unit accepted or refused
//!   ([`AdminRecord`]); the unit signs the head after every entry ([`head_message`]);
//! - each instance's **key event chain**, kept by the service: Key Protect lifecycle events and
//!   refused key uses ([`KeyEventRecord`]); a unit countersigns its head
//!   ([`countersign_message`]) at least every minute and at every admin command.
//!
//! An entry is [`Entry`] encoded with postcard (docs/FORMATS.md, "Audit entries"); its hash is
//! SHA-256 over [`ENTRY_DOMAIN`] and the stored bytes, and the next entry carries that hash as
//! `prev`. [`verify`] walks a stored chain against the heads a unit signed and names the first
//! entry that was changed, removed or put out of order.

use std::collections::BTreeMap;

use rotor_crypto::{PublicKey, SigningKey, sha256};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::wire::Ski;

/// Domain separation for entry hashes.
pub const ENTRY_DOMAIN: &[u8] = b"rotor audit entry v1\0";
/// Domain separation for a unit's signature over the head of its admin chain.
const HEAD_DOMAIN: &[u8] = b"rotor audit head v1\0";
/// Domain separation for a unit's countersignature over the head of a key event chain.
const COUNTERSIGN_DOMAIN: &[u8] = b"rotor audit countersignature v1\0";

/// A SHA-256 hash of an entry; all zeros before the first entry.
pub type Hash = [u8; 32];

/// The `prev` of the first entry.
pub const GENESIS: Hash = [0; 32];

/// One link of a chain: its place, when it was written, the hash of the entry before it, and
/// what it records.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry<R> {
    /// 1 for the first entry, then one more for each.
    pub seq: u64,
    /// When it was appended (Unix milliseconds, the writer's clock).
    pub time_ms: u64,
    /// The hash of the entry before it ([`GENESIS`] for the first).
    pub prev: Hash,
    /// What happened.
    pub record: R,
}

impl<R: Serialize> Entry<R> {
    /// The stored bytes: postcard (a stable, length-prefixed encoding) of the entry.
    pub fn encode(&self) -> Vec<u8> {
        // Plain data with no maps or floats always encodes.
        postcard::to_stdvec(self).unwrap_or_default()
    }
}

impl<R: DeserializeOwned> Entry<R> {
    /// Decodes stored bytes; `None` if they are not exactly one entry.
    pub fn decode(bytes: &[u8]) -> Option<Self> {
        match postcard::take_from_bytes(bytes) {
            Ok((entry, [])) => Some(entry),
            _ => None,
        }
    }
}

/// The hash of an entry as stored: SHA-256(`ENTRY_DOMAIN` ‖ bytes).
pub fn entry_hash(bytes: &[u8]) -> Hash {
    let mut message = ENTRY_DOMAIN.to_vec();
    message.extend_from_slice(bytes);
    sha256(&message)
}

/// Whether a command took effect.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    /// It took effect.
    Accepted,
    /// It was refused, with this stable code (an `ErrorCode` of a unit, or a Key Protect reason).
    Refused {
        /// The code.
        code: String,
    },
}

impl Verdict {
    /// For tables.
    pub fn label(&self) -> String {
        match self {
            Self::Accepted => "accepted".to_owned(),
            Self::Refused { code } => format!("refused ({code})"),
        }
    }
}

/// What a unit records of one admin command.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AdminRecord {
    /// The admins whose signatures the command carried.
    pub signers: Vec<Ski>,
    /// The action's name (`Action::name`).
    pub action: String,
    /// SHA-256 of the command's signing bytes: the command itself, with its counter.
    pub command: Hash,
    /// The unit's transaction counter after the command.
    pub counter: u64,
    /// Accepted, or refused with the unit's code.
    pub verdict: Verdict,
}

/// What the service records of one Key Protect event.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyEventRecord {
    /// The event: `create`, `import`, `rotate`, `disable`, `enable`, `setKeyForDeletion`,
    /// `unsetKeyForDeletion`, `delete`, `restore`, `purge`, `policy`, `instance_policy`, or a
    /// key use (`wrap`, `unwrap`, `rewrap`) when it was refused.
    pub event: String,
    /// The key's id (empty for instance policies).
    pub key: String,
    /// Who asked: the API key name the caller's token was issued to.
    pub caller: String,
    /// Accepted, or refused with the Key Protect reason code.
    pub verdict: Verdict,
}

/// An entry as stored and served: its bytes and, in an admin chain, the unit's signature over
/// the head it made.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredEntry {
    /// The postcard bytes of an [`Entry`].
    #[serde(with = "hex::serde")]
    pub entry: Vec<u8>,
    /// The unit's signature over [`head_message`] with this entry as head (admin chains).
    #[serde(default, with = "hex::serde", skip_serializing_if = "Vec::is_empty")]
    pub signature: Vec<u8>,
}

/// Where a chain stands: its last sequence number (0 when empty) and that entry's hash.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChainHead {
    /// The last entry's sequence number.
    pub seq: u64,
    /// The last entry's hash ([`GENESIS`] when empty).
    #[serde(with = "hex::serde")]
    pub hash: Hash,
}

impl ChainHead {
    /// The head of an empty chain.
    pub const EMPTY: Self = Self {
        seq: 0,
        hash: GENESIS,
    };

    /// Appends a record: returns the stored bytes of the new entry and moves the head on.
    pub fn append<R: Serialize>(&mut self, time_ms: u64, record: R) -> Vec<u8> {
        let entry = Entry {
            seq: self.seq + 1,
            time_ms,
            prev: self.hash,
            record,
        };
        let bytes = entry.encode();
        *self = Self {
            seq: entry.seq,
            hash: entry_hash(&bytes),
        };
        bytes
    }

    /// The head after the stored entry `bytes`, if they decode.
    pub fn of_entry<R: DeserializeOwned>(bytes: &[u8]) -> Option<Self> {
        Entry::<R>::decode(bytes).map(|entry| Self {
            seq: entry.seq,
            hash: entry_hash(bytes),
        })
    }
}

/// What a unit signs as the head of its admin chain: `HEAD_DOMAIN ‖ unit (16 bytes) ‖ seq (8,
/// big-endian) ‖ hash (32) ‖ challenge`. The challenge is empty for the signature stored with
/// each entry, and the caller's fresh random bytes for a live head.
pub fn head_message(unit: Uuid, head: &ChainHead, challenge: &[u8]) -> Vec<u8> {
    let mut message = HEAD_DOMAIN.to_vec();
    message.extend_from_slice(unit.as_bytes());
    message.extend_from_slice(&head.seq.to_be_bytes());
    message.extend_from_slice(&head.hash);
    message.extend_from_slice(challenge);
    message
}

/// What a unit signs to countersign a key event chain: `COUNTERSIGN_DOMAIN ‖ instance (16
/// bytes) ‖ seq (8, big-endian) ‖ hash (32) ‖ time (8, big-endian Unix milliseconds)`.
pub fn countersign_message(instance: Uuid, head: &ChainHead, time_ms: u64) -> Vec<u8> {
    let mut message = COUNTERSIGN_DOMAIN.to_vec();
    message.extend_from_slice(instance.as_bytes());
    message.extend_from_slice(&head.seq.to_be_bytes());
    message.extend_from_slice(&head.hash);
    message.extend_from_slice(&time_ms.to_be_bytes());
    message
}

/// A unit's live head of its admin chain, signed over the caller's challenge.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignedHead {
    /// The unit.
    pub unit: Uuid,
    /// Its chain's head.
    pub head: ChainHead,
    /// The caller's challenge, echoed.
    #[serde(with = "hex::serde")]
    pub challenge: Vec<u8>,
    /// ECDSA `r ‖ s` over [`head_message`] by the unit identity key.
    #[serde(with = "hex::serde")]
    pub signature: Vec<u8>,
}

impl SignedHead {
    /// Signs `head` for `challenge`.
    pub fn sign(identity: &SigningKey, unit: Uuid, head: ChainHead, challenge: Vec<u8>) -> Self {
        let signature = identity.sign(&head_message(unit, &head, &challenge));
        Self {
            unit,
            head,
            challenge,
            signature,
        }
    }

    /// Whether `identity` signed it for `unit` and `challenge`.
    pub fn verify(&self, identity: &PublicKey, unit: Uuid, challenge: &[u8]) -> bool {
        self.unit == unit
            && self.challenge == challenge
            && identity
                .verify(
                    &head_message(unit, &self.head, &self.challenge),
                    &self.signature,
                )
                .is_ok()
    }
}

/// A unit's countersignature over the head of an instance's key event chain.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Countersignature {
    /// The unit that signed.
    pub unit: Uuid,
    /// The instance whose chain it is.
    pub instance: Uuid,
    /// The head it vouches for.
    pub head: ChainHead,
    /// When the unit signed (its clock, Unix milliseconds).
    pub time_ms: u64,
    /// ECDSA `r ‖ s` over [`countersign_message`] by the unit identity key.
    #[serde(with = "hex::serde")]
    pub signature: Vec<u8>,
}

impl Countersignature {
    /// Countersigns `head` of `instance`'s chain now.
    pub fn sign(
        identity: &SigningKey,
        unit: Uuid,
        instance: Uuid,
        head: ChainHead,
        time_ms: u64,
    ) -> Self {
        let signature = identity.sign(&countersign_message(instance, &head, time_ms));
        Self {
            unit,
            instance,
            head,
            time_ms,
            signature,
        }
    }

    /// Whether `identity` made it.
    pub fn verify(&self, identity: &PublicKey) -> bool {
        identity
            .verify(
                &countersign_message(self.instance, &self.head, self.time_ms),
                &self.signature,
            )
            .is_ok()
    }
}

/// `POST /v1/keys/countersign`: the service asks a unit to countersign the head of an
/// instance's key event chain.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Countersign {
    /// The instance whose chain it is.
    pub instance: Uuid,
    /// The head to vouch for.
    pub head: ChainHead,
}

/// `GET /v1/audit?after=N&challenge=HEX` on a unit: its admin chain after entry `N`, and its
/// live head signed over the challenge.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditBatch {
    /// The unit.
    pub unit: Uuid,
    /// The entries after `N`, in order.
    pub entries: Vec<StoredEntry>,
    /// The head now.
    pub head: SignedHead,
}

/// `GET /v1/instances/{instance}/audit` on the service: the key event chain as stored, with
/// the units' countersignatures of its heads.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyEventChain {
    /// The instance.
    pub instance: Uuid,
    /// Its entries, in order.
    pub entries: Vec<StoredEntry>,
    /// Countersignatures, by sequence number.
    pub countersignatures: Vec<Countersignature>,
}

/// The first thing wrong with a stored chain, naming the entry by its sequence number.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "problem", rename_all = "snake_case")]
#[non_exhaustive]
pub enum ChainError {
    /// The entry was changed: its bytes, its link to the entry before, or its signature.
    Changed {
        /// The entry.
        seq: u64,
    },
    /// The entry is gone (a signed head or a later entry proves it existed).
    Missing {
        /// The entry.
        seq: u64,
    },
    /// Another entry stands where this one belongs.
    Reordered {
        /// Where the entry belongs.
        seq: u64,
        /// The sequence number of the entry found there.
        found: u64,
    },
}

impl ChainError {
    /// The entry named.
    pub fn seq(&self) -> u64 {
        match self {
            Self::Changed { seq } | Self::Missing { seq } | Self::Reordered { seq, .. } => *seq,
        }
    }
}

impl std::fmt::Display for ChainError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Changed { seq } => write!(f, "entry {seq} was changed"),
            Self::Missing { seq } => write!(f, "entry {seq} was removed"),
            Self::Reordered { seq, found } => {
                write!(
                    f,
                    "entry {seq} is out of order (entry {found} stands in its place)"
                )
            }
        }
    }
}

impl std::error::Error for ChainError {}

/// Whether a signature stored with an entry is the unit's over the head that entry makes.
pub type HeadSignatureCheck<'a> = dyn Fn(&ChainHead, &[u8]) -> bool + 'a;

/// Checks a chain as stored, in storage order, and returns its entries.
///
/// `anchors` are heads proven by a unit's signature (checked by the caller): countersignatures,
/// a live head. `signed`, for an admin chain, checks each entry's own head signature. An entry
/// that does not decode, whose signature or anchor does not match, or whose `prev` does not
/// link, is changed; when only a link breaks, the entry after it vouches (by its own link, a
/// signature or an anchor) for which side of the link changed. A sequence number that skips is a
/// removal when the next entry stands in its place, a reordering when the entry found belongs
/// elsewhere in the chain, and otherwise a change of the number itself. Entries an
/// anchor proves but the chain lacks are missing, the last one included.
pub fn verify<R: DeserializeOwned>(
    entries: &[StoredEntry],
    anchors: &BTreeMap<u64, Hash>,
    signed: Option<&HeadSignatureCheck<'_>>,
) -> Result<Vec<Entry<R>>, ChainError> {
    let decoded: Vec<Option<Entry<R>>> = entries.iter().map(|e| Entry::decode(&e.entry)).collect();
    let hashes: Vec<Hash> = entries.iter().map(|e| entry_hash(&e.entry)).collect();
    // Whether something other than the entry's own `prev` vouches for its hash.
    let vouched = |index: usize, expected: u64| -> bool {
        let head = ChainHead {
            seq: expected,
            hash: hashes[index],
        };
        let by_signature = signed.is_some_and(|check| check(&head, &entries[index].signature));
        let by_anchor = anchors.get(&expected) == Some(&hashes[index]);
        let by_next = decoded
            .get(index + 1)
            .and_then(Option::as_ref)
            .is_some_and(|next| next.prev == hashes[index]);
        by_signature || by_anchor || by_next
    };
    let mut prev = GENESIS;
    for (index, entry) in decoded.iter().enumerate() {
        let expected = index as u64 + 1;
        let Some(entry) = entry else {
            return Err(ChainError::Changed { seq: expected });
        };
        if entry.seq != expected {
            if entry.prev == prev {
                // It links where it stands: only its number changed.
                return Err(ChainError::Changed { seq: expected });
            }
            let belongs_later = decoded[index + 1..]
                .iter()
                .flatten()
                .any(|later| later.seq == expected);
            return Err(if entry.seq < expected || belongs_later {
                ChainError::Reordered {
                    seq: expected,
                    found: entry.seq,
                }
            } else if entry.seq == expected + 1 {
                ChainError::Missing { seq: expected }
            } else {
                ChainError::Changed { seq: expected }
            });
        }
        let head = ChainHead {
            seq: expected,
            hash: hashes[index],
        };
        if signed.is_some_and(|check| !check(&head, &entries[index].signature)) {
            return Err(ChainError::Changed { seq: expected });
        }
        if anchors
            .get(&expected)
            .is_some_and(|hash| *hash != head.hash)
        {
            return Err(ChainError::Changed { seq: expected });
        }
        if entry.prev != prev {
            return Err(if index > 0 && vouched(index, expected) {
                ChainError::Changed { seq: expected - 1 }
            } else {
                ChainError::Changed { seq: expected }
            });
        }
        prev = head.hash;
    }
    let length = entries.len() as u64;
    if anchors
        .keys()
        .next_back()
        .is_some_and(|last| *last > length)
    {
        return Err(ChainError::Missing { seq: length + 1 });
    }
    Ok(decoded.into_iter().flatten().collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn record(n: u64) -> KeyEventRecord {
        KeyEventRecord {
            event: if n.is_multiple_of(3) {
                "rotate"
            } else {
                "create"
            }
            .to_owned(),
            key: format!("key-{n}"),
            caller: "alice".to_owned(),
            verdict: if n.is_multiple_of(5) {
                Verdict::Refused {
                    code: "KEY_DELETED_ERR".to_owned(),
                }
            } else {
                Verdict::Accepted
            },
        }
    }

    /// A key event chain of `length` entries and an anchor on its last entry.
    fn key_event_chain(length: u64) -> (Vec<StoredEntry>, BTreeMap<u64, Hash>) {
        let mut head = ChainHead::EMPTY;
        let entries = (1..=length)
            .map(|n| StoredEntry {
                entry: head.append(1000 + n, record(n)),
                signature: Vec::new(),
            })
            .collect();
        (entries, BTreeMap::from([(head.seq, head.hash)]))
    }

    /// An admin chain of `length` entries, each with its head signature.
    fn admin_chain(identity: &SigningKey, unit: Uuid, length: u64) -> Vec<StoredEntry> {
        let mut head = ChainHead::EMPTY;
        (1..=length)
            .map(|n| {
                let entry = head.append(
                    n,
                    AdminRecord {
                        signers: vec![Ski([n as u8; 32])],
                        action: "commit".to_owned(),
                        command: [7; 32],
                        counter: n,
                        verdict: Verdict::Accepted,
                    },
                );
                let signature = identity.sign(&head_message(unit, &head, &[]));
                StoredEntry { entry, signature }
            })
            .collect()
    }

    #[test]
    fn an_intact_chain_verifies_and_decodes() {
        let (entries, anchors) = key_event_chain(4);
        let decoded = verify::<KeyEventRecord>(&entries, &anchors, None).unwrap();
        assert_eq!(decoded.len(), 4);
        assert_eq!(decoded[2].record, record(3));
        assert_eq!(decoded[0].prev, GENESIS);
    }

    #[test]
    fn a_countersignature_binds_instance_head_and_time() {
        let identity = SigningKey::generate(rotor_crypto::SigAlg::P256Sha256);
        let (instance, unit) = (Uuid::new_v4(), Uuid::new_v4());
        let head = ChainHead {
            seq: 3,
            hash: [9; 32],
        };
        let signed = Countersignature::sign(&identity, unit, instance, head, 42);
        assert!(signed.verify(&identity.public_key()));
        let mut later = signed.clone();
        later.time_ms = 43;
        assert!(!later.verify(&identity.public_key()));
        let mut other = signed;
        other.instance = Uuid::new_v4();
        assert!(!other.verify(&identity.public_key()));
    }

    #[test]
    fn a_live_head_answers_only_its_challenge() {
        let identity = SigningKey::generate(rotor_crypto::SigAlg::P256Sha256);
        let unit = Uuid::new_v4();
        let live = SignedHead::sign(&identity, unit, ChainHead::EMPTY, vec![1, 2, 3]);
        assert!(live.verify(&identity.public_key(), unit, &[1, 2, 3]));
        assert!(!live.verify(&identity.public_key(), unit, &[1, 2, 4]));
        assert!(!live.verify(&identity.public_key(), Uuid::new_v4(), &[1, 2, 3]));
    }

    /// One random tampering of a stored chain, and the error that must name it.
    #[derive(Clone, Debug)]
    enum Tamper {
        /// XOR a byte of an entry (or of its signature).
        Byte {
            entry: usize,
            at: usize,
            mask: u8,
            in_signature: bool,
        },
        /// Remove an entry.
        Remove { entry: usize },
        /// Swap two entries.
        Swap { first: usize, second: usize },
    }

    impl Tamper {
        fn apply(&self, entries: &mut Vec<StoredEntry>) -> ChainError {
            let seq = |index: usize| index as u64 + 1;
            match *self {
                Self::Byte {
                    entry,
                    at,
                    mask,
                    in_signature,
                } => {
                    let stored = &mut entries[entry];
                    let bytes = if in_signature && !stored.signature.is_empty() {
                        &mut stored.signature
                    } else {
                        &mut stored.entry
                    };
                    let at = at % bytes.len();
                    bytes[at] ^= mask;
                    ChainError::Changed { seq: seq(entry) }
                }
                Self::Remove { entry } => {
                    entries.remove(entry);
                    ChainError::Missing { seq: seq(entry) }
                }
                Self::Swap { first, second } => {
                    entries.swap(first, second);
                    ChainError::Reordered {
                        seq: seq(first),
                        found: seq(second),
                    }
                }
            }
        }
    }

    fn tamper(length: usize) -> impl Strategy<Value = Tamper> {
        prop_oneof![
            (0..length, any::<usize>(), 1..=255u8, any::<bool>()).prop_map(
                |(entry, at, mask, in_signature)| Tamper::Byte {
                    entry,
                    at,
                    mask,
                    in_signature
                }
            ),
            (0..length).prop_map(|entry| Tamper::Remove { entry }),
            (0..length, 0..length)
                .prop_filter("two entries", |(a, b)| a != b)
                .prop_map(|(a, b)| Tamper::Swap {
                    first: a.min(b),
                    second: a.max(b)
                }),
        ]
    }

    fn chain_and_tamper() -> impl Strategy<Value = (u64, Tamper)> {
        (2..24u64).prop_flat_map(|length| (Just(length), tamper(length as usize)))
    }

    proptest! {
        #[test]
        fn a_key_event_chain_names_the_first_tampered_entry((length, tamper) in chain_and_tamper()) {
            let (mut entries, anchors) = key_event_chain(length);
            let expected = tamper.apply(&mut entries);
            let found = verify::<KeyEventRecord>(&entries, &anchors, None).unwrap_err();
            prop_assert_eq!(found, expected);
        }

        #[test]
        fn an_admin_chain_names_the_first_tampered_entry((length, tamper) in chain_and_tamper()) {
            let identity = SigningKey::generate(rotor_crypto::SigAlg::P256Sha256);
            let public = identity.public_key();
            let unit = Uuid::new_v4();
            let mut entries = admin_chain(&identity, unit, length);
            // The unit's live head proves the length, as `rotor audit verify` asks it.
            let last = ChainHead::of_entry::<AdminRecord>(&entries[entries.len() - 1].entry).unwrap();
            let anchors = BTreeMap::from([(last.seq, last.hash)]);
            let expected = tamper.apply(&mut entries);
            let check = |head: &ChainHead, signature: &[u8]| {
                public.verify(&head_message(unit, head, &[]), signature).is_ok()
            };
            let found = verify::<AdminRecord>(&entries, &anchors, Some(&check)).unwrap_err();
            prop_assert_eq!(found, expected);
        }

        #[test]
        fn an_untouched_chain_of_any_length_verifies(length in 0..40u64) {
            let (entries, anchors) = key_event_chain(length);
            let anchors = if length == 0 { BTreeMap::new() } else { anchors };
            prop_assert_eq!(verify::<KeyEventRecord>(&entries, &anchors, None).unwrap().len(), length as usize);
        }
    }
}

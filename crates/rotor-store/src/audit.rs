//! The audit chains as the service keeps them: each unit's admin chain, copied from the unit,
//! and each instance's key event chain, written here, with the units' countersignatures of its
//! heads. The store keeps each chain's head beside its entries, so an entry removed from the end
//! still leaves a gap the next entry reveals.

use rotor_proto::audit::{ChainHead, Countersignature, StoredEntry};
use uuid::Uuid;

use crate::StoreError;

/// Which chain.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AuditChain {
    /// A unit's admin chain.
    Unit(Uuid),
    /// An instance's key event chain.
    Instance(Uuid),
}

impl AuditChain {
    /// The chain's key in storage: `unit:<id>` or `instance:<id>`.
    pub fn key(&self) -> String {
        match self {
            Self::Unit(id) => format!("unit:{id}"),
            Self::Instance(id) => format!("instance:{id}"),
        }
    }
}

/// Storage of the audit chains. Every method is one transaction.
pub trait AuditStore: Send + Sync {
    /// The head the store last wrote for `chain` ([`ChainHead::EMPTY`] if none).
    fn audit_head(&self, chain: AuditChain) -> Result<ChainHead, StoreError>;

    /// Appends one entry to `instance`'s key event chain: `build` makes its bytes from the
    /// current head and returns the new head with them.
    fn append_key_event(
        &self,
        instance: Uuid,
        build: &mut dyn FnMut(ChainHead) -> (ChainHead, Vec<u8>),
    ) -> Result<ChainHead, StoreError>;

    /// Appends entries a unit served to its admin chain. They must continue the stored head
    /// (each the next number, linked to the one before); otherwise nothing is stored and the
    /// answer is [`StoreError::Refused`].
    fn append_unit_entries(
        &self,
        unit: Uuid,
        entries: &[StoredEntry],
    ) -> Result<ChainHead, StoreError>;

    /// The stored entries of `chain`, by sequence number.
    fn audit_entries(&self, chain: AuditChain) -> Result<Vec<StoredEntry>, StoreError>;

    /// Keeps a unit's countersignature of a key event chain's head.
    fn add_countersignature(&self, countersignature: &Countersignature) -> Result<(), StoreError>;

    /// The countersignatures of `instance`'s key event chain, by sequence number.
    fn countersignatures(&self, instance: Uuid) -> Result<Vec<Countersignature>, StoreError>;
}

//! Conformance cases on the audit chains: key events and countersignatures kept, unit entries
//! continuing the stored chain.

use rotor_crypto::{SigAlg, SigningKey};
use rotor_proto::audit::{
    AdminRecord, ChainHead, Countersignature, StoredEntry, Verdict, entry_hash,
};
use uuid::Uuid;

use super::{Target, event};
use crate::{AuditChain, StoreError};

pub(super) fn key_events_chain_and_countersignatures_are_kept(target: &dyn Target) {
    let store = target.open();
    let instance = Uuid::new_v4();
    let chain = AuditChain::Instance(instance);
    assert_eq!(store.audit_head(chain).unwrap(), ChainHead::EMPTY);
    for key in ["a", "b", "c"] {
        store
            .append_key_event(instance, &mut |mut head| {
                let bytes = head.append(5, event(key));
                (head, bytes)
            })
            .unwrap();
    }
    let entries = store.audit_entries(chain).unwrap();
    assert_eq!(entries.len(), 3);
    let head = store.audit_head(chain).unwrap();
    assert_eq!(head.seq, 3);
    assert_eq!(head.hash, entry_hash(&entries[2].entry));
    assert_eq!(
        store.audit_head(AuditChain::Unit(instance)).unwrap(),
        ChainHead::EMPTY
    );

    let identity = SigningKey::generate(SigAlg::P256Sha256);
    let (unit, other_unit) = (Uuid::new_v4(), Uuid::new_v4());
    let first = Countersignature::sign(&identity, unit, instance, head, 1);
    let second = Countersignature::sign(&identity, other_unit, instance, head, 2);
    store.add_countersignature(&second).unwrap();
    store.add_countersignature(&first).unwrap();
    // The same unit countersigning the same entry again replaces its countersignature.
    let again = Countersignature::sign(&identity, unit, instance, head, 3);
    store.add_countersignature(&again).unwrap();
    let mut expected = vec![again, second];
    expected.sort_by_key(|c| c.unit);
    assert_eq!(store.countersignatures(instance).unwrap(), expected);
    assert!(store.countersignatures(Uuid::new_v4()).unwrap().is_empty());
}

fn admin_entries(count: u64) -> (Vec<StoredEntry>, ChainHead) {
    let mut head = ChainHead::EMPTY;
    let entries = (1..=count)
        .map(|counter| StoredEntry {
            entry: head.append(
                9,
                AdminRecord {
                    signers: Vec::new(),
                    action: "zeroize".to_owned(),
                    command: [0; 32],
                    counter,
                    verdict: Verdict::Accepted,
                },
            ),
            signature: vec![1],
        })
        .collect();
    (entries, head)
}

pub(super) fn unit_entries_must_continue_the_stored_chain(target: &dyn Target) {
    let store = target.open();
    let unit = Uuid::new_v4();
    let (entries, head) = admin_entries(3);
    store.append_unit_entries(unit, &entries[..1]).unwrap();
    let refused = store.append_unit_entries(unit, &entries[2..]);
    assert!(matches!(refused, Err(StoreError::Refused(_))));
    assert_eq!(
        store.append_unit_entries(unit, &entries[1..]).unwrap(),
        head
    );
    assert_eq!(
        store.audit_entries(AuditChain::Unit(unit)).unwrap(),
        entries
    );
    assert_eq!(store.audit_head(AuditChain::Unit(unit)).unwrap(), head);
}

//! Conformance cases on what the store keeps beside the keys: import tokens, rotation journals,
//! instance policies, unit identities and leases.

use rotor_crypto::{PublicKey, SigAlg, SigningKey, Vp};
use rotor_proto::rotation::Journal;
use uuid::Uuid;

use super::Target;
use crate::fixtures::token;
use crate::{InstancePolicies, InstancePolicyRecord, Lease, StoreError, UnitRecord};

pub(super) fn import_tokens_and_journals_survive_reopening(target: &dyn Target) {
    let instance = Uuid::new_v4();
    let stored = token();
    let journal = Journal::begin(Vp([1; 32]), Vp([2; 32]), 10, 5);
    {
        let store = target.open();
        assert_eq!(store.import_token(instance).unwrap(), None);
        assert_eq!(store.rotation_journal(instance).unwrap(), None);
        store
            .update_import_token(instance, &mut |slot| {
                *slot = Some(stored.clone());
                Ok(())
            })
            .unwrap();
        store.put_rotation_journal(instance, &journal).unwrap();
    }
    let store = target.open();
    assert_eq!(store.import_token(instance).unwrap(), Some(stored.clone()));
    assert_eq!(store.rotation_journal(instance).unwrap(), Some(journal));
    // A refused change stores nothing.
    let refused = store.update_import_token(instance, &mut |slot| {
        *slot = None;
        Err(StoreError::Refused("no".to_owned()))
    });
    assert!(matches!(refused, Err(StoreError::Refused(_))));
    assert_eq!(store.import_token(instance).unwrap(), Some(stored));
    let removed = store
        .update_import_token(instance, &mut |slot| {
            *slot = None;
            Ok(())
        })
        .unwrap();
    assert_eq!(removed, None);
    assert_eq!(store.import_token(instance).unwrap(), None);
}

pub(super) fn instance_policies_are_replaced_whole(target: &dyn Target) {
    let store = target.open();
    let instance = Uuid::new_v4();
    assert!(store.instance_policies(instance).unwrap().is_empty());
    let mut policies = InstancePolicies::new();
    policies.insert(
        "dualAuthDelete".to_owned(),
        InstancePolicyRecord {
            enabled: true,
            created: Some(1),
            created_by: Some("alice".to_owned()),
            ..InstancePolicyRecord::default()
        },
    );
    policies.insert(
        "allowedIP".to_owned(),
        InstancePolicyRecord {
            enabled: false,
            attributes: Some(serde_json::json!({"allowed_ip": ["10.0.0.0/8"]})),
            ..InstancePolicyRecord::default()
        },
    );
    store.set_instance_policies(instance, &policies).unwrap();
    assert_eq!(store.instance_policies(instance).unwrap(), policies);
    policies.remove("allowedIP");
    store.set_instance_policies(instance, &policies).unwrap();
    assert_eq!(store.instance_policies(instance).unwrap(), policies);
    assert!(store.instance_policies(Uuid::new_v4()).unwrap().is_empty());
}

pub(super) fn a_unit_identity_is_pinned_once_and_its_counter_never_goes_down(target: &dyn Target) {
    let unit = Uuid::new_v4();
    let identity = SigningKey::generate(SigAlg::P256Sha256).public_key();
    let other = SigningKey::generate(SigAlg::P256Sha256).public_key();
    let record = |identity: &PublicKey, last_counter| UnitRecord {
        identity: identity.clone(),
        last_counter,
    };
    {
        let store = target.open();
        assert_eq!(store.unit_record(unit).unwrap(), None);
        store.note_unit(unit, &record(&identity, 4)).unwrap();
        store.note_unit(unit, &record(&identity, 2)).unwrap();
        store.note_unit(unit, &record(&other, 9)).unwrap();
        assert_eq!(store.unit_record(unit).unwrap(), Some(record(&identity, 4)));
        store.note_unit(unit, &record(&identity, 7)).unwrap();
    }
    let store = target.open();
    assert_eq!(store.unit_record(unit).unwrap(), Some(record(&identity, 7)));
}

pub(super) fn a_journal_update_stores_only_what_the_change_accepts(target: &dyn Target) {
    let store = target.open();
    let instance = Uuid::new_v4();
    let begun = Journal::begin(Vp([1; 32]), Vp([2; 32]), 10, 5);
    let seen = store
        .update_rotation_journal(instance, &mut |journal| {
            assert!(journal.is_none());
            *journal = Some(begun.clone());
            Ok(true)
        })
        .unwrap();
    assert_eq!(seen, Some(begun.clone()));
    // Declined: the edit is returned but not stored.
    let declined = store
        .update_rotation_journal(instance, &mut |journal| {
            if let Some(journal) = journal {
                journal.record(3, 6);
            }
            Ok(false)
        })
        .unwrap();
    assert_eq!(declined.map(|j| j.done), Some(3));
    assert_eq!(
        store.rotation_journal(instance).unwrap(),
        Some(begun.clone())
    );
    let failed = store.update_rotation_journal(instance, &mut |journal| {
        *journal = None;
        Err(StoreError::Refused("no".to_owned()))
    });
    assert!(matches!(failed, Err(StoreError::Refused(_))));
    assert_eq!(store.rotation_journal(instance).unwrap(), Some(begun));
    let removed = store
        .update_rotation_journal(instance, &mut |journal| {
            *journal = None;
            Ok(true)
        })
        .unwrap();
    assert_eq!(removed, None);
    assert_eq!(store.rotation_journal(instance).unwrap(), None);
}

pub(super) fn a_lease_has_one_holder_until_it_expires(target: &dyn Target) {
    let store = target.open();
    assert!(store.take_lease("rotation/1", "a", 100, 50).unwrap());
    assert!(!store.take_lease("rotation/1", "b", 120, 50).unwrap());
    // A renewal by the holder extends it.
    assert!(store.take_lease("rotation/1", "a", 140, 50).unwrap());
    assert!(!store.take_lease("rotation/1", "b", 170, 50).unwrap());
    assert!(store.take_lease("rotation/2", "b", 170, 50).unwrap());
    assert!(store.take_lease("purge", "b", 170, 50).unwrap());
    assert_eq!(
        store.leases("rotation/", 170).unwrap(),
        vec![
            Lease {
                name: "rotation/1".to_owned(),
                holder: "a".to_owned(),
                expires: 190,
            },
            Lease {
                name: "rotation/2".to_owned(),
                holder: "b".to_owned(),
                expires: 220,
            },
        ]
    );
    // Expired: another replica takes it over.
    assert!(store.take_lease("rotation/1", "b", 190, 50).unwrap());
    assert_eq!(store.leases("rotation/1", 200).unwrap()[0].holder, "b");
    // Only the holder releases it.
    store.release_lease("rotation/1", "a").unwrap();
    assert_eq!(store.leases("rotation/1", 200).unwrap().len(), 1);
    store.release_lease("rotation/1", "b").unwrap();
    assert!(store.leases("rotation/1", 200).unwrap().is_empty());
    assert!(store.take_lease("rotation/1", "a", 200, 50).unwrap());
    assert!(store.leases("rotation/", 10_000).unwrap().is_empty());
}

//! Conformance cases on keys: versions, aliases and key rings surviving a reopening, alias
//! conflicts and refused updates, listing filters and pages, key rings' lifecycle.

use rotor_crypto::Vp;
use uuid::Uuid;

use super::{Target, all, unaliased};
use crate::fixtures::{key, version};
use crate::{KeyMeta, KeyRing, KeyState, KeyVersion, ListFilter, StoreError};

pub(super) fn keys_versions_aliases_and_rings_survive_reopening(target: &dyn Target) {
    let instance = Uuid::new_v4();
    let first = key(instance, "first");
    {
        let store = target.open();
        store.create_key(&first, &version(1, 1)).unwrap();
        let rotated = KeyMeta {
            newest_version: 2,
            ..first.clone()
        };
        store.add_version(&rotated, 1, &version(2, 2)).unwrap();
        // A second rotation based on the stale version is refused.
        assert!(matches!(
            store.add_version(&rotated, 1, &version(3, 2)),
            Err(StoreError::Conflict(_))
        ));
        store
            .create_key_ring(
                instance,
                &KeyRing {
                    id: "ring".to_owned(),
                    created: 1,
                    created_by: "t".to_owned(),
                },
            )
            .unwrap();
    }
    let store = target.open();
    let by_alias = store.key(instance, "first-alias").unwrap().unwrap();
    assert_eq!(by_alias.id, first.id);
    assert_eq!(by_alias.newest_version, 2);
    let versions = store.versions(instance, first.id).unwrap();
    assert_eq!(
        versions.iter().map(|v| v.version).collect::<Vec<_>>(),
        [1, 2]
    );
    assert_eq!(
        store.version(instance, first.id, 2).unwrap().as_ref(),
        Some(&versions[1])
    );
    assert_eq!(store.version(instance, first.id, 3).unwrap(), None);
    assert_eq!(
        store.count_by_vp(instance).unwrap(),
        vec![(Vp([1; 32]), 1), (Vp([2; 32]), 1)]
    );
    assert!(store.count_by_vp(Uuid::new_v4()).unwrap().is_empty());
    assert_eq!(store.key_rings(instance).unwrap().len(), 2);
    // Another instance sees nothing.
    assert!(
        store
            .key(Uuid::new_v4(), &first.id.to_string())
            .unwrap()
            .is_none()
    );
}

pub(super) fn alias_conflicts_and_refused_updates_change_nothing(target: &dyn Target) {
    let store = target.open();
    let instance = Uuid::new_v4();
    let a = key(instance, "a");
    let b = key(instance, "b");
    store.create_key(&a, &version(1, 1)).unwrap();
    store.create_key(&b, &version(1, 1)).unwrap();
    assert!(matches!(
        store.add_alias(instance, b.id, "a-alias"),
        Err(StoreError::Conflict(_))
    ));
    // A key whose alias is taken is not created at all.
    let c = KeyMeta {
        aliases: vec!["b-alias".to_owned()],
        ..key(instance, "c")
    };
    assert!(matches!(
        store.create_key(&c, &version(1, 1)),
        Err(StoreError::Conflict(_))
    ));
    assert!(store.key(instance, &c.id.to_string()).unwrap().is_none());
    let added = store.add_alias(instance, b.id, "second").unwrap();
    assert_eq!(added.aliases, ["b-alias", "second"]);
    assert_eq!(store.key(instance, "second").unwrap().unwrap().id, b.id);
    let removed = store.remove_alias(instance, b.id, "second").unwrap();
    assert_eq!(removed.aliases, ["b-alias"]);
    assert!(store.key(instance, "second").unwrap().is_none());
    assert!(matches!(
        store.remove_alias(instance, b.id, "second"),
        Err(StoreError::NotFound(_))
    ));
    let refused = store.update(instance, a.id, &mut |k| {
        k.state = KeyState::Suspended;
        Err(StoreError::Refused("no".to_owned()))
    });
    assert!(refused.is_err());
    assert_eq!(
        store
            .key(instance, &a.id.to_string())
            .unwrap()
            .unwrap()
            .state,
        KeyState::Active
    );
    let updated = store
        .update(instance, a.id, &mut |k| {
            k.description = "changed".to_owned();
            Ok(())
        })
        .unwrap();
    assert_eq!(store.key(instance, "a-alias").unwrap().unwrap(), updated);
    assert!(matches!(
        store.update(instance, Uuid::new_v4(), &mut |_| Ok(())),
        Err(StoreError::NotFound(_))
    ));
    let (listed, total) = store.list(instance, &all(1)).unwrap();
    assert_eq!((listed.len(), total), (1, 2));
    store.purge(instance, a.id).unwrap();
    assert!(matches!(
        store.purge(instance, a.id),
        Err(StoreError::NotFound(_))
    ));
    assert!(store.key(instance, "a-alias").unwrap().is_none());
    assert!(store.versions(instance, a.id).unwrap().is_empty());
}

pub(super) fn listing_filters_and_pages(target: &dyn Target) {
    let store = target.open();
    let instance = Uuid::new_v4();
    let mut keys: Vec<KeyMeta> = (0..5)
        .map(|n| KeyMeta {
            created: 1000 + n,
            ..unaliased(instance, &format!("k{n}"))
        })
        .collect();
    keys[1].state = KeyState::Suspended;
    keys[2].state = KeyState::Destroyed;
    keys[3].extractable = true;
    keys[4].key_ring = "ring".to_owned();
    let batch: Vec<(KeyMeta, KeyVersion)> =
        keys.iter().map(|k| (k.clone(), version(1, 1))).collect();
    store.create_keys(&batch).unwrap();
    let ids = |filter: &ListFilter| -> (Vec<Uuid>, u64) {
        let (listed, total) = store.list(instance, filter).unwrap();
        (listed.iter().map(|k| k.id).collect(), total)
    };
    // Destroyed keys are left out unless asked for; the order is by creation.
    assert_eq!(
        ids(&all(10)),
        (vec![keys[0].id, keys[1].id, keys[3].id, keys[4].id], 4)
    );
    assert_eq!(
        ids(&ListFilter {
            offset: 1,
            ..all(2)
        }),
        (vec![keys[1].id, keys[3].id], 4)
    );
    assert_eq!(
        ids(&ListFilter {
            states: vec![KeyState::Destroyed, KeyState::Suspended],
            ..all(10)
        }),
        (vec![keys[1].id, keys[2].id], 2)
    );
    assert_eq!(
        ids(&ListFilter {
            extractable: Some(true),
            ..all(10)
        }),
        (vec![keys[3].id], 1)
    );
    assert_eq!(
        ids(&ListFilter {
            key_ring: Some("ring".to_owned()),
            extractable: Some(false),
            ..all(10)
        }),
        (vec![keys[4].id], 1)
    );
    assert_eq!(store.list(Uuid::new_v4(), &all(10)).unwrap(), (vec![], 0));
}

pub(super) fn key_rings_are_created_once_and_deleted_only_when_empty(target: &dyn Target) {
    let store = target.open();
    let instance = Uuid::new_v4();
    let ring = |id: &str| KeyRing {
        id: id.to_owned(),
        created: 7,
        created_by: "t".to_owned(),
    };
    assert!(matches!(
        store.create_key_ring(instance, &ring("default")),
        Err(StoreError::Conflict(_))
    ));
    store.create_key_ring(instance, &ring("b")).unwrap();
    store.create_key_ring(instance, &ring("B")).unwrap();
    assert!(matches!(
        store.create_key_ring(instance, &ring("b")),
        Err(StoreError::Conflict(_))
    ));
    assert_eq!(
        store
            .key_rings(instance)
            .unwrap()
            .iter()
            .map(|r| r.id.as_str())
            .collect::<Vec<_>>(),
        ["default", "B", "b"]
    );
    let k = KeyMeta {
        key_ring: "b".to_owned(),
        ..unaliased(instance, "k")
    };
    store.create_key(&k, &version(1, 1)).unwrap();
    assert!(matches!(
        store.delete_key_ring(instance, "b"),
        Err(StoreError::Refused(_))
    ));
    assert!(matches!(
        store.delete_key_ring(instance, "default"),
        Err(StoreError::Refused(_))
    ));
    store.purge(instance, k.id).unwrap();
    store.delete_key_ring(instance, "b").unwrap();
    assert!(matches!(
        store.delete_key_ring(instance, "b"),
        Err(StoreError::NotFound(_))
    ));
    assert_eq!(store.key_rings(instance).unwrap().len(), 2);
}

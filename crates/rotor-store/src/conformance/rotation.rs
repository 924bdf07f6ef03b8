//! Conformance cases on master key rotation: blobs read in position ranges and replaced only
//! if unchanged, a VP that differs from the blob's prefix refused, and no key version stored
//! under a master key a rotation closed.

use rotor_crypto::Vp;
use rotor_proto::rotation::Journal;
use uuid::Uuid;

use super::{Target, unaliased};
use crate::fixtures::{key, version};
use crate::{BlobReplacement, KeyMeta, KeyVersion, StoreError};

pub(super) fn a_reported_vp_that_differs_from_the_blob_prefix_is_refused_and_stores_nothing(
    target: &dyn Target,
) {
    let store = target.open();
    let instance = Uuid::new_v4();
    let a = key(instance, "a");
    // The blob is wrapped under VP 1; the reply claims VP 2.
    let lying = KeyVersion {
        vp: Vp([2; 32]),
        ..version(1, 1)
    };
    assert!(matches!(
        store.create_key(&a, &lying),
        Err(StoreError::Refused(_))
    ));
    assert!(store.key(instance, &a.id.to_string()).unwrap().is_none());
    assert!(store.count_by_vp(instance).unwrap().is_empty());

    store.create_key(&a, &version(1, 1)).unwrap();
    let rotated = KeyMeta {
        newest_version: 2,
        ..a
    };
    let lying = KeyVersion {
        vp: Vp([2; 32]),
        ..version(2, 1)
    };
    assert!(matches!(
        store.add_version(&rotated, 1, &lying),
        Err(StoreError::Refused(_))
    ));
    let stored = store
        .blobs_under(instance, &Vp([1; 32]), 0, i64::MAX, 10)
        .unwrap();
    let rewrapped = [vec![3u8; 32], vec![9u8; 28]].concat();
    let refused = store.replace_blobs(&[BlobReplacement {
        position: stored[0].position,
        old: stored[0].blob.clone(),
        new: rewrapped.clone(),
        vp: Vp([2; 32]),
    }]);
    assert!(
        matches!(refused, Err(StoreError::Refused(_))),
        "{refused:?}"
    );
    assert_eq!(store.count_by_vp(instance).unwrap(), vec![(Vp([1; 32]), 1)]);

    // A truthful reply is stored under the blob's own prefix.
    let replaced = store
        .replace_blobs(&[BlobReplacement {
            position: stored[0].position,
            old: stored[0].blob.clone(),
            new: rewrapped,
            vp: Vp([3; 32]),
        }])
        .unwrap();
    assert_eq!(replaced, 1);
    assert_eq!(store.count_by_vp(instance).unwrap(), vec![(Vp([3; 32]), 1)]);
}

pub(super) fn blobs_are_read_in_position_ranges_and_replaced_only_if_unchanged(
    target: &dyn Target,
) {
    let store = target.open();
    let (instance, other) = (Uuid::new_v4(), Uuid::new_v4());
    let (old, new) = (Vp([1; 32]), Vp([2; 32]));
    let mut batch: Vec<(KeyMeta, KeyVersion)> = (0..50)
        .map(|n| {
            let mut k = unaliased(instance, &format!("k{n}"));
            k.extractable = n % 2 == 0;
            (k, version(1, 1))
        })
        .collect();
    batch.push((unaliased(other, "elsewhere"), version(1, 1)));
    store.create_keys(&batch).unwrap();
    assert_eq!(store.count_under(instance, &old).unwrap(), 50);
    assert_eq!(store.count_under(other, &old).unwrap(), 1);
    assert_eq!(store.count_under(instance, &new).unwrap(), 0);
    assert_eq!(store.positions_under(instance, &new).unwrap(), None);
    let (lo, hi) = store.positions_under(instance, &old).unwrap().unwrap();

    // Every blob of the instance, in increasing positions, in pages.
    let mut read = Vec::new();
    let mut after = lo - 1;
    loop {
        let page = store.blobs_under(instance, &old, after, hi, 7).unwrap();
        let Some(last) = page.last() else { break };
        assert!(page.len() <= 7);
        after = last.position;
        read.extend(page);
    }
    assert_eq!(read.len(), 50);
    assert!(read.windows(2).all(|w| w[0].position < w[1].position));
    assert_eq!((read[0].position, read[49].position), (lo, hi));
    for (blob, (key, first)) in read.iter().zip(&batch) {
        assert_eq!(
            (blob.key, blob.version, blob.extractable, &blob.blob),
            (key.id, 1, key.extractable, &first.blob)
        );
    }
    // `until` is inclusive, `after` exclusive.
    let middle = store
        .blobs_under(instance, &old, read[9].position, read[19].position, 100)
        .unwrap();
    assert_eq!(middle, read[10..20]);

    // Rows changed since they were read are left alone.
    let rewrap = |blob: &crate::StoredBlob| BlobReplacement {
        position: blob.position,
        old: blob.blob.clone(),
        new: [vec![2u8; 32], blob.key.as_bytes().to_vec()].concat(),
        vp: new,
    };
    let mut stale = rewrap(&read[0]);
    stale.old = vec![0; 60];
    let replacements: Vec<BlobReplacement> = std::iter::once(stale)
        .chain(read[1..].iter().map(rewrap))
        .collect();
    assert_eq!(store.replace_blobs(&replacements).unwrap(), 49);
    assert_eq!(store.replace_blobs(&replacements).unwrap(), 0);
    assert_eq!(store.replace_blobs(&[]).unwrap(), 0);
    assert_eq!(store.count_under(instance, &old).unwrap(), 1);
    assert_eq!(store.count_under(instance, &new).unwrap(), 49);
    assert_eq!(
        store.positions_under(instance, &old).unwrap(),
        Some((lo, lo))
    );
    let (key1, _) = &batch[1];
    let stored = store.version(instance, key1.id, 1).unwrap().unwrap();
    assert_eq!((stored.vp, &stored.blob), (new, &replacements[1].new));
}

pub(super) fn no_key_version_is_stored_under_a_master_key_a_rotation_closed(target: &dyn Target) {
    let store = target.open();
    let (instance, other) = (Uuid::new_v4(), Uuid::new_v4());
    let a = key(instance, "a");
    store.create_key(&a, &version(1, 1)).unwrap();
    let mut journal = Journal::begin(Vp([1; 32]), Vp([2; 32]), 1, 5);
    store.put_rotation_journal(instance, &journal).unwrap();
    // Open but not closing: versions under the source are still stored.
    let b = key(instance, "b");
    store.create_key(&b, &version(1, 1)).unwrap();
    journal.close_source(6);
    store
        .update_rotation_journal(instance, &mut |stored| {
            *stored = Some(journal.clone());
            Ok(true)
        })
        .unwrap();
    let c = key(instance, "c");
    assert!(matches!(
        store.create_key(&c, &version(1, 1)),
        Err(StoreError::Retired(vp)) if vp == Vp([1; 32])
    ));
    assert!(store.key(instance, "c-alias").unwrap().is_none());
    let rotated = KeyMeta {
        newest_version: 2,
        ..a
    };
    assert!(matches!(
        store.add_version(&rotated, 1, &version(2, 1)),
        Err(StoreError::Retired(_))
    ));
    let bulk = vec![
        (unaliased(instance, "d"), version(1, 2)),
        (unaliased(instance, "e"), version(1, 1)),
    ];
    assert!(matches!(
        store.create_keys(&bulk),
        Err(StoreError::Retired(_))
    ));
    assert_eq!(store.count_under(instance, &Vp([1; 32])).unwrap(), 2);
    assert_eq!(store.count_under(instance, &Vp([2; 32])).unwrap(), 0);
    // Under the target master key, and in other instances, versions are stored.
    store.create_key(&c, &version(1, 2)).unwrap();
    store.add_version(&rotated, 1, &version(2, 2)).unwrap();
    store.create_key(&key(other, "f"), &version(1, 1)).unwrap();
    // Put (not only update) closes too.
    journal.close_source(7);
    store.put_rotation_journal(other, &journal).unwrap();
    assert!(matches!(
        store.create_key(&key(other, "g"), &version(1, 1)),
        Err(StoreError::Retired(_))
    ));
}

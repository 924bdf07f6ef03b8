//! Conformance cases with several replicas writing at once: updates, rotations, rewrites,
//! lease takers and audit appends.

use std::sync::{Barrier, Mutex};

use rotor_crypto::Vp;
use rotor_proto::audit::entry_hash;
use uuid::Uuid;

use super::{Store, Target, event, unaliased};
use crate::fixtures::{key, token, version};
use crate::{AuditChain, BlobReplacement, ImportToken, KeyMeta, KeyVersion, StoreError};

/// Threads, each with its own replica's store, started together.
const WRITERS: usize = 4;

fn in_parallel(target: &dyn Target, work: impl Fn(&dyn Store, usize) + Sync) {
    let stores = target.replicas(WRITERS);
    let barrier = Barrier::new(WRITERS);
    std::thread::scope(|scope| {
        for (n, store) in stores.iter().enumerate() {
            let (barrier, work) = (&barrier, &work);
            scope.spawn(move || {
                barrier.wait();
                work(store.as_ref(), n);
            });
        }
    });
}

pub(super) fn concurrent_updates_lose_nothing(target: &dyn Target) {
    const EACH: usize = 25;
    let setup = target.open();
    let instance = Uuid::new_v4();
    let k = key(instance, "k");
    setup.create_key(&k, &version(1, 1)).unwrap();
    in_parallel(target, |store, n| {
        for i in 0..EACH {
            store
                .update(instance, k.id, &mut |key| {
                    key.labels.push(format!("{n}-{i}"));
                    Ok(())
                })
                .unwrap();
            store
                .update_import_token(instance, &mut |slot| {
                    let stored = slot.get_or_insert_with(|| ImportToken {
                        remaining: 0,
                        ..token()
                    });
                    stored.remaining += 1;
                    Ok(())
                })
                .unwrap();
        }
    });
    let labels = setup.key(instance, "k-alias").unwrap().unwrap().labels;
    assert_eq!(labels.len(), WRITERS * EACH);
    let remaining = setup.import_token(instance).unwrap().unwrap().remaining;
    assert_eq!(remaining as usize, WRITERS * EACH);
}

pub(super) fn concurrent_rotations_of_one_key_add_each_version_once(target: &dyn Target) {
    const TRIES: usize = 10;
    let setup = target.open();
    let instance = Uuid::new_v4();
    let k = key(instance, "k");
    setup.create_key(&k, &version(1, 1)).unwrap();
    let added = Mutex::new(0usize);
    in_parallel(target, |store, _| {
        for _ in 0..TRIES {
            let current = store.key(instance, "k-alias").unwrap().unwrap();
            let next = current.newest_version + 1;
            let rotated = KeyMeta {
                newest_version: next,
                ..current.clone()
            };
            match store.add_version(&rotated, current.newest_version, &version(next, 1)) {
                Ok(()) => *added.lock().unwrap() += 1,
                Err(StoreError::Conflict(_)) => {}
                Err(other) => panic!("unexpected {other:?}"),
            }
        }
    });
    let added = *added.lock().unwrap();
    // A rotation is refused only when another one succeeded since it read the key, and each
    // success refuses at most one attempt of every other thread.
    assert!(added >= TRIES, "{added}");
    let versions = setup.versions(instance, k.id).unwrap();
    assert_eq!(versions.len(), added + 1);
    assert!(versions.iter().zip(1..).all(|(v, n)| v.version == n));
    let newest = setup
        .key(instance, "k-alias")
        .unwrap()
        .unwrap()
        .newest_version;
    assert_eq!(newest as usize, added + 1);
}

pub(super) fn concurrent_rewrites_replace_each_blob_once(target: &dyn Target) {
    let setup = target.open();
    let instance = Uuid::new_v4();
    let batch: Vec<(KeyMeta, KeyVersion)> = (0..200)
        .map(|n| (unaliased(instance, &format!("k{n}")), version(1, 1)))
        .collect();
    setup.create_keys(&batch).unwrap();
    let read = setup
        .blobs_under(instance, &Vp([1; 32]), 0, i64::MAX, 1000)
        .unwrap();
    let replaced = Mutex::new(0u64);
    in_parallel(target, |store, n| {
        // Each writer rewraps every blob to its own bytes, in its own order.
        let mut replacements: Vec<BlobReplacement> = read
            .iter()
            .map(|blob| BlobReplacement {
                position: blob.position,
                old: blob.blob.clone(),
                new: [vec![2u8; 32], vec![n as u8; 28]].concat(),
                vp: Vp([2; 32]),
            })
            .collect();
        if n % 2 == 1 {
            replacements.reverse();
        }
        for chunk in replacements.chunks(50) {
            *replaced.lock().unwrap() += store.replace_blobs(chunk).unwrap();
        }
    });
    assert_eq!(*replaced.lock().unwrap(), 200);
    assert_eq!(setup.count_under(instance, &Vp([2; 32])).unwrap(), 200);
}

pub(super) fn concurrent_lease_takers_have_one_winner(target: &dyn Target) {
    for round in 0..10 {
        let winners = Mutex::new(Vec::new());
        let name = format!("lease-{round}");
        in_parallel(target, |store, n| {
            if store
                .take_lease(&name, &format!("r{n}"), 1000, 100)
                .unwrap()
            {
                winners.lock().unwrap().push(n);
            }
        });
        let winners = winners.into_inner().unwrap();
        assert_eq!(winners.len(), 1, "{winners:?}");
    }
}

pub(super) fn concurrent_appends_keep_one_chain(target: &dyn Target) {
    const EACH: usize = 10;
    let setup = target.open();
    let instance = Uuid::new_v4();
    in_parallel(target, |store, n| {
        for i in 0..EACH {
            store
                .append_key_event(instance, &mut |mut head| {
                    let bytes = head.append(5, event(&format!("{n}-{i}")));
                    (head, bytes)
                })
                .unwrap();
        }
    });
    let chain = AuditChain::Instance(instance);
    let entries = setup.audit_entries(chain).unwrap();
    assert_eq!(entries.len(), WRITERS * EACH);
    let head = setup.audit_head(chain).unwrap();
    assert_eq!(head.seq as usize, WRITERS * EACH);
    assert_eq!(head.hash, entry_hash(&entries[entries.len() - 1].entry));
}

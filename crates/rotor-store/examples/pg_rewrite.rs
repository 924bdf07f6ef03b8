//! How fast the PostgreSQL store rewrites key storage, as a rotation does: a throwaway cluster,
//! `N` keys (default 1,000,000) created in batches, then every blob read with `blobs_under` and
//! written back with `replace_blobs` in batches of 10,000, by one writer and then by two (each
//! its own store, as two replicas, on half of the positions each).
//!
//! `cargo run --release -p rotor-store --example pg_rewrite [N]`

use std::time::Instant;

use rotor_crypto::Vp;
use rotor_store::postgres::{PgConfig, PgStore, TempCluster};
use rotor_store::{
    BlobReplacement, KeyMeta, KeyPolicies, KeyState, KeyStore, KeyVersion, StoreError,
};
use uuid::Uuid;

const BATCH: u32 = 10_000;
/// Bytes of a wrapped key after its VP, about what a unit's blob holds.
const WRAPPED: usize = 68;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let keys: usize = match std::env::args().nth(1) {
        Some(n) => n.parse()?,
        None => 1_000_000,
    };
    let dir = tempfile::tempdir()?;
    let cluster = TempCluster::start(&dir.path().join("pg"))?;
    let config = PgConfig {
        url: cluster.url(),
        ca_cert: None,
        max_connections: 4,
    };
    let store = PgStore::connect(&config)?;
    let instance = Uuid::new_v4();
    let (first, second, third) = (Vp([1; 32]), Vp([2; 32]), Vp([3; 32]));

    let started = Instant::now();
    let mut made = 0;
    while made < keys {
        let count = (keys - made).min(BATCH as usize);
        let batch: Vec<(KeyMeta, KeyVersion)> =
            (0..count).map(|_| new_key(instance, &first)).collect();
        store.create_keys(&batch)?;
        made += count;
    }
    report("create_keys", keys as u64, started);

    let started = Instant::now();
    let rewritten = rewrite(&store, instance, &first, &second, 0, i64::MAX)?;
    report("rewrite, 1 writer", rewritten, started);

    let (lo, hi) = store
        .positions_under(instance, &second)?
        .ok_or("no key versions")?;
    let middle = lo + (hi - lo) / 2;
    let started = Instant::now();
    let rewritten = std::thread::scope(|scope| {
        let halves = [(lo - 1, middle), (middle, hi)].map(|(after, until)| {
            let config = &config;
            scope.spawn(move || -> Result<u64, StoreError> {
                let replica = PgStore::connect(config)?;
                rewrite(&replica, instance, &second, &third, after, until)
            })
        });
        halves
            .into_iter()
            .map(|half| {
                half.join()
                    .map_err(|_| "a writer panicked")?
                    .map_err(Into::into)
            })
            .sum::<Result<u64, Box<dyn std::error::Error>>>()
    })?;
    report("rewrite, 2 writers", rewritten, started);
    Ok(())
}

/// Rewrites the blobs under `from` at positions in `(after, until]` to `to`; returns how many.
fn rewrite(
    store: &PgStore,
    instance: Uuid,
    from: &Vp,
    to: &Vp,
    mut after: i64,
    until: i64,
) -> Result<u64, StoreError> {
    let mut rewritten = 0;
    loop {
        let batch = store.blobs_under(instance, from, after, until, BATCH)?;
        let Some(last) = batch.last() else {
            return Ok(rewritten);
        };
        after = last.position;
        let replacements: Vec<BlobReplacement> = batch
            .into_iter()
            .map(|blob| BlobReplacement {
                position: blob.position,
                new: [to.0.as_slice(), &blob.blob[32..]].concat(),
                old: blob.blob,
                vp: *to,
            })
            .collect();
        rewritten += store.replace_blobs(&replacements)?;
    }
}

fn new_key(instance: Uuid, vp: &Vp) -> (KeyMeta, KeyVersion) {
    let now = rotor_util::time::now_ms();
    let id = Uuid::new_v4();
    let key = KeyMeta {
        instance,
        id,
        name: format!("key-{id}"),
        description: String::new(),
        extractable: false,
        imported: false,
        state: KeyState::Active,
        key_ring: "default".to_owned(),
        aliases: Vec::new(),
        created: now,
        created_by: "bench".to_owned(),
        updated: now,
        last_rotated: None,
        deletion: None,
        deletion_authorization: None,
        policies: KeyPolicies::default(),
        newest_version: 1,
        labels: Vec::new(),
    };
    let version = KeyVersion {
        version: 1,
        id: Uuid::new_v4(),
        blob: [vp.0.as_slice(), &[7; WRAPPED]].concat(),
        vp: *vp,
        created: now,
    };
    (key, version)
}

fn report(what: &str, rows: u64, started: Instant) {
    let seconds = started.elapsed().as_secs_f64();
    println!(
        "{what}: {rows} rows in {seconds:.2} s, {:.0} rows/s",
        rows as f64 / seconds
    );
}

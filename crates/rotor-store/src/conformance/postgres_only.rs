//! Cases that only make sense on PostgreSQL: the database killed mid-write, and TLS to it.

use std::sync::Mutex;

use rotor_crypto::Vp;
use uuid::Uuid;

use super::all;
use crate::fixtures::{key, version};
use crate::postgres::{PgConfig, PgStore, TempCluster};
use crate::{KeyStore, StoreError};

/// PostgreSQL killed with SIGKILL while writers store keys, then started again: every key a
/// writer was told is stored is there with its first version, and no key is half-stored.
#[test]
fn postgres_keeps_every_acknowledged_write_across_a_crash() {
    let dir = tempfile::tempdir().unwrap();
    let mut cluster = TempCluster::start(&dir.path().join("pg")).unwrap();
    let config = PgConfig {
        url: cluster.url(),
        ca_cert: None,
        max_connections: 4,
    };
    let store = PgStore::connect(&config).unwrap();
    let instance = Uuid::new_v4();
    let acknowledged = Mutex::new(Vec::new());
    let stop = std::sync::atomic::AtomicBool::new(false);
    std::thread::scope(|scope| {
        for _ in 0..2 {
            scope.spawn(|| {
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let k = key(instance, &Uuid::new_v4().to_string());
                    if store.create_key(&k, &version(1, 1)).is_ok() {
                        acknowledged.lock().unwrap().push(k.id);
                    }
                }
            });
        }
        while acknowledged.lock().unwrap().len() < 200 {
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        cluster.kill_and_restart().unwrap();
        let before = acknowledged.lock().unwrap().len();
        while acknowledged.lock().unwrap().len() < before + 200 {
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
    });
    drop(store);
    let store = PgStore::connect(&config).unwrap();
    let acknowledged = acknowledged.into_inner().unwrap();
    for id in &acknowledged {
        let stored = store.key(instance, &id.to_string()).unwrap();
        assert!(stored.is_some(), "acknowledged key {id} is missing");
        assert_eq!(store.versions(instance, *id).unwrap().len(), 1);
    }
    // Nothing half-written: every stored key has its version and alias, and no more.
    let (keys, total) = store.list(instance, &all(u32::MAX / 2)).unwrap();
    assert!(total as usize >= acknowledged.len());
    for k in &keys {
        assert_eq!(store.versions(instance, k.id).unwrap().len(), 1);
        assert_eq!(
            store.key(instance, &k.aliases[0]).unwrap().map(|s| s.id),
            Some(k.id)
        );
    }
    assert_eq!(store.count_under(instance, &Vp([1; 32])).unwrap(), total);
}

/// Writes `text` as `name` in the cluster's data directory, owned by the cluster's user and
/// readable by it alone (PostgreSQL refuses a key file others can read).
fn cluster_file(cluster: &TempCluster, name: &str, text: &str) {
    use std::os::unix::fs::{MetadataExt as _, PermissionsExt as _};
    let data = cluster.dir().join("data");
    let owner = std::fs::metadata(&data).unwrap();
    let path = data.join(name);
    std::fs::write(&path, text).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    std::os::unix::fs::chown(&path, Some(owner.uid()), Some(owner.gid())).unwrap();
}

/// A CA and a certificate it signs for 127.0.0.1: (CA PEM, certificate PEM, key PEM).
fn database_certificate() -> (String, String, String) {
    use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
    let ca_key = KeyPair::generate().unwrap();
    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca_pem = ca.self_signed(&ca_key).unwrap().pem();
    let issuer = Issuer::new(ca, ca_key);
    let key = KeyPair::generate().unwrap();
    let cert = CertificateParams::new(vec!["127.0.0.1".to_owned()])
        .unwrap()
        .signed_by(&key, &issuer)
        .unwrap();
    (ca_pem, cert.pem(), key.serialize_pem())
}

/// With a CA certificate configured, the store speaks TLS to the database and accepts only a
/// server certificate that CA signed.
#[test]
fn postgres_over_tls_verifies_the_database_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let cluster = TempCluster::start(&dir.path().join("pg")).unwrap();
    let (ca, cert, key) = database_certificate();
    cluster_file(&cluster, "server.crt", &cert);
    cluster_file(&cluster, "server.key", &key);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let (client, connection) = tokio_postgres::connect(&cluster.url(), tokio_postgres::NoTls)
            .await
            .unwrap();
        let connection = tokio::spawn(connection);
        client
            .batch_execute("ALTER SYSTEM SET ssl = on")
            .await
            .unwrap();
        client
            .batch_execute("SELECT pg_reload_conf()")
            .await
            .unwrap();
        drop(client);
        let _ = connection.await;
    });
    let ca_file = dir.path().join("ca.pem");
    std::fs::write(&ca_file, &ca).unwrap();
    let config = PgConfig {
        url: cluster.url(),
        ca_cert: Some(ca_file),
        max_connections: 2,
    };
    // The reload takes effect in new sessions shortly after.
    let started = std::time::Instant::now();
    let store = loop {
        match PgStore::connect(&config) {
            Ok(store) => break store,
            Err(err) if started.elapsed().as_secs() > 10 => panic!("{err}"),
            Err(_) => std::thread::sleep(std::time::Duration::from_millis(100)),
        }
    };
    assert!(store.take_lease("tls", "a", 1, 10).unwrap());
    assert_eq!(store.leases("tls", 1).unwrap().len(), 1);

    let (other_ca, _, _) = database_certificate();
    let other_file = dir.path().join("other-ca.pem");
    std::fs::write(&other_file, other_ca).unwrap();
    let refused = PgStore::connect(&PgConfig {
        ca_cert: Some(other_file),
        ..config.clone()
    });
    assert!(
        matches!(refused, Err(StoreError::Database(_))),
        "{refused:?}"
    );
    let missing = PgStore::connect(&PgConfig {
        ca_cert: Some(dir.path().join("absent.pem")),
        ..config
    });
    assert!(
        matches!(missing, Err(StoreError::Database(_))),
        "{missing:?}"
    );
}

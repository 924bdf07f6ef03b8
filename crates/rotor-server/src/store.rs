//! The key storage the configuration chooses: PostgreSQL under `[store]` (replicas share it),
//! otherwise the embedded SQLite database `data_dir/keys.db`.

use std::sync::Arc;

use rotor_store::{ApiKeyStore, AuditStore, KeyStore, PgConfig, PgStore, SqliteStore, StoreError};

use crate::config::Config;

/// The opened storage, as the key and audit seams see it.
pub struct OpenedStore {
    /// Keys, versions, journals, leases.
    pub keys: Arc<dyn KeyStore>,
    /// The audit chains, in the same database.
    pub audit: Arc<dyn AuditStore>,
    /// The API keys managed through the API, in the same database.
    pub api_keys: Arc<dyn ApiKeyStore>,
}

/// Opens (creating or migrating) the storage `config` names.
pub fn open_store(config: &Config) -> Result<OpenedStore, StoreError> {
    match &config.store {
        Some(store) => {
            let store = Arc::new(PgStore::connect(&PgConfig {
                url: store.url.clone(),
                ca_cert: store.ca_cert.clone(),
                max_connections: store.max_connections,
            })?);
            Ok(OpenedStore {
                keys: store.clone(),
                audit: store.clone(),
                api_keys: store,
            })
        }
        None => {
            let store = Arc::new(SqliteStore::open(&config.data_dir.join("keys.db"))?);
            Ok(OpenedStore {
                keys: store.clone(),
                audit: store.clone(),
                api_keys: store,
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::StoreConfig;
    use rotor_store::postgres::TempCluster;

    fn config(dir: &std::path::Path, store: Option<StoreConfig>) -> Config {
        let mut config: Config = toml::from_str(&format!(
            "listen = \"127.0.0.1:0\"\ndata_dir = \"{}\"\n",
            dir.display()
        ))
        .unwrap();
        config.store = store;
        config
    }

    /// What one opening stores, the next opening of the same configuration finds.
    fn survives_reopening(config: &Config) {
        let unit = uuid::Uuid::new_v4();
        let record = rotor_store::UnitRecord {
            identity: rotor_crypto::SigningKey::generate(rotor_crypto::SigAlg::P256Sha256)
                .public_key(),
            last_counter: 3,
        };
        open_store(config)
            .unwrap()
            .keys
            .note_unit(unit, &record)
            .unwrap();
        let reopened = open_store(config).unwrap();
        assert_eq!(reopened.keys.unit_record(unit).unwrap(), Some(record));
        let chain = rotor_store::AuditChain::Unit(unit);
        assert_eq!(reopened.audit.audit_entries(chain).unwrap(), vec![]);
    }

    #[test]
    fn without_a_store_table_keys_live_in_sqlite_in_the_data_directory() {
        let dir = tempfile::tempdir().unwrap();
        let config = config(dir.path(), None);
        survives_reopening(&config);
        assert!(dir.path().join("keys.db").exists());
    }

    #[test]
    fn a_store_table_opens_postgres() {
        let dir = tempfile::tempdir().unwrap();
        let cluster = TempCluster::start(&dir.path().join("pg")).unwrap();
        let config = config(
            &dir.path().join("service"),
            Some(StoreConfig {
                url: cluster.url(),
                ca_cert: None,
                max_connections: 2,
            }),
        );
        survives_reopening(&config);
        assert!(!dir.path().join("service").join("keys.db").exists());
    }
}

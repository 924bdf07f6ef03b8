//! The key storage the configuration chooses: PostgreSQL under `[store]` (replicas share it),
//! otherwise the embedded SQLite database `data_dir/keys.db`.

use std::sync::Arc;

use rotor_store::{AuditStore, KeyStore, PgConfig, PgStore, SqliteStore, StoreError};

use crate::config::Config;

/// The opened storage, as the key and audit seams see it.
pub struct OpenedStore {
    /// Keys, versions, journals, leases.
    pub keys: Arc<dyn KeyStore>,
    /// The audit chains, in the same database.
    pub audit: Arc<dyn AuditStore>,
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
                audit: store,
            })
        }
        None => {
            let store = Arc::new(SqliteStore::open(&config.data_dir.join("keys.db"))?);
            Ok(OpenedStore {
                keys: store.clone(),
                audit: store,
            })
        }
    }
}

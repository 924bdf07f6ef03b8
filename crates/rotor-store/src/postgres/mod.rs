//! [`KeyStore`] and [`AuditStore`](crate::AuditStore) on PostgreSQL, for several service
//! replicas sharing one database.
//!
//! The trait is synchronous; [`PgStore`] owns a small tokio runtime of its own and blocks on it,
//! so it is called from plain threads, `spawn_blocking` threads and `block_in_place` alike (never
//! straight from async code). Connections come from a pool (deadpool-postgres); TLS to the
//! database uses rustls when a CA certificate is configured.
//!
//! Concurrency across replicas is the database's: read-modify-write methods lock the row they
//! change (`SELECT … FOR UPDATE`), or, where the row may not exist yet (an import token, a
//! journal, an audit chain's head), a transaction-scoped advisory lock named after it. Storing a
//! key version takes the instance's journal lock shared and every journal write takes it
//! exclusive, so the refusal under a closed master key ([`StoreError::Retired`]) is atomic with
//! the journal. Positions are an identity column.
//!
//! Rewrites are bulk: [`KeyStore::replace_blobs`] copies its batch into a per-connection staging
//! table (binary `COPY`) and applies it with one `UPDATE … FROM` that keeps the compare-and-swap
//! exact; `key_versions` leaves more than half of each page free (`fillfactor`) and has no index
//! on the columns a rewrite changes, so even when every row of a page is rewritten in one
//! transaction, each new row version fits in its page (a HOT update) and no index is touched.
//!
//! The parts: the store itself here (configuration, the connection pool and runtime, the locks
//! and the row helpers the parts share, and [`KeyStore`] handing each method to its part);
//! `keys` (keys, their versions, aliases and key rings), `bulk` (creating keys by `COPY`,
//! counting and reading the blobs under a master key, rewriting them through the staging
//! table), `state` (instance policies, import tokens, rotation journals, leases and unit
//! records), `apikeys`, `audit`, `migrations`, `tls` and `cluster`.

use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use deadpool_postgres::{Hook, HookError, Manager, ManagerConfig, Pool, RecyclingMethod};
use rotor_crypto::Vp;
use rotor_proto::rotation::Journal;
use tokio_postgres::Socket;
use tokio_postgres::config::SslMode;
use tokio_postgres::tls::{MakeTlsConnect, TlsConnect};
use uuid::Uuid;

use crate::records::*;
use crate::{
    BlobReplacement, ImportToken, InstancePolicies, KeyMeta, KeyRing, KeyStore, KeyVersion, Lease,
    ListFilter, StoreError, StoredBlob, UnitRecord,
};
use rotor_util::time::now_ms;

mod apikeys;
mod audit;
mod bulk;
mod cluster;
mod keys;
mod migrations;
mod state;
mod tls;

pub use cluster::{ClusterError, TempCluster};

/// Where the PostgreSQL key storage is and how to reach it.
#[derive(Clone, Debug)]
pub struct PgConfig {
    /// A libpq-style URL or key/value string (`postgres://user:password@host:port/db`).
    pub url: String,
    /// A PEM file of the CA certificates that sign the server's certificate: when set, the
    /// connection is TLS (rustls) and the server's certificate is verified; when absent, plain
    /// TCP or a Unix socket (for a database on the same host).
    pub ca_cert: Option<PathBuf>,
    /// At most this many connections from this process.
    pub max_connections: usize,
}

impl PgConfig {
    /// Connections per service process unless configured.
    pub const DEFAULT_MAX_CONNECTIONS: usize = 16;
}

/// The PostgreSQL key storage.
pub struct PgStore {
    pool: Pool,
    /// Taken only on drop, to shut down without waiting (dropping inside async code is fine).
    runtime: Option<tokio::runtime::Runtime>,
}

impl std::fmt::Debug for PgStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgStore").finish_non_exhaustive()
    }
}

impl Drop for PgStore {
    fn drop(&mut self) {
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

/// How long a caller waits for a free connection, and for a new one to open.
const POOL_WAIT: Duration = Duration::from_secs(30);

impl From<tokio_postgres::Error> for StoreError {
    fn from(err: tokio_postgres::Error) -> Self {
        Self::Database(match err.as_db_error() {
            Some(db) => format!("{} (SQLSTATE {})", db.message(), db.code().code()),
            None => err.to_string(),
        })
    }
}

impl From<deadpool_postgres::PoolError> for StoreError {
    fn from(err: deadpool_postgres::PoolError) -> Self {
        match err {
            deadpool_postgres::PoolError::Backend(err) => err.into(),
            other => Self::Database(format!("no database connection: {other}")),
        }
    }
}

/// Opens connections for the pool. A connection that ends with an error (the server restarted
/// or shut down) is only noted at debug level: the next use of it fails with a
/// [`StoreError::Database`], which is where the error is reported.
struct Connector<T>(T);

type ConnectFuture<'a> = std::pin::Pin<
    Box<
        dyn Future<
                Output = Result<
                    (tokio_postgres::Client, tokio::task::JoinHandle<()>),
                    tokio_postgres::Error,
                >,
            > + Send
            + 'a,
    >,
>;

impl<T> deadpool_postgres::Connect for Connector<T>
where
    T: MakeTlsConnect<Socket> + Clone + Sync + Send + 'static,
    T::Stream: Sync + Send,
    T::TlsConnect: Sync + Send,
    <T::TlsConnect as TlsConnect<Socket>>::Future: Send,
{
    fn connect(&self, pg_config: &tokio_postgres::Config) -> ConnectFuture<'_> {
        let (tls, pg_config) = (self.0.clone(), pg_config.clone());
        Box::pin(async move {
            let (client, connection) = pg_config.connect(tls).await?;
            let task = tokio::spawn(async move {
                if let Err(err) = connection.await {
                    tracing::debug!("database connection closed: {err}");
                }
            });
            Ok((client, task))
        })
    }
}

type Client = deadpool_postgres::Client;
type Tx<'a> = deadpool_postgres::Transaction<'a>;

impl PgStore {
    /// Connects to the database of `config`, creating its schema or bringing it up to date
    /// (replicas that start at once apply each migration once, under an advisory lock).
    pub fn connect(config: &PgConfig) -> Result<Self, StoreError> {
        let mut pg_config = tokio_postgres::Config::from_str(&config.url).map_err(|err| {
            StoreError::Database(format!("the PostgreSQL URL does not parse: {err}"))
        })?;
        pg_config.application_name("rotor");
        let manager_config = ManagerConfig {
            recycling_method: RecyclingMethod::Fast,
        };
        let manager = match &config.ca_cert {
            Some(ca_cert) => {
                if pg_config.get_ssl_mode() != SslMode::Disable {
                    pg_config.ssl_mode(SslMode::Require);
                }
                Manager::from_connect(
                    pg_config,
                    Connector(tls::connector(ca_cert)?),
                    manager_config,
                )
            }
            None => {
                Manager::from_connect(pg_config, Connector(tokio_postgres::NoTls), manager_config)
            }
        };
        let pool = Pool::builder(manager)
            .max_size(config.max_connections.max(1))
            .runtime(deadpool_postgres::Runtime::Tokio1)
            .wait_timeout(Some(POOL_WAIT))
            .create_timeout(Some(POOL_WAIT))
            .post_create(Hook::async_fn(|client, _| {
                Box::pin(async move {
                    client
                        .batch_execute(bulk::STAGING)
                        .await
                        .map_err(HookError::Backend)
                })
            }))
            .build()
            .map_err(|err| StoreError::Database(format!("cannot make a connection pool: {err}")))?;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("rotor-pg")
            .enable_all()
            .build()
            .map_err(|err| {
                StoreError::Database(format!("cannot start the database runtime: {err}"))
            })?;
        let store = Self {
            pool,
            runtime: Some(runtime),
        };
        // On a thread of its own, so that connecting works from async code too.
        std::thread::scope(|scope| {
            scope
                .spawn(|| {
                    store.run(async {
                        let mut client = store.client().await?;
                        migrations::migrate(&mut client).await
                    })
                })
                .join()
                .map_err(|_| StoreError::Database("the schema migration panicked".to_owned()))?
        })?;
        Ok(store)
    }

    /// Runs `work` on the store's runtime and waits for it.
    fn run<T>(&self, work: impl Future<Output = Result<T, StoreError>>) -> Result<T, StoreError> {
        match &self.runtime {
            Some(runtime) => runtime.block_on(work),
            None => Err(StoreError::Database("the store is closed".to_owned())),
        }
    }

    async fn client(&self) -> Result<Client, StoreError> {
        Ok(self.pool.get().await?)
    }
}

/// Takes the transaction-scoped lock named `name` (see the module documentation).
async fn lock(tx: &Tx<'_>, name: &str) -> Result<(), StoreError> {
    tx.execute(
        "SELECT pg_advisory_xact_lock(hashtextextended($1, 0))",
        &[&name],
    )
    .await?;
    Ok(())
}

/// Takes the lock named `name` shared with other holders of it shared.
async fn lock_shared(tx: &Tx<'_>, name: &str) -> Result<(), StoreError> {
    tx.execute(
        "SELECT pg_advisory_xact_lock_shared(hashtextextended($1, 0))",
        &[&name],
    )
    .await?;
    Ok(())
}

fn journal_lock(instance: Uuid) -> String {
    format!("rotor:journal:{instance}")
}

fn state_code(key: &KeyMeta) -> i16 {
    i16::from(u8::from(key.state))
}

/// Refuses versions under a master key a rotation of their instance has closed; holds each
/// instance's journal lock shared until the transaction ends.
async fn check_not_retired(
    tx: &Tx<'_>,
    versions: &[(Uuid, Vp, Vec<u8>)],
) -> Result<(), StoreError> {
    let mut instances: Vec<Uuid> = versions.iter().map(|(instance, ..)| *instance).collect();
    instances.sort_unstable();
    instances.dedup();
    for instance in &instances {
        lock_shared(tx, &journal_lock(*instance)).await?;
    }
    let closed = tx
        .query(
            "SELECT instance, closed_vp FROM rotations
             WHERE instance = ANY($1) AND closed_vp IS NOT NULL",
            &[&instances],
        )
        .await?;
    for row in closed {
        let (instance, vp): (Uuid, Vec<u8>) = (row.get(0), row.get(1));
        if let Some((_, reported, _)) = versions
            .iter()
            .find(|(of, _, recorded)| *of == instance && *recorded == vp)
        {
            return Err(StoreError::Retired(*reported));
        }
    }
    Ok(())
}

async fn insert_alias(
    tx: &Tx<'_>,
    instance: Uuid,
    key: Uuid,
    alias: &str,
) -> Result<(), StoreError> {
    let inserted = tx
        .execute(
            "INSERT INTO aliases (instance, alias, key_id) VALUES ($1, $2, $3)
             ON CONFLICT DO NOTHING",
            &[&instance, &alias, &key],
        )
        .await?;
    if inserted == 0 {
        return Err(StoreError::Conflict(format!(
            "alias '{alias}' is already in use in this instance"
        )));
    }
    Ok(())
}

impl KeyStore for PgStore {
    fn create_key(&self, key: &KeyMeta, first: &KeyVersion) -> Result<(), StoreError> {
        self.create_keys(std::slice::from_ref(&(key.clone(), first.clone())))
    }

    fn key(&self, instance: Uuid, id_or_alias: &str) -> Result<Option<KeyMeta>, StoreError> {
        keys::key(self, instance, id_or_alias)
    }

    fn list(&self, instance: Uuid, filter: &ListFilter) -> Result<(Vec<KeyMeta>, u64), StoreError> {
        keys::list(self, instance, filter)
    }

    fn update(
        &self,
        instance: Uuid,
        id: Uuid,
        change: &mut dyn FnMut(&mut KeyMeta) -> Result<(), StoreError>,
    ) -> Result<KeyMeta, StoreError> {
        keys::update(self, instance, id, change)
    }

    fn add_version(
        &self,
        key: &KeyMeta,
        expected_newest: u32,
        version: &KeyVersion,
    ) -> Result<(), StoreError> {
        keys::add_version(self, key, expected_newest, version)
    }

    fn versions(&self, instance: Uuid, id: Uuid) -> Result<Vec<KeyVersion>, StoreError> {
        keys::versions(self, instance, id)
    }

    fn version(
        &self,
        instance: Uuid,
        id: Uuid,
        version: u32,
    ) -> Result<Option<KeyVersion>, StoreError> {
        keys::version(self, instance, id, version)
    }

    fn purge(&self, instance: Uuid, id: Uuid) -> Result<(), StoreError> {
        keys::purge(self, instance, id)
    }

    fn add_alias(&self, instance: Uuid, id: Uuid, alias: &str) -> Result<KeyMeta, StoreError> {
        keys::add_alias(self, instance, id, alias)
    }

    fn remove_alias(&self, instance: Uuid, id: Uuid, alias: &str) -> Result<KeyMeta, StoreError> {
        keys::remove_alias(self, instance, id, alias)
    }

    fn key_rings(&self, instance: Uuid) -> Result<Vec<KeyRing>, StoreError> {
        keys::key_rings(self, instance)
    }

    fn create_key_ring(&self, instance: Uuid, ring: &KeyRing) -> Result<(), StoreError> {
        keys::create_key_ring(self, instance, ring)
    }

    fn delete_key_ring(&self, instance: Uuid, id: &str) -> Result<(), StoreError> {
        keys::delete_key_ring(self, instance, id)
    }

    fn instance_policies(&self, instance: Uuid) -> Result<InstancePolicies, StoreError> {
        state::instance_policies(self, instance)
    }

    fn set_instance_policies(
        &self,
        instance: Uuid,
        policies: &InstancePolicies,
    ) -> Result<(), StoreError> {
        state::set_instance_policies(self, instance, policies)
    }

    fn import_token(&self, instance: Uuid) -> Result<Option<ImportToken>, StoreError> {
        state::import_token(self, instance)
    }

    fn update_import_token(
        &self,
        instance: Uuid,
        change: &mut dyn FnMut(&mut Option<ImportToken>) -> Result<(), StoreError>,
    ) -> Result<Option<ImportToken>, StoreError> {
        state::update_import_token(self, instance, change)
    }

    fn count_by_vp(&self, instance: Uuid) -> Result<Vec<(Vp, u64)>, StoreError> {
        bulk::count_by_vp(self, instance)
    }

    fn count_under(&self, instance: Uuid, vp: &Vp) -> Result<u64, StoreError> {
        bulk::count_under(self, instance, vp)
    }

    fn create_keys(&self, keys: &[(KeyMeta, KeyVersion)]) -> Result<(), StoreError> {
        bulk::create_keys(self, keys)
    }

    fn blobs_under(
        &self,
        instance: Uuid,
        vp: &Vp,
        after: i64,
        until: i64,
        limit: u32,
    ) -> Result<Vec<StoredBlob>, StoreError> {
        bulk::blobs_under(self, instance, vp, after, until, limit)
    }

    fn positions_under(&self, instance: Uuid, vp: &Vp) -> Result<Option<(i64, i64)>, StoreError> {
        bulk::positions_under(self, instance, vp)
    }

    fn replace_blobs(&self, replacements: &[BlobReplacement]) -> Result<u64, StoreError> {
        bulk::replace_blobs(self, replacements)
    }

    fn rotation_journal(&self, instance: Uuid) -> Result<Option<Journal>, StoreError> {
        state::rotation_journal(self, instance)
    }

    fn put_rotation_journal(&self, instance: Uuid, journal: &Journal) -> Result<(), StoreError> {
        state::put_rotation_journal(self, instance, journal)
    }

    fn update_rotation_journal(
        &self,
        instance: Uuid,
        change: &mut dyn FnMut(&mut Option<Journal>) -> Result<bool, StoreError>,
    ) -> Result<Option<Journal>, StoreError> {
        state::update_rotation_journal(self, instance, change)
    }

    fn take_lease(
        &self,
        name: &str,
        holder: &str,
        now: i64,
        ttl_ms: i64,
    ) -> Result<bool, StoreError> {
        state::take_lease(self, name, holder, now, ttl_ms)
    }

    fn release_lease(&self, name: &str, holder: &str) -> Result<(), StoreError> {
        state::release_lease(self, name, holder)
    }

    fn leases(&self, prefix: &str, now: i64) -> Result<Vec<Lease>, StoreError> {
        state::leases(self, prefix, now)
    }

    fn unit_record(&self, unit: Uuid) -> Result<Option<UnitRecord>, StoreError> {
        state::unit_record(self, unit)
    }

    fn note_unit(&self, unit: Uuid, record: &UnitRecord) -> Result<(), StoreError> {
        state::note_unit(self, unit, record)
    }
}

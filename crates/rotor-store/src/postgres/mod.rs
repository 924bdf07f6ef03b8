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

use std::path::PathBuf;
use std::pin::pin;
use std::str::FromStr;
use std::time::Duration;

use deadpool_postgres::{Hook, HookError, Manager, ManagerConfig, Pool, RecyclingMethod};
use rotor_crypto::Vp;
use rotor_proto::rotation::Journal;
use tokio_postgres::Socket;
use tokio_postgres::binary_copy::BinaryCopyInWriter;
use tokio_postgres::config::SslMode;
use tokio_postgres::error::SqlState;
use tokio_postgres::tls::{MakeTlsConnect, TlsConnect};
use tokio_postgres::types::{ToSql, Type};
use uuid::Uuid;

use crate::records::*;
use crate::{
    BlobReplacement, ImportToken, InstancePolicies, KeyMeta, KeyRing, KeyStore, KeyVersion, Lease,
    ListFilter, StoreError, StoredBlob, UnitRecord,
};
use rotor_util::time::now_ms;

mod apikeys;
mod audit;
mod cluster;
mod migrations;
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

/// Each connection's staging table for [`KeyStore::replace_blobs`], emptied at every commit.
const STAGING: &str = "CREATE TEMPORARY TABLE blob_staging (
    position bigint NOT NULL,
    old bytea NOT NULL,
    new bytea NOT NULL,
    vp bytea NOT NULL
) ON COMMIT DELETE ROWS";

/// How long a caller waits for a free connection, and for a new one to open.
const POOL_WAIT: Duration = Duration::from_secs(30);

/// How many times a bulk rewrite is retried when the database chose it as a deadlock victim
/// (two writers locking the same rows in different orders); each try is all or nothing.
const DEADLOCK_TRIES: u32 = 5;

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

fn is_deadlock(err: &tokio_postgres::Error) -> bool {
    matches!(
        err.code(),
        Some(code) if *code == SqlState::T_R_DEADLOCK_DETECTED || *code == SqlState::T_R_SERIALIZATION_FAILURE
    )
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
                        .batch_execute(STAGING)
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

fn import_token_lock(instance: Uuid) -> String {
    format!("rotor:import-token:{instance}")
}

fn state_code(key: &KeyMeta) -> i16 {
    i16::from(u8::from(key.state))
}

async fn load(tx: &Tx<'_>, instance: Uuid, id: Uuid) -> Result<KeyMeta, StoreError> {
    let row = tx
        .query_opt(
            "SELECT doc FROM keys WHERE instance = $1 AND id = $2 FOR UPDATE",
            &[&instance, &id],
        )
        .await?
        .ok_or_else(|| StoreError::NotFound(format!("key {id} does not exist")))?;
    parse_doc(instance, &id.to_string(), row.get(0))
}

async fn save(tx: &Tx<'_>, key: &KeyMeta) -> Result<(), StoreError> {
    tx.execute(
        "UPDATE keys SET state = $3, extractable = $4, key_ring = $5, doc = $6
         WHERE instance = $1 AND id = $2",
        &[
            &key.instance,
            &key.id,
            &state_code(key),
            &key.extractable,
            &key.key_ring,
            &to_doc(key)?,
        ],
    )
    .await?;
    Ok(())
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

/// Stores `journal` with the master key it closes beside it; the caller holds the journal lock.
async fn write_journal(tx: &Tx<'_>, instance: Uuid, journal: &Journal) -> Result<(), StoreError> {
    let doc = serde_json::to_string(journal)
        .map_err(|err| corrupt(format_args!("rotation journal of instance {instance}"), err))?;
    let closed = journal.closed_source().map(|vp| vp.0.to_vec());
    tx.execute(
        "INSERT INTO rotations (instance, doc, closed_vp) VALUES ($1, $2, $3)
         ON CONFLICT (instance) DO UPDATE SET doc = excluded.doc, closed_vp = excluded.closed_vp",
        &[&instance, &doc, &closed],
    )
    .await?;
    Ok(())
}

async fn read_journal(tx: &Tx<'_>, instance: Uuid) -> Result<Option<Journal>, StoreError> {
    let row = tx
        .query_opt(
            "SELECT doc FROM rotations WHERE instance = $1",
            &[&instance],
        )
        .await?;
    row.map(|row| parse_journal(instance, row.get(0)))
        .transpose()
}

fn to_version(key: Uuid, row: &tokio_postgres::Row) -> Result<KeyVersion, StoreError> {
    let version: i64 = row.get(0);
    let name = format!("version {version} of key {key}");
    Ok(KeyVersion {
        version: u32::try_from(version).map_err(|err| corrupt(&name, err))?,
        id: row.get(1),
        blob: row.get(2),
        vp: vp_of(row.get(3), &name)?,
        created: row.get(4),
    })
}

/// A version as `COPY` writes it, with the VP column taken from the blob.
struct VersionRow<'a> {
    key: &'a KeyMeta,
    version: &'a KeyVersion,
    vp: Vec<u8>,
}

impl KeyStore for PgStore {
    fn create_key(&self, key: &KeyMeta, first: &KeyVersion) -> Result<(), StoreError> {
        self.create_keys(std::slice::from_ref(&(key.clone(), first.clone())))
    }

    fn key(&self, instance: Uuid, id_or_alias: &str) -> Result<Option<KeyMeta>, StoreError> {
        // PostgreSQL text cannot hold NUL, so no alias has one; asking would fail the query.
        if id_or_alias.contains('\0') {
            return Ok(None);
        }
        self.run(async {
            let client = self.client().await?;
            let id = match Uuid::parse_str(id_or_alias) {
                Ok(id) => Some(id),
                Err(_) => client
                    .query_opt(
                        "SELECT key_id FROM aliases WHERE instance = $1 AND alias = $2",
                        &[&instance, &id_or_alias],
                    )
                    .await?
                    .map(|row| row.get(0)),
            };
            let Some(id) = id else {
                return Ok(None);
            };
            let row = client
                .query_opt(
                    "SELECT doc FROM keys WHERE instance = $1 AND id = $2",
                    &[&instance, &id],
                )
                .await?;
            row.map(|row| parse_doc(instance, &id.to_string(), row.get(0)))
                .transpose()
        })
    }

    fn list(&self, instance: Uuid, filter: &ListFilter) -> Result<(Vec<KeyMeta>, u64), StoreError> {
        let states: Vec<i16> = if filter.states.is_empty() {
            vec![1, 2, 3]
        } else {
            filter
                .states
                .iter()
                .map(|s| i16::from(u8::from(*s)))
                .collect()
        };
        let mut args: Vec<&(dyn ToSql + Sync)> = vec![&instance, &states];
        let mut condition = "instance = $1 AND state = ANY($2)".to_owned();
        if let Some(extractable) = &filter.extractable {
            args.push(extractable);
            condition.push_str(&format!(" AND extractable = ${}", args.len()));
        }
        if let Some(ring) = &filter.key_ring {
            args.push(ring);
            condition.push_str(&format!(" AND key_ring = ${}", args.len()));
        }
        let (limit, offset) = (i64::from(filter.limit), i64::from(filter.offset));
        self.run(async {
            let client = self.client().await?;
            let total: i64 = client
                .query_one(
                    &format!("SELECT count(*) FROM keys WHERE {condition}"),
                    &args,
                )
                .await?
                .get(0);
            let mut page_args = args.clone();
            page_args.push(&limit);
            page_args.push(&offset);
            let rows = client
                .query(
                    &format!(
                        "SELECT id, doc FROM keys WHERE {condition} ORDER BY created, id
                         LIMIT ${} OFFSET ${}",
                        args.len() + 1,
                        args.len() + 2
                    ),
                    &page_args,
                )
                .await?;
            let keys = rows
                .iter()
                .map(|row| parse_doc(instance, &row.get::<_, Uuid>(0).to_string(), row.get(1)))
                .collect::<Result<Vec<_>, _>>()?;
            Ok((keys, u64::try_from(total).unwrap_or(0)))
        })
    }

    fn update(
        &self,
        instance: Uuid,
        id: Uuid,
        change: &mut dyn FnMut(&mut KeyMeta) -> Result<(), StoreError>,
    ) -> Result<KeyMeta, StoreError> {
        self.run(async {
            let mut client = self.client().await?;
            let tx = client.transaction().await?;
            let mut key = load(&tx, instance, id).await?;
            change(&mut key)?;
            key.updated = now_ms();
            save(&tx, &key).await?;
            tx.commit().await?;
            Ok(key)
        })
    }

    fn add_version(
        &self,
        key: &KeyMeta,
        expected_newest: u32,
        version: &KeyVersion,
    ) -> Result<(), StoreError> {
        let vp = recorded_vp(
            &version.blob,
            &version.vp,
            format_args!("version {} of key {}", version.version, key.id),
        )?;
        self.run(async {
            let mut client = self.client().await?;
            let tx = client.transaction().await?;
            let mut stored = load(&tx, key.instance, key.id).await?;
            crate::apply_new_version(&mut stored, key, expected_newest)?;
            check_not_retired(&tx, &[(key.instance, version.vp, vp.clone())]).await?;
            tx.execute(
                "INSERT INTO key_versions (instance, key_id, version, id, extractable, vp, created, blob)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
                &[
                    &key.instance,
                    &key.id,
                    &i64::from(version.version),
                    &version.id,
                    &key.extractable,
                    &vp,
                    &version.created,
                    &version.blob,
                ],
            )
            .await?;
            save(&tx, &stored).await?;
            tx.commit().await?;
            Ok(())
        })
    }

    fn versions(&self, instance: Uuid, id: Uuid) -> Result<Vec<KeyVersion>, StoreError> {
        self.run(async {
            let client = self.client().await?;
            let rows = client
                .query(
                    "SELECT version, id, blob, vp, created FROM key_versions
                     WHERE instance = $1 AND key_id = $2 ORDER BY version",
                    &[&instance, &id],
                )
                .await?;
            rows.iter().map(|row| to_version(id, row)).collect()
        })
    }

    fn version(
        &self,
        instance: Uuid,
        id: Uuid,
        version: u32,
    ) -> Result<Option<KeyVersion>, StoreError> {
        self.run(async {
            let client = self.client().await?;
            let statement = client
                .prepare_cached(
                    "SELECT version, id, blob, vp, created FROM key_versions
                     WHERE instance = $1 AND key_id = $2 AND version = $3",
                )
                .await?;
            let row = client
                .query_opt(&statement, &[&instance, &id, &i64::from(version)])
                .await?;
            row.map(|row| to_version(id, &row)).transpose()
        })
    }

    fn purge(&self, instance: Uuid, id: Uuid) -> Result<(), StoreError> {
        self.run(async {
            let mut client = self.client().await?;
            let tx = client.transaction().await?;
            tx.execute(
                "DELETE FROM key_versions WHERE instance = $1 AND key_id = $2",
                &[&instance, &id],
            )
            .await?;
            tx.execute(
                "DELETE FROM aliases WHERE instance = $1 AND key_id = $2",
                &[&instance, &id],
            )
            .await?;
            let removed = tx
                .execute(
                    "DELETE FROM keys WHERE instance = $1 AND id = $2",
                    &[&instance, &id],
                )
                .await?;
            if removed == 0 {
                return Err(StoreError::NotFound(format!("key {id} does not exist")));
            }
            tx.commit().await?;
            Ok(())
        })
    }

    fn add_alias(&self, instance: Uuid, id: Uuid, alias: &str) -> Result<KeyMeta, StoreError> {
        self.run(async {
            let mut client = self.client().await?;
            let tx = client.transaction().await?;
            let mut key = load(&tx, instance, id).await?;
            insert_alias(&tx, instance, id, alias).await?;
            key.aliases.push(alias.to_owned());
            key.updated = now_ms();
            save(&tx, &key).await?;
            tx.commit().await?;
            Ok(key)
        })
    }

    fn remove_alias(&self, instance: Uuid, id: Uuid, alias: &str) -> Result<KeyMeta, StoreError> {
        self.run(async {
            let mut client = self.client().await?;
            let tx = client.transaction().await?;
            let mut key = load(&tx, instance, id).await?;
            let removed = tx
                .execute(
                    "DELETE FROM aliases WHERE instance = $1 AND alias = $2 AND key_id = $3",
                    &[&instance, &alias, &id],
                )
                .await?;
            if removed == 0 {
                return Err(StoreError::NotFound(format!(
                    "key {id} has no alias '{alias}'"
                )));
            }
            key.aliases.retain(|a| a != alias);
            key.updated = now_ms();
            save(&tx, &key).await?;
            tx.commit().await?;
            Ok(key)
        })
    }

    fn key_rings(&self, instance: Uuid) -> Result<Vec<KeyRing>, StoreError> {
        self.run(async {
            let client = self.client().await?;
            let rows = client
                .query(
                    "SELECT id, created, created_by FROM key_rings WHERE instance = $1
                     ORDER BY created, id",
                    &[&instance],
                )
                .await?;
            let mut rings = vec![KeyRing {
                id: "default".to_owned(),
                created: 0,
                created_by: "rotor".to_owned(),
            }];
            rings.extend(rows.iter().map(|row| KeyRing {
                id: row.get(0),
                created: row.get(1),
                created_by: row.get(2),
            }));
            Ok(rings)
        })
    }

    fn create_key_ring(&self, instance: Uuid, ring: &KeyRing) -> Result<(), StoreError> {
        if ring.id == "default" {
            return Err(StoreError::Conflict(
                "key ring 'default' already exists".to_owned(),
            ));
        }
        self.run(async {
            let client = self.client().await?;
            let inserted = client
                .execute(
                    "INSERT INTO key_rings (instance, id, created, created_by) VALUES ($1, $2, $3, $4)
                     ON CONFLICT DO NOTHING",
                    &[&instance, &ring.id, &ring.created, &ring.created_by],
                )
                .await?;
            if inserted == 0 {
                return Err(StoreError::Conflict(format!(
                    "key ring '{}' already exists",
                    ring.id
                )));
            }
            Ok(())
        })
    }

    fn delete_key_ring(&self, instance: Uuid, id: &str) -> Result<(), StoreError> {
        if id == "default" {
            return Err(StoreError::Refused(
                "the default key ring cannot be deleted".to_owned(),
            ));
        }
        self.run(async {
            let mut client = self.client().await?;
            let tx = client.transaction().await?;
            let keys: i64 = tx
                .query_one(
                    "SELECT count(*) FROM keys WHERE instance = $1 AND key_ring = $2",
                    &[&instance, &id],
                )
                .await?
                .get(0);
            if keys > 0 {
                return Err(StoreError::Refused(format!(
                    "key ring '{id}' still holds {keys} key(s); purge them or move them to another key ring first"
                )));
            }
            let removed = tx
                .execute(
                    "DELETE FROM key_rings WHERE instance = $1 AND id = $2",
                    &[&instance, &id],
                )
                .await?;
            if removed == 0 {
                return Err(StoreError::NotFound(format!(
                    "key ring '{id}' does not exist"
                )));
            }
            tx.commit().await?;
            Ok(())
        })
    }

    fn instance_policies(&self, instance: Uuid) -> Result<InstancePolicies, StoreError> {
        self.run(async {
            let client = self.client().await?;
            let row = client
                .query_opt(
                    "SELECT doc FROM instance_policies WHERE instance = $1",
                    &[&instance],
                )
                .await?;
            row.map_or_else(
                || Ok(InstancePolicies::new()),
                |row| parse_instance_policies(instance, row.get(0)),
            )
        })
    }

    fn set_instance_policies(
        &self,
        instance: Uuid,
        policies: &InstancePolicies,
    ) -> Result<(), StoreError> {
        let doc = serde_json::to_string(policies).map_err(|err| {
            corrupt(
                format_args!("instance policies of instance {instance}"),
                err,
            )
        })?;
        self.run(async {
            self.client()
                .await?
                .execute(
                    "INSERT INTO instance_policies (instance, doc) VALUES ($1, $2)
                     ON CONFLICT (instance) DO UPDATE SET doc = excluded.doc",
                    &[&instance, &doc],
                )
                .await?;
            Ok(())
        })
    }

    fn import_token(&self, instance: Uuid) -> Result<Option<ImportToken>, StoreError> {
        self.run(async {
            let client = self.client().await?;
            let row = client
                .query_opt(
                    "SELECT doc, sealed_private_key FROM import_tokens WHERE instance = $1",
                    &[&instance],
                )
                .await?;
            row.map(|row| parse_import_token(instance, row.get(0), row.get(1)))
                .transpose()
        })
    }

    fn update_import_token(
        &self,
        instance: Uuid,
        change: &mut dyn FnMut(&mut Option<ImportToken>) -> Result<(), StoreError>,
    ) -> Result<Option<ImportToken>, StoreError> {
        self.run(async {
            let mut client = self.client().await?;
            let tx = client.transaction().await?;
            lock(&tx, &import_token_lock(instance)).await?;
            let row = tx
                .query_opt(
                    "SELECT doc, sealed_private_key FROM import_tokens WHERE instance = $1",
                    &[&instance],
                )
                .await?;
            let mut token = row
                .map(|row| parse_import_token(instance, row.get(0), row.get(1)))
                .transpose()?;
            change(&mut token)?;
            match &token {
                Some(token) => {
                    tx.execute(
                        "INSERT INTO import_tokens (instance, doc, sealed_private_key)
                         VALUES ($1, $2, $3)
                         ON CONFLICT (instance) DO UPDATE
                         SET doc = excluded.doc, sealed_private_key = excluded.sealed_private_key",
                        &[
                            &instance,
                            &import_token_doc(instance, token)?,
                            &token.sealed_private_key,
                        ],
                    )
                    .await?
                }
                None => {
                    tx.execute(
                        "DELETE FROM import_tokens WHERE instance = $1",
                        &[&instance],
                    )
                    .await?
                }
            };
            tx.commit().await?;
            Ok(token)
        })
    }

    fn count_by_vp(&self, instance: Uuid) -> Result<Vec<(Vp, u64)>, StoreError> {
        self.run(async {
            let client = self.client().await?;
            let rows = client
                .query(
                    "SELECT vp, count(*) FROM key_versions WHERE instance = $1
                     GROUP BY vp ORDER BY vp",
                    &[&instance],
                )
                .await?;
            rows.iter()
                .map(|row| {
                    let vp = vp_of(
                        row.get(0),
                        format_args!("a key version of instance {instance}"),
                    )?;
                    Ok((vp, u64::try_from(row.get::<_, i64>(1)).unwrap_or(0)))
                })
                .collect()
        })
    }

    fn count_under(&self, instance: Uuid, vp: &Vp) -> Result<u64, StoreError> {
        self.run(async {
            let count: i64 = self
                .client()
                .await?
                .query_one(
                    "SELECT count(*) FROM key_versions WHERE instance = $1 AND vp = $2",
                    &[&instance, &vp.0.as_slice()],
                )
                .await?
                .get(0);
            Ok(u64::try_from(count).unwrap_or(0))
        })
    }

    fn create_keys(&self, keys: &[(KeyMeta, KeyVersion)]) -> Result<(), StoreError> {
        if keys.is_empty() {
            return Ok(());
        }
        let rows = keys
            .iter()
            .map(|(key, version)| {
                let vp = recorded_vp(
                    &version.blob,
                    &version.vp,
                    format_args!("version {} of key {}", version.version, key.id),
                )?;
                Ok(VersionRow { key, version, vp })
            })
            .collect::<Result<Vec<_>, StoreError>>()?;
        let docs = keys
            .iter()
            .map(|(key, _)| to_doc(key))
            .collect::<Result<Vec<_>, _>>()?;
        let checked: Vec<(Uuid, Vp, Vec<u8>)> = rows
            .iter()
            .map(|row| (row.key.instance, row.version.vp, row.vp.clone()))
            .collect();
        self.run(async {
            let mut client = self.client().await?;
            let tx = client.transaction().await?;
            check_not_retired(&tx, &checked).await?;
            let sink = tx
                .copy_in(
                    "COPY keys (instance, id, state, extractable, key_ring, created, doc)
                     FROM STDIN BINARY",
                )
                .await?;
            let types = [
                Type::UUID,
                Type::UUID,
                Type::INT2,
                Type::BOOL,
                Type::TEXT,
                Type::INT8,
                Type::TEXT,
            ];
            let mut writer = pin!(BinaryCopyInWriter::new(sink, &types));
            for ((key, _), doc) in keys.iter().zip(&docs) {
                writer
                    .as_mut()
                    .write(&[
                        &key.instance,
                        &key.id,
                        &state_code(key),
                        &key.extractable,
                        &key.key_ring,
                        &key.created,
                        doc,
                    ])
                    .await?;
            }
            writer.finish().await?;
            let sink = tx
                .copy_in(
                    "COPY key_versions (instance, key_id, version, id, extractable, vp, created, blob)
                     FROM STDIN BINARY",
                )
                .await?;
            let types = [
                Type::UUID,
                Type::UUID,
                Type::INT8,
                Type::UUID,
                Type::BOOL,
                Type::BYTEA,
                Type::INT8,
                Type::BYTEA,
            ];
            let mut writer = pin!(BinaryCopyInWriter::new(sink, &types));
            for row in &rows {
                writer
                    .as_mut()
                    .write(&[
                        &row.key.instance,
                        &row.key.id,
                        &i64::from(row.version.version),
                        &row.version.id,
                        &row.key.extractable,
                        &row.vp,
                        &row.version.created,
                        &row.version.blob,
                    ])
                    .await?;
            }
            writer.finish().await?;
            for (key, _) in keys {
                for alias in &key.aliases {
                    insert_alias(&tx, key.instance, key.id, alias).await?;
                }
            }
            tx.commit().await?;
            Ok(())
        })
    }

    fn blobs_under(
        &self,
        instance: Uuid,
        vp: &Vp,
        after: i64,
        until: i64,
        limit: u32,
    ) -> Result<Vec<StoredBlob>, StoreError> {
        self.run(async {
            let mut client = self.client().await?;
            let tx = client.transaction().await?;
            // Walk the position index in order and stop at the limit, whatever the statistics
            // say (right after a bulk load they say nothing, and a bitmap scan sorting half the
            // table would be chosen).
            tx.batch_execute(
                "SET LOCAL enable_bitmapscan = off; SET LOCAL enable_seqscan = off;
                 SET LOCAL enable_sort = off",
            )
            .await?;
            let statement = tx
                .prepare_cached(
                    "SELECT position, key_id, version, extractable, blob FROM key_versions
                     WHERE instance = $1 AND vp = $2 AND position > $3 AND position <= $4
                     ORDER BY position LIMIT $5",
                )
                .await?;
            let rows = tx
                .query(
                    &statement,
                    &[
                        &instance,
                        &vp.0.as_slice(),
                        &after,
                        &until,
                        &i64::from(limit),
                    ],
                )
                .await?;
            rows.iter()
                .map(|row| {
                    let (key, version): (Uuid, i64) = (row.get(1), row.get(2));
                    Ok(StoredBlob {
                        position: row.get(0),
                        key,
                        version: u32::try_from(version).map_err(|err| {
                            corrupt(format_args!("version {version} of key {key}"), err)
                        })?,
                        extractable: row.get(3),
                        blob: row.get(4),
                    })
                })
                .collect()
        })
    }

    fn positions_under(&self, instance: Uuid, vp: &Vp) -> Result<Option<(i64, i64)>, StoreError> {
        self.run(async {
            let row = self
                .client()
                .await?
                .query_one(
                    "SELECT min(position), max(position) FROM key_versions
                     WHERE instance = $1 AND vp = $2",
                    &[&instance, &vp.0.as_slice()],
                )
                .await?;
            let bounds: (Option<i64>, Option<i64>) = (row.get(0), row.get(1));
            Ok(bounds.0.zip(bounds.1))
        })
    }

    fn replace_blobs(&self, replacements: &[BlobReplacement]) -> Result<u64, StoreError> {
        if replacements.is_empty() {
            return Ok(0);
        }
        let vps = replacements
            .iter()
            .map(|item| {
                recorded_vp(
                    &item.new,
                    &item.vp,
                    format_args!("the rewrapped blob at position {}", item.position),
                )
            })
            .collect::<Result<Vec<_>, _>>()?;
        self.run(async {
            let mut client = self.client().await?;
            let mut tries = 0;
            loop {
                tries += 1;
                match rewrite(&mut client, replacements, &vps).await {
                    Err(err) if tries < DEADLOCK_TRIES && is_deadlock(&err) => continue,
                    result => return Ok(result?),
                }
            }
        })
    }

    fn rotation_journal(&self, instance: Uuid) -> Result<Option<Journal>, StoreError> {
        self.run(async {
            let mut client = self.client().await?;
            let tx = client.transaction().await?;
            read_journal(&tx, instance).await
        })
    }

    fn put_rotation_journal(&self, instance: Uuid, journal: &Journal) -> Result<(), StoreError> {
        self.run(async {
            let mut client = self.client().await?;
            let tx = client.transaction().await?;
            lock(&tx, &journal_lock(instance)).await?;
            write_journal(&tx, instance, journal).await?;
            tx.commit().await?;
            Ok(())
        })
    }

    fn update_rotation_journal(
        &self,
        instance: Uuid,
        change: &mut dyn FnMut(&mut Option<Journal>) -> Result<bool, StoreError>,
    ) -> Result<Option<Journal>, StoreError> {
        self.run(async {
            let mut client = self.client().await?;
            let tx = client.transaction().await?;
            lock(&tx, &journal_lock(instance)).await?;
            let mut journal = read_journal(&tx, instance).await?;
            if change(&mut journal)? {
                match &journal {
                    Some(journal) => write_journal(&tx, instance, journal).await?,
                    None => {
                        tx.execute("DELETE FROM rotations WHERE instance = $1", &[&instance])
                            .await?;
                    }
                }
                tx.commit().await?;
            }
            Ok(journal)
        })
    }

    fn take_lease(
        &self,
        name: &str,
        holder: &str,
        now: i64,
        ttl_ms: i64,
    ) -> Result<bool, StoreError> {
        self.run(async {
            let taken = self
                .client()
                .await?
                .execute(
                    "INSERT INTO leases (name, holder, expires) VALUES ($1, $2, $3)
                     ON CONFLICT (name) DO UPDATE SET holder = excluded.holder, expires = excluded.expires
                     WHERE leases.holder = excluded.holder OR leases.expires <= $4",
                    &[&name, &holder, &now.saturating_add(ttl_ms), &now],
                )
                .await?;
            Ok(taken == 1)
        })
    }

    fn release_lease(&self, name: &str, holder: &str) -> Result<(), StoreError> {
        self.run(async {
            self.client()
                .await?
                .execute(
                    "DELETE FROM leases WHERE name = $1 AND holder = $2",
                    &[&name, &holder],
                )
                .await?;
            Ok(())
        })
    }

    fn leases(&self, prefix: &str, now: i64) -> Result<Vec<Lease>, StoreError> {
        self.run(async {
            let rows = self
                .client()
                .await?
                .query(
                    "SELECT name, holder, expires FROM leases
                     WHERE starts_with(name, $1) AND expires > $2 ORDER BY name",
                    &[&prefix, &now],
                )
                .await?;
            Ok(rows
                .iter()
                .map(|row| Lease {
                    name: row.get(0),
                    holder: row.get(1),
                    expires: row.get(2),
                })
                .collect())
        })
    }

    fn unit_record(&self, unit: Uuid) -> Result<Option<UnitRecord>, StoreError> {
        self.run(async {
            let row = self
                .client()
                .await?
                .query_opt(
                    "SELECT identity, last_counter FROM unit_identities WHERE unit = $1",
                    &[&unit],
                )
                .await?;
            row.map(|row| unit_record_of(unit, row.get(0), row.get(1)))
                .transpose()
        })
    }

    fn note_unit(&self, unit: Uuid, record: &UnitRecord) -> Result<(), StoreError> {
        let identity = serde_json::to_string(&record.identity)
            .map_err(|err| corrupt(format_args!("identity of unit {unit}"), err))?;
        let counter = i64::try_from(record.last_counter).unwrap_or(i64::MAX);
        self.run(async {
            self.client()
                .await?
                .execute(
                    "INSERT INTO unit_identities (unit, identity, last_counter) VALUES ($1, $2, $3)
                     ON CONFLICT (unit) DO UPDATE
                     SET last_counter = greatest(unit_identities.last_counter, excluded.last_counter)
                     WHERE unit_identities.identity = excluded.identity",
                    &[&unit, &identity, &counter],
                )
                .await?;
            Ok(())
        })
    }
}

/// One try of [`KeyStore::replace_blobs`]: the batch copied into the staging table, then one
/// compare-and-swap `UPDATE` of every row that still holds the bytes it was read with.
async fn rewrite(
    client: &mut Client,
    replacements: &[BlobReplacement],
    vps: &[Vec<u8>],
) -> Result<u64, tokio_postgres::Error> {
    let tx = client.transaction().await?;
    // The staging table has no statistics; the join must still probe by position rather than
    // scan the whole table.
    tx.batch_execute("SET LOCAL enable_hashjoin = off; SET LOCAL enable_mergejoin = off")
        .await?;
    let sink = tx
        .copy_in("COPY blob_staging (position, old, new, vp) FROM STDIN BINARY")
        .await?;
    let types = [Type::INT8, Type::BYTEA, Type::BYTEA, Type::BYTEA];
    let mut writer = pin!(BinaryCopyInWriter::new(sink, &types));
    for (item, vp) in replacements.iter().zip(vps) {
        writer
            .as_mut()
            .write(&[&item.position, &item.old, &item.new, vp])
            .await?;
    }
    writer.finish().await?;
    let statement = tx
        .prepare_cached(
            "UPDATE key_versions SET blob = s.new, vp = s.vp FROM blob_staging s
             WHERE key_versions.position = s.position AND key_versions.blob = s.old",
        )
        .await?;
    let replaced = tx.execute(&statement, &[]).await?;
    tx.commit().await?;
    Ok(replaced)
}

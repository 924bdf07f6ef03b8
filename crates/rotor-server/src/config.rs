//! The service's configuration file (TOML).
//!
//! ```toml
//! listen = "10.0.0.5:8443"
//! grep11_listen = "10.0.0.5:9876"         # optional: the GREP11 gRPC service, same TLS certificate
//! data_dir = "/var/lib/rotor"             # keystore (keys.db) and token signing key (iam.key)
//! purge_after_seconds = 14400             # a deleted key can be purged after 4 hours
//! trusted_proxies = ["10.0.0.0/24"]       # X-Forwarded-For is believed only from these
//! # insecure_plain_http = true            # no TLS on the API: loopback development only
//!
//! [tls]                                   # the API's certificate (HTTPS)
//! cert = "/etc/rotor/tls/api.pem"
//! key = "/etc/rotor/tls/api.key"
//!
//! [units_tls]                             # how the service reaches units: mutual TLS
//! ca = "/etc/rotor/tls/ca.pem"            # the deployment CA (`rotor pki init`)
//! crl = "/etc/rotor/tls/crl.pem"          # its revocation list, re-read when it changes
//!
//! [store]                                # optional: PostgreSQL shared by several replicas
//! url = "postgres://rotor@db.internal/rotor"   # absent: SQLite in data_dir/keys.db
//! ca_cert = "/etc/rotor/tls/db-ca.pem"    # TLS to the database, verified against this CA
//! max_connections = 16
//!
//! [iam]
//! token_ttl_seconds = 3600
//!
//! [[iam.api_keys]]
//! name = "ops"
//! key_sha256 = "…"                        # SHA-256 of the API key, hex; the key is not stored
//! role = "Manager"                        # Reader, Writer, Manager, Crypto Unit Administrator
//! instances = ["*"]
//!
//! [[instances]]
//! id = "6f1c…"          # UUID of the instance
//! name = "payments"
//! client_cert = "/etc/rotor/tls/service-payments.pem"   # `rotor pki issue service --instance …`
//! client_key = "/etc/rotor/tls/service-payments.key"
//!
//! [[instances.units]]
//! id = "0b3e…"          # printed by `rotor unit serve` on start
//! kind = "operational"  # or "recovery"
//! address = "127.0.0.1:9001"
//! identity = "3a7f…"    # the unit's identity fingerprint, as `rotor unit serve` prints it
//! ```

use std::collections::HashSet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use rotor_crypto::Fingerprint;
use rotor_unit::wire::UnitKind;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::iam::IamConfig;

fn default_purge_after() -> u64 {
    4 * 3600
}

/// The whole configuration.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Where the service listens.
    pub listen: SocketAddr,
    /// Where the GREP11 gRPC service listens (TLS with the API's certificate); absent: not
    /// served.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grep11_listen: Option<SocketAddr>,
    /// Keystore and token signing key live here.
    pub data_dir: PathBuf,
    /// API keys and token lifetime.
    #[serde(default)]
    pub iam: IamConfig,
    /// The API's certificate and key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<ApiTls>,
    /// Serve the API over plain HTTP: allowed only on a loopback address, for development.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub insecure_plain_http: bool,
    /// How the service verifies its units (mutual TLS).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub units_tls: Option<UnitsTls>,
    /// Written by releases before mutual TLS; refused with an explanation.
    #[serde(default, skip_serializing)]
    pub units_token_file: Option<PathBuf>,
    /// How long after deletion a key may be purged.
    #[serde(default = "default_purge_after")]
    pub purge_after_seconds: u64,
    /// The instances it serves.
    #[serde(default)]
    pub instances: Vec<InstanceConfig>,
    /// Reverse proxies in front of the service (CIDR blocks): from these peers the client
    /// address an `allowedIP` instance policy checks is taken from `X-Forwarded-For`.
    #[serde(default)]
    pub trusted_proxies: Vec<crate::kp::Cidr>,
    /// This replica's name, as leases on shared work (and `rotor mk`) show it. Replicas on one
    /// database need distinct names; without one, each start picks `replica-<random>`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replica_name: Option<String>,
    /// Key storage on PostgreSQL; absent: SQLite in `data_dir/keys.db`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub store: Option<StoreConfig>,
}

fn default_max_connections() -> usize {
    rotor_store::PgConfig::DEFAULT_MAX_CONNECTIONS
}

/// Key storage on a PostgreSQL database (several replicas share it).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StoreConfig {
    /// `postgres://user[:password]@host[:port]/database`, or libpq key/value settings.
    pub url: String,
    /// The CA certificates (PEM) that sign the database's certificate: the connection is TLS
    /// when set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_cert: Option<PathBuf>,
    /// Connections per replica.
    #[serde(default = "default_max_connections")]
    pub max_connections: usize,
}

/// One instance: a tenant with its units.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InstanceConfig {
    /// Instance id.
    pub id: Uuid,
    /// A name for people.
    #[serde(default)]
    pub name: String,
    /// Its crypto units.
    pub units: Vec<UnitConfig>,
    /// The service's client certificate for this instance's units (role `service`, this
    /// instance).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_cert: Option<PathBuf>,
    /// Its private key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_key: Option<PathBuf>,
}

/// The API's TLS certificate.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiTls {
    /// Certificate chain (PEM), re-read when the file changes.
    pub cert: PathBuf,
    /// Private key (PEM).
    pub key: PathBuf,
}

/// What the service trusts its units by.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UnitsTls {
    /// The deployment CA that issued the units' certificates.
    pub ca: PathBuf,
    /// Its revocation list (PEM), re-read when the file changes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub crl: Option<PathBuf>,
}

/// Where one unit of an instance runs.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UnitConfig {
    /// The unit's id, as the unit reports it.
    pub id: Uuid,
    /// Operational or recovery.
    pub kind: UnitKind,
    /// Its loopback or private address.
    pub address: SocketAddr,
    /// The unit's identity fingerprint, learned out of band (`rotor unit serve` prints it): a
    /// unit signing its statuses with another identity is refused. Without it, the service
    /// pins the identity it meets first.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub identity: Option<Fingerprint>,
}

/// A configuration that cannot be used.
#[derive(Debug)]
#[non_exhaustive]
pub enum ConfigError {
    /// The file could not be read.
    Read(std::io::Error),
    /// The file is not valid TOML for this schema.
    Parse(String),
    /// The same id appears twice.
    Duplicate(Uuid),
    /// The IAM section is unusable.
    Iam(String),
    /// The TLS settings are missing or contradict each other.
    Tls(String),
}

impl std::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Read(err) => write!(f, "cannot read the configuration: {err}"),
            Self::Parse(err) => write!(f, "invalid configuration: {err}"),
            Self::Duplicate(id) => {
                write!(f, "invalid configuration: id {id} appears more than once")
            }
            Self::Iam(why) | Self::Tls(why) => write!(f, "invalid configuration: {why}"),
        }
    }
}

impl std::error::Error for ConfigError {}

impl Config {
    /// Reads and checks a configuration file.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(ConfigError::Read)?;
        let config: Self =
            toml::from_str(&text).map_err(|err| ConfigError::Parse(err.to_string()))?;
        config.check()?;
        Ok(config)
    }

    /// Rejects duplicate instance or unit ids, and TLS settings that leave a link open.
    pub fn check(&self) -> Result<(), ConfigError> {
        self.iam
            .check()
            .map_err(|err| ConfigError::Iam(err.to_string()))?;
        self.check_tls()?;
        let mut seen = HashSet::new();
        for instance in &self.instances {
            if !seen.insert(instance.id) {
                return Err(ConfigError::Duplicate(instance.id));
            }
            for unit in &instance.units {
                if !seen.insert(unit.id) {
                    return Err(ConfigError::Duplicate(unit.id));
                }
            }
        }
        Ok(())
    }

    fn check_tls(&self) -> Result<(), ConfigError> {
        let tls = |why: &str| Err(ConfigError::Tls(why.to_owned()));
        if self.units_token_file.is_some() {
            return tls(
                "units_token_file is no longer used: the service reaches its units over mutual TLS. \
                 Issue certificates with `rotor pki` and set [units_tls] and each instance's \
                 client_cert and client_key (docs/SECURITY.md, \"Upgrading\")",
            );
        }
        match (&self.tls, self.insecure_plain_http) {
            (Some(_), true) => return tls("[tls] and insecure_plain_http exclude each other"),
            (None, false) => {
                return tls(
                    "the API needs a certificate: set [tls] cert and key (or, for loopback \
                     development only, insecure_plain_http = true)",
                );
            }
            (None, true) if !self.listen.ip().is_loopback() => {
                return tls("insecure_plain_http is allowed only on a loopback address");
            }
            _ => {}
        }
        for instance in &self.instances {
            if instance.units.is_empty() {
                continue;
            }
            if self.units_tls.is_none() {
                return tls("an instance has units: set [units_tls] ca (and crl)");
            }
            if instance.client_cert.is_none() || instance.client_key.is_none() {
                return Err(ConfigError::Tls(format!(
                    "instance {} has units: set its client_cert and client_key (`rotor pki issue service --instance {}`)",
                    instance.id, instance.id
                )));
            }
        }
        Ok(())
    }

    /// The TOML text of this configuration.
    pub fn to_toml(&self) -> String {
        toml::to_string_pretty(self).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str = "listen = \"127.0.0.1:0\"\ndata_dir = \"/var/lib/rotor\"\n";

    #[test]
    fn the_store_table_chooses_postgres_and_its_absence_sqlite() {
        let sqlite: Config = toml::from_str(MINIMAL).unwrap();
        assert_eq!(sqlite.store, None);
        let postgres: Config = toml::from_str(&format!(
            "{MINIMAL}[store]\nurl = \"postgres://rotor@db/rotor\"\nca_cert = \"/etc/rotor/db-ca.pem\"\n"
        ))
        .unwrap();
        assert_eq!(
            postgres.store,
            Some(StoreConfig {
                url: "postgres://rotor@db/rotor".to_owned(),
                ca_cert: Some(PathBuf::from("/etc/rotor/db-ca.pem")),
                max_connections: 16,
            })
        );
        let unknown = toml::from_str::<Config>(&format!(
            "{MINIMAL}[store]\nurl = \"postgres://db\"\npassword = \"x\"\n"
        ));
        assert!(unknown.is_err());
    }
}

//! The service's configuration file (TOML).
//!
//! ```toml
//! listen = "127.0.0.1:8080"
//! data_dir = "/var/lib/rotor"             # keystore (keys.db) and token signing key (iam.key)
//! units_token_file = "/etc/rotor/units.token"   # the token units accept for key operations
//! purge_after_seconds = 14400             # a deleted key can be purged after 4 hours
//! trusted_proxies = ["10.0.0.0/24"]       # X-Forwarded-For is believed only from these
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
    /// Keystore and token signing key live here.
    pub data_dir: PathBuf,
    /// API keys and token lifetime.
    #[serde(default)]
    pub iam: IamConfig,
    /// The token units accept for key operations (units started with the same file).
    #[serde(default)]
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
}

impl std::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Read(err) => write!(f, "cannot read the configuration: {err}"),
            Self::Parse(err) => write!(f, "invalid configuration: {err}"),
            Self::Duplicate(id) => {
                write!(f, "invalid configuration: id {id} appears more than once")
            }
            Self::Iam(why) => write!(f, "invalid configuration: {why}"),
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

    /// Rejects duplicate instance or unit ids.
    pub fn check(&self) -> Result<(), ConfigError> {
        self.iam
            .check()
            .map_err(|err| ConfigError::Iam(err.to_string()))?;
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

    /// The TOML text of this configuration.
    pub fn to_toml(&self) -> String {
        toml::to_string_pretty(self).unwrap_or_default()
    }
}

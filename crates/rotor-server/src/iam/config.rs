//! API keys and roles as the configuration gives them.

use super::*;

/// The IAM part of the service's configuration.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IamConfig {
    /// How long an access token is valid, in seconds (3600 unless set).
    #[serde(default = "default_token_ttl")]
    pub token_ttl_seconds: u64,
    /// The API keys that may request tokens.
    #[serde(default)]
    pub api_keys: Vec<ApiKeyConfig>,
}

fn default_token_ttl() -> u64 {
    DEFAULT_TOKEN_TTL_SECONDS
}

impl Default for IamConfig {
    fn default() -> Self {
        Self {
            token_ttl_seconds: DEFAULT_TOKEN_TTL_SECONDS,
            api_keys: Vec::new(),
        }
    }
}

/// One API key, known by its SHA-256 only.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiKeyConfig {
    /// A name for people; the `sub` of the tokens issued to this key.
    pub name: String,
    /// Hex SHA-256 of the API key's UTF-8 text (as `printf %s "$KEY" | sha256sum` prints it).
    pub key_sha256: String,
    /// What the key may do.
    pub role: Role,
    /// The instance UUIDs the key covers, or `"*"` for all. Required: a key that names none is
    /// refused, so that forgetting the line never grants every instance.
    #[serde(default)]
    pub instances: Vec<String>,
}

/// An IAM service role, named as IBM names them.
///
/// For key routes `Reader` < `Writer` < `Manager`, a higher role permitting everything a lower one
/// does. Admin (crypto unit) routes need `Crypto Unit Administrator`, which `Manager` also
/// permits, as in Hyper Protect Crypto Services.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Role {
    /// Reads key metadata and uses root keys: wrap, unwrap, rewrap.
    Reader,
    /// Also creates, imports, rotates, enables and disables keys, manages aliases, sets keys
    /// for deletion, and reads standard keys' material.
    Writer,
    /// Also deletes, restores and purges keys, sets policies, manages key rings and import
    /// tokens, and runs crypto unit commands.
    Manager,
    /// Runs crypto unit commands only.
    #[serde(rename = "Crypto Unit Administrator")]
    CryptoUnitAdministrator,
}

impl Role {
    /// Whether this role may do what `needed` may.
    pub fn permits(self, needed: Role) -> bool {
        match (self, needed) {
            (have, needed) if have == needed => true,
            (Role::Manager, _) => true,
            (Role::Writer, Role::Reader) => true,
            _ => false,
        }
    }

    /// The role IBM names `name` (as [`Role::name`] gives it).
    pub fn from_name(name: &str) -> Option<Self> {
        [
            Role::Reader,
            Role::Writer,
            Role::Manager,
            Role::CryptoUnitAdministrator,
        ]
        .into_iter()
        .find(|role| role.name() == name)
    }

    /// IBM's name of the role, as it appears in configurations and tokens.
    pub fn name(self) -> &'static str {
        match self {
            Role::Reader => "Reader",
            Role::Writer => "Writer",
            Role::Manager => "Manager",
            Role::CryptoUnitAdministrator => "Crypto Unit Administrator",
        }
    }
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// A fresh random API key (`rotor_` and 32 random bytes in base64url) and the hex SHA-256 to put
/// in the configuration as `key_sha256`.
pub fn new_api_key() -> (String, String) {
    let mut bytes = [0u8; 32];
    fill_random(&mut bytes);
    let key = format!("{API_KEY_PREFIX}{}", URL_SAFE_NO_PAD.encode(bytes));
    bytes.fill(0);
    let hash = hex::encode(sha256(key.as_bytes()));
    (key, hash)
}

fn invalid(message: String) -> IamError {
    IamError::InvalidConfig(message)
}

impl IamConfig {
    /// Rejects a lifetime of 0 or over a day, empty or duplicate names, hashes that are not 64
    /// hex characters, the same hash twice, a key without instances, and instances that are
    /// neither UUIDs nor `"*"`.
    pub fn check(&self) -> Result<(), IamError> {
        if self.token_ttl_seconds == 0 || self.token_ttl_seconds > MAX_TOKEN_TTL_SECONDS {
            return Err(invalid(format!(
                "token_ttl_seconds is {}; it must be between 1 and {MAX_TOKEN_TTL_SECONDS}",
                self.token_ttl_seconds
            )));
        }
        let mut names = HashSet::new();
        let mut hashes = HashSet::new();
        for key in &self.api_keys {
            if key.name.trim().is_empty() {
                return Err(invalid("an API key has an empty name".to_owned()));
            }
            if !names.insert(key.name.as_str()) {
                return Err(invalid(format!(
                    "the API key name '{}' appears more than once",
                    key.name
                )));
            }
            let Some(hash) = decode_sha256_hex(&key.key_sha256) else {
                return Err(invalid(format!(
                    "key_sha256 of API key '{}' is not 64 hex characters (a SHA-256)",
                    key.name
                )));
            };
            if !hashes.insert(hash) {
                return Err(invalid(format!(
                    "API key '{}' has the same key_sha256 as another key",
                    key.name
                )));
            }
            if key.instances.is_empty() {
                return Err(invalid(format!(
                    "API key '{}' names no instances: list the instance ids it covers, or [\"*\"] for all (an omitted list no longer means all)",
                    key.name
                )));
            }
            for instance in &key.instances {
                if instance != "*" && Uuid::parse_str(instance).is_err() {
                    return Err(invalid(format!(
                        "API key '{}' names instance '{instance}', which is neither a UUID nor \"*\"",
                        key.name
                    )));
                }
            }
        }
        Ok(())
    }
}

pub(super) fn decode_sha256_hex(text: &str) -> Option<[u8; 32]> {
    let bytes = hex::decode(text.trim()).ok()?;
    bytes.try_into().ok()
}

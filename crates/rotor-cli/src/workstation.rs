//! The administrator's workstation: everything under `ROTOR_HOME` (default `~/.rotor`).
//!
//! - `settings.json`: the service endpoint and the selected units and signature keys;
//! - `enrollments.json`: each unit's identity fingerprint, enrolled out of band, and the
//!   highest transaction counter seen in its signed statuses (`pins.json` of earlier versions,
//!   identity keys pinned on first contact, reads as enrollments of those keys until this
//!   file is first written);
//! - `sigkeys/N.sigkey`: a signature key, its private half encrypted under a password, or the
//!   record of a key pair that lives on a PKCS#11 token (which token, which object, the public
//!   key);
//! - `parts/N.part`: a master key part, encrypted under a password, or the record of a part
//!   kept on one or two PKCS#11 tokens.
//!
//! Protected files use Argon2id (RFC 9106) to turn the password into a key and AES-256-GCM to
//! seal the secret, with the file's public fields as associated data so they cannot be swapped.

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use rotor_crypto::{Argon2Params, PublicKey, Secret32, SigningKey, Vp, argon2id, fill_random};
use rotor_unit::trust::Enrollment;
use serde::{Deserialize, Serialize};
use uuid::Uuid;
use zeroize::Zeroizing;

const SIGKEY_FORMAT: &str = "rotor-sigkey-v1";
/// The enrolled units.
const ENROLLMENTS: &str = "enrollments.json";
/// Identity keys pinned on first contact by earlier versions.
const OLD_PINS: &str = "pins.json";
const PART_FORMAT: &str = "rotor-part-v1";
const TOKEN_SIGKEY_FORMAT: &str = "rotor-token-sigkey-v1";
const TOKEN_PART_FORMAT: &str = "rotor-token-part-v1";
/// The shortest password accepted for a new file.
pub const MIN_PASSWORD: usize = 8;

/// A workstation file problem. Messages name the file and what to do; never a secret.
#[derive(Debug)]
#[non_exhaustive]
pub enum FileError {
    /// Reading or writing failed.
    Io {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// The file is not a valid file of its kind.
    Corrupt {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        why: String,
    },
    /// The password does not open the file (or the file was tampered with).
    WrongPassword(PathBuf),
    /// No such numbered file.
    NotFound {
        /// "signature key" or "key part".
        kind: &'static str,
        /// The number asked for.
        number: u32,
    },
    /// A password is needed and there is no terminal and no `ROTOR_PASSWORD`.
    NoPassword,
    /// A new password is too short.
    WeakPassword,
}

impl std::fmt::Display for FileError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Io { path, source } => write!(f, "{}: {source}", path.display()),
            Self::Corrupt { path, why } => write!(
                f,
                "{} is not a valid rotor file ({why}); restore it from your backup",
                path.display()
            ),
            Self::WrongPassword(path) => write!(
                f,
                "wrong password for {}, or the file was modified; if the password is right, restore the file from your backup",
                path.display()
            ),
            Self::NotFound { kind, number } => write!(f, "there is no {kind} number {number}"),
            Self::NoPassword => write!(
                f,
                "a password is needed but there is no terminal; set ROTOR_PASSWORD"
            ),
            Self::WeakPassword => {
                write!(f, "passwords must have at least {MIN_PASSWORD} characters")
            }
        }
    }
}

impl std::error::Error for FileError {}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> FileError + '_ {
    move |source| FileError::Io {
        path: path.to_owned(),
        source,
    }
}

fn corrupt(path: &Path, why: impl Into<String>) -> FileError {
    FileError::Corrupt {
        path: path.to_owned(),
        why: why.into(),
    }
}

/// Writes a file with mode 0600, durably and atomically.
fn write_private(path: &Path, bytes: &[u8]) -> Result<(), FileError> {
    rotor_util::fs::write_durable(path, bytes).map_err(io_err(path))
}

/// What a secret is asked for: the page of the console answers by kind and number, the
/// terminal by the prompt.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum SecretFor {
    /// The password of signature key file `number`, which belongs to admin `name`.
    Sigkey {
        /// Its number on this workstation.
        number: u32,
        /// Its admin name.
        name: String,
    },
    /// The password of key part file `number`.
    Part {
        /// Its number on this workstation.
        number: u32,
    },
    /// The user PIN of the PKCS#11 token labelled `label`.
    TokenPin {
        /// The token's label.
        label: String,
    },
}

impl SecretFor {
    /// The prompt shown on a terminal.
    pub fn prompt(&self) -> String {
        match self {
            Self::Sigkey { number, name } => {
                format!("Password for signature key {number} ({name}): ")
            }
            Self::Part { number } => format!("Password for key part {number}: "),
            Self::TokenPin { label } => format!("PIN of token '{label}': "),
        }
    }
}

/// Where the passwords (and PINs) of one command come from.
pub trait Secrets: Send + Sync {
    /// The secret for `what`, or why there is none.
    fn secret(&self, what: &SecretFor) -> Result<Zeroizing<String>, FileError>;
}

/// The command line's source of secrets: `ROTOR_PIN` for token PINs and `ROTOR_PASSWORD` for
/// passwords when set, else a prompt on the terminal.
pub struct TerminalSecrets;

impl Secrets for TerminalSecrets {
    fn secret(&self, what: &SecretFor) -> Result<Zeroizing<String>, FileError> {
        if let SecretFor::TokenPin { .. } = what {
            if let Ok(pin) = std::env::var("ROTOR_PIN") {
                return Ok(Zeroizing::new(pin));
            }
            return rpassword::prompt_password(what.prompt())
                .map(Zeroizing::new)
                .map_err(|_| FileError::NoPassword);
        }
        read_password(&what.prompt())
    }
}

/// Reads a password: `ROTOR_PASSWORD` if set, else a prompt on the terminal.
pub fn read_password(prompt: &str) -> Result<Zeroizing<String>, FileError> {
    if let Ok(password) = std::env::var("ROTOR_PASSWORD") {
        return Ok(Zeroizing::new(password));
    }
    rpassword::prompt_password(prompt)
        .map(Zeroizing::new)
        .map_err(|_| FileError::NoPassword)
}

/// Reads a password for a new file, asking twice on a terminal.
pub fn new_password(what: &str) -> Result<Zeroizing<String>, FileError> {
    let password = read_password(&format!("New password for {what}: "))?;
    if std::env::var_os("ROTOR_PASSWORD").is_none() {
        let again = read_password("Repeat it: ")?;
        if *again != *password {
            return Err(FileError::Corrupt {
                path: PathBuf::from(what),
                why: "the two passwords differ".to_owned(),
            });
        }
    }
    if password.chars().count() < MIN_PASSWORD {
        return Err(FileError::WeakPassword);
    }
    Ok(password)
}

/// A secret sealed under a password.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Protection {
    kdf: String,
    m_cost: u32,
    t_cost: u32,
    p_cost: u32,
    #[serde(with = "hex::serde")]
    salt: Vec<u8>,
    #[serde(with = "hex::serde")]
    sealed: Vec<u8>,
}

/// Argon2id cost for workstation files: OWASP's recommended 19 MiB, 2 passes, 1 lane.
const FILE_KDF: Argon2Params = Argon2Params {
    m_cost: 19 * 1024,
    t_cost: 2,
    p_cost: 1,
};

impl Protection {
    fn seal(password: &str, aad: &[u8], secret: &[u8]) -> Result<Self, FileError> {
        let mut salt = vec![0u8; 16];
        fill_random(&mut salt);
        let key =
            argon2id(password.as_bytes(), &salt, FILE_KDF).map_err(|_| FileError::NoPassword)?;
        Ok(Self {
            kdf: "argon2id".to_owned(),
            m_cost: FILE_KDF.m_cost,
            t_cost: FILE_KDF.t_cost,
            p_cost: FILE_KDF.p_cost,
            sealed: rotor_crypto::seal_aes256gcm(&key, aad, secret),
            salt,
        })
    }

    fn open(
        &self,
        path: &Path,
        password: &str,
        aad: &[u8],
    ) -> Result<Zeroizing<Vec<u8>>, FileError> {
        if self.kdf != "argon2id" {
            return Err(corrupt(
                path,
                format!("unknown key derivation '{}'", self.kdf),
            ));
        }
        let params = Argon2Params {
            m_cost: self.m_cost,
            t_cost: self.t_cost,
            p_cost: self.p_cost,
        };
        let key = argon2id(password.as_bytes(), &self.salt, params)
            .map_err(|_| corrupt(path, "unusable key derivation parameters"))?;
        rotor_crypto::open_aes256gcm(&key, aad, &self.sealed)
            .map_err(|_| FileError::WrongPassword(path.to_owned()))
    }
}

/// A signature key file's public part.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SigkeyFile {
    format: String,
    /// The admin name this key is installed under.
    pub name: String,
    /// The public key.
    pub public_key: PublicKey,
    protection: Protection,
}

impl SigkeyFile {
    fn aad(format: &str, name: &str, public_key: &PublicKey) -> Vec<u8> {
        serde_json::to_vec(&(format, name, public_key)).unwrap_or_default()
    }

    /// Creates a sealed signature key file's contents for `key`.
    pub fn seal(name: &str, key: &SigningKey, password: &str) -> Result<Self, FileError> {
        let public_key = key.public_key();
        let aad = Self::aad(SIGKEY_FORMAT, name, &public_key);
        Ok(Self {
            format: SIGKEY_FORMAT.to_owned(),
            name: name.to_owned(),
            protection: Protection::seal(password, &aad, &key.to_scalar())?,
            public_key,
        })
    }

    /// Reads the public part of a file.
    pub fn read(path: &Path) -> Result<Self, FileError> {
        let text = fs::read(path).map_err(io_err(path))?;
        let file: Self =
            serde_json::from_slice(&text).map_err(|err| corrupt(path, err.to_string()))?;
        if file.format != SIGKEY_FORMAT {
            return Err(corrupt(
                path,
                format!("format '{}' is not {SIGKEY_FORMAT}", file.format),
            ));
        }
        PublicKey::parse(file.public_key.alg, &file.public_key.sec1)
            .map_err(|_| corrupt(path, "bad public key"))?;
        Ok(file)
    }

    /// Decrypts the private key and checks it matches the public one.
    pub fn unlock(&self, path: &Path, password: &str) -> Result<SigningKey, FileError> {
        let aad = Self::aad(&self.format, &self.name, &self.public_key);
        let scalar = self.protection.open(path, password, &aad)?;
        let key = SigningKey::from_scalar(self.public_key.alg, &scalar)
            .map_err(|_| corrupt(path, "bad private key"))?;
        if key.public_key() != self.public_key {
            return Err(corrupt(path, "private and public key do not match"));
        }
        Ok(key)
    }
}

/// An HPCS TKE signature key file (`N.sigkey`): JSON with `keyType` `p521ec`, `ski` (SHA-256 of
/// the uncompressed public point), `seaSalt` and `enckey` (`nonce ‖ AES-256-GCM` of a PEM private
/// key under PBKDF2-HMAC-SHA-256(password, salt, 4096 rounds)).
#[derive(Debug, Deserialize)]
struct HpcsSigkey {
    #[serde(rename = "keyType")]
    key_type: String,
    ski: String,
    #[serde(rename = "seaSalt")]
    salt: String,
    enckey: String,
}

/// PBKDF2 rounds of HPCS TKE signature key files.
const HPCS_SIGKEY_ROUNDS: u32 = 4096;

/// Reads an HPCS TKE signature key file and decrypts its P-521 key with `password`; the key must
/// match the file's SKI.
pub fn import_hpcs_sigkey(path: &Path, password: &str) -> Result<SigningKey, FileError> {
    let text = fs::read(path).map_err(io_err(path))?;
    let file: HpcsSigkey = serde_json::from_slice(&text)
        .map_err(|err| corrupt(path, format!("not an HPCS signature key file: {err}")))?;
    if file.key_type != "p521ec" {
        return Err(corrupt(
            path,
            format!(
                "key type '{}' is not supported; only P-521 ('p521ec') keys are",
                file.key_type
            ),
        ));
    }
    let salt = hex::decode(&file.salt).map_err(|_| corrupt(path, "seaSalt is not hex"))?;
    let sealed = hex::decode(&file.enckey).map_err(|_| corrupt(path, "enckey is not hex"))?;
    let key = rotor_crypto::pbkdf2_sha256(password.as_bytes(), &salt, HPCS_SIGKEY_ROUNDS);
    let pem = rotor_crypto::open_aes256gcm(&key, &[], &sealed)
        .map_err(|_| FileError::WrongPassword(path.to_owned()))?;
    let pem =
        std::str::from_utf8(&pem).map_err(|_| corrupt(path, "the private key is not PEM text"))?;
    let signing = SigningKey::p521_from_pem(pem)
        .map_err(|_| corrupt(path, "the private key is not a P-521 key"))?;
    let ski = hex::encode(signing.public_key().ski());
    if !ski.eq_ignore_ascii_case(file.ski.trim()) {
        return Err(corrupt(
            path,
            "the private key does not match the file's subject key identifier",
        ));
    }
    Ok(signing)
}

/// A key part file's public part.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PartFile {
    format: String,
    /// What the custodian called it.
    pub description: String,
    /// The part's verification pattern.
    pub vp: Vp,
    protection: Protection,
}

impl PartFile {
    fn aad(format: &str, description: &str, vp: &Vp) -> Vec<u8> {
        serde_json::to_vec(&(format, description, vp)).unwrap_or_default()
    }

    /// Creates a sealed key part file's contents.
    pub fn seal(description: &str, part: &Secret32, password: &str) -> Result<Self, FileError> {
        let vp = part.vp();
        let aad = Self::aad(PART_FORMAT, description, &vp);
        Ok(Self {
            format: PART_FORMAT.to_owned(),
            description: description.to_owned(),
            vp,
            protection: Protection::seal(password, &aad, part.expose())?,
        })
    }

    /// Reads the public part of a file.
    pub fn read(path: &Path) -> Result<Self, FileError> {
        let text = fs::read(path).map_err(io_err(path))?;
        let file: Self =
            serde_json::from_slice(&text).map_err(|err| corrupt(path, err.to_string()))?;
        if file.format != PART_FORMAT {
            return Err(corrupt(
                path,
                format!("format '{}' is not {PART_FORMAT}", file.format),
            ));
        }
        Ok(file)
    }

    /// Decrypts the part and checks its VP.
    pub fn unlock(&self, path: &Path, password: &str) -> Result<Secret32, FileError> {
        let aad = Self::aad(&self.format, &self.description, &self.vp);
        let bytes = self.protection.open(path, password, &aad)?;
        let part =
            Secret32::from_slice(&bytes).ok_or_else(|| corrupt(path, "a part must be 32 bytes"))?;
        if !part.vp().matches(&self.vp) {
            return Err(corrupt(
                path,
                "the part does not match its verification pattern",
            ));
        }
        Ok(part)
    }
}

/// Where a key on a PKCS#11 token lives: which token, which object, and the module used.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenPlace {
    /// The labels of the tokens holding it: one, or two for a part kept on a backup token.
    pub tokens: Vec<String>,
    /// The object's `CKA_ID` on each token.
    #[serde(with = "hex::serde")]
    pub key_id: Vec<u8>,
    /// The PKCS#11 module it was created with; `ROTOR_PKCS11_MODULE` overrides it.
    pub module: PathBuf,
}

impl TokenPlace {
    /// A fresh random `CKA_ID` on `tokens` of `module`.
    pub fn new(tokens: Vec<String>, module: PathBuf) -> Self {
        let mut key_id = vec![0u8; 16];
        fill_random(&mut key_id);
        Self {
            tokens,
            key_id,
            module,
        }
    }

    /// The module to load: `ROTOR_PKCS11_MODULE` if set, else the recorded one.
    pub fn module(&self) -> PathBuf {
        std::env::var_os("ROTOR_PKCS11_MODULE").map_or_else(|| self.module.clone(), PathBuf::from)
    }

    /// The tokens, as people read them: `'a'`, or `'a' and 'b'`.
    pub fn describe(&self) -> String {
        let quoted: Vec<String> = self.tokens.iter().map(|t| format!("'{t}'")).collect();
        quoted.join(" and ")
    }
}

/// A signature key pair on a PKCS#11 token: what the workstation records of it.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenSigkeyFile {
    format: String,
    /// The admin name this key is installed under.
    pub name: String,
    /// The public key.
    pub public_key: PublicKey,
    /// Where the key pair is (one token).
    pub place: TokenPlace,
}

impl TokenSigkeyFile {
    /// The record of a key pair made on a token.
    pub fn new(name: &str, public_key: PublicKey, place: TokenPlace) -> Self {
        Self {
            format: TOKEN_SIGKEY_FORMAT.to_owned(),
            name: name.to_owned(),
            public_key,
            place,
        }
    }

    /// The token holding it.
    pub fn token(&self) -> &str {
        self.place.tokens.first().map_or("", String::as_str)
    }
}

/// A signature key of the workstation: a password-protected file or a key pair on a token.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub enum Sigkey {
    /// In a file, under a password.
    File(SigkeyFile),
    /// On a PKCS#11 token, behind its PIN.
    Token(TokenSigkeyFile),
}

/// The `format` field every workstation key file starts with.
#[derive(Deserialize)]
struct Format {
    format: String,
}

fn read_format(path: &Path) -> Result<(Vec<u8>, String), FileError> {
    let bytes = fs::read(path).map_err(io_err(path))?;
    let format: Format =
        serde_json::from_slice(&bytes).map_err(|err| corrupt(path, err.to_string()))?;
    Ok((bytes, format.format))
}

impl Sigkey {
    /// Reads signature key file `path`, of either kind.
    pub fn read(path: &Path) -> Result<Self, FileError> {
        let (bytes, format) = read_format(path)?;
        if format != TOKEN_SIGKEY_FORMAT {
            return SigkeyFile::read(path).map(Self::File);
        }
        let file: TokenSigkeyFile =
            serde_json::from_slice(&bytes).map_err(|err| corrupt(path, err.to_string()))?;
        PublicKey::parse(file.public_key.alg, &file.public_key.sec1)
            .map_err(|_| corrupt(path, "bad public key"))?;
        if file.place.tokens.len() != 1 {
            return Err(corrupt(path, "a signature key is on exactly one token"));
        }
        Ok(Self::Token(file))
    }

    /// The admin name.
    pub fn name(&self) -> &str {
        match self {
            Self::File(file) => &file.name,
            Self::Token(file) => &file.name,
        }
    }

    /// The public key.
    pub fn public_key(&self) -> &PublicKey {
        match self {
            Self::File(file) => &file.public_key,
            Self::Token(file) => &file.public_key,
        }
    }

    /// Where it is kept, as people read it.
    pub fn place(&self) -> String {
        match self {
            Self::File(_) => "file".to_owned(),
            Self::Token(file) => format!("token {}", file.place.describe()),
        }
    }
}

/// A key part on one or two PKCS#11 tokens: what the workstation records of it.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenPartFile {
    format: String,
    /// What the custodian called it.
    pub description: String,
    /// The part's verification pattern.
    pub vp: Vp,
    /// Where the part is.
    pub place: TokenPlace,
}

impl TokenPartFile {
    /// The record of a part written to tokens.
    pub fn new(description: &str, vp: Vp, place: TokenPlace) -> Self {
        Self {
            format: TOKEN_PART_FORMAT.to_owned(),
            description: description.to_owned(),
            vp,
            place,
        }
    }
}

/// A key part of the workstation: a password-protected file or an object on tokens.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub enum Part {
    /// In a file, under a password.
    File(PartFile),
    /// On PKCS#11 tokens, behind their PINs.
    Token(TokenPartFile),
}

impl Part {
    /// Reads key part file `path`, of either kind.
    pub fn read(path: &Path) -> Result<Self, FileError> {
        let (bytes, format) = read_format(path)?;
        if format != TOKEN_PART_FORMAT {
            return PartFile::read(path).map(Self::File);
        }
        let file: TokenPartFile =
            serde_json::from_slice(&bytes).map_err(|err| corrupt(path, err.to_string()))?;
        if !(1..=2).contains(&file.place.tokens.len()) {
            return Err(corrupt(path, "a key part is on one or two tokens"));
        }
        Ok(Self::Token(file))
    }

    /// What the custodian called it.
    pub fn description(&self) -> &str {
        match self {
            Self::File(file) => &file.description,
            Self::Token(file) => &file.description,
        }
    }

    /// Its verification pattern.
    pub fn vp(&self) -> &Vp {
        match self {
            Self::File(file) => &file.vp,
            Self::Token(file) => &file.vp,
        }
    }

    /// Where it is kept, as people read it.
    pub fn place(&self) -> String {
        match self {
            Self::File(_) => "file".to_owned(),
            Self::Token(file) => format!("token {}", file.place.describe()),
        }
    }
}

/// Settings kept between commands.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Settings {
    /// The service endpoint.
    #[serde(default)]
    pub endpoint: Option<String>,
    /// The API key exchanged for tokens (this file is mode 0600).
    #[serde(default)]
    pub api_key: Option<String>,
    /// The CA certificate the service's HTTPS certificate chains to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_cert: Option<PathBuf>,
    /// Selected units.
    #[serde(default)]
    pub selected_units: Vec<Uuid>,
    /// Selected signature keys, by number.
    #[serde(default)]
    pub selected_sigkeys: Vec<u32>,
}

/// The workstation directory.
#[derive(Clone, Debug)]
pub struct Home {
    root: PathBuf,
}

impl Home {
    /// `ROTOR_HOME`, or `~/.rotor`.
    pub fn from_env() -> Result<Self, FileError> {
        let root = match std::env::var_os("ROTOR_HOME") {
            Some(dir) => PathBuf::from(dir),
            None => {
                let home = std::env::var_os("HOME").ok_or_else(|| {
                    corrupt(Path::new("$HOME"), "HOME is not set; set ROTOR_HOME")
                })?;
                PathBuf::from(home).join(".rotor")
            }
        };
        Self::at(root)
    }

    /// A workstation directory at `root`, created with mode 0700 if missing.
    pub fn at(root: PathBuf) -> Result<Self, FileError> {
        for dir in [root.clone(), root.join("sigkeys"), root.join("parts")] {
            fs::create_dir_all(&dir).map_err(io_err(&dir))?;
            fs::set_permissions(&dir, fs::Permissions::from_mode(0o700)).map_err(io_err(&dir))?;
        }
        Ok(Self { root })
    }

    fn read_json<T: for<'de> Deserialize<'de> + Default>(
        &self,
        name: &str,
    ) -> Result<T, FileError> {
        let path = self.root.join(name);
        match fs::read(&path) {
            Ok(bytes) => {
                serde_json::from_slice(&bytes).map_err(|err| corrupt(&path, err.to_string()))
            }
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => Ok(T::default()),
            Err(err) => Err(io_err(&path)(err)),
        }
    }

    fn write_json<T: Serialize>(&self, name: &str, value: &T) -> Result<(), FileError> {
        let bytes = serde_json::to_vec_pretty(value).unwrap_or_default();
        write_private(&self.root.join(name), &bytes)
    }

    /// The settings.
    pub fn settings(&self) -> Result<Settings, FileError> {
        self.read_json("settings.json")
    }

    /// Saves the settings.
    pub fn save_settings(&self, settings: &Settings) -> Result<(), FileError> {
        self.write_json("settings.json", settings)
    }

    /// Per instance, the automatic rotation this workstation started and has not reported
    /// finished: the new master key's VP once known (`null` before). Lets a rerun after a kill
    /// at the very end report the finished rotation instead of starting another.
    pub fn unfinished_rotations(&self) -> Result<BTreeMap<Uuid, Option<Vp>>, FileError> {
        self.read_json("rotations.json")
    }

    /// Saves the unfinished automatic rotations.
    pub fn save_unfinished_rotations(
        &self,
        rotations: &BTreeMap<Uuid, Option<Vp>>,
    ) -> Result<(), FileError> {
        self.write_json("rotations.json", rotations)
    }

    /// The enrolled units. A workstation of an earlier version has `pins.json` instead: each
    /// pinned identity key reads as an enrollment of its fingerprint, no counter seen yet;
    /// the next save writes `enrollments.json`, which is read from then on.
    pub fn enrollments(&self) -> Result<BTreeMap<Uuid, Enrollment>, FileError> {
        let path = self.root.join(ENROLLMENTS);
        match fs::symlink_metadata(&path) {
            Ok(_) => self.read_json(ENROLLMENTS),
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => {
                let pins: BTreeMap<Uuid, PublicKey> = self.read_json(OLD_PINS)?;
                Ok(pins
                    .into_iter()
                    .map(|(unit, key)| (unit, Enrollment::new(key.fingerprint(), 0)))
                    .collect())
            }
            Err(err) => Err(io_err(&path)(err)),
        }
    }

    /// Saves the enrolled units.
    pub fn save_enrollments(
        &self,
        enrollments: &BTreeMap<Uuid, Enrollment>,
    ) -> Result<(), FileError> {
        self.write_json(ENROLLMENTS, enrollments)
    }

    fn numbered(&self, dir: &str, extension: &str) -> Result<Vec<(u32, PathBuf)>, FileError> {
        let path = self.root.join(dir);
        let mut found = Vec::new();
        for entry in fs::read_dir(&path).map_err(io_err(&path))? {
            let entry = entry.map_err(io_err(&path))?;
            let file = entry.path();
            if file.extension().and_then(|e| e.to_str()) != Some(extension) {
                continue;
            }
            if let Some(number) = file
                .file_stem()
                .and_then(|s| s.to_str())
                .and_then(|s| s.parse::<u32>().ok())
            {
                found.push((number, file));
            }
        }
        found.sort();
        Ok(found)
    }

    fn next_path(&self, dir: &str, extension: &str) -> Result<(u32, PathBuf), FileError> {
        let next = match self.numbered(dir, extension)?.last() {
            None => 1,
            Some((last, path)) => last.checked_add(1).ok_or_else(|| {
                corrupt(
                    path,
                    "it has the highest possible number; renumber the files",
                )
            })?,
        };
        Ok((
            next,
            self.root.join(dir).join(format!("{next}.{extension}")),
        ))
    }

    fn numbered_path(
        &self,
        dir: &str,
        extension: &str,
        number: u32,
        kind: &'static str,
    ) -> Result<PathBuf, FileError> {
        let path = self.root.join(dir).join(format!("{number}.{extension}"));
        if path.exists() {
            Ok(path)
        } else {
            Err(FileError::NotFound { kind, number })
        }
    }

    /// Signature key files, by number.
    pub fn sigkeys(&self) -> Result<Vec<(u32, PathBuf)>, FileError> {
        self.numbered("sigkeys", "sigkey")
    }

    /// The path of signature key `number`.
    pub fn sigkey_path(&self, number: u32) -> Result<PathBuf, FileError> {
        self.numbered_path("sigkeys", "sigkey", number, "signature key")
    }

    /// Stores a new signature key file (of either kind); returns its number.
    pub fn add_sigkey(&self, file: &impl Serialize) -> Result<u32, FileError> {
        let (number, path) = self.next_path("sigkeys", "sigkey")?;
        write_private(&path, &serde_json::to_vec_pretty(file).unwrap_or_default())?;
        Ok(number)
    }

    /// Key part files, by number.
    pub fn parts(&self) -> Result<Vec<(u32, PathBuf)>, FileError> {
        self.numbered("parts", "part")
    }

    /// The path of key part `number`.
    pub fn part_path(&self, number: u32) -> Result<PathBuf, FileError> {
        self.numbered_path("parts", "part", number, "key part")
    }

    /// Stores a new key part file (of either kind); returns its number.
    pub fn add_part(&self, file: &impl Serialize) -> Result<u32, FileError> {
        let (number, path) = self.next_path("parts", "part")?;
        write_private(&path, &serde_json::to_vec_pretty(file).unwrap_or_default())?;
        Ok(number)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rotor_crypto::SigAlg;

    #[test]
    fn sigkey_file_round_trips_and_refuses_wrong_password_and_tampering() {
        let key = SigningKey::generate(SigAlg::P256Sha256);
        let file = SigkeyFile::seal("alice", &key, "correct horse").unwrap();
        let path = Path::new("1.sigkey");
        assert_eq!(
            file.unlock(path, "correct horse").unwrap().public_key(),
            key.public_key()
        );
        assert!(matches!(
            file.unlock(path, "wrong horse"),
            Err(FileError::WrongPassword(_))
        ));
        let mut renamed = file;
        renamed.name = "mallory".to_owned();
        assert!(matches!(
            renamed.unlock(path, "correct horse"),
            Err(FileError::WrongPassword(_))
        ));
    }

    #[test]
    fn part_file_round_trips_and_binds_its_vp() {
        let part = Secret32::random();
        let file = PartFile::seal("part one", &part, "correct horse").unwrap();
        let path = Path::new("1.part");
        assert!(file.unlock(path, "correct horse").unwrap().ct_eq(&part));
        let mut other = file;
        other.vp = Secret32::random().vp();
        assert!(other.unlock(path, "correct horse").is_err());
    }

    #[test]
    fn pins_of_an_earlier_version_read_as_enrollments_until_enrollments_are_saved() {
        let dir = tempfile::tempdir().unwrap();
        let home = Home::at(dir.path().join("home")).unwrap();
        let unit = Uuid::new_v4();
        let key = SigningKey::generate(SigAlg::P256Sha256).public_key();
        // The file as earlier versions wrote it: unit id → identity key.
        let old = format!(
            r#"{{"{unit}": {{"alg": "p256", "sec1": "{}"}}}}"#,
            hex::encode(&key.sec1)
        );
        fs::write(dir.path().join("home").join("pins.json"), old).unwrap();
        let enrolled = home.enrollments().unwrap();
        assert_eq!(enrolled[&unit], Enrollment::new(key.fingerprint(), 0));

        let mut advanced = enrolled;
        advanced.insert(unit, Enrollment::new(key.fingerprint(), 7));
        home.save_enrollments(&advanced).unwrap();
        assert_eq!(home.enrollments().unwrap(), advanced);
    }
}

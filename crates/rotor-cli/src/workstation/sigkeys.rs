//! Signature key files: a key under a password, an HPCS TKE signature key file to import, or
//! the record of a key pair on a PKCS#11 token.

use std::fs;
use std::path::Path;

use rotor_crypto::{PublicKey, SigningKey};
use serde::{Deserialize, Serialize};

use super::keyfiles::{Protection, TokenPlace, read_format};
use super::{FileError, corrupt, io_err};

const SIGKEY_FORMAT: &str = "rotor-sigkey-v1";
const TOKEN_SIGKEY_FORMAT: &str = "rotor-token-sigkey-v1";

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

//! What every workstation key file shares: a secret sealed under a password, the place of a
//! key kept on a PKCS#11 token, and the `format` field that tells the kinds apart.

use std::fs;
use std::path::{Path, PathBuf};

use rotor_crypto::{Argon2Params, argon2id, fill_random};
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use super::{FileError, corrupt, io_err};

/// A secret sealed under a password.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct Protection {
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
    pub(super) fn seal(password: &str, aad: &[u8], secret: &[u8]) -> Result<Self, FileError> {
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

    pub(super) fn open(
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

/// The `format` field every workstation key file starts with.
#[derive(Deserialize)]
struct Format {
    format: String,
}

pub(super) fn read_format(path: &Path) -> Result<(Vec<u8>, String), FileError> {
    let bytes = fs::read(path).map_err(io_err(path))?;
    let format: Format =
        serde_json::from_slice(&bytes).map_err(|err| corrupt(path, err.to_string()))?;
    Ok((bytes, format.format))
}

//! A unit's state at rest: sealed with AES-256-GCM under a sealing key kept beside it (both files
//! mode 0600), and replaced atomically and durably, so that a SIGKILL at any instant leaves the
//! old state or the new one, and nothing the unit acknowledged is lost.
//!
//! Files in the unit directory:
//! - `seal.key`: the 32-byte sealing key;
//! - `state.sealed`: `MAGIC ‖ nonce ‖ ciphertext ‖ tag`, with `MAGIC` as associated data;
//! - `lock`: held while a daemon serves the directory, so two cannot.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use rotor_crypto::{Secret32, SigAlg, SigningKey, open_aes256gcm, seal_aes256gcm};
use serde::{Deserialize, Serialize};
use uuid::Uuid;
use zeroize::Zeroizing;

use crate::machine::UnitState;
use crate::wire::UnitKind;

const MAGIC: &[u8] = b"rotor-unit-state-v2\n";
/// The state before it had a rotation lock, its last field: read as unlocked.
const MAGIC_V1: &[u8] = b"rotor-unit-state-v1\n";
const SEAL_KEY: &str = "seal.key";
const STATE: &str = "state.sealed";
const LOCK: &str = "lock";

/// Why a unit directory could not be opened or written.
#[derive(Debug)]
#[non_exhaustive]
pub enum StoreError {
    /// A file system operation failed.
    Io {
        /// What was being done.
        action: &'static str,
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: io::Error,
    },
    /// The state file exists but the sealing key does not.
    MissingSealKey(PathBuf),
    /// The sealing key file is not 32 bytes.
    BadSealKey(PathBuf),
    /// The state file does not open: truncated, corrupt, or sealed under another key.
    Corrupt(PathBuf),
    /// Another process serves this directory.
    Locked(PathBuf),
    /// The directory holds a unit of the other kind.
    KindMismatch {
        /// What the directory holds.
        stored: UnitKind,
        /// What was asked for.
        requested: UnitKind,
    },
}

impl std::fmt::Display for StoreError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Io {
                action,
                path,
                source,
            } => write!(f, "cannot {action} {}: {source}", path.display()),
            Self::MissingSealKey(path) => write!(
                f,
                "{} is missing but the unit state exists; restore it from backup (without it the state cannot be opened)",
                path.display()
            ),
            Self::BadSealKey(path) => write!(f, "{} is not a 32-byte sealing key", path.display()),
            Self::Corrupt(path) => write!(
                f,
                "{} is corrupt, truncated or sealed under another key; restore the unit directory from backup",
                path.display()
            ),
            Self::Locked(path) => write!(f, "{} is in use by another unit process", path.display()),
            Self::KindMismatch { stored, requested } => write!(
                f,
                "this directory holds a {} unit, not a {} one",
                stored.label().to_lowercase(),
                requested.label().to_lowercase()
            ),
        }
    }
}

impl std::error::Error for StoreError {}

/// What is sealed: the unit identity key and the unit state.
#[derive(Serialize, Deserialize)]
struct Sealed {
    identity: Zeroizing<Vec<u8>>,
    state: UnitState,
}

/// An open unit directory, locked for this process.
#[derive(Debug)]
pub struct UnitStore {
    dir: PathBuf,
    seal_key: Secret32,
    _lock: File,
}

fn io_error<'a>(action: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> StoreError + 'a {
    move |source| StoreError::Io {
        action,
        path: path.to_owned(),
        source,
    }
}

/// Replaces `path` durably (see [`rotor_util::fs::write_durable`]): afterwards the file holds
/// either the old or the new bytes.
fn write_atomically(path: &Path, bytes: &[u8]) -> Result<(), StoreError> {
    rotor_util::fs::write_durable(path, bytes).map_err(io_error("replace", path))
}

impl UnitStore {
    /// Opens `dir`, creating a new unit of `kind` if it holds none. Returns the store, the
    /// identity key and the state.
    pub fn open(dir: &Path, kind: UnitKind) -> Result<(Self, SigningKey, UnitState), StoreError> {
        fs::create_dir_all(dir).map_err(io_error("create directory", dir))?;
        fs::set_permissions(dir, fs::Permissions::from_mode(0o700))
            .map_err(io_error("restrict", dir))?;
        let lock_path = dir.join(LOCK);
        let lock = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(&lock_path)
            .map_err(io_error("open", &lock_path))?;
        lock.try_lock()
            .map_err(|_| StoreError::Locked(dir.to_owned()))?;

        let key_path = dir.join(SEAL_KEY);
        let state_path = dir.join(STATE);
        let state_exists = state_path.exists();
        let seal_key = match fs::read(&key_path) {
            Ok(bytes) => {
                let bytes = Zeroizing::new(bytes);
                Secret32::from_slice(&bytes)
                    .ok_or_else(|| StoreError::BadSealKey(key_path.clone()))?
            }
            Err(err) if err.kind() == io::ErrorKind::NotFound => {
                if state_exists {
                    return Err(StoreError::MissingSealKey(key_path));
                }
                let key = Secret32::random();
                write_atomically(&key_path, key.expose())?;
                key
            }
            Err(err) => return Err(io_error("read", &key_path)(err)),
        };
        let store = Self {
            dir: dir.to_owned(),
            seal_key,
            _lock: lock,
        };
        if !state_exists {
            let identity = SigningKey::generate(SigAlg::P256Sha256);
            let state = UnitState::new(Uuid::new_v4(), kind);
            store.save(&identity, &state)?;
            return Ok((store, identity, state));
        }
        let (identity, state) = store.load()?;
        if state.kind != kind {
            return Err(StoreError::KindMismatch {
                stored: state.kind,
                requested: kind,
            });
        }
        Ok((store, identity, state))
    }

    fn load(&self) -> Result<(SigningKey, UnitState), StoreError> {
        let path = self.dir.join(STATE);
        let mut bytes = Vec::new();
        File::open(&path)
            .and_then(|mut f| f.read_to_end(&mut bytes))
            .map_err(io_error("read", &path))?;
        let corrupt = || StoreError::Corrupt(path.clone());
        let plain = match (bytes.strip_prefix(MAGIC), bytes.strip_prefix(MAGIC_V1)) {
            (Some(body), _) => {
                open_aes256gcm(&self.seal_key, MAGIC, body).map_err(|_| corrupt())?
            }
            (None, Some(body)) => {
                let mut plain =
                    open_aes256gcm(&self.seal_key, MAGIC_V1, body).map_err(|_| corrupt())?;
                // Postcard writes fields in order and an enum as its variant index: version 1
                // plus `RotationLock::None` (index 0) is the same state in version 2.
                plain.push(0);
                plain
            }
            (None, None) => return Err(corrupt()),
        };
        let sealed: Sealed = postcard::from_bytes(&plain).map_err(|_| corrupt())?;
        let identity =
            SigningKey::from_scalar(SigAlg::P256Sha256, &sealed.identity).map_err(|_| corrupt())?;
        Ok((identity, sealed.state))
    }

    /// Seals and durably replaces the state. Returns only once it is on disk.
    pub fn save(&self, identity: &SigningKey, state: &UnitState) -> Result<(), StoreError> {
        let sealed = Sealed {
            identity: identity.to_scalar(),
            state: state.clone(),
        };
        let plain = Zeroizing::new(
            postcard::to_stdvec(&sealed).map_err(|_| StoreError::Corrupt(self.dir.join(STATE)))?,
        );
        let mut bytes = MAGIC.to_vec();
        bytes.extend_from_slice(&seal_aes256gcm(&self.seal_key, MAGIC, &plain));
        write_atomically(&self.dir.join(STATE), &bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_state_sealed_before_the_rotation_lock_opens_unlocked() {
        let dir = tempfile::tempdir().unwrap();
        let (store, identity, mut state) = UnitStore::open(dir.path(), UnitKind::Recovery).unwrap();
        state.counter = 42;
        state.current = Some(Secret32::random());
        // Version 1 was version 2 without the last field, the lock (`None` is one zero byte).
        let sealed = Sealed {
            identity: identity.to_scalar(),
            state: state.clone(),
        };
        let mut plain = postcard::to_stdvec(&sealed).unwrap();
        assert_eq!(plain.pop(), Some(0));
        let mut bytes = MAGIC_V1.to_vec();
        bytes.extend_from_slice(&seal_aes256gcm(&store.seal_key, MAGIC_V1, &plain));
        fs::write(dir.path().join(STATE), bytes).unwrap();
        let (_, loaded) = store.load().unwrap();
        assert_eq!(loaded.counter, 42);
        assert_eq!(loaded.rotation, crate::wire::RotationLock::None);
        assert!(loaded.current.unwrap().ct_eq(&state.current.unwrap()));
    }
}

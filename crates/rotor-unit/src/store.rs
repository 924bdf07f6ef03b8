//! A unit's state at rest: sealed with AES-256-GCM under a sealing key that comes from a
//! passphrase, a PKCS#11 token or (development only) a file (see [`crate::seal`]), and replaced
//! atomically and durably, so that a SIGKILL at any instant leaves the old state or the new one,
//! and nothing the unit acknowledged is lost.
//!
//! Files in the unit directory (mode 0700, files 0600):
//! - `state.sealed`: `MAGIC ‖ u32 BE header length ‖ header JSON ‖ nonce ‖ ciphertext ‖ tag`,
//!   everything before the nonce as associated data; the header says how the sealing key is
//!   found ([`SealHeader`]);
//! - `identity.json`: the unit id, kind, identity public key and fingerprint, readable without
//!   the sealing key (`rotor unit id`);
//! - `seal.key`: only in the file mode, the 32-byte sealing key;
//! - `lock`: held while a daemon serves the directory, so two cannot.
//!
//! States written before the header existed (`rotor-unit-state-v1`/`-v2`, sealed under
//! `seal.key`) open in the file mode and are converted by [`UnitStore::reseal`].

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use rotor_crypto::{PublicKey, Secret32, SigAlg, SigningKey, open_aes256gcm, seal_aes256gcm};
use serde::{Deserialize, Serialize};
use uuid::Uuid;
use zeroize::Zeroizing;

use crate::machine::UnitState;
use crate::seal::{self, SealError, SealHeader, SealSource};
use crate::wire::{Fingerprint, UnitKind};

const MAGIC: &[u8] = b"rotor-unit-state-v3\n";
/// The state before its enrollment field and seal header: sealed under `seal.key`.
const MAGIC_V2: &[u8] = b"rotor-unit-state-v2\n";
/// The state before it had a rotation lock: read as unlocked.
const MAGIC_V1: &[u8] = b"rotor-unit-state-v1\n";
/// The longest seal header accepted, in bytes.
const MAX_HEADER: usize = 4096;
const SEAL_KEY: &str = "seal.key";
const STATE: &str = "state.sealed";
const IDENTITY: &str = "identity.json";
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
    /// The state is sealed under `seal.key`, which is missing.
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
    /// The sealing key could not be made or found.
    Seal(SealError),
    /// The directory holds no unit yet.
    NoUnit(PathBuf),
    /// `identity.json` does not parse or does not match its own key.
    BadIdentity(PathBuf),
    /// A reseal may only go to a passphrase or a token.
    ResealToFile,
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
            Self::Seal(err) => err.fmt(f),
            Self::NoUnit(path) => write!(
                f,
                "{} holds no unit yet; 'rotor unit serve' creates one",
                path.display()
            ),
            Self::BadIdentity(path) => write!(
                f,
                "{} is damaged; start the unit once ('rotor unit serve') to write it again from the sealed state",
                path.display()
            ),
            Self::ResealToFile => f.write_str(
                "a unit is resealed to a passphrase or a token; the file mode is for development only",
            ),
        }
    }
}

impl std::error::Error for StoreError {}

impl From<SealError> for StoreError {
    fn from(err: SealError) -> Self {
        Self::Seal(err)
    }
}

/// What is sealed: the unit identity key and the unit state.
#[derive(Serialize, Deserialize)]
struct Sealed {
    identity: Zeroizing<Vec<u8>>,
    state: UnitState,
}

/// What `identity.json` holds: public facts, readable without the sealing key.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UnitIdentity {
    /// The unit's id.
    pub unit: Uuid,
    /// Operational or recovery.
    pub kind: UnitKind,
    /// The identity public key that signs every response.
    pub identity: PublicKey,
    /// SHA-256 of the identity public key.
    pub fingerprint: Fingerprint,
}

impl UnitIdentity {
    /// The identity of a unit.
    pub fn of(state: &UnitState, identity: &SigningKey) -> Self {
        let public = identity.public_key();
        Self {
            unit: state.unit,
            kind: state.kind,
            fingerprint: Fingerprint::of(&public),
            identity: public,
        }
    }

    /// Reads `identity.json` of a unit directory, without the sealing key.
    pub fn read(dir: &Path) -> Result<Self, StoreError> {
        let path = dir.join(IDENTITY);
        let text = match fs::read(&path) {
            Ok(text) => text,
            Err(err) if err.kind() == io::ErrorKind::NotFound => {
                return Err(if dir.join(STATE).exists() {
                    StoreError::BadIdentity(path)
                } else {
                    StoreError::NoUnit(dir.to_owned())
                });
            }
            Err(err) => return Err(io_error("read", &path)(err)),
        };
        let identity: Self =
            serde_json::from_slice(&text).map_err(|_| StoreError::BadIdentity(path.clone()))?;
        if Fingerprint::of(&identity.identity) != identity.fingerprint {
            return Err(StoreError::BadIdentity(path));
        }
        Ok(identity)
    }
}

/// What a unit directory's state file holds, before it is opened.
struct StoredState {
    header: SealHeader,
    /// The bytes authenticated with the body.
    aad: Vec<u8>,
    body: Vec<u8>,
    /// Zero bytes to append to the plaintext: the fields an older format lacks, at their
    /// defaults (postcard writes an enum as its variant index).
    missing_fields: usize,
}

/// An open unit directory, locked for this process.
#[derive(Debug)]
pub struct UnitStore {
    dir: PathBuf,
    seal_key: Secret32,
    header: SealHeader,
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

fn lock_dir(dir: &Path) -> Result<File, StoreError> {
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
    Ok(lock)
}

fn read_seal_key(dir: &Path) -> Result<Secret32, StoreError> {
    let path = dir.join(SEAL_KEY);
    match fs::read(&path) {
        Ok(bytes) => {
            let bytes = Zeroizing::new(bytes);
            Secret32::from_slice(&bytes).ok_or(StoreError::BadSealKey(path))
        }
        Err(err) if err.kind() == io::ErrorKind::NotFound => Err(StoreError::MissingSealKey(path)),
        Err(err) => Err(io_error("read", &path)(err)),
    }
}

/// Overwrites `seal.key`, then removes it and makes the removal durable. Whether the old bytes
/// are gone from the disk depends on the file system; copies and backups keep them.
fn remove_seal_key(dir: &Path) -> Result<bool, StoreError> {
    let path = dir.join(SEAL_KEY);
    if !path.exists() {
        return Ok(false);
    }
    write_atomically(&path, &[0u8; 32])?;
    fs::remove_file(&path).map_err(io_error("remove", &path))?;
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_error("sync", dir))?;
    Ok(true)
}

/// The key label of a unit's sealing key in a token: the unit id and a random suffix, so a
/// reseal never meets a key left by an earlier, interrupted one.
fn token_key_label(unit: Uuid) -> String {
    let mut suffix = [0u8; 4];
    rotor_crypto::fill_random(&mut suffix);
    format!("rotor-unit-seal-{unit}-{}", hex::encode(suffix))
}

fn read_state(path: &Path) -> Result<StoredState, StoreError> {
    let mut bytes = Vec::new();
    File::open(path)
        .and_then(|mut f| f.read_to_end(&mut bytes))
        .map_err(io_error("read", path))?;
    let corrupt = || StoreError::Corrupt(path.to_owned());
    if let Some(rest) = bytes.strip_prefix(MAGIC) {
        let (length, rest) = rest.split_first_chunk::<4>().ok_or_else(corrupt)?;
        let length = usize::try_from(u32::from_be_bytes(*length)).map_err(|_| corrupt())?;
        if length > MAX_HEADER || length > rest.len() {
            return Err(corrupt());
        }
        let header: SealHeader = serde_json::from_slice(&rest[..length]).map_err(|_| corrupt())?;
        let aad_len = MAGIC.len() + 4 + length;
        return Ok(StoredState {
            header,
            aad: bytes[..aad_len].to_vec(),
            body: bytes[aad_len..].to_vec(),
            missing_fields: 0,
        });
    }
    // Version 2 lacks the enrollment; version 1 also the rotation lock before it.
    for (magic, missing_fields) in [(MAGIC_V2, 1), (MAGIC_V1, 2)] {
        if let Some(body) = bytes.strip_prefix(magic) {
            return Ok(StoredState {
                header: SealHeader::File,
                aad: magic.to_vec(),
                body: body.to_vec(),
                missing_fields,
            });
        }
    }
    Err(corrupt())
}

impl UnitStore {
    /// Opens `dir` with the sealing key from `source`, creating a new unit of `kind` if it holds
    /// none. Returns the store, the identity key and the state.
    pub fn open(
        dir: &Path,
        kind: UnitKind,
        source: &SealSource,
    ) -> Result<(Self, SigningKey, UnitState), StoreError> {
        let lock = lock_dir(dir)?;
        let state_path = dir.join(STATE);
        if !state_path.exists() {
            return Self::create(dir, kind, source, lock);
        }
        let (store, stored) = Self::unlock(dir, source, lock)?;
        let (identity, state) = store.open_state(&stored)?;
        if state.kind != kind {
            return Err(StoreError::KindMismatch {
                stored: state.kind,
                requested: kind,
            });
        }
        if stored.missing_fields > 0 {
            // An older format: write it again in this one, with its enrollment restored.
            let state = state.with_enrollment_restored(Secret32::random());
            store.save(&identity, &state)?;
            return Ok((store, identity, state));
        }
        store.write_identity(&UnitIdentity::of(&state, &identity))?;
        Ok((store, identity, state))
    }

    fn create(
        dir: &Path,
        kind: UnitKind,
        source: &SealSource,
        lock: File,
    ) -> Result<(Self, SigningKey, UnitState), StoreError> {
        let unit = Uuid::new_v4();
        // A file key left by a start that died before its first state is reused.
        let (seal_key, header) =
            seal::create(source, &token_key_label(unit), || {
                match read_seal_key(dir) {
                    Err(StoreError::MissingSealKey(path)) => {
                        let key = Secret32::random();
                        write_atomically(&path, key.expose())?;
                        Ok(key)
                    }
                    other => other,
                }
            })?;
        let store = Self {
            dir: dir.to_owned(),
            seal_key,
            header,
            _lock: lock,
        };
        let identity = SigningKey::generate(SigAlg::P256Sha256);
        let state = UnitState::new(unit, kind, Secret32::random());
        store.save(&identity, &state)?;
        Ok((store, identity, state))
    }

    /// Converts the unit in `dir` from the sealing key of `from` to a new one from `to` (a
    /// passphrase or a token) in one atomic replacement of the state file, then removes a
    /// `seal.key` left beside it. Running it again after an interruption finishes the job.
    /// Returns the unit's identity and whether a `seal.key` was removed.
    pub fn reseal(
        dir: &Path,
        from: &SealSource,
        to: &SealSource,
    ) -> Result<(UnitIdentity, bool), StoreError> {
        if matches!(to, SealSource::File) {
            return Err(StoreError::ResealToFile);
        }
        let state_path = dir.join(STATE);
        if !state_path.exists() {
            return Err(StoreError::NoUnit(dir.to_owned()));
        }
        let (old, stored) = Self::unlock(dir, from, lock_dir(dir)?)?;
        let (identity, state) = old.open_state(&stored)?;
        let state = state.with_enrollment_restored(Secret32::random());
        let (seal_key, header) = seal::create(
            to,
            &token_key_label(state.unit),
            || -> Result<_, StoreError> { Err(StoreError::ResealToFile) },
        )?;
        let new = Self {
            seal_key,
            header,
            ..old
        };
        new.save(&identity, &state)?;
        let removed = remove_seal_key(dir)?;
        Ok((UnitIdentity::of(&state, &identity), removed))
    }

    /// The store for the sealed state in `dir`, its key unlocked with `source`, and the state
    /// as it is stored.
    fn unlock(
        dir: &Path,
        source: &SealSource,
        lock: File,
    ) -> Result<(Self, StoredState), StoreError> {
        let stored = read_state(&dir.join(STATE))?;
        let seal_key = seal::unlock(&stored.header, source, || read_seal_key(dir))?;
        let store = Self {
            dir: dir.to_owned(),
            seal_key,
            header: stored.header.clone(),
            _lock: lock,
        };
        Ok((store, stored))
    }

    fn open_state(&self, stored: &StoredState) -> Result<(SigningKey, UnitState), StoreError> {
        let path = self.dir.join(STATE);
        let corrupt = || StoreError::Corrupt(path.clone());
        let mut plain =
            open_aes256gcm(&self.seal_key, &stored.aad, &stored.body).map_err(|_| corrupt())?;
        plain.extend(std::iter::repeat_n(0, stored.missing_fields));
        let sealed: Sealed = postcard::from_bytes(&plain).map_err(|_| corrupt())?;
        let identity =
            SigningKey::from_scalar(SigAlg::P256Sha256, &sealed.identity).map_err(|_| corrupt())?;
        Ok((identity, sealed.state))
    }

    /// How the state in `dir` is sealed, read without any key: what a reseal must unlock.
    pub fn seal_header_of(dir: &Path) -> Result<SealHeader, StoreError> {
        let state_path = dir.join(STATE);
        if !state_path.exists() {
            return Err(StoreError::NoUnit(dir.to_owned()));
        }
        Ok(read_state(&state_path)?.header)
    }

    fn write_identity(&self, identity: &UnitIdentity) -> Result<(), StoreError> {
        let path = self.dir.join(IDENTITY);
        let text = serde_json::to_vec_pretty(identity)
            .map_err(|_| StoreError::BadIdentity(path.clone()))?;
        if fs::read(&path).is_ok_and(|old| old == text) {
            return Ok(());
        }
        write_atomically(&path, &text)
    }

    /// Seals and durably replaces the state. Returns only once it is on disk.
    pub fn save(&self, identity: &SigningKey, state: &UnitState) -> Result<(), StoreError> {
        let path = self.dir.join(STATE);
        let sealed = Sealed {
            identity: identity.to_scalar(),
            state: state.clone(),
        };
        let plain = Zeroizing::new(
            postcard::to_stdvec(&sealed).map_err(|_| StoreError::Corrupt(path.clone()))?,
        );
        let header =
            serde_json::to_vec(&self.header).map_err(|_| StoreError::Corrupt(path.clone()))?;
        let length = u32::try_from(header.len()).map_err(|_| StoreError::Corrupt(path.clone()))?;
        let mut bytes = MAGIC.to_vec();
        bytes.extend_from_slice(&length.to_be_bytes());
        bytes.extend_from_slice(&header);
        let sealed = seal_aes256gcm(&self.seal_key, &bytes, &plain);
        bytes.extend_from_slice(&sealed);
        write_atomically(&path, &bytes)?;
        self.write_identity(&UnitIdentity::of(state, identity))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn passphrase(text: &str) -> SealSource {
        SealSource::Passphrase(Zeroizing::new(text.to_owned()))
    }

    /// Writes `state` the way the code before the seal header did: `seal.key` beside a
    /// version 2 state file.
    fn write_version_2(dir: &Path, identity: &SigningKey, state: &UnitState) {
        let key = Secret32::random();
        fs::write(dir.join(SEAL_KEY), key.expose()).unwrap();
        let mut plain = postcard::to_stdvec(&Sealed {
            identity: identity.to_scalar(),
            state: state.clone(),
        })
        .unwrap();
        // Version 2 was version 3 without the last field, the enrollment.
        let enrollment = postcard::to_stdvec(&state.enrollment).unwrap();
        plain.truncate(plain.len() - enrollment.len());
        let mut bytes = MAGIC_V2.to_vec();
        bytes.extend_from_slice(&seal_aes256gcm(&key, MAGIC_V2, &plain));
        fs::write(dir.join(STATE), bytes).unwrap();
    }

    #[test]
    fn a_passphrase_unit_reopens_with_its_passphrase_only() {
        let dir = tempfile::tempdir().unwrap();
        let (store, identity, mut state) = UnitStore::open(
            dir.path(),
            UnitKind::Recovery,
            &passphrase("correct horse battery"),
        )
        .unwrap();
        state.counter = 7;
        store.save(&identity, &state).unwrap();
        drop(store);
        assert!(!dir.path().join(SEAL_KEY).exists());
        let bytes = fs::read(dir.path().join(STATE)).unwrap();
        assert!(
            !bytes
                .windows(32)
                .any(|w| w == identity.to_scalar().as_slice())
        );

        let wrong = UnitStore::open(
            dir.path(),
            UnitKind::Recovery,
            &passphrase("wrong horse battery"),
        );
        assert!(matches!(
            wrong,
            Err(StoreError::Seal(SealError::WrongPassphrase))
        ));
        let file = UnitStore::open(dir.path(), UnitKind::Recovery, &SealSource::File);
        assert!(matches!(
            file,
            Err(StoreError::Seal(SealError::OtherSource {
                stored: "passphrase",
                given: "file"
            }))
        ));
        let (_, reopened, loaded) = UnitStore::open(
            dir.path(),
            UnitKind::Recovery,
            &passphrase("correct horse battery"),
        )
        .unwrap();
        assert_eq!(loaded.counter, 7);
        assert_eq!(reopened.public_key(), identity.public_key());
        assert_eq!(
            fs::read(dir.path().join(STATE)).unwrap(),
            bytes,
            "opening rewrote the state"
        );
    }

    #[test]
    fn a_copy_of_the_directory_does_not_open_without_the_passphrase() {
        let dir = tempfile::tempdir().unwrap();
        let (store, identity, _) = UnitStore::open(
            dir.path(),
            UnitKind::Operational,
            &passphrase("the real passphrase"),
        )
        .unwrap();
        drop(store);
        let copy = tempfile::tempdir().unwrap();
        for entry in fs::read_dir(dir.path()).unwrap() {
            let entry = entry.unwrap();
            fs::copy(entry.path(), copy.path().join(entry.file_name())).unwrap();
        }
        for guess in [SealSource::File, passphrase("a guessed passphrase")] {
            assert!(UnitStore::open(copy.path(), UnitKind::Operational, &guess).is_err());
        }
        // What it may show without the passphrase: its public identity.
        let shown = UnitIdentity::read(copy.path()).unwrap();
        assert_eq!(shown.fingerprint, Fingerprint::of(&identity.public_key()));
    }

    #[test]
    fn a_short_passphrase_is_refused_and_creates_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let unit_dir = dir.path().join("unit");
        let short = UnitStore::open(&unit_dir, UnitKind::Operational, &passphrase("short"));
        assert!(matches!(
            short,
            Err(StoreError::Seal(SealError::WeakPassphrase))
        ));
        assert!(!unit_dir.join(STATE).exists());
    }

    #[test]
    fn a_version_2_directory_opens_in_file_mode_and_reseals_to_a_passphrase() {
        let dir = tempfile::tempdir().unwrap();
        let identity = SigningKey::generate(SigAlg::P256Sha256);
        let mut state = UnitState::new(Uuid::new_v4(), UnitKind::Operational, Secret32::random());
        state.counter = 42;
        state.current = Some(Secret32::random());
        state.admins.push(crate::machine::Admin {
            name: "alice".to_owned(),
            public_key: SigningKey::generate(SigAlg::P256Sha256).public_key(),
        });
        state.enrollment = crate::machine::Enrollment::Claimed;
        write_version_2(dir.path(), &identity, &state);

        let refused = UnitStore::open(
            dir.path(),
            UnitKind::Operational,
            &passphrase("a new passphrase"),
        );
        assert!(matches!(
            refused,
            Err(StoreError::Seal(SealError::OtherSource {
                stored: "file",
                given: "passphrase"
            }))
        ));
        assert_eq!(
            UnitStore::seal_header_of(dir.path()).unwrap(),
            SealHeader::File
        );
        let (shown, removed) = UnitStore::reseal(
            dir.path(),
            &SealSource::File,
            &passphrase("a new passphrase"),
        )
        .unwrap();
        assert!(removed);
        assert_eq!(shown.unit, state.unit);
        assert!(!dir.path().join(SEAL_KEY).exists());
        assert_eq!(UnitIdentity::read(dir.path()).unwrap(), shown);

        let (_, reopened, loaded) = UnitStore::open(
            dir.path(),
            UnitKind::Operational,
            &passphrase("a new passphrase"),
        )
        .unwrap();
        assert_eq!(reopened.public_key(), identity.public_key());
        assert_eq!(loaded.counter, 42);
        assert!(
            loaded
                .current
                .as_ref()
                .unwrap()
                .ct_eq(state.current.as_ref().unwrap())
        );
        assert_eq!(loaded.admins, state.admins);
        assert!(loaded.enrollment_secret().is_none());
        // A second run finds nothing left to remove and keeps the unit as it is.
        let (again, removed) = UnitStore::reseal(
            dir.path(),
            &passphrase("a new passphrase"),
            &passphrase("another passphrase"),
        )
        .unwrap();
        assert!(!removed);
        assert_eq!(again, shown);
    }

    #[test]
    fn an_old_unit_without_admins_gets_an_enrollment_secret() {
        let dir = tempfile::tempdir().unwrap();
        let identity = SigningKey::generate(SigAlg::P256Sha256);
        let mut state = UnitState::new(Uuid::new_v4(), UnitKind::Recovery, Secret32::random());
        state.enrollment = crate::machine::Enrollment::Claimed;
        write_version_2(dir.path(), &identity, &state);
        let (_, _, loaded) =
            UnitStore::open(dir.path(), UnitKind::Recovery, &SealSource::File).unwrap();
        let secret = loaded.enrollment_secret().unwrap();
        drop(loaded);
        let (_, _, again) =
            UnitStore::open(dir.path(), UnitKind::Recovery, &SealSource::File).unwrap();
        assert_eq!(
            again.enrollment_secret().unwrap().id(),
            secret.id(),
            "not kept"
        );
    }

    #[test]
    fn a_version_1_state_opens_unlocked() {
        let dir = tempfile::tempdir().unwrap();
        let identity = SigningKey::generate(SigAlg::P256Sha256);
        let mut state = UnitState::new(Uuid::new_v4(), UnitKind::Recovery, Secret32::random());
        state.counter = 3;
        let key = Secret32::random();
        fs::write(dir.path().join(SEAL_KEY), key.expose()).unwrap();
        let mut plain = postcard::to_stdvec(&Sealed {
            identity: identity.to_scalar(),
            state: state.clone(),
        })
        .unwrap();
        // Version 1 lacked the rotation lock (`None`, one zero byte) and the enrollment.
        let enrollment = postcard::to_stdvec(&state.enrollment).unwrap();
        plain.truncate(plain.len() - enrollment.len());
        assert_eq!(plain.pop(), Some(0));
        let mut bytes = MAGIC_V1.to_vec();
        bytes.extend_from_slice(&seal_aes256gcm(&key, MAGIC_V1, &plain));
        fs::write(dir.path().join(STATE), bytes).unwrap();
        let (_, _, loaded) =
            UnitStore::open(dir.path(), UnitKind::Recovery, &SealSource::File).unwrap();
        assert_eq!(loaded.counter, 3);
        assert_eq!(loaded.rotation, crate::wire::RotationLock::None);
    }

    #[test]
    fn a_file_unit_is_resealed_to_a_passphrase_but_never_to_a_file() {
        let dir = tempfile::tempdir().unwrap();
        drop(UnitStore::open(dir.path(), UnitKind::Operational, &SealSource::File).unwrap());
        assert!(dir.path().join(SEAL_KEY).exists());
        assert!(matches!(
            UnitStore::reseal(dir.path(), &SealSource::File, &SealSource::File),
            Err(StoreError::ResealToFile)
        ));
        UnitStore::reseal(
            dir.path(),
            &SealSource::File,
            &passphrase("from now on a passphrase"),
        )
        .unwrap();
        assert!(!dir.path().join(SEAL_KEY).exists());
        assert!(UnitStore::open(dir.path(), UnitKind::Operational, &SealSource::File).is_err());
    }
}

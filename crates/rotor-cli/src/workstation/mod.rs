//! The administrator's workstation: everything under `ROTOR_HOME` (default `~/.rotor`).
//!
//! - `settings.json`: the service endpoint and the selected units and signature keys;
//! - `enrollments.json`: each unit's identity fingerprint, enrolled out of band, and the
//!   highest transaction counter seen in its signed statuses (`pins.json` of earlier versions,
//!   identity keys pinned on first contact, reads as enrollments of those keys until this
//!   file is first written);
//! - `sigkeys/N.sigkey`: a signature key, its private half encrypted under a password, or the
//!   record of a key pair that lives on a PKCS#11 token (which token, which object, the public
//!   key) ([`sigkeys`]);
//! - `parts/N.part`: a master key part, encrypted under a password, or the record of a part
//!   kept on one or two PKCS#11 tokens ([`parts`]).
//!
//! Protected files use Argon2id (RFC 9106) to turn the password into a key and AES-256-GCM to
//! seal the secret, with the file's public fields as associated data so they cannot be swapped
//! ([`keyfiles`]). Passwords and PINs come from [`secrets`].

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use rotor_crypto::{PublicKey, Vp};
use rotor_unit::trust::Enrollment;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

mod keyfiles;
mod parts;
mod secrets;
mod sigkeys;
#[cfg(test)]
mod tests;

pub use self::keyfiles::TokenPlace;
pub use self::parts::{Part, PartFile, TokenPartFile};
pub use self::secrets::{
    MIN_PASSWORD, SecretFor, Secrets, TerminalSecrets, new_password, read_password,
};
pub use self::sigkeys::{Sigkey, SigkeyFile, TokenSigkeyFile, import_hpcs_sigkey};

/// The enrolled units.
const ENROLLMENTS: &str = "enrollments.json";
/// Identity keys pinned on first contact by earlier versions.
const OLD_PINS: &str = "pins.json";

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

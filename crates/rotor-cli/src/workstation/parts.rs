//! Master key part files: a part under a password, or the record of a part kept on one or
//! two PKCS#11 tokens.

use std::fs;
use std::path::Path;

use rotor_crypto::{Secret32, Vp};
use serde::{Deserialize, Serialize};

use super::keyfiles::{Protection, TokenPlace, read_format};
use super::{FileError, corrupt, io_err};

const PART_FORMAT: &str = "rotor-part-v1";
const TOKEN_PART_FORMAT: &str = "rotor-token-part-v1";

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

//! The master key registers of a unit, their states (as HPCS names them), and where a unit
//! stands in a rotation. Admin commands, statuses and refusals all speak of them.

use serde::{Deserialize, Serialize};

/// Which master key register.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Register {
    /// The register in use.
    Current,
    /// The register being prepared.
    New,
}

impl std::fmt::Display for Register {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Current => "current",
            Self::New => "new",
        })
    }
}

/// State of the current register.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum CurrentState {
    /// No key.
    Empty,
    /// A key that wraps key storage.
    Valid,
}

/// State of the new register.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum NewState {
    /// No key.
    Empty,
    /// Loaded, not yet committed.
    #[serde(rename = "Full Uncommitted")]
    FullUncommitted,
    /// Committed: ready to be promoted.
    #[serde(rename = "Full Committed")]
    FullCommitted,
}

impl CurrentState {
    /// The HPCS spelling.
    pub fn label(self) -> &'static str {
        match self {
            Self::Empty => "Empty",
            Self::Valid => "Valid",
        }
    }
}

impl NewState {
    /// The HPCS spelling.
    pub fn label(self) -> &'static str {
        match self {
            Self::Empty => "Empty",
            Self::FullUncommitted => "Full Uncommitted",
            Self::FullCommitted => "Full Committed",
        }
    }
}

/// Where a unit stands in a master key rotation of its instance.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RotationLock {
    /// No rotation: the registers follow the ordinary rules.
    #[default]
    None,
    /// Key storage is being rewrapped to the pinned new register; new keys are wrapped under it.
    Reencrypting,
    /// Key storage is entirely under the new register: the unit may only be promoted.
    Reencrypted,
    /// Admins aborted the rotation: key storage is being rewrapped back to the current register.
    Aborting,
}

impl RotationLock {
    /// For messages.
    pub fn label(self) -> &'static str {
        match self {
            Self::None => "none",
            Self::Reencrypting => "reencrypting",
            Self::Reencrypted => "reencrypted",
            Self::Aborting => "aborting",
        }
    }
}

//! The one error of every operation: a PKCS #11 return value and a sentence for the caller.

use serde::{Deserialize, Serialize};

use crate::consts::ckr;

/// Why an operation did not succeed: the `CK_RV` a GREP11 client reads from the error detail
/// and a human-readable detail that never holds key material.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Ep11Error {
    /// The PKCS #11 return value (`CKR_*`).
    pub code: u64,
    /// What went wrong, for the caller.
    pub detail: String,
}

impl Ep11Error {
    /// An error with this return value.
    pub fn new(code: u64, detail: impl Into<String>) -> Self {
        Self {
            code,
            detail: detail.into(),
        }
    }

    /// A blob or state that does not open: deliberately without detail (tampered, from another
    /// instance, truncated).
    pub fn blob() -> Self {
        Self::new(
            ckr::IBM_BLOB_ERROR,
            "the blob does not authenticate: it is damaged or belongs to another instance",
        )
    }
}

impl std::fmt::Display for Ep11Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} (CK_RV 0x{:X})", self.detail, self.code)
    }
}

impl std::error::Error for Ep11Error {}

/// The result of every operation.
pub type Ep11Result<T> = Result<T, Ep11Error>;

//! Enterprise PKCS #11 (EP11) as a crypto unit runs it for GREP11 applications: PKCS #11
//! numbers ([`consts`]), templates and their rules ([`template`]), key objects and their sealed
//! blobs ([`object`]), the mechanism table ([`mechanisms`]), the primitives ([`crypto`]) and
//! every call ([`ops`]). Pure: the unit supplies the master keys through [`object::Sealer`].

#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod consts;
pub mod crypto;
pub mod error;
pub mod mechanisms;
pub mod object;
pub mod ops;
pub mod template;

pub use error::{Ep11Error, Ep11Result};
pub use object::{Sealed, Sealer};
pub use ops::{Call, Mechanism, Operation, Reply, execute};

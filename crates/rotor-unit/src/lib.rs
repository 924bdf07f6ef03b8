//! A rotor crypto unit: the only place where master keys and key parts exist in plaintext.
//!
//! - [`machine`]: registers, admins and quorum rules as a pure state machine;
//! - [`wire`]: commands, signatures and signed responses;
//! - [`keys`]: root key blobs and the DEKs they wrap;
//! - [`store`]: the sealed, atomic, durable state file;
//! - [`daemon`]: the HTTP server (`rotor unit serve`);
//! - [`client`]: verified requests to a unit, directly or through the service.

#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod client;
pub mod daemon;
pub mod error;
pub mod keyapi;
pub mod keys;
pub mod machine;
pub mod store;
pub mod wire;

pub use error::UnitError;

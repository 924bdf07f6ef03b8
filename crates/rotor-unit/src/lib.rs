//! A rotor crypto unit: the only place where master keys and key parts exist in plaintext.
//!
//! - [`machine`]: registers, admins and quorum rules as a pure state machine;
//! - [`keys`]: root key blobs and the DEKs they wrap;
//! - [`store`]: the sealed, atomic, durable state file;
//! - [`audit`]: the append-only, signed chain of every admin command (`audit.log`);
//! - [`seal`]: where its sealing key comes from (passphrase, PKCS#11 token, or a file);
//! - [`daemon`]: the HTTP server (`rotor unit serve`);
//! - [`keyapi`]: the key operations, as pure functions of the master keys;
//! - [`grep11`]: GREP11 key blobs and states sealed under the master keys;
//! - [`client`]: verified admin requests to a unit, directly or through the service;
//! - [`backend`]: the service's link to a unit's key operations, over HTTP or in process;
//! - [`trust`]: a unit's enrolled identity and the highest counter seen from it.
//!
//! What crosses the wire is defined in `rotor-proto` and re-exported here as [`wire`] and
//! [`error`].

#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod audit;
pub mod backend;
pub mod client;
pub mod daemon;
pub mod grep11;
pub mod keyapi;
pub mod keys;
pub mod machine;
pub mod seal;
pub mod store;
pub mod trust;

pub use rotor_proto::{UnitError, error, wire};

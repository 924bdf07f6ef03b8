//! What crosses the wire between the workstation, the service and a crypto unit, defined once
//! for every side:
//!
//! - [`audit`]: the tamper-evident audit chains (admin commands, Key Protect events);
//! - [`wire`]: admin commands, their signatures and the unit's signed responses;
//! - [`registers`]: the master key registers, their states and the rotation lock;
//! - [`error`]: every way a unit refuses a request, with its stable code, and the service's own
//!   refusal codes;
//! - [`keyops`]: the key operations the service calls, each tied to its reply by [`UnitOp`];
//! - [`binding`]: what a wrapped blob is bound to;
//! - [`rotation`]: the master key rotation journal and the service's views of a rotation and
//!   of key storage.

#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod audit;
pub mod binding;
pub mod error;
pub mod keyops;
pub mod registers;
pub mod rotation;
pub mod wire;

pub use error::{ErrorCode, UnitError};
pub use keyops::UnitOp;

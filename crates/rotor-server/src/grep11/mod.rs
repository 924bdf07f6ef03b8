//! The GREP11 service (`grep11.Crypto`, docs/GREP11.md): IBM's Enterprise PKCS #11 over gRPC,
//! wire-compatible with its published protobuf. Each call is authenticated from its
//! `authorization: Bearer` metadata, converted to a [`rotor_ep11::Call`] and sent through the
//! unit pool to one of the instance's units, which opens the blobs and runs it: the service
//! never sees key material and keeps nothing between calls.

mod convert;
mod service;

pub use service::Grep11Service;

/// The code generated from `proto/grep11.proto`.
#[allow(
    missing_docs,
    unreachable_pub,
    unused_qualifications,
    clippy::all,
    clippy::pedantic
)]
pub mod pb {
    tonic::include_proto!("grep11");
}

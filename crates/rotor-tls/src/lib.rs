//! Transport security for every rotor link (rustls): the deployment's private certificate
//! authority ([`pki`]), the rustls configurations servers and clients are built with
//! ([`config`]) from PEM files ([`pem`]), and the accept loop that hands each request its peer's certificate
//! ([`serve`]).

#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod config;
pub mod pem;
pub mod pki;
pub mod serve;

pub use config::{ClientAuth, ClientTls, ExpectedPeer};
pub use pki::Role;
pub use serve::{PeerCertificate, Transport};

/// Why a certificate, key or TLS configuration could not be used.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum TlsError {
    /// A file could not be read or written.
    Io(String),
    /// A certificate, key or revocation list is unusable.
    Certificate(String),
}

impl std::fmt::Display for TlsError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Io(why) | Self::Certificate(why) => f.write_str(why),
        }
    }
}

impl std::error::Error for TlsError {}

#[cfg(test)]
mod tests;

//! Certificates, private keys and revocation lists read from PEM files (RFC 7468).

use std::path::Path;

use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, CertificateRevocationListDer, PrivateKeyDer};

use crate::TlsError;

/// Every certificate in a PEM file.
pub fn load_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs = CertificateDer::pem_file_iter(path)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .map_err(|err| {
            TlsError::Io(format!(
                "cannot read certificates from {}: {err}",
                path.display()
            ))
        })?;
    if certs.is_empty() {
        return Err(TlsError::Certificate(format!(
            "{} holds no certificate",
            path.display()
        )));
    }
    Ok(certs)
}

/// The private key in a PEM file.
pub fn load_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    PrivateKeyDer::from_pem_file(path).map_err(|_| {
        TlsError::Certificate(format!("{} holds no usable private key", path.display()))
    })
}

/// Every revocation list in a PEM file.
pub fn load_crls(path: &Path) -> Result<Vec<CertificateRevocationListDer<'static>>, TlsError> {
    CertificateRevocationListDer::pem_file_iter(path)
        .and_then(|crls| crls.collect::<Result<Vec<_>, _>>())
        .map_err(|err| {
            TlsError::Io(format!(
                "cannot read the revocation list {}: {err}",
                path.display()
            ))
        })
}

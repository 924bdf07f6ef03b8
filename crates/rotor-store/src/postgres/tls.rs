//! TLS to the database: rustls, trusting only the CA certificates of the configured PEM file.

use std::path::Path;
use std::sync::Arc;

use rustls::RootCertStore;
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject as _;
use tokio_postgres_rustls::MakeRustlsConnect;

use crate::StoreError;

/// A connector that verifies the server's certificate against the CAs in `ca_cert`.
pub(super) fn connector(ca_cert: &Path) -> Result<MakeRustlsConnect, StoreError> {
    let unusable = |why: String| {
        StoreError::Database(format!(
            "the database CA certificate {} is unusable: {why}",
            ca_cert.display()
        ))
    };
    let certs = CertificateDer::pem_file_iter(ca_cert)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .map_err(|err| unusable(err.to_string()))?;
    if certs.is_empty() {
        return Err(unusable("it holds no certificate".to_owned()));
    }
    let mut roots = RootCertStore::empty();
    for cert in certs {
        roots.add(cert).map_err(|err| unusable(err.to_string()))?;
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|err| unusable(err.to_string()))?
    .with_root_certificates(roots)
    .with_no_client_auth();
    Ok(MakeRustlsConnect::new(config))
}

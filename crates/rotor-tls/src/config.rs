//! rustls configurations built from PEM files: what a server presents and whom it admits, and
//! what a client trusts. Certificates and revocation lists are re-read when their files change,
//! so `rotor pki renew` and `rotor pki revoke` take effect on the next connection without a
//! restart.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;
use rustls::{DigitallySignedStruct, DistinguishedName, RootCertStore, SignatureScheme};

use crate::TlsError;
use crate::pem::{load_certs, load_crls, load_key};
use crate::pki::Role;

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

fn roots(ca_bundle: &Path) -> Result<Arc<RootCertStore>, TlsError> {
    let mut roots = RootCertStore::empty();
    for cert in load_certs(ca_bundle)? {
        roots
            .add(cert)
            .map_err(|err| TlsError::Certificate(format!("{}: {err}", ca_bundle.display())))?;
    }
    Ok(Arc::new(roots))
}

fn modified(paths: &[PathBuf]) -> Vec<Option<SystemTime>> {
    paths
        .iter()
        .map(|path| std::fs::metadata(path).and_then(|m| m.modified()).ok())
        .collect()
}

/// A value built from files, rebuilt when one of them changes. A rebuild that fails keeps the
/// previous value and says why in the log: a half-copied certificate must not stop a running
/// unit, and a revocation list is only ever replaced by a newer one.
struct Reloading<T> {
    paths: Vec<PathBuf>,
    build: Box<dyn Fn() -> Result<T, TlsError> + Send + Sync>,
    current: Mutex<(Vec<Option<SystemTime>>, T)>,
}

impl<T: Clone> Reloading<T> {
    fn new(
        paths: Vec<PathBuf>,
        build: impl Fn() -> Result<T, TlsError> + Send + Sync + 'static,
    ) -> Result<Self, TlsError> {
        let stamps = modified(&paths);
        let value = build()?;
        Ok(Self {
            paths,
            build: Box::new(build),
            current: Mutex::new((stamps, value)),
        })
    }

    fn get(&self) -> T {
        let stamps = modified(&self.paths);
        let mut current = match self.current.lock() {
            Ok(guard) => guard,
            Err(poisoned) => poisoned.into_inner(),
        };
        if current.0 != stamps {
            match (self.build)() {
                Ok(value) => {
                    tracing::info!(files = ?self.paths, "TLS files changed; reloaded");
                    *current = (stamps, value);
                }
                Err(err) => {
                    tracing::error!(error = %err, "TLS files changed but do not load; keeping the previous ones");
                    current.0 = stamps;
                }
            }
        }
        current.1.clone()
    }
}

/// The certificate a server presents, re-read when its files change.
struct ReloadingCert(Reloading<Arc<CertifiedKey>>);

impl std::fmt::Debug for ReloadingCert {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReloadingCert")
            .field("files", &self.0.paths)
            .finish()
    }
}

impl ResolvesServerCert for ReloadingCert {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.0.get())
    }
}

fn certified_key(cert: &Path, key: &Path) -> Result<Arc<CertifiedKey>, TlsError> {
    let chain = load_certs(cert)?;
    let key = load_key(key)?;
    let certified = CertifiedKey::from_der(chain, key, &provider())
        .map_err(|err| TlsError::Certificate(format!("{}: {err}", cert.display())))?;
    Ok(Arc::new(certified))
}

/// Which clients a server admits: those with a certificate from `ca`, not revoked by `crl`.
#[derive(Clone, Debug)]
pub struct ClientAuth {
    /// The CA bundle client certificates must chain to.
    pub ca: PathBuf,
    /// The revocation list, when there is one.
    pub crl: Option<PathBuf>,
}

/// A client certificate verifier that re-reads the CA bundle and CRL when they change.
struct ReloadingClientVerifier(Reloading<Arc<dyn ClientCertVerifier>>);

impl std::fmt::Debug for ReloadingClientVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReloadingClientVerifier")
            .field("files", &self.0.paths)
            .finish()
    }
}

impl ClientCertVerifier for ReloadingClientVerifier {
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        // The hint is optional; clients of a private PKI hold exactly one certificate.
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        self.0
            .get()
            .verify_client_cert(end_entity, intermediates, now)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.get().verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.get().verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.get().supported_verify_schemes()
    }
}

fn client_verifier(auth: &ClientAuth) -> Result<Arc<dyn ClientCertVerifier>, TlsError> {
    let mut builder = WebPkiClientVerifier::builder_with_provider(roots(&auth.ca)?, provider());
    if let Some(crl) = &auth.crl {
        builder = builder.with_crls(load_crls(crl)?);
    }
    builder
        .build()
        .map_err(|err| TlsError::Certificate(format!("client verification: {err}")))
}

/// A server's TLS: its certificate and key, and the clients it demands (none for the service
/// API, whose callers authenticate with IAM tokens; the service of the instance for a unit).
pub fn server_config(
    cert: &Path,
    key: &Path,
    client_auth: Option<&ClientAuth>,
) -> Result<Arc<rustls::ServerConfig>, TlsError> {
    let (cert, key) = (cert.to_owned(), key.to_owned());
    let resolver = ReloadingCert(Reloading::new(
        vec![cert.clone(), key.clone()],
        move || certified_key(&cert, &key),
    )?);
    let builder = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|err| TlsError::Certificate(err.to_string()))?;
    let builder = match client_auth {
        None => builder.with_no_client_auth(),
        Some(auth) => {
            let auth = auth.clone();
            let mut paths = vec![auth.ca.clone()];
            paths.extend(auth.crl.clone());
            let verifier =
                ReloadingClientVerifier(Reloading::new(paths, move || client_verifier(&auth))?);
            builder.with_client_cert_verifier(Arc::new(verifier))
        }
    };
    let mut config = builder.with_cert_resolver(Arc::new(resolver));
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// Which server a client accepts once the chain verified.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ExpectedPeer {
    /// Any server the CA bundle vouches for (the service API, as the CLI sees it).
    Any,
    /// A unit of this instance, and this unit when its certificate names one.
    UnitOf {
        /// The instance.
        instance: uuid::Uuid,
        /// The unit the configuration expects at this address.
        unit: uuid::Uuid,
    },
}

impl ExpectedPeer {
    fn admits(&self, role: &Role) -> bool {
        match (self, role) {
            (Self::Any, _) => true,
            (
                Self::UnitOf { instance, unit },
                Role::Unit {
                    instance: theirs,
                    unit: their_unit,
                },
            ) => instance == theirs && their_unit.is_none_or(|id| id == *unit),
            (Self::UnitOf { .. }, _) => false,
        }
    }
}

/// Verifies the server's chain (re-reading the CA bundle and CRL when they change), then the
/// role its certificate states.
struct PeerVerifier {
    inner: Reloading<Arc<WebPkiServerVerifier>>,
    expected: ExpectedPeer,
}

impl std::fmt::Debug for PeerVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PeerVerifier")
            .field("files", &self.inner.paths)
            .field("expected", &self.expected)
            .finish()
    }
}

impl ServerCertVerifier for PeerVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let verified = self.inner.get().verify_server_cert(
            end_entity,
            intermediates,
            server_name,
            ocsp_response,
            now,
        )?;
        if self.expected == ExpectedPeer::Any {
            return Ok(verified);
        }
        match Role::of_certificate(end_entity) {
            Ok(role) if self.expected.admits(&role) => Ok(verified),
            Ok(role) => Err(rustls::Error::General(format!(
                "the peer's certificate is for {role}, not the one expected here"
            ))),
            Err(err) => Err(rustls::Error::General(err.to_string())),
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.get().verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.get().verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.get().supported_verify_schemes()
    }
}

/// What a client trusts and presents.
#[derive(Clone, Debug)]
pub struct ClientTls {
    /// The CA bundle the server's certificate must chain to.
    pub ca: PathBuf,
    /// The revocation list, when there is one.
    pub crl: Option<PathBuf>,
    /// The client's own certificate and key (mutual TLS), when it has one.
    pub identity: Option<(PathBuf, PathBuf)>,
    /// Which server it accepts.
    pub expected: ExpectedPeer,
}

impl ClientTls {
    /// A client with no certificate of its own that accepts any server certificate issued by
    /// the CA bundle `ca` (a user's or a load generator's view of the service).
    pub fn trusting(ca: impl Into<PathBuf>) -> Self {
        Self {
            ca: ca.into(),
            crl: None,
            identity: None,
            expected: ExpectedPeer::Any,
        }
    }
}

/// A client's TLS configuration.
pub fn client_config(tls: &ClientTls) -> Result<rustls::ClientConfig, TlsError> {
    let (ca, crl) = (tls.ca.clone(), tls.crl.clone());
    let mut paths = vec![ca.clone()];
    paths.extend(crl.clone());
    let inner = Reloading::new(paths, move || {
        let mut builder = WebPkiServerVerifier::builder_with_provider(roots(&ca)?, provider());
        if let Some(crl) = &crl {
            builder = builder.with_crls(load_crls(crl)?);
        }
        builder
            .build()
            .map_err(|err| TlsError::Certificate(format!("server verification: {err}")))
    })?;
    let verifier = Arc::new(PeerVerifier {
        inner,
        expected: tls.expected.clone(),
    });
    let builder = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|err| TlsError::Certificate(err.to_string()))?
        .dangerous()
        .with_custom_certificate_verifier(verifier);
    match &tls.identity {
        None => Ok(builder.with_no_client_auth()),
        Some((cert, key)) => builder
            .with_client_auth_cert(load_certs(cert)?, load_key(key)?)
            .map_err(|err| TlsError::Certificate(format!("{}: {err}", cert.display()))),
    }
}

/// An HTTP client with `tls`.
pub fn http_client(tls: &ClientTls) -> Result<reqwest::ClientBuilder, TlsError> {
    Ok(reqwest::Client::builder().use_preconfigured_tls(client_config(tls)?))
}

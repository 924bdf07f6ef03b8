//! The accept loop the service and the units share: TCP, then the TLS handshake (bounded in
//! time), then HTTP/1.1 or HTTP/2 on the connection, with the request headers, every request and
//! the number of requests at once bounded ([`Limits`]). Every request carries the peer's
//! address ([`ConnectInfo`]) and, under mutual TLS, the certificate the peer presented
//! ([`PeerCertificate`]), which `axum::serve` cannot hand to handlers.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::ConnectInfo;
use axum::http::StatusCode;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use rustls::pki_types::CertificateDer;
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tower::ServiceExt as _;

/// How long a client may take to finish the TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long the loop waits after an accept error (out of file descriptors, say) before trying
/// again, so a full table does not spin the CPU.
const ACCEPT_ERROR_PAUSE: Duration = Duration::from_millis(200);

/// How long a client may take to send a request's headers.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(30);

/// What one server takes on at once, and for how long.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// Requests handled at once; more wait their turn (within the timeout).
    pub concurrent_requests: usize,
    /// How long a request may take, waiting included, before it is answered 408.
    pub request_timeout: Duration,
}

impl Limits {
    /// The service: many clients; an import token (RSA-4096 generated in a unit) takes seconds.
    pub const SERVICE: Self = Self {
        concurrent_requests: 1024,
        request_timeout: Duration::from_secs(60),
    };
    /// A unit: one service, whose pool keeps connections open; rewrap batches take a while.
    pub const UNIT: Self = Self {
        concurrent_requests: 256,
        request_timeout: Duration::from_secs(60),
    };
}

/// The end-entity certificate a client presented (its chain already verified).
#[derive(Clone, Debug)]
pub struct PeerCertificate(pub Arc<CertificateDer<'static>>);

/// How a listener speaks.
#[derive(Clone)]
pub enum Transport {
    /// TLS with this configuration.
    Tls(Arc<rustls::ServerConfig>),
    /// Plain HTTP: only for loopback development, and only when asked for by name.
    InsecurePlainHttp,
}

/// Serves `router` on `listener` within `limits` until the future is dropped.
pub async fn serve(listener: TcpListener, transport: Transport, router: Router, limits: Limits) {
    // Waiting for a turn counts toward the timeout: the limit sits inside it.
    let router = router
        .layer(tower::limit::GlobalConcurrencyLimitLayer::new(
            limits.concurrent_requests,
        ))
        .layer(tower_http::timeout::TimeoutLayer::with_status_code(
            StatusCode::REQUEST_TIMEOUT,
            limits.request_timeout,
        ));
    let acceptor = match &transport {
        Transport::Tls(config) => Some(TlsAcceptor::from(config.clone())),
        Transport::InsecurePlainHttp => None,
    };
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(err) => {
                tracing::warn!(error = %err, "accept failed");
                tokio::time::sleep(ACCEPT_ERROR_PAUSE).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let router = router.clone();
        let acceptor = acceptor.clone();
        tokio::spawn(async move {
            match acceptor {
                None => connection(TokioIo::new(stream), router, peer, None).await,
                Some(acceptor) => {
                    match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                        Ok(Ok(stream)) => {
                            let certificate = stream
                                .get_ref()
                                .1
                                .peer_certificates()
                                .and_then(|chain| chain.first())
                                .map(|cert| PeerCertificate(Arc::new(cert.clone().into_owned())));
                            connection(TokioIo::new(stream), router, peer, certificate).await;
                        }
                        Ok(Err(err)) => {
                            tracing::debug!(%peer, error = %err, "TLS handshake failed");
                        }
                        Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
                    }
                }
            }
        });
    }
}

async fn connection<I>(
    io: TokioIo<I>,
    router: Router,
    peer: SocketAddr,
    certificate: Option<PeerCertificate>,
) where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let service =
        hyper::service::service_fn(move |mut request: hyper::Request<hyper::body::Incoming>| {
            request.extensions_mut().insert(ConnectInfo(peer));
            if let Some(certificate) = &certificate {
                request.extensions_mut().insert(certificate.clone());
            }
            router.clone().oneshot(request)
        });
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT);
    if let Err(err) = builder.serve_connection(io, service).await {
        tracing::debug!(%peer, error = %err, "connection ended with an error");
    }
}

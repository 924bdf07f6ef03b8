//! The rotor service: knows instances and their units, relays signed admin commands to units,
//! serves the Key Protect API v2 with IAM tokens, and starts local dev instances.

#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod api;
pub mod audit;
pub mod config;
pub mod dev;
pub mod iam;
pub mod kp;
mod openapi;
pub mod pool;
pub mod rotation;

pub use api::Service;
pub use config::Config;

/// Serves `config` on `listener` until the future is dropped or the listener fails.
pub async fn serve(
    config: Config,
    listener: tokio::net::TcpListener,
) -> Result<(), api::StartError> {
    let mut config = config;
    // The address actually bound (the configured port may be 0), which the Key Protect API
    // reports as the instance's port.
    config.listen = listener
        .local_addr()
        .map_err(|err| api::StartError(err.to_string()))?;
    let service = Service::open(config)?;
    let background = service.start_background();
    // Connection info gives the Key Protect routes the client address `allowedIP` checks.
    let served = axum::serve(
        listener,
        service
            .router()
            .into_make_service_with_connect_info::<std::net::SocketAddr>(),
    )
    .await;
    background.abort();
    served.map_err(|err| api::StartError(err.to_string()))
}

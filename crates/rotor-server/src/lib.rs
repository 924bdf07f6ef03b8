//! The rotor service: knows instances and their units, relays signed admin commands to units,
//! and starts local dev instances.

#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod api;
pub mod config;
pub mod dev;

pub use api::Service;
pub use config::Config;

/// Serves `config` on `listener` until the future is dropped or the listener fails.
pub async fn serve(config: Config, listener: tokio::net::TcpListener) -> std::io::Result<()> {
    axum::serve(listener, Service::new(config).router()).await
}

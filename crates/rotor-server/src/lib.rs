//! The rotor service: knows instances and their units, relays signed admin commands to units,
//! serves the Key Protect API v2 with IAM tokens, and starts local dev instances.

#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod api;
pub mod audit;
pub mod config;
pub mod dev;
pub mod grep11;
pub mod iam;
pub mod kp;
pub mod metrics;
mod openapi;
pub mod pool;
pub mod rotation;
pub mod store;

pub use api::Service;
pub use config::Config;

/// How the API listens, from the configuration: HTTPS with `[tls]`, or plain HTTP where the
/// configuration says `insecure_plain_http` (checked to be loopback).
pub fn api_transport(config: &Config) -> Result<rotor_tls::Transport, api::StartError> {
    match &config.tls {
        Some(tls) => rotor_tls::config::server_config(&tls.cert, &tls.key, None)
            .map(rotor_tls::Transport::Tls)
            .map_err(|err| api::StartError(format!("the API certificate: {err}"))),
        None if config.insecure_plain_http && config.listen.ip().is_loopback() => {
            Ok(rotor_tls::Transport::InsecurePlainHttp)
        }
        None => Err(api::StartError(
            "the API needs [tls] cert and key (plain HTTP only with insecure_plain_http on loopback)"
                .to_owned(),
        )),
    }
}

/// Serves `config` on `listener` until the future is dropped.
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
    let transport = api_transport(&config)?;
    let grep11_listener = match config.grep11_listen {
        Some(address) => Some(
            tokio::net::TcpListener::bind(address)
                .await
                .map_err(|err| api::StartError(format!("GREP11 on {address}: {err}")))?,
        ),
        None => None,
    };
    let service = Service::open(config)?;
    let background = service.start_background();
    let grep11 = service.grep11_router();
    let grep11_transport = transport.clone();
    let grep11 = async move {
        if let Some(listener) = grep11_listener {
            rotor_tls::serve::serve(
                listener,
                grep11_transport,
                grep11,
                rotor_tls::serve::Limits::SERVICE,
            )
            .await;
        }
    };
    let api = rotor_tls::serve::serve(
        listener,
        transport,
        service.router(),
        rotor_tls::serve::Limits::SERVICE,
    );
    tokio::join!(api, grep11);
    background.abort();
    Ok(())
}

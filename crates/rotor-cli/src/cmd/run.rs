//! Long-running processes: a crypto unit and the service.

use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use rotor_unit::audit::AuditLog;
use rotor_unit::daemon::{ServeInfo, Unit};
use rotor_unit::store::UnitStore;
use rotor_unit::wire::UnitKind;
use tokio::net::TcpListener;

use crate::args::ServeArgs;

/// `rotor unit serve`
pub async fn unit_serve(args: ServeArgs) -> Result<()> {
    let kind = if args.recovery {
        UnitKind::Recovery
    } else {
        UnitKind::Operational
    };
    let (store, identity, state) = UnitStore::open(&args.dir, kind)?;
    let client_auth = rotor_tls::ClientAuth {
        ca: args.client_ca.clone(),
        crl: args.crl.clone(),
    };
    let tls = rotor_tls::config::server_config(&args.tls_cert, &args.tls_key, Some(&client_auth))
        .context("the unit's TLS settings")?;
    let own = rotor_tls::config::load_certs(&args.tls_cert)?;
    let instance = match own.first().map(rotor_tls::Role::of_certificate) {
        Some(Ok(rotor_tls::Role::Unit { instance, unit })) => {
            if let Some(named) = unit.filter(|named| *named != state.unit) {
                bail!(
                    "{} is the certificate of unit {named}, but {} holds unit {}",
                    args.tls_cert.display(),
                    args.dir.display(),
                    state.unit
                );
            }
            instance
        }
        Some(Ok(role)) => bail!(
            "{} is a certificate for {role}, not for a unit (`rotor pki issue unit`)",
            args.tls_cert.display()
        ),
        Some(Err(err)) => bail!("{}: {err}", args.tls_cert.display()),
        None => bail!("{} holds no certificate", args.tls_cert.display()),
    };
    let audit = AuditLog::open(&args.dir)?;
    let listener = TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("cannot listen on {}", args.listen))?;
    let address = listener.local_addr()?;
    let info = ServeInfo {
        unit: state.unit,
        kind,
        address,
    };
    eprintln!(
        "rotor unit {} ({}) of instance {instance} listening on https://{address}",
        info.unit,
        kind.label().to_lowercase()
    );
    if let Some(path) = &args.info_file {
        info.write(path)
            .with_context(|| format!("cannot write {}", path.display()))?;
    }
    if args.exit_with_parent {
        let parent = std::os::unix::process::parent_id();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_millis(250)).await;
                if std::os::unix::process::parent_id() != parent {
                    std::process::exit(0);
                }
            }
        });
    }
    Unit::new(store, identity, state, audit)
        .serve(listener, tls, instance)
        .await;
    Ok(())
}

/// `rotor server`
pub async fn server(config_path: &Path) -> Result<()> {
    let config = rotor_server::Config::load(config_path)?;
    let listener = TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("cannot listen on {}", config.listen))?;
    let scheme = if config.tls.is_some() {
        "https"
    } else {
        "http (insecure_plain_http: development only)"
    };
    eprintln!(
        "rotor server listening on {scheme}://{}",
        listener.local_addr()?
    );
    rotor_server::serve(config, listener).await?;
    Ok(())
}

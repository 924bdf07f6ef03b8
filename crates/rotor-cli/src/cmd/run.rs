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
        "rotor unit {} ({}) listening on {address}",
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
    let mut unit = Unit::new(store, identity, state, audit);
    if let Some(path) = &args.service_token_file {
        let token = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read {}", path.display()))?;
        let token = token.trim();
        if token.len() < 16 {
            bail!(
                "the service token in {} is too short (at least 16 characters)",
                path.display()
            );
        }
        unit = unit.with_service_token(token.as_bytes().to_vec());
    }
    unit.serve(listener).await?;
    Ok(())
}

/// `rotor server`
pub async fn server(config_path: &Path) -> Result<()> {
    let config = rotor_server::Config::load(config_path)?;
    let listener = TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("cannot listen on {}", config.listen))?;
    eprintln!(
        "rotor server listening on http://{}",
        listener.local_addr()?
    );
    rotor_server::serve(config, listener).await?;
    Ok(())
}

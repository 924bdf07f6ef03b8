//! Long-running processes: a crypto unit and the service.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use rotor_unit::audit::AuditLog;
use rotor_unit::daemon::{ServeInfo, Unit};
use rotor_unit::seal::{SealHeader, SealSource};
use rotor_unit::store::{StoreError, UnitIdentity, UnitStore};
use rotor_unit::wire::{EnrollmentSecret, Ski, UnitKind};
use tokio::net::TcpListener;
use zeroize::Zeroizing;

use crate::args::{SealKind, ServeArgs, TokenArgs};
use crate::output::print_json;

/// Reads a secret from the environment variable `var`, else from a prompt on the terminal.
fn secret_from(var: &str, prompt: &str) -> Result<Zeroizing<String>> {
    if let Ok(value) = std::env::var(var) {
        return Ok(Zeroizing::new(value));
    }
    rpassword::prompt_password(prompt)
        .map(Zeroizing::new)
        .map_err(|_| anyhow!("no terminal to ask for it: set {var}"))
}

/// A passphrase for a state that exists (`new` false) or one about to be sealed, which a person
/// types twice.
fn passphrase(var: &str, prompt: &str, new: bool) -> Result<SealSource> {
    let passphrase = secret_from(var, prompt)?;
    if new && std::env::var_os(var).is_none() {
        let again = secret_from(var, "Repeat it: ")?;
        if *again != *passphrase {
            bail!("the two passphrases differ");
        }
    }
    Ok(SealSource::Passphrase(passphrase))
}

fn token_source(token: &TokenArgs, label: Option<&str>) -> Result<SealSource> {
    let label = label
        .map(str::to_owned)
        .or_else(|| token.seal_token.clone())
        .ok_or_else(|| anyhow!("--seal token needs --seal-token LABEL"))?;
    let module: PathBuf = token.module.clone().ok_or_else(|| {
        anyhow!("--seal token needs the PKCS#11 module: --module PATH or ROTOR_PKCS11_MODULE")
    })?;
    let pin = secret_from("ROTOR_PIN", &format!("PIN of token '{label}': "))?;
    Ok(SealSource::Token {
        module,
        token: label,
        pin,
    })
}

/// The seal source `kind` names, with its credentials; `new` when it will seal a new key.
fn seal_source(kind: SealKind, token: &TokenArgs, new: bool) -> Result<SealSource> {
    match kind {
        SealKind::Passphrase => passphrase("ROTOR_UNIT_PASSPHRASE", "Unit passphrase: ", new),
        SealKind::Token => token_source(token, None),
        SealKind::File => Ok(SealSource::File),
    }
}

/// `rotor unit serve`
pub async fn unit_serve(args: ServeArgs) -> Result<()> {
    let kind = if args.recovery {
        UnitKind::Recovery
    } else {
        UnitKind::Operational
    };
    let new = matches!(
        UnitStore::seal_header_of(&args.dir),
        Err(StoreError::NoUnit(_))
    );
    let source = seal_source(args.seal, &args.token, new)?;
    if matches!(source, SealSource::File) {
        eprintln!(
            "WARNING: --seal file keeps the sealing key in {} beside the state: anyone who copies the directory has the master keys. Use it for development only.",
            args.dir.join("seal.key").display()
        );
    }
    let (store, identity, mut state) =
        rotor_util::blocking(|| UnitStore::open(&args.dir, kind, &source))?;
    drop(source);
    if let Some(ski) = &args.initial_admin {
        let ski = hex::decode(ski)
            .ok()
            .and_then(|bytes| <[u8; 32]>::try_from(bytes).ok())
            .map(Ski)
            .ok_or_else(|| {
                anyhow!("--initial-admin takes a subject key identifier: 64 hex characters")
            })?;
        if state.admins.is_empty() {
            let next = state.with_initial_admin(ski)?;
            store.save(&identity, &next)?;
            state = next;
        } else {
            eprintln!("--initial-admin ignored: this unit already has admins");
        }
    }
    let client_auth = rotor_tls::ClientAuth {
        ca: args.client_ca.clone(),
        crl: args.crl.clone(),
    };
    let tls = rotor_tls::config::server_config(&args.tls_cert, &args.tls_key, Some(&client_auth))
        .context("the unit's TLS settings")?;
    let own = rotor_tls::pem::load_certs(&args.tls_cert)?;
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
    let shown = UnitIdentity::of(&state, &identity);
    let info = ServeInfo {
        unit: state.unit,
        kind,
        address,
        fingerprint: shown.fingerprint,
        enrollment_secret: state.enrollment_secret().map(|secret| secret.to_hex()),
    };
    eprintln!(
        "rotor unit {} ({}) of instance {instance} listening on https://{address}",
        info.unit,
        kind.label().to_lowercase()
    );
    eprintln!("identity fingerprint: {}", info.fingerprint);
    announce_enrollment(info.enrollment_secret.as_deref().map(String::as_str), &args);
    if let Some(path) = &args.info_file {
        info.write(path)
            .with_context(|| format!("cannot write {}", path.display()))?;
    }
    if args.exit_with_parent {
        exit_when_parent_exits();
    }
    let info_file = args.info_file.clone();
    let notice_info = info.clone();
    let unit = Unit::new(store, identity, state, audit).with_enrollment_notice(Arc::new(
        move |secret: Option<&EnrollmentSecret>| {
            let secret = secret.map(EnrollmentSecret::to_hex);
            match &secret {
                Some(secret) => {
                    eprintln!(
                        "the unit has no admin again; new enrollment secret: {}",
                        secret.as_str()
                    );
                }
                None => eprintln!("first admin installed; the enrollment secret is used up"),
            }
            if let Some(path) = &info_file {
                let info = ServeInfo {
                    enrollment_secret: secret,
                    ..notice_info.clone()
                };
                if let Err(err) = info.write(path) {
                    eprintln!("cannot write {}: {err}", path.display());
                }
            }
        },
    ));
    unit.serve(listener, tls, instance).await;
    Ok(())
}

fn announce_enrollment(secret: Option<&str>, args: &ServeArgs) {
    if let Some(secret) = secret {
        eprintln!(
            "this unit has no admin: its first admin is installed only with the enrollment secret {secret}"
        );
        eprintln!("(give it to 'rotor admins add' or 'rotor auto init' with --enrollment-secret)");
    } else if args.initial_admin.is_some() {
        eprintln!("this unit has no admin: it accepts only the --initial-admin key as its first");
    }
}

/// `rotor unit id`
pub fn unit_id(dir: &Path, json: bool) -> Result<()> {
    let identity = UnitIdentity::read(dir)?;
    if json {
        print_json(&serde_json::json!({
            "unit": identity.unit,
            "kind": identity.kind,
            "fingerprint": identity.fingerprint,
        }));
    } else {
        println!("unit:        {}", identity.unit);
        println!("kind:        {}", identity.kind.label().to_lowercase());
        println!("fingerprint: {}", identity.fingerprint);
    }
    Ok(())
}

/// `rotor unit reseal`
pub fn unit_reseal(dir: &Path, seal: SealKind, token: &TokenArgs, json: bool) -> Result<()> {
    if seal == SealKind::File {
        bail!("a unit is resealed to a passphrase or a token; --seal file is for development only");
    }
    let from = match UnitStore::seal_header_of(dir)? {
        SealHeader::Passphrase { .. } => {
            passphrase("ROTOR_UNIT_PASSPHRASE", "Current unit passphrase: ", false)?
        }
        SealHeader::Token { token: label, .. } => token_source(token, Some(&label))?,
        SealHeader::File => SealSource::File,
    };
    let to = match seal {
        SealKind::Passphrase => {
            passphrase("ROTOR_UNIT_NEW_PASSPHRASE", "New unit passphrase: ", true)?
        }
        _ => token_source(token, None)?,
    };
    let (identity, removed) = UnitStore::reseal(dir, &from, &to)?;
    if json {
        print_json(&serde_json::json!({
            "unit": identity.unit,
            "seal": to.name(),
            "seal_key_removed": removed,
        }));
    } else {
        println!(
            "unit {} resealed with a {} key{}",
            identity.unit,
            to.name(),
            if removed { "; seal.key removed" } else { "" }
        );
    }
    Ok(())
}

/// Exits this process once its parent is gone (a 'rotor dev' that was killed leaves no
/// processes behind).
fn exit_when_parent_exits() {
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

/// `rotor server`
pub async fn server(config_path: &Path, exit_with_parent: bool) -> Result<()> {
    let config = rotor_server::Config::load(config_path)?;
    if exit_with_parent {
        exit_when_parent_exits();
    }
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

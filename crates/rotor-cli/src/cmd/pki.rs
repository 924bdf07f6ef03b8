//! `rotor pki`: the deployment's certificate authority, through [`rotor_tls::pki`] (the same
//! code `rotor dev` issues its certificates with).

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use rotor_tls::Role;
use rotor_tls::pki::{Authority, Subject};
use serde_json::json;

use crate::args::{PkiCommand, PkiRole};
use crate::output::print_json;
use crate::session::Session;

/// `rotor pki …`
pub fn pki(session: &Session, command: PkiCommand) -> Result<()> {
    match command {
        PkiCommand::Init { dir, name } => {
            let ca = Authority::create(&dir, &name)?;
            report(
                session,
                json!({"ca_cert": ca.ca_cert_path(), "crl": ca.crl_path()}),
                &format!(
                    "Created the certificate authority in {}.\nGive {} to every peer; keep ca.key offline between uses.",
                    dir.display(),
                    ca.ca_cert_path().display()
                ),
            );
        }
        PkiCommand::Issue {
            dir,
            role,
            instance,
            unit,
            dns_names,
            ip_addresses,
            days,
            out,
        } => {
            let role = match (role, instance) {
                (PkiRole::Api, None) if unit.is_none() => Role::Api,
                (PkiRole::Unit, Some(instance)) => Role::Unit { instance, unit },
                (PkiRole::Service, Some(instance)) if unit.is_none() => Role::Service { instance },
                (PkiRole::Api, _) => bail!("an api certificate takes no --instance or --unit"),
                (PkiRole::Service, Some(_)) => bail!("a service certificate takes no --unit"),
                (PkiRole::Unit | PkiRole::Service, None) => {
                    bail!("unit and service certificates need --instance")
                }
            };
            let subject = Subject {
                role,
                dns_names,
                ip_addresses,
            };
            let mut ca = Authority::open(&dir)?;
            let issued = ca.issue(&subject, days)?;
            let (cert, key) = issued.write(&out)?;
            report(
                session,
                json!({"cert": cert, "key": key, "serial": issued.serial, "role": subject.role}),
                &format!(
                    "Issued {} (serial {}): {} and {}.",
                    subject.role,
                    issued.serial,
                    cert.display(),
                    key.display()
                ),
            );
        }
        PkiCommand::Renew {
            dir,
            cert,
            out,
            days,
            revoke_old,
        } => {
            let mut ca = Authority::open(&dir)?;
            let serial = rotor_tls::pki::serial_of_pem_file(&cert)?;
            let Some(record) = ca.find(&serial) else {
                bail!(
                    "{} (serial {serial}) was not issued by the authority in {}",
                    cert.display(),
                    dir.display()
                );
            };
            let subject = record.subject.clone();
            let out = out.unwrap_or_else(|| prefix_of(&cert));
            let issued = ca.issue(&subject, days)?;
            let (new_cert, key) = issued.write(&out)?;
            if revoke_old {
                ca.revoke(&serial)?;
            }
            report(
                session,
                json!({"cert": new_cert, "key": key, "serial": issued.serial, "revoked": revoke_old.then_some(&serial)}),
                &format!(
                    "Renewed {}: {} (serial {}){}.",
                    subject.role,
                    new_cert.display(),
                    issued.serial,
                    if revoke_old {
                        format!("; revoked {serial}: distribute {}", ca.crl_path().display())
                    } else {
                        String::new()
                    }
                ),
            );
        }
        PkiCommand::Revoke { dir, cert } => {
            let mut ca = Authority::open(&dir)?;
            let serial = if Path::new(&cert).is_file() {
                rotor_tls::pki::serial_of_pem_file(Path::new(&cert))?
            } else if !cert.is_empty() && cert.chars().all(|c| c.is_ascii_hexdigit()) {
                cert.to_ascii_lowercase()
            } else {
                bail!("{cert} is neither a certificate file nor a serial number in hex");
            };
            let role = ca.revoke(&serial)?.subject.role.clone();
            report(
                session,
                json!({"revoked": serial, "crl": ca.crl_path()}),
                &format!(
                    "Revoked {role} (serial {serial}). Distribute {} to the units and the service; they re-read it on change.",
                    ca.crl_path().display()
                ),
            );
        }
        PkiCommand::Crl { dir } => {
            let mut ca = Authority::open(&dir)?;
            let crl = ca.write_crl()?;
            report(
                session,
                json!({"crl": crl}),
                &format!("Wrote {} (valid 30 days).", crl.display()),
            );
        }
        PkiCommand::UpgradeConfig {
            dir,
            config,
            out,
            tls_dir,
            dns_names,
            days,
        } => upgrade_config(session, &dir, &config, &out, &tls_dir, dns_names, days)?,
        PkiCommand::List { dir } => {
            let ca = Authority::open(&dir).with_context(|| format!("{}", dir.display()))?;
            if session.json {
                print_json(&json!({"certificates": ca.issued()}));
            } else {
                for record in ca.issued() {
                    let state = match record.revoked_at {
                        Some(at) => format!("revoked {}", rotor_util::time::rfc3339(at * 1000)),
                        None => format!(
                            "valid until {}",
                            rotor_util::time::rfc3339(record.not_after * 1000)
                        ),
                    };
                    println!("{}  {}  {state}", record.serial, record.subject.role);
                }
            }
        }
    }
    Ok(())
}

/// `rotor pki upgrade-config`: a configuration of the shared-token era, on TLS.
fn upgrade_config(
    session: &Session,
    dir: &Path,
    config_path: &Path,
    out: &Path,
    tls_dir: &Path,
    dns_names: Vec<String>,
    days: u32,
) -> Result<()> {
    let text = std::fs::read_to_string(config_path)
        .with_context(|| format!("cannot read {}", config_path.display()))?;
    // Parsed without the checks, which refuse exactly what this converts.
    let mut config: rotor_server::Config = toml::from_str(&text)
        .with_context(|| format!("{} is not a service configuration", config_path.display()))?;
    if config.tls.is_some() || config.units_tls.is_some() {
        bail!(
            "{} already has TLS settings; nothing to convert",
            config_path.display()
        );
    }
    if out.exists() {
        bail!("{} exists; choose another --out", out.display());
    }
    std::fs::create_dir_all(tls_dir)
        .with_context(|| format!("cannot create {}", tls_dir.display()))?;
    let mut ca = Authority::open_or_create(dir, "rotor")?;
    let (ca_cert, crl) = (ca.ca_cert_path(), ca.crl_path());
    let mut issue = |subject: Subject, name: &str| -> Result<(PathBuf, PathBuf)> {
        Ok(ca.issue(&subject, days)?.write(&tls_dir.join(name))?)
    };
    let (cert, key) = issue(
        Subject {
            role: Role::Api,
            dns_names,
            ip_addresses: vec![config.listen.ip()],
        },
        "api",
    )?;
    config.tls = Some(rotor_server::config::ApiTls { cert, key });
    config.insecure_plain_http = false;
    config.units_token_file = None;
    let mut starts = Vec::new();
    for instance in &mut config.instances {
        let (cert, key) = issue(
            Subject {
                role: Role::Service {
                    instance: instance.id,
                },
                dns_names: Vec::new(),
                ip_addresses: Vec::new(),
            },
            &format!("service-{}", instance.id),
        )?;
        instance.client_cert = Some(cert);
        instance.client_key = Some(key);
        for unit in &instance.units {
            let name = format!("unit-{}", unit.id);
            let (cert, key) = issue(
                Subject {
                    role: Role::Unit {
                        instance: instance.id,
                        unit: Some(unit.id),
                    },
                    dns_names: Vec::new(),
                    ip_addresses: vec![unit.address.ip()],
                },
                &name,
            )?;
            starts.push(format!(
                "unit {} at {}: rotor unit serve ... --tls-cert {} --tls-key {} --client-ca {} --crl {}",
                unit.id,
                unit.address,
                cert.display(),
                key.display(),
                ca_cert.display(),
                crl.display()
            ));
        }
    }
    config.units_tls = Some(rotor_server::config::UnitsTls {
        ca: ca_cert.clone(),
        crl: Some(crl),
    });
    for key in &mut config.iam.api_keys {
        if key.instances.is_empty() {
            eprintln!(
                "API key '{}' named no instances, which meant all of them: it now says instances = [\"*\"]; narrow it if it should not",
                key.name
            );
            key.instances = vec!["*".to_owned()];
        }
    }
    config.check()?;
    rotor_util::fs::write_durable(out, config.to_toml().as_bytes())
        .with_context(|| format!("cannot write {}", out.display()))?;
    report(
        session,
        json!({"config": out, "ca_cert": ca_cert, "units": starts}),
        &format!(
            "Wrote {} (certificates in {}). Start each unit with its certificate instead of --service-token-file:\n{}\nClients verify the API with {}.",
            out.display(),
            tls_dir.display(),
            starts.join("\n"),
            ca_cert.display()
        ),
    );
    Ok(())
}

/// `DIR/name` for `DIR/name.pem`.
fn prefix_of(cert: &Path) -> PathBuf {
    cert.with_extension("")
}

fn report(session: &Session, value: serde_json::Value, text: &str) {
    if session.json {
        print_json(&value);
    } else {
        println!("{text}");
    }
}

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

//! `rotor admins`: list the administrators of the selected units, add and remove them.

use anyhow::{Context, Result, bail};
use rotor_unit::wire::{Action, Ski, UnitStatus};
use serde_json::json;

use crate::args::AdminsCommand;
use crate::output::{admin_rows, print_json, table};
use crate::session::{Session, Target, numbered_rows};
use crate::workstation::Sigkey;

/// `rotor admins …`
pub async fn admins(session: &Session, command: Option<AdminsCommand>) -> Result<()> {
    match command {
        None => {
            let units = session.statuses(&session.selected().await?).await?;
            if session.json {
                let view: Vec<_> = units
                    .iter()
                    .map(|(t, s)| json!({"number": t.number, "admins": s.admins}))
                    .collect();
                print_json(&json!({ "units": view }));
            } else {
                let rows = numbered_rows(&units, admin_rows);
                print!(
                    "{}",
                    table(
                        &["CRYPTO UNIT NUM", "ADMIN NAME", "SUBJECT KEY IDENTIFIER"],
                        &rows
                    )
                );
            }
            Ok(())
        }
        Some(AdminsCommand::Add { sigkeys, .. }) => {
            let mut files = Vec::new();
            for number in &sigkeys {
                files.push(Sigkey::read(&session.home.sigkey_path(*number)?)?);
            }
            for file in &files {
                let ski = Ski::of(file.public_key());
                session
                    .each_selected(
                        &format!("admin '{}' installed", file.name()),
                        |target, status| {
                            if status.admins.iter().any(|a| a.ski == ski) {
                                session.say(&format!(
                                    "crypto unit {}: admin '{}' is already installed",
                                    target.number,
                                    file.name()
                                ));
                                return Ok(None);
                            }
                            Ok(Some(Action::AddAdmin {
                                name: file.name().to_owned(),
                                public_key: file.public_key().clone(),
                            }))
                        },
                    )
                    .await?;
            }
            Ok(())
        }
        Some(AdminsCommand::Rm { admin }) => {
            let units = session.statuses(&session.selected().await?).await?;
            let ski = resolve_admin(session, &admin, &units)?;
            session
                .each_selected(&format!("admin {} removed", ski.to_hex()), |_, _| {
                    Ok(Some(Action::RemoveAdmin { ski }))
                })
                .await
        }
    }
}

fn resolve_admin(session: &Session, admin: &str, units: &[(Target, UnitStatus)]) -> Result<Ski> {
    if let Some(number) = admin.strip_prefix('#') {
        let number: u32 = number
            .parse()
            .with_context(|| format!("'{admin}' is not '#' and a signature key number"))?;
        return Ok(Ski::of(
            Sigkey::read(&session.home.sigkey_path(number)?)?.public_key(),
        ));
    }
    let prefix = admin.to_lowercase();
    let mut matches: Vec<Ski> = units
        .iter()
        .flat_map(|(_, s)| s.admins.iter().map(|a| a.ski))
        .filter(|ski| ski.to_hex().starts_with(&prefix))
        .collect();
    matches.sort();
    matches.dedup();
    match matches.as_slice() {
        [ski] if !prefix.is_empty() => Ok(*ski),
        [] | [_] => bail!(
            "no admin on the selected units has a subject key identifier starting with '{admin}'"
        ),
        _ => bail!(
            "'{admin}' matches {} admins; give more of the identifier",
            matches.len()
        ),
    }
}

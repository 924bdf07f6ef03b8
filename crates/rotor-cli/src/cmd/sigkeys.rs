//! `rotor sigkeys`: signature key files on this workstation.

use anyhow::{Result, bail};
use rotor_crypto::{SigAlg, SigningKey};
use serde_json::json;

use crate::args::SigkeysCommand;
use crate::output::{print_json, table};
use crate::session::Session;
use crate::workstation::{SigkeyFile, new_password};

/// `rotor sigkeys …`
pub fn sigkeys(session: &Session, command: Option<SigkeysCommand>) -> Result<()> {
    match command {
        None => list_sigkeys(session),
        Some(SigkeysCommand::New { name, curve }) => {
            check_admin_name(&name)?;
            let Some(alg) = SigAlg::from_name(&curve) else {
                bail!("unknown curve '{curve}'; use p256 or p521");
            };
            let password = new_password(&format!("signature key '{name}'"))?;
            let key = SigningKey::generate(alg);
            let file = SigkeyFile::seal(&name, &key, &password)?;
            let number = session.home.add_sigkey(&file)?;
            let ski = file.public_key.ski();
            if session.json {
                print_json(
                    &json!({"number": number, "name": name, "curve": alg.name(), "ski": hex::encode(ski)}),
                );
            } else {
                println!(
                    "Created signature key {number} for '{name}' ({}), SKI {}",
                    alg.name(),
                    hex::encode(ski)
                );
            }
            Ok(())
        }
        Some(SigkeysCommand::Import { file, name }) => {
            check_admin_name(&name)?;
            let password =
                crate::workstation::read_password(&format!("Password of {}: ", file.display()))?;
            let key = crate::workstation::import_hpcs_sigkey(&file, &password)?;
            let password = new_password(&format!("signature key '{name}'"))?;
            let sealed = SigkeyFile::seal(&name, &key, &password)?;
            let number = session.home.add_sigkey(&sealed)?;
            let ski = hex::encode(sealed.public_key.ski());
            if session.json {
                print_json(&json!({"number": number, "name": name, "curve": "p521", "ski": ski}));
            } else {
                println!(
                    "Imported {} as signature key {number} for '{name}' (p521), SKI {ski}",
                    file.display()
                );
            }
            Ok(())
        }
        Some(SigkeysCommand::Use { numbers }) => {
            for number in &numbers {
                SigkeyFile::read(&session.home.sigkey_path(*number)?)?;
            }
            let mut settings = session.home.settings()?;
            settings.selected_sigkeys = numbers.clone();
            session.home.save_settings(&settings)?;
            if session.json {
                print_json(&json!({ "selected": numbers }));
            } else {
                let list: Vec<String> = numbers.iter().map(ToString::to_string).collect();
                println!("Signature keys {} will sign commands.", list.join(", "));
            }
            Ok(())
        }
        Some(SigkeysCommand::Rm { number }) => {
            let path = session.home.sigkey_path(number)?;
            session.confirm(&format!(
                "Delete signature key {number}? If its admin is installed on a unit and you have no backup, it can never sign again."
            ))?;
            std::fs::remove_file(&path)?;
            let mut settings = session.home.settings()?;
            settings.selected_sigkeys.retain(|n| *n != number);
            session.home.save_settings(&settings)?;
            println!("Deleted signature key {number}.");
            Ok(())
        }
    }
}

fn check_admin_name(name: &str) -> Result<()> {
    let length = name.chars().count();
    if length == 0 || length > 30 || name.chars().any(char::is_control) {
        bail!("an admin name has 1 to 30 printable characters");
    }
    Ok(())
}

fn list_sigkeys(session: &Session) -> Result<()> {
    let selected = session.home.settings()?.selected_sigkeys;
    let mut rows = Vec::new();
    let mut view = Vec::new();
    for (number, path) in session.home.sigkeys()? {
        match SigkeyFile::read(&path) {
            Ok(file) => {
                let ski = hex::encode(file.public_key.ski());
                rows.push(vec![
                    number.to_string(),
                    selected.contains(&number).to_string(),
                    file.name.clone(),
                    file.public_key.alg.name().to_owned(),
                    format!("{}...", &ski[..30]),
                ]);
                view.push(json!({"number": number, "selected": selected.contains(&number), "name": file.name, "curve": file.public_key.alg.name(), "ski": ski}));
            }
            Err(err) => {
                rows.push(vec![
                    number.to_string(),
                    String::new(),
                    format!("(unreadable: {err})"),
                    String::new(),
                    String::new(),
                ]);
                view.push(json!({"number": number, "error": err.to_string()}));
            }
        }
    }
    if session.json {
        print_json(&json!({ "sigkeys": view }));
    } else if rows.is_empty() {
        println!("No signature keys yet: create one with 'rotor sigkeys new --name NAME'.");
    } else {
        print!(
            "{}",
            table(
                &[
                    "KEYNUM",
                    "SELECTED",
                    "DESCRIPTION",
                    "CURVE",
                    "SUBJECT KEY IDENTIFIER"
                ],
                &rows
            )
        );
    }
    Ok(())
}

//! `rotor parts`: master key part files on this workstation.

use anyhow::Result;
use rotor_crypto::Secret32;
use serde_json::json;

use crate::args::PartsCommand;
use crate::output::{print_json, table};
use crate::session::Session;
use crate::workstation::{PartFile, new_password};

/// `rotor parts …`
pub fn parts(session: &Session, command: Option<PartsCommand>) -> Result<()> {
    match command {
        None => {
            let mut rows = Vec::new();
            let mut view = Vec::new();
            for (number, path) in session.home.parts()? {
                match PartFile::read(&path) {
                    Ok(file) => {
                        rows.push(vec![
                            number.to_string(),
                            file.description.clone(),
                            file.vp.to_hex(),
                        ]);
                        view.push(json!({"number": number, "description": file.description, "vp": file.vp}));
                    }
                    Err(err) => {
                        rows.push(vec![
                            number.to_string(),
                            format!("(unreadable: {err})"),
                            String::new(),
                        ]);
                        view.push(json!({"number": number, "error": err.to_string()}));
                    }
                }
            }
            if session.json {
                print_json(&json!({ "parts": view }));
            } else if rows.is_empty() {
                println!("No key parts yet: create one with 'rotor parts new'.");
            } else {
                print!(
                    "{}",
                    table(&["KEYNUM", "DESCRIPTION", "VERIFICATION PATTERN"], &rows)
                );
            }
            Ok(())
        }
        Some(PartsCommand::New { value, description }) => {
            let part = match value {
                Some(text) => hex::decode(text.trim())
                    .ok()
                    .and_then(|bytes| Secret32::from_slice(&zeroize::Zeroizing::new(bytes)))
                    .ok_or_else(|| {
                        anyhow::anyhow!("--value must be 64 hex characters (32 bytes)")
                    })?,
                None => Secret32::random(),
            };
            let password = new_password("the key part")?;
            let file = PartFile::seal(&description, &part, &password)?;
            let number = session.home.add_part(&file)?;
            if session.json {
                print_json(&json!({"number": number, "vp": file.vp}));
            } else {
                println!("Created key part {number}, VP {}", file.vp);
            }
            Ok(())
        }
        Some(PartsCommand::Rm { number }) => {
            let path = session.home.part_path(number)?;
            session.confirm(&format!(
                "Delete key part {number}? Without every part of a master key it cannot be loaded again."
            ))?;
            std::fs::remove_file(path)?;
            println!("Deleted key part {number}.");
            Ok(())
        }
    }
}

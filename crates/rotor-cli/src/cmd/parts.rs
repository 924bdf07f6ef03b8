//! `rotor parts`: master key part files on this workstation.

use std::path::PathBuf;

use anyhow::{Context, Result, anyhow, bail};
use rotor_crypto::{Secret32, TokenError, Vp};
use serde_json::json;

use crate::args::PartsCommand;
use crate::cmd::sigkeys::module_of;
use crate::output::{print_json, table};
use crate::session::Session;
use crate::signer::{SharedToken, with_token};
use crate::workstation::{Part, PartFile, TokenPartFile, TokenPlace, new_password};

/// `rotor parts …`
pub fn parts(session: &Session, command: Option<PartsCommand>) -> Result<()> {
    match command {
        None => {
            let mut rows = Vec::new();
            let mut view = Vec::new();
            for (number, path) in session.home.parts()? {
                match Part::read(&path) {
                    Ok(part) => {
                        rows.push(vec![
                            number.to_string(),
                            part.description().to_owned(),
                            part.place(),
                            part.vp().to_hex(),
                        ]);
                        view.push(json!({"number": number, "description": part.description(), "place": part.place(), "vp": part.vp()}));
                    }
                    Err(err) => {
                        rows.push(vec![
                            number.to_string(),
                            format!("(unreadable: {err})"),
                            String::new(),
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
                    table(
                        &["KEYNUM", "DESCRIPTION", "KEPT IN", "VERIFICATION PATTERN"],
                        &rows
                    )
                );
            }
            Ok(())
        }
        Some(PartsCommand::New {
            value,
            description,
            tokens,
            module,
        }) => {
            if tokens.len() > 2 {
                bail!("a key part is kept on one token, or two (the second a backup copy)");
            }
            if tokens.len() == 2 && tokens[0] == tokens[1] {
                bail!("the backup copy of a key part goes on another token than the first");
            }
            // Tokens are checked before a part exists, so a refusal leaves nothing behind.
            let opened = if tokens.is_empty() {
                None
            } else {
                Some(open_part_tokens(session, &tokens, module_of(module)?)?)
            };
            let given = value
                .map(|text| {
                    hex::decode(text.trim())
                        .ok()
                        .and_then(|bytes| Secret32::from_slice(&zeroize::Zeroizing::new(bytes)))
                        .ok_or_else(|| anyhow!("--value must be 64 hex characters (32 bytes)"))
                })
                .transpose()?;
            let (number, vp, place) = match opened {
                None => {
                    let part = given.unwrap_or_else(Secret32::random);
                    let password = new_password("the key part")?;
                    let file = PartFile::seal(&description, &part, &password)?;
                    (session.home.add_part(&file)?, file.vp, "file".to_owned())
                }
                Some((place, opened)) => {
                    let on_tokens: Vec<(&String, &SharedToken)> =
                        tokens.iter().zip(&opened).collect();
                    let label = format!("rotor key part {description}");
                    let vp = match given {
                        // A value typed in exists outside already: it is written into each token.
                        Some(part) => {
                            store_on_tokens(&on_tokens, &label, &place.key_id, &part)?;
                            part.vp()
                        }
                        // A random part is born inside the first token and copied to the
                        // backup token wrapped, so it never exists in clear outside a token.
                        None => generate_on_tokens(&on_tokens, &label, &place.key_id)?,
                    };
                    let file = TokenPartFile::new(&description, vp, place);
                    let where_ = format!("token {}", file.place.describe());
                    (session.home.add_part(&file)?, file.vp, where_)
                }
            };
            if session.json {
                print_json(&json!({"number": number, "vp": vp, "place": place}));
            } else {
                println!("Created key part {number} in {place}, VP {vp}");
            }
            Ok(())
        }
        Some(PartsCommand::Verify { number }) => {
            let Part::Token(file) = Part::read(&session.home.part_path(number)?)? else {
                bail!(
                    "key part {number} is a password-protected file, not on a token: 'rotor mk load' checks it when it is unlocked"
                );
            };
            let module = file.place.module();
            let mut checked = Vec::new();
            for label in &file.place.tokens {
                if !rotor_crypto::Token::is_present(&module, label)
                    .with_context(|| format!("token '{label}'"))?
                {
                    continue;
                }
                let token = session.token(label, &module)?;
                let vp = with_token(&token, label, |token| {
                    token.part_verification_pattern(&file.place.key_id)
                })?;
                if vp != file.vp {
                    bail!(
                        "token '{label}' holds a part with verification pattern {vp}, not the {} recorded for key part {number}",
                        file.vp
                    );
                }
                checked.push(label.clone());
            }
            if checked.is_empty() {
                bail!(
                    "none of the tokens of key part {number} is present ({})",
                    file.place.describe()
                );
            }
            if session.json {
                print_json(&json!({"number": number, "vp": file.vp, "verified_on": checked}));
            } else {
                println!(
                    "Key part {number}: verification pattern {} on token {}.",
                    file.vp,
                    checked.join(" and ")
                );
            }
            Ok(())
        }
        Some(PartsCommand::Rm { number }) => {
            let path = session.home.part_path(number)?;
            session.confirm(&format!(
                "Delete key part {number}? Without every part of a master key it cannot be loaded again."
            ))?;
            let part = Part::read(&path)?;
            std::fs::remove_file(path)?;
            println!("Deleted key part {number}.");
            if let Part::Token(file) = part {
                println!(
                    "The part stays on token {} (CKA_ID {}): delete it there with the token's own tools if it is no longer needed.",
                    file.place.describe(),
                    hex::encode(&file.place.key_id)
                );
            }
            Ok(())
        }
    }
}

/// Writes the typed-in `part` into every token; a part on only some of its tokens is no
/// backup, so a failure takes it back from those already written.
fn store_on_tokens(
    on_tokens: &[(&String, &SharedToken)],
    label: &str,
    id: &[u8],
    part: &Secret32,
) -> Result<()> {
    for (done, (token_label, token)) in on_tokens.iter().enumerate() {
        let stored = with_token(token, token_label, |token| {
            token.store_part(label, id, part)
        });
        if let Err(err) = stored {
            take_back(&on_tokens[..done], id, &err)?;
            return Err(err);
        }
    }
    Ok(())
}

/// Generates a part inside the first token and copies it, wrapped, to the second if there is
/// one; returns its verification pattern. A failed copy takes the part back from the first.
fn generate_on_tokens(on_tokens: &[(&String, &SharedToken)], label: &str, id: &[u8]) -> Result<Vp> {
    let Some(((first_label, first), backups)) = on_tokens.split_first() else {
        bail!("a key part on tokens needs at least one token");
    };
    let vp = with_token(first, first_label, |token| token.generate_part(label, id))?;
    for (backup_label, backup) in backups {
        let copied = with_token(first, first_label, |token| {
            let backup = backup.lock().map_err(|_| {
                TokenError::Failed(format!(
                    "token '{backup_label}' is unusable after an earlier failure"
                ))
            })?;
            token.copy_part_to(&backup, label, id, &vp)
        })
        .with_context(|| format!("copying the part to the backup token '{backup_label}'"));
        if let Err(err) = copied {
            take_back(&on_tokens[..1], id, &err)?;
            return Err(err);
        }
    }
    Ok(vp)
}

/// Removes part `id` from `tokens` after `err` stopped its creation.
fn take_back(tokens: &[(&String, &SharedToken)], id: &[u8], err: &anyhow::Error) -> Result<()> {
    for (label, token) in tokens {
        with_token(token, label, |token| token.remove_part(id)).with_context(|| {
            format!("taking the part back from token '{label}' after this failure: {err:#}")
        })?;
    }
    Ok(())
}

/// Logs in to each token a new part goes to and checks it can later wrap the part to a unit.
fn open_part_tokens(
    session: &Session,
    labels: &[String],
    module: PathBuf,
) -> Result<(TokenPlace, Vec<SharedToken>)> {
    let mut opened = Vec::new();
    for label in labels {
        let token = session.token(label, &module)?;
        with_token(&token, label, |token| token.require_part_wrapping()).map_err(|err| {
            if err
                .chain()
                .any(|cause| matches!(cause.downcast_ref(), Some(TokenError::Lacks(_))))
            {
                err.context(format!(
                    "rotor keeps no key part on token '{label}': a part on it could reach a unit only in clear on this workstation. Keep the part in a password-protected file ('rotor parts new' without --token), or use a token with ECDH and AES key wrap (docs/SMARTCARDS.md)"
                ))
            } else {
                err
            }
        })?;
        opened.push(token);
    }
    Ok((TokenPlace::new(labels.to_vec(), module), opened))
}

//! `rotor sigkeys`: signature key files on this workstation.

use std::path::PathBuf;

use anyhow::{Result, anyhow, bail};
use rotor_crypto::{SigAlg, SigningKey, TokenError};
use serde_json::json;

use crate::args::SigkeysCommand;
use crate::output::{print_json, table};
use crate::session::Session;
use crate::signer::with_token;
use crate::workstation::{Sigkey, SigkeyFile, TokenPlace, TokenSigkeyFile, new_password};

/// `rotor sigkeys …`
pub fn sigkeys(session: &Session, command: Option<SigkeysCommand>) -> Result<()> {
    match command {
        None => list_sigkeys(session),
        Some(SigkeysCommand::New {
            name,
            curve,
            token,
            key_id,
            module,
        }) => {
            check_admin_name(&name)?;
            let Some(alg) = SigAlg::from_name(&curve) else {
                bail!("unknown curve '{curve}'; use p256 or p521");
            };
            let (number, public_key, place) = match token {
                None => {
                    let password = new_password(&format!("signature key '{name}'"))?;
                    let key = SigningKey::generate(alg);
                    let file = SigkeyFile::seal(&name, &key, &password)?;
                    let number = session.home.add_sigkey(&file)?;
                    (number, file.public_key, "file".to_owned())
                }
                Some(label) => {
                    let mut place = TokenPlace::new(vec![label.clone()], module_of(module)?);
                    if let Some(text) = key_id {
                        place.key_id = hex::decode(text.trim())
                            .ok()
                            .filter(|id| !id.is_empty())
                            .ok_or_else(|| anyhow!("--key-id must be hex digits"))?;
                    }
                    let file = new_token_sigkey(session, &name, alg, place)?;
                    let number = session.home.add_sigkey(&file)?;
                    (number, file.public_key, format!("token '{label}'"))
                }
            };
            let ski = public_key.ski();
            if session.json {
                print_json(
                    &json!({"number": number, "name": name, "curve": alg.name(), "ski": hex::encode(ski), "place": place}),
                );
            } else {
                println!(
                    "Created signature key {number} for '{name}' ({}) in {place}, SKI {}",
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
                Sigkey::read(&session.home.sigkey_path(*number)?)?;
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
            let key = Sigkey::read(&path)?;
            std::fs::remove_file(&path)?;
            let mut settings = session.home.settings()?;
            settings.selected_sigkeys.retain(|n| *n != number);
            session.home.save_settings(&settings)?;
            println!("Deleted signature key {number}.");
            if let Sigkey::Token(file) = key {
                println!(
                    "Its key pair stays on token '{}' (CKA_ID {}): delete it there with the token's own tools if it is no longer needed.",
                    file.token(),
                    hex::encode(&file.place.key_id)
                );
            }
            Ok(())
        }
    }
}

/// The PKCS#11 module given with `--module` or `ROTOR_PKCS11_MODULE`.
pub(crate) fn module_of(module: Option<PathBuf>) -> Result<PathBuf> {
    module.ok_or_else(|| {
        anyhow!("--token needs the token's PKCS#11 module: --module PATH or ROTOR_PKCS11_MODULE")
    })
}

/// Generates a key pair for admin `name` inside the token of `place`, or takes the one already
/// there under the `--key-id` given (made with the token's own tools), and returns its record.
fn new_token_sigkey(
    session: &Session,
    name: &str,
    alg: SigAlg,
    place: TokenPlace,
) -> Result<TokenSigkeyFile> {
    let label = place.tokens.first().cloned().unwrap_or_default();
    let label = label.as_str();
    let token = session.token(label, &place.module)?;
    let public_key = with_token(&token, label, |token| {
        match token.find_signing_key(alg, &place.key_id)? {
            Some(existing) => Ok(existing),
            None => token.generate_signing_key(alg, &format!("rotor admin {name}"), &place.key_id),
        }
    })
    .map_err(|err| {
        if err
            .chain()
            .any(|cause| matches!(cause.downcast_ref(), Some(TokenError::Lacks(_))))
        {
            err.context(format!(
                "rotor keeps no signature key on token '{label}' for this curve; use another curve (YubiKey PIV: p256), another token, or a signature key file ('rotor sigkeys new' without --token)"
            ))
        } else {
            err
        }
    })?;
    for (number, path) in session.home.sigkeys()? {
        if Sigkey::read(&path).is_ok_and(|key| *key.public_key() == public_key) {
            bail!("signature key {number} already is the key pair with this id on token '{label}'");
        }
    }
    Ok(TokenSigkeyFile::new(name, public_key, place))
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
        match Sigkey::read(&path) {
            Ok(key) => {
                let ski = hex::encode(key.public_key().ski());
                let curve = key.public_key().alg.name();
                rows.push(vec![
                    number.to_string(),
                    selected.contains(&number).to_string(),
                    key.name().to_owned(),
                    curve.to_owned(),
                    key.place(),
                    format!("{}...", &ski[..30]),
                ]);
                view.push(json!({"number": number, "selected": selected.contains(&number), "name": key.name(), "curve": curve, "place": key.place(), "ski": ski}));
            }
            Err(err) => {
                rows.push(vec![
                    number.to_string(),
                    String::new(),
                    format!("(unreadable: {err})"),
                    String::new(),
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
                    "KEPT IN",
                    "SUBJECT KEY IDENTIFIER"
                ],
                &rows
            )
        );
    }
    Ok(())
}

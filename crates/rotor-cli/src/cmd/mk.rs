//! `rotor mk`: show the master key registers and key storage, load, commit, set immediate and
//! clear them; `mk rotate` lives in [`crate::cmd::rotate`].

use std::collections::BTreeMap;

use anyhow::{Context, Result, anyhow, bail};
use rotor_crypto::{Envelope, Secret32, Token, Vp, seal_to};
use rotor_server::rotation::Phase;
use rotor_unit::machine::envelope_context;
use rotor_unit::wire::{Action, CurrentState, NewState, Outcome, PART_CONTEXT, UnitStatus};
use serde::Serialize;
use serde_json::json;
use uuid::Uuid;

use crate::args::MkCommand;
use crate::output::{join_numbers, print_json, table};
use crate::session::{Session, Target};
use crate::signer::{SharedToken, with_token};
use crate::workstation::{Part, SecretFor};

/// `rotor mk …`
pub async fn mk(session: &Session, command: Option<MkCommand>) -> Result<()> {
    match command {
        None => show_registers(session).await,
        Some(MkCommand::Load { parts }) => load(session, &parts).await,
        Some(MkCommand::Commit { vp }) => {
            let vp = expected_vp(session, vp.as_deref(), NewState::FullUncommitted).await?;
            session
                .each_selected(&format!("new register committed (VP {vp})"), |_, _| {
                    Ok(Some(Action::Commit { vp }))
                })
                .await
        }
        Some(MkCommand::Setimm { vp }) => {
            let vp = expected_vp(session, vp.as_deref(), NewState::FullCommitted).await?;
            session.confirm(&format!(
                "Make the new master key (VP {vp}) current on the selected units? This does not reencrypt key storage: use it to initialize units or to finish a rotation whose reencryption is done."
            ))?;
            session
                .each_selected(&format!("new master key is current (VP {vp})"), |_, _| {
                    Ok(Some(Action::SetImmediate { vp }))
                })
                .await
        }
        Some(MkCommand::Rotate {
            abort: false,
            hold_before_promote,
        }) => {
            crate::cmd::rotate::rotate(session, crate::plan::Flow::Parts, hold_before_promote).await
        }
        Some(MkCommand::Rotate { abort: true, .. }) => crate::cmd::rotate::abort(session).await,
        Some(MkCommand::ClearNew) => {
            session.confirm("Clear the new master key register of the selected units?")?;
            session
                .each_selected("new register cleared", |_, _| Ok(Some(Action::ClearNew)))
                .await
        }
        Some(MkCommand::ClearCurrent) => {
            session.confirm(
                "Clear the current master key register of the selected units? Keys wrapped under it are unusable until the same master key is loaded again.",
            )?;
            session
                .each_selected("current register cleared", |_, _| {
                    Ok(Some(Action::ClearCurrent))
                })
                .await
        }
    }
}

/// Key versions of one instance under one master key, and the register of the selected units
/// that holds it (`None`: no selected unit does). Fields in the order `--json` has always shown.
#[derive(Debug, Serialize)]
pub(crate) struct StoredUnder {
    pub(crate) held_in: Option<&'static str>,
    pub(crate) instance: Uuid,
    pub(crate) key_versions: u64,
    pub(crate) vp: Vp,
}

/// Key storage per master key for each instance of the selected units.
pub(crate) async fn key_storage(
    session: &Session,
    units: &[(Target, UnitStatus)],
) -> Result<Vec<StoredUnder>> {
    let mut instances: Vec<Uuid> = units.iter().map(|(t, _)| t.instance).collect();
    instances.dedup();
    let mut out = Vec::new();
    for instance in instances {
        for count in session.service()?.keystore(instance).await? {
            let of_instance = units.iter().filter(|(t, _)| t.instance == instance);
            let held_in = of_instance
                .clone()
                .any(|(_, s)| {
                    s.current.state == CurrentState::Valid && s.current.vp.matches(&count.vp)
                })
                .then_some("current")
                .or_else(|| {
                    of_instance
                        .clone()
                        .any(|(_, s)| s.new.state != NewState::Empty && s.new.vp.matches(&count.vp))
                        .then_some("new")
                });
            out.push(StoredUnder {
                held_in,
                instance,
                key_versions: count.key_versions,
                vp: count.vp,
            });
        }
    }
    Ok(out)
}

async fn show_registers(session: &Session) -> Result<()> {
    let units = session.statuses(&session.selected().await?).await?;
    let storage = key_storage(session, &units).await?;
    for entry in storage.iter().filter(|s| s.held_in.is_none()) {
        eprintln!(
            "warning: {} key version(s) of instance {} are wrapped under master key VP {}, which no selected crypto unit holds; they stay unusable until that master key is loaded again",
            entry.key_versions, entry.instance, entry.vp
        );
    }
    let rotation = match units.first() {
        Some((target, _)) => session.service()?.rotation(target.instance).await?,
        None => None,
    };
    if session.json {
        let view: Vec<_> = units
            .iter()
            .map(|(t, s)| json!({"number": t.number, "id": t.unit.id, "current": s.current, "new": s.new, "rotation": s.rotation}))
            .collect();
        print_json(&json!({ "units": view, "key_storage": storage, "rotation": rotation }));
        return Ok(());
    }
    let mut rows = Vec::new();
    for (target, status) in &units {
        rows.push(vec![
            target.number.to_string(),
            "New".to_owned(),
            status.new.state.label().to_owned(),
            status.new.vp.to_hex(),
        ]);
        rows.push(vec![
            String::new(),
            "Current".to_owned(),
            status.current.state.label().to_owned(),
            status.current.vp.to_hex(),
        ]);
    }
    print!(
        "{}",
        table(
            &[
                "CRYPTO UNIT NUM",
                "REGISTER",
                "STATUS",
                "VERIFICATION PATTERN"
            ],
            &rows
        )
    );
    if let Some(rotation) = &rotation {
        let journal = &rotation.journal;
        println!("\nMASTER KEY ROTATION");
        println!(
            "{} → {}: {}",
            journal.from,
            journal.to,
            journal.phase.label()
        );
        if rotation.remaining > 0 || rotation.running {
            println!(
                "{} of {} rewrapped, {} left, {:.0} keys/s, about {} s to go",
                journal.done,
                journal.total,
                rotation.remaining,
                rotation.rate,
                rotation
                    .seconds_left
                    .map_or_else(|| "?".to_owned(), |s| format!("{s:.0}"))
            );
        }
        if !rotation.workers.is_empty() {
            println!("working on it: {}", rotation.workers.join(", "));
        }
        if journal.hold_before_promote && journal.phase != Phase::Completed {
            println!(
                "held before promotion: applications may rewrap their blobs to {}",
                journal.to
            );
        }
        if let Some(waiting) = &journal.waiting {
            println!("waiting: {waiting}");
        }
    }
    if !storage.is_empty() {
        let rows: Vec<Vec<String>> = storage
            .iter()
            .map(|s| {
                vec![
                    s.vp.to_hex(),
                    s.key_versions.to_string(),
                    s.held_in
                        .map_or("NO SELECTED UNIT".to_owned(), |r| format!("{r} register")),
                ]
            })
            .collect();
        println!("\nKEY STORAGE");
        print!(
            "{}",
            table(&["VERIFICATION PATTERN", "KEY VERSIONS", "HELD IN"], &rows)
        );
    }
    Ok(())
}

/// The VP the selected units' new registers agree on, or the one given.
async fn expected_vp(session: &Session, given: Option<&str>, state: NewState) -> Result<Vp> {
    if let Some(text) = given {
        return Vp::from_hex(text).ok_or_else(|| anyhow!("--vp must be 64 hex characters"));
    }
    let units = session.statuses(&session.selected().await?).await?;
    let mut seen: BTreeMap<String, Vec<usize>> = BTreeMap::new();
    for (target, status) in &units {
        if status.new.state != state {
            bail!(
                "crypto unit {}'s new register is {}, not {}; check 'rotor mk'",
                target.number,
                status.new.state.label(),
                state.label()
            );
        }
        seen.entry(status.new.vp.to_hex())
            .or_default()
            .push(target.number);
    }
    match seen.len() {
        1 => {
            let text = seen.keys().next().cloned().unwrap_or_default();
            Vp::from_hex(&text).ok_or_else(|| anyhow!("bad VP from unit"))
        }
        _ => {
            let detail: Vec<String> = seen
                .iter()
                .map(|(vp, numbers)| format!("units {}: {vp}", join_numbers(numbers)))
                .collect();
            bail!(
                "the selected units hold different new master keys:\n  {}\nload the same parts on every unit, or pass --vp",
                detail.join("\n  ")
            )
        }
    }
}

/// A key part ready to be sent to units.
enum Loadable {
    /// Decrypted from its file: sealed to each unit on this workstation.
    Clear(Secret32),
    /// On a token: wrapped to each unit inside the token.
    OnToken {
        label: String,
        token: SharedToken,
        key_id: Vec<u8>,
    },
}

impl Loadable {
    /// Key part `number`, unlocked: a file with its password, a token part with the PIN of the
    /// first of its tokens that is present.
    fn unlock(session: &Session, number: u32) -> Result<Self> {
        let path = session.home.part_path(number)?;
        match Part::read(&path)? {
            Part::File(file) => {
                let password = session.secret(&SecretFor::Part { number })?;
                Ok(Self::Clear(file.unlock(&path, &password)?))
            }
            Part::Token(file) => {
                let module = file.place.module();
                for label in &file.place.tokens {
                    if Token::is_present(&module, label)
                        .with_context(|| format!("token '{label}'"))?
                    {
                        return Ok(Self::OnToken {
                            label: label.clone(),
                            token: session.token(label, &module)?,
                            key_id: file.place.key_id.clone(),
                        });
                    }
                }
                bail!(
                    "key part {number} is on token {}, and none is present (module {}): insert one",
                    file.place.describe(),
                    module.display()
                )
            }
        }
    }

    /// The part in an envelope only the unit's importer key `recipient` opens.
    fn envelope(&self, recipient: &[u8], context: &[u8]) -> Result<Envelope> {
        match self {
            Self::Clear(part) => seal_to(recipient, context, part)
                .map_err(|_| anyhow!("the unit's importer key is not a valid P-256 key")),
            Self::OnToken {
                label,
                token,
                key_id,
            } => with_token(token, label, |token| token.wrap_part(key_id, recipient)),
        }
    }
}

async fn load(session: &Session, numbers: &[u32]) -> Result<()> {
    let parts = numbers
        .iter()
        .map(|number| Loadable::unlock(session, *number))
        .collect::<Result<Vec<_>>>()?;
    let targets = session.selected().await?;
    let mut report = Vec::new();
    for target in targets {
        let (outcome, _) = session.act(&target, Action::CreateImporter).await?;
        let Outcome::Importer { public_key } = outcome else {
            bail!(
                "crypto unit {} did not return an importer key",
                target.number
            );
        };
        let context = envelope_context(PART_CONTEXT, target.unit.id);
        let envelopes = parts
            .iter()
            .map(|part| part.envelope(&public_key, &context))
            .collect::<Result<Vec<_>>>()
            .with_context(|| format!("key parts for crypto unit {}", target.number))?;
        let (_, status) = session
            .act(
                &target,
                Action::LoadNew {
                    importer: public_key,
                    parts: envelopes,
                },
            )
            .await?;
        session.say(&format!(
            "crypto unit {}: new register {} (VP {})",
            target.number,
            status.new.state.label(),
            status.new.vp
        ));
        report.push(json!({"unit": target.number, "new": status.new}));
    }
    if session.json {
        print_json(&json!({ "units": report }));
    }
    Ok(())
}

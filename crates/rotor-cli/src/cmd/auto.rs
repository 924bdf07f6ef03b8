//! The recovery-unit flows: `rotor auto init` (a random master key made in a recovery unit and
//! copied to every other unit) and `rotor auto recover` (a recovery unit's current master key
//! copied to units that lost theirs).
//!
//! A master key moves between units only encrypted: the target makes a fresh importer key, the
//! recovery unit exports its register to it (threshold-signed), the target imports it into its
//! new register, commits it (threshold-signed) and sets it immediate. Every step is chosen from
//! the units' real state, so running a command again after a failure continues where it stopped.

use anyhow::{Result, bail};
use rotor_unit::wire::{Action, CurrentState, NewState, Register, Ski, UnitKind, UnitStatus};
use serde_json::json;

use crate::output::print_json;
use crate::session::{Session, Target};
use crate::transfer::transfer;
use crate::workstation::Sigkey;

/// The first recovery unit among `units`.
fn recovery_unit(units: &[(Target, UnitStatus)]) -> Result<&(Target, UnitStatus)> {
    units
        .iter()
        .find(|(t, _)| t.unit.kind == UnitKind::Recovery)
        .ok_or_else(|| {
            anyhow::anyhow!(
                "the instance has no recovery crypto unit; use 'rotor mk load' with key parts"
            )
        })
}

/// `rotor auto init`
pub async fn init(session: &Session, admins: &[u32], signature: u8, revocation: u8) -> Result<()> {
    let targets = session.whole_instance().await?;
    let mut files = Vec::new();
    for number in admins {
        files.push(Sigkey::read(&session.home.sigkey_path(*number)?)?);
    }
    let units = session.statuses(&targets).await?;
    recovery_unit(&units)?;
    // A unit that left imprint mode must already have exactly this configuration (a rerun).
    for (target, status) in &units {
        let installed: Vec<Ski> = status.admins.iter().map(|a| a.ski).collect();
        let wanted = files
            .iter()
            .all(|f| installed.contains(&Ski::of(f.public_key())));
        if !status.imprint
            && (!wanted
                || status.signature_threshold != signature
                || status.revocation_threshold != revocation)
        {
            bail!(
                "crypto unit {} already left imprint mode with other admins or thresholds; compare with 'rotor units compare' (zeroize only if its key storage is expendable)",
                target.number
            );
        }
    }

    for (index, file) in files.iter().enumerate() {
        session.say(&format!(
            "Installing {} of {} administrators....",
            index + 1,
            files.len()
        ));
        let ski = Ski::of(file.public_key());
        for (target, _) in &units {
            let status = session.status(target).await?;
            if status.imprint && !status.admins.iter().any(|a| a.ski == ski) {
                let action = Action::AddAdmin {
                    name: file.name().to_owned(),
                    public_key: file.public_key().clone(),
                };
                session.act(target, action).await?;
            }
        }
    }
    session.say("Setting signature thresholds....");
    for (target, _) in &units {
        if session.status(target).await?.imprint {
            session
                .act(
                    target,
                    Action::SetThresholds {
                        signature,
                        revocation,
                    },
                )
                .await?;
        }
    }

    let units = session.statuses(&targets).await?;
    let (source, source_status) = recovery_unit(&units)?;
    if source_status.current.state == CurrentState::Empty {
        session.say("Generating a random master key value....");
        session.act(source, Action::GenerateRandom).await?;
    }
    let source_status = session.status(source).await?;
    let vp = source_status.current.vp;
    let others: Vec<&(Target, UnitStatus)> = units
        .iter()
        .filter(|(t, _)| t.unit.id != source.unit.id)
        .collect();
    for (index, (target, status)) in others.iter().enumerate() {
        session.say(&format!(
            "Transferring the master key value to {} of {} crypto units....",
            index + 1,
            others.len()
        ));
        if status.current.state == CurrentState::Valid && status.current.vp.matches(&vp) {
            continue;
        }
        prepare_target(session, target, status).await?;
        transfer(session, source, Register::Current, target).await?;
    }
    if session.json {
        print_json(&json!({"units": units.len(), "vp": vp}));
    } else {
        println!("OK");
        println!("The selected service instance has been initialized (master key VP {vp}).");
        println!("Check it with 'rotor units compare'.");
    }
    Ok(())
}

/// A target must have an empty current register and an empty new register (or one left over
/// from an interrupted transfer, which is cleared).
async fn prepare_target(session: &Session, target: &Target, status: &UnitStatus) -> Result<()> {
    if status.current.state == CurrentState::Valid {
        bail!(
            "crypto unit {} holds another master key (VP {}); it would be overwritten. Clear it only if no key depends on it",
            target.number,
            status.current.vp
        );
    }
    if status.new.state != NewState::Empty {
        session.act(target, Action::ClearNew).await?;
    }
    Ok(())
}

/// `rotor auto recover`
pub async fn recover(session: &Session) -> Result<()> {
    let targets = session.selected().await?;
    let units = session.statuses(&targets).await?;
    let (source, source_status) = recovery_unit(&units)?;
    if source_status.current.state != CurrentState::Valid {
        bail!(
            "recovery crypto unit {} has no current master key to copy",
            source.number
        );
    }
    let vp = source_status.current.vp;
    let mut recovered = Vec::new();
    for (target, status) in &units {
        if target.unit.id == source.unit.id
            || (status.current.state == CurrentState::Valid && status.current.vp.matches(&vp))
        {
            continue;
        }
        if status.imprint {
            bail!(
                "crypto unit {} is in imprint mode; install the same admins and thresholds first (or use 'rotor auto init')",
                target.number
            );
        }
        prepare_target(session, target, status).await?;
        session.say(&format!(
            "Recovering the master key of crypto unit {}....",
            target.number
        ));
        transfer(session, source, Register::Current, target).await?;
        recovered.push(target.number);
    }
    if session.json {
        print_json(&json!({"recovered": recovered, "vp": vp}));
    } else if recovered.is_empty() {
        println!("Every selected crypto unit already holds the master key (VP {vp}).");
    } else {
        println!(
            "OK: master key VP {vp} recovered on {} crypto unit(s).",
            recovered.len()
        );
    }
    Ok(())
}

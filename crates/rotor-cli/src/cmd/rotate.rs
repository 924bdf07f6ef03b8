//! `rotor mk rotate` and `rotor auto rotate`: the whole master key rotation of one instance,
//! resumable from any point, following [`crate::plan`]; and `rotor mk rotate --abort`.

use std::io::{IsTerminal, Write};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use rotor_crypto::Vp;
use rotor_server::rotation::{Phase, RotationView};
use rotor_unit::wire::{Action, RotationLock};
use serde_json::json;
use uuid::Uuid;

use crate::output::print_json;
use crate::plan::{Flow, JournalView, Step, UnitView, plan};
use crate::session::{Session, Target};
use crate::transfer::transfer_new;

/// Reads the state, plans, acts, until done; with `hold`, stops before the first promotion
/// (the journal records the hold) so applications can rewrap their blobs.
pub async fn rotate(session: &Session, flow: Flow, hold: bool) -> Result<()> {
    let targets = session.whole_instance().await?;
    let instance = targets[0].instance;
    let started = Instant::now();
    let mut reencryption: Option<RotationView> = None;
    let mut promoted = 0usize;
    let mut completed_now = false;
    let mut announced = false;
    // The automatic flow cannot tell from the units whether a completed rotation is the one
    // it was running when killed: the workstation remembers the one it started.
    let mut unfinished = session.home.unfinished_rotations()?;
    if flow == Flow::Auto {
        unfinished.entry(instance).or_insert(None);
        session.home.save_unfinished_rotations(&unfinished)?;
    }
    loop {
        let units = session.statuses(&targets).await?;
        let views: Vec<UnitView> = units
            .iter()
            .map(|(t, s)| UnitView::of(t.number, s))
            .collect();
        let journal_view = session
            .service()?
            .rotation(instance)
            .await?
            .map(|view| JournalView::of(&view.journal));
        let ours_completed = journal_view.as_ref().is_some_and(|j| {
            j.phase == Phase::Completed
                && unfinished.get(&instance).copied().flatten() == Some(j.to)
                && views.iter().all(|u| u.promoted(&j.to))
        });
        if completed_now || ours_completed {
            if let Some(j) = &journal_view {
                finish_report(session, j, reencryption.as_ref(), promoted, started);
            }
            unfinished.remove(&instance);
            session.home.save_unfinished_rotations(&unfinished)?;
            return Ok(());
        }
        let step = plan(flow, &views, journal_view.as_ref())?;
        // The seeds' first message, once, when this command starts working on the rotation.
        if !announced && !matches!(step, Step::Done { .. }) {
            session.say("Master key rotation started.");
            announced = true;
        }
        if let (Flow::Auto, Some(to)) = (flow, step.target())
            && unfinished.get(&instance).copied().flatten() != Some(to)
        {
            unfinished.insert(instance, Some(to));
            session.home.save_unfinished_rotations(&unfinished)?;
        }
        let unit = |number: usize| -> Result<&Target> {
            units
                .iter()
                .find(|(t, _)| t.number == number)
                .map(|(t, _)| t)
                .ok_or_else(|| anyhow!("crypto unit {number} vanished"))
        };
        match step {
            Step::Generate { unit: number } => {
                session.say("Generating a random master key value in the recovery crypto unit....");
                session.act(unit(number)?, Action::GenerateRandom).await?;
            }
            Step::Distribute {
                source,
                register,
                target,
                vp,
            } => {
                session.say(&format!(
                    "Transferring the new master key {vp} to crypto unit {target}...."
                ));
                transfer_new(session, unit(source)?, register, unit(target)?).await?;
            }
            Step::Commit { unit: number, vp } => {
                session.say(&format!(
                    "Committing the new master key on crypto unit {number}...."
                ));
                session.act(unit(number)?, Action::Commit { vp }).await?;
            }
            Step::Pin { unit: number, vp } => {
                session.say(&format!(
                    "Pinning the new master key register of crypto unit {number}...."
                ));
                session.act(unit(number)?, Action::PinNew { vp }).await?;
            }
            Step::Reencrypt { from, to } => {
                session.say("Reencrypting key storage....");
                reencryption = Some(reencrypt(session, instance, from, to, hold).await?);
                session.say("KMS CRK rewrap successful.");
            }
            Step::Promote { vp, .. } if hold => {
                let from = journal_view.as_ref().map(|j| j.from);
                if session.json {
                    print_json(&json!({"from_vp": from, "to_vp": vp, "held_before_promote": true}));
                } else {
                    println!(
                        "Held before promotion: key storage is under the new master key {vp}, and new blobs are made under it. Applications rewrap their own blobs now (GREP11 RewrapKeyBlob, /v1/blobs/rewrap); then run this command again without --hold-before-promote to promote every unit."
                    );
                }
                return Ok(());
            }
            Step::Promote { unit: number, vp } => {
                let old = units
                    .iter()
                    .find(|(t, _)| t.number == number)
                    .map(|(_, s)| s.current.vp)
                    .ok_or_else(|| anyhow!("crypto unit {number} vanished"))?;
                nothing_left_under(session, instance, &old, &vp).await?;
                session.say(&format!(
                    "Setting the new master key current on crypto unit {number}...."
                ));
                session
                    .act(unit(number)?, Action::SetImmediate { vp })
                    .await?;
                promoted += 1;
            }
            Step::Complete => {
                session.service()?.complete_rotation(instance).await?;
                completed_now = true;
            }
            Step::Done { from, to } => {
                unfinished.remove(&instance);
                session.home.save_unfinished_rotations(&unfinished)?;
                if session.json {
                    print_json(&json!({"from_vp": from, "to_vp": to, "already_done": true}));
                } else {
                    session.say(&format!(
                        "Every crypto unit already has master key {to} current; nothing to rotate."
                    ));
                }
                return Ok(());
            }
        }
    }
}

/// The guard before a promotion, checked here rather than trusted to the units' rotation lock:
/// no key version of the instance may still be wrapped under the master key `old` that the
/// promotion replaces with `new` (the unit's signed lock is released by the service's report,
/// which a faulty service could send early).
async fn nothing_left_under(session: &Session, instance: Uuid, old: &Vp, new: &Vp) -> Result<()> {
    let left: u64 = session
        .service()?
        .keystore(instance)
        .await?
        .iter()
        .filter(|count| count.vp.matches(old) && !count.vp.matches(new))
        .map(|count| count.key_versions)
        .sum();
    if left > 0 {
        bail!(
            "{left} key version(s) of instance {instance} are still wrapped under master key {old}; no unit is promoted until reencryption has moved them all. Run 'rotor mk rotate' again to let it finish"
        );
    }
    Ok(())
}

fn finish_report(
    session: &Session,
    journal: &JournalView,
    reencryption: Option<&RotationView>,
    promoted: usize,
    started: Instant,
) {
    let seconds = started.elapsed().as_secs_f64();
    if session.json {
        print_json(&json!({
            "from_vp": journal.from,
            "to_vp": journal.to,
            "phase": journal.phase,
            "rewrapped": reencryption.map(|r| r.journal.done),
            "units_promoted_now": promoted,
            "seconds": seconds,
        }));
    } else {
        session.say("OK");
        session.say("Master key rotation successful.");
        session.say(&format!(
            "The master key rotation is complete: every crypto unit has master key {} current ({seconds:.1} s).",
            journal.to
        ));
    }
}

/// Starts or resumes reencryption and shows its progress until the service reports it done.
async fn reencrypt(
    session: &Session,
    instance: Uuid,
    from: Vp,
    to: Vp,
    hold: bool,
) -> Result<RotationView> {
    session
        .service()?
        .begin_rotation(instance, from, to, hold)
        .await
        .context("the service refused to reencrypt key storage")?;
    wait_for(session, instance, &[Phase::Reencrypted, Phase::Completed]).await
}

/// Polls the journal, drawing a progress bar on a terminal, until its phase is one of `phases`.
async fn wait_for(session: &Session, instance: Uuid, phases: &[Phase]) -> Result<RotationView> {
    let bar = session.prints_progress() && std::io::stderr().is_terminal();
    let mut last_line = Instant::now() - Duration::from_secs(10);
    loop {
        let Some(view) = session.service()?.rotation(instance).await? else {
            bail!("the service has no rotation journal for instance {instance}");
        };
        let total = view.journal.total;
        if phases.contains(&view.journal.phase) {
            if bar {
                eprintln!("\r{}", progress_line(total, total, 0, view.rate, Some(0.0)));
            }
            return Ok(view);
        }
        let mut line = progress_line(
            total,
            view.journal.done,
            view.remaining,
            view.rate,
            view.seconds_left,
        );
        if let Some(waiting) = &view.journal.waiting {
            line.push_str(&format!(" (waiting: {waiting})"));
        }
        if bar {
            // Carriage return and erase to the end of the line: the bar redraws in place.
            eprint!("\r{line}\x1b[K");
            let _ = std::io::stderr().flush();
        } else if session.prints_progress() && last_line.elapsed() >= Duration::from_secs(5) {
            eprintln!("{line}");
            last_line = Instant::now();
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn progress_line(total: u64, done: u64, remaining: u64, rate: f64, left: Option<f64>) -> String {
    let whole = (done + remaining).max(total).max(1);
    let filled = usize::try_from(done.min(whole) * 30 / whole).unwrap_or(30);
    format!(
        "[{}{}] {done}/{whole} keys rewrapped, {:.0} keys/s, {} left",
        "#".repeat(filled),
        "-".repeat(30 - filled),
        rate,
        left.map_or_else(|| "?".to_owned(), |s| format!("{s:.0} s"))
    )
}

/// `rotor mk rotate --abort`: every pinned unit accepts the abort (threshold-signed), then the
/// service rewraps key storage back to the old master key and releases the units.
pub async fn abort(session: &Session) -> Result<()> {
    let targets = session.whole_instance().await?;
    let instance = targets[0].instance;
    let Some(rotation) = session.service()?.rotation(instance).await? else {
        bail!("no rotation is on record for this instance; there is nothing to abort");
    };
    let view = JournalView::of(&rotation.journal);
    if !view.open() {
        bail!(
            "the last rotation is {}; there is nothing to abort",
            view.phase.label()
        );
    }
    let units = session.statuses(&targets).await?;
    if let Some((target, _)) = units.iter().find(|(_, s)| s.current.vp.matches(&view.to)) {
        bail!(
            "crypto unit {} is already promoted to the new master key; the rotation can only be finished ('rotor mk rotate')",
            target.number
        );
    }
    session.confirm(&format!(
        "Abort the rotation to master key {} and rewrap key storage back to {}?",
        view.to, view.from
    ))?;
    for (target, status) in &units {
        if matches!(
            status.rotation,
            RotationLock::Reencrypting | RotationLock::Reencrypted
        ) {
            session.say(&format!(
                "Aborting the rotation on crypto unit {}....",
                target.number
            ));
            session
                .act(target, Action::AbortRotation { vp: view.to })
                .await?;
        }
    }
    session.service()?.abort_rotation(instance).await?;
    session.say("Rewrapping key storage back to the old master key....");
    wait_for(session, instance, &[Phase::Aborted]).await?;
    if session.json {
        print_json(&json!({"aborted": true, "current_vp": view.from, "new_vp": view.to}));
    } else {
        println!(
            "OK: the rotation is aborted; key storage is under master key {} again. The new registers still hold {}; clear them with 'rotor mk clear-new' if it is not wanted.",
            view.from, view.to
        );
    }
    Ok(())
}

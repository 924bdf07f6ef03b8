//! `rotor mk rotate` and `rotor auto rotate`: the whole master key rotation of one instance,
//! resumable from any point, following [`crate::plan`]; and `rotor mk rotate --abort`.

use std::io::{IsTerminal, Write};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use rotor_crypto::Vp;
use rotor_unit::wire::{Action, RotationLock, UnitStatus};
use serde_json::{Value, json};

use crate::output::print_json;
use crate::plan::{Flow, JournalView, Step, UnitView, plan};
use crate::session::{Ctx, Target, whole_instance};
use crate::transfer::transfer_new;

/// Reads the state, plans, acts, until done.
pub async fn rotate(ctx: &Ctx, flow: Flow) -> Result<()> {
    let targets = whole_instance(ctx).await?;
    let instance = targets[0].instance;
    let started = Instant::now();
    let mut reencryption: Option<Value> = None;
    let mut promoted = 0usize;
    let mut completed_now = false;
    // The automatic flow cannot tell from the units whether a completed rotation is the one
    // it was running when killed: the workstation remembers the one it started.
    let mut unfinished = ctx.home.unfinished_rotations()?;
    if flow == Flow::Auto {
        unfinished.entry(instance).or_insert(None);
        ctx.home.save_unfinished_rotations(&unfinished)?;
    }
    loop {
        let (units, views) = read_units(ctx, &targets).await?;
        let journal = journal(ctx, instance).await?;
        let journal_view: Option<JournalView> = journal
            .as_ref()
            .and_then(|j| serde_json::from_value(j.clone()).ok());
        let ours_completed = journal_view.as_ref().is_some_and(|j| {
            j.phase == "completed"
                && unfinished.get(&instance).copied().flatten() == Some(j.to)
                && views.iter().all(|u| u.promoted(&j.to))
        });
        if completed_now || ours_completed {
            if let Some(j) = &journal_view {
                finish_report(ctx, j, reencryption.as_ref(), promoted, started);
            }
            unfinished.remove(&instance);
            ctx.home.save_unfinished_rotations(&unfinished)?;
            return Ok(());
        }
        let step = plan(flow, &views, journal_view.as_ref())?;
        if let (Flow::Auto, Some(to)) = (flow, step.target())
            && unfinished.get(&instance).copied().flatten() != Some(to)
        {
            unfinished.insert(instance, Some(to));
            ctx.home.save_unfinished_rotations(&unfinished)?;
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
                say(
                    ctx,
                    "Generating a random master key value in the recovery crypto unit....",
                );
                ctx.act(unit(number)?, Action::GenerateRandom).await?;
            }
            Step::Distribute {
                source,
                register,
                target,
                vp,
            } => {
                say(
                    ctx,
                    &format!("Transferring the new master key {vp} to crypto unit {target}...."),
                );
                transfer_new(ctx, unit(source)?, register, unit(target)?).await?;
            }
            Step::Commit { unit: number, vp } => {
                say(
                    ctx,
                    &format!("Committing the new master key on crypto unit {number}...."),
                );
                ctx.act(unit(number)?, Action::Commit { vp }).await?;
            }
            Step::Pin { unit: number, vp } => {
                say(
                    ctx,
                    &format!("Pinning the new master key register of crypto unit {number}...."),
                );
                ctx.act(unit(number)?, Action::PinNew { vp }).await?;
            }
            Step::Reencrypt { from, to } => {
                say(ctx, "Reencrypting key storage....");
                reencryption = Some(reencrypt(ctx, instance, &from, &to).await?);
                say(ctx, "KMS CRK rewrap successful.");
            }
            Step::Promote { unit: number, vp } => {
                say(
                    ctx,
                    &format!("Setting the new master key current on crypto unit {number}...."),
                );
                ctx.act(unit(number)?, Action::SetImmediate { vp }).await?;
                promoted += 1;
            }
            Step::Complete => {
                service(
                    ctx,
                    reqwest::Method::POST,
                    &format!("/v1/instances/{instance}/rotation/complete"),
                    None,
                )
                .await?;
                completed_now = true;
            }
            Step::Done { from, to } => {
                unfinished.remove(&instance);
                ctx.home.save_unfinished_rotations(&unfinished)?;
                if ctx.json {
                    print_json(&json!({"from_vp": from, "to_vp": to, "already_done": true}));
                } else {
                    println!(
                        "Every crypto unit already has master key {to} current; nothing to rotate."
                    );
                }
                return Ok(());
            }
        }
    }
}

fn finish_report(
    ctx: &Ctx,
    journal: &JournalView,
    reencryption: Option<&Value>,
    promoted: usize,
    started: Instant,
) {
    let seconds = started.elapsed().as_secs_f64();
    if ctx.json {
        print_json(&json!({
            "from_vp": journal.from,
            "to_vp": journal.to,
            "phase": journal.phase,
            "rewrapped": reencryption.map(|r| r["done"].clone()),
            "units_promoted_now": promoted,
            "seconds": seconds,
        }));
    } else {
        println!("OK");
        println!(
            "The master key rotation is complete: every crypto unit has master key {} current ({seconds:.1} s).",
            journal.to
        );
    }
}

fn say(ctx: &Ctx, line: &str) {
    if !ctx.json {
        println!("{line}");
    }
}

async fn read_units(
    ctx: &Ctx,
    targets: &[Target],
) -> Result<(Vec<(Target, UnitStatus)>, Vec<UnitView>)> {
    let mut units = Vec::new();
    for target in targets {
        let (status, _) = ctx.status(target).await?;
        units.push((target.clone(), status));
    }
    let views = units
        .iter()
        .map(|(t, s)| UnitView::of(t.number, s))
        .collect();
    Ok((units, views))
}

/// Calls a service route; a refusal becomes a [`ClientError::Rejected`] (exit code 3).
pub async fn service(
    ctx: &Ctx,
    method: reqwest::Method,
    path: &str,
    body: Option<Value>,
) -> Result<Value> {
    use rotor_unit::client::ClientError;
    let url = format!("{}{path}", ctx.endpoint()?);
    let mut request = ctx
        .http()
        .request(method, &url)
        .bearer_auth(ctx.token().await?);
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request
        .send()
        .await
        .map_err(|err| ClientError::Unreachable(format!("{url}: {err}")))?;
    let status = response.status();
    let body: Value = response
        .json()
        .await
        .map_err(|err| ClientError::Unreachable(format!("{url}: {err}")))?;
    if status.is_success() {
        return Ok(body);
    }
    if status.is_client_error() {
        return Err(ClientError::Rejected(rotor_unit::wire::ErrorBody {
            code: body["code"].as_str().unwrap_or("refused").to_owned(),
            message: body["message"].as_str().unwrap_or("refused").to_owned(),
        })
        .into());
    }
    Err(ClientError::Relay {
        status: status.as_u16(),
        body: body.to_string(),
    }
    .into())
}

/// The instance's rotation journal with progress, if any.
pub async fn journal(ctx: &Ctx, instance: uuid::Uuid) -> Result<Option<Value>> {
    let body = service(
        ctx,
        reqwest::Method::GET,
        &format!("/v1/instances/{instance}/rotation"),
        None,
    )
    .await?;
    Ok(Some(body["rotation"].clone()).filter(|r| !r.is_null()))
}

/// Starts or resumes reencryption and shows its progress until the service reports it done.
async fn reencrypt(ctx: &Ctx, instance: uuid::Uuid, from: &Vp, to: &Vp) -> Result<Value> {
    service(
        ctx,
        reqwest::Method::POST,
        &format!("/v1/instances/{instance}/rotation"),
        Some(json!({"from_vp": from, "to_vp": to})),
    )
    .await
    .context("the service refused to reencrypt key storage")?;
    wait_for(ctx, instance, &["reencrypted", "completed"]).await
}

/// Polls the journal, drawing a progress bar on a terminal, until its phase is one of `phases`.
async fn wait_for(ctx: &Ctx, instance: uuid::Uuid, phases: &[&str]) -> Result<Value> {
    let bar = !ctx.json && std::io::stderr().is_terminal();
    let mut last_line = Instant::now() - Duration::from_secs(10);
    loop {
        let Some(view) = journal(ctx, instance).await? else {
            bail!("the service has no rotation journal for instance {instance}");
        };
        let phase = view["phase"].as_str().unwrap_or_default().to_owned();
        let total = view["total"].as_u64().unwrap_or(0);
        let done = view["done"].as_u64().unwrap_or(0);
        let remaining = view["remaining"].as_u64().unwrap_or(0);
        if phases.contains(&phase.as_str()) {
            if bar {
                eprintln!(
                    "\r{}",
                    progress_line(total, total, 0, view["rate"].as_f64(), Some(0.0))
                );
            }
            return Ok(view);
        }
        let mut line = progress_line(
            total,
            done,
            remaining,
            view["rate"].as_f64(),
            view["seconds_left"].as_f64(),
        );
        if let Some(waiting) = view["waiting"].as_str() {
            line.push_str(&format!(" (waiting: {waiting})"));
        }
        if bar {
            // Carriage return and erase to the end of the line: the bar redraws in place.
            eprint!("\r{line}\x1b[K");
            let _ = std::io::stderr().flush();
        } else if !ctx.json && last_line.elapsed() >= Duration::from_secs(5) {
            eprintln!("{line}");
            last_line = Instant::now();
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn progress_line(
    total: u64,
    done: u64,
    remaining: u64,
    rate: Option<f64>,
    left: Option<f64>,
) -> String {
    let whole = (done + remaining).max(total).max(1);
    let filled = usize::try_from(done.min(whole) * 30 / whole).unwrap_or(30);
    format!(
        "[{}{}] {done}/{whole} keys rewrapped, {:.0} keys/s, {} left",
        "#".repeat(filled),
        "-".repeat(30 - filled),
        rate.unwrap_or(0.0),
        left.map_or_else(|| "?".to_owned(), |s| format!("{s:.0} s"))
    )
}

/// `rotor mk rotate --abort`: every pinned unit accepts the abort (threshold-signed), then the
/// service rewraps key storage back to the old master key and releases the units.
pub async fn abort(ctx: &Ctx) -> Result<()> {
    let targets = whole_instance(ctx).await?;
    let instance = targets[0].instance;
    let Some(journal) = journal(ctx, instance).await? else {
        bail!("no rotation is on record for this instance; there is nothing to abort");
    };
    let view: JournalView =
        serde_json::from_value(journal).context("unexpected rotation journal")?;
    if !view.open() {
        bail!(
            "the last rotation is {}; there is nothing to abort",
            view.phase
        );
    }
    let (units, _) = read_units(ctx, &targets).await?;
    if let Some((target, _)) = units.iter().find(|(_, s)| s.current.vp.matches(&view.to)) {
        bail!(
            "crypto unit {} is already promoted to the new master key; the rotation can only be finished ('rotor mk rotate')",
            target.number
        );
    }
    ctx.confirm(&format!(
        "Abort the rotation to master key {} and rewrap key storage back to {}?",
        view.to, view.from
    ))?;
    for (target, status) in &units {
        if matches!(
            status.rotation,
            RotationLock::Reencrypting | RotationLock::Reencrypted
        ) {
            say(
                ctx,
                &format!("Aborting the rotation on crypto unit {}....", target.number),
            );
            ctx.act(target, Action::AbortRotation { vp: view.to })
                .await?;
        }
    }
    service(
        ctx,
        reqwest::Method::POST,
        &format!("/v1/instances/{instance}/rotation/abort"),
        None,
    )
    .await?;
    say(ctx, "Rewrapping key storage back to the old master key....");
    wait_for(ctx, instance, &["aborted"]).await?;
    if ctx.json {
        print_json(&json!({"aborted": true, "current_vp": view.from, "new_vp": view.to}));
    } else {
        println!(
            "OK: the rotation is aborted; key storage is under master key {} again. The new registers still hold {}; clear them with 'rotor mk clear-new' if it is not wanted.",
            view.from, view.to
        );
    }
    Ok(())
}

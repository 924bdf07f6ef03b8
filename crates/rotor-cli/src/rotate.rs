//! `rotor mk rotate` and `rotor auto rotate`: the whole master key rotation of one instance,
//! resumable from any point.
//!
//! [`plan`] is pure: from the units' registers and the service's rotation journal it picks the
//! one next step. The commands loop — read the real state, plan, do the step — until the plan
//! says done, so running a command again after any failure continues from where things really
//! are, never from what an operator saw. A unit already promoted counts as done; a unit that
//! lost its new register gets it again from a recovery unit that holds it.

use std::io::{IsTerminal, Write};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use rotor_crypto::Vp;
use rotor_unit::wire::{
    Action, CurrentState, NewState, Outcome, Register, RotationLock, Ski, UnitKind, UnitStatus,
};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::admin::{Ctx, Target};
use crate::output::print_json;

/// Which HPCS flow brings the new master key.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Flow {
    /// Key parts loaded and committed by admins (`mk load`, `mk commit`).
    Parts,
    /// A random key made in a recovery unit and exported to the others.
    Auto,
}

/// A unit as the planner sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UnitView {
    /// The number `rotor units` gives it.
    pub number: usize,
    /// Operational or recovery.
    pub kind: UnitKind,
    /// Imprint mode.
    pub imprint: bool,
    /// Signature threshold.
    pub signature_threshold: u8,
    /// Installed admins.
    pub admins: Vec<Ski>,
    /// Current register VP, if valid.
    pub current: Option<Vp>,
    /// New register state and VP.
    pub new: NewState,
    /// New register VP (all zeros when empty).
    pub new_vp: Vp,
    /// Rotation lock.
    pub rotation: RotationLock,
}

impl UnitView {
    /// The view of a unit's status.
    pub fn of(number: usize, status: &UnitStatus) -> Self {
        Self {
            number,
            kind: status.kind,
            imprint: status.imprint,
            signature_threshold: status.signature_threshold,
            admins: status.admins.iter().map(|a| a.ski).collect(),
            current: (status.current.state == CurrentState::Valid).then_some(status.current.vp),
            new: status.new.state,
            new_vp: status.new.vp,
            rotation: status.rotation,
        }
    }

    fn holds_new(&self, vp: &Vp) -> bool {
        self.new != NewState::Empty && self.new_vp.matches(vp)
    }

    fn promoted(&self, to: &Vp) -> bool {
        self.current.is_some_and(|current| current.matches(to))
    }
}

/// The service's rotation journal, as far as the planner needs it.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
pub struct JournalView {
    /// Source master key.
    #[serde(rename = "from")]
    pub from: Vp,
    /// Target master key.
    pub to: Vp,
    /// `reencrypting`, `reencrypted`, `aborting`, `aborted` or `completed`.
    pub phase: String,
}

impl JournalView {
    fn open(&self) -> bool {
        !matches!(self.phase.as_str(), "aborted" | "completed")
    }
}

/// The next thing to do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Step {
    /// A random new master key in this recovery unit's new register.
    Generate {
        /// Unit number.
        unit: usize,
    },
    /// Copy the key `vp` from `source` (its new register, or its current one when promoted)
    /// into the new register of `target`.
    Distribute {
        /// Recovery unit holding the key.
        source: usize,
        /// Its register holding it.
        register: Register,
        /// Unit that lacks it.
        target: usize,
        /// The key's VP.
        vp: Vp,
    },
    /// Commit the new register.
    Commit {
        /// Unit number.
        unit: usize,
        /// Its VP.
        vp: Vp,
    },
    /// Pin the committed new register.
    Pin {
        /// Unit number.
        unit: usize,
        /// Its VP.
        vp: Vp,
    },
    /// Let the service reencrypt key storage (start or resume) and wait for it.
    Reencrypt {
        /// Source.
        from: Vp,
        /// Target.
        to: Vp,
    },
    /// Promote the new register to current.
    Promote {
        /// Unit number.
        unit: usize,
        /// Its VP.
        vp: Vp,
    },
    /// Every unit is promoted: close the journal.
    Complete,
    /// Nothing left to do.
    Done {
        /// Source.
        from: Vp,
        /// Target.
        to: Vp,
    },
}

impl Step {
    /// The master key the rotation moves to, where the step names it.
    fn target(&self) -> Option<Vp> {
        match self {
            Self::Distribute { vp, .. }
            | Self::Commit { vp, .. }
            | Self::Pin { vp, .. }
            | Self::Promote { vp, .. } => Some(*vp),
            Self::Reencrypt { to, .. } | Self::Done { to, .. } => Some(*to),
            Self::Generate { .. } | Self::Complete => None,
        }
    }
}

/// Checks that hold before any rotation: one whole instance (checked by the caller), no unit in
/// imprint mode, equal signature thresholds, enough common admins for them.
fn precheck(units: &[UnitView]) -> Result<()> {
    if let Some(unit) = units.iter().find(|u| u.imprint) {
        bail!(
            "crypto unit {} is in imprint mode; initialize it first ('rotor auto init' or admins and thresholds)",
            unit.number
        );
    }
    let thresholds: Vec<String> = units
        .iter()
        .map(|u| format!("unit {}: {}", u.number, u.signature_threshold))
        .collect();
    if units
        .iter()
        .any(|u| u.signature_threshold != units[0].signature_threshold)
    {
        bail!(
            "the signature thresholds differ ({}); set the same thresholds on every unit",
            thresholds.join(", ")
        );
    }
    let common = units[0]
        .admins
        .iter()
        .filter(|ski| units.iter().all(|u| u.admins.contains(ski)))
        .count();
    if common < usize::from(units[0].signature_threshold) {
        bail!(
            "only {common} admin(s) are installed on every unit, fewer than the signature threshold of {}; install the same admins everywhere",
            units[0].signature_threshold
        );
    }
    Ok(())
}

fn differing(units: &[UnitView], value: impl Fn(&UnitView) -> String) -> String {
    units
        .iter()
        .map(|u| format!("unit {}: {}", u.number, value(u)))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The rotation's source and target, from the journal when one is open, else from the units.
fn endpoints(
    flow: Flow,
    units: &[UnitView],
    journal: Option<&JournalView>,
) -> Result<(Vp, Option<Vp>)> {
    if let Some(journal) = journal.filter(|j| j.open()) {
        if journal.phase == "aborting" {
            bail!(
                "admins aborted this rotation; run 'rotor mk rotate --abort' to finish rewrapping key storage back to master key {}",
                journal.from
            );
        }
        return Ok((journal.from, Some(journal.to)));
    }
    let Some(from) = units[0].current else {
        bail!(
            "crypto unit {}'s current register is empty; every unit needs the current master key (see 'rotor auto recover')",
            units[0].number
        );
    };
    if units
        .iter()
        .any(|u| !u.current.is_some_and(|c| c.matches(&from)))
    {
        bail!(
            "the current registers differ ({}); every unit must hold the same current master key",
            differing(units, |u| u
                .current
                .map_or_else(|| "Empty".to_owned(), |vp| vp.to_hex()))
        );
    }
    match flow {
        Flow::Parts => {
            if units.iter().any(|u| u.new != NewState::FullCommitted)
                || units.iter().any(|u| !u.new_vp.matches(&units[0].new_vp))
            {
                bail!(
                    "every new register must be Full Committed with one VP ({}); run 'rotor mk load' and 'rotor mk commit' on every unit",
                    differing(units, |u| format!("{} {}", u.new.label(), u.new_vp))
                );
            }
            Ok((from, Some(units[0].new_vp)))
        }
        Flow::Auto => {
            // A key in a recovery unit's new register is this command's own, from a run that
            // stopped part way; anything else in a new register is not ours to overwrite.
            let ours = units
                .iter()
                .find(|u| u.kind == UnitKind::Recovery && u.new != NewState::Empty)
                .map(|u| u.new_vp);
            let foreign: Vec<&UnitView> = units
                .iter()
                .filter(|u| {
                    u.new != NewState::Empty && ours.is_none_or(|vp| !u.new_vp.matches(&vp))
                })
                .collect();
            if !foreign.is_empty() {
                bail!(
                    "the new registers must be Empty before an automatic rotation ({}); clear them with 'rotor mk clear-new' if nothing depends on them",
                    differing(units, |u| format!("{} {}", u.new.label(), u.new_vp))
                );
            }
            Ok((from, ours))
        }
    }
}

/// The next step of the rotation, from the units' state and the service's journal.
pub fn plan(flow: Flow, units: &[UnitView], journal: Option<&JournalView>) -> Result<Step> {
    if units.is_empty() {
        bail!("no crypto unit is selected");
    }
    precheck(units)?;
    let open = journal.filter(|j| j.open());
    if let Some(last) = journal.filter(|j| j.phase == "completed")
        && flow == Flow::Parts
        && units
            .iter()
            .all(|u| u.promoted(&last.to) && u.new == NewState::Empty)
    {
        return Ok(Step::Done {
            from: last.from,
            to: last.to,
        });
    }
    let (from, to) = endpoints(flow, units, journal)?;
    let Some(to) = to else {
        let recovery = units
            .iter()
            .find(|u| u.kind == UnitKind::Recovery)
            .ok_or_else(|| anyhow!("the instance has no recovery crypto unit; rotate with key parts ('rotor mk load', 'rotor mk commit', 'rotor mk rotate')"))?;
        return Ok(Step::Generate {
            unit: recovery.number,
        });
    };
    if let Some(unit) = units
        .iter()
        .find(|u| !u.promoted(&to) && !u.holds_new(&to) && u.new != NewState::Empty)
    {
        bail!(
            "crypto unit {}'s new register holds another key (VP {}) than this rotation's {to}",
            unit.number,
            unit.new_vp
        );
    }
    if let Some(unit) = units.iter().find(|u| u.rotation == RotationLock::Aborting) {
        bail!(
            "crypto unit {} accepted an abort; run 'rotor mk rotate --abort' to finish it",
            unit.number
        );
    }
    let reencrypted = open.is_some_and(|j| j.phase == "reencrypted");
    if !reencrypted {
        if let Some(target) = units.iter().find(|u| !u.promoted(&to) && !u.holds_new(&to)) {
            let source = units
                .iter()
                .find(|u| u.kind == UnitKind::Recovery && (u.holds_new(&to) || u.promoted(&to)));
            let Some(source) = source else {
                bail!(
                    "crypto unit {} lacks the new master key {to} and no recovery unit holds it to copy; load the same key parts on it ('rotor mk load') and run the rotation again",
                    target.number
                );
            };
            return Ok(Step::Distribute {
                source: source.number,
                register: if source.promoted(&to) {
                    Register::Current
                } else {
                    Register::New
                },
                target: target.number,
                vp: to,
            });
        }
        if let Some(unit) = units.iter().find(|u| u.new == NewState::FullUncommitted) {
            return Ok(Step::Commit {
                unit: unit.number,
                vp: to,
            });
        }
        if let Some(unit) = units
            .iter()
            .find(|u| !u.promoted(&to) && u.rotation == RotationLock::None)
        {
            return Ok(Step::Pin {
                unit: unit.number,
                vp: to,
            });
        }
        return Ok(Step::Reencrypt { from, to });
    }
    if let Some(unit) = units.iter().find(|u| !u.promoted(&to)) {
        if unit.rotation != RotationLock::Reencrypted {
            // The service tells every unit before it records the reencryption as done.
            return Ok(Step::Reencrypt { from, to });
        }
        return Ok(Step::Promote {
            unit: unit.number,
            vp: to,
        });
    }
    match open {
        Some(_) => Ok(Step::Complete),
        None => Ok(Step::Done { from, to }),
    }
}

/// Reads the state, plans, acts, until done.
pub async fn rotate(ctx: &Ctx, flow: Flow) -> Result<()> {
    let targets = crate::auto::whole_instance(ctx).await?;
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

/// Copies a recovery unit's key into `target`'s new register (uncommitted); returns its VP.
pub(crate) async fn transfer_new(
    ctx: &Ctx,
    source: &Target,
    register: Register,
    target: &Target,
) -> Result<Vp> {
    let (outcome, _) = ctx.act(target, Action::CreateImporter).await?;
    let Outcome::Importer { public_key } = outcome else {
        bail!(
            "crypto unit {} did not return an importer key",
            target.number
        );
    };
    let export = Action::Export {
        register,
        recipient_unit: target.unit.id,
        recipient_importer: public_key.clone(),
    };
    let (outcome, _) = ctx.act(source, export).await?;
    let Outcome::Exported { vp, key } = outcome else {
        bail!(
            "crypto unit {} did not export its master key",
            source.number
        );
    };
    ctx.act(
        target,
        Action::ImportNew {
            importer: public_key,
            key,
        },
    )
    .await?;
    Ok(vp)
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
            code: serde_json::from_value(body["code"].clone())
                .unwrap_or(rotor_unit::error::ErrorCode::Unknown),
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
    let targets = crate::auto::whole_instance(ctx).await?;
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

#[cfg(test)]
mod tests {
    use super::*;

    fn vp(byte: u8) -> Vp {
        Vp([byte; 32])
    }

    fn unit(number: usize, kind: UnitKind, current: u8, new: NewState, new_vp: u8) -> UnitView {
        UnitView {
            number,
            kind,
            imprint: false,
            signature_threshold: 2,
            admins: vec![Ski([1; 32]), Ski([2; 32])],
            current: Some(vp(current)),
            new,
            new_vp: if new == NewState::Empty {
                Vp::EMPTY
            } else {
                vp(new_vp)
            },
            rotation: RotationLock::None,
        }
    }

    fn journal(phase: &str) -> JournalView {
        JournalView {
            from: vp(1),
            to: vp(2),
            phase: phase.to_owned(),
        }
    }

    #[test]
    fn the_automatic_flow_generates_distributes_commits_pins_then_reencrypts() {
        let mut units = vec![
            unit(1, UnitKind::Operational, 1, NewState::Empty, 0),
            unit(2, UnitKind::Recovery, 1, NewState::Empty, 0),
        ];
        assert_eq!(
            plan(Flow::Auto, &units, None).unwrap(),
            Step::Generate { unit: 2 }
        );
        units[1].new = NewState::FullUncommitted;
        units[1].new_vp = vp(2);
        assert!(matches!(
            plan(Flow::Auto, &units, None).unwrap(),
            Step::Distribute {
                source: 2,
                target: 1,
                register: Register::New,
                ..
            }
        ));
        units[0].new = NewState::FullUncommitted;
        units[0].new_vp = vp(2);
        assert_eq!(
            plan(Flow::Auto, &units, None).unwrap(),
            Step::Commit { unit: 1, vp: vp(2) }
        );
        units[0].new = NewState::FullCommitted;
        units[1].new = NewState::FullCommitted;
        assert_eq!(
            plan(Flow::Auto, &units, None).unwrap(),
            Step::Pin { unit: 1, vp: vp(2) }
        );
        units[0].rotation = RotationLock::Reencrypting;
        units[1].rotation = RotationLock::Reencrypting;
        assert_eq!(
            plan(Flow::Auto, &units, None).unwrap(),
            Step::Reencrypt {
                from: vp(1),
                to: vp(2)
            }
        );
    }

    #[test]
    fn after_reencryption_only_unpromoted_units_are_promoted() {
        let mut units = vec![
            unit(1, UnitKind::Operational, 2, NewState::Empty, 0),
            unit(2, UnitKind::Operational, 1, NewState::FullCommitted, 2),
        ];
        units[1].rotation = RotationLock::Reencrypted;
        let reencrypted = journal("reencrypted");
        assert_eq!(
            plan(Flow::Parts, &units, Some(&reencrypted)).unwrap(),
            Step::Promote { unit: 2, vp: vp(2) }
        );
        units[1] = unit(2, UnitKind::Operational, 2, NewState::Empty, 0);
        assert_eq!(
            plan(Flow::Parts, &units, Some(&reencrypted)).unwrap(),
            Step::Complete
        );
        assert_eq!(
            plan(Flow::Parts, &units, Some(&journal("completed"))).unwrap(),
            Step::Done {
                from: vp(1),
                to: vp(2)
            }
        );
        assert!(
            plan(Flow::Parts, &units, None)
                .unwrap_err()
                .to_string()
                .contains("Full Committed")
        );
    }

    #[test]
    fn a_lost_new_register_comes_back_from_a_recovery_unit() {
        let mut units = vec![
            unit(1, UnitKind::Operational, 1, NewState::Empty, 0),
            unit(2, UnitKind::Recovery, 1, NewState::FullCommitted, 2),
        ];
        units[1].rotation = RotationLock::Reencrypting;
        assert!(matches!(
            plan(Flow::Parts, &units, Some(&journal("reencrypting"))).unwrap(),
            Step::Distribute {
                source: 2,
                target: 1,
                ..
            }
        ));
        units[1].kind = UnitKind::Operational;
        assert!(plan(Flow::Parts, &units, Some(&journal("reencrypting"))).is_err());
    }

    #[test]
    fn prechecks_name_the_units_that_differ() {
        let mut units = vec![
            unit(1, UnitKind::Operational, 1, NewState::FullCommitted, 2),
            unit(2, UnitKind::Operational, 1, NewState::FullCommitted, 3),
        ];
        let err = plan(Flow::Parts, &units, None).unwrap_err().to_string();
        assert!(err.contains("unit 1") && err.contains("unit 2"), "{err}");
        units[1].new_vp = vp(2);
        units[1].signature_threshold = 1;
        assert!(
            plan(Flow::Parts, &units, None)
                .unwrap_err()
                .to_string()
                .contains("thresholds differ")
        );
        units[1].signature_threshold = 2;
        units[1].current = Some(vp(9));
        assert!(
            plan(Flow::Parts, &units, None)
                .unwrap_err()
                .to_string()
                .contains("current registers differ")
        );
        units[1].current = Some(vp(1));
        units[1].imprint = true;
        assert!(
            plan(Flow::Parts, &units, None)
                .unwrap_err()
                .to_string()
                .contains("imprint")
        );
        let foreign = vec![
            unit(1, UnitKind::Operational, 1, NewState::FullCommitted, 5),
            unit(2, UnitKind::Recovery, 1, NewState::Empty, 0),
        ];
        assert!(
            plan(Flow::Auto, &foreign, None)
                .unwrap_err()
                .to_string()
                .contains("must be Empty")
        );
    }
}

//! The console's actions: what each will do and to which units (the preview), and running it
//! through the command line's own code with the passwords and PINs typed into the page.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};

use anyhow::{Result, bail};
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use super::Console;
use crate::args::{
    AdminsCommand, AuditArgs, AuditCommand, EnrollmentArgs, MkCommand, SigkeysCommand,
    ThresholdsCommand, UnitsCommand,
};
use crate::output::join_numbers;
use crate::plan::Flow;
use crate::session::Session;
use crate::workstation::{FileError, SecretFor, Secrets, Sigkey};

/// One action of the page.
#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case", deny_unknown_fields)]
pub(super) enum Action {
    /// Add units to the selection.
    Select { units: Vec<usize> },
    /// Remove units from the selection.
    Deselect { units: Vec<usize> },
    /// Enroll a unit's identity with the fingerprint learned on its host.
    Enroll { unit: usize, fingerprint: String },
    /// Choose the signature keys that sign.
    UseSigkeys { sigkeys: Vec<u32> },
    /// Install the admins of these signature keys.
    AddAdmins {
        sigkeys: Vec<u32>,
        enrollment: String,
    },
    /// Remove an admin (SKI prefix, or '#N' for signature key N).
    RemoveAdmin { admin: String },
    /// Set both thresholds.
    SetThresholds { signature: u8, revocation: u8 },
    /// Load the new registers from key parts.
    Load { parts: Vec<u32> },
    /// Commit the new registers.
    Commit,
    /// Promote the new registers without reencryption.
    SetImmediate,
    /// Clear the new registers.
    ClearNew,
    /// Clear the current registers.
    ClearCurrent,
    /// Rotate the master key with the committed new registers.
    Rotate,
    /// Finish an interrupted rotation, from the real state.
    FinishRotation,
    /// Verify the audit chains.
    VerifyAudit,
}

/// `POST /preview`
#[derive(Debug, Deserialize)]
pub(super) struct PreviewRequest {
    /// The action.
    pub(super) action: Action,
}

/// `POST /run`
#[derive(Deserialize)]
pub(super) struct RunRequest {
    /// The action.
    pub(super) action: Action,
    /// Secrets by the prompt that asks for them.
    #[serde(default)]
    pub(super) secrets: HashMap<String, Zeroizing<String>>,
}

/// What an action will do, before it runs.
#[derive(Debug, Serialize)]
pub(super) struct Preview {
    /// What it does, to which units.
    plan: String,
    /// Set for destructive actions: what is lost.
    warning: Option<String>,
    /// Whether the page must ask for an explicit yes.
    destructive: bool,
    /// The prompts of the secrets it will ask for.
    secrets: Vec<String>,
}

/// The answer to `POST /run`.
#[derive(Debug, Default, Serialize)]
pub(super) struct RunReply {
    /// Lines for the message window (also kept there).
    messages: Vec<String>,
    /// Why it failed, in the command line's words (the unit's reason included).
    error: Option<String>,
    /// Secrets it asked for that the page did not send: ask for them and run again.
    needs: Vec<String>,
    /// A rotation started in the background: watch `/progress`.
    started: bool,
    /// With `started`: the message window's length when it started, so the page shows every
    /// line the rotation adds.
    log_length: usize,
}

/// The secrets typed into the page, by prompt; records what was asked for and missing.
pub(super) struct PageSecrets {
    given: HashMap<String, Zeroizing<String>>,
    missing: Mutex<Vec<String>>,
}

impl PageSecrets {
    fn new(given: HashMap<String, Zeroizing<String>>) -> Self {
        Self {
            given,
            missing: Mutex::default(),
        }
    }

    fn missing(&self) -> Vec<String> {
        self.missing
            .lock()
            .map(|missing| missing.clone())
            .unwrap_or_default()
    }
}

impl Secrets for PageSecrets {
    fn secret(&self, what: &SecretFor) -> Result<Zeroizing<String>, FileError> {
        let prompt = what.prompt();
        match self.given.get(&prompt) {
            Some(secret) if !secret.is_empty() => Ok(secret.clone()),
            _ => {
                if let Ok(mut missing) = self.missing.lock()
                    && !missing.contains(&prompt)
                {
                    missing.push(prompt);
                }
                Err(FileError::NoPassword)
            }
        }
    }
}

/// The prompts for the passwords (file keys) and PINs (token keys, one per token) of the
/// signature keys selected to sign.
fn signing_prompts(session: &Session) -> Result<Vec<String>> {
    let mut prompts = Vec::new();
    for number in session.home.settings()?.selected_sigkeys {
        let secret = match Sigkey::read(&session.home.sigkey_path(number)?)? {
            Sigkey::Token(file) => SecretFor::TokenPin {
                label: file.place.tokens.first().cloned().unwrap_or_default(),
            },
            key => SecretFor::Sigkey {
                number,
                name: key.name().to_owned(),
            },
        };
        let prompt = secret.prompt();
        if !prompts.contains(&prompt) {
            prompts.push(prompt);
        }
    }
    Ok(prompts)
}

/// "crypto units 1, 2, 3" for the selected units.
async fn selected_units(session: &Session) -> Result<String> {
    let numbers: Vec<usize> = session.selected().await?.iter().map(|t| t.number).collect();
    Ok(format!("crypto units {}", join_numbers(&numbers)))
}

/// What `action` will do, to which units, and which secrets it needs.
pub(super) async fn preview(
    console: &Console,
    session: &Session,
    action: &Action,
) -> Result<Preview> {
    let plain = |plan: String| Preview {
        plan,
        warning: None,
        destructive: false,
        secrets: Vec::new(),
    };
    let signed = |plan: String, warning: Option<&str>| -> Result<Preview> {
        Ok(Preview {
            plan,
            warning: warning.map(str::to_owned),
            destructive: warning.is_some(),
            secrets: signing_prompts(session)?,
        })
    };
    match action {
        Action::Select { units } | Action::Deselect { units } if units.is_empty() => {
            bail!("tick the crypto units first")
        }
        Action::Select { units } => Ok(plain(format!(
            "Select crypto units {}: later actions apply to them.",
            join_numbers(units)
        ))),
        Action::Deselect { units } => Ok(plain(format!(
            "Deselect crypto units {} (nothing changes on the units).",
            join_numbers(units)
        ))),
        Action::Enroll { unit, fingerprint } => Ok(plain(format!(
            "Enroll crypto unit {unit} if it presents identity fingerprint {fingerprint}; only enrolled units are sent signed commands, key parts or a master key."
        ))),
        Action::UseSigkeys { sigkeys } => Ok(plain(format!(
            "Sign later commands with signature keys {}.",
            join_numbers(&numbers(sigkeys))
        ))),
        Action::AddAdmins { sigkeys, .. } => {
            let mut names = Vec::new();
            for number in sigkeys {
                names.push(
                    Sigkey::read(&session.home.sigkey_path(*number)?)?
                        .name()
                        .to_owned(),
                );
            }
            signed(
                format!(
                    "Install the administrators {} on {}.",
                    names.join(", "),
                    selected_units(session).await?
                ),
                None,
            )
        }
        Action::RemoveAdmin { admin } => signed(
            format!(
                "Remove administrator {admin} from {}.",
                selected_units(session).await?
            ),
            Some(
                "The administrator can no longer sign; without enough admins a unit can only be zeroized.",
            ),
        ),
        Action::SetThresholds {
            signature,
            revocation,
        } => signed(
            format!(
                "Set the signature threshold to {signature} and the revocation threshold to {revocation} on {}.",
                selected_units(session).await?
            ),
            None,
        ),
        Action::Load { parts } => {
            let mut preview = signed(
                format!(
                    "Load key parts {} into the new master key register of {}.",
                    join_numbers(&numbers(parts)),
                    selected_units(session).await?
                ),
                None,
            )?;
            preview.secrets.extend(
                parts
                    .iter()
                    .map(|number| SecretFor::Part { number: *number }.prompt()),
            );
            Ok(preview)
        }
        Action::Commit => signed(
            format!(
                "Commit the new master key register of {}.",
                selected_units(session).await?
            ),
            None,
        ),
        Action::SetImmediate => signed(
            format!(
                "Set immediate: make the committed new master key current on {}.",
                selected_units(session).await?
            ),
            Some(
                "This does not reencrypt key storage: use it to initialize units or to finish a rotation whose reencryption is done.",
            ),
        ),
        Action::ClearNew => signed(
            format!(
                "Clear the new master key register of {}.",
                selected_units(session).await?
            ),
            Some("The key parts must be loaded again to get this master key back."),
        ),
        Action::ClearCurrent => signed(
            format!(
                "Clear the current master key register of {}.",
                selected_units(session).await?
            ),
            Some(
                "Keys wrapped under it are unusable until the same master key is loaded again.",
            ),
        ),
        Action::Rotate | Action::FinishRotation => {
            let mut preview = signed(
                format!(
                    "{} the master key of the instance of {}: pin the committed new register on every unit, rewrap all key storage (key operations keep working), then set the new master key current on every unit.",
                    if matches!(action, Action::Rotate) {
                        "Rotate"
                    } else {
                        "Finish rotating"
                    },
                    selected_units(session).await?
                ),
                None,
            )?;
            if let Ok(needs) = console.rotation_needs.lock() {
                for prompt in needs.iter() {
                    if !preview.secrets.contains(prompt) {
                        preview.secrets.push(prompt.clone());
                    }
                }
            }
            Ok(preview)
        }
        Action::VerifyAudit => Ok(plain(
            "Verify every audit chain: each entry's unit signature, every link, and each unit's signed head."
                .to_owned(),
        )),
    }
}

fn numbers(list: &[u32]) -> Vec<usize> {
    list.iter()
        .filter_map(|n| usize::try_from(*n).ok())
        .collect()
}

/// Runs `request`: a rotation in the background, everything else before answering.
pub(super) async fn run(console: &Arc<Console>, request: RunRequest) -> RunReply {
    let Ok(_busy) = console.busy.try_lock() else {
        return RunReply {
            error: Some("another action is running; wait for it to finish".to_owned()),
            ..RunReply::default()
        };
    };
    if console.rotating.load(Ordering::SeqCst) {
        return RunReply {
            error: Some(
                "a master key rotation is running; wait for it to finish before changing anything"
                    .to_owned(),
            ),
            ..RunReply::default()
        };
    }
    let secrets = Arc::new(PageSecrets::new(request.secrets));
    let lines = Arc::new(Mutex::new(Vec::new()));
    let reporter_console = Arc::clone(console);
    let reporter_lines = Arc::clone(&lines);
    let mut session = console
        .session()
        .with_secrets(Arc::clone(&secrets) as Arc<dyn Secrets>)
        .with_reporter(Arc::new(move |line: &str| {
            reporter_console.log(line);
            if let Ok(mut lines) = reporter_lines.lock() {
                lines.push(line.to_owned());
            }
        }));
    if let Action::AddAdmins { enrollment, .. } = &request.action {
        let given: Vec<String> = enrollment
            .split([',', ' ', '\n'])
            .map(str::to_owned)
            .collect();
        session = match session.with_enrollment_secrets(&given) {
            Ok(session) => session,
            Err(err) => {
                return RunReply {
                    error: Some(format!("{err:#}")),
                    ..RunReply::default()
                };
            }
        };
    }
    let result = match request.action {
        Action::Rotate | Action::FinishRotation => {
            let log_length = console.log_length();
            start_rotation(console, session, secrets);
            return RunReply {
                started: true,
                log_length,
                ..RunReply::default()
            };
        }
        action => dispatch(&session, action).await,
    };
    let messages = lines.lock().map(|l| l.clone()).unwrap_or_default();
    match result {
        Ok(()) => RunReply {
            messages,
            ..RunReply::default()
        },
        Err(err) => {
            let needs = secrets.missing();
            let error = if needs.is_empty() {
                format!("{err:#}")
            } else {
                "enter the passwords or PINs asked for; nothing was changed".to_owned()
            };
            if needs.is_empty() {
                console.log(&format!("Error: {error}"));
            }
            RunReply {
                messages,
                error: Some(error),
                needs,
                ..RunReply::default()
            }
        }
    }
}

/// Runs one action through the command line's code.
async fn dispatch(session: &Session, action: Action) -> Result<()> {
    use crate::cmd;
    match action {
        Action::Select { units } => {
            cmd::units::units(
                session,
                Some(UnitsCommand::Select {
                    numbers: units,
                    all: false,
                }),
            )
            .await
        }
        Action::Deselect { units } => {
            cmd::units::units(
                session,
                Some(UnitsCommand::Deselect {
                    numbers: units,
                    all: false,
                }),
            )
            .await
        }
        Action::Enroll { unit, fingerprint } => {
            cmd::units::units(
                session,
                Some(UnitsCommand::Enroll {
                    unit: unit.to_string(),
                    fingerprint: Some(fingerprint.trim().to_owned()),
                }),
            )
            .await
        }
        Action::UseSigkeys { sigkeys } => {
            if sigkeys.is_empty() {
                bail!("tick the signature keys that sign");
            }
            cmd::sigkeys::sigkeys(
                session,
                Some(SigkeysCommand::Use {
                    numbers: sigkeys.clone(),
                }),
            )?;
            session.say(&format!(
                "Signature keys {} sign later commands.",
                join_numbers(&numbers(&sigkeys))
            ));
            Ok(())
        }
        Action::AddAdmins { sigkeys, .. } => {
            if sigkeys.is_empty() {
                bail!("tick the signature keys whose administrators to install");
            }
            cmd::admins::admins(
                session,
                Some(AdminsCommand::Add {
                    sigkeys,
                    enrollment: EnrollmentArgs {
                        secrets: Vec::new(),
                    },
                }),
            )
            .await
        }
        Action::RemoveAdmin { admin } => {
            cmd::admins::admins(session, Some(AdminsCommand::Rm { admin })).await
        }
        Action::SetThresholds {
            signature,
            revocation,
        } => {
            cmd::thresholds::thresholds(
                session,
                Some(ThresholdsCommand::Set {
                    signature,
                    revocation,
                }),
            )
            .await
        }
        Action::Load { parts } => {
            if !(2..=3).contains(&parts.len()) {
                bail!("tick 2 or 3 key parts to load");
            }
            cmd::mk::mk(session, Some(MkCommand::Load { parts })).await
        }
        Action::Commit => cmd::mk::mk(session, Some(MkCommand::Commit { vp: None })).await,
        Action::SetImmediate => cmd::mk::mk(session, Some(MkCommand::Setimm { vp: None })).await,
        Action::ClearNew => cmd::mk::mk(session, Some(MkCommand::ClearNew)).await,
        Action::ClearCurrent => cmd::mk::mk(session, Some(MkCommand::ClearCurrent)).await,
        Action::VerifyAudit => {
            cmd::audit::audit(
                session,
                AuditArgs {
                    command: Some(AuditCommand::Verify),
                    unit: None,
                },
            )
            .await
        }
        Action::Rotate | Action::FinishRotation => {
            bail!("a rotation runs in the background")
        }
    }
}

/// Starts the rotation in the background: the same code as `rotor mk rotate` and `rotor auto
/// rotate`, which continues from the units' and the service's real state.
fn start_rotation(console: &Arc<Console>, session: Session, secrets: Arc<PageSecrets>) {
    console.rotating.store(true, Ordering::SeqCst);
    if let Ok(mut needs) = console.rotation_needs.lock() {
        needs.clear();
    }
    let console = Arc::clone(console);
    tokio::spawn(async move {
        let flow = rotation_flow(&session);
        if let Err(err) = crate::cmd::rotate::rotate(&session, flow, false).await {
            let needs = secrets.missing();
            if needs.is_empty() {
                console.log(&format!("Error: {err:#}"));
            } else {
                console.log("The rotation needs the passwords or PINs asked for.");
                if let Ok(mut missing) = console.rotation_needs.lock() {
                    *missing = needs;
                }
            }
            console.log(
                "The master key rotation is not finished. Click Finish rotation on the Master keys tab to continue from where it stopped.",
            );
        }
        console.rotating.store(false, Ordering::SeqCst);
    });
}

/// The automatic flow for a rotation the workstation started with a recovery unit (`rotor auto
/// rotate`), the key-part flow otherwise.
fn rotation_flow(session: &Session) -> Flow {
    let instances = session.home.unfinished_rotations().unwrap_or_default();
    if instances.is_empty() {
        Flow::Parts
    } else {
        Flow::Auto
    }
}

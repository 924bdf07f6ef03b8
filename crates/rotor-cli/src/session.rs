//! What every command shares: the workstation, the output mode, the service connection, the
//! unit selection, the units' verified statuses and the signature keys once unlocked. Every
//! answer of a unit is checked against the identity enrolled for it and the highest counter
//! seen from it; every change is a command signed here, and only for an enrolled unit.

use std::collections::BTreeSet;
use std::io::IsTerminal;
use std::sync::{Arc, Mutex, OnceLock};

use anyhow::{Context, Result, anyhow, bail};
use rotor_server::config::UnitConfig;
use rotor_unit::trust::TrustRefusal;
use rotor_unit::wire::{
    Action, Command, CommandSignature, EnrollmentSecret, Outcome, SignedCommand, Ski, UnitStatus,
};
use serde_json::json;
use uuid::Uuid;

use crate::client::ServiceClient;
use crate::output::print_json;
use crate::signer::{SharedToken, Signer, TokenKey, open_token};
use crate::workstation::{Home, SecretFor, Secrets, Sigkey, TerminalSecrets};

/// Why the workstation does not trust a unit's answer. Every case exits with code 5.
#[derive(Debug)]
#[non_exhaustive]
pub enum TrustError {
    /// No identity is enrolled for the unit: nothing is signed for it.
    NotEnrolled {
        /// The unit's number in the listing.
        number: usize,
        /// The unit.
        unit: Uuid,
    },
    /// The unit's signed status does not match its enrollment.
    Refused {
        /// The unit's number in the listing.
        number: usize,
        /// The unit.
        unit: Uuid,
        /// What does not match.
        refusal: TrustRefusal,
    },
    /// The fingerprint given to `rotor units enroll` is not the one the unit presents.
    FingerprintMismatch {
        /// The unit's number in the listing.
        number: usize,
        /// The fingerprint given.
        given: rotor_crypto::Fingerprint,
        /// The fingerprint the unit presents.
        presented: rotor_crypto::Fingerprint,
    },
}

impl std::fmt::Display for TrustError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::NotEnrolled { number, unit } => write!(
                f,
                "crypto unit {number} ({unit}) is not enrolled on this workstation: no command is signed for it and no key part or master key is sent to it. Compare its identity fingerprint with the one 'rotor unit serve' printed on its host, then run 'rotor units enroll {number} --fingerprint HEX'"
            ),
            Self::Refused {
                number,
                unit,
                refusal,
            } => {
                write!(f, "crypto unit {number} ({unit}) is refused: {refusal}. ")?;
                match refusal {
                    TrustRefusal::RolledBack { .. } => f.write_str(
                        "Do not use the unit until its latest state is restored on its host",
                    ),
                    _ => write!(
                        f,
                        "If the unit was replaced on purpose, run 'rotor units forget {unit}' and enroll the new identity with 'rotor units enroll {number} --fingerprint HEX'"
                    ),
                }
            }
            Self::FingerprintMismatch {
                number,
                given,
                presented,
            } => write!(
                f,
                "crypto unit {number} presents identity fingerprint {presented}, not the {given} given; it is not enrolled. Check the fingerprint on the unit's host: another process may be answering in its place"
            ),
        }
    }
}

impl std::error::Error for TrustError {}

/// A unit with the number the listing gives it.
#[derive(Clone, Debug)]
pub struct Target {
    /// 1-based, across all instances, in listing order.
    pub number: usize,
    /// Its instance.
    pub instance: Uuid,
    /// The unit.
    pub unit: UnitConfig,
}

/// One invocation's context.
pub struct Session {
    /// Workstation directory.
    pub home: Home,
    /// Machine output.
    pub json: bool,
    /// Confirmations answered.
    pub yes: bool,
    endpoint: Option<String>,
    ca_cert: Option<std::path::PathBuf>,
    api_key: Option<String>,
    service: OnceLock<ServiceClient>,
    signers: OnceLock<Vec<Signer>>,
    /// Tokens logged in to by this session, by label: each PIN is asked once.
    tokens: Mutex<Vec<(String, SharedToken)>>,
    /// Units already reported as not enrolled in this invocation.
    warned: Mutex<BTreeSet<Uuid>>,
    enrollment: Vec<EnrollmentSecret>,
    secrets: Arc<dyn Secrets>,
    reporter: Option<Reporter>,
}

/// Where a session's progress lines go instead of standard output (the console's message
/// window).
pub type Reporter = Arc<dyn Fn(&str) + Send + Sync>;

impl Session {
    /// A session for one invocation; `endpoint`, `ca_cert` and `ROTOR_API_KEY` override the
    /// login.
    pub fn new(
        home: Home,
        json: bool,
        yes: bool,
        endpoint: Option<String>,
        ca_cert: Option<std::path::PathBuf>,
    ) -> Self {
        Self {
            home,
            json,
            yes,
            endpoint,
            ca_cert,
            api_key: std::env::var("ROTOR_API_KEY").ok(),
            service: OnceLock::new(),
            signers: OnceLock::new(),
            tokens: Mutex::default(),
            warned: Mutex::default(),
            enrollment: Vec::new(),
            secrets: Arc::new(TerminalSecrets),
            reporter: None,
        }
    }

    /// A new session on the same workstation and service with the same options, with nothing
    /// unlocked or cached: the console starts one per action, so each asks for its own secrets.
    pub fn fresh(&self) -> Self {
        Self {
            home: self.home.clone(),
            json: self.json,
            yes: self.yes,
            endpoint: self.endpoint.clone(),
            ca_cert: self.ca_cert.clone(),
            api_key: self.api_key.clone(),
            service: OnceLock::new(),
            signers: OnceLock::new(),
            warned: Mutex::default(),
            enrollment: Vec::new(),
            secrets: Arc::new(TerminalSecrets),
            tokens: Mutex::default(),
            reporter: None,
        }
    }

    /// The enrollment secrets this command may use on units without an admin (each unit takes
    /// only its own). Refuses text that is not a secret.
    pub fn with_enrollment_secrets(mut self, secrets: &[String]) -> Result<Self> {
        for text in secrets.iter().filter(|text| !text.trim().is_empty()) {
            let secret = EnrollmentSecret::from_hex(text).ok_or_else(|| {
                anyhow!(
                    "an enrollment secret is 64 hex characters, as 'rotor unit serve' prints it"
                )
            })?;
            self.enrollment.push(secret);
        }
        Ok(self)
    }

    /// Takes passwords and PINs from `secrets` instead of the terminal.
    pub fn with_secrets(mut self, secrets: Arc<dyn Secrets>) -> Self {
        self.secrets = secrets;
        self
    }

    /// Sends progress lines to `reporter` instead of standard output.
    pub fn with_reporter(mut self, reporter: Reporter) -> Self {
        self.reporter = Some(reporter);
        self
    }

    /// The secret for `what`, from this session's source of secrets.
    pub fn secret(&self, what: &SecretFor) -> Result<zeroize::Zeroizing<String>> {
        Ok(self.secrets.secret(what)?)
    }

    /// The token labelled `label` of `module`, logged in with the PIN this session's source of
    /// secrets gives (asked once per token and session).
    pub fn token(&self, label: &str, module: &std::path::Path) -> Result<SharedToken> {
        let poisoned = || anyhow!("the open tokens are unusable after an earlier failure");
        if let Some((_, token)) = self
            .tokens
            .lock()
            .map_err(|_| poisoned())?
            .iter()
            .find(|(open, _)| open == label)
        {
            return Ok(token.clone());
        }
        let missing = || {
            anyhow!(
                "token '{label}' is not present (module {}): insert it, or check ROTOR_PKCS11_MODULE",
                module.display()
            )
        };
        if !rotor_crypto::Token::is_present(module, label)
            .with_context(|| format!("token '{label}'"))?
        {
            return Err(missing());
        }
        let pin = self.secret(&SecretFor::TokenPin {
            label: label.to_owned(),
        })?;
        let token = open_token(module, label, &pin)?;
        self.tokens
            .lock()
            .map_err(|_| poisoned())?
            .push((label.to_owned(), token.clone()));
        Ok(token)
    }

    /// The service, as 'rotor login' (or `--endpoint` and `ROTOR_API_KEY`) names it.
    pub fn service(&self) -> Result<&ServiceClient> {
        if let Some(service) = self.service.get() {
            return Ok(service);
        }
        let settings = self.home.settings()?;
        let endpoint = self.endpoint.clone().or(settings.endpoint).ok_or_else(|| {
            anyhow!("no service endpoint: run 'rotor login --endpoint URL' or set ROTOR_ENDPOINT")
        })?;
        let api_key = self.api_key.clone().or(settings.api_key).ok_or_else(|| {
            anyhow!(
                "not logged in: run 'rotor login --endpoint URL --api-key KEY' or set ROTOR_API_KEY"
            )
        })?;
        let ca_cert = self.ca_cert.clone().or(settings.ca_cert);
        let service = ServiceClient::new(&endpoint, api_key, ca_cert.as_deref())?;
        Ok(self.service.get_or_init(|| service))
    }

    /// The CA certificate given for this command (`--ca-cert`, `ROTOR_CA_CERT`).
    pub fn ca_cert(&self) -> Option<&std::path::Path> {
        self.ca_cert.as_deref()
    }

    /// Prints a progress line for people (nothing with `--json`), or hands it to the reporter.
    pub fn say(&self, line: &str) {
        if let Some(reporter) = &self.reporter {
            reporter(line);
        } else if !self.json {
            println!("{line}");
        }
    }

    /// Whether progress is drawn on this process's own terminal output (not with `--json` or a
    /// reporter).
    pub fn prints_progress(&self) -> bool {
        !self.json && self.reporter.is_none()
    }

    /// Prints a line about a failure on standard error (nothing with `--json`), or hands it to
    /// the reporter.
    pub fn warn(&self, line: &str) {
        if let Some(reporter) = &self.reporter {
            reporter(line);
        } else if !self.json {
            eprintln!("{line}");
        }
    }

    /// Asks before a destructive step, unless `--yes`.
    pub fn confirm(&self, question: &str) -> Result<()> {
        if self.yes {
            return Ok(());
        }
        if !std::io::stdin().is_terminal() {
            bail!("{question}\nThis needs confirmation: pass --yes to proceed without a terminal.");
        }
        eprint!("{question} [y/N] ");
        let mut answer = String::new();
        std::io::stdin().read_line(&mut answer)?;
        if matches!(answer.trim(), "y" | "Y" | "yes") {
            Ok(())
        } else {
            bail!("cancelled; nothing was changed")
        }
    }

    /// Every unit, numbered.
    pub async fn all_units(&self) -> Result<Vec<Target>> {
        let mut targets = Vec::new();
        for instance in self.service()?.instances().await? {
            for unit in instance.units {
                targets.push(Target {
                    number: targets.len() + 1,
                    instance: instance.id,
                    unit,
                });
            }
        }
        Ok(targets)
    }

    /// The selected units, in listing order.
    pub async fn selected(&self) -> Result<Vec<Target>> {
        let selected = self.home.settings()?.selected_units;
        let targets: Vec<Target> = self
            .all_units()
            .await?
            .into_iter()
            .filter(|t| selected.contains(&t.unit.id))
            .collect();
        if targets.is_empty() {
            bail!("no crypto units are selected: run 'rotor units' and 'rotor units select N…'");
        }
        Ok(targets)
    }

    /// The selected units, which must be every unit of exactly one instance.
    pub async fn whole_instance(&self) -> Result<Vec<Target>> {
        let selected = self.selected().await?;
        let instance = selected[0].instance;
        if selected.iter().any(|t| t.instance != instance) {
            bail!(
                "the selected crypto units belong to several instances; select all units of one instance"
            );
        }
        let missing: Vec<String> = self
            .all_units()
            .await?
            .into_iter()
            .filter(|t| t.instance == instance && !selected.iter().any(|s| s.unit.id == t.unit.id))
            .map(|t| t.number.to_string())
            .collect();
        if !missing.is_empty() {
            bail!(
                "not all crypto units of instance {instance} are selected (missing: {}); run 'rotor units select {}'",
                missing.join(", "),
                missing.join(" ")
            );
        }
        Ok(selected)
    }

    /// A unit's status, signed by the identity it presents. For an enrolled unit that identity
    /// must be the enrolled one and the counter at least the highest seen (which then
    /// advances); an unenrolled unit's status is returned for reading, with a warning.
    pub async fn status(&self, target: &Target) -> Result<UnitStatus> {
        let status = self
            .service()?
            .unit_status(target.instance, target.unit.id)
            .await?;
        if !self.check_enrolled(target, &status)? {
            let first = self
                .warned
                .lock()
                .map(|mut warned| warned.insert(target.unit.id))
                .unwrap_or(true);
            if first {
                eprintln!(
                    "warning: crypto unit {} is not enrolled on this workstation; what it shows is not verified to come from it (identity fingerprint presented: {}). Enroll it with 'rotor units enroll {} --fingerprint HEX'",
                    target.number,
                    status.identity.fingerprint(),
                    target.number
                );
            }
        }
        Ok(status)
    }

    /// Whether the unit is enrolled; if it is, checks `status` against the enrollment and
    /// remembers its counter.
    fn check_enrolled(&self, target: &Target, status: &UnitStatus) -> Result<bool> {
        let mut enrollments = self.home.enrollments()?;
        let Some(enrolled) = enrollments.get(&target.unit.id) else {
            return Ok(false);
        };
        let checked = enrolled
            .check(&status.identity, status.counter)
            .map_err(|refusal| TrustError::Refused {
                number: target.number,
                unit: target.unit.id,
                refusal,
            })?;
        if checked != *enrolled {
            enrollments.insert(target.unit.id, checked);
            self.home.save_enrollments(&enrollments)?;
        }
        Ok(true)
    }

    /// The verified statuses of `targets`, in order.
    pub async fn statuses(&self, targets: &[Target]) -> Result<Vec<(Target, UnitStatus)>> {
        let mut out = Vec::new();
        for target in targets {
            out.push((target.clone(), self.status(target).await?));
        }
        Ok(out)
    }

    /// The selected signature keys that are admins of this unit, unlocked: files with their
    /// passwords, token keys with their tokens' PINs.
    fn signers_for(&self, status: &UnitStatus) -> Result<Vec<&Signer>> {
        let admins: Vec<Ski> = status.admins.iter().map(|a| a.ski).collect();
        let selected = self.home.settings()?.selected_sigkeys;
        let mut keys = Vec::new();
        for number in &selected {
            let path = self.home.sigkey_path(*number)?;
            keys.push((*number, Sigkey::read(&path)?, path));
        }
        if !keys
            .iter()
            .any(|(_, key, _)| admins.contains(&Ski::of(key.public_key())))
        {
            return Ok(Vec::new());
        }
        if self.signers.get().is_none() {
            let mut locked = Vec::new();
            let mut on_tokens = Vec::new();
            for (number, key, path) in keys {
                match key {
                    Sigkey::File(file) => {
                        let password = self.secret(&SecretFor::Sigkey {
                            number,
                            name: file.name.clone(),
                        })?;
                        locked.push((path, file, password));
                    }
                    Sigkey::Token(file) => {
                        let token = self.token(file.token(), &file.place.module())?;
                        on_tokens.push(Signer::Token(TokenKey::new(file, token)));
                    }
                }
            }
            // Each unlock is a deliberately slow Argon2id; run them side by side.
            let mut signers = std::thread::scope(|scope| {
                let unlocking: Vec<_> = locked
                    .iter()
                    .map(|(path, file, password)| scope.spawn(move || file.unlock(path, password)))
                    .collect();
                unlocking
                    .into_iter()
                    .map(|handle| match handle.join() {
                        Ok(unlocked) => Ok(Signer::File(unlocked?)),
                        Err(_) => Err(anyhow!("unlocking a signature key failed")),
                    })
                    .collect::<Result<Vec<_>>>()
            })?;
            signers.append(&mut on_tokens);
            let _ = self.signers.set(signers);
        }
        Ok(self
            .signers
            .get()
            .map(|signers| {
                signers
                    .iter()
                    .filter(|signer| admins.contains(&Ski::of(&signer.public_key())))
                    .collect()
            })
            .unwrap_or_default())
    }

    /// Signs `action` for the unit's next counter with the selected admin keys and sends it.
    pub async fn act(&self, target: &Target, action: Action) -> Result<(Outcome, UnitStatus)> {
        let status = self.status(target).await?;
        self.act_on(target, &status, action).await
    }

    async fn act_on(
        &self,
        target: &Target,
        status: &UnitStatus,
        action: Action,
    ) -> Result<(Outcome, UnitStatus)> {
        if !self.home.enrollments()?.contains_key(&target.unit.id) {
            return Err(TrustError::NotEnrolled {
                number: target.number,
                unit: target.unit.id,
            }
            .into());
        }
        let signers = self.signers_for(status)?;
        let command = Command {
            unit: target.unit.id,
            counter: status.counter + 1,
            action,
        };
        let name = command.action.name();
        let first_admin =
            status.admins.is_empty() && matches!(command.action, Action::AddAdmin { .. });
        let message = command.signing_bytes();
        let signatures = signers
            .iter()
            .map(|signer| {
                Ok(CommandSignature {
                    ski: Ski::of(&signer.public_key()),
                    signature: signer.sign(&message)?,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let mut signed = SignedCommand {
            command,
            signatures,
            enrollment: None,
        };
        if first_admin {
            signed.enrollment = status.enrollment_id.as_ref().and_then(|id| {
                self.enrollment
                    .iter()
                    .find(|secret| secret.id() == *id)
                    .map(|secret| signed.command.enrollment_proof(secret))
            });
        }
        let (outcome, after) = self
            .service()?
            .unit_command(target.instance, target.unit.id, &status.identity, signed)
            .await
            .with_context(|| format!("crypto unit {} refused to {name}", target.number))?;
        self.check_enrolled(target, &after)?;
        Ok((outcome, after))
    }

    /// Applies one action per selected unit, in order, stopping at the first refusal.
    pub async fn each_selected(
        &self,
        verb: &str,
        mut build: impl FnMut(&Target, &UnitStatus) -> Result<Option<Action>>,
    ) -> Result<()> {
        let mut report = Vec::new();
        for target in self.selected().await? {
            let status = self.status(&target).await?;
            let Some(action) = build(&target, &status)? else {
                continue;
            };
            match self.act_on(&target, &status, action).await {
                Ok(_) => {
                    self.say(&format!("crypto unit {}: {verb}", target.number));
                    report
                        .push(json!({"unit": target.number, "id": target.unit.id, "result": "ok"}));
                }
                Err(err) => {
                    if !report.is_empty() {
                        self.warn(&format!(
                            "done on {} unit(s) before this error; the rest were not changed",
                            report.len()
                        ));
                    }
                    return Err(err);
                }
            }
        }
        if self.json {
            print_json(&json!({ "units": report }));
        }
        Ok(())
    }
}

/// Each unit's rows from `rows`, prefixed with the unit's number: one table for all units.
pub fn numbered_rows(
    units: &[(Target, UnitStatus)],
    rows: impl Fn(&UnitStatus) -> Vec<Vec<String>>,
) -> Vec<Vec<String>> {
    units
        .iter()
        .flat_map(|(target, status)| {
            rows(status).into_iter().map(|mut row| {
                row.insert(0, target.number.to_string());
                row
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    fn shared_across_threads<T: Send + Sync>() {}

    #[test]
    fn a_session_with_token_signers_can_serve_several_threads() {
        // The console serves one session (and the signers it holds) from its request handlers.
        shared_across_threads::<super::Session>();
    }
}

//! Commands that act on the selected units through the service: every request is checked
//! against the unit's pinned identity key, and every change is a command signed here with the
//! selected signature keys.

use std::collections::BTreeMap;
use std::io::IsTerminal;

use anyhow::{Context, Result, anyhow, bail};
use rotor_crypto::{PublicKey, Secret32, SigningKey, Vp, seal_to};
use rotor_server::config::UnitConfig;
use rotor_unit::client::UnitClient;
use rotor_unit::machine::envelope_context;
use rotor_unit::wire::{
    Action, Command, CurrentState, NewState, Outcome, PART_CONTEXT, Ski, UnitStatus,
};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use uuid::Uuid;

use crate::args::{AdminsCommand, MkCommand, ThresholdsCommand, UnitsCommand};
use crate::output::{print_json, table};
use crate::workstation::{Home, PartFile, SigkeyFile, read_password};

/// One instance as the service lists it.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct InstanceEntry {
    /// Instance id.
    pub id: Uuid,
    /// Name.
    pub name: String,
    /// Units.
    pub units: Vec<UnitConfig>,
}

#[derive(Deserialize)]
struct InstancesBody {
    instances: Vec<InstanceEntry>,
}

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

/// What every command shares: the workstation, output mode, the service connection, and the
/// signature keys once unlocked.
pub struct Ctx {
    /// Workstation directory.
    pub home: Home,
    /// Machine output.
    pub json: bool,
    /// Confirmations answered.
    pub yes: bool,
    endpoint: Option<String>,
    api_key: Option<String>,
    http: reqwest::Client,
    token: std::sync::OnceLock<String>,
    signers: std::sync::OnceLock<Vec<SigningKey>>,
}

#[derive(Deserialize)]
struct TokenBody {
    access_token: String,
}

impl Ctx {
    /// A context for one invocation.
    pub fn new(home: Home, json: bool, yes: bool, endpoint: Option<String>) -> Self {
        Self {
            home,
            json,
            yes,
            endpoint,
            api_key: std::env::var("ROTOR_API_KEY").ok(),
            http: reqwest::Client::new(),
            token: std::sync::OnceLock::new(),
            signers: std::sync::OnceLock::new(),
        }
    }

    /// A bearer token for the service, from the API key given at login (or `ROTOR_API_KEY`).
    pub async fn token(&self) -> Result<String> {
        if let Some(token) = self.token.get() {
            return Ok(token.clone());
        }
        let api_key = match &self.api_key {
            Some(key) => key.clone(),
            None => self.home.settings()?.api_key.ok_or_else(|| {
                anyhow!("not logged in: run 'rotor login --endpoint URL --api-key KEY' or set ROTOR_API_KEY")
            })?,
        };
        let url = format!("{}/identity/token", self.endpoint()?);
        let form = format!(
            "grant_type=urn%3Aibm%3Aparams%3Aoauth%3Agrant-type%3Aapikey&apikey={}",
            form_escape(&api_key)
        );
        let request = self
            .http
            .post(&url)
            .header(
                reqwest::header::CONTENT_TYPE,
                "application/x-www-form-urlencoded",
            )
            .body(form);
        let (status, body) = send(&url, request).await?;
        if !status.is_success() {
            let message: Value = serde_json::from_slice(&body).unwrap_or_default();
            bail!(
                "the service refused the API key: {}",
                message["errorMessage"].as_str().unwrap_or("unknown error")
            );
        }
        let token: TokenBody =
            serde_json::from_slice(&body).context("the token endpoint answered unexpectedly")?;
        let _ = self.token.set(token.access_token.clone());
        Ok(token.access_token)
    }

    /// The HTTP client for the service.
    pub fn http(&self) -> &reqwest::Client {
        &self.http
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

    /// The service endpoint.
    pub fn endpoint(&self) -> Result<String> {
        let endpoint = match &self.endpoint {
            Some(endpoint) => endpoint.clone(),
            None => self.home.settings()?.endpoint.ok_or_else(|| {
                anyhow!(
                    "no service endpoint: run 'rotor login --endpoint URL' or set ROTOR_ENDPOINT"
                )
            })?,
        };
        Ok(endpoint.trim_end_matches('/').to_owned())
    }

    /// Instances and units from the service.
    pub async fn instances(&self) -> Result<Vec<InstanceEntry>> {
        let url = format!("{}/v1/instances", self.endpoint()?);
        let token = self.token().await?;
        let (status, body) = send(&url, self.http.get(&url).bearer_auth(token)).await?;
        if !status.is_success() {
            return Err(rotor_unit::client::ClientError::Relay {
                status: status.as_u16(),
                body: String::from_utf8_lossy(&body).into_owned(),
            }
            .into());
        }
        let body: InstancesBody = serde_json::from_slice(&body)
            .with_context(|| format!("{url} did not answer like a rotor service"))?;
        Ok(body.instances)
    }

    /// Every unit, numbered.
    pub async fn all_units(&self) -> Result<Vec<Target>> {
        let mut targets = Vec::new();
        for instance in self.instances().await? {
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

    async fn client(&self, target: &Target) -> Result<UnitClient> {
        let base = format!(
            "{}/v1/instances/{}/units/{}",
            self.endpoint()?,
            target.instance,
            target.unit.id
        );
        Ok(UnitClient::new(self.http.clone(), base, target.unit.id)
            .with_bearer(self.token().await?))
    }

    /// A unit's verified status; its identity key is pinned on first contact.
    pub async fn status(&self, target: &Target) -> Result<(UnitStatus, PublicKey)> {
        let mut pins = self.home.pins()?;
        let pinned = pins.get(&target.unit.id).cloned();
        let status = self.client(target).await?.status(pinned.as_ref()).await?;
        if pinned.is_none() {
            pins.insert(target.unit.id, status.identity.clone());
            self.home.save_pins(&pins)?;
        }
        let identity = status.identity.clone();
        Ok((status, identity))
    }

    /// The selected signature keys that are admins of this unit, unlocked.
    fn signers_for(&self, status: &UnitStatus) -> Result<Vec<&SigningKey>> {
        let admins: Vec<Ski> = status.admins.iter().map(|a| a.ski).collect();
        let selected = self.home.settings()?.selected_sigkeys;
        let mut any_admin = false;
        for number in &selected {
            let path = self.home.sigkey_path(*number)?;
            if admins.contains(&Ski::of(&SigkeyFile::read(&path)?.public_key)) {
                any_admin = true;
            }
        }
        if !any_admin {
            return Ok(Vec::new());
        }
        if self.signers.get().is_none() {
            let mut locked = Vec::new();
            for number in &selected {
                let path = self.home.sigkey_path(*number)?;
                let file = SigkeyFile::read(&path)?;
                let password = read_password(&format!(
                    "Password for signature key {number} ({}): ",
                    file.name
                ))?;
                locked.push((path, file, password));
            }
            // Each unlock is a deliberately slow Argon2id; run them side by side.
            let keys = std::thread::scope(|scope| {
                let unlocking: Vec<_> = locked
                    .iter()
                    .map(|(path, file, password)| scope.spawn(move || file.unlock(path, password)))
                    .collect();
                unlocking
                    .into_iter()
                    .map(|handle| match handle.join() {
                        Ok(unlocked) => Ok(unlocked?),
                        Err(_) => Err(anyhow!("unlocking a signature key failed")),
                    })
                    .collect::<Result<Vec<_>>>()
            })?;
            let _ = self.signers.set(keys);
        }
        Ok(self
            .signers
            .get()
            .map(|keys| {
                keys.iter()
                    .filter(|key| admins.contains(&Ski::of(&key.public_key())))
                    .collect()
            })
            .unwrap_or_default())
    }

    /// Signs `action` for the unit's next counter with the selected admin keys and sends it.
    pub async fn act(&self, target: &Target, action: Action) -> Result<(Outcome, UnitStatus)> {
        let (status, identity) = self.status(target).await?;
        self.act_on(target, &status, &identity, action).await
    }

    async fn act_on(
        &self,
        target: &Target,
        status: &UnitStatus,
        identity: &PublicKey,
        action: Action,
    ) -> Result<(Outcome, UnitStatus)> {
        let signers = self.signers_for(status)?;
        let command = Command {
            unit: target.unit.id,
            counter: status.counter + 1,
            action,
        };
        let name = command.action.name();
        self.client(target)
            .await?
            .command(identity, command.sign(&signers))
            .await
            .map_err(anyhow::Error::from)
            .with_context(|| format!("crypto unit {} refused to {name}", target.number))
    }

    /// Applies one action per selected unit, in order, stopping at the first refusal.
    async fn each_selected(
        &self,
        verb: &str,
        mut build: impl FnMut(&Target, &UnitStatus) -> Result<Option<Action>>,
    ) -> Result<()> {
        let mut report = Vec::new();
        for target in self.selected().await? {
            let (status, identity) = self.status(&target).await?;
            let Some(action) = build(&target, &status)? else {
                continue;
            };
            match self.act_on(&target, &status, &identity, action).await {
                Ok(_) => {
                    if !self.json {
                        println!("crypto unit {}: {verb}", target.number);
                    }
                    report
                        .push(json!({"unit": target.number, "id": target.unit.id, "result": "ok"}));
                }
                Err(err) => {
                    if !report.is_empty() && !self.json {
                        eprintln!(
                            "done on {} unit(s) before this error; the rest were not changed",
                            report.len()
                        );
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

/// Sends a request to the service; a failure to exchange it is [`ClientError::Unreachable`].
async fn send(
    url: &str,
    request: reqwest::RequestBuilder,
) -> Result<(reqwest::StatusCode, axum::body::Bytes)> {
    let unreachable =
        |err: reqwest::Error| rotor_unit::client::ClientError::Unreachable(format!("{url}: {err}"));
    let response = request.send().await.map_err(unreachable)?;
    let status = response.status();
    Ok((status, response.bytes().await.map_err(unreachable)?))
}

/// Escapes a value for an `application/x-www-form-urlencoded` body.
fn form_escape(value: &str) -> String {
    value
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                char::from(b).to_string()
            }
            other => format!("%{other:02X}"),
        })
        .collect()
}

/// `rotor login`
pub async fn login(ctx: &Ctx, endpoint: &str, api_key: &str) -> Result<()> {
    let endpoint = endpoint.trim_end_matches('/').to_owned();
    let mut probe = Ctx::new(ctx.home.clone(), ctx.json, ctx.yes, Some(endpoint.clone()));
    probe.api_key = Some(api_key.to_owned());
    let instances = probe.instances().await?;
    let mut settings = ctx.home.settings()?;
    settings.endpoint = Some(endpoint.clone());
    settings.api_key = Some(api_key.to_owned());
    ctx.home.save_settings(&settings)?;
    if ctx.json {
        print_json(&json!({"endpoint": endpoint, "instances": instances.len()}));
    } else {
        println!("Logged in to {endpoint} ({} instance(s)).", instances.len());
    }
    Ok(())
}

/// `rotor units …`
pub async fn units(ctx: &Ctx, command: Option<UnitsCommand>) -> Result<()> {
    match command {
        None => list_units(ctx).await,
        Some(UnitsCommand::Select { numbers, all }) => select(ctx, &numbers, all, true).await,
        Some(UnitsCommand::Deselect { numbers, all }) => select(ctx, &numbers, all, false).await,
        Some(UnitsCommand::Compare) => compare(ctx).await,
        Some(UnitsCommand::Zeroize) => {
            let count = ctx.selected().await?.len();
            ctx.confirm(&format!(
                "Zeroize {count} crypto unit(s)? Both registers are cleared and all admins removed; keys wrapped under their master key stay unusable until it is loaded again."
            ))?;
            ctx.each_selected("zeroized (imprint mode)", |_, _| Ok(Some(Action::Zeroize)))
                .await
        }
        Some(UnitsCommand::Forget { unit }) => {
            let mut pins = ctx.home.pins()?;
            if pins.remove(&unit).is_none() {
                bail!("no identity key is pinned for unit {unit}");
            }
            ctx.home.save_pins(&pins)?;
            println!("Forgot the identity key of unit {unit}; it is pinned again on next contact.");
            Ok(())
        }
    }
}

async fn list_units(ctx: &Ctx) -> Result<()> {
    let selected = ctx.home.settings()?.selected_units;
    let instances = ctx.instances().await?;
    if ctx.json {
        let mut number = 0;
        let view: Vec<_> = instances
            .iter()
            .map(|instance| {
                let units: Vec<_> = instance
                    .units
                    .iter()
                    .map(|unit| {
                        number += 1;
                        json!({"number": number, "selected": selected.contains(&unit.id), "id": unit.id, "kind": unit.kind, "address": unit.address})
                    })
                    .collect();
                json!({"id": instance.id, "name": instance.name, "units": units})
            })
            .collect();
        print_json(&json!({ "instances": view }));
        return Ok(());
    }
    if instances.is_empty() {
        println!("No service instances were found.");
        return Ok(());
    }
    let mut number = 0;
    for instance in &instances {
        println!("SERVICE INSTANCE: {} ({})", instance.id, instance.name);
        let rows: Vec<Vec<String>> = instance
            .units
            .iter()
            .map(|unit| {
                number += 1;
                vec![
                    number.to_string(),
                    selected.contains(&unit.id).to_string(),
                    unit.kind.label().to_owned(),
                    unit.id.to_string(),
                ]
            })
            .collect();
        print!(
            "{}",
            table(&["CRYPTO UNIT NUM", "SELECTED", "TYPE", "UNIT ID"], &rows)
        );
        println!();
    }
    Ok(())
}

async fn select(ctx: &Ctx, numbers: &[usize], all: bool, add: bool) -> Result<()> {
    let units = ctx.all_units().await?;
    if !all && numbers.is_empty() {
        bail!("name the unit numbers to change, or pass --all");
    }
    for number in numbers {
        if *number == 0 || *number > units.len() {
            bail!(
                "there is no crypto unit number {number}; 'rotor units' lists 1 to {}",
                units.len()
            );
        }
    }
    let chosen: Vec<Uuid> = units
        .iter()
        .filter(|t| all || numbers.contains(&t.number))
        .map(|t| t.unit.id)
        .collect();
    let mut settings = ctx.home.settings()?;
    if add {
        for id in chosen {
            if !settings.selected_units.contains(&id) {
                settings.selected_units.push(id);
            }
        }
    } else {
        settings.selected_units.retain(|id| !chosen.contains(id));
    }
    ctx.home.save_settings(&settings)?;
    let now: Vec<usize> = units
        .iter()
        .filter(|t| settings.selected_units.contains(&t.unit.id))
        .map(|t| t.number)
        .collect();
    if ctx.json {
        print_json(&json!({ "selected": now }));
    } else {
        println!("Selected crypto units: {}", join_numbers(&now));
    }
    Ok(())
}

fn join_numbers(numbers: &[usize]) -> String {
    if numbers.is_empty() {
        return "none".to_owned();
    }
    numbers
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

async fn statuses(ctx: &Ctx) -> Result<Vec<(Target, UnitStatus)>> {
    let mut out = Vec::new();
    for target in ctx.selected().await? {
        let (status, _) = ctx.status(&target).await?;
        out.push((target, status));
    }
    Ok(out)
}

/// One section of `units compare`: a value per unit, and whether they all agree.
struct Section {
    title: &'static str,
    headers: &'static [&'static str],
    rows_of: fn(&UnitStatus) -> Vec<Vec<String>>,
}

fn admin_rows(status: &UnitStatus) -> Vec<Vec<String>> {
    if status.admins.is_empty() {
        return vec![vec!["(none)".to_owned(), String::new()]];
    }
    status
        .admins
        .iter()
        .map(|a| vec![a.name.clone(), a.ski.to_hex()])
        .collect()
}

fn threshold_rows(status: &UnitStatus) -> Vec<Vec<String>> {
    vec![vec![
        status.signature_threshold.to_string(),
        status.revocation_threshold.to_string(),
        if status.imprint { "imprint" } else { "secure" }.to_owned(),
    ]]
}

fn current_rows(status: &UnitStatus) -> Vec<Vec<String>> {
    vec![vec![
        status.current.state.label().to_owned(),
        status.current.vp.to_hex(),
    ]]
}

fn new_rows(status: &UnitStatus) -> Vec<Vec<String>> {
    vec![vec![
        status.new.state.label().to_owned(),
        status.new.vp.to_hex(),
    ]]
}

const SECTIONS: &[Section] = &[
    Section {
        title: "ADMINISTRATORS",
        headers: &["ADMIN NAME", "SUBJECT KEY IDENTIFIER"],
        rows_of: admin_rows,
    },
    Section {
        title: "SIGNATURE THRESHOLDS",
        headers: &["SIGNATURE", "REVOCATION", "MODE"],
        rows_of: threshold_rows,
    },
    Section {
        title: "CURRENT MASTER KEY REGISTER",
        headers: &["STATUS", "VERIFICATION PATTERN"],
        rows_of: current_rows,
    },
    Section {
        title: "NEW MASTER KEY REGISTER",
        headers: &["STATUS", "VERIFICATION PATTERN"],
        rows_of: new_rows,
    },
];

async fn compare(ctx: &Ctx) -> Result<()> {
    let units = statuses(ctx).await?;
    let mut differences = Vec::new();
    let mut text = String::new();
    for section in SECTIONS {
        let values: Vec<Vec<Vec<String>>> =
            units.iter().map(|(_, s)| (section.rows_of)(s)).collect();
        // The most common value is the reference; units that differ from it are marked.
        let reference = values
            .iter()
            .max_by_key(|v| values.iter().filter(|w| w == v).count())
            .cloned()
            .unwrap_or_default();
        let differs = values.iter().any(|v| *v != reference);
        if differs {
            differences.push(section.title);
        }
        let mut headers = vec!["CRYPTO UNIT NUM"];
        headers.extend_from_slice(section.headers);
        let mut rows = Vec::new();
        for ((target, _), value) in units.iter().zip(&values) {
            let mark = if *value != reference { " *" } else { "" };
            for (i, row) in value.iter().enumerate() {
                let label = if i == 0 {
                    format!("{}{mark}", target.number)
                } else {
                    String::new()
                };
                let mut full = vec![label];
                full.extend(row.iter().cloned());
                rows.push(full);
            }
        }
        text.push_str(&format!(
            "{}{}\n",
            section.title,
            if differs { "  (differs)" } else { "" }
        ));
        text.push_str(&table(&headers, &rows));
        text.push('\n');
    }
    if ctx.json {
        let view: Vec<_> = units
            .iter()
            .map(|(t, s)| json!({"number": t.number, "status": s}))
            .collect();
        print_json(&json!({"units": view, "differences": differences}));
    } else {
        print!("{text}");
        if differences.is_empty() {
            println!("All selected crypto units have the same configuration.");
        } else {
            println!("Differences (units marked *): {}", differences.join(", "));
        }
    }
    Ok(())
}

/// `rotor admins …`
pub async fn admins(ctx: &Ctx, command: Option<AdminsCommand>) -> Result<()> {
    match command {
        None => {
            let units = statuses(ctx).await?;
            if ctx.json {
                let view: Vec<_> = units
                    .iter()
                    .map(|(t, s)| json!({"number": t.number, "admins": s.admins}))
                    .collect();
                print_json(&json!({ "units": view }));
            } else {
                let mut rows = Vec::new();
                for (target, status) in &units {
                    for row in admin_rows(status) {
                        let mut full = vec![target.number.to_string()];
                        full.extend(row);
                        rows.push(full);
                    }
                }
                print!(
                    "{}",
                    table(
                        &["CRYPTO UNIT NUM", "ADMIN NAME", "SUBJECT KEY IDENTIFIER"],
                        &rows
                    )
                );
            }
            Ok(())
        }
        Some(AdminsCommand::Add { sigkeys }) => {
            let mut files = Vec::new();
            for number in &sigkeys {
                files.push(SigkeyFile::read(&ctx.home.sigkey_path(*number)?)?);
            }
            for file in &files {
                let ski = Ski::of(&file.public_key);
                ctx.each_selected(
                    &format!("admin '{}' installed", file.name),
                    |target, status| {
                        if status.admins.iter().any(|a| a.ski == ski) {
                            if !ctx.json {
                                println!(
                                    "crypto unit {}: admin '{}' is already installed",
                                    target.number, file.name
                                );
                            }
                            return Ok(None);
                        }
                        Ok(Some(Action::AddAdmin {
                            name: file.name.clone(),
                            public_key: file.public_key.clone(),
                        }))
                    },
                )
                .await?;
            }
            Ok(())
        }
        Some(AdminsCommand::Rm { admin }) => {
            let units = statuses(ctx).await?;
            let ski = resolve_admin(ctx, &admin, &units)?;
            ctx.each_selected(&format!("admin {} removed", ski.to_hex()), |_, _| {
                Ok(Some(Action::RemoveAdmin { ski }))
            })
            .await
        }
    }
}

fn resolve_admin(ctx: &Ctx, admin: &str, units: &[(Target, UnitStatus)]) -> Result<Ski> {
    if let Some(number) = admin.strip_prefix('#') {
        let number: u32 = number
            .parse()
            .with_context(|| format!("'{admin}' is not '#' and a signature key number"))?;
        return Ok(Ski::of(
            &SigkeyFile::read(&ctx.home.sigkey_path(number)?)?.public_key,
        ));
    }
    let prefix = admin.to_lowercase();
    let mut matches: Vec<Ski> = units
        .iter()
        .flat_map(|(_, s)| s.admins.iter().map(|a| a.ski))
        .filter(|ski| ski.to_hex().starts_with(&prefix))
        .collect();
    matches.sort();
    matches.dedup();
    match matches.as_slice() {
        [ski] if !prefix.is_empty() => Ok(*ski),
        [] | [_] => bail!(
            "no admin on the selected units has a subject key identifier starting with '{admin}'"
        ),
        _ => bail!(
            "'{admin}' matches {} admins; give more of the identifier",
            matches.len()
        ),
    }
}

/// `rotor thresholds …`
pub async fn thresholds(ctx: &Ctx, command: Option<ThresholdsCommand>) -> Result<()> {
    match command {
        None => {
            let units = statuses(ctx).await?;
            if ctx.json {
                let view: Vec<_> = units
                    .iter()
                    .map(|(t, s)| json!({"number": t.number, "signature": s.signature_threshold, "revocation": s.revocation_threshold, "imprint": s.imprint}))
                    .collect();
                print_json(&json!({ "units": view }));
            } else {
                let rows: Vec<Vec<String>> = units
                    .iter()
                    .flat_map(|(t, s)| {
                        threshold_rows(s).into_iter().map(|mut row| {
                            row.insert(0, t.number.to_string());
                            row
                        })
                    })
                    .collect();
                print!(
                    "{}",
                    table(
                        &["CRYPTO UNIT NUM", "SIGNATURE", "REVOCATION", "MODE"],
                        &rows
                    )
                );
            }
            Ok(())
        }
        Some(ThresholdsCommand::Set {
            signature,
            revocation,
        }) => {
            ctx.each_selected(
                &format!("thresholds set to signature {signature}, revocation {revocation}"),
                |_, _| {
                    Ok(Some(Action::SetThresholds {
                        signature,
                        revocation,
                    }))
                },
            )
            .await
        }
    }
}

/// `rotor mk …`
pub async fn mk(ctx: &Ctx, command: Option<MkCommand>) -> Result<()> {
    match command {
        None => show_registers(ctx).await,
        Some(MkCommand::Load { parts }) => load(ctx, &parts).await,
        Some(MkCommand::Commit { vp }) => {
            let vp = expected_vp(ctx, vp.as_deref(), NewState::FullUncommitted).await?;
            ctx.each_selected(&format!("new register committed (VP {vp})"), |_, _| {
                Ok(Some(Action::Commit { vp }))
            })
            .await
        }
        Some(MkCommand::Setimm { vp }) => {
            let vp = expected_vp(ctx, vp.as_deref(), NewState::FullCommitted).await?;
            ctx.confirm(&format!(
                "Make the new master key (VP {vp}) current on the selected units? This does not reencrypt key storage: use it to initialize units or to finish a rotation whose reencryption is done."
            ))?;
            ctx.each_selected(&format!("new master key is current (VP {vp})"), |_, _| {
                Ok(Some(Action::SetImmediate { vp }))
            })
            .await
        }
        Some(MkCommand::Rotate { abort: false }) => {
            crate::rotate::rotate(ctx, crate::rotate::Flow::Parts).await
        }
        Some(MkCommand::Rotate { abort: true }) => crate::rotate::abort(ctx).await,
        Some(MkCommand::ClearNew) => {
            ctx.confirm("Clear the new master key register of the selected units?")?;
            ctx.each_selected("new register cleared", |_, _| Ok(Some(Action::ClearNew)))
                .await
        }
        Some(MkCommand::ClearCurrent) => {
            ctx.confirm(
                "Clear the current master key register of the selected units? Keys wrapped under it are unusable until the same master key is loaded again.",
            )?;
            ctx.each_selected("current register cleared", |_, _| {
                Ok(Some(Action::ClearCurrent))
            })
            .await
        }
    }
}

/// How many key versions of an instance sit under one master key.
#[derive(Debug, Serialize, Deserialize)]
struct MasterKeyCount {
    vp: Vp,
    key_versions: u64,
}

#[derive(Deserialize)]
struct KeystoreBody {
    master_keys: Vec<MasterKeyCount>,
}

/// Key storage per master key for each instance of the selected units, with the register that
/// holds each master key on those units (`None`: no selected unit holds it).
async fn key_storage(ctx: &Ctx, units: &[(Target, UnitStatus)]) -> Result<Vec<Value>> {
    let mut instances: Vec<Uuid> = units.iter().map(|(t, _)| t.instance).collect();
    instances.dedup();
    let mut out = Vec::new();
    for instance in instances {
        let url = format!("{}/v1/instances/{instance}/keystore", ctx.endpoint()?);
        let (status, body) = send(&url, ctx.http.get(&url).bearer_auth(ctx.token().await?)).await?;
        if !status.is_success() {
            return Err(rotor_unit::client::ClientError::Relay {
                status: status.as_u16(),
                body: String::from_utf8_lossy(&body).into_owned(),
            }
            .into());
        }
        let body: KeystoreBody =
            serde_json::from_slice(&body).context("unexpected key storage answer")?;
        for count in body.master_keys {
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
            out.push(json!({"instance": instance, "vp": count.vp, "key_versions": count.key_versions, "held_in": held_in}));
        }
    }
    Ok(out)
}

async fn show_registers(ctx: &Ctx) -> Result<()> {
    let units = statuses(ctx).await?;
    let storage = key_storage(ctx, &units).await?;
    let orphaned: Vec<&Value> = storage.iter().filter(|s| s["held_in"].is_null()).collect();
    for entry in &orphaned {
        eprintln!(
            "warning: {} key version(s) of instance {} are wrapped under master key VP {}, which no selected crypto unit holds; they stay unusable until that master key is loaded again",
            entry["key_versions"],
            entry["instance"].as_str().unwrap_or_default(),
            entry["vp"].as_str().unwrap_or_default()
        );
    }
    let rotation = match units.first() {
        Some((target, _)) => crate::rotate::journal(ctx, target.instance).await?,
        None => None,
    };
    if ctx.json {
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
        println!("\nMASTER KEY ROTATION");
        println!(
            "{} → {}: {}",
            rotation["from"].as_str().unwrap_or_default(),
            rotation["to"].as_str().unwrap_or_default(),
            rotation["phase"].as_str().unwrap_or_default()
        );
        if rotation["remaining"].as_u64().unwrap_or(0) > 0 || rotation["running"] == true {
            println!(
                "{} of {} rewrapped, {} left, {:.0} keys/s, about {} s to go",
                rotation["done"],
                rotation["total"],
                rotation["remaining"],
                rotation["rate"].as_f64().unwrap_or(0.0),
                rotation["seconds_left"]
                    .as_f64()
                    .map_or_else(|| "?".to_owned(), |s| format!("{s:.0}"))
            );
        }
        if let Some(waiting) = rotation["waiting"].as_str() {
            println!("waiting: {waiting}");
        }
    }
    if !storage.is_empty() {
        let rows: Vec<Vec<String>> = storage
            .iter()
            .map(|s| {
                vec![
                    s["vp"].as_str().unwrap_or_default().to_owned(),
                    s["key_versions"].to_string(),
                    s["held_in"]
                        .as_str()
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
async fn expected_vp(ctx: &Ctx, given: Option<&str>, state: NewState) -> Result<Vp> {
    if let Some(text) = given {
        return Vp::from_hex(text).ok_or_else(|| anyhow!("--vp must be 64 hex characters"));
    }
    let units = statuses(ctx).await?;
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

async fn load(ctx: &Ctx, numbers: &[u32]) -> Result<()> {
    let mut parts: Vec<Secret32> = Vec::new();
    for number in numbers {
        let path = ctx.home.part_path(*number)?;
        let file = PartFile::read(&path)?;
        let password = read_password(&format!("Password for key part {number}: "))?;
        parts.push(file.unlock(&path, &password)?);
    }
    let targets = ctx.selected().await?;
    let mut report = Vec::new();
    for target in targets {
        let (outcome, _) = ctx.act(&target, Action::CreateImporter).await?;
        let Outcome::Importer { public_key } = outcome else {
            bail!(
                "crypto unit {} did not return an importer key",
                target.number
            );
        };
        let context = envelope_context(PART_CONTEXT, target.unit.id);
        let envelopes = parts
            .iter()
            .map(|part| seal_to(&public_key, &context, part))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|_| {
                anyhow!(
                    "crypto unit {} returned an invalid importer key",
                    target.number
                )
            })?;
        let (_, status) = ctx
            .act(
                &target,
                Action::LoadNew {
                    importer: public_key,
                    parts: envelopes,
                },
            )
            .await?;
        if !ctx.json {
            println!(
                "crypto unit {}: new register {} (VP {})",
                target.number,
                status.new.state.label(),
                status.new.vp
            );
        }
        report.push(json!({"unit": target.number, "new": status.new}));
    }
    if ctx.json {
        print_json(&json!({ "units": report }));
    }
    Ok(())
}

//! What every command shares: the workstation, the output mode, the service connection, the
//! unit selection and the signature keys once unlocked. Every request to a unit is checked
//! against its pinned identity key, and every change is a command signed here.

use std::io::IsTerminal;

use anyhow::{Context, Result, anyhow, bail};
use rotor_crypto::{PublicKey, SigningKey};
use rotor_server::config::UnitConfig;
use rotor_unit::client::UnitClient;
use rotor_unit::wire::{Action, Command, Outcome, Ski, UnitStatus};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use uuid::Uuid;

use crate::output::print_json;
use crate::workstation::{Home, SigkeyFile, read_password};

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
    pub(crate) api_key: Option<String>,
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
    pub async fn each_selected(
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
pub(crate) async fn send(
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

/// The verified statuses of the selected units.
pub async fn statuses(ctx: &Ctx) -> Result<Vec<(Target, UnitStatus)>> {
    let mut out = Vec::new();
    for target in ctx.selected().await? {
        let (status, _) = ctx.status(&target).await?;
        out.push((target, status));
    }
    Ok(out)
}

/// The selected units, which must be every unit of exactly one instance.
pub async fn whole_instance(ctx: &Ctx) -> Result<Vec<Target>> {
    let selected = ctx.selected().await?;
    let instance = selected[0].instance;
    if selected.iter().any(|t| t.instance != instance) {
        bail!(
            "the selected crypto units belong to several instances; select all units of one instance"
        );
    }
    let missing: Vec<String> = ctx
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

//! `rotor dev`: a local instance, unit processes and the service on loopback, initialized with
//! the key-part ceremony run through this binary.

use std::process::Stdio;

use anyhow::{Context, Result, bail};
use rotor_crypto::Vp;
use rotor_server::dev::{DevInfo, DevOptions, DevUnits, start_units};
use rotor_unit::trust::Enrollment;
use rotor_unit::wire::{CurrentState, RegisterInfo};
use serde::Deserialize;
use tokio::net::TcpListener;

use crate::args::DevArgs;
use crate::cmd::replicas::Replicas;
use crate::output::print_json;
use crate::workstation::Home;

/// A dev instance: unit processes plus the service, on a background task or as replica
/// processes.
pub struct DevInstance {
    /// Where the service answers.
    pub info: DevInfo,
    units: DevUnits,
    serving: Serving,
}

/// How a dev instance serves its API.
enum Serving {
    /// One service on a task of this process.
    InProcess(tokio::task::JoinHandle<()>),
    /// Service replicas as processes.
    Replicas(Replicas),
}

impl DevInstance {
    /// The replica processes, when the instance runs several.
    pub fn replicas(&mut self) -> Option<&mut Replicas> {
        match &mut self.serving {
            Serving::Replicas(replicas) => Some(replicas),
            Serving::InProcess(_) => None,
        }
    }
}

impl DevInstance {
    /// The key storage of the service: PostgreSQL (`rotor dev --postgres`) or SQLite (`None`).
    pub fn store(&self) -> Option<rotor_server::config::StoreConfig> {
        self.units.store()
    }
}

impl Drop for DevInstance {
    fn drop(&mut self) {
        if let Serving::InProcess(server) = &self.serving {
            server.abort();
        }
    }
}

/// Starts units and the service.
pub async fn start_dev(args: &DevArgs) -> Result<DevInstance> {
    let options = DevOptions {
        units: args.units,
        recovery_units: args.recovery_units,
        dir: args.dir.clone(),
        listen: args.listen,
        unit_program: std::env::current_exe().context("cannot find the rotor binary")?,
        purge_after_seconds: args.purge_after_seconds,
        postgres: args.postgres,
    };
    if options.units + options.recovery_units == 0 {
        bail!("a dev instance needs at least one unit");
    }
    if args.replicas > 1 && !args.postgres {
        bail!(
            "several replicas share one database: add --postgres (SQLite serves one service process)"
        );
    }
    let units = rotor_util::blocking(|| start_units(&options))?;
    // This process started the units, so it knows their identities first hand: its own
    // workstation and the one of ROTOR_HOME enroll them, and 'rotor login' works at once.
    enroll_units(&Home::at(units.dir().join("workstation"))?, &units)?;
    enroll_units(&Home::from_env()?, &units)?;
    let listener = TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("cannot listen on {}", args.listen))?;
    if args.insecure_plain_http && !listener.local_addr()?.ip().is_loopback() {
        bail!("--insecure-plain-http is allowed only on a loopback address");
    }
    let scheme = if args.insecure_plain_http {
        "http"
    } else {
        "https"
    };
    let endpoint = format!("{scheme}://{}", listener.local_addr()?);
    let config = rotor_server::dev::config(
        &units,
        listener.local_addr()?,
        args.purge_after_seconds,
        args.token_ttl_seconds,
        args.insecure_plain_http,
    );
    let transport = rotor_server::api_transport(&config)?;
    let mut info = DevInfo {
        endpoint,
        instance: units.instance.id,
        dir: units.dir().to_owned(),
        units: units.instance.units.clone(),
        api_key: units.api_keys.get("manager").cloned().unwrap_or_default(),
        api_keys: units.api_keys.clone(),
        ca_cert: units.tls.ca_cert.clone(),
        grep11_address: None,
        endpoints: Vec::new(),
    };
    if args.replicas > 1 {
        drop(listener);
        let http = rotor_tls::config::http_client(&rotor_tls::ClientTls::trusting(&info.ca_cert))?
            .timeout(std::time::Duration::from_secs(2))
            .build()?;
        let replicas = Replicas::start(
            &options.unit_program,
            &units.dir().join("service").join("replicas"),
            &config,
            usize::from(args.replicas),
            http,
        )
        .await?;
        info.endpoints = replicas.endpoints();
        info.endpoint = info.endpoints.first().cloned().unwrap_or_default();
        return Ok(DevInstance {
            info,
            units,
            serving: Serving::Replicas(replicas),
        });
    }
    // GREP11 on its own port, on the address the API listens on.
    let grep11_listener = TcpListener::bind(std::net::SocketAddr::new(args.listen.ip(), 0))
        .await
        .context("cannot listen for GREP11")?;
    info.grep11_address = Some(grep11_listener.local_addr()?);
    let service = rotor_server::Service::open(config)?;
    let background = service.start_background();
    let grep11 = service.grep11_router();
    let grep11_transport = transport.clone();
    let server = tokio::spawn(async move {
        tokio::join!(
            rotor_tls::serve::serve(
                listener,
                transport,
                service.router(),
                rotor_tls::serve::Limits::SERVICE,
            ),
            rotor_tls::serve::serve(
                grep11_listener,
                grep11_transport,
                grep11,
                rotor_tls::serve::Limits::SERVICE,
            )
        );
        background.abort();
    });
    Ok(DevInstance {
        info,
        units,
        serving: Serving::InProcess(server),
    })
}

/// Enrolls every unit of the dev instance in `home`, keeping what is enrolled already. A unit
/// enrolled there with another identity stays as it is, with a warning: the workstation then
/// refuses it until someone looks.
fn enroll_units(home: &Home, units: &DevUnits) -> Result<()> {
    let mut enrollments = home.enrollments()?;
    let before = enrollments.clone();
    for unit in &units.instance.units {
        let Some(fingerprint) = unit.identity else {
            continue;
        };
        match enrollments.get(&unit.id) {
            None => {
                enrollments.insert(unit.id, Enrollment::new(fingerprint, 0));
            }
            Some(enrolled) if enrolled.fingerprint != fingerprint => eprintln!(
                "warning: unit {} is enrolled with identity {} on the workstation in use, but presents {fingerprint}; it stays refused there",
                unit.id, enrolled.fingerprint
            ),
            Some(_) => {}
        }
    }
    if enrollments != before {
        home.save_enrollments(&enrollments)?;
    }
    Ok(())
}

async fn shutdown_signal() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = async {
            match term.as_mut() {
                Some(term) => { term.recv().await; }
                None => std::future::pending::<()>().await,
            }
        } => {}
    }
}

/// `rotor dev`
pub async fn dev(args: DevArgs, json_output: bool) -> Result<()> {
    let instance = start_dev(&args).await?;
    let info = &instance.info;
    if !args.imprint && !initialized(info).await? {
        initialize(info, true).await?;
    }
    if let Some(path) = &args.info_file {
        rotor_util::fs::write_durable(path, &serde_json::to_vec_pretty(info)?)
            .with_context(|| format!("cannot write {}", path.display()))?;
    }
    if json_output {
        print_json(&serde_json::to_value(info)?);
    } else {
        println!(
            "rotor dev: {} operational and {} recovery unit(s), state in {}",
            args.units,
            args.recovery_units,
            info.dir.display()
        );
        println!("endpoint: {}", info.endpoint);
        println!("CA:       {}", info.ca_cert.display());
        println!("instance: {}", info.instance);
        println!("api key:  {} (Manager)", info.api_key);
        if args.imprint {
            println!("The units are in imprint mode.");
        } else {
            println!(
                "Initialized: admins and key parts in {} (password: {DEV_PASSWORD}).",
                info.dir.join("workstation").display()
            );
        }
        println!(
            "Try: rotor login --endpoint {} --ca-cert {} --api-key {} && rotor units",
            info.endpoint,
            info.ca_cert.display(),
            info.api_key
        );
        println!("Stop with Ctrl-C.");
    }
    shutdown_signal().await;
    Ok(())
}

/// The password of the dev workstation's signature keys and key parts.
const DEV_PASSWORD: &str = "rotor dev password, not for production";

/// Runs this binary with `args` against the dev workstation, echoing the command.
pub(crate) async fn step(info: &DevInfo, args: &[&str], quiet: bool) -> Result<String> {
    if !quiet {
        println!("\n$ rotor {}", args.join(" "));
    }
    let output = tokio::process::Command::new(std::env::current_exe()?)
        .args(args)
        .env("ROTOR_HOME", info.dir.join("workstation"))
        .env("ROTOR_ENDPOINT", &info.endpoint)
        .env("ROTOR_CA_CERT", &info.ca_cert)
        .env("ROTOR_API_KEY", &info.api_key)
        .env("ROTOR_PASSWORD", DEV_PASSWORD)
        .env(
            "ROTOR_ENROLLMENT_SECRET",
            info.enrollment_secrets().as_str(),
        )
        .stdin(Stdio::null())
        .output()
        .await?;
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    if !quiet {
        print!("{stdout}");
    }
    if !output.status.success() {
        bail!(
            "'rotor {}' failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    Ok(stdout)
}

/// The part of `rotor mk --json` the dev instance reads back: each unit's current register.
#[derive(Deserialize)]
struct Registers {
    units: Vec<UnitRegisters>,
}

#[derive(Deserialize)]
struct UnitRegisters {
    current: RegisterInfo<CurrentState>,
}

/// The current register of every unit, as this binary's `rotor mk --json` shows it.
async fn current_registers(info: &DevInfo) -> Result<Vec<RegisterInfo<CurrentState>>> {
    let registers: Registers = serde_json::from_str(&step(info, &["mk", "--json"], true).await?)?;
    Ok(registers.units.into_iter().map(|u| u.current).collect())
}

/// Whether the dev instance's units already hold a master key (a restarted `rotor dev --dir`).
async fn initialized(info: &DevInfo) -> Result<bool> {
    step(info, &["units", "select", "--all"], true).await?;
    Ok(current_registers(info)
        .await?
        .iter()
        .all(|current| current.state == CurrentState::Valid))
}

/// The key-part ceremony on every unit of a dev instance: three admins, thresholds 2/2, a master
/// key from three parts, commit, set immediate. Returns the master key's VP.
pub(crate) async fn initialize(info: &DevInfo, quiet: bool) -> Result<String> {
    let steps: &[&[&str]] = &[
        &["units"],
        &["units", "select", "--all"],
        &["sigkeys", "new", "--name", "admin one"],
        &["sigkeys", "new", "--name", "admin two"],
        &["sigkeys", "new", "--name", "admin three", "--curve", "p521"],
        // The first admin comes in with the units' enrollment secrets; the next ones are signed
        // by the admins already installed.
        &["sigkeys", "use", "1", "2"],
        &["admins", "add", "1", "2", "3"],
        &["thresholds", "set", "--signature", "2", "--revocation", "2"],
        &["parts", "new", "--description", "custodian A"],
        &["parts", "new", "--description", "custodian B"],
        &["parts", "new", "--description", "custodian C"],
        &["mk", "load", "1", "2", "3"],
        &["mk", "commit"],
        &["mk", "setimm", "--yes"],
    ];
    for args in steps {
        step(info, args, quiet).await?;
    }
    let currents = current_registers(info).await?;
    let vps: std::collections::BTreeSet<Vp> = currents.iter().map(|current| current.vp).collect();
    match vps.iter().next() {
        Some(vp)
            if vps.len() == 1
                && currents
                    .iter()
                    .all(|current| current.state == CurrentState::Valid) =>
        {
            Ok(vp.to_hex())
        }
        _ => bail!("the ceremony did not leave every unit with the same valid master key"),
    }
}

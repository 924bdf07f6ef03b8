//! `rotor dev`: a whole local instance on loopback, with its units as real processes.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use rotor_unit::daemon::ServeInfo;
use rotor_unit::wire::UnitKind;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use rotor_store::postgres::TempCluster;

use crate::config::{Config, InstanceConfig, StoreConfig, UnitConfig};
use crate::iam::{ApiKeyConfig, IamConfig, Role};

/// How long a unit may take to start.
const UNIT_START_TIMEOUT: Duration = Duration::from_secs(20);

/// What `rotor dev` starts.
#[derive(Clone, Debug)]
pub struct DevOptions {
    /// Operational units.
    pub units: usize,
    /// Recovery units.
    pub recovery_units: usize,
    /// Where units keep their state; a temporary directory, removed at exit, if `None`.
    pub dir: Option<PathBuf>,
    /// Where the service listens.
    pub listen: SocketAddr,
    /// The program that runs `unit serve` (the `rotor` binary itself).
    pub unit_program: PathBuf,
    /// How long after deletion a key may be purged.
    pub purge_after_seconds: u64,
    /// Keep keys in a throwaway PostgreSQL cluster (`DIR/postgres`) instead of SQLite.
    pub postgres: bool,
}

/// What `rotor dev` writes to `--info-file` and prints with `--json`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct DevInfo {
    /// The service's base URL.
    pub endpoint: String,
    /// The instance id.
    pub instance: Uuid,
    /// The state directory.
    pub dir: PathBuf,
    /// The units.
    pub units: Vec<UnitConfig>,
    /// An API key with the Manager role for the instance.
    pub api_key: String,
    /// One API key per identity, by name: `reader` (Reader), `writer` (Writer), `manager`
    /// (Manager, the same as `api_key`), `manager2` (a second Manager, for dual
    /// authorization), `admin` (Crypto Unit Administrator).
    pub api_keys: BTreeMap<String, String>,
    /// The dev instance's CA certificate: clients verify the endpoint with it
    /// (`--ca-cert`, `ROTOR_CA_CERT`, `REQUESTS_CA_BUNDLE`).
    pub ca_cert: PathBuf,
    /// Where the GREP11 gRPC service listens (`host:port`, TLS verified with `ca_cert`); not
    /// served by several replicas.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grep11_address: Option<SocketAddr>,
    /// Every service replica's base URL (`endpoint` is the first), when there are several.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub endpoints: Vec<String>,
}

impl DevInfo {
    /// The enrollment secrets of this instance's units that have no admin yet, as their info
    /// files hold them now (a zeroized unit writes a new one), joined by commas the way
    /// `ROTOR_ENROLLMENT_SECRET` takes them.
    pub fn enrollment_secrets(&self) -> zeroize::Zeroizing<String> {
        let mut secrets = Vec::new();
        if let Ok(entries) = std::fs::read_dir(self.dir.join("units")) {
            for entry in entries.flatten() {
                let info = std::fs::read(entry.path().join("serve.json"))
                    .ok()
                    .and_then(|text| serde_json::from_slice::<ServeInfo>(&text).ok());
                if let Some(secret) = info.and_then(|info| info.enrollment_secret) {
                    secrets.push(secret);
                }
            }
        }
        zeroize::Zeroizing::new(
            secrets
                .iter()
                .map(|secret| secret.as_str())
                .collect::<Vec<_>>()
                .join(","),
        )
    }
}

/// A failure to start the dev instance.
#[derive(Debug)]
pub struct DevError(pub String);

impl std::fmt::Display for DevError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for DevError {}

/// Running unit processes and their directory; stopped and cleaned up on drop.
#[derive(Debug)]
pub struct DevUnits {
    children: Vec<Child>,
    dir: PathBuf,
    temporary: bool,
    /// The instance these units form.
    pub instance: InstanceConfig,
    /// The API keys of the instance's identities, by name (see [`DevInfo::api_keys`]).
    pub api_keys: BTreeMap<String, String>,
    /// The dev instance's certificates.
    pub tls: DevTls,
    /// The PostgreSQL cluster holding the keys, when not SQLite; stopped on drop.
    pub postgres: Option<TempCluster>,
}

/// The certificates of a dev instance, issued by its own CA in `DIR/pki` (the same code as
/// `rotor pki`): one per unit, the service's client certificate for the units, the API's.
#[derive(Clone, Debug)]
pub struct DevTls {
    /// The CA certificate.
    pub ca_cert: PathBuf,
    /// The revocation list.
    pub crl: PathBuf,
    /// The service's client certificate and key for the instance's units.
    pub service: (PathBuf, PathBuf),
    /// The API's certificate and key (`127.0.0.1`, `::1`, `localhost`).
    pub api: (PathBuf, PathBuf),
}

/// The addresses and names dev certificates are valid for: dev listens on loopback.
fn loopback_subject(role: rotor_tls::Role) -> rotor_tls::pki::Subject {
    rotor_tls::pki::Subject {
        role,
        dns_names: vec!["localhost".to_owned()],
        ip_addresses: vec![
            std::net::Ipv4Addr::LOCALHOST.into(),
            std::net::Ipv6Addr::LOCALHOST.into(),
        ],
    }
}

/// Dev certificates live long: a kept `--dir` should not expire under its user.
const DEV_CERT_DAYS: u32 = 825;

/// The certificate `PREFIX.pem` (and key) issued for `subject`, issued now if missing.
fn dev_cert(
    ca: &mut rotor_tls::pki::Authority,
    prefix: &Path,
    subject: &rotor_tls::pki::Subject,
) -> Result<(PathBuf, PathBuf), DevError> {
    let cert = prefix.with_extension("pem");
    let key = prefix.with_extension("key");
    if cert.is_file() && key.is_file() {
        return Ok((cert, key));
    }
    ca.issue(subject, DEV_CERT_DAYS)
        .and_then(|issued| issued.write(prefix))
        .map_err(|err| DevError(format!("cannot issue {}: {err}", cert.display())))
}

impl Drop for DevUnits {
    fn drop(&mut self) {
        for child in &mut self.children {
            let _ = child.kill();
            let _ = child.wait();
        }
        // Before its directory goes.
        if let Some(mut cluster) = self.postgres.take() {
            let _ = cluster.stop();
        }
        if self.temporary {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

impl DevUnits {
    /// The state directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The key storage the service uses: the dev cluster, or SQLite (`None`).
    pub fn store(&self) -> Option<StoreConfig> {
        self.postgres.as_ref().map(|cluster| StoreConfig {
            url: cluster.url(),
            ca_cert: None,
            max_connections: rotor_store::PgConfig::DEFAULT_MAX_CONNECTIONS,
        })
    }
}

fn temporary_dir() -> PathBuf {
    std::env::temp_dir().join(format!("rotor-dev-{}", Uuid::new_v4().simple()))
}

/// A secret kept in a file of the directory (created with mode 0600 on first use).
fn kept_secret(path: &Path, make: impl FnOnce() -> String) -> Result<String, DevError> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    if let Ok(text) = std::fs::read_to_string(path) {
        return Ok(text.trim().to_owned());
    }
    let value = make();
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .and_then(|mut file| file.write_all(value.as_bytes()))
        .map_err(|err| DevError(format!("cannot write {}: {err}", path.display())))?;
    Ok(value)
}

/// The instance id kept in the directory, so that a restarted `rotor dev --dir` is the same
/// instance.
fn instance_id(dir: &Path) -> Result<Uuid, DevError> {
    let path = dir.join("instance");
    match std::fs::read_to_string(&path) {
        Ok(text) => Uuid::parse_str(text.trim())
            .map_err(|_| DevError(format!("{} does not hold an instance id", path.display()))),
        Err(_) => {
            let id = Uuid::new_v4();
            std::fs::write(&path, id.to_string())
                .map_err(|err| DevError(format!("cannot write {}: {err}", path.display())))?;
            Ok(id)
        }
    }
}

fn spawn_unit(
    program: &Path,
    dir: &Path,
    kind: UnitKind,
    tls: &DevTls,
    cert: &(PathBuf, PathBuf),
    passphrase: &str,
) -> Result<(Child, PathBuf), DevError> {
    std::fs::create_dir_all(dir)
        .map_err(|err| DevError(format!("cannot create {}: {err}", dir.display())))?;
    let info = dir.join("serve.json");
    let _ = std::fs::remove_file(&info);
    let log = std::fs::File::create(dir.join("unit.log")).map_err(|err| {
        DevError(format!(
            "cannot create the unit log in {}: {err}",
            dir.display()
        ))
    })?;
    let mut command = Command::new(program);
    command
        .args([
            "unit",
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--exit-with-parent",
            "--seal",
            // A unit directory of an older dev instance keeps its seal.key.
            if dir.join("seal.key").exists() {
                "file"
            } else {
                "passphrase"
            },
            "--dir",
        ])
        .arg(dir)
        .env("ROTOR_UNIT_PASSPHRASE", passphrase)
        .arg("--info-file")
        .arg(&info)
        .arg("--tls-cert")
        .arg(&cert.0)
        .arg("--tls-key")
        .arg(&cert.1)
        .arg("--client-ca")
        .arg(&tls.ca_cert)
        .arg("--crl")
        .arg(&tls.crl)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log);
    if kind == UnitKind::Recovery {
        command.arg("--recovery");
    }
    let child = command
        .spawn()
        .map_err(|err| DevError(format!("cannot start {}: {err}", program.display())))?;
    Ok((child, info))
}

fn wait_for_info(child: &mut Child, info: &Path, dir: &Path) -> Result<ServeInfo, DevError> {
    let deadline = Instant::now() + UNIT_START_TIMEOUT;
    loop {
        if let Ok(text) = std::fs::read_to_string(info)
            && let Ok(info) = serde_json::from_str::<ServeInfo>(&text)
        {
            return Ok(info);
        }
        if let Ok(Some(status)) = child.try_wait() {
            let log = std::fs::read_to_string(dir.join("unit.log")).unwrap_or_default();
            return Err(DevError(format!(
                "unit in {} exited ({status}): {}",
                dir.display(),
                log.trim()
            )));
        }
        if Instant::now() > deadline {
            return Err(DevError(format!(
                "unit in {} did not start in time",
                dir.display()
            )));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Starts the unit processes of a dev instance and waits until each listens.
pub fn start_units(options: &DevOptions) -> Result<DevUnits, DevError> {
    let (dir, temporary) = match &options.dir {
        Some(dir) => (dir.clone(), false),
        None => (temporary_dir(), true),
    };
    std::fs::create_dir_all(&dir)
        .map_err(|err| DevError(format!("cannot create {}: {err}", dir.display())))?;
    let instance = instance_id(&dir)?;
    let pki = dir.join("pki");
    let mut ca = rotor_tls::pki::Authority::open_or_create(&pki, &format!("dev {instance}"))
        .map_err(|err| {
            DevError(format!(
                "cannot open the dev CA in {}: {err}",
                pki.display()
            ))
        })?;
    let tls = DevTls {
        ca_cert: ca.ca_cert_path(),
        crl: ca.crl_path(),
        service: dev_cert(
            &mut ca,
            &pki.join("service"),
            &rotor_tls::pki::Subject {
                role: rotor_tls::Role::Service { instance },
                dns_names: Vec::new(),
                ip_addresses: Vec::new(),
            },
        )?,
        api: dev_cert(
            &mut ca,
            &pki.join("api"),
            &loopback_subject(rotor_tls::Role::Api),
        )?,
    };
    // Development: the units' passphrase lies in the directory (mode 0600), so the instance
    // starts without a prompt; a production unit gets it from its operator.
    let passphrase = kept_secret(&dir.join("units.passphrase"), || {
        let mut bytes = [0u8; 32];
        rotor_crypto::fill_random(&mut bytes);
        hex::encode(bytes)
    })?;
    let mut api_keys = BTreeMap::new();
    for (name, _) in IDENTITIES {
        let key = kept_secret(&dir.join(format!("api-key.{name}")), || {
            crate::iam::new_api_key().0
        })?;
        api_keys.insert((*name).to_owned(), key);
    }
    let mut units = DevUnits {
        children: Vec::new(),
        dir: dir.clone(),
        temporary,
        api_keys,
        instance: InstanceConfig {
            id: instance,
            name: "dev".to_owned(),
            units: Vec::new(),
            client_cert: Some(tls.service.0.clone()),
            client_key: Some(tls.service.1.clone()),
        },
        tls: tls.clone(),
        postgres: None,
    };
    if options.postgres {
        let cluster = TempCluster::start(&dir.join("postgres"))
            .map_err(|err| DevError(format!("cannot start PostgreSQL: {err}")))?;
        units.postgres = Some(cluster);
    }
    let kinds = std::iter::repeat_n(UnitKind::Operational, options.units).chain(
        std::iter::repeat_n(UnitKind::Recovery, options.recovery_units),
    );
    let mut started = Vec::new();
    for (index, kind) in kinds.enumerate() {
        let prefix = match kind {
            UnitKind::Operational => "operational",
            UnitKind::Recovery => "recovery",
        };
        let unit_dir = dir.join("units").join(format!("{prefix}-{index}"));
        let cert = dev_cert(
            &mut ca,
            &pki.join(format!("unit-{prefix}-{index}")),
            &loopback_subject(rotor_tls::Role::Unit {
                instance,
                unit: None,
            }),
        )?;
        let (child, info) = spawn_unit(
            &options.unit_program,
            &unit_dir,
            kind,
            &tls,
            &cert,
            &passphrase,
        )?;
        units.children.push(child);
        started.push((info, unit_dir));
    }
    for (child, (info, unit_dir)) in units.children.iter_mut().zip(&started) {
        let info = wait_for_info(child, info, unit_dir)?;
        // The unit wrote its own fingerprint into the info file on this host (no service in
        // between): the service then refuses any other identity, and workstations enroll it.
        units.instance.units.push(UnitConfig {
            id: info.unit,
            kind: info.kind,
            address: info.address,
            identity: Some(info.fingerprint),
        });
    }
    Ok(units)
}

/// The identities of a dev instance and their roles.
const IDENTITIES: &[(&str, Role)] = &[
    ("reader", Role::Reader),
    ("writer", Role::Writer),
    ("manager", Role::Manager),
    ("manager2", Role::Manager),
    ("admin", Role::CryptoUnitAdministrator),
];

/// The service configuration for a dev instance, with one API key per identity.
pub fn config(
    units: &DevUnits,
    listen: SocketAddr,
    purge_after_seconds: u64,
    token_ttl_seconds: u64,
    insecure_plain_http: bool,
) -> Config {
    let api_keys = IDENTITIES
        .iter()
        .filter_map(|(name, role)| {
            let key = units.api_keys.get(*name)?;
            Some(ApiKeyConfig {
                name: (*name).to_owned(),
                key_sha256: hex::encode(rotor_crypto::sha256(key.as_bytes())),
                role: *role,
                instances: vec![units.instance.id.to_string()],
            })
        })
        .collect();
    Config {
        listen,
        grep11_listen: None,
        data_dir: units.dir.join("service"),
        iam: IamConfig {
            api_keys,
            token_ttl_seconds,
        },
        tls: (!insecure_plain_http).then(|| crate::config::ApiTls {
            cert: units.tls.api.0.clone(),
            key: units.tls.api.1.clone(),
        }),
        insecure_plain_http,
        units_tls: Some(crate::config::UnitsTls {
            ca: units.tls.ca_cert.clone(),
            crl: Some(units.tls.crl.clone()),
        }),
        units_token_file: None,
        purge_after_seconds,
        instances: vec![units.instance.clone()],
        trusted_proxies: Vec::new(),
        replica_name: None,
        store: units.store(),
    }
}

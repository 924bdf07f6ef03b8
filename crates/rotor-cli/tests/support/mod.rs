//! Helpers shared by the integration tests.

#![allow(clippy::unwrap_used, clippy::expect_used, dead_code)]

pub(crate) mod rotation;
pub(crate) mod units;

/// A bearer token from the service's token endpoint for `api_key`. Runs its own runtime on a
/// separate thread, so it works from synchronous and asynchronous tests alike.
pub(crate) fn access_token(info: &rotor_server::dev::DevInfo, api_key: &str) -> String {
    access_token_at(&info.endpoint, &info.ca_cert, api_key)
}

/// A bearer token from the token endpoint of the service at `endpoint`, whose certificate
/// chains to `ca`.
pub(crate) fn access_token_at(endpoint: &str, ca: &std::path::Path, api_key: &str) -> String {
    let url = format!("{endpoint}/identity/token");
    let ca = ca.to_owned();
    let form =
        format!("grant_type=urn%3Aibm%3Aparams%3Aoauth%3Agrant-type%3Aapikey&apikey={api_key}");
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Runtime::new().unwrap();
        runtime.block_on(async {
            let response = api_http_with(&ca)
                .post(url)
                .header("content-type", "application/x-www-form-urlencoded")
                .body(form)
                .send()
                .await
                .unwrap();
            assert!(
                response.status().is_success(),
                "token endpoint: {}",
                response.status()
            );
            let body: serde_json::Value = response.json().await.unwrap();
            body["access_token"]
                .as_str()
                .expect("access_token")
                .to_owned()
        })
    })
    .join()
    .unwrap()
}

/// A `rotor dev` (or other) process, killed when dropped.
pub(crate) struct DevProcess(std::process::Child);

impl From<std::process::Child> for DevProcess {
    fn from(child: std::process::Child) -> Self {
        Self(child)
    }
}

impl Drop for DevProcess {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts `rotor dev ARGS --dir DIR/state --info-file DIR/dev.json` with `ROTOR_HOME` DIR/home
/// (which it enrolls its units in) and waits for its info file.
pub(crate) fn start_dev(
    dir: &std::path::Path,
    args: &[&str],
) -> (DevProcess, rotor_server::dev::DevInfo) {
    start_dev_with(dir, args, &[], std::process::Stdio::null())
}

/// [`start_dev`] with more environment (inherited by its units) and its standard error to
/// `stderr`.
pub(crate) fn start_dev_with(
    dir: &std::path::Path,
    args: &[&str],
    env: &[(&str, &str)],
    stderr: impl Into<std::process::Stdio>,
) -> (DevProcess, rotor_server::dev::DevInfo) {
    let info_file = dir.join("dev.json");
    // ROTOR_TEST_DEV_ARGS runs a suite on another deployment shape, e.g. "--postgres --replicas 2".
    let extra = std::env::var("ROTOR_TEST_DEV_ARGS").unwrap_or_default();
    let child = std::process::Command::new(env!("CARGO_BIN_EXE_rotor"))
        .arg("dev")
        .args(args)
        .args(extra.split_whitespace())
        .arg("--dir")
        .arg(dir.join("state"))
        .arg("--info-file")
        .arg(&info_file)
        .env("ROTOR_HOME", dir.join("home"))
        .envs(env.iter().copied())
        .stdout(std::process::Stdio::null())
        .stderr(stderr)
        .spawn()
        .expect("start rotor dev");
    let dev = DevProcess(child);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        if let Ok(text) = std::fs::read_to_string(&info_file)
            && let Ok(info) = serde_json::from_str(&text)
        {
            return (dev, info);
        }
        assert!(
            std::time::Instant::now() < deadline,
            "rotor dev did not start"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

/// The password of workstation files in tests.
pub(crate) const PASSWORD: &str = "integration test password";

/// The password `rotor dev` gives its own workstation's files.
pub(crate) const DEV_PASSWORD: &str = "rotor dev password, not for production";

/// A workstation directory used through the `rotor` binary against a dev instance.
pub(crate) struct Workstation {
    pub(crate) home: std::path::PathBuf,
    pub(crate) info: rotor_server::dev::DevInfo,
    pub(crate) password: &'static str,
}

impl Workstation {
    /// The workstation `rotor dev` initialized its instance with (admins 1, 2 and 3 with keys
    /// 1 and 2 selected, thresholds 2/2, key parts 1 to 3).
    pub(crate) fn of_dev(info: &rotor_server::dev::DevInfo) -> Self {
        Self {
            home: info.dir.join("workstation"),
            info: info.clone(),
            password: DEV_PASSWORD,
        }
    }

    /// Starts a command without waiting for it.
    pub(crate) fn spawn(&self, args: &[&str]) -> std::process::Child {
        std::process::Command::new(env!("CARGO_BIN_EXE_rotor"))
            .args(args)
            .env("ROTOR_HOME", &self.home)
            .env("ROTOR_ENDPOINT", &self.info.endpoint)
            .env("ROTOR_CA_CERT", &self.info.ca_cert)
            .env("ROTOR_API_KEY", &self.info.api_key)
            .env("ROTOR_PASSWORD", self.password)
            .env(
                "ROTOR_ENROLLMENT_SECRET",
                self.info.enrollment_secrets().as_str(),
            )
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("start rotor")
    }

    pub(crate) fn run(&self, args: &[&str]) -> std::process::Output {
        std::process::Command::new(env!("CARGO_BIN_EXE_rotor"))
            .args(args)
            .env("ROTOR_HOME", &self.home)
            .env("ROTOR_ENDPOINT", &self.info.endpoint)
            .env("ROTOR_CA_CERT", &self.info.ca_cert)
            .env("ROTOR_API_KEY", &self.info.api_key)
            .env("ROTOR_PASSWORD", self.password)
            .env(
                "ROTOR_ENROLLMENT_SECRET",
                self.info.enrollment_secrets().as_str(),
            )
            .stdin(std::process::Stdio::null())
            .output()
            .expect("run rotor")
    }

    /// Runs a command that must succeed; returns its standard output.
    pub(crate) fn ok(&self, args: &[&str]) -> String {
        let output = self.run(args);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(output.status.success(), "rotor {args:?} failed: {stderr}");
        String::from_utf8_lossy(&output.stdout).into_owned()
    }

    /// Runs a command that must fail with `code` and say `message`.
    pub(crate) fn fails(&self, args: &[&str], code: i32, message: &str) {
        let output = self.run(args);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(code), "rotor {args:?}: {stderr}");
        assert!(
            stderr.contains(message),
            "rotor {args:?}: expected '{message}' in: {stderr}"
        );
        assert!(!stderr.contains("panicked"), "{stderr}");
    }

    /// Runs a command with `--json` and parses its output.
    pub(crate) fn json(&self, args: &[&str]) -> serde_json::Value {
        let mut full = args.to_vec();
        full.push("--json");
        serde_json::from_str(&self.ok(&full)).expect("json output")
    }
}

/// A Key Protect request to the dev instance with `token`; the status and the JSON body (or
/// null).
pub(crate) async fn kp_call(
    info: &rotor_server::dev::DevInfo,
    token: &str,
    method: reqwest::Method,
    path: &str,
    body: serde_json::Value,
) -> (u16, serde_json::Value) {
    let response = api_http(info)
        .request(method, format!("{}{path}", info.endpoint))
        .bearer_auth(token)
        .header("bluemix-instance", info.instance.to_string())
        .json(&body)
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    let text = response.text().await.unwrap();
    (
        status,
        serde_json::from_str(&text).unwrap_or(serde_json::Value::Null),
    )
}

/// An HTTPS client of the API that trusts the CA in `ca`.
pub(crate) fn api_http_with(ca: &std::path::Path) -> reqwest::Client {
    rotor_tls::config::http_client(&rotor_tls::ClientTls::trusting(ca))
        .unwrap()
        .build()
        .unwrap()
}

/// An HTTPS client of the dev instance's API (trusting its CA).
pub(crate) fn api_http(info: &rotor_server::dev::DevInfo) -> reqwest::Client {
    api_http_with(&info.ca_cert)
}

/// A client of the dev instance's units, as its service: mutual TLS with the service's
/// certificate.
pub(crate) fn unit_http(info: &rotor_server::dev::DevInfo) -> reqwest::Client {
    let pki = info.dir.join("pki");
    service_http(&pki, &pki.join("service"))
}

/// A mutual-TLS client presenting `PREFIX.pem`/`PREFIX.key`, trusting the CA in `pki`.
pub(crate) fn service_http(pki: &std::path::Path, prefix: &std::path::Path) -> reqwest::Client {
    rotor_tls::config::http_client(&rotor_tls::ClientTls {
        ca: pki.join("ca.pem"),
        crl: Some(pki.join("crl.pem")),
        identity: Some((prefix.with_extension("pem"), prefix.with_extension("key"))),
        expected: rotor_tls::ExpectedPeer::Any,
    })
    .unwrap()
    .timeout(std::time::Duration::from_secs(30))
    .build()
    .unwrap()
}

/// A deployment CA for tests that start unit processes themselves.
pub(crate) struct TestPki {
    pub(crate) dir: std::path::PathBuf,
    pub(crate) instance: uuid::Uuid,
}

impl TestPki {
    /// A new CA in `dir` for a new instance, with the service's client certificate issued.
    pub(crate) fn new(dir: &std::path::Path) -> Self {
        let instance = uuid::Uuid::new_v4();
        let mut ca = rotor_tls::pki::Authority::create(dir, "test").unwrap();
        let subject = rotor_tls::pki::Subject {
            role: rotor_tls::Role::Service { instance },
            dns_names: vec![],
            ip_addresses: vec![],
        };
        ca.issue(&subject, 30)
            .unwrap()
            .write(&dir.join("service"))
            .unwrap();
        Self {
            dir: dir.to_owned(),
            instance,
        }
    }

    /// The CA in `dir`, created with a new instance if there is none.
    pub(crate) fn open_or_create(dir: &std::path::Path) -> Self {
        let instance_file = dir.join("instance");
        if let Ok(text) = std::fs::read_to_string(&instance_file) {
            return Self {
                dir: dir.to_owned(),
                instance: text.trim().parse().unwrap(),
            };
        }
        let pki = Self::new(dir);
        std::fs::write(&instance_file, pki.instance.to_string()).unwrap();
        pki
    }

    /// The `rotor unit serve` arguments of a unit of the instance named `name` (its certificate
    /// issued on first use).
    pub(crate) fn unit_args(&self, name: &str) -> Vec<std::ffi::OsString> {
        let prefix = self.dir.join(format!("unit-{name}"));
        if !prefix.with_extension("pem").exists() {
            let mut ca = rotor_tls::pki::Authority::open(&self.dir).unwrap();
            let subject = rotor_tls::pki::Subject {
                role: rotor_tls::Role::Unit {
                    instance: self.instance,
                    unit: None,
                },
                dns_names: vec!["localhost".into()],
                ip_addresses: vec![std::net::Ipv4Addr::LOCALHOST.into()],
            };
            ca.issue(&subject, 30).unwrap().write(&prefix).unwrap();
        }
        [
            "--tls-cert".into(),
            prefix.with_extension("pem").into_os_string(),
            "--tls-key".into(),
            prefix.with_extension("key").into_os_string(),
            "--client-ca".into(),
            self.dir.join("ca.pem").into_os_string(),
            "--crl".into(),
            self.dir.join("crl.pem").into_os_string(),
        ]
        .into()
    }

    /// A client of the instance's units, as its service.
    pub(crate) fn service_http(&self) -> reqwest::Client {
        service_http(&self.dir, &self.dir.join("service"))
    }
}

/// The TLS arguments `rotor dev` started the unit in `unit_dir` with, to restart it by hand.
pub(crate) fn dev_unit_tls_args(
    info: &rotor_server::dev::DevInfo,
    unit_dir: &std::path::Path,
) -> Vec<std::ffi::OsString> {
    let pki = info.dir.join("pki");
    let name = unit_dir.file_name().unwrap().to_string_lossy();
    let prefix = pki.join(format!("unit-{name}"));
    [
        "--tls-cert".into(),
        prefix.with_extension("pem").into_os_string(),
        "--tls-key".into(),
        prefix.with_extension("key").into_os_string(),
        "--client-ca".into(),
        pki.join("ca.pem").into_os_string(),
        "--crl".into(),
        pki.join("crl.pem").into_os_string(),
    ]
    .into()
}

/// A service configuration for the dev instance of `info`, on its certificates: `units`, one
/// API key (the dev identity `identity`, with `role`), its data in `data_dir`, listening on
/// `listen`.
pub(crate) fn service_config(
    info: &rotor_server::dev::DevInfo,
    data_dir: std::path::PathBuf,
    listen: std::net::SocketAddr,
    units: Vec<rotor_server::config::UnitConfig>,
    identity: &str,
    role: rotor_server::iam::Role,
) -> rotor_server::Config {
    let pki = info.dir.join("pki");
    rotor_server::Config {
        listen,
        grep11_listen: None,
        data_dir,
        iam: rotor_server::iam::IamConfig {
            api_keys: vec![rotor_server::iam::ApiKeyConfig {
                name: identity.to_owned(),
                key_sha256: hex::encode(rotor_crypto::sha256(info.api_keys[identity].as_bytes())),
                role,
                instances: vec![info.instance.to_string()],
            }],
            token_ttl_seconds: 3600,
        },
        tls: Some(rotor_server::config::ApiTls {
            cert: pki.join("api.pem"),
            key: pki.join("api.key"),
        }),
        insecure_plain_http: false,
        units_tls: Some(rotor_server::config::UnitsTls {
            ca: pki.join("ca.pem"),
            crl: Some(pki.join("crl.pem")),
        }),
        units_token_file: None,
        purge_after_seconds: 0,
        instances: vec![rotor_server::config::InstanceConfig {
            id: info.instance,
            name: "test".to_owned(),
            units,
            client_cert: Some(pki.join("service.pem")),
            client_key: Some(pki.join("service.key")),
        }],
        trusted_proxies: Vec::new(),
        replica_name: None,
        store: None,
    }
}

/// The data directory of the throwaway PostgreSQL cluster of a `rotor dev --postgres`.
pub(crate) fn postgres_data_dir(info: &rotor_server::dev::DevInfo) -> std::path::PathBuf {
    info.dir.join("postgres").join("data")
}

/// Runs the system's `pg_ctl ARGS -D DATA` (as the `postgres` user when root, as the cluster
/// runs) and asserts it succeeds.
pub(crate) fn pg_ctl(data: &std::path::Path, args: &[&str]) {
    let bin = std::env::var_os("ROTOR_PG_BIN")
        .map(std::path::PathBuf::from)
        .or_else(|| {
            let mut versions: Vec<_> = std::fs::read_dir("/usr/lib/postgresql")
                .ok()?
                .flatten()
                .map(|entry| entry.path().join("bin"))
                .filter(|bin| bin.join("pg_ctl").is_file())
                .collect();
            versions.sort();
            versions.pop()
        })
        .expect("PostgreSQL binaries");
    // The cluster runs as the postgres user when this process is root (/proc/self is ours).
    let root = std::fs::metadata("/proc/self")
        .map(|meta| std::os::unix::fs::MetadataExt::uid(&meta) == 0)
        .unwrap_or(false);
    let mut command = if root {
        let mut command = std::process::Command::new("runuser");
        command
            .args(["-u", "postgres", "--"])
            .arg(bin.join("pg_ctl"));
        command
    } else {
        std::process::Command::new(bin.join("pg_ctl"))
    };
    // The server it starts keeps no pipe of ours open (its log goes to `-l`).
    let output = command
        .args(args)
        .arg("-D")
        .arg(data)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .output()
        .expect("run pg_ctl");
    assert!(
        output.status.success(),
        "pg_ctl {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

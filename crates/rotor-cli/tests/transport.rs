//! Trust between the pieces, on the wire: every link is TLS, the units answer only the service
//! certificate of their own instance, a revoked certificate is refused, and a proxy on a link
//! sees no secret and cannot alter a call without making it fail.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use rotor_server::dev::DevInfo;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};

/// Which way a byte travels through the proxy.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Direction {
    /// From the client to the server.
    Up,
    /// From the server to the client.
    Down,
}

/// A TCP proxy that records everything it forwards and, while armed, flips the byte at
/// `offset` (or the last one, in a shorter read) of every read in one direction.
#[derive(Clone)]
struct Proxy {
    address: SocketAddr,
    recorded: Arc<Mutex<Vec<u8>>>,
    tamper: Arc<Mutex<Option<(Direction, usize)>>>,
}

impl Proxy {
    async fn start(target: SocketAddr) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let proxy = Self {
            address: listener.local_addr().unwrap(),
            recorded: Arc::default(),
            tamper: Arc::default(),
        };
        let shared = proxy.clone();
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let Ok(server) = TcpStream::connect(target).await else {
                    continue;
                };
                let (client_read, client_write) = client.into_split();
                let (server_read, server_write) = server.into_split();
                tokio::spawn(
                    shared
                        .clone()
                        .pump(client_read, server_write, Direction::Up),
                );
                tokio::spawn(
                    shared
                        .clone()
                        .pump(server_read, client_write, Direction::Down),
                );
            }
        });
        proxy
    }

    async fn pump(
        self,
        mut from: tokio::net::tcp::OwnedReadHalf,
        mut to: tokio::net::tcp::OwnedWriteHalf,
        direction: Direction,
    ) {
        let mut buffer = vec![0u8; 16 * 1024];
        loop {
            let read = match from.read(&mut buffer).await {
                Ok(0) | Err(_) => break,
                Ok(read) => read,
            };
            let chunk = &mut buffer[..read];
            self.recorded.lock().unwrap().extend_from_slice(chunk);
            if let Some((armed, offset)) = *self.tamper.lock().unwrap()
                && armed == direction
            {
                chunk[offset.min(read - 1)] ^= 0x01;
            }
            if to.write_all(chunk).await.is_err() {
                break;
            }
        }
        let _ = to.shutdown().await;
    }

    fn arm(&self, tamper: Option<(Direction, usize)>) {
        *self.tamper.lock().unwrap() = tamper;
    }

    fn recording(&self) -> Vec<u8> {
        self.recorded.lock().unwrap().clone()
    }
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack
        .windows(needle.len())
        .any(|window| window == needle)
}

/// A client of the API at `endpoint` that opens a new connection for every request, so an
/// alteration cannot hide behind a connection opened before it.
fn fresh_client(info: &DevInfo) -> reqwest::Client {
    rotor_tls::config::http_client(&rotor_tls::ClientTls::trusting(&info.ca_cert))
        .unwrap()
        .pool_max_idle_per_host(0)
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap()
}

async fn kp(
    http: &reqwest::Client,
    endpoint: &str,
    instance: uuid::Uuid,
    token: &str,
    path: &str,
    body: Value,
) -> Result<(u16, Value), reqwest::Error> {
    let response = http
        .post(format!("{endpoint}{path}"))
        .bearer_auth(token)
        .header("bluemix-instance", instance.to_string())
        .json(&body)
        .send()
        .await?;
    let status = response.status().as_u16();
    let text = response.text().await?;
    Ok((status, serde_json::from_str(&text).unwrap_or(Value::Null)))
}

async fn create_key(http: &reqwest::Client, endpoint: &str, info: &DevInfo, token: &str) -> String {
    let body = json!({
        "metadata": {"collectionType": "application/vnd.ibm.kms.key+json", "collectionTotal": 1},
        "resources": [{"type": "application/vnd.ibm.kms.key+json", "name": "transport", "extractable": false}],
    });
    let (status, answer) = kp(http, endpoint, info.instance, token, "/api/v2/keys", body)
        .await
        .unwrap();
    assert_eq!(status, 201, "{answer}");
    answer["resources"][0]["id"].as_str().unwrap().to_owned()
}

async fn wrap(
    http: &reqwest::Client,
    endpoint: &str,
    info: &DevInfo,
    token: &str,
    key: &str,
    dek: &[u8],
) -> String {
    let (status, answer) = kp(
        http,
        endpoint,
        info.instance,
        token,
        &format!("/api/v2/keys/{key}/actions/wrap"),
        json!({"plaintext": B64.encode(dek)}),
    )
    .await
    .unwrap();
    assert_eq!(status, 200, "{answer}");
    answer["ciphertext"].as_str().unwrap().to_owned()
}

/// Unwraps `ciphertext`: the DEK, or why not.
async fn unwrap(
    http: &reqwest::Client,
    endpoint: &str,
    info: &DevInfo,
    token: &str,
    key: &str,
    ciphertext: &str,
) -> Result<Vec<u8>, String> {
    match kp(
        http,
        endpoint,
        info.instance,
        token,
        &format!("/api/v2/keys/{key}/actions/unwrap"),
        json!({"ciphertext": ciphertext}),
    )
    .await
    {
        Ok((200, answer)) => Ok(B64.decode(answer["plaintext"].as_str().unwrap()).unwrap()),
        Ok((status, answer)) => Err(format!("{status}: {answer}")),
        Err(err) => Err(format!("{err:?}")),
    }
}

/// Alterations tried on each link: a byte near the start of every read, and one further in.
/// Both lie past the 5-byte header of a record that starts the read: in TLS 1.3 its type and
/// version bytes carry nothing (RFC 8446 §5.1: the version "MUST be ignored", and every protected
/// record is processed by its inner type), so altering them changes nothing that is delivered.
const ALTERATIONS: [(Direction, usize); 4] = [
    (Direction::Up, 8),
    (Direction::Up, 40),
    (Direction::Down, 8),
    (Direction::Down, 40),
];

/// Wraps and unwraps a DEK through the API at `endpoint`, with `proxy` on the link under test:
/// the proxy's recording holds none of the secrets, every alteration in [`ALTERATIONS`] makes
/// the unwrap fail, and unaltered it works again.
async fn through_the_proxy(proxy: &Proxy, endpoint: &str, info: &DevInfo, dek_mask: u8) {
    let api_key = info.api_keys["writer"].clone();
    let token = {
        let (endpoint, ca, api_key) = (endpoint.to_owned(), info.ca_cert.clone(), api_key.clone());
        tokio::task::spawn_blocking(move || support::access_token_at(&endpoint, &ca, &api_key))
            .await
            .unwrap()
    };
    let http = fresh_client(info);
    let key = create_key(&http, endpoint, info, &token).await;
    let dek: Vec<u8> = (0..32u8).map(|i| i.wrapping_mul(37) ^ dek_mask).collect();
    let ciphertext = wrap(&http, endpoint, info, &token, &key, &dek).await;
    assert_eq!(
        unwrap(&http, endpoint, info, &token, &key, &ciphertext).await,
        Ok(dek.clone())
    );

    let recording = proxy.recording();
    assert!(recording.len() > 1000, "the proxy saw the calls");
    for (what, secret) in [
        ("the API key", api_key.as_bytes().to_vec()),
        ("the token", token.as_bytes().to_vec()),
        ("the DEK", dek.clone()),
        ("the DEK in base64", B64.encode(&dek).into_bytes()),
    ] {
        assert!(
            !contains(&recording, &secret),
            "{what} crossed the proxy in clear"
        );
    }

    for alteration in ALTERATIONS {
        proxy.arm(Some(alteration));
        let altered = unwrap(&http, endpoint, info, &token, &key, &ciphertext).await;
        proxy.arm(None);
        assert!(
            altered.is_err(),
            "{alteration:?}: an altered call succeeded: {altered:?}"
        );
    }
    // Unaltered again, the same call works.
    assert_eq!(
        unwrap(&http, endpoint, info, &token, &key, &ciphertext).await,
        Ok(dek)
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_proxy_between_client_and_api_sees_no_secret_and_cannot_alter_a_call() {
    let dir = tempfile::tempdir().unwrap();
    let (_dev, info) = tokio::task::block_in_place(|| {
        support::start_dev(dir.path(), &["--units", "1", "--recovery-units", "0"])
    });
    let api: SocketAddr = info
        .endpoint
        .trim_start_matches("https://")
        .parse()
        .unwrap();
    let proxy = Proxy::start(api).await;
    let endpoint = format!("https://{}", proxy.address);
    through_the_proxy(&proxy, &endpoint, &info, 0xa5).await;
}

/// A `rotor server` for the dev instance, with its one unit reached at `unit_address` (a
/// proxy), on the dev instance's certificates.
fn server_config(info: &DevInfo, dir: &Path, unit_address: SocketAddr) -> std::path::PathBuf {
    let mut units = info.units.clone();
    units.truncate(1);
    units[0].address = unit_address;
    let config = support::service_config(
        info,
        dir.join("service"),
        "127.0.0.1:0".parse().unwrap(),
        units,
        "writer",
        rotor_server::iam::Role::Writer,
    );
    let path = dir.join("server.toml");
    std::fs::write(&path, config.to_toml()).unwrap();
    path
}

/// Starts `rotor server` on a free port; its endpoint.
fn start_server(config: &Path, log: &Path) -> (support::DevProcess, String) {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let text = std::fs::read_to_string(config)
        .unwrap()
        .replace("127.0.0.1:0", &format!("127.0.0.1:{port}"));
    std::fs::write(config, text).unwrap();
    let child = std::process::Command::new(env!("CARGO_BIN_EXE_rotor"))
        .args(["server", "--config"])
        .arg(config)
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(log).unwrap())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "rotor server did not start");
        std::thread::sleep(Duration::from_millis(20));
    }
    (child.into(), format!("https://127.0.0.1:{port}"))
}

#[tokio::test(flavor = "multi_thread")]
async fn a_proxy_between_service_and_unit_sees_no_secret_and_cannot_alter_a_call() {
    let dir = tempfile::tempdir().unwrap();
    let (_dev, info) = tokio::task::block_in_place(|| {
        support::start_dev(dir.path(), &["--units", "1", "--recovery-units", "0"])
    });
    let proxy = Proxy::start(info.units[0].address).await;
    let config = server_config(&info, dir.path(), proxy.address);
    let (_server, endpoint) = start_server(&config, &dir.path().join("server.log"));
    through_the_proxy(&proxy, &endpoint, &info, 0x3c).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn units_answer_only_their_own_instance_and_refuse_revoked_certificates() {
    let dir = tempfile::tempdir().unwrap();
    let (_dev, info) = tokio::task::block_in_place(|| {
        support::start_dev(dir.path(), &["--units", "1", "--recovery-units", "0"])
    });
    let pki = info.dir.join("pki");
    let status_url = format!("https://{}/v1/status?challenge=00", info.units[0].address);

    // The dev service's own certificate: answered.
    let own = support::service_http(&pki, &pki.join("service"));
    assert_eq!(own.get(&status_url).send().await.unwrap().status(), 200);

    // The service certificate of another instance, from the same CA: refused by the unit.
    let other_instance = uuid::Uuid::new_v4();
    let mut ca = rotor_tls::pki::Authority::open(&pki).unwrap();
    let subject = |role| rotor_tls::pki::Subject {
        role,
        dns_names: vec![],
        ip_addresses: vec![],
    };
    ca.issue(
        &subject(rotor_tls::Role::Service {
            instance: other_instance,
        }),
        1,
    )
    .unwrap()
    .write(&dir.path().join("other"))
    .unwrap();
    let other = support::service_http(&pki, &dir.path().join("other"));
    let refused = other.get(&status_url).send().await.unwrap();
    assert_eq!(refused.status(), 401);
    let body: Value = refused.json().await.unwrap();
    assert_eq!(body["code"], "unauthorized", "{body}");
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains(&other_instance.to_string()),
        "{body}"
    );
    // Nor does a key operation go through with it.
    let wrap_url = format!("https://{}/v1/keys/wrap", info.units[0].address);
    let refused = other.post(&wrap_url).json(&json!({})).send().await.unwrap();
    assert_eq!(refused.status(), 401);

    // Without a client certificate the handshake itself fails.
    let anonymous = support::api_http_with(&pki.join("ca.pem"));
    assert!(anonymous.get(&status_url).send().await.is_err());

    // A certificate from another CA: the handshake fails.
    let stranger_dir = dir.path().join("stranger");
    let mut stranger = rotor_tls::pki::Authority::create(&stranger_dir, "stranger").unwrap();
    stranger
        .issue(
            &subject(rotor_tls::Role::Service {
                instance: info.instance,
            }),
            1,
        )
        .unwrap()
        .write(&stranger_dir.join("service"))
        .unwrap();
    let forged = rotor_tls::config::http_client(&rotor_tls::ClientTls {
        ca: pki.join("ca.pem"),
        crl: None,
        identity: Some((
            stranger_dir.join("service.pem"),
            stranger_dir.join("service.key"),
        )),
        expected: rotor_tls::ExpectedPeer::Any,
    })
    .unwrap()
    .build()
    .unwrap();
    assert!(forged.get(&status_url).send().await.is_err());

    // Revoked: a second certificate for this instance works until it is revoked; the unit
    // re-reads the revocation list and refuses the next connection.
    ca.issue(
        &subject(rotor_tls::Role::Service {
            instance: info.instance,
        }),
        1,
    )
    .unwrap()
    .write(&dir.path().join("second"))
    .unwrap();
    let second = || support::service_http(&pki, &dir.path().join("second"));
    assert_eq!(
        second().get(&status_url).send().await.unwrap().status(),
        200
    );
    let serial = rotor_tls::pki::serial_of_pem_file(&dir.path().join("second.pem")).unwrap();
    // The CRL's modification time must move for the unit to notice it.
    std::thread::sleep(Duration::from_millis(20));
    ca.revoke(&serial).unwrap();
    assert!(second().get(&status_url).send().await.is_err());
    // The service's own certificate is untouched by it.
    let own = support::service_http(&pki, &pki.join("service"));
    assert_eq!(own.get(&status_url).send().await.unwrap().status(), 200);
}

fn rotor_pki(args: &[&str]) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_rotor"))
        .arg("pki")
        .args(args)
        .output()
        .unwrap()
}

fn rotor_pki_json(args: &[&str]) -> Value {
    let mut full = args.to_vec();
    full.push("--json");
    let output = rotor_pki(&full);
    assert!(
        output.status.success(),
        "rotor pki {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).unwrap()
}

#[test]
fn rotor_pki_issues_renews_and_revokes() {
    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("ca");
    let ca = ca.to_str().unwrap();
    let out = |name: &str| dir.path().join(name).to_str().unwrap().to_owned();
    rotor_pki_json(&["init", "--dir", ca, "--name", "test"]);
    // A second init over the same directory is refused and changes nothing.
    assert!(!rotor_pki(&["init", "--dir", ca]).status.success());

    let instance = uuid::Uuid::new_v4().to_string();
    let unit = rotor_pki_json(&[
        "issue",
        "--dir",
        ca,
        "unit",
        "--instance",
        &instance,
        "--ip",
        "10.0.1.7",
        "--dns",
        "unit1.example",
        "--out",
        &out("unit1"),
    ]);
    assert_eq!(unit["role"]["role"], "unit");
    let service = rotor_pki_json(&[
        "issue",
        "--dir",
        ca,
        "service",
        "--instance",
        &instance,
        "--out",
        &out("service"),
    ]);
    // The certificates state their roles.
    let der = rotor_tls::pem::load_certs(&dir.path().join("unit1.pem"))
        .unwrap()
        .remove(0);
    assert_eq!(
        rotor_tls::Role::of_certificate(&der).unwrap(),
        rotor_tls::Role::Unit {
            instance: instance.parse().unwrap(),
            unit: None
        }
    );
    // A service certificate takes no addresses; an api one no instance.
    assert!(
        !rotor_pki(&[
            "issue",
            "--dir",
            ca,
            "service",
            "--instance",
            &instance,
            "--ip",
            "10.0.0.1",
            "--out",
            &out("bad"),
        ])
        .status
        .success()
    );
    assert!(
        !rotor_pki(&[
            "issue",
            "--dir",
            ca,
            "api",
            "--instance",
            &instance,
            "--ip",
            "10.0.0.1",
            "--out",
            &out("bad"),
        ])
        .status
        .success()
    );

    // Renewing the service certificate in place, revoking the old one.
    let renewed = rotor_pki_json(&["renew", "--dir", ca, &out("service.pem"), "--revoke-old"]);
    assert_ne!(renewed["serial"], service["serial"]);
    assert_eq!(renewed["revoked"], service["serial"]);
    let listed = rotor_pki_json(&["list", "--dir", ca]);
    let certificates = listed["certificates"].as_array().unwrap();
    assert_eq!(certificates.len(), 3);
    let revoked: Vec<&Value> = certificates
        .iter()
        .filter(|c| c.get("revoked_at").is_some())
        .collect();
    assert_eq!(revoked.len(), 1);
    assert_eq!(revoked[0]["serial"], service["serial"]);
    // The CRL lists it.
    let crl = rotor_tls::pem::load_crls(&dir.path().join("ca").join("crl.pem")).unwrap();
    assert_eq!(crl.len(), 1);

    // Revoking by serial number works too; an unknown serial is refused.
    let unit_serial = unit["serial"].as_str().unwrap();
    rotor_pki_json(&["revoke", "--dir", ca, unit_serial]);
    assert!(
        !rotor_pki(&["revoke", "--dir", ca, "abcdef"])
            .status
            .success()
    );
}

#[test]
fn a_configuration_from_before_tls_is_refused_and_converted_by_one_command() {
    let dir = tempfile::tempdir().unwrap();
    let (instance, unit) = (uuid::Uuid::new_v4(), uuid::Uuid::new_v4());
    let old = dir.path().join("old.toml");
    std::fs::write(
        &old,
        format!(
            r#"listen = "127.0.0.1:8443"
data_dir = "{data}"
units_token_file = "{data}/units.token"

[[iam.api_keys]]
name = "ops"
key_sha256 = "{hash}"
role = "Manager"

[[instances]]
id = "{instance}"
name = "payments"

[[instances.units]]
id = "{unit}"
kind = "operational"
address = "127.0.0.1:9001"
"#,
            data = dir.path().join("data").display(),
            hash = "ab".repeat(32),
        ),
    )
    .unwrap();
    // As it is, the service refuses it and says what to do: first about the key without
    // instances, and once that is fixed by hand, about the token.
    let refusal = |config: &Path| {
        let refused = std::process::Command::new(env!("CARGO_BIN_EXE_rotor"))
            .args(["server", "--config"])
            .arg(config)
            .output()
            .unwrap();
        assert!(!refused.status.success());
        String::from_utf8_lossy(&refused.stderr).into_owned()
    };
    let stderr = refusal(&old);
    assert!(
        stderr.contains("API key 'ops' names no instances"),
        "{stderr}"
    );
    let with_instances = dir.path().join("with-instances.toml");
    std::fs::write(
        &with_instances,
        std::fs::read_to_string(&old).unwrap().replace(
            "role = \"Manager\"",
            "role = \"Manager\"\ninstances = [\"*\"]",
        ),
    )
    .unwrap();
    let stderr = refusal(&with_instances);
    assert!(
        stderr.contains("units_token_file is no longer used"),
        "{stderr}"
    );

    let new = dir.path().join("new.toml");
    let converted = rotor_pki_json(&[
        "upgrade-config",
        "--dir",
        dir.path().join("ca").to_str().unwrap(),
        "--config",
        old.to_str().unwrap(),
        "--out",
        new.to_str().unwrap(),
        "--tls-dir",
        dir.path().join("tls").to_str().unwrap(),
        "--dns",
        "rotor.example",
    ]);
    assert_eq!(converted["units"].as_array().unwrap().len(), 1);
    let config = rotor_server::Config::load(&new).unwrap();
    assert_eq!(config.units_token_file, None);
    // The key that named no instances keeps covering all of them, now said explicitly.
    assert_eq!(config.iam.api_keys[0].instances, vec!["*".to_owned()]);
    let role = |path: &Path| {
        let der = rotor_tls::pem::load_certs(path).unwrap().remove(0);
        rotor_tls::Role::of_certificate(&der).unwrap()
    };
    assert_eq!(
        role(&config.tls.as_ref().unwrap().cert),
        rotor_tls::Role::Api
    );
    assert_eq!(
        role(config.instances[0].client_cert.as_ref().unwrap()),
        rotor_tls::Role::Service { instance }
    );
    assert_eq!(
        role(&dir.path().join("tls").join(format!("unit-{unit}.pem"))),
        rotor_tls::Role::Unit {
            instance,
            unit: Some(unit)
        }
    );
    // The old file is left as it was, and a second run does not overwrite the new one.
    assert!(
        std::fs::read_to_string(&old)
            .unwrap()
            .contains("units_token_file")
    );
    assert!(
        !rotor_pki(&[
            "upgrade-config",
            "--dir",
            dir.path().join("ca").to_str().unwrap(),
            "--config",
            old.to_str().unwrap(),
            "--out",
            new.to_str().unwrap(),
            "--tls-dir",
            dir.path().join("tls").to_str().unwrap(),
        ])
        .status
        .success()
    );
}

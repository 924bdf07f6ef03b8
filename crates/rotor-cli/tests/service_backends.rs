//! The service suite, run twice: against units in this process (the in-process backend, which
//! calls the units' key operations directly) and against unit processes over loopback HTTP.
//! Both runs drive the real service over real HTTP with the Key Protect wire, so the unit pool's
//! failover policy and the rotation engine are tested the same way on either backend.

#![allow(clippy::unwrap_used, clippy::panic)]

mod support;

use std::collections::HashMap;
use std::path::Path;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use rotor_crypto::{Secret32, SigAlg, SigningKey, Vp};
use rotor_server::config::{Config, InstanceConfig, UnitConfig};
use rotor_server::dev::{DevOptions, DevUnits, start_units};
use rotor_server::iam::{ApiKeyConfig, IamConfig, Role, new_api_key};
use rotor_server::pool::{PoolUnit, UnitPool};
use rotor_server::rotation::{Phase, RotationView};
use rotor_store::{BlobReplacement, KeyStore as _};
use rotor_unit::backend::UnitLink;
use rotor_unit::client::UnitClient;
use rotor_unit::daemon::{ServeInfo, Unit};
use rotor_unit::keyapi::ForgetKey;
use rotor_unit::keys::Binding;
use rotor_unit::machine::envelope_context;
use rotor_unit::seal::SealSource;
use rotor_unit::store::UnitStore;
use rotor_unit::wire::{
    Action, Command, CurrentState, EnrollmentSecret, Outcome, Register, SignedCommand,
    TRANSFER_CONTEXT, UnitKind, UnitStatus,
};
use serde_json::{Value, json};
use uuid::Uuid;

/// How the test reaches a unit for admin commands: directly, or over its HTTP port.
enum Admin {
    InProcess(Unit, EnrollmentSecret),
    Http(UnitClient, rotor_crypto::PublicKey, EnrollmentSecret),
}

impl Admin {
    async fn status(&self) -> UnitStatus {
        match self {
            Self::InProcess(unit, _) => unit.status().await,
            Self::Http(client, identity, _) => client.status(Some(identity)).await.unwrap(),
        }
    }

    async fn run(&self, admin: &SigningKey, action: Action) -> (Outcome, UnitStatus) {
        let status = self.status().await;
        // The first admin comes in unsigned, with the unit's enrollment secret.
        let first = status.admins.is_empty();
        let signers: &[&SigningKey] = if first { &[] } else { &[admin] };
        let command = Command {
            unit: status.unit,
            counter: status.counter + 1,
            action,
        };
        let (Self::InProcess(_, secret) | Self::Http(_, _, secret)) = self;
        let proof = first.then(|| command.enrollment_proof(secret));
        let mut signed: SignedCommand = command.sign(signers);
        signed.enrollment = proof;
        match self {
            Self::InProcess(unit, _) => unit.apply(&signed).await.unwrap(),
            Self::Http(client, identity, _) => client.command(identity, signed).await.unwrap(),
        }
    }
}

/// A service with one instance, its units and a Writer API key.
struct Deployment {
    endpoint: String,
    /// The CA the service's HTTPS certificate chains to.
    ca_cert: std::path::PathBuf,
    instance: Uuid,
    api_key: String,
    admin: SigningKey,
    /// Operational units, the first of them without a master key (so every key operation
    /// starting there must fail over).
    units: Vec<Admin>,
    _processes: Option<DevUnits>,
    /// Holds the units' and the service's data, the keystore among them.
    dir: tempfile::TempDir,
}

#[derive(Clone, Copy, Debug)]
enum Backend {
    InProcess,
    Processes,
}

fn config(
    dir: &Path,
    instance: InstanceConfig,
    api_key: &str,
    api_cert: (std::path::PathBuf, std::path::PathBuf),
    units_tls: Option<rotor_server::config::UnitsTls>,
) -> Config {
    Config {
        listen: "127.0.0.1:0".parse().unwrap(),
        grep11_listen: None,
        data_dir: dir.join("service"),
        iam: IamConfig {
            api_keys: vec![ApiKeyConfig {
                name: "manager".to_owned(),
                key_sha256: hex::encode(rotor_crypto::sha256(api_key.as_bytes())),
                role: Role::Manager,
                instances: vec![instance.id.to_string()],
            }],
            token_ttl_seconds: 3600,
        },
        tls: Some(rotor_server::config::ApiTls {
            cert: api_cert.0,
            key: api_cert.1,
        }),
        insecure_plain_http: false,
        units_tls,
        units_token_file: None,
        purge_after_seconds: 0,
        instances: vec![instance],
        trusted_proxies: Vec::new(),
        replica_name: None,
        store: None,
    }
}

/// Three operational units; the admin initializes units 2 and 3 with one master key (a
/// recovery-style generation on unit 2, exported to unit 3) and leaves unit 1 without one.
async fn deploy(backend: Backend) -> Deployment {
    let dir = tempfile::tempdir().unwrap();
    let (api_key, _) = new_api_key();
    let admin = SigningKey::generate(SigAlg::P256Sha256);
    let instance_id = Uuid::new_v4();
    let (units, pool, config, processes) = match backend {
        Backend::InProcess => {
            let mut admins = Vec::new();
            let mut pool_units = Vec::new();
            let mut configs = Vec::new();
            for index in 0..3 {
                // Recovery kind lets the test generate and export a master key without parts.
                let unit_dir = dir.path().join(format!("unit-{index}"));
                let (store, identity, state) =
                    UnitStore::open(&unit_dir, UnitKind::Recovery, &SealSource::File).unwrap();
                let secret = state.enrollment_secret().unwrap();
                let audit = rotor_unit::audit::AuditLog::open(&unit_dir).unwrap();
                let unit = Unit::new(store, identity, state, audit);
                let id = unit.status().await.unit;
                pool_units.push(PoolUnit {
                    id,
                    operational: true,
                    link: UnitLink::InProcess(unit.clone()),
                });
                configs.push(UnitConfig {
                    id,
                    kind: UnitKind::Recovery,
                    address: "127.0.0.1:9".parse().unwrap(),
                    identity: None,
                });
                admins.push(Admin::InProcess(unit, secret));
            }
            let instance = InstanceConfig {
                id: instance_id,
                name: "in-process".to_owned(),
                units: configs,
                client_cert: None,
                client_key: None,
            };
            // In-process units need no TLS; the API is served over HTTPS all the same.
            let pki = dir.path().join("pki");
            let mut ca = rotor_tls::pki::Authority::create(&pki, "in-process").unwrap();
            let api = ca
                .issue(
                    &rotor_tls::pki::Subject {
                        role: rotor_tls::Role::Api,
                        dns_names: vec![],
                        ip_addresses: vec![std::net::Ipv4Addr::LOCALHOST.into()],
                    },
                    30,
                )
                .unwrap()
                .write(&pki.join("api"))
                .unwrap();
            let config = config(dir.path(), instance, &api_key, api, None);
            let pool = UnitPool::new(HashMap::from([(instance_id, pool_units)]));
            (admins, Some(pool), config, None)
        }
        Backend::Processes => {
            let units = start_units(&DevOptions {
                units: 0,
                recovery_units: 3,
                dir: Some(dir.path().join("units")),
                listen: "127.0.0.1:0".parse().unwrap(),
                unit_program: env!("CARGO_BIN_EXE_rotor").into(),
                purge_after_seconds: 0,
                postgres: false,
            })
            .unwrap();
            let http = support::service_http(
                units.tls.ca_cert.parent().unwrap(),
                &units.tls.service.0.with_extension(""),
            );
            let mut admins = Vec::new();
            for (index, unit) in units.instance.units.iter().enumerate() {
                let client = UnitClient::new(
                    http.clone(),
                    format!("https://{}/v1", unit.address),
                    unit.id,
                );
                let identity = client.status(None).await.unwrap().identity;
                let info = units
                    .dir()
                    .join("units")
                    .join(format!("recovery-{index}"))
                    .join("serve.json");
                let info: ServeInfo =
                    serde_json::from_slice(&std::fs::read(info).unwrap()).unwrap();
                let secret = EnrollmentSecret::from_hex(&info.enrollment_secret.unwrap()).unwrap();
                admins.push(Admin::Http(client, identity, secret));
            }
            let mut instance = units.instance.clone();
            // The service treats them as operational: they serve key operations.
            for unit in &mut instance.units {
                unit.kind = UnitKind::Operational;
            }
            let units_tls = rotor_server::config::UnitsTls {
                ca: units.tls.ca_cert.clone(),
                crl: Some(units.tls.crl.clone()),
            };
            let config = config(
                dir.path(),
                instance,
                &api_key,
                units.tls.api.clone(),
                Some(units_tls),
            );
            (admins, None, config, Some(units))
        }
    };
    let instance = config.instances[0].id;

    for unit in &units {
        unit.run(
            &admin,
            Action::AddAdmin {
                name: "alice".to_owned(),
                public_key: admin.public_key(),
            },
        )
        .await;
        unit.run(
            &admin,
            Action::SetThresholds {
                signature: 1,
                revocation: 1,
            },
        )
        .await;
    }
    unit_generate(&units[1], &admin).await;
    copy_register(&units[1], Register::Current, &units[2], &admin).await;

    let service = match pool {
        Some(pool) => rotor_server::Service::open_with_units(config, pool).unwrap(),
        None => rotor_server::Service::open(config).unwrap(),
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let endpoint = format!("https://{}", listener.local_addr().unwrap());
    let transport = rotor_server::api_transport(service.config()).unwrap();
    let _background = service.start_background();
    tokio::spawn(rotor_tls::serve::serve(
        listener,
        transport,
        service.router(),
        rotor_tls::serve::Limits::SERVICE,
    ));
    let ca_cert = dir.path().join(match backend {
        Backend::InProcess => "pki/ca.pem",
        Backend::Processes => "units/pki/ca.pem",
    });
    Deployment {
        endpoint,
        ca_cert,
        instance,
        api_key,
        admin,
        units,
        _processes: processes,
        dir,
    }
}

/// A random master key into the current register (or, once it is set, the new one, committed).
async fn unit_generate(unit: &Admin, admin: &SigningKey) -> Vp {
    let (outcome, _) = unit.run(admin, Action::GenerateRandom).await;
    let Outcome::Generated { register, vp } = outcome else {
        panic!("not generated: {outcome:?}");
    };
    if register == Register::New {
        unit.run(admin, Action::Commit { vp }).await;
    }
    vp
}

/// Copies `register` of `from` into `to`: into current when `to` has none, else into its new
/// register, committed.
async fn copy_register(from: &Admin, register: Register, to: &Admin, admin: &SigningKey) {
    let (outcome, status) = to.run(admin, Action::CreateImporter).await;
    let Outcome::Importer { public_key } = outcome else {
        panic!("no importer: {outcome:?}");
    };
    let (outcome, _) = from
        .run(
            admin,
            Action::Export {
                register,
                recipient_unit: status.unit,
                recipient_importer: public_key.clone(),
            },
        )
        .await;
    let Outcome::Exported { vp, key } = outcome else {
        panic!("not exported: {outcome:?}");
    };
    to.run(
        admin,
        Action::ImportNew {
            importer: public_key,
            key,
        },
    )
    .await;
    to.run(admin, Action::Commit { vp }).await;
    if to.status().await.current.state == CurrentState::Empty {
        to.run(admin, Action::SetImmediate { vp }).await;
    }
}

impl Deployment {
    async fn call(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> (u16, Value) {
        let mut request = support::api_http_with(&self.ca_cert)
            .request(method, format!("{}{path}", self.endpoint))
            .bearer_auth(support::access_token_at(
                &self.endpoint,
                &self.ca_cert,
                &self.api_key,
            ))
            .header("bluemix-instance", self.instance.to_string());
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.unwrap();
        let status = response.status().as_u16();
        let text = response.text().await.unwrap();
        (status, serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    async fn create_root_key(&self, name: &str) -> String {
        let body = json!({
            "metadata": {"collectionType": "application/vnd.ibm.kms.key+json", "collectionTotal": 1},
            "resources": [{"type": "application/vnd.ibm.kms.key+json", "name": name, "extractable": false}],
        });
        let (status, answer) = self
            .call(reqwest::Method::POST, "/api/v2/keys", Some(body))
            .await;
        assert_eq!(status, 201, "{answer}");
        answer["resources"][0]["id"].as_str().unwrap().to_owned()
    }

    async fn wrap(&self, key: &str, dek: &[u8], aad: &[&str]) -> String {
        let (status, answer) = self
            .call(
                reqwest::Method::POST,
                &format!("/api/v2/keys/{key}/actions/wrap"),
                Some(json!({"plaintext": B64.encode(dek), "aad": aad})),
            )
            .await;
        assert_eq!(status, 200, "{answer}");
        answer["ciphertext"].as_str().unwrap().to_owned()
    }

    async fn unwrap(&self, key: &str, ciphertext: &str, aad: &[&str]) -> (u16, Value) {
        self.call(
            reqwest::Method::POST,
            &format!("/api/v2/keys/{key}/actions/unwrap"),
            Some(json!({"ciphertext": ciphertext, "aad": aad})),
        )
        .await
    }

    /// Gives unit 0 the current master key, generates a new one on unit 1, copies it to the
    /// others, pins it everywhere and runs the reencryption to its end; answers (from, to).
    async fn reencrypt_to_a_new_master_key(&self) -> (Vp, Vp) {
        let units = &self.units;
        let admin = &self.admin;
        let from = units[1].status().await.current.vp;
        // The unit without a master key leaves the instance's rotation: give it the current key
        // first, so every unit can be pinned.
        copy_register(&units[1], Register::Current, &units[0], admin).await;
        let to = unit_generate(&units[1], admin).await;
        copy_register(&units[1], Register::New, &units[0], admin).await;
        copy_register(&units[1], Register::New, &units[2], admin).await;
        for unit in units {
            unit.run(admin, Action::PinNew { vp: to }).await;
        }
        let (status, answer) = self
            .call(
                reqwest::Method::POST,
                &format!("/v1/instances/{}/rotation", self.instance),
                Some(json!({"from_vp": from, "to_vp": to})),
            )
            .await;
        assert_eq!(status, 200, "{answer}");
        let mut phase = None;
        for _ in 0..400 {
            let (_, view) = self
                .call(
                    reqwest::Method::GET,
                    &format!("/v1/instances/{}/rotation", self.instance),
                    None,
                )
                .await;
            let view: Option<RotationView> =
                serde_json::from_value(view["rotation"].clone()).unwrap();
            phase = view.map(|view| view.journal.phase);
            if phase == Some(Phase::Reencrypted) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        assert_eq!(phase, Some(Phase::Reencrypted));
        (from, to)
    }

    async fn keystore_vps(&self) -> HashMap<String, u64> {
        let (status, answer) = self
            .call(
                reqwest::Method::GET,
                &format!("/v1/instances/{}/keystore", self.instance),
                None,
            )
            .await;
        assert_eq!(status, 200, "{answer}");
        answer["master_keys"]
            .as_array()
            .unwrap()
            .iter()
            .map(|entry| {
                (
                    entry["vp"].as_str().unwrap().to_owned(),
                    entry["key_versions"].as_u64().unwrap(),
                )
            })
            .collect()
    }
}

async fn keys_wrap_and_unwrap_with_failover(backend: Backend) {
    let deployment = deploy(backend).await;
    // Every request starts at another unit of the rotation; unit 1 has no master key, so a
    // third of them must fail over to the next unit.
    let key = deployment.create_root_key("failover").await;
    for round in 0..6u8 {
        let dek = [round; 32];
        let ciphertext = deployment.wrap(&key, &dek, &["round"]).await;
        let (status, answer) = deployment.unwrap(&key, &ciphertext, &["round"]).await;
        assert_eq!(status, 200, "{backend:?}: {answer}");
        assert_eq!(
            B64.decode(answer["plaintext"].as_str().unwrap()).unwrap(),
            dek
        );
    }
}

async fn a_ciphertext_that_does_not_authenticate_is_refused_once(backend: Backend) {
    let deployment = deploy(backend).await;
    let key = deployment.create_root_key("aad").await;
    let ciphertext = deployment.wrap(&key, &[7; 32], &["right"]).await;
    let (status, answer) = deployment.unwrap(&key, &ciphertext, &["wrong"]).await;
    assert_eq!(status, 422, "{backend:?}: {answer}");
    assert_eq!(
        answer["resources"][0]["reasons"][0]["code"],
        "UNPROCESSABLE_CIPHERTEXT_ERR"
    );
}

async fn a_rotation_moves_every_key_and_they_all_unwrap(backend: Backend) {
    let deployment = deploy(backend).await;
    let mut wrapped = Vec::new();
    for index in 0..20u8 {
        let key = deployment.create_root_key(&format!("k{index}")).await;
        let ciphertext = deployment.wrap(&key, &[index; 32], &[]).await;
        wrapped.push((key, ciphertext, index));
    }
    // The import token's private key is sealed under the master key too: it moves along.
    let (status, answer) = deployment
        .call(
            reqwest::Method::POST,
            "/api/v2/import_token",
            Some(json!({})),
        )
        .await;
    assert_eq!(status, 201, "{backend:?}: {answer}");
    let (from, to) = deployment.reencrypt_to_a_new_master_key().await;
    let units = &deployment.units;
    let admin = &deployment.admin;
    let counts = deployment.keystore_vps().await;
    assert_eq!(counts.get(&to.to_string()), Some(&20), "{counts:?}");
    assert_eq!(counts.get(&from.to_string()), None, "{counts:?}");
    let keystore =
        rotor_store::SqliteStore::open(&deployment.dir.path().join("service/keys.db")).unwrap();
    let token = keystore.import_token(deployment.instance).unwrap().unwrap();
    assert!(
        rotor_unit::keys::blob_vp(&token.sealed_private_key).is_some_and(|vp| vp.matches(&to)),
        "{backend:?}: the import token was left under the old master key"
    );
    for unit in units {
        unit.run(admin, Action::SetImmediate { vp: to }).await;
        assert_eq!(unit.status().await.current.vp, to);
    }
    for (key, ciphertext, index) in &wrapped {
        let (status, answer) = deployment.unwrap(key, ciphertext, &[]).await;
        assert_eq!(status, 200, "{backend:?}: {answer}");
        assert_eq!(
            B64.decode(answer["plaintext"].as_str().unwrap()).unwrap(),
            [*index; 32]
        );
    }
}

/// Makes `key` the current master key of `unit` (imported through an importer key, as a
/// transfer from another unit would): the test then knows the key the unit wraps under.
async fn import_current(unit: &Admin, admin: &SigningKey, key: &Secret32) {
    let (outcome, status) = unit.run(admin, Action::CreateImporter).await;
    let Outcome::Importer { public_key } = outcome else {
        panic!("no importer: {outcome:?}");
    };
    let context = envelope_context(TRANSFER_CONTEXT, status.unit);
    let envelope = rotor_crypto::seal_to(&public_key, &context, key).unwrap();
    unit.run(
        admin,
        Action::ImportNew {
            importer: public_key,
            key: envelope,
        },
    )
    .await;
    unit.run(admin, Action::Commit { vp: key.vp() }).await;
    unit.run(admin, Action::SetImmediate { vp: key.vp() }).await;
}

/// A key store written before blobs were AES-GCM-SIV: its first-format blobs (`VP ‖ nonce ‖
/// AES-256-GCM`) serve wrap and unwrap, DEKs wrapped under them unwrap, and a rotation leaves
/// every blob in the current format.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_keystore_of_first_format_blobs_keeps_working_and_a_rotation_upgrades_it() {
    let deployment = deploy(Backend::InProcess).await;
    let instance = deployment.instance;
    let known = Secret32::random();
    for unit in &deployment.units[1..] {
        import_current(unit, &deployment.admin, &known).await;
    }
    for index in 0..5 {
        deployment.create_root_key(&format!("first{index}")).await;
    }
    let keystore =
        rotor_store::SqliteStore::open(&deployment.dir.path().join("service/keys.db")).unwrap();
    let stored = keystore
        .blobs_under(instance, &known.vp(), 0, i64::MAX, 100)
        .unwrap();
    assert_eq!(stored.len(), 5);
    // Each version becomes a first-format blob of known material, written as the first-format
    // code wrote it, and a DEK is wrapped under it outside the service.
    let mut replacements = Vec::new();
    let mut expected = Vec::new();
    for (index, row) in (0u8..).zip(&stored) {
        let binding = Binding {
            instance,
            key: row.key,
            version: row.version,
            extractable: row.extractable,
        };
        let material = [index; 32];
        let mut blob = known.vp().0.to_vec();
        blob.extend_from_slice(&rotor_crypto::seal_aes256gcm(
            &known,
            &binding.blob_aad(),
            &material,
        ));
        replacements.push(BlobReplacement {
            position: row.position,
            old: row.blob.clone(),
            new: blob,
            vp: known.vp(),
        });
        let dek = [index.wrapping_add(100); 32];
        let ciphertext = rotor_unit::keys::wrap_dek(&material, &binding, &dek, &[]).unwrap();
        expected.push((row.key.to_string(), B64.encode(ciphertext), dek));
    }
    assert_eq!(keystore.replace_blobs(&replacements).unwrap(), 5);
    let mut wrapped = Vec::new();
    for (key, ciphertext, dek) in &expected {
        let (status, answer) = deployment.unwrap(key, ciphertext, &[]).await;
        assert_eq!(status, 200, "{answer}");
        assert_eq!(
            B64.decode(answer["plaintext"].as_str().unwrap()).unwrap(),
            dek
        );
        let fresh = deployment.wrap(key, &[7; 32], &["fresh"]).await;
        wrapped.push((key.clone(), fresh));
    }

    let (from, to) = deployment.reencrypt_to_a_new_master_key().await;
    assert_eq!(from, known.vp());
    let upgraded = keystore
        .blobs_under(instance, &to, 0, i64::MAX, 100)
        .unwrap();
    assert_eq!(upgraded.len(), 5);
    for row in &upgraded {
        // VP, the current format's byte, nonce, 32 bytes of material, tag.
        assert_eq!(row.blob[32], 0x02);
        assert_eq!(row.blob.len(), 32 + 1 + 12 + 32 + 16);
    }
    for unit in &deployment.units {
        unit.run(&deployment.admin, Action::SetImmediate { vp: to })
            .await;
    }
    for ((key, ciphertext, dek), (_, fresh)) in expected.iter().zip(&wrapped) {
        let (status, answer) = deployment.unwrap(key, ciphertext, &[]).await;
        assert_eq!(status, 200, "{answer}");
        assert_eq!(
            B64.decode(answer["plaintext"].as_str().unwrap()).unwrap(),
            dek
        );
        let (status, answer) = deployment.unwrap(key, fresh, &["fresh"]).await;
        assert_eq!(status, 200, "{answer}");
        assert_eq!(
            B64.decode(answer["plaintext"].as_str().unwrap()).unwrap(),
            [7; 32]
        );
    }
}

/// Deleting a key makes every unit drop the versions it had unwrapped, and only that key's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deleted_key_leaves_every_units_cache() {
    let deployment = deploy(Backend::InProcess).await;
    let deleted = deployment.create_root_key("deleted").await;
    let kept = deployment.create_root_key("kept").await;
    // Key operations start at each unit in turn: six rounds reach both units with the master
    // key several times, so each caches both keys.
    for key in [&deleted, &kept] {
        for round in 0..6u8 {
            let ciphertext = deployment.wrap(key, &[round; 32], &[]).await;
            let (status, answer) = deployment.unwrap(key, &ciphertext, &[]).await;
            assert_eq!(status, 200, "{answer}");
        }
    }
    let (status, answer) = deployment
        .call(
            reqwest::Method::DELETE,
            &format!("/api/v2/keys/{deleted}"),
            None,
        )
        .await;
    assert!(status == 200 || status == 204, "{status}: {answer}");
    let forget = |key: &str| ForgetKey {
        instance: deployment.instance,
        key: key.parse().unwrap(),
    };
    let mut kept_versions = 0;
    for admin in &deployment.units {
        let Admin::InProcess(unit, _) = admin else {
            panic!("an in-process deployment has in-process units")
        };
        assert_eq!(unit.call(&forget(&deleted)).await.unwrap().versions, 0);
        kept_versions += unit.call(&forget(&kept)).await.unwrap().versions;
    }
    // Two units hold the master key; each cached the kept key's one version.
    assert_eq!(kept_versions, 2);
}

macro_rules! on_both_backends {
    ($($name:ident),* $(,)?) => {
        mod in_process {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name(super::Backend::InProcess).await;
                }
            )*
        }
        mod unit_processes {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name(super::Backend::Processes).await;
                }
            )*
        }
    };
}

on_both_backends!(
    keys_wrap_and_unwrap_with_failover,
    a_ciphertext_that_does_not_authenticate_is_refused_once,
    a_rotation_moves_every_key_and_they_all_unwrap,
);

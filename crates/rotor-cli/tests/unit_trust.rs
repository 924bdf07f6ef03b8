//! Which unit: the workstation acts only on units it enrolled out of band, refuses a unit that
//! presents another identity (a fake unit behind the service) and one whose state was rolled
//! back; the service refuses a rolled-back unit too.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::collections::HashMap;
use std::path::Path;

use rotor_server::dev::DevInfo;
use rotor_server::iam::Role;
use rotor_unit::client::UnitClient;
use rotor_unit::daemon::Unit;
use rotor_unit::store::UnitStore;
use rotor_unit::wire::{UnitKind, UnitStatus};
use support::Workstation;

/// Every unit's status, read directly from the unit (not through any service), with the dev
/// service's client certificate.
async fn direct_statuses(
    info: &DevInfo,
    units: &[(uuid::Uuid, std::net::SocketAddr)],
) -> HashMap<uuid::Uuid, UnitStatus> {
    let mut out = HashMap::new();
    for (id, address) in units {
        let client = UnitClient::new(
            support::unit_http(info),
            format!("https://{address}/v1"),
            *id,
        );
        out.insert(*id, client.status(None).await.unwrap());
    }
    out
}

fn addresses(info: &DevInfo) -> Vec<(uuid::Uuid, std::net::SocketAddr)> {
    info.units.iter().map(|u| (u.id, u.address)).collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn only_enrolled_units_are_acted_on_and_enrollment_checks_the_fingerprint() {
    let dir = tempfile::tempdir().unwrap();
    let (_dev, info) = support::start_dev(dir.path(), &["--units", "1", "--recovery-units", "0"]);
    // A workstation that 'rotor dev' did not enroll anything in.
    let ws = Workstation {
        home: dir.path().join("other"),
        info: info.clone(),
        password: support::PASSWORD,
    };
    ws.ok(&["units", "select", "--all"]);
    let listed = ws.json(&["units"]);
    assert!(listed["instances"][0]["units"][0]["enrolled"].is_null());
    // Reading works, with a warning; acting is refused before anything is signed or sealed.
    let shown = ws.run(&["mk"]);
    assert!(shown.status.success());
    assert!(String::from_utf8_lossy(&shown.stderr).contains("not enrolled"));
    ws.ok(&["parts", "new"]);
    ws.ok(&["parts", "new"]);
    let before = direct_statuses(&info, &addresses(&info)).await;
    ws.fails(
        &["mk", "load", "1", "2"],
        5,
        "rotor units enroll 1 --fingerprint",
    );
    assert_eq!(direct_statuses(&info, &addresses(&info)).await, before);

    let right = info.units[0].identity.unwrap().to_string();
    let wrong = rotor_crypto::SigningKey::generate(rotor_crypto::SigAlg::P256Sha256)
        .public_key()
        .fingerprint()
        .to_string();
    ws.fails(
        &["units", "enroll", "1", "--fingerprint", &wrong],
        5,
        "not the",
    );
    ws.fails(
        &["units", "enroll", "1", "--yes"],
        1,
        "--yes enrolls only with --fingerprint",
    );
    assert!(!ws.home.join("enrollments.json").exists());
    ws.ok(&[
        "units",
        "enroll",
        "1",
        "--fingerprint",
        &right.to_uppercase(),
    ]);
    let listed = ws.json(&["units"]);
    assert_eq!(
        listed["instances"][0]["units"][0]["enrolled"],
        right.as_str()
    );
    assert!(
        ws.ok(&["units", "enroll", "1"])
            .contains("already enrolled")
    );

    // The dev's own workstation and the one of its ROTOR_HOME were enrolled by 'rotor dev'.
    let dev_home = Workstation {
        home: dir.path().join("home"),
        info: info.clone(),
        password: support::PASSWORD,
    };
    assert_eq!(
        dev_home.json(&["units"])["instances"][0]["units"][0]["enrolled"],
        right.as_str()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn pins_of_an_earlier_workstation_keep_working_as_enrollments() {
    let dir = tempfile::tempdir().unwrap();
    let (_dev, info) = support::start_dev(dir.path(), &["--units", "2", "--recovery-units", "0"]);
    let statuses = direct_statuses(&info, &addresses(&info)).await;
    // A copy of an old workstation: settings and pins.json (unit id → identity key), no
    // enrollments.json; the first unit pinned with its real key, the second with another.
    let ws = Workstation::of_dev(&info);
    let old_home = dir.path().join("old");
    std::fs::create_dir_all(old_home.join("sigkeys")).unwrap();
    std::fs::create_dir_all(old_home.join("parts")).unwrap();
    for entry in std::fs::read_dir(ws.home.join("sigkeys")).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(
            entry.path(),
            old_home.join("sigkeys").join(entry.file_name()),
        )
        .unwrap();
    }
    std::fs::copy(
        ws.home.join("settings.json"),
        old_home.join("settings.json"),
    )
    .unwrap();
    let impostor =
        rotor_crypto::SigningKey::generate(rotor_crypto::SigAlg::P256Sha256).public_key();
    let pins = serde_json::json!({
        info.units[0].id.to_string(): statuses[&info.units[0].id].identity,
        info.units[1].id.to_string(): impostor,
    });
    std::fs::write(old_home.join("pins.json"), pins.to_string()).unwrap();
    let old = Workstation {
        home: old_home,
        info: info.clone(),
        password: support::DEV_PASSWORD,
    };
    let listed = old.json(&["units"]);
    assert_eq!(
        listed["instances"][0]["units"][0]["enrolled"],
        info.units[0].identity.unwrap().to_string().as_str()
    );
    old.ok(&["units", "deselect", "2"]);
    old.ok(&["mk"]);
    old.ok(&["units", "select", "2"]);
    old.fails(&["mk"], 5, "not the enrolled");
}

/// A unit process that is not the unit it claims to be: a real unit state machine with a new
/// identity key, answering under the id of `victim`. It even holds a valid unit certificate of
/// the instance (as if the CA or a unit host were compromised): only enrollment stops it.
async fn impostor(info: &DevInfo, dir: &Path, victim: uuid::Uuid) -> (std::net::SocketAddr, Unit) {
    let (store, identity, mut state) = UnitStore::open(
        dir,
        UnitKind::Operational,
        &rotor_unit::seal::SealSource::File,
    )
    .unwrap();
    state.unit = victim;
    let audit = rotor_unit::audit::AuditLog::open(dir).unwrap();
    let unit = Unit::new(store, identity, state, audit);
    let pki = info.dir.join("pki");
    let mut ca = rotor_tls::pki::Authority::open(&pki).unwrap();
    let subject = rotor_tls::pki::Subject {
        role: rotor_tls::Role::Unit {
            instance: info.instance,
            unit: None,
        },
        dns_names: vec![],
        ip_addresses: vec![std::net::Ipv4Addr::LOCALHOST.into()],
    };
    let (cert, key) = ca
        .issue(&subject, 1)
        .unwrap()
        .write(&dir.with_extension("tls"))
        .unwrap();
    let client_auth = rotor_tls::ClientAuth {
        ca: pki.join("ca.pem"),
        crl: None,
    };
    let tls = rotor_tls::config::server_config(&cert, &key, Some(&client_auth)).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(unit.clone().serve(listener, tls, info.instance));
    (address, unit)
}

/// A service whose configuration sends unit `index` to `address` and names no identities:
/// what a compromised or misconfigured service looks like to a workstation.
async fn service_with_swapped_unit(
    dir: &Path,
    info: &DevInfo,
    index: usize,
    address: std::net::SocketAddr,
) -> String {
    let mut units = info.units.clone();
    units[index].address = address;
    for unit in &mut units {
        unit.identity = None;
    }
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let config = support::service_config(
        info,
        dir.join("swapped-service"),
        listener.local_addr().unwrap(),
        units,
        "manager",
        Role::Manager,
    );
    let endpoint = format!("https://{}", config.listen);
    let transport = rotor_server::api_transport(&config).unwrap();
    let service = rotor_server::Service::open(config).unwrap();
    tokio::spawn(rotor_tls::serve::serve(
        listener,
        transport,
        service.router(),
        rotor_tls::serve::Limits::SERVICE,
    ));
    endpoint
}

#[tokio::test(flavor = "multi_thread")]
async fn a_fake_unit_behind_the_service_gets_no_parts_and_no_export_and_nothing_changes() {
    let dir = tempfile::tempdir().unwrap();
    let (_dev, info) = support::start_dev(dir.path(), &["--units", "2", "--recovery-units", "1"]);
    let victim = info.units[1].id;
    let (fake_address, fake) = impostor(&info, &dir.path().join("fake"), victim).await;
    let endpoint = service_with_swapped_unit(dir.path(), &info, 1, fake_address).await;
    let mut swapped = info.clone();
    swapped.endpoint = endpoint;
    let ws = Workstation::of_dev(&swapped);

    let real = addresses(&info);
    let before = direct_statuses(&info, &real).await;
    let fake_before = fake.status().await;
    // Loading key parts seals them to each selected unit's importer key: only the fake here.
    ws.ok(&["units", "deselect", "--all"]);
    ws.ok(&["units", "select", "2"]);
    ws.fails(&["mk", "load", "1", "2", "3"], 5, "not the enrolled");
    ws.ok(&["units", "select", "--all"]);
    // Recovery exports the master key to a unit that lacks it.
    ws.fails(&["auto", "recover"], 5, "not the enrolled");
    ws.fails(&["mk", "rotate"], 5, "not the enrolled");
    ws.fails(&["auto", "rotate"], 5, "not the enrolled");
    assert_eq!(
        direct_statuses(&info, &real).await,
        before,
        "a real unit changed"
    );
    assert_eq!(
        fake.status().await,
        fake_before,
        "the fake unit received something"
    );
    assert!(fake.status().await.admins.is_empty());
}

/// `rotor dev --dir DIR/state` with `extra` arguments, in the foreground until dropped.
fn dev_on(dir: &Path, extra: &[&str]) -> (support::DevProcess, DevInfo) {
    let _ = std::fs::remove_file(dir.join("dev.json"));
    let mut args = vec!["--units", "1", "--recovery-units", "0"];
    args.extend_from_slice(extra);
    support::start_dev(dir, &args)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_unit_restarted_on_an_older_copy_of_its_state_is_refused_by_cli_and_service() {
    let dir = tempfile::tempdir().unwrap();
    let unit_dir = |info: &DevInfo| info.dir.join("units").join("operational-0");
    let (dev, info) = dev_on(dir.path(), &[]);
    let ws = Workstation::of_dev(&info);
    let mine = Workstation {
        home: dir.path().join("home"),
        info: info.clone(),
        password: support::DEV_PASSWORD,
    };
    let counter = direct_statuses(&info, &addresses(&info)).await[&info.units[0].id].counter;
    stop(dev, &info);
    // The copy an attacker keeps: the whole unit directory, sealing material included.
    let copy = dir.path().join("old-unit");
    copy_dir(&unit_dir(&info), &copy);

    let (dev, info) = dev_on(dir.path(), &[]);
    let ws = Workstation {
        info: info.clone(),
        ..ws
    };
    let mine = Workstation {
        info: info.clone(),
        ..mine
    };
    ws.ok(&["sigkeys", "new", "--name", "admin four"]);
    ws.ok(&["admins", "add", "4"]);
    mine.ok(&["units", "select", "--all"]);
    mine.ok(&["mk"]);
    // The service reads every status before it starts a rotation (here refused: the units
    // are not ready), and remembers the counter.
    assert_eq!(begin_rotation(&info).await.0, 409);
    let advanced = direct_statuses(&info, &addresses(&info)).await[&info.units[0].id].counter;
    assert!(advanced > counter);
    stop(dev, &info);

    std::fs::remove_dir_all(unit_dir(&info)).unwrap();
    copy_dir(&copy, &unit_dir(&info));
    let (_dev, info) = dev_on(dir.path(), &["--imprint"]);
    assert_eq!(
        direct_statuses(&info, &addresses(&info)).await[&info.units[0].id].counter,
        counter
    );
    let ws = Workstation {
        info: info.clone(),
        ..ws
    };
    let mine = Workstation {
        info: info.clone(),
        ..mine
    };
    ws.fails(&["mk"], 5, "older copy");
    mine.fails(&["admins"], 5, "older copy");

    // The service remembers the counter in its store and refuses the unit for a rotation.
    let (status, body) = begin_rotation(&info).await;
    assert_eq!(status, 502, "{body}");
    assert_eq!(body["code"], "unit_untrusted");
    assert!(
        body["message"].as_str().unwrap().contains("older copy"),
        "{body}"
    );
}

/// Stops a `rotor dev` and waits until its units (which exit with it) no longer listen.
fn stop(dev: support::DevProcess, info: &DevInfo) {
    drop(dev);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    for unit in &info.units {
        while std::net::TcpStream::connect(unit.address).is_ok() {
            assert!(
                std::time::Instant::now() < deadline,
                "unit {} did not stop",
                unit.id
            );
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
    }
}

/// Asks the service to start a rotation between two made-up master keys.
async fn begin_rotation(info: &DevInfo) -> (u16, serde_json::Value) {
    let token = support::access_token(info, &info.api_key);
    let response = support::api_http(info)
        .post(format!(
            "{}/v1/instances/{}/rotation",
            info.endpoint, info.instance
        ))
        .bearer_auth(token)
        .json(&serde_json::json!({"from_vp": "11".repeat(32), "to_vp": "22".repeat(32)}))
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap())
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).unwrap();
        }
    }
}

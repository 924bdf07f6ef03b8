#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};

use axum::Router;
use axum::routing::get;
use uuid::Uuid;

use crate::config::{ClientAuth, ClientTls, ExpectedPeer, http_client, server_config};
use crate::pki::{Authority, Role, Subject};
use crate::serve::{Limits, PeerCertificate, Transport, serve};

const LOOPBACK: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

fn issue(ca: &mut Authority, dir: &Path, name: &str, role: Role) -> (PathBuf, PathBuf) {
    let server = !matches!(role, Role::Service { .. });
    let subject = Subject {
        role,
        dns_names: if server {
            vec!["localhost".into()]
        } else {
            vec![]
        },
        ip_addresses: if server { vec![LOOPBACK] } else { vec![] },
    };
    ca.issue(&subject, 30)
        .unwrap()
        .write(&dir.join(name))
        .unwrap()
}

/// A server that answers with the role of the client certificate it was shown.
async fn start(cert: &(PathBuf, PathBuf), client_auth: Option<ClientAuth>) -> String {
    let config = server_config(&cert.0, &cert.1, client_auth.as_ref()).unwrap();
    let router = Router::new().route(
        "/",
        get(
            |peer: Option<axum::Extension<PeerCertificate>>| async move {
                match peer {
                    Some(axum::Extension(cert)) => {
                        Role::of_certificate(&cert.0).unwrap().to_string()
                    }
                    None => "anonymous".to_owned(),
                }
            },
        ),
    );
    let listener = tokio::net::TcpListener::bind((LOOPBACK, 0)).await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(serve(
        listener,
        Transport::Tls(config),
        router,
        Limits::UNIT,
    ));
    format!("https://{address}/")
}

async fn get_text(tls: &ClientTls, url: &str) -> Result<String, String> {
    let client = http_client(tls).unwrap().build().unwrap();
    match client.get(url).send().await {
        Ok(response) => Ok(response.text().await.unwrap()),
        Err(err) => Err(format!("{err:?}")),
    }
}

#[tokio::test]
async fn mutual_tls_admits_the_service_of_the_instance_and_refuses_a_revoked_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let mut ca = Authority::create(&dir.path().join("pki"), "test").unwrap();
    let (instance, unit) = (Uuid::new_v4(), Uuid::new_v4());
    let unit_cert = issue(
        &mut ca,
        dir.path(),
        "unit",
        Role::Unit {
            instance,
            unit: Some(unit),
        },
    );
    let service = issue(&mut ca, dir.path(), "service", Role::Service { instance });
    let auth = ClientAuth {
        ca: ca.ca_cert_path(),
        crl: Some(ca.crl_path()),
    };
    let url = start(&unit_cert, Some(auth)).await;
    let as_service = ClientTls {
        ca: ca.ca_cert_path(),
        crl: Some(ca.crl_path()),
        identity: Some(service.clone()),
        expected: ExpectedPeer::UnitOf { instance, unit },
    };
    assert_eq!(
        get_text(&as_service, &url).await.unwrap(),
        format!("service of instance {instance}")
    );

    // Without a client certificate the handshake fails.
    let anonymous = ClientTls {
        identity: None,
        ..as_service.clone()
    };
    assert!(get_text(&anonymous, &url).await.is_err());

    // A client that expects a unit of another instance refuses this server.
    let elsewhere = ClientTls {
        expected: ExpectedPeer::UnitOf {
            instance: Uuid::new_v4(),
            unit,
        },
        ..as_service.clone()
    };
    let refused = get_text(&elsewhere, &url).await.unwrap_err();
    assert!(refused.contains("not the one expected"), "{refused}");

    // Revoked: the server re-reads the CRL and refuses the next connection.
    let serial = crate::pki::serial_of_pem_file(&service.0).unwrap();
    std::thread::sleep(std::time::Duration::from_millis(20));
    ca.revoke(&serial).unwrap();
    assert!(get_text(&as_service, &url).await.is_err());
}

#[tokio::test]
async fn a_client_refuses_a_server_of_another_authority() {
    let dir = tempfile::tempdir().unwrap();
    let mut ours = Authority::create(&dir.path().join("ours"), "ours").unwrap();
    let mut theirs = Authority::create(&dir.path().join("theirs"), "theirs").unwrap();
    let api = issue(&mut theirs, dir.path(), "api", Role::Api);
    let url = start(&api, None).await;
    let _ = issue(&mut ours, dir.path(), "unused", Role::Api);
    let client = ClientTls {
        ca: ours.ca_cert_path(),
        crl: None,
        identity: None,
        expected: ExpectedPeer::Any,
    };
    assert!(get_text(&client, &url).await.is_err());
    let trusting = ClientTls {
        ca: theirs.ca_cert_path(),
        ..client
    };
    assert_eq!(get_text(&trusting, &url).await.unwrap(), "anonymous");
}

#[test]
fn roles_round_trip_through_certificates() {
    let dir = tempfile::tempdir().unwrap();
    let mut ca = Authority::create(dir.path(), "roles").unwrap();
    let instance = Uuid::new_v4();
    for role in [
        Role::Api,
        Role::Unit {
            instance,
            unit: None,
        },
        Role::Service { instance },
    ] {
        let (cert, _) = issue(&mut ca, dir.path(), "c", role.clone());
        let der = crate::pem::load_certs(&cert).unwrap().remove(0);
        assert_eq!(Role::of_certificate(&der).unwrap(), role);
    }
    // A service certificate cannot carry server names.
    let subject = Subject {
        role: Role::Service { instance },
        dns_names: vec!["localhost".into()],
        ip_addresses: vec![],
    };
    assert!(ca.issue(&subject, 1).is_err());
    // Reopened, the authority knows what it issued.
    let reopened = Authority::open(dir.path()).unwrap();
    assert_eq!(reopened.issued().len(), 3);
}

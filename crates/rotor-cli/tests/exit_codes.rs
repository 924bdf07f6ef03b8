//! The exit codes that need a service: 6 when the service refuses the API key or the role, 4
//! when nothing answers at the endpoint.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::zombie_processes
)]

mod support;

use support::Workstation;

#[test]
fn a_refused_api_key_or_role_exits_6_and_an_unreachable_service_4() {
    let dir = tempfile::tempdir().unwrap();
    let (_dev, info) = support::start_dev(
        dir.path(),
        &["--imprint", "--units", "1", "--recovery-units", "0"],
    );
    let mut reader_info = info.clone();
    reader_info.api_key = info.api_keys["reader"].clone();
    let reader = Workstation {
        home: dir.path().join("reader"),
        info: reader_info,
        password: support::PASSWORD,
    };

    // An unknown API key: the token endpoint refuses it.
    reader.fails(
        &[
            "login",
            "--endpoint",
            &info.endpoint,
            "--api-key",
            "not-a-key",
        ],
        6,
        "the service refused the API key",
    );
    // A valid key whose role may not administer units.
    reader.fails(&["units"], 6, "role");
    // The same with a Manager key works.
    let manager = Workstation {
        home: dir.path().join("manager"),
        info,
        password: support::PASSWORD,
    };
    manager.ok(&["units"]);

    // Nothing listens at the endpoint: unreachable, never "refused".
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let endpoint = format!("http://{}", closed.local_addr().unwrap());
    drop(closed);
    let output = reader.run(&["login", "--endpoint", &endpoint, "--api-key", "any"]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(4), "{stderr}");
    assert!(stderr.contains("cannot reach the service"), "{stderr}");
}

//! A full key-part ceremony against three real unit processes through the service and the CLI,
//! then every rejection a unit must make, each with its own error, each changing nothing.

// Test helpers may panic: a failed expectation is the test failing. Spawned processes are
// killed and waited for in `Drop`.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::zombie_processes
)]

mod support;

use support::Workstation;

use rotor_crypto::{SigAlg, SigningKey, combine_parts};
use rotor_server::dev::DevInfo;
use rotor_unit::client::{ClientError, UnitClient};
use rotor_unit::wire::{
    Action, Command as UnitCommand, CurrentState, NewState, SignedCommand, UnitStatus,
};

/// Unlocks workstation files the CLI made, for building commands by hand.
trait Files {
    fn sigkey(&self, number: u32) -> SigningKey;
    fn part(&self, number: u32) -> rotor_crypto::Secret32;
}

impl Files for Workstation {
    fn sigkey(&self, number: u32) -> SigningKey {
        let path = self.home.join("sigkeys").join(format!("{number}.sigkey"));
        rotor_cli::workstation::SigkeyFile::read(&path)
            .unwrap()
            .unlock(&path, support::PASSWORD)
            .unwrap()
    }

    fn part(&self, number: u32) -> rotor_crypto::Secret32 {
        let path = self.home.join("parts").join(format!("{number}.part"));
        rotor_cli::workstation::PartFile::read(&path)
            .unwrap()
            .unlock(&path, support::PASSWORD)
            .unwrap()
    }
}

fn relay(info: &DevInfo, index: usize) -> UnitClient {
    let unit = &info.units[index];
    UnitClient::new(
        support::api_http(info),
        format!(
            "{}/v1/instances/{}/units/{}",
            info.endpoint, info.instance, unit.id
        ),
        unit.id,
    )
    .with_bearer(support::access_token(info, &info.api_key))
}

async fn status(client: &UnitClient) -> UnitStatus {
    client.status(None).await.expect("status")
}

/// Sends `signed` to the unit and asserts it is refused with `code` and changes nothing.
async fn refused(client: &UnitClient, signed: SignedCommand, code: &str) {
    let before = status(client).await;
    match client.command(&before.identity, signed).await {
        Err(ClientError::Rejected(body)) => {
            assert_eq!(body.code, code, "{}", body.message);
            assert!(!body.message.is_empty());
        }
        other => panic!("expected rejection {code}, got {other:?}"),
    }
    assert_eq!(
        status(client).await,
        before,
        "a refused command changed the unit"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn key_part_ceremony_and_every_rejection() {
    let dir = tempfile::tempdir().unwrap();
    let (_dev, info) = support::start_dev(
        dir.path(),
        &["--imprint", "--recovery-units", "0", "--units", "3"],
    );
    let ws = Workstation {
        home: dir.path().join("home"),
        info: info.clone(),
        password: support::PASSWORD,
    };

    // Imprint → 3 admins → thresholds 2/2 → 3 parts → commit with 2 signatures → set immediate.
    ws.ok(&["units", "select", "--all"]);
    let units = ws.json(&["units"]);
    assert_eq!(units["instances"][0]["units"].as_array().unwrap().len(), 3);
    ws.ok(&["sigkeys", "new", "--name", "alice"]);
    ws.ok(&["sigkeys", "new", "--name", "bob"]);
    ws.ok(&["sigkeys", "new", "--name", "carol", "--curve", "p521"]);
    // The first admin with each unit's enrollment secret, the next signed by the first.
    ws.ok(&["sigkeys", "use", "1"]);
    ws.ok(&["admins", "add", "1", "2", "3"]);
    let thresholds = ws.json(&["thresholds"]);
    assert!(
        thresholds["units"]
            .as_array()
            .unwrap()
            .iter()
            .all(|u| u["imprint"] == true)
    );
    // Leaving imprint mode with signature threshold 2 needs two admin signatures.
    ws.ok(&["sigkeys", "use", "1"]);
    ws.fails(
        &["thresholds", "set", "--signature", "2", "--revocation", "2"],
        3,
        "needs 2 distinct admin signature(s), got 1",
    );
    ws.ok(&["sigkeys", "use", "1", "2"]);
    ws.ok(&["thresholds", "set", "--signature", "2", "--revocation", "2"]);
    ws.fails(
        &["thresholds", "set", "--signature", "4", "--revocation", "2"],
        3,
        "exceeds the 3 installed admin(s)",
    );
    ws.fails(
        &["thresholds", "set", "--signature", "0", "--revocation", "2"],
        3,
        "out of range",
    );
    for _ in 0..3 {
        ws.ok(&["parts", "new"]);
    }
    ws.ok(&["mk", "load", "1", "2", "3"]);
    let expected = combine_parts(&[ws.part(1), ws.part(2), ws.part(3)]).vp();
    for unit in ws.json(&["mk"])["units"].as_array().unwrap() {
        assert_eq!(unit["new"]["state"], "Full Uncommitted");
        assert_eq!(unit["new"]["vp"], expected.to_hex());
    }
    // Commit needs the signature threshold: one signer is refused, two succeed.
    ws.ok(&["sigkeys", "use", "3"]);
    ws.fails(
        &["mk", "commit"],
        3,
        "needs 2 distinct admin signature(s), got 1",
    );
    ws.ok(&["sigkeys", "use", "2", "3"]);
    ws.ok(&["mk", "commit"]);
    ws.fails(&["mk", "setimm"], 1, "pass --yes");
    ws.ok(&["mk", "setimm", "--yes"]);
    for unit in ws.json(&["mk"])["units"].as_array().unwrap() {
        assert_eq!(unit["current"]["state"], "Valid");
        assert_eq!(unit["current"]["vp"], expected.to_hex());
        assert_eq!(unit["new"]["state"], "Empty");
    }
    assert_eq!(
        ws.json(&["units", "compare"])["differences"],
        serde_json::json!([])
    );
    // Loading the same parts again would recreate the current key: refused.
    ws.fails(
        &["mk", "load", "1", "2", "3"],
        3,
        "already in the current register",
    );

    // Each rejection through the service, built and signed here, with its own error.
    let alice = ws.sigkey(1);
    let bob = ws.sigkey(2);
    let stranger = SigningKey::generate(SigAlg::P256Sha256);
    let unit1 = relay(&info, 0);
    let unit2 = relay(&info, 1);
    let s1 = status(&unit1).await;
    assert!(!s1.imprint);
    assert_eq!(s1.current.state, CurrentState::Valid);
    assert_eq!(s1.new.state, NewState::Empty);
    let next = |status: &UnitStatus, action: Action| UnitCommand {
        unit: status.unit,
        counter: status.counter + 1,
        action,
    };
    let add_stranger = Action::AddAdmin {
        name: "stranger".to_owned(),
        public_key: stranger.public_key(),
    };

    refused(
        &unit1,
        next(&s1, add_stranger.clone()).sign(&[&alice]),
        "too_few_signatures",
    )
    .await;
    refused(
        &unit1,
        next(&s1, add_stranger.clone()).sign(&[&alice, &alice]),
        "duplicate_signer",
    )
    .await;
    refused(
        &unit1,
        next(&s1, add_stranger.clone()).sign(&[&alice, &stranger]),
        "not_an_admin",
    )
    .await;
    let mut forged = next(&s1, add_stranger.clone()).sign(&[&alice, &bob]);
    forged.signatures[1].signature[10] ^= 0x01;
    refused(&unit1, forged, "bad_signature").await;
    // A signature over other parameters does not carry over.
    let mut swapped = next(
        &s1,
        Action::SetThresholds {
            signature: 1,
            revocation: 1,
        },
    )
    .sign(&[&alice, &bob]);
    swapped.command.action = Action::SetThresholds {
        signature: 2,
        revocation: 1,
    };
    refused(&unit1, swapped, "bad_signature").await;
    refused(
        &unit1,
        UnitCommand {
            counter: s1.counter + 5,
            ..next(&s1, Action::ClearNew)
        }
        .sign(&[&alice]),
        "bad_counter",
    )
    .await;

    // An accepted command cannot be replayed, nor reused on another unit.
    let accepted = next(&s1, Action::ClearNew).sign(&[&alice]);
    unit1
        .command(&s1.identity, accepted.clone())
        .await
        .expect("accepted");
    refused(&unit1, accepted.clone(), "bad_counter").await;
    refused(&unit2, accepted.clone(), "wrong_unit").await;
    let s2 = status(&unit2).await;
    let mut retargeted = accepted;
    retargeted.command.counter = s2.counter + 1;
    refused(&unit2, retargeted, "wrong_unit").await;

    // Register rules and the commit VP check.
    let s1 = status(&unit1).await;
    refused(
        &unit1,
        next(&s1, Action::Commit { vp: expected }).sign(&[&alice, &bob]),
        "register_state",
    )
    .await;
    refused(
        &unit1,
        next(&s1, Action::GenerateRandom).sign(&[&alice]),
        "recovery_only",
    )
    .await;
    refused(
        &unit1,
        next(
            &s1,
            Action::RemoveAdmin {
                ski: rotor_unit::wire::Ski::of(&stranger.public_key()),
            },
        )
        .sign(&[&alice, &bob]),
        "unknown_admin",
    )
    .await;
    ws.ok(&["parts", "new"]);
    ws.ok(&["parts", "new"]);
    ws.ok(&["sigkeys", "use", "1", "2"]);
    ws.ok(&["mk", "load", "4", "5"]);
    let s1 = status(&unit1).await;
    assert_eq!(s1.new.state, NewState::FullUncommitted);
    refused(
        &unit1,
        next(&s1, Action::Commit { vp: expected }).sign(&[&alice, &bob]),
        "vp_mismatch",
    )
    .await;
    ws.fails(
        &["mk", "load", "4", "5"],
        3,
        "new register is Full Uncommitted",
    );

    // The CLI checks each unit against the identity enrolled for it and refuses another one.
    let enrollments_path = ws.home.join("enrollments.json");
    let mut enrollments: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&enrollments_path).unwrap()).unwrap();
    let impostor = SigningKey::generate(SigAlg::P256Sha256).public_key();
    enrollments[info.units[0].id.to_string()]["fingerprint"] =
        serde_json::to_value(impostor.fingerprint()).unwrap();
    std::fs::write(&enrollments_path, enrollments.to_string()).unwrap();
    ws.fails(&["mk"], 5, "not the enrolled");
    ws.ok(&["units", "forget", &info.units[0].id.to_string()]);
    let fingerprint = info.units[0].identity.unwrap().to_string();
    ws.ok(&["units", "enroll", "1", "--fingerprint", &fingerprint]);
    ws.ok(&["mk"]);
}

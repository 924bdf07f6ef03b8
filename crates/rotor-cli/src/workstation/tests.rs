use std::fs;
use std::path::Path;

use rotor_crypto::{Secret32, SigningKey};
use uuid::Uuid;

use super::*;
use rotor_crypto::SigAlg;

#[test]
fn sigkey_file_round_trips_and_refuses_wrong_password_and_tampering() {
    let key = SigningKey::generate(SigAlg::P256Sha256);
    let file = SigkeyFile::seal("alice", &key, "correct horse").unwrap();
    let path = Path::new("1.sigkey");
    assert_eq!(
        file.unlock(path, "correct horse").unwrap().public_key(),
        key.public_key()
    );
    assert!(matches!(
        file.unlock(path, "wrong horse"),
        Err(FileError::WrongPassword(_))
    ));
    let mut renamed = file;
    renamed.name = "mallory".to_owned();
    assert!(matches!(
        renamed.unlock(path, "correct horse"),
        Err(FileError::WrongPassword(_))
    ));
}

#[test]
fn part_file_round_trips_and_binds_its_vp() {
    let part = Secret32::random();
    let file = PartFile::seal("part one", &part, "correct horse").unwrap();
    let path = Path::new("1.part");
    assert!(file.unlock(path, "correct horse").unwrap().ct_eq(&part));
    let mut other = file;
    other.vp = Secret32::random().vp();
    assert!(other.unlock(path, "correct horse").is_err());
}

#[test]
fn pins_of_an_earlier_version_read_as_enrollments_until_enrollments_are_saved() {
    let dir = tempfile::tempdir().unwrap();
    let home = Home::at(dir.path().join("home")).unwrap();
    let unit = Uuid::new_v4();
    let key = SigningKey::generate(SigAlg::P256Sha256).public_key();
    // The file as earlier versions wrote it: unit id → identity key.
    let old = format!(
        r#"{{"{unit}": {{"alg": "p256", "sec1": "{}"}}}}"#,
        hex::encode(&key.sec1)
    );
    fs::write(dir.path().join("home").join("pins.json"), old).unwrap();
    let enrolled = home.enrollments().unwrap();
    assert_eq!(enrolled[&unit], Enrollment::new(key.fingerprint(), 0));

    let mut advanced = enrolled;
    advanced.insert(unit, Enrollment::new(key.fingerprint(), 7));
    home.save_enrollments(&advanced).unwrap();
    assert_eq!(home.enrollments().unwrap(), advanced);
}

//! The EP11 operations against known answers and their rules: template enforcement with the
//! PKCS #11 return codes, blobs and states that do not open, multi-part equal to single-part,
//! and RewrapKeyBlob only once a rotation pinned the new master key.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use rotor_ep11::consts::{cka, ckk, ckm, cko, ckr};
use rotor_ep11::object::KeyObject;
use rotor_ep11::template::{AttrValue, Template};
use rotor_ep11::{
    Call, Ep11Error, Ep11Result, Mechanism, Operation, Reply, Sealed, Sealer, execute,
};
use zeroize::Zeroizing;

/// A unit stand-in: master keys by one-byte id (the first byte of each blob, as a VP would
/// be), blobs bound to `instance`.
struct TestUnit {
    current: u8,
    new: Option<u8>,
    pinned: bool,
    instance: u8,
}

impl TestUnit {
    fn new(instance: u8) -> Self {
        Self {
            current: 1,
            new: None,
            pinned: false,
            instance,
        }
    }

    fn cipher(id: u8) -> Aes256Gcm {
        Aes256Gcm::new_from_slice(&[id; 32]).unwrap()
    }

    fn aad(&self, kind: Sealed) -> Vec<u8> {
        vec![u8::from(kind == Sealed::State), self.instance]
    }
}

impl Sealer for TestUnit {
    fn seal(&self, kind: Sealed, plaintext: &[u8]) -> Ep11Result<Vec<u8>> {
        let id = match self.new {
            Some(new) if self.pinned => new,
            _ => self.current,
        };
        let mut nonce = [0u8; 12];
        getrandom::fill(&mut nonce).unwrap();
        let aad = self.aad(kind);
        let sealed = Self::cipher(id)
            .encrypt(
                &Nonce::from(nonce),
                Payload {
                    msg: plaintext,
                    aad: &aad,
                },
            )
            .unwrap();
        Ok([vec![id], nonce.to_vec(), sealed].concat())
    }

    fn open(&self, kind: Sealed, sealed: &[u8]) -> Ep11Result<Zeroizing<Vec<u8>>> {
        let (&id, rest) = sealed.split_first().ok_or_else(Ep11Error::blob)?;
        if id != self.current && Some(id) != self.new {
            return Err(Ep11Error::new(
                ckr::IBM_WKID_MISMATCH,
                format!("needs master key {id}"),
            ));
        }
        if rest.len() < 12 {
            return Err(Ep11Error::blob());
        }
        let (nonce, body) = rest.split_at(12);
        let aad = self.aad(kind);
        Self::cipher(id)
            .decrypt(
                &Nonce::try_from(nonce).unwrap(),
                Payload {
                    msg: body,
                    aad: &aad,
                },
            )
            .map(Zeroizing::new)
            .map_err(|_| Ep11Error::blob())
    }

    fn rotation_pinned(&self) -> bool {
        self.pinned
    }
}

fn mech(mechanism: u64, parameter: &[u8]) -> Mechanism {
    Mechanism {
        mechanism,
        parameter: parameter.to_vec(),
    }
}

fn template(entries: &[(u64, AttrValue)]) -> Template {
    entries.iter().cloned().collect()
}

fn on(attribute: u64) -> (u64, AttrValue) {
    (attribute, AttrValue::Bool(true))
}

/// A secret key blob with a known value, as a unit would hold it.
fn secret_key(unit: &TestUnit, key_type: u64, value: &[u8], usages: &[u64]) -> Vec<u8> {
    let mut attributes = Template::new();
    attributes.insert(cka::CLASS, AttrValue::Int(cko::SECRET_KEY as i64));
    attributes.insert(cka::KEY_TYPE, AttrValue::Int(key_type as i64));
    attributes.insert(cka::MODIFIABLE, AttrValue::Bool(true));
    for usage in usages {
        attributes.insert(*usage, AttrValue::Bool(true));
    }
    KeyObject {
        attributes,
        value: Zeroizing::new(value.to_vec()),
    }
    .seal(unit)
    .unwrap()
}

fn output(reply: Ep11Result<Reply>) -> Vec<u8> {
    match reply.unwrap() {
        Reply::Output(bytes) => bytes.to_vec(),
        other => panic!("not an output: {other:?}"),
    }
}

fn state(reply: Ep11Result<Reply>) -> Vec<u8> {
    match reply.unwrap() {
        Reply::State { state, output } => {
            assert!(output.is_empty());
            state
        }
        other => panic!("not a state: {other:?}"),
    }
}

fn code(reply: Ep11Result<Reply>) -> u64 {
    reply.unwrap_err().code
}

fn hex_field(field: &str) -> Vec<u8> {
    if field == "-" {
        Vec::new()
    } else {
        hex::decode(field).unwrap()
    }
}

/// Runs one operation in one call (`*Single`) and in three parts (Init, Update, Final over
/// the data split in two); both must give `expected`.
fn single_and_multi_part(
    unit: &TestUnit,
    operation: Operation,
    mechanism: &Mechanism,
    key: &[u8],
    data: &[u8],
) -> Vec<u8> {
    let single = output(execute(
        unit,
        &Call::Single {
            operation,
            mechanism: mechanism.clone(),
            key: key.to_vec(),
            data: data.to_vec(),
            signature: Vec::new(),
        },
    ));
    let started = state(execute(
        unit,
        &Call::Init {
            operation,
            mechanism: mechanism.clone(),
            key: key.to_vec(),
        },
    ));
    let (first, rest) = data.split_at(data.len() / 2);
    let updated = state(execute(
        unit,
        &Call::Update {
            operation,
            state: started,
            data: first.to_vec(),
        },
    ));
    let multi = output(execute(
        unit,
        &Call::Finish {
            operation,
            state: updated,
            data: rest.to_vec(),
            signature: Vec::new(),
        },
    ));
    assert_eq!(single, multi);
    single
}

#[test]
fn every_known_answer_vector_matches_in_one_call_and_in_parts() {
    let unit = TestUnit::new(1);
    let vectors = include_str!("vectors/known_answers.txt");
    let mut checked = 0;
    for line in vectors
        .lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
    {
        let fields: Vec<&str> = line.split_whitespace().collect();
        let [operation, mechanism, key, iv, data, expected] = fields[..] else {
            panic!("bad vector line: {line}");
        };
        let number = u64::from_str_radix(mechanism.trim_start_matches("0x"), 16).unwrap();
        let (key, iv, data, expected) = (
            hex_field(key),
            hex_field(iv),
            hex_field(data),
            hex_field(expected),
        );
        let mechanism = mech(number, &iv);
        match operation {
            "digest" => {
                let got = single_and_multi_part(&unit, Operation::Digest, &mechanism, &[], &data);
                assert_eq!(got, expected, "{line}");
            }
            "encrypt" => {
                let blob = secret_key(&unit, ckk::AES, &key, &[cka::ENCRYPT, cka::DECRYPT]);
                let got =
                    single_and_multi_part(&unit, Operation::Encrypt, &mechanism, &blob, &data);
                assert_eq!(got, expected, "{line}");
                let back =
                    single_and_multi_part(&unit, Operation::Decrypt, &mechanism, &blob, &expected);
                assert_eq!(back, data, "{line}");
            }
            "sign" => {
                let blob = secret_key(&unit, ckk::GENERIC_SECRET, &key, &[cka::SIGN, cka::VERIFY]);
                let got = single_and_multi_part(&unit, Operation::Sign, &mechanism, &blob, &data);
                assert_eq!(got, expected, "{line}");
                let verified = execute(
                    &unit,
                    &Call::Single {
                        operation: Operation::Verify,
                        mechanism: mechanism.clone(),
                        key: blob.clone(),
                        data: data.clone(),
                        signature: expected.clone(),
                    },
                );
                assert!(output(verified).is_empty());
                let mut wrong = expected.clone();
                wrong[0] ^= 1;
                let refused = execute(
                    &unit,
                    &Call::Single {
                        operation: Operation::Verify,
                        mechanism,
                        key: blob,
                        data,
                        signature: wrong,
                    },
                );
                assert_eq!(code(refused), ckr::SIGNATURE_INVALID);
            }
            other => panic!("unknown operation {other}"),
        }
        checked += 1;
    }
    assert_eq!(checked, 13);
}

fn generate_aes(unit: &TestUnit, entries: &[(u64, AttrValue)]) -> Ep11Result<Reply> {
    execute(
        unit,
        &Call::GenerateKey {
            mechanism: mech(ckm::AES_KEY_GEN, &[]),
            template: template(entries),
        },
    )
}

fn aes_blob(unit: &TestUnit, entries: &[(u64, AttrValue)]) -> (Vec<u8>, Vec<u8>) {
    match generate_aes(unit, entries).unwrap() {
        Reply::Key { blob, checksum } => (blob, checksum),
        other => panic!("not a key: {other:?}"),
    }
}

#[test]
fn generated_aes_keys_encrypt_with_every_mode_and_report_their_check_value() {
    let unit = TestUnit::new(1);
    for length in [16, 24, 32] {
        let (blob, checksum) = aes_blob(
            &unit,
            &[
                (cka::VALUE_LEN, AttrValue::Int(length)),
                on(cka::ENCRYPT),
                on(cka::DECRYPT),
            ],
        );
        assert_eq!(checksum.len(), 7);
        assert_eq!(&checksum[3..], &((length as u32) * 8).to_be_bytes());
        for (mechanism, parameter, data) in [
            (ckm::AES_ECB, vec![], vec![7u8; 32]),
            (ckm::AES_CBC, vec![1u8; 16], vec![7u8; 48]),
            (ckm::AES_CBC_PAD, vec![1u8; 16], b"thirteen byte".to_vec()),
            (ckm::AES_GCM, vec![2u8; 12], b"any length at all".to_vec()),
        ] {
            let mechanism = mech(mechanism, &parameter);
            let ciphertext =
                single_and_multi_part(&unit, Operation::Encrypt, &mechanism, &blob, &data);
            assert_ne!(ciphertext, data);
            let plain =
                single_and_multi_part(&unit, Operation::Decrypt, &mechanism, &blob, &ciphertext);
            assert_eq!(plain, data);
        }
    }
}

#[test]
fn templates_are_enforced_with_their_return_codes() {
    let unit = TestUnit::new(1);
    let len = (cka::VALUE_LEN, AttrValue::Int(32));
    assert_eq!(code(generate_aes(&unit, &[])), ckr::TEMPLATE_INCOMPLETE);
    assert_eq!(
        code(generate_aes(&unit, &[(cka::VALUE_LEN, AttrValue::Int(20))])),
        ckr::ATTRIBUTE_VALUE_INVALID
    );
    assert_eq!(
        code(generate_aes(&unit, &[len.clone(), on(cka::SIGN)])),
        ckr::TEMPLATE_INCONSISTENT
    );
    assert_eq!(
        code(generate_aes(
            &unit,
            &[len.clone(), (cka::KEY_TYPE, AttrValue::Int(ckk::EC as i64))]
        )),
        ckr::TEMPLATE_INCONSISTENT
    );
    assert_eq!(
        code(generate_aes(
            &unit,
            &[len.clone(), (cka::VALUE, AttrValue::Bytes(vec![0; 32]))]
        )),
        ckr::ATTRIBUTE_READ_ONLY
    );
    assert_eq!(
        code(generate_aes(
            &unit,
            &[len.clone(), (0x7777, AttrValue::Bool(true))]
        )),
        ckr::ATTRIBUTE_TYPE_INVALID
    );
    assert_eq!(
        code(generate_aes(
            &unit,
            &[len.clone(), (cka::ENCRYPT, AttrValue::Bytes(vec![2]))]
        )),
        ckr::ATTRIBUTE_VALUE_INVALID
    );

    // Each usage flag off refuses its operation.
    let (encrypt_only, _) = aes_blob(&unit, &[len.clone(), on(cka::ENCRYPT)]);
    let init = |operation, key: &[u8]| {
        execute(
            &unit,
            &Call::Init {
                operation,
                mechanism: mech(ckm::AES_ECB, &[]),
                key: key.to_vec(),
            },
        )
    };
    assert!(init(Operation::Encrypt, &encrypt_only).is_ok());
    assert_eq!(
        code(init(Operation::Decrypt, &encrypt_only)),
        ckr::KEY_FUNCTION_NOT_PERMITTED
    );
    let (decrypt_only, _) = aes_blob(&unit, &[len, on(cka::DECRYPT)]);
    assert_eq!(
        code(init(Operation::Encrypt, &decrypt_only)),
        ckr::KEY_FUNCTION_NOT_PERMITTED
    );
    let hmac_key = |usages: &[u64]| secret_key(&unit, ckk::GENERIC_SECRET, &[5; 32], usages);
    let sign = |operation, key: Vec<u8>| {
        execute(
            &unit,
            &Call::Init {
                operation,
                mechanism: mech(ckm::SHA256_HMAC, &[]),
                key,
            },
        )
    };
    assert_eq!(
        code(sign(Operation::Sign, hmac_key(&[cka::VERIFY]))),
        ckr::KEY_FUNCTION_NOT_PERMITTED
    );
    assert_eq!(
        code(sign(Operation::Verify, hmac_key(&[cka::SIGN]))),
        ckr::KEY_FUNCTION_NOT_PERMITTED
    );
    // A key of the wrong type for the mechanism.
    assert_eq!(
        code(sign(Operation::Sign, encrypt_only.clone())),
        ckr::KEY_TYPE_INCONSISTENT
    );
    // Wrong mechanism parameters.
    let bad_iv = execute(
        &unit,
        &Call::Init {
            operation: Operation::Encrypt,
            mechanism: mech(ckm::AES_CBC, &[0; 8]),
            key: encrypt_only.clone(),
        },
    );
    assert_eq!(code(bad_iv), ckr::MECHANISM_PARAM_INVALID);
    let unknown = execute(
        &unit,
        &Call::Init {
            operation: Operation::Encrypt,
            mechanism: mech(0x4242, &[]),
            key: encrypt_only,
        },
    );
    assert_eq!(code(unknown), ckr::MECHANISM_INVALID);
}

#[test]
fn attributes_are_read_and_changed_by_the_rules() {
    let unit = TestUnit::new(1);
    let (blob, _) = aes_blob(
        &unit,
        &[
            (cka::VALUE_LEN, AttrValue::Int(16)),
            on(cka::ENCRYPT),
            (cka::LABEL, AttrValue::Bytes(b"k1".to_vec())),
        ],
    );
    let get = |object: &[u8], attributes: Vec<u64>| {
        execute(
            &unit,
            &Call::GetAttributeValue {
                object: object.to_vec(),
                attributes,
            },
        )
    };
    let Reply::Attributes(read) = get(
        &blob,
        vec![cka::CLASS, cka::ENCRYPT, cka::DECRYPT, cka::LABEL],
    )
    .unwrap() else {
        panic!("no attributes")
    };
    assert_eq!(read[&cka::CLASS], AttrValue::Int(cko::SECRET_KEY as i64));
    assert_eq!(read[&cka::ENCRYPT], AttrValue::Bool(true));
    assert_eq!(read[&cka::DECRYPT], AttrValue::Bool(false));
    assert_eq!(read[&cka::LABEL], AttrValue::Bytes(b"k1".to_vec()));
    assert_eq!(code(get(&blob, vec![cka::VALUE])), ckr::ATTRIBUTE_SENSITIVE);
    assert_eq!(
        code(get(&blob, vec![cka::EC_PARAMS])),
        ckr::ATTRIBUTE_TYPE_INVALID
    );

    let set = |object: &[u8], entries: &[(u64, AttrValue)]| {
        execute(
            &unit,
            &Call::SetAttributeValue {
                object: object.to_vec(),
                attributes: template(entries),
            },
        )
    };
    let Reply::Blob(changed) = set(
        &blob,
        &[on(cka::DECRYPT), (cka::EXTRACTABLE, AttrValue::Bool(false))],
    )
    .unwrap() else {
        panic!("no blob")
    };
    let Reply::Attributes(read) = get(&changed, vec![cka::DECRYPT, cka::EXTRACTABLE]).unwrap()
    else {
        panic!("no attributes")
    };
    assert_eq!(read[&cka::DECRYPT], AttrValue::Bool(true));
    assert_eq!(read[&cka::EXTRACTABLE], AttrValue::Bool(false));
    // One-way attributes, non-Boolean ones and usages foreign to the key type.
    assert_eq!(
        code(set(&changed, &[on(cka::EXTRACTABLE)])),
        ckr::ATTRIBUTE_READ_ONLY
    );
    assert_eq!(
        code(set(&changed, &[(cka::SENSITIVE, AttrValue::Bool(false))])),
        ckr::ATTRIBUTE_READ_ONLY
    );
    assert_eq!(
        code(set(&changed, &[(cka::LABEL, AttrValue::Bytes(vec![1]))])),
        ckr::ATTRIBUTE_READ_ONLY
    );
    assert_eq!(
        code(set(&changed, &[on(cka::SIGN)])),
        ckr::TEMPLATE_INCONSISTENT
    );
    let Reply::Blob(frozen) = set(&changed, &[(cka::MODIFIABLE, AttrValue::Bool(false))]).unwrap()
    else {
        panic!("no blob")
    };
    assert_eq!(
        code(set(&frozen, &[on(cka::ENCRYPT)])),
        ckr::ATTRIBUTE_READ_ONLY
    );
}

#[test]
fn ecdsa_key_pairs_sign_and_verify_raw_and_hashed() {
    let unit = TestUnit::new(1);
    let p256 = AttrValue::Bytes(rotor_ep11::crypto::P256_PARAMS.to_vec());
    let reply = execute(
        &unit,
        &Call::GenerateKeyPair {
            mechanism: mech(ckm::EC_KEY_PAIR_GEN, &[]),
            private_template: template(&[on(cka::SIGN)]),
            public_template: template(&[(cka::EC_PARAMS, p256.clone()), on(cka::VERIFY)]),
        },
    );
    let Reply::KeyPair {
        private_key,
        public_key,
    } = reply.unwrap()
    else {
        panic!("no key pair")
    };
    let message = b"transfer 10 to bob".to_vec();
    for (mechanism, data) in [
        (ckm::ECDSA_SHA256, message.clone()),
        (ckm::ECDSA_SHA384, message.clone()),
        (
            ckm::ECDSA,
            rotor_ep11::crypto::digest(ckm::SHA256, &message).unwrap(),
        ),
    ] {
        let signature = output(execute(
            &unit,
            &Call::Single {
                operation: Operation::Sign,
                mechanism: mech(mechanism, &[]),
                key: private_key.clone(),
                data: data.clone(),
                signature: Vec::new(),
            },
        ));
        assert_eq!(signature.len(), 64);
        let verify = |signature: Vec<u8>| {
            execute(
                &unit,
                &Call::Single {
                    operation: Operation::Verify,
                    mechanism: mech(mechanism, &[]),
                    key: public_key.clone(),
                    data: data.clone(),
                    signature,
                },
            )
        };
        assert!(output(verify(signature.clone())).is_empty());
        let mut forged = signature;
        forged[10] ^= 1;
        assert_eq!(code(verify(forged)), ckr::SIGNATURE_INVALID);
    }
    // A curve the unit lacks, and a private key without CKA_SIGN.
    let brainpool = AttrValue::Bytes(vec![
        0x06, 0x09, 0x2B, 0x24, 0x03, 0x03, 0x02, 0x08, 0x01, 0x01, 0x07,
    ]);
    let refused = execute(
        &unit,
        &Call::GenerateKeyPair {
            mechanism: mech(ckm::EC_KEY_PAIR_GEN, &[]),
            private_template: template(&[on(cka::SIGN)]),
            public_template: template(&[(cka::EC_PARAMS, brainpool)]),
        },
    );
    assert_eq!(code(refused), ckr::ATTRIBUTE_VALUE_INVALID);
    let Reply::KeyPair { private_key, .. } = execute(
        &unit,
        &Call::GenerateKeyPair {
            mechanism: mech(ckm::EC_KEY_PAIR_GEN, &[]),
            private_template: Template::new(),
            public_template: template(&[(cka::EC_PARAMS, p256)]),
        },
    )
    .unwrap() else {
        panic!("no key pair")
    };
    let refused = execute(
        &unit,
        &Call::Init {
            operation: Operation::Sign,
            mechanism: mech(ckm::ECDSA_SHA256, &[]),
            key: private_key,
        },
    );
    assert_eq!(code(refused), ckr::KEY_FUNCTION_NOT_PERMITTED);
}

#[test]
fn blobs_and_states_from_elsewhere_or_tampered_do_not_open() {
    let unit = TestUnit::new(1);
    let other_instance = TestUnit::new(2);
    let (blob, _) = aes_blob(
        &unit,
        &[(cka::VALUE_LEN, AttrValue::Int(32)), on(cka::ENCRYPT)],
    );
    let init = |unit: &TestUnit, key: Vec<u8>| {
        execute(
            unit,
            &Call::Init {
                operation: Operation::Encrypt,
                mechanism: mech(ckm::AES_ECB, &[]),
                key,
            },
        )
    };
    assert_eq!(
        code(init(&other_instance, blob.clone())),
        ckr::IBM_BLOB_ERROR
    );
    let mut tampered = blob.clone();
    *tampered.last_mut().unwrap() ^= 1;
    assert_eq!(code(init(&unit, tampered)), ckr::IBM_BLOB_ERROR);
    assert_eq!(code(init(&unit, blob[..20].to_vec())), ckr::IBM_BLOB_ERROR);
    assert_eq!(code(init(&unit, Vec::new())), ckr::IBM_BLOB_ERROR);

    let started = state(init(&unit, blob.clone()));
    let finish = |unit: &TestUnit, operation, state: Vec<u8>| {
        execute(
            unit,
            &Call::Finish {
                operation,
                state,
                data: vec![0; 16],
                signature: Vec::new(),
            },
        )
    };
    let mut tampered = started.clone();
    tampered[20] ^= 1;
    assert_eq!(
        code(finish(&unit, Operation::Encrypt, tampered)),
        ckr::IBM_BLOB_ERROR
    );
    assert_eq!(
        code(finish(&other_instance, Operation::Encrypt, started.clone())),
        ckr::IBM_BLOB_ERROR
    );
    assert_eq!(
        code(finish(&unit, Operation::Decrypt, started.clone())),
        ckr::OPERATION_NOT_INITIALIZED
    );
    assert_eq!(
        code(finish(&unit, Operation::Encrypt, Vec::new())),
        ckr::OPERATION_NOT_INITIALIZED
    );
    // A state is no key blob, and a key blob no state.
    assert_eq!(code(init(&unit, started)), ckr::IBM_BLOB_ERROR);
    assert_eq!(
        code(finish(&unit, Operation::Encrypt, blob)),
        ckr::IBM_BLOB_ERROR
    );
}

#[test]
fn rewrap_moves_a_blob_only_once_a_rotation_pinned_the_new_master_key() {
    let mut unit = TestUnit::new(1);
    let (blob, _) = aes_blob(
        &unit,
        &[(cka::VALUE_LEN, AttrValue::Int(32)), on(cka::ENCRYPT)],
    );
    let rewrap = |unit: &TestUnit, blob: &[u8]| {
        execute(
            unit,
            &Call::RewrapKeyBlob {
                blob: blob.to_vec(),
            },
        )
    };
    assert_eq!(code(rewrap(&unit, &blob)), ckr::FUNCTION_FAILED);
    // Committed but not pinned: still refused, new blobs still under the current key.
    unit.new = Some(2);
    assert_eq!(code(rewrap(&unit, &blob)), ckr::FUNCTION_FAILED);
    assert_eq!(
        aes_blob(&unit, &[(cka::VALUE_LEN, AttrValue::Int(16))]).0[0],
        1
    );
    unit.pinned = true;
    let Reply::Blob(moved) = rewrap(&unit, &blob).unwrap() else {
        panic!("no blob")
    };
    assert_eq!(moved[0], 2);
    // After promotion only the new master key remains: the old blob names the key it needs.
    let promoted = TestUnit {
        current: 2,
        new: None,
        pinned: false,
        instance: 1,
    };
    let encrypt = |key: &[u8]| {
        execute(
            &promoted,
            &Call::Single {
                operation: Operation::Encrypt,
                mechanism: mech(ckm::AES_ECB, &[]),
                key: key.to_vec(),
                data: vec![0; 16],
                signature: Vec::new(),
            },
        )
    };
    assert_eq!(output(encrypt(&moved)).len(), 16);
    let refused = encrypt(&blob).unwrap_err();
    assert_eq!(refused.code, ckr::IBM_WKID_MISMATCH);
    assert!(refused.detail.contains("master key 1"));
}

#[test]
fn random_digest_and_mechanism_queries() {
    let unit = TestUnit::new(1);
    let Reply::Random(bytes) = execute(&unit, &Call::GenerateRandom { length: 64 }).unwrap() else {
        panic!("no random")
    };
    assert_eq!(bytes.len(), 64);
    assert_eq!(
        code(execute(&unit, &Call::GenerateRandom { length: 0 })),
        ckr::ARGUMENTS_BAD
    );
    assert_eq!(
        code(execute(&unit, &Call::GenerateRandom { length: 1_000_001 })),
        ckr::ARGUMENTS_BAD
    );
    let Reply::Mechanisms(list) = execute(&unit, &Call::GetMechanismList).unwrap() else {
        panic!("no list")
    };
    for mechanism in &list {
        let Reply::MechanismInfo(_) = execute(
            &unit,
            &Call::GetMechanismInfo {
                mechanism: *mechanism,
            },
        )
        .unwrap() else {
            panic!("no info")
        };
    }
    assert!(list.contains(&ckm::AES_GCM) && list.contains(&ckm::ECDSA_SHA256));
    assert_eq!(
        code(execute(
            &unit,
            &Call::GetMechanismInfo { mechanism: 0x4242 }
        )),
        ckr::MECHANISM_INVALID
    );
    // DigestKey folds a secret key's value into a digest.
    let key = secret_key(&unit, ckk::GENERIC_SECRET, b"abc", &[]);
    let started = state(execute(
        &unit,
        &Call::Init {
            operation: Operation::Digest,
            mechanism: mech(ckm::SHA256, &[]),
            key: Vec::new(),
        },
    ));
    let keyed = state(execute(
        &unit,
        &Call::DigestKey {
            state: started,
            key,
        },
    ));
    let digest = output(execute(
        &unit,
        &Call::Finish {
            operation: Operation::Digest,
            state: keyed,
            data: Vec::new(),
            signature: Vec::new(),
        },
    ));
    assert_eq!(
        digest,
        rotor_ep11::crypto::digest(ckm::SHA256, b"abc").unwrap()
    );
}

//! The GREP11 service over real gRPC and TLS against `rotor dev`: a tonic client built from
//! the same .proto, authenticated with IAM tokens; known answers, both generations of key
//! fields, a request encoded by hand from the reference's field numbers, template enforcement,
//! tampered and oversized input answered with GREP11 errors while the units keep serving.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use prost::Message as _;
use rotor_ep11::consts::{cka, ckm, ckr};
use rotor_server::dev::DevInfo;
use rotor_server::grep11::pb;
use rotor_server::grep11::pb::crypto_client::CryptoClient;
use tonic::transport::{Certificate, Channel, ClientTlsConfig};

/// `google.rpc.Status`, to read the error detail as a GREP11 client does.
#[derive(Clone, PartialEq, prost::Message)]
struct RpcStatus {
    #[prost(int32, tag = "1")]
    code: i32,
    #[prost(string, tag = "2")]
    message: String,
    #[prost(message, repeated, tag = "3")]
    details: Vec<ProtoAny>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct ProtoAny {
    #[prost(string, tag = "1")]
    type_url: String,
    #[prost(bytes = "vec", tag = "2")]
    value: Vec<u8>,
}

/// The one `Grep11Error` detail of a failed call.
fn grep11_error(status: &tonic::Status) -> pb::Grep11Error {
    let body = RpcStatus::decode(status.details()).expect("grpc-status-details-bin");
    assert_eq!(body.details.len(), 1, "{status:?}");
    assert_eq!(
        body.details[0].type_url,
        "type.googleapis.com/grep11.Grep11Error"
    );
    pb::Grep11Error::decode(body.details[0].value.as_slice()).unwrap()
}

fn ck(status: tonic::Status) -> u64 {
    grep11_error(&status).code
}

type Client = CryptoClient<tonic::service::interceptor::InterceptedService<Channel, Bearer>>;

/// Adds `authorization: Bearer <token>` to every call, as IBM's clients do.
#[derive(Clone)]
struct Bearer(Option<String>);

impl tonic::service::Interceptor for Bearer {
    fn call(
        &mut self,
        mut request: tonic::Request<()>,
    ) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some(token) = &self.0 {
            request
                .metadata_mut()
                .insert("authorization", format!("Bearer {token}").parse().unwrap());
        }
        Ok(request)
    }
}

async fn client(info: &DevInfo, api_key: Option<&str>) -> Client {
    let token = match api_key {
        Some(name) => {
            let (info, key) = (info.clone(), info.api_keys[name].clone());
            Some(
                tokio::task::spawn_blocking(move || support::access_token(&info, &key))
                    .await
                    .unwrap(),
            )
        }
        None => None,
    };
    let address = info
        .grep11_address
        .expect("grep11_address in the info file");
    let ca = Certificate::from_pem(std::fs::read(&info.ca_cert).unwrap());
    let channel = Channel::from_shared(format!("https://{address}"))
        .unwrap()
        .tls_config(
            ClientTlsConfig::new()
                .ca_certificate(ca)
                .domain_name("localhost"),
        )
        .unwrap()
        .connect()
        .await
        .unwrap();
    CryptoClient::with_interceptor(channel, Bearer(token)).max_decoding_message_size(64 << 20)
}

fn mech(mechanism: u64, parameter: Option<Vec<u8>>) -> Option<pb::Mechanism> {
    Some(pb::Mechanism {
        mechanism,
        parameter: parameter.map(pb::mechanism::Parameter::ParameterB),
    })
}

fn flag(value: bool) -> pb::AttributeValue {
    pb::AttributeValue {
        one_attr: Some(pb::attribute_value::OneAttr::AttributeTf(value)),
    }
}

fn int(value: i64) -> pb::AttributeValue {
    pb::AttributeValue {
        one_attr: Some(pb::attribute_value::OneAttr::AttributeI(value)),
    }
}

fn bytes(value: &[u8]) -> pb::AttributeValue {
    pb::AttributeValue {
        one_attr: Some(pb::attribute_value::OneAttr::AttributeB(value.to_vec())),
    }
}

const P256: &[u8] = &[0x06, 0x08, 0x2A, 0x86, 0x48, 0xCE, 0x3D, 0x03, 0x01, 0x07];

async fn aes_key(writer: &mut Client, usages: &[u64]) -> pb::GenerateKeyResponse {
    let mut template: std::collections::HashMap<u64, pb::AttributeValue> =
        usages.iter().map(|usage| (*usage, flag(true))).collect();
    template.insert(cka::VALUE_LEN, int(32));
    writer
        .generate_key(pb::GenerateKeyRequest {
            mech: mech(ckm::AES_KEY_GEN, None),
            template,
        })
        .await
        .unwrap()
        .into_inner()
}

/// A varint (protobuf base 128).
fn varint(mut value: u64, out: &mut Vec<u8>) {
    while value >= 0x80 {
        out.push((value as u8) | 0x80);
        value >>= 7;
    }
    out.push(value as u8);
}

/// A length-delimited field.
fn field(number: u64, payload: &[u8], out: &mut Vec<u8>) {
    varint(number << 3 | 2, out);
    varint(payload.len() as u64, out);
    out.extend_from_slice(payload);
}

#[tokio::test(flavor = "multi_thread")]
async fn grep11_calls_over_grpc_against_rotor_dev() {
    let dir = tempfile::tempdir().unwrap();
    let (_dev, info) = tokio::task::block_in_place(|| support::start_dev(dir.path(), &[]));
    let mut reader = client(&info, Some("reader")).await;
    let mut writer = client(&info, Some("writer")).await;

    // No token, or a Reader asking for a Writer's call: refused with the GREP11 code.
    let mut anonymous = client(&info, None).await;
    let refused = anonymous
        .generate_random(pb::GenerateRandomRequest { len: 8 })
        .await
        .unwrap_err();
    assert_eq!(refused.code(), tonic::Code::Unauthenticated);
    assert_eq!(ck(refused), ckr::IBM_GREP11_NOT_AUTHENTICATED);
    let refused = reader
        .generate_key(pb::GenerateKeyRequest {
            mech: mech(ckm::AES_KEY_GEN, None),
            template: [(cka::VALUE_LEN, int(16))].into(),
        })
        .await
        .unwrap_err();
    assert_eq!(refused.code(), tonic::Code::PermissionDenied);

    // Reader: random, digests (FIPS 180-4 "abc"), mechanisms.
    let random = reader
        .generate_random(pb::GenerateRandomRequest { len: 32 })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(random.rnd.len(), 32);
    let digest = reader
        .digest_single(pb::DigestSingleRequest {
            mech: mech(ckm::SHA256, None),
            data: b"abc".to_vec(),
        })
        .await
        .unwrap()
        .into_inner()
        .digest;
    assert_eq!(
        hex::encode(&digest),
        "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    );
    let state = reader
        .digest_init(pb::DigestInitRequest {
            mech: mech(ckm::SHA256, None),
        })
        .await
        .unwrap()
        .into_inner()
        .state;
    let state = reader
        .digest_update(pb::DigestUpdateRequest {
            state,
            data: b"ab".to_vec(),
        })
        .await
        .unwrap()
        .into_inner()
        .state;
    let state = reader
        .digest_update(pb::DigestUpdateRequest {
            state,
            data: b"c".to_vec(),
        })
        .await
        .unwrap()
        .into_inner()
        .state;
    let multi = reader
        .digest_final(pb::DigestFinalRequest { state })
        .await
        .unwrap()
        .into_inner()
        .digest;
    assert_eq!(multi, digest);
    let mechs = reader
        .get_mechanism_list(pb::GetMechanismListRequest {})
        .await
        .unwrap()
        .into_inner()
        .mechs;
    assert!(mechs.contains(&ckm::AES_GCM) && mechs.contains(&ckm::ECDSA_SHA256));
    let info_of = reader
        .get_mechanism_info(pb::GetMechanismInfoRequest {
            mech: ckm::AES_KEY_GEN,
        })
        .await
        .unwrap()
        .into_inner()
        .mech_info
        .unwrap();
    assert_eq!((info_of.min_key_size, info_of.max_key_size), (16, 32));

    // Writer: an AES key, used through the newer KeyBlob field and the older bytes field.
    let aes = aes_key(&mut writer, &[cka::ENCRYPT, cka::DECRYPT]).await;
    assert_eq!(aes.check_sum.len(), 7);
    assert_eq!(&aes.check_sum[3..], &256u32.to_be_bytes());
    assert_eq!(
        aes.key.as_ref().unwrap().key_blobs,
        vec![aes.key_bytes.clone()]
    );
    let iv = vec![9u8; 16];
    let ciphered = writer
        .encrypt_single(pb::EncryptSingleRequest {
            mech: mech(ckm::AES_CBC_PAD, Some(iv.clone())),
            plain: b"GREP11 over rotor".to_vec(),
            key_blob: aes.key.clone(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .ciphered;
    assert_eq!(ciphered.len(), 32);
    let state = writer
        .decrypt_init(pb::DecryptInitRequest {
            mech: mech(ckm::AES_CBC_PAD, Some(iv.clone())),
            key: aes.key_bytes.clone(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .state;
    let update = writer
        .decrypt_update(pb::DecryptUpdateRequest {
            state,
            ciphered: ciphered[..16].to_vec(),
        })
        .await
        .unwrap()
        .into_inner();
    let mut plain = update.plain;
    plain.extend(
        writer
            .decrypt(pb::DecryptRequest {
                state: update.state,
                ciphered: ciphered[16..].to_vec(),
            })
            .await
            .unwrap()
            .into_inner()
            .plain,
    );
    assert_eq!(plain, b"GREP11 over rotor");

    // A request encoded by hand from the reference's field numbers: EncryptSingle with
    // Key=1, Mech=2 {Mechanism=1, ParameterB=2}, Plain=3.
    let mut mechanism = Vec::new();
    varint(1 << 3, &mut mechanism);
    varint(ckm::AES_GCM, &mut mechanism);
    field(2, &[7u8; 12], &mut mechanism);
    let mut raw = Vec::new();
    field(1, &aes.key_bytes, &mut raw);
    field(2, &mechanism, &mut raw);
    field(3, b"by hand", &mut raw);
    let by_hand = pb::EncryptSingleRequest::decode(raw.as_slice()).unwrap();
    let sealed = writer
        .encrypt_single(by_hand)
        .await
        .unwrap()
        .into_inner()
        .ciphered;
    assert_eq!(sealed.len(), 7 + 16);
    let opened = writer
        .decrypt_single(pb::DecryptSingleRequest {
            mech: mech(ckm::AES_GCM, Some(vec![7u8; 12])),
            ciphered: sealed,
            key: aes.key_bytes.clone(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .plain;
    assert_eq!(opened, b"by hand");

    // EC: a P-256 key pair signs; a Reader verifies with the public key.
    let pair = writer
        .generate_key_pair(pb::GenerateKeyPairRequest {
            mech: mech(ckm::EC_KEY_PAIR_GEN, None),
            priv_key_template: [(cka::SIGN, flag(true))].into(),
            pub_key_template: [(cka::EC_PARAMS, bytes(P256)), (cka::VERIFY, flag(true))].into(),
        })
        .await
        .unwrap()
        .into_inner();
    let signature = writer
        .sign_single(pb::SignSingleRequest {
            mech: mech(ckm::ECDSA_SHA256, None),
            data: b"pay 10".to_vec(),
            priv_key_blob: pair.priv_key.clone(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .signature;
    reader
        .verify_single(pb::VerifySingleRequest {
            mech: mech(ckm::ECDSA_SHA256, None),
            data: b"pay 10".to_vec(),
            signature: signature.clone(),
            pub_key: pair.pub_key_bytes.clone(),
            ..Default::default()
        })
        .await
        .unwrap();
    let refused = reader
        .verify_single(pb::VerifySingleRequest {
            mech: mech(ckm::ECDSA_SHA256, None),
            data: b"pay 99".to_vec(),
            signature,
            pub_key: pair.pub_key_bytes.clone(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(ck(refused), ckr::SIGNATURE_INVALID);

    // Template enforcement: the usage flags decide.
    let encrypt_only = aes_key(&mut writer, &[cka::ENCRYPT]).await;
    let refused = writer
        .decrypt_single(pb::DecryptSingleRequest {
            mech: mech(ckm::AES_ECB, None),
            ciphered: vec![0; 16],
            key: encrypt_only.key_bytes.clone(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(ck(refused), ckr::KEY_FUNCTION_NOT_PERMITTED);
    let refused = writer
        .sign_single(pb::SignSingleRequest {
            mech: mech(ckm::ECDSA_SHA256, None),
            data: b"x".to_vec(),
            priv_key: encrypt_only.key_bytes.clone(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(ck(refused), ckr::KEY_TYPE_INCONSISTENT);

    // Attributes: read, changed (a new blob), refused for the value.
    let read = writer
        .get_attribute_value(pb::GetAttributeValueRequest {
            object: encrypt_only.key_bytes.clone(),
            attributes: [(cka::ENCRYPT, flag(false)), (cka::DECRYPT, flag(false))].into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(read.attributes[&cka::ENCRYPT], flag(true));
    assert_eq!(read.attributes_bytes[&cka::DECRYPT], vec![0]);
    let changed = writer
        .set_attribute_value(pb::SetAttributeValueRequest {
            object: encrypt_only.key_bytes.clone(),
            attributes: [(cka::DECRYPT, flag(true))].into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .object;
    writer
        .decrypt_single(pb::DecryptSingleRequest {
            mech: mech(ckm::AES_ECB, None),
            ciphered: vec![0; 16],
            key: changed,
            ..Default::default()
        })
        .await
        .unwrap();
    let refused = writer
        .get_attribute_value(pb::GetAttributeValueRequest {
            object: aes.key_bytes.clone(),
            attributes: [(cka::VALUE, flag(false))].into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(ck(refused), ckr::ATTRIBUTE_SENSITIVE);

    // No rotation has pinned a new master key: nothing to rewrap to.
    let refused = writer
        .rewrap_key_blob(pb::RewrapKeyBlobRequest {
            wrapped_key: aes.key_bytes.clone(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(ck(refused), ckr::FUNCTION_FAILED);

    // Bad input: tampered and truncated blobs, a missing mechanism, wrong parameters,
    // oversized data. Each is a GREP11 error; the units keep serving.
    let mut tampered = aes.key_bytes.clone();
    *tampered.last_mut().unwrap() ^= 1;
    for key in [tampered, aes.key_bytes[..40].to_vec(), Vec::new()] {
        let refused = writer
            .encrypt_single(pb::EncryptSingleRequest {
                mech: mech(ckm::AES_ECB, None),
                plain: vec![0; 16],
                key,
                ..Default::default()
            })
            .await
            .unwrap_err();
        assert_eq!(ck(refused), ckr::IBM_BLOB_ERROR);
    }
    let refused = writer
        .encrypt_single(pb::EncryptSingleRequest {
            plain: vec![0; 16],
            key: aes.key_bytes.clone(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(ck(refused), ckr::MECHANISM_INVALID);
    let refused = writer
        .encrypt_single(pb::EncryptSingleRequest {
            mech: mech(ckm::AES_CBC, Some(vec![0; 3])),
            plain: vec![0; 16],
            key: aes.key_bytes.clone(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(ck(refused), ckr::MECHANISM_PARAM_INVALID);
    let refused = writer
        .encrypt_single(pb::EncryptSingleRequest {
            mech: mech(ckm::AES_GCM, Some(vec![0; 12])),
            plain: vec![0; 3 << 20],
            key: aes.key_bytes.clone(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(ck(refused), ckr::DATA_LEN_RANGE);
    let refused = reader
        .generate_random(pb::GenerateRandomRequest { len: u64::MAX })
        .await
        .unwrap_err();
    assert_eq!(ck(refused), ckr::ARGUMENTS_BAD);
    let refused = writer
        .wrap_key(pb::WrapKeyRequest::default())
        .await
        .unwrap_err();
    assert_eq!(refused.code(), tonic::Code::Unimplemented);
    // Still serving.
    writer
        .encrypt_single(pb::EncryptSingleRequest {
            mech: mech(ckm::AES_ECB, None),
            plain: vec![0; 16],
            key: aes.key_bytes.clone(),
            ..Default::default()
        })
        .await
        .unwrap();
}

/// Signs and verifies with an EC key blob and encrypts and decrypts with an AES key blob, as
/// an application does; answers whether every call succeeded.
async fn use_blobs(writer: &mut Client, ec: &[u8], public: &[u8], aes: &[u8]) -> bool {
    let signature = writer
        .sign_single(pb::SignSingleRequest {
            mech: mech(ckm::ECDSA_SHA256, None),
            data: b"during the rotation".to_vec(),
            priv_key: ec.to_vec(),
            ..Default::default()
        })
        .await;
    let Ok(signature) = signature else {
        return false;
    };
    let verified = writer
        .verify_single(pb::VerifySingleRequest {
            mech: mech(ckm::ECDSA_SHA256, None),
            data: b"during the rotation".to_vec(),
            signature: signature.into_inner().signature,
            pub_key: public.to_vec(),
            ..Default::default()
        })
        .await;
    let ciphered = writer
        .encrypt_single(pb::EncryptSingleRequest {
            mech: mech(ckm::AES_GCM, Some(vec![3; 12])),
            plain: b"record".to_vec(),
            key: aes.to_vec(),
            ..Default::default()
        })
        .await;
    let Ok(ciphered) = ciphered else {
        return false;
    };
    let plain = writer
        .decrypt_single(pb::DecryptSingleRequest {
            mech: mech(ckm::AES_GCM, Some(vec![3; 12])),
            ciphered: ciphered.into_inner().ciphered,
            key: aes.to_vec(),
            ..Default::default()
        })
        .await;
    verified.is_ok() && plain.is_ok_and(|p| p.into_inner().plain == b"record")
}

async fn rewrap(writer: &mut Client, blob: &[u8]) -> Result<Vec<u8>, tonic::Status> {
    writer
        .rewrap_key_blob(pb::RewrapKeyBlobRequest {
            wrapped_key: blob.to_vec(),
            ..Default::default()
        })
        .await
        .map(|reply| reply.into_inner().rewrapped_key)
}

#[tokio::test(flavor = "multi_thread")]
async fn grep11_calls_keep_working_through_a_whole_rotation() {
    let dir = tempfile::tempdir().unwrap();
    let (_dev, info) = tokio::task::block_in_place(|| {
        support::start_dev(dir.path(), &["--units", "2", "--recovery-units", "1"])
    });
    let ws = support::Workstation::of_dev(&info);
    let mut writer = client(&info, Some("writer")).await;
    let pair = writer
        .generate_key_pair(pb::GenerateKeyPairRequest {
            mech: mech(ckm::EC_KEY_PAIR_GEN, None),
            priv_key_template: [(cka::SIGN, flag(true))].into(),
            pub_key_template: [(cka::EC_PARAMS, bytes(P256)), (cka::VERIFY, flag(true))].into(),
        })
        .await
        .unwrap()
        .into_inner();
    let aes = aes_key(&mut writer, &[cka::ENCRYPT, cka::DECRYPT]).await;
    let (old_ec, public, old_aes) = (pair.priv_key_bytes, pair.pub_key_bytes, aes.key_bytes);
    let first_vp = hex::encode(&old_aes[..32]);
    // Nothing pinned yet: nothing to rewrap to.
    assert_eq!(
        ck(rewrap(&mut writer, &old_aes).await.unwrap_err()),
        ckr::FUNCTION_FAILED
    );

    // An application keeps using its blobs while the rotation runs.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let load = {
        let (stop, mut writer) = (stop.clone(), writer.clone());
        let (ec, public, aes) = (old_ec.clone(), public.clone(), old_aes.clone());
        tokio::spawn(async move {
            let (mut calls, mut failures) = (0u32, 0u32);
            while !stop.load(std::sync::atomic::Ordering::Relaxed) || calls == 0 {
                calls += 1;
                if !use_blobs(&mut writer, &ec, &public, &aes).await {
                    failures += 1;
                }
            }
            (calls, failures)
        })
    };
    let held =
        tokio::task::block_in_place(|| ws.json(&["auto", "rotate", "--hold-before-promote"]));
    assert_eq!(held["held_before_promote"], true, "{held}");
    let new_vp = held["to_vp"].as_str().unwrap().to_owned();
    assert_ne!(new_vp, first_vp);

    // Held before promotion: blobs move to the pinned new master key; new blobs go under it.
    let new_ec = rewrap(&mut writer, &old_ec).await.unwrap();
    let new_aes = rewrap(&mut writer, &old_aes).await.unwrap();
    assert_eq!(hex::encode(&new_aes[..32]), new_vp);
    assert_eq!(hex::encode(&new_ec[..32]), new_vp);
    let fresh = aes_key(&mut writer, &[cka::ENCRYPT]).await;
    assert_eq!(hex::encode(&fresh.key_bytes[..32]), new_vp);
    assert!(use_blobs(&mut writer, &new_ec, &public, &new_aes).await);
    assert!(use_blobs(&mut writer, &old_ec, &public, &old_aes).await);

    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let (calls, failures) = load.await.unwrap();
    assert!(calls > 0);
    assert_eq!(
        failures, 0,
        "{failures} of {calls} GREP11 call rounds failed during the rotation"
    );

    // Promotion: the rewrapped blobs work; the old ones name the master key they need.
    let done = tokio::task::block_in_place(|| ws.json(&["auto", "rotate"]));
    assert_eq!(done["to_vp"], new_vp.as_str(), "{done}");
    assert!(use_blobs(&mut writer, &new_ec, &public, &new_aes).await);
    let refused = writer
        .encrypt_single(pb::EncryptSingleRequest {
            mech: mech(ckm::AES_ECB, None),
            plain: vec![0; 16],
            key: old_aes.clone(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    let error = grep11_error(&refused);
    assert_eq!(error.code, ckr::IBM_WKID_MISMATCH);
    assert!(error.detail.contains(&first_vp), "{}", error.detail);
    // After promotion there is nothing to rewrap to until the next rotation pins a key.
    assert_eq!(
        ck(rewrap(&mut writer, &new_aes).await.unwrap_err()),
        ckr::FUNCTION_FAILED
    );
}

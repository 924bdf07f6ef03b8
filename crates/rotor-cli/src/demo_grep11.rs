//! The GREP11 application of `rotor demo`: it makes an EC key pair and an AES key before the
//! rotation, then keeps signing and verifying, encrypting and decrypting with their blobs while
//! the master key rotates; once the rotation holds before promotion it rewraps the blobs
//! (`RewrapKeyBlob`) and goes on with the new ones. Every failed call round is counted.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use anyhow::{Context, Result};
use rotor_ep11::consts::{cka, ckm};
use rotor_server::dev::DevInfo;
use rotor_server::grep11::pb;
use rotor_server::grep11::pb::crypto_client::CryptoClient;
use tokio::sync::RwLock;
use tonic::service::Interceptor;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Certificate, Channel, ClientTlsConfig};

/// The DER of the P-256 curve's OID (`CKA_EC_PARAMS`).
const P256: &[u8] = &[0x06, 0x08, 0x2A, 0x86, 0x48, 0xCE, 0x3D, 0x03, 0x01, 0x07];

/// Adds `authorization: Bearer <token>` to every call, as IBM's GREP11 clients do.
#[derive(Clone)]
struct Bearer(tonic::metadata::MetadataValue<tonic::metadata::Ascii>);

impl Interceptor for Bearer {
    fn call(
        &mut self,
        mut request: tonic::Request<()>,
    ) -> Result<tonic::Request<()>, tonic::Status> {
        request
            .metadata_mut()
            .insert("authorization", self.0.clone());
        Ok(request)
    }
}

type Client = CryptoClient<InterceptedService<Channel, Bearer>>;

/// The application's blobs.
#[derive(Clone)]
struct Blobs {
    private_key: Vec<u8>,
    public_key: Vec<u8>,
    aes: Vec<u8>,
}

/// A GREP11 application using its key blobs.
pub(crate) struct Grep11App {
    client: Client,
    blobs: Arc<RwLock<Blobs>>,
    calls: Arc<AtomicU64>,
    failures: Arc<AtomicU64>,
}

fn mechanism(mechanism: u64, parameter: Option<Vec<u8>>) -> Option<pb::Mechanism> {
    Some(pb::Mechanism {
        mechanism,
        parameter: parameter.map(pb::mechanism::Parameter::ParameterB),
    })
}

fn flag() -> pb::AttributeValue {
    pb::AttributeValue {
        one_attr: Some(pb::attribute_value::OneAttr::AttributeTf(true)),
    }
}

impl Grep11App {
    /// Connects to the dev instance's GREP11 service with `token` and makes the blobs; `None`
    /// when the instance serves no GREP11 (several service replicas).
    pub(crate) async fn start(info: &DevInfo, token: &str) -> Result<Option<Self>> {
        let Some(address) = info.grep11_address else {
            return Ok(None);
        };
        let ca = Certificate::from_pem(std::fs::read(&info.ca_cert)?);
        let channel = Channel::from_shared(format!("https://{address}"))?
            .tls_config(
                ClientTlsConfig::new()
                    .ca_certificate(ca)
                    .domain_name("localhost"),
            )?
            .connect()
            .await
            .context("cannot reach the GREP11 service")?;
        let bearer = Bearer(format!("Bearer {token}").parse()?);
        let mut client = CryptoClient::with_interceptor(channel, bearer);
        let pair = client
            .generate_key_pair(pb::GenerateKeyPairRequest {
                mech: mechanism(ckm::EC_KEY_PAIR_GEN, None),
                priv_key_template: [(cka::SIGN, flag())].into(),
                pub_key_template: [
                    (
                        cka::EC_PARAMS,
                        pb::AttributeValue {
                            one_attr: Some(pb::attribute_value::OneAttr::AttributeB(P256.to_vec())),
                        },
                    ),
                    (cka::VERIFY, flag()),
                ]
                .into(),
            })
            .await
            .context("GREP11 GenerateKeyPair")?
            .into_inner();
        let aes = client
            .generate_key(pb::GenerateKeyRequest {
                mech: mechanism(ckm::AES_KEY_GEN, None),
                template: [
                    (
                        cka::VALUE_LEN,
                        pb::AttributeValue {
                            one_attr: Some(pb::attribute_value::OneAttr::AttributeI(32)),
                        },
                    ),
                    (cka::ENCRYPT, flag()),
                    (cka::DECRYPT, flag()),
                ]
                .into(),
            })
            .await
            .context("GREP11 GenerateKey")?
            .into_inner();
        Ok(Some(Self {
            client,
            blobs: Arc::new(RwLock::new(Blobs {
                private_key: pair.priv_key_bytes,
                public_key: pair.pub_key_bytes,
                aes: aes.key_bytes,
            })),
            calls: Arc::default(),
            failures: Arc::default(),
        }))
    }

    /// Uses the blobs until `stop` is set.
    pub(crate) fn run(&self, stop: &Arc<AtomicBool>) -> tokio::task::JoinHandle<()> {
        let (mut client, blobs, stop) = (
            self.client.clone(),
            Arc::clone(&self.blobs),
            Arc::clone(stop),
        );
        let (calls, failures) = (Arc::clone(&self.calls), Arc::clone(&self.failures));
        tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                let current = blobs.read().await.clone();
                calls.fetch_add(4, Ordering::Relaxed);
                if !use_blobs(&mut client, &current).await {
                    failures.fetch_add(1, Ordering::Relaxed);
                }
            }
        })
    }

    /// `RewrapKeyBlob` for both key blobs; the load goes on with the new ones.
    pub(crate) async fn rewrap(&self) -> Result<()> {
        let mut client = self.client.clone();
        let current = self.blobs.read().await.clone();
        let rewrap = |blob: Vec<u8>| {
            let mut client = client.clone();
            async move {
                client
                    .rewrap_key_blob(pb::RewrapKeyBlobRequest {
                        wrapped_key: blob,
                        ..Default::default()
                    })
                    .await
                    .map(|reply| reply.into_inner().rewrapped_key)
                    .context("GREP11 RewrapKeyBlob")
            }
        };
        let private_key = rewrap(current.private_key).await?;
        let aes = rewrap(current.aes).await?;
        let moved = Blobs {
            private_key,
            public_key: current.public_key,
            aes,
        };
        if !use_blobs(&mut client, &moved).await {
            anyhow::bail!("the rewrapped GREP11 blobs do not work");
        }
        *self.blobs.write().await = moved;
        Ok(())
    }

    /// GREP11 calls made and call rounds that failed.
    pub(crate) fn counts(&self) -> (u64, u64) {
        (
            self.calls.load(Ordering::Relaxed),
            self.failures.load(Ordering::Relaxed),
        )
    }
}

/// One round: sign and verify, encrypt and decrypt; whether all four succeeded.
async fn use_blobs(client: &mut Client, blobs: &Blobs) -> bool {
    let data = b"rotor demo: GREP11 during a master key rotation".to_vec();
    let Ok(signed) = client
        .sign_single(pb::SignSingleRequest {
            mech: mechanism(ckm::ECDSA_SHA256, None),
            data: data.clone(),
            priv_key: blobs.private_key.clone(),
            ..Default::default()
        })
        .await
    else {
        return false;
    };
    let verified = client
        .verify_single(pb::VerifySingleRequest {
            mech: mechanism(ckm::ECDSA_SHA256, None),
            data: data.clone(),
            signature: signed.into_inner().signature,
            pub_key: blobs.public_key.clone(),
            ..Default::default()
        })
        .await
        .is_ok();
    let mut iv = vec![0u8; 12];
    rotor_crypto::fill_random(&mut iv);
    let Ok(ciphered) = client
        .encrypt_single(pb::EncryptSingleRequest {
            mech: mechanism(ckm::AES_GCM, Some(iv.clone())),
            plain: data.clone(),
            key: blobs.aes.clone(),
            ..Default::default()
        })
        .await
    else {
        return false;
    };
    let decrypted = client
        .decrypt_single(pb::DecryptSingleRequest {
            mech: mechanism(ckm::AES_GCM, Some(iv)),
            ciphered: ciphered.into_inner().ciphered,
            key: blobs.aes.clone(),
            ..Default::default()
        })
        .await;
    verified && decrypted.is_ok_and(|reply| reply.into_inner().plain == data)
}

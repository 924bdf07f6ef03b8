//! `grep11.Crypto`: each RPC authenticated, converted and run in a unit of the caller's
//! instance through the unit pool (failover as for every key operation).

use rotor_ep11::consts::ckr;
use rotor_ep11::template::Template;
use rotor_ep11::{Call, Ep11Error, Operation, Reply};
use rotor_proto::error::ErrorCode;
use rotor_proto::keyops::{Grep11Outcome, Grep11Request};
use rotor_util::time::unix_now;
use tonic::metadata::MetadataMap;
use tonic::{Request, Response, Status};
use uuid::Uuid;

use super::convert::{
    attribute_bytes, attribute_values, bad_arguments, bytes_template, key, key_blob, mechanism,
    refused, status, template,
};
use super::pb;
use crate::iam::Role;
use crate::kp::KpState;
use crate::pool::PoolError;

/// The largest gRPC message the service decodes (as HPCS: 64 MB); what a call may carry to a
/// unit is smaller ([`MAX_PAYLOAD`]) and refused with a GREP11 error.
const MAX_MESSAGE: usize = 64 * 1024 * 1024;
/// The most bytes one call carries to a unit: a state and one part of data.
const MAX_PAYLOAD: usize = rotor_ep11::object::MAX_SEALED + rotor_ep11::ops::MAX_DATA + 64 * 1024;

/// `CKR_FUNCTION_NOT_SUPPORTED`, for the calls rotor does not serve yet (docs/GREP11.md).
const FUNCTION_NOT_SUPPORTED: u64 = 0x54;

/// The GREP11 service of the instances this service serves.
#[derive(Clone)]
pub struct Grep11Service {
    kp: KpState,
}

type Answer<T> = Result<Response<T>, Status>;

impl Grep11Service {
    /// The service over the Key Protect state's token verifier and unit pool.
    pub fn new(kp: KpState) -> Self {
        Self { kp }
    }

    /// Its gRPC routes, to serve on their own TLS port (HTTP/2).
    pub fn router(self) -> axum::Router {
        let server = pb::crypto_server::CryptoServer::new(self)
            .max_decoding_message_size(MAX_MESSAGE)
            .max_encoding_message_size(MAX_MESSAGE);
        tonic::service::Routes::new(server).into_axum_router()
    }

    /// The instance a call acts on, once its token grants `needed` there: the one the
    /// `bluemix-instance` metadata names, or else the one instance the API key is bound to.
    fn instance(&self, metadata: &MetadataMap, needed: Role) -> Result<Uuid, Status> {
        let unauthenticated = |detail: String| {
            status(
                tonic::Code::Unauthenticated,
                &Ep11Error::new(ckr::IBM_GREP11_NOT_AUTHENTICATED, detail),
                false,
            )
        };
        let authorization = metadata.get("authorization").and_then(|v| v.to_str().ok());
        let claims = self
            .kp
            .iam
            .verify(authorization, unix_now())
            .map_err(|err| unauthenticated(err.to_string()))?;
        let instance = match metadata.get("bluemix-instance") {
            Some(named) => named
                .to_str()
                .ok()
                .and_then(|text| Uuid::parse_str(text.trim()).ok())
                .ok_or_else(|| bad_arguments("bluemix-instance is not an instance id"))?,
            None => {
                let bound: Vec<Uuid> = claims
                    .instances
                    .iter()
                    .filter_map(|entry| Uuid::parse_str(entry).ok())
                    .collect();
                match bound[..] {
                    [only] if !claims.instances.iter().any(|entry| entry == "*") => only,
                    _ => {
                        return Err(bad_arguments(
                            "the API key is bound to several instances: name one in the bluemix-instance metadata",
                        ));
                    }
                }
            }
        };
        claims.allows(Some(instance), needed).map_err(|err| {
            status(
                tonic::Code::PermissionDenied,
                &Ep11Error::new(ckr::IBM_GREP11_NOT_AUTHENTICATED, err.to_string()),
                false,
            )
        })?;
        if !self.kp.units.contains(instance) {
            return Err(status(
                tonic::Code::NotFound,
                &Ep11Error::new(
                    ckr::ARGUMENTS_BAD,
                    format!("instance {instance} does not exist on this service"),
                ),
                false,
            ));
        }
        Ok(instance)
    }

    /// Runs `call` for an authenticated caller in one of its instance's units.
    async fn run(&self, metadata: &MetadataMap, needed: Role, call: Call) -> Result<Reply, Status> {
        let instance = self.instance(metadata, needed)?;
        if call.payload_len() > MAX_PAYLOAD {
            return Err(refused(&Ep11Error::new(
                ckr::DATA_LEN_RANGE,
                format!(
                    "one call carries at most {} bytes of data; use the multi-part calls",
                    rotor_ep11::ops::MAX_DATA
                ),
            )));
        }
        let request = Grep11Request { instance, call };
        let outcome: Grep11Outcome = self
            .kp
            .units
            .call(instance, &request)
            .await
            .map_err(|err| pool_status(&err))?;
        outcome.0.map_err(|err| refused(&err))
    }

    /// A call rotor does not serve yet; the caller is still authenticated first.
    fn not_supported(&self, metadata: &MetadataMap, call: &str) -> Status {
        if let Err(refusal) = self.instance(metadata, Role::Writer) {
            return refusal;
        }
        status(
            tonic::Code::Unimplemented,
            &Ep11Error::new(
                FUNCTION_NOT_SUPPORTED,
                format!("{call} is not served by rotor yet (docs/GREP11.md lists every call)"),
            ),
            false,
        )
    }

    async fn init(
        &self,
        metadata: &MetadataMap,
        needed: Role,
        operation: Operation,
        mech: Option<pb::Mechanism>,
        key: Vec<u8>,
    ) -> Result<Vec<u8>, Status> {
        let call = Call::Init {
            operation,
            mechanism: mechanism(mech)?,
            key,
        };
        state(self.run(metadata, needed, call).await?)
    }

    async fn update(
        &self,
        metadata: &MetadataMap,
        needed: Role,
        operation: Operation,
        state_in: Vec<u8>,
        data: Vec<u8>,
    ) -> Result<Vec<u8>, Status> {
        let call = Call::Update {
            operation,
            state: state_in,
            data,
        };
        state(self.run(metadata, needed, call).await?)
    }

    async fn finish(
        &self,
        metadata: &MetadataMap,
        needed: Role,
        operation: Operation,
        (state, data, signature): (Vec<u8>, Vec<u8>, Vec<u8>),
    ) -> Result<Vec<u8>, Status> {
        let call = Call::Finish {
            operation,
            state,
            data,
            signature,
        };
        output(self.run(metadata, needed, call).await?)
    }

    async fn single(
        &self,
        metadata: &MetadataMap,
        needed: Role,
        operation: Operation,
        mech: Option<pb::Mechanism>,
        (key, data, signature): (Vec<u8>, Vec<u8>, Vec<u8>),
    ) -> Result<Vec<u8>, Status> {
        let call = Call::Single {
            operation,
            mechanism: mechanism(mech)?,
            key,
            data,
            signature,
        };
        output(self.run(metadata, needed, call).await?)
    }
}

/// The status of a request no unit could answer.
fn pool_status(err: &PoolError) -> Status {
    let (code, ck, retry) = match err {
        PoolError::Refused(body) if body.code == ErrorCode::NoMasterKey => (
            tonic::Code::FailedPrecondition,
            ckr::IBM_WK_NOT_INITIALIZED,
            false,
        ),
        PoolError::Unavailable { .. } | PoolError::UnitFailed { .. } => {
            (tonic::Code::Unavailable, ckr::GENERAL_ERROR, true)
        }
        _ => (tonic::Code::Internal, ckr::GENERAL_ERROR, false),
    };
    status(code, &Ep11Error::new(ck, err.to_string()), retry)
}

fn unexpected() -> Status {
    status(
        tonic::Code::Internal,
        &Ep11Error::new(
            ckr::GENERAL_ERROR,
            "the crypto unit answered another kind of reply",
        ),
        false,
    )
}

fn state(reply: Reply) -> Result<Vec<u8>, Status> {
    match reply {
        Reply::State { state, .. } => Ok(state),
        _ => Err(unexpected()),
    }
}

fn output(reply: Reply) -> Result<Vec<u8>, Status> {
    match reply {
        Reply::Output(bytes) => Ok(bytes.to_vec()),
        _ => Err(unexpected()),
    }
}

fn attributes_of(reply: Reply) -> Result<Template, Status> {
    match reply {
        Reply::Attributes(attributes) => Ok(attributes),
        _ => Err(unexpected()),
    }
}

fn blob_of(reply: Reply) -> Result<Vec<u8>, Status> {
    match reply {
        Reply::Blob(blob) => Ok(blob),
        _ => Err(unexpected()),
    }
}

#[tonic::async_trait]
impl pb::crypto_server::Crypto for Grep11Service {
    async fn generate_random(
        &self,
        request: Request<pb::GenerateRandomRequest>,
    ) -> Answer<pb::GenerateRandomResponse> {
        let call = Call::GenerateRandom {
            length: request.get_ref().len,
        };
        match self.run(request.metadata(), Role::Reader, call).await? {
            Reply::Random(rnd) => Ok(Response::new(pb::GenerateRandomResponse { rnd })),
            _ => Err(unexpected()),
        }
    }

    async fn digest_init(
        &self,
        request: Request<pb::DigestInitRequest>,
    ) -> Answer<pb::DigestInitResponse> {
        let (metadata, _, body) = request.into_parts();
        let state = self
            .init(
                &metadata,
                Role::Reader,
                Operation::Digest,
                body.mech,
                Vec::new(),
            )
            .await?;
        Ok(Response::new(pb::DigestInitResponse { state }))
    }

    async fn digest(&self, request: Request<pb::DigestRequest>) -> Answer<pb::DigestResponse> {
        let (metadata, _, body) = request.into_parts();
        let digest = self
            .finish(
                &metadata,
                Role::Reader,
                Operation::Digest,
                (body.state, body.data, Vec::new()),
            )
            .await?;
        Ok(Response::new(pb::DigestResponse { digest }))
    }

    async fn digest_update(
        &self,
        request: Request<pb::DigestUpdateRequest>,
    ) -> Answer<pb::DigestUpdateResponse> {
        let (metadata, _, body) = request.into_parts();
        let state = self
            .update(
                &metadata,
                Role::Reader,
                Operation::Digest,
                body.state,
                body.data,
            )
            .await?;
        Ok(Response::new(pb::DigestUpdateResponse { state }))
    }

    async fn digest_key(
        &self,
        request: Request<pb::DigestKeyRequest>,
    ) -> Answer<pb::DigestKeyResponse> {
        let (metadata, _, body) = request.into_parts();
        let call = Call::DigestKey {
            state: body.state,
            key: key(body.key, body.key_blob),
        };
        let state = state(self.run(&metadata, Role::Reader, call).await?)?;
        Ok(Response::new(pb::DigestKeyResponse { state }))
    }

    async fn digest_final(
        &self,
        request: Request<pb::DigestFinalRequest>,
    ) -> Answer<pb::DigestFinalResponse> {
        let (metadata, _, body) = request.into_parts();
        let digest = self
            .finish(
                &metadata,
                Role::Reader,
                Operation::Digest,
                (body.state, Vec::new(), Vec::new()),
            )
            .await?;
        Ok(Response::new(pb::DigestFinalResponse { digest }))
    }

    async fn digest_single(
        &self,
        request: Request<pb::DigestSingleRequest>,
    ) -> Answer<pb::DigestSingleResponse> {
        let (metadata, _, body) = request.into_parts();
        let digest = self
            .single(
                &metadata,
                Role::Reader,
                Operation::Digest,
                body.mech,
                (Vec::new(), body.data, Vec::new()),
            )
            .await?;
        Ok(Response::new(pb::DigestSingleResponse { digest }))
    }

    async fn encrypt_init(
        &self,
        request: Request<pb::EncryptInitRequest>,
    ) -> Answer<pb::EncryptInitResponse> {
        let (metadata, _, body) = request.into_parts();
        let state = self
            .init(
                &metadata,
                Role::Writer,
                Operation::Encrypt,
                body.mech,
                key(body.key, body.key_blob),
            )
            .await?;
        Ok(Response::new(pb::EncryptInitResponse { state }))
    }

    async fn decrypt_init(
        &self,
        request: Request<pb::DecryptInitRequest>,
    ) -> Answer<pb::DecryptInitResponse> {
        let (metadata, _, body) = request.into_parts();
        let state = self
            .init(
                &metadata,
                Role::Writer,
                Operation::Decrypt,
                body.mech,
                key(body.key, body.key_blob),
            )
            .await?;
        Ok(Response::new(pb::DecryptInitResponse { state }))
    }

    async fn encrypt_update(
        &self,
        request: Request<pb::EncryptUpdateRequest>,
    ) -> Answer<pb::EncryptUpdateResponse> {
        let (metadata, _, body) = request.into_parts();
        let state = self
            .update(
                &metadata,
                Role::Writer,
                Operation::Encrypt,
                body.state,
                body.plain,
            )
            .await?;
        Ok(Response::new(pb::EncryptUpdateResponse {
            state,
            ciphered: Vec::new(),
        }))
    }

    async fn decrypt_update(
        &self,
        request: Request<pb::DecryptUpdateRequest>,
    ) -> Answer<pb::DecryptUpdateResponse> {
        let (metadata, _, body) = request.into_parts();
        let state = self
            .update(
                &metadata,
                Role::Writer,
                Operation::Decrypt,
                body.state,
                body.ciphered,
            )
            .await?;
        Ok(Response::new(pb::DecryptUpdateResponse {
            state,
            plain: Vec::new(),
        }))
    }

    async fn encrypt(&self, request: Request<pb::EncryptRequest>) -> Answer<pb::EncryptResponse> {
        let (metadata, _, body) = request.into_parts();
        let ciphered = self
            .finish(
                &metadata,
                Role::Writer,
                Operation::Encrypt,
                (body.state, body.plain, Vec::new()),
            )
            .await?;
        Ok(Response::new(pb::EncryptResponse { ciphered }))
    }

    async fn decrypt(&self, request: Request<pb::DecryptRequest>) -> Answer<pb::DecryptResponse> {
        let (metadata, _, body) = request.into_parts();
        let plain = self
            .finish(
                &metadata,
                Role::Writer,
                Operation::Decrypt,
                (body.state, body.ciphered, Vec::new()),
            )
            .await?;
        Ok(Response::new(pb::DecryptResponse { plain }))
    }

    async fn encrypt_final(
        &self,
        request: Request<pb::EncryptFinalRequest>,
    ) -> Answer<pb::EncryptFinalResponse> {
        let (metadata, _, body) = request.into_parts();
        let ciphered = self
            .finish(
                &metadata,
                Role::Writer,
                Operation::Encrypt,
                (body.state, Vec::new(), Vec::new()),
            )
            .await?;
        Ok(Response::new(pb::EncryptFinalResponse { ciphered }))
    }

    async fn decrypt_final(
        &self,
        request: Request<pb::DecryptFinalRequest>,
    ) -> Answer<pb::DecryptFinalResponse> {
        let (metadata, _, body) = request.into_parts();
        let plain = self
            .finish(
                &metadata,
                Role::Writer,
                Operation::Decrypt,
                (body.state, Vec::new(), Vec::new()),
            )
            .await?;
        Ok(Response::new(pb::DecryptFinalResponse { plain }))
    }

    async fn encrypt_single(
        &self,
        request: Request<pb::EncryptSingleRequest>,
    ) -> Answer<pb::EncryptSingleResponse> {
        let (metadata, _, body) = request.into_parts();
        let ciphered = self
            .single(
                &metadata,
                Role::Writer,
                Operation::Encrypt,
                body.mech,
                (key(body.key, body.key_blob), body.plain, Vec::new()),
            )
            .await?;
        Ok(Response::new(pb::EncryptSingleResponse { ciphered }))
    }

    async fn decrypt_single(
        &self,
        request: Request<pb::DecryptSingleRequest>,
    ) -> Answer<pb::DecryptSingleResponse> {
        let (metadata, _, body) = request.into_parts();
        let plain = self
            .single(
                &metadata,
                Role::Writer,
                Operation::Decrypt,
                body.mech,
                (key(body.key, body.key_blob), body.ciphered, Vec::new()),
            )
            .await?;
        Ok(Response::new(pb::DecryptSingleResponse { plain }))
    }

    async fn reencrypt_single(
        &self,
        request: Request<pb::ReencryptSingleRequest>,
    ) -> Answer<pb::ReencryptSingleResponse> {
        Err(self.not_supported(request.metadata(), "ReencryptSingle"))
    }

    async fn sign_init(
        &self,
        request: Request<pb::SignInitRequest>,
    ) -> Answer<pb::SignInitResponse> {
        let (metadata, _, body) = request.into_parts();
        let state = self
            .init(
                &metadata,
                Role::Writer,
                Operation::Sign,
                body.mech,
                key(body.priv_key, body.priv_key_blob),
            )
            .await?;
        Ok(Response::new(pb::SignInitResponse { state }))
    }

    async fn verify_init(
        &self,
        request: Request<pb::VerifyInitRequest>,
    ) -> Answer<pb::VerifyInitResponse> {
        let (metadata, _, body) = request.into_parts();
        let state = self
            .init(
                &metadata,
                Role::Reader,
                Operation::Verify,
                body.mech,
                key(body.pub_key, body.pub_key_blob),
            )
            .await?;
        Ok(Response::new(pb::VerifyInitResponse { state }))
    }

    async fn sign_update(
        &self,
        request: Request<pb::SignUpdateRequest>,
    ) -> Answer<pb::SignUpdateResponse> {
        let (metadata, _, body) = request.into_parts();
        let state = self
            .update(
                &metadata,
                Role::Writer,
                Operation::Sign,
                body.state,
                body.data,
            )
            .await?;
        Ok(Response::new(pb::SignUpdateResponse { state }))
    }

    async fn verify_update(
        &self,
        request: Request<pb::VerifyUpdateRequest>,
    ) -> Answer<pb::VerifyUpdateResponse> {
        let (metadata, _, body) = request.into_parts();
        let state = self
            .update(
                &metadata,
                Role::Reader,
                Operation::Verify,
                body.state,
                body.data,
            )
            .await?;
        Ok(Response::new(pb::VerifyUpdateResponse { state }))
    }

    async fn sign_final(
        &self,
        request: Request<pb::SignFinalRequest>,
    ) -> Answer<pb::SignFinalResponse> {
        let (metadata, _, body) = request.into_parts();
        let signature = self
            .finish(
                &metadata,
                Role::Writer,
                Operation::Sign,
                (body.state, Vec::new(), Vec::new()),
            )
            .await?;
        Ok(Response::new(pb::SignFinalResponse { signature }))
    }

    async fn verify_final(
        &self,
        request: Request<pb::VerifyFinalRequest>,
    ) -> Answer<pb::VerifyFinalResponse> {
        let (metadata, _, body) = request.into_parts();
        self.finish(
            &metadata,
            Role::Reader,
            Operation::Verify,
            (body.state, Vec::new(), body.signature),
        )
        .await?;
        Ok(Response::new(pb::VerifyFinalResponse {}))
    }

    async fn sign(&self, request: Request<pb::SignRequest>) -> Answer<pb::SignResponse> {
        let (metadata, _, body) = request.into_parts();
        let signature = self
            .finish(
                &metadata,
                Role::Writer,
                Operation::Sign,
                (body.state, body.data, Vec::new()),
            )
            .await?;
        Ok(Response::new(pb::SignResponse { signature }))
    }

    async fn verify(&self, request: Request<pb::VerifyRequest>) -> Answer<pb::VerifyResponse> {
        let (metadata, _, body) = request.into_parts();
        self.finish(
            &metadata,
            Role::Reader,
            Operation::Verify,
            (body.state, body.data, body.signature),
        )
        .await?;
        Ok(Response::new(pb::VerifyResponse {}))
    }

    async fn sign_single(
        &self,
        request: Request<pb::SignSingleRequest>,
    ) -> Answer<pb::SignSingleResponse> {
        let (metadata, _, body) = request.into_parts();
        let signature = self
            .single(
                &metadata,
                Role::Writer,
                Operation::Sign,
                body.mech,
                (
                    key(body.priv_key, body.priv_key_blob),
                    body.data,
                    Vec::new(),
                ),
            )
            .await?;
        Ok(Response::new(pb::SignSingleResponse { signature }))
    }

    async fn verify_single(
        &self,
        request: Request<pb::VerifySingleRequest>,
    ) -> Answer<pb::VerifySingleResponse> {
        let (metadata, _, body) = request.into_parts();
        self.single(
            &metadata,
            Role::Reader,
            Operation::Verify,
            body.mech,
            (
                key(body.pub_key, body.pub_key_blob),
                body.data,
                body.signature,
            ),
        )
        .await?;
        Ok(Response::new(pb::VerifySingleResponse {}))
    }

    async fn generate_key(
        &self,
        request: Request<pb::GenerateKeyRequest>,
    ) -> Answer<pb::GenerateKeyResponse> {
        let (metadata, _, body) = request.into_parts();
        let requested = template(body.template)?;
        let call = Call::GenerateKey {
            mechanism: mechanism(body.mech)?,
            template: requested.clone(),
        };
        match self.run(&metadata, Role::Writer, call).await? {
            Reply::Key { blob, checksum } => Ok(Response::new(pb::GenerateKeyResponse {
                key: Some(key_blob(&blob, &requested)),
                key_bytes: blob,
                check_sum: checksum,
            })),
            _ => Err(unexpected()),
        }
    }

    async fn generate_key_pair(
        &self,
        request: Request<pb::GenerateKeyPairRequest>,
    ) -> Answer<pb::GenerateKeyPairResponse> {
        let (metadata, _, body) = request.into_parts();
        let private_template = template(body.priv_key_template)?;
        let public_template = template(body.pub_key_template)?;
        let call = Call::GenerateKeyPair {
            mechanism: mechanism(body.mech)?,
            private_template: private_template.clone(),
            public_template: public_template.clone(),
        };
        match self.run(&metadata, Role::Writer, call).await? {
            Reply::KeyPair {
                private_key,
                public_key,
            } => Ok(Response::new(pb::GenerateKeyPairResponse {
                priv_key: Some(key_blob(&private_key, &private_template)),
                pub_key: Some(key_blob(&public_key, &public_template)),
                priv_key_bytes: private_key,
                pub_key_bytes: public_key,
            })),
            _ => Err(unexpected()),
        }
    }

    async fn wrap_key(&self, request: Request<pb::WrapKeyRequest>) -> Answer<pb::WrapKeyResponse> {
        Err(self.not_supported(request.metadata(), "WrapKey"))
    }

    async fn unwrap_key(
        &self,
        request: Request<pb::UnwrapKeyRequest>,
    ) -> Answer<pb::UnwrapKeyResponse> {
        Err(self.not_supported(request.metadata(), "UnwrapKey"))
    }

    async fn derive_key(
        &self,
        request: Request<pb::DeriveKeyRequest>,
    ) -> Answer<pb::DeriveKeyResponse> {
        Err(self.not_supported(request.metadata(), "DeriveKey"))
    }

    async fn get_mechanism_list(
        &self,
        request: Request<pb::GetMechanismListRequest>,
    ) -> Answer<pb::GetMechanismListResponse> {
        match self
            .run(request.metadata(), Role::Reader, Call::GetMechanismList)
            .await?
        {
            Reply::Mechanisms(mechs) => Ok(Response::new(pb::GetMechanismListResponse { mechs })),
            _ => Err(unexpected()),
        }
    }

    async fn get_mechanism_info(
        &self,
        request: Request<pb::GetMechanismInfoRequest>,
    ) -> Answer<pb::GetMechanismInfoResponse> {
        let call = Call::GetMechanismInfo {
            mechanism: request.get_ref().mech,
        };
        match self.run(request.metadata(), Role::Reader, call).await? {
            Reply::MechanismInfo(info) => Ok(Response::new(pb::GetMechanismInfoResponse {
                mech_info: Some(pb::MechanismInfo {
                    min_key_size: info.min_key_size,
                    max_key_size: info.max_key_size,
                    flags: info.flags,
                }),
            })),
            _ => Err(unexpected()),
        }
    }

    async fn get_attribute_value(
        &self,
        request: Request<pb::GetAttributeValueRequest>,
    ) -> Answer<pb::GetAttributeValueResponse> {
        let (metadata, _, body) = request.into_parts();
        let mut attributes: Vec<u64> = body
            .attributes
            .keys()
            .chain(body.attributes_bytes.keys())
            .copied()
            .collect();
        attributes.sort_unstable();
        attributes.dedup();
        let call = Call::GetAttributeValue {
            object: body.object,
            attributes,
        };
        let read = attributes_of(self.run(&metadata, Role::Writer, call).await?)?;
        Ok(Response::new(pb::GetAttributeValueResponse {
            attributes_bytes: attribute_bytes(&read),
            attributes: attribute_values(&read),
        }))
    }

    async fn set_attribute_value(
        &self,
        request: Request<pb::SetAttributeValueRequest>,
    ) -> Answer<pb::SetAttributeValueResponse> {
        let (metadata, _, body) = request.into_parts();
        let mut changes = bytes_template(body.attributes_bytes);
        changes.extend(template(body.attributes)?);
        let call = Call::SetAttributeValue {
            object: body.object,
            attributes: changes,
        };
        let object = blob_of(self.run(&metadata, Role::Writer, call).await?)?;
        Ok(Response::new(pb::SetAttributeValueResponse { object }))
    }

    async fn login(&self, request: Request<pb::LoginRequest>) -> Answer<pb::LoginResponse> {
        Err(self.not_supported(request.metadata(), "Login"))
    }

    async fn logout(&self, request: Request<pb::LogoutRequest>) -> Answer<pb::LogoutResponse> {
        Err(self.not_supported(request.metadata(), "Logout"))
    }

    async fn rewrap_key_blob(
        &self,
        request: Request<pb::RewrapKeyBlobRequest>,
    ) -> Answer<pb::RewrapKeyBlobResponse> {
        let (metadata, _, body) = request.into_parts();
        let blob = key(body.wrapped_key, body.wrapped_key_blob);
        let call = Call::RewrapKeyBlob { blob };
        let rewrapped = blob_of(self.run(&metadata, Role::Writer, call).await?)?;
        Ok(Response::new(pb::RewrapKeyBlobResponse {
            rewrapped_key_blob: Some(key_blob(&rewrapped, &Template::new())),
            rewrapped_key: rewrapped,
        }))
    }
}

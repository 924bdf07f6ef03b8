//! The GREP11 service (`grep11.Crypto`, docs/GREP11.md): IBM's Enterprise PKCS #11 over gRPC,
//! wire-compatible with its published protobuf. Each call is authenticated from its
//! `authorization: Bearer` metadata, converted to a [`rotor_ep11::Call`] and sent through the
//! unit pool to one of the instance's units, which opens the blobs and runs it: the service
//! never sees key material and keeps nothing between calls.
//!
//! `service` holds [`Grep11Service`] and what every call shares (authentication, the unit round
//! trip, the call shapes); the handlers are in one file per call family (`info`, `digest`,
//! `cipher`, `sign`, `keys`, `rewrap`), and the `grep11.Crypto` trait impl below dispatches to
//! them.

use tonic::Request;

mod cipher;
mod convert;
mod digest;
mod info;
mod keys;
mod rewrap;
mod service;
mod sign;

use service::Answer;
pub use service::Grep11Service;

/// The code generated from `proto/grep11.proto`.
#[allow(
    missing_docs,
    unreachable_pub,
    unused_qualifications,
    clippy::all,
    clippy::pedantic
)]
pub mod pb {
    tonic::include_proto!("grep11");
}

#[tonic::async_trait]
impl pb::crypto_server::Crypto for Grep11Service {
    async fn generate_random(
        &self,
        request: Request<pb::GenerateRandomRequest>,
    ) -> Answer<pb::GenerateRandomResponse> {
        info::generate_random(self, request).await
    }

    async fn digest_init(
        &self,
        request: Request<pb::DigestInitRequest>,
    ) -> Answer<pb::DigestInitResponse> {
        digest::digest_init(self, request).await
    }

    async fn digest(&self, request: Request<pb::DigestRequest>) -> Answer<pb::DigestResponse> {
        digest::digest(self, request).await
    }

    async fn digest_update(
        &self,
        request: Request<pb::DigestUpdateRequest>,
    ) -> Answer<pb::DigestUpdateResponse> {
        digest::digest_update(self, request).await
    }

    async fn digest_key(
        &self,
        request: Request<pb::DigestKeyRequest>,
    ) -> Answer<pb::DigestKeyResponse> {
        digest::digest_key(self, request).await
    }

    async fn digest_final(
        &self,
        request: Request<pb::DigestFinalRequest>,
    ) -> Answer<pb::DigestFinalResponse> {
        digest::digest_final(self, request).await
    }

    async fn digest_single(
        &self,
        request: Request<pb::DigestSingleRequest>,
    ) -> Answer<pb::DigestSingleResponse> {
        digest::digest_single(self, request).await
    }

    async fn encrypt_init(
        &self,
        request: Request<pb::EncryptInitRequest>,
    ) -> Answer<pb::EncryptInitResponse> {
        cipher::encrypt_init(self, request).await
    }

    async fn decrypt_init(
        &self,
        request: Request<pb::DecryptInitRequest>,
    ) -> Answer<pb::DecryptInitResponse> {
        cipher::decrypt_init(self, request).await
    }

    async fn encrypt_update(
        &self,
        request: Request<pb::EncryptUpdateRequest>,
    ) -> Answer<pb::EncryptUpdateResponse> {
        cipher::encrypt_update(self, request).await
    }

    async fn decrypt_update(
        &self,
        request: Request<pb::DecryptUpdateRequest>,
    ) -> Answer<pb::DecryptUpdateResponse> {
        cipher::decrypt_update(self, request).await
    }

    async fn encrypt(&self, request: Request<pb::EncryptRequest>) -> Answer<pb::EncryptResponse> {
        cipher::encrypt(self, request).await
    }

    async fn decrypt(&self, request: Request<pb::DecryptRequest>) -> Answer<pb::DecryptResponse> {
        cipher::decrypt(self, request).await
    }

    async fn encrypt_final(
        &self,
        request: Request<pb::EncryptFinalRequest>,
    ) -> Answer<pb::EncryptFinalResponse> {
        cipher::encrypt_final(self, request).await
    }

    async fn decrypt_final(
        &self,
        request: Request<pb::DecryptFinalRequest>,
    ) -> Answer<pb::DecryptFinalResponse> {
        cipher::decrypt_final(self, request).await
    }

    async fn encrypt_single(
        &self,
        request: Request<pb::EncryptSingleRequest>,
    ) -> Answer<pb::EncryptSingleResponse> {
        cipher::encrypt_single(self, request).await
    }

    async fn decrypt_single(
        &self,
        request: Request<pb::DecryptSingleRequest>,
    ) -> Answer<pb::DecryptSingleResponse> {
        cipher::decrypt_single(self, request).await
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
        sign::sign_init(self, request).await
    }

    async fn verify_init(
        &self,
        request: Request<pb::VerifyInitRequest>,
    ) -> Answer<pb::VerifyInitResponse> {
        sign::verify_init(self, request).await
    }

    async fn sign_update(
        &self,
        request: Request<pb::SignUpdateRequest>,
    ) -> Answer<pb::SignUpdateResponse> {
        sign::sign_update(self, request).await
    }

    async fn verify_update(
        &self,
        request: Request<pb::VerifyUpdateRequest>,
    ) -> Answer<pb::VerifyUpdateResponse> {
        sign::verify_update(self, request).await
    }

    async fn sign_final(
        &self,
        request: Request<pb::SignFinalRequest>,
    ) -> Answer<pb::SignFinalResponse> {
        sign::sign_final(self, request).await
    }

    async fn verify_final(
        &self,
        request: Request<pb::VerifyFinalRequest>,
    ) -> Answer<pb::VerifyFinalResponse> {
        sign::verify_final(self, request).await
    }

    async fn sign(&self, request: Request<pb::SignRequest>) -> Answer<pb::SignResponse> {
        sign::sign(self, request).await
    }

    async fn verify(&self, request: Request<pb::VerifyRequest>) -> Answer<pb::VerifyResponse> {
        sign::verify(self, request).await
    }

    async fn sign_single(
        &self,
        request: Request<pb::SignSingleRequest>,
    ) -> Answer<pb::SignSingleResponse> {
        sign::sign_single(self, request).await
    }

    async fn verify_single(
        &self,
        request: Request<pb::VerifySingleRequest>,
    ) -> Answer<pb::VerifySingleResponse> {
        sign::verify_single(self, request).await
    }

    async fn generate_key(
        &self,
        request: Request<pb::GenerateKeyRequest>,
    ) -> Answer<pb::GenerateKeyResponse> {
        keys::generate_key(self, request).await
    }

    async fn generate_key_pair(
        &self,
        request: Request<pb::GenerateKeyPairRequest>,
    ) -> Answer<pb::GenerateKeyPairResponse> {
        keys::generate_key_pair(self, request).await
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
        info::get_mechanism_list(self, request).await
    }

    async fn get_mechanism_info(
        &self,
        request: Request<pb::GetMechanismInfoRequest>,
    ) -> Answer<pb::GetMechanismInfoResponse> {
        info::get_mechanism_info(self, request).await
    }

    async fn get_attribute_value(
        &self,
        request: Request<pb::GetAttributeValueRequest>,
    ) -> Answer<pb::GetAttributeValueResponse> {
        keys::get_attribute_value(self, request).await
    }

    async fn set_attribute_value(
        &self,
        request: Request<pb::SetAttributeValueRequest>,
    ) -> Answer<pb::SetAttributeValueResponse> {
        keys::set_attribute_value(self, request).await
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
        rewrap::rewrap_key_blob(self, request).await
    }
}

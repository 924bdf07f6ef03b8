//! The encrypt and decrypt calls: init, update, final, and in one call.

use rotor_ep11::Operation;
use tonic::{Request, Response};

use super::convert::key;
use super::pb;
use super::service::{Answer, Grep11Service};
use crate::iam::Role;

pub(super) async fn encrypt_init(
    service: &Grep11Service,
    request: Request<pb::EncryptInitRequest>,
) -> Answer<pb::EncryptInitResponse> {
    let (metadata, _, body) = request.into_parts();
    let state = service
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

pub(super) async fn decrypt_init(
    service: &Grep11Service,
    request: Request<pb::DecryptInitRequest>,
) -> Answer<pb::DecryptInitResponse> {
    let (metadata, _, body) = request.into_parts();
    let state = service
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

pub(super) async fn encrypt_update(
    service: &Grep11Service,
    request: Request<pb::EncryptUpdateRequest>,
) -> Answer<pb::EncryptUpdateResponse> {
    let (metadata, _, body) = request.into_parts();
    let state = service
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

pub(super) async fn decrypt_update(
    service: &Grep11Service,
    request: Request<pb::DecryptUpdateRequest>,
) -> Answer<pb::DecryptUpdateResponse> {
    let (metadata, _, body) = request.into_parts();
    let state = service
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

pub(super) async fn encrypt(
    service: &Grep11Service,
    request: Request<pb::EncryptRequest>,
) -> Answer<pb::EncryptResponse> {
    let (metadata, _, body) = request.into_parts();
    let ciphered = service
        .finish(
            &metadata,
            Role::Writer,
            Operation::Encrypt,
            (body.state, body.plain, Vec::new()),
        )
        .await?;
    Ok(Response::new(pb::EncryptResponse { ciphered }))
}

pub(super) async fn decrypt(
    service: &Grep11Service,
    request: Request<pb::DecryptRequest>,
) -> Answer<pb::DecryptResponse> {
    let (metadata, _, body) = request.into_parts();
    let plain = service
        .finish(
            &metadata,
            Role::Writer,
            Operation::Decrypt,
            (body.state, body.ciphered, Vec::new()),
        )
        .await?;
    Ok(Response::new(pb::DecryptResponse { plain }))
}

pub(super) async fn encrypt_final(
    service: &Grep11Service,
    request: Request<pb::EncryptFinalRequest>,
) -> Answer<pb::EncryptFinalResponse> {
    let (metadata, _, body) = request.into_parts();
    let ciphered = service
        .finish(
            &metadata,
            Role::Writer,
            Operation::Encrypt,
            (body.state, Vec::new(), Vec::new()),
        )
        .await?;
    Ok(Response::new(pb::EncryptFinalResponse { ciphered }))
}

pub(super) async fn decrypt_final(
    service: &Grep11Service,
    request: Request<pb::DecryptFinalRequest>,
) -> Answer<pb::DecryptFinalResponse> {
    let (metadata, _, body) = request.into_parts();
    let plain = service
        .finish(
            &metadata,
            Role::Writer,
            Operation::Decrypt,
            (body.state, Vec::new(), Vec::new()),
        )
        .await?;
    Ok(Response::new(pb::DecryptFinalResponse { plain }))
}

pub(super) async fn encrypt_single(
    service: &Grep11Service,
    request: Request<pb::EncryptSingleRequest>,
) -> Answer<pb::EncryptSingleResponse> {
    let (metadata, _, body) = request.into_parts();
    let ciphered = service
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

pub(super) async fn decrypt_single(
    service: &Grep11Service,
    request: Request<pb::DecryptSingleRequest>,
) -> Answer<pb::DecryptSingleResponse> {
    let (metadata, _, body) = request.into_parts();
    let plain = service
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

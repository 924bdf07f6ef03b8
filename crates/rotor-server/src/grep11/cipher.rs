//! The encrypt and decrypt calls: init, update, final, and in one call.

use rotor_ep11::Operation;
use tonic::Request;

use super::convert::key;
use super::pb;
use super::service::{Answer, Grep11Service, finish, init, output, single, state, update};
use crate::iam::Role;

pub(super) async fn encrypt_init(
    service: &Grep11Service,
    request: Request<pb::EncryptInitRequest>,
) -> Answer<pb::EncryptInitResponse> {
    let (metadata, _, body) = request.into_parts();
    let call = init(Operation::Encrypt, body.mech, key(body.key, body.key_blob))?;
    let response = |reply| state(reply).map(|state| pb::EncryptInitResponse { state });
    service.serve(&metadata, Role::Writer, call, response).await
}

pub(super) async fn decrypt_init(
    service: &Grep11Service,
    request: Request<pb::DecryptInitRequest>,
) -> Answer<pb::DecryptInitResponse> {
    let (metadata, _, body) = request.into_parts();
    let call = init(Operation::Decrypt, body.mech, key(body.key, body.key_blob))?;
    let response = |reply| state(reply).map(|state| pb::DecryptInitResponse { state });
    service.serve(&metadata, Role::Writer, call, response).await
}

pub(super) async fn encrypt_update(
    service: &Grep11Service,
    request: Request<pb::EncryptUpdateRequest>,
) -> Answer<pb::EncryptUpdateResponse> {
    let (metadata, _, body) = request.into_parts();
    let call = update(Operation::Encrypt, body.state, body.plain);
    let response = |reply| {
        state(reply).map(|state| pb::EncryptUpdateResponse {
            state,
            ciphered: Vec::new(),
        })
    };
    service.serve(&metadata, Role::Writer, call, response).await
}

pub(super) async fn decrypt_update(
    service: &Grep11Service,
    request: Request<pb::DecryptUpdateRequest>,
) -> Answer<pb::DecryptUpdateResponse> {
    let (metadata, _, body) = request.into_parts();
    let call = update(Operation::Decrypt, body.state, body.ciphered);
    let response = |reply| {
        state(reply).map(|state| pb::DecryptUpdateResponse {
            state,
            plain: Vec::new(),
        })
    };
    service.serve(&metadata, Role::Writer, call, response).await
}

pub(super) async fn encrypt(
    service: &Grep11Service,
    request: Request<pb::EncryptRequest>,
) -> Answer<pb::EncryptResponse> {
    let (metadata, _, body) = request.into_parts();
    let call = finish(Operation::Encrypt, (body.state, body.plain, Vec::new()));
    let response = |reply| output(reply).map(|ciphered| pb::EncryptResponse { ciphered });
    service.serve(&metadata, Role::Writer, call, response).await
}

pub(super) async fn decrypt(
    service: &Grep11Service,
    request: Request<pb::DecryptRequest>,
) -> Answer<pb::DecryptResponse> {
    let (metadata, _, body) = request.into_parts();
    let call = finish(Operation::Decrypt, (body.state, body.ciphered, Vec::new()));
    let response = |reply| output(reply).map(|plain| pb::DecryptResponse { plain });
    service.serve(&metadata, Role::Writer, call, response).await
}

pub(super) async fn encrypt_final(
    service: &Grep11Service,
    request: Request<pb::EncryptFinalRequest>,
) -> Answer<pb::EncryptFinalResponse> {
    let (metadata, _, body) = request.into_parts();
    let call = finish(Operation::Encrypt, (body.state, Vec::new(), Vec::new()));
    let response = |reply| output(reply).map(|ciphered| pb::EncryptFinalResponse { ciphered });
    service.serve(&metadata, Role::Writer, call, response).await
}

pub(super) async fn decrypt_final(
    service: &Grep11Service,
    request: Request<pb::DecryptFinalRequest>,
) -> Answer<pb::DecryptFinalResponse> {
    let (metadata, _, body) = request.into_parts();
    let call = finish(Operation::Decrypt, (body.state, Vec::new(), Vec::new()));
    let response = |reply| output(reply).map(|plain| pb::DecryptFinalResponse { plain });
    service.serve(&metadata, Role::Writer, call, response).await
}

pub(super) async fn encrypt_single(
    service: &Grep11Service,
    request: Request<pb::EncryptSingleRequest>,
) -> Answer<pb::EncryptSingleResponse> {
    let (metadata, _, body) = request.into_parts();
    let call = single(
        Operation::Encrypt,
        body.mech,
        (key(body.key, body.key_blob), body.plain, Vec::new()),
    )?;
    let response = |reply| output(reply).map(|ciphered| pb::EncryptSingleResponse { ciphered });
    service.serve(&metadata, Role::Writer, call, response).await
}

pub(super) async fn decrypt_single(
    service: &Grep11Service,
    request: Request<pb::DecryptSingleRequest>,
) -> Answer<pb::DecryptSingleResponse> {
    let (metadata, _, body) = request.into_parts();
    let call = single(
        Operation::Decrypt,
        body.mech,
        (key(body.key, body.key_blob), body.ciphered, Vec::new()),
    )?;
    let response = |reply| output(reply).map(|plain| pb::DecryptSingleResponse { plain });
    service.serve(&metadata, Role::Writer, call, response).await
}

//! The sign and verify calls: init, update, final, and in one call.

use rotor_ep11::Operation;
use tonic::Request;

use super::convert::key;
use super::pb;
use super::service::{Answer, Grep11Service, finish, init, output, single, state, update};
use crate::iam::Role;

pub(super) async fn sign_init(
    service: &Grep11Service,
    request: Request<pb::SignInitRequest>,
) -> Answer<pb::SignInitResponse> {
    let (metadata, _, body) = request.into_parts();
    let call = init(
        Operation::Sign,
        body.mech,
        key(body.priv_key, body.priv_key_blob),
    )?;
    let response = |reply| state(reply).map(|state| pb::SignInitResponse { state });
    service.serve(&metadata, Role::Writer, call, response).await
}

pub(super) async fn verify_init(
    service: &Grep11Service,
    request: Request<pb::VerifyInitRequest>,
) -> Answer<pb::VerifyInitResponse> {
    let (metadata, _, body) = request.into_parts();
    let call = init(
        Operation::Verify,
        body.mech,
        key(body.pub_key, body.pub_key_blob),
    )?;
    let response = |reply| state(reply).map(|state| pb::VerifyInitResponse { state });
    service.serve(&metadata, Role::Reader, call, response).await
}

pub(super) async fn sign_update(
    service: &Grep11Service,
    request: Request<pb::SignUpdateRequest>,
) -> Answer<pb::SignUpdateResponse> {
    let (metadata, _, body) = request.into_parts();
    let call = update(Operation::Sign, body.state, body.data);
    let response = |reply| state(reply).map(|state| pb::SignUpdateResponse { state });
    service.serve(&metadata, Role::Writer, call, response).await
}

pub(super) async fn verify_update(
    service: &Grep11Service,
    request: Request<pb::VerifyUpdateRequest>,
) -> Answer<pb::VerifyUpdateResponse> {
    let (metadata, _, body) = request.into_parts();
    let call = update(Operation::Verify, body.state, body.data);
    let response = |reply| state(reply).map(|state| pb::VerifyUpdateResponse { state });
    service.serve(&metadata, Role::Reader, call, response).await
}

pub(super) async fn sign_final(
    service: &Grep11Service,
    request: Request<pb::SignFinalRequest>,
) -> Answer<pb::SignFinalResponse> {
    let (metadata, _, body) = request.into_parts();
    let call = finish(Operation::Sign, (body.state, Vec::new(), Vec::new()));
    let response = |reply| output(reply).map(|signature| pb::SignFinalResponse { signature });
    service.serve(&metadata, Role::Writer, call, response).await
}

pub(super) async fn verify_final(
    service: &Grep11Service,
    request: Request<pb::VerifyFinalRequest>,
) -> Answer<pb::VerifyFinalResponse> {
    let (metadata, _, body) = request.into_parts();
    let call = finish(Operation::Verify, (body.state, Vec::new(), body.signature));
    let response = |reply| output(reply).map(|_| pb::VerifyFinalResponse {});
    service.serve(&metadata, Role::Reader, call, response).await
}

pub(super) async fn sign(
    service: &Grep11Service,
    request: Request<pb::SignRequest>,
) -> Answer<pb::SignResponse> {
    let (metadata, _, body) = request.into_parts();
    let call = finish(Operation::Sign, (body.state, body.data, Vec::new()));
    let response = |reply| output(reply).map(|signature| pb::SignResponse { signature });
    service.serve(&metadata, Role::Writer, call, response).await
}

pub(super) async fn verify(
    service: &Grep11Service,
    request: Request<pb::VerifyRequest>,
) -> Answer<pb::VerifyResponse> {
    let (metadata, _, body) = request.into_parts();
    let call = finish(Operation::Verify, (body.state, body.data, body.signature));
    let response = |reply| output(reply).map(|_| pb::VerifyResponse {});
    service.serve(&metadata, Role::Reader, call, response).await
}

pub(super) async fn sign_single(
    service: &Grep11Service,
    request: Request<pb::SignSingleRequest>,
) -> Answer<pb::SignSingleResponse> {
    let (metadata, _, body) = request.into_parts();
    let call = single(
        Operation::Sign,
        body.mech,
        (
            key(body.priv_key, body.priv_key_blob),
            body.data,
            Vec::new(),
        ),
    )?;
    let response = |reply| output(reply).map(|signature| pb::SignSingleResponse { signature });
    service.serve(&metadata, Role::Writer, call, response).await
}

pub(super) async fn verify_single(
    service: &Grep11Service,
    request: Request<pb::VerifySingleRequest>,
) -> Answer<pb::VerifySingleResponse> {
    let (metadata, _, body) = request.into_parts();
    let call = single(
        Operation::Verify,
        body.mech,
        (
            key(body.pub_key, body.pub_key_blob),
            body.data,
            body.signature,
        ),
    )?;
    let response = |reply| output(reply).map(|_| pb::VerifySingleResponse {});
    service.serve(&metadata, Role::Reader, call, response).await
}

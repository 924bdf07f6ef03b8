//! The digest calls: init, update, digest of a key, final, and in one call.

use rotor_ep11::{Call, Operation};
use tonic::Request;

use super::convert::key;
use super::pb;
use super::service::{Answer, Grep11Service, finish, init, output, single, state, update};
use crate::iam::Role;

pub(super) async fn digest_init(
    service: &Grep11Service,
    request: Request<pb::DigestInitRequest>,
) -> Answer<pb::DigestInitResponse> {
    let (metadata, _, body) = request.into_parts();
    let call = init(Operation::Digest, body.mech, Vec::new())?;
    let response = |reply| state(reply).map(|state| pb::DigestInitResponse { state });
    service.serve(&metadata, Role::Reader, call, response).await
}

pub(super) async fn digest(
    service: &Grep11Service,
    request: Request<pb::DigestRequest>,
) -> Answer<pb::DigestResponse> {
    let (metadata, _, body) = request.into_parts();
    let call = finish(Operation::Digest, (body.state, body.data, Vec::new()));
    let response = |reply| output(reply).map(|digest| pb::DigestResponse { digest });
    service.serve(&metadata, Role::Reader, call, response).await
}

pub(super) async fn digest_update(
    service: &Grep11Service,
    request: Request<pb::DigestUpdateRequest>,
) -> Answer<pb::DigestUpdateResponse> {
    let (metadata, _, body) = request.into_parts();
    let call = update(Operation::Digest, body.state, body.data);
    let response = |reply| state(reply).map(|state| pb::DigestUpdateResponse { state });
    service.serve(&metadata, Role::Reader, call, response).await
}

pub(super) async fn digest_key(
    service: &Grep11Service,
    request: Request<pb::DigestKeyRequest>,
) -> Answer<pb::DigestKeyResponse> {
    let (metadata, _, body) = request.into_parts();
    let call = Call::DigestKey {
        state: body.state,
        key: key(body.key, body.key_blob),
    };
    let response = |reply| state(reply).map(|state| pb::DigestKeyResponse { state });
    service.serve(&metadata, Role::Reader, call, response).await
}

pub(super) async fn digest_final(
    service: &Grep11Service,
    request: Request<pb::DigestFinalRequest>,
) -> Answer<pb::DigestFinalResponse> {
    let (metadata, _, body) = request.into_parts();
    let call = finish(Operation::Digest, (body.state, Vec::new(), Vec::new()));
    let response = |reply| output(reply).map(|digest| pb::DigestFinalResponse { digest });
    service.serve(&metadata, Role::Reader, call, response).await
}

pub(super) async fn digest_single(
    service: &Grep11Service,
    request: Request<pb::DigestSingleRequest>,
) -> Answer<pb::DigestSingleResponse> {
    let (metadata, _, body) = request.into_parts();
    let call = single(
        Operation::Digest,
        body.mech,
        (Vec::new(), body.data, Vec::new()),
    )?;
    let response = |reply| output(reply).map(|digest| pb::DigestSingleResponse { digest });
    service.serve(&metadata, Role::Reader, call, response).await
}

//! The digest calls: init, update, digest of a key, final, and in one call.

use rotor_ep11::{Call, Operation};
use tonic::{Request, Response};

use super::convert::key;
use super::pb;
use super::service::{Answer, Grep11Service, state};
use crate::iam::Role;

pub(super) async fn digest_init(
    service: &Grep11Service,
    request: Request<pb::DigestInitRequest>,
) -> Answer<pb::DigestInitResponse> {
    let (metadata, _, body) = request.into_parts();
    let state = service
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

pub(super) async fn digest(
    service: &Grep11Service,
    request: Request<pb::DigestRequest>,
) -> Answer<pb::DigestResponse> {
    let (metadata, _, body) = request.into_parts();
    let digest = service
        .finish(
            &metadata,
            Role::Reader,
            Operation::Digest,
            (body.state, body.data, Vec::new()),
        )
        .await?;
    Ok(Response::new(pb::DigestResponse { digest }))
}

pub(super) async fn digest_update(
    service: &Grep11Service,
    request: Request<pb::DigestUpdateRequest>,
) -> Answer<pb::DigestUpdateResponse> {
    let (metadata, _, body) = request.into_parts();
    let state = service
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

pub(super) async fn digest_key(
    service: &Grep11Service,
    request: Request<pb::DigestKeyRequest>,
) -> Answer<pb::DigestKeyResponse> {
    let (metadata, _, body) = request.into_parts();
    let call = Call::DigestKey {
        state: body.state,
        key: key(body.key, body.key_blob),
    };
    let state = state(service.run(&metadata, Role::Reader, call).await?)?;
    Ok(Response::new(pb::DigestKeyResponse { state }))
}

pub(super) async fn digest_final(
    service: &Grep11Service,
    request: Request<pb::DigestFinalRequest>,
) -> Answer<pb::DigestFinalResponse> {
    let (metadata, _, body) = request.into_parts();
    let digest = service
        .finish(
            &metadata,
            Role::Reader,
            Operation::Digest,
            (body.state, Vec::new(), Vec::new()),
        )
        .await?;
    Ok(Response::new(pb::DigestFinalResponse { digest }))
}

pub(super) async fn digest_single(
    service: &Grep11Service,
    request: Request<pb::DigestSingleRequest>,
) -> Answer<pb::DigestSingleResponse> {
    let (metadata, _, body) = request.into_parts();
    let digest = service
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

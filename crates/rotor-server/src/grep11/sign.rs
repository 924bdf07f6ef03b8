//! The sign and verify calls: init, update, final, and in one call.

use rotor_ep11::Operation;
use tonic::{Request, Response};

use super::convert::key;
use super::pb;
use super::service::{Answer, Grep11Service};
use crate::iam::Role;

pub(super) async fn sign_init(
    service: &Grep11Service,
    request: Request<pb::SignInitRequest>,
) -> Answer<pb::SignInitResponse> {
    let (metadata, _, body) = request.into_parts();
    let state = service
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

pub(super) async fn verify_init(
    service: &Grep11Service,
    request: Request<pb::VerifyInitRequest>,
) -> Answer<pb::VerifyInitResponse> {
    let (metadata, _, body) = request.into_parts();
    let state = service
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

pub(super) async fn sign_update(
    service: &Grep11Service,
    request: Request<pb::SignUpdateRequest>,
) -> Answer<pb::SignUpdateResponse> {
    let (metadata, _, body) = request.into_parts();
    let state = service
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

pub(super) async fn verify_update(
    service: &Grep11Service,
    request: Request<pb::VerifyUpdateRequest>,
) -> Answer<pb::VerifyUpdateResponse> {
    let (metadata, _, body) = request.into_parts();
    let state = service
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

pub(super) async fn sign_final(
    service: &Grep11Service,
    request: Request<pb::SignFinalRequest>,
) -> Answer<pb::SignFinalResponse> {
    let (metadata, _, body) = request.into_parts();
    let signature = service
        .finish(
            &metadata,
            Role::Writer,
            Operation::Sign,
            (body.state, Vec::new(), Vec::new()),
        )
        .await?;
    Ok(Response::new(pb::SignFinalResponse { signature }))
}

pub(super) async fn verify_final(
    service: &Grep11Service,
    request: Request<pb::VerifyFinalRequest>,
) -> Answer<pb::VerifyFinalResponse> {
    let (metadata, _, body) = request.into_parts();
    service
        .finish(
            &metadata,
            Role::Reader,
            Operation::Verify,
            (body.state, Vec::new(), body.signature),
        )
        .await?;
    Ok(Response::new(pb::VerifyFinalResponse {}))
}

pub(super) async fn sign(
    service: &Grep11Service,
    request: Request<pb::SignRequest>,
) -> Answer<pb::SignResponse> {
    let (metadata, _, body) = request.into_parts();
    let signature = service
        .finish(
            &metadata,
            Role::Writer,
            Operation::Sign,
            (body.state, body.data, Vec::new()),
        )
        .await?;
    Ok(Response::new(pb::SignResponse { signature }))
}

pub(super) async fn verify(
    service: &Grep11Service,
    request: Request<pb::VerifyRequest>,
) -> Answer<pb::VerifyResponse> {
    let (metadata, _, body) = request.into_parts();
    service
        .finish(
            &metadata,
            Role::Reader,
            Operation::Verify,
            (body.state, body.data, body.signature),
        )
        .await?;
    Ok(Response::new(pb::VerifyResponse {}))
}

pub(super) async fn sign_single(
    service: &Grep11Service,
    request: Request<pb::SignSingleRequest>,
) -> Answer<pb::SignSingleResponse> {
    let (metadata, _, body) = request.into_parts();
    let signature = service
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

pub(super) async fn verify_single(
    service: &Grep11Service,
    request: Request<pb::VerifySingleRequest>,
) -> Answer<pb::VerifySingleResponse> {
    let (metadata, _, body) = request.into_parts();
    service
        .single(
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

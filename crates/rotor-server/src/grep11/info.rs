//! Random bytes and the mechanism list and info.

use rotor_ep11::{Call, Reply};
use tonic::Request;

use super::pb;
use super::service::{Answer, Grep11Service};
use crate::iam::Role;

pub(super) async fn generate_random(
    service: &Grep11Service,
    request: Request<pb::GenerateRandomRequest>,
) -> Answer<pb::GenerateRandomResponse> {
    let (metadata, _, body) = request.into_parts();
    let call = Call::GenerateRandom { length: body.len };
    let response = |reply| match reply {
        Reply::Random(rnd) => Some(pb::GenerateRandomResponse { rnd }),
        _ => None,
    };
    service.serve(&metadata, Role::Reader, call, response).await
}

pub(super) async fn get_mechanism_list(
    service: &Grep11Service,
    request: Request<pb::GetMechanismListRequest>,
) -> Answer<pb::GetMechanismListResponse> {
    let call = Call::GetMechanismList;
    let response = |reply| match reply {
        Reply::Mechanisms(mechs) => Some(pb::GetMechanismListResponse { mechs }),
        _ => None,
    };
    service
        .serve(request.metadata(), Role::Reader, call, response)
        .await
}

pub(super) async fn get_mechanism_info(
    service: &Grep11Service,
    request: Request<pb::GetMechanismInfoRequest>,
) -> Answer<pb::GetMechanismInfoResponse> {
    let (metadata, _, body) = request.into_parts();
    let call = Call::GetMechanismInfo {
        mechanism: body.mech,
    };
    let response = |reply| match reply {
        Reply::MechanismInfo(info) => Some(pb::GetMechanismInfoResponse {
            mech_info: Some(pb::MechanismInfo {
                min_key_size: info.min_key_size,
                max_key_size: info.max_key_size,
                flags: info.flags,
            }),
        }),
        _ => None,
    };
    service.serve(&metadata, Role::Reader, call, response).await
}

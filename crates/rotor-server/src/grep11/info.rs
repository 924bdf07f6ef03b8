//! Random bytes and the mechanism list and info.

use rotor_ep11::{Call, Reply};
use tonic::{Request, Response};

use super::pb;
use super::service::{Answer, Grep11Service, unexpected};
use crate::iam::Role;

pub(super) async fn generate_random(
    service: &Grep11Service,
    request: Request<pb::GenerateRandomRequest>,
) -> Answer<pb::GenerateRandomResponse> {
    let call = Call::GenerateRandom {
        length: request.get_ref().len,
    };
    match service.run(request.metadata(), Role::Reader, call).await? {
        Reply::Random(rnd) => Ok(Response::new(pb::GenerateRandomResponse { rnd })),
        _ => Err(unexpected()),
    }
}

pub(super) async fn get_mechanism_list(
    service: &Grep11Service,
    request: Request<pb::GetMechanismListRequest>,
) -> Answer<pb::GetMechanismListResponse> {
    match service
        .run(request.metadata(), Role::Reader, Call::GetMechanismList)
        .await?
    {
        Reply::Mechanisms(mechs) => Ok(Response::new(pb::GetMechanismListResponse { mechs })),
        _ => Err(unexpected()),
    }
}

pub(super) async fn get_mechanism_info(
    service: &Grep11Service,
    request: Request<pb::GetMechanismInfoRequest>,
) -> Answer<pb::GetMechanismInfoResponse> {
    let call = Call::GetMechanismInfo {
        mechanism: request.get_ref().mech,
    };
    match service.run(request.metadata(), Role::Reader, call).await? {
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

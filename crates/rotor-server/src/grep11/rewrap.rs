//! `RewrapKeyBlob`: a key blob moved to the pinned new master key (docs/GREP11.md).

use rotor_ep11::Call;
use rotor_ep11::template::Template;
use tonic::Request;

use super::convert::{key, key_blob};
use super::pb;
use super::service::{Answer, Grep11Service, blob_of};
use crate::iam::Role;

pub(super) async fn rewrap_key_blob(
    service: &Grep11Service,
    request: Request<pb::RewrapKeyBlobRequest>,
) -> Answer<pb::RewrapKeyBlobResponse> {
    let (metadata, _, body) = request.into_parts();
    let blob = key(body.wrapped_key, body.wrapped_key_blob);
    let call = Call::RewrapKeyBlob { blob };
    let response = |reply| {
        blob_of(reply).map(|rewrapped| pb::RewrapKeyBlobResponse {
            rewrapped_key_blob: Some(key_blob(&rewrapped, &Template::new())),
            rewrapped_key: rewrapped,
        })
    };
    service.serve(&metadata, Role::Writer, call, response).await
}

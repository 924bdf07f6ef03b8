//! Key generation (a key, a key pair) and reading and changing the attributes of a key.

use rotor_ep11::{Call, Reply};
use tonic::Request;

use super::convert::{
    attribute_bytes, attribute_values, bytes_template, key_blob, mechanism, template,
};
use super::pb;
use super::service::{Answer, Grep11Service, attributes_of, blob_of};
use crate::iam::Role;

pub(super) async fn generate_key(
    service: &Grep11Service,
    request: Request<pb::GenerateKeyRequest>,
) -> Answer<pb::GenerateKeyResponse> {
    let (metadata, _, body) = request.into_parts();
    let requested = template(body.template)?;
    let call = Call::GenerateKey {
        mechanism: mechanism(body.mech)?,
        template: requested.clone(),
    };
    let response = |reply| match reply {
        Reply::Key { blob, checksum } => Some(pb::GenerateKeyResponse {
            key: Some(key_blob(&blob, &requested)),
            key_bytes: blob,
            check_sum: checksum,
        }),
        _ => None,
    };
    service.serve(&metadata, Role::Writer, call, response).await
}

pub(super) async fn generate_key_pair(
    service: &Grep11Service,
    request: Request<pb::GenerateKeyPairRequest>,
) -> Answer<pb::GenerateKeyPairResponse> {
    let (metadata, _, body) = request.into_parts();
    let private_template = template(body.priv_key_template)?;
    let public_template = template(body.pub_key_template)?;
    let call = Call::GenerateKeyPair {
        mechanism: mechanism(body.mech)?,
        private_template: private_template.clone(),
        public_template: public_template.clone(),
    };
    let response = |reply| match reply {
        Reply::KeyPair {
            private_key,
            public_key,
        } => Some(pb::GenerateKeyPairResponse {
            priv_key: Some(key_blob(&private_key, &private_template)),
            pub_key: Some(key_blob(&public_key, &public_template)),
            priv_key_bytes: private_key,
            pub_key_bytes: public_key,
        }),
        _ => None,
    };
    service.serve(&metadata, Role::Writer, call, response).await
}

pub(super) async fn get_attribute_value(
    service: &Grep11Service,
    request: Request<pb::GetAttributeValueRequest>,
) -> Answer<pb::GetAttributeValueResponse> {
    let (metadata, _, body) = request.into_parts();
    let mut attributes: Vec<u64> = body
        .attributes
        .keys()
        .chain(body.attributes_bytes.keys())
        .copied()
        .collect();
    attributes.sort_unstable();
    attributes.dedup();
    let call = Call::GetAttributeValue {
        object: body.object,
        attributes,
    };
    let response = |reply| {
        attributes_of(reply).map(|read| pb::GetAttributeValueResponse {
            attributes_bytes: attribute_bytes(&read),
            attributes: attribute_values(&read),
        })
    };
    service.serve(&metadata, Role::Writer, call, response).await
}

pub(super) async fn set_attribute_value(
    service: &Grep11Service,
    request: Request<pb::SetAttributeValueRequest>,
) -> Answer<pb::SetAttributeValueResponse> {
    let (metadata, _, body) = request.into_parts();
    let mut changes = bytes_template(body.attributes_bytes);
    changes.extend(template(body.attributes)?);
    let call = Call::SetAttributeValue {
        object: body.object,
        attributes: changes,
    };
    let response = |reply| blob_of(reply).map(|object| pb::SetAttributeValueResponse { object });
    service.serve(&metadata, Role::Writer, call, response).await
}

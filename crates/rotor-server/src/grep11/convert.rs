//! GREP11 protobuf messages to and from the unit's calls and replies, and errors to gRPC
//! statuses with a `grep11.Grep11Error` detail.

use prost::Message as _;
use rotor_ep11::consts::ckr;
use rotor_ep11::template::{AttrValue, Template};
use rotor_ep11::{Ep11Error, Mechanism};
use std::collections::HashMap;

use super::pb;

/// The type URL of the error detail, as GREP11 clients register it.
const ERROR_TYPE_URL: &str = "type.googleapis.com/grep11.Grep11Error";

/// `google.rpc.Status`, the message a status's `grpc-status-details-bin` holds.
#[derive(Clone, PartialEq, prost::Message)]
struct RpcStatus {
    #[prost(int32, tag = "1")]
    code: i32,
    #[prost(string, tag = "2")]
    message: String,
    #[prost(message, repeated, tag = "3")]
    details: Vec<ProtoAny>,
}

/// `google.protobuf.Any`
#[derive(Clone, PartialEq, prost::Message)]
struct ProtoAny {
    #[prost(string, tag = "1")]
    type_url: String,
    #[prost(bytes = "vec", tag = "2")]
    value: Vec<u8>,
}

/// A gRPC status carrying exactly one `Grep11Error` detail, as GREP11 clients expect.
pub(super) fn status(code: tonic::Code, error: &Ep11Error, retry: bool) -> tonic::Status {
    let detail = pb::Grep11Error {
        code: error.code,
        detail: error.detail.clone(),
        retry,
    };
    let body = RpcStatus {
        code: code as i32,
        message: error.detail.clone(),
        details: vec![ProtoAny {
            type_url: ERROR_TYPE_URL.to_owned(),
            value: detail.encode_to_vec(),
        }],
    };
    tonic::Status::with_details(code, error.detail.clone(), body.encode_to_vec().into())
}

/// The status of an error a unit answered: the call itself is wrong, so no retry.
pub(super) fn refused(error: &Ep11Error) -> tonic::Status {
    status(tonic::Code::Unknown, error, false)
}

/// `CKR_ARGUMENTS_BAD` for a request that lacks something.
pub(super) fn bad_arguments(detail: impl Into<String>) -> tonic::Status {
    refused(&Ep11Error::new(ckr::ARGUMENTS_BAD, detail))
}

/// A request's mechanism.
pub(super) fn mechanism(mechanism: Option<pb::Mechanism>) -> Result<Mechanism, tonic::Status> {
    let mechanism = mechanism.ok_or_else(|| {
        refused(&Ep11Error::new(
            ckr::MECHANISM_INVALID,
            "the request names no mechanism",
        ))
    })?;
    let parameter = match mechanism.parameter {
        None => Vec::new(),
        Some(pb::mechanism::Parameter::ParameterB(bytes)) => bytes,
        Some(_) => {
            return Err(refused(&Ep11Error::new(
                ckr::MECHANISM_PARAM_INVALID,
                format!(
                    "mechanism 0x{:X} takes no structured parameter on this service",
                    mechanism.mechanism
                ),
            )));
        }
    };
    Ok(Mechanism {
        mechanism: mechanism.mechanism,
        parameter,
    })
}

/// A key input in either generation: the `KeyBlob` message's first blob, else the raw bytes.
pub(super) fn key(bytes: Vec<u8>, blob: Option<pb::KeyBlob>) -> Vec<u8> {
    blob.and_then(|blob| blob.key_blobs.into_iter().next())
        .unwrap_or(bytes)
}

/// A template from `AttributeValue`s.
pub(super) fn template(
    attributes: HashMap<u64, pb::AttributeValue>,
) -> Result<Template, tonic::Status> {
    attributes
        .into_iter()
        .map(|(attribute, value)| {
            let value = match value.one_attr {
                Some(pb::attribute_value::OneAttr::AttributeB(bytes)) => AttrValue::Bytes(bytes),
                Some(pb::attribute_value::OneAttr::AttributeTf(flag)) => AttrValue::Bool(flag),
                Some(pb::attribute_value::OneAttr::AttributeI(number)) => AttrValue::Int(number),
                None => {
                    return Err(refused(&Ep11Error::new(
                        ckr::ATTRIBUTE_VALUE_INVALID,
                        format!("attribute 0x{attribute:X} has no value"),
                    )));
                }
            };
            Ok((attribute, value))
        })
        .collect()
}

/// A template from the bytes-valued maps of older clients (Booleans as one byte, integers
/// big-endian).
pub(super) fn bytes_template(attributes: HashMap<u64, Vec<u8>>) -> Template {
    attributes
        .into_iter()
        .map(|(attribute, bytes)| (attribute, AttrValue::Bytes(bytes)))
        .collect()
}

/// Attributes as `AttributeValue`s.
pub(super) fn attribute_values(template: &Template) -> HashMap<u64, pb::AttributeValue> {
    template
        .iter()
        .map(|(attribute, value)| {
            let one_attr = match value {
                AttrValue::Bytes(bytes) => pb::attribute_value::OneAttr::AttributeB(bytes.clone()),
                AttrValue::Bool(flag) => pb::attribute_value::OneAttr::AttributeTf(*flag),
                AttrValue::Int(number) => pb::attribute_value::OneAttr::AttributeI(*number),
            };
            (
                *attribute,
                pb::AttributeValue {
                    one_attr: Some(one_attr),
                },
            )
        })
        .collect()
}

/// Attributes in the bytes-valued encoding.
pub(super) fn attribute_bytes(template: &Template) -> HashMap<u64, Vec<u8>> {
    template
        .iter()
        .map(|(attribute, value)| {
            let bytes = match value {
                AttrValue::Bytes(bytes) => bytes.clone(),
                AttrValue::Bool(flag) => vec![u8::from(*flag)],
                AttrValue::Int(number) => number.to_be_bytes().to_vec(),
            };
            (*attribute, bytes)
        })
        .collect()
}

/// The `KeyBlob` message of a blob (or a public key's SPKI): a fresh id and transaction id,
/// the attributes the request asked for, the blob itself.
pub(super) fn key_blob(blob: &[u8], attributes: &Template) -> pb::KeyBlob {
    pb::KeyBlob {
        key_blob_id: uuid::Uuid::new_v4().as_bytes().to_vec(),
        version: 0,
        tx_id: uuid::Uuid::new_v4().as_bytes().to_vec(),
        attributes: attribute_values(attributes),
        key_blobs: vec![blob.to_vec()],
    }
}

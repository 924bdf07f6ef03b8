//! The GREP11 service: each RPC authenticated, converted and run in a unit of the caller's
//! instance through the unit pool (failover as for every key operation). This file holds the
//! service, the caller's authentication, the unit round trip, and the call shapes and reply
//! checks the handlers (one file per call family) share; the `grep11.Crypto` dispatch is in
//! the parent module.

use rotor_ep11::consts::ckr;
use rotor_ep11::template::Template;
use rotor_ep11::{Call, Ep11Error, Operation, Reply};
use rotor_proto::error::ErrorCode;
use rotor_proto::keyops::{Grep11Outcome, Grep11Request};
use rotor_util::time::unix_now;
use tonic::metadata::MetadataMap;
use tonic::{Response, Status};
use uuid::Uuid;

use super::convert::{bad_arguments, mechanism, refused, status};
use super::pb;
use crate::iam::Role;
use crate::kp::KpState;
use crate::pool::PoolError;

/// The largest gRPC message the service decodes (as HPCS: 64 MB); what a call may carry to a
/// unit is smaller ([`MAX_PAYLOAD`]) and refused with a GREP11 error.
const MAX_MESSAGE: usize = 64 * 1024 * 1024;
/// The most bytes one call carries to a unit: a state and one part of data.
const MAX_PAYLOAD: usize = rotor_ep11::object::MAX_SEALED + rotor_ep11::ops::MAX_DATA + 64 * 1024;

/// `CKR_FUNCTION_NOT_SUPPORTED`, for the calls rotor does not serve yet (docs/GREP11.md).
const FUNCTION_NOT_SUPPORTED: u64 = 0x54;

/// The GREP11 service of the instances this service serves.
#[derive(Clone)]
pub struct Grep11Service {
    kp: KpState,
}

pub(super) type Answer<T> = Result<Response<T>, Status>;

impl Grep11Service {
    /// The service over the Key Protect state's token verifier and unit pool.
    pub fn new(kp: KpState) -> Self {
        Self { kp }
    }

    /// Its gRPC routes, to serve on their own TLS port (HTTP/2).
    pub fn router(self) -> axum::Router {
        let server = pb::crypto_server::CryptoServer::new(self)
            .max_decoding_message_size(MAX_MESSAGE)
            .max_encoding_message_size(MAX_MESSAGE);
        tonic::service::Routes::new(server).into_axum_router()
    }

    /// The instance a call acts on, once its token grants `needed` there: the one the
    /// `bluemix-instance` metadata names, or else the one instance the API key is bound to.
    fn instance(&self, metadata: &MetadataMap, needed: Role) -> Result<Uuid, Status> {
        let unauthenticated = |detail: String| {
            status(
                tonic::Code::Unauthenticated,
                &Ep11Error::new(ckr::IBM_GREP11_NOT_AUTHENTICATED, detail),
                false,
            )
        };
        let authorization = metadata.get("authorization").and_then(|v| v.to_str().ok());
        let claims = self
            .kp
            .iam
            .verify(authorization, unix_now())
            .map_err(|err| unauthenticated(err.to_string()))?;
        let instance = match metadata.get("bluemix-instance") {
            Some(named) => named
                .to_str()
                .ok()
                .and_then(|text| Uuid::parse_str(text.trim()).ok())
                .ok_or_else(|| bad_arguments("bluemix-instance is not an instance id"))?,
            None => {
                let bound: Vec<Uuid> = claims
                    .instances
                    .iter()
                    .filter_map(|entry| Uuid::parse_str(entry).ok())
                    .collect();
                match bound[..] {
                    [only] if !claims.instances.iter().any(|entry| entry == "*") => only,
                    _ => {
                        return Err(bad_arguments(
                            "the API key is bound to several instances: name one in the bluemix-instance metadata",
                        ));
                    }
                }
            }
        };
        claims.allows(Some(instance), needed).map_err(|err| {
            status(
                tonic::Code::PermissionDenied,
                &Ep11Error::new(ckr::IBM_GREP11_NOT_AUTHENTICATED, err.to_string()),
                false,
            )
        })?;
        if !self.kp.units.contains(instance) {
            return Err(status(
                tonic::Code::NotFound,
                &Ep11Error::new(
                    ckr::ARGUMENTS_BAD,
                    format!("instance {instance} does not exist on this service"),
                ),
                false,
            ));
        }
        Ok(instance)
    }

    /// The shape of every served call: runs `call` for an authenticated caller (as `run`) and
    /// makes the response from the unit's reply with `response`, which answers `None` for
    /// another kind of reply (an internal error).
    pub(super) async fn serve<T>(
        &self,
        metadata: &MetadataMap,
        needed: Role,
        call: Call,
        response: impl FnOnce(Reply) -> Option<T>,
    ) -> Answer<T> {
        let reply = self.run(metadata, needed, call).await?;
        response(reply).map(Response::new).ok_or_else(unexpected)
    }

    /// Runs `call` for an authenticated caller in one of its instance's units.
    async fn run(&self, metadata: &MetadataMap, needed: Role, call: Call) -> Result<Reply, Status> {
        let instance = self.instance(metadata, needed)?;
        if call.payload_len() > MAX_PAYLOAD {
            return Err(refused(&Ep11Error::new(
                ckr::DATA_LEN_RANGE,
                format!(
                    "one call carries at most {} bytes of data; use the multi-part calls",
                    rotor_ep11::ops::MAX_DATA
                ),
            )));
        }
        let request = Grep11Request { instance, call };
        let outcome: Grep11Outcome = self
            .kp
            .units
            .call(instance, &request)
            .await
            .map_err(|err| pool_status(&err))?;
        outcome.0.map_err(|err| refused(&err))
    }

    /// A call rotor does not serve yet; the caller is still authenticated first.
    pub(super) fn not_supported(&self, metadata: &MetadataMap, call: &str) -> Status {
        if let Err(refusal) = self.instance(metadata, Role::Writer) {
            return refusal;
        }
        status(
            tonic::Code::Unimplemented,
            &Ep11Error::new(
                FUNCTION_NOT_SUPPORTED,
                format!("{call} is not served by rotor yet (docs/GREP11.md lists every call)"),
            ),
            false,
        )
    }
}

/// The status of a request no unit could answer.
fn pool_status(err: &PoolError) -> Status {
    let (code, ck, retry) = match err {
        PoolError::Refused(body) if body.code == ErrorCode::NoMasterKey => (
            tonic::Code::FailedPrecondition,
            ckr::IBM_WK_NOT_INITIALIZED,
            false,
        ),
        PoolError::Unavailable { .. } | PoolError::UnitFailed { .. } => {
            (tonic::Code::Unavailable, ckr::GENERAL_ERROR, true)
        }
        _ => (tonic::Code::Internal, ckr::GENERAL_ERROR, false),
    };
    status(code, &Ep11Error::new(ck, err.to_string()), retry)
}

fn unexpected() -> Status {
    status(
        tonic::Code::Internal,
        &Ep11Error::new(
            ckr::GENERAL_ERROR,
            "the crypto unit answered another kind of reply",
        ),
        false,
    )
}

/// The call that starts a multi-part `operation` with `key`.
pub(super) fn init(
    operation: Operation,
    mech: Option<pb::Mechanism>,
    key: Vec<u8>,
) -> Result<Call, Status> {
    Ok(Call::Init {
        operation,
        mechanism: mechanism(mech)?,
        key,
    })
}

/// The call that feeds `data` to a multi-part `operation` in `state`.
pub(super) fn update(operation: Operation, state: Vec<u8>, data: Vec<u8>) -> Call {
    Call::Update {
        operation,
        state,
        data,
    }
}

/// The call that ends a multi-part `operation` in `state`, with its last data (and the
/// signature to verify).
pub(super) fn finish(
    operation: Operation,
    (state, data, signature): (Vec<u8>, Vec<u8>, Vec<u8>),
) -> Call {
    Call::Finish {
        operation,
        state,
        data,
        signature,
    }
}

/// The call that runs `operation` in one go.
pub(super) fn single(
    operation: Operation,
    mech: Option<pb::Mechanism>,
    (key, data, signature): (Vec<u8>, Vec<u8>, Vec<u8>),
) -> Result<Call, Status> {
    Ok(Call::Single {
        operation,
        mechanism: mechanism(mech)?,
        key,
        data,
        signature,
    })
}

/// The state of a `State` reply.
pub(super) fn state(reply: Reply) -> Option<Vec<u8>> {
    match reply {
        Reply::State { state, .. } => Some(state),
        _ => None,
    }
}

/// The bytes of an `Output` reply.
pub(super) fn output(reply: Reply) -> Option<Vec<u8>> {
    match reply {
        Reply::Output(bytes) => Some(bytes.to_vec()),
        _ => None,
    }
}

/// The attributes of an `Attributes` reply.
pub(super) fn attributes_of(reply: Reply) -> Option<Template> {
    match reply {
        Reply::Attributes(attributes) => Some(attributes),
        _ => None,
    }
}

/// The blob of a `Blob` reply.
pub(super) fn blob_of(reply: Reply) -> Option<Vec<u8>> {
    match reply {
        Reply::Blob(blob) => Some(blob),
        _ => None,
    }
}

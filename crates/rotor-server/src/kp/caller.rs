//! Who calls: the instance from `Bluemix-Instance`, the identity from the bearer token.

use axum::http::{HeaderMap, StatusCode, header};
use uuid::Uuid;

use rotor_util::time::unix_now;

use super::KpState;
use super::error::{KpError, KpResult};
use crate::iam::{Claims, Role};

/// The caller: instance from `Bluemix-Instance`, identity from the bearer token.
pub(crate) struct Caller {
    pub(crate) instance: Uuid,
    pub(crate) claims: Claims,
}

impl KpState {
    pub(crate) fn caller(&self, headers: &HeaderMap, needed: Role) -> KpResult<Caller> {
        let authorization = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok());
        let claims = self.iam.verify(authorization, unix_now())?;
        let instance = headers
            .get("bluemix-instance")
            .and_then(|v| v.to_str().ok())
            .ok_or_else(|| KpError::bad_request("the Bluemix-Instance header is missing"))?;
        let instance = Uuid::parse_str(instance.trim()).map_err(|_| {
            KpError::bad_request("the Bluemix-Instance header is not an instance id")
        })?;
        claims.allows(Some(instance), needed)?;
        if !self.instances.contains_key(&instance) {
            return Err(KpError::new(
                StatusCode::NOT_FOUND,
                "INSTANCE_NOT_FOUND_ERR",
                format!("instance {instance} does not exist on this service"),
            ));
        }
        Ok(Caller { instance, claims })
    }
}

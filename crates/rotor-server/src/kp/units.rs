//! How key operations reach the instance's units: through the service's [`UnitPool`], which
//! owns the failover policy; here its outcomes become Key Protect errors.

use rotor_proto::error::ErrorCode;
use rotor_proto::keyops::ForgetKey;
use rotor_store::KeyMeta;
use rotor_unit::daemon::Served;
use uuid::Uuid;

use super::KpState;
use super::error::{KpError, KpResult};
use crate::pool::PoolError;

impl From<PoolError> for KpError {
    fn from(err: PoolError) -> Self {
        match err {
            PoolError::UnknownInstance(instance) => Self::InstanceNotFound(instance.to_string()),
            PoolError::NoOperationalUnit => Self::NoCryptoUnit,
            PoolError::Refused(body) => match body.code {
                ErrorCode::NoNewMasterKey => Self::NoNewMasterKey(body.message),
                // Deliberately opaque: the unit's reason stays out of the answer.
                ErrorCode::InvalidCiphertext => Self::UnprocessableCiphertext,
                _ => Self::UnitRefused(body.message),
            },
            PoolError::Unavailable { .. }
            | PoolError::UnitFailed { .. }
            | PoolError::Untrusted { .. } => Self::NoMasterKey(err.to_string()),
        }
    }
}

impl KpState {
    /// Runs a key operation on the instance's units (see [`crate::pool::UnitPool::call`]).
    pub(crate) async fn unit_call<Op: Served>(
        &self,
        instance: Uuid,
        request: &Op,
    ) -> KpResult<Op::Reply> {
        Ok(self.units.call(instance, request).await?)
    }

    /// Has every operational unit drop a deleted or purged key's unwrapped versions.
    pub(crate) async fn forget_cached(&self, key: &KeyMeta) {
        let request = ForgetKey {
            instance: key.instance,
            key: key.id,
        };
        self.units.forget(key.instance, &request).await;
    }

    /// [`Self::unit_call`] with a request built from stored blobs (see
    /// [`crate::pool::UnitPool::call_fresh`]).
    pub(crate) async fn unit_call_fresh<Op: Served>(
        &self,
        instance: Uuid,
        build: impl Fn() -> KpResult<Op>,
    ) -> KpResult<Op::Reply> {
        self.units.call_fresh(instance, build).await
    }
}

//! The units of an instance and how key operations reach them: each call tries the
//! instance's operational units in turn.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use rotor_unit::keyapi::{KeyCallError, KeyClient};
use serde::Deserialize;
use uuid::Uuid;

use super::KpState;
use super::error::{KpError, KpResult};

/// The units of one instance that serve key operations.
#[derive(Clone, Debug)]
pub struct InstanceUnits {
    /// Key operation clients, one per operational unit.
    pub units: Vec<KeyClient>,
    next: Arc<AtomicUsize>,
}

impl InstanceUnits {
    /// Units tried in turn, starting from a rotating position.
    pub fn new(units: Vec<KeyClient>) -> Self {
        Self {
            units,
            next: Arc::default(),
        }
    }
}

impl KpState {
    /// Runs a key operation on the instance's units, trying each in turn.
    pub(crate) async fn unit_call<Req: serde::Serialize, Resp: for<'de> Deserialize<'de>>(
        &self,
        instance: Uuid,
        op: &str,
        request: &Req,
    ) -> KpResult<Resp> {
        let units = self
            .instances
            .get(&instance)
            .ok_or_else(|| KpError::InstanceNotFound(instance.to_string()))?;
        if units.units.is_empty() {
            return Err(KpError::NoCryptoUnit);
        }
        let start = units.next.fetch_add(1, Ordering::Relaxed);
        let mut last = None;
        for offset in 0..units.units.len() {
            let unit = &units.units[(start + offset) % units.units.len()];
            match unit.call(op, request).await {
                Ok(response) => return Ok(response),
                Err(KeyCallError::Refused { status: 409, body })
                    if body.code == "no_new_master_key" =>
                {
                    return Err(KpError::NoNewMasterKey(body.message));
                }
                Err(KeyCallError::Refused { status, body }) if status == 400 || status == 403 => {
                    return Err(match body.code.as_str() {
                        "invalid_ciphertext" if op == "secure-import" => {
                            KpError::ImportVerification
                        }
                        "invalid_ciphertext" => KpError::UnprocessableCiphertext,
                        _ => KpError::UnitRefused(body.message),
                    });
                }
                Err(err) => {
                    tracing::warn!(error = %err, "crypto unit could not serve a key operation; trying the next");
                    last = Some(err);
                }
            }
        }
        let why = last.map(|err| err.to_string()).unwrap_or_default();
        Err(KpError::NoMasterKey(format!(
            "no crypto unit of this instance could serve the request: none has a usable current master key or none is reachable (last: {why})"
        )))
    }

    /// A batch operation (postcard bodies) on the first unit that serves it.
    pub(crate) async fn unit_call_batch<Req: serde::Serialize, Resp: for<'de> Deserialize<'de>>(
        &self,
        instance: Uuid,
        op: &str,
        request: &Req,
    ) -> KpResult<Resp> {
        let units = self
            .instances
            .get(&instance)
            .ok_or_else(|| KpError::InstanceNotFound(instance.to_string()))?;
        let mut last = String::from("this instance has no operational crypto unit");
        for unit in &units.units {
            match unit.call_batch(op, request).await {
                Ok(answer) => return Ok(answer),
                Err(KeyCallError::Refused { status: 400, body }) => {
                    return Err(KpError::UnitRefused(body.message));
                }
                Err(err) => last = err.to_string(),
            }
        }
        Err(KpError::NoMasterKey(format!(
            "no crypto unit of this instance could serve the request (last: {last})"
        )))
    }

    /// [`Self::unit_call`] with a request built from stored blobs; when no unit can serve it,
    /// the request is built again and tried once more, since a rotation may have rewrapped a
    /// blob between the read and a unit's promotion.
    pub(crate) async fn unit_call_fresh<Req: serde::Serialize, Resp: for<'de> Deserialize<'de>>(
        &self,
        instance: Uuid,
        op: &str,
        build: impl Fn() -> KpResult<Req>,
    ) -> KpResult<Resp> {
        match self.unit_call(instance, op, &build()?).await {
            Err(KpError::NoMasterKey(_)) => self.unit_call(instance, op, &build()?).await,
            other => other,
        }
    }
}

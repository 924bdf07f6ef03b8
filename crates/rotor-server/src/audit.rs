//! The service's side of the audit chains ([`rotor_proto::audit`]):
//!
//! - it writes each instance's key event chain: Key Protect lifecycle events and refused key
//!   uses, with the caller's identity ([`AuditTrail::record`]);
//! - it has a unit of the instance countersign that chain's head whenever it moved, checked
//!   every minute and after every admin command;
//! - it copies each unit's admin chain into its store (after every relayed admin command, every
//!   minute, and before answering for it).
//!
//! The service holds no signing key: what makes its copy trustworthy is the units' signatures,
//! which `rotor audit verify` checks on the workstation.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rotor_crypto::fill_random;
use rotor_proto::audit::{
    ChainHead, Countersign, KeyEventRecord, SignedHead, StoredEntry, Verdict,
};
use rotor_store::{AuditChain, AuditStore, StoreError};
use rotor_unit::backend::{CallError, UnitBackend};
use uuid::Uuid;

use crate::pool::{PoolError, PoolUnit, UnitPool};

/// How often heads are countersigned and admin chains copied, at most this long apart.
const SYNC_INTERVAL: Duration = Duration::from_secs(60);

/// Why a chain could not be brought up to date.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AuditError {
    /// The service's store failed, or refused entries that do not continue its copy.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The unit did not answer.
    #[error(transparent)]
    Unit(#[from] CallError),
    /// No such instance or unit.
    #[error(transparent)]
    Pool(#[from] PoolError),
}

/// The audit chains of every instance served.
#[derive(Clone)]
pub struct AuditTrail {
    store: Arc<dyn AuditStore>,
    units: UnitPool,
    /// The last head countersigned, per instance (a fresh start countersigns once).
    countersigned: Arc<Mutex<HashMap<Uuid, ChainHead>>>,
}

impl AuditTrail {
    /// The chains in `store`, countersigned and copied through `units`.
    pub fn new(store: Arc<dyn AuditStore>, units: UnitPool) -> Self {
        Self {
            store,
            units,
            countersigned: Arc::default(),
        }
    }

    /// The store the chains are kept in.
    pub fn store(&self) -> &Arc<dyn AuditStore> {
        &self.store
    }

    /// Appends one event to `instance`'s key event chain. A failure is logged: the event has
    /// already happened and its answer does not depend on the log.
    pub fn record(&self, instance: Uuid, event: &str, key: &str, caller: &str, verdict: Verdict) {
        let record = KeyEventRecord {
            event: event.to_owned(),
            key: key.to_owned(),
            caller: caller.to_owned(),
            verdict,
        };
        let time_ms = u64::try_from(rotor_util::time::now_ms()).unwrap_or_default();
        let appended = rotor_util::blocking(|| {
            self.store.append_key_event(instance, &mut |mut head| {
                let bytes = head.append(time_ms, record.clone());
                (head, bytes)
            })
        });
        if let Err(err) = appended {
            tracing::error!(%instance, event, key, error = %err, "key event not recorded in the audit chain");
        }
    }

    /// Has every reachable unit of `instance` countersign its key event chain's head, unless
    /// that head was countersigned already.
    pub async fn countersign(&self, instance: Uuid) -> Result<(), AuditError> {
        let chain = AuditChain::Instance(instance);
        let head = rotor_util::blocking(|| self.store.audit_head(chain))?;
        let done = self
            .countersigned
            .lock()
            .map(|done| done.get(&instance) == Some(&head))
            .unwrap_or(false);
        if done {
            return Ok(());
        }
        let request = Countersign { instance, head };
        let mut signed = false;
        for unit in self.units.units(instance)? {
            match unit.link.call(&request).await {
                Ok(countersignature) => {
                    rotor_util::blocking(|| self.store.add_countersignature(&countersignature))?;
                    signed = true;
                }
                Err(err) => {
                    tracing::warn!(unit = %unit.id, error = %err, "unit did not countersign the key event chain");
                }
            }
        }
        if signed && let Ok(mut done) = self.countersigned.lock() {
            done.insert(instance, head);
        }
        Ok(())
    }

    /// Copies the new entries of `unit`'s admin chain into the store, and returns the unit's
    /// live head signed over `challenge`.
    pub async fn sync_unit(
        &self,
        instance: Uuid,
        unit: Uuid,
        challenge: Vec<u8>,
    ) -> Result<SignedHead, AuditError> {
        let found = self
            .units
            .units(instance)?
            .iter()
            .find(|u| u.id == unit)
            .ok_or(PoolError::UnknownInstance(instance))?;
        self.copy(found, challenge).await
    }

    async fn copy(&self, unit: &PoolUnit, challenge: Vec<u8>) -> Result<SignedHead, AuditError> {
        let chain = AuditChain::Unit(unit.id);
        let stored = rotor_util::blocking(|| self.store.audit_head(chain))?;
        let batch = unit.link.audit(stored.seq, challenge).await?;
        if !batch.entries.is_empty() {
            let entries: &[StoredEntry] = &batch.entries;
            rotor_util::blocking(|| self.store.append_unit_entries(unit.id, entries))?;
        }
        Ok(batch.head)
    }

    /// After an admin command to `unit`: its new entries are copied and the instance's key
    /// event chain is countersigned.
    pub async fn after_admin_command(&self, instance: Uuid, unit: Uuid) {
        if let Err(err) = self.sync_unit(instance, unit, random_challenge()).await {
            tracing::warn!(%unit, error = %err, "admin chain not copied");
        }
        if let Err(err) = self.countersign(instance).await {
            tracing::warn!(%instance, error = %err, "key event chain not countersigned");
        }
    }

    /// Every [`SYNC_INTERVAL`]: each unit's admin chain copied, each key event chain
    /// countersigned. Runs until the task is dropped.
    pub async fn run(self) {
        let mut interval = tokio::time::interval(SYNC_INTERVAL);
        loop {
            interval.tick().await;
            let instances: Vec<Uuid> = self.units.instances().collect();
            for instance in instances {
                for unit in self.units.units(instance).unwrap_or_default() {
                    if let Err(err) = self.copy(unit, random_challenge()).await {
                        tracing::warn!(unit = %unit.id, error = %err, "admin chain not copied");
                    }
                }
                if let Err(err) = self.countersign(instance).await {
                    tracing::warn!(%instance, error = %err, "key event chain not countersigned");
                }
            }
        }
    }
}

fn random_challenge() -> Vec<u8> {
    let mut challenge = vec![0; 16];
    fill_random(&mut challenge);
    challenge
}

//! The Key Protect API v2, as IBM's `keyprotect` SDK speaks it: keys (create, import, list,
//! get, metadata, versions, patch), actions (wrap, unwrap, rewrap, rotate, enable, disable,
//! set and unset for deletion, sync), delete, restore, purge, aliases, key rings, key policies
//! and instance policies.
//!
//! The service holds only wrapped blobs: generation, import, wrap, unwrap and rewrap run inside
//! one of the instance's operational units (another is tried when one is unreachable or has no
//! usable master key).
//!
//! Beside it, with the same callers and error body: application-held blobs (`/v1/blobs`) and
//! bulk key creation (`/v1/instances/{id}/keys/batch`).
//!
//! Layout: `caller` says who calls, `client_address` where from, `requests` parses bodies,
//! `error` maps every error to its answer, `wire` shapes keys, collections and headers
//! (media type, `Prefer`; the `Correlation-Id` comes from `rotor_telemetry::observe`), `units` reaches the crypto units, `lifecycle`
//! holds the key state rules; the routes live in `keys`, `actions`, `policies`,
//! `instance_policies`, `rings`, `import_token`, `registrations`, `blobs` and `batch`.

mod actions;
mod batch;
mod blobs;
mod caller;
mod client_address;
mod error;
mod field_schemas;
mod import_token;
mod instance_policies;
mod keys;
mod lifecycle;
mod names;
mod policies;
mod registrations;
pub(crate) mod requests;
mod rings;
mod units;
mod wire;

use std::sync::Arc;

use axum::Router;
use axum::routing::{get, post};
use rotor_store::{KeyMeta, KeyStore, KeyVersion};
use rotor_unit::keyapi::KeyRef;
use rotor_unit::keys::Binding;

use self::actions::{key_action, key_action_query};
use self::error::json_rejections;
use self::import_token::{create_import_token, get_import_token};
use self::instance_policies::{
    enforce_allowed_ip, get_allowed_ip_port, get_instance_policies, put_instance_policies,
};
use self::keys::{
    create_key, delete_key, get_key, get_metadata, get_versions, key_total, list_keys, patch_key,
    purge_key, restore_key,
};
use self::policies::{get_key_policies, put_key_policies};
use self::registrations::{key_registrations, registrations};
use self::rings::{create_alias, create_key_ring, delete_alias, delete_key_ring, list_key_rings};
use crate::iam::Iam;

pub use self::batch::{MAX_BATCH_CREATE, create_keys_batch};
pub(crate) use self::caller::Caller;
pub use self::client_address::Cidr;
pub use self::error::KpError;
pub(crate) use self::error::KpResult;
pub(crate) use self::instance_policies::policy_type_names as instance_policy_type_names;
pub use self::policies::{rotate_by_policy, rotate_due};
pub(crate) use self::wire::COLLECTION_MEDIA_TYPE;

/// What the Key Protect routes share.
#[derive(Clone)]
pub struct KpState {
    /// Key storage.
    pub store: Arc<dyn KeyStore>,
    /// Token verification.
    pub iam: Arc<Iam>,
    /// Units per instance.
    pub units: crate::pool::UnitPool,
    /// How long after deletion a key may be purged, in seconds (Key Protect: 4 hours).
    pub purge_after_seconds: u64,
    /// This replica's name in leases on shared work.
    pub replica: Arc<str>,
    /// Proxies whose `X-Forwarded-For` names the client (for `allowedIP` policies).
    pub trusted_proxies: Arc<[Cidr]>,
    /// The port the service listens on, answered by `GET /instance/allowed_ip_port`.
    pub listen_port: u16,
    /// When each key was last synced (Unix milliseconds), for the one-sync-an-hour rule.
    pub last_sync: Arc<std::sync::Mutex<std::collections::HashMap<uuid::Uuid, i64>>>,
    /// The key event chains: lifecycle events and refused key uses land here.
    pub audit: crate::audit::AuditTrail,
}

pub(crate) use rotor_util::blocking;

impl KpState {
    /// The key `id` (a UUID or an alias), in the caller's `X-Kms-Key-Ring` when it names one:
    /// as in Key Protect, a key in another ring is not found.
    fn find_key(&self, caller: &Caller, id: &str) -> KpResult<KeyMeta> {
        self.read(|| self.store.key(caller.instance, id))?
            .filter(|key| {
                caller
                    .key_ring
                    .as_ref()
                    .is_none_or(|ring| *ring == key.key_ring)
            })
            .ok_or_else(|| KpError::KeyNotFound(id.to_owned()))
    }

    /// Records a key event the caller's request caused, in the instance's key event chain.
    fn audit_event(&self, caller: &Caller, event: &str, key: &str) {
        self.audit.record(
            caller.instance,
            event,
            key,
            &caller.claims.sub,
            rotor_proto::audit::Verdict::Accepted,
        );
    }

    /// Runs a point read of key storage: on this async worker when the store promises it is
    /// quick (a thread hand-off costs more than the read), else off the async workers.
    fn read<T>(&self, read: impl FnOnce() -> T) -> T {
        if self.store.point_reads_are_quick() {
            read()
        } else {
            blocking(read)
        }
    }

    /// Version `version` of `key` for a unit request: `preread` (read moments ago) on the
    /// request's first attempt, read again on the retry (a rotation may have rewrapped the blob
    /// meanwhile: see [`crate::pool::UnitPool::call_fresh`]).
    fn key_version_preread(
        &self,
        key: &KeyMeta,
        version: u32,
        preread: Option<&KeyVersion>,
        first_attempt: &std::sync::atomic::AtomicBool,
    ) -> KpResult<KeyRef> {
        match preread {
            Some(stored) if first_attempt.load(std::sync::atomic::Ordering::Relaxed) => {
                Ok(key_ref(key, stored))
            }
            _ => self.key_version(key, version),
        }
    }

    fn key_version(&self, key: &KeyMeta, version: u32) -> KpResult<KeyRef> {
        let stored = self
            .read(|| self.store.version(key.instance, key.id, version))?
            .ok_or(KpError::KeyVersionNotFound {
                key: key.id,
                version,
            })?;
        Ok(key_ref(key, &stored))
    }
}

fn key_ref(key: &KeyMeta, version: &KeyVersion) -> KeyRef {
    KeyRef {
        binding: Binding {
            instance: key.instance,
            key: key.id,
            version: version.version,
            extractable: key.extractable,
        },
        blob: version.blob.clone(),
    }
}

/// All Key Protect routes, and rotor's own key routes beside them.
pub fn router(state: KpState) -> Router {
    Router::new()
        .route(
            "/api/v2/keys",
            post(create_key).get(list_keys).head(key_total),
        )
        .route("/api/v2/keys_with_policy_overrides", post(create_key))
        .route("/api/v2/keys/registrations", get(registrations))
        .route(
            "/api/v2/keys/{id}",
            get(get_key)
                .post(key_action_query)
                .patch(patch_key)
                .delete(delete_key),
        )
        .route("/api/v2/keys/{id}/metadata", get(get_metadata))
        .route("/api/v2/keys/{id}/versions", get(get_versions))
        .route("/api/v2/keys/{id}/purge", axum::routing::delete(purge_key))
        .route("/api/v2/keys/{id}/restore", post(restore_key))
        .route("/api/v2/keys/{id}/registrations", get(key_registrations))
        .route("/api/v2/keys/{id}/actions/{action}", post(key_action))
        .route(
            "/api/v2/keys/{id}/policies",
            get(get_key_policies).put(put_key_policies),
        )
        .route(
            "/api/v2/keys/{id}/aliases/{alias}",
            post(create_alias).delete(delete_alias),
        )
        .route("/api/v2/key_rings", get(list_key_rings))
        .route(
            "/api/v2/key_rings/{id}",
            post(create_key_ring).delete(delete_key_ring),
        )
        .route(
            "/api/v2/instance/policies",
            get(get_instance_policies).put(put_instance_policies),
        )
        .route("/api/v2/instance/allowed_ip_port", get(get_allowed_ip_port))
        .route(
            "/api/v2/import_token",
            post(create_import_token).get(get_import_token),
        )
        // rotor's own routes, with the same callers and error body
        .route("/v1/blobs/{op}", post(blobs::blob_operation))
        .route(
            "/v1/instances/{instance}/keys/batch",
            post(batch::keys_batch),
        )
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            enforce_allowed_ip,
        ))
        .with_state(state)
        .layer(axum::middleware::map_response(json_rejections))
}

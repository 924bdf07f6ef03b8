//! Key policies, instance policies, and the rotator that applies rotation policies.

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use rotor_store::{Deletion, KeyMeta, KeyState, ListFilter, StoreError};
use rotor_unit::keys::Binding;
use serde_json::{Value, json};
use uuid::Uuid;

use rotor_util::time::{now_ms, rfc3339};

use super::error::{KpError, KpResult};
use super::lifecycle::add_version;
use super::requests::{KeyPolicy, parse_collection};
use super::wire::{POLICY_TYPE, collection_response, crn, policy_collection};
use super::{KpState, blocking};
use crate::iam::Role;

/// How often the rotation policy is checked.
pub(super) const POLICY_CHECK: std::time::Duration = std::time::Duration::from_secs(60);
/// A policy month, as Key Protect counts it.
pub(super) const MONTH_MS: i64 = 30 * 24 * 3600 * 1000;

/// Rotates every generated root key whose rotation policy is due, forever. Imported keys are
/// skipped: their new material must come from their owner.
pub async fn rotate_by_policy(state: KpState) {
    loop {
        tokio::time::sleep(POLICY_CHECK).await;
        for instance in state.units.instances() {
            // One replica checks each instance per round; if it stops, its lease expires
            // before the next round and another replica checks.
            let lease = format!("policy-rotation:{instance}");
            let ttl = i64::try_from(POLICY_CHECK.as_millis() / 2).unwrap_or(i64::MAX);
            match blocking(|| {
                state
                    .store
                    .take_lease(&lease, &state.replica, now_ms(), ttl)
            }) {
                Ok(true) => {}
                Ok(false) => continue,
                Err(err) => {
                    tracing::warn!(instance = %instance, error = %err, "cannot take the rotation policy lease; retrying later");
                    continue;
                }
            }
            if let Err(err) = rotate_due(&state, instance).await {
                tracing::warn!(instance = %instance, error = ?err, "rotation by policy failed; retrying later");
            }
        }
    }
}

/// Rotates the keys of `instance` whose rotation policy is due; returns how many.
pub async fn rotate_due(state: &KpState, instance: Uuid) -> KpResult<usize> {
    let filter = ListFilter {
        limit: u32::MAX,
        states: vec![KeyState::Active],
        extractable: Some(false),
        ..ListFilter::default()
    };
    let (keys, _) = blocking(|| state.store.list(instance, &filter))?;
    let mut rotated = 0;
    for key in keys {
        let (Some(months), Some(true)) = (
            key.policies.rotation_interval_month,
            key.policies.rotation_enabled,
        ) else {
            continue;
        };
        let last = key.last_rotated.unwrap_or(key.created);
        if key.imported || key.deletion.is_some() || now_ms() < last + i64::from(months) * MONTH_MS
        {
            continue;
        }
        let binding = Binding {
            instance,
            key: key.id,
            version: key.newest_version + 1,
            extractable: false,
        };
        add_version(state, instance, &key, binding, None).await?;
        state.audit.record(
            instance,
            "rotate",
            &key.id.to_string(),
            "rotation policy",
            rotor_proto::audit::Verdict::Accepted,
        );
        rotated += 1;
    }
    Ok(rotated)
}

pub(super) fn key_policies_json(key: &KeyMeta) -> Vec<Value> {
    let base = |body: Value| {
        let mut policy = json!({
            "type": POLICY_TYPE,
            "crn": crn(key.instance, "key", &key.id.to_string()),
            "createdBy": key.created_by,
            "creationDate": rfc3339(key.created),
            "lastUpdateDate": rfc3339(key.policies.updated.as_ref().map_or(key.created, |u| u.at)),
            "updatedBy": key.policies.updated.as_ref().map_or(key.created_by.clone(), |u| u.by.clone()),
        });
        if let (Some(target), Some(fields)) = (policy.as_object_mut(), body.as_object()) {
            target.extend(fields.clone());
        }
        policy
    };
    let mut out = Vec::new();
    if let Some(months) = key.policies.rotation_interval_month {
        out.push(base(json!({"rotation": {"interval_month": months, "enabled": key.policies.rotation_enabled.unwrap_or(true)}})));
    }
    if let Some(enabled) = key.policies.dual_auth_delete {
        out.push(base(json!({"dualAuthDelete": {"enabled": enabled}})));
    }
    out
}

fn key_policies_response(key: &KeyMeta) -> Response {
    collection_response(StatusCode::OK, policy_collection(key_policies_json(key)))
}

pub(super) async fn get_key_policies(
    State(state): State<KpState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> KpResult<Response> {
    let caller = state.caller(&headers, Role::Reader)?;
    let key = state.find_key(&caller, &id)?;
    Ok(key_policies_response(&key))
}

pub(super) async fn put_key_policies(
    State(state): State<KpState>,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: Bytes,
) -> KpResult<Response> {
    let caller = state.caller(&headers, Role::Manager)?;
    let key = state.find_key(&caller, &id)?;
    let mut rotation = None;
    let mut dual = None;
    for policy in parse_collection::<KeyPolicy>(&body)? {
        if policy.rotation.is_none() && policy.dual_auth_delete.is_none() {
            return Err(KpError::BadBody(
                "a key policy is 'rotation' or 'dualAuthDelete'".to_owned(),
            ));
        }
        if let Some(policy) = policy.rotation {
            let months = u8::try_from(policy.interval_month)
                .ok()
                .filter(|m| (1..=12).contains(m))
                .ok_or_else(|| KpError::field("rotation.interval_month", "must be 1 to 12"))?;
            rotation = Some((months, policy.enabled.unwrap_or(true)));
        }
        if let Some(policy) = policy.dual_auth_delete {
            dual = Some(policy.enabled);
        }
    }
    let sub = caller.claims.sub.as_str();
    let updated = blocking(|| {
        state.store.update(key.instance, key.id, &mut |k| {
            if let Some((months, enabled)) = rotation {
                k.policies.rotation_interval_month = Some(months);
                k.policies.rotation_enabled = Some(enabled);
            }
            if let Some(enabled) = dual {
                if !enabled && k.policies.dual_auth_delete == Some(true) {
                    return Err(StoreError::Refused(
                        "dual authorization for deletion cannot be turned off for a key once it is on".to_owned(),
                    ));
                }
                k.policies.dual_auth_delete = Some(enabled);
            }
            k.policies.updated = Some(Deletion {
                at: now_ms(),
                by: sub.to_owned(),
            });
            Ok(())
        })
    })?;
    state.audit_event(&caller, "policy", &key.id.to_string());
    Ok(key_policies_response(&updated))
}

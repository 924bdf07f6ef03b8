//! Key actions: wrap, unwrap, rewrap, rotate, enable, disable, set and unset for deletion,
//! in the `/actions/{action}` form and the older `?action=` form.

use std::sync::atomic::{AtomicBool, Ordering};

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use rotor_store::{DeletionAuthorization, KeyMeta, KeyState, StoreError};
use rotor_unit::keyapi::{Plaintext, RewrapRequest, UnwrapRequest, WrapRequest, Wrapped};
use rotor_unit::keys::{Binding, ciphertext_version};
use serde::Deserialize;
use serde_json::json;
use zeroize::Zeroizing;

use rotor_proto::audit::Verdict;
use rotor_util::time::now_ms;

use super::caller::Caller;
use super::error::{KpError, KpResult};
use super::lifecycle::{DELETION_AUTHORIZATION_MS, add_version, dual_auth, usable};
use super::requests::{
    Base64Bytes, RotateBody, UnwrapBody, WrapBody, parse_body, parse_optional_body,
};
use super::{KpState, blocking};
use crate::iam::Role;

/// How often a key's associated resources may be synced.
const SYNC_INTERVAL_MS: i64 = 3600 * 1000;

pub(super) async fn key_action(
    State(state): State<KpState>,
    headers: HeaderMap,
    Path((id, action)): Path<(String, String)>,
    body: Bytes,
) -> KpResult<Response> {
    run_action(&state, &headers, &id, &action, &body).await
}

#[derive(Deserialize)]
pub(super) struct ActionQuery {
    action: Option<String>,
}

/// The older form `POST /keys/{id}?action=wrap`.
pub(super) async fn key_action_query(
    State(state): State<KpState>,
    headers: HeaderMap,
    Path(id): Path<String>,
    Query(query): Query<ActionQuery>,
    body: Bytes,
) -> KpResult<Response> {
    let action = query.action.ok_or_else(|| KpError::InvalidParameter {
        name: "action",
        problem: "is missing".to_owned(),
    })?;
    run_action(&state, &headers, &id, &action, &body).await
}

pub(super) async fn run_action(
    state: &KpState,
    headers: &HeaderMap,
    id: &str,
    action: &str,
    body: &[u8],
) -> KpResult<Response> {
    let needed = match action {
        "wrap" | "unwrap" | "rewrap" => Role::Reader,
        "rotate" | "enable" | "disable" | "sync" => Role::Writer,
        "setKeyForDeletion" | "unsetKeyForDeletion" => Role::Writer,
        other => {
            return Err(KpError::InvalidParameter {
                name: "action",
                problem: format!("names no action: '{other}'"),
            });
        }
    };
    let key_use = matches!(action, "wrap" | "unwrap" | "rewrap");
    let caller = match state.caller(headers, needed) {
        Ok(caller) => caller,
        Err(err) => {
            if key_use {
                state.audit_refused_caller(headers, id, action, &err);
            }
            return Err(err);
        }
    };
    let key = state.find_key(&caller, id)?;
    let result = perform_action(state, &caller, &key, action, body).await;
    match &result {
        Ok(_) if !key_use && action != "sync" => {
            state.audit_event(&caller, action, &key.id.to_string());
        }
        Err(err @ (KpError::KeyDeleted(_) | KpError::InvalidState(_))) if key_use => {
            state.audit.record(
                caller.instance,
                action,
                &key.id.to_string(),
                &caller.claims.sub,
                Verdict::Refused {
                    code: err.reason().code.to_owned(),
                },
            );
        }
        _ => {}
    }
    result
}

/// Carries out one action on a found key.
async fn perform_action(
    state: &KpState,
    caller: &Caller,
    key: &KeyMeta,
    action: &str,
    body: &[u8],
) -> KpResult<Response> {
    match action {
        "wrap" => wrap(state, caller, key, parse_optional_body(body)?).await,
        "unwrap" => unwrap(state, caller, key, parse_body(body)?, false).await,
        "rewrap" => unwrap(state, caller, key, parse_body(body)?, true).await,
        "rotate" => rotate(state, caller, key, parse_optional_body(body)?).await,
        "enable" | "disable" => {
            if key.deletion.is_some() {
                return Err(KpError::KeyDeleted(key.id));
            }
            let (from, to) = if action == "enable" {
                (KeyState::Suspended, KeyState::Active)
            } else {
                (KeyState::Active, KeyState::Suspended)
            };
            blocking(|| {
                state.store.update(key.instance, key.id, &mut |k| {
                    if k.state != from && k.state != to {
                        return Err(StoreError::Refused(format!(
                            "key {} cannot be {action}d in its state",
                            k.id
                        )));
                    }
                    k.state = to;
                    Ok(())
                })
            })?;
            Ok(StatusCode::NO_CONTENT.into_response())
        }
        "setKeyForDeletion" | "unsetKeyForDeletion" => {
            if !dual_auth(key) {
                return Err(KpError::NotDualAuth);
            }
            let sub = caller.claims.sub.as_str();
            let set = action == "setKeyForDeletion";
            blocking(|| {
                state.store.update(key.instance, key.id, &mut |k| {
                    k.deletion_authorization = set.then(|| DeletionAuthorization {
                        by: sub.to_owned(),
                        until: now_ms() + DELETION_AUTHORIZATION_MS,
                    });
                    Ok(())
                })
            })?;
            Ok(StatusCode::NO_CONTENT.into_response())
        }
        "sync" => {
            claim_sync(state, key, now_ms())?;
            Ok(StatusCode::NO_CONTENT.into_response())
        }
        _ => Err(KpError::InvalidParameter {
            name: "action",
            problem: format!("names no action: '{action}'"),
        }),
    }
}

/// Key Protect takes one sync of a key's associated resources an hour (DOC:sync-resources).
/// Remembered by each replica: a sync only asks associated services to refresh, so one more
/// through another replica does no harm.
fn claim_sync(state: &KpState, key: &KeyMeta, now: i64) -> KpResult<()> {
    let mut last_sync = state
        .last_sync
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    last_sync.retain(|_, at| now < *at + SYNC_INTERVAL_MS);
    if let Some(at) = last_sync.get(&key.id) {
        return Err(KpError::SyncTooEarly {
            from: at + SYNC_INTERVAL_MS,
        });
    }
    last_sync.insert(key.id, now);
    Ok(())
}

pub(super) async fn wrap(
    state: &KpState,
    caller: &Caller,
    key: &KeyMeta,
    body: WrapBody,
) -> KpResult<Response> {
    usable(key)?;
    if key.extractable {
        return Err(KpError::RootKeyRequired { action: "wrap" });
    }
    let aad = body.aad.unwrap_or_default();
    let newest = state.read(|| {
        state
            .store
            .version(key.instance, key.id, key.newest_version)
    })?;
    let first_attempt = AtomicBool::new(true);
    let request = || {
        let key_ref =
            state.key_version_preread(key, key.newest_version, newest.as_ref(), &first_attempt);
        first_attempt.store(false, Ordering::Relaxed);
        Ok(WrapRequest {
            key: key_ref?,
            plaintext: body
                .plaintext
                .as_ref()
                .map(|p| Zeroizing::new(p.as_slice().to_vec())),
            aad: aad.clone(),
        })
    };
    let version_id = newest.as_ref().map(|v| v.id);
    let wrapped: Wrapped = state.unit_call_fresh(caller.instance, request).await?;
    let mut body = json!({
        "ciphertext": B64.encode(&wrapped.ciphertext),
        "keyVersion": {"id": version_id},
    });
    if let Some(plaintext) = wrapped.plaintext {
        body["plaintext"] = json!(B64.encode(plaintext));
    }
    Ok(axum::Json(body).into_response())
}

pub(super) async fn unwrap(
    state: &KpState,
    caller: &Caller,
    key: &KeyMeta,
    body: UnwrapBody,
    rewrap: bool,
) -> KpResult<Response> {
    usable(key)?;
    let ciphertext = body.ciphertext.into_vec();
    let aad = body.aad.unwrap_or_default();
    let version = ciphertext_version(&ciphertext)
        .filter(|v| *v >= 1 && *v <= key.newest_version)
        .ok_or(KpError::UnprocessableCiphertext)?;
    let from = state.read(|| state.store.version(key.instance, key.id, version))?;
    let newest = if version == key.newest_version {
        from.clone()
    } else {
        state.read(|| {
            state
                .store
                .version(key.instance, key.id, key.newest_version)
        })?
    };
    let from_id = from.as_ref().map(|v| v.id);
    let newest_id = newest.as_ref().map(|v| v.id);
    let first_attempt = AtomicBool::new(true);
    let rewrap_request = |reveal_plaintext| {
        let from_ref = state.key_version_preread(key, version, from.as_ref(), &first_attempt);
        let to_ref =
            state.key_version_preread(key, key.newest_version, newest.as_ref(), &first_attempt);
        first_attempt.store(false, Ordering::Relaxed);
        Ok(RewrapRequest {
            from: from_ref?,
            to: to_ref?,
            ciphertext: ciphertext.clone(),
            aad: aad.clone(),
            reveal_plaintext,
        })
    };
    if rewrap {
        let wrapped: Wrapped = state
            .unit_call_fresh(caller.instance, || rewrap_request(false))
            .await?;
        return Ok(axum::Json(json!({
            "ciphertext": B64.encode(&wrapped.ciphertext),
            "keyVersion": {"id": from_id},
            "rewrappedKeyVersion": {"id": newest_id},
        }))
        .into_response());
    }
    if version == key.newest_version {
        let request = || {
            let key_ref = state.key_version_preread(key, version, from.as_ref(), &first_attempt);
            first_attempt.store(false, Ordering::Relaxed);
            Ok(UnwrapRequest {
                key: key_ref?,
                ciphertext: ciphertext.clone(),
                aad: aad.clone(),
            })
        };
        let plain: Plaintext = state.unit_call_fresh(caller.instance, request).await?;
        return Ok(axum::Json(json!({
            "plaintext": B64.encode(&plain.plaintext),
            "keyVersion": {"id": from_id},
        }))
        .into_response());
    }
    // An older version: as Key Protect does, hand back the DEK wrapped under the newest version
    // too, in one pass through the unit.
    let wrapped: Wrapped = state
        .unit_call_fresh(caller.instance, || rewrap_request(true))
        .await?;
    Ok(axum::Json(json!({
        "plaintext": B64.encode(wrapped.plaintext.unwrap_or_default()),
        "ciphertext": B64.encode(&wrapped.ciphertext),
        "keyVersion": {"id": from_id},
        "rewrappedKeyVersion": {"id": newest_id},
    }))
    .into_response())
}

pub(super) async fn rotate(
    state: &KpState,
    caller: &Caller,
    key: &KeyMeta,
    body: RotateBody,
) -> KpResult<Response> {
    usable(key)?;
    if key.extractable {
        return Err(KpError::RootKeyRequired { action: "rotate" });
    }
    // Secure import applies to creation only; rotating with material encrypted to the import
    // token is not supported yet, and must not import the encrypted bytes as the key.
    if body.encrypted_nonce.is_some() || body.iv.is_some() || body.encryption_algorithm.is_some() {
        return Err(KpError::field(
            "encryptedNonce",
            "is not supported on rotate yet: rotate an imported key with its new material in `payload`",
        ));
    }
    let payload = body.payload.map(Base64Bytes::into_secret);
    if key.imported && payload.is_none() {
        return Err(KpError::PayloadRequired);
    }
    if !key.imported && payload.is_some() {
        return Err(KpError::field(
            "payload",
            "is not taken: a generated root key is rotated without one",
        ));
    }
    let version = key.newest_version + 1;
    let binding = Binding {
        instance: key.instance,
        key: key.id,
        version,
        extractable: false,
    };
    add_version(state, caller.instance, key, binding, payload).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

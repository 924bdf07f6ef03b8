//! Keys: create and import, list, get, metadata, versions, move to a key ring, delete,
//! restore and purge.

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use rotor_store::{Deletion, KeyMeta, KeyState, KeyVersion, ListFilter, StoreError};
use rotor_unit::keyapi::{ExportRequest, GenerateRequest, ImportRequest, Plaintext, SealedKey};
use rotor_unit::keys::Binding;
use serde::Deserialize;
use serde_json::json;
use uuid::Uuid;

use rotor_util::time::{now_ms, rfc3339};

use super::caller::key_ring_header;
use super::error::{KpError, KpResult};
use super::import_token::{EncryptedMaterial, secure_import};
use super::instance_policies::{KeyOrigin, create_import_access, instance_dual_auth};
use super::lifecycle::{RESTORE_WINDOW_MS, dual_auth};
use super::names::{check_alias, check_name};
use super::requests::{KeyCreate, PatchKeyBody, parse_body, parse_single};
use super::wire::{KEY_TYPE, Prefer, collection, collection_response, key_json};
use super::{KpState, blocking};
use crate::iam::Role;

/// `POST /keys` and `POST /keys_with_policy_overrides`: creates a key, or imports one given
/// `payload` (encrypted to the import token when `encryptedNonce` comes with it).
pub(super) async fn create_key(
    State(state): State<KpState>,
    headers: HeaderMap,
    body: Bytes,
) -> KpResult<Response> {
    let caller = state.caller(&headers, Role::Writer)?;
    let request: KeyCreate = parse_single(&body)?;
    check_name(&request.name)?;
    let description = request.description.unwrap_or_default();
    if description.chars().count() > 240 {
        return Err(KpError::field("description", "has at most 240 characters"));
    }
    let extractable = request.extractable.unwrap_or(false);
    let aliases = request.aliases.unwrap_or_default();
    if aliases.len() > 5 {
        return Err(KpError::field("aliases", "lists at most 5 aliases"));
    }
    for alias in &aliases {
        check_alias(alias)?;
    }
    let tags = request.tags.unwrap_or_default();
    if tags.len() > 30 {
        return Err(KpError::field("tags", "lists at most 30 tags"));
    }
    let rotation_interval_month = match request.rotation.as_ref().and_then(|r| r.interval_month) {
        None => None,
        Some(months) => Some(
            u8::try_from(months)
                .ok()
                .filter(|m| (1..=12).contains(m))
                .ok_or_else(|| KpError::field("rotation.interval_month", "is 1 to 12"))?,
        ),
    };
    let key_ring = caller
        .key_ring
        .clone()
        .unwrap_or_else(|| "default".to_owned());
    let rings = blocking(|| state.store.key_rings(caller.instance))?;
    if !rings.iter().any(|ring| ring.id == key_ring) {
        return Err(KpError::KeyRingNotFound(key_ring));
    }
    if let Some(access) = create_import_access(&state, caller.instance)? {
        let origin = match (&request.payload, &request.encrypted_nonce) {
            (None, _) => KeyOrigin::Generated,
            (Some(_), None) => KeyOrigin::Imported,
            (Some(_), Some(_)) => KeyOrigin::SecurelyImported,
        };
        access.check(&origin, extractable)?;
    }
    let id = Uuid::new_v4();
    let binding = Binding {
        instance: caller.instance,
        key: id,
        version: 1,
        extractable,
    };
    let imported = request.payload.is_some();
    let now = now_ms();
    let policies = rotor_store::KeyPolicies {
        dual_auth_delete: match request.dual_auth_delete {
            Some(dual_auth) => Some(dual_auth.enabled),
            None => instance_dual_auth(&state, caller.instance)?.then_some(true),
        },
        rotation_interval_month,
        rotation_enabled: rotation_interval_month
            .and(request.rotation)
            .and_then(|rotation| rotation.enabled),
        ..rotor_store::KeyPolicies::default()
    };
    let key = KeyMeta {
        instance: caller.instance,
        id,
        name: request.name.clone(),
        description,
        extractable,
        imported,
        state: KeyState::Active,
        key_ring,
        aliases,
        created: now,
        created_by: caller.claims.sub.clone(),
        updated: now,
        last_rotated: None,
        deletion: None,
        deletion_authorization: None,
        policies,
        newest_version: 1,
        labels: tags,
    };
    let mut retried = false;
    let (version, material) = loop {
        let sealed: SealedKey = match (request.payload.clone(), request.encrypted_nonce.clone()) {
            (Some(encrypted_material), Some(encrypted_nonce)) => {
                let material = EncryptedMaterial {
                    material: encrypted_material.into_vec(),
                    encrypted_nonce: encrypted_nonce.into_vec(),
                    iv: request
                        .iv
                        .clone()
                        .ok_or_else(|| KpError::field("iv", "is required for a secure import"))?
                        .into_vec(),
                    algorithm: request
                        .encryption_algorithm
                        .clone()
                        .unwrap_or_else(|| "RSAES_OAEP_SHA_256".to_owned()),
                };
                secure_import(&state, caller.instance, binding.clone(), material).await?
            }
            (Some(material), None) => {
                let material = material.into_secret();
                state
                    .unit_call(
                        caller.instance,
                        &ImportRequest {
                            binding: binding.clone(),
                            material,
                        },
                    )
                    .await?
            }
            (None, Some(_)) => {
                return Err(KpError::field(
                    "payload",
                    "is required: a secure import needs the encrypted key material",
                ));
            }
            (None, None) => {
                state
                    .unit_call(
                        caller.instance,
                        &GenerateRequest {
                            binding: binding.clone(),
                            length: 32,
                        },
                    )
                    .await?
            }
        };
        let version = KeyVersion {
            version: 1,
            id: Uuid::new_v4(),
            vp: sealed.vp,
            blob: sealed.blob,
            created: now,
        };
        match blocking(|| state.store.create_key(&key, &version)) {
            // Wrapped before the units moved to the new master key, stored after a rotation
            // closed the old one: wrap again, under the new one.
            Err(StoreError::Retired(_)) if !retried => retried = true,
            result => {
                result?;
                break (version, sealed.material);
            }
        }
    };
    let event = if imported { "import" } else { "create" };
    state.audit_event(&caller, event, &key.id.to_string());
    tracing::info!(instance = %key.instance, key = %key.id, extractable, imported, "key created");
    if Prefer::of(&headers) == Prefer::Minimal {
        return Ok(StatusCode::CREATED.into_response());
    }
    Ok(state.key_collection(
        StatusCode::CREATED,
        &key,
        Some(&version),
        material.as_ref().map(|material| material.as_slice()),
    ))
}

#[derive(Deserialize)]
pub(super) struct ListQuery {
    limit: Option<String>,
    offset: Option<String>,
    state: Option<String>,
    extractable: Option<String>,
    #[serde(rename = "totalCount")]
    total_count: Option<String>,
}

/// The filter a query asks for, or `None` when it asks only for states no key can be in.
pub(super) fn list_filter(query: &ListQuery, headers: &HeaderMap) -> KpResult<Option<ListFilter>> {
    let number =
        |field: &'static str, value: &Option<String>, default: u32, max: u32| -> KpResult<u32> {
            match value {
                None => Ok(default),
                Some(text) => text
                    .parse::<u32>()
                    .ok()
                    .filter(|n| *n <= max)
                    .ok_or_else(|| KpError::InvalidParameter {
                        name: field,
                        problem: format!("must be a number from 0 to {max}"),
                    }),
            }
        };
    let mut states = Vec::new();
    let mut asked = false;
    for part in query.state.as_deref().unwrap_or_default().split(',') {
        let part = part.trim();
        if part.is_empty() {
            continue;
        }
        asked = true;
        match part.parse::<u8>() {
            // Pre-activation: rotor makes keys active at once, so no key is in it.
            Ok(0) => {}
            Ok(n) => states.push(KeyState::try_from(n).map_err(|_| invalid_states())?),
            Err(_) => {
                return Err(invalid_states());
            }
        }
    }
    let extractable = match query.extractable.as_deref() {
        None => None,
        Some("true") => Some(true),
        Some("false") => Some(false),
        Some(_) => {
            return Err(KpError::InvalidParameter {
                name: "extractable",
                problem: "must be true or false".to_owned(),
            });
        }
    };
    let limit = number("limit", &query.limit, 200, 5000)?;
    let offset = number("offset", &query.offset, 0, u32::MAX)?;
    // Checked after every parameter, so that a bad one is refused whatever `state` asks.
    if asked && states.is_empty() {
        return Ok(None);
    }
    Ok(Some(ListFilter {
        limit,
        offset,
        states,
        extractable,
        key_ring: key_ring_header(headers),
    }))
}

fn invalid_states() -> KpError {
    KpError::InvalidParameter {
        name: "state",
        problem: "is a list of 0, 1, 2, 3 and 5".to_owned(),
    }
}

pub(super) async fn list_keys(
    State(state): State<KpState>,
    headers: HeaderMap,
    Query(query): Query<ListQuery>,
) -> KpResult<Response> {
    let caller = state.caller(&headers, Role::Reader)?;
    let (keys, total) = match list_filter(&query, &headers)? {
        Some(filter) => blocking(|| state.store.list(caller.instance, &filter))?,
        None => (Vec::new(), 0),
    };
    let resources = keys
        .iter()
        .map(|key| key_json(key, None, None, state.purge_after_seconds))
        .collect();
    let mut body = collection(KEY_TYPE, resources);
    if query.total_count.as_deref() == Some("true") {
        body["metadata"]["totalCount"] = json!(total);
    }
    Ok(collection_response(StatusCode::OK, body))
}

pub(super) async fn key_total(
    State(state): State<KpState>,
    headers: HeaderMap,
    Query(query): Query<ListQuery>,
) -> KpResult<Response> {
    let caller = state.caller(&headers, Role::Reader)?;
    let total = match list_filter(&query, &headers)? {
        Some(filter) => {
            let filter = ListFilter { limit: 0, ..filter };
            blocking(|| state.store.list(caller.instance, &filter))?.1
        }
        None => 0,
    };
    let mut response = StatusCode::OK.into_response();
    if let Ok(value) = HeaderValue::from_str(&total.to_string()) {
        response.headers_mut().insert("key-total", value);
    }
    Ok(response)
}

pub(super) async fn get_key(
    State(state): State<KpState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> KpResult<Response> {
    let caller = state.caller(&headers, Role::Reader)?;
    let key = state.find_key(&caller, &id)?;
    if key.deletion.is_some() {
        return Err(KpError::KeyDeleted(key.id));
    }
    let newest = state.key_version(&key, key.newest_version)?;
    let versions = blocking(|| {
        state
            .store
            .version(key.instance, key.id, key.newest_version)
    })?;
    // A standard key's material is for Writers and above, as Key Protect's Reader cannot read it.
    let may_read_material = caller.claims.role.permits(Role::Writer);
    let payload = if key.extractable && key.state == KeyState::Active && may_read_material {
        let exported: Plaintext = state
            .unit_call(caller.instance, &ExportRequest { key: newest })
            .await?;
        Some(exported.plaintext)
    } else {
        None
    };
    Ok(state.key_collection(
        StatusCode::OK,
        &key,
        versions.as_ref(),
        payload.as_ref().map(|payload| payload.as_slice()),
    ))
}

pub(super) async fn get_metadata(
    State(state): State<KpState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> KpResult<Response> {
    let caller = state.caller(&headers, Role::Reader)?;
    let key = state.find_key(&caller, &id)?;
    let newest = blocking(|| {
        state
            .store
            .version(key.instance, key.id, key.newest_version)
    })?;
    Ok(state.key_collection(StatusCode::OK, &key, newest.as_ref(), None))
}

pub(super) async fn get_versions(
    State(state): State<KpState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> KpResult<Response> {
    let caller = state.caller(&headers, Role::Reader)?;
    let key = state.find_key(&caller, &id)?;
    let versions = blocking(|| state.store.versions(key.instance, key.id))?;
    let resources = versions
        .iter()
        .rev()
        .map(|v| json!({"id": v.id, "creationDate": rfc3339(v.created)}))
        .collect();
    Ok(collection_response(
        StatusCode::OK,
        collection("application/vnd.ibm.kms.key_version+json", resources),
    ))
}

pub(super) async fn patch_key(
    State(state): State<KpState>,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: Bytes,
) -> KpResult<Response> {
    let caller = state.caller(&headers, Role::Manager)?;
    let key = state.find_key(&caller, &id)?;
    let ring = parse_body::<PatchKeyBody>(&body)?.key_ring_id;
    let rings = blocking(|| state.store.key_rings(caller.instance))?;
    if !rings.iter().any(|r| r.id == ring) {
        return Err(KpError::KeyRingNotFound(ring));
    }
    let updated = blocking(|| {
        state.store.update(key.instance, key.id, &mut |k| {
            k.key_ring.clone_from(&ring);
            Ok(())
        })
    })?;
    Ok(state.key_collection(StatusCode::OK, &updated, None, None))
}

pub(super) async fn delete_key(
    State(state): State<KpState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> KpResult<Response> {
    let caller = state.caller(&headers, Role::Manager)?;
    let key = state.find_key(&caller, &id)?;
    if key.deletion.is_some() {
        return Err(KpError::KeyDeleted(key.id));
    }
    let needs_second = dual_auth(&key);
    let sub = caller.claims.sub.as_str();
    // The store only says "refused"; the reason a client sees is kept here.
    let mut unauthorized = None;
    let deleted = blocking(|| {
        state.store.update(key.instance, key.id, &mut |k| {
            if needs_second {
                match &k.deletion_authorization {
                    Some(pending) if pending.until > now_ms() && pending.by != sub => {}
                    Some(pending) if pending.by == sub => {
                        unauthorized = Some(
                            "dual authorization: the key was set for deletion by you; another identity must delete it",
                        );
                        return Err(StoreError::Refused(String::new()));
                    }
                    _ => {
                        unauthorized = Some(
                            "dual authorization: set the key for deletion first, then another identity deletes it",
                        );
                        return Err(StoreError::Refused(String::new()));
                    }
                }
            }
            k.state = KeyState::Destroyed;
            k.deletion = Some(Deletion {
                at: now_ms(),
                by: sub.to_owned(),
            });
            k.deletion_authorization = None;
            Ok(())
        })
    });
    if let Some(why) = unauthorized {
        return Err(KpError::AuthorizationsNotMet(why));
    }
    let deleted = deleted?;
    tracing::info!(key = %key.id, "key deleted");
    state.audit_event(&caller, "delete", &key.id.to_string());
    state.forget_cached(&key).await;
    Ok(match Prefer::of(&headers) {
        Prefer::Minimal => StatusCode::NO_CONTENT.into_response(),
        Prefer::Representation => state.key_collection(StatusCode::OK, &deleted, None, None),
    })
}

pub(super) async fn restore_key(
    State(state): State<KpState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> KpResult<Response> {
    let caller = state.caller(&headers, Role::Manager)?;
    let key = state.find_key(&caller, &id)?;
    let restored = blocking(|| {
        state.store.update(key.instance, key.id, &mut |k| {
            match &k.deletion {
                None => return Err(StoreError::Refused(format!("key {} is not deleted", k.id))),
                Some(deletion) if now_ms() > deletion.at + RESTORE_WINDOW_MS => {
                    return Err(StoreError::Refused(
                        "a key can be restored only within 30 days of its deletion".to_owned(),
                    ));
                }
                Some(_) => {}
            }
            k.deletion = None;
            k.state = KeyState::Active;
            Ok(())
        })
    })?;
    state.audit_event(&caller, "restore", &key.id.to_string());
    Ok(match Prefer::of(&headers) {
        Prefer::Minimal => StatusCode::CREATED.into_response(),
        Prefer::Representation => state.key_collection(StatusCode::CREATED, &restored, None, None),
    })
}

pub(super) async fn purge_key(
    State(state): State<KpState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> KpResult<Response> {
    let caller = state.caller(&headers, Role::Manager)?;
    let key = state.find_key(&caller, &id)?;
    let Some(deletion) = &key.deletion else {
        return Err(KpError::InvalidState(
            "only a deleted key can be purged; delete it first".to_owned(),
        ));
    };
    let allowed_from = deletion.at + i64::try_from(state.purge_after_seconds).unwrap_or(0) * 1000;
    if now_ms() < allowed_from {
        return Err(KpError::PurgeNotAllowed { from: allowed_from });
    }
    blocking(|| state.store.purge(key.instance, key.id))?;
    tracing::info!(key = %key.id, "key purged");
    state.audit_event(&caller, "purge", &key.id.to_string());
    state.forget_cached(&key).await;
    Ok(match Prefer::of(&headers) {
        Prefer::Minimal => StatusCode::NO_CONTENT.into_response(),
        Prefer::Representation => state.key_collection(StatusCode::OK, &key, None, None),
    })
}

//! Key rings and aliases.

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use rotor_store::KeyRing;
use serde_json::{Value, json};

use rotor_util::time::{now_ms, rfc3339};

use super::error::{KpError, KpResult};
use super::names::check_alias;
use super::wire::{collection, collection_response};
use super::{KpState, blocking};
use crate::iam::Role;

pub(super) async fn create_alias(
    State(state): State<KpState>,
    headers: HeaderMap,
    Path((id, alias)): Path<(String, String)>,
) -> KpResult<Response> {
    let caller = state.caller(&headers, Role::Writer)?;
    check_alias(&alias)?;
    let key = state.find_key(&caller, &id)?;
    if key.aliases.len() >= 5 {
        return Err(KpError::InvalidParameter {
            name: "alias",
            problem: "cannot be added: a key has at most 5 aliases".to_owned(),
        });
    }
    blocking(|| state.store.add_alias(key.instance, key.id, &alias))?;
    let resource = json!({
        "keyId": key.id,
        "alias": alias,
        "creationDate": rfc3339(now_ms()),
        "createdBy": caller.claims.sub,
    });
    Ok(collection_response(
        StatusCode::CREATED,
        collection("application/vnd.ibm.kms.alias+json", vec![resource]),
    ))
}

pub(super) async fn delete_alias(
    State(state): State<KpState>,
    headers: HeaderMap,
    Path((id, alias)): Path<(String, String)>,
) -> KpResult<Response> {
    let caller = state.caller(&headers, Role::Writer)?;
    let key = state.find_key(&caller, &id)?;
    blocking(|| state.store.remove_alias(key.instance, key.id, &alias))?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

pub(super) fn ring_json(ring: &KeyRing) -> Value {
    json!({"id": ring.id, "creationDate": rfc3339(ring.created), "createdBy": ring.created_by})
}

pub(super) async fn list_key_rings(
    State(state): State<KpState>,
    headers: HeaderMap,
) -> KpResult<Response> {
    let caller = state.caller(&headers, Role::Reader)?;
    let rings = blocking(|| state.store.key_rings(caller.instance))?;
    let resources = rings.iter().map(ring_json).collect();
    Ok(collection_response(
        StatusCode::OK,
        collection("application/vnd.ibm.kms.key_ring+json", resources),
    ))
}

pub(super) async fn create_key_ring(
    State(state): State<KpState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> KpResult<Response> {
    let caller = state.caller(&headers, Role::Manager)?;
    let valid =
        (2..=100).contains(&id.len()) && id.chars().all(|c| c.is_ascii_alphanumeric() || c == '-');
    if !valid {
        return Err(KpError::InvalidParameter {
            name: "id",
            problem: "has 2 to 100 letters, digits and '-'".to_owned(),
        });
    }
    let ring = KeyRing {
        id,
        created: now_ms(),
        created_by: caller.claims.sub.clone(),
    };
    blocking(|| state.store.create_key_ring(caller.instance, &ring))?;
    // Key Protect answers a new key ring with 201 and no body.
    Ok(StatusCode::CREATED.into_response())
}

pub(super) async fn delete_key_ring(
    State(state): State<KpState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> KpResult<Response> {
    let caller = state.caller(&headers, Role::Manager)?;
    blocking(|| state.store.delete_key_ring(caller.instance, &id))?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

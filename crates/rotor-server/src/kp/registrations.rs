//! Registrations: rotor has none yet, so both routes answer an empty collection.

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;

use super::KpState;
use super::error::KpResult;
use super::wire::{collection, collection_response};
use crate::iam::Role;

pub(super) async fn registrations(
    State(state): State<KpState>,
    headers: HeaderMap,
) -> KpResult<Response> {
    state.caller(&headers, Role::Reader)?;
    Ok(no_registrations())
}

pub(super) async fn key_registrations(
    State(state): State<KpState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> KpResult<Response> {
    let caller = state.caller(&headers, Role::Reader)?;
    state.find_key(&caller, &id)?;
    Ok(no_registrations())
}

fn no_registrations() -> Response {
    collection_response(
        StatusCode::OK,
        collection("application/vnd.ibm.kms.registration+json", Vec::new()),
    )
}

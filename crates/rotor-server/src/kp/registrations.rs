//! Registrations: rotor has none yet, so both routes answer an empty collection.

use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};

use super::KpState;
use super::error::KpResult;
use super::wire::collection;
use crate::iam::Role;

pub(super) async fn registrations(
    State(state): State<KpState>,
    headers: HeaderMap,
) -> KpResult<Response> {
    state.caller(&headers, Role::Reader)?;
    Ok(axum::Json(collection(
        "application/vnd.ibm.kms.registration+json",
        Vec::new(),
    ))
    .into_response())
}

pub(super) async fn key_registrations(
    State(state): State<KpState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> KpResult<Response> {
    let caller = state.caller(&headers, Role::Reader)?;
    state.find_key(&caller, &id)?;
    Ok(axum::Json(collection(
        "application/vnd.ibm.kms.registration+json",
        Vec::new(),
    ))
    .into_response())
}

//! Application-held key blobs: for applications that keep their own keys wrapped by the master
//! key instead of in key storage, as GREP11 applications do. `POST /v1/blobs/{op}` with the
//! Key Protect headers (`Authorization`, `Bluemix-Instance`) and the Writer role:
//!
//! - `generate` → `{"blob", "vp"}`: a fresh AES-256 key, wrapped inside a unit;
//! - `wrap` `{"blob", "plaintext"?, "aad"?}` → `{"ciphertext", "plaintext"?}`: a DEK under it;
//! - `unwrap` `{"blob", "ciphertext", "aad"?}` → `{"plaintext"}`;
//! - `rewrap` `{"blob"}` → `{"blob", "vp"}`: the same key under the new master key once a
//!   rotation has pinned it (never when merely committed), until its promotion: hold the
//!   rotation with `--hold-before-promote` so applications can. Keep the old blob until the
//!   rotation completes: before that, admins may abort.
//!
//! A blob is `"ab1" ‖ id (16 bytes) ‖ unit blob`; the unit blob is bound to the instance and
//! the id (as key version 0, which no stored key has), so it works only for its own instance.

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use rotor_unit::keyapi::{
    GenerateRequest, KeyRef, Plaintext, RewrapToNew, SealedKey, UnwrapRequest, WrapRequest, Wrapped,
};
use rotor_unit::keys::Binding;
use serde_json::json;
use uuid::Uuid;

use super::KpState;
use super::error::{KpError, KpResult};
use super::requests::{Base64Bytes, BlobBody, parse_optional_body};
use crate::iam::Role;

const MAGIC: &[u8; 3] = b"ab1";

fn binding(instance: Uuid, id: Uuid) -> Binding {
    Binding {
        instance,
        key: id,
        version: 0,
        extractable: false,
    }
}

fn encode(id: Uuid, blob: &[u8]) -> String {
    let mut out = MAGIC.to_vec();
    out.extend_from_slice(id.as_bytes());
    out.extend_from_slice(blob);
    B64.encode(out)
}

/// The application's blob as the unit's key reference.
fn key_ref(instance: Uuid, blob: Option<&Base64Bytes>) -> KpResult<(Uuid, KeyRef)> {
    let bytes = blob
        .ok_or_else(|| KpError::field("blob", "is required"))?
        .as_slice();
    let (Some(MAGIC), Some(id), Some(blob)) = (
        bytes.get(..3).and_then(|m| <&[u8; 3]>::try_from(m).ok()),
        bytes.get(3..19).and_then(|id| Uuid::from_slice(id).ok()),
        bytes.get(19..),
    ) else {
        return Err(KpError::field("blob", "is not a rotor key blob"));
    };
    Ok((
        id,
        KeyRef {
            binding: binding(instance, id),
            blob: blob.to_vec(),
        },
    ))
}

/// `POST /v1/blobs/{op}`
pub(crate) async fn blob_operation(
    State(state): State<KpState>,
    Path(op): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> KpResult<Response> {
    let caller = state.caller(&headers, Role::Writer)?;
    let instance = caller.instance;
    let request: BlobBody = parse_optional_body(&body)?;
    let answer = match op.as_str() {
        "generate" => {
            let id = Uuid::new_v4();
            let request = GenerateRequest {
                binding: binding(instance, id),
                length: 32,
            };
            let sealed: SealedKey = state.unit_call(instance, &request).await?;
            json!({"blob": encode(id, &sealed.blob), "vp": sealed.vp})
        }
        "wrap" => {
            let (_, key) = key_ref(instance, request.blob.as_ref())?;
            let request = WrapRequest {
                key,
                plaintext: request.plaintext.map(Base64Bytes::into_secret),
                aad: request.aad.unwrap_or_default(),
            };
            let wrapped: Wrapped = state.unit_call(instance, &request).await?;
            let mut answer = json!({"ciphertext": B64.encode(&wrapped.ciphertext)});
            if let Some(plaintext) = wrapped.plaintext {
                answer["plaintext"] = json!(B64.encode(plaintext));
            }
            answer
        }
        "unwrap" => {
            let (_, key) = key_ref(instance, request.blob.as_ref())?;
            let request = UnwrapRequest {
                key,
                ciphertext: request
                    .ciphertext
                    .ok_or_else(|| KpError::field("ciphertext", "is required"))?
                    .into_vec(),
                aad: request.aad.unwrap_or_default(),
            };
            let plain: Plaintext = state.unit_call(instance, &request).await?;
            json!({"plaintext": B64.encode(&plain.plaintext)})
        }
        "rewrap" => {
            let (id, key) = key_ref(instance, request.blob.as_ref())?;
            let sealed: SealedKey = state.unit_call(instance, &RewrapToNew { key }).await?;
            json!({"blob": encode(id, &sealed.blob), "vp": sealed.vp})
        }
        other => {
            return Err(KpError::UnknownBlobOperation(other.to_owned()));
        }
    };
    Ok(axum::Json(answer).into_response())
}

//! Import tokens for secure import: an RSA key pair made inside a unit, whose private key is
//! stored only wrapped under the master key.

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use rotor_store::{ImportToken, StoreError};
use rotor_unit::keyapi::{ImportTokenKeys, ImportTokenRequest, SealedKey, SecureImportRequest};
use rotor_unit::keys::Binding;
use serde_json::{Value, json};
use uuid::Uuid;

use rotor_util::time::{now_ms, rfc3339};

use super::error::{KpError, KpResult};
use super::requests::{ImportTokenBody, parse_optional_body};
use super::{KpState, blocking};
use crate::iam::Role;

/// Key material encrypted to the instance's import token, with what proves it.
pub(super) struct EncryptedMaterial {
    /// The key material, RSA-OAEP encrypted to the token's public key.
    pub(super) material: Vec<u8>,
    /// The token's nonce, AES-GCM encrypted under the key material.
    pub(super) encrypted_nonce: Vec<u8>,
    pub(super) iv: Vec<u8>,
    /// `RSAES_OAEP_SHA_256` or `RSAES_OAEP_SHA_1`.
    pub(super) algorithm: String,
}

/// Imports key material encrypted to the instance's import token, inside a unit.
pub(super) async fn secure_import(
    state: &KpState,
    instance: Uuid,
    binding: Binding,
    encrypted: EncryptedMaterial,
) -> KpResult<SealedKey> {
    let token = blocking(|| state.store.import_token(instance))
        .map_err(token_storage_error)?
        .ok_or(KpError::ImportTokenNotFound)?;
    if now_ms() >= token.expires {
        return Err(KpError::ImportTokenExpired);
    }
    let request = SecureImportRequest {
        binding,
        token: token.id,
        sealed_private_key: token.sealed_private_key,
        algorithm: encrypted.algorithm,
        encrypted_material: encrypted.material,
        nonce: token.nonce,
        encrypted_nonce: encrypted.encrypted_nonce,
        iv: encrypted.iv,
    };
    state
        .unit_call(instance, &request)
        .await
        .map_err(|err| match err {
            KpError::UnprocessableCiphertext => KpError::ImportVerification,
            other => other,
        })
}

/// A token row that does not parse answers as an unreadable import token, as before the
/// store typed it; other storage failures keep their own answer.
fn token_storage_error(err: StoreError) -> KpError {
    match err {
        StoreError::Corrupt(_) => {
            tracing::error!(error = %err, "the stored import token does not parse");
            KpError::ImportTokenUnreadable
        }
        other => other.into(),
    }
}

pub(super) fn import_token_json(token: &ImportToken) -> Value {
    json!({
        "creationDate": rfc3339(token.created),
        "expirationDate": rfc3339(token.expires),
        "maxAllowedRetrievals": token.max_retrievals,
        "remainingRetrievals": token.remaining,
    })
}

pub(super) async fn create_import_token(
    State(state): State<KpState>,
    headers: HeaderMap,
    body: Bytes,
) -> KpResult<Response> {
    let caller = state.caller(&headers, Role::Manager)?;
    let request: ImportTokenBody = parse_optional_body(&body)?;
    let expiration = request.expiration.unwrap_or(600);
    if !(300..=86_400).contains(&expiration) {
        return Err(KpError::field("expiration", "is 300 to 86400 seconds"));
    }
    let max_retrievals = request
        .max_allowed_retrievals
        .map_or(Some(1), |n| u32::try_from(n).ok())
        .filter(|n| (1..=500).contains(n))
        .ok_or_else(|| KpError::field("maxAllowedRetrievals", "is 1 to 500"))?;
    let id = Uuid::new_v4();
    let request = ImportTokenRequest {
        instance: caller.instance,
        token: id,
    };
    let keys: ImportTokenKeys = state.unit_call(caller.instance, &request).await?;
    let mut nonce = [0u8; 12];
    rotor_crypto::fill_random(&mut nonce);
    let created = now_ms();
    let token = ImportToken {
        id,
        created,
        expires: created + i64::try_from(expiration).unwrap_or(600) * 1000,
        max_retrievals,
        remaining: max_retrievals,
        public_key: keys.public_key,
        sealed_private_key: keys.sealed_private_key,
        nonce: nonce.to_vec(),
    };
    blocking(|| {
        state
            .store
            .update_import_token(caller.instance, &mut |slot| {
                *slot = Some(token.clone());
                Ok(())
            })
    })
    .map_err(token_storage_error)?;
    Ok((StatusCode::CREATED, axum::Json(import_token_json(&token))).into_response())
}

pub(super) async fn get_import_token(
    State(state): State<KpState>,
    headers: HeaderMap,
) -> KpResult<Response> {
    let caller = state.caller(&headers, Role::Writer)?;
    let mut refusal = None;
    let stored = blocking(|| {
        state
            .store
            .update_import_token(caller.instance, &mut |slot| {
                let Some(token) = slot.as_mut() else {
                    return Ok(());
                };
                if now_ms() >= token.expires {
                    refusal = Some(KpError::ImportTokenExpired);
                    return Err(StoreError::Refused(String::new()));
                }
                if token.remaining == 0 {
                    refusal = Some(KpError::ImportTokenExhausted);
                    return Err(StoreError::Refused(String::new()));
                }
                token.remaining -= 1;
                Ok(())
            })
    });
    if let Some(refusal) = refusal {
        return Err(refusal);
    }
    let token = stored
        .map_err(token_storage_error)?
        .ok_or(KpError::ImportTokenNotFound)?;
    let mut pem = String::from("-----BEGIN PUBLIC KEY-----\n");
    for line in B64.encode(&token.public_key).as_bytes().chunks(64) {
        pem.push_str(&String::from_utf8_lossy(line));
        pem.push('\n');
    }
    pem.push_str("-----END PUBLIC KEY-----\n");
    let mut body = import_token_json(&token);
    body["payload"] = json!(B64.encode(pem.as_bytes()));
    body["nonce"] = json!(B64.encode(&token.nonce));
    Ok(axum::Json(body).into_response())
}

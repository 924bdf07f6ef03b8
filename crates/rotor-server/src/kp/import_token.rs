//! Import tokens for secure import: an RSA key pair made inside a unit, whose private key is
//! stored only wrapped under the master key.

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use rotor_store::StoreError;
use rotor_unit::keyapi::{ImportTokenKeys, ImportTokenRequest, SealedKey, SecureImportRequest};
use rotor_unit::keys::Binding;
use serde::Deserialize;
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
    let token = blocking(|| state.store.update_import_token(instance, &mut |_| Ok(())))?
        .ok_or(KpError::ImportTokenNotFound)?;
    let token: ImportToken =
        serde_json::from_value(token).map_err(|_| unreadable_import_token())?;
    if now_ms() >= token.expires {
        return Err(KpError::ImportTokenExpired);
    }
    let request = SecureImportRequest {
        binding,
        token: token.id,
        sealed_private_key: B64
            .decode(&token.sealed_private_key)
            .map_err(|_| unreadable_import_token())?,
        algorithm: encrypted.algorithm,
        encrypted_material: encrypted.material,
        nonce: B64
            .decode(&token.nonce)
            .map_err(|_| unreadable_import_token())?,
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

pub(super) fn unreadable_import_token() -> KpError {
    tracing::error!("the stored import token does not parse");
    KpError::ImportTokenUnreadable
}

/// An instance's import token as stored.
#[derive(serde::Serialize, Deserialize)]
pub(super) struct ImportToken {
    id: Uuid,
    created: i64,
    expires: i64,
    max_retrievals: u32,
    remaining: u32,
    /// X.509 SubjectPublicKeyInfo DER, base64.
    public_key: String,
    /// The private key sealed under the master key (by a unit), base64.
    sealed_private_key: String,
    /// Random, base64.
    nonce: String,
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
    let _gate = state.gate.read().await;
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
        public_key: B64.encode(&keys.public_key),
        sealed_private_key: B64.encode(&keys.sealed_private_key),
        nonce: B64.encode(nonce),
    };
    let stored = serde_json::to_value(&token).map_err(|_| unreadable_import_token())?;
    blocking(|| {
        state
            .store
            .update_import_token(caller.instance, &mut |slot| {
                *slot = Some(stored.clone());
                Ok(())
            })
    })?;
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
                let Some(value) = slot.as_mut() else {
                    return Ok(());
                };
                let expires = value["expires"].as_i64().unwrap_or(0);
                let remaining = value["remaining"].as_u64().unwrap_or(0);
                if now_ms() >= expires {
                    refusal = Some(KpError::ImportTokenExpired);
                    return Err(StoreError::Refused(String::new()));
                }
                if remaining == 0 {
                    refusal = Some(KpError::ImportTokenExhausted);
                    return Err(StoreError::Refused(String::new()));
                }
                value["remaining"] = json!(remaining - 1);
                Ok(())
            })
    });
    if let Some(refusal) = refusal {
        return Err(refusal);
    }
    let token: ImportToken = serde_json::from_value(stored?.ok_or(KpError::ImportTokenNotFound)?)
        .map_err(|_| unreadable_import_token())?;
    let der = B64.decode(&token.public_key).unwrap_or_default();
    let mut pem = String::from("-----BEGIN PUBLIC KEY-----\n");
    for line in B64.encode(&der).as_bytes().chunks(64) {
        pem.push_str(&String::from_utf8_lossy(line));
        pem.push('\n');
    }
    pem.push_str("-----END PUBLIC KEY-----\n");
    let mut body = import_token_json(&token);
    body["payload"] = json!(B64.encode(pem.as_bytes()));
    body["nonce"] = json!(token.nonce);
    Ok(axum::Json(body).into_response())
}

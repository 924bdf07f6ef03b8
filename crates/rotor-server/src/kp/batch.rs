//! Bulk creation of root keys: `POST /v1/instances/{id}/keys/batch` (Writer role), beside
//! the Key Protect API with its caller extraction and error body.

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use rotor_store::{KeyMeta, KeyState, KeyVersion, StoreError};
use rotor_unit::keyapi::{GenerateBatch, GenerateItem, GeneratedBatch};
use rotor_unit::keys::Binding;
use serde_json::json;
use uuid::Uuid;
use zeroize::Zeroizing;

use rotor_util::time::now_ms;

use super::error::{KpError, KpResult};
use super::instance_policies::{KeyOrigin, create_import_access, instance_dual_auth};
use super::names::check_name;
use super::requests::{BatchBody, parse_body};
use super::{KpState, blocking};
use crate::iam::Role;

/// Creates root keys in bulk: one unit round trip makes every key and wraps the given DEK
/// under it, and one keystore transaction stores them all. Returns, in order, each key's id and
/// its DEK ciphertext (no AAD).
pub async fn create_keys_batch(
    state: &KpState,
    instance: Uuid,
    created_by: &str,
    keys: Vec<(String, Zeroizing<Vec<u8>>)>,
) -> KpResult<Vec<(Uuid, Vec<u8>)>> {
    if keys.is_empty() || keys.len() > MAX_BATCH_CREATE {
        return Err(KpError::field(
            "keys",
            format!("lists 1 to {MAX_BATCH_CREATE} keys"),
        ));
    }
    for (name, dek) in &keys {
        check_name(name)?;
        if dek.is_empty() || dek.len() > 7_500 {
            return Err(KpError::field("keys[].dek", "is 1 to 7500 bytes"));
        }
    }
    if let Some(access) = create_import_access(state, instance)? {
        access.check(&KeyOrigin::Generated, false)?;
    }
    let dual_auth = instance_dual_auth(state, instance)?.then_some(true);
    let items: Vec<GenerateItem> = keys
        .iter()
        .map(|(_, dek)| GenerateItem {
            binding: Binding {
                instance,
                key: Uuid::new_v4(),
                version: 1,
                extractable: false,
            },
            dek: dek.clone(),
        })
        .collect();
    let ids: Vec<Uuid> = items.iter().map(|item| item.binding.key).collect();
    let mut retried = false;
    loop {
        match store_batch(state, instance, created_by, dual_auth, &keys, &items, &ids).await? {
            Ok(answer) => break Ok(answer),
            // Wrapped before the units moved to the new master key, stored after a rotation
            // closed the old one: wrap again, under the new one.
            Err(_) if !retried => retried = true,
            Err(vp) => break Err(StoreError::Retired(vp).into()),
        }
    }
}

/// One attempt of [`create_keys_batch`]: wraps in a unit, stores in one transaction. `Err(vp)`
/// when storage refused the master key `vp` the unit wrapped under (see [`StoreError::Retired`]).
async fn store_batch(
    state: &KpState,
    instance: Uuid,
    created_by: &str,
    dual_auth: Option<bool>,
    keys: &[(String, Zeroizing<Vec<u8>>)],
    items: &[GenerateItem],
    ids: &[Uuid],
) -> KpResult<Result<Vec<(Uuid, Vec<u8>)>, rotor_crypto::Vp>> {
    let items = items.to_vec();
    let generated: GeneratedBatch = state.unit_call(instance, &GenerateBatch { items }).await?;
    if generated.keys.len() != ids.len() {
        return Err(KpError::NoMasterKey(
            "the crypto unit answered a batch with the wrong number of keys".to_owned(),
        ));
    }
    let now = now_ms();
    let mut records = Vec::with_capacity(ids.len());
    let mut answer = Vec::with_capacity(ids.len());
    for (((name, _), id), (blob, ciphertext)) in keys.iter().zip(ids).zip(generated.keys) {
        let key = KeyMeta {
            instance,
            id: *id,
            name: name.clone(),
            description: String::new(),
            extractable: false,
            imported: false,
            state: KeyState::Active,
            key_ring: "default".to_owned(),
            aliases: Vec::new(),
            created: now,
            created_by: created_by.to_owned(),
            updated: now,
            last_rotated: None,
            deletion: None,
            deletion_authorization: None,
            policies: rotor_store::KeyPolicies {
                dual_auth_delete: dual_auth,
                ..rotor_store::KeyPolicies::default()
            },
            newest_version: 1,
            labels: Vec::new(),
        };
        let version = KeyVersion {
            version: 1,
            id: Uuid::new_v4(),
            blob,
            vp: generated.vp,
            created: now,
        };
        records.push((key, version));
        answer.push((*id, ciphertext));
    }
    match blocking(|| state.store.create_keys(&records)) {
        Err(StoreError::Retired(vp)) => return Ok(Err(vp)),
        result => result?,
    }
    tracing::info!(%instance, count = answer.len(), "keys created in a batch");
    // One entry for the batch, naming how many keys it created.
    state.audit.record(
        instance,
        "create_batch",
        &answer.len().to_string(),
        created_by,
        rotor_proto::audit::Verdict::Accepted,
    );
    Ok(Ok(answer))
}

/// The most keys one batch creates.
pub const MAX_BATCH_CREATE: usize = 10_000;

/// Creates up to 10,000 root keys, each wrapping the DEK given for it:
/// `{"keys": [{"name": ..., "dek": BASE64}]}` → `{"keys": [{"id": ..., "ciphertext": BASE64}]}`.
/// The ciphertexts unwrap through the Key Protect API like any other (no AAD).
pub(super) async fn keys_batch(
    State(state): State<KpState>,
    headers: HeaderMap,
    Path(instance): Path<String>,
    body: Bytes,
) -> KpResult<Response> {
    let caller = state.caller_in_path(&headers, &instance, Role::Writer)?;
    let request: BatchBody = parse_body(&body)?;
    let keys = request
        .keys
        .into_iter()
        .map(|key| (key.name, Zeroizing::new(key.dek.into_vec())))
        .collect();
    let created = create_keys_batch(&state, caller.instance, &caller.claims.sub, keys).await?;
    let keys: Vec<_> = created
        .into_iter()
        .map(|(id, ciphertext)| json!({"id": id, "ciphertext": B64.encode(ciphertext)}))
        .collect();
    Ok((StatusCode::CREATED, axum::Json(json!({ "keys": keys }))).into_response())
}

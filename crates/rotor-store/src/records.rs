//! Row contents shared by every backend: key documents, import token documents, journals,
//! policies and unit identities, and how a row that does not parse is named (by its kind and
//! id, never defaulted).

use std::fmt::Display;

use rotor_crypto::Vp;
use rotor_proto::keyops::b64;
use rotor_proto::rotation::Journal;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::{ImportToken, InstancePolicies, KeyMeta, StoreError, UnitRecord};

/// A row that does not parse, named by its kind and id so that an operator can find it.
pub(crate) fn corrupt(row: impl Display, why: impl Display) -> StoreError {
    StoreError::Corrupt(format!("{row}: {why}"))
}

pub(crate) fn parse_doc(instance: Uuid, id: &str, doc: &str) -> Result<KeyMeta, StoreError> {
    serde_json::from_str(doc)
        .map_err(|err| corrupt(format_args!("key {id} of instance {instance}"), err))
}

pub(crate) fn to_doc(key: &KeyMeta) -> Result<String, StoreError> {
    serde_json::to_string(key).map_err(|err| corrupt(format_args!("key {}", key.id), err))
}

pub(crate) fn vp_of(bytes: &[u8], row: impl Display) -> Result<Vp, StoreError> {
    bytes
        .try_into()
        .map(Vp)
        .map_err(|_| corrupt(row, "its VP is not 32 bytes"))
}

/// The VP column of a blob: the blob's own prefix. A unit's reply that reports another master
/// key than the blob carries is refused, so the count under each VP never trusts a report.
pub(crate) fn recorded_vp(
    blob: &[u8],
    reported: &Vp,
    row: impl Display,
) -> Result<Vec<u8>, StoreError> {
    match rotor_proto::binding::blob_vp(blob) {
        Some(own) if own.matches(reported) => Ok(own.0.to_vec()),
        Some(own) => Err(StoreError::Refused(format!(
            "{row}: the unit reported master key {reported} for a blob wrapped under {own}; not stored"
        ))),
        None => Err(StoreError::Refused(format!(
            "{row}: the blob is too short to name its master key; not stored"
        ))),
    }
}

/// A unit identity row.
pub(crate) fn unit_record_of(
    unit: Uuid,
    identity: &str,
    last_counter: i64,
) -> Result<UnitRecord, StoreError> {
    Ok(UnitRecord {
        identity: serde_json::from_str(identity)
            .map_err(|err| corrupt(format_args!("identity of unit {unit}"), err))?,
        last_counter: u64::try_from(last_counter)
            .map_err(|err| corrupt(format_args!("last counter of unit {unit}"), err))?,
    })
}

/// An import token's document: every field but the sealed private key, which has its own
/// column. Field names are those of the previous version's documents.
#[derive(Serialize, Deserialize)]
pub(crate) struct ImportTokenDoc {
    id: Uuid,
    created: i64,
    expires: i64,
    max_retrievals: u32,
    remaining: u32,
    #[serde(with = "b64")]
    public_key: Vec<u8>,
    #[serde(with = "b64")]
    nonce: Vec<u8>,
}

pub(crate) fn parse_import_token(
    instance: Uuid,
    doc: &str,
    sealed_private_key: Option<Vec<u8>>,
) -> Result<ImportToken, StoreError> {
    let row = format!("import token of instance {instance}");
    let doc: ImportTokenDoc = serde_json::from_str(doc).map_err(|err| corrupt(&row, err))?;
    let sealed_private_key =
        sealed_private_key.ok_or_else(|| corrupt(&row, "it has no sealed private key"))?;
    Ok(ImportToken {
        id: doc.id,
        created: doc.created,
        expires: doc.expires,
        max_retrievals: doc.max_retrievals,
        remaining: doc.remaining,
        public_key: doc.public_key,
        nonce: doc.nonce,
        sealed_private_key,
    })
}

/// An import token's document (its sealed private key has a column of its own).
pub(crate) fn import_token_doc(instance: Uuid, token: &ImportToken) -> Result<String, StoreError> {
    serde_json::to_string(&ImportTokenDoc {
        id: token.id,
        created: token.created,
        expires: token.expires,
        max_retrievals: token.max_retrievals,
        remaining: token.remaining,
        public_key: token.public_key.clone(),
        nonce: token.nonce.clone(),
    })
    .map_err(|err| corrupt(format_args!("import token of instance {instance}"), err))
}

pub(crate) fn parse_journal(instance: Uuid, doc: &str) -> Result<Journal, StoreError> {
    serde_json::from_str(doc)
        .map_err(|err| corrupt(format_args!("rotation journal of instance {instance}"), err))
}

/// An instance's policies document: each record named by its type, so a record that does not
/// parse is reported with the policy and the instance.
pub(crate) fn parse_instance_policies(
    instance: Uuid,
    doc: &str,
) -> Result<InstancePolicies, StoreError> {
    let records: serde_json::Map<String, serde_json::Value> =
        serde_json::from_str(doc).map_err(|err| {
            corrupt(
                format_args!("instance policies of instance {instance}"),
                err,
            )
        })?;
    records
        .into_iter()
        .map(|(name, record)| {
            let record = serde_json::from_value(record).map_err(|err| {
                corrupt(
                    format_args!("instance policy {name} of instance {instance}"),
                    err,
                )
            })?;
            Ok((name, record))
        })
        .collect()
}

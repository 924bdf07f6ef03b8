//! The Key Protect JSON: keys as it shows them, collection envelopes, and the helpers that
//! read request bodies.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use rotor_store::{KeyMeta, KeyVersion};
use serde_json::{Value, json};
use uuid::Uuid;

use rotor_util::time::{now_ms, rfc3339};

use super::error::{KpError, KpResult};
use super::lifecycle::RESTORE_WINDOW_MS;

pub(super) const KEY_TYPE: &str = "application/vnd.ibm.kms.key+json";

pub(super) fn crn(instance: Uuid, kind: &str, id: &str) -> String {
    format!("crn:v1:rotor:private:kms:local:a/rotor:{instance}:{kind}:{id}")
}

/// The JSON of a key, as Key Protect shows it.
pub(super) fn key_json(
    key: &KeyMeta,
    newest: Option<&KeyVersion>,
    payload: Option<&[u8]>,
    purge_after_seconds: u64,
) -> Value {
    let mut out = json!({
        "type": KEY_TYPE,
        "id": key.id,
        "name": key.name,
        "description": key.description,
        "state": u8::from(key.state),
        "extractable": key.extractable,
        "imported": key.imported,
        "crn": crn(key.instance, "key", &key.id.to_string()),
        "keyRingID": key.key_ring,
        "algorithmType": "AES",
        "createdBy": key.created_by,
        "creationDate": rfc3339(key.created),
        "lastUpdateDate": rfc3339(key.updated),
        "deleted": key.deletion.is_some(),
        "dualAuthDelete": {"enabled": key.policies.dual_auth_delete.unwrap_or(false)},
        "aliases": key.aliases,
        "labels": key.labels,
    });
    if let Some(rotated) = key.last_rotated {
        out["lastRotateDate"] = json!(rfc3339(rotated));
    }
    if let Some(version) = newest {
        out["keyVersion"] = json!({"id": version.id, "creationDate": rfc3339(version.created)});
    }
    if let Some(deletion) = &key.deletion {
        let purge_from = deletion.at + i64::try_from(purge_after_seconds).unwrap_or(0) * 1000;
        out["deletionDate"] = json!(rfc3339(deletion.at));
        out["deletedBy"] = json!(deletion.by);
        out["restoreExpirationDate"] = json!(rfc3339(deletion.at + RESTORE_WINDOW_MS));
        out["purgeAllowedFrom"] = json!(rfc3339(purge_from));
        out["purgeAllowed"] = json!(now_ms() >= purge_from);
    }
    if let Some(pending) = &key.deletion_authorization {
        out["dualAuthDelete"]["keySetForDeletion"] = json!(true);
        out["dualAuthDelete"]["authExpiration"] = json!(rfc3339(pending.until));
    }
    if let Some(payload) = payload {
        out["payload"] = json!(B64.encode(payload));
    }
    out
}

pub(super) fn collection(kind: &str, resources: Vec<Value>) -> Value {
    json!({
        "metadata": {"collectionType": kind, "collectionTotal": resources.len()},
        "resources": resources,
    })
}

pub(super) fn check_name(name: &str) -> KpResult<()> {
    let length = name.chars().count();
    if !(2..=90).contains(&length) || name.chars().any(char::is_control) {
        return Err(KpError::field("name", "has 2 to 90 printable characters"));
    }
    Ok(())
}

pub(super) fn check_alias(alias: &str) -> KpResult<()> {
    let valid = (2..=90).contains(&alias.len())
        && alias
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        && Uuid::parse_str(alias).is_err();
    if valid {
        Ok(())
    } else {
        Err(KpError::field(
            "aliases",
            "holds 2 to 90 characters of letters, digits, '-' and '_', and is not a UUID",
        ))
    }
}

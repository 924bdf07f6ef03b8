//! The Key Protect JSON: keys as it shows them, and collection envelopes.

use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use rotor_store::{KeyMeta, KeyVersion};
use serde_json::{Value, json};
use uuid::Uuid;

use rotor_util::time::{now_ms, rfc3339};

use super::KpState;
use super::lifecycle::RESTORE_WINDOW_MS;

pub(super) const KEY_TYPE: &str = "application/vnd.ibm.kms.key+json";
pub(super) const POLICY_TYPE: &str = "application/vnd.ibm.kms.policy+json";

/// The media type Key Protect answers every collection body with (DOC:set-up-api), error
/// bodies included: they are collections too (`collectionType` `…kms.error+json`). IBM's SDK
/// core parses only `application/json`, so its users call `.json()` on these answers, and
/// clients written against the real service rely on exactly that. Flat bodies (wrap, unwrap,
/// rewrap, import token) stay `application/json`.
pub(crate) const COLLECTION_MEDIA_TYPE: &str = "application/vnd.ibm.collection+json";

/// What the caller asked for in `Prefer`: the resource back (the default, as Key Protect's Go
/// client reads `resources[0]` without sending `Prefer`) or no body at all.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Prefer {
    Minimal,
    Representation,
}

impl Prefer {
    pub(super) fn of(headers: &HeaderMap) -> Self {
        let minimal = headers
            .get_all("prefer")
            .iter()
            .filter_map(|value| value.to_str().ok())
            .flat_map(|value| value.split([',', ';']))
            .any(|part| part.trim().eq_ignore_ascii_case("return=minimal"));
        if minimal {
            Self::Minimal
        } else {
            Self::Representation
        }
    }
}

/// A collection body with its status and Key Protect's collection media type.
pub(super) fn collection_response(status: StatusCode, body: Value) -> Response {
    let mut response = (status, axum::Json(body)).into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(COLLECTION_MEDIA_TYPE),
    );
    response
}

impl KpState {
    /// The answer of the routes that return one key: a collection of it.
    pub(super) fn key_collection(
        &self,
        status: StatusCode,
        key: &KeyMeta,
        newest: Option<&KeyVersion>,
        payload: Option<&[u8]>,
    ) -> Response {
        let resource = key_json(key, newest, payload, self.purge_after_seconds);
        collection_response(status, collection(KEY_TYPE, vec![resource]))
    }
}

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

/// A collection of policies: Key Protect answers none with metadata only, no `resources`
/// (DOC:manage-dual-auth).
pub(super) fn policy_collection(resources: Vec<Value>) -> Value {
    let mut body = collection(POLICY_TYPE, resources);
    if body["metadata"]["collectionTotal"] == 0
        && let Some(map) = body.as_object_mut()
    {
        map.remove("resources");
    }
    body
}

#[cfg(test)]
mod tests {
    use rotor_store::{Deletion, KeyPolicies, KeyState};

    use super::*;

    fn key() -> KeyMeta {
        KeyMeta {
            instance: Uuid::nil(),
            id: Uuid::from_u128(7),
            name: "orders".to_owned(),
            description: "for orders".to_owned(),
            extractable: false,
            imported: false,
            state: KeyState::Active,
            key_ring: "default".to_owned(),
            aliases: vec!["orders-key".to_owned()],
            created: 1_700_000_000_000,
            created_by: "writer".to_owned(),
            updated: 1_700_000_000_000,
            last_rotated: None,
            deletion: None,
            deletion_authorization: None,
            policies: KeyPolicies::default(),
            newest_version: 1,
            labels: vec!["team:a".to_owned()],
        }
    }

    #[test]
    fn a_key_shows_as_key_protect_shows_it() {
        let version = KeyVersion {
            version: 1,
            id: Uuid::from_u128(9),
            vp: rotor_crypto::Vp([0; 32]),
            blob: vec![1, 2, 3],
            created: 1_700_000_000_000,
        };
        let json = key_json(&key(), Some(&version), None, 14_400);
        assert_eq!(json["type"], KEY_TYPE);
        assert_eq!(json["id"], Uuid::from_u128(7).to_string());
        assert_eq!(json["state"], 1);
        assert_eq!(json["extractable"], false);
        assert_eq!(json["keyRingID"], "default");
        assert_eq!(json["aliases"], json!(["orders-key"]));
        assert_eq!(json["dualAuthDelete"], json!({"enabled": false}));
        assert_eq!(json["keyVersion"]["id"], Uuid::from_u128(9).to_string());
        assert_eq!(json["deleted"], false);
        assert!(
            json["crn"]
                .as_str()
                .unwrap()
                .ends_with(&format!(":key:{}", Uuid::from_u128(7)))
        );
        // Neither material nor blobs appear unless asked for.
        assert!(json.get("payload").is_none());
        assert!(!json.to_string().contains("blob"));
        assert!(json.get("deletionDate").is_none());
    }

    #[test]
    fn a_deleted_key_says_when_it_can_be_restored_and_purged() {
        let mut deleted = key();
        deleted.state = KeyState::Destroyed;
        deleted.deletion = Some(Deletion {
            at: 1_700_000_000_000,
            by: "manager".to_owned(),
        });
        let json = key_json(&deleted, None, None, 3_600);
        assert_eq!(json["state"], 5);
        assert_eq!(json["deleted"], true);
        assert_eq!(json["deletedBy"], "manager");
        assert_eq!(json["deletionDate"], rfc3339(1_700_000_000_000));
        assert_eq!(
            json["purgeAllowedFrom"],
            rfc3339(1_700_000_000_000 + 3_600_000)
        );
        assert_eq!(
            json["restoreExpirationDate"],
            rfc3339(1_700_000_000_000 + RESTORE_WINDOW_MS)
        );
        assert_eq!(json["purgeAllowed"], true);
    }

    #[test]
    fn a_standard_key_carries_its_payload_in_base64() {
        let json = key_json(&key(), None, Some(b"material"), 0);
        assert_eq!(json["payload"], B64.encode(b"material"));
    }

    #[test]
    fn a_collection_counts_its_resources() {
        let body = collection(KEY_TYPE, vec![json!({"a": 1}), json!({"b": 2})]);
        assert_eq!(
            body,
            json!({
                "metadata": {"collectionType": KEY_TYPE, "collectionTotal": 2},
                "resources": [{"a": 1}, {"b": 2}],
            })
        );
    }

    #[test]
    fn prefer_minimal_is_found_among_other_preferences() {
        let mut headers = HeaderMap::new();
        assert_eq!(Prefer::of(&headers), Prefer::Representation);
        headers.insert(
            "prefer",
            HeaderValue::from_static("respond-async, return=minimal"),
        );
        assert_eq!(Prefer::of(&headers), Prefer::Minimal);
        headers.insert("prefer", HeaderValue::from_static("return=representation"));
        assert_eq!(Prefer::of(&headers), Prefer::Representation);
    }

    #[test]
    fn collections_carry_the_collection_media_type() {
        let response = collection_response(StatusCode::CREATED, collection(KEY_TYPE, vec![]));
        assert_eq!(response.status(), StatusCode::CREATED);
        assert_eq!(
            response.headers()[header::CONTENT_TYPE],
            COLLECTION_MEDIA_TYPE
        );
    }

    #[test]
    fn no_policies_is_metadata_only() {
        assert_eq!(
            policy_collection(Vec::new()),
            json!({"metadata": {"collectionType": POLICY_TYPE, "collectionTotal": 0}})
        );
        assert_eq!(policy_collection(vec![json!({})])["resources"], json!([{}]));
    }
}

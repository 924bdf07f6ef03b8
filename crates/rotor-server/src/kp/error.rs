//! The Key Protect error body and the errors the API answers.

use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use rotor_store::StoreError;
use serde_json::json;
use uuid::Uuid;

use rotor_util::time::rfc3339;

use crate::iam::IamError;

pub(super) const ERROR_TYPE: &str = "application/vnd.ibm.kms.error+json";

/// Where Key Protect points its clients for the meaning of a reason code.
const MORE_INFO: &str = "https://cloud.ibm.com/apidocs/key-protect";

/// An error the Key Protect routes answer. `KpError::reason` maps each to its HTTP status,
/// Key Protect reason code and message.
#[derive(Debug)]
#[non_exhaustive]
pub enum KpError {
    /// The body is not what the route takes (malformed JSON, wrong shape, unknown fields).
    BadBody(String),
    /// The route needs a body and got none.
    NoBody,
    /// A field of the body is missing or holds a value the route does not take.
    InvalidField {
        /// The field, as the API names it (`plaintext`, `rotation.interval_month`).
        field: String,
        /// What is wrong, as the end of a sentence starting with the field's name.
        problem: String,
    },
    /// `metadata.collectionTotal` is not the number of `resources`.
    CollectionTotalMismatch {
        /// What `metadata.collectionTotal` says.
        declared: u64,
        /// How many resources the body holds.
        resources: usize,
    },
    /// A query or path parameter holds a value the route does not take.
    InvalidParameter {
        /// The parameter.
        name: &'static str,
        /// What is wrong.
        problem: String,
    },
    /// A request header is missing or malformed.
    InvalidHeader {
        /// The header.
        name: &'static str,
        /// What is wrong.
        problem: &'static str,
    },
    /// The action needs a root key and the key is a standard key.
    RootKeyRequired {
        /// What was asked, as a verb (`wrap`, `rotate`).
        action: &'static str,
    },
    /// An imported root key is rotated without new key material.
    PayloadRequired,
    /// A unit refused the request's key material or data (wrong length, too long).
    UnitRefused(String),
    /// The HTTP layer refused the request before a route ran (body too large, bad query).
    Rejected {
        /// The status the HTTP layer chose.
        status: StatusCode,
        /// Its explanation.
        message: String,
    },
    /// A collection body holds more resources of one kind than the route takes.
    NumCollectionResource(String),
    /// The body's policy type is not the one `?policy=` names.
    BodyQueryParamMismatch {
        /// What the query names.
        query: &'static str,
        /// What the body holds.
        body: &'static str,
    },
    /// The bearer token is missing, malformed, expired or not this service's.
    Unauthorized(String),
    /// The token's identity lacks the role the route needs on the instance.
    Forbidden(String),
    /// The instance's `allowedIP` policy does not allow the client's address.
    AddressNotAllowed(String),
    /// The service cannot provide what was asked for as it is deployed.
    FeatureRestricted(&'static str),
    /// The instance does not exist on this service.
    InstanceNotFound(String),
    /// No key has this id or alias in the instance.
    KeyNotFound(String),
    /// The key has no such version.
    KeyVersionNotFound {
        /// The key.
        key: Uuid,
        /// The version asked for.
        version: u32,
    },
    /// The instance has no key ring of this id.
    KeyRingNotFound(String),
    /// Key storage has no such record (an alias, a key ring, a key removed meanwhile).
    NotFound(String),
    /// `/v1/blobs/{op}` with an operation that does not exist.
    UnknownBlobOperation(String),
    /// The instance has no import token.
    ImportTokenNotFound,
    /// The key's state does not allow the action.
    InvalidState(String),
    /// The name is taken (alias or key ring).
    Conflict(String),
    /// Set or unset for deletion on a key without dual authorization.
    NotDualAuth,
    /// A dual-authorization key is deleted without a valid authorization by another identity.
    AuthorizationsNotMet(&'static str),
    /// A deleted key is purged before its purge time.
    PurgeNotAllowed {
        /// From when it may be purged (Unix milliseconds).
        from: i64,
    },
    /// The instance's `keyCreateImportAccess` policy does not allow this key.
    KeyCreateImportAccess(&'static str),
    /// The key was synced less than an hour ago.
    SyncTooEarly {
        /// From when it may be synced again (Unix milliseconds).
        from: i64,
    },
    /// The import token has expired.
    ImportTokenExpired,
    /// The import token was retrieved as often as it allows.
    ImportTokenExhausted,
    /// The instance has no operational unit.
    NoCryptoUnit,
    /// No unit could serve the request (none reachable, or none with a usable master key).
    NoMasterKey(String),
    /// The operation needs a new master key pinned by a rotation, which the units do not hold.
    NoNewMasterKey(String),
    /// A key of this id was deleted.
    KeyDeleted(Uuid),
    /// The ciphertext does not unwrap: invalid, another key's, or other AAD. Deliberately
    /// opaque.
    UnprocessableCiphertext,
    /// The securely imported material, nonce or IV do not verify against the import token.
    ImportVerification,
    /// Key storage failed; the details are logged, never answered.
    Storage,
    /// The stored import token does not parse; logged, never answered in detail.
    ImportTokenUnreadable,
}

/// What an error answers: the HTTP status, the Key Protect reason code, the message and, for
/// field errors, the field.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Reason {
    pub(crate) status: StatusCode,
    pub(crate) code: &'static str,
    pub(crate) message: String,
    pub(crate) target: Option<(&'static str, String)>,
}

impl KpError {
    /// The one mapping of errors to what the API answers.
    pub(crate) fn reason(&self) -> Reason {
        use StatusCode as S;
        let (status, code, message, target) = match self {
            Self::BadBody(message) => (S::BAD_REQUEST, "BAD_BODY_ERR", message.clone(), None),
            Self::NoBody => (
                S::BAD_REQUEST,
                "NO_BODY_ERR",
                "this request needs a JSON body".to_owned(),
                None,
            ),
            Self::InvalidField { field, problem } => (
                S::BAD_REQUEST,
                "INVALID_FIELD_ERR",
                format!("the field `{field}` {problem}"),
                Some(("field", field.clone())),
            ),
            Self::CollectionTotalMismatch {
                declared,
                resources,
            } => (
                S::BAD_REQUEST,
                "COLLECTION_TOTAL_MISMATCH_ERR",
                format!(
                    "`metadata.collectionTotal` is {declared} but the body holds {resources} resource(s)"
                ),
                Some(("field", "metadata.collectionTotal".to_owned())),
            ),
            Self::InvalidParameter { name, problem } => (
                S::BAD_REQUEST,
                "INVALID_QUERY_PARAM_ERR",
                format!("the parameter `{name}` {problem}"),
                Some(("parameter", (*name).to_owned())),
            ),
            Self::InvalidHeader { name, problem } => (
                S::BAD_REQUEST,
                "BAD_REQUEST_ERR",
                format!("the {name} header {problem}"),
                Some(("header", (*name).to_owned())),
            ),
            Self::RootKeyRequired { action } => (
                S::BAD_REQUEST,
                "KEY_ROOT_REQ_ERR",
                format!("only root keys {action}; this is a standard key"),
                None,
            ),
            Self::PayloadRequired => (
                S::BAD_REQUEST,
                "KEY_PAYLOAD_REQ_ERR",
                "an imported root key is rotated with new key material in `payload`".to_owned(),
                Some(("field", "payload".to_owned())),
            ),
            Self::UnitRefused(message) => (S::BAD_REQUEST, "BAD_BODY_ERR", message.clone(), None),
            Self::Rejected { status, message } => (
                *status,
                if *status == S::PAYLOAD_TOO_LARGE {
                    "BODY_TOO_LARGE_ERR"
                } else {
                    "BAD_REQUEST_ERR"
                },
                message.clone(),
                None,
            ),
            Self::NumCollectionResource(message) => (
                S::BAD_REQUEST,
                "NUM_COLLECTION_RESOURCE_ERR",
                message.clone(),
                Some(("field", "resources".to_owned())),
            ),
            Self::BodyQueryParamMismatch { query, body } => (
                S::BAD_REQUEST,
                "BODY_QUERY_PARAM_MISMATCH_ERR",
                format!("the query names the {query} policy but the body sets {body}"),
                Some(("field", "policy_type".to_owned())),
            ),
            Self::Unauthorized(message) => {
                (S::UNAUTHORIZED, "UNAUTHORIZED_ERR", message.clone(), None)
            }
            Self::Forbidden(message) => (S::FORBIDDEN, "FORBIDDEN_ERR", message.clone(), None),
            Self::AddressNotAllowed(message) => (
                S::FORBIDDEN,
                "CONFIG_RULE_CONFLICT_ERR",
                message.clone(),
                None,
            ),
            Self::FeatureRestricted(message) => (
                S::FORBIDDEN,
                "FEATURE_RESTRICTED_ERR",
                (*message).to_owned(),
                None,
            ),
            Self::InstanceNotFound(instance) => (
                S::NOT_FOUND,
                "INSTANCE_NOT_FOUND_ERR",
                format!("instance {instance} does not exist on this service"),
                None,
            ),
            Self::KeyNotFound(id) => (
                S::NOT_FOUND,
                "KEY_NOT_FOUND_ERR",
                format!("key {id} does not exist"),
                None,
            ),
            Self::KeyVersionNotFound { key, version } => (
                S::NOT_FOUND,
                "KEY_NOT_FOUND_ERR",
                format!("version {version} of key {key} does not exist"),
                None,
            ),
            Self::KeyRingNotFound(id) => (
                S::NOT_FOUND,
                "KEY_RING_NOT_FOUND_ERR",
                format!("key ring '{id}' does not exist"),
                None,
            ),
            Self::NotFound(message) => (S::NOT_FOUND, "NOT_FOUND_ERR", message.clone(), None),
            Self::UnknownBlobOperation(op) => (
                S::NOT_FOUND,
                "NOT_FOUND_ERR",
                format!("no blob operation '{op}': use generate, wrap, unwrap or rewrap"),
                None,
            ),
            Self::ImportTokenNotFound => (
                S::NOT_FOUND,
                "IMPORT_TOKEN_NOT_FOUND_ERR",
                "no import token: create one with POST /api/v2/import_token".to_owned(),
                None,
            ),
            Self::InvalidState(message) => (
                S::CONFLICT,
                "KEY_ACTION_INVALID_STATE_ERR",
                message.clone(),
                None,
            ),
            Self::Conflict(message) => (S::CONFLICT, "CONFLICT_ERR", message.clone(), None),
            Self::NotDualAuth => (
                S::CONFLICT,
                "NOT_DUAL_AUTH_ERR",
                "this key does not need dual authorization to be deleted".to_owned(),
                None,
            ),
            Self::AuthorizationsNotMet(message) => (
                S::CONFLICT,
                "AUTHORIZATIONS_NOT_MET",
                (*message).to_owned(),
                None,
            ),
            Self::PurgeNotAllowed { from } => (
                S::CONFLICT,
                "PURGE_NOT_ALLOWED_ERR",
                format!("the key can be purged from {}", rfc3339(*from)),
                None,
            ),
            Self::KeyCreateImportAccess(message) => (
                S::CONFLICT,
                "KEY_CREATE_IMPORT_ACCESS_ERR",
                (*message).to_owned(),
                None,
            ),
            Self::SyncTooEarly { from } => (
                S::CONFLICT,
                "REQ_TOO_EARLY_ERR",
                format!(
                    "a key is synced at most once an hour; sync it again from {}",
                    rfc3339(*from)
                ),
                None,
            ),
            Self::ImportTokenExpired => (
                S::CONFLICT,
                "IMPORT_TOKEN_EXPIRED_ERR",
                "the import token has expired; create a new one".to_owned(),
                None,
            ),
            Self::ImportTokenExhausted => (
                S::CONFLICT,
                "IMPORT_TOKEN_EXHAUSTED_ERR",
                "the import token was retrieved as often as allowed; create a new one".to_owned(),
                None,
            ),
            Self::NoCryptoUnit => (
                S::CONFLICT,
                "NO_CRYPTO_UNIT_ERR",
                "this instance has no operational crypto unit".to_owned(),
                None,
            ),
            Self::NoMasterKey(message) => {
                (S::CONFLICT, "NO_MASTER_KEY_ERR", message.clone(), None)
            }
            Self::NoNewMasterKey(message) => {
                (S::CONFLICT, "NO_NEW_MASTER_KEY_ERR", message.clone(), None)
            }
            Self::KeyDeleted(id) => (
                S::GONE,
                "KEY_DELETED_ERR",
                format!("key {id} is deleted"),
                None,
            ),
            Self::UnprocessableCiphertext => (
                S::UNPROCESSABLE_ENTITY,
                "UNPROCESSABLE_CIPHERTEXT_ERR",
                "the ciphertext is invalid, was made with another key, or the additional authenticated data differs".to_owned(),
                None,
            ),
            Self::ImportVerification => (
                S::UNPROCESSABLE_ENTITY,
                "IMPORT_VERIFICATION_ERR",
                "the encrypted key material, nonce or IV do not verify against the import token".to_owned(),
                None,
            ),
            Self::Storage => (
                S::INTERNAL_SERVER_ERROR,
                "INTERNAL_SERVER_ERR",
                "key storage failed".to_owned(),
                None,
            ),
            Self::ImportTokenUnreadable => (
                S::INTERNAL_SERVER_ERROR,
                "INTERNAL_SERVER_ERR",
                "the stored import token is unreadable".to_owned(),
                None,
            ),
        };
        Reason {
            status,
            code,
            message,
            target,
        }
    }

    /// An invalid body field.
    pub(crate) fn field(field: impl Into<String>, problem: impl Into<String>) -> Self {
        Self::InvalidField {
            field: field.into(),
            problem: problem.into(),
        }
    }
}

impl IntoResponse for KpError {
    fn into_response(self) -> Response {
        let Reason {
            status,
            code,
            message,
            target,
        } = self.reason();
        let canonical = status.canonical_reason().unwrap_or("Error");
        let mut reason = json!({
            "code": code,
            "message": message,
            "status": status.as_u16(),
            "moreInfo": MORE_INFO,
        });
        if let Some((kind, name)) = target {
            reason["target"] = json!({"type": kind, "name": name});
        }
        let body = json!({
            "metadata": {"collectionType": ERROR_TYPE, "collectionTotal": 1},
            "resources": [{
                "errorMsg": format!("{canonical}: {message}"),
                "reasons": [reason],
            }],
        });
        // Error bodies are collections (`…kms.error+json`), answered as every collection is.
        super::wire::collection_response(status, body)
    }
}

impl From<IamError> for KpError {
    fn from(err: IamError) -> Self {
        if err.http_status() == StatusCode::FORBIDDEN.as_u16() {
            Self::Forbidden(err.to_string())
        } else {
            Self::Unauthorized(err.to_string())
        }
    }
}

impl From<StoreError> for KpError {
    fn from(err: StoreError) -> Self {
        match err {
            StoreError::NotFound(message) => Self::NotFound(message),
            StoreError::Conflict(message) => Self::Conflict(message),
            StoreError::Refused(message) => Self::InvalidState(message),
            retired @ StoreError::Retired(_) => Self::Conflict(retired.to_string()),
            // Database failures, corrupt records, and whatever the store adds later.
            failure => {
                tracing::error!(error = %failure, "key storage failed");
                Self::Storage
            }
        }
    }
}

pub(crate) type KpResult<T> = Result<T, KpError>;

/// Rejections made by the HTTP layer before a handler runs (an oversized body, a malformed
/// query) come as plain text; Key Protect clients expect its JSON error shape.
pub(super) async fn json_rejections(response: Response) -> Response {
    let status = response.status();
    let is_json = response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("json"));
    if !status.is_client_error() || is_json {
        return response;
    }
    let text = axum::body::to_bytes(response.into_body(), 4096)
        .await
        .map(|bytes| String::from_utf8_lossy(&bytes).trim().to_owned())
        .ok()
        .filter(|text| !text.is_empty())
        .unwrap_or_else(|| {
            status
                .canonical_reason()
                .unwrap_or("Bad Request")
                .to_owned()
        });
    KpError::Rejected {
        status,
        message: text,
    }
    .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The error table: every error with its status and Key Protect reason code.
    #[test]
    fn each_error_answers_its_status_and_reason_code() {
        let table = [
            (KpError::BadBody(String::new()), 400, "BAD_BODY_ERR"),
            (KpError::NoBody, 400, "NO_BODY_ERR"),
            (
                KpError::field("plaintext", "is not valid base64"),
                400,
                "INVALID_FIELD_ERR",
            ),
            (
                KpError::CollectionTotalMismatch {
                    declared: 2,
                    resources: 1,
                },
                400,
                "COLLECTION_TOTAL_MISMATCH_ERR",
            ),
            (
                KpError::InvalidParameter {
                    name: "limit",
                    problem: String::new(),
                },
                400,
                "INVALID_QUERY_PARAM_ERR",
            ),
            (
                KpError::InvalidHeader {
                    name: "Bluemix-Instance",
                    problem: "is missing",
                },
                400,
                "BAD_REQUEST_ERR",
            ),
            (
                KpError::RootKeyRequired { action: "wrap" },
                400,
                "KEY_ROOT_REQ_ERR",
            ),
            (KpError::PayloadRequired, 400, "KEY_PAYLOAD_REQ_ERR"),
            (KpError::UnitRefused(String::new()), 400, "BAD_BODY_ERR"),
            (
                KpError::Rejected {
                    status: StatusCode::PAYLOAD_TOO_LARGE,
                    message: String::new(),
                },
                413,
                "BODY_TOO_LARGE_ERR",
            ),
            (
                KpError::Rejected {
                    status: StatusCode::METHOD_NOT_ALLOWED,
                    message: String::new(),
                },
                405,
                "BAD_REQUEST_ERR",
            ),
            (
                KpError::Unauthorized(String::new()),
                401,
                "UNAUTHORIZED_ERR",
            ),
            (KpError::Forbidden(String::new()), 403, "FORBIDDEN_ERR"),
            (
                KpError::NumCollectionResource(String::new()),
                400,
                "NUM_COLLECTION_RESOURCE_ERR",
            ),
            (
                KpError::BodyQueryParamMismatch {
                    query: "allowedIP",
                    body: "metrics",
                },
                400,
                "BODY_QUERY_PARAM_MISMATCH_ERR",
            ),
            (
                KpError::AddressNotAllowed(String::new()),
                403,
                "CONFIG_RULE_CONFLICT_ERR",
            ),
            (
                KpError::FeatureRestricted(""),
                403,
                "FEATURE_RESTRICTED_ERR",
            ),
            (
                KpError::KeyCreateImportAccess(""),
                409,
                "KEY_CREATE_IMPORT_ACCESS_ERR",
            ),
            (
                KpError::InstanceNotFound(String::new()),
                404,
                "INSTANCE_NOT_FOUND_ERR",
            ),
            (
                KpError::KeyNotFound(String::new()),
                404,
                "KEY_NOT_FOUND_ERR",
            ),
            (
                KpError::KeyVersionNotFound {
                    key: Uuid::nil(),
                    version: 2,
                },
                404,
                "KEY_NOT_FOUND_ERR",
            ),
            (
                KpError::KeyRingNotFound(String::new()),
                404,
                "KEY_RING_NOT_FOUND_ERR",
            ),
            (KpError::NotFound(String::new()), 404, "NOT_FOUND_ERR"),
            (
                KpError::UnknownBlobOperation(String::new()),
                404,
                "NOT_FOUND_ERR",
            ),
            (
                KpError::ImportTokenNotFound,
                404,
                "IMPORT_TOKEN_NOT_FOUND_ERR",
            ),
            (
                KpError::InvalidState(String::new()),
                409,
                "KEY_ACTION_INVALID_STATE_ERR",
            ),
            (KpError::Conflict(String::new()), 409, "CONFLICT_ERR"),
            (KpError::NotDualAuth, 409, "NOT_DUAL_AUTH_ERR"),
            (
                KpError::AuthorizationsNotMet(""),
                409,
                "AUTHORIZATIONS_NOT_MET",
            ),
            (
                KpError::PurgeNotAllowed { from: 0 },
                409,
                "PURGE_NOT_ALLOWED_ERR",
            ),
            (KpError::SyncTooEarly { from: 0 }, 409, "REQ_TOO_EARLY_ERR"),
            (KpError::ImportTokenExpired, 409, "IMPORT_TOKEN_EXPIRED_ERR"),
            (
                KpError::ImportTokenExhausted,
                409,
                "IMPORT_TOKEN_EXHAUSTED_ERR",
            ),
            (KpError::NoCryptoUnit, 409, "NO_CRYPTO_UNIT_ERR"),
            (
                KpError::NoMasterKey(String::new()),
                409,
                "NO_MASTER_KEY_ERR",
            ),
            (
                KpError::NoNewMasterKey(String::new()),
                409,
                "NO_NEW_MASTER_KEY_ERR",
            ),
            (KpError::KeyDeleted(Uuid::nil()), 410, "KEY_DELETED_ERR"),
            (
                KpError::UnprocessableCiphertext,
                422,
                "UNPROCESSABLE_CIPHERTEXT_ERR",
            ),
            (KpError::ImportVerification, 422, "IMPORT_VERIFICATION_ERR"),
            (KpError::Storage, 500, "INTERNAL_SERVER_ERR"),
            (KpError::ImportTokenUnreadable, 500, "INTERNAL_SERVER_ERR"),
        ];
        for (error, status, code) in table {
            let reason = error.reason();
            assert_eq!(reason.status.as_u16(), status, "{error:?}");
            assert_eq!(reason.code, code, "{error:?}");
        }
    }

    #[test]
    fn storage_failures_answer_a_fixed_message() {
        let error = KpError::from(StoreError::Database(
            "disk I/O error at /secret/path".to_owned(),
        ));
        let reason = error.reason();
        assert_eq!(reason.status, StatusCode::INTERNAL_SERVER_ERROR);
        assert_eq!(reason.message, "key storage failed");
    }

    #[test]
    fn store_refusals_keep_their_meaning() {
        assert!(matches!(
            KpError::from(StoreError::NotFound("x".to_owned())),
            KpError::NotFound(_)
        ));
        assert!(matches!(
            KpError::from(StoreError::Conflict("x".to_owned())),
            KpError::Conflict(_)
        ));
        assert!(matches!(
            KpError::from(StoreError::Refused("x".to_owned())),
            KpError::InvalidState(_)
        ));
    }

    async fn body_of(error: KpError) -> (u16, serde_json::Value) {
        let response = error.into_response();
        let status = response.status().as_u16();
        let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
            .await
            .unwrap();
        (status, serde_json::from_slice(&bytes).unwrap())
    }

    #[tokio::test]
    async fn a_field_error_has_key_protect_shape_with_its_target() {
        let (status, body) = body_of(KpError::field("plaintext", "is not valid base64")).await;
        assert_eq!(status, 400);
        assert_eq!(
            body,
            json!({
                "metadata": {"collectionType": ERROR_TYPE, "collectionTotal": 1},
                "resources": [{
                    "errorMsg": "Bad Request: the field `plaintext` is not valid base64",
                    "reasons": [{
                        "code": "INVALID_FIELD_ERR",
                        "message": "the field `plaintext` is not valid base64",
                        "status": 400,
                        "moreInfo": MORE_INFO,
                        "target": {"type": "field", "name": "plaintext"},
                    }],
                }],
            })
        );
    }

    #[tokio::test]
    async fn other_errors_have_no_target() {
        let (status, body) = body_of(KpError::UnprocessableCiphertext).await;
        assert_eq!(status, 422);
        let reason = &body["resources"][0]["reasons"][0];
        assert_eq!(reason["code"], "UNPROCESSABLE_CIPHERTEXT_ERR");
        assert_eq!(reason["status"], 422);
        assert_eq!(reason["moreInfo"], MORE_INFO);
        assert!(reason.get("target").is_none());
    }
}

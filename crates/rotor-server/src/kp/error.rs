//! The Key Protect error body and the errors the API answers.

use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use rotor_store::StoreError;
use serde_json::json;

use crate::iam::IamError;

pub(super) const ERROR_TYPE: &str = "application/vnd.ibm.kms.error+json";

/// A Key Protect error: status, IBM-style code, message.
#[derive(Debug)]
pub struct KpError {
    pub(crate) status: StatusCode,
    pub(crate) code: &'static str,
    pub(crate) message: String,
}

impl KpError {
    pub(crate) fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
        }
    }

    pub(crate) fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "BAD_BODY_ERR", message)
    }

    pub(crate) fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "KEY_NOT_FOUND_ERR", message)
    }

    pub(crate) fn conflict(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::CONFLICT, code, message)
    }
}

impl IntoResponse for KpError {
    fn into_response(self) -> Response {
        let reason = self.status.canonical_reason().unwrap_or("Error");
        let body = json!({
            "metadata": {"collectionType": ERROR_TYPE, "collectionTotal": 1},
            "resources": [{
                "errorMsg": format!("{reason}: {}", self.message),
                "reasons": [{"code": self.code, "message": self.message, "status": self.status.as_u16()}],
            }],
        });
        (self.status, axum::Json(body)).into_response()
    }
}

impl From<IamError> for KpError {
    fn from(err: IamError) -> Self {
        let status = StatusCode::from_u16(err.http_status()).unwrap_or(StatusCode::UNAUTHORIZED);
        let code = if status == StatusCode::FORBIDDEN {
            "FORBIDDEN_ERR"
        } else {
            "UNAUTHORIZED_ERR"
        };
        Self::new(status, code, err.to_string())
    }
}

impl From<StoreError> for KpError {
    fn from(err: StoreError) -> Self {
        match err {
            StoreError::NotFound(message) => Self::not_found(message),
            StoreError::Conflict(message) => Self::conflict("CONFLICT_ERR", message),
            StoreError::Refused(message) => Self::conflict("KEY_ACTION_INVALID_STATE_ERR", message),
            other => {
                tracing::error!(error = %other, "key storage failed");
                Self::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "INTERNAL_SERVER_ERR",
                    "key storage failed",
                )
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
    let code = if status == StatusCode::PAYLOAD_TOO_LARGE {
        "BODY_TOO_LARGE_ERR"
    } else {
        "BAD_REQUEST_ERR"
    };
    KpError::new(status, code, text).into_response()
}

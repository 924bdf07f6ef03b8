//! Every way a token request or a check fails, with IAM's error codes.

use super::*;

/// Why a token was not issued, a request not authorized, or the IAM setup not usable.
///
/// No message ever contains a token or an API key.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum IamError {
    /// The request carries no bearer token.
    #[error(
        "no access token: send 'Authorization: Bearer TOKEN' with a token from POST /identity/token"
    )]
    MissingToken,
    /// The token is not a JWT this service could have issued.
    #[error("the access token is malformed; request a new one from POST /identity/token")]
    MalformedToken,
    /// The token's header names another algorithm than HS256 (such as `none`).
    #[error(
        "the access token is not signed with HS256; request a new one from POST /identity/token"
    )]
    UnsupportedAlgorithm,
    /// The token's signature does not verify under this service's key.
    #[error(
        "the access token's signature does not verify (it was altered, or issued by another \
         service or under another key); request a new one from POST /identity/token"
    )]
    BadSignature,
    /// The token is past its expiry.
    #[error("the access token expired; request a new one from POST /identity/token")]
    Expired,
    /// The token's role does not permit the request.
    #[error("this request needs the {needed} role; the access token carries the {have} role")]
    WrongRole {
        /// The role the request needs.
        needed: Role,
        /// The role in the token.
        have: Role,
    },
    /// The token does not cover the instance addressed.
    #[error("the access token does not cover instance {instance}")]
    InstanceNotAllowed {
        /// The instance addressed.
        instance: Uuid,
    },
    /// The token's stored API key was revoked or rotated since the token was issued.
    #[error(
        "the API key this access token was issued to was revoked or rotated; request a new \
         token with a current API key"
    )]
    ApiKeyRevoked,
    /// The store of API keys could not be read; the details are logged.
    #[error("the service cannot read its API keys at the moment; try again")]
    ApiKeyStoreUnavailable,
    /// Neither a configured nor an unrevoked stored API key has the SHA-256 of the key
    /// presented.
    #[error(
        "Provided API key could not be found; check the key (it may have been revoked or \
         rotated), or its SHA-256 in the service's IAM configuration"
    )]
    UnknownApiKey,
    /// The API key is missing from the token request.
    #[error("Property 'apikey' either missing or empty.")]
    MissingApiKey,
    /// The token request's grant type is missing or not the API key grant.
    #[error(
        "Property 'grant_type' missing, empty or not supported: only \
         urn:ibm:params:oauth:grant-type:apikey is"
    )]
    BadGrantType,
    /// The token request's body is not a form.
    #[error("the request body is not a valid application/x-www-form-urlencoded form: {0}")]
    MalformedForm(&'static str),
    /// The key file that signs tokens cannot be used.
    #[error("IAM token signing key file {path}: {problem}")]
    SecretFile {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        problem: String,
    },
    /// The IAM configuration cannot be used.
    #[error("invalid IAM configuration: {0}")]
    InvalidConfig(String),
}

impl IamError {
    /// The HTTP status to answer with: 400 for token endpoint errors (as IBM Cloud IAM), 401 when
    /// a request's token is missing, does not verify or names a revoked key, 403 when its role or instances do not
    /// permit the request, 500 for setup problems, 503 when the API key store cannot be read.
    pub fn http_status(&self) -> u16 {
        match self {
            Self::UnknownApiKey
            | Self::MissingApiKey
            | Self::BadGrantType
            | Self::MalformedForm(_) => 400,
            Self::MissingToken
            | Self::MalformedToken
            | Self::UnsupportedAlgorithm
            | Self::BadSignature
            | Self::Expired
            | Self::ApiKeyRevoked => 401,
            Self::WrongRole { .. } | Self::InstanceNotAllowed { .. } => 403,
            Self::ApiKeyStoreUnavailable => 503,
            Self::SecretFile { .. } | Self::InvalidConfig(_) => 500,
        }
    }

    /// A stable code: IBM IAM's `BXNIM…` codes for token endpoint errors, rotor's own for the
    /// others.
    pub fn error_code(&self) -> &'static str {
        match self {
            Self::UnknownApiKey => "BXNIM0415E",
            Self::MissingApiKey | Self::BadGrantType | Self::MalformedForm(_) => "BXNIM0109E",
            Self::MissingToken => "token_missing",
            Self::MalformedToken => "token_malformed",
            Self::UnsupportedAlgorithm => "token_algorithm_unsupported",
            Self::BadSignature => "token_signature_invalid",
            Self::Expired => "token_expired",
            Self::ApiKeyRevoked => "token_api_key_revoked",
            Self::ApiKeyStoreUnavailable => "iam_store_unavailable",
            Self::WrongRole { .. } => "role_insufficient",
            Self::InstanceNotAllowed { .. } => "instance_not_allowed",
            Self::SecretFile { .. } => "iam_key_file",
            Self::InvalidConfig(_) => "iam_config_invalid",
        }
    }
}

/// IBM IAM's error body: `{"errorCode": "...", "errorMessage": "..."}` with [`IamError::http_status`],
/// and `WWW-Authenticate: Bearer` on 401.
impl IntoResponse for IamError {
    fn into_response(self) -> Response {
        let status =
            StatusCode::from_u16(self.http_status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let body = axum::Json(serde_json::json!({
            "errorCode": self.error_code(),
            "errorMessage": self.to_string(),
        }));
        if status == StatusCode::UNAUTHORIZED {
            (status, [(header::WWW_AUTHENTICATE, "Bearer")], body).into_response()
        } else {
            (status, body).into_response()
        }
    }
}

//! Issuing and verifying access tokens (JWT, HS256) and what their claims allow.

use std::collections::HashMap;

use super::*;

/// An access token as IBM Cloud IAM returns it.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenResponse {
    /// The JWT to send as `Authorization: Bearer …`.
    pub access_token: String,
    /// Always `not_supported`: clients present their API key again.
    pub refresh_token: String,
    /// Always `Bearer`.
    pub token_type: String,
    /// Lifetime in seconds.
    pub expires_in: u64,
    /// Expiry, in seconds since the Unix epoch (the token's `exp`).
    pub expiration: u64,
}

impl std::fmt::Debug for TokenResponse {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenResponse")
            .field("access_token", &"..")
            .field("token_type", &self.token_type)
            .field("expires_in", &self.expires_in)
            .field("expiration", &self.expiration)
            .finish()
    }
}

/// What a verified token says.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Claims {
    /// The name of the API key the token was issued to.
    pub sub: String,
    /// Its role.
    pub role: Role,
    /// The instance UUIDs it covers, or `"*"` for all.
    pub instances: Vec<String>,
    /// Issued at, in seconds since the Unix epoch.
    pub iat: u64,
    /// Expires at, in seconds since the Unix epoch.
    pub exp: u64,
    /// The stored API key the token was issued to (none for a configured key).
    pub api_key: Option<ApiKeyRef>,
}

impl Claims {
    /// Whether the token covers `instance`.
    pub fn covers(&self, instance: Uuid) -> bool {
        self.instances
            .iter()
            .any(|entry| entry == "*" || Uuid::parse_str(entry).is_ok_and(|id| id == instance))
    }

    /// Checks that the token's role permits `needed` and, for a request addressing an instance,
    /// that the token covers it.
    pub fn allows(&self, instance: Option<Uuid>, needed: Role) -> Result<(), IamError> {
        if !self.role.permits(needed) {
            return Err(IamError::WrongRole {
                needed,
                have: self.role,
            });
        }
        match instance {
            Some(instance) if !self.covers(instance) => {
                Err(IamError::InstanceNotAllowed { instance })
            }
            _ => Ok(()),
        }
    }
}

/// The token's payload on the wire.
#[derive(Serialize, Deserialize)]
pub(super) struct JwtClaims {
    pub(super) iss: String,
    pub(super) sub: String,
    pub(super) iat: u64,
    pub(super) exp: u64,
    pub(super) role: Role,
    pub(super) instances: Vec<String>,
    /// Set for a stored API key: checked against the store's revocations and rotations.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) api_key: Option<ApiKeyRef>,
}

/// The token's header on the wire; other fields are ignored.
#[derive(Deserialize)]
struct JwtHeader {
    alg: String,
}

/// Issues and verifies access tokens.
#[derive(Debug)]
pub struct Iam {
    pub(super) secret: Secret32,
    pub(super) ttl: u64,
    pub(super) keys: Vec<ApiKeyConfig>,
    /// The API keys kept in the store, when the service has one.
    pub(super) stored: Option<StoredKeys>,
    /// Tokens this service verified, by their signature, until they expire.
    pub(super) verified: VerifiedTokens,
}

/// The claims of tokens already verified, so that a client presenting the same token on every
/// request costs a map lookup instead of an HMAC and two JSON parses. An entry is used only
/// for the very same token (compared whole, not only its signature) and not after its expiry;
/// the revocation check of a stored API key runs on every request all the same.
#[derive(Debug, Default)]
pub(super) struct VerifiedTokens(std::sync::Mutex<HashMap<String, (String, Claims)>>);

/// Tokens remembered at most; past it the map starts afresh (a flood of distinct valid
/// tokens only costs verification again).
const VERIFIED_TOKENS: usize = 4_096;

impl VerifiedTokens {
    fn get(&self, token: &str, signature: &str, now: u64) -> Option<Claims> {
        let verified = self.0.lock().ok()?;
        let (known, claims) = verified.get(signature)?;
        (known == token && claims.exp > now).then(|| claims.clone())
    }

    fn insert(&self, token: &str, signature: &str, claims: &Claims) {
        if let Ok(mut verified) = self.0.lock() {
            if verified.len() >= VERIFIED_TOKENS {
                verified.clear();
            }
            verified.insert(signature.to_owned(), (token.to_owned(), claims.clone()));
        }
    }
}

impl Iam {
    /// A token service signing with `secret` for the API keys of `config`. Call
    /// [`IamConfig::check`] first: a key whose hash is not valid hex never matches.
    pub fn new(secret: Secret32, config: &IamConfig) -> Self {
        Self {
            secret,
            ttl: config.token_ttl_seconds,
            keys: config.api_keys.clone(),
            stored: None,
            verified: VerifiedTokens::default(),
        }
    }

    /// Also accepts the API keys kept in `store` (managed with `rotor apikeys`), which may
    /// name the instances in `served`.
    pub fn with_api_key_store(
        mut self,
        store: Arc<dyn rotor_store::ApiKeyStore>,
        served: impl IntoIterator<Item = Uuid>,
    ) -> Self {
        self.stored = Some(StoredKeys::new(store, served.into_iter().collect()));
        self
    }

    /// Exchanges an API key for a token valid from `now` for the configured lifetime: a
    /// configured key, else an unrevoked stored one.
    pub fn issue(&self, api_key: &str, now: u64) -> Result<TokenResponse, IamError> {
        let presented = sha256(api_key.as_bytes());
        let mut found = None;
        // Every configured key is compared, matched or not.
        for key in &self.keys {
            let matches = decode_sha256_hex(&key.key_sha256)
                .is_some_and(|expected| constant_time_eq(&presented, &expected));
            if matches && found.is_none() {
                found = Some(key);
            }
        }
        if let Some(key) = found {
            return Ok(self.sign(&key.name, key.role, &key.instances, None, now));
        }
        if let Some(stored) = &self.stored
            && let Some(key) = stored.find(&presented)?
        {
            let Some(role) = Role::from_name(&key.role) else {
                tracing::error!(api_key = %key.id, role = %key.role, "a stored API key has an unknown role");
                return Err(IamError::ApiKeyStoreUnavailable);
            };
            let reference = ApiKeyRef {
                id: key.id,
                generation: key.generation,
            };
            return Ok(self.sign(&key.name, role, &key.instances, Some(reference), now));
        }
        tracing::warn!("token request with an unknown API key");
        Err(IamError::UnknownApiKey)
    }

    /// A token for `sub` with `role` on `instances`, valid from `now`.
    fn sign(
        &self,
        sub: &str,
        role: Role,
        instances: &[String],
        api_key: Option<ApiKeyRef>,
        now: u64,
    ) -> TokenResponse {
        let exp = now.saturating_add(self.ttl);
        let claims = JwtClaims {
            iss: ISSUER.to_owned(),
            sub: sub.to_owned(),
            iat: now,
            exp,
            role,
            instances: instances.to_vec(),
            api_key,
        };
        let payload = serde_json::to_string(&claims).unwrap_or_default();
        let signing_input = format!("{JWT_HEADER}.{}", URL_SAFE_NO_PAD.encode(payload));
        let signature = hmac_sha256(&self.secret, signing_input.as_bytes());
        let access_token = format!("{signing_input}.{}", URL_SAFE_NO_PAD.encode(signature));
        tracing::info!(api_key = %sub, %role, exp, "issued an access token");
        TokenResponse {
            access_token,
            refresh_token: REFRESH_NOT_SUPPORTED.to_owned(),
            token_type: "Bearer".to_owned(),
            expires_in: self.ttl,
            expiration: exp,
        }
    }

    /// Verifies the `Authorization` header of a request (`Bearer TOKEN`, the scheme in any case)
    /// at `now`: the token must be an HS256 JWT signed with this service's key and not expired.
    pub fn verify(&self, authorization_header: Option<&str>, now: u64) -> Result<Claims, IamError> {
        let header = authorization_header.ok_or(IamError::MissingToken)?.trim();
        let (scheme, token) = header
            .split_once(|c: char| c.is_ascii_whitespace())
            .ok_or(IamError::MissingToken)?;
        if !scheme.eq_ignore_ascii_case("bearer") {
            return Err(IamError::MissingToken);
        }
        let token = token.trim();
        if token.is_empty() {
            return Err(IamError::MissingToken);
        }
        if token.len() > MAX_TOKEN_LEN {
            return Err(IamError::MalformedToken);
        }
        let mut parts = token.split('.');
        let (Some(header_b64), Some(payload_b64), Some(signature_b64), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(IamError::MalformedToken);
        };

        if let Some(claims) = self.verified.get(token, signature_b64, now) {
            self.check_stored(&claims)?;
            return Ok(claims);
        }

        let jwt_header: JwtHeader = decode_json(header_b64)?;
        if jwt_header.alg != JWT_ALG {
            return Err(IamError::UnsupportedAlgorithm);
        }
        let signature = URL_SAFE_NO_PAD
            .decode(signature_b64)
            .map_err(|_| IamError::MalformedToken)?;
        let signing_input_len = header_b64.len() + 1 + payload_b64.len();
        let signing_input = token
            .get(..signing_input_len)
            .ok_or(IamError::MalformedToken)?;
        verify_hmac_sha256(&self.secret, signing_input.as_bytes(), &signature)
            .map_err(|_| IamError::BadSignature)?;

        let claims: JwtClaims = decode_json(payload_b64)?;
        if claims.iss != ISSUER {
            return Err(IamError::MalformedToken);
        }
        if claims.exp <= now {
            return Err(IamError::Expired);
        }
        let claims = Claims {
            sub: claims.sub,
            role: claims.role,
            instances: claims.instances,
            iat: claims.iat,
            exp: claims.exp,
            api_key: claims.api_key,
        };
        self.check_stored(&claims)?;
        self.verified.insert(token, signature_b64, &claims);
        Ok(claims)
    }

    /// A token of a stored API key is refused once the key is revoked or rotated.
    fn check_stored(&self, claims: &Claims) -> Result<(), IamError> {
        if let Some(key) = claims.api_key {
            // Without the store the key's revocations cannot be known: refused.
            let stored = self.stored.as_ref().ok_or(IamError::ApiKeyRevoked)?;
            stored.check(key)?;
        }
        Ok(())
    }
}

fn decode_json<T: serde::de::DeserializeOwned>(part: &str) -> Result<T, IamError> {
    let bytes = URL_SAFE_NO_PAD
        .decode(part)
        .map_err(|_| IamError::MalformedToken)?;
    serde_json::from_slice(&bytes).map_err(|_| IamError::MalformedToken)
}

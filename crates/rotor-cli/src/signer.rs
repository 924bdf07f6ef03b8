//! Who signs admin commands: a signature key unlocked from its file, or a key pair on a PKCS#11
//! token that signs inside the token. The session picks the kind from what the workstation
//! records of each selected key, so every front end (terminal, console) signs the same way.

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use anyhow::{Context, Result, anyhow};
use rotor_crypto::{PublicKey, SigningKey, Token, TokenError};

use crate::workstation::TokenSigkeyFile;

/// Test hook: after this many signatures by token keys in one process, every further token
/// signature fails as a token that broke down would. Read only here; unset in normal use.
pub const FAIL_AFTER_ENV: &str = "ROTOR_TEST_TOKEN_FAIL_AFTER";

/// Token signatures made by this process, for [`FAIL_AFTER_ENV`].
static TOKEN_SIGNATURES: AtomicU64 = AtomicU64::new(0);

/// A logged-in token shared by the signers and key parts of one session.
pub type SharedToken = Arc<Mutex<Token>>;

/// Opens the token `label` of `module` with `pin`; a refused PIN names the token.
pub fn open_token(module: &Path, label: &str, pin: &str) -> Result<SharedToken> {
    let token = Token::open(module, label, pin).map_err(|err| match err {
        TokenError::BadPin => anyhow!(
            "token '{label}' refused the PIN; nothing was changed. Check the PIN (ROTOR_PIN in scripts); too many wrong PINs lock the token"
        ),
        other => anyhow!("token '{label}': {other}"),
    })?;
    Ok(Arc::new(Mutex::new(token)))
}

/// Runs `op` on the token; a poisoned lock (an earlier panic) is an error, not a panic.
pub fn with_token<T>(
    token: &SharedToken,
    label: &str,
    op: impl FnOnce(&Token) -> Result<T, TokenError>,
) -> Result<T> {
    let guard = token
        .lock()
        .map_err(|_| anyhow!("token '{label}' is unusable after an earlier failure"))?;
    op(&guard).with_context(|| format!("token '{label}'"))
}

/// A key pair on a token, ready to sign.
pub struct TokenKey {
    file: TokenSigkeyFile,
    token: SharedToken,
}

impl TokenKey {
    /// The key `file` records, on the logged-in `token`.
    pub fn new(file: TokenSigkeyFile, token: SharedToken) -> Self {
        Self { file, token }
    }

    fn sign(&self, message: &[u8]) -> Result<Vec<u8>> {
        let label = self.file.token();
        let done = TOKEN_SIGNATURES.fetch_add(1, Ordering::SeqCst);
        if let Some(limit) = std::env::var(FAIL_AFTER_ENV)
            .ok()
            .and_then(|text| text.parse::<u64>().ok())
            && done >= limit
        {
            return Err(anyhow!(
                "token '{label}': the token failed: {FAIL_AFTER_ENV} stops token signatures after {limit}"
            ));
        }
        let alg = self.file.public_key.alg;
        let key_id = &self.file.place.key_id;
        let signature = with_token(&self.token, label, |token| token.sign(alg, key_id, message))?;
        // A token that signs with another key than the recorded one must not go unnoticed here.
        self.file
            .public_key
            .verify(message, &signature)
            .map_err(|_| {
                anyhow!(
                    "token '{label}' signed with a key other than admin '{}''s recorded public key; check that the right token is inserted",
                    self.file.name
                )
            })?;
        Ok(signature)
    }
}

/// One selected signature key, unlocked.
#[non_exhaustive]
pub enum Signer {
    /// Decrypted from its password-protected file.
    File(SigningKey),
    /// Signing inside a token.
    Token(TokenKey),
}

impl Signer {
    /// The public key units know the admin by.
    pub fn public_key(&self) -> PublicKey {
        match self {
            Self::File(key) => key.public_key(),
            Self::Token(key) => key.file.public_key.clone(),
        }
    }

    /// ECDSA `r ‖ s` over `message`, as units verify it.
    pub fn sign(&self, message: &[u8]) -> Result<Vec<u8>> {
        match self {
            Self::File(key) => Ok(key.sign(message)),
            Self::Token(key) => key.sign(message),
        }
    }
}

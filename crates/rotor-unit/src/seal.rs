//! Where a unit's sealing key comes from. The key never lies beside the state except in the
//! explicit development mode:
//!
//! - [`SealSource::Passphrase`]: Argon2id (RFC 9106) of a passphrase, with its cost and salt in
//!   the state file's header; a copy of the directory is useless without the passphrase;
//! - [`SealSource::Token`]: a random key sealed by an AES-256 key that never leaves a PKCS#11
//!   token; a copy of the directory is useless without the token and its PIN;
//! - [`SealSource::File`]: development only: the key in `seal.key` beside the state, so a copy
//!   of the directory is a copy of the master keys.
//!
//! The header ([`SealHeader`]) says which source sealed a state and is stored in the state file
//! itself, as associated data: state and header are replaced together, atomically, so a reseal
//! interrupted at any instant leaves a state that opens under the old source or the new one.

use std::path::PathBuf;

use rotor_crypto::{Argon2Params, Secret32, Token, TokenError, argon2id, hmac_sha256};
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

/// The shortest passphrase a new unit accepts.
pub const MIN_PASSPHRASE_CHARS: usize = 12;
/// What a passphrase-derived key is checked against, so a wrong passphrase is told apart from a
/// damaged state.
const PASSPHRASE_CHECK: &[u8] = b"rotor unit passphrase check v1";
/// Associated data of a sealing key sealed in a token.
const TOKEN_AAD: &[u8] = b"rotor unit sealing key v1";

/// How to obtain the sealing key, with the credentials to do it.
pub enum SealSource {
    /// Argon2id of this passphrase.
    Passphrase(Zeroizing<String>),
    /// A PKCS#11 token.
    Token {
        /// The PKCS#11 module (shared library).
        module: PathBuf,
        /// The token's label.
        token: String,
        /// The user PIN.
        pin: Zeroizing<String>,
    },
    /// `seal.key` beside the state (development only).
    File,
}

impl std::fmt::Debug for SealSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl SealSource {
    /// As `--seal` names it.
    pub fn name(&self) -> &'static str {
        match self {
            Self::Passphrase(_) => "passphrase",
            Self::Token { .. } => "token",
            Self::File => "file",
        }
    }
}

/// How a stored state was sealed: no secret, only what is needed to find the key again.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "source", rename_all = "snake_case", deny_unknown_fields)]
pub enum SealHeader {
    /// Argon2id of a passphrase.
    Passphrase {
        /// Cost parameters.
        argon2: Argon2Params,
        /// Random salt.
        #[serde(with = "hex::serde")]
        salt: Vec<u8>,
        /// HMAC-SHA-256 of a fixed label under the derived key.
        #[serde(with = "hex::serde")]
        check: Vec<u8>,
    },
    /// A random key sealed inside a PKCS#11 token.
    Token {
        /// The token's label.
        token: String,
        /// The label of the token's AES key.
        key_label: String,
        /// `iv ‖ ciphertext ‖ tag` of the sealing key under that key.
        #[serde(with = "hex::serde")]
        sealed_key: Vec<u8>,
    },
    /// `seal.key` beside the state.
    File,
}

impl SealHeader {
    /// As `--seal` names it.
    pub fn name(&self) -> &'static str {
        match self {
            Self::Passphrase { .. } => "passphrase",
            Self::Token { .. } => "token",
            Self::File => "file",
        }
    }
}

/// Why a sealing key could not be made or found.
#[derive(Debug)]
#[non_exhaustive]
pub enum SealError {
    /// The state was sealed by another source than the one given.
    OtherSource {
        /// The source that sealed it.
        stored: &'static str,
        /// The source given.
        given: &'static str,
    },
    /// The passphrase does not open this state.
    WrongPassphrase,
    /// A new passphrase is too short.
    WeakPassphrase,
    /// The state names another token than the one given.
    OtherToken {
        /// The token that sealed it.
        stored: String,
        /// The token given.
        given: String,
    },
    /// The token failed or refused.
    Token(TokenError),
    /// Argon2id parameters in the header are unusable (a damaged or hostile file).
    BadParameters,
}

impl std::fmt::Display for SealError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::OtherSource { stored, given } => write!(
                f,
                "this unit's state is sealed by a {stored} key, not a {given} one; start it with --seal {stored} (or convert it with 'rotor unit reseal')"
            ),
            Self::WrongPassphrase => f.write_str("the passphrase does not open this unit's state"),
            Self::WeakPassphrase => write!(
                f,
                "a unit passphrase needs at least {MIN_PASSPHRASE_CHARS} characters"
            ),
            Self::OtherToken { stored, given } => write!(
                f,
                "this unit's state is sealed by a key in token '{stored}', not '{given}'"
            ),
            Self::Token(err) => err.fmt(f),
            Self::BadParameters => f.write_str(
                "the state file's Argon2id parameters are unusable; restore it from backup",
            ),
        }
    }
}

impl std::error::Error for SealError {}

impl From<TokenError> for SealError {
    fn from(err: TokenError) -> Self {
        Self::Token(err)
    }
}

fn passphrase_key(
    passphrase: &str,
    argon2: Argon2Params,
    salt: &[u8],
) -> Result<(Secret32, Vec<u8>), SealError> {
    let key =
        argon2id(passphrase.as_bytes(), salt, argon2).map_err(|_| SealError::BadParameters)?;
    let check = hmac_sha256(&key, PASSPHRASE_CHECK).to_vec();
    Ok((key, check))
}

/// A new sealing key from `source`, with the header that finds it again. `key_label` names the
/// key a token source creates; `file_key` gives the file source's key (kept in `seal.key`).
pub fn create<E: From<SealError>>(
    source: &SealSource,
    key_label: &str,
    file_key: impl FnOnce() -> Result<Secret32, E>,
) -> Result<(Secret32, SealHeader), E> {
    match source {
        SealSource::Passphrase(passphrase) => {
            if passphrase.chars().count() < MIN_PASSPHRASE_CHARS {
                return Err(SealError::WeakPassphrase.into());
            }
            let mut salt = vec![0u8; 16];
            rotor_crypto::fill_random(&mut salt);
            let argon2 = Argon2Params::default();
            let (key, check) = passphrase_key(passphrase, argon2, &salt)?;
            Ok((
                key,
                SealHeader::Passphrase {
                    argon2,
                    salt,
                    check,
                },
            ))
        }
        SealSource::Token { module, token, pin } => {
            let session = Token::open(module, token, pin).map_err(SealError::from)?;
            session.create_key(key_label).map_err(SealError::from)?;
            let key = Secret32::random();
            let sealed_key = session
                .seal(key_label, TOKEN_AAD, &key)
                .map_err(SealError::from)?;
            Ok((
                key,
                SealHeader::Token {
                    token: token.clone(),
                    key_label: key_label.to_owned(),
                    sealed_key,
                },
            ))
        }
        SealSource::File => Ok((file_key()?, SealHeader::File)),
    }
}

/// The sealing key `header` describes, obtained through `source`. `file_key` reads `seal.key`.
pub fn unlock<E: From<SealError>>(
    header: &SealHeader,
    source: &SealSource,
    file_key: impl FnOnce() -> Result<Secret32, E>,
) -> Result<Secret32, E> {
    match (header, source) {
        (
            SealHeader::Passphrase {
                argon2,
                salt,
                check,
            },
            SealSource::Passphrase(passphrase),
        ) => {
            let (key, derived_check) = passphrase_key(passphrase, *argon2, salt)?;
            if rotor_crypto::constant_time_eq(&derived_check, check) {
                Ok(key)
            } else {
                Err(SealError::WrongPassphrase.into())
            }
        }
        (
            SealHeader::Token {
                token,
                key_label,
                sealed_key,
            },
            SealSource::Token {
                module,
                token: given,
                pin,
            },
        ) => {
            if token != given {
                return Err(SealError::OtherToken {
                    stored: token.clone(),
                    given: given.clone(),
                }
                .into());
            }
            let session = Token::open(module, token, pin).map_err(SealError::from)?;
            Ok(session
                .open_sealed(key_label, TOKEN_AAD, sealed_key)
                .map_err(SealError::from)?)
        }
        (SealHeader::File, SealSource::File) => file_key(),
        (stored, given) => Err(SealError::OtherSource {
            stored: stored.name(),
            given: given.name(),
        }
        .into()),
    }
}

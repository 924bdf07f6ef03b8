//! A PKCS#11 token (PKCS #11 v2.40 base specification) that keeps an AES-256 key which never
//! leaves it (`CKA_SENSITIVE`, not `CKA_EXTRACTABLE`) and seals 256-bit secrets under it with
//! `CKM_AES_GCM` (§2.12 of the current mechanisms specification): whoever copies the sealed
//! bytes needs the token and its PIN to open them.

use std::path::Path;

use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
use cryptoki::error::{Error as Pkcs11Error, RvError};
use cryptoki::mechanism::Mechanism;
use cryptoki::mechanism::aead::GcmParams;
use cryptoki::object::{Attribute, KeyType, ObjectClass, ObjectHandle};
use cryptoki::session::{Session, UserType};
use cryptoki::types::AuthPin;
use zeroize::Zeroizing;

use crate::{KEY_LEN, NONCE_LEN, Secret32, TAG_LEN, fill_random};

/// Why a token could not be used. Carries no secret; what the token said is kept as text.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum TokenError {
    /// The PKCS#11 module could not be loaded or initialized.
    Module(String),
    /// No slot holds a token with this label.
    NoToken(String),
    /// The token refused the PIN.
    BadPin,
    /// The token holds no key with this label (or several).
    NoKey(String),
    /// The sealed bytes did not open under the token's key; deliberately without detail.
    Opaque,
    /// Any other failure the token reported.
    Failed(String),
}

impl std::fmt::Display for TokenError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Module(why) => write!(f, "cannot load the PKCS#11 module: {why}"),
            Self::NoToken(label) => write!(f, "no PKCS#11 token is labelled '{label}'"),
            Self::BadPin => f.write_str("the token refused the PIN"),
            Self::NoKey(label) => write!(
                f,
                "the token holds no single secret key labelled '{label}' (wrong token, or the key was deleted)"
            ),
            Self::Opaque => f.write_str("the sealed key did not open under the token's key"),
            Self::Failed(why) => write!(f, "the token failed: {why}"),
        }
    }
}

impl std::error::Error for TokenError {}

fn failed(err: Pkcs11Error) -> TokenError {
    TokenError::Failed(err.to_string())
}

/// A logged-in session on one token.
pub struct Token {
    session: Session,
    // Dropped after the session: the module must outlive it.
    _module: Pkcs11,
}

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Token(..)")
    }
}

impl Token {
    /// Loads `module`, finds the token labelled `label` and logs in as its user with `pin`.
    pub fn open(module: &Path, label: &str, pin: &str) -> Result<Self, TokenError> {
        let pkcs11 = Pkcs11::new(module).map_err(|err| TokenError::Module(err.to_string()))?;
        pkcs11
            .initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK))
            .map_err(|err| TokenError::Module(err.to_string()))?;
        let mut found = None;
        for slot in pkcs11.get_slots_with_token().map_err(failed)? {
            let info = pkcs11.get_token_info(slot).map_err(failed)?;
            if info.label().trim_end() == label {
                found = Some(slot);
                break;
            }
        }
        let slot = found.ok_or_else(|| TokenError::NoToken(label.to_owned()))?;
        let session = pkcs11.open_rw_session(slot).map_err(failed)?;
        let pin = AuthPin::from(pin.to_owned());
        match session.login(UserType::User, Some(&pin)) {
            Ok(()) | Err(Pkcs11Error::Pkcs11(RvError::UserAlreadyLoggedIn, _)) => {}
            Err(Pkcs11Error::Pkcs11(RvError::PinIncorrect | RvError::PinLenRange, _)) => {
                return Err(TokenError::BadPin);
            }
            Err(err) => return Err(failed(err)),
        }
        Ok(Self {
            session,
            _module: pkcs11,
        })
    }

    /// Generates a persistent AES-256 key labelled `key_label` inside the token: sensitive, never
    /// extractable, usable only to encrypt and decrypt.
    pub fn create_key(&self, key_label: &str) -> Result<(), TokenError> {
        let template = [
            Attribute::Class(ObjectClass::SECRET_KEY),
            Attribute::KeyType(KeyType::AES),
            Attribute::ValueLen((KEY_LEN as u64).into()),
            Attribute::Token(true),
            Attribute::Private(true),
            Attribute::Sensitive(true),
            Attribute::Extractable(false),
            Attribute::Encrypt(true),
            Attribute::Decrypt(true),
            Attribute::Wrap(false),
            Attribute::Unwrap(false),
            Attribute::Label(key_label.as_bytes().to_vec()),
        ];
        self.session
            .generate_key(&Mechanism::AesKeyGen, &template)
            .map(|_| ())
            .map_err(failed)
    }

    fn key(&self, key_label: &str) -> Result<ObjectHandle, TokenError> {
        let found = self
            .session
            .find_objects(&[
                Attribute::Class(ObjectClass::SECRET_KEY),
                Attribute::Label(key_label.as_bytes().to_vec()),
            ])
            .map_err(failed)?;
        match found.as_slice() {
            [key] => Ok(*key),
            _ => Err(TokenError::NoKey(key_label.to_owned())),
        }
    }

    /// Seals `secret` under the token key `key_label` with AES-256-GCM inside the token and a
    /// fresh random 96-bit IV, binding `aad`. Returns `iv ‖ ciphertext ‖ tag`.
    pub fn seal(
        &self,
        key_label: &str,
        aad: &[u8],
        secret: &Secret32,
    ) -> Result<Vec<u8>, TokenError> {
        let key = self.key(key_label)?;
        let mut iv = [0u8; NONCE_LEN];
        fill_random(&mut iv);
        let mut params_iv = iv;
        let params =
            GcmParams::new(&mut params_iv, aad, ((TAG_LEN * 8) as u64).into()).map_err(failed)?;
        let sealed = self
            .session
            .encrypt(&Mechanism::AesGcm(params), key, secret.expose())
            .map_err(failed)?;
        let mut out = iv.to_vec();
        out.extend_from_slice(&sealed);
        Ok(out)
    }

    /// Opens what [`Token::seal`] made. A wrong key, IV, tag or `aad` is [`TokenError::Opaque`].
    pub fn open_sealed(
        &self,
        key_label: &str,
        aad: &[u8],
        sealed: &[u8],
    ) -> Result<Secret32, TokenError> {
        let key = self.key(key_label)?;
        let (iv, body) = sealed
            .split_at_checked(NONCE_LEN)
            .ok_or(TokenError::Opaque)?;
        let mut iv = <[u8; NONCE_LEN]>::try_from(iv).map_err(|_| TokenError::Opaque)?;
        let params = GcmParams::new(&mut iv, aad, ((TAG_LEN * 8) as u64).into()).map_err(failed)?;
        let plain = self
            .session
            .decrypt(&Mechanism::AesGcm(params), key, body)
            .map(Zeroizing::new)
            .map_err(|_| TokenError::Opaque)?;
        Secret32::from_slice(&plain).ok_or(TokenError::Opaque)
    }
}

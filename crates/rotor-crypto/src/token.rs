//! A PKCS#11 token (PKCS #11 v2.40 base specification) that keeps an AES-256 key which never
//! leaves it (`CKA_SENSITIVE`, not `CKA_EXTRACTABLE`) and seals 256-bit secrets under it with
//! `CKM_AES_GCM` (§2.12 of the current mechanisms specification): whoever copies the sealed
//! bytes needs the token and its PIN to open them.
//!
//! The same token session also serves administrators (see docs/SMARTCARDS.md):
//!
//! - **signature keys**: an EC key pair generated inside the token (`CKM_EC_KEY_PAIR_GEN`, the
//!   private key sensitive and not extractable) that signs with raw `CKM_ECDSA` over a digest
//!   computed on the host, SHA-256 for P-256 and SHA-512 for P-521, so the signature is the
//!   FIPS 186-5 ECDSA signature [`crate::PublicKey::verify`] checks;
//! - **key parts**: an AES-256 secret key object, sensitive, leaving the token only wrapped to a
//!   unit's importer key: an ephemeral P-256 key pair made in the token, `CKM_ECDH1_DERIVE` with
//!   the importer public key, and `CKM_AES_KEY_WRAP` (RFC 3394) under the derived key
//!   ([`crate::EnvelopeKind::TokenWrapped`]).

use std::path::{Path, PathBuf};
use std::sync::Mutex;

use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
use cryptoki::error::{Error as Pkcs11Error, RvError};
use cryptoki::mechanism::aead::GcmParams;
use cryptoki::mechanism::elliptic_curve::{EcKdf, Ecdh1DeriveParams};
use cryptoki::mechanism::{Mechanism, MechanismType};
use cryptoki::object::{Attribute, AttributeType, KeyType, ObjectClass, ObjectHandle};
use cryptoki::session::{Session, UserType};
use cryptoki::slot::Slot;
use cryptoki::types::AuthPin;
use sha2::Digest;
use zeroize::{Zeroize, Zeroizing};

use crate::{Envelope, KEY_LEN, NONCE_LEN, PublicKey, Secret32, SigAlg, TAG_LEN, Vp, fill_random};

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
    /// The token holds no single object of this kind with this identifier.
    NoObject {
        /// What was looked for ("signature key", "key part").
        what: &'static str,
        /// Its `CKA_ID`, in hex.
        id: String,
    },
    /// The token lacks mechanisms (or a curve) rotor needs for the operation.
    Lacks(Vec<String>),
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
            Self::NoObject { what, id } => write!(
                f,
                "the token holds no {what} with id {id} (wrong token, or the object was deleted)"
            ),
            Self::Lacks(what) => write!(f, "the token lacks {}", what.join(", ")),
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
    /// The token's slot.
    slot: Slot,
    // Dropped after the session: the module must outlive it.
    module: Pkcs11,
}

/// Modules loaded and initialized by this process: `C_Initialize` may run once per module, and
/// one process may open several tokens of the same module.
static MODULES: Mutex<Vec<(PathBuf, Pkcs11)>> = Mutex::new(Vec::new());

/// The module at `path`, loaded and initialized once per process.
fn module(path: &Path) -> Result<Pkcs11, TokenError> {
    let mut loaded = MODULES
        .lock()
        .map_err(|_| TokenError::Module("a previous load failed".to_owned()))?;
    if let Some((_, pkcs11)) = loaded.iter().find(|(p, _)| p == path) {
        return Ok(pkcs11.clone());
    }
    let pkcs11 = Pkcs11::new(path).map_err(|err| TokenError::Module(err.to_string()))?;
    match pkcs11.initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK)) {
        Ok(()) | Err(Pkcs11Error::Pkcs11(RvError::CryptokiAlreadyInitialized, _)) => {}
        Err(err) => return Err(TokenError::Module(err.to_string())),
    }
    loaded.push((path.to_owned(), pkcs11.clone()));
    Ok(pkcs11)
}

/// `CKA_EC_PARAMS` of each curve: the DER of its named-curve OID (RFC 5480 §2.1.1.1).
fn ec_params(alg: SigAlg) -> Vec<u8> {
    match alg {
        // 1.2.840.10045.3.1.7 (secp256r1)
        SigAlg::P256Sha256 => vec![0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07],
        // 1.3.132.0.35 (secp521r1)
        SigAlg::P521Sha512 => vec![0x06, 0x05, 0x2b, 0x81, 0x04, 0x00, 0x23],
    }
}

/// The length of an uncompressed point of each curve.
fn point_len(alg: SigAlg) -> usize {
    match alg {
        SigAlg::P256Sha256 => 65,
        SigAlg::P521Sha512 => 133,
    }
}

/// The uncompressed point in a `CKA_EC_POINT` value: a DER OCTET STRING (PKCS #11 v2.40
/// §2.3.3), or the bare point as some modules return it.
fn ec_point(value: &[u8], len: usize) -> Option<&[u8]> {
    match value {
        [0x04, ..] if value.len() == len => Some(value),
        [0x04, short, point @ ..] if usize::from(*short) == point.len() && point.len() < 0x80 => {
            Some(point)
        }
        [0x04, 0x81, long, point @ ..] if usize::from(*long) == point.len() => Some(point),
        _ => None,
    }
}

/// What signing with a token key needs.
const SIGN_MECHANISMS: &[(MechanismType, &str)] = &[
    (MechanismType::ECC_KEY_PAIR_GEN, "CKM_EC_KEY_PAIR_GEN"),
    (MechanismType::ECDSA, "CKM_ECDSA"),
];

/// What wrapping a key part to a unit inside the token needs.
const WRAP_MECHANISMS: &[(MechanismType, &str)] = &[
    (MechanismType::ECC_KEY_PAIR_GEN, "CKM_EC_KEY_PAIR_GEN"),
    (MechanismType::ECDH1_DERIVE, "CKM_ECDH1_DERIVE"),
    (MechanismType::AES_KEY_WRAP, "CKM_AES_KEY_WRAP"),
];

/// What a token needs to generate a key part inside itself and compute its verification
/// pattern there.
const PART_GENERATION_MECHANISMS: &[(MechanismType, &str)] = &[
    (MechanismType::AES_KEY_GEN, "CKM_AES_KEY_GEN"),
    (MechanismType::SHA256, "CKM_SHA256"),
];

/// A curve the token refuses becomes [`TokenError::Lacks`].
fn curve_failed(alg: SigAlg) -> impl FnOnce(Pkcs11Error) -> TokenError {
    move |err| match err {
        Pkcs11Error::Pkcs11(RvError::CurveNotSupported | RvError::DomainParamsInvalid, _) => {
            TokenError::Lacks(vec![format!("the curve {}", alg.name())])
        }
        other => failed(other),
    }
}

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Token(..)")
    }
}

/// The slot holding the token labelled `label`, if one does.
fn find_slot(pkcs11: &Pkcs11, label: &str) -> Result<Option<Slot>, TokenError> {
    for slot in pkcs11.get_slots_with_token().map_err(failed)? {
        let info = pkcs11.get_token_info(slot).map_err(failed)?;
        if info.label().trim_end() == label {
            return Ok(Some(slot));
        }
    }
    Ok(None)
}

impl Token {
    /// Whether a token labelled `label` is present in a slot of `module` (no PIN needed).
    pub fn is_present(module: &Path, label: &str) -> Result<bool, TokenError> {
        Ok(find_slot(&self::module(module)?, label)?.is_some())
    }

    /// Loads `module`, finds the token labelled `label` and logs in as its user with `pin`.
    pub fn open(module: &Path, label: &str, pin: &str) -> Result<Self, TokenError> {
        let pkcs11 = self::module(module)?;
        let slot =
            find_slot(&pkcs11, label)?.ok_or_else(|| TokenError::NoToken(label.to_owned()))?;
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
            slot,
            module: pkcs11,
        })
    }

    /// The mechanisms of `needed` the token does not offer, as [`TokenError::Lacks`].
    fn require(&self, needed: &[(MechanismType, &str)]) -> Result<(), TokenError> {
        let missing: Vec<String> = needed
            .iter()
            // Asked one by one: the full list may hold vendor mechanisms cryptoki logs as unknown.
            .filter(|(mechanism, _)| {
                self.module
                    .get_mechanism_info(self.slot, *mechanism)
                    .is_err()
            })
            .map(|(_, name)| (*name).to_owned())
            .collect();
        if missing.is_empty() {
            Ok(())
        } else {
            Err(TokenError::Lacks(missing))
        }
    }

    /// Whether the token can wrap a key part to a unit (ECDH and AES key wrap inside it).
    pub fn require_part_wrapping(&self) -> Result<(), TokenError> {
        self.require(WRAP_MECHANISMS)
    }

    /// The one object of `class` with `CKA_ID` `id`.
    fn object(
        &self,
        class: ObjectClass,
        id: &[u8],
        what: &'static str,
    ) -> Result<ObjectHandle, TokenError> {
        let found = self
            .session
            .find_objects(&[Attribute::Class(class), Attribute::Id(id.to_vec())])
            .map_err(failed)?;
        match found.as_slice() {
            [object] => Ok(*object),
            _ => Err(TokenError::NoObject {
                what,
                id: hex::encode(id),
            }),
        }
    }

    /// The uncompressed point of the EC public key object `public`.
    fn public_point(&self, public: ObjectHandle, alg: SigAlg) -> Result<Vec<u8>, TokenError> {
        let attributes = self
            .session
            .get_attributes(public, &[AttributeType::EcPoint])
            .map_err(failed)?;
        attributes
            .iter()
            .find_map(|attribute| match attribute {
                Attribute::EcPoint(value) => ec_point(value, point_len(alg)).map(<[u8]>::to_vec),
                _ => None,
            })
            .ok_or_else(|| TokenError::Failed("the token returned no usable public point".into()))
    }

    /// Generates a persistent signature key pair labelled `label` with `CKA_ID` `id` inside the
    /// token: the private key sensitive, never extractable, usable only to sign.
    pub fn generate_signing_key(
        &self,
        alg: SigAlg,
        label: &str,
        id: &[u8],
    ) -> Result<PublicKey, TokenError> {
        self.require(SIGN_MECHANISMS)?;
        let taken = self
            .session
            .find_objects(&[Attribute::Id(id.to_vec())])
            .map_err(failed)?;
        if !taken.is_empty() {
            return Err(TokenError::Failed(format!(
                "it already holds an object with id {}; choose another key id",
                hex::encode(id)
            )));
        }
        let public_template = [
            Attribute::Token(true),
            Attribute::Private(false),
            Attribute::Verify(true),
            Attribute::EcParams(ec_params(alg)),
            Attribute::Label(label.as_bytes().to_vec()),
            Attribute::Id(id.to_vec()),
        ];
        let private_template = [
            Attribute::Token(true),
            Attribute::Private(true),
            Attribute::Sensitive(true),
            Attribute::Extractable(false),
            Attribute::Sign(true),
            Attribute::Derive(false),
            Attribute::Label(label.as_bytes().to_vec()),
            Attribute::Id(id.to_vec()),
        ];
        let (public, _) = self
            .session
            .generate_key_pair(
                &Mechanism::EccKeyPairGen,
                &public_template,
                &private_template,
            )
            .map_err(curve_failed(alg))?;
        let point = self.public_point(public, alg)?;
        PublicKey::parse(alg, &point)
            .map_err(|_| TokenError::Failed("the token returned an invalid public key".into()))
    }

    /// The public key of the signature key pair `id` already on the token, if there is one: its
    /// private key must be sensitive, not extractable and on the curve of `alg`.
    pub fn find_signing_key(
        &self,
        alg: SigAlg,
        id: &[u8],
    ) -> Result<Option<PublicKey>, TokenError> {
        let private = self
            .session
            .find_objects(&[
                Attribute::Class(ObjectClass::PRIVATE_KEY),
                Attribute::Id(id.to_vec()),
            ])
            .map_err(failed)?;
        let [private] = private.as_slice() else {
            return Ok(None);
        };
        let attributes = self
            .session
            .get_attributes(
                *private,
                &[
                    AttributeType::Sensitive,
                    AttributeType::Extractable,
                    AttributeType::EcParams,
                ],
            )
            .map_err(failed)?;
        let mut guarded = (false, false);
        let mut on_curve = false;
        for attribute in &attributes {
            match attribute {
                Attribute::Sensitive(sensitive) => guarded.0 = *sensitive,
                Attribute::Extractable(extractable) => guarded.1 = !*extractable,
                Attribute::EcParams(params) => on_curve = *params == ec_params(alg),
                _ => {}
            }
        }
        if !on_curve {
            return Err(TokenError::Failed(format!(
                "its key with id {} is not a {} key",
                hex::encode(id),
                alg.name()
            )));
        }
        if guarded != (true, true) {
            return Err(TokenError::Failed(format!(
                "its key with id {} can leave the token (it must be sensitive and not extractable)",
                hex::encode(id)
            )));
        }
        let public = self.object(ObjectClass::PUBLIC_KEY, id, "public key")?;
        let point = self.public_point(public, alg)?;
        PublicKey::parse(alg, &point)
            .map(Some)
            .map_err(|_| TokenError::Failed("the token returned an invalid public key".into()))
    }

    /// Signs `message` with the private key `id`: the digest of `alg` on the host, raw
    /// `CKM_ECDSA` in the token. Returns `r ‖ s`, as [`crate::SigningKey::sign`] does.
    pub fn sign(&self, alg: SigAlg, id: &[u8], message: &[u8]) -> Result<Vec<u8>, TokenError> {
        let key = self.object(ObjectClass::PRIVATE_KEY, id, "signature key")?;
        let digest = match alg {
            SigAlg::P256Sha256 => sha2::Sha256::digest(message).to_vec(),
            SigAlg::P521Sha512 => sha2::Sha512::digest(message).to_vec(),
        };
        self.session
            .sign(&Mechanism::Ecdsa, key, &digest)
            .map_err(failed)
    }

    /// Stores `part`, a value its custodian typed in, as a key part object labelled `label`
    /// with `CKA_ID` `id` (see [`Self::part_template`]).
    pub fn store_part(&self, label: &str, id: &[u8], part: &Secret32) -> Result<(), TokenError> {
        let mut template = Self::part_template(label, id);
        template.push(Attribute::Value(part.expose().to_vec()));
        let created = self.session.create_object(&template);
        for attribute in &mut template {
            if let Attribute::Value(value) = attribute {
                value.zeroize();
            }
        }
        created.map(|_| ()).map_err(failed)
    }

    /// The template of a key part object: a persistent AES-256 key, sensitive (its value is
    /// never read out in clear), extractable only so that it can be wrapped to a unit or to the
    /// token of its backup copy, usable for nothing else.
    fn part_template(label: &str, id: &[u8]) -> Vec<Attribute> {
        vec![
            Attribute::Class(ObjectClass::SECRET_KEY),
            Attribute::KeyType(KeyType::AES),
            Attribute::Token(true),
            Attribute::Private(true),
            Attribute::Sensitive(true),
            Attribute::Extractable(true),
            Attribute::Encrypt(false),
            Attribute::Decrypt(false),
            Attribute::Sign(false),
            Attribute::Verify(false),
            Attribute::Wrap(false),
            Attribute::Unwrap(false),
            Attribute::Derive(false),
            Attribute::Label(label.as_bytes().to_vec()),
            Attribute::Id(id.to_vec()),
        ]
    }

    /// Generates a new 32-byte key part inside the token (`CKM_AES_KEY_GEN`), labelled
    /// `label` with `CKA_ID` `id`, and returns its verification pattern, computed inside the
    /// token too (`C_DigestKey`): the part never exists outside a token in clear.
    pub fn generate_part(&self, label: &str, id: &[u8]) -> Result<Vp, TokenError> {
        self.require(PART_GENERATION_MECHANISMS)?;
        let mut template = Self::part_template(label, id);
        template.push(Attribute::ValueLen((KEY_LEN as u64).into()));
        let part = self
            .session
            .generate_key(&Mechanism::AesKeyGen, &template)
            .map_err(failed)?;
        match self.part_vp(part) {
            Ok(vp) => Ok(vp),
            Err(err) => {
                let _ = self.session.destroy_object(part);
                Err(err)
            }
        }
    }

    /// The verification pattern of key part `id`, computed inside the token.
    pub fn part_verification_pattern(&self, id: &[u8]) -> Result<Vp, TokenError> {
        let part = self.object(ObjectClass::SECRET_KEY, id, "key part")?;
        self.part_vp(part)
    }

    /// `SHA-256(0x01 ‖ part)` inside the token, as a verification pattern.
    fn part_vp(&self, part: ObjectHandle) -> Result<Vp, TokenError> {
        let lacks = |err| match err {
            Pkcs11Error::Pkcs11(RvError::KeyIndigestible | RvError::FunctionNotSupported, _) => {
                TokenError::Lacks(vec![
                    "C_DigestKey (SHA-256 of a sensitive key, for its verification pattern)"
                        .to_owned(),
                ])
            }
            other => failed(other),
        };
        self.session
            .digest_init(&Mechanism::Sha256)
            .map_err(failed)?;
        self.session
            .digest_update(&[crate::VP_PREFIX])
            .map_err(failed)?;
        self.session.digest_key(part).map_err(lacks)?;
        let digest: [u8; 32] = self
            .session
            .digest_final()
            .map_err(failed)?
            .try_into()
            .map_err(|_| TokenError::Failed("the token's SHA-256 is not 32 bytes".into()))?;
        Ok(crate::vp_of_digest(digest))
    }

    /// Copies the key part `id` from this token to `backup` without it leaving the tokens in
    /// clear: each token makes an ephemeral P-256 key pair, each derives the same AES-256 key
    /// from its private key and the other's public key (`CKM_ECDH1_DERIVE`), this token wraps
    /// the part with it (`CKM_AES_KEY_WRAP`) and `backup` unwraps it into a part object of its
    /// own. The copy's verification pattern, computed in `backup`, must equal `vp`.
    pub fn copy_part_to(
        &self,
        backup: &Token,
        label: &str,
        id: &[u8],
        vp: &Vp,
    ) -> Result<(), TokenError> {
        backup.require(WRAP_MECHANISMS)?;
        let part = self.object(ObjectClass::SECRET_KEY, id, "key part")?;
        let (sender_public, sender_private) = self.ephemeral_pair()?;
        let receiver = backup.ephemeral_pair();
        let copied = receiver.and_then(|(receiver_public, receiver_private)| {
            let copied = (|| {
                let sender_point = self.public_point(sender_public, SigAlg::P256Sha256)?;
                let receiver_point = backup.public_point(receiver_public, SigAlg::P256Sha256)?;
                let kek =
                    self.shared_key(sender_private, &receiver_point, Attribute::Wrap(true))?;
                let wrapped = self.session.wrap_key(&Mechanism::AesKeyWrap, kek, part);
                let _ = self.session.destroy_object(kek);
                let wrapped = wrapped.map_err(failed)?;
                let kek =
                    backup.shared_key(receiver_private, &sender_point, Attribute::Unwrap(true))?;
                let copy = backup.session.unwrap_key(
                    &Mechanism::AesKeyWrap,
                    kek,
                    &wrapped,
                    &Self::part_template(label, id),
                );
                let _ = backup.session.destroy_object(kek);
                let copy = copy.map_err(failed)?;
                match backup.part_vp(copy) {
                    Ok(copied) if copied == *vp => Ok(()),
                    Ok(_) => {
                        let _ = backup.session.destroy_object(copy);
                        Err(TokenError::Failed(
                            "the backup copy's verification pattern differs from the part's".into(),
                        ))
                    }
                    Err(err) => {
                        let _ = backup.session.destroy_object(copy);
                        Err(err)
                    }
                }
            })();
            let _ = backup.session.destroy_object(receiver_private);
            let _ = backup.session.destroy_object(receiver_public);
            copied
        });
        let _ = self.session.destroy_object(sender_private);
        let _ = self.session.destroy_object(sender_public);
        copied
    }

    /// A session P-256 key pair whose private key derives and never leaves the token.
    fn ephemeral_pair(&self) -> Result<(ObjectHandle, ObjectHandle), TokenError> {
        self.session
            .generate_key_pair(
                &Mechanism::EccKeyPairGen,
                &[
                    Attribute::Token(false),
                    Attribute::EcParams(ec_params(SigAlg::P256Sha256)),
                ],
                &[
                    Attribute::Token(false),
                    Attribute::Private(true),
                    Attribute::Sensitive(true),
                    Attribute::Extractable(false),
                    Attribute::Derive(true),
                ],
            )
            .map_err(failed)
    }

    /// The AES-256 session key `ECDH(private, point)` (raw x-coordinate, `CKD_NULL`) for
    /// `usage` (wrap or unwrap) only.
    fn shared_key(
        &self,
        private: ObjectHandle,
        point: &[u8],
        usage: Attribute,
    ) -> Result<ObjectHandle, TokenError> {
        let derive = Mechanism::Ecdh1Derive(Ecdh1DeriveParams::new(EcKdf::null(), point));
        self.session
            .derive_key(
                &derive,
                private,
                &[
                    Attribute::Class(ObjectClass::SECRET_KEY),
                    Attribute::KeyType(KeyType::AES),
                    Attribute::ValueLen((KEY_LEN as u64).into()),
                    Attribute::Token(false),
                    Attribute::Sensitive(true),
                    Attribute::Extractable(false),
                    usage,
                ],
            )
            .map_err(failed)
    }

    /// Deletes the key part `id` (to undo a part written to only some of its tokens).
    pub fn remove_part(&self, id: &[u8]) -> Result<(), TokenError> {
        let part = self.object(ObjectClass::SECRET_KEY, id, "key part")?;
        self.session.destroy_object(part).map_err(failed)
    }

    /// Wraps the key part `id` to the unit importer key `recipient` (uncompressed P-256) inside
    /// the token, as [`crate::EnvelopeKind::TokenWrapped`] describes: the part never leaves the
    /// token in clear.
    pub fn wrap_part(&self, id: &[u8], recipient: &[u8]) -> Result<Envelope, TokenError> {
        self.require(WRAP_MECHANISMS)?;
        crate::envelope::check_recipient(recipient).map_err(|_| {
            TokenError::Failed("the unit's importer key is not a P-256 point".into())
        })?;
        let part = self.object(ObjectClass::SECRET_KEY, id, "key part")?;
        let (public, private) = self.ephemeral_pair()?;
        let wrapped = self.wrap_with_ephemeral(public, private, part, recipient);
        let _ = self.session.destroy_object(private);
        let _ = self.session.destroy_object(public);
        wrapped
    }

    fn wrap_with_ephemeral(
        &self,
        public: ObjectHandle,
        private: ObjectHandle,
        part: ObjectHandle,
        recipient: &[u8],
    ) -> Result<Envelope, TokenError> {
        let ephemeral = self.public_point(public, SigAlg::P256Sha256)?;
        let kek = self.shared_key(private, recipient, Attribute::Wrap(true))?;
        let wrapped = self.session.wrap_key(&Mechanism::AesKeyWrap, kek, part);
        let _ = self.session.destroy_object(kek);
        Ok(Envelope::token_wrapped(ephemeral, wrapped.map_err(failed)?))
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

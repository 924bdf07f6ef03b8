//! Secrets sent to a unit's importer key: ECDH P-256 (SP 800-56A), HKDF-SHA-256, AES-256-GCM;
//! or, for key parts kept on PKCS#11 tokens, ECDH P-256 and AES Key Wrap (RFC 3394) done inside
//! the token.

use hkdf::Hkdf;
use p256::elliptic_curve::Generate;
use serde::{Deserialize, Serialize};
use sha2::Sha256;
use zeroize::{Zeroize, Zeroizing};

use crate::*;

/// Length of an uncompressed P-256 point.
pub const P256_POINT_LEN: usize = 65;

/// How an [`Envelope`] was made.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EnvelopeKind {
    /// By [`seal_to`]: ECDH on P-256 (SP 800-56A) with an ephemeral sender key, HKDF-SHA-256
    /// (RFC 5869) over the shared secret bound to the recipient and a context, AES-256-GCM over
    /// the secret (`sealed` is `nonce ‖ ciphertext ‖ tag`).
    #[default]
    Sealed,
    /// Inside a PKCS#11 token holding the secret: an ephemeral P-256 key pair made in the token,
    /// `CKM_ECDH1_DERIVE` with `CKD_NULL` (SP 800-56A ECC CDH; PKCS #11 v2.40 §2.3.15) giving the
    /// shared x-coordinate Z as an AES-256 key-encryption key, `CKM_AES_KEY_WRAP` (RFC 3394)
    /// of the secret under it (`sealed` is the 40-byte wrapped key). Tokens offer no key
    /// derivation beyond `CKD_NULL`, so Z is the key: both key pairs are fresh for this one
    /// envelope (the token's is made per envelope, the unit's importer key serves one command),
    /// so Z is never reused. Accepted only for key parts ([`ImporterKey::open_part`]).
    TokenWrapped,
}

impl EnvelopeKind {
    fn is_sealed(&self) -> bool {
        *self == Self::Sealed
    }
}

/// A 256-bit secret sent to a unit's importer key; see [`EnvelopeKind`] for the two ways.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Envelope {
    /// The sender's ephemeral public key, uncompressed SEC1.
    #[serde(with = "hex::serde")]
    pub ephemeral: Vec<u8>,
    /// The secret, encrypted as `kind` says.
    #[serde(with = "hex::serde")]
    pub sealed: Vec<u8>,
    /// How it was made; absent in JSON for [`EnvelopeKind::Sealed`], as before kinds existed.
    #[serde(default, skip_serializing_if = "EnvelopeKind::is_sealed")]
    pub kind: EnvelopeKind,
}

impl Envelope {
    /// A [`EnvelopeKind::TokenWrapped`] envelope from the token's ephemeral public key and the
    /// wrapped secret.
    pub fn token_wrapped(ephemeral: Vec<u8>, wrapped: Vec<u8>) -> Self {
        Self {
            ephemeral,
            sealed: wrapped,
            kind: EnvelopeKind::TokenWrapped,
        }
    }
}

/// Checks that `recipient` is a P-256 point an envelope can be made to.
pub(crate) fn check_recipient(recipient: &[u8]) -> Result<(), Opaque> {
    p256::PublicKey::from_sec1_bytes(recipient)
        .map(|_| ())
        .map_err(|_| Opaque)
}

/// A unit's importer key pair: the private half never leaves the unit.
#[derive(Clone, Serialize, Deserialize)]
pub struct ImporterKey {
    scalar: Secret32,
}

impl std::fmt::Debug for ImporterKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ImporterKey(..)")
    }
}

const ENVELOPE_INFO: &[u8] = b"rotor importer envelope v1";

fn envelope_key(shared: &[u8], ephemeral: &[u8], recipient: &[u8], context: &[u8]) -> Secret32 {
    let hkdf = Hkdf::<Sha256>::new(Some(ephemeral), shared);
    let mut info = Vec::with_capacity(ENVELOPE_INFO.len() + recipient.len() + context.len());
    info.extend_from_slice(ENVELOPE_INFO);
    info.extend_from_slice(recipient);
    info.extend_from_slice(context);
    let mut okm = [0u8; KEY_LEN];
    // 32 bytes is far below HKDF-SHA-256's 255 * 32 byte limit.
    let _ = hkdf.expand(&info, &mut okm);
    let key = Secret32(okm);
    okm.zeroize();
    key
}

impl ImporterKey {
    /// A fresh importer key.
    pub fn generate() -> Self {
        let secret = p256::SecretKey::generate();
        let mut bytes = [0u8; KEY_LEN];
        bytes.copy_from_slice(&secret.to_bytes());
        let scalar = Secret32(bytes);
        bytes.zeroize();
        Self { scalar }
    }

    fn secret(&self) -> Result<p256::SecretKey, Opaque> {
        p256::SecretKey::from_slice(self.scalar.expose()).map_err(|_| Opaque)
    }

    /// The public half, uncompressed SEC1, to hand to whoever sends a secret.
    pub fn public_sec1(&self) -> Result<Vec<u8>, Opaque> {
        Ok(self.secret()?.public_key().to_sec1_bytes().to_vec())
    }

    /// Opens an [`Envelope`] sealed with [`seal_to`] under the same `context`; refuses any
    /// other kind.
    pub fn open(&self, envelope: &Envelope, context: &[u8]) -> Result<Secret32, Opaque> {
        if envelope.kind != EnvelopeKind::Sealed {
            return Err(Opaque);
        }
        let secret = self.secret()?;
        let ephemeral =
            p256::PublicKey::from_sec1_bytes(&envelope.ephemeral).map_err(|_| Opaque)?;
        let shared = secret.diffie_hellman(&ephemeral);
        let recipient = secret.public_key().to_sec1_bytes();
        let key = envelope_key(
            shared.raw_secret_bytes(),
            &envelope.ephemeral,
            &recipient,
            context,
        );
        let plain = open_aes256gcm(&key, &envelope.ephemeral, &envelope.sealed)?;
        Secret32::from_slice(&plain).ok_or(Opaque)
    }

    /// Opens a key part: an envelope of either kind, a [`EnvelopeKind::Sealed`] one under
    /// `context`.
    pub fn open_part(&self, envelope: &Envelope, context: &[u8]) -> Result<Secret32, Opaque> {
        match envelope.kind {
            EnvelopeKind::Sealed => self.open(envelope, context),
            EnvelopeKind::TokenWrapped => self.unwrap_from_token(envelope),
        }
    }

    /// Opens an [`EnvelopeKind::TokenWrapped`] envelope: Z from ECDH with the token's ephemeral
    /// key, AES Key Wrap (RFC 3394) unwrapped under it.
    fn unwrap_from_token(&self, envelope: &Envelope) -> Result<Secret32, Opaque> {
        use aws_lc_rs::key_wrap::{AES_256, AesKek, KeyWrap};
        let secret = self.secret()?;
        let ephemeral =
            p256::PublicKey::from_sec1_bytes(&envelope.ephemeral).map_err(|_| Opaque)?;
        let shared = secret.diffie_hellman(&ephemeral);
        let kek = AesKek::new(&AES_256, shared.raw_secret_bytes()).map_err(|_| Opaque)?;
        // RFC 3394 adds one 8-byte block to the 32-byte secret.
        let mut plain = Zeroizing::new([0u8; KEY_LEN + 8]);
        let opened = kek
            .unwrap(&envelope.sealed, &mut plain[..])
            .map_err(|_| Opaque)?;
        Secret32::from_slice(opened).ok_or(Opaque)
    }
}

/// Seals `secret` to the importer public key `recipient`, bound to `context` (for example the
/// unit id and the purpose), so that only that importer key can open it.
pub fn seal_to(recipient: &[u8], context: &[u8], secret: &Secret32) -> Result<Envelope, Opaque> {
    let recipient_key = p256::PublicKey::from_sec1_bytes(recipient).map_err(|_| Opaque)?;
    let recipient_sec1 = recipient_key.to_sec1_bytes();
    let ephemeral = p256::ecdh::EphemeralSecret::generate();
    let ephemeral_sec1 = ephemeral.public_key().to_sec1_bytes().to_vec();
    let shared = ephemeral.diffie_hellman(&recipient_key);
    let key = envelope_key(
        shared.raw_secret_bytes(),
        &ephemeral_sec1,
        &recipient_sec1,
        context,
    );
    let sealed = seal_aes256gcm(&key, &ephemeral_sec1, secret.expose());
    Ok(Envelope {
        ephemeral: ephemeral_sec1,
        sealed,
        kind: EnvelopeKind::Sealed,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_lc_rs::key_wrap::{AES_256, AesKek, KeyWrap};

    /// What a token does for [`EnvelopeKind::TokenWrapped`], on the host.
    fn wrap_like_a_token(recipient: &[u8], secret: &Secret32) -> Envelope {
        let recipient = p256::PublicKey::from_sec1_bytes(recipient).unwrap();
        let ephemeral = p256::ecdh::EphemeralSecret::generate();
        let shared = ephemeral.diffie_hellman(&recipient);
        let kek = AesKek::new(&AES_256, shared.raw_secret_bytes()).unwrap();
        let mut out = [0u8; KEY_LEN + 8];
        let wrapped = kek.wrap(secret.expose(), &mut out).unwrap().to_vec();
        Envelope::token_wrapped(ephemeral.public_key().to_sec1_bytes().to_vec(), wrapped)
    }

    #[test]
    fn a_token_wrapped_part_opens_as_a_part_only_and_only_unchanged() {
        let importer = ImporterKey::generate();
        let secret = Secret32::random();
        let envelope = wrap_like_a_token(&importer.public_sec1().unwrap(), &secret);
        assert!(
            importer
                .open_part(&envelope, b"ctx")
                .unwrap()
                .ct_eq(&secret)
        );
        // Not where a sealed envelope is expected (a master key transfer).
        assert!(importer.open(&envelope, b"ctx").is_err());
        let mut tampered = envelope.clone();
        tampered.sealed[5] ^= 1;
        assert!(importer.open_part(&tampered, b"ctx").is_err());
        // Another importer key cannot open it.
        assert!(
            ImporterKey::generate()
                .open_part(&envelope, b"ctx")
                .is_err()
        );
        // Its kind travels in JSON; a sealed envelope's JSON is as before kinds existed.
        let json = serde_json::to_string(&envelope).unwrap();
        assert!(json.contains("\"kind\":\"token_wrapped\""));
        let sealed = seal_to(&importer.public_sec1().unwrap(), b"ctx", &secret).unwrap();
        assert!(!serde_json::to_string(&sealed).unwrap().contains("kind"));
    }
}

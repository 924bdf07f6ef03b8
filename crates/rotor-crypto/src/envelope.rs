//! Secrets sent to a unit's importer key: ECDH P-256 (SP 800-56A), HKDF-SHA-256, AES-256-GCM.

use hkdf::Hkdf;
use p256::elliptic_curve::Generate;
use serde::{Deserialize, Serialize};
use sha2::Sha256;
use zeroize::Zeroize;

use crate::*;

/// Length of an uncompressed P-256 point.
pub const P256_POINT_LEN: usize = 65;

/// A 256-bit secret sent to a unit's importer key: ECDH on P-256 (SP 800-56A) with an ephemeral
/// sender key, HKDF-SHA-256 (RFC 5869) over the shared secret, AES-256-GCM over the secret.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Envelope {
    /// The sender's ephemeral public key, uncompressed SEC1.
    #[serde(with = "hex::serde")]
    pub ephemeral: Vec<u8>,
    /// `nonce ‖ ciphertext ‖ tag` of the secret.
    #[serde(with = "hex::serde")]
    pub sealed: Vec<u8>,
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

    /// Opens an [`Envelope`] sealed with [`seal_to`] under the same `context`.
    pub fn open(&self, envelope: &Envelope, context: &[u8]) -> Result<Secret32, Opaque> {
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
    })
}

//! RSA-OAEP (RFC 8017 §7.1) for Key Protect import tokens, done by aws-lc (constant-time).

use zeroize::Zeroizing;

use crate::*;

/// The OAEP hash (and MGF1 hash) of an RSA-OAEP ciphertext (RFC 8017 §7.1).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OaepHash {
    /// SHA-1, as Key Protect's `RSAES_OAEP_SHA_1`.
    Sha1,
    /// SHA-256, as Key Protect's `RSAES_OAEP_SHA_256`.
    Sha256,
}

/// A fresh RSA-4096 key pair for RSA-OAEP: the public key as X.509 `SubjectPublicKeyInfo` DER
/// and the private key as PKCS#8 DER. Done by aws-lc, whose RSA decryption is constant-time.
pub fn rsa_oaep_generate() -> Result<(Vec<u8>, Zeroizing<Vec<u8>>), Opaque> {
    use aws_lc_rs::encoding::AsDer;
    let key = aws_lc_rs::rsa::PrivateDecryptingKey::generate(aws_lc_rs::rsa::KeySize::Rsa4096)
        .map_err(|_| Opaque)?;
    let public = key
        .public_key()
        .as_der()
        .map_err(|_| Opaque)?
        .as_ref()
        .to_vec();
    let private = Zeroizing::new(key.as_der().map_err(|_| Opaque)?.as_ref().to_vec());
    Ok((public, private))
}

/// RSAES-OAEP decryption (RFC 8017 §7.1.2) with a PKCS#8 private key; every failure is the same
/// [`Opaque`] error, so the padding check is no oracle.
pub fn rsa_oaep_decrypt(
    private_pkcs8: &[u8],
    hash: OaepHash,
    ciphertext: &[u8],
) -> Result<Zeroizing<Vec<u8>>, Opaque> {
    use aws_lc_rs::rsa::{
        OAEP_SHA1_MGF1SHA1, OAEP_SHA256_MGF1SHA256, OaepPrivateDecryptingKey, PrivateDecryptingKey,
    };
    let key = PrivateDecryptingKey::from_pkcs8(private_pkcs8).map_err(|_| Opaque)?;
    let key = OaepPrivateDecryptingKey::new(key).map_err(|_| Opaque)?;
    let algorithm = match hash {
        OaepHash::Sha1 => &OAEP_SHA1_MGF1SHA1,
        OaepHash::Sha256 => &OAEP_SHA256_MGF1SHA256,
    };
    let mut plaintext = Zeroizing::new(vec![0u8; key.min_output_size()]);
    let length = key
        .decrypt(algorithm, ciphertext, &mut plaintext, None)
        .map_err(|_| Opaque)?
        .len();
    plaintext.truncate(length);
    Ok(plaintext)
}

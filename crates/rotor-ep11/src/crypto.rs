//! The primitives behind the mechanisms, each from its standard through a RustCrypto crate:
//! SHA-1/SHA-2 (FIPS 180-4), HMAC (RFC 2104), AES (FIPS 197) in ECB/CBC (NIST SP 800-38A,
//! padding per PKCS #7, RFC 5652 §6.3) and GCM (NIST SP 800-38D), ECDSA P-256 (FIPS 186-5).

use aes::cipher::block_padding::{NoPadding, Pkcs7};
use aes::cipher::{BlockModeDecrypt, BlockModeEncrypt, KeyInit, KeyIvInit};
use aes_gcm::aead::Aead;
use aes_gcm::aead::consts::U12;
use hmac::Mac;
use p256::ecdsa::signature::hazmat::{PrehashSigner, PrehashVerifier};
use p256::pkcs8::{DecodePublicKey, EncodePublicKey};
use sha2::Digest;
use zeroize::Zeroizing;

use crate::consts::{ckm, ckr};
use crate::error::{Ep11Error, Ep11Result};

/// AES's block size.
pub const AES_BLOCK: usize = 16;
/// The GCM IV rotor takes (NIST SP 800-38D §5.2.1.1 recommends 96 bits).
pub const GCM_IV: usize = 12;

/// The hash of a digest mechanism, or of the hash half of a signature mechanism.
pub fn digest(mechanism: u64, data: &[u8]) -> Option<Vec<u8>> {
    Some(match mechanism {
        ckm::SHA_1 => sha1::Sha1::digest(data).to_vec(),
        ckm::SHA224 => sha2::Sha224::digest(data).to_vec(),
        ckm::SHA256 => sha2::Sha256::digest(data).to_vec(),
        ckm::SHA384 => sha2::Sha384::digest(data).to_vec(),
        ckm::SHA512 => sha2::Sha512::digest(data).to_vec(),
        _ => return None,
    })
}

/// HMAC with the hash an `*_HMAC` mechanism names.
pub fn hmac(mechanism: u64, key: &[u8], data: &[u8]) -> Option<Vec<u8>> {
    fn run<M: Mac + KeyInit>(key: &[u8], data: &[u8]) -> Option<Vec<u8>> {
        let mut mac = <M as KeyInit>::new_from_slice(key).ok()?;
        mac.update(data);
        Some(mac.finalize().into_bytes().to_vec())
    }
    match mechanism {
        ckm::SHA_1_HMAC => run::<hmac::Hmac<sha1::Sha1>>(key, data),
        ckm::SHA224_HMAC => run::<hmac::Hmac<sha2::Sha224>>(key, data),
        ckm::SHA256_HMAC => run::<hmac::Hmac<sha2::Sha256>>(key, data),
        ckm::SHA384_HMAC => run::<hmac::Hmac<sha2::Sha384>>(key, data),
        ckm::SHA512_HMAC => run::<hmac::Hmac<sha2::Sha512>>(key, data),
        _ => None,
    }
}

/// The hash mechanism an `ECDSA_SHA*` mechanism signs with; `None` for raw `CKM_ECDSA`.
pub fn ecdsa_hash(mechanism: u64) -> Option<u64> {
    match mechanism {
        ckm::ECDSA_SHA1 => Some(ckm::SHA_1),
        ckm::ECDSA_SHA224 => Some(ckm::SHA224),
        ckm::ECDSA_SHA256 => Some(ckm::SHA256),
        ckm::ECDSA_SHA384 => Some(ckm::SHA384),
        ckm::ECDSA_SHA512 => Some(ckm::SHA512),
        _ => None,
    }
}

/// Which way an AES mechanism runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Direction {
    /// Encrypt.
    Encrypt,
    /// Decrypt.
    Decrypt,
}

fn key_size_error() -> Ep11Error {
    Ep11Error::new(
        ckr::KEY_TYPE_INCONSISTENT,
        "an AES key is 16, 24 or 32 bytes",
    )
}

fn length_error(direction: Direction) -> Ep11Error {
    match direction {
        Direction::Encrypt => Ep11Error::new(
            ckr::DATA_LEN_RANGE,
            "the data is not a whole number of 16-byte blocks",
        ),
        Direction::Decrypt => Ep11Error::new(
            ckr::ENCRYPTED_DATA_LEN_RANGE,
            "the ciphertext is not a whole number of 16-byte blocks",
        ),
    }
}

macro_rules! by_key_size {
    ($key:expr, $run:ident, $($arg:expr),*) => {
        match $key.len() {
            16 => $run::<aes::Aes128>($key, $($arg),*),
            24 => $run::<aes::Aes192>($key, $($arg),*),
            32 => $run::<aes::Aes256>($key, $($arg),*),
            _ => Err(key_size_error()),
        }
    };
}

/// `CKM_AES_ECB`: whole blocks, no padding.
pub fn aes_ecb(key: &[u8], direction: Direction, data: &[u8]) -> Ep11Result<Vec<u8>> {
    fn run<C>(key: &[u8], direction: Direction, data: &[u8]) -> Ep11Result<Vec<u8>>
    where
        C: aes::cipher::BlockCipherEncrypt + aes::cipher::BlockCipherDecrypt + KeyInit,
        C: aes::cipher::BlockSizeUser<BlockSize = aes::cipher::consts::U16>,
    {
        if !data.len().is_multiple_of(AES_BLOCK) {
            return Err(length_error(direction));
        }
        Ok(match direction {
            Direction::Encrypt => ecb::Encryptor::<C>::new_from_slice(key)
                .map_err(|_| key_size_error())?
                .encrypt_padded_vec::<NoPadding>(data),
            Direction::Decrypt => ecb::Decryptor::<C>::new_from_slice(key)
                .map_err(|_| key_size_error())?
                .decrypt_padded_vec::<NoPadding>(data)
                .map_err(|_| length_error(direction))?,
        })
    }
    by_key_size!(key, run, direction, data)
}

/// `CKM_AES_CBC` (whole blocks) and `CKM_AES_CBC_PAD` (PKCS #7 padding).
pub fn aes_cbc(
    key: &[u8],
    iv: &[u8],
    padded: bool,
    direction: Direction,
    data: &[u8],
) -> Ep11Result<Vec<u8>> {
    fn run<C>(
        key: &[u8],
        iv: &[u8],
        padded: bool,
        direction: Direction,
        data: &[u8],
    ) -> Ep11Result<Vec<u8>>
    where
        C: aes::cipher::BlockCipherEncrypt + aes::cipher::BlockCipherDecrypt + KeyInit,
        C: aes::cipher::BlockSizeUser<BlockSize = aes::cipher::consts::U16>,
    {
        if (!padded || direction == Direction::Decrypt) && !data.len().is_multiple_of(AES_BLOCK) {
            return Err(length_error(direction));
        }
        let bad_iv = |_| Ep11Error::new(ckr::MECHANISM_PARAM_INVALID, "the IV is 16 bytes");
        Ok(match direction {
            Direction::Encrypt => {
                let mode = cbc::Encryptor::<C>::new_from_slices(key, iv).map_err(bad_iv)?;
                if padded {
                    mode.encrypt_padded_vec::<Pkcs7>(data)
                } else {
                    mode.encrypt_padded_vec::<NoPadding>(data)
                }
            }
            Direction::Decrypt => {
                let mode = cbc::Decryptor::<C>::new_from_slices(key, iv).map_err(bad_iv)?;
                let plain = if padded {
                    mode.decrypt_padded_vec::<Pkcs7>(data)
                } else {
                    mode.decrypt_padded_vec::<NoPadding>(data)
                };
                plain.map_err(|_| {
                    Ep11Error::new(ckr::ENCRYPTED_DATA_INVALID, "the padding is not valid")
                })?
            }
        })
    }
    by_key_size!(key, run, iv, padded, direction, data)
}

/// `CKM_AES_GCM` with a 96-bit IV, a 128-bit tag appended to the ciphertext, no AAD.
pub fn aes_gcm(key: &[u8], iv: &[u8], direction: Direction, data: &[u8]) -> Ep11Result<Vec<u8>> {
    fn run<C>(key: &[u8], iv: &[u8], direction: Direction, data: &[u8]) -> Ep11Result<Vec<u8>>
    where
        C: aes::cipher::BlockCipherEncrypt + KeyInit,
        C: aes::cipher::BlockSizeUser<BlockSize = aes::cipher::consts::U16>,
    {
        let cipher =
            aes_gcm::AesGcm::<C, U12>::new_from_slice(key).map_err(|_| key_size_error())?;
        let nonce = aes_gcm::Nonce::<U12>::try_from(iv)
            .map_err(|_| Ep11Error::new(ckr::MECHANISM_PARAM_INVALID, "the GCM IV is 12 bytes"))?;
        match direction {
            Direction::Encrypt => cipher
                .encrypt(&nonce, data)
                .map_err(|_| Ep11Error::new(ckr::DATA_LEN_RANGE, "the data is too long")),
            Direction::Decrypt => cipher.decrypt(&nonce, data).map_err(|_| {
                Ep11Error::new(
                    ckr::ENCRYPTED_DATA_INVALID,
                    "the ciphertext does not authenticate",
                )
            }),
        }
    }
    by_key_size!(key, run, iv, direction, data)
}

/// `CKA_CHECK_VALUE` of an AES key: the first 3 bytes of AES-ECB(key, 0¹²⁸).
pub fn aes_check_value(key: &[u8]) -> Ep11Result<Vec<u8>> {
    let block = aes_ecb(key, Direction::Encrypt, &[0u8; AES_BLOCK])?;
    Ok(block.get(..3).unwrap_or_default().to_vec())
}

/// The DER of the P-256 curve's OID (RFC 5480 §2.1.1.1), as `CKA_EC_PARAMS` carries it.
pub const P256_PARAMS: &[u8] = &[0x06, 0x08, 0x2A, 0x86, 0x48, 0xCE, 0x3D, 0x03, 0x01, 0x07];

/// A fresh P-256 key pair: the private scalar and the public key's SPKI DER.
pub fn ec_generate() -> Ep11Result<(Zeroizing<Vec<u8>>, Vec<u8>)> {
    use p256::elliptic_curve::Generate;
    let secret = p256::SecretKey::generate();
    let spki = secret
        .public_key()
        .to_public_key_der()
        .map_err(|_| Ep11Error::new(ckr::GENERAL_ERROR, "the public key could not be encoded"))?;
    Ok((
        Zeroizing::new(secret.to_bytes().to_vec()),
        spki.as_bytes().to_vec(),
    ))
}

/// An ECDSA signature `r ‖ s` (PKCS #11 v2.40 §2.3.1) over `prehash`.
pub fn ecdsa_sign(scalar: &[u8], prehash: &[u8]) -> Ep11Result<Vec<u8>> {
    let key = p256::ecdsa::SigningKey::from_slice(scalar)
        .map_err(|_| Ep11Error::new(ckr::KEY_TYPE_INCONSISTENT, "not a P-256 private key"))?;
    let signature: p256::ecdsa::Signature = key
        .sign_prehash(prehash)
        .map_err(|_| Ep11Error::new(ckr::DATA_LEN_RANGE, "the hash is too short to sign"))?;
    Ok(signature.to_bytes().to_vec())
}

/// Verifies `r ‖ s` over `prehash` with an SPKI DER public key.
pub fn ecdsa_verify(spki: &[u8], prehash: &[u8], signature: &[u8]) -> Ep11Result<()> {
    let key = p256::ecdsa::VerifyingKey::from_public_key_der(spki).map_err(|_| {
        Ep11Error::new(
            ckr::KEY_TYPE_INCONSISTENT,
            "the public key is not a P-256 SubjectPublicKeyInfo",
        )
    })?;
    let signature = p256::ecdsa::Signature::from_slice(signature).map_err(|_| {
        Ep11Error::new(
            ckr::SIGNATURE_LEN_RANGE,
            "an ECDSA P-256 signature is 64 bytes",
        )
    })?;
    key.verify_prehash(prehash, &signature)
        .map_err(|_| Ep11Error::new(ckr::SIGNATURE_INVALID, "the signature does not verify"))
}

/// Whether `spki` is a P-256 public key, so a verification can be set up with it.
pub fn is_p256_spki(spki: &[u8]) -> bool {
    p256::PublicKey::from_public_key_der(spki).is_ok()
}

/// Verifies an HMAC tag in constant time.
pub fn hmac_verify(mechanism: u64, key: &[u8], data: &[u8], tag: &[u8]) -> Ep11Result<()> {
    use subtle::ConstantTimeEq as _;
    let expected = hmac(mechanism, key, data)
        .ok_or_else(|| Ep11Error::new(ckr::MECHANISM_INVALID, "not an HMAC mechanism"))?;
    if expected.len() == tag.len() && bool::from(expected.ct_eq(tag)) {
        return Ok(());
    }
    Err(Ep11Error::new(
        ckr::SIGNATURE_INVALID,
        "the MAC does not verify",
    ))
}

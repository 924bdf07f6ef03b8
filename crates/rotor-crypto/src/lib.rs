//! The primitives rotor is built on. This is the only crate that touches crypto libraries; every
//! other crate goes through the functions and types here, each named after the spec it implements.
//!
//! Failures of decryption and signature checks are deliberately opaque ([`Opaque`]): they say that
//! something did not verify, never why, so that no caller can become an oracle.

#![forbid(unsafe_code)]
#![deny(missing_docs)]

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use hkdf::Hkdf;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use zeroize::{Zeroize, ZeroizeOnDrop, Zeroizing};

mod envelope;
mod rsa;
mod sig;
mod token;

pub use envelope::{Envelope, EnvelopeKind, ImporterKey, P256_POINT_LEN, seal_to};
pub use rsa::{OaepHash, rsa_oaep_decrypt, rsa_oaep_generate};
pub use sig::{Fingerprint, PublicKey, SigAlg, SigningKey};
pub use token::{Token, TokenError};

/// Length of every symmetric key rotor uses: AES-256.
pub const KEY_LEN: usize = 32;
/// Length of an AES-GCM nonce (96 bits, NIST SP 800-38D §8.2).
pub const NONCE_LEN: usize = 12;
/// Length of an AES-GCM authentication tag.
pub const TAG_LEN: usize = 16;
/// How many leading bytes of a verification pattern are compared (HPCS zeroes the last four).
pub const VP_COMPARED_LEN: usize = 28;

/// A verification or decryption failure. It carries no detail on purpose.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Opaque;

impl std::fmt::Display for Opaque {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("verification failed")
    }
}

impl std::error::Error for Opaque {}

/// Fills `buf` from the operating system's CSPRNG.
///
/// A machine without a working CSPRNG cannot hold keys safely, so failure aborts.
pub fn fill_random(buf: &mut [u8]) {
    if getrandom::fill(buf).is_err() {
        std::process::abort();
    }
}

/// A 256-bit secret (master key, key part, wrapping key). Zeroized on drop, compared in
/// constant time, never printed.
#[derive(Clone, Zeroize, ZeroizeOnDrop, Serialize, Deserialize)]
pub struct Secret32([u8; KEY_LEN]);

impl Secret32 {
    /// A fresh random secret.
    pub fn random() -> Self {
        let mut bytes = [0u8; KEY_LEN];
        fill_random(&mut bytes);
        Self(bytes)
    }

    /// Takes ownership of raw key bytes.
    pub fn from_bytes(bytes: [u8; KEY_LEN]) -> Self {
        Self(bytes)
    }

    /// Parses exactly 32 bytes.
    pub fn from_slice(bytes: &[u8]) -> Option<Self> {
        let array: [u8; KEY_LEN] = bytes.try_into().ok()?;
        Some(Self(array))
    }

    /// The raw bytes, for feeding another primitive.
    pub fn expose(&self) -> &[u8; KEY_LEN] {
        &self.0
    }

    /// Constant-time equality.
    pub fn ct_eq(&self, other: &Self) -> bool {
        self.0.ct_eq(&other.0).into()
    }

    /// The verification pattern of this key, see [`verification_pattern`].
    pub fn vp(&self) -> Vp {
        verification_pattern(&self.0)
    }
}

impl std::fmt::Debug for Secret32 {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret32(..)")
    }
}

/// A verification pattern: identifies a key without revealing it.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Vp(#[serde(with = "hex::serde")] pub [u8; 32]);

impl Vp {
    /// The pattern shown for an empty register: all zeros.
    pub const EMPTY: Self = Self([0u8; 32]);

    /// Whether two patterns name the same key. Only the first 28 bytes count, because older HPCS
    /// modules did not zero the last four.
    pub fn matches(&self, other: &Self) -> bool {
        self.0[..VP_COMPARED_LEN] == other.0[..VP_COMPARED_LEN]
    }

    /// 64 lowercase hex characters.
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }

    /// Parses 64 hex characters.
    pub fn from_hex(text: &str) -> Option<Self> {
        let bytes = hex::decode(text).ok()?;
        Some(Self(bytes.try_into().ok()?))
    }
}

impl std::fmt::Debug for Vp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Vp({})", self.to_hex())
    }
}

impl std::fmt::Display for Vp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.to_hex())
    }
}

/// The HPCS/EP11 verification pattern: `SHA-256(0x01 ‖ key)` with bytes 28..31 set to zero
/// (EP11 wire format §6.7, as computed by IBM's TKE SDK).
pub fn verification_pattern(key: &[u8; KEY_LEN]) -> Vp {
    let mut hasher = Sha256::new();
    hasher.update([VP_PREFIX]);
    hasher.update(key);
    let mut vp = [0u8; 32];
    vp.copy_from_slice(&hasher.finalize());
    vp_of_digest(vp)
}

/// The byte hashed before the key in a verification pattern.
pub(crate) const VP_PREFIX: u8 = 0x01;

/// The verification pattern of `SHA-256(0x01 ‖ key)` computed elsewhere (inside a token).
pub(crate) fn vp_of_digest(mut digest: [u8; 32]) -> Vp {
    digest[VP_COMPARED_LEN..].fill(0);
    Vp(digest)
}

/// SHA-256 (FIPS 180-4).
pub fn sha256(data: &[u8]) -> [u8; 32] {
    let mut out = [0u8; 32];
    out.copy_from_slice(&Sha256::digest(data));
    out
}

/// PBKDF2-HMAC-SHA-256 (RFC 8018 §5.2) to a 256-bit key, as HPCS TKE signature key files use
/// (4096 rounds there).
pub fn pbkdf2_sha256(password: &[u8], salt: &[u8], rounds: u32) -> Secret32 {
    let mut out = [0u8; KEY_LEN];
    pbkdf2::pbkdf2_hmac::<Sha256>(password, salt, rounds, &mut out);
    let key = Secret32(out);
    out.zeroize();
    key
}

/// AES-GCM (NIST SP 800-38D) decryption under a 128- or 256-bit key given as bytes, with a
/// separate 96-bit IV and no associated data: how Key Protect clients prove they hold imported
/// key material (its `encryptedNonce`).
pub fn open_aes_gcm_with_key(
    key: &[u8],
    iv: &[u8],
    ciphertext: &[u8],
) -> Result<Zeroizing<Vec<u8>>, Opaque> {
    let nonce: [u8; NONCE_LEN] = iv.try_into().map_err(|_| Opaque)?;
    let nonce = Nonce::from(nonce);
    let plain = match key.len() {
        16 => aes_gcm::Aes128Gcm::new_from_slice(key)
            .map_err(|_| Opaque)?
            .decrypt(&nonce, ciphertext),
        32 => Aes256Gcm::new_from_slice(key)
            .map_err(|_| Opaque)?
            .decrypt(&nonce, ciphertext),
        _ => return Err(Opaque),
    };
    plain.map(Zeroizing::new).map_err(|_| Opaque)
}

/// HKDF-SHA-256 (RFC 5869) with no salt: a 256-bit key derived from `ikm` for the purpose `info`.
pub fn hkdf_sha256(ikm: &[u8], info: &[u8]) -> Secret32 {
    let mut okm = [0u8; KEY_LEN];
    // 32 bytes is far below HKDF-SHA-256's output limit.
    let _ = Hkdf::<Sha256>::new(None, ikm).expand(info, &mut okm);
    let key = Secret32(okm);
    okm.zeroize();
    key
}

/// Equality of two byte strings in time independent of their contents.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && bool::from(a.ct_eq(b))
}

/// HMAC-SHA-256 (RFC 2104, FIPS 198-1) of `message` under `key`.
pub fn hmac_sha256(key: &Secret32, message: &[u8]) -> [u8; 32] {
    use hmac::{KeyInit as _, Mac};
    let mut out = [0u8; 32];
    // A 32-byte key is always a valid HMAC key.
    if let Ok(mut mac) = hmac::Hmac::<Sha256>::new_from_slice(key.expose()) {
        mac.update(message);
        out.copy_from_slice(&mac.finalize().into_bytes());
    }
    out
}

/// Checks an HMAC-SHA-256 tag in constant time.
pub fn verify_hmac_sha256(key: &Secret32, message: &[u8], tag: &[u8]) -> Result<(), Opaque> {
    let expected = hmac_sha256(key, message);
    if tag.len() == expected.len() && bool::from(expected.ct_eq(tag)) {
        Ok(())
    } else {
        Err(Opaque)
    }
}

/// Combines 2 or 3 master key parts by XOR, the way IBM documents clear key parts; reusing the
/// same parts rebuilds the same key.
pub fn combine_parts(parts: &[Secret32]) -> Secret32 {
    let mut out = [0u8; KEY_LEN];
    for part in parts {
        for (o, p) in out.iter_mut().zip(part.expose()) {
            *o ^= p;
        }
    }
    let key = Secret32(out);
    out.zeroize();
    key
}

/// `seal[key](aad, plaintext)`: AES-256-GCM (NIST SP 800-38D) under a fresh random 96-bit nonce.
/// Returns `nonce ‖ ciphertext ‖ tag`. Random nonces are safe here because no key seals anywhere
/// near 2^32 messages (the SP 800-38D §8.3 bound).
pub fn seal_aes256gcm(key: &Secret32, aad: &[u8], plaintext: &[u8]) -> Vec<u8> {
    let cipher = Aes256Gcm::new(key.expose().into());
    let mut nonce = [0u8; NONCE_LEN];
    fill_random(&mut nonce);
    let nonce_ref = Nonce::from(nonce);
    // Encryption with a valid key cannot fail for inputs below the GCM length limit.
    let sealed = cipher
        .encrypt(
            &nonce_ref,
            Payload {
                msg: plaintext,
                aad,
            },
        )
        .unwrap_or_default();
    let mut out = Vec::with_capacity(NONCE_LEN + sealed.len());
    out.extend_from_slice(&nonce);
    out.extend_from_slice(&sealed);
    out
}

/// `open[key](aad, nonce ‖ ciphertext ‖ tag)`: the inverse of [`seal_aes256gcm`]. Any failure
/// (short input, wrong key, tampering, wrong associated data) is the same [`Opaque`] error.
pub fn open_aes256gcm(
    key: &Secret32,
    aad: &[u8],
    sealed: &[u8],
) -> Result<Zeroizing<Vec<u8>>, Opaque> {
    if sealed.len() < NONCE_LEN + TAG_LEN {
        return Err(Opaque);
    }
    let (nonce, body) = sealed.split_at(NONCE_LEN);
    let nonce: [u8; NONCE_LEN] = nonce.try_into().map_err(|_| Opaque)?;
    let cipher = Aes256Gcm::new(key.expose().into());
    cipher
        .decrypt(&Nonce::from(nonce), Payload { msg: body, aad })
        .map(Zeroizing::new)
        .map_err(|_| Opaque)
}

/// `seal[key](aad, plaintext)`: AES-256-GCM-SIV (RFC 8452) under a fresh random 96-bit nonce.
/// Returns `nonce ‖ ciphertext ‖ tag`. GCM-SIV derives its keys per nonce and its IV from the
/// message, so a repeated nonce reveals at most that two equal messages are equal (RFC 8452
/// §1.1), and a random nonce stays safe for far more messages than AES-GCM's 2^32 (§9): the
/// construction for blobs that one master key wraps by the million.
///
/// It fails only where aws-lc-rs refuses (above the RFC 8452 §6 length limit, 2^36 bytes): the
/// caller then stores nothing rather than a blob that never opens.
pub fn seal_aes256gcmsiv(key: &Secret32, aad: &[u8], plaintext: &[u8]) -> Result<Vec<u8>, Opaque> {
    use aws_lc_rs::aead::{AES_256_GCM_SIV, Aad, LessSafeKey, Nonce as SivNonce, UnboundKey};
    let mut nonce = [0u8; NONCE_LEN];
    fill_random(&mut nonce);
    let cipher =
        LessSafeKey::new(UnboundKey::new(&AES_256_GCM_SIV, key.expose()).map_err(|_| Opaque)?);
    let mut out = Zeroizing::new(Vec::with_capacity(NONCE_LEN + plaintext.len() + TAG_LEN));
    out.extend_from_slice(&nonce);
    out.extend_from_slice(plaintext);
    let (_, body) = out.split_at_mut(NONCE_LEN);
    let tag = cipher
        .seal_in_place_separate_tag(SivNonce::assume_unique_for_key(nonce), Aad::from(aad), body)
        .map_err(|_| Opaque)?;
    out.extend_from_slice(tag.as_ref());
    // Sealed now: nothing secret is left in it to wipe.
    Ok(std::mem::take(&mut *out))
}

/// `open[key](aad, nonce ‖ ciphertext ‖ tag)`: the inverse of [`seal_aes256gcmsiv`]. Any
/// failure (short input, wrong key, tampering, wrong associated data) is the same [`Opaque`].
pub fn open_aes256gcmsiv(
    key: &Secret32,
    aad: &[u8],
    sealed: &[u8],
) -> Result<Zeroizing<Vec<u8>>, Opaque> {
    use aws_lc_rs::aead::{AES_256_GCM_SIV, Aad, LessSafeKey, Nonce as SivNonce, UnboundKey};
    if sealed.len() < NONCE_LEN + TAG_LEN {
        return Err(Opaque);
    }
    let (nonce, body) = sealed.split_at(NONCE_LEN);
    let nonce = SivNonce::try_assume_unique_for_key(nonce).map_err(|_| Opaque)?;
    let cipher =
        LessSafeKey::new(UnboundKey::new(&AES_256_GCM_SIV, key.expose()).map_err(|_| Opaque)?);
    let mut plain = Zeroizing::new(body.to_vec());
    let length = cipher
        .open_in_place(nonce, Aad::from(aad), &mut plain)
        .map_err(|_| Opaque)?
        .len();
    plain.truncate(length);
    Ok(plain)
}

/// Cost parameters of Argon2id (RFC 9106), stored beside each password-protected file so that
/// they can be raised later without breaking old files.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Argon2Params {
    /// Memory in KiB.
    pub m_cost: u32,
    /// Passes.
    pub t_cost: u32,
    /// Lanes.
    pub p_cost: u32,
}

impl Default for Argon2Params {
    /// RFC 9106 §4, second recommended option (64 MiB, 3 passes, 4 lanes) with one lane, since
    /// key files are opened on a workstation one at a time.
    fn default() -> Self {
        Self {
            m_cost: 64 * 1024,
            t_cost: 3,
            p_cost: 1,
        }
    }
}

/// Why a password could not be turned into a key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BadKdfParams;

impl std::fmt::Display for BadKdfParams {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("unusable Argon2id parameters or salt")
    }
}

impl std::error::Error for BadKdfParams {}

/// Argon2id (RFC 9106) from a password and salt to a 256-bit key-encryption key.
pub fn argon2id(
    password: &[u8],
    salt: &[u8],
    params: Argon2Params,
) -> Result<Secret32, BadKdfParams> {
    // Refuse parameters that would let a tampered file make us allocate more than 1 GiB.
    if params.m_cost > 1024 * 1024 || params.t_cost > 64 || params.p_cost > 16 {
        return Err(BadKdfParams);
    }
    let argon_params =
        argon2::Params::new(params.m_cost, params.t_cost, params.p_cost, Some(KEY_LEN))
            .map_err(|_| BadKdfParams)?;
    let argon = argon2::Argon2::new(
        argon2::Algorithm::Argon2id,
        argon2::Version::V0x13,
        argon_params,
    );
    let mut out = [0u8; KEY_LEN];
    let result = argon.hash_password_into(password, salt, &mut out);
    let key = Secret32(out);
    out.zeroize();
    result.map_err(|_| BadKdfParams)?;
    Ok(key)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn vp_of_known_key_has_zeroed_tail_and_is_stable() {
        let key = [0x11u8; 32];
        let vp = verification_pattern(&key);
        assert_eq!(&vp.0[28..], &[0, 0, 0, 0]);
        // SHA-256(0x01 || 0x11 * 32), first 28 bytes, computed independently with sha256sum.
        let mut input = vec![0x01];
        input.extend_from_slice(&key);
        let full = sha256(&input);
        assert_eq!(&vp.0[..28], &full[..28]);
        assert_ne!(vp, Vp::EMPTY);
        assert!(vp.matches(&Vp(vp.0)));
    }

    #[test]
    fn vp_matches_ignores_the_last_four_bytes_only() {
        let vp = verification_pattern(&[7u8; 32]);
        let mut old_style = vp;
        old_style.0[30] = 0xff;
        assert!(vp.matches(&old_style));
        let mut different = vp;
        different.0[27] ^= 1;
        assert!(!vp.matches(&different));
    }

    #[test]
    fn aead_rejects_tampering_wrong_key_wrong_aad_and_short_input() {
        let key = Secret32::random();
        let sealed = seal_aes256gcm(&key, b"aad", b"hello");
        assert_eq!(
            &open_aes256gcm(&key, b"aad", &sealed).unwrap()[..],
            b"hello"
        );
        let mut tampered = sealed.clone();
        tampered[NONCE_LEN] ^= 1;
        assert_eq!(open_aes256gcm(&key, b"aad", &tampered), Err(Opaque));
        assert_eq!(open_aes256gcm(&key, b"other", &sealed), Err(Opaque));
        assert_eq!(
            open_aes256gcm(&Secret32::random(), b"aad", &sealed),
            Err(Opaque)
        );
        assert_eq!(open_aes256gcm(&key, b"aad", &sealed[..20]), Err(Opaque));
    }

    #[test]
    fn aes256gcmsiv_opens_the_rfc_8452_vectors() {
        // RFC 8452 Appendix C.2 (AES-256-GCM-SIV); the one with AAD cross-checked with
        // OpenSSL 3 through Python's `cryptography` (AESGCMSIV).
        let key = Secret32::from_bytes(std::array::from_fn(|i| u8::from(i == 0)));
        let nonce = hex::decode("030000000000000000000000").unwrap();
        for (aad, plaintext, result) in [
            ("", "", "07f5f4169bbf55a8400cd47ea6fd400f"),
            (
                "",
                "0100000000000000",
                "c2ef328e5c71c83b843122130f7364b761e0b97427e3df28",
            ),
            (
                "01",
                "02000000000000000000000000000000",
                "c91545823cc24f17dbb0e9e807d5ec17b292d28ff61189e8e49f3875ef91aff7",
            ),
        ] {
            let mut sealed = nonce.clone();
            sealed.extend_from_slice(&hex::decode(result).unwrap());
            let aad = hex::decode(aad).unwrap();
            assert_eq!(
                hex::encode(&open_aes256gcmsiv(&key, &aad, &sealed).unwrap()[..]),
                plaintext
            );
        }
    }

    #[test]
    fn aes256gcmsiv_rejects_tampering_wrong_key_wrong_aad_and_short_input() {
        let key = Secret32::random();
        let sealed = seal_aes256gcmsiv(&key, b"aad", b"hello").unwrap();
        assert_eq!(sealed.len(), NONCE_LEN + 5 + TAG_LEN);
        assert_eq!(
            &open_aes256gcmsiv(&key, b"aad", &sealed).unwrap()[..],
            b"hello"
        );
        assert_ne!(seal_aes256gcmsiv(&key, b"aad", b"hello").unwrap(), sealed);
        for at in [0, NONCE_LEN, sealed.len() - 1] {
            let mut tampered = sealed.clone();
            tampered[at] ^= 1;
            assert_eq!(open_aes256gcmsiv(&key, b"aad", &tampered), Err(Opaque));
        }
        assert_eq!(open_aes256gcmsiv(&key, b"other", &sealed), Err(Opaque));
        assert_eq!(
            open_aes256gcmsiv(&Secret32::random(), b"aad", &sealed),
            Err(Opaque)
        );
        assert_eq!(
            open_aes256gcmsiv(&key, b"aad", &sealed[..NONCE_LEN + TAG_LEN - 1]),
            Err(Opaque)
        );
        // The two constructions never open each other's output.
        assert_eq!(open_aes256gcm(&key, b"aad", &sealed), Err(Opaque));
        let gcm = seal_aes256gcm(&key, b"aad", b"hello");
        assert_eq!(open_aes256gcmsiv(&key, b"aad", &gcm), Err(Opaque));
    }

    #[test]
    fn signatures_verify_only_for_their_message_and_key() {
        for alg in [SigAlg::P256Sha256, SigAlg::P521Sha512] {
            let key = SigningKey::generate(alg);
            let public = key.public_key();
            let sig = key.sign(b"command");
            assert!(public.verify(b"command", &sig).is_ok());
            assert_eq!(public.verify(b"commanD", &sig), Err(Opaque));
            let other = SigningKey::generate(alg).public_key();
            assert_eq!(other.verify(b"command", &sig), Err(Opaque));
            assert_eq!(public.verify(b"command", &sig[1..]), Err(Opaque));
            let restored = SigningKey::from_scalar(alg, &key.to_scalar()).unwrap();
            assert_eq!(restored.public_key(), public);
            assert_eq!(PublicKey::parse(alg, &public.sec1).unwrap(), public);
            assert_eq!(public.ski(), sha256(&public.sec1));
        }
        assert_eq!(
            PublicKey::parse(SigAlg::P256Sha256, &[4u8; 65]),
            Err(Opaque)
        );
    }

    #[test]
    fn envelope_opens_only_with_its_importer_key_and_context() {
        let importer = ImporterKey::generate();
        let public = importer.public_sec1().unwrap();
        assert_eq!(public.len(), P256_POINT_LEN);
        let secret = Secret32::random();
        let envelope = seal_to(&public, b"unit-a", &secret).unwrap();
        assert!(importer.open(&envelope, b"unit-a").unwrap().ct_eq(&secret));
        assert!(importer.open(&envelope, b"unit-b").is_err());
        assert!(ImporterKey::generate().open(&envelope, b"unit-a").is_err());
        assert!(seal_to(&[0u8; 65], b"x", &secret).is_err());
    }

    #[test]
    fn argon2id_is_deterministic_and_password_sensitive() {
        let params = Argon2Params {
            m_cost: 64,
            t_cost: 1,
            p_cost: 1,
        };
        let a = argon2id(b"pw", b"saltsaltsaltsalt", params).unwrap();
        let b = argon2id(b"pw", b"saltsaltsaltsalt", params).unwrap();
        let c = argon2id(b"pw2", b"saltsaltsaltsalt", params).unwrap();
        assert!(a.ct_eq(&b));
        assert!(!a.ct_eq(&c));
        let huge = Argon2Params {
            m_cost: u32::MAX,
            ..params
        };
        assert!(argon2id(b"pw", b"saltsaltsaltsalt", huge).is_err());
    }

    #[test]
    fn hmac_sha256_matches_an_independent_computation_and_verifies() {
        let key = Secret32::from_bytes([0x0b; 32]);
        let tag = hmac_sha256(&key, b"message");
        // Python: hmac.new(b"\x0b" * 32, b"message", hashlib.sha256).hexdigest()
        assert_eq!(
            hex::encode(tag),
            "407fd1b6a9c339e2b5c55ea07814c6f1b4b07158f3d9df6407a4dd8014e5efe6"
        );
        assert!(verify_hmac_sha256(&key, b"message", &tag).is_ok());
        assert_eq!(verify_hmac_sha256(&key, b"messagE", &tag), Err(Opaque));
        assert_eq!(
            verify_hmac_sha256(&key, b"message", &tag[..31]),
            Err(Opaque)
        );
        assert_eq!(
            verify_hmac_sha256(&Secret32::random(), b"message", &tag),
            Err(Opaque)
        );
    }

    #[test]
    fn rsa_oaep_round_trips_and_rejects_tampering_and_the_wrong_hash() {
        use aws_lc_rs::rsa::{
            OAEP_SHA256_MGF1SHA256, OaepPublicEncryptingKey, PublicEncryptingKey,
        };
        let (public, private) = rsa_oaep_generate().unwrap();
        let encrypting =
            OaepPublicEncryptingKey::new(PublicEncryptingKey::from_der(&public).unwrap()).unwrap();
        let mut ciphertext = vec![0u8; encrypting.ciphertext_size()];
        let ciphertext = encrypting
            .encrypt(
                &OAEP_SHA256_MGF1SHA256,
                b"key material",
                &mut ciphertext,
                None,
            )
            .unwrap()
            .to_vec();
        assert_eq!(
            &rsa_oaep_decrypt(&private, OaepHash::Sha256, &ciphertext).unwrap()[..],
            b"key material"
        );
        assert_eq!(
            rsa_oaep_decrypt(&private, OaepHash::Sha1, &ciphertext),
            Err(Opaque)
        );
        let mut tampered = ciphertext.clone();
        tampered[7] ^= 1;
        assert_eq!(
            rsa_oaep_decrypt(&private, OaepHash::Sha256, &tampered),
            Err(Opaque)
        );
        assert_eq!(
            rsa_oaep_decrypt(&private[..100], OaepHash::Sha256, &ciphertext),
            Err(Opaque)
        );
    }

    #[test]
    fn aes_gcm_with_key_bytes_matches_the_aes_gcm_crate() {
        for length in [16usize, 32] {
            let key = vec![3u8; length];
            let iv = [9u8; NONCE_LEN];
            let sealed = match length {
                16 => aes_gcm::Aes128Gcm::new_from_slice(&key)
                    .unwrap()
                    .encrypt(&Nonce::from(iv), &b"nonce"[..])
                    .unwrap(),
                _ => Aes256Gcm::new_from_slice(&key)
                    .unwrap()
                    .encrypt(&Nonce::from(iv), &b"nonce"[..])
                    .unwrap(),
            };
            assert_eq!(
                &open_aes_gcm_with_key(&key, &iv, &sealed).unwrap()[..],
                b"nonce"
            );
            assert_eq!(
                open_aes_gcm_with_key(&key, &[0u8; 12], &sealed),
                Err(Opaque)
            );
        }
        assert_eq!(
            open_aes_gcm_with_key(&[1u8; 24], &[0u8; 12], &[0u8; 20]),
            Err(Opaque)
        );
    }

    #[test]
    fn pbkdf2_matches_an_independent_computation() {
        let key = pbkdf2_sha256(b"password", b"salt", 4096);
        // Python: hashlib.pbkdf2_hmac("sha256", b"password", b"salt", 4096, 32).hex()
        assert_eq!(
            hex::encode(key.expose()),
            "c5e478d59288c841aa530db6845c4c8d962893a001ce4e11a4963873aa98134a"
        );
    }

    proptest! {
        #[test]
        fn parts_combine_by_xor_and_order_does_not_matter(a in any::<[u8; 32]>(), b in any::<[u8; 32]>(), c in any::<[u8; 32]>()) {
            let parts = [Secret32(a), Secret32(b), Secret32(c)];
            let forward = combine_parts(&parts);
            let backward = combine_parts(&[Secret32(c), Secret32(b), Secret32(a)]);
            prop_assert!(forward.ct_eq(&backward));
            let expected: Vec<u8> = (0..32).map(|i| a[i] ^ b[i] ^ c[i]).collect();
            prop_assert_eq!(&forward.expose()[..], &expected[..]);
        }
    }
}

//! Root keys and the data encryption keys (DEKs) they wrap, as pure functions of the unit's
//! master key. Nothing here does I/O; the daemon calls these with the current register.
//!
//! A **root key blob** is `vp ‖ 0x02 ‖ nonce ‖ AES-256-GCM-SIV(master key, material)` with
//! the key's [`Binding`] as associated data: every blob carries the VP of the master key that
//! wraps it (so the service can count keys per master key), and a blob cannot be moved to
//! another key, version or instance, nor turned from a root key into an extractable one.
//! GCM-SIV (RFC 8452) because one master key wraps millions of blobs under random nonces: a
//! repeated nonce costs no key stream and no authentication key. Blobs of the first format,
//! `vp ‖ nonce ‖ AES-256-GCM(master key, material)`, keep opening; every rewrap (so every
//! master key rotation) writes the current format. Import token private keys and
//! application-held blobs are blobs of the same layout.
//!
//! A **DEK ciphertext** is `"rk1" ‖ version ‖ nonce ‖ AES-256-GCM(K, DEK)` where
//! `K = HKDF-SHA-256(root key material)` and the associated data binds the instance, key id,
//! version and the caller's own additional authenticated data. The version in clear tells the
//! service which root key version to hand to the unit; tampering with it fails authentication.
//! `K` belongs to one root key version, so its nonces are counted per key version, not per
//! master key (docs/FORMATS.md says why this stays AES-GCM).

use rotor_crypto::{
    Secret32, Vp, hkdf_sha256, open_aes256gcm, open_aes256gcmsiv, seal_aes256gcm, seal_aes256gcmsiv,
};
use rotor_proto::binding::import_key_aad;
pub use rotor_proto::binding::{Binding, BlobBinding, blob_vp};
use rotor_proto::error::ErrorBody;
use rotor_proto::error::ErrorCode;
use uuid::Uuid;
use zeroize::Zeroizing;

/// Magic of a DEK ciphertext.
const DEK_MAGIC: &[u8; 3] = b"rk1";
/// Length of the VP every blob starts with.
const VP_LEN: usize = 32;
/// The byte after the VP of a blob of the current format (AES-256-GCM-SIV). The first format
/// has none: its random nonce follows the VP.
const BLOB_FORMAT_SIV: u8 = 0x02;
/// Largest key material a unit wraps (standard keys hold arbitrary secrets).
pub const MAX_MATERIAL: usize = 7_500;
/// Largest DEK plaintext a root key wraps.
pub const MAX_DEK: usize = 7_500;

/// A key operation that did not succeed.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum KeyError {
    /// The current register is empty.
    NoMasterKey,
    /// The blob is wrapped under another master key than the current one.
    OtherMasterKey {
        /// The VP the blob carries.
        blob: Vp,
        /// The current master key's VP.
        current: Vp,
    },
    /// The blob or ciphertext does not authenticate; deliberately without detail.
    Invalid,
    /// Material or plaintext of an unusable size.
    Size(String),
    /// A root key's material may not leave the unit.
    NotExtractable,
    /// No new master key pinned by a rotation to rewrap to.
    NoNewMasterKey,
    /// A rewrap toward a master key this unit does not wrap new blobs under.
    WrongTarget {
        /// The master key asked for.
        requested: Vp,
        /// The master key the unit wraps new blobs under.
        wrapping: Vp,
    },
}

impl std::fmt::Display for KeyError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::NoMasterKey => write!(
                f,
                "the unit's current master key register is empty; load and set a master key first"
            ),
            Self::OtherMasterKey { blob, current } => write!(
                f,
                "the key is wrapped under master key {blob}, which this unit holds in neither register (current: {current})"
            ),
            Self::Invalid => write!(f, "the ciphertext could not be unwrapped"),
            Self::Size(why) => f.write_str(why),
            Self::NotExtractable => write!(f, "root key material never leaves a crypto unit"),
            Self::NoNewMasterKey => write!(
                f,
                "no rotation has pinned a new master key to rewrap to: blobs can be rewrapped between the pin of a new master key and its promotion (hold the rotation with --hold-before-promote)"
            ),
            Self::WrongTarget {
                requested,
                wrapping,
            } => write!(
                f,
                "blobs can only be rewrapped to the master key this unit wraps new keys under ({wrapping}), not {requested}; pin the new register first"
            ),
        }
    }
}

impl std::error::Error for KeyError {}

impl KeyError {
    /// The code a unit answers with.
    pub fn error_code(&self) -> ErrorCode {
        match self {
            Self::NoMasterKey => ErrorCode::NoMasterKey,
            Self::OtherMasterKey { .. } => ErrorCode::OtherMasterKey,
            Self::Invalid => ErrorCode::InvalidCiphertext,
            Self::Size(_) => ErrorCode::BadSize,
            Self::NotExtractable => ErrorCode::NotExtractable,
            Self::WrongTarget { .. } => ErrorCode::WrongTarget,
            Self::NoNewMasterKey => ErrorCode::NoNewMasterKey,
        }
    }

    /// The wire form.
    pub fn to_body(&self) -> ErrorBody {
        ErrorBody {
            code: self.error_code(),
            message: self.to_string(),
        }
    }
}

/// The master keys a unit's key operations may use: the current register, the committed new
/// register (during a rotation blobs sit under either), and which of them wraps new blobs.
pub struct Masters {
    /// The current register.
    pub current: Secret32,
    /// The new register, once committed.
    pub new: Option<Secret32>,
    /// A rotation pins the new register: new blobs go under it.
    pub wrap_under_new: bool,
}

impl Masters {
    /// Whether a rotation has pinned the new register, so that new blobs go under it.
    pub fn new_pinned(&self) -> bool {
        self.wrap_under_new && self.new.is_some()
    }

    /// The master key new blobs are wrapped under.
    pub fn wrapping(&self) -> &Secret32 {
        match &self.new {
            Some(new) if self.wrap_under_new => new,
            _ => &self.current,
        }
    }

    /// The register holding the master key with this VP.
    pub fn for_vp(&self, vp: &Vp) -> Result<&Secret32, KeyError> {
        let current = self.current.vp();
        if vp.matches(&current) {
            return Ok(&self.current);
        }
        match &self.new {
            Some(new) if vp.matches(&new.vp()) => Ok(new),
            _ => Err(KeyError::OtherMasterKey { blob: *vp, current }),
        }
    }

    /// The register holding the master key a blob is wrapped under.
    pub fn for_blob(&self, blob: &[u8]) -> Result<&Secret32, KeyError> {
        self.for_vp(&blob_vp(blob).ok_or(KeyError::Invalid)?)
    }
}

/// Wraps key material under `master`.
pub fn seal_key(
    master: &Secret32,
    binding: &Binding,
    material: &[u8],
) -> Result<Vec<u8>, KeyError> {
    if material.is_empty() || material.len() > MAX_MATERIAL {
        return Err(KeyError::Size(format!(
            "key material must be 1 to {MAX_MATERIAL} bytes"
        )));
    }
    seal_under_master(master, &binding.blob_aad(), material)
}

/// Unwraps a blob made by [`seal_key`] under the same master key and binding.
pub fn open_key(
    master: &Secret32,
    binding: &Binding,
    blob: &[u8],
) -> Result<Zeroizing<Vec<u8>>, KeyError> {
    open_under_master(master, &binding.blob_aad(), blob)
}

/// `vp ‖ 0x02 ‖ AES-256-GCM-SIV(master, secret)`: the layout of every blob a unit wraps.
fn seal_under_master(master: &Secret32, aad: &[u8], secret: &[u8]) -> Result<Vec<u8>, KeyError> {
    let sealed = seal_aes256gcmsiv(master, aad, secret).map_err(|_| KeyError::Invalid)?;
    let mut blob = master.vp().0.to_vec();
    blob.push(BLOB_FORMAT_SIV);
    blob.extend_from_slice(&sealed);
    Ok(blob)
}

/// Opens a blob of [`seal_under_master`], or of the first format (`vp ‖ AES-256-GCM`); a blob
/// under another master key says which.
///
/// A first-format blob has a random nonce right after its VP, so no marker byte is one it
/// cannot have, and the VP itself must stay the master key's pattern (the keystore indexes and
/// counts blobs by it). So the marker only chooses the order: after `0x02`, GCM-SIV is tried
/// first and then GCM (one old blob in 256 has a nonce starting with `0x02`); after any other
/// byte, only GCM. Authentication decides: a blob opens only under the construction it was
/// made with, since passing the other one's 128-bit tag check is a forgery. The price is one
/// failed GCM-SIV check for those few old blobs until a rotation rewraps them.
fn open_under_master(
    master: &Secret32,
    aad: &[u8],
    blob: &[u8],
) -> Result<Zeroizing<Vec<u8>>, KeyError> {
    let vp = blob_vp(blob).ok_or(KeyError::Invalid)?;
    let current = master.vp();
    if !vp.matches(&current) {
        return Err(KeyError::OtherMasterKey { blob: vp, current });
    }
    let sealed = blob.get(VP_LEN..).unwrap_or_default();
    match sealed.split_first() {
        Some((&BLOB_FORMAT_SIV, siv)) => {
            open_aes256gcmsiv(master, aad, siv).or_else(|_| open_aes256gcm(master, aad, sealed))
        }
        _ => open_aes256gcm(master, aad, sealed),
    }
    .map_err(|_| KeyError::Invalid)
}

/// Seals a GREP11 key blob or state under the master key new blobs go under
/// (docs/GREP11.md): the same layout as every blob, bound by `aad` to its instance and kind.
pub fn seal_grep11(masters: &Masters, aad: &[u8], secret: &[u8]) -> Result<Vec<u8>, KeyError> {
    seal_under_master(masters.wrapping(), aad, secret)
}

/// Opens a blob of [`seal_grep11`] under whichever register it names.
pub fn open_grep11(
    masters: &Masters,
    aad: &[u8],
    blob: &[u8],
) -> Result<Zeroizing<Vec<u8>>, KeyError> {
    open_under_master(masters.for_blob(blob)?, aad, blob)
}

/// Rewraps a blob held under either register to `to`, keeping its binding: the GREP11
/// `RewrapKeyBlob` of rotor.
pub fn rewrap_blob(
    masters: &Masters,
    to: &Secret32,
    binding: &BlobBinding,
    blob: &[u8],
) -> Result<Vec<u8>, KeyError> {
    let aad = binding.aad();
    let secret = open_under_master(masters.for_blob(blob)?, &aad, blob)?;
    seal_under_master(to, &aad, &secret)
}

/// Wraps an import token's RSA private key (PKCS#8) under `master`, bound to its instance and
/// token id; same layout as a root key blob.
pub fn seal_import_key(
    master: &Secret32,
    instance: Uuid,
    token: Uuid,
    pkcs8: &[u8],
) -> Result<Vec<u8>, KeyError> {
    seal_under_master(master, &import_key_aad(instance, token), pkcs8)
}

/// Unwraps a blob made by [`seal_import_key`].
pub fn open_import_key(
    master: &Secret32,
    instance: Uuid,
    token: Uuid,
    blob: &[u8],
) -> Result<Zeroizing<Vec<u8>>, KeyError> {
    open_under_master(master, &import_key_aad(instance, token), blob)
}

fn dek_key(root: &[u8]) -> Secret32 {
    hkdf_sha256(root, b"rotor dek wrapping key v1")
}

/// The root key version a DEK ciphertext was made with.
pub fn ciphertext_version(ciphertext: &[u8]) -> Option<u32> {
    if ciphertext.get(..3)? != DEK_MAGIC {
        return None;
    }
    Some(u32::from_be_bytes(ciphertext.get(3..7)?.try_into().ok()?))
}

/// Wraps a DEK under a root key's material.
pub fn wrap_dek(
    root: &[u8],
    binding: &Binding,
    plaintext: &[u8],
    aad: &[String],
) -> Result<Vec<u8>, KeyError> {
    if plaintext.is_empty() || plaintext.len() > MAX_DEK {
        return Err(KeyError::Size(format!(
            "plaintext must be 1 to {MAX_DEK} bytes"
        )));
    }
    let mut out = DEK_MAGIC.to_vec();
    out.extend_from_slice(&binding.version.to_be_bytes());
    out.extend_from_slice(&seal_aes256gcm(
        &dek_key(root),
        &binding.dek_aad(aad),
        plaintext,
    ));
    Ok(out)
}

/// Unwraps a DEK ciphertext made by [`wrap_dek`] with the same root key, binding and AAD.
pub fn unwrap_dek(
    root: &[u8],
    binding: &Binding,
    ciphertext: &[u8],
    aad: &[String],
) -> Result<Zeroizing<Vec<u8>>, KeyError> {
    if ciphertext_version(ciphertext) != Some(binding.version) {
        return Err(KeyError::Invalid);
    }
    open_aes256gcm(
        &dek_key(root),
        &binding.dek_aad(aad),
        ciphertext.get(7..).unwrap_or_default(),
    )
    .map_err(|_| KeyError::Invalid)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn binding(version: u32) -> Binding {
        Binding {
            instance: Uuid::from_u128(1),
            key: Uuid::from_u128(2),
            version,
            extractable: false,
        }
    }

    #[test]
    fn blobs_carry_their_master_key_vp_and_their_binding() {
        let master = Secret32::random();
        let blob = seal_key(&master, &binding(1), &[7u8; 32]).unwrap();
        assert_eq!(blob_vp(&blob), Some(master.vp()));
        assert_eq!(
            &open_key(&master, &binding(1), &blob).unwrap()[..],
            &[7u8; 32]
        );
        assert_eq!(
            open_key(&master, &binding(2), &blob),
            Err(KeyError::Invalid)
        );
        let extractable = Binding {
            extractable: true,
            ..binding(1)
        };
        assert_eq!(
            open_key(&master, &extractable, &blob),
            Err(KeyError::Invalid)
        );
        let other = Secret32::random();
        assert!(matches!(
            open_key(&other, &binding(1), &blob),
            Err(KeyError::OtherMasterKey { .. })
        ));
        assert_eq!(
            open_key(&master, &binding(1), &blob[..40]),
            Err(KeyError::Invalid)
        );
        assert!(seal_key(&master, &binding(1), &[]).is_err());
    }

    /// Root key blobs of the first format, `vp ‖ nonce ‖ AES-256-GCM`, as stored before the
    /// current format: master key `0x42` × 32, [`binding`]`(1)`, material `00 01 … 1f`. Made
    /// with Python's `cryptography` (AESGCM) byte for byte as the first-format code wrote them;
    /// the first nonce starts with the current format's marker byte, the second does not.
    const FIRST_FORMAT_BLOBS: [&str; 2] = [
        "4bcb5afb401409b577d891e828b23abab8666935a00ac641f0affc790000000002000102030405060708090a8ce88d5473357fee8256748d5e235374cc3f1d2949f24c1e53fc8499260977b329a1aed3abc07652d461d25c7430d821",
        "4bcb5afb401409b577d891e828b23abab8666935a00ac641f0affc79000000009a000102030405060708090aab3489635c67413af217e260a941e3276bbddf64f181d810a392c5750b3c0aebb77fcd713be6a2b44b6b4bcb26fe9da8",
    ];

    /// A blob exactly as the first-format code sealed one.
    fn first_format_blob(master: &Secret32, aad: &[u8], secret: &[u8]) -> Vec<u8> {
        let mut blob = master.vp().0.to_vec();
        blob.extend_from_slice(&seal_aes256gcm(master, aad, secret));
        blob
    }

    #[test]
    fn new_blobs_are_aes_gcm_siv_behind_their_vp_and_format_byte() {
        let master = Secret32::random();
        let blob = seal_key(&master, &binding(1), &[7u8; 32]).unwrap();
        assert_eq!(blob[VP_LEN], BLOB_FORMAT_SIV);
        assert_eq!(blob.len(), VP_LEN + 1 + 12 + 32 + 16);
        assert_eq!(
            &open_aes256gcmsiv(&master, &binding(1).blob_aad(), &blob[VP_LEN + 1..]).unwrap()[..],
            &[7u8; 32]
        );
        // Another byte in the marker's place makes it no blob of either format.
        let mut remarked = blob;
        remarked[VP_LEN] = 0x01;
        assert_eq!(
            open_key(&master, &binding(1), &remarked),
            Err(KeyError::Invalid)
        );
        let token =
            seal_import_key(&master, Uuid::from_u128(1), Uuid::from_u128(3), b"pkcs8").unwrap();
        assert_eq!(token[VP_LEN], BLOB_FORMAT_SIV);
        assert_eq!(blob_vp(&token), Some(master.vp()));
    }

    #[test]
    fn first_format_blobs_keep_opening_whatever_their_nonce_starts_with() {
        let master = Secret32::from_bytes([0x42; 32]);
        let material: Vec<u8> = (0..32).collect();
        for stored in FIRST_FORMAT_BLOBS {
            let blob = hex::decode(stored).unwrap();
            assert_eq!(blob_vp(&blob), Some(master.vp()));
            assert_eq!(
                &open_key(&master, &binding(1), &blob).unwrap()[..],
                &material
            );
            assert_eq!(
                open_key(&master, &binding(2), &blob),
                Err(KeyError::Invalid)
            );
            let mut tampered = blob.clone();
            *tampered.last_mut().unwrap() ^= 1;
            assert_eq!(
                open_key(&master, &binding(1), &tampered),
                Err(KeyError::Invalid)
            );
        }
        // Fresh first-format blobs, made the way the first-format code made them.
        let master = Secret32::random();
        let aad = import_key_aad(Uuid::from_u128(1), Uuid::from_u128(3));
        for _ in 0..64 {
            let blob = first_format_blob(&master, &aad, b"pkcs8 private key");
            assert_eq!(
                &open_import_key(&master, Uuid::from_u128(1), Uuid::from_u128(3), &blob).unwrap()[..],
                b"pkcs8 private key"
            );
        }
    }

    #[test]
    fn a_rewrap_upgrades_a_first_format_blob_to_the_current_format() {
        let old = Secret32::from_bytes([0x42; 32]);
        let new = Secret32::random();
        let masters = Masters {
            current: old.clone(),
            new: Some(new.clone()),
            wrap_under_new: true,
        };
        let material: Vec<u8> = (0..32).collect();
        let key = binding(1);
        let kept = BlobBinding::Key(key.clone());
        for stored in FIRST_FORMAT_BLOBS {
            let blob = hex::decode(stored).unwrap();
            let rewrapped = rewrap_blob(&masters, &new, &kept, &blob).unwrap();
            assert_eq!(blob_vp(&rewrapped), Some(new.vp()));
            assert_eq!(rewrapped[VP_LEN], BLOB_FORMAT_SIV);
            assert_eq!(&open_key(&new, &key, &rewrapped).unwrap()[..], &material);
            // Back under the old master key (an aborted rotation): still the current format.
            let back = rewrap_blob(&masters, &old, &kept, &rewrapped).unwrap();
            assert_eq!(back[VP_LEN], BLOB_FORMAT_SIV);
            assert_eq!(&open_key(&old, &key, &back).unwrap()[..], &material);
        }
    }

    #[test]
    fn dek_ciphertexts_bind_key_version_and_aad() {
        let root = [9u8; 32];
        let aad = vec!["tenant-a".to_owned()];
        let ct = wrap_dek(&root, &binding(3), b"dek bytes", &aad).unwrap();
        assert_eq!(ciphertext_version(&ct), Some(3));
        assert_eq!(
            &unwrap_dek(&root, &binding(3), &ct, &aad).unwrap()[..],
            b"dek bytes"
        );
        assert_eq!(
            unwrap_dek(&root, &binding(3), &ct, &[]),
            Err(KeyError::Invalid)
        );
        assert_eq!(
            unwrap_dek(&root, &binding(2), &ct, &aad),
            Err(KeyError::Invalid)
        );
        assert_eq!(
            unwrap_dek(&[8u8; 32], &binding(3), &ct, &aad),
            Err(KeyError::Invalid)
        );
        let mut tampered = ct.clone();
        *tampered.last_mut().unwrap() ^= 1;
        assert_eq!(
            unwrap_dek(&root, &binding(3), &tampered, &aad),
            Err(KeyError::Invalid)
        );
        // Moving the AAD boundary does not produce the same associated data.
        let split = vec!["tenant".to_owned(), "-a".to_owned()];
        assert_eq!(
            unwrap_dek(&root, &binding(3), &ct, &split),
            Err(KeyError::Invalid)
        );
    }
}

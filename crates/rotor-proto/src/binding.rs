//! What a blob is bound to: the associated data that ties a wrapped key to its instance, key,
//! version and kind, so that a blob cannot be moved to another key or made extractable.

use rotor_crypto::Vp;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// The VP of the master key a blob is wrapped under: its first 32 bytes (docs/FORMATS.md).
/// Whoever stores a blob reads its master key from here, not from what a unit reports.
pub fn blob_vp(blob: &[u8]) -> Option<Vp> {
    let vp: [u8; 32] = blob.get(..32)?.try_into().ok()?;
    Some(Vp(vp))
}

/// What a root key blob is bound to.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Binding {
    /// The instance that owns the key.
    pub instance: Uuid,
    /// The key id.
    pub key: Uuid,
    /// The key version, from 1.
    pub version: u32,
    /// Standard (extractable) key: its material may leave the unit. Root keys never do.
    pub extractable: bool,
}

impl Binding {
    /// The associated data of this key version's blob (docs/FORMATS.md).
    pub fn blob_aad(&self) -> Vec<u8> {
        let mut aad = b"rotor root key v1\0".to_vec();
        aad.extend_from_slice(self.instance.as_bytes());
        aad.extend_from_slice(self.key.as_bytes());
        aad.extend_from_slice(&self.version.to_be_bytes());
        aad.push(u8::from(self.extractable));
        aad
    }

    /// The associated data of a DEK ciphertext under this key version, with the caller's own
    /// additional authenticated data (docs/FORMATS.md).
    pub fn dek_aad(&self, caller_aad: &[String]) -> Vec<u8> {
        let mut aad = b"rotor dek v1\0".to_vec();
        aad.extend_from_slice(self.instance.as_bytes());
        aad.extend_from_slice(self.key.as_bytes());
        aad.extend_from_slice(&self.version.to_be_bytes());
        for item in caller_aad {
            aad.extend_from_slice(&u32::try_from(item.len()).unwrap_or(u32::MAX).to_be_bytes());
            aad.extend_from_slice(item.as_bytes());
        }
        aad
    }
}

/// What a stored blob is bound to, which a rewrap keeps.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum BlobBinding {
    /// A root or standard key version.
    Key(Binding),
    /// An import token's private key.
    ImportToken {
        /// The instance.
        instance: Uuid,
        /// The token's id.
        token: Uuid,
    },
}

impl BlobBinding {
    /// The associated data of the blob.
    pub fn aad(&self) -> Vec<u8> {
        match self {
            Self::Key(binding) => binding.blob_aad(),
            Self::ImportToken { instance, token } => import_key_aad(*instance, *token),
        }
    }
}

/// The associated data of an import token's sealed private key (docs/FORMATS.md).
pub fn import_key_aad(instance: Uuid, token: Uuid) -> Vec<u8> {
    let mut aad = b"rotor import token v1\0".to_vec();
    aad.extend_from_slice(instance.as_bytes());
    aad.extend_from_slice(token.as_bytes());
    aad
}

/// The associated data of a GREP11 key blob or operation state of `instance`
/// (docs/GREP11.md): the two kinds never open as each other, nor in another instance.
pub fn grep11_aad(instance: Uuid, kind: rotor_ep11::Sealed) -> Vec<u8> {
    let mut aad = match kind {
        rotor_ep11::Sealed::Key => b"rotor grep11 key v1\0".to_vec(),
        rotor_ep11::Sealed::State => b"rotor grep11 state v1\0".to_vec(),
    };
    aad.extend_from_slice(instance.as_bytes());
    aad
}

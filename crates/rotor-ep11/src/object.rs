//! Key objects and their blobs. A key blob is the object (attributes and value) encoded with
//! postcard and sealed by the unit ([`Sealer`]): under its master key, tagged with that key's
//! VP and bound to the instance, so a blob opens only in its own instance's units and names
//! the master key it needs.

use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use crate::consts::{cka, ckr};
use crate::error::{Ep11Error, Ep11Result};
use crate::template::{AttrValue, Template, USAGE_FLAGS, is_boolean};

/// Largest blob or state a unit opens (a state carries the data of a multi-part operation,
/// at most [`crate::ops::MAX_DATA`]).
pub const MAX_SEALED: usize = 1024 * 1024;

/// What a sealed blob holds: the unit binds each kind to its own associated data, so a state
/// never opens as a key and the reverse.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Sealed {
    /// A key object.
    Key,
    /// A multi-part operation's state.
    State,
}

/// How the unit seals blobs under its master keys; implemented by the unit over its
/// registers, and in tests by a fixed key.
pub trait Sealer {
    /// Seals `plaintext` under the master key new blobs go under.
    fn seal(&self, kind: Sealed, plaintext: &[u8]) -> Ep11Result<Vec<u8>>;
    /// Opens a blob under whichever register it names; a blob under a master key the unit no
    /// longer holds is `CKR_IBM_WKID_MISMATCH` with the VP it needs.
    fn open(&self, kind: Sealed, sealed: &[u8]) -> Ep11Result<Zeroizing<Vec<u8>>>;
    /// Whether a rotation has pinned the new master key, so [`Sealer::seal`] seals under it:
    /// only then may `RewrapKeyBlob` move blobs.
    fn rotation_pinned(&self) -> bool;
}

/// A key inside the unit: its attributes and its secret value (an AES or HMAC key, or an EC
/// private scalar).
#[derive(Clone, Serialize, Deserialize)]
pub struct KeyObject {
    /// Every attribute but `CKA_VALUE`.
    pub attributes: Template,
    /// The secret value.
    pub value: Zeroizing<Vec<u8>>,
}

impl std::fmt::Debug for KeyObject {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyObject")
            .field("attributes", &self.attributes)
            .finish_non_exhaustive()
    }
}

impl KeyObject {
    /// An integer attribute (`CKA_CLASS`, `CKA_KEY_TYPE`…).
    pub fn ulong(&self, attribute: u64) -> Option<u64> {
        self.attributes.get(&attribute).and_then(AttrValue::as_u64)
    }

    /// A Boolean attribute; absent is false.
    pub fn flag(&self, attribute: u64) -> bool {
        self.attributes
            .get(&attribute)
            .and_then(AttrValue::as_bool)
            .unwrap_or(false)
    }

    /// `CKR_KEY_FUNCTION_NOT_PERMITTED` unless the usage flag `attribute` is on.
    pub fn require(&self, attribute: u64) -> Ep11Result<()> {
        if self.flag(attribute) {
            return Ok(());
        }
        Err(Ep11Error::new(
            ckr::KEY_FUNCTION_NOT_PERMITTED,
            format!("the key's attribute 0x{attribute:X} is false: it may not be used this way"),
        ))
    }

    /// `CKR_KEY_TYPE_INCONSISTENT` unless the key is of `class` and `key_type`.
    pub fn require_type(&self, class: u64, key_type: u64) -> Ep11Result<()> {
        if self.ulong(cka::CLASS) == Some(class) && self.ulong(cka::KEY_TYPE) == Some(key_type) {
            return Ok(());
        }
        Err(Ep11Error::new(
            ckr::KEY_TYPE_INCONSISTENT,
            format!("the mechanism needs a key of class 0x{class:X} and type 0x{key_type:X}"),
        ))
    }

    /// The sealed blob of this object.
    pub fn seal(&self, sealer: &dyn Sealer) -> Ep11Result<Vec<u8>> {
        let encoded = Zeroizing::new(postcard::to_stdvec(self).map_err(|_| {
            Ep11Error::new(ckr::GENERAL_ERROR, "the key object could not be encoded")
        })?);
        sealer.seal(Sealed::Key, &encoded)
    }

    /// Opens a key blob.
    pub fn open(sealer: &dyn Sealer, blob: &[u8]) -> Ep11Result<Self> {
        if blob.is_empty() || blob.len() > MAX_SEALED {
            return Err(Ep11Error::blob());
        }
        let encoded = sealer.open(Sealed::Key, blob)?;
        postcard::from_bytes(&encoded).map_err(|_| Ep11Error::blob())
    }

    /// `GetAttributeValue`: the attributes asked for (all of them when none is named).
    /// `CKA_VALUE` never leaves the unit this way.
    pub fn get_attributes(&self, wanted: &[u64]) -> Ep11Result<Template> {
        if wanted.is_empty() {
            return Ok(self.attributes.clone());
        }
        wanted
            .iter()
            .map(|&attribute| {
                if attribute == cka::VALUE {
                    return Err(Ep11Error::new(
                        ckr::ATTRIBUTE_SENSITIVE,
                        "the key value never leaves a crypto unit in the clear",
                    ));
                }
                let value = self.attributes.get(&attribute).ok_or_else(|| {
                    Ep11Error::new(
                        ckr::ATTRIBUTE_TYPE_INVALID,
                        format!("the key has no attribute 0x{attribute:X}"),
                    )
                })?;
                Ok((attribute, value.clone()))
            })
            .collect()
    }

    /// `SetAttributeValue`: Boolean attributes only, on a modifiable key; `CKA_EXTRACTABLE`
    /// may only be turned off and `CKA_SENSITIVE` only on (PKCS #11 v2.40 §4.4); a usage
    /// flag only on a key that already had it among its kind's usages.
    pub fn set_attributes(&self, changes: &Template) -> Ep11Result<Self> {
        if !self.flag(cka::MODIFIABLE) {
            return Err(Ep11Error::new(
                ckr::ATTRIBUTE_READ_ONLY,
                "the key's CKA_MODIFIABLE is false",
            ));
        }
        let mut next = self.clone();
        for (&attribute, value) in changes {
            if !is_boolean(attribute)
                || matches!(
                    attribute,
                    cka::LOCAL | cka::NEVER_EXTRACTABLE | cka::ALWAYS_SENSITIVE
                )
            {
                return Err(Ep11Error::new(
                    ckr::ATTRIBUTE_READ_ONLY,
                    format!(
                        "attribute 0x{attribute:X} cannot be changed: only Boolean attributes can"
                    ),
                ));
            }
            let wanted = value.as_bool().ok_or_else(|| {
                Ep11Error::new(
                    ckr::ATTRIBUTE_VALUE_INVALID,
                    format!("attribute 0x{attribute:X} must be a Boolean"),
                )
            })?;
            let current = self.flag(attribute);
            let one_way = match attribute {
                cka::EXTRACTABLE => !wanted || current,
                cka::SENSITIVE => !current || wanted,
                cka::MODIFIABLE => !wanted || current,
                _ => true,
            };
            if !one_way {
                return Err(Ep11Error::new(
                    ckr::ATTRIBUTE_READ_ONLY,
                    format!("attribute 0x{attribute:X} cannot be changed back"),
                ));
            }
            if USAGE_FLAGS.contains(&attribute)
                && wanted
                && !self.attributes.contains_key(&attribute)
            {
                return Err(Ep11Error::new(
                    ckr::TEMPLATE_INCONSISTENT,
                    format!("usage attribute 0x{attribute:X} does not apply to this key"),
                ));
            }
            next.attributes.insert(attribute, AttrValue::Bool(wanted));
        }
        Ok(next)
    }
}

//! Templates: PKCS #11 attribute maps (`CKA_*` number to value), as GREP11 sends them, and the
//! rules a new key's template must follow (PKCS #11 v2.40 §4.1-§4.4).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::consts::{cka, ckr};
use crate::error::{Ep11Error, Ep11Result};

/// One attribute value: GREP11's `AttributeValue` (`AttributeB`, `AttributeTF`, `AttributeI`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum AttrValue {
    /// Bytes (`AttributeB`); clients of the bytes-valued maps also send Booleans (one byte)
    /// and integers (big-endian) this way.
    Bytes(Vec<u8>),
    /// A Boolean (`AttributeTF`).
    Bool(bool),
    /// An integer (`AttributeI`).
    Int(i64),
}

impl AttrValue {
    /// The value as a Boolean, in any of the encodings clients use.
    pub fn as_bool(&self) -> Option<bool> {
        match self {
            Self::Bool(value) => Some(*value),
            Self::Int(0) => Some(false),
            Self::Int(1) => Some(true),
            Self::Bytes(bytes) => match bytes.as_slice() {
                [0] => Some(false),
                [1] => Some(true),
                _ => None,
            },
            Self::Int(_) => None,
        }
    }

    /// The value as an unsigned integer (`CK_ULONG`), in any of the encodings clients use.
    pub fn as_u64(&self) -> Option<u64> {
        match self {
            Self::Int(value) => u64::try_from(*value).ok(),
            Self::Bytes(bytes) if !bytes.is_empty() && bytes.len() <= 8 => {
                Some(bytes.iter().fold(0u64, |acc, &b| acc << 8 | u64::from(b)))
            }
            _ => None,
        }
    }
}

/// A template or an object's attributes.
pub type Template = BTreeMap<u64, AttrValue>;

/// Boolean attributes a template may set.
const SETTABLE_BOOLEANS: &[u64] = &[
    cka::TOKEN,
    cka::PRIVATE,
    cka::TRUSTED,
    cka::SENSITIVE,
    cka::ENCRYPT,
    cka::DECRYPT,
    cka::WRAP,
    cka::UNWRAP,
    cka::SIGN,
    cka::VERIFY,
    cka::DERIVE,
    cka::EXTRACTABLE,
    cka::MODIFIABLE,
    cka::COPYABLE,
    cka::WRAP_WITH_TRUSTED,
];

/// The usage flags: each allows one kind of operation, and is off unless the template sets it.
pub const USAGE_FLAGS: &[u64] = &[
    cka::ENCRYPT,
    cka::DECRYPT,
    cka::WRAP,
    cka::UNWRAP,
    cka::SIGN,
    cka::VERIFY,
    cka::DERIVE,
];

/// Attributes the unit sets and no template may: `CKR_ATTRIBUTE_READ_ONLY`.
const READ_ONLY: &[u64] = &[
    cka::VALUE,
    cka::LOCAL,
    cka::NEVER_EXTRACTABLE,
    cka::ALWAYS_SENSITIVE,
    cka::CHECK_VALUE,
    cka::EC_POINT,
];

/// Whether `attribute` is one of the Boolean attributes.
pub fn is_boolean(attribute: u64) -> bool {
    SETTABLE_BOOLEANS.contains(&attribute)
        || matches!(
            attribute,
            cka::LOCAL | cka::NEVER_EXTRACTABLE | cka::ALWAYS_SENSITIVE
        )
}

/// What a new object may be: its class, key type, the usage flags that make sense for it, and
/// the attributes its mechanism reads (`CKA_VALUE_LEN`, `CKA_EC_PARAMS`).
pub struct ObjectKind<'a> {
    /// `CKA_CLASS`
    pub class: u64,
    /// `CKA_KEY_TYPE`
    pub key_type: u64,
    /// Usage flags it may carry; any other set to true is `CKR_TEMPLATE_INCONSISTENT`.
    pub usages: &'a [u64],
    /// Attributes the mechanism reads from the template.
    pub parameters: &'a [u64],
}

/// The attributes of a new object made from `template`: every attribute checked, Booleans
/// normalized, usage flags off unless set, and the attributes the unit sets added.
pub fn new_object_attributes(template: &Template, kind: &ObjectKind<'_>) -> Ep11Result<Template> {
    let mut attributes = Template::new();
    attributes.insert(cka::CLASS, AttrValue::Int(ulong(kind.class)));
    attributes.insert(cka::KEY_TYPE, AttrValue::Int(ulong(kind.key_type)));
    for flag in kind.usages {
        attributes.insert(*flag, AttrValue::Bool(false));
    }
    attributes.insert(cka::EXTRACTABLE, AttrValue::Bool(true));
    attributes.insert(cka::SENSITIVE, AttrValue::Bool(true));
    attributes.insert(cka::MODIFIABLE, AttrValue::Bool(true));
    attributes.insert(cka::TOKEN, AttrValue::Bool(false));
    attributes.insert(cka::PRIVATE, AttrValue::Bool(true));
    for (&attribute, value) in template {
        match attribute {
            cka::CLASS | cka::KEY_TYPE => {
                let wanted = if attribute == cka::CLASS {
                    kind.class
                } else {
                    kind.key_type
                };
                if value.as_u64() != Some(wanted) {
                    return Err(Ep11Error::new(
                        ckr::TEMPLATE_INCONSISTENT,
                        format!(
                            "attribute 0x{attribute:X} does not match the mechanism (it makes 0x{wanted:X})"
                        ),
                    ));
                }
            }
            cka::LABEL | cka::ID => {
                let AttrValue::Bytes(bytes) = value else {
                    return Err(invalid_value(attribute, "must be bytes"));
                };
                attributes.insert(attribute, AttrValue::Bytes(bytes.clone()));
            }
            _ if kind.parameters.contains(&attribute) => {
                attributes.insert(attribute, value.clone());
            }
            _ if SETTABLE_BOOLEANS.contains(&attribute) => {
                let flag = value
                    .as_bool()
                    .ok_or_else(|| invalid_value(attribute, "must be a Boolean"))?;
                if USAGE_FLAGS.contains(&attribute) && !kind.usages.contains(&attribute) {
                    if flag {
                        return Err(Ep11Error::new(
                            ckr::TEMPLATE_INCONSISTENT,
                            format!(
                                "usage attribute 0x{attribute:X} cannot be set on this kind of key"
                            ),
                        ));
                    }
                    continue;
                }
                attributes.insert(attribute, AttrValue::Bool(flag));
            }
            _ if READ_ONLY.contains(&attribute) => {
                return Err(Ep11Error::new(
                    ckr::ATTRIBUTE_READ_ONLY,
                    format!("attribute 0x{attribute:X} is set by the crypto unit"),
                ));
            }
            _ => {
                return Err(Ep11Error::new(
                    ckr::ATTRIBUTE_TYPE_INVALID,
                    format!("attribute 0x{attribute:X} is not supported in a template"),
                ));
            }
        }
    }
    let flag = |attribute| attributes.get(&attribute).and_then(AttrValue::as_bool);
    let never_extractable = flag(cka::EXTRACTABLE) == Some(false);
    let always_sensitive = flag(cka::SENSITIVE) == Some(true);
    attributes.insert(cka::LOCAL, AttrValue::Bool(true));
    attributes.insert(cka::NEVER_EXTRACTABLE, AttrValue::Bool(never_extractable));
    attributes.insert(cka::ALWAYS_SENSITIVE, AttrValue::Bool(always_sensitive));
    Ok(attributes)
}

/// A `CK_ULONG` as the `AttributeI` it travels in.
pub fn ulong(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

/// `CKR_ATTRIBUTE_VALUE_INVALID` for `attribute`.
pub fn invalid_value(attribute: u64, why: &str) -> Ep11Error {
    Ep11Error::new(
        ckr::ATTRIBUTE_VALUE_INVALID,
        format!("attribute 0x{attribute:X} {why}"),
    )
}

//! Every GREP11 call as one request type, run by [`execute`] against the unit's [`Sealer`].
//! Nothing is kept between calls: a multi-part operation's state (mechanism, key, data so far)
//! travels sealed with the client, like a key blob; `*Update` calls collect the data and the
//! last call computes over all of it, so their outputs are empty until then.

use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use crate::consts::{cka, ckf, ckk, ckm, cko, ckr};
use crate::crypto::{self, Direction};
use crate::error::{Ep11Error, Ep11Result};
use crate::mechanisms::{MechanismInfo, mechanism_info, mechanism_list};
use crate::object::{KeyObject, MAX_SEALED, Sealed, Sealer};
use crate::template::{
    AttrValue, ObjectKind, Template, invalid_value, new_object_attributes, ulong,
};

/// The most random bytes one call returns (the GREP11 reference's limit).
pub const MAX_RANDOM: u64 = 1_000_000;
/// The most data a multi-part operation collects: a state and the next part stay within what
/// one request to a unit carries.
pub const MAX_DATA: usize = 900 * 1024;

/// A mechanism and its parameter.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Mechanism {
    /// `CKM_*`
    pub mechanism: u64,
    /// `ParameterB`: the IV of AES-CBC and AES-GCM; empty for the others.
    pub parameter: Vec<u8>,
}

/// The kind of a multi-part operation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Operation {
    /// `Digest*`
    Digest,
    /// `Encrypt*`
    Encrypt,
    /// `Decrypt*`
    Decrypt,
    /// `Sign*`
    Sign,
    /// `Verify*`
    Verify,
}

impl Operation {
    /// The `CKF_*` flag a mechanism needs for this operation.
    fn flag(self) -> u64 {
        match self {
            Self::Digest => ckf::DIGEST,
            Self::Encrypt => ckf::ENCRYPT,
            Self::Decrypt => ckf::DECRYPT,
            Self::Sign => ckf::SIGN,
            Self::Verify => ckf::VERIFY,
        }
    }
}

/// One GREP11 call, as the service hands it to a unit.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum Call {
    /// `GenerateRandom`
    GenerateRandom {
        /// Bytes wanted.
        length: u64,
    },
    /// `DigestInit`, `EncryptInit`, `DecryptInit`, `SignInit`, `VerifyInit`.
    Init {
        /// Which operation.
        operation: Operation,
        /// The mechanism.
        mechanism: Mechanism,
        /// The key blob (a public key's SPKI for verification); empty for a digest.
        key: Vec<u8>,
    },
    /// `*Update`: more data.
    Update {
        /// Which operation.
        operation: Operation,
        /// The state from the last call.
        state: Vec<u8>,
        /// The data.
        data: Vec<u8>,
    },
    /// `DigestKey`: a secret key's value into a digest.
    DigestKey {
        /// The state from the last call.
        state: Vec<u8>,
        /// The key blob.
        key: Vec<u8>,
    },
    /// `*Final`, and the one-call `Digest`, `Encrypt`… (with `data`) after an `*Init`.
    Finish {
        /// Which operation.
        operation: Operation,
        /// The state from the last call.
        state: Vec<u8>,
        /// The last data (the whole data for a one-call operation).
        data: Vec<u8>,
        /// The signature to verify.
        signature: Vec<u8>,
    },
    /// `*Single`: init and the whole operation in one call, no state.
    Single {
        /// Which operation.
        operation: Operation,
        /// The mechanism.
        mechanism: Mechanism,
        /// The key blob (a public key's SPKI for verification); empty for a digest.
        key: Vec<u8>,
        /// The data.
        data: Vec<u8>,
        /// The signature to verify.
        signature: Vec<u8>,
    },
    /// `GenerateKey`
    GenerateKey {
        /// The mechanism.
        mechanism: Mechanism,
        /// The new key's template.
        template: Template,
    },
    /// `GenerateKeyPair`
    GenerateKeyPair {
        /// The mechanism.
        mechanism: Mechanism,
        /// The private key's template.
        private_template: Template,
        /// The public key's template.
        public_template: Template,
    },
    /// `GetMechanismList`
    GetMechanismList,
    /// `GetMechanismInfo`
    GetMechanismInfo {
        /// The mechanism.
        mechanism: u64,
    },
    /// `GetAttributeValue`
    GetAttributeValue {
        /// The key blob.
        object: Vec<u8>,
        /// The attributes wanted (all when empty).
        attributes: Vec<u64>,
    },
    /// `SetAttributeValue`
    SetAttributeValue {
        /// The key blob.
        object: Vec<u8>,
        /// The new values.
        attributes: Template,
    },
    /// `RewrapKeyBlob`: the blob under the master key a rotation pinned.
    RewrapKeyBlob {
        /// The key blob.
        blob: Vec<u8>,
    },
}

impl Call {
    /// The bytes the call carries (data, blobs, states, signatures, templates), to refuse an
    /// oversized call before it travels.
    pub fn payload_len(&self) -> usize {
        let template_len = |template: &Template| -> usize {
            template
                .values()
                .map(|value| match value {
                    AttrValue::Bytes(bytes) => bytes.len() + 16,
                    _ => 16,
                })
                .sum()
        };
        match self {
            Self::GenerateRandom { .. }
            | Self::GetMechanismList
            | Self::GetMechanismInfo { .. } => 0,
            Self::Init { mechanism, key, .. } => mechanism.parameter.len() + key.len(),
            Self::Update { state, data, .. } => state.len() + data.len(),
            Self::DigestKey { state, key } => state.len() + key.len(),
            Self::Finish {
                state,
                data,
                signature,
                ..
            } => state.len() + data.len() + signature.len(),
            Self::Single {
                mechanism,
                key,
                data,
                signature,
                ..
            } => mechanism.parameter.len() + key.len() + data.len() + signature.len(),
            Self::GenerateKey { template, .. } => template_len(template),
            Self::GenerateKeyPair {
                private_template,
                public_template,
                ..
            } => template_len(private_template) + template_len(public_template),
            Self::GetAttributeValue { object, attributes } => object.len() + attributes.len() * 8,
            Self::SetAttributeValue { object, attributes } => {
                object.len() + template_len(attributes)
            }
            Self::RewrapKeyBlob { blob } => blob.len(),
        }
    }
}

/// The answer to a [`Call`].
#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum Reply {
    /// Random bytes.
    Random(Vec<u8>),
    /// The state of a multi-part operation, and its output so far.
    State {
        /// The sealed state for the next call.
        state: Vec<u8>,
        /// Output of this call (always empty: output comes with the last call).
        output: Vec<u8>,
    },
    /// The result of a finished operation: digest, ciphertext, plaintext or signature; empty
    /// for a verification that succeeded.
    Output(Zeroizing<Vec<u8>>),
    /// A new key's blob and its check value (3 bytes and the key's length in bits, 4 bytes
    /// big-endian, for AES; empty otherwise).
    Key {
        /// The blob.
        blob: Vec<u8>,
        /// The check value.
        checksum: Vec<u8>,
    },
    /// A new key pair: the private key's blob and the public key's SPKI DER.
    KeyPair {
        /// The private key blob.
        private_key: Vec<u8>,
        /// The public key's `SubjectPublicKeyInfo`.
        public_key: Vec<u8>,
    },
    /// Every mechanism.
    Mechanisms(Vec<u64>),
    /// One mechanism's information.
    MechanismInfo(MechanismInfo),
    /// Attribute values.
    Attributes(Template),
    /// A new blob for the same key.
    Blob(Vec<u8>),
}

/// The key an operation uses.
#[derive(Clone, Debug, Serialize, Deserialize)]
enum OperationKey {
    /// None: a digest.
    None,
    /// A key object from a blob.
    Object(KeyObject),
    /// A public key (SPKI DER), given in the clear to verify with.
    Public(Vec<u8>),
}

/// A multi-part operation between calls; sealed into the `State` the client carries.
#[derive(Serialize, Deserialize)]
struct OperationState {
    operation: Operation,
    mechanism: Mechanism,
    key: OperationKey,
    data: Zeroizing<Vec<u8>>,
}

impl OperationState {
    fn seal(&self, sealer: &dyn Sealer) -> Ep11Result<Vec<u8>> {
        let encoded =
            Zeroizing::new(postcard::to_stdvec(self).map_err(|_| {
                Ep11Error::new(ckr::GENERAL_ERROR, "the state could not be encoded")
            })?);
        sealer.seal(Sealed::State, &encoded)
    }

    fn open(sealer: &dyn Sealer, state: &[u8], operation: Operation) -> Ep11Result<Self> {
        if state.is_empty() || state.len() > MAX_SEALED {
            return Err(Ep11Error::new(
                ckr::OPERATION_NOT_INITIALIZED,
                "no state: call the operation's Init first",
            ));
        }
        let encoded = sealer.open(Sealed::State, state)?;
        let opened: Self = postcard::from_bytes(&encoded).map_err(|_| Ep11Error::blob())?;
        if opened.operation != operation {
            return Err(Ep11Error::new(
                ckr::OPERATION_NOT_INITIALIZED,
                "the state belongs to another kind of operation",
            ));
        }
        Ok(opened)
    }

    fn append(&mut self, data: &[u8]) -> Ep11Result<()> {
        if self.data.len().saturating_add(data.len()) > MAX_DATA {
            return Err(Ep11Error::new(
                ckr::DATA_LEN_RANGE,
                format!("a multi-part operation takes at most {MAX_DATA} bytes"),
            ));
        }
        self.data.extend_from_slice(data);
        Ok(())
    }
}

/// Runs one call.
pub fn execute(sealer: &dyn Sealer, call: &Call) -> Ep11Result<Reply> {
    match call {
        Call::GenerateRandom { length } => generate_random(*length),
        Call::Init {
            operation,
            mechanism,
            key,
        } => {
            let state = init(sealer, *operation, mechanism, key)?;
            Ok(Reply::State {
                state: state.seal(sealer)?,
                output: Vec::new(),
            })
        }
        Call::Update {
            operation,
            state,
            data,
        } => {
            let mut state = OperationState::open(sealer, state, *operation)?;
            if !multi_part(state.mechanism.mechanism) {
                return Err(Ep11Error::new(
                    ckr::MECHANISM_INVALID,
                    "this mechanism is single-part only",
                ));
            }
            state.append(data)?;
            Ok(Reply::State {
                state: state.seal(sealer)?,
                output: Vec::new(),
            })
        }
        Call::DigestKey { state, key } => {
            let mut state = OperationState::open(sealer, state, Operation::Digest)?;
            let key = KeyObject::open(sealer, key)?;
            if key.ulong(cka::CLASS) != Some(cko::SECRET_KEY) {
                return Err(Ep11Error::new(
                    ckr::KEY_TYPE_INCONSISTENT,
                    "only a secret key can be digested",
                ));
            }
            state.append(&key.value)?;
            Ok(Reply::State {
                state: state.seal(sealer)?,
                output: Vec::new(),
            })
        }
        Call::Finish {
            operation,
            state,
            data,
            signature,
        } => {
            let mut state = OperationState::open(sealer, state, *operation)?;
            state.append(data)?;
            finish(&state, signature).map(Reply::Output)
        }
        Call::Single {
            operation,
            mechanism,
            key,
            data,
            signature,
        } => {
            let mut state = init(sealer, *operation, mechanism, key)?;
            state.append(data)?;
            finish(&state, signature).map(Reply::Output)
        }
        Call::GenerateKey {
            mechanism,
            template,
        } => generate_key(sealer, mechanism, template),
        Call::GenerateKeyPair {
            mechanism,
            private_template,
            public_template,
        } => generate_key_pair(sealer, mechanism, private_template, public_template),
        Call::GetMechanismList => Ok(Reply::Mechanisms(mechanism_list())),
        Call::GetMechanismInfo { mechanism } => mechanism_info(*mechanism)
            .map(Reply::MechanismInfo)
            .ok_or_else(|| unknown_mechanism(*mechanism)),
        Call::GetAttributeValue { object, attributes } => KeyObject::open(sealer, object)?
            .get_attributes(attributes)
            .map(Reply::Attributes),
        Call::SetAttributeValue { object, attributes } => KeyObject::open(sealer, object)?
            .set_attributes(attributes)?
            .seal(sealer)
            .map(Reply::Blob),
        Call::RewrapKeyBlob { blob } => {
            if !sealer.rotation_pinned() {
                return Err(Ep11Error::new(
                    ckr::FUNCTION_FAILED,
                    "no master key rotation has pinned a new master key: blobs move to the new master key between its pin and its promotion",
                ));
            }
            KeyObject::open(sealer, blob)?.seal(sealer).map(Reply::Blob)
        }
    }
}

fn unknown_mechanism(mechanism: u64) -> Ep11Error {
    Ep11Error::new(
        ckr::MECHANISM_INVALID,
        format!("mechanism 0x{mechanism:X} is not supported (see GetMechanismList)"),
    )
}

fn generate_random(length: u64) -> Ep11Result<Reply> {
    if length == 0 || length > MAX_RANDOM {
        return Err(Ep11Error::new(
            ckr::ARGUMENTS_BAD,
            format!("GenerateRandom returns 1 to {MAX_RANDOM} bytes"),
        ));
    }
    let mut bytes = vec![0u8; usize::try_from(length).unwrap_or_default()];
    getrandom::fill(&mut bytes)
        .map_err(|_| Ep11Error::new(ckr::GENERAL_ERROR, "no randomness available"))?;
    Ok(Reply::Random(bytes))
}

/// Mechanisms PKCS #11 and the GREP11 reference allow in several parts.
fn multi_part(mechanism: u64) -> bool {
    mechanism != ckm::ECDSA
}

/// Sets an operation up: the mechanism exists and does this operation, its parameter is
/// right, and the key is of the right type and allows the use.
fn init(
    sealer: &dyn Sealer,
    operation: Operation,
    mechanism: &Mechanism,
    key: &[u8],
) -> Ep11Result<OperationState> {
    let number = mechanism.mechanism;
    let info = mechanism_info(number).ok_or_else(|| unknown_mechanism(number))?;
    if info.flags & operation.flag() == 0 {
        return Err(Ep11Error::new(
            ckr::MECHANISM_INVALID,
            format!("mechanism 0x{number:X} does not do this operation"),
        ));
    }
    let wanted_parameter = match number {
        ckm::AES_CBC | ckm::AES_CBC_PAD => crypto::AES_BLOCK,
        ckm::AES_GCM => crypto::GCM_IV,
        _ => 0,
    };
    if mechanism.parameter.len() != wanted_parameter {
        return Err(Ep11Error::new(
            ckr::MECHANISM_PARAM_INVALID,
            format!(
                "mechanism 0x{number:X} takes a {wanted_parameter}-byte parameter, not {} bytes",
                mechanism.parameter.len()
            ),
        ));
    }
    let key = match operation {
        Operation::Digest => OperationKey::None,
        Operation::Verify if crypto::ecdsa_hash(number).is_some() || number == ckm::ECDSA => {
            if !crypto::is_p256_spki(key) {
                return Err(Ep11Error::new(
                    ckr::KEY_TYPE_INCONSISTENT,
                    "ECDSA verifies with a P-256 public key (SubjectPublicKeyInfo DER)",
                ));
            }
            OperationKey::Public(key.to_vec())
        }
        _ => {
            let object = KeyObject::open(sealer, key)?;
            let (class, key_type) = match number {
                ckm::AES_ECB | ckm::AES_CBC | ckm::AES_CBC_PAD | ckm::AES_GCM => {
                    (cko::SECRET_KEY, ckk::AES)
                }
                ckm::ECDSA
                | ckm::ECDSA_SHA1
                | ckm::ECDSA_SHA224
                | ckm::ECDSA_SHA256
                | ckm::ECDSA_SHA384
                | ckm::ECDSA_SHA512 => (cko::PRIVATE_KEY, ckk::EC),
                _ => (cko::SECRET_KEY, ckk::GENERIC_SECRET),
            };
            object.require_type(class, key_type)?;
            object.require(match operation {
                Operation::Encrypt => cka::ENCRYPT,
                Operation::Decrypt => cka::DECRYPT,
                Operation::Verify => cka::VERIFY,
                Operation::Sign | Operation::Digest => cka::SIGN,
            })?;
            OperationKey::Object(object)
        }
    };
    Ok(OperationState {
        operation,
        mechanism: mechanism.clone(),
        key,
        data: Zeroizing::new(Vec::new()),
    })
}

/// Computes an operation over all of its data.
fn finish(state: &OperationState, signature: &[u8]) -> Ep11Result<Zeroizing<Vec<u8>>> {
    let number = state.mechanism.mechanism;
    let data = state.data.as_slice();
    let missing = || unknown_mechanism(number);
    let secret = || match &state.key {
        OperationKey::Object(object) => Ok(object.value.as_slice()),
        _ => Err(Ep11Error::new(
            ckr::OPERATION_NOT_INITIALIZED,
            "the operation has no key",
        )),
    };
    let output = match state.operation {
        Operation::Digest => crypto::digest(number, data).ok_or_else(missing)?,
        Operation::Encrypt | Operation::Decrypt => {
            let direction = if state.operation == Operation::Encrypt {
                Direction::Encrypt
            } else {
                Direction::Decrypt
            };
            let iv = state.mechanism.parameter.as_slice();
            match number {
                ckm::AES_ECB => crypto::aes_ecb(secret()?, direction, data)?,
                ckm::AES_CBC => crypto::aes_cbc(secret()?, iv, false, direction, data)?,
                ckm::AES_CBC_PAD => crypto::aes_cbc(secret()?, iv, true, direction, data)?,
                ckm::AES_GCM => crypto::aes_gcm(secret()?, iv, direction, data)?,
                _ => return Err(missing()),
            }
        }
        Operation::Sign => match prehash(number, data)? {
            Some(prehash) => crypto::ecdsa_sign(secret()?, &prehash)?,
            None => crypto::hmac(number, secret()?, data).ok_or_else(missing)?,
        },
        Operation::Verify => {
            match (prehash(number, data)?, &state.key) {
                (Some(prehash), OperationKey::Public(spki)) => {
                    crypto::ecdsa_verify(spki, &prehash, signature)?;
                }
                (None, _) => crypto::hmac_verify(number, secret()?, data, signature)?,
                (Some(_), _) => return Err(missing()),
            }
            Vec::new()
        }
    };
    Ok(Zeroizing::new(output))
}

/// The hash an ECDSA mechanism signs: the data itself for raw `CKM_ECDSA`; `None` for the
/// other mechanisms (HMAC).
fn prehash(mechanism: u64, data: &[u8]) -> Ep11Result<Option<Vec<u8>>> {
    if mechanism == ckm::ECDSA {
        return Ok(Some(data.to_vec()));
    }
    Ok(crypto::ecdsa_hash(mechanism).and_then(|hash| crypto::digest(hash, data)))
}

/// `CKA_VALUE_LEN` of a template, within `range`.
fn value_len(template: &Template, range: std::ops::RangeInclusive<u64>) -> Ep11Result<usize> {
    let value = template.get(&cka::VALUE_LEN).ok_or_else(|| {
        Ep11Error::new(ckr::TEMPLATE_INCOMPLETE, "the template needs CKA_VALUE_LEN")
    })?;
    value
        .as_u64()
        .filter(|length| range.contains(length))
        .and_then(|length| usize::try_from(length).ok())
        .ok_or_else(|| {
            invalid_value(
                cka::VALUE_LEN,
                &format!("must be {} to {} bytes", range.start(), range.end()),
            )
        })
}

fn generate_key(
    sealer: &dyn Sealer,
    mechanism: &Mechanism,
    template: &Template,
) -> Ep11Result<Reply> {
    let symmetric = [
        cka::ENCRYPT,
        cka::DECRYPT,
        cka::WRAP,
        cka::UNWRAP,
        cka::DERIVE,
    ];
    let mac = [cka::SIGN, cka::VERIFY, cka::DERIVE];
    let (key_type, usages, length): (u64, &[u64], usize) = match mechanism.mechanism {
        ckm::AES_KEY_GEN => {
            let length = value_len(template, 16..=32)?;
            if ![16, 24, 32].contains(&length) {
                return Err(invalid_value(cka::VALUE_LEN, "must be 16, 24 or 32 bytes"));
            }
            (ckk::AES, &symmetric, length)
        }
        ckm::GENERIC_SECRET_KEY_GEN => (ckk::GENERIC_SECRET, &mac, value_len(template, 1..=256)?),
        other => {
            let message = if mechanism_info(other).is_some() {
                format!("mechanism 0x{other:X} does not generate keys")
            } else {
                return Err(unknown_mechanism(other));
            };
            return Err(Ep11Error::new(ckr::MECHANISM_INVALID, message));
        }
    };
    if !mechanism.parameter.is_empty() {
        return Err(Ep11Error::new(
            ckr::MECHANISM_PARAM_INVALID,
            "key generation takes no parameter",
        ));
    }
    let kind = ObjectKind {
        class: cko::SECRET_KEY,
        key_type,
        usages,
        parameters: &[cka::VALUE_LEN],
    };
    let mut attributes = new_object_attributes(template, &kind)?;
    attributes.insert(cka::VALUE_LEN, AttrValue::Int(ulong(length as u64)));
    let mut value = Zeroizing::new(vec![0u8; length]);
    getrandom::fill(&mut value)
        .map_err(|_| Ep11Error::new(ckr::GENERAL_ERROR, "no randomness available"))?;
    let checksum = if key_type == ckk::AES {
        let mut checksum = crypto::aes_check_value(&value)?;
        attributes.insert(cka::CHECK_VALUE, AttrValue::Bytes(checksum.clone()));
        checksum.extend_from_slice(&u32::try_from(length * 8).unwrap_or_default().to_be_bytes());
        checksum
    } else {
        Vec::new()
    };
    let blob = KeyObject { attributes, value }.seal(sealer)?;
    Ok(Reply::Key { blob, checksum })
}

fn generate_key_pair(
    sealer: &dyn Sealer,
    mechanism: &Mechanism,
    private_template: &Template,
    public_template: &Template,
) -> Ep11Result<Reply> {
    if mechanism.mechanism != ckm::EC_KEY_PAIR_GEN {
        return Err(unknown_mechanism(mechanism.mechanism));
    }
    if !mechanism.parameter.is_empty() {
        return Err(Ep11Error::new(
            ckr::MECHANISM_PARAM_INVALID,
            "key pair generation takes no parameter",
        ));
    }
    let curve = public_template
        .get(&cka::EC_PARAMS)
        .or_else(|| private_template.get(&cka::EC_PARAMS))
        .ok_or_else(|| {
            Ep11Error::new(
                ckr::TEMPLATE_INCOMPLETE,
                "the public key template needs CKA_EC_PARAMS",
            )
        })?;
    if curve != &AttrValue::Bytes(crypto::P256_PARAMS.to_vec()) {
        return Err(invalid_value(
            cka::EC_PARAMS,
            "names a curve this unit does not support (P-256: 06082A8648CE3D030107)",
        ));
    }
    // The public key leaves as its SPKI; its template is checked all the same.
    new_object_attributes(
        public_template,
        &ObjectKind {
            class: cko::PUBLIC_KEY,
            key_type: ckk::EC,
            usages: &[cka::VERIFY, cka::ENCRYPT, cka::WRAP, cka::DERIVE],
            parameters: &[cka::EC_PARAMS],
        },
    )?;
    let mut attributes = new_object_attributes(
        private_template,
        &ObjectKind {
            class: cko::PRIVATE_KEY,
            key_type: ckk::EC,
            usages: &[cka::SIGN, cka::DERIVE],
            parameters: &[cka::EC_PARAMS],
        },
    )?;
    attributes.insert(cka::EC_PARAMS, curve.clone());
    let (value, public_key) = crypto::ec_generate()?;
    let private_key = KeyObject { attributes, value }.seal(sealer)?;
    Ok(Reply::KeyPair {
        private_key,
        public_key,
    })
}

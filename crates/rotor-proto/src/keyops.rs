//! The unit's key operations for the service. Every operation is a request type tied to its
//! reply type and its name by [`UnitOp`]; the daemon dispatches on the same types, so no
//! operation name is written twice. They need no admin signatures, but only the service of the
//! unit's instance may call them (mutual TLS with its client certificate).
//!
//! Bodies are JSON, except the batch operations, which carry thousands of blobs in postcard.
//! Fields that carry key material or a DEK in the clear are `Zeroizing`: wiped when the
//! request or reply is dropped.

use rotor_crypto::Vp;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use crate::audit::{Countersign, Countersignature};
use crate::binding::{Binding, BlobBinding};
use crate::error::ErrorBody;
use crate::wire::UnitStatus;

/// How an operation's request and reply bodies are encoded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Encoding {
    /// `application/json`.
    Json,
    /// `application/x-postcard` ([`BATCH_CONTENT_TYPE`]), for batches.
    Postcard,
}

/// One key operation: its request type (`Self`), its reply type and its name, the last segment
/// of `POST /v1/keys/{name}`.
pub trait UnitOp: Serialize + DeserializeOwned + Send + Sync + 'static {
    /// What the unit answers.
    type Reply: Serialize + DeserializeOwned + Send + 'static;
    /// The operation's name on the wire.
    const NAME: &'static str;
    /// How its bodies are encoded.
    const ENCODING: Encoding = Encoding::Json;

    /// The request as an item of a [`KeyBatch`], for the operations that concurrent clients
    /// send by the thousand (wrap, unwrap, rewrap); `None` for the others.
    fn batched(&self) -> Option<BatchedKeyOp> {
        None
    }

    /// This operation's reply out of a [`KeyBatch`] item's reply; `None` if it is another kind.
    fn unbatched(reply: BatchedKeyReply) -> Option<Self::Reply> {
        let _ = reply;
        None
    }
}

/// The [`UnitOp`] methods of an operation that joins [`KeyBatch`]es as `$op`, answered by
/// `$reply`.
macro_rules! batched_as {
    ($op:ident, $reply:ident) => {
        fn batched(&self) -> Option<BatchedKeyOp> {
            Some(BatchedKeyOp::$op(self.clone()))
        }

        fn unbatched(reply: BatchedKeyReply) -> Option<Self::Reply> {
            match reply {
                BatchedKeyReply::$reply(reply) => Some(reply),
                _ => None,
            }
        }
    };
}

macro_rules! unit_ops {
    ($($request:ty => $reply:ty, $name:literal $(, $encoding:ident)? $({ $($batched:tt)* })?;)*) => {
        $(
            impl UnitOp for $request {
                type Reply = $reply;
                const NAME: &'static str = $name;
                $(const ENCODING: Encoding = Encoding::$encoding;)?
                $($($batched)*)?
            }
        )*

        /// The names of every key operation, for documentation and tests.
        pub const OPERATION_NAMES: &[&str] = &[$($name),*];
    };
}

unit_ops! {
    GenerateRequest => SealedKey, "generate";
    ImportRequest => SealedKey, "import";
    ExportRequest => Plaintext, "export";
    ImportTokenRequest => ImportTokenKeys, "import-token";
    SecureImportRequest => SealedKey, "secure-import";
    WrapRequest => Wrapped, "wrap" { batched_as!(Wrap, Wrapped); };
    UnwrapRequest => Plaintext, "unwrap" { batched_as!(Unwrap, Plaintext); };
    RewrapRequest => Wrapped, "rewrap" { batched_as!(Rewrap, Wrapped); };
    KeyBatch => KeyBatchResult, "key-batch";
    RewrapToNew => SealedKey, "rewrap-to-new";
    RewrapBatch => RewrapBatchResult, "rewrap-batch", Postcard;
    GenerateBatch => GeneratedBatch, "generate-batch", Postcard;
    FinishReencryption => UnitStatus, "finish-reencryption";
    Countersign => Countersignature, "countersign";
    ForgetKey => Forgotten, "forget";
    Grep11Request => Grep11Outcome, "grep11", Postcard;
}

/// `POST /v1/keys/grep11` (postcard body): one GREP11 call of an application of `instance`,
/// run inside the unit on its key blobs and states (docs/GREP11.md).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Grep11Request {
    /// The instance the blobs are bound to.
    pub instance: uuid::Uuid,
    /// The call.
    pub call: rotor_ep11::Call,
}

/// The answer to a [`Grep11Request`]: the call's reply, or its PKCS #11 error, which every
/// unit would answer the same (a unit that cannot serve at all refuses the request instead).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Grep11Outcome(pub Result<rotor_ep11::Reply, rotor_ep11::Ep11Error>);

/// `POST /v1/keys/rewrap-to-new`: one application-held blob rewrapped to the committed new
/// master key (GREP11's `RewrapKeyBlob`).
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(transparent)]
pub struct RewrapToNew {
    /// The blob and its binding.
    pub key: KeyRef,
}

/// Base64 (RFC 4648 §4) for byte fields, as the Key Protect API uses.
pub mod b64 {
    use base64::Engine as _;
    use base64::engine::general_purpose::STANDARD;
    use serde::{Deserialize, Deserializer, Serializer};

    /// Serializes bytes (plain or `Zeroizing`) as base64.
    pub fn serialize<S: Serializer, B: AsRef<[u8]> + ?Sized>(
        bytes: &B,
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&STANDARD.encode(bytes.as_ref()))
    }

    /// Deserializes base64 into bytes (plain or `Zeroizing`).
    pub fn deserialize<'de, D: Deserializer<'de>, T: From<Vec<u8>>>(
        deserializer: D,
    ) -> Result<T, D::Error> {
        let text = String::deserialize(deserializer)?;
        STANDARD
            .decode(text)
            .map(T::from)
            .map_err(serde::de::Error::custom)
    }
}

/// A stored root key version: its binding and blob.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyRef {
    /// What the blob is bound to.
    pub binding: Binding,
    /// The wrapped material.
    #[serde(with = "b64")]
    pub blob: Vec<u8>,
}

/// `POST /v1/keys/generate`
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GenerateRequest {
    /// The new key version's binding.
    pub binding: Binding,
    /// Material length in bytes (16, 24 or 32).
    pub length: usize,
}

/// `POST /v1/keys/import`
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ImportRequest {
    /// The new key version's binding.
    pub binding: Binding,
    /// The material.
    #[serde(with = "b64")]
    pub material: Zeroizing<Vec<u8>>,
}

/// A new blob, and the material only when the key is extractable.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct SealedKey {
    /// The blob to store.
    #[serde(with = "b64")]
    pub blob: Vec<u8>,
    /// The master key it is wrapped under.
    pub vp: Vp,
    /// The generated material, for a standard (extractable) key only.
    #[serde(default, with = "option_b64", skip_serializing_if = "Option::is_none")]
    pub material: Option<Zeroizing<Vec<u8>>>,
}

/// `POST /v1/keys/export`: the material of a standard key.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExportRequest {
    /// The key version.
    pub key: KeyRef,
}

/// Key material or a DEK, in the clear, for the one caller that asked.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Plaintext {
    /// The bytes.
    #[serde(with = "b64")]
    pub plaintext: Zeroizing<Vec<u8>>,
}

/// `POST /v1/keys/wrap`
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WrapRequest {
    /// The newest root key version.
    pub key: KeyRef,
    /// The DEK; a fresh 32-byte one is generated when absent.
    #[serde(default, with = "option_b64", skip_serializing_if = "Option::is_none")]
    pub plaintext: Option<Zeroizing<Vec<u8>>>,
    /// Additional authenticated data.
    #[serde(default)]
    pub aad: Vec<String>,
}

/// The result of a wrap.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Wrapped {
    /// The DEK ciphertext.
    #[serde(with = "b64")]
    pub ciphertext: Vec<u8>,
    /// The generated DEK, when the request brought none.
    #[serde(default, with = "option_b64", skip_serializing_if = "Option::is_none")]
    pub plaintext: Option<Zeroizing<Vec<u8>>>,
}

/// `POST /v1/keys/unwrap`
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UnwrapRequest {
    /// The root key version the ciphertext names.
    pub key: KeyRef,
    /// The DEK ciphertext.
    #[serde(with = "b64")]
    pub ciphertext: Vec<u8>,
    /// Additional authenticated data given at wrap time.
    #[serde(default)]
    pub aad: Vec<String>,
}

/// `POST /v1/keys/rewrap`: unwrap with one version, wrap with another, inside the unit.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RewrapRequest {
    /// The version the ciphertext names.
    pub from: KeyRef,
    /// The newest version.
    pub to: KeyRef,
    /// The DEK ciphertext.
    #[serde(with = "b64")]
    pub ciphertext: Vec<u8>,
    /// Additional authenticated data.
    #[serde(default)]
    pub aad: Vec<String>,
    /// Also return the DEK (an unwrap of an older version, answered with the DEK and its
    /// ciphertext under the newest version in one pass).
    #[serde(default)]
    pub reveal_plaintext: bool,
}

/// `POST /v1/keys/import-token`: a fresh RSA key pair for secure import.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ImportTokenRequest {
    /// The instance.
    pub instance: uuid::Uuid,
    /// The token's id.
    pub token: uuid::Uuid,
}

/// The public key to hand out and the private key, sealed under the master key.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ImportTokenKeys {
    /// X.509 `SubjectPublicKeyInfo` DER.
    #[serde(with = "b64")]
    pub public_key: Vec<u8>,
    /// The PKCS#8 private key wrapped under the master key.
    #[serde(with = "b64")]
    pub sealed_private_key: Vec<u8>,
}

/// `POST /v1/keys/secure-import`: key material encrypted to an import token.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SecureImportRequest {
    /// The new key version's binding.
    pub binding: Binding,
    /// The import token's id.
    pub token: uuid::Uuid,
    /// Its sealed private key.
    #[serde(with = "b64")]
    pub sealed_private_key: Vec<u8>,
    /// `RSAES_OAEP_SHA_256` or `RSAES_OAEP_SHA_1`.
    pub algorithm: String,
    /// The key material, RSA-OAEP encrypted to the token's public key.
    #[serde(with = "b64")]
    pub encrypted_material: Vec<u8>,
    /// The token's nonce.
    #[serde(with = "b64")]
    pub nonce: Vec<u8>,
    /// The nonce, AES-GCM encrypted under the key material: proof the importer holds it.
    #[serde(with = "b64")]
    pub encrypted_nonce: Vec<u8>,
    /// The AES-GCM IV of `encrypted_nonce`.
    #[serde(with = "b64")]
    pub iv: Vec<u8>,
}

/// `POST /v1/keys/rewrap-batch` (postcard body): stored blobs to rewrap to `to`, the master key
/// the unit wraps new blobs under. One round trip carries thousands of blobs.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct RewrapBatch {
    /// The target master key.
    pub to: Vp,
    /// The blobs.
    pub items: Vec<BatchItem>,
}

/// One blob of a [`RewrapBatch`].
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct BatchItem {
    /// What it is bound to.
    pub binding: BlobBinding,
    /// The blob.
    pub blob: Vec<u8>,
}

/// The answer to a [`RewrapBatch`]: per item, the rewrapped blob, or `None` if the blob does
/// not authenticate (the service reports it; nothing else can be done with it).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct RewrapBatchResult {
    /// In request order.
    pub blobs: Vec<Option<Vec<u8>>>,
}

/// `POST /v1/keys/generate-batch` (postcard body): new 256-bit root keys (version 1), each
/// wrapping one DEK, for bulk creation.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct GenerateBatch {
    /// The keys to make.
    pub items: Vec<GenerateItem>,
}

/// One key of a [`GenerateBatch`].
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct GenerateItem {
    /// The new key's binding.
    pub binding: Binding,
    /// The DEK to wrap under it (no AAD).
    pub dek: Zeroizing<Vec<u8>>,
}

/// The answer to a [`GenerateBatch`], in request order.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct GeneratedBatch {
    /// Master key the blobs are wrapped under.
    pub vp: Vp,
    /// Per key: the blob and the DEK ciphertext.
    pub keys: Vec<(Vec<u8>, Vec<u8>)>,
}

/// `POST /v1/keys/finish-reencryption`: no blob is left under the master key the instance
/// rotates away from; `to` is the one they are all under now.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FinishReencryption {
    /// The master key all key storage is wrapped under.
    pub to: Vp,
    /// The service's count of keys still under the master key rotated away from: a unit
    /// refuses anything but 0, so a service bug cannot release the rotation lock early.
    pub remaining: u64,
}

/// `POST /v1/keys/forget`: a key was deleted or purged; the unit drops every version of it
/// from its cache of unwrapped root keys. It names the key only: no blob, no material.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ForgetKey {
    /// The instance that owns the key.
    pub instance: uuid::Uuid,
    /// The key id.
    pub key: uuid::Uuid,
}

/// The answer to a [`ForgetKey`].
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Forgotten {
    /// How many unwrapped versions of the key the unit held and dropped.
    pub versions: usize,
}

/// `POST /v1/keys/key-batch`: wrap, unwrap and rewrap requests that the service's clients sent
/// at the same moment, carried to the unit in one exchange and answered item by item, as if
/// each had come alone.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyBatch {
    /// The requests, at most [`MAX_KEY_BATCH`].
    pub items: Vec<BatchedKeyOp>,
}

/// One request of a [`KeyBatch`].
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BatchedKeyOp {
    /// A wrap.
    Wrap(WrapRequest),
    /// An unwrap.
    Unwrap(UnwrapRequest),
    /// A rewrap.
    Rewrap(RewrapRequest),
}

/// One reply of a [`KeyBatchResult`].
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BatchedKeyReply {
    /// To a wrap or a rewrap.
    Wrapped(Wrapped),
    /// To an unwrap.
    Plaintext(Plaintext),
}

/// The answer to a [`KeyBatch`]: per item, in request order, its reply or the unit's refusal
/// of that item alone.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct KeyBatchResult {
    /// In request order.
    pub items: Vec<Result<BatchedKeyReply, ErrorBody>>,
}

/// The most requests in one [`KeyBatch`]: a few milliseconds of a unit's work at most.
pub const MAX_KEY_BATCH: usize = 256;

/// The most blobs or keys in one batch request (10,000 rewrap items take about 1.3 MB).
pub const MAX_BATCH: usize = 10_000;

/// Content type of batch bodies (postcard).
pub const BATCH_CONTENT_TYPE: &str = "application/x-postcard";

/// Optional base64 byte fields.
mod option_b64 {
    use base64::Engine as _;
    use base64::engine::general_purpose::STANDARD;
    use serde::{Deserialize, Deserializer, Serializer};

    pub(crate) fn serialize<S: Serializer, B: AsRef<[u8]>>(
        bytes: &Option<B>,
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        match bytes {
            Some(bytes) => serializer.serialize_str(&STANDARD.encode(bytes.as_ref())),
            None => serializer.serialize_none(),
        }
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>, T: From<Vec<u8>>>(
        deserializer: D,
    ) -> Result<Option<T>, D::Error> {
        Option::<String>::deserialize(deserializer)?
            .map(|text| {
                STANDARD
                    .decode(text)
                    .map(T::from)
                    .map_err(serde::de::Error::custom)
            })
            .transpose()
    }
}

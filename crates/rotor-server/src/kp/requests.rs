//! Request bodies, typed in the API's camelCase, and the one parser that turns serde's
//! complaints into Key Protect errors naming the field and what is wrong with it.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer};
use serde_json::error::Category;
use serde_path_to_error::{Path, Segment};
use utoipa::ToSchema;
use zeroize::Zeroizing;

use super::error::{KpError, KpResult};

/// Bytes sent as base64, decoded strictly and zeroized on drop: they may be key material.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct Base64Bytes(Zeroizing<Vec<u8>>);

impl Base64Bytes {
    /// The bytes, moved out (the unit requests own plain vectors).
    pub(super) fn into_vec(mut self) -> Vec<u8> {
        std::mem::take(&mut *self.0)
    }

    /// The bytes, still wiped on drop: for unit requests that carry key material or a DEK.
    pub(super) fn into_secret(self) -> Zeroizing<Vec<u8>> {
        self.0
    }

    pub(super) fn as_slice(&self) -> &[u8] {
        &self.0
    }
}

/// In the OpenAPI document: a non-empty string of canonical base64, as the parser accepts it.
impl utoipa::PartialSchema for Base64Bytes {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        super::field_schemas::base64_schema(None).into()
    }
}

impl ToSchema for Base64Bytes {}

impl<'de> Deserialize<'de> for Base64Bytes {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl serde::de::Visitor<'_> for Visitor {
            type Value = Base64Bytes;

            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a base64 string")
            }

            fn visit_str<E: serde::de::Error>(self, text: &str) -> Result<Base64Bytes, E> {
                let bytes = B64
                    .decode(text.trim())
                    .map_err(|_| E::custom("is not valid base64"))?;
                if bytes.is_empty() {
                    return Err(E::custom("is empty"));
                }
                Ok(Base64Bytes(Zeroizing::new(bytes)))
            }
        }
        deserializer.deserialize_str(Visitor)
    }
}

/// An integer field, also when a client spells it with a zero fraction (`4.0`): JSON Schema,
/// and so the OpenAPI document, counts that an integer.
struct IntegerVisitor<T>(std::marker::PhantomData<T>);

impl<T: TryFrom<i128>> serde::de::Visitor<'_> for IntegerVisitor<T> {
    type Value = T;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("an integer")
    }

    fn visit_i64<E: serde::de::Error>(self, value: i64) -> Result<T, E> {
        T::try_from(i128::from(value))
            .map_err(|_| E::invalid_value(serde::de::Unexpected::Signed(value), &self))
    }

    fn visit_u64<E: serde::de::Error>(self, value: u64) -> Result<T, E> {
        T::try_from(i128::from(value))
            .map_err(|_| E::invalid_value(serde::de::Unexpected::Unsigned(value), &self))
    }

    fn visit_f64<E: serde::de::Error>(self, value: f64) -> Result<T, E> {
        let unexpected = || E::invalid_type(serde::de::Unexpected::Float(value), &self);
        if value.fract() != 0.0 || value.abs() > 1e18 {
            return Err(unexpected());
        }
        // Exact: an integral float of at most 1e18 converts without loss.
        #[allow(clippy::cast_possible_truncation)]
        T::try_from(value as i128).map_err(|_| unexpected())
    }
}

fn integer<'de, D: Deserializer<'de>, T: TryFrom<i128>>(deserializer: D) -> Result<T, D::Error> {
    deserializer.deserialize_any(IntegerVisitor(std::marker::PhantomData))
}

fn optional_integer<'de, D: Deserializer<'de>, T: TryFrom<i128>>(
    deserializer: D,
) -> Result<Option<T>, D::Error> {
    struct Optional<T>(std::marker::PhantomData<T>);
    impl<'de, T: TryFrom<i128>> serde::de::Visitor<'de> for Optional<T> {
        type Value = Option<T>;

        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("an integer or null")
        }

        fn visit_none<E: serde::de::Error>(self) -> Result<Option<T>, E> {
            Ok(None)
        }

        fn visit_unit<E: serde::de::Error>(self) -> Result<Option<T>, E> {
            Ok(None)
        }

        fn visit_some<D: Deserializer<'de>>(self, deserializer: D) -> Result<Option<T>, D::Error> {
            integer(deserializer).map(Some)
        }
    }
    deserializer.deserialize_option(Optional(std::marker::PhantomData))
}

/// A collection body: `{"metadata": {...}?, "resources": [...]}`.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Collection<T> {
    metadata: Option<Metadata>,
    resources: Vec<T>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Metadata {
    collection_total: Option<u64>,
}

/// A key to create or import (`POST /keys`, `POST /keys_with_policy_overrides`).
#[derive(Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub(crate) struct KeyCreate {
    /// 2 to 90 printable characters.
    #[schema(pattern = r"^[^\x00-\x1F\x7F-\x9F]{2,90}$")]
    pub(super) name: String,
    #[schema(max_length = 240, pattern = r"^[^\x00-\x1F\x7F-\x9F]*$")]
    pub(super) description: Option<String>,
    /// `true` for a standard key, `false` (the default) for a root key.
    pub(super) extractable: Option<bool>,
    /// At most 5, each 2 to 90 letters, digits, `-` and `_`, not a UUID, unused in the instance.
    #[schema(schema_with = super::field_schemas::alias_list_schema)]
    pub(super) aliases: Option<Vec<String>>,
    /// The Go client sends `Tags`.
    #[serde(alias = "Tags")]
    #[schema(max_items = 30)]
    pub(super) tags: Option<Vec<String>>,
    /// Key material to import: plain, or encrypted to the import token with `encryptedNonce`.
    /// A root key's material is 16, 24 or 32 bytes.
    #[schema(schema_with = super::field_schemas::key_material_schema)]
    pub(super) payload: Option<Base64Bytes>,
    /// Secure import: the import token's nonce, encrypted under the material's key.
    pub(super) encrypted_nonce: Option<Base64Bytes>,
    /// Secure import: the IV of `encryptedNonce`.
    pub(super) iv: Option<Base64Bytes>,
    /// Secure import: how `payload` is encrypted to the import token (default RSAES_OAEP_SHA_256).
    #[schema(schema_with = super::field_schemas::encryption_algorithm_schema)]
    pub(super) encryption_algorithm: Option<String>,
    /// Policy overrides; the instance policies apply where absent.
    pub(super) rotation: Option<RotationOverride>,
    pub(super) dual_auth_delete: Option<DualAuthDelete>,
}

/// A rotation policy as a key carries it.
#[derive(Deserialize, ToSchema)]
pub(crate) struct RotationOverride {
    pub(super) enabled: Option<bool>,
    #[serde(default, deserialize_with = "optional_integer")]
    #[schema(minimum = 1, maximum = 12)]
    pub(super) interval_month: Option<i64>,
}

#[derive(Deserialize, ToSchema)]
pub(crate) struct DualAuthDelete {
    pub(super) enabled: bool,
}

/// `wrap`: no plaintext asks the unit to generate a 32-byte DEK.
#[derive(Deserialize, Default, ToSchema)]
#[serde(rename_all = "camelCase")]
pub(crate) struct WrapBody {
    pub(super) plaintext: Option<Base64Bytes>,
    #[schema(schema_with = super::field_schemas::aad_schema)]
    pub(super) aad: Option<Vec<String>>,
}

/// `unwrap` and `rewrap`.
#[derive(Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub(crate) struct UnwrapBody {
    pub(super) ciphertext: Base64Bytes,
    #[schema(schema_with = super::field_schemas::aad_schema)]
    pub(super) aad: Option<Vec<String>>,
}

/// `rotate`: new key material for an imported key, nothing for a generated one.
/// In the OpenAPI document: only `payload`, as the encrypted fields are refused on rotate.
#[derive(Deserialize, Default, ToSchema)]
#[serde(rename_all = "camelCase")]
pub(crate) struct RotateBody {
    /// An imported key's new material (required for it); a generated key takes none.
    #[schema(schema_with = super::field_schemas::key_material_schema)]
    pub(super) payload: Option<Base64Bytes>,
    #[schema(ignore)]
    pub(super) encrypted_nonce: Option<Base64Bytes>,
    #[schema(ignore)]
    pub(super) iv: Option<Base64Bytes>,
    #[schema(ignore)]
    pub(super) encryption_algorithm: Option<String>,
}

/// `PATCH /keys/{id}`: move to another key ring.
#[derive(Deserialize, ToSchema)]
pub(crate) struct PatchKeyBody {
    /// The Go client sends `KeyRingID`.
    #[serde(rename = "keyRingID", alias = "KeyRingID")]
    #[schema(pattern = "^[A-Za-z0-9-]{2,100}$")]
    pub(super) key_ring_id: String,
}

/// One resource of `PUT /keys/{id}/policies`.
#[derive(Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub(crate) struct KeyPolicy {
    pub(super) rotation: Option<RotationPolicy>,
    pub(super) dual_auth_delete: Option<DualAuthDelete>,
}

#[derive(Deserialize, ToSchema)]
pub(crate) struct RotationPolicy {
    pub(super) enabled: Option<bool>,
    #[serde(deserialize_with = "integer")]
    #[schema(minimum = 1, maximum = 12)]
    pub(super) interval_month: i64,
}

/// One resource of `PUT /instance/policies` (snake case, as Key Protect spells it).
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct InstancePolicy {
    /// One of the instance policy types (the OpenAPI document lists them with their
    /// attributes).
    pub(super) policy_type: String,
    pub(super) policy_data: InstancePolicyData,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct InstancePolicyData {
    pub(super) enabled: bool,
    /// Per policy type; checked by `instance_policies`.
    pub(super) attributes: Option<serde_json::Value>,
}

/// `POST /import_token`.
#[derive(Deserialize, Default, ToSchema)]
#[serde(rename_all = "camelCase")]
pub(crate) struct ImportTokenBody {
    /// Seconds.
    #[serde(default, deserialize_with = "optional_integer")]
    #[schema(minimum = 300, maximum = 86400)]
    pub(super) expiration: Option<u64>,
    #[serde(default, deserialize_with = "optional_integer")]
    #[schema(minimum = 1, maximum = 500)]
    pub(super) max_allowed_retrievals: Option<u64>,
}

/// `POST /v1/blobs/{op}`.
/// In the OpenAPI document each operation names the fields it needs (see `openapi.rs`).
#[derive(Deserialize, Default, ToSchema)]
pub(crate) struct BlobBody {
    /// A blob from `generate` or `rewrap`.
    #[schema(schema_with = super::field_schemas::rotor_blob_schema)]
    pub(super) blob: Option<Base64Bytes>,
    pub(super) plaintext: Option<Base64Bytes>,
    pub(super) ciphertext: Option<Base64Bytes>,
    #[schema(schema_with = super::field_schemas::aad_schema)]
    pub(super) aad: Option<Vec<String>>,
}

/// `POST /v1/instances/{id}/keys/batch`.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct BatchBody {
    #[schema(min_items = 1, max_items = 10000)]
    pub(super) keys: Vec<BatchKey>,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct BatchKey {
    #[schema(pattern = r"^[^\x00-\x1F\x7F-\x9F]{2,90}$")]
    pub(super) name: String,
    pub(super) dek: Base64Bytes,
}

/// A JSON body the route needs.
pub(super) fn parse_body<T: DeserializeOwned>(body: &[u8]) -> KpResult<T> {
    let body = body.trim_ascii();
    if body.is_empty() {
        return Err(KpError::NoBody);
    }
    // serde would read an array as a struct's fields in order (`[600, 1]`); every body is an
    // object (or `null` where it is optional).
    if body.starts_with(b"[") {
        return Err(KpError::BadBody("the body is not a JSON object".to_owned()));
    }
    let mut json = serde_json::Deserializer::from_slice(body);
    let value = serde_path_to_error::deserialize(&mut json)
        .map_err(|err| body_error(err.path(), err.inner()))?;
    json.end().map_err(|err| {
        KpError::BadBody(format!(
            "the body is not valid JSON: {}",
            without_position(&err)
        ))
    })?;
    Ok(value)
}

/// A JSON body the route may go without: nothing or `null` is the default (Go clients send
/// `null` for body-less actions).
pub(super) fn parse_optional_body<T: DeserializeOwned + Default>(body: &[u8]) -> KpResult<T> {
    if body.trim_ascii().is_empty() {
        return Ok(T::default());
    }
    Ok(parse_body::<Option<T>>(body)?.unwrap_or_default())
}

/// A collection body's resources, after checking that `collectionTotal` counts them.
pub(super) fn parse_collection<T: DeserializeOwned>(body: &[u8]) -> KpResult<Vec<T>> {
    let collection: Collection<T> = parse_body(body)?;
    let declared = collection.metadata.and_then(|m| m.collection_total);
    match declared {
        Some(declared) if usize::try_from(declared).ok() != Some(collection.resources.len()) => {
            Err(KpError::CollectionTotalMismatch {
                declared,
                resources: collection.resources.len(),
            })
        }
        _ if collection.resources.is_empty() => Err(KpError::BadBody(
            "the body lists no resource in `resources`".to_owned(),
        )),
        _ => Ok(collection.resources),
    }
}

/// The single resource of a collection body.
pub(super) fn parse_single<T: DeserializeOwned>(body: &[u8]) -> KpResult<T> {
    let mut resources = parse_collection::<T>(body)?;
    match (resources.pop(), resources.is_empty()) {
        (Some(resource), true) => Ok(resource),
        _ => Err(KpError::BadBody(
            "the body must hold exactly one resource in `resources`".to_owned(),
        )),
    }
}

/// The Key Protect error for a body serde refused: malformed JSON is a bad body; a value
/// that does not fit is an invalid field, named as the API names it.
fn body_error(path: &Path, err: &serde_json::Error) -> KpError {
    let message = without_position(err);
    if err.classify() != Category::Data {
        return KpError::BadBody(format!("the body is not valid JSON: {message}"));
    }
    let field = field_name(path);
    // serde reports a missing field at its parent, naming it in the message.
    if let Some(missing) = message
        .strip_prefix("missing field `")
        .and_then(|rest| rest.strip_suffix('`'))
    {
        let name = if field.is_empty() {
            missing.to_owned()
        } else {
            format!("{field}.{missing}")
        };
        return KpError::field(name, "is required");
    }
    // No field (or an array where an object belongs): the body's shape is wrong.
    if field.is_empty() || field.starts_with('[') {
        return KpError::BadBody(format!("the body does not fit this request: {message}"));
    }
    if message.starts_with("is ") {
        KpError::field(field, message)
    } else {
        KpError::field(field, format!("is invalid: {message}"))
    }
}

/// The field's name inside its resource: `resources[0].rotation.interval_month` is
/// `rotation.interval_month`.
fn field_name(path: &Path) -> String {
    let mut segments = path.iter().peekable();
    if let Some(Segment::Map { key }) = segments.peek()
        && key == "resources"
    {
        segments.next();
        if let Some(Segment::Seq { .. }) = segments.peek() {
            segments.next();
        }
    }
    let mut name = String::new();
    for segment in segments {
        match segment {
            Segment::Seq { index } => name.push_str(&format!("[{index}]")),
            Segment::Map { key } => {
                if !name.is_empty() {
                    name.push('.');
                }
                name.push_str(key);
            }
            Segment::Enum { .. } | Segment::Unknown => {}
        }
    }
    name
}

/// serde_json's message without its " at line L column C" suffix.
fn without_position(err: &serde_json::Error) -> String {
    let text = err.to_string();
    let suffix = format!(" at line {} column {}", err.line(), err.column());
    text.strip_suffix(&suffix).unwrap_or(&text).to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn field_error(error: KpError) -> (String, String) {
        match error {
            KpError::InvalidField { field, problem } => (field, problem),
            other => panic!("expected a field error, got {other:?}"),
        }
    }

    #[test]
    fn a_key_resource_parses_in_camel_case() {
        let body = br#"{"metadata": {"collectionType": "application/vnd.ibm.kms.key+json", "collectionTotal": 1},
            "resources": [{"type": "application/vnd.ibm.kms.key+json", "name": "k1",
              "extractable": true, "payload": "AAECAw==", "encryptedNonce": "BA==", "iv": "BQ==",
              "encryptionAlgorithm": "RSAES_OAEP_SHA_1", "Tags": ["a"], "aliases": ["k-one"],
              "expirationDate": "2030-01-01T00:00:00Z",
              "rotation": {"enabled": true, "interval_month": 3}, "dualAuthDelete": {"enabled": true}}]}"#;
        let key: KeyCreate = parse_single(body).unwrap();
        assert_eq!(key.name, "k1");
        assert_eq!(key.extractable, Some(true));
        assert_eq!(key.payload.unwrap().as_slice(), [0, 1, 2, 3]);
        assert_eq!(key.encrypted_nonce.unwrap().as_slice(), [4]);
        assert_eq!(key.iv.unwrap().as_slice(), [5]);
        assert_eq!(
            key.encryption_algorithm.as_deref(),
            Some("RSAES_OAEP_SHA_1")
        );
        assert_eq!(key.tags, Some(vec!["a".to_owned()]));
        assert_eq!(key.aliases, Some(vec!["k-one".to_owned()]));
        let rotation = key.rotation.unwrap();
        assert_eq!(
            (rotation.enabled, rotation.interval_month),
            (Some(true), Some(3))
        );
        assert!(key.dual_auth_delete.unwrap().enabled);
    }

    #[test]
    fn nulls_and_absent_fields_are_the_same() {
        let key: KeyCreate = parse_single(
            br#"{"resources": [{"name": "k1", "extractable": null, "payload": null}]}"#,
        )
        .unwrap();
        assert_eq!(key.extractable, None);
        assert!(key.payload.is_none());
    }

    #[test]
    fn bad_base64_names_its_field() {
        let error =
            parse_single::<KeyCreate>(br#"{"resources": [{"name": "k", "payload": "***"}]}"#)
                .err()
                .unwrap();
        assert_eq!(
            field_error(error),
            ("payload".to_owned(), "is not valid base64".to_owned())
        );
        let error = parse_body::<WrapBody>(br#"{"plaintext": ""}"#)
            .err()
            .unwrap();
        assert_eq!(
            field_error(error),
            ("plaintext".to_owned(), "is empty".to_owned())
        );
    }

    #[test]
    fn a_value_of_the_wrong_type_names_its_field_and_what_was_expected() {
        let (field, problem) = field_error(
            parse_body::<WrapBody>(br#"{"plaintext": 5}"#)
                .err()
                .unwrap(),
        );
        assert_eq!(field, "plaintext");
        assert!(problem.contains("expected a base64 string"), "{problem}");
        let (field, problem) = field_error(
            parse_collection::<KeyPolicy>(
                br#"{"resources": [{"rotation": {"interval_month": "x"}}]}"#,
            )
            .err()
            .unwrap(),
        );
        assert_eq!(field, "rotation.interval_month");
        assert!(
            problem.starts_with("is invalid: invalid type: string"),
            "{problem}"
        );
        let (field, _) = field_error(parse_body::<WrapBody>(br#"{"aad": [1]}"#).err().unwrap());
        assert_eq!(field, "aad[0]");
    }

    #[test]
    fn a_missing_field_is_required() {
        let error = parse_body::<UnwrapBody>(b"{}").err().unwrap();
        assert_eq!(
            field_error(error),
            ("ciphertext".to_owned(), "is required".to_owned())
        );
        let error = parse_collection::<InstancePolicy>(
            br#"{"resources": [{"policy_type": "dualAuthDelete", "policy_data": {}}]}"#,
        )
        .err()
        .unwrap();
        assert_eq!(
            field_error(error),
            ("policy_data.enabled".to_owned(), "is required".to_owned())
        );
    }

    #[test]
    fn integers_may_carry_a_zero_fraction() {
        let policies = parse_collection::<KeyPolicy>(
            br#"{"resources": [{"rotation": {"interval_month": 4.0}}]}"#,
        )
        .unwrap();
        assert_eq!(policies[0].rotation.as_ref().unwrap().interval_month, 4);
        let body: ImportTokenBody =
            parse_body(br#"{"expiration": 600.0, "maxAllowedRetrievals": null}"#).unwrap();
        assert_eq!(
            (body.expiration, body.max_allowed_retrievals),
            (Some(600), None)
        );
        let (field, _) = field_error(
            parse_body::<ImportTokenBody>(br#"{"expiration": 600.5}"#)
                .err()
                .unwrap(),
        );
        assert_eq!(field, "expiration");
        let (field, _) = field_error(
            parse_body::<ImportTokenBody>(br#"{"expiration": -1}"#)
                .err()
                .unwrap(),
        );
        assert_eq!(field, "expiration");
    }

    #[test]
    fn the_go_clients_spellings_are_accepted() {
        let patch: PatchKeyBody = parse_body(br#"{"KeyRingID": "ring-1"}"#).unwrap();
        assert_eq!(patch.key_ring_id, "ring-1");
        let patch: PatchKeyBody = parse_body(br#"{"keyRingID": "ring-2"}"#).unwrap();
        assert_eq!(patch.key_ring_id, "ring-2");
    }

    #[test]
    fn malformed_json_and_empty_bodies_are_bad_bodies() {
        assert!(matches!(
            parse_body::<WrapBody>(b"{"),
            Err(KpError::BadBody(_))
        ));
        assert!(matches!(
            parse_body::<WrapBody>(b"{} {}"),
            Err(KpError::BadBody(_))
        ));
        assert!(matches!(
            parse_body::<WrapBody>(b"[1]"),
            Err(KpError::BadBody(_))
        ));
        assert!(matches!(
            parse_optional_body::<ImportTokenBody>(b" [null, null]"),
            Err(KpError::BadBody(_))
        ));
        assert!(matches!(
            parse_body::<UnwrapBody>(b"  "),
            Err(KpError::NoBody)
        ));
        let wrap: WrapBody = parse_optional_body(b"").unwrap();
        assert!(wrap.plaintext.is_none());
        let rotate: RotateBody = parse_optional_body(b"null").unwrap();
        assert!(rotate.payload.is_none());
    }

    #[test]
    fn the_collection_total_must_count_the_resources() {
        let body = br#"{"metadata": {"collectionTotal": 2}, "resources": [{"name": "k"}]}"#;
        assert!(matches!(
            parse_single::<KeyCreate>(body),
            Err(KpError::CollectionTotalMismatch {
                declared: 2,
                resources: 1
            })
        ));
        assert!(matches!(
            parse_collection::<KeyPolicy>(br#"{"resources": []}"#),
            Err(KpError::BadBody(_))
        ));
        assert!(matches!(
            parse_single::<KeyCreate>(br#"{"resources": [{"name": "a"}, {"name": "b"}]}"#),
            Err(KpError::BadBody(_))
        ));
    }

    #[test]
    fn a_base64_fields_value_never_appears_in_its_error() {
        let body = br#"{"resources": [{"name": "k", "payload": "secret-material!"}]}"#;
        let error = parse_single::<KeyCreate>(body).err().unwrap();
        let reason = error.reason();
        assert!(!reason.message.contains("secret"), "{}", reason.message);
    }
}

//! The JSON Schemas of request fields that a derive cannot describe (strict base64, key
//! material lengths, rotor blobs, alias lists), named by `#[schema(schema_with = …)]` in
//! [`super::requests`].

use serde_json::{Value, json};
use utoipa::openapi::schema::{
    ArrayBuilder, KnownFormat, ObjectBuilder, SchemaFormat, SchemaType, Type,
};

/// Canonical, non-empty base64 (the decoder is strict: no stray bits in the last character).
const BASE64: &str = "^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{4}|[A-Za-z0-9+/][AQgw]==|[A-Za-z0-9+/]{2}[AEIMQUYcgkosw048]=)$";
/// Base64 of 16, 24 or 32 bytes (a root key's material).
const KEY_MATERIAL: &str = "^(?:[A-Za-z0-9+/]{20}[A-Za-z0-9+/][AQgw]==|[A-Za-z0-9+/]{32}|[A-Za-z0-9+/]{40}[A-Za-z0-9+/]{2}[AEIMQUYcgkosw048]=)$";
/// Base64 of a rotor blob: `ab1` (`YWIx`), then the blob's id and its wrapped key.
/// (Described by unpadded lengths only, which keeps it simple to generate from.)
const ROTOR_BLOB: &str = "^YWIx[A-Za-z0-9+/]{20}(?:[A-Za-z0-9+/]{4})+$";

/// A string, or `null` where `nullable` (an `Option` field: null is the same as absent).
fn string_or_null(nullable: bool) -> ObjectBuilder {
    let types = if nullable {
        vec![Type::String, Type::Null]
    } else {
        vec![Type::String]
    };
    ObjectBuilder::new().schema_type(SchemaType::from_iter(types))
}

fn string_pattern(pattern: &str, description: &str) -> ObjectBuilder {
    string_or_null(false)
        .format(Some(SchemaFormat::KnownFormat(KnownFormat::Byte)))
        .pattern(Some(pattern))
        .description(Some(description))
}

/// A base64 field (see `kp::requests::Base64Bytes`).
pub(crate) fn base64_schema(description: Option<&str>) -> ObjectBuilder {
    string_pattern(
        BASE64,
        description.unwrap_or("base64 (standard alphabet, padded)"),
    )
}

/// `payload` of a key to import or rotate.
pub(crate) fn key_material_schema() -> ObjectBuilder {
    string_pattern(
        KEY_MATERIAL,
        "base64 key material: 16, 24 or 32 bytes for a root key",
    )
    .schema_type(SchemaType::from_iter([Type::String, Type::Null]))
}

/// `blob` of `/v1/blobs/{op}`.
pub(crate) fn rotor_blob_schema() -> ObjectBuilder {
    string_or_null(true)
        .pattern(Some(ROTOR_BLOB))
        .description(Some("a blob returned by generate or rewrap (base64)"))
}

/// `encryptionAlgorithm` of a secure import.
pub(crate) fn encryption_algorithm_schema() -> ObjectBuilder {
    string_or_null(true).enum_values(Some([
        json!("RSAES_OAEP_SHA_256"),
        json!("RSAES_OAEP_SHA_1"),
        Value::Null,
    ]))
}

/// `aliases` of a key to create.
pub(crate) fn alias_list_schema() -> ArrayBuilder {
    ArrayBuilder::new()
        .schema_type(SchemaType::from_iter([Type::Array, Type::Null]))
        .items(
            ObjectBuilder::new()
                .schema_type(Type::String)
                .pattern(Some("^[A-Za-z0-9_-]{2,90}$")),
        )
        .max_items(Some(5))
        .unique_items(true)
}

/// Additional authenticated data: strings (Key Protect allows 255 characters each; rotor does
/// not enforce that).
pub(crate) fn aad_schema() -> ArrayBuilder {
    ArrayBuilder::new()
        .schema_type(SchemaType::from_iter([Type::Array, Type::Null]))
        .items(ObjectBuilder::new().schema_type(Type::String))
}

//! `/openapi.json`: every route this service serves, with its headers, parameters and body
//! schemas, as an OpenAPI 3.1 document.
//!
//! Request bodies are the handlers' own types (`kp::requests`, `#[derive(ToSchema)]`).
//! Responses that the handlers build with `serde_json::json!` are described by the small
//! mirror types below; the schemathesis run in `tests/python/test_schemathesis.py` checks every
//! response of every route against them.

use serde_json::{Map, Value, json};
use utoipa::openapi::schema::{
    ArrayBuilder, KnownFormat, ObjectBuilder, SchemaFormat, SchemaType, Type,
};
use utoipa::{OpenApi, ToSchema};

use crate::kp::requests::{
    BatchBody, BlobBody, ImportTokenBody, InstancePolicy, KeyCreate, KeyPolicy, PatchKeyBody,
    RotateBody, UnwrapBody, WrapBody,
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

// ---- Envelopes of request bodies ----------------------------------------------------------

/// `metadata` of a request collection holding one resource.
#[derive(ToSchema)]
#[serde(rename_all = "camelCase")]
#[allow(dead_code)]
struct SingleMetadata {
    /// Ignored (clients send the resources' media type).
    collection_type: Option<Value>,
    /// The number of resources: 1.
    #[schema(minimum = 1, maximum = 1)]
    collection_total: Option<u64>,
}

/// A collection of one key to create or import.
#[derive(ToSchema)]
#[allow(dead_code)]
struct KeyCreateCollection {
    metadata: Option<SingleMetadata>,
    #[schema(min_items = 1, max_items = 1)]
    resources: Vec<KeyCreate>,
}

/// `metadata` of a request collection of several resources. `collectionTotal`, when sent, must
/// count the resources (400 COLLECTION_TOTAL_MISMATCH_ERR otherwise); JSON Schema cannot say so,
/// so this shape leaves it out.
#[derive(ToSchema)]
#[serde(rename_all = "camelCase")]
#[allow(dead_code)]
struct ListMetadata {
    /// Ignored (clients send the resources' media type).
    collection_type: Option<Value>,
}

/// Key policies to set.
#[derive(ToSchema)]
#[allow(dead_code)]
struct KeyPolicyCollection {
    metadata: Option<ListMetadata>,
    #[schema(min_items = 1)]
    resources: Vec<KeyPolicy>,
}

/// Instance policies to set.
#[derive(ToSchema)]
#[allow(dead_code)]
struct InstancePolicyCollection {
    metadata: Option<ListMetadata>,
    #[schema(min_items = 1)]
    resources: Vec<InstancePolicy>,
}

/// `POST /identity/token`, form encoded.
#[derive(ToSchema)]
#[allow(dead_code)]
struct TokenForm {
    /// `urn:ibm:params:oauth:grant-type:apikey`
    #[schema(pattern = "^urn:ibm:params:oauth:grant-type:apikey$")]
    grant_type: String,
    #[schema(min_length = 1)]
    apikey: String,
    /// Sent by IBM's SDKs (`cloud_iam`); ignored.
    response_type: Option<String>,
}

/// `POST /v1/instances/{instance}/rotation`.
#[derive(ToSchema)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
struct BeginRotation {
    /// VP of the master key to rewrap from (64 hex characters).
    #[schema(pattern = "^[0-9a-f]{64}$")]
    from_vp: String,
    /// VP of the master key to rewrap to.
    #[schema(pattern = "^[0-9a-f]{64}$")]
    to_vp: String,
}

// ---- Response shapes ----------------------------------------------------------------------

#[derive(ToSchema)]
#[serde(rename_all = "camelCase")]
#[allow(dead_code)]
struct CollectionMetadata {
    collection_type: String,
    collection_total: u64,
    /// With `?totalCount=true`.
    total_count: Option<u64>,
}

#[derive(ToSchema)]
#[allow(dead_code)]
struct VersionRef {
    id: Option<uuid::Uuid>,
}

#[derive(ToSchema)]
#[serde(rename_all = "camelCase")]
#[allow(dead_code)]
struct VersionInfo {
    id: uuid::Uuid,
    creation_date: String,
}

#[derive(ToSchema)]
#[serde(rename_all = "camelCase")]
#[allow(dead_code)]
struct DualAuthState {
    enabled: bool,
    key_set_for_deletion: Option<bool>,
    auth_expiration: Option<String>,
}

/// A key as Key Protect shows it (`kp::wire::key_json`).
#[derive(ToSchema)]
#[serde(rename_all = "camelCase")]
#[allow(dead_code)]
struct Key {
    #[schema(rename = "type")]
    kind: String,
    id: uuid::Uuid,
    name: String,
    description: String,
    /// 1 active, 2 suspended, 3 deactivated, 5 destroyed.
    state: u8,
    extractable: bool,
    imported: bool,
    crn: String,
    #[schema(rename = "keyRingID")]
    key_ring_id: String,
    algorithm_type: String,
    created_by: String,
    creation_date: String,
    last_update_date: String,
    last_rotate_date: Option<String>,
    deleted: bool,
    dual_auth_delete: DualAuthState,
    aliases: Vec<String>,
    labels: Vec<String>,
    key_version: Option<VersionInfo>,
    deletion_date: Option<String>,
    deleted_by: Option<String>,
    restore_expiration_date: Option<String>,
    purge_allowed_from: Option<String>,
    purge_allowed: Option<bool>,
    /// Standard keys' material, base64.
    payload: Option<String>,
}

#[derive(ToSchema)]
#[allow(dead_code)]
struct KeyCollection {
    metadata: CollectionMetadata,
    resources: Vec<Key>,
}

#[derive(ToSchema)]
#[allow(dead_code)]
struct VersionCollection {
    metadata: CollectionMetadata,
    resources: Vec<VersionInfo>,
}

#[derive(ToSchema)]
#[serde(rename_all = "camelCase")]
#[allow(dead_code)]
struct WrapResponse {
    ciphertext: String,
    key_version: VersionRef,
    /// The generated DEK, when none was given.
    plaintext: Option<String>,
}

#[derive(ToSchema)]
#[serde(rename_all = "camelCase")]
#[allow(dead_code)]
struct UnwrapResponse {
    plaintext: String,
    key_version: VersionRef,
    /// With an older version: the DEK rewrapped under the newest.
    ciphertext: Option<String>,
    rewrapped_key_version: Option<VersionRef>,
}

#[derive(ToSchema)]
#[serde(rename_all = "camelCase")]
#[allow(dead_code)]
struct RewrapResponse {
    ciphertext: String,
    key_version: VersionRef,
    rewrapped_key_version: VersionRef,
}

#[derive(ToSchema)]
#[allow(dead_code)]
struct RotationState {
    enabled: bool,
    interval_month: u8,
}

#[derive(ToSchema)]
#[allow(dead_code)]
struct EnabledState {
    enabled: bool,
}

#[derive(ToSchema)]
#[serde(rename_all = "camelCase")]
#[allow(dead_code)]
struct KeyPolicyResource {
    #[schema(rename = "type")]
    kind: String,
    crn: String,
    created_by: String,
    creation_date: String,
    last_update_date: String,
    updated_by: String,
    rotation: Option<RotationState>,
    dual_auth_delete: Option<EnabledState>,
}

#[derive(ToSchema)]
#[allow(dead_code)]
struct KeyPolicyList {
    metadata: CollectionMetadata,
    /// Absent when the key has no policy (metadata only, as Key Protect answers).
    resources: Option<Vec<KeyPolicyResource>>,
}

#[derive(ToSchema)]
#[allow(dead_code)]
struct InstancePolicyResource {
    policy_type: String,
    policy_data: Value,
}

#[derive(ToSchema)]
#[allow(dead_code)]
struct InstancePolicyList {
    metadata: CollectionMetadata,
    /// Absent when no policy is set (metadata only, as Key Protect answers).
    resources: Option<Vec<InstancePolicyResource>>,
}

#[derive(ToSchema)]
#[serde(rename_all = "camelCase")]
#[allow(dead_code)]
struct Alias {
    key_id: uuid::Uuid,
    alias: String,
    creation_date: String,
    created_by: String,
}

#[derive(ToSchema)]
#[allow(dead_code)]
struct AliasCollection {
    metadata: CollectionMetadata,
    resources: Vec<Alias>,
}

#[derive(ToSchema)]
#[serde(rename_all = "camelCase")]
#[allow(dead_code)]
struct KeyRing {
    id: String,
    creation_date: String,
    created_by: String,
}

#[derive(ToSchema)]
#[allow(dead_code)]
struct KeyRingCollection {
    metadata: CollectionMetadata,
    resources: Vec<KeyRing>,
}

#[derive(ToSchema)]
#[allow(dead_code)]
struct RegistrationCollection {
    metadata: CollectionMetadata,
    /// Always empty: rotor has no registrations.
    #[schema(max_items = 0)]
    resources: Vec<Value>,
}

#[derive(ToSchema)]
#[serde(rename_all = "camelCase")]
#[allow(dead_code)]
struct ImportToken {
    creation_date: String,
    expiration_date: String,
    max_allowed_retrievals: u32,
    remaining_retrievals: u32,
    /// GET only: base64 of the PEM public key.
    payload: Option<String>,
    /// GET only: base64 nonce to encrypt for the import.
    nonce: Option<String>,
}

#[derive(ToSchema)]
#[allow(dead_code)]
struct BlobResponse {
    blob: Option<String>,
    vp: Option<String>,
    ciphertext: Option<String>,
    plaintext: Option<String>,
}

#[derive(ToSchema)]
#[allow(dead_code)]
struct BatchKeyCreated {
    id: uuid::Uuid,
    ciphertext: String,
}

#[derive(ToSchema)]
#[allow(dead_code)]
struct BatchResponse {
    keys: Vec<BatchKeyCreated>,
}

#[derive(ToSchema)]
#[allow(dead_code)]
struct ErrorTarget {
    #[schema(rename = "type")]
    kind: String,
    name: String,
}

#[derive(ToSchema)]
#[serde(rename_all = "camelCase")]
#[allow(dead_code)]
struct ErrorReason {
    code: String,
    message: String,
    status: u16,
    more_info: String,
    target: Option<ErrorTarget>,
}

#[derive(ToSchema)]
#[serde(rename_all = "camelCase")]
#[allow(dead_code)]
struct ErrorResource {
    error_msg: String,
    reasons: Vec<ErrorReason>,
}

/// Key Protect's error body (`kp::error`).
#[derive(ToSchema)]
#[allow(dead_code)]
struct ErrorCollection {
    metadata: CollectionMetadata,
    resources: Vec<ErrorResource>,
}

/// IAM's token answer (`iam::TokenResponse`).
#[derive(ToSchema)]
#[allow(dead_code)]
struct TokenResponse {
    access_token: String,
    refresh_token: String,
    token_type: String,
    expires_in: u64,
    expiration: u64,
}

/// IAM's error body.
#[derive(ToSchema)]
#[serde(rename_all = "camelCase")]
#[allow(dead_code)]
struct IamError {
    error_code: String,
    error_message: String,
}

/// The admin routes' error body (`api::ApiError`).
#[derive(ToSchema)]
#[allow(dead_code)]
struct AdminError {
    code: String,
    message: String,
}

#[derive(ToSchema)]
#[allow(dead_code)]
struct MasterKeyCount {
    vp: String,
    key_versions: u64,
}

#[derive(ToSchema)]
#[allow(dead_code)]
struct KeystoreCounts {
    instance: uuid::Uuid,
    master_keys: Vec<MasterKeyCount>,
}

#[derive(ToSchema)]
#[allow(dead_code)]
struct InstanceList {
    instances: Vec<Value>,
}

/// The rotation journal (`rotation::Journal`), `null` if there never was a rotation.
#[derive(ToSchema)]
#[allow(dead_code)]
struct RotationReply {
    rotation: Option<Value>,
}

#[derive(OpenApi)]
#[openapi(components(schemas(
    KeyCreateCollection,
    KeyPolicyCollection,
    InstancePolicyCollection,
    WrapBody,
    UnwrapBody,
    RotateBody,
    PatchKeyBody,
    ImportTokenBody,
    BlobBody,
    BatchBody,
    TokenForm,
    BeginRotation,
    KeyCollection,
    VersionCollection,
    WrapResponse,
    UnwrapResponse,
    RewrapResponse,
    KeyPolicyList,
    InstancePolicyList,
    AliasCollection,
    KeyRingCollection,
    RegistrationCollection,
    ImportToken,
    BlobResponse,
    BatchResponse,
    ErrorCollection,
    TokenResponse,
    IamError,
    AdminError,
    KeystoreCounts,
    InstanceList,
    RotationReply,
)))]
struct Components;

// ---- Routes -------------------------------------------------------------------------------

/// Which caller headers a route takes.
#[derive(Clone, Copy, PartialEq)]
enum Headers {
    /// None: `/identity/token`.
    Public,
    /// Key Protect: bearer token, `Bluemix-Instance` required, `X-Kms-Key-Ring`,
    /// `Correlation-Id`, and `Prefer` on POST and DELETE.
    Kp,
    /// rotor's own routes with the instance in the path: bearer token only.
    Admin,
}

/// One operation.
struct Route {
    method: &'static str,
    path: &'static str,
    summary: &'static str,
    role: &'static str,
    headers: Headers,
    /// Query parameters: (name, schema).
    query: &'static [(&'static str, &'static str)],
    /// Schema of the JSON body, and whether it is required.
    body: Option<(&'static str, bool)>,
    /// (status, schema of the JSON answer or "" for none).
    responses: &'static [(u16, &'static str)],
}

const KEY_LIST_QUERY: &[(&str, &str)] = &[
    ("limit", "limit"),
    ("offset", "offset"),
    ("state", "state"),
    ("extractable", "boolean"),
    ("totalCount", "total_count"),
];

const fn kp(
    method: &'static str,
    path: &'static str,
    summary: &'static str,
    role: &'static str,
    body: Option<(&'static str, bool)>,
    responses: &'static [(u16, &'static str)],
) -> Route {
    Route {
        method,
        path,
        summary,
        role,
        headers: Headers::Kp,
        query: &[],
        body,
        responses,
    }
}

const fn admin(
    method: &'static str,
    path: &'static str,
    summary: &'static str,
    body: Option<(&'static str, bool)>,
    responses: &'static [(u16, &'static str)],
) -> Route {
    Route {
        method,
        path,
        summary,
        role: "Crypto Unit Administrator",
        headers: Headers::Admin,
        query: &[],
        body,
        responses,
    }
}

const KEY: &[(u16, &str)] = &[(200, "KeyCollection")];
const NONE: &[(u16, &str)] = &[(204, "")];

/// Every route the service serves.
fn routes() -> Vec<Route> {
    vec![
        Route {
            method: "post",
            path: "/identity/token",
            summary: "Exchange an API key for a bearer token (grant type apikey)",
            role: "",
            headers: Headers::Public,
            query: &[],
            body: Some(("TokenForm", true)),
            responses: &[(200, "TokenResponse")],
        },
        Route {
            query: KEY_LIST_QUERY,
            ..kp(
                "head",
                "/api/v2/keys",
                "Number of keys (Key-Total header)",
                "Reader",
                None,
                &[(200, "")],
            )
        },
        Route {
            query: KEY_LIST_QUERY,
            ..kp("get", "/api/v2/keys", "List keys", "Reader", None, KEY)
        },
        kp(
            "post",
            "/api/v2/keys",
            "Create or import a root or standard key",
            "Writer",
            Some(("KeyCreateCollection", true)),
            &[(201, "KeyCollection")],
        ),
        kp(
            "post",
            "/api/v2/keys_with_policy_overrides",
            "Create a key with its own policies",
            "Writer",
            Some(("KeyCreateCollection", true)),
            &[(201, "KeyCollection")],
        ),
        kp(
            "get",
            "/api/v2/keys/{id}",
            "Get a key (by id or alias); standard keys include their payload",
            "Reader",
            None,
            KEY,
        ),
        Route {
            query: &[("action", "legacy_action")],
            ..kp(
                "post",
                "/api/v2/keys/{id}",
                "Key action given as ?action= (deprecated; the actions with a body have their own routes)",
                "Writer",
                None,
                NONE,
            )
        },
        kp(
            "patch",
            "/api/v2/keys/{id}",
            "Move a key to another key ring",
            "Manager",
            Some(("PatchKeyBody", true)),
            KEY,
        ),
        kp(
            "delete",
            "/api/v2/keys/{id}",
            "Delete a key (dual authorization when enabled)",
            "Manager",
            None,
            &[(200, "KeyCollection"), (204, "")],
        ),
        kp(
            "get",
            "/api/v2/keys/{id}/metadata",
            "Key metadata",
            "Reader",
            None,
            KEY,
        ),
        kp(
            "get",
            "/api/v2/keys/{id}/versions",
            "Key versions, newest first (all of them: no paging yet)",
            "Reader",
            None,
            &[(200, "VersionCollection")],
        ),
        kp(
            "delete",
            "/api/v2/keys/{id}/purge",
            "Purge a deleted key",
            "Manager",
            None,
            KEY,
        ),
        kp(
            "post",
            "/api/v2/keys/{id}/restore",
            "Restore a deleted key",
            "Manager",
            None,
            &[(201, "KeyCollection")],
        ),
        kp(
            "post",
            "/api/v2/keys/{id}/actions/wrap",
            "Wrap a DEK (none given: generate one)",
            "Reader",
            Some(("WrapBody", false)),
            &[(200, "WrapResponse")],
        ),
        kp(
            "post",
            "/api/v2/keys/{id}/actions/unwrap",
            "Unwrap a DEK",
            "Reader",
            Some(("UnwrapBody", true)),
            &[(200, "UnwrapResponse")],
        ),
        kp(
            "post",
            "/api/v2/keys/{id}/actions/rewrap",
            "Rewrap a DEK under the newest key version",
            "Reader",
            Some(("UnwrapBody", true)),
            &[(200, "RewrapResponse")],
        ),
        kp(
            "post",
            "/api/v2/keys/{id}/actions/rotate",
            "Rotate a root key (an imported one with new material)",
            "Writer",
            Some(("RotateBody", false)),
            NONE,
        ),
        kp(
            "post",
            "/api/v2/keys/{id}/actions/enable",
            "Enable a key",
            "Writer",
            None,
            NONE,
        ),
        kp(
            "post",
            "/api/v2/keys/{id}/actions/disable",
            "Disable a key",
            "Writer",
            None,
            NONE,
        ),
        kp(
            "post",
            "/api/v2/keys/{id}/actions/sync",
            "Sync associated resources (nothing to do in rotor)",
            "Writer",
            None,
            NONE,
        ),
        kp(
            "post",
            "/api/v2/keys/{id}/actions/setKeyForDeletion",
            "Authorize deletion of a dual-authorization key",
            "Writer",
            None,
            NONE,
        ),
        kp(
            "post",
            "/api/v2/keys/{id}/actions/unsetKeyForDeletion",
            "Withdraw the authorization to delete",
            "Writer",
            None,
            NONE,
        ),
        kp(
            "get",
            "/api/v2/keys/{id}/policies",
            "Key policies",
            "Reader",
            None,
            &[(200, "KeyPolicyList")],
        ),
        kp(
            "put",
            "/api/v2/keys/{id}/policies",
            "Set key policies (rotation, dualAuthDelete)",
            "Manager",
            Some(("KeyPolicyCollection", true)),
            &[(200, "KeyPolicyList")],
        ),
        kp(
            "post",
            "/api/v2/keys/{id}/aliases/{alias}",
            "Add an alias",
            "Writer",
            None,
            &[(201, "AliasCollection")],
        ),
        kp(
            "delete",
            "/api/v2/keys/{id}/aliases/{alias}",
            "Remove an alias",
            "Writer",
            None,
            NONE,
        ),
        kp(
            "get",
            "/api/v2/keys/{id}/registrations",
            "Registrations of a key (none in rotor)",
            "Reader",
            None,
            &[(200, "RegistrationCollection")],
        ),
        kp(
            "get",
            "/api/v2/keys/registrations",
            "Registrations of all keys (none in rotor)",
            "Reader",
            None,
            &[(200, "RegistrationCollection")],
        ),
        kp(
            "get",
            "/api/v2/key_rings",
            "List key rings",
            "Reader",
            None,
            &[(200, "KeyRingCollection")],
        ),
        kp(
            "post",
            "/api/v2/key_rings/{key_ring_id}",
            "Create a key ring",
            "Manager",
            None,
            &[(201, "")],
        ),
        kp(
            "delete",
            "/api/v2/key_rings/{key_ring_id}",
            "Delete an empty key ring",
            "Manager",
            None,
            NONE,
        ),
        kp(
            "get",
            "/api/v2/instance/policies",
            "Instance policies",
            "Manager",
            None,
            &[(200, "InstancePolicyList")],
        ),
        kp(
            "put",
            "/api/v2/instance/policies",
            "Set instance policies",
            "Manager",
            Some(("InstancePolicyCollection", true)),
            NONE,
        ),
        kp(
            "post",
            "/api/v2/import_token",
            "Create the instance's import token (RSA-4096, made in a unit)",
            "Manager",
            Some(("ImportTokenBody", false)),
            &[(201, "ImportToken")],
        ),
        kp(
            "get",
            "/api/v2/import_token",
            "Retrieve the import token's public key and nonce",
            "Writer",
            None,
            &[(200, "ImportToken")],
        ),
        kp(
            "post",
            "/v1/blobs/generate",
            "Application-held blobs: generate a key, wrapped by the master key",
            "Writer",
            Some(("BlobGenerate", false)),
            &[(200, "BlobResponse")],
        ),
        kp(
            "post",
            "/v1/blobs/wrap",
            "Application-held blobs: wrap data under a blob's key",
            "Writer",
            Some(("BlobWrap", true)),
            &[(200, "BlobResponse")],
        ),
        kp(
            "post",
            "/v1/blobs/unwrap",
            "Application-held blobs: unwrap data under a blob's key",
            "Writer",
            Some(("BlobUnwrap", true)),
            &[(200, "BlobResponse")],
        ),
        kp(
            "post",
            "/v1/blobs/rewrap",
            "Application-held blobs: rewrap a blob to the committed new master key",
            "Writer",
            Some(("BlobRewrap", true)),
            &[(200, "BlobResponse")],
        ),
        Route {
            role: "Writer",
            ..admin(
                "post",
                "/v1/instances/{instance}/keys/batch",
                "Create up to 10,000 root keys, each wrapping a given DEK",
                Some(("BatchBody", true)),
                &[(201, "BatchResponse")],
            )
        },
        admin(
            "get",
            "/v1/instances",
            "Instances and their crypto units",
            None,
            &[(200, "InstanceList")],
        ),
        admin(
            "get",
            "/v1/instances/{instance}/keystore",
            "Key versions per master key VP",
            None,
            &[(200, "KeystoreCounts")],
        ),
        Route {
            query: &[("challenge", "challenge")],
            ..admin(
                "get",
                "/v1/instances/{instance}/units/{unit}/status",
                "Relay: a unit's signed status, echoing the challenge",
                None,
                &[(200, "object")],
            )
        },
        admin(
            "post",
            "/v1/instances/{instance}/units/{unit}/command",
            "Relay: a signed admin command (see docs/FORMATS.md)",
            Some(("object", true)),
            &[(200, "object")],
        ),
        admin(
            "get",
            "/v1/instances/{instance}/rotation",
            "The master key rotation journal with live progress",
            None,
            &[(200, "RotationReply")],
        ),
        admin(
            "post",
            "/v1/instances/{instance}/rotation",
            "Start or resume reencryption; every unit pinned",
            Some(("BeginRotation", true)),
            &[(200, "RotationReply")],
        ),
        admin(
            "post",
            "/v1/instances/{instance}/rotation/abort",
            "Rewrap key storage back, once every unit accepted the abort",
            None,
            &[(200, "RotationReply")],
        ),
        admin(
            "post",
            "/v1/instances/{instance}/rotation/complete",
            "Close the rotation once every unit is promoted",
            None,
            &[(200, "RotationReply")],
        ),
    ]
}

/// The media type of an answer: Key Protect's collections (its errors included) are
/// `application/vnd.ibm.collection+json`, flat bodies `application/json`.
fn media_type(schema: &str) -> &'static str {
    if schema.ends_with("Collection") || (schema.ends_with("List") && schema != "InstanceList") {
        crate::kp::COLLECTION_MEDIA_TYPE
    } else {
        "application/json"
    }
}

fn schema_ref(name: &str) -> Value {
    match name {
        "object" => json!({"type": "object"}),
        _ => json!({"$ref": format!("#/components/schemas/{name}")}),
    }
}

/// A query parameter's schema.
fn query_schema(kind: &str) -> Value {
    match kind {
        "limit" => json!({"type": "integer", "minimum": 0, "maximum": 5000}),
        "offset" => json!({"type": "integer", "minimum": 0, "maximum": 4_294_967_295_u64}),
        "state" => json!({"type": "string", "pattern": "^(?:[01235](?:,[01235])*)?$"}),
        "boolean" => json!({"type": "boolean"}),
        "total_count" => {
            json!({"type": "string", "description": "`true` adds metadata.totalCount; anything else does not"})
        }
        "challenge" => json!({"type": "string", "pattern": "^(?:[0-9a-fA-F]{2}){1,64}$"}),
        "legacy_action" => json!({"type": "string", "enum": [
            "enable", "disable", "sync", "setKeyForDeletion", "unsetKeyForDeletion"
        ]}),
        _ => json!({"type": "string"}),
    }
}

fn path_parameter(name: &str) -> Value {
    let schema = match name {
        "instance" => json!({"type": "string", "format": "uuid"}),
        "alias" => json!({"type": "string", "pattern": "^[A-Za-z0-9_-]{2,90}$"}),
        "key_ring_id" => json!({"type": "string", "pattern": "^[A-Za-z0-9-]{2,100}$"}),
        _ => json!({"type": "string", "minLength": 1}),
    };
    let description = match name {
        "id" => "a key's id or alias",
        "instance" => "the instance id",
        "unit" => "a unit id",
        _ => "",
    };
    json!({"name": name, "in": "path", "required": true, "description": description, "schema": schema})
}

fn header(name: &str, required: bool, description: &str, schema: Value) -> Value {
    json!({"name": name, "in": "header", "required": required, "description": description, "schema": schema})
}

fn operation(route: &Route) -> Value {
    let mut parameters: Vec<Value> = route
        .path
        .split('/')
        .filter_map(|s| s.strip_prefix('{').and_then(|s| s.strip_suffix('}')))
        .map(path_parameter)
        .collect();
    for (name, kind) in route.query {
        parameters.push(json!({"name": name, "in": "query", "required": matches!(*name, "action" | "challenge"), "schema": query_schema(kind)}));
    }
    if route.headers == Headers::Kp {
        parameters.push(header(
            "Bluemix-Instance",
            true,
            "the instance id",
            json!({"type": "string", "format": "uuid"}),
        ));
        parameters.push(header(
            "X-Kms-Key-Ring",
            false,
            "create: the key ring of the new key (default `default`, which must exist); list: a \
             filter; elsewhere tolerated and ignored",
            json!({"type": "string"}),
        ));
        if matches!(route.method, "post" | "delete") {
            parameters.push(header(
                "Prefer",
                false,
                "`return=minimal` or `return=representation`; other values are ignored",
                json!({"type": "string"}),
            ));
        }
    }
    if route.headers != Headers::Public {
        parameters.push(header(
            "Correlation-Id",
            false,
            "a v4 UUID identifying the request (not validated)",
            json!({"type": "string"}),
        ));
    }
    let mut responses = Map::new();
    for (status, schema) in route.responses {
        let mut response = json!({"description": "success"});
        if !schema.is_empty() {
            response["content"] = json!({media_type(schema): {"schema": schema_ref(schema)}});
        }
        if route.method == "head" {
            response["headers"] =
                json!({"Key-Total": {"schema": {"type": "integer", "minimum": 0}}});
        }
        responses.insert(status.to_string(), response);
    }
    let error = match route.headers {
        Headers::Public => "IamError",
        Headers::Kp => "ErrorCollection",
        Headers::Admin if route.role == "Writer" => "ErrorCollection",
        Headers::Admin => "object",
    };
    responses.insert(
        "default".to_owned(),
        json!({"description": "an error", "content": {media_type(error): {"schema": schema_ref(error)}}}),
    );
    let mut operation = json!({
        "summary": route.summary,
        "operationId": format!("{}{}", route.method, route.path.replace(['/', '{', '}'], "_")),
        "parameters": parameters,
        "responses": responses,
    });
    if let Some((schema, required)) = route.body {
        let media = if route.headers == Headers::Public {
            "application/x-www-form-urlencoded"
        } else {
            "application/json"
        };
        // An optional JSON body may also be `null` (the Go client sends it).
        let schema = if required {
            schema_ref(schema)
        } else {
            json!({"oneOf": [schema_ref(schema), {"type": "null"}]})
        };
        operation["requestBody"] =
            json!({"required": required, "content": {media: {"schema": schema}}});
    }
    if !route.role.is_empty() {
        operation["security"] = json!([{"bearer": []}]);
        operation["x-rotor-role"] = json!(route.role);
    }
    operation
}

/// What the derived schemas cannot say by themselves.
fn refine(schemas: &mut Map<String, Value>) {
    // A secure import needs payload, encryptedNonce and iv together; a plain one has neither of
    // the other two.
    if let Some(key) = schemas.get_mut("KeyCreate") {
        key["anyOf"] = json!([
            {"properties": {"encryptedNonce": false, "iv": false, "encryptionAlgorithm": false}},
            {
                "required": ["payload", "encryptedNonce", "iv"],
                "properties": {
                    "payload": {"type": "string"},
                    "encryptedNonce": {"type": "string"},
                    "iv": {"type": "string"},
                },
            },
        ]);
    }
    // An instance policy's attributes depend on its type (the handler checks them the same way,
    // in `kp/instance_policies.rs`).
    if let Some(policy) = schemas.get_mut("InstancePolicy") {
        let of_type = |kind: &str, attributes: Value, required: bool| {
            let mut data = json!({
                "type": "object",
                "properties": {
                    "enabled": {"type": "boolean"},
                    "attributes": {"oneOf": [{"type": "null"}, attributes]},
                },
                "required": ["enabled"],
                "additionalProperties": false,
            });
            if required {
                // Needed to enable the policy; a disabled one may leave them out or empty.
                data["properties"]["attributes"] = json!({"oneOf": [
                    {"type": "null"},
                    {"type": "object", "maxProperties": 0},
                    attributes,
                ]});
                data["anyOf"] = json!([
                    {"properties": {"enabled": {"const": false}}},
                    {"required": ["attributes"], "properties": {"attributes": attributes}},
                ]);
            }
            json!({
                "type": "object",
                "properties": {
                    "policy_type": {"type": "string", "enum": [kind]},
                    "policy_data": data,
                },
                "required": ["policy_type", "policy_data"],
            })
        };
        let none = json!({"oneOf": [{"type": "null"}, {"type": "object", "maxProperties": 0}]});
        let flags = |names: &[&str]| {
            let properties: Map<String, Value> = names
                .iter()
                .map(|name| ((*name).to_owned(), json!({"type": "boolean"})))
                .collect();
            json!({"type": "object", "properties": properties, "additionalProperties": false})
        };
        let branches: Vec<Value> = crate::kp::instance_policy_type_names()
            .map(|kind| {
                let (attributes, required) = match kind {
                    "allowedNetwork" => (json!({
                        "type": "object",
                        "properties": {"allowed_network": {"enum": ["public-and-private", "private-only"]}},
                        "required": ["allowed_network"],
                        "additionalProperties": false,
                    }), true),
                    "allowedIP" => (json!({
                        "type": "object",
                        "properties": {"allowed_ip": {
                            "type": "array",
                            "minItems": 1,
                            "items": {"type": "string", "pattern": r"^\d{1,3}(\.\d{1,3}){3}/\d{1,2}$"},
                        }},
                        "required": ["allowed_ip"],
                        "additionalProperties": false,
                    }), true),
                    "keyCreateImportAccess" => (flags(&[
                        "create_root_key",
                        "create_standard_key",
                        "import_root_key",
                        "import_standard_key",
                        "enforce_token",
                    ]), false),
                    "rotation" => (json!({
                        "type": "object",
                        "properties": {"interval_month": {"type": "integer", "minimum": 1, "maximum": 12}},
                        "required": ["interval_month"],
                        "additionalProperties": false,
                    }), true),
                    // dualAuthDelete, metrics: no attributes.
                    _ => (none.clone(), false),
                };
                of_type(kind, attributes, required)
            })
            .collect();
        *policy = json!({ "oneOf": branches });
    }
    // A key policy resource sets at least one policy.
    if let Some(policy) = schemas.get_mut("KeyPolicy") {
        policy["anyOf"] = json!([
            {"required": ["rotation"], "properties": {"rotation": {"type": "object"}}},
            {"required": ["dualAuthDelete"], "properties": {"dualAuthDelete": {"type": "object"}}},
        ]);
    }
    // Each blob operation names the fields it reads.
    let Some(base) = schemas.get("BlobBody").cloned() else {
        return;
    };
    let blob = |required: &[&str], fields: &[&str]| {
        let mut schema = base.clone();
        if let Some(properties) = schema["properties"].as_object_mut() {
            properties.retain(|name, _| fields.contains(&name.as_str()));
        }
        // A required field must not be null either.
        for name in required {
            let property = &mut schema["properties"][*name];
            let not_null = property["oneOf"]
                .as_array()
                .and_then(|branches| branches.iter().find(|b| b["type"] != "null").cloned());
            if let Some(not_null) = not_null {
                *property = not_null;
            }
            if let Some(types) = property.get_mut("type").and_then(Value::as_array_mut) {
                types.retain(|t| t != "null");
            }
        }
        schema["required"] = json!(required);
        schema
    };
    schemas.insert("BlobGenerate".to_owned(), blob(&[], &[]));
    schemas.insert(
        "BlobWrap".to_owned(),
        blob(&["blob"], &["blob", "plaintext", "aad"]),
    );
    schemas.insert(
        "BlobUnwrap".to_owned(),
        blob(&["blob", "ciphertext"], &["blob", "ciphertext", "aad"]),
    );
    schemas.insert("BlobRewrap".to_owned(), blob(&["blob"], &["blob"]));
}

/// Links from the keys that `POST /api/v2/keys` creates to every operation on one key, so that
/// clients (and schemathesis' stateful phase) know where its id goes.
fn link_created_keys(paths: &mut Map<String, Value>) {
    let mut links = Map::new();
    for (path, item) in paths.iter() {
        if !path.starts_with("/api/v2/keys/{id}") || path.contains("{alias}") {
            continue;
        }
        for operation in item.as_object().into_iter().flat_map(|o| o.values()) {
            if let Some(id) = operation["operationId"].as_str() {
                links.insert(
                    id.to_owned(),
                    json!({"operationId": id, "parameters": {"id": "$response.body#/resources/0/id"}}),
                );
            }
        }
    }
    for path in ["/api/v2/keys", "/api/v2/keys_with_policy_overrides"] {
        if let Some(created) = paths
            .get_mut(path)
            .and_then(|item| item.get_mut("post"))
            .and_then(|post| post["responses"].get_mut("201"))
        {
            created["links"] = Value::Object(links.clone());
        }
    }
}

/// The document.
pub(crate) fn document() -> Value {
    let mut doc = serde_json::to_value(Components::openapi()).unwrap_or_else(|_| json!({}));
    let mut paths = Map::new();
    for route in routes() {
        let entry = paths
            .entry(route.path.to_owned())
            .or_insert_with(|| json!({}));
        entry[route.method] = operation(&route);
    }
    doc["info"] = json!({
        "title": "rotor",
        "version": env!("CARGO_PKG_VERSION"),
        "description": "Key Protect API v2 compatible key service with crypto units, and rotor's own routes"
    });
    link_created_keys(&mut paths);
    doc["paths"] = Value::Object(paths);
    if let Some(schemas) = doc["components"]["schemas"].as_object_mut() {
        refine(schemas);
    }
    doc["components"]["securitySchemes"] =
        json!({"bearer": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"}});
    doc
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every `$ref` names a schema of the document.
    #[test]
    fn every_reference_resolves() {
        let doc = document();
        let text = doc.to_string();
        let schemas = doc["components"]["schemas"].as_object().unwrap();
        for part in text.split("\"#/components/schemas/").skip(1) {
            let name = part.split('"').next().unwrap();
            assert!(schemas.contains_key(name), "{name} is not defined");
        }
    }

    /// The request bodies come from the handlers' types: a field of `KeyCreate` shows.
    #[test]
    fn request_bodies_are_derived_from_the_handlers_types() {
        let doc = document();
        let key = &doc["components"]["schemas"]["KeyCreate"];
        assert_eq!(key["required"], json!(["name"]));
        assert!(key["properties"]["encryptedNonce"].is_object());
        // One alternative per instance policy type the handler takes, in its order.
        let kinds: Vec<Value> = doc["components"]["schemas"]["InstancePolicy"]["oneOf"]
            .as_array()
            .unwrap()
            .iter()
            .map(|choice| choice["properties"]["policy_type"]["enum"][0].clone())
            .collect();
        let expected: Vec<Value> = crate::kp::instance_policy_type_names()
            .map(|k| json!(k))
            .collect();
        assert_eq!(kinds, expected);
        let rotate = &doc["components"]["schemas"]["RotateBody"]["properties"];
        assert!(rotate.get("iv").is_none(), "{rotate}");
    }

    /// Key Protect routes require `Bluemix-Instance` and name the bearer scheme.
    #[test]
    fn key_protect_routes_need_the_instance_header() {
        let doc = document();
        let wrap = &doc["paths"]["/api/v2/keys/{id}/actions/wrap"]["post"];
        let instance = wrap["parameters"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["name"] == "Bluemix-Instance")
            .unwrap();
        assert_eq!(instance["required"], true);
        assert_eq!(wrap["security"], json!([{"bearer": []}]));
        assert_eq!(
            doc["components"]["securitySchemes"]["bearer"]["scheme"],
            "bearer"
        );
    }
}

//! Schema helpers for the request types, and mirrors of the responses built with `json!`.

use super::*;

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
    /// Hold the rotation before promotion, so applications can rewrap their own blobs
    /// (recorded in the journal; default false).
    #[serde(default)]
    hold_before_promote: bool,
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
pub(super) struct Components;

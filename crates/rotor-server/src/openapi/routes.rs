//! Every operation the service serves: path, role, headers, query, body and answers.

#[derive(Clone, Copy, PartialEq)]
pub(super) enum Headers {
    /// None: `/identity/token`.
    Public,
    /// Key Protect: bearer token, `Bluemix-Instance` required, `X-Kms-Key-Ring`,
    /// `Correlation-Id`, and `Prefer` on POST and DELETE.
    Kp,
    /// rotor's own routes with the instance in the path: bearer token only.
    Admin,
}

/// One operation.
pub(super) struct Route {
    pub(super) method: &'static str,
    pub(super) path: &'static str,
    pub(super) summary: &'static str,
    pub(super) role: &'static str,
    pub(super) headers: Headers,
    /// Query parameters: (name, schema).
    pub(super) query: &'static [(&'static str, &'static str)],
    /// Schema of the JSON body, and whether it is required.
    pub(super) body: Option<(&'static str, bool)>,
    /// (status, schema of the JSON answer or "" for none).
    pub(super) responses: &'static [(u16, &'static str)],
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
pub(super) fn routes() -> Vec<Route> {
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
            "Application-held blobs: rewrap a blob to the new master key a rotation pinned",
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

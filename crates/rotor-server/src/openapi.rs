//! `/openapi.json`: the routes this service serves, as an OpenAPI 3.0 document.

use serde_json::{Map, Value, json};

/// (method, path, summary, role) of every route.
const ROUTES: &[(&str, &str, &str, &str)] = &[
    (
        "post",
        "/identity/token",
        "Exchange an API key for a bearer token (grant type apikey)",
        "",
    ),
    (
        "head",
        "/api/v2/keys",
        "Number of keys (Key-Total header)",
        "Reader",
    ),
    (
        "get",
        "/api/v2/keys",
        "List keys (limit, offset, state, extractable, totalCount)",
        "Reader",
    ),
    (
        "post",
        "/api/v2/keys",
        "Create or import a root or standard key",
        "Writer",
    ),
    (
        "post",
        "/api/v2/keys_with_policy_overrides",
        "Create a key with its own policies",
        "Writer",
    ),
    (
        "get",
        "/api/v2/keys/{id}",
        "Get a key (by id or alias); standard keys include their payload",
        "Reader",
    ),
    (
        "post",
        "/api/v2/keys/{id}",
        "Key action given as ?action=",
        "Reader",
    ),
    (
        "patch",
        "/api/v2/keys/{id}",
        "Move a key to another key ring",
        "Manager",
    ),
    (
        "delete",
        "/api/v2/keys/{id}",
        "Delete a key (dual authorization when enabled)",
        "Manager",
    ),
    (
        "get",
        "/api/v2/keys/{id}/metadata",
        "Key metadata",
        "Reader",
    ),
    (
        "get",
        "/api/v2/keys/{id}/versions",
        "Key versions, newest first",
        "Reader",
    ),
    (
        "delete",
        "/api/v2/keys/{id}/purge",
        "Purge a deleted key",
        "Manager",
    ),
    (
        "post",
        "/api/v2/keys/{id}/restore",
        "Restore a deleted key",
        "Manager",
    ),
    (
        "post",
        "/api/v2/keys/{id}/actions/{action}",
        "wrap, unwrap, rewrap (Reader); rotate, enable, disable, sync (Writer); setKeyForDeletion, unsetKeyForDeletion (Manager)",
        "Reader",
    ),
    (
        "get",
        "/api/v2/keys/{id}/policies",
        "Key policies",
        "Reader",
    ),
    (
        "put",
        "/api/v2/keys/{id}/policies",
        "Set key policies (rotation, dualAuthDelete)",
        "Manager",
    ),
    (
        "post",
        "/api/v2/keys/{id}/aliases/{alias}",
        "Add an alias",
        "Writer",
    ),
    (
        "delete",
        "/api/v2/keys/{id}/aliases/{alias}",
        "Remove an alias",
        "Writer",
    ),
    (
        "get",
        "/api/v2/keys/{id}/registrations",
        "Registrations of a key (none in rotor)",
        "Reader",
    ),
    (
        "get",
        "/api/v2/keys/registrations",
        "Registrations of all keys (none in rotor)",
        "Reader",
    ),
    ("get", "/api/v2/key_rings", "List key rings", "Reader"),
    (
        "post",
        "/api/v2/key_rings/{id}",
        "Create a key ring",
        "Manager",
    ),
    (
        "delete",
        "/api/v2/key_rings/{id}",
        "Delete an empty key ring",
        "Manager",
    ),
    (
        "get",
        "/api/v2/instance/policies",
        "Instance policies",
        "Manager",
    ),
    (
        "put",
        "/api/v2/instance/policies",
        "Set instance policies (dualAuthDelete)",
        "Manager",
    ),
    (
        "post",
        "/api/v2/import_token",
        "Create the instance's import token (RSA-4096, made in a unit)",
        "Manager",
    ),
    (
        "get",
        "/api/v2/import_token",
        "Retrieve the import token's public key and nonce",
        "Writer",
    ),
    (
        "get",
        "/v1/instances",
        "Instances and their crypto units",
        "Crypto Unit Administrator",
    ),
    (
        "get",
        "/v1/instances/{instance}/keystore",
        "Key versions per master key VP",
        "Crypto Unit Administrator",
    ),
    (
        "get",
        "/v1/instances/{instance}/units/{unit}/status",
        "Relay: a unit's signed status",
        "Crypto Unit Administrator",
    ),
    (
        "post",
        "/v1/instances/{instance}/units/{unit}/command",
        "Relay: a signed admin command",
        "Crypto Unit Administrator",
    ),
    (
        "get",
        "/v1/instances/{instance}/rotation",
        "The master key rotation journal with live progress",
        "Crypto Unit Administrator",
    ),
    (
        "post",
        "/v1/instances/{instance}/rotation",
        "Start or resume reencryption {from_vp, to_vp}; every unit pinned",
        "Crypto Unit Administrator",
    ),
    (
        "post",
        "/v1/instances/{instance}/rotation/abort",
        "Rewrap key storage back, once every unit accepted the abort",
        "Crypto Unit Administrator",
    ),
    (
        "post",
        "/v1/instances/{instance}/rotation/complete",
        "Close the rotation once every unit is promoted",
        "Crypto Unit Administrator",
    ),
    (
        "post",
        "/v1/instances/{instance}/keys/batch",
        "Create up to 10,000 root keys, each wrapping a given DEK",
        "Writer",
    ),
    (
        "post",
        "/v1/blobs/{op}",
        "Application-held blobs: generate, wrap, unwrap, rewrap to the committed new master key",
        "Writer",
    ),
];

/// The document.
pub(crate) fn document() -> Value {
    let mut paths = Map::new();
    for (method, path, summary, role) in ROUTES {
        let mut parameters = Vec::new();
        for segment in path.split('/') {
            if let Some(name) = segment.strip_prefix('{').and_then(|s| s.strip_suffix('}')) {
                parameters.push(json!({"name": name, "in": "path", "required": true, "schema": {"type": "string"}}));
            }
        }
        if path.starts_with("/api/v2") || path.starts_with("/v1/blobs") {
            parameters.push(json!({"name": "bluemix-instance", "in": "header", "required": true, "schema": {"type": "string", "format": "uuid"}}));
        }
        let mut operation = json!({
            "summary": summary,
            "parameters": parameters,
            "responses": {"default": {"description": "See the Key Protect API v2"}},
        });
        if !role.is_empty() {
            operation["security"] = json!([{"bearer": []}]);
            operation["x-rotor-role"] = json!(role);
        }
        let entry = paths.entry((*path).to_owned()).or_insert_with(|| json!({}));
        entry[*method] = operation;
    }
    json!({
        "openapi": "3.0.3",
        "info": {"title": "rotor", "version": env!("CARGO_PKG_VERSION"), "description": "Key Protect API v2 compatible key service with crypto units"},
        "paths": paths,
        "components": {"securitySchemes": {"bearer": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"}}},
    })
}

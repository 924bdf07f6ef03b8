//! `/openapi.json`: every route this service serves, with its headers, parameters and body
//! schemas, as an OpenAPI 3.1 document.
//!
//! Request bodies are the handlers' own types (`kp::requests`, `#[derive(ToSchema)]`).
//! Responses that the handlers build with `serde_json::json!` are described by the small
//! mirror types below; the schemathesis run in `tests/python/test_schemathesis.py` checks every
//! response of every route against them.
//!
//! The parts: [`schemas`] (the schema helpers the request types use, and the response mirrors)
//! and [`routes`] (the table of every operation); here the document is put together.

use serde_json::{Map, Value, json};
use utoipa::{OpenApi, ToSchema};

use crate::kp::requests::{
    BatchBody, BlobBody, ImportTokenBody, InstancePolicy, KeyCreate, KeyPolicy, PatchKeyBody,
    RotateBody, UnwrapBody, WrapBody,
};

mod routes;
mod schemas;

use routes::{Headers, Route, routes};
use schemas::Components;

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
            "an id for the request (a v4 UUID in Key Protect), returned on the response and in the logs; up to 64 characters of `[A-Za-z0-9._-]`, else a fresh UUID is used",
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

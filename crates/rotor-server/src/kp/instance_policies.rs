//! Instance policies: `dualAuthDelete`, `allowedNetwork`, `allowedIP`, `keyCreateImportAccess`,
//! `metrics` and `rotation`, each validated by its type, stored once per instance, and
//! enforced where a self-hosted service can: `dualAuthDelete` on new keys,
//! `keyCreateImportAccess` on create and import, `allowedIP` on the client address.
//! `allowedNetwork` (rotor has one endpoint, not a public and a private one) and `metrics`
//! (rotor has no IBM Cloud Monitoring) are stored and returned, not enforced. `rotation` is the
//! instance's default rotation interval, stored and returned.

use std::collections::BTreeMap;
use std::net::SocketAddr;

use axum::body::Bytes;
use axum::extract::{ConnectInfo, Query, Request, State};
use axum::http::{Extensions, HeaderMap, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use rotor_store::{InstancePolicies as StoredPolicies, InstancePolicyRecord, StoreError};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use uuid::Uuid;

use rotor_util::time::{now_ms, rfc3339};

use super::client_address::{Cidr, client_address};
use super::error::{KpError, KpResult};
use super::requests::{InstancePolicy, parse_collection};
use super::wire::{collection, collection_response, policy_collection};
use super::{KpState, blocking};
use crate::iam::Role;

const ALLOWED_IP_METADATA_TYPE: &str = "application/vnd.ibm.kms.allowed_ip_metadata+json";

/// The instance policy types, as Key Protect names them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(super) enum PolicyType {
    DualAuthDelete,
    AllowedNetwork,
    AllowedIp,
    KeyCreateImportAccess,
    Metrics,
    Rotation,
}

impl PolicyType {
    const ALL: [Self; 6] = [
        Self::DualAuthDelete,
        Self::AllowedNetwork,
        Self::AllowedIp,
        Self::KeyCreateImportAccess,
        Self::Metrics,
        Self::Rotation,
    ];

    fn name(self) -> &'static str {
        match self {
            Self::DualAuthDelete => "dualAuthDelete",
            Self::AllowedNetwork => "allowedNetwork",
            Self::AllowedIp => "allowedIP",
            Self::KeyCreateImportAccess => "keyCreateImportAccess",
            Self::Metrics => "metrics",
            Self::Rotation => "rotation",
        }
    }

    fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|kind| kind.name() == name)
    }

    fn names() -> String {
        Self::ALL.map(Self::name).join(", ")
    }
}

/// `allowedNetwork`: which of Key Protect's endpoints take requests.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
enum AllowedNetwork {
    #[serde(rename = "public-and-private")]
    PublicAndPrivate,
    #[serde(rename = "private-only")]
    PrivateOnly,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct AllowedNetworkAttributes {
    allowed_network: AllowedNetwork,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct AllowedIpAttributes {
    allowed_ip: Vec<Cidr>,
}

fn allowed() -> bool {
    true
}

/// `keyCreateImportAccess`: which kinds of key may be created or imported, and whether imports
/// must be encrypted to an import token.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct CreateImportAccess {
    #[serde(default = "allowed")]
    create_root_key: bool,
    #[serde(default = "allowed")]
    create_standard_key: bool,
    #[serde(default = "allowed")]
    import_root_key: bool,
    #[serde(default = "allowed")]
    import_standard_key: bool,
    #[serde(default)]
    enforce_token: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct RotationAttributes {
    interval_month: u8,
}

/// How a key comes to be, for `keyCreateImportAccess`.
pub(super) enum KeyOrigin {
    Generated,
    Imported,
    SecurelyImported,
}

impl CreateImportAccess {
    /// Refuses a key the policy does not allow.
    pub(super) fn check(&self, origin: &KeyOrigin, extractable: bool) -> KpResult<()> {
        let refusal = match (origin, extractable) {
            (KeyOrigin::Generated, false) if !self.create_root_key => {
                Some("the instance policy keyCreateImportAccess does not allow creating root keys")
            }
            (KeyOrigin::Generated, true) if !self.create_standard_key => Some(
                "the instance policy keyCreateImportAccess does not allow creating standard keys",
            ),
            (KeyOrigin::Imported | KeyOrigin::SecurelyImported, false) if !self.import_root_key => {
                Some("the instance policy keyCreateImportAccess does not allow importing root keys")
            }
            (KeyOrigin::Imported | KeyOrigin::SecurelyImported, true)
                if !self.import_standard_key =>
            {
                Some(
                    "the instance policy keyCreateImportAccess does not allow importing standard keys",
                )
            }
            (KeyOrigin::Imported, _) if self.enforce_token => Some(
                "the instance policy keyCreateImportAccess requires imported material to be encrypted to an import token",
            ),
            _ => None,
        };
        refusal.map_or(Ok(()), |why| Err(KpError::KeyCreateImportAccess(why)))
    }
}

/// The name of every instance policy type, in a fixed order (for the OpenAPI document).
pub(crate) fn policy_type_names() -> impl Iterator<Item = &'static str> {
    PolicyType::ALL.into_iter().map(PolicyType::name)
}

/// An instance's policies, as stored: one record per type.
struct InstancePolicies(BTreeMap<PolicyType, InstancePolicyRecord>);

impl InstancePolicies {
    fn load(state: &KpState, instance: Uuid) -> KpResult<Self> {
        let records = blocking(|| state.store.instance_policies(instance))?;
        Ok(Self::from_records(instance, records)?)
    }

    /// The stored records by type. A type this rotor does not know fails the instance's
    /// requests rather than leave a restriction unenforced; the error names it.
    fn from_records(instance: Uuid, records: StoredPolicies) -> Result<Self, StoreError> {
        records
            .into_iter()
            .map(|(name, record)| {
                let kind = PolicyType::parse(&name).ok_or_else(|| {
                    StoreError::Corrupt(format!(
                        "instance policy {name} of instance {instance}: a policy type this rotor does not know"
                    ))
                })?;
                Ok((kind, record))
            })
            .collect::<Result<_, _>>()
            .map(Self)
    }

    fn save(&self, state: &KpState, instance: Uuid) -> KpResult<()> {
        let records: StoredPolicies = self
            .0
            .iter()
            .map(|(kind, record)| (kind.name().to_owned(), record.clone()))
            .collect();
        blocking(|| state.store.set_instance_policies(instance, &records))?;
        Ok(())
    }

    /// The attributes of an enabled policy. Attributes were checked when stored, so ones that
    /// no longer read are a storage failure: refusing is safer than not enforcing.
    fn enabled<T: serde::de::DeserializeOwned>(&self, kind: PolicyType) -> KpResult<Option<T>> {
        let Some(record) = self.0.get(&kind).filter(|record| record.enabled) else {
            return Ok(None);
        };
        let attributes = record.attributes.clone().unwrap_or_else(|| json!({}));
        serde_json::from_value(attributes).map(Some).map_err(|err| {
            tracing::error!(policy = kind.name(), error = %err, "stored instance policy unreadable");
            KpError::Storage
        })
    }

    fn allowed_ip(&self) -> KpResult<Option<Vec<Cidr>>> {
        Ok(self
            .enabled::<AllowedIpAttributes>(PolicyType::AllowedIp)?
            .map(|attributes| attributes.allowed_ip))
    }
}

/// Whether the instance's dual-authorization policy is on.
pub(super) fn instance_dual_auth(state: &KpState, instance: Uuid) -> KpResult<bool> {
    let policies = InstancePolicies::load(state, instance)?;
    Ok(policies
        .0
        .get(&PolicyType::DualAuthDelete)
        .is_some_and(|p| p.enabled))
}

/// The instance's `keyCreateImportAccess` policy, when it is on.
pub(super) fn create_import_access(
    state: &KpState,
    instance: Uuid,
) -> KpResult<Option<CreateImportAccess>> {
    InstancePolicies::load(state, instance)?.enabled(PolicyType::KeyCreateImportAccess)
}

/// Validates a policy's attributes by its type and returns them normalized (defaults filled).
fn checked_attributes(
    kind: PolicyType,
    enabled: bool,
    attributes: Option<Value>,
) -> KpResult<Option<Value>> {
    const ACCESS: &str = "holds create_root_key, create_standard_key, import_root_key, import_standard_key and enforce_token (true or false)";
    fn parse<T: serde::de::DeserializeOwned>(attributes: Value, expected: &str) -> KpResult<T> {
        serde_json::from_value(attributes)
            .map_err(|err| KpError::field("policy_data.attributes", format!("{expected}: {err}")))
    }
    let given = attributes.filter(|a| a.as_object().is_none_or(|map| !map.is_empty()));
    let normalized = match (kind, given) {
        (PolicyType::DualAuthDelete | PolicyType::Metrics, None) => None,
        (PolicyType::DualAuthDelete | PolicyType::Metrics, Some(_)) => {
            return Err(KpError::field(
                "policy_data.attributes",
                format!("is not taken by the {} policy", kind.name()),
            ));
        }
        (_, None) if !enabled => None,
        (PolicyType::KeyCreateImportAccess, None) => {
            Some(json!(parse::<CreateImportAccess>(json!({}), ACCESS)?))
        }
        (_, None) => {
            return Err(KpError::field(
                "policy_data.attributes",
                format!("is required to enable the {} policy", kind.name()),
            ));
        }
        (PolicyType::AllowedNetwork, Some(attributes)) => {
            Some(json!(parse::<AllowedNetworkAttributes>(
                attributes,
                "holds allowed_network: public-and-private or private-only",
            )?))
        }
        (PolicyType::AllowedIp, Some(attributes)) => {
            let checked = parse::<AllowedIpAttributes>(
                attributes,
                "holds allowed_ip: a list of CIDR blocks such as 10.0.0.0/8",
            )?;
            if enabled && checked.allowed_ip.is_empty() {
                return Err(KpError::field(
                    "policy_data.attributes.allowed_ip",
                    "lists at least one CIDR block",
                ));
            }
            Some(json!(checked))
        }
        (PolicyType::KeyCreateImportAccess, Some(attributes)) => {
            Some(json!(parse::<CreateImportAccess>(attributes, ACCESS)?))
        }
        (PolicyType::Rotation, Some(attributes)) => {
            let checked = parse::<RotationAttributes>(attributes, "holds interval_month")?;
            if !(1..=12).contains(&checked.interval_month) {
                return Err(KpError::field(
                    "policy_data.attributes.interval_month",
                    "is 1 to 12",
                ));
            }
            Some(json!(checked))
        }
    };
    Ok(normalized)
}

#[derive(Deserialize)]
pub(super) struct PolicyQuery {
    policy: Option<String>,
}

fn queried_type(query: &PolicyQuery) -> KpResult<Option<PolicyType>> {
    query
        .policy
        .as_deref()
        .map(|name| {
            PolicyType::parse(name).ok_or_else(|| KpError::InvalidParameter {
                name: "policy",
                problem: format!("is one of {}", PolicyType::names()),
            })
        })
        .transpose()
}

fn policy_json(kind: PolicyType, record: &InstancePolicyRecord) -> Value {
    let mut data = json!({"enabled": record.enabled});
    if let Some(attributes) = &record.attributes {
        data["attributes"] = attributes.clone();
    }
    let mut out = json!({"policy_type": kind.name(), "policy_data": data});
    if let Some(created) = record.created {
        out["creationDate"] = json!(rfc3339(created));
    }
    if let Some(by) = &record.created_by {
        out["createdBy"] = json!(by);
    }
    if let Some(updated) = record.updated {
        out["lastUpdated"] = json!(rfc3339(updated));
    }
    if let Some(by) = &record.updated_by {
        out["updatedBy"] = json!(by);
    }
    out
}

pub(super) async fn get_instance_policies(
    State(state): State<KpState>,
    headers: HeaderMap,
    Query(query): Query<PolicyQuery>,
) -> KpResult<Response> {
    let caller = state.caller(&headers, Role::Manager)?;
    let only = queried_type(&query)?;
    let policies = InstancePolicies::load(&state, caller.instance)?;
    let resources: Vec<Value> = policies
        .0
        .iter()
        .filter(|(kind, _)| only.is_none_or(|only| only == **kind))
        .map(|(kind, record)| policy_json(*kind, record))
        .collect();
    Ok(collection_response(
        StatusCode::OK,
        policy_collection(resources),
    ))
}

pub(super) async fn put_instance_policies(
    State(state): State<KpState>,
    headers: HeaderMap,
    extensions: Extensions,
    Query(query): Query<PolicyQuery>,
    body: Bytes,
) -> KpResult<Response> {
    let caller = state.caller(&headers, Role::Manager)?;
    let only = queried_type(&query)?;
    let resources = parse_collection::<InstancePolicy>(&body)?;
    let mut changes = BTreeMap::new();
    for resource in resources {
        let name = resource.policy_type.as_str();
        let kind = PolicyType::parse(name).ok_or_else(|| {
            KpError::field(
                "policy_type",
                format!(
                    "names no instance policy ('{name}'); the types are {}",
                    PolicyType::names()
                ),
            )
        })?;
        if let Some(only) = only.filter(|only| *only != kind) {
            return Err(KpError::BodyQueryParamMismatch {
                query: only.name(),
                body: kind.name(),
            });
        }
        let enabled = resource.policy_data.enabled;
        let attributes = checked_attributes(kind, enabled, resource.policy_data.attributes)?;
        if changes.insert(kind, (enabled, attributes)).is_some() {
            return Err(KpError::NumCollectionResource(format!(
                "the body sets the {} policy more than once; send one resource per policy type",
                kind.name()
            )));
        }
    }
    if changes
        .get(&PolicyType::AllowedIp)
        .is_some_and(|(enabled, _)| *enabled)
        && client_address(peer(&extensions), &headers, &state.trusted_proxies).is_none()
    {
        // Without the client's address the policy could not be enforced; refuse it rather
        // than accept a restriction that does not hold.
        return Err(KpError::FeatureRestricted(
            "this service is served without client addresses, so it cannot enforce an allowedIP policy",
        ));
    }
    let mut policies = InstancePolicies::load(&state, caller.instance)?;
    let now = now_ms();
    let sub = &caller.claims.sub;
    for (kind, (enabled, attributes)) in changes {
        let record = policies
            .0
            .entry(kind)
            .or_insert_with(|| InstancePolicyRecord {
                created: Some(now),
                created_by: Some(sub.clone()),
                ..InstancePolicyRecord::default()
            });
        record.enabled = enabled;
        record.attributes = attributes;
        record.updated = Some(now);
        record.updated_by = Some(sub.clone());
    }
    policies.save(&state, caller.instance)?;
    state.audit_event(&caller, "instance_policy", "");
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// `GET /instance/allowed_ip_port`: the port to reach the instance on while an `allowedIP`
/// policy is on (Key Protect's private endpoint port; rotor has one endpoint, its own).
pub(super) async fn get_allowed_ip_port(
    State(state): State<KpState>,
    headers: HeaderMap,
) -> KpResult<Response> {
    let caller = state.caller(&headers, Role::Reader)?;
    let policies = InstancePolicies::load(&state, caller.instance)?;
    let resources = match policies.allowed_ip()? {
        Some(_) => vec![json!({"private_endpoint_port": state.listen_port})],
        None => Vec::new(),
    };
    Ok(collection_response(
        StatusCode::OK,
        collection(ALLOWED_IP_METADATA_TYPE, resources),
    ))
}

/// Refuses a request whose client address an enabled `allowedIP` policy of its instance
/// (named in `Bluemix-Instance`) does not list. It runs before authentication, as a network
/// rule does; requests without a served instance go on to be refused by their route.
pub(super) async fn enforce_allowed_ip(
    State(state): State<KpState>,
    request: Request,
    next: Next,
) -> Response {
    match allowed_ip_refusal(&state, &request) {
        Ok(None) => next.run(request).await,
        Ok(Some(refusal)) | Err(refusal) => refusal.into_response(),
    }
}

/// The TCP peer, when the service is served with connection info (`rotor server` is).
fn peer(extensions: &Extensions) -> Option<SocketAddr> {
    extensions
        .get::<ConnectInfo<SocketAddr>>()
        .map(|ConnectInfo(peer)| *peer)
}

fn allowed_ip_refusal(state: &KpState, request: &Request) -> KpResult<Option<KpError>> {
    // Key Protect routes name the instance in `Bluemix-Instance`, rotor's batch route in its path.
    let named = request
        .headers()
        .get("bluemix-instance")
        .and_then(|v| v.to_str().ok())
        .or_else(|| {
            request
                .uri()
                .path()
                .strip_prefix("/v1/instances/")
                .and_then(|rest| rest.split('/').next())
        });
    let instance = named
        .and_then(|v| Uuid::parse_str(v.trim()).ok())
        .filter(|instance| state.units.contains(*instance));
    let Some(instance) = instance else {
        return Ok(None);
    };
    let Some(allowed) = InstancePolicies::load(state, instance)?.allowed_ip()? else {
        return Ok(None);
    };
    Ok(
        match client_address(
            peer(request.extensions()),
            request.headers(),
            &state.trusted_proxies,
        ) {
            Some(address) if allowed.iter().any(|cidr| cidr.contains(address)) => None,
            Some(address) => Some(KpError::AddressNotAllowed(format!(
                "the instance's allowedIP policy does not allow requests from {address}"
            ))),
            None => Some(KpError::AddressNotAllowed(
                "the instance's allowedIP policy is on and this service does not see the client's address".to_owned(),
            )),
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stored_policy_of_an_unknown_type_is_named_never_skipped() {
        let instance = Uuid::new_v4();
        let record = |enabled| InstancePolicyRecord {
            enabled,
            ..InstancePolicyRecord::default()
        };
        let stored = StoredPolicies::from([("dualAuthDelete".to_owned(), record(true))]);
        let policies = InstancePolicies::from_records(instance, stored).unwrap();
        assert!(policies.0[&PolicyType::DualAuthDelete].enabled);
        let stored = StoredPolicies::from([("firewall".to_owned(), record(true))]);
        let Err(StoreError::Corrupt(why)) = InstancePolicies::from_records(instance, stored) else {
            panic!("an unknown policy type read as if valid");
        };
        assert!(why.starts_with("instance policy firewall"), "{why}");
        assert!(why.contains(&instance.to_string()), "{why}");
    }

    #[test]
    fn attributes_are_checked_by_type() {
        let ok = |kind, attributes: Value| checked_attributes(kind, true, Some(attributes));
        assert!(ok(PolicyType::DualAuthDelete, json!({})).is_ok());
        assert!(ok(PolicyType::Metrics, json!({"x": 1})).is_err());
        assert!(
            ok(
                PolicyType::AllowedNetwork,
                json!({"allowed_network": "private-only"})
            )
            .is_ok()
        );
        assert!(
            ok(
                PolicyType::AllowedNetwork,
                json!({"allowed_network": "any"})
            )
            .is_err()
        );
        assert!(ok(PolicyType::AllowedIp, json!({"allowed_ip": ["10.0.0.0/8"]})).is_ok());
        assert!(
            ok(
                PolicyType::AllowedIp,
                json!({"allowed_ip": ["10.0.0.0/40"]})
            )
            .is_err()
        );
        assert!(ok(PolicyType::AllowedIp, json!({"allowed_ip": []})).is_err());
        assert!(ok(PolicyType::Rotation, json!({"interval_month": 3})).is_ok());
        assert!(ok(PolicyType::Rotation, json!({"interval_month": 13})).is_err());
        assert!(ok(PolicyType::Rotation, json!({"interval_month": -1})).is_err());
        // Defaults are filled in: everything allowed, no token enforced.
        assert_eq!(
            ok(
                PolicyType::KeyCreateImportAccess,
                json!({"create_root_key": false})
            )
            .unwrap(),
            Some(json!({
                "create_root_key": false, "create_standard_key": true,
                "import_root_key": true, "import_standard_key": true, "enforce_token": false,
            }))
        );
        assert!(
            ok(
                PolicyType::KeyCreateImportAccess,
                json!({"create_all": false})
            )
            .is_err()
        );
        // Disabling needs no attributes.
        assert_eq!(
            checked_attributes(PolicyType::AllowedIp, false, None).unwrap(),
            None
        );
    }

    #[test]
    fn create_import_access_refuses_what_it_does_not_allow() {
        let policy: CreateImportAccess =
            serde_json::from_value(json!({"create_standard_key": false, "enforce_token": true}))
                .unwrap();
        assert!(policy.check(&KeyOrigin::Generated, false).is_ok());
        assert!(matches!(
            policy.check(&KeyOrigin::Generated, true),
            Err(KpError::KeyCreateImportAccess(_))
        ));
        assert!(policy.check(&KeyOrigin::Imported, false).is_err());
        assert!(policy.check(&KeyOrigin::SecurelyImported, false).is_ok());
    }
}

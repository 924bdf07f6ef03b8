//! The service's own metrics, beside the HTTP and process metrics of [`rotor_telemetry`], and
//! `GET /metrics` on the API listener.
//!
//! | metric | labels | meaning |
//! |---|---|---|
//! | `rotor_unit_up` | `instance`, `unit` | 1 when the unit's last answer came and its status passed the trust check, 0 when it did not |
//! | `rotor_unit_failovers_total` | `instance`, `unit` | key operations and rewrap batches passed on from this unit to the next (unreachable, no usable master key, or refused as untrusted) |
//! | `rotor_unit_refusals_total` | `instance`, `unit`, `code` | requests the unit refused, by its error code |
//! | `rotor_rotation_phase` | `instance`, `phase` | 1 for the phase of the instance's rotation journal, 0 for the others |
//! | `rotor_rotation_blobs` | `instance` | blobs under the source master key when the current direction began |
//! | `rotor_rotation_blobs_done` | `instance` | blobs rewrapped in the current direction |
//! | `rotor_lease_held` | `name` | 1 while this replica holds the lease, 0 once it let it go |
//! | `rotor_unit_key_batch_size` | | histogram: wrap, unwrap and rewrap requests carried to a unit in one batch ([`rotor_unit::backend::HttpUnit`]) |
//!
//! Who may read them: a bearer token whose role allows Reader and that covers every instance
//! the service serves (a tenant's token does not see other tenants' units and rotations).

use std::sync::LazyLock;

use axum::http::{HeaderMap, header};
use axum::response::{IntoResponse, Response};
use prometheus::{IntCounterVec, IntGaugeVec};
use rotor_proto::error::ErrorCode;
use rotor_proto::rotation::Phase;
use rotor_telemetry::metrics::{counter_vec, gauge_vec};
use uuid::Uuid;

use crate::iam::{Iam, IamError, Role};

/// Every phase, so that the gauge of each is set (1 for the current one, 0 for the others).
const PHASES: [Phase; 5] = [
    Phase::Reencrypting,
    Phase::Reencrypted,
    Phase::Aborting,
    Phase::Aborted,
    Phase::Completed,
];

struct Metrics {
    unit_up: IntGaugeVec,
    failovers: IntCounterVec,
    refusals: IntCounterVec,
    phase: IntGaugeVec,
    blobs: IntGaugeVec,
    blobs_done: IntGaugeVec,
    lease_held: IntGaugeVec,
}

static METRICS: LazyLock<Option<Metrics>> = LazyLock::new(|| {
    Some(Metrics {
        unit_up: gauge_vec(
            "rotor_unit_up",
            "1 when the crypto unit answered and passed its status check, 0 when not",
            &["instance", "unit"],
        )?,
        failovers: counter_vec(
            "rotor_unit_failovers_total",
            "Requests passed on from this crypto unit to the next",
            &["instance", "unit"],
        )?,
        refusals: counter_vec(
            "rotor_unit_refusals_total",
            "Requests the crypto unit refused, by error code",
            &["instance", "unit", "code"],
        )?,
        phase: gauge_vec(
            "rotor_rotation_phase",
            "1 for the phase of the instance's master key rotation, 0 for the others",
            &["instance", "phase"],
        )?,
        blobs: gauge_vec(
            "rotor_rotation_blobs",
            "Blobs under the source master key when the rotation's current direction began",
            &["instance"],
        )?,
        blobs_done: gauge_vec(
            "rotor_rotation_blobs_done",
            "Blobs rewrapped in the rotation's current direction",
            &["instance"],
        )?,
        lease_held: gauge_vec(
            "rotor_lease_held",
            "1 while this replica holds the lease",
            &["name"],
        )?,
    })
});

/// Registers the service's metrics now, so that they are listed before their first change.
pub fn register() {
    LazyLock::force(&METRICS);
}

fn with(record: impl FnOnce(&Metrics)) {
    if let Some(metrics) = METRICS.as_ref() {
        record(metrics);
    }
}

/// A gauge saturates rather than wraps: a count beyond `i64::MAX` is not a real one anyway.
fn gauge_value(count: u64) -> i64 {
    i64::try_from(count).unwrap_or(i64::MAX)
}

/// Records whether `unit` of `instance` is usable: it answered (and passed its status check),
/// or it did not.
pub fn unit_up(instance: Uuid, unit: Uuid, up: bool) {
    with(|metrics| {
        metrics
            .unit_up
            .with_label_values(&[&instance.to_string(), &unit.to_string()])
            .set(i64::from(up));
    });
}

/// Counts one request passed on from `unit` to the next unit of `instance`.
pub fn failover(instance: Uuid, unit: Uuid) {
    with(|metrics| {
        metrics
            .failovers
            .with_label_values(&[&instance.to_string(), &unit.to_string()])
            .inc();
    });
}

/// Counts one refusal by `unit`, with its code.
pub fn refusal(instance: Uuid, unit: Uuid, code: ErrorCode) {
    with(|metrics| {
        metrics
            .refusals
            .with_label_values(&[&instance.to_string(), &unit.to_string(), code.as_str()])
            .inc();
    });
}

/// Records where the rotation of `instance` stands: its phase, the blobs to move in the current
/// direction and how many moved. Call whenever the journal or the engine's progress changes.
pub fn rotation_progress(instance: Uuid, phase: Phase, total: u64, done: u64) {
    let id = instance.to_string();
    with(|metrics| {
        for each in PHASES {
            metrics
                .phase
                .with_label_values(&[id.as_str(), each.label()])
                .set(i64::from(each == phase));
        }
        metrics
            .blobs
            .with_label_values(&[id.as_str()])
            .set(gauge_value(total));
    });
    rotation_done(instance, done);
}

/// Records how many blobs the rotation of `instance` moved in its current direction, between
/// two journal writes.
pub fn rotation_done(instance: Uuid, done: u64) {
    with(|metrics| {
        metrics
            .blobs_done
            .with_label_values(&[&instance.to_string()])
            .set(gauge_value(done));
    });
}

/// Records whether this replica holds the lease `name` (the rotation of an instance, the policy
/// check, a purge).
pub fn lease_held(name: &str, held: bool) {
    with(|metrics| {
        metrics
            .lease_held
            .with_label_values(&[name])
            .set(i64::from(held));
    });
}

/// Checks that the request's bearer token may read the metrics: its role allows Reader and it
/// covers every one of `instances`.
pub fn authorize(
    iam: &Iam,
    headers: &HeaderMap,
    instances: impl IntoIterator<Item = Uuid>,
    now: u64,
) -> Result<(), IamError> {
    let authorization = headers
        .get(header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok());
    let claims = iam.verify(authorization, now)?;
    claims.allows(None, Role::Reader)?;
    match instances.into_iter().find(|id| !claims.covers(*id)) {
        Some(instance) => Err(IamError::InstanceNotAllowed { instance }),
        None => Ok(()),
    }
}

/// `GET /metrics` for a caller that passed [`authorize`], else its refusal.
pub fn response(authorized: Result<(), IamError>) -> Response {
    match authorized {
        Ok(()) => rotor_telemetry::metrics::response(),
        Err(err) => err.into_response(),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use crate::iam::{ApiKeyConfig, IamConfig, new_api_key};

    const NOW: u64 = 1_750_000_000;

    #[test]
    fn only_a_reader_token_covering_every_instance_reads_the_metrics() {
        let (first, second) = (Uuid::from_u128(1), Uuid::from_u128(2));
        let keys: Vec<(String, ApiKeyConfig)> = [
            ("operator", Role::Reader, vec!["*".to_owned()]),
            (
                "both",
                Role::Writer,
                vec![first.to_string(), second.to_string()],
            ),
            ("tenant", Role::Manager, vec![first.to_string()]),
            ("admin", Role::CryptoUnitAdministrator, vec!["*".to_owned()]),
        ]
        .into_iter()
        .map(|(name, role, instances)| {
            let (api_key, key_sha256) = new_api_key();
            let config = ApiKeyConfig {
                name: name.to_owned(),
                key_sha256,
                role,
                instances,
            };
            (api_key, config)
        })
        .collect();
        let config = IamConfig {
            token_ttl_seconds: 600,
            api_keys: keys.iter().map(|(_, config)| config.clone()).collect(),
        };
        let iam = Iam::new(rotor_crypto::Secret32::random(), &config);
        let check = |index: usize| {
            let token = iam.issue(&keys[index].0, NOW).unwrap().access_token;
            let mut headers = HeaderMap::new();
            headers.insert(
                header::AUTHORIZATION,
                format!("Bearer {token}").parse().unwrap(),
            );
            authorize(&iam, &headers, [first, second], NOW + 1)
        };
        assert!(check(0).is_ok());
        assert!(check(1).is_ok());
        assert!(matches!(
            check(2),
            Err(IamError::InstanceNotAllowed { instance }) if instance == second
        ));
        assert!(matches!(check(3), Err(IamError::WrongRole { .. })));
        let anonymous = authorize(&iam, &HeaderMap::new(), [first], NOW);
        assert_eq!(anonymous.map_err(|err| err.http_status()), Err(401));
    }
}

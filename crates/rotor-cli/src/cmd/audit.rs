//! `rotor audit`: shows the audit chains, and `rotor audit verify` checks them on this
//! workstation: every unit signature against the identity keys it knows, every link, and the
//! length against each unit's live head, naming the first entry that was changed, removed or
//! reordered.

use std::collections::{BTreeMap, HashMap};

use anyhow::{Result, bail};
use rotor_crypto::{PublicKey, fill_random};
use rotor_proto::audit::{
    AdminRecord, ChainError, ChainHead, Entry, Hash, KeyEventRecord, StoredEntry, head_message,
    verify,
};
use serde_json::json;
use uuid::Uuid;

use crate::args::{AuditArgs, AuditCommand};
use crate::output::{print_json, table};
use crate::session::{Session, Target};

/// An audit chain that does not verify: exit code 5.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct AuditNotVerified(pub String);

/// `rotor audit …`
pub async fn audit(session: &Session, args: AuditArgs) -> Result<()> {
    let units = session.all_units().await?;
    let chosen: Vec<&Target> = match args.unit {
        None => units.iter().collect(),
        Some(number) => {
            let Some(target) = units.iter().find(|t| t.number == number) else {
                bail!(
                    "there is no crypto unit number {number}; 'rotor units' lists 1 to {}",
                    units.len()
                );
            };
            vec![target]
        }
    };
    match args.command {
        None => show(session, &chosen, args.unit.is_none()).await,
        Some(AuditCommand::Verify) => verify_all(session, &chosen, args.unit.is_none()).await,
    }
}

/// The instances of `targets`, in order of first appearance.
fn instances(targets: &[&Target]) -> Vec<Uuid> {
    let mut seen = Vec::new();
    for target in targets {
        if !seen.contains(&target.instance) {
            seen.push(target.instance);
        }
    }
    seen
}

fn time(ms: u64) -> String {
    rotor_util::time::rfc3339(i64::try_from(ms).unwrap_or(i64::MAX))
}

pub(crate) fn admin_rows(entries: &[StoredEntry]) -> Vec<Vec<String>> {
    entries
        .iter()
        .enumerate()
        .map(
            |(index, stored)| match Entry::<AdminRecord>::decode(&stored.entry) {
                Some(entry) => vec![
                    entry.seq.to_string(),
                    time(entry.time_ms),
                    entry.record.action,
                    entry.record.counter.to_string(),
                    entry
                        .record
                        .signers
                        .iter()
                        .map(|ski| ski.to_hex()[..8].to_owned())
                        .collect::<Vec<_>>()
                        .join(" "),
                    entry.record.verdict.label(),
                ],
                None => vec![(index + 1).to_string(), "(does not decode)".to_owned()],
            },
        )
        .collect()
}

pub(crate) fn key_event_rows(entries: &[StoredEntry]) -> Vec<Vec<String>> {
    entries
        .iter()
        .enumerate()
        .map(
            |(index, stored)| match Entry::<KeyEventRecord>::decode(&stored.entry) {
                Some(entry) => vec![
                    entry.seq.to_string(),
                    time(entry.time_ms),
                    entry.record.event,
                    entry.record.key,
                    entry.record.caller,
                    entry.record.verdict.label(),
                ],
                None => vec![(index + 1).to_string(), "(does not decode)".to_owned()],
            },
        )
        .collect()
}

fn decoded_json<R: serde::Serialize + serde::de::DeserializeOwned>(
    entries: &[StoredEntry],
) -> Vec<serde_json::Value> {
    entries
        .iter()
        .map(|stored| match Entry::<R>::decode(&stored.entry) {
            Some(entry) => json!(entry),
            None => json!({"undecodable": hex::encode(&stored.entry)}),
        })
        .collect()
}

async fn show(session: &Session, targets: &[&Target], with_key_events: bool) -> Result<()> {
    let service = session.service()?;
    let mut out = Vec::new();
    for instance in instances(targets) {
        let mut view = json!({"instance": instance});
        if with_key_events {
            let chain = service.key_event_chain(instance).await?;
            if !session.json {
                println!("KEY EVENTS OF INSTANCE {instance}");
                print!(
                    "{}",
                    table(
                        &["SEQ", "TIME", "EVENT", "KEY", "CALLER", "RESULT"],
                        &key_event_rows(&chain.entries)
                    )
                );
                let countersigned = chain.countersignatures.iter().map(|c| c.head.seq).max();
                println!(
                    "Countersigned up to entry {}.\n",
                    countersigned.unwrap_or_default()
                );
            }
            view["key_events"] = json!(decoded_json::<KeyEventRecord>(&chain.entries));
            view["countersignatures"] = json!(chain.countersignatures);
        }
        let mut units = Vec::new();
        for target in targets.iter().filter(|t| t.instance == instance) {
            let mut challenge = vec![0; 16];
            fill_random(&mut challenge);
            let chain = service
                .unit_chain(instance, target.unit.id, &challenge)
                .await?;
            if !session.json {
                println!(
                    "ADMIN COMMANDS OF CRYPTO UNIT {} ({})",
                    target.number, target.unit.id
                );
                print!(
                    "{}",
                    table(
                        &["SEQ", "TIME", "ACTION", "COUNTER", "SIGNERS", "RESULT"],
                        &admin_rows(&chain.entries)
                    )
                );
                println!();
            }
            units.push(json!({
                "number": target.number,
                "unit": target.unit.id,
                "entries": decoded_json::<AdminRecord>(&chain.entries),
                "head": chain.head.head,
            }));
        }
        view["units"] = json!(units);
        out.push(view);
    }
    if session.json {
        print_json(&json!({ "instances": out }));
    }
    Ok(())
}

/// The identity keys of the units of `targets`, each checked against the fingerprint this
/// workstation enrolled: a chain is verified only against a unit enrolled out of band.
async fn identities(session: &Session, targets: &[&Target]) -> Result<HashMap<Uuid, PublicKey>> {
    let enrolled = session.home.enrollments()?;
    let mut identities = HashMap::new();
    for target in targets {
        let status = session.status(target).await?;
        if !enrolled.contains_key(&target.unit.id) {
            return Err(crate::session::TrustError::NotEnrolled {
                number: target.number,
                unit: target.unit.id,
            }
            .into());
        }
        identities.insert(target.unit.id, status.identity);
    }
    Ok(identities)
}

fn not_verified(what: &str, err: &ChainError) -> anyhow::Error {
    AuditNotVerified(format!("{what} does not verify: {err}")).into()
}

/// Checks one unit's admin chain; returns how many entries it holds.
async fn verify_unit(session: &Session, target: &Target, identity: &PublicKey) -> Result<u64> {
    let what = format!(
        "the admin chain of crypto unit {} ({})",
        target.number, target.unit.id
    );
    let mut challenge = vec![0; 16];
    fill_random(&mut challenge);
    let chain = session
        .service()?
        .unit_chain(target.instance, target.unit.id, &challenge)
        .await?;
    if !chain.head.verify(identity, target.unit.id, &challenge) {
        return Err(AuditNotVerified(format!(
            "{what}: the unit's live head does not carry its signature over this request"
        ))
        .into());
    }
    let unit = target.unit.id;
    let signed = |head: &ChainHead, signature: &[u8]| {
        identity
            .verify(&head_message(unit, head, &[]), signature)
            .is_ok()
    };
    let mut anchors = BTreeMap::new();
    if chain.head.head.seq > 0 {
        anchors.insert(chain.head.head.seq, chain.head.head.hash);
    }
    let entries = verify::<AdminRecord>(&chain.entries, &anchors, Some(&signed))
        .map_err(|err| not_verified(&what, &err))?;
    Ok(entries.len() as u64)
}

/// Checks an instance's key event chain; returns how many entries it holds and up to which
/// entry units countersigned it.
async fn verify_key_events(
    session: &Session,
    instance: Uuid,
    identities: &HashMap<Uuid, PublicKey>,
) -> Result<(u64, u64)> {
    let what = format!("the key event chain of instance {instance}");
    let chain = session.service()?.key_event_chain(instance).await?;
    let mut anchors: BTreeMap<u64, Hash> = BTreeMap::new();
    for countersignature in &chain.countersignatures {
        let seq = countersignature.head.seq;
        let Some(identity) = identities.get(&countersignature.unit) else {
            return Err(AuditNotVerified(format!(
                "{what}: entry {seq} is countersigned by unit {}, which this workstation does not know",
                countersignature.unit
            ))
            .into());
        };
        if countersignature.instance != instance || !countersignature.verify(identity) {
            return Err(AuditNotVerified(format!(
                "{what}: the countersignature of entry {seq} by unit {} does not verify",
                countersignature.unit
            ))
            .into());
        }
        if seq == 0 {
            continue;
        }
        if anchors
            .insert(seq, countersignature.head.hash)
            .is_some_and(|other| other != countersignature.head.hash)
        {
            return Err(not_verified(&what, &ChainError::Changed { seq }));
        }
    }
    let entries = verify::<KeyEventRecord>(&chain.entries, &anchors, None)
        .map_err(|err| not_verified(&what, &err))?;
    let countersigned = anchors.keys().next_back().copied().unwrap_or_default();
    Ok((entries.len() as u64, countersigned))
}

async fn verify_all(session: &Session, targets: &[&Target], with_key_events: bool) -> Result<()> {
    let identities = identities(session, targets).await?;
    let mut report = Vec::new();
    for instance in instances(targets) {
        if with_key_events {
            let (length, countersigned) = verify_key_events(session, instance, &identities).await?;
            session.say(&format!(
                "Key event chain of instance {instance}: intact, {length} entries, countersigned up to entry {countersigned}."
            ));
            report.push(json!({"instance": instance, "chain": "key_events", "entries": length, "countersigned": countersigned}));
        }
        for target in targets.iter().filter(|t| t.instance == instance) {
            let Some(identity) = identities.get(&target.unit.id) else {
                return Err(AuditNotVerified(format!(
                    "this workstation knows no identity key for unit {}",
                    target.unit.id
                ))
                .into());
            };
            let length = verify_unit(session, target, identity).await?;
            session.say(&format!(
                "Admin chain of crypto unit {} ({}): intact, {length} entries, each signed by the unit.",
                target.number, target.unit.id
            ));
            report.push(json!({"instance": instance, "chain": "admin", "unit": target.unit.id, "entries": length}));
        }
    }
    if session.json {
        print_json(&json!({"intact": true, "chains": report}));
    }
    Ok(())
}

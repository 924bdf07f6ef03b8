//! The Audit tab: each instance's key events and each unit's admin commands, and Verify.

use std::fmt::Write as _;

use anyhow::Result;
use rotor_crypto::fill_random;
use serde_json::json;

use super::page::{action_button, escape, table};
use crate::cmd::audit::{admin_rows, key_event_rows};
use crate::session::Session;

pub(super) async fn render(session: &Session) -> Result<String> {
    let mut out = String::from("<h2>Audit chains</h2><p>");
    out.push_str(&action_button(
        "Verify",
        &json!({"kind": "verify-audit"}),
        &[],
    ));
    out.push_str("</p>");
    let service = session.service()?;
    let units = session.all_units().await?;
    let mut instances: Vec<uuid::Uuid> = units.iter().map(|t| t.instance).collect();
    instances.dedup();
    for instance in instances {
        let chain = service.key_event_chain(instance).await?;
        let rows: Vec<(bool, Vec<String>)> = key_event_rows(&chain.entries)
            .into_iter()
            .map(|row| (false, row))
            .collect();
        let _ = write!(
            out,
            "<h3>Key events of instance <span class=\"mono\">{}</span></h3>{}",
            escape(&instance.to_string()),
            table(&["Seq", "Time", "Event", "Key", "Caller", "Result"], &rows)
        );
        for target in units.iter().filter(|t| t.instance == instance) {
            let mut challenge = vec![0; 16];
            fill_random(&mut challenge);
            let chain = service
                .unit_chain(instance, target.unit.id, &challenge)
                .await?;
            let rows: Vec<(bool, Vec<String>)> = admin_rows(&chain.entries)
                .into_iter()
                .map(|row| (false, row))
                .collect();
            let _ = write!(
                out,
                "<h3>Admin commands of crypto unit {}</h3>{}",
                target.number,
                table(
                    &["Seq", "Time", "Action", "Counter", "Signers", "Result"],
                    &rows
                )
            );
        }
    }
    Ok(out)
}

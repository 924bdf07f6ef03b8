//! `rotor thresholds`: show and set the signature and revocation thresholds.

use anyhow::Result;
use rotor_unit::wire::Action;
use serde_json::json;

use crate::args::ThresholdsCommand;
use crate::output::{print_json, table, threshold_rows};
use crate::session::{Session, numbered_rows};

/// `rotor thresholds …`
pub async fn thresholds(session: &Session, command: Option<ThresholdsCommand>) -> Result<()> {
    match command {
        None => {
            let units = session.statuses(&session.selected().await?).await?;
            if session.json {
                let view: Vec<_> = units
                    .iter()
                    .map(|(t, s)| json!({"number": t.number, "signature": s.signature_threshold, "revocation": s.revocation_threshold, "imprint": s.imprint}))
                    .collect();
                print_json(&json!({ "units": view }));
            } else {
                let rows = numbered_rows(&units, threshold_rows);
                print!(
                    "{}",
                    table(
                        &["CRYPTO UNIT NUM", "SIGNATURE", "REVOCATION", "MODE"],
                        &rows
                    )
                );
            }
            Ok(())
        }
        Some(ThresholdsCommand::Set {
            signature,
            revocation,
        }) => {
            session
                .each_selected(
                    &format!("thresholds set to signature {signature}, revocation {revocation}"),
                    |_, _| {
                        Ok(Some(Action::SetThresholds {
                            signature,
                            revocation,
                        }))
                    },
                )
                .await
        }
    }
}

//! The Signature thresholds tab.

use std::fmt::Write as _;

use anyhow::Result;
use serde_json::json;

use super::page::{action_button, escape, table};
use crate::output::threshold_rows;
use crate::session::Session;

pub(super) async fn render(session: &Session) -> Result<String> {
    let mut out = String::from("<h2>Signature thresholds of the selected crypto units</h2>");
    match session.selected().await {
        Ok(targets) => {
            let units = session.statuses(&targets).await?;
            let mut rows = Vec::new();
            for (target, status) in &units {
                for row in threshold_rows(status) {
                    let mut full = vec![target.number.to_string()];
                    full.extend(row);
                    rows.push((false, full));
                }
            }
            out.push_str(&table(
                &["Crypto unit num", "Signature", "Revocation", "Mode"],
                &rows,
            ));
        }
        Err(err) => {
            let _ = write!(out, "<p class=\"note\">{}</p>", escape(&format!("{err:#}")));
        }
    }
    out.push_str("<p><label>Signature threshold <input type=\"number\" min=\"1\" max=\"8\" name=\"signature\" id=\"signature\" value=\"1\"></label> <label>Revocation threshold <input type=\"number\" min=\"1\" max=\"8\" name=\"revocation\" id=\"revocation\" value=\"1\"></label> ");
    out.push_str(&action_button(
        "Set thresholds",
        &json!({"kind": "set-thresholds"}),
        &["signature", "revocation"],
    ));
    out.push_str("</p><p class=\"note\">From imprint mode this is how a unit leaves it: signed by as many admins as the new signature threshold.</p>");
    Ok(out)
}

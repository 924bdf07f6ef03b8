//! The Administrators tab: the admins of the selected units, the signature keys of this
//! workstation, add (by signature key) and remove.

use std::fmt::Write as _;

use anyhow::Result;
use serde_json::json;

use super::page::{action_button, escape, table};
use crate::output::admin_rows;
use crate::session::Session;
use crate::workstation::Sigkey;

pub(super) async fn render(session: &Session) -> Result<String> {
    let mut out = String::from("<h2>Signature keys on this workstation</h2>");
    let selected = session.home.settings()?.selected_sigkeys;
    out.push_str("<table><thead><tr><th></th><th>Num</th><th>Signs</th><th>Admin name</th><th>Algorithm</th><th>Subject key identifier</th><th>Kept in</th></tr></thead><tbody>");
    for (number, path) in session.home.sigkeys()? {
        let row = match Sigkey::read(&path) {
            Ok(key) => format!(
                "<td>{}</td><td>{}</td><td class=\"mono\">{}</td><td>{}</td>",
                escape(key.name()),
                escape(key.public_key().alg.name()),
                escape(&hex::encode(key.public_key().ski())),
                escape(&key.place())
            ),
            Err(err) => format!(
                "<td colspan=\"4\" class=\"error\">{}</td>",
                escape(&err.to_string())
            ),
        };
        let _ = write!(
            out,
            "<tr><td><input type=\"checkbox\" name=\"sigkeys\" value=\"{number}\" id=\"sigkey-{number}\"></td><td>{number}</td><td>{}</td>{row}</tr>",
            if selected.contains(&number) {
                "yes"
            } else {
                "no"
            }
        );
    }
    out.push_str("</tbody></table>");
    out.push_str(&action_button(
        "Use to sign",
        &json!({"kind": "use-sigkeys"}),
        &["sigkeys"],
    ));
    out.push_str(&action_button(
        "Add administrators",
        &json!({"kind": "add-admins"}),
        &["sigkeys", "enrollment"],
    ));
    out.push_str(" <label>Enrollment secrets of units without an admin (comma-separated) <input type=\"password\" size=\"40\" name=\"enrollment\" id=\"enrollment\" autocomplete=\"off\"></label>");

    out.push_str("<h2>Administrators of the selected crypto units</h2>");
    let units = match session.selected().await {
        Ok(targets) => session.statuses(&targets).await,
        Err(err) => Err(err),
    };
    match units {
        Ok(units) => {
            let mut rows = Vec::new();
            for (target, status) in &units {
                for row in admin_rows(status) {
                    let mut full = vec![target.number.to_string()];
                    full.extend(row);
                    rows.push((false, full));
                }
            }
            out.push_str(&table(
                &["Crypto unit num", "Admin name", "Subject key identifier"],
                &rows,
            ));
            let mut admins: Vec<(String, String)> = units
                .iter()
                .flat_map(|(_, s)| s.admins.iter().map(|a| (a.ski.to_hex(), a.name.clone())))
                .collect();
            admins.sort();
            admins.dedup();
            for (ski, name) in admins {
                out.push_str(&action_button(
                    &format!("Remove {name}"),
                    &json!({"kind": "remove-admin", "admin": ski}),
                    &[],
                ));
            }
        }
        Err(err) => {
            let _ = write!(out, "<p class=\"note\">{}</p>", escape(&format!("{err:#}")));
        }
    }
    Ok(out)
}

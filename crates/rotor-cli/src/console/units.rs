//! The Crypto units tab: instances and their units, select and deselect, enroll, compare.

use std::fmt::Write as _;

use anyhow::Result;
use serde_json::json;

use super::page::{action_button, escape, table};
use crate::cmd::units::compare_units;
use crate::session::Session;

pub(super) async fn render(session: &Session) -> Result<String> {
    let selected = session.home.settings()?.selected_units;
    let enrollments = session.home.enrollments()?;
    let service = session.service()?;
    let mut out = String::from("<h2>Crypto units</h2>");
    let mut number = 0usize;
    for instance in service.instances().await? {
        let _ = write!(
            out,
            "<h3>Service instance {} <span class=\"note mono\">{}</span></h3>",
            escape(&instance.name),
            escape(&instance.id.to_string())
        );
        out.push_str("<table><thead><tr><th></th><th>Crypto unit num</th><th>Selected</th><th>Type</th><th>Unit ID</th><th>Enrolled identity</th></tr></thead><tbody>");
        for unit in &instance.units {
            number += 1;
            let enrolled = match enrollments.get(&unit.id) {
                Some(enrollment) => format!(
                    "<span class=\"mono\">{}</span>",
                    escape(&enrollment.fingerprint.to_string())
                ),
                None => {
                    let presented = match service.unit_status(instance.id, unit.id).await {
                        Ok(status) => format!(
                            "presents <span class=\"mono\">{}</span>",
                            escape(&status.identity.fingerprint().to_string())
                        ),
                        Err(err) => format!("unreachable: {}", escape(&err.to_string())),
                    };
                    format!(
                        "NOT ENROLLED ({presented})<br><label>Fingerprint from the unit's host <input type=\"text\" size=\"66\" name=\"fingerprint-{number}\" id=\"fingerprint-{number}\"></label> {}",
                        action_button(
                            "Enroll",
                            &json!({"kind": "enroll", "unit": number}),
                            &[&format!("fingerprint=fingerprint-{number}")]
                        )
                    )
                }
            };
            let _ = write!(
                out,
                "<tr><td><input type=\"checkbox\" name=\"units\" value=\"{number}\" id=\"unit-{number}\"></td><td>{number}</td><td>{}</td><td>{}</td><td class=\"mono\">{}</td><td>{enrolled}</td></tr>",
                if selected.contains(&unit.id) {
                    "yes"
                } else {
                    "no"
                },
                escape(unit.kind.label()),
                escape(&unit.id.to_string()),
            );
        }
        out.push_str("</tbody></table>");
    }
    out.push_str(&action_button(
        "Select",
        &json!({"kind": "select"}),
        &["units"],
    ));
    out.push_str(&action_button(
        "Deselect",
        &json!({"kind": "deselect"}),
        &["units"],
    ));
    out.push_str("<h2>Compare the selected crypto units</h2>");
    out.push_str(&compare(session).await);
    Ok(out)
}

/// Admins, thresholds and both registers of the selected units, differences marked.
async fn compare(session: &Session) -> String {
    let units = match session.selected().await {
        Ok(targets) => session.statuses(&targets).await,
        Err(err) => Err(err),
    };
    let units = match units {
        Ok(units) => units,
        Err(err) => {
            return format!("<p class=\"note\">{}</p>", escape(&format!("{err:#}")));
        }
    };
    let mut out = String::new();
    let mut differences = Vec::new();
    for section in compare_units(&units) {
        if section.differs {
            differences.push(section.title);
        }
        let headers = section.table_headers();
        let rows = section.table_rows();
        let _ = write!(
            out,
            "<h3>{}{}</h3>{}",
            escape(section.title),
            if section.differs { " (differs)" } else { "" },
            table(&headers, &rows)
        );
    }
    if differences.is_empty() {
        out.push_str(
            "<p id=\"compare-result\">All selected crypto units have the same configuration.</p>",
        );
    } else {
        let _ = write!(
            out,
            "<p id=\"compare-result\" class=\"warning\">Differences (units marked *): {}</p>",
            escape(&differences.join(", "))
        );
    }
    out
}

//! The Master keys tab (both registers and their VPs on every selected unit; Load, Commit,
//! Rotate, Set immediate, Clear new, Clear current; the rotation's progress and the button that
//! finishes an interrupted one) and the Key storage tab (key versions per master key).

use std::fmt::Write as _;
use std::sync::atomic::Ordering;

use anyhow::Result;
use rotor_proto::rotation::{Phase, RotationView};
use rotor_unit::wire::RotationLock;
use serde_json::json;

use super::Console;
use super::page::{action_button, escape, table};
use crate::cmd::mk::key_storage;
use crate::session::Session;
use crate::workstation::PartFile;

/// The rotation journal of the selected units' instance, if any.
pub(super) async fn rotation_of_selection(session: &Session) -> Result<Option<RotationView>> {
    let selected = session.selected().await?;
    match selected.first() {
        Some(target) => Ok(session.service()?.rotation(target.instance).await?),
        None => Ok(None),
    }
}

pub(super) async fn render(console: &Console, session: &Session) -> Result<String> {
    let mut out = String::from("<h2>Master key registers of the selected crypto units</h2>");
    let targets = match session.selected().await {
        Ok(targets) => targets,
        Err(err) => {
            let _ = write!(out, "<p class=\"note\">{}</p>", escape(&format!("{err:#}")));
            return Ok(out);
        }
    };
    // Each unit on its own: one that does not answer (killed during a rotation, say) shows
    // why, and the others still show their registers.
    let mut units = Vec::new();
    let mut rows = Vec::new();
    for target in &targets {
        match session.status(target).await {
            Ok(status) => {
                rows.push((
                    false,
                    vec![
                        target.number.to_string(),
                        "New".to_owned(),
                        status.new.state.label().to_owned(),
                        status.new.vp.to_hex(),
                    ],
                ));
                rows.push((
                    false,
                    vec![
                        String::new(),
                        "Current".to_owned(),
                        status.current.state.label().to_owned(),
                        status.current.vp.to_hex(),
                    ],
                ));
                units.push((target.clone(), status));
            }
            Err(err) => rows.push((
                true,
                vec![
                    target.number.to_string(),
                    "-".to_owned(),
                    "DOES NOT ANSWER".to_owned(),
                    format!("{err:#}"),
                ],
            )),
        }
    }
    out.push_str(&table(
        &[
            "Crypto unit num",
            "Register",
            "Status",
            "Verification pattern",
        ],
        &rows,
    ));

    out.push_str("<h2>Key parts on this workstation</h2>");
    out.push_str("<table><thead><tr><th></th><th>Num</th><th>Description</th><th>Verification pattern</th></tr></thead><tbody>");
    for (number, path) in session.home.parts()? {
        let row = match PartFile::read(&path) {
            Ok(file) => format!(
                "<td>{}</td><td class=\"mono\">{}</td>",
                escape(&file.description),
                escape(&file.vp.to_hex())
            ),
            Err(err) => format!(
                "<td colspan=\"2\" class=\"error\">{}</td>",
                escape(&err.to_string())
            ),
        };
        let _ = write!(
            out,
            "<tr><td><input type=\"checkbox\" name=\"parts\" value=\"{number}\" id=\"part-{number}\"></td><td>{number}</td>{row}</tr>"
        );
    }
    out.push_str("</tbody></table><p>");
    out.push_str(&action_button("Load", &json!({"kind": "load"}), &["parts"]));
    for (label, kind) in [
        ("Commit", "commit"),
        ("Rotate", "rotate"),
        ("Set immediate", "set-immediate"),
        ("Clear new", "clear-new"),
        ("Clear current", "clear-current"),
    ] {
        out.push_str(&action_button(label, &json!({ "kind": kind }), &[]));
    }
    out.push_str("</p>");

    out.push_str("<section id=\"rotation-progress\" hidden><h2>Master key rotation</h2><p>Phase: <b id=\"rotation-phase\"></b></p><progress id=\"rotation-bar\" value=\"0\" max=\"1\"></progress><p id=\"rotation-numbers\"></p></section>");
    let journal = rotation_of_selection(session).await?;
    let journal_open = journal
        .as_ref()
        .is_some_and(|view| !matches!(view.journal.phase, Phase::Aborted | Phase::Completed));
    let pinned = units
        .iter()
        .any(|(_, status)| status.rotation != RotationLock::None);
    let remembered = targets.first().is_some_and(|target| {
        session
            .home
            .unfinished_rotations()
            .is_ok_and(|open| open.contains_key(&target.instance))
    });
    if !console.rotating.load(Ordering::SeqCst) && (journal_open || pinned || remembered) {
        out.push_str("<section id=\"rotation-interrupted\"><h2>The master key rotation is not finished</h2><p class=\"warning\">A rotation of this instance was interrupted. Finish it: it continues from where it stopped, on the units' and the service's real state.</p>");
        out.push_str(&action_button(
            "Finish rotation",
            &json!({"kind": "finish-rotation"}),
            &[],
        ));
        out.push_str("</section>");
    }
    Ok(out)
}

pub(super) async fn render_storage(session: &Session) -> Result<String> {
    let mut out = String::from("<h2>Key storage per master key</h2>");
    let units = match session.selected().await {
        Ok(targets) => session.statuses(&targets).await?,
        Err(err) => {
            let _ = write!(out, "<p class=\"note\">{}</p>", escape(&format!("{err:#}")));
            return Ok(out);
        }
    };
    let rows: Vec<(bool, Vec<String>)> = key_storage(session, &units)
        .await?
        .iter()
        .map(|stored| {
            (
                stored.held_in.is_none(),
                vec![
                    stored.instance.to_string(),
                    stored.vp.to_hex(),
                    stored.key_versions.to_string(),
                    stored.held_in.map_or_else(
                        || {
                            "NO SELECTED UNIT: unusable until this master key is loaded again"
                                .to_owned()
                        },
                        |register| format!("{register} register"),
                    ),
                ],
            )
        })
        .collect();
    if rows.is_empty() {
        out.push_str("<p>No key is stored yet.</p>");
    } else {
        out.push_str(&table(
            &[
                "Instance",
                "Verification pattern",
                "Key versions",
                "Held in",
            ],
            &rows,
        ));
    }
    Ok(out)
}

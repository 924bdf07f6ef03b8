//! `rotor units`: list instances and units, select them, compare them, zeroize them, forget a
//! pinned identity.

use anyhow::{Result, bail};
use rotor_unit::wire::{Action, UnitStatus};
use serde_json::json;
use uuid::Uuid;

use crate::args::UnitsCommand;
use crate::output::{admin_rows, join_numbers, print_json, table, threshold_rows};
use crate::session::Session;

/// `rotor units …`
pub async fn units(session: &Session, command: Option<UnitsCommand>) -> Result<()> {
    match command {
        None => list_units(session).await,
        Some(UnitsCommand::Select { numbers, all }) => select(session, &numbers, all, true).await,
        Some(UnitsCommand::Deselect { numbers, all }) => {
            select(session, &numbers, all, false).await
        }
        Some(UnitsCommand::Compare) => compare(session).await,
        Some(UnitsCommand::Zeroize) => {
            let count = session.selected().await?.len();
            session.confirm(&format!(
                "Zeroize {count} crypto unit(s)? Both registers are cleared and all admins removed; keys wrapped under their master key stay unusable until it is loaded again."
            ))?;
            session
                .each_selected("zeroized (imprint mode)", |_, _| Ok(Some(Action::Zeroize)))
                .await
        }
        Some(UnitsCommand::Forget { unit }) => {
            let mut pins = session.home.pins()?;
            if pins.remove(&unit).is_none() {
                bail!("no identity key is pinned for unit {unit}");
            }
            session.home.save_pins(&pins)?;
            println!("Forgot the identity key of unit {unit}; it is pinned again on next contact.");
            Ok(())
        }
    }
}

async fn list_units(session: &Session) -> Result<()> {
    let selected = session.home.settings()?.selected_units;
    let instances = session.service()?.instances().await?;
    if session.json {
        let mut number = 0;
        let view: Vec<_> = instances
            .iter()
            .map(|instance| {
                let units: Vec<_> = instance
                    .units
                    .iter()
                    .map(|unit| {
                        number += 1;
                        json!({"number": number, "selected": selected.contains(&unit.id), "id": unit.id, "kind": unit.kind, "address": unit.address})
                    })
                    .collect();
                json!({"id": instance.id, "name": instance.name, "units": units})
            })
            .collect();
        print_json(&json!({ "instances": view }));
        return Ok(());
    }
    if instances.is_empty() {
        println!("No service instances were found.");
        return Ok(());
    }
    let mut number = 0;
    for instance in &instances {
        println!("SERVICE INSTANCE: {} ({})", instance.id, instance.name);
        let rows: Vec<Vec<String>> = instance
            .units
            .iter()
            .map(|unit| {
                number += 1;
                vec![
                    number.to_string(),
                    selected.contains(&unit.id).to_string(),
                    unit.kind.label().to_owned(),
                    unit.id.to_string(),
                ]
            })
            .collect();
        print!(
            "{}",
            table(&["CRYPTO UNIT NUM", "SELECTED", "TYPE", "UNIT ID"], &rows)
        );
        println!();
    }
    Ok(())
}

async fn select(session: &Session, numbers: &[usize], all: bool, add: bool) -> Result<()> {
    let units = session.all_units().await?;
    if !all && numbers.is_empty() {
        bail!("name the unit numbers to change, or pass --all");
    }
    for number in numbers {
        if *number == 0 || *number > units.len() {
            bail!(
                "there is no crypto unit number {number}; 'rotor units' lists 1 to {}",
                units.len()
            );
        }
    }
    let chosen: Vec<Uuid> = units
        .iter()
        .filter(|t| all || numbers.contains(&t.number))
        .map(|t| t.unit.id)
        .collect();
    let mut settings = session.home.settings()?;
    if add {
        for id in chosen {
            if !settings.selected_units.contains(&id) {
                settings.selected_units.push(id);
            }
        }
    } else {
        settings.selected_units.retain(|id| !chosen.contains(id));
    }
    session.home.save_settings(&settings)?;
    let now: Vec<usize> = units
        .iter()
        .filter(|t| settings.selected_units.contains(&t.unit.id))
        .map(|t| t.number)
        .collect();
    if session.json {
        print_json(&json!({ "selected": now }));
    } else {
        println!("Selected crypto units: {}", join_numbers(&now));
    }
    Ok(())
}

/// One section of `units compare`: a value per unit, and whether they all agree.
struct Section {
    title: &'static str,
    headers: &'static [&'static str],
    rows_of: fn(&UnitStatus) -> Vec<Vec<String>>,
}

fn current_rows(status: &UnitStatus) -> Vec<Vec<String>> {
    vec![vec![
        status.current.state.label().to_owned(),
        status.current.vp.to_hex(),
    ]]
}

fn new_rows(status: &UnitStatus) -> Vec<Vec<String>> {
    vec![vec![
        status.new.state.label().to_owned(),
        status.new.vp.to_hex(),
    ]]
}

const SECTIONS: &[Section] = &[
    Section {
        title: "ADMINISTRATORS",
        headers: &["ADMIN NAME", "SUBJECT KEY IDENTIFIER"],
        rows_of: admin_rows,
    },
    Section {
        title: "SIGNATURE THRESHOLDS",
        headers: &["SIGNATURE", "REVOCATION", "MODE"],
        rows_of: threshold_rows,
    },
    Section {
        title: "CURRENT MASTER KEY REGISTER",
        headers: &["STATUS", "VERIFICATION PATTERN"],
        rows_of: current_rows,
    },
    Section {
        title: "NEW MASTER KEY REGISTER",
        headers: &["STATUS", "VERIFICATION PATTERN"],
        rows_of: new_rows,
    },
];

async fn compare(session: &Session) -> Result<()> {
    let units = session.statuses(&session.selected().await?).await?;
    let mut differences = Vec::new();
    let mut text = String::new();
    for section in SECTIONS {
        let values: Vec<Vec<Vec<String>>> =
            units.iter().map(|(_, s)| (section.rows_of)(s)).collect();
        // The most common value is the reference; units that differ from it are marked.
        let reference = values
            .iter()
            .max_by_key(|v| values.iter().filter(|w| w == v).count())
            .cloned()
            .unwrap_or_default();
        let differs = values.iter().any(|v| *v != reference);
        if differs {
            differences.push(section.title);
        }
        let mut headers = vec!["CRYPTO UNIT NUM"];
        headers.extend_from_slice(section.headers);
        let mut rows = Vec::new();
        for ((target, _), value) in units.iter().zip(&values) {
            let mark = if *value != reference { " *" } else { "" };
            for (i, row) in value.iter().enumerate() {
                let label = if i == 0 {
                    format!("{}{mark}", target.number)
                } else {
                    String::new()
                };
                let mut full = vec![label];
                full.extend(row.iter().cloned());
                rows.push(full);
            }
        }
        text.push_str(&format!(
            "{}{}\n",
            section.title,
            if differs { "  (differs)" } else { "" }
        ));
        text.push_str(&table(&headers, &rows));
        text.push('\n');
    }
    if session.json {
        let view: Vec<_> = units
            .iter()
            .map(|(t, s)| json!({"number": t.number, "status": s}))
            .collect();
        print_json(&json!({"units": view, "differences": differences}));
    } else {
        print!("{text}");
        if differences.is_empty() {
            println!("All selected crypto units have the same configuration.");
        } else {
            println!("Differences (units marked *): {}", differences.join(", "));
        }
    }
    Ok(())
}

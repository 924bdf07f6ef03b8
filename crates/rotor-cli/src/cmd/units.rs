//! `rotor units`: list instances and units, select them, compare them, zeroize them, enroll
//! and forget their identities.

use std::io::IsTerminal;

use anyhow::{Result, anyhow, bail};
use rotor_crypto::Fingerprint;
use rotor_unit::trust::Enrollment;
use rotor_unit::wire::{Action, UnitStatus};
use serde_json::json;
use uuid::Uuid;

use crate::args::UnitsCommand;
use crate::output::{admin_rows, join_numbers, print_json, table, threshold_rows};
use crate::session::{Session, Target, TrustError};

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
        Some(UnitsCommand::Enroll { unit, fingerprint }) => {
            enroll(session, &unit, fingerprint.as_deref()).await
        }
        Some(UnitsCommand::Forget { unit }) => {
            let mut enrollments = session.home.enrollments()?;
            if enrollments.remove(&unit).is_none() {
                bail!("unit {unit} is not enrolled");
            }
            session.home.save_enrollments(&enrollments)?;
            println!(
                "Forgot the identity of unit {unit}; enroll it again with 'rotor units enroll' before using it."
            );
            Ok(())
        }
    }
}

/// `rotor units enroll UNIT [--fingerprint HEX]`: the unit's signed status must come from the
/// identity whose fingerprint was learned out of band (given, or confirmed on the terminal).
async fn enroll(session: &Session, unit: &str, fingerprint: Option<&str>) -> Result<()> {
    let given = fingerprint
        .map(|text| {
            Fingerprint::from_hex(text)
                .ok_or_else(|| anyhow!("--fingerprint must be 64 hex characters"))
        })
        .transpose()?;
    if given.is_none() && session.yes {
        bail!(
            "--yes enrolls only with --fingerprint: a fingerprint shown here came through the service, so without a terminal give the one learned on the unit's host"
        );
    }
    let units = session.all_units().await?;
    let target = find_unit(&units, unit)?;
    let mut enrollments = session.home.enrollments()?;
    if enrollments.contains_key(&target.unit.id) {
        // The usual check: the same identity passes, another is refused with what to do.
        session.status(target).await?;
        session.say(&format!(
            "Crypto unit {} is already enrolled.",
            target.number
        ));
        return Ok(());
    }
    let status = session
        .service()?
        .unit_status(target.instance, target.unit.id)
        .await?;
    let presented = status.identity.fingerprint();
    match given {
        Some(given) if given != presented => {
            return Err(TrustError::FingerprintMismatch {
                number: target.number,
                given,
                presented,
            }
            .into());
        }
        Some(_) => {}
        None => confirm_fingerprint(target, &presented)?,
    }
    enrollments.insert(target.unit.id, Enrollment::new(presented, status.counter));
    session.home.save_enrollments(&enrollments)?;
    if session.json {
        print_json(&json!({"unit": target.number, "id": target.unit.id, "fingerprint": presented}));
    } else {
        session.say(&format!(
            "Enrolled crypto unit {} ({}) with identity fingerprint {presented}.",
            target.number, target.unit.id
        ));
    }
    Ok(())
}

/// Shows the fingerprint the unit presents and asks whether it is the one on the unit's host.
fn confirm_fingerprint(target: &Target, presented: &Fingerprint) -> Result<()> {
    if !std::io::stdin().is_terminal() {
        bail!(
            "enrolling without --fingerprint needs a terminal to confirm the fingerprint; pass --fingerprint with the one 'rotor unit serve' printed on the unit's host"
        );
    }
    eprintln!(
        "Crypto unit {} ({}) presents identity fingerprint\n  {presented}\nCompare it with the fingerprint 'rotor unit serve' printed on the unit's host.",
        target.number, target.unit.id
    );
    eprint!("Is it the same? [y/N] ");
    let mut answer = String::new();
    std::io::stdin().read_line(&mut answer)?;
    if matches!(answer.trim(), "y" | "Y" | "yes") {
        Ok(())
    } else {
        bail!("not enrolled")
    }
}

/// A unit by its number in the listing or by its id.
fn find_unit<'a>(units: &'a [Target], unit: &str) -> Result<&'a Target> {
    let found = match unit.parse::<usize>() {
        Ok(number) => units.iter().find(|t| t.number == number),
        Err(_) => {
            let id = Uuid::parse_str(unit)
                .map_err(|_| anyhow!("name the unit by its number in 'rotor units' or its id"))?;
            units.iter().find(|t| t.unit.id == id)
        }
    };
    found.ok_or_else(|| anyhow!("there is no crypto unit {unit}; 'rotor units' lists them"))
}

async fn list_units(session: &Session) -> Result<()> {
    let selected = session.home.settings()?.selected_units;
    let enrollments = session.home.enrollments()?;
    let fingerprint = |id: &Uuid| enrollments.get(id).map(|e| e.fingerprint);
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
                        json!({"number": number, "selected": selected.contains(&unit.id), "id": unit.id, "kind": unit.kind, "address": unit.address, "enrolled": fingerprint(&unit.id)})
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
                    fingerprint(&unit.id).map_or_else(
                        || "NOT ENROLLED".to_owned(),
                        |fingerprint| fingerprint.to_string(),
                    ),
                ]
            })
            .collect();
        print!(
            "{}",
            table(
                &[
                    "CRYPTO UNIT NUM",
                    "SELECTED",
                    "TYPE",
                    "UNIT ID",
                    "ENROLLED IDENTITY"
                ],
                &rows
            )
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
        session.say(&format!("Selected crypto units: {}", join_numbers(&now)));
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

/// One section of a comparison: each unit's rows, marked where they differ from the most
/// common value (the reference).
pub struct Compared {
    /// The section's title.
    pub title: &'static str,
    /// Its column headers, after the unit number.
    pub headers: &'static [&'static str],
    /// Each unit's number, rows, and whether they differ from the reference.
    pub units: Vec<(usize, Vec<Vec<String>>, bool)>,
    /// Whether any unit differs.
    pub differs: bool,
}

impl Compared {
    /// The column headers, the unit number first.
    pub fn table_headers(&self) -> Vec<&'static str> {
        let mut headers = vec!["CRYPTO UNIT NUM"];
        headers.extend_from_slice(self.headers);
        headers
    }

    /// The table's rows, each with whether its unit differs: a unit's number (marked `*` when
    /// it differs) on its first row only.
    pub fn table_rows(&self) -> Vec<(bool, Vec<String>)> {
        let mut rows = Vec::new();
        for (number, value, differs) in &self.units {
            let mark = if *differs { " *" } else { "" };
            for (i, row) in value.iter().enumerate() {
                let label = if i == 0 {
                    format!("{number}{mark}")
                } else {
                    String::new()
                };
                let mut full = vec![label];
                full.extend(row.iter().cloned());
                rows.push((*differs, full));
            }
        }
        rows
    }
}

/// Admins, thresholds and both registers of `units`, side by side, differences marked.
pub fn compare_units(units: &[(Target, UnitStatus)]) -> Vec<Compared> {
    SECTIONS
        .iter()
        .map(|section| {
            let values: Vec<Vec<Vec<String>>> =
                units.iter().map(|(_, s)| (section.rows_of)(s)).collect();
            // The most common value is the reference; units that differ from it are marked.
            let reference = values
                .iter()
                .max_by_key(|v| values.iter().filter(|w| w == v).count())
                .cloned()
                .unwrap_or_default();
            let compared: Vec<(usize, Vec<Vec<String>>, bool)> = units
                .iter()
                .zip(values)
                .map(|((target, _), value)| {
                    let differs = value != reference;
                    (target.number, value, differs)
                })
                .collect();
            Compared {
                title: section.title,
                headers: section.headers,
                differs: compared.iter().any(|(_, _, differs)| *differs),
                units: compared,
            }
        })
        .collect()
}

async fn compare(session: &Session) -> Result<()> {
    let units = session.statuses(&session.selected().await?).await?;
    let mut differences = Vec::new();
    let mut text = String::new();
    for section in compare_units(&units) {
        if section.differs {
            differences.push(section.title);
        }
        let headers = section.table_headers();
        let rows: Vec<Vec<String>> = section
            .table_rows()
            .into_iter()
            .map(|(_, row)| row)
            .collect();
        text.push_str(&format!(
            "{}{}\n",
            section.title,
            if section.differs { "  (differs)" } else { "" }
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

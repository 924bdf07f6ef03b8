//! Tables for people, JSON for machines.

use rotor_unit::wire::UnitStatus;

/// Left-aligned columns separated by two spaces, with a header row.
pub fn table(headers: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (i, cell) in row.iter().enumerate() {
            if let Some(width) = widths.get_mut(i) {
                *width = (*width).max(cell.chars().count());
            }
        }
    }
    let mut out = String::new();
    let mut line = |cells: Vec<&str>| {
        let text: Vec<String> = cells
            .iter()
            .zip(&widths)
            .map(|(cell, width)| format!("{cell:<width$}"))
            .collect();
        out.push_str(text.join("  ").trim_end());
        out.push('\n');
    };
    line(headers.to_vec());
    for row in rows {
        line(row.iter().map(String::as_str).collect());
    }
    out
}

/// Prints one JSON value on one line.
pub fn print_json(value: &serde_json::Value) {
    println!("{value}");
}

pub fn join_numbers(numbers: &[usize]) -> String {
    if numbers.is_empty() {
        return "none".to_owned();
    }
    numbers
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

/// The admins of a unit, one row each (name, SKI).
pub fn admin_rows(status: &UnitStatus) -> Vec<Vec<String>> {
    if status.admins.is_empty() {
        return vec![vec!["(none)".to_owned(), String::new()]];
    }
    status
        .admins
        .iter()
        .map(|a| vec![a.name.clone(), a.ski.to_hex()])
        .collect()
}

/// A unit's thresholds and mode as one row.
pub fn threshold_rows(status: &UnitStatus) -> Vec<Vec<String>> {
    vec![vec![
        status.signature_threshold.to_string(),
        status.revocation_threshold.to_string(),
        if status.imprint { "imprint" } else { "secure" }.to_owned(),
    ]]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns_align_to_the_widest_cell() {
        let text = table(&["A", "BB"], &[vec!["long".into(), "x".into()]]);
        assert_eq!(text, "A     BB\nlong  x\n");
    }
}

//! The rules for key names and aliases, as Key Protect states them.

use uuid::Uuid;

use super::error::{KpError, KpResult};

/// A key's name: 2 to 90 characters, none a control character.
pub(super) fn check_name(name: &str) -> KpResult<()> {
    let length = name.chars().count();
    if !(2..=90).contains(&length) || name.chars().any(char::is_control) {
        return Err(KpError::field("name", "has 2 to 90 printable characters"));
    }
    Ok(())
}

/// An alias: 2 to 90 ASCII letters, digits, `-` and `_`, and not a UUID (which would read as
/// a key's id).
pub(super) fn check_alias(alias: &str) -> KpResult<()> {
    let valid = (2..=90).contains(&alias.len())
        && alias
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        && Uuid::parse_str(alias).is_err();
    if valid {
        Ok(())
    } else {
        Err(KpError::field(
            "aliases",
            "holds 2 to 90 characters of letters, digits, '-' and '_', and is not a UUID",
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_aliases_are_checked() {
        assert!(check_name("ok").is_ok());
        assert!(
            matches!(check_name("x"), Err(KpError::InvalidField { field, .. }) if field == "name")
        );
        assert!(check_name("bad\nname").is_err());
        assert!(check_alias("my-alias_1").is_ok());
        assert!(check_alias(&Uuid::from_u128(1).to_string()).is_err());
        assert!(check_alias("no spaces").is_err());
    }
}

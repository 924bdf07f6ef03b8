//! Where passwords and PINs come from: the console's page or the terminal (`ROTOR_PASSWORD`,
//! `ROTOR_PIN`).

use std::path::PathBuf;

use zeroize::Zeroizing;

use super::FileError;

/// The shortest password accepted for a new file.
pub const MIN_PASSWORD: usize = 8;

/// What a secret is asked for: the page of the console answers by kind and number, the
/// terminal by the prompt.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum SecretFor {
    /// The password of signature key file `number`, which belongs to admin `name`.
    Sigkey {
        /// Its number on this workstation.
        number: u32,
        /// Its admin name.
        name: String,
    },
    /// The password of key part file `number`.
    Part {
        /// Its number on this workstation.
        number: u32,
    },
    /// The user PIN of the PKCS#11 token labelled `label`.
    TokenPin {
        /// The token's label.
        label: String,
    },
}

impl SecretFor {
    /// The prompt shown on a terminal.
    pub fn prompt(&self) -> String {
        match self {
            Self::Sigkey { number, name } => {
                format!("Password for signature key {number} ({name}): ")
            }
            Self::Part { number } => format!("Password for key part {number}: "),
            Self::TokenPin { label } => format!("PIN of token '{label}': "),
        }
    }
}

/// Where the passwords (and PINs) of one command come from.
pub trait Secrets: Send + Sync {
    /// The secret for `what`, or why there is none.
    fn secret(&self, what: &SecretFor) -> Result<Zeroizing<String>, FileError>;
}

/// The command line's source of secrets: `ROTOR_PIN` for token PINs and `ROTOR_PASSWORD` for
/// passwords when set, else a prompt on the terminal.
pub struct TerminalSecrets;

impl Secrets for TerminalSecrets {
    fn secret(&self, what: &SecretFor) -> Result<Zeroizing<String>, FileError> {
        if let SecretFor::TokenPin { .. } = what {
            if let Ok(pin) = std::env::var("ROTOR_PIN") {
                return Ok(Zeroizing::new(pin));
            }
            return rpassword::prompt_password(what.prompt())
                .map(Zeroizing::new)
                .map_err(|_| FileError::NoPassword);
        }
        read_password(&what.prompt())
    }
}

/// Reads a password: `ROTOR_PASSWORD` if set, else a prompt on the terminal.
pub fn read_password(prompt: &str) -> Result<Zeroizing<String>, FileError> {
    if let Ok(password) = std::env::var("ROTOR_PASSWORD") {
        return Ok(Zeroizing::new(password));
    }
    rpassword::prompt_password(prompt)
        .map(Zeroizing::new)
        .map_err(|_| FileError::NoPassword)
}

/// Reads a password for a new file, asking twice on a terminal.
pub fn new_password(what: &str) -> Result<Zeroizing<String>, FileError> {
    let password = read_password(&format!("New password for {what}: "))?;
    if std::env::var_os("ROTOR_PASSWORD").is_none() {
        let again = read_password("Repeat it: ")?;
        if *again != *password {
            return Err(FileError::Corrupt {
                path: PathBuf::from(what),
                why: "the two passwords differ".to_owned(),
            });
        }
    }
    if password.chars().count() < MIN_PASSWORD {
        return Err(FileError::WeakPassword);
    }
    Ok(password)
}

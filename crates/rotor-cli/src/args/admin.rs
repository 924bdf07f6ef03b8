//! The administrators' commands: crypto units, admins, signature thresholds, master keys,
//! signature keys, key parts, the automatic ceremonies, and the service's API keys.

use std::path::PathBuf;

use clap::{Args, Subcommand};

/// `rotor apikeys …`
#[derive(Debug, Subcommand)]
pub enum ApikeysCommand {
    /// Create an API key and print it, this once.
    Create {
        /// A name for people (unique among unrevoked keys); the subject of its tokens.
        #[arg(long)]
        name: String,
        /// An instance id the key covers (repeatable), or '*' for all; your own key must cover
        /// each.
        #[arg(long = "instance", value_name = "ID", required = true)]
        instances: Vec<String>,
        /// What the key may do.
        #[arg(long, value_enum, ignore_case = true)]
        role: ApiKeyRole,
    },
    /// List the stored API keys your key may manage, revoked ones included (--json: all fields).
    List,
    /// Give a key a new value and print it, this once. Its old value is refused at once, its
    /// tokens within 5 seconds.
    Rotate {
        /// The key's id, as 'rotor apikeys list' shows it.
        id: uuid::Uuid,
    },
    /// Revoke a key for good. The key is refused at once, its tokens within 5 seconds.
    Revoke {
        /// The key's id, as 'rotor apikeys list' shows it.
        id: uuid::Uuid,
    },
}

/// The role of a new API key.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum ApiKeyRole {
    /// Reads key metadata and uses root keys (wrap, unwrap, rewrap).
    #[value(name = "Reader")]
    Reader,
    /// Also creates, rotates, enables and disables keys.
    #[value(name = "Writer")]
    Writer,
    /// Everything, crypto unit commands and API keys included.
    #[value(name = "Manager")]
    Manager,
    /// Crypto unit commands only.
    #[value(name = "CryptoUnitAdministrator")]
    CryptoUnitAdministrator,
}

/// `rotor units …`
#[derive(Debug, Subcommand)]
pub enum UnitsCommand {
    /// Add units to the selection, by the numbers 'rotor units' shows.
    Select {
        /// Unit numbers.
        numbers: Vec<usize>,
        /// Select every unit of every instance.
        #[arg(long, conflicts_with = "numbers")]
        all: bool,
    },
    /// Remove units from the selection (nothing changes on the units).
    Deselect {
        /// Unit numbers.
        numbers: Vec<usize>,
        /// Deselect every unit.
        #[arg(long, conflicts_with = "numbers")]
        all: bool,
    },
    /// Show admins, thresholds and both registers of the selected units side by side, and mark
    /// every difference.
    Compare,
    /// Clear both registers, remove all admins and return the selected units to imprint mode.
    /// Key storage wrapped under their master key becomes unusable unless the key is reloaded.
    Zeroize,
    /// Enroll a unit's identity on this workstation: only enrolled units are sent signed
    /// commands, key parts or a master key. Compare the fingerprint with the one 'rotor unit
    /// serve' printed on the unit's host.
    Enroll {
        /// The unit's number, as 'rotor units' lists it, or its id.
        unit: String,
        /// The identity fingerprint learned out of band (64 hex characters); without it, the
        /// fingerprint the unit presents is shown for confirmation on the terminal.
        #[arg(long)]
        fingerprint: Option<String>,
    },
    /// Forget a unit's enrolled identity (after replacing the unit on purpose); enroll the new
    /// one before using the unit again.
    Forget {
        /// The unit's id.
        unit: uuid::Uuid,
    },
}

/// `rotor admins …`
#[derive(Debug, Subcommand)]
pub enum AdminsCommand {
    /// Install the admins of these signature key files on every selected unit.
    Add {
        /// Signature key numbers, as 'rotor sigkeys' lists them.
        #[arg(required = true)]
        sigkeys: Vec<u32>,
        /// Enrollment secrets of units without an admin yet.
        #[command(flatten)]
        enrollment: EnrollmentArgs,
    },
    /// Remove an admin from every selected unit.
    Rm {
        /// The admin's subject key identifier (or a unique prefix of it), or a signature key
        /// number prefixed with '#', e.g. '#2'.
        admin: String,
    },
}

/// The secrets that let the first admin onto fresh or zeroized units.
#[derive(Debug, Args)]
pub struct EnrollmentArgs {
    /// The enrollment secret a unit without admins printed at start (or wrote to its info
    /// file); repeat it, or separate with commas, for several units: each unit takes only its
    /// own. The first admin of such a unit is installed only with it.
    #[arg(
        long = "enrollment-secret",
        env = "ROTOR_ENROLLMENT_SECRET",
        hide_env_values = true,
        value_delimiter = ',',
        value_name = "SECRET"
    )]
    pub secrets: Vec<String>,
}

/// `rotor thresholds …`
#[derive(Debug, Subcommand)]
pub enum ThresholdsCommand {
    /// Set both thresholds on every selected unit. From imprint mode this is how a unit leaves
    /// it, signed by as many admins as the new signature threshold.
    Set {
        /// Signatures most commands need (1 to 8).
        #[arg(long)]
        signature: u8,
        /// Signatures removing an admin needs (1 to 8).
        #[arg(long)]
        revocation: u8,
    },
}

/// `rotor mk …`
#[derive(Debug, Subcommand)]
pub enum MkCommand {
    /// Load the new register of every selected unit from 2 or 3 key part files. Each part is
    /// encrypted on this workstation to a fresh importer key of each unit.
    Load {
        /// Key part numbers, as 'rotor parts' lists them.
        #[arg(num_args = 2..=3, required = true)]
        parts: Vec<u32>,
    },
    /// Commit the new register of every selected unit.
    Commit {
        /// The VP to expect (default: the one the selected units show, which must agree).
        #[arg(long)]
        vp: Option<String>,
    },
    /// Set immediate: promote the committed new register to current on every selected unit.
    /// This does not reencrypt key storage.
    Setimm {
        /// The VP to expect (default: the one the selected units show, which must agree).
        #[arg(long)]
        vp: Option<String>,
    },
    /// Rotate the master key: pin the committed new register of every unit of the instance,
    /// let the service rewrap all key storage to it (online: key operations keep working), then
    /// promote every unit. Pre-checks every unit first. Running it again after any failure
    /// continues from the real state; units already promoted count as done.
    Rotate {
        /// Abort the open rotation instead (threshold-signed on every unit): key storage is
        /// rewrapped back to the current master key. Impossible once a unit is promoted.
        #[arg(long)]
        abort: bool,
        /// Stop once key storage is under the new master key, before any unit is promoted, so
        /// applications can rewrap their own blobs (GREP11 RewrapKeyBlob); run it again
        /// without this flag to promote.
        #[arg(long, conflicts_with = "abort")]
        hold_before_promote: bool,
    },
    /// Clear the new register of every selected unit.
    ClearNew,
    /// Clear the current register of every selected unit; keys wrapped under it become
    /// unusable until the same master key is loaded again.
    ClearCurrent,
}

/// `rotor sigkeys …`
#[derive(Debug, Subcommand)]
pub enum SigkeysCommand {
    /// Create a signature key: a file protected by a password, or a key pair in a token
    ///
    /// With --token, the key pair is generated inside the PKCS#11 token and its private key never
    /// leaves it; signing asks for the token's PIN (ROTOR_PIN in scripts).
    New {
        /// The admin name (1 to 30 characters) the key is installed under.
        #[arg(long)]
        name: String,
        /// Curve: p256 (ECDSA P-256/SHA-256) or p521 (ECDSA P-521/SHA-512, as HPCS uses).
        #[arg(long, default_value = "p256")]
        curve: String,
        /// Generate the key pair inside the PKCS#11 token with this label.
        #[arg(long, value_name = "LABEL")]
        token: Option<String>,
        /// The key pair's CKA_ID on the token, in hex (default: 16 random bytes). A key pair
        /// already there under this id is taken instead of generating one. Tokens that map ids to
        /// slots need theirs, e.g. 02 for YubiKey PIV slot 9c.
        #[arg(long, value_name = "HEX", requires = "token")]
        key_id: Option<String>,
        /// The PKCS#11 module (shared library) of the token.
        #[arg(long, env = "ROTOR_PKCS11_MODULE", value_name = "PATH")]
        module: Option<PathBuf>,
    },
    /// Import a signature key file of the HPCS TKE CLI (`N.sigkey`, P-521). Its password is asked
    /// first; the new rotor file is then protected by a new password (ROTOR_PASSWORD answers
    /// both).
    Import {
        /// The HPCS `.sigkey` file.
        file: PathBuf,
        /// The admin name (1 to 30 characters) the key is installed under.
        #[arg(long)]
        name: String,
    },
    /// Select the signature keys that sign later commands.
    Use {
        /// Signature key numbers.
        #[arg(required = true)]
        numbers: Vec<u32>,
    },
    /// Delete a signature key file. If it belongs to an installed admin, keep a backup: without
    /// enough admin keys a unit can only be zeroized.
    Rm {
        /// Signature key number.
        number: u32,
    },
}

/// `rotor parts …`
#[derive(Debug, Subcommand)]
pub enum PartsCommand {
    /// Create a master key part, random or a given value: a file protected by a password, or on tokens
    ///
    /// With --token, a random part is generated inside the PKCS#11 token and its verification
    /// pattern computed there (--token twice: then copied, wrapped between the two tokens, to
    /// the second as a backup copy); a --value is written into the tokens. Either way the part
    /// leaves a token only wrapped to a unit's importer key.
    New {
        /// The part as 64 hex characters (default: random).
        #[arg(long)]
        value: Option<String>,
        /// A description for the custodian.
        #[arg(long, default_value = "")]
        description: String,
        /// Keep the part inside the PKCS#11 token with this label (at most twice).
        #[arg(long = "token", value_name = "LABEL", num_args = 1)]
        tokens: Vec<String>,
        /// The PKCS#11 module (shared library) of the tokens.
        #[arg(long, env = "ROTOR_PKCS11_MODULE", value_name = "PATH")]
        module: Option<PathBuf>,
    },
    /// Check a key part kept on tokens: each token that is present computes the part's
    /// verification pattern inside itself, which must be the one recorded when it was created.
    Verify {
        /// Key part number.
        number: u32,
    },
    /// Delete a key part file.
    Rm {
        /// Key part number.
        number: u32,
    },
}

/// `rotor auto …`
#[derive(Debug, Subcommand)]
pub enum AutoCommand {
    /// Initialize every unit of one instance from imprint mode: install the admins, set the
    /// thresholds (signed by the selected signature keys), generate a random master key in a
    /// recovery unit and copy it, encrypted, to every other unit. Select all units of the
    /// instance first. Running it again after a failure continues where it stopped.
    Init {
        /// Signature keys whose admins to install, as 'rotor sigkeys' numbers them.
        #[arg(long, required = true, num_args = 1..)]
        admins: Vec<u32>,
        /// Signatures most commands need (1 to 8).
        #[arg(long)]
        signature: u8,
        /// Signatures removing an admin needs (1 to 8).
        #[arg(long)]
        revocation: u8,
        /// Enrollment secrets of units without an admin yet.
        #[command(flatten)]
        enrollment: EnrollmentArgs,
    },
    /// Copy a recovery unit's current master key to the selected units whose current register is
    /// empty (after an accidental clear or zeroize, or a replaced unit).
    Recover,
    /// Rotate the master key of the instance: a random key made in a recovery unit, exported
    /// encrypted to every other unit, committed and pinned everywhere, all key storage rewrapped
    /// by the service (online), then every unit promoted. Select all units of the instance.
    /// Running it again after any failure continues from the real state.
    Rotate {
        /// Stop once key storage is under the new master key, before any unit is promoted, so
        /// applications can rewrap their own blobs (GREP11 RewrapKeyBlob); run it again
        /// without this flag to promote.
        #[arg(long)]
        hold_before_promote: bool,
    },
}

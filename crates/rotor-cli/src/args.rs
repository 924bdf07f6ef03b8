//! The command line, as clap parses it.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

/// rotor: crypto units with master keys in current and new registers, a quorum of administrators
/// who sign every change, and the key service around them.
///
/// Workstation files live in ROTOR_HOME (default ~/.rotor). Every command runs without a
/// terminal: --yes answers confirmations, ROTOR_PASSWORD answers every password prompt,
/// ROTOR_API_KEY, ROTOR_ENDPOINT and ROTOR_CA_CERT name the service and its credentials, --json prints
/// machine-readable output.
#[derive(Debug, Parser)]
#[command(name = "rotor", version, max_term_width = 100, after_help = crate::exit::HELP)]
pub struct Cli {
    /// Print machine-readable JSON.
    #[arg(long, global = true)]
    pub json: bool,
    /// Answer yes to every confirmation.
    #[arg(long, short = 'y', global = true)]
    pub yes: bool,
    /// Service endpoint for this command (overrides 'rotor login').
    #[arg(long, global = true, env = "ROTOR_ENDPOINT")]
    pub endpoint: Option<String>,
    /// CA certificate(s) (PEM) that the service's HTTPS certificate must chain to (overrides
    /// 'rotor login'); without it, the system's trusted roots.
    #[arg(long, global = true, env = "ROTOR_CA_CERT")]
    pub ca_cert: Option<PathBuf>,
    /// Log lines on standard error as text or as JSON (one object a line, with each request's
    /// correlation id); default: text on a terminal, else JSON. ROTOR_LOG sets the level (warn).
    #[arg(long, global = true, env = "ROTOR_LOG_FORMAT", value_enum)]
    pub log_format: Option<LogFormat>,
    /// What to do.
    #[command(subcommand)]
    pub command: Commands,
}

/// How log lines are written (plain comments on the values keep `--help` short).
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    // For people: one line per event, the request's span fields in front.
    Text,
    // For log collectors: one JSON object per line, the span's fields under "span".
    Json,
}

/// `rotor audit`.
#[derive(Debug, Args)]
pub struct AuditArgs {
    /// Omit to show the chains.
    #[command(subcommand)]
    pub command: Option<AuditCommand>,
    /// Only the admin chain of this crypto unit (its number in 'rotor units').
    #[arg(long, global = true)]
    pub unit: Option<usize>,
}

/// `rotor audit verify`.
#[derive(Debug, Subcommand)]
pub enum AuditCommand {
    /// Check every unit signature and every link of the chains against the units' signed heads
    /// (with the identity keys this workstation knows); name the first entry that was changed,
    /// removed or reordered (exit code 5).
    Verify,
}

/// Top-level commands.
#[derive(Debug, Subcommand)]
pub enum Commands {
    /// Log in to the service: checks the API key and remembers it (mode 0600) with the endpoint
    /// and the CA certificate (--ca-cert); later commands exchange it for short-lived tokens as
    /// needed, so long ceremonies never fail on an expired token.
    Login {
        /// The service's base URL, e.g. https://rotor.example:8443.
        #[arg(long)]
        endpoint: String,
        /// An API key with the Manager or Crypto Unit Administrator role (or ROTOR_API_KEY).
        #[arg(long, env = "ROTOR_API_KEY", hide_env_values = true)]
        api_key: String,
    },
    /// Create, list, rotate and revoke the API keys kept in the service's store (Manager role).
    ///
    /// Every replica honours a change at once. A key's value is shown only when it is created or
    /// rotated. A revoked or rotated key is refused at once; its tokens are refused (401) within
    /// 5 seconds on every replica. The API keys of the service's configuration are a bootstrap
    /// and are not listed here.
    Apikeys {
        /// What to do.
        #[command(subcommand)]
        command: ApikeysCommand,
    },
    /// List instances and their crypto units; select which units later commands act on.
    Units {
        /// Omit to list.
        #[command(subcommand)]
        command: Option<UnitsCommand>,
    },
    /// List the administrators installed on the selected units, or add and remove them.
    Admins {
        /// Omit to list.
        #[command(subcommand)]
        command: Option<AdminsCommand>,
    },
    /// Show the signature and revocation thresholds of the selected units, or set them.
    Thresholds {
        /// Omit to show.
        #[command(subcommand)]
        command: Option<ThresholdsCommand>,
    },
    /// Show the audit chains: each unit's admin commands and the key events of each instance;
    /// 'rotor audit verify' checks them.
    Audit(AuditArgs),
    /// Show the master key registers of the selected units, or change them.
    Mk {
        /// Omit to show both registers and their verification patterns.
        #[command(subcommand)]
        command: Option<MkCommand>,
    },
    /// List signature key files on this workstation, or create, select and remove them.
    Sigkeys {
        /// Omit to list.
        #[command(subcommand)]
        command: Option<SigkeysCommand>,
    },
    /// List master key part files on this workstation, or create and remove them.
    Parts {
        /// Omit to list.
        #[command(subcommand)]
        command: Option<PartsCommand>,
    },
    /// Flows with recovery units: initialize an instance with a random master key, or recover
    /// units that lost theirs.
    Auto {
        /// What to do.
        #[command(subcommand)]
        command: AutoCommand,
    },
    /// The Management Utilities as a local web application, on loopback only.
    ///
    /// Tabs for crypto units, administrators, signature thresholds, master keys, key storage
    /// and audit; every action asks in the page for the passwords and PINs it needs and runs
    /// the same code as the command line. The URL it prints (and opens) carries a random
    /// session token: requests without it are refused, and so are state-changing requests
    /// from any other origin.
    Console(ConsoleArgs),
    /// Run a crypto unit.
    Unit {
        /// What to do.
        #[command(subcommand)]
        command: UnitCommand,
    },
    /// The deployment's own certificate authority: issue, renew and revoke the certificates of
    /// the service's API, its units (servers) and the service as their client (mutual TLS).
    Pki {
        /// What to do.
        #[command(subcommand)]
        command: PkiCommand,
    },
    /// Run the service.
    Server {
        /// Configuration file (TOML): listen address, instances and their units.
        #[arg(long)]
        config: PathBuf,
        /// Exit when the parent process exits (used by 'rotor dev --replicas').
        #[arg(long, hide = true)]
        exit_with_parent: bool,
    },
    /// Start a local instance: unit processes and the service on loopback.
    Dev(DevArgs),
    /// Run the main demonstration end to end on a fresh local instance: 2 operational and 1
    /// recovery unit as processes, the key-part ceremony, N root keys each wrapping a DEK, a
    /// master key rotation ('rotor auto rotate') under a concurrent unwrap load, then every DEK
    /// unwrapped and compared. With --json the last line is a JSON summary.
    Demo(DemoArgs),
    /// Drive the Key Protect wrap, unwrap or rewrap path of a running service with N
    /// connections for a while; report requests/s and p50/p99/p99.9 latency.
    ///
    /// With --baseline, the same drive then runs against an in-process yardstick served over
    /// the same TLS and HTTP stack (a JSON body, one AES-256-GCM operation on a 32-byte DEK
    /// under a key in memory, a JSON answer; no authentication, storage or crypto unit), and
    /// the ratio is printed. The load generator runs on the same machine as what it measures.
    Bench(BenchArgs),
}

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

/// `rotor pki …`
#[derive(Debug, Subcommand)]
pub enum PkiCommand {
    /// Create the certificate authority in --dir: ca.pem (give it to every peer), ca.key
    /// (mode 0600: keep it offline between uses), crl.pem, issued.json.
    Init {
        /// The authority's directory.
        #[arg(long)]
        dir: PathBuf,
        /// A name for the deployment, shown in the CA certificate.
        #[arg(long, default_value = "rotor")]
        name: String,
    },
    /// Issue a certificate and a new key pair: OUT.pem and OUT.key (mode 0600).
    Issue {
        /// The authority's directory.
        #[arg(long)]
        dir: PathBuf,
        /// api: the service's HTTPS API; unit: a crypto unit of --instance (a server);
        /// service: the service as the client of --instance's units.
        #[arg(value_enum)]
        role: PkiRole,
        /// The instance (unit and service certificates).
        #[arg(long)]
        instance: Option<uuid::Uuid>,
        /// The unit (unit certificates; optional: binds the certificate to one unit).
        #[arg(long)]
        unit: Option<uuid::Uuid>,
        /// A DNS name the server is reached by (repeatable; api and unit certificates).
        #[arg(long = "dns")]
        dns_names: Vec<String>,
        /// An IP address the server is reached at (repeatable; api and unit certificates).
        #[arg(long = "ip")]
        ip_addresses: Vec<std::net::IpAddr>,
        /// Days of validity.
        #[arg(long, default_value_t = 365)]
        days: u32,
        /// Where to write: OUT.pem and OUT.key.
        #[arg(long)]
        out: PathBuf,
    },
    /// Issue a new certificate and key with the role and names of CERT (one this authority
    /// issued), written over CERT and its key unless --out is given. Peers re-read certificate
    /// files when they change. With --revoke-old the old certificate is revoked at once.
    Renew {
        /// The authority's directory.
        #[arg(long)]
        dir: PathBuf,
        /// The certificate to renew (PEM).
        cert: PathBuf,
        /// Where to write instead: OUT.pem and OUT.key.
        #[arg(long)]
        out: Option<PathBuf>,
        /// Days of validity.
        #[arg(long, default_value_t = 365)]
        days: u32,
        /// Revoke the old certificate.
        #[arg(long)]
        revoke_old: bool,
    },
    /// Revoke a certificate (a PEM file or a serial number in hex) and write a new crl.pem; copy
    /// it where units and the service read it ([units_tls] crl, `unit serve --crl`).
    Revoke {
        /// The authority's directory.
        #[arg(long)]
        dir: PathBuf,
        /// A certificate file, or its serial number (hex).
        cert: String,
    },
    /// Write a fresh crl.pem (valid 30 days): do it, and distribute it, before the current one
    /// runs out.
    Crl {
        /// The authority's directory.
        #[arg(long)]
        dir: PathBuf,
    },
    /// Convert a service configuration written before TLS: issues the API certificate (for
    /// the listen address and --dns names), a service certificate per instance and a unit
    /// certificate per unit (bound to the unit, for its address), writes them to --tls-dir,
    /// and writes the configuration with [tls], [units_tls] and each instance's client
    /// certificate to --out, without units_token_file. An API key that named no instances
    /// covered all of them before; it gets `instances = ["*"]`, said on stderr. Prints how to
    /// start each unit.
    UpgradeConfig {
        /// The authority's directory (created if it holds none).
        #[arg(long)]
        dir: PathBuf,
        /// The configuration to convert (left as it is).
        #[arg(long)]
        config: PathBuf,
        /// Where to write the converted configuration.
        #[arg(long)]
        out: PathBuf,
        /// Where to write the certificates and keys.
        #[arg(long)]
        tls_dir: PathBuf,
        /// A DNS name clients reach the API by (repeatable).
        #[arg(long = "dns")]
        dns_names: Vec<String>,
        /// Days of validity.
        #[arg(long, default_value_t = 365)]
        days: u32,
    },
    /// List what the authority issued, and what it revoked.
    List {
        /// The authority's directory.
        #[arg(long)]
        dir: PathBuf,
    },
}

/// The role a certificate is issued for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum PkiRole {
    /// The service's HTTPS API.
    Api,
    /// A crypto unit (TLS server) of an instance.
    Unit,
    /// The service as the client of an instance's units.
    Service,
}

/// `rotor unit …`
#[derive(Debug, Subcommand)]
pub enum UnitCommand {
    /// Serve a crypto unit from its state directory (created on first start).
    ///
    /// Prints the unit's identity fingerprint and, while it has no admin, its one-time enrollment
    /// secret: its first admin is installed only with that secret (or the --initial-admin key).
    Serve(ServeArgs),
    /// Show a unit's id, kind and identity fingerprint, offline and without its passphrase or
    /// token.
    Id {
        /// State directory.
        #[arg(long)]
        dir: PathBuf,
    },
    /// Seal a unit's state under a new key from a passphrase or a token.
    ///
    /// One atomic replacement, then a seal.key left beside the state is removed (a directory
    /// written by an older rotor, or a development unit). Stop the unit first. Running it again
    /// after an interruption finishes the job. Copies and backups made before keep opening with
    /// the old key.
    Reseal {
        /// State directory.
        #[arg(long)]
        dir: PathBuf,
        /// The new sealing key source (passphrase or token). The current one is read from the
        /// state; its passphrase comes from ROTOR_UNIT_PASSPHRASE or a prompt, the new one from
        /// ROTOR_UNIT_NEW_PASSPHRASE or a prompt.
        #[arg(long, value_enum)]
        seal: SealKind,
        /// With the token source, and for a state sealed in a token.
        #[command(flatten)]
        token: TokenArgs,
    },
}

/// Where a unit's sealing key comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum SealKind {
    /// Argon2id of a passphrase (ROTOR_UNIT_PASSPHRASE or a prompt): a copy of the directory,
    /// or a stolen disk, is useless without the passphrase.
    Passphrase,
    /// A key sealed by an AES key that never leaves a PKCS#11 token (--seal-token): a copy of
    /// the directory is useless without the token and its PIN.
    Token,
    /// DEVELOPMENT ONLY: seal.key beside the state; a copy of the directory is a copy of the
    /// master keys.
    File,
}

/// The PKCS#11 token that seals a unit's key.
#[derive(Debug, Args)]
pub struct TokenArgs {
    /// The label of the PKCS#11 token holding the sealing key's key (its user PIN from ROTOR_PIN
    /// or a prompt).
    #[arg(long, value_name = "LABEL")]
    pub seal_token: Option<String>,
    /// The PKCS#11 module (shared library) of the token.
    #[arg(long, env = "ROTOR_PKCS11_MODULE", value_name = "PATH")]
    pub module: Option<PathBuf>,
}

/// `rotor unit serve`
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// State directory (the sealed state and the unit's public identity).
    #[arg(long)]
    pub dir: PathBuf,
    /// Where the sealing key of the state comes from.
    #[arg(long, value_enum, default_value = "passphrase")]
    pub seal: SealKind,
    /// With --seal token.
    #[command(flatten)]
    pub token: TokenArgs,
    /// Address to listen on; port 0 picks a free one.
    #[arg(long, default_value = "127.0.0.1:0")]
    pub listen: SocketAddr,
    /// Make this a recovery unit (can generate and export a master key). Fixed at creation.
    #[arg(long)]
    pub recovery: bool,
    /// While the unit has no admin, accept as its first admin only this key (its subject key
    /// identifier, as 'rotor sigkeys' shows it) instead of the enrollment secret.
    #[arg(long, value_name = "SKI")]
    pub initial_admin: Option<String>,
    /// Write the unit id, kind, address, fingerprint and enrollment secret as JSON here (mode
    /// 0600) once listening, and again when the enrollment secret changes.
    #[arg(long)]
    pub info_file: Option<PathBuf>,
    /// The unit's TLS certificate (PEM; `rotor pki issue unit`): it names the unit's instance,
    /// and only that instance's service is answered.
    #[arg(long)]
    pub tls_cert: PathBuf,
    /// The private key of --tls-cert (PEM).
    #[arg(long)]
    pub tls_key: PathBuf,
    /// The deployment CA (PEM) the service's client certificate must chain to.
    #[arg(long)]
    pub client_ca: PathBuf,
    /// The deployment's revocation list (PEM), re-read when the file changes.
    #[arg(long)]
    pub crl: Option<PathBuf>,
    /// Exit when the parent process exits (used by 'rotor dev').
    #[arg(long, hide = true)]
    pub exit_with_parent: bool,
}

/// `rotor demo`
#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Root keys to create (each wraps one DEK) and rotate.
    #[arg(long, default_value_t = 10_000)]
    pub keys: usize,
    /// Afterwards, measure the baseline of the benchmark in docs/BENCHMARKS.md: a bare SQLite
    /// rewrite of the same rows (read, AES-256-GCM decrypt and encrypt, write back by rowid,
    /// 10,000 rows per transaction) in one process, on the demo's throwaway keystore (with
    /// --postgres: the same rewrite on the PostgreSQL database, each batch copied into a
    /// staging table and applied with one UPDATE).
    #[arg(long)]
    pub baseline: bool,
    /// Run this many service replicas as processes on one database (needs --postgres); the
    /// load spreads over them, and replica 2 is killed (SIGKILL) during the reencryption and
    /// started again.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..=16))]
    pub replicas: u16,
    /// With --replicas: kill no replica (to measure speed alone).
    #[arg(long)]
    pub no_kill: bool,
    /// Keep the keys in a throwaway PostgreSQL cluster instead of SQLite.
    #[arg(long)]
    pub postgres: bool,
}

/// `rotor bench`
#[derive(Debug, Args)]
pub struct BenchArgs {
    /// The info file of the service to drive ('rotor dev --info-file'); its writer API key is
    /// used.
    #[arg(long)]
    pub info_file: PathBuf,
    /// Which Key Protect action to drive.
    #[arg(long, value_enum, default_value = "unwrap")]
    pub op: BenchOp,
    /// Concurrent connections, each sending its next request when the last is answered.
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u16).range(1..=4096))]
    pub connections: u16,
    /// Measured seconds (after one second of warm-up).
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub seconds: u64,
    /// Also drive the in-process yardstick and print the ratio.
    #[arg(long)]
    pub baseline: bool,
}

/// A Key Protect action `rotor bench` drives.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum BenchOp {
    // Wrap a 32-byte DEK.
    Wrap,
    // Unwrap a DEK wrapped once before.
    Unwrap,
    // Rewrap a DEK wrapped once before.
    Rewrap,
}

/// `rotor console`
#[derive(Debug, Args)]
pub struct ConsoleArgs {
    /// Where the console listens: a loopback address only (plain HTTP never leaves the host).
    #[arg(long, default_value = "127.0.0.1:0", value_parser = loopback_address)]
    pub listen: SocketAddr,
    /// Also write the console's URL, with its session token, to this file (mode 0600).
    #[arg(long)]
    pub url_file: Option<PathBuf>,
    /// Do not open the URL in a browser; only print it.
    #[arg(long)]
    pub no_open: bool,
}

/// A socket address on loopback: the console's plain HTTP must not leave the host.
fn loopback_address(text: &str) -> Result<SocketAddr, String> {
    let address: SocketAddr = text
        .parse()
        .map_err(|_| format!("'{text}' is not an address and port, e.g. 127.0.0.1:8080"))?;
    if !address.ip().is_loopback() {
        return Err(format!(
            "{} is not a loopback address; the console listens on loopback only",
            address.ip()
        ));
    }
    Ok(address)
}

/// `rotor dev`
#[derive(Debug, Args)]
pub struct DevArgs {
    /// Operational units to start.
    #[arg(long, default_value_t = 3)]
    pub units: usize,
    /// Recovery units to start.
    #[arg(long, default_value_t = 2)]
    pub recovery_units: usize,
    /// Keep state here (and reuse it on the next start); default: a temporary directory removed
    /// at exit.
    #[arg(long)]
    pub dir: Option<PathBuf>,
    /// Where the service listens.
    #[arg(long, default_value = "127.0.0.1:0")]
    pub listen: SocketAddr,
    /// Write the endpoint, instance id, API key and units as JSON here (mode 0600).
    #[arg(long)]
    pub info_file: Option<PathBuf>,
    /// Leave the units in imprint mode instead of initializing them (admins, thresholds 2/2, a
    /// master key from three parts).
    #[arg(long)]
    pub imprint: bool,
    /// How long after deletion a key may be purged.
    #[arg(long, default_value_t = 4 * 3600)]
    pub purge_after_seconds: u64,
    /// How long access tokens live.
    #[arg(long, default_value_t = 3600)]
    pub token_ttl_seconds: u64,
    /// Serve the API over plain HTTP instead of HTTPS (loopback only; for measuring what TLS
    /// costs). The units keep mutual TLS.
    #[arg(long)]
    pub insecure_plain_http: bool,
    /// Run this many service replicas as processes on one database (needs --postgres), each on
    /// its own loopback port; the info file lists them all under 'endpoints'.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..=16))]
    pub replicas: u16,
    /// Keep the keys in a throwaway PostgreSQL cluster under the state directory instead of
    /// SQLite (the system's PostgreSQL binaries: $ROTOR_PG_BIN, pg_config, or
    /// /usr/lib/postgresql/*/bin).
    #[arg(long)]
    pub postgres: bool,
}

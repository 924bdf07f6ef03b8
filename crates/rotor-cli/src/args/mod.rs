//! The command line, as clap parses it.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

mod admin;
mod local;
mod pki;
mod unit;

pub use self::admin::*;
pub use self::local::*;
pub use self::pki::*;
pub use self::unit::*;

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

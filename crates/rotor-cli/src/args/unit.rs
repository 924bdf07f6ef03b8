//! `rotor unit`: serving a crypto unit, and where its sealing key comes from.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Args, Subcommand};

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

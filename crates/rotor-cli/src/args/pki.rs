//! `rotor pki`: the deployment's certificate authority.

use std::path::PathBuf;

use clap::Subcommand;

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

//! The commands that run everything on this machine: `rotor dev`, `rotor demo`,
//! `rotor bench` and `rotor console`.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::Args;

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

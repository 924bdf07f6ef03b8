//! The `rotor` binary.

use clap::Parser;

#[tokio::main]
async fn main() {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("ROTOR_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .init();
    let cli = rotor_cli::args::Cli::parse();
    if let Err(err) = rotor_cli::run(cli).await {
        eprintln!("error: {err:#}");
        std::process::exit(rotor_cli::exit_code(&err));
    }
}

//! The `rotor` binary.

use clap::Parser;
use rotor_cli::exit::ExitCode;

#[tokio::main]
async fn main() {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("ROTOR_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .init();
    let cli = match rotor_cli::args::Cli::try_parse() {
        Ok(cli) => cli,
        Err(err) => {
            // --help and --version end here too, on standard output and successfully.
            let _ = err.print();
            let code = if err.use_stderr() {
                ExitCode::Usage
            } else {
                ExitCode::Success
            };
            std::process::exit(code.code());
        }
    };
    if let Err(err) = rotor_cli::run(cli).await {
        eprintln!("error: {err:#}");
        std::process::exit(ExitCode::of(&err).code());
    }
}

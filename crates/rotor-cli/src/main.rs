//! The `rotor` binary.

use std::io::IsTerminal as _;

use clap::Parser;
use rotor_cli::args::LogFormat;
use rotor_cli::exit::ExitCode;

#[tokio::main]
async fn main() {
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
    init_logging(cli.log_format);
    if let Err(err) = rotor_cli::run(cli).await {
        eprintln!("error: {err:#}");
        std::process::exit(ExitCode::of(&err).code());
    }
}

/// Log lines go to standard error, filtered by `ROTOR_LOG` (default `warn`), as text or JSON
/// (without `--log-format`: text on a terminal, JSON otherwise).
fn init_logging(format: Option<LogFormat>) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("ROTOR_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    let format = format.unwrap_or(if std::io::stderr().is_terminal() {
        LogFormat::Text
    } else {
        LogFormat::Json
    });
    let logs = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(filter);
    match format {
        LogFormat::Text => logs.init(),
        // The request span's fields (its correlation id) on every line, under "span".
        LogFormat::Json => logs
            .json()
            .with_current_span(true)
            .with_span_list(false)
            .init(),
    }
}

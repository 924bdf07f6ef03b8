//! The `rotor` command line: workstation files, admin commands over the service, and the
//! long-running unit, server and dev processes.

#![forbid(unsafe_code)]

pub mod args;
pub mod baseline;
pub mod cmd;
pub mod demo;
pub mod output;
pub mod plan;
pub mod session;
pub mod transfer;
pub mod workstation;

use anyhow::Result;
use args::{AutoCommand, Cli, Commands, UnitCommand};
use rotor_unit::client::ClientError;

/// Runs one parsed command line.
pub async fn run(cli: Cli) -> Result<()> {
    let home = workstation::Home::from_env()?;
    let ctx = session::Ctx::new(home, cli.json, cli.yes, cli.endpoint);
    match cli.command {
        Commands::Login { endpoint, api_key } => cmd::login::login(&ctx, &endpoint, &api_key).await,
        Commands::Units { command } => cmd::units::units(&ctx, command).await,
        Commands::Admins { command } => cmd::admins::admins(&ctx, command).await,
        Commands::Thresholds { command } => cmd::thresholds::thresholds(&ctx, command).await,
        Commands::Mk { command } => cmd::mk::mk(&ctx, command).await,
        Commands::Auto {
            command:
                AutoCommand::Init {
                    admins,
                    signature,
                    revocation,
                },
        } => cmd::auto::init(&ctx, &admins, signature, revocation).await,
        Commands::Auto {
            command: AutoCommand::Recover,
        } => cmd::auto::recover(&ctx).await,
        Commands::Auto {
            command: AutoCommand::Rotate,
        } => cmd::rotate::rotate(&ctx, plan::Flow::Auto).await,
        Commands::Sigkeys { command } => cmd::sigkeys::sigkeys(&ctx, command),
        Commands::Parts { command } => cmd::parts::parts(&ctx, command),
        Commands::Unit {
            command: UnitCommand::Serve(args),
        } => cmd::run::unit_serve(args).await,
        Commands::Server { config } => cmd::run::server(&config).await,
        Commands::Dev(args) => cmd::dev::dev(args, cli.json).await,
        Commands::Demo(args) => demo::demo(args, cli.json).await,
    }
}

/// The process exit code for an error (see `rotor --help`).
pub fn exit_code(err: &anyhow::Error) -> i32 {
    match err.downcast_ref::<ClientError>() {
        Some(ClientError::Rejected(_)) => 3,
        Some(ClientError::Unreachable(_) | ClientError::Relay { .. }) => 4,
        Some(ClientError::NotAuthentic | ClientError::IdentityChanged { .. }) => 5,
        _ => 1,
    }
}

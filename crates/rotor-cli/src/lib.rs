//! The `rotor` command line: workstation files, admin commands over the service, and the
//! long-running unit, server and dev processes.

#![forbid(unsafe_code)]

pub mod admin;
pub mod args;
pub mod auto;
pub mod baseline;
pub mod demo;
pub mod local;
pub mod output;
pub mod rotate;
pub mod run;
pub mod workstation;

use anyhow::Result;
use args::{AutoCommand, Cli, Commands, UnitCommand};
use rotor_unit::client::ClientError;

/// Runs one parsed command line.
pub async fn run(cli: Cli) -> Result<()> {
    let home = workstation::Home::from_env()?;
    let ctx = admin::Ctx::new(home, cli.json, cli.yes, cli.endpoint);
    match cli.command {
        Commands::Login { endpoint, api_key } => admin::login(&ctx, &endpoint, &api_key).await,
        Commands::Units { command } => admin::units(&ctx, command).await,
        Commands::Admins { command } => admin::admins(&ctx, command).await,
        Commands::Thresholds { command } => admin::thresholds(&ctx, command).await,
        Commands::Mk { command } => admin::mk(&ctx, command).await,
        Commands::Auto {
            command:
                AutoCommand::Init {
                    admins,
                    signature,
                    revocation,
                },
        } => auto::init(&ctx, &admins, signature, revocation).await,
        Commands::Auto {
            command: AutoCommand::Recover,
        } => auto::recover(&ctx).await,
        Commands::Auto {
            command: AutoCommand::Rotate,
        } => rotate::rotate(&ctx, rotate::Flow::Auto).await,
        Commands::Sigkeys { command } => local::sigkeys(&ctx, command),
        Commands::Parts { command } => local::parts(&ctx, command),
        Commands::Unit {
            command: UnitCommand::Serve(args),
        } => run::unit_serve(args).await,
        Commands::Server { config } => run::server(&config).await,
        Commands::Dev(args) => run::dev(args, cli.json).await,
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

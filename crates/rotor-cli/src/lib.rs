//! The `rotor` command line: workstation files, admin commands over the service, and the
//! long-running unit, server and dev processes.

#![forbid(unsafe_code)]

pub mod args;
pub mod baseline;
pub mod bench;
pub mod client;
pub mod cmd;
pub mod console;
pub mod demo;
mod demo_grep11;
pub mod exit;
mod load;
pub mod output;
pub mod plan;
pub mod session;
pub mod signer;
pub mod transfer;
pub mod workstation;

use anyhow::Result;
use args::{AutoCommand, Cli, Commands, UnitCommand};

/// Runs one parsed command line.
pub async fn run(cli: Cli) -> Result<()> {
    let home = workstation::Home::from_env()?;
    let mut session = session::Session::new(home, cli.json, cli.yes, cli.endpoint, cli.ca_cert);
    if let Commands::Admins {
        command: Some(args::AdminsCommand::Add { enrollment, .. }),
    }
    | Commands::Auto {
        command: AutoCommand::Init { enrollment, .. },
    } = &cli.command
    {
        session = session.with_enrollment_secrets(&enrollment.secrets)?;
    }
    match cli.command {
        Commands::Login { endpoint, api_key } => {
            cmd::login::login(&session, &endpoint, &api_key).await
        }
        Commands::Apikeys { command } => cmd::apikeys::apikeys(&session, command).await,
        Commands::Units { command } => cmd::units::units(&session, command).await,
        Commands::Admins { command } => cmd::admins::admins(&session, command).await,
        Commands::Thresholds { command } => cmd::thresholds::thresholds(&session, command).await,
        Commands::Audit(args) => cmd::audit::audit(&session, args).await,
        Commands::Mk { command } => cmd::mk::mk(&session, command).await,
        Commands::Auto {
            command:
                AutoCommand::Init {
                    admins,
                    signature,
                    revocation,
                    ..
                },
        } => cmd::auto::init(&session, &admins, signature, revocation).await,
        Commands::Auto {
            command: AutoCommand::Recover,
        } => cmd::auto::recover(&session).await,
        Commands::Auto {
            command: AutoCommand::Rotate {
                hold_before_promote,
            },
        } => cmd::rotate::rotate(&session, plan::Flow::Auto, hold_before_promote).await,
        Commands::Sigkeys { command } => cmd::sigkeys::sigkeys(&session, command),
        Commands::Parts { command } => cmd::parts::parts(&session, command),
        Commands::Unit {
            command: UnitCommand::Serve(args),
        } => cmd::run::unit_serve(args).await,
        Commands::Pki { command } => cmd::pki::pki(&session, command),
        Commands::Unit {
            command: UnitCommand::Id { dir },
        } => cmd::run::unit_id(&dir, cli.json),
        Commands::Unit {
            command: UnitCommand::Reseal { dir, seal, token },
        } => cmd::run::unit_reseal(&dir, seal, &token, cli.json),
        Commands::Server {
            config,
            exit_with_parent,
        } => cmd::run::server(&config, exit_with_parent).await,
        Commands::Console(args) => console::console(session, args).await,
        Commands::Dev(args) => cmd::dev::dev(args, cli.json).await,
        Commands::Demo(args) => demo::demo(args, cli.json).await,
        Commands::Bench(args) => bench::bench(args, cli.json).await,
    }
}

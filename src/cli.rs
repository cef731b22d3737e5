//! The command-line interface (`shared/spec/agent.md` §4): parses arguments, runs the command,
//! maps its outcome to the documented exit codes.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Exit codes of agent.md §4.
pub mod exit {
    pub const OK: u8 = 0;
    pub const API_REFUSED: u8 = 1;
    pub const USAGE: u8 = 2;
    pub const DAEMON_UNREACHABLE: u8 = 69;
    pub const API_UNREACHABLE: u8 = 75;
    pub const CONFIG: u8 = 78;
}

#[derive(Debug, Parser)]
#[command(
    name = "pos-agent",
    version,
    about = "Card-terminal agent for Paywall's Physical POS API"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Validate and print the effective configuration, secrets redacted.
    CheckConfig(crate::config::ConfigArgs),
    /// Run a simulated payment API on loopback (for the demo and manual runs).
    SimulateApi(crate::simulator::api::CommandArgs),
    /// Run a simulated card terminal on a serial device (for the demo and manual runs).
    SimulateTerminal(crate::simulator::terminal::CommandArgs),
}

/// Parses the command line and runs the command.
pub fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return ExitCode::from(if e.use_stderr() {
                exit::USAGE
            } else {
                exit::OK
            });
        }
    };
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("pos-agent: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let outcome = runtime.block_on(async {
        match cli.command {
            Command::CheckConfig(args) => Ok(crate::config::check_config_command(&args)?),
            Command::SimulateApi(args) => crate::simulator::api::run_command(args).await,
            Command::SimulateTerminal(args) => crate::simulator::terminal::run_command(args).await,
        }
    });
    match outcome {
        Ok(()) => ExitCode::from(exit::OK),
        Err(e) => {
            eprintln!("pos-agent: {e:#}");
            if e.downcast_ref::<crate::config::ConfigError>().is_some() {
                ExitCode::from(exit::CONFIG)
            } else {
                ExitCode::FAILURE
            }
        }
    }
}

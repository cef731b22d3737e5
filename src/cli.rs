//! The command-line interface (docs/operations.md (Operator commands)): parses arguments, runs the command,
//! maps its outcome to the documented exit codes.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod audit;
mod check_config;
mod health;
mod operator;
mod run;

/// Exit codes of docs/operations.md (Operator commands) and of the daemon (The daemon:
/// `pos-agent run`).
pub(crate) mod exit {
    pub(crate) const OK: u8 = 0;
    pub(crate) const API_REFUSED: u8 = 1;
    /// The daemon could not set itself up, or a second signal cut its shutdown short.
    pub(crate) const FAILURE: u8 = 1;
    pub(crate) const USAGE: u8 = 2;
    /// After `pos-agent restart --keep-pending`: stopped with the pending payments kept, to be
    /// started again (the unit lists it in `SuccessExitStatus=` and `RestartForceExitStatus=`).
    pub(crate) const RESTART_KEEPING_PENDING: u8 = 3;
    /// After `pos-agent restart --keep-pending --no-start`: stopped with the pending payments
    /// kept, to stay stopped (`SuccessExitStatus=` only).
    pub(crate) const STOPPED_KEEPING_PENDING: u8 = 4;
    pub(crate) const DAEMON_UNREACHABLE: u8 = 69;
    /// The state file cannot be read (EX_IOERR): an operator must look at it.
    pub(crate) const STATE_UNREADABLE: u8 = 74;
    pub(crate) const API_UNREACHABLE: u8 = 75;
    pub(crate) const CONFIG: u8 = 78;
}

#[derive(Debug, Parser)]
#[command(
    name = "pos-agent",
    version = crate::build_info::LONG_VERSION,
    about = "Card-terminal agent for Paywall's Physical POS API"
)]
pub(crate) struct Cli {
    /// The running daemon's control socket [default: /run/pos-agent/control.sock].
    #[arg(long, global = true, env = "POS_AGENT_SOCKET", value_name = "PATH")]
    pub(crate) socket: Option<PathBuf>,
    #[command(subcommand)]
    pub(crate) command: Command,
}

#[derive(Debug, Subcommand)]
pub(crate) enum Command {
    /// Run the daemon.
    Run(crate::config::ConfigArgs),
    /// Validate and print the effective configuration, secrets redacted.
    CheckConfig(crate::config::ConfigArgs),
    /// Run a simulated payment API on loopback (for the demo and manual runs).
    #[cfg(feature = "simulators")]
    SimulateApi(crate::simulator::api::CommandArgs),
    /// Run a simulated card terminal on a serial device (for the demo and manual runs).
    #[cfg(feature = "simulators")]
    SimulateTerminal(crate::simulator::terminal::CommandArgs),
    /// Test a terminal's firmware: play the agent's side of the serial protocol against the
    /// terminal on a serial device and check every rule the protocol gives the terminal.
    #[cfg(feature = "simulators")]
    Conformance(crate::conformance::CommandArgs),
    /// The whole system on this machine with no hardware and no account, narrated.
    Demo(DemoArgs),
    /// Exit 0 when the running agent is healthy (it answers, its state directory is writable, its
    /// serial device is open; the connection and the terminal link only with --require), else say
    /// why.
    ///
    /// The health gate of an update: pos-agent-healthy.service runs it before
    /// boot-complete.target (docs/deployment.md).
    CheckHealth(health::CheckHealthArgs),
    /// Print the audit records (who did what, on which payment, with what outcome) of a period.
    ///
    /// Reads the journal with journalctl (docs/operations.md, "Audit records").
    Audit(audit::AuditArgs),
    #[command(flatten)]
    Operator(operator::OperatorCommand),
}

/// A command's failure with the exit code it maps to (see [`exit`]); `main` prints the message.
/// Other errors exit with 1.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub(crate) struct Failure {
    pub(crate) code: u8,
    pub(crate) message: String,
}

impl Failure {
    pub(crate) fn new(code: u8, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }
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
    runtime.block_on(async {
        let outcome = match cli.command {
            // These two report their own outcome (the daemon's and the demo's exit codes).
            Command::Run(args) => return ExitCode::from(run::run(&args.config).await),
            Command::Demo(args) => return demo(args).await,
            Command::CheckConfig(args) => check_config::run(&args).map_err(Into::into),
            #[cfg(feature = "simulators")]
            Command::SimulateApi(args) => crate::simulator::api::run_command(args).await,
            #[cfg(feature = "simulators")]
            Command::SimulateTerminal(args) => crate::simulator::terminal::run_command(args).await,
            #[cfg(feature = "simulators")]
            Command::Conformance(args) => crate::conformance::run_command(args).await,
            Command::CheckHealth(args) => health::run(args, cli.socket.as_deref()).await,
            Command::Audit(args) => audit::run(&args),
            Command::Operator(command) => operator::run(command, cli.socket.as_deref()).await,
        };
        exit_code(outcome)
    })
}

/// Arguments of `pos-agent demo`.
#[derive(Debug, clap::Args)]
pub(crate) struct DemoArgs {
    /// Show the daemon's own log lines (debug level) between the narration.
    #[arg(long)]
    pub(crate) verbose: bool,
}

#[cfg(feature = "simulators")]
async fn demo(args: DemoArgs) -> ExitCode {
    crate::demo::run(args.verbose).await
}

/// The terminal's build leaves the simulators out (Cargo feature `simulators`), and with them
/// the demo: say so, and where to find it.
#[cfg(not(feature = "simulators"))]
async fn demo(_args: DemoArgs) -> ExitCode {
    eprintln!(
        "pos-agent: this build leaves out the simulators the demo runs on (the terminal's \
         package is built without the `simulators` feature); run the demo from a development \
         build: `cargo run -- demo` in the source tree"
    );
    ExitCode::from(exit::USAGE)
}

/// Prints a command's error and picks its exit code: 78 for a configuration error, the code a
/// [`Failure`] carries, else 1.
fn exit_code(outcome: anyhow::Result<()>) -> ExitCode {
    match outcome {
        Ok(()) => ExitCode::from(exit::OK),
        Err(e) => {
            eprintln!("pos-agent: {e:#}");
            let code = if e.downcast_ref::<crate::config::ConfigError>().is_some() {
                exit::CONFIG
            } else {
                e.downcast_ref::<Failure>()
                    .map_or(1, |failure| failure.code)
            };
            ExitCode::from(code)
        }
    }
}

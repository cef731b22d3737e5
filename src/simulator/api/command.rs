//! `pos-agent simulate-api`: the simulator as a command, for the demo and manual runs.

use std::net::SocketAddr;
use std::time::Duration;

use super::{ApiSimulator, SimulatorOptions, DEMO_TERMINAL_ID, DEMO_TERMINAL_TAG_CODE};

/// Arguments of `pos-agent simulate-api`.
#[derive(Debug, clap::Args)]
pub struct CommandArgs {
    /// Address to listen on (port 0 picks a free one; the URL is printed first on stdout).
    #[arg(long, default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,
    /// Start without the demo connection (the agent must establish one).
    #[arg(long)]
    pub no_connection: bool,
    /// Latency added to every request, e.g. "300ms".
    #[arg(long, value_parser = humantime::parse_duration)]
    pub latency: Option<Duration>,
}

/// Runs `pos-agent simulate-api`: prints its URL as the first line on stdout, logs requests to
/// stderr, and runs until SIGINT or SIGTERM.
pub async fn run_command(args: CommandArgs) -> anyhow::Result<()> {
    use anyhow::Context as _;
    use std::io::Write as _;
    use tokio::signal::unix::{signal, SignalKind};

    let simulator = ApiSimulator::start(SimulatorOptions {
        listen: args.listen,
        with_connection: !args.no_connection,
        log_requests: true,
        ..SimulatorOptions::default()
    })
    .with_context(|| format!("cannot listen on {}", args.listen))?;
    if let Some(latency) = args.latency {
        simulator.set_latency(latency);
    }
    let mut terminate = signal(SignalKind::terminate()).context("cannot watch SIGTERM")?;
    let mut interrupt = signal(SignalKind::interrupt()).context("cannot watch SIGINT")?;
    {
        let mut stdout = std::io::stdout().lock();
        writeln!(stdout, "{}", simulator.url()).context("cannot write to stdout")?;
        stdout.flush().context("cannot write to stdout")?;
    }
    eprintln!(
        "simulate-api: serving the PhysicalAPI and the PaymentAPI on {} (demo keys: see docs/payment-api.md; terminal {DEMO_TERMINAL_ID}, tag {DEMO_TERMINAL_TAG_CODE})",
        simulator.url()
    );
    tokio::select! {
        _ = terminate.recv() => {},
        _ = interrupt.recv() => {},
    }
    eprintln!("simulate-api: stopping");
    drop(simulator);
    Ok(())
}

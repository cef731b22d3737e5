//! The conformance kit for terminal makers (`pos-agent conformance`, docs/terminal-kit.md):
//! plays the agent's side of docs/serial-protocol.md against a terminal on a serial device and
//! checks, one case per rule, that the terminal keeps every rule the protocol gives it. It
//! never needs the payment API. A maker's bench tool, so it lives behind the `simulators`
//! feature and is not in the terminal's build.

mod bench;
mod cases;

use std::path::PathBuf;
use std::time::Duration;

pub(crate) use cases::{run, KitReport, KitSettings};

use crate::config::{FlowControl, Parity, SerialConfig};

/// Arguments of `pos-agent conformance`.
#[derive(Debug, clap::Args)]
pub(crate) struct CommandArgs {
    /// Serial device the terminal is on (a USB-serial adapter, one end of a virtual pair).
    #[arg(long)]
    pub device: PathBuf,
    /// Print the report as one JSON object instead of one line per case.
    #[arg(long)]
    pub json: bool,
    /// Line speed.
    #[arg(long, default_value_t = crate::config::defaults::baud_rate())]
    pub baud_rate: u32,
    /// Data bits (5-8).
    #[arg(long, default_value_t = crate::config::defaults::data_bits())]
    pub data_bits: u8,
    /// Parity: none, odd or even.
    #[arg(long, default_value = "none", value_parser = parity)]
    pub parity: Parity,
    /// Stop bits (1 or 2).
    #[arg(long, default_value_t = crate::config::defaults::stop_bits())]
    pub stop_bits: u8,
    /// Flow control: none, software or hardware.
    #[arg(long, default_value = "none", value_parser = flow_control)]
    pub flow_control: FlowControl,
    /// The terminal's T3 (how long it waits for an ACK before it sends a frame again).
    #[arg(long, default_value = "1s", value_parser = humantime::parse_duration)]
    pub ack_timeout: Duration,
    /// The terminal's sends of one frame in total before it gives the frame up.
    #[arg(long, default_value_t = 3)]
    pub max_sends: u32,
    /// How long the terminal may take to answer a request of the agent.
    #[arg(long, default_value = "3s", value_parser = humantime::parse_duration)]
    pub reply_timeout: Duration,
}

fn parity(text: &str) -> Result<Parity, String> {
    match text {
        "none" => Ok(Parity::None),
        "odd" => Ok(Parity::Odd),
        "even" => Ok(Parity::Even),
        other => Err(format!("{other}: not none, odd or even")),
    }
}

fn flow_control(text: &str) -> Result<FlowControl, String> {
    match text {
        "none" => Ok(FlowControl::None),
        "software" => Ok(FlowControl::Software),
        "hardware" => Ok(FlowControl::Hardware),
        other => Err(format!("{other}: not none, software or hardware")),
    }
}

/// Runs `pos-agent conformance`: every case once, one line each (or `--json`), a summary;
/// fails (exit status 1) when a case failed.
pub(crate) async fn run_command(args: CommandArgs) -> anyhow::Result<()> {
    let config = SerialConfig {
        device: args.device.clone(),
        baud_rate: args.baud_rate,
        data_bits: args.data_bits,
        parity: args.parity,
        stop_bits: args.stop_bits,
        flow_control: args.flow_control,
        ..SerialConfig::default()
    };
    let port = crate::serial::open_port(&config)
        .map_err(|e| anyhow::anyhow!("cannot open the terminal's line: {e}"))?;
    let settings = KitSettings {
        ack_timeout: args.ack_timeout,
        max_sends: args.max_sends.max(1),
        reply_timeout: args.reply_timeout,
        baud_rate: args.baud_rate,
    };
    let report = run(port, settings).await;
    if args.json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        print!("{}", human(&report));
    }
    if report.failed > 0 {
        anyhow::bail!("{} of {} cases failed", report.failed, report.cases.len());
    }
    Ok(())
}

/// One line per case, `PASS`/`FAIL`, the section, the rule and what was seen; then the
/// terminal's identity and a summary.
pub(crate) fn human(report: &KitReport) -> String {
    let mut text = String::new();
    for case in &report.cases {
        let verdict = if case.passed { "PASS" } else { "FAIL" };
        text.push_str(&format!(
            "{verdict}  {:<46} {}: {}\n",
            case.section, case.name, case.seen
        ));
    }
    let terminal = report.terminal.as_ref().map_or_else(
        || "did not answer agent_state ready".to_owned(),
        ToString::to_string,
    );
    text.push_str(&format!(
        "terminal: {terminal}\n{} passed, {} failed\n",
        report.passed, report.failed
    ));
    text
}

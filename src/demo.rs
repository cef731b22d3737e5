//! `pos-agent demo`: the whole system on one machine, with no hardware and no account.
//!
//! The payment API simulator runs in this process on loopback, a pseudo-terminal pair stands
//! in for the serial cable with the terminal simulator on one end, and the real daemon
//! (`pos-agent run`, this same binary) runs as a child process on the other end, driven by
//! the real operator commands. Every step is narrated; the run takes a few seconds.

use std::path::{Path, PathBuf};
use std::process::{ExitCode, Stdio};
use std::time::Duration;

use anyhow::{bail, Context};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::net::UnixDatagram;
use uuid::Uuid;

use crate::serial::message::{
    AgentReadiness, AgentRequest, CancelReason, PaymentResultStatus, Reply, SaleOrder,
    TerminalRequest,
};
use crate::serial::LinkSettings;
use crate::simulator::api::{self as sim, ApiSimulator, SimulatorOptions};
use crate::simulator::terminal::TerminalSimulator;
use crate::simulator::virtual_serial::VirtualSerial;

const WAIT: Duration = Duration::from_secs(15);

/// Runs the demo; exits 0 when every step went as narrated.
pub(crate) async fn run(verbose: bool) -> ExitCode {
    let workdir = std::env::temp_dir().join(format!("pos-agent-demo-{}", std::process::id()));
    let outcome = demo(&workdir, verbose).await;
    let _ = std::fs::remove_dir_all(&workdir);
    match outcome {
        Ok(()) => {
            say("demo finished: every step went as described");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("demo failed: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn say(text: &str) {
    println!("\n▶ {text}");
}

fn show(text: impl AsRef<str>) {
    for line in text.as_ref().lines() {
        println!("    {line}");
    }
}

async fn demo(workdir: &Path, verbose: bool) -> anyhow::Result<()> {
    std::fs::create_dir_all(workdir).context("creating the demo directory")?;

    say("starting the payment API simulator on loopback");
    let sim = ApiSimulator::start(SimulatorOptions::default())
        .context("starting the payment API simulator")?;
    sim.set_latency(Duration::from_millis(30));
    show(format!("PhysicalAPI and PaymentAPI at {}", sim.url()));

    say("opening a virtual serial cable (a pseudo-terminal pair)");
    let pair = VirtualSerial::open().context("opening a pseudo-terminal pair")?;
    let device = pair.slave_path().to_owned();
    show(format!("the agent's end: {}", device.display()));
    let mut terminal = TerminalSimulator::over(pair, LinkSettings::default());

    let config = write_config(workdir, &sim, &device)?;
    let socket = workdir.join("control.sock");
    let notify_path = workdir.join("notify.sock");
    let notify = UnixDatagram::bind(&notify_path).context("binding the notify socket")?;

    say("starting the agent: pos-agent run (the real daemon, as a child process)");
    let exe = std::env::current_exe().context("finding this program")?;
    let mut child = tokio::process::Command::new(&exe)
        .arg("run")
        .arg("--config")
        .arg(&config)
        .env("NOTIFY_SOCKET", &notify_path)
        .env("RUST_LOG", if verbose { "debug" } else { "warn" })
        .env_remove("JOURNAL_STREAM")
        .env_remove("LISTEN_FDS")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .context("starting pos-agent run")?;
    if let Some(stderr) = child.stderr.take() {
        tokio::spawn(async move {
            let mut lines = BufReader::new(stderr).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                println!("      agent │ {line}");
            }
        });
    }
    let ready = wait_notify(&notify, "READY=1").await?;
    show(format!("systemd would hear: {}", ready.trim()));
    wait_for(&mut terminal, |n| {
        matches!(
            n,
            AgentRequest::AgentState {
                state: AgentReadiness::Ready,
                ..
            }
        )
        .then_some(())
    })
    .await?;
    show("terminal ← agent_state ready");
    wait_notify(&notify, "STATUS=connected").await?;
    let connection = sim
        .connections()
        .last()
        .map(|c| c.id.clone())
        .unwrap_or_default();
    show(format!(
        "simulator ← POST /api/connection: connection {connection} established"
    ));

    say("the terminal asks for a sale of 22.50");
    let first = sale(&terminal, 2250, "Coffee & cake").await?;
    show(format!(
        "simulator ← POST /api/payment/async/sale, PaymentRequestId {first}"
    ));

    say("the card was read: the terminal reports the payment succeeded");
    let reply = terminal
        .request(TerminalRequest::PaymentResult {
            payment_request_id: first.clone(),
            status: PaymentResultStatus::Succeeded,
        })
        .await?;
    show(format!(
        "terminal → payment_result succeeded, agent → {}",
        describe(&reply)
    ));

    say("a second sale of 10.00, which the operator cancels from the shell");
    let second = sale(&terminal, 1000, "Newspaper").await?;
    operator(&exe, &socket, &["cancel", &second]).await?;
    let (id, reason) = next_cancelled(&mut terminal).await?;
    show(format!(
        "terminal ← payment_cancelled {id} (reason {reason})"
    ));

    say("a third sale of 5.00, which the customer cancels on the terminal");
    let third = sale(&terminal, 500, "Gum").await?;
    let reply = terminal
        .request(TerminalRequest::Cancel {
            payment_request_id: Some(third.clone()),
        })
        .await?;
    show(format!("terminal → cancel, agent → {}", describe(&reply)));

    say("two more sales stay pending; the operator looks at the agent");
    sale(&terminal, 1990, "Book").await?;
    sale(&terminal, 350, "Tea").await?;
    operator(&exe, &socket, &["status"]).await?;

    say("the agent is stopped (SIGTERM, as systemctl stop sends it)");
    let before_stop = sim.requests().len();
    let pid = child.id().context("the agent's pid")?;
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .context("sending SIGTERM")?;
    let stopping = wait_notify(&notify, "STOPPING=1").await?;
    show(format!(
        "systemd would hear: {}",
        stopping.lines().next().unwrap_or_default()
    ));
    // The stop notice and the two cancels may cross on the line: take them as they come.
    let (mut stopping_seen, mut cancels_seen) = (false, 0);
    while !stopping_seen || cancels_seen < 2 {
        match next_notification(&mut terminal).await? {
            AgentRequest::AgentState {
                state: AgentReadiness::Stopping,
                ..
            } => {
                stopping_seen = true;
                show("terminal ← agent_state stopping");
            }
            AgentRequest::PaymentCancelled {
                payment_request_id,
                reason,
            } => {
                cancels_seen += 1;
                show(format!(
                    "terminal ← payment_cancelled {payment_request_id} (reason {reason})"
                ));
            }
            _ => {}
        }
    }
    let status = tokio::time::timeout(WAIT, child.wait())
        .await
        .context("the agent did not stop in time")?
        .context("waiting for the agent")?;
    show(format!("the agent exited with {status}"));
    if !status.success() {
        bail!("the agent did not stop cleanly");
    }

    say("what reached the payment API during the shutdown, in order");
    for request in sim.requests().into_iter().skip(before_stop) {
        if request.path == "/api/payment/async/cancel"
            || request.path == "/api/connection/disconnect"
        {
            let body = request.body.map(|b| b.to_string()).unwrap_or_default();
            show(format!("{} {} {body}", request.method, request.path));
        }
    }
    let during_stop = &sim.requests()[before_stop..];
    let cancels = during_stop
        .iter()
        .filter(|r| r.path == "/api/payment/async/cancel")
        .count();
    let disconnects = during_stop
        .iter()
        .filter(|r| r.path == "/api/connection/disconnect")
        .count();
    if cancels != 2 || disconnects != 1 {
        bail!("expected 2 cancels and 1 disconnect at shutdown, saw {cancels} cancels");
    }
    Ok(())
}

async fn sale(
    terminal: &TerminalSimulator,
    amount_minor: u64,
    display: &str,
) -> anyhow::Result<String> {
    let code = Uuid::new_v4();
    let amount = std::num::NonZeroU64::new(amount_minor).context("a sale needs an amount")?;
    let reply = terminal
        .request(TerminalRequest::Sale(SaleOrder {
            merchant_unique_code: code,
            amount_minor: amount,
            currency_id: None,
            display_code: Some(display.to_owned()),
        }))
        .await?;
    show(format!(
        "terminal → sale {amount_minor} minor units, code {code}"
    ));
    match reply {
        Reply::SaleStarted {
            payment_request_id, ..
        } => {
            show(format!("terminal ← sale_started {payment_request_id}"));
            Ok(payment_request_id)
        }
        other => bail!("the sale was not started: {}", describe(&other)),
    }
}

async fn next_notification(terminal: &mut TerminalSimulator) -> anyhow::Result<AgentRequest> {
    match tokio::time::timeout(WAIT, terminal.next_notification()).await {
        Ok(Some(notification)) => Ok(notification.request),
        Ok(None) => bail!("the terminal's link ended"),
        Err(_) => bail!("the terminal heard nothing from the agent for {WAIT:?}"),
    }
}

/// The first notification `pick` takes, skipping the others.
async fn wait_for<T>(
    terminal: &mut TerminalSimulator,
    pick: impl Fn(AgentRequest) -> Option<T>,
) -> anyhow::Result<T> {
    loop {
        if let Some(picked) = pick(next_notification(terminal).await?) {
            return Ok(picked);
        }
    }
}

async fn next_cancelled(
    terminal: &mut TerminalSimulator,
) -> anyhow::Result<(String, CancelReason)> {
    wait_for(terminal, |n| match n {
        AgentRequest::PaymentCancelled {
            payment_request_id,
            reason,
        } => Some((payment_request_id, reason)),
        _ => None,
    })
    .await
}

fn describe(reply: &Reply) -> String {
    serde_json::to_string(reply).unwrap_or_else(|_| format!("{reply:?}"))
}

/// Runs an operator command (this binary, as an operator would) and shows its output.
async fn operator(exe: &Path, socket: &Path, args: &[&str]) -> anyhow::Result<()> {
    show(format!("$ pos-agent {}", args.join(" ")));
    let output = tokio::process::Command::new(exe)
        .args(args)
        .arg("--socket")
        .arg(socket)
        .output()
        .await
        .context("running an operator command")?;
    show(
        String::from_utf8_lossy(&output.stdout)
            .trim_end()
            .replace('\n', "\n  "),
    );
    if !output.status.success() {
        bail!(
            "pos-agent {} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&output.stderr)
        );
    }
    Ok(())
}

async fn wait_notify(socket: &UnixDatagram, needle: &str) -> anyhow::Result<String> {
    let mut buf = vec![0u8; 4096];
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let n = tokio::time::timeout_at(deadline, socket.recv(&mut buf))
            .await
            .with_context(|| format!("waiting for {needle}"))??;
        let message = String::from_utf8_lossy(&buf[..n]).into_owned();
        if message.contains(needle) {
            return Ok(message);
        }
    }
}

fn write_config(dir: &Path, sim: &ApiSimulator, device: &Path) -> anyhow::Result<PathBuf> {
    let path = dir.join("agent.toml");
    let text = format!(
        r#"# written by pos-agent demo
{paywall}
[connection.establish]
name = "demo terminal"
display_name = "Demo POS"
brand_id = 10
provider_id = 10
region_id = 1
end_of_day_id = 10

[terminal]
id = "{terminal}"

[serial]
device = "{device}"
ack_timeout = "500ms"

[state]
directory = "{state}"

[control]
socket = "{socket}"

[shutdown]
deadline = "10s"
"#,
        paywall = sim.paywall_config_section(),
        terminal = sim::DEMO_TERMINAL_ID,
        device = device.display(),
        state = dir.join("state").display(),
        socket = dir.join("control.sock").display(),
    );
    std::fs::write(&path, text).context("writing the demo configuration")?;
    Ok(path)
}

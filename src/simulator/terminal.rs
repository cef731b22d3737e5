//! A simulated card terminal: the other end of the serial line, for tests, the demo and manual
//! runs. It speaks protocol v1 through the same link layer as the agent (mirrored roles), sends
//! the terminal's requests and waits for their typed replies, and answers the agent's
//! notifications (`agent_state`, `payment_cancelled`) with `ok` by itself while recording them
//! for whoever wants to wait for one. `ping` is answered by the link.

use std::num::NonZeroU64;
use std::path::PathBuf;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::mpsc;
use uuid::Uuid;

use crate::config::SerialConfig;
use crate::serial::link::{LinkEvent, LinkHandle, LinkSettings, LinkState, TerminalLink};
use crate::serial::message::{
    encode_request, AgentReadiness, AgentRequest, Reply, SaleOrder, TerminalIdentity,
    TerminalRequest, PROTOCOL_VERSION,
};
use crate::serial::{spawn_port_link, LinkError};

/// A request or notification the agent sent, as the simulator received it (already answered).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Notification {
    pub id: u32,
    pub request: AgentRequest,
}

/// The simulated terminal.
pub struct TerminalSimulator {
    link: LinkHandle<TerminalRequest>,
    notifications: mpsc::UnboundedReceiver<Notification>,
}

impl TerminalSimulator {
    /// A terminal on an already open transport (a pty master, a duplex stream).
    pub fn over<T>(transport: T, settings: LinkSettings) -> Self
    where
        T: AsyncRead + AsyncWrite + Send + 'static,
    {
        let (link, events) = TerminalLink::over(transport, settings);
        Self::start(link, events)
    }

    /// A terminal on a serial device (opened with `config`'s line settings, reopened when it
    /// goes away, like the agent does).
    pub fn open(config: SerialConfig, settings: LinkSettings) -> Self {
        let (serial, events) = spawn_port_link::<AgentRequest, TerminalRequest>(config, settings);
        Self::start(serial.link, events)
    }

    fn start(
        link: LinkHandle<TerminalRequest>,
        mut events: mpsc::Receiver<LinkEvent<AgentRequest>>,
    ) -> Self {
        let (record, notifications) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            while let Some(event) = events.recv().await {
                if let LinkEvent::Request(incoming) = event {
                    let notification = Notification {
                        id: incoming.id(),
                        request: incoming.request().clone(),
                    };
                    let _ = record.send(notification);
                    let reply = match incoming.request() {
                        AgentRequest::AgentState {
                            state: AgentReadiness::Ready,
                            ..
                        } => Reply::Ok(Self::identity()),
                        _ => Reply::OK,
                    };
                    incoming.reply(reply);
                }
            }
        });
        Self {
            link,
            notifications,
        }
    }

    /// Who the simulator says it is in its `ok` to `agent_state` (docs/serial-protocol.md §3
    /// "Versions").
    pub fn identity() -> TerminalIdentity {
        TerminalIdentity {
            protocol: Some(PROTOCOL_VERSION),
            model: Some("pos-agent simulate-terminal".to_owned()),
            firmware: Some(crate::build_info::VERSION.to_owned()),
        }
    }

    /// The underlying link (state, shutdown).
    pub fn link(&self) -> &LinkHandle<TerminalRequest> {
        &self.link
    }

    /// Sends `request` and waits for the agent's reply.
    pub async fn request(&self, request: TerminalRequest) -> Result<Reply, LinkError> {
        self.link.request(request).await
    }

    /// Sends a `sale` of `amount_minor` with the given idempotency key.
    pub async fn sale(
        &self,
        merchant_unique_code: Uuid,
        amount_minor: NonZeroU64,
    ) -> Result<Reply, LinkError> {
        self.request(TerminalRequest::Sale(SaleOrder {
            merchant_unique_code,
            amount_minor,
            currency_id: None,
            display_code: None,
        }))
        .await
    }

    /// Sends `status`.
    pub async fn status(&self) -> Result<Reply, LinkError> {
        self.request(TerminalRequest::Status).await
    }

    /// The next notification from the agent (already answered with `ok`); `None` once the link
    /// has ended.
    pub async fn next_notification(&mut self) -> Option<Notification> {
        self.notifications.recv().await
    }

    /// Waits until the agent answers.
    pub async fn wait_until_up(&self) {
        self.link.wait_for_state(LinkState::Up).await
    }

    /// Stops the simulator's link.
    pub fn shutdown(&self) {
        self.link.shutdown()
    }
}

/// Arguments of `pos-agent simulate-terminal`.
#[derive(Debug, clap::Args)]
pub struct CommandArgs {
    /// Serial device of the terminal's end of the line (for example the other end of a
    /// virtual pair).
    #[arg(long)]
    pub device: PathBuf,
    /// Line speed.
    #[arg(long, default_value_t = crate::config::defaults::baud_rate())]
    pub baud_rate: u32,
    /// How long to wait for each reply.
    #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
    pub reply_timeout: Duration,
}

/// Runs `pos-agent simulate-terminal`: each stdin line is one terminal request as JSON without
/// `id` (for example `{"type":"status"}`); it is sent and its reply printed on stdout as one
/// JSON line. Notifications from the agent are printed as they arrive (with their `id`) and
/// answered with `ok`. Link state changes go to stderr. Ends at the end of stdin, once the
/// last reply is in; fails (exit status 1) if any request got no reply.
pub async fn run_command(args: CommandArgs) -> anyhow::Result<()> {
    let config = SerialConfig {
        device: args.device,
        baud_rate: args.baud_rate,
        ..SerialConfig::default()
    };
    let settings = LinkSettings {
        reply_timeout: args.reply_timeout,
        ..LinkSettings::from_config(&config)
    };
    // Fail early with a clear message if the device cannot be opened at all.
    let mut probe = crate::serial::open_port(&config)?;
    let _ = probe.set_exclusive(false);
    drop(probe);
    let mut simulator = TerminalSimulator::open(config, settings);

    let mut states = simulator.link().watch_state();
    tokio::spawn(async move {
        while states.changed().await.is_ok() {
            let state = *states.borrow_and_update();
            eprintln!("simulate-terminal: link {state:?}");
        }
    });
    let link = simulator.link().clone();
    let printer = tokio::spawn(async move {
        while let Some(notification) = simulator.next_notification().await {
            match encode_request(notification.id, &notification.request) {
                Ok(json) => println!("{}", String::from_utf8_lossy(&json)),
                Err(e) => eprintln!("simulate-terminal: cannot print a notification: {e}"),
            }
        }
    });

    // Stdin is read on a plain thread: a terminal's operator types slowly, no async needed.
    let (line_tx, mut lines) = mpsc::unbounded_channel::<String>();
    std::thread::spawn(move || {
        for line in std::io::stdin().lines() {
            let Ok(line) = line else { break };
            if line_tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut unanswered = 0usize;
    while let Some(line) = lines.recv().await {
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        let request: TerminalRequest = match serde_json::from_str(line) {
            Ok(request) => request,
            Err(e) => {
                eprintln!("simulate-terminal: not a terminal request ({e}): {line}");
                continue;
            }
        };
        let _ = tokio::time::timeout(args.reply_timeout, link.wait_for_state(LinkState::Up)).await;
        match link.request(request).await {
            Ok(reply) => println!("{}", serde_json::to_string(&reply)?),
            Err(e) => {
                unanswered += 1;
                eprintln!("simulate-terminal: no reply: {e}");
            }
        }
    }
    link.shutdown();
    // The printer ends once the link has ended and every notification is printed.
    let _ = tokio::time::timeout(Duration::from_secs(2), printer).await;
    if unanswered > 0 {
        anyhow::bail!("{unanswered} request(s) got no reply");
    }
    Ok(())
}

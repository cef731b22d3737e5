//! The main loop run in-process on a paused tokio clock: `run` on the runtime clock
//! ([`Clock::Runtime`]) with the test's own signals, real files for state in a temporary
//! directory, the payment API simulator on loopback and a simulated terminal on a pty pair.
//! The process-level tests (tests/) run the same loop as a process with real signals.
//!
//! The daemon's threads (the state writer, the serial device's opens) and the pty move on in
//! real time, and a paused runtime that finds nothing to do would jump its clock to the next
//! timer meanwhile; every wait of these tests is therefore [`held`], so that the clock moves
//! only when a test advances it.

use std::future::Future;
use std::num::NonZeroU64;
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use uuid::Uuid;

use super::{run, GaugeReader, Host, RunError, Signal, SignalSource, Stopped};
use crate::boot_clock::Clock;
use crate::config::Config;
use crate::control::{self, ControlReply, ControlRequest, PendingPaymentView};
use crate::logging::LoggingError;
use crate::serial::message::{ErrorCode, Reply};
use crate::serial::LinkSettings;
use crate::simulator::api::{self as sim, ApiSimulator, SimulatorOptions};
use crate::simulator::terminal::TerminalSimulator;
use crate::simulator::virtual_serial::VirtualSerial;
use crate::state::{JOURNAL_FILE, STATE_FILE};

const PAYMENT_TIMEOUT: Duration = Duration::from_secs(600);
const CANCEL: (&str, &str) = ("POST", "/api/payment/async/cancel");
const DISCONNECT: (&str, &str) = ("PUT", "/api/connection/disconnect");

/// `work` with tokio's paused clock held still: a task that keeps yielding never lets the
/// runtime park, and a runtime that does not park does not advance a paused clock. Fails
/// after a minute of real time without an answer rather than hanging.
async fn held<F: Future>(work: F) -> F::Output {
    let started = std::time::Instant::now();
    tokio::pin!(work);
    loop {
        tokio::select! {
            biased;
            output = &mut work => return output,
            () = tokio::task::yield_now() => {}
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "no answer within a minute"
        );
    }
}

/// `work`, with the paused clock moving in steps of 10 ms between rounds of the runtime, at
/// most `limit` in all (then it fails): for waits that need the clock and the daemon's threads
/// both.
async fn stepped<F: Future>(work: F, limit: Duration) -> F::Output {
    let start = tokio::time::Instant::now();
    tokio::pin!(work);
    loop {
        let round = async {
            for _ in 0..10 {
                tokio::task::yield_now().await;
            }
        };
        tokio::select! {
            biased;
            output = &mut work => return output,
            () = round => {}
        }
        assert!(
            start.elapsed() < limit,
            "no answer within {limit:?} of the clock"
        );
        tokio::time::advance(Duration::from_millis(10)).await;
    }
}

/// The process around an in-process daemon: tokio's clock, the test's signals, nothing set up
/// process-wide.
struct TestHost {
    signals: Option<mpsc::UnboundedReceiver<Signal>>,
}

impl Host for TestHost {
    fn clock(&self) -> Clock {
        Clock::Runtime
    }

    fn init_process(&mut self, _config: &Config) -> Result<(), LoggingError> {
        Ok(())
    }

    fn signals(&mut self) -> std::io::Result<Box<dyn SignalSource>> {
        match self.signals.take() {
            Some(signals) => Ok(Box::new(signals)),
            None => Err(std::io::Error::other("signals asked for twice")),
        }
    }

    fn start_metrics_textfile(&mut self, _: GaugeReader, _: PathBuf, _: Duration) {
        unreachable!("the tests configure no metrics textfile")
    }
}

/// The test's signals: sent on a channel.
impl SignalSource for mpsc::UnboundedReceiver<Signal> {
    fn poll_signal(&mut self, cx: &mut std::task::Context<'_>) -> std::task::Poll<Option<Signal>> {
        self.poll_recv(cx)
    }
}

/// A daemon running in this test's runtime, its payment API and its terminal.
struct Daemon {
    dir: tempfile::TempDir,
    sim: ApiSimulator,
    terminal: TerminalSimulator,
    signals: mpsc::UnboundedSender<Signal>,
    run: JoinHandle<Result<Stopped, RunError>>,
}

impl Daemon {
    /// Starts it and waits, clock held, until the terminal link is up and the connection is
    /// active.
    async fn start() -> Daemon {
        let dir = tempfile::tempdir().unwrap();
        let sim = ApiSimulator::start(SimulatorOptions {
            with_connection: true,
            ..SimulatorOptions::default()
        })
        .unwrap();
        let line = VirtualSerial::open().unwrap();
        let config = format!(
            "{paywall}\n[connection]\nid = \"{connection}\"\n\n[terminal]\nid = \"{terminal}\"\n\
             payment_timeout = \"{timeout}s\"\n\n[serial]\ndevice = \"{device}\"\n\n\
             [state]\ndirectory = \"{state}\"\n\n[control]\nsocket = \"{socket}\"\n\n\
             [shutdown]\ndeadline = \"10m\"\n",
            paywall = sim.paywall_config_section(),
            connection = sim::DEMO_CONNECTION_ID,
            terminal = sim::DEMO_TERMINAL_ID,
            timeout = PAYMENT_TIMEOUT.as_secs(),
            device = line.slave_path().display(),
            state = dir.path().join("state").display(),
            socket = dir.path().join("control.sock").display(),
        );
        let config_path = dir.path().join("agent.toml");
        std::fs::write(&config_path, config).unwrap();
        std::fs::set_permissions(&config_path, std::fs::Permissions::from_mode(0o600)).unwrap();
        let terminal = TerminalSimulator::over(line, LinkSettings::default());

        let (signals, receiver) = mpsc::unbounded_channel();
        let run = tokio::spawn(async move {
            let mut host = TestHost {
                signals: Some(receiver),
            };
            run(&config_path, &mut host).await
        });
        held(terminal.wait_until_up()).await;
        let daemon = Daemon {
            dir,
            sim,
            terminal,
            signals,
            run,
        };
        held(async {
            while !matches!(
                daemon.terminal.status().await,
                Ok(Reply::Status {
                    connected: true,
                    ..
                })
            ) {
                tokio::task::yield_now().await;
            }
        })
        .await;
        daemon
    }

    /// A sale from the terminal, clock held; its payment request id.
    async fn sale(&self) -> String {
        let amount = NonZeroU64::new(1_250).unwrap();
        match held(self.terminal.sale(Uuid::new_v4(), amount)).await {
            Ok(Reply::SaleStarted {
                payment_request_id, ..
            }) => payment_request_id,
            other => panic!("sale not started: {other:?}"),
        }
    }

    /// The pending payments as the control socket's `pending` shows them, clock held.
    async fn pending(&self) -> Vec<PendingPaymentView> {
        let socket = self.dir.path().join("control.sock");
        let response = held(control::call(
            &socket,
            &ControlRequest::Pending,
            Duration::from_secs(60),
        ))
        .await
        .unwrap();
        match response.outcome {
            Ok(ControlReply::Pending(report)) => report.pending,
            other => panic!("no pending report: {other:?}"),
        }
    }

    /// The requests the payment API received, as (method, path), oldest first.
    fn calls(&self) -> Vec<(String, String)> {
        self.sim
            .requests()
            .into_iter()
            .map(|r| (r.method, r.path))
            .collect()
    }

    /// Where `call` is in [`Daemon::calls`].
    fn position(&self, call: (&str, &str)) -> Option<usize> {
        self.calls()
            .iter()
            .position(|(method, path)| (method.as_str(), path.as_str()) == call)
    }
}

fn cancels_of(sim: &ApiSimulator, id: &str) -> usize {
    sim.requests_to(CANCEL.0, CANCEL.1)
        .iter()
        .filter(|r| r.body.as_ref().is_some_and(|b| b.to_string().contains(id)))
        .count()
}

#[tokio::test(start_paused = true)]
async fn on_the_shutdown_signal_sales_are_refused_pending_payments_cancelled_then_the_connection_deactivated_and_state_compacted(
) {
    let mut daemon = Daemon::start().await;
    let id = daemon.sale().await;
    // The cancel is answered a second (of the paused clock) late: the shutdown is caught in
    // the middle, with the cancel sent and not yet confirmed.
    let latency = Duration::from_secs(1);
    daemon.sim.set_latency(latency);

    daemon.signals.send(Signal::Terminate).unwrap();
    let cancel = held(
        daemon
            .sim
            .wait_for_request(|r| r.is(CANCEL.0, CANCEL.1), Duration::from_secs(3600)),
    )
    .await
    .expect("the pending payment's cancel");
    assert!(
        cancel.body.is_some_and(|b| b.to_string().contains(&id)),
        "the cancel names {id}"
    );
    let refused = held(
        daemon
            .terminal
            .sale(Uuid::new_v4(), NonZeroU64::new(990).unwrap()),
    )
    .await;
    assert!(
        matches!(
            refused,
            Ok(Reply::Error {
                code: ErrorCode::Busy,
                ..
            })
        ),
        "a sale during the shutdown is refused as busy: {refused:?}"
    );
    assert_eq!(
        daemon.position(DISCONNECT),
        None,
        "the connection is still active while a cancel is unconfirmed: {:?}",
        daemon.calls()
    );

    tokio::time::advance(latency).await;
    // The rest of the stop (the terminal told, the state compacted) moves on the clock in
    // small steps, far from the shutdown's deadline.
    let stopped = stepped(&mut daemon.run, Duration::from_secs(30))
        .await
        .unwrap();
    assert_eq!(stopped, Ok(Stopped::Clean));
    let (cancelled, deactivated) = (daemon.position(CANCEL), daemon.position(DISCONNECT));
    assert!(
        cancelled.is_some() && deactivated.is_some() && cancelled < deactivated,
        "cancel, then disconnect: {:?}",
        daemon.calls()
    );
    assert_eq!(cancels_of(&daemon.sim, &id), 1);
    // Compacted: everything in the state file, nothing left in the journal; the payment is no
    // longer pending, its sale ended cancelled.
    let state = daemon.dir.path().join("state");
    let journal = std::fs::metadata(state.join(JOURNAL_FILE)).map_or(0, |m| m.len());
    assert_eq!(journal, 0, "the journal is folded into the state file");
    let snapshot: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(state.join(STATE_FILE)).unwrap()).unwrap();
    assert_eq!(snapshot["payments"], serde_json::json!({}), "{snapshot}");
    let sale = snapshot["sales"]
        .as_object()
        .and_then(|sales| sales.values().next());
    assert_eq!(
        sale.map(|sale| (
            &sale["stage"]["payment_request_id"],
            &sale["stage"]["outcome"]
        )),
        Some((&serde_json::json!(id), &serde_json::json!("cancelled"))),
        "{snapshot}"
    );
}

#[tokio::test(start_paused = true)]
async fn a_pending_payment_is_cancelled_when_its_payment_timeout_has_passed_and_not_before() {
    let daemon = Daemon::start().await;
    let before = tokio::time::Instant::now();
    let id = daemon.sale().await;
    assert_eq!(
        tokio::time::Instant::now(),
        before,
        "the sale took no time on the held clock"
    );

    tokio::time::advance(PAYMENT_TIMEOUT - Duration::from_millis(1)).await;
    let pending = daemon.pending().await;
    assert_eq!(pending.len(), 1);
    assert_eq!(pending[0].payment_request_id, id);
    assert!(
        !pending[0].cancel_requested,
        "cancelled before its timeout: {:?}",
        pending[0]
    );
    assert_eq!(cancels_of(&daemon.sim, &id), 0);

    tokio::time::advance(Duration::from_millis(2)).await;
    let cancel = held(daemon.sim.wait_for_request(
        |r| {
            r.is(CANCEL.0, CANCEL.1) && r.body.as_ref().is_some_and(|b| b.to_string().contains(&id))
        },
        Duration::from_secs(3600),
    ))
    .await;
    assert!(cancel.is_some(), "no cancel of {id} after its timeout");
    assert_eq!(
        tokio::time::Instant::now() - before,
        PAYMENT_TIMEOUT + Duration::from_millis(1)
    );

    daemon.signals.send(Signal::Terminate).unwrap();
    assert_eq!(held(daemon.run).await.unwrap(), Ok(Stopped::Clean));
}

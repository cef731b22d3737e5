//! `pos-agent run`: start-up, the one main loop, and shutdown (docs/operations.md (The daemon: `pos-agent run`)).
//!
//! The main loop is a single `tokio::select!`, watchdog first. Everything that can take time
//! (API calls, terminal replies, operator commands) runs in its own task, so the loop keeps
//! petting the watchdog and answering signals whatever the payment API does.

// Time and count arithmetic: docs/architecture.md, "Lint policy".
#![warn(clippy::arithmetic_side_effects)]

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use tokio::signal::unix::{signal, Signal, SignalKind};
use tokio::sync::mpsc;
use tracing::{error, info, warn};

use super::connection;
use super::core::{canonical_payment_id, Core, SaleOutcome};
use crate::boot_clock::{self, BootMillis};
use crate::cli::exit;
use crate::config;
use crate::control::{
    self, AbandonedSaleView, ApmAccount, CancelFailure, CancelReport, CancelTarget,
    ConnectionReport, ControlCall, ControlError, ControlReply, ControlRequest, ControlResponse,
    DisconnectReport, PendingPaymentView, PendingReport, RejectionView, RetryAfterView,
    SerialPortView, StatusReport, StorageView, TerminalLinkStatus, UnlinkReport,
};
use crate::metrics::{self, METRICS};
use crate::outcome::{ConnectionState, Refusal};
use crate::paywall::{ApmTarget, PaywallClient, RetryPolicy};
use crate::serial::message::{AgentRequest, PaymentResultStatus, Reply, TerminalRequest};
use crate::serial::{self, IncomingRequest, LinkEvent};
use crate::state::CancelReason;
use crate::state::StateStore;
use crate::{build_info, logging, systemd};

/// Exit code when the state file cannot be read (EX_IOERR): an operator must look at it.
pub(crate) const EXIT_STATE_UNREADABLE: u8 = 74;
/// Exit code after `pos-agent restart --keep-pending`: stopped with the pending payments kept,
/// to be started again (the unit lists it in `SuccessExitStatus=` and
/// `RestartForceExitStatus=`).
pub(crate) const EXIT_RESTART_KEEPING_PENDING: u8 = 3;
/// Exit code after `pos-agent restart --keep-pending --no-start`: stopped with the pending
/// payments kept, to stay stopped (`SuccessExitStatus=` only).
pub(crate) const EXIT_STOPPED_KEEPING_PENDING: u8 = 4;

/// Runs the daemon until it is told to stop; returns the process exit code.
pub(crate) async fn run(config_path: &Path) -> ExitCode {
    let env = config::EnvSnapshot::capture();
    let config = match config::load_with(config_path, &env) {
        Ok(config) => Arc::new(config),
        Err(e) => {
            eprintln!("pos-agent: {e}");
            return ExitCode::from(exit::CONFIG);
        }
    };
    if let Err(e) = logging::init(&config.log.level, config.log.repeat_window) {
        eprintln!("pos-agent: {e}");
        return ExitCode::from(exit::CONFIG);
    }

    crate::metrics::mark_start();
    let state_dir = config.state_directory(&env);
    let store = match StateStore::open(&state_dir) {
        Ok(store) => store,
        Err(e) => {
            error!("cannot start: {e}");
            if let Some(textfile) = &config.metrics.textfile {
                if let Err(e) = metrics::write_textfile(textfile, metrics::STATE_UNUSABLE_TEXTFILE)
                {
                    warn!(
                        "cannot write the metrics textfile {}: {e}",
                        textfile.display()
                    );
                }
            }
            return ExitCode::from(EXIT_STATE_UNREADABLE);
        }
    };
    // The same checks `check-config` makes, so that it passing means this passes.
    let problems = config::start_problems(&config, &env);
    if !problems.is_empty() {
        let e = config::ConfigError {
            file: config_path.to_owned(),
            problems,
        };
        error!("cannot start: {e}");
        return ExitCode::from(exit::CONFIG);
    }
    let client = match PaywallClient::new(&config.paywall_settings) {
        Ok(client) => client,
        Err(e) => {
            error!("{e}");
            return ExitCode::from(exit::CONFIG);
        }
    };
    let listener = match systemd::listen_socket() {
        Ok(Some(listener)) => control::adopt(listener),
        Ok(None) => control::bind(&config.control_socket(&env)),
        Err(e) => Err(e),
    };
    let listener = match listener {
        Ok(listener) => listener,
        Err(e) => {
            error!("cannot open the control socket: {e}");
            return ExitCode::FAILURE;
        }
    };
    let (mut signals, mut interrupts, mut hangups) = match (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
        signal(SignalKind::hangup()),
    ) {
        (Ok(t), Ok(i), Ok(h)) => (t, i, h),
        _ => {
            error!("cannot install the signal handlers");
            return ExitCode::FAILURE;
        }
    };

    let (link, mut link_events) = serial::spawn_link(config.serial.clone());
    let core = Core::new(Arc::clone(&config), client, store, link);
    let (calls, mut control_calls) = mpsc::channel::<ControlCall>(16);
    // The control socket keeps answering `status` and `pending` during the shutdown; it goes
    // with the process.
    tokio::spawn(control::serve(listener, calls, std::future::pending()));

    tokio::spawn(connection::maintain(Arc::clone(&core)));
    tokio::spawn(resend_after_storage_recovery(Arc::clone(&core)));
    if let Some(textfile) = config.metrics.textfile.clone() {
        start_metrics_textfile(Arc::clone(&core), textfile, config.metrics.interval);
    }
    let notifier = systemd::Notifier::start();
    notifier.ready();
    info!(
        version = build_info::VERSION,
        commit = build_info::COMMIT,
        "pos-agent {} ready",
        build_info::LONG_VERSION
    );

    let mut watchdog = systemd::watchdog_interval().map(|period| {
        let mut interval = tokio::time::interval(period);
        // After a stall, one pet and on: never a burst of late ones.
        interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        interval
    });
    let mut link_up = false;
    let mut last_status = String::new();
    let mut timer_hold = TimerHold::default();
    // An operator's `restart` with `keep_pending`, answered once the stop is done.
    let mut stop_call = None;
    loop {
        let status = status_line(&core, link_up, false);
        if status != last_status {
            notifier.status(&status);
            last_status = status;
        }
        let next_timeout = core.next_payment_timeout().map(|due| timer_hold.due(due));
        tokio::select! {
            biased;
            _ = tick(&mut watchdog) => notifier.watchdog(),
            _ = signals.recv() => break,
            _ = interrupts.recv() => break,
            _ = hangups.recv() => {
                notifier.reloading();
                reload(&core, config_path);
                notifier.ready();
            }
            Some(call) = control_calls.recv() => {
                if let ControlRequest::RestartKeepingPending { start } = call.request {
                    stop_call = Some((start, call));
                    break;
                }
                let core = Arc::clone(&core);
                tokio::spawn(async move {
                    let response = handle_control(&core, call.request).await;
                    let _ = call.reply.send(response);
                });
            }
            Some(event) = link_events.recv() => match event {
                LinkEvent::Up => {
                    link_up = true;
                    info!(link_state = "up", "terminal link up");
                    core.tell_terminal(AgentRequest::ready());
                }
                LinkEvent::Down => {
                    link_up = false;
                    warn!(link_state = "down", "terminal link down");
                }
                LinkEvent::Request(request) => {
                    let core = Arc::clone(&core);
                    tokio::spawn(handle_terminal(core, request));
                }
            },
            due = sleep_until(next_timeout) => {
                if !due {
                    continue;
                }
                let (expired, commit) = core.mark_timed_out();
                if commit.is_none() {
                    // Logged by the core (`cannot mark timed-out payments: ...`).
                    timer_hold.not_recorded(boot_clock::now());
                    continue;
                }
                timer_hold.recorded();
                let core = Arc::clone(&core);
                tokio::spawn(async move { core.cancel_timed_out(expired, commit).await });
            }
            _ = core.changed.notified() => {}
        }
    }
    let mut events = Events {
        signals,
        interrupts,
        watchdog,
        control_calls,
        link_events,
        notifier,
    };
    let keep_pending = stop_call.is_some();
    let mut code = shut_down(&core, &mut events, link_up, keep_pending).await;
    match stop_call {
        Some((start, call)) if code.is_none() => {
            code = Some(answer_stop(&core, call, start).await);
        }
        // Cut short by a second signal: the operator's call is dropped unanswered (`internal`).
        _ => {}
    }
    events.notifier.finish(Duration::from_secs(1));
    logging::flush_summaries();
    code.unwrap_or(ExitCode::SUCCESS)
}

/// The answer to an operator's `restart` with `keep_pending`, once the stop is done; the
/// process ends only after the answer (and its audit record) went out, within a few seconds.
async fn answer_stop(core: &Core, call: ControlCall, start: bool) -> ExitCode {
    let reply = ControlReply::Restart(PendingReport {
        pending: core.with_store(|s| PendingPaymentView::all(s.state())),
        abandoned: core.with_store(|s| AbandonedSaleView::all(s.state())),
    });
    if call.reply.send(ControlResponse::ok(reply)).is_ok() {
        let _ = tokio::time::timeout(Duration::from_secs(5), call.answered).await;
    }
    ExitCode::from(if start {
        EXIT_RESTART_KEEPING_PENDING
    } else {
        EXIT_STOPPED_KEEPING_PENDING
    })
}

/// `SIGHUP` (docs/configuration.md (Reloading)): reads the configuration and the credentials
/// again and applies the API keys and service parameters; a key that needs a restart is named
/// and keeps its running value; a configuration that does not load changes nothing. Pending
/// payments, sales and the connection go on as they were.
fn reload(core: &Core, config_path: &Path) {
    let reloaded = config::load_with(config_path, &config::EnvSnapshot::capture())
        .map(|loaded| config::reloaded(&core.config(), loaded))
        .map_err(|e| e.to_string())
        .and_then(|reloaded| {
            let client =
                PaywallClient::new(&reloaded.config.paywall_settings).map_err(|e| e.to_string())?;
            Ok((
                reloaded,
                client.with_retry_policy(core.client().retry_policy()),
            ))
        });
    let (reloaded, client) = match reloaded {
        Ok(reloaded) => reloaded,
        Err(e) => {
            error!("reload refused, the running configuration is kept: {e}");
            return;
        }
    };
    for key in &reloaded.needs_restart {
        warn!(
            key = key.as_str(),
            "reload: {key} changed; it takes effect at the next restart, the running value is kept"
        );
    }
    let sources: Vec<String> = reloaded
        .config
        .provenance
        .secrets
        .iter()
        .map(|(name, source)| format!("{name} from {source}"))
        .collect();
    core.replace_config(Arc::new(reloaded.config), client);
    info!(
        "configuration reloaded from {}: API keys {}",
        config_path.display(),
        sources.join(", ")
    );
}

/// A change that could not be recorded (a full disk) is in memory and is written by the state
/// writer once the storage recovers; the cancels it marked are then sent, as at a reconnect.
async fn resend_after_storage_recovery(core: Arc<Core>) {
    let mut health = core.with_store(|s| s.storage_health());
    let mut failing = false;
    while health.changed().await.is_ok() {
        let now_failing = health.borrow_and_update().failing;
        if failing && !now_failing && !core.is_stopping() {
            core.resend_requested_cancels().await;
        }
        failing = now_failing;
    }
}

/// docs/architecture.md (Data flow of a shutdown): stop taking sales, cancel what is pending, disconnect, all within the
/// deadline; a second signal ends it at once. State is written at every step, so whatever
/// is cut short is finished at the next start. With `keep_pending` (an operator's `restart
/// --keep-pending`) nothing is cancelled and the connection stays active: the sales in
/// flight end, the state is synced, and the next process takes the payments over.
///
/// `None` when the stop ran its course; the exit code when a second signal cut it short.
async fn shut_down(
    core: &Arc<Core>,
    events: &mut Events,
    mut link_up: bool,
    keep_pending: bool,
) -> Option<ExitCode> {
    let mut settings = core.config().shutdown.clone();
    if keep_pending {
        settings.cancel_pending = false;
        settings.disconnect = false;
    }
    let pending = core.pending_count();
    let what = if keep_pending { "to keep" } else { "to cancel" };
    info!(
        pending,
        deadline = ?settings.deadline,
        "shutting down: {pending} pending {what} within {:?}",
        settings.deadline
    );
    events.notifier.stopping();
    events
        .notifier
        .extend_timeout(settings.deadline.saturating_add(Duration::from_secs(5)));
    core.begin_stopping();
    if link_up {
        core.tell_terminal(AgentRequest::stopping());
    }
    let work = async {
        if keep_pending {
            core.sales_ended().await;
        }
        if settings.cancel_pending {
            let summary = core.cancel_all_for_shutdown(settings.concurrency).await;
            let (cancelled, failed) = (summary.cancelled.len(), summary.failed.len());
            info!(
                cancelled,
                failed, "pending payments cancelled: {cancelled} cancelled, {failed} failed"
            );
        }
        if settings.disconnect {
            if let Some(id) = core.connection_id() {
                match core.client().disconnect(&id).await {
                    Ok(()) => {
                        core.set_connection_state(ConnectionState::Disconnected);
                        info!(connection_id = id, "connection {id} deactivated");
                    }
                    Err(e) => warn!(
                        connection_id = id,
                        "disconnect of connection {id} failed: {e}"
                    ),
                }
            }
        }
    };
    tokio::pin!(work);
    let deadline = tokio::time::sleep(settings.deadline);
    tokio::pin!(deadline);
    let mut last_status = String::new();
    loop {
        // STATUS= keeps saying what is left to cancel as the confirmations come in.
        let status = status_line(core, link_up, settings.cancel_pending);
        if status != last_status {
            events.notifier.status(&status);
            last_status = status;
        }
        tokio::select! {
            biased;
            _ = tick(&mut events.watchdog) => events.notifier.watchdog(),
            _ = events.signals.recv() => return Some(interrupted(core).await),
            _ = events.interrupts.recv() => return Some(interrupted(core).await),
            Some(call) = events.control_calls.recv() => {
                let response = match call.request {
                    request @ (ControlRequest::Status | ControlRequest::Pending | ControlRequest::Metrics) => handle_control(core, request).await,
                    _ => ControlResponse::error(ControlError::refused(&Refusal::Busy)),
                };
                let _ = call.reply.send(response);
            }
            Some(event) = events.link_events.recv() => match event {
                // Sales get `busy` from the core now; results and status still count.
                LinkEvent::Request(request) => {
                    tokio::spawn(handle_terminal(Arc::clone(core), request));
                }
                LinkEvent::Up => {
                    link_up = true;
                    core.tell_terminal(AgentRequest::stopping());
                }
                LinkEvent::Down => link_up = false,
            },
            () = &mut work => break,
            () = &mut deadline => {
                let left = core.pending_count();
                warn!(left, "shutdown deadline reached with {left} pending; they are finished at the next start");
                break;
            }
            _ = core.changed.notified() => {}
        }
    }
    // The terminal hears what the shutdown cancelled before the process ends, within the deadline.
    if tokio::time::timeout_at(deadline.deadline(), core.notifications_sent())
        .await
        .is_err()
    {
        warn!("shutdown deadline reached before the terminal took every notification");
    }
    // Every clean stop, the keep-pending ones included, leaves a compact state.
    core.compact_store().await;
    let pending = core.pending_count();
    info!(pending, "stopped with {pending} pending");
    None
}

/// What the shutdown still listens to.
struct Events {
    signals: Signal,
    interrupts: Signal,
    watchdog: Option<tokio::time::Interval>,
    control_calls: mpsc::Receiver<ControlCall>,
    link_events: mpsc::Receiver<LinkEvent>,
    notifier: systemd::Notifier,
}

async fn interrupted(core: &Core) -> ExitCode {
    core.compact_store().await;
    let left = core.pending_count();
    warn!(
        left,
        "second signal: stopping at once with {left} pending; they are finished at the next start"
    );
    ExitCode::FAILURE
}

async fn tick(watchdog: &mut Option<tokio::time::Interval>) {
    match watchdog {
        Some(interval) => {
            interval.tick().await;
        }
        None => std::future::pending().await,
    }
}

/// Sleeps until `at` on the boot clock, or for [`boot_clock::RECHECK`] if that is sooner (the
/// main loop then looks at the pending payments again); true when `at` has come.
async fn sleep_until(at: Option<BootMillis>) -> bool {
    match at {
        Some(at) => {
            let wait = boot_clock::elapsed(boot_clock::now(), at);
            tokio::time::sleep(wait.min(boot_clock::RECHECK)).await;
            wait <= boot_clock::RECHECK
        }
        None => std::future::pending().await,
    }
}

/// The payment timer's pause after it could not mark the timed-out payments, which happens
/// when the state writer is behind (docs/state.md, "When the payment timer cannot record"): it
/// tries again after the common outage policy's ceiling for the failures so far (0.5 s,
/// doubling up to 30 s), rather than at once and in a loop on a storage that is already
/// stalled. The pause is measured on the boot clock, as the payments' ages are; a mark
/// recorded ends it.
#[derive(Debug, Default)]
struct TimerHold {
    failures: usize,
    until: Option<BootMillis>,
}

impl TimerHold {
    /// The marks could not be recorded at `now`: the pause before the next try.
    fn not_recorded(&mut self, now: BootMillis) -> Duration {
        let wait = RetryPolicy::API_OUTAGE.ceiling(self.failures);
        self.until = Some(boot_clock::after(now, wait));
        self.failures = self.failures.saturating_add(1);
        wait
    }

    fn recorded(&mut self) {
        *self = Self::default();
    }

    /// When the timer handles a payment due at `due`: then, and not before the pause ends.
    fn due(&self, due: BootMillis) -> BootMillis {
        self.until.map_or(due, |until| due.max(until))
    }
}

/// systemd's `STATUS=`; `cancelling`: whether a shutdown under way cancels the pending payments.
fn status_line(core: &Core, link_up: bool, cancelling: bool) -> String {
    let connection = core.connection_state();
    let terminal = if link_up { "up" } else { "down" };
    let pending = core.pending_count();
    if core.is_stopping() {
        let left = if cancelling {
            "left to cancel"
        } else {
            "pending"
        };
        return format!("stopping · {pending} {left} · {connection} · terminal {terminal}");
    }
    format!("{connection} · terminal {terminal} · {pending} pending")
}

/// One request from the terminal (docs/serial-protocol.md §3, terminal → agent).
async fn handle_terminal(core: Arc<Core>, request: IncomingRequest) {
    let reply = match request.request().clone() {
        TerminalRequest::Sale(order) => {
            let merchant_unique_code = order.merchant_unique_code;
            let reply = match core.sale(order).await {
                SaleOutcome::Started { payment_request_id } => Reply::SaleStarted {
                    payment_request_id,
                    merchant_unique_code,
                },
                SaleOutcome::Refused(refusal) => Reply::refused(&refusal),
            };
            match &reply {
                Reply::SaleStarted { .. } => METRICS.sales_started.inc(),
                Reply::Error { code, .. } => METRICS.sale_refused(*code as usize),
                _ => {}
            }
            reply
        }
        TerminalRequest::PaymentStarted { payment_request_id } => {
            match core
                .track_payment_started_elsewhere(&payment_request_id)
                .await
            {
                Ok(()) => Reply::OK,
                Err(refusal) => Reply::refused(&refusal),
            }
        }
        TerminalRequest::PaymentResult {
            payment_request_id,
            status,
        } => match core
            .payment_result(
                &payment_request_id,
                status == PaymentResultStatus::Succeeded,
            )
            .await
        {
            Ok(()) => Reply::OK,
            Err(refusal) => Reply::refused(&refusal),
        },
        TerminalRequest::Cancel {
            payment_request_id: Some(id),
        } => match canonical_payment_id(&id) {
            Err(refusal) => Reply::refused(&refusal),
            Ok(id) => match core.cancel(&id, CancelReason::Terminal).await {
                Ok(()) => Reply::cancelled(vec![id]),
                Err(refusal) => Reply::refused(&refusal),
            },
        },
        TerminalRequest::Cancel {
            payment_request_id: None,
        } => {
            let summary = core
                .cancel_all(CancelReason::Terminal, core.config().shutdown.concurrency)
                .await;
            match summary.failed.into_iter().next() {
                Some((_, refusal)) if summary.cancelled.is_empty() => Reply::refused(&refusal),
                _ => Reply::cancelled(summary.cancelled),
            }
        }
        TerminalRequest::Status => Reply::status(
            core.connection_id(),
            core.connection_state() == ConnectionState::Connected,
            core.pending_ids(),
        ),
        TerminalRequest::Ping => Reply::Pong,
    };
    if let Some(record) = super::audit::record(request.request(), &reply) {
        crate::audit::write_terminal(
            &core.config().serial.device.display().to_string(),
            request.id(),
            &record,
        );
    }
    request.reply(reply);
}

/// One operator command from the control socket (docs/operations.md (Operator commands)).
async fn handle_control(core: &Arc<Core>, request: ControlRequest) -> ControlResponse {
    let reply = match request {
        ControlRequest::Status => Ok(ControlReply::Status(Box::new(status_report(core)))),
        ControlRequest::Metrics => Ok(ControlReply::Metrics(metrics::render(
            &gauges(core),
            metrics::Format::OpenMetrics,
        ))),
        ControlRequest::Pending => Ok(ControlReply::Pending(PendingReport {
            pending: core.with_store(|s| PendingPaymentView::all(s.state())),
            abandoned: core.with_store(|s| AbandonedSaleView::all(s.state())),
        })),
        ControlRequest::Cancel(CancelTarget::One(id)) => {
            let id = id.to_string();
            core.cancel(&id, CancelReason::Operator).await.map(|()| {
                ControlReply::Cancel(CancelReport {
                    cancelled: vec![id],
                    failed: Vec::new(),
                })
            })
        }
        ControlRequest::Cancel(CancelTarget::All) => {
            let summary = core
                .cancel_all(CancelReason::Operator, core.config().shutdown.concurrency)
                .await;
            Ok(ControlReply::Cancel(CancelReport {
                cancelled: summary.cancelled,
                failed: failures(summary.failed),
            }))
        }
        ControlRequest::Disconnect => {
            connection::operator_disconnect(core)
                .await
                .map(|(id, summary)| {
                    ControlReply::Disconnect(DisconnectReport {
                        connection_id: Some(id),
                        connection: core.connection_state().into(),
                        cancelled: summary.cancelled,
                        failed: failures(summary.failed),
                    })
                })
        }
        ControlRequest::Reconnect => connection::operator_reconnect(core).await.map(|id| {
            ControlReply::Reconnect(ConnectionReport {
                connection_id: Some(id),
                connection: core.connection_state().into(),
            })
        }),
        ControlRequest::ApmUnlink { phone, account } => {
            let target = match account {
                ApmAccount::Key(key) => ApmTarget::Key(key),
                ApmAccount::ConnectionId(id) => ApmTarget::ConnectionId(id),
            };
            core.client()
                .apm_unlink(&phone, target)
                .await
                .map(|_| ControlReply::ApmUnlink(UnlinkReport::default()))
                .map_err(|e| Refusal::from_api_error(&e))
        }
        ControlRequest::MasterpassUnlink { session_id } => core
            .client()
            .masterpass_unlink(session_id)
            .await
            .map(|unlinked| {
                ControlReply::MasterpassUnlink(UnlinkReport {
                    message: None,
                    retrieval_reference_number: unlinked.retrieval_reference_number,
                })
            })
            .map_err(|e| Refusal::from_api_error(&e)),
        ControlRequest::CheckoutDeactivate { id } => core
            .client()
            .checkout_deactivate(id)
            .await
            .map(|_| ControlReply::CheckoutDeactivate(UnlinkReport::default()))
            .map_err(|e| Refusal::from_api_error(&e)),
        // The main loop takes these itself and stops; one that reaches this is during a stop.
        ControlRequest::RestartKeepingPending { .. } => Err(Refusal::Busy),
    };
    match reply {
        Ok(reply) => ControlResponse::ok(reply),
        Err(refusal) => ControlResponse::error(ControlError::refused(&refusal)),
    }
}

fn failures(failed: Vec<(String, Refusal)>) -> Vec<CancelFailure> {
    failed
        .into_iter()
        .map(|(payment_request_id, refusal)| CancelFailure {
            payment_request_id,
            error: ControlError::refused(&refusal),
        })
        .collect()
}

fn status_report(core: &Core) -> StatusReport {
    StatusReport {
        version: build_info::VERSION.to_owned(),
        commit: build_info::COMMIT.to_owned(),
        connection_id: core.connection_id(),
        connection: core.connection_state().into(),
        rejection: core.rejection().map(RejectionView::from),
        connection_problem: core.connection_problem(),
        terminal_link: if core.link().state() == serial::LinkState::Up {
            TerminalLinkStatus::Up
        } else {
            TerminalLinkStatus::Down
        },
        terminal: core.terminal_identity(),
        serial_port: SerialPortView {
            open: Some(core.link().state() != serial::LinkState::Closed),
            ..core.port_stats().into()
        },
        pending: core.with_store(|s| PendingPaymentView::all(s.state())),
        abandoned: core.with_store(|s| AbandonedSaleView::all(s.state())),
        terminal_last_answered: METRICS.terminal_last_answered().map(control::rfc3339),
        api_last_answered: METRICS.api_last_answered().map(control::rfc3339),
        storage: storage_view(core),
        api_retry_after: core.client().held().map(RetryAfterView::from),
    }
}

// `statvfs` counts are 32 bits wide on 32-bit ARM.
#[allow(clippy::unnecessary_cast)]
fn storage_view(core: &Core) -> StorageView {
    let health = core.storage_health();
    let directory = core.with_store(|s| s.directory().to_owned());
    let space = nix::sys::statvfs::statvfs(&directory).ok().map(|fs| {
        let block = fs.fragment_size() as u64;
        (
            (fs.blocks_available() as u64).saturating_mul(block),
            (fs.blocks() as u64).saturating_mul(block),
        )
    });
    let (last_error, last_error_at) = match health.last_error {
        Some((error, at)) => (Some(error), Some(control::rfc3339(at))),
        None => (None, None),
    };
    StorageView {
        directory: directory.display().to_string(),
        writable: !health.failing,
        last_error,
        last_error_at,
        free_bytes: space.map(|(free, _)| free),
        free_space_low: space.is_some_and(|(free, total)| StorageView::is_low(free, total)),
    }
}

/// `[metrics] textfile`: rewritten every `interval` while the agent runs, on a thread of its
/// own (like the state writer: a slow disk never holds the runtime). A failure is logged once,
/// and so is the recovery.
fn start_metrics_textfile(core: Arc<Core>, path: PathBuf, interval: Duration) {
    let writer = move || {
        let mut failing = false;
        loop {
            let text = metrics::render(&gauges(&core), metrics::Format::Prometheus);
            let shown = path.display();
            match metrics::write_textfile(&path, &text) {
                Ok(()) if failing => {
                    failing = false;
                    info!("metrics textfile {shown} written again");
                }
                Ok(()) => {}
                Err(e) if !failing => {
                    failing = true;
                    warn!("cannot write the metrics textfile {shown}: {e}; retrying every {interval:?}");
                }
                Err(_) => {}
            }
            std::thread::sleep(interval);
        }
    };
    if let Err(e) = crate::thread::spawn("metrics-textfile", None, Box::new(writer)) {
        warn!("cannot start the metrics textfile writer: {e}");
    }
}

/// What the metrics need from the daemon at the moment of the exposition.
pub(crate) fn gauges(core: &Core) -> metrics::Gauges {
    metrics::Gauges {
        pending: core.pending_count(),
        abandoned: core.with_store(|s| s.state().abandoned_sales().count()),
        connected: core.connection_state() == ConnectionState::Connected,
        link_up: core.link().state() == serial::LinkState::Up,
        port_reopens: core.port_stats().reopens,
        terminal: core.terminal_identity(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_payment_timer_waits_longer_after_each_mark_it_could_not_record() {
        let now: BootMillis = 1_000_000;
        let mut hold = TimerHold::default();
        // Nothing failed: a payment due now is handled now, one due later then.
        assert_eq!(hold.due(now), now);
        assert_eq!(hold.due(now + 1_000), now + 1_000);

        let waits: Vec<Duration> = (0..10).map(|_| hold.not_recorded(now)).collect();
        let ms = |ms| Duration::from_millis(ms);
        assert_eq!(
            waits,
            [
                ms(500),
                ms(1_000),
                ms(2_000),
                ms(4_000),
                ms(8_000),
                ms(16_000),
                ms(30_000),
                ms(30_000),
                ms(30_000),
                ms(30_000)
            ]
        );
        // An overdue payment waits out the pause; one due after the pause is handled when it
        // is due.
        assert_eq!(hold.due(now - 5_000), now + 30_000);
        assert_eq!(hold.due(now + 60_000), now + 60_000);

        hold.recorded();
        assert_eq!(hold.due(now - 5_000), now - 5_000);
        assert_eq!(hold.not_recorded(now), ms(500));
    }
}

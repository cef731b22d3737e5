//! The shutdown (docs/architecture.md (Data flow of a shutdown)): stop taking sales, cancel
//! what is pending, disconnect, compact the state, within the deadline; and the answer to an
//! operator's `restart --keep-pending` once that stop is done.

// Time and count arithmetic: docs/architecture.md, "Lint policy".
#![warn(clippy::arithmetic_side_effects)]

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tracing::{info, warn};

use super::core::Core;
use super::dispatch::{handle_control, handle_terminal};
use super::host::{next_signal, Signal, SignalSource};
use super::notify::{status_line, tick};
use super::stopped::{RunError, Stopped};
use crate::control::{
    AbandonedSaleView, ControlCall, ControlError, ControlReply, ControlRequest, ControlResponse,
    PendingPaymentView, PendingReport,
};
use crate::outcome::{ConnectionState, Refusal};
use crate::serial::message::AgentRequest;
use crate::serial::LinkEvent;
use crate::systemd;

/// docs/architecture.md (Data flow of a shutdown): stop taking sales, cancel what is pending, disconnect, all within the
/// deadline; a second signal ends it at once. State is written at every step, so whatever
/// is cut short is finished at the next start. With `keep_pending` (an operator's `restart
/// --keep-pending`) nothing is cancelled and the connection stays active: the sales in
/// flight end, the state is synced, and the next process takes the payments over.
///
/// An error when a second signal cut it short.
pub(super) async fn shut_down(
    core: &Arc<Core>,
    events: &mut Events,
    mut link_up: bool,
    keep_pending: bool,
) -> Result<(), RunError> {
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
            // A reload waits for the next start.
            Signal::Terminate | Signal::Interrupt = next_signal(&mut *events.signals) => {
                return Err(interrupted(core).await);
            }
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
    Ok(())
}

/// What the shutdown still listens to.
pub(super) struct Events {
    pub(super) signals: Box<dyn SignalSource>,
    pub(super) watchdog: Option<tokio::time::Interval>,
    pub(super) control_calls: mpsc::Receiver<ControlCall>,
    pub(super) link_events: mpsc::Receiver<LinkEvent>,
    pub(super) notifier: systemd::Notifier,
}

async fn interrupted(core: &Core) -> RunError {
    core.compact_store().await;
    let left = core.pending_count();
    warn!(
        left,
        "second signal: stopping at once with {left} pending; they are finished at the next start"
    );
    RunError::Interrupted
}

/// The answer to an operator's `restart` with `keep_pending`, once the stop is done; the
/// process ends only after the answer (and its audit record) went out, within a few seconds.
pub(super) async fn answer_stop(core: &Core, call: ControlCall, start: bool) -> Stopped {
    let reply = ControlReply::Restart(PendingReport {
        pending: core.with_store(|s| PendingPaymentView::all(s.state())),
        abandoned: core.with_store(|s| AbandonedSaleView::all(s.state())),
    });
    if call.reply.send(ControlResponse::ok(reply)).is_ok() {
        let _ = tokio::time::timeout(Duration::from_secs(5), call.answered).await;
    }
    if start {
        Stopped::RestartKeepingPending
    } else {
        Stopped::HaltKeepingPending
    }
}

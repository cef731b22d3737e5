//! The PhysicalAPI connection of docs/operations.md (The daemon: `pos-agent run`): re-activate the known connection at start or
//! establish one, keep trying in the background while the API is unreachable, and the
//! operator's `disconnect` / `reconnect`.

use std::sync::Arc;
use std::time::Duration;

use tracing::{debug, error, info, warn};

use super::cancel::CancelSummary;
use super::core::Core;
use crate::outcome::{ConnectionState, Refusal, UnavailableKind};
use crate::retry::{retry, Attempt, Ended};
use crate::state::CancelReason;

/// How long the agent waits before trying again while the API rejects it (HTTP 401/403/404):
/// nothing changes until an operator fixes the configuration, so at most once a minute.
pub(crate) const REJECTED_RETRY_INTERVAL: Duration = Duration::from_secs(60);

/// Keeps the connection up for the daemon's life: reconnects the known Id (configuration, else
/// state) or establishes a new one and makes its Id durable. Transport failures are retried
/// with the common [`RetryPolicy`](crate::retry::RetryPolicy), never sooner than a `Retry-After` asked; a rejection of the agent itself (HTTP 401/403/404) is tried again at most once
/// a minute, also when a later call meets one; an envelope refusal ends the attempts (the
/// operator sees it in `status` and the log, and can `reconnect`). Whenever the connection comes
/// up, the cancels not seen confirmed are sent again and the sale intents left are resolved.
pub(crate) async fn maintain(core: Arc<Core>) {
    let mut pacing = core.outage_pacing();
    let mut connection = core.connection_signal();
    let mut clock_problem_logged = false;
    // Whether the next round's first attempt looks for a connection an operator's `reconnect`
    // brought up during the wait before it (every wait does but the one after such a
    // connection was seen rejected).
    let mut look_for_reconnect = false;
    loop {
        let core = &core;
        let attempt = || {
            let look = std::mem::replace(&mut look_for_reconnect, true);
            async move {
                if look && core.connection_state() == ConnectionState::Connected {
                    return Attempt::Done(Round::UpByOperator);
                }
                if core.is_stopping() {
                    return Attempt::Done(Round::Stopping);
                }
                if core.connection_state() != ConnectionState::Rejected {
                    core.set_connection_state(ConnectionState::Connecting);
                }
                match connect_once(core).await {
                    Ok(id) => Attempt::Done(Round::Up(id)),
                    Err(Refusal::AgentRejected(_)) => Attempt::After(REJECTED_RETRY_INTERVAL),
                    Err(refusal @ Refusal::ApiUnavailable { .. }) => Attempt::Again(refusal),
                    Err(refusal) => Attempt::GiveUp(refusal),
                }
            }
        };
        let waiting = |refusal: &Refusal, wait: Duration| {
            let Refusal::ApiUnavailable { kind, detail: why } = refusal else {
                return;
            };
            if *kind != UnavailableKind::ClockProblem {
                warn!("payment API not reachable yet ({why}); trying again in {wait:?}");
            } else if !clock_problem_logged {
                // Once: a terminal without RTC may take minutes to get the time.
                clock_problem_logged = true;
                let now = humantime::format_rfc3339_seconds(std::time::SystemTime::now());
                warn!("clock problem: the payment API's certificate is not valid at the system time {now}; the connection is retried until the clock is right ({why})");
            } else {
                debug!("payment API connection: still the clock problem; trying again in {wait:?}");
            }
            core.set_connection_problem(Some(why.clone()));
        };
        match retry(&mut pacing, attempt, waiting).await {
            Ok(Round::Up(id)) => {
                info!(connection_id = id, "payment API connection {id} active");
                core.set_connection_problem(None);
                core.clear_rejection();
                core.set_connection_state(ConnectionState::Connected);
                core.settle_all_abandoned();
                pacing.waits.reset();
                core.resend_requested_cancels().await;
                core.resolve_leftover_intents().await;
                look_for_reconnect = true;
            }
            // Up by an operator's `reconnect` during the last wait: watched like a connection of
            // this task's, then, after its minute, tried again without looking for another.
            Ok(Round::UpByOperator) => look_for_reconnect = false,
            Ok(Round::Stopping) | Err(Ended::Stopped) => return,
            Err(Ended::GaveUp(refusal)) => {
                core.set_connection_problem(Some(refusal.to_string()));
                error!("the payment API connection could not be activated: {refusal}");
                core.set_connection_state(ConnectionState::Disconnected);
                return;
            }
        }
        // Up until a call meets a rejection of the agent; then wait and try again.
        tokio::select! {
            _ = connection.wait_for(|c| *c == ConnectionState::Rejected) => {}
            _ = pacing.stop.wait_for(|s| *s) => return,
        }
        tokio::select! {
            _ = crate::boot_clock::sleep(REJECTED_RETRY_INTERVAL) => {}
            _ = pacing.stop.wait_for(|s| *s) => return,
        }
    }
}

/// How one round of [`maintain`]'s attempts ended.
enum Round {
    /// This task brought the connection up, with this Id.
    Up(String),
    /// An operator's `reconnect` brought it up meanwhile.
    UpByOperator,
    Stopping,
}

async fn connect_once(core: &Core) -> Result<String, Refusal> {
    let known = core
        .config()
        .connection
        .id
        .clone()
        .or_else(|| core.connection_id());
    if let Some(id) = known {
        core.client()
            .reconnect(&id)
            .await
            .map_err(|e| core.refusal(&e))?;
        if core.connection_id().as_deref() != Some(id.as_str()) {
            store_connection_id(core, &id).await?;
        }
        return Ok(id);
    }
    let Some(establish) = core.config().connection.establish.clone() else {
        return Err(Refusal::Internal(
            "no connection Id is known and [connection.establish] is not configured".into(),
        ));
    };
    let id = core
        .client()
        .establish_connection(&establish)
        .await
        .map_err(|e| core.refusal(&e))?;
    store_connection_id(core, &id).await?;
    Ok(id)
}

async fn store_connection_id(core: &Core, id: &str) -> Result<(), Refusal> {
    core.mutate_store(|s| s.set_connection_id(Some(id.to_owned())))
        .await
        .map_err(|e| Refusal::Internal(format!("cannot write state: {e}")))
}

/// `pos-agent disconnect`: cancel every pending payment, then deactivate the connection. The
/// daemon keeps running and refuses sales (`not_connected`) until `reconnect`.
pub(crate) async fn operator_disconnect(
    core: &Arc<Core>,
) -> Result<(String, CancelSummary), Refusal> {
    let Some(id) = core.connection_id() else {
        return Err(Refusal::NotConnected);
    };
    core.set_connection_state(ConnectionState::Disconnected);
    let summary = core
        .cancel_all(CancelReason::Operator, core.config().shutdown.concurrency)
        .await;
    if let Some((payment, why)) = summary.failed.first() {
        warn!(
            payment_request_id = payment.as_str(),
            "cancel of payment {payment} before disconnect failed: {why}"
        );
    }
    core.client()
        .disconnect(&id)
        .await
        .map_err(|e| Refusal::from_api_error(&e))?;
    info!(
        connection_id = id,
        "connection {id} deactivated by the operator"
    );
    Ok((id, summary))
}

/// `pos-agent reconnect`: re-activate the connection (one attempt, with the client's retries),
/// then, in the background, send again the cancels not seen confirmed and resolve the sale
/// intents left unresolved, as at start.
pub(crate) async fn operator_reconnect(core: &Arc<Core>) -> Result<String, Refusal> {
    if core.connection_state() != ConnectionState::Rejected {
        core.set_connection_state(ConnectionState::Connecting);
    }
    match connect_once(core).await {
        Ok(id) => {
            info!(
                connection_id = id,
                "connection {id} re-activated by the operator"
            );
            core.clear_rejection();
            core.set_connection_state(ConnectionState::Connected);
            let background = Arc::clone(core);
            background.settle_all_abandoned();
            tokio::spawn(async move {
                background.resend_requested_cancels().await;
                background.resolve_leftover_intents().await;
            });
            Ok(id)
        }
        // connect_once noted it: `connection: rejected`, retried at most once a minute.
        Err(refusal @ Refusal::AgentRejected(_)) => Err(refusal),
        Err(refusal) => {
            core.set_connection_state(ConnectionState::Disconnected);
            Err(refusal)
        }
    }
}

//! The cancel machine of docs/state.md: one cancel marked durable before it is sent, the
//! cancels of many payments (the operator's, the shutdown's) and the cancels sent again at
//! start and after a reconnect.

// Time and count arithmetic: docs/architecture.md, "Lint policy".
#![warn(clippy::arithmetic_side_effects)]

use std::sync::Arc;
use std::time::SystemTime;

use super::core::{Core, InFlight};
use crate::ids::PaymentRequestId;
use crate::metrics::{CancelOutcome, METRICS};
use crate::outcome::Refusal;
use crate::paywall::ApiError;
use crate::serial::message::AgentRequest;
use crate::state::{CancelReason, PaymentOutcome};
use tracing::{error, info, warn};

impl Core {
    /// Cancels one pending payment: marked durable, sent (retried by the client), then
    /// forgotten and the terminal told. A refusal because the payment is final at the API ends
    /// the payment; any other refusal clears the mark and flags the payment `cancel_refused`
    /// (nothing sends it again by itself); a transport failure or a 5xx keeps the mark, so the
    /// cancel is sent again (timeouts: with backoff; others: at shutdown, at the next start).
    pub(crate) async fn cancel(
        self: &Arc<Self>,
        payment_request_id: &PaymentRequestId,
        reason: CancelReason,
    ) -> Result<(), Refusal> {
        if !self.is_pending(payment_request_id) {
            return Err(Refusal::NotFound(payment_request_id.to_string()));
        }
        let Some(_in_flight) = InFlight::enter(&self.cancels_in_flight, payment_request_id.clone())
        else {
            return Err(Refusal::api_unavailable(format!(
                "a cancel of {payment_request_id} is already under way"
            )));
        };
        let marked = self
            .mutate_store(|s| {
                s.mark_cancel_requested(payment_request_id, reason, SystemTime::now())
            })
            .await;
        match marked {
            Ok(()) => {
                self.send_cancel(payment_request_id, reason, Durability::Immediate)
                    .await
            }
            Err(e) => Err(Refusal::Internal(format!("cannot write state: {e}"))),
        }
    }

    async fn send_cancel(
        self: &Arc<Self>,
        id: &PaymentRequestId,
        reason: CancelReason,
        durability: Durability,
    ) -> Result<(), Refusal> {
        // An id read back from an older state file is used as stored, and may be no GUID.
        let Some(payment_request_id) = id.uuid() else {
            return Err(Refusal::InvalidRequest(format!(
                "{id} is not a PaymentRequestId (a GUID)"
            )));
        };
        let sent = self.client().cancel(payment_request_id).await;
        METRICS.cancel(
            reason.index(),
            match &sent {
                Ok(_) => CancelOutcome::Confirmed,
                Err(error)
                    if error.agent_rejection().is_none()
                        && (error.is_rejection() || is_answered_refusal(error)) =>
                {
                    CancelOutcome::Refused
                }
                Err(_) => CancelOutcome::Unconfirmed,
            },
        );
        match sent {
            Ok(_) => {
                match durability {
                    Durability::Immediate => {
                        if let Err(e) = self
                            .mutate_store(|s| {
                                s.finish_payment(id, PaymentOutcome::Cancelled, SystemTime::now())
                            })
                            .await
                        {
                            error!(
                                payment_request_id = id.as_str(),
                                "cannot record the confirmed cancel of payment {id}: {e}"
                            );
                        }
                    }
                    Durability::Batched => self.defer_store(|s| {
                        s.defer(|state| {
                            state.finish_payment(id, PaymentOutcome::Cancelled, SystemTime::now());
                        })
                    }),
                }
                info!(payment_request_id = id.as_str(), reason = %reason, "{reason} cancel of payment {id} confirmed: payment cancelled");
                if reason != CancelReason::Terminal {
                    self.tell_terminal(AgentRequest::PaymentCancelled {
                        payment_request_id: id.to_string(),
                        reason: reason.into(),
                    });
                }
                Ok(())
            }
            Err(error) if is_already_final(&error) => {
                warn!(
                    payment_request_id = id.as_str(),
                    "payment {id} is already final at the payment API; it is no longer pending: {error}"
                );
                if let Err(e) = self
                    .mutate_store(|s| {
                        s.finish_payment(id, PaymentOutcome::FinalAtApi, SystemTime::now())
                    })
                    .await
                {
                    error!(
                        payment_request_id = id.as_str(),
                        "cannot write state for payment {id}: {e}"
                    );
                }
                Err(Refusal::from_api_error(&error))
            }
            Err(error) if error.agent_rejection().is_some() => {
                warn!(
                    payment_request_id = id.as_str(),
                    "{reason} cancel of payment {id} not sent: the payment API rejects the agent; it stays marked and is sent again once the API accepts it: {error}"
                );
                Err(self.refusal(&error))
            }
            Err(error) if error.is_rejection() || is_answered_refusal(&error) => {
                let message = error.to_string();
                warn!(
                    payment_request_id = id.as_str(),
                    "{reason} cancel of payment {id} refused by the payment API; it stays pending, flagged cancel_refused, and is not sent again by itself: {message}"
                );
                if let Err(e) = self
                    .mutate_store(|s| s.mark_cancel_refused(id, &message, SystemTime::now()))
                    .await
                {
                    error!(
                        payment_request_id = id.as_str(),
                        "cannot write state for payment {id}: {e}"
                    );
                }
                // An HTTP 4xx answers the request like an envelope refusal: the operator's
                // command exits 1 with it (not 75, "try again later").
                Err(match Refusal::from_api_error(&error) {
                    Refusal::ApiUnavailable { .. } => Refusal::ApiRejected {
                        message,
                        client_message: None,
                        error_code: None,
                    },
                    refusal => refusal,
                })
            }
            Err(error) => {
                warn!(
                    payment_request_id = id.as_str(),
                    "{reason} cancel of payment {id} not confirmed ({error}); it stays marked and is sent again"
                );
                Err(self.refusal(&error))
            }
        }
    }

    /// Cancels every pending payment, `concurrency` at a time; returns the ids cancelled and
    /// those that were not, with why.
    pub(crate) async fn cancel_all(
        self: &Arc<Self>,
        reason: CancelReason,
        concurrency: usize,
    ) -> CancelSummary {
        self.cancel_many(
            self.pending_ids(),
            reason,
            concurrency,
            Durability::Immediate,
        )
        .await
    }

    /// The shutdown's cancels (docs/architecture.md (Data flow of a shutdown)): every pending payment is marked in one record
    /// before any request leaves; the confirmations are not waited for (the state writer
    /// commits them in groups, and the daemon waits for them all before it exits), since a
    /// confirmation lost in a crash only means the cancel is sent again at the next start.
    /// Payments whose cancel the API refused are left as they are (nothing re-sends those by
    /// itself).
    pub(crate) async fn cancel_all_for_shutdown(
        self: &Arc<Self>,
        concurrency: usize,
    ) -> CancelSummary {
        let ids: Vec<PaymentRequestId> = self.with_store(|s| {
            s.pending()
                .iter()
                .filter(|(_, p)| p.cancel_refused.is_none())
                .map(|(id, _)| id.clone())
                .collect()
        });
        let now = SystemTime::now();
        let marked = self
            .mutate_store(|s| {
                s.update(|state| {
                    for id in &ids {
                        state.mark_cancel_requested(id, CancelReason::Shutdown, now)?;
                    }
                    Ok(())
                })
            })
            .await;
        if let Err(e) = marked {
            error!("cannot mark the shutdown's cancels: {e}; sending them one by one");
            return self.cancel_all(CancelReason::Shutdown, concurrency).await;
        }
        let summary = self
            .cancel_many(
                ids,
                CancelReason::Shutdown,
                concurrency,
                Durability::Batched,
            )
            .await;
        // Not waited for here: the writer commits them while the disconnect is under way, and
        // the daemon waits for everything (`Core::compact_store`) before it exits.
        summary
    }

    async fn cancel_many(
        self: &Arc<Self>,
        ids: Vec<PaymentRequestId>,
        reason: CancelReason,
        concurrency: usize,
        durability: Durability,
    ) -> CancelSummary {
        use futures_util::stream::{self, StreamExt};
        let results: Vec<(PaymentRequestId, Result<(), Refusal>)> = stream::iter(ids)
            .map(|id| {
                let core = Arc::clone(self);
                async move {
                    let result = match durability {
                        Durability::Immediate => core.cancel(&id, reason).await,
                        Durability::Batched => core.send_cancel(&id, reason, durability).await,
                    };
                    (id, result)
                }
            })
            .buffer_unordered(concurrency.max(1))
            .collect()
            .await;
        let mut summary = CancelSummary::default();
        for (id, result) in results {
            match result {
                Ok(()) => summary.cancelled.push(id),
                Err(e) => summary.failed.push((id, e)),
            }
        }
        summary
    }

    /// At start and after a reconnect: cancels asked for and not confirmed are sent again.
    pub(crate) async fn resend_requested_cancels(self: &Arc<Self>) {
        use futures_util::stream::{self, StreamExt};
        let marked: Vec<(PaymentRequestId, CancelReason)> = self.with_store(|s| {
            s.pending()
                .iter()
                .filter_map(|(id, p)| p.cancel_requested.map(|c| (id.clone(), c.reason)))
                .collect()
        });
        if marked.is_empty() {
            return;
        }
        let count = marked.len();
        info!(
            count,
            "sending again the {count} cancels not seen confirmed"
        );
        let concurrency = self.config().shutdown.concurrency;
        stream::iter(marked)
            .for_each_concurrent(concurrency.max(1), |(id, reason)| {
                let core = Arc::clone(self);
                async move {
                    let _ = core.cancel(&id, reason).await;
                }
            })
            .await;
    }
}

#[derive(Debug, Clone, Copy)]
enum Durability {
    /// The confirmation is written before the terminal hears of it.
    Immediate,
    /// The confirmation is committed with whatever the state writer commits next; not waited
    /// for.
    Batched,
}

/// The outcome of cancelling several payments.
#[derive(Debug, Default)]
pub(crate) struct CancelSummary {
    pub cancelled: Vec<PaymentRequestId>,
    pub failed: Vec<(PaymentRequestId, Refusal)>,
}

/// The API's code for "the payment is already completed" (successful or failed): a cancel
/// cannot change it, and it is no longer pending.
const PAYMENT_ALREADY_COMPLETED: i64 = 7;

/// An HTTP status that answers the request (4xx other than 408/429): sending it again cannot
/// change the answer.
fn is_answered_refusal(error: &ApiError) -> bool {
    matches!(error, ApiError::Status { status, .. } if (400..500).contains(status))
        && !error.is_retryable()
}

/// A cancel refused because the payment is final at the API (`docs/payment-api.md`).
fn is_already_final(error: &ApiError) -> bool {
    matches!(
        error,
        ApiError::Rejected {
            error_code: Some(PAYMENT_ALREADY_COMPLETED),
            ..
        }
    )
}

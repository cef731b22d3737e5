//! The payment timer of docs/state.md: when the next pending payment runs past
//! `[terminal] payment_timeout`, marking those that did, and sending their cancels until the
//! API answers them.

// Time and count arithmetic: docs/architecture.md, "Lint policy".
#![warn(clippy::arithmetic_side_effects)]

use std::sync::Arc;
use std::time::SystemTime;

use tracing::{error, info};

use super::core::Core;
use crate::boot_clock::{self, BootMillis};
use crate::ids::PaymentRequestId;
use crate::outcome::Refusal;
use crate::retry::{retry, Attempt};
use crate::state::{CancelReason, Commit, StateError};
use crate::sync::lock;

impl Core {
    /// The earliest instant, on the boot clock, a pending payment runs past `payment_timeout`.
    pub(crate) fn next_payment_timeout(&self) -> Option<BootMillis> {
        let timeout = self.config().terminal.payment_timeout;
        self.with_store(|s| {
            let ages = lock(&self.ages);
            s.pending()
                .iter()
                .filter(|(_, p)| p.cancel_requested.is_none() && p.cancel_refused.is_none())
                .filter_map(|(id, _)| ages.since(id))
                .map(|since| boot_clock::after(since, timeout))
                .min()
        })
    }

    /// Marks, in one record, every payment pending longer than `payment_timeout` for a cancel
    /// with reason `timeout`, and returns their ids with the commit to await before the
    /// cancels leave. Called from the main loop, so the payment timer (which skips marked
    /// payments) moves on before the cancels are even sent.
    pub(crate) fn mark_timed_out(&self) -> (Vec<PaymentRequestId>, Option<Commit>) {
        let timeout = self.config().terminal.payment_timeout;
        let now = SystemTime::now();
        let boot_now = boot_clock::now();
        let marked = self.with_store_mut(|s| {
            let ages = lock(&self.ages);
            let expired = s.update(|state| {
                let expired: Vec<PaymentRequestId> = state
                    .payments
                    .iter()
                    .filter(|(id, p)| {
                        p.cancel_requested.is_none()
                            && p.cancel_refused.is_none()
                            && ages.since(id).is_some_and(|since| {
                                boot_clock::elapsed(since, boot_now) >= timeout
                            })
                    })
                    .map(|(id, _)| id.clone())
                    .collect();
                for id in &expired {
                    state.mark_cancel_requested(id, CancelReason::Timeout, now)?;
                }
                Ok(expired)
            })?;
            Ok::<_, StateError>((expired, s.commit()))
        });
        match marked {
            Ok((expired, commit)) => (expired, Some(commit)),
            Err(e) => {
                error!("cannot mark timed-out payments: {e}");
                (Vec::new(), None)
            }
        }
    }

    /// Sends the cancels [`Core::mark_timed_out`] marked, once the marks are durable. One that
    /// meets an unreachable API or a 5xx is sent again with backoff until the API answers it (or
    /// the agent stops: the shutdown then sends it); an answer, a refusal included, ends it.
    pub(crate) async fn cancel_timed_out(
        self: &Arc<Self>,
        expired: Vec<PaymentRequestId>,
        commit: Option<Commit>,
    ) {
        use futures_util::stream::{self, StreamExt};
        if let Some(commit) = commit {
            if let Err(e) = commit.durable().await {
                error!("cannot mark timed-out payments: {e}");
                return;
            }
        }
        let concurrency = self.config().shutdown.concurrency.max(1);
        stream::iter(expired)
            .for_each_concurrent(concurrency, |id| {
                let core = Arc::clone(self);
                async move {
                    info!(
                        payment_request_id = id.as_str(),
                        "payment {id} pending longer than payment_timeout; cancelling it"
                    );
                    // Ends once the API answered the cancel, or at the stop (the shutdown
                    // then sends it).
                    let _ = retry(
                        &mut core.outage_pacing(),
                        || async {
                            match core.cancel(&id, CancelReason::Timeout).await {
                                Err(Refusal::ApiUnavailable { .. }) if core.is_pending(&id) => {
                                    Attempt::Again(())
                                }
                                _ => Attempt::Done(()),
                            }
                        },
                        |_: &(), _| {},
                    )
                    .await;
                }
            })
            .await;
    }
}

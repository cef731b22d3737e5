//! The sale machine of docs/state.md and docs/serial-protocol.md §3 `sale`: a sale started
//! idempotently by merchant code and answered within `[terminal] sale_reply_deadline`, the
//! lookup of a sale whose outcome is unknown, and the settling of the sales abandoned at that
//! deadline and of the intents an earlier run left.

// Time and count arithmetic: docs/architecture.md, "Lint policy".
#![warn(clippy::arithmetic_side_effects)]

use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::Arc;
use std::time::SystemTime;

use super::core::{Core, InFlight, SaleOutcome};
use crate::boot_clock::{self, BootMillis};
use crate::ids::{MerchantCode, PaymentRequestId};
use crate::metrics::METRICS;
use crate::outcome::{AgentRejection, ConnectionState, Refusal};
use crate::paywall::{ApiError, Endpoint, SaleRequest};
use crate::retry::{retry, Attempt, Ended, Pacing, RetryPolicy};
use crate::serial::message::SaleOrder;
use crate::state::{CancelReason, PaymentOutcome, SaleRecord, SaleStage};
use crate::sync::lock;
use tokio::sync::watch;
use tracing::{error, info, warn};

/// A merchant code claimed by one task; released when dropped (also when the task is
/// cancelled). Its `outcome` reaches the tasks that wanted the same code meanwhile; a claim
/// released without one lets them claim the code again.
struct CodeClaim<'a> {
    core: &'a Core,
    code: MerchantCode,
    outcome: watch::Sender<Option<SaleOutcome>>,
}

impl Drop for CodeClaim<'_> {
    fn drop(&mut self) {
        lock(&self.core.sales_in_flight).remove(&self.code);
        self.core.sale_ended.notify_waiters();
    }
}

/// The longest one lookup of an abandoned sale's merchant code may take, all its pages
/// together; past it the lookup counts as failed and is tried again later.
const SETTLE_LOOKUP_DEADLINE: std::time::Duration = std::time::Duration::from_secs(120);

fn lookup_overran() -> ApiError {
    ApiError::Transport {
        endpoint: crate::paywall::Endpoint::ListPayments,
        kind: crate::paywall::TransportKind::Timeout,
        detail: format!(
            "the lookup took longer than {} s",
            SETTLE_LOOKUP_DEADLINE.as_secs()
        ),
        outcome_unknown: false,
    }
}

impl Core {
    // ----- sales (docs/serial-protocol.md §3 `sale`, docs/state.md) -----

    /// Starts a sale for the terminal, idempotently by merchant code: a code already held (in
    /// this run or an earlier one, or still in flight) gets the same answer and no second
    /// payment.
    ///
    /// The outcome comes within `[terminal] sale_reply_deadline` whatever the payment API does.
    /// A sale the API provably never received (the request was not written) is retried briefly,
    /// then refused and forgotten. One whose outcome is still unknown at the deadline is
    /// abandoned: marked in durable state before the refusal leaves, and settled in the
    /// background (cancelled with reason `abandoned` if it turns up).
    pub(crate) async fn sale(self: &Arc<Self>, order: SaleOrder) -> SaleOutcome {
        let deadline = boot_clock::after(
            boot_clock::now(),
            self.config().terminal.sale_reply_deadline,
        );
        let amount = order.amount_minor.get();
        if i64::try_from(amount).is_ok_and(|minor| minor > crate::paywall::amount::MAX_MINOR)
            || i64::try_from(amount).is_err()
        {
            return refused(Refusal::InvalidRequest(format!(
                "amount_minor must be at most {} (the largest amount the payment API takes \
                 exactly)",
                crate::paywall::amount::MAX_MINOR
            )));
        }
        let code = MerchantCode::from(order.merchant_unique_code);
        loop {
            match self.claim_code(code) {
                Ok(claim) => {
                    let outcome = self.start_sale(order, amount, deadline).await;
                    claim.outcome.send_replace(Some(outcome.clone()));
                    return outcome;
                }
                // The same code is being sold right now: share that sale's outcome. A claim
                // released without one (an earlier run's intent resolved meanwhile) is
                // claimed again, and the sale goes on from what the resolution left in state.
                Err(mut rx) => {
                    if let Ok(outcome) = rx.wait_for(Option::is_some).await {
                        if let Some(outcome) = outcome.clone() {
                            return outcome;
                        }
                    }
                }
            }
        }
    }

    /// Claims a merchant code for one task (a sale, or the resolution of an intent left by an
    /// earlier run), or gives the outcome of the task that holds it.
    fn claim_code(
        &self,
        code: MerchantCode,
    ) -> Result<CodeClaim<'_>, watch::Receiver<Option<SaleOutcome>>> {
        let mut in_flight = lock(&self.sales_in_flight);
        if let Some(rx) = in_flight.get(&code) {
            return Err(rx.clone());
        }
        let (outcome, rx) = watch::channel(None);
        in_flight.insert(code, rx);
        Ok(CodeClaim {
            core: self,
            code,
            outcome,
        })
    }

    async fn start_sale(
        self: &Arc<Self>,
        order: SaleOrder,
        amount: u64,
        deadline: BootMillis,
    ) -> SaleOutcome {
        let code = MerchantCode::from(order.merchant_unique_code);
        let key = code.to_string();
        let known: Option<SaleRecord> = self.with_store(|s| s.sale(&key).cloned());
        // Whether a sale request with this code may have reached the API: then the outcome is
        // unknown until a lookup settles it.
        let maybe_sent = AtomicBool::new(false);
        let since = match known {
            Some(sale) => match sale.stage {
                SaleStage::Abandoned { .. }
                | SaleStage::Final {
                    outcome: PaymentOutcome::Abandoned,
                    ..
                } => {
                    return refused(Refusal::InvalidRequest(format!(
                        "merchant_unique_code {code} was abandoned: the terminal was told that sale failed, and a payment made with it is cancelled; use a new code"
                    )));
                }
                SaleStage::Started { payment_request_id }
                | SaleStage::Final {
                    payment_request_id: Some(payment_request_id),
                    ..
                } => {
                    info!(merchant_unique_code = %code, payment_request_id = payment_request_id.as_str(), "repeated sale answered from state: code {code} is payment {payment_request_id}");
                    return SaleOutcome::Started { payment_request_id };
                }
                SaleStage::Final {
                    payment_request_id: None,
                    ..
                } => {
                    return refused(Refusal::ApiRejected {
                        message: format!("the payment API refused the sale with merchant_unique_code {code} earlier; use a new code"),
                        client_message: None,
                        error_code: None,
                    });
                }
                // An intent left by an earlier run: its sale may or may not have reached the API.
                SaleStage::Intent => {
                    if sale.amount_minor != amount {
                        return refused(Refusal::InvalidRequest(format!(
                            "merchant_unique_code {code} is already used for another amount"
                        )));
                    }
                    maybe_sent.store(true, Ordering::Relaxed);
                    sale.since.to_system_time()
                }
            },
            None => {
                if self.is_stopping() {
                    return refused(Refusal::Busy);
                }
                if let Some(rejection) = self.rejection() {
                    return refused(Refusal::AgentRejected(rejection));
                }
                if self.connection_state() != ConnectionState::Connected {
                    return refused(Refusal::NotConnected);
                }
                // The API asked the agent to wait: the terminal hears it now, not at the
                // reply deadline, and nothing is recorded or sent.
                if let Some(hold) = self.client().held() {
                    let held = ApiError::Held {
                        endpoint: Endpoint::Sale,
                        http_status: hold.http_status,
                        remaining: hold.remaining(),
                    };
                    return refused(Refusal::api_unavailable(format!(
                        "{held}; no payment was created"
                    )));
                }
                let now = SystemTime::now();
                let currency = order
                    .currency_id
                    .unwrap_or(self.config().terminal.currency_id);
                if let Err(e) = self
                    .mutate_store(|s| s.record_sale_intent(&key, amount, currency, now))
                    .await
                {
                    error!(merchant_unique_code = %code, "cannot record the intent of sale {code}: {e}");
                    return refused(Refusal::Internal(format!(
                        "the agent cannot write its state ({e}); nothing was created"
                    )));
                }
                now
            }
        };
        let attempt = self.send_sale(&order, since, &maybe_sent);
        match boot_clock::timeout_at(deadline, attempt).await {
            // Recorded past the deadline if need be (by two syncs at most): the terminal hears
            // the id the state keeps, never a failure for a payment that exists.
            Some(Settled::Created(id)) => self.sale_started(code, id).await,
            Some(Settled::Outcome(outcome)) => outcome,
            // The API refuses the agent while the sale's outcome is unknown: the terminal hears
            // the rejection now, and the sale is settled like any abandoned one once the API
            // accepts the agent again.
            Some(Settled::Rejected(rejection)) => {
                let refusal = Refusal::AgentRejected(rejection);
                self.abandon_sale(code, &refusal.to_string(), refusal.clone())
                    .await
            }
            Some(Settled::Stopping) if maybe_sent.load(Ordering::Relaxed) => {
                let why = "the agent is stopping";
                self.abandon_sale(code, why, abandoned_refusal(code, why))
                    .await
            }
            Some(Settled::Stopping) => {
                self.forget_intent(code).await;
                refused(Refusal::Busy)
            }
            None if maybe_sent.load(Ordering::Relaxed) => {
                let why = "no outcome within sale_reply_deadline";
                self.abandon_sale(code, why, abandoned_refusal(code, why))
                    .await
            }
            None => {
                self.forget_intent(code).await;
                warn!(merchant_unique_code = %code, "sale {code} not sent: the payment API could not be reached within sale_reply_deadline; nothing was created");
                refused(Refusal::api_unavailable(
                    "the payment API could not be reached within sale_reply_deadline; no payment was created",
                ))
            }
        }
    }

    /// Sends the sale and settles its outcome. A request that was provably not sent (no
    /// connection could be made) is tried again with the common retry policy; a request whose
    /// outcome is unknown is looked up by its code, and sent again only once the API shows it
    /// absent. `maybe_sent` says, whenever this is cut short, whether the API may hold the sale.
    async fn send_sale(
        self: &Arc<Self>,
        order: &SaleOrder,
        since: SystemTime,
        maybe_sent: &AtomicBool,
    ) -> Settled {
        let code = MerchantCode::from(order.merchant_unique_code);
        if maybe_sent.load(Ordering::Relaxed) {
            match self.resolve_sale(code, since).await {
                Resolution::Found(id) => return Settled::Created(id),
                Resolution::Absent => maybe_sent.store(false, Ordering::Relaxed),
                Resolution::Rejected(rejection) => return Settled::Rejected(rejection),
                Resolution::Unknown => return Settled::Stopping,
            }
        }
        let request = self.sale_request(order);
        // A send happens only while the API is known not to hold the code, so it is never a
        // blind repeat; the API also rejects a repeated MerchantUniqueCode.
        let unknown_sends_left = AtomicU32::new(2);
        let sent = retry(
            &mut Pacing {
                waits: RetryPolicy::API_CALL.backoff(),
                hold: || None,
                stop: self.stopping_signal(),
                sleep: |wait| Box::pin(boot_clock::sleep(wait)),
            },
            || self.send_sale_once(code, &request, since, maybe_sent, &unknown_sends_left),
            |error, wait| {
                warn!(merchant_unique_code = %code, retry_in_ms = wait.as_millis() as u64, "sale {code} not sent: {error}; trying again");
            },
        )
        .await;
        match sent {
            Ok(settled) => settled,
            Err(Ended::Stopped) => Settled::Stopping,
            Err(Ended::GaveUp(error)) => {
                warn!(merchant_unique_code = %code, "sale {code} not sent: {error}; nothing was created");
                self.forget_intent(code).await;
                Settled::Outcome(refused(Refusal::api_unavailable(format!(
                    "{error}; no payment was created"
                ))))
            }
        }
    }

    /// One send of the sale, for [`Core::send_sale`]: done with its outcome; again when the
    /// request was provably not sent and may be sent again, given up when it may not; at once
    /// when a lookup showed the API holds no payment from a send whose outcome was unknown.
    async fn send_sale_once(
        &self,
        code: MerchantCode,
        request: &SaleRequest,
        since: SystemTime,
        maybe_sent: &AtomicBool,
        unknown_sends_left: &AtomicU32,
    ) -> Attempt<Settled, ApiError> {
        let key = code.to_string();
        if self.is_stopping() {
            return Attempt::Done(Settled::Stopping);
        }
        maybe_sent.store(true, Ordering::Relaxed);
        let error = match self.client().sale(request).await {
            Ok(accepted) => {
                return Attempt::Done(Settled::Created(accepted.payment_request_id.into()))
            }
            Err(error) => error,
        };
        if let Some(rejection) = error.agent_rejection() {
            // Refused before it was carried out (the keys or the path): nothing exists.
            maybe_sent.store(false, Ordering::Relaxed);
            self.note_rejection(rejection.clone());
            self.forget_intent(code).await;
            return Attempt::Done(Settled::Outcome(refused(Refusal::AgentRejected(rejection))));
        }
        if error.is_rejection() && !is_duplicate_code(&error) {
            maybe_sent.store(false, Ordering::Relaxed);
            warn!(merchant_unique_code = %code, "sale {code} refused by the payment API: {error}");
            if let Err(e) = self
                .mutate_store(|s| s.finish_sale(&key, PaymentOutcome::Rejected, SystemTime::now()))
                .await
            {
                error!(merchant_unique_code = %code, "cannot record the refused sale {code}: {e}");
            }
            return Attempt::Done(Settled::Outcome(refused(Refusal::from_api_error(&error))));
        }
        if error.was_not_sent() {
            maybe_sent.store(false, Ordering::Relaxed);
            return if error.is_retryable() {
                Attempt::Again(error)
            } else {
                Attempt::GiveUp(error)
            };
        }
        let left = unknown_sends_left.load(Ordering::Relaxed).saturating_sub(1);
        unknown_sends_left.store(left, Ordering::Relaxed);
        warn!(merchant_unique_code = %code, "outcome of sale {code} unknown ({error}); looking the payment up");
        match self.resolve_sale(code, since).await {
            Resolution::Found(id) => Attempt::Done(Settled::Created(id)),
            Resolution::Absent if left > 0 => {
                maybe_sent.store(false, Ordering::Relaxed);
                Attempt::Now
            }
            Resolution::Absent => {
                self.forget_intent(code).await;
                Attempt::Done(Settled::Outcome(refused(Refusal::api_unavailable(
                    format!("{error}; the payment API holds no payment from it"),
                ))))
            }
            // The API refuses the agent itself: the outcome stays unknown.
            Resolution::Rejected(rejection) => Attempt::Done(Settled::Rejected(rejection)),
            Resolution::Unknown => Attempt::Done(Settled::Stopping),
        }
    }

    /// The sale's reply is due and its outcome unknown: the sale is marked abandoned in durable
    /// state before the terminal hears `refusal`, and settled in the background.
    async fn abandon_sale(
        self: &Arc<Self>,
        code: MerchantCode,
        why: &str,
        refusal: Refusal,
    ) -> SaleOutcome {
        let key = code.to_string();
        match self
            .mutate_store(|s| s.update(|state| state.abandon_sale(&key, SystemTime::now())))
            .await
        {
            Ok(()) => {
                METRICS.sales_abandoned.inc();
                warn!(merchant_unique_code = %code, "sale {code} abandoned: {why}; the terminal is told it failed, and a payment that turns up is cancelled");
                let core = Arc::clone(self);
                tokio::spawn(async move { core.settle_abandoned(code).await });
            }
            // The intent stays: the next start resolves it, and a payment found then stays
            // pending until payment_timeout cancels it.
            Err(e) => {
                error!(merchant_unique_code = %code, "cannot record the abandoned sale {code}: {e}")
            }
        }
        refused(refusal)
    }

    /// Settles an abandoned sale, retried with the common retry policy until done or the agent
    /// stops (then at the next start): a payment that turns up is tracked and cancelled with
    /// reason `abandoned` (the terminal hears `payment_cancelled`); a code the payments list
    /// shows absent ends final, still refused for a new sale.
    pub(crate) async fn settle_abandoned(self: &Arc<Self>, code: MerchantCode) {
        let key = code.to_string();
        let Some(_settling) = InFlight::enter(&self.settling, code) else {
            return;
        };
        // Ends settled, given up for this run, or at the stop: the sale stays abandoned in state
        // until it is settled.
        let _ = retry(
            &mut self.outage_pacing(),
            || self.settle_step(code, &key),
            |_: &(), _| {},
        )
        .await;
    }

    /// One step of [`Core::settle_abandoned`]: done once the sale is no longer abandoned or
    /// its cancel was answered; at once when the lookup found its payment (to cancel it next);
    /// again after a transport failure.
    async fn settle_step(self: &Arc<Self>, code: MerchantCode, key: &str) -> Attempt<(), ()> {
        let Some(sale) = self.with_store(|s| s.sale(key).cloned()) else {
            return Attempt::Done(());
        };
        if !matches!(sale.stage, SaleStage::Abandoned { .. }) {
            return Attempt::Done(());
        }
        let tracked: Option<PaymentRequestId> = self.with_store(|s| {
            s.pending()
                .iter()
                .find(|(_, p)| p.merchant_unique_code.as_deref() == Some(key))
                .map(|(id, _)| id.clone())
        });
        match tracked {
            // A refusal is final for this loop (the payment stays pending, and
            // payment_timeout still applies); a transport failure is tried again.
            Some(id) => match self.cancel(&id, CancelReason::Abandoned).await {
                Err(Refusal::ApiUnavailable { .. } | Refusal::Internal(_)) => Attempt::Again(()),
                _ => Attempt::Done(()),
            },
            None => match boot_clock::timeout(
                SETTLE_LOOKUP_DEADLINE,
                self.client()
                    .find_payment_by_merchant_code(code.uuid(), sale.since.to_system_time()),
            )
            .await
            .unwrap_or_else(|| Err(lookup_overran()))
            {
                Ok(Some(found)) => {
                    let id = PaymentRequestId::from(found.payment_request_id);
                    warn!(merchant_unique_code = %code, payment_request_id = id.as_str(), "abandoned sale {code} found at the payment API as payment {id}: cancelling it");
                    if let Err(e) = self
                        .mutate_store(|s| {
                            s.update(|state| {
                                state.abandoned_sale_found(key, &id, SystemTime::now())
                            })
                        })
                        .await
                    {
                        error!(merchant_unique_code = %code, payment_request_id = id.as_str(), "cannot record payment {id} of the abandoned sale {code}: {e}");
                    }
                    Attempt::Now
                }
                Ok(None) => {
                    info!(merchant_unique_code = %code, "abandoned sale {code} settled: the payment API holds no payment with its code");
                    if let Err(e) = self
                        .mutate_store(|s| {
                            s.finish_sale(key, PaymentOutcome::Abandoned, SystemTime::now())
                        })
                        .await
                    {
                        error!(merchant_unique_code = %code, "cannot record the settled sale {code}: {e}");
                    }
                    Attempt::Done(())
                }
                Err(e) => {
                    warn!(merchant_unique_code = %code, "cannot settle the abandoned sale {code} yet: {e}");
                    Attempt::Again(())
                }
            },
        }
    }

    /// At start and after a reconnect: every abandoned sale is settled in the background.
    pub(crate) fn settle_all_abandoned(self: &Arc<Self>) {
        let codes: Vec<MerchantCode> = self.with_store(|s| {
            s.state()
                .abandoned_sales()
                .filter_map(|(code, _)| MerchantCode::parse(code))
                .collect()
        });
        for code in codes {
            let core = Arc::clone(self);
            tokio::spawn(async move { core.settle_abandoned(code).await });
        }
    }

    fn sale_request(&self, order: &SaleOrder) -> SaleRequest {
        SaleRequest {
            terminal: self.config().terminal_ref.clone(),
            merchant_unique_code: order.merchant_unique_code,
            amount_minor: i64::try_from(order.amount_minor.get()).unwrap_or(i64::MAX),
            currency_id: order
                .currency_id
                .unwrap_or(self.config().terminal.currency_id),
            display_code: order.display_code.clone(),
            callback_address: self.config().terminal.callback_url.clone(),
        }
    }

    async fn sale_started(
        self: &Arc<Self>,
        code: MerchantCode,
        payment_request_id: PaymentRequestId,
    ) -> SaleOutcome {
        let key = code.to_string();
        match self
            .mutate_store(|s| s.record_sale_started(&key, &payment_request_id, SystemTime::now()))
            .await
        {
            Ok(()) => {
                let (amount_minor, currency_id) = self
                    .with_store(|s| {
                        s.sale(&key)
                            .map(|sale| (sale.amount_minor, sale.currency_id))
                    })
                    .unwrap_or_default();
                info!(
                    merchant_unique_code = %code,
                    payment_request_id = payment_request_id.as_str(),
                    amount_minor,
                    currency_id,
                    "sale started: payment {payment_request_id}, {amount_minor} minor units of currency {currency_id}, code {code}"
                );
                SaleOutcome::Started { payment_request_id }
            }
            Err(e) => {
                // The payment exists but cannot be made durable: the terminal must not run a
                // card dialogue for it. Cancel it and say so.
                error!(merchant_unique_code = %code, payment_request_id = payment_request_id.as_str(), "cannot record the started sale {code} (payment {payment_request_id}): {e}; cancelling it");
                let core = Arc::clone(self);
                let Some(id) = payment_request_id.uuid() else {
                    return refused(Refusal::Internal(format!(
                        "the agent cannot write its state ({e})"
                    )));
                };
                tokio::spawn(async move {
                    if let Err(e) = core.client().cancel(id).await {
                        error!(payment_request_id = %id, "cancel of the unrecorded payment {id} failed: {e}");
                    }
                });
                refused(Refusal::Internal(format!(
                    "the agent cannot write its state ({e}); payment {payment_request_id} is being cancelled"
                )))
            }
        }
    }

    async fn forget_intent(&self, code: MerchantCode) {
        if let Err(e) = self
            .mutate_store(|s| s.forget_sale_intent(&code.to_string()))
            .await
        {
            error!(merchant_unique_code = %code, "cannot forget the intent of sale {code}: {e}");
        }
    }

    /// Establishes whether the API holds a payment with this merchant code, through the
    /// payments list, retried with the common [`RetryPolicy`] until it answers or the agent stops.
    async fn resolve_sale(&self, code: MerchantCode, since: SystemTime) -> Resolution {
        let looked_up = retry(
            &mut self.outage_pacing(),
            || async {
                match self
                    .client()
                    .find_payment_by_merchant_code(code.uuid(), since)
                    .await
                {
                    Ok(Some(found)) => {
                        Attempt::Done(Resolution::Found(found.payment_request_id.into()))
                    }
                    Ok(None) => Attempt::Done(Resolution::Absent),
                    Err(e) => {
                        if let Some(rejection) = e.agent_rejection() {
                            self.note_rejection(rejection.clone());
                            return Attempt::Done(Resolution::Rejected(rejection));
                        }
                        warn!(merchant_unique_code = %code, "cannot look sale {code} up yet: {e}");
                        Attempt::Again(())
                    }
                }
            },
            |_, _| {},
        )
        .await;
        looked_up.unwrap_or(Resolution::Unknown)
    }

    /// Whenever the connection comes up (at start, by the background reconnects, and by the
    /// operator's `reconnect`): every sale intent left unresolved is resolved (docs/state.md).
    pub(crate) async fn resolve_leftover_intents(self: &Arc<Self>) {
        let intents: Vec<(String, SystemTime)> = self.with_store(|s| {
            s.state()
                .sales
                .iter()
                .filter(|(_, sale)| sale.stage == SaleStage::Intent)
                .map(|(code, sale)| (code.clone(), sale.since.to_system_time()))
                .collect()
        });
        for (key, since) in intents {
            let Some(code) = MerchantCode::parse(&key) else {
                continue;
            };
            // Claimed, so that a sale with the same code waits for the resolution instead of
            // sending its own request while this one may forget the intent.
            let Ok(_claim) = self.claim_code(code) else {
                continue;
            };
            let still_intent = self.with_store(|s| {
                s.sale(&key)
                    .is_some_and(|sale| sale.stage == SaleStage::Intent)
            });
            if !still_intent {
                continue;
            }
            match self.resolve_sale(code, since).await {
                Resolution::Found(id) => {
                    info!(merchant_unique_code = %code, payment_request_id = id.as_str(), "recovered sale {code}: the API created payment {id}");
                    let _ = self.sale_started(code, id).await;
                }
                Resolution::Absent => {
                    info!(merchant_unique_code = %code, "sale {code}, an intent of an earlier run, was never created; forgetting it");
                    self.forget_intent(code).await;
                }
                Resolution::Rejected(_) | Resolution::Unknown => return,
            }
        }
    }
}

fn refused(refusal: Refusal) -> SaleOutcome {
    SaleOutcome::Refused(refusal)
}

/// How [`Core::send_sale`] ended: with the sale's outcome, cut short by the shutdown, or with
/// the outcome unknown because the API refuses the agent itself.
enum Settled {
    /// The API holds the sale's payment: its id is recorded, whatever the deadline.
    Created(PaymentRequestId),
    Outcome(SaleOutcome),
    Stopping,
    Rejected(AgentRejection),
}

/// What the terminal hears for a sale abandoned at its deadline.
fn abandoned_refusal(code: MerchantCode, why: &str) -> Refusal {
    Refusal::api_unavailable(format!(
        "{why}; the sale is abandoned (a payment made with merchant_unique_code {code} is cancelled); use a new code"
    ))
}

enum Resolution {
    Found(PaymentRequestId),
    Absent,
    /// The API refuses the agent (keys, base URL): unknown until it accepts it again.
    Rejected(AgentRejection),
    Unknown,
}

/// The API's code for "MerchantUniqueCode already exists": the payment is there.
fn is_duplicate_code(error: &ApiError) -> bool {
    matches!(
        error,
        ApiError::Rejected {
            error_code: Some(4),
            ..
        }
    )
}

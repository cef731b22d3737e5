//! The payment lifecycle of docs/state.md: sales, cancels, results and the
//! connection, each step made durable before its side effect. The daemon's main loop
//! (`super::daemon`) feeds it terminal requests, operator commands and timers; every
//! operation here runs in its own task and meets the others only through the state store.

// Time and count arithmetic: docs/architecture.md, "Lint policy".
#![warn(clippy::arithmetic_side_effects)]

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, SystemTime};

use tokio::sync::{watch, Notify};
use tokio_util::task::TaskTracker;
use tracing::{error, info, warn};
use uuid::Uuid;

use super::ages::Ages;
use crate::boot_clock::{self, BootMillis};
use crate::config::Config;
use crate::metrics::{CancelOutcome, METRICS};
use crate::outcome::{AgentRejection, ConnectionState, Refusal};
use crate::paywall::{ApiError, Endpoint, PaywallClient, SaleRequest};
use crate::retry::RetryPolicy;
use crate::serial::message::{
    AgentReadiness, AgentRequest, Reply, SaleOrder, TerminalIdentity, PROTOCOL_VERSION,
};
use crate::serial::LinkHandle;
use crate::state::{
    CancelReason, Commit, PaymentOutcome, PaymentSource, PendingPayment, SaleRecord, SaleStage,
    StateError, StateStore, StorageHealth,
};
use crate::sync::{lock, read, write};

/// A merchant code claimed by one task; released when dropped (also when the task is
/// cancelled). Its `outcome` reaches the tasks that wanted the same code meanwhile; a claim
/// released without one lets them claim the code again.
struct CodeClaim<'a> {
    core: &'a Core,
    code: Uuid,
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

/// An id marked in one of the core's in-flight sets (`settling`, `cancels_in_flight`) for as long
/// as this guard lives: removed when it is dropped, also when the task holding it is cancelled
/// at an `.await`, so that no id stays marked "under way" for ever.
struct InFlight<'a, T: Eq + std::hash::Hash> {
    set: &'a Mutex<HashSet<T>>,
    id: Option<T>,
}

impl<'a, T: Eq + std::hash::Hash + Clone> InFlight<'a, T> {
    /// Marks `id`, or `None` when it is marked already.
    fn enter(set: &'a Mutex<HashSet<T>>, id: T) -> Option<Self> {
        // The guard is built only once the set's lock is released: dropping one inside it
        // would lock it again.
        let marked = lock(set).insert(id.clone());
        marked.then(|| Self { set, id: Some(id) })
    }
}

impl<T: Eq + std::hash::Hash> Drop for InFlight<'_, T> {
    fn drop(&mut self) {
        if let Some(id) = self.id.take() {
            lock(self.set).remove(&id);
        }
    }
}

/// What a sale ended in, shared with every request that waits on the same merchant code. A
/// sale always ends in one of these within `[terminal] sale_reply_deadline`.
#[derive(Debug, Clone)]
pub(crate) enum SaleOutcome {
    Started { payment_request_id: String },
    Refused(Refusal),
}

/// The agent's shared core.
pub(crate) struct Core {
    /// Replaced as a whole by a reload (`SIGHUP`); readers take the one current at the time.
    config: RwLock<Arc<Config>>,
    client: RwLock<PaywallClient>,
    store: Mutex<StateStore>,
    /// How long each pending payment has been pending, on the boot clock; follows `store`.
    ages: Mutex<Ages>,
    link: LinkHandle,
    connection: watch::Sender<ConnectionState>,
    /// Why the API refuses the agent, while `connection` is `Rejected`.
    rejection: Mutex<Option<AgentRejection>>,
    stopping: watch::Sender<bool>,
    sales_in_flight: Mutex<HashMap<Uuid, watch::Receiver<Option<SaleOutcome>>>>,
    /// Woken whenever a sale leaves `sales_in_flight`.
    sale_ended: Notify,
    /// Abandoned sales a task is settling right now.
    settling: Mutex<HashSet<Uuid>>,
    /// Why the connection could not be brought up, while it is not (shown by `status`).
    connection_problem: Mutex<Option<String>>,
    cancels_in_flight: Mutex<HashSet<String>>,
    /// Who the terminal on the link said it is, in its answer to the latest `agent_state`
    /// `ready` (docs/serial-protocol.md §3 "Versions"); `None` until it answered.
    terminal: Arc<Mutex<Option<TerminalIdentity>>>,
    /// Notifications on their way to the terminal; the shutdown waits for them before the exit.
    notifications: TaskTracker,
    /// Woken whenever something the main loop shows or times (STATUS=, payment timeouts) changed.
    pub changed: Notify,
}

impl Core {
    pub(crate) fn new(
        config: Arc<Config>,
        client: PaywallClient,
        store: StateStore,
        link: LinkHandle,
    ) -> Arc<Self> {
        let ages = Ages::load(
            store.directory(),
            store.pending(),
            config.terminal.payment_timeout,
        );
        ages.save();
        Arc::new(Self {
            config: RwLock::new(config),
            client: RwLock::new(client),
            store: Mutex::new(store),
            ages: Mutex::new(ages),
            link,
            connection: watch::channel(ConnectionState::Connecting).0,
            rejection: Mutex::new(None),
            stopping: watch::channel(false).0,
            sales_in_flight: Mutex::new(HashMap::new()),
            sale_ended: Notify::new(),
            settling: Mutex::new(HashSet::new()),
            connection_problem: Mutex::new(None),
            cancels_in_flight: Mutex::new(HashSet::new()),
            terminal: Arc::new(Mutex::new(None)),
            notifications: TaskTracker::new(),
            changed: Notify::new(),
        })
    }

    pub(crate) fn config(&self) -> Arc<Config> {
        Arc::clone(&read(&self.config))
    }

    /// The payment API client with the current keys (a clone shares its connection pool).
    pub(crate) fn client(&self) -> PaywallClient {
        read(&self.client).clone()
    }

    /// A reload: what follows uses `config` and `client`; calls under way finish with the ones
    /// they started with. Pending payments, sales, the connection and a wait the API asked for
    /// (`Retry-After`) are untouched.
    pub(crate) fn replace_config(&self, config: Arc<Config>, client: PaywallClient) {
        let client = client.sharing_hold_of(&self.client());
        *write(&self.config) = config;
        *write(&self.client) = client;
        self.changed.notify_one();
    }

    /// The state directory's health as the state writer last saw it.
    pub(crate) fn storage_health(&self) -> StorageHealth {
        self.with_store(|s| s.storage_health().borrow().clone())
    }

    pub(crate) fn link(&self) -> &LinkHandle {
        &self.link
    }

    /// Reads the state store. The lock is never held across an await.
    pub(crate) fn with_store<T>(&self, f: impl FnOnce(&StateStore) -> T) -> T {
        f(&lock(&self.store))
    }

    fn with_store_mut<T>(&self, f: impl FnOnce(&mut StateStore) -> T) -> T {
        let at = boot_clock::now();
        let mut store = lock(&self.store);
        let result = f(&mut store);
        self.follow_pending(&store, at);
        drop(store);
        self.changed.notify_one();
        result
    }

    /// After a change of the state: a payment that became pending in it did so at `at` (the
    /// boot clock read before the change; its wall-clock `since` was read before that).
    #[inline(never)]
    fn follow_pending(&self, store: &StateStore, at: BootMillis) {
        let mut ages = lock(&self.ages);
        if ages.follow(store.pending(), at) {
            ages.save();
        }
    }

    /// Changes the state store, wakes the main loop (whose status line and payment timer
    /// depend on it) and returns once the change is durable: the caller's side effect comes
    /// after. The store is not held while the state writer syncs; changes made meanwhile by
    /// other operations are committed with the same sync or the next one.
    pub(crate) async fn mutate_store<T>(
        &self,
        f: impl FnOnce(&mut StateStore) -> Result<T, StateError>,
    ) -> Result<T, StateError> {
        let at = boot_clock::now();
        let (value, commit) = {
            let mut store = lock(&self.store);
            let value = f(&mut store);
            self.follow_pending(&store, at);
            (value, store.commit())
        };
        self.changed.notify_one();
        let value = value?;
        commit.durable().await?;
        Ok(value)
    }

    /// Changes the state store without waiting for durability: only for changes whose loss
    /// a restart repairs by itself (see [`StateStore::defer`]).
    fn defer_store(&self, f: impl FnOnce(&mut StateStore)) {
        let at = boot_clock::now();
        let mut store = lock(&self.store);
        f(&mut store);
        self.follow_pending(&store, at);
        drop(store);
        self.changed.notify_one();
    }

    pub(crate) fn connection_state(&self) -> ConnectionState {
        *self.connection.borrow()
    }

    pub(crate) fn set_connection_state(&self, state: ConnectionState) {
        self.connection.send_replace(state);
        self.changed.notify_one();
    }

    pub(crate) fn connection_signal(&self) -> watch::Receiver<ConnectionState> {
        self.connection.subscribe()
    }

    /// The API refuses the agent (HTTP 401/403, or 404 on a documented path): the connection
    /// shows `rejected` until a reconnect succeeds. Logged once per change, not per attempt.
    pub(crate) fn note_rejection(&self, rejection: AgentRejection) {
        let changed = {
            let mut current = lock(&self.rejection);
            let changed = current.as_ref() != Some(&rejection);
            *current = Some(rejection.clone());
            changed
        };
        if changed {
            error!(
                http_status = rejection.http_status,
                "payment API connection rejected: {rejection}; trying again at most once a minute"
            );
        }
        self.set_connection_state(ConnectionState::Rejected);
    }

    /// The connection is up again: forget the rejection, if there was one.
    pub(crate) fn clear_rejection(&self) {
        if let Some(old) = lock(&self.rejection).take() {
            info!(
                http_status = old.http_status,
                "the payment API accepts the agent again (it answered HTTP {} before)",
                old.http_status
            );
        }
    }

    /// The refusal for a request the agent cannot make while the API rejects it.
    pub(crate) fn rejection(&self) -> Option<AgentRejection> {
        if self.connection_state() != ConnectionState::Rejected {
            return None;
        }
        lock(&self.rejection).clone()
    }

    /// The refusal for a failed call; an agent-level rejection is also noted (see
    /// [`Core::note_rejection`]).
    pub(crate) fn refusal(&self, error: &ApiError) -> Refusal {
        let refusal = Refusal::from_api_error(error);
        if let Refusal::AgentRejected(rejection) = &refusal {
            self.note_rejection(rejection.clone());
        }
        refusal
    }

    /// Why the connection could not be brought up, while it is not.
    pub(crate) fn connection_problem(&self) -> Option<String> {
        lock(&self.connection_problem).clone()
    }

    pub(crate) fn set_connection_problem(&self, problem: Option<String>) {
        *lock(&self.connection_problem) = problem;
    }

    /// What is left of the wait the payment API asked for with a `Retry-After`, while it
    /// lasts: every retry loop waits at least this long (docs/payment-api.md, "Retry-After").
    pub(crate) fn api_hold(&self) -> Option<Duration> {
        self.client().held().map(|hold| hold.remaining())
    }

    pub(crate) fn connection_id(&self) -> Option<String> {
        self.with_store(|s| s.connection_id().map(str::to_owned))
    }

    pub(crate) fn is_stopping(&self) -> bool {
        *self.stopping.borrow()
    }

    pub(crate) fn begin_stopping(&self) {
        self.stopping.send_replace(true);
        self.changed.notify_one();
    }

    /// Waits until no sale is in flight. Once the agent is stopping each one ends soon (the
    /// terminal hears its outcome, or `busy`, or nothing while its outcome is unknown and the
    /// intent stays in state), and within `[terminal] sale_reply_deadline` in any case.
    pub(crate) async fn sales_ended(&self) {
        loop {
            let ended = self.sale_ended.notified();
            tokio::pin!(ended);
            ended.as_mut().enable();
            if lock(&self.sales_in_flight).is_empty() {
                return;
            }
            ended.await;
        }
    }

    pub(crate) fn stopping_signal(&self) -> watch::Receiver<bool> {
        self.stopping.subscribe()
    }

    pub(crate) fn pending_ids(&self) -> Vec<String> {
        self.with_store(|s| s.pending().keys().cloned().collect())
    }

    pub(crate) fn pending_count(&self) -> usize {
        self.with_store(|s| s.pending().len())
    }

    fn is_pending(&self, payment_request_id: &str) -> bool {
        self.with_store(|s| s.payment(payment_request_id).is_some())
    }

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
        let code = order.merchant_unique_code;
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
        code: Uuid,
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
        let code = order.merchant_unique_code;
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
                    info!(merchant_unique_code = %code, payment_request_id, "repeated sale answered from state: code {code} is payment {payment_request_id}");
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
                    return refused(Refusal::ApiUnavailable(format!(
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
                refused(Refusal::ApiUnavailable(
                    "the payment API could not be reached within sale_reply_deadline; no payment was created".into(),
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
        let code = order.merchant_unique_code;
        let key = code.to_string();
        if maybe_sent.load(Ordering::Relaxed) {
            match self.resolve_sale(code, since).await {
                Resolution::Found(id) => return Settled::Created(id),
                Resolution::Absent => maybe_sent.store(false, Ordering::Relaxed),
                Resolution::Rejected(rejection) => return Settled::Rejected(rejection),
                Resolution::Unknown => return Settled::Stopping,
            }
        }
        let request = self.sale_request(order);
        let mut not_sent_waits = RetryPolicy::API_CALL.backoff();
        let mut stopping = self.stopping_signal();
        // A send happens only while the API is known not to hold the code, so it is never a
        // blind repeat; the API also rejects a repeated MerchantUniqueCode.
        let mut unknown_sends_left = 2u32;
        loop {
            if self.is_stopping() {
                return Settled::Stopping;
            }
            maybe_sent.store(true, Ordering::Relaxed);
            let error = match self.client().sale(&request).await {
                Ok(accepted) => return Settled::Created(accepted.payment_request_id.to_string()),
                Err(error) => error,
            };
            if let Some(rejection) = error.agent_rejection() {
                // Refused before it was carried out (the keys or the path): nothing exists.
                maybe_sent.store(false, Ordering::Relaxed);
                self.note_rejection(rejection.clone());
                self.forget_intent(code).await;
                return Settled::Outcome(refused(Refusal::AgentRejected(rejection)));
            }
            if error.is_rejection() && !is_duplicate_code(&error) {
                maybe_sent.store(false, Ordering::Relaxed);
                warn!(merchant_unique_code = %code, "sale {code} refused by the payment API: {error}");
                if let Err(e) = self
                    .mutate_store(|s| {
                        s.finish_sale(&key, PaymentOutcome::Rejected, SystemTime::now())
                    })
                    .await
                {
                    error!(merchant_unique_code = %code, "cannot record the refused sale {code}: {e}");
                }
                return Settled::Outcome(refused(Refusal::from_api_error(&error)));
            }
            if error.was_not_sent() {
                maybe_sent.store(false, Ordering::Relaxed);
                let Some(wait) = not_sent_waits.next().filter(|_| error.is_retryable()) else {
                    warn!(merchant_unique_code = %code, "sale {code} not sent: {error}; nothing was created");
                    self.forget_intent(code).await;
                    return Settled::Outcome(refused(Refusal::ApiUnavailable(format!(
                        "{error}; no payment was created"
                    ))));
                };
                warn!(merchant_unique_code = %code, retry_in_ms = wait.as_millis() as u64, "sale {code} not sent: {error}; trying again");
                tokio::select! {
                    _ = boot_clock::sleep(wait) => {}
                    _ = stopping.wait_for(|s| *s) => return Settled::Stopping,
                }
                continue;
            }
            unknown_sends_left = unknown_sends_left.saturating_sub(1);
            warn!(merchant_unique_code = %code, "outcome of sale {code} unknown ({error}); looking the payment up");
            match self.resolve_sale(code, since).await {
                Resolution::Found(id) => return Settled::Created(id),
                Resolution::Absent if unknown_sends_left > 0 => {
                    maybe_sent.store(false, Ordering::Relaxed);
                }
                Resolution::Absent => {
                    self.forget_intent(code).await;
                    return Settled::Outcome(refused(Refusal::ApiUnavailable(format!(
                        "{error}; the payment API holds no payment from it"
                    ))));
                }
                // The API refuses the agent itself: the outcome stays unknown.
                Resolution::Rejected(rejection) => return Settled::Rejected(rejection),
                Resolution::Unknown => return Settled::Stopping,
            }
        }
    }

    /// The sale's reply is due and its outcome unknown: the sale is marked abandoned in durable
    /// state before the terminal hears `refusal`, and settled in the background.
    async fn abandon_sale(
        self: &Arc<Self>,
        code: Uuid,
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
    pub(crate) async fn settle_abandoned(self: &Arc<Self>, code: Uuid) {
        let key = code.to_string();
        let mut waits = RetryPolicy::API_OUTAGE.backoff();
        let mut stopping = self.stopping_signal();
        let Some(_settling) = InFlight::enter(&self.settling, code) else {
            return;
        };
        while let Some(sale) = self.with_store(|s| s.sale(&key).cloned()) {
            if !matches!(sale.stage, SaleStage::Abandoned { .. }) {
                break;
            }
            let tracked: Option<String> = self.with_store(|s| {
                s.pending()
                    .iter()
                    .find(|(_, p)| p.merchant_unique_code.as_deref() == Some(key.as_str()))
                    .map(|(id, _)| id.clone())
            });
            let done = match tracked {
                // A refusal is final for this loop (the payment stays pending, and
                // payment_timeout still applies); a transport failure is tried again.
                Some(id) => !matches!(
                    self.cancel(&id, CancelReason::Abandoned).await,
                    Err(Refusal::ApiUnavailable(_) | Refusal::Internal(_))
                ),
                None => match boot_clock::timeout(
                    SETTLE_LOOKUP_DEADLINE,
                    self.client()
                        .find_payment_by_merchant_code(code, sale.since.to_system_time()),
                )
                .await
                .unwrap_or_else(|| Err(lookup_overran()))
                {
                    Ok(Some(found)) => {
                        let id = found.payment_request_id.to_string();
                        warn!(merchant_unique_code = %code, payment_request_id = id, "abandoned sale {code} found at the payment API as payment {id}: cancelling it");
                        if let Err(e) = self
                            .mutate_store(|s| {
                                s.update(|state| {
                                    state.abandoned_sale_found(&key, &id, SystemTime::now())
                                })
                            })
                            .await
                        {
                            error!(merchant_unique_code = %code, payment_request_id = id, "cannot record payment {id} of the abandoned sale {code}: {e}");
                        }
                        continue;
                    }
                    Ok(None) => {
                        info!(merchant_unique_code = %code, "abandoned sale {code} settled: the payment API holds no payment with its code");
                        if let Err(e) = self
                            .mutate_store(|s| {
                                s.finish_sale(&key, PaymentOutcome::Abandoned, SystemTime::now())
                            })
                            .await
                        {
                            error!(merchant_unique_code = %code, "cannot record the settled sale {code}: {e}");
                        }
                        true
                    }
                    Err(e) => {
                        warn!(merchant_unique_code = %code, "cannot settle the abandoned sale {code} yet: {e}");
                        false
                    }
                },
            };
            if done || self.is_stopping() {
                break;
            }
            let delay = waits
                .next_honouring(self.api_hold())
                .unwrap_or(RetryPolicy::API_OUTAGE.max_delay);
            tokio::select! {
                _ = boot_clock::sleep(delay) => {}
                _ = stopping.wait_for(|s| *s) => break,
            }
        }
    }

    /// At start and after a reconnect: every abandoned sale is settled in the background.
    pub(crate) fn settle_all_abandoned(self: &Arc<Self>) {
        let codes: Vec<Uuid> = self.with_store(|s| {
            s.state()
                .abandoned_sales()
                .filter_map(|(code, _)| Uuid::parse_str(code).ok())
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

    async fn sale_started(self: &Arc<Self>, code: Uuid, payment_request_id: String) -> SaleOutcome {
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
                    payment_request_id,
                    amount_minor,
                    currency_id,
                    "sale started: payment {payment_request_id}, {amount_minor} minor units of currency {currency_id}, code {code}"
                );
                SaleOutcome::Started { payment_request_id }
            }
            Err(e) => {
                // The payment exists but cannot be made durable: the terminal must not run a
                // card dialogue for it. Cancel it and say so.
                error!(merchant_unique_code = %code, payment_request_id, "cannot record the started sale {code} (payment {payment_request_id}): {e}; cancelling it");
                let core = Arc::clone(self);
                let Ok(id) = Uuid::parse_str(&payment_request_id) else {
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

    async fn forget_intent(&self, code: Uuid) {
        if let Err(e) = self
            .mutate_store(|s| s.forget_sale_intent(&code.to_string()))
            .await
        {
            error!(merchant_unique_code = %code, "cannot forget the intent of sale {code}: {e}");
        }
    }

    /// Establishes whether the API holds a payment with this merchant code, through the
    /// payments list, retried with the common [`RetryPolicy`] until it answers or the agent stops.
    async fn resolve_sale(&self, code: Uuid, since: SystemTime) -> Resolution {
        let mut waits = RetryPolicy::API_OUTAGE.backoff();
        let mut stopping = self.stopping_signal();
        loop {
            match self
                .client()
                .find_payment_by_merchant_code(code, since)
                .await
            {
                Ok(Some(found)) => return Resolution::Found(found.payment_request_id.to_string()),
                Ok(None) => return Resolution::Absent,
                Err(e) => {
                    if let Some(rejection) = e.agent_rejection() {
                        self.note_rejection(rejection.clone());
                        return Resolution::Rejected(rejection);
                    }
                    warn!(merchant_unique_code = %code, "cannot look sale {code} up yet: {e}")
                }
            }
            if self.is_stopping() {
                return Resolution::Unknown;
            }
            let delay = waits
                .next_honouring(self.api_hold())
                .unwrap_or(RetryPolicy::API_OUTAGE.max_delay);
            tokio::select! {
                _ = boot_clock::sleep(delay) => {}
                _ = stopping.wait_for(|s| *s) => return Resolution::Unknown,
            }
        }
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
            let Ok(code) = Uuid::parse_str(&key) else {
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
                    info!(merchant_unique_code = %code, payment_request_id = id, "recovered sale {code}: the API created payment {id}");
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

    // ----- payments reported by the terminal -----

    /// `payment_started`: track a payment started elsewhere.
    pub(crate) async fn track_payment_started_elsewhere(
        &self,
        payment_request_id: &str,
    ) -> Result<(), Refusal> {
        let payment_request_id = &canonical_payment_id(payment_request_id)?;
        let payment = PendingPayment::new(PaymentSource::Elsewhere, SystemTime::now());
        self.mutate_store(|s| s.track_payment(payment_request_id, payment))
            .await
            .map_err(|e| Refusal::Internal(format!("cannot write state: {e}")))?;
        info!(
            payment_request_id,
            "tracking payment {payment_request_id}, started elsewhere"
        );
        Ok(())
    }

    /// `payment_result`: the payment is final.
    pub(crate) async fn payment_result(
        &self,
        payment_request_id: &str,
        succeeded: bool,
    ) -> Result<(), Refusal> {
        let payment_request_id = &canonical_payment_id(payment_request_id)?;
        let outcome = if succeeded {
            PaymentOutcome::Succeeded
        } else {
            PaymentOutcome::Failed
        };
        let was_pending = self
            .mutate_store(|s| s.finish_payment(payment_request_id, outcome, SystemTime::now()))
            .await
            .map_err(|e| Refusal::Internal(format!("cannot write state: {e}")))?;
        if !was_pending {
            return Err(Refusal::NotFound(payment_request_id.to_owned()));
        }
        info!(
            payment_request_id,
            succeeded,
            "payment {payment_request_id} final: {}",
            if succeeded { "succeeded" } else { "failed" }
        );
        Ok(())
    }

    // ----- cancels -----

    /// Cancels one pending payment: marked durable, sent (retried by the client), then
    /// forgotten and the terminal told. A refusal because the payment is final at the API ends
    /// the payment; any other refusal clears the mark and flags the payment `cancel_refused`
    /// (nothing sends it again by itself); a transport failure or a 5xx keeps the mark, so the
    /// cancel is sent again (timeouts: with backoff; others: at shutdown, at the next start).
    pub(crate) async fn cancel(
        self: &Arc<Self>,
        payment_request_id: &str,
        reason: CancelReason,
    ) -> Result<(), Refusal> {
        if !self.is_pending(payment_request_id) {
            return Err(Refusal::NotFound(payment_request_id.to_owned()));
        }
        let Some(_in_flight) =
            InFlight::enter(&self.cancels_in_flight, payment_request_id.to_owned())
        else {
            return Err(Refusal::ApiUnavailable(format!(
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
        id: &str,
        reason: CancelReason,
        durability: Durability,
    ) -> Result<(), Refusal> {
        let Ok(payment_request_id) = Uuid::parse_str(id) else {
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
                                payment_request_id = id,
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
                info!(payment_request_id = id, reason = %reason, "{reason} cancel of payment {id} confirmed: payment cancelled");
                if reason != CancelReason::Terminal {
                    self.tell_terminal(AgentRequest::PaymentCancelled {
                        payment_request_id: id.to_owned(),
                        reason,
                    });
                }
                Ok(())
            }
            Err(error) if is_already_final(&error) => {
                warn!(
                    payment_request_id = id,
                    "payment {id} is already final at the payment API; it is no longer pending: {error}"
                );
                if let Err(e) = self
                    .mutate_store(|s| {
                        s.finish_payment(id, PaymentOutcome::FinalAtApi, SystemTime::now())
                    })
                    .await
                {
                    error!(
                        payment_request_id = id,
                        "cannot write state for payment {id}: {e}"
                    );
                }
                Err(Refusal::from_api_error(&error))
            }
            Err(error) if error.agent_rejection().is_some() => {
                warn!(
                    payment_request_id = id,
                    "{reason} cancel of payment {id} not sent: the payment API rejects the agent; it stays marked and is sent again once the API accepts it: {error}"
                );
                Err(self.refusal(&error))
            }
            Err(error) if error.is_rejection() || is_answered_refusal(&error) => {
                let message = error.to_string();
                warn!(
                    payment_request_id = id,
                    "{reason} cancel of payment {id} refused by the payment API; it stays pending, flagged cancel_refused, and is not sent again by itself: {message}"
                );
                if let Err(e) = self
                    .mutate_store(|s| s.mark_cancel_refused(id, &message, SystemTime::now()))
                    .await
                {
                    error!(
                        payment_request_id = id,
                        "cannot write state for payment {id}: {e}"
                    );
                }
                // An HTTP 4xx answers the request like an envelope refusal: the operator's
                // command exits 1 with it (not 75, "try again later").
                Err(match Refusal::from_api_error(&error) {
                    Refusal::ApiUnavailable(_) => Refusal::ApiRejected {
                        message,
                        client_message: None,
                        error_code: None,
                    },
                    refusal => refusal,
                })
            }
            Err(error) => {
                warn!(
                    payment_request_id = id,
                    "{reason} cancel of payment {id} not confirmed ({error}); it stays marked and is sent again"
                );
                Err(self.refusal(&error))
            }
        }
    }

    /// Sends a notification to the terminal without waiting for it; a terminal that is not
    /// there learns the state from `status` when it is back. The answer to `agent_state`
    /// `ready` says who the terminal is (docs/serial-protocol.md §3 "Versions"): it is kept,
    /// and a terminal speaking a newer protocol than this build is still spoken to in this
    /// build's version, with a warning.
    pub(crate) fn tell_terminal(&self, request: AgentRequest) {
        let link = self.link.clone();
        let greeting = matches!(
            request,
            AgentRequest::AgentState {
                state: AgentReadiness::Ready,
                ..
            }
        );
        let terminal = Arc::clone(&self.terminal);
        // One task type for every notification: each spawned future type costs the terminal's
        // binary a copy of tokio's task code.
        self.notifications.spawn(async move {
            match link.request(request).await {
                Ok(Reply::Ok(identity)) if greeting => {
                    let identity = identity.sanitized();
                    let protocol = identity.protocol_version();
                    if protocol > PROTOCOL_VERSION {
                        warn!(
                            protocol,
                            "the terminal ({identity}) speaks a newer protocol than this agent \
                             (version {PROTOCOL_VERSION}): it must fall back to version \
                             {PROTOCOL_VERSION}"
                        );
                    } else {
                        info!(protocol, "terminal: {identity}");
                    }
                    *lock(&terminal) = Some(identity);
                }
                Ok(Reply::Error { code, message }) if greeting => warn!(
                    "the terminal refused agent_state ready ({code:?}: {message}); it may speak \
                     no protocol version at or below {PROTOCOL_VERSION}"
                ),
                Ok(_) => {}
                Err(e) => info!("the terminal did not take a notification: {e}"),
            }
        });
    }

    /// Who the terminal said it is, once it answered `agent_state` `ready`.
    pub(crate) fn terminal_identity(&self) -> Option<TerminalIdentity> {
        lock(&self.terminal).clone()
    }

    /// Waits until every notification sent so far was taken or given up by the link (a
    /// shutdown's `payment_cancelled` must not die with the process).
    pub(crate) async fn notifications_sent(&self) {
        self.notifications.close();
        self.notifications.wait().await;
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
        let ids: Vec<String> = self.with_store(|s| {
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

    /// The state's last step at a stop: everything durable and folded into the snapshot
    /// ([`StateStore::compact`]). A compaction that fails leaves the journal whole.
    pub(crate) async fn compact_store(&self) {
        let commit = lock(&self.store).compact();
        if let Err(e) = commit.durable().await {
            error!("cannot compact state at stop: {e}");
        }
    }

    async fn cancel_many(
        self: &Arc<Self>,
        ids: Vec<String>,
        reason: CancelReason,
        concurrency: usize,
        durability: Durability,
    ) -> CancelSummary {
        use futures_util::stream::{self, StreamExt};
        let results: Vec<(String, Result<(), Refusal>)> = stream::iter(ids)
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
        let marked: Vec<(String, CancelReason)> = self.with_store(|s| {
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
    pub(crate) fn mark_timed_out(&self) -> (Vec<String>, Option<Commit>) {
        let timeout = self.config().terminal.payment_timeout;
        let now = SystemTime::now();
        let boot_now = boot_clock::now();
        let marked = self.with_store_mut(|s| {
            let ages = lock(&self.ages);
            let expired = s.update(|state| {
                let expired: Vec<String> = state
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
        expired: Vec<String>,
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
                        payment_request_id = id,
                        "payment {id} pending longer than payment_timeout; cancelling it"
                    );
                    let mut stopping = core.stopping_signal();
                    let mut waits = RetryPolicy::API_OUTAGE.backoff();
                    loop {
                        match core.cancel(&id, CancelReason::Timeout).await {
                            Err(Refusal::ApiUnavailable(_)) if core.is_pending(&id) => {}
                            _ => return,
                        }
                        let delay = waits
                            .next_honouring(core.api_hold())
                            .unwrap_or(RetryPolicy::API_OUTAGE.max_delay);
                        tokio::select! {
                            _ = boot_clock::sleep(delay) => {}
                            _ = stopping.wait_for(|s| *s) => return,
                        }
                    }
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
    pub cancelled: Vec<String>,
    pub failed: Vec<(String, Refusal)>,
}

/// PaymentRequestIds are GUIDs; state keys them in one spelling (lower-case, hyphenated), so a
/// terminal that writes them in upper case still finds its payment.
pub(crate) fn canonical_payment_id(id: &str) -> Result<String, Refusal> {
    Uuid::parse_str(id.trim())
        .map(|uuid| uuid.to_string())
        .map_err(|_| Refusal::InvalidRequest(format!("payment_request_id {id:?} is not a GUID")))
}

fn refused(refusal: Refusal) -> SaleOutcome {
    SaleOutcome::Refused(refusal)
}

/// How [`Core::send_sale`] ended: with the sale's outcome, cut short by the shutdown, or with
/// the outcome unknown because the API refuses the agent itself.
enum Settled {
    /// The API holds the sale's payment: its id is recorded, whatever the deadline.
    Created(String),
    Outcome(SaleOutcome),
    Stopping,
    Rejected(AgentRejection),
}

/// What the terminal hears for a sale abandoned at its deadline.
fn abandoned_refusal(code: Uuid, why: &str) -> Refusal {
    Refusal::ApiUnavailable(format!(
        "{why}; the sale is abandoned (a payment made with merchant_unique_code {code} is cancelled); use a new code"
    ))
}

enum Resolution {
    Found(String),
    Absent,
    /// The API refuses the agent (keys, base URL): unknown until it accepts it again.
    Rejected(AgentRejection),
    Unknown,
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

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn an_in_flight_mark_is_removed_when_its_task_is_cancelled_at_an_await() {
        let set: Mutex<HashSet<String>> = Mutex::new(HashSet::new());
        let task = async {
            let _marked = InFlight::enter(&set, "p1".to_owned()).unwrap();
            std::future::pending::<()>().await;
        };
        // Polled once (the mark taken, the task waiting), then dropped as a timeout drops it.
        assert!(
            tokio::time::timeout(std::time::Duration::from_millis(10), task)
                .await
                .is_err()
        );
        assert!(lock(&set).is_empty(), "the mark outlived its task");
        let first = InFlight::enter(&set, "p1".to_owned()).unwrap();
        assert!(
            InFlight::enter(&set, "p1".to_owned()).is_none(),
            "marked twice"
        );
        drop(first);
        assert!(InFlight::enter(&set, "p1".to_owned()).is_some());
    }
}

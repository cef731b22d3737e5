//! The agent's shared core (docs/state.md): the state store and the durability of its
//! changes, the configuration and client a reload replaces, the connection's state, the
//! stopping signal and the bookkeeping the machines share (sales and cancels in flight). The
//! machines that drive the payment lifecycle are `impl Core` blocks of their own files
//! (`sale`, `cancel`, `timeout`, `terminal`); this file uses none of them. The daemon's main
//! loop (`super::daemon`) feeds them terminal requests, operator commands and timers; every
//! operation runs in its own task and meets the others only through the state store.

// Time and count arithmetic: docs/architecture.md, "Lint policy".
#![warn(clippy::arithmetic_side_effects)]

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use tokio::sync::{watch, Notify};
use tokio_util::task::TaskTracker;
use tracing::{error, info};

use super::ages::Ages;
use crate::boot_clock::{self, BootMillis};
use crate::config::Config;
use crate::ids::{MerchantCode, PaymentRequestId};
use crate::outcome::{AgentRejection, ConnectionState, Refusal};
use crate::paywall::{ApiError, PaywallClient};
use crate::retry::{Pacing, RetryPolicy};
use crate::serial::message::TerminalIdentity;
use crate::serial::{LinkHandle, PortStats, SerialHandle};
use crate::state::{StateError, StateStore, StorageHealth};
use crate::sync::{lock, read, write};

/// An id marked in one of the core's in-flight sets (`settling`, `cancels_in_flight`) for as long
/// as this guard lives: removed when it is dropped, also when the task holding it is cancelled
/// at an `.await`, so that no id stays marked "under way" for ever.
pub(super) struct InFlight<'a, T: Eq + std::hash::Hash> {
    set: &'a Mutex<HashSet<T>>,
    id: Option<T>,
}

impl<'a, T: Eq + std::hash::Hash + Clone> InFlight<'a, T> {
    /// Marks `id`, or `None` when it is marked already.
    pub(super) fn enter(set: &'a Mutex<HashSet<T>>, id: T) -> Option<Self> {
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
    Started {
        payment_request_id: PaymentRequestId,
    },
    Refused(Refusal),
}

/// The agent's shared core.
pub(crate) struct Core {
    /// Replaced as a whole by a reload (`SIGHUP`); readers take the one current at the time.
    config: RwLock<Arc<Config>>,
    client: RwLock<PaywallClient>,
    store: Mutex<StateStore>,
    /// How long each pending payment has been pending, on the boot clock; follows `store`.
    pub(super) ages: Mutex<Ages>,
    /// The link to the terminal, and what its serial port went through.
    pub(super) serial: SerialHandle,
    connection: watch::Sender<ConnectionState>,
    /// Why the API refuses the agent, while `connection` is `Rejected`.
    rejection: Mutex<Option<AgentRejection>>,
    stopping: watch::Sender<bool>,
    pub(super) sales_in_flight: Mutex<HashMap<MerchantCode, watch::Receiver<Option<SaleOutcome>>>>,
    /// Woken whenever a sale leaves `sales_in_flight`.
    pub(super) sale_ended: Notify,
    /// Abandoned sales a task is settling right now.
    pub(super) settling: Mutex<HashSet<MerchantCode>>,
    /// Why the connection could not be brought up, while it is not (shown by `status`).
    connection_problem: Mutex<Option<String>>,
    pub(super) cancels_in_flight: Mutex<HashSet<PaymentRequestId>>,
    /// Who the terminal on the link said it is, in its answer to the latest `agent_state`
    /// `ready` (docs/serial-protocol.md §3 "Versions"); `None` until it answered.
    pub(super) terminal: Arc<Mutex<Option<TerminalIdentity>>>,
    /// Notifications on their way to the terminal; the shutdown waits for them before the exit.
    pub(super) notifications: TaskTracker,
    /// Woken whenever something the main loop shows or times (STATUS=, payment timeouts) changed.
    pub changed: Notify,
}

impl Core {
    pub(crate) fn new(
        config: Arc<Config>,
        client: PaywallClient,
        store: StateStore,
        serial: SerialHandle,
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
            serial,
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
        &self.serial.link
    }

    /// What the serial port has been through (reopens, last error).
    pub(crate) fn port_stats(&self) -> PortStats {
        self.serial.port_stats()
    }

    /// Reads the state store. The lock is never held across an await.
    pub(crate) fn with_store<T>(&self, f: impl FnOnce(&StateStore) -> T) -> T {
        f(&lock(&self.store))
    }

    pub(super) fn with_store_mut<T>(&self, f: impl FnOnce(&mut StateStore) -> T) -> T {
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
    pub(super) fn defer_store(&self, f: impl FnOnce(&mut StateStore)) {
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

    /// How a loop waits while the payment API is out of reach (see [`crate::retry::retry`]):
    /// the common outage policy, each wait at least what is left of a `Retry-After` hold, on
    /// the boot clock, until the agent stops.
    pub(super) fn outage_pacing(&self) -> Pacing<impl Fn() -> Option<Duration> + '_> {
        Pacing {
            waits: RetryPolicy::API_OUTAGE.backoff(),
            hold: || self.api_hold(),
            stop: self.stopping_signal(),
            sleep: |wait| Box::pin(boot_clock::sleep(wait)),
        }
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

    pub(crate) fn pending_ids(&self) -> Vec<PaymentRequestId> {
        self.with_store(|s| s.pending().keys().cloned().collect())
    }

    pub(crate) fn pending_count(&self) -> usize {
        self.with_store(|s| s.pending().len())
    }

    pub(super) fn is_pending(&self, payment_request_id: &PaymentRequestId) -> bool {
        self.with_store(|s| s.payment(payment_request_id).is_some())
    }

    /// The state's last step at a stop: everything durable and folded into the snapshot
    /// ([`StateStore::compact`]). A compaction that fails leaves the journal whole.
    pub(crate) async fn compact_store(&self) {
        let commit = lock(&self.store).compact();
        if let Err(e) = commit.durable().await {
            error!("cannot compact state at stop: {e}");
        }
    }
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

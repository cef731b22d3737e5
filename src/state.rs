//! Durable state (`docs/state.md`): the connection Id, every pending payment and the
//! merchant code → payment map that keeps sales idempotent across restarts. Money depends on it
//! surviving a crash at any instant: each change is journalled and synced by the state writer
//! (a thread of its own, group-committing), and the caller awaits its durability before the
//! side effect; state that cannot be read stops the start and is never replaced.

mod journal;
mod writer;

use std::collections::BTreeMap;
use std::fmt;
use std::fs::{File, OpenOptions};
use std::os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use nix::fcntl::{Flock, FlockArg};
use serde::{Deserialize, Serialize};
use tokio::sync::oneshot;

pub use journal::{
    encode_record, encode_snapshot, load_from_bytes, Change, LoadError, Loaded, Record,
    LEGACY_FORMAT_VERSION, MAX_RECORD_LEN, RECORD_HEADER_LEN,
};
use writer::Writer;
pub use writer::{WriterStats, COMPACT_MIN_BYTES, COMPACT_RATIO, MAX_QUEUED};

/// The snapshot in the state directory.
pub const STATE_FILE: &str = "state.json";
/// The journal of changes since the snapshot.
pub const JOURNAL_FILE: &str = "state.journal";
/// The file a snapshot goes to before it is renamed over [`STATE_FILE`].
pub const TEMP_FILE: &str = "state.json.tmp";
/// The file whose `flock` says which process owns the directory.
pub const LOCK_FILE: &str = "state.lock";
/// The snapshot format version this build writes (2: a snapshot with a journal). Version 1
/// (`state.json` alone) is read and migrated.
pub const FORMAT_VERSION: u32 = 2;
/// Final sales are kept this long for idempotency...
pub const FINAL_SALE_RETENTION: Duration = Duration::from_secs(24 * 60 * 60);
/// ...and at most this many (the newest), so that a snapshot stays small on flash.
/// Intents and started sales are never dropped.
pub const MAX_FINAL_SALES: usize = 1_000;

/// The latest instant RFC 3339 can write with a four-digit year.
const MAX_UNIX_MILLIS: u64 = 253_402_300_799_999;

/// An instant with millisecond precision, written as RFC 3339 UTC (`2026-11-21T13:16:40.123Z`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timestamp {
    unix_millis: u64,
}

impl Timestamp {
    /// `time` truncated to the millisecond (clamped to 1970..=9999).
    pub fn from_system_time(time: SystemTime) -> Self {
        let unix_millis = time
            .duration_since(UNIX_EPOCH)
            .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
            .unwrap_or(0);
        Self::from_unix_millis(unix_millis)
    }

    /// Milliseconds since the Unix epoch (clamped to year 9999).
    pub fn from_unix_millis(unix_millis: u64) -> Self {
        Self {
            unix_millis: unix_millis.min(MAX_UNIX_MILLIS),
        }
    }

    pub fn now() -> Self {
        Self::from_system_time(SystemTime::now())
    }

    pub fn unix_millis(self) -> u64 {
        self.unix_millis
    }

    pub fn to_system_time(self) -> SystemTime {
        UNIX_EPOCH + Duration::from_millis(self.unix_millis)
    }
}

impl From<SystemTime> for Timestamp {
    fn from(time: SystemTime) -> Self {
        Self::from_system_time(time)
    }
}

impl fmt::Display for Timestamp {
    /// RFC 3339, as `status --json` prints `since` (docs/operations.md (Operator commands)).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}",
            humantime::format_rfc3339_millis(self.to_system_time())
        )
    }
}

impl Serialize for Timestamp {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Timestamp {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        humantime::parse_rfc3339(&text)
            .map(Self::from_system_time)
            .map_err(|e| serde::de::Error::custom(format!("invalid timestamp {text:?}: {e}")))
    }
}

/// How the agent learnt of a pending payment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PaymentSource {
    /// A sale the terminal asked this agent for.
    Terminal,
    /// A payment started elsewhere, announced by the terminal's `payment_started`.
    Elsewhere,
    /// Found in the payment API while recovering (for example after lost state of a sale).
    Recovered,
}

/// Who asked for a cancel (docs/state.md, docs/architecture.md (Data flow of a shutdown); the `reason` of docs/serial-protocol.md §3
/// `payment_cancelled`). An operator's `disconnect` cancels with reason `operator`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CancelReason {
    Operator,
    Terminal,
    Shutdown,
    Timeout,
    /// The sale's outcome was unknown when its reply was due; the terminal was told it failed,
    /// and the payment turned up later.
    Abandoned,
}

impl CancelReason {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Operator => "operator",
            Self::Terminal => "terminal",
            Self::Shutdown => "shutdown",
            Self::Timeout => "timeout",
            Self::Abandoned => "abandoned",
        }
    }
}

impl fmt::Display for CancelReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A cancel that was asked for; durable before the cancel request leaves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CancelRequest {
    pub reason: CancelReason,
    pub at: Timestamp,
}

/// A payment the API created that is not final yet, keyed by its PaymentRequestId.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PendingPayment {
    pub merchant_unique_code: Option<String>,
    pub amount_minor: Option<u64>,
    pub currency_id: Option<i64>,
    pub since: Timestamp,
    pub source: PaymentSource,
    /// Set once a cancel was asked for; it is sent again after a restart until confirmed.
    pub cancel_requested: Option<CancelRequest>,
    /// The API refused the last cancel (not because the payment is final): the payment stays
    /// pending, and nothing sends its cancel again by itself; an operator's or the terminal's
    /// `cancel` may.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cancel_refused: Option<CancelRefused>,
}

/// A cancel the payment API refused, with what it said.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CancelRefused {
    pub message: String,
    pub at: Timestamp,
}

impl PendingPayment {
    /// A payment known only by its id.
    pub fn new(source: PaymentSource, since: SystemTime) -> Self {
        Self {
            merchant_unique_code: None,
            amount_minor: None,
            currency_id: None,
            since: since.into(),
            source,
            cancel_requested: None,
            cancel_refused: None,
        }
    }
}

/// How a payment ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PaymentOutcome {
    Succeeded,
    Failed,
    Cancelled,
    /// The API refused a cancel because the payment is already final there (successful,
    /// failed): it is no longer pending, and this agent did not learn which way it ended.
    FinalAtApi,
    /// The API refused the sale request (`Failed`, `ErrorCode` ≠ 0): no payment exists.
    Rejected,
    /// The terminal was told the sale failed while its outcome was unknown; the payment, if the
    /// API had created it, was cancelled. The code stays refused.
    Abandoned,
}

/// A sale by its merchant unique code, from intent to final.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Sale {
    pub amount_minor: u64,
    pub currency_id: i64,
    /// When the intent was recorded.
    pub since: Timestamp,
    pub stage: SaleStage,
}

/// Where a sale is (docs/state.md: intent before the side effect).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "status", rename_all = "snake_case", deny_unknown_fields)]
pub enum SaleStage {
    /// Written before the sale request leaves; whether the API created it is unknown until
    /// the response, or until recovery finds it by its code or establishes it does not exist.
    Intent,
    /// The API answered with this PaymentRequestId; the payment is pending.
    Started { payment_request_id: String },
    /// The outcome was still unknown when the sale's reply was due, and the terminal was told
    /// `api_unavailable`. Written before that reply leaves. The agent keeps looking the code up:
    /// a payment that turns up is tracked with a cancel (reason `abandoned`) asked for, and the
    /// sale ends `Final`/`Abandoned` when the cancel is confirmed or the code shown absent.
    Abandoned { at: Timestamp },
    /// Over; kept so a repeated code gets the same answer.
    Final {
        payment_request_id: Option<String>,
        outcome: PaymentOutcome,
        at: Timestamp,
    },
}

/// Everything the agent must not forget, as written to `state.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentState {
    pub version: u32,
    pub connection_id: Option<String>,
    /// Pending payments by PaymentRequestId.
    pub payments: BTreeMap<String, PendingPayment>,
    /// Sales by merchant unique code.
    pub sales: BTreeMap<String, Sale>,
}

impl Default for AgentState {
    fn default() -> Self {
        Self {
            version: FORMAT_VERSION,
            connection_id: None,
            payments: BTreeMap::new(),
            sales: BTreeMap::new(),
        }
    }
}

/// Why state could not be opened, read, changed or written.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("state directory {}: {source}", dir.display())]
    Directory {
        dir: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "state directory {} is in use by another pos-agent process (lock {} is held)",
        dir.display(),
        lock.display()
    )]
    Locked { dir: PathBuf, lock: PathBuf },
    #[error(
        "state file {} cannot be read: {reason}. It was left as it is: repair it or move it \
         away (the agent then starts with empty state), then start again",
        file.display()
    )]
    Unreadable { file: PathBuf, reason: String },
    #[error(
        "state file {} has format version {found}; this pos-agent reads version {FORMAT_VERSION}. \
         It was left as it is: run the pos-agent that wrote it, or move the file away",
        file.display()
    )]
    UnknownVersion { file: PathBuf, found: u64 },
    #[error(
        "the state writer is behind: {queued} changes wait for the storage; this change was \
         refused"
    )]
    WriterBehind { queued: usize },
    #[error("cannot write state file {}: {source}", file.display())]
    Write {
        file: PathBuf,
        source: std::io::Error,
    },
    #[error("payment {0} is not pending")]
    UnknownPayment(String),
    #[error("no sale with merchant unique code {0}")]
    UnknownSale(String),
    #[error("sale {code} is already {stage}")]
    SaleConflict { code: String, stage: &'static str },
}

impl SaleStage {
    fn name(&self) -> &'static str {
        match self {
            SaleStage::Intent => "an intent",
            SaleStage::Started { .. } => "started",
            SaleStage::Abandoned { .. } => "abandoned",
            SaleStage::Final { .. } => "final",
        }
    }
}

/// The changes, on the in-memory state. [`StateStore`] applies them and writes the result;
/// [`StateStore::update`] applies several with one write.
impl AgentState {
    pub fn set_connection_id(&mut self, id: Option<String>) {
        self.connection_id = id;
    }

    /// Records a sale before its request leaves (docs/state.md). A code already known is a
    /// conflict: the caller answers from [`AgentState::sales`] instead.
    pub fn record_sale_intent(
        &mut self,
        code: &str,
        amount_minor: u64,
        currency_id: i64,
        at: SystemTime,
    ) -> Result<(), StateError> {
        if let Some(sale) = self.sales.get(code) {
            return Err(StateError::SaleConflict {
                code: code.to_owned(),
                stage: sale.stage.name(),
            });
        }
        self.sales.insert(
            code.to_owned(),
            Sale {
                amount_minor,
                currency_id,
                since: at.into(),
                stage: SaleStage::Intent,
            },
        );
        Ok(())
    }

    /// The API created the sale's payment: the sale is started and the payment pending (from
    /// `at`). Repeating it with the same id changes nothing.
    pub fn record_sale_started(
        &mut self,
        code: &str,
        payment_request_id: &str,
        at: SystemTime,
    ) -> Result<(), StateError> {
        let sale = self
            .sales
            .get_mut(code)
            .ok_or_else(|| StateError::UnknownSale(code.to_owned()))?;
        match &sale.stage {
            SaleStage::Intent => {}
            SaleStage::Started {
                payment_request_id: known,
            } if known == payment_request_id => return Ok(()),
            other => {
                return Err(StateError::SaleConflict {
                    code: code.to_owned(),
                    stage: other.name(),
                })
            }
        }
        sale.stage = SaleStage::Started {
            payment_request_id: payment_request_id.to_owned(),
        };
        let (amount_minor, currency_id) = (sale.amount_minor, sale.currency_id);
        let payment = self
            .payments
            .entry(payment_request_id.to_owned())
            .or_insert_with(|| PendingPayment::new(PaymentSource::Terminal, at));
        payment.merchant_unique_code = Some(code.to_owned());
        payment.amount_minor = Some(amount_minor);
        payment.currency_id = Some(currency_id);
        Ok(())
    }

    /// The sale was established not to exist: its intent goes. Only an intent can be forgotten;
    /// an unknown code is already forgotten.
    pub fn forget_sale_intent(&mut self, code: &str) -> Result<(), StateError> {
        match self.sales.get(code).map(|sale| &sale.stage) {
            None => Ok(()),
            Some(SaleStage::Intent) => {
                self.sales.remove(code);
                Ok(())
            }
            Some(other) => Err(StateError::SaleConflict {
                code: code.to_owned(),
                stage: other.name(),
            }),
        }
    }

    /// The sale's reply is due and its outcome unknown: the intent becomes abandoned. Repeating
    /// it changes nothing.
    pub fn abandon_sale(&mut self, code: &str, at: SystemTime) -> Result<(), StateError> {
        let sale = self
            .sales
            .get_mut(code)
            .ok_or_else(|| StateError::UnknownSale(code.to_owned()))?;
        match sale.stage {
            SaleStage::Intent => {
                sale.stage = SaleStage::Abandoned { at: at.into() };
                Ok(())
            }
            SaleStage::Abandoned { .. } => Ok(()),
            ref other => Err(StateError::SaleConflict {
                code: code.to_owned(),
                stage: other.name(),
            }),
        }
    }

    /// An abandoned sale's payment turned up: it is tracked as pending with a cancel (reason
    /// `abandoned`) asked for, in the same write. The sale stays abandoned until the cancel is
    /// confirmed.
    pub fn abandoned_sale_found(
        &mut self,
        code: &str,
        payment_request_id: &str,
        at: SystemTime,
    ) -> Result<(), StateError> {
        let sale = self
            .sales
            .get(code)
            .ok_or_else(|| StateError::UnknownSale(code.to_owned()))?;
        if !matches!(sale.stage, SaleStage::Abandoned { .. }) {
            return Err(StateError::SaleConflict {
                code: code.to_owned(),
                stage: sale.stage.name(),
            });
        }
        let (amount_minor, currency_id, since) = (sale.amount_minor, sale.currency_id, sale.since);
        let payment = self
            .payments
            .entry(payment_request_id.to_owned())
            .or_insert_with(|| PendingPayment::new(PaymentSource::Terminal, at));
        payment.merchant_unique_code = Some(code.to_owned());
        payment.amount_minor = Some(amount_minor);
        payment.currency_id = Some(currency_id);
        payment.since = since;
        payment.cancel_requested.get_or_insert(CancelRequest {
            reason: CancelReason::Abandoned,
            at: at.into(),
        });
        Ok(())
    }

    /// The merchant codes of abandoned sales still being settled, with when they were abandoned.
    pub fn abandoned_sales(&self) -> impl Iterator<Item = (&str, &Sale)> {
        self.sales
            .iter()
            .filter(|(_, sale)| matches!(sale.stage, SaleStage::Abandoned { .. }))
            .map(|(code, sale)| (code.as_str(), sale))
    }

    /// Tracks a payment that did not start as this agent's sale (`payment_started`, recovery).
    /// Returns false, changing nothing, when it is already pending.
    pub fn track_payment(&mut self, id: &str, payment: PendingPayment) -> bool {
        if self.payments.contains_key(id) {
            return false;
        }
        self.payments.insert(id.to_owned(), payment);
        true
    }

    /// Marks a cancel as asked for, before the request leaves. The first request's reason and
    /// time are kept.
    pub fn mark_cancel_requested(
        &mut self,
        id: &str,
        reason: CancelReason,
        at: SystemTime,
    ) -> Result<(), StateError> {
        let payment = self
            .payments
            .get_mut(id)
            .ok_or_else(|| StateError::UnknownPayment(id.to_owned()))?;
        if payment.cancel_requested.is_none() {
            payment.cancel_requested = Some(CancelRequest {
                reason,
                at: at.into(),
            });
        }
        Ok(())
    }

    /// The API refused the payment's cancel: the mark is cleared (nothing sends it again by
    /// itself) and the refusal kept. Returns false when the payment is not pending.
    pub fn mark_cancel_refused(&mut self, id: &str, message: &str, at: SystemTime) -> bool {
        let Some(payment) = self.payments.get_mut(id) else {
            return false;
        };
        payment.cancel_requested = None;
        payment.cancel_refused = Some(CancelRefused {
            message: message.to_owned(),
            at: at.into(),
        });
        true
    }

    /// The payment is final: it leaves the pending set, and its sale (if any) is kept as final.
    /// Returns false when it was not pending (a repeated result).
    pub fn finish_payment(&mut self, id: &str, outcome: PaymentOutcome, at: SystemTime) -> bool {
        let code = self.sale_code_of(id);
        if self.payments.remove(id).is_none() {
            return false;
        }
        if let Some(sale) = code.and_then(|code| self.sales.get_mut(&code)) {
            // An abandoned sale ends abandoned, whatever ended its payment: its code stays
            // refused.
            let outcome = match sale.stage {
                SaleStage::Abandoned { .. } => PaymentOutcome::Abandoned,
                _ => outcome,
            };
            if !matches!(sale.stage, SaleStage::Final { .. }) {
                sale.stage = SaleStage::Final {
                    payment_request_id: Some(id.to_owned()),
                    outcome,
                    at: at.into(),
                };
            }
        }
        true
    }

    /// The merchant code of the sale a pending payment belongs to, if any.
    pub fn sale_code_of(&self, id: &str) -> Option<String> {
        let payment = self.payments.get(id)?;
        payment.merchant_unique_code.clone().or_else(|| {
            self.sales
                .iter()
                .find(|(_, sale)| {
                    matches!(&sale.stage, SaleStage::Started { payment_request_id } if payment_request_id == id)
                })
                .map(|(code, _)| code.clone())
        })
    }

    /// Makes a sale final by its code, whatever its stage (for example `Rejected` when the API
    /// refused the request); its pending payment, if any, is no longer pending.
    pub fn finish_sale(
        &mut self,
        code: &str,
        outcome: PaymentOutcome,
        at: SystemTime,
    ) -> Result<(), StateError> {
        let sale = self
            .sales
            .get_mut(code)
            .ok_or_else(|| StateError::UnknownSale(code.to_owned()))?;
        let payment_request_id = match &sale.stage {
            SaleStage::Final { .. } => return Ok(()),
            SaleStage::Intent => None,
            SaleStage::Abandoned { .. } => {
                let pending = self
                    .payments
                    .iter()
                    .find(|(_, p)| p.merchant_unique_code.as_deref() == Some(code))
                    .map(|(id, _)| id.clone());
                pending
            }
            SaleStage::Started { payment_request_id } => Some(payment_request_id.clone()),
        };
        if let Some(id) = &payment_request_id {
            self.payments.remove(id);
        }
        sale.stage = SaleStage::Final {
            payment_request_id,
            outcome,
            at: at.into(),
        };
        Ok(())
    }

    /// Bounds the sales map: final sales older than [`FINAL_SALE_RETENTION`] go, then the
    /// oldest beyond [`MAX_FINAL_SALES`]. Intents and started sales always stay.
    /// Returns the codes dropped.
    pub fn prune_final_sales(&mut self, now: SystemTime) -> Vec<String> {
        let cutoff = Timestamp::from_system_time(
            now.checked_sub(FINAL_SALE_RETENTION).unwrap_or(UNIX_EPOCH),
        );
        let mut removed = Vec::new();
        self.sales.retain(|code, sale| match sale.stage {
            SaleStage::Final { at, .. } if at < cutoff => {
                removed.push(code.clone());
                false
            }
            _ => true,
        });
        let mut finals: Vec<(Timestamp, String)> = self
            .sales
            .iter()
            .filter_map(|(code, sale)| match sale.stage {
                SaleStage::Final { at, .. } => Some((at, code.clone())),
                _ => None,
            })
            .collect();
        if finals.len() > MAX_FINAL_SALES {
            finals.sort();
            let excess = finals.len() - MAX_FINAL_SALES;
            for (_, code) in finals.into_iter().take(excess) {
                self.sales.remove(&code);
                removed.push(code);
            }
        }
        removed
    }
}

/// The state directory, owned by this process (an exclusive `flock`), and the state in it.
///
/// A change is applied in memory at once and queued, as one journal record, for the state
/// writer (`writer`), a thread of its own; [`StateStore::commit`] gives the future that
/// resolves when everything queued so far is durable. Callers await it before the change's
/// side effect (`docs/state.md`, "Durable before the side effect"), without holding the store.
pub struct StateStore {
    directory: PathBuf,
    file: PathBuf,
    journal: PathBuf,
    state: AgentState,
    changes_since_prune: usize,
    /// Declared before the lock: dropping the store writes what is queued, then unlocks.
    writer: Writer,
    _lock: Flock<File>,
}

impl fmt::Debug for StateStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StateStore")
            .field("file", &self.file)
            .field("state", &self.state)
            .finish()
    }
}

/// Resolves when the changes queued before it are durable. Dropping it does not cancel them.
#[must_use = "a change is not durable until its commit resolves"]
pub struct Commit {
    done: oneshot::Receiver<writer::Outcome>,
    file: PathBuf,
}

impl Commit {
    /// Waits (asynchronously) for durability.
    pub async fn durable(self) -> Result<(), StateError> {
        let outcome = self.done.await;
        Self::result(outcome.ok(), &self.file)
    }

    /// Waits, blocking the thread: for tools and tests outside an async runtime.
    pub fn wait(self) -> Result<(), StateError> {
        let outcome = self.done.blocking_recv();
        Self::result(outcome.ok(), &self.file)
    }

    fn result(outcome: Option<writer::Outcome>, file: &Path) -> Result<(), StateError> {
        match outcome {
            Some(Ok(())) => Ok(()),
            Some(Err((kind, text))) => Err(StateError::Write {
                file: file.to_owned(),
                source: std::io::Error::new(kind, text),
            }),
            None => Err(StateError::Write {
                file: file.to_owned(),
                source: std::io::Error::other("the state writer has stopped"),
            }),
        }
    }
}

/// The changes that turn `old` into `new`, entry by entry.
fn diff(old: &AgentState, new: &AgentState) -> Vec<Change> {
    let mut changes = Vec::new();
    if old.connection_id != new.connection_id {
        changes.push(Change::ConnectionId {
            connection_id: new.connection_id.clone(),
        });
    }
    for (id, payment) in &new.payments {
        if old.payments.get(id) != Some(payment) {
            changes.push(Change::PutPayment {
                payment_request_id: id.clone(),
                payment: payment.clone(),
            });
        }
    }
    for id in old.payments.keys() {
        if !new.payments.contains_key(id) {
            changes.push(Change::RemovePayment {
                payment_request_id: id.clone(),
            });
        }
    }
    for (code, sale) in &new.sales {
        if old.sales.get(code) != Some(sale) {
            changes.push(Change::PutSale {
                merchant_unique_code: code.clone(),
                sale: sale.clone(),
            });
        }
    }
    for code in old.sales.keys() {
        if !new.sales.contains_key(code) {
            changes.push(Change::RemoveSale {
                merchant_unique_code: code.clone(),
            });
        }
    }
    changes
}

/// The entries one typed change may touch; only they are compared and journalled, so a
/// change costs the same whatever the number of pending payments.
#[derive(Default)]
struct Touched {
    connection: bool,
    payments: Vec<String>,
    sales: Vec<String>,
}

impl Touched {
    fn payment(id: &str) -> Self {
        Self {
            payments: vec![id.to_owned()],
            ..Self::default()
        }
    }

    fn sale(code: &str) -> Self {
        Self {
            sales: vec![code.to_owned()],
            ..Self::default()
        }
    }

    fn with_sale(mut self, code: Option<String>) -> Self {
        self.sales.extend(code);
        self
    }

    fn with_payment(mut self, id: Option<String>) -> Self {
        self.payments.extend(id);
        self
    }

    /// The touched entries' values in `state`.
    fn values(&self, state: &AgentState) -> TouchedValues {
        TouchedValues {
            connection: self.connection.then(|| state.connection_id.clone()),
            payments: self
                .payments
                .iter()
                .map(|id| state.payments.get(id).cloned())
                .collect(),
            sales: self
                .sales
                .iter()
                .map(|code| state.sales.get(code).cloned())
                .collect(),
        }
    }

    /// The changes from `before` to the touched entries' values in `state`.
    fn changes(&self, before: TouchedValues, state: &AgentState) -> Vec<Change> {
        let after = self.values(state);
        let mut changes = Vec::new();
        if before.connection != after.connection {
            changes.push(Change::ConnectionId {
                connection_id: state.connection_id.clone(),
            });
        }
        for ((id, old), new) in self
            .payments
            .iter()
            .zip(before.payments)
            .zip(after.payments)
        {
            if old != new {
                changes.push(match new {
                    Some(payment) => Change::PutPayment {
                        payment_request_id: id.clone(),
                        payment,
                    },
                    None => Change::RemovePayment {
                        payment_request_id: id.clone(),
                    },
                });
            }
        }
        for ((code, old), new) in self.sales.iter().zip(before.sales).zip(after.sales) {
            if old != new {
                changes.push(match new {
                    Some(sale) => Change::PutSale {
                        merchant_unique_code: code.clone(),
                        sale,
                    },
                    None => Change::RemoveSale {
                        merchant_unique_code: code.clone(),
                    },
                });
            }
        }
        changes
    }
}

struct TouchedValues {
    connection: Option<Option<String>>,
    payments: Vec<Option<PendingPayment>>,
    sales: Vec<Option<Sale>>,
}

/// Final sales are pruned every this many journalled changes (and at each start).
const PRUNE_EVERY: usize = 64;

impl StateStore {
    /// Opens the state directory (creating it, mode 0700, when missing), takes its lock, reads
    /// `state.json` and replays `state.journal` over it, and starts the state writer. State
    /// that cannot be read is an error naming the file, and nothing is written. A torn journal
    /// tail is dropped; a legacy (version 1) `state.json` is migrated; a leftover
    /// `state.json.tmp` (a crash during a snapshot) is ignored.
    pub fn open(directory: &Path) -> Result<Self, StateError> {
        let dir_error = |source| StateError::Directory {
            dir: directory.to_owned(),
            source,
        };
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(directory)
            .map_err(dir_error)?;
        let lock_path = directory.join(LOCK_FILE);
        let lock_file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(&lock_path)
            .map_err(dir_error)?;
        let lock = match Flock::lock(lock_file, FlockArg::LockExclusiveNonblock) {
            Ok(lock) => lock,
            Err((_, nix::errno::Errno::EWOULDBLOCK)) => {
                return Err(StateError::Locked {
                    dir: directory.to_owned(),
                    lock: lock_path,
                })
            }
            Err((_, errno)) => return Err(dir_error(std::io::Error::from(errno))),
        };
        let file = directory.join(STATE_FILE);
        let journal = directory.join(JOURNAL_FILE);
        let snapshot = read_optional(&file)?;
        let journal_bytes = read_optional(&journal)?;
        let loaded =
            load_from_bytes(snapshot.as_deref(), journal_bytes.as_deref()).map_err(|error| {
                match error {
                    LoadError::UnknownVersion(found) => StateError::UnknownVersion {
                        file: file.clone(),
                        found,
                    },
                    LoadError::CorruptJournal { .. } | LoadError::JournalWithoutSnapshot => {
                        StateError::Unreadable {
                            file: journal.clone(),
                            reason: error.to_string(),
                        }
                    }
                    LoadError::SnapshotNotState(_) | LoadError::SnapshotInvalid(_) => {
                        StateError::Unreadable {
                            file: file.clone(),
                            reason: error.to_string(),
                        }
                    }
                }
            })?;
        let mut state = loaded.state;
        let pruned = !state.prune_final_sales(SystemTime::now()).is_empty();
        let writer = Writer::spawn(writer::Start {
            directory: directory.to_owned(),
            state: state.clone(),
            snapshot_current: snapshot.is_some() && !loaded.migrate,
            journal_len: loaded.journal_valid_len as u64,
            torn_tail: loaded.torn_tail,
            compact_now: loaded.migrate || loaded.torn_tail || pruned,
        })
        .map_err(|source| StateError::Write {
            file: journal.clone(),
            source,
        })?;
        Ok(Self {
            directory: directory.to_owned(),
            file,
            journal,
            state,
            changes_since_prune: 0,
            writer,
            _lock: lock,
        })
    }

    pub fn directory(&self) -> &Path {
        &self.directory
    }

    /// The path of `state.json`, the snapshot.
    pub fn file(&self) -> &Path {
        &self.file
    }

    /// The path of `state.journal`.
    pub fn journal_file(&self) -> &Path {
        &self.journal
    }

    /// The whole state, with every change applied (durable once its commit resolves).
    pub fn state(&self) -> &AgentState {
        &self.state
    }

    pub fn connection_id(&self) -> Option<&str> {
        self.state.connection_id.as_deref()
    }

    /// Pending payments by PaymentRequestId.
    pub fn pending(&self) -> &BTreeMap<String, PendingPayment> {
        &self.state.payments
    }

    pub fn payment(&self, payment_request_id: &str) -> Option<&PendingPayment> {
        self.state.payments.get(payment_request_id)
    }

    /// The sale with this merchant unique code, if known.
    pub fn sale(&self, merchant_unique_code: &str) -> Option<&Sale> {
        self.state.sales.get(merchant_unique_code)
    }

    /// What the writer has written so far.
    pub fn writer_stats(&self) -> WriterStats {
        self.writer.stats()
    }

    /// A future that resolves when every change made so far is durable (at once when
    /// nothing is queued). Await it before the side effect the changes protect.
    pub fn commit(&mut self) -> Commit {
        let (done, rx) = oneshot::channel();
        self.writer.submit(Vec::new(), Some(done));
        Commit {
            done: rx,
            file: self.journal.clone(),
        }
    }

    /// Same as [`StateStore::commit`]: kept for callers that batch changes and write them at
    /// the end.
    pub fn flush(&mut self) -> Commit {
        self.commit()
    }

    fn has_room(&self) -> Result<(), StateError> {
        let queued = self.writer.queued();
        if queued >= MAX_QUEUED {
            return Err(StateError::WriterBehind { queued });
        }
        Ok(())
    }

    /// Queues `changes` as one record (nothing when empty), with the final sales pruned every
    /// [`PRUNE_EVERY`] changes.
    fn submit(&mut self, mut changes: Vec<Change>) {
        if changes.is_empty() {
            return;
        }
        self.changes_since_prune += 1;
        if self.changes_since_prune >= PRUNE_EVERY {
            self.changes_since_prune = 0;
            for code in self.state.prune_final_sales(SystemTime::now()) {
                changes.push(Change::RemoveSale {
                    merchant_unique_code: code,
                });
            }
        }
        self.writer.submit(changes, None);
    }

    /// Applies `change` to a copy of the state; on success it becomes the state and the
    /// differences are queued as one record. Nothing changes when `change` fails. For
    /// changes of several entries at once; it compares the whole state, so the typed
    /// methods below, which touch known entries, are cheaper.
    pub fn update<T>(
        &mut self,
        change: impl FnOnce(&mut AgentState) -> Result<T, StateError>,
    ) -> Result<T, StateError> {
        self.has_room()?;
        let mut next = self.state.clone();
        let value = change(&mut next)?;
        let changes = diff(&self.state, &next);
        self.state = next;
        self.submit(changes);
        Ok(value)
    }

    /// A change to known entries: `change` must leave the state as it was when it fails
    /// (the [`AgentState`] methods check before they change).
    fn touch<T>(
        &mut self,
        touched: Touched,
        change: impl FnOnce(&mut AgentState) -> Result<T, StateError>,
    ) -> Result<T, StateError> {
        self.has_room()?;
        let before = touched.values(&self.state);
        let value = change(&mut self.state)?;
        let changes = touched.changes(before, &self.state);
        self.submit(changes);
        Ok(value)
    }

    /// Applies `change` without a commit of its own; the caller does not wait for it. Only
    /// for changes whose loss a restart repairs by itself, such as the confirmation of a
    /// cancel (an unconfirmed cancel is sent again).
    pub fn defer(&mut self, change: impl FnOnce(&mut AgentState)) {
        if let Err(e) = self.update(|state| {
            change(state);
            Ok(())
        }) {
            tracing::error!("cannot queue a state change: {e}");
        }
    }

    pub fn set_connection_id(&mut self, id: Option<String>) -> Result<(), StateError> {
        let touched = Touched {
            connection: true,
            ..Touched::default()
        };
        self.touch(touched, |state| {
            state.set_connection_id(id);
            Ok(())
        })
    }

    /// See [`AgentState::record_sale_intent`].
    pub fn record_sale_intent(
        &mut self,
        code: &str,
        amount_minor: u64,
        currency_id: i64,
        at: SystemTime,
    ) -> Result<(), StateError> {
        self.touch(Touched::sale(code), |state| {
            state.record_sale_intent(code, amount_minor, currency_id, at)
        })
    }

    /// See [`AgentState::record_sale_started`].
    pub fn record_sale_started(
        &mut self,
        code: &str,
        payment_request_id: &str,
        at: SystemTime,
    ) -> Result<(), StateError> {
        let touched = Touched::sale(code).with_payment(Some(payment_request_id.to_owned()));
        self.touch(touched, |state| {
            state.record_sale_started(code, payment_request_id, at)
        })
    }

    /// See [`AgentState::forget_sale_intent`].
    pub fn forget_sale_intent(&mut self, code: &str) -> Result<(), StateError> {
        self.touch(Touched::sale(code), |state| state.forget_sale_intent(code))
    }

    /// See [`AgentState::track_payment`].
    pub fn track_payment(
        &mut self,
        payment_request_id: &str,
        payment: PendingPayment,
    ) -> Result<bool, StateError> {
        self.touch(Touched::payment(payment_request_id), |state| {
            Ok(state.track_payment(payment_request_id, payment))
        })
    }

    /// See [`AgentState::mark_cancel_requested`].
    pub fn mark_cancel_requested(
        &mut self,
        payment_request_id: &str,
        reason: CancelReason,
        at: SystemTime,
    ) -> Result<(), StateError> {
        self.touch(Touched::payment(payment_request_id), |state| {
            state.mark_cancel_requested(payment_request_id, reason, at)
        })
    }

    /// See [`AgentState::mark_cancel_refused`].
    pub fn mark_cancel_refused(
        &mut self,
        payment_request_id: &str,
        message: &str,
        at: SystemTime,
    ) -> Result<bool, StateError> {
        self.touch(Touched::payment(payment_request_id), |state| {
            Ok(state.mark_cancel_refused(payment_request_id, message, at))
        })
    }

    /// See [`AgentState::finish_payment`].
    pub fn finish_payment(
        &mut self,
        payment_request_id: &str,
        outcome: PaymentOutcome,
        at: SystemTime,
    ) -> Result<bool, StateError> {
        let code = self.state.sale_code_of(payment_request_id);
        let touched = Touched::payment(payment_request_id).with_sale(code);
        self.touch(touched, |state| {
            Ok(state.finish_payment(payment_request_id, outcome, at))
        })
    }

    /// See [`AgentState::finish_sale`].
    pub fn finish_sale(
        &mut self,
        code: &str,
        outcome: PaymentOutcome,
        at: SystemTime,
    ) -> Result<(), StateError> {
        let payment = match self.state.sales.get(code).map(|sale| &sale.stage) {
            Some(SaleStage::Started { payment_request_id }) => Some(payment_request_id.clone()),
            _ => None,
        };
        let touched = Touched::sale(code).with_payment(payment);
        self.touch(touched, |state| state.finish_sale(code, outcome, at))
    }
}

/// The file's bytes, `None` when it does not exist.
fn read_optional(file: &Path) -> Result<Option<Vec<u8>>, StateError> {
    match std::fs::read(file) {
        Ok(bytes) => Ok(Some(bytes)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(StateError::Unreadable {
            file: file.to_owned(),
            reason: e.to_string(),
        }),
    }
}

/// The connection Id in a state directory, read without taking the lock (the running agent
/// may hold it): what `check-config` needs to tell whether `run` has an Id.
pub fn stored_connection_id(directory: &Path) -> Result<Option<String>, StateError> {
    Ok(read_directory(directory)?.connection_id)
}

/// Reads the state in `directory` without taking it over (no lock, nothing written): for
/// tests and tools that look at what a daemon left behind.
pub fn read_directory(directory: &Path) -> Result<AgentState, StateError> {
    let file = directory.join(STATE_FILE);
    let journal = directory.join(JOURNAL_FILE);
    let snapshot = read_optional(&file)?;
    let journal_bytes = read_optional(&journal)?;
    load_from_bytes(snapshot.as_deref(), journal_bytes.as_deref())
        .map(|loaded| loaded.state)
        .map_err(|e| StateError::Unreadable {
            file,
            reason: e.to_string(),
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(seconds: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(1_700_000_000 + seconds)
    }

    #[test]
    fn timestamp_is_rfc3339_with_milliseconds_and_round_trips() {
        let stamp = Timestamp::from_system_time(UNIX_EPOCH + Duration::from_micros(1_500_123));
        assert_eq!(stamp.to_string(), "1970-01-01T00:00:01.500Z");
        let json = serde_json::to_string(&stamp).unwrap();
        assert_eq!(serde_json::from_str::<Timestamp>(&json).unwrap(), stamp);
        assert!(serde_json::from_str::<Timestamp>("\"yesterday\"").is_err());
    }

    #[test]
    fn timestamp_clamps_out_of_range_instants() {
        let before_epoch = UNIX_EPOCH - Duration::from_secs(5);
        assert_eq!(Timestamp::from_system_time(before_epoch).unix_millis(), 0);
        let far = Timestamp::from_unix_millis(u64::MAX);
        assert_eq!(far.to_string(), "9999-12-31T23:59:59.999Z");
    }

    #[test]
    fn sale_goes_from_intent_to_started_to_final() {
        let mut state = AgentState::default();
        state.record_sale_intent("m1", 1250, 1, at(0)).unwrap();
        assert_eq!(state.sales["m1"].stage, SaleStage::Intent);
        assert!(state.payments.is_empty());

        state.record_sale_started("m1", "p1", at(1)).unwrap();
        let payment = &state.payments["p1"];
        assert_eq!(payment.merchant_unique_code.as_deref(), Some("m1"));
        assert_eq!(payment.amount_minor, Some(1250));
        assert_eq!(payment.currency_id, Some(1));
        assert_eq!(payment.source, PaymentSource::Terminal);
        assert_eq!(payment.since, at(1).into());

        assert!(state.finish_payment("p1", PaymentOutcome::Succeeded, at(2)));
        assert!(state.payments.is_empty());
        assert_eq!(
            state.sales["m1"].stage,
            SaleStage::Final {
                payment_request_id: Some("p1".into()),
                outcome: PaymentOutcome::Succeeded,
                at: at(2).into()
            }
        );
        assert!(!state.finish_payment("p1", PaymentOutcome::Failed, at(3)));
    }

    #[test]
    fn repeated_sale_code_is_a_conflict_naming_the_stage() {
        let mut state = AgentState::default();
        state.record_sale_intent("m1", 1, 1, at(0)).unwrap();
        let error = state.record_sale_intent("m1", 1, 1, at(1)).unwrap_err();
        assert!(matches!(
            error,
            StateError::SaleConflict {
                stage: "an intent",
                ..
            }
        ));
        state.record_sale_started("m1", "p1", at(1)).unwrap();
        // The same answer again is no change; a different id is a conflict.
        state.record_sale_started("m1", "p1", at(2)).unwrap();
        assert!(state.record_sale_started("m1", "p2", at(2)).is_err());
        assert!(state.record_sale_started("unknown", "p3", at(2)).is_err());
    }

    #[test]
    fn only_an_intent_can_be_forgotten() {
        let mut state = AgentState::default();
        state.record_sale_intent("m1", 1, 1, at(0)).unwrap();
        state.forget_sale_intent("m1").unwrap();
        assert!(state.sales.is_empty());
        state.forget_sale_intent("m1").unwrap();
        state.record_sale_intent("m2", 1, 1, at(0)).unwrap();
        state.record_sale_started("m2", "p2", at(0)).unwrap();
        assert!(state.forget_sale_intent("m2").is_err());
        assert!(state.sales.contains_key("m2"));
    }

    #[test]
    fn cancel_request_keeps_the_first_reason() {
        let mut state = AgentState::default();
        assert!(state.track_payment("p1", PendingPayment::new(PaymentSource::Elsewhere, at(0))));
        assert!(!state.track_payment("p1", PendingPayment::new(PaymentSource::Recovered, at(9))));
        assert_eq!(state.payments["p1"].source, PaymentSource::Elsewhere);
        state
            .mark_cancel_requested("p1", CancelReason::Operator, at(1))
            .unwrap();
        state
            .mark_cancel_requested("p1", CancelReason::Shutdown, at(2))
            .unwrap();
        assert_eq!(
            state.payments["p1"].cancel_requested,
            Some(CancelRequest {
                reason: CancelReason::Operator,
                at: at(1).into()
            })
        );
        assert!(matches!(
            state.mark_cancel_requested("p9", CancelReason::Timeout, at(3)),
            Err(StateError::UnknownPayment(_))
        ));
    }

    #[test]
    fn rejected_sale_is_final_without_a_payment() {
        let mut state = AgentState::default();
        state.record_sale_intent("m1", 1, 1, at(0)).unwrap();
        state
            .finish_sale("m1", PaymentOutcome::Rejected, at(1))
            .unwrap();
        assert!(matches!(
            state.sales["m1"].stage,
            SaleStage::Final {
                payment_request_id: None,
                outcome: PaymentOutcome::Rejected,
                ..
            }
        ));
    }

    #[test]
    fn finishing_a_started_sale_ends_its_payment() {
        let mut state = AgentState::default();
        state.record_sale_intent("m1", 1, 1, at(0)).unwrap();
        state.record_sale_started("m1", "p1", at(0)).unwrap();
        state
            .finish_sale("m1", PaymentOutcome::Cancelled, at(1))
            .unwrap();
        assert!(state.payments.is_empty());
    }

    #[test]
    fn pruning_drops_old_and_excess_final_sales_but_never_intents_or_started() {
        let mut state = AgentState::default();
        let now = at(FINAL_SALE_RETENTION.as_secs() + 1_000_000);
        let old = at(0);
        state.record_sale_intent("old-intent", 1, 1, old).unwrap();
        state.record_sale_intent("old-started", 1, 1, old).unwrap();
        state.record_sale_started("old-started", "p", old).unwrap();
        state.record_sale_intent("old-final", 1, 1, old).unwrap();
        state
            .finish_sale("old-final", PaymentOutcome::Succeeded, old)
            .unwrap();
        for i in 0..MAX_FINAL_SALES + 5 {
            let code = format!("recent-{i:05}");
            let when = now - Duration::from_secs(1_000) + Duration::from_millis(i as u64);
            state.record_sale_intent(&code, 1, 1, when).unwrap();
            state
                .finish_sale(&code, PaymentOutcome::Succeeded, when)
                .unwrap();
        }
        state.prune_final_sales(now);
        assert!(state.sales.contains_key("old-intent"));
        assert!(state.sales.contains_key("old-started"));
        assert!(!state.sales.contains_key("old-final"));
        let finals = state
            .sales
            .values()
            .filter(|s| matches!(s.stage, SaleStage::Final { .. }))
            .count();
        assert_eq!(finals, MAX_FINAL_SALES);
        // The oldest went first.
        assert!(!state.sales.contains_key("recent-00004"));
        assert!(state.sales.contains_key("recent-00005"));
    }
}

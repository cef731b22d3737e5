//! Durable state (`shared/spec/agent.md` §2): the connection Id, every pending payment and the
//! merchant code → payment map that keeps sales idempotent across restarts. Money depends on it
//! surviving a crash at any instant, so every change is written to `state.json` atomically and
//! synced before the caller's side effect happens; a file that cannot be read stops the start
//! and is never replaced. `docs/state.md` describes the format and the recovery rules.

use std::collections::BTreeMap;
use std::fmt;
use std::fs::{File, OpenOptions};
use std::io::Write as _;
use std::os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use nix::fcntl::{Flock, FlockArg};
use serde::{Deserialize, Serialize};

/// The state file in the state directory.
pub const STATE_FILE: &str = "state.json";
/// The file a write goes to before it is renamed over [`STATE_FILE`].
pub const TEMP_FILE: &str = "state.json.tmp";
/// The file whose `flock` says which process owns the directory.
pub const LOCK_FILE: &str = "state.lock";
/// The format version this build reads and writes.
pub const FORMAT_VERSION: u32 = 1;
/// Final sales are kept this long for idempotency...
pub const FINAL_SALE_RETENTION: Duration = Duration::from_secs(24 * 60 * 60);
/// ...and at most this many (the newest): each write rewrites the whole file, on flash.
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
    /// RFC 3339, as `status --json` prints `since` (agent.md §4).
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

/// Who asked for a cancel (agent.md §2, §3; the `reason` of serial-link.md §3
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

/// Where a sale is (agent.md §2: intent before the side effect).
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

    /// Records a sale before its request leaves (agent.md §2). A code already known is a
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
        let Some(payment) = self.payments.remove(id) else {
            return false;
        };
        let code = payment.merchant_unique_code.or_else(|| {
            self.sales
                .iter()
                .find(|(_, sale)| {
                    matches!(&sale.stage, SaleStage::Started { payment_request_id } if payment_request_id == id)
                })
                .map(|(code, _)| code.clone())
        });
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
    pub fn prune_final_sales(&mut self, now: SystemTime) {
        let cutoff = Timestamp::from_system_time(
            now.checked_sub(FINAL_SALE_RETENTION).unwrap_or(UNIX_EPOCH),
        );
        self.sales.retain(|_, sale| match sale.stage {
            SaleStage::Final { at, .. } => at >= cutoff,
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
            }
        }
    }
}

/// The state directory, owned by this process (an exclusive `flock`), and the state in it.
/// Every change is written and synced before the method returns; when the write fails the
/// in-memory state stays as it was, so memory never claims what the disk does not hold.
pub struct StateStore {
    directory: PathBuf,
    file: PathBuf,
    state: AgentState,
    /// Changes applied by [`StateStore::defer`] and not written yet.
    dirty: bool,
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

impl StateStore {
    /// Opens the state directory (creating it, mode 0700, when missing), takes its lock and
    /// reads `state.json` if present. A file that cannot be read is an error naming it, and is
    /// left untouched. A leftover `state.json.tmp` (a crash during a write) is ignored.
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
        let state = read_state_file(&file)?.unwrap_or_default();
        Ok(Self {
            directory: directory.to_owned(),
            file,
            state,
            dirty: false,
            _lock: lock,
        })
    }

    pub fn directory(&self) -> &Path {
        &self.directory
    }

    /// The path of `state.json`.
    pub fn file(&self) -> &Path {
        &self.file
    }

    /// The whole state as last written.
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

    /// Applies `change` to a copy of the state, bounds the sales map, writes the result and
    /// only then makes it current: several changes, one write. Nothing is written when
    /// `change` fails or changes nothing.
    pub fn update<T>(
        &mut self,
        change: impl FnOnce(&mut AgentState) -> Result<T, StateError>,
    ) -> Result<T, StateError> {
        let mut next = self.state.clone();
        let value = change(&mut next)?;
        next.prune_final_sales(SystemTime::now());
        if next != self.state || self.dirty {
            write_state_file(&self.directory, &next)?;
            self.state = next;
            self.dirty = false;
        }
        Ok(value)
    }

    /// Applies `change` in memory only; the next write (any change, or [`StateStore::flush`])
    /// carries it. Only for changes whose loss a restart repairs by itself, such as the
    /// confirmation of a cancel (an unconfirmed cancel is sent again): the shutdown batches
    /// them to spare the flash.
    pub fn defer(&mut self, change: impl FnOnce(&mut AgentState)) {
        change(&mut self.state);
        self.dirty = true;
    }

    /// Writes what [`StateStore::defer`] changed, if anything.
    pub fn flush(&mut self) -> Result<(), StateError> {
        if self.dirty {
            self.state.prune_final_sales(SystemTime::now());
            write_state_file(&self.directory, &self.state)?;
            self.dirty = false;
        }
        Ok(())
    }

    pub fn set_connection_id(&mut self, id: Option<String>) -> Result<(), StateError> {
        self.update(|state| {
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
        self.update(|state| state.record_sale_intent(code, amount_minor, currency_id, at))
    }

    /// See [`AgentState::record_sale_started`].
    pub fn record_sale_started(
        &mut self,
        code: &str,
        payment_request_id: &str,
        at: SystemTime,
    ) -> Result<(), StateError> {
        self.update(|state| state.record_sale_started(code, payment_request_id, at))
    }

    /// See [`AgentState::forget_sale_intent`].
    pub fn forget_sale_intent(&mut self, code: &str) -> Result<(), StateError> {
        self.update(|state| state.forget_sale_intent(code))
    }

    /// See [`AgentState::track_payment`].
    pub fn track_payment(
        &mut self,
        payment_request_id: &str,
        payment: PendingPayment,
    ) -> Result<bool, StateError> {
        self.update(|state| Ok(state.track_payment(payment_request_id, payment)))
    }

    /// See [`AgentState::mark_cancel_requested`].
    pub fn mark_cancel_requested(
        &mut self,
        payment_request_id: &str,
        reason: CancelReason,
        at: SystemTime,
    ) -> Result<(), StateError> {
        self.update(|state| state.mark_cancel_requested(payment_request_id, reason, at))
    }

    /// See [`AgentState::mark_cancel_refused`].
    pub fn mark_cancel_refused(
        &mut self,
        payment_request_id: &str,
        message: &str,
        at: SystemTime,
    ) -> Result<bool, StateError> {
        self.update(|state| Ok(state.mark_cancel_refused(payment_request_id, message, at)))
    }

    /// See [`AgentState::finish_payment`].
    pub fn finish_payment(
        &mut self,
        payment_request_id: &str,
        outcome: PaymentOutcome,
        at: SystemTime,
    ) -> Result<bool, StateError> {
        self.update(|state| Ok(state.finish_payment(payment_request_id, outcome, at)))
    }

    /// See [`AgentState::finish_sale`].
    pub fn finish_sale(
        &mut self,
        code: &str,
        outcome: PaymentOutcome,
        at: SystemTime,
    ) -> Result<(), StateError> {
        self.update(|state| state.finish_sale(code, outcome, at))
    }
}

/// The connection Id in a state directory's `state.json`, read without taking the lock (the
/// running agent may hold it): what `check-config` needs to tell whether `run` has an Id.
pub fn stored_connection_id(directory: &Path) -> Result<Option<String>, StateError> {
    Ok(read_state_file(&directory.join(STATE_FILE))?.and_then(|state| state.connection_id))
}

/// Reads `state.json`: `Ok(None)` when there is none yet.
fn read_state_file(file: &Path) -> Result<Option<AgentState>, StateError> {
    let unreadable = |reason: String| StateError::Unreadable {
        file: file.to_owned(),
        reason,
    };
    let bytes = match std::fs::read(file) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(unreadable(e.to_string())),
    };
    #[derive(Deserialize)]
    struct Versioned {
        version: u64,
    }
    let versioned: Versioned = serde_json::from_slice(&bytes)
        .map_err(|e| unreadable(format!("not a pos-agent state file ({e})")))?;
    if versioned.version != u64::from(FORMAT_VERSION) {
        return Err(StateError::UnknownVersion {
            file: file.to_owned(),
            found: versioned.version,
        });
    }
    serde_json::from_slice(&bytes)
        .map(Some)
        .map_err(|e| unreadable(format!("invalid content ({e})")))
}

/// The write protocol of agent.md §2: write `state.json.tmp` (0600), fsync it, rename it over
/// `state.json`, fsync the directory.
fn write_state_file(directory: &Path, state: &AgentState) -> Result<(), StateError> {
    let file = directory.join(STATE_FILE);
    let temp = directory.join(TEMP_FILE);
    let write_error = |source| StateError::Write {
        file: file.clone(),
        source,
    };
    let mut bytes = serde_json::to_vec(state).map_err(|e| write_error(std::io::Error::other(e)))?;
    bytes.push(b'\n');
    // A leftover from a crash may have other permissions; a new file gets 0600.
    match std::fs::remove_file(&temp) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(write_error(e)),
        _ => {}
    }
    let mut out = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&temp)
        .map_err(write_error)?;
    out.write_all(&bytes).map_err(write_error)?;
    out.sync_all().map_err(write_error)?;
    drop(out);
    std::fs::rename(&temp, &file).map_err(write_error)?;
    File::open(directory)
        .and_then(|dir| dir.sync_all())
        .map_err(write_error)?;
    Ok(())
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

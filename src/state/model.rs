//! The model: what the agent must not forget (the connection Id, pending payments, sales by
//! merchant code) and the changes on it, in memory. No file I/O: [`super::StateStore`] writes it.

use std::collections::BTreeMap;
use std::fmt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::ids::PaymentRequestId;

use super::*;

/// The snapshot format version this build writes (2: a snapshot with a journal). Version 1
/// (`state.json` alone) is read and migrated.
pub const FORMAT_VERSION: u32 = 2;
/// Final sales are kept this long for idempotency...
pub(crate) const FINAL_SALE_RETENTION: Duration = Duration::from_secs(24 * 60 * 60);
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
    /// Every reason, in the order of the metrics' rows of cancels.
    pub(crate) const ALL: [Self; 5] = [
        Self::Operator,
        Self::Terminal,
        Self::Shutdown,
        Self::Timeout,
        Self::Abandoned,
    ];

    /// Its place in [`ALL`](Self::ALL): its row of counters in the metrics.
    pub(crate) fn index(self) -> usize {
        Self::ALL
            .iter()
            .position(|reason| *reason == self)
            .unwrap_or_default()
    }

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
pub struct SaleRecord {
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
    Started {
        payment_request_id: PaymentRequestId,
    },
    /// The outcome was still unknown when the sale's reply was due, and the terminal was told
    /// `api_unavailable`. Written before that reply leaves. The agent keeps looking the code up:
    /// a payment that turns up is tracked with a cancel (reason `abandoned`) asked for, and the
    /// sale ends `Final`/`Abandoned` when the cancel is confirmed or the code shown absent.
    Abandoned { at: Timestamp },
    /// Over; kept so a repeated code gets the same answer.
    Final {
        payment_request_id: Option<PaymentRequestId>,
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
    pub payments: BTreeMap<PaymentRequestId, PendingPayment>,
    /// Sales by merchant unique code.
    pub sales: BTreeMap<String, SaleRecord>,
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
            SaleRecord {
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
        payment_request_id: &PaymentRequestId,
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
            payment_request_id: payment_request_id.clone(),
        };
        let (amount_minor, currency_id) = (sale.amount_minor, sale.currency_id);
        let payment = self
            .payments
            .entry(payment_request_id.clone())
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
        payment_request_id: &PaymentRequestId,
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
            .entry(payment_request_id.clone())
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
    pub fn abandoned_sales(&self) -> impl Iterator<Item = (&str, &SaleRecord)> {
        self.sales
            .iter()
            .filter(|(_, sale)| matches!(sale.stage, SaleStage::Abandoned { .. }))
            .map(|(code, sale)| (code.as_str(), sale))
    }

    /// Tracks a payment that did not start as this agent's sale (`payment_started`, recovery).
    /// Returns false, changing nothing, when it is already pending.
    pub fn track_payment(&mut self, id: &PaymentRequestId, payment: PendingPayment) -> bool {
        if self.payments.contains_key(id) {
            return false;
        }
        self.payments.insert(id.clone(), payment);
        true
    }

    /// Marks a cancel as asked for, before the request leaves. The first request's reason and
    /// time are kept.
    pub fn mark_cancel_requested(
        &mut self,
        id: &PaymentRequestId,
        reason: CancelReason,
        at: SystemTime,
    ) -> Result<(), StateError> {
        let payment = self
            .payments
            .get_mut(id)
            .ok_or_else(|| StateError::UnknownPayment(id.to_string()))?;
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
    pub fn mark_cancel_refused(
        &mut self,
        id: &PaymentRequestId,
        message: &str,
        at: SystemTime,
    ) -> bool {
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
    pub fn finish_payment(
        &mut self,
        id: &PaymentRequestId,
        outcome: PaymentOutcome,
        at: SystemTime,
    ) -> bool {
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
                    payment_request_id: Some(id.clone()),
                    outcome,
                    at: at.into(),
                };
            }
        }
        true
    }

    /// The merchant code of the sale a pending payment belongs to, if any.
    pub fn sale_code_of(&self, id: &PaymentRequestId) -> Option<String> {
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

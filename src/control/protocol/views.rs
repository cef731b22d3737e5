//! What `status` and `pending` show of the agent: [`StatusReport`] and the views of pending
//! payments, abandoned sales, a rejection, the serial port and the state directory, built from
//! the agent's state, and [`rfc3339`], the one form of their timestamps.

use std::time::SystemTime;

use serde::{Deserialize, Serialize};

use super::vocabulary::{CancelReason, ConnectionStatus, TerminalLinkStatus};
use crate::outcome::AgentRejection;
use crate::state::{AgentState, SaleStage};

/// `status` (docs/operations.md (Operator commands): `status --json` prints this object).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StatusReport {
    /// The daemon's version (`CARGO_PKG_VERSION`).
    pub version: String,
    /// The git commit the daemon was built from (`build_info::COMMIT`); `unknown` from a daemon
    /// too old to say.
    #[serde(default = "unknown_commit")]
    pub commit: String,
    /// The payment API connection `Id`, when one is known.
    pub connection_id: Option<String>,
    pub connection: ConnectionStatus,
    /// With `connection: rejected`: the HTTP status and what the API said (no key values).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rejection: Option<RejectionView>,
    /// Why the last attempt to bring the connection up failed, while it is not up (a refused
    /// connection, a certificate refused, a clock problem); absent once connected.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connection_problem: Option<String>,
    pub terminal_link: TerminalLinkStatus,
    /// Who the terminal said it is (protocol version, model, firmware) when it last answered
    /// `agent_state` `ready`; null until a terminal did (docs/serial-protocol.md §3 "Versions").
    #[serde(default)]
    pub terminal: Option<crate::serial::TerminalIdentity>,
    /// The serial device behind the link: how often it was reopened, its last error.
    #[serde(default)]
    pub serial_port: SerialPortView,
    pub pending: Vec<PendingPaymentView>,
    /// Sales whose outcome was unknown when their reply was due, still being settled.
    #[serde(default)]
    pub abandoned: Vec<AbandonedSaleView>,
    /// When the terminal last sent a frame or an ACK, RFC 3339 in UTC; null: not since the
    /// agent started.
    #[serde(default)]
    pub terminal_last_answered: Option<String>,
    /// When the payment API last answered (an HTTP status below 500), RFC 3339 in UTC; null:
    /// not since the agent started.
    #[serde(default)]
    pub api_last_answered: Option<String>,
    /// The state directory's health (from a daemon too old to say: writable, nothing known).
    #[serde(default)]
    pub storage: StorageView,
    /// While the payment API's `Retry-After` holds: until when the agent sends it nothing
    /// (sales are refused at once, `api_unavailable`); absent otherwise (docs/payment-api.md,
    /// "Retry-After").
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_retry_after: Option<RetryAfterView>,
}

/// A wait the payment API asked for (`status`'s `api_retry_after`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RetryAfterView {
    /// When it ends, RFC 3339 in UTC.
    pub until: String,
    /// Whole seconds left, rounded up.
    pub seconds_left: u64,
    /// The answer that asked for it: 429 or 503.
    pub http_status: u16,
}

impl From<crate::paywall::Hold> for RetryAfterView {
    fn from(hold: crate::paywall::Hold) -> Self {
        let left = hold.remaining();
        RetryAfterView {
            until: rfc3339(hold.until_wall),
            seconds_left: left
                .as_secs()
                .saturating_add(u64::from(left.subsec_nanos() > 0)),
            http_status: hold.http_status,
        }
    }
}

/// The state directory (`status`'s `storage`): whether changes are being written, the latest
/// write error, and the free space left (docs/operations.md (Storage health)).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StorageView {
    pub directory: String,
    /// False while a write fails: sales and operator commands that change state are refused.
    pub writable: bool,
    /// The latest write error, kept after the recovery.
    #[serde(default)]
    pub last_error: Option<String>,
    /// When `last_error` happened, RFC 3339 in UTC.
    #[serde(default)]
    pub last_error_at: Option<String>,
    /// Bytes the agent may still write on the state's file system; null when unknown.
    #[serde(default)]
    pub free_bytes: Option<u64>,
    /// `free_bytes` is below the threshold (docs/operations.md (Storage health)).
    #[serde(default)]
    pub free_space_low: bool,
}

/// Free space is low below this many bytes, or below [`FREE_SPACE_LOW_PERCENT`] of the file
/// system, whichever is less: a snapshot of a busy terminal's state is some tens of KiB.
const FREE_SPACE_LOW_BYTES: u64 = 1024 * 1024;
const FREE_SPACE_LOW_PERCENT: u64 = 5;

impl Default for StorageView {
    fn default() -> Self {
        Self {
            directory: String::new(),
            writable: true,
            last_error: None,
            last_error_at: None,
            free_bytes: None,
            free_space_low: false,
        }
    }
}

impl StorageView {
    /// Whether `free` bytes of `total` is low.
    pub fn is_low(free: u64, total: u64) -> bool {
        free < FREE_SPACE_LOW_BYTES.min(total / 100 * FREE_SPACE_LOW_PERCENT)
    }
}

fn unknown_commit() -> String {
    "unknown".to_owned()
}

/// The serial port's history since the agent started (`status`'s `serial_port`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SerialPortView {
    /// Whether the device is open now (missing, unplugged or being reopened: not); `None` from
    /// a daemon too old to say.
    #[serde(default)]
    pub open: Option<bool>,
    /// Times the device was opened again after it had been open (unplug/replug, EIO, hang-up).
    pub reopens: u64,
    /// The latest failure (device lost or could not be opened), kept after recovery.
    #[serde(default)]
    pub last_error: Option<String>,
    /// When `last_error` happened, RFC 3339 in UTC.
    #[serde(default)]
    pub last_error_at: Option<String>,
}

impl From<crate::serial::PortStats> for SerialPortView {
    fn from(stats: crate::serial::PortStats) -> Self {
        let (last_error, last_error_at) = match stats.last_error {
            Some(error) => (Some(error.message), Some(rfc3339(error.at))),
            None => (None, None),
        };
        Self {
            open: None,
            reopens: stats.reopens,
            last_error,
            last_error_at,
        }
    }
}

/// A sale the terminal was told failed (`api_unavailable` at `sale_reply_deadline`) while its
/// outcome was unknown; the agent is still finding out whether the payment API created it, and
/// cancels it if so.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AbandonedSaleView {
    pub merchant_unique_code: String,
    pub amount_minor: Option<i64>,
    /// When the sale was asked for, RFC 3339 in UTC.
    pub since: String,
    /// When the terminal was told it failed, RFC 3339 in UTC.
    pub abandoned_at: String,
    /// The payment the API turned out to hold, being cancelled; absent while still looked up.
    #[serde(default)]
    pub payment_request_id: Option<String>,
}

/// Why the payment API refuses the agent (`connection: rejected`): its keys (HTTP 401/403) or
/// its base URL (HTTP 404).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RejectionView {
    pub http_status: u16,
    pub message: String,
}

/// One pending payment as operators see it (docs/operations.md (Operator commands): `pending --json` prints an array of
/// these).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PendingPaymentView {
    pub payment_request_id: String,
    pub merchant_unique_code: Option<String>,
    /// The amount in minor units of the currency (kuruş, cents).
    pub amount_minor: Option<i64>,
    /// When the payment became pending, RFC 3339 in UTC (see [`rfc3339`]).
    pub since: String,
    /// A cancel was asked for and is not confirmed yet.
    pub cancel_requested: bool,
    /// Why the cancel was asked for, when one was.
    #[serde(default)]
    pub cancel_reason: Option<CancelReason>,
    /// The API refused the last cancel with this message; the payment stays pending and its
    /// cancel is not sent again unless an operator (or the terminal) asks for one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cancel_refused: Option<String>,
}

impl PendingPaymentView {
    /// The pending payments of `state`, as the control socket shows them.
    pub fn all(state: &AgentState) -> Vec<Self> {
        state
            .payments
            .iter()
            .map(|(id, p)| Self {
                payment_request_id: id.to_string(),
                merchant_unique_code: p.merchant_unique_code.clone(),
                amount_minor: p.amount_minor.and_then(|a| i64::try_from(a).ok()),
                since: rfc3339(p.since.to_system_time()),
                cancel_requested: p.cancel_requested.is_some(),
                cancel_reason: p.cancel_requested.map(|c| c.reason.into()),
                cancel_refused: p.cancel_refused.as_ref().map(|r| r.message.clone()),
            })
            .collect()
    }
}

impl AbandonedSaleView {
    /// The abandoned sales of `state`, each with the payment found for it, if any.
    pub fn all(state: &AgentState) -> Vec<Self> {
        state
            .abandoned_sales()
            .map(|(code, sale)| Self {
                merchant_unique_code: code.to_owned(),
                amount_minor: i64::try_from(sale.amount_minor).ok(),
                since: rfc3339(sale.since.to_system_time()),
                abandoned_at: match sale.stage {
                    SaleStage::Abandoned { at } => rfc3339(at.to_system_time()),
                    _ => String::new(),
                },
                payment_request_id: state
                    .payments
                    .iter()
                    .find(|(_, p)| p.merchant_unique_code.as_deref() == Some(code))
                    .map(|(id, _)| id.to_string()),
            })
            .collect()
    }
}

impl From<AgentRejection> for RejectionView {
    fn from(rejection: AgentRejection) -> Self {
        Self {
            http_status: rejection.http_status,
            message: rejection.message,
        }
    }
}

/// `since` timestamps: RFC 3339, UTC, whole seconds (`2026-11-21T13:16:40Z`).
pub fn rfc3339(time: SystemTime) -> String {
    humantime::format_rfc3339_seconds(time).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_prints_utc_seconds() {
        let t = SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1_795_000_000);
        assert_eq!(rfc3339(t), "2026-11-18T11:06:40Z");
    }
}

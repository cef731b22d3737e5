//! The control protocol's messages: what an operator command asks the daemon and what the daemon
//! answers (docs/operations.md (Operator commands); the wire format is documented in `docs/operations.md`).
//!
//! One request is one JSON object on one line; one response is one JSON object on one line.
//! Requests are checked strictly (unknown commands and unknown or missing fields are refused),
//! because a field silently ignored by an older daemon could change what an operator meant.
//! Nothing secret is part of any message: the daemon holds the API keys.

use std::fmt;
use std::time::SystemTime;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::outcome::{AgentRejection, ConnectionState, Refusal};
use crate::state::{AgentState, SaleStage};

/// What an operator asks the running daemon (docs/operations.md (Operator commands)).
///
/// On the wire: `{"command":"<name>", ...fields}`; see [`ControlRequest::command_name`] for the
/// names and `docs/operations.md` for each command's fields.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "WireRequest", into = "WireRequest")]
pub enum ControlRequest {
    /// `status`: connection, terminal link, pending payments, version.
    Status,
    /// `pending`: the pending payments.
    Pending,
    /// `cancel`: async cancel of one pending payment or of all of them, and tell the terminal.
    Cancel(CancelTarget),
    /// `disconnect`: cancel pending payments, then deactivate the connection; the daemon keeps
    /// running and refuses sales.
    Disconnect,
    /// `reconnect`: re-activate the connection.
    Reconnect,
    /// `apm_unlink`: `POST /api/paywall/apm/unlink`.
    ApmUnlink { phone: String, account: ApmAccount },
    /// `masterpass_unlink`: `DELETE /api/paywall/masterpass/merchant/unlink`.
    MasterpassUnlink { session_id: Uuid },
    /// `checkout_deactivate`: `PUT /api/paywall/checkout/passive`.
    CheckoutDeactivate { id: i64 },
    /// `metrics`: the counters and gauges in the OpenMetrics text format.
    Metrics,
    /// `restart` with `keep_pending`: the daemon stops without cancelling its pending payments
    /// or deactivating the connection, and exits with the status that makes the unit start it
    /// again, or (`start: false`) leave it stopped.
    RestartKeepingPending { start: bool },
}

/// Which pending payments a `cancel` is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CancelTarget {
    /// The payment with this `PaymentRequestId`.
    One(Uuid),
    /// Every payment pending here.
    All,
}

/// How an APM unlink names the account: exactly one of `ApmKey` and `ApmConnectionId`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ApmAccount {
    Key(String),
    ConnectionId(i64),
}

impl ControlRequest {
    /// The command's name on the wire (`"status"`, `"apm_unlink"`, ...).
    pub fn command_name(&self) -> &'static str {
        match self {
            Self::Status => "status",
            Self::Pending => "pending",
            Self::Cancel(_) => "cancel",
            Self::Disconnect => "disconnect",
            Self::Reconnect => "reconnect",
            Self::ApmUnlink { .. } => "apm_unlink",
            Self::MasterpassUnlink { .. } => "masterpass_unlink",
            Self::CheckoutDeactivate { .. } => "checkout_deactivate",
            Self::Metrics => "metrics",
            Self::RestartKeepingPending { .. } => "restart",
        }
    }

    /// Reads one request line. The error is the `invalid_request` answer to send back.
    pub fn from_json(line: &[u8]) -> Result<Self, ControlError> {
        let text = std::str::from_utf8(line).map_err(|_| {
            ControlError::new(
                ControlErrorKind::InvalidRequest,
                "the request is not UTF-8 text; send one JSON object on one line",
            )
        })?;
        serde_json::from_str(text).map_err(|e| {
            ControlError::new(
                ControlErrorKind::InvalidRequest,
                format!("cannot read the request: {e}; send one JSON object such as {{\"command\":\"status\"}}"),
            )
        })
    }
}

/// Every field any request can carry; which ones a command takes is checked in `try_from`.
#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct WireRequest {
    command: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    payment_request_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    all: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    phone: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    apm_key: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    apm_connection_id: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    session_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    id: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    keep_pending: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    start: Option<bool>,
}

impl WireRequest {
    /// The names of the fields that are set, besides `command`.
    fn present_fields(&self) -> Vec<&'static str> {
        [
            ("payment_request_id", self.payment_request_id.is_some()),
            ("all", self.all.is_some()),
            ("phone", self.phone.is_some()),
            ("apm_key", self.apm_key.is_some()),
            ("apm_connection_id", self.apm_connection_id.is_some()),
            ("session_id", self.session_id.is_some()),
            ("id", self.id.is_some()),
            ("keep_pending", self.keep_pending.is_some()),
            ("start", self.start.is_some()),
        ]
        .into_iter()
        .filter_map(|(name, set)| set.then_some(name))
        .collect()
    }

    /// Refuses fields the command does not take.
    fn only(&self, allowed: &[&str]) -> Result<(), String> {
        let extra: Vec<_> = self
            .present_fields()
            .into_iter()
            .filter(|f| !allowed.contains(f))
            .collect();
        if extra.is_empty() {
            Ok(())
        } else {
            Err(format!(
                "`{}` does not take the field(s) {}",
                self.command,
                extra.join(", ")
            ))
        }
    }
}

/// An unset field the command needs.
fn required<T>(value: Option<T>, command: &str, field: &str) -> Result<T, String> {
    value.ok_or_else(|| format!("`{command}` needs the field `{field}`"))
}

fn guid(text: &str, field: &str) -> Result<Uuid, String> {
    Uuid::parse_str(text).map_err(|_| format!("`{field}` must be a GUID, got {text:?}"))
}

/// A required text field: present, not blank, no control characters, not absurdly long.
fn text_field(value: Option<String>, command: &str, field: &str) -> Result<String, String> {
    let value = required(value, command, field)?;
    if value.trim().is_empty() {
        return Err(format!("`{field}` must not be empty"));
    }
    if value.chars().any(char::is_control) {
        return Err(format!("`{field}` must not contain control characters"));
    }
    if value.len() > MAX_TEXT_FIELD_BYTES {
        return Err(format!(
            "`{field}` is longer than {MAX_TEXT_FIELD_BYTES} bytes"
        ));
    }
    Ok(value)
}

/// Longest `phone` or `apm_key` accepted: far above any real value, well below the line limit.
const MAX_TEXT_FIELD_BYTES: usize = 256;

fn positive(value: i64, field: &str) -> Result<i64, String> {
    if value > 0 {
        Ok(value)
    } else {
        Err(format!("`{field}` must be a positive number, got {value}"))
    }
}

impl TryFrom<WireRequest> for ControlRequest {
    type Error = String;

    fn try_from(wire: WireRequest) -> Result<Self, String> {
        let command = wire.command.clone();
        let c = command.as_str();
        match c {
            "status" => wire.only(&[]).map(|()| Self::Status),
            "pending" => wire.only(&[]).map(|()| Self::Pending),
            "disconnect" => wire.only(&[]).map(|()| Self::Disconnect),
            "reconnect" => wire.only(&[]).map(|()| Self::Reconnect),
            "metrics" => wire.only(&[]).map(|()| Self::Metrics),
            "cancel" => {
                wire.only(&["payment_request_id", "all"])?;
                match (wire.payment_request_id, wire.all) {
                    (Some(id), None | Some(false)) => Ok(Self::Cancel(CancelTarget::One(guid(
                        &id,
                        "payment_request_id",
                    )?))),
                    (None, Some(true)) => Ok(Self::Cancel(CancelTarget::All)),
                    (Some(_), Some(true)) => {
                        Err("`cancel` takes either `payment_request_id` or `all`, not both".into())
                    }
                    (None, _) => {
                        Err("`cancel` needs `payment_request_id` or `\"all\": true`".into())
                    }
                }
            }
            "apm_unlink" => {
                wire.only(&["phone", "apm_key", "apm_connection_id"])?;
                let phone = text_field(wire.phone, c, "phone")?;
                let account =
                    match (wire.apm_key, wire.apm_connection_id) {
                        (Some(key), None) => ApmAccount::Key(text_field(Some(key), c, "apm_key")?),
                        (None, Some(id)) => {
                            ApmAccount::ConnectionId(positive(id, "apm_connection_id")?)
                        }
                        _ => return Err(
                            "`apm_unlink` needs exactly one of `apm_key` and `apm_connection_id`"
                                .into(),
                        ),
                    };
                Ok(Self::ApmUnlink { phone, account })
            }
            "masterpass_unlink" => {
                wire.only(&["session_id"])?;
                let session_id = required(wire.session_id, c, "session_id")?;
                Ok(Self::MasterpassUnlink {
                    session_id: guid(&session_id, "session_id")?,
                })
            }
            "checkout_deactivate" => {
                wire.only(&["id"])?;
                Ok(Self::CheckoutDeactivate {
                    id: positive(required(wire.id, c, "id")?, "id")?,
                })
            }
            "restart" => {
                wire.only(&["keep_pending", "start"])?;
                match wire.keep_pending {
                    Some(true) => Ok(Self::RestartKeepingPending {
                        start: wire.start != Some(false),
                    }),
                    // Only the restart that keeps them goes through the socket: the one that
                    // cancels is systemd's (SIGTERM).
                    _ => Err(
                        "`restart` needs `\"keep_pending\": true`; to restart cancelling \
                        the pending payments, use `systemctl restart pos-agent`"
                            .into(),
                    ),
                }
            }
            other => Err(format!(
                "unknown command {other:?}; the commands are status, pending, cancel, disconnect, \
                 reconnect, apm_unlink, masterpass_unlink, checkout_deactivate, metrics, \
                 restart"
            )),
        }
    }
}

impl From<ControlRequest> for WireRequest {
    fn from(request: ControlRequest) -> Self {
        let mut wire = WireRequest {
            command: request.command_name().to_owned(),
            ..WireRequest::default()
        };
        match request {
            ControlRequest::Status
            | ControlRequest::Pending
            | ControlRequest::Disconnect
            | ControlRequest::Reconnect
            | ControlRequest::Metrics => {}
            ControlRequest::Cancel(CancelTarget::One(id)) => {
                wire.payment_request_id = Some(id.to_string())
            }
            ControlRequest::Cancel(CancelTarget::All) => wire.all = Some(true),
            ControlRequest::ApmUnlink { phone, account } => {
                wire.phone = Some(phone);
                match account {
                    ApmAccount::Key(key) => wire.apm_key = Some(key),
                    ApmAccount::ConnectionId(id) => wire.apm_connection_id = Some(id),
                }
            }
            ControlRequest::MasterpassUnlink { session_id } => {
                wire.session_id = Some(session_id.to_string())
            }
            ControlRequest::CheckoutDeactivate { id } => wire.id = Some(id),
            ControlRequest::RestartKeepingPending { start } => {
                wire.keep_pending = Some(true);
                wire.start = (!start).then_some(false);
            }
        }
        wire
    }
}

/// The daemon's answer to one request: the command's result or an error.
///
/// On the wire: `{"ok":true,"command":"<name>","result":<payload>}` or
/// `{"ok":false,"error":{"kind":...,"message":...,"client_message":...,"error_code":...}}`.
#[derive(Debug, Clone, PartialEq)]
pub struct ControlResponse {
    pub outcome: Result<ControlReply, ControlError>,
}

impl ControlResponse {
    pub fn ok(reply: ControlReply) -> Self {
        Self { outcome: Ok(reply) }
    }

    pub fn error(error: ControlError) -> Self {
        Self {
            outcome: Err(error),
        }
    }

    /// The response as one JSON line, newline included.
    pub fn to_line(&self) -> Vec<u8> {
        let mut line = serde_json::to_vec(self).unwrap_or_else(|e| {
            // Serialising these plain types cannot fail; if it ever did, still answer.
            format!(
                r#"{{"ok":false,"error":{{"kind":"internal","message":"cannot encode the answer: {}"}}}}"#,
                e.to_string().replace(['"', '\\'], "'")
            )
            .into_bytes()
        });
        line.push(b'\n');
        line
    }
}

impl From<ControlReply> for ControlResponse {
    fn from(reply: ControlReply) -> Self {
        Self::ok(reply)
    }
}

impl From<ControlError> for ControlResponse {
    fn from(error: ControlError) -> Self {
        Self::error(error)
    }
}

#[derive(Serialize)]
struct WireResponseOut<'a> {
    ok: bool,
    #[serde(flatten, skip_serializing_if = "Option::is_none")]
    reply: Option<&'a ControlReply>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<&'a ControlError>,
}

/// Responses are read leniently (unknown fields ignored) so that an older client still reads a
/// newer daemon's answer.
#[derive(Deserialize)]
struct WireResponseIn {
    ok: bool,
    #[serde(default)]
    command: Option<String>,
    #[serde(default)]
    result: Option<serde_json::Value>,
    #[serde(default)]
    error: Option<ControlError>,
}

impl Serialize for ControlResponse {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let (reply, error) = match &self.outcome {
            Ok(reply) => (Some(reply), None),
            Err(error) => (None, Some(error)),
        };
        WireResponseOut {
            ok: reply.is_some(),
            reply,
            error,
        }
        .serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for ControlResponse {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        use serde::de::Error;
        let wire = WireResponseIn::deserialize(deserializer)?;
        if wire.ok {
            let command = wire
                .command
                .ok_or_else(|| D::Error::missing_field("command"))?;
            let result = wire.result.unwrap_or(serde_json::Value::Null);
            let reply = serde_json::from_value(serde_json::json!({
                "command": command,
                "result": result,
            }))
            .map_err(D::Error::custom)?;
            Ok(Self::ok(reply))
        } else {
            let error = wire.error.ok_or_else(|| D::Error::missing_field("error"))?;
            Ok(Self::error(error))
        }
    }
}

/// A successful command's result, named like the command it answers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "command", content = "result", rename_all = "snake_case")]
pub enum ControlReply {
    Status(Box<StatusReport>),
    Pending(PendingReport),
    Cancel(CancelReport),
    Disconnect(DisconnectReport),
    Reconnect(ConnectionReport),
    ApmUnlink(UnlinkReport),
    MasterpassUnlink(UnlinkReport),
    CheckoutDeactivate(UnlinkReport),
    /// `metrics`: the exposition in the OpenMetrics text format, ending with `# EOF`, as one
    /// JSON string (a plain string costs the terminal's binary less than a wrapping object).
    Metrics(String),
    /// `restart` with `keep_pending`: what the next process takes over, sent once the daemon
    /// has stopped its work and synced its state, right before it exits.
    Restart(PendingReport),
}

impl ControlReply {
    /// The name of the command this answers (as in [`ControlRequest::command_name`]).
    pub fn command_name(&self) -> &'static str {
        match self {
            Self::Status(_) => "status",
            Self::Pending(_) => "pending",
            Self::Cancel(_) => "cancel",
            Self::Disconnect(_) => "disconnect",
            Self::Reconnect(_) => "reconnect",
            Self::ApmUnlink(_) => "apm_unlink",
            Self::MasterpassUnlink(_) => "masterpass_unlink",
            Self::CheckoutDeactivate(_) => "checkout_deactivate",
            Self::Metrics(_) => "metrics",
            Self::Restart(_) => "restart",
        }
    }
}

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
    pub connection: ConnectionState,
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
pub const FREE_SPACE_LOW_BYTES: u64 = 1024 * 1024;
pub const FREE_SPACE_LOW_PERCENT: u64 = 5;

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

/// `pending`: the pending payments and, apart, the abandoned sales still being settled.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct PendingReport {
    pub pending: Vec<PendingPaymentView>,
    #[serde(default)]
    pub abandoned: Vec<AbandonedSaleView>,
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

/// The state of the serial link to the terminal.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TerminalLinkStatus {
    Up,
    Down,
}

impl fmt::Display for TerminalLinkStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Up => "up",
            Self::Down => "down",
        })
    }
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
                payment_request_id: id.clone(),
                merchant_unique_code: p.merchant_unique_code.clone(),
                amount_minor: p.amount_minor.and_then(|a| i64::try_from(a).ok()),
                since: rfc3339(p.since.to_system_time()),
                cancel_requested: p.cancel_requested.is_some(),
                cancel_reason: p.cancel_requested.map(|c| c.reason),
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
                    .map(|(id, _)| id.clone()),
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

/// Why a payment is being cancelled: one definition for state, control and the serial link.
pub use crate::state::CancelReason;

/// `since` timestamps: RFC 3339, UTC, whole seconds (`2026-11-21T13:16:40Z`).
pub fn rfc3339(time: SystemTime) -> String {
    humantime::format_rfc3339_seconds(time).to_string()
}

/// `cancel`: what was cancelled and, for `--all`, what could not be.
///
/// A single-payment cancel that fails is answered with an error instead, so `failed` is empty
/// for it.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct CancelReport {
    /// `PaymentRequestId`s whose cancel the payment API confirmed.
    pub cancelled: Vec<String>,
    #[serde(default)]
    pub failed: Vec<CancelFailure>,
}

/// One payment a `cancel --all` or `disconnect` could not cancel, and why.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CancelFailure {
    pub payment_request_id: String,
    pub error: ControlError,
}

/// `disconnect`: the payments cancelled first, then the connection's new state.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DisconnectReport {
    pub connection_id: Option<String>,
    pub connection: ConnectionState,
    pub cancelled: Vec<String>,
    #[serde(default)]
    pub failed: Vec<CancelFailure>,
}

/// `reconnect`: the connection and its new state.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ConnectionReport {
    pub connection_id: Option<String>,
    pub connection: ConnectionState,
}

/// `apm_unlink`, `masterpass_unlink`, `checkout_deactivate`: what the payment API said.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct UnlinkReport {
    /// The API's `Message`, when it gave a non-empty one.
    #[serde(default)]
    pub message: Option<String>,
    /// Masterpass only: `Body.Masterpass.Result.RetrievalReferenceNumber`, when present.
    #[serde(default)]
    pub retrieval_reference_number: Option<String>,
}

/// Why a request failed. `kind` decides the command's exit code (see `docs/operations.md`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ControlError {
    pub kind: ControlErrorKind,
    /// For `api_rejected` the API's `Message`; else the daemon's explanation.
    pub message: String,
    /// For `api_rejected` the API's `ClientMessage`, when it gave one.
    #[serde(default)]
    pub client_message: Option<String>,
    /// For `api_rejected` the API's `ErrorCode`, when it gave one.
    #[serde(default)]
    pub error_code: Option<i64>,
}

impl ControlError {
    pub fn new(kind: ControlErrorKind, message: impl Into<String>) -> Self {
        Self {
            kind,
            message: message.into(),
            client_message: None,
            error_code: None,
        }
    }

    /// The payment API refused the request (`Failed`, `ErrorCode` ≠ 0, ...).
    pub fn api_rejected(
        message: impl Into<String>,
        client_message: Option<String>,
        error_code: Option<i64>,
    ) -> Self {
        Self {
            kind: ControlErrorKind::ApiRejected,
            message: message.into(),
            client_message,
            error_code,
        }
    }

    /// The error an operator's command gets for a request the agent refused.
    pub fn refused(refusal: &Refusal) -> Self {
        match refusal {
            Refusal::ApiRejected {
                message,
                client_message,
                error_code,
            } => Self::api_rejected(message.clone(), client_message.clone(), *error_code),
            Refusal::AgentRejected(rejection) => {
                Self::api_rejected(rejection.message.clone(), None, None)
            }
            other => {
                let kind = match other {
                    Refusal::InvalidRequest(_) => ControlErrorKind::InvalidRequest,
                    Refusal::Busy => ControlErrorKind::Busy,
                    Refusal::NotConnected => ControlErrorKind::NotConnected,
                    Refusal::NotFound(_) => ControlErrorKind::NotFound,
                    Refusal::ApiUnavailable { .. } => ControlErrorKind::ApiUnavailable,
                    Refusal::ApiRejected { .. }
                    | Refusal::AgentRejected(_)
                    | Refusal::Internal(_) => ControlErrorKind::Internal,
                };
                Self::new(kind, other.to_string())
            }
        }
    }
}

impl fmt::Display for ControlError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.kind.describe(), self.message)?;
        if let Some(client_message) = &self.client_message {
            write!(f, " (client message: {client_message})")?;
        }
        if let Some(code) = self.error_code {
            write!(f, " (error code {code})")?;
        }
        Ok(())
    }
}

impl std::error::Error for ControlError {}

/// The classes of failure an operator's script can act on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ControlErrorKind {
    /// The payment API refused the request; `message`/`client_message`/`error_code` are its own.
    ApiRejected,
    /// The payment API could not be reached (after the retries); try again later.
    ApiUnavailable,
    /// The payment named is not pending here.
    NotFound,
    /// The command needs the API connection, which is not up (`disconnect`ed or connecting).
    NotConnected,
    /// The daemon cannot take the request now: it is stopping, or too many control connections
    /// are open.
    Busy,
    /// The request could not be read or is not a valid command.
    InvalidRequest,
    /// Anything else that went wrong inside the daemon.
    Internal,
}

impl ControlErrorKind {
    /// A few words for people, used before the message.
    pub fn describe(self) -> &'static str {
        match self {
            Self::ApiRejected => "the payment API refused",
            Self::ApiUnavailable => "the payment API could not be reached (try again later)",
            Self::NotFound => "not found",
            Self::NotConnected => "not connected",
            Self::Busy => "the daemon is busy (try again later)",
            Self::InvalidRequest => "invalid request",
            Self::Internal => "internal error",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn parse(value: serde_json::Value) -> Result<ControlRequest, ControlError> {
        ControlRequest::from_json(value.to_string().as_bytes())
    }

    fn refusal(value: serde_json::Value) -> String {
        let error = parse(value).unwrap_err();
        assert_eq!(error.kind, ControlErrorKind::InvalidRequest);
        error.message
    }

    const ID: &str = "7cc7c8e8-9d92-41b6-9378-e9ecef5a7812";

    #[test]
    fn every_request_round_trips_through_its_documented_wire_shape() {
        let cases = [
            (ControlRequest::Status, json!({"command":"status"})),
            (ControlRequest::Pending, json!({"command":"pending"})),
            (
                ControlRequest::Cancel(CancelTarget::One(ID.parse().unwrap())),
                json!({"command":"cancel","payment_request_id":ID}),
            ),
            (
                ControlRequest::Cancel(CancelTarget::All),
                json!({"command":"cancel","all":true}),
            ),
            (ControlRequest::Disconnect, json!({"command":"disconnect"})),
            (ControlRequest::Reconnect, json!({"command":"reconnect"})),
            (ControlRequest::Metrics, json!({"command":"metrics"})),
            (
                ControlRequest::ApmUnlink {
                    phone: "905342979639".into(),
                    account: ApmAccount::Key("Masterpass_IFrame".into()),
                },
                json!({"command":"apm_unlink","phone":"905342979639","apm_key":"Masterpass_IFrame"}),
            ),
            (
                ControlRequest::ApmUnlink {
                    phone: "905342979639".into(),
                    account: ApmAccount::ConnectionId(42),
                },
                json!({"command":"apm_unlink","phone":"905342979639","apm_connection_id":42}),
            ),
            (
                ControlRequest::MasterpassUnlink {
                    session_id: "2193433e-f36b-1410-825e-001264113a90".parse().unwrap(),
                },
                json!({"command":"masterpass_unlink","session_id":"2193433e-f36b-1410-825e-001264113a90"}),
            ),
            (
                ControlRequest::CheckoutDeactivate { id: 205334385 },
                json!({"command":"checkout_deactivate","id":205334385}),
            ),
            (
                ControlRequest::RestartKeepingPending { start: true },
                json!({"command":"restart","keep_pending":true}),
            ),
            (
                ControlRequest::RestartKeepingPending { start: false },
                json!({"command":"restart","keep_pending":true,"start":false}),
            ),
        ];
        for (request, wire) in cases {
            assert_eq!(serde_json::to_value(&request).unwrap(), wire);
            assert_eq!(parse(wire).unwrap(), request);
        }
    }

    #[test]
    fn explicit_nulls_read_like_absent_fields() {
        let request = parse(
            json!({"command":"apm_unlink","phone":"905","apm_key":null,"apm_connection_id":7}),
        )
        .unwrap();
        assert_eq!(
            request,
            ControlRequest::ApmUnlink {
                phone: "905".into(),
                account: ApmAccount::ConnectionId(7)
            }
        );
        assert_eq!(
            parse(json!({"command":"cancel","payment_request_id":ID,"all":false})).unwrap(),
            ControlRequest::Cancel(CancelTarget::One(ID.parse().unwrap()))
        );
    }

    #[test]
    fn unknown_commands_and_fields_are_refused_with_a_message_naming_them() {
        assert!(refusal(json!({"command":"reboot"})).contains("\"reboot\""));
        assert!(refusal(json!({"command":"status","id":1})).contains("id"));
        assert!(refusal(json!({"command":"status","dry_run":true})).contains("dry_run"));
        assert!(refusal(json!({"no_command":1})).contains("command"));
    }

    #[test]
    fn cancel_needs_exactly_one_target_and_a_guid() {
        assert!(refusal(json!({"command":"cancel"})).contains("payment_request_id"));
        assert!(
            refusal(json!({"command":"cancel","payment_request_id":ID,"all":true}))
                .contains("not both")
        );
        assert!(refusal(json!({"command":"cancel","all":false})).contains("all"));
        assert!(
            refusal(json!({"command":"cancel","payment_request_id":"12; rm -rf"})).contains("GUID")
        );
    }

    #[test]
    fn apm_unlink_needs_a_phone_and_exactly_one_account_reference() {
        assert!(refusal(json!({"command":"apm_unlink","apm_key":"k"})).contains("phone"));
        assert!(refusal(json!({"command":"apm_unlink","phone":"9"})).contains("exactly one"));
        assert!(refusal(
            json!({"command":"apm_unlink","phone":"9","apm_key":"k","apm_connection_id":1})
        )
        .contains("exactly one"));
        assert!(
            refusal(json!({"command":"apm_unlink","phone":"  ","apm_key":"k"})).contains("empty")
        );
        assert!(
            refusal(json!({"command":"apm_unlink","phone":"9\n","apm_key":"k"}))
                .contains("control")
        );
        assert!(
            refusal(json!({"command":"apm_unlink","phone":"9","apm_connection_id":0}))
                .contains("positive")
        );
    }

    #[test]
    fn a_restart_through_the_socket_only_keeps_the_pending_payments() {
        for wire in [
            json!({"command":"restart"}),
            json!({"command":"restart","keep_pending":false}),
            json!({"command":"restart","keep_pending":null,"start":false}),
        ] {
            let message = refusal(wire);
            assert!(message.contains("keep_pending"), "{message}");
            assert!(message.contains("systemctl restart pos-agent"), "{message}");
        }
        assert!(refusal(json!({"command":"restart","keep_pending":"yes"})).contains("bool"));
        assert!(
            refusal(json!({"command":"restart","keep_pending":true,"start":0})).contains("bool")
        );
        assert!(
            refusal(json!({"command":"restart","keep_pending":true,"all":true})).contains("all")
        );
        assert!(refusal(json!({"command":"stop","keep_pending":true})).contains("\"stop\""));
        assert_eq!(
            parse(json!({"command":"restart","keep_pending":true,"start":true})).unwrap(),
            ControlRequest::RestartKeepingPending { start: true }
        );
    }

    #[test]
    fn masterpass_and_checkout_fields_are_checked() {
        assert!(refusal(json!({"command":"masterpass_unlink","session_id":"x"})).contains("GUID"));
        assert!(refusal(json!({"command":"masterpass_unlink"})).contains("session_id"));
        assert!(refusal(json!({"command":"checkout_deactivate","id":-3})).contains("positive"));
        assert!(refusal(json!({"command":"checkout_deactivate","id":"3"})).contains("id"));
    }

    #[test]
    fn garbage_is_an_invalid_request_not_a_panic() {
        for bytes in [
            &b"\xff\xfe{"[..],
            b"",
            b"{",
            b"[]",
            b"null",
            b"{\"command\":5}",
        ] {
            let error = ControlRequest::from_json(bytes).unwrap_err();
            assert_eq!(error.kind, ControlErrorKind::InvalidRequest, "{bytes:?}");
        }
    }

    fn sample_status() -> StatusReport {
        StatusReport {
            version: "0.1.0".into(),
            commit: "0123456789ab".into(),
            connection_id: Some("70b2190b-2f1e-4a8e-9d59-0d1f1c7b1a11".into()),
            connection: ConnectionState::Connected,
            rejection: None,
            connection_problem: None,
            terminal_link: TerminalLinkStatus::Up,
            terminal: None,
            serial_port: SerialPortView {
                open: Some(false),
                reopens: 2,
                last_error: Some("/dev/ttyUSB0 lost: Input/output error (os error 5)".into()),
                last_error_at: Some("2026-11-21T13:02:11Z".into()),
            },
            pending: vec![PendingPaymentView {
                payment_request_id: ID.into(),
                merchant_unique_code: None,
                amount_minor: Some(1250),
                since: "2026-11-21T13:16:40Z".into(),
                cancel_requested: true,
                cancel_reason: Some(CancelReason::Operator),
                cancel_refused: None,
            }],
            abandoned: vec![AbandonedSaleView {
                merchant_unique_code: "5b0e3f8e-6f43-4c1e-9d0a-3f3c2a1b4d5e".into(),
                amount_minor: Some(990),
                since: "2026-11-21T13:10:00Z".into(),
                abandoned_at: "2026-11-21T13:10:20Z".into(),
                payment_request_id: None,
            }],
            terminal_last_answered: Some("2026-11-21T13:17:05Z".into()),
            api_last_answered: None,
            storage: StorageView::default(),
            api_retry_after: None,
        }
    }

    #[test]
    fn a_status_answer_has_the_fields_agent_md_names() {
        let response = ControlResponse::ok(ControlReply::Status(Box::new(sample_status())));
        let wire: serde_json::Value = serde_json::from_slice(&response.to_line()).unwrap();
        assert_eq!(
            wire,
            json!({
                "ok": true,
                "command": "status",
                "result": {
                    "version": "0.1.0",
                    "commit": "0123456789ab",
                    "connection_id": "70b2190b-2f1e-4a8e-9d59-0d1f1c7b1a11",
                    "connection": "connected",
                    "terminal_link": "up",
                    "terminal": null,
                    "serial_port": {
                        "open": false,
                        "reopens": 2,
                        "last_error": "/dev/ttyUSB0 lost: Input/output error (os error 5)",
                        "last_error_at": "2026-11-21T13:02:11Z"
                    },
                    "pending": [{
                        "payment_request_id": ID,
                        "merchant_unique_code": null,
                        "amount_minor": 1250,
                        "since": "2026-11-21T13:16:40Z",
                        "cancel_requested": true,
                        "cancel_reason": "operator"
                    }],
                    "abandoned": [{
                        "merchant_unique_code": "5b0e3f8e-6f43-4c1e-9d0a-3f3c2a1b4d5e",
                        "amount_minor": 990,
                        "since": "2026-11-21T13:10:00Z",
                        "abandoned_at": "2026-11-21T13:10:20Z",
                        "payment_request_id": null
                    }],
                    "terminal_last_answered": "2026-11-21T13:17:05Z",
                    "api_last_answered": null,
                    "storage": {
                        "directory": "",
                        "writable": true,
                        "last_error": null,
                        "last_error_at": null,
                        "free_bytes": null,
                        "free_space_low": false
                    }
                }
            })
        );
        let back: ControlResponse = serde_json::from_value(wire).unwrap();
        assert_eq!(back, response);
    }

    #[test]
    fn an_error_answer_carries_kind_and_the_apis_messages() {
        let response = ControlResponse::error(ControlError::api_rejected(
            "Ödeme bulunamadı",
            Some("PaymentNotFound".into()),
            Some(-1),
        ));
        let line = response.to_line();
        assert_eq!(line.last(), Some(&b'\n'));
        assert_eq!(line.iter().filter(|b| **b == b'\n').count(), 1);
        let wire: serde_json::Value = serde_json::from_slice(&line).unwrap();
        assert_eq!(
            wire,
            json!({"ok":false,"error":{"kind":"api_rejected","message":"Ödeme bulunamadı",
                   "client_message":"PaymentNotFound","error_code":-1}})
        );
        assert_eq!(
            serde_json::from_value::<ControlResponse>(wire).unwrap(),
            response
        );
    }

    #[test]
    fn every_reply_reads_back_as_itself() {
        let failure = CancelFailure {
            payment_request_id: ID.into(),
            error: ControlError::new(ControlErrorKind::ApiUnavailable, "timed out"),
        };
        let replies = [
            ControlReply::Status(Box::new(sample_status())),
            ControlReply::Pending(PendingReport {
                pending: sample_status().pending,
                abandoned: sample_status().abandoned,
            }),
            ControlReply::Cancel(CancelReport {
                cancelled: vec![ID.into()],
                failed: vec![failure.clone()],
            }),
            ControlReply::Disconnect(DisconnectReport {
                connection_id: Some("c".into()),
                connection: ConnectionState::Disconnected,
                cancelled: vec![],
                failed: vec![failure],
            }),
            ControlReply::Reconnect(ConnectionReport {
                connection_id: None,
                connection: ConnectionState::Connecting,
            }),
            ControlReply::ApmUnlink(UnlinkReport::default()),
            ControlReply::MasterpassUnlink(UnlinkReport {
                message: Some("ok".into()),
                retrieval_reference_number: Some("123456789012".into()),
            }),
            ControlReply::CheckoutDeactivate(UnlinkReport::default()),
        ];
        for reply in replies {
            let response = ControlResponse::ok(reply.clone());
            let back: ControlResponse = serde_json::from_slice(&response.to_line()).unwrap();
            assert_eq!(back, response);
            let wire: serde_json::Value = serde_json::from_slice(&response.to_line()).unwrap();
            assert_eq!(wire["command"], reply.command_name());
        }
    }

    #[test]
    fn an_older_client_reads_answers_with_extra_fields() {
        let line = json!({"ok":true,"command":"reconnect","uptime":5,
                          "result":{"connection_id":null,"connection":"connected","extra":1}});
        let response: ControlResponse = serde_json::from_value(line).unwrap();
        assert_eq!(
            response,
            ControlResponse::ok(ControlReply::Reconnect(ConnectionReport {
                connection_id: None,
                connection: ConnectionState::Connected
            }))
        );
    }

    #[test]
    fn rfc3339_prints_utc_seconds() {
        let t = SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1_795_000_000);
        assert_eq!(rfc3339(t), "2026-11-18T11:06:40Z");
    }
}

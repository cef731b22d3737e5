//! The application messages of docs/serial-protocol.md §3: one JSON object per APDU, tagged by `type`,
//! requests carrying `id`, replies carrying `re`. Typed so the agent and the terminal simulator
//! never handle raw JSON; unknown fields are ignored for forward compatibility.

use std::fmt::Debug;
use std::num::NonZeroU64;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer, Serialize};
use uuid::Uuid;

use crate::outcome::Refusal;

/// Longest `display_code` a `sale` may carry (§3).
pub const MAX_DISPLAY_CODE_CHARS: usize = 25;

/// The version of the link protocol this build speaks (§3 "Versions"), sent in `agent_state`.
pub const PROTOCOL_VERSION: u32 = 1;

/// Longest `model` or `firmware` the agent keeps from a terminal (longer ones are cut short).
pub const MAX_IDENTITY_CHARS: usize = 64;

/// A request or notification the terminal sends to the agent (§3 "Terminal → agent").
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum TerminalRequest {
    /// Start a payment; answered with `sale_started` or `error`.
    Sale(SaleOrder),
    /// A payment started elsewhere is now tracked by the agent; answered with `ok`.
    PaymentStarted { payment_request_id: String },
    /// A payment is final; answered with `ok`.
    PaymentResult {
        payment_request_id: String,
        status: PaymentResultStatus,
    },
    /// Cancel one pending payment, or every pending payment without an id.
    Cancel {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        payment_request_id: Option<String>,
    },
    /// Ask for the agent's connection and pending payments.
    Status,
    /// Liveness (§4); the link answers it itself with `pong`.
    Ping,
}

/// The fields of a `sale` request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SaleOrder {
    /// The idempotency key of the sale.
    pub merchant_unique_code: Uuid,
    /// Amount in minor units, > 0 (2250 = 22.50).
    pub amount_minor: NonZeroU64,
    /// Currency; the agent's configured default when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub currency_id: Option<i64>,
    /// Short code shown to the customer, at most 25 characters.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "display_code"
    )]
    pub display_code: Option<String>,
}

fn display_code<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<String>, D::Error> {
    let code = Option::<String>::deserialize(deserializer)?;
    match code {
        Some(code) if code.chars().count() > MAX_DISPLAY_CODE_CHARS => {
            Err(serde::de::Error::custom(format_args!(
                "display_code is longer than {MAX_DISPLAY_CODE_CHARS} characters"
            )))
        }
        other => Ok(other),
    }
}

/// The outcome a terminal reports in `payment_result`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PaymentResultStatus {
    Succeeded,
    Failed,
}

/// A request or notification the agent sends to the terminal (§3 "Agent → terminal").
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum AgentRequest {
    /// The agent is ready (link up) or stopping (shutdown began); answered with `ok`. With
    /// `ready`, the agent says which protocol version it speaks and which build it is (§3
    /// "Versions"); a terminal answers it with its own identity in the `ok`.
    AgentState {
        state: AgentReadiness,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        protocol: Option<u32>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        agent: Option<String>,
    },
    /// The terminal must abort the card dialogue of this payment; answered with `ok`.
    PaymentCancelled {
        payment_request_id: String,
        reason: CancelReason,
    },
    /// Liveness (§4); the link answers it itself with `pong`.
    Ping,
}

/// The `state` of an `agent_state` notification.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AgentReadiness {
    Ready,
    Stopping,
}

impl AgentRequest {
    /// `agent_state` `ready` with this build's protocol version and build, the first request
    /// of every link session (§3 "Versions").
    pub fn ready() -> Self {
        AgentRequest::AgentState {
            state: AgentReadiness::Ready,
            protocol: Some(PROTOCOL_VERSION),
            agent: Some(format!("pos-agent {}", crate::build_info::VERSION)),
        }
    }

    /// `agent_state` `stopping`.
    pub fn stopping() -> Self {
        AgentRequest::AgentState {
            state: AgentReadiness::Stopping,
            protocol: None,
            agent: None,
        }
    }
}

/// Who the terminal says it is, in its `ok` to `agent_state` (§3 "Versions"). Every field is
/// optional: a terminal that predates versions on the wire sends none (and is taken to speak
/// version 1).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TerminalIdentity {
    /// The protocol version the terminal speaks.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub protocol: Option<u32>,
    /// The terminal's model, as its maker names it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    /// The terminal's firmware version.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub firmware: Option<String>,
}

impl TerminalIdentity {
    /// No identity: the `ok` of a terminal that says nothing about itself.
    pub const NONE: TerminalIdentity = TerminalIdentity {
        protocol: None,
        model: None,
        firmware: None,
    };

    /// The protocol version the terminal speaks: version 1 when it does not say.
    pub fn protocol_version(&self) -> u32 {
        self.protocol.unwrap_or(1)
    }

    /// This identity as the agent keeps it: `model` and `firmware` at most
    /// [`MAX_IDENTITY_CHARS`] characters, control characters replaced (they reach logs,
    /// `status` and metric labels).
    pub fn sanitized(&self) -> TerminalIdentity {
        let clean = |text: &Option<String>| {
            text.as_ref().map(|text| {
                text.chars()
                    .take(MAX_IDENTITY_CHARS)
                    .map(|c| if c.is_control() { '?' } else { c })
                    .collect()
            })
        };
        TerminalIdentity {
            protocol: self.protocol,
            model: clean(&self.model),
            firmware: clean(&self.firmware),
        }
    }
}

/// `Acme T1, firmware 2.4.1, protocol 1`; `unknown model, firmware unknown, protocol 1` for a
/// terminal that says nothing of itself (logs, `status`, the conformance kit).
impl std::fmt::Display for TerminalIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}, firmware {}, protocol {}",
            self.model.as_deref().unwrap_or("unknown model"),
            self.firmware.as_deref().unwrap_or("unknown"),
            self.protocol_version()
        )
    }
}

/// Why a payment was cancelled, as the terminal hears it (`payment_cancelled.reason`, §3
/// "Agent → terminal"): the protocol's own values, converted from the state's reason by the
/// one `From` below, so a reason the state file learns reaches no terminal by accident.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CancelReason {
    /// An operator's `cancel` or `disconnect`.
    Operator,
    /// The terminal's own `cancel`.
    Terminal,
    /// The agent's shutdown.
    Shutdown,
    /// The payment was pending longer than `[terminal] payment_timeout`.
    Timeout,
    /// The sale's outcome was unknown when its reply was due; the terminal was told it failed,
    /// and the payment turned up later.
    Abandoned,
}

impl CancelReason {
    /// The value on the wire.
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

impl std::fmt::Display for CancelReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What the terminal is told of a cancel the agent recorded. A new reason in the state needs a
/// line here, and a value of §3 if the terminal is to hear it.
impl From<crate::state::CancelReason> for CancelReason {
    fn from(reason: crate::state::CancelReason) -> Self {
        use crate::state::CancelReason as Recorded;
        match reason {
            Recorded::Operator => Self::Operator,
            // The agent does not tell the terminal of a cancel the terminal asked for (it knows);
            // the value stays in the protocol all the same.
            Recorded::Terminal => Self::Terminal,
            Recorded::Shutdown => Self::Shutdown,
            Recorded::Timeout => Self::Timeout,
            Recorded::Abandoned => Self::Abandoned,
        }
    }
}

/// A reply, in either direction; its `re` is added by the link.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Reply {
    /// The answer to `sale`.
    SaleStarted {
        payment_request_id: String,
        merchant_unique_code: Uuid,
    },
    /// The answer to `payment_started`, `payment_result`, `agent_state`, `payment_cancelled`.
    /// A terminal's `ok` to `agent_state` carries its identity; every other `ok` has none
    /// ([`Reply::OK`]).
    Ok(TerminalIdentity),
    /// The answer to `cancel`. `cancelled_count` counts every payment cancelled; the ids are
    /// as many as fit in one frame, `truncated` when some were left out.
    Cancelled {
        payment_request_ids: Vec<String>,
        #[serde(default)]
        cancelled_count: usize,
        #[serde(default)]
        truncated: bool,
    },
    /// The answer to `status`. `pending_count` counts every pending payment; `pending` holds as
    /// many of their ids as fit in one frame, `truncated` when some were left out.
    Status {
        connection_id: Option<String>,
        connected: bool,
        pending: Vec<String>,
        #[serde(default)]
        pending_count: usize,
        #[serde(default)]
        truncated: bool,
    },
    /// The answer to `ping`.
    Pong,
    /// A refusal.
    Error {
        code: ErrorCode,
        #[serde(default)]
        message: String,
    },
}

impl Reply {
    /// A plain `ok`.
    pub const OK: Reply = Reply::Ok(TerminalIdentity::NONE);

    /// A `status` reply listing every pending id (shortened when sent, if it must be).
    pub fn status(connection_id: Option<String>, connected: bool, pending: Vec<String>) -> Self {
        Reply::Status {
            connection_id,
            connected,
            pending_count: pending.len(),
            pending,
            truncated: false,
        }
    }

    /// A `cancelled` reply listing every cancelled id (shortened when sent, if it must be).
    pub fn cancelled(payment_request_ids: Vec<String>) -> Self {
        Reply::Cancelled {
            cancelled_count: payment_request_ids.len(),
            payment_request_ids,
            truncated: false,
        }
    }

    /// How many items the part of this reply that can grow has (ids, or message characters).
    fn growable_len(&self) -> usize {
        match self {
            Reply::Status { pending: ids, .. }
            | Reply::Cancelled {
                payment_request_ids: ids,
                ..
            } => ids.len(),
            Reply::Error { message, .. } => message.chars().count(),
            Reply::SaleStarted { .. } | Reply::Ok(_) | Reply::Pong => 0,
        }
    }

    /// This reply with only the first `keep` items of its growable part, marked as shortened.
    fn shortened(&self, keep: usize) -> Reply {
        let mut short = self.clone();
        match &mut short {
            Reply::Status {
                pending: ids,
                truncated,
                ..
            }
            | Reply::Cancelled {
                payment_request_ids: ids,
                truncated,
                ..
            } => {
                ids.truncate(keep);
                *truncated = true;
            }
            Reply::Error { message, .. } => {
                *message = message.chars().take(keep).chain(['…']).collect();
            }
            Reply::SaleStarted { .. } | Reply::Ok(_) | Reply::Pong => {}
        }
        short
    }

    /// An `error` reply.
    pub fn error(code: ErrorCode, message: impl Into<String>) -> Self {
        Reply::Error {
            code,
            message: message.into(),
        }
    }

    /// The `error` reply the terminal gets for a request the agent refused.
    pub fn refused(refusal: &Refusal) -> Self {
        let code = match refusal {
            Refusal::InvalidRequest(_) => ErrorCode::InvalidRequest,
            Refusal::Busy => ErrorCode::Busy,
            Refusal::NotConnected => ErrorCode::NotConnected,
            Refusal::NotFound(_) => ErrorCode::NotFound,
            Refusal::ApiRejected { .. } | Refusal::AgentRejected(_) => ErrorCode::ApiRejected,
            Refusal::ApiUnavailable { .. } | Refusal::Internal(_) => ErrorCode::ApiUnavailable,
        };
        let message = match refusal {
            Refusal::ApiRejected { message, .. } => message.clone(),
            other => other.to_string(),
        };
        Reply::error(code, message)
    }
}

/// The `code` of an `error` reply (§3 "Errors").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// Malformed, unknown type, missing or invalid field.
    InvalidRequest,
    /// The agent is stopping and accepts no new sale.
    Busy,
    /// There is no active payment-API connection.
    NotConnected,
    /// The payment is not pending here.
    NotFound,
    /// The payment API answered with a failure.
    ApiRejected,
    /// The payment API could not be reached; nothing was created.
    ApiUnavailable,
}

impl ErrorCode {
    /// Every code, in the order the metrics' `code` label lists them.
    pub const ALL: [Self; 6] = [
        Self::InvalidRequest,
        Self::Busy,
        Self::NotConnected,
        Self::NotFound,
        Self::ApiRejected,
        Self::ApiUnavailable,
    ];

    /// The code as the wire spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::InvalidRequest => "invalid_request",
            Self::Busy => "busy",
            Self::NotConnected => "not_connected",
            Self::NotFound => "not_found",
            Self::ApiRejected => "api_rejected",
            Self::ApiUnavailable => "api_unavailable",
        }
    }

    /// Its place in [`ALL`](Self::ALL).
    pub(crate) fn index(self) -> usize {
        Self::ALL
            .iter()
            .position(|code| *code == self)
            .unwrap_or_default()
    }
}

/// What the link needs to know about the requests of one direction: how to build and recognise
/// the `ping` it handles itself.
pub trait LinkMessage: Serialize + DeserializeOwned + Debug + Send + Sync + 'static {
    /// The `ping` of this direction.
    fn ping() -> Self;
    /// Whether this is a `ping` (answered by the link with `pong`, never delivered).
    fn is_ping(&self) -> bool;
}

impl LinkMessage for TerminalRequest {
    fn ping() -> Self {
        TerminalRequest::Ping
    }
    fn is_ping(&self) -> bool {
        matches!(self, TerminalRequest::Ping)
    }
}

impl LinkMessage for AgentRequest {
    fn ping() -> Self {
        AgentRequest::Ping
    }
    fn is_ping(&self) -> bool {
        matches!(self, AgentRequest::Ping)
    }
}

#[derive(Serialize)]
struct WithId<'a, T> {
    #[serde(flatten)]
    body: &'a T,
    id: u32,
}

#[derive(Serialize)]
struct WithRe<'a> {
    #[serde(flatten)]
    body: &'a Reply,
    re: u32,
}

/// The APDU of a request or notification: its JSON with `id` added.
pub fn encode_request<T: Serialize>(id: u32, body: &T) -> serde_json::Result<Vec<u8>> {
    serde_json::to_vec(&WithId { body, id })
}

/// The APDU of a reply: its JSON with `re` added.
pub fn encode_reply(re: u32, body: &Reply) -> serde_json::Result<Vec<u8>> {
    serde_json::to_vec(&WithRe { body, re })
}

/// The APDU of a reply, never longer than `limit` bytes when the reply can be shortened: a
/// `status` or `cancelled` keeps as many ids as fit (its count stays whole, and `truncated`
/// says ids were left out), an `error` message is cut short. A reply is never dropped for its
/// size (`docs/serial-protocol.md`, "Replies that can grow").
pub fn encode_reply_within(re: u32, body: &Reply, limit: usize) -> serde_json::Result<Vec<u8>> {
    let full = encode_reply(re, body)?;
    if full.len() <= limit {
        return Ok(full);
    }
    // The most items that fit: `fits` is monotonic in the count kept.
    let (mut fits, mut too_many) = (0, body.growable_len());
    let mut best = encode_reply(re, &body.shortened(0))?;
    while too_many - fits > 1 {
        let middle = fits + (too_many - fits) / 2;
        let candidate = encode_reply(re, &body.shortened(middle))?;
        if candidate.len() <= limit {
            fits = middle;
            best = candidate;
        } else {
            too_many = middle;
        }
    }
    Ok(best)
}

/// A received APDU, sorted by what the link must do with it.
#[derive(Debug, Clone, PartialEq)]
pub enum Incoming<In> {
    /// A request carrying a usable `id`; `body` is the reason it is invalid, if it is.
    Request { id: u32, body: Result<In, String> },
    /// A request without a usable `id`: logged and dropped.
    Anonymous { reason: String },
    /// A reply (it carries `re`).
    Reply {
        re: u32,
        body: Result<Reply, String>,
    },
    /// Not a JSON object: logged and dropped.
    Unreadable { reason: String },
}

/// Sorts a received APDU (§3): a reply when it carries `re`, else a request.
pub fn parse_incoming<In: DeserializeOwned>(apdu: &[u8]) -> Incoming<In> {
    let object: serde_json::Map<String, serde_json::Value> = match serde_json::from_slice(apdu) {
        Ok(object) => object,
        Err(e) => {
            return Incoming::Unreadable {
                reason: format!("not a JSON object: {e}"),
            }
        }
    };
    let number = |key: &str| -> Option<Result<u32, String>> {
        object.get(key).map(|value| {
            value
                .as_u64()
                .and_then(|n| u32::try_from(n).ok())
                .ok_or_else(|| format!("`{key}` is not an unsigned 32-bit number"))
        })
    };
    if let Some(re) = number("re") {
        let re = match re {
            Ok(re) => re,
            Err(reason) => return Incoming::Unreadable { reason },
        };
        let body = serde_json::from_value(serde_json::Value::Object(object.clone()))
            .map_err(|e| e.to_string());
        return Incoming::Reply { re, body };
    }
    match number("id") {
        Some(Ok(id)) => {
            let body = serde_json::from_value(serde_json::Value::Object(object))
                .map_err(|e| e.to_string());
            Incoming::Request { id, body }
        }
        Some(Err(reason)) => Incoming::Anonymous { reason },
        None => Incoming::Anonymous {
            reason: "no `id`".to_owned(),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn text(bytes: Vec<u8>) -> String {
        String::from_utf8(bytes).unwrap()
    }

    #[test]
    fn ping_request_encodes_as_the_spec_vector_apdu() {
        assert_eq!(
            text(encode_request(1, &TerminalRequest::Ping).unwrap()),
            r#"{"type":"ping","id":1}"#
        );
    }

    #[test]
    fn replies_carry_re_and_error_carries_code_and_message() {
        let value: serde_json::Value = serde_json::from_slice(
            &encode_reply(7, &Reply::error(ErrorCode::NotFound, "no such payment")).unwrap(),
        )
        .unwrap();
        assert_eq!(
            value,
            json!({"type":"error","re":7,"code":"not_found","message":"no such payment"})
        );
        let status: serde_json::Value =
            serde_json::from_slice(&encode_reply(3, &Reply::status(None, false, vec![])).unwrap())
                .unwrap();
        assert_eq!(
            status,
            json!({"type":"status","re":3,"connection_id":null,"connected":false,"pending":[],"pending_count":0,"truncated":false})
        );
    }

    /// The CRC bytes (low, high) ending `apdu`'s frame.
    fn crc_bytes(apdu: &[u8]) -> Vec<u8> {
        crate::serial::frame::frame_bytes(apdu).unwrap()[apdu.len() + 4..].to_vec()
    }

    /// The version vectors of docs/serial-protocol.md §3 "Versions", APDU and frame.
    #[test]
    fn versions_on_the_wire_encode_as_the_spec_vectors() {
        let ready = AgentRequest::AgentState {
            state: AgentReadiness::Ready,
            protocol: Some(1),
            agent: Some("pos-agent 1.2.3".to_owned()),
        };
        let apdu = encode_request(2, &ready).unwrap();
        assert_eq!(
            text(apdu.clone()),
            r#"{"type":"agent_state","state":"ready","protocol":1,"agent":"pos-agent 1.2.3","id":2}"#
        );
        assert_eq!(crc_bytes(&apdu), [0x5B, 0x88]);
        let ok = Reply::Ok(TerminalIdentity {
            protocol: Some(1),
            model: Some("Acme T1".to_owned()),
            firmware: Some("2.4.1".to_owned()),
        });
        let apdu = encode_reply(2, &ok).unwrap();
        assert_eq!(
            text(apdu.clone()),
            r#"{"type":"ok","protocol":1,"model":"Acme T1","firmware":"2.4.1","re":2}"#
        );
        assert_eq!(crc_bytes(&apdu), [0x90, 0x40]);
        // Both parse back, and so do the messages of a side that says nothing of versions.
        assert_eq!(
            parse_incoming::<TerminalRequest>(&apdu),
            Incoming::Reply {
                re: 2,
                body: Ok(ok)
            }
        );
        assert_eq!(
            parse_incoming::<TerminalRequest>(br#"{"type":"ok","re":2}"#),
            Incoming::Reply {
                re: 2,
                body: Ok(Reply::OK)
            }
        );
        assert_eq!(
            parse_incoming::<AgentRequest>(br#"{"type":"agent_state","state":"ready","id":2}"#),
            Incoming::Request {
                id: 2,
                body: Ok(AgentRequest::AgentState {
                    state: AgentReadiness::Ready,
                    protocol: None,
                    agent: None
                })
            }
        );
    }

    /// Parsers written before versions were on the wire (a unit `ok`, an `agent_state` with
    /// only `state`) take the new messages: the new fields are ignored.
    #[test]
    fn parsers_without_versions_ignore_the_new_fields() {
        #[derive(Debug, Deserialize, PartialEq)]
        #[serde(tag = "type", rename_all = "snake_case")]
        enum OldReply {
            Ok,
        }
        #[derive(Debug, Deserialize, PartialEq)]
        #[serde(tag = "type", rename_all = "snake_case")]
        enum OldAgentRequest {
            AgentState { state: AgentReadiness },
        }
        let ok = br#"{"type":"ok","protocol":1,"model":"Acme T1","firmware":"2.4.1","re":2}"#;
        assert_eq!(
            serde_json::from_slice::<OldReply>(ok).unwrap(),
            OldReply::Ok
        );
        let ready = encode_request(2, &AgentRequest::ready()).unwrap();
        assert_eq!(
            serde_json::from_slice::<OldAgentRequest>(&ready).unwrap(),
            OldAgentRequest::AgentState {
                state: AgentReadiness::Ready
            }
        );
    }

    #[test]
    fn identities_are_kept_short_and_printable() {
        let long = TerminalIdentity {
            protocol: None,
            model: Some("x".repeat(500)),
            firmware: Some("1.0\n\u{1b}[31m".to_owned()),
        }
        .sanitized();
        assert_eq!(
            long.model.as_ref().unwrap().chars().count(),
            MAX_IDENTITY_CHARS
        );
        assert_eq!(long.firmware.as_deref(), Some("1.0??[31m"));
        assert_eq!(long.protocol_version(), 1);
    }

    #[test]
    fn sale_with_unknown_fields_is_accepted() {
        let apdu = br#"{"type":"sale","id":4,"merchant_unique_code":"6f1c1a7e-3b7f-4d0e-9a51-0f2b7c3d9e10","amount_minor":2250,"tip":5}"#;
        match parse_incoming::<TerminalRequest>(apdu) {
            Incoming::Request {
                id: 4,
                body: Ok(TerminalRequest::Sale(sale)),
            } => {
                assert_eq!(sale.amount_minor.get(), 2250);
                assert_eq!(sale.currency_id, None);
            }
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn invalid_requests_keep_their_id_and_a_reason() {
        let cases: [&[u8]; 5] = [
            br#"{"type":"launch","id":1}"#,
            br#"{"type":"sale","id":1,"amount_minor":5}"#,
            br#"{"type":"sale","id":1,"merchant_unique_code":"6f1c1a7e-3b7f-4d0e-9a51-0f2b7c3d9e10","amount_minor":0}"#,
            br#"{"type":"sale","id":1,"merchant_unique_code":"6f1c1a7e-3b7f-4d0e-9a51-0f2b7c3d9e10","amount_minor":1,"display_code":"abcdefghijklmnopqrstuvwxyz"}"#,
            br#"{"id":1}"#,
        ];
        for apdu in cases {
            match parse_incoming::<TerminalRequest>(apdu) {
                Incoming::Request {
                    id: 1,
                    body: Err(reason),
                } => assert!(!reason.is_empty()),
                other => panic!("{} gave {other:?}", String::from_utf8_lossy(apdu)),
            }
        }
    }

    #[test]
    fn requests_without_id_and_non_objects_are_not_answerable() {
        assert!(matches!(
            parse_incoming::<TerminalRequest>(br#"{"type":"status"}"#),
            Incoming::Anonymous { .. }
        ));
        assert!(matches!(
            parse_incoming::<TerminalRequest>(br#"{"type":"status","id":-1}"#),
            Incoming::Anonymous { .. }
        ));
        assert!(matches!(
            parse_incoming::<TerminalRequest>(b"\xff\x00"),
            Incoming::Unreadable { .. }
        ));
    }

    #[test]
    fn status_request_and_status_reply_are_told_apart_by_re() {
        assert_eq!(
            parse_incoming::<TerminalRequest>(br#"{"type":"status","id":9}"#),
            Incoming::Request {
                id: 9,
                body: Ok(TerminalRequest::Status)
            }
        );
        assert_eq!(
            parse_incoming::<TerminalRequest>(
                br#"{"type":"status","re":9,"connection_id":"c1","connected":true,"pending":["p"]}"#
            ),
            Incoming::Reply {
                re: 9,
                body: Ok(Reply::Status {
                    connection_id: Some("c1".into()),
                    connected: true,
                    pending: vec!["p".into()],
                    pending_count: 0,
                    truncated: false,
                })
            }
        );
    }

    #[test]
    fn a_reply_too_long_for_a_frame_keeps_its_count_and_as_many_ids_as_fit() {
        use crate::serial::frame::MAX_APDU;
        for count in [150usize, 1_000] {
            let ids: Vec<String> = (0..count).map(|_| Uuid::new_v4().to_string()).collect();
            for reply in [
                Reply::status(Some("c1".into()), true, ids.clone()),
                Reply::cancelled(ids.clone()),
            ] {
                let apdu = encode_reply_within(77, &reply, MAX_APDU).unwrap();
                assert!(apdu.len() <= MAX_APDU, "{} bytes", apdu.len());
                let value: serde_json::Value = serde_json::from_slice(&apdu).unwrap();
                let (listed, counted) = match &reply {
                    Reply::Status { .. } => ("pending", "pending_count"),
                    _ => ("payment_request_ids", "cancelled_count"),
                };
                assert_eq!(value[counted], count);
                assert_eq!(value["truncated"], true);
                let kept = value[listed].as_array().unwrap();
                assert!(kept.len() > 50 && kept.len() < count, "{}", kept.len());
                // As many as fit: one more would not.
                let one_more = encode_reply(77, &reply.shortened(kept.len() + 1)).unwrap();
                assert!(one_more.len() > MAX_APDU);
                for (i, id) in kept.iter().enumerate() {
                    assert_eq!(id, &ids[i]);
                }
            }
        }
        let small = Reply::status(None, true, vec!["p".into()]);
        let apdu = encode_reply_within(1, &small, MAX_APDU).unwrap();
        assert_eq!(apdu, encode_reply(1, &small).unwrap());
        let long_error = Reply::error(ErrorCode::ApiUnavailable, "x".repeat(10_000));
        let apdu = encode_reply_within(2, &long_error, MAX_APDU).unwrap();
        assert!(apdu.len() <= MAX_APDU && apdu.len() > MAX_APDU - 10);
    }

    /// The values docs/serial-protocol.md gives `payment_cancelled.reason` (§3 "Agent →
    /// terminal").
    fn documented_cancel_reasons() -> Vec<String> {
        let doc = include_str!("../../docs/serial-protocol.md");
        let row = doc
            .lines()
            .find(|line| line.starts_with("| `payment_cancelled` |"))
            .expect("the payment_cancelled row of the protocol");
        let values = row
            .split("`reason`:")
            .nth(1)
            .and_then(|rest| rest.split('|').next())
            .expect("the reasons in the payment_cancelled row");
        values
            .split('`')
            .skip(1)
            .step_by(2)
            .map(str::to_owned)
            .collect()
    }

    #[test]
    fn every_recorded_cancel_reason_reaches_the_terminal_as_a_documented_value() {
        use crate::state::CancelReason as Recorded;
        let documented = documented_cancel_reasons();
        assert!(documented.len() >= 5, "{documented:?}");
        // The protocol's enum takes every documented value, and writes it back the same.
        for value in &documented {
            let reason: CancelReason = serde_json::from_value(json!(value)).unwrap();
            assert_eq!(reason.as_str(), value);
        }
        for recorded in [
            Recorded::Operator,
            Recorded::Terminal,
            Recorded::Shutdown,
            Recorded::Timeout,
            Recorded::Abandoned,
        ] {
            let told = CancelReason::from(recorded);
            let wire = serde_json::to_value(told).unwrap();
            let value = wire.as_str().unwrap();
            assert!(
                documented.iter().any(|d| d == value),
                "{recorded:?} reaches the terminal as {value:?}, which docs/serial-protocol.md does not list"
            );
            assert_eq!(value, told.as_str());
            // The same value the state file records: the wire did not change.
            assert_eq!(wire, serde_json::to_value(recorded).unwrap());
            assert_eq!(
                serde_json::from_value::<CancelReason>(wire.clone()).unwrap(),
                told,
                "{value} reads back"
            );
        }
    }

    #[test]
    fn every_agent_request_round_trips() {
        for request in [
            AgentRequest::stopping(),
            AgentRequest::ready(),
            AgentRequest::PaymentCancelled {
                payment_request_id: "pr-1".into(),
                reason: CancelReason::Operator,
            },
            AgentRequest::Ping,
        ] {
            let apdu = encode_request(11, &request).unwrap();
            assert_eq!(
                parse_incoming::<AgentRequest>(&apdu),
                Incoming::Request {
                    id: 11,
                    body: Ok(request)
                }
            );
        }
    }
}

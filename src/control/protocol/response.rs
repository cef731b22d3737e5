//! The daemon's answer to one request: [`ControlResponse`] (the command's [`ControlReply`] or a
//! [`ControlError`], one JSON line, read leniently so that an older client still reads a newer
//! daemon's answer) and the report each command answers with.

use serde::{Deserialize, Serialize};

use super::error::ControlError;
use super::views::{AbandonedSaleView, PendingPaymentView, StatusReport};
use super::vocabulary::ConnectionStatus;

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

/// `pending`: the pending payments and, apart, the abandoned sales still being settled.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct PendingReport {
    pub pending: Vec<PendingPaymentView>,
    #[serde(default)]
    pub abandoned: Vec<AbandonedSaleView>,
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
    pub connection: ConnectionStatus,
    pub cancelled: Vec<String>,
    #[serde(default)]
    pub failed: Vec<CancelFailure>,
}

/// `reconnect`: the connection and its new state.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ConnectionReport {
    pub connection_id: Option<String>,
    pub connection: ConnectionStatus,
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::control::protocol::error::ControlErrorKind;
    use crate::control::protocol::views::{SerialPortView, StorageView};
    use crate::control::protocol::vocabulary::{CancelReason, TerminalLinkStatus};
    use serde_json::json;

    const ID: &str = "7cc7c8e8-9d92-41b6-9378-e9ecef5a7812";

    fn sample_status() -> StatusReport {
        StatusReport {
            version: "0.1.0".into(),
            commit: "0123456789ab".into(),
            connection_id: Some("70b2190b-2f1e-4a8e-9d59-0d1f1c7b1a11".into()),
            connection: ConnectionStatus::Connected,
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
                connection: ConnectionStatus::Disconnected,
                cancelled: vec![],
                failed: vec![failure],
            }),
            ControlReply::Reconnect(ConnectionReport {
                connection_id: None,
                connection: ConnectionStatus::Connecting,
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
                connection: ConnectionStatus::Connected
            }))
        );
    }
}

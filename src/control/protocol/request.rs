//! What an operator asks the daemon: [`ControlRequest`], read strictly from one JSON line
//! (unknown commands and unknown or missing fields are refused, because a field silently ignored
//! by an older daemon could change what an operator meant), and the limits on its fields.

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::error::{ControlError, ControlErrorKind};

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
}

//! The simulator's control endpoints under `/_sim/`, so that a manual user or another process
//! (the demo) can inspect its state and inject faults or latency over HTTP.

use std::time::Duration;

use serde_json::{json, Value};
use uuid::Uuid;

use super::state::{self, ApiReply};
use super::{Fault, FaultKind, Shared};

/// The control endpoints under `/_sim/` (no keys needed; the simulator listens on loopback):
/// `GET /_sim/state`, `POST /_sim/fault`, `DELETE /_sim/faults`, `POST /_sim/latency`,
/// `POST /_sim/masterpass`. See `docs/payment-api.md`.
pub(super) fn admin(shared: &Shared, method: &str, path: &str, body: &[u8]) -> ApiReply {
    let body: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
    let ok = |result: Value| ApiReply {
        status: 200,
        body: json!({ "ok": true, "result": result }),
    };
    let bad = |message: &str| ApiReply {
        status: 400,
        body: json!({ "ok": false, "error": message }),
    };
    match (method, path.trim_end_matches('/')) {
        ("GET", "state") => {
            let inner = shared.lock();
            ok(json!({
                "connections": inner.state.connections.iter().map(state::connection_json).collect::<Vec<_>>(),
                "payments": inner.state.payments.iter().map(state::payment_json).collect::<Vec<_>>(),
                "requests": inner.requests.len(),
            }))
        }
        ("POST", "fault") => {
            let text = |key: &str| body.get(key).and_then(Value::as_str);
            let (Some(method), Some(path), Some(kind)) =
                (text("method"), text("path"), text("kind"))
            else {
                return bad("method, path and kind are required");
            };
            let kind =
                match kind {
                    "latency" => FaultKind::Latency(Duration::from_millis(
                        body.get("latency_ms")
                            .and_then(Value::as_u64)
                            .unwrap_or(1000),
                    )),
                    "http_500" => FaultKind::Status500,
                    "malformed_body" => FaultKind::MalformedBody,
                    "close" => FaultKind::CloseWithoutReply,
                    "create_then_drop" => FaultKind::CreateThenDropReply,
                    "black_hole" => FaultKind::BlackHole,
                    "retry_after" => FaultKind::RetryAfter {
                        status: match body.get("status").and_then(Value::as_u64) {
                            None => 429,
                            Some(status @ (429 | 503)) => status as u16,
                            Some(_) => return bad("status must be 429 or 503"),
                        },
                        value: match body.get("retry_after") {
                            Some(Value::String(text)) => text.clone(),
                            Some(Value::Number(n)) => n.to_string(),
                            _ => return bad("retry_after (seconds or an HTTP date) is required"),
                        },
                    },
                    // An answer given as is, e.g. a refusal in the API's envelope.
                    "reply" => FaultKind::Reply {
                        status: match body.get("status").map(Value::as_u64) {
                            None => 200,
                            Some(Some(status @ 100..=599)) => status as u16,
                            Some(_) => return bad("status must be an HTTP status"),
                        },
                        body: match body.get("body") {
                            Some(Value::String(text)) => text.clone(),
                            Some(value) => value.to_string(),
                            None => return bad("body is required"),
                        },
                    },
                    _ => return bad(
                        "kind must be latency, http_500, malformed_body, close, create_then_drop, black_hole, retry_after or reply",
                    ),
                };
            let mut fault = Fault::new(method, path, kind);
            fault.times = match body.get("times") {
                Some(Value::Null) => None,
                Some(n) => match n.as_u64() {
                    Some(n) => Some(n as usize),
                    None => return bad("times must be a number or null"),
                },
                None => Some(1),
            };
            shared.lock().faults.push_back(fault);
            ok(Value::Null)
        }
        ("DELETE", "faults") => {
            shared.lock().faults.clear();
            ok(Value::Null)
        }
        ("POST", "latency") => match body.get("ms").and_then(Value::as_u64) {
            Some(ms) => {
                shared.lock().latency = Duration::from_millis(ms);
                ok(Value::Null)
            }
            None => bad("ms is required"),
        },
        ("POST", "masterpass") => match body
            .get("session_id")
            .and_then(Value::as_str)
            .and_then(|s| Uuid::parse_str(s).ok())
        {
            Some(session) => {
                shared.lock().state.masterpass_sessions.insert(session);
                ok(Value::Null)
            }
            None => bad("session_id must be a Guid"),
        },
        _ => ApiReply {
            status: 404,
            body: json!({ "ok": false, "error": "no such simulator control endpoint" }),
        },
    }
}

//! The payment API's answers (docs/payment-api.md), read for every endpoint exactly as the client
//! reads them (`Endpoint::read_answer`). Input: one byte picks the endpoint, one the HTTP status,
//! the rest is the body. Properties, beyond "no panic":
//! - success only when the answer says so: a 2xx status and, read case-insensitively, the
//!   PhysicalAPI's `Succeeded: true` or the PaymentAPI's `Result: true`, and for Masterpass
//!   unlink also `Body.Masterpass.StatusCode` 2xx (seed 002: `ErrorCode` 0 and `Result` true
//!   around a Masterpass 404 is a failure);
//! - a failure is a typed error of this endpoint: `Status` with the very status for non-2xx,
//!   `Rejected` or `Undecodable` for 2xx, and its "outcome unknown" flag is set exactly when the
//!   call is not safe to repeat (sale, establish) and the answer may hide a done request;
//! - the client's key never shows in an error's text or `Debug` (the seeds carry it in
//!   messages), and reading allocates boundedly (run with `-malloc_limit_mb`).

use pos_agent::paywall::{Answer, ApiError, Endpoint};
use serde_json::Value;

const SECRET: &str = "fuzz-canary-api-key-5b1e";
const STATUSES: [u16; 8] = [200, 200, 201, 200, 400, 404, 500, 503];

/// The values under `name` in an object, matching keys case-insensitively as the API does.
fn field<'a>(value: &'a Value, name: &str) -> Vec<&'a Value> {
    match value {
        Value::Object(map) => map
            .iter()
            .filter(|(key, _)| key.to_lowercase() == name)
            .map(|(_, v)| v)
            .collect(),
        _ => Vec::new(),
    }
}

fn says_true(value: &Value, name: &str) -> bool {
    field(value, name)
        .into_iter()
        .any(|v| v == &Value::Bool(true))
}

fn masterpass_status_2xx(body: &Value) -> bool {
    field(body, "body").into_iter().any(|b| {
        field(b, "masterpass").into_iter().any(|m| {
            field(m, "statuscode").into_iter().any(|code| {
                let code = match code {
                    Value::Number(n) => n.as_i64(),
                    Value::String(s) => s.trim().parse().ok(),
                    _ => None,
                };
                code.is_some_and(|c| (200..300).contains(&c))
            })
        })
    })
}

fn answer_fits(endpoint: Endpoint, answer: &Answer) -> bool {
    matches!(
        (endpoint, answer),
        (Endpoint::EstablishConnection, Answer::ConnectionId(_))
            | (Endpoint::ConnectionDetail, Answer::Connection(_))
            | (Endpoint::ListConnections, Answer::Connections(_))
            | (Endpoint::ListTerminals, Answer::Terminals(_))
            | (Endpoint::Sale, Answer::SaleAccepted(_))
            | (Endpoint::Cancel, Answer::CancelAccepted(_))
            | (Endpoint::ListPayments, Answer::Payments(_))
            | (Endpoint::QueryPayment, Answer::Payment(_))
            | (Endpoint::ApmUnlink, Answer::ApmUnlinked(_))
            | (Endpoint::MasterpassUnlink, Answer::MasterpassUnlinked(_))
            | (
                Endpoint::UpdateConnection
                    | Endpoint::DeleteConnection
                    | Endpoint::Reconnect
                    | Endpoint::Disconnect
                    | Endpoint::CheckoutDeactivate,
                Answer::Done
            )
    )
}

/// Checks one input; panics when a property does not hold.
pub fn check(data: &[u8]) {
    let [which, status, body @ ..] = data else {
        return;
    };
    let endpoint = Endpoint::ALL[usize::from(*which) % Endpoint::ALL.len()];
    let status = STATUSES[usize::from(*status) % STATUSES.len()];
    let success_status = (200..300).contains(&status);

    match endpoint.read_answer(status, body, &[SECRET]) {
        Ok(answer) => {
            assert!(
                answer_fits(endpoint, &answer),
                "{endpoint:?} answered {answer:?}"
            );
            assert!(success_status);
            let json: Value = serde_json::from_slice(body).expect("an accepted answer is JSON");
            match endpoint {
                Endpoint::ApmUnlink | Endpoint::CheckoutDeactivate => {
                    assert!(says_true(&json, "result"))
                }
                Endpoint::MasterpassUnlink => {
                    assert!(says_true(&json, "result"));
                    assert!(
                        masterpass_status_2xx(&json),
                        "accepted without a Masterpass 2xx"
                    );
                }
                _ => assert!(says_true(&json, "succeeded")),
            }
        }
        Err(error) => {
            assert_eq!(error.endpoint(), endpoint);
            let unknown = error.outcome_unknown();
            match &error {
                ApiError::Status { status: seen, .. } => {
                    assert!(!success_status);
                    assert_eq!(*seen, status);
                    assert_eq!(unknown, !endpoint.idempotent() && status >= 500);
                }
                ApiError::Rejected { .. } => {
                    assert!(success_status);
                    assert!(!unknown);
                }
                ApiError::Undecodable { .. } => {
                    assert!(success_status);
                    assert_eq!(unknown, !endpoint.idempotent());
                }
                other => panic!("reading an answer gave {other:?}"),
            }
            for text in [error.to_string(), format!("{error:?}")] {
                assert!(!text.contains(SECRET), "the key shows: {text}");
            }
        }
    }
}

//! How an answer of the payment API is read into a typed result or an [`ApiError`], call by
//! call. Reading an answer needs no network, so [`Endpoint::read_answer`] gives the fuzz target
//! (`fuzz/`) and the tests exactly the decoding [`PaywallClient`](super::PaywallClient) does.

use std::time::Duration;

use reqwest::StatusCode;
use serde::de::{DeserializeOwned, IgnoredAny};
use serde_json::Value;

use super::endpoint::{Endpoint, Envelope};
use super::envelope::{self, DecodeContext};
use super::error::ApiError;
use super::types::*;

/// A successfully read answer, one variant per kind of payload.
#[derive(Debug, Clone, PartialEq)]
pub enum Answer {
    /// The new connection's `Id` (establish).
    ConnectionId(String),
    Connection(ConnectionInfo),
    Connections(Page<ConnectionInfo>),
    Terminals(Page<TerminalInfo>),
    SaleAccepted(SaleAccepted),
    CancelAccepted(CancelAccepted),
    Payments(Page<PaymentSummary>),
    Payment(PaymentSummary),
    ApmUnlinked(ApmUnlinked),
    MasterpassUnlinked(MasterpassUnlinked),
    /// A call whose payload carries nothing the agent uses (update, delete, reconnect,
    /// disconnect, checkout deactivate).
    Done,
}

impl Endpoint {
    /// Reads an answer with HTTP status `status` and body `body` exactly as the client does;
    /// `secrets` are the values that must never appear in an error (the client's keys).
    pub fn read_answer(
        self,
        status: u16,
        body: &[u8],
        secrets: &[&str],
    ) -> Result<Answer, ApiError> {
        let status = StatusCode::from_u16(status).map_err(|_| ApiError::Undecodable {
            endpoint: self,
            reason: format!("HTTP status {status} is not a status code"),
            excerpt: String::new(),
            outcome_unknown: !self.idempotent(),
        })?;
        let read = || decode::<Value>(self, secrets, status, body);
        Ok(match self {
            Endpoint::EstablishConnection => Answer::ConnectionId(establish_id(read()?)?),
            Endpoint::ConnectionDetail => Answer::Connection(self.typed(secrets, status, body)?),
            Endpoint::ListConnections => Answer::Connections(
                self.typed::<PageWire<ConnectionInfo>>(secrets, status, body)?
                    .into(),
            ),
            Endpoint::ListTerminals => Answer::Terminals(
                self.typed::<PageWire<TerminalInfo>>(secrets, status, body)?
                    .into(),
            ),
            Endpoint::ListPayments => Answer::Payments(
                self.typed::<PageWire<PaymentSummary>>(secrets, status, body)?
                    .into(),
            ),
            Endpoint::Sale => Answer::SaleAccepted(self.typed(secrets, status, body)?),
            Endpoint::Cancel => Answer::CancelAccepted(self.typed(secrets, status, body)?),
            Endpoint::QueryPayment => Answer::Payment(self.typed(secrets, status, body)?),
            Endpoint::ApmUnlink => {
                Answer::ApmUnlinked(apm_unlinked(self.typed(secrets, status, body)?))
            }
            Endpoint::MasterpassUnlink => {
                Answer::MasterpassUnlinked(MasterpassUnlinked::from_body(&read()?))
            }
            Endpoint::UpdateConnection
            | Endpoint::DeleteConnection
            | Endpoint::Reconnect
            | Endpoint::Disconnect
            | Endpoint::CheckoutDeactivate => {
                let _: IgnoredAny = self.typed(secrets, status, body)?;
                Answer::Done
            }
        })
    }

    fn typed<T: DeserializeOwned>(
        self,
        secrets: &[&str],
        status: StatusCode,
        body: &[u8],
    ) -> Result<T, ApiError> {
        decode(self, secrets, status, body)
    }
}

/// Reads one answer: a non-2xx status is [`ApiError::Status`], then the envelope is checked
/// and its payload read as `T`.
pub(crate) fn decode<T: DeserializeOwned>(
    endpoint: Endpoint,
    secrets: &[&str],
    status: StatusCode,
    body: &[u8],
) -> Result<T, ApiError> {
    let ctx = DecodeContext {
        endpoint,
        outcome_unknown_on_failure: !endpoint.idempotent(),
        secrets,
    };
    if !status.is_success() {
        return Err(status_error(endpoint, secrets, status, body, None));
    }
    let payload = match endpoint.envelope() {
        Envelope::Physical => envelope::physical_result(&ctx, body)?,
        Envelope::Payment => envelope::payment_body(&ctx, body)?,
        Envelope::Masterpass => envelope::masterpass_body(&ctx, body)?,
    };
    ctx.typed(payload, body)
}

/// A non-2xx answer: [`ApiError::Status`] with the messages of a failure envelope, if the body
/// holds one, and the wait its `Retry-After` asked for (read by the client). Not generic, so the client's code for it exists once, not once per payload type.
pub(crate) fn status_error(
    endpoint: Endpoint,
    secrets: &[&str],
    status: StatusCode,
    body: &[u8],
    retry_after: Option<Duration>,
) -> ApiError {
    let ctx = DecodeContext {
        endpoint,
        outcome_unknown_on_failure: !endpoint.idempotent(),
        secrets,
    };
    let (message, client_message) = envelope::failure_messages(body);
    ApiError::Status {
        endpoint,
        status: status.as_u16(),
        message: message.map(|m| ctx.excerpt(m.as_bytes())),
        client_message: client_message.map(|m| ctx.excerpt(m.as_bytes())),
        // A server error on a non-idempotent call may come after the work was done.
        outcome_unknown: !endpoint.idempotent() && status.is_server_error(),
        retry_after,
    }
}

/// The new connection's `Id`: `Result.Id` (a string or a number), or a bare string `Result`.
/// Without it the connection was (presumably) created but its Id is not known.
pub(crate) fn establish_id(result: Value) -> Result<String, ApiError> {
    match &result {
        Value::String(id) if !id.is_empty() => Ok(id.clone()),
        Value::Object(map) => match map.get("id") {
            Some(Value::String(id)) if !id.is_empty() => Ok(id.clone()),
            Some(Value::Number(n)) => Ok(n.to_string()),
            _ => Err(no_field(Endpoint::EstablishConnection, "Result.Id")),
        },
        _ => Err(no_field(Endpoint::EstablishConnection, "Result.Id")),
    }
}

/// An APM unlink answer without a body is a success with nothing to report.
pub(crate) fn apm_unlinked(body: Option<ApmUnlinked>) -> ApmUnlinked {
    body.unwrap_or_default()
}

fn no_field(endpoint: Endpoint, field: &str) -> ApiError {
    ApiError::Undecodable {
        endpoint,
        reason: format!("no {field} in the answer"),
        excerpt: String::new(),
        outcome_unknown: !endpoint.idempotent(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture(name: &str) -> Vec<u8> {
        std::fs::read(format!(
            "{}/tests/fixtures/{name}",
            env!("CARGO_MANIFEST_DIR")
        ))
        .unwrap()
    }

    #[test]
    fn masterpass_404_inside_a_successful_envelope_is_a_rejection() {
        let error = Endpoint::MasterpassUnlink
            .read_answer(200, &fixture("seed002_masterpass_unlink_failure.json"), &[])
            .unwrap_err();
        match error {
            ApiError::Rejected {
                error_code,
                client_message,
                ..
            } => {
                assert_eq!(error_code, Some(404));
                assert_eq!(
                    client_message.as_deref(),
                    Some("ACCOUNT_NOT_LINKED_TO_MERCHANT")
                );
            }
            other => panic!("expected a rejection, got {other:?}"),
        }
        let ok = Endpoint::MasterpassUnlink
            .read_answer(200, &fixture("seed002_masterpass_unlink_success.json"), &[])
            .unwrap();
        assert!(matches!(ok, Answer::MasterpassUnlinked(_)));
    }

    #[test]
    fn only_sale_and_establish_leave_an_unknown_outcome() {
        for endpoint in Endpoint::ALL {
            let error = endpoint.read_answer(200, b"not json", &[]).unwrap_err();
            assert_eq!(
                error.outcome_unknown(),
                matches!(endpoint, Endpoint::Sale | Endpoint::EstablishConnection),
                "{endpoint:?}"
            );
            assert_eq!(error.endpoint(), endpoint);
        }
    }
}

//! The audit record of a terminal's request (docs/operations.md, "Audit records"): every change
//! of a payment the terminal asks for (a sale, a payment started elsewhere, its result, a cancel)
//! is recorded as coming from the terminal, with the serial device and the request's id.

use crate::audit::{Outcome, Record};
use crate::serial::message::{ErrorCode, PaymentResultStatus, Reply, TerminalRequest};

fn outcome_of(code: ErrorCode) -> Outcome {
    match code {
        ErrorCode::ApiRejected => Outcome::Refused,
        ErrorCode::NotFound => Outcome::NotFound,
        ErrorCode::Busy => Outcome::Busy,
        ErrorCode::InvalidRequest => Outcome::Invalid,
        ErrorCode::NotConnected | ErrorCode::ApiUnavailable => Outcome::Failed,
    }
}

/// The record of a request from the terminal and the agent's reply to it, or `None` for a
/// request that is answered without touching a payment (`ping`).
pub(crate) fn record(request: &TerminalRequest, reply: &Reply) -> Option<Record> {
    let mut record = Record::default();
    match request {
        TerminalRequest::Sale(order) => {
            record.command = "sale".into();
            record.merchant_unique_code = Some(order.merchant_unique_code.to_string());
            record.resource = format!(
                "sale {} of {} (minor units)",
                order.merchant_unique_code, order.amount_minor
            );
        }
        TerminalRequest::PaymentStarted { payment_request_id } => {
            record.command = "payment_started".into();
            record.payment_request_id = Some(payment_request_id.clone());
            record.resource = format!("payment {payment_request_id}");
        }
        TerminalRequest::PaymentResult {
            payment_request_id,
            status,
        } => {
            record.command = match status {
                PaymentResultStatus::Succeeded => "payment_result succeeded",
                PaymentResultStatus::Failed => "payment_result failed",
            }
            .into();
            record.payment_request_id = Some(payment_request_id.clone());
            record.resource = format!("payment {payment_request_id}");
        }
        TerminalRequest::Cancel {
            payment_request_id: Some(id),
        } => {
            record.command = "cancel".into();
            record.payment_request_id = Some(id.clone());
            record.resource = format!("payment {id}");
        }
        TerminalRequest::Cancel {
            payment_request_id: None,
        } => {
            record.command = "cancel (all)".into();
            record.resource = "every pending payment".into();
        }
        TerminalRequest::Status => {
            record.command = "status".into();
            record.resource = "the agent's state".into();
            record.read_only = true;
        }
        TerminalRequest::Ping => return None,
    }
    match reply {
        Reply::SaleStarted {
            payment_request_id, ..
        } => record.payment_request_id = Some(payment_request_id.clone()),
        Reply::Cancelled {
            payment_request_ids,
            ..
        } => record.payment_request_ids.clone_from(payment_request_ids),
        Reply::Error { code, message } => {
            record.outcome = Some(outcome_of(*code));
            record.reason = Some(message.clone());
        }
        Reply::Ok(_) | Reply::Status { .. } | Reply::Pong => {}
    }
    Some(record)
}

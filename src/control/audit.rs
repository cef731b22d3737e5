//! The audit record of an operator's request (docs/operations.md, "Audit records"): what was
//! asked, which payment, connection, session or checkout it touched, and how the daemon's answer
//! says it ended. The control server writes one per request, with the caller's identity.

use crate::audit::{Outcome, Record};

use super::protocol::{
    ApmAccount, CancelFailure, CancelTarget, ControlErrorKind, ControlReply, ControlRequest,
    ControlResponse,
};

fn outcome_of(kind: ControlErrorKind) -> Outcome {
    match kind {
        ControlErrorKind::ApiRejected => Outcome::Refused,
        ControlErrorKind::NotFound => Outcome::NotFound,
        ControlErrorKind::Busy => Outcome::Busy,
        ControlErrorKind::InvalidRequest => Outcome::Invalid,
        ControlErrorKind::ApiUnavailable
        | ControlErrorKind::NotConnected
        | ControlErrorKind::Internal => Outcome::Failed,
    }
}

/// The record of an operator's request and the daemon's answer to it.
pub(crate) fn record(request: &ControlRequest, response: &ControlResponse) -> Record {
    let mut record = Record {
        command: request.command_name().to_owned(),
        ..Record::default()
    };
    match request {
        ControlRequest::Status | ControlRequest::Pending | ControlRequest::Metrics => {
            record.read_only = true;
            record.resource = "the agent's state".into();
        }
        ControlRequest::Cancel(CancelTarget::One(id)) => {
            record.payment_request_id = Some(id.to_string());
            record.resource = format!("payment {id}");
        }
        ControlRequest::Cancel(CancelTarget::All) => {
            record.command = "cancel --all".into();
            record.resource = "every pending payment".into();
        }
        ControlRequest::Disconnect => record.resource = "the connection".into(),
        ControlRequest::Reconnect => record.resource = "the connection".into(),
        ControlRequest::ApmUnlink { account, .. } => {
            let account = match account {
                ApmAccount::Key(key) => format!("APM key {key}"),
                ApmAccount::ConnectionId(id) => format!("APM connection {id}"),
            };
            record.resource = account.clone();
            record.apm_account = Some(account);
        }
        ControlRequest::MasterpassUnlink { session_id } => {
            record.session_id = Some(session_id.to_string());
            record.resource = format!("Masterpass session {session_id}");
        }
        ControlRequest::CheckoutDeactivate { id } => {
            record.checkout_id = Some(*id);
            record.resource = format!("checkout {id}");
        }
        ControlRequest::RestartKeepingPending { start } => {
            record.command = if *start {
                "restart --keep-pending"
            } else {
                "restart --keep-pending --no-start"
            }
            .into();
            record.resource = "the agent".into();
        }
    }
    match &response.outcome {
        Ok(reply) => {
            let failed: &[CancelFailure] = match reply {
                ControlReply::Cancel(report) => {
                    record.payment_request_ids.clone_from(&report.cancelled);
                    &report.failed
                }
                ControlReply::Disconnect(report) => {
                    record.connection_id.clone_from(&report.connection_id);
                    record.payment_request_ids.clone_from(&report.cancelled);
                    &report.failed
                }
                ControlReply::Reconnect(report) => {
                    record.connection_id.clone_from(&report.connection_id);
                    &[]
                }
                ControlReply::Status(_)
                | ControlReply::Pending(_)
                | ControlReply::Metrics(_)
                | ControlReply::ApmUnlink(_)
                | ControlReply::MasterpassUnlink(_)
                | ControlReply::CheckoutDeactivate(_)
                | ControlReply::Restart(_) => &[],
            };
            record.failed_payment_request_ids = failed
                .iter()
                .map(|f| f.payment_request_id.clone())
                .collect();
            if !failed.is_empty() {
                record.outcome = Some(Outcome::Partial);
                record.reason = Some(
                    failed
                        .iter()
                        .map(|f| format!("{}: {}", f.payment_request_id, f.error.message))
                        .collect::<Vec<_>>()
                        .join("; "),
                );
            }
        }
        Err(error) => {
            record.outcome = Some(outcome_of(error.kind));
            record.error_code = error.error_code;
            record.reason = Some(error.message.clone());
        }
    }
    record
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::control::protocol::{CancelReport, ControlError};

    #[test]
    fn a_partly_failed_cancel_all_names_both_lists() {
        let response = ControlResponse::ok(ControlReply::Cancel(CancelReport {
            cancelled: vec!["a".into()],
            failed: vec![CancelFailure {
                payment_request_id: "b".into(),
                error: ControlError::api_rejected("no", None, Some(7)),
            }],
        }));
        let record = record(&ControlRequest::Cancel(CancelTarget::All), &response);
        assert_eq!(record.outcome, Some(Outcome::Partial));
        assert_eq!(record.payment_request_ids, ["a"]);
        assert_eq!(record.failed_payment_request_ids, ["b"]);
        assert_eq!(record.reason.as_deref(), Some("b: no"));
        assert!(!record.read_only);
    }

    #[test]
    fn a_refusal_carries_the_apis_code_and_message() {
        let response = ControlResponse::error(ControlError::api_rejected(
            "session unknown",
            None,
            Some(12),
        ));
        let id = uuid::Uuid::nil();
        let record = record(
            &ControlRequest::MasterpassUnlink { session_id: id },
            &response,
        );
        assert_eq!(record.outcome, Some(Outcome::Refused));
        assert_eq!(record.error_code, Some(12));
        assert_eq!(record.session_id, Some(id.to_string()));
    }

    #[test]
    fn reads_are_read_only() {
        let response = ControlResponse::error(ControlError::new(ControlErrorKind::Busy, "x"));
        assert!(record(&ControlRequest::Status, &response).read_only);
        assert!(record(&ControlRequest::Metrics, &response).read_only);
        assert!(!record(&ControlRequest::Reconnect, &response).read_only);
    }
}

//! The daemon's answers: one terminal request, one operator command, and the views of the
//! agent's state they and the metrics show. Each runs in a task of its own, so the main loop
//! never waits on one.

use std::sync::Arc;

use super::connection;
use super::core::{Core, SaleOutcome};
use crate::build_info;
use crate::control::{
    self, AbandonedSaleView, ApmAccount, CancelFailure, CancelReport, CancelTarget,
    ConnectionReport, ControlError, ControlReply, ControlRequest, ControlResponse,
    DisconnectReport, PendingPaymentView, PendingReport, RejectionView, RetryAfterView,
    SerialPortView, StatusReport, StorageView, TerminalLinkStatus, UnlinkReport,
};
use crate::ids::PaymentRequestId;
use crate::metrics::{self, METRICS};
use crate::outcome::{ConnectionState, Refusal};
use crate::paywall::{ApmTarget, Endpoint};
use crate::serial::message::{ErrorCode, PaymentResultStatus, Reply, TerminalRequest};
use crate::serial::{self, IncomingRequest};
use crate::state::CancelReason;

/// One request from the terminal (docs/serial-protocol.md §3, terminal → agent).
pub(super) async fn handle_terminal(core: Arc<Core>, request: IncomingRequest) {
    let reply = match request.request().clone() {
        TerminalRequest::Sale(order) => {
            let merchant_unique_code = order.merchant_unique_code;
            let reply = match core.sale(order).await {
                SaleOutcome::Started { payment_request_id } => Reply::SaleStarted {
                    payment_request_id: payment_request_id.into(),
                    merchant_unique_code,
                },
                SaleOutcome::Refused(refusal) => Reply::refused(&refusal),
            };
            match &reply {
                Reply::SaleStarted { .. } => METRICS.sales_started.inc(),
                Reply::Error { code, .. } => METRICS.sale_refused(code.index()),
                _ => {}
            }
            reply
        }
        TerminalRequest::PaymentStarted { payment_request_id } => {
            match payment_id(&payment_request_id) {
                Ok(id) => core.track_payment_started_elsewhere(&id).await,
                Err(refusal) => Err(refusal),
            }
            .map_or_else(|refusal| Reply::refused(&refusal), |()| Reply::OK)
        }
        TerminalRequest::PaymentResult {
            payment_request_id,
            status,
        } => match payment_id(&payment_request_id) {
            Ok(id) => {
                core.payment_result(&id, status == PaymentResultStatus::Succeeded)
                    .await
            }
            Err(refusal) => Err(refusal),
        }
        .map_or_else(|refusal| Reply::refused(&refusal), |()| Reply::OK),
        TerminalRequest::Cancel {
            payment_request_id: Some(id),
        } => match payment_id(&id) {
            Err(refusal) => Reply::refused(&refusal),
            Ok(id) => match core.cancel(&id, CancelReason::Terminal).await {
                Ok(()) => Reply::cancelled(vec![id.into()]),
                Err(refusal) => Reply::refused(&refusal),
            },
        },
        TerminalRequest::Cancel {
            payment_request_id: None,
        } => {
            let summary = core
                .cancel_all(CancelReason::Terminal, core.config().shutdown.concurrency)
                .await;
            match summary.failed.into_iter().next() {
                Some((_, refusal)) if summary.cancelled.is_empty() => Reply::refused(&refusal),
                _ => Reply::cancelled(texts(summary.cancelled)),
            }
        }
        TerminalRequest::Status => Reply::status(
            core.connection_id(),
            core.connection_state() == ConnectionState::Connected,
            texts(core.pending_ids()),
        ),
        TerminalRequest::Ping => Reply::Pong,
    };
    if let Some(record) = super::audit::record(request.request(), &reply) {
        crate::audit::write_terminal(
            &core.config().serial.device.display().to_string(),
            request.id(),
            &record,
        );
    }
    request.reply(reply);
}

/// One operator command from the control socket (docs/operations.md (Operator commands)).
pub(super) async fn handle_control(core: &Arc<Core>, request: ControlRequest) -> ControlResponse {
    let reply = match request {
        ControlRequest::Status => Ok(ControlReply::Status(Box::new(status_report(core)))),
        ControlRequest::Metrics => Ok(ControlReply::Metrics(metrics::render(
            &gauges(core),
            metrics::Format::OpenMetrics,
        ))),
        ControlRequest::Pending => Ok(ControlReply::Pending(PendingReport {
            pending: core.with_store(|s| PendingPaymentView::all(s.state())),
            abandoned: core.with_store(|s| AbandonedSaleView::all(s.state())),
        })),
        ControlRequest::Cancel(CancelTarget::One(id)) => {
            let id = PaymentRequestId::from(id);
            core.cancel(&id, CancelReason::Operator).await.map(|()| {
                ControlReply::Cancel(CancelReport {
                    cancelled: vec![id.into()],
                    failed: Vec::new(),
                })
            })
        }
        ControlRequest::Cancel(CancelTarget::All) => {
            let summary = core
                .cancel_all(CancelReason::Operator, core.config().shutdown.concurrency)
                .await;
            Ok(ControlReply::Cancel(CancelReport {
                cancelled: texts(summary.cancelled),
                failed: failures(summary.failed),
            }))
        }
        ControlRequest::Disconnect => {
            connection::operator_disconnect(core)
                .await
                .map(|(id, summary)| {
                    ControlReply::Disconnect(DisconnectReport {
                        connection_id: Some(id),
                        connection: core.connection_state().into(),
                        cancelled: texts(summary.cancelled),
                        failed: failures(summary.failed),
                    })
                })
        }
        ControlRequest::Reconnect => connection::operator_reconnect(core).await.map(|id| {
            ControlReply::Reconnect(ConnectionReport {
                connection_id: Some(id),
                connection: core.connection_state().into(),
            })
        }),
        ControlRequest::ApmUnlink { phone, account } => {
            let target = match account {
                ApmAccount::Key(key) => ApmTarget::Key(key),
                ApmAccount::ConnectionId(id) => ApmTarget::ConnectionId(id),
            };
            core.client()
                .apm_unlink(&phone, target)
                .await
                .map(|_| ControlReply::ApmUnlink(UnlinkReport::default()))
                .map_err(|e| Refusal::from_api_error(&e))
        }
        ControlRequest::MasterpassUnlink { session_id } => core
            .client()
            .masterpass_unlink(session_id)
            .await
            .map(|unlinked| {
                ControlReply::MasterpassUnlink(UnlinkReport {
                    message: None,
                    retrieval_reference_number: unlinked.retrieval_reference_number,
                })
            })
            .map_err(|e| Refusal::from_api_error(&e)),
        ControlRequest::CheckoutDeactivate { id } => core
            .client()
            .checkout_deactivate(id)
            .await
            .map(|_| ControlReply::CheckoutDeactivate(UnlinkReport::default()))
            .map_err(|e| Refusal::from_api_error(&e)),
        // The main loop takes these itself and stops; one that reaches this is during a stop.
        ControlRequest::RestartKeepingPending { .. } => Err(Refusal::Busy),
    };
    match reply {
        Ok(reply) => ControlResponse::ok(reply),
        Err(refusal) => ControlResponse::error(ControlError::refused(&refusal)),
    }
}

/// A payment id as the terminal or the operator wrote it, parsed where it enters the agent.
fn payment_id(text: &str) -> Result<PaymentRequestId, Refusal> {
    PaymentRequestId::parse(text).map_err(|e| Refusal::InvalidRequest(e.to_string()))
}

/// Ids as the wire formats carry them.
fn texts(ids: Vec<PaymentRequestId>) -> Vec<String> {
    ids.into_iter().map(String::from).collect()
}

fn failures(failed: Vec<(PaymentRequestId, Refusal)>) -> Vec<CancelFailure> {
    failed
        .into_iter()
        .map(|(payment_request_id, refusal)| CancelFailure {
            payment_request_id: payment_request_id.into(),
            error: ControlError::refused(&refusal),
        })
        .collect()
}

fn status_report(core: &Core) -> StatusReport {
    StatusReport {
        version: build_info::VERSION.to_owned(),
        commit: build_info::COMMIT.to_owned(),
        connection_id: core.connection_id(),
        connection: core.connection_state().into(),
        rejection: core.rejection().map(RejectionView::from),
        connection_problem: core.connection_problem(),
        terminal_link: if core.link().state() == serial::LinkState::Up {
            TerminalLinkStatus::Up
        } else {
            TerminalLinkStatus::Down
        },
        terminal: core.terminal_identity(),
        serial_port: SerialPortView {
            open: Some(core.link().state() != serial::LinkState::Closed),
            ..core.port_stats().into()
        },
        pending: core.with_store(|s| PendingPaymentView::all(s.state())),
        abandoned: core.with_store(|s| AbandonedSaleView::all(s.state())),
        terminal_last_answered: METRICS.terminal_last_answered().map(control::rfc3339),
        api_last_answered: METRICS.api_last_answered().map(control::rfc3339),
        storage: storage_view(core),
        api_retry_after: core.client().held().map(RetryAfterView::from),
    }
}

// `statvfs` counts are 32 bits wide on 32-bit ARM.
#[allow(clippy::unnecessary_cast)]
fn storage_view(core: &Core) -> StorageView {
    let health = core.storage_health();
    let directory = core.with_store(|s| s.directory().to_owned());
    let space = nix::sys::statvfs::statvfs(&directory).ok().map(|fs| {
        let block = fs.fragment_size() as u64;
        (
            (fs.blocks_available() as u64).saturating_mul(block),
            (fs.blocks() as u64).saturating_mul(block),
        )
    });
    let (last_error, last_error_at) = match health.last_error {
        Some((error, at)) => (Some(error), Some(control::rfc3339(at))),
        None => (None, None),
    };
    StorageView {
        directory: directory.display().to_string(),
        writable: !health.failing,
        last_error,
        last_error_at,
        free_bytes: space.map(|(free, _)| free),
        free_space_low: space.is_some_and(|(free, total)| StorageView::is_low(free, total)),
    }
}

/// What the metrics need from the daemon at the moment of the exposition.
/// The label values of the counters that name another layer's enum, from each enum's own list.
fn metric_labels() -> metrics::Labels {
    metrics::Labels {
        codes: ErrorCode::ALL.map(ErrorCode::as_str),
        reasons: CancelReason::ALL.map(CancelReason::as_str),
        operations: Endpoint::ALL.map(Endpoint::label),
    }
}

pub(super) fn gauges(core: &Core) -> metrics::Gauges {
    metrics::Gauges {
        pending: core.pending_count(),
        abandoned: core.with_store(|s| s.state().abandoned_sales().count()),
        connected: core.connection_state() == ConnectionState::Connected,
        link_up: core.link().state() == serial::LinkState::Up,
        port_reopens: core.port_stats().reopens,
        terminal: core
            .terminal_identity()
            .map(|terminal| metrics::TerminalInfo {
                protocol: terminal.protocol_version(),
                model: terminal.model,
                firmware: terminal.firmware,
            }),
        labels: metric_labels(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_counter_is_labelled_by_the_value_whose_place_it_holds() {
        let labels = metric_labels();
        for (i, code) in ErrorCode::ALL.into_iter().enumerate() {
            assert_eq!(code.index(), i);
            assert_eq!(
                serde_json::to_value(code).unwrap(),
                serde_json::json!(labels.codes[i]),
                "the code label is the wire's spelling"
            );
        }
        for (i, reason) in CancelReason::ALL.into_iter().enumerate() {
            assert_eq!(reason.index(), i);
            assert_eq!(labels.reasons[i], reason.as_str());
        }
        for (i, endpoint) in Endpoint::ALL.into_iter().enumerate() {
            assert_eq!(endpoint.index(), i, "{endpoint:?}");
            assert_eq!(labels.operations[i], endpoint.label());
        }
    }
}

//! The terminal outside a sale: the payments it reports (started elsewhere, final), the
//! notifications the agent sends it, and who it said it is.

// Time and count arithmetic: docs/architecture.md, "Lint policy".
#![warn(clippy::arithmetic_side_effects)]

use std::sync::Arc;
use std::time::SystemTime;

use tracing::{info, warn};

use super::core::Core;
use crate::ids::PaymentRequestId;
use crate::outcome::Refusal;
use crate::serial::message::{
    AgentReadiness, AgentRequest, Reply, TerminalIdentity, PROTOCOL_VERSION,
};
use crate::state::{PaymentOutcome, PaymentSource, PendingPayment};
use crate::sync::lock;

impl Core {
    /// `payment_started`: track a payment started elsewhere.
    pub(crate) async fn track_payment_started_elsewhere(
        &self,
        payment_request_id: &PaymentRequestId,
    ) -> Result<(), Refusal> {
        let payment = PendingPayment::new(PaymentSource::Elsewhere, SystemTime::now());
        self.mutate_store(|s| s.track_payment(payment_request_id, payment))
            .await
            .map_err(|e| Refusal::Internal(format!("cannot write state: {e}")))?;
        info!(
            payment_request_id = payment_request_id.as_str(),
            "tracking payment {payment_request_id}, started elsewhere"
        );
        Ok(())
    }

    /// `payment_result`: the payment is final.
    pub(crate) async fn payment_result(
        &self,
        payment_request_id: &PaymentRequestId,
        succeeded: bool,
    ) -> Result<(), Refusal> {
        let outcome = if succeeded {
            PaymentOutcome::Succeeded
        } else {
            PaymentOutcome::Failed
        };
        let was_pending = self
            .mutate_store(|s| s.finish_payment(payment_request_id, outcome, SystemTime::now()))
            .await
            .map_err(|e| Refusal::Internal(format!("cannot write state: {e}")))?;
        if !was_pending {
            return Err(Refusal::NotFound(payment_request_id.to_string()));
        }
        info!(
            payment_request_id = payment_request_id.as_str(),
            succeeded,
            "payment {payment_request_id} final: {}",
            if succeeded { "succeeded" } else { "failed" }
        );
        Ok(())
    }

    /// Sends a notification to the terminal without waiting for it; a terminal that is not
    /// there learns the state from `status` when it is back. The answer to `agent_state`
    /// `ready` says who the terminal is (docs/serial-protocol.md §3 "Versions"): it is kept,
    /// and a terminal speaking a newer protocol than this build is still spoken to in this
    /// build's version, with a warning.
    pub(crate) fn tell_terminal(&self, request: AgentRequest) {
        let link = self.serial.link.clone();
        let greeting = matches!(
            request,
            AgentRequest::AgentState {
                state: AgentReadiness::Ready,
                ..
            }
        );
        let terminal = Arc::clone(&self.terminal);
        // One task type for every notification: each spawned future type costs the terminal's
        // binary a copy of tokio's task code.
        self.notifications.spawn(async move {
            match link.request(request).await {
                Ok(Reply::Ok(identity)) if greeting => {
                    let identity = identity.sanitized();
                    let protocol = identity.protocol_version();
                    if protocol > PROTOCOL_VERSION {
                        warn!(
                            protocol,
                            "the terminal ({identity}) speaks a newer protocol than this agent \
                             (version {PROTOCOL_VERSION}): it must fall back to version \
                             {PROTOCOL_VERSION}"
                        );
                    } else {
                        info!(protocol, "terminal: {identity}");
                    }
                    *lock(&terminal) = Some(identity);
                }
                Ok(Reply::Error { code, message }) if greeting => warn!(
                    "the terminal refused agent_state ready ({code:?}: {message}); it may speak \
                     no protocol version at or below {PROTOCOL_VERSION}"
                ),
                Ok(_) => {}
                Err(e) => info!("the terminal did not take a notification: {e}"),
            }
        });
    }

    /// Who the terminal said it is, once it answered `agent_state` `ready`.
    pub(crate) fn terminal_identity(&self) -> Option<TerminalIdentity> {
        lock(&self.terminal).clone()
    }

    /// Waits until every notification sent so far was taken or given up by the link (a
    /// shutdown's `payment_cancelled` must not die with the process).
    pub(crate) async fn notifications_sent(&self) {
        self.notifications.close();
        self.notifications.wait().await;
    }
}

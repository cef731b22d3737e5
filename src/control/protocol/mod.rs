//! The control protocol's messages: what an operator command asks the daemon and what the daemon
//! answers (docs/operations.md (Operator commands); the wire format is documented in `docs/operations.md`).
//!
//! One request is one JSON object on one line; one response is one JSON object on one line.
//! Requests are checked strictly (unknown commands and unknown or missing fields are refused),
//! because a field silently ignored by an older daemon could change what an operator meant.
//! Nothing secret is part of any message: the daemon holds the API keys.
//!
//! - [`request`]: what an operator asks, and how strictly it is read.
//! - [`response`]: the answer's envelope and each command's report.
//! - [`error`]: why a request failed, and the operator's form of the agent's refusals.
//! - [`views`]: what `status` and `pending` show of the agent's state.
//! - [`vocabulary`]: the protocol's own enums (cancel reasons, connection and link states),
//!   converted explicitly from the agent's.

mod error;
mod request;
mod response;
mod views;
mod vocabulary;

pub use error::{ControlError, ControlErrorKind};
pub use request::{ApmAccount, CancelTarget, ControlRequest};
pub use response::{
    CancelFailure, CancelReport, ConnectionReport, ControlReply, ControlResponse, DisconnectReport,
    PendingReport, UnlinkReport,
};
pub use views::{
    rfc3339, AbandonedSaleView, PendingPaymentView, RejectionView, RetryAfterView, SerialPortView,
    StatusReport, StorageView,
};
pub use vocabulary::{CancelReason, ConnectionStatus, TerminalLinkStatus};

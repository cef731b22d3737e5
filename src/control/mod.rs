//! The operators' control channel (docs/operations.md (Operator commands)): a Unix stream socket on which the
//! operator commands of the CLI ask the running daemon for status, cancels, disconnect/reconnect
//! and the PaymentAPI unlink operations. The daemon holds the API keys; nothing secret crosses
//! this channel.
//!
//! - `protocol`: the request and response messages (one JSON line each way), the views of the
//!   agent's state they carry and the protocol's own enums.
//! - `server`: binding the socket and serving it; each request reaches the daemon core as a
//!   [`ControlCall`] on a channel, and the core answers on the call's oneshot.
//! - `client`: one request, one answer, for the CLI.
//!
//! The modules are private: the public surface is the list re-exported below. The wire format
//! and the exit codes are documented for operators in `docs/operations.md`.

mod audit;
mod client;
mod protocol;
mod server;

pub use client::{call, ClientError};
pub use protocol::{
    rfc3339, AbandonedSaleView, ApmAccount, CancelFailure, CancelReason, CancelReport,
    CancelTarget, ConnectionReport, ConnectionStatus, ControlError, ControlErrorKind, ControlReply,
    ControlRequest, ControlResponse, DisconnectReport, PendingPaymentView, PendingReport,
    RejectionView, RetryAfterView, SerialPortView, StatusReport, StorageView, TerminalLinkStatus,
    UnlinkReport,
};
pub use server::{adopt, bind, serve, serve_with_limits, ControlCall, ServeLimits};

/// Where operators' commands look for the daemon when neither `--socket` nor
/// `POS_AGENT_SOCKET` says otherwise: the default of `[control] socket`, which the
/// configuration owns.
pub use crate::config::DEFAULT_SOCKET;

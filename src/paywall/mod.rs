//! Client for Paywall's PhysicalAPI and the PaymentAPI unlink/deactivate calls
//! (docs/architecture.md, docs/payment-api.md). The agent builds one
//! [`PaywallClient`] from `[paywall]` and calls it; `docs/payment-api.md` lists every endpoint as
//! implemented and every choice made where the API's documentation has a gap.

mod answer;
mod client;
mod endpoint;
pub(crate) mod envelope;
mod error;
pub mod retry_after;
mod types;

pub use crate::retry::RetryPolicy;
pub use answer::Answer;
pub use client::{system_trust_anchors, PaywallClient, CA_BUNDLES};
pub use endpoint::Endpoint;
pub use error::{ApiError, ClientSetupError, TransportKind};
pub use retry_after::{Hold, MAX_RETRY_AFTER};
pub use types::{
    amount, ApmTarget, ApmUnlinked, CancelAccepted, ConnectionInfo, MasterpassUnlinked, Page,
    PageRequest, PaymentActivity, PaymentListQuery, PaymentStatus, PaymentSummary, SaleAccepted,
    SaleRequest, TagCode, TerminalId, TerminalInfo, TerminalRef,
};

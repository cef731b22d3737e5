//! Why the agent could not carry out a request, in its own terms. The serial layer turns a
//! refusal into the terminal's `error` reply ([`crate::serial::Reply::refused`]) and the control
//! layer into an operator's error ([`crate::control::ControlError::refused`]): the agent itself
//! speaks neither wire format.

use crate::paywall::{AgentRejection, ApiError};

/// Why a request could not be carried out: one vocabulary for the terminal (`error` codes of
/// docs/serial-protocol.md §3) and the operator (control socket error kinds) understand.
#[derive(Debug, Clone, thiserror::Error)]
pub enum Refusal {
    #[error("{0}")]
    InvalidRequest(String),
    #[error("the agent is stopping and accepts no new sale")]
    Busy,
    #[error("there is no active payment-API connection")]
    NotConnected,
    #[error("payment {0} is not pending here")]
    NotFound(String),
    #[error("the payment API refused: {message}")]
    ApiRejected {
        message: String,
        client_message: Option<String>,
        error_code: Option<i64>,
    },
    #[error("the payment API could not be reached: {0}")]
    ApiUnavailable(String),
    /// The API refuses the agent itself (its keys, or its base URL): see
    /// [`ApiError::agent_rejection`].
    #[error("{0}")]
    AgentRejected(AgentRejection),
    #[error("{0}")]
    Internal(String),
}

impl Refusal {
    /// The refusal a failed payment API call amounts to.
    pub fn from_api_error(error: &ApiError) -> Self {
        if let Some(rejection) = error.agent_rejection() {
            return Refusal::AgentRejected(rejection);
        }
        match error {
            ApiError::Rejected {
                message,
                client_message,
                error_code,
                ..
            } => Refusal::ApiRejected {
                message: message.clone().unwrap_or_default(),
                client_message: client_message.clone(),
                error_code: *error_code,
            },
            // Refused before it was sent, for its content: the request, not the API, is at fault.
            ApiError::InvalidRequest { .. } => Refusal::InvalidRequest(error.to_string()),
            other => Refusal::ApiUnavailable(other.to_string()),
        }
    }
}

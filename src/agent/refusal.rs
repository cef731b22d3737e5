//! The refusal a failed payment API call amounts to: the one place where the client's errors
//! become the agent's [`Refusal`] (defined with the other outcomes in [`crate::outcome`]).

use crate::outcome::{Refusal, UnavailableKind};
use crate::paywall::ApiError;

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
            other => Refusal::ApiUnavailable {
                kind: if other.is_clock_problem() {
                    UnavailableKind::ClockProblem
                } else {
                    UnavailableKind::Other
                },
                detail: other.to_string(),
            },
        }
    }
}

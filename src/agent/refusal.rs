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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::outcome::UnavailableKind;
    use crate::paywall::{Endpoint, TransportKind};

    fn transport(kind: TransportKind) -> ApiError {
        ApiError::Transport {
            endpoint: Endpoint::Reconnect,
            kind,
            detail: "handshake failed".into(),
            outcome_unknown: false,
        }
    }

    #[test]
    fn a_certificate_the_clock_does_not_accept_is_a_clock_problem_by_kind() {
        let error = transport(TransportKind::CertificateTime);
        let refusal = Refusal::from_api_error(&error);
        let Refusal::ApiUnavailable { kind, detail } = &refusal else {
            panic!("{refusal:?}");
        };
        assert_eq!(*kind, UnavailableKind::ClockProblem);
        assert_eq!(*detail, error.to_string());
        assert_eq!(
            refusal.to_string(),
            format!("the payment API could not be reached: {error}")
        );
        for other in [
            TransportKind::Connect,
            TransportKind::Timeout,
            TransportKind::Certificate,
        ] {
            let refusal = Refusal::from_api_error(&transport(other));
            assert!(
                matches!(
                    refusal,
                    Refusal::ApiUnavailable {
                        kind: UnavailableKind::Other,
                        ..
                    }
                ),
                "{other:?}: {refusal:?}"
            );
        }
    }
}

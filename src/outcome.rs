//! The agent's outcomes that other layers put on their wire: why a request was refused
//! ([`Refusal`]), the state of the payment API connection ([`ConnectionState`]) and the API's
//! refusal of the agent itself ([`AgentRejection`]). A leaf: it uses no other module of the
//! crate, so the serial and control layers can name these without depending on the agent, and
//! each converts them to its own wire format (docs/architecture.md, "Layers").

use std::fmt;

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
    #[error("the payment API could not be reached: {detail}")]
    ApiUnavailable {
        /// What kept the API out of reach, for the code that reacts to it.
        kind: UnavailableKind,
        /// For people: what failed.
        detail: String,
    },
    /// The API refuses the agent itself (its keys, or its base URL): see
    /// `paywall::ApiError::agent_rejection`.
    #[error("{0}")]
    AgentRejected(AgentRejection),
    #[error("{0}")]
    Internal(String),
}

impl Refusal {
    /// The payment API could not be reached, for no reason the agent reacts to by itself.
    pub fn api_unavailable(detail: impl Into<String>) -> Self {
        Refusal::ApiUnavailable {
            kind: UnavailableKind::Other,
            detail: detail.into(),
        }
    }
}

/// Why the payment API could not be reached, as far as the agent acts on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UnavailableKind {
    /// The API's certificate is not valid at this machine's clock: retried until the clock is
    /// right, and logged once rather than at every attempt.
    ClockProblem,
    /// Anything else: the network, a timeout, a 5xx, a `Retry-After` hold.
    Other,
}

/// The state of the payment API connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConnectionState {
    Connected,
    Disconnected,
    Connecting,
    /// The API refuses the agent's keys or has no such endpoint (HTTP 401, 403, 404): nothing
    /// works until the configuration is fixed; the agent tries again at most once a minute.
    Rejected,
}

impl fmt::Display for ConnectionState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Connected => "connected",
            Self::Disconnected => "disconnected",
            Self::Connecting => "connecting",
            Self::Rejected => "rejected",
        })
    }
}

/// The API refuses the agent itself (see `paywall::ApiError::agent_rejection`): `status` shows it as
/// `connection: rejected`, with this HTTP status and message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentRejection {
    pub http_status: u16,
    /// For people: what the API said and which setting to check. Never a key's value.
    pub message: String,
}

impl fmt::Display for AgentRejection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

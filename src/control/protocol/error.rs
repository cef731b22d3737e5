//! Why a request failed, in the operator's terms: [`ControlError`], whose
//! [`ControlErrorKind`] decides the command's exit code, and [`ControlError::refused`], the
//! operator's form of the agent's [`Refusal`].

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::outcome::Refusal;

/// Why a request failed. `kind` decides the command's exit code (see `docs/operations.md`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ControlError {
    pub kind: ControlErrorKind,
    /// For `api_rejected` the API's `Message`; else the daemon's explanation.
    pub message: String,
    /// For `api_rejected` the API's `ClientMessage`, when it gave one.
    #[serde(default)]
    pub client_message: Option<String>,
    /// For `api_rejected` the API's `ErrorCode`, when it gave one.
    #[serde(default)]
    pub error_code: Option<i64>,
}

impl ControlError {
    pub fn new(kind: ControlErrorKind, message: impl Into<String>) -> Self {
        Self {
            kind,
            message: message.into(),
            client_message: None,
            error_code: None,
        }
    }

    /// The payment API refused the request (`Failed`, `ErrorCode` ≠ 0, ...).
    pub fn api_rejected(
        message: impl Into<String>,
        client_message: Option<String>,
        error_code: Option<i64>,
    ) -> Self {
        Self {
            kind: ControlErrorKind::ApiRejected,
            message: message.into(),
            client_message,
            error_code,
        }
    }

    /// The error an operator's command gets for a request the agent refused.
    pub fn refused(refusal: &Refusal) -> Self {
        match refusal {
            Refusal::ApiRejected {
                message,
                client_message,
                error_code,
            } => Self::api_rejected(message.clone(), client_message.clone(), *error_code),
            Refusal::AgentRejected(rejection) => {
                Self::api_rejected(rejection.message.clone(), None, None)
            }
            other => {
                let kind = match other {
                    Refusal::InvalidRequest(_) => ControlErrorKind::InvalidRequest,
                    Refusal::Busy => ControlErrorKind::Busy,
                    Refusal::NotConnected => ControlErrorKind::NotConnected,
                    Refusal::NotFound(_) => ControlErrorKind::NotFound,
                    Refusal::ApiUnavailable { .. } => ControlErrorKind::ApiUnavailable,
                    Refusal::ApiRejected { .. }
                    | Refusal::AgentRejected(_)
                    | Refusal::Internal(_) => ControlErrorKind::Internal,
                };
                Self::new(kind, other.to_string())
            }
        }
    }
}

impl fmt::Display for ControlError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.kind.describe(), self.message)?;
        if let Some(client_message) = &self.client_message {
            write!(f, " (client message: {client_message})")?;
        }
        if let Some(code) = self.error_code {
            write!(f, " (error code {code})")?;
        }
        Ok(())
    }
}

impl std::error::Error for ControlError {}

/// The classes of failure an operator's script can act on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ControlErrorKind {
    /// The payment API refused the request; `message`/`client_message`/`error_code` are its own.
    ApiRejected,
    /// The payment API could not be reached (after the retries); try again later.
    ApiUnavailable,
    /// The payment named is not pending here.
    NotFound,
    /// The command needs the API connection, which is not up (`disconnect`ed or connecting).
    NotConnected,
    /// The daemon cannot take the request now: it is stopping, or too many control connections
    /// are open.
    Busy,
    /// The request could not be read or is not a valid command.
    InvalidRequest,
    /// Anything else that went wrong inside the daemon.
    Internal,
}

impl ControlErrorKind {
    /// A few words for people, used before the message.
    pub fn describe(self) -> &'static str {
        match self {
            Self::ApiRejected => "the payment API refused",
            Self::ApiUnavailable => "the payment API could not be reached (try again later)",
            Self::NotFound => "not found",
            Self::NotConnected => "not connected",
            Self::Busy => "the daemon is busy (try again later)",
            Self::InvalidRequest => "invalid request",
            Self::Internal => "internal error",
        }
    }
}

//! The control protocol's own words for the agent's states: why a payment is being cancelled
//! ([`CancelReason`]), the state of the payment API connection ([`ConnectionStatus`]) and of the
//! terminal link ([`TerminalLinkStatus`]), spelt as `docs/operations.md` lists them.
//!
//! The agent's enums (`state::CancelReason`, the state file's; `outcome::ConnectionState`) are
//! converted here, one arm per variant: a value the agent adds reaches operators' scripts only
//! through a line written here, and the state file's format can change without changing this one.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::outcome::ConnectionState;
use crate::state;

/// Why a cancel was asked for (`pending[].cancel_reason`). An operator's `disconnect` cancels
/// with reason `operator`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CancelReason {
    Operator,
    Terminal,
    Shutdown,
    Timeout,
    /// The sale's outcome was unknown when its reply was due; the terminal was told it failed,
    /// and the payment turned up later.
    Abandoned,
}

impl From<state::CancelReason> for CancelReason {
    fn from(reason: state::CancelReason) -> Self {
        match reason {
            state::CancelReason::Operator => Self::Operator,
            state::CancelReason::Terminal => Self::Terminal,
            state::CancelReason::Shutdown => Self::Shutdown,
            state::CancelReason::Timeout => Self::Timeout,
            state::CancelReason::Abandoned => Self::Abandoned,
        }
    }
}

impl fmt::Display for CancelReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Operator => "operator",
            Self::Terminal => "terminal",
            Self::Shutdown => "shutdown",
            Self::Timeout => "timeout",
            Self::Abandoned => "abandoned",
        })
    }
}

/// The state of the payment API connection (`status`'s `connection`, and `disconnect`'s and
/// `reconnect`'s answers).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ConnectionStatus {
    Connected,
    Disconnected,
    Connecting,
    /// The API refuses the agent's keys or has no such endpoint (HTTP 401, 403, 404): nothing
    /// works until the configuration is fixed; the agent tries again at most once a minute.
    Rejected,
}

impl From<ConnectionState> for ConnectionStatus {
    fn from(state: ConnectionState) -> Self {
        match state {
            ConnectionState::Connected => Self::Connected,
            ConnectionState::Disconnected => Self::Disconnected,
            ConnectionState::Connecting => Self::Connecting,
            ConnectionState::Rejected => Self::Rejected,
        }
    }
}

impl fmt::Display for ConnectionStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Connected => "connected",
            Self::Disconnected => "disconnected",
            Self::Connecting => "connecting",
            Self::Rejected => "rejected",
        })
    }
}

/// The state of the serial link to the terminal.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TerminalLinkStatus {
    Up,
    Down,
}

impl fmt::Display for TerminalLinkStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Up => "up",
            Self::Down => "down",
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const OPERATIONS: &str = include_str!("../../../docs/operations.md");

    /// The backquoted values in the description of `field` in the status object's table of
    /// docs/operations.md.
    fn documented(field: &str) -> Vec<&'static str> {
        let start = format!("| `{field}` |");
        let row = OPERATIONS
            .lines()
            .find(|line| line.starts_with(&start))
            .unwrap_or_else(|| panic!("docs/operations.md has no row for `{field}`"));
        row[start.len()..].split('`').skip(1).step_by(2).collect()
    }

    /// Checks that `value` goes on the wire as one of the values `field`'s row documents, that
    /// its `Display` (the operator commands' text) says the same and that it reads back as itself.
    fn assert_documented<T>(field: &str, value: T)
    where
        T: Serialize + for<'de> Deserialize<'de> + fmt::Display + fmt::Debug + PartialEq,
    {
        let wire = serde_json::to_value(&value).unwrap();
        let text = wire.as_str().expect("a JSON string");
        assert!(
            documented(field).contains(&text),
            "{value:?} is sent as {text:?}, which docs/operations.md does not list for `{field}`"
        );
        assert_eq!(value.to_string(), text);
        assert_eq!(serde_json::from_value::<T>(wire).unwrap(), value);
    }

    /// Each variant's place in the list below; a variant added to the enum stops the build here
    /// until it gets a place, and a place left out of the list fails the test.
    fn state_reason_place(reason: state::CancelReason) -> usize {
        match reason {
            state::CancelReason::Operator => 0,
            state::CancelReason::Terminal => 1,
            state::CancelReason::Shutdown => 2,
            state::CancelReason::Timeout => 3,
            state::CancelReason::Abandoned => 4,
        }
    }

    fn connection_state_place(state: ConnectionState) -> usize {
        match state {
            ConnectionState::Connected => 0,
            ConnectionState::Disconnected => 1,
            ConnectionState::Connecting => 2,
            ConnectionState::Rejected => 3,
        }
    }

    #[test]
    fn every_cancel_reason_of_the_state_reaches_operators_as_a_documented_value() {
        let all = [
            state::CancelReason::Operator,
            state::CancelReason::Terminal,
            state::CancelReason::Shutdown,
            state::CancelReason::Timeout,
            state::CancelReason::Abandoned,
        ];
        let places: Vec<_> = all.into_iter().map(state_reason_place).collect();
        assert_eq!(places, (0..all.len()).collect::<Vec<_>>());
        for reason in all {
            assert_documented("pending[].cancel_reason", CancelReason::from(reason));
        }
    }

    #[test]
    fn every_connection_state_reaches_operators_as_a_documented_value() {
        let all = [
            ConnectionState::Connected,
            ConnectionState::Disconnected,
            ConnectionState::Connecting,
            ConnectionState::Rejected,
        ];
        let places: Vec<_> = all.into_iter().map(connection_state_place).collect();
        assert_eq!(places, (0..all.len()).collect::<Vec<_>>());
        for state in all {
            assert_documented("connection", ConnectionStatus::from(state));
        }
    }

    #[test]
    fn both_terminal_link_states_are_documented() {
        for status in [TerminalLinkStatus::Up, TerminalLinkStatus::Down] {
            assert_documented("terminal_link", status);
        }
    }
}

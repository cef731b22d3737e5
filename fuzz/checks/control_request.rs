//! The control socket's request parser (docs/operations.md (The control socket)): one line from
//! whoever may connect to the socket. Properties, beyond "no panic":
//! - an accepted request re-encodes and parses to itself (round trip);
//! - a refused one is an `invalid_request` error with a message, and its answer is exactly one
//!   JSON line (the client reads one line) that parses back to the same error.

use pos_agent::control::{ControlErrorKind, ControlRequest, ControlResponse};

/// Checks one input; panics when a property does not hold.
pub fn check(line: &[u8]) {
    match ControlRequest::from_json(line) {
        Ok(request) => {
            let again = serde_json::to_vec(&request).expect("an accepted request encodes");
            assert_eq!(ControlRequest::from_json(&again).as_ref(), Ok(&request));
        }
        Err(error) => {
            assert_eq!(error.kind, ControlErrorKind::InvalidRequest);
            assert!(!error.message.is_empty());
            let answer = ControlResponse::error(error.clone()).to_line();
            assert_eq!(answer.last(), Some(&b'\n'));
            assert!(!answer[..answer.len() - 1].contains(&b'\n'));
            let read: ControlResponse =
                serde_json::from_slice(&answer).expect("the answer is JSON");
            assert_eq!(read, ControlResponse::error(error));
        }
    }
}

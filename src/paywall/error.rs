//! The client's errors. One type, [`ApiError`], tells apart the four ways a call can fail
//! (docs/payment-api.md §1): the API could not be reached, it answered with an HTTP error status, it
//! refused the request in its envelope, or its answer could not be read. Each says whether the
//! request may have been carried out anyway (`outcome_unknown`), which is what the agent needs
//! to resolve a sale whose reply was lost (docs/state.md). No variant ever holds a
//! header value or a key; a body excerpt is cut short and scrubbed of the client's own secrets.

use std::fmt;
use std::time::Duration;

use super::endpoint::Endpoint;
use crate::outcome::AgentRejection;

/// Why a [`crate::paywall::PaywallClient`] could not be built from `[paywall]`. Messages name the
/// configuration key and never its value.
#[derive(Debug, thiserror::Error)]
pub enum ClientSetupError {
    /// `[paywall]` breaks a rule (the problems, each naming its key).
    #[error("{0}")]
    InvalidSettings(String),
    #[error("cannot build the HTTP client: {0}")]
    Http(String),
    #[error(
        "no CA certificates to check the payment API's https certificate: {reason} (install the \
         ca-certificates package, or set SSL_CERT_FILE to a PEM bundle)"
    )]
    NoTrustAnchors { reason: String },
}

/// How the connection to the API failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TransportKind {
    /// No connection could be made; nothing was sent.
    Connect,
    /// The proxy could not be reached or would not connect to the API (`detail` names it,
    /// never its password); nothing was sent.
    Proxy,
    /// No complete answer within `paywall.request_timeout`.
    Timeout,
    /// The connection was closed or reset before a complete answer arrived.
    ConnectionLost,
    /// The TLS handshake refused the API's certificate (a name it does not cover, an issuer not
    /// in the CA bundle); nothing was sent.
    Certificate,
    /// The API's certificate is not valid at this machine's clock (not valid yet, or expired):
    /// most likely the clock is wrong, e.g. a terminal without RTC before time synchronisation.
    /// Nothing was sent.
    CertificateTime,
}

impl fmt::Display for TransportKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            TransportKind::Connect => "cannot connect",
            TransportKind::Proxy => "proxy failure",
            TransportKind::Timeout => "timed out",
            TransportKind::ConnectionLost => "connection closed or reset before the answer",
            TransportKind::Certificate => "the API's certificate was refused",
            TransportKind::CertificateTime => {
                "clock problem: the API's certificate is not valid at this machine's clock"
            }
        })
    }
}

/// A failed call of the payment API.
#[derive(Debug)]
pub enum ApiError {
    /// The API could not be reached, or the exchange broke off. For a call that is not safe to
    /// repeat (a sale, establishing a connection) `outcome_unknown` says the request may have
    /// been carried out: resolve it (for a sale: `find_payment_by_merchant_code`), never resend.
    Transport {
        endpoint: Endpoint,
        kind: TransportKind,
        detail: String,
        outcome_unknown: bool,
    },
    /// The API answered with a non-2xx HTTP status. `message`/`client_message` are taken from a
    /// failure envelope when the body holds one.
    Status {
        endpoint: Endpoint,
        status: u16,
        message: Option<String>,
        client_message: Option<String>,
        outcome_unknown: bool,
        /// With 429 or 503: how long its `Retry-After` asked to wait (capped,
        /// [`crate::paywall::MAX_RETRY_AFTER`]).
        retry_after: Option<Duration>,
    },
    /// Not sent: the API asked the agent to wait (a `Retry-After`), and `remaining` of that
    /// wait is left. Not retried by the client; the agent's loops wait it out.
    Held {
        endpoint: Endpoint,
        http_status: u16,
        remaining: Duration,
    },
    /// The API answered 2xx but its envelope says the request failed (`Succeeded: false`,
    /// `Failed: true`, `Result: false`, `ErrorCode` ≠ 0, or for Masterpass unlink
    /// `Body.Masterpass.StatusCode` outside 2xx). Not retried.
    Rejected {
        endpoint: Endpoint,
        message: Option<String>,
        client_message: Option<String>,
        error_code: Option<i64>,
    },
    /// The answer could not be read. `excerpt` is the start of the body, cut short and with the
    /// client's own key values replaced by `***`.
    Undecodable {
        endpoint: Endpoint,
        reason: String,
        excerpt: String,
        outcome_unknown: bool,
    },
    /// The call needs a setting that `[paywall]` does not have (the PaymentAPI address or the
    /// public key pair).
    NotConfigured {
        endpoint: Endpoint,
        key: &'static str,
    },
    /// The request was refused by the client before it was sent (e.g. a zero amount or a tag
    /// code longer than the API allows).
    InvalidRequest { endpoint: Endpoint, reason: String },
}

impl ApiError {
    /// True when repeating the same call may succeed: transport failures, HTTP 5xx, 408 and 429.
    /// The client retries only calls that are safe to repeat; a sale is never retried.
    pub fn is_retryable(&self) -> bool {
        match self {
            ApiError::Transport { .. } => true,
            ApiError::Status { status, .. } => *status >= 500 || *status == 408 || *status == 429,
            _ => false,
        }
    }

    /// How long the API asked to wait before the next call: the `Retry-After` of this answer,
    /// or what was left of an earlier one when this call was not sent.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            ApiError::Status { retry_after, .. } => *retry_after,
            ApiError::Held { remaining, .. } => Some(*remaining),
            _ => None,
        }
    }

    /// True when a call that is not safe to repeat may have been carried out although it
    /// failed: the caller must find out (for a sale, by its `MerchantUniqueCode`).
    pub fn outcome_unknown(&self) -> bool {
        match self {
            ApiError::Transport {
                outcome_unknown, ..
            }
            | ApiError::Status {
                outcome_unknown, ..
            }
            | ApiError::Undecodable {
                outcome_unknown, ..
            } => *outcome_unknown,
            _ => false,
        }
    }

    /// True when the request provably never left this machine: no connection could be made
    /// (DNS, refused, no route, connect timeout, TLS handshake), or the client refused it before
    /// sending. The API holds nothing from it, so a sale may be sent again.
    pub fn was_not_sent(&self) -> bool {
        matches!(
            self,
            ApiError::Transport {
                kind: TransportKind::Connect
                    | TransportKind::Proxy
                    | TransportKind::Certificate
                    | TransportKind::CertificateTime,
                ..
            } | ApiError::NotConfigured { .. }
                | ApiError::InvalidRequest { .. }
                | ApiError::Held { .. }
        )
    }

    /// True when the API's certificate is not valid at this machine's clock.
    pub fn is_clock_problem(&self) -> bool {
        matches!(
            self,
            ApiError::Transport {
                kind: TransportKind::CertificateTime,
                ..
            }
        )
    }

    /// True when the API refused the request in its envelope.
    pub fn is_rejection(&self) -> bool {
        matches!(self, ApiError::Rejected { .. })
    }

    /// When the API refused the agent itself rather than this one request: its keys (HTTP 401
    /// or 403) or its base URL (HTTP 404 on a documented path). Repeating any call cannot help
    /// until the configuration is fixed. The mapping is in `docs/payment-api.md`.
    pub fn agent_rejection(&self) -> Option<AgentRejection> {
        let ApiError::Status {
            endpoint,
            status,
            message,
            client_message,
            ..
        } = self
        else {
            return None;
        };
        let said = match (message.as_deref(), client_message.as_deref()) {
            (Some(m), _) if !m.trim().is_empty() => format!(": {m}"),
            (_, Some(c)) if !c.trim().is_empty() => format!(": {c}"),
            _ => String::new(),
        };
        let message = match status {
            401 | 403 => format!(
                "the payment API refused the agent's credentials (HTTP {status}{said}); check \
                 paywall.api_key_private and paywall.api_client_private"
            ),
            // The payment query's path is not documented (a gap): a 404 there may mean the
            // payment is unknown, not that the base URL is wrong.
            404 if *endpoint != Endpoint::QueryPayment => format!(
                "the payment API has no {} endpoint at the configured address \
                 (HTTP 404{said}); check paywall.physical_api_url",
                endpoint.operation()
            ),
            _ => return None,
        };
        Some(AgentRejection {
            http_status: *status,
            message,
        })
    }

    /// The call that failed (its name in messages: [`Endpoint::operation`], e.g. `async sale`).
    pub fn endpoint(&self) -> Endpoint {
        match self {
            ApiError::Transport { endpoint, .. }
            | ApiError::Status { endpoint, .. }
            | ApiError::Held { endpoint, .. }
            | ApiError::Rejected { endpoint, .. }
            | ApiError::Undecodable { endpoint, .. }
            | ApiError::NotConfigured { endpoint, .. }
            | ApiError::InvalidRequest { endpoint, .. } => *endpoint,
        }
    }
}

const UNKNOWN_OUTCOME_NOTE: &str =
    "; the request may have been carried out: its outcome is unknown and must be resolved, not resent";

fn api_messages(
    f: &mut fmt::Formatter<'_>,
    message: &Option<String>,
    client_message: &Option<String>,
) -> fmt::Result {
    let message = message.as_deref().filter(|m| !m.trim().is_empty());
    let client_message = client_message.as_deref().filter(|m| !m.trim().is_empty());
    match (message, client_message) {
        (Some(m), Some(c)) => write!(f, ": {m} ({c})"),
        (Some(m), None) => write!(f, ": {m}"),
        (None, Some(c)) => write!(f, ": {c}"),
        (None, None) => Ok(()),
    }
}

impl fmt::Display for ApiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let operation = self.endpoint().operation();
        match self {
            ApiError::Transport {
                endpoint: _,
                kind,
                detail,
                outcome_unknown,
            } => {
                match kind {
                    TransportKind::Proxy => write!(f, "{operation}: {kind}: {detail}")?,
                    _ => write!(
                        f,
                        "{operation}: the payment API could not be reached: {kind} ({detail})"
                    )?,
                }
                if *outcome_unknown {
                    f.write_str(UNKNOWN_OUTCOME_NOTE)?;
                }
                Ok(())
            }
            ApiError::Status {
                endpoint: _,
                status,
                message,
                client_message,
                outcome_unknown,
                retry_after,
            } => {
                write!(f, "{operation}: the payment API answered HTTP {status}")?;
                api_messages(f, message, client_message)?;
                if let Some(wait) = retry_after {
                    write!(f, "; it asks to be called again in {} s", wait.as_secs())?;
                }
                if *outcome_unknown {
                    f.write_str(UNKNOWN_OUTCOME_NOTE)?;
                }
                Ok(())
            }
            ApiError::Held {
                endpoint: _,
                http_status,
                remaining,
            } => write!(
                f,
                "{operation}: not sent: the payment API asked the agent to wait (HTTP \
                 {http_status} with Retry-After), {} s left",
                remaining
                    .as_secs()
                    .saturating_add(u64::from(remaining.subsec_nanos() > 0))
            ),
            ApiError::Rejected {
                endpoint: _,
                message,
                client_message,
                error_code,
            } => {
                write!(f, "{operation}: the payment API refused the request")?;
                api_messages(f, message, client_message)?;
                if let Some(code) = error_code {
                    write!(f, " [error code {code}]")?;
                }
                Ok(())
            }
            ApiError::Undecodable {
                endpoint: _,
                reason,
                excerpt,
                outcome_unknown,
            } => {
                write!(
                    f,
                    "{operation}: the payment API's answer could not be read ({reason}); it begins {excerpt:?}"
                )?;
                if *outcome_unknown {
                    f.write_str(UNKNOWN_OUTCOME_NOTE)?;
                }
                Ok(())
            }
            ApiError::NotConfigured { key, .. } => {
                write!(f, "{operation}: {key} is not configured")
            }
            ApiError::InvalidRequest { reason, .. } => {
                write!(f, "{operation}: not sent: {reason}")
            }
        }
    }
}

impl std::error::Error for ApiError {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejection_display_carries_message_client_message_and_code() {
        let e = ApiError::Rejected {
            endpoint: Endpoint::Cancel,
            message: Some("Payment not found".into()),
            client_message: Some("PaymentNotFound".into()),
            error_code: Some(-1),
        };
        assert_eq!(
            e.to_string(),
            "async cancel: the payment API refused the request: Payment not found (PaymentNotFound) [error code -1]"
        );
        assert!(e.is_rejection() && !e.is_retryable() && !e.outcome_unknown());
    }

    #[test]
    fn only_server_side_statuses_are_retryable() {
        let status = |status| ApiError::Status {
            endpoint: Endpoint::Reconnect,
            status,
            message: None,
            client_message: None,
            outcome_unknown: false,
            retry_after: None,
        };
        assert!(status(500).is_retryable());
        assert!(status(503).is_retryable());
        assert!(status(429).is_retryable());
        assert!(!status(401).is_retryable());
        assert!(!status(404).is_retryable());
    }

    #[test]
    fn keys_and_base_url_refusals_reject_the_agent_other_statuses_do_not() {
        let status = |endpoint, status| ApiError::Status {
            endpoint,
            status,
            message: Some("Unauthorized".into()),
            client_message: None,
            outcome_unknown: false,
            retry_after: None,
        };
        let rejection = status(Endpoint::Sale, 401).agent_rejection().unwrap();
        assert_eq!(rejection.http_status, 401);
        assert!(rejection.message.contains("HTTP 401: Unauthorized"));
        assert!(rejection.message.contains("paywall.api_key_private"));
        assert_eq!(
            status(Endpoint::Cancel, 403)
                .agent_rejection()
                .unwrap()
                .http_status,
            403
        );
        let wrong_url = status(Endpoint::Reconnect, 404).agent_rejection().unwrap();
        assert!(wrong_url.message.contains("paywall.physical_api_url"));
        assert_eq!(status(Endpoint::QueryPayment, 404).agent_rejection(), None);
        assert_eq!(status(Endpoint::Sale, 500).agent_rejection(), None);
        assert_eq!(status(Endpoint::Sale, 400).agent_rejection(), None);
    }

    #[test]
    fn unknown_outcome_is_spelled_out_for_operators() {
        let e = ApiError::Transport {
            endpoint: Endpoint::Sale,
            kind: TransportKind::Timeout,
            detail: "operation timed out".into(),
            outcome_unknown: true,
        };
        assert!(e.outcome_unknown());
        assert!(e.to_string().contains("outcome is unknown"));
    }
}

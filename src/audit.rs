//! Accountability (docs/operations.md, "Audit records"): one record in the journal for every
//! action that changes something, saying who or what asked (an operator by uid, user name and
//! pid; the terminal by serial device and request id), what was asked, which payment, connection,
//! session or checkout it touched, and how it ended.
//!
//! The records are ordinary log events of the target [`TARGET`], whose fields journald stores as
//! structured fields (`OPERATOR_UID`, `OUTCOME`, ...): `journalctl -u pos-agent
//! OPERATOR_UID=1001` is an auditor's query, and `pos-agent audit` prints them as a table. They
//! are written whatever `[log] level` says ([`always_enabled`]). Read-only requests (`status`,
//! `pending`, `metrics`, the terminal's `status`) are recorded at debug only, so that a health
//! gate polling every half second does not drown the record of what people did.
//!
//! This module knows no wire format: `control::audit` makes the [`Record`] of an operator's
//! request and its answer, `agent::audit` that of a terminal's request and its reply, and both
//! write it here.

use std::fmt::Write as _;

use tracing_subscriber::filter::{LevelFilter, Targets};

/// The target of every audit record (`journalctl -u pos-agent TARGET=pos_agent::audit`).
pub(crate) const TARGET: &str = "pos_agent::audit";

/// `filter` with the audit records always let through at info: an operator who turns the log
/// down to `warn` must not turn the record of people's actions off with it.
pub(crate) fn always_enabled(filter: Targets) -> Targets {
    if filter.would_enable(TARGET, &tracing::Level::INFO) {
        filter
    } else {
        filter.with_target(TARGET, LevelFilter::INFO)
    }
}

/// Who is on the other end of a control connection, as the kernel tells it (`SO_PEERCRED`).
/// What cannot be learnt is `None` and is written `unknown`, never as the daemon's own.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Operator {
    pub(crate) uid: Option<u32>,
    pub(crate) user: Option<String>,
    pub(crate) pid: Option<i32>,
}

impl Operator {
    /// The caller of `stream`. A uid that the kernel could only show as the overflow uid (the
    /// daemon in a user namespace that does not map the caller, as `PrivateUsers=yes` makes it)
    /// is unknown; so is a pid from another pid namespace (0). The user name is looked up in the
    /// user database, off the runtime thread.
    pub(crate) async fn of_peer(stream: &tokio::net::UnixStream) -> Self {
        let Ok(credentials) = stream.peer_cred() else {
            return Self::default();
        };
        let uid = Some(credentials.uid()).filter(|uid| !is_unmapped_uid(*uid));
        let pid = credentials.pid().filter(|pid| *pid > 0);
        let user = match uid {
            Some(uid) => tokio::task::spawn_blocking(move || user_name(uid))
                .await
                .ok()
                .flatten(),
            None => None,
        };
        Self { uid, user, pid }
    }

    fn uid_text(&self) -> String {
        self.uid
            .map_or_else(|| "unknown".to_owned(), |u| u.to_string())
    }

    fn user_text(&self) -> &str {
        self.user.as_deref().unwrap_or("unknown")
    }

    fn pid_text(&self) -> String {
        self.pid
            .map_or_else(|| "unknown".to_owned(), |p| p.to_string())
    }
}

fn user_name(uid: u32) -> Option<String> {
    nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(uid))
        .ok()
        .flatten()
        .map(|user| user.name)
}

/// Whether `uid` is the kernel's overflow uid while this process runs in a user namespace that
/// does not map every uid: then the caller's real uid is hidden. Outside such a namespace the
/// overflow uid (65534) is the real `nobody`.
fn is_unmapped_uid(uid: u32) -> bool {
    let overflow = std::fs::read_to_string("/proc/sys/kernel/overflowuid")
        .ok()
        .and_then(|text| text.trim().parse::<u32>().ok())
        .unwrap_or(65534);
    uid == overflow
        && !maps_every_uid(&std::fs::read_to_string("/proc/self/uid_map").unwrap_or_default())
}

/// Whether a `uid_map` is the initial namespace's identity map (`0 0 4294967295`).
fn maps_every_uid(uid_map: &str) -> bool {
    let fields: Vec<&str> = uid_map.split_whitespace().collect();
    fields == ["0", "0", "4294967295"]
}

/// How an action ended, as the `OUTCOME` field says it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// Done as asked (for a read-only request: answered).
    Confirmed,
    /// Some of several payments done, some not (`cancel --all`, `disconnect`).
    Partial,
    /// The payment API refused it (its code and message are in the record).
    Refused,
    /// The payment named is not pending here.
    NotFound,
    /// The daemon could not take it now (stopping, or too many connections).
    Busy,
    /// The request was not a valid command.
    Invalid,
    /// It failed for another reason (the API unreachable, not connected, internal).
    Failed,
}

impl Outcome {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Self::Confirmed => "confirmed",
            Self::Partial => "partial",
            Self::Refused => "refused",
            Self::NotFound => "not_found",
            Self::Busy => "busy",
            Self::Invalid => "invalid",
            Self::Failed => "failed",
        }
    }
}

/// One audit record before it is written: the fields besides who asked.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct Record {
    /// The command's name (`cancel`, `apm_unlink`, the terminal's `payment_result`...).
    pub(crate) command: String,
    /// What it was about, in words: `payment 7cc7…`, `every pending payment`, `checkout 42`.
    pub(crate) resource: String,
    pub(crate) outcome: Option<Outcome>,
    /// The API's `ErrorCode` of a refusal.
    pub(crate) error_code: Option<i64>,
    /// Why it was refused or failed (the API's message, or the daemon's).
    pub(crate) reason: Option<String>,
    /// `PAYMENT_REQUEST_ID`: the one payment it was about.
    pub(crate) payment_request_id: Option<String>,
    /// `PAYMENT_REQUEST_IDS`: the payments it ended (cancelled), space-separated.
    pub(crate) payment_request_ids: Vec<String>,
    /// `FAILED_PAYMENT_REQUEST_IDS`: the payments it could not end.
    pub(crate) failed_payment_request_ids: Vec<String>,
    pub(crate) merchant_unique_code: Option<String>,
    pub(crate) connection_id: Option<String>,
    pub(crate) session_id: Option<String>,
    pub(crate) checkout_id: Option<i64>,
    pub(crate) apm_account: Option<String>,
    /// Whether the request only reads (then the record is written at debug).
    pub(crate) read_only: bool,
}

impl Record {
    fn outcome(&self) -> Outcome {
        self.outcome.unwrap_or(Outcome::Confirmed)
    }

    /// What the record is about, with every id it carries that the resource does not already
    /// name: a message that reads on its own (docs/deployment.md, "What an operator sees").
    fn subject(&self) -> String {
        let mut subject = self.resource.clone();
        let ids = [
            ("payment", self.payment_request_id.as_deref()),
            ("code", self.merchant_unique_code.as_deref()),
            ("connection", self.connection_id.as_deref()),
        ];
        for (name, id) in ids {
            if let Some(id) = id.filter(|id| !subject.contains(id)) {
                let _ = write!(subject, ", {name} {id}");
            }
        }
        subject
    }

    /// `refused, code 3: insufficient funds`-like words for the message.
    fn outcome_text(&self) -> String {
        let mut text = self.outcome().as_str().replace('_', " ");
        if let Some(code) = self.error_code {
            let _ = write!(text, ", code {code}");
        }
        if let Some(reason) = &self.reason {
            let _ = write!(text, ": {reason}");
        }
        text
    }
}

/// Ids as one field value, space-separated; none when there are none.
fn joined(ids: &[String]) -> Option<String> {
    (!ids.is_empty()).then(|| ids.join(" "))
}

/// Who asked, as the record's fields say it.
enum Who<'a> {
    Operator(&'a Operator),
    Terminal { device: &'a str, request_id: u32 },
}

/// Writes the record of an operator's request (docs/operations.md, "Audit records").
pub(crate) fn write_operator(operator: &Operator, record: &Record) {
    write(&Who::Operator(operator), record);
}

/// Writes the record of a terminal's request (docs/operations.md, "Audit records").
pub(crate) fn write_terminal(device: &str, request_id: u32, record: &Record) {
    write(&Who::Terminal { device, request_id }, record);
}

/// One event for every kind of record, so that the terminal's binary carries one set of
/// fields; a field that does not apply is left out of the journal entry.
fn write(who: &Who<'_>, record: &Record) {
    let (origin, message) = match who {
        Who::Operator(operator) => (
            "operator",
            format!(
                "operator {} (uid {}, pid {}): {} of {}: {}",
                operator.user_text(),
                operator.uid_text(),
                operator.pid_text(),
                record.command,
                record.subject(),
                record.outcome_text()
            ),
        ),
        Who::Terminal { device, request_id } => (
            "terminal",
            format!(
                "terminal on {device} (request {request_id}): {} of {}: {}",
                record.command,
                record.subject(),
                record.outcome_text()
            ),
        ),
    };
    let operator = match who {
        Who::Operator(operator) => Some(operator),
        Who::Terminal { .. } => None,
    };
    let (uid, pid) = (
        operator.map(|o| o.uid_text()),
        operator.map(|o| o.pid_text()),
    );
    let (operator_command, terminal_command) = match who {
        Who::Operator(_) => (Some(record.command.as_str()), None),
        Who::Terminal { .. } => (None, Some(record.command.as_str())),
    };
    if record.read_only {
        tracing::debug!(
            target: TARGET,
            origin,
            operator_uid = uid.as_deref(),
            operator_command,
            terminal_command,
            outcome = record.outcome().as_str(),
            "{message}"
        );
        return;
    }
    let (device, request_id) = match who {
        Who::Terminal { device, request_id } => (Some(*device), Some(*request_id)),
        Who::Operator(_) => (None, None),
    };
    let (ids, failed_ids) = (
        joined(&record.payment_request_ids),
        joined(&record.failed_payment_request_ids),
    );
    tracing::info!(
        target: TARGET,
        origin,
        operator_uid = uid.as_deref(),
        operator_user = operator.map(|o| o.user_text()),
        operator_pid = pid.as_deref(),
        operator_command,
        terminal_device = device,
        terminal_request_id = request_id,
        terminal_command,
        outcome = record.outcome().as_str(),
        error_code = record.error_code,
        reason = record.reason.as_deref(),
        payment_request_id = record.payment_request_id.as_deref(),
        payment_request_ids = ids.as_deref(),
        failed_payment_request_ids = failed_ids.as_deref(),
        merchant_unique_code = record.merchant_unique_code.as_deref(),
        connection_id = record.connection_id.as_deref(),
        session_id = record.session_id.as_deref(),
        checkout_id = record.checkout_id,
        apm_account = record.apm_account.as_deref(),
        "{message}"
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_initial_namespace_maps_every_uid() {
        assert!(maps_every_uid("         0          0 4294967295\n"));
        assert!(!maps_every_uid("0 61234 1\n61234 61234 1\n"));
        assert!(!maps_every_uid(""));
    }

    #[test]
    fn the_outcome_says_the_code_and_the_reason() {
        let record = Record {
            outcome: Some(Outcome::Refused),
            error_code: Some(12),
            reason: Some("session unknown".into()),
            ..Record::default()
        };
        assert_eq!(record.outcome_text(), "refused, code 12: session unknown");
        assert_eq!(Record::default().outcome_text(), "confirmed");
    }

    #[test]
    fn the_level_filter_never_hides_actions() {
        let filter = always_enabled("warn".parse().unwrap());
        assert!(filter.would_enable(TARGET, &tracing::Level::INFO));
        assert!(!filter.would_enable(TARGET, &tracing::Level::DEBUG));
        assert!(!filter.would_enable("pos_agent::agent", &tracing::Level::INFO));
        let filter = always_enabled("pos_agent::audit=debug".parse().unwrap());
        assert!(filter.would_enable(TARGET, &tracing::Level::DEBUG));
    }
}

//! Where the agent's log lines go (docs/operations.md (The daemon: `pos-agent run`)): to journald with structured
//! fields when systemd connected stderr to the journal, else human-readable lines on stderr.
//!
//! # Line convention
//!
//! Each message stands on its own: an operator reads `journalctl -u pos-agent` and the tail of
//! `systemctl status`, which show only the message, so it names what it is about with its values
//! ("sale started: payment 7ba0..., 1250 minor units of currency 1, code 9b27...", "serial link
//! down: no ACK after 3 sends (...)", "operator cancel of payment 782c..."). The same values are
//! also recorded as `tracing` fields in snake_case, for example
//! `tracing::info!(payment_request_id = %id, "payment {id} final: succeeded")`. Field names are
//! stable (operators search by them): `payment_request_id`, `merchant_unique_code`,
//! `connection_id`, `serial_request_id` (the id of a frame on the serial line), `link_state`,
//! `command`, `reason`. tests/suite/log_lines.rs checks both halves on a sale-to-stop run. In the
//! journal, `tracing-journald` (with its field prefix switched off here) upper-cases the names and
//! turns `.` into `_`: the fields arrive as `PAYMENT_REQUEST_ID=` and `CONNECTION_ID=`, so
//! `journalctl -u pos-agent PAYMENT_REQUEST_ID=...` finds every line about one payment. Fields of
//! the enclosing spans are added to each event too. Because there is no prefix, a field must not
//! be named after a journal field the agent does not mean to set (`message`, `priority`,
//! `code_file`, `syslog_identifier`, `errno`, ...). Leading underscores are dropped by the
//! library, so a field can never forge a trusted `_`-field. On stderr the same fields print as
//! `payment_request_id=...`.
//!
//! Secrets are never recorded as fields (they are `SecretString`s, whose `Debug` is redacted).
//!
//! # Repeated warnings
//!
//! A warning repeated within `[log] repeat_window` is written once and summarised
//! (docs/operations.md (Repeated warnings)): [`repeats`] holds the layer that does it; [`init`]
//! installs it before the output layers.

// Time and count arithmetic: docs/architecture.md, "Lint policy".
#![warn(clippy::arithmetic_side_effects)]

mod repeats;

use std::io::IsTerminal;
use std::os::fd::AsFd;
use std::os::unix::fs::MetadataExt;
use std::time::Duration;

use tracing_subscriber::filter::Targets;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

use repeats::RepeatLimiter;

/// The name the agent's lines carry in the journal (`SYSLOG_IDENTIFIER=`, `journalctl -t`).
pub(crate) const SYSLOG_IDENTIFIER: &str = "pos-agent";

/// Where [`init`] sent the log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum LogDestination {
    /// journald's native protocol, with structured fields.
    Journald,
    /// Text lines on stderr (with colours only when stderr is a terminal).
    Stderr,
    /// Text lines on stderr although `$JOURNAL_STREAM` names stderr: journald's socket could not
    /// be reached. The lines still reach the journal, without structured fields.
    StderrJournaldUnreachable,
}

/// Why logging could not be set up.
#[derive(Debug, thiserror::Error)]
pub(crate) enum LoggingError {
    /// `RUST_LOG` is set but is not a valid filter.
    #[error("RUST_LOG is not a valid log filter: {0}")]
    InvalidRustLog(String),
    /// `[log] level` is not a valid filter.
    #[error("log.level {level:?} is not a valid log level or filter: {reason}")]
    InvalidLevel { level: String, reason: String },
    /// A global subscriber is already installed.
    #[error("logging is already initialised")]
    AlreadyInitialised,
}

/// Installs the global log subscriber (docs/operations.md (The daemon: `pos-agent run`)): the filter is `RUST_LOG` when it is set
/// and not empty, else `level_from_config` (`[log] level`, e.g. `"info"` or
/// `"info,pos_agent::serial=debug"`); lines go to journald when `$JOURNAL_STREAM` names this
/// process's stderr, else to stderr.
///
/// Repeated warnings are summarised over `repeat_window` (zero: every line is written); the
/// summaries are written by a task spawned here, so call it within a tokio runtime.
pub(crate) fn init(
    level_from_config: &str,
    repeat_window: Duration,
) -> Result<LogDestination, LoggingError> {
    let filter = crate::audit::always_enabled(filter(
        std::env::var("RUST_LOG").ok().as_deref(),
        level_from_config,
    )?);
    let stderr_is_the_journal = stderr_identity().is_some_and(|(dev, ino)| {
        journal_stream_names(std::env::var("JOURNAL_STREAM").ok().as_deref(), dev, ino)
    });
    let limiter = RepeatLimiter::new(repeat_window);
    if !repeat_window.is_zero() && tokio::runtime::Handle::try_current().is_ok() {
        tokio::spawn(limiter.clone().write_summaries());
    }
    let _ = INSTALLED.set(limiter.clone());
    let registry = tracing_subscriber::registry().with(filter).with(limiter);
    if stderr_is_the_journal {
        if let Ok(journald) = tracing_journald::layer() {
            let journald = journald
                .with_field_prefix(None)
                .with_syslog_identifier(SYSLOG_IDENTIFIER.to_owned());
            registry
                .with(journald)
                .try_init()
                .map_err(|_| LoggingError::AlreadyInitialised)?;
            return Ok(LogDestination::Journald);
        }
    }
    let stderr = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_ansi(cfg!(feature = "color") && std::io::stderr().is_terminal());
    registry
        .with(stderr)
        .try_init()
        .map_err(|_| LoggingError::AlreadyInitialised)?;
    Ok(if stderr_is_the_journal {
        LogDestination::StderrJournaldUnreachable
    } else {
        LogDestination::Stderr
    })
}

/// Whether `$JOURNAL_STREAM` (`"<device>:<inode>"`, both decimal, as systemd sets it) names the
/// file whose `fstat` gives `stderr_device` and `stderr_inode`. systemd.exec(5) asks services to
/// compare both, since stderr may have been redirected after systemd set the variable.
pub(crate) fn journal_stream_names(
    journal_stream: Option<&str>,
    stderr_device: u64,
    stderr_inode: u64,
) -> bool {
    let Some((device, inode)) = journal_stream.and_then(|value| value.split_once(':')) else {
        return false;
    };
    match (device.parse::<u64>(), inode.parse::<u64>()) {
        (Ok(device), Ok(inode)) => device == stderr_device && inode == stderr_inode,
        _ => false,
    }
}

fn filter(rust_log: Option<&str>, level_from_config: &str) -> Result<Targets, LoggingError> {
    match rust_log.map(str::trim).filter(|value| !value.is_empty()) {
        Some(rust_log) => parse_filter(rust_log).map_err(LoggingError::InvalidRustLog),
        None => parse_filter(level_from_config).map_err(|reason| LoggingError::InvalidLevel {
            level: level_from_config.to_owned(),
            reason,
        }),
    }
}

/// A log filter as `[log] level` and `RUST_LOG` give it: a default level and/or
/// `target=level` pairs, comma-separated (`"info"`, `"warn,pos_agent::serial=debug"`). The
/// `tracing_subscriber` `Targets` syntax: no regular expressions, which keeps the binary small.
pub(crate) fn parse_filter(text: &str) -> Result<Targets, String> {
    text.trim().parse::<Targets>().map_err(|e| e.to_string())
}

/// The limiter [`init`] installed, for [`flush_summaries`].
static INSTALLED: std::sync::OnceLock<RepeatLimiter> = std::sync::OnceLock::new();

/// Writes the summaries of warnings held back so far, due or not (at the end of the process:
/// no count is lost).
pub(crate) fn flush_summaries() {
    if let Some(limiter) = INSTALLED.get() {
        limiter.flush_all();
    }
}

/// Device and inode of stderr, as `fstat(2)` gives them.
fn stderr_identity() -> Option<(u64, u64)> {
    let stderr = std::io::stderr().as_fd().try_clone_to_owned().ok()?;
    let metadata = std::fs::File::from(stderr).metadata().ok()?;
    Some((metadata.dev(), metadata.ino()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn journal_stream_matching_device_and_inode_names_stderr() {
        assert!(journal_stream_names(Some("9:24727"), 9, 24727));
    }

    #[test]
    fn journal_stream_of_another_file_does_not_name_stderr() {
        assert!(!journal_stream_names(Some("9:24727"), 9, 24728));
        assert!(!journal_stream_names(Some("9:24727"), 8, 24727));
    }

    #[test]
    fn missing_or_malformed_journal_stream_names_nothing() {
        assert!(!journal_stream_names(None, 9, 24727));
        assert!(!journal_stream_names(Some(""), 0, 0));
        assert!(!journal_stream_names(Some("9"), 9, 9));
        assert!(!journal_stream_names(Some("9:"), 9, 0));
        assert!(!journal_stream_names(Some("x:24727"), 0, 24727));
        assert!(!journal_stream_names(Some("9:24727:1"), 9, 24727));
        assert!(!journal_stream_names(Some("-9:24727"), 9, 24727));
    }

    #[test]
    fn stderr_identity_is_read_from_the_open_descriptor() {
        let (device, inode) = stderr_identity().expect("stderr is open in tests");
        let value = format!("{device}:{inode}");
        assert!(journal_stream_names(Some(&value), device, inode));
    }

    #[test]
    fn rust_log_wins_over_the_configured_level() {
        let filter = filter(Some("pos_agent=trace"), "warn").unwrap();
        assert_eq!(filter.to_string(), "pos_agent=trace");
    }

    #[test]
    fn empty_rust_log_falls_back_to_the_configured_level() {
        let blank = filter(Some("  "), "debug").unwrap();
        assert_eq!(blank.to_string(), "debug");
        let unset = filter(None, "info,pos_agent::serial=debug").unwrap();
        assert!(unset.to_string().contains("pos_agent::serial=debug"));
    }

    #[test]
    fn invalid_filters_are_errors_naming_their_source() {
        let error = filter(None, "pos_agent=loud").unwrap_err();
        assert!(error.to_string().contains("log.level"), "{error}");
        let error = filter(Some("pos_agent=verbose["), "info").unwrap_err();
        assert!(error.to_string().contains("RUST_LOG"), "{error}");
    }
}

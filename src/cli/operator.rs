//! The operator commands of docs/operations.md (Operator commands) (`status`, `pending`, `cancel`, `disconnect`,
//! `reconnect`, `apm-unlink`, `masterpass-unlink`, `checkout-deactivate`, `restart
//! --keep-pending`): each turns its
//! arguments into one control request, asks the running daemon over its control socket, prints
//! the answer for people or, with `--json`, for scripts, and maps the outcome to an exit code.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::{ArgGroup, Args, Subcommand};
use uuid::Uuid;

use super::{exit, Failure};
use crate::control::{
    self, AbandonedSaleView, ApmAccount, CancelFailure, CancelTarget, ClientError,
    ControlErrorKind, ControlReply, ControlRequest, PendingPaymentView, SerialPortView,
    StatusReport, StorageView,
};

/// The operator subcommands; flattened into the top-level command list.
#[derive(Debug, Subcommand)]
pub(crate) enum OperatorCommand {
    /// Show the payment API connection, the terminal link, the pending payments and the version.
    Status(OutputArgs),
    /// List the pending payments.
    Pending(OutputArgs),
    /// Cancel one pending payment (async cancel) or all of them, and tell the terminal.
    Cancel(CancelArgs),
    /// Cancel the pending payments, then deactivate the payment API connection.
    ///
    /// The daemon keeps running and refuses sales (`not_connected`) until `reconnect`.
    Disconnect(OutputArgs),
    /// Re-activate the payment API connection.
    Reconnect(OutputArgs),
    /// Unlink an APM account (PaymentAPI `POST /api/paywall/apm/unlink`).
    ApmUnlink(ApmUnlinkArgs),
    /// Unlink a Masterpass account from the merchant (PaymentAPI
    /// `DELETE /api/paywall/masterpass/merchant/unlink`).
    MasterpassUnlink(MasterpassUnlinkArgs),
    /// Deactivate a checkout (shared payment) page (PaymentAPI `PUT /api/paywall/checkout/passive`).
    CheckoutDeactivate(CheckoutDeactivateArgs),
    /// Print the agent's counters and gauges in the OpenMetrics text format.
    Metrics(OutputArgs),
    /// Stop the agent without cancelling its pending payments or deactivating the connection,
    /// and have systemd start it again (an upgrade, a changed setting).
    ///
    /// The next process takes the pending payments over. `systemctl restart pos-agent`
    /// cancels them instead.
    Restart(KeepPendingArgs),
}

#[derive(Debug, Args)]
pub(crate) struct KeepPendingArgs {
    /// Keep the pending payments for the next process (required: the restart that cancels them
    /// is systemd's).
    #[arg(long, required = true)]
    pub(crate) keep_pending: bool,
    /// Only the stop: the agent stays stopped until `systemctl start pos-agent` or the next boot
    /// (before a reboot into another system slot).
    #[arg(long)]
    pub(crate) no_start: bool,
    #[command(flatten)]
    pub(crate) output: OutputArgs,
}

/// Options every operator command takes.
#[derive(Debug, Args)]
pub(crate) struct OutputArgs {
    /// Print the result as one JSON value on stdout (errors too, as {"error": {...}}).
    #[arg(long)]
    pub(crate) json: bool,
    /// How long to wait for the daemon's answer [default: 10s for status and pending, 2m for
    /// the others].
    #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration)]
    pub(crate) timeout: Option<Duration>,
}

#[derive(Debug, Args)]
#[command(group(ArgGroup::new("target").required(true).args(["payment_request_id", "all"])))]
pub(crate) struct CancelArgs {
    /// The PaymentRequestId (GUID) of the payment to cancel.
    #[arg(value_name = "PAYMENT_REQUEST_ID", value_parser = parse_guid)]
    pub(crate) payment_request_id: Option<Uuid>,
    /// Cancel every pending payment.
    #[arg(long)]
    pub(crate) all: bool,
    #[command(flatten)]
    pub(crate) output: OutputArgs,
}

#[derive(Debug, Args)]
#[command(group(ArgGroup::new("account").required(true).args(["apm_key", "apm_connection_id"])))]
pub(crate) struct ApmUnlinkArgs {
    /// The phone number the APM account is registered with (e.g. 905342979639).
    #[arg(long, value_name = "PHONE", value_parser = parse_text)]
    pub(crate) phone: String,
    /// The APM's key (e.g. Masterpass_IFrame).
    #[arg(long, value_name = "KEY", value_parser = parse_text)]
    pub(crate) apm_key: Option<String>,
    /// The APM connection's id.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(i64).range(1..))]
    pub(crate) apm_connection_id: Option<i64>,
    #[command(flatten)]
    pub(crate) output: OutputArgs,
}

#[derive(Debug, Args)]
pub(crate) struct MasterpassUnlinkArgs {
    /// The Masterpass session id (GUID).
    #[arg(long, value_name = "GUID", value_parser = parse_guid)]
    pub(crate) session_id: Uuid,
    #[command(flatten)]
    pub(crate) output: OutputArgs,
}

#[derive(Debug, Args)]
pub(crate) struct CheckoutDeactivateArgs {
    /// The id of the checkout page, as returned when it was created.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(i64).range(1..))]
    pub(crate) id: i64,
    #[command(flatten)]
    pub(crate) output: OutputArgs,
}

fn parse_guid(text: &str) -> Result<Uuid, String> {
    Uuid::parse_str(text).map_err(|_| format!("not a GUID: {text:?}"))
}

fn parse_text(text: &str) -> Result<String, String> {
    if text.trim().is_empty() {
        Err("must not be empty".into())
    } else if text.chars().any(char::is_control) {
        Err("must not contain control characters".into())
    } else {
        Ok(text.to_owned())
    }
}

impl OperatorCommand {
    fn into_request(self) -> (ControlRequest, OutputArgs) {
        match self {
            Self::Status(output) => (ControlRequest::Status, output),
            Self::Pending(output) => (ControlRequest::Pending, output),
            Self::Cancel(args) => {
                let target = match args.payment_request_id {
                    Some(id) if !args.all => CancelTarget::One(id),
                    _ => CancelTarget::All,
                };
                (ControlRequest::Cancel(target), args.output)
            }
            Self::Disconnect(output) => (ControlRequest::Disconnect, output),
            Self::Reconnect(output) => (ControlRequest::Reconnect, output),
            Self::ApmUnlink(args) => {
                let account = match (args.apm_key, args.apm_connection_id) {
                    (Some(key), _) => ApmAccount::Key(key),
                    (None, Some(id)) => ApmAccount::ConnectionId(id),
                    // clap's `account` group makes exactly one of the two present.
                    (None, None) => ApmAccount::Key(String::new()),
                };
                let request = ControlRequest::ApmUnlink {
                    phone: args.phone,
                    account,
                };
                (request, args.output)
            }
            Self::MasterpassUnlink(args) => (
                ControlRequest::MasterpassUnlink {
                    session_id: args.session_id,
                },
                args.output,
            ),
            Self::CheckoutDeactivate(args) => (
                ControlRequest::CheckoutDeactivate { id: args.id },
                args.output,
            ),
            Self::Metrics(output) => (ControlRequest::Metrics, output),
            Self::Restart(args) => (
                ControlRequest::RestartKeepingPending {
                    start: !args.no_start,
                },
                args.output,
            ),
        }
    }
}

/// The exit code for a failure the daemon reported (documented in `docs/operations.md`).
pub(crate) fn exit_code(kind: ControlErrorKind) -> u8 {
    match kind {
        ControlErrorKind::ApiRejected | ControlErrorKind::NotFound | ControlErrorKind::Internal => {
            exit::API_REFUSED
        }
        ControlErrorKind::ApiUnavailable
        | ControlErrorKind::NotConnected
        | ControlErrorKind::Busy => exit::API_UNREACHABLE,
        ControlErrorKind::InvalidRequest => exit::USAGE,
    }
}

/// The exit code when no answer came.
fn client_exit_code(error: &ClientError) -> u8 {
    match error {
        ClientError::Timeout { .. } => exit::API_UNREACHABLE,
        ClientError::Unreachable { .. }
        | ClientError::Closed { .. }
        | ClientError::BadReply { .. } => exit::DAEMON_UNREACHABLE,
    }
}

fn client_error_kind(error: &ClientError) -> &'static str {
    match error {
        ClientError::Unreachable { .. } => "daemon_unreachable",
        ClientError::Timeout { .. } => "timeout",
        ClientError::Closed { .. } => "closed",
        ClientError::BadReply { .. } => "bad_reply",
    }
}

fn default_timeout(request: &ControlRequest) -> Duration {
    match request {
        ControlRequest::Status | ControlRequest::Pending | ControlRequest::Metrics => {
            Duration::from_secs(10)
        }
        _ => Duration::from_secs(120),
    }
}

/// Runs one operator command against the daemon on `socket` (default
/// [`control::DEFAULT_SOCKET`]).
pub(crate) async fn run(command: OperatorCommand, socket: Option<&Path>) -> anyhow::Result<()> {
    let socket = socket.map_or_else(|| PathBuf::from(control::DEFAULT_SOCKET), Path::to_path_buf);
    let (request, output) = command.into_request();
    let timeout = output.timeout.unwrap_or_else(|| default_timeout(&request));
    let response = match control::call(&socket, &request, timeout).await {
        Ok(response) => response,
        Err(error) => {
            if output.json {
                print_json(&serde_json::json!({"error": {
                    "kind": client_error_kind(&error),
                    "message": error.to_string(),
                }}))?;
            }
            return Err(Failure::new(client_exit_code(&error), error.to_string()).into());
        }
    };
    match response.outcome {
        Ok(reply) => {
            if output.json {
                print_json(&reply_payload(&reply))?;
            } else {
                print_human(&reply)?;
            }
            match cancel_failures(&reply) {
                [] => Ok(()),
                failures => {
                    if !output.json {
                        for failure in failures {
                            eprintln!(
                                "pos-agent: could not cancel {}: {}",
                                failure.payment_request_id, failure.error
                            );
                        }
                    }
                    let code = failures
                        .iter()
                        .map(|f| exit_code(f.error.kind))
                        .min_by_key(|code| if *code == exit::API_REFUSED { 0 } else { 1 })
                        .unwrap_or(exit::API_REFUSED);
                    Err(Failure::new(
                        code,
                        format!("{} payment(s) could not be cancelled", failures.len()),
                    )
                    .into())
                }
            }
        }
        Err(error) => {
            if output.json {
                print_json(&serde_json::json!({ "error": error }))?;
            }
            Err(Failure::new(exit_code(error.kind), error.to_string()).into())
        }
    }
}

fn cancel_failures(reply: &ControlReply) -> &[CancelFailure] {
    match reply {
        ControlReply::Cancel(report) => &report.failed,
        ControlReply::Disconnect(report) => &report.failed,
        _ => &[],
    }
}

/// The `result` of the answer, as `--json` prints it.
fn reply_payload(reply: &ControlReply) -> serde_json::Value {
    let value = match reply {
        ControlReply::Status(report) => serde_json::to_value(report),
        ControlReply::Pending(report) | ControlReply::Restart(report) => {
            serde_json::to_value(report)
        }
        ControlReply::Cancel(report) => serde_json::to_value(report),
        ControlReply::Disconnect(report) => serde_json::to_value(report),
        ControlReply::Reconnect(report) => serde_json::to_value(report),
        ControlReply::ApmUnlink(report)
        | ControlReply::MasterpassUnlink(report)
        | ControlReply::CheckoutDeactivate(report) => serde_json::to_value(report),
        ControlReply::Metrics(text) => Ok(serde_json::Value::String(text.clone())),
    };
    value.unwrap_or(serde_json::Value::Null)
}

fn print_json(value: &serde_json::Value) -> anyhow::Result<()> {
    let mut stdout = std::io::stdout().lock();
    serde_json::to_writer(&mut stdout, value)?;
    writeln!(stdout)?;
    Ok(())
}

fn print_human(reply: &ControlReply) -> anyhow::Result<()> {
    let text = match reply {
        ControlReply::Status(report) => status_text(report),
        ControlReply::Pending(report) => {
            let mut text = if report.pending.is_empty() {
                "no pending payments\n".to_owned()
            } else {
                pending_table(&report.pending)
            };
            if !report.abandoned.is_empty() {
                text.push_str(&abandoned_text(&report.abandoned));
            }
            text
        }
        ControlReply::Cancel(report) => {
            if report.cancelled.is_empty() && report.failed.is_empty() {
                "nothing to cancel: no pending payments\n".into()
            } else {
                report
                    .cancelled
                    .iter()
                    .map(|id| format!("cancelled {id}\n"))
                    .collect()
            }
        }
        ControlReply::Disconnect(report) => {
            let mut text: String = report
                .cancelled
                .iter()
                .map(|id| format!("cancelled {id}\n"))
                .collect();
            text.push_str(&format!(
                "connection {} {}\n",
                report.connection_id.as_deref().unwrap_or("(none)"),
                report.connection
            ));
            text
        }
        ControlReply::Reconnect(report) => format!(
            "connection {} {}\n",
            report.connection_id.as_deref().unwrap_or("(none)"),
            report.connection
        ),
        ControlReply::ApmUnlink(report) => unlink_text("APM account unlinked", report),
        ControlReply::MasterpassUnlink(report) => {
            unlink_text("Masterpass account unlinked", report)
        }
        ControlReply::CheckoutDeactivate(report) => {
            unlink_text("checkout page deactivated", report)
        }
        ControlReply::Metrics(text) => text.clone(),
        ControlReply::Restart(report) => restart_text(report),
    };
    let mut stdout = std::io::stdout().lock();
    stdout.write_all(text.as_bytes())?;
    stdout.flush()?;
    Ok(())
}

/// What a `restart --keep-pending` kept for the next process.
fn restart_text(report: &control::PendingReport) -> String {
    let mut text = format!(
        "stopped, {} pending payment(s) kept for the next start\n",
        report.pending.len()
    );
    if !report.pending.is_empty() {
        text.push('\n');
        text.push_str(&pending_table(&report.pending));
    }
    if !report.abandoned.is_empty() {
        text.push_str(&abandoned_text(&report.abandoned));
    }
    text
}

fn unlink_text(done: &str, report: &control::UnlinkReport) -> String {
    let mut text = format!("{done}\n");
    if let Some(message) = report.message.as_deref().filter(|m| !m.is_empty()) {
        text.push_str(&format!("message: {message}\n"));
    }
    if let Some(rrn) = &report.retrieval_reference_number {
        text.push_str(&format!("retrieval reference number: {rrn}\n"));
    }
    text
}

fn status_text(report: &StatusReport) -> String {
    let mut text = format!(
        "version        {} (commit {})\nconnection     {}  {}\nterminal link  {}\nterminal       {}\n\
         serial port    {}\n\
         last answer    terminal {}, payment API {}\npending        {}\n",
        report.version,
        report.commit,
        report.connection,
        report
            .connection_id
            .as_deref()
            .unwrap_or("(no connection id)"),
        report.terminal_link,
        terminal_text(report.terminal.as_ref()),
        serial_port_text(&report.serial_port),
        report.terminal_last_answered.as_deref().unwrap_or("never"),
        report.api_last_answered.as_deref().unwrap_or("never"),
        report.pending.len()
    );
    // Empty from a daemon too old to say.
    if !report.storage.directory.is_empty() {
        text.push_str(&format!(
            "storage        {}\n",
            storage_text(&report.storage)
        ));
    }
    if let Some(wait) = &report.api_retry_after {
        text.push_str(&format!(
            "API asks wait  until {} ({} s left, HTTP {} Retry-After); sales are refused meanwhile\n",
            wait.until, wait.seconds_left, wait.http_status
        ));
    }
    if let Some(rejection) = &report.rejection {
        text.push_str(&format!(
            "rejected       HTTP {}: {}\n",
            rejection.http_status, rejection.message
        ));
    }
    if !report.pending.is_empty() {
        text.push('\n');
        text.push_str(&pending_table(&report.pending));
    }
    if !report.abandoned.is_empty() {
        text.push_str(&abandoned_text(&report.abandoned));
    }
    if let Some(problem) = &report.connection_problem {
        text.push_str(&format!("\nconnection problem: {problem}\n"));
    }
    text
}

/// Who the terminal said it is; `not heard yet` before it answered.
fn terminal_text(terminal: Option<&crate::serial::TerminalIdentity>) -> String {
    terminal.map_or_else(|| "not heard yet".to_owned(), ToString::to_string)
}

/// `/var/lib/pos-agent writable, 1.2 MiB free; last error at <when>: <what>`.
fn storage_text(storage: &StorageView) -> String {
    let mut text = format!(
        "{} {}",
        storage.directory,
        if storage.writable {
            "writable"
        } else {
            "NOT WRITABLE (sales are refused)"
        }
    );
    if let Some(free) = storage.free_bytes {
        text.push_str(&format!(", {} KiB free", free / 1024));
    }
    if storage.free_space_low {
        text.push_str(" (free space low)");
    }
    if let Some(error) = &storage.last_error {
        let at = storage.last_error_at.as_deref().unwrap_or("?");
        text.push_str(&format!("; last write error at {at}: {error}"));
    }
    text
}

/// `open, reopened 2 times; last error at <when>: <what>`.
fn serial_port_text(port: &SerialPortView) -> String {
    let times = if port.reopens == 1 { "time" } else { "times" };
    let open = match port.open {
        Some(true) => "open, ",
        Some(false) => "NOT OPEN, ",
        None => "",
    };
    let mut text = format!("{open}reopened {} {times}", port.reopens);
    if let Some(error) = &port.last_error {
        let at = port.last_error_at.as_deref().unwrap_or("?");
        text.push_str(&format!("; last error at {at}: {error}"));
    }
    text
}

/// The abandoned sales still being settled, apart from the pending payments.
fn abandoned_text(abandoned: &[AbandonedSaleView]) -> String {
    let header = [
        "MERCHANT UNIQUE CODE",
        "AMOUNT (MINOR)",
        "ABANDONED AT",
        "PAYMENT FOUND",
    ];
    let rows: Vec<[String; 4]> = abandoned
        .iter()
        .map(|a| {
            [
                a.merchant_unique_code.clone(),
                a.amount_minor.map_or_else(|| "-".into(), |n| n.to_string()),
                a.abandoned_at.clone(),
                a.payment_request_id.clone().map_or_else(
                    || "not yet (looking it up)".into(),
                    |id| format!("{id} (cancelling)"),
                ),
            ]
        })
        .collect();
    format!(
        "\nabandoned sales being settled (the terminal was told they failed): {}\n\n{}",
        abandoned.len(),
        table(&header, &rows)
    )
}

/// A table of pending payments, columns padded to their widest cell.
fn pending_table(pending: &[PendingPaymentView]) -> String {
    let header = [
        "PAYMENT REQUEST ID",
        "AMOUNT (MINOR)",
        "SINCE",
        "CANCEL",
        "MERCHANT UNIQUE CODE",
    ];
    let rows: Vec<[String; 5]> = pending
        .iter()
        .map(|p| {
            [
                p.payment_request_id.clone(),
                p.amount_minor.map_or_else(|| "-".into(), |a| a.to_string()),
                p.since.clone(),
                match (p.cancel_requested, p.cancel_reason, &p.cancel_refused) {
                    (true, Some(reason), _) => format!("requested ({reason})"),
                    (true, None, _) => "requested".into(),
                    (false, _, Some(message)) => format!("refused: {message}"),
                    (false, _, None) => "-".into(),
                },
                p.merchant_unique_code.clone().unwrap_or_else(|| "-".into()),
            ]
        })
        .collect();
    table(&header, &rows)
}

/// Rows under a header, columns padded to their widest cell.
fn table<const N: usize>(header: &[&str; N], rows: &[[String; N]]) -> String {
    let mut widths = header.map(str::len);
    for row in rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let mut text = String::new();
    let mut push_row = |cells: &[&str]| {
        let line: Vec<String> = cells
            .iter()
            .zip(widths)
            .map(|(cell, width)| format!("{cell:<width$}"))
            .collect();
        text.push_str(line.join("  ").trim_end());
        text.push('\n');
    };
    push_row(header);
    for row in rows {
        push_row(&row.each_ref().map(String::as_str));
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    fn payment(id: &str, cancel: bool) -> PendingPaymentView {
        PendingPaymentView {
            payment_request_id: id.into(),
            merchant_unique_code: Some("order-1".into()),
            amount_minor: Some(1250),
            since: "2026-11-21T13:16:40Z".into(),
            cancel_requested: cancel,
            cancel_reason: cancel.then_some(control::CancelReason::Timeout),
            cancel_refused: None,
        }
    }

    #[test]
    fn the_pending_table_aligns_columns_and_shows_cancel_state() {
        let table = pending_table(&[
            payment("a", false),
            payment("bbbbbbbbbbbbbbbbbbbbbbbb", true),
        ]);
        let lines: Vec<&str> = table.lines().collect();
        assert_eq!(lines.len(), 3);
        let since_column = lines[0].find("SINCE").unwrap();
        for line in &lines[1..] {
            assert_eq!(
                line.find("2026-11-21T13:16:40Z"),
                Some(since_column),
                "{table}"
            );
        }
        assert!(lines[2].contains("requested (timeout)"));
        assert!(lines[1].contains("1250"));
    }

    #[test]
    fn api_refusals_and_lookups_exit_1_and_transient_failures_exit_75() {
        assert_eq!(exit_code(ControlErrorKind::ApiRejected), 1);
        assert_eq!(exit_code(ControlErrorKind::NotFound), 1);
        assert_eq!(exit_code(ControlErrorKind::Internal), 1);
        assert_eq!(exit_code(ControlErrorKind::ApiUnavailable), 75);
        assert_eq!(exit_code(ControlErrorKind::NotConnected), 75);
        assert_eq!(exit_code(ControlErrorKind::Busy), 75);
        assert_eq!(exit_code(ControlErrorKind::InvalidRequest), 2);
    }
}

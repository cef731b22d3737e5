//! `pos-agent audit`: the audit records of a period (docs/operations.md, "Audit records"), read
//! from the journal with `journalctl` and printed as a table or as JSON, for an auditor who is
//! not a systemd expert. It reads what the daemon wrote; it needs no running daemon.

use std::fmt::Write as _;
use std::path::PathBuf;
use std::process::Command;

use clap::Args;
use serde_json::{Map, Value};

use super::{exit, Failure};

/// The journal fields of an audit record, in the order `--json` gives them, with their names
/// there.
const FIELDS: [(&str, &str); 19] = [
    ("ORIGIN", "origin"),
    ("OPERATOR_UID", "operator_uid"),
    ("OPERATOR_USER", "operator_user"),
    ("OPERATOR_PID", "operator_pid"),
    ("OPERATOR_COMMAND", "operator_command"),
    ("TERMINAL_DEVICE", "terminal_device"),
    ("TERMINAL_REQUEST_ID", "terminal_request_id"),
    ("TERMINAL_COMMAND", "terminal_command"),
    ("OUTCOME", "outcome"),
    ("ERROR_CODE", "error_code"),
    ("REASON", "reason"),
    ("PAYMENT_REQUEST_ID", "payment_request_id"),
    ("PAYMENT_REQUEST_IDS", "payment_request_ids"),
    ("FAILED_PAYMENT_REQUEST_IDS", "failed_payment_request_ids"),
    ("MERCHANT_UNIQUE_CODE", "merchant_unique_code"),
    ("CONNECTION_ID", "connection_id"),
    ("SESSION_ID", "session_id"),
    ("CHECKOUT_ID", "checkout_id"),
    ("APM_ACCOUNT", "apm_account"),
];

#[derive(Debug, Args)]
pub(crate) struct AuditArgs {
    /// From when (journalctl's forms: "2026-12-01", "2026-12-01 08:00", "yesterday", "-2h")
    /// [default: everything the journal holds].
    #[arg(long, value_name = "TIME", allow_hyphen_values = true)]
    since: Option<String>,
    /// Until when (the same forms).
    #[arg(long, value_name = "TIME", allow_hyphen_values = true)]
    until: Option<String>,
    /// Only the actions of this operator's uid.
    #[arg(long, value_name = "UID")]
    operator_uid: Option<u32>,
    /// Read the journal files in this directory (a journal copied or forwarded off the device)
    /// instead of the system's journal.
    #[arg(long, value_name = "DIR")]
    directory: Option<PathBuf>,
    /// Print a JSON array of records instead of the table.
    #[arg(long)]
    json: bool,
}

pub(crate) fn run(args: &AuditArgs) -> anyhow::Result<()> {
    let mut journalctl = Command::new("journalctl");
    journalctl.args(["--no-pager", "--output=json", "--all"]);
    journalctl.arg("SYSLOG_IDENTIFIER=pos-agent");
    journalctl.arg(format!("TARGET={}", crate::audit::TARGET));
    if let Some(uid) = args.operator_uid {
        journalctl.arg(format!("OPERATOR_UID={uid}"));
    }
    if let Some(since) = &args.since {
        journalctl.arg(format!("--since={since}"));
    }
    if let Some(until) = &args.until {
        journalctl.arg(format!("--until={until}"));
    }
    if let Some(directory) = &args.directory {
        journalctl.arg("--directory").arg(directory);
    }
    let output = journalctl.output().map_err(|e| {
        Failure::new(
            exit::DAEMON_UNREACHABLE,
            format!("cannot run journalctl, which reads the audit records: {e}"),
        )
    })?;
    if !output.status.success() {
        return Err(Failure::new(
            1,
            format!(
                "journalctl failed: {}",
                String::from_utf8_lossy(&output.stderr).trim()
            ),
        )
        .into());
    }
    let records: Vec<Map<String, Value>> = String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter_map(|line| serde_json::from_str::<Map<String, Value>>(line).ok())
        .map(|entry| record(&entry))
        .collect();
    if args.json {
        println!(
            "{}",
            Value::Array(records.into_iter().map(Value::Object).collect())
        );
    } else {
        print!("{}", table(&records));
    }
    Ok(())
}

/// A journal entry's value as text: journald gives a string, an array of values for a field
/// that occurs more than once, or an array of bytes for one that is not UTF-8.
fn text(value: &Value) -> Option<String> {
    match value {
        Value::String(s) => Some(s.clone()),
        Value::Array(items) if items.iter().all(Value::is_u64) => {
            let bytes: Vec<u8> = items
                .iter()
                .filter_map(|b| b.as_u64().and_then(|b| u8::try_from(b).ok()))
                .collect();
            Some(String::from_utf8_lossy(&bytes).into_owned())
        }
        Value::Array(items) => Some(items.iter().filter_map(text).collect::<Vec<_>>().join(" ")),
        Value::Null | Value::Bool(_) | Value::Number(_) | Value::Object(_) => {
            Some(value.to_string())
        }
    }
}

/// One record as `--json` prints it: its time (RFC 3339, UTC), its fields, its message.
fn record(entry: &Map<String, Value>) -> Map<String, Value> {
    let mut out = Map::new();
    let time = entry
        .get("__REALTIME_TIMESTAMP")
        .and_then(text)
        .and_then(|us| us.parse::<u64>().ok())
        .map(|us| {
            crate::control::rfc3339(std::time::UNIX_EPOCH + std::time::Duration::from_micros(us))
        });
    out.insert("time".into(), time.map_or(Value::Null, Value::String));
    for (field, name) in FIELDS {
        if let Some(value) = entry.get(field).and_then(text) {
            out.insert(name.into(), Value::String(value));
        }
    }
    out.insert(
        "message".into(),
        entry
            .get("MESSAGE")
            .and_then(text)
            .map_or(Value::Null, Value::String),
    );
    out
}

/// The table: time, who, what, outcome; the message (which names every id) under each row.
fn table(records: &[Map<String, Value>]) -> String {
    let get =
        |r: &Map<String, Value>, k: &str| r.get(k).and_then(Value::as_str).unwrap_or("").to_owned();
    let mut rows = vec![[
        "TIME".to_owned(),
        "WHO".into(),
        "COMMAND".into(),
        "OUTCOME".into(),
    ]];
    for r in records {
        let who = match get(r, "origin").as_str() {
            "terminal" => format!(
                "terminal {} #{}",
                get(r, "terminal_device"),
                get(r, "terminal_request_id")
            ),
            _ => format!(
                "{} (uid {}, pid {})",
                get(r, "operator_user"),
                get(r, "operator_uid"),
                get(r, "operator_pid")
            ),
        };
        let command = [get(r, "operator_command"), get(r, "terminal_command")].concat();
        rows.push([get(r, "time"), who, command, get(r, "outcome")]);
    }
    let widths: Vec<usize> = (0..4)
        .map(|i| {
            rows.iter()
                .map(|row| row[i].chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut out = String::new();
    for (i, row) in rows.iter().enumerate() {
        let line = row
            .iter()
            .zip(&widths)
            .map(|(cell, width)| format!("{cell:<width$}"))
            .collect::<Vec<_>>()
            .join("  ");
        let _ = writeln!(out, "{}", line.trim_end());
        if i > 0 {
            let _ = writeln!(out, "    {}", get(&records[i - 1], "message"));
        }
    }
    if records.is_empty() {
        out.push_str("(no audit records in that period)\n");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(json: &str) -> Map<String, Value> {
        serde_json::from_str(json).unwrap()
    }

    #[test]
    fn a_journal_entry_becomes_a_record_with_its_time_and_fields() {
        let e = entry(
            r#"{"__REALTIME_TIMESTAMP":"1764979200000000","MESSAGE":"operator alice (uid 1001, pid 42): cancel of payment p: confirmed",
                "ORIGIN":"operator","OPERATOR_UID":"1001","OPERATOR_USER":"alice","OPERATOR_PID":"42",
                "OPERATOR_COMMAND":"cancel","OUTCOME":"confirmed","PAYMENT_REQUEST_ID":"p","CODE_LINE":"9"}"#,
        );
        let r = record(&e);
        assert_eq!(r["time"], "2025-12-06T00:00:00Z");
        assert_eq!(r["operator_user"], "alice");
        assert_eq!(r["payment_request_id"], "p");
        assert!(!r.contains_key("CODE_LINE") && !r.contains_key("code_line"));
        let t = table(&[r]);
        let lines: Vec<&str> = t.lines().collect();
        assert!(lines[0].starts_with("TIME"), "{t}");
        assert!(
            lines[1].contains("alice (uid 1001, pid 42)") && lines[1].ends_with("confirmed"),
            "{t}"
        );
        assert!(lines[2].contains("cancel of payment p"), "{t}");
    }

    #[test]
    fn byte_arrays_and_repeated_fields_read_as_text() {
        assert_eq!(text(&serde_json::json!([104, 105])).as_deref(), Some("hi"));
        assert_eq!(text(&serde_json::json!(["a", "b"])).as_deref(), Some("a b"));
        let t = table(&[record(&entry(
            r#"{"ORIGIN":"terminal","TERMINAL_DEVICE":"/dev/ttyPOS","TERMINAL_REQUEST_ID":"7","TERMINAL_COMMAND":"sale","OUTCOME":"confirmed"}"#,
        ))]);
        assert!(t.contains("terminal /dev/ttyPOS #7"), "{t}");
        assert!(table(&[]).contains("no audit records"));
    }
}

//! Journal volume (`docs/performance.md`, "Journal volume"): how many log bytes and lines the
//! real daemon writes during an API outage and for a burst of bad frames, with repeated
//! warnings summarised (`[log] repeat_window`, 60 s) and, for comparison, without (`0s`). Prints
//! figures; asserts nothing.
//!
//! Run: `cargo bench --bench journal` (`-- minutes N` sets the real length of the outage,
//! default 60); `cargo bench --bench journal -- sales`: a trading day in miniature instead (the
//! lines a sale, an operator's cancel and a health poll write, audit records apart).
//!
//! How an hour is simulated: it is not; it is lived. The binary runs as in production (log
//! level `info`, the default) through N real minutes of outage, and its stderr (the text the
//! journal receives as MESSAGE plus fields) is split into one-minute windows by the lines'
//! timestamps. With N = 60 the hour is measured whole. With a shorter run the rest of the hour
//! is extrapolated at the rate of the run's second half, which overestimates: the summaries'
//! windows grow (1, 2, 4, 8, 16 minutes), so a warning writes less and less often. Both the
//! minutes measured and the extrapolation are printed.
//!
//! The outage: the agent is connected with two payments pending (`payment_timeout` 2 min), the
//! API stops accepting connections, and the agent is restarted in the middle of it (a power
//! cut): it then retries its connection for the rest of the outage and the timed-out payments'
//! cancels wait for it. The burst: a terminal of our own writes 10,000 frames in one go, a third
//! each with a bad CRC (NAKed, logged at debug only), JSON the agent cannot read, and a request
//! without an id.

// The test suite's support code; a benchmark uses only part of it.
#[allow(dead_code)]
#[path = "../tests/suite/support/mod.rs"]
mod support;

use std::time::{Duration, SystemTime};

use nix::sys::signal::Signal;
use pos_agent::serial::frame::frame_bytes;
use pos_agent::serial::message::{Reply, SaleOrder, TerminalRequest};
use support::daemon::{Agent, Setup};
use tokio::io::AsyncWriteExt;
use uuid::Uuid;

const BURST: usize = 10_000;

/// What journald adds per line beyond the text on stderr, for the estimate of journal bytes:
/// the fields the agent sends with every line (PRIORITY, TARGET, CODE_FILE, CODE_LINE,
/// SYSLOG_IDENTIFIER, about 110 bytes) less the timestamp and level stderr has and the journal
/// does not (about 35), rounded up, plus journald's own per-entry record (entry object, item
/// references; the trusted fields such as `_PID=` are stored once and referenced) of about
/// 200 bytes.
const JOURNAL_OVERHEAD_PER_LINE: usize = 300;

fn setup(repeat_window: &str) -> Setup {
    Setup {
        log_level: "info",
        payment_timeout: "2m",
        extra_env: vec![("POS_AGENT__LOG__REPEAT_WINDOW", repeat_window.into())],
        ..Setup::default()
    }
}

/// Seconds since the epoch of a log line's leading RFC 3339 timestamp.
fn line_time(line: &str) -> Option<SystemTime> {
    let stamp = line.split_whitespace().next()?;
    humantime::parse_rfc3339(stamp).ok()
}

/// Bytes and lines of `log` in each minute after `since`, up to `minutes`.
fn per_minute(log: &str, since: SystemTime, minutes: usize) -> Vec<(usize, usize)> {
    let mut windows = vec![(0usize, 0usize); minutes];
    for line in log.lines() {
        let Some(at) = line_time(line) else { continue };
        let Ok(offset) = at.duration_since(since) else {
            continue;
        };
        let minute = (offset.as_secs() / 60) as usize;
        if let Some(window) = windows.get_mut(minute) {
            window.0 += line.len() + 1;
            window.1 += 1;
        }
    }
    windows
}

struct Hour {
    bytes: usize,
    lines: usize,
}

/// The hour: the minutes measured, and beyond them the rate of their second half.
fn extrapolate(windows: &[(usize, usize)]) -> Hour {
    let measured_bytes: usize = windows.iter().map(|w| w.0).sum();
    let measured_lines: usize = windows.iter().map(|w| w.1).sum();
    let tail = &windows[windows.len() / 2..];
    let rest = 60usize.saturating_sub(windows.len()) as f64;
    let per_minute = |pick: fn(&(usize, usize)) -> usize| {
        tail.iter().map(pick).sum::<usize>() as f64 / tail.len() as f64
    };
    Hour {
        bytes: measured_bytes + (per_minute(|w| w.0) * rest).round() as usize,
        lines: measured_lines + (per_minute(|w| w.1) * rest).round() as usize,
    }
}

async fn outage(repeat_window: &'static str, minutes: usize) -> (Vec<(usize, usize)>, String) {
    let mut agent = Agent::start(setup(repeat_window)).await;
    agent.wait_notification("STATUS=connected").await;
    for _ in 0..2 {
        let sale = TerminalRequest::Sale(SaleOrder {
            merchant_unique_code: Uuid::new_v4(),
            amount_minor: std::num::NonZeroU64::new(990).unwrap(),
            currency_id: None,
            display_code: None,
        });
        let reply = agent.terminal.request(sale).await.unwrap();
        assert!(matches!(reply, Reply::SaleStarted { .. }), "{reply:?}");
    }
    agent.sim.set_refusing(true);
    agent.signal(Signal::SIGKILL);
    agent.wait_exit().await;
    agent.forget_notifications();
    let since = SystemTime::now();
    agent.spawn();
    agent.wait_notification("READY=1").await;
    tokio::time::sleep(Duration::from_secs(60 * minutes as u64)).await;
    let log = agent.log();
    agent.finish().await;
    (per_minute(&log, since, minutes), log)
}

/// Frames of the burst: bad CRC, unreadable JSON, no id, in turn.
fn burst() -> Vec<u8> {
    let mut bad_crc = frame_bytes(br#"{"type":"status","id":7}"#)
        .unwrap()
        .to_vec();
    let crc_at = bad_crc.len() - 3;
    bad_crc[crc_at] ^= 0x5a;
    let unreadable = frame_bytes(br#"{"type":"sale","id":"#).unwrap().to_vec();
    let anonymous = frame_bytes(br#"{"type":"status"}"#).unwrap().to_vec();
    let kinds = [bad_crc, unreadable, anonymous];
    (0..BURST).flat_map(|i| kinds[i % 3].clone()).collect()
}

/// Lines the burst caused: each unreadable or id-less frame written or summarised.
fn burst_lines(log: &str) -> Vec<&str> {
    log.lines()
        .filter(|l| l.contains("unreadable serial message") || l.contains("serial request without"))
        .collect()
}

/// Frames accounted for: lines written in full plus the counts of the summaries.
fn accounted(lines: &[&str]) -> usize {
    lines
        .iter()
        .map(|l| match l.split("… ").nth(1) {
            Some(rest) if l.contains("more in the last") => rest
                .split(' ')
                .next()
                .and_then(|n| n.parse().ok())
                .unwrap_or(0),
            _ => 1,
        })
        .sum()
}

async fn bad_frames(repeat_window: &'static str, wait: Duration) -> (usize, usize, usize) {
    let agent = Agent::start(setup(repeat_window)).await;
    let mut to_agent = agent.replace_terminal_with_raw_line();
    let before = agent.log().lines().count();
    to_agent.write_all(&burst()).await.unwrap();
    let expected = BURST - BURST / 3 - usize::from(BURST % 3 > 0);
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        let log = agent.log();
        if accounted(&burst_lines(&log)) >= expected || tokio::time::Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let log = agent.log();
    let lines = burst_lines(&log);
    let bytes = lines.iter().map(|l| l.len() + 1).sum();
    let all_lines = log.lines().count() - before;
    let result = (lines.len(), bytes, all_lines);
    let _ = accounted(&lines);
    agent.finish().await;
    result
}

fn report_outage(name: &str, windows: &[(usize, usize)]) -> Hour {
    let hour = extrapolate(windows);
    println!("  {name}:");
    let per_minute: Vec<String> = windows
        .iter()
        .map(|(bytes, lines)| format!("{lines}/{bytes}"))
        .collect();
    println!("    lines/bytes per minute: {}", per_minute.join(" "));
    let how = if windows.len() >= 60 {
        "measured"
    } else {
        "measured minutes + their second half's rate for the rest"
    };
    println!(
        "    per hour ({how}): {} lines, {} bytes of text ({:.1} KiB); journal estimate (+{JOURNAL_OVERHEAD_PER_LINE} B/line) {:.1} KiB",
        hour.lines,
        hour.bytes,
        hour.bytes as f64 / 1024.0,
        (hour.bytes + hour.lines * JOURNAL_OVERHEAD_PER_LINE) as f64 / 1024.0
    );
    hour
}

/// A trading day in miniature (`-- sales`): sales that end with the terminal's result, operator
/// cancels, and the health gate's and a monitor's read-only polls, at the production level
/// (`info`). Prints the lines and bytes each writes, audit records apart, for
/// docs/operations.md ("Log retention").
async fn trading_day() {
    const SALES: usize = 40;
    const CANCELS: usize = 10;
    const POLLS: usize = 40;
    let mut agent = Agent::connected(Setup {
        log_level: "info",
        ..Setup::default()
    })
    .await;
    let measure = |agent: &Agent, before: &str| {
        let log = agent.log();
        let added = &log[before.len()..];
        let audit = added.lines().filter(|l| l.contains(" pos_agent::audit: "));
        (
            added.lines().count(),
            added.len(),
            audit.clone().count(),
            audit.map(|l| l.len() + 1).sum::<usize>(),
        )
    };
    let start = agent.log();
    for _ in 0..SALES {
        let id = agent.started(1250).await;
        let reply = agent
            .terminal
            .request(TerminalRequest::PaymentResult {
                payment_request_id: id,
                status: pos_agent::serial::message::PaymentResultStatus::Succeeded,
            })
            .await
            .unwrap();
        assert!(matches!(reply, Reply::Ok(_)), "{reply:?}");
    }
    let sales = measure(&agent, &start);
    let start = agent.log();
    for _ in 0..CANCELS {
        let id = agent.started(990).await;
        assert_eq!(agent.cli(&["cancel", &id]).await.code, Some(0));
    }
    let cancels = measure(&agent, &start);
    let start = agent.log();
    for _ in 0..POLLS {
        agent.cli(&["check-health"]).await;
        agent.cli(&["status"]).await;
    }
    let polls = measure(&agent, &start);
    println!("A trading day in miniature, log level info (text lines as the journal gets them):");
    for (name, n, (lines, bytes, audit_lines, audit_bytes)) in [
        ("sale + its result", SALES, sales),
        ("sale + operator cancel", CANCELS, cancels),
        ("check-health + status poll", POLLS, polls),
    ] {
        println!(
            "  {name}: {:.1} lines, {:.0} bytes each ({:.1} audit records, {:.0} bytes); journal estimate {:.0} bytes each",
            lines as f64 / n as f64,
            bytes as f64 / n as f64,
            audit_lines as f64 / n as f64,
            audit_bytes as f64 / n as f64,
            (bytes + lines * JOURNAL_OVERHEAD_PER_LINE) as f64 / n as f64,
        );
    }
    agent.finish().await;
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    if std::env::args().any(|a| a == "sales") {
        return trading_day().await;
    }
    let minutes = std::env::args()
        .skip_while(|a| a != "minutes")
        .nth(1)
        .and_then(|n| n.parse().ok())
        .unwrap_or(60usize)
        .max(2);
    println!(
        "pos-agent journal volume (binary: {}); outage of {minutes} real minutes",
        env!("CARGO_BIN_EXE_pos-agent")
    );
    // Everything at once: the scenarios wait on real time, not on the CPU.
    let wait = Duration::from_secs(60 * minutes as u64);
    let (summarised, plain, burst_summarised, burst_plain) = tokio::join!(
        outage("60s", minutes),
        outage("0s", minutes),
        bad_frames("60s", wait),
        bad_frames("0s", wait),
    );
    println!("API outage, agent restarted into it, two payments timing out:");
    let hour = report_outage("repeat_window = 60s", &summarised.0);
    let plain_hour = report_outage("repeat_window = 0s (every line)", &plain.0);
    println!(
        "  summarising writes {:.0} % of the bytes",
        100.0 * hour.bytes as f64 / plain_hour.bytes.max(1) as f64
    );
    println!("Burst of {BURST} bad frames (a third each: bad CRC, unreadable, no id):");
    for (name, (lines, bytes, all)) in [
        ("repeat_window = 60s", burst_summarised),
        ("repeat_window = 0s (every line)", burst_plain),
    ] {
        println!(
            "  {name}: {lines} lines about the frames ({bytes} bytes); {all} log lines in all until the burst was accounted for"
        );
    }
    if std::env::args().any(|a| a == "show") {
        println!("--- outage log, summarised ---\n{}", summarised.1);
    }
}

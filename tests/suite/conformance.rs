//! `pos-agent conformance` (docs/terminal-kit.md) as a process against a terminal as a process,
//! through two pty pairs and a relay: every case passes against `pos-agent simulate-terminal`,
//! and a terminal broken on purpose in one rule (by the relay) fails the cases of that rule,
//! named after their section, and only those.

use crate::support;

use std::process::{Child, Stdio};

use crate::support::terminal_kit::{failed_cases, run_kit, Bench, Fault};

/// `pos-agent simulate-terminal` on `bench`'s terminal end; it runs until killed (its stdin
/// stays open).
fn simulated_terminal(bench: &Bench) -> Child {
    support::pos_agent()
        .args(["simulate-terminal", "--device"])
        .arg(&bench.terminal_device)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

/// Runs the kit against the simulator behind `fault`; returns the exit code, the failed cases
/// and the report.
async fn kit_against_simulator(
    fault: Fault,
) -> (Option<i32>, Vec<(String, String)>, serde_json::Value) {
    let bench = Bench::start(fault);
    let mut terminal = simulated_terminal(&bench);
    let (code, report) = run_kit(&bench.kit_device).await;
    let _ = terminal.kill();
    let _ = terminal.wait();
    (code, failed_cases(&report), report)
}

fn names(failed: &[(String, String)]) -> Vec<&str> {
    failed.iter().map(|(name, _)| name.as_str()).collect()
}

#[tokio::test]
async fn every_case_passes_against_the_terminal_simulator() {
    let (code, failed, report) = kit_against_simulator(Fault::None).await;
    assert_eq!(failed, vec![], "{report:#}");
    assert_eq!(code, Some(0));
    assert!(report["passed"].as_u64().unwrap() >= 20, "{report:#}");
    assert_eq!(report["terminal"]["model"], "pos-agent simulate-terminal");
    for case in report["cases"].as_array().unwrap() {
        assert!(
            case["section"]
                .as_str()
                .unwrap()
                .starts_with("docs/serial-protocol.md §"),
            "every case names its section: {case}"
        );
    }
}

#[tokio::test]
async fn a_terminal_that_does_not_nak_bad_frames_fails_those_cases() {
    let (code, failed, _) = kit_against_simulator(Fault::DropNaks).await;
    assert_eq!(code, Some(1));
    assert_eq!(
        names(&failed),
        [
            "a frame with a bad CRC is answered NAK and its resend delivered once",
            "an oversize APDU (over 4096 bytes) is answered NAK",
            "a bad escape inside a frame is answered NAK",
        ],
        "{failed:#?}"
    );
    assert!(failed[0].1.contains("not NAK"), "{failed:#?}");
}

#[tokio::test]
async fn a_terminal_with_slow_acks_fails_the_t1_case() {
    let (code, failed, _) = kit_against_simulator(Fault::SlowAcks).await;
    assert_eq!(code, Some(1));
    assert_eq!(
        names(&failed),
        ["a good frame is ACKed within T1 (200 ms)"],
        "{failed:#?}"
    );
}

#[tokio::test]
async fn a_terminal_that_never_resends_fails_the_sending_cases() {
    let (code, failed, _) = kit_against_simulator(Fault::NoResend).await;
    assert_eq!(code, Some(1));
    assert_eq!(
        names(&failed),
        [
            "a frame answered NAK is sent again at once, the same bytes",
            "a frame without an answer is sent again after T3",
            "a frame is sent max_sends times in all, then given up",
        ],
        "{failed:#?}"
    );
    assert!(failed[2].1.contains("sent 1 time(s)"), "{failed:#?}");
}

#[tokio::test]
async fn a_terminal_that_accepts_invalid_requests_fails_that_case() {
    let (code, failed, _) = kit_against_simulator(Fault::ErrorsAsOk).await;
    assert_eq!(code, Some(1));
    assert_eq!(
        names(&failed),
        ["an invalid request with an id is answered error/invalid_request"],
        "{failed:#?}"
    );
}

/// The human form: one line per case with its verdict and section, then the summary.
#[tokio::test]
async fn the_report_has_one_line_per_case_and_a_summary() {
    let bench = Bench::start(Fault::None);
    let mut terminal = simulated_terminal(&bench);
    let mut command = support::pos_agent();
    command
        .args(["conformance", "--device"])
        .arg(&bench.kit_device);
    let output = tokio::task::spawn_blocking(move || command.output())
        .await
        .unwrap()
        .unwrap();
    let _ = terminal.kill();
    let _ = terminal.wait();
    let text = String::from_utf8_lossy(&output.stdout);
    assert_eq!(output.status.code(), Some(0), "{text}");
    let lines: Vec<&str> = text.lines().collect();
    assert!(lines.len() >= 22, "{text}");
    assert!(
        lines[0].starts_with("PASS  docs/serial-protocol.md §2 Frames"),
        "{text}"
    );
    assert!(
        lines[lines.len() - 2].starts_with("terminal: pos-agent simulate-terminal"),
        "{text}"
    );
    assert!(
        lines[lines.len() - 1].ends_with("passed, 0 failed"),
        "{text}"
    );
}

#[test]
fn a_device_that_cannot_be_opened_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("ttyUSB9");
    let output = support::pos_agent()
        .args(["conformance", "--device"])
        .arg(&missing)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("cannot open the terminal's line") && stderr.contains("ttyUSB9"),
        "{stderr}"
    );
    assert!(output.stdout.is_empty());
}

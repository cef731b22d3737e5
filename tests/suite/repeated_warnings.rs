//! Repeated warnings are summarised, not written each time (docs/operations.md (Repeated
//! warnings)): the real daemon, with its stderr as the log. A terminal that sends a burst of
//! frames the agent cannot read: the first occurrence is written in full, the rest are counted in
//! summary lines that keep their structured fields, and nothing is lost: the first line plus the
//! summaries' counts make the whole burst. A payment API that refuses connections: the first
//! warning is written, its repeats summarised, and the recovery is written when it comes.

use crate::support::daemon::{Agent, Setup};
use crate::support::WAIT;
use pos_agent::serial::frame::frame_bytes;
use pos_agent::simulator::api::{ApiSimulator, SimulatorOptions};
use tokio::io::AsyncWriteExt;

const BURST: u64 = 300;
const UNREADABLE: &str = "unreadable serial message";

/// `N` of every `… N more in the last` summary of the unreadable frames.
fn summarised(log: &str) -> Vec<u64> {
    log.lines()
        .filter(|line| line.contains("more in the last") && line.contains(UNREADABLE))
        .map(|line| {
            let count = line
                .split("… ")
                .nth(1)
                .and_then(|rest| rest.split(' ').next());
            count.and_then(|n| n.parse().ok()).expect("a count")
        })
        .collect()
}

#[tokio::test]
async fn a_burst_of_unreadable_frames_is_written_once_and_summarised() {
    let agent = Agent::start(Setup {
        log_level: "info",
        extra_env: vec![("POS_AGENT__LOG__REPEAT_WINDOW", "2s".into())],
        ..Setup::default()
    })
    .await;
    // A terminal of our own on the line, to send what no simulator would.
    let mut to_agent = agent.replace_terminal_with_raw_line();
    let frame = frame_bytes(b"{\"type\":\"sale\",\"id\":").unwrap();
    let mut burst = Vec::new();
    for _ in 0..BURST {
        burst.extend_from_slice(&frame);
    }
    to_agent.write_all(&burst).await.unwrap();

    let deadline = tokio::time::Instant::now() + WAIT;
    let log = loop {
        let log = agent.log();
        let written = log.lines().filter(|l| l.contains(UNREADABLE)).count() as u64;
        let held: u64 = summarised(&log).iter().sum();
        if written - summarised(&log).len() as u64 + held >= BURST {
            break log;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the burst is not accounted for within {WAIT:?}; log:\n{log}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    };
    let lines: Vec<&str> = log.lines().filter(|l| l.contains(UNREADABLE)).collect();
    let summaries = summarised(&log);
    let full = lines.len() - summaries.len();
    assert_eq!(
        full as u64 + summaries.iter().sum::<u64>(),
        BURST,
        "every frame is either written or counted:\n{log}"
    );
    // The burst takes well under the window even under emulation; a slow run may split it.
    assert!(
        lines.len() <= 10,
        "{} lines for {BURST} frames:\n{log}",
        lines.len()
    );
    assert!(
        lines[0].contains(" WARN ") && !lines[0].contains("more in the last"),
        "the first occurrence is written in full: {}",
        lines[0]
    );
    let summary = lines
        .iter()
        .find(|l| l.contains("more in the last"))
        .expect("a summary line");
    assert!(summary.contains(" WARN "), "{summary}");
    assert!(summary.contains(" repeated="), "{summary}");
    assert!(summary.contains(" window_s="), "{summary}");
    agent.finish().await;
}

#[tokio::test]
async fn an_outage_writes_its_first_warning_summarises_the_repeats_and_writes_the_recovery() {
    const UNREACHABLE: &str = "payment API not reachable yet";
    let sim = ApiSimulator::start(SimulatorOptions::default()).unwrap();
    sim.set_refusing(true);
    let agent = Agent::start_with(
        sim,
        Setup {
            log_level: "info",
            extra_env: vec![("POS_AGENT__LOG__REPEAT_WINDOW", "1s".into())],
            ..Setup::default()
        },
    )
    .await;
    let during = agent
        .log_until("a summary of the refused connections", |log| {
            log.lines()
                .any(|l| l.contains("more in the last") && l.contains(UNREACHABLE))
        })
        .await;
    let lines: Vec<&str> = during.lines().filter(|l| l.contains(UNREACHABLE)).collect();
    assert!(
        lines[0].contains(" WARN ") && !lines[0].contains("more in the last"),
        "the first occurrence is written in full: {}",
        lines[0]
    );

    agent.sim.set_refusing(false);
    let after = agent
        .log_until("the recovery", |log| {
            log.contains("payment API connection ") && log.contains(" active")
        })
        .await;
    let recovery = after
        .lines()
        .find(|l| l.contains("payment API connection ") && l.contains(" active"))
        .unwrap();
    assert!(recovery.contains(" INFO "), "{recovery}");
    agent.finish().await;
}

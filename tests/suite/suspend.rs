//! Deadlines count the time the system was suspended (docs/state.md, "Which clock measures
//! what"): the sale reply deadline, the retry waits and the repeat window of repeated warnings
//! are measured on `CLOCK_BOOTTIME`. A terminal that sleeps through a deadline finds it due when
//! it wakes, not the whole deadline again after the resume, which is what `CLOCK_MONOTONIC`
//! (tokio's clock, stopped during a suspend) would give.
//!
//! The real binary with `tools/suspend-shim.c` preloaded: it adds the seconds written in a file
//! to every read of `CLOCK_BOOTTIME` and leaves `CLOCK_MONOTONIC` and the wall clock alone, which
//! is what a resume from a suspend of that long looks like to a process. Each test "suspends" the
//! daemon for longer than a deadline that is far longer than the test's own wait, so only a
//! deadline measured on the boot clock can be met.

use crate::support;

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::support::daemon::{Agent, Setup};
use crate::support::paths::{RECONNECT, SALE};
use crate::support::WAIT;
use pos_agent::serial::frame::frame_bytes;
use pos_agent::serial::message::{ErrorCode, Reply};
use pos_agent::simulator::api::{ApiSimulator, Fault, FaultKind, SimulatorOptions};
use tempfile::TempDir;
use tokio::io::AsyncWriteExt;
use uuid::Uuid;

/// How long each test suspends the daemon: longer than every deadline below.
const SUSPEND_SECONDS: u64 = 600;

/// The seconds the daemon has been "suspended", as the shim reads them.
struct Suspend {
    dir: TempDir,
}

impl Suspend {
    fn new() -> Self {
        let suspend = Self {
            dir: tempfile::tempdir().unwrap(),
        };
        write_seconds(&suspend.file(), 0);
        suspend
    }

    fn file(&self) -> PathBuf {
        self.dir.path().join("suspended-seconds")
    }

    fn env(&self) -> Vec<(&'static str, String)> {
        vec![
            support::preload::env("suspend-shim.c"),
            ("SUSPENDED_SECONDS_FILE", self.file().display().to_string()),
        ]
    }
}

fn write_seconds(file: &Path, seconds: u64) {
    support::preload::replace(file, &format!("{seconds}\n"));
}

#[tokio::test]
async fn a_sale_reply_deadline_that_fell_during_a_suspend_is_met_at_the_resume() {
    if !support::preload::reaches_the_daemon("suspending the daemon's boot clock") {
        return;
    }
    let suspend = Suspend::new();
    let mut agent = Agent::connected(Setup {
        sale_reply_deadline: "5m",
        extra_env: suspend.env(),
        ..Setup::default()
    })
    .await;
    agent
        .sim
        .inject(Fault::new("POST", SALE, FaultKind::BlackHole).always());
    let code = Uuid::new_v4();
    // The suspend comes once the sale's intent is on disk: its deadline is set by then.
    let suspended = tokio::spawn(suspend_once_written(
        agent.state_dir.clone(),
        code.to_string(),
        suspend.file(),
    ));
    let reply = tokio::time::timeout(WAIT, agent.sale(code, 1250))
        .await
        .unwrap_or_else(|_| {
            panic!(
                "no reply within {WAIT:?} of a suspend past the 5 min deadline; log:\n{}",
                agent.log()
            )
        });
    suspended.await.unwrap();
    match &reply {
        Reply::Error { code, .. } => assert_eq!(*code, ErrorCode::ApiUnavailable, "{reply:?}"),
        other => panic!("expected api_unavailable, got {other:?}"),
    }
    assert_eq!(
        agent.state_file()["sales"][code.to_string()]["stage"]["status"],
        "abandoned"
    );
    agent.sim.clear_faults();
    agent.finish().await;
}

/// Waits until `needle` is in the state directory's files, then suspends.
async fn suspend_once_written(state_dir: PathBuf, needle: String, file: PathBuf) {
    let written = || {
        ["state.json", "state.journal"].iter().any(|name| {
            std::fs::read(state_dir.join(name))
                .is_ok_and(|bytes| bytes.windows(needle.len()).any(|w| w == needle.as_bytes()))
        })
    };
    let deadline = tokio::time::Instant::now() + WAIT;
    while !written() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{needle} never written"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    write_seconds(&file, SUSPEND_SECONDS);
}

#[tokio::test]
async fn a_retry_wait_that_ended_during_a_suspend_is_over_at_the_resume() {
    if !support::preload::reaches_the_daemon("suspending the daemon's boot clock") {
        return;
    }
    let suspend = Suspend::new();
    let sim = ApiSimulator::start(SimulatorOptions::default()).unwrap();
    // The longest wait the agent honours (`MAX_RETRY_AFTER`, 5 min).
    sim.inject(Fault::new(
        "PUT",
        RECONNECT,
        FaultKind::RetryAfter {
            status: 503,
            value: "300".into(),
        },
    ));
    let mut agent = Agent::start_with(
        sim,
        Setup {
            establish: false,
            extra_env: suspend.env(),
            ..Setup::default()
        },
    )
    .await;
    let first = agent
        .sim
        .wait_for_request(|r| r.is("PUT", RECONNECT), WAIT)
        .await
        .expect("the agent reconnects");
    agent
        .status_until("the agent waits out the Retry-After", |s| {
            !s["api_retry_after"].is_null()
        })
        .await;
    write_seconds(&suspend.file(), SUSPEND_SECONDS);
    let second = agent
        .sim
        .wait_for_request(|r| r.is("PUT", RECONNECT) && r.at > first.at, WAIT)
        .await;
    assert!(
        second.is_some(),
        "no reconnect within {WAIT:?} of a suspend past the API's 5 min wait; log:\n{}",
        agent.log()
    );
    agent.wait_notification("STATUS=connected").await;
    agent.finish().await;
}

#[tokio::test]
async fn a_repeat_window_that_ended_during_a_suspend_is_summarised_at_the_resume() {
    if !support::preload::reaches_the_daemon("suspending the daemon's boot clock") {
        return;
    }
    const UNREADABLE: &str = "unreadable serial message";
    let suspend = Suspend::new();
    let mut env = suspend.env();
    env.push(("POS_AGENT__LOG__REPEAT_WINDOW", "5m".into()));
    // The raw line never acknowledges the agent's frames: slow enough, the link stays up
    // through the test, and no "link down" line (a recovery of the link's warnings, which
    // writes their summaries at once) comes before the window's end.
    env.push(("POS_AGENT__SERIAL__ACK_TIMEOUT", "30s".into()));
    env.push(("POS_AGENT__SERIAL__PING_INTERVAL", "1m".into()));
    let mut agent = Agent::start(Setup {
        log_level: "info",
        extra_env: env,
        ..Setup::default()
    })
    .await;
    let mut to_agent = agent.replace_terminal_with_raw_line();
    let frame = frame_bytes(b"{\"type\":\"sale\",\"id\":").unwrap();
    let count = |log: &str, summary: bool| {
        log.lines()
            .filter(|l| l.contains(UNREADABLE) && l.contains("more in the last") == summary)
            .count()
    };
    // The first is written; its repeats are held back for the window. The daemon reads a
    // frame and logs it in one step of its single-threaded runtime, so once the frame counter
    // has moved past both repeats, both were held back before the suspend.
    to_agent.write_all(&frame).await.unwrap();
    agent
        .log_until("the first unreadable frame", |log| count(log, false) == 1)
        .await;
    let before = frames_received(&mut agent).await;
    to_agent.write_all(&frame).await.unwrap();
    to_agent.write_all(&frame).await.unwrap();
    let deadline = tokio::time::Instant::now() + WAIT;
    while frames_received(&mut agent).await < before + 2 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the repeats never arrived"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(count(&agent.log(), true), 0, "summarised before the window");
    write_seconds(&suspend.file(), SUSPEND_SECONDS);
    agent
        .log_until("a summary of the repeats", |log| count(log, true) >= 1)
        .await;
    assert_eq!(count(&agent.log(), false), 1, "{}", agent.log());
    agent.finish().await;
}

/// The daemon's count of frames received from the terminal (`pos-agent metrics`).
async fn frames_received(agent: &mut Agent) -> u64 {
    let out = agent.cli(&["metrics"]).await;
    out.stdout
        .lines()
        .find_map(|line| line.strip_prefix("pos_agent_serial_frames_received_total "))
        .and_then(|value| value.trim().parse::<f64>().ok())
        .unwrap_or_else(|| panic!("no frame counter in {out:?}")) as u64
}

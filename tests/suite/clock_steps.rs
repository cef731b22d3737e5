//! A step of the wall clock changes no payment timeout (docs/state.md, "A pending payment's
//! age"): the daemon's wall clock is stepped by days while a payment is pending, and the timeout
//! cancel still comes `payment_timeout` of real time after the sale, neither at once nor days
//! later; the same across a restart in the same boot, and bounded across another boot.
//!
//! The real binary with Debian's libfaketime preloaded: `FAKETIME_TIMESTAMP_FILE` (re-read at
//! every clock read, `FAKETIME_NO_CACHE`) holds the offset, changed during the run, and
//! `FAKETIME_DONT_FAKE_MONOTONIC` leaves `CLOCK_MONOTONIC` and `CLOCK_BOOTTIME` as they are:
//! only the wall clock steps, as an NTP sync or an operator's `date` steps it.

use crate::support;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

use crate::support::daemon::{Agent, Setup};
use crate::support::paths::CANCEL;
use nix::sys::signal::Signal;
use pos_agent::serial::message::CancelReason;
use tempfile::TempDir;

const DAY: Duration = Duration::from_secs(24 * 60 * 60);

/// Debian's libfaketime (package `libfaketime`), the variant for threaded programs.
fn libfaketime() -> PathBuf {
    let found = std::fs::read_dir("/usr/lib")
        .into_iter()
        .flatten()
        .flatten()
        .map(|entry| entry.path().join("faketime/libfaketimeMT.so.1"))
        .find(|path| path.exists());
    found.expect("libfaketime is not installed (Debian package libfaketime)")
}

/// The daemon's wall-clock offset, as libfaketime reads it.
struct FakeClock {
    dir: TempDir,
}

impl FakeClock {
    fn new() -> Self {
        let clock = Self {
            dir: tempfile::tempdir().unwrap(),
        };
        clock.set("+0");
        clock
    }

    fn file(&self) -> PathBuf {
        self.dir.path().join("faketime")
    }

    /// Sets the offset (`+2d`, `-2d`, `+0`); replaced by a rename, so that the daemon never
    /// reads half a file.
    fn set(&self, offset: &str) {
        support::preload::replace(&self.file(), &format!("{offset}\n"));
    }

    fn env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("LD_PRELOAD", libfaketime().display().to_string()),
            ("FAKETIME_TIMESTAMP_FILE", self.file().display().to_string()),
            ("FAKETIME_NO_CACHE", "1".into()),
            ("FAKETIME_DONT_FAKE_MONOTONIC", "1".into()),
        ]
    }
}

async fn agent(clock: &FakeClock, payment_timeout: &'static str) -> Agent {
    Agent::connected(Setup {
        payment_timeout,
        extra_env: clock.env(),
        ..Setup::default()
    })
    .await
}

/// The daemon's wall clock as it wrote it last: the `at` of the sale's final record.
async fn final_at(agent: &Agent, id: &str) -> SystemTime {
    let state = agent
        .state_file_until("the sale final", |state| {
            state["sales"].as_object().unwrap().values().any(|sale| {
                sale["stage"]["status"] == "final" && sale["stage"]["payment_request_id"] == id
            })
        })
        .await;
    let sale = state["sales"]
        .as_object()
        .unwrap()
        .values()
        .find(|sale| sale["stage"]["payment_request_id"] == id)
        .unwrap()
        .clone();
    humantime::parse_rfc3339(sale["stage"]["at"].as_str().unwrap()).unwrap()
}

/// Waits for the timeout cancel of `id` and returns how long after `start` it came.
async fn timeout_cancel(agent: &mut Agent, id: &str, start: Instant) -> Duration {
    let cancelled = agent.next_cancelled().await;
    let after = start.elapsed();
    assert_eq!(cancelled, (id.to_owned(), CancelReason::Timeout));
    after
}

fn cancels(agent: &Agent) -> usize {
    agent.sim.requests_to("POST", CANCEL).len()
}

/// A sale, the daemon's wall clock stepped by `step` (`+2d`, `-2d`), then `status` (the main
/// loop runs again and sees the payment timer afresh): the timeout cancel comes once, no
/// sooner than `payment_timeout` after the sale on the real clock, and within the harness's
/// wait (not days later); what the daemon wrote after the step carries the stepped date.
async fn cancelled_on_time_after_a_step(payment_timeout: &'static str, step: &str) {
    if !support::preload::reaches_the_daemon("stepping the daemon's wall clock (libfaketime)") {
        return;
    }
    let clock = FakeClock::new();
    let timeout = humantime::parse_duration(payment_timeout).unwrap();
    let mut agent = agent(&clock, payment_timeout).await;
    let start = Instant::now();
    let id = agent.started(100).await;
    clock.set(step);
    agent.status().await;
    let after = timeout_cancel(&mut agent, &id, start).await;
    assert!(
        after >= timeout,
        "the timeout cancel came {after:?} after the sale, before payment_timeout ({timeout:?}); log:\n{}",
        agent.log()
    );
    assert_eq!(cancels(&agent), 1);
    let written = final_at(&agent, &id).await;
    let now = SystemTime::now();
    let stepped = if step.starts_with('-') {
        written + DAY < now
    } else {
        written > now + DAY
    };
    assert!(
        stepped,
        "the daemon's wall clock was not stepped by {step}: {}",
        humantime::format_rfc3339_millis(written)
    );
    agent.finish().await;
}

#[tokio::test]
async fn a_wall_clock_stepped_forward_by_days_does_not_cancel_a_young_payment() {
    cancelled_on_time_after_a_step("4s", "+2d").await;
}

#[tokio::test]
async fn a_wall_clock_stepped_back_by_days_still_cancels_on_time() {
    cancelled_on_time_after_a_step("3s", "-2d").await;
}

/// Kills the daemon (no shutdown: its payment stays pending), runs `meanwhile`, starts it again
/// on the same state and waits until it is connected and the terminal's link is up.
async fn restart(agent: &mut Agent, meanwhile: impl FnOnce(&Path)) {
    agent.signal(Signal::SIGKILL);
    agent.wait_exit().await;
    meanwhile(&agent.state_dir);
    agent.forget_notifications();
    agent.spawn();
    agent.wait_notification("STATUS=connected").await;
    agent.terminal.wait_until_up().await;
}

/// Waits until the boot-time instant of `id` is written beside the state (before the daemon is
/// killed).
async fn boot_time_written(agent: &Agent, id: &str) {
    let times = agent.state_dir.join("boot-times");
    let deadline = Instant::now() + support::WAIT;
    while !std::fs::read_to_string(&times).is_ok_and(|t| t.contains(id)) {
        assert!(
            Instant::now() < deadline,
            "{} never names {id}",
            times.display()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn across_a_restart_in_the_same_boot_the_age_is_taken_from_the_boot_clock() {
    if !support::preload::reaches_the_daemon("stepping the daemon's wall clock (libfaketime)") {
        return;
    }
    let clock = FakeClock::new();
    let timeout = Duration::from_secs(6);
    let mut agent = agent(&clock, "6s").await;
    let start = Instant::now();
    let id = agent.started(100).await;
    boot_time_written(&agent, &id).await;
    restart(&mut agent, |_| clock.set("+2d")).await;
    assert_eq!(cancels(&agent), 0, "cancelled at the restart");
    let after = timeout_cancel(&mut agent, &id, start).await;
    assert!(
        after >= timeout,
        "the timeout cancel came {after:?} after the sale, before payment_timeout ({timeout:?}); log:\n{}",
        agent.log()
    );
    assert_eq!(cancels(&agent), 1);
    agent.finish().await;
}

#[tokio::test]
async fn across_another_boot_a_clock_stepped_back_keeps_a_payment_at_most_payment_timeout() {
    if !support::preload::reaches_the_daemon("stepping the daemon's wall clock (libfaketime)") {
        return;
    }
    let clock = FakeClock::new();
    let timeout = Duration::from_secs(3);
    let mut agent = agent(&clock, "3s").await;
    let id = agent.started(100).await;
    boot_time_written(&agent, &id).await;
    let mut restarted = Instant::now();
    restart(&mut agent, |state_dir| {
        // As after a reboot: the boot-time instants are of another boot, and the clock that
        // came up is two days behind the one the payment was recorded with.
        let times = state_dir.join("boot-times");
        let text = std::fs::read_to_string(&times).unwrap();
        let (boot_id, payments) = text.split_once('\n').unwrap();
        assert!(payments.starts_with(&format!("{id} ")), "{text}");
        let other = boot_id.replace(|c: char| c.is_ascii_hexdigit(), "0");
        std::fs::write(&times, format!("{other}\n{payments}")).unwrap();
        clock.set("-2d");
        restarted = Instant::now();
    })
    .await;
    let after = timeout_cancel(&mut agent, &id, restarted).await;
    assert!(after >= timeout, "cancelled {after:?} after the restart");
    assert_eq!(cancels(&agent), 1);
    agent.finish().await;
}

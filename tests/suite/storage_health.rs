//! Storage health is health (docs/operations.md (Storage health)): the real daemon on a state
//! file system that fills up refuses sales, says so in `status` and `check-health`, and once
//! space is freed writes what it kept in memory, sends the operator's cancel that could not be
//! recorded, and is healthy again. Each transition is logged once. A torn journal tail dropped
//! at start is logged.

use crate::support;

use std::path::Path;
use std::process::Command;

use crate::support::daemon::{Agent, Setup};
use crate::support::paths::CANCEL;
use nix::sys::signal::Signal;
use pos_agent::serial::message::{CancelReason, Reply};
use uuid::Uuid;

/// A small tmpfs mounted for one test, unmounted when dropped.
struct SmallFs {
    dir: tempfile::TempDir,
}

impl SmallFs {
    /// `None` (with a note) where mounting is not permitted: not root, or in a container
    /// without the capability.
    fn mount(size: &str) -> Option<SmallFs> {
        let dir = tempfile::tempdir().unwrap();
        let mounted = Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size},mode=0700"),
                "tmpfs",
            ])
            .arg(dir.path())
            .output();
        match mounted {
            Ok(out) if out.status.success() => Some(SmallFs { dir }),
            Ok(out) => {
                eprintln!(
                    "note: skipped, cannot mount a tmpfs here: {}",
                    String::from_utf8_lossy(&out.stderr).trim()
                );
                None
            }
            Err(e) => {
                eprintln!("note: skipped, cannot run mount: {e}");
                None
            }
        }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Writes a file until the file system is full.
    fn fill(&self) {
        use std::io::Write as _;
        let mut filler = std::fs::File::create(self.path().join("filler")).unwrap();
        let block = vec![0x5a_u8; 4096];
        while filler.write_all(&block).is_ok() {}
    }

    fn free(&self) {
        std::fs::remove_file(self.path().join("filler")).unwrap();
    }
}

impl Drop for SmallFs {
    fn drop(&mut self) {
        let _ = Command::new("umount")
            .arg("-l")
            .arg(self.dir.path())
            .status();
    }
}

/// Whether the payment API was asked to cancel `id` (a sale whose start could not be recorded
/// is cancelled by the agent itself: other cancels are expected).
fn cancel_sent(agent: &Agent, id: &str) -> bool {
    agent
        .sim
        .requests_to("POST", CANCEL)
        .iter()
        .any(|r| r.body.as_ref().is_some_and(|b| b["PaymentRequestId"] == id))
}

fn count(log: &str, needle: &str) -> usize {
    log.matches(needle).count()
}

#[tokio::test]
async fn a_full_state_file_system_is_unhealthy_and_recovers_with_the_pending_cancel_sent() {
    let Some(fs) = SmallFs::mount("1m") else {
        return;
    };
    let mut agent = Agent::connected(Setup {
        state_directory: Some(fs.path().join("state")),
        ..Setup::default()
    })
    .await;
    agent.terminal.wait_until_up().await;
    let pending = agent.started(1250).await;
    let status = agent.status().await;
    assert_eq!(status["storage"]["writable"], true, "{status}");
    assert!(status["storage"]["free_bytes"].as_u64().unwrap() > 0);

    fs.fill();
    // A sale appended into the journal's last page may still fit: sell until one is refused.
    let mut refused = None;
    for _ in 0..40 {
        match agent.sale(Uuid::new_v4(), 100).await {
            Reply::SaleStarted { .. } => continue,
            other => {
                refused = Some(other);
                break;
            }
        }
    }
    let refused = refused.expect("a sale refused on the full file system");
    let Reply::Error { message, .. } = &refused else {
        panic!("expected an error reply, got {refused:?}");
    };
    assert!(message.contains("No space left"), "{refused:?}");

    let status = agent.status().await;
    let storage = &status["storage"];
    assert_eq!(storage["writable"], false, "{status}");
    assert!(
        storage["last_error"]
            .as_str()
            .unwrap()
            .contains("No space left"),
        "{status}"
    );
    assert!(storage["last_error_at"].is_string(), "{status}");
    assert_eq!(storage["free_space_low"], true, "{status}");
    let human = agent.cli(&["status"]).await;
    assert!(human.stdout.contains("NOT WRITABLE"), "{human:?}");
    let health = agent.cli(&["check-health"]).await;
    assert_eq!(health.code, Some(75), "{health:?}");
    assert!(health.stderr.contains("not writable"), "{health:?}");

    // The operator's cancel cannot be recorded: refused, and not sent.
    let out = agent.cli(&["cancel", &pending]).await;
    assert_ne!(out.code, Some(0), "{out:?}");
    assert!(!cancel_sent(&agent, &pending));
    let status = agent.status().await;
    let marked = status["pending"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["payment_request_id"] == pending.as_str())
        .expect("still pending");
    assert_eq!(marked["cancel_reason"], "operator", "{status}");

    fs.free();
    let (cancelled, reason) = agent.next_cancelled().await;
    assert_eq!(
        (cancelled.as_str(), reason),
        (pending.as_str(), CancelReason::Operator)
    );
    assert!(cancel_sent(&agent, &pending));
    let status = agent
        .status_until("no longer pending", |s| {
            s["pending"]
                .as_array()
                .unwrap()
                .iter()
                .all(|p| p["payment_request_id"] != pending.as_str())
        })
        .await;
    assert_eq!(status["storage"]["writable"], true, "{status}");
    let health = agent.cli(&["check-health"]).await;
    assert_eq!(health.code, Some(0), "{health:?}");
    let log = agent.log();
    assert_eq!(count(&log, "cannot write the state in"), 1, "{log}");
    assert_eq!(count(&log, "is written again"), 1, "{log}");
    agent.finish().await;
}

#[tokio::test]
async fn a_torn_journal_tail_dropped_at_start_is_logged() {
    let mut agent = Agent::connected(Setup::default()).await;
    agent.terminal.wait_until_up().await;
    agent.started(100).await;
    agent.started(200).await;
    agent.signal(Signal::SIGKILL);
    agent.wait_exit().await;
    let journal = agent.state_dir.join("state.journal");
    let length = std::fs::metadata(&journal).unwrap().len();
    assert!(length > 0, "the sales are in the journal");
    std::fs::OpenOptions::new()
        .write(true)
        .open(&journal)
        .unwrap()
        .set_len(length - 1)
        .unwrap();
    agent.spawn();
    agent.wait_notification("READY=1").await;
    let log = agent
        .log_until("the torn tail", |log| log.contains("dropped a torn tail"))
        .await;
    assert_eq!(count(&log, "dropped a torn tail"), 1, "{log}");
    agent.finish().await;
}

/// `status`'s pending entry for `id`, if it is still pending.
fn pending_entry(status: &serde_json::Value, id: &str) -> Option<serde_json::Value> {
    status["pending"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["payment_request_id"] == id)
        .cloned()
}

#[tokio::test]
async fn a_payment_timing_out_while_its_mark_cannot_be_written_is_marked_once_and_cancelled_after()
{
    if !support::preload::reaches_the_daemon("failing the daemon's syncs") {
        return;
    }
    let flags = tempfile::tempdir().unwrap();
    let failing = flags.path().join("storage-fails");
    let mut agent = Agent::connected(Setup {
        payment_timeout: "2s",
        // Every line written: a timer firing in a loop would show as many.
        extra_toml: "repeat_window = \"0s\"\n".into(),
        extra_env: support::slow_fsync::failing_while(&failing),
        ..Setup::default()
    })
    .await;
    agent.terminal.wait_until_up().await;
    let pending = agent.started(1250).await;

    // Every sync fails from now on, before the payment is due.
    std::fs::write(&failing, b"").unwrap();
    let status = agent
        .status_until("the timeout marked while the storage fails", |s| {
            s["storage"]["writable"] == false
                && pending_entry(s, &pending).is_some_and(|p| p["cancel_reason"] == "timeout")
        })
        .await;
    let first_failure = status["storage"]["last_error_at"].clone();
    // The payment stays overdue while the writer tries again by itself, every 2 s: twice at
    // least before the storage comes back.
    let mut failures = vec![first_failure];
    while failures.len() < 3 {
        let status = agent
            .status_until("the writer trying again", |s| {
                !failures.contains(&s["storage"]["last_error_at"])
            })
            .await;
        assert_eq!(status["storage"]["writable"], false, "{status}");
        failures.push(status["storage"]["last_error_at"].clone());
    }
    let log = agent.log();
    assert_eq!(count(&log, "cannot mark timed-out payments"), 1, "{log}");
    assert_eq!(count(&log, "the state writer is behind"), 0, "{log}");
    assert!(
        !cancel_sent(&agent, &pending),
        "sent before its mark is durable"
    );

    std::fs::remove_file(&failing).unwrap();
    let (cancelled, reason) = agent.next_cancelled().await;
    assert_eq!(
        (cancelled.as_str(), reason),
        (pending.as_str(), CancelReason::Timeout)
    );
    let status = agent
        .status_until("no longer pending", |s| {
            pending_entry(s, &pending).is_none()
        })
        .await;
    assert_eq!(status["storage"]["writable"], true, "{status}");
    let cancels = agent
        .sim
        .requests_to("POST", CANCEL)
        .iter()
        .filter(|r| {
            r.body
                .as_ref()
                .is_some_and(|b| b["PaymentRequestId"] == pending)
        })
        .count();
    assert_eq!(cancels, 1);
    let log = agent.log();
    assert_eq!(count(&log, "cannot mark timed-out payments"), 1, "{log}");
    agent.finish().await;
}

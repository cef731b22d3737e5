//! The serial device is opened and closed off the runtime thread (docs/serial-protocol.md §1,
//! docs/architecture.md, "Tasks and channels"): the real daemon, whose device takes as long
//! as it likes to open (`tools/held-open-shim.c` holds the daemon's `open` of it, in the
//! thread that calls it, as a slow USB adapter does), answers `status` on its control socket
//! meanwhile, goes on with the device once it opens, and stops at once on `SIGTERM` while the
//! open is still held; the same holds for a lost device that takes its time to close. A
//! device that is no tty is reported as such, and the daemon keeps running.

use crate::support;

use std::path::{Path, PathBuf};

use crate::support::daemon::{Agent, Setup};
use crate::support::WAIT;
use nix::sys::signal::Signal;

/// Where the shim says a call is held, and the file that lets it go on.
struct Gate {
    dir: tempfile::TempDir,
    /// `HELD_OPEN_GATE` or `HELD_CLOSE_GATE`: which calls wait for this gate.
    holds: &'static str,
}

impl Gate {
    fn new(holds: &'static str) -> Gate {
        Gate {
            dir: tempfile::tempdir().unwrap(),
            holds,
        }
    }

    fn path(&self) -> PathBuf {
        self.dir.path().join("gate")
    }

    fn held_marker(&self) -> PathBuf {
        self.dir.path().join("gate.held")
    }

    /// The daemon's environment: every open (or close) of a pty slave, the terminal's line,
    /// is held.
    fn env(&self) -> Vec<(&'static str, String)> {
        vec![
            support::preload::env("held-open-shim.c"),
            ("HELD_OPEN_PREFIX", "/dev/pts/".into()),
            (self.holds, self.path().display().to_string()),
        ]
    }

    async fn wait_until_held(&self, agent: &Agent) {
        let deadline = tokio::time::Instant::now() + WAIT;
        while !self.held_marker().exists() {
            assert!(
                tokio::time::Instant::now() < deadline,
                "the daemon never reached the held call on its device; log:\n{}",
                agent.log()
            );
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
    }

    fn open(&self) {
        std::fs::write(self.path(), b"").unwrap();
    }

    fn is_open(&self) -> bool {
        self.path().exists()
    }
}

/// `status --json`, failing the test when it is not answered within [`WAIT`] (the control
/// client's own timeouts are longer than a test should wait).
async fn prompt_status(agent: &mut Agent) -> serde_json::Value {
    match tokio::time::timeout(WAIT, agent.status()).await {
        Ok(status) => status,
        Err(_) => panic!(
            "status not answered within {WAIT:?} while the device opens; log:\n{}",
            agent.log()
        ),
    }
}

/// The daemon started with its device's open held: once it is inside `open(2)` (where it
/// stays until the gate opens), its first `status`.
async fn daemon_inside_open() -> (Gate, Agent, serde_json::Value) {
    let gate = Gate::new("HELD_OPEN_GATE");
    let mut agent = Agent::start(Setup {
        extra_env: gate.env(),
        ..Setup::default()
    })
    .await;
    gate.wait_until_held(&agent).await;
    let status = prompt_status(&mut agent).await;
    (gate, agent, status)
}

#[tokio::test]
async fn status_is_answered_while_the_serial_device_takes_its_time_to_open() {
    if !support::preload::reaches_the_daemon("holding the device's open and close") {
        return;
    }
    let (gate, mut agent, status) = daemon_inside_open().await;
    assert_eq!(status["terminal_link"], "down", "{status}");
    let status = agent
        .status_until("the payment API connection made meanwhile", |s| {
            s["connection"] == "connected"
        })
        .await;
    assert_eq!(status["terminal_link"], "down", "{status}");
    assert!(!gate.is_open());

    gate.open();
    agent.terminal.wait_until_up().await;
    let status = agent
        .status_until("the terminal link up", |s| s["terminal_link"] == "up")
        .await;
    assert_eq!(status["serial_port"]["reopens"], 0, "{status}");
    agent.started(1250).await;
    agent.finish().await;
}

#[tokio::test]
async fn the_daemon_stops_while_its_serial_device_is_still_opening() {
    if !support::preload::reaches_the_daemon("holding the device's open and close") {
        return;
    }
    let (gate, mut agent, _) = daemon_inside_open().await;

    agent.signal(Signal::SIGTERM);
    let exit = agent.wait_exit().await;
    assert!(exit.success(), "{exit:?}; log:\n{}", agent.log());
    // It did not wait for the open: the gate never opened.
    assert!(!gate.is_open());
    agent.finish().await;
}

#[tokio::test]
async fn status_is_answered_while_a_lost_serial_device_takes_its_time_to_close() {
    if !support::preload::reaches_the_daemon("holding the device's open and close") {
        return;
    }
    let gate = Gate::new("HELD_CLOSE_GATE");
    let mut agent = Agent::connected(Setup {
        extra_env: gate.env(),
        ..Setup::default()
    })
    .await;
    agent.terminal.wait_until_up().await;
    // The terminal hangs up: the daemon closes its end of the line, and is held in close(2).
    agent.unplug();
    gate.wait_until_held(&agent).await;
    let status = prompt_status(&mut agent).await;
    assert_eq!(status["terminal_link"], "down", "{status}");
    assert_eq!(status["serial_port"]["reopens"], 0, "{status}");
    assert!(!gate.is_open());

    gate.open();
    agent.replug();
    agent.terminal.wait_until_up().await;
    agent
        .status_until("the device reopened", |s| {
            s["terminal_link"] == "up" && s["serial_port"]["reopens"] == 1
        })
        .await;
    agent.finish().await;
}

fn make_fifo(path: &Path) {
    nix::unistd::mkfifo(path, nix::sys::stat::Mode::S_IRWXU).unwrap();
}

#[tokio::test]
async fn a_device_that_is_no_tty_is_reported_as_such_and_the_daemon_runs_on() {
    let mut agent = Agent::connected(Setup::default()).await;
    agent.terminal.wait_until_up().await;
    agent.unplug();
    let fifo = agent.dir.path().join("not-a-tty");
    make_fifo(&fifo);
    std::os::unix::fs::symlink(&fifo, agent.device_link()).unwrap();

    let status = agent
        .status_until("the FIFO refused as a serial device", |s| {
            s["serial_port"]["last_error"]
                .as_str()
                .is_some_and(|e| e.contains("not-a-tty"))
        })
        .await;
    let error = status["serial_port"]["last_error"].as_str().unwrap();
    assert!(error.starts_with("cannot open"), "{error}");
    assert!(error.contains("not a serial device"), "{error}");
    assert_eq!(status["terminal_link"], "down", "{status}");
    let log = agent.log();
    assert!(
        log.contains("cannot open the serial device"),
        "the refusal is logged: {log}"
    );
    assert!(!log.contains("panicked"), "{log}");
    agent.finish().await;
}

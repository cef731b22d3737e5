//! The notifications the agent sends reach a real notify socket, byte for byte as systemd reads
//! them (docs/operations.md (The daemon: `pos-agent run`)).
//!
//! `sd-notify` takes the socket from `$NOTIFY_SOCKET`, so this test changes the process
//! environment. Changing it while other threads read it (every test that starts a process reads
//! it) is racy, hence one test that runs its steps, in order, in a process of its own: the suite's
//! binary started again for this test alone.

use std::os::unix::net::UnixDatagram;
use std::time::Duration;

use crate::support::{self, WAIT};
use pos_agent::systemd;

fn next_message(socket: &UnixDatagram) -> String {
    let mut buffer = [0u8; 4096];
    let length = socket
        .recv(&mut buffer)
        .expect("a notification within the read timeout");
    String::from_utf8(buffer[..length].to_vec()).unwrap()
}

/// Set in the process that runs the steps alone.
const ALONE: &str = "POS_AGENT_TEST_NOTIFY_ALONE";

#[test]
fn notifications_reach_the_notify_socket_and_are_no_ops_without_one() {
    if std::env::var_os(ALONE).is_none() {
        let words = support::this_test_alone(
            module_path!(),
            "notifications_reach_the_notify_socket_and_are_no_ops_without_one",
        );
        let output = std::process::Command::new(&words[0])
            .args(&words[1..])
            .env(ALONE, "1")
            .output()
            .unwrap();
        assert!(
            output.status.success(),
            "the steps failed: {}\nstdout:\n{}\nstderr:\n{}",
            output.status,
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        // The child ran the test, not an empty selection.
        assert!(
            String::from_utf8_lossy(&output.stdout).contains("1 passed"),
            "{}",
            String::from_utf8_lossy(&output.stdout)
        );
        return;
    }
    // Without NOTIFY_SOCKET (not started by systemd) every notification succeeds and does nothing.
    std::env::remove_var("NOTIFY_SOCKET");
    std::env::remove_var("WATCHDOG_USEC");
    std::env::remove_var("WATCHDOG_PID");
    systemd::notify_ready().unwrap();
    systemd::notify_status("connected").unwrap();
    systemd::notify_watchdog().unwrap();
    systemd::notify_stopping().unwrap();
    systemd::extend_timeout(Duration::from_secs(5)).unwrap();
    assert_eq!(systemd::watchdog_interval(), None);

    // A real datagram socket where systemd's would be.
    let directory = tempfile::tempdir().unwrap();
    let path = directory.path().join("notify");
    let manager = UnixDatagram::bind(&path).unwrap();
    manager.set_read_timeout(Some(WAIT)).unwrap();
    std::env::set_var("NOTIFY_SOCKET", &path);

    systemd::notify_ready().unwrap();
    assert_eq!(next_message(&manager), "READY=1\n");

    systemd::notify_status("connection connected, link up, 2 pending").unwrap();
    assert_eq!(
        next_message(&manager),
        "STATUS=connection connected, link up, 2 pending\n"
    );

    systemd::notify_status("two\nlines").unwrap();
    assert_eq!(next_message(&manager), "STATUS=two lines\n");

    systemd::notify_watchdog().unwrap();
    assert_eq!(next_message(&manager), "WATCHDOG=1\n");

    systemd::notify_stopping().unwrap();
    assert_eq!(next_message(&manager), "STOPPING=1\n");

    systemd::extend_timeout(Duration::from_secs(45)).unwrap();
    assert_eq!(next_message(&manager), "EXTEND_TIMEOUT_USEC=45000000\n");

    // The watchdog, as systemd announces it for WatchdogSec=20s.
    std::env::set_var("WATCHDOG_USEC", "20000000");
    std::env::set_var("WATCHDOG_PID", std::process::id().to_string());
    assert_eq!(systemd::watchdog_interval(), Some(Duration::from_secs(10)));
    std::env::set_var("WATCHDOG_PID", (std::process::id() + 1).to_string());
    assert_eq!(systemd::watchdog_interval(), None);

    // A notify socket that is gone is reported, not ignored.
    drop(manager);
    std::fs::remove_file(&path).unwrap();
    assert!(systemd::notify_ready().is_err());
}

//! The notifications the agent sends reach a real notify socket, byte for byte as systemd reads
//! them (docs/operations.md (The daemon: `pos-agent run`)).
//!
//! `sd-notify` takes the socket from `$NOTIFY_SOCKET`, so this file changes the process
//! environment. Changing it while other threads read it is racy, hence one test in its own test
//! binary, doing every step in order.

mod support;

use std::os::unix::net::UnixDatagram;
use std::time::Duration;

use pos_agent::systemd;
use support::WAIT;

fn next_message(socket: &UnixDatagram) -> String {
    let mut buffer = [0u8; 4096];
    let length = socket
        .recv(&mut buffer)
        .expect("a notification within the read timeout");
    String::from_utf8(buffer[..length].to_vec()).unwrap()
}

#[test]
fn notifications_reach_the_notify_socket_and_are_no_ops_without_one() {
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

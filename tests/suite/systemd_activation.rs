//! The agent takes the control socket that systemd passes by socket activation (docs/operations.md (Operator commands),
//! `systemd/pos-agent.socket`), and refuses a socket it cannot serve on.
//!
//! systemd's own activator, `systemd-socket-activate`, binds the socket, waits for the first
//! client and then execs this test binary as the "agent" with `LISTEN_FDS`/`LISTEN_PID` set, just
//! as PID 1 does for `pos-agent.socket`. The test binary plays both parts: the role variable
//! tells the child which one it is.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::{UnixDatagram, UnixStream};
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use crate::support::{self, WAIT};
use pos_agent::systemd;

const ROLE: &str = "POS_AGENT_TEST_ACTIVATION_ROLE";
const ACTIVATOR: &str = "systemd-socket-activate";

/// Starts this test binary, running only `test_name` in the given role, under
/// `systemd-socket-activate` listening on `socket` (`extra` are activator options such as `-d`).
fn activate_self(
    test_name: &str,
    role: &str,
    socket: &Path,
    extra: &[&str],
) -> std::process::Child {
    let mut command = Command::new(ACTIVATOR);
    command
        .args(extra)
        .arg("--listen")
        .arg(socket)
        .arg(format!("--setenv={ROLE}={role}"));
    // Cross-testing: the test binary is foreign and runs through the same emulator as cargo's.
    command
        .args(support::this_test_alone(module_path!(), test_name))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    command.spawn().unwrap_or_else(|error| {
        panic!("cannot start {ACTIVATOR} (Debian package systemd): {error}")
    })
}

fn wait_until_bound(socket: &Path, child: &mut std::process::Child) {
    let deadline = Instant::now() + WAIT;
    while !socket.exists() {
        if let Some(status) = child.try_wait().unwrap() {
            panic!("{ACTIVATOR} exited before binding the socket: {status}");
        }
        assert!(
            Instant::now() < deadline,
            "{ACTIVATOR} did not bind {socket:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn describe(output: &Output) -> String {
    format!(
        "status {}\nstdout:\n{}\nstderr:\n{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

#[test]
fn passed_stream_socket_is_taken_once_and_serves_the_waiting_client() {
    if std::env::var(ROLE).as_deref() == Ok("agent-stream") {
        let listener = systemd::listen_socket()
            .unwrap()
            .expect("systemd passed a socket");
        assert!(
            systemd::listen_socket().unwrap().is_none(),
            "the passed socket must be taken only once"
        );
        let (mut client, _) = listener.accept().unwrap();
        writeln!(client, "taken by {}", std::process::id()).unwrap();
        return;
    }

    let directory = tempfile::tempdir().unwrap();
    let socket = directory.path().join("control.sock");
    let mut child = activate_self(
        "passed_stream_socket_is_taken_once_and_serves_the_waiting_client",
        "agent-stream",
        &socket,
        &[],
    );
    let agent_pid = child.id();
    wait_until_bound(&socket, &mut child);

    // The operator's command connects before the agent runs; systemd holds the connection.
    let client = UnixStream::connect(&socket).unwrap();
    client
        .set_read_timeout(Some(Duration::from_secs(120)))
        .unwrap();
    let mut line = String::new();
    let read = BufReader::new(&client).read_line(&mut line);

    let output = child.wait_with_output().unwrap();
    read.unwrap_or_else(|error| panic!("no answer ({error}); {}", describe(&output)));
    assert!(output.status.success(), "{}", describe(&output));
    // The activator execs the agent in its own process, so LISTEN_PID named that process.
    assert_eq!(
        line,
        format!("taken by {agent_pid}\n"),
        "{}",
        describe(&output)
    );
}

#[test]
fn passed_datagram_socket_is_refused_with_a_reason() {
    if std::env::var(ROLE).as_deref() == Ok("agent-datagram") {
        let error = systemd::listen_socket().unwrap_err();
        assert!(
            error.to_string().contains("not a stream socket"),
            "unexpected error: {error}"
        );
        println!("REFUSED: {error}");
        return;
    }

    let directory = tempfile::tempdir().unwrap();
    let socket = directory.path().join("control.sock");
    let mut child = activate_self(
        "passed_datagram_socket_is_refused_with_a_reason",
        "agent-datagram",
        &socket,
        &["--datagram"],
    );
    wait_until_bound(&socket, &mut child);
    UnixDatagram::unbound()
        .unwrap()
        .send_to(b"wake up", &socket)
        .unwrap();

    let output = child.wait_with_output().unwrap();
    assert!(output.status.success(), "{}", describe(&output));
    assert!(
        String::from_utf8_lossy(&output.stdout).contains("REFUSED: "),
        "{}",
        describe(&output)
    );
}

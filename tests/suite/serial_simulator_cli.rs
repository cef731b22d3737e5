//! `pos-agent simulate-terminal` as a process on the slave of a pty pair, with the test playing
//! the agent on the master.
use crate::support;

use std::io::Write;
use std::process::Stdio;
use std::time::Duration;

use crate::support::WAIT;
use pos_agent::serial::{
    AgentLink, AgentRequest, CancelReason, LinkEvent, LinkSettings, Reply, TerminalRequest,
};
use pos_agent::simulator::virtual_serial::VirtualSerial;

#[tokio::test]
async fn simulate_terminal_sends_stdin_requests_and_prints_replies_and_notifications() {
    let line = VirtualSerial::open().unwrap();
    let device = line.slave_path().to_path_buf();
    let (agent, mut events) = AgentLink::over(
        line,
        LinkSettings {
            ack_timeout: Duration::from_millis(500),
            ping_interval: Duration::from_secs(3600),
            ..LinkSettings::default()
        },
    );

    let mut child = support::pos_agent()
        .args(["simulate-terminal", "--device"])
        .arg(&device)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    stdin
        .write_all(b"{\"type\":\"status\"}\nnot json\n")
        .unwrap();
    drop(stdin);
    let output = tokio::task::spawn_blocking(move || child.wait_with_output());

    // The agent: on `status`, first notify a cancellation, then answer.
    let agent_side = async {
        loop {
            let event = tokio::time::timeout(WAIT, events.recv())
                .await
                .expect("no request from the simulator")
                .expect("link ended");
            if let LinkEvent::Request(request) = event {
                assert_eq!(request.request(), &TerminalRequest::Status);
                let ok = agent
                    .request(AgentRequest::PaymentCancelled {
                        payment_request_id: "pr-5".into(),
                        reason: CancelReason::Timeout,
                    })
                    .await;
                assert_eq!(ok, Ok(Reply::OK));
                request.reply(Reply::status(None, false, vec![]));
                return;
            }
        }
    };
    agent_side.await;

    let output = tokio::time::timeout(WAIT, output)
        .await
        .expect("simulate-terminal did not exit")
        .unwrap()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(0), "stderr: {stderr}");
    let lines: Vec<serde_json::Value> = stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    // The notification and the reply are printed by different tasks: order is not promised.
    assert_eq!(lines.len(), 2, "stdout: {stdout}");
    let notification = lines
        .iter()
        .find(|l| l["type"] == "payment_cancelled")
        .unwrap_or_else(|| panic!("no notification in {stdout}"));
    assert_eq!(notification["reason"], "timeout");
    assert_eq!(notification["payment_request_id"], "pr-5");
    assert!(notification["id"].is_u64());
    assert!(lines.contains(
        &serde_json::json!({"type":"status","connection_id":null,"connected":false,"pending":[],"pending_count":0,"truncated":false})
    ));
    assert!(
        stderr.contains("not a terminal request"),
        "stderr: {stderr}"
    );
}

#[test]
fn simulate_terminal_fails_when_a_request_gets_no_reply() {
    // A pty pair with nobody on the master: frames are never acknowledged.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let line = runtime.block_on(async { VirtualSerial::open().unwrap() });
    let mut child = support::pos_agent()
        .args(["simulate-terminal", "--reply-timeout", "1s", "--device"])
        .arg(line.slave_path())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"{\"type\":\"status\"}\n")
        .unwrap();
    let output = child.wait_with_output().unwrap();
    assert_eq!(output.status.code(), Some(1));
    assert!(output.stdout.is_empty());
    assert!(String::from_utf8_lossy(&output.stderr).contains("no reply"));
    drop(line);
}

#[test]
fn simulate_terminal_on_a_missing_device_fails_with_the_path_in_the_message() {
    let output = support::pos_agent()
        .args(["simulate-terminal", "--device", "/nonexistent/ttyTERM"])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_ne!(output.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&output.stderr).contains("/nonexistent/ttyTERM"));
}

//! `pos-agent restart --keep-pending [--no-start]` against the real daemon (docs/operations.md,
//! "The daemon: `pos-agent run`"; docs/deployment.md, "Upgrade and rollback"): the daemon stops
//! without cancelling its pending payments and without deactivating its connection, finishes the
//! sales in flight, answers the operator, records who asked, and exits 3 (to be started again) or
//! 4 (`--no-start`: to stay stopped); the next process on the same state takes the payments over
//! and can still cancel them. Anything else sent as such a request is refused with a clear error
//! and stops nothing.

use crate::support;

use std::io::{BufRead, BufReader, Write};
use std::num::NonZeroU64;
use std::os::unix::net::UnixStream;
use std::time::Duration;

use crate::support::daemon::{Agent, Setup};
use crate::support::paths::{CANCEL, DISCONNECT, RECONNECT, SALE};
use crate::support::WAIT;
use pos_agent::serial::message::{Reply, SaleOrder, TerminalRequest};
use pos_agent::simulator::api::{Fault, FaultKind};
use uuid::Uuid;

/// The payment API calls that end payments or the connection.
fn cancels_and_disconnects(agent: &Agent) -> usize {
    agent.sim.requests_to("POST", CANCEL).len() + agent.sim.requests_to("POST", DISCONNECT).len()
}

async fn connection_id(agent: &mut Agent) -> String {
    let status = agent.status().await;
    status["connection_id"].as_str().unwrap().to_owned()
}

/// The daemon started again on the same state: it reconnected the same connection (no new
/// one) and lists `pending`.
async fn next_process_takes_over(agent: &mut Agent, connection: &str, pending: &[String]) {
    agent.sim.clear_requests();
    agent.spawn();
    agent
        .sim
        .wait_for_request(|r| r.path == RECONNECT, WAIT)
        .await
        .unwrap_or_else(|| panic!("no reconnect at start; log:\n{}", agent.log()));
    let status = agent.status().await;
    assert_eq!(status["connection_id"], connection, "{status}");
    let mut listed = agent.pending_ids().await;
    listed.sort();
    let mut expected = pending.to_vec();
    expected.sort();
    assert_eq!(listed, expected);
    assert!(
        agent.sim.requests_to("POST", "/api/connection").is_empty(),
        "no second connection was established"
    );
}

#[tokio::test]
async fn restart_keep_pending_exits_3_without_a_cancel_or_a_disconnect_and_the_next_process_takes_over(
) {
    let mut agent = Agent::connected(Setup {
        log_level: "info",
        ..Setup::default()
    })
    .await;
    let id = agent.started(1250).await;
    let connection = connection_id(&mut agent).await;

    let out = agent.cli(&["restart", "--keep-pending", "--json"]).await;
    assert_eq!(out.code, Some(0), "{out:?}\nlog:\n{}", agent.log());
    let answer: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(answer["pending"][0]["payment_request_id"], id.as_str());
    let exit = agent.wait_exit().await;
    assert_eq!(exit.code(), Some(3), "{}", agent.log());
    assert_eq!(
        cancels_and_disconnects(&agent),
        0,
        "nothing cancelled, the connection left active; log:\n{}",
        agent.log()
    );
    assert!(
        agent.sim.connections().iter().all(|c| c.is_connected),
        "{:?}",
        agent.sim.connections()
    );

    // Who asked: one audit record with the operator's uid and the command.
    let me = nix::unistd::getuid().as_raw().to_string();
    let log = agent.log();
    let record = log
        .lines()
        .find(|line| line.contains(" pos_agent::audit: ") && line.contains("restart"))
        .unwrap_or_else(|| panic!("no audit record of the restart:\n{log}"));
    assert!(
        record.contains(&format!("operator_uid=\"{me}\"")),
        "{record}"
    );
    assert!(
        record.contains("operator_command=\"restart --keep-pending\""),
        "{record}"
    );
    assert!(record.contains("outcome=\"confirmed\""), "{record}");

    next_process_takes_over(&mut agent, &connection, std::slice::from_ref(&id)).await;
    // And it can still cancel the payment the first one left pending.
    let out = agent.cli(&["cancel", &id]).await;
    assert_eq!(out.code, Some(0), "{out:?}");
    assert_eq!(agent.sim.requests_to("POST", CANCEL).len(), 1);
    assert!(agent.pending_ids().await.is_empty());
    agent.finish().await;
}

#[tokio::test]
async fn a_sale_in_flight_gets_its_answer_before_a_restart_keep_pending_exits() {
    let mut agent = Agent::connected(Setup::default()).await;
    let connection = connection_id(&mut agent).await;
    // The API takes its time with the sale: the restart comes while it is in flight.
    agent.sim.inject(
        Fault::new(
            "POST",
            SALE,
            FaultKind::Latency(Duration::from_millis(1500)),
        )
        .times(1),
    );
    let order = SaleOrder {
        merchant_unique_code: Uuid::new_v4(),
        amount_minor: NonZeroU64::new(990).unwrap(),
        currency_id: None,
        display_code: None,
    };
    let socket = agent.socket.clone();
    let sale = agent.terminal.request(TerminalRequest::Sale(order));
    let restart = async {
        agent
            .sim
            .wait_for_request(|r| r.path == SALE, WAIT)
            .await
            .expect("the sale reaches the API");
        tokio::task::spawn_blocking(move || {
            support::pos_agent()
                .args(["restart", "--keep-pending", "--socket"])
                .arg(socket)
                .output()
                .unwrap()
        })
        .await
        .unwrap()
    };
    let (sale, restart) = tokio::join!(sale, restart);
    let id = match sale {
        Ok(Reply::SaleStarted {
            payment_request_id, ..
        }) => payment_request_id,
        other => panic!("the sale in flight got {other:?}; log:\n{}", agent.log()),
    };
    let stdout = String::from_utf8_lossy(&restart.stdout);
    assert_eq!(restart.status.code(), Some(0), "{restart:?}");
    assert!(
        stdout.starts_with("stopped, 1 pending payment(s) kept for the next start\n"),
        "{stdout}"
    );
    assert!(stdout.contains(&id), "{stdout}");
    assert_eq!(agent.wait_exit().await.code(), Some(3), "{}", agent.log());
    assert_eq!(cancels_and_disconnects(&agent), 0, "{}", agent.log());
    next_process_takes_over(&mut agent, &connection, &[id]).await;
    agent.finish().await;
}

#[tokio::test]
async fn restart_keep_pending_no_start_exits_4_and_the_payment_waits_for_the_next_start() {
    let mut agent = Agent::connected(Setup {
        log_level: "info",
        ..Setup::default()
    })
    .await;
    let id = agent.started(700).await;
    let connection = connection_id(&mut agent).await;
    let out = agent
        .cli(&["restart", "--keep-pending", "--no-start"])
        .await;
    assert_eq!(out.code, Some(0), "{out:?}");
    assert!(
        out.stdout
            .starts_with("stopped, 1 pending payment(s) kept for the next start\n"),
        "{out:?}"
    );
    assert!(out.stdout.contains(&id), "{out:?}");
    let record = agent
        .log()
        .lines()
        .find(|line| line.contains(" pos_agent::audit: ") && line.contains("origin=\"operator\""))
        .map(str::to_owned)
        .unwrap_or_default();
    assert!(
        record.contains("operator_command=\"restart --keep-pending --no-start\""),
        "{record}"
    );
    assert_eq!(agent.wait_exit().await.code(), Some(4), "{}", agent.log());
    assert_eq!(cancels_and_disconnects(&agent), 0, "{}", agent.log());
    next_process_takes_over(&mut agent, &connection, &[id]).await;
    agent.finish().await;
}

/// One raw request line on the control socket and the daemon's answer.
fn raw(agent: &Agent, line: &str) -> serde_json::Value {
    let mut stream = UnixStream::connect(&agent.socket).unwrap();
    stream.write_all(line.as_bytes()).unwrap();
    stream.write_all(b"\n").unwrap();
    let mut answer = String::new();
    BufReader::new(stream).read_line(&mut answer).unwrap();
    serde_json::from_str(&answer).unwrap_or_else(|e| panic!("{e}: {answer:?}"))
}

#[tokio::test]
async fn anything_but_a_keep_pending_request_is_refused_clearly_and_stops_nothing() {
    let mut agent = Agent::connected(Setup::default()).await;
    let id = agent.started(500).await;
    for (line, says) in [
        (r#"{"command":"restart"}"#, "systemctl restart pos-agent"),
        (
            r#"{"command":"restart","keep_pending":false}"#,
            "`restart` needs `\"keep_pending\": true`",
        ),
        (
            r#"{"command":"restart","keep_pending":null,"start":false}"#,
            "systemctl restart pos-agent",
        ),
        (
            r#"{"command":"stop","keep_pending":true}"#,
            "unknown command \"stop\"",
        ),
        (r#"{"command":"restart","keep_pending":"yes"}"#, "boolean"),
        (r#"{"command":"restart","keep_pending":1}"#, "boolean"),
        (
            r#"{"command":"restart","keep_pending":true,"now":true}"#,
            "unknown field `now`",
        ),
        (
            r#"{"command":"restart","keep_pending":true,"all":true}"#,
            "does not take the field(s) all",
        ),
        (
            r#"{"command":"restart","keep_pending":true,"start":"no"}"#,
            "boolean",
        ),
        (
            r#"{"command":"reboot","keep_pending":true}"#,
            "unknown command \"reboot\"",
        ),
        (
            r#"{"command":"restart","keep_pending":tru"#,
            "cannot read the request",
        ),
    ] {
        let answer = raw(&agent, line);
        assert_eq!(answer["ok"], false, "{line}: {answer}");
        assert_eq!(
            answer["error"]["kind"], "invalid_request",
            "{line}: {answer}"
        );
        let message = answer["error"]["message"].as_str().unwrap();
        assert!(message.contains(says), "{line}: {message}");
    }
    // The CLI checks its arguments before it sends anything: a usage error (exit 2).
    for args in [
        &["restart"][..],
        &["restart", "--no-start"],
        &["restart", "--keep-pending=no"],
    ] {
        let out = agent.cli(args).await;
        assert_eq!(out.code, Some(2), "{args:?}: {out:?}");
        assert!(out.stderr.contains("--keep-pending"), "{args:?}: {out:?}");
    }
    // Still running, the payment still pending, nothing sent to the API.
    assert_eq!(agent.pending_ids().await, vec![id]);
    assert_eq!(cancels_and_disconnects(&agent), 0);
    agent.finish().await;
}

//! The agent daemon shutting down (docs/architecture.md, docs/operations.md): every pending
//! payment cancelled before the connection is deactivated, retries, a second signal, sales during
//! the shutdown.
//!
//! Each test runs the real binary as a process, with a pseudo-terminal pair and the terminal
//! simulator on it, the payment API simulator on loopback, real state files and real signals. The
//! agent's other behaviours are beside this file: `agent_startup`, `agent_sales`,
//! `agent_shutdown`, `agent_recovery`.

use nix::sys::signal::Signal;
use pos_agent::paywall::PaymentStatus;
use pos_agent::serial::message::{
    AgentReadiness, CancelReason, ErrorCode, PaymentResultStatus, Reply, TerminalRequest,
};
use pos_agent::simulator::api::{Fault, FaultKind};
use uuid::Uuid;

use crate::support::daemon::{agent_state, body, count, Agent, Setup};
use crate::support::paths::{CANCEL, DISCONNECT};
use crate::support::WAIT;

#[tokio::test]
async fn a_payment_started_elsewhere_is_tracked_and_cancelled_at_shutdown() {
    let mut agent = Agent::connected(Setup::default()).await;
    let id = agent
        .sim
        .create_payment_elsewhere(Uuid::new_v4(), 3000)
        .to_string();
    let reply = agent
        .terminal
        .request(TerminalRequest::PaymentStarted {
            payment_request_id: id.clone(),
        })
        .await
        .unwrap();
    assert_eq!(reply, Reply::OK);
    assert_eq!(agent.pending_ids().await, vec![id.clone()]);
    agent.signal(Signal::SIGTERM);
    assert_eq!(agent.next_cancelled().await, (id, CancelReason::Shutdown));
    assert!(agent.wait_exit().await.success());
    agent.finish().await;
}

#[tokio::test]
async fn shutdown_cancels_every_pending_payment_before_disconnecting() {
    let mut agent = Agent::connected(Setup::default()).await;
    let mut ids = Vec::new();
    for amount in [100, 200, 300] {
        ids.push(agent.started(amount).await);
    }
    agent.signal(Signal::SIGTERM);
    agent_state(&mut agent, AgentReadiness::Stopping).await;
    let status = agent.wait_exit().await;
    assert!(status.success(), "{status:?}\n{}", agent.log());
    agent.wait_notification("STOPPING=1").await;
    let extend = agent.wait_notification("EXTEND_TIMEOUT_USEC=").await;
    assert!(
        extend.contains("EXTEND_TIMEOUT_USEC=15000000"),
        "deadline 10 s + 5 s: {extend}"
    );
    let requests = agent.sim.requests();
    let cancels: Vec<usize> = requests
        .iter()
        .enumerate()
        .filter(|(_, r)| r.path == CANCEL)
        .map(|(i, _)| i)
        .collect();
    let disconnect = requests
        .iter()
        .position(|r| r.path == DISCONNECT)
        .expect("disconnect sent");
    assert_eq!(cancels.len(), 3);
    assert!(
        cancels.iter().all(|&i| i < disconnect),
        "cancels come before the disconnect"
    );
    let mut cancelled: Vec<String> = requests
        .iter()
        .filter(|r| r.path == CANCEL)
        .map(|r| body(r)["PaymentRequestId"].as_str().unwrap().to_owned())
        .collect();
    cancelled.sort();
    ids.sort();
    assert_eq!(cancelled, ids);
    assert_eq!(
        agent.state_file()["payments"].as_object().map(|m| m.len()),
        Some(0)
    );
    agent.finish().await;
}

#[tokio::test]
async fn shutdown_retries_cancels_the_api_answers_with_500() {
    let mut agent = Agent::connected(Setup::default()).await;
    let a = agent.started(100).await;
    let b = agent.started(200).await;
    agent
        .sim
        .inject(Fault::new("POST", CANCEL, FaultKind::Status500).times(2));
    agent.signal(Signal::SIGTERM);
    assert!(agent.wait_exit().await.success());
    assert_eq!(
        count(&agent, CANCEL),
        4,
        "two answered 500 and were sent again"
    );
    let cancelled: Vec<String> = agent
        .sim
        .payments()
        .iter()
        .filter(|p| p.status == PaymentStatus::CANCELLED)
        .map(|p| p.payment_request_id.to_string())
        .collect();
    assert!(
        cancelled.contains(&a) && cancelled.contains(&b),
        "{cancelled:?}"
    );
    assert_eq!(
        agent.state_file()["payments"].as_object().map(|m| m.len()),
        Some(0)
    );
    agent.finish().await;
}

#[tokio::test]
async fn a_second_signal_ends_the_shutdown_at_once_with_state_kept() {
    let setup = Setup {
        shutdown_toml: "deadline = \"30s\"\n".into(),
        ..Setup::default()
    };
    let mut agent = Agent::connected(setup).await;
    let id = agent.started(100).await;
    agent
        .sim
        .inject(Fault::new("POST", CANCEL, FaultKind::Status500).always());
    agent.signal(Signal::SIGTERM);
    agent
        .sim
        .wait_for_request(|r| r.path == CANCEL, WAIT)
        .await
        .expect("the shutdown began cancelling");
    agent.signal(Signal::SIGINT);
    let status = agent.wait_exit().await;
    assert_eq!(status.code(), Some(1), "{}", agent.log());
    assert_eq!(
        agent.state_file()["payments"][&id]["cancel_requested"]["reason"],
        "shutdown"
    );
    assert_eq!(count(&agent, DISCONNECT), 0);
    agent.finish().await;
}

#[tokio::test]
async fn during_shutdown_new_sales_are_refused_busy_and_results_still_count() {
    let mut agent = Agent::connected(Setup::default()).await;
    let slow = agent.started(100).await;
    let finished_by_terminal = agent.started(200).await;
    agent.sim.inject(
        Fault::new(
            "POST",
            CANCEL,
            FaultKind::Latency(std::time::Duration::from_millis(1500)),
        )
        .always(),
    );
    agent.signal(Signal::SIGTERM);
    agent_state(&mut agent, AgentReadiness::Stopping).await;
    let refused = agent.sale(Uuid::new_v4(), 300).await;
    assert!(
        matches!(
            &refused,
            Reply::Error {
                code: ErrorCode::Busy,
                ..
            }
        ),
        "{refused:?}"
    );
    let result = TerminalRequest::PaymentResult {
        payment_request_id: finished_by_terminal.clone(),
        status: PaymentResultStatus::Succeeded,
    };
    let reply = agent.terminal.request(result).await.unwrap();
    assert!(
        matches!(
            reply,
            Reply::Ok(_)
                | Reply::Error {
                    code: ErrorCode::NotFound,
                    ..
                }
        ),
        "{reply:?}"
    );
    assert!(agent.wait_exit().await.success());
    assert_eq!(
        agent.sim.payments().len(),
        2,
        "the refused sale created nothing"
    );
    assert!(agent
        .sim
        .requests_to("POST", CANCEL)
        .iter()
        .any(|r| body(r)["PaymentRequestId"] == slow.as_str()));
    agent.finish().await;
}

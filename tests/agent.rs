//! The agent daemon as a whole (issue: the agent daemon, part 8): the real binary as a process,
//! a pseudo-terminal pair with the terminal simulator on it, the payment API simulator on
//! loopback, real state files and real signals.

mod common;

use common::daemon::{Agent, Setup, WAIT};
use nix::sys::signal::Signal;
use pos_agent::serial::message::{
    AgentRequest, AgentStateKind, CancelReason, ErrorCode, PaymentStatus, Reply, TerminalRequest,
};
use pos_agent::simulator::api::Fault;
use uuid::Uuid;

async fn sale(agent: &mut Agent, code: Uuid, amount_minor: i64) -> Reply {
    agent
        .terminal
        .request(TerminalRequest::Sale {
            merchant_unique_code: code,
            amount_minor,
            currency_id: None,
            display_code: None,
        })
        .await
        .expect("the agent answers a sale")
}

async fn started(agent: &mut Agent, amount_minor: i64) -> String {
    match sale(agent, Uuid::new_v4(), amount_minor).await {
        Reply::SaleStarted {
            payment_request_id, ..
        } => payment_request_id,
        other => panic!(
            "expected sale_started, got {other:?}\nlog:\n{}",
            agent.log()
        ),
    }
}

async fn next_cancelled(agent: &mut Agent) -> (String, CancelReason) {
    loop {
        match agent
            .terminal
            .next_notification(WAIT)
            .await
            .expect("a notification")
        {
            AgentRequest::PaymentCancelled {
                payment_request_id,
                reason,
            } => return (payment_request_id, reason),
            _ => continue,
        }
    }
}

fn sale_requests(agent: &Agent) -> usize {
    agent
        .sim
        .requests()
        .iter()
        .filter(|r| r.path == "/api/payment/async/sale")
        .count()
}

#[tokio::test]
async fn ready_is_notified_and_status_reports_the_established_connection() {
    let mut agent = Agent::start(Setup::default()).await;
    agent
        .terminal
        .wait_agent_state(AgentStateKind::Ready, WAIT)
        .await
        .expect("agent_state ready");
    let status = agent.wait_notification("STATUS=connected").await;
    assert!(status.contains("terminal"), "{status}");
    let report = agent.status().await;
    assert_eq!(report["connection"], "connected");
    assert_eq!(report["version"], env!("CARGO_PKG_VERSION"));
    let id = report["connection_id"]
        .as_str()
        .expect("connection id")
        .to_owned();
    assert!(agent
        .sim
        .connections()
        .iter()
        .any(|c| c.id == id && c.is_connected));
    assert_eq!(agent.state_file()["connection_id"], id.as_str());
    agent.finish().await;
}

#[tokio::test]
async fn a_sale_is_started_made_durable_and_answered() {
    let mut agent = Agent::start(Setup::default()).await;
    agent.wait_notification("STATUS=connected").await;
    let code = Uuid::new_v4();
    let reply = sale(&mut agent, code, 2250).await;
    let Reply::SaleStarted {
        payment_request_id,
        merchant_unique_code,
    } = reply
    else {
        panic!("expected sale_started, got {reply:?}");
    };
    assert_eq!(merchant_unique_code, code);
    let sale = agent
        .sim
        .requests()
        .into_iter()
        .find(|r| r.path == "/api/payment/async/sale")
        .unwrap();
    assert_eq!(sale.body["MerchantUniqueCode"], code.to_string());
    assert_eq!(sale.body["Amount"], 22.5);
    assert_eq!(agent.pending_ids().await, vec![payment_request_id.clone()]);
    let state = agent.state_file().to_string();
    assert!(state.contains(&payment_request_id) && state.contains(&code.to_string()));
    agent.finish().await;
}

#[tokio::test]
async fn a_repeated_sale_gets_the_same_answer_and_creates_no_second_payment() {
    let mut agent = Agent::start(Setup::default()).await;
    agent.wait_notification("STATUS=connected").await;
    let code = Uuid::new_v4();
    let first = sale(&mut agent, code, 1000).await;
    let second = sale(&mut agent, code, 1000).await;
    assert!(matches!(first, Reply::SaleStarted { .. }), "{first:?}");
    assert_eq!(format!("{first:?}"), format!("{second:?}"));
    assert_eq!(sale_requests(&agent), 1);
    assert_eq!(agent.sim.payments().len(), 1);
    agent.finish().await;
}

#[tokio::test]
async fn a_sale_whose_response_was_lost_is_resolved_through_the_payments_list() {
    let mut agent = Agent::start(Setup::default()).await;
    agent.wait_notification("STATUS=connected").await;
    agent
        .sim
        .inject(Fault::create_then_drop("POST", "/api/payment/async/sale"));
    let code = Uuid::new_v4();
    let reply = sale(&mut agent, code, 500).await;
    let Reply::SaleStarted {
        payment_request_id, ..
    } = reply
    else {
        panic!(
            "expected sale_started, got {reply:?}\nlog:\n{}",
            agent.log()
        );
    };
    let payments = agent.sim.payments();
    assert_eq!(payments.len(), 1, "exactly one payment exists");
    assert_eq!(payments[0].payment_request_id, payment_request_id);
    assert!(agent
        .sim
        .requests()
        .iter()
        .any(|r| r.path == "/api/payment/list"));
    assert_eq!(sale_requests(&agent), 1, "the sale was not sent twice");
    agent.finish().await;
}

#[tokio::test]
async fn a_sale_while_the_api_is_down_is_refused_as_unavailable_and_creates_nothing() {
    let mut agent = Agent::start(Setup::default()).await;
    agent.wait_notification("STATUS=connected").await;
    agent.sim.inject(Fault::close_without_reply(
        "POST",
        "/api/payment/async/sale",
        100,
    ));
    let code = Uuid::new_v4();
    let reply = sale(&mut agent, code, 700).await;
    assert!(
        matches!(
            &reply,
            Reply::Error {
                code: ErrorCode::ApiUnavailable,
                ..
            }
        ),
        "expected api_unavailable, got {reply:?}"
    );
    assert!(agent.sim.payments().is_empty());
    assert!(
        !agent.state_file().to_string().contains(&code.to_string()),
        "the intent was forgotten"
    );
    agent.finish().await;
}

#[tokio::test]
async fn an_operator_cancel_cancels_at_the_api_and_tells_the_terminal() {
    let mut agent = Agent::start(Setup::default()).await;
    agent.wait_notification("STATUS=connected").await;
    let id = started(&mut agent, 1200).await;
    let out = agent.cli(&["cancel", &id]).await;
    assert_eq!(out.code, Some(0), "{out:?}");
    assert_eq!(
        next_cancelled(&mut agent).await,
        (id.clone(), CancelReason::Operator)
    );
    let cancel = agent
        .sim
        .requests()
        .into_iter()
        .find(|r| r.path == "/api/payment/async/cancel")
        .unwrap();
    assert_eq!(cancel.body["PaymentRequestId"], id.as_str());
    assert!(agent.pending_ids().await.is_empty());
    let unknown = agent.cli(&["cancel", &Uuid::new_v4().to_string()]).await;
    assert_eq!(unknown.code, Some(1), "{unknown:?}");
    agent.finish().await;
}

#[tokio::test]
async fn a_terminal_cancel_is_answered_with_the_cancelled_ids() {
    let mut agent = Agent::start(Setup::default()).await;
    agent.wait_notification("STATUS=connected").await;
    let id = started(&mut agent, 800).await;
    let reply = agent
        .terminal
        .request(TerminalRequest::Cancel {
            payment_request_id: Some(id.clone()),
        })
        .await
        .unwrap();
    assert_eq!(
        format!("{reply:?}"),
        format!(
            "{:?}",
            Reply::Cancelled {
                payment_request_ids: vec![id.clone()]
            }
        )
    );
    assert!(agent.sim.requests().iter().any(
        |r| r.path == "/api/payment/async/cancel" && r.body["PaymentRequestId"] == id.as_str()
    ));
    assert!(agent.pending_ids().await.is_empty());
    agent.finish().await;
}

#[tokio::test]
async fn a_payment_result_ends_the_payment() {
    let mut agent = Agent::start(Setup::default()).await;
    agent.wait_notification("STATUS=connected").await;
    let id = started(&mut agent, 900).await;
    let reply = agent
        .terminal
        .request(TerminalRequest::PaymentResult {
            payment_request_id: id.clone(),
            status: PaymentStatus::Succeeded,
        })
        .await
        .unwrap();
    assert!(matches!(reply, Reply::Ok), "{reply:?}");
    assert!(agent.pending_ids().await.is_empty());
    let again = agent
        .terminal
        .request(TerminalRequest::PaymentResult {
            payment_request_id: id.clone(),
            status: PaymentStatus::Failed,
        })
        .await
        .unwrap();
    assert!(
        matches!(
            again,
            Reply::Error {
                code: ErrorCode::NotFound,
                ..
            }
        ),
        "{again:?}"
    );
    agent.finish().await;
}

#[tokio::test]
async fn a_payment_started_elsewhere_is_tracked_and_cancelled_at_shutdown() {
    let mut agent = Agent::start(Setup::default()).await;
    agent.wait_notification("STATUS=connected").await;
    let id = agent.sim.create_payment_elsewhere(3000);
    let reply = agent
        .terminal
        .request(TerminalRequest::PaymentStarted {
            payment_request_id: id.clone(),
        })
        .await
        .unwrap();
    assert!(matches!(reply, Reply::Ok), "{reply:?}");
    assert_eq!(agent.pending_ids().await, vec![id.clone()]);
    agent.signal(Signal::SIGTERM);
    assert_eq!(
        next_cancelled(&mut agent).await,
        (id, CancelReason::Shutdown)
    );
    assert!(agent.wait_exit().await.success());
    agent.finish().await;
}

#[tokio::test]
async fn shutdown_cancels_every_pending_payment_before_disconnecting() {
    let mut agent = Agent::start(Setup::default()).await;
    agent.wait_notification("STATUS=connected").await;
    let mut ids = Vec::new();
    for amount in [100, 200, 300] {
        ids.push(started(&mut agent, amount).await);
    }
    agent.signal(Signal::SIGTERM);
    agent
        .terminal
        .wait_agent_state(AgentStateKind::Stopping, WAIT)
        .await
        .expect("agent_state stopping");
    let status = agent.wait_exit().await;
    assert!(status.success(), "{status:?}\n{}", agent.log());
    agent.wait_notification("STOPPING=1").await;
    let requests = agent.sim.requests();
    let cancels: Vec<usize> = requests
        .iter()
        .enumerate()
        .filter(|(_, r)| r.path == "/api/payment/async/cancel")
        .map(|(i, _)| i)
        .collect();
    let disconnect = requests
        .iter()
        .position(|r| r.path == "/api/connection/disconnect")
        .expect("disconnect sent");
    assert_eq!(cancels.len(), 3);
    assert!(
        cancels.iter().all(|&i| i < disconnect),
        "cancels come before the disconnect"
    );
    let mut cancelled: Vec<String> = requests
        .iter()
        .filter(|r| r.path == "/api/payment/async/cancel")
        .map(|r| r.body["PaymentRequestId"].as_str().unwrap().to_owned())
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
    let mut agent = Agent::start(Setup::default()).await;
    agent.wait_notification("STATUS=connected").await;
    let a = started(&mut agent, 100).await;
    let b = started(&mut agent, 200).await;
    agent
        .sim
        .inject(Fault::http_500("POST", "/api/payment/async/cancel", 2));
    agent.signal(Signal::SIGTERM);
    assert!(agent.wait_exit().await.success());
    let cancels = agent
        .sim
        .requests()
        .iter()
        .filter(|r| r.path == "/api/payment/async/cancel")
        .count();
    assert_eq!(cancels, 4, "two answered 500 and were sent again");
    let cancelled: Vec<String> = agent
        .sim
        .payments()
        .iter()
        .filter(|p| p.is_cancelled())
        .map(|p| p.payment_request_id.clone())
        .collect();
    assert!(cancelled.contains(&a) && cancelled.contains(&b));
    agent.finish().await;
}

#[tokio::test]
async fn cancels_not_confirmed_by_the_deadline_stay_in_state_and_are_sent_at_the_next_start() {
    let setup = Setup {
        shutdown_toml: "deadline = \"1s\"\nconcurrency = 8\n".into(),
        ..Setup::default()
    };
    let mut agent = Agent::start(setup).await;
    agent.wait_notification("STATUS=connected").await;
    let id = started(&mut agent, 100).await;
    agent
        .sim
        .inject(Fault::http_500("POST", "/api/payment/async/cancel", 1000));
    agent.signal(Signal::SIGTERM);
    assert!(agent.wait_exit().await.success());
    let state = agent.state_file();
    assert!(
        state["payments"][&id]["cancel_requested"].is_object(),
        "marked in state: {state}"
    );
    agent.sim.clear_faults();
    agent.spawn();
    agent.wait_notification("READY=1").await;
    let cancel = agent
        .sim
        .wait_for_request(
            |r| r.path == "/api/payment/async/cancel" && r.status == 200,
            WAIT,
        )
        .await
        .expect("the cancel is sent again");
    assert_eq!(cancel.body["PaymentRequestId"], id.as_str());
    let deadline = tokio::time::Instant::now() + WAIT;
    while !agent.pending_ids().await.is_empty() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the recovered cancel ends the payment"
        );
        agent.wait_notification("0 pending").await;
    }
    agent.finish().await;
}

#[tokio::test]
async fn disconnect_refuses_sales_until_reconnect() {
    let mut agent = Agent::start(Setup::default()).await;
    agent.wait_notification("STATUS=connected").await;
    let pending = started(&mut agent, 100).await;
    let out = agent.cli(&["disconnect"]).await;
    assert_eq!(out.code, Some(0), "{out:?}");
    assert_eq!(
        next_cancelled(&mut agent).await,
        (pending, CancelReason::Operator)
    );
    assert!(agent
        .sim
        .requests()
        .iter()
        .any(|r| r.path == "/api/connection/disconnect"));
    assert_eq!(agent.status().await["connection"], "disconnected");
    let refused = sale(&mut agent, Uuid::new_v4(), 100).await;
    assert!(
        matches!(
            &refused,
            Reply::Error {
                code: ErrorCode::NotConnected,
                ..
            }
        ),
        "{refused:?}"
    );
    let out = agent.cli(&["reconnect"]).await;
    assert_eq!(out.code, Some(0), "{out:?}");
    assert!(agent
        .sim
        .requests()
        .iter()
        .any(|r| r.path == "/api/connection/reconnect"));
    assert_eq!(agent.status().await["connection"], "connected");
    started(&mut agent, 100).await;
    agent.finish().await;
}

#[tokio::test]
async fn the_payment_api_commands_reach_the_api_and_report_refusals() {
    let mut agent = Agent::start(Setup::default()).await;
    agent.wait_notification("STATUS=connected").await;
    let out = agent
        .cli(&[
            "apm-unlink",
            "--phone",
            "905342979639",
            "--apm-key",
            "Masterpass_IFrame",
        ])
        .await;
    assert_eq!(out.code, Some(0), "{out:?}");
    let apm = agent
        .sim
        .requests()
        .into_iter()
        .find(|r| r.path == "/api/paywall/apm/unlink")
        .unwrap();
    assert_eq!(apm.body["Phone"], "905342979639");
    assert_eq!(apm.body["ApmKey"], "Masterpass_IFrame");

    let not_linked = Uuid::new_v4().to_string();
    let out = agent
        .cli(&["masterpass-unlink", "--session-id", &not_linked])
        .await;
    assert_eq!(out.code, Some(1), "not linked is a refusal: {out:?}");
    assert!(
        out.stderr.contains("NotFound") || out.stderr.contains("ACCOUNT_NOT_LINKED"),
        "{out:?}"
    );
    let linked = Uuid::new_v4().to_string();
    agent.sim.link_masterpass_session(&linked);
    let out = agent
        .cli(&["masterpass-unlink", "--session-id", &linked])
        .await;
    assert_eq!(out.code, Some(0), "{out:?}");

    let out = agent
        .cli(&["checkout-deactivate", "--id", "205334385"])
        .await;
    assert_eq!(out.code, Some(0), "{out:?}");
    let passive = agent
        .sim
        .requests()
        .into_iter()
        .find(|r| r.path == "/api/paywall/checkout/passive")
        .unwrap();
    assert_eq!(passive.body["Id"], 205334385);
    agent.finish().await;
}

#[tokio::test]
async fn kill_9_and_restart_loses_nothing() {
    let mut agent = Agent::start(Setup::default()).await;
    agent.wait_notification("STATUS=connected").await;
    let mut ids = vec![
        started(&mut agent, 100).await,
        started(&mut agent, 200).await,
    ];
    let connection = agent.status().await["connection_id"]
        .as_str()
        .unwrap()
        .to_owned();
    agent.signal(Signal::SIGKILL);
    agent.wait_exit().await;
    agent.spawn();
    agent.wait_notification("READY=1").await;
    let mut after = agent.pending_ids().await;
    after.sort();
    ids.sort();
    assert_eq!(after, ids);
    let status = agent.status().await;
    assert_eq!(status["connection_id"], connection.as_str());
    let establishes = agent
        .sim
        .requests()
        .iter()
        .filter(|r| r.method == "POST" && r.path == "/api/connection")
        .count();
    assert_eq!(
        establishes, 1,
        "the restart reconnected the known connection"
    );
    agent
        .sim
        .wait_for_request(|r| r.path == "/api/connection/reconnect", WAIT)
        .await
        .expect("reconnect at start");
    agent.finish().await;
}

#[tokio::test]
async fn a_corrupt_state_file_stops_the_start_and_is_left_as_it_is() {
    let mut agent = Agent::start(Setup::default()).await;
    agent.signal(Signal::SIGKILL);
    agent.wait_exit().await;
    let file = agent.state_dir.join("state.json");
    let garbage = b"{\"version\": 1, \"payments\": {\"trunc".to_vec();
    std::fs::write(&file, &garbage).unwrap();
    agent.spawn();
    let status = agent.wait_exit().await;
    assert_eq!(status.code(), Some(74), "{}", agent.log());
    assert!(
        agent.log().contains(&file.display().to_string()),
        "the error names the file:\n{}",
        agent.log()
    );
    assert_eq!(
        std::fs::read(&file).unwrap(),
        garbage,
        "the file was left as it was"
    );
    agent.finish().await;
}

#[tokio::test]
async fn garbage_on_the_control_socket_does_not_disturb_the_daemon() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut agent = Agent::start(Setup::default()).await;
    for junk in [
        &b"\xff\xfe\x00garbage\n"[..],
        b"{\"command\":",
        b"{\"command\":\"launch\"}\n",
        &[b'x'; 100_000][..],
    ] {
        let mut stream = tokio::net::UnixStream::connect(&agent.socket)
            .await
            .unwrap();
        let _ = stream.write_all(junk).await;
        let _ = stream.shutdown().await;
        let mut answer = Vec::new();
        let _ = tokio::time::timeout(WAIT, stream.read_to_end(&mut answer)).await;
        if !answer.is_empty() {
            let reply: serde_json::Value =
                serde_json::from_slice(&answer).expect("an error reply is JSON");
            assert_eq!(reply["ok"], false);
        }
    }
    assert_eq!(agent.status().await["version"], env!("CARGO_PKG_VERSION"));
    agent.finish().await;
}

#[tokio::test]
async fn a_payment_pending_past_payment_timeout_is_cancelled_with_reason_timeout() {
    let setup = Setup {
        payment_timeout: "1s",
        ..Setup::default()
    };
    let mut agent = Agent::start(setup).await;
    agent.wait_notification("STATUS=connected").await;
    let id = started(&mut agent, 100).await;
    assert_eq!(
        next_cancelled(&mut agent).await,
        (id, CancelReason::Timeout)
    );
    agent.finish().await;
}

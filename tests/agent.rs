//! The agent daemon as a whole (docs/architecture.md, docs/operations.md): the real binary as a
//! process, a pseudo-terminal pair with the terminal simulator on it, the payment API simulator
//! on loopback, real state files and real signals.

mod support;

use nix::sys::signal::Signal;
use pos_agent::paywall::PaymentStatus;
use pos_agent::serial::message::{
    AgentReadiness, AgentRequest, CancelReason, ErrorCode, PaymentResultStatus, Reply, SaleOrder,
    TerminalRequest,
};
use pos_agent::simulator::api::{Fault, FaultKind, RecordedRequest};
use support::daemon::{Agent, Setup};
use support::paths::{CANCEL, DISCONNECT, SALE};
use support::WAIT;
use uuid::Uuid;

fn count(agent: &Agent, path: &str) -> usize {
    agent
        .sim
        .requests()
        .iter()
        .filter(|r| r.path == path)
        .count()
}

fn body(request: &RecordedRequest) -> serde_json::Value {
    request.body.clone().unwrap_or_default()
}

async fn agent_state(agent: &mut Agent, wanted: AgentReadiness) {
    agent
        .notification(|n| {
            matches!(n, AgentRequest::AgentState { state, .. } if state == wanted).then_some(())
        })
        .await
}

/// The terminal's end of the pty pair (its master, opened on `/dev/ptmx`) is close-on-exec: a
/// daemon that inherited it would hold the line open after the terminal hangs up, and so would
/// every daemon a test starts while another test holds a pair.
#[tokio::test]
async fn the_daemon_holds_the_line_but_not_the_terminals_end_of_it() {
    let agent = Agent::start(Setup::default()).await;
    let fds = format!("/proc/{}/fd", agent.pid());
    let open_files = || -> Vec<std::path::PathBuf> {
        std::fs::read_dir(&fds)
            .unwrap()
            .filter_map(|entry| std::fs::read_link(entry.ok()?.path()).ok())
            .collect()
    };
    // The daemon opens the slave (`/dev/pts/N`) as its serial device: seeing it shows the list
    // is the daemon's.
    let deadline = std::time::Instant::now() + WAIT;
    let mut files = open_files();
    while !files.iter().any(|f| f.starts_with("/dev/pts/")) {
        assert!(
            std::time::Instant::now() < deadline,
            "the daemon never opened its serial device; its files: {files:?}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        files = open_files();
    }
    assert!(
        !files.iter().any(|f| f.ends_with("ptmx")),
        "the daemon holds a pty master: {files:?}"
    );
    agent.finish().await;
}

#[tokio::test]
async fn ready_is_notified_and_status_reports_the_established_connection() {
    let mut agent = Agent::start(Setup::default()).await;
    agent_state(&mut agent, AgentReadiness::Ready).await;
    let status = agent.wait_notification("STATUS=connected").await;
    assert!(status.contains("terminal"), "{status}");
    assert!(
        !agent
            .notifications()
            .iter()
            .any(|n| n.contains("WATCHDOG=1")),
        "no watchdog pets without WATCHDOG_USEC"
    );
    let report = agent.status().await;
    assert_eq!(report["connection"], "connected");
    assert_eq!(report["version"], env!("CARGO_PKG_VERSION"));
    support::assert_build_commit(report["commit"].as_str().expect("status --json: commit"));
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

/// docs/serial-protocol.md §3 "Versions": the agent announces its protocol version and build in
/// `agent_state` `ready`; the terminal's answer names it, and `status` (both forms) and the
/// metrics show who the terminal is.
#[tokio::test]
async fn the_first_exchange_carries_versions_and_status_and_metrics_name_the_terminal() {
    let mut agent = Agent::start(Setup::default()).await;
    let (protocol, build) = agent
        .notification(|n| match n {
            AgentRequest::AgentState {
                state: AgentReadiness::Ready,
                protocol,
                agent,
            } => Some((protocol, agent)),
            _ => None,
        })
        .await;
    assert_eq!(protocol, Some(1));
    assert_eq!(
        build.as_deref(),
        Some(concat!("pos-agent ", env!("CARGO_PKG_VERSION")))
    );
    let report = agent
        .status_until("the terminal named itself", |s| s["terminal"].is_object())
        .await;
    assert_eq!(
        report["terminal"],
        serde_json::json!({
            "protocol": 1,
            "model": "pos-agent simulate-terminal",
            "firmware": env!("CARGO_PKG_VERSION"),
        })
    );
    let human = agent.cli(&["status"]).await;
    let line = format!(
        "terminal       pos-agent simulate-terminal, firmware {}, protocol 1",
        env!("CARGO_PKG_VERSION")
    );
    assert!(human.stdout.contains(&line), "{}", human.stdout);
    let metrics = agent.cli(&["metrics"]).await;
    let sample = format!(
        "pos_agent_terminal_info{{protocol=\"1\",model=\"pos-agent simulate-terminal\",firmware=\"{}\"}} 1",
        env!("CARGO_PKG_VERSION")
    );
    assert!(metrics.stdout.contains(&sample), "{}", metrics.stdout);
    agent.finish().await;
}

/// A terminal written before versions were on the wire answers `agent_state` with a plain `ok`
/// and ignores the new fields: it keeps working, and `status` says it did not name itself.
#[tokio::test]
async fn a_terminal_that_predates_versions_keeps_working() {
    use pos_agent::serial::{LinkEvent, LinkSettings, TerminalLink};
    let mut agent = Agent::connected(Setup::default()).await;
    let (terminal, mut events) =
        TerminalLink::over(agent.replace_terminal_with_line(), LinkSettings::default());
    tokio::spawn(async move {
        while let Some(event) = events.recv().await {
            if let LinkEvent::Request(request) = event {
                request.reply(Reply::OK);
            }
        }
    });
    let report = agent
        .status_until("the old terminal answered in the simulator's place", |s| {
            s["terminal"].is_object() && s["terminal"]["model"].is_null()
        })
        .await;
    assert_eq!(report["terminal"], serde_json::json!({}));
    let human = agent.cli(&["status"]).await;
    assert!(
        human
            .stdout
            .contains("terminal       unknown model, firmware unknown, protocol 1"),
        "{}",
        human.stdout
    );
    let sale = TerminalRequest::Sale(SaleOrder {
        merchant_unique_code: Uuid::new_v4(),
        amount_minor: std::num::NonZeroU64::new(990).unwrap(),
        currency_id: None,
        display_code: None,
    });
    let reply = terminal.request(sale).await.unwrap();
    assert!(matches!(reply, Reply::SaleStarted { .. }), "{reply:?}");
    agent.finish().await;
}

#[tokio::test]
async fn a_sale_is_started_made_durable_and_answered() {
    let mut agent = Agent::connected(Setup::default()).await;
    let code = Uuid::new_v4();
    let reply = agent.sale(code, 2250).await;
    let Reply::SaleStarted {
        payment_request_id,
        merchant_unique_code,
    } = reply
    else {
        panic!("expected sale_started, got {reply:?}");
    };
    assert_eq!(merchant_unique_code, code);
    let sale = body(&agent.sim.requests_to("POST", SALE)[0]);
    assert_eq!(sale["MerchantUniqueCode"], code.to_string());
    assert_eq!(sale["Amount"], 22.5);
    assert_eq!(
        sale["TerminalId"],
        pos_agent::simulator::api::DEMO_TERMINAL_ID
    );
    assert_eq!(agent.pending_ids().await, vec![payment_request_id.clone()]);
    let state = agent.state_file().to_string();
    assert!(state.contains(&payment_request_id) && state.contains(&code.to_string()));
    agent.finish().await;
}

#[tokio::test]
async fn a_repeated_sale_gets_the_same_answer_and_creates_no_second_payment() {
    let mut agent = Agent::connected(Setup::default()).await;
    let code = Uuid::new_v4();
    let first = agent.sale(code, 1000).await;
    let second = agent.sale(code, 1000).await;
    assert!(matches!(first, Reply::SaleStarted { .. }), "{first:?}");
    assert_eq!(first, second);
    assert_eq!(count(&agent, SALE), 1);
    assert_eq!(agent.sim.payments().len(), 1);
    agent.finish().await;
}

#[tokio::test]
async fn a_sale_whose_response_was_lost_is_resolved_through_the_payments_list() {
    let mut agent = Agent::connected(Setup::default()).await;
    agent
        .sim
        .inject(Fault::new("POST", SALE, FaultKind::CreateThenDropReply));
    let reply = agent.sale(Uuid::new_v4(), 500).await;
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
    assert_eq!(
        payments[0].payment_request_id.to_string(),
        payment_request_id
    );
    assert!(
        count(&agent, "/api/payment/list") >= 1,
        "resolved through the payments list"
    );
    assert_eq!(count(&agent, SALE), 1, "the sale was not sent twice");
    agent.finish().await;
}

#[tokio::test]
async fn a_sale_while_the_api_is_down_is_refused_as_unavailable_and_creates_nothing() {
    let mut agent = Agent::connected(Setup::default()).await;
    agent
        .sim
        .inject(Fault::new("POST", SALE, FaultKind::CloseWithoutReply).always());
    let code = Uuid::new_v4();
    let reply = agent.sale(code, 700).await;
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
async fn a_sale_the_api_refuses_is_answered_with_its_message_and_not_sent_again() {
    let mut agent = Agent::connected(Setup::default()).await;
    let refusal = r#"{"Result":null,"ErrorCode":1,"Failed":true,"Message":"Terminal is busy","ClientMessage":"TerminalBusy","Succeeded":false}"#;
    agent.sim.inject(Fault::new(
        "POST",
        SALE,
        FaultKind::Reply {
            status: 200,
            body: refusal.into(),
        },
    ));
    let code = Uuid::new_v4();
    let reply = agent.sale(code, 100).await;
    assert_eq!(
        reply,
        Reply::Error {
            code: ErrorCode::ApiRejected,
            message: "Terminal is busy".into()
        }
    );
    let again = agent.sale(code, 100).await;
    assert!(
        matches!(
            again,
            Reply::Error {
                code: ErrorCode::ApiRejected,
                ..
            }
        ),
        "{again:?}"
    );
    assert_eq!(count(&agent, SALE), 1, "a refused sale is not sent again");
    agent.finish().await;
}

#[tokio::test]
async fn a_sale_whose_code_the_api_already_holds_is_answered_with_that_payment() {
    let mut agent = Agent::connected(Setup::default()).await;
    let code = Uuid::new_v4();
    let existing = agent.sim.create_payment_elsewhere(code, 100).to_string();
    let reply = agent.sale(code, 100).await;
    assert_eq!(
        reply,
        Reply::SaleStarted {
            payment_request_id: existing,
            merchant_unique_code: code
        }
    );
    assert_eq!(agent.sim.payments().len(), 1);
    agent.finish().await;
}

#[tokio::test]
async fn an_operator_cancel_cancels_at_the_api_and_tells_the_terminal() {
    let mut agent = Agent::connected(Setup::default()).await;
    let id = agent.started(1200).await;
    let out = agent.cli(&["cancel", &id]).await;
    assert_eq!(out.code, Some(0), "{out:?}");
    assert_eq!(
        agent.next_cancelled().await,
        (id.clone(), CancelReason::Operator)
    );
    let cancel = body(&agent.sim.requests_to("POST", CANCEL)[0]);
    assert_eq!(cancel["PaymentRequestId"], id.as_str());
    assert!(agent.pending_ids().await.is_empty());
    let unknown = agent.cli(&["cancel", &Uuid::new_v4().to_string()]).await;
    assert_eq!(unknown.code, Some(1), "{unknown:?}");
    agent.finish().await;
}

#[tokio::test]
async fn a_terminal_cancel_is_answered_with_the_cancelled_ids() {
    let mut agent = Agent::connected(Setup::default()).await;
    let id = agent.started(800).await;
    let reply = agent
        .terminal
        .request(TerminalRequest::Cancel {
            payment_request_id: Some(id.to_uppercase()),
        })
        .await
        .unwrap();
    assert_eq!(reply, Reply::cancelled(vec![id.clone()]));
    assert!(agent
        .sim
        .requests_to("POST", CANCEL)
        .iter()
        .any(|r| body(r)["PaymentRequestId"] == id.as_str()));
    assert!(agent.pending_ids().await.is_empty());
    agent.finish().await;
}

#[tokio::test]
async fn a_payment_result_ends_the_payment() {
    let mut agent = Agent::connected(Setup::default()).await;
    let id = agent.started(900).await;
    let result = |status| TerminalRequest::PaymentResult {
        payment_request_id: id.clone(),
        status,
    };
    let reply = agent
        .terminal
        .request(result(PaymentResultStatus::Succeeded))
        .await
        .unwrap();
    assert_eq!(reply, Reply::OK);
    assert!(agent.pending_ids().await.is_empty());
    let again = agent
        .terminal
        .request(result(PaymentResultStatus::Failed))
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
async fn cancels_not_confirmed_by_the_deadline_stay_in_state_and_are_sent_at_the_next_start() {
    let setup = Setup {
        shutdown_toml: "deadline = \"1s\"\nconcurrency = 8\n".into(),
        ..Setup::default()
    };
    let mut agent = Agent::connected(setup).await;
    let id = agent.started(100).await;
    agent
        .sim
        .inject(Fault::new("POST", CANCEL, FaultKind::Status500).always());
    agent.signal(Signal::SIGTERM);
    assert!(agent.wait_exit().await.success());
    let state = agent.state_file();
    assert_eq!(
        state["payments"][&id]["cancel_requested"]["reason"], "shutdown",
        "marked in state: {state}"
    );
    agent.sim.clear_faults();
    agent.sim.clear_requests();
    agent.spawn();
    let cancel = agent
        .sim
        .wait_for_request(|r| r.path == CANCEL, WAIT)
        .await
        .expect("the cancel is sent again");
    assert_eq!(body(&cancel)["PaymentRequestId"], id.as_str());
    agent
        .status_until("the recovered cancel ends the payment", |s| {
            s["pending"].as_array().is_some_and(|p| p.is_empty())
        })
        .await;
    let payment = agent.sim.payment(id.parse().unwrap()).expect("payment");
    assert_eq!(payment.status, PaymentStatus::CANCELLED);
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
async fn disconnect_refuses_sales_until_reconnect() {
    let mut agent = Agent::connected(Setup::default()).await;
    let pending = agent.started(100).await;
    let out = agent.cli(&["disconnect"]).await;
    assert_eq!(out.code, Some(0), "{out:?}");
    assert_eq!(
        agent.next_cancelled().await,
        (pending, CancelReason::Operator)
    );
    assert_eq!(count(&agent, DISCONNECT), 1);
    assert_eq!(agent.status().await["connection"], "disconnected");
    let refused = agent.sale(Uuid::new_v4(), 100).await;
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
    assert_eq!(count(&agent, "/api/connection/reconnect"), 1);
    assert_eq!(agent.status().await["connection"], "connected");
    agent.started(100).await;
    agent.finish().await;
}

#[tokio::test]
async fn the_payment_api_commands_reach_the_api_and_report_refusals() {
    let mut agent = Agent::connected(Setup::default()).await;
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
    let apm = body(&agent.sim.requests_to("POST", "/api/paywall/apm/unlink")[0]);
    assert_eq!(apm["Phone"], "905342979639");
    assert_eq!(apm["ApmKey"], "Masterpass_IFrame");

    let not_linked = Uuid::new_v4().to_string();
    let out = agent
        .cli(&["masterpass-unlink", "--session-id", &not_linked])
        .await;
    assert_eq!(out.code, Some(1), "not linked is a refusal: {out:?}");
    assert!(
        !out.stderr.trim().is_empty(),
        "the API's message is printed: {out:?}"
    );
    let linked = Uuid::new_v4();
    agent.sim.link_masterpass_session(linked);
    let out = agent
        .cli(&["masterpass-unlink", "--session-id", &linked.to_string()])
        .await;
    assert_eq!(out.code, Some(0), "{out:?}");

    let out = agent
        .cli(&["checkout-deactivate", "--id", "205334385"])
        .await;
    assert_eq!(out.code, Some(0), "{out:?}");
    let passive = body(
        &agent
            .sim
            .requests_to("PUT", "/api/paywall/checkout/passive")[0],
    );
    assert_eq!(passive["Id"], 205334385);
    agent.finish().await;
}

#[tokio::test]
async fn kill_9_and_restart_loses_nothing() {
    let mut agent = Agent::connected(Setup::default()).await;
    let mut ids = vec![agent.started(100).await, agent.started(200).await];
    let connection = agent.status().await["connection_id"]
        .as_str()
        .unwrap()
        .to_owned();
    agent.signal(Signal::SIGKILL);
    agent.wait_exit().await;
    agent.spawn();
    agent
        .sim
        .wait_for_request(|r| r.path == "/api/connection/reconnect", WAIT)
        .await
        .expect("reconnect at start");
    let mut after = agent.pending_ids().await;
    after.sort();
    ids.sort();
    assert_eq!(after, ids);
    assert_eq!(agent.status().await["connection_id"], connection.as_str());
    assert_eq!(
        agent.sim.requests_to("POST", "/api/connection").len(),
        1,
        "no second connection was established"
    );
    agent.finish().await;
}

#[tokio::test]
async fn a_corrupt_state_file_stops_the_start_and_is_left_as_it_is() {
    let textfile_dir = tempfile::tempdir().unwrap();
    let textfile = textfile_dir.path().join("pos_agent.prom");
    let mut agent = Agent::start(Setup {
        extra_toml: format!(
            "[metrics]\ntextfile = \"{}\"\ninterval = \"1s\"\n",
            textfile.display()
        ),
        ..Setup::default()
    })
    .await;
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
    // The fleet sees a terminal that stays down: the textfile says so, for node_exporter.
    let exposition = std::fs::read_to_string(&textfile).unwrap();
    assert!(
        exposition
            .lines()
            .any(|l| l == "pos_agent_state_unusable 1"),
        "{exposition}"
    );
    agent.finish().await;
}

#[tokio::test]
async fn a_bad_configuration_stops_the_start_with_exit_78_naming_the_key() {
    let mut agent = Agent::start(Setup::default()).await;
    agent.signal(Signal::SIGKILL);
    agent.wait_exit().await;
    let text = std::fs::read_to_string(&agent.config_path).unwrap();
    std::fs::write(
        &agent.config_path,
        text.replace("max_sends", "max_sendz")
            .replace("ack_timeout", "max_sendz"),
    )
    .unwrap();
    agent.spawn();
    let status = agent.wait_exit().await;
    assert_eq!(status.code(), Some(78), "{}", agent.log());
    let log = agent.log();
    assert!(
        log.contains("max_sendz") && log.contains(&agent.config_path.display().to_string()),
        "{log}"
    );
    agent.finish().await;
}

#[tokio::test]
async fn garbage_on_the_control_socket_does_not_disturb_the_daemon() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut agent = Agent::start(Setup::default()).await;
    let long = vec![b'x'; 100_000];
    for junk in [
        &b"\xff\xfe\x00garbage\n"[..],
        b"{\"command\":",
        b"{\"command\":\"launch\"}\n",
        &long[..],
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
    let mut agent = Agent::connected(Setup {
        payment_timeout: "1s",
        ..Setup::default()
    })
    .await;
    let id = agent.started(100).await;
    assert_eq!(
        agent.next_cancelled().await,
        (id.clone(), CancelReason::Timeout)
    );
    assert_eq!(
        count(&agent, CANCEL),
        1,
        "one cancel for one timed-out payment"
    );
    let log = agent.log();
    assert_eq!(
        log.matches(&format!("payment {id} pending longer than payment_timeout"))
            .count(),
        1,
        "{log}"
    );
    agent.finish().await;
}

#[tokio::test]
async fn the_api_unreachable_at_start_does_not_delay_readiness_and_the_agent_connects_later() {
    let sim = pos_agent::simulator::api::ApiSimulator::start(Default::default()).unwrap();
    sim.inject(Fault::new("POST", "/api/connection", FaultKind::Status500).times(2));
    let mut agent = Agent::start_with(sim, Setup::default()).await;
    agent.wait_notification("STATUS=connecting").await;
    agent.wait_notification("STATUS=connected").await;
    assert_eq!(agent.sim.requests_to("POST", "/api/connection").len(), 3);
    agent.finish().await;
}

#[tokio::test]
async fn the_terminal_can_sell_again_after_the_agent_restarts() {
    let mut agent = Agent::connected(Setup::default()).await;
    agent.started(100).await;
    for _ in 0..3 {
        agent.signal(Signal::SIGTERM);
        assert!(agent.wait_exit().await.success());
        agent_state(&mut agent, AgentReadiness::Stopping).await;
        agent.forget_notifications();
        agent.spawn();
        // The terminal's line stayed open and the new agent's ids start at 1 again: the
        // terminal still hears it come up, not a stored answer to the previous agent.
        agent_state(&mut agent, AgentReadiness::Ready).await;
        agent.wait_notification("STATUS=connected").await;
        agent.started(100).await;
    }
    agent.finish().await;
}

#[tokio::test]
async fn the_watchdog_is_petted_while_watchdog_usec_is_set_and_status_follows_the_pending_count() {
    let mut agent = Agent::start(Setup {
        extra_env: vec![("WATCHDOG_USEC", "400000".into())],
        ..Setup::default()
    })
    .await;
    agent.wait_notification("STATUS=connected").await;
    // The pets keep coming (half of WATCHDOG_USEC is computed and unit-tested in
    // `systemd::watchdog_interval_from`; delivery timing is not asserted here).
    for _ in 0..3 {
        agent.forget_notifications();
        agent.wait_notification("WATCHDOG=1").await;
    }
    agent.started(100).await;
    agent.wait_notification("1 pending").await;
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

#[tokio::test]
async fn a_control_socket_passed_by_systemd_is_served_instead_of_the_configured_one() {
    let mut agent = Agent::connected(Setup {
        socket_activation: true,
        ..Setup::default()
    })
    .await;
    let id = agent.started(100).await;
    assert_eq!(agent.pending_ids().await, vec![id]);
    assert!(
        !agent.dir.path().join("unused.sock").exists(),
        "the configured socket was not bound"
    );
    agent.signal(Signal::SIGTERM);
    assert!(agent.wait_exit().await.success());
    agent.finish().await;
}

#[tokio::test]
async fn a_manager_that_does_not_read_its_notify_socket_does_not_stall_the_daemon() {
    let setup = Setup {
        read_notifications: false,
        extra_env: vec![("WATCHDOG_USEC", "20000".into())],
        ..Setup::default()
    };
    let mut agent = Agent::start(setup).await;
    agent
        .status_until("connected", |s| s["connection"] == "connected")
        .await;
    // Fill the socket's queue (from here, so it is surely full): from then on every notification,
    // such as the watchdog pet due every 10 ms, would block its sender.
    let probe = std::os::unix::net::UnixDatagram::unbound().unwrap();
    probe.set_nonblocking(true).unwrap();
    let notify_socket = agent.dir.path().join("notify.sock");
    loop {
        match probe.send_to(b"X_PROBE=1", &notify_socket) {
            Ok(_) => continue,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
            Err(e) => panic!("probe: {e}"),
        }
    }
    // The terminal and the operator are still served.
    for amount in [100, 200, 300] {
        agent.started(amount).await;
    }
    assert_eq!(agent.pending_ids().await.len(), 3);
    agent.finish().await;
}

/// Under emulation the shim (a host library) cannot be built or preloaded; the kill then lands
/// among unslowed commits, which the test still checks.
fn slow_storage(ms: u64) -> Vec<(&'static str, String)> {
    if std::env::var_os("POS_AGENT_TEST_RUNNER").is_some() {
        eprintln!("storage not slowed under emulation (POS_AGENT_TEST_RUNNER is set)");
        return Vec::new();
    }
    support::slow_fsync::env(ms)
}

/// Sells `codes` again after a restart: each must get the one payment the API holds for its code.
async fn sell_again_and_check(agent: &mut Agent, codes: &[Uuid], answered: &[(Uuid, String)]) {
    for code in codes {
        let id = match agent.sale(*code, 300).await {
            Reply::SaleStarted {
                payment_request_id, ..
            } => payment_request_id,
            other => panic!("sale {code} again: {other:?}\nlog:\n{}", agent.log()),
        };
        let held: Vec<_> = agent
            .sim
            .payments()
            .into_iter()
            .filter(|p| p.merchant_unique_code == *code)
            .collect();
        assert_eq!(held.len(), 1, "exactly one payment for {code}");
        assert_eq!(
            held[0].payment_request_id.to_string(),
            id,
            "the right id for {code}"
        );
        if let Some((_, before)) = answered.iter().find(|(c, _)| c == code) {
            assert_eq!(&id, before, "the id the terminal heard before the kill");
        }
    }
}

#[tokio::test]
async fn a_kill_during_a_group_commit_loses_no_payment_sells_nothing_twice() {
    let setup = Setup {
        extra_env: slow_storage(50),
        log_level: "info",
        ..Setup::default()
    };
    let mut agent = Agent::connected(setup).await;
    let codes: Vec<Uuid> = (0..16).map(|_| Uuid::new_v4()).collect();
    let answered = std::sync::Arc::new(std::sync::Mutex::new(Vec::<(Uuid, String)>::new()));
    let sales = {
        let terminal = agent.terminal.link().clone();
        let answered = std::sync::Arc::clone(&answered);
        let codes = codes.clone();
        tokio::spawn(async move {
            let sells = codes.into_iter().map(|code| {
                let terminal = terminal.clone();
                let answered = std::sync::Arc::clone(&answered);
                async move {
                    let sale = TerminalRequest::Sale(SaleOrder {
                        merchant_unique_code: code,
                        amount_minor: std::num::NonZeroU64::new(300).unwrap(),
                        currency_id: None,
                        display_code: None,
                    });
                    if let Ok(Reply::SaleStarted {
                        payment_request_id, ..
                    }) = terminal.request(sale).await
                    {
                        answered.lock().unwrap().push((code, payment_request_id));
                    }
                }
            });
            futures_util::future::join_all(sells).await;
        })
    };
    // With 16 sales in flight and every sync 50 ms long, the writer is syncing nearly all the
    // time once half of the requests have reached the API: the kill lands in a group commit.
    let deadline = tokio::time::Instant::now() + WAIT;
    while agent.sim.requests_to("POST", SALE).len() < 8 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "sales did not reach the API"
        );
        tokio::time::sleep(std::time::Duration::from_millis(2)).await;
    }
    agent.signal(Signal::SIGKILL);
    agent.wait_exit().await;
    let answered_before_kill = answered.lock().unwrap().clone();
    sales.abort();

    agent.forget_notifications();
    agent.spawn();
    agent.wait_notification("STATUS=connected").await;
    // Every id the terminal heard is pending, under its own code.
    let state = agent.state_file();
    for (code, id) in &answered_before_kill {
        assert_eq!(
            state["sales"][code.to_string()]["stage"]["payment_request_id"],
            id.as_str(),
            "sale {code} after the restart; state {state}"
        );
        assert!(state["payments"][id].is_object(), "{id} is pending");
    }
    // The start resolves the intents the kill left (a sale of the same code racing that
    // resolution is another matter); then each code is sold again.
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let state = agent.state_file();
        let open = state["sales"]
            .as_object()
            .unwrap()
            .values()
            .filter(|sale| sale["stage"]["status"] == "intent")
            .count();
        if open == 0 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{open} intents not resolved; state {state}\nlog:\n{}",
            agent.log()
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    sell_again_and_check(&mut agent, &codes, &answered_before_kill).await;
    agent.finish().await;
}

#[tokio::test]
async fn a_torn_journal_tail_is_dropped_and_recovery_finds_the_sale_it_held() {
    let mut agent = Agent::connected(Setup::default()).await;
    let mut codes = Vec::new();
    let mut answered = Vec::new();
    for _ in 0..3 {
        let code = Uuid::new_v4();
        let Reply::SaleStarted {
            payment_request_id, ..
        } = agent.sale(code, 300).await
        else {
            panic!("sale refused\nlog:\n{}", agent.log());
        };
        codes.push(code);
        answered.push((code, payment_request_id));
    }
    agent.signal(Signal::SIGKILL);
    agent.wait_exit().await;
    // Power loss in the middle of the last append: its record is cut short.
    let journal = agent.state_dir.join("state.journal");
    let length = std::fs::metadata(&journal).unwrap().len();
    assert!(length > 10, "the sales went to the journal");
    let file = std::fs::OpenOptions::new()
        .write(true)
        .open(&journal)
        .unwrap();
    file.set_len(length - 5).unwrap();
    drop(file);

    agent.forget_notifications();
    agent.spawn();
    agent.wait_notification("STATUS=connected").await;
    let last = answered[2].1.clone();
    agent
        .status_until("the torn sale recovered", |s| {
            s["pending"].as_array().is_some_and(|p| p.len() == 3)
        })
        .await;
    let mut pending = agent.pending_ids().await;
    pending.sort();
    let mut ids: Vec<String> = answered.iter().map(|(_, id)| id.clone()).collect();
    ids.sort();
    assert_eq!(
        pending, ids,
        "the last sale ({last}) came back through recovery"
    );
    sell_again_and_check(&mut agent, &codes, &answered).await;
    agent.finish().await;
}

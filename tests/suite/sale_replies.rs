//! Sale replies bounded through payment API outages (`docs/serial-protocol.md`, "Sale
//! replies"): the real daemon over a pty pair, the simulator refusing, black-holing, answering
//! 5xx slowly, unresolvable, or creating a payment and then going away. Every sale is answered
//! within `sale_reply_deadline` + 1 s; a sale the API never received leaves nothing behind; one
//! whose outcome is unknown is abandoned and, if the payment turns up, cancelled with reason
//! `abandoned`, across a kill -9 too. No payment the terminal was told failed stays uncancelled.

use std::time::{Duration, Instant};

use crate::support::daemon::{Agent, Setup};
use crate::support::paths::SALE;
use crate::support::WAIT;
use nix::sys::signal::Signal;
use pos_agent::paywall::PaymentStatus;
use pos_agent::serial::message::{CancelReason, ErrorCode, Reply};
use pos_agent::simulator::api::{ApiSimulator, Fault, FaultKind};
use uuid::Uuid;

/// Short, so the suite stays fast; the bound is the agent's own timer, so it holds under
/// emulation as well.
const DEADLINE: Duration = Duration::from_secs(2);
/// What the reply may take beyond the deadline (the frame over the pty, the terminal's side).
const SLACK: Duration = Duration::from_secs(1);

fn setup() -> Setup {
    Setup {
        sale_reply_deadline: "2s",
        ..Setup::default()
    }
}

/// Sends a sale and checks its reply came within the deadline and the slack.
async fn timed_sale(agent: &mut Agent, code: Uuid) -> Reply {
    let sent = Instant::now();
    let reply = agent.sale(code, 1250).await;
    let took = sent.elapsed();
    assert!(
        took <= DEADLINE + SLACK,
        "the sale took {took:?} to answer (deadline {DEADLINE:?}): {reply:?}\nlog:\n{}",
        agent.log()
    );
    reply
}

fn error_code(reply: &Reply) -> Option<ErrorCode> {
    match reply {
        Reply::Error { code, .. } => Some(*code),
        _ => None,
    }
}

/// No payment with a code the terminal was told failed exists at the simulator uncancelled.
fn assert_no_live_payment(sim: &ApiSimulator, failed_codes: &[Uuid]) {
    for payment in sim.payments() {
        if failed_codes.contains(&payment.merchant_unique_code) {
            assert_eq!(
                payment.status,
                PaymentStatus::CANCELLED,
                "a payment the terminal was told failed is alive: {payment:?}"
            );
        }
    }
}

fn sales_in_state(agent: &Agent) -> serde_json::Value {
    agent.state_file()["sales"].clone()
}

#[tokio::test]
async fn a_refused_sale_is_answered_quickly_and_nothing_is_created_later() {
    let mut agent = Agent::connected(setup()).await;
    agent.sim.set_refusing(true);
    let code = Uuid::new_v4();
    let reply = timed_sale(&mut agent, code).await;
    assert_eq!(
        error_code(&reply),
        Some(ErrorCode::ApiUnavailable),
        "{reply:?}"
    );
    let log = agent.log();
    // Both the last try and a deadline that came first (a loaded machine can make it happen)
    // log "sale <code> not sent: ...".
    assert!(log.contains(&format!("sale {code} not sent")), "{log}");
    assert!(!log.contains(&format!("sale {code} abandoned")), "{log}");
    // Nothing pending, no intent, nothing abandoned.
    let status = agent.status().await;
    assert_eq!(status["pending"], serde_json::json!([]));
    assert_eq!(status["abandoned"], serde_json::json!([]));
    assert!(sales_in_state(&agent).get(code.to_string()).is_none());

    // The API comes back: a new sale works, and the first one was never created.
    agent.sim.set_refusing(false);
    agent.started(900).await;
    assert!(
        agent
            .sim
            .payments()
            .iter()
            .all(|p| p.merchant_unique_code != code),
        "the refused sale must never be created"
    );
    agent.finish().await;
}

#[tokio::test]
async fn an_unresolvable_api_name_gets_an_answer_and_leaves_nothing() {
    let mut agent = Agent::with_unresolvable_api(setup()).await;
    let code = Uuid::new_v4();
    let reply = timed_sale(&mut agent, code).await;
    assert!(
        matches!(
            error_code(&reply),
            Some(ErrorCode::NotConnected | ErrorCode::ApiUnavailable)
        ),
        "{reply:?}"
    );
    let status = agent.status().await;
    assert_eq!(status["pending"], serde_json::json!([]));
    assert_eq!(status["abandoned"], serde_json::json!([]));
    assert_ne!(status["connection"], "connected");
    let log = agent.log();
    assert!(log.contains("not reachable yet"), "{log}");
    agent.finish().await;
}

#[tokio::test]
async fn a_black_holed_sale_is_answered_at_the_deadline_and_settled_when_the_api_is_back() {
    let mut agent = Agent::connected(setup()).await;
    agent
        .sim
        .inject(Fault::new("*", "/api/*", FaultKind::BlackHole).always());
    let code = Uuid::new_v4();
    let reply = timed_sale(&mut agent, code).await;
    assert_eq!(
        error_code(&reply),
        Some(ErrorCode::ApiUnavailable),
        "{reply:?}"
    );
    // Abandoned in durable state, shown apart from the pending payments.
    assert_eq!(
        sales_in_state(&agent)[code.to_string()]["stage"]["status"],
        "abandoned"
    );
    let status = agent.status().await;
    assert_eq!(
        status["abandoned"][0]["merchant_unique_code"],
        code.to_string()
    );
    assert_eq!(status["pending"], serde_json::json!([]));
    let pending = agent.cli(&["pending", "--json"]).await;
    assert!(pending.stdout.contains(&code.to_string()), "{pending:?}");

    // A new sale with the abandoned code is refused at once.
    let again = timed_sale(&mut agent, code).await;
    match &again {
        Reply::Error { code, message } => {
            assert_eq!(*code, ErrorCode::InvalidRequest);
            assert!(message.contains("abandoned"), "{message}");
        }
        other => panic!("expected invalid_request, got {other:?}"),
    }

    // The API comes back: the black hole never created it, so the code is settled as absent.
    agent.sim.clear_faults();
    agent
        .status_until("the abandoned sale is settled", |s| {
            s["abandoned"].as_array().is_some_and(|a| a.is_empty())
        })
        .await;
    agent
        .state_file_until("the settled outcome", |state| {
            state["sales"][code.to_string()]["stage"]["outcome"] == "abandoned"
        })
        .await;
    assert_no_live_payment(&agent.sim, &[code]);
    assert_eq!(
        error_code(&timed_sale(&mut agent, code).await),
        Some(ErrorCode::InvalidRequest)
    );
    agent.finish().await;
}

#[tokio::test]
async fn slow_server_errors_get_an_answer_within_the_deadline() {
    let mut agent = Agent::connected(setup()).await;
    agent.sim.set_latency(Duration::from_millis(400));
    agent
        .sim
        .inject(Fault::new("*", "/api/*", FaultKind::Status500).always());
    let code = Uuid::new_v4();
    let reply = timed_sale(&mut agent, code).await;
    assert_eq!(
        error_code(&reply),
        Some(ErrorCode::ApiUnavailable),
        "{reply:?}"
    );
    agent.sim.clear_faults();
    agent.sim.set_latency(Duration::ZERO);
    agent
        .status_until("the abandoned sale is settled", |s| {
            s["abandoned"].as_array().is_some_and(|a| a.is_empty())
        })
        .await;
    assert_no_live_payment(&agent.sim, &[code]);
    assert_eq!(agent.status().await["pending"], serde_json::json!([]));
    agent.finish().await;
}

/// The payment is created, its answer lost, and the API unreachable past the deadline.
async fn late_creation(agent: &mut Agent) -> Uuid {
    agent
        .sim
        .inject(Fault::new("POST", SALE, FaultKind::CreateThenGoOffline));
    let code = Uuid::new_v4();
    let reply = timed_sale(agent, code).await;
    assert_eq!(
        error_code(&reply),
        Some(ErrorCode::ApiUnavailable),
        "{reply:?}"
    );
    assert!(agent.sim.is_refusing());
    let created: Vec<_> = agent
        .sim
        .payments()
        .into_iter()
        .filter(|p| p.merchant_unique_code == code)
        .collect();
    assert_eq!(created.len(), 1, "the simulator created the payment");
    assert_eq!(created[0].status, PaymentStatus::CREATED);
    assert_eq!(
        sales_in_state(agent)[code.to_string()]["stage"]["status"],
        "abandoned",
        "abandoned in durable state before the reply"
    );
    code
}

async fn assert_cancelled_as_abandoned(agent: &mut Agent, code: Uuid) {
    let payment = agent
        .sim
        .payments()
        .into_iter()
        .find(|p| p.merchant_unique_code == code)
        .unwrap();
    let id = payment.payment_request_id.to_string();
    let (cancelled, reason) = agent.next_cancelled().await;
    assert_eq!(
        (cancelled.as_str(), reason),
        (id.as_str(), CancelReason::Abandoned)
    );
    agent
        .status_until("nothing left to settle", |s| {
            s["abandoned"].as_array().is_some_and(|a| a.is_empty())
                && s["pending"].as_array().is_some_and(|p| p.is_empty())
        })
        .await;
    assert_no_live_payment(&agent.sim, &[code]);
    assert_eq!(
        agent.state_file()["sales"][code.to_string()]["stage"]["outcome"],
        "abandoned"
    );
    assert_eq!(
        error_code(&timed_sale(agent, code).await),
        Some(ErrorCode::InvalidRequest)
    );
}

#[tokio::test]
async fn a_payment_created_late_is_cancelled_as_abandoned_once_the_api_is_back() {
    let mut agent = Agent::connected(setup()).await;
    let code = late_creation(&mut agent).await;
    agent.sim.set_refusing(false);
    assert_cancelled_as_abandoned(&mut agent, code).await;
    agent.finish().await;
}

#[tokio::test]
async fn a_payment_created_late_is_cancelled_as_abandoned_across_a_kill_9() {
    let mut agent = Agent::connected(setup()).await;
    let code = late_creation(&mut agent).await;
    agent.signal(Signal::SIGKILL);
    agent.wait_exit().await;
    agent.sim.set_refusing(false);
    agent.spawn();
    assert_cancelled_as_abandoned(&mut agent, code).await;
    agent.finish().await;
}

async fn terminal_status(agent: &mut Agent) -> (Vec<String>, usize, bool) {
    let reply = tokio::time::timeout(WAIT, agent.terminal.status())
        .await
        .expect("status is answered")
        .expect("status is answered");
    match reply {
        Reply::Status {
            pending,
            pending_count,
            truncated,
            ..
        } => (pending, pending_count, truncated),
        other => panic!("expected status, got {other:?}"),
    }
}

#[tokio::test]
async fn every_terminal_request_is_answered_at_150_and_1000_pending() {
    let mut agent = Agent::connected(Setup::default()).await;
    for count in [150usize, 1_000] {
        let pending = agent.restart_with_pending(count).await;
        let (ids, pending_count, truncated) = terminal_status(&mut agent).await;
        assert_eq!(pending_count, count);
        assert!(truncated);
        assert!(ids.len() > 50 && ids.len() < count, "{}", ids.len());
        assert!(ids.iter().all(|id| pending.contains(id)));
        let operator = agent.status().await;
        assert_eq!(operator["pending"].as_array().unwrap().len(), count);
    }
    // With few pending, nothing is cut.
    let pending = agent.restart_with_pending(3).await;
    let (ids, pending_count, truncated) = terminal_status(&mut agent).await;
    assert_eq!((ids.len(), pending_count, truncated), (3, 3, false));
    assert!(ids.iter().all(|id| pending.contains(id)));

    // The terminal's cancel-all answers with the whole count, at 150.
    agent.restart_with_pending(150).await;
    let (ids, cancelled_count, truncated) = agent.terminal_cancel_all().await;
    assert_eq!(cancelled_count, 150);
    assert!(truncated);
    assert!(ids.len() < 150 && ids.len() > 50);
    assert!(!agent.log().contains("does not fit"), "{}", agent.log());
    agent.finish().await;
}

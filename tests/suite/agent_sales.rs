//! The agent daemon selling (docs/architecture.md, docs/operations.md): a sale made durable and
//! answered once, refusals, lost answers, cancels from the terminal and the operator, results and
//! the payment timeout.
//!
//! Each test runs the real binary as a process, with a pseudo-terminal pair and the terminal
//! simulator on it, the payment API simulator on loopback, real state files and real signals. The
//! agent's other behaviours are beside this file: `agent_startup`, `agent_sales`,
//! `agent_shutdown`, `agent_recovery`.

use pos_agent::serial::message::{
    CancelReason, ErrorCode, PaymentResultStatus, Reply, TerminalRequest,
};
use pos_agent::simulator::api::{Fault, FaultKind};
use uuid::Uuid;

use crate::support::daemon::{body, count, Agent, Setup};
use crate::support::paths::{CANCEL, DISCONNECT, SALE};

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

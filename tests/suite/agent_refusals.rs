//! How the agent ends what the payment API refuses (docs/architecture.md "Refusals",
//! docs/payment-api.md "What each failure leads to"): refused cancels, refused keys (HTTP
//! 401/403), a wrong base URL (HTTP 404), and what `reconnect` resolves. Each test counts the
//! requests the agent sent, so a loop that repeats a request shows up as a number.
//!
//! The real binary as a process, a pty pair with the terminal simulator, the payment API
//! simulator on loopback (its faults answer the refusals).

use std::time::{Duration, SystemTime};

use crate::support::daemon::{Agent, Setup};
use crate::support::paths::{CANCEL, ESTABLISH, RECONNECT, SALE};
use nix::sys::signal::Signal;
use pos_agent::paywall::PaymentStatus;
use pos_agent::serial::message::{CancelReason, ErrorCode, Reply};
use pos_agent::simulator::api::{ApiSimulator, Fault, FaultKind};
use pos_agent::state::StateStore;
use uuid::Uuid;

/// Longer than several payment timeouts and several backoff steps: a request the agent repeats
/// by itself would be counted more than once within it.
const QUIET: Duration = Duration::from_secs(4);

fn count(agent: &Agent, method: &str, path: &str) -> usize {
    agent.sim.requests_to(method, path).len()
}

fn refusal(status: u16, code: i64, client_message: &str, message: &str) -> FaultKind {
    FaultKind::Reply {
        status,
        body: serde_json::json!({
            "Result": null, "ErrorCode": code, "Failed": true, "Message": message,
            "ClientMessage": client_message, "Succeeded": false
        })
        .to_string(),
    }
}

async fn pending_gone(agent: &mut Agent, id: &str) {
    agent
        .status_until("the payment leaves the pending set", |s| {
            !s["pending"].to_string().contains(id)
        })
        .await;
}

#[tokio::test]
async fn a_cancel_refused_because_the_payment_is_final_ends_it_after_one_request() {
    let mut agent = Agent::connected(Setup {
        payment_timeout: "2s",
        ..Setup::default()
    })
    .await;
    let id = agent.started(100).await;
    assert!(agent
        .sim
        .set_payment_status(id.parse().unwrap(), PaymentStatus::SUCCESSFUL));
    pending_gone(&mut agent, &id).await;
    tokio::time::sleep(QUIET).await;
    assert_eq!(count(&agent, "POST", CANCEL), 1, "{}", agent.log());
    assert!(agent.log().contains("already final at the payment API"));
    let state = agent.state_file().to_string();
    assert!(state.contains("final_at_api"), "{state}");
    agent.finish().await;
}

#[tokio::test]
async fn a_cancel_refused_otherwise_stays_pending_flagged_and_only_an_operator_sends_it_again() {
    let mut agent = Agent::connected(Setup {
        payment_timeout: "2s",
        ..Setup::default()
    })
    .await;
    let id = agent.started(100).await;
    agent.sim.inject(
        Fault::new(
            "POST",
            CANCEL,
            refusal(200, 1, "CancelNotAllowed", "Cancel is not allowed now."),
        )
        .always(),
    );
    let status = agent
        .status_until("the payment is flagged cancel_refused", |s| {
            s["pending"][0]["cancel_refused"].is_string()
        })
        .await;
    assert!(status["pending"][0]["cancel_refused"]
        .as_str()
        .unwrap()
        .contains("Cancel is not allowed now."));
    assert_eq!(status["pending"][0]["cancel_requested"], false);
    tokio::time::sleep(QUIET).await;
    assert_eq!(count(&agent, "POST", CANCEL), 1, "{}", agent.log());
    let pending = agent.cli(&["pending"]).await;
    assert!(pending.stdout.contains("refused: "), "{pending:?}");
    let text = agent.cli(&["status"]).await;
    assert!(
        text.stdout.contains("Cancel is not allowed now."),
        "{text:?}"
    );

    // An operator's cancel is sent (once), and ends it when the API takes it.
    agent.sim.clear_faults();
    let cancelled = agent.cli(&["cancel", &id]).await;
    assert_eq!(cancelled.code, Some(0), "{cancelled:?}");
    assert_eq!(count(&agent, "POST", CANCEL), 2);
    assert!(agent.pending_ids().await.is_empty());

    // The flag survives a restart, and the restarted agent does not send it either.
    let second = agent.started(200).await;
    agent
        .sim
        .inject(Fault::new("POST", CANCEL, refusal(200, 1, "CancelNotAllowed", "No.")).always());
    agent
        .status_until("the second payment is flagged", |s| {
            s["pending"][0]["cancel_refused"].is_string()
        })
        .await;
    agent.signal(Signal::SIGTERM);
    assert!(agent.wait_exit().await.success());
    assert_eq!(count(&agent, "POST", CANCEL), 3, "the shutdown leaves it");
    agent.forget_notifications();
    agent.spawn();
    agent.wait_notification("STATUS=connected").await;
    tokio::time::sleep(QUIET).await;
    assert_eq!(count(&agent, "POST", CANCEL), 3, "{}", agent.log());
    assert_eq!(agent.pending_ids().await, vec![second]);
    agent.finish().await;
}

#[tokio::test]
async fn a_timeout_cancel_meeting_5xx_is_sent_again_with_backoff_until_answered() {
    let mut agent = Agent::connected(Setup {
        payment_timeout: "1s",
        ..Setup::default()
    })
    .await;
    // More than the client's own attempts (1 + 4 retries): the agent must send it again.
    agent
        .sim
        .inject(Fault::new("POST", CANCEL, FaultKind::Status500).times(7));
    let id = agent.started(100).await;
    // The client's backoff and the agent's take a few seconds, well within WAIT.
    let cancelled = agent.next_cancelled().await;
    assert_eq!(cancelled, (id, CancelReason::Timeout));
    assert_eq!(count(&agent, "POST", CANCEL), 8, "7 answered 500, 1 taken");
    agent.finish().await;
}

fn unauthorized() -> FaultKind {
    refusal(401, 1, "Unauthorized", "Invalid api key.")
}

#[tokio::test]
async fn refused_keys_show_as_rejected_answer_sales_at_once_and_slow_the_reconnects() {
    let sim = ApiSimulator::start(Default::default()).unwrap();
    sim.inject(Fault::new("*", "/api/*", unauthorized()).always());
    let mut agent = Agent::start_with(sim, Setup::default()).await;
    agent.wait_notification("STATUS=rejected").await;
    let status = agent
        .status_until("status shows rejected", |s| s["connection"] == "rejected")
        .await;
    assert_eq!(status["rejection"]["http_status"], 401);
    assert!(status["rejection"]["message"]
        .as_str()
        .unwrap()
        .contains("Invalid api key."));

    let reply = agent.sale(Uuid::new_v4(), 100).await;
    let Reply::Error { code, message } = reply else {
        panic!("expected an error, got {reply:?}");
    };
    assert_eq!(code, ErrorCode::ApiRejected);
    assert!(message.contains("HTTP 401"), "{message}");
    assert_eq!(
        count(&agent, "POST", SALE),
        0,
        "nothing is sent while rejected"
    );

    let reconnect = agent.cli(&["reconnect"]).await;
    assert_eq!(reconnect.code, Some(1), "{reconnect:?}");
    assert!(reconnect.stderr.contains("HTTP 401"), "{reconnect:?}");
    let text = agent.cli(&["status"]).await;
    assert!(text.stdout.contains("rejected       HTTP 401"), "{text:?}");

    tokio::time::sleep(QUIET).await;
    // The start's attempt and the operator's: no other within the minute.
    assert_eq!(count(&agent, "POST", ESTABLISH), 2, "{}", agent.log());
    assert_eq!(
        agent
            .log()
            .matches("payment API connection rejected")
            .count(),
        1,
        "logged once per change"
    );

    agent.sim.clear_faults();
    let reconnect = agent.cli(&["reconnect"]).await;
    assert_eq!(reconnect.code, Some(0), "{reconnect:?}");
    assert_eq!(agent.status().await["connection"], "connected");
    assert!(agent.log().contains("accepts the agent again"));
    agent.started(100).await;
    agent.finish().await;
}

#[tokio::test]
async fn a_404_on_a_documented_path_is_a_wrong_base_url() {
    let sim = ApiSimulator::start(Default::default()).unwrap();
    sim.inject(
        Fault::new(
            "*",
            "/api/*",
            FaultKind::Reply {
                status: 404,
                body: String::new(),
            },
        )
        .always(),
    );
    let mut agent = Agent::start_with(
        sim,
        Setup {
            establish: false,
            ..Setup::default()
        },
    )
    .await;
    let status = agent
        .status_until("status shows rejected", |s| s["connection"] == "rejected")
        .await;
    assert_eq!(status["rejection"]["http_status"], 404);
    assert!(status["rejection"]["message"]
        .as_str()
        .unwrap()
        .contains("paywall.physical_api_url"));
    let cancel = agent.cli(&["cancel", &Uuid::new_v4().to_string()]).await;
    assert_ne!(cancel.code, Some(75), "{cancel:?}");
    let reconnect = agent.cli(&["reconnect"]).await;
    assert_eq!(reconnect.code, Some(1), "{reconnect:?}");
    assert!(
        reconnect.stderr.contains("physical_api_url"),
        "{reconnect:?}"
    );
    tokio::time::sleep(QUIET).await;
    assert_eq!(count(&agent, "PUT", RECONNECT), 2, "{}", agent.log());
    agent.finish().await;
}

#[tokio::test]
async fn keys_refused_while_connected_keep_the_cancel_marked_until_the_api_accepts_the_agent() {
    let mut agent = Agent::connected(Setup {
        payment_timeout: "2s",
        ..Setup::default()
    })
    .await;
    let id = agent.started(100).await;
    agent
        .sim
        .inject(Fault::new("*", "/api/*", unauthorized()).always());
    agent
        .status_until("the cancel meets 401", |s| s["connection"] == "rejected")
        .await;
    tokio::time::sleep(QUIET).await;
    assert_eq!(count(&agent, "POST", CANCEL), 1, "{}", agent.log());
    let status = agent.status().await;
    assert_eq!(status["pending"][0]["cancel_requested"], true);
    agent.sim.clear_faults();
    let reconnect = agent.cli(&["reconnect"]).await;
    assert_eq!(reconnect.code, Some(0), "{reconnect:?}");
    assert_eq!(agent.next_cancelled().await, (id, CancelReason::Timeout));
    agent.finish().await;
}

#[tokio::test]
async fn an_operators_reconnect_resolves_the_sale_intents_left() {
    let mut agent = Agent::connected(Setup::default()).await;
    agent.signal(Signal::SIGTERM);
    assert!(agent.wait_exit().await.success());
    // A sale whose answer an earlier run never saw: the API has it, state has only the intent.
    let code = Uuid::new_v4();
    let payment = agent.sim.create_payment_elsewhere(code, 700);
    {
        let mut store = StateStore::open(&agent.state_dir).unwrap();
        store
            .record_sale_intent(&code.to_string(), 700, 949, SystemTime::now())
            .unwrap();
        store.commit().durable().await.unwrap();
    }
    // The start's reconnect is refused in the envelope: the agent stays disconnected.
    agent.sim.inject(Fault::new(
        "PUT",
        RECONNECT,
        refusal(200, -1, "ConnectionNotActive", "Not now."),
    ));
    agent.forget_notifications();
    agent.spawn();
    agent.wait_notification("STATUS=disconnected").await;
    assert_eq!(
        agent.state_file()["sales"][code.to_string()]["stage"]["status"],
        "intent"
    );
    let reconnect = agent.cli(&["reconnect"]).await;
    assert_eq!(reconnect.code, Some(0), "{reconnect:?}");
    agent
        .status_until("the intent's payment is recovered", |s| {
            s["pending"].to_string().contains(&payment.to_string())
        })
        .await;
    agent.finish().await;
}

#[tokio::test]
async fn a_start_without_state_does_not_search_the_api() {
    // A payment pending at the API for this terminal, and no state file: the agent starts
    // empty and leaves it to an operator (docs/operations.md (Recovery) says why).
    let sim = ApiSimulator::start(Default::default()).unwrap();
    sim.create_payment_elsewhere(Uuid::new_v4(), 500);
    let mut agent = connected_with(sim).await;
    assert!(agent.pending_ids().await.is_empty());
    assert_eq!(count(&agent, "POST", "/api/payment/list"), 0);
    agent.finish().await;
}

async fn connected_with(sim: ApiSimulator) -> Agent {
    let mut agent = Agent::start_with(sim, Setup::default()).await;
    agent.wait_notification("STATUS=connected").await;
    agent
}

#[tokio::test]
async fn service_parameters_from_the_credential_reach_the_establish_request() {
    // The unit hands them over like the API keys: $CREDENTIALS_DIRECTORY/service_parameters.
    let credentials = tempfile::tempdir().unwrap();
    std::fs::write(
        credentials.path().join("service_parameters"),
        "password = \"from-the-credential\"\nMerchantNo = \"4711\"\n",
    )
    .unwrap();
    let agent = Agent::connected(Setup {
        extra_env: vec![(
            "CREDENTIALS_DIRECTORY",
            credentials.path().display().to_string(),
        )],
        ..Setup::default()
    })
    .await;
    let establish = agent.sim.requests_to("POST", ESTABLISH);
    let body = establish[0].body.clone().unwrap();
    // The credential's value wins over the configuration file's for the same name.
    assert_eq!(body["ServiceParameters"]["password"], "from-the-credential");
    assert_eq!(body["ServiceParameters"]["MerchantNo"], "4711");
    assert!(!agent.log().contains("from-the-credential"));
    agent.finish().await;
}

#[tokio::test]
async fn a_cancel_answered_with_another_4xx_is_flagged_and_the_operator_exits_1() {
    let mut agent = Agent::connected(Setup::default()).await;
    let id = agent.started(100).await;
    agent.sim.inject(
        Fault::new(
            "POST",
            CANCEL,
            FaultKind::Reply {
                status: 400,
                body: String::new(),
            },
        )
        .always(),
    );
    let cancel = agent.cli(&["cancel", &id]).await;
    assert_eq!(cancel.code, Some(1), "{cancel:?}");
    assert!(cancel.stderr.contains("HTTP 400"), "{cancel:?}");
    let status = agent.status().await;
    assert!(status["pending"][0]["cancel_refused"]
        .as_str()
        .unwrap()
        .contains("HTTP 400"));
    assert_eq!(count(&agent, "POST", CANCEL), 1, "a 400 is not retried");
    agent.finish().await;
}

/// An amount the payment API client cannot encode exactly is the terminal's error, named as
/// such (`invalid_request`, naming `amount_minor`), not an outage: nothing is written, nothing
/// sent, and the next sale goes through.
#[tokio::test]
async fn an_amount_too_large_to_encode_is_an_invalid_request_naming_the_field() {
    let mut agent = Agent::connected(Setup::default()).await;
    for amount in [1_000_000_000_000_000, u64::MAX] {
        let reply = agent.sale(Uuid::new_v4(), amount).await;
        let Reply::Error { code, message } = reply else {
            panic!("expected an error, got {reply:?}");
        };
        assert_eq!(code, ErrorCode::InvalidRequest, "{message}");
        assert!(message.contains("amount_minor"), "{message}");
        assert!(message.contains("999999999999999"), "{message}");
    }
    assert_eq!(count(&agent, "POST", SALE), 0, "nothing is sent");
    agent.started(999_999_999_999_999).await;
    agent.finish().await;
}

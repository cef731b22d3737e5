//! Two sales of the core racing something else on the same merchant code, with the real
//! daemon over a pty pair, the payment API simulator and real state files: the terminal's
//! answer always says what the durable state holds (docs/serial-protocol.md, "Sale replies";
//! docs/state.md, "Recovery rules at start").

use crate::support;

use std::time::{Duration, SystemTime};

use crate::support::daemon::{Agent, Setup};
use crate::support::paths::SALE;
use crate::support::WAIT;
use nix::sys::signal::Signal;
use pos_agent::paywall::PaymentStatus;
use pos_agent::serial::message::Reply;
use pos_agent::simulator::api::{ApiSimulator, Fault, FaultKind, SimulatorOptions};
use pos_agent::state::StateStore;
use uuid::Uuid;

const LIST: &str = "/api/payment/list";

/// The sale's stage in the state file, as JSON.
fn stage(agent: &Agent, code: Uuid) -> serde_json::Value {
    agent.state_file()["sales"][code.to_string()]["stage"].clone()
}

#[tokio::test]
async fn a_sale_for_a_code_whose_leftover_intent_is_being_resolved_waits_for_the_resolution() {
    // The simulator's delays below stay within the client's request timeout.
    let sim = ApiSimulator::start(SimulatorOptions::default()).unwrap();
    let paywall = sim
        .paywall_config_section()
        .replace("request_timeout = \"2s\"", "request_timeout = \"20s\"");
    assert!(paywall.contains("request_timeout = \"20s\""), "{paywall}");
    let setup = Setup {
        paywall_toml: Some(paywall),
        ..Setup::default()
    };
    let mut agent = Agent::start_with(sim, setup).await;
    agent.wait_notification("STATUS=connected").await;
    agent.signal(Signal::SIGTERM);
    assert!(agent.wait_exit().await.success());
    // An earlier run wrote the intent and never sent the sale: the API holds nothing with it.
    let code = Uuid::new_v4();
    {
        let mut store = StateStore::open(&agent.state_dir).unwrap();
        store
            .record_sale_intent(&code.to_string(), 700, 949, SystemTime::now())
            .unwrap();
        store.commit().durable().await.unwrap();
    }
    // The start's lookup of that intent is slow; the terminal's sale with the same code
    // arrives meanwhile. Its own request is slow too, so that, without the code claimed by
    // the resolution, the resolution forgets the intent while that request is out, and the
    // payment it creates is cancelled and the sale refused.
    agent
        .sim
        .inject(Fault::new("POST", LIST, FaultKind::Latency(Duration::from_secs(4))).times(1));
    agent
        .sim
        .inject(Fault::new("POST", SALE, FaultKind::Latency(Duration::from_secs(6))).times(1));
    agent.forget_notifications();
    agent.spawn();
    agent
        .sim
        .wait_for_request(|r| r.is("POST", LIST), WAIT)
        .await
        .expect("the start looks the leftover intent up");
    let reply = agent.sale(code, 700).await;
    let Reply::SaleStarted {
        payment_request_id, ..
    } = reply
    else {
        panic!(
            "the sale must start once the intent is resolved, got {reply:?}\nlog:\n{}",
            agent.log()
        );
    };
    let id: Uuid = payment_request_id.parse().unwrap();
    let payment = agent.sim.payment(id).expect("the simulator holds it");
    assert_eq!(payment.merchant_unique_code, code);
    assert_ne!(payment.status, PaymentStatus::CANCELLED, "{payment:?}");
    assert_eq!(
        stage(&agent, code),
        serde_json::json!({"status": "started", "payment_request_id": payment_request_id})
    );
    assert_eq!(agent.pending_ids().await, vec![payment_request_id]);
    let sales = agent.sim.requests_to("POST", SALE).len();
    assert_eq!(
        sales,
        1,
        "one sale request for the code\nlog:\n{}",
        agent.log()
    );
    agent.finish().await;
}

#[tokio::test]
async fn a_deadline_during_the_payment_ids_sync_answers_the_id_the_state_holds() {
    // Every sync takes 2 s: the intent is durable 2 s into the sale, the API answers at once,
    // and the deadline (3 s) falls while the PaymentRequestId's record is being synced.
    if std::env::var_os("POS_AGENT_TEST_RUNNER").is_some() {
        // The shim is a host library: an emulated daemon's syncs cannot be slowed, so the
        // deadline would never fall during one and the test would prove nothing.
        eprintln!(
            "skipped under emulation (POS_AGENT_TEST_RUNNER is set): storage cannot be slowed"
        );
        return;
    }
    let mut agent = Agent::start(Setup {
        sale_reply_deadline: "3s",
        extra_env: support::slow_fsync::env(2000),
        ..Setup::default()
    })
    .await;
    agent.wait_notification("STATUS=connected").await;
    // The journal's first append also syncs the directory (a new file): make the journal
    // exist first, so that the sale's intent costs one sync.
    agent.signal(Signal::SIGKILL);
    agent.wait_exit().await;
    {
        let mut store = StateStore::open(&agent.state_dir).unwrap();
        let other = Uuid::new_v4().to_string();
        store
            .record_sale_intent(&other, 100, 949, SystemTime::now())
            .unwrap();
        store.forget_sale_intent(&other).unwrap();
        store.commit().durable().await.unwrap();
        assert!(store.journal_file().exists());
    }
    agent.forget_notifications();
    agent.spawn();
    agent.wait_notification("STATUS=connected").await;
    let code = Uuid::new_v4();
    let sent = std::time::Instant::now();
    let reply = agent.sale(code, 1250).await;
    let took = sent.elapsed();
    let Reply::SaleStarted {
        payment_request_id, ..
    } = reply
    else {
        panic!(
            "the payment's id was being made durable at the deadline: the terminal must hear it, got {reply:?}\nlog:\n{}",
            agent.log()
        );
    };
    let created = agent.sim.payments();
    assert_eq!(created.len(), 1, "{created:?}");
    assert_eq!(
        created[0].payment_request_id.to_string(),
        payment_request_id
    );
    assert_ne!(created[0].status, PaymentStatus::CANCELLED);
    assert_eq!(
        stage(&agent, code),
        serde_json::json!({"status": "started", "payment_request_id": payment_request_id})
    );
    let log = agent.log();
    assert!(
        took > Duration::from_secs(3),
        "the deadline must have passed before the reply, or this test proves nothing: {took:?}\n{log}"
    );
    assert!(!log.contains(&format!("sale {code} abandoned")), "{log}");
    // What the terminal heard survives a kill.
    agent.signal(Signal::SIGKILL);
    agent.wait_exit().await;
    assert_eq!(
        stage(&agent, code),
        serde_json::json!({"status": "started", "payment_request_id": payment_request_id})
    );
    agent.finish().await;
}

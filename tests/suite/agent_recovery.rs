//! The agent daemon after a kill, a power cut or a restart (docs/architecture.md, docs/state.md):
//! nothing lost, nothing sold twice, cancels left over sent at the next start.
//!
//! Each test runs the real binary as a process, with a pseudo-terminal pair and the terminal
//! simulator on it, the payment API simulator on loopback, real state files and real signals. The
//! agent's other behaviours are beside this file: `agent_startup`, `agent_sales`,
//! `agent_shutdown`, `agent_recovery`.

use nix::sys::signal::Signal;
use pos_agent::paywall::PaymentStatus;
use pos_agent::serial::message::{AgentReadiness, Reply, SaleOrder, TerminalRequest};
use pos_agent::simulator::api::{Fault, FaultKind};
use uuid::Uuid;

use crate::support;
use crate::support::daemon::{agent_state, body, Agent, Setup};
use crate::support::paths::{CANCEL, SALE};
use crate::support::WAIT;

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

//! A terminal that floods the agent with requests gets an answer to every one of them
//! (docs/serial-protocol.md §5): beyond the 32 requests in progress, `error busy` at once,
//! nothing done, and the same request sent again is taken once there is room.
//!
//! The real binary as a process, a pty pair with the terminal simulator, the payment API
//! simulator on loopback answering every sale 1.5 s late, so that the sales stay in progress.

use std::num::NonZeroU64;
use std::time::Duration;

use crate::support::daemon::{Agent, Setup};
use crate::support::paths::SALE;
use crate::support::WAIT;
use futures_util::future::join_all;
use pos_agent::serial::message::{ErrorCode, Reply};
use pos_agent::simulator::api::{ApiSimulator, Fault, FaultKind, SimulatorOptions};
use uuid::Uuid;

#[tokio::test]
async fn every_request_of_a_flooding_terminal_is_answered_and_one_turned_away_is_taken_again() {
    let sim = ApiSimulator::start(SimulatorOptions::default()).unwrap();
    sim.inject(
        Fault::new(
            "POST",
            SALE,
            FaultKind::Latency(Duration::from_millis(1500)),
        )
        .always(),
    );
    let mut agent = Agent::start_with(sim, Setup::default()).await;
    agent.wait_notification("STATUS=connected").await;

    let codes: Vec<Uuid> = (0..40).map(|_| Uuid::new_v4()).collect();
    let amount = NonZeroU64::new(2250).unwrap();
    let terminal = &agent.terminal;
    let replies = tokio::time::timeout(
        WAIT,
        join_all(codes.iter().map(|code| terminal.sale(*code, amount))),
    )
    .await
    .expect("every sale is answered");
    let mut busy = Vec::new();
    let mut started = 0;
    for (code, reply) in codes.iter().zip(replies) {
        match reply.expect("answered, not lost") {
            Reply::SaleStarted { .. } => started += 1,
            Reply::Error {
                code: ErrorCode::Busy,
                message,
            } => {
                assert!(message.contains("nothing was done"), "{message}");
                busy.push(*code);
            }
            other => panic!("unexpected reply {other:?}"),
        }
    }
    assert!(!busy.is_empty(), "the flood went beyond the bound");
    assert!(started >= 32, "{started} sales started");
    assert_eq!(started + busy.len(), codes.len());
    // Turned away means nothing was done: the same sale asked again now starts.
    let again = agent.sale(busy[0], 2250).await;
    assert!(matches!(again, Reply::SaleStarted { .. }), "{again:?}");
    let status = agent.terminal.status().await;
    assert!(matches!(status, Ok(Reply::Status { .. })), "{status:?}");
    agent.finish().await;
}

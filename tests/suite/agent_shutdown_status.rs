//! What `systemctl status` shows while the agent stops (docs/deployment.md, "What an operator
//! sees"): `STATUS=` counts down what is left to cancel. The real binary, a real notify socket,
//! the payment API simulator slowing one cancel down.

use std::time::Duration;

use crate::support::daemon::{Agent, Setup};
use nix::sys::signal::Signal;
use pos_agent::simulator::api::{Fault, FaultKind};

#[tokio::test]
async fn status_counts_down_what_is_left_to_cancel_during_the_shutdown() {
    let mut agent = Agent::start(Setup::default()).await;
    agent.wait_notification("STATUS=connected").await;
    agent.started(100).await;
    agent.started(200).await;
    agent
        .wait_notification("STATUS=connected · terminal up · 2 pending")
        .await;
    // One of the two cancels is answered late, so the count is seen going down by one.
    agent.sim.inject(Fault::new(
        "POST",
        "/api/payment/async/cancel",
        FaultKind::Latency(Duration::from_millis(1500)),
    ));
    agent.signal(Signal::SIGTERM);
    agent
        .wait_notification("STATUS=stopping · 2 left to cancel · connected · terminal up")
        .await;
    agent
        .wait_notification("STATUS=stopping · 1 left to cancel")
        .await;
    agent
        .wait_notification("STATUS=stopping · 0 left to cancel")
        .await;
    assert!(agent.wait_exit().await.success());
    let statuses: Vec<&String> = agent
        .notifications()
        .iter()
        .filter(|n| n.starts_with("STATUS=stopping"))
        .collect();
    assert!(statuses.len() >= 3, "{statuses:?}");
    agent.finish().await;
}

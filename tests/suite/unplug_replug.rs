//! Unplugging the terminal's serial adapter and plugging it in again (docs/deployment.md
//! (The serial device: stable names), docs/serial-protocol.md §4): the real daemon on a
//! pty pair behind a `/dev/serial/by-id`-style symlink; the pair is torn down, the symlink
//! removed, and a new pair (another `/dev/pts/N`) appears behind the same name while a payment
//! is pending. The link comes back, the payment is still pending, and `status` counts the
//! reopen and names the last error, and the metrics count it.

use crate::support::daemon::{Agent, Setup};
use crate::support::WAIT;
use pos_agent::serial::message::{PaymentResultStatus, Reply, TerminalRequest};
use uuid::Uuid;

fn port(status: &serde_json::Value) -> &serde_json::Value {
    &status["serial_port"]
}

fn last_error(status: &serde_json::Value) -> &str {
    port(status)["last_error"].as_str().unwrap_or_default()
}

#[tokio::test]
async fn a_payment_pending_across_an_unplug_and_replug_stays_pending_and_the_link_comes_back() {
    let mut agent = Agent::start(Setup::default()).await;
    agent.wait_notification("STATUS=connected").await;
    let id = agent.started(1250).await;
    let before = agent
        .status_until("the link up", |s| s["terminal_link"] == "up")
        .await;
    assert_eq!(port(&before)["reopens"], 0, "{before}");
    assert_eq!(port(&before)["open"], true, "{before}");
    assert!(port(&before)["last_error"].is_null(), "{before}");

    agent.unplug();
    let device = agent.device_link().display().to_string();
    let unplugged = agent
        .status_until("the unplug noticed and the reopen refused", |s| {
            s["terminal_link"] == "down" && last_error(s).starts_with("cannot open")
        })
        .await;
    assert!(last_error(&unplugged).contains(&device), "{unplugged}");
    assert!(port(&unplugged)["last_error_at"].is_string(), "{unplugged}");
    assert_eq!(port(&unplugged)["open"], false, "{unplugged}");
    assert_eq!(agent.pending_ids().await, vec![id.clone()]);

    agent.replug();
    tokio::time::timeout(WAIT, agent.terminal.wait_until_up())
        .await
        .unwrap_or_else(|_| panic!("the link did not come back; log:\n{}", agent.log()));
    let replugged = agent
        .status_until("the reopen counted", |s| {
            s["terminal_link"] == "up" && s["serial_port"]["reopens"] == 1
        })
        .await;
    assert!(
        last_error(&replugged).starts_with("cannot open"),
        "{replugged}"
    );
    assert_eq!(port(&replugged)["open"], true, "{replugged}");
    assert_eq!(agent.pending_ids().await, vec![id.clone()]);
    let text = agent.cli(&["status"]).await;
    assert!(
        text.stdout
            .contains("serial port    open, reopened 1 time; last error at "),
        "{text:?}"
    );
    let metrics = agent.cli(&["metrics"]).await;
    assert!(
        metrics
            .stdout
            .lines()
            .any(|line| line == "pos_agent_serial_port_reopens_total 1"),
        "{metrics:?}"
    );

    // The terminal on the new device finishes the payment and sells again.
    let result = TerminalRequest::PaymentResult {
        payment_request_id: id.clone(),
        status: PaymentResultStatus::Succeeded,
    };
    assert_eq!(agent.terminal.request(result).await.unwrap(), Reply::OK);
    assert!(agent.pending_ids().await.is_empty());
    let next = agent.sale(Uuid::new_v4(), 700).await;
    assert!(matches!(next, Reply::SaleStarted { .. }), "{next:?}");
    agent.finish().await;
}

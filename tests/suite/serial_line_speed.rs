//! The whole daemon on a line that runs at the speeds terminals really use (9600 and 19200 baud,
//! and 115200), through the line-speed emulator of `support::line`: a `status` whose reply fills
//! the APDU (seconds on the wire at 9600 baud), a sale sent while that reply is still on the
//! wire, an operator's cancel told to the terminal as `payment_cancelled`, and the terminal's
//! cancel of every pending payment (another full APDU). Every reply arrives, the link stays up
//! on both ends, and the tap on the line sees no frame twice (docs/serial-protocol.md, "Time on
//! the wire").

use crate::support::daemon::{Agent, Setup};
use crate::support::WAIT;
use pos_agent::serial::message::{
    AgentReadiness, AgentRequest, CancelReason, Reply, TerminalRequest,
};
use pos_agent::serial::LinkState;

/// Enough pending payments for `status` and a cancel-all to fill the 4096-byte APDU (about 100
/// ids fit).
const PENDING: usize = 120;

/// Waits until the agent has told the terminal it is ready and has the terminal's `ok` to that
/// acknowledged: nothing is in flight either way, so the terminal's next request leaves at once.
async fn settled(agent: &mut Agent) {
    agent
        .notification(|n| {
            matches!(
                n,
                AgentRequest::AgentState {
                    state: AgentReadiness::Ready,
                    ..
                }
            )
            .then_some(())
        })
        .await;
    agent
        .line()
        .wait_until("the terminal's ok to agent_state acknowledged", |tap| {
            tap.to_agent.frames.last().is_some_and(|ok| {
                ok.json()["type"] == "ok"
                    && tap.to_terminal.last_ack.is_some_and(|ack| ack > ok.ended)
            })
        })
        .await;
}

async fn answers_at(baud_rate: u32) {
    let mut agent = Agent::connected(Setup {
        baud_rate: Some(baud_rate),
        ..Setup::default()
    })
    .await;
    agent.terminal.wait_until_up().await;
    settled(&mut agent).await;
    agent.line().forget_crossed();
    let pending = agent.restart_with_pending(PENDING).await;
    settled(&mut agent).await;
    let log_before = agent.log().len();

    // The largest reply, and a sale started while it is on the wire.
    let terminal = agent.terminal.link().clone();
    let status = tokio::spawn(async move { terminal.request(TerminalRequest::Status).await });
    agent
        .line()
        .wait_until("the status reply on the wire", |tap| {
            tap.to_terminal
                .on_the_wire
                .is_some_and(|(_, bytes)| bytes >= 256)
        })
        .await;
    let sale_id = agent.started(2250).await;
    match tokio::time::timeout(WAIT, status).await {
        Ok(Ok(Ok(Reply::Status {
            pending: ids,
            pending_count,
            truncated,
            ..
        }))) => {
            // Answered when the request came, before the sale.
            assert_eq!((pending_count, truncated), (PENDING, true));
            assert!(ids.len() > 90, "{} ids", ids.len());
            assert!(ids.iter().all(|id| pending.contains(id)));
        }
        other => panic!("expected status, got {other:?}\nlog:\n{}", agent.log()),
    }
    let tap = agent.line().tap();
    let reply = tap
        .to_terminal
        .first_of_type("status")
        .expect("status reply");
    assert!(reply.apdu.len() > 4000, "{} bytes", reply.apdu.len());
    let sale = tap.to_agent.first_of_type("sale").expect("sale request");
    assert!(
        sale.ended > reply.started && sale.ended < reply.ended,
        "the sale did not arrive while the status reply was on the wire"
    );

    // An operator's cancel: the terminal hears `payment_cancelled`.
    let cancelled = agent.cli(&["cancel", &sale_id]).await;
    assert_eq!(cancelled.code, Some(0), "{cancelled:?}");
    assert_eq!(
        agent.next_cancelled().await,
        (sale_id.clone(), CancelReason::Operator)
    );

    // The terminal cancels every pending payment: another full APDU back.
    let (ids, cancelled_count, truncated) = agent.terminal_cancel_all().await;
    assert_eq!((cancelled_count, truncated), (PENDING, true));
    assert!(ids.len() > 90, "{} ids", ids.len());
    let tap = agent.line().tap();
    let reply = tap.to_terminal.first_of_type("cancelled").expect("reply");
    assert!(reply.apdu.len() > 4000, "{} bytes", reply.apdu.len());

    // The link stayed up on both ends and nothing was sent twice.
    assert_eq!(agent.terminal.link().state(), LinkState::Up);
    let status = agent.status().await;
    assert_eq!(status["terminal_link"], "up", "{status}");
    assert!(status["pending"].as_array().unwrap().is_empty(), "{status}");
    agent.line().assert_clean();
    let log = agent.log().split_off(log_before);
    for trouble in [
        "resending frame",
        "serial link down:",
        "ACK/NAK with no frame awaiting it",
    ] {
        assert!(!log.contains(trouble), "{trouble:?} in the log:\n{log}");
    }
    agent.finish().await;
}

#[tokio::test]
async fn every_reply_arrives_once_at_9600_baud() {
    answers_at(9600).await;
}

#[tokio::test]
async fn every_reply_arrives_once_at_19200_baud() {
    answers_at(19_200).await;
}

#[tokio::test]
async fn every_reply_arrives_once_at_115200_baud() {
    answers_at(115_200).await;
}

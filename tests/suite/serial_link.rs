//! The link layer over real pseudo-terminal pairs: the agent's link opens the slave path through
//! the real port code, the terminal side is either the terminal simulator or a raw byte-level
//! terminal on the master that can inject noise, bad CRCs, lost ACKs and cut frames.

use std::time::Duration;

use crate::support::serial::*;
use crate::support::WAIT;
use pos_agent::serial::codec::Inbound;
use pos_agent::serial::frame::{frame_bytes, NAK};
use pos_agent::serial::{
    AgentRequest, CancelReason, LinkError, LinkEvent, LinkState, Reply, TerminalRequest,
};
use pos_agent::simulator::terminal::TerminalSimulator;
use pos_agent::simulator::virtual_serial::VirtualSerial;

const SALE_7: &[u8] = br#"{"type":"sale","id":7,"merchant_unique_code":"6f1c1a7e-3b7f-4d0e-9a51-0f2b7c3d9e10","amount_minor":2250}"#;

async fn raw_pair() -> (RawTerminal, pos_agent::serial::LinkHandle, AgentEvents) {
    let line = VirtualSerial::open().unwrap();
    let (agent, events) = agent_on(line.slave_path(), quick_settings());
    let mut raw = RawTerminal::new(line);
    raw.handshake().await;
    (raw, agent, events)
}

#[tokio::test]
async fn requests_round_trip_both_ways_between_agent_and_terminal_simulator() {
    let line = VirtualSerial::open().unwrap();
    let (agent, mut events) = agent_on(line.slave_path(), quick_settings());
    let mut terminal = TerminalSimulator::over(line, quick_settings());

    assert!(matches!(next_event(&mut events).await, LinkEvent::Up));
    let agent_side = tokio::spawn(async move {
        let request = next_request(&mut events).await;
        assert_eq!(request.request(), &TerminalRequest::Status);
        request.reply(Reply::status(
            Some("conn-1".into()),
            true,
            vec!["pr-9".into()],
        ));
        events
    });
    let reply = terminal.status().await.unwrap();
    assert_eq!(
        reply,
        Reply::status(Some("conn-1".into()), true, vec!["pr-9".into()])
    );
    agent_side.await.unwrap();

    let cancelled = AgentRequest::PaymentCancelled {
        payment_request_id: "pr-9".into(),
        reason: CancelReason::Operator,
    };
    assert_eq!(agent.request(cancelled.clone()).await.unwrap(), Reply::OK);
    let seen = terminal.next_notification().await.unwrap();
    assert_eq!(seen.request, cancelled);
    assert_eq!(agent.state(), LinkState::Up);
}

#[tokio::test]
async fn noise_between_frames_is_dropped_and_the_frame_after_it_is_delivered() {
    let (mut raw, _agent, mut events) = raw_pair().await;
    raw.write(&[0x00, 0xFF, 0x10, 0x41, 0x13, 0x11, 0x0D, 0x0A, 0x03, 0x7B])
        .await;
    raw.send_frame(br#"{"type":"status","id":1}"#).await;
    assert_eq!(raw.next().await, Inbound::Ack);
    let request = next_request(&mut events).await;
    assert_eq!(
        (request.id(), request.request()),
        (1, &TerminalRequest::Status)
    );
    request.reply(Reply::Pong);
    let reply = raw.next_json().await;
    assert_eq!(
        (reply["type"].as_str(), reply["re"].as_u64()),
        (Some("pong"), Some(1))
    );
}

#[tokio::test]
async fn corrupted_crc_is_answered_with_nak_and_the_resent_frame_is_delivered_once() {
    let (mut raw, _agent, mut events) = raw_pair().await;
    let good = frame_bytes(SALE_7).unwrap();
    let mut bad = good.clone();
    let last = bad.len() - 1;
    bad[last] ^= 0x5A;
    raw.write(&bad).await;
    assert_eq!(raw.next().await, Inbound::Nak);
    raw.write(&good).await;
    assert_eq!(raw.next().await, Inbound::Ack);

    let request = next_request(&mut events).await;
    assert_eq!(request.id(), 7);
    assert!(matches!(request.request(), TerminalRequest::Sale(_)));
    request.reply(Reply::OK);
    assert_eq!(raw.next_json().await["re"], 7);
    raw.ack().await;

    raw.send_frame(br#"{"type":"status","id":8}"#).await;
    assert_eq!(raw.next().await, Inbound::Ack);
    assert_eq!(
        next_request(&mut events).await.id(),
        8,
        "the sale came twice"
    );
}

#[tokio::test]
async fn agent_resends_the_same_frame_after_a_nak() {
    let (mut raw, agent, _events) = raw_pair().await;
    let request = tokio::spawn(async move {
        agent
            .request(AgentRequest::PaymentCancelled {
                payment_request_id: "pr-1".into(),
                reason: CancelReason::Shutdown,
            })
            .await
    });
    let first = match raw.next().await {
        Inbound::Frame(apdu) => apdu,
        other => panic!("expected a frame, got {other:?}"),
    };
    raw.write(&[NAK]).await;
    let second = match raw.next().await {
        Inbound::Frame(apdu) => apdu,
        other => panic!("expected the frame again, got {other:?}"),
    };
    assert_eq!(first, second);
    raw.ack().await;
    let sent: serde_json::Value = serde_json::from_slice(&first).unwrap();
    assert_eq!(sent["type"], "payment_cancelled");
    raw.send_frame(format!(r#"{{"type":"ok","re":{}}}"#, sent["id"]).as_bytes())
        .await;
    assert_eq!(raw.next().await, Inbound::Ack);
    assert_eq!(request.await.unwrap(), Ok(Reply::OK));
}

#[tokio::test]
async fn duplicate_after_a_lost_ack_is_not_delivered_twice_and_gets_the_stored_reply() {
    let (mut raw, _agent, mut events) = raw_pair().await;
    raw.send_frame(SALE_7).await;
    assert_eq!(raw.next().await, Inbound::Ack);
    // The terminal "lost" that ACK and sends the frame again while the sale is being handled.
    raw.send_frame(SALE_7).await;
    assert_eq!(raw.next().await, Inbound::Ack);

    let request = next_request(&mut events).await;
    assert_eq!(request.id(), 7);
    request.reply(Reply::SaleStarted {
        payment_request_id: "pr-77".into(),
        merchant_unique_code: "6f1c1a7e-3b7f-4d0e-9a51-0f2b7c3d9e10".parse().unwrap(),
    });
    let first_reply = match raw.next().await {
        Inbound::Frame(apdu) => apdu,
        other => panic!("expected the reply, got {other:?}"),
    };
    raw.ack().await;

    // Once more after the answer: the stored reply comes back, byte for byte.
    raw.send_frame(SALE_7).await;
    assert_eq!(raw.next().await, Inbound::Ack);
    assert_eq!(raw.next().await, Inbound::Frame(first_reply.clone()));
    raw.ack().await;
    let reply: serde_json::Value = serde_json::from_slice(&first_reply).unwrap();
    assert_eq!(reply["payment_request_id"], "pr-77");
    assert_eq!(reply["re"], 7);

    raw.send_frame(br#"{"type":"status","id":8}"#).await;
    assert_eq!(raw.next().await, Inbound::Ack);
    assert_eq!(
        next_request(&mut events).await.id(),
        8,
        "the sale came twice"
    );
}

#[tokio::test]
async fn same_id_with_different_content_is_a_new_request_not_a_replay() {
    let (mut raw, _agent, mut events) = raw_pair().await;
    raw.send_frame(br#"{"type":"status","id":3}"#).await;
    assert_eq!(raw.next().await, Inbound::Ack);
    next_request(&mut events).await.reply(Reply::Pong);
    assert_eq!(raw.next_json().await["type"], "pong");
    raw.ack().await;

    raw.send_frame(br#"{"type":"cancel","id":3}"#).await;
    assert_eq!(raw.next().await, Inbound::Ack);
    let request = next_request(&mut events).await;
    assert_eq!(
        request.request(),
        &TerminalRequest::Cancel {
            payment_request_id: None
        }
    );
}

#[tokio::test]
async fn terminal_hears_the_agent_again_after_it_restarts_on_the_open_line() {
    // The terminal keeps its end open while the agent process restarts: the new agent counts
    // from 1 again (probe `ping` 1, then `agent_state` 2), exactly as the previous one did, and
    // the terminal's link session (and replay cache) did not end in between.
    let line = VirtualSerial::open().unwrap();
    let device = line.slave_path().to_path_buf();
    let mut terminal = TerminalSimulator::over(line, quick_settings());
    let ready = AgentRequest::ready();
    for run in 0..3 {
        let (agent, _events) = agent_on(&device, quick_settings());
        tokio::time::timeout(WAIT, agent.wait_for_state(LinkState::Up))
            .await
            .expect("the link comes up");
        assert_eq!(
            agent.request(ready.clone()).await,
            Ok(Reply::Ok(TerminalSimulator::identity()))
        );
        // The simulator records a notification before it answers it, so it is there by now.
        let heard = tokio::time::timeout(WAIT, terminal.next_notification())
            .await
            .unwrap_or_else(|_| panic!("agent run {run}: the terminal never heard `ready`"))
            .expect("the terminal's link ended");
        assert_eq!(heard.request, ready, "agent run {run}");
        agent.shutdown();
        agent.wait_for_state(LinkState::Closed).await;
    }
    assert_eq!(terminal.link().state(), LinkState::Up);
}

#[tokio::test]
async fn terminal_that_restarts_and_counts_from_1_again_gets_fresh_answers() {
    let (mut raw, _agent, mut events) = raw_pair().await;
    let status_1 = br#"{"type":"status","id":1}"#;
    for (id, apdu) in [(1, &status_1[..]), (2, br#"{"type":"status","id":2}"#)] {
        raw.send_frame(apdu).await;
        assert_eq!(raw.next().await, Inbound::Ack);
        let request = next_request(&mut events).await;
        assert_eq!(request.id(), id);
        request.reply(Reply::status(Some("before".into()), true, vec![]));
        assert_eq!(raw.next_json().await["re"], id);
        raw.ack().await;
    }
    // Id 1 again, after id 2: not a retransmission (stop-and-wait), so the terminal restarted.
    // It gets a fresh answer, not the stored one of its previous run.
    raw.send_frame(status_1).await;
    assert_eq!(raw.next().await, Inbound::Ack);
    let request = next_request(&mut events).await;
    assert_eq!(
        (request.id(), request.request()),
        (1, &TerminalRequest::Status)
    );
    request.reply(Reply::status(Some("after".into()), true, vec![]));
    let reply = raw.next_json().await;
    assert_eq!(
        (reply["connection_id"].as_str(), reply["re"].as_u64()),
        (Some("after"), Some(1))
    );
}

#[tokio::test]
async fn frame_cut_off_mid_way_is_dropped_after_the_inter_byte_timeout() {
    let (mut raw, _agent, mut events) = raw_pair().await;
    let cut = frame_bytes(br#"{"type":"sale","id":1,"merchant_unique_code":"6f1c1a7e-3b7f-4d0e-9a51-0f2b7c3d9e10","amount_minor":2250}"#).unwrap();
    let (head, tail) = cut.split_at(20);
    raw.write(head).await;
    // The stimulus: a pause of five times T1 inside the frame.
    tokio::time::sleep(Duration::from_secs(1)).await;
    raw.write(tail).await;
    raw.send_frame(br#"{"type":"status","id":2}"#).await;

    assert_eq!(
        raw.next().await,
        Inbound::Ack,
        "the tail must not complete the cut frame"
    );
    let request = next_request(&mut events).await;
    assert_eq!(request.id(), 2, "the cut-off sale was delivered");
    request.reply(Reply::Pong);
    assert_eq!(raw.next_json().await["re"], 2);
}

#[tokio::test]
async fn frame_unacknowledged_after_max_sends_fails_and_the_link_goes_down() {
    let (mut raw, agent, mut events) = raw_pair().await;
    assert!(matches!(next_event(&mut events).await, LinkEvent::Up));
    let sender = agent.clone();
    let request = tokio::spawn(async move { sender.request(AgentRequest::ready()).await });
    let mut copies = Vec::new();
    for _ in 0..3 {
        match raw.next().await {
            Inbound::Frame(apdu) => copies.push(apdu),
            other => panic!("expected a frame, got {other:?}"),
        }
    }
    assert!(copies.iter().all(|c| c == &copies[0]));
    assert_eq!(request.await.unwrap(), Err(LinkError::NotAcknowledged));
    assert!(matches!(next_event(&mut events).await, LinkEvent::Down));
    assert_eq!(agent.state(), LinkState::Down);
    assert_eq!(
        raw.next_within(Duration::from_millis(1500)).await,
        None,
        "a fourth send"
    );

    // The terminal speaks again: the link comes back up.
    raw.send_frame(br#"{"type":"status","id":40}"#).await;
    assert_eq!(raw.next().await, Inbound::Ack);
    assert!(matches!(next_event(&mut events).await, LinkEvent::Up));
}

#[tokio::test]
async fn three_unanswered_pings_take_the_link_down() {
    let line = VirtualSerial::open().unwrap();
    let settings = pos_agent::serial::LinkSettings {
        ping_interval: Duration::from_millis(300),
        ..quick_settings()
    };
    let (agent, mut events) = agent_on(line.slave_path(), settings);
    let mut raw = RawTerminal::new(line);
    raw.handshake().await;
    assert!(matches!(next_event(&mut events).await, LinkEvent::Up));

    // ACK every ping (the line works) but never answer one.
    let watcher = tokio::spawn(async move {
        let mut pings = 0;
        loop {
            match raw.next().await {
                Inbound::Frame(apdu) => {
                    let json: serde_json::Value = serde_json::from_slice(&apdu).unwrap();
                    assert_eq!(json["type"], "ping");
                    pings += 1;
                    raw.ack().await;
                }
                other => panic!("unexpected {other:?}"),
            }
            if pings == 4 {
                return pings;
            }
        }
    });
    assert!(matches!(next_event(&mut events).await, LinkEvent::Down));
    assert_eq!(agent.state(), LinkState::Down);
    assert!(watcher.await.unwrap() >= 3);
}

#[tokio::test]
async fn unknown_type_or_missing_field_get_invalid_request_and_no_id_gets_nothing() {
    let (mut raw, _agent, mut events) = raw_pair().await;
    for (apdu, id) in [
        (&br#"{"type":"launch_rocket","id":3}"#[..], 3),
        (&br#"{"type":"sale","id":4,"amount_minor":100}"#[..], 4),
    ] {
        raw.send_frame(apdu).await;
        assert_eq!(raw.next().await, Inbound::Ack);
        let reply = raw.next_json().await;
        raw.ack().await;
        assert_eq!(reply["type"], "error");
        assert_eq!(reply["code"], "invalid_request");
        assert_eq!(reply["re"], id);
    }
    raw.send_frame(br#"{"type":"status"}"#).await;
    assert_eq!(raw.next().await, Inbound::Ack);
    raw.send_frame(br#"{"type":"status","id":5,"future_field":[1,2]}"#)
        .await;
    assert_eq!(raw.next().await, Inbound::Ack);
    let request = next_request(&mut events).await;
    assert_eq!(
        (request.id(), request.request()),
        (5, &TerminalRequest::Status)
    );
    request.reply(Reply::Pong);
    assert_eq!(
        raw.next_json().await["re"],
        5,
        "something answered the id-less request"
    );
}

#[tokio::test]
async fn ping_from_the_terminal_is_answered_by_the_link_without_the_application() {
    let (mut raw, _agent, mut events) = raw_pair().await;
    raw.send_frame(br#"{"type":"ping","id":12}"#).await;
    assert_eq!(raw.next().await, Inbound::Ack);
    let pong = raw.next_json().await;
    assert_eq!(
        (pong["type"].as_str(), pong["re"].as_u64()),
        (Some("pong"), Some(12))
    );
    raw.ack().await;
    assert!(matches!(next_event(&mut events).await, LinkEvent::Up));
    assert!(
        events.try_recv().is_err(),
        "the ping reached the application"
    );
}

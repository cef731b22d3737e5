//! The cases of the conformance kit: each checks one rule docs/serial-protocol.md gives the
//! terminal, is named after the section that states it, and says what it saw.

use std::time::Duration;

use bytes::{BufMut, BytesMut};
use serde::Serialize;
use serde_json::{json, Value};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::time::Instant;

use super::bench::{Answer, Bench, Line, Seen, TerminalReply};
use crate::serial::frame::{frame_bytes, frame_crc, ACK, DLE, ETX, MAX_APDU, NAK, STX};
use crate::serial::link::INTER_BYTE_TIMEOUT;
use crate::serial::message::{AgentRequest, ErrorCode, Reply, TerminalIdentity};

/// The terminal's timers, as its maker configured them (the spec's defaults otherwise).
#[derive(Debug, Clone)]
pub(crate) struct KitSettings {
    /// The terminal's T3: how long it waits for an ACK before it sends a frame again.
    pub ack_timeout: Duration,
    /// The terminal's sends of one frame in total.
    pub max_sends: u32,
    /// How long the terminal may take to answer a request of the agent.
    pub reply_timeout: Duration,
    /// The line speed, to tell how long a frame takes to leave the line.
    pub baud_rate: u32,
}

impl Default for KitSettings {
    fn default() -> Self {
        Self {
            ack_timeout: Duration::from_secs(1),
            max_sends: 3,
            reply_timeout: Duration::from_secs(3),
            baud_rate: crate::config::defaults::baud_rate(),
        }
    }
}

/// The outcome of one case.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct CaseResult {
    /// The section of docs/serial-protocol.md that states the rule.
    pub section: &'static str,
    /// The rule, in a few words.
    pub name: &'static str,
    pub passed: bool,
    /// What the kit saw.
    pub seen: String,
}

/// The whole run.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct KitReport {
    /// Who the terminal said it was in its `ok` to `agent_state` `ready`, if it answered.
    pub terminal: Option<TerminalIdentity>,
    pub cases: Vec<CaseResult>,
    pub passed: usize,
    pub failed: usize,
}

type Outcome = Result<String, String>;

/// Runs every case against the terminal on `transport`, in the order that leaves the link
/// usable for the next one (the give-up and the dropped link last).
pub(crate) async fn run<T>(transport: T, settings: KitSettings) -> KitReport
where
    T: AsyncRead + AsyncWrite + Send + 'static,
{
    let mut bench = Bench::over(transport, settings.ack_timeout, settings.baud_rate);
    let mut cases = Vec::new();
    let mut terminal = None;
    macro_rules! case {
        ($section:expr, $name:expr, $body:expr) => {{
            let outcome: Outcome = $body;
            let (passed, seen) = match outcome {
                Ok(seen) => (true, seen),
                Err(seen) => (false, seen),
            };
            cases.push(CaseResult {
                section: $section,
                name: $name,
                passed,
                seen,
            });
        }};
    }
    let s = &settings;
    let b = &mut bench;
    case!(
        "docs/serial-protocol.md §2 Frames",
        "framing and CRC: the spec's ping vector is ACKed and answered with a good frame",
        framing(b, s).await
    );
    case!(
        "docs/serial-protocol.md §3 Versions",
        "agent_state ready is answered ok with a protocol version the agent speaks",
        versions(b, s, &mut terminal).await
    );
    case!(
        "docs/serial-protocol.md §2 Receiving",
        "a good frame is ACKed within T1 (200 ms)",
        ack_within_t1(b).await
    );
    case!(
        "docs/serial-protocol.md §3 Agent → terminal",
        "agent_state stopping is answered ok",
        answered_ok(b, s, json!({"type":"agent_state","state":"stopping"})).await
    );
    case!(
        "docs/serial-protocol.md §3 Agent → terminal",
        "payment_cancelled is answered ok, for every reason",
        payment_cancelled(b, s).await
    );
    case!(
        "docs/serial-protocol.md §3 Messages",
        "unknown fields are ignored",
        answered_ok(
            b,
            s,
            json!({"type":"agent_state","state":"ready","protocol":1,"x_future":{"a":[1,2]}})
        )
        .await
    );
    case!(
        "docs/serial-protocol.md §3 Received requests",
        "request ids: the reply carries the request's id as `re`, up to 4294967295",
        request_ids(b, s).await
    );
    case!(
        "docs/serial-protocol.md §3 Received requests",
        "replay cache: a duplicate gets the stored reply again, byte for byte, once",
        replay(b, s).await
    );
    case!(
        "docs/serial-protocol.md §3 Received requests",
        "an invalid request with an id is answered error/invalid_request",
        invalid_requests(b, s).await
    );
    case!(
        "docs/serial-protocol.md §3 Received requests",
        "a frame without a usable id or not JSON is ACKed and dropped",
        dropped_without_id(b, s).await
    );
    case!(
        "docs/serial-protocol.md §3 Received requests",
        "a reply to a request the terminal did not make is ACKed and dropped",
        stray_reply(b, s).await
    );
    case!(
        "docs/serial-protocol.md §2 Receiving",
        "a frame with a bad CRC is answered NAK and its resend delivered once",
        bad_crc(b, s).await
    );
    case!(
        "docs/serial-protocol.md §2 Receiving",
        "an oversize APDU (over 4096 bytes) is answered NAK",
        oversize(b, s).await
    );
    case!(
        "docs/serial-protocol.md §2 Receiving",
        "a bad escape inside a frame is answered NAK",
        bad_escape(b, s).await
    );
    case!(
        "docs/serial-protocol.md §2 Receiving",
        "line noise between frames is dropped without an answer",
        noise(b, s).await
    );
    case!(
        "docs/serial-protocol.md §2 Receiving",
        "a frame cut off for more than T1 is dropped without an answer",
        cut_off(b, s).await
    );
    case!(
        "docs/serial-protocol.md §2 Sending",
        "a frame answered NAK is sent again at once, the same bytes",
        resend_after_nak(b, s).await
    );
    case!(
        "docs/serial-protocol.md §2 Sending",
        "a frame without an answer is sent again after T3",
        resend_after_t3(b, s).await
    );
    case!(
        "docs/serial-protocol.md §2 Sending",
        "a frame is sent max_sends times in all, then given up",
        give_up(b, s).await
    );
    case!(
        "docs/serial-protocol.md §4 Link state",
        "after the link dropped, a restarted agent (ids from 1) is answered again",
        comes_back(b, s).await
    );
    let failed = cases.iter().filter(|c| !c.passed).count();
    KitReport {
        terminal,
        passed: cases.len() - failed,
        failed,
        cases,
    }
}

fn text(apdu: &[u8]) -> String {
    String::from_utf8_lossy(apdu).into_owned()
}

fn ms(d: Duration) -> String {
    format!("{} ms", d.as_millis())
}

/// Sends `body` and wants ACK and a reply; returns the ACK's latency and the reply.
async fn ask<T: Line>(
    b: &mut Bench<T>,
    s: &KitSettings,
    body: Value,
) -> Result<(u32, Duration, TerminalReply), String> {
    let (id, answer, reply) = b.exchange(&body, s.reply_timeout).await?;
    let latency = match answer {
        Answer::Ack(latency) => latency,
        Answer::Nak(_) => return Err(format!("{body} (id {id}) was answered NAK")),
        Answer::Nothing => return Err(format!("{body} (id {id}) got no ACK within T3")),
    };
    match reply {
        Some(reply) => Ok((id, latency, reply)),
        None => Err(format!(
            "{body} (id {id}) was ACKed but got no reply with re {id} within {}{}",
            ms(s.reply_timeout),
            unclaimed(b)
        )),
    }
}

/// The replies nobody asked for, for a failure's description.
fn unclaimed<T: Line>(b: &mut Bench<T>) -> String {
    let other: Vec<String> = b
        .take_unclaimed()
        .into_iter()
        .map(|(_, reply)| text(&reply.apdu))
        .collect();
    if other.is_empty() {
        String::new()
    } else {
        format!("; other replies: {}", other.join(", "))
    }
}

async fn framing<T: Line>(b: &mut Bench<T>, s: &KitSettings) -> Outcome {
    let (_, _, reply) = ask(b, s, json!({"type":"ping"})).await?;
    if let Some(bad) = b.strays.iter().find(|s| s.contains("answered NAK")) {
        return Err(format!("the terminal sent {bad}"));
    }
    match reply.body {
        Ok(Reply::Pong) => Ok(format!("ACK, then {}", text(&reply.apdu))),
        Ok(other) => Err(format!("ping answered {other:?}, not pong")),
        Err(e) => Err(format!("unreadable reply {} ({e})", text(&reply.apdu))),
    }
}

async fn versions<T: Line>(
    b: &mut Bench<T>,
    s: &KitSettings,
    terminal: &mut Option<TerminalIdentity>,
) -> Outcome {
    let ready = serde_json::to_value(AgentRequest::ready()).map_err(|e| e.to_string())?;
    let (_, _, reply) = ask(b, s, ready).await?;
    match reply.body {
        Ok(Reply::Ok(identity)) => {
            *terminal = Some(identity.clone());
            let said = text(&reply.apdu);
            match identity.protocol {
                Some(v) if v > crate::serial::PROTOCOL_VERSION => Err(format!(
                    "{said}: protocol {v} is higher than the agent's {}; the terminal must \
                     fall back",
                    crate::serial::PROTOCOL_VERSION
                )),
                Some(_) => Ok(said),
                None => Ok(format!(
                    "{said} (says nothing of itself: taken as version 1)"
                )),
            }
        }
        Ok(other) => Err(format!("answered {other:?}, not ok")),
        Err(e) => Err(format!("unreadable reply {} ({e})", text(&reply.apdu))),
    }
}

async fn ack_within_t1<T: Line>(b: &mut Bench<T>) -> Outcome {
    let mut slowest = Duration::ZERO;
    for _ in 0..5 {
        let id = b.next_id();
        let apdu = b.request_apdu(id, &json!({"type":"ping"}));
        match b.send_frame(&apdu).await? {
            Answer::Ack(latency) => slowest = slowest.max(latency),
            Answer::Nak(_) => return Err(format!("ping {id} answered NAK")),
            Answer::Nothing => return Err(format!("ping {id} not ACKed within T3")),
        }
        let _ = b.reply_to(id, Duration::from_secs(3)).await;
    }
    if slowest <= INTER_BYTE_TIMEOUT {
        Ok(format!("5 pings ACKed, the slowest after {}", ms(slowest)))
    } else {
        Err(format!(
            "the slowest of 5 ACKs came {} after the frame's last byte (T1 is 200 ms)",
            ms(slowest)
        ))
    }
}

async fn answered_ok<T: Line>(b: &mut Bench<T>, s: &KitSettings, body: Value) -> Outcome {
    let (_, _, reply) = ask(b, s, body.clone()).await?;
    match reply.body {
        Ok(Reply::Ok(_)) => Ok(format!("{body} → {}", text(&reply.apdu))),
        _ => Err(format!("{body} → {}, not ok", text(&reply.apdu))),
    }
}

async fn payment_cancelled<T: Line>(b: &mut Bench<T>, s: &KitSettings) -> Outcome {
    let mut seen = Vec::new();
    for reason in ["operator", "terminal", "shutdown", "timeout", "abandoned"] {
        let body = json!({
            "type": "payment_cancelled",
            "payment_request_id": "7cc7c8e8-9d92-41b6-9378-e9ecef5a7812",
            "reason": reason
        });
        answered_ok(b, s, body).await?;
        seen.push(reason);
    }
    Ok(format!("ok for reasons {}", seen.join(", ")))
}

async fn request_ids<T: Line>(b: &mut Bench<T>, s: &KitSettings) -> Outcome {
    let id = u32::MAX;
    let apdu = b.request_apdu(id, &json!({"type":"ping"}));
    if b.send_frame(&apdu).await? != Answer::Nothing {
        if let Some(reply) = b.reply_to(id, s.reply_timeout).await {
            return Ok(format!("{} → {}", text(&apdu), text(&reply.apdu)));
        }
    }
    Err(format!(
        "{} got no reply with re {id}{}",
        text(&apdu),
        unclaimed(b)
    ))
}

async fn replay<T: Line>(b: &mut Bench<T>, s: &KitSettings) -> Outcome {
    let body = json!({
        "type": "payment_cancelled",
        "payment_request_id": "72ec8714-d116-4306-8881-38a43c485da9",
        "reason": "operator"
    });
    let (id, _, first) = ask(b, s, body.clone()).await?;
    // The kit's ACK of the terminal's reply frame was "lost": the same request comes again.
    let apdu = b.request_apdu(id, &body);
    match b.send_frame(&apdu).await? {
        Answer::Ack(_) => {}
        other => return Err(format!("the duplicate got {other:?}, not ACK")),
    }
    let Some(again) = b.reply_to(id, s.reply_timeout).await else {
        return Err(format!(
            "the duplicate of id {id} got no reply (the stored one must be sent again)"
        ));
    };
    if again.apdu != first.apdu {
        return Err(format!(
            "the duplicate got {}, the first {}: not byte for byte",
            text(&again.apdu),
            text(&first.apdu)
        ));
    }
    let extra = b.replies_within(Duration::from_millis(300)).await;
    if let Some((_, reply)) = extra.iter().find(|(re, _)| *re == id) {
        return Err(format!("a third reply for id {id}: {}", text(&reply.apdu)));
    }
    Ok(format!("both answered {}", text(&first.apdu)))
}

async fn invalid_requests<T: Line>(b: &mut Bench<T>, s: &KitSettings) -> Outcome {
    let cases = [
        json!({"type":"frobnicate"}),
        json!({"type":"payment_cancelled","reason":"operator"}),
        json!({"type":"agent_state","state":"dancing"}),
    ];
    let mut seen = Vec::new();
    for body in cases {
        let (_, _, reply) = ask(b, s, body.clone()).await?;
        match reply.body {
            Ok(Reply::Error {
                code: ErrorCode::InvalidRequest,
                ..
            }) => seen.push(format!("{body} → error/invalid_request")),
            _ => {
                return Err(format!(
                    "{body} → {}, not error/invalid_request",
                    text(&reply.apdu)
                ))
            }
        }
    }
    Ok(seen.join("; "))
}

/// Sends `apdu` (a good frame), wants it ACKed, then checks that a `ping` right after is the
/// next thing answered and that nothing else is.
async fn acked_and_dropped<T: Line>(b: &mut Bench<T>, s: &KitSettings, apdu: &[u8]) -> Outcome {
    match b.send_frame(apdu).await? {
        Answer::Ack(_) => {}
        other => {
            return Err(format!(
                "{} (a good frame) got {other:?}, not ACK",
                text(apdu)
            ))
        }
    }
    let (id, _, _) = ask(b, s, json!({"type":"ping"})).await?;
    let mut extra = b.replies_within(Duration::from_millis(300)).await;
    extra.retain(|(re, _)| *re != id);
    let strays = std::mem::take(&mut b.strays);
    if let Some((_, reply)) = extra.first() {
        return Err(format!(
            "{} was answered: {}",
            text(apdu),
            text(&reply.apdu)
        ));
    }
    if let Some(stray) = strays.first() {
        return Err(format!("{} was answered: {stray}", text(apdu)));
    }
    Ok(format!("{}: ACKed, not answered", text(apdu)))
}

async fn dropped_without_id<T: Line>(b: &mut Bench<T>, s: &KitSettings) -> Outcome {
    let mut seen = Vec::new();
    for apdu in [
        &b"hello, terminal"[..],
        br#"{"type":"agent_state","state":"ready"}"#,
        br#"{"type":"ping","id":-4}"#,
        b"[1,2,3]",
    ] {
        seen.push(acked_and_dropped(b, s, apdu).await?);
    }
    Ok(seen.join("; "))
}

async fn stray_reply<T: Line>(b: &mut Bench<T>, s: &KitSettings) -> Outcome {
    acked_and_dropped(b, s, br#"{"type":"ok","re":3999999999}"#).await
}

/// A frame of `apdu` with any length (`frame_bytes` refuses the oversize one).
fn raw_frame(apdu: &[u8]) -> Vec<u8> {
    let mut out = BytesMut::with_capacity(apdu.len() * 2 + 6);
    out.put_slice(&[DLE, STX]);
    for &byte in apdu {
        out.put_u8(byte);
        if byte == DLE {
            out.put_u8(DLE);
        }
    }
    out.put_slice(&[DLE, ETX]);
    out.put_u16_le(frame_crc(apdu));
    out.to_vec()
}

/// Sends `frame` (bad on purpose) and wants a NAK; then wants the link to work on.
async fn nak_for<T: Line>(
    b: &mut Bench<T>,
    s: &KitSettings,
    what: &str,
    frame: &[u8],
    id: Option<u32>,
) -> Outcome {
    let answer = b.send_and_wait(frame).await?;
    if let Some(id) = id {
        if let Some(reply) = b.reply_to(id, Duration::from_millis(300)).await {
            return Err(format!(
                "{what} was delivered: answered {}",
                text(&reply.apdu)
            ));
        }
    }
    match answer {
        Answer::Nak(after) => {
            ask(b, s, json!({"type":"ping"})).await?;
            Ok(format!("{what}: NAK after {}", ms(after)))
        }
        Answer::Ack(_) => Err(format!("{what} was answered ACK, not NAK")),
        Answer::Nothing => Err(format!("{what} got no answer within T3, not NAK")),
    }
}

async fn bad_crc<T: Line>(b: &mut Bench<T>, s: &KitSettings) -> Outcome {
    let id = b.next_id();
    let apdu = b.request_apdu(id, &json!({"type":"ping"}));
    let good = frame_bytes(&apdu).map_err(|e| e.to_string())?.to_vec();
    let mut bad = good.clone();
    let last = bad.len() - 1;
    bad[last] ^= 0x5A;
    let answer = b.send_and_wait(&bad).await?;
    let Answer::Nak(after) = answer else {
        return Err(format!(
            "{} with a wrong CRC got {answer:?}, not NAK",
            text(&apdu)
        ));
    };
    match b.send_and_wait(&good).await? {
        Answer::Ack(_) => {}
        other => return Err(format!("the resent good frame got {other:?}, not ACK")),
    }
    let Some(reply) = b.reply_to(id, s.reply_timeout).await else {
        return Err(format!("the resent ping {id} was never answered"));
    };
    let extra = b.replies_within(Duration::from_millis(300)).await;
    if extra.iter().any(|(re, _)| *re == id) {
        return Err(format!("ping {id} was answered twice"));
    }
    Ok(format!(
        "NAK after {}, the resend ACKed and answered once: {}",
        ms(after),
        text(&reply.apdu)
    ))
}

async fn oversize<T: Line>(b: &mut Bench<T>, s: &KitSettings) -> Outcome {
    let id = b.next_id();
    let mut body = json!({"type":"ping","pad":""});
    let pad = MAX_APDU + 1 - b.request_apdu(id, &body).len();
    body["pad"] = Value::String("x".repeat(pad));
    let apdu = b.request_apdu(id, &body);
    let what = format!("a ping of {} bytes", apdu.len());
    nak_for(b, s, &what, &raw_frame(&apdu), Some(id)).await
}

async fn bad_escape<T: Line>(b: &mut Bench<T>, s: &KitSettings) -> Outcome {
    let mut frame = vec![DLE, STX];
    frame.extend_from_slice(br#"{"type":"ping","#);
    frame.extend_from_slice(&[DLE, b'A']);
    frame.extend_from_slice(br#""id":1}"#);
    frame.extend_from_slice(&[DLE, ETX, 0, 0]);
    nak_for(b, s, "a frame with DLE 41 inside", &frame, None).await
}

async fn noise<T: Line>(b: &mut Bench<T>, s: &KitSettings) -> Outcome {
    let noise = [
        0x00, 0xFF, 0x41, 0x0D, 0x0A, 0x11, 0x13, 0x7E, DLE, 0x41, 0x03, 0x02,
    ];
    b.send_raw(&noise).await?;
    let heard = b.ignore_for(Duration::from_millis(300)).await;
    if let Some((seen, _)) = heard
        .iter()
        .find(|(seen, _)| !matches!(seen, Seen::Frame(_)))
    {
        return Err(format!("the noise {noise:02X?} was answered {seen:?}"));
    }
    // Frames of the terminal's own (a ping) are left for its resend to be answered.
    let (_, _, reply) = ask(b, s, json!({"type":"ping"})).await?;
    Ok(format!(
        "{noise:02X?}: no answer; the ping after it → {}",
        text(&reply.apdu)
    ))
}

async fn cut_off<T: Line>(b: &mut Bench<T>, s: &KitSettings) -> Outcome {
    let id = b.next_id();
    let apdu = b.request_apdu(id, &json!({"type":"ping"}));
    let frame = frame_bytes(&apdu).map_err(|e| e.to_string())?;
    let half = frame.len() / 2;
    b.send_raw(&frame[..half]).await?;
    let heard = b.ignore_for(INTER_BYTE_TIMEOUT * 2).await;
    if let Some((seen, _)) = heard
        .iter()
        .find(|(seen, _)| !matches!(seen, Seen::Frame(_)))
    {
        return Err(format!("half a frame was answered {seen:?}"));
    }
    // The rest of the frame comes after T1: noise, not a frame.
    b.send_raw(&frame[half..]).await?;
    if let Some(reply) = b.reply_to(id, Duration::from_millis(400)).await {
        return Err(format!(
            "a frame cut off for {} was delivered: answered {}",
            ms(INTER_BYTE_TIMEOUT * 2),
            text(&reply.apdu)
        ));
    }
    let (_, _, reply) = ask(b, s, json!({"type":"ping"})).await?;
    Ok(format!(
        "no answer to the cut-off frame or its tail; the next ping → {}",
        text(&reply.apdu)
    ))
}

/// Sends a `ping` and returns its id and the first send of the terminal's `pong` frame, not
/// ACKed (the case decides), with the time it arrived.
async fn unacked_reply<T: Line>(
    b: &mut Bench<T>,
    s: &KitSettings,
) -> Result<(u32, Vec<u8>, Instant), String> {
    let id = b.next_id();
    let apdu = b.request_apdu(id, &json!({"type":"ping"}));
    let frame = frame_bytes(&apdu).map_err(|e| e.to_string())?;
    b.send_raw(&frame).await?;
    let deadline = b.on_the_line(frame.len()) + s.reply_timeout;
    let mut acked = false;
    while let Some((seen, at)) = b.next_seen(deadline).await {
        match seen {
            Seen::Ack => acked = true,
            Seen::Frame(reply) if is_reply_to(&reply, id) => {
                if !acked {
                    return Err(format!("the reply {} came before the ACK", text(&reply)));
                }
                return Ok((id, reply.to_vec(), at));
            }
            Seen::Frame(other) => b.take_frame(other).await?,
            Seen::Nak | Seen::Bad(_) => {}
        }
    }
    Err(format!(
        "ping {id} got no pong within {}",
        ms(s.reply_timeout)
    ))
}

fn is_reply_to(apdu: &[u8], id: u32) -> bool {
    serde_json::from_slice::<Value>(apdu)
        .ok()
        .and_then(|v| v.get("re").and_then(Value::as_u64))
        == Some(u64::from(id))
}

/// The next send of `apdu` before `deadline`; other frames of the terminal are left unanswered.
async fn next_send_of<T: Line>(
    b: &mut Bench<T>,
    apdu: &[u8],
    deadline: Instant,
) -> Option<Instant> {
    while let Some((seen, at)) = b.next_seen(deadline).await {
        if let Seen::Frame(frame) = seen {
            if frame == apdu {
                return Some(at);
            }
        }
    }
    None
}

async fn resend_after_nak<T: Line>(b: &mut Bench<T>, s: &KitSettings) -> Outcome {
    let (_, apdu, _) = unacked_reply(b, s).await?;
    b.send_raw(&[NAK]).await?;
    let naked = Instant::now();
    let prompt = s.ack_timeout.mul_f32(0.8);
    match next_send_of(b, &apdu, naked + s.ack_timeout * 2).await {
        Some(at) if at - naked <= prompt => {
            b.send_raw(&[ACK]).await?;
            Ok(format!(
                "{} sent again {} after the NAK",
                text(&apdu),
                ms(at - naked)
            ))
        }
        Some(at) => {
            b.send_raw(&[ACK]).await?;
            Err(format!(
                "{} sent again only {} after the NAK (at T3, not because of the NAK)",
                text(&apdu),
                ms(at - naked)
            ))
        }
        None => Err(format!("{} was not sent again after the NAK", text(&apdu))),
    }
}

async fn resend_after_t3<T: Line>(b: &mut Bench<T>, s: &KitSettings) -> Outcome {
    let (_, apdu, first) = unacked_reply(b, s).await?;
    let latest = s.ack_timeout * 2 + Duration::from_millis(250);
    let earliest = s.ack_timeout.mul_f32(0.75);
    match next_send_of(b, &apdu, first + latest).await {
        Some(at) => {
            b.send_raw(&[ACK]).await?;
            let after = at - first;
            if after >= earliest {
                Ok(format!("{} sent again after {}", text(&apdu), ms(after)))
            } else {
                Err(format!(
                    "{} sent again after {}, before T3 ({})",
                    text(&apdu),
                    ms(after),
                    ms(s.ack_timeout)
                ))
            }
        }
        None => Err(format!(
            "{} not sent again within {} without an ACK",
            text(&apdu),
            ms(latest)
        )),
    }
}

async fn give_up<T: Line>(b: &mut Bench<T>, s: &KitSettings) -> Outcome {
    let (_, apdu, first) = unacked_reply(b, s).await?;
    let window = (s.ack_timeout * (s.max_sends + 1)).mul_f32(1.5) + Duration::from_millis(500);
    let mut sends = vec![Duration::ZERO];
    while let Some(at) = next_send_of(b, &apdu, first + window).await {
        sends.push(at - first);
    }
    let times: Vec<String> = sends.iter().map(|d| ms(*d)).collect();
    let seen = format!(
        "{} sent {} time(s) without an ACK, at {}",
        text(&apdu),
        sends.len(),
        times.join(", ")
    );
    if sends.len() == s.max_sends as usize {
        Ok(seen)
    } else {
        Err(format!("{seen}; max_sends is {}", s.max_sends))
    }
}

async fn comes_back<T: Line>(b: &mut Bench<T>, s: &KitSettings) -> Outcome {
    // What was left unanswered during the silence is forgotten, as by a restarted agent.
    b.ignore_for(Duration::from_millis(100)).await;
    b.take_unclaimed();
    b.restart_ids();
    let (_, _, pong) = ask(b, s, json!({"type":"ping"})).await?;
    let ready = serde_json::to_value(AgentRequest::ready()).map_err(|e| e.to_string())?;
    let (_, _, ok) = ask(b, s, ready).await?;
    match ok.body {
        Ok(Reply::Ok(_)) => Ok(format!(
            "ping 1 → {}, agent_state ready 2 → {}",
            text(&pong.apdu),
            text(&ok.apdu)
        )),
        _ => Err(format!("agent_state ready 2 → {}, not ok", text(&ok.apdu))),
    }
}

//! The kit's end of the line: the agent's side of docs/serial-protocol.md written out by hand,
//! so a case can do what the agent's own link never would (a bad CRC, a withheld ACK, a NAK for
//! a good frame) and see every byte the terminal sends, with the time it arrived.
//!
//! A reader task decodes the line with the agent's own frame codec (T1 included) and timestamps
//! what it finds. Outside the cases' control, the bench behaves as a well-mannered agent:
//! the terminal's frames are ACKed and its requests answered (`pong` to `ping`, `error`
//! `not_connected` to anything else, as the kit has no payment API) once no frame of the kit
//! is waiting for its ACK.

use std::collections::VecDeque;
use std::time::Duration;

use bytes::Bytes;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, WriteHalf};
use tokio::sync::mpsc;
use tokio::time::{timeout_at, Instant};
use tokio_util::codec::Decoder;

use crate::serial::codec::{FrameCodec, FrameFault, Inbound};
use crate::serial::frame::{frame_bytes, ACK, NAK};
use crate::serial::link::INTER_BYTE_TIMEOUT;
use crate::serial::message::{
    encode_reply, parse_incoming, ErrorCode, Incoming, Reply, TerminalRequest,
};

/// A line the kit can run on: a serial port, a pty, a duplex stream.
pub(super) trait Line: AsyncRead + AsyncWrite + Send + 'static {}

impl<T: AsyncRead + AsyncWrite + Send + 'static> Line for T {}

/// One thing the terminal put on the line.
#[derive(Debug, Clone)]
pub(super) enum Seen {
    /// A frame with a good CRC, its APDU.
    Frame(Bytes),
    Ack,
    Nak,
    /// A frame the kit would answer with NAK (bad CRC, too long, bad escape).
    Bad(FrameFault),
}

/// What a sent frame got.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Answer {
    Ack(Duration),
    Nak(Duration),
    Nothing,
}

/// A reply of the terminal: its APDU and what it parsed to.
#[derive(Debug, Clone)]
pub(super) struct TerminalReply {
    pub(super) apdu: Bytes,
    pub(super) body: Result<Reply, String>,
}

/// The kit's end of the line.
pub(super) struct Bench<T> {
    writer: WriteHalf<T>,
    seen: mpsc::UnboundedReceiver<(Seen, Instant)>,
    /// Seen by a wait that was looking for something else, in order.
    backlog: VecDeque<(Seen, Instant)>,
    /// Replies of the terminal, by `re`, already ACKed.
    replies: Vec<(u32, TerminalReply)>,
    /// The kit's answers to the terminal's own requests, sent once no frame of the kit waits.
    deferred: VecDeque<Vec<u8>>,
    /// Frames the terminal sent that were neither a reply nor a request with an id.
    pub(super) strays: Vec<String>,
    /// How long the kit waits for an ACK (the terminal's T3 is the kit's too).
    pub(super) ack_wait: Duration,
    /// How long one byte takes on the line (10 bits at the line speed): the kernel takes a
    /// frame at once, the line needs this long per byte to carry it.
    byte_time: Duration,
    next_id: u32,
}

impl<T: Line> Bench<T> {
    pub(super) fn over(transport: T, ack_wait: Duration, baud_rate: u32) -> Self {
        let (mut reader, writer) = tokio::io::split(transport);
        let (tx, seen) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            let mut codec = FrameCodec::new();
            let mut buffer = bytes::BytesMut::with_capacity(4096);
            let mut chunk = [0u8; 1024];
            loop {
                let read = if codec.in_frame() {
                    match tokio::time::timeout(INTER_BYTE_TIMEOUT, reader.read(&mut chunk)).await {
                        Ok(read) => read,
                        Err(_) => {
                            codec.abandon_partial();
                            continue;
                        }
                    }
                } else {
                    reader.read(&mut chunk).await
                };
                let n = match read {
                    Ok(0) | Err(_) => return,
                    Ok(n) => n,
                };
                let at = Instant::now();
                buffer.extend_from_slice(&chunk[..n]);
                while let Ok(Some(item)) = codec.decode(&mut buffer) {
                    let seen = match item {
                        Inbound::Frame(apdu) => Seen::Frame(apdu),
                        Inbound::Ack => Seen::Ack,
                        Inbound::Nak => Seen::Nak,
                        Inbound::Rejected(fault) => Seen::Bad(fault),
                    };
                    if tx.send((seen, at)).is_err() {
                        return;
                    }
                }
            }
        });
        Self {
            writer,
            seen,
            backlog: VecDeque::new(),
            replies: Vec::new(),
            deferred: VecDeque::new(),
            strays: Vec::new(),
            ack_wait,
            byte_time: Duration::from_secs(10) / baud_rate.max(1),
            next_id: 1,
        }
    }

    /// The id of the kit's next request (+1 per request, as the agent counts).
    pub(super) fn next_id(&mut self) -> u32 {
        let id = self.next_id;
        self.next_id = self.next_id.wrapping_add(1).max(1);
        id
    }

    /// Counts the kit's ids from 1 again, as a restarted agent does.
    pub(super) fn restart_ids(&mut self) {
        self.next_id = 1;
    }

    /// Bytes onto the line as they are.
    pub(super) async fn send_raw(&mut self, bytes: &[u8]) -> Result<(), String> {
        self.writer
            .write_all(bytes)
            .await
            .map_err(|e| format!("cannot write to the line: {e}"))
    }

    /// The next thing the terminal sent, before `deadline`; nothing is answered.
    pub(super) async fn next_seen(&mut self, deadline: Instant) -> Option<(Seen, Instant)> {
        if let Some(seen) = self.backlog.pop_front() {
            return Some(seen);
        }
        timeout_at(deadline, self.seen.recv()).await.ok().flatten()
    }

    /// When `len` bytes handed to the line now will have left it.
    pub(super) fn on_the_line(&self, len: usize) -> Instant {
        Instant::now() + self.byte_time * u32::try_from(len).unwrap_or(u32::MAX)
    }

    /// Sends `bytes` (one frame, possibly broken on purpose) and waits for the ACK or NAK, up
    /// to the terminal's T3 after the last byte has left the line; the answer's delay is
    /// counted from then. The terminal's frames arriving meanwhile are ACKed and kept (replies)
    /// or answered later (requests).
    pub(super) async fn send_and_wait(&mut self, bytes: &[u8]) -> Result<Answer, String> {
        self.send_raw(bytes).await?;
        let sent = self.on_the_line(bytes.len());
        let deadline = sent + self.ack_wait;
        let answer = loop {
            let Some((seen, at)) = timeout_at(deadline, self.seen.recv()).await.ok().flatten()
            else {
                break Answer::Nothing;
            };
            match seen {
                Seen::Ack => break Answer::Ack(at.saturating_duration_since(sent)),
                Seen::Nak => break Answer::Nak(at.saturating_duration_since(sent)),
                Seen::Frame(apdu) => self.take_frame(apdu).await?,
                Seen::Bad(fault) => self.refuse(fault).await?,
            }
        };
        self.flush_deferred().await?;
        Ok(answer)
    }

    /// Sends the request `apdu` as a frame (a NAK gets the same bytes again, up to three sends
    /// in all, as the agent does); returns what its first send got.
    pub(super) async fn send_frame(&mut self, apdu: &[u8]) -> Result<Answer, String> {
        let frame = frame_bytes(apdu).map_err(|e| e.to_string())?;
        let first = self.send_and_wait(&frame).await?;
        let mut answer = first;
        for _ in 1..3 {
            if matches!(answer, Answer::Ack(_)) {
                break;
            }
            answer = self.send_and_wait(&frame).await?;
        }
        Ok(first)
    }

    /// A request of the kit as JSON with its id added.
    pub(super) fn request_apdu(&self, id: u32, body: &serde_json::Value) -> Vec<u8> {
        let mut object = body.as_object().cloned().unwrap_or_default();
        object.insert("id".to_owned(), id.into());
        serde_json::to_vec(&object).unwrap_or_default()
    }

    /// Waits up to `within` for the terminal's reply carrying `re` (ACKing what arrives).
    pub(super) async fn reply_to(&mut self, re: u32, within: Duration) -> Option<TerminalReply> {
        let deadline = Instant::now() + within;
        loop {
            if let Some(at) = self.replies.iter().position(|(r, _)| *r == re) {
                return Some(self.replies.remove(at).1);
            }
            let (seen, _) = self.next_seen(deadline).await?;
            match seen {
                Seen::Frame(apdu) => self.take_frame(apdu).await.ok()?,
                Seen::Bad(fault) => self.refuse(fault).await.ok()?,
                Seen::Ack | Seen::Nak => {}
            }
            self.flush_deferred().await.ok()?;
        }
    }

    /// Every reply the terminal sent within `window` (ACKing it), by `re`.
    pub(super) async fn replies_within(&mut self, window: Duration) -> Vec<(u32, TerminalReply)> {
        let deadline = Instant::now() + window;
        while let Some((seen, _)) = self.next_seen(deadline).await {
            match seen {
                Seen::Frame(apdu) => {
                    if self.take_frame(apdu).await.is_err() {
                        break;
                    }
                }
                Seen::Bad(fault) => {
                    let _ = self.refuse(fault).await;
                }
                Seen::Ack | Seen::Nak => {}
            }
            let _ = self.flush_deferred().await;
        }
        std::mem::take(&mut self.replies)
    }

    /// Sends the request `body` with a fresh id and waits for its reply within `within`.
    pub(super) async fn exchange(
        &mut self,
        body: &serde_json::Value,
        within: Duration,
    ) -> Result<(u32, Answer, Option<TerminalReply>), String> {
        let id = self.next_id();
        let apdu = self.request_apdu(id, body);
        let answer = self.send_frame(&apdu).await?;
        let reply = self.reply_to(id, within).await;
        Ok((id, answer, reply))
    }

    /// ACKs a good frame of the terminal and sorts it: a reply is kept, a request answered (later,
    /// if a frame of the kit is waiting), anything else noted as a stray.
    pub(super) async fn take_frame(&mut self, apdu: Bytes) -> Result<(), String> {
        self.send_raw(&[ACK]).await?;
        match parse_incoming::<TerminalRequest>(&apdu) {
            Incoming::Reply { re, body } => self.replies.push((re, TerminalReply { apdu, body })),
            Incoming::Request { id, body } => {
                let reply = match body {
                    Ok(TerminalRequest::Ping) => Reply::Pong,
                    Ok(_) => Reply::error(
                        ErrorCode::NotConnected,
                        "the conformance kit has no payment API",
                    ),
                    Err(reason) => Reply::error(ErrorCode::InvalidRequest, reason),
                };
                self.deferred
                    .push_back(encode_reply(id, &reply).map_err(|e| e.to_string())?);
            }
            Incoming::Anonymous { reason } | Incoming::Unreadable { reason } => self
                .strays
                .push(format!("{} ({reason})", String::from_utf8_lossy(&apdu))),
        }
        Ok(())
    }

    /// Sends the answers to the terminal's requests, one frame at a time.
    pub(super) async fn flush_deferred(&mut self) -> Result<(), String> {
        while let Some(reply) = self.deferred.pop_front() {
            let frame = frame_bytes(&reply).map_err(|e| e.to_string())?;
            for _ in 0..3 {
                self.send_raw(&frame).await?;
                let deadline = Instant::now() + self.ack_wait;
                let mut acked = None;
                while acked.is_none() {
                    let Some((seen, at)) =
                        timeout_at(deadline, self.seen.recv()).await.ok().flatten()
                    else {
                        break;
                    };
                    match seen {
                        Seen::Ack => acked = Some(true),
                        Seen::Nak => acked = Some(false),
                        other => self.backlog.push_back((other, at)),
                    }
                }
                if acked == Some(true) {
                    break;
                }
            }
        }
        Ok(())
    }

    /// NAKs a bad frame of the terminal and notes it.
    async fn refuse(&mut self, fault: FrameFault) -> Result<(), String> {
        self.strays
            .push(format!("a frame with {fault:?} (answered NAK)"));
        self.send_raw(&[NAK]).await
    }

    /// The terminal's replies kept so far that no case asked for, taken.
    pub(super) fn take_unclaimed(&mut self) -> Vec<(u32, TerminalReply)> {
        std::mem::take(&mut self.replies)
    }

    /// Lets the line go quiet for `quiet` (nothing of the terminal answered, ACKed or kept).
    pub(super) async fn ignore_for(&mut self, quiet: Duration) -> Vec<(Seen, Instant)> {
        let deadline = Instant::now() + quiet;
        let mut ignored = Vec::new();
        while let Some(seen) = self.next_seen(deadline).await {
            ignored.push(seen);
        }
        ignored
    }
}

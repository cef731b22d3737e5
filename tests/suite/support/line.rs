//! A serial line at a real line's speed. A pty hands a frame of any size to the other end at
//! once; a 9600-baud line takes seconds over a 4 KB reply. Here two pty pairs are joined by a
//! relay that holds both masters and passes bytes at the baud rate (8N1: 10 bits a byte), both
//! directions at once, a slice every few milliseconds (well inside T1), each byte no sooner than
//! the line could have carried it. The agent opens one slave, the terminal the other.
//!
//! The relay also taps the line: it decodes what crosses each way, so a test can wait until a
//! frame is on the wire and check afterwards that no frame crossed twice, no NAK was needed and
//! nothing was cut off or garbled.

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use pos_agent::config::SerialConfig;
use pos_agent::serial::codec::{DecoderStats, FrameCodec, Inbound};
use pos_agent::serial::LineTiming;
use pos_agent::simulator::virtual_serial::VirtualSerial;
use tokio::io::{AsyncReadExt, AsyncWriteExt, ReadHalf, WriteHalf};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::codec::Decoder;

use super::WAIT;

/// How often the relay passes what the line has carried meanwhile: 5 bytes at 9600 baud, 58 at
/// 115200, far inside T1 (200 ms) between two slices.
const SLICE: Duration = Duration::from_millis(5);
/// What a side may have handed over before the relay stops reading from it (a UART's queue).
const BACKLOG: usize = 64 * 1024;

/// A frame that crossed the line completely.
#[derive(Debug, Clone)]
pub struct Crossed {
    pub apdu: Bytes,
    /// When its first byte reached the other end (to a slice).
    pub started: Instant,
    /// When its last byte did.
    pub ended: Instant,
}

impl Crossed {
    /// The frame's message, if it is JSON.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.apdu).unwrap_or_default()
    }
}

/// What crossed the line in one direction.
#[derive(Debug, Default, Clone)]
pub struct Crossing {
    pub frames: Vec<Crossed>,
    /// The frame on the wire right now: when its first byte arrived and how many bytes have.
    pub on_the_wire: Option<(Instant, usize)>,
    pub acks: usize,
    /// When the latest ACK crossed.
    pub last_ack: Option<Instant>,
    pub naks: usize,
    /// Frames the receiver answers with NAK (bad CRC, bad escape, too long).
    pub rejected: usize,
    /// What the receiving end's decoder would have dropped (noise, frames cut off by T1).
    pub decoder: DecoderStats,
}

impl Crossing {
    /// Frames whose APDU crossed more than once: every frame of the link is unique (ids count
    /// up), so a second copy is a resend.
    pub fn repeated(&self) -> Vec<serde_json::Value> {
        let mut repeated = Vec::new();
        for (i, frame) in self.frames.iter().enumerate() {
            if self.frames[..i].iter().any(|f| f.apdu == frame.apdu) {
                repeated.push(frame.json());
            }
        }
        repeated
    }

    /// The first frame whose message has this `type`.
    pub fn first_of_type(&self, kind: &str) -> Option<&Crossed> {
        self.frames.iter().find(|f| f.json()["type"] == kind)
    }
}

/// Both directions.
#[derive(Debug, Default, Clone)]
pub struct Tap {
    pub to_terminal: Crossing,
    pub to_agent: Crossing,
}

/// The line: two pty pairs and the relay between their masters.
pub struct SlowLine {
    baud_rate: u32,
    agent_end: PathBuf,
    terminal_end: PathBuf,
    tap: watch::Receiver<Tap>,
    tap_tx: watch::Sender<Tap>,
    relay: Vec<JoinHandle<()>>,
}

impl SlowLine {
    /// A line at `baud_rate`, 8N1. Must be called within a tokio runtime.
    pub fn open(baud_rate: u32) -> Self {
        let agent_pair = VirtualSerial::open().expect("pty pair");
        let terminal_pair = VirtualSerial::open().expect("pty pair");
        let agent_end = agent_pair.slave_path().to_path_buf();
        let terminal_end = terminal_pair.slave_path().to_path_buf();
        let timing = LineTiming::new(baud_rate, 10);
        let (tap_tx, tap) = watch::channel(Tap::default());
        let (from_agent, to_agent) = tokio::io::split(agent_pair);
        let (from_terminal, to_terminal) = tokio::io::split(terminal_pair);
        let relay = vec![
            tokio::spawn(pass(
                from_agent,
                to_terminal,
                timing,
                tap_tx.clone(),
                |tap| &mut tap.to_terminal,
            )),
            tokio::spawn(pass(
                from_terminal,
                to_agent,
                timing,
                tap_tx.clone(),
                |tap| &mut tap.to_agent,
            )),
        ];
        Self {
            baud_rate,
            agent_end,
            terminal_end,
            tap,
            tap_tx,
            relay,
        }
    }

    /// The device the agent opens.
    pub fn agent_end(&self) -> &Path {
        &self.agent_end
    }

    /// The terminal's line settings: its end of the line at the same speed.
    pub fn terminal_config(&self) -> SerialConfig {
        SerialConfig {
            device: self.terminal_end.clone(),
            baud_rate: self.baud_rate,
            ..SerialConfig::default()
        }
    }

    /// What has crossed so far.
    pub fn tap(&self) -> Tap {
        self.tap.borrow().clone()
    }

    /// Forgets what has crossed so far (the frames of an agent process that was restarted,
    /// which a new process may repeat byte for byte: its ids count from 1 again).
    pub fn forget_crossed(&self) {
        self.tap_tx.send_modify(|tap| {
            for crossing in [&mut tap.to_terminal, &mut tap.to_agent] {
                crossing.frames.clear();
                crossing.acks = 0;
                crossing.last_ack = None;
                crossing.naks = 0;
                crossing.rejected = 0;
            }
        });
    }

    /// Waits until `condition` holds for what crossed (woken by every slice), failing after
    /// [`WAIT`].
    pub async fn wait_until(&self, what: &str, condition: impl Fn(&Tap) -> bool) -> Tap {
        let mut tap = self.tap.clone();
        let seen = match tokio::time::timeout(WAIT, tap.wait_for(|t| condition(t))).await {
            Ok(Ok(seen)) => seen.clone(),
            _ => panic!("{what}: not on the line within {WAIT:?}; {:?}", self.tap()),
        };
        seen
    }

    /// Every frame crossed once, none needed a NAK, the receivers dropped no byte: T1 was
    /// honoured and nothing was sent twice.
    pub fn assert_clean(&self) {
        let tap = self.tap();
        for (way, crossing) in [
            ("to the terminal", &tap.to_terminal),
            ("to the agent", &tap.to_agent),
        ] {
            assert_eq!(
                crossing.repeated(),
                Vec::<serde_json::Value>::new(),
                "frames sent twice {way}"
            );
            assert_eq!((crossing.naks, crossing.rejected), (0, 0), "NAKs {way}");
            assert_eq!(
                crossing.decoder,
                DecoderStats::default(),
                "bytes dropped {way}"
            );
        }
    }
}

impl Drop for SlowLine {
    fn drop(&mut self) {
        for task in &self.relay {
            task.abort();
        }
    }
}

/// One direction of the line: reads what one side handed over, passes it on to the other no
/// faster than `timing` allows, and reports each slice to the tap.
async fn pass(
    mut from: ReadHalf<VirtualSerial>,
    mut to: WriteHalf<VirtualSerial>,
    timing: LineTiming,
    tap: watch::Sender<Tap>,
    side: fn(&mut Tap) -> &mut Crossing,
) {
    let mut backlog: VecDeque<u8> = VecDeque::new();
    // When the line has carried everything passed on so far.
    let mut carried_until = Instant::now();
    let mut ticks = tokio::time::interval(SLICE);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut input = [0u8; 4096];
    let mut codec = FrameCodec::new();
    let mut decoding = BytesMut::new();
    let mut frame_started: Option<Instant> = None;
    loop {
        tokio::select! {
            read = from.read(&mut input), if backlog.len() < BACKLOG => match read {
                Ok(n) if n > 0 => {
                    if backlog.is_empty() {
                        // An idle line starts on the first byte when it comes.
                        carried_until = carried_until.max(Instant::now());
                    }
                    backlog.extend(&input[..n]);
                }
                _ => return,
            },
            _ = ticks.tick(), if !backlog.is_empty() => {
                let now = Instant::now();
                let char_nanos = timing.char_time().as_nanos().max(1);
                let elapsed = now.saturating_duration_since(carried_until).as_nanos();
                let due = usize::try_from(elapsed / char_nanos)
                    .unwrap_or(usize::MAX)
                    .min(backlog.len());
                if due == 0 {
                    continue;
                }
                carried_until += timing.wire_time(due);
                let slice: Vec<u8> = backlog.drain(..due).collect();
                if to.write_all(&slice).await.is_err() {
                    return;
                }
                decoding.extend_from_slice(&slice);
                let mut items = Vec::new();
                let was_in_frame = frame_started.is_some();
                while let Ok(Some(item)) = codec.decode(&mut decoding) {
                    items.push(item);
                }
                let started = frame_started.unwrap_or(now);
                let in_frame = codec.in_frame();
                tap.send_modify(|tap| {
                    let crossing = side(tap);
                    for item in &items {
                        match item {
                            Inbound::Frame(apdu) => crossing.frames.push(Crossed {
                                apdu: apdu.clone(),
                                started,
                                ended: now,
                            }),
                            Inbound::Ack => {
                                crossing.acks += 1;
                                crossing.last_ack = Some(now);
                            }
                            Inbound::Nak => crossing.naks += 1,
                            Inbound::Rejected(_) => crossing.rejected += 1,
                        }
                    }
                    crossing.on_the_wire = in_frame.then(|| {
                        let sofar = if was_in_frame {
                            crossing.on_the_wire.map_or(0, |(_, n)| n)
                        } else {
                            0
                        };
                        (if was_in_frame { started } else { now }, sofar + slice.len())
                    });
                    crossing.decoder = codec.stats();
                });
                frame_started = in_frame.then_some(if was_in_frame { started } else { now });
            }
        }
    }
}

//! The frame codec (docs/serial-protocol.md §2) as a `tokio_util::codec` Decoder: turns the raw
//! byte stream of the line into frames, ACKs and NAKs (`serial::frame` writes them). It has no clock: the link layer
//! enforces T1 by calling [`FrameCodec::abandon_partial`] when the line goes quiet mid-frame.
//!
//! The decoder never fails and never panics on input: every byte sequence becomes frames,
//! ACK/NAK, rejected frames (to be answered with NAK) or counted noise, and it keeps at most
//! [`MAX_APDU`] bytes of a partial frame.

use bytes::{Buf, Bytes, BytesMut};
use tokio_util::codec::Decoder;

use super::frame::{frame_crc, ACK, DLE, ETX, MAX_APDU, NAK, STX};

/// What the decoder found on the line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Inbound {
    /// A complete frame with a good CRC: answer ACK. Carries the unstuffed APDU.
    Frame(Bytes),
    /// An ACK byte between frames.
    Ack,
    /// A NAK byte between frames.
    Nak,
    /// A complete frame that must be answered with NAK and discarded.
    Rejected(FrameFault),
}

/// Why a received frame is answered with NAK (§2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FrameFault {
    /// The CRC bytes do not match the APDU.
    BadCrc,
    /// The APDU is longer than [`MAX_APDU`] bytes.
    TooLong,
    /// `DLE` followed by something other than `DLE`, `ETX` or `STX`.
    BadEscape,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Between frames.
    Idle,
    /// Between frames, after a DLE.
    IdleDle,
    /// Inside the APDU.
    Body,
    /// Inside the APDU, after a DLE.
    BodyDle,
    /// After `DLE ETX`, waiting for the CRC low byte.
    CrcLow,
    /// Waiting for the CRC high byte.
    CrcHigh(u8),
}

/// Counters of what the decoder threw away, for logs and tests.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DecoderStats {
    /// Bytes outside a frame that were neither ACK, NAK nor `DLE STX`.
    pub noise_bytes: u64,
    /// Partial frames dropped without an answer (T1, or a new `DLE STX` mid-frame).
    pub abandoned_frames: u64,
    /// Frames answered with NAK.
    pub rejected_frames: u64,
}

/// The frame codec: decodes [`Inbound`] items.
#[derive(Debug)]
pub struct FrameCodec {
    state: State,
    apdu: BytesMut,
    /// Set once the frame being received is known to be bad; its bytes are then skipped until
    /// its end so the NAK goes out after the sender has finished the frame.
    fault: Option<FrameFault>,
    stats: DecoderStats,
}

impl Default for FrameCodec {
    fn default() -> Self {
        Self::new()
    }
}

impl FrameCodec {
    pub fn new() -> Self {
        Self {
            state: State::Idle,
            apdu: BytesMut::new(),
            fault: None,
            stats: DecoderStats::default(),
        }
    }

    /// True while a frame has been started but not finished: the link then applies T1.
    pub fn in_frame(&self) -> bool {
        !matches!(self.state, State::Idle | State::IdleDle)
    }

    /// Drops a partial frame without an answer (T1 expired, §2). Returns whether there was one.
    pub fn abandon_partial(&mut self) -> bool {
        let was_in_frame = self.in_frame();
        if was_in_frame {
            self.stats.abandoned_frames += 1;
        }
        self.reset_to_idle();
        was_in_frame
    }

    /// What has been thrown away so far.
    pub fn stats(&self) -> DecoderStats {
        self.stats
    }

    /// Bytes of partial APDU held right now; never more than [`MAX_APDU`].
    pub fn buffered(&self) -> usize {
        self.apdu.len()
    }

    fn reset_to_idle(&mut self) {
        self.state = State::Idle;
        self.apdu.clear();
        self.fault = None;
    }

    fn start_frame(&mut self) {
        self.apdu.clear();
        self.fault = None;
        self.state = State::Body;
    }

    fn fault(&mut self, fault: FrameFault) {
        if self.fault.is_none() {
            self.fault = Some(fault);
        }
        self.apdu.clear();
    }

    fn push_literal(&mut self, byte: u8) {
        if self.fault.is_some() {
            return;
        }
        if self.apdu.len() >= MAX_APDU {
            self.fault(FrameFault::TooLong);
        } else {
            self.apdu.extend_from_slice(&[byte]);
        }
    }

    /// Copies a run of plain body bytes (no DLE) at once.
    fn push_run(&mut self, run: &[u8]) {
        if self.fault.is_some() {
            return;
        }
        if self.apdu.len() + run.len() > MAX_APDU {
            self.fault(FrameFault::TooLong);
        } else {
            self.apdu.extend_from_slice(run);
        }
    }

    fn finish_frame(&mut self, crc: u16) -> Inbound {
        let item = match self.fault {
            Some(fault) => Inbound::Rejected(fault),
            None if frame_crc(&self.apdu) != crc => Inbound::Rejected(FrameFault::BadCrc),
            None => Inbound::Frame(self.apdu.split().freeze()),
        };
        if matches!(item, Inbound::Rejected(_)) {
            self.stats.rejected_frames += 1;
        }
        self.reset_to_idle();
        item
    }

    /// Feeds one byte; returns an item when one is complete.
    fn step(&mut self, byte: u8) -> Option<Inbound> {
        match self.state {
            State::Idle => match byte {
                ACK => return Some(Inbound::Ack),
                NAK => return Some(Inbound::Nak),
                DLE => self.state = State::IdleDle,
                _ => self.stats.noise_bytes += 1,
            },
            State::IdleDle => match byte {
                STX => self.start_frame(),
                _ => {
                    // The DLE was noise; the byte after it is judged on its own.
                    self.stats.noise_bytes += 1;
                    self.state = State::Idle;
                    return self.step(byte);
                }
            },
            State::Body => {
                if byte == DLE {
                    self.state = State::BodyDle;
                } else {
                    self.push_literal(byte);
                }
            }
            State::BodyDle => match byte {
                DLE => {
                    self.push_literal(DLE);
                    self.state = State::Body;
                }
                ETX => self.state = State::CrcLow,
                STX => {
                    self.stats.abandoned_frames += 1;
                    self.start_frame();
                }
                _ => {
                    self.fault(FrameFault::BadEscape);
                    self.state = State::Body;
                }
            },
            State::CrcLow => self.state = State::CrcHigh(byte),
            State::CrcHigh(low) => {
                return Some(self.finish_frame(u16::from_le_bytes([low, byte])));
            }
        }
        None
    }
}

impl Decoder for FrameCodec {
    type Item = Inbound;
    type Error = std::io::Error;

    /// Consumes bytes from `src` until an item is complete or `src` is empty; never errs.
    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<Inbound>, Self::Error> {
        let mut consumed = 0;
        let mut found = None;
        while consumed < src.len() {
            if self.state == State::Body {
                let rest = &src[consumed..];
                let run = rest.iter().position(|&b| b == DLE).unwrap_or(rest.len());
                if run > 0 {
                    self.push_run(&rest[..run]);
                    consumed += run;
                    continue;
                }
            }
            let byte = src[consumed];
            consumed += 1;
            if let Some(item) = self.step(byte) {
                found = Some(item);
                break;
            }
        }
        src.advance(consumed);
        Ok(found)
    }
}

/// Decodes every item in `bytes` at once (tests, fuzzing, benchmarks).
pub fn decode_all(codec: &mut FrameCodec, bytes: &[u8]) -> Vec<Inbound> {
    let mut buf = BytesMut::from(bytes);
    let mut items = Vec::new();
    while let Ok(Some(item)) = codec.decode(&mut buf) {
        items.push(item);
    }
    items
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::serial::frame::frame_bytes;

    fn frame(apdu: &[u8]) -> Vec<u8> {
        frame_bytes(apdu).unwrap().to_vec()
    }

    #[test]
    fn spec_vectors_decode_to_their_apdus() {
        let vectors: [(&[u8], &str); 3] = [
            (&[0x80, 0x00, 0x00], "10 02 80 00 00 10 03 F5 1F"),
            (&[0x10, 0x41], "10 02 10 10 41 10 03 B0 E8"),
            (
                br#"{"type":"ping","id":1}"#,
                "10 02 7B 22 74 79 70 65 22 3A 22 70 69 6E 67 22 2C 22 69 64 22 3A 31 7D 10 03 B9 CE",
            ),
        ];
        for (apdu, wire) in vectors {
            let bytes: Vec<u8> = wire
                .split(' ')
                .map(|h| u8::from_str_radix(h, 16).unwrap())
                .collect();
            let mut codec = FrameCodec::new();
            assert_eq!(
                decode_all(&mut codec, &bytes),
                vec![Inbound::Frame(Bytes::copy_from_slice(apdu))]
            );
        }
    }

    #[test]
    fn ack_and_nak_between_frames_are_reported_and_noise_is_counted() {
        let mut bytes = vec![0x41, ACK, 0xFF];
        bytes.extend(frame(b"x"));
        bytes.extend([NAK, DLE, 0x41]);
        let mut codec = FrameCodec::new();
        assert_eq!(
            decode_all(&mut codec, &bytes),
            vec![
                Inbound::Ack,
                Inbound::Frame(Bytes::from_static(b"x")),
                Inbound::Nak
            ]
        );
        assert_eq!(codec.stats().noise_bytes, 4);
    }

    #[test]
    fn a_stray_dle_before_an_ack_does_not_hide_the_ack() {
        let mut codec = FrameCodec::new();
        assert_eq!(decode_all(&mut codec, &[DLE, ACK]), vec![Inbound::Ack]);
    }

    #[test]
    fn bad_crc_is_rejected_and_the_next_frame_is_read() {
        let mut bytes = frame(b"hello");
        let last = bytes.len() - 1;
        bytes[last] ^= 0xFF;
        bytes.extend(frame(b"again"));
        let mut codec = FrameCodec::new();
        assert_eq!(
            decode_all(&mut codec, &bytes),
            vec![
                Inbound::Rejected(FrameFault::BadCrc),
                Inbound::Frame(Bytes::from_static(b"again"))
            ]
        );
    }

    #[test]
    fn bad_escape_is_rejected_at_the_end_of_the_frame() {
        let mut bytes = vec![DLE, STX, b'a', DLE, 0x41, b'b', DLE, ETX, 0, 0];
        bytes.extend(frame(b"ok"));
        let mut codec = FrameCodec::new();
        assert_eq!(
            decode_all(&mut codec, &bytes),
            vec![
                Inbound::Rejected(FrameFault::BadEscape),
                Inbound::Frame(Bytes::from_static(b"ok"))
            ]
        );
    }

    #[test]
    fn dle_stx_inside_a_frame_restarts_it_without_an_answer() {
        let mut bytes = vec![DLE, STX, b'p', b'a', b'r'];
        bytes.extend(frame(b"whole"));
        let mut codec = FrameCodec::new();
        assert_eq!(
            decode_all(&mut codec, &bytes),
            vec![Inbound::Frame(Bytes::from_static(b"whole"))]
        );
        assert_eq!(codec.stats().abandoned_frames, 1);
    }

    #[test]
    fn over_long_apdu_is_rejected_and_memory_stays_bounded() {
        let apdu = vec![b'z'; MAX_APDU + 100];
        let mut bytes = vec![DLE, STX];
        bytes.extend(&apdu);
        bytes.extend([DLE, ETX]);
        bytes.extend(frame_crc(&apdu).to_le_bytes());
        let mut codec = FrameCodec::new();
        let mut buf = BytesMut::new();
        let mut items = Vec::new();
        for chunk in bytes.chunks(7) {
            buf.extend_from_slice(chunk);
            while let Some(item) = codec.decode(&mut buf).unwrap() {
                items.push(item);
            }
            assert!(codec.buffered() <= MAX_APDU);
        }
        assert_eq!(items, vec![Inbound::Rejected(FrameFault::TooLong)]);
    }

    #[test]
    fn apdu_of_exactly_the_limit_is_accepted() {
        let apdu = vec![DLE; MAX_APDU];
        let mut codec = FrameCodec::new();
        assert_eq!(
            decode_all(&mut codec, &frame(&apdu)),
            vec![Inbound::Frame(Bytes::from(apdu))]
        );
    }

    #[test]
    fn abandoning_a_partial_frame_turns_its_tail_into_noise() {
        let bytes = frame(b"cut");
        let mut codec = FrameCodec::new();
        assert!(decode_all(&mut codec, &bytes[..4]).is_empty());
        assert!(codec.in_frame());
        assert!(codec.abandon_partial());
        assert!(decode_all(&mut codec, &bytes[4..]).is_empty());
        assert!(!codec.in_frame());
    }
}

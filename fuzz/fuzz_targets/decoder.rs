//! Fuzzes the serial frame decoder (serial-link.md §2) and the message parser behind it: no
//! input may panic, the decoder must consume everything it is given, hold at most one APDU,
//! and every frame it accepts must re-encode and decode to itself.
#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use pos_agent::serial::codec::{decode_all, FrameCodec, Inbound};
use pos_agent::serial::frame::{frame_bytes, MAX_APDU};
use pos_agent::serial::message::{parse_incoming, AgentRequest, TerminalRequest};
use tokio_util::codec::Decoder;

fuzz_target!(|data: &[u8]| {
    // The first byte picks how the line chops the rest into reads.
    let Some((&chunk, line)) = data.split_first() else {
        return;
    };
    let mut codec = FrameCodec::new();
    let mut buffer = BytesMut::new();
    for piece in line.chunks(usize::from(chunk).max(1)) {
        buffer.extend_from_slice(piece);
        while let Ok(Some(item)) = codec.decode(&mut buffer) {
            if let Inbound::Frame(apdu) = item {
                assert!(apdu.len() <= MAX_APDU);
                let again = frame_bytes(&apdu).expect("an accepted APDU fits in a frame");
                assert_eq!(
                    decode_all(&mut FrameCodec::new(), &again),
                    vec![Inbound::Frame(apdu.clone())]
                );
                let _ = parse_incoming::<TerminalRequest>(&apdu);
                let _ = parse_incoming::<AgentRequest>(&apdu);
            }
        }
        assert!(buffer.is_empty());
        assert!(codec.buffered() <= MAX_APDU);
    }
});

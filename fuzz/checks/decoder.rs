//! The serial line (docs/serial-protocol.md): the frame decoder and the message parser behind it.
//! Properties, beyond "no panic":
//! - the decoder consumes everything it is given and holds at most one APDU (bounded memory,
//!   however the line chops its reads);
//! - every frame it accepts re-encodes and decodes to itself (round trip);
//! - every message the parser accepts, request or reply, re-encodes and parses to itself with
//!   the same `id`/`re`; what it refuses is a typed `Incoming` variant carrying a reason.

use bytes::BytesMut;
use pos_agent::serial::codec::{decode_all, FrameCodec, Inbound};
use pos_agent::serial::frame::{frame_bytes, MAX_APDU};
use pos_agent::serial::message::{
    encode_reply, encode_request, parse_incoming, AgentRequest, Incoming, TerminalRequest,
};
use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio_util::codec::Decoder;

/// Checks one input; panics when a property does not hold.
pub fn check(data: &[u8]) {
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
                message_round_trip::<TerminalRequest>(&apdu);
                message_round_trip::<AgentRequest>(&apdu);
            }
        }
        assert!(buffer.is_empty());
        assert!(codec.buffered() <= MAX_APDU);
    }
}

fn message_round_trip<In>(apdu: &[u8])
where
    In: DeserializeOwned + Serialize + PartialEq + std::fmt::Debug,
{
    match parse_incoming::<In>(apdu) {
        Incoming::Request {
            id,
            body: Ok(request),
        } => {
            let again = encode_request(id, &request).expect("an accepted request encodes");
            match parse_incoming::<In>(&again) {
                Incoming::Request {
                    id: id2,
                    body: Ok(request2),
                } => {
                    assert_eq!(id, id2);
                    assert_eq!(request, request2);
                }
                other => panic!("{request:?} re-encoded as {again:?} parses as {other:?}"),
            }
        }
        Incoming::Reply {
            re,
            body: Ok(reply),
        } => {
            let again = encode_reply(re, &reply).expect("an accepted reply encodes");
            match parse_incoming::<In>(&again) {
                Incoming::Reply {
                    re: re2,
                    body: Ok(reply2),
                } => {
                    assert_eq!(re, re2);
                    assert_eq!(reply, reply2);
                }
                other => panic!("{reply:?} re-encoded as {again:?} parses as {other:?}"),
            }
        }
        Incoming::Request {
            body: Err(reason), ..
        }
        | Incoming::Reply {
            body: Err(reason), ..
        }
        | Incoming::Anonymous { reason }
        | Incoming::Unreadable { reason } => assert!(!reason.is_empty()),
    }
}

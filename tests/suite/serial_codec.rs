//! Property tests of the frame codec: any APDU survives encode → decode however the bytes are
//! chunked, and arbitrary bytes never make the decoder panic or hold more than one APDU.
use bytes::{Bytes, BytesMut};
use pos_agent::serial::codec::{decode_all, FrameCodec, Inbound};
use pos_agent::serial::frame::{frame_bytes, DLE, MAX_APDU};
use proptest::prelude::*;
use tokio_util::codec::Decoder;

/// APDUs rich in DLE and control bytes, up to the limit.
fn apdu() -> impl Strategy<Value = Vec<u8>> {
    // Generated as plain bytes and mapped, which is much cheaper than a per-byte strategy.
    prop::collection::vec(any::<u8>(), 0..=MAX_APDU).prop_map(|bytes| {
        bytes
            .into_iter()
            .map(|b| match b % 8 {
                0 => DLE,
                1 => [0x02, 0x03, 0x06, 0x15][usize::from(b >> 6)],
                _ => b,
            })
            .collect()
    })
}

fn decode_in_chunks(codec: &mut FrameCodec, bytes: &[u8], chunk: usize) -> Vec<Inbound> {
    let mut buf = BytesMut::new();
    let mut items = Vec::new();
    for piece in bytes.chunks(chunk.max(1)) {
        buf.extend_from_slice(piece);
        while let Some(item) = codec.decode(&mut buf).unwrap() {
            items.push(item);
        }
        assert!(codec.buffered() <= MAX_APDU);
        assert!(buf.is_empty(), "the decoder left input behind");
    }
    items
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn encode_then_decode_returns_any_apdu(apdu in apdu(), chunk in 1usize..600) {
        let frame = frame_bytes(&apdu).unwrap();
        let mut codec = FrameCodec::new();
        let items = decode_in_chunks(&mut codec, &frame, chunk);
        prop_assert_eq!(items, vec![Inbound::Frame(Bytes::from(apdu))]);
    }

    #[test]
    fn frames_after_noise_without_control_bytes_are_still_found(
        noise in prop::collection::vec(any::<u8>().prop_filter("not a control byte", |b| ![0x10, 0x06, 0x15].contains(b)), 0..64),
        apdu in prop::collection::vec(any::<u8>(), 0..256),
    ) {
        let mut bytes = noise.clone();
        bytes.extend_from_slice(&frame_bytes(&apdu).unwrap());
        let mut codec = FrameCodec::new();
        prop_assert_eq!(decode_all(&mut codec, &bytes), vec![Inbound::Frame(Bytes::from(apdu))]);
        prop_assert_eq!(codec.stats().noise_bytes, noise.len() as u64);
    }

    #[test]
    fn decoder_never_panics_and_stays_within_its_memory_bound(
        bytes in prop::collection::vec(any::<u8>(), 0..12_000).prop_map(|bytes| {
            bytes.into_iter().map(|b| match b % 7 { 0 => DLE, 1 => 0x02, 2 => 0x03, _ => b }).collect::<Vec<u8>>()
        }),
        chunk in 1usize..3000,
    ) {
        let mut codec = FrameCodec::new();
        for item in decode_in_chunks(&mut codec, &bytes, chunk) {
            if let Inbound::Frame(apdu) = item {
                prop_assert!(apdu.len() <= MAX_APDU);
            }
        }
    }

    #[test]
    fn a_single_flipped_bit_never_yields_a_different_apdu(
        apdu in prop::collection::vec(any::<u8>(), 1..512),
        position in any::<prop::sample::Index>(),
        bit in 0u8..8,
    ) {
        let mut frame = frame_bytes(&apdu).unwrap().to_vec();
        let at = position.index(frame.len());
        frame[at] ^= 1 << bit;
        let mut codec = FrameCodec::new();
        for item in decode_all(&mut codec, &frame) {
            if let Inbound::Frame(got) = item {
                prop_assert_eq!(&got[..], &apdu[..], "corruption went undetected");
            }
        }
    }
}

/// The hex dump of one frame as `docs/serial-protocol.md` prints it: 16 bytes a line, offset,
/// hex, ASCII.
fn dump(bytes: &[u8]) -> String {
    bytes
        .chunks(16)
        .enumerate()
        .map(|(line, chunk)| {
            let hex: Vec<String> = chunk.iter().map(|b| format!("{b:02x}")).collect();
            let ascii: String = chunk
                .iter()
                .map(|&b| {
                    if (0x20..0x7f).contains(&b) {
                        b as char
                    } else {
                        '.'
                    }
                })
                .collect();
            format!("{:04x}  {:<47}  {}\n", line * 16, hex.join(" "), ascii)
        })
        .collect()
}

#[test]
fn documented_sale_exchange_is_byte_for_byte_what_the_link_writes() {
    use pos_agent::serial::message::{encode_reply, encode_request};
    use pos_agent::serial::{Reply, SaleOrder, TerminalRequest};

    let code = "6f1c1a7e-3b7f-4d0e-9a51-0f2b7c3d9e10".parse().unwrap();
    let sale = encode_request(
        1,
        &TerminalRequest::Sale(SaleOrder {
            merchant_unique_code: code,
            amount_minor: 2250.try_into().unwrap(),
            currency_id: None,
            display_code: None,
        }),
    )
    .unwrap();
    let started = encode_reply(
        1,
        &Reply::SaleStarted {
            payment_request_id: "7cc7c8e8-9d92-41b6-9378-e9ecef5a7812".into(),
            merchant_unique_code: code,
        },
    )
    .unwrap();
    let doc = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/docs/serial-protocol.md"
    ))
    .unwrap();
    for frame in [sale, started] {
        let expected = dump(&frame_bytes(&frame).unwrap());
        assert!(
            doc.contains(&expected),
            "docs/serial-protocol.md lacks this frame:\n{expected}"
        );
    }
}

//! The byte-level shape of one frame (docs/serial-protocol.md §2): control bytes, the APDU limit,
//! CRC-16/KERMIT and DLE stuffing. Shared by the codec, the benchmarks and the fuzz target so
//! there is exactly one definition of what goes on the wire.

use bytes::{BufMut, BytesMut};

/// Data link escape: starts `DLE STX`/`DLE ETX` and is doubled inside an APDU.
pub const DLE: u8 = 0x10;
/// Start of text: `DLE STX` opens a frame.
pub const STX: u8 = 0x02;
/// End of text: `DLE ETX` closes the APDU; the two CRC bytes follow.
pub const ETX: u8 = 0x03;
/// Positive acknowledgement, sent between frames.
pub const ACK: u8 = 0x06;
/// Negative acknowledgement, sent between frames.
pub const NAK: u8 = 0x15;

/// The largest APDU (unstuffed) a frame may carry (§2).
pub const MAX_APDU: usize = 4096;
/// The largest frame on the wire: every APDU byte doubled, plus `DLE STX`, `DLE ETX`, two CRC
/// bytes.
pub const MAX_FRAME: usize = 2 * MAX_APDU + 6;

const KERMIT: crc::Crc<u16> = crc::Crc::<u16>::new(&crc::CRC_16_KERMIT);

/// CRC-16/KERMIT over the unstuffed APDU followed by the single byte ETX (§2).
pub fn frame_crc(apdu: &[u8]) -> u16 {
    let mut digest = KERMIT.digest();
    digest.update(apdu);
    digest.update(&[ETX]);
    digest.finalize()
}

/// Why an APDU cannot be framed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("APDU of {len} bytes exceeds the {MAX_APDU}-byte limit")]
pub struct ApduTooLong {
    pub len: usize,
}

/// Appends the frame carrying `apdu` to `out`: `DLE STX | stuffed APDU | DLE ETX | CRC lo | CRC hi`.
pub fn encode_frame(apdu: &[u8], out: &mut BytesMut) -> Result<(), ApduTooLong> {
    if apdu.len() > MAX_APDU {
        return Err(ApduTooLong { len: apdu.len() });
    }
    let escapes = apdu.iter().filter(|&&b| b == DLE).count();
    out.reserve(apdu.len() + escapes + 6);
    out.put_slice(&[DLE, STX]);
    let mut rest = apdu;
    while let Some(pos) = rest.iter().position(|&b| b == DLE) {
        out.put_slice(&rest[..=pos]);
        out.put_u8(DLE);
        rest = &rest[pos + 1..];
    }
    out.put_slice(rest);
    out.put_slice(&[DLE, ETX]);
    out.put_u16_le(frame_crc(apdu));
    Ok(())
}

/// The frame carrying `apdu` as a fresh buffer.
pub fn frame_bytes(apdu: &[u8]) -> Result<BytesMut, ApduTooLong> {
    let mut out = BytesMut::new();
    encode_frame(apdu, &mut out)?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(bytes: &[u8]) -> String {
        bytes
            .iter()
            .map(|b| format!("{b:02X}"))
            .collect::<Vec<_>>()
            .join(" ")
    }

    #[test]
    fn kermit_check_value_is_0x2189() {
        assert_eq!(KERMIT.checksum(b"123456789"), 0x2189);
    }

    #[test]
    fn spec_vector_binary_apdu() {
        assert_eq!(
            hex(&frame_bytes(&[0x80, 0x00, 0x00]).unwrap()),
            "10 02 80 00 00 10 03 F5 1F"
        );
    }

    #[test]
    fn spec_vector_apdu_with_dle_is_doubled() {
        assert_eq!(
            hex(&frame_bytes(&[0x10, 0x41]).unwrap()),
            "10 02 10 10 41 10 03 B0 E8"
        );
    }

    #[test]
    fn spec_vector_json_ping() {
        assert_eq!(
            hex(&frame_bytes(br#"{"type":"ping","id":1}"#).unwrap()),
            "10 02 7B 22 74 79 70 65 22 3A 22 70 69 6E 67 22 2C 22 69 64 22 3A 31 7D 10 03 B9 CE"
        );
    }

    #[test]
    fn apdu_over_the_limit_is_refused() {
        assert_eq!(
            frame_bytes(&[0; MAX_APDU + 1]).unwrap_err(),
            ApduTooLong { len: MAX_APDU + 1 }
        );
        assert_eq!(frame_bytes(&[DLE; MAX_APDU]).unwrap().len(), MAX_FRAME);
    }
}

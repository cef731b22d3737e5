//! Serial link figures (docs/performance.md, "Serial link"): codec throughput in MB/s (encode and
//! decode) and the round-trip time of a `status` request over a real pty pair, agent's link on
//! the slave through the real port code, terminal simulator on the master.
//!
//! Run: `cargo bench --bench serial` (prints the figures; no assertions).

use std::time::{Duration, Instant};

use bytes::BytesMut;
use pos_agent::config::SerialConfig;
use pos_agent::serial::codec::{FrameCodec, Inbound};
use pos_agent::serial::frame::{encode_frame, DLE};
use pos_agent::serial::{spawn_link, LinkEvent, LinkSettings, Reply};
use pos_agent::simulator::terminal::TerminalSimulator;
use pos_agent::simulator::virtual_serial::VirtualSerial;
use tokio_util::codec::Decoder;

const APDU_LEN: usize = 1024;
const TOTAL_BYTES: usize = 64 * 1024 * 1024;
const ROUND_TRIPS: usize = 1000;

/// A JSON-like APDU with one DLE in 64 bytes (more than real JSON, which has none).
fn sample_apdu() -> Vec<u8> {
    let mut state = 0x2545_F491_u32;
    (0..APDU_LEN)
        .map(|i| {
            state ^= state << 13;
            state ^= state >> 17;
            state ^= state << 5;
            if i % 64 == 63 {
                DLE
            } else {
                b' ' + (state % 94) as u8
            }
        })
        .collect()
}

fn mb_per_s(bytes: usize, elapsed: Duration) -> f64 {
    bytes as f64 / 1e6 / elapsed.as_secs_f64()
}

fn codec_throughput() {
    let apdu = sample_apdu();
    let frames = TOTAL_BYTES / APDU_LEN;

    let mut wire = BytesMut::with_capacity(frames * (APDU_LEN + 32));
    let start = Instant::now();
    for _ in 0..frames {
        encode_frame(&apdu, &mut wire).unwrap_or_else(|e| panic!("{e}"));
    }
    let encode = start.elapsed();

    let mut codec = FrameCodec::new();
    let mut decoded = 0usize;
    let mut buffer = BytesMut::new();
    let start = Instant::now();
    for chunk in wire.chunks(4096) {
        buffer.extend_from_slice(chunk);
        while let Ok(Some(item)) = codec.decode(&mut buffer) {
            if let Inbound::Frame(apdu) = item {
                decoded += apdu.len();
            }
        }
    }
    let decode = start.elapsed();
    assert_eq!(decoded, frames * APDU_LEN, "the benchmark lost frames");

    println!(
        "codec encode: {:.0} MB/s of APDU ({} frames of {} bytes)",
        mb_per_s(frames * APDU_LEN, encode),
        frames,
        APDU_LEN
    );
    println!(
        "codec decode: {:.0} MB/s of APDU (fed in 4096-byte reads)",
        mb_per_s(frames * APDU_LEN, decode)
    );
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let index = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[index]
}

async fn status_round_trip() {
    let line = VirtualSerial::open().expect("pty pair");
    let config = SerialConfig {
        device: line.slave_path().to_path_buf(),
        ..SerialConfig::default()
    };
    let (_agent, mut events) = spawn_link(config);
    tokio::spawn(async move {
        while let Some(event) = events.recv().await {
            if let LinkEvent::Request(request) = event {
                request.reply(Reply::status(
                    Some("7f0c2b1e-connection".into()),
                    true,
                    vec!["pr-1".into(), "pr-2".into()],
                ));
            }
        }
    });
    let terminal = TerminalSimulator::over(line, LinkSettings::default());
    terminal.wait_until_up().await;

    for _ in 0..50 {
        terminal.status().await.expect("warm-up status");
    }
    let mut times = Vec::with_capacity(ROUND_TRIPS);
    for _ in 0..ROUND_TRIPS {
        let start = Instant::now();
        terminal.status().await.expect("status");
        times.push(start.elapsed());
    }
    times.sort();
    println!(
        "status round trip over a pty pair ({ROUND_TRIPS} requests): median {:?}, p99 {:?}, max {:?}",
        percentile(&times, 0.5),
        percentile(&times, 0.99),
        times[times.len() - 1]
    );
}

fn main() {
    // `cargo test --benches` runs this with `--bench` absent; keep that quick.
    if !std::env::args().any(|a| a == "--bench") {
        println!("serial bench: run with `cargo bench --bench serial`");
        return;
    }
    codec_throughput();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(status_round_trip());
}

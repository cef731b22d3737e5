//! Serial link figures (docs/performance.md, "Serial link"): codec throughput in MB/s (encode and
//! decode) and the round-trip time of a `status` request over a real pty pair, agent's link on
//! the slave through the real port code, terminal simulator on the master; then the whole
//! daemon on a line at 9600, 19200 and 115200 baud (the line-speed emulator of the test
//! support): the round trip of a `status` whose reply fills the APDU, and of a sale.
//!
//! Run: `cargo bench --bench serial` (prints the figures; no assertions); `-- line` runs only
//! the line-speed figures.

// The test suite's support code; a benchmark uses only part of it.
#[allow(dead_code)]
#[path = "../tests/suite/support/mod.rs"]
mod support;

use std::time::{Duration, Instant};

use bytes::BytesMut;
use pos_agent::config::SerialConfig;
use pos_agent::serial::codec::{FrameCodec, Inbound};
use pos_agent::serial::frame::{encode_frame, DLE};
use pos_agent::serial::message::TerminalRequest;
use pos_agent::serial::{spawn_link, LineTiming, LinkEvent, LinkSettings, Reply};
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

/// Payments pending in the line-speed figures: enough for `status` to fill the APDU.
const PENDING: usize = 120;

fn spread(times: &mut [Duration]) -> String {
    times.sort();
    format!(
        "median {:.3} s, min {:.3} s, max {:.3} s",
        percentile(times, 0.5).as_secs_f64(),
        times[0].as_secs_f64(),
        times[times.len() - 1].as_secs_f64()
    )
}

/// The whole daemon (release binary) and the terminal simulator on a line of `baud_rate`.
async fn line_round_trips(baud_rate: u32, statuses: usize, sales: usize) {
    let mut agent = support::daemon::Agent::connected(support::daemon::Setup {
        baud_rate: Some(baud_rate),
        log_level: "warn",
        ..support::daemon::Setup::default()
    })
    .await;
    agent.restart_with_pending(PENDING).await;
    // One of each first: the connection pools and the agent's opening exchange settle.
    let mut reply_len = 0;
    if let Reply::Status { pending, .. } = agent.terminal.status().await.expect("status") {
        reply_len = pending.len();
    }
    agent.started(100).await;

    let mut status_times = Vec::new();
    for _ in 0..statuses {
        let start = Instant::now();
        agent
            .terminal
            .request(TerminalRequest::Status)
            .await
            .expect("status");
        status_times.push(start.elapsed());
    }
    let mut sale_times = Vec::new();
    for _ in 0..sales {
        let start = Instant::now();
        agent.started(250).await;
        sale_times.push(start.elapsed());
    }
    // What crosses the line for one exchange: the request frame, its ACK, the reply frame.
    let tap = agent.line().tap();
    let frame_len = |crossing: &support::line::Crossing, kind: &str| {
        crossing
            .first_of_type(kind)
            .map_or(0, |frame| frame.apdu.len() + 6)
    };
    let status_bytes = (
        frame_len(&tap.to_agent, "status"),
        frame_len(&tap.to_terminal, "status"),
    );
    let sale_bytes = (
        frame_len(&tap.to_agent, "sale"),
        frame_len(&tap.to_terminal, "sale_started"),
    );
    let wire = LineTiming::new(baud_rate, 10);
    let on_wire =
        |(request, reply): (usize, usize)| wire.wire_time(request + 1 + reply).as_secs_f64();
    println!(
        "{baud_rate:>6} baud: status with {PENDING} pending ({reply_len} ids; {} + 1 + {} bytes, {:.3} s on the wire), {statuses} round trips: {}",
        status_bytes.0,
        status_bytes.1,
        on_wire(status_bytes),
        spread(&mut status_times)
    );
    println!(
        "{baud_rate:>6} baud: sale -> sale_started ({} + 1 + {} bytes, {:.3} s on the wire), {sales} round trips: {}",
        sale_bytes.0,
        sale_bytes.1,
        on_wire(sale_bytes),
        spread(&mut sale_times)
    );
    agent.finish().await;
}

fn main() {
    // `cargo test --benches` runs this with `--bench` absent; keep that quick.
    if !std::env::args().any(|a| a == "--bench") {
        println!("serial bench: run with `cargo bench --bench serial`");
        return;
    }
    let line_only = std::env::args().any(|a| a == "line");
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    if !line_only {
        codec_throughput();
        runtime.block_on(status_round_trip());
    }
    runtime.block_on(async {
        line_round_trips(9600, 3, 10).await;
        line_round_trips(19_200, 5, 10).await;
        line_round_trips(115_200, 20, 20).await;
    });
}

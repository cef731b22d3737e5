//! Figures for the agent daemon (`docs/performance.md`): the release binary driven exactly as
//! the tests drive it (payment API simulator on loopback, terminal simulator on a pty pair,
//! `NOTIFY_SOCKET`). Prints figures; asserts nothing about speed.
//!
//! Run: `cargo bench --bench agent` (add `-- quick` to skip the 20 s idle CPU measurement,
//! `-- storage` to run only the storage-latency figures).
//!
//! Storage latency: the daemon runs with `tools/slow-fsync-shim.c` preloaded, which makes every
//! `fsync`/`fdatasync` 0, 20 or 100 ms longer (an SD card, one under write pressure); the
//! daemon's code has no hook for it.

// The test suite's support code; a benchmark uses only part of it.
#[allow(dead_code)]
#[path = "../tests/suite/support/mod.rs"]
mod support;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant, SystemTime};

use nix::sys::signal::Signal;
use pos_agent::ids::PaymentRequestId;
use pos_agent::serial::message::{PaymentResultStatus, Reply, SaleOrder, TerminalRequest};
use pos_agent::serial::LinkHandle;
use pos_agent::state::{CancelReason, PaymentSource, PendingPayment, StateStore};
use support::daemon::{Agent, Setup};
use uuid::Uuid;

const LATENCY: Duration = Duration::from_millis(50);
const CONCURRENCY: usize = 8;

fn setup() -> Setup {
    Setup {
        log_level: "warn",
        shutdown_toml: format!("deadline = \"60s\"\nconcurrency = {CONCURRENCY}\n"),
        ..Setup::default()
    }
}

/// [`setup`] with every sync `ms` milliseconds slower.
fn slow_setup(ms: u64) -> Setup {
    Setup {
        extra_env: support::slow_fsync::env(ms),
        ..setup()
    }
}

/// Resident set size of a process, in KiB.
fn rss_kib(pid: i32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

/// CPU time a process has used (user + system), from `/proc/PID/schedstat` (nanoseconds).
fn cpu_time(pid: i32) -> Duration {
    let text = std::fs::read_to_string(format!("/proc/{pid}/schedstat")).unwrap_or_default();
    let ns = text
        .split_whitespace()
        .next()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    Duration::from_nanos(ns)
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let index = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[index.min(sorted.len() - 1)]
}

fn ms_text(d: Duration) -> String {
    ms(d)
}

fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1000.0)
}

async fn connected() -> Agent {
    connected_with(setup()).await
}

async fn connected_with(setup: Setup) -> Agent {
    let mut agent = Agent::start(setup).await;
    agent.wait_notification("STATUS=connected").await;
    agent
}

fn sale(code: Uuid) -> TerminalRequest {
    TerminalRequest::Sale(SaleOrder {
        merchant_unique_code: code,
        amount_minor: std::num::NonZeroU64::new(250).unwrap(),
        currency_id: None,
        display_code: None,
    })
}

/// One sale to `sale_started`; its PaymentRequestId.
async fn start_sale(link: &LinkHandle<TerminalRequest>) -> String {
    match link.request(sale(Uuid::new_v4())).await {
        Ok(Reply::SaleStarted {
            payment_request_id, ..
        }) => payment_request_id,
        other => panic!("expected sale_started, got {other:?}"),
    }
}

/// Runs `total` jobs, `in_flight` at a time, on this task.
async fn in_flight<F: std::future::Future<Output = ()>>(
    total: usize,
    in_flight: usize,
    job: impl Fn() -> F,
) {
    let left = AtomicUsize::new(total);
    let take = || {
        left.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1))
            .is_ok()
    };
    let workers = (0..in_flight).map(|_| async {
        while take() {
            job().await;
        }
    });
    futures_util::future::join_all(workers).await;
}

/// What the churn measured.
struct Churn {
    status: Vec<Duration>,
    sales_per_second: f64,
}

/// `total` sales, `in_flight` at a time, each ended by its `payment_result`, while `status`
/// requests go one after another on the same link.
async fn churn(agent: &Agent, total: usize, parallel: usize) -> Churn {
    let link = agent.terminal.link().clone();
    let done = AtomicBool::new(false);
    let sales = async {
        let start = Instant::now();
        in_flight(total, parallel, || async {
            let id = start_sale(&link).await;
            let result = TerminalRequest::PaymentResult {
                payment_request_id: id,
                status: PaymentResultStatus::Succeeded,
            };
            match link.request(result).await {
                Ok(Reply::Ok(_)) => {}
                other => panic!("expected ok to payment_result, got {other:?}"),
            }
        })
        .await;
        let took = start.elapsed();
        done.store(true, Ordering::Relaxed);
        took
    };
    let probe = async {
        let mut times = Vec::new();
        while !done.load(Ordering::Relaxed) {
            let start = Instant::now();
            match link.request(TerminalRequest::Status).await {
                Ok(Reply::Status { .. }) => times.push(start.elapsed()),
                other => panic!("expected a status reply, got {other:?}"),
            }
        }
        times
    };
    let (took, mut status) = tokio::join!(sales, probe);
    status.sort();
    Churn {
        status,
        sales_per_second: total as f64 / took.as_secs_f64(),
    }
}

/// Bytes the state writer writes per change with `pending` payments in state, measured on the
/// library's store on this machine's disk: (the journal's growth per change over the first 150
/// changes, before any compaction; everything written per change over 9000 changes, the
/// compactions they cause included; the snapshot's size).
fn bytes_per_change(pending: usize) -> (f64, f64, u64) {
    let dir = tempfile::tempdir().unwrap();
    let mut store = StateStore::open(dir.path()).unwrap();
    let now = SystemTime::now();
    let id = |i: usize| PaymentRequestId::stored(format!("{i:08x}-0000-4000-8000-000000000000"));
    store
        .update(|state| {
            for i in 0..pending {
                state.track_payment(&id(i), PendingPayment::new(PaymentSource::Elsewhere, now));
            }
            Ok(())
        })
        .unwrap();
    store.commit().wait().unwrap();
    let snapshot = std::fs::metadata(store.file()).map_or(0, |m| m.len());
    let before = store.writer_stats().bytes_written;
    let rounds = 3000;
    let mut record_only = 0.0;
    for i in 0..rounds {
        // One payment appears, is marked for a cancel, and goes: the pending count stays put.
        let extra = id(1_000_000 + i);
        store
            .track_payment(&extra, PendingPayment::new(PaymentSource::Elsewhere, now))
            .unwrap();
        store
            .mark_cancel_requested(&extra, CancelReason::Operator, now)
            .unwrap();
        store
            .finish_payment(&extra, pos_agent::state::PaymentOutcome::Cancelled, now)
            .unwrap();
        if i % 50 == 0 {
            store.commit().wait().unwrap();
        }
        if i == 49 {
            store.commit().wait().unwrap();
            let journal = std::fs::metadata(store.journal_file()).map_or(0, |m| m.len());
            record_only = journal as f64 / 150.0;
        }
    }
    store.commit().wait().unwrap();
    let written = store.writer_stats().bytes_written - before;
    (record_only, written as f64 / (rounds * 3) as f64, snapshot)
}

fn check(value: f64, target: f64) -> &'static str {
    if value <= target {
        "meets"
    } else {
        "MISSES"
    }
}

/// The median time of one small append and `fdatasync` on this machine's temporary
/// filesystem, without the shim: what a sync costs before the shim adds its delay.
fn native_sync() -> Duration {
    use std::io::Write as _;
    let dir = tempfile::tempdir().unwrap();
    let mut file = std::fs::File::create(dir.path().join("probe")).unwrap();
    let mut times: Vec<Duration> = (0..50)
        .map(|_| {
            let start = Instant::now();
            file.write_all(&[b'x'; 200]).unwrap();
            file.sync_data().unwrap();
            start.elapsed()
        })
        .collect();
    times.sort();
    percentile(&times, 0.5)
}

/// The storage-latency axis: the figures of `docs/performance.md`, "Slow storage".
async fn storage_figures() {
    println!("\n== storage latency (fsync/fdatasync delayed by the LD_PRELOAD shim) ==");
    let native = native_sync();
    println!(
        "one native fdatasync (small append, this machine, no shim): median {}; a sync at +N ms costs N ms + that",
        ms_text(native)
    );
    let mut p99_at_0 = None;
    let mut rate_at_0 = None;
    for ms in [0u64, 20, 100] {
        let agent = connected_with(slow_setup(ms)).await;
        // Warm-up: the first sales establish the TCP connection to the API and the first snapshot.
        churn(&agent, 32, 16).await;
        let figures = churn(&agent, 200, 16).await;
        let p50 = percentile(&figures.status, 0.5);
        let p99 = percentile(&figures.status, 0.99);
        let base_p99 = *p99_at_0.get_or_insert(p99);
        let base_rate = *rate_at_0.get_or_insert(figures.sales_per_second);
        println!(
            "fsync +{ms:>3} ms | status round trip during churn (200 sales + results, 16 in flight; {} probes): median {}, p99 {} = x{:.2} the 0 ms p99 (target <= x1.5: {}) | sales completed {:.1}/s = x{:.2} the 0 ms rate (target >= x0.5 at 20 ms: {})",
            figures.status.len(),
            ms_text(p50),
            ms_text(p99),
            p99.as_secs_f64() / base_p99.as_secs_f64(),
            check(p99.as_secs_f64() / base_p99.as_secs_f64(), 1.5),
            figures.sales_per_second,
            figures.sales_per_second / base_rate,
            if figures.sales_per_second >= base_rate / 2.0 { "meets" } else { "MISSES" },
        );
        let sync = Duration::from_millis(ms) + native;
        println!(
            "fsync +{ms:>3} ms | ceiling of that rate with 16 in flight and three syncs one after another per sale (intent, id, result): 16 / (3 x {}) = {:.1}/s",
            ms_text(sync),
            16.0 / (3.0 * sync.as_secs_f64())
        );

        let link = agent.terminal.link().clone();
        let start = Instant::now();
        in_flight(200, 16, || async {
            start_sale(&link).await;
        })
        .await;
        let batch = start.elapsed();
        println!(
            "fsync +{ms:>3} ms | 200 sales, 16 in flight, to sale_started: {} (target at 20 ms <= 2 s: {})",
            ms_text(batch),
            check(batch.as_secs_f64(), 2.0)
        );

        let mut round_trips = Vec::new();
        for _ in 0..50 {
            let start = Instant::now();
            start_sale(&link).await;
            round_trips.push(start.elapsed());
        }
        round_trips.sort();
        let median = percentile(&round_trips, 0.5);
        let target = (Duration::from_millis(ms) + native) * 2 + Duration::from_millis(10);
        println!(
            "fsync +{ms:>3} ms | sale round trip, API at 0 ms (50 sales one by one): median {}, p99 {} (target at 20 ms: two syncs ({ms} ms + native each) + 10 ms = {}: {})",
            ms_text(median),
            ms_text(percentile(&round_trips, 0.99)),
            ms_text(target),
            check(median.as_secs_f64(), target.as_secs_f64())
        );
        agent.finish().await;
    }

    for n in [1usize, 100, 500] {
        let ms = 20u64;
        let mut agent = connected_with(slow_setup(ms)).await;
        let link = agent.terminal.link().clone();
        in_flight(n, 16, || async {
            start_sale(&link).await;
        })
        .await;
        agent.sim.set_latency(LATENCY);
        let start = Instant::now();
        agent.signal(Signal::SIGTERM);
        let status = agent.wait_exit().await;
        let took = start.elapsed();
        let target =
            (LATENCY * (n.div_ceil(CONCURRENCY) as u32 + 1) + Duration::from_millis(ms) + native)
                .mul_f64(1.2);
        println!(
            "fsync +{ms} ms | SIGTERM -> exit, {n:>3} pending, API at 50 ms, concurrency {CONCURRENCY}: {} (target 1.2 x ((ceil(N/8) + 1) x 50 ms + one sync of {ms} ms + native) = {}: {}){}",
            ms_text(took),
            ms_text(target),
            check(took.as_secs_f64(), target.as_secs_f64()),
            if status.success() { "" } else { " [exit not 0]" }
        );
        agent.finish().await;
    }

    // The store's commits block (`Commit::wait`): off the runtime's thread.
    let ((record_0, all_0, snap_0), (record_500, all_500, snap_500)) =
        std::thread::spawn(|| (bytes_per_change(0), bytes_per_change(500)))
            .join()
            .unwrap();
    println!(
        "bytes appended to the journal per state change (150 changes, no compaction): N = 0: {record_0:.1}, N = 500: {record_500:.1} (x{:.2}; target: independent of N)",
        record_500 / record_0
    );
    println!(
        "bytes written per state change, compactions included (9000 changes): N = 0: {all_0:.1} (snapshot {snap_0} B), N = 500: {all_500:.1} (snapshot {snap_500} B)"
    );
}

async fn pending(agent: &mut Agent, n: usize) {
    for i in 0..n {
        agent.started(100 + i as u64).await;
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let quick = std::env::args().any(|a| a == "quick");
    let storage_only = std::env::args().any(|a| a == "storage");
    println!(
        "pos-agent daemon benchmark (binary: {})",
        env!("CARGO_BIN_EXE_pos-agent")
    );
    if storage_only {
        storage_figures().await;
        return;
    }

    // spawn → READY=1
    let mut agent = connected().await;
    let mut ready = Vec::new();
    for _ in 0..20 {
        agent.signal(Signal::SIGTERM);
        agent.wait_exit().await;
        agent.forget_notifications();
        let start = Instant::now();
        agent.spawn();
        agent.wait_notification("READY=1").await;
        ready.push(start.elapsed());
    }
    ready.sort();
    println!(
        "spawn -> READY=1 (20 starts): median {}, p95 {}, max {}",
        ms(percentile(&ready, 0.5)),
        ms(percentile(&ready, 0.95)),
        ms(*ready.last().unwrap())
    );

    // RSS idle, then with 200 pending payments.
    agent.wait_notification("STATUS=connected").await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    println!("RSS idle: {} KiB", rss_kib(agent.pid()));

    // A sale's round trip over the pty (API answering at once).
    let mut round_trips = Vec::new();
    for _ in 0..200 {
        let start = Instant::now();
        agent.started(250).await;
        round_trips.push(start.elapsed());
    }
    round_trips.sort();
    println!(
        "sale round trip over the pty (200 sales, terminal -> sale_started, API at 0 ms): median {}, p99 {}",
        ms(percentile(&round_trips, 0.5)),
        ms(percentile(&round_trips, 0.99))
    );
    println!(
        "RSS with 200 pending payments: {} KiB",
        rss_kib(agent.pid())
    );
    agent.signal(Signal::SIGKILL);
    agent.wait_exit().await;
    agent.finish().await;

    // Idle CPU.
    if quick {
        println!("idle CPU: skipped (quick)");
    } else {
        let agent = connected().await;
        let pid = agent.pid();
        let before = cpu_time(pid);
        tokio::time::sleep(Duration::from_secs(20)).await;
        println!(
            "CPU used in 20 s idle (link pings every 5 s): {}",
            ms(cpu_time(pid) - before)
        );
        agent.finish().await;
    }

    // SIGTERM → exit with N pending at 50 ms API latency.
    for n in [1usize, 10, 100, 500] {
        let mut agent = connected().await;
        pending(&mut agent, n).await;
        agent.sim.set_latency(LATENCY);
        let start = Instant::now();
        agent.signal(Signal::SIGTERM);
        let status = agent.wait_exit().await;
        let took = start.elapsed();
        // The ideal counts the cancels only; the disconnect that must follow them
        // (docs/architecture.md (Data flow of a shutdown)) is one more round trip, shown as the second ideal.
        let ideal = LATENCY * n.div_ceil(CONCURRENCY) as u32;
        let with_disconnect = ideal + LATENCY;
        println!(
            "SIGTERM -> exit, {n:>3} pending, 50 ms latency, concurrency {CONCURRENCY}: {} | ideal ceil(N/{CONCURRENCY})x50 ms = {} (x{:.2}) | ideal + disconnect = {} (x{:.2}){}",
            ms(took),
            ms(ideal),
            took.as_secs_f64() / ideal.as_secs_f64(),
            ms(with_disconnect),
            took.as_secs_f64() / with_disconnect.as_secs_f64(),
            if status.success() { "" } else { " [exit not 0]" }
        );
        agent.finish().await;
    }

    storage_figures().await;
}

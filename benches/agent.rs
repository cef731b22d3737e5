//! Figures for the agent daemon (`docs/performance.md`): the release binary driven exactly as
//! the tests drive it (payment API simulator on loopback, terminal simulator on a pty pair,
//! `NOTIFY_SOCKET`). Prints figures; asserts nothing about speed.
//!
//! Run: `cargo bench --bench agent` (add `-- quick` to skip the 20 s idle CPU measurement).

#[path = "../tests/common/mod.rs"]
mod common;

use std::time::{Duration, Instant};

use common::daemon::{Agent, Setup};
use nix::sys::signal::Signal;

const LATENCY: Duration = Duration::from_millis(50);
const CONCURRENCY: usize = 8;

fn setup() -> Setup {
    Setup {
        log_level: "warn",
        shutdown_toml: format!("deadline = \"60s\"\nconcurrency = {CONCURRENCY}\n"),
        ..Setup::default()
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

fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1000.0)
}

async fn connected() -> Agent {
    let mut agent = Agent::start(setup()).await;
    agent.wait_notification("STATUS=connected").await;
    agent
}

async fn pending(agent: &mut Agent, n: usize) {
    for i in 0..n {
        agent.started(100 + i as u64).await;
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let quick = std::env::args().any(|a| a == "quick");
    println!(
        "pos-agent daemon benchmark (binary: {})",
        env!("CARGO_BIN_EXE_pos-agent")
    );

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
        // (agent.md §3) is one more round trip, shown as the second ideal.
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
}

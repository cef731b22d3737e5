//! Nothing `check-config` accepts can make `run` abort later (docs/configuration.md,
//! "Validation"). A property over configurations drawn from the schema, extreme values first:
//! every duration and count at zero, at its bound, just past it and far past it (a duration of
//! 500 billion years overflows every clock), and the strings the payment API limits at their
//! limits and one past. `check-config` must accept exactly the drawings with no value out of
//! bounds, naming a key it refuses; and for every one it accepts, the real daemon goes through a
//! sale, a payment timeout (when the drawn one is short enough to wait for), a terminal
//! `status` and a shutdown, and ends by itself, neither aborted nor panicking.
//!
//! The real binary as a process, a pty pair with the terminal simulator, the payment API
//! simulator on loopback; the drawn values are `POS_AGENT__…` environment overrides, given to
//! `check-config` and `run` alike. Eight drawings by default (about half of them start a
//! daemon); `POS_AGENT_EXTREME_CONFIGS=N` draws N.

use std::time::Duration;

use crate::support::daemon::{check_config, Agent, Setup};
use nix::sys::signal::Signal;
use pos_agent::serial::message::{Reply, TerminalRequest};
use pos_agent::simulator::api::{ApiSimulator, SimulatorOptions};
use proptest::prelude::*;
use proptest::sample::select;
use uuid::Uuid;

/// One key's drawn value: its `POS_AGENT__…` variable, the value, and whether it is within the
/// documented bounds.
#[derive(Debug, Clone)]
struct Drawn {
    variable: &'static str,
    key: &'static str,
    value: String,
    valid: bool,
}

/// Values of `key`: mostly `ok` ones (so that most drawings start a daemon), now and then a
/// `bad` one.
fn key(
    variable: &'static str,
    key: &'static str,
    ok: Vec<String>,
    bad: Vec<String>,
) -> impl Strategy<Value = Drawn> {
    let drawn = move |valid: bool| {
        move |value: String| Drawn {
            variable,
            key,
            value,
            valid,
        }
    };
    prop_oneof![
        19 => select(ok).prop_map(drawn(true)),
        1 => select(bad).prop_map(drawn(false)),
    ]
}

fn texts(values: &[&str]) -> Vec<String> {
    values.iter().map(|v| (*v).to_owned()).collect()
}

fn url_of(chars: usize) -> String {
    let head = "http://callback.example/";
    format!("{head}{}", "c".repeat(chars - head.len()))
}

fn configuration() -> impl Strategy<Value = Vec<Drawn>> {
    // Overflows `SystemTime` (seconds in an i64) and `Instant` alike.
    let far = "500000000000years";
    (
        (
            key(
                "POS_AGENT__PAYWALL__REQUEST_TIMEOUT",
                "paywall.request_timeout",
                texts(&["1ms", "2s", "10m"]),
                texts(&["0s", "10m 1ms", far]),
            ),
            key(
                "POS_AGENT__TERMINAL__PAYMENT_TIMEOUT",
                "terminal.payment_timeout",
                texts(&["1ms", "1s", "3s", "24h"]),
                texts(&["0s", "24h 1ms", far]),
            ),
            key(
                "POS_AGENT__TERMINAL__SALE_REPLY_DEADLINE",
                "terminal.sale_reply_deadline",
                texts(&["1ms", "20s", "10m"]),
                texts(&["0s", "10m 1ms", far]),
            ),
            key(
                "POS_AGENT__SERIAL__ACK_TIMEOUT",
                "serial.ack_timeout",
                texts(&["1ms", "500ms", "1m"]),
                texts(&["0s", "61s", far]),
            ),
            key(
                "POS_AGENT__SERIAL__PING_INTERVAL",
                "serial.ping_interval",
                texts(&["1ms", "5s", "1h"]),
                texts(&["0s", "3601s", far]),
            ),
            key(
                "POS_AGENT__SERIAL__MAX_SENDS",
                "serial.max_sends",
                texts(&["1", "3", "100"]),
                texts(&["0", "101", "4294967295"]),
            ),
            key(
                "POS_AGENT__SHUTDOWN__DEADLINE",
                "shutdown.deadline",
                texts(&["1ms", "10s", "1h"]),
                texts(&["0s", "3601s", far]),
            ),
        ),
        (
            key(
                "POS_AGENT__SHUTDOWN__CONCURRENCY",
                "shutdown.concurrency",
                texts(&["1", "8", "256"]),
                texts(&["0", "257", "18446744073709551615"]),
            ),
            key(
                "POS_AGENT__LOG__REPEAT_WINDOW",
                "log.repeat_window",
                texts(&["0s", "1ms", "1h"]),
                texts(&["3601s", far]),
            ),
            key(
                "POS_AGENT__METRICS__INTERVAL",
                "metrics.interval",
                texts(&["1s", "1day"]),
                texts(&["999ms", "2days", far]),
            ),
            key(
                "POS_AGENT__TERMINAL__CALLBACK_URL",
                "terminal.callback_url",
                vec![url_of(30), url_of(150)],
                vec![url_of(151), url_of(1000)],
            ),
            key(
                "POS_AGENT__CONNECTION__ESTABLISH__NAME",
                "connection.establish.name",
                vec!["n".into(), "n".repeat(100)],
                vec![" ".into(), "n".repeat(101)],
            ),
            key(
                "POS_AGENT__CONNECTION__ESTABLISH__DISPLAY_NAME",
                "connection.establish.display_name",
                vec!["d".into(), "d".repeat(25)],
                vec!["d".repeat(26)],
            ),
        ),
    )
        .prop_map(|((a, b, c, d, e, f, g), (h, i, j, k, l, m))| {
            vec![a, b, c, d, e, f, g, h, i, j, k, l, m]
        })
}

fn cases() -> u32 {
    std::env::var("POS_AGENT_EXTREME_CONFIGS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(8)
}

/// A payment timeout short enough to wait for in a test.
fn short(payment_timeout: &str) -> bool {
    matches!(payment_timeout, "1ms" | "1s" | "3s")
}

/// The drawn configuration through `check-config`, and through the daemon when accepted.
async fn exercise(drawn: Vec<Drawn>) -> Result<(), TestCaseError> {
    let sim = ApiSimulator::start(SimulatorOptions::default()).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut extra_env: Vec<(&'static str, String)> = drawn
        .iter()
        .map(|d| (d.variable, d.value.clone()))
        .collect();
    extra_env.push((
        "POS_AGENT__METRICS__TEXTFILE",
        dir.path().join("agent.prom").display().to_string(),
    ));
    let setup = Setup {
        extra_env,
        ..Setup::default()
    };
    let checked = check_config(&sim, &setup);
    let stderr = String::from_utf8_lossy(&checked.stderr).into_owned();
    let refused: Vec<&Drawn> = drawn.iter().filter(|d| !d.valid).collect();
    if !refused.is_empty() {
        prop_assert_eq!(checked.status.code(), Some(78), "{}", stderr);
        for d in refused {
            prop_assert!(
                stderr.contains(&format!("`{}`", d.key)),
                "{} = {:?} is not named: {}",
                d.key,
                d.value,
                stderr
            );
        }
        return Ok(());
    }
    prop_assert_eq!(checked.status.code(), Some(0), "{}", stderr);

    eprintln!("accepted, running the daemon: {drawn:?}");
    let mut agent = Agent::start_with(sim, setup).await;
    // With a 1 ms request timeout the API is never reached, and with a 1 ms reply deadline a
    // sale may be abandoned; otherwise the sale must start.
    let api_reachable = drawn[0].value != "1ms";
    if api_reachable {
        agent.wait_notification("STATUS=connected").await;
    }
    let reply = agent.sale(Uuid::new_v4(), 2250).await;
    let payment_timeout = &drawn[1].value;
    if api_reachable && drawn[2].value != "1ms" {
        prop_assert!(
            matches!(reply, Reply::SaleStarted { .. }),
            "{:?}\nlog:\n{}",
            reply,
            agent.log()
        );
    }
    if let Reply::SaleStarted {
        payment_request_id, ..
    } = &reply
    {
        if short(payment_timeout) {
            agent
                .log_until("the payment timer fires", |log| {
                    log.contains(&format!("payment {payment_request_id} pending longer"))
                })
                .await;
        }
    }
    let status = agent.terminal.request(TerminalRequest::Status).await;
    prop_assert!(
        matches!(status, Ok(Reply::Status { .. })),
        "{:?}\nlog:\n{}",
        status,
        agent.log()
    );
    // Long enough for a few pings, repeat windows and metrics rewrites at their shortest.
    tokio::time::sleep(Duration::from_millis(300)).await;
    agent.signal(Signal::SIGTERM);
    let exit = agent.wait_exit().await;
    let log = agent.log();
    prop_assert!(
        exit.code().is_some(),
        "ended by a signal: {:?}\n{}",
        exit,
        log
    );
    prop_assert!(!log.contains("panicked"), "{}", log);
    agent.finish().await;
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: cases(),
        max_shrink_iters: 16,
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn whatever_check_config_accepts_runs_a_sale_a_timeout_a_status_and_a_shutdown(
        drawn in configuration()
    ) {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(exercise(drawn))?;
    }
}

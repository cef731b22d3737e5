//! A rate-limited payment API is obeyed (docs/payment-api.md, "Retry-After"): a `Retry-After`
//! on HTTP 429 or 503, in seconds or as an HTTP date, keeps the agent from asking again before
//! it ends, is cut at the documented cap, shows in `status` while it holds, and a sale meanwhile
//! is answered at once without a request; a reload keeps it.
//!
//! The real binary as a process, a pty pair with the terminal simulator, the payment API
//! simulator on loopback answering 429/503 with `Retry-After` (`FaultKind::RetryAfter`). The
//! gaps are measured between the requests the simulator recorded, not slept for.

use std::time::{Duration, Instant, SystemTime};

use crate::support::daemon::{Agent, Setup};
use crate::support::paths::{CANCEL, RECONNECT, SALE};
use crate::support::WAIT;
use nix::sys::signal::Signal;
use pos_agent::paywall::MAX_RETRY_AFTER;
use pos_agent::serial::message::{ErrorCode, Reply};
use pos_agent::simulator::api::{
    ApiSimulator, Fault, FaultKind, RecordedRequest, SimulatorOptions,
};
use uuid::Uuid;

/// The agent's own retry ceiling for the connection's first wait (`RetryPolicy::API_OUTAGE`),
/// and how late a loaded machine may be in sending the next request.
const SLACK: Duration = Duration::from_secs(2);

/// A `Duration`'s `Debug` text (`3.2s`, `412.5ms`) read back.
fn debug_duration(text: &str) -> Option<Duration> {
    let text = text.trim();
    let (number, unit) = match text.strip_suffix("ms") {
        Some(number) => (number, 1e-3),
        None => (text.strip_suffix('s')?, 1.0),
    };
    number
        .parse::<f64>()
        .ok()
        .map(|n| Duration::from_secs_f64(n * unit))
}

fn known_connection() -> Setup {
    Setup {
        establish: false,
        ..Setup::default()
    }
}

/// Starts an agent whose first reconnect is answered `status` with `Retry-After: value`, and
/// returns it with the first reconnect the simulator saw and when the fault was set.
async fn reconnects_around(status: u16, value: String) -> (Agent, RecordedRequest, Instant) {
    let sim = ApiSimulator::start(SimulatorOptions::default()).unwrap();
    let injected = Instant::now();
    sim.inject(Fault::new(
        "PUT",
        RECONNECT,
        FaultKind::RetryAfter { status, value },
    ));
    let agent = Agent::start_with(sim, known_connection()).await;
    let first = agent
        .sim
        .wait_for_request(|r| r.is("PUT", RECONNECT), WAIT)
        .await
        .expect("the agent reconnects");
    (agent, first, injected)
}

#[tokio::test]
async fn the_connection_waits_out_a_retry_after_in_seconds_and_status_shows_it() {
    let (mut agent, first, _) = reconnects_around(429, "3".into()).await;
    let status = agent
        .status_until("status shows the API's wait", |s| {
            !s["api_retry_after"].is_null()
        })
        .await;
    let wait = &status["api_retry_after"];
    assert_eq!(wait["http_status"], 429, "{status}");
    let left = wait["seconds_left"].as_u64().unwrap();
    assert!((1..=3).contains(&left), "{status}");
    assert!(wait["until"].as_str().unwrap().ends_with('Z'), "{status}");
    assert_eq!(status["connection"], "connecting", "{status}");

    let second = agent
        .sim
        .wait_for_request(|r| r.is("PUT", RECONNECT) && r.at > first.at, WAIT)
        .await
        .expect("the agent asks again once the wait is over");
    let gap = second.at - first.at;
    assert!(
        gap >= Duration::from_secs(3),
        "asked again {gap:?} after a Retry-After of 3 s\n{}",
        agent.log()
    );
    // max(back-off, 3 s) plus a jitter of at most a quarter of the wait.
    assert!(gap <= Duration::from_millis(3750) + SLACK, "{gap:?}");
    agent.wait_notification("STATUS=connected").await;
    let status = agent.status().await;
    assert!(status["api_retry_after"].is_null(), "{status}");
    let log = agent.log();
    assert!(
        log.contains("asks to be called again in 3 s"),
        "the wait is logged: {log}"
    );
    // The connection loop chose its wait from the hold, not from its back-off alone (which
    // would have tried at once, only to be stopped by the client).
    let chosen = log
        .lines()
        .find(|l| l.contains("payment API not reachable yet") && l.contains("HTTP 429"))
        .and_then(|l| l.rsplit("trying again in ").next())
        .and_then(debug_duration)
        .unwrap_or_else(|| panic!("the retry's wait is logged: {log}"));
    assert!(
        chosen >= Duration::from_millis(2500) && chosen <= Duration::from_millis(3750),
        "{chosen:?}"
    );
    agent.finish().await;
}

#[tokio::test]
async fn a_retry_after_as_an_http_date_is_waited_out_too() {
    let until = SystemTime::now() + Duration::from_secs(5);
    let (agent, first, injected) = reconnects_around(503, httpdate::fmt_http_date(until)).await;
    let second = agent
        .sim
        .wait_for_request(|r| r.is("PUT", RECONNECT) && r.at > first.at, WAIT)
        .await
        .expect("the agent asks again once the date has passed");
    // The date and the answer's Date are whole seconds: the wait is at least 5 s, less the
    // time until the first request, less a second of truncation.
    let before_first = first.at.saturating_duration_since(injected);
    let expected = Duration::from_secs(4).saturating_sub(before_first);
    let gap = second.at - first.at;
    assert!(
        gap >= expected,
        "asked again {gap:?} after the first request, expected at least {expected:?}\n{}",
        agent.log()
    );
    agent.finish().await;
}

#[tokio::test]
async fn a_wait_beyond_the_cap_is_cut_to_it_and_sales_meanwhile_are_answered_at_once() {
    let mut agent = Agent::connected(Setup::default()).await;
    let id = agent.started(100).await;
    agent.sim.inject(Fault::new(
        "POST",
        CANCEL,
        FaultKind::RetryAfter {
            status: 429,
            value: "86400".into(),
        },
    ));
    let cancel = agent.cli(&["cancel", &id]).await;
    assert_ne!(cancel.code, Some(0), "{cancel:?}");

    let status = agent.status().await;
    let left = status["api_retry_after"]["seconds_left"]
        .as_u64()
        .unwrap_or_else(|| panic!("status shows the wait: {status}"));
    let cap = MAX_RETRY_AFTER.as_secs();
    assert!(
        left <= cap && left > cap - 60,
        "a day's Retry-After is cut to {cap} s: {status}"
    );
    let text = agent.cli(&["status"]).await;
    assert!(text.stdout.contains("Retry-After"), "{text:?}");

    // A sale now would be held past its reply deadline: it is refused at once, never sent.
    let sales_before = agent.sim.requests_to("POST", SALE).len();
    let asked = Instant::now();
    let reply = agent.sale(Uuid::new_v4(), 200).await;
    let took = asked.elapsed();
    match &reply {
        Reply::Error { code, message } => {
            assert_eq!(*code, ErrorCode::ApiUnavailable, "{reply:?}");
            assert!(message.contains("asked the agent to wait"), "{reply:?}");
        }
        other => panic!("expected api_unavailable, got {other:?}"),
    }
    assert_eq!(agent.sim.requests_to("POST", SALE).len(), sales_before);
    // The reply deadline is 20 s; "at once" is far below it.
    assert!(took < Duration::from_secs(5), "answered after {took:?}");
    // A reload builds a new client: the API's wait still holds.
    agent.signal(Signal::SIGHUP);
    agent
        .log_until("the reload", |log| log.contains("configuration reloaded"))
        .await;
    let status = agent.status().await;
    assert!(!status["api_retry_after"].is_null(), "{status}");
    // The cancel is not sent again while the wait holds.
    assert_eq!(agent.sim.requests_to("POST", CANCEL).len(), 1);
    agent.finish().await;
}

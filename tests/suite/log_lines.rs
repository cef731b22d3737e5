//! The agent's log lines stand on their own (docs/deployment.md, "What an operator sees"): an
//! operator reads `journalctl -u pos-agent` or the tail in `systemctl status`, where only the
//! message shows, so every message names the payment, code, connection or link state it is
//! about, and the same values stay structured fields (`PAYMENT_REQUEST_ID=` ... in the journal,
//! `payment_request_id=` ... on stderr, where these tests read them).
//!
//! The real binary runs a sale, an operator cancel and a shutdown against the simulators; its
//! stderr is the log. The journal's side (upper-case field names, `-o json`) is checked under a
//! real systemd by tests/system/.

use crate::support::daemon::{Agent, Setup};
use crate::support::SECRETS;
use nix::sys::signal::Signal;
use pos_agent::serial::message::CancelReason;

/// Fields whose value an operator needs in the message itself.
const SUBJECT_FIELDS: [&str; 5] = [
    "payment_request_id",
    "merchant_unique_code",
    "connection_id",
    "serial_request_id",
    "link_state",
];

/// `key=value` of the fields printed after the message (tracing's text format).
fn field<'a>(line: &'a str, key: &str) -> Option<&'a str> {
    let start = line.find(&format!(" {key}="))? + key.len() + 2;
    let value = &line[start..];
    Some(value.split(' ').next().unwrap_or(value).trim_matches('"'))
}

/// Every line that carries a subject field names its value in the message too: the value
/// occurs twice, once in the message and once as the field.
fn lines_that_do_not_stand_alone(log: &str) -> Vec<String> {
    log.lines()
        .filter(|line| {
            SUBJECT_FIELDS
                .iter()
                .any(|key| field(line, key).is_some_and(|value| line.matches(value).count() < 2))
        })
        .map(str::to_owned)
        .collect()
}

fn line_with<'a>(log: &'a str, needles: &[&str]) -> &'a str {
    log.lines()
        .find(|line| needles.iter().all(|needle| line.contains(needle)))
        .unwrap_or_else(|| panic!("no log line containing all of {needles:?}; log:\n{log}"))
}

#[tokio::test]
async fn sale_cancel_and_shutdown_lines_name_what_they_are_about() {
    let setup = Setup {
        log_level: "info",
        ..Setup::default()
    };
    let mut agent = Agent::start(setup).await;
    agent.wait_notification("STATUS=connected").await;
    let connection_id = agent.status().await["connection_id"]
        .as_str()
        .expect("connection id")
        .to_owned();
    let cancelled = agent.started(1250).await;
    let out = agent.cli(&["cancel", &cancelled]).await;
    assert_eq!(out.code, Some(0), "{out:?}");
    assert_eq!(
        agent.next_cancelled().await,
        (cancelled.clone(), CancelReason::Operator)
    );
    let kept = agent.started(990).await;
    agent.signal(Signal::SIGTERM);
    assert!(agent.wait_exit().await.success(), "{}", agent.log());
    let log = agent.log();

    let sale = line_with(&log, &["sale started: payment ", &kept]);
    assert!(sale.contains("990 minor units"), "{sale}");
    let code = field(sale, "merchant_unique_code").expect("merchant_unique_code field");
    assert!(sale.contains(&format!("code {code}")), "{sale}");
    line_with(&log, &["operator cancel of payment ", &cancelled]);
    line_with(
        &log,
        &["operator cancel of payment ", &cancelled, "confirmed"],
    );
    line_with(&log, &["shutdown cancel of payment ", &kept, "confirmed"]);
    line_with(&log, &["serial link up"]);
    line_with(&log, &[&format!("connection {connection_id} deactivated")]);
    line_with(&log, &["shutting down: 1 pending"]);

    let vague = lines_that_do_not_stand_alone(&log);
    assert!(
        vague.is_empty(),
        "lines whose message leaves out the value of their field:\n{}",
        vague.join("\n")
    );
    for secret in SECRETS {
        assert!(!log.contains(secret), "a secret reached the log:\n{log}");
    }
    agent.finish().await;
}

#[test]
fn a_message_without_its_value_is_found() {
    let log = "\
2026-11-30T22:00:00Z  INFO pos_agent::agent::core: sale started merchant_unique_code=9b27 payment_request_id=7ba0
2026-11-30T22:00:00Z  INFO pos_agent::agent::core: sale started: payment 7ba0, code 9b27 merchant_unique_code=9b27 payment_request_id=7ba0
2026-11-30T22:00:01Z  INFO pos_agent::serial::link: serial link state link_state=up";
    let vague = lines_that_do_not_stand_alone(log);
    assert_eq!(vague.len(), 2, "{vague:?}");
    assert!(vague[0].contains("sale started merchant"));
    assert!(vague[1].contains("serial link state"));
}

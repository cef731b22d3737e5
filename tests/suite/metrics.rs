//! Metrics (docs/operations.md, "Metrics") from the real daemon: `pos-agent metrics` over the
//! control socket, read with a real parser of the OpenMetrics text format (Python's
//! `prometheus_client`), the `[metrics] textfile` read with its Prometheus text parser as
//! node_exporter's textfile collector would, and `status --json`'s last-answered times.

use crate::support;

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

use crate::support::daemon::{Agent, Setup};
use crate::support::WAIT;
use pos_agent::serial::message::{ErrorCode, Reply};
use serde_json::Value;
use uuid::Uuid;

/// Debian's Python, where `apt-get install python3-prometheus-client` puts the parser (.ci/run
/// installs it).
const PYTHON: &str = "/usr/bin/python3";

/// Parses an exposition with `prometheus_client` and prints every family's type and samples
/// as JSON. Any parse error fails the script, and with it the test.
const PARSER: &str = r#"
import json, sys
from prometheus_client.openmetrics.parser import text_string_to_metric_families as openmetrics
from prometheus_client.parser import text_string_to_metric_families as prometheus
parse = openmetrics if sys.argv[1] == "openmetrics" else prometheus
out = {}
for family in parse(sys.stdin.read()):
    out[family.name] = {"type": family.type, "samples": [[s.name, s.labels, s.value] for s in family.samples]}
print(json.dumps(out))
"#;

/// The exposition as the parser reads it: family name → (type, samples).
fn parse(format: &str, text: &str) -> Value {
    use std::io::Write;
    use std::process::{Command, Stdio};
    let mut child = Command::new(PYTHON)
        .args(["-c", PARSER, format])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("/usr/bin/python3 (apt-get install python3 python3-prometheus-client)");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let output = child.wait_with_output().unwrap();
    assert!(
        output.status.success(),
        "the {format} parser refused the exposition: {}\n{text}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).unwrap()
}

/// The value of one sample, by name and labels; None when absent.
fn sample(families: &Value, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    let wanted: BTreeMap<String, String> = labels
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    families.as_object()?.values().find_map(|family| {
        family["samples"].as_array()?.iter().find_map(|s| {
            let labels: BTreeMap<String, String> = serde_json::from_value(s[1].clone()).ok()?;
            (s[0] == name && labels == wanted).then(|| s[2].as_f64())?
        })
    })
}

async fn metrics(agent: &mut Agent) -> Value {
    let out = agent.cli(&["metrics"]).await;
    assert_eq!(out.code, Some(0), "{out:?}");
    assert!(out.stdout.ends_with("# EOF\n"), "{}", out.stdout);
    parse("openmetrics", &out.stdout)
}

#[tokio::test]
async fn the_metrics_count_what_the_daemon_did_in_both_text_formats() {
    let textfile_dir = tempfile::tempdir().unwrap();
    let textfile = textfile_dir.path().join("pos_agent.prom");
    let mut agent = Agent::start(Setup {
        extra_toml: format!(
            "[metrics]\ntextfile = \"{}\"\ninterval = \"1s\"\n",
            textfile.display()
        ),
        ..Setup::default()
    })
    .await;
    agent.wait_notification("STATUS=connected").await;
    let families = metrics(&mut agent).await;
    assert_eq!(families["pos_agent_build"]["type"], "info");
    assert_eq!(
        sample(
            &families,
            "pos_agent_build_info",
            &[
                ("version", env!("CARGO_PKG_VERSION")),
                ("commit", env!("POS_AGENT_COMMIT"))
            ]
        ),
        Some(1.0)
    );
    support::assert_build_commit(env!("POS_AGENT_COMMIT"));
    assert_eq!(
        sample(&families, "pos_agent_sales_started_total", &[]),
        Some(0.0)
    );

    // A sale, an operator's cancel, then a sale refused while disconnected.
    let id = agent.started(1250).await;
    let out = agent.cli(&["cancel", &id]).await;
    assert_eq!(out.code, Some(0), "{out:?}");
    let out = agent.cli(&["disconnect"]).await;
    assert_eq!(out.code, Some(0), "{out:?}");
    match agent.sale(Uuid::new_v4(), 990).await {
        Reply::Error {
            code: ErrorCode::NotConnected,
            ..
        } => {}
        other => panic!("expected not_connected, got {other:?}"),
    }

    let families = metrics(&mut agent).await;
    let value = |name: &str, labels: &[(&str, &str)]| {
        sample(&families, name, labels).unwrap_or_else(|| panic!("no {name} {labels:?}"))
    };
    assert_eq!(families["pos_agent_sales_started"]["type"], "counter");
    assert_eq!(value("pos_agent_sales_started_total", &[]), 1.0);
    assert_eq!(
        value(
            "pos_agent_sales_refused_total",
            &[("code", "not_connected")]
        ),
        1.0
    );
    assert_eq!(
        value("pos_agent_sales_refused_total", &[("code", "api_rejected")]),
        0.0
    );
    assert_eq!(value("pos_agent_sales_abandoned_total", &[]), 0.0);
    assert_eq!(
        value(
            "pos_agent_cancels_total",
            &[("reason", "operator"), ("outcome", "confirmed")]
        ),
        1.0
    );
    assert_eq!(
        value(
            "pos_agent_api_requests_total",
            &[("operation", "sale"), ("outcome", "ok")]
        ),
        1.0
    );
    assert_eq!(
        value(
            "pos_agent_api_requests_total",
            &[("operation", "disconnect"), ("outcome", "ok")]
        ),
        1.0
    );
    assert_eq!(
        families["pos_agent_api_request_duration_seconds"]["type"],
        "histogram"
    );
    let requests = value("pos_agent_api_request_duration_seconds_count", &[]);
    assert!(
        requests >= 4.0,
        "connect, sale, cancel, disconnect: {requests}"
    );
    assert_eq!(
        value(
            "pos_agent_api_request_duration_seconds_bucket",
            &[("le", "+Inf")]
        ),
        requests
    );
    assert!(value("pos_agent_state_commit_duration_seconds_count", &[]) >= 2.0);
    assert_eq!(value("pos_agent_state_write_errors_total", &[]), 0.0);
    assert!(value("pos_agent_serial_frames_received_total", &[]) >= 2.0);
    assert!(value("pos_agent_serial_frames_sent_total", &[]) >= 2.0);
    assert_eq!(value("pos_agent_pending_payments", &[]), 0.0);
    assert_eq!(value("pos_agent_connection_up", &[]), 0.0);
    assert_eq!(value("pos_agent_terminal_link_up", &[]), 1.0);
    assert!(value("pos_agent_uptime_seconds", &[]) > 0.0);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    for name in [
        "pos_agent_terminal_last_answer_timestamp_seconds",
        "pos_agent_api_last_answer_timestamp_seconds",
    ] {
        let at = value(name, &[]);
        assert!(at <= now + 1.0 && at > now - 600.0, "{name} {at}");
    }

    // The textfile: the Prometheus text format, replaced whole, readable by node_exporter.
    let deadline = tokio::time::Instant::now() + WAIT;
    let text = loop {
        let text = std::fs::read_to_string(&textfile).unwrap_or_default();
        if text.contains("pos_agent_sales_refused_total{code=\"not_connected\"} 1\n") {
            break text;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the textfile did not catch up: {text}\nlog:\n{}",
            agent.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(!text.contains("# EOF"), "{text}");
    let families = parse("prometheus", &text);
    assert_eq!(
        sample(&families, "pos_agent_sales_started_total", &[]),
        Some(1.0)
    );
    assert_eq!(
        sample(
            &families,
            "pos_agent_build_info",
            &[
                ("version", env!("CARGO_PKG_VERSION")),
                ("commit", env!("POS_AGENT_COMMIT"))
            ]
        ),
        Some(1.0)
    );
    let mode = std::fs::metadata(&textfile).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o644);
    let leftovers: Vec<_> = std::fs::read_dir(textfile_dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(leftovers.len(), 1, "{leftovers:?}");
    agent.finish().await;
}

#[tokio::test]
async fn status_says_when_the_terminal_and_the_api_last_answered() {
    let mut agent = Agent::start(Setup::default()).await;
    let status = agent
        .status_until("both answered", |s| {
            s["terminal_last_answered"].is_string() && s["api_last_answered"].is_string()
        })
        .await;
    for key in ["terminal_last_answered", "api_last_answered"] {
        let at = humantime::parse_rfc3339(status[key].as_str().unwrap()).unwrap();
        let age = std::time::SystemTime::now()
            .duration_since(at)
            .unwrap_or_default();
        assert!(age < Duration::from_secs(600), "{key}: {status}");
    }
    // The human form shows the same two times (later ones, if a ping came in meanwhile).
    let text = agent.cli(&["status"]).await.stdout;
    let line = text
        .lines()
        .find(|line| line.starts_with("last answer    terminal "))
        .unwrap_or_else(|| panic!("no last answer line: {text}"));
    let times: Vec<&str> = line
        .split(' ')
        .filter(|word| word.starts_with("20"))
        .map(|word| word.trim_end_matches(','))
        .collect();
    assert_eq!(times.len(), 2, "{line}");
    for time in times {
        humantime::parse_rfc3339(time).unwrap_or_else(|e| panic!("{line}: {e}"));
    }
    agent.finish().await;
}

#[tokio::test]
async fn the_api_never_answering_leaves_its_last_answered_null() {
    let mut agent = Agent::with_unresolvable_api(Setup::default()).await;
    let status = agent
        .status_until("the terminal answered", |s| {
            s["terminal_last_answered"].is_string()
        })
        .await;
    assert_eq!(status["api_last_answered"], Value::Null, "{status}");
    let text = agent.cli(&["status"]).await.stdout;
    assert!(text.contains(", payment API never\n"), "{text}");
    let families = metrics(&mut agent).await;
    assert_eq!(
        sample(
            &families,
            "pos_agent_api_last_answer_timestamp_seconds",
            &[]
        ),
        None
    );
    assert!(
        sample(
            &families,
            "pos_agent_api_requests_total",
            &[("operation", "reconnect"), ("outcome", "not_sent")]
        )
        .is_some_and(|n| n >= 1.0)
            || sample(
                &families,
                "pos_agent_api_requests_total",
                &[
                    ("operation", "establish_connection"),
                    ("outcome", "not_sent")
                ]
            )
            .is_some_and(|n| n >= 1.0),
        "{families}"
    );
    agent.finish().await;
}

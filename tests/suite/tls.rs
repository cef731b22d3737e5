//! The payment API over https, with a CA made at test time: the real daemon trusts it through
//! `SSL_CERT_FILE` and connects; a certificate for another name, one from an unknown issuer, an
//! expired one and one not valid yet (a terminal's clock in the past) each fail with their own
//! message, in the log and in `status` (`connection_problem`). The clock problem is logged once,
//! naming the system time, and retried (`docs/deployment.md`, "The clock at boot").

use crate::support::daemon::{Agent, Setup};
use crate::support::tls::Ca;
use pos_agent::serial::message::Reply;
use pos_agent::simulator::api::{ApiSimulator, SimulatorOptions, TlsIdentity};

/// An agent whose simulator serves `identity`, trusting only `trusted`'s certificate.
async fn agent_with(identity: TlsIdentity, trusted: &Ca) -> Agent {
    let sim = ApiSimulator::start(SimulatorOptions {
        tls: Some(identity),
        ..SimulatorOptions::default()
    })
    .unwrap();
    assert!(sim.url().starts_with("https://localhost:"), "{}", sim.url());
    let dir = tempfile::tempdir().unwrap();
    let bundle = dir.path().join("ca.pem");
    std::fs::write(&bundle, trusted.certificate.pem()).unwrap();
    let agent = Agent::start_with(
        sim,
        Setup {
            extra_env: vec![("SSL_CERT_FILE", bundle.display().to_string())],
            ..Setup::default()
        },
    )
    .await;
    // The bundle is read once, when the client is built at start.
    std::mem::forget(dir);
    agent
}

/// Waits until `status` shows a connection problem; returns it.
async fn connection_problem(agent: &mut Agent) -> String {
    let status = agent
        .status_until("a connection problem shows", |s| {
            s["connection_problem"].is_string()
        })
        .await;
    assert_ne!(status["connection"], "connected");
    status["connection_problem"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn a_certificate_from_the_trusted_ca_connects_and_sales_work() {
    let ca = Ca::new("pos-agent test CA");
    let mut agent = agent_with(ca.issue("localhost", 2020, 2090), &ca).await;
    agent.wait_notification("STATUS=connected").await;
    let status = agent.status().await;
    assert!(status.get("connection_problem").is_none(), "{status}");
    let id = agent.started(1250).await;
    assert!(agent
        .sim
        .payments()
        .iter()
        .any(|p| p.payment_request_id.to_string() == id));
    agent.finish().await;
}

#[tokio::test]
async fn a_certificate_for_another_name_is_refused_naming_the_host_problem() {
    let ca = Ca::new("pos-agent test CA");
    let mut agent = agent_with(ca.issue("payments.example", 2020, 2090), &ca).await;
    let problem = connection_problem(&mut agent).await;
    assert!(problem.contains("not valid for the host name"), "{problem}");
    assert!(!problem.contains("clock"), "{problem}");
    assert!(agent.log().contains("not valid for the host name"));
    // A sale meanwhile is answered at once, and nothing is created.
    let reply = agent.sale(uuid::Uuid::new_v4(), 100).await;
    assert!(matches!(reply, Reply::Error { .. }), "{reply:?}");
    assert!(agent.sim.payments().is_empty());
    agent.finish().await;
}

#[tokio::test]
async fn a_certificate_from_an_unknown_issuer_is_refused_naming_the_bundle() {
    let trusted = Ca::new("pos-agent test CA");
    let other = Ca::new("someone else's CA");
    let mut agent = agent_with(other.issue("localhost", 2020, 2090), &trusted).await;
    let problem = connection_problem(&mut agent).await;
    assert!(
        problem.contains("not signed by a CA in the trusted bundle"),
        "{problem}"
    );
    assert!(problem.contains("SSL_CERT_FILE"), "{problem}");
    assert!(!problem.contains("clock"), "{problem}");
    agent.finish().await;
}

#[tokio::test]
async fn an_expired_certificate_is_refused_as_expired_at_the_system_time() {
    let ca = Ca::new("pos-agent test CA");
    let mut agent = agent_with(ca.issue("localhost", 2015, 2020), &ca).await;
    let problem = connection_problem(&mut agent).await;
    assert!(
        problem.contains("has expired at the system time"),
        "{problem}"
    );
    assert!(agent.log().contains("has expired at the system time"));
    agent.finish().await;
}

#[tokio::test]
async fn a_certificate_not_valid_yet_is_a_clock_problem_logged_once_and_retried() {
    let ca = Ca::new("pos-agent test CA");
    let mut agent = agent_with(ca.issue("localhost", 2095, 2099), &ca).await;
    let problem = connection_problem(&mut agent).await;
    assert!(problem.contains("clock problem"), "{problem}");
    assert!(
        problem.contains("not valid yet at the system time"),
        "{problem}"
    );
    // Retried: a second attempt meets it again, and the log says it once.
    let path = agent_log_path(&agent);
    agent
        .status_until("a second attempt", |_| agent_log_has_retry(&path))
        .await;
    let log = agent.log();
    let year = &humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string()[..4];
    let clock_lines: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("clock problem: the payment API's certificate is not valid"))
        .collect();
    assert_eq!(clock_lines.len(), 1, "{log}");
    assert!(
        clock_lines[0].contains(&format!("system time {year}")),
        "{log}"
    );
    agent.finish().await;
}

fn agent_log_path(agent: &Agent) -> std::path::PathBuf {
    agent.dir.path().join("agent-0.log")
}

fn agent_log_has_retry(path: &std::path::Path) -> bool {
    std::fs::read_to_string(path).is_ok_and(|log| log.contains("still the clock problem"))
}

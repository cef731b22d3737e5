//! The payment API through a proxy (docs/deployment.md (Through a proxy)): the real daemon
//! takes the proxy from its `https_proxy` credential, tunnels every call to the https simulator
//! through a CONNECT proxy on loopback with the proxy's Basic credentials, and `check-config`
//! shows that proxy without its password. A dead proxy is reported as a proxy failure naming
//! the proxy, in the log, `status` and `check-health`; its password appears nowhere.

use crate::support;

use std::path::Path;

use crate::support::daemon::{Agent, Setup};
use crate::support::proxy::ConnectProxy;
use crate::support::tls::Ca;
use pos_agent::serial::message::Reply;
use pos_agent::simulator::api::{ApiSimulator, SimulatorOptions};
use uuid::Uuid;

const PROXY_PASSWORD: &str = "proxy-pw-93d1";
/// `agent:proxy-pw-93d1` in Basic form.
const PROXY_BASIC: &str = "Basic YWdlbnQ6cHJveHktcHctOTNkMQ==";

/// An https simulator and a CA bundle that trusts it, in `dir`.
fn https_simulator(dir: &Path) -> (ApiSimulator, String) {
    let ca = Ca::new("pos-agent test CA");
    let sim = ApiSimulator::start(SimulatorOptions {
        tls: Some(ca.issue("localhost", 2020, 2100)),
        ..SimulatorOptions::default()
    })
    .unwrap();
    let bundle = dir.join("ca.pem");
    std::fs::write(&bundle, ca.certificate.pem()).unwrap();
    (sim, bundle.display().to_string())
}

fn assert_no_password(what: &str, text: &str) {
    assert!(
        !text.contains(PROXY_PASSWORD),
        "the proxy password in {what}:\n{text}"
    );
}

#[tokio::test]
async fn a_sale_goes_through_the_proxy_the_credential_names() {
    let proxy = ConnectProxy::start().await;
    let files = tempfile::tempdir().unwrap();
    let (sim, bundle) = https_simulator(files.path());
    let sim_authority = sim.url().trim_start_matches("https://").to_owned();
    let credentials = files.path().join("credentials");
    std::fs::create_dir(&credentials).unwrap();
    let proxy_url = format!("http://agent:{PROXY_PASSWORD}@{}", proxy.address());
    std::fs::write(credentials.join("https_proxy"), format!("{proxy_url}\n")).unwrap();
    let env = vec![
        ("SSL_CERT_FILE", bundle),
        ("CREDENTIALS_DIRECTORY", credentials.display().to_string()),
    ];
    let mut agent = Agent::start_with(
        sim,
        Setup {
            extra_env: env.clone(),
            ..Setup::default()
        },
    )
    .await;
    agent.wait_notification("STATUS=connected").await;
    agent.terminal.wait_until_up().await;
    agent.started(1250).await;

    let tunnels = proxy.tunnels();
    assert!(!tunnels.is_empty(), "nothing went through the proxy");
    for tunnel in &tunnels {
        assert_eq!(tunnel.target, sim_authority);
        assert_eq!(tunnel.authorization.as_deref(), Some(PROXY_BASIC));
    }

    let mut check = support::pos_agent();
    check
        .arg("check-config")
        .arg("--config")
        .arg(&agent.config_path)
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())));
    let out = check.output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}");
    let expected = format!(
        "# proxy: http://agent:<redacted>@{} (from credential file {})",
        proxy.address(),
        credentials.join("https_proxy").display()
    );
    assert!(stdout.contains(&expected), "{stdout}");
    assert_no_password("check-config", &stdout);
    assert_no_password("the log", &agent.log());
    agent.finish().await;
}

#[tokio::test]
async fn a_dead_proxy_is_a_proxy_failure_naming_the_proxy() {
    let dead = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let dead_address = dead.local_addr().unwrap();
    drop(dead);
    let files = tempfile::tempdir().unwrap();
    let (sim, bundle) = https_simulator(files.path());
    let mut agent = Agent::start_with(
        sim,
        Setup {
            extra_env: vec![
                ("SSL_CERT_FILE", bundle),
                (
                    "HTTPS_PROXY",
                    format!("http://agent:{PROXY_PASSWORD}@{dead_address}"),
                ),
            ],
            ..Setup::default()
        },
    )
    .await;
    let named = format!("proxy failure: proxy {dead_address}");
    let status = agent
        .status_until("a proxy failure in status", |s| {
            s["connection_problem"]
                .as_str()
                .is_some_and(|p| p.contains(&named))
        })
        .await;
    let problem = status["connection_problem"].as_str().unwrap();
    assert!(!problem.contains("could not be reached"), "{problem}");
    assert_no_password("status", &status.to_string());
    let human = agent.cli(&["status"]).await;
    assert!(human.stdout.contains(&named), "{human:?}");
    assert_no_password("status", &human.stdout);

    // The connection required: unhealthy, the proxy named; by default healthy, still named.
    let health = agent
        .cli(&["check-health", "--require", "connection"])
        .await;
    assert_eq!(health.code, Some(75), "{health:?}");
    assert!(health.stderr.contains(&named), "{health:?}");
    assert_no_password("check-health", &health.stderr);
    let health = agent.cli(&["check-health"]).await;
    assert_eq!(health.code, Some(0), "{health:?}");
    assert!(health.stdout.contains(&named), "{health:?}");
    assert_no_password("check-health", &health.stdout);

    agent.terminal.wait_until_up().await;
    let refused = agent.sale(Uuid::new_v4(), 500).await;
    assert!(matches!(refused, Reply::Error { .. }), "{refused:?}");
    assert_no_password("the sale's refusal", &format!("{refused:?}"));
    let log = agent
        .log_until("the proxy failure in the log", |log| log.contains(&named))
        .await;
    assert_no_password("the log", &log);
    agent.finish().await;
}

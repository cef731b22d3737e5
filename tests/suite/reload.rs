//! `SIGHUP` (docs/configuration.md (Reloading)): the real daemon reads its configuration and
//! credentials again, takes new API keys without touching a pending payment, names what needs a
//! restart, and keeps running on a configuration that does not load.

use std::path::Path;

use crate::support::daemon::{Agent, Setup};
use crate::support::paths::{CANCEL, SALE};
use crate::support::WAIT;
use nix::sys::signal::Signal;
use pos_agent::simulator::api as sim;

const NEW_KEY: &str = "rotated-private-key-8e21";
const NEW_CLIENT: &str = "rotated-private-client-40c7";

/// Writes a credential the way an administrator replaces a file: a new file renamed over it.
fn write_credential(directory: &Path, name: &str, value: &str) {
    let staging = directory.join(format!(".{name}.new"));
    std::fs::write(&staging, format!("{value}\n")).unwrap();
    std::fs::rename(&staging, directory.join(name)).unwrap();
}

async fn agent_with_credentials() -> (Agent, tempfile::TempDir) {
    let credentials = tempfile::tempdir().unwrap();
    write_credential(
        credentials.path(),
        "api_key_private",
        sim::DEMO_API_KEY_PRIVATE,
    );
    write_credential(
        credentials.path(),
        "api_client_private",
        sim::DEMO_API_CLIENT_PRIVATE,
    );
    let agent = Agent::connected(Setup {
        extra_env: vec![(
            "CREDENTIALS_DIRECTORY",
            credentials.path().display().to_string(),
        )],
        ..Setup::default()
    })
    .await;
    (agent, credentials)
}

#[tokio::test]
async fn sighup_rotates_the_keys_and_leaves_a_pending_payment_pending() {
    let (mut agent, credentials) = agent_with_credentials().await;
    agent.terminal.wait_until_up().await;
    let pending = agent.started(1250).await;

    write_credential(credentials.path(), "api_key_private", NEW_KEY);
    write_credential(credentials.path(), "api_client_private", NEW_CLIENT);
    agent.sim.rotate_private_keys(NEW_KEY, NEW_CLIENT);
    agent.forget_notifications();
    agent.signal(Signal::SIGHUP);
    agent.wait_notification("RELOADING=1").await;
    agent.wait_notification("READY=1").await;
    let log = agent
        .log_until("the reload", |log| log.contains("configuration reloaded"))
        .await;
    assert!(
        log.contains("api_key_private from credential file"),
        "the reload names where the keys came from:\n{log}"
    );

    // Still running, the payment still pending and nothing cancelled.
    let status = agent.status().await;
    let ids: Vec<&str> = status["pending"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["payment_request_id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, [pending.as_str()]);
    assert_eq!(status["pending"][0]["cancel_requested"], false);
    assert!(agent.sim.requests_to("POST", CANCEL).is_empty());
    assert!(!log.contains("shutting down"), "{log}");

    // The next calls carry the new keys, which the simulator now requires.
    agent.sim.clear_requests();
    let second = agent.started(990).await;
    let sale = agent
        .sim
        .wait_for_request(|r| r.path == SALE, WAIT)
        .await
        .expect("the sale reached the simulator");
    assert_eq!(sale.header("apikeyprivate"), Some(NEW_KEY));
    assert_eq!(sale.header("apiclientprivate"), Some(NEW_CLIENT));
    let out = agent.cli(&["cancel", &pending]).await;
    assert_eq!(out.code, Some(0), "{out:?}\nlog:\n{}", agent.log());
    assert_eq!(agent.pending_ids().await, [second]);

    let log = agent.log();
    assert!(!log.contains(NEW_KEY) && !log.contains(NEW_CLIENT), "{log}");
    agent.finish().await;
}

#[tokio::test]
async fn a_reload_names_what_needs_a_restart_and_survives_a_broken_file() {
    let (mut agent, _credentials) = agent_with_credentials().await;
    agent.terminal.wait_until_up().await;
    let pending = agent.started(500).await;
    let original = std::fs::read_to_string(&agent.config_path).unwrap();

    // A key that only a restart applies: named, and its running value kept.
    let changed = original.replace("payment_timeout = \"10m\"", "payment_timeout = \"1s\"");
    assert_ne!(changed, original);
    std::fs::write(&agent.config_path, &changed).unwrap();
    agent.signal(Signal::SIGHUP);
    let log = agent
        .log_until("the reload", |log| log.contains("configuration reloaded"))
        .await;
    assert!(
        log.contains(
            "reload: terminal.payment_timeout changed; it takes effect at the next restart"
        ),
        "{log}"
    );

    // A file that does not load: logged, the running configuration kept, the agent serving.
    std::fs::write(&agent.config_path, "[paywall\nthis is not TOML").unwrap();
    agent.signal(Signal::SIGHUP);
    agent
        .log_until("the refused reload", |log| {
            log.contains("reload refused, the running configuration is kept")
        })
        .await;
    let second = agent.started(700).await;
    let mut ids = agent.pending_ids().await;
    ids.sort();
    let mut expected = vec![pending, second];
    expected.sort();
    // payment_timeout = 1s was not applied: nothing timed out.
    assert_eq!(ids, expected);
    assert!(agent.sim.requests_to("POST", CANCEL).is_empty());
    agent.finish().await;
}

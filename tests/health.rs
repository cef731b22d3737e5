//! `pos-agent check-health` against the real daemon (docs/operations.md, "Health check"):
//! healthy once connected with the terminal link up, unhealthy with the reason on one line and
//! the documented exit code when the payment API cannot be reached or no daemon answers.

mod support;

use support::daemon::{Agent, Setup};

#[tokio::test]
async fn a_connected_agent_with_its_terminal_is_healthy() {
    let mut agent = Agent::start(Setup::default()).await;
    let out = agent.cli(&["check-health", "--wait", "60s"]).await;
    assert_eq!(out.code, Some(0), "{out:?}\nlog:\n{}", agent.log());
    assert!(
        out.stdout
            .starts_with("healthy: connection connected, terminal link up"),
        "{out:?}"
    );
    // The running daemon's build: the one an update's gate judges.
    assert!(
        out.stdout.trim_end().ends_with(concat!(
            "; pos-agent ",
            env!("CARGO_PKG_VERSION"),
            " (commit ",
            env!("POS_AGENT_COMMIT"),
            ")"
        )),
        "{out:?}"
    );
    agent.finish().await;
}

#[tokio::test]
async fn an_unreachable_api_is_unhealthy_with_the_reason_on_one_line_and_exit_75() {
    let mut agent = Agent::with_unresolvable_api(Setup::default()).await;
    let out = agent.cli(&["check-health", "--wait", "2s"]).await;
    assert_eq!(out.code, Some(75), "{out:?}");
    assert_eq!(out.stderr.lines().count(), 1, "{out:?}");
    assert!(
        out.stderr
            .starts_with("pos-agent: unhealthy (waited 2s): connection "),
        "{out:?}"
    );
    assert!(
        out.stderr.trim_end().ends_with(concat!(
            "; pos-agent ",
            env!("CARGO_PKG_VERSION"),
            " (commit ",
            env!("POS_AGENT_COMMIT"),
            ")"
        )),
        "{out:?}"
    );
    assert!(out.stdout.is_empty(), "{out:?}");
    agent.finish().await;
}

#[test]
fn no_daemon_is_unhealthy_with_exit_69() {
    let dir = tempfile::tempdir().unwrap();
    let output = support::pos_agent()
        .args(["check-health", "--socket"])
        .arg(dir.path().join("control.sock"))
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(69), "{output:?}");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(
        stderr.starts_with("pos-agent: unhealthy: cannot reach the pos-agent daemon"),
        "{stderr}"
    );
}

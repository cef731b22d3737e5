//! `pos-agent check-health` against the real daemon (docs/operations.md, "Health check"): by
//! default it judges the release (the daemon answers, its state directory is writable, its
//! serial device is open), so an unreachable payment API or a silent terminal is healthy unless
//! `--require connection,link` (or `POS_AGENT_HEALTH_REQUIRE`, as the unit passes it) asks for
//! them; unhealthy is the reason on one line with the documented exit code.

use crate::support;

use crate::support::daemon::{Agent, CliOutput, Setup};

/// The running daemon's build, which ends every line of the gate: the one an update judges.
const BUILD: &str = concat!(
    "; pos-agent ",
    env!("CARGO_PKG_VERSION"),
    " (commit ",
    env!("POS_AGENT_COMMIT"),
    ")"
);

/// One line on stderr, nothing on stdout, the code, the start of the reason and the build.
fn assert_unhealthy(out: &CliOutput, code: i32, starts: &str) {
    assert_eq!(out.code, Some(code), "{out:?}");
    assert_eq!(out.stderr.lines().count(), 1, "{out:?}");
    assert!(out.stderr.starts_with(starts), "{out:?}");
    assert!(out.stderr.trim_end().ends_with(BUILD), "{out:?}");
    assert!(out.stdout.is_empty(), "{out:?}");
}

/// `check-health` with `POS_AGENT_HEALTH_REQUIRE` set, as pos-agent-healthy.service runs it.
async fn check_with_env(agent: &Agent, require: &str) -> CliOutput {
    let mut command = support::pos_agent();
    command
        .args(["check-health", "--wait", "2s", "--socket"])
        .arg(&agent.socket)
        .env("POS_AGENT_HEALTH_REQUIRE", require);
    let output = tokio::task::spawn_blocking(move || command.output())
        .await
        .unwrap()
        .unwrap();
    CliOutput {
        code: output.status.code(),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

#[tokio::test]
async fn a_connected_agent_with_its_terminal_is_healthy_also_with_every_condition_required() {
    let mut agent = Agent::start(Setup::default()).await;
    // Required, they are waited for; once they hold, the default check says them too.
    for args in [
        &[
            "check-health",
            "--wait",
            "60s",
            "--require",
            "connection,link",
        ][..],
        &["check-health"],
    ] {
        let out = agent.cli(args).await;
        assert_eq!(out.code, Some(0), "{out:?}\nlog:\n{}", agent.log());
        assert!(
            out.stdout.starts_with(
                "healthy: state directory writable, serial device open, connection connected, \
                 terminal link up, 0 pending"
            ),
            "{out:?}"
        );
        assert!(out.stdout.trim_end().ends_with(BUILD), "{out:?}");
    }
    agent.finish().await;
}

#[tokio::test]
async fn an_unreachable_api_is_healthy_by_default_and_unhealthy_with_exit_75_when_required() {
    let mut agent = Agent::with_unresolvable_api(Setup::default()).await;
    let out = agent.cli(&["check-health", "--wait", "60s"]).await;
    assert_eq!(out.code, Some(0), "{out:?}\nlog:\n{}", agent.log());
    assert!(
        out.stdout
            .starts_with("healthy: state directory writable, serial device open, connection "),
        "{out:?}"
    );
    assert!(out.stdout.contains("(not required)"), "{out:?}");

    let out = agent
        .cli(&["check-health", "--wait", "2s", "--require", "connection"])
        .await;
    assert_unhealthy(&out, 75, "pos-agent: unhealthy (waited 2s): connection ");
    // The unit's way: the environment variable, empty by default.
    let out = check_with_env(&agent, "connection").await;
    assert_unhealthy(&out, 75, "pos-agent: unhealthy (waited 2s): connection ");
    let out = check_with_env(&agent, "").await;
    assert_eq!(out.code, Some(0), "{out:?}");
    // A condition it does not know is a usage error, not a verdict.
    let out = check_with_env(&agent, "connection,network").await;
    assert_eq!(out.code, Some(2), "{out:?}");
    assert!(out.stderr.contains("\"network\""), "{out:?}");
    agent.finish().await;
}

#[tokio::test]
async fn a_silent_terminal_is_healthy_by_default_and_unhealthy_when_the_link_is_required() {
    let mut agent = Agent::start(Setup::default()).await;
    agent
        .status_until("the link up", |s| s["terminal_link"] == "up")
        .await;
    // A line on which nobody answers: the device is open, the link is down.
    let _line = agent.replace_terminal_with_raw_line();
    agent
        .status_until("the new line open and the link down", |s| {
            s["serial_port"]["open"] == true
                && s["serial_port"]["reopens"] == 1
                && s["terminal_link"] == "down"
        })
        .await;
    let out = agent.cli(&["check-health"]).await;
    assert_eq!(out.code, Some(0), "{out:?}");
    assert!(
        out.stdout.contains("terminal link down (not required)"),
        "{out:?}"
    );
    let out = agent.cli(&["check-health", "--require", "link"]).await;
    assert_unhealthy(&out, 75, "pos-agent: unhealthy: terminal link down");
    agent.finish().await;
}

#[tokio::test]
async fn a_serial_device_that_does_not_open_is_unhealthy_with_exit_75() {
    let mut agent = Agent::start(Setup::default()).await;
    agent.unplug();
    agent
        .status_until("the device missing", |s| s["serial_port"]["open"] == false)
        .await;
    let out = agent.cli(&["check-health", "--wait", "2s"]).await;
    assert_unhealthy(
        &out,
        75,
        "pos-agent: unhealthy (waited 2s): serial device not open (cannot open ",
    );
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

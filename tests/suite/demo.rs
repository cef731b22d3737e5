//! `pos-agent demo`, as a new user runs it: the README's first command.
use crate::support;

#[test]
fn the_demo_walks_through_the_whole_system_and_exits_0() {
    if std::env::var_os("POS_AGENT_TEST_RUNNER").is_some() {
        // The demo starts its daemon as `current_exe() run`, which an emulated process cannot
        // exec without binfmt_misc; the daemon itself is exercised under emulation by the
        // agent_* modules.
        eprintln!("skipped under emulation (POS_AGENT_TEST_RUNNER is set)");
        return;
    }
    let output = support::pos_agent().arg("demo").output().unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(
        output.status.code(),
        Some(0),
        "stdout:\n{stdout}\nstderr:\n{stderr}"
    );
    for step in [
        "READY=1",
        "terminal ← agent_state ready",
        "terminal ← sale_started",
        "payment_result succeeded",
        "$ pos-agent cancel",
        "(reason operator)",
        "\"type\":\"cancelled\"",
        "$ pos-agent status",
        "STOPPING=1",
        "terminal ← agent_state stopping",
        "(reason shutdown)",
        "PUT /api/connection/disconnect",
        "demo finished",
    ] {
        assert!(
            stdout.contains(step),
            "the demo did not show {step:?}:\n{stdout}"
        );
    }
    for secret in [
        pos_agent::simulator::api::DEMO_API_KEY_PRIVATE,
        pos_agent::simulator::api::DEMO_API_CLIENT_PRIVATE,
    ] {
        assert!(
            !stdout.contains(secret) && !stderr.contains(secret),
            "a key reached the demo's output"
        );
    }
}

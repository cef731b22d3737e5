//! What the integration tests share, defined once: the real binary as a process, the one
//! generous wait, the secrets no output may contain, the payment API's paths, a test run alone in
//! a process of its own. Each test module takes what it needs (`use crate::support::...`):
//!
//! - [`daemon`]: a whole agent (real `pos-agent run`, terminal simulator on a pty pair, payment
//!   API simulator on loopback, a notify socket).
//! - [`line`]: a serial line at a real line's speed (two pty pairs and a relay), with a tap
//!   that sees every frame crossing it.
//! - [`payment_api`]: a client configured for a running simulator, the establish parameters, a
//!   sale, the seed fixtures.
//! - [`serial`]: the agent's link on a pty slave and a raw terminal on its master.
//! - [`slow_fsync`]: the slow-storage shim preloaded into the daemon.
//! - [`preload`]: the `LD_PRELOAD` libraries of `tools/`, built with the host's C compiler.
//! - [`terminal_kit`]: the conformance kit against a terminal through a relay that can break
//!   one rule, and the C reference terminal's build.
//! - [`proxy`]: an HTTP CONNECT proxy on loopback that records what it was asked.
//! - [`tls`]: a CA made at test time and the certificates it issues.

use std::ffi::OsString;
use std::process::Command;
use std::time::Duration;

use pos_agent::simulator::api as sim;

pub mod daemon;
pub mod line;
pub mod payment_api;
pub mod preload;
pub mod proxy;
pub mod serial;
pub mod slow_fsync;
pub mod terminal_kit;
pub mod tls;

/// How long a test waits for something that must happen: generous, because the suite also runs
/// under qemu-user (about ten times slower) on a loaded machine. Tests wait for a condition
/// with this as the deadline; they never sleep it.
pub const WAIT: Duration = Duration::from_secs(20);

/// A provider credential (an establish `ServiceParameters` value) that must never show up in
/// any output.
pub const SERVICE_PARAMETER_SECRET: &str = "provider-password-6f1d";

/// Every secret a test hands the agent or the client; no output may contain any of them.
pub const SECRETS: [&str; 5] = [
    sim::DEMO_API_KEY_PRIVATE,
    sim::DEMO_API_CLIENT_PRIVATE,
    sim::DEMO_API_KEY_PUBLIC,
    sim::DEMO_API_CLIENT_PUBLIC,
    SERVICE_PARAMETER_SECRET,
];

/// The payment API paths the tests count requests to (docs/payment-api.md (Methods)).
pub mod paths {
    pub const ESTABLISH: &str = "/api/connection";
    pub const RECONNECT: &str = "/api/connection/reconnect";
    pub const DISCONNECT: &str = "/api/connection/disconnect";
    pub const SALE: &str = "/api/payment/async/sale";
    pub const CANCEL: &str = "/api/payment/async/cancel";
}

/// A `Command` for the real `pos-agent` binary built for this test run.
///
/// When the suite runs for another architecture under emulation, `.ci/run` sets
/// `POS_AGENT_TEST_RUNNER` (for example `qemu-aarch64 -L /usr/aarch64-linux-gnu`) and the binary
/// is started through it, as cargo starts the test binaries themselves.
pub fn pos_agent() -> Command {
    let binary = env!("CARGO_BIN_EXE_pos-agent");
    match std::env::var("POS_AGENT_TEST_RUNNER") {
        Ok(runner) if !runner.trim().is_empty() => {
            let mut words = runner.split_whitespace();
            let mut command = Command::new(words.next().unwrap_or_default());
            command.args(words).arg(binary);
            command
        }
        _ => Command::new(binary),
    }
}

/// The command line (program first) that runs only the test `name` of the module `module` (its
/// `module_path!()`) in a new process of this test binary, through the emulator when the suite
/// runs under one (`POS_AGENT_TEST_RUNNER`, as in [`pos_agent`]). For a test that needs a process
/// of its own: an environment of its own, or a socket systemd passes.
pub fn this_test_alone(module: &str, name: &str) -> Vec<OsString> {
    let module = module.split_once("::").map_or(module, |(_, path)| path);
    let mut words: Vec<OsString> = match std::env::var("POS_AGENT_TEST_RUNNER") {
        Ok(runner) if !runner.trim().is_empty() => {
            runner.split_whitespace().map(OsString::from).collect()
        }
        _ => Vec::new(),
    };
    words.push(std::env::current_exe().unwrap().into());
    for word in [
        "--exact",
        &format!("{module}::{name}"),
        "--nocapture",
        "--test-threads=1",
    ] {
        words.push(word.into());
    }
    words
}

/// Checks the commit a build reports (`--version`, `status`, the metrics): the one `build.rs`
/// recorded, which is git's 12-digit hash of `HEAD` (with `-dirty` when the sources differed
/// from it) when the sources are a git checkout, else `unknown` (docs/development.md, "Which
/// build is this").
pub fn assert_build_commit(commit: &str) {
    assert_eq!(
        commit,
        env!("POS_AGENT_COMMIT"),
        "the commit build.rs recorded"
    );
    let root = env!("CARGO_MANIFEST_DIR");
    let git = |args: &[&str]| {
        Command::new("git")
            .arg("-C")
            .arg(root)
            .args(args)
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
    };
    let own_checkout = git(&["rev-parse", "--show-toplevel"])
        .is_some_and(|top| std::fs::canonicalize(top).ok() == std::fs::canonicalize(root).ok());
    match git(&["rev-parse", "--short=12", "HEAD"]).filter(|_| own_checkout) {
        Some(head) => assert!(
            commit == head || commit == format!("{head}-dirty"),
            "commit {commit:?} is not HEAD ({head})"
        ),
        None => assert_eq!(commit, "unknown", "no git checkout, yet a commit"),
    }
}

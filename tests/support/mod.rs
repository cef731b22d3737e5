//! Helpers shared by the integration tests. Each test file that needs them says `mod common;`.
#![allow(dead_code)]

use std::process::Command;

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
pub mod daemon;
pub mod slow_fsync;

//! The C reference terminal (`terminal-c/`, docs/terminal-kit.md) as a maker gets it: compiled
//! warning-free as C99 by gcc and clang, checked against the spec's byte-exact vectors, its
//! decoder's fuzz seeds replayed under the sanitizers, its POSIX example passing the conformance
//! kit, and the example performing a sale, a result and a cancel against the real daemon over
//! a pty pair.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};

use crate::support::daemon::{Agent, Setup};
use crate::support::terminal_kit::{
    compile, failed_cases, have, run_kit, terminal_c_dir, terminal_line_for, Bench, Fault,
};
use crate::support::WAIT;

const LIBRARY: [&str; 3] = [
    "src/posterm_frame.c",
    "src/posterm_msg.c",
    "src/posterm_link.c",
];

fn with_library(more: &[&'static str]) -> Vec<&'static str> {
    LIBRARY
        .iter()
        .copied()
        .chain(more.iter().copied())
        .collect()
}

/// The compilers to build with: gcc always, clang when it is installed (said when it is not).
fn compilers() -> Vec<&'static str> {
    let mut found = vec!["gcc"];
    if have("clang") {
        found.push("clang");
    } else {
        println!("note: clang is not installed; the C reference terminal is built with gcc only");
    }
    found
}

fn run(program: &Path, args: &[PathBuf]) -> (bool, String) {
    let output = Command::new(program).args(args).output().unwrap();
    (
        output.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        ),
    )
}

#[test]
fn the_library_builds_warning_free_and_passes_the_spec_vectors() {
    let dir = tempfile::tempdir().unwrap();
    for compiler in compilers() {
        let vectors = dir.path().join(format!("vectors-{compiler}"));
        compile(compiler, &with_library(&["tests/vectors.c"]), &[], &vectors);
        let (passed, output) = run(&vectors, &[]);
        assert!(passed, "{compiler}: {output}");
        assert!(output.contains(" checks, 0 failed"), "{output}");
        compile(
            compiler,
            &with_library(&["examples/posix_terminal.c"]),
            &[],
            &dir.path().join(format!("posix_terminal-{compiler}")),
        );
    }
}

/// The seeds of the C decoder's fuzz target and of the Rust `decoder` target, replayed through
/// the C target under AddressSanitizer and UBSan; with clang, the libFuzzer build of the same
/// target also runs a few thousand inputs.
#[test]
fn the_decoder_fuzz_target_replays_its_seeds_under_the_sanitizers() {
    let dir = tempfile::tempdir().unwrap();
    let replay = dir.path().join("replay");
    compile(
        "gcc",
        &with_library(&["fuzz/fuzz_decoder.c", "fuzz/replay.c"]),
        &[
            "-g",
            "-fsanitize=address,undefined",
            "-fno-sanitize-recover=all",
        ],
        &replay,
    );
    let mut seeds: Vec<PathBuf> = Vec::new();
    for corpus in [
        terminal_c_dir().join("fuzz/corpus"),
        Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus/decoder"),
    ] {
        seeds.extend(
            std::fs::read_dir(corpus)
                .unwrap()
                .map(|e| e.unwrap().path()),
        );
    }
    assert!(seeds.len() >= 9, "{seeds:?}");
    let (passed, output) = run(&replay, &seeds);
    assert!(passed, "{output}");
    assert!(
        output.contains(&format!("replayed {} inputs", seeds.len())),
        "{output}"
    );
    if have("clang") {
        let fuzzer = dir.path().join("fuzzer");
        compile(
            "clang",
            &with_library(&["fuzz/fuzz_decoder.c"]),
            &["-g", "-fsanitize=fuzzer,address,undefined"],
            &fuzzer,
        );
        let corpus = dir.path().join("corpus");
        std::fs::create_dir(&corpus).unwrap();
        for seed in &seeds {
            std::fs::copy(seed, corpus.join(seed.file_name().unwrap())).unwrap();
        }
        let (passed, output) = run(
            &fuzzer,
            &[
                PathBuf::from("-runs=3000"),
                PathBuf::from("-seed=1"),
                corpus,
            ],
        );
        assert!(passed, "{output}");
        assert!(output.contains("Done 3000 runs"), "{output}");
    } else {
        println!("note: clang is not installed; the libFuzzer build is not run");
    }
}

/// The POSIX example built with gcc, in `dir`.
fn posix_terminal(dir: &Path) -> PathBuf {
    let binary = dir.join("posix_terminal");
    compile(
        "gcc",
        &with_library(&["examples/posix_terminal.c"]),
        &[],
        &binary,
    );
    binary
}

/// The example on `device`, its stdin and stdout kept for the test.
struct CTerminal {
    child: Child,
    stdin: ChildStdin,
    lines: tokio::sync::mpsc::UnboundedReceiver<String>,
}

impl CTerminal {
    fn start(binary: &Path, device: &Path) -> CTerminal {
        let mut child = Command::new(binary)
            .arg(device)
            .args(["--model", "Acme T1", "--firmware", "2.4.1"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let stdin = child.stdin.take().unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, lines) = tokio::sync::mpsc::unbounded_channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        CTerminal {
            child,
            stdin,
            lines,
        }
    }

    fn say(&mut self, command: &str) {
        writeln!(self.stdin, "{command}").unwrap();
    }

    /// The next printed message of type `wanted` (others are skipped).
    async fn next(&mut self, wanted: &str) -> serde_json::Value {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let line = tokio::time::timeout_at(deadline, self.lines.recv())
                .await
                .ok()
                .flatten()
                .unwrap_or_else(|| panic!("the C terminal printed no {wanted} within {WAIT:?}"));
            let message: serde_json::Value =
                serde_json::from_str(&line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
            if message["type"] == wanted {
                return message;
            }
        }
    }
}

impl Drop for CTerminal {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test]
async fn the_c_terminal_passes_the_conformance_kit() {
    let dir = tempfile::tempdir().unwrap();
    let binary = posix_terminal(dir.path());
    let bench = Bench::start(Fault::None);
    let _terminal = CTerminal::start(&binary, &bench.terminal_device);
    let (code, report) = run_kit(&bench.kit_device).await;
    assert_eq!(failed_cases(&report), vec![], "{report:#}");
    assert_eq!(code, Some(0));
    assert_eq!(
        report["terminal"],
        serde_json::json!({"protocol": 1, "model": "Acme T1", "firmware": "2.4.1"})
    );
}

#[tokio::test]
async fn the_c_terminal_sells_reports_a_result_and_cancels_against_the_daemon() {
    let dir = tempfile::tempdir().unwrap();
    let binary = posix_terminal(dir.path());
    let mut agent = Agent::connected(Setup::default()).await;
    let device = terminal_line_for(agent.replace_terminal_with_line());
    let mut terminal = CTerminal::start(&binary, &device);

    let ready = terminal.next("agent_state").await;
    assert_eq!(ready["state"], "ready");
    assert_eq!(ready["protocol"], 1);
    let status = agent
        .status_until("the C terminal named itself", |s| {
            s["terminal"]["model"] == "Acme T1"
        })
        .await;
    assert_eq!(status["terminal"]["firmware"], "2.4.1");

    // A sale, then its result: pending, then no longer.
    let code = uuid::Uuid::new_v4();
    terminal.say(&format!("sale {code} 2250"));
    let started = terminal.next("sale_started").await;
    assert_eq!(started["merchant_unique_code"], code.to_string());
    let paid = started["payment_request_id"].as_str().unwrap().to_owned();
    assert!(agent.pending_ids().await.contains(&paid));
    terminal.say(&format!("result {paid} succeeded"));
    terminal.next("ok").await;
    assert!(!agent.pending_ids().await.contains(&paid));

    // A second sale, cancelled by the terminal.
    terminal.say(&format!("sale {} 990", uuid::Uuid::new_v4()));
    let started = terminal.next("sale_started").await;
    let cancelled_id = started["payment_request_id"].as_str().unwrap().to_owned();
    terminal.say(&format!("cancel {cancelled_id}"));
    let cancelled = terminal.next("cancelled").await;
    assert_eq!(
        cancelled["payment_request_ids"],
        serde_json::json!([cancelled_id])
    );
    assert!(agent.pending_ids().await.is_empty());
    drop(terminal);
    agent.finish().await;
}

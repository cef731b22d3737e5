//! The terminal kit's test bench: two pty pairs joined by a relay (the conformance kit on one
//! slave, a terminal on the other), the relay able to break one rule of the terminal on
//! purpose, and the kit run as a process; plus the C reference terminal built with the system's
//! C compilers (docs/terminal-kit.md).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use pos_agent::serial::codec::{FrameCodec, Inbound};
use pos_agent::serial::frame::{frame_bytes, ACK, NAK};
use pos_agent::simulator::virtual_serial::VirtualSerial;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_util::codec::Decoder;

/// One rule the relay breaks in what the terminal sends, making a well-behaved terminal a
/// broken one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// Nothing: the terminal as it is.
    None,
    /// Its NAKs never reach the kit (a terminal that does not NAK bad frames).
    DropNaks,
    /// All it sends reaches the kit 300 ms late, its ACKs included (slower than T1); the
    /// intervals between its bytes stay as they were.
    SlowAcks,
    /// A frame it sends again (no frame of the kit in between) is dropped: it never resends.
    NoResend,
    /// Its `error` replies become `ok` (a terminal that accepts invalid requests).
    ErrorsAsOk,
}

/// Two pty pairs and a relay between their masters: `kit_device` for the kit,
/// `terminal_device` for the terminal.
pub struct Bench {
    pub kit_device: PathBuf,
    pub terminal_device: PathBuf,
}

impl Bench {
    pub fn start(fault: Fault) -> Bench {
        let kit = VirtualSerial::open().unwrap();
        let terminal = VirtualSerial::open().unwrap();
        let bench = Bench {
            kit_device: kit.slave_path().to_path_buf(),
            terminal_device: terminal.slave_path().to_path_buf(),
        };
        relay(kit, terminal, fault);
        bench
    }
}

/// A terminal device joined to `agent_side` (the master of the agent's line): returns the slave
/// path a terminal process opens.
pub fn terminal_line_for(agent_side: VirtualSerial) -> PathBuf {
    let terminal = VirtualSerial::open().unwrap();
    let device = terminal.slave_path().to_path_buf();
    relay(agent_side, terminal, Fault::None);
    device
}

/// Copies what comes out of `kit` (a pty master) into `terminal` (another one) and back, with
/// `fault` applied to what the terminal sends.
fn relay(kit: VirtualSerial, terminal: VirtualSerial, fault: Fault) {
    let (mut from_kit, mut to_kit) = tokio::io::split(kit);
    let (mut from_terminal, mut to_terminal) = tokio::io::split(terminal);
    let kit_sent_frame = Arc::new(AtomicBool::new(false));
    let kit_sent = Arc::clone(&kit_sent_frame);
    tokio::spawn(async move {
        let (mut codec, mut buffer, mut chunk) = (FrameCodec::new(), BytesMut::new(), [0u8; 4096]);
        while let Ok(n @ 1..) = from_kit.read(&mut chunk).await {
            buffer.extend_from_slice(&chunk[..n]);
            while let Ok(Some(item)) = codec.decode(&mut buffer) {
                if matches!(item, Inbound::Frame(_) | Inbound::Rejected(_)) {
                    kit_sent.store(true, Ordering::SeqCst);
                }
            }
            if to_terminal.write_all(&chunk[..n]).await.is_err() {
                return;
            }
        }
    });
    tokio::spawn(async move {
        let (mut codec, mut buffer, mut chunk) = (FrameCodec::new(), BytesMut::new(), [0u8; 4096]);
        let mut last_frame: Option<bytes::Bytes> = None;
        let delay = if fault == Fault::SlowAcks {
            Duration::from_millis(300)
        } else {
            Duration::ZERO
        };
        let (line, mut delayed) =
            tokio::sync::mpsc::unbounded_channel::<(tokio::time::Instant, Vec<u8>)>();
        tokio::spawn(async move {
            while let Some((due, out)) = delayed.recv().await {
                tokio::time::sleep_until(due).await;
                if to_kit.write_all(&out).await.is_err() {
                    return;
                }
            }
        });
        while let Ok(n @ 1..) = from_terminal.read(&mut chunk).await {
            buffer.extend_from_slice(&chunk[..n]);
            while let Ok(Some(item)) = codec.decode(&mut buffer) {
                let out: Vec<u8> = match item {
                    Inbound::Ack => vec![ACK],
                    Inbound::Nak if fault == Fault::DropNaks => vec![],
                    Inbound::Nak => vec![NAK],
                    Inbound::Rejected(_) => vec![],
                    Inbound::Frame(apdu) => {
                        let resend = last_frame.as_ref() == Some(&apdu)
                            && !kit_sent_frame.swap(false, Ordering::SeqCst);
                        kit_sent_frame.store(false, Ordering::SeqCst);
                        last_frame = Some(apdu.clone());
                        if resend && fault == Fault::NoResend {
                            vec![]
                        } else {
                            frame_bytes(&errors_as_ok(&apdu, fault)).unwrap().to_vec()
                        }
                    }
                };
                let due = tokio::time::Instant::now() + delay;
                if line.send((due, out)).is_err() {
                    return;
                }
            }
        }
    });
}

fn errors_as_ok(apdu: &[u8], fault: Fault) -> Vec<u8> {
    if fault != Fault::ErrorsAsOk {
        return apdu.to_vec();
    }
    match serde_json::from_slice::<serde_json::Value>(apdu) {
        Ok(value) if value["type"] == "error" => {
            serde_json::to_vec(&serde_json::json!({"type":"ok","re":value["re"]})).unwrap()
        }
        _ => apdu.to_vec(),
    }
}

/// `pos-agent conformance --json` on `device`: its exit code and its report.
pub async fn run_kit(device: &Path) -> (Option<i32>, serde_json::Value) {
    let mut command = super::pos_agent();
    command
        .args(["conformance", "--json", "--device"])
        .arg(device);
    let output = tokio::task::spawn_blocking(move || command.output())
        .await
        .unwrap()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let report = serde_json::from_str(&stdout).unwrap_or_else(|e| {
        panic!(
            "the kit's --json output is not JSON ({e}): {stdout}\nstderr: {}",
            String::from_utf8_lossy(&output.stderr)
        )
    });
    (output.status.code(), report)
}

/// The names of the cases that failed, with what the kit saw for each.
pub fn failed_cases(report: &serde_json::Value) -> Vec<(String, String)> {
    report["cases"]
        .as_array()
        .expect("cases")
        .iter()
        .filter(|case| case["passed"] != true)
        .map(|case| {
            (
                case["name"].as_str().unwrap_or_default().to_owned(),
                case["seen"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect()
}

/// `terminal-c/` in the source tree.
pub fn terminal_c_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("terminal-c")
}

/// Whether `compiler` can be run.
pub fn have(compiler: &str) -> bool {
    Command::new(compiler)
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
}

/// Compiles `sources` (paths under `terminal-c/`) with `compiler` and the kit's warning flags
/// into `output`; panics with the compiler's messages when it fails.
pub fn compile(compiler: &str, sources: &[&str], extra: &[&str], output: &Path) {
    let dir = terminal_c_dir();
    let result = Command::new(compiler)
        .args([
            "-std=c99",
            "-Wall",
            "-Wextra",
            "-Werror",
            "-pedantic",
            "-O1",
        ])
        .arg("-I")
        .arg(dir.join("include"))
        .args(sources.iter().map(|s| dir.join(s)))
        .args(extra)
        .arg("-o")
        .arg(output)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {compiler}: {e}"));
    assert!(
        result.status.success(),
        "{compiler} failed on {sources:?}:\n{}",
        String::from_utf8_lossy(&result.stderr)
    );
}

//! The operator commands of docs/operations.md (Operator commands) as an operator runs them: the real binary talks to a
//! real control socket served by `control::serve`, whose core is a test task answering with
//! canned responses. Checks what the command sent, what it printed and its exit code.
use crate::support;

use std::path::PathBuf;
use std::process::Output;
use std::sync::{Arc, Mutex};

use pos_agent::control::{
    self, AbandonedSaleView, CancelFailure, CancelReason, CancelReport, CancelTarget,
    ConnectionReport, ConnectionStatus, ControlCall, ControlError, ControlErrorKind, ControlReply,
    ControlRequest, ControlResponse, DisconnectReport, PendingPaymentView, PendingReport,
    SerialPortView, StatusReport, StorageView, TerminalLinkStatus, UnlinkReport,
};
use pos_agent::serial::TerminalIdentity;
use serde_json::{json, Value};
use tokio::sync::{mpsc, oneshot};

const PAYMENT: &str = "7cc7c8e8-9d92-41b6-9378-e9ecef5a7812";
const OTHER_PAYMENT: &str = "72ec8714-d116-4306-8881-38a43c485da9";
const CONNECTION: &str = "70b2190b-2f1e-4a8e-9d59-0d1f1c7b1a11";

type Answer = Box<dyn Fn(&ControlRequest) -> Option<ControlResponse> + Send>;

/// A control socket served on its own thread and runtime while the test runs the binary.
/// `answer` gives the core's response to each request; `None` leaves the call unanswered.
struct FakeDaemon {
    _dir: tempfile::TempDir,
    socket: PathBuf,
    received: Arc<Mutex<Vec<ControlRequest>>>,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl FakeDaemon {
    fn start(answer: impl Fn(&ControlRequest) -> Option<ControlResponse> + Send + 'static) -> Self {
        let answer: Answer = Box::new(answer);
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("control.sock");
        let received = Arc::new(Mutex::new(Vec::new()));
        let (stop, stopped) = oneshot::channel::<()>();
        let (ready_tx, ready) = std::sync::mpsc::channel();
        let thread = {
            let socket = socket.clone();
            let received = Arc::clone(&received);
            std::thread::spawn(move || {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .unwrap();
                runtime.block_on(async move {
                    let listener = control::bind(&socket).unwrap();
                    let (calls_tx, mut calls) = mpsc::channel::<ControlCall>(4);
                    tokio::spawn(async move {
                        let mut unanswered = Vec::new();
                        while let Some(call) = calls.recv().await {
                            received.lock().unwrap().push(call.request.clone());
                            match answer(&call.request) {
                                Some(response) => {
                                    let _ = call.reply.send(response);
                                }
                                None => unanswered.push(call.reply),
                            }
                        }
                    });
                    ready_tx.send(()).unwrap();
                    control::serve(listener, calls_tx, async {
                        let _ = stopped.await;
                    })
                    .await;
                });
            })
        };
        ready.recv().unwrap();
        Self {
            _dir: dir,
            socket,
            received,
            stop: Some(stop),
            thread: Some(thread),
        }
    }

    /// Answers every request with `response`.
    fn answering(response: ControlResponse) -> Self {
        Self::start(move |_| Some(response.clone()))
    }

    fn run(&self, args: &[&str]) -> Output {
        support::pos_agent()
            .arg("--socket")
            .arg(&self.socket)
            .args(args)
            .env_remove("POS_AGENT_SOCKET")
            .output()
            .unwrap()
    }

    fn received(&self) -> Vec<ControlRequest> {
        self.received.lock().unwrap().clone()
    }
}

impl Drop for FakeDaemon {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn stdout(output: &Output) -> String {
    String::from_utf8(output.stdout.clone()).unwrap()
}

fn stderr(output: &Output) -> String {
    String::from_utf8(output.stderr.clone()).unwrap()
}

fn json_stdout(output: &Output) -> Value {
    let text = stdout(output);
    assert_eq!(text.lines().count(), 1, "not one JSON line: {text:?}");
    serde_json::from_str(&text).unwrap()
}

fn pending() -> Vec<PendingPaymentView> {
    vec![
        PendingPaymentView {
            payment_request_id: PAYMENT.into(),
            merchant_unique_code: Some("order-1001".into()),
            amount_minor: Some(1250),
            since: "2026-11-21T13:16:40Z".into(),
            cancel_requested: false,
            cancel_reason: None,
            cancel_refused: None,
        },
        PendingPaymentView {
            payment_request_id: OTHER_PAYMENT.into(),
            merchant_unique_code: None,
            amount_minor: None,
            since: "2026-11-21T13:17:02Z".into(),
            cancel_requested: true,
            cancel_reason: Some(CancelReason::Terminal),
            cancel_refused: None,
        },
    ]
}

fn status() -> StatusReport {
    StatusReport {
        version: "9.8.7".into(),
        commit: "0123456789ab".into(),
        connection_id: Some(CONNECTION.into()),
        connection: ConnectionStatus::Connected,
        rejection: None,
        connection_problem: None,
        terminal_link: TerminalLinkStatus::Up,
        terminal: Some(TerminalIdentity {
            protocol: Some(1),
            model: Some("Acme T1".into()),
            firmware: Some("2.4.1".into()),
        }),
        serial_port: SerialPortView {
            open: Some(true),
            reopens: 3,
            last_error: Some(
                "/dev/serial/by-id/usb-T lost: Input/output error (os error 5)".into(),
            ),
            last_error_at: Some("2026-11-21T13:02:11Z".into()),
        },
        pending: pending(),
        abandoned: vec![],
        terminal_last_answered: Some("2026-11-21T13:17:05Z".into()),
        api_last_answered: None,
        storage: StorageView {
            directory: "/var/lib/pos-agent".into(),
            writable: true,
            last_error: Some("No space left on device (os error 28)".into()),
            last_error_at: Some("2026-11-21T12:40:00Z".into()),
            free_bytes: Some(12 * 1024 * 1024),
            free_space_low: false,
        },
        api_retry_after: None,
    }
}

fn error(kind: ControlErrorKind, message: &str) -> ControlResponse {
    ControlResponse::error(ControlError::new(kind, message))
}

#[test]
fn status_prints_connection_link_version_and_the_pending_table() {
    let daemon = FakeDaemon::answering(ControlReply::Status(Box::new(status())).into());
    let output = daemon.run(&["status"]);
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    let text = stdout(&output);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines[0], "version        9.8.7 (commit 0123456789ab)");
    assert_eq!(lines[1], format!("connection     connected  {CONNECTION}"));
    assert_eq!(lines[2], "terminal link  up");
    assert_eq!(
        lines[3],
        "terminal       Acme T1, firmware 2.4.1, protocol 1"
    );
    assert_eq!(
        lines[4],
        "serial port    open, reopened 3 times; last error at 2026-11-21T13:02:11Z: \
         /dev/serial/by-id/usb-T lost: Input/output error (os error 5)"
    );
    assert_eq!(
        lines[5],
        "last answer    terminal 2026-11-21T13:17:05Z, payment API never"
    );
    assert_eq!(lines[6], "pending        2");
    assert_eq!(
        lines[7],
        "storage        /var/lib/pos-agent writable, 12288 KiB free; last write error at \
         2026-11-21T12:40:00Z: No space left on device (os error 28)"
    );
    assert!(lines[9].starts_with("PAYMENT REQUEST ID"), "{text}");
    assert!(
        lines[10].starts_with(PAYMENT) && lines[10].contains("1250"),
        "{text}"
    );
    assert!(lines[10].contains("order-1001"), "{text}");
    assert!(lines[11].contains("requested (terminal)"), "{text}");
    assert_eq!(daemon.received(), vec![ControlRequest::Status]);
}

#[test]
fn status_json_prints_exactly_the_documented_object() {
    let daemon = FakeDaemon::answering(ControlReply::Status(Box::new(status())).into());
    let output = daemon.run(&["status", "--json"]);
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    assert_eq!(
        json_stdout(&output),
        json!({
            "version": "9.8.7",
            "commit": "0123456789ab",
            "connection_id": CONNECTION,
            "connection": "connected",
            "terminal_link": "up",
            "terminal": {"protocol": 1, "model": "Acme T1", "firmware": "2.4.1"},
            "serial_port": {
                "open": true,
                "reopens": 3,
                "last_error": "/dev/serial/by-id/usb-T lost: Input/output error (os error 5)",
                "last_error_at": "2026-11-21T13:02:11Z"
            },
            "abandoned": [],
            "terminal_last_answered": "2026-11-21T13:17:05Z",
            "api_last_answered": null,
            "storage": {
                "directory": "/var/lib/pos-agent",
                "writable": true,
                "last_error": "No space left on device (os error 28)",
                "last_error_at": "2026-11-21T12:40:00Z",
                "free_bytes": 12582912,
                "free_space_low": false
            },
            "pending": [
                {"payment_request_id": PAYMENT, "merchant_unique_code": "order-1001",
                 "amount_minor": 1250, "since": "2026-11-21T13:16:40Z",
                 "cancel_requested": false, "cancel_reason": null},
                {"payment_request_id": OTHER_PAYMENT, "merchant_unique_code": null,
                 "amount_minor": null, "since": "2026-11-21T13:17:02Z",
                 "cancel_requested": true, "cancel_reason": "terminal"}
            ]
        })
    );
}

#[test]
fn a_status_from_a_daemon_too_old_to_name_its_commit_reads_as_unknown() {
    let mut report = serde_json::to_value(status()).unwrap();
    report.as_object_mut().unwrap().remove("commit");
    let report: StatusReport = serde_json::from_value(report).unwrap();
    assert_eq!(report.commit, "unknown");
    let daemon = FakeDaemon::answering(ControlReply::Status(Box::new(report)).into());
    let text = stdout(&daemon.run(&["status"]));
    assert_eq!(
        text.lines().next(),
        Some("version        9.8.7 (commit unknown)")
    );
}

#[test]
fn pending_json_prints_the_arrays_and_pending_says_when_there_is_none() {
    let report = PendingReport {
        pending: pending(),
        abandoned: vec![abandoned()],
    };
    let daemon = FakeDaemon::answering(ControlReply::Pending(report.clone()).into());
    let output = daemon.run(&["pending", "--json"]);
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    let value = json_stdout(&output);
    assert_eq!(value, serde_json::to_value(&report).unwrap());
    assert_eq!(value["pending"], serde_json::to_value(pending()).unwrap());
    assert_eq!(daemon.received(), vec![ControlRequest::Pending]);
    // The text shows the abandoned sales apart from the pending payments.
    let text = stdout(&daemon.run(&["pending"]));
    let (payments, abandoned) = text.split_once("abandoned sales being settled").unwrap();
    assert!(payments.contains(PAYMENT), "{text}");
    assert!(!payments.contains(ABANDONED_CODE), "{text}");
    assert!(abandoned.contains(ABANDONED_CODE), "{text}");
    assert!(abandoned.contains("looking it up"), "{text}");

    let empty = FakeDaemon::answering(ControlReply::Pending(PendingReport::default()).into());
    let output = empty.run(&["pending"]);
    assert_eq!(output.status.code(), Some(0));
    assert_eq!(stdout(&output), "no pending payments\n");
    let output = empty.run(&["pending", "--json"]);
    assert_eq!(
        json_stdout(&output),
        json!({"pending": [], "abandoned": []})
    );
}

const ABANDONED_CODE: &str = "5b0e3f8e-6f43-4c1e-9d0a-3f3c2a1b4d5e";

fn abandoned() -> AbandonedSaleView {
    AbandonedSaleView {
        merchant_unique_code: ABANDONED_CODE.into(),
        amount_minor: Some(990),
        since: "2026-11-21T13:10:00Z".into(),
        abandoned_at: "2026-11-21T13:10:20Z".into(),
        payment_request_id: None,
    }
}

#[test]
fn cancel_sends_the_payment_id_and_prints_what_was_cancelled() {
    let daemon = FakeDaemon::answering(
        ControlReply::Cancel(CancelReport {
            cancelled: vec![PAYMENT.into()],
            failed: vec![],
        })
        .into(),
    );
    let output = daemon.run(&["cancel", &PAYMENT.to_uppercase()]);
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    assert_eq!(stdout(&output), format!("cancelled {PAYMENT}\n"));
    assert_eq!(
        daemon.received(),
        vec![ControlRequest::Cancel(CancelTarget::One(
            PAYMENT.parse().unwrap()
        ))]
    );
    let output = daemon.run(&["cancel", "--all", "--json"]);
    assert_eq!(output.status.code(), Some(0));
    assert_eq!(
        json_stdout(&output),
        json!({"cancelled": [PAYMENT], "failed": []})
    );
    assert_eq!(
        daemon.received()[1],
        ControlRequest::Cancel(CancelTarget::All)
    );
}

#[test]
fn cancel_needs_exactly_one_of_an_id_and_all_and_a_guid() {
    let daemon = FakeDaemon::start(|_| None);
    for args in [
        &["cancel"][..],
        &["cancel", PAYMENT, "--all"],
        &["cancel", "12345"],
        &["cancel", PAYMENT, OTHER_PAYMENT],
    ] {
        let output = daemon.run(args);
        assert_eq!(
            output.status.code(),
            Some(2),
            "{args:?}: {}",
            stderr(&output)
        );
    }
    assert!(daemon.received().is_empty());
}

#[test]
fn an_api_refusal_exits_1_and_prints_the_apis_message_and_client_message() {
    let daemon = FakeDaemon::answering(ControlResponse::error(ControlError::api_rejected(
        "Ödeme zaten tamamlandı",
        Some("PaymentAlreadyCompleted".into()),
        Some(7),
    )));
    let output = daemon.run(&["cancel", PAYMENT]);
    assert_eq!(output.status.code(), Some(1));
    let text = stderr(&output);
    assert!(text.contains("the payment API refused"), "{text}");
    assert!(text.contains("Ödeme zaten tamamlandı"), "{text}");
    assert!(text.contains("PaymentAlreadyCompleted"), "{text}");
    assert!(stdout(&output).is_empty());

    let output = daemon.run(&["cancel", PAYMENT, "--json"]);
    assert_eq!(output.status.code(), Some(1));
    assert_eq!(
        json_stdout(&output),
        json!({"error": {"kind": "api_rejected", "message": "Ödeme zaten tamamlandı",
                         "client_message": "PaymentAlreadyCompleted", "error_code": 7}})
    );
}

#[test]
fn each_error_kind_maps_to_its_documented_exit_code() {
    let cases = [
        (ControlErrorKind::ApiUnavailable, 75),
        (ControlErrorKind::NotConnected, 75),
        (ControlErrorKind::Busy, 75),
        (ControlErrorKind::NotFound, 1),
        (ControlErrorKind::Internal, 1),
        (ControlErrorKind::InvalidRequest, 2),
    ];
    for (kind, code) in cases {
        let daemon = FakeDaemon::answering(error(kind, "the daemon's explanation"));
        let output = daemon.run(&["reconnect"]);
        assert_eq!(output.status.code(), Some(code), "{kind:?}");
        assert!(
            stderr(&output).contains("the daemon's explanation"),
            "{kind:?}: {}",
            stderr(&output)
        );
    }
}

#[test]
fn cancel_all_with_failures_exits_1_if_any_was_refused_else_75() {
    let failure = |kind| CancelFailure {
        payment_request_id: OTHER_PAYMENT.into(),
        error: ControlError::new(kind, "no luck"),
    };
    let report = |failed| {
        ControlResponse::ok(ControlReply::Cancel(CancelReport {
            cancelled: vec![PAYMENT.into()],
            failed,
        }))
    };
    let daemon = FakeDaemon::answering(report(vec![failure(ControlErrorKind::ApiUnavailable)]));
    let output = daemon.run(&["cancel", "--all"]);
    assert_eq!(output.status.code(), Some(75));
    assert_eq!(stdout(&output), format!("cancelled {PAYMENT}\n"));
    assert!(stderr(&output).contains(&format!("could not cancel {OTHER_PAYMENT}")));

    let daemon = FakeDaemon::answering(report(vec![
        failure(ControlErrorKind::ApiUnavailable),
        failure(ControlErrorKind::ApiRejected),
    ]));
    let output = daemon.run(&["cancel", "--all", "--json"]);
    assert_eq!(output.status.code(), Some(1));
    assert_eq!(json_stdout(&output)["failed"].as_array().unwrap().len(), 2);
}

#[test]
fn disconnect_and_reconnect_print_the_connection_and_its_state() {
    let daemon = FakeDaemon::start(|request| {
        Some(match request {
            ControlRequest::Disconnect => ControlReply::Disconnect(DisconnectReport {
                connection_id: Some(CONNECTION.into()),
                connection: ConnectionStatus::Disconnected,
                cancelled: vec![PAYMENT.into()],
                failed: vec![],
            })
            .into(),
            _ => ControlReply::Reconnect(ConnectionReport {
                connection_id: Some(CONNECTION.into()),
                connection: ConnectionStatus::Connected,
            })
            .into(),
        })
    });
    let output = daemon.run(&["disconnect"]);
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    assert_eq!(
        stdout(&output),
        format!("cancelled {PAYMENT}\nconnection {CONNECTION} disconnected\n")
    );
    let output = daemon.run(&["reconnect", "--json"]);
    assert_eq!(output.status.code(), Some(0));
    assert_eq!(
        json_stdout(&output),
        json!({"connection_id": CONNECTION, "connection": "connected"})
    );
    assert_eq!(
        daemon.received(),
        vec![ControlRequest::Disconnect, ControlRequest::Reconnect]
    );
}

#[test]
fn apm_unlink_sends_the_phone_and_exactly_one_account_reference() {
    let daemon = FakeDaemon::answering(ControlReply::ApmUnlink(UnlinkReport::default()).into());
    let output = daemon.run(&[
        "apm-unlink",
        "--phone",
        "905342979639",
        "--apm-key",
        "Masterpass_IFrame",
    ]);
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    assert_eq!(stdout(&output), "APM account unlinked\n");
    let output = daemon.run(&[
        "apm-unlink",
        "--phone",
        "905342979639",
        "--apm-connection-id",
        "42",
    ]);
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    assert_eq!(
        daemon.received(),
        vec![
            ControlRequest::ApmUnlink {
                phone: "905342979639".into(),
                account: control::ApmAccount::Key("Masterpass_IFrame".into()),
            },
            ControlRequest::ApmUnlink {
                phone: "905342979639".into(),
                account: control::ApmAccount::ConnectionId(42),
            },
        ]
    );
    for args in [
        &["apm-unlink", "--phone", "905342979639"][..],
        &[
            "apm-unlink",
            "--phone",
            "9",
            "--apm-key",
            "K",
            "--apm-connection-id",
            "1",
        ],
        &["apm-unlink", "--apm-key", "K"],
        &["apm-unlink", "--phone", "", "--apm-key", "K"],
        &["apm-unlink", "--phone", "9", "--apm-connection-id", "0"],
    ] {
        let output = daemon.run(args);
        assert_eq!(output.status.code(), Some(2), "{args:?}");
    }
    assert_eq!(daemon.received().len(), 2);
}

#[test]
fn masterpass_unlink_checks_the_guid_and_prints_the_retrieval_reference_number() {
    let daemon = FakeDaemon::answering(
        ControlReply::MasterpassUnlink(UnlinkReport {
            message: None,
            retrieval_reference_number: Some("123456789012".into()),
        })
        .into(),
    );
    let session = "2193433e-f36b-1410-825e-001264113a90";
    let output = daemon.run(&["masterpass-unlink", "--session-id", session]);
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    assert_eq!(
        stdout(&output),
        "Masterpass account unlinked\nretrieval reference number: 123456789012\n"
    );
    let output = daemon.run(&["masterpass-unlink", "--session-id", session, "--json"]);
    assert_eq!(
        json_stdout(&output),
        json!({"message": null, "retrieval_reference_number": "123456789012"})
    );
    let output = daemon.run(&["masterpass-unlink", "--session-id", "not-a-guid"]);
    assert_eq!(output.status.code(), Some(2));
    assert!(
        stderr(&output).contains("not a GUID"),
        "{}",
        stderr(&output)
    );
    assert_eq!(
        daemon.received(),
        vec![
            ControlRequest::MasterpassUnlink {
                session_id: session.parse().unwrap()
            };
            2
        ]
    );
}

#[test]
fn checkout_deactivate_sends_the_page_id() {
    let daemon = FakeDaemon::answering(
        ControlReply::CheckoutDeactivate(UnlinkReport {
            message: Some("Pasif edildi".into()),
            retrieval_reference_number: None,
        })
        .into(),
    );
    let output = daemon.run(&["checkout-deactivate", "--id", "205334385"]);
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    assert_eq!(
        stdout(&output),
        "checkout page deactivated\nmessage: Pasif edildi\n"
    );
    for bad in ["0", "abc", "-5"] {
        let output = daemon.run(&["checkout-deactivate", "--id", bad]);
        assert_eq!(output.status.code(), Some(2), "{bad}");
    }
    assert_eq!(
        daemon.received(),
        vec![ControlRequest::CheckoutDeactivate { id: 205334385 }]
    );
}

#[test]
fn without_a_daemon_commands_exit_69_naming_the_socket() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("nobody-home.sock");
    let output = support::pos_agent()
        .args(["status", "--socket"])
        .arg(&socket)
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(69));
    let text = stderr(&output);
    assert!(text.contains(&socket.display().to_string()), "{text}");
    assert!(text.contains("--socket"), "{text}");

    // A socket file left behind by a daemon that is gone.
    drop(std::os::unix::net::UnixListener::bind(&socket).unwrap());
    let output = support::pos_agent()
        .args(["pending", "--json", "--socket"])
        .arg(&socket)
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(69));
    assert!(
        stderr(&output).contains("not running"),
        "{}",
        stderr(&output)
    );
    assert_eq!(json_stdout(&output)["error"]["kind"], "daemon_unreachable");
}

#[test]
fn the_socket_can_come_from_pos_agent_socket() {
    let daemon = FakeDaemon::answering(ControlReply::Pending(PendingReport::default()).into());
    let output = support::pos_agent()
        .arg("pending")
        .env("POS_AGENT_SOCKET", &daemon.socket)
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    assert_eq!(daemon.received(), vec![ControlRequest::Pending]);
}

#[test]
fn an_unanswered_request_times_out_with_75() {
    let daemon = FakeDaemon::start(|_| None);
    let output = daemon.run(&["cancel", PAYMENT, "--timeout", "300ms"]);
    assert_eq!(output.status.code(), Some(75));
    let text = stderr(&output);
    assert!(
        text.contains("no answer") && text.contains("300ms"),
        "{text}"
    );
    assert_eq!(daemon.received().len(), 1);
}

/// Something on the socket that is not a pos-agent: accepts one connection, reads the request
/// line, answers `reply` (possibly nothing) and closes.
fn impostor(reply: &'static [u8]) -> (tempfile::TempDir, PathBuf, std::thread::JoinHandle<()>) {
    use std::io::{BufRead, Write};
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("impostor.sock");
    let listener = std::os::unix::net::UnixListener::bind(&socket).unwrap();
    let thread = std::thread::spawn(move || {
        let (mut stream, _) = listener.accept().unwrap();
        let mut line = String::new();
        std::io::BufReader::new(&stream)
            .read_line(&mut line)
            .unwrap();
        stream.write_all(reply).unwrap();
    });
    (dir, socket, thread)
}

#[test]
fn a_connection_closed_without_an_answer_exits_69() {
    let (_dir, socket, thread) = impostor(b"");
    let output = support::pos_agent()
        .args(["status", "--socket"])
        .arg(&socket)
        .output()
        .unwrap();
    thread.join().unwrap();
    assert_eq!(output.status.code(), Some(69));
    assert!(
        stderr(&output).contains("closed the connection without answering"),
        "{}",
        stderr(&output)
    );
}

#[test]
fn an_answer_that_is_not_the_protocol_exits_69() {
    let (_dir, socket, thread) = impostor(b"HTTP/1.1 400 Bad Request\n");
    let output = support::pos_agent()
        .args(["pending", "--json", "--socket"])
        .arg(&socket)
        .output()
        .unwrap();
    thread.join().unwrap();
    assert_eq!(output.status.code(), Some(69));
    assert!(
        stderr(&output).contains("cannot read"),
        "{}",
        stderr(&output)
    );
    assert_eq!(json_stdout(&output)["error"]["kind"], "bad_reply");
}

#[test]
fn an_answer_to_another_command_is_not_taken_for_this_one() {
    let (_dir, socket, thread) =
        impostor(b"{\"ok\":true,\"command\":\"pending\",\"result\":{\"pending\":[]}}\n");
    let output = support::pos_agent()
        .args(["cancel", "--all", "--socket"])
        .arg(&socket)
        .output()
        .unwrap();
    thread.join().unwrap();
    assert_eq!(output.status.code(), Some(69));
    assert!(
        stderr(&output).contains("asked `cancel`"),
        "{}",
        stderr(&output)
    );
}

#[test]
fn metrics_prints_the_exposition_as_it_came_and_json_wraps_it() {
    let exposition =
        "# TYPE pos_agent_sales_started counter\npos_agent_sales_started_total 3\n# EOF\n";
    let daemon = FakeDaemon::answering(ControlReply::Metrics(exposition.into()).into());
    let output = daemon.run(&["metrics"]);
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    assert_eq!(stdout(&output), exposition);
    let output = daemon.run(&["metrics", "--json"]);
    assert_eq!(json_stdout(&output), json!(exposition));
    assert_eq!(
        daemon.received(),
        vec![ControlRequest::Metrics, ControlRequest::Metrics]
    );
}

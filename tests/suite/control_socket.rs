//! The control socket as a misbehaving or unlucky client meets it: garbage, half lines,
//! over-long lines, silent and too many clients, a core that does not answer; and binding the
//! socket file safely. Real Unix sockets in a temporary directory; the daemon core is a task
//! that answers every call with a canned response.

use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use pos_agent::control::{
    self, ConnectionStatus, ControlCall, ControlErrorKind, ControlReply, ControlRequest,
    ControlResponse, SerialPortView, ServeLimits, StatusReport, StorageView, TerminalLinkStatus,
};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;
use tokio::sync::{mpsc, oneshot};

use crate::support::WAIT;

fn status_report() -> StatusReport {
    StatusReport {
        version: "test".into(),
        commit: "0123456789ab".into(),
        connection_id: Some("70b2190b-2f1e-4a8e-9d59-0d1f1c7b1a11".into()),
        connection: ConnectionStatus::Connected,
        rejection: None,
        connection_problem: None,
        terminal_link: TerminalLinkStatus::Up,
        terminal: None,
        serial_port: SerialPortView::default(),
        pending: vec![],
        abandoned: vec![],
        terminal_last_answered: None,
        api_last_answered: None,
        storage: StorageView::default(),
        api_retry_after: None,
    }
}

/// A served control socket with a core that answers `status` and records every request.
struct Served {
    dir: tempfile::TempDir,
    socket: PathBuf,
    received: Arc<Mutex<Vec<ControlRequest>>>,
    stop: Option<oneshot::Sender<()>>,
    server: tokio::task::JoinHandle<()>,
}

impl Served {
    fn start(limits: ServeLimits) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("control.sock");
        let listener = control::bind(&socket).unwrap();
        Self::serve_on(dir, socket, listener, limits)
    }

    fn serve_on(
        dir: tempfile::TempDir,
        socket: PathBuf,
        listener: tokio::net::UnixListener,
        limits: ServeLimits,
    ) -> Self {
        let (calls_tx, mut calls) = mpsc::channel::<ControlCall>(8);
        let received = Arc::new(Mutex::new(Vec::new()));
        let log = Arc::clone(&received);
        tokio::spawn(async move {
            while let Some(call) = calls.recv().await {
                log.lock().unwrap().push(call.request.clone());
                let _ = call
                    .reply
                    .send(ControlResponse::ok(ControlReply::Status(Box::new(
                        status_report(),
                    ))));
            }
        });
        let (stop, stopped) = oneshot::channel::<()>();
        let server = tokio::spawn(control::serve_with_limits(
            listener,
            calls_tx,
            async {
                let _ = stopped.await;
            },
            limits,
        ));
        Self {
            dir,
            socket,
            received,
            stop: Some(stop),
            server,
        }
    }

    /// A normal `status` request must still be answered.
    async fn assert_still_serves(&self) {
        let response = tokio::time::timeout(
            WAIT,
            control::call(&self.socket, &ControlRequest::Status, WAIT),
        )
        .await
        .expect("the server stopped answering")
        .expect("a normal request failed");
        assert_eq!(
            response,
            ControlResponse::ok(ControlReply::Status(Box::new(status_report())))
        );
    }

    /// Stops the server; the directory (with the socket file) lives as long as the result.
    async fn stop(mut self) -> tempfile::TempDir {
        let _ = self.stop.take().unwrap().send(());
        tokio::time::timeout(WAIT, &mut self.server)
            .await
            .expect("serve did not return after shutdown")
            .expect("serve panicked");
        self.dir
    }
}

/// Sends `bytes` (then half-closes when `close_write`), and returns everything the server sends
/// back until it closes. A reset after the answer counts as the end.
async fn exchange(socket: &Path, bytes: &[u8], close_write: bool) -> Vec<u8> {
    let mut stream = UnixStream::connect(socket).await.unwrap();
    stream.write_all(bytes).await.unwrap();
    if close_write {
        stream.shutdown().await.unwrap();
    }
    read_all(&mut stream).await
}

async fn read_all(stream: &mut UnixStream) -> Vec<u8> {
    let mut received = Vec::new();
    let mut buffer = [0u8; 4096];
    loop {
        match tokio::time::timeout(WAIT, stream.read(&mut buffer))
            .await
            .expect("the server neither answered nor closed")
        {
            Ok(0) | Err(_) => return received,
            Ok(n) => received.extend_from_slice(&buffer[..n]),
        }
    }
}

/// The one JSON error line the server sent; its kind and message.
fn error_of(answer: &[u8]) -> (String, String) {
    let text = String::from_utf8(answer.to_vec()).unwrap();
    assert!(text.ends_with('\n'), "not one whole line: {text:?}");
    assert_eq!(text.matches('\n').count(), 1, "not one line: {text:?}");
    let value: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(value["ok"], false, "{text}");
    (
        value["error"]["kind"].as_str().unwrap().to_owned(),
        value["error"]["message"].as_str().unwrap().to_owned(),
    )
}

#[tokio::test]
async fn random_bytes_get_an_invalid_request_answer_and_the_server_keeps_serving() {
    let served = Served::start(ServeLimits::default());
    // A fixed-seed generator: the same "random" bytes every run.
    let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
    for _ in 0..20 {
        let garbage: Vec<u8> = (0..200)
            .map(|_| {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                (seed >> 24) as u8
            })
            .filter(|b| *b != b'\n')
            .chain([b'\n'])
            .collect();
        let (kind, _) = error_of(&exchange(&served.socket, &garbage, false).await);
        assert_eq!(kind, "invalid_request");
    }
    served.assert_still_serves().await;
    assert_eq!(
        served.received.lock().unwrap().len(),
        1,
        "garbage reached the core"
    );
    served.stop().await;
}

#[tokio::test]
async fn invalid_utf8_is_refused_as_not_text() {
    let served = Served::start(ServeLimits::default());
    let (kind, message) =
        error_of(&exchange(&served.socket, b"{\"command\":\"st\xffatus\"}\n", false).await);
    assert_eq!(kind, "invalid_request");
    assert!(message.contains("UTF-8"), "{message}");
    served.assert_still_serves().await;
    served.stop().await;
}

#[tokio::test]
async fn non_json_and_unknown_commands_are_refused_with_a_helpful_message() {
    let served = Served::start(ServeLimits::default());
    let (kind, message) = error_of(&exchange(&served.socket, b"status\n", false).await);
    assert_eq!(kind, "invalid_request");
    assert!(message.contains("{\"command\":\"status\"}"), "{message}");
    let (kind, message) =
        error_of(&exchange(&served.socket, b"{\"command\":\"format-disk\"}\n", false).await);
    assert_eq!(kind, "invalid_request");
    assert!(
        message.contains("format-disk") && message.contains("pending"),
        "{message}"
    );
    let (kind, _) = error_of(&exchange(&served.socket, b"\n", false).await);
    assert_eq!(kind, "invalid_request");
    assert!(served.received.lock().unwrap().is_empty());
    served.stop().await;
}

#[tokio::test]
async fn a_half_line_then_close_gets_an_error_and_reaches_nobody() {
    let served = Served::start(ServeLimits::default());
    let (kind, _) = error_of(&exchange(&served.socket, b"{\"command\":\"can", true).await);
    assert_eq!(kind, "invalid_request");
    assert!(served.received.lock().unwrap().is_empty());
    served.assert_still_serves().await;
    served.stop().await;
}

#[tokio::test]
async fn a_connection_closed_without_a_byte_is_harmless() {
    let served = Served::start(ServeLimits::default());
    let answer = exchange(&served.socket, b"", true).await;
    let (kind, message) = error_of(&answer);
    assert_eq!(kind, "invalid_request");
    assert!(message.contains("before a request"), "{message}");
    drop(UnixStream::connect(&served.socket).await.unwrap());
    served.assert_still_serves().await;
    served.stop().await;
}

#[tokio::test]
async fn a_complete_object_ended_by_half_close_instead_of_newline_is_served() {
    let served = Served::start(ServeLimits::default());
    let answer = exchange(&served.socket, b"{\"command\":\"status\"}", true).await;
    let response: ControlResponse = serde_json::from_slice(&answer).unwrap();
    assert_eq!(
        response,
        ControlResponse::ok(ControlReply::Status(Box::new(status_report())))
    );
    assert_eq!(
        *served.received.lock().unwrap(),
        vec![ControlRequest::Status]
    );
    served.stop().await;
}

#[tokio::test]
async fn a_crlf_line_is_read_like_a_newline() {
    let served = Served::start(ServeLimits::default());
    let answer = exchange(&served.socket, b"{\"command\":\"pending\"}\r\n", false).await;
    let value: Value = serde_json::from_slice(&answer).unwrap();
    assert_eq!(value["ok"], true);
    assert_eq!(
        *served.received.lock().unwrap(),
        vec![ControlRequest::Pending]
    );
    served.stop().await;
}

#[tokio::test]
async fn a_one_mebibyte_line_is_cut_off_at_the_limit_not_read_whole() {
    // A long request timeout: the answer must come from the size limit, not from the clock.
    let served = Served::start(ServeLimits {
        request_timeout: Duration::from_secs(60),
        ..ServeLimits::default()
    });
    let mut stream = UnixStream::connect(&served.socket).await.unwrap();
    let (mut read_half, mut write_half) = stream.split();
    let huge = vec![b'x'; 1024 * 1024];
    // The server stops reading at the limit, so this write ends in a broken pipe.
    let writing = async {
        let _ = write_half.write_all(&huge).await;
    };
    let reading = async {
        let mut answer = Vec::new();
        let _ = tokio::time::timeout(WAIT, read_half.read_to_end(&mut answer))
            .await
            .expect("no answer to an over-long line");
        answer
    };
    let ((), answer) = tokio::join!(writing, reading);
    let (kind, message) = error_of(&answer);
    assert_eq!(kind, "invalid_request");
    assert!(message.contains("longer than 4096 bytes"), "{message}");
    served.assert_still_serves().await;
    served.stop().await;
}

#[tokio::test]
async fn a_silent_client_does_not_delay_others() {
    // The silent client would hold the server for a minute if connections were served in turn.
    let served = Served::start(ServeLimits {
        request_timeout: Duration::from_secs(60),
        ..ServeLimits::default()
    });
    let silent = UnixStream::connect(&served.socket).await.unwrap();
    served.assert_still_serves().await;
    served.assert_still_serves().await;
    drop(silent);
    served.stop().await;
}

#[tokio::test]
async fn a_silent_client_is_answered_and_closed_after_the_request_timeout() {
    let served = Served::start(ServeLimits {
        request_timeout: Duration::from_millis(300),
        ..ServeLimits::default()
    });
    let mut silent = UnixStream::connect(&served.socket).await.unwrap();
    let (kind, message) = error_of(&read_all(&mut silent).await);
    assert_eq!(kind, "invalid_request");
    assert!(message.contains("no complete request within"), "{message}");
    served.assert_still_serves().await;
    served.stop().await;
}

#[tokio::test]
async fn connections_beyond_the_limit_are_told_busy_and_served_again_once_slots_free() {
    let served = Served::start(ServeLimits {
        max_connections: 3,
        request_timeout: Duration::from_secs(60),
        ..ServeLimits::default()
    });
    let mut holders = Vec::new();
    for _ in 0..3 {
        holders.push(UnixStream::connect(&served.socket).await.unwrap());
    }
    let (kind, message) = error_of(&exchange(&served.socket, b"", false).await);
    assert_eq!(kind, "busy");
    assert!(message.contains("too many"), "{message}");

    // Each holder now sends a request and gets its answer, which frees its slot.
    for holder in &mut holders {
        holder
            .write_all(b"{\"command\":\"status\"}\n")
            .await
            .unwrap();
        let answer: Value = serde_json::from_slice(&read_all(holder).await).unwrap();
        assert_eq!(answer["ok"], true);
    }
    // A slot is released just after the answer is written; wait for it, with a bound.
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let response = control::call(&served.socket, &ControlRequest::Status, WAIT)
            .await
            .unwrap();
        match response.outcome {
            Ok(_) => break,
            Err(e) if e.kind == ControlErrorKind::Busy => {
                assert!(tokio::time::Instant::now() < deadline, "slots never freed");
                tokio::task::yield_now().await;
            }
            Err(e) => panic!("unexpected error {e}"),
        }
    }
    served.stop().await;
}

#[tokio::test]
async fn a_burst_of_clients_each_gets_an_answer() {
    let served = Served::start(ServeLimits::default());
    let mut clients = tokio::task::JoinSet::new();
    for _ in 0..64 {
        let socket = served.socket.clone();
        clients.spawn(async move {
            control::call(&socket, &ControlRequest::Status, WAIT)
                .await
                .unwrap()
        });
    }
    let mut answered = 0;
    while let Some(response) = clients.join_next().await {
        match response.unwrap().outcome {
            Ok(_) => answered += 1,
            Err(e) => assert_eq!(e.kind, ControlErrorKind::Busy, "{e}"),
        }
    }
    assert!(answered >= 1);
    assert_eq!(served.received.lock().unwrap().len(), answered);
    served.assert_still_serves().await;
    served.stop().await;
}

#[tokio::test]
async fn a_call_the_core_drops_is_answered_internal() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("control.sock");
    let listener = control::bind(&socket).unwrap();
    let (calls_tx, mut calls) = mpsc::channel::<ControlCall>(1);
    tokio::spawn(async move {
        while let Some(call) = calls.recv().await {
            drop(call.reply);
        }
    });
    let server = tokio::spawn(control::serve(listener, calls_tx, std::future::pending()));
    let response = control::call(&socket, &ControlRequest::Reconnect, WAIT)
        .await
        .unwrap();
    let error = response.outcome.unwrap_err();
    assert_eq!(error.kind, ControlErrorKind::Internal);
    assert!(error.message.contains("reconnect"), "{}", error.message);
    server.abort();
}

#[tokio::test]
async fn a_core_that_stopped_taking_calls_makes_answers_busy() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("control.sock");
    let listener = control::bind(&socket).unwrap();
    let (calls_tx, calls) = mpsc::channel::<ControlCall>(1);
    drop(calls);
    let server = tokio::spawn(control::serve(listener, calls_tx, std::future::pending()));
    let response = control::call(&socket, &ControlRequest::Status, WAIT)
        .await
        .unwrap();
    assert_eq!(response.outcome.unwrap_err().kind, ControlErrorKind::Busy);
    server.abort();
}

#[tokio::test]
async fn after_shutdown_serve_returns_and_the_socket_answers_no_more() {
    let served = Served::start(ServeLimits::default());
    served.assert_still_serves().await;
    let socket = served.socket.clone();
    let _dir = served.stop().await;
    let probe = control::call(&socket, &ControlRequest::Status, WAIT).await;
    assert!(
        matches!(probe, Err(control::ClientError::Unreachable { .. })),
        "{probe:?}"
    );
}

#[tokio::test]
async fn the_socket_file_has_mode_0660_in_a_directory_created_for_it() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("run/pos-agent/control.sock");
    let _listener = control::bind(&socket).unwrap();
    let metadata = std::fs::symlink_metadata(&socket).unwrap();
    assert!(metadata.file_type().is_socket());
    assert_eq!(metadata.permissions().mode() & 0o777, 0o660);
    // Nothing but the socket is left in the directory.
    let names: Vec<_> = std::fs::read_dir(socket.parent().unwrap())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names, vec![std::ffi::OsString::from("control.sock")]);
}

#[tokio::test]
async fn a_stale_socket_file_is_replaced() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("control.sock");
    drop(std::os::unix::net::UnixListener::bind(&socket).unwrap());
    assert!(std::fs::symlink_metadata(&socket).is_ok(), "left behind");
    let listener = control::bind(&socket).unwrap();
    let served = Served::serve_on(dir, socket, listener, ServeLimits::default());
    served.assert_still_serves().await;
    served.stop().await;
}

#[tokio::test]
async fn a_live_socket_is_not_stolen() {
    let served = Served::start(ServeLimits::default());
    let error = control::bind(&served.socket).unwrap_err();
    assert_eq!(error.kind(), std::io::ErrorKind::AddrInUse);
    assert!(error.to_string().contains("control.sock"), "{error}");
    served.assert_still_serves().await;
    served.stop().await;
}

#[tokio::test]
async fn a_file_that_is_not_a_socket_is_left_alone() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("control.sock");
    std::fs::write(&path, "precious").unwrap();
    let error = control::bind(&path).unwrap_err();
    assert!(error.to_string().contains("not a socket"), "{error}");
    assert_eq!(std::fs::read_to_string(&path).unwrap(), "precious");
}

#[tokio::test]
async fn an_inherited_listener_is_served() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("activated.sock");
    let inherited = std::os::unix::net::UnixListener::bind(&socket).unwrap();
    let listener = control::adopt(inherited).unwrap();
    let served = Served::serve_on(dir, socket, listener, ServeLimits::default());
    served.assert_still_serves().await;
    served.stop().await;
}

//! The daemon's end of the control socket: binds it safely and turns each connection into one
//! [`ControlCall`] for the daemon core, whatever a client sends (docs/operations.md (Operator commands)).
//!
//! A client gets at most `max_request_bytes` and `request_timeout` to send its request, so
//! garbage, half lines, over-long lines and silent clients cost the daemon one bounded task each
//! and never reach the core. At most `max_connections` are served at once; the rest are told
//! `busy` at once.

use std::future::Future;
use std::io;
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::{mpsc, oneshot, OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinSet;

use super::protocol::{ControlError, ControlErrorKind, ControlRequest, ControlResponse};
use crate::audit::Operator;

/// Mode of the socket file: the daemon's user and group may connect, nobody else.
const SOCKET_MODE: u32 = 0o660;

/// One operator request handed to the daemon core. The core answers through `reply`; dropping
/// `reply` unanswered makes the client see an `internal` error.
#[derive(Debug)]
pub struct ControlCall {
    pub request: ControlRequest,
    pub reply: oneshot::Sender<ControlResponse>,
    /// Resolves (with an error: nothing is ever sent on it) once the connection is done with:
    /// the answer written and its audit record made, or the client gone. A daemon that exits
    /// after answering waits on it, so the answer is not lost with the process.
    pub answered: oneshot::Receiver<()>,
}

/// The bounds that keep misbehaving clients from costing the daemon more than a little.
#[derive(Debug, Clone, Copy)]
pub struct ServeLimits {
    /// Longest request line, newline not counted.
    pub max_request_bytes: usize,
    /// Time a client has, from connecting, to send its whole request.
    pub request_timeout: Duration,
    /// Time the core has to answer; a guard against a lost request holding a connection slot.
    pub reply_timeout: Duration,
    /// Time a client has to take the answer.
    pub write_timeout: Duration,
    /// Connections served at once.
    pub max_connections: usize,
}

impl Default for ServeLimits {
    fn default() -> Self {
        Self {
            max_request_bytes: 4096,
            request_timeout: Duration::from_secs(5),
            reply_timeout: Duration::from_secs(300),
            write_timeout: Duration::from_secs(5),
            max_connections: 16,
        }
    }
}

/// Creates the control socket at `path` (docs/operations.md (The control socket), docs/configuration.md `[control] socket`).
///
/// Creates the parent directory if missing. A socket file left by a daemon that is gone is
/// replaced; if something answers on it, or `path` is not a socket, this fails and touches
/// nothing. The socket is created under a temporary name, given mode 0660, then renamed into
/// place, so it is never reachable with a looser mode. Must be called inside a tokio runtime.
pub fn bind(path: &Path) -> io::Result<UnixListener> {
    let parent = match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent,
        _ => Path::new("."),
    };
    let file_name = path.file_name().ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("control socket path {} has no file name", path.display()),
        )
    })?;
    std::fs::create_dir_all(parent).map_err(|e| {
        io::Error::new(
            e.kind(),
            format!("cannot create the directory {}: {e}", parent.display()),
        )
    })?;
    refuse_unless_stale(path)?;

    let mut temporary_name = std::ffi::OsString::from(".");
    temporary_name.push(file_name);
    temporary_name.push(format!(".{}.new", std::process::id()));
    let temporary = parent.join(temporary_name);
    let _ = std::fs::remove_file(&temporary);
    let listener = UnixListener::bind(&temporary).map_err(|e| {
        io::Error::new(
            e.kind(),
            format!(
                "cannot create the control socket {}: {e}",
                temporary.display()
            ),
        )
    })?;
    let placed = std::fs::set_permissions(&temporary, std::fs::Permissions::from_mode(SOCKET_MODE))
        .and_then(|()| std::fs::rename(&temporary, path));
    if let Err(e) = placed {
        let _ = std::fs::remove_file(&temporary);
        return Err(io::Error::new(
            e.kind(),
            format!("cannot put the control socket at {}: {e}", path.display()),
        ));
    }
    Ok(listener)
}

/// Fails if `path` exists and is not a dead socket; removing a dead one is left to the rename.
fn refuse_unless_stale(path: &Path) -> io::Result<()> {
    let metadata = match std::fs::symlink_metadata(path) {
        Ok(metadata) => metadata,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    if !metadata.file_type().is_socket() {
        return Err(io::Error::new(
            io::ErrorKind::AlreadyExists,
            format!(
                "{} exists and is not a socket; not replacing it",
                path.display()
            ),
        ));
    }
    match std::os::unix::net::UnixStream::connect(path) {
        Ok(_) => Err(io::Error::new(
            io::ErrorKind::AddrInUse,
            format!(
                "another process (a running pos-agent?) is listening on {}",
                path.display()
            ),
        )),
        Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => Ok(()),
        Err(e) => Err(io::Error::new(
            e.kind(),
            format!(
                "cannot tell whether {} is still in use: {e}",
                path.display()
            ),
        )),
    }
}

/// Takes over a listening socket someone else created (systemd socket activation).
pub fn adopt(listener: std::os::unix::net::UnixListener) -> io::Result<UnixListener> {
    listener.set_nonblocking(true)?;
    UnixListener::from_std(listener)
}

/// Serves the control socket with the default [`ServeLimits`] until `shutdown` completes.
pub async fn serve(
    listener: UnixListener,
    calls: mpsc::Sender<ControlCall>,
    shutdown: impl Future<Output = ()>,
) {
    serve_with_limits(listener, calls, shutdown, ServeLimits::default()).await
}

/// Serves the control socket until `shutdown` completes: each connection carries one request,
/// handed to the core through `calls`, and gets one response line, then is closed.
///
/// When `shutdown` completes no new connection is accepted and the connections still open are
/// closed without an answer. Never fails: a failing `accept` is logged and retried.
pub async fn serve_with_limits(
    listener: UnixListener,
    calls: mpsc::Sender<ControlCall>,
    shutdown: impl Future<Output = ()>,
    limits: ServeLimits,
) {
    let slots = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    let mut connections = JoinSet::new();
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            biased;
            () = &mut shutdown => break,
            Some(finished) = connections.join_next(), if !connections.is_empty() => {
                if let Err(e) = finished {
                    tracing::error!("control connection task failed: {e}");
                }
            }
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => match Arc::clone(&slots).try_acquire_owned() {
                    Ok(slot) => {
                        connections.spawn(handle_connection(stream, calls.clone(), limits, slot));
                    }
                    Err(_) => {
                        tracing::warn!(
                            "control socket: {} connections open, refusing another",
                            limits.max_connections
                        );
                        let busy = ControlResponse::error(ControlError::new(
                            ControlErrorKind::Busy,
                            "too many control connections at once",
                        ));
                        // The socket buffer of a fresh connection takes one short line.
                        let _ = stream.try_write(&busy.to_line());
                    }
                },
                Err(e) => {
                    // EMFILE and the like: wait a little rather than spin on the error.
                    tracing::warn!("control socket: accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            },
        }
    }
    connections.shutdown().await;
}

async fn handle_connection(
    mut stream: UnixStream,
    calls: mpsc::Sender<ControlCall>,
    limits: ServeLimits,
    _slot: OwnedSemaphorePermit,
) {
    let operator = Operator::of_peer(&stream).await;
    // Dropped when this function returns: the core's `ControlCall::answered` then resolves.
    let (_answered, answered) = oneshot::channel::<()>();
    let (read_half, mut write_half) = stream.split();
    let read = tokio::time::timeout(
        limits.request_timeout,
        read_request(read_half, limits.max_request_bytes),
    )
    .await;
    let response = match read {
        Err(_) => invalid(format!(
            "no complete request within {}s",
            limits.request_timeout.as_secs_f32()
        )),
        Ok(Err(e)) => invalid(e),
        Ok(Ok(line)) => match ControlRequest::from_json(&line) {
            Ok(request) => {
                let response =
                    ask_core(request.clone(), answered, &calls, limits.reply_timeout).await;
                crate::audit::write_operator(&operator, &super::audit::record(&request, &response));
                response
            }
            Err(error) => {
                tracing::warn!(
                    operator_uid = ?operator.uid,
                    operator_pid = ?operator.pid,
                    "control socket: {}",
                    error.message
                );
                ControlResponse::error(error)
            }
        },
    };
    let answered = tokio::time::timeout(limits.write_timeout, async {
        write_half.write_all(&response.to_line()).await?;
        write_half.shutdown().await
    })
    .await;
    if !matches!(answered, Ok(Ok(()))) {
        tracing::debug!("control socket: the client did not take its answer");
    }
}

fn invalid(message: impl Into<String>) -> ControlResponse {
    let error = ControlError::new(ControlErrorKind::InvalidRequest, message);
    tracing::warn!("control socket: {}", error.message);
    ControlResponse::error(error)
}

/// Reads one request: bytes up to a newline, or up to the end of the client's stream (a client
/// that half-closes after a complete JSON object has sent a complete request).
async fn read_request(
    read_half: impl tokio::io::AsyncRead + Unpin,
    max_request_bytes: usize,
) -> Result<Vec<u8>, String> {
    let limit = u64::try_from(max_request_bytes).unwrap_or(u64::MAX);
    let mut reader = BufReader::new(read_half.take(limit.saturating_add(1)));
    let mut line = Vec::new();
    reader
        .read_until(b'\n', &mut line)
        .await
        .map_err(|e| format!("cannot read the request: {e}"))?;
    if line.last() == Some(&b'\n') {
        line.pop();
        if line.last() == Some(&b'\r') {
            line.pop();
        }
    } else if line.len() > max_request_bytes {
        return Err(format!(
            "request longer than {max_request_bytes} bytes; send one JSON object on one line"
        ));
    } else if line.is_empty() {
        return Err("the connection closed before a request was sent".into());
    }
    Ok(line)
}

async fn ask_core(
    request: ControlRequest,
    answered: oneshot::Receiver<()>,
    calls: &mpsc::Sender<ControlCall>,
    reply_timeout: Duration,
) -> ControlResponse {
    let command = request.command_name();
    let (reply, answer) = oneshot::channel();
    let exchange = async {
        let call = ControlCall {
            request,
            reply,
            answered,
        };
        if calls.send(call).await.is_err() {
            return ControlResponse::error(ControlError::new(
                ControlErrorKind::Busy,
                "the daemon is not taking requests (it is stopping)",
            ));
        }
        answer.await.unwrap_or_else(|_| {
            ControlResponse::error(ControlError::new(
                ControlErrorKind::Internal,
                format!("the daemon dropped the `{command}` request without answering"),
            ))
        })
    };
    match tokio::time::timeout(reply_timeout, exchange).await {
        Ok(response) => response,
        Err(_) => {
            tracing::warn!(
                command,
                "control request {command} unanswered within {reply_timeout:?}"
            );
            ControlResponse::error(ControlError::new(
                ControlErrorKind::Internal,
                format!(
                    "no answer to `{command}` within {}s; it may still complete, check `pos-agent status`",
                    reply_timeout.as_secs()
                ),
            ))
        }
    }
}

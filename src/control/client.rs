//! The operator's end of the control socket: sends one request to the running daemon and reads
//! its answer (docs/operations.md (Operator commands)). Used by the operator commands of the CLI.

use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixStream;

use super::protocol::{ControlRequest, ControlResponse};

/// Longest answer read: a status with thousands of pending payments fits many times over.
const MAX_RESPONSE_BYTES: u64 = 16 * 1024 * 1024;

/// Why no answer came from the daemon.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// No daemon to talk to: no socket, nobody listening, or no permission.
    #[error("cannot reach the pos-agent daemon at {}: {}", socket.display(), unreachable_hint(socket, source))]
    Unreachable {
        socket: PathBuf,
        #[source]
        source: io::Error,
    },
    /// The daemon took the request but did not answer in time; it may still carry it out.
    #[error(
        "no answer from the daemon at {} within {}; it may still carry the request out, \
         check with `pos-agent status` (or allow longer with --timeout)",
        socket.display(), humantime::format_duration(*after)
    )]
    Timeout { socket: PathBuf, after: Duration },
    /// The connection broke or closed before a whole answer came.
    #[error("the daemon at {} closed the connection without answering{}", socket.display(), detail(reason))]
    Closed {
        socket: PathBuf,
        reason: Option<String>,
    },
    /// The answer could not be read as a response to this request.
    #[error("the daemon at {} sent an answer this command cannot read: {reason}", socket.display())]
    BadReply { socket: PathBuf, reason: String },
}

fn detail(reason: &Option<String>) -> String {
    reason
        .as_ref()
        .map(|r| format!(" ({r})"))
        .unwrap_or_default()
}

/// The group the packaged units give the control socket (systemd/pos-agent.socket).
const OPERATORS_GROUP: &str = "pos-agent-operators";

/// The name of the group owning `socket`; the packaged group when the socket cannot be looked
/// at (its directory is closed to this user).
fn socket_group(socket: &Path) -> String {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(socket)
        .ok()
        .and_then(|m| nix::unistd::Group::from_gid(nix::unistd::Gid::from_raw(m.gid())).ok())
        .flatten()
        .map(|group| group.name)
        .unwrap_or_else(|| OPERATORS_GROUP.to_owned())
}

fn unreachable_hint(socket: &Path, error: &io::Error) -> String {
    match error.kind() {
        io::ErrorKind::NotFound => "no socket there; is pos-agent running \
            (`systemctl status pos-agent`)? If it listens elsewhere, give --socket or \
            POS_AGENT_SOCKET"
            .to_owned(),
        io::ErrorKind::ConnectionRefused => "nothing is listening there; pos-agent is not \
            running (a socket file was left behind)"
            .to_owned(),
        io::ErrorKind::PermissionDenied => format!(
            "permission denied; run as a member of the group {group} \
            (`usermod -aG {group} $USER`, then log in again) or as root",
            group = socket_group(socket)
        ),
        _ => error.to_string(),
    }
}

/// Sends `request` to the daemon listening on `socket` and waits up to `timeout` (connecting
/// included) for its answer.
pub async fn call(
    socket: &Path,
    request: &ControlRequest,
    timeout: Duration,
) -> Result<ControlResponse, ClientError> {
    match tokio::time::timeout(timeout, exchange(socket, request)).await {
        Ok(result) => result,
        Err(_) => Err(ClientError::Timeout {
            socket: socket.to_owned(),
            after: timeout,
        }),
    }
}

async fn exchange(socket: &Path, request: &ControlRequest) -> Result<ControlResponse, ClientError> {
    let closed = |e: io::Error| ClientError::Closed {
        socket: socket.to_owned(),
        reason: Some(e.to_string()),
    };
    let mut stream =
        UnixStream::connect(socket)
            .await
            .map_err(|source| ClientError::Unreachable {
                socket: socket.to_owned(),
                source,
            })?;
    let mut line = serde_json::to_vec(request).map_err(|e| ClientError::BadReply {
        socket: socket.to_owned(),
        reason: format!("cannot encode the request: {e}"),
    })?;
    line.push(b'\n');
    // A daemon that refuses the connection (`busy`) answers and closes before reading, so a
    // failed write is only final if no answer follows it.
    let written = stream.write_all(&line).await;

    let mut reader = BufReader::new(stream.take(MAX_RESPONSE_BYTES));
    let mut answer = Vec::new();
    let read = reader.read_until(b'\n', &mut answer).await;
    if answer.is_empty() {
        return Err(match (written, read) {
            (Err(e), _) | (Ok(()), Err(e)) => closed(e),
            (Ok(()), Ok(_)) => ClientError::Closed {
                socket: socket.to_owned(),
                reason: None,
            },
        });
    }
    let bad = |reason: String| ClientError::BadReply {
        socket: socket.to_owned(),
        reason,
    };
    if answer.last() != Some(&b'\n') {
        return Err(bad("the answer ended before its end of line".into()));
    }
    let response: ControlResponse =
        serde_json::from_slice(&answer).map_err(|e| bad(e.to_string()))?;
    if let Ok(reply) = &response.outcome {
        if reply.command_name() != request.command_name() {
            return Err(bad(format!(
                "asked `{}`, got an answer to `{}`",
                request.command_name(),
                reply.command_name()
            )));
        }
    }
    Ok(response)
}

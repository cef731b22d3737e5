//! `pos-agent check-health [--wait DURATION]`: the health gate an update system asks before it
//! keeps a new version (docs/operations.md, "Health check"; docs/deployment.md, "Updates that
//! roll back by themselves").
//!
//! Healthy means: the daemon answers on its control socket (it only runs once its state was
//! read: an unreadable state stops it with exit 74), the payment API connection is `connected`,
//! the state directory is writable, and the terminal link is `up`. The command asks `status` until all three hold or the wait is
//! over, then exits with the code of the last reason (the codes of docs/operations.md) and says
//! that reason on one line.

use std::path::Path;
use std::time::Duration;

use super::{exit, operator, Failure};
use crate::agent::ConnectionState;
use crate::control::{self, ClientError, ControlReply, ControlRequest, TerminalLinkStatus};

/// How often `status` is asked while waiting.
const POLL: Duration = Duration::from_millis(500);
/// How long one `status` may take.
const STATUS_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Debug, clap::Args)]
pub(crate) struct CheckHealthArgs {
    /// Wait up to this long for the agent to become healthy (e.g. 90s, 2m) [default: 0, ask once].
    #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration)]
    pub(crate) wait: Option<Duration>,
}

/// Why the agent is not healthy, with the exit code it maps to.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Unhealthy {
    code: u8,
    reason: String,
}

pub(crate) async fn run(args: CheckHealthArgs, socket: Option<&Path>) -> anyhow::Result<()> {
    let socket = socket.map_or_else(
        || Path::new(control::DEFAULT_SOCKET).to_path_buf(),
        Path::to_path_buf,
    );
    let wait = args.wait.unwrap_or_default();
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        let unhealthy = match check(&socket).await {
            Ok(healthy) => {
                println!("healthy: {healthy}");
                return Ok(());
            }
            Err(unhealthy) => unhealthy,
        };
        if tokio::time::Instant::now() + POLL > deadline {
            let waited = if wait.is_zero() {
                String::new()
            } else {
                format!(" (waited {})", humantime::format_duration(wait))
            };
            // One line, whatever the daemon's messages hold.
            let reason = unhealthy.reason.replace(['\n', '\r'], " ");
            return Err(
                Failure::new(unhealthy.code, format!("unhealthy{waited}: {reason}")).into(),
            );
        }
        tokio::time::sleep(POLL).await;
    }
}

/// One look at the daemon: what is healthy about it, or why it is not.
async fn check(socket: &Path) -> Result<String, Unhealthy> {
    let response = control::call(socket, &ControlRequest::Status, STATUS_TIMEOUT)
        .await
        .map_err(|error| Unhealthy {
            code: match error {
                ClientError::Timeout { .. } => exit::API_UNREACHABLE,
                _ => exit::DAEMON_UNREACHABLE,
            },
            reason: error.to_string(),
        })?;
    let status = match response.outcome {
        Ok(ControlReply::Status(status)) => status,
        Ok(other) => {
            return Err(Unhealthy {
                code: exit::DAEMON_UNREACHABLE,
                reason: format!("the daemon answered `{}` to `status`", other.command_name()),
            })
        }
        Err(error) => {
            return Err(Unhealthy {
                code: operator::exit_code(error.kind),
                reason: error.to_string(),
            })
        }
    };
    let connection = match status.connection {
        ConnectionState::Connected => None,
        ConnectionState::Rejected => Some((
            exit::API_REFUSED,
            match &status.rejection {
                Some(r) => format!(
                    "connection rejected (HTTP {}: {})",
                    r.http_status, r.message
                ),
                None => "connection rejected".to_owned(),
            },
        )),
        other => Some((
            exit::API_UNREACHABLE,
            match &status.connection_problem {
                Some(problem) => format!("connection {other} ({problem})"),
                None => format!("connection {other}"),
            },
        )),
    };
    let link =
        (status.terminal_link != TerminalLinkStatus::Up).then(|| "terminal link down".to_owned());
    // Sales are refused while the state cannot be written: a full or read-only disk.
    let storage = Some(&status.storage)
        .filter(|storage| !storage.writable)
        .map(|storage| {
            format!(
                "state directory {} not writable ({})",
                storage.directory,
                storage.last_error.as_deref().unwrap_or("write failed")
            )
        });
    // The running daemon's build, which an update's gate is judging.
    let build = format!("pos-agent {} (commit {})", status.version, status.commit);
    let code = connection
        .as_ref()
        .map_or(exit::API_UNREACHABLE, |(code, _)| *code);
    let reasons: Vec<String> = connection
        .map(|(_, reason)| reason)
        .into_iter()
        .chain(storage)
        .chain(link)
        .collect();
    if reasons.is_empty() {
        let storage = &status.storage;
        let low = if storage.free_space_low {
            format!(
                "; free space low in {} ({} bytes)",
                storage.directory,
                storage.free_bytes.unwrap_or(0)
            )
        } else {
            String::new()
        };
        return Ok(format!(
            "connection connected, terminal link up, {} pending{low}; {build}",
            status.pending.len()
        ));
    }
    Err(Unhealthy {
        code,
        reason: format!("{}; {build}", reasons.join("; ")),
    })
}

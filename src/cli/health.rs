//! `pos-agent check-health [--wait DURATION] [--require CONDITIONS]`: the health gate an update
//! system asks before it keeps a new version (docs/operations.md, "Health check";
//! docs/deployment.md, "Updates that roll back by themselves").
//!
//! By default it judges the release, not the store's network: healthy means the daemon answers
//! on its control socket (it only runs once its configuration was valid and its state was read),
//! its state directory is writable and its serial device is open. The payment API connection
//! being `connected` and the terminal link being `up` depend on things outside the release (the
//! store's internet, a terminal switched off) and are required only when asked for. The command
//! asks `status` until every required condition holds or the wait is over, then exits with the
//! code of the last reasons (the codes of docs/operations.md) and says them on one line.

use std::path::Path;
use std::time::Duration;

use super::{exit, operator, Failure};
use crate::control::{
    self, ClientError, ConnectionStatus, ControlReply, ControlRequest, TerminalLinkStatus,
};

/// How often `status` is asked while waiting.
const POLL: Duration = Duration::from_millis(500);
/// How long one `status` may take.
const STATUS_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Debug, clap::Args)]
pub(crate) struct CheckHealthArgs {
    /// Wait up to this long for the agent to become healthy (e.g. 90s, 2m) [default: 0, ask once].
    #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration)]
    pub(crate) wait: Option<Duration>,
    /// Also require conditions outside the release, comma-separated: `connection` (the payment
    /// API connection is `connected`), `link` (the terminal link is `up`) [default: none].
    #[arg(long, env = "POS_AGENT_HEALTH_REQUIRE", value_name = "CONDITIONS")]
    pub(crate) require: Option<String>,
}

/// The opt-in conditions of `--require`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Required {
    connection: bool,
    link: bool,
}

impl Required {
    /// `connection,link`, either alone, or nothing (an empty value, as the unit passes by
    /// default).
    fn parse(text: &str) -> Result<Self, String> {
        let mut required = Self::default();
        for name in text.split(',').map(str::trim).filter(|n| !n.is_empty()) {
            match name {
                "connection" => required.connection = true,
                "link" => required.link = true,
                other => {
                    return Err(format!(
                        "unknown condition {other:?}; the conditions are connection, link"
                    ))
                }
            }
        }
        Ok(required)
    }
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
    let required = Required::parse(args.require.as_deref().unwrap_or_default())
        .map_err(|e| Failure::new(exit::USAGE, format!("--require: {e}")))?;
    let wait = args.wait.unwrap_or_default();
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        let unhealthy = match check(&socket, required).await {
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
async fn check(socket: &Path, required: Required) -> Result<String, Unhealthy> {
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
    // The healthy line's parts, and the reasons with the lowest of their codes: a refusal of the
    // agent's keys or URL (1) outranks what may pass by itself (75).
    let mut said = String::new();
    let mut reasons = String::new();
    let mut code = None;
    let mut judge = |holds: bool, required: bool, text: &str, failure: u8| {
        if holds || !required {
            if !said.is_empty() {
                said.push_str(", ");
            }
            said.push_str(text);
            if !holds {
                // Said, so that the gate's log shows it, but not judged.
                said.push_str(" (not required)");
            }
        } else {
            if !reasons.is_empty() {
                reasons.push_str("; ");
            }
            reasons.push_str(text);
            code = Some(code.map_or(failure, |code: u8| code.min(failure)));
        }
    };
    // Sales are refused while the state cannot be written: a full or read-only disk.
    let storage = &status.storage;
    let text = if storage.writable {
        "state directory writable".to_owned()
    } else {
        format!(
            "state directory {} not writable ({})",
            storage.directory,
            storage.last_error.as_deref().unwrap_or("write failed")
        )
    };
    judge(storage.writable, true, &text, exit::API_UNREACHABLE);
    // `None`: a daemon too old to say, judged by what it does say.
    if let Some(open) = status.serial_port.open {
        let text = match (open, &status.serial_port.last_error) {
            (true, _) => "serial device open".to_owned(),
            (false, Some(error)) => format!("serial device not open ({error})"),
            (false, None) => "serial device not open".to_owned(),
        };
        judge(open, true, &text, exit::API_UNREACHABLE);
    }
    let connected = status.connection == ConnectionStatus::Connected;
    let text = match (&status.rejection, &status.connection_problem) {
        (Some(r), _) if status.connection == ConnectionStatus::Rejected => format!(
            "connection rejected (HTTP {}: {})",
            r.http_status, r.message
        ),
        (_, Some(problem)) if !connected => format!("connection {} ({problem})", status.connection),
        _ => format!("connection {}", status.connection),
    };
    let failure = if status.connection == ConnectionStatus::Rejected {
        exit::API_REFUSED
    } else {
        exit::API_UNREACHABLE
    };
    judge(connected, required.connection, &text, failure);
    let up = status.terminal_link == TerminalLinkStatus::Up;
    let text = format!("terminal link {}", status.terminal_link);
    judge(up, required.link, &text, exit::API_UNREACHABLE);
    // The running daemon's build, which an update's gate is judging.
    let build = format!("pos-agent {} (commit {})", status.version, status.commit);
    if let Some(code) = code {
        return Err(Unhealthy {
            code,
            reason: format!("{reasons}; {build}"),
        });
    }
    let low = if storage.free_space_low {
        format!(
            "; free space low in {} ({} bytes)",
            storage.directory,
            storage.free_bytes.unwrap_or(0)
        )
    } else {
        String::new()
    };
    Ok(format!(
        "{said}, {} pending{low}; {build}",
        status.pending.len()
    ))
}

#[cfg(test)]
mod tests {
    use super::Required;

    #[test]
    fn the_opt_in_conditions_are_read_from_a_comma_separated_list() {
        let both = Required {
            connection: true,
            link: true,
        };
        assert_eq!(Required::parse(""), Ok(Required::default()));
        assert_eq!(Required::parse("connection, link"), Ok(both));
        assert_eq!(Required::parse("link,connection,"), Ok(both));
        assert_eq!(
            Required::parse("link"),
            Ok(Required {
                connection: false,
                link: true
            })
        );
        assert!(Required::parse("connected")
            .unwrap_err()
            .contains("\"connected\""));
    }
}

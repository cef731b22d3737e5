//! Validation: every rule the schema's types cannot express, and what `run` checks beyond the
//! file before it starts.

use super::checked::{check_url, is_guid};
use super::*;

/// `sun_path` holds 108 bytes including the terminating NUL.
const MAX_SOCKET_PATH_BYTES: usize = 107;

impl ConfigFile {
    /// Every rule the schema's types cannot express (docs/configuration.md), and the values
    /// checked into types on the way: every problem found, or the checked values.
    pub(super) fn check(&self) -> Result<(PaywallSettings, TerminalRef), Vec<Problem>> {
        let mut problems = Vec::new();

        // [paywall]
        let paywall = PaywallSettings::from_config(&self.paywall);
        if let Err(found) = &paywall {
            problems.extend(found.iter().cloned());
        }

        // [connection]
        if let Some(id) = &self.connection.id {
            check(
                &mut problems,
                is_guid(id),
                "connection.id",
                "must be a GUID (xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx)",
            );
        }
        if let Some(establish) = &self.connection.establish {
            check(
                &mut problems,
                !establish.name.trim().is_empty(),
                "connection.establish.name",
                "must not be empty",
            );
            for (key, value) in [
                ("brand_id", establish.brand_id),
                ("provider_id", establish.provider_id),
                ("region_id", establish.region_id),
                ("end_of_day_id", establish.end_of_day_id),
            ] {
                check(
                    &mut problems,
                    value >= 0,
                    &format!("connection.establish.{key}"),
                    "must not be negative",
                );
            }
            for name in establish.service_parameters.keys() {
                check(
                    &mut problems,
                    !name.trim().is_empty(),
                    "connection.establish.service_parameters",
                    "a parameter name is empty",
                );
            }
        }

        // [terminal]
        let terminal = &self.terminal;
        let terminal_ref = TerminalRef::from_config(terminal);
        if let Err(found) = &terminal_ref {
            problems.extend(found.iter().cloned());
        }
        check(
            &mut problems,
            terminal.currency_id >= 1,
            "terminal.currency_id",
            "must be 1 or more",
        );
        if let Some(url) = &terminal.callback_url {
            if let Err(message) = check_url(url) {
                check(&mut problems, false, "terminal.callback_url", &message);
            }
        }
        check(
            &mut problems,
            !terminal.payment_timeout.is_zero(),
            "terminal.payment_timeout",
            "must be longer than zero",
        );
        check(
            &mut problems,
            !terminal.sale_reply_deadline.is_zero(),
            "terminal.sale_reply_deadline",
            "must be longer than zero",
        );

        // [serial]
        let serial = &self.serial;
        check(
            &mut problems,
            !serial.device.as_os_str().is_empty(),
            "serial.device",
            "must not be empty",
        );
        check(
            &mut problems,
            serial.baud_rate > 0,
            "serial.baud_rate",
            "must be more than zero",
        );
        check(
            &mut problems,
            (5..=8).contains(&serial.data_bits),
            "serial.data_bits",
            "must be 5, 6, 7 or 8",
        );
        check(
            &mut problems,
            matches!(serial.stop_bits, 1 | 2),
            "serial.stop_bits",
            "must be 1 or 2",
        );
        check(
            &mut problems,
            !serial.ack_timeout.is_zero(),
            "serial.ack_timeout",
            "must be longer than zero",
        );
        check(
            &mut problems,
            serial.max_sends >= 1,
            "serial.max_sends",
            "must be 1 or more",
        );
        check(
            &mut problems,
            !serial.ping_interval.is_zero(),
            "serial.ping_interval",
            "must be longer than zero",
        );

        // [state], [control]
        if let Some(directory) = &self.state.directory {
            check(
                &mut problems,
                directory.is_absolute(),
                "state.directory",
                "must be an absolute path",
            );
        }
        if let Some(socket) = &self.control.socket {
            check(
                &mut problems,
                socket.is_absolute(),
                "control.socket",
                "must be an absolute path",
            );
            check(
                &mut problems,
                socket.as_os_str().len() <= MAX_SOCKET_PATH_BYTES,
                "control.socket",
                "is longer than a Unix socket path may be (107 bytes)",
            );
        }

        // [shutdown]
        check(
            &mut problems,
            !self.shutdown.deadline.is_zero(),
            "shutdown.deadline",
            "must be longer than zero",
        );
        check(
            &mut problems,
            self.shutdown.concurrency >= 1,
            "shutdown.concurrency",
            "must be 1 or more",
        );

        // [metrics]
        if let Some(textfile) = &self.metrics.textfile {
            check(
                &mut problems,
                textfile.is_absolute(),
                "metrics.textfile",
                "must be an absolute path",
            );
            check(
                &mut problems,
                textfile.extension().is_some_and(|e| e == "prom"),
                "metrics.textfile",
                "must end with .prom (node_exporter's textfile collector reads only those)",
            );
        }
        check(
            &mut problems,
            self.metrics.interval >= std::time::Duration::from_secs(1),
            "metrics.interval",
            "must be at least 1s",
        );

        // [log]
        if self.log.level.trim().is_empty() {
            check(
                &mut problems,
                false,
                "log.level",
                "must not be empty (for example \"info\")",
            );
        } else if let Err(e) = crate::logging::parse_filter(&self.log.level) {
            check(
                &mut problems,
                false,
                "log.level",
                &format!(
                    "is not a valid log filter ({e}); for example \"info\" or \"pos_agent=debug\""
                ),
            );
        }
        match (paywall, terminal_ref) {
            (Ok(paywall), Ok(terminal_ref)) if problems.is_empty() => Ok((paywall, terminal_ref)),
            _ => Err(problems),
        }
    }
}

fn check(problems: &mut Vec<Problem>, ok: bool, key: &str, message: &str) {
    if !ok {
        problems.push(Problem::invalid(key, message));
    }
}

/// What `run` checks beyond the file before it starts (each makes it exit 78): the payment API
/// client can be built (its CA bundle included), and a connection Id is known (configured, in
/// state, or to be established). `run` and `check-config` both ask this.
pub fn start_problems(config: &Config, env: &EnvSnapshot) -> Vec<Problem> {
    let mut problems = Vec::new();
    if let Err(e) = crate::paywall::PaywallClient::new(&config.paywall_settings) {
        problems.push(Problem::invalid("paywall", e.to_string()));
    }
    if config.connection.id.is_none() && config.connection.establish.is_none() {
        let directory = config.state_directory(env);
        match crate::state::stored_connection_id(&directory) {
            Ok(Some(_)) => {}
            Ok(None) => problems.push(Problem::new(
                ProblemKind::MissingKey,
                Some("connection.id"),
                format!(
                    "no connection Id in [connection].id or in the state in {}, and no \
                     [connection.establish] to create one",
                    directory.display()
                ),
            )),
            Err(e) => problems.push(Problem::new(
                ProblemKind::Unreadable,
                Some("state.directory"),
                e.to_string(),
            )),
        }
    }
    problems
}

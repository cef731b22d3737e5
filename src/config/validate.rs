//! Validation: every rule the schema's types cannot express.

use super::checked::{check_duration, check_url, is_guid};
use super::*;

/// `sun_path` holds 108 bytes including the terminating NUL.
const MAX_SOCKET_PATH_BYTES: usize = 107;

/// The payment API's length limits on what the configuration sends (docs/payment-api.md).
pub const MAX_CALLBACK_URL_CHARS: usize = 150;
pub const MAX_ESTABLISH_NAME_CHARS: usize = 100;
pub const MAX_DISPLAY_NAME_CHARS: usize = 25;
/// Bounds on counts: far above any use, low enough that no product with them overflows.
const MAX_SENDS: u32 = 100;
const MAX_SHUTDOWN_CONCURRENCY: usize = 256;
const MAX_BAUD_RATE: u32 = 4_000_000;

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
            check(
                &mut problems,
                establish.name.chars().count() <= MAX_ESTABLISH_NAME_CHARS,
                "connection.establish.name",
                "must be at most 100 characters (the payment API's limit)",
            );
            check(
                &mut problems,
                establish
                    .display_name
                    .as_ref()
                    .is_none_or(|d| d.chars().count() <= MAX_DISPLAY_NAME_CHARS),
                "connection.establish.display_name",
                "must be at most 25 characters (the payment API's limit)",
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
            check(
                &mut problems,
                url.chars().count() <= MAX_CALLBACK_URL_CHARS,
                "terminal.callback_url",
                "must be at most 150 characters (the payment API's limit on CallbackAddress)",
            );
        }
        for (key, value) in [
            ("terminal.payment_timeout", terminal.payment_timeout),
            ("terminal.sale_reply_deadline", terminal.sale_reply_deadline),
            ("serial.ack_timeout", self.serial.ack_timeout),
            ("serial.ping_interval", self.serial.ping_interval),
            ("shutdown.deadline", self.shutdown.deadline),
            ("log.repeat_window", self.log.repeat_window),
            ("metrics.interval", self.metrics.interval),
        ] {
            check_duration(&mut problems, key, value);
        }

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
            (1..=MAX_BAUD_RATE).contains(&serial.baud_rate),
            "serial.baud_rate",
            "must be from 1 to 4000000",
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
            (1..=MAX_SENDS).contains(&serial.max_sends),
            "serial.max_sends",
            "must be from 1 to 100",
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
            (1..=MAX_SHUTDOWN_CONCURRENCY).contains(&self.shutdown.concurrency),
            "shutdown.concurrency",
            "must be from 1 to 256",
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

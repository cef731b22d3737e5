//! Validation: every rule the schema's types cannot express, and what `run` checks beyond the
//! file before it starts.

use secrecy::ExposeSecret;

use super::*;

/// `sun_path` holds 108 bytes including the terminating NUL.
const MAX_SOCKET_PATH_BYTES: usize = 107;
const MAX_TAG_CODE_CHARS: usize = 25;

impl Config {
    /// Every rule the schema's types cannot express (docs/configuration.md; docs/configuration.md).
    pub(super) fn problems(&self) -> Vec<Problem> {
        let mut problems = Vec::new();
        let mut check = |ok: bool, key: &str, message: &str| {
            if !ok {
                problems.push(Problem::invalid(key, message));
            }
        };

        // [paywall]
        let paywall = &self.paywall;
        if let Err(message) = check_base_url(&paywall.physical_api_url, paywall.allow_insecure_http)
        {
            check(false, "paywall.physical_api_url", &message);
        }
        if let Some(url) = &paywall.payment_api_url {
            if let Err(message) = check_base_url(url, paywall.allow_insecure_http) {
                check(false, "paywall.payment_api_url", &message);
            }
        }
        for name in ["api_key_private", "api_client_private"] {
            check(
                paywall.secret(name).is_some(),
                &format!("paywall.{name}"),
                &format!(
                    "this required key is missing: set it in the file, as POS_AGENT__PAYWALL__{}, \
                     or better as the systemd credential `{name}`",
                    name.to_uppercase()
                ),
            );
        }
        match (&paywall.api_key_public, &paywall.api_client_public) {
            (Some(_), None) => check(
                false,
                "paywall.api_client_public",
                "is required when paywall.api_key_public is set (the public keys go together)",
            ),
            (None, Some(_)) => check(
                false,
                "paywall.api_key_public",
                "is required when paywall.api_client_public is set (the public keys go together)",
            ),
            _ => {}
        }
        for name in SECRET_KEYS {
            if let Some(secret) = paywall.secret(name) {
                if let Err(message) = check_header_value(secret.expose_secret()) {
                    check(false, &format!("paywall.{name}"), &message);
                }
            }
        }
        check(
            !paywall.request_timeout.is_zero(),
            "paywall.request_timeout",
            "must be longer than zero",
        );
        if let Some(locale) = &paywall.locale {
            if let Err(message) = check_header_value(locale) {
                check(false, "paywall.locale", &message);
            }
        }

        // [connection]
        if let Some(id) = &self.connection.id {
            check(
                is_guid(id),
                "connection.id",
                "must be a GUID (xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx)",
            );
        }
        if let Some(establish) = &self.connection.establish {
            check(
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
                    value >= 0,
                    &format!("connection.establish.{key}"),
                    "must not be negative",
                );
            }
            for name in establish.service_parameters.keys() {
                check(
                    !name.trim().is_empty(),
                    "connection.establish.service_parameters",
                    "a parameter name is empty",
                );
            }
        }

        // [terminal]
        let terminal = &self.terminal;
        match (&terminal.id, &terminal.tag_code) {
            (Some(_), Some(_)) => check(
                false,
                "terminal.id",
                "set exactly one of terminal.id and terminal.tag_code, not both",
            ),
            (None, None) => check(
                false,
                "terminal.id",
                "set exactly one of terminal.id (the terminal's GUID) and terminal.tag_code; \
                 neither is set",
            ),
            _ => {}
        }
        if let Some(id) = &terminal.id {
            check(
                is_guid(id),
                "terminal.id",
                "must be a GUID (xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx)",
            );
        }
        if let Some(tag_code) = &terminal.tag_code {
            check(
                !tag_code.trim().is_empty(),
                "terminal.tag_code",
                "must not be empty",
            );
            check(
                tag_code.chars().count() <= MAX_TAG_CODE_CHARS,
                "terminal.tag_code",
                "must be at most 25 characters (the API's limit)",
            );
        }
        check(
            terminal.currency_id >= 1,
            "terminal.currency_id",
            "must be 1 or more",
        );
        if let Some(url) = &terminal.callback_url {
            if let Err(message) = check_url(url) {
                check(false, "terminal.callback_url", &message);
            }
        }
        check(
            !terminal.payment_timeout.is_zero(),
            "terminal.payment_timeout",
            "must be longer than zero",
        );
        check(
            !terminal.sale_reply_deadline.is_zero(),
            "terminal.sale_reply_deadline",
            "must be longer than zero",
        );

        // [serial]
        let serial = &self.serial;
        check(
            !serial.device.as_os_str().is_empty(),
            "serial.device",
            "must not be empty",
        );
        check(
            serial.baud_rate > 0,
            "serial.baud_rate",
            "must be more than zero",
        );
        check(
            (5..=8).contains(&serial.data_bits),
            "serial.data_bits",
            "must be 5, 6, 7 or 8",
        );
        check(
            matches!(serial.stop_bits, 1 | 2),
            "serial.stop_bits",
            "must be 1 or 2",
        );
        check(
            !serial.ack_timeout.is_zero(),
            "serial.ack_timeout",
            "must be longer than zero",
        );
        check(
            serial.max_sends >= 1,
            "serial.max_sends",
            "must be 1 or more",
        );
        check(
            !serial.ping_interval.is_zero(),
            "serial.ping_interval",
            "must be longer than zero",
        );

        // [state], [control]
        if let Some(directory) = &self.state.directory {
            check(
                directory.is_absolute(),
                "state.directory",
                "must be an absolute path",
            );
        }
        if let Some(socket) = &self.control.socket {
            check(
                socket.is_absolute(),
                "control.socket",
                "must be an absolute path",
            );
            check(
                socket.as_os_str().len() <= MAX_SOCKET_PATH_BYTES,
                "control.socket",
                "is longer than a Unix socket path may be (107 bytes)",
            );
        }

        // [shutdown]
        check(
            !self.shutdown.deadline.is_zero(),
            "shutdown.deadline",
            "must be longer than zero",
        );
        check(
            self.shutdown.concurrency >= 1,
            "shutdown.concurrency",
            "must be 1 or more",
        );

        // [log]
        if self.log.level.trim().is_empty() {
            check(
                false,
                "log.level",
                "must not be empty (for example \"info\")",
            );
        } else if let Err(e) = crate::logging::parse_filter(&self.log.level) {
            check(
                false,
                "log.level",
                &format!(
                    "is not a valid log filter ({e}); for example \"info\" or \"pos_agent=debug\""
                ),
            );
        }
        problems
    }
}

/// A GUID in the hyphenated form the API uses.
fn is_guid(text: &str) -> bool {
    text.len() == 36 && uuid::Uuid::try_parse(text).is_ok()
}

/// An absolute http(s) URL that can be shown in `check-config` (no user or password).
fn check_url(text: &str) -> Result<reqwest::Url, String> {
    let url = reqwest::Url::parse(text).map_err(|e| format!("is not a valid URL ({e})"))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err("must be an https:// (or http://) URL".to_owned());
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err("has no host".to_owned());
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err("must not contain a user name or password".to_owned());
    }
    Ok(url)
}

/// A base address of the payment API: https, unless `paywall.allow_insecure_http` is set.
fn check_base_url(text: &str, allow_insecure_http: bool) -> Result<(), String> {
    let url = check_url(text)?;
    if url.query().is_some() || url.fragment().is_some() {
        return Err("a base address must not have a query or fragment".to_owned());
    }
    if url.scheme() == "http" && !allow_insecure_http {
        return Err(
            "must use https:// (http:// is allowed only with paywall.allow_insecure_http = true, \
             for a simulator or tests)"
                .to_owned(),
        );
    }
    Ok(())
}

/// A value sent as an HTTP header: printable ASCII, no surrounding whitespace. The message never
/// quotes the value.
fn check_header_value(value: &str) -> Result<(), String> {
    if value.is_empty() {
        return Err("must not be empty".to_owned());
    }
    if !value.bytes().all(|b| (0x20..0x7f).contains(&b)) {
        return Err("must be printable ASCII (no line breaks or control characters)".to_owned());
    }
    if value.trim() != value {
        return Err("has leading or trailing whitespace".to_owned());
    }
    Ok(())
}

/// What `run` checks beyond the file before it starts (each makes it exit 78): the payment API
/// client can be built (its CA bundle included), and a connection Id is known (configured, in
/// state, or to be established). `run` and `check-config` both ask this.
pub fn start_problems(config: &Config, env: &EnvSnapshot) -> Vec<Problem> {
    let mut problems = Vec::new();
    if let Err(e) = crate::paywall::PaywallClient::from_config(&config.paywall) {
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

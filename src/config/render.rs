//! `check-config` (docs/operations.md (Operator commands)): the effective configuration as
//! TOML with every secret redacted.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use super::*;

/// What `check-config` prints in place of a secret value.
pub(crate) const REDACTED: &str = "<redacted>";

/// `--config PATH`, shared by the commands that read the configuration.
#[derive(Debug, Clone, clap::Args)]
pub(crate) struct ConfigArgs {
    /// The configuration file.
    #[arg(long, value_name = "PATH", env = PATH_ENV, default_value = DEFAULT_PATH)]
    pub config: PathBuf,
}

/// The effective configuration as TOML: every key, defaults filled in, unset optional keys as
/// comments, secrets as `"<redacted>"` with where they came from.
pub fn render_effective(config: &Config) -> String {
    let mut out = Render::default();
    let provenance = &config.provenance;
    out.comment("pos-agent effective configuration (secrets redacted)");
    out.comment(&format!("file: {}", provenance.file.display()));
    for (key, name) in &provenance.env_overrides {
        out.comment(&format!("{key} overridden by environment variable {name}"));
    }

    let paywall = &config.paywall;
    out.section("paywall");
    out.string("physical_api_url", &paywall.physical_api_url);
    out.opt_string("payment_api_url", paywall.payment_api_url.as_deref());
    for key in SecretKey::ALL {
        let name = key.name();
        match (paywall.secret(key), provenance.secrets.get(name)) {
            (Some(_), Some(source)) => {
                out.line(&format!("{name} = {}  # from {source}", quote(REDACTED)))
            }
            (Some(_), None) => out.string(name, REDACTED),
            (None, _) => out.unset(name),
        }
    }
    out.duration("request_timeout", paywall.request_timeout);
    out.opt_string("locale", paywall.locale.as_deref());
    out.value("allow_insecure_http", paywall.allow_insecure_http);
    match &config.paywall_settings.proxy {
        Some(proxy) => {
            out.comment(&format!("proxy: {} (from {})", proxy.shown, proxy.source));
            if let Some(no_proxy) = &proxy.no_proxy {
                out.comment(&format!("reached without the proxy (NO_PROXY): {no_proxy}"));
            }
        }
        None => out.comment("proxy: none, the payment API is reached directly"),
    }

    out.section("connection");
    out.opt_string("id", config.connection.id.as_deref());
    match &config.connection.establish {
        None => out.comment("[connection.establish] is not set"),
        Some(establish) => {
            out.section("connection.establish");
            out.string("name", &establish.name);
            out.opt_string("display_name", establish.display_name.as_deref());
            out.value("brand_id", establish.brand_id);
            out.value("provider_id", establish.provider_id);
            out.value("region_id", establish.region_id);
            out.value("end_of_day_id", establish.end_of_day_id);
            out.value("is_prod", establish.is_prod);
            out.value("is_reporting", establish.is_reporting);
            out.value("is_async_payment", establish.is_async_payment);
            out.value("is_socket_payment", establish.is_socket_payment);
            let parameters: Vec<String> = establish
                .service_parameters
                .keys()
                .map(|name| format!("{} = {}", quote(name), quote(REDACTED)))
                .collect();
            let from = match &provenance.service_parameters {
                Some(source) => format!("  # from {source}"),
                None => String::new(),
            };
            out.line(&format!(
                "service_parameters = {{ {} }}{from}",
                parameters.join(", ")
            ));
        }
    }

    let terminal = &config.terminal;
    out.section("terminal");
    out.opt_string("id", terminal.id.as_deref());
    out.opt_string("tag_code", terminal.tag_code.as_deref());
    out.value("currency_id", terminal.currency_id);
    out.opt_string("callback_url", terminal.callback_url.as_deref());
    out.duration("payment_timeout", terminal.payment_timeout);
    out.duration("sale_reply_deadline", terminal.sale_reply_deadline);

    let serial = &config.serial;
    out.section("serial");
    out.string("device", &serial.device.to_string_lossy());
    out.value("baud_rate", serial.baud_rate);
    out.value("data_bits", serial.data_bits);
    out.string(
        "parity",
        match serial.parity {
            Parity::None => "none",
            Parity::Odd => "odd",
            Parity::Even => "even",
        },
    );
    out.value("stop_bits", serial.stop_bits);
    out.string(
        "flow_control",
        match serial.flow_control {
            FlowControl::None => "none",
            FlowControl::Software => "software",
            FlowControl::Hardware => "hardware",
        },
    );
    out.duration("ack_timeout", serial.ack_timeout);
    out.value("max_sends", serial.max_sends);
    out.duration("ping_interval", serial.ping_interval);

    out.section("state");
    match &config.state.directory {
        Some(directory) => out.string("directory", &directory.to_string_lossy()),
        None => out.comment("directory is not set: $STATE_DIRECTORY, else /var/lib/pos-agent"),
    }

    out.section("control");
    match &config.control.socket {
        Some(socket) => out.string("socket", &socket.to_string_lossy()),
        None => out.comment(
            "socket is not set: $RUNTIME_DIRECTORY/control.sock, else /run/pos-agent/control.sock",
        ),
    }

    let shutdown = &config.shutdown;
    out.section("shutdown");
    out.value("cancel_pending", shutdown.cancel_pending);
    out.value("disconnect", shutdown.disconnect);
    out.duration("deadline", shutdown.deadline);
    out.value("concurrency", shutdown.concurrency);

    out.section("log");
    out.string("level", &config.log.level);
    out.duration("repeat_window", config.log.repeat_window);

    out.section("metrics");
    match &config.metrics.textfile {
        Some(textfile) => out.string("textfile", &textfile.to_string_lossy()),
        None => out.comment("textfile is not set: `pos-agent metrics` only"),
    }
    out.duration("interval", config.metrics.interval);
    out.text
}

/// A TOML basic string. JSON's escapes are a subset of TOML's, but JSON leaves DEL (U+007F)
/// unescaped, which a TOML string must not contain (found by fuzzing `config_load`: a device
/// path with a DEL in it rendered to output that did not load back).
fn quote(text: &str) -> String {
    serde_json::to_string(text)
        .unwrap_or_else(|_| "\"\"".to_owned())
        .replace('\u{7f}', "\\u007f")
}

#[derive(Default)]
struct Render {
    text: String,
}

impl Render {
    fn line(&mut self, line: &str) {
        self.text.push_str(line);
        self.text.push('\n');
    }
    fn comment(&mut self, comment: &str) {
        self.line(&format!("# {comment}"));
    }
    fn section(&mut self, name: &str) {
        self.line("");
        self.line(&format!("[{name}]"));
    }
    fn string(&mut self, key: &str, value: &str) {
        self.line(&format!("{key} = {}", quote(value)));
    }
    fn opt_string(&mut self, key: &str, value: Option<&str>) {
        match value {
            Some(value) => self.string(key, value),
            None => self.unset(key),
        }
    }
    fn unset(&mut self, key: &str) {
        self.comment(&format!("{key} is not set"));
    }
    fn value(&mut self, key: &str, value: impl fmt::Display) {
        self.line(&format!("{key} = {value}"));
    }
    fn duration(&mut self, key: &str, value: Duration) {
        self.string(key, &humantime::format_duration(value).to_string());
    }
}

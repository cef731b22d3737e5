//! The file's schema: one struct per TOML section, strict, with the defaults docs/configuration.md
//! gives, and where the state directory and control socket are when the file names none.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use secrecy::SecretString;
use serde::Deserialize;

use super::*;

/// The loaded configuration ([`load`]): the file with its environment overrides and credentials
/// applied, where each value came from, and the values checked into types once, at load time.
/// The sections read through to [`ConfigFile`].
#[derive(Debug, Clone)]
pub struct Config {
    /// Where the values came from (file, environment, credentials).
    pub provenance: Provenance,
    /// `[paywall]`, checked: what the payment API client is built from.
    pub paywall_settings: PaywallSettings,
    /// `[terminal]` `id` or `tag_code`, checked: where sales go.
    pub terminal_ref: TerminalRef,
    pub(super) file: ConfigFile,
}

impl std::ops::Deref for Config {
    type Target = ConfigFile;

    fn deref(&self) -> &ConfigFile {
        &self.file
    }
}

/// The whole configuration file, one struct per section.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConfigFile {
    pub paywall: PaywallConfig,
    #[serde(default)]
    pub connection: ConnectionConfig,
    pub terminal: TerminalConfig,
    #[serde(default)]
    pub serial: SerialConfig,
    #[serde(default)]
    pub state: StateConfig,
    #[serde(default)]
    pub control: ControlConfig,
    #[serde(default)]
    pub shutdown: ShutdownConfig,
    #[serde(default)]
    pub log: LogConfig,
    #[serde(default)]
    pub metrics: MetricsConfig,
}

/// `[paywall]`: where the payment API is and how to authenticate. The four keys may also come
/// from `$CREDENTIALS_DIRECTORY`, so they are optional here.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PaywallConfig {
    pub physical_api_url: String,
    #[serde(default)]
    pub payment_api_url: Option<String>,
    #[serde(default)]
    pub api_key_private: Option<SecretString>,
    #[serde(default)]
    pub api_client_private: Option<SecretString>,
    #[serde(default)]
    pub api_key_public: Option<SecretString>,
    #[serde(default)]
    pub api_client_public: Option<SecretString>,
    #[serde(default = "defaults::request_timeout", with = "humantime_serde")]
    pub request_timeout: Duration,
    #[serde(default)]
    pub locale: Option<String>,
    #[serde(default)]
    pub allow_insecure_http: bool,
}

/// `[connection]`: a known connection Id, or how to establish one.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConnectionConfig {
    #[serde(default)]
    pub id: Option<String>,
    #[serde(default)]
    pub establish: Option<EstablishConfig>,
}

/// `[connection.establish]`: the body of `POST /api/connection`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EstablishConfig {
    pub name: String,
    #[serde(default)]
    pub display_name: Option<String>,
    pub brand_id: i64,
    pub provider_id: i64,
    pub region_id: i64,
    pub end_of_day_id: i64,
    #[serde(default)]
    pub is_prod: bool,
    #[serde(default)]
    pub is_reporting: bool,
    #[serde(default = "defaults::yes")]
    pub is_async_payment: bool,
    #[serde(default)]
    pub is_socket_payment: bool,
    /// Provider credentials: every value is a secret.
    #[serde(default)]
    pub service_parameters: BTreeMap<String, SecretString>,
}

/// `[terminal]`: which Paywall terminal this agent serves (exactly one of `id`/`tag_code`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TerminalConfig {
    #[serde(default)]
    pub id: Option<String>,
    #[serde(default)]
    pub tag_code: Option<String>,
    #[serde(default = "defaults::currency_id")]
    pub currency_id: i64,
    #[serde(default)]
    pub callback_url: Option<String>,
    #[serde(default = "defaults::payment_timeout", with = "humantime_serde")]
    pub payment_timeout: Duration,
    /// The longest a `sale` waits for its reply, whatever the payment API does
    /// (`docs/serial-protocol.md`, "Sale replies").
    #[serde(default = "defaults::sale_reply_deadline", with = "humantime_serde")]
    pub sale_reply_deadline: Duration,
}

/// Parity of the serial line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Parity {
    None,
    Odd,
    Even,
}

/// Flow control of the serial line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FlowControl {
    None,
    Software,
    Hardware,
}

/// `[serial]`: the line to the terminal (docs/serial-protocol.md §1) and the link timers (§2, §4).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SerialConfig {
    #[serde(default = "defaults::device")]
    pub device: PathBuf,
    #[serde(default = "defaults::baud_rate")]
    pub baud_rate: u32,
    /// 5, 6, 7 or 8.
    #[serde(default = "defaults::data_bits")]
    pub data_bits: u8,
    #[serde(default = "defaults::parity")]
    pub parity: Parity,
    /// 1 or 2.
    #[serde(default = "defaults::stop_bits")]
    pub stop_bits: u8,
    #[serde(default = "defaults::flow_control")]
    pub flow_control: FlowControl,
    /// T3: how long a sent frame waits for ACK/NAK.
    #[serde(default = "defaults::ack_timeout", with = "humantime_serde")]
    pub ack_timeout: Duration,
    /// Sends of one frame in total before the message fails and the link is down.
    #[serde(default = "defaults::max_sends")]
    pub max_sends: u32,
    /// Idle time after which a `ping` is sent.
    #[serde(default = "defaults::ping_interval", with = "humantime_serde")]
    pub ping_interval: Duration,
}

impl Default for SerialConfig {
    fn default() -> Self {
        Self {
            device: defaults::device(),
            baud_rate: defaults::baud_rate(),
            data_bits: defaults::data_bits(),
            parity: defaults::parity(),
            stop_bits: defaults::stop_bits(),
            flow_control: defaults::flow_control(),
            ack_timeout: defaults::ack_timeout(),
            max_sends: defaults::max_sends(),
            ping_interval: defaults::ping_interval(),
        }
    }
}

/// `[state]`: where durable state lives. `None` means `$STATE_DIRECTORY`, else
/// `/var/lib/pos-agent`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StateConfig {
    #[serde(default)]
    pub directory: Option<PathBuf>,
}

/// `[control]`: the operators' control socket. `None` means `$RUNTIME_DIRECTORY/control.sock`,
/// else `/run/pos-agent/control.sock`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ControlConfig {
    #[serde(default)]
    pub socket: Option<PathBuf>,
}

/// `[shutdown]`: what happens on SIGTERM/SIGINT (docs/architecture.md (Data flow of a shutdown)).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ShutdownConfig {
    #[serde(default = "defaults::yes")]
    pub cancel_pending: bool,
    #[serde(default = "defaults::yes")]
    pub disconnect: bool,
    #[serde(default = "defaults::deadline", with = "humantime_serde")]
    pub deadline: Duration,
    #[serde(default = "defaults::concurrency")]
    pub concurrency: usize,
}

impl Default for ShutdownConfig {
    fn default() -> Self {
        Self {
            cancel_pending: true,
            disconnect: true,
            deadline: defaults::deadline(),
            concurrency: defaults::concurrency(),
        }
    }
}

/// `[log]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogConfig {
    #[serde(default = "defaults::log_level")]
    pub level: String,
    /// Repeats of one warning within this window are counted and summarised, not written
    /// (docs/operations.md (Repeated warnings)); `0s` writes every line.
    #[serde(default = "defaults::repeat_window", with = "humantime_serde")]
    pub repeat_window: Duration,
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            level: defaults::log_level(),
            repeat_window: defaults::repeat_window(),
        }
    }
}

/// `[metrics]`: the counters and gauges (docs/operations.md, "Metrics"). `pos-agent metrics`
/// always reads them over the control socket; `textfile`, when set, is also rewritten every
/// `interval` for node_exporter's textfile collector. The agent opens no listening port.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetricsConfig {
    #[serde(default)]
    pub textfile: Option<PathBuf>,
    #[serde(default = "defaults::metrics_interval", with = "humantime_serde")]
    pub interval: Duration,
}

impl Default for MetricsConfig {
    fn default() -> Self {
        Self {
            textfile: None,
            interval: defaults::metrics_interval(),
        }
    }
}

/// The defaults docs/configuration.md documents, named so serde and the `Default` impls share
/// them.
pub mod defaults {
    use super::*;

    pub fn yes() -> bool {
        true
    }
    pub fn request_timeout() -> Duration {
        Duration::from_secs(10)
    }
    pub fn currency_id() -> i64 {
        1
    }
    pub fn payment_timeout() -> Duration {
        Duration::from_secs(600)
    }
    pub fn sale_reply_deadline() -> Duration {
        Duration::from_secs(20)
    }
    pub fn device() -> PathBuf {
        PathBuf::from("/dev/ttyS1")
    }
    pub fn baud_rate() -> u32 {
        115_200
    }
    pub fn data_bits() -> u8 {
        8
    }
    pub fn parity() -> Parity {
        Parity::None
    }
    pub fn stop_bits() -> u8 {
        1
    }
    pub fn flow_control() -> FlowControl {
        FlowControl::None
    }
    pub fn ack_timeout() -> Duration {
        Duration::from_secs(1)
    }
    pub fn max_sends() -> u32 {
        3
    }
    pub fn ping_interval() -> Duration {
        Duration::from_secs(5)
    }
    pub fn deadline() -> Duration {
        Duration::from_secs(30)
    }
    pub fn concurrency() -> usize {
        8
    }
    pub fn repeat_window() -> Duration {
        Duration::from_secs(60)
    }
    pub fn log_level() -> String {
        "info".to_owned()
    }
    pub fn metrics_interval() -> Duration {
        Duration::from_secs(15)
    }
}

/// One of the four secrets of `[paywall]`: a closed set, so no name outside it can select (and
/// overwrite) a key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SecretKey {
    ApiKeyPrivate,
    ApiClientPrivate,
    ApiKeyPublic,
    ApiClientPublic,
}

impl SecretKey {
    /// Every secret, in the order of [`SECRET_KEYS`].
    pub const ALL: [SecretKey; 4] = [
        SecretKey::ApiKeyPrivate,
        SecretKey::ApiClientPrivate,
        SecretKey::ApiKeyPublic,
        SecretKey::ApiClientPublic,
    ];

    /// Its key in `[paywall]`, and the name of its file in `$CREDENTIALS_DIRECTORY`.
    pub const fn name(self) -> &'static str {
        match self {
            SecretKey::ApiKeyPrivate => "api_key_private",
            SecretKey::ApiClientPrivate => "api_client_private",
            SecretKey::ApiKeyPublic => "api_key_public",
            SecretKey::ApiClientPublic => "api_client_public",
        }
    }
}

/// The secrets of `[paywall]`; each may come from a file of this name in
/// `$CREDENTIALS_DIRECTORY` (docs/configuration.md).
pub const SECRET_KEYS: [&str; 4] = [
    SecretKey::ApiKeyPrivate.name(),
    SecretKey::ApiClientPrivate.name(),
    SecretKey::ApiKeyPublic.name(),
    SecretKey::ApiClientPublic.name(),
];

const DEFAULT_STATE_DIRECTORY: &str = "/var/lib/pos-agent";

/// The control socket when `[control] socket` is not set, and where operators' commands look
/// for the daemon when neither `--socket` nor `POS_AGENT_SOCKET` says otherwise
/// (docs/operations.md (Operator commands)).
pub const DEFAULT_SOCKET: &str = "/run/pos-agent/control.sock";

impl PaywallConfig {
    /// One of the four API keys.
    pub fn secret(&self, key: SecretKey) -> Option<&SecretString> {
        match key {
            SecretKey::ApiKeyPrivate => self.api_key_private.as_ref(),
            SecretKey::ApiClientPrivate => self.api_client_private.as_ref(),
            SecretKey::ApiKeyPublic => self.api_key_public.as_ref(),
            SecretKey::ApiClientPublic => self.api_client_public.as_ref(),
        }
    }

    pub(super) fn secret_mut(&mut self, key: SecretKey) -> &mut Option<SecretString> {
        match key {
            SecretKey::ApiKeyPrivate => &mut self.api_key_private,
            SecretKey::ApiClientPrivate => &mut self.api_client_private,
            SecretKey::ApiKeyPublic => &mut self.api_key_public,
            SecretKey::ApiClientPublic => &mut self.api_client_public,
        }
    }
}

impl ConfigFile {
    /// The state directory: `[state].directory`, else `$STATE_DIRECTORY` (its first path when
    /// systemd lists several), else `/var/lib/pos-agent`.
    pub fn state_directory(&self, env: &EnvSnapshot) -> PathBuf {
        if let Some(directory) = &self.state.directory {
            return directory.clone();
        }
        env.get("STATE_DIRECTORY")
            .and_then(|dirs| dirs.split(':').find(|d| !d.is_empty()))
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from(DEFAULT_STATE_DIRECTORY))
    }

    /// The control socket: `[control].socket`, else `$RUNTIME_DIRECTORY/control.sock` (first
    /// path), else `/run/pos-agent/control.sock`.
    pub fn control_socket(&self, env: &EnvSnapshot) -> PathBuf {
        if let Some(socket) = &self.control.socket {
            return socket.clone();
        }
        env.get("RUNTIME_DIRECTORY")
            .and_then(|dirs| dirs.split(':').find(|d| !d.is_empty()))
            .map(|dir| Path::new(dir).join("control.sock"))
            .unwrap_or_else(|| PathBuf::from(DEFAULT_SOCKET))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use secrecy::ExposeSecret;

    #[test]
    fn each_secret_key_reads_and_writes_its_own_field_only() {
        for key in SecretKey::ALL {
            let mut paywall: PaywallConfig =
                serde_json::from_value(serde_json::json!({ "physical_api_url": "https://x" }))
                    .unwrap();
            *paywall.secret_mut(key) = Some(SecretString::from(key.name()));
            for other in SecretKey::ALL {
                let read = paywall.secret(other).map(|s| s.expose_secret().to_owned());
                let expected = (other == key).then(|| key.name().to_owned());
                assert_eq!(read, expected, "wrote {key:?}, read {other:?}");
            }
        }
    }

    #[test]
    fn the_secret_names_are_the_four_distinct_keys_of_paywall() {
        assert_eq!(SecretKey::ALL.map(SecretKey::name), SECRET_KEYS);
        let mut names = SECRET_KEYS.to_vec();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), SecretKey::ALL.len());
    }
}

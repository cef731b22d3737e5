//! The configuration (docs/configuration.md): the file's schema (one struct per TOML
//! section, strict, with the spec's defaults), loading it with the `config` crate together with
//! `POS_AGENT__SECTION__KEY` environment overrides and systemd credentials, validating it, and
//! rendering the effective configuration for `check-config` with every secret redacted.
//! The API client, the serial port and the agent take their settings straight from these types.
//! `docs/configuration.md` is the operator's reference.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;

/// The whole configuration file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Where the values came from (file, environment, credentials); filled by [`load`].
    #[serde(skip)]
    pub provenance: Provenance,
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

/// The spec's defaults, named so serde and the `Default` impls share them.
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
}

// ---------------------------------------------------------------------------------------------
// Loading (docs/configuration.md)
// ---------------------------------------------------------------------------------------------

/// Where the daemon looks for its configuration file when neither `--config` nor
/// [`PATH_ENV`] says otherwise (docs/operations.md (Operator commands)).
pub const DEFAULT_PATH: &str = "/etc/pos-agent/agent.toml";
/// The environment variable naming the configuration file (docs/operations.md (Operator commands)).
pub const PATH_ENV: &str = "POS_AGENT_CONFIG";
/// Environment overrides are `POS_AGENT__SECTION__KEY` (docs/configuration.md).
pub const ENV_PREFIX: &str = "POS_AGENT";
/// Separates the prefix, the section and the key of an environment override.
pub const ENV_SEPARATOR: &str = "__";
/// The secrets of `[paywall]`; each may come from a file of this name in
/// `$CREDENTIALS_DIRECTORY` (docs/configuration.md).
pub const SECRET_KEYS: [&str; 4] = [
    "api_key_private",
    "api_client_private",
    "api_key_public",
    "api_client_public",
];
/// The credential holding the provider's service parameters for `[connection.establish]`: a
/// TOML table of strings (`Password = "..."`), each name winning over the same name in the file.
pub const SERVICE_PARAMETERS_CREDENTIAL: &str = "service_parameters";
/// Where systemd looks up a credential the unit names without a path
/// (`LoadCredential=ID:pos-agent.ID`), in this order; the encrypted ones
/// (`LoadCredentialEncrypted=`) are the same directories with `.encrypted` appended.
pub const CREDENTIAL_STORES: [&str; 3] = ["/etc/credstore", "/run/credstore", "/usr/lib/credstore"];
/// The file name prefix the shipped unit gives its credentials in the stores.
pub const CREDENTIAL_STORE_PREFIX: &str = "pos-agent.";
/// Replaces [`CREDENTIAL_STORES`] for `check-config` (colon-separated directories): for tests
/// and terminals whose drop-in points elsewhere.
pub const CREDENTIAL_STORES_ENV: &str = "POS_AGENT_CREDENTIAL_STORES";
/// What `check-config` prints in place of a secret value.
pub const REDACTED: &str = "<redacted>";

const DEFAULT_STATE_DIRECTORY: &str = "/var/lib/pos-agent";
const DEFAULT_CONTROL_SOCKET: &str = "/run/pos-agent/control.sock";
/// `sun_path` holds 108 bytes including the terminating NUL.
const MAX_SOCKET_PATH_BYTES: usize = 107;
const MAX_TAG_CODE_CHARS: usize = 25;

/// The process environment as the loader sees it, captured once so that loading is a pure
/// function of (file, environment) and tests need not touch the real environment.
#[derive(Clone, Default)]
pub struct EnvSnapshot {
    vars: BTreeMap<String, String>,
    /// Override variables whose value is not UTF-8 (their value is never kept or shown).
    non_unicode_overrides: Vec<String>,
}

impl fmt::Debug for EnvSnapshot {
    /// Names only: override values can be secrets.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EnvSnapshot")
            .field("names", &self.vars.keys().collect::<Vec<_>>())
            .finish()
    }
}

impl EnvSnapshot {
    /// The environment of this process.
    pub fn capture() -> Self {
        let mut snapshot = Self::default();
        for (name, value) in std::env::vars_os() {
            let Ok(name) = name.into_string() else {
                continue;
            };
            match value.into_string() {
                Ok(value) => {
                    snapshot.vars.insert(name, value);
                }
                Err(_) if override_key(&name).is_some() => {
                    snapshot.non_unicode_overrides.push(name);
                }
                Err(_) => {}
            }
        }
        snapshot
    }

    /// An environment made of exactly these variables (tests, embedding).
    pub fn from_vars<I, K, V>(vars: I) -> Self
    where
        I: IntoIterator<Item = (K, V)>,
        K: Into<String>,
        V: Into<String>,
    {
        Self {
            vars: vars
                .into_iter()
                .map(|(k, v)| (k.into(), v.into()))
                .collect(),
            non_unicode_overrides: Vec::new(),
        }
    }

    /// The value of one variable.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.vars.get(name).map(String::as_str)
    }

    /// The non-empty override variables: dotted key (`serial.device`) → variable name.
    fn overrides(&self) -> BTreeMap<String, String> {
        self.vars
            .iter()
            .filter(|(_, value)| !value.is_empty())
            .filter_map(|(name, _)| override_key(name).map(|key| (key, name.clone())))
            .collect()
    }
}

/// `POS_AGENT__SERIAL__DEVICE` → `serial.device`, as the `config` crate maps it (lower case).
fn override_key(name: &str) -> Option<String> {
    let prefix = format!("{ENV_PREFIX}{ENV_SEPARATOR}").to_lowercase();
    let lower = name.to_lowercase();
    let rest = lower.strip_prefix(&prefix)?;
    if rest.is_empty() {
        return None;
    }
    Some(rest.replace(ENV_SEPARATOR, "."))
}

/// The parameter name, with its case, of a `connection.establish.service_parameters.<name>`
/// override.
fn service_parameter_name<'a>(key: &str, variable: &'a str) -> Option<&'a str> {
    key.strip_prefix("connection.establish.service_parameters.")?;
    let prefix = format!(
        "{ENV_PREFIX}{ENV_SEPARATOR}CONNECTION{ENV_SEPARATOR}ESTABLISH{ENV_SEPARATOR}\
         SERVICE_PARAMETERS{ENV_SEPARATOR}"
    );
    variable.get(prefix.len()..).filter(|name| !name.is_empty())
}

/// Where a value in the effective configuration came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// The configuration file.
    File,
    /// An environment override (the variable's name).
    Environment(String),
    /// A systemd credential (the credential file's path).
    Credentials(PathBuf),
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Source::File => write!(f, "the configuration file"),
            Source::Environment(name) => write!(f, "environment variable {name}"),
            Source::Credentials(path) => write!(f, "credential file {}", path.display()),
        }
    }
}

/// Where the effective configuration came from, for `check-config` and error messages.
#[derive(Debug, Clone, Default)]
pub struct Provenance {
    /// The configuration file.
    pub file: PathBuf,
    /// Keys an environment variable overrode: dotted key → variable name.
    pub env_overrides: BTreeMap<String, String>,
    /// Where each API key that is set came from, by its name in [`SECRET_KEYS`].
    pub secrets: BTreeMap<&'static str, Source>,
    /// The credential the service parameters came from, when one did.
    pub service_parameters: Option<Source>,
}

impl Provenance {
    /// Where the value of a dotted key came from.
    pub fn source_of(&self, key: &str) -> Source {
        if let Some(name) = key.strip_prefix("paywall.") {
            if let Some(source) = self.secrets.get(name) {
                return source.clone();
            }
        }
        // An override of `a.b` also explains problems reported at `a.b.c` or at `a`.
        self.env_overrides
            .iter()
            .find(|(overridden, _)| {
                *overridden == key
                    || key.starts_with(&format!("{overridden}."))
                    || overridden.starts_with(&format!("{key}."))
            })
            .map(|(_, name)| Source::Environment(name.clone()))
            .unwrap_or(Source::File)
    }
}

/// What kind of configuration problem was found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProblemKind {
    /// The file is missing or cannot be read.
    Unreadable,
    /// The file is not valid TOML.
    Syntax,
    /// A key (or section) the schema does not know.
    UnknownKey,
    /// A required key (or section) is absent.
    MissingKey,
    /// A value of the wrong type, out of range or breaking a rule.
    Invalid,
    /// A systemd credential file that cannot be used.
    Credential,
}

/// One problem with the configuration, naming the key it is about.
#[derive(Debug, Clone)]
pub struct Problem {
    pub kind: ProblemKind,
    /// Dotted key (`serial.parity`); `None` for problems of the whole file.
    pub key: Option<String>,
    /// Where the offending value came from when not the file itself.
    pub source: Option<Source>,
    /// What is wrong; never contains a secret value.
    pub message: String,
}

impl Problem {
    fn new(kind: ProblemKind, key: Option<&str>, message: impl Into<String>) -> Self {
        Self {
            kind,
            key: key.map(str::to_owned),
            source: None,
            message: message.into(),
        }
    }

    fn invalid(key: &str, message: impl Into<String>) -> Self {
        Self::new(ProblemKind::Invalid, Some(key), message)
    }
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(key) = &self.key {
            write!(f, "`{key}`")?;
            match &self.source {
                None | Some(Source::File) => {}
                Some(source) => write!(f, " (from {source})")?,
            }
            write!(f, ": ")?;
        }
        write!(f, "{}", self.message)
    }
}

/// The configuration cannot be used. Names the file and every problem's key; never contains a
/// secret value. The command line exits with [`ConfigError::EXIT_CODE`].
#[derive(Debug, Clone)]
pub struct ConfigError {
    pub file: PathBuf,
    pub problems: Vec<Problem>,
}

impl ConfigError {
    /// `EX_CONFIG`, docs/operations.md (Operator commands).
    pub const EXIT_CODE: u8 = 78;

    fn one(file: &Path, problem: Problem) -> Self {
        Self {
            file: file.to_owned(),
            problems: vec![problem],
        }
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.problems.as_slice() {
            [one] => write!(f, "configuration error in {}: {one}", self.file.display()),
            many => {
                write!(
                    f,
                    "{} configuration errors in {}:",
                    many.len(),
                    self.file.display()
                )?;
                for problem in many {
                    write!(f, "\n  - {problem}")?;
                }
                Ok(())
            }
        }
    }
}

impl std::error::Error for ConfigError {}

/// Loads, completes and validates the configuration at `path` with the process environment.
pub fn load(path: &Path) -> Result<Config, ConfigError> {
    load_with(path, &EnvSnapshot::capture())
}

/// Loads the configuration: the TOML file, then `POS_AGENT__SECTION__KEY` overrides from
/// `env`, then the API keys found in `$CREDENTIALS_DIRECTORY`; then validates it (docs/configuration.md).
pub fn load_with(path: &Path, env: &EnvSnapshot) -> Result<Config, ConfigError> {
    load_from(path, env, Credentials::of_service(env))
}

/// Loads the configuration the way `run` sees it under the unit: as [`load_with`], except that
/// when run as root without `$CREDENTIALS_DIRECTORY` (an operator on the terminal), the
/// credentials come from the stores systemd would read them from for the unit.
pub fn load_as_under_unit(path: &Path, env: &EnvSnapshot) -> Result<Config, ConfigError> {
    let credentials = match Credentials::of_service(env) {
        None if nix::unistd::geteuid().is_root() => Some(Credentials::stores(env)),
        other => other,
    };
    load_from(path, env, credentials)
}

fn load_from(
    path: &Path,
    env: &EnvSnapshot,
    credentials: Option<Credentials>,
) -> Result<Config, ConfigError> {
    let text = read_config_file(path).map_err(|p| ConfigError::one(path, p))?;
    let overrides = env.overrides();
    let mut provenance = Provenance {
        file: path.to_owned(),
        env_overrides: overrides.clone(),
        secrets: BTreeMap::new(),
        service_parameters: None,
    };
    if !env.non_unicode_overrides.is_empty() {
        let problems = env
            .non_unicode_overrides
            .iter()
            .map(|name| {
                let mut problem = Problem::new(
                    ProblemKind::Invalid,
                    override_key(name).as_deref(),
                    "the value is not valid UTF-8",
                );
                problem.source = Some(Source::Environment(name.clone()));
                problem
            })
            .collect();
        return Err(ConfigError {
            file: path.to_owned(),
            problems,
        });
    }

    // Provider parameter names are case-sensitive, and the `config` crate lowercases the keys
    // it takes from the environment: those overrides are applied after deserialising.
    let mut env_vars = config::Map::new();
    let mut parameter_overrides = Vec::new();
    for (key, name) in &overrides {
        let Some(value) = env.get(name) else { continue };
        match service_parameter_name(key, name) {
            Some(parameter) => parameter_overrides.push((key, name, parameter, value)),
            None => {
                env_vars.insert(name.clone(), value.to_owned());
            }
        }
    }
    let built = config::Config::builder()
        .add_source(config::File::from_str(&text, config::FileFormat::Toml))
        .add_source(
            config::Environment::with_prefix(ENV_PREFIX)
                .prefix_separator(ENV_SEPARATOR)
                .separator(ENV_SEPARATOR)
                .ignore_empty(true)
                .source(Some(env_vars)),
        )
        .build()
        .map_err(|e| ConfigError::one(path, problem_from_config_error(e, &provenance)))?;
    let mut config: Config = built
        .try_deserialize()
        .map_err(|e| ConfigError::one(path, problem_from_config_error(e, &provenance)))?;

    let mut problems = Vec::new();
    for (key, name, parameter, value) in parameter_overrides {
        match config.connection.establish.as_mut() {
            Some(establish) => {
                establish
                    .service_parameters
                    .insert(parameter.to_owned(), SecretString::from(value.to_owned()));
            }
            None => {
                let mut problem = Problem::invalid(
                    key,
                    "a service parameter is given but [connection.establish] is not configured",
                );
                problem.source = Some(Source::Environment(name.clone()));
                problems.push(problem);
            }
        }
    }
    for name in SECRET_KEYS {
        if config.paywall.secret(name).is_some() {
            let source = match overrides.get(&format!("paywall.{name}")) {
                Some(var) => Source::Environment(var.clone()),
                None => Source::File,
            };
            provenance.secrets.insert(name, source);
        }
    }
    if let Some(credentials) = &credentials {
        for name in SECRET_KEYS {
            match credentials.read(name) {
                Ok(None) => {}
                Ok(Some((secret, file))) => {
                    *config.paywall.secret_mut(name) = Some(secret);
                    provenance.secrets.insert(name, Source::Credentials(file));
                }
                Err((message, file)) => {
                    let mut problem = Problem::new(
                        ProblemKind::Credential,
                        Some(&format!("paywall.{name}")),
                        message,
                    );
                    problem.source = Some(Source::Credentials(file));
                    problems.push(problem);
                }
            }
        }
        let key = "connection.establish.service_parameters";
        match credentials.read(SERVICE_PARAMETERS_CREDENTIAL) {
            Ok(None) => {}
            Ok(Some((table, file))) => {
                let problem = |message: String| {
                    let mut problem = Problem::new(ProblemKind::Credential, Some(key), message);
                    problem.source = Some(Source::Credentials(file.clone()));
                    problem
                };
                match (
                    parse_service_parameters(table.expose_secret()),
                    config.connection.establish.as_mut(),
                ) {
                    (Err(message), _) => problems.push(problem(message)),
                    (Ok(_), None) => problems.push(problem(
                        "service parameters are given but [connection.establish] is not configured"
                            .into(),
                    )),
                    (Ok(parameters), Some(establish)) => {
                        establish.service_parameters.extend(parameters);
                        provenance.service_parameters = Some(Source::Credentials(file));
                    }
                }
            }
            Err((message, file)) => {
                let mut problem = Problem::new(ProblemKind::Credential, Some(key), message);
                problem.source = Some(Source::Credentials(file));
                problems.push(problem);
            }
        }
    }
    config.provenance = provenance;
    if problems.is_empty() {
        problems = config.problems();
        for problem in &mut problems {
            if let Some(key) = &problem.key {
                problem.source = Some(config.provenance.source_of(key));
            }
        }
    }
    if problems.is_empty() {
        Ok(config)
    } else {
        Err(ConfigError {
            file: path.to_owned(),
            problems,
        })
    }
}

fn read_config_file(path: &Path) -> Result<String, Problem> {
    let bytes = std::fs::read(path).map_err(|e| {
        let message = match e.kind() {
            std::io::ErrorKind::NotFound => "the file does not exist".to_owned(),
            _ => format!("the file cannot be read: {e}"),
        };
        Problem::new(ProblemKind::Unreadable, None, message)
    })?;
    String::from_utf8(bytes).map_err(|e| {
        Problem::new(
            ProblemKind::Syntax,
            None,
            format!(
                "the file is not UTF-8 text (invalid byte at offset {})",
                e.utf8_error().valid_up_to()
            ),
        )
    })
}

/// Where the credentials come from: the service's `$CREDENTIALS_DIRECTORY`, or (for
/// `check-config` run as root on the terminal) the stores systemd reads them from.
enum Credentials {
    Directory(PathBuf),
    Stores(Vec<PathBuf>),
}

impl Credentials {
    fn of_service(env: &EnvSnapshot) -> Option<Self> {
        env.get("CREDENTIALS_DIRECTORY")
            .filter(|d| !d.is_empty())
            .map(|d| Credentials::Directory(PathBuf::from(d)))
    }

    fn stores(env: &EnvSnapshot) -> Self {
        let stores = match env.get(CREDENTIAL_STORES_ENV).filter(|s| !s.is_empty()) {
            Some(list) => list
                .split(':')
                .filter(|d| !d.is_empty())
                .map(PathBuf::from)
                .collect(),
            None => CREDENTIAL_STORES.iter().map(PathBuf::from).collect(),
        };
        Credentials::Stores(stores)
    }

    /// The credential `id` and the file it came from; `Ok(None)` when there is none. Errors
    /// name the file, never the value.
    #[allow(clippy::type_complexity)]
    fn read(&self, id: &str) -> Result<Option<(SecretString, PathBuf)>, (String, PathBuf)> {
        match self {
            Credentials::Directory(directory) => {
                let file = directory.join(id);
                match read_credential(&file) {
                    Ok(found) => Ok(found.map(|secret| (secret, file))),
                    Err(message) => Err((message, file)),
                }
            }
            // As systemd does for `LoadCredential=ID:pos-agent.ID`: the first store holding the
            // file; then, as for `LoadCredentialEncrypted=`, the encrypted stores.
            Credentials::Stores(stores) => {
                let name = format!("{CREDENTIAL_STORE_PREFIX}{id}");
                for store in stores {
                    let file = store.join(&name);
                    match read_credential(&file) {
                        Ok(None) => {}
                        Ok(Some(secret)) => return Ok(Some((secret, file))),
                        Err(message) => return Err((message, file)),
                    }
                }
                for store in stores {
                    let mut encrypted = store.clone().into_os_string();
                    encrypted.push(".encrypted");
                    let file = PathBuf::from(encrypted).join(&name);
                    if file.exists() {
                        return match decrypt_credential(id, &file) {
                            Ok(secret) => Ok(Some((secret, file))),
                            Err(message) => Err((message, file)),
                        };
                    }
                }
                Ok(None)
            }
        }
    }
}

/// Decrypts an encrypted credential as systemd would for the unit (`systemd-creds decrypt`,
/// which checks the credential's name and needs the TPM or the host key, hence root).
fn decrypt_credential(id: &str, file: &Path) -> Result<SecretString, String> {
    let output = std::process::Command::new("systemd-creds")
        .arg("decrypt")
        .arg(format!("--name={id}"))
        .arg(file)
        .arg("-")
        .stdin(std::process::Stdio::null())
        .output()
        .map_err(|e| format!("systemd-creds cannot be run to decrypt it: {e}"))?;
    if !output.status.success() {
        let why = String::from_utf8_lossy(&output.stderr);
        return Err(format!(
            "systemd-creds cannot decrypt it: {}",
            why.trim().lines().last().unwrap_or("no reason given")
        ));
    }
    let mut text = String::from_utf8(output.stdout)
        .map_err(|_| "the decrypted credential is not UTF-8 text".to_owned())?;
    if text.ends_with('\n') {
        text.pop();
    }
    Ok(SecretString::from(text))
}

/// The `service_parameters` credential: a TOML table of string values. Errors never quote a
/// value.
fn parse_service_parameters(text: &str) -> Result<BTreeMap<String, SecretString>, String> {
    let parsed = config::Config::builder()
        .add_source(config::File::from_str(text, config::FileFormat::Toml))
        .build()
        .map_err(|_| "the credential is not a TOML table of `Name = \"value\"` lines".to_owned())?;
    let table: BTreeMap<String, String> = parsed
        .try_deserialize()
        .map_err(|_| "every service parameter in the credential must be a string".to_owned())?;
    Ok(table
        .into_iter()
        .map(|(name, value)| (name, SecretString::from(value)))
        .collect())
}

/// Reads one systemd credential: `Ok(None)` when the file is absent. One trailing newline
/// (as `echo` or an editor leaves it) is not part of the secret.
fn read_credential(file: &Path) -> Result<Option<SecretString>, String> {
    let bytes = match std::fs::read(file) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(format!("the credential file cannot be read: {e}")),
    };
    let mut text =
        String::from_utf8(bytes).map_err(|_| "the credential file is not UTF-8 text".to_owned())?;
    if text.ends_with('\n') {
        text.pop();
        if text.ends_with('\r') {
            text.pop();
        }
    }
    Ok(Some(SecretString::from(text)))
}

/// Keys whose values are secrets, or sections holding secrets: errors about them never quote
/// the value.
fn is_secret_key(key: &str) -> bool {
    key == "paywall"
        || key == "connection"
        || key == "connection.establish"
        || key.starts_with("connection.establish.service_parameters")
        || SECRET_KEYS.iter().any(|name| {
            key.strip_prefix("paywall.")
                .is_some_and(|rest| rest == *name || rest.starts_with(&format!("{name}.")))
        })
}

/// Turns the `config` crate's error into a problem naming the key (and the file through
/// [`ConfigError`]), without the TOML parser's source excerpt, which may quote a secret.
fn problem_from_config_error(error: config::ConfigError, provenance: &Provenance) -> Problem {
    let mut problem = match error {
        config::ConfigError::FileParse { cause, .. } => {
            let text = cause.to_string();
            // toml's report: a header line, an excerpt of the file (lines with `|`), a message.
            let summary: Vec<&str> = text
                .lines()
                .map(str::trim)
                .filter(|line| !line.is_empty() && !line.contains('|'))
                .collect();
            Problem::new(
                ProblemKind::Syntax,
                None,
                format!("invalid TOML: {}", summary.join(": ")),
            )
        }
        config::ConfigError::NotFound(key) => {
            if key.contains('.') {
                Problem::new(
                    ProblemKind::MissingKey,
                    Some(&key),
                    "this required key is missing",
                )
            } else {
                Problem::new(
                    ProblemKind::MissingKey,
                    Some(&key),
                    format!("the required section [{key}] is missing"),
                )
            }
        }
        config::ConfigError::Type {
            unexpected,
            expected,
            key,
            ..
        } => {
            let key = key.unwrap_or_default();
            let message = if is_secret_key(&key) {
                format!("expected {expected}")
            } else {
                format!("expected {expected}, found {unexpected}")
            };
            Problem::new(
                ProblemKind::Invalid,
                Some(key.as_str()).filter(|k| !k.is_empty()),
                message,
            )
        }
        config::ConfigError::At { error, key, .. } => {
            let key = key.unwrap_or_default();
            let mut inner = problem_from_config_error(*error, provenance);
            if inner.kind == ProblemKind::UnknownKey {
                // Found inside the table `key`.
                let section = key.clone();
                let unknown = inner.key.take().unwrap_or_default();
                let full = format!("{section}.{unknown}");
                inner.message = inner
                    .message
                    .replace("at the top level", &format!("in section [{section}]"));
                inner.key = Some(full);
                inner
            } else if inner.key.is_none() {
                if is_secret_key(&key) {
                    inner.message = "the value has the wrong type or form".to_owned();
                } else if inner.message.contains("does not have variant constructor") {
                    inner.message = match key.as_str() {
                        "serial.parity" => "must be one of none, odd, even",
                        "serial.flow_control" => "must be one of none, software, hardware",
                        _ => "is not one of the allowed values",
                    }
                    .to_owned();
                } else if inner.message.ends_with("expected a duration") {
                    inner
                        .message
                        .push_str(" such as \"1500ms\", \"30s\" or \"10m\"");
                }
                inner.key = Some(key).filter(|k| !k.is_empty());
                inner
            } else {
                inner
            }
        }
        config::ConfigError::Message(message) => {
            if let Some(rest) = message.strip_prefix("unknown field `") {
                let (name, expected) = rest.split_once("`, ").unwrap_or((rest, ""));
                let name = name.trim_end_matches('`');
                let known = expected
                    .trim_start_matches("expected one of ")
                    .trim_start_matches("expected ")
                    .replace('`', "");
                let known = if known.is_empty() || known.starts_with("there are no") {
                    String::new()
                } else {
                    format!(" (known keys: {known})")
                };
                Problem::new(
                    ProblemKind::UnknownKey,
                    Some(name),
                    format!("unknown key `{name}` at the top level{known}"),
                )
            } else {
                Problem::new(ProblemKind::Invalid, None, message)
            }
        }
        other => Problem::new(ProblemKind::Invalid, None, other.to_string()),
    };
    if let Some(key) = &problem.key {
        problem.source = Some(provenance.source_of(key));
    }
    problem
}

impl PaywallConfig {
    /// One of the four API keys by its name in [`SECRET_KEYS`].
    pub fn secret(&self, name: &str) -> Option<&SecretString> {
        match name {
            "api_key_private" => self.api_key_private.as_ref(),
            "api_client_private" => self.api_client_private.as_ref(),
            "api_key_public" => self.api_key_public.as_ref(),
            "api_client_public" => self.api_client_public.as_ref(),
            _ => None,
        }
    }

    fn secret_mut(&mut self, name: &str) -> &mut Option<SecretString> {
        match name {
            "api_key_private" => &mut self.api_key_private,
            "api_client_private" => &mut self.api_client_private,
            "api_key_public" => &mut self.api_key_public,
            _ => &mut self.api_client_public,
        }
    }
}

impl Config {
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
            .unwrap_or_else(|| PathBuf::from(DEFAULT_CONTROL_SOCKET))
    }

    /// Every rule the schema's types cannot express (docs/configuration.md; docs/configuration.md).
    fn problems(&self) -> Vec<Problem> {
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

// ---------------------------------------------------------------------------------------------
// check-config (docs/operations.md (Operator commands))
// ---------------------------------------------------------------------------------------------

/// `--config PATH`, shared by the commands that read the configuration.
#[derive(Debug, Clone, clap::Args)]
pub struct ConfigArgs {
    /// The configuration file.
    #[arg(long, value_name = "PATH", env = PATH_ENV, default_value = DEFAULT_PATH)]
    pub config: PathBuf,
}

/// `pos-agent check-config`: prints the effective configuration (secrets redacted) or fails
/// with the [`ConfigError`] (the command line exits 78).
pub fn check_config_command(args: &ConfigArgs) -> Result<(), ConfigError> {
    let env = EnvSnapshot::capture();
    let config = load_as_under_unit(&args.config, &env)?;
    let problems = start_problems(&config, &env);
    if !problems.is_empty() {
        return Err(ConfigError {
            file: args.config.clone(),
            problems,
        });
    }
    use std::io::Write as _;
    // A closed stdout (`| head`) is not a configuration error.
    let _ = std::io::stdout().write_all(render_effective(&config).as_bytes());
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
    for name in SECRET_KEYS {
        match (paywall.secret(name), provenance.secrets.get(name)) {
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
    out.text
}

/// A TOML basic string (JSON's escapes are a subset of TOML's).
fn quote(text: &str) -> String {
    serde_json::to_string(text).unwrap_or_else(|_| "\"\"".to_owned())
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

#[cfg(test)]
mod tests {
    use super::*;

    const VALID: &str = r#"
[paywall]
physical_api_url = "https://physical.example"
api_key_private = "file-key-private"
api_client_private = "file-client-private"

[terminal]
tag_code = "shop_1"
"#;

    fn load_text(text: &str, env: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("agent.toml");
        std::fs::write(&path, text).unwrap();
        load_with(&path, &EnvSnapshot::from_vars(env.iter().copied()))
    }

    /// `VALID` with `line` added under `[section]`.
    fn with(section: &str, line: &str) -> String {
        let header = format!("[{section}]\n");
        if VALID.contains(&header) {
            VALID.replace(&header, &format!("{header}{line}\n"))
        } else {
            format!("{VALID}\n{header}{line}\n")
        }
    }

    fn only_problem(result: Result<Config, ConfigError>) -> Problem {
        let error = result.expect_err("the configuration should be refused");
        assert_eq!(error.problems.len(), 1, "{error}");
        error.problems[0].clone()
    }

    fn assert_invalid(text: &str, key: &str) {
        let problem = only_problem(load_text(text, &[]));
        assert_eq!(problem.key.as_deref(), Some(key), "{problem}");
    }

    #[test]
    fn minimal_file_gets_the_spec_defaults() {
        let config = load_text(VALID, &[]).unwrap();
        assert_eq!(config.paywall.request_timeout, Duration::from_secs(10));
        assert_eq!(config.terminal.payment_timeout, Duration::from_secs(600));
        assert_eq!(config.terminal.sale_reply_deadline, Duration::from_secs(20));
        assert_eq!(config.serial.baud_rate, 115_200);
        assert_eq!(config.shutdown.concurrency, 8);
        assert_eq!(config.log.level, "info");
        assert_eq!(config.provenance.secrets["api_key_private"], Source::File);
    }

    #[test]
    fn environment_overrides_parse_numbers_bools_and_nested_keys() {
        let text = with(
            "connection.establish",
            "name = \"n\"\nbrand_id = 10\nprovider_id = 10\nregion_id = 1\nend_of_day_id = 10",
        );
        let config = load_text(
            &text,
            &[
                ("POS_AGENT__SERIAL__DEVICE", "/dev/ttyUSB0"),
                ("POS_AGENT__SHUTDOWN__CONCURRENCY", "4"),
                ("POS_AGENT__PAYWALL__ALLOW_INSECURE_HTTP", "true"),
                ("POS_AGENT__PAYWALL__PHYSICAL_API_URL", "http://127.0.0.1:9"),
                ("POS_AGENT__CONNECTION__ESTABLISH__BRAND_ID", "42"),
                ("POS_AGENT__TERMINAL__TAG_CODE", "007"),
                ("POS_AGENT_CONFIG", "/not/an/override"),
            ],
        )
        .unwrap();
        assert_eq!(config.serial.device, PathBuf::from("/dev/ttyUSB0"));
        assert_eq!(config.shutdown.concurrency, 4);
        assert!(config.paywall.allow_insecure_http);
        assert_eq!(config.connection.establish.unwrap().brand_id, 42);
        // Strings that look like numbers stay strings, leading zeros included.
        assert_eq!(config.terminal.tag_code.as_deref(), Some("007"));
    }

    #[test]
    fn service_parameter_override_keeps_the_case_of_its_name() {
        let text = with(
            "connection.establish",
            "name = \"n\"\nbrand_id = 10\nprovider_id = 10\nregion_id = 1\nend_of_day_id = 10",
        );
        let variable = "POS_AGENT__CONNECTION__ESTABLISH__SERVICE_PARAMETERS__Reporting_ApiKey";
        let config = load_text(&text, &[(variable, "param")]).unwrap();
        let parameters = config.connection.establish.unwrap().service_parameters;
        assert_eq!(parameters["Reporting_ApiKey"].expose_secret(), "param");
        let nested = "POS_AGENT__CONNECTION__ESTABLISH__SERVICE_PARAMETERS__Api__Key";
        let config = load_text(&text, &[(nested, "param")]).unwrap();
        assert!(config
            .connection
            .establish
            .unwrap()
            .service_parameters
            .contains_key("Api__Key"));
        let problem = only_problem(load_text(VALID, &[(variable, "param")]));
        assert!(problem.to_string().contains(variable), "{problem}");
    }

    #[test]
    fn empty_environment_override_is_ignored() {
        let config = load_text(VALID, &[("POS_AGENT__SERIAL__DEVICE", "")]).unwrap();
        assert_eq!(config.serial.device, defaults::device());
    }

    #[test]
    fn secrets_from_the_environment_are_recorded_as_such() {
        let config =
            load_text(VALID, &[("POS_AGENT__PAYWALL__API_KEY_PRIVATE", "env-key")]).unwrap();
        assert_eq!(
            config.paywall.api_key_private.unwrap().expose_secret(),
            "env-key"
        );
        assert_eq!(
            config.provenance.secrets["api_key_private"],
            Source::Environment("POS_AGENT__PAYWALL__API_KEY_PRIVATE".into())
        );
    }

    #[test]
    fn credentials_directory_wins_and_loses_one_trailing_newline() {
        let credentials = tempfile::tempdir().unwrap();
        std::fs::write(credentials.path().join("api_key_private"), "cred-key\n").unwrap();
        std::fs::write(credentials.path().join("api_client_public"), "pub-client").unwrap();
        std::fs::write(credentials.path().join("api_key_public"), "pub-key\r\n").unwrap();
        let dir = credentials.path().to_str().unwrap();
        let config = load_text(VALID, &[("CREDENTIALS_DIRECTORY", dir)]).unwrap();
        assert_eq!(
            config.paywall.api_key_private.unwrap().expose_secret(),
            "cred-key"
        );
        assert_eq!(
            config.paywall.api_key_public.unwrap().expose_secret(),
            "pub-key"
        );
        assert_eq!(
            config.paywall.api_client_private.unwrap().expose_secret(),
            "file-client-private"
        );
        assert_eq!(
            config.provenance.secrets["api_key_private"],
            Source::Credentials(credentials.path().join("api_key_private"))
        );
    }

    #[test]
    fn private_keys_may_come_only_from_credentials() {
        let credentials = tempfile::tempdir().unwrap();
        std::fs::write(credentials.path().join("api_key_private"), "k").unwrap();
        std::fs::write(credentials.path().join("api_client_private"), "c").unwrap();
        let text =
            "[paywall]\nphysical_api_url = \"https://p.example\"\n[terminal]\ntag_code = \"t\"\n";
        let dir = credentials.path().to_str().unwrap();
        assert!(load_text(text, &[("CREDENTIALS_DIRECTORY", dir)]).is_ok());
    }

    #[test]
    fn missing_private_key_is_refused() {
        let text = VALID.replace("api_key_private = \"file-key-private\"\n", "");
        assert_invalid(&text, "paywall.api_key_private");
    }

    #[test]
    fn half_a_public_key_pair_is_refused() {
        assert_invalid(
            &with("paywall", "api_key_public = \"k\""),
            "paywall.api_client_public",
        );
    }

    #[test]
    fn secret_with_a_line_break_is_refused_without_quoting_it() {
        let text = with(
            "paywall",
            "api_key_public = \"SECRET\\nX\"\napi_client_public = \"c\"",
        );
        let problem = only_problem(load_text(&text, &[]));
        assert_eq!(problem.key.as_deref(), Some("paywall.api_key_public"));
        assert!(!problem.to_string().contains("SECRET"));
    }

    #[test]
    fn secret_of_the_wrong_type_is_refused_without_quoting_it() {
        let text = VALID.replace("\"file-key-private\"", "[\"SECRET\"]");
        let error = load_text(&text, &[]).unwrap_err();
        assert_eq!(
            error.problems[0].key.as_deref(),
            Some("paywall.api_key_private")
        );
        assert!(!error.to_string().contains("SECRET"));
    }

    #[test]
    fn toml_syntax_error_does_not_quote_the_line() {
        let text = VALID.replace("\"file-key-private\"", "\"SECRET");
        let error = load_text(&text, &[]).unwrap_err();
        assert_eq!(error.problems[0].kind, ProblemKind::Syntax);
        assert!(error.to_string().contains("line 4"), "{error}");
        assert!(!error.to_string().contains("SECRET"), "{error}");
    }

    #[test]
    fn unreadable_credential_names_its_file() {
        let credentials = tempfile::tempdir().unwrap();
        std::fs::create_dir(credentials.path().join("api_key_private")).unwrap();
        let dir = credentials.path().to_str().unwrap();
        let error = load_text(VALID, &[("CREDENTIALS_DIRECTORY", dir)]).unwrap_err();
        assert_eq!(error.problems[0].kind, ProblemKind::Credential);
        assert!(
            error
                .to_string()
                .contains(&format!("{dir}/api_key_private")),
            "{error}"
        );
    }

    #[test]
    fn unknown_key_names_key_and_section() {
        let problem = only_problem(load_text(&with("serial", "baud = 9600"), &[]));
        assert_eq!(problem.kind, ProblemKind::UnknownKey);
        assert_eq!(problem.key.as_deref(), Some("serial.baud"));
        assert!(problem.message.contains("[serial]"), "{problem}");
    }

    #[test]
    fn unknown_nested_key_names_the_nested_section() {
        let text = with(
            "connection.establish",
            "name = \"n\"\nbrand_id = 1\nprovider_id = 1\nregion_id = 1\nend_of_day_id = 1\nbrand = 2",
        );
        let problem = only_problem(load_text(&text, &[]));
        assert_eq!(problem.key.as_deref(), Some("connection.establish.brand"));
    }

    #[test]
    fn unknown_section_is_refused() {
        let problem = only_problem(load_text(&format!("{VALID}\n[seriall]\n"), &[]));
        assert_eq!(problem.kind, ProblemKind::UnknownKey);
        assert_eq!(problem.key.as_deref(), Some("seriall"));
    }

    #[test]
    fn unknown_key_from_the_environment_names_the_variable() {
        let error = load_text(VALID, &[("POS_AGENT__SERIAL__BAUD", "1")]).unwrap_err();
        assert!(
            error.to_string().contains("POS_AGENT__SERIAL__BAUD"),
            "{error}"
        );
    }

    #[test]
    fn missing_required_key_and_section_are_named() {
        let problem = only_problem(load_text(&VALID.replace("physical_api_url", "#"), &[]));
        assert_eq!(problem.kind, ProblemKind::MissingKey);
        assert_eq!(problem.key.as_deref(), Some("paywall.physical_api_url"));
        let problem = only_problem(load_text(
            &VALID.replace("[terminal]\ntag_code = \"shop_1\"", ""),
            &[],
        ));
        assert_eq!(problem.key.as_deref(), Some("terminal"));
    }

    #[test]
    fn terminal_needs_exactly_one_of_id_and_tag_code() {
        let both = with("terminal", "id = \"38e895c3-2d9f-4f2a-9d43-6a1a7b1b2c3d\"");
        assert_invalid(&both, "terminal.id");
        let neither = VALID.replace("tag_code = \"shop_1\"", "");
        assert_invalid(&neither, "terminal.id");
        let by_id = VALID.replace(
            "tag_code = \"shop_1\"",
            "id = \"38e895c3-2d9f-4f2a-9d43-6a1a7b1b2c3d\"",
        );
        assert!(load_text(&by_id, &[]).is_ok());
    }

    #[test]
    fn terminal_id_must_be_a_guid() {
        let text = VALID.replace("tag_code = \"shop_1\"", "id = \"terminal-7\"");
        assert_invalid(&text, "terminal.id");
    }

    #[test]
    fn tag_code_is_at_most_25_characters() {
        let ok = VALID.replace("shop_1", &"ü".repeat(25));
        assert!(load_text(&ok, &[]).is_ok());
        assert_invalid(
            &VALID.replace("shop_1", &"a".repeat(26)),
            "terminal.tag_code",
        );
    }

    #[test]
    fn connection_id_must_be_a_guid() {
        assert_invalid(&with("connection", "id = \"abc\""), "connection.id");
        let ok = with(
            "connection",
            "id = \"38e895c3-2d9f-4f2a-9d43-6a1a7b1b2c3d\"",
        );
        assert!(load_text(&ok, &[]).is_ok());
    }

    #[test]
    fn http_base_address_needs_allow_insecure_http() {
        let http = VALID.replace("https://physical", "http://physical");
        assert_invalid(&http, "paywall.physical_api_url");
        assert!(load_text(
            &with("paywall", "allow_insecure_http = true")
                .replace("https://physical", "http://physical"),
            &[]
        )
        .is_ok());
        assert_invalid(
            &with("paywall", "payment_api_url = \"http://pay.example\""),
            "paywall.payment_api_url",
        );
    }

    #[test]
    fn base_address_must_be_an_http_url_without_credentials() {
        for url in [
            "ftp://x.example",
            "not a url",
            "https://user:pw@x.example",
            "https://x.example/?a=1",
        ] {
            assert_invalid(
                &VALID.replace("https://physical.example", url),
                "paywall.physical_api_url",
            );
        }
    }

    #[test]
    fn callback_url_must_be_an_http_url() {
        assert_invalid(
            &with("terminal", "callback_url = \"callback\""),
            "terminal.callback_url",
        );
    }

    #[test]
    fn serial_line_settings_are_range_checked() {
        assert_invalid(&with("serial", "data_bits = 9"), "serial.data_bits");
        assert_invalid(&with("serial", "data_bits = 4"), "serial.data_bits");
        assert_invalid(&with("serial", "stop_bits = 3"), "serial.stop_bits");
        assert_invalid(&with("serial", "max_sends = 0"), "serial.max_sends");
        assert_invalid(&with("serial", "baud_rate = 0"), "serial.baud_rate");
        assert_invalid(&with("serial", "parity = \"mark\""), "serial.parity");
        assert_invalid(
            &with("serial", "flow_control = \"rts\""),
            "serial.flow_control",
        );
        assert_invalid(&with("serial", "data_bits = \"eight\""), "serial.data_bits");
        assert!(load_text(
            &with("serial", "data_bits = 7\nstop_bits = 2\nparity = \"even\""),
            &[]
        )
        .is_ok());
    }

    #[test]
    fn durations_are_strings_and_must_be_positive() {
        let config = load_text(&with("serial", "ack_timeout = \"1500ms\""), &[]).unwrap();
        assert_eq!(config.serial.ack_timeout, Duration::from_millis(1500));
        assert_invalid(
            &with("serial", "ack_timeout = \"0s\""),
            "serial.ack_timeout",
        );
        assert_invalid(
            &with("serial", "ping_interval = \"soon\""),
            "serial.ping_interval",
        );
        assert_invalid(&with("shutdown", "deadline = \"0ms\""), "shutdown.deadline");
        assert_invalid(
            &with("terminal", "payment_timeout = \"0s\""),
            "terminal.payment_timeout",
        );
        assert_invalid(
            &with("terminal", "sale_reply_deadline = \"0s\""),
            "terminal.sale_reply_deadline",
        );
        assert_invalid(
            &with("terminal", "sale_reply_deadline = \"soon\""),
            "terminal.sale_reply_deadline",
        );
        assert_invalid(
            &with("paywall", "request_timeout = \"0s\""),
            "paywall.request_timeout",
        );
    }

    #[test]
    fn shutdown_concurrency_is_at_least_one() {
        assert_invalid(&with("shutdown", "concurrency = 0"), "shutdown.concurrency");
    }

    #[test]
    fn log_level_must_be_a_tracing_filter() {
        assert_invalid(&with("log", "level = \"pos_agent=loud\""), "log.level");
        assert!(load_text(&with("log", "level = \"warn,pos_agent=debug\""), &[]).is_ok());
    }

    #[test]
    fn paths_must_be_absolute_and_socket_path_short_enough() {
        assert_invalid(&with("state", "directory = \"state\""), "state.directory");
        assert_invalid(&with("control", "socket = \"c.sock\""), "control.socket");
        let long = format!("socket = \"/{}\"", "s".repeat(120));
        assert_invalid(&with("control", &long), "control.socket");
    }

    #[test]
    fn every_problem_is_reported_at_once() {
        let text = with("serial", "data_bits = 9\nstop_bits = 3");
        let error = load_text(&text, &[]).unwrap_err();
        assert_eq!(error.problems.len(), 2);
        let shown = error.to_string();
        assert!(shown.contains("serial.data_bits") && shown.contains("serial.stop_bits"));
    }

    #[test]
    fn error_names_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("agent.toml");
        std::fs::write(&path, with("serial", "data_bits = 9")).unwrap();
        let error = load_with(&path, &EnvSnapshot::default()).unwrap_err();
        assert!(error.to_string().contains(&path.display().to_string()));
        let missing =
            load_with(&dir.path().join("nope.toml"), &EnvSnapshot::default()).unwrap_err();
        assert_eq!(missing.problems[0].kind, ProblemKind::Unreadable);
        assert!(missing.to_string().contains("nope.toml"));
    }

    #[test]
    fn state_directory_and_control_socket_fall_back_to_systemd_then_defaults() {
        let config = load_text(VALID, &[]).unwrap();
        let none = EnvSnapshot::default();
        assert_eq!(
            config.state_directory(&none),
            PathBuf::from("/var/lib/pos-agent")
        );
        assert_eq!(
            config.control_socket(&none),
            PathBuf::from("/run/pos-agent/control.sock")
        );
        let systemd = EnvSnapshot::from_vars([
            ("STATE_DIRECTORY", "/var/lib/a:/var/lib/b"),
            ("RUNTIME_DIRECTORY", "/run/a"),
        ]);
        assert_eq!(
            config.state_directory(&systemd),
            PathBuf::from("/var/lib/a")
        );
        assert_eq!(
            config.control_socket(&systemd),
            PathBuf::from("/run/a/control.sock")
        );
        let text =
            with("state", "directory = \"/srv/s\"") + "\n[control]\nsocket = \"/srv/c.sock\"\n";
        let configured = load_text(&text, &[]).unwrap();
        assert_eq!(
            configured.state_directory(&systemd),
            PathBuf::from("/srv/s")
        );
        assert_eq!(
            configured.control_socket(&systemd),
            PathBuf::from("/srv/c.sock")
        );
    }

    #[test]
    fn rendered_configuration_redacts_secrets_and_parses_back() {
        let text = with(
            "connection.establish",
            "name = \"n\"\nbrand_id = 10\nprovider_id = 10\nregion_id = 1\nend_of_day_id = 10\n\
             service_parameters = { Reporting_ApiKey = \"PARAM-SECRET\" }",
        );
        let config = load_text(&with("serial", "ack_timeout = \"1500ms\""), &[]).unwrap();
        let rendered = render_effective(&config);
        assert!(!rendered.contains("file-key-private"));
        assert!(
            rendered.contains("api_key_private = \"<redacted>\"  # from the configuration file")
        );
        let reparsed = load_text(&rendered, &[]).unwrap();
        assert_eq!(reparsed.serial.ack_timeout, Duration::from_millis(1500));
        assert_eq!(
            render_effective(&reparsed)
                .lines()
                .skip(2)
                .collect::<Vec<_>>(),
            rendered.lines().skip(2).collect::<Vec<_>>()
        );

        let with_parameters = load_text(&text, &[]).unwrap();
        let rendered = render_effective(&with_parameters);
        assert!(!rendered.contains("PARAM-SECRET"));
        assert!(
            rendered.contains("\"Reporting_ApiKey\" = \"<redacted>\""),
            "{rendered}"
        );
    }

    #[test]
    fn debug_output_shows_no_secret() {
        let config = load_text(
            VALID,
            &[("POS_AGENT__PAYWALL__API_CLIENT_PRIVATE", "env-secret")],
        )
        .unwrap();
        let shown = format!("{config:?}");
        assert!(!shown.contains("file-key-private") && !shown.contains("env-secret"));
        let env = EnvSnapshot::from_vars([("POS_AGENT__PAYWALL__API_KEY_PRIVATE", "env-secret")]);
        assert!(!format!("{env:?}").contains("env-secret"));
    }
}

//! The configuration (docs/configuration.md): the file's schema (one struct per TOML
//! section, strict, with the documented defaults), loading it with the `config` crate together with
//! `POS_AGENT__SECTION__KEY` environment overrides and systemd credentials, validating it, and
//! rendering the effective configuration for `check-config` with every secret redacted.
//! The serial port and the agent take their settings straight from these types; the payment
//! API client and the sale's terminal take the values checked once at load (`checked`).
//! `docs/configuration.md` is the operator's reference.
//!
//! `schema` (the file's sections and defaults), `load` (file, environment, provenance),
//! `credentials` (systemd credentials), `proxy` (the proxy the client goes through), `validate` (the rules the types cannot express),
//! `checked` (the typed values), `render` (`check-config`), `reload` (what `SIGHUP` applies), `error` (problems naming their key).

mod checked;
mod credentials;
mod error;
mod load;
mod proxy;
mod reload;
mod render;
mod schema;
#[cfg(test)]
mod tests;
mod validate;

pub use checked::{BaseUrl, KeyPair, PaywallSettings, TagCode, TerminalId, TerminalRef};
pub use credentials::{CREDENTIAL_STORE_PREFIX, SERVICE_PARAMETERS_CREDENTIAL};
pub use error::{ConfigError, Problem, ProblemKind};
pub use load::{load, load_contents_with, load_with, EnvSnapshot, Provenance, Source};
pub use proxy::{ProxySetting, PROXY_CREDENTIAL};
pub use render::render_effective;
pub use schema::{
    defaults, Config, ConfigFile, ConnectionConfig, ControlConfig, EstablishConfig, FlowControl,
    LogConfig, MetricsConfig, Parity, PaywallConfig, SecretKey, SerialConfig, ShutdownConfig,
    StateConfig, TerminalConfig, DEFAULT_SOCKET, SECRET_KEYS,
};
pub use validate::{MAX_CALLBACK_URL_CHARS, MAX_DISPLAY_NAME_CHARS, MAX_ESTABLISH_NAME_CHARS};

pub(crate) use load::{load_as_under_unit, DEFAULT_PATH, PATH_ENV};
pub(crate) use reload::reloaded;
pub(crate) use render::{ConfigArgs, REDACTED};

use credentials::{parse_service_parameters, Credentials};
use error::problem_from_config_error;

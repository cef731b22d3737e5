//! Loading: the TOML file, then `POS_AGENT__SECTION__KEY` environment overrides, then the
//! systemd credentials (docs/configuration.md), and where each value came from.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use secrecy::{ExposeSecret, SecretString};

use super::*;

/// Where the daemon looks for its configuration file when neither `--config` nor
/// [`PATH_ENV`] says otherwise (docs/operations.md (Operator commands)).
pub(crate) const DEFAULT_PATH: &str = "/etc/pos-agent/agent.toml";
/// The environment variable naming the configuration file (docs/operations.md (Operator commands)).
pub(crate) const PATH_ENV: &str = "POS_AGENT_CONFIG";
/// Environment overrides are `POS_AGENT__SECTION__KEY` (docs/configuration.md).
const ENV_PREFIX: &str = "POS_AGENT";
/// Separates the prefix, the section and the key of an environment override.
const ENV_SEPARATOR: &str = "__";

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
pub(crate) fn load_as_under_unit(path: &Path, env: &EnvSnapshot) -> Result<Config, ConfigError> {
    let credentials = match Credentials::of_service(env) {
        None if nix::unistd::geteuid().is_root() => Some(Credentials::stores(env)),
        other => other,
    };
    load_from(path, env, credentials)
}

/// Loads the configuration from the contents of the file at `path`, already in memory (`path`
/// only names the file in errors and provenance): as [`load_with`] otherwise. For fuzzing and
/// embedding, where the file need not exist.
pub fn load_contents_with(
    path: &Path,
    contents: &[u8],
    env: &EnvSnapshot,
) -> Result<Config, ConfigError> {
    let text = config_text(contents.to_vec()).map_err(|p| ConfigError::one(path, p))?;
    load_text(path, &text, env, Credentials::of_service(env))
}

fn load_from(
    path: &Path,
    env: &EnvSnapshot,
    credentials: Option<Credentials>,
) -> Result<Config, ConfigError> {
    let text = read_config_file(path).map_err(|p| ConfigError::one(path, p))?;
    load_text(path, &text, env, credentials)
}

fn load_text(
    path: &Path,
    text: &str,
    env: &EnvSnapshot,
    credentials: Option<Credentials>,
) -> Result<Config, ConfigError> {
    let overrides = env.overrides();
    let mut provenance = Provenance {
        file: path.to_owned(),
        env_overrides: overrides.clone(),
        secrets: BTreeMap::new(),
        service_parameters: None,
    };
    // The `config` crate reads an override's name as a path expression, in which `[N]` indexes
    // an array it grows to N elements: `POS_AGENT__SERIAL__DEVICE[99999999999]` made it
    // allocate without bound (found by fuzzing `config_load`). Names are letters, digits and
    // underscores, as the keys are. Provider service parameters never reach that crate (they
    // are applied below, names as given), so their names are not held to this.
    let malformed_names = overrides.iter().filter(|(key, name)| {
        service_parameter_name(key, name).is_none()
            && !key
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'.')
    });
    let problem_with = |key: Option<&str>, name: &String, message: &str| {
        let mut problem = Problem::new(ProblemKind::Invalid, key, message);
        problem.source = Some(Source::Environment(name.clone()));
        problem
    };
    let problems: Vec<Problem> = env
        .non_unicode_overrides
        .iter()
        .map(|name| {
            problem_with(
                override_key(name).as_deref(),
                name,
                "the value is not valid UTF-8",
            )
        })
        .chain(malformed_names.map(|(_, name)| {
            let message = format!(
                "environment variable {name:?}: an override's name may only contain letters, \
                 digits and underscores"
            );
            problem_with(None, name, &message)
        }))
        .collect();
    if !problems.is_empty() {
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
        .add_source(config::File::from_str(text, config::FileFormat::Toml))
        .add_source(
            config::Environment::with_prefix(ENV_PREFIX)
                .prefix_separator(ENV_SEPARATOR)
                .separator(ENV_SEPARATOR)
                .ignore_empty(true)
                .source(Some(env_vars)),
        )
        .build()
        .map_err(|e| ConfigError::one(path, problem_from_config_error(e, &provenance)))?;
    let mut config: ConfigFile = built
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
    for key in SecretKey::ALL {
        let name = key.name();
        if config.paywall.secret(key).is_some() {
            let source = match overrides.get(&format!("paywall.{name}")) {
                Some(var) => Source::Environment(var.clone()),
                None => Source::File,
            };
            provenance.secrets.insert(name, source);
        }
    }
    let mut proxy_credential = None;
    if let Some(credentials) = &credentials {
        match credentials.read(PROXY_CREDENTIAL) {
            Ok(found) => proxy_credential = found,
            Err((message, file)) => {
                let mut problem = Problem::new(ProblemKind::Credential, None, message);
                problem.source = Some(Source::Credentials(file));
                problems.push(problem);
            }
        }
        for key in SecretKey::ALL {
            let name = key.name();
            match credentials.read(name) {
                Ok(None) => {}
                Ok(Some((secret, file))) => {
                    *config.paywall.secret_mut(key) = Some(secret);
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
    if problems.is_empty() {
        let checked = config
            .check()
            .and_then(|(mut paywall_settings, terminal_ref)| {
                let https = paywall_settings.physical_api_url.is_https();
                paywall_settings.proxy = proxy::proxy_from(env, proxy_credential, https)?;
                Ok((paywall_settings, terminal_ref))
            });
        match checked {
            Ok((paywall_settings, terminal_ref)) => {
                return Ok(Config {
                    provenance,
                    paywall_settings,
                    terminal_ref,
                    file: config,
                })
            }
            Err(found) => {
                problems = found;
                for problem in &mut problems {
                    if let Some(key) = &problem.key {
                        problem.source = Some(provenance.source_of(key));
                    }
                }
            }
        }
    }
    Err(ConfigError {
        file: path.to_owned(),
        problems,
    })
}

fn read_config_file(path: &Path) -> Result<String, Problem> {
    let bytes = std::fs::read(path).map_err(|e| {
        let message = match e.kind() {
            std::io::ErrorKind::NotFound => "the file does not exist".to_owned(),
            _ => format!("the file cannot be read: {e}"),
        };
        Problem::new(ProblemKind::Unreadable, None, message)
    })?;
    config_text(bytes)
}

/// The configuration file's bytes as text: TOML is UTF-8.
fn config_text(bytes: Vec<u8>) -> Result<String, Problem> {
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

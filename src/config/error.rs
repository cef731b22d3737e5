//! Configuration errors: each problem names its key and where the value came from, never a
//! secret value; the `config` crate's errors are translated into them.

use std::fmt;
use std::path::{Path, PathBuf};

use super::*;

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
    pub(crate) fn new(kind: ProblemKind, key: Option<&str>, message: impl Into<String>) -> Self {
        Self {
            kind,
            key: key.map(str::to_owned),
            source: None,
            message: message.into(),
        }
    }

    pub(super) fn invalid(key: &str, message: impl Into<String>) -> Self {
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

    pub(super) fn one(file: &Path, problem: Problem) -> Self {
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
pub(super) fn problem_from_config_error(
    error: config::ConfigError,
    provenance: &Provenance,
) -> Problem {
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

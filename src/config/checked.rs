//! Values checked once, when the configuration is loaded: the payment API's base addresses, its
//! key pairs and locale as HTTP header values, and the terminal a sale goes to. The payment API
//! client and the agent take them as they are, without checking again; each check here is the
//! only one of its kind, and its message names the key.

use std::fmt;
use std::time::Duration;

use reqwest::header::HeaderValue;
use secrecy::{ExposeSecret, SecretString};

use super::{PaywallConfig, Problem, SecretKey, TerminalConfig};

/// The API's limit on `TerminalTagCode`.
const MAX_TAG_CODE_CHARS: usize = 25;

/// A base address of the payment API: an absolute http(s) URL with a host, no user name or
/// password, no query or fragment, and https unless `paywall.allow_insecure_http` is set. Kept
/// without its trailing `/`, so that paths append to it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BaseUrl(String);

impl BaseUrl {
    /// Checks `text` as a base address; the error says what is wrong (never quoting a secret:
    /// a URL with a password is refused without showing it).
    pub fn parse(text: &str, allow_insecure_http: bool) -> Result<Self, String> {
        let url = check_url(text)?;
        if url.query().is_some() || url.fragment().is_some() {
            return Err("a base address must not have a query or fragment".to_owned());
        }
        if url.scheme() == "http" && !allow_insecure_http {
            return Err(
                "must use https:// (http:// is allowed only with paywall.allow_insecure_http = \
                 true, for a simulator or tests)"
                    .to_owned(),
            );
        }
        Ok(Self(url.as_str().trim_end_matches('/').to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn is_https(&self) -> bool {
        self.0.starts_with("https://")
    }
}

/// An absolute http(s) URL that can be shown in `check-config` (no user or password).
pub(super) fn check_url(text: &str) -> Result<reqwest::Url, String> {
    let url = reqwest::Url::parse(&with_plain_host(text)?)
        .map_err(|e| format!("is not a valid URL ({e})"))?;
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

/// `text` with its host (and port) lower-cased, once it is known to start with `http://` or
/// `https://` and to have a host of plain ASCII without percent-escapes. Host names are
/// case-insensitive, and the agent's ASCII-only host handling (Cargo.toml, `idna_adapter`)
/// expects them in lower case: a host mixing upper case with a percent-escape tripped an
/// assertion inside it in builds with debug assertions (found by fuzzing `config_load`). A
/// non-ASCII host was refused before too, as an invalid international domain name.
fn with_plain_host(text: &str) -> Result<String, String> {
    let not_http = || "must be an https:// (or http://) URL".to_owned();
    let (scheme, rest) = text.split_once("://").ok_or_else(not_http)?;
    if !(scheme.eq_ignore_ascii_case("https") || scheme.eq_ignore_ascii_case("http")) {
        return Err(not_http());
    }
    // The URL parser skips any further slashes before an http(s) host (`https:///host`).
    let rest = rest.trim_start_matches(['/', '\\']);
    let end = rest.find(['/', '\\', '?', '#']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(end);
    if !authority.is_ascii() || authority.contains('%') {
        return Err(
            "its host must be plain ASCII (letters, digits, '-' and '.'; no percent-escapes)"
                .to_owned(),
        );
    }
    Ok(format!(
        "{scheme}://{}{tail}",
        authority.to_ascii_lowercase()
    ))
}

/// A value sent as an HTTP header: printable ASCII, no surrounding whitespace. Secret values
/// are marked sensitive, so that no Debug output shows them. The message never quotes the value.
fn header_value(value: &str, sensitive: bool) -> Result<HeaderValue, String> {
    if value.is_empty() {
        return Err("must not be empty".to_owned());
    }
    let printable = "must be printable ASCII (no line breaks or control characters)";
    if !value.bytes().all(|b| (0x20..0x7f).contains(&b)) {
        return Err(printable.to_owned());
    }
    if value.trim() != value {
        return Err("has leading or trailing whitespace".to_owned());
    }
    let mut header = HeaderValue::from_str(value).map_err(|_| printable.to_owned())?;
    header.set_sensitive(sensitive);
    Ok(header)
}

/// An API key and its client name, both sendable as headers (`apikey…` / `apiclient…`).
#[derive(Clone)]
pub struct KeyPair {
    pub key: HeaderValue,
    pub client: HeaderValue,
}

impl fmt::Debug for KeyPair {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("KeyPair([redacted])")
    }
}

/// `[paywall]` as the payment API client uses it, checked.
#[derive(Debug, Clone)]
pub struct PaywallSettings {
    pub physical_api_url: BaseUrl,
    pub payment_api_url: Option<BaseUrl>,
    /// `api_key_private` / `api_client_private`: every PhysicalAPI call.
    pub private: KeyPair,
    /// `api_key_public` / `api_client_public`, when both are set.
    pub public: Option<KeyPair>,
    pub locale: Option<HeaderValue>,
    pub request_timeout: Duration,
    pub allow_insecure_http: bool,
    /// The key values, kept only to scrub them out of answers the client quotes.
    pub secrets: Vec<SecretString>,
    /// The proxy to go through (docs/deployment.md (Through a proxy)); `None`: connect directly.
    pub proxy: Option<super::ProxySetting>,
}

impl PaywallSettings {
    /// Checks `[paywall]`: every problem, each naming its key, or the settings.
    pub fn from_config(paywall: &PaywallConfig) -> Result<Self, Vec<Problem>> {
        let mut problems = Vec::new();
        let mut base_url =
            |key: &str, text: &str| match BaseUrl::parse(text, paywall.allow_insecure_http) {
                Ok(url) => Some(url),
                Err(message) => {
                    problems.push(Problem::invalid(key, message));
                    None
                }
            };
        let physical_api_url = base_url("paywall.physical_api_url", &paywall.physical_api_url);
        let payment_api_url = paywall
            .payment_api_url
            .as_deref()
            .and_then(|url| base_url("paywall.payment_api_url", url));
        for key in [SecretKey::ApiKeyPrivate, SecretKey::ApiClientPrivate] {
            let name = key.name();
            if paywall.secret(key).is_none() {
                problems.push(Problem::invalid(
                    &format!("paywall.{name}"),
                    format!(
                        "this required key is missing: set it in the file, as \
                         POS_AGENT__PAYWALL__{}, or better as the systemd credential `{name}`",
                        name.to_uppercase()
                    ),
                ));
            }
        }
        match (&paywall.api_key_public, &paywall.api_client_public) {
            (Some(_), None) => problems.push(Problem::invalid(
                "paywall.api_client_public",
                "is required when paywall.api_key_public is set (the public keys go together)",
            )),
            (None, Some(_)) => problems.push(Problem::invalid(
                "paywall.api_key_public",
                "is required when paywall.api_client_public is set (the public keys go together)",
            )),
            _ => {}
        }
        // The four keys in the order of SecretKey::ALL, each checked as a header value.
        let mut headers: [Option<HeaderValue>; 4] = Default::default();
        for (header, key) in headers.iter_mut().zip(SecretKey::ALL) {
            let name = key.name();
            if let Some(secret) = paywall.secret(key) {
                match header_value(secret.expose_secret(), true) {
                    Ok(value) => *header = Some(value),
                    Err(message) => {
                        problems.push(Problem::invalid(&format!("paywall.{name}"), message));
                    }
                }
            }
        }
        check_duration(
            &mut problems,
            "paywall.request_timeout",
            paywall.request_timeout,
        );
        let locale = match paywall.locale.as_deref().map(|l| header_value(l, false)) {
            Some(Err(message)) => {
                problems.push(Problem::invalid("paywall.locale", message));
                None
            }
            Some(Ok(locale)) => Some(locale),
            None => None,
        };
        let [key_private, client_private, key_public, client_public] = headers;
        let pair = |key: Option<HeaderValue>, client: Option<HeaderValue>| {
            Some(KeyPair {
                key: key?,
                client: client?,
            })
        };
        match (physical_api_url, pair(key_private, client_private)) {
            (Some(physical_api_url), Some(private)) if problems.is_empty() => Ok(Self {
                physical_api_url,
                payment_api_url,
                private,
                public: pair(key_public, client_public),
                locale,
                request_timeout: paywall.request_timeout,
                allow_insecure_http: paywall.allow_insecure_http,
                secrets: SecretKey::ALL
                    .into_iter()
                    .filter_map(|key| paywall.secret(key).cloned())
                    .collect(),
                proxy: None,
            }),
            _ => Err(problems),
        }
    }
}

/// The Paywall terminal's Guid, hyphenated as the API writes it (sent as configured).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TerminalId(String);

impl TerminalId {
    pub fn parse(text: &str) -> Result<Self, String> {
        if is_guid(text) {
            Ok(Self(text.to_owned()))
        } else {
            Err("must be a GUID (xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx)".to_owned())
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A GUID in the hyphenated form the API uses.
pub(super) fn is_guid(text: &str) -> bool {
    text.len() == 36 && uuid::Uuid::try_parse(text).is_ok()
}

/// A terminal's tag code: not blank, at most 25 characters (the API's limit).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TagCode(String);

impl TagCode {
    /// Checks `text` as a tag code; every rule it breaks.
    pub fn parse(text: &str) -> Result<Self, Vec<String>> {
        let mut broken = Vec::new();
        if text.trim().is_empty() {
            broken.push("must not be empty".to_owned());
        }
        if text.chars().count() > MAX_TAG_CODE_CHARS {
            broken.push("must be at most 25 characters (the API's limit)".to_owned());
        }
        if broken.is_empty() {
            Ok(Self(text.to_owned()))
        } else {
            Err(broken)
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// The terminal a sale goes to: exactly one of `TerminalId` (the Paywall terminal Guid) or
/// `TerminalTagCode` is sent (docs/payment-api.md (Methods)).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TerminalRef {
    Id(TerminalId),
    TagCode(TagCode),
}

impl TerminalRef {
    /// Checks `[terminal]`'s `id` and `tag_code`: exactly one, well formed. Every problem.
    pub fn from_config(terminal: &TerminalConfig) -> Result<Self, Vec<Problem>> {
        let mut problems = Vec::new();
        match (&terminal.id, &terminal.tag_code) {
            (Some(_), Some(_)) => problems.push(Problem::invalid(
                "terminal.id",
                "set exactly one of terminal.id and terminal.tag_code, not both",
            )),
            (None, None) => problems.push(Problem::invalid(
                "terminal.id",
                "set exactly one of terminal.id (the terminal's GUID) and terminal.tag_code; \
                 neither is set",
            )),
            _ => {}
        }
        let id = terminal.id.as_deref().map(|id| {
            TerminalId::parse(id)
                .map_err(|message| problems.push(Problem::invalid("terminal.id", message)))
        });
        let tag_code = terminal.tag_code.as_deref().map(|tag| {
            TagCode::parse(tag).map_err(|broken| {
                for message in broken {
                    problems.push(Problem::invalid("terminal.tag_code", message));
                }
            })
        });
        match (id, tag_code) {
            (Some(Ok(id)), None) if problems.is_empty() => Ok(Self::Id(id)),
            (None, Some(Ok(tag_code))) if problems.is_empty() => Ok(Self::TagCode(tag_code)),
            _ => Err(problems),
        }
    }
}

const SECOND: Duration = Duration::from_secs(1);
const MINUTE: Duration = Duration::from_secs(60);
const HOUR: Duration = Duration::from_secs(60 * 60);

/// Every duration key with the shortest and the longest value it may take
/// (docs/configuration.md, "Validation"). The upper bounds keep all time arithmetic on them far
/// from overflowing, and are longer than anyone would set on a terminal.
const DURATION_BOUNDS: [(&str, Duration, Duration); 8] = [
    (
        "paywall.request_timeout",
        Duration::from_millis(1),
        Duration::from_secs(10 * 60),
    ),
    (
        "terminal.payment_timeout",
        Duration::from_millis(1),
        Duration::from_secs(24 * 60 * 60),
    ),
    (
        "terminal.sale_reply_deadline",
        Duration::from_millis(1),
        Duration::from_secs(10 * 60),
    ),
    ("serial.ack_timeout", Duration::from_millis(1), MINUTE),
    ("serial.ping_interval", Duration::from_millis(1), HOUR),
    ("shutdown.deadline", Duration::from_millis(1), HOUR),
    ("log.repeat_window", Duration::ZERO, HOUR),
    (
        "metrics.interval",
        SECOND,
        Duration::from_secs(24 * 60 * 60),
    ),
];

/// A duration within its bounds in [`DURATION_BOUNDS`].
pub(super) fn check_duration(problems: &mut Vec<Problem>, key: &str, value: Duration) {
    let Some(&(_, min, max)) = DURATION_BOUNDS.iter().find(|(k, _, _)| *k == key) else {
        return;
    };
    let shown = |d: Duration| humantime::format_duration(d).to_string();
    if value < min {
        let message = if min == Duration::from_millis(1) {
            "must be longer than zero".to_owned()
        } else {
            format!("must be at least {}", shown(min))
        };
        problems.push(Problem::invalid(key, message));
    } else if value > max {
        problems.push(Problem::invalid(
            key,
            format!("must be at most {}", shown(max)),
        ));
    }
}

//! The proxy the payment API client goes through (docs/deployment.md (Through a proxy)): the
//! systemd credential `https_proxy`, else the proxy variables curl and reqwest read. The agent
//! picks the one proxy itself and hands it to the client (with `NO_PROXY`), so `check-config`
//! shows what is used, and a malformed variable is a configuration error naming it instead of a
//! silent direct connection.

use std::fmt;

use reqwest::Url;
use secrecy::{ExposeSecret, SecretString};

use super::*;

/// The credential holding the proxy URL (`http://user:password@host:port`): its password is a
/// secret, and a credential, unlike `Environment=`, is not shown by `systemctl show`.
pub const PROXY_CREDENTIAL: &str = "https_proxy";

/// The variables that name a proxy, in the order they are looked at for an https API (an http
/// API reads `HTTP_PROXY`/`http_proxy` in place of the first two).
const HTTPS_VARIABLES: [&str; 4] = ["HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy"];
const HTTP_VARIABLES: [&str; 4] = ["HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy"];
/// Hosts reached directly: comma-separated names, domains, addresses, CIDR ranges, `*`.
const NO_PROXY_VARIABLES: [&str; 2] = ["NO_PROXY", "no_proxy"];

/// The proxy in use.
#[derive(Clone)]
pub struct ProxySetting {
    /// The whole URL, its user and password included.
    pub url: SecretString,
    /// `host:port`, the name every message uses.
    pub host: String,
    /// The URL with its password replaced by `<redacted>`.
    pub shown: String,
    pub source: Source,
    /// The hosts reached directly (`NO_PROXY`), as given.
    pub no_proxy: Option<String>,
}

impl fmt::Debug for ProxySetting {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ProxySetting")
            .field("url", &self.shown)
            .field("source", &self.source)
            .field("no_proxy", &self.no_proxy)
            .finish()
    }
}

/// Every proxy variable is checked, whichever applies; the first that applies is used unless
/// the credential names a proxy.
pub(super) fn proxy_from(
    env: &EnvSnapshot,
    credential: Option<(SecretString, std::path::PathBuf)>,
    https: bool,
) -> Result<Option<ProxySetting>, Vec<Problem>> {
    let mut problems = Vec::new();
    let mut found = Vec::new();
    let set = |name: &str| env.get(name).filter(|v| !v.trim().is_empty());
    for name in [
        "HTTPS_PROXY",
        "https_proxy",
        "HTTP_PROXY",
        "http_proxy",
        "ALL_PROXY",
        "all_proxy",
    ] {
        if let Some(value) = set(name) {
            match parse(value) {
                Ok(parsed) => found.push((name, value, parsed)),
                Err(message) => problems.push(problem(
                    Source::Environment(name.to_owned()),
                    format!("{name} {message}"),
                )),
            }
        }
    }
    let no_proxy = NO_PROXY_VARIABLES
        .iter()
        .find_map(|name| set(name).map(|v| (*name, v)));
    for name in NO_PROXY_VARIABLES {
        if let Some(value) = set(name) {
            if let Err(message) = check_no_proxy(value) {
                problems.push(problem(
                    Source::Environment(name.to_owned()),
                    format!("{name} {message}"),
                ));
            }
        }
    }
    let from_credential = match credential {
        Some((secret, file)) => match parse(secret.expose_secret()) {
            Ok(parsed) => Some((secret.clone(), parsed, Source::Credentials(file))),
            Err(message) => {
                problems.push(problem(
                    Source::Credentials(file),
                    format!("the credential `{PROXY_CREDENTIAL}` {message}"),
                ));
                None
            }
        },
        None => None,
    };
    if !problems.is_empty() {
        return Err(problems);
    }
    let variables = if https {
        HTTPS_VARIABLES
    } else {
        HTTP_VARIABLES
    };
    let chosen = from_credential.or_else(|| {
        variables.iter().find_map(|wanted| {
            found
                .iter()
                .find(|(name, ..)| name == wanted)
                .map(|(name, value, parsed)| {
                    (
                        SecretString::from((*value).to_owned()),
                        parsed.clone(),
                        Source::Environment((*name).to_owned()),
                    )
                })
        })
    });
    Ok(chosen.map(|(url, parsed, source)| ProxySetting {
        url,
        host: host_port(&parsed),
        shown: shown(&parsed),
        source,
        no_proxy: no_proxy.map(|(_, value)| value.to_owned()),
    }))
}

fn problem(source: Source, message: String) -> Problem {
    let mut problem = Problem::new(ProblemKind::Invalid, None, message);
    problem.source = Some(source);
    problem
}

/// A proxy URL as `http[s]://[user[:password]@]host[:port]`, a bare `host:port` read as http
/// (as curl and reqwest read it). Errors never quote the value: it may hold a password.
fn parse(text: &str) -> Result<Url, String> {
    let text = text.trim();
    let usage = "http://[user:password@]host[:port]";
    let url = if text.contains("://") {
        Url::parse(text)
    } else {
        Url::parse(&format!("http://{text}"))
    }
    .map_err(|e| format!("is not a proxy URL ({usage}): {e}"))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(format!(
            "names a {}:// proxy; only http:// and https:// proxies are supported ({usage})",
            url.scheme()
        ));
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(format!("has no proxy host ({usage})"));
    }
    if !matches!(url.path(), "" | "/") || url.query().is_some() || url.fragment().is_some() {
        return Err(format!(
            "has a path or query, which a proxy URL has not ({usage})"
        ));
    }
    Ok(url)
}

fn check_no_proxy(value: &str) -> Result<(), String> {
    let bad = value.split(',').map(str::trim).any(|entry| {
        entry.contains(char::is_whitespace) || entry.contains("://") || entry.contains('@')
    });
    if bad {
        return Err(
            "must be a comma-separated list of host names, domains, IP addresses or CIDR ranges (no URLs)"
                .to_owned(),
        );
    }
    Ok(())
}

fn host_port(url: &Url) -> String {
    let host = url.host_str().unwrap_or_default();
    match url.port_or_known_default() {
        Some(port) => format!("{host}:{port}"),
        None => host.to_owned(),
    }
}

fn shown(url: &Url) -> String {
    let user = match (url.username(), url.password()) {
        ("", None) => String::new(),
        (user, None) => format!("{user}@"),
        (user, Some(_)) => format!("{user}:{REDACTED}@"),
    };
    format!("{}://{user}{}", url.scheme(), host_port(url))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(vars: &[(&str, &str)]) -> EnvSnapshot {
        EnvSnapshot::from_vars(vars.iter().copied())
    }

    #[test]
    fn the_first_variable_that_applies_is_used_and_shown_without_its_password() {
        let vars = env(&[
            ("ALL_PROXY", "http://all.example:1"),
            ("HTTPS_PROXY", "http://agent:s3cret-pw@proxy.example:3128"),
            ("NO_PROXY", "localhost,10.0.0.0/8"),
        ]);
        let proxy = proxy_from(&vars, None, true).unwrap().unwrap();
        assert_eq!(proxy.host, "proxy.example:3128");
        assert_eq!(proxy.shown, "http://agent:<redacted>@proxy.example:3128");
        assert_eq!(proxy.source, Source::Environment("HTTPS_PROXY".into()));
        assert_eq!(proxy.no_proxy.as_deref(), Some("localhost,10.0.0.0/8"));
        assert!(!format!("{proxy:?}").contains("s3cret-pw"));
        let http = proxy_from(&vars, None, false).unwrap().unwrap();
        assert_eq!(http.host, "all.example:1");
        assert!(proxy_from(&env(&[]), None, true).unwrap().is_none());
    }

    #[test]
    fn the_credential_wins_and_a_bare_host_is_http() {
        let vars = env(&[("HTTPS_PROXY", "http://proxy.example:3128")]);
        let credential = (
            SecretString::from("user:pw@cred.example:8080"),
            "/c/https_proxy".into(),
        );
        let proxy = proxy_from(&vars, Some(credential), true).unwrap().unwrap();
        assert_eq!(proxy.shown, "http://user:<redacted>@cred.example:8080");
        assert_eq!(proxy.source, Source::Credentials("/c/https_proxy".into()));
    }

    #[test]
    fn a_malformed_variable_is_a_problem_naming_it_and_never_quoting_it() {
        for (name, value) in [
            ("HTTPS_PROXY", "http://user:pw-1x@proxy.example:notaport"),
            ("https_proxy", "socks5://user:pw-1x@proxy.example:1080"),
            (
                "ALL_PROXY",
                "http://user:pw-1x@proxy.example:3128/some/path",
            ),
            ("NO_PROXY", "http://pw-1x.example"),
        ] {
            let problems = proxy_from(&env(&[(name, value)]), None, true).unwrap_err();
            let text = problems[0].to_string();
            assert!(text.starts_with(name), "{text}");
            assert!(!text.contains("pw-1x"), "{text}");
            assert_eq!(problems[0].source, Some(Source::Environment(name.into())));
        }
    }
}

//! The checks `run` makes before it starts, and `check-config` makes for it (so that
//! `check-config` passing means `run` starts): the payment API client can be built (its CA
//! bundle read once), and the configuration's own start checks. The client built here is the
//! one `run` uses.

use crate::config::{self, Config, EnvSnapshot, Problem, ProblemKind};
use crate::paywall::PaywallClient;

/// The payment API client, or every problem found (the client's first).
pub(crate) fn preflight(config: &Config, env: &EnvSnapshot) -> Result<PaywallClient, Vec<Problem>> {
    let client = PaywallClient::new(&config.paywall_settings);
    let mut problems = Vec::new();
    if let Err(e) = &client {
        problems.push(Problem {
            kind: ProblemKind::Invalid,
            key: Some("paywall".to_owned()),
            source: None,
            message: e.to_string(),
        });
    }
    problems.extend(config::start_problems(config, env));
    match client {
        Ok(client) if problems.is_empty() => Ok(client),
        _ => Err(problems),
    }
}

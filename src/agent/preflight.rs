//! The checks `run` makes before it starts, and `check-config` makes for it (so that
//! `check-config` passing means `run` starts): the payment API client can be built (its CA
//! bundle read once), and the configuration's own start checks. The client built here is the
//! one `run` uses.

use crate::config::{Config, EnvSnapshot, Problem, ProblemKind};
use crate::paywall::PaywallClient;
use crate::state;

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
    problems.extend(start_problems(config, env));
    match client {
        Ok(client) if problems.is_empty() => Ok(client),
        _ => Err(problems),
    }
}

/// What `run` checks of the configuration beyond the file before it starts (each makes it
/// exit 78): a connection Id is known (configured, in state, or to be established).
fn start_problems(config: &Config, env: &EnvSnapshot) -> Vec<Problem> {
    let mut problems = Vec::new();
    if config.connection.id.is_none() && config.connection.establish.is_none() {
        let directory = config.state_directory(env);
        match state::stored_connection_id(&directory) {
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

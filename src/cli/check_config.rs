//! `pos-agent check-config` (docs/operations.md (Operator commands)): the effective
//! configuration, secrets redacted, once it passes the same pre-flight `run` makes.

use crate::config::{self, ConfigArgs, ConfigError, EnvSnapshot};

/// Prints the effective configuration or fails with the [`ConfigError`] (exit 78).
pub(super) fn run(args: &ConfigArgs) -> Result<(), ConfigError> {
    let env = EnvSnapshot::capture();
    let config = config::load_as_under_unit(&args.config, &env)?;
    if let Err(problems) = crate::agent::preflight(&config, &env) {
        return Err(ConfigError {
            file: args.config.clone(),
            problems,
        });
    }
    use std::io::Write as _;
    // A closed stdout (`| head`) is not a configuration error.
    let _ = std::io::stdout().write_all(config::render_effective(&config).as_bytes());
    Ok(())
}

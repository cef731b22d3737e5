//! Which build this is: the package version and the git commit it was built from (recorded by
//! `build.rs`), so that two builds of one version are told apart in the field. `--version`,
//! `status`, `check-health`, the metrics and the ready line all say it (docs/development.md,
//! "Which build is this").

/// The package version (`Cargo.toml`; the Debian package's version follows it).
pub(crate) const VERSION: &str = env!("CARGO_PKG_VERSION");

/// The git commit: a 12-digit short hash, `-dirty` when the build's sources differed from it,
/// `unknown` for a build outside a git checkout.
pub(crate) const COMMIT: &str = env!("POS_AGENT_COMMIT");

/// `0.2.0 (commit 0123456789ab)`, as `pos-agent --version` prints it after the name.
pub(crate) const LONG_VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (commit ",
    env!("POS_AGENT_COMMIT"),
    ")"
);

//! Loading the configuration (docs/configuration.md): the TOML file plus `POS_AGENT__…`
//! environment overrides, as `run` and `check-config` do, through `load_contents_with` (the
//! loader `load_with` runs once it has read the file; in memory, no file per execution). The
//! input is the file's text, then optionally a NUL byte and `NAME=VALUE` lines, each NAME
//! getting the `POS_AGENT__` prefix.
//! Properties, beyond "no panic":
//! - a refused configuration is a `ConfigError` naming the file with at least one problem, each
//!   with a message;
//! - a secret never shows: the private API key is always given (by the environment, unless the
//!   input overrides it) as a canary value that no error, `Debug` output or `check-config`
//!   rendering may contain;
//! - an accepted configuration renders (`check-config`) to TOML that loads back and renders to
//!   the same text, as docs/configuration.md promises (round trip).

use std::path::Path;

use pos_agent::config::{load_contents_with, render_effective, EnvSnapshot};

const CANARY: &str = "fuzz-canary-secret-7f3a9c";
const CANARY_VAR: &str = "POS_AGENT__PAYWALL__API_KEY_PRIVATE";

/// The check-config text without comments (they name the file and where values came from,
/// which differ between the two loads).
fn without_comments(rendered: &str) -> String {
    rendered
        .lines()
        .filter(|line| !line.trim_start().starts_with('#'))
        .map(|line| line.split("  # ").next().unwrap_or(line))
        .collect::<Vec<_>>()
        .join("\n")
}

fn no_canary(text: &str, what: &str) {
    assert!(
        !text.contains(CANARY),
        "the private key shows in {what}: {text}"
    );
}

/// Checks one input; panics when a property does not hold.
pub fn check(data: &[u8]) {
    let file = Path::new("/etc/pos-agent/agent.toml");
    let (toml, vars) = match data.iter().position(|&b| b == 0) {
        Some(nul) => (&data[..nul], &data[nul + 1..]),
        None => (data, &[][..]),
    };
    let mut env = vec![(CANARY_VAR.to_owned(), CANARY.to_owned())];
    for line in String::from_utf8_lossy(vars).lines() {
        if let Some((name, value)) = line.split_once('=') {
            env.push((format!("POS_AGENT__{name}"), value.to_owned()));
        }
    }
    // A later value for the same variable replaces the canary: the canary check then has
    // nothing to find, which is fine.
    let canary_kept = env.iter().filter(|(name, _)| name == CANARY_VAR).count() == 1;
    match load_contents_with(file, toml, &EnvSnapshot::from_vars(env)) {
        Err(error) => {
            assert!(!error.problems.is_empty());
            let text = error.to_string();
            assert!(text.contains(&file.display().to_string()), "{text}");
            for problem in &error.problems {
                assert!(!problem.to_string().is_empty());
            }
            if canary_kept {
                no_canary(&text, "an error");
                no_canary(&format!("{error:?}"), "an error's Debug");
            }
        }
        Ok(config) => {
            let rendered = render_effective(&config);
            if canary_kept {
                no_canary(&rendered, "check-config");
                no_canary(&format!("{config:?}"), "the configuration's Debug");
            }
            let again = load_contents_with(
                file,
                rendered.as_bytes(),
                &EnvSnapshot::from_vars(Vec::<(String, String)>::new()),
            )
            .unwrap_or_else(|e| panic!("check-config output does not load: {e}\n{rendered}"));
            assert_eq!(
                without_comments(&render_effective(&again)),
                without_comments(&rendered),
                "check-config output loads as another configuration"
            );
        }
    }
}

//! CI must pass on a machine that has never seen the project (docs/development.md, "CI on a new
//! machine"). Running `.ci/run` from nothing takes half an hour; these checks keep the two
//! mistakes that made it fail there from coming back, in a fraction of a second: a step that runs
//! offline before the fetch it needs, and a cargo tool used before a step installs it.

use std::path::Path;

fn script(name: &str) -> Vec<String> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(name);
    std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .lines()
        .map(str::to_owned)
        .collect()
}

/// The lines that run something (not comments).
fn commands(lines: &[String]) -> impl Iterator<Item = (usize, &str)> {
    lines
        .iter()
        .enumerate()
        .map(|(i, line)| (i + 1, line.trim()))
        .filter(|(_, line)| !line.starts_with('#') && !line.is_empty())
}

#[test]
fn every_offline_step_comes_after_the_fetch_of_every_platforms_crates() {
    let lines = script(".ci/run");
    let fetch = commands(&lines)
        .find(|(_, line)| line.starts_with("cargo fetch --locked"))
        .map(|(n, _)| n)
        .expect(".ci/run fetches every crate with `cargo fetch --locked`");
    let offline: Vec<usize> = commands(&lines)
        .filter(|(_, line)| line.contains("--offline") && !line.starts_with("step "))
        .map(|(n, _)| n)
        .collect();
    assert!(
        !offline.is_empty(),
        "no offline step found: the check would prove nothing"
    );
    for n in offline {
        assert!(
            n > fetch,
            ".ci/run:{n} runs offline before the fetch at line {fetch}"
        );
    }
}

#[test]
fn every_cargo_tool_is_installed_before_it_is_used() {
    // The tool, the words that use it, and the install line that must come first.
    let tools = [
        ("cargo-deny", "cargo deny ", ".ci/run"),
        ("cargo-auditable", "cargo auditable build", ".ci/run"),
        ("auditable2cdx", "auditable2cdx ", ".ci/run"),
        ("cargo-deb", "cargo deb --locked", ".ci/run"),
        ("cargo-fuzz", "cargo +nightly fuzz", "fuzz/run-ci.sh"),
    ];
    for (tool, use_words, file) in tools {
        let lines = script(file);
        let install = commands(&lines)
            .find(|(_, line)| line.contains(&format!("cargo install --locked {tool}")))
            .map(|(n, _)| n)
            .unwrap_or_else(|| panic!("{file} never installs {tool}"));
        let first_use = commands(&lines)
            .find(|(_, line)| {
                line.contains(use_words)
                    && !line.contains("--version")
                    && !line.contains("cargo install")
                    && !line.starts_with("step ")
            })
            .map(|(n, _)| n)
            .unwrap_or_else(|| panic!("{file} never uses {tool} ({use_words:?})"));
        assert!(
            install < first_use,
            "{file}:{first_use} uses {tool} before it is installed at line {install}"
        );
    }
    // cargo installs into $CARGO_HOME/bin, which need not be ~/.cargo/bin.
    let lines = script(".ci/run");
    assert!(
        commands(&lines).any(|(_, line)| line.starts_with("export PATH=")
            && line.contains("${CARGO_HOME:-$HOME/.cargo}/bin")),
        ".ci/run does not put $CARGO_HOME/bin on PATH"
    );
}

#[test]
fn the_nightly_toolchain_and_the_targets_are_installed_by_the_scripts_that_use_them() {
    let fuzz = script("fuzz/run-ci.sh");
    assert!(commands(&fuzz).any(|(_, l)| l.contains("rustup toolchain install nightly")));
    let ci = script(".ci/run");
    let targets = commands(&ci)
        .find(|(_, l)| l.starts_with("rustup target add"))
        .map(|(n, l)| (n, l.to_owned()))
        .expect(".ci/run adds the rustup targets");
    for target in [
        "aarch64-unknown-linux-gnu",
        "armv7-unknown-linux-gnueabihf",
        "aarch64-unknown-linux-musl",
    ] {
        assert!(
            targets.1.contains(target),
            "rustup target add lacks {target}"
        );
        let first_build = commands(&ci)
            .find(|(_, l)| {
                l.contains("--target") && l.contains("cargo ") && !l.starts_with("rustup")
            })
            .map(|(n, _)| n)
            .unwrap();
        assert!(
            targets.0 < first_build,
            "a --target build before `rustup target add`"
        );
    }
}

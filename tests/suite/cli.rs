//! The command line as a user meets it.
use crate::support;

#[test]
fn unknown_subcommand_is_a_usage_error_with_exit_code_2() {
    let output = support::pos_agent()
        .arg("no-such-command")
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("no-such-command"));
}

#[test]
fn version_prints_the_crate_version_and_the_commit() {
    let output = support::pos_agent().arg("--version").output().unwrap();
    assert_eq!(output.status.code(), Some(0));
    let stdout = String::from_utf8_lossy(&output.stdout);
    let rest = stdout
        .trim_end()
        .strip_prefix(concat!(
            "pos-agent ",
            env!("CARGO_PKG_VERSION"),
            " (commit "
        ))
        .unwrap_or_else(|| panic!("--version printed {stdout:?}"));
    let commit = rest
        .strip_suffix(')')
        .unwrap_or_else(|| panic!("--version printed {stdout:?}"));
    support::assert_build_commit(commit);
}

/// The build script as cargo ran it for this build (it runs on the build machine, also when the
/// suite is built for another architecture).
fn build_script() -> std::path::PathBuf {
    let out_dir = std::path::Path::new(env!("OUT_DIR"));
    let build_dir = out_dir
        .ancestors()
        .nth(2)
        .expect("OUT_DIR is target/…/build/pos-agent-*/out");
    // Built for another architecture, the run's output is under target/<triple>/<profile>/ and
    // the build script, a program of the build machine, under target/<profile>/.
    let profile = build_dir.parent().and_then(|p| p.file_name()).unwrap();
    let host_build_dir = build_dir
        .ancestors()
        .nth(3)
        .map(|target| target.join(profile).join("build"));
    let mut scripts: Vec<_> = [Some(build_dir.to_owned()), host_build_dir]
        .into_iter()
        .flatten()
        .filter_map(|dir| std::fs::read_dir(dir).ok())
        .flatten()
        .filter_map(|entry| {
            let script = entry.ok()?.path().join("build-script-build");
            let modified = script.metadata().ok()?.modified().ok()?;
            Some((modified, script))
        })
        .filter(|(_, script)| {
            script
                .parent()
                .and_then(|d| d.file_name())
                .is_some_and(|n| n.to_string_lossy().starts_with("pos-agent-"))
        })
        .collect();
    scripts.sort();
    scripts.pop().expect("pos-agent's build script").1
}

/// What the build script records as the commit when it builds the sources in `dir`.
fn commit_recorded_for(dir: &std::path::Path, given: Option<&str>) -> String {
    let mut command = std::process::Command::new(build_script());
    command
        .env("CARGO_MANIFEST_DIR", dir)
        .env_remove("POS_AGENT_COMMIT")
        .env("CARGO_CFG_TARGET_ARCH", "x86_64")
        .env("CARGO_CFG_TARGET_OS", "linux")
        .env("PROFILE", "debug")
        .current_dir(dir);
    if let Some(given) = given {
        command.env("POS_AGENT_COMMIT", given);
    }
    let output = command.output().unwrap();
    assert!(output.status.success(), "{output:?}");
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    stdout
        .lines()
        .find_map(|line| line.strip_prefix("cargo:rustc-env=POS_AGENT_COMMIT="))
        .unwrap_or_else(|| panic!("no POS_AGENT_COMMIT in {stdout}"))
        .to_owned()
}

fn git(dir: &std::path::Path, args: &[&str]) -> String {
    let output = std::process::Command::new("git")
        .args([
            "-c",
            "user.name=t",
            "-c",
            "user.email=t@localhost",
            "-c",
            "init.defaultBranch=main",
        ])
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap();
    assert!(output.status.success(), "git {args:?}: {output:?}");
    String::from_utf8_lossy(&output.stdout).trim().to_owned()
}

#[test]
fn a_build_outside_a_checkout_says_unknown_and_a_checkout_says_its_commit() {
    // A source tarball: no .git anywhere above.
    let tarball = tempfile::tempdir().unwrap();
    std::fs::create_dir(tarball.path().join("src")).unwrap();
    assert_eq!(commit_recorded_for(tarball.path(), None), "unknown");
    // A packager who knows the tarball's commit says so.
    assert_eq!(
        commit_recorded_for(tarball.path(), Some("0123456789ab")),
        "0123456789ab"
    );

    // A checkout: its commit, then -dirty once a source file changes.
    let checkout = tempfile::tempdir().unwrap();
    let root = checkout.path();
    std::fs::create_dir(root.join("src")).unwrap();
    std::fs::write(root.join("src/lib.rs"), "").unwrap();
    std::fs::write(root.join("Cargo.toml"), "").unwrap();
    git(root, &["init", "-q"]);
    git(root, &["add", "."]);
    git(root, &["commit", "-q", "-m", "first"]);
    let head = git(root, &["rev-parse", "--short=12", "HEAD"]);
    assert_eq!(commit_recorded_for(root, None), head);
    std::fs::write(root.join("src/lib.rs"), "// changed").unwrap();
    assert_eq!(commit_recorded_for(root, None), format!("{head}-dirty"));

    // A tarball unpacked inside some other checkout is not that checkout's commit.
    let inner = root.join("vendor/pos-agent");
    std::fs::create_dir_all(&inner).unwrap();
    assert_eq!(commit_recorded_for(&inner, None), "unknown");
}

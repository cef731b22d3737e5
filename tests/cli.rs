//! The command line as a user meets it.
mod support;

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
fn version_prints_the_crate_version() {
    let output = support::pos_agent().arg("--version").output().unwrap();
    assert_eq!(output.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&output.stdout).contains(env!("CARGO_PKG_VERSION")));
}

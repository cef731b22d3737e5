//! `pos-agent check-config` as an operator runs it: the real binary on real files, with the
//! environment set on the child process only.
use crate::support;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const SECRETS: [&str; 5] = [
    "FILE-SECRET-KEY",
    "FILE-SECRET-CLIENT",
    "ENV-SECRET",
    "CRED-SECRET",
    "PARAM-SECRET",
];

const VALID: &str = r#"
[paywall]
physical_api_url = "https://physical.example"
api_key_private = "FILE-SECRET-KEY"
api_client_private = "FILE-SECRET-CLIENT"

[connection.establish]
name = "till-3"
brand_id = 10
provider_id = 10
region_id = 1
end_of_day_id = 10
service_parameters = { Reporting_ApiKey = "PARAM-SECRET" }

[terminal]
tag_code = "shop_1"
"#;

/// `check-config` with a clean environment: no override, credential or config path leaks in
/// from the environment the tests run in.
fn check_config() -> Command {
    clean("check-config")
}

/// `pos-agent SUBCOMMAND` with the clean environment of [`check_config`].
fn clean(subcommand: &str) -> Command {
    let mut command = support::pos_agent();
    command.arg(subcommand);
    for (name, _) in std::env::vars_os() {
        let name = name.to_string_lossy().into_owned();
        if name.starts_with("POS_AGENT_") && name != "POS_AGENT_TEST_RUNNER"
            || name == "CREDENTIALS_DIRECTORY"
            || name == "STATE_DIRECTORY"
            || name == "RUNTIME_DIRECTORY"
            || name.to_ascii_uppercase().ends_with("_PROXY")
        {
            command.env_remove(name);
        }
    }
    // What `run` would check: a CA bundle (a fixture, so the machine's own store does not
    // matter), and, as root, credential stores (none here unless a test names one).
    command.env("SSL_CERT_FILE", fixture("ca-isrg-root-x1.pem"));
    command.env(
        "POS_AGENT_CREDENTIAL_STORES",
        std::env::temp_dir().join("pos-agent-no-credential-store"),
    );
    command
}

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

struct Run {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

fn run(command: &mut Command) -> Run {
    let Output {
        status,
        stdout,
        stderr,
    } = command.output().unwrap();
    let run = Run {
        code: status.code(),
        stdout: String::from_utf8(stdout).unwrap(),
        stderr: String::from_utf8(stderr).unwrap(),
    };
    for secret in SECRETS {
        assert!(
            !run.stdout.contains(secret) && !run.stderr.contains(secret),
            "a secret was printed:\n{}\n{}",
            run.stdout,
            run.stderr
        );
    }
    run
}

fn write_config(dir: &Path, text: &str) -> PathBuf {
    let path = dir.join("agent.toml");
    std::fs::write(&path, text).unwrap();
    path
}

#[test]
fn every_configuration_case_file() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/config_cases");
    let mut cases = Vec::new();
    for (kind, expected_code) in [("valid", 0), ("invalid", 78)] {
        let mut files: Vec<PathBuf> = std::fs::read_dir(root.join(kind))
            .unwrap()
            .map(|entry| entry.unwrap().path())
            .filter(|path| path.extension().is_some_and(|e| e == "toml"))
            .collect();
        assert!(!files.is_empty(), "no cases in tests/config_cases/{kind}");
        files.sort();
        cases.extend(files.into_iter().map(|file| (file, expected_code)));
    }
    // A few at a time: each is a process, and under emulation a slow one.
    let failures: Vec<String> = std::thread::scope(|scope| {
        let workers: Vec<_> = cases
            .chunks(cases.len().div_ceil(4))
            .map(|chunk| {
                scope.spawn(move || {
                    chunk
                        .iter()
                        .filter_map(|(file, code)| check_case(file, *code).err())
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        workers
            .into_iter()
            .flat_map(|worker| worker.join().unwrap())
            .collect()
    });
    assert!(
        failures.is_empty(),
        "{} of {} configuration cases failed:\n\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n\n")
    );
}

/// One case file: its exit code, and the `# expect:` / `# error:` lines at its top.
fn check_case(file: &Path, expected_code: i32) -> Result<(), String> {
    let text = std::fs::read_to_string(file).unwrap();
    let header = || {
        text.lines()
            .take_while(|line| line.starts_with('#'))
            .map(|line| line.trim_start_matches('#').trim())
    };
    let expected = |tag: &str| -> Vec<String> {
        header()
            .filter_map(|line| line.strip_prefix(tag).map(|rest| rest.trim().to_owned()))
            .collect()
    };
    let name = file
        .strip_prefix(env!("CARGO_MANIFEST_DIR"))
        .unwrap_or(file)
        .display()
        .to_string();
    let out = run(check_config().arg("--config").arg(file));
    let shown = format!(
        "{name}: exit {:?}\nstdout:\n{}\nstderr:\n{}",
        out.code, out.stdout, out.stderr
    );
    let fail = |why: String| Err(format!("{why}\n{shown}"));
    if out.code != Some(expected_code) {
        return fail(format!("expected exit {expected_code}"));
    }
    if format!("{}{}", out.stdout, out.stderr).contains("SECRET") {
        return fail("a secret was printed".into());
    }
    let file_shown = file.display().to_string();
    if expected_code == 0 {
        if !out.stdout.contains(&file_shown) {
            return fail("the effective configuration does not name its file".into());
        }
        for wanted in expected("expect:") {
            if !out.stdout.contains(&wanted) {
                return fail(format!("stdout lacks {wanted:?}"));
            }
        }
        return Ok(());
    }
    let errors = expected("error:");
    if errors.is_empty() {
        return fail("an invalid case names no `# error:` it must produce".into());
    }
    if !out.stdout.is_empty() {
        return fail("a refused configuration printed something on stdout".into());
    }
    let count = match errors.len() {
        1 => format!("configuration error in {file_shown}"),
        n => format!("{n} configuration errors in {file_shown}"),
    };
    if !out.stderr.contains(&count) {
        return fail(format!("stderr lacks {count:?}"));
    }
    for wanted in errors {
        if !out.stderr.contains(&wanted) {
            return fail(format!("stderr lacks {wanted:?}"));
        }
    }
    Ok(())
}

#[test]
fn config_path_can_come_from_pos_agent_config() {
    let dir = tempfile::tempdir().unwrap();
    let path = write_config(dir.path(), VALID);
    let out = run(check_config().env("POS_AGENT_CONFIG", &path));
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    assert!(out.stdout.contains(&path.display().to_string()));
}

#[test]
fn missing_file_exits_78_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("absent.toml");
    let out = run(check_config().arg("--config").arg(&path));
    assert_eq!(out.code, Some(78));
    assert!(
        out.stderr.contains(&path.display().to_string()),
        "{}",
        out.stderr
    );
}

#[test]
fn http_address_without_allow_insecure_http_exits_78() {
    let dir = tempfile::tempdir().unwrap();
    let text = VALID.replace("https://physical", "http://physical");
    let path = write_config(dir.path(), &text);
    let out = run(check_config().arg("--config").arg(&path));
    assert_eq!(out.code, Some(78));
    assert!(
        out.stderr.contains("paywall.physical_api_url"),
        "{}",
        out.stderr
    );
    assert!(out.stderr.contains("allow_insecure_http"), "{}", out.stderr);

    let out = run(check_config()
        .arg("--config")
        .arg(&path)
        .env("POS_AGENT__PAYWALL__ALLOW_INSECURE_HTTP", "true"));
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    assert!(out.stdout.contains("allow_insecure_http = true"));
}

#[test]
fn environment_override_wins_over_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = write_config(
        dir.path(),
        &format!("{VALID}\n[serial]\ndevice = \"/dev/ttyS1\"\n"),
    );
    let out = run(check_config()
        .arg("--config")
        .arg(&path)
        .env("POS_AGENT__SERIAL__DEVICE", "/dev/ttyUSB7")
        .env("POS_AGENT__SHUTDOWN__CONCURRENCY", "4")
        .env("POS_AGENT__CONNECTION__ESTABLISH__BRAND_ID", "77")
        .env("POS_AGENT__PAYWALL__API_KEY_PRIVATE", "ENV-SECRET"));
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    assert!(
        out.stdout.contains("device = \"/dev/ttyUSB7\""),
        "{}",
        out.stdout
    );
    assert!(out.stdout.contains("concurrency = 4"));
    assert!(out.stdout.contains("brand_id = 77"));
    assert!(out
        .stdout
        .contains("api_key_private = \"<redacted>\"  # from environment variable POS_AGENT__PAYWALL__API_KEY_PRIVATE"));
}

#[test]
fn bad_environment_override_exits_78_naming_the_variable() {
    let dir = tempfile::tempdir().unwrap();
    let path = write_config(dir.path(), VALID);
    let out = run(check_config()
        .arg("--config")
        .arg(&path)
        .env("POS_AGENT__SERIAL__DATA_BITS", "9"));
    assert_eq!(out.code, Some(78));
    assert!(out.stderr.contains("serial.data_bits"), "{}", out.stderr);
    assert!(
        out.stderr.contains("POS_AGENT__SERIAL__DATA_BITS"),
        "{}",
        out.stderr
    );
}

#[test]
fn credentials_directory_wins_over_the_file_and_is_never_printed() {
    let dir = tempfile::tempdir().unwrap();
    let path = write_config(dir.path(), VALID);
    let credentials = dir.path().join("credentials");
    std::fs::create_dir(&credentials).unwrap();
    std::fs::write(credentials.join("api_key_private"), "CRED-SECRET\n").unwrap();
    let out = run(check_config()
        .arg("--config")
        .arg(&path)
        .env("CREDENTIALS_DIRECTORY", &credentials));
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    let expected = format!(
        "api_key_private = \"<redacted>\"  # from credential file {}",
        credentials.join("api_key_private").display()
    );
    assert!(out.stdout.contains(&expected), "{}", out.stdout);
    assert!(out
        .stdout
        .contains("api_client_private = \"<redacted>\"  # from the configuration file"));
}

#[test]
fn example_configuration_is_accepted_with_credentials_and_a_connection_id() {
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("packaging/agent.example.toml");
    let credentials = tempfile::tempdir().unwrap();
    for name in ["api_key_private", "api_client_private"] {
        std::fs::write(credentials.path().join(name), "CRED-SECRET\n").unwrap();
    }
    let state = credentials.path().join("state");
    // As shipped it names no connection: `run` would exit 78, so check-config does.
    let out = run(check_config()
        .arg("--config")
        .arg(&example)
        .env("CREDENTIALS_DIRECTORY", credentials.path())
        .env("POS_AGENT__STATE__DIRECTORY", &state));
    assert_eq!(out.code, Some(78), "{}", out.stdout);
    assert!(out.stderr.contains("connection.id"), "{}", out.stderr);
    let out = run(check_config()
        .arg("--config")
        .arg(&example)
        .env("CREDENTIALS_DIRECTORY", credentials.path())
        .env("POS_AGENT__STATE__DIRECTORY", &state)
        .env(
            "POS_AGENT__CONNECTION__ID",
            "70b2190b-e47b-455f-b05e-8c132a055300",
        ));
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    assert!(out
        .stdout
        .contains("id = \"00000000-0000-0000-0000-000000000000\""));
}

/// Like [`VALID`] but with no key in the file: they must come from credentials.
const KEYLESS: &str = r#"
[paywall]
physical_api_url = "https://physical.example"

[connection.establish]
name = "till-3"
brand_id = 10
provider_id = 10
region_id = 1
end_of_day_id = 10

[terminal]
tag_code = "shop_1"
"#;

#[test]
fn as_root_without_a_credentials_directory_check_config_reads_the_credential_store() {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("skipped: the credential store is read only when check-config runs as root");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let path = write_config(dir.path(), KEYLESS);
    let out = run(check_config().arg("--config").arg(&path));
    assert_eq!(out.code, Some(78), "no keys anywhere: {}", out.stderr);
    assert!(
        out.stderr.contains("paywall.api_key_private"),
        "{}",
        out.stderr
    );

    let store = dir.path().join("credstore");
    std::fs::create_dir(&store).unwrap();
    std::fs::write(store.join("pos-agent.api_key_private"), "CRED-SECRET\n").unwrap();
    std::fs::write(store.join("pos-agent.api_client_private"), "CRED-SECRET").unwrap();
    std::fs::write(
        store.join("pos-agent.service_parameters"),
        "Reporting_ApiKey = \"PARAM-SECRET\"\n",
    )
    .unwrap();
    let out = run(check_config()
        .arg("--config")
        .arg(&path)
        .env("POS_AGENT_CREDENTIAL_STORES", &store));
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    let expected = format!(
        "api_key_private = \"<redacted>\"  # from credential file {}",
        store.join("pos-agent.api_key_private").display()
    );
    assert!(out.stdout.contains(&expected), "{}", out.stdout);
    assert!(
        out.stdout.contains(&format!(
            "service_parameters = {{ \"Reporting_ApiKey\" = \"<redacted>\" }}  # from credential file {}",
            store.join("pos-agent.service_parameters").display()
        )),
        "{}",
        out.stdout
    );
}

#[test]
fn service_parameters_come_from_their_credential_like_the_keys() {
    let dir = tempfile::tempdir().unwrap();
    let path = write_config(dir.path(), VALID);
    let credentials = dir.path().join("credentials");
    std::fs::create_dir(&credentials).unwrap();
    std::fs::write(
        credentials.join("service_parameters"),
        "Reporting_ApiKey = \"PARAM-SECRET\"\nPassword = \"CRED-SECRET\"\n",
    )
    .unwrap();
    let out = run(check_config()
        .arg("--config")
        .arg(&path)
        .env("CREDENTIALS_DIRECTORY", &credentials));
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    assert!(
        out.stdout.contains("\"Password\" = \"<redacted>\""),
        "{}",
        out.stdout
    );
    std::fs::write(credentials.join("service_parameters"), "Password = [\n").unwrap();
    let out = run(check_config()
        .arg("--config")
        .arg(&path)
        .env("CREDENTIALS_DIRECTORY", &credentials));
    assert_eq!(out.code, Some(78));
    assert!(
        out.stderr
            .contains("connection.establish.service_parameters"),
        "{}",
        out.stderr
    );
}

#[test]
fn check_config_fails_like_run_without_a_ca_bundle_or_a_known_connection_id() {
    let dir = tempfile::tempdir().unwrap();
    let path = write_config(dir.path(), VALID);
    let out = run(check_config()
        .arg("--config")
        .arg(&path)
        .env("SSL_CERT_FILE", dir.path().join("missing.pem")));
    assert_eq!(out.code, Some(78), "{}", out.stdout);
    assert!(out.stderr.contains("CA certificates"), "{}", out.stderr);

    let state = dir.path().join("state");
    let no_id = format!(
        "[paywall]\nphysical_api_url = \"https://physical.example\"\napi_key_private = \"FILE-SECRET-KEY\"\n\
         api_client_private = \"FILE-SECRET-CLIENT\"\n[terminal]\ntag_code = \"shop_1\"\n\
         [state]\ndirectory = \"{}\"\n",
        state.display()
    );
    let path = write_config(dir.path(), &no_id);
    let out = run(check_config().arg("--config").arg(&path));
    assert_eq!(out.code, Some(78), "{}", out.stdout);
    assert!(out.stderr.contains("connection.id"), "{}", out.stderr);
    // `run` would then exit 78 too; with an Id in state both go ahead.
    let mut store = pos_agent::state::StateStore::open(&state).unwrap();
    store
        .set_connection_id(Some("70b2190b-e47b-455f-b05e-8c132a055300".into()))
        .unwrap();
    store.commit().wait().unwrap();
    let out = run(check_config().arg("--config").arg(&path));
    assert_eq!(out.code, Some(0), "{}", out.stderr);
}

#[test]
fn a_malformed_proxy_variable_exits_78_naming_it_in_check_config_and_run() {
    let dir = tempfile::tempdir().unwrap();
    let path = write_config(dir.path(), VALID);
    for (name, value) in [
        ("HTTPS_PROXY", "http://agent:pw-77ab@proxy.example:notaport"),
        ("ALL_PROXY", "socks5://agent:pw-77ab@proxy.example:1080"),
        ("NO_PROXY", "http://pw-77ab.example"),
    ] {
        let checked = run(check_config().arg("--config").arg(&path).env(name, value));
        let started = run(clean("run").arg("--config").arg(&path).env(name, value));
        for out in [checked, started] {
            assert_eq!(out.code, Some(78), "{name}: {}", out.stderr);
            assert!(out.stderr.contains(name), "{name}: {}", out.stderr);
            assert!(!out.stderr.contains("pw-77ab"), "{}", out.stderr);
            assert!(!out.stdout.contains("pw-77ab"), "{}", out.stdout);
        }
    }
}

#[test]
fn check_config_prints_the_proxy_from_the_environment_without_its_password() {
    let dir = tempfile::tempdir().unwrap();
    let path = write_config(dir.path(), VALID);
    let out = run(check_config()
        .arg("--config")
        .arg(&path)
        .env("https_proxy", "agent:pw-77ab@proxy.example:3128")
        .env("NO_PROXY", "localhost,10.0.0.0/8"));
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    assert!(
        out.stdout.contains(
            "# proxy: http://agent:<redacted>@proxy.example:3128 (from environment variable https_proxy)"
        ),
        "{}",
        out.stdout
    );
    assert!(out
        .stdout
        .contains("# reached without the proxy (NO_PROXY): localhost,10.0.0.0/8"));
    assert!(!out.stdout.contains("pw-77ab"), "{}", out.stdout);
    let direct = run(check_config().arg("--config").arg(&path));
    assert!(direct
        .stdout
        .contains("# proxy: none, the payment API is reached directly"));
}

use std::path::PathBuf;
use std::time::Duration;

use secrecy::ExposeSecret;

use super::*;

// Whole files, valid or refused with the errors they must produce, are cases in
// tests/config_cases/ (run through the real check-config); what needs the environment,
// credentials or the typed result stays here.
const VALID: &str = r#"
[paywall]
physical_api_url = "https://physical.example"
api_key_private = "file-key-private"
api_client_private = "file-client-private"

[terminal]
tag_code = "shop_1"
"#;

fn load_text(text: &str, env: &[(&str, &str)]) -> Result<Config, ConfigError> {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("agent.toml");
    std::fs::write(&path, text).unwrap();
    load_with(&path, &EnvSnapshot::from_vars(env.iter().copied()))
}

/// `VALID` with `line` added under `[section]`.
fn with(section: &str, line: &str) -> String {
    let header = format!("[{section}]\n");
    if VALID.contains(&header) {
        VALID.replace(&header, &format!("{header}{line}\n"))
    } else {
        format!("{VALID}\n{header}{line}\n")
    }
}

fn only_problem(result: Result<Config, ConfigError>) -> Problem {
    let error = result.expect_err("the configuration should be refused");
    assert_eq!(error.problems.len(), 1, "{error}");
    error.problems[0].clone()
}

#[test]
fn minimal_file_gets_the_spec_defaults() {
    let config = load_text(VALID, &[]).unwrap();
    assert_eq!(config.paywall.request_timeout, Duration::from_secs(10));
    assert_eq!(config.terminal.payment_timeout, Duration::from_secs(600));
    assert_eq!(config.terminal.sale_reply_deadline, Duration::from_secs(20));
    assert_eq!(config.serial.baud_rate, 115_200);
    assert_eq!(config.shutdown.concurrency, 8);
    assert_eq!(config.log.level, "info");
    assert_eq!(config.provenance.secrets["api_key_private"], Source::File);
}

#[test]
fn environment_overrides_parse_numbers_bools_and_nested_keys() {
    let text = with(
        "connection.establish",
        "name = \"n\"\nbrand_id = 10\nprovider_id = 10\nregion_id = 1\nend_of_day_id = 10",
    );
    let config = load_text(
        &text,
        &[
            ("POS_AGENT__SERIAL__DEVICE", "/dev/ttyUSB0"),
            ("POS_AGENT__SHUTDOWN__CONCURRENCY", "4"),
            ("POS_AGENT__PAYWALL__ALLOW_INSECURE_HTTP", "true"),
            ("POS_AGENT__PAYWALL__PHYSICAL_API_URL", "http://127.0.0.1:9"),
            ("POS_AGENT__CONNECTION__ESTABLISH__BRAND_ID", "42"),
            ("POS_AGENT__TERMINAL__TAG_CODE", "007"),
            ("POS_AGENT_CONFIG", "/not/an/override"),
        ],
    )
    .unwrap();
    assert_eq!(config.serial.device, PathBuf::from("/dev/ttyUSB0"));
    assert_eq!(config.shutdown.concurrency, 4);
    assert!(config.paywall.allow_insecure_http);
    assert_eq!(config.connection.establish.as_ref().unwrap().brand_id, 42);
    // Strings that look like numbers stay strings, leading zeros included.
    assert_eq!(config.terminal.tag_code.as_deref(), Some("007"));
}

#[test]
fn service_parameter_override_keeps_the_case_of_its_name() {
    let text = with(
        "connection.establish",
        "name = \"n\"\nbrand_id = 10\nprovider_id = 10\nregion_id = 1\nend_of_day_id = 10",
    );
    let variable = "POS_AGENT__CONNECTION__ESTABLISH__SERVICE_PARAMETERS__Reporting_ApiKey";
    let config = load_text(&text, &[(variable, "param")]).unwrap();
    let parameters = &config
        .connection
        .establish
        .as_ref()
        .unwrap()
        .service_parameters;
    assert_eq!(parameters["Reporting_ApiKey"].expose_secret(), "param");
    let nested = "POS_AGENT__CONNECTION__ESTABLISH__SERVICE_PARAMETERS__Api__Key";
    let config = load_text(&text, &[(nested, "param")]).unwrap();
    assert!(config
        .connection
        .establish
        .as_ref()
        .unwrap()
        .service_parameters
        .contains_key("Api__Key"));
    let problem = only_problem(load_text(VALID, &[(variable, "param")]));
    assert!(problem.to_string().contains(variable), "{problem}");
}

#[test]
fn empty_environment_override_is_ignored() {
    let config = load_text(VALID, &[("POS_AGENT__SERIAL__DEVICE", "")]).unwrap();
    assert_eq!(config.serial.device, defaults::device());
}

#[test]
fn secrets_from_the_environment_are_recorded_as_such() {
    let config = load_text(VALID, &[("POS_AGENT__PAYWALL__API_KEY_PRIVATE", "env-key")]).unwrap();
    assert_eq!(
        config
            .paywall
            .api_key_private
            .as_ref()
            .unwrap()
            .expose_secret(),
        "env-key"
    );
    assert_eq!(
        config.provenance.secrets["api_key_private"],
        Source::Environment("POS_AGENT__PAYWALL__API_KEY_PRIVATE".into())
    );
}

#[test]
fn credentials_directory_wins_and_loses_one_trailing_newline() {
    let credentials = tempfile::tempdir().unwrap();
    std::fs::write(credentials.path().join("api_key_private"), "cred-key\n").unwrap();
    std::fs::write(credentials.path().join("api_client_public"), "pub-client").unwrap();
    std::fs::write(credentials.path().join("api_key_public"), "pub-key\r\n").unwrap();
    let dir = credentials.path().to_str().unwrap();
    let config = load_text(VALID, &[("CREDENTIALS_DIRECTORY", dir)]).unwrap();
    assert_eq!(
        config
            .paywall
            .api_key_private
            .as_ref()
            .unwrap()
            .expose_secret(),
        "cred-key"
    );
    assert_eq!(
        config
            .paywall
            .api_key_public
            .as_ref()
            .unwrap()
            .expose_secret(),
        "pub-key"
    );
    assert_eq!(
        config
            .paywall
            .api_client_private
            .as_ref()
            .unwrap()
            .expose_secret(),
        "file-client-private"
    );
    assert_eq!(
        config.provenance.secrets["api_key_private"],
        Source::Credentials(credentials.path().join("api_key_private"))
    );
}

#[test]
fn private_keys_may_come_only_from_credentials() {
    let credentials = tempfile::tempdir().unwrap();
    std::fs::write(credentials.path().join("api_key_private"), "k").unwrap();
    std::fs::write(credentials.path().join("api_client_private"), "c").unwrap();
    let text =
        "[paywall]\nphysical_api_url = \"https://p.example\"\n[terminal]\ntag_code = \"t\"\n";
    let dir = credentials.path().to_str().unwrap();
    assert!(load_text(text, &[("CREDENTIALS_DIRECTORY", dir)]).is_ok());
}

#[test]
fn unreadable_credential_names_its_file() {
    let credentials = tempfile::tempdir().unwrap();
    std::fs::create_dir(credentials.path().join("api_key_private")).unwrap();
    let dir = credentials.path().to_str().unwrap();
    let error = load_text(VALID, &[("CREDENTIALS_DIRECTORY", dir)]).unwrap_err();
    assert_eq!(error.problems[0].kind, ProblemKind::Credential);
    assert!(
        error
            .to_string()
            .contains(&format!("{dir}/api_key_private")),
        "{error}"
    );
}

#[test]
fn unknown_key_from_the_environment_names_the_variable() {
    let error = load_text(VALID, &[("POS_AGENT__SERIAL__BAUD", "1")]).unwrap_err();
    assert!(
        error.to_string().contains("POS_AGENT__SERIAL__BAUD"),
        "{error}"
    );
}

#[test]
fn error_names_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("agent.toml");
    std::fs::write(&path, with("serial", "data_bits = 9")).unwrap();
    let error = load_with(&path, &EnvSnapshot::default()).unwrap_err();
    assert!(error.to_string().contains(&path.display().to_string()));
    let missing = load_with(&dir.path().join("nope.toml"), &EnvSnapshot::default()).unwrap_err();
    assert_eq!(missing.problems[0].kind, ProblemKind::Unreadable);
    assert!(missing.to_string().contains("nope.toml"));
}

#[test]
fn state_directory_and_control_socket_fall_back_to_systemd_then_defaults() {
    let config = load_text(VALID, &[]).unwrap();
    let none = EnvSnapshot::default();
    assert_eq!(
        config.state_directory(&none),
        PathBuf::from("/var/lib/pos-agent")
    );
    assert_eq!(
        config.control_socket(&none),
        PathBuf::from("/run/pos-agent/control.sock")
    );
    let systemd = EnvSnapshot::from_vars([
        ("STATE_DIRECTORY", "/var/lib/a:/var/lib/b"),
        ("RUNTIME_DIRECTORY", "/run/a"),
    ]);
    assert_eq!(
        config.state_directory(&systemd),
        PathBuf::from("/var/lib/a")
    );
    assert_eq!(
        config.control_socket(&systemd),
        PathBuf::from("/run/a/control.sock")
    );
    let text = with("state", "directory = \"/srv/s\"") + "\n[control]\nsocket = \"/srv/c.sock\"\n";
    let configured = load_text(&text, &[]).unwrap();
    assert_eq!(
        configured.state_directory(&systemd),
        PathBuf::from("/srv/s")
    );
    assert_eq!(
        configured.control_socket(&systemd),
        PathBuf::from("/srv/c.sock")
    );
}

#[test]
fn rendered_configuration_redacts_secrets_and_parses_back() {
    let text = with(
        "connection.establish",
        "name = \"n\"\nbrand_id = 10\nprovider_id = 10\nregion_id = 1\nend_of_day_id = 10\n\
         service_parameters = { Reporting_ApiKey = \"PARAM-SECRET\" }",
    );
    let config = load_text(&with("serial", "ack_timeout = \"1500ms\""), &[]).unwrap();
    let rendered = render_effective(&config);
    assert!(!rendered.contains("file-key-private"));
    assert!(rendered.contains("api_key_private = \"<redacted>\"  # from the configuration file"));
    let reparsed = load_text(&rendered, &[]).unwrap();
    assert_eq!(reparsed.serial.ack_timeout, Duration::from_millis(1500));
    assert_eq!(
        render_effective(&reparsed)
            .lines()
            .skip(2)
            .collect::<Vec<_>>(),
        rendered.lines().skip(2).collect::<Vec<_>>()
    );

    let with_parameters = load_text(&text, &[]).unwrap();
    let rendered = render_effective(&with_parameters);
    assert!(!rendered.contains("PARAM-SECRET"));
    assert!(
        rendered.contains("\"Reporting_ApiKey\" = \"<redacted>\""),
        "{rendered}"
    );
}

#[test]
fn debug_output_shows_no_secret() {
    let config = load_text(
        VALID,
        &[("POS_AGENT__PAYWALL__API_CLIENT_PRIVATE", "env-secret")],
    )
    .unwrap();
    let shown = format!("{config:?}");
    assert!(!shown.contains("file-key-private") && !shown.contains("env-secret"));
    let env = EnvSnapshot::from_vars([("POS_AGENT__PAYWALL__API_KEY_PRIVATE", "env-secret")]);
    assert!(!format!("{env:?}").contains("env-secret"));
}

#[test]
fn a_reload_takes_new_keys_and_nothing_needs_a_restart() {
    let running = load_text(VALID, &[]).unwrap();
    let rotated = load_text(&VALID.replace("file-key-private", "new-key"), &[]).unwrap();
    let reloaded = reloaded(&running, rotated);
    assert!(
        reloaded.needs_restart.is_empty(),
        "{:?}",
        reloaded.needs_restart
    );
    let private = &reloaded.config.paywall_settings.private;
    assert_eq!(private.key.to_str().unwrap(), "new-key");
    let secret = reloaded
        .config
        .paywall
        .secret(SecretKey::ApiKeyPrivate)
        .unwrap();
    assert_eq!(secret.expose_secret(), "new-key");
}

#[test]
fn a_reload_names_other_changes_and_keeps_their_running_value() {
    let running = load_text(VALID, &[]).unwrap();
    let changed =
        with("terminal", "payment_timeout = \"90s\"") + "[serial]\ndevice = \"/dev/ttyS2\"\n";
    let reloaded = reloaded(&running, load_text(&changed, &[]).unwrap());
    assert_eq!(
        reloaded.needs_restart,
        ["serial.device", "terminal.payment_timeout"]
    );
    assert_eq!(reloaded.config.serial.device, running.serial.device);
    assert_eq!(
        reloaded.config.terminal.payment_timeout,
        running.terminal.payment_timeout
    );
}

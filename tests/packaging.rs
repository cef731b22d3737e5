//! What the Debian package ships agrees with the agent: the example configuration parses, and the
//! unit gives the agent's shutdown more time than its own deadline (agent.md §3, §5, §6).

use std::time::Duration;

use pos_agent::config::Config;

fn repository_file(path: &str) -> String {
    let full = format!("{}/{path}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read_to_string(&full).unwrap_or_else(|error| panic!("{full}: {error}"))
}

/// The value of the first `Key=` line of a unit file.
fn unit_setting(unit: &str, key: &str) -> String {
    let prefix = format!("{key}=");
    unit.lines()
        .find_map(|line| line.strip_prefix(&prefix))
        .unwrap_or_else(|| panic!("{key}= missing"))
        .trim()
        .to_owned()
}

#[test]
fn packaged_example_configuration_parses_with_no_secrets_in_it() {
    let text = repository_file("packaging/agent.example.toml");
    let config: Config = config::Config::builder()
        .add_source(config::File::from_str(&text, config::FileFormat::Toml))
        .build()
        .unwrap()
        .try_deserialize()
        .unwrap();
    assert_eq!(config.shutdown.deadline, Duration::from_secs(30));
    assert!(config.paywall.api_key_private.is_none());
    assert!(config.paywall.api_client_private.is_none());
    assert!(config.paywall.api_key_public.is_none());
    assert!(config.paywall.api_client_public.is_none());
}

#[test]
fn unit_stop_timeout_leaves_room_for_the_shutdown_deadline() {
    let unit = repository_file("systemd/pos-agent.service");
    let stop_timeout = humantime::parse_duration(&unit_setting(&unit, "TimeoutStopSec")).unwrap();
    let deadline = pos_agent::config::defaults::deadline();
    assert!(
        stop_timeout >= deadline + Duration::from_secs(10),
        "TimeoutStopSec={stop_timeout:?} must exceed the shutdown deadline {deadline:?} with room to persist and exit"
    );
}

#[test]
fn unit_runs_the_daemon_as_a_notify_service_with_a_watchdog() {
    let unit = repository_file("systemd/pos-agent.service");
    assert_eq!(unit_setting(&unit, "Type"), "notify");
    assert_eq!(
        unit_setting(&unit, "ExecStart"),
        "/usr/bin/pos-agent run --config /etc/pos-agent/agent.toml"
    );
    assert_eq!(unit_setting(&unit, "RestartPreventExitStatus"), "78");
    let watchdog = humantime::parse_duration(&unit_setting(&unit, "WatchdogSec")).unwrap();
    assert!(
        watchdog >= Duration::from_secs(10),
        "WatchdogSec={watchdog:?} is too tight"
    );
    for key in [
        "api_key_private",
        "api_client_private",
        "api_key_public",
        "api_client_public",
    ] {
        assert!(
            unit.contains(&format!("LoadCredential={key}:pos-agent.{key}\n")),
            "credential {key} is not loaded"
        );
    }
}

#[test]
fn socket_unit_listens_where_the_agent_expects_its_control_socket() {
    let socket = repository_file("systemd/pos-agent.socket");
    assert_eq!(
        unit_setting(&socket, "ListenStream"),
        "/run/pos-agent/control.sock"
    );
    assert_eq!(unit_setting(&socket, "SocketMode"), "0660");
    let sysusers = repository_file("systemd/pos-agent.sysusers");
    let group = unit_setting(&socket, "SocketGroup");
    assert!(
        sysusers
            .lines()
            .any(|line| line.split_whitespace().take(2).eq(["g", group.as_str()])),
        "the package must create the socket's group {group}"
    );
}

//! What the Debian package ships agrees with the agent: the example configuration parses, and the
//! unit gives the agent's shutdown more time than its own deadline (docs/architecture.md (Data flow of a shutdown), docs/configuration.md `[shutdown]`, docs/deployment.md).

use std::time::Duration;

use pos_agent::config::{self, EnvSnapshot, Source};

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
fn packaged_example_configuration_loads_with_the_keys_from_systemd_credentials() {
    let example = std::path::PathBuf::from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/packaging/agent.example.toml"
    ));
    // No secrets in the example: without credentials the required keys are missing.
    let error = config::load_with(
        &example,
        &EnvSnapshot::from_vars(Vec::<(String, String)>::new()),
    )
    .unwrap_err();
    assert!(error.to_string().contains("api_key_private"), "{error}");

    // $CREDENTIALS_DIRECTORY as systemd fills it from /etc/credstore/pos-agent.<key>.
    let credentials = tempfile::tempdir().unwrap();
    for key in config::SECRET_KEYS {
        std::fs::write(credentials.path().join(key), format!("{key}-value\n")).unwrap();
    }
    let env = EnvSnapshot::from_vars([(
        "CREDENTIALS_DIRECTORY".to_owned(),
        credentials.path().display().to_string(),
    )]);
    let loaded = config::load_with(&example, &env).unwrap();
    assert_eq!(loaded.shutdown.deadline, Duration::from_secs(30));
    for key in config::SECRET_KEYS {
        assert!(
            matches!(
                loaded.provenance.source_of(&format!("paywall.{key}")),
                Source::Credentials(_)
            ),
            "{key} did not come from the credentials"
        );
    }
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
    assert_eq!(unit_setting(&unit, "RestartPreventExitStatus"), "78 74");
    // `restart --keep-pending` (3) is restarted, with `--no-start` (4) it is not; neither
    // is a failure (docs/operations.md, "The daemon: `pos-agent run`").
    assert_eq!(unit_setting(&unit, "SuccessExitStatus"), "3 4");
    assert_eq!(unit_setting(&unit, "RestartForceExitStatus"), "3");
    assert!(
        unit_setting(&unit, "ExecStopPost").contains("78|74|4)"),
        "after exit 4 the socket is stopped too, so no command starts the agent again"
    );
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

#[test]
fn the_socket_directory_is_not_a_runtime_directory_of_the_dynamic_user_service() {
    // DynamicUser= moves a RuntimeDirectory= into /run/private (0700), where operators cannot
    // reach the socket; tests/system/ shows an operator using it under a real systemd.
    let service = repository_file("systemd/pos-agent.service");
    assert!(
        !service
            .lines()
            .any(|line| line.trim_start().starts_with("RuntimeDirectory")),
        "pos-agent.service must not own a RuntimeDirectory="
    );
    assert_eq!(unit_setting(&service, "DynamicUser"), "yes");
}

#[test]
fn the_socket_stops_with_the_service_so_no_command_starts_a_stopped_agent() {
    let socket = repository_file("systemd/pos-agent.socket");
    assert_eq!(unit_setting(&socket, "PartOf"), "pos-agent.service");
    assert_eq!(unit_setting(&socket, "RemoveOnStop"), "yes");
    let service = repository_file("systemd/pos-agent.service");
    assert_eq!(unit_setting(&service, "Requires"), "pos-agent.socket");
}

/// The `[package.metadata.deb] assets` of Cargo.toml: (source, destination) pairs.
fn package_assets() -> Vec<(String, String)> {
    let cargo = repository_file("Cargo.toml");
    let start = cargo.find("assets = [").expect("assets in Cargo.toml");
    let end = start + cargo[start..].find("\n]").expect("end of assets");
    cargo[start..end]
        .lines()
        .filter_map(|line| {
            let fields: Vec<&str> = line.split('"').collect();
            (fields.len() >= 5).then(|| (fields[1].to_owned(), fields[3].to_owned()))
        })
        .collect()
}

#[test]
fn the_installed_deployment_guide_points_only_at_documents_the_package_installs() {
    let assets = package_assets();
    let guide = repository_file("docs/deployment.md");
    let installed_docs: Vec<&str> = assets
        .iter()
        .filter(|(_, to)| to.starts_with("usr/share/doc/pos-agent/"))
        .map(|(from, _)| from.as_str())
        .collect();
    for word in guide.split(|c: char| c == '`' || c.is_whitespace() || c == '(' || c == ')') {
        let word = word.trim_end_matches([',', '.', ';', ':']);
        if let Some(doc) = word
            .strip_prefix("docs/")
            .filter(|rest| rest.ends_with(".md"))
        {
            assert!(
                installed_docs.contains(&format!("docs/{doc}").as_str()),
                "docs/deployment.md points at docs/{doc}, which the package does not install"
            );
        }
        assert!(
            !word.contains(concat!("shared", "/")) && !word.starts_with(concat!("agent", ".md")),
            "the installed guide points outside the package: {word}"
        );
    }
}

#[test]
fn the_unit_hands_over_every_credential_the_agent_reads() {
    let unit = repository_file("systemd/pos-agent.service");
    for id in config::SECRET_KEYS.iter().chain(&[
        config::SERVICE_PARAMETERS_CREDENTIAL,
        config::PROXY_CREDENTIAL,
    ]) {
        let line = format!(
            "LoadCredential={id}:{}{id}",
            config::CREDENTIAL_STORE_PREFIX
        );
        assert!(unit.lines().any(|l| l == line), "{line} missing");
    }
    assert!(
        !repository_file("packaging/agent.example.toml").contains("Environment="),
        "secrets never go to Environment= (any user can read it with systemctl show)"
    );
}

#[test]
fn usb_serial_drivers_are_loaded_at_boot_for_the_devices_the_unit_allows() {
    let unit = repository_file("systemd/pos-agent.service");
    let modules = repository_file("systemd/pos-agent.modules-load");
    let loaded: Vec<&str> = modules
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .collect();
    // The driver that registers each USB class's major (see /proc/devices).
    for (class, module) in [("char-ttyUSB", "usbserial"), ("char-ttyACM", "cdc_acm")] {
        if unit.contains(&format!("DeviceAllow={class} ")) {
            assert!(
                loaded.contains(&module),
                "{class} allowed but {module} not loaded"
            );
        }
    }
    assert!(package_assets()
        .iter()
        .any(|(from, to)| from == "systemd/pos-agent.modules-load"
            && to == "usr/lib/modules-load.d/pos-agent.conf"));
}

#[test]
fn the_health_gate_is_required_by_boot_complete_within_a_bounded_wait() {
    let unit = repository_file("systemd/pos-agent-healthy.service");
    assert_eq!(unit_setting(&unit, "Type"), "oneshot");
    assert_eq!(unit_setting(&unit, "Before"), "boot-complete.target");
    assert_eq!(unit_setting(&unit, "RequiredBy"), "boot-complete.target");
    assert_eq!(
        unit_setting(&unit, "ExecStart"),
        "/usr/bin/pos-agent check-health --wait ${POS_AGENT_HEALTH_WAIT}"
    );
    let environment: Vec<&str> = unit
        .lines()
        .filter_map(|line| line.strip_prefix("Environment="))
        .collect();
    let wait = environment
        .iter()
        .find_map(|e| e.strip_prefix("POS_AGENT_HEALTH_WAIT="))
        .expect("the wait is POS_AGENT_HEALTH_WAIT");
    let wait = humantime::parse_duration(wait).unwrap();
    // By default the gate judges the release, not the store's network: nothing outside it is
    // required (docs/deployment.md, "Updates that roll back by themselves").
    assert!(
        environment.contains(&"POS_AGENT_HEALTH_REQUIRE="),
        "{environment:?}"
    );
    let timeout = humantime::parse_duration(&unit_setting(&unit, "TimeoutStartSec")).unwrap();
    assert!(
        timeout >= wait + Duration::from_secs(10),
        "TimeoutStartSec={timeout:?} must leave the check its whole wait {wait:?}"
    );
    // The check reads the control socket, root:pos-agent-operators 0660.
    assert_eq!(
        unit_setting(&unit, "SupplementaryGroups"),
        unit_setting(&repository_file("systemd/pos-agent.socket"), "SocketGroup")
    );
    assert!(package_assets()
        .iter()
        .any(|(from, to)| from == "systemd/pos-agent-healthy.service"
            && to == "usr/lib/systemd/system/pos-agent-healthy.service"));
    assert!(
        repository_file("packaging/debian/prerm")
            .contains("systemctl --no-reload disable pos-agent-healthy.service"),
        "removing the package must disable the gate"
    );
}

#[test]
fn systemctl_reload_sends_the_agent_sighup() {
    let unit = repository_file("systemd/pos-agent.service");
    assert_eq!(
        unit_setting(&unit, "ExecReload"),
        r#"/bin/sh -c 'kill -HUP "$$MAINPID"'"#
    );
    // With Type=notify the agent's RELOADING=1 / READY=1 are what systemd waits on.
    assert_eq!(unit_setting(&unit, "Type"), "notify");
}

#[test]
fn purge_removes_every_credential_the_unit_loads_plain_and_encrypted() {
    let unit = repository_file("systemd/pos-agent.service");
    let postrm = repository_file("packaging/debian/postrm");
    let removes = |file: &str| {
        postrm.lines().any(|line| {
            line.trim_start().starts_with("rm -f")
                && line.split_whitespace().any(|word| word == file)
        })
    };
    let mut loaded = 0;
    for line in unit.lines() {
        let Some(file) = line
            .strip_prefix("LoadCredential=")
            .and_then(|l| l.split_once(':'))
            .map(|(_, file)| file)
        else {
            continue;
        };
        loaded += 1;
        assert!(
            file.starts_with(config::CREDENTIAL_STORE_PREFIX),
            "{file} is not under the prefix purge removes"
        );
    }
    assert!(loaded >= 6, "{loaded} credentials");
    for store in ["/etc/credstore", "/etc/credstore.encrypted"] {
        let glob = format!("{store}/{}*", config::CREDENTIAL_STORE_PREFIX);
        assert!(removes(&glob), "postrm does not remove {glob}");
    }
}

#[test]
fn purge_run_in_a_private_mount_namespace_leaves_no_credential_of_the_agent() {
    // The real postrm, on empty file systems mounted over the stores in a mount namespace of
    // its own: nothing of the machine is touched. Needs root (the system stage runs it for real).
    let postrm = format!("{}/packaging/debian/postrm", env!("CARGO_MANIFEST_DIR"));
    let script = r#"
        mount --make-rprivate / || exit 90
        for d in /etc/credstore /etc/credstore.encrypted /etc/pos-agent; do
            mkdir -p "$d" && mount -t tmpfs tmpfs "$d" || exit 90
        done
        for c in api_key_private api_client_private api_key_public api_client_public \
                 service_parameters https_proxy; do
            echo x >"/etc/credstore/pos-agent.$c" && echo x >"/etc/credstore.encrypted/pos-agent.$c" || exit 90
        done
        echo x >/etc/credstore/other-service.key && echo x >/etc/pos-agent/agent.toml || exit 90
        sh "$1" purge >/dev/null || exit 91
        ls -A /etc/credstore /etc/credstore.encrypted /etc/pos-agent
    "#;
    let out = std::process::Command::new("unshare")
        .args(["-m", "sh", "-c", script, "sh", &postrm])
        .output();
    let out = match out {
        Ok(out) if out.status.code() != Some(90) && out.status.code() != Some(1) => out,
        _ => {
            eprintln!("note: skipped, no private mount namespace here (needs root)");
            return;
        }
    };
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let listing = String::from_utf8_lossy(&out.stdout);
    assert!(!listing.contains("pos-agent."), "{listing}");
    assert!(!listing.contains("agent.toml"), "{listing}");
    assert!(listing.contains("other-service.key"), "{listing}");
}

//! Accountability (docs/operations.md, "Audit records"): the real daemon writes exactly one audit
//! record for every operator action, successful or failing, naming who asked (uid, user, pid),
//! what, which payment, connection, session or checkout, and the outcome; the terminal's actions
//! are recorded as the terminal's; read-only polls write none at info.
//!
//! The daemon's stderr is the log here (tracing's text format: `target: message key=value ...`);
//! under systemd the same fields are journal fields in capitals (`OPERATOR_UID=`), which the
//! system test (tests/system/) queries with `journalctl`.

use crate::support;

use crate::support::daemon::{Agent, Setup};
use pos_agent::serial::message::{PaymentResultStatus, Reply, TerminalRequest};
use uuid::Uuid;

const AUDIT: &str = " pos_agent::audit: ";

/// The audit records in `log`.
fn records(log: &str) -> Vec<String> {
    log.lines()
        .filter(|line| line.contains(AUDIT))
        .map(str::to_owned)
        .collect()
}

/// `key=value` of a field printed after the message (tracing's text format).
fn field<'a>(line: &'a str, key: &str) -> Option<&'a str> {
    let start = line.find(&format!(" {key}="))? + key.len() + 2;
    let value = &line[start..];
    let value = match value.strip_prefix('"') {
        Some(quoted) => &quoted[..quoted.find('"').unwrap_or(quoted.len())],
        None => value.split(' ').next().unwrap_or(value),
    };
    Some(value)
}

/// Runs an operator command and returns the one audit record it added.
async fn one_record(agent: &mut Agent, args: &[&str]) -> (support::daemon::CliOutput, String) {
    let before = records(&agent.log()).len();
    let out = agent.cli(args).await;
    let after = records(&agent.log());
    assert_eq!(
        after.len(),
        before + 1,
        "`{}` must add exactly one audit record; {out:?}; records:\n{}",
        args.join(" "),
        after[before..].join("\n")
    );
    (out, after[before].clone())
}

fn assert_fields(record: &str, expected: &[(&str, &str)]) {
    for (key, value) in expected {
        assert_eq!(field(record, key), Some(*value), "{key} in {record}");
    }
}

#[tokio::test]
async fn every_operator_action_yields_one_record_with_who_what_and_outcome() {
    let mut agent = Agent::connected(Setup {
        log_level: "info",
        ..Setup::default()
    })
    .await;
    let me = nix::unistd::getuid().as_raw().to_string();
    let my_name = nix::unistd::User::from_uid(nix::unistd::getuid())
        .unwrap()
        .map_or_else(|| "unknown".to_owned(), |u| u.name);

    // The read-only polls of a health gate leave nothing at info.
    for poll in [
        &["status"][..],
        &["pending"],
        &["metrics"],
        &["check-health"],
    ] {
        let before = records(&agent.log()).len();
        agent.cli(poll).await;
        assert_eq!(
            records(&agent.log()).len(),
            before,
            "{poll:?} wrote a record"
        );
    }

    // The terminal's sale is the terminal's.
    let before = records(&agent.log()).len();
    let paid = agent.started(1250).await;
    let sale = records(&agent.log())[before..].join("\n");
    assert_fields(
        &sale,
        &[
            ("origin", "terminal"),
            ("terminal_command", "sale"),
            ("payment_request_id", paid.as_str()),
            ("outcome", "confirmed"),
        ],
    );
    assert!(
        field(&sale, "terminal_device").is_some_and(|d| d.ends_with("ttyTERMINAL")),
        "{sale}"
    );
    assert!(field(&sale, "terminal_request_id").is_some(), "{sale}");
    assert!(sale.contains("terminal on "), "{sale}");

    // An operator's cancel: who (uid, user, pid), what, which payment, confirmed.
    let (out, record) = one_record(&mut agent, &["cancel", &paid]).await;
    assert_eq!(out.code, Some(0), "{out:?}");
    assert_fields(
        &record,
        &[
            ("origin", "operator"),
            ("operator_uid", me.as_str()),
            ("operator_user", my_name.as_str()),
            ("operator_command", "cancel"),
            ("payment_request_id", paid.as_str()),
            ("outcome", "confirmed"),
        ],
    );
    let pid: i32 = field(&record, "operator_pid").unwrap().parse().unwrap();
    assert!(pid > 0 && pid != agent.pid(), "{record}");
    assert!(
        record.contains(&format!(
            "operator {my_name} (uid {me}, pid {pid}): cancel of payment {paid}: confirmed"
        )),
        "the message stands on its own: {record}"
    );

    // A cancel of a payment that is not pending: not found, one record all the same.
    let unknown = Uuid::new_v4().to_string();
    let (out, record) = one_record(&mut agent, &["cancel", &unknown]).await;
    assert_ne!(out.code, Some(0), "{out:?}");
    assert_fields(
        &record,
        &[
            ("payment_request_id", unknown.as_str()),
            ("outcome", "not_found"),
        ],
    );

    // The unlink and deactivate commands name their target and the API's answer.
    let linked = Uuid::new_v4();
    agent.sim.link_masterpass_session(linked);
    let linked = linked.to_string();
    let (out, record) =
        one_record(&mut agent, &["masterpass-unlink", "--session-id", &linked]).await;
    assert_eq!(out.code, Some(0), "{out:?}");
    assert_fields(
        &record,
        &[
            ("operator_command", "masterpass_unlink"),
            ("session_id", &linked),
            ("outcome", "confirmed"),
        ],
    );
    let stranger = Uuid::new_v4().to_string();
    let (out, record) = one_record(
        &mut agent,
        &["masterpass-unlink", "--session-id", &stranger],
    )
    .await;
    assert_eq!(
        out.code,
        Some(1),
        "the simulator refuses an unknown session: {out:?}"
    );
    assert_fields(
        &record,
        &[("session_id", &stranger), ("outcome", "refused")],
    );
    assert!(
        field(&record, "reason").is_some_and(|r| !r.is_empty()),
        "{record}"
    );
    let (out, record) = one_record(&mut agent, &["checkout-deactivate", "--id", "4711"]).await;
    assert_eq!(out.code, Some(0), "{out:?}");
    assert_fields(
        &record,
        &[
            ("operator_command", "checkout_deactivate"),
            ("checkout_id", "4711"),
            ("outcome", "confirmed"),
        ],
    );
    let (out, record) = one_record(
        &mut agent,
        &[
            "apm-unlink",
            "--phone",
            "905342979639",
            "--apm-key",
            "Masterpass_IFrame",
        ],
    )
    .await;
    assert_eq!(out.code, Some(0), "{out:?}");
    assert_fields(
        &record,
        &[("operator_command", "apm_unlink"), ("outcome", "confirmed")],
    );
    assert!(record.contains("APM key Masterpass_IFrame"), "{record}");

    // cancel --all names every payment it ended.
    let first = agent.started(100).await;
    let second = agent.started(200).await;
    let (out, record) = one_record(&mut agent, &["cancel", "--all"]).await;
    assert_eq!(out.code, Some(0), "{out:?}");
    assert_fields(
        &record,
        &[
            ("operator_command", "cancel --all"),
            ("outcome", "confirmed"),
        ],
    );
    let ids = field(&record, "payment_request_ids").unwrap();
    assert!(ids.contains(&first) && ids.contains(&second), "{record}");

    // disconnect and reconnect name the connection.
    let connection = agent.status().await["connection_id"]
        .as_str()
        .unwrap()
        .to_owned();
    for command in ["disconnect", "reconnect"] {
        let (out, record) = one_record(&mut agent, &[command]).await;
        assert_eq!(out.code, Some(0), "{out:?}");
        assert_fields(
            &record,
            &[
                ("operator_command", command),
                ("connection_id", connection.as_str()),
                ("outcome", "confirmed"),
            ],
        );
    }

    // The terminal's result of a payment is recorded as the terminal's.
    agent.wait_notification("STATUS=connected").await;
    let ended = agent.started(300).await;
    let before = records(&agent.log()).len();
    let reply = agent
        .terminal
        .request(TerminalRequest::PaymentResult {
            payment_request_id: ended.clone(),
            status: PaymentResultStatus::Succeeded,
        })
        .await
        .unwrap();
    assert!(matches!(reply, Reply::Ok(_)), "{reply:?}");
    let added = records(&agent.log())[before..].to_vec();
    assert_eq!(added.len(), 1, "{added:?}");
    assert_fields(
        &added[0],
        &[
            ("origin", "terminal"),
            ("terminal_command", "payment_result succeeded"),
            ("payment_request_id", ended.as_str()),
        ],
    );
    agent.finish().await;
}

#[tokio::test]
async fn read_only_commands_are_recorded_at_debug_only() {
    let mut agent = Agent::connected(Setup::default()).await; // log level debug
    let (out, record) = one_record(&mut agent, &["status"]).await;
    assert_eq!(out.code, Some(0), "{out:?}");
    assert!(record.contains("DEBUG"), "{record}");
    assert_fields(
        &record,
        &[("operator_command", "status"), ("outcome", "confirmed")],
    );
    agent.finish().await;
}

#[tokio::test]
async fn another_users_command_is_recorded_under_that_uid() {
    if !nix::unistd::getuid().is_root() {
        eprintln!("skipped: only root can run a command as another uid");
        return;
    }
    let agent = Agent::connected(Setup {
        log_level: "warn", // actions are recorded whatever the level says
        ..Setup::default()
    })
    .await;
    use std::os::unix::fs::PermissionsExt;
    use std::os::unix::process::CommandExt;
    std::fs::set_permissions(agent.dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::set_permissions(&agent.socket, std::fs::Permissions::from_mode(0o666)).unwrap();
    // A uid with no entry in the user database: named by number, its user unknown.
    let uid = 4242;
    let unknown = Uuid::new_v4().to_string();
    let before = records(&agent.log()).len();
    let mut command = support::pos_agent();
    command
        .args(["cancel", &unknown, "--socket"])
        .arg(&agent.socket)
        .uid(uid)
        .gid(uid);
    let output = tokio::task::spawn_blocking(move || command.output())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(output.status.code(), Some(1), "{output:?}");
    let added = records(&agent.log())[before..].to_vec();
    assert_eq!(added.len(), 1, "{added:?}\nlog:\n{}", agent.log());
    assert_fields(
        &added[0],
        &[
            ("operator_uid", "4242"),
            ("operator_user", "unknown"),
            ("operator_command", "cancel"),
            ("outcome", "not_found"),
        ],
    );
    agent.finish().await;
}

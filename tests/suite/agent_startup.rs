//! The agent daemon starting and serving its manager (docs/architecture.md, docs/operations.md):
//! readiness, the first exchange with the terminal, a start refused on a bad configuration or
//! state file, systemd's notify and control sockets, the watchdog.
//!
//! Each test runs the real binary as a process, with a pseudo-terminal pair and the terminal
//! simulator on it, the payment API simulator on loopback, real state files and real signals. The
//! agent's other behaviours are beside this file: `agent_startup`, `agent_sales`,
//! `agent_shutdown`, `agent_recovery`.

use nix::sys::signal::Signal;
use pos_agent::serial::message::{AgentReadiness, AgentRequest, Reply, SaleOrder, TerminalRequest};
use pos_agent::simulator::api::{Fault, FaultKind};
use uuid::Uuid;

use crate::support;
use crate::support::daemon::{agent_state, Agent, Setup};
use crate::support::WAIT;

/// The terminal's end of the pty pair (its master, opened on `/dev/ptmx`) is close-on-exec: a
/// daemon that inherited it would hold the line open after the terminal hangs up, and so would
/// every daemon a test starts while another test holds a pair.
#[tokio::test]
async fn the_daemon_holds_the_line_but_not_the_terminals_end_of_it() {
    let agent = Agent::start(Setup::default()).await;
    let fds = format!("/proc/{}/fd", agent.pid());
    let open_files = || -> Vec<std::path::PathBuf> {
        std::fs::read_dir(&fds)
            .unwrap()
            .filter_map(|entry| std::fs::read_link(entry.ok()?.path()).ok())
            .collect()
    };
    // The daemon opens the slave (`/dev/pts/N`) as its serial device: seeing it shows the list
    // is the daemon's.
    let deadline = std::time::Instant::now() + WAIT;
    let mut files = open_files();
    while !files.iter().any(|f| f.starts_with("/dev/pts/")) {
        assert!(
            std::time::Instant::now() < deadline,
            "the daemon never opened its serial device; its files: {files:?}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        files = open_files();
    }
    assert!(
        !files.iter().any(|f| f.ends_with("ptmx")),
        "the daemon holds a pty master: {files:?}"
    );
    agent.finish().await;
}

#[tokio::test]
async fn ready_is_notified_and_status_reports_the_established_connection() {
    let mut agent = Agent::start(Setup::default()).await;
    agent_state(&mut agent, AgentReadiness::Ready).await;
    let status = agent.wait_notification("STATUS=connected").await;
    assert!(status.contains("terminal"), "{status}");
    assert!(
        !agent
            .notifications()
            .iter()
            .any(|n| n.contains("WATCHDOG=1")),
        "no watchdog pets without WATCHDOG_USEC"
    );
    let report = agent.status().await;
    assert_eq!(report["connection"], "connected");
    assert_eq!(report["version"], env!("CARGO_PKG_VERSION"));
    support::assert_build_commit(report["commit"].as_str().expect("status --json: commit"));
    let id = report["connection_id"]
        .as_str()
        .expect("connection id")
        .to_owned();
    assert!(agent
        .sim
        .connections()
        .iter()
        .any(|c| c.id == id && c.is_connected));
    assert_eq!(agent.state_file()["connection_id"], id.as_str());
    agent.finish().await;
}

/// docs/serial-protocol.md §3 "Versions": the agent announces its protocol version and build in
/// `agent_state` `ready`; the terminal's answer names it, and `status` (both forms) and the
/// metrics show who the terminal is.
#[tokio::test]
async fn the_first_exchange_carries_versions_and_status_and_metrics_name_the_terminal() {
    let mut agent = Agent::start(Setup::default()).await;
    let (protocol, build) = agent
        .notification(|n| match n {
            AgentRequest::AgentState {
                state: AgentReadiness::Ready,
                protocol,
                agent,
            } => Some((protocol, agent)),
            _ => None,
        })
        .await;
    assert_eq!(protocol, Some(1));
    assert_eq!(
        build.as_deref(),
        Some(concat!("pos-agent ", env!("CARGO_PKG_VERSION")))
    );
    let report = agent
        .status_until("the terminal named itself", |s| s["terminal"].is_object())
        .await;
    assert_eq!(
        report["terminal"],
        serde_json::json!({
            "protocol": 1,
            "model": "pos-agent simulate-terminal",
            "firmware": env!("CARGO_PKG_VERSION"),
        })
    );
    let human = agent.cli(&["status"]).await;
    let line = format!(
        "terminal       pos-agent simulate-terminal, firmware {}, protocol 1",
        env!("CARGO_PKG_VERSION")
    );
    assert!(human.stdout.contains(&line), "{}", human.stdout);
    let metrics = agent.cli(&["metrics"]).await;
    let sample = format!(
        "pos_agent_terminal_info{{protocol=\"1\",model=\"pos-agent simulate-terminal\",firmware=\"{}\"}} 1",
        env!("CARGO_PKG_VERSION")
    );
    assert!(metrics.stdout.contains(&sample), "{}", metrics.stdout);
    agent.finish().await;
}

/// A terminal written before versions were on the wire answers `agent_state` with a plain `ok`
/// and ignores the new fields: it keeps working, and `status` says it did not name itself.
#[tokio::test]
async fn a_terminal_that_predates_versions_keeps_working() {
    use pos_agent::serial::{LinkEvent, LinkSettings, TerminalLink};
    let mut agent = Agent::connected(Setup::default()).await;
    let (terminal, mut events) =
        TerminalLink::over(agent.replace_terminal_with_line(), LinkSettings::default());
    tokio::spawn(async move {
        while let Some(event) = events.recv().await {
            if let LinkEvent::Request(request) = event {
                request.reply(Reply::OK);
            }
        }
    });
    let report = agent
        .status_until("the old terminal answered in the simulator's place", |s| {
            s["terminal"].is_object() && s["terminal"]["model"].is_null()
        })
        .await;
    assert_eq!(report["terminal"], serde_json::json!({}));
    let human = agent.cli(&["status"]).await;
    assert!(
        human
            .stdout
            .contains("terminal       unknown model, firmware unknown, protocol 1"),
        "{}",
        human.stdout
    );
    let sale = TerminalRequest::Sale(SaleOrder {
        merchant_unique_code: Uuid::new_v4(),
        amount_minor: std::num::NonZeroU64::new(990).unwrap(),
        currency_id: None,
        display_code: None,
    });
    let reply = terminal.request(sale).await.unwrap();
    assert!(matches!(reply, Reply::SaleStarted { .. }), "{reply:?}");
    agent.finish().await;
}

#[tokio::test]
async fn a_corrupt_state_file_stops_the_start_and_is_left_as_it_is() {
    let textfile_dir = tempfile::tempdir().unwrap();
    let textfile = textfile_dir.path().join("pos_agent.prom");
    let mut agent = Agent::start(Setup {
        extra_toml: format!(
            "[metrics]\ntextfile = \"{}\"\ninterval = \"1s\"\n",
            textfile.display()
        ),
        ..Setup::default()
    })
    .await;
    agent.signal(Signal::SIGKILL);
    agent.wait_exit().await;
    let file = agent.state_dir.join("state.json");
    let garbage = b"{\"version\": 1, \"payments\": {\"trunc".to_vec();
    std::fs::write(&file, &garbage).unwrap();
    agent.spawn();
    let status = agent.wait_exit().await;
    assert_eq!(status.code(), Some(74), "{}", agent.log());
    assert!(
        agent.log().contains(&file.display().to_string()),
        "the error names the file:\n{}",
        agent.log()
    );
    assert_eq!(
        std::fs::read(&file).unwrap(),
        garbage,
        "the file was left as it was"
    );
    // The fleet sees a terminal that stays down: the textfile says so, for node_exporter.
    let exposition = std::fs::read_to_string(&textfile).unwrap();
    assert!(
        exposition
            .lines()
            .any(|l| l == "pos_agent_state_unusable 1"),
        "{exposition}"
    );
    agent.finish().await;
}

#[tokio::test]
async fn a_bad_configuration_stops_the_start_with_exit_78_naming_the_key() {
    let mut agent = Agent::start(Setup::default()).await;
    agent.signal(Signal::SIGKILL);
    agent.wait_exit().await;
    let text = std::fs::read_to_string(&agent.config_path).unwrap();
    std::fs::write(
        &agent.config_path,
        text.replace("max_sends", "max_sendz")
            .replace("ack_timeout", "max_sendz"),
    )
    .unwrap();
    agent.spawn();
    let status = agent.wait_exit().await;
    assert_eq!(status.code(), Some(78), "{}", agent.log());
    let log = agent.log();
    assert!(
        log.contains("max_sendz") && log.contains(&agent.config_path.display().to_string()),
        "{log}"
    );
    agent.finish().await;
}

#[tokio::test]
async fn garbage_on_the_control_socket_does_not_disturb_the_daemon() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut agent = Agent::start(Setup::default()).await;
    let long = vec![b'x'; 100_000];
    for junk in [
        &b"\xff\xfe\x00garbage\n"[..],
        b"{\"command\":",
        b"{\"command\":\"launch\"}\n",
        &long[..],
    ] {
        let mut stream = tokio::net::UnixStream::connect(&agent.socket)
            .await
            .unwrap();
        let _ = stream.write_all(junk).await;
        let _ = stream.shutdown().await;
        let mut answer = Vec::new();
        let _ = tokio::time::timeout(WAIT, stream.read_to_end(&mut answer)).await;
        if !answer.is_empty() {
            let reply: serde_json::Value =
                serde_json::from_slice(&answer).expect("an error reply is JSON");
            assert_eq!(reply["ok"], false);
        }
    }
    assert_eq!(agent.status().await["version"], env!("CARGO_PKG_VERSION"));
    agent.finish().await;
}

#[tokio::test]
async fn the_api_unreachable_at_start_does_not_delay_readiness_and_the_agent_connects_later() {
    let sim = pos_agent::simulator::api::ApiSimulator::start(Default::default()).unwrap();
    sim.inject(Fault::new("POST", "/api/connection", FaultKind::Status500).times(2));
    let mut agent = Agent::start_with(sim, Setup::default()).await;
    agent.wait_notification("STATUS=connecting").await;
    agent.wait_notification("STATUS=connected").await;
    assert_eq!(agent.sim.requests_to("POST", "/api/connection").len(), 3);
    agent.finish().await;
}

#[tokio::test]
async fn the_watchdog_is_petted_while_watchdog_usec_is_set_and_status_follows_the_pending_count() {
    let mut agent = Agent::start(Setup {
        extra_env: vec![("WATCHDOG_USEC", "400000".into())],
        ..Setup::default()
    })
    .await;
    agent.wait_notification("STATUS=connected").await;
    // The pets keep coming (half of WATCHDOG_USEC is computed and unit-tested in
    // `systemd::watchdog_interval_from`; delivery timing is not asserted here).
    for _ in 0..3 {
        agent.forget_notifications();
        agent.wait_notification("WATCHDOG=1").await;
    }
    agent.started(100).await;
    agent.wait_notification("1 pending").await;
    agent.finish().await;
}

#[tokio::test]
async fn a_control_socket_passed_by_systemd_is_served_instead_of_the_configured_one() {
    let mut agent = Agent::connected(Setup {
        socket_activation: true,
        ..Setup::default()
    })
    .await;
    let id = agent.started(100).await;
    assert_eq!(agent.pending_ids().await, vec![id]);
    assert!(
        !agent.dir.path().join("unused.sock").exists(),
        "the configured socket was not bound"
    );
    agent.signal(Signal::SIGTERM);
    assert!(agent.wait_exit().await.success());
    agent.finish().await;
}

#[tokio::test]
async fn a_manager_that_does_not_read_its_notify_socket_does_not_stall_the_daemon() {
    let setup = Setup {
        read_notifications: false,
        extra_env: vec![("WATCHDOG_USEC", "20000".into())],
        ..Setup::default()
    };
    let mut agent = Agent::start(setup).await;
    agent
        .status_until("connected", |s| s["connection"] == "connected")
        .await;
    // Fill the socket's queue (from here, so it is surely full): from then on every notification,
    // such as the watchdog pet due every 10 ms, would block its sender.
    let probe = std::os::unix::net::UnixDatagram::unbound().unwrap();
    probe.set_nonblocking(true).unwrap();
    let notify_socket = agent.dir.path().join("notify.sock");
    loop {
        match probe.send_to(b"X_PROBE=1", &notify_socket) {
            Ok(_) => continue,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
            Err(e) => panic!("probe: {e}"),
        }
    }
    // The terminal and the operator are still served.
    for amount in [100, 200, 300] {
        agent.started(amount).await;
    }
    assert_eq!(agent.pending_ids().await.len(), 3);
    agent.finish().await;
}

//! A whole agent under test: the payment API simulator on loopback, a pseudo-terminal pair
//! with the terminal simulator on one end, and the real `pos-agent run` process on the other,
//! with a datagram socket bound as its `NOTIFY_SOCKET`. With [`Setup::baud_rate`] the line
//! between them runs at that speed instead ([`SlowLine`]).

use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::sync::Arc;
use std::time::Duration;

use pos_agent::serial::message::{
    AgentReadiness, AgentRequest, CancelReason, Reply, SaleOrder, TerminalRequest,
};
use pos_agent::serial::LinkSettings;
use pos_agent::simulator::api::{self as sim, ApiSimulator, RecordedRequest, SimulatorOptions};
use pos_agent::simulator::terminal::TerminalSimulator;
use pos_agent::simulator::virtual_serial::VirtualSerial;
use tempfile::TempDir;
use tokio::io::AsyncReadExt;
use tokio::net::UnixDatagram;
use tokio::process::{Child, Command};
use tokio::sync::mpsc;
use uuid::Uuid;

use super::line::SlowLine;
use super::{SECRETS, SERVICE_PARAMETER_SECRET, WAIT};

/// Reads the notify socket for as long as the test runs, as systemd does. A notify socket that
/// nobody reads fills up (`net.unix.max_dgram_qlen`, 10 datagrams by default) and the daemon's
/// next `sd_notify` then blocks, and with it the daemon's whole runtime, serial link included.
async fn read_notifications(socket: Arc<UnixDatagram>, received: mpsc::UnboundedSender<String>) {
    let mut buf = vec![0u8; 4096];
    while let Ok(n) = socket.recv(&mut buf).await {
        if received
            .send(String::from_utf8_lossy(&buf[..n]).into_owned())
            .is_err()
        {
            break;
        }
    }
}

/// How to set up one agent.
#[derive(Clone)]
pub struct Setup {
    /// Extra TOML appended to the configuration (sections not written by the harness).
    pub extra_toml: String,
    /// `[shutdown]` section body.
    pub shutdown_toml: String,
    /// Use `[connection.establish]` instead of a known `[connection].id`.
    pub establish: bool,
    pub payment_timeout: &'static str,
    /// `[terminal] sale_reply_deadline`.
    pub sale_reply_deadline: &'static str,
    /// A `[paywall]` section to use instead of the simulator's (e.g. an address that does not
    /// resolve).
    pub paywall_toml: Option<String>,
    pub log_level: &'static str,
    /// Extra environment for the daemon process.
    pub extra_env: Vec<(&'static str, String)>,
    /// Start the daemon the way a socket-activated unit does: `systemd-socket-activate` listens
    /// on the control socket and hands it over (`LISTEN_FDS`) at the first connection, and the
    /// configuration names another socket path, which must stay unused.
    pub socket_activation: bool,
    /// Read the notify socket like systemd does; `false` plays a manager that never reads it.
    pub read_notifications: bool,
    /// Put a line of this speed between the agent and the terminal (both configured for it)
    /// instead of a pty pair, which carries any frame at once.
    pub baud_rate: Option<u32>,
    /// The state directory, when it is not `state` in the test's directory (e.g. on a small
    /// file system the test mounted).
    pub state_directory: Option<PathBuf>,
}

impl Default for Setup {
    fn default() -> Self {
        Self {
            extra_toml: String::new(),
            shutdown_toml: "deadline = \"10s\"\nconcurrency = 8\n".into(),
            establish: true,
            payment_timeout: "10m",
            sale_reply_deadline: "20s",
            paywall_toml: None,
            log_level: "debug",
            extra_env: Vec::new(),
            socket_activation: false,
            read_notifications: true,
            baud_rate: None,
            state_directory: None,
        }
    }
}

pub struct Agent {
    pub sim: ApiSimulator,
    pub terminal: TerminalSimulator,
    /// The line at [`Setup::baud_rate`], if one was asked for.
    pub line: Option<SlowLine>,
    pub dir: TempDir,
    pub config_path: PathBuf,
    pub socket: PathBuf,
    pub state_dir: PathBuf,
    env: Vec<(&'static str, String)>,
    socket_activation: bool,
    child: Option<Child>,
    notify: Arc<UnixDatagram>,
    /// Every datagram from the notify socket, in order, as [`read_notifications`] received it.
    incoming: mpsc::UnboundedReceiver<String>,
    notifications: Vec<String>,
    outputs: Vec<String>,
    /// Set by [`Agent::finish`] (or [`Agent::abandon`]); an agent dropped without it fails its
    /// test, so no test skips the secret scan by forgetting it.
    finished: bool,
}

impl Agent {
    /// Starts everything and waits for `READY=1`.
    pub async fn start(setup: Setup) -> Agent {
        let sim = ApiSimulator::start(SimulatorOptions::default()).expect("simulator");
        Self::start_with(sim, setup).await
    }

    /// Starts everything and waits until the daemon reports its payment API connection
    /// (`STATUS=connected`).
    pub async fn connected(setup: Setup) -> Agent {
        let mut agent = Self::start(setup).await;
        agent.wait_notification("STATUS=connected").await;
        agent
    }

    /// An agent whose payment API name never resolves (`.invalid`, RFC 6761): every request
    /// fails before it is sent.
    pub async fn with_unresolvable_api(setup: Setup) -> Agent {
        let sim = ApiSimulator::start(SimulatorOptions::default()).unwrap();
        let paywall = sim
            .paywall_config_section()
            .replace(&sim.url(), "http://pos-agent-test.invalid:8080");
        Agent::start_with(
            sim,
            Setup {
                paywall_toml: Some(paywall),
                ..setup
            },
        )
        .await
    }

    pub async fn start_with(sim: ApiSimulator, setup: Setup) -> Agent {
        let dir = tempfile::tempdir().unwrap();
        let (line, pair) = match setup.baud_rate {
            Some(baud_rate) => (Some(SlowLine::open(baud_rate)), None),
            None => (None, Some(VirtualSerial::open().expect("pty pair"))),
        };
        let agent_end = match (&line, &pair) {
            (Some(line), _) => line.agent_end().to_path_buf(),
            (None, Some(pair)) => pair.slave_path().to_path_buf(),
            (None, None) => unreachable!(),
        };
        let device = dir.path().join("ttyTERMINAL"); // Agent::device_link
        std::os::unix::fs::symlink(&agent_end, &device).unwrap();
        let state_dir = setup
            .state_directory
            .clone()
            .unwrap_or_else(|| dir.path().join("state"));
        let socket = dir.path().join("control.sock");
        let config_path = dir.path().join("agent.toml");
        let configured_socket = if setup.socket_activation {
            dir.path().join("unused.sock")
        } else {
            socket.clone()
        };
        std::fs::write(
            &config_path,
            config_toml(&sim, &setup, &device, &state_dir, &configured_socket),
        )
        .unwrap();
        let notify = Arc::new(UnixDatagram::bind(dir.path().join("notify.sock")).unwrap());
        let (received, incoming) = mpsc::unbounded_channel();
        if setup.read_notifications {
            tokio::spawn(read_notifications(Arc::clone(&notify), received));
        }
        let terminal = match (&line, pair) {
            // The terminal's link on its own end, with its line settings (and so their timing).
            (Some(line), _) => {
                let config = line.terminal_config();
                TerminalSimulator::open(config.clone(), LinkSettings::from_config(&config))
            }
            (None, Some(pair)) => TerminalSimulator::over(pair, LinkSettings::default()),
            (None, None) => unreachable!(),
        };
        let mut agent = Agent {
            sim,
            terminal,
            line,
            dir,
            config_path,
            socket,
            state_dir,
            env: setup.extra_env.clone(),
            socket_activation: setup.socket_activation,
            child: None,
            notify,
            incoming,
            notifications: Vec::new(),
            outputs: Vec::new(),
            finished: false,
        };
        agent.spawn();
        if agent.socket_activation {
            // systemd-socket-activate binds the socket, and starts the daemon at the first
            // connection to it.
            agent.wait_for_socket().await;
            agent.status().await;
        }
        if setup.read_notifications {
            agent.wait_notification("READY=1").await;
        } else {
            agent.wait_for_socket().await;
        }
        agent
    }

    /// The configured serial device: a symlink to the pty pair's slave, as
    /// `/dev/serial/by-id/...` is to a `ttyUSB` node.
    pub fn device_link(&self) -> PathBuf {
        self.dir.path().join("ttyTERMINAL")
    }

    /// Unplugs the terminal: its line hangs up and the stable name goes away, as udev removes
    /// the by-id link of a vanished adapter.
    pub fn unplug(&self) {
        self.terminal.shutdown();
        std::fs::remove_file(self.device_link()).unwrap();
    }

    /// Plugs a terminal in again: a new pty pair (another `/dev/pts/N`) behind the same name,
    /// with a new terminal simulator on it.
    pub fn replug(&mut self) {
        self.terminal = TerminalSimulator::over(self.plug_new_line(), LinkSettings::default());
    }

    /// Puts a raw line in the terminal simulator's place (unplug, then a new pty pair behind the
    /// same name), to send what no simulator would. What the agent writes on it (ACKs, pings)
    /// is read and dropped, so the line never fills up; the half returned writes to the agent.
    pub fn replace_terminal_with_raw_line(&self) -> tokio::io::WriteHalf<VirtualSerial> {
        self.unplug();
        let (mut from_agent, to_agent) = tokio::io::split(self.plug_new_line());
        tokio::spawn(async move {
            let mut sink = [0u8; 4096];
            while matches!(from_agent.read(&mut sink).await, Ok(n) if n > 0) {}
        });
        to_agent
    }

    /// Puts a new line in the terminal simulator's place (unplug, then a new pty pair behind the
    /// same name) and returns its master, for another terminal (a process) to be joined to.
    pub fn replace_terminal_with_line(&self) -> VirtualSerial {
        self.unplug();
        self.plug_new_line()
    }

    /// A new pty pair, its slave behind the configured device's name (replaced atomically).
    fn plug_new_line(&self) -> VirtualSerial {
        let pair = VirtualSerial::open().expect("pty pair");
        let staging = self.dir.path().join("ttyTERMINAL.new");
        std::os::unix::fs::symlink(pair.slave_path(), &staging).unwrap();
        std::fs::rename(&staging, self.device_link()).unwrap();
        pair
    }

    /// Sets a variable of the daemon's environment for the next [`Agent::spawn`].
    pub fn set_env(&mut self, key: &'static str, value: String) {
        self.remove_env(key);
        self.env.push((key, value));
    }

    /// Drops a variable set by [`Setup::extra_env`] or [`Agent::set_env`].
    pub fn remove_env(&mut self, key: &str) {
        self.env.retain(|(k, _)| *k != key);
    }

    /// Starts the daemon process (again) on the same files.
    pub fn spawn(&mut self) {
        let stderr = std::fs::File::create(
            self.dir
                .path()
                .join(format!("agent-{}.log", self.outputs.len())),
        )
        .unwrap();
        let notify_socket = self.dir.path().join("notify.sock");
        let agent = super::pos_agent();
        let mut command = if self.socket_activation {
            // systemd-socket-activate passes on only the variables named with -E.
            let mut command = Command::new("systemd-socket-activate");
            command.arg("-l").arg(&self.socket);
            command.arg(format!(
                "--setenv=NOTIFY_SOCKET={}",
                notify_socket.display()
            ));
            for (key, value) in &self.env {
                command.arg(format!("--setenv={key}={value}"));
            }
            command.arg("--").arg(agent.get_program());
            command
        } else {
            Command::new(agent.get_program())
        };
        command.args(agent.get_args());
        command
            .arg("run")
            .arg("--config")
            .arg(&self.config_path)
            .env("NOTIFY_SOCKET", &notify_socket)
            .env_remove("RUST_LOG")
            .env_remove("JOURNAL_STREAM")
            .env_remove("LISTEN_FDS")
            .env_remove("STATE_DIRECTORY")
            .env_remove("RUNTIME_DIRECTORY")
            .env_remove("CREDENTIALS_DIRECTORY")
            .env_remove("HTTPS_PROXY")
            .env_remove("https_proxy")
            .env_remove("HTTP_PROXY")
            .env_remove("http_proxy")
            .env_remove("ALL_PROXY")
            .env_remove("all_proxy")
            .env_remove("NO_PROXY")
            .env_remove("no_proxy")
            .envs(self.env.iter().map(|(k, v)| (*k, v.as_str())))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr)
            .kill_on_drop(true);
        self.outputs.push(String::new());
        self.child = Some(command.spawn().expect("spawn pos-agent run"));
    }

    /// Waits until the control socket exists (bound by the daemon or by systemd-socket-activate).
    async fn wait_for_socket(&self) {
        let deadline = tokio::time::Instant::now() + WAIT;
        while !self.socket.exists() {
            assert!(
                tokio::time::Instant::now() < deadline,
                "no control socket within {WAIT:?}; log:\n{}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Waits for a notification message that contains `needle`; returns it.
    pub async fn wait_notification(&mut self, needle: &str) -> String {
        if let Some(found) = self.notifications.iter().find(|n| n.contains(needle)) {
            return found.clone();
        }
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let received = tokio::time::timeout_at(deadline, self.incoming.recv()).await;
            let message = match received {
                Ok(Some(message)) => message,
                _ => panic!(
                    "no notification containing {needle:?} within {WAIT:?}; saw {:?}; agent log:\n{}",
                    self.notifications,
                    self.log()
                ),
            };
            self.notifications.push(message.clone());
            if message.contains(needle) {
                return message;
            }
        }
    }

    /// Waits for `READY=1` or for the daemon to exit, whichever comes first: a start that
    /// fails gives its exit status at once, not after [`WAIT`].
    pub async fn ready_or_exit(&mut self) -> Result<(), ExitStatus> {
        if self.notifications.iter().any(|n| n.contains("READY=1")) {
            return Ok(());
        }
        let deadline = tokio::time::Instant::now() + WAIT;
        let child = self.child.as_mut().expect("running");
        let exited = loop {
            tokio::select! {
                received = tokio::time::timeout_at(deadline, self.incoming.recv()) => {
                    let Ok(Some(message)) = received else { break None };
                    let ready = message.contains("READY=1");
                    self.notifications.push(message);
                    if ready {
                        return Ok(());
                    }
                }
                status = child.wait() => break Some(status.expect("wait for pos-agent")),
            }
        };
        match exited {
            Some(status) => {
                self.child = None;
                Err(status)
            }
            None => panic!(
                "neither READY=1 nor an exit within {WAIT:?}; log:\n{}",
                self.log()
            ),
        }
    }

    /// Drops the notifications sent so far, read or not (after the daemon exited, before a
    /// restart), so that a `STATUS=connected` of the previous process cannot pass for one of
    /// the next.
    pub fn forget_notifications(&mut self) {
        self.notifications.clear();
        while self.incoming.try_recv().is_ok() {}
        let mut buf = vec![0u8; 4096];
        while self.notify.try_recv(&mut buf).is_ok() {}
    }

    /// Every notification received so far, in order.
    pub fn notifications(&self) -> &[String] {
        &self.notifications
    }

    /// The daemon's stderr, of every run so far.
    pub fn log(&self) -> String {
        let mut all = String::new();
        for i in 0..self.outputs.len() {
            all.push_str(
                &std::fs::read_to_string(self.dir.path().join(format!("agent-{i}.log")))
                    .unwrap_or_default(),
            );
        }
        all
    }

    pub fn pid(&self) -> i32 {
        self.child.as_ref().and_then(|c| c.id()).expect("running") as i32
    }

    pub fn signal(&self, signal: nix::sys::signal::Signal) {
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(self.pid()), signal).unwrap();
    }

    /// Waits for the daemon to exit.
    pub async fn wait_exit(&mut self) -> ExitStatus {
        let child = self.child.as_mut().expect("running");
        match tokio::time::timeout(WAIT, child.wait()).await {
            Ok(status) => {
                self.child = None;
                status.unwrap()
            }
            Err(_) => panic!(
                "the agent did not exit within {WAIT:?}; log:\n{}",
                self.log()
            ),
        }
    }

    /// Runs an operator command against this daemon's control socket.
    pub async fn cli(&mut self, args: &[&str]) -> CliOutput {
        let mut command = super::pos_agent();
        command.args(args).arg("--socket").arg(&self.socket);
        let output = tokio::task::spawn_blocking(move || command.output())
            .await
            .unwrap()
            .unwrap();
        let out = CliOutput {
            code: output.status.code(),
            stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        };
        self.outputs.push(format!("{}{}", out.stdout, out.stderr));
        out
    }

    /// `status --json`, parsed.
    pub async fn status(&mut self) -> serde_json::Value {
        let out = self.cli(&["status", "--json"]).await;
        assert_eq!(out.code, Some(0), "status failed: {out:?}");
        serde_json::from_str(&out.stdout).expect("status --json is JSON")
    }

    pub async fn pending_ids(&mut self) -> Vec<String> {
        let status = self.status().await;
        status["pending"]
            .as_array()
            .expect("pending array")
            .iter()
            .map(|p| p["payment_request_id"].as_str().unwrap().to_owned())
            .collect()
    }

    /// Restarts the agent with `count` payments pending: created at the simulator, and written
    /// into the state snapshot while the agent is down (one write instead of `count`). Returns
    /// their ids once the agent is connected again.
    pub async fn restart_with_pending(&mut self, count: usize) -> Vec<String> {
        self.signal(nix::sys::signal::Signal::SIGKILL);
        self.wait_exit().await;
        let mut state = self.state_file();
        let since = serde_json::Value::String(
            humantime::format_rfc3339_millis(std::time::SystemTime::now()).to_string(),
        );
        let mut ids = Vec::new();
        let payments = state["payments"].as_object_mut().unwrap();
        payments.clear();
        for _ in 0..count {
            let id = self
                .sim
                .create_payment_elsewhere(Uuid::new_v4(), 100)
                .to_string();
            payments.insert(
                id.clone(),
                serde_json::json!({
                    "merchant_unique_code": null, "amount_minor": null, "currency_id": null,
                    "since": since, "source": "elsewhere", "cancel_requested": null
                }),
            );
            ids.push(id);
        }
        std::fs::write(
            self.state_dir.join("state.json"),
            serde_json::to_vec(&state).unwrap(),
        )
        .unwrap();
        // The snapshot written here is the whole state: no journal is replayed over it.
        let _ = std::fs::remove_file(self.state_dir.join("state.journal"));
        self.forget_notifications();
        self.spawn();
        self.wait_notification("STATUS=connected").await;
        self.terminal.wait_until_up().await;
        ids
    }

    /// The line at [`Setup::baud_rate`].
    pub fn line(&self) -> &SlowLine {
        self.line
            .as_ref()
            .expect("an agent started with a baud rate")
    }

    /// The state as the daemon left it on disk (snapshot and journal), as JSON.
    pub fn state_file(&self) -> serde_json::Value {
        let state = pos_agent::state::read_directory(&self.state_dir).expect("readable state");
        serde_json::to_value(state).expect("state as JSON")
    }

    /// Polls the daemon's log (its stderr) until `done` holds for it, failing after [`WAIT`].
    pub async fn log_until(&self, what: &str, done: impl Fn(&str) -> bool) -> String {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let log = self.log();
            if done(&log) {
                return log;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "{what}: not in the log within {WAIT:?}; log:\n{log}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The state on disk once `condition` holds for it: `status` answers from memory, and the
    /// record of a change reaches the disk a sync later.
    pub async fn state_file_until(
        &self,
        what: &str,
        condition: impl Fn(&serde_json::Value) -> bool,
    ) -> serde_json::Value {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let state = self.state_file();
            if condition(&state) {
                return state;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "{what}: not on disk within {WAIT:?}; last state {state}\nlog:\n{}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    /// Asserts that no secret reached any output of this test, then tears everything down. Every
    /// test ends with it (or with [`Agent::abandon`]): dropping an agent otherwise fails the test.
    pub async fn finish(mut self) {
        self.finished = true;
        if let Some(mut child) = self.child.take() {
            let _ = child.kill().await;
        }
        let mut everything = self.log();
        for out in &self.outputs {
            everything.push_str(out);
        }
        for n in &self.notifications {
            everything.push_str(n);
        }
        for secret in SECRETS {
            assert!(!everything.contains(secret), "a secret reached the output");
        }
    }

    /// Tears everything down without the secret scan of [`Agent::finish`], for a test that must
    /// not scan; `why` says why, and is printed with the test's output.
    pub fn abandon(mut self, why: &str) {
        eprintln!("agent abandoned without the secret scan: {why}");
        self.finished = true;
    }

    /// Sends a sale from the terminal and returns the agent's reply.
    pub async fn sale(&mut self, code: Uuid, amount_minor: u64) -> Reply {
        let sale = SaleOrder {
            merchant_unique_code: code,
            amount_minor: std::num::NonZeroU64::new(amount_minor).expect("amount > 0"),
            currency_id: None,
            display_code: None,
        };
        self.terminal
            .request(TerminalRequest::Sale(sale))
            .await
            .expect("the agent answers a sale")
    }

    /// A sale that must start; returns its PaymentRequestId.
    pub async fn started(&mut self, amount_minor: u64) -> String {
        match self.sale(Uuid::new_v4(), amount_minor).await {
            Reply::SaleStarted {
                payment_request_id, ..
            } => payment_request_id,
            other => panic!("expected sale_started, got {other:?}\nlog:\n{}", self.log()),
        }
    }

    /// The terminal's `cancel` of every pending payment: the ids its `cancelled` reply names,
    /// `cancelled_count` and `truncated`. Generous wait: every cancel goes to the payment API.
    pub async fn terminal_cancel_all(&mut self) -> (Vec<String>, usize, bool) {
        let cancel = TerminalRequest::Cancel {
            payment_request_id: None,
        };
        match tokio::time::timeout(WAIT * 6, self.terminal.request(cancel)).await {
            Ok(Ok(Reply::Cancelled {
                payment_request_ids,
                cancelled_count,
                truncated,
            })) => (payment_request_ids, cancelled_count, truncated),
            other => panic!("expected cancelled, got {other:?}\nlog:\n{}", self.log()),
        }
    }

    /// The next notification from the agent that `pick` takes, skipping others.
    pub async fn notification<T>(&mut self, pick: impl Fn(AgentRequest) -> Option<T>) -> T {
        loop {
            match tokio::time::timeout(WAIT, self.terminal.next_notification()).await {
                Ok(Some(n)) => {
                    if let Some(picked) = pick(n.request) {
                        return picked;
                    }
                }
                Ok(None) => panic!("the terminal link ended"),
                Err(_) => panic!("no such notification within {WAIT:?}; log:\n{}", self.log()),
            }
        }
    }

    /// The next `payment_cancelled` the terminal hears.
    pub async fn next_cancelled(&mut self) -> (String, CancelReason) {
        self.notification(|n| match n {
            AgentRequest::PaymentCancelled {
                payment_request_id,
                reason,
            } => Some((payment_request_id, reason)),
            _ => None,
        })
        .await
    }

    /// Polls `status` until `condition` holds (the daemon's own view, asked the way an operator
    /// would), failing after [`WAIT`].
    pub async fn status_until(
        &mut self,
        what: &str,
        condition: impl Fn(&serde_json::Value) -> bool,
    ) -> serde_json::Value {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let status = self.status().await;
            if condition(&status) {
                return status;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "{what}: not within {WAIT:?}; last status {status}\nlog:\n{}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }
}

/// The drop check: an agent must end with [`Agent::finish`] (or [`Agent::abandon`]). A test that
/// is already failing is not failed again here.
impl Drop for Agent {
    fn drop(&mut self) {
        if !self.finished && !std::thread::panicking() {
            panic!(
                "an Agent was dropped without Agent::finish (the secret scan of its output) or \
                 Agent::abandon"
            );
        }
    }
}

/// How many requests to `path` the payment API simulator received.
pub fn count(agent: &Agent, path: &str) -> usize {
    agent
        .sim
        .requests()
        .iter()
        .filter(|r| r.path == path)
        .count()
}

/// A recorded request's JSON body (`null` when it had none).
pub fn body(request: &RecordedRequest) -> serde_json::Value {
    request.body.clone().unwrap_or_default()
}

/// Waits until the agent tells the terminal it is in the state `wanted`.
pub async fn agent_state(agent: &mut Agent, wanted: AgentReadiness) {
    agent
        .notification(|n| {
            matches!(n, AgentRequest::AgentState { state, .. } if state == wanted).then_some(())
        })
        .await
}

#[derive(Debug)]
pub struct CliOutput {
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

/// Runs `pos-agent check-config` on the configuration [`Agent::start_with`] would write for
/// `setup` (in a directory of its own, with the setup's environment): what `run` would be given.
pub fn check_config(sim: &ApiSimulator, setup: &Setup) -> std::process::Output {
    let dir = tempfile::tempdir().unwrap();
    let config_path = dir.path().join("agent.toml");
    let text = config_toml(
        sim,
        setup,
        &dir.path().join("ttyTERMINAL"),
        &dir.path().join("state"),
        &dir.path().join("control.sock"),
    );
    std::fs::write(&config_path, text).unwrap();
    let mut command = super::pos_agent();
    command
        .arg("check-config")
        .arg("--config")
        .arg(&config_path)
        .env_remove("CREDENTIALS_DIRECTORY")
        .env_remove("STATE_DIRECTORY")
        .envs(setup.extra_env.iter().map(|(k, v)| (*k, v.as_str())));
    command.output().expect("run pos-agent check-config")
}

fn config_toml(
    sim: &ApiSimulator,
    setup: &Setup,
    device: &Path,
    state: &Path,
    socket: &Path,
) -> String {
    let connection = if setup.establish {
        format!(
            "[connection.establish]\nname = \"test terminal\"\nbrand_id = 10\nprovider_id = 10\nregion_id = 1\nend_of_day_id = 10\nservice_parameters = {{ password = \"{SERVICE_PARAMETER_SECRET}\" }}\n"
        )
    } else {
        format!("[connection]\nid = \"{}\"\n", sim::DEMO_CONNECTION_ID)
    };
    format!(
        r#"{paywall}
{connection}
[terminal]
id = "{terminal}"
payment_timeout = "{timeout}"
sale_reply_deadline = "{sale_reply_deadline}"

[serial]
device = "{device}"
ack_timeout = "500ms"
ping_interval = "5s"
{baud_rate}
[state]
directory = "{state}"

[control]
socket = "{socket}"

[shutdown]
{shutdown}
[log]
level = "{log_level}"
{extra}"#,
        paywall = setup
            .paywall_toml
            .clone()
            .unwrap_or_else(|| sim.paywall_config_section()),
        sale_reply_deadline = setup.sale_reply_deadline,
        terminal = sim::DEMO_TERMINAL_ID,
        timeout = setup.payment_timeout,
        device = device.display(),
        state = state.display(),
        socket = socket.display(),
        shutdown = setup.shutdown_toml,
        extra = setup.extra_toml,
        log_level = setup.log_level,
        baud_rate = setup
            .baud_rate
            .map(|baud| format!("baud_rate = {baud}\n"))
            .unwrap_or_default(),
    )
}

//! `pos-agent run` as a process: the signal handlers, the process's logging and the metrics
//! textfile's thread handed to the daemon, and the one table from how the daemon ended to the
//! exit code (docs/operations.md (The daemon: `pos-agent run`)).

use std::io;
use std::path::{Path, PathBuf};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::signal::unix::{signal, SignalKind};
use tracing::{info, warn};

use super::exit;
use crate::agent::{self, GaugeReader, Host, RunError, Signal, SignalSource, Stopped};
use crate::boot_clock::Clock;
use crate::config::Config;
use crate::logging::{self, LoggingError};
use crate::metrics;

/// Runs the daemon as this process and returns its exit code.
pub(super) async fn run(config_path: &Path) -> u8 {
    exit_code(agent::run(config_path, &mut Process).await)
}

/// The daemon's end, as the exit code docs/operations.md lists.
fn exit_code(outcome: Result<Stopped, RunError>) -> u8 {
    match outcome {
        Ok(Stopped::Clean) => exit::OK,
        Ok(Stopped::RestartKeepingPending) => exit::RESTART_KEEPING_PENDING,
        Ok(Stopped::HaltKeepingPending) => exit::STOPPED_KEEPING_PENDING,
        Err(RunError::Configuration) => exit::CONFIG,
        Err(RunError::StateUnreadable) => exit::STATE_UNREADABLE,
        Err(RunError::Setup | RunError::Interrupted) => exit::FAILURE,
    }
}

/// The process the daemon runs as: `CLOCK_BOOTTIME`, the process's signals, logging and
/// threads.
struct Process;

impl Host for Process {
    fn clock(&self) -> Clock {
        Clock::Boottime
    }

    fn init_process(&mut self, config: &Config) -> Result<(), LoggingError> {
        logging::init(&config.log.level, config.log.repeat_window)?;
        metrics::mark_start();
        Ok(())
    }

    fn signals(&mut self) -> io::Result<Box<dyn SignalSource>> {
        Ok(Box::new(ProcessSignals {
            terminate: signal(SignalKind::terminate())?,
            interrupt: signal(SignalKind::interrupt())?,
            hangup: signal(SignalKind::hangup())?,
        }))
    }

    fn start_metrics_textfile(&mut self, gauges: GaugeReader, path: PathBuf, interval: Duration) {
        start_metrics_textfile(gauges, path, interval);
    }
}

/// The handlers of `SIGTERM`, `SIGINT` and `SIGHUP`, installed for the rest of the process.
struct ProcessSignals {
    terminate: tokio::signal::unix::Signal,
    interrupt: tokio::signal::unix::Signal,
    hangup: tokio::signal::unix::Signal,
}

impl SignalSource for ProcessSignals {
    fn poll_signal(&mut self, cx: &mut Context<'_>) -> Poll<Option<Signal>> {
        let handlers = [
            (&mut self.terminate, Signal::Terminate),
            (&mut self.interrupt, Signal::Interrupt),
            (&mut self.hangup, Signal::Reload),
        ];
        for (handler, signal) in handlers {
            if let Poll::Ready(Some(())) = handler.poll_recv(cx) {
                return Poll::Ready(Some(signal));
            }
        }
        Poll::Pending
    }
}

/// `[metrics] textfile`: rewritten every `interval` while the agent runs, on a thread of its
/// own (like the state writer: a slow disk never holds the runtime). A failure is logged once,
/// and so is the recovery.
fn start_metrics_textfile(gauges: GaugeReader, path: PathBuf, interval: Duration) {
    let writer = move || {
        let mut failing = false;
        loop {
            let text = metrics::render(&gauges(), metrics::Format::Prometheus);
            let shown = path.display();
            match metrics::write_textfile(&path, &text) {
                Ok(()) if failing => {
                    failing = false;
                    info!("metrics textfile {shown} written again");
                }
                Ok(()) => {}
                Err(e) if !failing => {
                    failing = true;
                    warn!("cannot write the metrics textfile {shown}: {e}; retrying every {interval:?}");
                }
                Err(_) => {}
            }
            std::thread::sleep(interval);
        }
    };
    if let Err(e) = crate::thread::spawn("metrics-textfile", None, Box::new(writer)) {
        warn!("cannot start the metrics textfile writer: {e}");
    }
}

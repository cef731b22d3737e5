//! What the process hands the daemon: its clock, its signals and the process-wide set-up
//! (logging, the metrics textfile's thread). `pos-agent run` hands the real ones
//! (src/cli/run.rs); an in-process test of the main loop hands a paused clock and a channel
//! it sends the signals on, and sets nothing up process-wide.

use std::io;
use std::path::PathBuf;
use std::task::{Context, Poll};
use std::time::Duration;

use crate::boot_clock::Clock;
use crate::config::Config;
use crate::logging::LoggingError;
use crate::metrics;

/// A signal the daemon obeys (docs/operations.md (The daemon: `pos-agent run`)).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Signal {
    /// `SIGTERM`: shut down; a second one during the shutdown stops at once.
    Terminate,
    /// `SIGINT`: as `SIGTERM`.
    Interrupt,
    /// `SIGHUP`: reload the configuration and the credentials.
    Reload,
}

/// Where the daemon hears its signals: the process's handlers, or a test's channel. Polled,
/// not a task: nothing runs between a signal and the main loop.
pub(crate) trait SignalSource: Send {
    /// The next signal, if one came; `Ready(None)` once none can come.
    fn poll_signal(&mut self, cx: &mut Context<'_>) -> Poll<Option<Signal>>;
}

/// The next signal from `source`; never, once none can come.
pub(crate) async fn next_signal(source: &mut dyn SignalSource) -> Signal {
    match std::future::poll_fn(|cx| source.poll_signal(cx)).await {
        Some(signal) => signal,
        None => std::future::pending().await,
    }
}

/// The reading of the metrics at the moment of an exposition.
pub(crate) type GaugeReader = Box<dyn Fn() -> metrics::Gauges + Send>;

/// The process around the daemon; each is asked for at the point of the start-up where the
/// daemon needs it.
pub(crate) trait Host: Send {
    /// The clock the deadlines are measured on (set for the daemon's runtime thread).
    fn clock(&self) -> Clock;
    /// Once the configuration has loaded: the process's logging at its level, and the
    /// metrics' start time.
    fn init_process(&mut self, config: &Config) -> Result<(), LoggingError>;
    /// The signals, from here on (after the control socket is open, before `READY=1`).
    fn signals(&mut self) -> io::Result<Box<dyn SignalSource>>;
    /// `[metrics] textfile`: rewritten every `interval` with `gauges`' reading while the
    /// process lives.
    fn start_metrics_textfile(&mut self, gauges: GaugeReader, path: PathBuf, interval: Duration);
}

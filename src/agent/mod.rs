//! The agent daemon: the payment lifecycle (`core`), the payment-API connection
//! (`connection`), the refusal a failed API call amounts to (`refusal`) and the process around
//! them: the pre-flight (`preflight`), start-up and main loop (`daemon`), the answers to the
//! terminal and the operator (`dispatch`), the shutdown (`shutdown`), what systemd is told
//! (`notify`), what the caller hands the daemon (`host`) and how it ends (`stopped`).

mod ages;
mod audit;
mod cancel;
mod connection;
mod core;
mod daemon;
mod dispatch;
mod host;
#[cfg(all(test, feature = "simulators"))]
mod in_process_tests;
mod notify;
mod preflight;
mod refusal;
mod sale;
mod shutdown;
mod stopped;
mod terminal;
mod timeout;

pub(crate) use daemon::run;
pub(crate) use host::{GaugeReader, Host, Signal, SignalSource};
pub(crate) use preflight::preflight;
pub(crate) use stopped::{RunError, Stopped};

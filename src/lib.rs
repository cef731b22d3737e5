//! pos-agent: the daemon that sits between a card terminal's serial line and Paywall's
//! Physical POS payment API. One module per concern; `docs/architecture.md` draws the map.

pub mod agent;
pub mod cli;
pub mod config;
pub mod control;
#[cfg(feature = "simulators")]
pub mod demo;
pub mod logging;
pub mod metrics;
pub mod paywall;
pub mod retry;
pub mod serial;
#[cfg(feature = "simulators")]
pub mod simulator;
pub mod state;
pub mod systemd;

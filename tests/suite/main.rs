//! Every integration test, in one test binary: each module was once its own file under `tests/`,
//! and each of those linked the whole library and compiled `support` again. One binary links once
//! (docs/development.md, "One test binary"). Run a part with a filter on the module path, for
//! example `cargo test --locked --test suite power_cut::`.
//!
//! The tests share one process: a test must not change what the process holds for all of them
//! (its environment, its working directory, its signal dispositions). What must run with its own
//! environment runs as a child process, as `systemd_notify` and `systemd_activation` do.

mod support;

mod agent_recovery;
mod agent_refusals;
mod agent_sales;
mod agent_shutdown;
mod agent_shutdown_status;
mod agent_startup;
mod audit;
mod ci_script;
mod cli;
mod clock_steps;
mod config;
mod config_extremes;
mod conformance;
mod control;
mod control_socket;
mod demo;
mod fuzz_corpus;
mod harness;
mod health;
mod layers;
mod log_lines;
mod metrics;
mod packaging;
mod payment_api_command;
mod payment_api_faults;
mod payment_api_secrets;
mod payment_api_seeds;
mod payment_api_shapes;
mod payment_api_simulator;
mod power_cut;
mod proxy;
mod reload;
mod repeated_warnings;
mod repository_references;
mod request_flood;
mod restart;
mod retry_after;
mod retry_spread;
mod sale_races;
mod sale_replies;
mod serial_codec;
mod serial_device_threads;
mod serial_line_speed;
mod serial_link;
mod serial_port;
mod serial_simulator_cli;
mod state;
mod state_compat;
mod state_formats;
mod storage_health;
mod suspend;
mod systemd_activation;
mod systemd_notify;
mod terminal_c;
mod tls;
mod unplug_replug;

//! `pos-agent run`: start-up, the one main loop, and the hand-over to the shutdown
//! (docs/operations.md (The daemon: `pos-agent run`)).
//!
//! The main loop is a single `tokio::select!`, watchdog first. Everything that can take time
//! (API calls, terminal replies, operator commands) runs in its own task, so the loop keeps
//! petting the watchdog and answering signals whatever the payment API does. The clock, the
//! signals and the process-wide set-up come from the caller ([`Host`]).

// Time and count arithmetic: docs/architecture.md, "Lint policy".
#![warn(clippy::arithmetic_side_effects)]

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tracing::{error, info, warn};

use super::connection;
use super::core::Core;
use super::dispatch::{gauges, handle_control, handle_terminal};
use super::host::{next_signal, Host, Signal};
use super::notify::{status_line, tick};
use super::preflight::preflight;
use super::shutdown::{answer_stop, shut_down, Events};
use super::stopped::{RunError, Stopped};
use crate::boot_clock::{self, BootMillis};
use crate::config;
use crate::control::{self, ControlCall, ControlRequest};
use crate::metrics;
use crate::paywall::{PaywallClient, RetryPolicy};
use crate::serial::message::AgentRequest;
use crate::serial::{self, LinkEvent};
use crate::state::StateStore;
use crate::{build_info, logging, systemd};

/// Runs the daemon until it is told to stop, on `host`'s clock and signals.
pub(crate) async fn run(config_path: &Path, host: &mut dyn Host) -> Result<Stopped, RunError> {
    boot_clock::use_clock(host.clock());
    let env = config::EnvSnapshot::capture();
    let config = match config::load_with(config_path, &env) {
        Ok(config) => Arc::new(config),
        Err(e) => {
            eprintln!("pos-agent: {e}");
            return Err(RunError::Configuration);
        }
    };
    if let Err(e) = host.init_process(&config) {
        eprintln!("pos-agent: {e}");
        return Err(RunError::Configuration);
    }

    let state_dir = config.state_directory(&env);
    let store = match StateStore::open(&state_dir) {
        Ok(store) => store,
        Err(e) => {
            error!("cannot start: {e}");
            if let Some(textfile) = &config.metrics.textfile {
                if let Err(e) = metrics::write_textfile(textfile, metrics::STATE_UNUSABLE_TEXTFILE)
                {
                    warn!(
                        "cannot write the metrics textfile {}: {e}",
                        textfile.display()
                    );
                }
            }
            return Err(RunError::StateUnreadable);
        }
    };
    // The same checks `check-config` makes, so that it passing means this passes.
    let client = match preflight(&config, &env) {
        Ok(client) => client,
        Err(problems) => {
            let e = config::ConfigError {
                file: config_path.to_owned(),
                problems,
            };
            error!("cannot start: {e}");
            return Err(RunError::Configuration);
        }
    };
    let listener = match systemd::listen_socket() {
        Ok(Some(listener)) => control::adopt(listener),
        Ok(None) => control::bind(&config.control_socket(&env)),
        Err(e) => Err(e),
    };
    let listener = match listener {
        Ok(listener) => listener,
        Err(e) => {
            error!("cannot open the control socket: {e}");
            return Err(RunError::Setup);
        }
    };
    let mut signals = match host.signals() {
        Ok(signals) => signals,
        Err(_) => {
            error!("cannot install the signal handlers");
            return Err(RunError::Setup);
        }
    };

    let (link, mut link_events) = serial::spawn_link(config.serial.clone());
    let core = Core::new(Arc::clone(&config), client, store, link);
    let (calls, mut control_calls) = mpsc::channel::<ControlCall>(16);
    // The control socket keeps answering `status` and `pending` during the shutdown; it goes
    // with the process.
    tokio::spawn(control::serve(listener, calls, std::future::pending()));

    tokio::spawn(connection::maintain(Arc::clone(&core)));
    tokio::spawn(resend_after_storage_recovery(Arc::clone(&core)));
    if let Some(textfile) = config.metrics.textfile.clone() {
        let core = Arc::clone(&core);
        host.start_metrics_textfile(
            Box::new(move || gauges(&core)),
            textfile,
            config.metrics.interval,
        );
    }
    let notifier = systemd::Notifier::start();
    notifier.ready();
    info!(
        version = build_info::VERSION,
        commit = build_info::COMMIT,
        "pos-agent {} ready",
        build_info::LONG_VERSION
    );

    let mut watchdog = systemd::watchdog_interval().map(|period| {
        let mut interval = tokio::time::interval(period);
        // After a stall, one pet and on: never a burst of late ones.
        interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        interval
    });
    let mut link_up = false;
    let mut last_status = String::new();
    let mut timer_hold = TimerHold::default();
    // An operator's `restart` with `keep_pending`, answered once the stop is done.
    let mut stop_call = None;
    loop {
        let status = status_line(&core, link_up, false);
        if status != last_status {
            notifier.status(&status);
            last_status = status;
        }
        let next_timeout = core.next_payment_timeout().map(|due| timer_hold.due(due));
        tokio::select! {
            biased;
            _ = tick(&mut watchdog) => notifier.watchdog(),
            signal = next_signal(&mut *signals) => match signal {
                Signal::Terminate | Signal::Interrupt => break,
                Signal::Reload => {
                    notifier.reloading();
                    reload(&core, config_path);
                    notifier.ready();
                }
            },
            Some(call) = control_calls.recv() => {
                if let ControlRequest::RestartKeepingPending { start } = call.request {
                    stop_call = Some((start, call));
                    break;
                }
                let core = Arc::clone(&core);
                tokio::spawn(async move {
                    let response = handle_control(&core, call.request).await;
                    let _ = call.reply.send(response);
                });
            }
            Some(event) = link_events.recv() => match event {
                LinkEvent::Up => {
                    link_up = true;
                    info!(link_state = "up", "terminal link up");
                    core.tell_terminal(AgentRequest::ready());
                }
                LinkEvent::Down => {
                    link_up = false;
                    warn!(link_state = "down", "terminal link down");
                }
                LinkEvent::Request(request) => {
                    let core = Arc::clone(&core);
                    tokio::spawn(handle_terminal(core, request));
                }
            },
            due = sleep_until(next_timeout) => {
                if !due {
                    continue;
                }
                let (expired, commit) = core.mark_timed_out();
                if commit.is_none() {
                    // Logged by the core (`cannot mark timed-out payments: ...`).
                    timer_hold.not_recorded(boot_clock::now());
                    continue;
                }
                timer_hold.recorded();
                let core = Arc::clone(&core);
                tokio::spawn(async move { core.cancel_timed_out(expired, commit).await });
            }
            _ = core.changed.notified() => {}
        }
    }
    let mut events = Events {
        signals,
        watchdog,
        control_calls,
        link_events,
        notifier,
    };
    let keep_pending = stop_call.is_some();
    let stopped = match shut_down(&core, &mut events, link_up, keep_pending).await {
        Ok(()) => match stop_call {
            Some((start, call)) => Ok(answer_stop(&core, call, start).await),
            None => Ok(Stopped::Clean),
        },
        // Cut short by a second signal: the operator's call is dropped unanswered (`internal`).
        Err(e) => Err(e),
    };
    events.notifier.finish(Duration::from_secs(1));
    logging::flush_summaries();
    stopped
}

/// `SIGHUP` (docs/configuration.md (Reloading)): reads the configuration and the credentials
/// again and applies the API keys and service parameters; a key that needs a restart is named
/// and keeps its running value; a configuration that does not load changes nothing. Pending
/// payments, sales and the connection go on as they were.
fn reload(core: &Core, config_path: &Path) {
    let reloaded = config::load_with(config_path, &config::EnvSnapshot::capture())
        .map(|loaded| config::reloaded(&core.config(), loaded))
        .map_err(|e| e.to_string())
        .and_then(|reloaded| {
            let client =
                PaywallClient::new(&reloaded.config.paywall_settings).map_err(|e| e.to_string())?;
            Ok((
                reloaded,
                client.with_retry_policy(core.client().retry_policy()),
            ))
        });
    let (reloaded, client) = match reloaded {
        Ok(reloaded) => reloaded,
        Err(e) => {
            error!("reload refused, the running configuration is kept: {e}");
            return;
        }
    };
    for key in &reloaded.needs_restart {
        warn!(
            key = key.as_str(),
            "reload: {key} changed; it takes effect at the next restart, the running value is kept"
        );
    }
    let sources: Vec<String> = reloaded
        .config
        .provenance
        .secrets
        .iter()
        .map(|(name, source)| format!("{name} from {source}"))
        .collect();
    core.replace_config(Arc::new(reloaded.config), client);
    info!(
        "configuration reloaded from {}: API keys {}",
        config_path.display(),
        sources.join(", ")
    );
}

/// A change that could not be recorded (a full disk) is in memory and is written by the state
/// writer once the storage recovers; the cancels it marked are then sent, as at a reconnect.
async fn resend_after_storage_recovery(core: Arc<Core>) {
    let mut health = core.with_store(|s| s.storage_health());
    let mut failing = false;
    while health.changed().await.is_ok() {
        let now_failing = health.borrow_and_update().failing;
        if failing && !now_failing && !core.is_stopping() {
            core.resend_requested_cancels().await;
        }
        failing = now_failing;
    }
}

/// Sleeps until `at` on the boot clock, or for [`boot_clock::RECHECK`] if that is sooner (the
/// main loop then looks at the pending payments again); true when `at` has come.
async fn sleep_until(at: Option<BootMillis>) -> bool {
    match at {
        Some(at) => {
            let wait = boot_clock::elapsed(boot_clock::now(), at);
            tokio::time::sleep(wait.min(boot_clock::RECHECK)).await;
            wait <= boot_clock::RECHECK
        }
        None => std::future::pending().await,
    }
}

/// The payment timer's pause after it could not mark the timed-out payments, which happens
/// when the state writer is behind (docs/state.md, "When the payment timer cannot record"): it
/// tries again after the common outage policy's ceiling for the failures so far (0.5 s,
/// doubling up to 30 s), rather than at once and in a loop on a storage that is already
/// stalled. The pause is measured on the boot clock, as the payments' ages are; a mark
/// recorded ends it.
#[derive(Debug, Default)]
struct TimerHold {
    failures: usize,
    until: Option<BootMillis>,
}

impl TimerHold {
    /// The marks could not be recorded at `now`: the pause before the next try.
    fn not_recorded(&mut self, now: BootMillis) -> Duration {
        let wait = RetryPolicy::API_OUTAGE.ceiling(self.failures);
        self.until = Some(boot_clock::after(now, wait));
        self.failures = self.failures.saturating_add(1);
        wait
    }

    fn recorded(&mut self) {
        *self = Self::default();
    }

    /// When the timer handles a payment due at `due`: then, and not before the pause ends.
    fn due(&self, due: BootMillis) -> BootMillis {
        self.until.map_or(due, |until| due.max(until))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_payment_timer_waits_longer_after_each_mark_it_could_not_record() {
        let now: BootMillis = 1_000_000;
        let mut hold = TimerHold::default();
        // Nothing failed: a payment due now is handled now, one due later then.
        assert_eq!(hold.due(now), now);
        assert_eq!(hold.due(now + 1_000), now + 1_000);

        let waits: Vec<Duration> = (0..10).map(|_| hold.not_recorded(now)).collect();
        let ms = |ms| Duration::from_millis(ms);
        assert_eq!(
            waits,
            [
                ms(500),
                ms(1_000),
                ms(2_000),
                ms(4_000),
                ms(8_000),
                ms(16_000),
                ms(30_000),
                ms(30_000),
                ms(30_000),
                ms(30_000)
            ]
        );
        // An overdue payment waits out the pause; one due after the pause is handled when it
        // is due.
        assert_eq!(hold.due(now - 5_000), now + 30_000);
        assert_eq!(hold.due(now + 60_000), now + 60_000);

        hold.recorded();
        assert_eq!(hold.due(now - 5_000), now - 5_000);
        assert_eq!(hold.not_recorded(now), ms(500));
    }
}

//! What the daemon tells systemd as it runs: the `STATUS=` line and the watchdog's tick, for
//! the main loop and the shutdown alike.

use super::core::Core;

pub(super) async fn tick(watchdog: &mut Option<tokio::time::Interval>) {
    match watchdog {
        Some(interval) => {
            interval.tick().await;
        }
        None => std::future::pending().await,
    }
}

/// systemd's `STATUS=`; `cancelling`: whether a shutdown under way cancels the pending payments.
pub(super) fn status_line(core: &Core, link_up: bool, cancelling: bool) -> String {
    let connection = core.connection_state();
    let terminal = if link_up { "up" } else { "down" };
    let pending = core.pending_count();
    if core.is_stopping() {
        let left = if cancelling {
            "left to cancel"
        } else {
            "pending"
        };
        return format!("stopping · {pending} {left} · {connection} · terminal {terminal}");
    }
    format!("{connection} · terminal {terminal} · {pending} pending")
}

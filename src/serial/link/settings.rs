//! The timers and limits of one link: what `[serial]` sets ([`LinkSettings`]), the fixed
//! timers of docs/serial-protocol.md §2 and §4, and the bounds of the link's queues. The bare §
//! below cite docs/serial-protocol.md.

use std::time::Duration;

use crate::config::SerialConfig;
use crate::serial::line::LineTiming;

/// The target of every log line of the link, whichever of its files writes it: the module's
/// name, as log filters (`[log] level`), the journal's `TARGET=` and the repeat summariser
/// know it.
pub(super) const LOG_TARGET: &str = "pos_agent::serial::link";

/// T1 (§2): the longest pause between two bytes inside a frame.
pub const INTER_BYTE_TIMEOUT: Duration = Duration::from_millis(200);
/// Unanswered `ping`s in a row after which the link is down (§4).
pub const MISSED_PINGS_FOR_DOWN: u32 = 3;
/// Requests from the peer handed to the application and not answered yet. Beyond it a new
/// request is answered at once with `error busy` (nothing was done; the peer may send it again,
/// and it is then taken anew, not answered from the replay cache). This bounds the event and
/// reply queues and the application's work a chatty or broken peer can cause, and still
/// answers every request.
pub const MAX_REQUESTS_IN_PROGRESS: usize = 32;
/// The application's requests waiting for the link task; a sender waits for room (within its
/// reply timeout).
pub const COMMAND_QUEUE: usize = 64;
/// Frames queued for sending. At the bound the link stops taking the application's requests
/// (they wait in [`COMMAND_QUEUE`]) and drops repeated replies to duplicate requests (the peer
/// asks again).
pub const MAX_QUEUED_FRAMES: usize = 64;
/// Events waiting for the application: one per request in progress, and room for the up/down
/// changes. An up/down event that finds it full is dropped (the state is in
/// `LinkHandle::state` all the same).
pub(super) const EVENT_QUEUE: usize = MAX_REQUESTS_IN_PROGRESS + 16;

/// The timers and limits of one link.
#[derive(Debug, Clone)]
pub struct LinkSettings {
    /// T3: how long a sent frame waits for ACK/NAK.
    pub ack_timeout: Duration,
    /// Sends of one frame in total before it fails and the link is down.
    pub max_sends: u32,
    /// Idle time after which a `ping` is sent.
    pub ping_interval: Duration,
    /// Unanswered pings in a row that mean the link is down.
    pub missed_pings_for_down: u32,
    /// T1.
    pub inter_byte_timeout: Duration,
    /// How long `LinkHandle::request` waits for the reply (counted from the call: the wait
    /// for the line and both frames' time on the wire are part of it).
    pub reply_timeout: Duration,
    /// How long a character takes on the line: where T3 and the other send deadlines start.
    pub line: LineTiming,
}

impl LinkSettings {
    /// The link timers of the `[serial]` section; the rest as docs/serial-protocol.md fixes them.
    pub fn from_config(config: &SerialConfig) -> Self {
        // Floors keep a mistyped configuration from turning the link into a busy loop.
        Self {
            ack_timeout: config.ack_timeout.max(Duration::from_millis(10)),
            max_sends: config.max_sends.max(1),
            ping_interval: config.ping_interval.max(Duration::from_millis(100)),
            line: LineTiming::from_config(config),
            ..Self::default()
        }
    }
}

impl Default for LinkSettings {
    fn default() -> Self {
        let config = SerialConfig::default();
        Self {
            ack_timeout: config.ack_timeout,
            max_sends: config.max_sends,
            ping_interval: config.ping_interval,
            missed_pings_for_down: MISSED_PINGS_FOR_DOWN,
            inter_byte_timeout: INTER_BYTE_TIMEOUT,
            reply_timeout: Duration::from_secs(30),
            line: LineTiming::from_config(&config),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_log_target_is_the_link_modules_path() {
        assert_eq!(
            module_path!(),
            format!("{LOG_TARGET}::settings::tests"),
            "LOG_TARGET must name the module holding the link's files"
        );
    }
}

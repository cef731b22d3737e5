//! The link layer (docs/serial-protocol.md §2–§4): stop-and-wait sending with T3 and `max_sends`, ACK/NAK
//! for every received frame, T1, the replay cache of §3, `ping` liveness and the up/down state.
//!
//! One task owns the transport and all link state; the application talks to it through a
//! [`LinkHandle`] (send a request, await its reply) and a stream of [`LinkEvent`]s (link up/down,
//! requests from the peer). The layer is role-agnostic: the agent runs
//! `Link<TerminalRequest, AgentRequest>` ([`AgentLink`]), the terminal simulator the mirror
//! image ([`TerminalLink`]). It runs over any `AsyncRead + AsyncWrite`: a serial port, a pty
//! master, or `tokio::io::duplex` in unit tests. Time is tokio time.
//!
//! Link up/down: the link is *up* from the first sign of life of the peer (a good frame or an
//! ACK) until a frame fails after `max_sends` sends or three `ping`s in a row go unanswered.
//!
//! One file per idea, each using only those listed before it: `settings` (the timers and
//! limits), `replay` (the replay cache of §3), `handle` (the application's side: handle,
//! events, incoming requests) and `session` ([`Link::over`] and the task that runs the link).
//! The port statistics are not the link's: `serial::port` keeps them beside it.

// Time and count arithmetic: docs/architecture.md, "Lint policy". The bare § below cite
// docs/serial-protocol.md.
#![warn(clippy::arithmetic_side_effects)]

mod handle;
mod replay;
mod session;
mod settings;

pub use handle::{IncomingRequest, LinkError, LinkEvent, LinkHandle, LinkState};
pub use replay::REPLAY_CACHE_SIZE;
pub use session::{AgentLink, Link, TerminalLink};
pub(crate) use session::{LinkCore, SessionEnd};
pub use settings::{
    LinkSettings, COMMAND_QUEUE, INTER_BYTE_TIMEOUT, MAX_QUEUED_FRAMES, MAX_REQUESTS_IN_PROGRESS,
    MISSED_PINGS_FOR_DOWN,
};

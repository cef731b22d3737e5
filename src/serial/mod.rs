//! Serial link protocol v1 to the terminal (`docs/serial-protocol.md`), layered:
//! `frame` (bytes of one frame), `codec` (the byte stream ↔ frames/ACK/NAK), `message` (typed
//! JSON messages), `line` (how long bytes take on the wire at the line settings), `link`
//! (stop-and-wait, ACK/NAK, replay cache, liveness, up/down) and `port` (the real device: open
//! with the line settings, reopen with backoff).
//! `docs/serial-protocol.md` describes the protocol as implemented.

pub mod codec;
pub mod frame;
pub mod line;
pub mod link;
pub mod message;
pub mod port;

// What the rest of the crate, the tests and the benches name from here; the rest is reached
// through its module (`serial::message::AgentReadiness`, `serial::port::PortError`, ...).
pub use line::LineTiming;
pub use link::{
    AgentLink, IncomingRequest, LinkError, LinkEvent, LinkHandle, LinkSettings, LinkState,
    TerminalLink,
};
pub use message::{
    AgentRequest, CancelReason, ErrorCode, Reply, SaleOrder, TerminalIdentity, TerminalRequest,
    PROTOCOL_VERSION,
};
pub use port::{open_port, spawn_link, spawn_port_link, PortStats, SerialHandle};

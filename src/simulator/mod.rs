//! Stand-ins for the two peers the agent talks to, for tests, the demo and manual runs:
//! the payment API (`api`) and the terminal on the other end of the serial line (`terminal`).

pub mod api;
pub mod terminal;

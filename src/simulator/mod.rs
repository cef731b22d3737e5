//! Stand-ins for the two peers the agent talks to, for tests, the demo and manual runs:
//! the payment API (`api`), the terminal on the other end of the serial line (`terminal`) and
//! the virtual serial line between them (`virtual_serial`).

pub mod api;
pub mod terminal;
pub mod virtual_serial;

//! The agent daemon: the payment lifecycle (`core`), the payment-API connection
//! (`connection`), why a request is refused (`refusal`) and the process around them: start-up,
//! main loop, shutdown (`daemon`).

mod ages;
mod audit;
mod connection;
mod core;
mod daemon;
mod refusal;

pub use connection::ConnectionState;
pub(crate) use daemon::run;
pub use refusal::Refusal;

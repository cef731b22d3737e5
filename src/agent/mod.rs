//! The agent daemon: the payment lifecycle (`core`), the payment-API connection
//! (`connection`), why a request is refused (`refusal`) and the process around them: start-up,
//! main loop, shutdown (`daemon`).

pub mod connection;
pub mod core;
pub mod daemon;
pub mod refusal;

pub use connection::ConnectionState;
pub use daemon::run;
pub use refusal::Refusal;

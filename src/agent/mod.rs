//! The agent daemon: the payment lifecycle (`core`), the payment-API connection
//! (`connection`) and the process around them: start-up, main loop, shutdown (`daemon`).

pub mod connection;
pub mod core;
pub mod daemon;

pub use daemon::run;

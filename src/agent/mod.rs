//! The agent daemon: the payment lifecycle (`core`), the payment-API connection
//! (`connection`), the refusal a failed API call amounts to (`refusal`) and the process around
//! them: start-up, main loop, shutdown (`daemon`).

mod ages;
mod audit;
mod cancel;
mod connection;
mod core;
mod daemon;
mod refusal;
mod sale;
mod terminal;
mod timeout;

pub(crate) use daemon::run;

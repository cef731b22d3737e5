//! Durable state (`docs/state.md`): the connection Id, every pending payment and the
//! merchant code → payment map that keeps sales idempotent across restarts. Money depends on it
//! surviving a crash at any instant: each change is journalled and synced by the state writer
//! (a thread of its own, group-committing), and the caller awaits its durability before the
//! side effect; state that cannot be read stops the start and is never replaced.

mod journal;
mod writer;

pub(crate) use journal::LOCK_FILE;
pub use journal::{
    encode_record, encode_snapshot, frame_record, load_from_bytes, Change, LoadError, Loaded,
    Record, JOURNAL_FILE, LEGACY_FORMAT_VERSION, MAX_RECORD_LEN, RECORD_HEADER_LEN, STATE_FILE,
    TEMP_FILE,
};

pub use writer::{
    StorageHealth, WriterStats, COMPACT_MIN_BYTES, COMPACT_RATIO, MAX_QUEUED, WRITE_RETRY,
};

mod error;
mod model;
mod store;
#[cfg(test)]
mod tests;

pub use error::StateError;
pub use model::{
    AgentState, CancelReason, CancelRefused, CancelRequest, PaymentOutcome, PaymentSource,
    PendingPayment, SaleRecord, SaleStage, Timestamp, FORMAT_VERSION, MAX_FINAL_SALES,
};
pub use store::{read_directory, Commit, StateStore};

pub(crate) use store::stored_connection_id;

//! Why state could not be opened, read, changed or written.

use std::path::PathBuf;

/// Why state could not be opened, read, changed or written.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("state directory {}: {source}", dir.display())]
    Directory {
        dir: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "state directory {} is in use by another pos-agent process (lock {} is held)",
        dir.display(),
        lock.display()
    )]
    Locked { dir: PathBuf, lock: PathBuf },
    #[error(
        "state file {} cannot be read: {reason}. It was left as it is: repair it or move it \
         away (the agent then starts with empty state), then start again",
        file.display()
    )]
    Unreadable { file: PathBuf, reason: String },
    /// State only a newer release writes (docs/state.md, "Compatibility between releases").
    #[error(
        "state file {} was written by a newer pos-agent ({reason}). It was left as it is and may \
         hold pending payments: do not move it away; start that release or a newer one again",
        file.display()
    )]
    NewerFormat { file: PathBuf, reason: String },
    #[error(
        "the state writer is behind: {queued} changes wait for the storage; this change was \
         refused"
    )]
    WriterBehind { queued: usize },
    #[error("cannot write state file {}: {source}", file.display())]
    Write {
        file: PathBuf,
        source: std::io::Error,
    },
    #[error("payment {0} is not pending")]
    UnknownPayment(String),
    #[error("no sale with merchant unique code {0}")]
    UnknownSale(String),
    #[error("sale {code} is already {stage}")]
    SaleConflict { code: String, stage: &'static str },
}

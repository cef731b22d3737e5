//! The state writer: a thread of its own that makes changes durable, so that a slow `fdatasync`
//! on flash never stalls the runtime (the serial link, the control socket, the watchdog).
//! Changes queue while a sync runs and are committed together by the next one (group commit);
//! each waiter hears when its own change is durable. The journal is compacted into a new
//! snapshot when it outgrows it, so a change costs bytes in proportion to itself, not to the
//! number of pending payments.

use crate::metrics::METRICS;
use crate::sync::{lock, wait, wait_timeout};
use std::fs::{File, OpenOptions};
use std::io::Write as _;
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;

use tokio::sync::{oneshot, watch};

use super::journal::{
    encode_record, encode_snapshot, Change, Record, JOURNAL_FILE, STATE_FILE, TEMP_FILE,
};
use super::AgentState;

/// The most operations whose changes may wait for the writer; beyond it a change is refused
/// (`StateError::WriterBehind`) before it is applied. Every operation waits for its own change,
/// so reaching this means the storage has stopped answering.
pub const MAX_QUEUED: usize = 4096;
/// The journal is compacted once it is larger than this many times the last snapshot (and
/// larger than [`COMPACT_MIN_BYTES`]): the snapshot's cost is spread over the changes that
/// grew the journal, so each change costs a bounded multiple of its own record.
pub const COMPACT_RATIO: u64 = 4;
pub const COMPACT_MIN_BYTES: u64 = 64 * 1024;
/// While a write has failed, the writer tries again this often by itself, so that what could
/// not be recorded becomes durable once the storage recovers, without waiting for a new change.
pub const WRITE_RETRY: std::time::Duration = std::time::Duration::from_secs(2);

/// The state directory's health as the writer last saw it (`status`, `check-health`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StorageHealth {
    /// The last write failed: changes are not durable yet, and whatever waits for durability
    /// (a sale, an operator's cancel) is refused until a write succeeds again.
    pub failing: bool,
    /// The latest write error and when it happened; kept after the recovery.
    pub last_error: Option<(String, std::time::SystemTime)>,
}

/// The outcome sent to a waiter: `Err` carries the I/O error's kind and text.
pub(crate) type Outcome = Result<(), (std::io::ErrorKind, String)>;

struct Queued {
    changes: Vec<Change>,
    done: Option<oneshot::Sender<Outcome>>,
    /// `done` waits for a compaction after the append, not for the append alone.
    compact: bool,
}

#[derive(Default)]
struct Queue {
    items: Vec<Queued>,
    closing: bool,
}

/// What the store and the writer thread share.
struct Shared {
    queue: Mutex<Queue>,
    wake: Condvar,
    bytes_written: AtomicU64,
    syncs: AtomicU64,
    queued: AtomicUsize,
    health: watch::Sender<StorageHealth>,
}

/// Counters of what the writer did, for benchmarks and diagnostics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct WriterStats {
    /// Bytes written to the journal and to snapshots.
    pub bytes_written: u64,
    /// `fsync`/`fdatasync` calls made.
    pub syncs: u64,
}

/// The store's end of the writer.
pub(crate) struct Writer {
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

/// Where the writer starts from.
pub(crate) struct Start {
    pub directory: PathBuf,
    /// The state as loaded: the writer's replica, from which it writes snapshots.
    pub state: AgentState,
    /// Whether `state.json` exists in the current format.
    pub snapshot_current: bool,
    /// The journal's length: whole records only (a torn tail was cut off when it was read).
    pub journal_len: u64,
    /// Write a snapshot at once (migration), not only at the first change.
    pub compact_now: bool,
}

impl Writer {
    pub(crate) fn spawn(start: Start) -> std::io::Result<Self> {
        let shared = Arc::new(Shared {
            queue: Mutex::new(Queue::default()),
            wake: Condvar::new(),
            bytes_written: AtomicU64::new(0),
            syncs: AtomicU64::new(0),
            queued: AtomicUsize::new(0),
            health: watch::channel(StorageHealth::default()).0,
        });
        let thread = crate::thread::spawn(
            "state-writer",
            None,
            Box::new({
                let shared = Arc::clone(&shared);
                move || Files::new(start, shared).run()
            }),
        )?;
        Ok(Self {
            shared,
            thread: Some(thread),
        })
    }

    /// Operations whose changes are not durable yet.
    pub(crate) fn queued(&self) -> usize {
        self.shared.queued.load(Ordering::Relaxed)
    }

    /// Queues `changes` (possibly none: then `done` hears when everything queued before is
    /// durable; with `compact`, when it is also folded into the snapshot and the journal is
    /// empty, or the error that stopped that: the journal then still holds every change).
    pub(crate) fn submit(
        &self,
        changes: Vec<Change>,
        done: Option<oneshot::Sender<Outcome>>,
        compact: bool,
    ) {
        self.shared.queued.fetch_add(1, Ordering::Relaxed);
        lock(&self.shared.queue).items.push(Queued {
            changes,
            done,
            compact,
        });
        self.shared.wake.notify_one();
    }

    /// The storage's health, and changes to it.
    pub(crate) fn health(&self) -> watch::Receiver<StorageHealth> {
        self.shared.health.subscribe()
    }

    pub(crate) fn stats(&self) -> WriterStats {
        WriterStats {
            bytes_written: self.shared.bytes_written.load(Ordering::Relaxed),
            syncs: self.shared.syncs.load(Ordering::Relaxed),
        }
    }
}

impl Drop for Writer {
    /// Writes what is queued, then ends the thread.
    fn drop(&mut self) {
        lock(&self.shared.queue).closing = true;
        self.shared.wake.notify_one();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// The writer thread's files and replica of the state.
///
/// The journal on disk holds, after the snapshot, every change the replica holds beyond it
/// except `backlog`: a compaction runs only once the backlog is appended and synced, so that
/// replaying the journal over the new snapshot changes nothing (docs/state.md, "Why a crash
/// anywhere is safe").
struct Files {
    directory: PathBuf,
    shared: Arc<Shared>,
    replica: AgentState,
    journal: Option<File>,
    /// Bytes of the journal known durable: whole records.
    journal_len: u64,
    snapshot_len: u64,
    /// No snapshot in the current format yet (a new directory, a migration not yet written):
    /// the next write is a snapshot. The journal is empty then.
    need_snapshot: bool,
    compact_now: bool,
    /// Records applied to the replica and not yet durable (a failed write keeps them here, and
    /// the next write makes them durable with its own).
    backlog: Vec<u8>,
    /// An append failed: bytes after `journal_len` are unknown and are cut off before the next.
    journal_dirty: bool,
}

impl Files {
    fn new(start: Start, shared: Arc<Shared>) -> Self {
        let snapshot_len = std::fs::metadata(start.directory.join(STATE_FILE))
            .map(|m| m.len())
            .unwrap_or(0);
        Self {
            directory: start.directory,
            shared,
            replica: start.state,
            journal: None,
            journal_len: start.journal_len,
            snapshot_len,
            need_snapshot: !start.snapshot_current,
            compact_now: start.compact_now,
            backlog: Vec::new(),
            journal_dirty: false,
        }
    }

    fn run(mut self) {
        if self.compact_now {
            self.compact_now = false;
            // A failure leaves the state as it was read, durable; the next write compacts.
            let result = self.compact();
            self.note_health(&result);
        }
        loop {
            let (group, closing) = {
                let mut queue = lock(&self.shared.queue);
                while queue.items.is_empty() && !queue.closing {
                    if !self.unwritten() {
                        queue = wait(&self.shared.wake, queue);
                        continue;
                    }
                    let (guard, timed_out) = wait_timeout(&self.shared.wake, queue, WRITE_RETRY);
                    queue = guard;
                    if timed_out {
                        break;
                    }
                }
                (std::mem::take(&mut queue.items), queue.closing)
            };
            if !group.is_empty() || self.unwritten() {
                self.commit(group);
            }
            if closing && lock(&self.shared.queue).items.is_empty() {
                return;
            }
        }
    }

    /// Makes one group durable (one append and one `fdatasync`, or one snapshot), tells its
    /// waiters, then compacts when the journal has outgrown the snapshot or a waiter asked for it.
    fn commit(&mut self, group: Vec<Queued>) {
        let count = group.len();
        let mut waiters = Vec::with_capacity(count);
        let mut compact_waiters = Vec::new();
        let mut encoded = Ok(());
        let adding = self.backlog.len();
        for item in group {
            if !item.changes.is_empty() {
                let record = Record {
                    changes: item.changes,
                };
                if let Err(e) = encode_record(&record, &mut self.backlog) {
                    encoded = Err(std::io::Error::other(e));
                }
                for change in record.changes {
                    change.apply(&mut self.replica);
                }
            }
            if item.compact {
                compact_waiters.extend(item.done);
            } else {
                waiters.extend(item.done);
            }
        }
        let added = self.backlog.len() > adding;
        let started = std::time::Instant::now();
        let result = match encoded {
            Err(e) => Err(e),
            Ok(()) if self.backlog.is_empty() => Ok(()),
            Ok(()) if self.need_snapshot => self.compact(),
            Ok(()) => self.append(),
        };
        if result.is_err() {
            METRICS.state_write_errors.inc();
        } else if added {
            METRICS.state_commit.observe(started.elapsed());
        }
        self.note_health(&result);
        let outcome: Outcome = result.map_err(|e| (e.kind(), e.to_string()));
        self.shared.queued.fetch_sub(count, Ordering::Relaxed);
        tell(waiters, &outcome);
        let asked = !compact_waiters.is_empty();
        let mut compacted = outcome;
        let wanted = asked && !self.is_compact() || self.due_for_compaction();
        if compacted.is_ok() && self.backlog.is_empty() && wanted {
            // The journal stays whole and readable if this fails; the next append retries it.
            let result = self.compact();
            if result.is_err() {
                METRICS.state_write_errors.inc();
            }
            compacted = result.map_err(|e| (e.kind(), e.to_string()));
        }
        tell(compact_waiters, &compacted);
    }

    /// Records applied here but not durable yet: a failed write left them in the backlog, and
    /// the writer tries again every [`WRITE_RETRY`] by itself until they are written.
    fn unwritten(&self) -> bool {
        !self.backlog.is_empty()
    }

    /// Records the outcome of a write; the first failure and the recovery are logged once each.
    fn note_health(&self, result: &std::io::Result<()>) {
        let directory = self.directory.display();
        let failing = self.shared.health.borrow().failing;
        match result {
            Err(e) => {
                if !failing {
                    tracing::error!(
                        "cannot write the state in {directory}: {e}; the changes are kept in memory and written again every {WRITE_RETRY:?}; sales are refused until then"
                    );
                }
                let error = (e.to_string(), std::time::SystemTime::now());
                self.shared.health.send_modify(|health| {
                    health.failing = true;
                    health.last_error = Some(error);
                });
            }
            Ok(()) if failing && !self.unwritten() => {
                tracing::info!(
                    "the state in {directory} is written again: every change is durable"
                );
                self.shared
                    .health
                    .send_modify(|health| health.failing = false);
            }
            Ok(()) => {}
        }
    }

    /// The snapshot on disk holds the whole replica and the journal is empty.
    fn is_compact(&self) -> bool {
        self.journal_len == 0 && !self.journal_dirty && !self.need_snapshot
    }

    fn due_for_compaction(&self) -> bool {
        self.journal_len > COMPACT_MIN_BYTES && self.journal_len > COMPACT_RATIO * self.snapshot_len
    }

    /// Appends the backlog to the journal and syncs it. On failure the backlog stays, and what
    /// reached the disk is cut off before the next append.
    fn append(&mut self) -> std::io::Result<()> {
        let result = self.try_append();
        if result.is_err() {
            self.journal_dirty = true;
            self.journal = None;
        }
        result
    }

    fn try_append(&mut self) -> std::io::Result<()> {
        let path = self.directory.join(JOURNAL_FILE);
        if self.journal_dirty {
            match OpenOptions::new().write(true).open(&path) {
                Ok(file) => {
                    file.set_len(self.journal_len)?;
                    file.sync_all()?;
                    self.shared.syncs.fetch_add(1, Ordering::Relaxed);
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound && self.journal_len == 0 => {}
                Err(e) => return Err(e),
            }
            self.journal_dirty = false;
        }
        if self.journal.is_none() {
            let existed = path.exists();
            let file = OpenOptions::new()
                .append(true)
                .create(true)
                .mode(0o600)
                .open(&path)?;
            if !existed {
                sync_directory(&self.directory)?;
                self.shared.syncs.fetch_add(1, Ordering::Relaxed);
            }
            self.journal = Some(file);
        }
        let Some(journal) = self.journal.as_mut() else {
            return Err(std::io::Error::other("journal not open"));
        };
        journal.write_all(&self.backlog)?;
        self.shared
            .bytes_written
            .fetch_add(self.backlog.len() as u64, Ordering::Relaxed);
        journal.sync_data()?;
        self.shared.syncs.fetch_add(1, Ordering::Relaxed);
        self.journal_len += self.backlog.len() as u64;
        self.backlog.clear();
        Ok(())
    }

    /// Writes the replica as the new snapshot (atomically, by rename), then empties the
    /// journal. Called only when the journal holds every change of the replica beyond the old
    /// snapshot (or there is no journal), so a crash between the two leaves a journal whose
    /// replay over the new snapshot changes nothing (see [`Change`]).
    fn compact(&mut self) -> std::io::Result<()> {
        let bytes = encode_snapshot(&self.replica).map_err(std::io::Error::other)?;
        write_snapshot(&self.directory, &bytes)?;
        self.shared
            .bytes_written
            .fetch_add(bytes.len() as u64, Ordering::Relaxed);
        self.shared.syncs.fetch_add(2, Ordering::Relaxed);
        self.snapshot_len = bytes.len() as u64;
        self.need_snapshot = false;
        self.backlog.clear();
        self.journal = None;
        let path = self.directory.join(JOURNAL_FILE);
        match OpenOptions::new().write(true).open(&path) {
            Ok(file) => {
                // Until the empty journal is durable, the next append first empties it again.
                self.journal_len = 0;
                self.journal_dirty = true;
                file.set_len(0)?;
                file.sync_all()?;
                self.journal_dirty = false;
                self.shared.syncs.fetch_add(1, Ordering::Relaxed);
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => self.journal_len = 0,
            Err(e) => return Err(e),
        }
        Ok(())
    }
}

/// The snapshot protocol: write `state.json.tmp` (0600), fsync it, rename it over
/// `state.json`, fsync the directory.
pub(crate) fn write_snapshot(directory: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let file = directory.join(STATE_FILE);
    let temp = directory.join(TEMP_FILE);
    // A leftover from a crash may have other permissions; a new file gets 0600.
    match std::fs::remove_file(&temp) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
        _ => {}
    }
    let mut out = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&temp)?;
    out.write_all(bytes)?;
    out.sync_all()?;
    drop(out);
    std::fs::rename(&temp, &file)?;
    sync_directory(directory)
}

/// Sends `outcome` to each waiter (one copy of the code for both kinds of waiter).
#[inline(never)]
fn tell(waiters: Vec<oneshot::Sender<Outcome>>, outcome: &Outcome) {
    for waiter in waiters {
        let _ = waiter.send(outcome.clone());
    }
}

fn sync_directory(directory: &Path) -> std::io::Result<()> {
    File::open(directory).and_then(|dir| dir.sync_all())
}

//! The state writer: a thread of its own that makes changes durable, so that a slow `fdatasync`
//! on flash never stalls the runtime (the serial link, the control socket, the watchdog).
//! Changes queue while a sync runs and are committed together by the next one (group commit);
//! each waiter hears when its own change is durable. The journal is compacted into a new
//! snapshot when it outgrows it, so a change costs bytes in proportion to itself, not to the
//! number of pending payments.

use crate::metrics::METRICS;
use std::fs::{File, OpenOptions};
use std::io::Write as _;
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;

use tokio::sync::{oneshot, watch};

use super::journal::{encode_record, encode_snapshot, Change, Record};
use super::{AgentState, JOURNAL_FILE, STATE_FILE, TEMP_FILE};

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
    /// The journal's valid length, and whether bytes follow it (a torn tail).
    pub journal_len: u64,
    pub torn_tail: bool,
    /// Write a snapshot at once (migration, torn tail), not only at the first change.
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
        let thread = std::thread::Builder::new()
            .name("state-writer".into())
            .spawn({
                let shared = Arc::clone(&shared);
                move || Files::new(start, shared).run()
            })?;
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
    /// durable).
    pub(crate) fn submit(&self, changes: Vec<Change>, done: Option<oneshot::Sender<Outcome>>) {
        self.shared.queued.fetch_add(1, Ordering::Relaxed);
        lock(&self.shared.queue)
            .items
            .push(Queued { changes, done });
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
struct Files {
    directory: PathBuf,
    shared: Arc<Shared>,
    replica: AgentState,
    journal: Option<File>,
    journal_len: u64,
    snapshot_len: u64,
    /// The next group is written as a snapshot, not appended: no current snapshot yet, a torn
    /// tail to replace, or an append that failed (its bytes on disk are unknown).
    compact_next: bool,
    compact_now: bool,
    /// The replica holds changes that a failed write did not make durable.
    unwritten: bool,
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
            compact_next: !start.snapshot_current || start.torn_tail,
            compact_now: start.compact_now,
            unwritten: false,
        }
    }

    fn run(mut self) {
        if self.compact_now {
            let result = self.compact();
            // Tried again with the retries, as a failed change is.
            self.unwritten = result.is_err();
            self.note_health(&result);
        }
        loop {
            let (group, closing) = {
                let mut queue = lock(&self.shared.queue);
                while queue.items.is_empty() && !queue.closing {
                    if !self.unwritten {
                        queue = match self.shared.wake.wait(queue) {
                            Ok(guard) => guard,
                            Err(poisoned) => poisoned.into_inner(),
                        };
                        continue;
                    }
                    let (guard, waited) = match self.shared.wake.wait_timeout(queue, WRITE_RETRY) {
                        Ok(woken) => woken,
                        Err(poisoned) => poisoned.into_inner(),
                    };
                    queue = guard;
                    if waited.timed_out() {
                        break;
                    }
                }
                (std::mem::take(&mut queue.items), queue.closing)
            };
            if !group.is_empty() || self.unwritten {
                self.commit(group);
            }
            if closing && lock(&self.shared.queue).items.is_empty() {
                return;
            }
        }
    }

    /// Makes one group durable (one append and one `fdatasync`, or one snapshot) and tells
    /// its waiters.
    fn commit(&mut self, group: Vec<Queued>) {
        let count = group.len();
        let mut bytes = Vec::new();
        let mut waiters = Vec::with_capacity(count);
        let mut encoded = Ok(());
        for item in group {
            if !item.changes.is_empty() {
                let record = Record {
                    changes: item.changes,
                };
                if let Err(e) = encode_record(&record, &mut bytes) {
                    encoded = Err(std::io::Error::other(e));
                }
                for change in record.changes {
                    change.apply(&mut self.replica);
                }
            }
            waiters.extend(item.done);
        }
        let started = std::time::Instant::now();
        let result = match encoded {
            Err(e) => Err(e),
            Ok(()) if bytes.is_empty() && !self.unwritten => Ok(()),
            Ok(())
                if self.compact_next || self.unwritten || self.due_for_compaction(bytes.len()) =>
            {
                self.compact()
            }
            Ok(()) => self.append(&bytes),
        };
        if result.is_err() {
            self.unwritten = true;
            METRICS.state_write_errors.inc();
        } else if !bytes.is_empty() {
            METRICS.state_commit.observe(started.elapsed());
        }
        self.note_health(&result);
        let outcome: Outcome = result.map_err(|e| (e.kind(), e.to_string()));
        self.shared.queued.fetch_sub(count, Ordering::Relaxed);
        for waiter in waiters {
            let _ = waiter.send(outcome.clone());
        }
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
            Ok(()) if failing && !self.unwritten => {
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

    fn due_for_compaction(&self, adding: usize) -> bool {
        let after = self.journal_len + adding as u64;
        after > COMPACT_MIN_BYTES && after > COMPACT_RATIO * self.snapshot_len
    }

    fn append(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        let result = self.try_append(bytes);
        if result.is_err() {
            // What reached the disk is unknown: the next write replaces it all.
            self.compact_next = true;
            self.journal = None;
        }
        result
    }

    fn try_append(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        if self.journal.is_none() {
            let path = self.directory.join(JOURNAL_FILE);
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
        journal.write_all(bytes)?;
        self.shared
            .bytes_written
            .fetch_add(bytes.len() as u64, Ordering::Relaxed);
        journal.sync_data()?;
        self.shared.syncs.fetch_add(1, Ordering::Relaxed);
        self.journal_len += bytes.len() as u64;
        Ok(())
    }

    /// Writes the replica as the new snapshot (atomically, by rename), then empties the
    /// journal. A crash between the two leaves a journal whose records the snapshot already
    /// holds; replaying them changes nothing (see [`Change`]).
    fn compact(&mut self) -> std::io::Result<()> {
        let result = self.try_compact();
        self.compact_next = result.is_err();
        self.compact_now = false;
        if result.is_ok() {
            self.unwritten = false;
        }
        result
    }

    fn try_compact(&mut self) -> std::io::Result<()> {
        let bytes = encode_snapshot(&self.replica).map_err(std::io::Error::other)?;
        write_snapshot(&self.directory, &bytes)?;
        self.shared
            .bytes_written
            .fetch_add(bytes.len() as u64, Ordering::Relaxed);
        self.shared.syncs.fetch_add(2, Ordering::Relaxed);
        self.snapshot_len = bytes.len() as u64;
        self.journal = None;
        let path = self.directory.join(JOURNAL_FILE);
        match OpenOptions::new().write(true).open(&path) {
            Ok(file) => {
                file.set_len(0)?;
                file.sync_all()?;
                self.shared.syncs.fetch_add(1, Ordering::Relaxed);
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        self.journal_len = 0;
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

fn sync_directory(directory: &Path) -> std::io::Result<()> {
    File::open(directory).and_then(|dir| dir.sync_all())
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    match mutex.lock() {
        Ok(guard) => guard,
        Err(poisoned) => poisoned.into_inner(),
    }
}

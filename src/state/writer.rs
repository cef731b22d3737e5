//! The state writer: a thread of its own that makes changes durable, so that a slow `fdatasync`
//! on flash never stalls the runtime (the serial link, the control socket, the watchdog).
//! The writer thread appends each group of queued changes to the journal (one `write`) and
//! leaves the `fdatasync` to a small pool of sync threads, so a group written while a sync
//! runs does not wait for that sync to end: another thread starts one at once (pipelined
//! syncs). A group is durable once a sync that *started* after its `write` returned has
//! completed; waiters are told in journal order. The journal is compacted into a new snapshot
//! when it outgrows it, so a change costs bytes in proportion to itself, not to the number of
//! pending payments.

use std::collections::VecDeque;
use std::fs::{File, OpenOptions};
use std::io::Write as _;
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;

use tokio::sync::oneshot;

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
/// The most `fdatasync` calls on the journal in flight at once. A group appended while they
/// all run waits for the first to end, then gets a sync of its own.
pub const SYNC_THREADS: usize = 4;
/// The sync threads only call `fdatasync` and wake waiters.
const SYNC_THREAD_STACK: usize = 64 * 1024;

/// The outcome sent to a waiter: `Err` carries the I/O error's kind and text.
pub type Outcome = Result<(), (std::io::ErrorKind, String)>;

struct Queued {
    changes: Vec<Change>,
    done: Option<oneshot::Sender<Outcome>>,
}

#[derive(Default)]
struct Queue {
    items: Vec<Queued>,
    closing: bool,
}

/// A group appended to the journal and not yet durable.
struct Unsynced {
    /// Where the group ends, in bytes appended since the writer started (see [`Syncing`]).
    end: u64,
    /// How many queued operations it holds.
    operations: usize,
    waiters: Vec<oneshot::Sender<Outcome>>,
}

/// What the writer thread and the sync threads share. Positions count the bytes appended
/// to the journal since the writer started (they do not go back when the journal is
/// compacted), so "durable up to" is one number.
#[derive(Default)]
struct Syncing {
    /// The journal being appended to, while there is one.
    journal: Option<Arc<File>>,
    /// The end of the last group whose `write` returned.
    appended: u64,
    /// The highest position a started sync covers.
    started: u64,
    /// The highest position a completed sync covers.
    durable: u64,
    /// Syncs in flight.
    running: usize,
    /// Appended groups waiting for a sync, in journal order.
    unsynced: VecDeque<Unsynced>,
    /// A sync failed: what it covered may be lost, and no later sync can vouch for it. Every
    /// waiter hears the error until the writer has replaced the journal by a snapshot.
    failed: Option<(std::io::ErrorKind, String)>,
    closing: bool,
}

/// What the store and the writer's threads share.
struct Shared {
    queue: Mutex<Queue>,
    wake: Condvar,
    syncing: Mutex<Syncing>,
    /// Wakes the sync threads (a group appended, or closing) and the writer thread (a sync
    /// ended).
    synced: Condvar,
    bytes_written: AtomicU64,
    syncs: AtomicU64,
    queued: AtomicUsize,
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
pub struct Writer {
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

/// Where the writer starts from.
pub struct Start {
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
    pub fn spawn(start: Start) -> std::io::Result<Self> {
        let shared = Arc::new(Shared {
            queue: Mutex::new(Queue::default()),
            wake: Condvar::new(),
            syncing: Mutex::new(Syncing::default()),
            synced: Condvar::new(),
            bytes_written: AtomicU64::new(0),
            syncs: AtomicU64::new(0),
            queued: AtomicUsize::new(0),
        });
        let mut syncers = Vec::with_capacity(SYNC_THREADS);
        for _ in 0..SYNC_THREADS {
            let for_thread = Arc::clone(&shared);
            let spawned = std::thread::Builder::new()
                .name("state-sync".into())
                .stack_size(SYNC_THREAD_STACK)
                .spawn(move || sync_thread(&for_thread));
            match spawned {
                Ok(handle) => syncers.push(handle),
                Err(e) => {
                    stop_syncers(&shared, syncers);
                    return Err(e);
                }
            }
        }
        let thread = std::thread::Builder::new()
            .name("state-writer".into())
            .spawn({
                let shared = Arc::clone(&shared);
                move || {
                    Files::new(start, Arc::clone(&shared)).run();
                    stop_syncers(&shared, syncers);
                }
            })?;
        Ok(Self {
            shared,
            thread: Some(thread),
        })
    }

    /// Operations whose changes are not durable yet.
    pub fn queued(&self) -> usize {
        self.shared.queued.load(Ordering::Relaxed)
    }

    /// Queues `changes` (possibly none: then `done` hears when everything queued before is
    /// durable).
    pub fn submit(&self, changes: Vec<Change>, done: Option<oneshot::Sender<Outcome>>) {
        self.shared.queued.fetch_add(1, Ordering::Relaxed);
        lock(&self.shared.queue)
            .items
            .push(Queued { changes, done });
        self.shared.wake.notify_one();
    }

    pub fn stats(&self) -> WriterStats {
        WriterStats {
            bytes_written: self.shared.bytes_written.load(Ordering::Relaxed),
            syncs: self.shared.syncs.load(Ordering::Relaxed),
        }
    }
}

impl Drop for Writer {
    /// Writes what is queued, waits for its syncs, then ends the threads.
    fn drop(&mut self) {
        lock(&self.shared.queue).closing = true;
        self.shared.wake.notify_one();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn stop_syncers(shared: &Shared, syncers: Vec<JoinHandle<()>>) {
    lock(&shared.syncing).closing = true;
    shared.synced.notify_all();
    for handle in syncers {
        let _ = handle.join();
    }
}

/// A sync thread: whenever groups have been appended that no started sync covers, it syncs
/// the journal and then tells the waiters of every group the sync covers, in journal order.
/// Up to [`SYNC_THREADS`] of them run at once, so a group never waits for a sync that started
/// before it was written.
fn sync_thread(shared: &Shared) {
    let mut syncing = lock(&shared.syncing);
    loop {
        let covers = syncing.appended;
        let journal = match &syncing.journal {
            Some(journal) if covers > syncing.started => Arc::clone(journal),
            _ if syncing.closing => return,
            _ => {
                syncing = wait(&shared.synced, syncing);
                continue;
            }
        };
        syncing.started = covers;
        syncing.running += 1;
        drop(syncing);
        let result = journal.sync_data();
        shared.syncs.fetch_add(1, Ordering::Relaxed);
        drop(journal);
        syncing = lock(&shared.syncing);
        syncing.running -= 1;
        match result {
            Ok(()) if syncing.failed.is_none() => {
                syncing.durable = syncing.durable.max(covers);
                while syncing
                    .unsynced
                    .front()
                    .is_some_and(|group| group.end <= covers)
                {
                    if let Some(group) = syncing.unsynced.pop_front() {
                        tell(shared, group, &Ok(()));
                    }
                }
            }
            Ok(()) => {}
            Err(e) => {
                let error = (e.kind(), e.to_string());
                for group in std::mem::take(&mut syncing.unsynced) {
                    tell(shared, group, &Err(error.clone()));
                }
                syncing.failed = Some(error);
            }
        }
        shared.synced.notify_all();
    }
}

fn tell(shared: &Shared, group: Unsynced, outcome: &Outcome) {
    shared.queued.fetch_sub(group.operations, Ordering::Relaxed);
    for waiter in group.waiters {
        let _ = waiter.send(outcome.clone());
    }
}

/// The writer thread's files and replica of the state.
struct Files {
    directory: PathBuf,
    shared: Arc<Shared>,
    replica: AgentState,
    journal: Option<Arc<File>>,
    journal_len: u64,
    snapshot_len: u64,
    /// The next group is written as a snapshot, not appended: no current snapshot yet, a torn
    /// tail to replace, or an append or a sync that failed (the journal's bytes on disk are
    /// unknown).
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
            let _ = self.compact();
        }
        loop {
            let (group, closing) = {
                let mut queue = lock(&self.shared.queue);
                while queue.items.is_empty() && !queue.closing {
                    queue = wait(&self.shared.wake, queue);
                }
                (std::mem::take(&mut queue.items), queue.closing)
            };
            if !group.is_empty() {
                self.commit(group);
            }
            if closing && lock(&self.shared.queue).items.is_empty() {
                self.drain();
                return;
            }
        }
    }

    /// Writes one group (one append, or one snapshot) and hands its waiters to the sync
    /// threads, or tells them at once when nothing is left to sync.
    fn commit(&mut self, group: Vec<Queued>) {
        let operations = group.len();
        let mut bytes = Vec::new();
        let mut waiters = Vec::with_capacity(operations);
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
        if lock(&self.shared.syncing).failed.is_some() {
            // A failed sync: the journal's tail on disk is unknown.
            self.unwritten = true;
        }
        let group = |waiters| Unsynced {
            end: 0,
            operations,
            waiters,
        };
        let result = match encoded {
            Err(e) => Err(e),
            Ok(()) if bytes.is_empty() && !self.unwritten => {
                // Durable once everything appended before is.
                self.await_sync(group(waiters));
                return;
            }
            Ok(())
                if self.compact_next || self.unwritten || self.due_for_compaction(bytes.len()) =>
            {
                self.drain();
                self.compact()
            }
            Ok(()) => match self.append(&bytes) {
                Ok(()) => {
                    self.await_sync(group(waiters));
                    return;
                }
                Err(e) => Err(e),
            },
        };
        if result.is_err() {
            self.unwritten = true;
        }
        let outcome: Outcome = result.map_err(|e| (e.kind(), e.to_string()));
        tell(&self.shared, group(waiters), &outcome);
    }

    /// Queues a written group for the sync threads (it ends where the journal ends now).
    fn await_sync(&self, mut group: Unsynced) {
        let mut syncing = lock(&self.shared.syncing);
        if let Some(error) = &syncing.failed {
            let error = error.clone();
            drop(syncing);
            tell(&self.shared, group, &Err(error));
            return;
        }
        group.end = syncing.appended;
        if group.end <= syncing.durable {
            drop(syncing);
            tell(&self.shared, group, &Ok(()));
            return;
        }
        syncing.unsynced.push_back(group);
        drop(syncing);
        self.shared.synced.notify_all();
    }

    /// Waits until no sync is in flight and every appended group has been told (a snapshot
    /// replaces the journal only once the syncs on it are over, so waiters hear in order).
    fn drain(&self) {
        let mut syncing = lock(&self.shared.syncing);
        while syncing.running > 0 || !syncing.unsynced.is_empty() {
            syncing = wait(&self.shared.synced, syncing);
        }
    }

    fn due_for_compaction(&self, adding: usize) -> bool {
        let after = self.journal_len + adding as u64;
        after > COMPACT_MIN_BYTES && after > COMPACT_RATIO * self.snapshot_len
    }

    /// Appends `bytes` to the journal (a `write`, no sync: the sync threads do that).
    fn append(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        let result = self.try_append(bytes);
        if result.is_err() {
            // What reached the disk is unknown: the next write replaces it all.
            self.compact_next = true;
            self.journal = None;
            lock(&self.shared.syncing).journal = None;
        }
        result
    }

    fn try_append(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        let journal = match &self.journal {
            Some(journal) => Arc::clone(journal),
            None => {
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
                let file = Arc::new(file);
                self.journal = Some(Arc::clone(&file));
                file
            }
        };
        (&*journal).write_all(bytes)?;
        self.shared
            .bytes_written
            .fetch_add(bytes.len() as u64, Ordering::Relaxed);
        self.journal_len += bytes.len() as u64;
        let mut syncing = lock(&self.shared.syncing);
        syncing.appended += bytes.len() as u64;
        syncing.journal = Some(journal);
        Ok(())
    }

    /// Writes the replica as the new snapshot (atomically, by rename), then empties the
    /// journal. A crash between the two leaves a journal whose records the snapshot already
    /// holds; replaying them changes nothing (see [`Change`]). Called with no sync in flight.
    fn compact(&mut self) -> std::io::Result<()> {
        let result = self.try_compact();
        self.compact_next = result.is_err();
        self.compact_now = false;
        if result.is_ok() {
            self.unwritten = false;
            // Everything appended before is in the snapshot: a failed sync no longer matters.
            let mut syncing = lock(&self.shared.syncing);
            syncing.failed = None;
            syncing.durable = syncing.appended;
            syncing.started = syncing.appended;
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
        lock(&self.shared.syncing).journal = None;
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
pub fn write_snapshot(directory: &Path, bytes: &[u8]) -> std::io::Result<()> {
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

fn wait<'a, T>(condvar: &Condvar, guard: MutexGuard<'a, T>) -> MutexGuard<'a, T> {
    match condvar.wait(guard) {
        Ok(guard) => guard,
        Err(poisoned) => poisoned.into_inner(),
    }
}

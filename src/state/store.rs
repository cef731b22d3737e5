//! The store: the state directory owned by this process, the model in memory, and its
//! changes handed to the writer as journal records; loading and migrating what is on disk.

use std::collections::BTreeMap;
use std::fmt;
use std::fs::{File, OpenOptions};
use std::os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _};
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use crate::ids::PaymentRequestId;
use nix::fcntl::{Flock, FlockArg};
use tokio::sync::oneshot;

use super::writer::Writer;
use super::*;

/// The state directory, owned by this process (an exclusive `flock`), and the state in it.
///
/// A change is applied in memory at once and queued, as one journal record, for the state
/// writer (`writer`), a thread of its own; [`StateStore::commit`] gives the future that
/// resolves when everything queued so far is durable. Callers await it before the change's
/// side effect (`docs/state.md`, "Durable before the side effect"), without holding the store.
pub struct StateStore {
    directory: PathBuf,
    file: PathBuf,
    journal: PathBuf,
    state: AgentState,
    changes_since_prune: usize,
    /// Declared before the lock: dropping the store writes what is queued, then unlocks.
    writer: Writer,
    _lock: Flock<File>,
}

impl fmt::Debug for StateStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StateStore")
            .field("file", &self.file)
            .field("state", &self.state)
            .finish()
    }
}

/// Resolves when the changes queued before it are durable. Dropping it does not cancel them.
#[must_use = "a change is not durable until its commit resolves"]
pub struct Commit {
    done: oneshot::Receiver<writer::Outcome>,
    file: PathBuf,
}

impl Commit {
    /// Waits (asynchronously) for durability.
    pub async fn durable(self) -> Result<(), StateError> {
        let outcome = self.done.await;
        Self::result(outcome.ok(), &self.file)
    }

    /// Waits, blocking the thread: for tools and tests outside an async runtime.
    pub fn wait(self) -> Result<(), StateError> {
        let outcome = self.done.blocking_recv();
        Self::result(outcome.ok(), &self.file)
    }

    fn result(outcome: Option<writer::Outcome>, file: &Path) -> Result<(), StateError> {
        match outcome {
            Some(Ok(())) => Ok(()),
            Some(Err((kind, text))) => Err(StateError::Write {
                file: file.to_owned(),
                source: std::io::Error::new(kind, text),
            }),
            None => Err(StateError::Write {
                file: file.to_owned(),
                source: std::io::Error::other("the state writer has stopped"),
            }),
        }
    }
}

/// The changes that turn `old` into `new`, entry by entry.
fn diff(old: &AgentState, new: &AgentState) -> Vec<Change> {
    let mut changes = Vec::new();
    if old.connection_id != new.connection_id {
        changes.push(Change::ConnectionId {
            connection_id: new.connection_id.clone(),
        });
    }
    for (id, payment) in &new.payments {
        if old.payments.get(id) != Some(payment) {
            changes.push(Change::PutPayment {
                payment_request_id: id.clone(),
                payment: payment.clone(),
            });
        }
    }
    for id in old.payments.keys() {
        if !new.payments.contains_key(id) {
            changes.push(Change::RemovePayment {
                payment_request_id: id.clone(),
            });
        }
    }
    for (code, sale) in &new.sales {
        if old.sales.get(code) != Some(sale) {
            changes.push(Change::PutSale {
                merchant_unique_code: code.clone(),
                sale: sale.clone(),
            });
        }
    }
    for code in old.sales.keys() {
        if !new.sales.contains_key(code) {
            changes.push(Change::RemoveSale {
                merchant_unique_code: code.clone(),
            });
        }
    }
    changes
}

/// The entries one typed change may touch; only they are compared and journalled, so a
/// change costs the same whatever the number of pending payments.
#[derive(Default)]
struct Touched {
    connection: bool,
    payments: Vec<PaymentRequestId>,
    sales: Vec<String>,
}

impl Touched {
    fn payment(id: &PaymentRequestId) -> Self {
        Self {
            payments: vec![id.clone()],
            ..Self::default()
        }
    }

    fn sale(code: &str) -> Self {
        Self {
            sales: vec![code.to_owned()],
            ..Self::default()
        }
    }

    fn with_sale(mut self, code: Option<String>) -> Self {
        self.sales.extend(code);
        self
    }

    fn with_payment(mut self, id: Option<PaymentRequestId>) -> Self {
        self.payments.extend(id);
        self
    }

    /// The touched entries' values in `state`.
    fn values(&self, state: &AgentState) -> TouchedValues {
        TouchedValues {
            connection: self.connection.then(|| state.connection_id.clone()),
            payments: self
                .payments
                .iter()
                .map(|id| state.payments.get(id).cloned())
                .collect(),
            sales: self
                .sales
                .iter()
                .map(|code| state.sales.get(code).cloned())
                .collect(),
        }
    }

    /// The changes from `before` to the touched entries' values in `state`.
    fn changes(&self, before: TouchedValues, state: &AgentState) -> Vec<Change> {
        let after = self.values(state);
        let mut changes = Vec::new();
        if before.connection != after.connection {
            changes.push(Change::ConnectionId {
                connection_id: state.connection_id.clone(),
            });
        }
        for ((id, old), new) in self
            .payments
            .iter()
            .zip(before.payments)
            .zip(after.payments)
        {
            if old != new {
                changes.push(match new {
                    Some(payment) => Change::PutPayment {
                        payment_request_id: id.clone(),
                        payment,
                    },
                    None => Change::RemovePayment {
                        payment_request_id: id.clone(),
                    },
                });
            }
        }
        for ((code, old), new) in self.sales.iter().zip(before.sales).zip(after.sales) {
            if old != new {
                changes.push(match new {
                    Some(sale) => Change::PutSale {
                        merchant_unique_code: code.clone(),
                        sale,
                    },
                    None => Change::RemoveSale {
                        merchant_unique_code: code.clone(),
                    },
                });
            }
        }
        changes
    }
}

struct TouchedValues {
    connection: Option<Option<String>>,
    payments: Vec<Option<PendingPayment>>,
    sales: Vec<Option<SaleRecord>>,
}

/// Final sales are pruned every this many journalled changes (and at each start).
const PRUNE_EVERY: usize = 64;

impl StateStore {
    /// Opens the state directory (creating it, mode 0700, when missing), takes its lock, reads
    /// `state.json` and replays `state.journal` over it, and starts the state writer. State
    /// that cannot be read is an error naming the file, and nothing is written. A torn journal
    /// tail is dropped (and cut off); what was read is synced before this returns, so nothing
    /// the caller acknowledges rests on data a power cut could take back; a legacy (version 1)
    /// `state.json` is migrated; a leftover `state.json.tmp` (a crash during a snapshot) is
    /// ignored.
    pub fn open(directory: &Path) -> Result<Self, StateError> {
        let dir_error = |source| StateError::Directory {
            dir: directory.to_owned(),
            source,
        };
        create_directory(directory).map_err(dir_error)?;
        let lock_path = directory.join(LOCK_FILE);
        let lock_file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(&lock_path)
            .map_err(dir_error)?;
        let lock = match Flock::lock(lock_file, FlockArg::LockExclusiveNonblock) {
            Ok(lock) => lock,
            Err((_, nix::errno::Errno::EWOULDBLOCK)) => {
                return Err(StateError::Locked {
                    dir: directory.to_owned(),
                    lock: lock_path,
                })
            }
            Err((_, errno)) => return Err(dir_error(std::io::Error::from(errno))),
        };
        let file = directory.join(STATE_FILE);
        let journal = directory.join(JOURNAL_FILE);
        let snapshot = read_optional(&file)?;
        let journal_bytes = read_optional(&journal)?;
        let loaded = load_from_bytes(snapshot.as_deref(), journal_bytes.as_deref())
            .map_err(|error| refusal(error, &file, &journal))?;
        if loaded.torn_tail {
            let dropped = journal_bytes
                .as_ref()
                .map_or(0, Vec::len)
                .saturating_sub(loaded.journal_valid_len);
            tracing::warn!(
                "{}: dropped a torn tail of {dropped} bytes after {} whole records (an append \
                 cut short by a crash or a power cut; nothing it held was acknowledged)",
                journal.display(),
                loaded.records
            );
        }
        make_durable(
            directory,
            &file,
            &journal,
            loaded.torn_tail.then_some(loaded.journal_valid_len as u64),
        )
        .map_err(|source| StateError::Write {
            file: journal.clone(),
            source,
        })?;
        let mut state = loaded.state;
        let pruned = state.prune_final_sales(SystemTime::now());
        let writer = Writer::spawn(writer::Start {
            directory: directory.to_owned(),
            state: state.clone(),
            snapshot_current: snapshot.is_some() && !loaded.migrate,
            journal_len: loaded.journal_valid_len as u64,
            compact_now: loaded.migrate,
        })
        .map_err(|source| StateError::Write {
            file: journal.clone(),
            source,
        })?;
        let mut store = Self {
            directory: directory.to_owned(),
            file,
            journal,
            state,
            changes_since_prune: 0,
            writer,
            _lock: lock,
        };
        // Journalled like any other change, so that the journal always holds every change a
        // later snapshot holds (docs/state.md, "Why a crash anywhere is safe").
        store.submit(
            pruned
                .into_iter()
                .map(|merchant_unique_code| Change::RemoveSale {
                    merchant_unique_code,
                })
                .collect(),
        );
        Ok(store)
    }

    pub fn directory(&self) -> &Path {
        &self.directory
    }

    /// The path of `state.json`, the snapshot.
    pub fn file(&self) -> &Path {
        &self.file
    }

    /// The path of `state.journal`.
    pub fn journal_file(&self) -> &Path {
        &self.journal
    }

    /// The whole state, with every change applied (durable once its commit resolves).
    pub fn state(&self) -> &AgentState {
        &self.state
    }

    pub fn connection_id(&self) -> Option<&str> {
        self.state.connection_id.as_deref()
    }

    /// Pending payments by PaymentRequestId.
    pub fn pending(&self) -> &BTreeMap<PaymentRequestId, PendingPayment> {
        &self.state.payments
    }

    pub fn payment(&self, payment_request_id: &PaymentRequestId) -> Option<&PendingPayment> {
        self.state.payments.get(payment_request_id)
    }

    /// The sale with this merchant unique code, if known.
    pub fn sale(&self, merchant_unique_code: &str) -> Option<&SaleRecord> {
        self.state.sales.get(merchant_unique_code)
    }

    /// What the writer has written so far.
    /// The state directory's health as the writer last saw it, and changes to it.
    pub fn storage_health(&self) -> tokio::sync::watch::Receiver<StorageHealth> {
        self.writer.health()
    }

    pub fn writer_stats(&self) -> WriterStats {
        self.writer.stats()
    }

    /// A future that resolves when every change made so far is durable (at once when
    /// nothing is queued). Await it before the side effect the changes protect.
    pub fn commit(&mut self) -> Commit {
        self.await_writer(false)
    }

    fn await_writer(&mut self, compact: bool) -> Commit {
        let (done, rx) = oneshot::channel();
        self.writer.submit(Vec::new(), Some(done), compact);
        Commit {
            done: rx,
            file: self.journal.clone(),
        }
    }

    /// The last step of a clean stop, whether it cancelled the pending payments or kept them: a
    /// future that resolves when every change made so far is durable and folded into the
    /// snapshot, with the journal empty and synced: the simplest form for whichever release
    /// starts next (docs/state.md, "Compatibility between releases"). When it fails, every
    /// change is still durable in the journal as after a [`StateStore::commit`] (unless the
    /// error is the commit's own).
    pub fn compact(&mut self) -> Commit {
        self.await_writer(true)
    }

    fn has_room(&self) -> Result<(), StateError> {
        let queued = self.writer.queued();
        if queued >= MAX_QUEUED {
            return Err(StateError::WriterBehind { queued });
        }
        Ok(())
    }

    /// Queues `changes` as one record (nothing when empty), with the final sales pruned every
    /// [`PRUNE_EVERY`] changes.
    fn submit(&mut self, mut changes: Vec<Change>) {
        if changes.is_empty() {
            return;
        }
        self.changes_since_prune += 1;
        if self.changes_since_prune >= PRUNE_EVERY {
            self.changes_since_prune = 0;
            for code in self.state.prune_final_sales(SystemTime::now()) {
                changes.push(Change::RemoveSale {
                    merchant_unique_code: code,
                });
            }
        }
        self.writer.submit(changes, None, false);
    }

    /// Applies `change` to a copy of the state; on success it becomes the state and the
    /// differences are queued as one record. Nothing changes when `change` fails. For
    /// changes of several entries at once; it compares the whole state, so the typed
    /// methods below, which touch known entries, are cheaper.
    pub fn update<T>(
        &mut self,
        change: impl FnOnce(&mut AgentState) -> Result<T, StateError>,
    ) -> Result<T, StateError> {
        self.has_room()?;
        let mut next = self.state.clone();
        let value = change(&mut next)?;
        let changes = diff(&self.state, &next);
        self.state = next;
        self.submit(changes);
        Ok(value)
    }

    /// A change to known entries: `change` must leave the state as it was when it fails
    /// (the [`AgentState`] methods check before they change).
    fn touch<T>(
        &mut self,
        touched: Touched,
        change: impl FnOnce(&mut AgentState) -> Result<T, StateError>,
    ) -> Result<T, StateError> {
        self.has_room()?;
        let before = touched.values(&self.state);
        let value = change(&mut self.state)?;
        let changes = touched.changes(before, &self.state);
        self.submit(changes);
        Ok(value)
    }

    /// Applies `change` without a commit of its own; the caller does not wait for it. Only
    /// for changes whose loss a restart repairs by itself, such as the confirmation of a
    /// cancel (an unconfirmed cancel is sent again).
    pub fn defer(&mut self, change: impl FnOnce(&mut AgentState)) {
        if let Err(e) = self.update(|state| {
            change(state);
            Ok(())
        }) {
            tracing::error!("cannot queue a state change: {e}");
        }
    }

    pub fn set_connection_id(&mut self, id: Option<String>) -> Result<(), StateError> {
        let touched = Touched {
            connection: true,
            ..Touched::default()
        };
        self.touch(touched, |state| {
            state.set_connection_id(id);
            Ok(())
        })
    }

    /// See [`AgentState::record_sale_intent`].
    pub fn record_sale_intent(
        &mut self,
        code: &str,
        amount_minor: u64,
        currency_id: i64,
        at: SystemTime,
    ) -> Result<(), StateError> {
        self.touch(Touched::sale(code), |state| {
            state.record_sale_intent(code, amount_minor, currency_id, at)
        })
    }

    /// See [`AgentState::record_sale_started`].
    pub fn record_sale_started(
        &mut self,
        code: &str,
        payment_request_id: &PaymentRequestId,
        at: SystemTime,
    ) -> Result<(), StateError> {
        let touched = Touched::sale(code).with_payment(Some(payment_request_id.clone()));
        self.touch(touched, |state| {
            state.record_sale_started(code, payment_request_id, at)
        })
    }

    /// See [`AgentState::forget_sale_intent`].
    pub fn forget_sale_intent(&mut self, code: &str) -> Result<(), StateError> {
        self.touch(Touched::sale(code), |state| state.forget_sale_intent(code))
    }

    /// See [`AgentState::track_payment`].
    pub fn track_payment(
        &mut self,
        payment_request_id: &PaymentRequestId,
        payment: PendingPayment,
    ) -> Result<bool, StateError> {
        self.touch(Touched::payment(payment_request_id), |state| {
            Ok(state.track_payment(payment_request_id, payment))
        })
    }

    /// See [`AgentState::mark_cancel_requested`].
    pub fn mark_cancel_requested(
        &mut self,
        payment_request_id: &PaymentRequestId,
        reason: CancelReason,
        at: SystemTime,
    ) -> Result<(), StateError> {
        self.touch(Touched::payment(payment_request_id), |state| {
            state.mark_cancel_requested(payment_request_id, reason, at)
        })
    }

    /// See [`AgentState::mark_cancel_refused`].
    pub fn mark_cancel_refused(
        &mut self,
        payment_request_id: &PaymentRequestId,
        message: &str,
        at: SystemTime,
    ) -> Result<bool, StateError> {
        self.touch(Touched::payment(payment_request_id), |state| {
            Ok(state.mark_cancel_refused(payment_request_id, message, at))
        })
    }

    /// See [`AgentState::finish_payment`].
    pub fn finish_payment(
        &mut self,
        payment_request_id: &PaymentRequestId,
        outcome: PaymentOutcome,
        at: SystemTime,
    ) -> Result<bool, StateError> {
        let code = self.state.sale_code_of(payment_request_id);
        let touched = Touched::payment(payment_request_id).with_sale(code);
        self.touch(touched, |state| {
            Ok(state.finish_payment(payment_request_id, outcome, at))
        })
    }

    /// See [`AgentState::finish_sale`].
    pub fn finish_sale(
        &mut self,
        code: &str,
        outcome: PaymentOutcome,
        at: SystemTime,
    ) -> Result<(), StateError> {
        let payment = match self.state.sales.get(code).map(|sale| &sale.stage) {
            Some(SaleStage::Started { payment_request_id }) => Some(payment_request_id.clone()),
            _ => None,
        };
        let touched = Touched::sale(code).with_payment(payment);
        self.touch(touched, |state| state.finish_sale(code, outcome, at))
    }
}

/// Creates `directory` (mode 0700) and any missing parent, and syncs the parent of each
/// directory created, so that the new entries survive a power cut.
fn create_directory(directory: &Path) -> std::io::Result<()> {
    let missing: Vec<&Path> = directory
        .ancestors()
        .take_while(|dir| !dir.as_os_str().is_empty() && !dir.exists())
        .collect();
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(directory)?;
    for created in missing.iter().rev() {
        let parent = match created.parent() {
            Some(parent) if !parent.as_os_str().is_empty() => parent,
            _ => Path::new("."),
        };
        sync_directory(parent)?;
    }
    Ok(())
}

/// Makes what was just read durable before anything acts on it: after a crash the files may
/// still be in the page cache only, and a power cut before their next sync would take back what
/// this process goes on to acknowledge. A torn journal tail is cut off first (`keep`), so that
/// the next append follows the last whole record.
fn make_durable(
    directory: &Path,
    snapshot: &Path,
    journal: &Path,
    keep: Option<u64>,
) -> std::io::Result<()> {
    for file in [snapshot, journal] {
        let opened = match keep {
            Some(_) if file == journal => OpenOptions::new().write(true).open(file),
            _ => File::open(file),
        };
        match opened {
            Ok(opened) => {
                if let (Some(len), true) = (keep, file == journal) {
                    opened.set_len(len)?;
                }
                opened.sync_all()?;
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
    }
    sync_directory(directory)
}

fn sync_directory(directory: &Path) -> std::io::Result<()> {
    File::open(directory).and_then(|dir| dir.sync_all())
}

/// The file's bytes, `None` when it does not exist.
fn read_optional(file: &Path) -> Result<Option<Vec<u8>>, StateError> {
    match std::fs::read(file) {
        Ok(bytes) => Ok(Some(bytes)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(StateError::Unreadable {
            file: file.to_owned(),
            reason: e.to_string(),
        }),
    }
}

/// The connection Id in a state directory, read without taking the lock (the running agent
/// may hold it): what `check-config` needs to tell whether `run` has an Id.
pub(crate) fn stored_connection_id(directory: &Path) -> Result<Option<String>, StateError> {
    Ok(read_directory(directory)?.connection_id)
}

/// Reads the state in `directory` without taking it over (no lock, nothing written): for
/// tests and tools that look at what a daemon left behind.
pub fn read_directory(directory: &Path) -> Result<AgentState, StateError> {
    let file = directory.join(STATE_FILE);
    let journal = directory.join(JOURNAL_FILE);
    let snapshot = read_optional(&file)?;
    let journal_bytes = read_optional(&journal)?;
    load_from_bytes(snapshot.as_deref(), journal_bytes.as_deref())
        .map(|loaded| loaded.state)
        .map_err(|error| refusal(error, &file, &journal))
}

/// Why the state in `snapshot` and `journal` is refused, naming the file at fault.
fn refusal(error: LoadError, snapshot: &Path, journal: &Path) -> StateError {
    let file = match error {
        LoadError::CorruptJournal { .. }
        | LoadError::JournalWithoutSnapshot
        | LoadError::Newer {
            in_journal: true, ..
        } => journal,
        _ => snapshot,
    }
    .to_owned();
    match error {
        LoadError::Newer { .. } => StateError::NewerFormat {
            file,
            reason: error.to_string(),
        },
        _ => StateError::Unreadable {
            file,
            reason: error.to_string(),
        },
    }
}

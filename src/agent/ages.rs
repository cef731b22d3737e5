//! How long each pending payment has been pending, measured on `CLOCK_BOOTTIME` (a monotonic
//! clock that counts suspend), so that a step of the wall clock neither cancels a young payment
//! nor keeps an old one (docs/state.md, "A pending payment's age"). The wall-clock `since` of
//! the state stays what people read; the boot-time instants live beside the state in
//! `boot-times`, which releases that do not know it ignore, so the state's format is
//! unchanged.

// Time arithmetic: docs/architecture.md, "Lint policy".
#![warn(clippy::arithmetic_side_effects)]

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use tracing::warn;

pub(crate) use crate::boot_clock::BootMillis;
use crate::boot_clock::{millis, now as boot_now};

use crate::ids::PaymentRequestId;
use crate::state::PendingPayment;

/// The file, in the state directory, that carries the boot-time instants across a restart.
pub(crate) const BOOT_TIMES_FILE: &str = "boot-times";
const BOOT_TIMES_TEMP: &str = "boot-times.tmp";
/// The kernel's id of the running boot: a new one at every boot.
const BOOT_ID_FILE: &str = "/proc/sys/kernel/random/boot_id";

fn read_boot_id() -> Option<String> {
    let id = std::fs::read_to_string(BOOT_ID_FILE).ok()?;
    let id = id.trim();
    (!id.is_empty()).then(|| id.to_owned())
}

/// The instant a payment became pending, on this boot's clock, carried from an earlier run:
/// - `stored` (same boot, the instant written then): that instant;
/// - otherwise the wall-clock age (`wall_now - since`), clamped to `[0, bound]`: a wall clock
///   stepped back reads as age 0, one stepped forward as at most `bound`.
///
/// From then on the age grows with this boot's clock only.
pub(crate) fn carried_since(
    stored: Option<BootMillis>,
    since: SystemTime,
    wall_now: SystemTime,
    bound: Duration,
    boot_now: BootMillis,
) -> BootMillis {
    if let Some(stored) = stored {
        return stored;
    }
    let wall_age = wall_now
        .duration_since(since)
        .unwrap_or_default()
        .min(bound);
    boot_now.saturating_sub(millis(wall_age))
}

/// `boot-times`: the boot id on the first line, then one line per pending payment, its
/// PaymentRequestId and the `CLOCK_BOOTTIME` millisecond it became pending in that boot,
/// separated by a space.
fn encode(boot_id: &str, since: &[(PaymentRequestId, BootMillis)]) -> String {
    let mut text = format!("{boot_id}\n");
    for (id, at) in since {
        let _ = writeln!(text, "{id} {at}");
    }
    text
}

/// Where `id` is in `list`, sorted by id (as [`Ages`] keeps it and [`encode`] writes it), or
/// where it would go. A file not sorted so (not written by the agent) finds fewer entries: those
/// payments take the wall-clock rule of [`carried_since`].
fn find(list: &[(PaymentRequestId, BootMillis)], id: &str) -> Result<usize, usize> {
    list.binary_search_by(|(known, _)| known.as_str().cmp(id))
}

/// The instants of `boot-times` when it was written in boot `boot_id`; none when it was not,
/// or cannot be read.
fn decode(text: &str, boot_id: &str) -> Option<Vec<(PaymentRequestId, BootMillis)>> {
    let mut lines = text.lines();
    if lines.next()? != boot_id {
        return None;
    }
    let mut since = Vec::new();
    for line in lines {
        let (id, at) = line.split_once(' ')?;
        since.push((PaymentRequestId::stored(id), at.parse().ok()?));
    }
    Some(since)
}

/// The boot-time instant of every pending payment, and the file that carries them.
pub(crate) struct Ages {
    boot_id: Option<String>,
    /// By PaymentRequestId, sorted by it ([`find`]).
    since: Vec<(PaymentRequestId, BootMillis)>,
    file: PathBuf,
    /// Where the next `boot-times` is written before it is renamed over `file`.
    temp: PathBuf,
}

impl Ages {
    /// The ages of the payments pending at start: from `boot-times` where it was written in this
    /// boot, else from the wall clock by [`carried_since`] with `bound`.
    pub(crate) fn load(
        directory: &Path,
        pending: &BTreeMap<PaymentRequestId, PendingPayment>,
        bound: Duration,
    ) -> Self {
        let file = directory.join(BOOT_TIMES_FILE);
        let boot_id = read_boot_id();
        let stored = std::fs::read_to_string(&file)
            .ok()
            .zip(boot_id.as_deref())
            .and_then(|(text, boot_id)| decode(&text, boot_id))
            .unwrap_or_default();
        let (wall_now, boot) = (SystemTime::now(), boot_now());
        let since = pending
            .iter()
            .map(|(id, payment)| {
                let stored = find(&stored, id.as_str())
                    .ok()
                    .and_then(|index| stored.get(index))
                    .map(|(_, at)| *at);
                let at = carried_since(
                    stored,
                    payment.since.to_system_time(),
                    wall_now,
                    bound,
                    boot,
                );
                (id.clone(), at)
            })
            .collect();
        Self {
            boot_id,
            since,
            temp: directory.join(BOOT_TIMES_TEMP),
            file,
        }
    }

    /// Follows the pending set after a change: payments new to it became pending at `at`,
    /// payments gone from it are forgotten. True when one was added (the file is then due).
    pub(crate) fn follow(
        &mut self,
        pending: &BTreeMap<PaymentRequestId, PendingPayment>,
        at: BootMillis,
    ) -> bool {
        self.since.retain(|(id, _)| pending.contains_key(id));
        let mut added = false;
        for id in pending.keys() {
            if let Err(index) = find(&self.since, id.as_str()) {
                self.since.insert(index, (id.clone(), at));
                added = true;
            }
        }
        added
    }

    /// When `payment_request_id` became pending, on this boot's clock.
    pub(crate) fn since(&self, payment_request_id: &PaymentRequestId) -> Option<BootMillis> {
        let index = find(&self.since, payment_request_id.as_str()).ok()?;
        self.since.get(index).map(|(_, at)| *at)
    }

    /// Writes `boot-times`: to a temporary file renamed over it, so that a process killed
    /// meanwhile leaves the old file or the new one. Not synced: the file serves restarts in
    /// the same boot only, and the page cache outlives a process; a power cut starts another
    /// boot, where the file is not used. Nothing is written where the boot id is unknown
    /// (another boot could not be told apart).
    pub(crate) fn save(&self) {
        let Some(boot_id) = &self.boot_id else {
            return;
        };
        let temp = &self.temp;
        let written = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(temp)
            .and_then(|mut out| out.write_all(encode(boot_id, &self.since).as_bytes()))
            .and_then(|()| std::fs::rename(temp, &self.file));
        if let Err(e) = written {
            warn!(
                "cannot write {}: {e}; after a restart the ages of pending payments are taken from the wall clock",
                self.file.display()
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::boot_clock::{after, elapsed};

    const MINUTE: Duration = Duration::from_secs(60);

    fn wall(secs: u64) -> SystemTime {
        let since_epoch =
            Duration::from_secs(1_800_000_000).saturating_add(Duration::from_secs(secs));
        SystemTime::UNIX_EPOCH.checked_add(since_epoch).unwrap()
    }

    #[test]
    fn an_instant_of_the_same_boot_is_kept_whatever_the_wall_clock_says() {
        let since = carried_since(Some(5_000), wall(0), wall(3 * 86_400), 10 * MINUTE, 9_000);
        assert_eq!(since, 5_000);
        assert_eq!(elapsed(since, 9_000), Duration::from_secs(4));
    }

    #[test]
    fn another_boot_takes_the_wall_age_clamped_to_the_bound() {
        // A clock right: the wall age as it is.
        let since = carried_since(None, wall(0), wall(90), 10 * MINUTE, 20_000);
        assert_eq!(elapsed(since, 20_000), Duration::from_secs(90));
        // Stepped forward by days: no older than the bound.
        let since = carried_since(None, wall(0), wall(2 * 86_400), 10 * MINUTE, 20_000);
        assert_eq!(since, 20_000 - 600_000);
        assert_eq!(elapsed(since, 20_000), 10 * MINUTE);
        // Stepped back by days: age 0 now, due a bound of boot time later.
        let since = carried_since(None, wall(2 * 86_400), wall(0), 10 * MINUTE, 20_000);
        assert_eq!(elapsed(since, 20_000), Duration::ZERO);
        assert_eq!(elapsed(since, after(20_000, 10 * MINUTE)), 10 * MINUTE);
    }

    #[test]
    fn arithmetic_at_the_ends_saturates() {
        let since = carried_since(None, wall(0), SystemTime::UNIX_EPOCH, Duration::MAX, 0);
        assert_eq!(since, 0);
        let since = carried_since(None, SystemTime::UNIX_EPOCH, wall(0), Duration::MAX, 0);
        assert!(since < 0);
    }

    #[test]
    fn the_file_reads_back_in_its_boot_only() {
        let since = vec![(id("a"), -5), (id("b"), 1_234)];
        let text = encode("boot-1", &since);
        assert_eq!(decode(&text, "boot-1"), Some(since));
        assert_eq!(decode(&text, "boot-2"), None);
        assert_eq!(decode("boot-1\na x\n", "boot-1"), None);
        assert_eq!(decode("", "boot-1"), None);
    }

    fn id(text: &str) -> PaymentRequestId {
        PaymentRequestId::stored(text)
    }

    #[test]
    fn following_the_pending_set_adds_and_forgets() {
        let mut ages = Ages {
            boot_id: None,
            since: Vec::new(),
            file: PathBuf::from("/nonexistent/boot-times"),
            temp: PathBuf::from("/nonexistent/boot-times.tmp"),
        };
        let payment = PendingPayment::new(crate::state::PaymentSource::Terminal, SystemTime::now());
        let mut pending = BTreeMap::from([(id("b"), payment.clone())]);
        assert!(ages.follow(&pending, 100));
        pending.insert(id("a"), payment.clone());
        pending.insert(id("c"), payment);
        assert!(ages.follow(&pending, 200));
        assert!(!ages.follow(&pending, 300));
        assert_eq!(
            (
                ages.since(&id("a")),
                ages.since(&id("b")),
                ages.since(&id("c"))
            ),
            (Some(200), Some(100), Some(200))
        );
        pending.remove("a");
        assert!(!ages.follow(&pending, 400));
        assert_eq!(ages.since(&id("a")), None);
    }
}

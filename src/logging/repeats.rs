//! Repeated warnings, summarised: the `tracing` layer that holds back a warning's repeats and
//! the bookkeeping that decides which to hold back, apart from the set-up in [`super`] (where
//! the lines go, which levels), which installs it.
//!
//! # Repeated warnings
//!
//! An hour of API outage or a terminal sending garbage must not fill the SD card. A warning or
//! error from the same line of code, about the same thing (the same values of the identity
//! fields in [`KEY_FIELDS`]), is written the first time; its repeats within `[log]
//! repeat_window` (60 s) are counted, not written, and one summary line follows
//! ("… 118 more in the last 60 s: <the latest of them>") when the window ends, or as soon as the
//! same module logs an info line (its recovery: "payment API connection ... active"). While the
//! warning keeps repeating each window is twice as long as the last, up to 16 minutes; a window
//! without repeats ends the summarising: the next occurrence is written in full again. Info and
//! debug lines are never held back. docs/operations.md (Repeated warnings) has the operator's
//! view; [`RepeatLimiter`] is the layer, [`Repeats`] its bookkeeping.

// Time and count arithmetic: docs/architecture.md, "Lint policy".
#![warn(clippy::arithmetic_side_effects)]

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::boot_clock::{self, BootMillis};
use crate::sync::lock;

use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::layer::{Context, Layer};

/// The fields that say what a warning is about: two warnings from the same line of code with
/// different values here are different warnings (each payment's first failure is written).
/// Other fields (the error text, a retry delay, a serial request id) vary between repeats of
/// the same warning; the summary quotes the latest message.
pub(crate) const KEY_FIELDS: [&str; 5] = [
    "payment_request_id",
    "merchant_unique_code",
    "connection_id",
    "device",
    "command",
];

/// The target of summary lines (`journalctl -u pos-agent TARGET=pos_agent::logging`).
pub(crate) const SUMMARY_TARGET: &str = "pos_agent::logging";

/// Tracked warnings at most; beyond it new warnings are written without being tracked.
const MAX_TRACKED: usize = 1024;

/// What a warning is: its line of code and the values of its [`KEY_FIELDS`].
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct RepeatKey {
    /// The address of the callsite's `'static` metadata: one per line of code.
    callsite: usize,
    keys: [Option<String>; KEY_FIELDS.len()],
}

#[derive(Debug)]
struct Tracked {
    target: &'static str,
    error: bool,
    window_start: BootMillis,
    /// The current window's length: `repeat_window`, doubled after each window with repeats.
    window: Duration,
    /// Occurrences held back in the current window.
    held: u64,
    latest: String,
    keys: [Option<String>; KEY_FIELDS.len()],
}

impl Tracked {
    fn end(&self) -> BootMillis {
        boot_clock::after(self.window_start, self.window)
    }
}

/// One summary line to write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Summary {
    /// Written at ERROR (else WARN), the level of the warnings it counts.
    pub(crate) error: bool,
    /// Occurrences held back.
    pub(crate) held: u64,
    /// Over how long (the window, or less when a recovery cut it short).
    pub(crate) over: Duration,
    /// The message of the latest occurrence held back.
    pub(crate) latest: String,
    /// The values of [`KEY_FIELDS`] the warnings carried.
    pub(crate) keys: [Option<String>; KEY_FIELDS.len()],
}

impl Summary {
    /// [`over`](Self::over) in whole seconds, rounded.
    pub(crate) fn over_s(&self) -> u64 {
        u64::try_from(self.over.as_millis().saturating_add(500) / 1000).unwrap_or(u64::MAX)
    }

    /// The summary line's message: `… 118 more in the last 60 s: <latest>`.
    pub(crate) fn message(&self) -> String {
        format!(
            "… {} more in the last {} s: {}",
            self.held,
            self.over_s(),
            self.latest
        )
    }
}

/// The longest window, in `repeat_window`s: a warning that repeats for an hour gets summaries
/// after 1, 3, 7, 15, 31, 47 and 63 minutes.
pub(crate) const MAX_WINDOW_FACTOR: u32 = 16;

/// The bookkeeping of repeated warnings, apart from `tracing` so it can be tested with a clock
/// of its own: [`admit`](Self::admit) says whether an occurrence is written;
/// [`due`](Self::due) and [`recovered`](Self::recovered) give the summaries to write.
///
/// The first window of a warning is `repeat_window` long; each window that ends with repeats
/// is followed by one twice as long, up to [`MAX_WINDOW_FACTOR`] times. A window without
/// repeats, or a recovery, forgets the warning: its next occurrence is written in full.
#[derive(Debug)]
pub(crate) struct Repeats {
    window: Duration,
    tracked: HashMap<RepeatKey, Tracked>,
}

impl Repeats {
    /// Repeats within `window` of a written occurrence are held back.
    pub(crate) fn new(window: Duration) -> Self {
        Self {
            window,
            tracked: HashMap::new(),
        }
    }

    fn summary(until: BootMillis, tracked: &Tracked) -> Summary {
        Summary {
            error: tracked.error,
            held: tracked.held,
            over: boot_clock::elapsed(tracked.window_start, until),
            latest: tracked.latest.clone(),
            keys: tracked.keys.clone(),
        }
    }

    fn next_window(&self, tracked: &mut Tracked, start: BootMillis) {
        tracked.window_start = start;
        tracked.window = tracked
            .window
            .saturating_mul(2)
            .min(self.window.saturating_mul(MAX_WINDOW_FACTOR));
        tracked.held = 0;
    }

    /// One occurrence of a warning: true if it is to be written now; a summary of the
    /// previous window if one is due.
    fn admit(
        &mut self,
        key: RepeatKey,
        target: &'static str,
        error: bool,
        message: String,
        now: BootMillis,
    ) -> (bool, Option<Summary>) {
        if let Some(mut tracked) = self.tracked.remove(&key) {
            let mut outcome = (false, None);
            if now < tracked.end() {
                tracked.held = tracked.held.saturating_add(1);
                tracked.latest = message;
            } else if tracked.held == 0 {
                // A whole window without repeats: this one is news again.
                tracked.window_start = now;
                tracked.window = self.window;
                outcome.0 = true;
            } else {
                outcome.1 = Some(Self::summary(tracked.end(), &tracked));
                self.next_window(&mut tracked, now);
                tracked.held = 1;
                tracked.latest = message;
            }
            self.tracked.insert(key, tracked);
            return outcome;
        }
        if self.tracked.len() >= MAX_TRACKED {
            self.prune(now);
            if self.tracked.len() >= MAX_TRACKED {
                return (true, None);
            }
        }
        let keys = key.keys.clone();
        self.tracked.insert(
            key,
            Tracked {
                target,
                error,
                window_start: now,
                window: self.window,
                held: 0,
                latest: message,
                keys,
            },
        );
        (true, None)
    }

    fn prune(&mut self, now: BootMillis) {
        self.tracked.retain(|_, t| t.held > 0 || now < t.end());
    }

    /// The summaries of windows that have ended; their warnings go on being summarised.
    pub(crate) fn due(&mut self, now: BootMillis) -> Vec<Summary> {
        let mut due = Vec::new();
        let ended: Vec<RepeatKey> = self
            .tracked
            .iter()
            .filter(|(_, t)| t.held > 0 && now >= t.end())
            .map(|(k, _)| k.clone())
            .collect();
        for key in ended {
            if let Some(mut tracked) = self.tracked.remove(&key) {
                let end = tracked.end();
                due.push(Self::summary(end, &tracked));
                self.next_window(&mut tracked, end);
                self.tracked.insert(key, tracked);
            }
        }
        self.prune(now);
        due
    }

    /// `target` logged an info line (a recovery): the summaries of its warnings now, and their
    /// next occurrence is written in full.
    pub(crate) fn recovered(&mut self, target: &str, now: BootMillis) -> Vec<Summary> {
        let mut due = Vec::new();
        self.tracked.retain(|_, tracked| {
            if tracked.target != target {
                return true;
            }
            if tracked.held > 0 {
                due.push(Self::summary(now, tracked));
            }
            false
        });
        due
    }

    /// Every summary, due or not (the end of the process).
    pub(crate) fn all(&mut self, now: BootMillis) -> Vec<Summary> {
        let due = self
            .tracked
            .values()
            .filter(|t| t.held > 0)
            .map(|t| Self::summary(now.min(t.end()), t))
            .collect();
        self.tracked.clear();
        due
    }

    /// When the next summary falls due, if any warning is being held back.
    pub(crate) fn next_due(&self) -> Option<BootMillis> {
        self.tracked
            .values()
            .filter(|t| t.held > 0)
            .map(Tracked::end)
            .min()
    }
}

/// The `tracing` layer that holds back repeated warnings (module docs, "Repeated warnings"). It
/// sits before the output layers and disables the events it holds back; the summaries are
/// written as ordinary events by [`write_summaries`](Self::write_summaries).
#[derive(Clone)]
pub(crate) struct RepeatLimiter {
    shared: Arc<Shared>,
}

struct Shared {
    enabled: bool,
    repeats: Mutex<Repeats>,
    due: Mutex<Vec<Summary>>,
    wake: tokio::sync::Notify,
}

/// The message and key fields of one event.
#[derive(Default)]
struct Fields {
    message: String,
    keys: [Option<String>; KEY_FIELDS.len()],
}

impl Visit for Fields {
    fn record_str(&mut self, field: &Field, value: &str) {
        if let Some(i) = KEY_FIELDS.iter().position(|k| *k == field.name()) {
            self.keys[i] = Some(value.to_owned());
        } else if field.name() == "message" {
            self.message = value.to_owned();
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            self.message = format!("{value:?}");
        } else if let Some(i) = KEY_FIELDS.iter().position(|k| *k == field.name()) {
            self.keys[i] = Some(format!("{value:?}"));
        }
    }
}

impl RepeatLimiter {
    /// Holds back repeats within `window`; a zero window holds back nothing.
    pub(crate) fn new(window: Duration) -> Self {
        Self {
            shared: Arc::new(Shared {
                enabled: !window.is_zero(),
                repeats: Mutex::new(Repeats::new(window)),
                due: Mutex::new(Vec::new()),
                wake: tokio::sync::Notify::new(),
            }),
        }
    }

    fn queue(&self, summaries: Vec<Summary>) {
        if summaries.is_empty() {
            return;
        }
        lock(&self.shared.due).extend(summaries);
        self.shared.wake.notify_one();
    }

    /// Writes the summaries as they fall due, for as long as the process runs.
    pub(crate) async fn write_summaries(self) {
        loop {
            let next = lock(&self.shared.repeats).next_due();
            let timer = async {
                match next {
                    Some(at) => boot_clock::sleep_until(at).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                _ = timer => {}
                _ = self.shared.wake.notified() => {}
            }
            self.flush();
        }
    }

    /// Writes every summary due now.
    pub(crate) fn flush(&self) {
        self.write(|repeats, now| repeats.due(now));
    }

    /// Writes every summary, due or not.
    pub(crate) fn flush_all(&self) {
        self.write(|repeats, now| repeats.all(now));
    }

    fn write(&self, take: impl FnOnce(&mut Repeats, BootMillis) -> Vec<Summary>) {
        let mut summaries = std::mem::take(&mut *lock(&self.shared.due));
        summaries.extend(take(&mut lock(&self.shared.repeats), boot_clock::now()));
        for summary in summaries {
            write_summary(&summary);
        }
    }
}

fn write_summary(summary: &Summary) {
    let [payment_request_id, merchant_unique_code, connection_id, device, command] =
        summary.keys.each_ref().map(Option::as_deref);
    let message = summary.message();
    let repeated = summary.held;
    let window_s = summary.over_s();
    if summary.error {
        tracing::error!(target: SUMMARY_TARGET, repeated, window_s, payment_request_id, merchant_unique_code, connection_id, device, command, "{message}");
    } else {
        tracing::warn!(target: SUMMARY_TARGET, repeated, window_s, payment_request_id, merchant_unique_code, connection_id, device, command, "{message}");
    }
}

impl<S: Subscriber> Layer<S> for RepeatLimiter {
    fn event_enabled(&self, event: &Event<'_>, _ctx: Context<'_, S>) -> bool {
        if !self.shared.enabled {
            return true;
        }
        let metadata = event.metadata();
        let level = *metadata.level();
        if metadata.target() == SUMMARY_TARGET {
            return true;
        }
        if level == Level::INFO {
            let summaries =
                lock(&self.shared.repeats).recovered(metadata.target(), boot_clock::now());
            self.queue(summaries);
            return true;
        }
        if level != Level::WARN && level != Level::ERROR {
            return true;
        }
        let mut fields = Fields::default();
        event.record(&mut fields);
        let key = RepeatKey {
            callsite: std::ptr::from_ref(metadata) as usize,
            keys: fields.keys,
        };
        let (write, summary) = lock(&self.shared.repeats).admit(
            key,
            metadata.target(),
            level == Level::ERROR,
            fields.message,
            boot_clock::now(),
        );
        self.queue(summary.into_iter().collect());
        if !write {
            // A repeat held back may be the first of its window: the writer's timer is set
            // anew, or the summary would wait for the next event to come.
            self.shared.wake.notify_one();
        }
        write
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const WINDOW: Duration = Duration::from_secs(60);

    fn key(line: usize, payment: Option<&str>) -> RepeatKey {
        let mut keys: [Option<String>; KEY_FIELDS.len()] = Default::default();
        keys[0] = payment.map(str::to_owned);
        RepeatKey {
            callsite: line,
            keys,
        }
    }

    fn admit(repeats: &mut Repeats, k: RepeatKey, at: BootMillis, text: &str) -> bool {
        repeats.admit(k, "t", false, text.into(), at).0
    }

    #[test]
    fn the_first_occurrence_is_written_and_repeats_are_held_back_until_the_window_ends() {
        let start = boot_clock::now();
        let mut repeats = Repeats::new(WINDOW);
        assert!(admit(&mut repeats, key(1, None), start, "refused"));
        for i in 1..=118u64 {
            let at = boot_clock::after(start, Duration::from_millis(i * 500));
            assert!(!admit(
                &mut repeats,
                key(1, None),
                at,
                &format!("refused {i}")
            ));
        }
        assert!(repeats
            .due(boot_clock::after(start, Duration::from_secs(59)))
            .is_empty());
        assert_eq!(repeats.next_due(), Some(boot_clock::after(start, WINDOW)));
        let due = repeats.due(boot_clock::after(start, WINDOW));
        assert_eq!(due.len(), 1);
        assert_eq!(due[0].held, 118);
        assert_eq!(due[0].message(), "… 118 more in the last 60 s: refused 118");
        // Still repeating: the next window, twice as long, is summarised too.
        let later = boot_clock::after(start, WINDOW.saturating_add(Duration::from_secs(1)));
        assert!(!admit(&mut repeats, key(1, None), later, "refused again"));
        assert!(repeats.due(boot_clock::after(start, WINDOW * 2)).is_empty());
        let second = repeats.due(boot_clock::after(start, WINDOW * 3));
        assert_eq!((second[0].held, second[0].over_s()), (1, 120));
        // A whole window (now 240 s) without a repeat: the next occurrence is news again.
        assert!(repeats.due(boot_clock::after(start, WINDOW * 7)).is_empty());
        assert!(admit(
            &mut repeats,
            key(1, None),
            boot_clock::after(start, WINDOW * 7),
            "refused"
        ));
        assert!(!admit(
            &mut repeats,
            key(1, None),
            boot_clock::after(start, WINDOW * 7),
            "refused"
        ));
        assert_eq!(
            repeats.due(boot_clock::after(start, WINDOW * 8))[0].over_s(),
            60
        );
    }

    #[test]
    fn a_warning_repeating_for_an_hour_gets_a_handful_of_summaries() {
        let start = boot_clock::now();
        let mut repeats = Repeats::new(WINDOW);
        let mut written = 0;
        let mut summaries = Vec::new();
        for second in (0..3600).step_by(15) {
            let now = boot_clock::after(start, Duration::from_secs(second));
            summaries.extend(repeats.due(now));
            written += usize::from(admit(&mut repeats, key(1, None), now, "down"));
        }
        summaries.extend(repeats.all(boot_clock::after(start, Duration::from_secs(3600))));
        let minutes: Vec<u64> = summaries.iter().map(|s| s.over_s() / 60).collect();
        assert_eq!(written, 1);
        assert_eq!(minutes, [1, 2, 4, 8, 16, 16, 13]);
        assert_eq!(summaries.iter().map(|s| s.held).sum::<u64>(), 239);
    }

    #[test]
    fn warnings_about_different_payments_or_lines_are_each_written() {
        let now = boot_clock::now();
        let mut repeats = Repeats::new(WINDOW);
        assert!(admit(&mut repeats, key(1, Some("a")), now, "x"));
        assert!(admit(&mut repeats, key(1, Some("b")), now, "x"));
        assert!(admit(&mut repeats, key(2, Some("a")), now, "x"));
        assert!(!admit(&mut repeats, key(1, Some("a")), now, "x"));
    }

    #[test]
    fn an_occurrence_after_the_window_brings_out_the_summary_and_is_counted_in_the_next() {
        let start = boot_clock::now();
        let mut repeats = Repeats::new(WINDOW);
        assert!(admit(&mut repeats, key(1, None), start, "a"));
        assert!(!admit(
            &mut repeats,
            key(1, None),
            boot_clock::after(start, Duration::from_secs(10)),
            "b"
        ));
        let (write, summary) = repeats.admit(
            key(1, None),
            "t",
            false,
            "c".into(),
            boot_clock::after(start, WINDOW * 2),
        );
        assert!(!write);
        let summary = summary.expect("the previous window's summary");
        assert_eq!((summary.held, summary.latest.as_str()), (1, "b"));
        assert_eq!(summary.over, WINDOW);
        assert_eq!(
            repeats.all(boot_clock::after(start, WINDOW * 2))[0].latest,
            "c"
        );
    }

    #[test]
    fn a_recovery_of_the_same_module_brings_out_the_summary_at_once_and_rearms() {
        let start = boot_clock::now();
        let mut repeats = Repeats::new(WINDOW);
        assert!(
            repeats
                .admit(key(1, None), "api", true, "down".into(), start)
                .0
        );
        for _ in 0..5 {
            assert!(
                !repeats
                    .admit(key(1, None), "api", true, "down".into(), start)
                    .0
            );
        }
        assert!(
            repeats
                .admit(key(2, None), "serial", false, "x".into(), start)
                .0
        );
        assert!(
            !repeats
                .admit(key(2, None), "serial", false, "x".into(), start)
                .0
        );
        let at = boot_clock::after(start, Duration::from_secs(23));
        let due = repeats.recovered("api", at);
        assert_eq!(due.len(), 1);
        assert!(due[0].error);
        assert_eq!(due[0].message(), "… 5 more in the last 23 s: down");
        // The next failure after the recovery is written in full; the other module's is not.
        assert!(
            repeats
                .admit(key(1, None), "api", true, "down".into(), at)
                .0
        );
        assert!(
            !repeats
                .admit(key(2, None), "serial", false, "x".into(), at)
                .0
        );
    }

    #[test]
    fn the_number_of_tracked_warnings_is_bounded() {
        let now = boot_clock::now();
        let mut repeats = Repeats::new(WINDOW);
        for line in 0..MAX_TRACKED * 2 {
            assert!(admit(&mut repeats, key(line, None), now, "x"));
        }
        assert!(repeats.tracked.len() <= MAX_TRACKED);
    }
}

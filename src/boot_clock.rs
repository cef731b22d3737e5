//! Elapsed time that counts suspend: `CLOCK_BOOTTIME`, the kernel's monotonic clock that also
//! runs while the system sleeps (docs/state.md, "Which clock measures what"). A wall-clock step
//! moves none of the deadlines measured here, and a terminal that was suspended past a deadline
//! sees it due when it wakes, not the suspended time later.
//!
//! tokio's timers run on `CLOCK_MONOTONIC`, which stops during a suspend, so a wait here sleeps
//! on tokio's clock for at most [`RECHECK`] at a time and reads this clock again: a deadline
//! that fell due during a suspend is seen at most that long after the resume.
//!
//! Which clock `now` reads is the caller's choice, per thread ([`use_clock`]): the daemon's
//! runtime thread reads `CLOCK_BOOTTIME` (the default, every thread); an in-process test of the
//! main loop reads tokio's clock ([`Clock::Runtime`]), which a paused runtime moves.

// Time arithmetic: docs/architecture.md, "Lint policy".
#![warn(clippy::arithmetic_side_effects)]

use std::cell::Cell;
use std::future::Future;
use std::time::Duration;

/// Milliseconds of `CLOCK_BOOTTIME` (since this boot, suspend included). Instants carried
/// from another run may be negative: a payment older than this boot's clock.
pub(crate) type BootMillis = i64;

/// The longest a wait sleeps on tokio's clock before it reads the boot clock again.
pub(crate) const RECHECK: Duration = Duration::from_secs(1);

/// Where [`now`] reads the time on one thread.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Clock {
    /// `CLOCK_BOOTTIME`: the daemon's clock, and every thread's unless told otherwise.
    Boottime,
    /// tokio's clock (`tokio::time::Instant`), counted from the moment it was chosen: a paused
    /// runtime's clock, for in-process tests.
    #[cfg_attr(not(test), allow(dead_code))]
    Runtime,
}

/// The running thread's clock: `None` for `CLOCK_BOOTTIME`, else tokio's clock's reading at the
/// choice and the boot-clock instant it stands for.
type Source = Option<(tokio::time::Instant, BootMillis)>;

thread_local! {
    static SOURCE: Cell<Source> = const { Cell::new(None) };
}

/// Makes [`now`] read `clock` on the calling thread from here on. [`Clock::Runtime`] goes on
/// from the boot clock's present reading, so instants already taken stay comparable; call it
/// within a tokio runtime.
pub(crate) fn use_clock(clock: Clock) {
    let source = match clock {
        Clock::Boottime => None,
        Clock::Runtime => Some((tokio::time::Instant::now(), boottime())),
    };
    SOURCE.with(|cell| cell.set(source));
}

/// Now, on the thread's [`Clock`].
#[inline(never)]
pub(crate) fn now() -> BootMillis {
    match SOURCE.with(Cell::get) {
        None => boottime(),
        Some((chosen, at)) => after(at, tokio::time::Instant::now().duration_since(chosen)),
    }
}

/// Now, on `CLOCK_BOOTTIME`; `CLOCK_MONOTONIC` (which stops during suspend) on a kernel
/// without it.
#[inline(never)]
fn boottime() -> BootMillis {
    use nix::time::ClockId;
    let now = ClockId::CLOCK_BOOTTIME
        .now()
        .or_else(|_| ClockId::CLOCK_MONOTONIC.now())
        .map(Duration::from)
        .unwrap_or_default();
    millis(now)
}

/// A duration in milliseconds, saturating.
pub(crate) fn millis(duration: Duration) -> BootMillis {
    BootMillis::try_from(duration.as_millis()).unwrap_or(BootMillis::MAX)
}

/// The time from `since` to `now`, none when `since` is later.
pub(crate) fn elapsed(since: BootMillis, now: BootMillis) -> Duration {
    let ms = now.saturating_sub(since);
    Duration::from_millis(u64::try_from(ms).unwrap_or(0))
}

/// `at` plus `wait`, saturating.
pub(crate) fn after(at: BootMillis, wait: Duration) -> BootMillis {
    at.saturating_add(millis(wait))
}

/// Waits until `at` on the boot clock.
pub(crate) async fn sleep_until(at: BootMillis) {
    loop {
        let wait = elapsed(now(), at);
        if wait.is_zero() {
            return;
        }
        tokio::time::sleep(wait.min(RECHECK)).await;
    }
}

/// Waits `wait` on the boot clock: the retry and back-off waits.
pub(crate) async fn sleep(wait: Duration) {
    sleep_until(after(now(), wait)).await;
}

/// `work`'s output if it ends before `at` on the boot clock; none when `at` comes first.
pub(crate) async fn timeout_at<F: Future>(at: BootMillis, work: F) -> Option<F::Output> {
    tokio::select! {
        biased;
        output = work => Some(output),
        () = sleep_until(at) => None,
    }
}

/// [`timeout_at`] `limit` from now.
pub(crate) async fn timeout<F: Future>(limit: Duration, work: F) -> Option<F::Output> {
    timeout_at(after(now(), limit), work).await
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINUTE: Duration = Duration::from_secs(60);

    #[test]
    fn arithmetic_saturates_instead_of_panicking() {
        assert_eq!(elapsed(BootMillis::MAX, BootMillis::MIN), Duration::ZERO);
        assert_eq!(elapsed(-5_000, 1_000), Duration::from_secs(6));
        assert_eq!(after(BootMillis::MAX, Duration::MAX), BootMillis::MAX);
        assert_eq!(elapsed(20_000, after(20_000, 10 * MINUTE)), 10 * MINUTE);
    }

    #[test]
    fn the_boot_clock_does_not_run_backwards() {
        let (first, second) = (now(), now());
        assert!(first > 0 && second >= first, "{first} then {second}");
    }

    #[tokio::test]
    async fn a_deadline_in_the_past_is_due_at_once_and_work_that_ends_first_wins() {
        assert_eq!(
            timeout_at(now().saturating_sub(1), std::future::pending::<()>()).await,
            None
        );
        assert_eq!(timeout(MINUTE, async { 7 }).await, Some(7));
        let before = now();
        sleep(Duration::from_millis(30)).await;
        assert!(elapsed(before, now()) >= Duration::from_millis(30));
    }

    #[tokio::test(start_paused = true)]
    async fn the_runtime_clock_moves_with_a_paused_runtime_and_the_boot_clock_does_not() {
        use_clock(Clock::Runtime);
        let before = now();
        tokio::time::advance(10 * MINUTE).await;
        assert_eq!(elapsed(before, now()), 10 * MINUTE);
        // A boot-clock wait ends on the paused clock too.
        assert_eq!(timeout(MINUTE, std::future::pending::<()>()).await, None);
        assert_eq!(elapsed(before, now()), 11 * MINUTE);

        use_clock(Clock::Boottime);
        let before = now();
        tokio::time::advance(10 * MINUTE).await;
        assert!(elapsed(before, now()) < MINUTE);
    }
}

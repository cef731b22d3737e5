//! The payment API's advice to wait: a `Retry-After` on an HTTP 429 or 503 answer
//! (docs/payment-api.md, "Retry-After"). The client reads it into a [`Hold`]: until it ends,
//! no request is sent (each call fails at once, not sent), and every retry loop of the agent
//! waits at least that long before it asks again.

// A received value enters time arithmetic: docs/architecture.md, "Lint policy".
#![warn(clippy::arithmetic_side_effects)]

use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime};

use crate::later::Later;

/// The longest wait a `Retry-After` can impose: a longer one (or a date further ahead) is cut
/// to this. Five minutes keeps a terminal that met a misconfigured API (`Retry-After: 86400`)
/// from refusing sales for a day, while any sane rate limit fits in it.
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(300);

/// How long a `Retry-After` value asks to wait, capped at [`MAX_RETRY_AFTER`]: delay-seconds,
/// or an HTTP-date counted from the answer's own `Date` (so a terminal whose clock is wrong
/// still waits what the API meant) or, without one, from `now`. A date in the past means no
/// wait; a value that is neither is ignored (`None`).
pub fn parse(value: &str, date: Option<&str>, now: SystemTime) -> Option<Duration> {
    let value = value.trim();
    let wait = if !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit()) {
        // More digits than a u64 holds is still "very long".
        Duration::from_secs(value.parse().unwrap_or(u64::MAX))
    } else {
        let at = httpdate::parse_http_date(value).ok()?;
        let from = date
            .and_then(|d| httpdate::parse_http_date(d.trim()).ok())
            .unwrap_or(now);
        at.duration_since(from).unwrap_or(Duration::ZERO)
    };
    Some(wait.min(MAX_RETRY_AFTER))
}

/// A wait the API asked for, while it lasts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Hold {
    /// When it ends, on the monotonic clock.
    pub until: Instant,
    /// When it ends, on the wall clock, for people (`status`).
    pub until_wall: SystemTime,
    /// The status the advice came with (429 or 503).
    pub http_status: u16,
}

impl Hold {
    /// What is left of it (zero once it ended).
    pub fn remaining(&self) -> Duration {
        self.until.saturating_duration_since(Instant::now())
    }
}

/// The hold shared by every clone of a client (and carried over to the client a reload
/// builds): the API's advice is about the agent, not about one call.
#[derive(Debug, Clone, Default)]
pub(crate) struct SharedHold(Arc<Mutex<Option<Hold>>>);

impl SharedHold {
    /// The API asked to wait `wait` from now. A hold already running that ends later stays.
    pub(crate) fn hold(&self, http_status: u16, wait: Duration) {
        let until = Instant::now().later(wait);
        let mut current = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        if current.is_some_and(|c| c.until >= until) {
            return;
        }
        *current = Some(Hold {
            until,
            until_wall: SystemTime::now().later(wait),
            http_status,
        });
    }

    /// The hold, while it lasts.
    pub(crate) fn current(&self) -> Option<Hold> {
        let mut current = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        if current.is_some_and(|c| c.remaining().is_zero()) {
            *current = None;
        }
        *current
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DATE: &str = "Mon, 07 Dec 2026 12:00:00 GMT";

    fn at(text: &str) -> SystemTime {
        httpdate::parse_http_date(text).unwrap()
    }

    #[test]
    fn delay_seconds_are_read_and_capped() {
        let now = SystemTime::now();
        assert_eq!(parse("20", None, now), Some(Duration::from_secs(20)));
        assert_eq!(parse(" 0 ", None, now), Some(Duration::ZERO));
        assert_eq!(parse("86400", None, now), Some(MAX_RETRY_AFTER));
        assert_eq!(
            parse("99999999999999999999999", None, now),
            Some(MAX_RETRY_AFTER)
        );
    }

    #[test]
    fn a_date_counts_from_the_answers_date_else_from_now() {
        let in_30 = "Mon, 07 Dec 2026 12:00:30 GMT";
        // The answer's Date wins over a local clock two days behind.
        let behind = at(DATE).checked_sub(Duration::from_secs(172_800)).unwrap();
        assert_eq!(
            parse(in_30, Some(DATE), behind),
            Some(Duration::from_secs(30))
        );
        assert_eq!(parse(in_30, None, at(DATE)), Some(Duration::from_secs(30)));
        // The obsolete forms HTTP recipients must accept.
        assert_eq!(
            parse("Monday, 07-Dec-26 12:00:10 GMT", Some(DATE), behind),
            Some(Duration::from_secs(10))
        );
        assert_eq!(
            parse("Mon Dec  7 12:00:10 2026", Some(DATE), behind),
            Some(Duration::from_secs(10))
        );
    }

    #[test]
    fn a_past_date_means_no_wait_a_far_one_the_cap() {
        let past = "Mon, 07 Dec 2026 11:00:00 GMT";
        assert_eq!(parse(past, Some(DATE), at(DATE)), Some(Duration::ZERO));
        let far = "Tue, 08 Dec 2026 12:00:00 GMT";
        assert_eq!(parse(far, Some(DATE), at(DATE)), Some(MAX_RETRY_AFTER));
    }

    #[test]
    fn anything_else_is_ignored() {
        let now = SystemTime::now();
        for value in [
            "",
            "soon",
            "-5",
            "1.5",
            "20 s",
            "Mon, 32 Dec 2026 12:00:00 GMT",
        ] {
            assert_eq!(parse(value, None, now), None, "{value:?}");
        }
    }

    #[test]
    fn a_hold_lasts_until_its_end_and_a_shorter_one_does_not_cut_it() {
        let shared = SharedHold::default();
        assert_eq!(shared.current(), None);
        shared.hold(429, Duration::from_secs(60));
        shared.hold(503, Duration::from_secs(5));
        let hold = shared.current().unwrap();
        assert_eq!(hold.http_status, 429);
        assert!(hold.remaining() > Duration::from_secs(55));
        // Clones share it.
        assert_eq!(shared.clone().current(), Some(hold));
        let ended = SharedHold::default();
        ended.hold(429, Duration::ZERO);
        assert_eq!(ended.current(), None);
    }
}

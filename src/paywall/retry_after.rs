//! The payment API's advice to wait: a `Retry-After` on an HTTP 429 or 503 answer
//! (docs/payment-api.md, "Retry-After"). The client reads it into a [`Hold`]: until it ends,
//! no request is sent (each call fails at once, not sent), and every retry loop of the agent
//! waits at least that long before it asks again.

// A received value enters time arithmetic: docs/architecture.md, "Lint policy".
#![warn(clippy::arithmetic_side_effects)]

use std::sync::{Arc, Mutex};

use crate::sync::lock;
use std::time::{Duration, SystemTime};

use crate::boot_clock::{self, BootMillis};

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
        value.parse().unwrap_or(u64::MAX)
    } else {
        let at = http_date(value)?;
        let from = date.and_then(|d| http_date(d.trim())).or_else(|| {
            now.duration_since(SystemTime::UNIX_EPOCH)
                .ok()
                .map(|since| since.as_secs())
        })?;
        at.saturating_sub(from)
    };
    Some(Duration::from_secs(wait).min(MAX_RETRY_AFTER))
}

/// An HTTP-date in any of its three forms (RFC 9110, 5.6.7), as seconds since the Unix epoch:
/// `Sun, 06 Nov 1994 08:49:37 GMT`, the obsolete `Sunday, 06-Nov-94 08:49:37 GMT` (a two-digit
/// year below 70 is 20xx, else 19xx) and `Sun Nov  6 08:49:37 1994`. The day's name is not
/// checked. Hand-written rather than the `httpdate` crate: 4 KB less in the terminal's binary
/// (docs/supply-chain.md).
// Every operand is bounded before the arithmetic: year 1970 to 9999, month 1 to 12, day to 31,
// hour to 23, minute to 59, second to 60.
#[allow(clippy::arithmetic_side_effects)]
fn http_date(text: &str) -> Option<u64> {
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let month_of = |name: &str| MONTHS.iter().position(|m| *m == name).map(|i| i as u64 + 1);
    let number = |t: &str| -> Option<u64> {
        t.bytes()
            .all(|b| b.is_ascii_digit())
            .then(|| t.parse().ok())?
    };
    let t: Vec<&str> = text
        .split([' ', ',', '-', ':'])
        .filter(|t| !t.is_empty())
        .collect();
    let [_, a, b, c, d, e, f, ..] = t[..] else {
        return None;
    };
    let (day, month, year, hms) = match month_of(a) {
        Some(month) => (b, month, t.get(6).copied()?, [c, d, e]),
        None => (a, month_of(b)?, c, [d, e, f]),
    };
    let (day, mut year) = (number(day)?, number(year)?);
    let [hour, minute, second] = [number(hms[0])?, number(hms[1])?, number(hms[2])?];
    if year < 100 {
        year += if year < 70 { 2000 } else { 1900 };
    }
    if !(1970..=9999).contains(&year) || !(1..=31).contains(&day) || hour > 23 || minute > 59 {
        return None;
    }
    if second > 60 {
        return None;
    }
    // Days from 1970-01-01 to the date (the civil-calendar algorithm with years from March).
    let y = if month <= 2 { year - 1 } else { year };
    let (era, year_of_era) = (y / 400, y % 400);
    let day_of_year = (153 * ((month + 9) % 12) + 2) / 5 + day - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    let days = era * 146_097 + day_of_era - 719_468;
    Some(days * 86_400 + hour * 3_600 + minute * 60 + second)
}

/// A wait the API asked for, while it lasts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Hold {
    /// When it ends, on the boot clock.
    pub(crate) until: BootMillis,
    /// When it ends, on the wall clock, for people (`status`).
    pub until_wall: SystemTime,
    /// The status the advice came with (429 or 503).
    pub http_status: u16,
}

impl Hold {
    /// What is left of it (zero once it ended).
    pub fn remaining(&self) -> Duration {
        boot_clock::elapsed(boot_clock::now(), self.until)
    }
}

/// The hold shared by every clone of a client (and carried over to the client a reload
/// builds): the API's advice is about the agent, not about one call.
#[derive(Debug, Clone, Default)]
pub(crate) struct SharedHold(Arc<Mutex<Option<Hold>>>);

impl SharedHold {
    /// The API asked to wait `wait` from now. A hold already running that ends later stays.
    pub(crate) fn hold(&self, http_status: u16, wait: Duration) {
        let until = boot_clock::after(boot_clock::now(), wait);
        let mut current = lock(&self.0);
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
        let mut current = lock(&self.0);
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
        SystemTime::UNIX_EPOCH.later(Duration::from_secs(http_date(text).unwrap()))
    }

    #[test]
    fn http_dates_are_read_in_their_three_forms() {
        // 1994-11-06T08:49:37Z, RFC 9110's example, is 784111777 seconds after the epoch.
        for form in [
            "Sun, 06 Nov 1994 08:49:37 GMT",
            "Sunday, 06-Nov-94 08:49:37 GMT",
            "Sun Nov  6 08:49:37 1994",
        ] {
            assert_eq!(http_date(form), Some(784_111_777), "{form}");
        }
        assert_eq!(http_date("Thu, 01 Jan 1970 00:00:00 GMT"), Some(0));
        assert_eq!(
            http_date("Tue, 29 Feb 2028 23:59:60 GMT"),
            Some(1_835_481_600)
        );
        assert_eq!(
            http_date("Mon, 07 Dec 2026 12:00:00 GMT"),
            Some(1_796_644_800)
        );
        for wrong in [
            "Mon, 07 Foo 2026 12:00:00 GMT",
            "Mon, 07 Dec 2026 24:00:00 GMT",
            "Mon, 07 Dec 1969 12:00:00 GMT",
            "Mon, 07 Dec 2026 12:00",
            "Mon, +7 Dec 2026 12:00:00 GMT",
        ] {
            assert_eq!(http_date(wrong), None, "{wrong}");
        }
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

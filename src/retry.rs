//! The one retry policy every loop that waits and tries again uses: the client's own retries,
//! the payment API connection, the sale-outcome lookups and the serial port reopen.
//!
//! Waits grow exponentially from `min_delay` to a cap, `max_delay`, and each wait is drawn
//! uniformly between zero and its ceiling ("full jitter"). After a Paywall outage, a fleet of
//! terminals that failed at the same moment then comes back spread over the whole window rather
//! than in lockstep. The waits are a [`backon::Backoff`] (an iterator of durations), so the same
//! sequence drives `backon`'s `Retryable` and the hand-written loops that must also watch for a
//! shutdown.

use std::time::Duration;

/// How a failed operation is tried again: up to `max_retries` more attempts (`usize::MAX`:
/// until it succeeds or the caller gives up), the n-th wait drawn from `0 ..= min(max_delay,
/// min_delay * 2^n)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    pub max_retries: usize,
    pub min_delay: Duration,
    pub max_delay: Duration,
}

impl RetryPolicy {
    /// No retries at all.
    pub const NONE: RetryPolicy = RetryPolicy {
        max_retries: 0,
        min_delay: Duration::ZERO,
        max_delay: Duration::ZERO,
    };

    /// A payment API call that is safe to repeat, inside the client: a few quick attempts.
    pub const API_CALL: RetryPolicy = RetryPolicy {
        max_retries: 4,
        min_delay: Duration::from_millis(200),
        max_delay: Duration::from_secs(5),
    };

    /// Bringing the payment API connection up, and looking up a sale whose outcome is unknown:
    /// tried until it works or the agent stops, at most every 30 s.
    pub const API_OUTAGE: RetryPolicy = RetryPolicy {
        max_retries: usize::MAX,
        min_delay: Duration::from_millis(500),
        max_delay: Duration::from_secs(30),
    };

    /// Reopening a serial device that went away (serial-link protocol: at most 5 s apart).
    pub const SERIAL_REOPEN: RetryPolicy = RetryPolicy {
        max_retries: usize::MAX,
        min_delay: Duration::from_millis(100),
        max_delay: Duration::from_secs(5),
    };

    /// The waits of one run of retries, a fresh random sequence each time.
    pub fn backoff(&self) -> FullJitter {
        FullJitter {
            policy: *self,
            attempt: 0,
            // Seeded from the OS random source, so the terminals of a fleet draw different
            // sequences even when they start in the same second.
            rng: fastrand::Rng::with_seed(uuid::Uuid::new_v4().as_u64_pair().0),
        }
    }

    /// The ceiling of the n-th wait (counted from 0): `min(max_delay, min_delay * 2^n)`.
    pub fn ceiling(&self, attempt: usize) -> Duration {
        let factor = 1u32.checked_shl(attempt.min(31) as u32).unwrap_or(u32::MAX);
        self.min_delay
            .checked_mul(factor)
            .unwrap_or(Duration::MAX)
            .min(self.max_delay.max(self.min_delay))
    }
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self::API_CALL
    }
}

/// The waits of a [`RetryPolicy`]: an iterator of durations that ends after `max_retries`.
#[derive(Debug, Clone)]
pub struct FullJitter {
    policy: RetryPolicy,
    attempt: usize,
    rng: fastrand::Rng,
}

impl FullJitter {
    /// Starts the sequence again from the shortest ceiling (after a success, e.g. a serial
    /// device that came up and went away again).
    pub fn reset(&mut self) {
        self.attempt = 0;
    }
}

impl FullJitter {
    /// The next wait when the payment API asked to wait `hold` (what is left of a
    /// `Retry-After`, src/paywall/retry_after.rs): `max(next wait, hold)` plus a jitter drawn
    /// from `0 ..= hold / 4`, so a fleet told to wait the same time does not come back in the
    /// same instant either. Without a hold, the next wait.
    pub fn next_honouring(&mut self, hold: Option<Duration>) -> Option<Duration> {
        let wait = self.next()?;
        Some(match hold.filter(|h| !h.is_zero()) {
            Some(hold) => wait
                .max(hold)
                .saturating_add(hold.mul_f64(self.rng.f64() * 0.25)),
            None => wait,
        })
    }
}

impl Iterator for FullJitter {
    type Item = Duration;

    fn next(&mut self) -> Option<Duration> {
        if self.attempt >= self.policy.max_retries {
            return None;
        }
        let ceiling = self.policy.ceiling(self.attempt);
        self.attempt = self.attempt.saturating_add(1);
        Some(ceiling.mul_f64(self.rng.f64()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waits_stay_under_a_ceiling_that_doubles_up_to_the_cap() {
        let policy = RetryPolicy {
            max_retries: 40,
            min_delay: Duration::from_millis(100),
            max_delay: Duration::from_secs(5),
        };
        for (n, wait) in policy.backoff().enumerate() {
            assert!(wait <= policy.ceiling(n), "wait {n}: {wait:?}");
        }
        assert_eq!(policy.ceiling(0), Duration::from_millis(100));
        assert_eq!(policy.ceiling(3), Duration::from_millis(800));
        assert_eq!(policy.ceiling(39), Duration::from_secs(5));
        assert_eq!(policy.backoff().count(), 40);
        assert_eq!(RetryPolicy::NONE.backoff().count(), 0);
    }

    #[test]
    fn jitter_is_full_and_differs_between_runs() {
        let policy = RetryPolicy::API_OUTAGE;
        let ceiling = policy.ceiling(10);
        let waits: Vec<Duration> = (0..200)
            .map(|_| policy.backoff().nth(10).unwrap())
            .collect();
        // Full jitter: the waits cover the whole window, not only its upper half.
        assert!(waits.iter().any(|w| *w < ceiling / 4), "{waits:?}");
        assert!(waits.iter().any(|w| *w > ceiling * 3 / 4), "{waits:?}");
        let first: Vec<Duration> = (0..20).map(|_| policy.backoff().next().unwrap()).collect();
        assert!(first.windows(2).any(|w| w[0] != w[1]), "{first:?}");
    }

    #[test]
    fn a_hold_is_waited_out_with_jitter_on_top() {
        let hold = Duration::from_secs(20);
        let waits: Vec<Duration> = (0..200)
            .map(|_| {
                RetryPolicy::API_CALL
                    .backoff()
                    .next_honouring(Some(hold))
                    .unwrap()
            })
            .collect();
        assert!(
            waits.iter().all(|w| *w >= hold && *w <= hold * 5 / 4),
            "{waits:?}"
        );
        assert!(waits.windows(2).any(|w| w[0] != w[1]), "{waits:?}");
        // A back-off longer than the hold is kept.
        let long = RetryPolicy {
            max_retries: 1,
            min_delay: Duration::from_secs(60),
            max_delay: Duration::from_secs(60),
        };
        let mut lengths =
            (0..50).map(|_| long.backoff().next_honouring(Some(Duration::from_secs(1))));
        assert!(lengths.all(|w| w.unwrap() >= Duration::from_secs(1)));
        // No hold: the plain sequence; an ended sequence stays ended.
        assert!(
            RetryPolicy::API_CALL
                .backoff()
                .next_honouring(None)
                .unwrap()
                <= RetryPolicy::API_CALL.min_delay
        );
        assert_eq!(RetryPolicy::NONE.backoff().next_honouring(Some(hold)), None);
    }

    #[test]
    fn an_endless_policy_does_not_overflow() {
        let mut waits = RetryPolicy::API_OUTAGE.backoff();
        for _ in 0..10_000 {
            assert!(waits.next().unwrap() <= Duration::from_secs(30));
        }
    }
}

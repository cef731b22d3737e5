//! The one retry policy every loop that waits and tries again uses: the client's own retries,
//! the payment API connection, the sale-outcome lookups and the serial port reopen.
//!
//! Waits grow exponentially from `min_delay` to a cap, `max_delay`, and each wait is drawn
//! uniformly between zero and its ceiling ("full jitter"). After a Paywall outage, a fleet of
//! terminals that failed at the same moment then comes back spread over the whole window rather
//! than in lockstep. The waits are a [`backon::Backoff`] (an iterator of durations), so the same
//! sequence drives `backon`'s `Retryable` and [`retry`], the one loop of the agent's tasks that
//! must also watch for a shutdown.

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use tokio::sync::watch;

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

/// What one attempt of a [`retry`] loop came to.
#[derive(Debug)]
pub(crate) enum Attempt<T, E> {
    /// Finished: the loop ends with this value.
    Done(T),
    /// Failed in a way worth trying again after the next wait of the back-off.
    Again(E),
    /// Try again at once, without a wait (what stood in the way is known to be gone).
    Now,
    /// Try again after this fixed wait, outside the back-off (the payment API rejecting the
    /// agent: once a minute).
    After(Duration),
    /// Failed for good: the loop ends with this error.
    GiveUp(E),
}

/// Why a [`retry`] loop ended without a [`Attempt::Done`].
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Ended<E> {
    /// The stop signal came before or during a wait.
    Stopped,
    /// An attempt gave up, or the back-off ran out of waits after this error.
    GaveUp(E),
}

/// A sleep of a [`retry`] loop's clock (the agent's is the boot clock), boxed so that the
/// waiting is one copy in the binary, not one per loop.
pub(crate) type Sleep = Pin<Box<dyn Future<Output = ()> + Send>>;

/// How a [`retry`] loop waits: the back-off it draws from (kept from one loop to the next
/// until the caller [`FullJitter::reset`]s it), the `Retry-After` hold each back-off wait is
/// lengthened to, the signal that ends a wait and the loop, and the clock that sleeps.
pub(crate) struct Pacing<H> {
    pub(crate) waits: FullJitter,
    /// What is left of a wait the payment API asked for, read before each back-off wait.
    pub(crate) hold: H,
    pub(crate) stop: watch::Receiver<bool>,
    pub(crate) sleep: fn(Duration) -> Sleep,
}

/// Runs `attempt` until it is done or gives up, or `stop` turns true while it waits. After an
/// [`Attempt::Again`] it waits the next wait of the back-off (at least what is left of the
/// hold), first telling `waiting` the error and the wait (for its log line); after an
/// [`Attempt::After`], the fixed wait. The stop signal is only looked at around waits: an
/// attempt that must not start while stopping checks it itself.
pub(crate) async fn retry<T, E, H, A, AF>(
    pacing: &mut Pacing<H>,
    mut attempt: A,
    mut waiting: impl FnMut(&E, Duration),
) -> Result<T, Ended<E>>
where
    H: Fn() -> Option<Duration>,
    A: FnMut() -> AF,
    AF: Future<Output = Attempt<T, E>>,
{
    let Pacing {
        waits,
        hold,
        stop,
        sleep,
    } = pacing;
    loop {
        let wait = match attempt().await {
            Attempt::Done(value) => return Ok(value),
            Attempt::GiveUp(error) => return Err(Ended::GaveUp(error)),
            Attempt::Now => continue,
            Attempt::After(wait) => wait,
            Attempt::Again(error) => {
                let Some(wait) = waits.next_honouring((*hold)()) else {
                    return Err(Ended::GaveUp(error));
                };
                waiting(&error, wait);
                wait
            }
        };
        if !sleep_unless_stopped((*sleep)(wait), stop).await {
            return Err(Ended::Stopped);
        }
    }
}

/// Sleeps `sleep` out, unless `stop` is or turns true: then false.
async fn sleep_unless_stopped(sleep: Sleep, stop: &mut watch::Receiver<bool>) -> bool {
    if *stop.borrow() {
        return false;
    }
    tokio::select! {
        _ = sleep => true,
        _ = stop.wait_for(|s| *s) => false,
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

#[cfg(test)]
mod loop_tests {
    use std::cell::RefCell;

    use super::*;

    const SECOND: Duration = Duration::from_secs(1);

    thread_local! {
        /// The waits a test's loop slept (each test runs on a thread of its own).
        static SLEPT: RefCell<Vec<Duration>> = const { RefCell::new(Vec::new()) };
    }

    /// A retry loop whose sleeps are recorded instead of slept.
    async fn run<T, E>(
        policy: RetryPolicy,
        hold: Option<Duration>,
        script: Vec<Attempt<T, E>>,
    ) -> (Result<T, Ended<E>>, Vec<Duration>, Vec<Duration>, usize) {
        let (_stop_tx, stop) = watch::channel(false);
        SLEPT.with(|slept| slept.borrow_mut().clear());
        let mut told = Vec::new();
        let script = RefCell::new(script.into_iter());
        let attempts = RefCell::new(0usize);
        let result = retry(
            &mut Pacing {
                waits: policy.backoff(),
                hold: || hold,
                stop,
                sleep: |wait| {
                    SLEPT.with(|slept| slept.borrow_mut().push(wait));
                    Box::pin(async {})
                },
            },
            || {
                *attempts.borrow_mut() += 1;
                let next = script
                    .borrow_mut()
                    .next()
                    .expect("attempted past the script");
                async move { next }
            },
            |_, wait| told.push(wait),
        )
        .await;
        let attempts = *attempts.borrow();
        let slept = SLEPT.with(|slept| slept.take());
        (result, slept, told, attempts)
    }

    #[tokio::test]
    async fn each_wait_comes_from_the_back_off_and_is_told_before_it_is_slept() {
        let policy = RetryPolicy {
            max_retries: 10,
            min_delay: SECOND,
            max_delay: SECOND * 4,
        };
        let script = vec![
            Attempt::Again("a"),
            Attempt::Again("b"),
            Attempt::Again("c"),
            Attempt::Done(7),
        ];
        let (result, slept, told, attempts) = run(policy, None, script).await;
        assert_eq!(result, Ok(7));
        assert_eq!(attempts, 4);
        assert_eq!(slept, told);
        assert_eq!(slept.len(), 3);
        for (n, wait) in slept.iter().enumerate() {
            assert!(*wait <= policy.ceiling(n), "wait {n}: {wait:?}");
        }
    }

    #[tokio::test]
    async fn a_hold_lengthens_every_back_off_wait() {
        let hold = SECOND * 20;
        let script = vec![Attempt::Again(()), Attempt::Again(()), Attempt::Done(())];
        let (result, slept, _, _) = run(RetryPolicy::API_CALL, Some(hold), script).await;
        assert_eq!(result, Ok(()));
        assert!(
            slept.iter().all(|w| *w >= hold && *w <= hold * 5 / 4),
            "{slept:?}"
        );
    }

    #[tokio::test]
    async fn now_and_after_do_not_draw_from_the_back_off() {
        let policy = RetryPolicy {
            max_retries: 1,
            min_delay: SECOND,
            max_delay: SECOND,
        };
        let script = vec![
            Attempt::Now,
            Attempt::After(SECOND * 60),
            Attempt::After(SECOND * 60),
            Attempt::Again("once"),
            Attempt::Done(()),
        ];
        let (result, slept, told, attempts) = run(policy, None, script).await;
        assert_eq!(result, Ok(()));
        assert_eq!(attempts, 5);
        assert_eq!(&slept[..2], &[SECOND * 60, SECOND * 60]);
        assert_eq!(slept.len(), 3);
        assert_eq!(told.len(), 1, "a fixed wait is not told");
    }

    #[tokio::test]
    async fn a_give_up_or_a_back_off_that_ran_out_ends_with_the_error() {
        let script = vec![Attempt::Again("first"), Attempt::GiveUp("refused")];
        let (result, _, _, _) = run::<(), _>(RetryPolicy::API_CALL, None, script).await;
        assert_eq!(result, Err(Ended::GaveUp("refused")));
        let script = vec![Attempt::Again("first"), Attempt::Again("second")];
        let once = RetryPolicy {
            max_retries: 1,
            ..RetryPolicy::API_CALL
        };
        let (result, slept, _, attempts) = run::<(), _>(once, None, script).await;
        assert_eq!(result, Err(Ended::GaveUp("second")));
        assert_eq!((slept.len(), attempts), (1, 2));
    }

    #[tokio::test(start_paused = true)]
    async fn the_stop_signal_ends_a_wait_and_is_looked_at_before_one() {
        let (stop_tx, stop) = watch::channel(false);
        let mut pacing = Pacing {
            waits: RetryPolicy::API_OUTAGE.backoff(),
            hold: || None,
            stop,
            sleep: |wait| Box::pin(tokio::time::sleep(wait)),
        };
        let stopper = tokio::spawn(async move {
            tokio::time::sleep(SECOND).await;
            stop_tx.send_replace(true);
            stop_tx
        });
        let started = tokio::time::Instant::now();
        let attempts = RefCell::new(0);
        let result: Result<(), Ended<()>> = retry(
            &mut pacing,
            || {
                *attempts.borrow_mut() += 1;
                async { Attempt::After(SECOND * 60) }
            },
            |_, _| {},
        )
        .await;
        assert_eq!(result, Err(Ended::Stopped));
        assert_eq!(*attempts.borrow(), 1);
        assert!(started.elapsed() < SECOND * 2, "{:?}", started.elapsed());
        // Already stopped: the next failure ends the loop without a wait or another attempt.
        let _stop_tx = stopper.await.unwrap();
        pacing.sleep = |_| Box::pin(std::future::pending());
        let result: Result<(), Ended<&str>> =
            retry(&mut pacing, || async { Attempt::Again("down") }, |_, _| {}).await;
        assert_eq!(result, Err(Ended::Stopped));
    }
}

//! Time arithmetic that cannot panic. A configured duration is bounded at load
//! (docs/configuration.md, "Validation"), but an instant plus a duration still panics on
//! overflow: every deadline the agent computes goes through [`Later::later`], which gives the
//! farthest instant the clock can say instead, so an absurd value means a timer that does not
//! fire rather than a daemon that aborts.

use std::time::Duration;

/// A year: how far ahead an overflowing deadline is put.
const FAR: Duration = Duration::from_secs(365 * 24 * 60 * 60);

pub(crate) trait Later: Sized + Copy {
    fn add_checked(self, wait: Duration) -> Option<Self>;

    /// `self + wait`, or as far ahead as can be said when that overflows.
    fn later(self, wait: Duration) -> Self {
        self.add_checked(wait)
            .or_else(|| self.add_checked(FAR))
            .unwrap_or(self)
    }
}

impl Later for std::time::Instant {
    fn add_checked(self, wait: Duration) -> Option<Self> {
        self.checked_add(wait)
    }
}

impl Later for tokio::time::Instant {
    fn add_checked(self, wait: Duration) -> Option<Self> {
        self.checked_add(wait)
    }
}

impl Later for std::time::SystemTime {
    fn add_checked(self, wait: Duration) -> Option<Self> {
        self.checked_add(wait)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_overflowing_deadline_is_far_ahead_not_a_panic() {
        let now = std::time::Instant::now();
        assert_eq!(
            now.later(Duration::from_secs(3)),
            now + Duration::from_secs(3)
        );
        assert!(now.later(Duration::MAX) > now);
        let wall = std::time::SystemTime::now();
        assert!(wall.later(Duration::MAX) >= wall);
    }
}

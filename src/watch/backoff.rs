//! When the watch may repair again: the first few repairs of a burst go at once; after that,
//! each waits twice as long as the one before (up to a cap), so a fight with another program that
//! keeps rewriting the table costs a handful of transactions a minute instead of a busy loop. The
//! count resets once no drift has been seen for a quiet period. Pure: it is told the time.

use std::time::{Duration, Instant};

/// How the watch backs off when it keeps having to repair.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct BackoffPolicy {
    /// Repairs in a row that go at once (a deletion by hand, and the odd one after it).
    pub free_repairs: u32,
    /// The wait after those, doubled for each further repair.
    pub initial: Duration,
    /// The longest wait.
    pub max: Duration,
    /// Drift-free time after which the count starts again.
    pub quiet: Duration,
}

impl Default for BackoffPolicy {
    fn default() -> Self {
        BackoffPolicy {
            free_repairs: 5,
            initial: Duration::from_secs(1),
            max: Duration::from_mins(1),
            quiet: Duration::from_secs(10),
        }
    }
}

impl BackoffPolicy {
    /// A policy with these numbers.
    pub fn new(free_repairs: u32, initial: Duration, max: Duration, quiet: Duration) -> Self {
        BackoffPolicy {
            free_repairs,
            initial,
            max,
            quiet,
        }
    }
}

/// The state of the back-off.
#[derive(Debug, Clone)]
pub(crate) struct Backoff {
    policy: BackoffPolicy,
    /// Repairs (or failed attempts) since the count last started again.
    streak: u32,
    last_repair: Option<Instant>,
    last_drift: Option<Instant>,
}

impl Backoff {
    pub(crate) fn new(policy: BackoffPolicy) -> Self {
        Backoff {
            policy,
            streak: 0,
            last_repair: None,
            last_drift: None,
        }
    }

    /// Drift was seen at `now` (a notification, a read that found a difference): after a quiet
    /// period (counted from when the next repair was allowed, so a long wait is not mistaken for
    /// quiet), the count starts again.
    pub(crate) fn drift_seen(&mut self, now: Instant) {
        let quiet = self.policy.quiet.saturating_add(self.delay());
        if self
            .last_drift
            .is_some_and(|last| now.saturating_duration_since(last) >= quiet)
        {
            self.streak = 0;
        }
        self.last_drift = Some(now);
    }

    /// A repair (or an attempt that failed) was made at `now`.
    pub(crate) fn repaired(&mut self, now: Instant) {
        self.streak = self.streak.saturating_add(1);
        self.last_repair = Some(now);
    }

    /// How long after the last repair the next one waits (zero while repairs are free).
    pub(crate) fn delay(&self) -> Duration {
        let Some(over) = self.streak.checked_sub(self.policy.free_repairs) else {
            return Duration::ZERO;
        };
        let factor = 1u32.checked_shl(over).unwrap_or(u32::MAX);
        self.policy
            .initial
            .checked_mul(factor)
            .unwrap_or(self.policy.max)
            .min(self.policy.max)
    }

    /// The earliest time the next repair may run.
    pub(crate) fn ready_at(&self) -> Option<Instant> {
        let delay = self.delay();
        if delay.is_zero() {
            return None;
        }
        self.last_repair.map(|last| last + delay)
    }

    /// Repairs since the count last started again.
    pub(crate) fn streak(&self) -> u32 {
        self.streak
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> BackoffPolicy {
        BackoffPolicy::new(
            3,
            Duration::from_secs(1),
            Duration::from_secs(8),
            Duration::from_secs(30),
        )
    }

    #[test]
    fn the_first_repairs_are_free_then_the_wait_doubles_up_to_the_cap() {
        let t0 = Instant::now();
        let mut b = Backoff::new(policy());
        let mut waits = Vec::new();
        for i in 0..8 {
            let now = t0 + Duration::from_millis(i * 10);
            b.drift_seen(now);
            b.repaired(now);
            waits.push(b.delay().as_secs());
        }
        assert_eq!(waits, [0, 0, 1, 2, 4, 8, 8, 8]);
        assert_eq!(
            b.ready_at(),
            Some(t0 + Duration::from_millis(70) + Duration::from_secs(8))
        );
    }

    #[test]
    fn a_quiet_period_starts_the_count_again() {
        let t0 = Instant::now();
        let mut b = Backoff::new(policy());
        for i in 0..5 {
            let now = t0 + Duration::from_millis(i);
            b.drift_seen(now);
            b.repaired(now);
        }
        assert!(b.ready_at().is_some());
        // Drift seen again within the quiet period keeps the count...
        b.drift_seen(t0 + Duration::from_secs(20));
        assert_eq!(b.streak(), 5);
        // ...and so does a wait no longer than the quiet period after the next repair was due
        // (4 s after the fifth): a long back-off is not quiet.
        b.drift_seen(t0 + Duration::from_secs(53));
        assert_eq!(b.streak(), 5);
        // Once nothing was seen for that long, it starts again.
        b.drift_seen(t0 + Duration::from_secs(88));
        assert_eq!(b.streak(), 0);
        assert_eq!(b.ready_at(), None);
    }

    #[test]
    fn huge_streaks_stay_at_the_cap() {
        let mut b = Backoff::new(policy());
        let now = Instant::now();
        for _ in 0..200 {
            b.repaired(now);
        }
        assert_eq!(b.delay(), Duration::from_secs(8));
    }
}

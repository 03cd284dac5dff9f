//! The one backoff of the sidecars, for every retry that waits: a full journal volume, a
//! checkpoint that cannot be written, a sink that refused a batch. Exponential, with jitter so
//! that many pods retrying the same server spread out, built on `backon`'s delays.

use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBackoff, ExponentialBuilder};

/// Delays that double from `initial` up to `max`, each one between half and all of its step.
#[derive(Debug)]
pub struct Backoff {
    initial: Duration,
    max: Duration,
    delays: ExponentialBackoff,
}

impl Backoff {
    /// A backoff starting at `initial` (the first delay is between `initial / 2` and
    /// `initial`), capped at `max`.
    pub fn new(initial: Duration, max: Duration) -> Self {
        Self {
            initial,
            max,
            delays: delays(initial, max),
        }
    }

    /// The delay before the next attempt, after one more failure.
    pub fn next_delay(&mut self) -> Duration {
        // Without a limit on attempts the delays never end; `max` is a safe answer regardless.
        self.delays.next().unwrap_or(self.max).min(self.max)
    }

    /// The delay for a server that said `Retry-After: after`: honoured (the server knows its
    /// load), but at most ten times the cap so a bogus value cannot park a sink for days. It
    /// counts as a failure for the next own delay.
    pub fn server_delay(&mut self, after: Duration) -> Duration {
        self.delays.next();
        after.min(self.max * 10)
    }

    /// After a success: the next failure starts from `initial` again.
    pub fn reset(&mut self) {
        self.delays = delays(self.initial, self.max);
    }
}

/// backon adds up to one more step of jitter (a delay of `d` becomes `d..2d`), so the steps
/// are built from half the bounds.
fn delays(initial: Duration, max: Duration) -> ExponentialBackoff {
    ExponentialBuilder::default()
        .with_min_delay(initial / 2)
        .with_max_delay(max / 2)
        .with_factor(2.0)
        .with_jitter()
        .without_max_times()
        .build()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_double_with_jitter_up_to_the_cap_and_start_over_after_a_success() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_secs(1));
        let delays: Vec<Duration> = (0..8).map(|_| b.next_delay()).collect();
        let within = |d: Duration, low: u64, high: u64| {
            d >= Duration::from_millis(low) && d <= Duration::from_millis(high)
        };
        assert!(within(delays[0], 50, 100), "{delays:?}");
        assert!(within(delays[2], 200, 400), "{delays:?}");
        for d in &delays[4..] {
            assert!(within(*d, 500, 1000), "{delays:?}");
        }
        assert_eq!(
            b.server_delay(Duration::from_secs(3)),
            Duration::from_secs(3)
        );
        assert_eq!(
            b.server_delay(Duration::from_secs(3600)),
            Duration::from_secs(10)
        );
        b.reset();
        assert!(b.next_delay() <= Duration::from_millis(100));
    }
}

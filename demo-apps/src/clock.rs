//! Simulated time for synthetic generation: a millisecond counter and periodic events on it.
//!
//! The one thing easy to get wrong: with `--rate`, durations are simulated, not slept, so
//! "every 10 s" must be measured on this clock, never on the wall clock. Otherwise the number
//! of periodic records would depend on how fast the machine writes, and the same seed would
//! not give the same output.

/// Simulated time in milliseconds since the simulation started; it only moves when told to.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord)]
pub struct SimClock {
    now_ms: u64,
}

impl SimClock {
    /// A clock at 0 ms.
    pub fn new() -> Self {
        SimClock::default()
    }

    /// Milliseconds since the start.
    pub fn now_ms(&self) -> u64 {
        self.now_ms
    }

    /// Moves the clock forward by `ms`.
    pub fn advance(&mut self, ms: u64) {
        self.now_ms = self.now_ms.saturating_add(ms);
    }

    /// Moves the clock to `ms` if that is later; the clock never goes back.
    pub fn advance_to(&mut self, ms: u64) {
        self.now_ms = self.now_ms.max(ms);
    }
}

/// An event that recurs every `period_ms` of simulated time, first at `period_ms`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Every {
    period_ms: u64,
    next_ms: u64,
}

impl Every {
    /// An event every `period_ms` (at least 1), first due at `period_ms`.
    pub fn new(period_ms: u64) -> Self {
        let period_ms = period_ms.max(1);
        Every {
            period_ms,
            next_ms: period_ms,
        }
    }

    /// Whether the event is due at `now_ms`; if so it is consumed and the next one scheduled a
    /// period later. Missed occurrences are skipped, not replayed in a burst.
    pub fn due(&mut self, now_ms: u64) -> bool {
        if now_ms < self.next_ms {
            return false;
        }
        let missed = (now_ms - self.next_ms) / self.period_ms;
        self.next_ms += (missed + 1) * self.period_ms;
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_fires_once_per_period_and_skips_missed_ones() {
        let mut every = Every::new(10_000);
        let mut clock = SimClock::new();
        let mut fired = 0;
        for _ in 0..600 {
            clock.advance(100);
            fired += u32::from(every.due(clock.now_ms()));
        }
        assert_eq!(fired, 6, "60 s of simulated time");
        assert!(every.due(clock.now_ms() + 55_000));
        assert!(
            !every.due(clock.now_ms() + 55_000),
            "missed periods are not replayed"
        );
    }

    #[test]
    fn clock_never_goes_back() {
        let mut clock = SimClock::new();
        clock.advance(50);
        clock.advance_to(20);
        assert_eq!(clock.now_ms(), 50);
        clock.advance_to(70);
        assert_eq!(clock.now_ms(), 70);
    }
}

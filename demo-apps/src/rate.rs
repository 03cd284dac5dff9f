//! Pacing: writing a steady number of lines per second, in small batches.
//!
//! The one thing easy to get wrong: sleeping once per line caps the rate at a few thousand
//! lines per second (timer granularity) and costs syscalls per line. The pacer instead sizes
//! batches to about [`BATCH_INTERVAL`] of lines, sleeps once per batch, and aims at absolute
//! deadlines (`start + lines / rate`), so rounding and oversleeping never accumulate into drift.

use std::time::{Duration, Instant};

/// How much time one batch of lines stands for: short enough that lines appear smoothly, long
/// enough that a sleep per batch is cheap even at 100 000 lines/s.
pub const BATCH_INTERVAL: Duration = Duration::from_millis(10);

/// Upper bound on lines per batch, so one batch never holds more than a few MiB.
pub const MAX_BATCH_LINES: usize = 10_000;

/// How far behind schedule the pacer may fall (a stalled disk, a suspended process) before it
/// gives up catching up and restarts its schedule, instead of writing a burst.
pub const MAX_LAG: Duration = Duration::from_secs(1);

/// Spaces batches of lines so that, on average, `lines_per_sec` lines are written per second.
#[derive(Debug, Clone)]
pub struct Pacer {
    lines_per_sec: u32,
    start: Instant,
    lines: u64,
}

impl Pacer {
    /// A pacer for `lines_per_sec` (at least 1), whose schedule starts at `start`.
    pub fn new(lines_per_sec: u32, start: Instant) -> Self {
        Pacer {
            lines_per_sec: lines_per_sec.max(1),
            start,
            lines: 0,
        }
    }

    /// The rate this pacer aims at, in lines per second.
    pub fn lines_per_sec(&self) -> u32 {
        self.lines_per_sec
    }

    /// Lines per batch: about [`BATCH_INTERVAL`] worth at this rate, at least 1 and at most
    /// [`MAX_BATCH_LINES`].
    pub fn batch_lines(&self) -> usize {
        let per_interval = u128::from(self.lines_per_sec) * BATCH_INTERVAL.as_millis() / 1000;
        usize::try_from(per_interval)
            .unwrap_or(MAX_BATCH_LINES)
            .clamp(1, MAX_BATCH_LINES)
    }

    /// Records that `lines` more lines were written at `now` and returns when the next batch is
    /// due. If the schedule is more than [`MAX_LAG`] behind, it restarts at `now`.
    pub fn record(&mut self, lines: u64, now: Instant) -> Instant {
        self.lines += lines;
        let due = self.due();
        if now.saturating_duration_since(due) > MAX_LAG {
            self.start = now;
            self.lines = 0;
            return now;
        }
        due
    }

    /// When the schedule allows the next line: `start + lines / rate`.
    fn due(&self) -> Instant {
        let nanos = u128::from(self.lines) * 1_000_000_000 / u128::from(self.lines_per_sec);
        let nanos = u64::try_from(nanos).unwrap_or(u64::MAX);
        self.start + Duration::from_nanos(nanos)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batches_hold_ten_milliseconds_of_lines() {
        let now = Instant::now();
        assert_eq!(Pacer::new(1, now).batch_lines(), 1);
        assert_eq!(Pacer::new(1_000, now).batch_lines(), 10);
        assert_eq!(Pacer::new(50_000, now).batch_lines(), 500);
        assert_eq!(Pacer::new(u32::MAX, now).batch_lines(), MAX_BATCH_LINES);
        assert_eq!(Pacer::new(0, now).lines_per_sec(), 1);
    }

    #[test]
    fn deadlines_follow_the_rate_without_drift() {
        let start = Instant::now();
        let mut pacer = Pacer::new(3_000, start);
        let mut due = start;
        for _ in 0..300 {
            // Each batch is written late by 1 ms; deadlines still come from the start.
            due = pacer.record(30, due + Duration::from_millis(1));
        }
        assert_eq!(due - start, Duration::from_secs(3));
    }

    #[test]
    fn falling_far_behind_restarts_the_schedule() {
        let start = Instant::now();
        let mut pacer = Pacer::new(100, start);
        let late = start + Duration::from_secs(5);
        assert_eq!(pacer.record(1, late), late);
        assert_eq!(
            pacer.record(100, late),
            late + Duration::from_secs(1),
            "the new schedule counts from the restart"
        );
    }
}

//! Steps that may drop the record: `filter` (by a condition), `sample` (one in N) and
//! `rate_limit` (a token bucket per source file). Each drop names its reason, which the
//! processor counts.

use sidecar_record::Fields;
use std::collections::HashMap;
use std::time::Instant;

use serde_json::Value;

use super::{Compile, Run};
use crate::condition::Condition;
use crate::spec::{FilterSpec, RateLimitSpec, SampleSpec};
use crate::{present, RulesError};

/// Drop reason of a `sample:` step, as the drop metric's `reason` label.
const SAMPLED: &str = "sampled";
/// Drop reason of a `rate_limit:` step.
const RATE_LIMITED: &str = "rate_limited";
/// Drop reason of a `filter:` step without its own `reason`.
const FILTERED: &str = "filtered";

/// `filter:` drops the record unless (`keep:`) or when (`drop:`) a condition holds.
#[derive(Debug)]
pub(super) struct Filter {
    condition: Condition,
    /// true: `keep:` (drop unless it holds); false: `drop:`.
    keep: bool,
    reason: String,
}

impl Filter {
    pub(super) fn compile(s: FilterSpec, c: &Compile<'_, '_>) -> Result<Self, RulesError> {
        let (spec, keep, key) = match (s.drop, s.keep) {
            (Some(drop), None) => (drop, false, "drop"),
            (None, Some(keep)) => (keep, true, "keep"),
            _ => return Err(c.invalid_step("give exactly one of drop, keep")),
        };
        let condition = Condition::compile(
            spec,
            None,
            c.scope,
            &c.at(key),
            "add `field:` to this condition",
        )?;
        let reason = match s.reason {
            Some(reason) if reason.is_empty() => {
                return Err(c.invalid("reason", "must not be empty"))
            }
            Some(reason) => reason,
            None => FILTERED.to_owned(),
        };
        Ok(Self {
            condition,
            keep,
            reason,
        })
    }

    /// `Some(reason)` when the record goes.
    pub(super) fn apply(&self, record: &Fields) -> Option<&str> {
        (self.condition.holds(record) != self.keep).then_some(self.reason.as_str())
    }
}

/// `sample:` keeps one record in N, chosen by a hash of its id.
#[derive(Debug)]
pub(super) struct Sample {
    one_in: u64,
    /// With a field: the rate per value of it (`one_in` applies to none).
    by_value: Option<(String, Vec<(String, u64)>)>,
}

impl Sample {
    pub(super) fn compile(s: SampleSpec, c: &Compile<'_, '_>) -> Result<Self, RulesError> {
        let (one_in, by_value) = match (s.one_in, s.field) {
            (Some(n), None) if s.one_in_by_value.is_empty() => (n, None),
            (None, Some(field)) if !s.one_in_by_value.is_empty() => {
                let field = String::from(c.field("field", field)?);
                (
                    1,
                    Some((field, s.one_in_by_value.into_iter().collect::<Vec<_>>())),
                )
            }
            _ => {
                return Err(c.invalid_step(
                    "give `one_in: N`, or `field` with `one_in_by_value: {value: N}`",
                ))
            }
        };
        let zero = one_in == 0
            || by_value
                .as_ref()
                .is_some_and(|(_, rates)| rates.iter().any(|(_, n)| *n == 0));
        if zero {
            return Err(c.invalid("one_in", "must be at least 1 (1 keeps every record)"));
        }
        Ok(Self { one_in, by_value })
    }

    /// `Some(reason)` when the record goes.
    pub(super) fn apply(&self, record: &Fields) -> Option<&'static str> {
        let n = match &self.by_value {
            None => self.one_in,
            Some((field, rates)) => {
                let Some(Value::String(value)) = present(record, field) else {
                    return None;
                };
                rates.iter().find(|(v, _)| v == value)?.1
            }
        };
        (n > 1 && !sampled_in(record, n)).then_some(SAMPLED)
    }
}

/// `rate_limit:` at most so many records a second per source file, with a burst.
#[derive(Debug)]
pub(super) struct RateLimit {
    per_second: f64,
    burst: f64,
    buckets: Buckets,
}

impl RateLimit {
    pub(super) fn compile(s: RateLimitSpec, c: &Compile<'_, '_>) -> Result<Self, RulesError> {
        let per_second = s.records_per_second;
        if !(per_second.is_finite() && per_second > 0.0) {
            return Err(c.invalid("records_per_second", "must be a positive number"));
        }
        let burst = s.burst.unwrap_or(per_second.max(1.0));
        if !(burst.is_finite() && burst >= 1.0) {
            return Err(c.invalid("burst", "must be at least 1"));
        }
        Ok(Self {
            per_second,
            burst,
            buckets: Buckets::default(),
        })
    }

    /// `Some(reason)` when the record goes.
    pub(super) fn apply(&self, run: &Run<'_>) -> Option<&'static str> {
        let taken = self
            .buckets
            .take(run.source, self.per_second, self.burst, Instant::now());
        (!taken).then_some(RATE_LIMITED)
    }
}

/// A token bucket per source file, for `rate_limit:`.
#[derive(Debug, Default)]
struct Buckets(parking_lot::Mutex<HashMap<Box<str>, Bucket>>);

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

/// Whether a record is in the kept 1-in-`n`: decided by a hash of its id, so the same record
/// is kept or dropped the same way after a restart (no repeats, no gaps in what was kept).
fn sampled_in(record: &Fields, n: u64) -> bool {
    let key = match record.get("id").or_else(|| record.get("line")) {
        Some(Value::String(text)) => text.as_str(),
        _ => "",
    };
    xxhash_rust::xxh3::xxh3_64(key.as_bytes()).is_multiple_of(n)
}

impl Buckets {
    /// Takes one token from `source`'s bucket; false when it is empty.
    fn take(&self, source: &str, per_second: f64, burst: f64, now: Instant) -> bool {
        // The processor applies rules on one thread; the lock is never contended.
        let mut buckets = self.0.lock();
        let bucket = match buckets.get_mut(source) {
            Some(bucket) => bucket,
            None => buckets.entry(source.into()).or_insert(Bucket {
                tokens: burst,
                at: now,
            }),
        };
        let refill = now.saturating_duration_since(bucket.at).as_secs_f64() * per_second;
        bucket.tokens = (bucket.tokens + refill).min(burst);
        bucket.at = now;
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

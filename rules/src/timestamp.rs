//! Timestamps: the layouts the `timestamp:` step and `convert: timestamp` read, normalised to
//! RFC 3339 UTC with milliseconds (`2026-11-22T10:30:45.123Z`).
//!
//! Easy to get wrong: times written without an offset (Python's asctime, Apache's error log).
//! They are read in the step's timezone (UTC unless told), never in the processor's own,
//! which in a container is UTC by accident rather than by choice.

use chrono::{
    DateTime, FixedOffset, Local, LocalResult, NaiveDate, NaiveDateTime, SecondsFormat, TimeZone,
    Utc,
};
use serde_json::Value;

use super::spec::TimestampLayout;

/// Where times without an offset are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Zone {
    /// UTC.
    Utc,
    /// The processor's local zone (`TZ`, `/etc/localtime`).
    Local,
    /// A fixed offset east of UTC, in seconds.
    Fixed(i32),
}

impl Zone {
    /// Parses `UTC`, `Z`, `local`, `+02:00`, `-0530`.
    ///
    /// # Errors
    /// A message saying which forms are understood.
    pub(super) fn parse(text: &str) -> Result<Zone, String> {
        match text {
            "UTC" | "utc" | "Z" | "z" | "Etc/UTC" | "GMT" => return Ok(Zone::Utc),
            "local" | "Local" => return Ok(Zone::Local),
            _ => {}
        }
        parse_offset(text.as_bytes())
            .filter(|&(_, used)| used == text.len())
            .map(|(seconds, _)| Zone::Fixed(seconds))
            .ok_or_else(|| {
                format!(
                    "{text:?} is not a timezone this build reads: use UTC, local, or an offset \
                     such as +02:00 (zone names need a tz database the image does not carry)"
                )
            })
    }

    fn resolve(self, naive: NaiveDateTime) -> Option<DateTime<Utc>> {
        match self {
            Zone::Utc => Some(naive.and_utc()),
            Zone::Fixed(seconds) => {
                single(FixedOffset::east_opt(seconds)?.from_local_datetime(&naive))
            }
            Zone::Local => single(Local.from_local_datetime(&naive)),
        }
    }
}

/// The earlier of two readings in a DST fold, none in a gap.
fn single<Tz: TimeZone>(result: LocalResult<DateTime<Tz>>) -> Option<DateTime<Utc>> {
    match result {
        LocalResult::Single(t) | LocalResult::Ambiguous(t, _) => Some(t.with_timezone(&Utc)),
        LocalResult::None => None,
    }
}

/// Reads `value` in the first of `layouts` that fits; RFC 3339 UTC with milliseconds.
pub(super) fn normalise(value: &Value, layouts: &[TimestampLayout], zone: Zone) -> Option<String> {
    let time = layouts
        .iter()
        .find_map(|&layout| parse(value, layout, zone))?;
    Some(time.to_rfc3339_opts(SecondsFormat::Millis, true))
}

/// Every layout `auto` tries, most common first.
const AUTO: [TimestampLayout; 6] = [
    TimestampLayout::Rfc3339,
    TimestampLayout::Python,
    TimestampLayout::Clf,
    TimestampLayout::ApacheError,
    TimestampLayout::EpochSeconds,
    TimestampLayout::EpochMillis,
];

fn parse(value: &Value, layout: TimestampLayout, zone: Zone) -> Option<DateTime<Utc>> {
    match layout {
        TimestampLayout::Auto => AUTO.iter().find_map(|&l| parse(value, l, zone)),
        TimestampLayout::EpochSeconds | TimestampLayout::EpochMillis => {
            let number = match value {
                Value::Number(n) => n.as_f64()?,
                Value::String(s) => s.trim().parse::<f64>().ok()?,
                _ => return None,
            };
            // Auto must not take a millisecond count for seconds in the year 50000: a
            // plausible epoch in seconds is below 10^11 (year 5138), in ms at least 10^11.
            let millis = if layout == TimestampLayout::EpochSeconds {
                if number.abs() >= 1e11 {
                    return None;
                }
                number * 1000.0
            } else {
                if number.abs() < 1e11 {
                    return None;
                }
                number
            };
            if !millis.is_finite() {
                return None;
            }
            DateTime::from_timestamp_millis(millis.round() as i64)
        }
        TimestampLayout::Python | TimestampLayout::Rfc3339 => {
            let text = value.as_str()?.trim();
            let (naive, offset) = parse_iso(text.as_bytes(), layout == TimestampLayout::Rfc3339)?;
            match offset {
                Some(seconds) => {
                    single(FixedOffset::east_opt(seconds)?.from_local_datetime(&naive))
                }
                None => zone.resolve(naive),
            }
        }
        TimestampLayout::Clf => {
            let text = value.as_str()?.trim();
            let text = text.strip_prefix('[').unwrap_or(text);
            let text = text.strip_suffix(']').unwrap_or(text);
            DateTime::parse_from_str(text, "%d/%b/%Y:%H:%M:%S %z")
                .ok()
                .map(|t| t.with_timezone(&Utc))
        }
        TimestampLayout::ApacheError => {
            let text = value.as_str()?.trim();
            let text = text.strip_prefix('[').unwrap_or(text);
            let text = text.strip_suffix(']').unwrap_or(text);
            let naive = NaiveDateTime::parse_from_str(text, "%a %b %d %H:%M:%S%.f %Y").ok()?;
            zone.resolve(naive)
        }
    }
}

/// `YYYY-MM-DD[T ]HH:MM:SS[.,fraction][Z|±HH:MM|±HHMM]`, read by hand: it is the layout of
/// almost every line, and chrono's format parser would need a copy to accept the comma.
/// `strict` (RFC 3339) wants the `T` or a space and a fraction with a dot.
fn parse_iso(b: &[u8], strict: bool) -> Option<(NaiveDateTime, Option<i32>)> {
    if b.len() < 19 {
        return None;
    }
    let digits = |range: std::ops::Range<usize>| -> Option<u32> {
        b.get(range)?.iter().try_fold(0u32, |n, &c| {
            c.is_ascii_digit().then(|| n * 10 + u32::from(c - b'0'))
        })
    };
    let separators_ok = b[4] == b'-'
        && b[7] == b'-'
        && (b[10] == b'T' || b[10] == b' ' || b[10] == b't')
        && b[13] == b':'
        && b[16] == b':';
    if !separators_ok {
        return None;
    }
    let date = NaiveDate::from_ymd_opt(digits(0..4)? as i32, digits(5..7)?, digits(8..10)?)?;
    let (hour, minute, second) = (digits(11..13)?, digits(14..16)?, digits(17..19)?);
    let mut at = 19;
    let mut nanos = 0u32;
    if let Some(&mark) = b.get(at) {
        if mark == b'.' || (mark == b',' && !strict) {
            at += 1;
            let start = at;
            let mut scale = 100_000_000u32;
            while let Some(&c) = b.get(at).filter(|c| c.is_ascii_digit()) {
                nanos += u32::from(c - b'0') * scale;
                scale /= 10;
                at += 1;
            }
            if at == start {
                return None;
            }
        }
    }
    let naive = date.and_hms_nano_opt(hour, minute, second, nanos)?;
    let rest = &b[at..];
    if rest.is_empty() {
        return Some((naive, None));
    }
    let (offset, used) = parse_offset(rest)?;
    (used == rest.len()).then_some((naive, Some(offset)))
}

/// `Z`, `±HH:MM`, `±HHMM` or `±HH` at the start of `b`: (seconds east, bytes used).
fn parse_offset(b: &[u8]) -> Option<(i32, usize)> {
    match b.first()? {
        b'Z' | b'z' => return Some((0, 1)),
        b'+' | b'-' => {}
        _ => return None,
    }
    let sign = if b[0] == b'-' { -1 } else { 1 };
    let two = |i: usize| -> Option<i32> {
        let (a, c) = (*b.get(i)?, *b.get(i + 1)?);
        (a.is_ascii_digit() && c.is_ascii_digit())
            .then(|| i32::from(a - b'0') * 10 + i32::from(c - b'0'))
    };
    let hours = two(1)?;
    let (minutes, used) = match b.get(3) {
        Some(b':') => (two(4)?, 6),
        Some(c) if c.is_ascii_digit() => (two(3)?, 5),
        _ => (0, 3),
    };
    if hours > 23 || minutes > 59 {
        return None;
    }
    Some((sign * (hours * 3600 + minutes * 60), used))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use TimestampLayout as L;

    fn norm(value: Value, layout: L, zone: Zone) -> Option<String> {
        normalise(&value, &[layout], zone)
    }

    #[test]
    fn every_layout_reads_to_utc_millis() {
        let want = Some("2026-11-22T10:30:45.123Z".to_owned());
        assert_eq!(
            norm(json!("2026-11-22 10:30:45,123"), L::Python, Zone::Utc),
            want
        );
        assert_eq!(
            norm(json!("2026-11-22T10:30:45.123Z"), L::Rfc3339, Zone::Utc),
            want
        );
        assert_eq!(
            norm(
                json!("2026-11-22T12:30:45.123+02:00"),
                L::Rfc3339,
                Zone::Utc
            ),
            want
        );
        assert_eq!(
            norm(json!(1795343445.123), L::EpochSeconds, Zone::Utc),
            want
        );
        assert_eq!(
            norm(json!("1795343445123"), L::EpochMillis, Zone::Utc),
            want
        );
        assert_eq!(
            norm(json!("[22/Nov/2026:11:30:45 +0100]"), L::Clf, Zone::Utc),
            Some("2026-11-22T10:30:45.000Z".to_owned())
        );
        assert_eq!(
            norm(
                json!("Sun Nov 22 10:30:45.123456 2026"),
                L::ApacheError,
                Zone::Utc
            ),
            want
        );
        for text in [
            json!("2026-11-22 10:30:45,123"),
            json!("22/Nov/2026:10:30:45 +0000"),
            json!(1795343445),
            json!(1795343445123u64),
        ] {
            assert!(norm(text.clone(), L::Auto, Zone::Utc).is_some(), "{text}");
        }
    }

    #[test]
    fn times_without_offset_are_read_in_the_given_zone() {
        let zone = Zone::parse("+02:00").unwrap();
        assert_eq!(
            norm(json!("2026-11-22 12:30:45,123"), L::Python, zone),
            Some("2026-11-22T10:30:45.123Z".to_owned())
        );
        // An explicit offset wins over the zone.
        assert_eq!(
            norm(json!("2026-11-22T10:30:45Z"), L::Rfc3339, zone),
            Some("2026-11-22T10:30:45.000Z".to_owned())
        );
        assert!(Zone::parse("Europe/Berlin").unwrap_err().contains("+02:00"));
    }

    #[test]
    fn nonsense_is_not_a_time() {
        for text in [
            "2026-13-22 10:30:45",
            "yesterday",
            "2026-11-22 10:30",
            "2026-11-22T10:30:45+25:00",
        ] {
            assert_eq!(norm(json!(text), L::Auto, Zone::Utc), None, "{text}");
        }
        assert_eq!(
            norm(json!("2026-11-22 10:30:45,123"), L::Rfc3339, Zone::Utc),
            None
        );
    }
}

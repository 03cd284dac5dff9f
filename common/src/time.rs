//! Wall-clock time as the sidecars write it into records, commits and cursors.

use std::time::SystemTime;

/// Now, as RFC 3339 UTC with milliseconds: `2026-11-22T10:30:45.123Z`.
pub fn timestamp_now() -> String {
    humantime::format_rfc3339_millis(SystemTime::now()).to_string()
}

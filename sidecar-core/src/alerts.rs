//! Alerts on what the logs say: the rules file's `alerts:` evaluated over the processed
//! records, fired and resolved, and shown to the report, the query API and the metrics.
//!
//! The processor tags records that meet an alert's `when:` ([`crate::rules::MATCHED_ALERTS_FIELD`]);
//! the [`Evaluator`] here counts them in windows per group, tracks quiet sources, and turns
//! changes into [`Notification`]s that the alerts sink ([`crate::sink::alerts`]) delivers.
//!
//! Easy to get wrong: exactness across restarts. The evaluator's whole state (windows, pending
//! and firing alerts, undelivered notifications) is committed with the forwarder's journal
//! position, and record time is the collector's `collected_at`, not the clock at evaluation. A
//! forwarder killed after it sent an alert but before it committed replays the same records
//! from the same state and sends the same alert (same labels, same `startsAt`), which
//! Alertmanager takes as the alert it already has, not a second one.

mod evaluator;

use std::collections::{BTreeMap, VecDeque};
use std::sync::LazyLock;

use parking_lot::Mutex;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use serde::{Deserialize, Serialize};

pub use self::evaluator::{AlertState, Evaluator, MAX_GROUPS_PER_RULE};

/// A change to tell the alert targets about: an alert firing (sent again while it fires) or
/// resolved.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Notification {
    /// The rule's name (also the `alertname` label).
    pub rule: String,
    /// Every label: `alertname`, `severity`, the rule's labels and the group's.
    pub labels: BTreeMap<String, String>,
    /// `summary` and `description`.
    pub annotations: BTreeMap<String, String>,
    /// When it began firing (ms since the epoch).
    pub starts_ms: i64,
    /// When it stopped (ms since the epoch); `None` while it fires.
    pub resolved_ms: Option<i64>,
}

impl Notification {
    /// `firing` or `resolved`.
    pub fn status(&self) -> &'static str {
        if self.resolved_ms.is_some() {
            "resolved"
        } else {
            "firing"
        }
    }

    /// `alertname{label="value",…}` without `alertname` and `severity`: how the report and
    /// logs name one alert.
    pub fn display_name(&self) -> String {
        let labels: Vec<String> = self
            .labels
            .iter()
            .filter(|(k, _)| k.as_str() != "alertname" && k.as_str() != "severity")
            .map(|(k, v)| format!("{k}={v:?}"))
            .collect();
        if labels.is_empty() {
            self.rule.clone()
        } else {
            format!("{}{{{}}}", self.rule, labels.join(","))
        }
    }
}

/// What the report, `GET /alerts` and the metrics show: the alerts firing now and the latest
/// resolved ones.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Board {
    /// Whether alert rules are being evaluated at all.
    pub enabled: bool,
    /// Alerts firing now.
    pub firing: Vec<Notification>,
    /// The latest resolved alerts, newest last (at most [`RESOLVED_KEPT`]).
    pub resolved: VecDeque<Notification>,
    /// Resolutions not yet shown by a report.
    #[serde(skip)]
    unreported: Vec<Notification>,
}

/// Resolved alerts the board remembers.
pub const RESOLVED_KEPT: usize = 20;

static BOARD: LazyLock<Mutex<Board>> = LazyLock::new(Mutex::default);

/// Per-rule metrics.
struct AlertMetrics {
    firing: Family<Vec<(String, String)>, Gauge>,
    fired: Family<Vec<(String, String)>, Counter>,
    dropped_groups: Family<Vec<(String, String)>, Counter>,
}

static METRICS: LazyLock<AlertMetrics> = LazyLock::new(|| AlertMetrics {
    firing: Family::default(),
    fired: Family::default(),
    dropped_groups: Family::default(),
});

/// Adds the alert metrics to the forwarder's registry.
pub fn register_metrics(registry: &mut Registry) {
    registry.register(
        "forwarder_alerts_firing",
        "Alerts firing now, per rule",
        METRICS.firing.clone(),
    );
    registry.register(
        "forwarder_alerts_fired",
        "Times an alert began firing, per rule",
        METRICS.fired.clone(),
    );
    registry.register(
        "forwarder_alert_groups_refused",
        "Matches not counted because their rule already tracks the most groups it may",
        METRICS.dropped_groups.clone(),
    );
}

fn rule_label(rule: &str) -> Vec<(String, String)> {
    vec![("alertname".to_owned(), rule.to_owned())]
}

/// A copy of the board.
pub fn board() -> Board {
    BOARD.lock().clone()
}

/// Publishes the alerts firing now and the ones that just resolved or began firing; sets the
/// per-rule gauges (every rule in `rules`, so a rule with nothing firing shows 0).
pub(crate) fn publish<'a>(
    rules: impl Iterator<Item = &'a str>,
    firing: Vec<Notification>,
    changes: &[Notification],
) {
    let mut board = BOARD.lock();
    board.enabled = true;
    for rule in rules {
        let count = firing.iter().filter(|n| n.rule == rule).count();
        METRICS
            .firing
            .get_or_create(&rule_label(rule))
            .set(count as i64);
    }
    for change in changes {
        if change.resolved_ms.is_some() {
            board.resolved.push_back(change.clone());
            board.unreported.push(change.clone());
            while board.resolved.len() > RESOLVED_KEPT {
                board.resolved.pop_front();
            }
        }
    }
    board.firing = firing;
}

/// Counts an alert that began firing.
pub(crate) fn count_fired(rule: &str) {
    METRICS.fired.get_or_create(&rule_label(rule)).inc();
}

/// Counts a match its rule had no room to track.
pub(crate) fn count_refused_group(rule: &str) {
    METRICS
        .dropped_groups
        .get_or_create(&rule_label(rule))
        .inc();
}

/// The report's lines on alerts: what fires, and what resolved since the last report. Empty
/// when no alert rule is evaluated.
pub fn report_lines() -> Vec<String> {
    let mut board = BOARD.lock();
    if !board.enabled {
        return Vec::new();
    }
    let mut lines = vec![format!("alerts: {} firing", board.firing.len())];
    for alert in &board.firing {
        lines.push(format!(
            "  FIRING   {} ({}) since {}: {}",
            alert.display_name(),
            alert.labels.get("severity").map_or("-", String::as_str),
            format_ms(alert.starts_ms),
            alert.annotations.get("summary").map_or("", String::as_str)
        ));
    }
    for alert in std::mem::take(&mut board.unreported) {
        lines.push(format!(
            "  RESOLVED {} at {} (fired {})",
            alert.display_name(),
            format_ms(alert.resolved_ms.unwrap_or_default()),
            format_ms(alert.starts_ms)
        ));
    }
    lines
}

/// Milliseconds since the epoch as RFC 3339 (UTC, milliseconds), as Alertmanager takes it.
pub fn format_ms(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .unwrap_or_default()
        .to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

/// RFC 3339 text as milliseconds since the epoch.
pub fn parse_ms(text: &str) -> Option<i64> {
    chrono::DateTime::parse_from_rfc3339(text)
        .ok()
        .map(|t| t.timestamp_millis())
}

/// Now, in milliseconds since the epoch.
pub fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

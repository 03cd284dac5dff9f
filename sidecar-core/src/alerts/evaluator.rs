//! The alert evaluator: windows per group, quiet sources, firing and resolution.
//!
//! Record time is `collected_at` (the collector stamps a whole read with one value, so one
//! parse serves many records); time-driven changes (a window emptying, an absence, a `for:`
//! elapsing, re-sending) happen in [`Evaluator::advance`] on the clock.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::{count_fired, count_refused_group, parse_ms, Notification};
use crate::config::HumanDuration;
use crate::record::Fields;
use crate::rules::{AlertKind, AlertRule, RuleSet};
use crate::sink::OutRecord;

/// Most groups (distinct `group_by` values, or sources for an absence alert) one rule tracks;
/// matches of further groups are counted in `forwarder_alert_groups_refused`, so a field with
/// unbounded values (a request id) cannot grow the forwarder's memory.
pub const MAX_GROUPS_PER_RULE: usize = 1000;

/// Most source names remembered with the rules that watch them.
const MAX_REMEMBERED_SOURCES: usize = 1024;

/// Version of [`AlertState`] as committed in the forwarder's checkpoint.
const STATE_VERSION: u32 = 1;

/// Everything the evaluator knows, committed with the forwarder's position.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AlertState {
    version: u32,
    /// When evaluation first started: sources an absence alert names are quiet since then.
    started_ms: i64,
    /// Rule name → group key → group.
    rules: BTreeMap<String, BTreeMap<String, Group>>,
    /// Notifications not yet taken by every target.
    pub outbox: Vec<Outgoing>,
}

/// A notification and the targets still owed it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Outgoing {
    /// What to send.
    pub notification: Notification,
    /// Names of the targets that have not taken it yet.
    pub targets: BTreeSet<String>,
}

/// One alert instance: a rule and one combination of its `group_by` values.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct Group {
    /// The group's labels (its `group_by` values, or `source_file`).
    labels: BTreeMap<String, String>,
    /// Rate: the matches within the window.
    #[serde(default)]
    recent: Window,
    /// Absence: time of the latest record.
    #[serde(default)]
    last_seen_ms: i64,
    /// Since when the condition holds (waiting out `for:`).
    #[serde(default)]
    pending_since_ms: Option<i64>,
    /// Annotations, filled when the condition began to hold.
    #[serde(default)]
    annotations: BTreeMap<String, String>,
    /// Set while it fires.
    #[serde(default)]
    firing: Option<Firing>,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
struct Firing {
    starts_ms: i64,
    /// When targets were last told (wall clock), for re-sending.
    sent_ms: i64,
}

impl AlertState {
    /// A fresh state; `now_ms` starts the absence clocks.
    fn new(now_ms: i64) -> Self {
        Self {
            version: STATE_VERSION,
            started_ms: now_ms,
            rules: BTreeMap::new(),
            outbox: Vec::new(),
        }
    }
}

/// Evaluates a rule set's alerts.
#[derive(Debug)]
pub struct Evaluator {
    rules: Arc<RuleSet>,
    /// Names of the targets every notification goes to.
    targets: BTreeSet<String>,
    /// Source name → indexes of the alerts watching it.
    watching: HashMap<Box<str>, Arc<[usize]>>,
    /// The last source looked up, and its answer.
    last_watched: Option<(String, Arc<[usize]>)>,
    /// The last `collected_at` text parsed, and its value.
    last_time: (String, i64),
}

impl Evaluator {
    /// An evaluator of `rules`' alerts whose notifications go to `targets`.
    pub fn new(rules: Arc<RuleSet>, targets: BTreeSet<String>) -> Self {
        Self {
            rules,
            targets,
            watching: HashMap::new(),
            last_watched: None,
            last_time: (String::new(), 0),
        }
    }

    /// The rule set.
    pub fn rules(&self) -> &RuleSet {
        &self.rules
    }

    /// The state committed as `saved` (a fresh one when there is none or it cannot be read),
    /// fitted to the current rules: a rule that is gone has its firing alerts resolved; a
    /// source an absence alert names is watched from the start.
    pub fn restore(&self, saved: Option<&Value>, now_ms: i64) -> AlertState {
        let mut state = saved
            .and_then(|v| serde_json::from_value::<AlertState>(v.clone()).ok())
            .filter(|s| s.version == STATE_VERSION)
            .unwrap_or_else(|| AlertState::new(now_ms));
        let known: BTreeSet<&str> = self.rules.alerts().iter().map(AlertRule::name).collect();
        let gone: Vec<String> = state
            .rules
            .keys()
            .filter(|name| !known.contains(name.as_str()))
            .cloned()
            .collect();
        for name in gone {
            for group in state.rules.remove(&name).unwrap_or_default().into_values() {
                if let Some(firing) = group.firing {
                    let notification = Notification {
                        rule: name.clone(),
                        labels: group.labels.clone(),
                        annotations: group.annotations.clone(),
                        starts_ms: firing.starts_ms,
                        resolved_ms: Some(now_ms),
                    };
                    self.send(&mut state, notification);
                }
            }
        }
        for rule in self.rules.alerts() {
            if let AlertKind::Absence { .. } = rule.kind() {
                let groups = state.rules.entry(rule.name().to_owned()).or_default();
                for source in rule.literal_files() {
                    groups.entry(source.clone()).or_insert_with(|| Group {
                        labels: source_labels(source),
                        last_seen_ms: state.started_ms,
                        ..Group::default()
                    });
                }
            }
        }
        state
    }

    /// Counts the records of `batch` into `state`; alerts that begin firing or resolve go to
    /// the outbox.
    pub fn observe(&mut self, state: &mut AlertState, batch: &[OutRecord<'_>]) {
        let rules = Arc::clone(&self.rules);
        // Absence alerts need only the first and last record of each source in the batch.
        let mut sightings: Vec<(usize, &str, i64, i64)> = Vec::new();
        for record in batch {
            let watching = self.watching(record.source_file());
            if watching.is_empty() {
                continue;
            }
            let mut fields: Option<Fields> = None;
            for &index in watching.iter() {
                let rule = &rules.alerts()[index];
                if rule.has_condition() && !record.matched_alert(rule.name()) {
                    continue;
                }
                let at = self.record_time(record);
                match rule.kind() {
                    AlertKind::Rate {
                        count,
                        window,
                        hold,
                    } => {
                        let fields = fields.get_or_insert_with(|| record_fields(rule, record));
                        let timing = (count, window.as_millis() as i64, hold.as_millis() as i64);
                        self.count_match(state, rule, fields, at, timing);
                    }
                    AlertKind::Absence { .. } => {
                        let source = record.source_file();
                        match sightings
                            .iter_mut()
                            .find(|(i, s, _, _)| *i == index && *s == source)
                        {
                            Some(seen) => seen.3 = seen.3.max(at),
                            None => sightings.push((index, source, at, at)),
                        }
                    }
                }
            }
        }
        for (index, source, first, last) in sightings {
            self.seen(state, &rules.alerts()[index], source, first, last);
        }
    }

    /// Applies the clock: windows that emptied resolve, `for:` and absences that elapsed
    /// fire, and alerts still firing are sent again every `resend`.
    pub fn advance(&self, state: &mut AlertState, now_ms: i64, resend: HumanDuration) {
        let resend_ms = resend.0.as_millis() as i64;
        let mut out = Vec::new();
        for rule in self.rules.alerts() {
            let Some(groups) = state.rules.get_mut(rule.name()) else {
                continue;
            };
            groups.retain(|_, group| {
                match rule.kind() {
                    AlertKind::Rate {
                        count,
                        window,
                        hold,
                    } => {
                        let window = window.as_millis() as i64;
                        if holds(group, count, window, now_ms) {
                            if let (None, Some(since)) = (group.firing, group.pending_since_ms) {
                                if now_ms - since >= hold.as_millis() as i64 {
                                    out.push(fire(
                                        rule,
                                        group,
                                        since + hold.as_millis() as i64,
                                        now_ms,
                                    ));
                                }
                            }
                        } else {
                            group.pending_since_ms = None;
                            if let Some(firing) = group.firing.take() {
                                let ended = group.recent.stops_holding_at(count, window);
                                out.push(resolved(
                                    rule,
                                    group,
                                    firing,
                                    ended.clamp(firing.starts_ms, now_ms),
                                ));
                            }
                        }
                    }
                    AlertKind::Absence { after } => {
                        let after = after.as_millis() as i64;
                        if group.firing.is_none() && now_ms - group.last_seen_ms >= after {
                            group.annotations =
                                rule.annotations(&alert_values(rule, group), &Fields::new());
                            out.push(fire(rule, group, group.last_seen_ms + after, now_ms));
                        }
                    }
                }
                if let Some(firing) = group.firing.filter(|f| now_ms - f.sent_ms >= resend_ms) {
                    group.firing = Some(Firing {
                        sent_ms: now_ms,
                        ..firing
                    });
                    out.push(notification(rule, group, firing.starts_ms, None));
                }
                // A group with nothing going on is forgotten (and rebuilt by its next match),
                // except the sources an absence alert watches.
                group.firing.is_some()
                    || group.pending_since_ms.is_some()
                    || matches!(rule.kind(), AlertKind::Absence { .. })
                    || group_is_recent(rule, group, now_ms)
            });
        }
        for notification in out {
            self.send(state, notification);
        }
    }

    /// The alerts firing in `state`, as notifications.
    pub fn firing(&self, state: &AlertState) -> Vec<Notification> {
        let mut out = Vec::new();
        for rule in self.rules.alerts() {
            for group in state
                .rules
                .get(rule.name())
                .into_iter()
                .flat_map(BTreeMap::values)
            {
                if let Some(firing) = group.firing {
                    out.push(notification(rule, group, firing.starts_ms, None));
                }
            }
        }
        out
    }

    /// Rules watching `source`, remembered per name.
    fn watching(&mut self, source: &str) -> Arc<[usize]> {
        // Records come in runs from one source: the last answer usually serves.
        if let Some((name, found)) = &self.last_watched {
            if name == source {
                return Arc::clone(found);
            }
        }
        let found = self.watching_uncached(source);
        let (name, last) = self
            .last_watched
            .get_or_insert_with(|| (String::new(), Arc::clone(&found)));
        name.clear();
        name.push_str(source);
        *last = Arc::clone(&found);
        found
    }

    fn watching_uncached(&mut self, source: &str) -> Arc<[usize]> {
        if let Some(found) = self.watching.get(source) {
            return Arc::clone(found);
        }
        let found: Arc<[usize]> = (0..self.rules.alerts().len())
            .filter(|&i| self.rules.alerts()[i].watches(source))
            .collect();
        if self.watching.len() >= MAX_REMEMBERED_SOURCES {
            self.watching.clear();
        }
        self.watching.insert(source.into(), Arc::clone(&found));
        found
    }

    /// The record's `collected_at` in ms; the clock when it has none.
    fn record_time(&mut self, record: &OutRecord<'_>) -> i64 {
        let Some(text) = record.collected_at() else {
            return super::now_ms();
        };
        if self.last_time.0 != text {
            let Some(ms) = parse_ms(text) else {
                return super::now_ms();
            };
            self.last_time.0.clear();
            self.last_time.0.push_str(text);
            self.last_time.1 = ms;
        }
        self.last_time.1
    }

    /// A match of a rate (or pattern) rule at `at`.
    fn count_match(
        &self,
        state: &mut AlertState,
        rule: &AlertRule,
        fields: &Fields,
        at: i64,
        (count, window, hold): (u32, i64, i64),
    ) {
        let labels = group_labels(rule, fields);
        let key = group_key(&labels);
        let groups = groups_of(state, rule);
        if !groups.contains_key(&key) && groups.len() >= MAX_GROUPS_PER_RULE {
            count_refused_group(rule.name());
            return;
        }
        let group = groups.entry(key).or_insert_with(|| Group {
            labels,
            ..Group::default()
        });
        group.recent.add(at, window);
        if !holds(group, count, window, at) || group.firing.is_some() {
            return;
        }
        let since = *group.pending_since_ms.get_or_insert(at);
        if group.annotations.is_empty() || since == at {
            let mut values = alert_values(rule, group);
            values.insert("count", group.recent.count_at(at, window).to_string());
            group.annotations = rule.annotations(&values, fields);
        }
        if at - since >= hold {
            // Sent "at" record time: a replayed old record makes the next tick send it again,
            // which targets take as the same alert.
            let starts = at.max(since + hold);
            let fired = fire(rule, group, starts, starts);
            self.send(state, fired);
        }
    }

    /// Records of `source` from `first` to `last` for an absence rule: the first resolves it.
    fn seen(&self, state: &mut AlertState, rule: &AlertRule, source: &str, first: i64, last: i64) {
        let groups = groups_of(state, rule);
        // Looked up before inserting: every record of a watched source passes here, and the
        // common case (a known source) must not allocate.
        if !groups.contains_key(source) {
            if groups.len() >= MAX_GROUPS_PER_RULE {
                count_refused_group(rule.name());
                return;
            }
            let group = Group {
                labels: source_labels(source),
                ..Group::default()
            };
            groups.insert(source.to_owned(), group);
        }
        let group = groups.get_mut(source).expect("the group was just made");
        group.last_seen_ms = group.last_seen_ms.max(last);
        if let Some(firing) = group.firing.take() {
            let resolution = resolved(rule, group, firing, first.max(firing.starts_ms));
            self.send(state, resolution);
        }
    }

    /// Puts `notification` in the outbox, owed to every target.
    fn send(&self, state: &mut AlertState, notification: Notification) {
        state.outbox.push(Outgoing {
            notification,
            targets: self.targets.clone(),
        });
    }
}

/// The fields a rule needs of a record: all of them when it groups by or shows a field the
/// record must be decoded for, else only `source_file` (no decoding).
fn record_fields(rule: &AlertRule, record: &OutRecord<'_>) -> Fields {
    let only_source = rule.group_by().iter().all(|f| f == "source_file") && !rule.reads_record();
    if only_source {
        let mut fields = Fields::new();
        fields.insert(
            "source_file".to_owned(),
            Value::String(record.source_file().to_owned()),
        );
        fields
    } else {
        Fields::from(record.fields())
    }
}

/// Whether `count` matches lie within `window` before `now`.
fn holds(group: &Group, count: u32, window: i64, now: i64) -> bool {
    group.recent.count_at(now, window) >= u64::from(count)
}

/// Whether a rate group's latest match is still inside its window (it may hold again soon).
fn group_is_recent(rule: &AlertRule, group: &Group, now: i64) -> bool {
    match rule.kind() {
        AlertKind::Rate { window, .. } => group
            .recent
            .latest_end()
            .is_some_and(|end| end > now - window.as_millis() as i64),
        AlertKind::Absence { .. } => true,
    }
}

/// Slots per window: a rate window counts matches per sixtieth of its length.
const SLOTS_PER_WINDOW: i64 = 60;

/// The matches of a rate group within its window, counted per slot of a sixtieth of the
/// window: a group costs at most 61 slots however large its `count`, and the alert is
/// decided at slot granularity (a match counts until its slot has wholly left the window).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct Window {
    /// `(slot number, matches)`, oldest first; slot `n` covers `[n * width, (n + 1) * width)`.
    slots: VecDeque<(i64, u64)>,
    /// The slot width in ms.
    width: i64,
}

impl Window {
    /// Counts a match at `at`; slots that left the window before the newest one are dropped.
    fn add(&mut self, at: i64, window: i64) {
        self.width = (window / SLOTS_PER_WINDOW).max(1);
        let slot = at.div_euclid(self.width);
        match self.slots.iter().rposition(|&(s, _)| s <= slot) {
            Some(i) if self.slots[i].0 == slot => self.slots[i].1 += 1,
            Some(i) => self.slots.insert(i + 1, (slot, 1)),
            None => self.slots.push_front((slot, 1)),
        }
        let newest = self.slots.back().map_or(at, |&(s, _)| s * self.width);
        while self
            .slots
            .front()
            .is_some_and(|&(s, _)| (s + 1) * self.width <= newest - window)
        {
            self.slots.pop_front();
        }
    }

    /// Matches whose slot still overlaps the window ending at `now`.
    fn count_at(&self, now: i64, window: i64) -> u64 {
        self.slots
            .iter()
            .filter(|&&(s, _)| (s + 1) * self.width > now - window)
            .map(|&(_, n)| n)
            .sum()
    }

    /// When the count falls below `count` as slots leave the window (the moment a firing
    /// alert resolves).
    fn stops_holding_at(&self, count: u32, window: i64) -> i64 {
        let mut total: u64 = self.slots.iter().map(|&(_, n)| n).sum();
        for &(slot, n) in &self.slots {
            total -= n;
            if total < u64::from(count) {
                return (slot + 1) * self.width + window;
            }
        }
        0
    }

    /// The end of the newest slot with a match.
    fn latest_end(&self) -> Option<i64> {
        self.slots.back().map(|&(s, _)| (s + 1) * self.width)
    }
}

fn fire(rule: &AlertRule, group: &mut Group, starts_ms: i64, now_ms: i64) -> Notification {
    group.firing = Some(Firing {
        starts_ms,
        sent_ms: now_ms,
    });
    count_fired(rule.name());
    notification(rule, group, starts_ms, None)
}

fn resolved(rule: &AlertRule, group: &Group, firing: Firing, at: i64) -> Notification {
    notification(rule, group, firing.starts_ms, Some(at))
}

fn notification(
    rule: &AlertRule,
    group: &Group,
    starts_ms: i64,
    resolved_ms: Option<i64>,
) -> Notification {
    let mut labels = BTreeMap::from([
        ("alertname".to_owned(), rule.name().to_owned()),
        ("severity".to_owned(), rule.severity().to_owned()),
    ]);
    labels.extend(rule.labels().iter().map(|(k, v)| (k.clone(), v.clone())));
    labels.extend(group.labels.iter().map(|(k, v)| (k.clone(), v.clone())));
    Notification {
        rule: rule.name().to_owned(),
        labels,
        annotations: group.annotations.clone(),
        starts_ms,
        resolved_ms,
    }
}

/// The values an annotation can use besides the record's fields.
fn alert_values(rule: &AlertRule, group: &Group) -> BTreeMap<&'static str, String> {
    let mut values = BTreeMap::from([("rule", rule.name().to_owned())]);
    match rule.kind() {
        AlertKind::Rate { count, window, .. } => {
            values.insert("count", count.to_string());
            values.insert("window", HumanDuration(window).to_string());
        }
        AlertKind::Absence { after } => {
            values.insert("absent_for", HumanDuration(after).to_string());
        }
    }
    for (k, v) in &group.labels {
        if k == "source_file" {
            values.insert("source_file", v.clone());
        }
    }
    values
}

/// The labels a record's `group_by` values give (absent fields give none).
fn group_labels(rule: &AlertRule, fields: &Fields) -> BTreeMap<String, String> {
    rule.group_by()
        .iter()
        .filter_map(|field| {
            let value = match fields.get(field)? {
                Value::String(s) => s.clone(),
                Value::Null => return None,
                other => other.to_string(),
            };
            Some((field.clone(), value))
        })
        .collect()
}

/// The groups of `rule`, made on its first match.
fn groups_of<'s>(state: &'s mut AlertState, rule: &AlertRule) -> &'s mut BTreeMap<String, Group> {
    if !state.rules.contains_key(rule.name()) {
        state.rules.insert(rule.name().to_owned(), BTreeMap::new());
    }
    state
        .rules
        .get_mut(rule.name())
        .expect("the rule's groups were just made")
}

fn source_labels(source: &str) -> BTreeMap<String, String> {
    BTreeMap::from([("source_file".to_owned(), source.to_owned())])
}

/// One string per label set; `\u{1f}` cannot occur in a label written by a person.
fn group_key(labels: &BTreeMap<String, String>) -> String {
    let mut key = String::new();
    for (k, v) in labels {
        key.push_str(k);
        key.push('\u{1f}');
        key.push_str(v);
        key.push('\u{1f}');
    }
    key
}

#[cfg(test)]
mod tests {
    use super::*;

    const RULES: &str = r#"version: 1
alerts:
  - name: Errors
    kind: rate
    when: {field: log_level, equals: [ERROR]}
    count: 3
    window: 10s
    group_by: [source_file]
    summary: "{count} errors in {window} from {source_file}: {message}"
  - name: Quiet
    kind: absence
    files: [worker.log]
    absent_for: 30s
"#;

    fn evaluator() -> Evaluator {
        let rules = RuleSet::from_yaml_str(RULES, "rules.yaml").unwrap();
        Evaluator::new(Arc::new(rules), BTreeSet::from(["am".to_owned()]))
    }

    fn at(ms: i64) -> String {
        super::super::format_ms(ms)
    }

    fn line(source: &str, ms: i64, error: bool) -> String {
        let tag = if error {
            r#","matched_alerts":["Errors"]"#
        } else {
            ""
        };
        format!(
            r#"{{"source_file":"{source}","collected_at":"{}","log_level":"{}","message":"boom"{tag}}}"#,
            at(ms),
            if error { "ERROR" } else { "INFO" }
        )
    }

    fn observe(e: &mut Evaluator, state: &mut AlertState, lines: &[String]) {
        let batch: Vec<OutRecord<'_>> = lines
            .iter()
            .map(|l| OutRecord::decode(l.as_bytes()))
            .collect();
        e.observe(state, &batch);
    }

    fn taken(state: &mut AlertState) -> Vec<(String, &'static str, i64, Option<i64>)> {
        state
            .outbox
            .drain(..)
            .map(|o| {
                let n = o.notification;
                let status = n.status();
                (n.display_name(), status, n.starts_ms, n.resolved_ms)
            })
            .collect()
    }

    const T0: i64 = 1_800_000_000_000;

    #[test]
    fn a_rate_alert_fires_at_the_nth_match_in_the_window_and_resolves_when_it_empties() {
        let mut e = evaluator();
        let mut state = e.restore(None, T0);
        observe(
            &mut e,
            &mut state,
            &[
                line("error.log", T0, true),
                line("error.log", T0 + 20_000, true),
                line("error.log", T0 + 21_000, true),
            ],
        );
        assert!(taken(&mut state).is_empty(), "3 in 21s is not 3 in 10s");
        observe(
            &mut e,
            &mut state,
            &[
                line("access.log", T0 + 22_000, false),
                line("error.log", T0 + 22_000, true),
            ],
        );
        assert_eq!(
            taken(&mut state),
            [(
                "Errors{source_file=\"error.log\"}".to_owned(),
                "firing",
                T0 + 22_000,
                None
            )]
        );
        assert_eq!(
            e.firing(&state)[0].annotations["summary"],
            "3 errors in 10s from error.log: boom"
        );
        e.advance(
            &mut state,
            T0 + 25_000,
            HumanDuration(std::time::Duration::from_secs(60)),
        );
        assert!(taken(&mut state).is_empty(), "still 3 within 10s of 25s");
        e.advance(
            &mut state,
            T0 + 31_000,
            HumanDuration(std::time::Duration::from_secs(60)),
        );
        let errors: Vec<_> = taken(&mut state)
            .into_iter()
            .filter(|n| n.0.starts_with("Errors"))
            .collect();
        assert_eq!(
            errors,
            [(
                "Errors{source_file=\"error.log\"}".to_owned(),
                "resolved",
                T0 + 22_000,
                Some(T0 + 30_090) /* 10 s after the oldest of the three, to the end of its slot (1/60 of the window) */
            )]
        );
    }

    #[test]
    fn the_same_records_from_the_same_state_give_the_same_alert() {
        let mut e = evaluator();
        let state = e.restore(None, T0);
        let saved = serde_json::to_value(&state).unwrap();
        let lines: Vec<String> = (0..3)
            .map(|i| line("error.log", T0 + i * 1000, true))
            .collect();
        let mut first = e.restore(Some(&saved), T0);
        observe(&mut e, &mut first, &lines);
        let mut again = e.restore(Some(&saved), T0 + 5000);
        observe(&mut e, &mut again, &lines);
        assert_eq!(taken(&mut first), taken(&mut again));
    }

    #[test]
    fn an_absence_alert_fires_after_the_quiet_time_and_resolves_on_the_next_record() {
        let mut e = evaluator();
        let mut state = e.restore(None, T0);
        let resend = HumanDuration(std::time::Duration::from_secs(60));
        e.advance(&mut state, T0 + 29_000, resend);
        assert!(taken(&mut state).is_empty());
        e.advance(&mut state, T0 + 31_000, resend);
        assert_eq!(
            taken(&mut state),
            [(
                "Quiet{source_file=\"worker.log\"}".to_owned(),
                "firing",
                T0 + 30_000,
                None
            )]
        );
        assert_eq!(
            e.firing(&state)[0].annotations["summary"],
            "Quiet: no record from worker.log for 30s"
        );
        e.advance(&mut state, T0 + 95_000, resend);
        assert_eq!(
            taken(&mut state).len(),
            1,
            "sent again after the resend interval"
        );
        observe(
            &mut e,
            &mut state,
            &[line("worker.log", T0 + 96_000, false)],
        );
        assert_eq!(
            taken(&mut state),
            [(
                "Quiet{source_file=\"worker.log\"}".to_owned(),
                "resolved",
                T0 + 30_000,
                Some(T0 + 96_000)
            )]
        );
    }

    #[test]
    fn a_window_keeps_at_most_a_slot_per_sixtieth_whatever_the_count() {
        let mut window = Window::default();
        let minute = 60_000;
        for i in 0..100_000 {
            window.add(T0 + i * 7, minute);
        }
        assert!(window.slots.len() <= 61, "{}", window.slots.len());
        let now = T0 + 99_999 * 7;
        let in_window = window.count_at(now, minute);
        // Exact up to one slot (1 s here) at the old end.
        assert!(
            (minute / 7..=minute / 7 + 1000 / 7 + 1).contains(&(in_window as i64)),
            "{in_window}"
        );
        // An old match arriving late lands in its own slot, in order.
        window.add(now - 30_000, minute);
        assert_eq!(window.count_at(now, minute), in_window + 1);
    }

    #[test]
    fn groups_are_bounded() {
        let yaml = "version: 1\nalerts:\n  - {name: ById, kind: pattern, when: {field: id, exists: true}, group_by: [id]}\n";
        let rules = RuleSet::from_yaml_str(yaml, "rules.yaml").unwrap();
        let mut e = Evaluator::new(Arc::new(rules), BTreeSet::new());
        let mut state = e.restore(None, T0);
        let lines: Vec<String> = (0..MAX_GROUPS_PER_RULE + 50)
            .map(|i| format!(r#"{{"source_file":"a.log","id":"{i}","matched_alerts":["ById"],"collected_at":"{}"}}"#, at(T0)))
            .collect();
        observe(&mut e, &mut state, &lines);
        assert_eq!(state.rules["ById"].len(), MAX_GROUPS_PER_RULE);
    }
}

//! Alert rules on the hot path: a record no alert matches costs no allocation, in the
//! processor (tagging) or in the forwarder (evaluation). dhat's allocator counts every
//! allocation of the process, so this file has one test and no other thread.

use std::collections::BTreeSet;
use std::sync::Arc;

use serde_json::{Map, Value};
use sidecar_core::alerts::Evaluator;
use sidecar_core::record::Fields;
use sidecar_core::rules::RuleSet;
use sidecar_core::sink::OutRecord;

#[global_allocator]
static ALLOCATOR: dhat::Alloc = dhat::Alloc;

fn allocations_during(f: impl FnOnce()) -> u64 {
    let before = dhat::HeapStats::get().total_blocks;
    f();
    dhat::HeapStats::get().total_blocks - before
}

/// Rules with no steps (nothing else allocates) and alerts of every kind on fields the test
/// records have, none of which they meet.
const RULES: &str = r#"version: 1
rules:
  - {name: access, files: [access.log], category: access}
alerts:
  - {name: ServerErrors, kind: rate, files: [access.log], when: {field: status_code, gte: 500}, count: 10, window: 1m, group_by: [source_file]}
  - {name: AdminPath, kind: pattern, when: {field: path, matches: '^/admin/'}}
  - {name: Fatal, kind: pattern, when: {field: message, keywords: [out of memory, panicked at]}}
  - {name: Deletes, kind: rate, when: {field: method, equals: [DELETE]}, count: 5, window: 1m}
  - {name: AccessQuiet, kind: absence, files: [access.log], absent_for: 5m}
"#;

fn record(i: usize) -> Fields {
    serde_json::from_str::<Map<String, Value>>(&format!(
        r#"{{"source_file":"access.log","status_code":200,"path":"/users/{i}","method":"GET","message":"GET /users/{i} -> 200","log_level":"INFO"}}"#
    ))
    .unwrap()
    .into()
}

#[test]
fn records_no_alert_matches_cost_no_allocation() {
    let _profiler = dhat::Profiler::builder().testing().build();
    tagging_a_record_no_alert_matches_allocates_nothing_more_than_without_alerts();
    evaluating_records_no_alert_matches_allocates_nothing_per_record();
}

fn tagging_a_record_no_alert_matches_allocates_nothing_more_than_without_alerts() {
    let with = RuleSet::from_yaml_str(RULES, "with.yaml").unwrap();
    let without_text = RULES[..RULES.find("alerts:").unwrap()].to_owned();
    let without = RuleSet::from_yaml_str(&without_text, "without.yaml").unwrap();
    let matched_with = with.rules_for("access.log");
    let matched_without = without.rules_for("access.log");
    // Warm up: each regex makes its matching cache on first use.
    for _ in 0..2 {
        with.apply_matched(&matched_with, &mut record(0));
        without.apply_matched(&matched_without, &mut record(0));
    }
    let mut records: Vec<Fields> = (0..1000).map(record).collect();
    let mut copies = records.clone();
    let cost_with = allocations_during(|| {
        for r in &mut records {
            with.apply_matched(&matched_with, r);
        }
    });
    let cost_without = allocations_during(|| {
        for r in &mut copies {
            without.apply_matched(&matched_without, r);
        }
    });
    assert_eq!(
        cost_with, cost_without,
        "alerts allocated on records they do not match"
    );
    assert!(records.iter().all(|r| !r.contains_key("matched_alerts")));
    // A record that does match is tagged.
    let mut error = record(1);
    error.insert("status_code", Value::from(503));
    with.apply_matched(&matched_with, &mut error);
    assert_eq!(error["matched_alerts"], serde_json::json!(["ServerErrors"]));
}

fn evaluating_records_no_alert_matches_allocates_nothing_per_record() {
    let rules = Arc::new(RuleSet::from_yaml_str(RULES, "rules.yaml").unwrap());
    let mut evaluator = Evaluator::new(rules, BTreeSet::new());
    let mut state = evaluator.restore(None, 1_800_000_000_000);
    let lines: Vec<String> = (0..4000)
        .map(|i| {
            format!(
                r#"{{"source_file":"access.log","collected_at":"2027-01-15T08:00:{:02}.000Z","status_code":200,"log_level":"INFO","message":"GET /users/{i}"}}"#,
                i / 100 % 60
            )
        })
        .collect();
    // Decoding included: the forwarder decodes every record it ships.
    let cost = |evaluator: &mut Evaluator, state: &mut _, n: usize| {
        allocations_during(|| {
            let batch: Vec<OutRecord<'_>> = lines[..n]
                .iter()
                .map(|l| OutRecord::decode(l.as_bytes()))
                .collect();
            evaluator.observe(state, &batch);
        })
    };
    // The first batch meets the source (its absence group, its rule lookup): not counted.
    cost(&mut evaluator, &mut state, 10);
    let small = cost(&mut evaluator, &mut state, 1000);
    let large = cost(&mut evaluator, &mut state, 4000);
    assert_eq!(
        small, large,
        "allocations grew with the records: {small} for 1000, {large} for 4000"
    );
    assert!(evaluator.firing(&state).is_empty());
}

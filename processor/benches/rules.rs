//! Rules benchmark: records per CPU-second through the processor's per-record work (decode
//! the collected record, run the rules, serialise the processed record), for the default
//! rules, a 50-rule file, and the default rules with redaction of every built-in.
//!
//! Run with: `cargo bench -p processor --bench rules` (`RULES_BENCH_RECORDS=N` to change the
//! 300 000 records per scenario). CPU time is this thread's, from /proc/thread-self/schedstat.
//!
//! Easy to get wrong: measuring the generator. Input lines are built before the clock starts,
//! and the output buffer is reused, as the journal writer's is.

use std::path::Path;
use std::time::Instant;

use sidecar_record::encode;
use sidecar_rules::RuleSet;

/// The demo apps' files and one line layout each, filled by `line`.
const FILES: [&str; 6] = [
    "access.log",
    "error.log",
    "application.log",
    "database-queries.log",
    "job-execution.log",
    "job-metrics.log",
];

/// A small deterministic generator (an LCG): runs compare.
struct Lcg(u64);

impl Lcg {
    fn next(&mut self, n: u64) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (self.0 >> 33) % n
    }
}

/// One realistic line of `file`.
fn line(file: &str, i: u64, rng: &mut Lcg) -> String {
    let ts = format!(
        "2026-11-22 10:{:02}:{:02},{:03}",
        (i / 60) % 60,
        i % 60,
        i % 1000
    );
    match file {
        "access.log" => format!(
            r#"{ts} - {{"type":"response","request_id":"5f0c1a52-{i:08}","method":"GET","path":"/users/{}?page=2","remote_addr":"10.0.0.7:53412","user_agent":"curl/8.5.0","status_code":{},"content_length":61,"processing_time_ms":{}.37}}"#,
            rng.next(1000),
            [200, 201, 304, 404, 500][rng.next(5) as usize],
            rng.next(2000)
        ),
        "error.log" => format!(
            "{ts} - web-api - ERROR - Database connection timeout while listing users for alice{}@example.com (Authorization: Bearer eyJhbGciOi.{i})",
            rng.next(100)
        ),
        "application.log" => format!(
            "{ts} - application - WARNING - User {} not found; retrying with https://svc:s3cret@db.internal/users",
            rng.next(10000)
        ),
        "database-queries.log" => format!(
            r#"{ts} - {{"event":"query_completed","query_id":"q-{i:06}","operation":"SELECT","table":"orders","execution_time_ms":{}.8,"rows_affected":17,"connection_id":3}}"#,
            rng.next(8000)
        ),
        "job-execution.log" => format!(
            r#"{ts} - {{"event":"job_failed","job_id":"job-{i:06}","job_type":"report_generation","worker_id":1,"status":"{}","duration_ms":30412}}"#,
            ["failed", "completed"][rng.next(2) as usize]
        ),
        _ => format!(
            r#"{ts} - {{"event":"job_metrics","job_id":"job-{i:06}","duration_ms":5321,"memory_mb":48.5,"cpu_percent":12.25}}"#
        ),
    }
}

/// Collected-journal records, as the collector writes them.
fn input(records: u64) -> Vec<Vec<u8>> {
    let mut rng = Lcg(0x5EED);
    (0..records)
        .map(|i| {
            let file = FILES[(i % FILES.len() as u64) as usize];
            let record = serde_json::json!({
                "id": format!("00000000000000{:02x}-{}", i % FILES.len() as u64, i * 200),
                "source": file,
                "offset": i * 200,
                "collected_at": "2026-11-22T10:30:45.123Z",
                "line": line(file, i, &mut rng),
            });
            serde_json::to_vec(&record).expect("a JSON value serialises")
        })
        .collect()
}

/// The default rules plus 45 rules: 3 more per demo file (regex, derive, set) and 27 for
/// files no demo app writes, so both matching and non-matching rules are in the set.
fn fifty_rules(default: &str) -> String {
    // Only the rules: the extra ones go at the end of the `rules:` list, before `alerts:` and
    // `tests:` (which would not hold for the extra fields).
    let mut text = default
        .split("\nalerts:")
        .next()
        .and_then(|t| t.split("\ntests:").next())
        .unwrap_or(default)
        .to_owned();
    text.push('\n');
    let mut n = 0;
    for file in FILES {
        for k in 0..3 {
            n += 1;
            text.push_str(&format!(
                "  - name: extra-{n}\n    files: [\"{file}\"]\n    steps:\n      - regex: {{field: message, pattern: '(?P<word{k}>[A-Z][a-z]+)'}}\n      - derive: {{field: bucket{k}, from: log_level, cases: [{{when: {{equals: [ERROR]}}, value: hot}}, {{when: {{keywords: [warn]}}, value: warm}}], default: cold}}\n      - set: {{field: tag{k}, value: {n}}}\n"
            ));
        }
    }
    for i in 0..(45 - n) {
        text.push_str(&format!(
            "  - name: other-{i}\n    files: [\"service-{i}-*.log\", \"*.svc{i}\"]\n    category: svc{i}\n    steps:\n      - regex: {{field: message, pattern: '^(?P<code>E\\d+)'}}\n"
        ));
    }
    text
}

/// The default rules with a redaction of every built-in on the raw line, first.
fn with_redaction(default: &str) -> String {
    let text = default.split("\ntests:").next().unwrap_or(default);
    text.replacen(
        "common:\n",
        "common:\n  - redact: {fields: [line], builtins: [email, bearer_token, basic_auth_url, aws_key, credit_card]}\n",
        1,
    )
}

/// This thread's CPU time so far, in seconds.
fn thread_cpu_seconds() -> f64 {
    std::fs::read_to_string("/proc/thread-self/schedstat")
        .ok()
        .and_then(|text| text.split_whitespace().next()?.parse::<u64>().ok())
        .map_or(f64::NAN, |ns| ns as f64 / 1e9)
}

fn run(name: &str, rules: &RuleSet, input: &[Vec<u8>]) {
    let mut out = Vec::with_capacity(1 << 20);
    let mut kept = 0u64;
    // Warm the memo and the allocator first, as a running stage is.
    for line in input.iter().take(1000) {
        let _ = processor::enrich_fields(rules, line, "2026-11-22T10:30:45.200Z");
    }
    let (cpu0, wall0) = (thread_cpu_seconds(), Instant::now());
    for line in input {
        if let Some(record) = processor::enrich_fields(rules, line, "2026-11-22T10:30:45.200Z") {
            // As the stage writes a record: in key order, in the fast encoder.
            encode::write_fields_with(&mut out, &record, &[]);
            out.push(b'\n');
            kept += 1;
        }
        if out.len() > (1 << 20) {
            out.clear();
        }
    }
    let (cpu, wall) = (thread_cpu_seconds() - cpu0, wall0.elapsed().as_secs_f64());
    println!(
        "{name:<28} {:>9} {kept:>9} {cpu:>8.2} {:>12.0} {:>10.0}",
        input.len(),
        input.len() as f64 / cpu,
        input.len() as f64 / wall
    );
}

fn main() {
    let records = std::env::var("RULES_BENCH_RECORDS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(300_000);
    let default_path = Path::new(env!("CARGO_MANIFEST_DIR")).join("rules/default.yaml");
    let default = std::fs::read_to_string(&default_path).expect("the default rules are readable");
    let compile = |name: &str, text: &str| {
        RuleSet::from_yaml_str(text, name).unwrap_or_else(|e| panic!("{name}: {e}"))
    };
    let sets = [
        ("no rules (baseline)", compile("empty.yaml", "version: 1\n")),
        ("default rules (5 rules)", compile("default.yaml", &default)),
        ("50 rules", compile("fifty.yaml", &fifty_rules(&default))),
        (
            "default + redact (all 5)",
            compile("redact.yaml", &with_redaction(&default)),
        ),
    ];
    assert_eq!(sets[2].1.rule_names().count(), 50);
    let input = input(records);
    let bytes: usize = input.iter().map(Vec::len).sum();
    println!(
        "{records} collected records, {:.1} MB, one thread",
        bytes as f64 / 1e6
    );
    println!(
        "{:<28} {:>9} {:>9} {:>8} {:>12} {:>10}",
        "rules", "records", "kept", "cpu s", "records/cpu-s", "records/s"
    );
    for (name, rules) in &sets {
        run(name, rules, &input);
    }
}

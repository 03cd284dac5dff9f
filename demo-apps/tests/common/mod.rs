//! Helpers shared by the demo-apps integration tests: line parsing against the documented
//! layouts, and running the real binaries.

#![allow(dead_code)] // Each test crate uses a different subset.

use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::LazyLock;
use std::time::{Duration, Instant};

use regex::Regex;
use serde_json::{Map, Value};

/// `2026-11-22 10:30:45,123 - `
pub static PREFIX: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} - ").unwrap());

/// `<logger> - <LEVEL> - <message>` after the prefix.
pub static TEXT_BODY: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"^(?P<logger>[\w.-]+) - (?P<level>DEBUG|INFO|WARNING|ERROR) - (?P<message>.+)$")
        .unwrap()
});

/// The part of a line after the timestamp prefix; panics if the prefix is wrong.
pub fn body(line: &str) -> &str {
    let prefix = PREFIX
        .find(line)
        .unwrap_or_else(|| panic!("no timestamp prefix: {line}"));
    &line[prefix.end()..]
}

/// A JSON-layout line's object; panics if it is not one.
pub fn json_record(line: &str) -> Map<String, Value> {
    match serde_json::from_str(body(line)) {
        Ok(Value::Object(record)) => record,
        other => panic!("not a JSON object ({other:?}): {line}"),
    }
}

/// A text-layout line's `(logger, level, message)`; panics if it does not match.
pub fn text_record(line: &str) -> (String, String, String) {
    // A record's traceback, if any, follows its first line.
    let first = line.lines().next().unwrap_or(line);
    let captures = TEXT_BODY
        .captures(body(first))
        .unwrap_or_else(|| panic!("not a text-layout line: {line}"));
    (
        captures["logger"].to_owned(),
        captures["level"].to_owned(),
        captures["message"].to_owned(),
    )
}

/// The traceback after a record's first line, if it has one.
pub fn traceback(record: &str) -> Option<&str> {
    record.split_once('\n').map(|(_, trace)| trace)
}

/// Log records of `dir/name`, one per timestamped line: the lines after one that have no
/// timestamp (a traceback) belong to its record, joined with `\n`. An absent file has none.
pub fn read_lines(dir: &Path, name: &str) -> Vec<String> {
    match std::fs::read_to_string(dir.join(name)) {
        Ok(text) => {
            assert!(
                text.is_empty() || text.ends_with('\n'),
                "{name} ends mid-line"
            );
            let mut records: Vec<String> = Vec::new();
            for line in text.lines() {
                match records.last_mut() {
                    Some(record) if !PREFIX.is_match(line) => {
                        record.push('\n');
                        record.push_str(line);
                    }
                    _ => records.push(line.to_owned()),
                }
            }
            records
        }
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => Vec::new(),
        Err(error) => panic!("reading {name}: {error}"),
    }
}

/// Panics unless `record` has every one of `fields`.
pub fn assert_fields(record: &Map<String, Value>, fields: &[&str]) {
    for field in fields {
        assert!(
            record.contains_key(*field),
            "missing {field:?} in {record:?}"
        );
    }
}

/// Starts a demo binary with `args`, its stdout and stderr piped.
pub fn spawn(binary: &str, args: &[&str]) -> Child {
    Command::new(binary)
        .args(args)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|error| panic!("starting {binary}: {error}"))
}

/// Sends SIGTERM to `child`, as the kubelet does.
pub fn sigterm(child: &Child) {
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .expect("running kill");
    assert!(status.success(), "kill -TERM failed");
}

/// Waits up to `limit` for `child` to exit; kills it and panics if it does not.
pub fn wait_exit(child: &mut Child, limit: Duration) -> ExitStatus {
    let started = Instant::now();
    loop {
        if let Some(status) = child.try_wait().expect("polling the child") {
            return status;
        }
        if started.elapsed() > limit {
            let _ = child.kill();
            panic!("process {} did not exit within {limit:?}", child.id());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A loopback port that was free a moment ago.
pub fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().port()
}

//! The query API and `forwarder logs` on real processes (issue 6): every parameter and error
//! case of `GET /logs`, `/logs/{source}`, `/sources`, `/stats`; the CLI's output, messages and
//! exit codes; a tail over a journal far larger than the read budget; a follow across segment
//! rotation and retention; the limit on concurrent followers.

mod query_http;

use std::fs;
use std::io::Write as _;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, SystemTime};

use e2e_tests::{bin, wait_until, Pod, StageKind, Writer};
use query_http::{get, metric, FollowStream};
use serde_json::{json, Value};
use sidecar_core::checkpoint::Durability;
use sidecar_core::journal::{list_segments, Cursor, JournalOptions, JournalWriter};
use sidecar_core::query::journal_time;

const DELIVERY_TIMEOUT: Duration = Duration::from_secs(90);

fn seqs(records: &[Value]) -> Vec<u64> {
    records.iter().map(|r| r["seq"].as_u64().unwrap()).collect()
}

fn write_app_lines(pod: &Pod, range: std::ops::Range<u64>) {
    let mut file = fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(pod.path("logs/app.log"))
        .unwrap();
    let mut text = String::new();
    for i in range {
        text.push_str(&format!(
            "2026-11-22 10:30:45,123 - application - WARNING - user {i} not found\n"
        ));
    }
    file.write_all(text.as_bytes()).unwrap();
}

/// A child process that is killed when the test ends, also when an assertion failed first.
struct Reaped(std::process::Child);

impl Reaped {
    fn spawn(command: &mut Command) -> Self {
        Self(command.spawn().unwrap())
    }
}

impl Drop for Reaped {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn logs_cli(args: &[&str]) -> Output {
    Command::new(bin("forwarder"))
        .arg("logs")
        .args(args)
        .env_remove("FORWARDER_INPUT_DIR")
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

fn stdout_lines(out: &Output) -> Vec<String> {
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_owned)
        .collect()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn logs_api_and_cli_filter_format_and_refuse_bad_parameters() {
    let mut pod = Pod::new();
    pod.extra_args.insert(
        StageKind::Forwarder,
        vec!["--api-max-response".into(), "64KiB".into()],
    );
    let mut access = Writer::open(pod.path("logs/access.log"), "access");
    access.write(300);
    write_app_lines(&pod, 0..50);
    let stages = pod.start_all();
    let api = stages[2].api_port;
    pod.wait_delivered(350, DELIVERY_TIMEOUT);
    // Everything after `boundary` is the second batch, for since/until.
    std::thread::sleep(Duration::from_millis(20));
    let boundary = journal_time(SystemTime::now());
    std::thread::sleep(Duration::from_millis(20));
    access.write(100);
    pod.wait_delivered(450, DELIVERY_TIMEOUT);

    // tail, one source, in order.
    let r = get(api, "/logs?source=access.log&tail=5");
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.header("content-type"), Some("application/x-ndjson"));
    assert_eq!(seqs(&r.records()), (395..400).collect::<Vec<_>>());
    assert_eq!(get(api, "/logs?tail=0").body, "");
    // Several sources, repeated or comma-separated.
    for q in [
        "/logs?source=access.log&source=app.log",
        "/logs?source=access.log,app.log&tail=1000",
    ] {
        assert_eq!(
            get(api, &format!("{q}&fields=id")).records().len(),
            450,
            "{q}"
        );
    }
    // level is a minimum; category; grep on the message.
    let errors = get(
        api,
        "/logs?source=access.log&level=error&fields=seq,log_level,status_code",
    )
    .records();
    assert_eq!(errors.len(), 133);
    assert!(errors
        .iter()
        .all(|r| r["log_level"] == "ERROR" && r["status_code"] == 503));
    assert_eq!(
        get(api, "/logs?source=access.log&level=WARNING&fields=seq")
            .records()
            .len(),
        266
    );
    assert_eq!(
        get(api, "/logs?category=application&fields=seq")
            .records()
            .len(),
        50
    );
    let grep = get(api, "/logs?grep=user%204%5B0-9%5D%20not").records();
    assert_eq!(grep.len(), 10);
    assert_eq!(grep[0]["message"], "user 40 not found");
    // fields picks fields.
    for r in get(api, "/logs?source=access.log&tail=3&fields=seq,source_file").records() {
        let keys: Vec<&String> = r.as_object().unwrap().keys().collect();
        assert_eq!(keys, ["seq", "source_file"], "{r}");
    }
    // Text lines, with and without timestamps.
    let text = get(
        api,
        "/logs?source=app.log&tail=2&format=text&timestamps=true",
    );
    assert!(text
        .header("content-type")
        .unwrap()
        .starts_with("text/plain"));
    let lines: Vec<&str> = text.body.lines().collect();
    assert_eq!(lines.len(), 2);
    assert!(lines[1].starts_with("20"), "{}", lines[1]);
    assert!(
        lines[1].contains(" app.log WARNING user 49 not found"),
        "{}",
        lines[1]
    );
    let plain = get(api, "/logs?source=app.log&tail=1&format=text").body;
    assert!(
        plain.starts_with("app.log WARNING user 49 not found"),
        "{plain}"
    );
    // since / until split at the boundary between the two batches.
    let after = get(
        api,
        &format!("/logs?source=access.log&since={boundary}&fields=seq"),
    )
    .records();
    assert_eq!(seqs(&after), (300..400).collect::<Vec<_>>());
    let before = get(
        api,
        &format!("/logs?source=access.log&until={boundary}&tail=1000&fields=seq"),
    );
    assert_eq!(seqs(&before.records()), (0..300).collect::<Vec<_>>());
    assert_eq!(
        get(api, "/logs?source=access.log&since=1h&tail=2")
            .records()
            .len(),
        2
    );
    assert_eq!(get(api, "/logs?until=2020-01-01T00:00:00Z").body, "");

    // Errors name the parameter.
    for (query, status, parameter) in [
        ("/logs?tail=-1", 400, "tail"),
        ("/logs?tail=ten", 400, "tail"),
        ("/logs?since=yesterday", 400, "since"),
        ("/logs?until=soon", 400, "until"),
        ("/logs?grep=(", 400, "grep"),
        ("/logs?level=loud", 400, "level"),
        ("/logs?format=xml", 400, "format"),
        ("/logs?follow=maybe", 400, "follow"),
        ("/logs?colour=red", 400, "colour"),
        ("/logs?source=nope.log", 404, "source"),
        ("/logs/nope.log", 404, "source"),
        ("/logs/access.log?limit=-2", 400, "limit"),
    ] {
        let r = get(api, query);
        assert_eq!(r.status, status, "{query}: {}", r.body);
        let body = r.json();
        assert_eq!(body["parameter"], parameter, "{query}: {body}");
        assert!(
            body["error"].as_str().unwrap().starts_with(parameter),
            "{query}: {body}"
        );
    }
    let since = get(api, "/logs?since=yesterday").json();
    assert!(since["error"]
        .as_str()
        .unwrap()
        .contains("use 30s, 5m, 1h, 7d or RFC 3339"));
    let unknown = get(api, "/logs?source=nope.log").json();
    assert!(
        unknown["error"]
            .as_str()
            .unwrap()
            .contains("known: access.log, app.log"),
        "{unknown}"
    );

    // The last N of one source as a JSON array.
    let last = get(api, "/logs/access.log?limit=3").json();
    assert_eq!(seqs(last.as_array().unwrap()), [397, 398, 399]);
    let capped = get(api, "/logs/access.log?limit=100000");
    assert_eq!(capped.header("x-logs-truncated"), Some("true"));
    assert_eq!(
        capped.json().as_array().unwrap().last().unwrap()["seq"],
        399
    );

    // /sources and /stats.
    let sources = get(api, "/sources").json();
    let by_name = |name: &str| {
        sources["sources"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["name"] == name)
            .unwrap_or_else(|| panic!("{name} in {sources}"))
            .clone()
    };
    assert_eq!(by_name("access.log")["records"], 400);
    assert_eq!(by_name("access.log")["category"], "access");
    assert_eq!(by_name("app.log")["records"], 50);
    assert!(by_name("app.log")["first_at"].as_str().unwrap() <= boundary.as_str());
    let mut stats = Value::Null;
    assert!(wait_until(Duration::from_secs(10), || {
        stats = get(api, "/stats").json();
        stats["forwarder"]["lag_bytes"] == 0
    }));
    assert_eq!(stats["records"], 450);
    assert_eq!(stats["levels"]["ERROR"], 133);
    assert_eq!(stats["levels"]["WARNING"], 133 + 50);
    assert_eq!(stats["categories"]["application"], 50);
    assert!(stats["rate_per_s"].as_f64().unwrap() > 0.0, "{stats}");
    assert!(
        stats["forwarder"]["sinks"].get("archive").is_some(),
        "{stats}"
    );

    // Non-follow answers stop at --api-max-response: a window keeps its start, a tail its end.
    let window = get(api, "/logs?source=access.log");
    assert_eq!(window.header("x-logs-truncated"), Some("true"));
    assert!(window.body.len() <= 64 << 10);
    assert_eq!(window.records()[0]["seq"], 0);
    let tail = get(api, "/logs?source=access.log&tail=400");
    assert_eq!(tail.header("x-logs-truncated"), Some("true"));
    assert_eq!(tail.records().last().unwrap()["seq"], 399);
    assert!(metric(api, "forwarder_query_bytes_read_total") > 0.0);

    // The CLI reads the journal directly...
    let dir = pod.path("processed");
    let dir = dir.to_str().unwrap();
    let out = logs_cli(&["--input-dir", dir, "-n", "3", "-o", "json", "access.log"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let records: Vec<Value> = stdout_lines(&out)
        .iter()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(seqs(&records), [397, 398, 399]);
    let out = logs_cli(&[
        "--input-dir",
        dir,
        "--level",
        "error",
        "-n",
        "2",
        "access.log",
    ]);
    let lines = stdout_lines(&out);
    assert_eq!(lines.len(), 2);
    assert!(
        lines.iter().all(|l| l.starts_with("access.log ERROR ")),
        "{lines:?}"
    );
    assert!(
        !String::from_utf8_lossy(&out.stdout).contains('\x1b'),
        "no color when piped"
    );
    let out = logs_cli(&["--input-dir", dir, "-t", "--grep", "user 4[5-9]", "app.log"]);
    assert_eq!(stdout_lines(&out).len(), 5);
    // On a terminal, lines are colored by level (script(1) from util-linux gives a pty).
    let script = e2e_tests::require_program("script");
    let on_tty = |extra: &str| {
        let command = format!(
            "{} logs --input-dir {dir} -n 1 --level error {extra} access.log",
            bin("forwarder").display()
        );
        let out = Command::new(&script)
            .args(["-qec", &command, "/dev/null"])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    assert!(
        on_tty("").starts_with("\x1b[31maccess.log ERROR"),
        "{:?}",
        on_tty("")
    );
    assert!(on_tty("--no-color").starts_with("access.log ERROR"));
    // ... or a forwarder's API.
    let server = format!("http://127.0.0.1:{api}");
    let out = logs_cli(&["--server", &server, "-n", "2", "app.log"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout_lines(&out).len(), 2);

    // Usage errors: one line on stderr, exit code 2; the same words locally and remotely.
    for (args, expected) in [
        (
            vec!["nope.log"],
            "unknown source \"nope.log\"; known sources: access.log, app.log",
        ),
        (vec!["-n", "-5"], "--tail: must not be negative"),
        (
            vec!["--since", "yesterday"],
            "use 30s, 5m, 1h, 7d or RFC 3339",
        ),
        (vec!["--grep", "("], "--grep: invalid regex"),
        (vec!["--level", "loud"], "--level: unknown level"),
        // An unknown category is refused like an unknown source, not answered with nothing.
        (
            vec!["--category", "nope"],
            "--category: unknown category \"nope\"; known categories: ",
        ),
    ] {
        for remote in [false, true] {
            let mut full = if remote {
                vec!["--server", server.as_str()]
            } else {
                vec!["--input-dir", dir]
            };
            full.extend(&args);
            let out = logs_cli(&full);
            let err = stderr(&out);
            assert_eq!(out.status.code(), Some(2), "{full:?}: {err}");
            assert_eq!(err.lines().count(), 1, "{full:?}: {err}");
            assert!(err.starts_with("forwarder logs: "), "{err}");
            assert!(err.contains(expected), "{full:?}: {err}");
        }
    }
    let out = logs_cli(&["--input-dir", "/nonexistent-journal"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(stderr(&out).contains("--input-dir"), "{}", stderr(&out));
    // A server that is down: the address and the cause, not just "error sending request".
    let out = logs_cli(&["--server", "http://127.0.0.1:1", "-n", "1"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("http://127.0.0.1:1/logs")
            && stderr(&out).contains("Connection refused"),
        "{}",
        stderr(&out)
    );

    // forwarder top: one frame, from the journal or from the API.
    for source in [vec!["--input-dir", dir], vec!["--server", server.as_str()]] {
        let out = Command::new(bin("forwarder"))
            .arg("top")
            .arg("--once")
            .args(&source)
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", stderr(&out));
        let frame = String::from_utf8_lossy(&out.stdout).into_owned();
        let row: Vec<&str> = frame
            .lines()
            .find(|l| l.starts_with("access.log "))
            .unwrap_or_else(|| panic!("{frame}"))
            .split_whitespace()
            .collect();
        // SOURCE RATE/s RECORDS ERROR WARNING INFO DEBUG CATEGORY LAST
        assert_eq!(
            row[2..8],
            ["400", "133", "133", "134", "0", "access"],
            "{frame}"
        );
        assert!(
            frame.contains("forwarder: 0 bytes of the processed journal not delivered yet"),
            "{frame}"
        );
        assert!(frame.contains("sink archive"), "{frame}");
    }

    // A follow, local or through the API, prints new records; Ctrl+C ends it with 130.
    for (round, source) in [vec!["--input-dir", dir], vec!["--server", server.as_str()]]
        .into_iter()
        .enumerate()
    {
        let log = pod.path(&format!("cli-follow-{round}.out"));
        let mut follow = Reaped::spawn(
            Command::new(bin("forwarder"))
                .arg("logs")
                .args(&source)
                .args(["-f", "-n", "1", "app.log"])
                .stdout(fs::File::create(&log).unwrap())
                .stderr(Stdio::null()),
        );
        let lines = || fs::read_to_string(&log).unwrap().lines().count();
        assert!(wait_until(Duration::from_secs(10), || lines() == 1));
        let first = 50 + 2 * round as u64;
        write_app_lines(&pod, first..first + 2);
        assert!(
            wait_until(DELIVERY_TIMEOUT, || lines() == 3),
            "{source:?}: {}",
            fs::read_to_string(&log).unwrap()
        );
        let last = fs::read_to_string(&log).unwrap();
        let expected = format!("app.log WARNING user {} not found", first + 1);
        assert!(
            last.lines().last().unwrap().starts_with(&expected),
            "{last}"
        );
        Command::new("kill")
            .args(["-INT", &follow.0.id().to_string()])
            .status()
            .unwrap();
        let mut status = None;
        assert!(wait_until(Duration::from_secs(5), || {
            status = follow.0.try_wait().unwrap();
            status.is_some()
        }));
        assert_eq!(status.unwrap().code(), Some(130), "{source:?}");
    }
}

/// A processed journal written in-test with the stages' own journal writer.
fn journal(dir: &Path, segment_max_bytes: u64) -> JournalWriter<u64> {
    let options = JournalOptions {
        segment_max_bytes,
        durability: Durability::PageCache,
        retention_max_bytes: 0,
        retention_max_age: Duration::ZERO,
        readers: vec!["forwarder".into()],
        ..JournalOptions::default()
    };
    JournalWriter::open(dir, options).unwrap().0
}

fn push(w: &mut JournalWriter<u64>, n: u64) {
    w.push(&json!({
        "id": format!("00000000000000aa-{n}"), "n": n, "source_file": "big.log",
        "collected_at": journal_time(SystemTime::now()),
        "log_level": if n.is_multiple_of(1000) { "ERROR" } else { "INFO" }, "log_category": "bulk",
        "message": format!("record {n} padded to look like a real line of an application log"),
    }));
}

fn numbers(lines: &[String]) -> Vec<u64> {
    lines
        .iter()
        .map(|l| {
            serde_json::from_str::<Value>(l).unwrap()["n"]
                .as_u64()
                .unwrap()
        })
        .collect()
}

#[test]
fn tail_reads_only_the_end_of_a_journal_far_larger_than_its_read_budget() {
    let mut pod = Pod::new();
    let dir = pod.path("processed");
    let mut w = journal(&dir, 4 << 20);
    const RECORDS: u64 = 120_000;
    for n in 0..RECORDS {
        push(&mut w, n);
        if n % 5000 == 4999 {
            w.commit(&n).unwrap();
        }
    }
    w.commit(&RECORDS).unwrap();
    let journal_bytes: u64 = list_segments(&dir)
        .unwrap()
        .iter()
        .map(|&s| {
            fs::metadata(sidecar_core::journal::segment_path(&dir, s))
                .unwrap()
                .len()
        })
        .sum();
    assert!(journal_bytes > 20 << 20, "{journal_bytes}");
    // The forwarder has shipped it all already; only queries read it now.
    Cursor::new(w.end(), json!({ "sinks": {} }))
        .store(&dir, "forwarder", Durability::PageCache)
        .unwrap();
    let forwarder = pod.start(StageKind::Forwarder);
    let api = forwarder.api_port;

    let r = get(api, "/logs?tail=10");
    let lines: Vec<String> = r.body.lines().map(str::to_owned).collect();
    assert_eq!(numbers(&lines), (RECORDS - 10..RECORDS).collect::<Vec<_>>());
    let read: u64 = r.header("x-logs-bytes-read").unwrap().parse().unwrap();
    assert!(
        read <= 64 << 10,
        "read {read} of {journal_bytes} bytes for tail=10"
    );
    assert_eq!(metric(api, "forwarder_query_bytes_read_total"), read as f64);
    // A sparse filter reads back only as far as it needs: 3 ERROR records are 3000 back.
    let r = get(api, "/logs?tail=3&level=error");
    let lines: Vec<String> = r.body.lines().map(str::to_owned).collect();
    assert_eq!(numbers(&lines), [117_000, 118_000, 119_000]);
    let read: u64 = r.header("x-logs-bytes-read").unwrap().parse().unwrap();
    assert!(read < journal_bytes / 20, "read {read} of {journal_bytes}");
    // The CLI reads the same way.
    let out = logs_cli(&[
        "--input-dir",
        dir.to_str().unwrap(),
        "-n",
        "2",
        "-o",
        "json",
    ]);
    assert_eq!(numbers(&stdout_lines(&out)), [RECORDS - 2, RECORDS - 1]);
}

#[test]
fn a_follow_survives_segment_rotation_and_deletion_and_followers_are_limited() {
    let mut pod = Pod::new();
    pod.extra_args.insert(
        StageKind::Forwarder,
        vec!["--api-max-followers".into(), "2".into()],
    );
    fs::write(pod.path("forwarder.yaml"), "report:\n  interval: 1h\n").unwrap();
    let dir = pod.path("processed");
    let mut w = journal(&dir, 2048);
    push(&mut w, 0);
    w.commit(&0).unwrap();
    let forwarder = pod.start(StageKind::Forwarder);
    let api = forwarder.api_port;

    let follow = FollowStream::open(api, "/logs?follow=true&tail=0");
    assert_eq!(follow.status, 200);
    let cli_out = pod.path("cli-follow.out");
    let mut cli = Reaped::spawn(
        Command::new(bin("forwarder"))
            .args([
                "logs",
                "--input-dir",
                dir.to_str().unwrap(),
                "-f",
                "-n",
                "0",
                "-o",
                "json",
            ])
            .stdout(fs::File::create(&cli_out).unwrap())
            .stderr(Stdio::null()),
    );
    std::thread::sleep(Duration::from_millis(500));
    // A third follower (the CLI reads files, not the API) is over the limit of 2.
    let second = FollowStream::open(api, "/logs?follow=true&source=big.log&level=error&tail=0");
    assert_eq!(second.status, 200);
    let refused = FollowStream::open(api, "/logs?follow=true");
    assert_eq!(refused.status, 429);
    let body: Value = serde_json::from_str(&refused.refused_body).unwrap();
    assert_eq!(body["parameter"], "follow");
    assert_eq!(metric(api, "forwarder_query_followers"), 2.0);

    // 1000 records over ~100 segments; the forwarder consumes them, so retention deletes
    // segments behind it while the followers read.
    for batch in 0..100u64 {
        for i in 0..10 {
            push(&mut w, 1 + batch * 10 + i);
        }
        w.commit(&batch).unwrap();
        w.housekeeping();
        std::thread::sleep(Duration::from_millis(20));
    }
    let lines = follow.take(1000, Duration::from_secs(60));
    assert_eq!(numbers(&lines), (1..=1000).collect::<Vec<_>>());
    let errors = second.take(1, Duration::from_secs(10));
    assert_eq!(numbers(&errors), [1000]);
    assert!(
        wait_until(Duration::from_secs(10), || {
            w.housekeeping();
            list_segments(&dir).unwrap()[0] > 50
        }),
        "retention deleted consumed segments: {:?}",
        list_segments(&dir).unwrap()
    );
    assert!(wait_until(Duration::from_secs(20), || {
        fs::read_to_string(&cli_out).unwrap().lines().count() == 1000
    }));
    let cli_lines: Vec<String> = fs::read_to_string(&cli_out)
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect();
    assert_eq!(numbers(&cli_lines), (1..=1000).collect::<Vec<_>>());
    Command::new("kill")
        .args(["-INT", &cli.0.id().to_string()])
        .status()
        .unwrap();
    assert!(wait_until(Duration::from_secs(5), || cli
        .0
        .try_wait()
        .unwrap()
        .is_some_and(|s| s.code() == Some(130))));

    // A follower that leaves frees its slot.
    follow.close();
    let mut again = None;
    assert!(wait_until(Duration::from_secs(10), || {
        let f = FollowStream::open(api, "/logs?follow=true&tail=0");
        let ok = f.status == 200;
        again = Some(f);
        ok
    }));
    drop(again);
    drop(second);
}

#[test]
fn a_stalled_follower_neither_slows_the_pipeline_nor_holds_back_retention() {
    let mut pod = Pod::new();
    fs::write(pod.path("forwarder.yaml"), "report:\n  interval: 1h\n").unwrap();
    let dir = pod.path("processed");
    let mut w = journal(&dir, 256 << 10);
    push(&mut w, 0);
    w.commit(&0).unwrap();
    let forwarder = pod.start(StageKind::Forwarder);
    let api = forwarder.api_port;
    // A client that asks for everything, following, and then never reads.
    let mut stalled = std::net::TcpStream::connect(("127.0.0.1", api)).unwrap();
    stalled
        .write_all(b"GET /logs?follow=true HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    assert!(wait_until(Duration::from_secs(5), || metric(
        api,
        "forwarder_query_followers"
    ) == 1.0));
    // ~20 MiB: far more than the socket buffers between it and the server hold.
    const RECORDS: u64 = 100_000;
    for n in 1..=RECORDS {
        push(&mut w, n);
        if n % 5000 == 0 {
            w.commit(&n).unwrap();
            w.housekeeping();
        }
    }
    let end = w.end();
    // The forwarder read all of it, and retention deleted what it consumed, although the
    // follower is stuck near the start.
    let forwarded = || {
        Cursor::<Value>::load(&dir, "forwarder")
            .unwrap()
            .is_some_and(|c| c.position == end)
    };
    assert!(wait_until(Duration::from_secs(60), forwarded));
    assert!(wait_until(Duration::from_secs(10), || {
        w.housekeeping();
        let segments = list_segments(&dir).unwrap();
        segments.len() <= 2 && segments[0] > 10
    }));
    // Other queries are answered meanwhile.
    let r = get(api, "/logs?tail=1");
    let lines: Vec<String> = r.body.lines().map(str::to_owned).collect();
    assert_eq!(numbers(&lines), [RECORDS]);
    assert_eq!(metric(api, "forwarder_query_followers"), 1.0);
    drop(stalled);
}

/// A node-mode record: every container's file is `0.log`, and the processor names the
/// container in its `kubernetes` object.
fn push_container_line(w: &mut JournalWriter<u64>, n: u64, container: &str, stream: &str) {
    w.push(&json!({
        "id": format!("00000000000000bb-{n}"), "n": n, "source_file": "0.log",
        "collected_at": journal_time(SystemTime::now()), "stream": stream,
        "logged_at": "2026-12-06T10:30:45.123456789Z", "log_level": "INFO",
        "message": format!("{container} {stream} line {n}"),
        "kubernetes": {
            "namespace": "shop", "pod_name": format!("shop-{container}-0"), "pod_uid": "5c1d-77",
            "container_name": container, "node_name": "node-1", "labels": {"app": "shop"},
        },
    }));
}

#[test]
fn logs_and_the_api_select_one_containers_stderr_lines() {
    let mut pod = Pod::new();
    fs::write(pod.path("forwarder.yaml"), "report:\n  interval: 1h\n").unwrap();
    let dir = pod.path("processed");
    let mut w = journal(&dir, 4096);
    // Two containers of two pods, each writing both streams, interleaved across segments; a
    // file's record without a kubernetes object among them.
    let mut web_stderr = Vec::new();
    for n in 0..120u64 {
        let container = if n % 2 == 0 { "web" } else { "db" };
        let stream = if n % 3 == 0 { "stderr" } else { "stdout" };
        if container == "web" && stream == "stderr" {
            web_stderr.push(n);
        }
        push_container_line(&mut w, n, container, stream);
        if n % 10 == 9 {
            w.push(&json!({
                "n": 1000 + n, "source_file": "access.log", "stream": "stderr",
                "collected_at": journal_time(SystemTime::now()), "message": "no pod here",
            }));
            w.commit(&n).unwrap();
        }
    }
    w.commit(&120).unwrap();
    assert!(list_segments(&dir).unwrap().len() > 3);
    assert_eq!(web_stderr.len(), 20);
    Cursor::new(w.end(), json!({ "sinks": {} }))
        .store(&dir, "forwarder", Durability::PageCache)
        .unwrap();
    let forwarder = pod.start(StageKind::Forwarder);
    let api = forwarder.api_port;
    let input_dir = dir.to_str().unwrap();

    // From the journal, and through the API, with the flags or the parameters.
    let local = logs_cli(&[
        "--input-dir",
        input_dir,
        "--stderr",
        "--container",
        "web",
        "-o",
        "json",
    ]);
    assert_eq!(local.status.code(), Some(0), "{}", stderr(&local));
    assert_eq!(numbers(&stdout_lines(&local)), web_stderr);
    let server = format!("http://127.0.0.1:{api}");
    let remote = logs_cli(&["--server", &server, "--stderr", "-c", "web", "-o", "json"]);
    assert_eq!(remote.status.code(), Some(0), "{}", stderr(&remote));
    assert_eq!(numbers(&stdout_lines(&remote)), web_stderr);
    let r = get(api, "/logs?container=web&stream=stderr");
    assert_eq!(r.status, 200, "{}", r.body);
    let lines: Vec<String> = r.body.lines().map(str::to_owned).collect();
    assert_eq!(numbers(&lines), web_stderr);
    for record in r.records() {
        assert_eq!(record["kubernetes"]["container_name"], "web");
        assert_eq!(record["stream"], "stderr");
    }
    // A tail counts only the container's lines, and text shows their messages.
    let text = logs_cli(&[
        "--input-dir",
        input_dir,
        "--stderr",
        "--container",
        "web",
        "-n",
        "2",
    ]);
    let text_lines = stdout_lines(&text);
    assert_eq!(text_lines.len(), 2, "{text_lines:?}");
    assert!(
        text_lines[0].starts_with("0.log INFO    web stderr line 108"),
        "{}",
        text_lines[0]
    );
    assert!(
        text_lines[1].starts_with("0.log INFO    web stderr line 114"),
        "{}",
        text_lines[1]
    );

    // Several containers, pods and namespaces: any of them.
    let both = get(api, "/logs?container=web,db&stream=stderr&fields=n").records();
    assert_eq!(both.len(), 40);
    let by_pod = logs_cli(&[
        "--input-dir",
        input_dir,
        "--pod",
        "shop-db-0",
        "--pod",
        "shop-web-0",
        "--namespace",
        "shop",
        "-o",
        "json",
        "--fields",
        "n",
    ]);
    assert_eq!(stdout_lines(&by_pod).len(), 120, "{}", stderr(&by_pod));
    assert_eq!(get(api, "/logs?namespace=kube-system").body, "");

    // Bad names are refused with the parameter or flag named.
    let r = get(api, "/logs?container=Web");
    assert_eq!(r.status, 400, "{}", r.body);
    assert_eq!(r.json()["parameter"], "container");
    assert_eq!(get(api, "/logs?pod=").json()["parameter"], "pod");
    let bad = logs_cli(&["--input-dir", input_dir, "--namespace", "kube_system"]);
    assert_eq!(bad.status.code(), Some(2));
    assert_eq!(
        stderr(&bad).trim(),
        "forwarder logs: --namespace: \"kube_system\" is not a Kubernetes namespace name (lowercase letters, digits and '-', at most 63 characters)"
    );

    // A container named where a source goes: the source error, and which flag was meant.
    let named = logs_cli(&["--input-dir", input_dir, "--stderr", "web"]);
    assert_eq!(named.status.code(), Some(2));
    assert_eq!(
        stderr(&named).trim(),
        "forwarder logs: unknown source \"web\"; known sources: 0.log, access.log; \"web\" is a container: use --container web"
    );
    let named = logs_cli(&["--server", &server, "web"]);
    assert_eq!(named.status.code(), Some(2));
    assert_eq!(
        stderr(&named).trim(),
        "forwarder logs: unknown source \"web\"; known sources: 0.log, access.log; \"web\" is a container: use --container web"
    );
    // Any other unknown source keeps its error as it was.
    let unknown = logs_cli(&["--input-dir", input_dir, "nope.log"]);
    assert_eq!(unknown.status.code(), Some(2));
    assert_eq!(
        stderr(&unknown).trim(),
        "forwarder logs: unknown source \"nope.log\"; known sources: 0.log, access.log"
    );
}

//! The clickhouse sink on the real binaries against a real ClickHouse server (18.16, Debian's
//! `clickhouse-server`; scripts/install-test-deps.sh installs it). (Issue #16.)
//!
//! Each test starts its own server on free loopback ports with its data in the test's temp
//! dir, creates the table from `docs/clickhouse-table.sql` (so the documented layout is the
//! one tested), and stops the server by its PID when done.

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use e2e_tests::{
    exactly_once, free_port, http_get, metric, require_program, unix_millis, wait_until, Pod,
    StageKind, Writer,
};
use serde_json::Value;

const TIMEOUT: Duration = Duration::from_secs(30);

/// A clickhouse-server process, killed (by PID) and reaped on drop.
struct ClickHouse {
    child: Child,
    port: u16,
    log: PathBuf,
}

impl ClickHouse {
    /// Starts a server with the config of /work/shared/SERVERS.md under `dir`, and waits for
    /// `/ping`.
    fn start(dir: &Path) -> Self {
        let program = require_program("clickhouse-server");
        let (http_port, tcp_port) = (free_port(), free_port());
        let d = dir.display();
        std::fs::create_dir_all(dir.join("data")).unwrap();
        std::fs::write(
            dir.join("config.xml"),
            format!(
                r#"<?xml version="1.0"?><yandex>
 <logger><level>information</level><console>1</console></logger>
 <listen_host>127.0.0.1</listen_host><http_port>{http_port}</http_port><tcp_port>{tcp_port}</tcp_port>
 <path>{d}/data/</path><tmp_path>{d}/data/tmp/</tmp_path>
 <user_files_path>{d}/data/user_files/</user_files_path>
 <format_schema_path>{d}/data/format_schemas/</format_schema_path>
 <users_config>{d}/users.xml</users_config>
 <default_profile>default</default_profile><default_database>default</default_database>
 <mark_cache_size>268435456</mark_cache_size></yandex>
"#
            ),
        )
        .unwrap();
        // Without <profiles> or <quotas> the server refuses to start.
        std::fs::write(
            dir.join("users.xml"),
            r#"<?xml version="1.0"?><yandex><profiles><default/></profiles>
 <users><default><password></password><networks><ip>127.0.0.1</ip><ip>::1</ip></networks>
  <profile>default</profile><quota>default</quota></default></users>
 <quotas><default/></quotas></yandex>
"#,
        )
        .unwrap();
        let log = dir.join("clickhouse.log");
        let out = std::fs::File::create(&log).unwrap();
        let child = Command::new(program)
            .arg(format!("--config-file={d}/config.xml"))
            .current_dir(dir)
            .stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .spawn()
            .unwrap();
        let mut server = Self {
            child,
            port: http_port,
            log,
        };
        let up = wait_until(Duration::from_secs(20), || {
            matches!(http_get(http_port, "/ping"), Ok((200, _)))
                || server.child.try_wait().unwrap().is_some()
        });
        assert!(
            up && server.child.try_wait().unwrap().is_none(),
            "clickhouse-server did not come up; log:\n{}",
            std::fs::read_to_string(&server.log).unwrap_or_default()
        );
        server
    }

    /// POSTs `sql`; returns the status and the body.
    fn post(&self, sql: &str) -> (u16, String) {
        let mut stream = TcpStream::connect(("127.0.0.1", self.port)).unwrap();
        stream.set_read_timeout(Some(TIMEOUT)).unwrap();
        write!(
            stream,
            "POST / HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{sql}",
            sql.len()
        )
        .unwrap();
        let mut reply = String::new();
        stream.read_to_string(&mut reply).unwrap();
        let status = reply[9..12].parse().unwrap();
        let body = reply.split_once("\r\n\r\n").map_or("", |(_, b)| b);
        let body = if reply[..reply.len() - body.len()]
            .to_ascii_lowercase()
            .contains("transfer-encoding: chunked")
        {
            dechunk(body)
        } else {
            body.to_owned()
        };
        (status, body)
    }

    /// Runs `sql`, which must succeed.
    fn run(&self, sql: &str) -> String {
        let (status, body) = self.post(sql);
        assert_eq!(status, 200, "{sql}: {body}");
        body
    }

    fn number(&self, sql: &str) -> u64 {
        self.run(sql).trim().parse().unwrap()
    }

    /// Creates `table` from the repository's layout, without the columns in `without`.
    fn create_table(&self, table: &str, without: &[&str]) {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/clickhouse-table.sql");
        let sql = std::fs::read_to_string(path).unwrap();
        let sql: String = sql
            .lines()
            .filter(|l| {
                let column = l.split_whitespace().next().unwrap_or("");
                !without.contains(&column)
            })
            .map(|l| format!("{l}\n"))
            .collect();
        let sql = sql.replace("EXISTS logs", &format!("EXISTS {table}"));
        assert!(sql.contains(table));
        self.run(&sql);
    }
}

/// The body of a chunked reply: `<hex size>\r\n<bytes>\r\n`, until a chunk of size 0.
fn dechunk(mut rest: &str) -> String {
    let mut body = String::new();
    while let Some((size, tail)) = rest.split_once("\r\n") {
        let size = usize::from_str_radix(size.trim(), 16).unwrap();
        if size == 0 {
            break;
        }
        body.push_str(&tail[..size]);
        rest = &tail[size + 2..];
    }
    body
}

impl Drop for ClickHouse {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A loopback proxy in front of ClickHouse that holds each reply back for a while, so that a
/// kill -9 of the forwarder lands after the server inserted a request's rows and before the
/// forwarder heard of it: the case that repeats an insert after the restart.
struct SlowReplies {
    port: u16,
    stop: Arc<AtomicBool>,
}

impl SlowReplies {
    fn start(upstream: u16, delay: Duration) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        listener.set_nonblocking(true).unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = stop.clone();
        std::thread::spawn(move || {
            while !stopped.load(Ordering::Relaxed) {
                let Ok((client, _)) = listener.accept() else {
                    std::thread::sleep(Duration::from_millis(5));
                    continue;
                };
                client.set_nonblocking(false).unwrap();
                let server = TcpStream::connect(("127.0.0.1", upstream)).unwrap();
                let (mut to_server, mut from_client) =
                    (server.try_clone().unwrap(), client.try_clone().unwrap());
                std::thread::spawn(move || std::io::copy(&mut from_client, &mut to_server));
                let (mut from_server, mut to_client) = (server, client);
                std::thread::spawn(move || {
                    let mut buf = vec![0; 64 * 1024];
                    while let Ok(n @ 1..) = from_server.read(&mut buf) {
                        std::thread::sleep(delay);
                        if to_client.write_all(&buf[..n]).is_err() {
                            break;
                        }
                    }
                });
            }
        });
        Self { port, stop }
    }
}

impl Drop for SlowReplies {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// The forwarder's config: the clickhouse sink (to `port`) and the file sink `archive` (the
/// reference of what was read from the journal).
fn configure(pod: &Pod, port: u16, table: &str, extra: &str) {
    std::fs::write(
        pod.path("forwarder.yaml"),
        format!(
            "report:\n  interval: 1s\nsinks:\n  - type: clickhouse\n    url: http://127.0.0.1:{}\n    table: {table}\n    retry: {{initial_backoff: 50ms, max_backoff: 300ms}}\n{extra}  - type: file\n    name: archive\n    directory: {}\n",
            port,
            pod.path("out").display()
        ),
    )
    .unwrap();
}

fn wait_for(what: &str, condition: impl FnMut() -> bool) {
    assert!(
        wait_until(TIMEOUT, condition),
        "timed out waiting for {what}"
    );
}

#[test]
fn kill_9_during_inserts_leaves_each_record_once_under_final() {
    let mut pod = Pod::new();
    let server = ClickHouse::start(&pod.path("clickhouse"));
    server.create_table("logs", &[]);
    // Repeats stay visible without FINAL, to show that they happened and that FINAL hides them.
    server.run("SYSTEM STOP MERGES");
    let proxy = SlowReplies::start(server.port, Duration::from_millis(250));
    configure(
        &pod,
        proxy.port,
        "logs",
        "    batch: {max_records: 100, linger: 20ms}\n",
    );
    let mut app = Writer::open(pod.path("logs/access.log"), "access");
    app.write(1500);
    let mut stages = pod.start_all();
    // Kill the forwarder three times just after an insert, restarting it each time.
    for at in [300, 700, 1100] {
        wait_for(&format!("{at} rows"), || {
            server.number("SELECT count() FROM logs") >= at
        });
        stages.pop().unwrap().kill9();
        stages.push(pod.start(StageKind::Forwarder));
    }
    app.write(500);
    wait_for("2000 ids", || {
        server.number("SELECT uniqExact(id) FROM logs") >= 2000
    });
    let sent = pod.wait_delivered(2000, TIMEOUT);
    let problems = exactly_once(&sent, &[("access", 2000)]);
    assert!(problems.is_empty(), "{problems}");
    assert_eq!(server.number("SELECT count() FROM logs FINAL"), 2000);
    assert_eq!(server.number("SELECT uniqExact(id) FROM logs"), 2000);
    let rows = server.number("SELECT count() FROM logs");
    assert!(rows > 2000, "the kills repeated no insert ({rows} rows)");
    let sent_ids: BTreeSet<String> = sent
        .iter()
        .map(|r| r["id"].as_str().unwrap().to_owned())
        .collect();
    let stored_ids: BTreeSet<String> = server
        .run("SELECT id FROM logs FINAL FORMAT TSV")
        .lines()
        .map(str::to_owned)
        .collect();
    let missing: Vec<_> = sent_ids.difference(&stored_ids).take(5).collect();
    let extra: Vec<_> = stored_ids.difference(&sent_ids).take(5).collect();
    assert!(
        missing.is_empty() && extra.is_empty(),
        "ids missing from ClickHouse: {missing:?}; not sent: {extra:?}"
    );

    // The typed columns of one record, against the record the archive holds.
    let sample = &sent[1234];
    let id = sample["id"].as_str().unwrap();
    let row: Value = serde_json::from_str(&server.run(&format!(
        "SELECT source_file, toUnixTimestamp(collected_at) AS secs, collected_at_ms, timestamp, \
         log_level, log_category, message, stream, kubernetes_namespace, fields \
         FROM logs FINAL WHERE id = '{id}' FORMAT JSONEachRow"
    )))
    .unwrap();
    assert_eq!(row["source_file"], "access.log");
    assert_eq!(row["source_file"], sample["source_file"]);
    let millis = unix_millis(sample["collected_at"].as_str().unwrap());
    // JSONEachRow quotes 64-bit integers.
    assert_eq!(row["collected_at_ms"], millis.to_string());
    assert_eq!(row["secs"].as_u64().unwrap() as i64, millis / 1000);
    for column in ["timestamp", "log_level", "log_category"] {
        assert!(sample[column].is_string(), "{column}: {sample}");
        assert_eq!(row[column], sample[column], "{column}");
    }
    assert_eq!(
        row["message"],
        sample
            .get("message")
            .cloned()
            .unwrap_or(Value::String(String::new()))
    );
    assert_eq!(row["stream"], "");
    assert_eq!(row["kubernetes_namespace"], "");
    let fields: Value = serde_json::from_str(row["fields"].as_str().unwrap()).unwrap();
    assert_eq!(&fields, sample);
}

#[test]
fn a_table_missing_a_column_names_it_and_loses_nothing_once_it_is_added() {
    let mut pod = Pod::new();
    let server = ClickHouse::start(&pod.path("clickhouse"));
    server.create_table("logs", &["stream"]);
    configure(
        &pod,
        server.port,
        "logs",
        "    batch: {max_records: 50, linger: 20ms}\n",
    );
    let mut app = Writer::open(pod.path("logs/access.log"), "access");
    app.write(200);
    let stages = pod.start_all();
    let forwarder = &stages[2];
    wait_for("the schema error metric", || {
        metric(
            forwarder.port,
            "forwarder_sink_schema_errors_total{sink=\"clickhouse\",column=\"stream\"}",
        ) >= 2.0
    });
    let log = std::fs::read_to_string(&forwarder.log).unwrap();
    let line = log
        .lines()
        .find(|l| l.contains("ERROR") && l.contains("does not fit the rows"))
        .unwrap_or_else(|| panic!("no ERROR line naming the table; log:\n{log}"));
    assert!(
        line.contains("column=stream") || line.contains("column=\"stream\""),
        "{line}"
    );
    assert!(line.contains("table=logs"), "{line}");
    assert_eq!(server.number("SELECT count() FROM logs"), 0);
    assert_eq!(
        metric(
            forwarder.port,
            "forwarder_sink_dead_lettered_records_total{sink=\"clickhouse\"}"
        ),
        0.0,
        "a table that does not fit is not the records' fault"
    );

    server.run("ALTER TABLE logs ADD COLUMN stream String AFTER message");
    wait_for("200 rows after the fix", || {
        server.number("SELECT uniqExact(id) FROM logs") >= 200
    });
    let sent = pod.wait_delivered(200, TIMEOUT);
    assert_eq!(sent.len(), 200);
    assert_eq!(server.number("SELECT count() FROM logs FINAL"), 200);
}

#[test]
fn gzip_bodies_are_taken_by_the_old_server() {
    let mut pod = Pod::new();
    let server = ClickHouse::start(&pod.path("clickhouse"));
    server.run("CREATE DATABASE app");
    server.create_table("app.logs", &[]);
    configure(
        &pod,
        server.port,
        "app.logs",
        "    gzip: true\n    batch: {max_records: 100, linger: 20ms}\n",
    );
    let mut app = Writer::open(pod.path("logs/access.log"), "access");
    app.write(300);
    let stages = pod.start_all();
    wait_for("300 rows", || {
        server.number("SELECT uniqExact(id) FROM app.logs") >= 300
    });
    let sent = pod.wait_delivered(300, TIMEOUT);
    assert_eq!(server.number("SELECT count() FROM app.logs FINAL"), 300);
    let raw_bytes: usize = sent.iter().map(|r| r.to_string().len()).sum();
    let sent_bytes = metric(
        stages[2].port,
        "forwarder_sink_sent_bytes_total{sink=\"clickhouse\"}",
    );
    // Each row carries its record twice (typed columns and `fields`); gzip makes that far
    // smaller than the records alone.
    assert!(
        sent_bytes > 0.0 && sent_bytes < raw_bytes as f64 / 2.0,
        "sent {sent_bytes} bytes for {raw_bytes} bytes of records"
    );
}

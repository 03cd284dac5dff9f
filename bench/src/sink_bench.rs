//! `sink-bench`: the forwarder shipping a processed journal to a network sink on loopback —
//! http (NDJSON), elasticsearch (`_bulk`), loki (push JSON), clickhouse (JSONEachRow inserts),
//! splunk_hec (HEC events) and otlp (protobuf logs), each without and with gzip, and nats (JetStream publishes to a real local nats-server) —
//! and what it costs: records/s, MB/s of journal, CPU seconds per million records, peak RSS.
//!
//! Run with (the forwarder is not built by this command, build it first):
//! `cargo build --release -p forwarder && cargo run --release -p pipeline-bench --bin sink-bench -- --records 500000`
//!
//! Easy to get wrong: whose CPU is measured. The receiving server runs in this process on
//! other threads (it un-gzips and counts every record to check delivery); only the
//! forwarder's own user + system time (from `wait4`) is reported. On a 2-core machine the
//! server still competes for the cores, so wall-clock rates are a floor, CPU per record is not.

#[allow(dead_code)]
mod process;

use std::fs;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use clap::Parser;
use sidecar_core::journal::{JournalOptions, JournalWriter};

use crate::process::Proc;

/// Command-line flags.
#[derive(Debug, Parser)]
#[command(
    name = "sink-bench",
    about = "Throughput and CPU of the forwarder's network sinks on loopback."
)]
struct Cli {
    /// Records in the processed journal.
    #[arg(long, default_value_t = 500_000)]
    records: u64,
    /// Where the forwarder binary is (default: this binary's directory).
    #[arg(long)]
    bin_dir: Option<PathBuf>,
    /// Only the sinks whose row name contains this (e.g. `elasticsearch`).
    #[arg(long)]
    only: Option<String>,
    /// Give up on a run after this many seconds.
    #[arg(long, default_value_t = 600)]
    timeout_secs: u64,
}

/// One measured configuration.
struct Case {
    name: &'static str,
    sink: &'static str,
    gzip: bool,
    /// Records per request the server should see per body line.
    lines_per_record: u64,
}

const CASES: [Case; 12] = [
    Case {
        name: "http",
        sink: "http",
        gzip: false,
        lines_per_record: 1,
    },
    Case {
        name: "http+gzip",
        sink: "http",
        gzip: true,
        lines_per_record: 1,
    },
    Case {
        name: "elasticsearch",
        sink: "elasticsearch",
        gzip: false,
        lines_per_record: 2,
    },
    Case {
        name: "elasticsearch+gzip",
        sink: "elasticsearch",
        gzip: true,
        lines_per_record: 2,
    },
    Case {
        name: "loki",
        sink: "loki",
        gzip: false,
        lines_per_record: 0,
    },
    Case {
        name: "loki+gzip",
        sink: "loki",
        gzip: true,
        lines_per_record: 0,
    },
    Case {
        name: "clickhouse",
        sink: "clickhouse",
        gzip: false,
        lines_per_record: 1,
    },
    Case {
        name: "clickhouse+gzip",
        sink: "clickhouse",
        gzip: true,
        lines_per_record: 1,
    },
    Case {
        name: "splunk_hec",
        sink: "splunk_hec",
        gzip: false,
        lines_per_record: 1,
    },
    Case {
        name: "splunk_hec+gzip",
        sink: "splunk_hec",
        gzip: true,
        lines_per_record: 1,
    },
    Case {
        name: "otlp",
        sink: "otlp",
        gzip: false,
        lines_per_record: 0,
    },
    Case {
        name: "otlp+gzip",
        sink: "otlp",
        gzip: true,
        lines_per_record: 0,
    },
];

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let bin_dir = match &cli.bin_dir {
        Some(d) => d.clone(),
        None => std::env::current_exe()?
            .parent()
            .context("the benchmark binary has a directory")?
            .to_owned(),
    };
    let forwarder = bin_dir.join("forwarder");
    anyhow::ensure!(
        forwarder.exists(),
        "{} is missing: cargo build --release -p forwarder",
        forwarder.display()
    );
    let tmp = tempfile::Builder::new().prefix("sink-bench-").tempdir()?;
    let journal = tmp.path().join("journal");
    let started = Instant::now();
    let bytes = write_journal(&journal, cli.records)?;
    println!(
        "processed journal: {} records, {:.1} MB ({} B/record) written in {:.1} s",
        cli.records,
        bytes as f64 / 1e6,
        bytes / cli.records,
        started.elapsed().as_secs_f64()
    );
    println!(
        "{:<20} {:>9} {:>8} {:>10} {:>7} {:>8} {:>10} {:>9} {:>8} {:>9}",
        "sink",
        "records",
        "wall_s",
        "records/s",
        "MB/s",
        "cpu_s",
        "cpu_s/1M",
        "sent_MB",
        "requests",
        "peak_MiB"
    );
    for case in &CASES {
        if cli
            .only
            .as_ref()
            .is_some_and(|o| !case.name.contains(o.as_str()))
        {
            continue;
        }
        let run = tmp.path().join(case.name);
        copy_dir(&journal, &run)?;
        let row = measure(&forwarder, &run, case, cli.records, cli.timeout_secs)?;
        row.print(case.name, cli.records, bytes);
        fs::remove_dir_all(&run)?;
    }
    if cli
        .only
        .as_ref()
        .is_none_or(|o| "nats".contains(o.as_str()))
    {
        let run = tmp.path().join("nats");
        copy_dir(&journal, &run)?;
        match measure_nats(&forwarder, &run, cli.records, cli.timeout_secs)? {
            Some(row) => row.print("nats", cli.records, bytes),
            None => {
                println!("nats: skipped (no nats-server; scripts/install-test-deps.sh installs it)")
            }
        }
        fs::remove_dir_all(&run)?;
    }
    Ok(())
}

/// The nats sink into a real single-node JetStream (`nats-server --js`, file storage) on
/// loopback, a stream made here with the default 2-minute duplicate window. Delivery is
/// counted from the stream's own message count; `sent_MB` is what the stream stores and
/// `requests` its messages (one publish each). The server's CPU is not the forwarder's, so it
/// is left out as with the HTTP receiver.
fn measure_nats(
    forwarder: &Path,
    dir: &Path,
    records: u64,
    timeout_secs: u64,
) -> anyhow::Result<Option<Measured>> {
    let Some(binary) = ["/usr/sbin/nats-server", "/usr/bin/nats-server"]
        .into_iter()
        .map(PathBuf::from)
        .find(|p| p.exists())
    else {
        return Ok(None);
    };
    let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
    let log = fs::File::create(dir.join("nats-server.log"))?;
    let mut server = std::process::Command::new(binary)
        .args(["-a", "127.0.0.1", "-p", &port.to_string(), "--js", "-sd"])
        .arg(dir.join("nats-store"))
        .stdout(log.try_clone()?)
        .stderr(log)
        .spawn()
        .context("starting nats-server")?;
    let result = (|| {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let url = format!("nats://127.0.0.1:{port}");
        let client = {
            let mut tries = 0;
            loop {
                match runtime.block_on(async_nats::connect(url.as_str())) {
                    Ok(client) => break client,
                    Err(_) if tries < 100 => {
                        tries += 1;
                        std::thread::sleep(Duration::from_millis(20));
                    }
                    Err(e) => bail!("nats-server does not answer: {e}"),
                }
            }
        };
        // The context spawns its ack task on the runtime it is built in.
        let js = {
            let _runtime = runtime.enter();
            async_nats::jetstream::new(client)
        };
        runtime.block_on(js.create_stream(async_nats::jetstream::stream::Config {
            name: "LOGS".into(),
            subjects: vec!["logs.>".into()],
            ..Default::default()
        }))?;
        let stream_state = || {
            runtime.block_on(async {
                let mut stream = js.get_stream("LOGS").await.ok()?;
                stream
                    .info()
                    .await
                    .ok()
                    .map(|i| (i.state.messages, i.state.bytes))
            })
        };
        let started = Instant::now();
        let mut proc = spawn_forwarder(
            forwarder,
            dir,
            &format!(
                "  - type: nats\n    url: {url}\n    stream: LOGS\n    subject: 'logs.{{source_file}}'\n"
            ),
        )?;
        let deadline = started + Duration::from_secs(timeout_secs);
        let mut last = (0, 0);
        while last.0 < records {
            proc.ensure_running()?;
            proc.sample();
            if Instant::now() > deadline {
                bail!("nats: only {} of {records} records arrived", last.0);
            }
            std::thread::sleep(Duration::from_millis(50));
            last = stream_state().unwrap_or(last);
        }
        let wall_s = started.elapsed().as_secs_f64();
        proc.terminate();
        let usage = proc.reap(Duration::from_secs(30))?;
        let (got, stored) = stream_state().unwrap_or(last);
        anyhow::ensure!(got == records, "nats: {got} records stored for {records}");
        Ok(Measured {
            wall_s,
            cpu_s: usage.cpu_s(),
            peak_kib: usage.peak_rss_kib,
            sent_bytes: stored,
            requests: got,
        })
    })();
    let _ = server.kill();
    let _ = server.wait();
    result.map(Some)
}

/// Writes `n` processed records like the processor's (access-log responses, ~380 bytes) as a
/// journal the forwarder reads.
fn write_journal(dir: &Path, n: u64) -> anyhow::Result<u64> {
    let options = JournalOptions {
        durability: sidecar_core::checkpoint::Durability::PageCache,
        ..JournalOptions::default()
    };
    let (mut writer, _) = JournalWriter::<serde_json::Value>::open(dir, options)?;
    let levels = [
        ("INFO", "success", 200),
        ("WARNING", "client_error", 404),
        ("ERROR", "server_error", 503),
    ];
    let sources = ["access.log", "api.log", "gateway.log", "web.log"];
    for seq in 0..n {
        let (level, category, status) = levels[(seq % 3) as usize];
        let ms = seq % 1000;
        let record = serde_json::json!({
            "id": format!("{:016x}-{}", 0x8f3c_2a19_d4e5_b601u64 ^ (seq % 4), seq * 211),
            "source_file": sources[(seq % 4) as usize],
            "collected_at": format!("2026-11-22T10:{:02}:{:02}.{ms:03}Z", (seq / 60_000) % 60, (seq / 1000) % 60),
            "processed_at": format!("2026-11-22T10:{:02}:{:02}.{ms:03}Z", (seq / 60_000) % 60, (seq / 1000) % 60),
            "timestamp": "2026-11-22 10:30:45,123",
            "log_category": "access",
            "log_level": level,
            "type": "response",
            "method": "GET",
            "path": format!("/users?page={}", seq % 97),
            "endpoint": "/users",
            "status_code": status,
            "status_category": category,
            "execution_time_ms": seq % 7000,
            "status": if seq % 10 == 0 { "failed" } else { "completed" },
        });
        writer.push(&record);
        if writer.pending_bytes() > 4 << 20 {
            writer.commit(&serde_json::Value::Null)?;
        }
    }
    writer.commit(&serde_json::Value::Null)?;
    Ok(fs::read_dir(dir)?
        .filter_map(Result::ok)
        .filter(|e| e.file_name().to_string_lossy().ends_with(".ndjson"))
        .map(|e| e.metadata().map(|m| m.len()).unwrap_or(0))
        .sum())
}

fn copy_dir(from: &Path, to: &Path) -> anyhow::Result<()> {
    fs::create_dir_all(to.join("readers"))?;
    for entry in fs::read_dir(from)? {
        let entry = entry?;
        if entry.file_type()?.is_file() {
            fs::copy(entry.path(), to.join(entry.file_name()))?;
        }
    }
    Ok(())
}

/// Starts the forwarder on the journal in `dir` with `sinks` (YAML list items) and no report.
fn spawn_forwarder(forwarder: &Path, dir: &Path, sinks: &str) -> anyhow::Result<Proc> {
    let config = dir.join("forwarder.yaml");
    fs::write(
        &config,
        format!("report:\n  enabled: false\nsinks:\n{sinks}"),
    )?;
    let args: Vec<String> = vec![
        "--config".into(),
        config.display().to_string(),
        "--input-dir".into(),
        dir.display().to_string(),
        "--listen".into(),
        "127.0.0.1:0".into(),
    ];
    Proc::spawn("forwarder", forwarder, &args, &dir.join("forwarder.log"))
}

struct Measured {
    wall_s: f64,
    cpu_s: f64,
    peak_kib: u64,
    sent_bytes: u64,
    requests: u64,
}

impl Measured {
    /// One row of the table, for `records` records of `journal_bytes` in all.
    fn print(&self, name: &str, records: u64, journal_bytes: u64) {
        println!(
            "{:<20} {:>9} {:>8.2} {:>10.0} {:>7.1} {:>8.2} {:>10.2} {:>9.1} {:>8} {:>9.1}",
            name,
            records,
            self.wall_s,
            records as f64 / self.wall_s,
            journal_bytes as f64 / 1e6 / self.wall_s,
            self.cpu_s,
            self.cpu_s * 1e6 / records as f64,
            self.sent_bytes as f64 / 1e6,
            self.requests,
            self.peak_kib as f64 / 1024.0
        );
    }
}

fn measure(
    forwarder: &Path,
    dir: &Path,
    case: &Case,
    records: u64,
    timeout_secs: u64,
) -> anyhow::Result<Measured> {
    let server = Server::start(case.sink == "elasticsearch")?;
    let extra = match case.sink {
        "loki" => "    label_fields: [source_file, log_level]\n".to_owned(),
        // The receiver answers 200 with an empty body, as ClickHouse does to an insert.
        "clickhouse" => "    table: logs\n".to_owned(),
        // An empty 200 is what HEC's success reply needs to be without indexer_ack, and a
        // full success for OTLP.
        "splunk_hec" => {
            let token = dir.join("hec-token");
            fs::write(&token, "00000000-0000-0000-0000-000000000000\n")?;
            format!(
                "    auth: {{splunk: {{token_file: {}}}}}\n    sourcetype: _json\n",
                token.display()
            )
        }
        _ => String::new(),
    };
    let started = Instant::now();
    let mut proc = spawn_forwarder(
        forwarder,
        dir,
        &format!(
            "  - type: {}\n    url: http://127.0.0.1:{}\n    gzip: {}\n{extra}",
            case.sink, server.port, case.gzip
        ),
    )?;
    let deadline = started + Duration::from_secs(timeout_secs);
    let mut sampled = Instant::now();
    while server.records(case.lines_per_record) < records {
        proc.ensure_running()?;
        if sampled.elapsed() > Duration::from_millis(100) {
            proc.sample();
            sampled = Instant::now();
        }
        if Instant::now() > deadline {
            bail!(
                "{}: only {} of {records} records arrived",
                case.name,
                server.records(case.lines_per_record)
            );
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    let wall_s = started.elapsed().as_secs_f64();
    proc.terminate();
    let usage = proc.reap(Duration::from_secs(30))?;
    let got = server.records(case.lines_per_record);
    anyhow::ensure!(
        got == records,
        "{}: {got} records arrived for {records}",
        case.name
    );
    Ok(Measured {
        wall_s,
        cpu_s: usage.cpu_s(),
        peak_kib: usage.peak_rss_kib,
        sent_bytes: server.bytes.load(Ordering::Relaxed),
        requests: server.requests.load(Ordering::Relaxed),
    })
}

/// A minimal HTTP/1.1 receiver: reads each POST, un-gzips it, counts its lines (or, for
/// Loki, its entries) and answers 200 (with a `_bulk` reply listing every item when asked).
struct Server {
    port: u16,
    lines: Arc<AtomicU64>,
    entries: Arc<AtomicU64>,
    bytes: Arc<AtomicU64>,
    requests: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
}

impl Server {
    fn start(bulk: bool) -> anyhow::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0")?;
        let port = listener.local_addr()?.port();
        listener.set_nonblocking(true)?;
        let server = Self {
            port,
            lines: Arc::default(),
            entries: Arc::default(),
            bytes: Arc::default(),
            requests: Arc::default(),
            stop: Arc::default(),
        };
        let (lines, entries, bytes, requests, stop) = (
            server.lines.clone(),
            server.entries.clone(),
            server.bytes.clone(),
            server.requests.clone(),
            server.stop.clone(),
        );
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((stream, _)) => {
                        let counters = (
                            lines.clone(),
                            entries.clone(),
                            bytes.clone(),
                            requests.clone(),
                        );
                        std::thread::spawn(move || {
                            let _ = serve(stream, bulk, counters);
                        });
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(2)),
                }
            }
        });
        Ok(server)
    }

    /// Records received: body lines / lines per record, or Loki entries / OTLP log records
    /// when 0.
    fn records(&self, lines_per_record: u64) -> u64 {
        self.lines
            .load(Ordering::Relaxed)
            .checked_div(lines_per_record)
            .unwrap_or_else(|| self.entries.load(Ordering::Relaxed))
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

type Counters = (
    Arc<AtomicU64>,
    Arc<AtomicU64>,
    Arc<AtomicU64>,
    Arc<AtomicU64>,
);

fn serve(stream: TcpStream, bulk: bool, counters: Counters) -> anyhow::Result<()> {
    let (lines, entries, bytes, requests) = counters;
    stream.set_nonblocking(false)?;
    stream.set_nodelay(true)?;
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut writer = stream;
    let mut body = Vec::new();
    let mut plain = Vec::new();
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line)? == 0 {
            return Ok(());
        }
        let mut len = 0usize;
        let mut gzip = false;
        loop {
            line.clear();
            reader.read_line(&mut line)?;
            let header = line.trim_end();
            if header.is_empty() {
                break;
            }
            let (name, value) = header.split_once(':').unwrap_or((header, ""));
            if name.eq_ignore_ascii_case("content-length") {
                len = value.trim().parse()?;
            } else if name.eq_ignore_ascii_case("content-encoding") {
                gzip = value.trim() == "gzip";
            }
        }
        body.resize(len, 0);
        reader.read_exact(&mut body)?;
        bytes.fetch_add(len as u64, Ordering::Relaxed);
        requests.fetch_add(1, Ordering::Relaxed);
        let plain = if gzip {
            plain.clear();
            flate2::read::GzDecoder::new(&body[..]).read_to_end(&mut plain)?;
            &plain
        } else {
            &body
        };
        let newlines = memchr_count(plain);
        lines.fetch_add(newlines, Ordering::Relaxed);
        if plain.first() == Some(&b'{') && plain.starts_with(b"{\"streams\"") {
            // Loki: count entries (each value starts with `["<digits>"`).
            let value: serde_json::Value = serde_json::from_slice(plain)?;
            let n: usize = value["streams"]
                .as_array()
                .map(|s| {
                    s.iter()
                        .map(|s| s["values"].as_array().map_or(0, Vec::len))
                        .sum()
                })
                .unwrap_or(0);
            entries.fetch_add(n as u64, Ordering::Relaxed);
        } else {
            // OTLP: each log record carries its id under this attribute key, in protobuf and
            // JSON alike.
            let n = memchr::memmem::find_iter(plain, b"log.record.uid").count();
            entries.fetch_add(n as u64, Ordering::Relaxed);
        }
        let reply = if bulk {
            let mut r = String::from("{\"took\":1,\"errors\":false,\"items\":[");
            for i in 0..newlines / 2 {
                if i > 0 {
                    r.push(',');
                }
                r.push_str("{\"index\":{\"_index\":\"logs\",\"_id\":\"x\",\"status\":201,\"result\":\"created\"}}");
            }
            r.push_str("]}");
            r
        } else {
            String::new()
        };
        // One write, no Nagle: a reply split over small writes would wait for the client's
        // delayed ACK (40 ms) and measure that instead of the forwarder.
        let response = format!(
            "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{reply}",
            reply.len()
        );
        writer.write_all(response.as_bytes())?;
    }
}

fn memchr_count(bytes: &[u8]) -> u64 {
    memchr::memchr_iter(b'\n', bytes).count() as u64
}

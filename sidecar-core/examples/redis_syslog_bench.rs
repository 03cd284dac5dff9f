//! Records/s, MB/s and CPU per million records of the redis and syslog sinks on loopback,
//! against a real `redis-server` and `rsyslogd` started here in a temp directory.
//!
//! Run with: `cargo run --release -p sidecar-core --example redis_syslog_bench -- 200000`
//! (the argument is the record count; both servers must be installed:
//! `apt-get install -y redis-server rsyslog`).
//!
//! Easy to get wrong: whose CPU. "sink CPU" is this process's (encoding and system calls of
//! `send`); the server's CPU is shown beside it, read from its /proc entry.

use std::fs;
use std::net::{TcpListener, TcpStream, UdpSocket};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use sidecar_core::sink::redis::{RedisSink, RedisSpec};
use sidecar_core::sink::syslog::{SyslogSink, SyslogSpec};
use sidecar_core::sink::{OutRecord, Sink};

/// Records per `send`: about what the forwarder's 4 MiB batches hold at these record sizes.
const BATCH: usize = 2000;

fn main() {
    let count: usize = std::env::args()
        .nth(1)
        .map(|n| n.parse().expect("the record count"))
        .unwrap_or(200_000);
    let lines = records(count);
    let bytes: usize = lines.iter().map(|l| l.len() + 1).sum();
    println!(
        "{count} records, {:.1} MB of JSON ({} bytes each on average), batches of {BATCH}\n",
        bytes as f64 / 1e6,
        bytes / count
    );
    println!(
        "{:<28} {:>10} {:>8} {:>16} {:>18}",
        "sink", "records/s", "MB/s", "sink CPU s/1M", "server CPU s/1M"
    );
    let dir = tempfile::tempdir().expect("a temp dir");

    let redis_port = free_port();
    let redis = Server(
        Command::new("redis-server")
            .args(["--port", &redis_port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no", "--dir"])
            .arg(dir.path())
            .stdout(Stdio::null())
            .spawn()
            .expect("redis-server is installed"),
    );
    wait_for_tcp(redis_port);
    for (label, extra) in [
        ("redis XADD (MAXLEN ~ 1M)", "stream: bench"),
        ("redis PUBLISH", "channel: bench"),
        ("redis XADD + PUBLISH", "stream: bench2\nchannel: bench"),
    ] {
        let spec: RedisSpec =
            serde_saphyr::from_str(&format!("url: redis://127.0.0.1:{redis_port}/0\n{extra}\n"))
                .expect("a valid spec");
        let sink = RedisSink::open(spec, None).expect("the sink opens");
        measure(label, sink, &lines, bytes, redis.0.id());
    }
    drop(redis);

    let tcp_port = free_port();
    let udp_port = UdpSocket::bind("127.0.0.1:0")
        .and_then(|s| s.local_addr())
        .expect("a free UDP port")
        .port();
    let rsyslog = start_rsyslog(dir.path(), tcp_port, udp_port);
    for (label, extra) in [
        (
            "syslog TCP (message)",
            format!("address: 127.0.0.1:{tcp_port}"),
        ),
        (
            "syslog TCP (record JSON)",
            format!("address: 127.0.0.1:{tcp_port}\nbody: record"),
        ),
        (
            "syslog UDP (message)",
            format!("address: 127.0.0.1:{udp_port}\ntransport: udp"),
        ),
    ] {
        let spec: SyslogSpec =
            serde_saphyr::from_str(&format!("{extra}\nhostname: bench\n")).expect("a valid spec");
        let sink = SyslogSink::open(spec, None).expect("the sink opens");
        measure(label, sink, &lines, bytes, rsyslog.0.id());
    }
}

fn measure(label: &str, mut sink: impl Sink, lines: &[String], bytes: usize, server: u32) {
    let records: Vec<OutRecord<'_>> = lines
        .iter()
        .map(|l| OutRecord::decode(l.as_bytes()))
        .collect();
    sink.send(&records[..10])
        .expect("the server takes a first batch");
    let (cpu0, server0) = (cpu_seconds("self"), cpu_seconds(&server.to_string()));
    let started = Instant::now();
    for batch in records.chunks(BATCH) {
        sink.send(batch).expect("the server takes the batch");
    }
    let wall = started.elapsed().as_secs_f64();
    let cpu = cpu_seconds("self") - cpu0;
    let server_cpu = cpu_seconds(&server.to_string()) - server0;
    let millions = records.len() as f64 / 1e6;
    println!(
        "{label:<28} {:>10.0} {:>8.1} {:>16.2} {:>18.2}",
        records.len() as f64 / wall,
        bytes as f64 / 1e6 / wall,
        cpu / millions,
        server_cpu / millions
    );
    sink.close();
}

/// Processed records like the pipeline's: an access-log response with the usual fields.
fn records(count: usize) -> Vec<String> {
    const LEVELS: [&str; 4] = ["INFO", "WARNING", "ERROR", "DEBUG"];
    (0..count)
        .map(|i| {
            serde_json::json!({
                "id": format!("8f3c2a19d4e5b601-{}", i * 230),
                "source_file": "access.log",
                "collected_at": "2026-11-22T19:42:24.948Z",
                "processed_at": "2026-11-22T19:42:24.951Z",
                "timestamp": "2026-11-22 19:42:24,780",
                "log_category": "access",
                "log_level": LEVELS[i % 4],
                "message": format!("GET /users?page={i} -> 200 2.12ms"),
                "method": "GET",
                "path": format!("/users?page={i}"),
                "endpoint": "/users",
                "status_code": 200,
                "status_category": "success",
                "execution_time_ms": i % 700,
                "request_id": format!("req-{i:08}"),
            })
            .to_string()
        })
        .collect()
}

struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start_rsyslog(dir: &Path, tcp: u16, udp: u16) -> Server {
    let config = format!(
        r#"global(workDirectory="{dir}")
module(load="imtcp")
module(load="imudp")
ruleset(name="received") {{
  action(type="omfile" file="{dir}/received.log")
}}
input(type="imtcp" port="{tcp}" address="127.0.0.1" ruleset="received")
input(type="imudp" port="{udp}" address="127.0.0.1" ruleset="received" rcvbufSize="8m")
"#,
        dir = dir.display()
    );
    fs::write(dir.join("rsyslog.conf"), config).expect("the config is written");
    let child = Command::new("rsyslogd")
        .arg("-n")
        .arg("-f")
        .arg(dir.join("rsyslog.conf"))
        .arg("-i")
        .arg(dir.join("rsyslogd.pid"))
        .stdout(Stdio::null())
        .spawn()
        .expect("rsyslogd is installed");
    wait_for_tcp(tcp);
    Server(child)
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

fn wait_for_tcp(port: u16) {
    for _ in 0..200 {
        if TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("nothing listens on port {port}");
}

/// User plus system CPU seconds of a process, from `/proc/<pid>/stat` (clock ticks of 1/100 s,
/// Linux's USER_HZ).
fn cpu_seconds(pid: &str) -> f64 {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // The command name may hold spaces: fields are counted after its closing parenthesis.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest.split_whitespace().collect())
        .unwrap_or_default();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    // utime and stime are fields 14 and 15 of the line, 12 and 13 after the name.
    (ticks(11) + ticks(12)) / 100.0
}

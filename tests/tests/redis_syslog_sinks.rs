//! The redis and syslog sinks against the real servers (issue #4): a `redis-server` and an
//! `rsyslogd` from Debian's packages (scripts/install-test-deps.sh installs them), started on free
//! loopback ports with configs and data in a temp directory of their own.
//!
//! What a user relies on: a live subscriber and the stream each get every record; redis killed
//! with SIGKILL and restarted mid-stream loses nothing (a retried batch may repeat records, each
//! carrying its id); rsyslog receives RFC 5424 messages over TCP and UDP with the priority the
//! record's level maps to and the configured header fields.

use std::collections::{HashMap, HashSet};
use std::fs;
use std::net::UdpSocket;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use e2e_tests::{
    exactly_once, free_port, make_certificates, require_program, require_tool, tally, wait_until,
    Certificates, Pod, Writer,
};
use serde_json::Value;

const DELIVERY_TIMEOUT: Duration = Duration::from_secs(90);

/// rsyslog's GnuTLS network stream driver (package rsyslog-gnutls), wherever the
/// architecture's library directory is.
fn rsyslog_tls_driver() -> Option<PathBuf> {
    fs::read_dir("/usr/lib")
        .ok()?
        .flatten()
        .map(|e| e.path().join("rsyslog/lmnsd_gtls.so"))
        .chain([PathBuf::from("/usr/lib/rsyslog/lmnsd_gtls.so")])
        .find(|p| p.exists())
}

/// A UDP port on loopback that was free a moment ago.
fn free_udp_port() -> u16 {
    UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A child process killed (and reaped) when dropped, so no server outlives its test.
struct Server {
    child: Child,
    name: &'static str,
    log: PathBuf,
}

impl Server {
    fn spawn(name: &'static str, command: &mut Command, log: PathBuf) -> Self {
        let out = fs::File::create(&log).unwrap();
        let child = command
            .stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {name}: {e}"));
        Self { child, name, log }
    }

    fn assert_running(&mut self) {
        assert!(
            self.child.try_wait().unwrap().is_none(),
            "{} exited; log:\n{}",
            self.name,
            fs::read_to_string(&self.log).unwrap_or_default()
        );
    }

    /// SIGKILL: the server gets no chance to flush or say goodbye.
    fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM and wait for the exit, as a service restart does.
    fn terminate(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let exited = wait_until(Duration::from_secs(10), || {
            self.child.try_wait().unwrap().is_some()
        });
        if !exited {
            self.kill9();
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// A redis-server on a free loopback port, its data in `dir`. Every write is in its
/// append-only file before redis answers (`appendfsync always`), so what it acknowledged
/// survives a SIGKILL, as with a persistent redis in production.
struct Redis {
    port: u16,
    dir: PathBuf,
    server: Option<Server>,
    starts: u32,
    /// Further redis-server options (TLS, ACL users).
    extra_args: Vec<String>,
    /// `user:password@` for the test's own connections, when the default user is off.
    userinfo: String,
}

impl Redis {
    fn start(dir: PathBuf) -> Self {
        Self::start_with(dir, Vec::new(), "")
    }

    fn start_with(dir: PathBuf, extra_args: Vec<String>, userinfo: &str) -> Self {
        fs::create_dir_all(&dir).unwrap();
        let mut redis = Self {
            port: free_port(),
            dir,
            server: None,
            starts: 0,
            extra_args,
            userinfo: userinfo.to_owned(),
        };
        redis.restart();
        redis
    }

    /// Starts redis (again) on the same port with the same data.
    fn restart(&mut self) {
        let binary = require_program("redis-server");
        self.starts += 1;
        let mut command = Command::new(binary);
        command.args([
            "--port",
            &self.port.to_string(),
            "--bind",
            "127.0.0.1",
            "--dir",
            &self.dir.display().to_string(),
            "--appendonly",
            "yes",
            "--appendfsync",
            "always",
            "--save",
            "",
            "--daemonize",
            "no",
            "--protected-mode",
            "no",
        ]);
        command.args(&self.extra_args);
        let log = self.dir.join(format!("redis.{}.log", self.starts));
        let mut server = Server::spawn("redis-server", &mut command, log);
        let up = wait_until(Duration::from_secs(20), || {
            server.child.try_wait().unwrap().is_some()
                || self
                    .connection_once()
                    .and_then(|mut c| redis::cmd("PING").query::<String>(&mut c).ok())
                    .is_some()
        });
        server.assert_running();
        assert!(up, "redis-server did not answer PING");
        self.server = Some(server);
    }

    fn kill9(&mut self) {
        self.server.take().expect("redis is running").kill9();
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
    }

    fn connection_once(&self) -> Option<redis::Connection> {
        redis::Client::open(format!(
            "redis://{}127.0.0.1:{}/0",
            self.userinfo, self.port
        ))
        .ok()?
        .get_connection_with_timeout(Duration::from_secs(2))
        .ok()
    }

    fn connection(&self) -> redis::Connection {
        self.connection_once().expect("redis answers")
    }

    /// Every entry of `stream`: (entry id, field `id`, field `record` decoded).
    fn stream(&self, stream: &str) -> Vec<(String, String, Value)> {
        let reply: redis::streams::StreamRangeReply = redis::cmd("XRANGE")
            .arg(stream)
            .arg("-")
            .arg("+")
            .query(&mut self.connection())
            .unwrap();
        reply
            .ids
            .into_iter()
            .map(|entry| {
                let field = |name: &str| -> String {
                    entry
                        .get::<String>(name)
                        .unwrap_or_else(|| panic!("entry {} has no {name}", entry.id))
                };
                let record = serde_json::from_str(&field("record")).unwrap();
                (entry.id.clone(), field("id"), record)
            })
            .collect()
    }

    fn stream_len(&self, stream: &str) -> usize {
        self.connection_once()
            .and_then(|mut c| redis::cmd("XLEN").arg(stream).query(&mut c).ok())
            .unwrap_or(0)
    }
}

/// Collects what a `SUBSCRIBE`d client receives, on its own thread.
struct Subscriber {
    received: Arc<Mutex<Vec<Value>>>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Subscriber {
    /// Returns once the subscription is confirmed, so nothing published after is missed.
    fn start(redis: &Redis, channel: &str) -> Self {
        let received = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let mut connection = redis.connection();
        let channel = channel.to_owned();
        let thread = {
            let received = received.clone();
            let stop = stop.clone();
            std::thread::spawn(move || {
                let mut pubsub = connection.as_pubsub();
                pubsub.subscribe(&channel).unwrap();
                pubsub
                    .set_read_timeout(Some(Duration::from_millis(200)))
                    .unwrap();
                ready_tx.send(()).unwrap();
                while !stop.load(Ordering::Relaxed) {
                    if let Ok(message) = pubsub.get_message() {
                        let payload: String = message.get_payload().unwrap();
                        received
                            .lock()
                            .unwrap()
                            .push(serde_json::from_str(&payload).unwrap());
                    }
                }
            })
        };
        ready_rx
            .recv_timeout(Duration::from_secs(10))
            .expect("the subscription is confirmed");
        Self {
            received,
            stop,
            thread: Some(thread),
        }
    }

    fn count(&self) -> usize {
        self.received.lock().unwrap().len()
    }

    fn stop(mut self) -> Vec<Value> {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.take().unwrap().join().unwrap();
        std::mem::take(&mut self.received.lock().unwrap())
    }
}

/// The forwarder's config: a report, the file sink (the reference of what was delivered) and
/// `sinks` (YAML list items).
fn write_forwarder_config(pod: &Pod, sinks: &str) {
    fs::write(
        pod.path("forwarder.yaml"),
        format!(
            "report:\n  interval: 1s\nsinks:\n  - type: file\n    name: archive\n    directory: {}\n{sinks}",
            pod.path("out").display()
        ),
    )
    .unwrap();
}

/// The committed state of sink `name` in the forwarder's checkpoint, wherever it is kept.
fn sink_state(pod: &Pod, name: &str) -> Option<Value> {
    fn find(v: &Value, name: &str) -> Option<Value> {
        match v {
            Value::Object(map) => map
                .get(name)
                .filter(|s| s.get("records").is_some())
                .cloned()
                .or_else(|| map.values().find_map(|v| find(v, name))),
            _ => None,
        }
    }
    find(
        &e2e_tests::checkpoint(&pod.path("processed/readers/forwarder.json")),
        name,
    )
}

#[test]
fn a_redis_subscriber_and_the_stream_get_every_record_once() {
    let mut pod = Pod::new();
    let redis = Redis::start(pod.path("redis"));
    write_forwarder_config(
        &pod,
        &format!(
            "  - type: redis\n    url: {}\n    channel: logs\n    stream: logs-stream\n    stream_max_len: 100000\n",
            redis.url()
        ),
    );
    let subscriber = Subscriber::start(&redis, "logs");
    let mut access = Writer::open(pod.path("logs/access.log"), "access");
    let mut jobs = Writer::open(pod.path("logs/job-execution.log"), "job");
    access.write(300);
    let stages = pod.start_all();
    jobs.write(400);
    access.write(300);
    let expected = [("access", 600), ("job", 400)];

    let delivered = pod.wait_delivered(1000, DELIVERY_TIMEOUT);
    assert!(
        wait_until(DELIVERY_TIMEOUT, || redis.stream_len("logs-stream") >= 1000
            && subscriber.count() >= 1000),
        "stream {} and subscriber {} of 1000",
        redis.stream_len("logs-stream"),
        subscriber.count()
    );
    std::thread::sleep(Duration::from_millis(300));
    let published = subscriber.stop();
    let problems = exactly_once(&published, &expected);
    assert!(problems.is_empty(), "subscriber: {problems}");

    let entries = redis.stream("logs-stream");
    let records: Vec<Value> = entries.iter().map(|(_, _, r)| r.clone()).collect();
    let problems = exactly_once(&records, &expected);
    assert!(problems.is_empty(), "stream: {problems}");
    for (_, id, record) in &entries {
        assert_eq!(record["id"].as_str(), Some(id.as_str()), "{record}");
        assert!(record["source_file"].is_string(), "{record}");
    }
    let stream_ids: HashSet<&str> = entries.iter().map(|(_, id, _)| id.as_str()).collect();
    let file_ids: HashSet<&str> = delivered.iter().filter_map(|r| r["id"].as_str()).collect();
    assert_eq!(
        stream_ids, file_ids,
        "the stream holds what the file sink holds"
    );

    let state = sink_state(&pod, "redis").expect("the redis sink's state is committed");
    assert_eq!(state["records"], 1000, "{state}");
    assert_eq!(state["failures"], 0, "{state}");
    drop(stages);
}

/// A stream key that holds a string (a naming clash with another app): redis refuses every
/// batch with WRONGTYPE, which no retry cures. The forwarder says so once, as an error naming
/// the key and the fix, keeps every record, and delivers them all once the key is freed.
#[test]
fn a_stream_key_of_the_wrong_type_is_named_and_nothing_is_lost_once_it_is_fixed() {
    let mut pod = Pod::new();
    let redis = Redis::start(pod.path("redis"));
    let _: () = redis::cmd("SET")
        .arg("logs-stream")
        .arg("not a stream")
        .query(&mut redis.connection())
        .unwrap();
    write_forwarder_config(
        &pod,
        &format!(
            "  - type: redis\n    url: {}\n    stream: logs-stream\n",
            redis.url()
        ),
    );
    let mut access = Writer::open(pod.path("logs/access.log"), "access");
    access.write(200);
    let stages = pod.start_all();
    let forwarder_log = stages[2].log.clone();
    let named = wait_until(DELIVERY_TIMEOUT, || {
        fs::read_to_string(&forwarder_log).is_ok_and(|log| log.contains("is not a stream"))
    });
    assert!(named, "{}", fs::read_to_string(&forwarder_log).unwrap());
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(redis.stream_len("logs-stream"), 0);

    let _: () = redis::cmd("DEL")
        .arg("logs-stream")
        .query(&mut redis.connection())
        .unwrap();
    access.write(100);
    assert!(
        wait_until(DELIVERY_TIMEOUT, || redis.stream_len("logs-stream") >= 300),
        "{} of 300 in the stream",
        redis.stream_len("logs-stream")
    );
    std::thread::sleep(Duration::from_millis(300));
    let records: Vec<Value> = redis
        .stream("logs-stream")
        .into_iter()
        .map(|(_, _, record)| record)
        .collect();
    let problems = exactly_once(&records, &[("access", 300)]);
    assert!(problems.is_empty(), "{problems}");
    let log = fs::read_to_string(&forwarder_log).unwrap();
    assert_eq!(
        log.matches("will until this is fixed").count(),
        1,
        "said once per outage: {log}"
    );
    drop(stages);
}

#[test]
fn redis_killed_and_restarted_mid_stream_loses_nothing() {
    let mut pod = Pod::new();
    let mut redis = Redis::start(pod.path("redis"));
    write_forwarder_config(
        &pod,
        &format!(
            "  - type: redis\n    url: {}\n    stream: logs-stream\n    connect_timeout: 1s\n    response_timeout: 2s\n",
            redis.url()
        ),
    );
    let mut access = Writer::open(pod.path("logs/access.log"), "access");
    let mut worker = Writer::open(pod.path("logs/worker.log"), "worker");
    let stages = pod.start_all();
    for round in 0..20 {
        access.write(100);
        worker.write(50);
        if round == 6 {
            assert!(
                wait_until(DELIVERY_TIMEOUT, || redis.stream_len("logs-stream") > 0),
                "nothing reached redis before the kill"
            );
            redis.kill9();
        }
        if round == 13 {
            std::thread::sleep(Duration::from_secs(2));
            redis.restart();
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let expected = [("access", 2000), ("worker", 1000)];
    let complete = wait_until(DELIVERY_TIMEOUT, || {
        tally(
            &redis
                .stream("logs-stream")
                .into_iter()
                .map(|(_, _, r)| r)
                .collect::<Vec<_>>(),
            &expected,
        )
        .lost
        .is_empty()
    });
    let entries = redis.stream("logs-stream");
    let records: Vec<Value> = entries.iter().map(|(_, _, r)| r.clone()).collect();
    let t = tally(&records, &expected);
    assert!(
        complete && t.lost.is_empty(),
        "{} lost (first {:?}); forwarder log:\n{}",
        t.lost.len(),
        &t.lost[..t.lost.len().min(10)],
        fs::read_to_string(&stages[2].log).unwrap_or_default()
    );
    // Duplicates are allowed only as documented: records of the batch in flight at the kill,
    // sent again by the retry, each at most once more and with its record id.
    let mut copies: HashMap<&str, u32> = HashMap::new();
    for (_, id, _) in &entries {
        *copies.entry(id.as_str()).or_default() += 1;
    }
    assert!(copies.values().all(|&n| n <= 2), "a record arrived 3 times");
    let stream_ids: HashSet<&str> = entries.iter().map(|(sid, _, _)| sid.as_str()).collect();
    assert_eq!(
        stream_ids.len(),
        entries.len(),
        "stream entry ids are unique"
    );
    // The sink's counters are committed with the forwarder's position, after the outage.
    assert!(
        wait_until(Duration::from_secs(10), || sink_state(&pod, "redis")
            .is_some_and(|s| s["failures"].as_u64() >= Some(1))),
        "the outage was not counted: {:?}",
        sink_state(&pod, "redis")
    );
    eprintln!(
        "redis restart: {} records, {} stream entries, {} repeated by the retry",
        t.written,
        entries.len(),
        t.duplicated.len()
    );
}

/// rsyslogd in the foreground with its own config: imtcp and imudp on loopback, every message
/// written to `out` as `PRI|FACILITY|SEVERITY|HOSTNAME|APP-NAME|PROCID|MSGID|SD|MSG`.
struct Rsyslog {
    dir: PathBuf,
    tcp_port: u16,
    udp_port: u16,
    server: Option<Server>,
    starts: u32,
    /// (CA, certificate, key): the TCP input speaks TLS (RFC 5425) and there is no UDP input.
    tls: Option<(PathBuf, PathBuf, PathBuf)>,
}

impl Rsyslog {
    fn start(dir: PathBuf) -> Self {
        Self::start_with(dir, None)
    }

    fn start_with(dir: PathBuf, tls: Option<(PathBuf, PathBuf, PathBuf)>) -> Self {
        fs::create_dir_all(&dir).unwrap();
        if tls.is_some() {
            require_tool(
                "rsyslog's TLS driver lmnsd_gtls.so (package rsyslog-gnutls)",
                rsyslog_tls_driver(),
            );
        }
        let mut rsyslog = Self {
            tcp_port: free_port(),
            udp_port: free_udp_port(),
            dir,
            server: None,
            starts: 0,
            tls,
        };
        rsyslog.restart();
        rsyslog
    }

    fn out(&self) -> PathBuf {
        self.dir.join("received.log")
    }

    fn restart(&mut self) {
        let binary = require_program("rsyslogd");
        let d = &self.dir;
        let template = r#"template(name="fields" type="string" string="%pri%|%syslogfacility%|%syslogseverity%|%hostname%|%app-name%|%procid%|%msgid%|%structured-data%|%msg%\n")
ruleset(name="received") {
  action(type="omfile" file="OUT" template="fields")
}
"#
        .replace("OUT", &self.out().display().to_string());
        let config = match &self.tls {
            None => format!(
                r#"global(workDirectory="{dir}" maxMessageSize="16k")
module(load="imtcp")
module(load="imudp")
{template}
input(type="imtcp" port="{tcp}" address="127.0.0.1" ruleset="received")
input(type="imudp" port="{udp}" address="127.0.0.1" ruleset="received" rcvbufSize="8m")
"#,
                dir = d.display(),
                tcp = self.tcp_port,
                udp = self.udp_port,
            ),
            Some((ca, cert, key)) => format!(
                r#"global(workDirectory="{dir}" maxMessageSize="16k" DefaultNetstreamDriver="gtls" DefaultNetstreamDriverCAFile="{ca}" DefaultNetstreamDriverCertFile="{cert}" DefaultNetstreamDriverKeyFile="{key}")
module(load="imtcp" StreamDriver.Name="gtls" StreamDriver.Mode="1" StreamDriver.AuthMode="anon")
{template}
input(type="imtcp" port="{tcp}" address="127.0.0.1" ruleset="received")
"#,
                dir = d.display(),
                ca = ca.display(),
                cert = cert.display(),
                key = key.display(),
                tcp = self.tcp_port,
            ),
        };
        fs::write(d.join("rsyslog.conf"), config).unwrap();
        self.starts += 1;
        let pid = d.join("rsyslogd.pid");
        let _ = fs::remove_file(&pid);
        let mut command = Command::new(binary);
        command
            .arg("-n")
            .arg("-f")
            .arg(d.join("rsyslog.conf"))
            .arg("-i")
            .arg(&pid);
        let log = d.join(format!("rsyslogd.{}.log", self.starts));
        let mut server = Server::spawn("rsyslogd", &mut command, log);
        let tcp = self.tcp_port;
        let up = wait_until(Duration::from_secs(20), || {
            server.child.try_wait().unwrap().is_some()
                || std::net::TcpStream::connect(("127.0.0.1", tcp)).is_ok()
        });
        server.assert_running();
        assert!(up, "rsyslogd did not listen on {tcp}");
        self.server = Some(server);
    }

    /// Received messages: one `Vec` of the nine fields per line.
    fn received(&self) -> Vec<Vec<String>> {
        fs::read_to_string(self.out())
            .unwrap_or_default()
            .lines()
            .map(|l| l.splitn(9, '|').map(str::to_owned).collect())
            .collect()
    }
}

/// Lines in the Python text layout, which the default rules parse into `log_level` and
/// `message`; the message carries characters RFC 5424 escapes in structured data.
fn write_text_lines(path: &Path, from: u64, to: u64) {
    use std::io::Write as _;
    const LEVELS: [&str; 4] = ["ERROR", "WARNING", "INFO", "DEBUG"];
    let mut text = String::new();
    for seq in from..to {
        text.push_str(&format!(
            "2026-11-22 10:30:45,123 - shop - {} - order \"{seq}\" ]done[ seq={seq}\n",
            LEVELS[(seq % 4) as usize]
        ));
    }
    fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
}

fn severity_of(seq: u64) -> u32 {
    [3, 4, 6, 7][(seq % 4) as usize]
}

#[test]
fn syslog_over_tcp_and_udp_arrives_with_priority_and_fields() {
    let mut pod = Pod::new();
    let mut rsyslog = Rsyslog::start(pod.path("rsyslog"));
    write_forwarder_config(
        &pod,
        &format!(
            "  - type: syslog\n    name: tcp\n    address: 127.0.0.1:{tcp}\n    facility: local3\n    hostname: test-pod\n\
             \x20 - type: syslog\n    name: udp\n    address: 127.0.0.1:{udp}\n    transport: udp\n    facility: local4\n    hostname: test-pod\n    app_name: sidecar-test\n    proc_id: '42'\n    msg_id: udp\n    body: record\n",
            tcp = rsyslog.tcp_port,
            udp = rsyslog.udp_port
        ),
    );
    let app_log = pod.path("logs/shop.log");
    write_text_lines(&app_log, 0, 100);
    let stages = pod.start_all();
    // One line longer than UDP's 2048-byte limit: cut over UDP (and counted), whole over TCP.
    let long = format!(
        "2026-11-22 10:30:45,123 - shop - INFO - LONG {}\n",
        "x".repeat(3000)
    );
    fs::OpenOptions::new()
        .append(true)
        .open(&app_log)
        .and_then(|mut f| std::io::Write::write_all(&mut f, long.as_bytes()))
        .unwrap();
    let arrived = |rsyslog: &Rsyslog, n: usize| {
        wait_until(DELIVERY_TIMEOUT, || {
            let lines = rsyslog.received();
            let count = |facility: &str| lines.iter().filter(|l| l[1] == facility).count();
            count("19") >= n && count("20") >= n
        })
    };
    assert!(
        arrived(&rsyslog, 101),
        "received: {:?}",
        rsyslog.received().len()
    );

    // A restart of rsyslog between batches: the TCP sink notices the closed connection and
    // sends the next batch on a new one.
    rsyslog.server.as_mut().unwrap().terminate();
    rsyslog.restart();
    write_text_lines(&app_log, 101, 200);
    assert!(
        arrived(&rsyslog, 200),
        "after the restart: {:?}",
        rsyslog.received().len()
    );
    std::thread::sleep(Duration::from_millis(300));
    let lines = rsyslog.received();

    let mut tcp_seqs = Vec::new();
    let mut udp_seqs = Vec::new();
    let mut truncated = 0;
    for l in &lines {
        assert_eq!(l.len(), 9, "{l:?}");
        let (pri, facility, severity) = (&l[0], &l[1], &l[2]);
        assert_eq!(l[3], "test-pod", "{l:?}");
        let sd = &l[7];
        assert!(
            sd.starts_with("[log@32473 id=\"") && sd.contains(" source=\"shop.log\""),
            "{l:?}"
        );
        let msg = &l[8];
        let seq_in = |message: &str| message.rsplit_once("seq=")?.1.parse::<u64>().ok();
        match facility.as_str() {
            "19" => {
                assert_eq!(l[4], "shop", "APP-NAME from the source file: {l:?}");
                assert_eq!(l[5], "-", "{l:?}");
                assert_eq!(l[6], "unknown", "MSGID is the log category: {l:?}");
                match seq_in(msg) {
                    Some(seq) => {
                        assert_eq!(
                            msg,
                            &format!("order \"{seq}\" ]done[ seq={seq}"),
                            "MSG is the message"
                        );
                        assert_eq!(severity, &severity_of(seq).to_string(), "{l:?}");
                        assert!(
                            sd.contains(&format!(
                                "level=\"{}\"",
                                ["ERROR", "WARNING", "INFO", "DEBUG"][(seq % 4) as usize]
                            )),
                            "{l:?}"
                        );
                        tcp_seqs.push(seq);
                    }
                    None => assert_eq!(msg.len(), 3005, "the long line arrives whole over TCP"),
                }
                assert_eq!(
                    pri,
                    &(19 * 8 + severity.parse::<u32>().unwrap()).to_string()
                );
            }
            "20" => {
                assert_eq!((&*l[4], &*l[5], &*l[6]), ("sidecar-test", "42", "udp"));
                assert_eq!(
                    pri,
                    &(20 * 8 + severity.parse::<u32>().unwrap()).to_string()
                );
                match serde_json::from_str::<Value>(msg) {
                    Ok(record) => {
                        let seq = seq_in(record["message"].as_str().unwrap()).expect("seq");
                        assert_eq!(
                            record["log_level"],
                            ["ERROR", "WARNING", "INFO", "DEBUG"][(seq % 4) as usize]
                        );
                        assert_eq!(severity, &severity_of(seq).to_string(), "{l:?}");
                        assert!(sd.contains(&format!("id=\"{}\"", record["id"].as_str().unwrap())));
                        udp_seqs.push(seq);
                    }
                    Err(_) => {
                        assert!(msg.contains("LONG xxxx"), "{msg}");
                        assert!(
                            l.iter().map(|f| f.len() + 1).sum::<usize>() < 2048,
                            "the cut message fits 2048 bytes"
                        );
                        truncated += 1;
                    }
                }
            }
            other => panic!("facility {other}: {l:?}"),
        }
    }
    let all: Vec<u64> = (0..200).filter(|&s| s != 100).collect();
    tcp_seqs.sort_unstable();
    udp_seqs.sort_unstable();
    assert_eq!(
        tcp_seqs, all,
        "TCP: every record once, in spite of the restart"
    );
    assert_eq!(udp_seqs, all, "UDP: every record once on loopback");
    assert_eq!(truncated, 1);
    let state = sink_state(&pod, "udp").expect("the udp sink's state is committed");
    assert_eq!(state["truncated"], 1, "{state}");
    drop(stages);
}

#[test]
fn bad_redis_and_syslog_configs_stop_the_forwarder_with_the_field_named() {
    let pod = Pod::new();
    write_forwarder_config(
        &pod,
        "  - type: redis\n    url: redis://u:topsecret@127.0.0.1:1/0\n    stream: s\n    password_env: LOG_SIDECARS_SURELY_UNSET\n",
    );
    let output = Command::new(e2e_tests::bin("forwarder"))
        .args(["--config"])
        .arg(pod.path("forwarder.yaml"))
        .args(["--input-dir"])
        .arg(pod.path("processed"))
        .args(["--listen", "127.0.0.1:0"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success());
    assert!(
        stderr.contains(
            "sinks[1].password_env: environment variable LOG_SIDECARS_SURELY_UNSET is not set"
        ),
        "{stderr}"
    );
    assert!(!stderr.contains("topsecret"), "{stderr}");
    write_forwarder_config(
        &pod,
        "  - type: syslog\n    address: 127.0.0.1:514\n    facility: local9\n",
    );
    let output = Command::new(e2e_tests::bin("forwarder"))
        .args(["--config"])
        .arg(pod.path("forwarder.yaml"))
        .args(["--input-dir"])
        .arg(pod.path("processed"))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success());
    assert!(stderr.contains("local9"), "{stderr}");
}

#[test]
fn rediss_with_a_ca_file_and_an_acl_user_whose_password_is_never_logged() {
    let mut pod = Pod::new();
    let Certificates {
        ca,
        server_cert: cert,
        server_key: key,
        ..
    } = make_certificates(&pod.path("tls"));
    let tls_port = free_port();
    let password = "s3cret-Pa55word";
    // Only the ACL user `forwarder` may do anything: the default user is off.
    let args: Vec<String> = [
        "--tls-port",
        &tls_port.to_string(),
        "--tls-cert-file",
        &cert.display().to_string(),
        "--tls-key-file",
        &key.display().to_string(),
        "--tls-ca-cert-file",
        &ca.display().to_string(),
        "--tls-auth-clients",
        "no",
        "--user",
        "default",
        "off",
        "--user",
        "forwarder",
        "on",
        &format!(">{password}"),
        "~*",
        "&*",
        "+@all",
    ]
    .iter()
    .map(|a| a.to_string())
    .collect();
    let redis = Redis::start_with(pod.path("redis"), args, &format!("forwarder:{password}@"));
    fs::write(pod.path("redis-password"), format!("{password}\n")).unwrap();
    write_forwarder_config(
        &pod,
        &format!(
            "  - type: redis\n    url: rediss://127.0.0.1:{tls_port}/0\n    stream: secure\n    username: forwarder\n    password_file: {}\n    ca_file: {}\n",
            pod.path("redis-password").display(),
            ca.display()
        ),
    );
    let mut access = Writer::open(pod.path("logs/access.log"), "access");
    access.write(200);
    let stages = pod.start_all();
    assert!(
        wait_until(DELIVERY_TIMEOUT, || redis.stream_len("secure") >= 200),
        "only {} of 200 arrived over TLS; forwarder log:\n{}",
        redis.stream_len("secure"),
        fs::read_to_string(&stages[2].log).unwrap_or_default()
    );
    let records: Vec<Value> = redis
        .stream("secure")
        .into_iter()
        .map(|(_, _, r)| r)
        .collect();
    let problems = exactly_once(&records, &[("access", 200)]);
    assert!(problems.is_empty(), "{problems}");
    let log = fs::read_to_string(&stages[2].log).unwrap();
    assert!(
        log.contains(&format!("rediss://127.0.0.1:{tls_port}/0")),
        "{log}"
    );
    assert!(!log.contains(password), "the password was logged:\n{log}");
}

/// Stands in for a hung redis: a listener that accepts connections and never answers.
#[test]
fn a_redis_that_never_answers_does_not_hold_shutdown_past_the_grace_period() {
    let mut pod = Pod::new();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let held = Arc::new(Mutex::new(Vec::new()));
    {
        let held = held.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                held.lock().unwrap().push(stream);
            }
        });
    }
    write_forwarder_config(
        &pod,
        &format!("  - type: redis\n    url: redis://127.0.0.1:{port}/0\n    stream: s\n    response_timeout: 3s\n"),
    );
    let mut access = Writer::open(pod.path("logs/access.log"), "access");
    access.write(50);
    let mut stages = pod.start_all();
    assert!(
        wait_until(Duration::from_secs(30), || !held.lock().unwrap().is_empty()),
        "the sink never connected"
    );
    std::thread::sleep(Duration::from_secs(1));
    let forwarder = stages.pop().unwrap();
    let log = forwarder.log.clone();
    let (status, took) = forwarder.terminate(Duration::from_secs(8));
    assert!(status.success(), "{status:?}");
    assert!(took < Duration::from_secs(8), "shutdown took {took:?}");
    let log = fs::read_to_string(log).unwrap();
    assert!(log.contains("Redis did not take the batch"), "{log}");
    // Nothing was acknowledged, so nothing was committed: a restart sends the records again.
    let state = sink_state(&pod, "redis");
    assert!(
        state.as_ref().is_none_or(|s| s["records"] == 0),
        "records counted as delivered: {state:?}"
    );
}

#[test]
fn syslog_over_tls_reaches_rsyslog_verified_by_a_ca_file() {
    let mut pod = Pod::new();
    let Certificates {
        ca,
        server_cert: cert,
        server_key: key,
        ..
    } = make_certificates(&pod.path("tls"));
    let rsyslog = Rsyslog::start_with(pod.path("rsyslog"), Some((ca.clone(), cert, key)));
    write_forwarder_config(
        &pod,
        &format!(
            "  - type: syslog\n    name: tls\n    address: 127.0.0.1:{}\n    transport: tls\n    ca_file: {}\n    facility: local5\n    hostname: test-pod\n",
            rsyslog.tcp_port,
            ca.display()
        ),
    );
    write_text_lines(&pod.path("logs/shop.log"), 0, 120);
    let stages = pod.start_all();
    assert!(
        wait_until(DELIVERY_TIMEOUT, || rsyslog.received().len() >= 120),
        "{} of 120 arrived over TLS; forwarder log:\n{}",
        rsyslog.received().len(),
        fs::read_to_string(&stages[2].log).unwrap_or_default()
    );
    std::thread::sleep(Duration::from_millis(300));
    let mut seqs = Vec::new();
    for l in rsyslog.received() {
        let seq: u64 = l[8].rsplit_once("seq=").unwrap().1.parse().unwrap();
        assert_eq!(l[0], (21 * 8 + severity_of(seq)).to_string(), "{l:?}");
        assert_eq!((&*l[3], &*l[4]), ("test-pod", "shop"), "{l:?}");
        seqs.push(seq);
    }
    seqs.sort_unstable();
    assert_eq!(seqs, (0..120).collect::<Vec<_>>());
}

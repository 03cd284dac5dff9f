//! The nats sink against a real JetStream cluster (issue #16): three `nats-server` nodes from
//! Debian's package (scripts/install-test-deps.sh installs it) on free loopback ports, each
//! with its own store under the test's temp dir, and a stream with three replicas and a
//! duplicate window, made by the test itself (Debian has no `nats` CLI).
//!
//! What a user relies on: the stream holds every record exactly once (message count and
//! distinct `Nats-Msg-Id`s both equal the lines written) while the stream's leader is killed
//! with SIGKILL and restarted, and while the forwarder itself is killed again and again
//! mid-delivery; a stream that does not exist stops the forwarder at start naming it, and a
//! bad subject template stops it at load naming the field.

use std::collections::HashSet;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use async_nats::jetstream::{self, consumer, stream};
use e2e_tests::{
    exactly_once, free_port, free_ports, require_program, wait_until, Pod, StageKind, Writer,
};
use serde_json::Value;

const STREAM: &str = "LOGS";

/// One nats-server node; killed (and reaped) when dropped.
struct Node {
    name: String,
    port: u16,
    cluster_port: u16,
    store: PathBuf,
    child: Option<Child>,
    starts: u32,
}

/// A JetStream cluster of `nodes.len()` nodes (one node: no clustering), and a runtime for
/// the test's own client.
struct Cluster {
    nodes: Vec<Node>,
    dir: PathBuf,
    runtime: tokio::runtime::Runtime,
}

impl Cluster {
    fn start(dir: &Path, size: usize) -> Self {
        // Taken together: ports taken one by one can repeat once released.
        let ports = free_ports(2 * size);
        let nodes = (1..=size)
            .map(|i| Node {
                name: format!("n{i}"),
                port: ports[2 * i - 2],
                cluster_port: ports[2 * i - 1],
                store: dir.join(format!("n{i}")),
                child: None,
                starts: 0,
            })
            .collect();
        let mut cluster = Self {
            nodes,
            dir: dir.to_owned(),
            runtime: tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap(),
        };
        for i in 0..size {
            cluster.start_node(i);
        }
        cluster
    }

    fn start_node(&mut self, i: usize) {
        let binary = require_program("nats-server");
        let routes: Vec<String> = self
            .nodes
            .iter()
            .map(|n| format!("nats-route://127.0.0.1:{}", n.cluster_port))
            .collect();
        let node = &mut self.nodes[i];
        node.starts += 1;
        fs::create_dir_all(&node.store).unwrap();
        let log_path = self.dir.join(format!("{}.{}.log", node.name, node.starts));
        let log = fs::File::create(&log_path).unwrap();
        let mut command = Command::new(binary);
        command.args(["-a", "127.0.0.1", "-p", &node.port.to_string()]);
        command.args(["-n", &node.name, "--js", "-sd"]);
        command.arg(&node.store);
        if routes.len() > 1 {
            command.args([
                "--cluster_name",
                "jsc",
                "--cluster",
                &format!("nats://127.0.0.1:{}", node.cluster_port),
                "--routes",
                &routes.join(","),
            ]);
        }
        node.child = Some(
            command
                .stdin(Stdio::null())
                .stdout(log.try_clone().unwrap())
                .stderr(log)
                .spawn()
                .unwrap(),
        );
        // Its own word that it is ready, not a connect: a port another process took meanwhile
        // accepts the connect while this server exits for want of it.
        let child = node.child.as_mut().unwrap();
        let ready = wait_until(Duration::from_secs(10), || {
            let said = fs::read_to_string(&log_path).unwrap_or_default();
            said.contains("Server is ready") || child.try_wait().is_ok_and(|s| s.is_some())
        });
        let said = fs::read_to_string(&log_path).unwrap_or_default();
        assert!(
            ready
                && said.contains("Server is ready")
                && child.try_wait().is_ok_and(|s| s.is_none()),
            "nats-server {} did not start:\n{said}",
            node.name
        );
    }

    /// SIGKILL: no chance to hand over leadership or flush.
    fn kill9(&mut self, i: usize) {
        if let Some(mut child) = self.nodes[i].child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    fn urls(&self) -> String {
        self.nodes
            .iter()
            .map(|n| format!("nats://127.0.0.1:{}", n.port))
            .collect::<Vec<_>>()
            .join(",")
    }

    fn js(&self) -> jetstream::Context {
        let urls: Vec<async_nats::ServerAddr> = self
            .nodes
            .iter()
            .filter(|n| n.child.is_some())
            .map(|n| format!("nats://127.0.0.1:{}", n.port).parse().unwrap())
            .collect();
        let client = self
            .runtime
            .block_on(
                async_nats::ConnectOptions::new()
                    .connection_timeout(Duration::from_secs(2))
                    .connect(urls),
            )
            .unwrap();
        // The context spawns its ack task on the runtime it is built in.
        let _runtime = self.runtime.enter();
        jetstream::new(client)
    }

    /// Creates the stream once JetStream has a meta leader (retrying until then).
    fn create_stream(&self, subjects: &[&str], window: Duration) {
        let replicas = self.nodes.len();
        let js = self.js();
        let config = stream::Config {
            name: STREAM.into(),
            subjects: subjects.iter().map(|s| (*s).to_owned()).collect(),
            num_replicas: replicas,
            duplicate_window: window,
            ..Default::default()
        };
        let mut last = String::new();
        let created = wait_until(Duration::from_secs(15), || {
            match self.runtime.block_on(js.create_stream(config.clone())) {
                Ok(_) => true,
                Err(e) => {
                    last = e.to_string();
                    false
                }
            }
        });
        assert!(created, "cannot create the stream: {last}");
    }

    fn info(&self) -> Option<stream::Info> {
        self.info_over(&self.js())
    }

    /// The stream's info over an open connection (for polling: `info` connects each time).
    fn info_over(&self, js: &jetstream::Context) -> Option<stream::Info> {
        self.runtime.block_on(async {
            let mut stream = js.get_stream(STREAM).await.ok()?;
            stream.info().await.ok().cloned()
        })
    }

    /// The node leading the stream's replicas.
    fn leader(&self) -> usize {
        let mut leader = None;
        assert!(
            wait_until(Duration::from_secs(10), || {
                leader = self
                    .info()
                    .and_then(|i| i.cluster?.leader)
                    .and_then(|name| self.nodes.iter().position(|n| n.name == name));
                leader.is_some()
            }),
            "the stream has no leader"
        );
        leader.unwrap()
    }

    fn message_count(&self) -> u64 {
        self.info().map_or(0, |i| i.state.messages)
    }

    /// Every message in the stream: (Nats-Msg-Id, payload decoded).
    fn messages(&self) -> Vec<(String, Value)> {
        let js = self.js();
        self.runtime.block_on(async {
            use futures_util::StreamExt as _;
            let stream = js.get_stream(STREAM).await.unwrap();
            let consumer = stream
                .create_consumer(consumer::pull::Config {
                    ack_policy: consumer::AckPolicy::None,
                    ..Default::default()
                })
                .await
                .unwrap();
            let mut out = Vec::new();
            loop {
                let mut batch = consumer
                    .fetch()
                    .max_messages(1000)
                    .messages()
                    .await
                    .unwrap();
                let before = out.len();
                while let Some(message) = batch.next().await {
                    let message = message.unwrap();
                    let id = message
                        .headers
                        .as_ref()
                        .and_then(|h| h.get("Nats-Msg-Id"))
                        .map(|v| v.as_str().to_owned())
                        .unwrap_or_default();
                    out.push((id, serde_json::from_slice(&message.payload).unwrap()));
                }
                if out.len() == before {
                    return out;
                }
            }
        })
    }

    /// Waits until the stream holds `n` messages, then checks they are the lines written,
    /// each exactly once, each under its own record id.
    fn assert_exactly_once(&self, expected: &[(&str, u64)], pod: &Pod) {
        let total: u64 = expected.iter().map(|(_, n)| n).sum();
        let reached = wait_until(Duration::from_secs(30), || self.message_count() >= total);
        // A straggling re-send would show up now.
        std::thread::sleep(Duration::from_millis(300));
        let messages = self.messages();
        assert!(
            reached,
            "the stream holds {} of {total} records; forwarder logs:\n{}",
            messages.len(),
            forwarder_logs(pod)
        );
        assert_eq!(self.message_count(), total);
        assert_eq!(messages.len() as u64, total);
        let ids: HashSet<&str> = messages.iter().map(|(id, _)| id.as_str()).collect();
        assert_eq!(ids.len() as u64, total, "distinct Nats-Msg-Id");
        for (id, record) in &messages {
            assert_eq!(record["id"].as_str(), Some(id.as_str()), "{record}");
        }
        let records: Vec<Value> = messages.into_iter().map(|(_, r)| r).collect();
        let problems = exactly_once(&records, expected);
        assert!(problems.is_empty(), "{problems}");
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for i in 0..self.nodes.len() {
            self.kill9(i);
        }
    }
}

fn forwarder_logs(pod: &Pod) -> String {
    let mut text = String::new();
    for entry in fs::read_dir(pod.dir.path()).unwrap().flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with("forwarder.") && name.ends_with(".log") {
            text.push_str(&format!("--- {name}\n"));
            text.push_str(&fs::read_to_string(entry.path()).unwrap_or_default());
        }
    }
    text
}

fn write_config(pod: &Pod, sink: &str) {
    fs::write(
        pod.path("forwarder.yaml"),
        format!("report:\n  interval: 1s\nsinks:\n{sink}"),
    )
    .unwrap();
}

/// A nats sink on `cluster` with short timeouts, so a lost ack is retried within the test.
fn nats_sink(cluster: &Cluster) -> String {
    format!(
        "  - type: nats\n    url: '{}'\n    stream: {STREAM}\n    subject: 'logs.{{source_file}}'\n    \
         connect_timeout: 1s\n    ack_timeout: 1s\n    max_in_flight: 64\n    \
         retry: {{initial_backoff: 50ms, max_backoff: 500ms}}\n",
        cluster.urls()
    )
}

#[test]
fn the_stream_holds_every_record_once_while_its_leader_is_killed_and_restarted() {
    let pod = Pod::new();
    let mut cluster = Cluster::start(&pod.path("nats"), 3);
    cluster.create_stream(&["logs.>"], Duration::from_secs(120));
    write_config(&pod, &nats_sink(&cluster));
    let mut pod = pod;
    let stages = pod.start_all();
    let mut access = Writer::open(pod.path("logs/access.log"), "access");
    let mut worker = Writer::open(pod.path("logs/worker.log"), "worker");
    let mut killed = None;
    for round in 0..16 {
        access.write(200);
        worker.write(100);
        std::thread::sleep(Duration::from_millis(100));
        if round == 4 {
            let leader = cluster.leader();
            cluster.kill9(leader);
            killed = Some(leader);
        }
        if round == 10 {
            cluster.start_node(killed.expect("killed at round 4"));
        }
    }
    cluster.assert_exactly_once(&[("access", 3200), ("worker", 1600)], &pod);
    drop(stages);
}

#[test]
fn the_stream_holds_every_record_once_when_the_forwarder_is_killed_mid_delivery() {
    let pod = Pod::new();
    let cluster = Cluster::start(&pod.path("nats"), 3);
    cluster.create_stream(&["logs.>"], Duration::from_secs(120));
    write_config(&pod, &nats_sink(&cluster));
    let mut pod = pod;
    let _collector = pod.start(StageKind::Collector);
    let _processor = pod.start(StageKind::Processor);
    let mut access = Writer::open(pod.path("logs/access.log"), "access");
    // Batches of thousands of records (a journal batch is up to 4 MiB), so that a forwarder
    // seen publishing is still far from its commit.
    access.write(20_000);
    let js = cluster.js();
    let stored = || cluster.info_over(&js).map(|i| i.state.messages);
    for _ in 0..5 {
        let before = stored().unwrap_or(0);
        let forwarder = pod.start(StageKind::Forwarder);
        access.write(400);
        // Killed as soon as the stream holds something new from it: mid-batch, so published
        // and not committed. (A kill after a fixed time let a fast forwarder commit first.)
        let deadline = Instant::now() + Duration::from_secs(30);
        while stored().unwrap_or(0) == before {
            assert!(
                Instant::now() < deadline,
                "the forwarder published nothing in 30 s"
            );
            std::thread::sleep(Duration::from_millis(1));
        }
        forwarder.kill9();
    }
    let forwarder = pod.start(StageKind::Forwarder);
    cluster.assert_exactly_once(&[("access", 22_000)], &pod);
    // The killed forwarders published without committing: the last one sent those records
    // again, and the stream said duplicate instead of storing them twice.
    let (_, metrics) = e2e_tests::http_get(forwarder.port, "/metrics").unwrap();
    let duplicates: u64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("forwarder_nats_duplicate_acks_total{sink=\"nats\"} "))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or(0);
    assert!(
        duplicates > 0,
        "no re-sent record was deduplicated:\n{metrics}"
    );
    drop(forwarder);
}

#[test]
fn a_missing_stream_stops_the_start_and_a_bad_subject_the_load() {
    let pod = Pod::new();
    let cluster = Cluster::start(&pod.path("nats"), 1);
    cluster.create_stream(&["logs.>"], Duration::from_secs(60));
    let run = || {
        Command::new(e2e_tests::bin("forwarder"))
            .arg("--config")
            .arg(pod.path("forwarder.yaml"))
            .arg("--input-dir")
            .arg(pod.path("processed"))
            .args(["--listen", "127.0.0.1:0", "--api-listen", "127.0.0.1:0"])
            .output()
            .unwrap()
    };
    let sink = nats_sink(&cluster);
    write_config(&pod, &sink.replace(STREAM, "NOPE"));
    let output = run();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "{stderr}");
    assert!(
        stderr.contains("sink nats") && stderr.contains("stream \"NOPE\" does not exist"),
        "{stderr}"
    );
    write_config(
        &pod,
        &sink.replace("logs.{source_file}", "other.{source_file}"),
    );
    let output = run();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "{stderr}");
    assert!(
        stderr.contains("captures [\"logs.>\"], which never match subject \"other.{source_file}\""),
        "{stderr}"
    );
    write_config(
        &pod,
        &sink.replace("logs.{source_file}", "logs.{source_file"),
    );
    let output = run();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "{stderr}");
    assert!(stderr.contains("sinks[0].subject: "), "{stderr}");
}

/// One JetStream node that wants TLS (a private CA) and a token, from a config file, as a
/// hardened NATS deployment does.
struct SecuredNode {
    port: u16,
    child: Child,
}

impl SecuredNode {
    fn start(dir: &Path, certs: &e2e_tests::Certificates, token: &str) -> Self {
        let port = free_port();
        let store = dir.join("store");
        fs::create_dir_all(&store).unwrap();
        let config = dir.join("nats.conf");
        fs::write(
            &config,
            format!(
                "listen: 127.0.0.1:{port}\njetstream {{ store_dir: {:?} }}\n\
                 authorization {{ token: {token:?} }}\n\
                 tls {{ cert_file: {:?}, key_file: {:?}, timeout: 2 }}\n",
                store.display().to_string(),
                certs.server_cert.display().to_string(),
                certs.server_key.display().to_string(),
            ),
        )
        .unwrap();
        let log = fs::File::create(dir.join("nats.log")).unwrap();
        let child = Command::new(require_program("nats-server"))
            .arg("-c")
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        assert!(
            wait_until(Duration::from_secs(10), || std::net::TcpStream::connect((
                "127.0.0.1",
                port
            ))
            .is_ok()),
            "the TLS nats-server did not listen: {}",
            fs::read_to_string(dir.join("nats.log")).unwrap_or_default()
        );
        Self { port, child }
    }

    /// The test's own client: TLS against the CA, with the token.
    fn js(&self, runtime: &tokio::runtime::Runtime, ca: &Path, token: &str) -> jetstream::Context {
        let url = format!("tls://127.0.0.1:{}", self.port);
        let client = runtime
            .block_on(
                async_nats::ConnectOptions::with_token(token.to_owned())
                    .add_root_certificates(ca.to_owned())
                    .require_tls(true)
                    .connection_timeout(Duration::from_secs(2))
                    .connect(url),
            )
            .unwrap();
        let _runtime = runtime.enter();
        jetstream::new(client)
    }
}

impl Drop for SecuredNode {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// TLS with a private CA and a token from a mounted file: with a wrong token the server refuses
/// every connect, nothing is lost meanwhile, and once the file holds the right token (a
/// rotated Secret) the records arrive, each once, without a restart.
#[test]
fn over_tls_with_a_token_file_a_wrong_token_waits_until_the_file_is_fixed() {
    let mut pod = Pod::new();
    let certs = e2e_tests::make_certificates(&pod.path("certs"));
    let node = SecuredNode::start(&pod.path("nats-tls"), &certs, "s3cret-t0ken");
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let js = node.js(&runtime, &certs.ca, "s3cret-t0ken");
    runtime
        .block_on(js.create_stream(stream::Config {
            name: STREAM.into(),
            subjects: vec!["logs.>".into()],
            duplicate_window: Duration::from_secs(120),
            ..Default::default()
        }))
        .unwrap();
    let token_file = pod.path("nats-token");
    fs::write(&token_file, "not-the-t0ken\n").unwrap();
    write_config(
        &pod,
        &format!(
            "  - type: nats\n    url: tls://127.0.0.1:{}\n    stream: {STREAM}\n    subject: 'logs.{{source_file}}'\n    \
             token_file: {}\n    tls: {{ca_file: {}}}\n    connect_timeout: 1s\n    ack_timeout: 1s\n    \
             retry: {{initial_backoff: 50ms, max_backoff: 500ms}}\n",
            node.port,
            token_file.display(),
            certs.ca.display()
        ),
    );
    let mut access = Writer::open(pod.path("logs/access.log"), "access");
    access.write(200);
    let _stages = pod.start_all();
    assert!(
        wait_until(Duration::from_secs(20), || forwarder_logs(&pod)
            .to_lowercase()
            .contains("authorization")),
        "the refusal is logged:\n{}",
        forwarder_logs(&pod)
    );
    let count = || {
        runtime.block_on(async {
            let mut stream = js.get_stream(STREAM).await.ok()?;
            stream.info().await.ok().map(|i| i.state.messages)
        })
    };
    assert_eq!(count(), Some(0), "nothing is published with a wrong token");
    // The kubelet's swap of a rotated Secret: a new file in the old one's place.
    fs::write(pod.path("nats-token.new"), "s3cret-t0ken\n").unwrap();
    fs::rename(pod.path("nats-token.new"), &token_file).unwrap();
    access.write(100);
    assert!(
        wait_until(Duration::from_secs(30), || count() == Some(300)),
        "the stream holds {:?} of 300 records; forwarder logs:\n{}",
        count(),
        forwarder_logs(&pod)
    );
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(count(), Some(300), "each once");
    let logs = forwarder_logs(&pod);
    assert!(
        !logs.contains("s3cret-t0ken"),
        "the token never reaches the log"
    );
}

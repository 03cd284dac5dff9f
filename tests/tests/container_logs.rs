//! A container's stdout and stderr as the container runtime writes them: CRI files (containerd,
//! CRI-O) with lines cut into `P` pieces and rotated the way the kubelet does it, and docker
//! json-file with its 16 KiB pieces, through kill -9 of the collector. Every line arrives once,
//! whole, with its stream; lines not in the format arrive flagged; `forwarder logs --stderr`
//! shows exactly one stream. (Issue #15.)

use std::collections::HashMap;
use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use e2e_tests::{bin, Pod, StageKind};
use serde_json::Value;

const DELIVERY_TIMEOUT: Duration = Duration::from_secs(90);

/// A small deterministic generator: the test repeats exactly when it fails.
struct Lcg(u64);

impl Lcg {
    fn next(&mut self, below: u64) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        (self.0 >> 33) % below
    }
}

/// Writes a container's lines the way containerd does: each line as one or more pieces, every
/// piece a `<time> <stream> <P|F> <text>` line, pieces of stdout and stderr interleaved; and
/// rotates the way the kubelet does: the file renamed to `<name>.<timestamp>`, a new one
/// started, and the rotated file before that compressed and removed.
struct CriWriter {
    dir: PathBuf,
    name: String,
    file: File,
    rng: Lcg,
    rotations: u32,
    /// Pieces not yet written, per stream: a line is written piece by piece over several
    /// calls, so the other stream's pieces come in between.
    open: HashMap<&'static str, Vec<String>>,
    /// Every line's text by stream, in order.
    written: Vec<(&'static str, String)>,
}

impl CriWriter {
    fn new(dir: &Path, name: &str, seed: u64) -> Self {
        fs::create_dir_all(dir).unwrap();
        Self {
            dir: dir.to_owned(),
            name: name.to_owned(),
            file: Self::open_new(&dir.join(name)),
            rng: Lcg(seed),
            rotations: 0,
            open: HashMap::new(),
            written: Vec::new(),
        }
    }

    fn open_new(path: &Path) -> File {
        OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .unwrap()
    }

    /// Starts a line on a random stream unless one is open there, and writes its next piece.
    fn step(&mut self) {
        let stream = if self.rng.next(3) == 0 {
            "stderr"
        } else {
            "stdout"
        };
        if !self.open.contains_key(stream) {
            let n = self.written.len();
            let text = format!(
                "line-{n} {stream} {}",
                "abcdefghij".repeat(self.rng.next(30) as usize)
            );
            let mut pieces = Vec::new();
            let mut rest = text.as_str();
            while !rest.is_empty() {
                let cut = (1 + self.rng.next(90) as usize).min(rest.len());
                pieces.push(rest[..cut].to_owned());
                rest = &rest[cut..];
            }
            pieces.reverse();
            self.written.push((stream, text));
            self.open.insert(stream, pieces);
        }
        let pieces = self.open.get_mut(stream).unwrap();
        let piece = pieces.pop().unwrap();
        let tag = if pieces.is_empty() { "F" } else { "P" };
        if pieces.is_empty() {
            self.open.remove(stream);
        }
        let n = self.written.len();
        writeln!(
            self.file,
            "2026-12-06T10:30:{:02}.{n:09}Z {stream} {tag} {piece}",
            n % 60
        )
        .unwrap();
    }

    /// The kubelet's rotation: rename, new file, older rotated file compressed.
    fn rotate(&mut self) {
        self.rotations += 1;
        let rotated = format!("{}.20261206-1030{:02}", self.name, self.rotations);
        fs::rename(self.dir.join(&self.name), self.dir.join(&rotated)).unwrap();
        self.file = Self::open_new(&self.dir.join(&self.name));
        if self.rotations >= 2 {
            let older = self.dir.join(format!(
                "{}.20261206-1030{:02}",
                self.name,
                self.rotations - 1
            ));
            let status = Command::new("gzip").arg(&older).status().unwrap();
            assert!(status.success(), "gzip {}", older.display());
        }
    }

    /// Writes every open line's remaining pieces.
    fn finish(&mut self) {
        while !self.open.is_empty() {
            self.step();
        }
    }
}

fn pod_watching(patterns: &[(&str, &str)]) -> Pod {
    let mut pod = Pod::new();
    let mut args = Vec::new();
    for (format, dir) in patterns {
        args.push("--watch".to_owned());
        args.push(format!("{format}:{}/*.log", pod.path(dir).display()));
    }
    pod.extra_args.insert(StageKind::Collector, args);
    pod
}

/// The texts `forwarder logs <args>` prints for the pod's processed journal, in order.
fn logs_texts(pod: &Pod, args: &[&str]) -> Vec<String> {
    let output = Command::new(bin("forwarder"))
        .arg("logs")
        .args(args)
        .args(["-o", "json", "--input-dir"])
        .arg(pod.path("processed"))
        .output()
        .unwrap();
    assert!(output.status.success(), "{output:?}");
    let shown: Vec<String> = String::from_utf8(output.stdout)
        .unwrap()
        .lines()
        .map(|l| {
            let record: Value = serde_json::from_str(l).unwrap();
            text_of(&record).unwrap().to_owned()
        })
        .collect();
    shown
}

fn text_of(record: &Value) -> Option<&str> {
    record["message"].as_str().or(record["line"].as_str())
}

#[test]
fn cri_lines_in_pieces_arrive_once_whole_with_their_stream_through_kills_and_rotation() {
    let mut pod = pod_watching(&[("cri", "containers")]);
    let mut w = CriWriter::new(&pod.path("containers"), "web.log", 15);
    let mut stages: Vec<_> = pod.start_all().into_iter().map(Some).collect();
    for round in 0..30 {
        for _ in 0..200 {
            w.step();
        }
        if round % 10 == 4 {
            w.rotate();
        }
        if round % 7 == 3 {
            let collector = stages[0].take().unwrap();
            collector.kill9();
            stages[0] = Some(pod.start(StageKind::Collector));
        }
        std::thread::sleep(Duration::from_millis(40));
    }
    w.finish();
    let records = pod.wait_delivered(w.written.len(), DELIVERY_TIMEOUT);
    let mut seen: HashMap<String, (usize, String)> = HashMap::new();
    for record in &records {
        let text = text_of(record).unwrap_or_default().to_owned();
        let stream = record["stream"].as_str().unwrap_or("none").to_owned();
        assert_eq!(record["source_file"], "web.log", "{record}");
        assert!(record.get("malformed").is_none(), "{record}");
        seen.entry(text).or_insert((0, stream)).0 += 1;
    }
    let mut problems = Vec::new();
    for (stream, text) in &w.written {
        match seen.get(text) {
            None => problems.push(format!("lost or cut: {text:.40}")),
            Some((n, _)) if *n > 1 => problems.push(format!("{n} times: {text:.40}")),
            Some((_, s)) if s != stream => problems.push(format!("on {s}: {text:.40}")),
            Some(_) => {}
        }
    }
    let first: Vec<_> = problems.iter().take(10).collect();
    assert!(
        problems.is_empty(),
        "{} problems, first: {first:?}",
        problems.len()
    );
    assert_eq!(records.len(), w.written.len());

    // `forwarder logs --stderr web.log`: exactly that container's stderr lines, in order.
    let shown = logs_texts(&pod, &["--stderr", "web.log"]);
    let mut stderr: Vec<&str> = (w.written.iter())
        .filter(|(s, _)| *s == "stderr")
        .map(|(_, t)| t.as_str())
        .collect();
    let mut shown_sorted: Vec<&str> = shown.iter().map(String::as_str).collect();
    stderr.sort_unstable();
    shown_sorted.sort_unstable();
    assert_eq!(shown_sorted, stderr);
}

#[test]
fn docker_pieces_join_and_lines_not_in_the_format_are_kept_flagged() {
    let mut pod = pod_watching(&[("docker", "docker"), ("cri", "containers")]);
    fs::create_dir_all(pod.path("docker")).unwrap();
    fs::create_dir_all(pod.path("containers")).unwrap();
    let _stages = pod.start_all();
    let long: String = (0..40 * 1024)
        .map(|i| (b'a' + (i % 26) as u8) as char)
        .collect();
    let mut docker = String::new();
    // docker cuts a line every 16 KiB; only the last piece ends with the newline.
    let pieces: Vec<&str> = long
        .as_bytes()
        .chunks(16 * 1024)
        .map(|c| std::str::from_utf8(c).unwrap())
        .collect();
    for (i, piece) in pieces.iter().enumerate() {
        let log = if i + 1 == pieces.len() {
            format!("{piece}\n")
        } else {
            (*piece).to_owned()
        };
        let line = serde_json::json!({"log": log, "stream": "stdout", "time": "2026-12-06T10:30:45.000000001Z"});
        docker.push_str(&format!("{line}\n"));
    }
    docker.push_str("{\"log\": \"half a record\n");
    docker.push_str(&format!(
        "{}\n",
        serde_json::json!({"log": "oops \"quoted\"\n", "stream": "stderr", "time": "2026-12-06T10:30:46Z"})
    ));
    fs::write(pod.path("docker/api.log"), docker).unwrap();
    fs::write(
        pod.path("containers/db.log"),
        "2026-12-06T10:30:45.1Z stdout F ready\nnot a cri line at all\n2026-12-06T10:30:45.2Z stderr F failed\n",
    )
    .unwrap();
    let records = pod.wait_delivered(6, DELIVERY_TIMEOUT);
    let by_text: HashMap<&str, &Value> = records.iter().map(|r| (text_of(r).unwrap(), r)).collect();
    let texts: Vec<String> = by_text.keys().map(|t| format!("{t:.60}")).collect();
    assert_eq!(records.len(), 6, "{texts:?}");
    let joined = by_text[long.as_str()];
    assert_eq!(joined["stream"], "stdout");
    assert_eq!(joined["logged_at"], "2026-12-06T10:30:45.000000001Z");
    assert_eq!(by_text["oops \"quoted\""]["stream"], "stderr");
    assert_eq!(by_text["failed"]["stream"], "stderr");
    assert_eq!(by_text["ready"]["stream"], "stdout");
    for bad in ["{\"log\": \"half a record", "not a cri line at all"] {
        let record = by_text[bad];
        assert_eq!(record["malformed"], true, "{record}");
        assert!(record.get("stream").is_none(), "{record}");
    }
}

/// Node mode: the kubelet's tree `<namespace>_<pod>_<uid>/<container>/0.log` under one root,
/// every file called `0.log`, pods starting while the collector runs, rotations and kills.
/// Every line arrives once, whole, with its stream and the pod and container its path names;
/// `forwarder logs --stderr --container web --pod …` shows exactly that container's stderr.
#[test]
fn node_mode_tails_the_kubelet_tree_and_selects_a_container_by_name() {
    let mut pod = Pod::new();
    let root = pod.path("pods");
    pod.extra_args.insert(
        StageKind::Collector,
        vec![
            "--watch".into(),
            format!("cri:{}/*/*/*.log", root.display()),
        ],
    );
    pod.extra_args.insert(
        StageKind::Processor,
        vec![
            "--kubernetes-metadata".into(),
            "node".into(),
            // No API server in this test: records carry what the path says (the API's part
            // is tested in kubernetes_api.rs). A closed port answers at once.
            "--kubernetes-api-url".into(),
            format!("http://127.0.0.1:{}", e2e_tests::free_port()),
        ],
    );
    pod.extra_env.insert(
        StageKind::Processor,
        vec![("NODE_NAME".into(), "node-1".into())],
    );
    let containers = [
        ("default", "web-7c9d5-x2p4q", "0f3c1a2b-0001", "web"),
        ("default", "web-7c9d5-x2p4q", "0f3c1a2b-0001", "proxy"),
        ("shop", "web-55d4f-k8s2m", "9a8b7c6d-0002", "web"),
        ("shop", "db-0", "5e6f7a8b-0003", "db"),
    ];
    let dir_of = |(ns, name, uid, container): (&str, &str, &str, &str)| {
        root.join(format!("{ns}_{name}_{uid}")).join(container)
    };
    // The first three pods exist at start; the last starts while the collector runs.
    let mut writers: Vec<CriWriter> = containers[..3]
        .iter()
        .enumerate()
        .map(|(i, c)| CriWriter::new(&dir_of(*c), "0.log", 100 + i as u64))
        .collect();
    let mut stages: Vec<_> = pod.start_all().into_iter().map(Some).collect();
    for round in 0..24 {
        if round == 6 {
            writers.push(CriWriter::new(&dir_of(containers[3]), "0.log", 200));
        }
        for writer in &mut writers {
            for _ in 0..40 {
                writer.step();
            }
        }
        if round % 8 == 5 {
            for writer in &mut writers {
                writer.rotate();
            }
        }
        if round % 9 == 4 {
            stages[0].take().unwrap().kill9();
            stages[0] = Some(pod.start(StageKind::Collector));
        }
        std::thread::sleep(Duration::from_millis(40));
    }
    let mut expected = 0;
    for writer in &mut writers {
        writer.finish();
        expected += writer.written.len();
    }
    let records = pod.wait_delivered(expected, DELIVERY_TIMEOUT);
    assert_eq!(records.len(), expected);
    for (writer, &(ns, name, uid, container)) in writers.iter().zip(&containers) {
        let source = format!("{ns}_{name}_{uid}/{container}/0.log");
        let mine: Vec<&Value> = records
            .iter()
            .filter(|r| r["source_file"] == source.as_str())
            .collect();
        let mut got: Vec<(String, String)> = mine
            .iter()
            .map(|r| {
                (
                    r["stream"].as_str().unwrap_or("none").to_owned(),
                    text_of(r).unwrap_or_default().to_owned(),
                )
            })
            .collect();
        let mut want: Vec<(String, String)> = (writer.written.iter())
            .map(|(s, t)| ((*s).to_owned(), t.clone()))
            .collect();
        got.sort_unstable();
        want.sort_unstable();
        assert!(
            got == want,
            "{source}: {} records, {} lines written",
            got.len(),
            want.len()
        );
        let k8s = &mine[0]["kubernetes"];
        assert_eq!(k8s["namespace"], ns, "{k8s}");
        assert_eq!(k8s["pod_name"], name, "{k8s}");
        assert_eq!(k8s["pod_uid"], uid, "{k8s}");
        assert_eq!(k8s["container_name"], container, "{k8s}");
        assert_eq!(k8s["node_name"], "node-1", "{k8s}");
    }

    // One container of one pod: `web` runs in two pods, so the pod picks it out.
    let shown = logs_texts(
        &pod,
        &["--stderr", "--container", "web", "--pod", "web-55d4f-k8s2m"],
    );
    let want: Vec<String> = (writers[2].written.iter())
        .filter(|(s, _)| *s == "stderr")
        .map(|(_, t)| t.clone())
        .collect();
    assert!(!want.is_empty());
    assert_eq!(shown, want, "in the order written, each once");
}

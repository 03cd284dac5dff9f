//! Helpers for whole-process tests: find the real binaries, run them against a temp directory
//! laid out like the pod's volumes, write numbered lines as an application would, and read
//! back what reached the file sink.
//!
//! Easy to get wrong: readiness. A stage is "up" when its /healthz answers, not when the
//! process exists; every helper here waits on an observable condition with a deadline.

pub mod fake_http;
pub mod kube_api;

use std::collections::HashMap;
use std::fs::{self, File, OpenOptions};
use std::io::{BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use sidecar_core::record::CollectedRecord;

/// Runs `command` to its end and returns what it printed; panics, naming the command and
/// quoting its stderr, when it fails.
pub fn stdout_of(command: &mut Command) -> String {
    let output = command
        .output()
        .unwrap_or_else(|e| panic!("{command:?}: {e}"));
    assert!(
        output.status.success(),
        "{command:?}: {}\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).expect("UTF-8 output")
}

/// The directory holding the workspace's built binaries (`target/debug` for `cargo test`).
pub fn bin_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("the test binary knows its path");
    // target/debug/deps/<test> → target/debug
    exe.parent()
        .and_then(Path::parent)
        .expect("test binaries live in target/<profile>/deps")
        .to_owned()
}

/// The path of a workspace binary, which must have been built (`cargo build --workspace --bins`;
/// the README's test command does this first).
pub fn bin(name: &str) -> PathBuf {
    let path = bin_dir().join(name);
    assert!(
        path.exists(),
        "{} is missing: run `cargo build --workspace --bins` first (scripts/test.sh does)",
        path.display()
    );
    path
}

/// Where a program the tests run is: on `PATH`, or where Debian installs system programs
/// (`/usr/sbin` is not on a user's `PATH`).
pub fn find_program(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/bin", "/usr/sbin", "/usr/local/bin", "/usr/local/sbin"].map(PathBuf::from))
        .map(|dir| dir.join(name))
        .find(|p| p.is_file())
}

/// `found`, or a panic naming what is missing and the script that installs it: tests never
/// install anything themselves (that needs root and apt, and its output buried the test log).
pub fn require_tool(what: &str, found: Option<PathBuf>) -> PathBuf {
    found.unwrap_or_else(|| {
        panic!(
            "{what} is missing: run scripts/install-test-deps.sh (scripts/test.sh does; it needs \
             root and apt, and says how to install by hand elsewhere)"
        )
    })
}

/// A program the tests run, found by [`find_program`]; panics naming it when missing.
pub fn require_program(name: &str) -> PathBuf {
    require_tool(name, find_program(name))
}

/// Whether the tests run as root (CI does): only root can start a stage as another user.
pub fn is_root() -> bool {
    fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .map(|l| l.split_whitespace().nth(1) == Some("0"))
        })
        .unwrap_or(false)
}

/// A loopback port that was free a moment ago.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// `n` distinct free ports: each listener is held until all are bound, since ports taken one
/// by one with [`free_port`] can repeat once released.
pub fn free_ports(n: usize) -> Vec<u16> {
    let listeners: Vec<TcpListener> = (0..n)
        .map(|_| TcpListener::bind("127.0.0.1:0").unwrap())
        .collect();
    listeners
        .iter()
        .map(|l| l.local_addr().unwrap().port())
        .collect()
}

/// Polls `condition` every 50 ms until it holds or `timeout` passes; returns whether it held.
pub fn wait_until(timeout: Duration, mut condition: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if condition() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A plain HTTP GET on loopback; returns (status, body). Tests only: the sidecars' servers are
/// axum, and this speaks the minimal HTTP/1.1 they need to answer.
pub fn http_get(port: u16, path: &str) -> std::io::Result<(u16, String)> {
    let mut stream = TcpStream::connect(("127.0.0.1", port))?;
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
    )?;
    let mut response = String::new();
    stream.read_to_string(&mut response)?;
    let status = response
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    Ok((status, body))
}

/// Which sidecar.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum StageKind {
    /// The collector.
    Collector,
    /// The processor.
    Processor,
    /// The forwarder.
    Forwarder,
}

impl StageKind {
    /// All three, upstream first.
    pub const ALL: [StageKind; 3] = [
        StageKind::Collector,
        StageKind::Processor,
        StageKind::Forwarder,
    ];

    /// The binary's name.
    pub fn binary(self) -> &'static str {
        match self {
            StageKind::Collector => "collector",
            StageKind::Processor => "processor",
            StageKind::Forwarder => "forwarder",
        }
    }
}

/// A running sidecar process.
pub struct Stage {
    /// Which one.
    pub kind: StageKind,
    /// Its /healthz and /metrics port.
    pub port: u16,
    /// The forwarder's query API port (0 for the other stages).
    pub api_port: u16,
    child: Child,
    /// Where its stdout and stderr go.
    pub log: PathBuf,
}

impl Stage {
    /// Sends SIGTERM and waits up to `timeout` for the exit; returns the status and how long it took.
    pub fn terminate(mut self, timeout: Duration) -> (ExitStatus, Duration) {
        let started = Instant::now();
        signal(&self.child, "-TERM");
        let deadline = started + timeout;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return (status, started.elapsed());
            }
            if Instant::now() >= deadline {
                let _ = self.child.kill();
                panic!(
                    "{} did not exit within {timeout:?} of SIGTERM; log:\n{}",
                    self.kind.binary(),
                    fs::read_to_string(&self.log).unwrap_or_default()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGKILL, as the OOM killer or a node failure would.
    pub fn kill9(mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Stage {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Sends a signal with kill(1): the workspace forbids `unsafe`, which libc::kill needs.
fn signal(child: &Child, name: &str) {
    Command::new("kill")
        .arg(name)
        .arg(child.id().to_string())
        .status()
        .expect("kill(1) runs (procps; scripts/install-test-deps.sh installs it)");
}

/// A temp directory laid out like the pod: `logs/` (the apps' emptyDir), `collected/`,
/// `processed/` (the journals), `out/` (the file sink), and the config files.
pub struct Pod {
    /// The root.
    pub dir: tempfile::TempDir,
    /// Extra flags per stage.
    pub extra_args: HashMap<StageKind, Vec<String>>,
    /// Run a stage as this uid and gid instead of the test's own (needs root).
    pub run_as: HashMap<StageKind, u32>,
    /// Extra environment variables per stage, as the pod spec's `env` gives them.
    pub extra_env: HashMap<StageKind, Vec<(String, String)>>,
    starts: u32,
}

impl Default for Pod {
    fn default() -> Self {
        Self::new()
    }
}

impl Pod {
    /// A fresh layout with the default rules and a forwarder config writing to `out/`.
    pub fn new() -> Self {
        let mut dir = tempfile::tempdir().unwrap();
        // E2E_KEEP_PODS=1 keeps every pod directory (logs, journals, stage logs) to look at.
        if std::env::var_os("E2E_KEEP_PODS").is_some() {
            dir.disable_cleanup(true);
            eprintln!("keeping pod directory {}", dir.path().display());
        }
        for sub in ["logs", "collected", "processed", "out"] {
            fs::create_dir_all(dir.path().join(sub)).unwrap();
        }
        let rules = Path::new(env!("CARGO_MANIFEST_DIR")).join("../processor/rules/default.yaml");
        fs::copy(rules, dir.path().join("rules.yaml")).unwrap();
        fs::write(
            dir.path().join("forwarder.yaml"),
            format!(
                "report:\n  interval: 1s\n  latest_records: 3\nsinks:\n  - type: file\n    name: archive\n    directory: {}\n    per_source: true\n    max_file_bytes: 256KiB\n",
                dir.path().join("out").display()
            ),
        )
        .unwrap();
        Self {
            dir,
            extra_args: HashMap::new(),
            run_as: HashMap::new(),
            extra_env: HashMap::new(),
            starts: 0,
        }
    }

    /// A path inside the pod directory.
    pub fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    /// Starts a stage and waits until its /healthz answers 200. A port taken between
    /// [`free_port`] and the stage's bind (by a test running beside this one) is a race of the
    /// tests, not a failure of the stage: it is started again on other ports.
    pub fn start(&mut self, kind: StageKind) -> Stage {
        const ATTEMPTS: usize = 5;
        for _ in 1..ATTEMPTS {
            match self.try_start(kind) {
                Ok(stage) => return stage,
                Err(log) if log.contains("Address already in use") => continue,
                Err(log) => panic!("{} did not come up; log:\n{log}", kind.binary()),
            }
        }
        self.try_start(kind)
            .unwrap_or_else(|log| panic!("{} did not come up; log:\n{log}", kind.binary()))
    }

    /// Starts a stage on free ports; its log when it does not come up.
    fn try_start(&mut self, kind: StageKind) -> Result<Stage, String> {
        let port = free_port();
        let api_port = if kind == StageKind::Forwarder {
            free_port()
        } else {
            0
        };
        let d = self.dir.path();
        let mut args: Vec<String> = match kind {
            StageKind::Collector => vec![
                "--watch".into(),
                format!("{}/*.log", d.join("logs").display()),
                "--journal-dir".into(),
                d.join("collected").display().to_string(),
                "--rotated-close-after".into(),
                "1s".into(),
            ],
            StageKind::Processor => vec![
                "--rules".into(),
                d.join("rules.yaml").display().to_string(),
                "--input-dir".into(),
                d.join("collected").display().to_string(),
                "--journal-dir".into(),
                d.join("processed").display().to_string(),
            ],
            StageKind::Forwarder => vec![
                "--config".into(),
                d.join("forwarder.yaml").display().to_string(),
                "--input-dir".into(),
                d.join("processed").display().to_string(),
                "--api-listen".into(),
                format!("127.0.0.1:{api_port}"),
            ],
        };
        args.extend(["--listen".into(), format!("127.0.0.1:{port}")]);
        args.extend(self.extra_args.get(&kind).cloned().unwrap_or_default());
        self.starts += 1;
        let log = d.join(format!("{}.{}.log", kind.binary(), self.starts));
        let out = File::create(&log).unwrap();
        let mut command = match self.run_as.get(&kind) {
            Some(&id) => {
                use std::os::unix::process::CommandExt as _;
                // The build tree may sit in a directory only its owner can enter: run a copy.
                let copy = d.join(kind.binary());
                if !copy.exists() {
                    fs::copy(bin(kind.binary()), &copy).unwrap();
                }
                let mut command = Command::new(copy);
                command.uid(id).gid(id);
                command
            }
            None => Command::new(bin(kind.binary())),
        };
        let child = command
            .args(&args)
            .env("RUST_BACKTRACE", "0")
            .envs(self.extra_env.get(&kind).cloned().unwrap_or_default())
            .stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .spawn()
            .unwrap();
        let mut stage = Stage {
            kind,
            port,
            api_port,
            child,
            log,
        };
        let up = wait_until(Duration::from_secs(20), || {
            matches!(http_get(port, "/healthz"), Ok((200, _)))
                || stage.child.try_wait().unwrap().is_some()
        });
        if up && stage.child.try_wait().unwrap().is_none() {
            return Ok(stage);
        }
        Err(fs::read_to_string(&stage.log).unwrap_or_default())
    }

    /// Starts all three stages, upstream first.
    pub fn start_all(&mut self) -> Vec<Stage> {
        StageKind::ALL.iter().map(|&k| self.start(k)).collect()
    }

    /// Every record in the file sink's output, in file order (gzipped files included).
    pub fn delivered(&self) -> Vec<Value> {
        read_delivered(&self.path("out"))
    }

    /// How many records were delivered: lines in the sink's files, counted without decoding.
    pub fn delivered_count(&self) -> usize {
        let names: Vec<String> = fs::read_dir(self.path("out"))
            .unwrap()
            .filter_map(|e| e.ok()?.file_name().into_string().ok())
            .collect();
        let mut count = 0;
        for name in &names {
            let path = self.path("out").join(name);
            let Ok(file) = File::open(&path) else {
                continue;
            };
            let mut bytes = Vec::new();
            let read = if name.ends_with(".ndjson.gz") {
                flate2::read::GzDecoder::new(file).read_to_end(&mut bytes)
            } else if name.ends_with(".ndjson") && !names.contains(&format!("{name}.gz")) {
                BufReader::new(file).read_to_end(&mut bytes)
            } else {
                continue;
            };
            if read.is_ok() {
                count += bytes.iter().filter(|&&b| b == b'\n').count();
            }
        }
        count
    }

    /// Waits until at least `n` records were delivered; returns them.
    pub fn wait_delivered(&self, n: usize, timeout: Duration) -> Vec<Value> {
        let mut last = Vec::new();
        let ok = wait_until(timeout, || {
            last = self.delivered();
            last.len() >= n
        });
        assert!(
            ok,
            "only {} of {n} records were delivered within {timeout:?}",
            last.len()
        );
        // Give a straggling duplicate the chance to show up before the caller counts.
        std::thread::sleep(Duration::from_millis(300));
        self.delivered()
    }
}

/// Every record in a file sink's directory, in file order (gzipped files included).
pub fn read_delivered(dir: &Path) -> Vec<Value> {
    let names: Vec<String> = fs::read_dir(dir)
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .collect();
    // A closed file is briefly there both plain and gzipped: count the gzipped copy only.
    let mut paths: Vec<PathBuf> = names
        .iter()
        .filter(|n| {
            n.ends_with(".ndjson.gz")
                || (n.ends_with(".ndjson") && !names.contains(&format!("{n}.gz")))
        })
        .map(|n| dir.join(n))
        .collect();
    paths.sort();
    let mut records = Vec::new();
    for path in paths {
        let (path, file) = match File::open(&path) {
            Ok(f) => (path, f),
            // Compressed and removed between listing and opening: read the gzipped copy.
            Err(_) => {
                let gz = path.with_extension("ndjson.gz");
                match File::open(&gz) {
                    Ok(f) => (gz, f),
                    Err(_) => continue,
                }
            }
        };
        let mut reader: Box<dyn Read> = if path.extension().is_some_and(|e| e == "gz") {
            Box::new(flate2::read::GzDecoder::new(file))
        } else {
            Box::new(file)
        };
        let mut text = String::new();
        reader
            .read_to_string(&mut text)
            .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        // The sink may be writing the last line as this reads it: only whole lines count,
        // the rest is there at the next look.
        for line in text.split_inclusive('\n').filter(|l| l.ends_with('\n')) {
            let line = line.trim_end_matches('\n');
            records.push(
                serde_json::from_str(line)
                    .unwrap_or_else(|e| panic!("{}: not JSON ({e}): {line}", path.display())),
            );
        }
    }
    records
}

/// An application writing numbered JSON lines in the Python-logging layout, like the demo apps.
pub struct Writer {
    path: PathBuf,
    /// The `file` field every line carries, so rotated lines stay attributable.
    pub name: String,
    file: File,
    /// The next sequence number.
    pub next: u64,
}

impl Writer {
    /// Opens (creates) `path` for appending, as an app's logger does.
    pub fn open(path: PathBuf, name: &str) -> Self {
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .unwrap();
        Self {
            path,
            name: name.to_owned(),
            file,
            next: 0,
        }
    }

    /// Appends `n` lines in one write.
    pub fn write(&mut self, n: u64) {
        let mut text = String::new();
        for _ in 0..n {
            text.push_str(&format!(
                "2026-11-22 10:30:45,123 - {{\"file\":\"{}\",\"seq\":{},\"type\":\"response\",\"method\":\"GET\",\"path\":\"/users?page={}\",\"status_code\":{},\"execution_time_ms\":{},\"status\":\"{}\"}}\n",
                self.name,
                self.next,
                self.next,
                [200, 404, 503][(self.next % 3) as usize],
                self.next % 7000,
                if self.next.is_multiple_of(10) { "failed" } else { "completed" },
            ));
            self.next += 1;
        }
        self.file.write_all(text.as_bytes()).unwrap();
    }

    /// Rename rotation: the current file moves to `<path>.1` (the writer keeps writing to it
    /// until `reopen`), as logrotate's `create` mode does.
    pub fn rotate_rename(&mut self, suffix: &str) {
        let mut rotated = self.path.clone().into_os_string();
        rotated.push(suffix);
        fs::rename(&self.path, rotated).unwrap();
    }

    /// Opens the file at the path again (after a rotation).
    pub fn reopen(&mut self) {
        self.file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.path)
            .unwrap();
    }

    /// copytruncate: copy the content aside, then truncate the file in place; the writer keeps
    /// its O_APPEND descriptor.
    pub fn copytruncate(&mut self, suffix: &str) {
        let mut rotated = self.path.clone().into_os_string();
        rotated.push(suffix);
        fs::copy(&self.path, rotated).unwrap();
        OpenOptions::new()
            .write(true)
            .open(&self.path)
            .unwrap()
            .set_len(0)
            .unwrap();
    }
}

/// What arrived of what was written: per (file, seq), how many times.
#[derive(Debug, Default)]
pub struct Tally {
    /// Lines written.
    pub written: u64,
    /// Records delivered that carry a (file, seq).
    pub delivered: u64,
    /// (file, seq) written but never delivered.
    pub lost: Vec<(String, u64)>,
    /// (file, seq) delivered more than once.
    pub duplicated: Vec<(String, u64)>,
}

/// Counts what of `expected` (file name, lines written as seq 0..n) arrived in `records`.
pub fn tally(records: &[Value], expected: &[(&str, u64)]) -> Tally {
    let mut seen: HashMap<(String, u64), u32> = HashMap::new();
    for r in records {
        if let (Some(file), Some(seq)) = (r["file"].as_str(), r["seq"].as_u64()) {
            *seen.entry((file.to_owned(), seq)).or_default() += 1;
        }
    }
    let mut t = Tally {
        delivered: seen.values().map(|n| u64::from(*n)).sum(),
        ..Tally::default()
    };
    for &(file, count) in expected {
        t.written += count;
        for seq in 0..count {
            match seen.get(&(file.to_owned(), seq)) {
                None => t.lost.push((file.to_owned(), seq)),
                Some(n) if *n > 1 => t.duplicated.push((file.to_owned(), seq)),
                Some(_) => {}
            }
        }
    }
    t
}

/// Checks that every (file, seq) in `expected` arrived exactly once; returns a description of
/// what is lost and duplicated (empty when all is well).
pub fn exactly_once(records: &[Value], expected: &[(&str, u64)]) -> String {
    let t = tally(records, expected);
    let mut problems = Vec::new();
    if !t.lost.is_empty() {
        problems.push(format!(
            "{} lost (first {:?})",
            t.lost.len(),
            &t.lost[..t.lost.len().min(10)]
        ));
    }
    if !t.duplicated.is_empty() {
        problems.push(format!(
            "{} duplicated (first {:?})",
            t.duplicated.len(),
            &t.duplicated[..t.duplicated.len().min(10)]
        ));
    }
    if records.len() as u64 != t.written && problems.is_empty() {
        problems.push(format!(
            "{} records delivered for {} lines written",
            records.len(),
            t.written
        ));
    }
    problems.join("; ")
}

/// Appends `text` to the pod's log file `file` in one write, as a logging library writes a
/// record (a traceback included).
pub fn append(pod: &Pod, file: &str, text: &str) {
    let mut f = OpenOptions::new()
        .create(true)
        .append(true)
        .open(pod.path("logs").join(file))
        .unwrap();
    f.write_all(text.as_bytes()).unwrap();
}

/// The processor's commit file, decoded (`null` before the first commit).
pub fn processor_commit(pod: &Pod) -> Value {
    checkpoint(&pod.path("processed/commit.json"))
}

/// A commit or cursor file's content, decoded (`null` while there is none).
pub fn checkpoint(path: &Path) -> Value {
    sidecar_core::checkpoint::load::<Value>(path)
        .ok()
        .flatten()
        .unwrap_or(Value::Null)
}

/// The collected journal's segments, in order: (segment number, bytes).
fn collected_segments(pod: &Pod) -> Vec<(u64, Vec<u8>)> {
    let mut segments: Vec<(u64, PathBuf)> = fs::read_dir(pod.path("collected"))
        .unwrap()
        .filter_map(|e| {
            let path = e.ok()?.path();
            let name = path.file_name()?.to_str()?;
            let number = name
                .strip_prefix("segment-")?
                .strip_suffix(".ndjson")?
                .parse()
                .ok()?;
            Some((number, path))
        })
        .collect();
    segments.sort();
    (segments.into_iter())
        .filter_map(|(number, path)| Some((number, fs::read(path).ok()?)))
        .collect()
}

/// Where the collected record whose line is `line` starts in the collected journal:
/// (segment, offset).
pub fn collected_position(pod: &Pod, line: &str) -> Option<(u64, u64)> {
    for (segment, bytes) in collected_segments(pod) {
        let mut offset = 0u64;
        for record in bytes.split_inclusive(|&b| b == b'\n') {
            let decoded = CollectedRecord::decode(record.strip_suffix(b"\n").unwrap_or(record));
            if decoded.is_ok_and(|r| r.line == line) {
                return Some((segment, offset));
            }
            offset += record.len() as u64;
        }
    }
    None
}

/// Every line in the collected journal, in journal order.
pub fn collected_lines(pod: &Pod) -> Vec<String> {
    let mut lines = Vec::new();
    for (_, bytes) in collected_segments(pod) {
        for record in sidecar_core::journal::records(&bytes) {
            let decoded = CollectedRecord::decode(record).expect("collected records decode");
            lines.push(decoded.line.to_string());
        }
    }
    lines
}

/// How many records the collector has committed (0 before its first commit).
pub fn collector_committed_records(pod: &Pod) -> u64 {
    checkpoint(&pod.path("collected/commit.json"))["records"]
        .as_u64()
        .unwrap_or(0)
}

/// Whether the processor's last commit holds a waiting multiline record back and had read past
/// the collected line `line`: the record is open in the processor, not yet delivered.
pub fn processor_holds_open_past(pod: &Pod, line: &str) -> bool {
    let Some(at) = collected_position(pod, line) else {
        return false;
    };
    let commit = processor_commit(pod);
    let replay = &commit["input"]["replay"];
    let end = &replay["end"];
    replay["pending"].as_object().is_some_and(|p| !p.is_empty())
        && end.is_object()
        && (
            end["segment"].as_u64().unwrap(),
            end["offset"].as_u64().unwrap(),
        ) > at
}

/// The sum of a metric's samples whose line starts with `name` (a name, or a name with the
/// start of its labels) on a stage's /metrics page.
pub fn metric(port: u16, name: &str) -> f64 {
    let (_, body) = http_get(port, "/metrics").unwrap();
    body.lines()
        .filter(|l| l.starts_with(name))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// The entries of a sink's dead-letter journal (`{sink, status, reason, record}` each).
pub fn dead_letters(pod: &Pod, sink: &str) -> Vec<Value> {
    let dir = pod.path(&format!("processed/dead-letter/{sink}"));
    let mut reader =
        sidecar_core::journal::JournalReader::new(&dir, sidecar_core::journal::Position::default());
    let Some(end) = reader.committed_end().unwrap() else {
        return Vec::new();
    };
    let mut buf = Vec::new();
    let mut out = Vec::new();
    while reader.read_batch(end, 1 << 20, &mut buf).unwrap() > 0 {
        out.extend(
            sidecar_core::journal::records(&buf)
                .map(|l| serde_json::from_slice::<Value>(l).unwrap()),
        );
    }
    out
}

/// Writes `secret` as version `version` of a Secret volume in `dir`, the way the kubelet
/// does: the file in a new timestamped directory, then `..data` swapped to it atomically;
/// `dir/token` links through `..data`.
pub fn write_secret_version(dir: &Path, version: &str, secret: &str) {
    let versioned = dir.join(format!("..{version}"));
    fs::create_dir_all(&versioned).unwrap();
    fs::write(versioned.join("token"), secret).unwrap();
    let staged = dir.join("..data_tmp");
    std::os::unix::fs::symlink(format!("..{version}"), &staged).unwrap();
    fs::rename(&staged, dir.join("..data")).unwrap();
    if !dir.join("token").exists() {
        std::os::unix::fs::symlink("..data/token", dir.join("token")).unwrap();
    }
}

/// Milliseconds since the epoch of an RFC 3339 time (as the collector writes `collected_at`).
pub fn unix_millis(stamp: &str) -> i64 {
    chrono::DateTime::parse_from_rfc3339(stamp)
        .unwrap_or_else(|e| panic!("{stamp:?} is not RFC 3339: {e}"))
        .timestamp_millis()
}

/// How long a network sink's server stays down in the outage tests: 2 s by default so the
/// suite stays quick; `NETWORK_SINKS_OUTAGE_SECS=30` runs the 30 s outage.
pub fn outage() -> Duration {
    let secs = std::env::var("NETWORK_SINKS_OUTAGE_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(2);
    Duration::from_secs(secs)
}

/// The PEM files [`make_certificates`] writes.
#[derive(Debug, Clone)]
pub struct Certificates {
    /// The CA certificate.
    pub ca: PathBuf,
    /// The server's certificate (for 127.0.0.1 and localhost) and key.
    pub server_cert: PathBuf,
    /// The server's key.
    pub server_key: PathBuf,
    /// A client certificate (for mutual TLS) and key.
    pub client_cert: PathBuf,
    /// The client's key.
    pub client_key: PathBuf,
}

/// Makes a CA, a server certificate for 127.0.0.1 and a client certificate in `dir` with the
/// openssl command (Debian's `openssl` package; scripts/install-test-deps.sh installs it).
pub fn make_certificates(dir: &Path) -> Certificates {
    let program = require_program("openssl");
    fs::create_dir_all(dir).unwrap();
    let openssl = |args: &[&str]| {
        stdout_of(Command::new(&program).args(args).current_dir(dir));
    };
    openssl(&[
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
        "-days",
        "2",
        "-subj",
        "/CN=test-ca",
        "-addext",
        "basicConstraints=critical,CA:TRUE",
        "-addext",
        "keyUsage=critical,keyCertSign,cRLSign",
    ]);
    for (name, usage) in [("server", "serverAuth"), ("client", "clientAuth")] {
        fs::write(
            dir.join(format!("{name}.ext")),
            format!("subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage={usage}\nbasicConstraints=CA:FALSE\n"),
        )
        .unwrap();
        openssl(&[
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            &format!("{name}.key"),
            "-out",
            &format!("{name}.csr"),
            "-subj",
            &format!("/CN={name}"),
        ]);
        openssl(&[
            "x509",
            "-req",
            "-in",
            &format!("{name}.csr"),
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            &format!("{name}.pem"),
            "-days",
            "2",
            "-extfile",
            &format!("{name}.ext"),
        ]);
    }
    Certificates {
        ca: dir.join("ca.pem"),
        server_cert: dir.join("server.pem"),
        server_key: dir.join("server.key"),
        client_cert: dir.join("client.pem"),
        client_key: dir.join("client.key"),
    }
}

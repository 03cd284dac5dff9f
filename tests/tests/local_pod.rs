//! scripts/run-local-pod.sh run the way a user runs it, against the debug binaries (`BIN_DIR`,
//! so it builds nothing) on ports chosen here (issue 12).
//!
//! What a user relies on: Ctrl+C in the terminal (SIGINT to the script's whole process group)
//! stops the pod in its order and every line the apps wrote is forwarded exactly once; a busy
//! port or a process that fails to start ends the script with a message saying which port and
//! which log file, and no process of the pod is left running after any of these.

use std::collections::{BTreeMap, HashMap};
use std::fs;
use std::net::TcpListener;
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::Duration;

use e2e_tests::{bin_dir, free_ports, read_delivered, require_program, wait_until};

/// Starting seven debug processes on a loaded two-core machine can be slow; nothing here
/// depends on how long anything takes, only on it happening within this.
const TIMEOUT: Duration = Duration::from_secs(120);

/// The environment variable every process of a run inherits, so the test finds them all
/// (the sidecars and apps run in sessions of their own, outside the script's process group).
const MARK: &str = "LOCAL_POD_TEST_MARK";

const SIDECARS: [&str; 3] = ["log-collector", "log-processor", "log-forwarder"];
const APPS: [&str; 4] = [
    "web-api",
    "database-client",
    "background-worker",
    "traffic-generator",
];

/// One run of the script: its temp directory (the pod's volumes in `pod/`, the script's output
/// in `output.txt`), ports, and the process, killed with whatever it left when dropped.
struct Run {
    dir: tempfile::TempDir,
    ports: BTreeMap<&'static str, u16>,
    bin_dir: PathBuf,
    script: Option<Child>,
}

impl Run {
    fn new() -> Self {
        require_program("curl");
        require_program("setsid");
        let ports = [
            "WEB_API_PORT",
            "COLLECTOR_PORT",
            "PROCESSOR_PORT",
            "FORWARDER_PORT",
            "QUERY_API_PORT",
        ]
        .into_iter()
        .zip(free_ports(5))
        .collect();
        Self {
            dir: tempfile::tempdir().unwrap(),
            ports,
            bin_dir: bin_dir(),
            script: None,
        }
    }

    /// Takes the binaries from a directory of links to the real ones, with `name` replaced by
    /// a program that reports an error and exits, as a binary that cannot start does.
    fn with_failing_binary(mut self, name: &str) -> Self {
        let fake = self.dir.path().join("bin");
        fs::create_dir(&fake).unwrap();
        for entry in fs::read_dir(&self.bin_dir).unwrap() {
            let entry = entry.unwrap();
            if entry.file_type().unwrap().is_file() {
                std::os::unix::fs::symlink(entry.path(), fake.join(entry.file_name())).unwrap();
            }
        }
        let _ = fs::remove_file(fake.join(name));
        fs::write(
            fake.join(name),
            format!("#!/bin/sh\necho \"fake {name}: refusing to start\" >&2\nexit 3\n"),
        )
        .unwrap();
        use std::os::unix::fs::PermissionsExt as _;
        fs::set_permissions(fake.join(name), fs::Permissions::from_mode(0o755)).unwrap();
        self.bin_dir = fake;
        self
    }

    fn pod(&self, rel: &str) -> PathBuf {
        self.dir.path().join("pod").join(rel)
    }

    fn mark(&self) -> String {
        self.dir.path().display().to_string()
    }

    /// Starts the script in a process group of its own, as a shell starts a foreground job.
    fn start(&mut self) {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/run-local-pod.sh");
        let out = fs::File::create(self.dir.path().join("output.txt")).unwrap();
        // A terminal's Ctrl+C reaches a script whose SIGINT is at its default; one started from
        // a background job of a non-interactive shell (CI's, say) inherits it ignored, and bash
        // cannot trap a signal ignored at entry. `env --default-signal` gives the script what a
        // terminal gives it.
        let child = Command::new("env")
            .arg("--default-signal=INT")
            .arg(script)
            .envs(self.ports.iter().map(|(k, v)| (*k, v.to_string())))
            .env("BIN_DIR", &self.bin_dir)
            .env("POD_DIR", self.dir.path().join("pod"))
            .env("REPORT_INTERVAL", "1s")
            .env(MARK, self.mark())
            .env("RUST_BACKTRACE", "0")
            .stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .process_group(0)
            .spawn()
            .unwrap();
        self.script = Some(child);
    }

    fn output(&self) -> String {
        fs::read_to_string(self.dir.path().join("output.txt")).unwrap_or_default()
    }

    fn pgid(&self) -> u32 {
        self.script.as_ref().unwrap().id()
    }

    /// Waits until the script printed `text`; panics if it exits first.
    fn wait_for_output(&mut self, text: &str) {
        let script = self.script.as_mut().unwrap();
        let mut exited = None;
        let dir = self.dir.path().to_owned();
        let seen = wait_until(TIMEOUT, || {
            exited = script.try_wait().unwrap();
            let out = fs::read_to_string(dir.join("output.txt")).unwrap_or_default();
            out.contains(text) || exited.is_some()
        });
        assert!(
            seen && self.output().contains(text),
            "the script did not print {text:?} (exit: {exited:?}); output:\n{}",
            self.output()
        );
    }

    /// Waits for the script's exit.
    fn wait_exit(&mut self) -> ExitStatus {
        let script = self.script.as_mut().unwrap();
        let mut status = None;
        let exited = wait_until(TIMEOUT, || {
            status = script.try_wait().unwrap();
            status.is_some()
        });
        assert!(
            exited,
            "the script did not exit within {TIMEOUT:?}; output:\n{}",
            self.output()
        );
        status.unwrap()
    }

    /// The processes of this run still running: (pid, command line).
    fn leftovers(&self) -> Vec<(u32, String)> {
        let mark = format!("{MARK}={}\0", self.mark());
        let mut found = Vec::new();
        for entry in fs::read_dir("/proc").unwrap().flatten() {
            let Some(pid) = entry.file_name().to_str().and_then(|s| s.parse().ok()) else {
                continue;
            };
            // A zombie's environment reads empty: it is not running.
            let environ = fs::read(entry.path().join("environ")).unwrap_or_default();
            if String::from_utf8_lossy(&environ).contains(&mark) {
                let cmdline = fs::read(entry.path().join("cmdline")).unwrap_or_default();
                found.push((pid, String::from_utf8_lossy(&cmdline).replace('\0', " ")));
            }
        }
        found
    }

    /// Asserts that nothing of this run is left; the processes stop before the script exits,
    /// the wait only covers the kernel tearing them down.
    fn assert_nothing_left(&self) {
        let mut left = Vec::new();
        wait_until(Duration::from_secs(10), || {
            left = self.leftovers();
            left.is_empty()
        });
        assert!(
            left.is_empty(),
            "processes left running: {left:?}; output:\n{}",
            self.output()
        );
    }

    fn log(&self, name: &str) -> String {
        fs::read_to_string(self.pod(&format!("{name}.log"))).unwrap_or_default()
    }
}

impl Drop for Run {
    fn drop(&mut self) {
        if let Some(script) = &mut self.script {
            if script.try_wait().ok().flatten().is_none() {
                kill("-KILL", &format!("-{}", script.id()));
                let _ = script.wait();
            }
        }
        for (pid, _) in self.leftovers() {
            kill("-KILL", &pid.to_string());
        }
    }
}

/// kill(1): the workspace forbids `unsafe`, which libc::kill needs.
fn kill(signal: &str, target: &str) {
    Command::new("kill")
        .args([signal, "--", target])
        .status()
        .expect("kill(1) runs (procps; scripts/install-test-deps.sh installs it)");
}

/// The byte offset where each record of a file starts: each log line, with the traceback after it.
fn line_starts(path: &Path) -> Vec<u64> {
    let bytes = fs::read(path).unwrap();
    let mut starts = Vec::new();
    let mut at = 0;
    for line in bytes.split_inclusive(|&b| b == b'\n') {
        assert!(
            line.ends_with(b"\n"),
            "{}: a partial last line after the apps stopped",
            path.display()
        );
        // A traceback's lines (indented, `Traceback …`, `SomeError: …`) join the record of the
        // log line before them (the default rules' multiline preset); every log line starts
        // with its asctime date.
        if starts.is_empty() || line.first().is_some_and(u8::is_ascii_digit) {
            starts.push(at);
        }
        at += line.len() as u64;
    }
    starts
}

#[test]
fn ctrl_c_to_the_process_group_stops_the_pod_in_order_and_forwards_every_line_once() {
    let mut run = Run::new();
    run.start();
    run.wait_for_output("Ctrl+C to stop");
    // Records flowing end to end, so lines are in flight at every stage when the signal comes.
    let forwarded = run.pod("forwarded-logs");
    // Counted in newlines: a file being written may end in half a record.
    let lines_forwarded = || -> usize {
        fs::read_dir(&forwarded)
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| fs::read(e.path()).ok())
            .map(|bytes| bytes.iter().filter(|&&b| b == b'\n').count())
            .sum()
    };
    assert!(
        wait_until(TIMEOUT, || lines_forwarded() >= 20),
        "fewer than 20 records forwarded; output:\n{}",
        run.output()
    );
    // What a terminal's Ctrl+C does: SIGINT to every process of the foreground group.
    kill("-INT", &format!("-{}", run.pgid()));
    let status = run.wait_exit();
    let output = run.output();
    assert!(status.success(), "exit {status}; output:\n{output}");

    // Apps first, then the sidecars upstream first.
    let at = |text: &str| {
        output
            .find(text)
            .unwrap_or_else(|| panic!("{text:?} is not in the output:\n{output}"))
    };
    let order = [
        at("stopped: web-api database-client background-worker traffic-generator"),
        at("stopped: log-collector"),
        at("stopped: log-processor"),
        at("stopped: log-forwarder"),
    ];
    assert!(order.is_sorted(), "stopped out of order:\n{output}");
    // The signal reached the script only: each process was stopped by the script's SIGTERM.
    for name in SIDECARS.iter().chain(&APPS) {
        let log = run.log(name);
        assert!(
            log.contains("SIGTERM") && !log.contains("SIGINT"),
            "{name} was not stopped by SIGTERM alone; its log:\n{log}"
        );
    }

    // Every line of every app's file, forwarded once: the id of a record ends in the offset
    // of its line, and the apps' files were neither rotated nor truncated in this short run.
    let records = read_delivered(&forwarded);
    let mut by_source: HashMap<String, Vec<u64>> = HashMap::new();
    for record in &records {
        let source = record["source_file"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        let offset = record["id"]
            .as_str()
            .and_then(|id| id.rsplit_once('-'))
            .and_then(|(_, offset)| offset.parse().ok())
            .unwrap_or_else(|| panic!("a record without an id ending in its offset: {record}"));
        by_source.entry(source).or_default().push(offset);
    }
    let mut written = 0;
    for entry in fs::read_dir(run.pod("logs")).unwrap() {
        let path = entry.unwrap().path();
        let source = path.file_name().unwrap().to_str().unwrap().to_owned();
        let expected = line_starts(&path);
        written += expected.len();
        let mut got = by_source.remove(&source).unwrap_or_default();
        got.sort_unstable();
        assert_eq!(
            got,
            expected,
            "{source}: {} lines written, {} records forwarded, offsets differ",
            expected.len(),
            got.len()
        );
    }
    assert!(
        by_source.is_empty(),
        "records of no app file: {:?}",
        by_source.keys().collect::<Vec<_>>()
    );
    assert_eq!(records.len(), written);
    run.assert_nothing_left();
}

#[test]
fn a_busy_port_stops_the_script_before_anything_starts_naming_port_and_setting() {
    for setting in ["WEB_API_PORT", "QUERY_API_PORT"] {
        let mut run = Run::new();
        let taken = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = taken.local_addr().unwrap().port();
        run.ports.insert(setting, port);
        run.start();
        let status = run.wait_exit();
        let output = run.output();
        assert!(!status.success(), "{setting} busy, yet exit 0:\n{output}");
        assert!(
            output.contains(&format!("port {port} ({setting}"))
                && output.contains("already in use"),
            "the message names neither the port nor the setting:\n{output}"
        );
        assert!(
            !run.pod("log-forwarder.log").exists(),
            "a sidecar was started:\n{output}"
        );
        run.assert_nothing_left();
    }
}

#[test]
fn a_sidecar_failing_its_health_check_stops_what_was_started_and_names_its_log() {
    // The forwarder starts first and is healthy; the processor, next, exits at once.
    let mut run = Run::new().with_failing_binary("processor");
    run.start();
    let status = run.wait_exit();
    let output = run.output();
    assert!(!status.success(), "exit 0:\n{output}");
    let port = run.ports["PROCESSOR_PORT"];
    let log = run.pod("log-processor.log");
    assert!(
        output.contains(&format!(
            "log-processor (port {port}, PROCESSOR_PORT) exited"
        )) && output.contains(&format!("see {}", log.display())),
        "the message names neither the port nor the log file:\n{output}"
    );
    assert!(
        output.contains("fake processor: refusing to start"),
        "the log's last lines are not shown:\n{output}"
    );
    assert!(
        output.contains("stopped: log-forwarder"),
        "the forwarder, already running, was not stopped:\n{output}"
    );
    assert!(!output.contains("stopped: log-collector"), "{output}");
    run.assert_nothing_left();
}

#[test]
fn an_app_failing_at_start_stops_the_pod_and_names_its_port_and_log() {
    // The web API dies at start as it did on a busy port, which only its log said.
    let mut run = Run::new().with_failing_binary("web-api");
    run.start();
    let status = run.wait_exit();
    let output = run.output();
    assert!(!status.success(), "exit 0:\n{output}");
    let port = run.ports["WEB_API_PORT"];
    let log = run.pod("web-api.log");
    assert!(
        output.contains(&format!("web-api (port {port}, WEB_API_PORT) exited"))
            && output.contains(&format!("see {}", log.display())),
        "the message names neither the port nor the log file:\n{output}"
    );
    assert!(!output.contains("Demo apps running"), "{output}");
    for name in SIDECARS {
        assert!(
            output.contains(&format!("stopped: {name}")),
            "{name} was not stopped:\n{output}"
        );
    }
    run.assert_nothing_left();
}

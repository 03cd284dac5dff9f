//! A measured child process: spawned with its output in a log file, sampled while it runs,
//! stopped with SIGTERM and reaped with `wait4` for its CPU time.
//!
//! Easy to get wrong: peak memory. `ru_maxrss` from `wait4` is not the child's own peak: std
//! spawns with `posix_spawn`, i.e. `vfork`, and at `exec` the kernel folds the high-water mark
//! of the parent's (shared) address space into the child's `maxrss`. So the peak reported here
//! is `VmHWM` from `/proc/<pid>/status`, sampled while the child runs and until it is a zombie
//! (when the line disappears); `ru_maxrss` is kept only as a cross-check.

use std::collections::HashMap;
use std::fs::{self, File};
use std::io;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};

/// A running child under measurement.
pub struct Proc {
    /// A short name for tables and errors: `collector`, …
    pub name: String,
    pid: libc::pid_t,
    log: PathBuf,
    peak_rss_kib: u64,
    peak_anon_kib: u64,
    reaped: bool,
}

/// What a child cost, from spawn to exit.
#[derive(Debug, Clone, Copy, Default)]
pub struct Usage {
    /// User CPU seconds.
    pub user_s: f64,
    /// System CPU seconds.
    pub sys_s: f64,
    /// Peak resident set (`VmHWM`), KiB.
    pub peak_rss_kib: u64,
    /// The highest anonymous resident memory sampled (`RssAnon`), KiB: the heap and stacks,
    /// without the binary's code and data pages, which are page cache every process of
    /// the same binary on the node shares and the kernel can reclaim.
    pub peak_anon_kib: u64,
    /// `ru_maxrss` from `wait4`, KiB; see the module comment for why it can be too high.
    pub ru_maxrss_kib: u64,
}

impl Usage {
    /// User plus system CPU seconds.
    pub fn cpu_s(&self) -> f64 {
        self.user_s + self.sys_s
    }
}

impl Proc {
    /// Starts `program` with `args`, stdout and stderr both appended to `log`.
    ///
    /// # Errors
    /// When the log cannot be created or the program cannot be started.
    pub fn spawn(name: &str, program: &Path, args: &[String], log: &Path) -> anyhow::Result<Self> {
        Self::spawn_with_env(name, program, args, &[], log)
    }

    /// [`Proc::spawn`] with extra environment variables.
    pub fn spawn_with_env(
        name: &str,
        program: &Path,
        args: &[String],
        env: &[(&str, &str)],
        log: &Path,
    ) -> anyhow::Result<Self> {
        let out = File::create(log).with_context(|| format!("creating {}", log.display()))?;
        let err = out.try_clone()?;
        let child = Command::new(program)
            .args(args)
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .with_context(|| format!("starting {} {}", program.display(), args.join(" ")))?;
        // The `Child` is dropped without waiting: the child is reaped by `wait4` below, and
        // dropping a `Child` neither kills nor waits.
        Ok(Self {
            name: name.to_owned(),
            pid: child.id() as libc::pid_t,
            log: log.to_owned(),
            peak_rss_kib: 0,
            peak_anon_kib: 0,
            reaped: false,
        })
    }

    /// The child's pid.
    pub fn pid(&self) -> u32 {
        self.pid as u32
    }

    /// Reads the child's `VmHWM` and `RssAnon` and keeps the highest values seen.
    pub fn sample(&mut self) {
        if let Some(status) = read_status(self.pid) {
            self.keep_peaks(&status);
        }
    }

    fn keep_peaks(&mut self, status: &str) {
        if let Some(kib) = status_kib(status, "VmHWM:") {
            self.peak_rss_kib = self.peak_rss_kib.max(kib);
        }
        if let Some(kib) = status_kib(status, "RssAnon:") {
            self.peak_anon_kib = self.peak_anon_kib.max(kib);
        }
    }

    /// The child's current resident set (`VmRSS`), KiB, if it is still running.
    pub fn current_rss_kib(&self) -> Option<u64> {
        read_status(self.pid).and_then(|s| status_kib(&s, "VmRSS:"))
    }

    /// The child's CPU seconds so far (user + system, from `/proc/<pid>/stat`).
    pub fn cpu_so_far_s(&self) -> Option<f64> {
        sidecar_core::telemetry::cpu_seconds_of(&self.pid.to_string())
    }

    /// Each live thread's time on a CPU so far, in ns (`/proc/<pid>/task/*/schedstat`): exact,
    /// where `/proc/<pid>/stat` counts 10 ms ticks, which an idle stage's few wakes a minute
    /// hit or miss by chance.
    pub fn runtime_sample(&self) -> Option<RuntimeSample> {
        let mut threads = HashMap::new();
        for entry in fs::read_dir(format!("/proc/{}/task", self.pid))
            .ok()?
            .flatten()
        {
            let Ok(text) = fs::read_to_string(entry.path().join("schedstat")) else {
                continue; // The thread just exited.
            };
            let ns = text.split_whitespace().next().and_then(|n| n.parse().ok());
            if let (Some(ns), Some(tid)) = (ns, entry.file_name().to_str()) {
                threads.insert(tid.to_owned(), ns);
            }
        }
        Some(RuntimeSample { threads })
    }

    /// Fails, with the tail of its log, if the child has already exited.
    ///
    /// # Errors
    /// When the child exited (it should run until we stop it).
    pub fn ensure_running(&mut self) -> anyhow::Result<()> {
        if let Some((status, _)) = wait4(self.pid, true)? {
            self.reaped = true;
            bail!(
                "{} exited early ({}); its log ends with:\n{}",
                self.name,
                describe(status),
                self.log_tail()
            );
        }
        Ok(())
    }

    /// Sends SIGTERM.
    pub fn terminate(&self) {
        signal(self.pid, libc::SIGTERM);
    }

    /// Waits for the child to exit after [`Proc::terminate`], sampling its peak memory until
    /// the last moment, and returns what it cost. After `grace` it is killed.
    ///
    /// # Errors
    /// When it had to be killed, exited with a failure, or could not be reaped.
    pub fn reap(mut self, grace: Duration) -> anyhow::Result<Usage> {
        let deadline = Instant::now() + grace;
        let mut killed = false;
        loop {
            match read_status(self.pid) {
                Some(status) if !status.contains("State:\tZ") => self.keep_peaks(&status),
                _ => break, // A zombie (its memory is gone) or already gone.
            }
            if !killed && Instant::now() > deadline {
                signal(self.pid, libc::SIGKILL);
                killed = true;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        let (status, usage) = wait4(self.pid, false)?.expect("a blocking wait4 returns the child");
        self.reaped = true;
        if killed {
            bail!(
                "{} did not exit within {grace:?} of SIGTERM and was killed",
                self.name
            );
        }
        if !(libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0) {
            bail!(
                "{} failed on shutdown ({}); its log ends with:\n{}",
                self.name,
                describe(status),
                self.log_tail()
            );
        }
        let seconds = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
        Ok(Usage {
            user_s: seconds(usage.ru_utime),
            sys_s: seconds(usage.ru_stime),
            peak_rss_kib: self.peak_rss_kib,
            peak_anon_kib: self.peak_anon_kib,
            ru_maxrss_kib: usage.ru_maxrss as u64,
        })
    }

    fn log_tail(&self) -> String {
        let text = fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }
}

impl Drop for Proc {
    /// A child left running by an error path is killed and reaped, never left behind.
    fn drop(&mut self) {
        if !self.reaped {
            signal(self.pid, libc::SIGKILL);
            let _ = wait4(self.pid, false);
        }
    }
}

/// CPU seconds the whole machine spent busy (all cores, everything but idle and iowait) since
/// boot, from the first line of `/proc/stat`.
pub fn machine_busy_s() -> Option<f64> {
    let stat = fs::read_to_string("/proc/stat").ok()?;
    let fields: Vec<u64> = stat
        .lines()
        .next()?
        .split_whitespace()
        .skip(1)
        .filter_map(|f| f.parse().ok())
        .collect();
    // user nice system idle iowait irq softirq steal (guest time is already in user).
    let busy: u64 = fields
        .iter()
        .take(8)
        .enumerate()
        .filter(|(i, _)| *i != 3 && *i != 4)
        .map(|(_, v)| v)
        .sum();
    Some(busy as f64 / clock_ticks_per_second() as f64)
}

fn read_status(pid: libc::pid_t) -> Option<String> {
    fs::read_to_string(format!("/proc/{pid}/status")).ok()
}

fn status_kib(status: &str, key: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with(key))?;
    line[key.len()..]
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()
}

fn describe(status: libc::c_int) -> String {
    if libc::WIFEXITED(status) {
        format!("exit code {}", libc::WEXITSTATUS(status))
    } else if libc::WIFSIGNALED(status) {
        format!("killed by signal {}", libc::WTERMSIG(status))
    } else {
        format!("wait status {status:#x}")
    }
}

/// `wait4` for our own child `pid`: its exit status and resource usage, or `None` when
/// `nohang` and it is still running.
#[allow(unsafe_code)]
fn wait4(pid: libc::pid_t, nohang: bool) -> io::Result<Option<(libc::c_int, libc::rusage)>> {
    let flags = if nohang { libc::WNOHANG } else { 0 };
    loop {
        let mut status: libc::c_int = 0;
        // SAFETY: `rusage` is plain integers, for which all-zero bytes are a valid value.
        let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
        // SAFETY: both out-pointers point to live locals of the right types for the whole call.
        let r = unsafe { libc::wait4(pid, &mut status, flags, &mut usage) };
        match r {
            0 => return Ok(None),
            r if r == pid => return Ok(Some((status, usage))),
            _ => {
                let e = io::Error::last_os_error();
                if e.kind() != io::ErrorKind::Interrupted {
                    return Err(e);
                }
            }
        }
    }
}

/// Sends `sig` to our own child `pid`, which we have not reaped yet (so the pid is not reused).
#[allow(unsafe_code)]
fn signal(pid: libc::pid_t, sig: libc::c_int) {
    // SAFETY: kill(2) takes plain integers and touches no memory of ours.
    unsafe {
        libc::kill(pid, sig);
    }
}

/// Clock ticks per second, the unit of `/proc/<pid>/stat` CPU times.
#[allow(unsafe_code)]
fn clock_ticks_per_second() -> i64 {
    // SAFETY: sysconf(3) takes an integer and touches no memory of ours.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if ticks > 0 {
        ticks
    } else {
        100
    }
}

/// A process's threads' CPU time at one moment ([`Proc::runtime_sample`]).
#[derive(Debug, Clone)]
pub struct RuntimeSample {
    /// Thread id → ns on a CPU.
    threads: HashMap<String, u64>,
}

impl RuntimeSample {
    /// CPU seconds the process used since `earlier`: what each thread alive now ran since
    /// then (a thread that exited in between is left out: the tokio pool's idle threads).
    pub fn seconds_since(&self, earlier: &RuntimeSample) -> f64 {
        let ns: u64 = self
            .threads
            .iter()
            .map(|(tid, now)| now.saturating_sub(earlier.threads.get(tid).copied().unwrap_or(0)))
            .sum();
        ns as f64 / 1e9
    }
}

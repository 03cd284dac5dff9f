//! A liveness signal for the apps that serve no port: a file the main loop refreshes, and the
//! check a Kubernetes exec probe runs against it.
//!
//! The image is distroless (no shell, no `test`, no `find`), so the probe has to be the app's
//! own binary: `database-client --check-heartbeat /run/heartbeat/database-client --max-age 30s`
//! exits 0 when the file was refreshed within the max age, else 1 with one line naming the file.
//!
//! The one thing easy to get wrong: the file must be refreshed by the loop that does the work,
//! not by a timer task of its own, or a wedged loop would keep looking alive. So
//! [`Heartbeat::beat`] is called on every turn of that loop and only writes when [`BEAT_PERIOD`]
//! has passed, which keeps a loop turning thousands of times a second from writing as often.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant, SystemTime};

/// Where the manifests mount the `heartbeats` emptyDir: the root filesystem is read-only in the
/// pod, and `/logs` is watched by the collector, so the heartbeat has a volume of its own.
pub const DEFAULT_HEARTBEAT_DIR: &str = "/run/heartbeat";

/// Least time between two writes of the heartbeat file. Far below any sensible `--max-age`, so
/// a healthy app never looks stale between two beats.
pub const BEAT_PERIOD: Duration = Duration::from_secs(1);

/// `--max-age` when not given: what the manifests' liveness probe uses.
pub const DEFAULT_MAX_AGE: &str = "30s";

/// Heartbeat flags shared by the port-less apps.
#[derive(Debug, Clone, clap::Args)]
pub struct HeartbeatArgs {
    /// File refreshed (about once a second) while the app's main loop makes progress; created
    /// with its directory if missing [default: /run/heartbeat/<app name>, written only if
    /// /run/heartbeat exists].
    #[arg(long, env = "DEMO_HEARTBEAT_FILE", value_name = "PATH")]
    pub heartbeat_file: Option<PathBuf>,

    /// Do not run the app: check that PATH was refreshed within --max-age and exit 0, or print
    /// why not and exit 1. For a Kubernetes exec probe.
    #[arg(long, value_name = "PATH")]
    pub check_heartbeat: Option<PathBuf>,

    /// With --check-heartbeat: the oldest heartbeat that still counts as alive (30s, 1m, 500ms).
    #[arg(
        long,
        value_name = "DURATION",
        default_value = DEFAULT_MAX_AGE,
        value_parser = humantime::parse_duration,
        requires = "check_heartbeat"
    )]
    pub max_age: Duration,
}

impl HeartbeatArgs {
    /// The heartbeat file of the app named `app`: `--heartbeat-file`, else
    /// [`DEFAULT_HEARTBEAT_DIR`]`/<app>`.
    pub fn file(&self, app: &str) -> PathBuf {
        self.heartbeat_file
            .clone()
            .unwrap_or_else(|| Path::new(DEFAULT_HEARTBEAT_DIR).join(app))
    }

    /// The heartbeat of the app named `app`. The default file is written only into a directory
    /// that exists: outside the pod nothing mounts one, and a demo run on a laptop should not
    /// create directories under `/run`.
    pub fn heartbeat(&self, app: &str) -> Heartbeat {
        let mut heartbeat = Heartbeat::new(self.file(app));
        heartbeat.create_dir = self.heartbeat_file.is_some();
        heartbeat
    }

    /// A binary's `main` after parsing: with `--check-heartbeat`, only the check (see
    /// [`check_if_asked`](Self::check_if_asked)); else `run` with the heartbeat of the app named
    /// `app`, exiting 0 when it returns `Ok`.
    ///
    /// # Errors
    ///
    /// What `run` returns.
    pub fn check_or_run(
        &self,
        app: &str,
        run: impl FnOnce(Heartbeat) -> anyhow::Result<()>,
    ) -> anyhow::Result<ExitCode> {
        // The check starts no runtime: a probe runs it every few seconds in a small container.
        if let Some(code) = self.check_if_asked() {
            return Ok(code);
        }
        run(self.heartbeat(app))?;
        Ok(ExitCode::SUCCESS)
    }

    /// With `--check-heartbeat`, runs the check, prints its one-line result and returns the exit
    /// code; without it, `None`.
    pub fn check_if_asked(&self) -> Option<ExitCode> {
        let path = self.check_heartbeat.as_deref()?;
        Some(match check(path, self.max_age, SystemTime::now()) {
            Ok(age) => {
                println!(
                    "heartbeat file {} refreshed {} ago",
                    path.display(),
                    rounded(age)
                );
                ExitCode::SUCCESS
            }
            Err(error) => {
                eprintln!("{error}");
                ExitCode::FAILURE
            }
        })
    }
}

/// Why a heartbeat check failed; each displays as one line that names the file.
#[derive(Debug, thiserror::Error)]
pub enum HeartbeatError {
    /// No file at the path.
    #[error(
        "heartbeat file {} does not exist: the app has not started its loop, or writes its \
         heartbeat elsewhere (--heartbeat-file)",
        path.display()
    )]
    Missing {
        /// The file checked.
        path: PathBuf,
    },
    /// The file's modification time could not be read.
    #[error("cannot read heartbeat file {}: {source}", path.display())]
    Unreadable {
        /// The file checked.
        path: PathBuf,
        /// What the filesystem said.
        source: io::Error,
    },
    /// The file is older than the max age.
    #[error(
        "heartbeat file {} is stale: last refreshed {} ago, max age {}",
        path.display(),
        rounded(*age),
        humantime::format_duration(*max_age)
    )]
    Stale {
        /// The file checked.
        path: PathBuf,
        /// Time since the last refresh.
        age: Duration,
        /// The limit it exceeded.
        max_age: Duration,
    },
}

/// Checks that `path` was modified within `max_age` before `now`; returns its age.
///
/// A modification time after `now` (the clock stepped back) counts as fresh: the app wrote it,
/// which is all the check wants to know.
///
/// # Errors
///
/// When the file is missing, unreadable, or older than `max_age`.
pub fn check(path: &Path, max_age: Duration, now: SystemTime) -> Result<Duration, HeartbeatError> {
    let modified = fs::metadata(path)
        .and_then(|metadata| metadata.modified())
        .map_err(|source| match source.kind() {
            io::ErrorKind::NotFound => HeartbeatError::Missing {
                path: path.to_owned(),
            },
            _ => HeartbeatError::Unreadable {
                path: path.to_owned(),
                source,
            },
        })?;
    let age = now.duration_since(modified).unwrap_or(Duration::ZERO);
    if age > max_age {
        return Err(HeartbeatError::Stale {
            path: path.to_owned(),
            age,
            max_age,
        });
    }
    Ok(age)
}

/// Milliseconds are noise in a probe message.
fn rounded(age: Duration) -> humantime::FormattedDuration {
    humantime::format_duration(Duration::from_millis(age.as_millis() as u64 / 100 * 100))
}

/// The writing side: refreshes one file, at most once per [`BEAT_PERIOD`].
#[derive(Debug)]
pub struct Heartbeat {
    /// `None`: beats do nothing (web-api, which has HTTP probes, and unit tests).
    path: Option<PathBuf>,
    /// Whether a missing parent directory is created, or means "no heartbeat wanted here".
    create_dir: bool,
    last: Option<Instant>,
    /// Whether the last write failed, so a broken volume is reported once, not every second.
    failing: bool,
}

impl Heartbeat {
    /// A heartbeat written to `path`, its directory created if missing; the first
    /// [`beat`](Heartbeat::beat) writes it.
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Heartbeat {
            path: Some(path.into()),
            create_dir: true,
            last: None,
            failing: false,
        }
    }

    /// A heartbeat that writes nothing.
    pub fn disabled() -> Self {
        Heartbeat {
            path: None,
            create_dir: false,
            last: None,
            failing: false,
        }
    }

    /// Call on every turn of the main loop: rewrites the file if [`BEAT_PERIOD`] has passed
    /// since the last write. A write that fails is logged (once until one succeeds again) and
    /// otherwise ignored: the app's work matters more than its probe, which will report it.
    pub fn beat(&mut self) {
        let Some(path) = &self.path else { return };
        let now = Instant::now();
        if self
            .last
            .is_some_and(|last| now.duration_since(last) < BEAT_PERIOD)
        {
            return;
        }
        self.last = Some(now);
        match write(path, self.create_dir) {
            Ok(()) if self.failing => {
                self.failing = false;
                tracing::info!(file = %path.display(), "Heartbeat file written again.");
            }
            Ok(()) => {}
            Err(error)
                if !self.failing && !self.create_dir && error.kind() == io::ErrorKind::NotFound =>
            {
                self.failing = true;
                tracing::info!(
                    file = %path.display(),
                    "No heartbeat: its directory does not exist (--heartbeat-file names one)."
                );
            }
            Err(error) if !self.failing => {
                self.failing = true;
                tracing::warn!(
                    file = %path.display(),
                    %error,
                    "Cannot write the heartbeat file; a --check-heartbeat probe on it will fail."
                );
            }
            Err(_) => {}
        }
    }
}

/// Rewrites `path` with the current time, which sets its modification time (what [`check`]
/// reads); the text is for a person looking at the file.
fn write(path: &Path, create_dir: bool) -> io::Result<()> {
    let stamp = format!("{}\n", humantime::format_rfc3339_seconds(SystemTime::now()));
    match fs::write(path, &stamp) {
        Err(error) if create_dir && error.kind() == io::ErrorKind::NotFound => {
            // Like the log directory, a missing parent is created; only the first write can
            // get here.
            if let Some(parent) = path.parent() {
                fs::create_dir_all(parent)?;
            }
            fs::write(path, &stamp)
        }
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAX_AGE: Duration = Duration::from_secs(30);

    fn modified(path: &Path) -> SystemTime {
        fs::metadata(path).unwrap().modified().unwrap()
    }

    #[test]
    fn a_fresh_file_passes_with_its_age() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("app");
        write(&path, false).unwrap();
        let now = modified(&path) + Duration::from_secs(5);
        assert_eq!(check(&path, MAX_AGE, now).unwrap(), Duration::from_secs(5));
        // Exactly max age still counts.
        check(&path, MAX_AGE, modified(&path) + MAX_AGE).unwrap();
    }

    #[test]
    fn a_file_from_the_future_counts_as_fresh() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("app");
        write(&path, false).unwrap();
        let now = modified(&path) - Duration::from_secs(60);
        assert_eq!(check(&path, MAX_AGE, now).unwrap(), Duration::ZERO);
    }

    #[test]
    fn a_stale_file_fails_naming_the_file_and_both_ages() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("app");
        write(&path, false).unwrap();
        let now = modified(&path) + Duration::from_millis(42_345);
        let error = check(&path, MAX_AGE, now).unwrap_err();
        assert!(matches!(error, HeartbeatError::Stale { .. }), "{error:?}");
        let message = error.to_string();
        assert_eq!(
            message,
            format!(
                "heartbeat file {} is stale: last refreshed 42s 300ms ago, max age 30s",
                path.display()
            )
        );
        assert!(!message.contains('\n'));
    }

    #[test]
    fn a_missing_file_fails_naming_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("never-written");
        let error = check(&path, MAX_AGE, SystemTime::now()).unwrap_err();
        assert!(matches!(error, HeartbeatError::Missing { .. }), "{error:?}");
        let message = error.to_string();
        assert!(message.contains(&path.display().to_string()), "{message}");
        assert!(!message.contains('\n'));
    }

    #[test]
    fn beats_create_the_directory_and_write_at_most_once_per_period() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("new/dir/app");
        let mut heartbeat = Heartbeat::new(&path);
        heartbeat.beat();
        let first = modified(&path);
        check(&path, MAX_AGE, SystemTime::now()).unwrap();
        // Remove it: a beat inside the period must not write it back.
        fs::remove_file(&path).unwrap();
        heartbeat.beat();
        assert!(!path.exists());
        // Once the period has passed, the next beat writes again.
        heartbeat.last = heartbeat.last.map(|last| last - BEAT_PERIOD);
        heartbeat.beat();
        assert!(modified(&path) >= first);
    }

    #[test]
    fn a_failed_write_is_remembered_and_does_not_panic() {
        let dir = tempfile::tempdir().unwrap();
        // A directory where the file should be: every write fails.
        let path = dir.path().join("app");
        fs::create_dir(&path).unwrap();
        let mut heartbeat = Heartbeat::new(&path);
        heartbeat.beat();
        assert!(heartbeat.failing);
        fs::remove_dir(&path).unwrap();
        heartbeat.last = None;
        heartbeat.beat();
        assert!(!heartbeat.failing);
        check(&path, MAX_AGE, SystemTime::now()).unwrap();
    }

    #[test]
    fn the_default_file_is_not_written_without_its_directory() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("not-mounted/app");
        let mut heartbeat = Heartbeat::new(&path);
        heartbeat.create_dir = false;
        heartbeat.beat();
        assert!(!dir.path().join("not-mounted").exists());
        // As soon as the directory appears (a late mount), beats write.
        fs::create_dir(dir.path().join("not-mounted")).unwrap();
        heartbeat.last = None;
        heartbeat.beat();
        check(&path, MAX_AGE, SystemTime::now()).unwrap();
    }

    #[test]
    fn a_disabled_heartbeat_writes_nothing() {
        let mut heartbeat = Heartbeat::disabled();
        heartbeat.beat();
        assert!(heartbeat.last.is_none());
    }

    #[test]
    fn the_default_file_is_named_after_the_app() {
        let args = HeartbeatArgs {
            heartbeat_file: None,
            check_heartbeat: None,
            max_age: MAX_AGE,
        };
        assert_eq!(
            args.file("database-client"),
            Path::new("/run/heartbeat/database-client")
        );
        assert!(!args.heartbeat("database-client").create_dir);
        assert!(args.check_if_asked().is_none());
    }
}

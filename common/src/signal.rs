//! Signals between the outside world and a stage's loop: SIGTERM/SIGINT as a shutdown future,
//! [`Wakeup`] to nudge a sleeping loop, [`DirWatcher`] to turn inotify events into nudges,
//! [`run_stage`] to run a blocking stage loop until shutdown within a grace period, and
//! [`Background`] for the tasks a stage runs beside its loop (its servers, its watches).
//!
//! One cancellation primitive serves every "stop now" of the sidecars: a
//! [`CancellationToken`]. A stage loop's [`Wakeup::stop`] fires one (blocking loops see it at
//! their next wait, async code awaits [`Wakeup::stopped`]), and a network sink's in-flight
//! requests end when the forwarder fires theirs.
//!
//! Easy to get wrong: an inotify event is a hint, never a fact. Loops re-check the files they
//! care about on every wake and on a slow timer, so a lost or coalesced event costs latency only.

use std::collections::HashSet;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use notify::{RecommendedWatcher, RecursiveMode, Watcher};
use parking_lot::{Condvar, Mutex};
use tracing::{error, info, warn};

pub use tokio_util::sync::CancellationToken;
use tokio_util::sync::WaitForCancellationFutureOwned;
use tokio_util::task::TaskTracker;

/// How long a stage waits for its [`Background`] tasks after its loop ended: servers finish
/// the requests they are answering, no longer.
pub const BACKGROUND_STOP: Duration = Duration::from_secs(1);

/// The tasks a stage runs beside its loop: its HTTP servers and watches. They are the stage's,
/// not the runtime's: [`Background::stop`] cancels them all and waits for them (bounded) once
/// the loop has drained, so `/healthz` and `/metrics` answer through the drain and nothing is
/// left running after the stage returns.
#[derive(Debug, Clone, Default)]
pub struct Background {
    tasks: TaskTracker,
    cancel: CancellationToken,
}

impl Background {
    /// Runs `task` on the current runtime until it ends or the stage stops (it is dropped
    /// then, wherever it was).
    pub fn spawn(&self, task: impl Future<Output = ()> + Send + 'static) {
        let cancel = self.cancel.clone();
        self.tasks.spawn(async move {
            tokio::select! {
                () = cancel.cancelled() => {}
                () = task => {}
            }
        });
    }

    /// Runs the task `start` makes from a future that fires when the stage stops, and lets it
    /// end by itself: for a server, which then finishes the requests it is answering.
    pub fn spawn_graceful<F>(&self, start: impl FnOnce(WaitForCancellationFutureOwned) -> F)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        self.tasks
            .spawn(start(self.cancel.clone().cancelled_owned()));
    }

    /// Stops every task and waits up to `within` for them to end.
    pub async fn stop(&self, within: Duration) {
        self.cancel.cancel();
        self.tasks.close();
        if tokio::time::timeout(within, self.tasks.wait())
            .await
            .is_err()
        {
            warn!(
                tasks = self.tasks.len(),
                "Background tasks did not end in time; leaving them to the exit."
            );
        }
    }
}

/// Resolves on the first SIGTERM or SIGINT.
///
/// # Panics
/// If the signal handlers cannot be installed, which only happens outside a Tokio runtime.
pub async fn shutdown() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).expect("installing a SIGTERM handler succeeds");
    let mut int = signal(SignalKind::interrupt()).expect("installing a SIGINT handler succeeds");
    let name = tokio::select! {
        _ = term.recv() => "SIGTERM",
        _ = int.recv() => "SIGINT",
    };
    info!(signal = name, "Shutdown requested; draining.");
}

#[derive(Debug, Default)]
struct WakeState {
    pending: bool,
}

/// A level-triggered nudge for a blocking loop, plus the stop flag that ends it.
///
/// Wakes coalesce: any number of [`Wakeup::wake`] calls while the loop is busy produce one
/// return from the next [`Wakeup::wait`], which is what a loop that re-reads everything wants.
#[derive(Debug, Clone, Default)]
pub struct Wakeup {
    inner: Arc<(Mutex<WakeState>, Condvar)>,
    stop: CancellationToken,
}

impl Wakeup {
    /// A wakeup with nothing pending.
    pub fn new() -> Self {
        Self::default()
    }

    /// Makes the next (or the current) `wait` return.
    pub fn wake(&self) {
        let (lock, cvar) = &*self.inner;
        let mut state = lock.lock();
        // Only the first wake of a turn is news. An app writing line by line sends thousands
        // of events a second; waking the loop (a futex call each, and a spurious return from
        // the linger's sleep) for every one of them was most of a stage's idle-ish CPU.
        if !state.pending {
            state.pending = true;
            cvar.notify_all();
        }
    }

    /// Asks the loop to stop; `is_stopping` is true from now on.
    pub fn stop(&self) {
        let (lock, cvar) = &*self.inner;
        // Fired under the lock, so a loop between its check and its wait cannot miss it.
        let _state = lock.lock();
        self.stop.cancel();
        cvar.notify_all();
    }

    /// Whether [`Wakeup::stop`] was called.
    pub fn is_stopping(&self) -> bool {
        self.stop.is_cancelled()
    }

    /// Resolves once [`Wakeup::stop`] is called: the same stop, for async code.
    pub async fn stopped(&self) {
        self.stop.cancelled().await;
    }

    /// Sleeps until woken, stopped, or `timeout` passed; clears the pending wake.
    /// Returns true when the loop should stop.
    pub fn wait(&self, timeout: Duration) -> bool {
        let (lock, cvar) = &*self.inner;
        let mut state = lock.lock();
        let stop = &self.stop;
        cvar.wait_while_for(&mut state, |s| !s.pending && !stop.is_cancelled(), timeout);
        state.pending = false;
        stop.is_cancelled()
    }

    /// Sleeps for `duration` unless stopped first. Returns true when the loop should stop.
    /// Wakes during the sleep are kept for the next `wait`, so a linger never loses one.
    pub fn sleep(&self, duration: Duration) -> bool {
        let (lock, cvar) = &*self.inner;
        let mut state = lock.lock();
        let stop = &self.stop;
        cvar.wait_while_for(&mut state, |_| !stop.is_cancelled(), duration);
        stop.is_cancelled()
    }
}

/// Watches directories (not recursively) and wakes a [`Wakeup`] on any event in them.
///
/// Hold it for as long as the wake-ups are wanted; dropping it stops the watch.
pub struct DirWatcher {
    watcher: Option<RecommendedWatcher>,
    /// The directories under watch.
    watched: HashSet<PathBuf>,
    /// How many directories asked for are not under watch.
    unwatched: usize,
    /// A kernel limit was reported already: said once, not per directory.
    limit_reported: bool,
}

/// What [`DirWatcher::watch_exactly`] changed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WatchChange {
    /// Directories newly under watch.
    pub added: usize,
    /// Every directory asked for is under watch.
    pub complete: bool,
}

impl DirWatcher {
    /// Starts watching `dirs`. A directory that cannot be watched (missing, no inotify
    /// instances left) is logged and left to the loop's periodic check, never an error:
    /// the watch only lowers latency.
    pub fn start<'a>(dirs: impl IntoIterator<Item = &'a Path>, wakeup: &Wakeup) -> Self {
        Self::start_with(dirs, wakeup, |_| {})
    }

    /// As [`DirWatcher::start`], and also hands every event to `on_event` (on the watcher's
    /// thread, before the wake), for work that cannot wait for the loop's next turn. A watch
    /// error (events may have been lost) reaches it as an event flagged
    /// [`notify::event::Flag::Rescan`].
    pub fn start_with<'a>(
        dirs: impl IntoIterator<Item = &'a Path>,
        wakeup: &Wakeup,
        on_event: impl Fn(&notify::Event) + Send + 'static,
    ) -> Self {
        Self::start_filtered(dirs, wakeup, move |event| {
            on_event(event);
            true
        })
    }

    /// As [`DirWatcher::start`], but wakes only on events that name a file called `file_name`
    /// (and on lost events). A stage reading a journal watches its commit file this way: the
    /// journal's segments are written before each commit, and waking on those writes too
    /// would turn the loop once for nothing before every batch.
    pub fn start_for_file<'a>(
        dirs: impl IntoIterator<Item = &'a Path>,
        wakeup: &Wakeup,
        file_name: &'static str,
    ) -> Self {
        Self::start_filtered(dirs, wakeup, move |event| {
            event.need_rescan()
                || (event.paths.iter()).any(|path| path.file_name().is_some_and(|n| n == file_name))
        })
    }

    /// Starts the watch; `wakes` sees every event but read-only accesses (a watch error as an
    /// event flagged [`notify::event::Flag::Rescan`]) and says whether it wakes the loop.
    fn start_filtered<'a>(
        dirs: impl IntoIterator<Item = &'a Path>,
        wakeup: &Wakeup,
        wakes: impl Fn(&notify::Event) -> bool + Send + 'static,
    ) -> Self {
        let wakeup = wakeup.clone();
        let watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
            let woken = match &event {
                // Our own opens and reads of the directory and its files: waking on them
                // would make an idle loop wake itself forever.
                Ok(event) if is_read_only_access(event) => false,
                Ok(event) => wakes(event),
                // Errors here include inotify queue overflow; waking makes the loop rescan.
                Err(_) => wakes(
                    &notify::Event::new(notify::EventKind::Other)
                        .set_flag(notify::event::Flag::Rescan),
                ),
            };
            if woken {
                wakeup.wake();
            }
        });
        let mut this = Self {
            watcher: None,
            watched: HashSet::new(),
            unwatched: 0,
            limit_reported: false,
        };
        match watcher {
            Ok(w) => this.watcher = Some(w),
            Err(e) => {
                match limit_of(&e) {
                    Some(limit) => {
                        error!(error = %e, limit, "Cannot start the file watcher: the kernel's limit on inotify instances per user is reached; relying on periodic checks (slower to see new lines and rotations). Raise it on the node, e.g. sysctl -w {limit}=1024.")
                    }
                    None => {
                        warn!(error = %e, "Cannot start the file watcher; relying on periodic checks.")
                    }
                }
                this.limit_reported = true;
            }
        }
        for dir in dirs {
            this.add(dir);
        }
        this
    }

    /// Whether every directory asked for is watched.
    pub fn is_complete(&self) -> bool {
        self.watcher.is_some() && self.unwatched == 0
    }

    /// How many directories asked for are not under watch (left to periodic checks).
    pub fn unwatched(&self) -> usize {
        if self.watcher.is_some() {
            self.unwatched
        } else {
            self.unwatched.max(1)
        }
    }

    /// Adds a directory to the watch (e.g. one that did not exist at start).
    /// Returns whether the watch is in place.
    pub fn add(&mut self, dir: &Path) -> bool {
        if self.watched.contains(dir) {
            return true;
        }
        let Some(watcher) = &mut self.watcher else {
            self.unwatched += 1;
            return false;
        };
        match watcher.watch(dir, RecursiveMode::NonRecursive) {
            Ok(()) => {
                self.watched.insert(dir.to_owned());
                true
            }
            Err(e) => {
                self.unwatched += 1;
                match limit_of(&e) {
                    Some(limit) if !std::mem::replace(&mut self.limit_reported, true) => {
                        error!(dir = %dir.display(), limit, watched = self.watched.len(), "Cannot watch a log directory: the kernel's limit on inotify watches per user is reached. It and any further ones are listed periodically instead (slower to see new lines and rotations); raise the limit on the node, e.g. sysctl -w {limit}=524288.");
                    }
                    Some(_) => {}
                    None => {
                        warn!(dir = %dir.display(), error = %e, "Cannot watch directory; relying on periodic checks.");
                    }
                }
                false
            }
        }
    }

    /// Watches exactly `dirs` from now on: adds those not yet watched, drops the watches of
    /// those no longer asked for (a deleted pod's), and retries those that failed before.
    pub fn watch_exactly(&mut self, dirs: &[PathBuf]) -> WatchChange {
        let wanted: HashSet<&Path> = dirs.iter().map(PathBuf::as_path).collect();
        let gone: Vec<PathBuf> = self
            .watched
            .iter()
            .filter(|dir| !wanted.contains(dir.as_path()))
            .cloned()
            .collect();
        for dir in gone {
            if let Some(watcher) = &mut self.watcher {
                // Fails when the directory is gone, which removed the watch already.
                let _ = watcher.unwatch(&dir);
            }
            self.watched.remove(&dir);
        }
        self.unwatched = 0;
        let mut added = 0;
        for dir in dirs {
            if !self.watched.contains(dir) && self.add(dir) {
                added += 1;
            }
        }
        WatchChange {
            added,
            complete: self.is_complete(),
        }
    }
}

/// The sysctl whose limit `error` says was reached, if it says so.
fn limit_of(error: &notify::Error) -> Option<&'static str> {
    match &error.kind {
        notify::ErrorKind::MaxFilesWatch => Some("fs.inotify.max_user_watches"),
        notify::ErrorKind::Io(e) if e.raw_os_error() == Some(ENOSPC) => {
            Some("fs.inotify.max_user_watches")
        }
        notify::ErrorKind::Io(e) if e.raw_os_error() == Some(EMFILE) => {
            Some("fs.inotify.max_user_instances")
        }
        _ => None,
    }
}

/// `inotify_add_watch`'s "no watches left" and `inotify_init`'s "no instances left".
const ENOSPC: i32 = 28;
const EMFILE: i32 = 24;

/// Whether `event` only says that something was opened, read or closed without writing.
fn is_read_only_access(event: &notify::Event) -> bool {
    use notify::event::{AccessKind, AccessMode, EventKind};
    matches!(event.kind, EventKind::Access(kind) if kind != AccessKind::Close(AccessMode::Write))
}

/// Runs a blocking stage loop on its own thread until it ends or `shutdown` resolves; then
/// stops it through `wakeup` and gives it `grace` to flush and commit.
///
/// # Errors
/// The loop's own error, or an error when it did not finish within `grace` (its last commit
/// stands; whatever it had not committed is redone by the next start).
pub async fn run_stage<F>(
    stage: &'static str,
    wakeup: Wakeup,
    grace: Duration,
    shutdown: impl Future<Output = ()>,
    stage_loop: F,
) -> anyhow::Result<()>
where
    F: FnOnce() -> anyhow::Result<()> + Send + 'static,
{
    let mut handle = tokio::task::spawn_blocking(stage_loop);
    tokio::select! {
        joined = &mut handle => return flatten(stage, joined),
        () = shutdown => wakeup.stop(),
    }
    let started = std::time::Instant::now();
    match tokio::time::timeout(grace, &mut handle).await {
        Ok(joined) => {
            let result = flatten(stage, joined);
            if result.is_ok() {
                info!(
                    stage,
                    drain_ms = started.elapsed().as_millis() as u64,
                    "Drained and committed; exiting."
                );
            }
            result
        }
        Err(_) => {
            error!(stage, grace_ms = grace.as_millis() as u64, "Drain did not finish within the grace period; the last commit stands and the rest is redone on restart.");
            anyhow::bail!(
                "{stage}: drain did not finish within {}",
                humantime::format_duration(grace)
            )
        }
    }
}

fn flatten(
    stage: &str,
    joined: Result<anyhow::Result<()>, tokio::task::JoinError>,
) -> anyhow::Result<()> {
    match joined {
        Ok(result) => result,
        Err(e) => anyhow::bail!("{stage} loop panicked: {e}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_inotify_limit_reached_is_named_by_its_sysctl() {
        let io = |code| notify::Error::io(std::io::Error::from_raw_os_error(code));
        let watches = Some("fs.inotify.max_user_watches");
        assert_eq!(
            limit_of(&notify::Error::new(notify::ErrorKind::MaxFilesWatch)),
            watches
        );
        assert_eq!(limit_of(&io(ENOSPC)), watches);
        assert_eq!(limit_of(&io(EMFILE)), Some("fs.inotify.max_user_instances"));
        assert_eq!(limit_of(&io(2)), None);
    }

    #[test]
    fn the_watch_follows_the_directories_asked_for() {
        let tmp = tempfile::tempdir().unwrap();
        let (a, b) = (tmp.path().join("a"), tmp.path().join("b"));
        std::fs::create_dir_all(&a).unwrap();
        std::fs::create_dir_all(&b).unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        let on_event = move |event: &notify::Event| {
            for path in &event.paths {
                let _ = tx.send(path.clone());
            }
        };
        let mut watcher = DirWatcher::start_with([a.as_path()], &Wakeup::new(), on_event);
        assert!(watcher.is_complete());
        let change = watcher.watch_exactly(&[b.clone(), tmp.path().join("missing")]);
        assert_eq!(change.added, 1);
        assert!(!change.complete, "a missing directory cannot be watched");
        assert_eq!(watcher.unwatched(), 1);
        let change = watcher.watch_exactly(std::slice::from_ref(&b));
        assert_eq!((change.added, change.complete), (0, true));
        std::fs::write(a.join("x.log"), b"x").unwrap();
        std::fs::write(b.join("x.log"), b"x").unwrap();
        let seen = rx.recv_timeout(Duration::from_secs(5)).unwrap();
        assert_eq!(
            seen,
            b.join("x.log"),
            "a no longer watched directory is quiet"
        );
    }

    #[tokio::test]
    async fn background_tasks_end_when_the_stage_stops_and_servers_see_it_coming() {
        let background = Background::default();
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        background.spawn(async move {
            // Runs until cancelled; dropping `tx` tells the test it ended.
            let _tx = tx;
            std::future::pending::<()>().await;
        });
        let (seen_tx, seen_rx) = tokio::sync::oneshot::channel();
        background.spawn_graceful(|stopping| async move {
            stopping.await;
            // A server finishing its last request after the stop was announced.
            tokio::time::sleep(Duration::from_millis(20)).await;
            let _ = seen_tx.send(());
        });
        let started = std::time::Instant::now();
        background.stop(Duration::from_secs(5)).await;
        assert!(started.elapsed() < Duration::from_secs(1));
        assert!(rx.await.is_err(), "the endless task was stopped");
        assert!(
            seen_rx.await.is_ok(),
            "the graceful task finished before stop returned"
        );
    }
    use std::time::Instant;

    #[test]
    fn wakes_coalesce_and_stop_is_sticky() {
        let w = Wakeup::new();
        w.wake();
        w.wake();
        assert!(
            !w.wait(Duration::from_secs(5)),
            "a pending wake returns at once"
        );
        let t = Instant::now();
        assert!(
            !w.wait(Duration::from_millis(30)),
            "no wake left: times out"
        );
        assert!(t.elapsed() >= Duration::from_millis(30));
        w.stop();
        assert!(w.wait(Duration::from_secs(5)));
        assert!(w.sleep(Duration::from_secs(5)));
        assert!(w.is_stopping());
    }

    #[test]
    fn sleep_keeps_a_wake_for_the_next_wait() {
        let w = Wakeup::new();
        w.wake();
        assert!(!w.sleep(Duration::from_millis(1)));
        let t = Instant::now();
        assert!(!w.wait(Duration::from_secs(5)));
        assert!(t.elapsed() < Duration::from_secs(1));
    }

    #[test]
    fn the_watcher_does_not_wake_on_its_own_reads() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("commit.json"), b"{}").unwrap();
        let w = Wakeup::new();
        let _watcher = DirWatcher::start([dir.path()], &w);
        std::thread::sleep(Duration::from_millis(50));
        w.wait(Duration::ZERO);
        let _ = std::fs::read(dir.path().join("commit.json")).unwrap();
        let _ = std::fs::read_dir(dir.path()).unwrap().count();
        let t = Instant::now();
        w.wait(Duration::from_millis(300));
        assert!(t.elapsed() >= Duration::from_millis(300), "woken by a read");
        std::fs::write(dir.path().join("commit.json"), b"{\"n\":1}").unwrap();
        let t = Instant::now();
        w.wait(Duration::from_secs(5));
        assert!(
            t.elapsed() < Duration::from_secs(2),
            "a write wakes the loop"
        );
    }

    #[test]
    fn a_watch_for_one_file_wakes_on_that_file_only() {
        let dir = tempfile::tempdir().unwrap();
        let w = Wakeup::new();
        let _watcher = DirWatcher::start_for_file([dir.path()], &w, "commit.json");
        std::thread::sleep(Duration::from_millis(50));
        w.wait(Duration::ZERO);
        std::fs::write(dir.path().join("segment-0.ndjson"), b"a record\n").unwrap();
        let t = Instant::now();
        w.wait(Duration::from_millis(300));
        assert!(
            t.elapsed() >= Duration::from_millis(300),
            "woken by a segment write"
        );
        std::fs::write(dir.path().join("commit.json"), b"{}").unwrap();
        let t = Instant::now();
        w.wait(Duration::from_secs(5));
        assert!(
            t.elapsed() < Duration::from_secs(2),
            "a commit wakes the loop"
        );
    }

    #[tokio::test]
    async fn run_stage_reports_a_loop_that_ignores_stop() {
        let w = Wakeup::new();
        let result = run_stage("test", w, Duration::from_millis(50), async {}, || {
            std::thread::sleep(Duration::from_millis(500));
            Ok(())
        })
        .await;
        let err = result.unwrap_err().to_string();
        assert!(err.contains("did not finish within 50ms"), "{err}");
    }
}

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

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::{Condvar, Mutex};
use tracing::{error, info, warn};

mod watch;
pub use self::watch::{DirWatcher, WatchChange, WatchEvent, WatchKind};

pub use tokio_util::sync::CancellationToken;
use tokio_util::sync::WaitForCancellationFutureOwned;
use tokio_util::task::TaskTracker;

/// How long a stage waits for its [`Background`] tasks after its loop ended: servers finish
/// the requests they are answering, no longer.
pub const BACKGROUND_STOP: Duration = Duration::from_secs(1);

/// While every input of a loop is watched, its timed turn (the backstop for an event lost
/// without notice) comes this many poll intervals apart: the watches' events wake the loop
/// for everything else, and a lost event the kernel reports (a queue overflow) wakes it too.
pub const WATCHED_BACKSTOP_FACTOR: u32 = 10;

/// How long a loop with nothing to do may wait for its watches' events: `poll` while some
/// input is not watched, `poll` × [`WATCHED_BACKSTOP_FACTOR`] while all are.
pub fn backstop_wait(poll: Duration, all_watched: bool) -> Duration {
    if all_watched {
        poll * WATCHED_BACKSTOP_FACTOR
    } else {
        poll
    }
}

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

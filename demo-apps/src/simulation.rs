//! Synthetic log generation: one generator per app, run flat out or paced to a line rate.
//!
//! Each app implements [`Simulation`]: a state machine on a simulated clock whose every step
//! appends the lines of one event (a request, a query, a job step). [`run`] drives a simulation
//! into the app's files; [`write_lines`] and [`demo_lines`] are the deterministic entry points
//! for tests and benchmarks.
//!
//! The one thing easy to get wrong: output must depend on the seed alone, so simulations never
//! read the wall clock or anything else outside their own state and the random generator; only
//! the timestamps at the start of each line come from the wall clock.

use std::future::Future;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use parking_lot::Mutex;
use std::time::{Duration, Instant};

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

use crate::cli::CommonArgs;
use crate::database::QuerySimulation;
use crate::heartbeat::Heartbeat;
use crate::logfile::{Batch, LogFileError, LogFiles};
use crate::rate::Pacer;
use crate::web::SyntheticTraffic;
use crate::worker::JobSimulation;
use crate::{database, web, worker};

/// Lines per batch when no rate is set: enough to amortise the lock and flush per batch.
const UNPACED_BATCH_LINES: usize = 1_000;

/// Longest single sleep between checks of the stop flag, so shutdown stays prompt at low rates.
const MAX_SLEEP_SLICE: Duration = Duration::from_millis(100);

/// Steps [`demo_lines`] tries before giving up on a file that rarely gets lines, per line asked.
const DEMO_STEPS_PER_LINE: usize = 1_000;

/// A generator of one app's log lines.
pub trait Simulation {
    /// Advances the simulation by one event and appends its lines (at least one) to `out`,
    /// using the batch's current timestamp.
    fn step<R: Rng>(&mut self, rng: &mut R, out: &mut Batch);
}

/// The three log-writing demo apps.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum App {
    /// `web-api`: `access.log`, `error.log`, `application.log`.
    WebApi,
    /// `database-client`: `database-queries.log`, `database-performance.log`.
    DatabaseClient,
    /// `background-worker`: `job-execution.log`, `job-metrics.log`.
    BackgroundWorker,
}

impl App {
    /// Every app.
    pub const ALL: [App; 3] = [App::WebApi, App::DatabaseClient, App::BackgroundWorker];

    /// The binary's name, e.g. `web-api`.
    pub fn name(self) -> &'static str {
        match self {
            App::WebApi => "web-api",
            App::DatabaseClient => "database-client",
            App::BackgroundWorker => "background-worker",
        }
    }

    /// The app's log file names; a line's file index points into this list.
    pub fn file_names(self) -> &'static [&'static str] {
        match self {
            App::WebApi => &web::FILE_NAMES,
            App::DatabaseClient => &database::FILE_NAMES,
            App::BackgroundWorker => &worker::FILE_NAMES,
        }
    }

    /// The app writing the log file called `name`, e.g. `access.log` → [`App::WebApi`].
    pub fn for_file(name: &str) -> Option<App> {
        App::ALL
            .into_iter()
            .find(|app| app.file_names().contains(&name))
    }
}

/// Drives `sim` into `files` until `stop` is set, `deadline` passes or the files' line budget
/// is used up; returns the number of lines written.
///
/// With `rate` (lines per second) lines are written in batches of about 10 ms worth, flushed,
/// then the thread sleeps until the batch is due; without it, as fast as possible. Blocking:
/// call it from a thread of its own or `spawn_blocking`. `heartbeat` beats once per batch.
///
/// # Errors
///
/// When writing or flushing a file fails.
pub fn run<S: Simulation, R: Rng>(
    sim: &mut S,
    rng: &mut R,
    files: &Mutex<LogFiles>,
    rate: Option<u32>,
    deadline: Option<Instant>,
    stop: &AtomicBool,
    heartbeat: &mut Heartbeat,
) -> Result<u64, LogFileError> {
    let mut pacer = rate.map(|rate| Pacer::new(rate, Instant::now()));
    let batch_lines = pacer
        .as_ref()
        .map_or(UNPACED_BATCH_LINES, Pacer::batch_lines);
    let mut batch = Batch::new();
    let mut total = 0u64;
    let stopped = |now: Instant| stop.load(Ordering::Relaxed) || deadline.is_some_and(|d| now >= d);

    while !stopped(Instant::now()) {
        heartbeat.beat();
        batch.clear();
        batch.stamp_now();
        while batch.len() < batch_lines {
            sim.step(rng, &mut batch);
        }
        let (written, exhausted) = {
            let mut files = files.lock();
            let written = files.write(&batch)?;
            // Flush per batch: a batch is at most ~10 ms of lines, so readers see them promptly.
            files.flush()?;
            (written, files.is_exhausted())
        };
        total += written as u64;
        if exhausted {
            break;
        }
        if let Some(pacer) = &mut pacer {
            let due = pacer.record(written as u64, Instant::now());
            sleep_until(due, &stopped);
        }
    }
    Ok(total)
}

/// Sleeps until `due` in slices, returning early once `stopped` says so.
fn sleep_until(due: Instant, stopped: &impl Fn(Instant) -> bool) {
    loop {
        let now = Instant::now();
        if now >= due || stopped(now) {
            return;
        }
        std::thread::sleep((due - now).min(MAX_SLEEP_SLICE));
    }
}

/// Runs an app that has a synthetic mode and a live one (the database client, the background
/// worker) until shutdown, `--duration-secs` or `--max-lines`: opens its log files, runs `sim`
/// at `--rate` when one is given and `live` otherwise, then flushes the files.
///
/// # Errors
///
/// When the log directory or a file cannot be created or written.
pub async fn run_app<S, L, F, Sh>(
    app: &str,
    args: CommonArgs,
    file_names: &[&str],
    sim: S,
    live: L,
    heartbeat: Heartbeat,
    shutdown: Sh,
) -> anyhow::Result<()>
where
    S: Simulation + Send + 'static,
    L: FnOnce(SmallRng, Arc<Mutex<LogFiles>>, Option<Duration>, Heartbeat, Sh) -> F,
    F: Future<Output = Result<u64, LogFileError>>,
    Sh: Future<Output = ()>,
{
    let files = Arc::new(Mutex::new(
        LogFiles::open(&args.log_dir, file_names)?.with_max_lines(args.max_lines),
    ));
    tracing::info!(log_dir = %args.log_dir.display(), rate = ?args.rate, "{app} started.");
    crate::cli::announce(
        app,
        &format!("started, logging to {}", args.log_dir.display()),
    );
    let rng = args.rng();
    let lines = match args.rate {
        Some(rate) => {
            run_in_background(
                sim,
                rng,
                Arc::clone(&files),
                Some(rate),
                args.duration(),
                heartbeat,
                shutdown,
            )
            .await?
        }
        None => {
            live(
                rng,
                Arc::clone(&files),
                args.duration(),
                heartbeat,
                shutdown,
            )
            .await?
        }
    };
    files.lock().flush()?;
    tracing::info!(lines, "{app} stopped; logs flushed.");
    crate::cli::announce(app, &format!("stopped after {lines} lines"));
    Ok(())
}

/// Runs `sim` on a blocking thread (see [`run`]) until `shutdown` resolves, `duration` passes
/// or the line budget of `files` is used up; returns the number of lines written. The blocking
/// thread beats `heartbeat`, since it is the loop whose progress matters.
///
/// # Errors
///
/// When writing or flushing a file fails.
pub async fn run_in_background<S>(
    mut sim: S,
    mut rng: SmallRng,
    files: Arc<Mutex<LogFiles>>,
    rate: Option<u32>,
    duration: Option<Duration>,
    mut heartbeat: Heartbeat,
    shutdown: impl Future<Output = ()>,
) -> Result<u64, LogFileError>
where
    S: Simulation + Send + 'static,
{
    let stop = Arc::new(AtomicBool::new(false));
    let deadline = duration.map(|duration| Instant::now() + duration);
    let mut task = tokio::task::spawn_blocking({
        let stop = Arc::clone(&stop);
        move || {
            run(
                &mut sim,
                &mut rng,
                &files,
                rate,
                deadline,
                &stop,
                &mut heartbeat,
            )
        }
    });
    tokio::select! {
        result = &mut task => return joined(result),
        () = shutdown => stop.store(true, Ordering::Relaxed),
    }
    joined(task.await)
}

fn joined<T>(result: Result<T, tokio::task::JoinError>) -> T {
    match result {
        Ok(value) => value,
        Err(error) => std::panic::resume_unwind(error.into_panic()),
    }
}

/// Writes exactly `n` lines of `app`'s synthetic logs into `dir` (created if missing; files
/// appended to), as fast as possible. The same seed gives the same lines, timestamps aside.
///
/// # Errors
///
/// When the directory or a file cannot be created or written.
pub fn write_lines(app: App, dir: &Path, seed: u64, n: u64) -> Result<(), LogFileError> {
    let files = Mutex::new(LogFiles::open(dir, app.file_names())?.with_max_lines(Some(n)));
    let mut rng = SmallRng::seed_from_u64(seed);
    let never = AtomicBool::new(false);
    match app {
        App::WebApi => run(
            &mut SyntheticTraffic::new(),
            &mut rng,
            &files,
            None,
            None,
            &never,
            &mut Heartbeat::disabled(),
        ),
        App::DatabaseClient => run(
            &mut QuerySimulation::new(),
            &mut rng,
            &files,
            None,
            None,
            &never,
            &mut Heartbeat::disabled(),
        ),
        App::BackgroundWorker => run(
            &mut JobSimulation::new(),
            &mut rng,
            &files,
            None,
            None,
            &never,
            &mut Heartbeat::disabled(),
        ),
    }?;
    let flushed = files.lock().flush();
    flushed
}

/// The first `n` synthetic lines (without newlines) that the app owning `file` (e.g.
/// `error.log`) writes to it for `seed`, or `None` if no app writes a file of that name.
/// Rare files may yield fewer than `n` lines: generation gives up after 1000 events per line.
pub fn demo_lines(file: &str, seed: u64, n: usize) -> Option<Vec<String>> {
    let app = App::for_file(file)?;
    let index = app.file_names().iter().position(|name| *name == file)?;
    let lines = match app {
        App::WebApi => collect(&mut SyntheticTraffic::new(), index, seed, n),
        App::DatabaseClient => collect(&mut QuerySimulation::new(), index, seed, n),
        App::BackgroundWorker => collect(&mut JobSimulation::new(), index, seed, n),
    };
    Some(lines)
}

fn collect<S: Simulation>(sim: &mut S, file: usize, seed: u64, n: usize) -> Vec<String> {
    let mut rng = SmallRng::seed_from_u64(seed);
    let mut batch = Batch::new();
    let mut lines = Vec::with_capacity(n);
    for _ in 0..n.saturating_mul(DEMO_STEPS_PER_LINE) {
        if lines.len() >= n {
            break;
        }
        batch.clear();
        sim.step(&mut rng, &mut batch);
        lines.extend(
            batch
                .lines()
                .filter(|&(index, _)| index == file)
                .map(|(_, line)| line.to_owned()),
        );
    }
    lines.truncate(n);
    lines
}

/// Picks one of `choices` with probability proportional to its weight.
///
/// # Panics
///
/// If `choices` is empty or all weights are zero; callers pass constant tables.
pub fn pick_weighted<T: Copy, R: Rng>(rng: &mut R, choices: &[(T, u32)]) -> T {
    let total: u32 = choices.iter().map(|&(_, weight)| weight).sum();
    let mut roll = rng.random_range(0..total);
    for &(choice, weight) in choices {
        if roll < weight {
            return choice;
        }
        roll -= weight;
    }
    unreachable!("the roll is below the sum of the weights")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_file_belongs_to_one_app() {
        let mut names: Vec<_> = App::ALL.iter().flat_map(|app| app.file_names()).collect();
        assert_eq!(names.len(), 7);
        names.sort();
        names.dedup();
        assert_eq!(names.len(), 7, "file names are unique across apps");
        assert_eq!(
            App::for_file("job-metrics.log"),
            Some(App::BackgroundWorker)
        );
        assert_eq!(App::for_file("nope.log"), None);
    }

    #[test]
    fn pick_weighted_follows_the_weights() {
        let mut rng = SmallRng::seed_from_u64(1);
        let mut counts = [0u32; 3];
        for _ in 0..10_000 {
            counts[pick_weighted(&mut rng, &[(0, 1), (1, 0), (2, 3)])] += 1;
        }
        assert_eq!(counts[1], 0);
        assert!((2_200..2_800).contains(&counts[0]), "{counts:?}");
    }

    #[test]
    fn demo_lines_come_from_the_named_file() {
        let lines = demo_lines("error.log", 3, 5).unwrap();
        assert_eq!(lines.len(), 5);
        assert!(lines
            .iter()
            .all(|line| line.contains(" - web-api - ERROR - ")));
        assert!(demo_lines("unknown.log", 3, 5).is_none());
    }

    #[test]
    fn paced_run_holds_the_rate() {
        let dir = tempfile::tempdir().unwrap();
        let files = Mutex::new(
            LogFiles::open(dir.path(), App::DatabaseClient.file_names())
                .unwrap()
                .with_max_lines(Some(2_000)),
        );
        let started = Instant::now();
        let written = run(
            &mut QuerySimulation::new(),
            &mut SmallRng::seed_from_u64(9),
            &files,
            Some(8_000),
            None,
            &AtomicBool::new(false),
            &mut Heartbeat::disabled(),
        )
        .unwrap();
        let elapsed = started.elapsed();
        assert_eq!(written, 2_000);
        // 2000 lines at 8000/s take 0.25 s; allow a loaded test machine some slack.
        assert!(elapsed >= Duration::from_millis(200), "{elapsed:?}");
        assert!(elapsed < Duration::from_secs(3), "{elapsed:?}");
    }
}

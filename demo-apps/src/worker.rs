//! The background-worker app: a priority job queue served by three workers.
//!
//! Writes two JSON-layout files: `job-execution.log` (`job_queued`, `job_started`, four
//! `job_step`s at 25/50/75/100%, then `job_completed` or, for about 8% of jobs, `job_failed`
//! after fewer steps) and `job-metrics.log` (`job_metrics` per finished job, `worker_metrics`
//! per worker every 15 s).
//!
//! The one thing easy to get wrong: three workers run at once, so one job's records are
//! interleaved with other jobs' records; readers join them on `job_id`. Both modes keep that:
//! the live mode runs three Tokio tasks, the synthetic mode simulates them on a [`SimClock`].

use std::collections::VecDeque;
use std::fmt;
use std::future::Future;
use std::sync::Arc;

use parking_lot::Mutex;
use std::time::Duration;

use rand::Rng;
use serde::{Serialize, Serializer};
use tokio::sync::Notify;
use tokio::task::JoinSet;
use tokio::time::{interval, interval_at, sleep, Instant, MissedTickBehavior};

use crate::cli::CommonArgs;
use crate::clock::{Every, SimClock};
use crate::heartbeat::Heartbeat;
use crate::logfile::{append, Batch, LogFileError, LogFiles};
use crate::simulation::{self, pick_weighted, Simulation};

/// Index of `job-execution.log` in [`FILE_NAMES`].
pub const EXECUTION_LOG: usize = 0;
/// Index of `job-metrics.log` in [`FILE_NAMES`].
pub const METRICS_LOG: usize = 1;
/// The app's log files, in file-index order.
pub const FILE_NAMES: [&str; 2] = ["job-execution.log", "job-metrics.log"];

/// Workers serving the queue.
pub const WORKERS: u32 = 3;

/// Steps every job goes through.
pub const STEPS: usize = 4;

/// How often each worker's `worker_metrics` is written, in (simulated, with `--rate`) time.
pub const WORKER_METRICS_PERIOD: Duration = Duration::from_secs(15);

/// Jobs the synthetic queue holds before arrivals wait; keeps its memory bounded when the
/// simulated workers fall behind.
const MAX_SIMULATED_QUEUE: usize = 50;

/// How often buffered lines are flushed in the live mode.
const FLUSH_INTERVAL: Duration = Duration::from_millis(100);

/// Chance that a job fails, in percent.
const FAILURE_PERCENT: u32 = 8;

/// What a job does; each type has its own steps, durations, footprint and failure modes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum JobType {
    /// Sends an email.
    EmailNotification,
    /// Snapshots and uploads data.
    DataBackup,
    /// Aggregates data into a report.
    ReportGeneration,
    /// Transforms an uploaded image.
    ImageProcessing,
    /// Pulls changes from a partner system.
    DataSync,
    /// Deletes expired data.
    Cleanup,
}

impl JobType {
    /// Every job type.
    pub const ALL: [JobType; 6] = [
        JobType::EmailNotification,
        JobType::DataBackup,
        JobType::ReportGeneration,
        JobType::ImageProcessing,
        JobType::DataSync,
        JobType::Cleanup,
    ];

    /// Names of the four steps, in order.
    pub fn step_names(self) -> [&'static str; STEPS] {
        match self {
            JobType::EmailNotification => {
                ["validate", "render_template", "send", "record_delivery"]
            }
            JobType::DataBackup => ["validate", "snapshot", "upload", "verify"],
            JobType::ReportGeneration => ["validate", "query_data", "render", "publish"],
            JobType::ImageProcessing => ["validate", "decode", "transform", "store"],
            JobType::DataSync => ["validate", "fetch_changes", "apply_changes", "commit"],
            JobType::Cleanup => ["validate", "scan", "delete", "vacuum"],
        }
    }

    /// Range of a whole job's duration, in milliseconds.
    fn duration_range_ms(self) -> std::ops::Range<u64> {
        match self {
            JobType::EmailNotification => 100..800,
            JobType::DataBackup => 2_000..15_000,
            JobType::ReportGeneration => 1_000..8_000,
            JobType::ImageProcessing => 500..4_000,
            JobType::DataSync => 1_000..6_000,
            JobType::Cleanup => 200..2_000,
        }
    }

    /// Range of peak memory, in MiB.
    fn memory_range_mb(self) -> std::ops::Range<f64> {
        match self {
            JobType::EmailNotification => 20.0..80.0,
            JobType::DataBackup => 200.0..1_500.0,
            JobType::ReportGeneration => 100.0..800.0,
            JobType::ImageProcessing => 300.0..2_000.0,
            JobType::DataSync => 50.0..400.0,
            JobType::Cleanup => 10.0..100.0,
        }
    }

    /// Errors a job of this type may fail with.
    fn errors(self) -> &'static [&'static str] {
        match self {
            JobType::EmailNotification => &[
                "SMTP server rejected message: 550 mailbox unavailable",
                "Timeout connecting to SMTP relay",
            ],
            JobType::DataBackup => &[
                "Timeout contacting storage backend",
                "Checksum mismatch after upload",
            ],
            JobType::ReportGeneration => &[
                "Query timeout while aggregating report data",
                "Template variable 'region' is undefined",
            ],
            JobType::ImageProcessing => &[
                "Out of memory while decoding image",
                "Timeout contacting storage backend",
            ],
            JobType::DataSync => &[
                "Remote API returned 503 Service Unavailable",
                "Conflict applying change set: row version mismatch",
            ],
            JobType::Cleanup => &[
                "Permission denied deleting expired objects",
                "Timeout contacting storage backend",
            ],
        }
    }
}

/// How urgent a job is; workers take higher priorities first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Priority {
    /// `low`
    Low,
    /// `normal`
    Normal,
    /// `high`
    High,
    /// `critical`
    Critical,
}

/// A job id, written `job-000042`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct JobId(pub u64);

impl fmt::Display for JobId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "job-{:06}", self.0)
    }
}

impl Serialize for JobId {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

/// Where and why a failing job fails.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Failure {
    /// Index (0-based) of the step during which it fails; earlier steps completed.
    pub step: usize,
    /// Milliseconds into that step when it fails.
    pub after_ms: u64,
    /// The error message.
    pub error: &'static str,
}

/// One job, with everything its records say decided up front.
#[derive(Debug, Clone, PartialEq)]
pub struct JobPlan {
    /// Its id.
    pub id: JobId,
    /// What it does.
    pub job_type: JobType,
    /// How urgent it is.
    pub priority: Priority,
    /// Duration of each step, in milliseconds.
    pub step_ms: [u64; STEPS],
    /// Where it fails, if it does.
    pub failure: Option<Failure>,
    /// Peak memory, in MiB, rounded to 0.1.
    pub memory_mb: f64,
    /// Average CPU use while running, in percent, rounded to 0.1.
    pub cpu_percent: f64,
}

impl JobPlan {
    /// A random job: uniform job type; priorities 20% low, 50% normal, 25% high, 5% critical;
    /// durations by type; 8% fail during a random step.
    pub fn random(rng: &mut impl Rng, id: JobId) -> JobPlan {
        let job_type = JobType::ALL[rng.random_range(0..JobType::ALL.len())];
        let priority = pick_weighted(
            rng,
            &[
                (Priority::Low, 20),
                (Priority::Normal, 50),
                (Priority::High, 25),
                (Priority::Critical, 5),
            ],
        );
        let total_ms = rng.random_range(job_type.duration_range_ms());
        // Split the total into four steps; the first (validation) is always the shortest.
        let weights = [
            1,
            rng.random_range(2..6),
            rng.random_range(2..6),
            rng.random_range(1..4),
        ];
        let weight_sum: u64 = weights.iter().sum();
        let step_ms = weights.map(|w| (total_ms * w / weight_sum).max(1));
        let failure = rng.random_ratio(FAILURE_PERCENT, 100).then(|| {
            let step = rng.random_range(0..STEPS);
            let errors = job_type.errors();
            Failure {
                step,
                after_ms: rng.random_range(1..=step_ms[step]),
                error: errors[rng.random_range(0..errors.len())],
            }
        });
        let memory_mb = (rng.random_range(job_type.memory_range_mb()) * 10.0).round() / 10.0;
        let cpu_percent = (rng.random_range(5.0..95.0_f64) * 10.0).round() / 10.0;
        JobPlan {
            id,
            job_type,
            priority,
            step_ms,
            failure,
            memory_mb,
            cpu_percent,
        }
    }

    /// Steps that complete: all four, or those before the failing one.
    pub fn steps_completed(&self) -> usize {
        self.failure.map_or(STEPS, |failure| failure.step)
    }

    /// Milliseconds until the job completes or fails.
    pub fn duration_ms(&self) -> u64 {
        let completed: u64 = self.step_ms[..self.steps_completed()].iter().sum();
        completed + self.failure.map_or(0, |failure| failure.after_ms)
    }

    /// Milliseconds from the start of step `index` until it completes or the job fails in it.
    pub fn step_duration_ms(&self, index: usize) -> u64 {
        match self.failure {
            Some(failure) if failure.step == index => failure.after_ms,
            _ => self.step_ms[index],
        }
    }

    /// Its `job_queued` record.
    pub fn queued(&self) -> JobEvent {
        JobEvent::JobQueued {
            job_id: self.id,
            job_type: self.job_type,
            priority: self.priority,
            status: "queued",
        }
    }

    /// Its `job_started` record on worker `worker_id`.
    pub fn started(&self, worker_id: u32) -> JobEvent {
        JobEvent::JobStarted {
            job_id: self.id,
            job_type: self.job_type,
            worker_id,
            status: "running",
        }
    }

    /// The `job_step` record for completing step `index` (0-based) on worker `worker_id`.
    pub fn step(&self, worker_id: u32, index: usize) -> JobEvent {
        JobEvent::JobStep {
            job_id: self.id,
            job_type: self.job_type,
            worker_id,
            step: index as u32 + 1,
            step_name: self.job_type.step_names()[index],
            progress_percent: (index as u32 + 1) * 100 / STEPS as u32,
            status: "running",
        }
    }

    /// Its `job_completed` or `job_failed` record on worker `worker_id`.
    pub fn finished(&self, worker_id: u32) -> JobEvent {
        match self.failure {
            None => JobEvent::JobCompleted {
                job_id: self.id,
                job_type: self.job_type,
                worker_id,
                status: "completed",
                duration_ms: self.duration_ms(),
            },
            Some(failure) => JobEvent::JobFailed {
                job_id: self.id,
                job_type: self.job_type,
                worker_id,
                status: "failed",
                error: failure.error,
                duration_ms: self.duration_ms(),
            },
        }
    }

    /// Its `job_metrics` record, for `job-metrics.log`.
    pub fn metrics(&self) -> JobEvent {
        JobEvent::JobMetrics {
            job_id: self.id,
            job_type: self.job_type,
            duration_ms: self.duration_ms(),
            memory_mb: self.memory_mb,
            cpu_percent: self.cpu_percent,
        }
    }
}

/// A record of either worker file, tagged by its `event` field.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum JobEvent {
    /// A job entered the queue.
    JobQueued {
        /// Its id.
        job_id: JobId,
        /// What it does.
        job_type: JobType,
        /// How urgent.
        priority: Priority,
        /// Always `queued`.
        status: &'static str,
    },
    /// A worker took the job.
    JobStarted {
        /// Its id.
        job_id: JobId,
        /// What it does.
        job_type: JobType,
        /// The worker, 1 to [`WORKERS`].
        worker_id: u32,
        /// Always `running`.
        status: &'static str,
    },
    /// A step of the job completed.
    JobStep {
        /// Its id.
        job_id: JobId,
        /// What it does.
        job_type: JobType,
        /// The worker.
        worker_id: u32,
        /// Step number, 1 to 4.
        step: u32,
        /// Step name, e.g. `validate`.
        step_name: &'static str,
        /// 25, 50, 75 or 100.
        progress_percent: u32,
        /// Always `running`.
        status: &'static str,
    },
    /// The job succeeded.
    JobCompleted {
        /// Its id.
        job_id: JobId,
        /// What it does.
        job_type: JobType,
        /// The worker.
        worker_id: u32,
        /// Always `completed`.
        status: &'static str,
        /// Run time in milliseconds.
        duration_ms: u64,
    },
    /// The job failed.
    JobFailed {
        /// Its id.
        job_id: JobId,
        /// What it does.
        job_type: JobType,
        /// The worker.
        worker_id: u32,
        /// Always `failed`.
        status: &'static str,
        /// Why.
        error: &'static str,
        /// Run time until the failure, in milliseconds.
        duration_ms: u64,
    },
    /// Resource use of a finished job.
    JobMetrics {
        /// Its id.
        job_id: JobId,
        /// What it does.
        job_type: JobType,
        /// Run time in milliseconds.
        duration_ms: u64,
        /// Peak memory in MiB.
        memory_mb: f64,
        /// Average CPU use in percent.
        cpu_percent: f64,
    },
    /// A worker's running totals.
    WorkerMetrics {
        /// The worker.
        worker_id: u32,
        /// Jobs finished, failed ones included.
        jobs_processed: u64,
        /// Jobs failed.
        jobs_failed: u64,
        /// Jobs waiting in the queue.
        queue_depth: usize,
        /// Mean run time of the finished jobs, in milliseconds, rounded to 0.1.
        avg_duration_ms: f64,
    },
}

/// Running totals of one worker.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct WorkerStats {
    /// Jobs finished, failed ones included.
    pub jobs_processed: u64,
    /// Jobs failed.
    pub jobs_failed: u64,
    /// Sum of the finished jobs' run times, in milliseconds.
    pub total_duration_ms: u64,
}

impl WorkerStats {
    /// Counts a finished job.
    pub fn record(&mut self, job: &JobPlan) {
        self.jobs_processed += 1;
        self.jobs_failed += u64::from(job.failure.is_some());
        self.total_duration_ms += job.duration_ms();
    }

    /// The `worker_metrics` record for worker `worker_id` with `queue_depth` jobs waiting.
    pub fn metrics(&self, worker_id: u32, queue_depth: usize) -> JobEvent {
        let avg = if self.jobs_processed == 0 {
            0.0
        } else {
            self.total_duration_ms as f64 / self.jobs_processed as f64
        };
        JobEvent::WorkerMetrics {
            worker_id,
            jobs_processed: self.jobs_processed,
            jobs_failed: self.jobs_failed,
            queue_depth,
            avg_duration_ms: (avg * 10.0).round() / 10.0,
        }
    }
}

/// Waiting jobs: the highest priority first, first come first served within a priority.
#[derive(Debug, Clone, Default)]
pub struct JobQueue {
    jobs: VecDeque<JobPlan>,
}

impl JobQueue {
    /// Adds a job.
    pub fn push(&mut self, job: JobPlan) {
        self.jobs.push_back(job);
    }

    /// Takes the next job to run, if any.
    pub fn pop(&mut self) -> Option<JobPlan> {
        // Scanning is fine: the queue holds tens of jobs, not thousands.
        let best = self.jobs.iter().map(|job| job.priority).max()?;
        let index = self.jobs.iter().position(|job| job.priority == best)?;
        self.jobs.remove(index)
    }

    /// Jobs waiting.
    pub fn len(&self) -> usize {
        self.jobs.len()
    }

    /// Whether no job waits.
    pub fn is_empty(&self) -> bool {
        self.jobs.is_empty()
    }
}

/// Synthetic job traffic: a job about every 1.5 simulated seconds, served by [`WORKERS`]
/// simulated workers.
#[derive(Debug)]
pub struct JobSimulation {
    clock: SimClock,
    next_id: u64,
    next_arrival_ms: u64,
    queue: JobQueue,
    workers: Vec<SimWorker>,
    metrics_timer: Every,
}

#[derive(Debug)]
struct SimWorker {
    id: u32,
    job: Option<SimJob>,
    stats: WorkerStats,
}

#[derive(Debug)]
struct SimJob {
    plan: JobPlan,
    /// Steps completed so far.
    steps_done: usize,
    /// When the current step completes or fails.
    next_event_ms: u64,
}

impl JobSimulation {
    /// A simulation at time 0 with an empty queue and idle workers.
    pub fn new() -> Self {
        JobSimulation {
            clock: SimClock::new(),
            next_id: 1,
            next_arrival_ms: 0,
            queue: JobQueue::default(),
            workers: (1..=WORKERS)
                .map(|id| SimWorker {
                    id,
                    job: None,
                    stats: WorkerStats::default(),
                })
                .collect(),
            metrics_timer: Every::new(WORKER_METRICS_PERIOD.as_millis() as u64),
        }
    }

    /// The busy worker whose step ends first (lowest id on ties), with that time.
    fn next_worker_event(&self) -> Option<(usize, u64)> {
        self.workers
            .iter()
            .enumerate()
            .filter_map(|(index, worker)| worker.job.as_ref().map(|job| (index, job.next_event_ms)))
            .min_by_key(|&(index, at)| (at, index))
    }

    fn advance_worker(&mut self, index: usize, out: &mut Batch) {
        let worker = &mut self.workers[index];
        let job = worker.job.as_mut().expect("only busy workers have events");
        let fails_now = job.plan.failure.is_some_and(|f| f.step == job.steps_done);
        if !fails_now {
            out.push_json(EXECUTION_LOG, &job.plan.step(worker.id, job.steps_done));
            job.steps_done += 1;
        }
        if fails_now || job.steps_done == STEPS {
            let job = worker.job.take().expect("checked busy above");
            out.push_json(EXECUTION_LOG, &job.plan.finished(worker.id));
            out.push_json(METRICS_LOG, &job.plan.metrics());
            worker.stats.record(&job.plan);
        } else {
            job.next_event_ms = self.clock.now_ms() + job.plan.step_duration_ms(job.steps_done);
        }
    }
}

impl Default for JobSimulation {
    fn default() -> Self {
        JobSimulation::new()
    }
}

impl Simulation for JobSimulation {
    fn step<R: Rng>(&mut self, rng: &mut R, out: &mut Batch) {
        let idle = self.workers.iter().position(|worker| worker.job.is_none());
        match idle {
            // An idle worker takes a waiting job at once.
            Some(index) if !self.queue.is_empty() => {
                let plan = self.queue.pop().expect("checked not empty above");
                let worker = &mut self.workers[index];
                out.push_json(EXECUTION_LOG, &plan.started(worker.id));
                worker.job = Some(SimJob {
                    next_event_ms: self.clock.now_ms() + plan.step_duration_ms(0),
                    plan,
                    steps_done: 0,
                });
            }
            _ => {
                let worker_event = self.next_worker_event();
                let arrival_open = self.queue.len() < MAX_SIMULATED_QUEUE;
                match worker_event {
                    Some((index, at)) if !arrival_open || at <= self.next_arrival_ms => {
                        self.clock.advance_to(at);
                        self.advance_worker(index, out);
                    }
                    _ => {
                        self.clock.advance_to(self.next_arrival_ms);
                        let plan = JobPlan::random(rng, JobId(self.next_id));
                        self.next_id += 1;
                        out.push_json(EXECUTION_LOG, &plan.queued());
                        self.queue.push(plan);
                        self.next_arrival_ms = self.clock.now_ms() + rng.random_range(200..2_800);
                    }
                }
            }
        }
        if self.metrics_timer.due(self.clock.now_ms()) {
            for worker in &self.workers {
                out.push_json(
                    METRICS_LOG,
                    &worker.stats.metrics(worker.id, self.queue.len()),
                );
            }
        }
    }
}

/// Runs the background worker until `shutdown`, `--duration-secs` or `--max-lines`: with
/// `--rate`, the synthetic [`JobSimulation`]; without, a real queue fed about every 1.5 s and
/// served by [`WORKERS`] Tokio tasks that sleep through each step.
///
/// # Errors
///
/// When the log directory or a file cannot be created or written.
///
/// Every turn of the loop that does the work (the synthetic thread, or the live scheduler)
/// beats `heartbeat`.
pub async fn run(
    args: CommonArgs,
    heartbeat: Heartbeat,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    simulation::run_app(
        "Background worker",
        args,
        &FILE_NAMES,
        JobSimulation::new(),
        |rng, files, duration, heartbeat, shutdown| async move {
            run_live(rng, &files, duration, heartbeat, shutdown).await
        },
        heartbeat,
        shutdown,
    )
    .await
}

/// What the live producer and workers share.
struct Shared {
    queue: Mutex<JobQueue>,
    /// Wakes a worker when a job is queued.
    queued: Notify,
    stats: Mutex<Vec<WorkerStats>>,
    files: Arc<Mutex<LogFiles>>,
}

impl Shared {
    fn queue(&self) -> parking_lot::MutexGuard<'_, JobQueue> {
        self.queue.lock()
    }

    fn stats(&self) -> parking_lot::MutexGuard<'_, Vec<WorkerStats>> {
        self.stats.lock()
    }
}

async fn run_live(
    mut rng: impl Rng,
    files: &Arc<Mutex<LogFiles>>,
    duration: Option<Duration>,
    mut heartbeat: Heartbeat,
    shutdown: impl Future<Output = ()>,
) -> Result<u64, LogFileError> {
    let shared = Arc::new(Shared {
        queue: Mutex::new(JobQueue::default()),
        queued: Notify::new(),
        stats: Mutex::new(vec![WorkerStats::default(); WORKERS as usize]),
        files: Arc::clone(files),
    });
    let mut workers = JoinSet::new();
    for worker_id in 1..=WORKERS {
        workers.spawn(serve(worker_id, Arc::clone(&shared)));
    }
    let mut flush = interval(FLUSH_INTERVAL);
    flush.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut metrics = interval_at(
        Instant::now() + WORKER_METRICS_PERIOD,
        WORKER_METRICS_PERIOD,
    );
    let deadline = sleep(duration.unwrap_or(Duration::MAX / 4));
    let next_job = sleep(Duration::ZERO);
    tokio::pin!(shutdown, deadline, next_job);
    let mut next_id = 1;

    loop {
        // The flush tick turns this loop ten times a second even when idle, so the heartbeat
        // stops only if the loop itself does.
        heartbeat.beat();
        tokio::select! {
            () = &mut shutdown => break,
            () = &mut deadline => break,
            () = &mut next_job => {
                let plan = JobPlan::random(&mut rng, JobId(next_id));
                next_id += 1;
                append(files, |batch| batch.push_json(EXECUTION_LOG, &plan.queued()))?;
                shared.queue().push(plan);
                shared.queued.notify_one();
                let gap = Duration::from_millis(rng.random_range(200..2_800));
                next_job.as_mut().reset(Instant::now() + gap);
            }
            _ = metrics.tick() => {
                let depth = shared.queue().len();
                let stats = shared.stats().clone();
                append(files, |batch| {
                    for (worker_id, stats) in (1..).zip(&stats) {
                        batch.push_json(METRICS_LOG, &stats.metrics(worker_id, depth));
                    }
                })?;
            }
            _ = flush.tick() => {
                let mut files = files.lock();
                files.flush()?;
                if files.is_exhausted() {
                    break;
                }
            }
            Some(done) = workers.join_next() => {
                done.expect("worker tasks do not panic and are aborted only after this loop")?;
            }
        }
    }
    // Jobs in progress end unlogged, as they would if the process were killed.
    workers.shutdown().await;
    let written = files.lock().lines_written();
    Ok(written)
}

/// One live worker: takes jobs by priority and sleeps through their steps.
async fn serve(worker_id: u32, shared: Arc<Shared>) -> Result<(), LogFileError> {
    loop {
        let plan = loop {
            if let Some(plan) = shared.queue().pop() {
                break plan;
            }
            shared.queued.notified().await;
        };
        append(&shared.files, |batch| {
            batch.push_json(EXECUTION_LOG, &plan.started(worker_id))
        })?;
        for index in 0..plan.steps_completed() {
            sleep(Duration::from_millis(plan.step_ms[index])).await;
            append(&shared.files, |batch| {
                batch.push_json(EXECUTION_LOG, &plan.step(worker_id, index))
            })?;
        }
        if let Some(failure) = plan.failure {
            sleep(Duration::from_millis(failure.after_ms)).await;
        }
        append(&shared.files, |batch| {
            batch.push_json(EXECUTION_LOG, &plan.finished(worker_id));
            batch.push_json(METRICS_LOG, &plan.metrics());
        })?;
        shared.stats()[worker_id as usize - 1].record(&plan);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::rngs::SmallRng;
    use rand::SeedableRng;
    use std::collections::HashMap;

    #[test]
    fn job_records_have_the_documented_shape() {
        let mut rng = SmallRng::seed_from_u64(1);
        let plan = JobPlan {
            failure: None,
            ..JobPlan::random(&mut rng, JobId(42))
        };
        let step = serde_json::to_string(&plan.step(2, 0)).unwrap();
        assert!(
            step.starts_with(r#"{"event":"job_step","job_id":"job-000042","job_type":""#),
            "{step}"
        );
        assert!(step.ends_with(
            r#""worker_id":2,"step":1,"step_name":"validate","progress_percent":25,"status":"running"}"#
        ));
        assert_eq!(plan.duration_ms(), plan.step_ms.iter().sum::<u64>());
        let done = serde_json::to_value(plan.finished(2)).unwrap();
        assert_eq!(done["status"], "completed");
    }

    #[test]
    fn queue_serves_higher_priorities_first_then_in_order() {
        let mut rng = SmallRng::seed_from_u64(1);
        let mut queue = JobQueue::default();
        for (id, priority) in [(1, Priority::Low), (2, Priority::High), (3, Priority::High)] {
            queue.push(JobPlan {
                priority,
                ..JobPlan::random(&mut rng, JobId(id))
            });
        }
        let order: Vec<_> = std::iter::from_fn(|| queue.pop())
            .map(|job| job.id.0)
            .collect();
        assert_eq!(order, [2, 3, 1]);
    }

    #[test]
    fn simulated_jobs_follow_their_lifecycle() {
        let mut sim = JobSimulation::new();
        let mut rng = SmallRng::seed_from_u64(8);
        let mut batch = Batch::new();
        for _ in 0..20_000 {
            sim.step(&mut rng, &mut batch);
        }
        // Per job, the sequence of events seen so far.
        let mut jobs: HashMap<String, Vec<String>> = HashMap::new();
        let mut worker_metrics = 0;
        for (file, line) in batch.lines() {
            let record: serde_json::Value =
                serde_json::from_str(line.split_once(" - ").unwrap().1).unwrap();
            let event = record["event"].as_str().unwrap().to_owned();
            if event == "worker_metrics" {
                worker_metrics += 1;
                continue;
            }
            assert_eq!(file == METRICS_LOG, event == "job_metrics");
            let id = record["job_id"].as_str().unwrap().to_owned();
            jobs.entry(id).or_default().push(event);
        }
        let mut failed = 0;
        let mut finished = 0;
        for events in jobs.values().filter(|events| events.len() > 2) {
            assert_eq!(events[0], "job_queued");
            assert_eq!(events[1], "job_started");
            let Some(end) = events
                .iter()
                .position(|e| e == "job_completed" || e == "job_failed")
            else {
                continue;
            };
            finished += 1;
            let steps = events[2..end].iter().filter(|e| *e == "job_step").count();
            if events[end] == "job_failed" {
                failed += 1;
                assert!(steps < STEPS);
            } else {
                assert_eq!(steps, STEPS);
            }
            assert_eq!(events[end + 1..], ["job_metrics"]);
        }
        assert!(finished > 1_500, "finished: {finished}");
        let percent = failed * 100 / finished;
        assert!((4..=12).contains(&percent), "failed: {percent}%");
        assert!(worker_metrics > 0 && worker_metrics % WORKERS == 0);
    }

    /// Paused time: two simulated minutes of the live mode run in milliseconds.
    #[tokio::test(start_paused = true)]
    async fn live_mode_runs_jobs_on_three_workers() {
        let dir = tempfile::tempdir().unwrap();
        let mut args = CommonArgs::new(dir.path());
        args.seed = Some(6);
        args.duration_secs = Some(120);
        run(args, Heartbeat::disabled(), std::future::pending())
            .await
            .unwrap();

        let execution =
            std::fs::read_to_string(dir.path().join(FILE_NAMES[EXECUTION_LOG])).unwrap();
        let metrics = std::fs::read_to_string(dir.path().join(FILE_NAMES[METRICS_LOG])).unwrap();
        let queued = execution.matches(r#""event":"job_queued""#).count();
        let finished = execution.matches(r#""status":"completed""#).count()
            + execution.matches(r#""status":"failed""#).count();
        assert!((50..150).contains(&queued), "queued: {queued}");
        assert!(finished > queued / 2, "finished {finished} of {queued}");
        assert_eq!(
            metrics.matches(r#""event":"job_metrics""#).count(),
            finished
        );
        for worker_id in 1..=WORKERS {
            assert!(execution.contains(&format!(r#""worker_id":{worker_id},"status":"running""#)));
        }
        let worker_metrics = metrics.matches(r#""event":"worker_metrics""#).count() as u32;
        assert!(
            (7 * WORKERS..=8 * WORKERS).contains(&worker_metrics),
            "{worker_metrics}"
        );
    }
}

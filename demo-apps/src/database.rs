//! The database-client app: simulated SQL queries on a pool of ten connections.
//!
//! Writes two JSON-layout files: `database-queries.log` (`query_started`, then
//! `query_completed` or `query_failed`) and `database-performance.log` (`query_metrics` per
//! query, `pool_status` every 10 s). About 10% of queries are slow (1–8 s), 5% fail.
//!
//! The one thing easy to get wrong: queries overlap, so a query's `query_started` and its
//! outcome are generally not adjacent lines; readers must join them on `query_id`. Both modes
//! keep that property: the live mode really runs queries concurrently, the synthetic mode
//! simulates the pool on a [`SimClock`].

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::fmt;
use std::future::Future;
use std::ops::RangeInclusive;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;

use parking_lot::Mutex;
use std::time::Duration;

use rand::Rng;
use serde::{Serialize, Serializer};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio::time::{interval, interval_at, sleep, Instant, MissedTickBehavior};

use crate::cli::CommonArgs;
use crate::clock::{Every, SimClock};
use crate::heartbeat::Heartbeat;
use crate::logfile::{append, Batch, LogFileError, LogFiles};
use crate::simulation::{self, pick_weighted, Simulation};

/// Index of `database-queries.log` in [`FILE_NAMES`].
pub const QUERIES_LOG: usize = 0;
/// Index of `database-performance.log` in [`FILE_NAMES`].
pub const PERFORMANCE_LOG: usize = 1;
/// The app's log files, in file-index order.
pub const FILE_NAMES: [&str; 2] = ["database-queries.log", "database-performance.log"];

/// Connections in the simulated pool; a typical default for a small service.
pub const MAX_CONNECTIONS: u32 = 10;

/// Queries at or above this many milliseconds count as slow.
pub const SLOW_QUERY_MS: f64 = 1_000.0;

/// How often the pool monitor writes `pool_status`, in (simulated, with `--rate`) time.
pub const POOL_STATUS_PERIOD: Duration = Duration::from_secs(10);

/// How often buffered lines are flushed in the live mode.
const FLUSH_INTERVAL: Duration = Duration::from_millis(100);

/// Errors a failed query reports, as PostgreSQL and drivers word them.
const QUERY_ERRORS: [&str; 5] = [
    "deadlock detected",
    "canceling statement due to statement timeout",
    "connection reset by peer",
    "duplicate key value violates unique constraint",
    "could not serialize access due to concurrent update",
];

/// The kind of statement.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum Operation {
    /// A read.
    Select,
    /// A new row.
    Insert,
    /// A change to rows.
    Update,
    /// A removal of rows.
    Delete,
}

/// The tables queries touch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Table {
    /// `users`
    Users,
    /// `orders`
    Orders,
    /// `products`
    Products,
    /// `transactions`
    Transactions,
    /// `logs`
    Logs,
}

impl Table {
    /// Every table.
    pub const ALL: [Table; 5] = [
        Table::Users,
        Table::Orders,
        Table::Products,
        Table::Transactions,
        Table::Logs,
    ];

    /// The table's SQL name.
    pub fn name(self) -> &'static str {
        match self {
            Table::Users => "users",
            Table::Orders => "orders",
            Table::Products => "products",
            Table::Transactions => "transactions",
            Table::Logs => "logs",
        }
    }

    /// A column queries filter or group on, other than `id`.
    fn filter_column(self) -> &'static str {
        match self {
            Table::Users => "country",
            Table::Orders => "user_id",
            Table::Products => "category_id",
            Table::Transactions => "order_id",
            Table::Logs => "level",
        }
    }
}

/// A query id, written `q-000123`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct QueryId(pub u64);

impl fmt::Display for QueryId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "q-{:06}", self.0)
    }
}

impl Serialize for QueryId {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

/// One planned query: everything its log records say, decided up front.
#[derive(Debug, Clone, PartialEq)]
pub struct Query {
    /// Its id.
    pub id: QueryId,
    /// Statement kind.
    pub operation: Operation,
    /// Table touched.
    pub table: Table,
    /// The statement text.
    pub sql: String,
    /// Pool connection running it, 1 to [`MAX_CONNECTIONS`].
    pub connection_id: u32,
    /// How long it runs, in milliseconds, rounded to 0.1.
    pub execution_time_ms: f64,
    /// Rows returned or changed; 0 when it fails.
    pub rows_affected: u64,
    /// Rows the plan reads; at least `rows_affected`.
    pub rows_scanned: u64,
    /// Whether the result came from the query cache (fast reads only).
    pub cache_hit: bool,
    /// Why it failed, if it did.
    pub error: Option<&'static str>,
}

impl Query {
    /// A random query: 60% SELECT, 15% INSERT, 15% UPDATE, 10% DELETE over the five tables;
    /// 10% slow (1000–8000 ms, full scans), 15% 100–1000 ms, the rest 1–100 ms; 5% fail.
    pub fn random(rng: &mut impl Rng, id: QueryId, connection_id: u32) -> Query {
        let operation = pick_weighted(
            rng,
            &[
                (Operation::Select, 60),
                (Operation::Insert, 15),
                (Operation::Update, 15),
                (Operation::Delete, 10),
            ],
        );
        let table = Table::ALL[rng.random_range(0..Table::ALL.len())];
        let roll = rng.random_range(0..100);
        let slow = roll < 10;
        let execution_time_ms = if slow {
            rng.random_range(SLOW_QUERY_MS..8_000.0)
        } else if roll < 25 {
            rng.random_range(100.0..SLOW_QUERY_MS)
        } else {
            // Skewed towards the fast end, as indexed lookups are.
            let u: f64 = rng.random();
            1.0 + 99.0 * u * u
        };
        let execution_time_ms = (execution_time_ms * 10.0).round() / 10.0;
        let (sql, rows) = random_sql(rng, operation, table, slow);
        let error = rng
            .random_ratio(1, 20)
            .then(|| QUERY_ERRORS[rng.random_range(0..QUERY_ERRORS.len())]);
        let rows_affected = match error {
            Some(_) => 0,
            None => rng.random_range(rows),
        };
        let rows_scanned = if slow {
            rng.random_range(50_000..2_000_000)
        } else {
            rows_affected + rng.random_range(0..=rows_affected * 10 + 10)
        };
        let cache_hit = operation == Operation::Select && !slow && rng.random_bool(0.55);
        Query {
            id,
            operation,
            table,
            sql,
            connection_id,
            execution_time_ms,
            rows_affected,
            rows_scanned,
            cache_hit,
            error,
        }
    }

    /// Whether it takes at least [`SLOW_QUERY_MS`].
    pub fn is_slow(&self) -> bool {
        self.execution_time_ms >= SLOW_QUERY_MS
    }

    /// Its `query_started` record.
    pub fn started(&self) -> QueryEvent<'_> {
        QueryEvent::QueryStarted {
            query_id: self.id,
            operation: self.operation,
            table: self.table,
            sql: &self.sql,
            connection_id: self.connection_id,
        }
    }

    /// Its `query_completed` or `query_failed` record.
    pub fn finished(&self) -> QueryEvent<'_> {
        match self.error {
            None => QueryEvent::QueryCompleted {
                query_id: self.id,
                operation: self.operation,
                table: self.table,
                execution_time_ms: self.execution_time_ms,
                rows_affected: self.rows_affected,
                connection_id: self.connection_id,
            },
            Some(error) => QueryEvent::QueryFailed {
                query_id: self.id,
                operation: self.operation,
                table: self.table,
                execution_time_ms: self.execution_time_ms,
                error,
                connection_id: self.connection_id,
            },
        }
    }

    /// Its `query_metrics` record, for `database-performance.log`.
    pub fn metrics(&self) -> QueryEvent<'_> {
        QueryEvent::QueryMetrics {
            query_id: self.id,
            operation: self.operation,
            table: self.table,
            execution_time_ms: self.execution_time_ms,
            rows_affected: self.rows_affected,
            rows_scanned: self.rows_scanned,
            cache_hit: self.cache_hit,
        }
    }

    /// Milliseconds the query occupies its connection, rounded up.
    fn duration_ms(&self) -> u64 {
        // Execution times are positive and below 10 s, so the cast cannot truncate.
        self.execution_time_ms.ceil() as u64
    }
}

/// A statement for `operation` on `table`, with the range of rows it returns or changes when
/// it succeeds: lookups by id touch at most one row, range queries up to their limit.
fn random_sql(
    rng: &mut impl Rng,
    operation: Operation,
    table: Table,
    slow: bool,
) -> (String, RangeInclusive<u64>) {
    let name = table.name();
    let column = table.filter_column();
    let id = rng.random_range(1..10_000u32);
    match operation {
        Operation::Select if slow => {
            let days = rng.random_range(7..365);
            let sql = format!(
                "SELECT {column}, COUNT(*) FROM {name} WHERE created_at > NOW() - INTERVAL \
                 '{days} days' GROUP BY {column} ORDER BY 2 DESC"
            );
            (sql, 10..=500)
        }
        Operation::Select if rng.random_bool(0.5) => {
            (format!("SELECT * FROM {name} WHERE id = {id}"), 0..=1)
        }
        Operation::Select => {
            let value = rng.random_range(1..500);
            let limit = [10, 20, 50, 100][rng.random_range(0..4)];
            let sql = format!(
                "SELECT * FROM {name} WHERE {column} = {value} ORDER BY created_at DESC LIMIT {limit}"
            );
            (sql, 0..=limit)
        }
        Operation::Insert => {
            let sql = match table {
                Table::Users => format!(
                    "INSERT INTO users (name, email) VALUES ('user_{id}', 'user_{id}@example.com')"
                ),
                Table::Orders => format!(
                    "INSERT INTO orders (user_id, total_cents, status) VALUES ({}, {}, 'pending')",
                    rng.random_range(1..5_000),
                    rng.random_range(100..50_000)
                ),
                Table::Products => format!(
                    "INSERT INTO products (name, price_cents, stock) VALUES ('product_{id}', {}, {})",
                    rng.random_range(100..20_000),
                    rng.random_range(0..500)
                ),
                Table::Transactions => format!(
                    "INSERT INTO transactions (order_id, amount_cents, kind) VALUES ({id}, {}, \
                     'charge')",
                    rng.random_range(100..50_000)
                ),
                Table::Logs => format!(
                    "INSERT INTO logs (level, message) VALUES ('info', 'user {id} signed in')"
                ),
            };
            (sql, 1..=1)
        }
        Operation::Update => match table {
            Table::Users => (
                format!("UPDATE users SET last_login = NOW() WHERE id = {id}"),
                0..=1,
            ),
            Table::Orders => (
                format!("UPDATE orders SET status = 'shipped' WHERE id = {id}"),
                0..=1,
            ),
            Table::Products => (
                format!("UPDATE products SET stock = stock - 1 WHERE id = {id}"),
                0..=1,
            ),
            Table::Transactions => (
                format!("UPDATE transactions SET settled = TRUE WHERE id = {id}"),
                0..=1,
            ),
            Table::Logs => (
                "UPDATE logs SET archived = TRUE WHERE created_at < NOW() - INTERVAL '30 days'"
                    .to_owned(),
                0..=5_000,
            ),
        },
        Operation::Delete => match table {
            Table::Logs => (
                "DELETE FROM logs WHERE created_at < NOW() - INTERVAL '90 days'".to_owned(),
                0..=20_000,
            ),
            _ => (format!("DELETE FROM {name} WHERE id = {id}"), 0..=1),
        },
    }
}

/// A record of either database file, tagged by its `event` field.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum QueryEvent<'a> {
    /// A query got a connection and started.
    QueryStarted {
        /// Its id.
        query_id: QueryId,
        /// Statement kind.
        operation: Operation,
        /// Table touched.
        table: Table,
        /// Statement text.
        sql: &'a str,
        /// Pool connection.
        connection_id: u32,
    },
    /// A query finished.
    QueryCompleted {
        /// Its id.
        query_id: QueryId,
        /// Statement kind.
        operation: Operation,
        /// Table touched.
        table: Table,
        /// Run time in milliseconds.
        execution_time_ms: f64,
        /// Rows returned or changed.
        rows_affected: u64,
        /// Pool connection.
        connection_id: u32,
    },
    /// A query failed.
    QueryFailed {
        /// Its id.
        query_id: QueryId,
        /// Statement kind.
        operation: Operation,
        /// Table touched.
        table: Table,
        /// Time until the failure, in milliseconds.
        execution_time_ms: f64,
        /// The database's error message.
        error: &'a str,
        /// Pool connection.
        connection_id: u32,
    },
    /// Per-query performance figures.
    QueryMetrics {
        /// Its id.
        query_id: QueryId,
        /// Statement kind.
        operation: Operation,
        /// Table touched.
        table: Table,
        /// Run time in milliseconds.
        execution_time_ms: f64,
        /// Rows returned or changed.
        rows_affected: u64,
        /// Rows read by the plan.
        rows_scanned: u64,
        /// Whether the query cache answered.
        cache_hit: bool,
    },
    /// The pool monitor's periodic snapshot.
    PoolStatus {
        /// Connections running a query.
        active_connections: u32,
        /// Connections open but unused.
        idle_connections: u32,
        /// Pool size.
        max_connections: u32,
        /// Queries waiting for a connection.
        wait_queue: u32,
    },
}

/// A `pool_status` record for `active` busy connections and `waiting` queued queries.
pub fn pool_status(active: u32, waiting: u32) -> QueryEvent<'static> {
    let active = active.min(MAX_CONNECTIONS);
    QueryEvent::PoolStatus {
        active_connections: active,
        idle_connections: MAX_CONNECTIONS - active,
        max_connections: MAX_CONNECTIONS,
        wait_queue: waiting,
    }
}

/// Synthetic database traffic: about ten queries per simulated second on a simulated pool of
/// [`MAX_CONNECTIONS`], with outcomes written when each query's simulated time is up.
#[derive(Debug)]
pub struct QuerySimulation {
    clock: SimClock,
    next_id: u64,
    next_arrival_ms: u64,
    /// Queries running, earliest finish first.
    running: BinaryHeap<Reverse<Running>>,
    free_connections: Vec<u32>,
    /// Whether the next arrival is waiting for a connection.
    arrival_waiting: bool,
    pool_monitor: Every,
}

#[derive(Debug, PartialEq)]
struct Running {
    finish_ms: u64,
    query: Query,
}

impl Eq for Running {}

impl PartialOrd for Running {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Running {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (self.finish_ms, self.query.id).cmp(&(other.finish_ms, other.query.id))
    }
}

impl QuerySimulation {
    /// A simulation at time 0 with an idle pool.
    pub fn new() -> Self {
        QuerySimulation {
            clock: SimClock::new(),
            next_id: 1,
            next_arrival_ms: 0,
            running: BinaryHeap::new(),
            // Reversed so connection 1 is handed out first.
            free_connections: (1..=MAX_CONNECTIONS).rev().collect(),
            arrival_waiting: false,
            pool_monitor: Every::new(POOL_STATUS_PERIOD.as_millis() as u64),
        }
    }
}

impl Default for QuerySimulation {
    fn default() -> Self {
        QuerySimulation::new()
    }
}

impl Simulation for QuerySimulation {
    fn step<R: Rng>(&mut self, rng: &mut R, out: &mut Batch) {
        let next_finish_ms = self.running.peek().map(|Reverse(r)| r.finish_ms);
        let arrival_first = next_finish_ms.is_none_or(|finish| self.next_arrival_ms < finish);
        if arrival_first && !self.free_connections.is_empty() {
            self.clock.advance_to(self.next_arrival_ms);
            self.arrival_waiting = false;
            let connection_id = self
                .free_connections
                .pop()
                .expect("checked not empty above");
            let query = Query::random(rng, QueryId(self.next_id), connection_id);
            self.next_id += 1;
            out.push_json(QUERIES_LOG, &query.started());
            self.running.push(Reverse(Running {
                finish_ms: self.clock.now_ms() + query.duration_ms(),
                query,
            }));
            // About ten queries per simulated second.
            self.next_arrival_ms = self.clock.now_ms() + rng.random_range(10..190);
        } else {
            self.arrival_waiting = arrival_first;
            let Reverse(done) = self
                .running
                .pop()
                .expect("a finish comes first, or the pool is full, so a query is running");
            self.clock.advance_to(done.finish_ms);
            out.push_json(QUERIES_LOG, &done.query.finished());
            out.push_json(PERFORMANCE_LOG, &done.query.metrics());
            self.free_connections.push(done.query.connection_id);
        }
        if self.pool_monitor.due(self.clock.now_ms()) {
            let active = self.running.len() as u32;
            out.push_json(
                PERFORMANCE_LOG,
                &pool_status(active, u32::from(self.arrival_waiting)),
            );
        }
    }
}

/// Runs the database client until `shutdown`, `--duration-secs` or `--max-lines`: with
/// `--rate`, the synthetic [`QuerySimulation`]; without, a few real queries per second on a
/// pool of [`MAX_CONNECTIONS`] tasks, their execution times slept.
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
        "Database client",
        args,
        &FILE_NAMES,
        QuerySimulation::new(),
        |rng, files, duration, heartbeat, shutdown| async move {
            run_live(rng, &files, duration, heartbeat, shutdown).await
        },
        heartbeat,
        shutdown,
    )
    .await
}

/// The live pool: permits bound concurrency, ids name the connections.
struct Pool {
    slots: Semaphore,
    free: Mutex<Vec<u32>>,
    waiting: AtomicU32,
}

async fn run_live(
    mut rng: impl Rng,
    files: &Arc<Mutex<LogFiles>>,
    duration: Option<Duration>,
    mut heartbeat: Heartbeat,
    shutdown: impl Future<Output = ()>,
) -> Result<u64, LogFileError> {
    let pool = Arc::new(Pool {
        slots: Semaphore::new(MAX_CONNECTIONS as usize),
        free: Mutex::new((1..=MAX_CONNECTIONS).rev().collect()),
        waiting: AtomicU32::new(0),
    });
    let mut queries = JoinSet::new();
    let mut flush = interval(FLUSH_INTERVAL);
    flush.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut monitor = interval_at(Instant::now() + POOL_STATUS_PERIOD, POOL_STATUS_PERIOD);
    let deadline = sleep(duration.unwrap_or(Duration::MAX / 4));
    let next_query = sleep(Duration::ZERO);
    tokio::pin!(shutdown, deadline, next_query);
    let mut next_id = 1;

    loop {
        // The flush tick turns this loop ten times a second even when idle, so the heartbeat
        // stops only if the loop itself does.
        heartbeat.beat();
        tokio::select! {
            () = &mut shutdown => break,
            () = &mut deadline => break,
            () = &mut next_query => {
                let query = Query::random(&mut rng, QueryId(next_id), 0);
                next_id += 1;
                queries.spawn(execute(query, Arc::clone(&pool), Arc::clone(files)));
                // A few queries per second.
                let gap = Duration::from_millis(rng.random_range(150..700));
                next_query.as_mut().reset(Instant::now() + gap);
            }
            _ = monitor.tick() => {
                let active = MAX_CONNECTIONS - pool.slots.available_permits() as u32;
                let waiting = pool.waiting.load(Ordering::Relaxed);
                append(files, |batch| batch.push_json(PERFORMANCE_LOG, &pool_status(active, waiting)))?;
            }
            _ = flush.tick() => {
                let mut files = files.lock();
                files.flush()?;
                if files.is_exhausted() {
                    break;
                }
            }
            Some(done) = queries.join_next() => {
                done.expect("query tasks do not panic and are aborted only after this loop")?;
            }
        }
    }
    // Queries still running end unlogged, as they would if the process were killed.
    queries.shutdown().await;
    let written = files.lock().lines_written();
    Ok(written)
}

async fn execute(
    mut query: Query,
    pool: Arc<Pool>,
    files: Arc<Mutex<LogFiles>>,
) -> Result<(), LogFileError> {
    pool.waiting.fetch_add(1, Ordering::Relaxed);
    let permit = pool
        .slots
        .acquire()
        .await
        .expect("the pool semaphore is never closed");
    pool.waiting.fetch_sub(1, Ordering::Relaxed);
    let connection_id = pool
        .free
        .lock()
        .pop()
        .expect("a permit guarantees a free connection");
    query.connection_id = connection_id;
    append(&files, |batch| {
        batch.push_json(QUERIES_LOG, &query.started())
    })?;
    sleep(Duration::from_millis(query.duration_ms())).await;
    append(&files, |batch| {
        batch.push_json(QUERIES_LOG, &query.finished());
        batch.push_json(PERFORMANCE_LOG, &query.metrics());
    })?;
    pool.free.lock().push(connection_id);
    drop(permit);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::rngs::SmallRng;
    use rand::SeedableRng;

    #[test]
    fn query_records_have_the_documented_shape() {
        let mut rng = SmallRng::seed_from_u64(5);
        let query = Query::random(&mut rng, QueryId(123), 3);
        let started = serde_json::to_value(query.started()).unwrap();
        assert_eq!(started["event"], "query_started");
        assert_eq!(started["query_id"], "q-000123");
        assert_eq!(started["connection_id"], 3);
        assert!(started["sql"]
            .as_str()
            .unwrap()
            .contains(query.table.name()));
        let line = serde_json::to_string(&query.metrics()).unwrap();
        assert!(
            line.starts_with(r#"{"event":"query_metrics","query_id":"q-000123""#),
            "{line}"
        );
        assert_eq!(
            serde_json::to_string(&pool_status(4, 0)).unwrap(),
            r#"{"event":"pool_status","active_connections":4,"idle_connections":6,"max_connections":10,"wait_queue":0}"#
        );
    }

    #[test]
    fn query_mix_holds_its_proportions() {
        let mut rng = SmallRng::seed_from_u64(11);
        let queries: Vec<_> = (0..10_000)
            .map(|n| Query::random(&mut rng, QueryId(n), 1))
            .collect();
        let slow = queries.iter().filter(|q| q.is_slow()).count();
        let very_slow = queries
            .iter()
            .filter(|q| q.execution_time_ms > 5_000.0)
            .count();
        let failed = queries.iter().filter(|q| q.error.is_some()).count();
        let selects = queries
            .iter()
            .filter(|q| q.operation == Operation::Select)
            .count();
        assert!((500..1_500).contains(&slow), "slow: {slow}");
        assert!(very_slow > 0 && very_slow < slow);
        assert!((300..700).contains(&failed), "failed: {failed}");
        assert!((5_500..6_500).contains(&selects), "selects: {selects}");
        assert!(queries.iter().all(|q| q.rows_scanned >= q.rows_affected));
        assert!(queries
            .iter()
            .all(|q| (1.0..8_000.0).contains(&q.execution_time_ms)));
    }

    #[test]
    fn simulation_finishes_every_started_query_once() {
        let mut sim = QuerySimulation::new();
        let mut rng = SmallRng::seed_from_u64(2);
        let mut batch = Batch::new();
        for _ in 0..5_000 {
            sim.step(&mut rng, &mut batch);
        }
        let mut open = std::collections::HashSet::new();
        let mut finished = 0;
        for (file, line) in batch.lines() {
            let record: serde_json::Value =
                serde_json::from_str(line.split_once(" - ").unwrap().1).unwrap();
            let id = record["query_id"].as_str().map(str::to_owned);
            match (file, record["event"].as_str().unwrap()) {
                (QUERIES_LOG, "query_started") => assert!(open.insert(id.unwrap())),
                (QUERIES_LOG, "query_completed" | "query_failed") => {
                    assert!(open.remove(&id.unwrap()), "finished before started");
                    finished += 1;
                }
                (PERFORMANCE_LOG, "query_metrics" | "pool_status") => {}
                other => panic!("unexpected {other:?}"),
            }
        }
        assert!(finished > 2_000);
        assert!(open.len() <= MAX_CONNECTIONS as usize);
    }

    /// Paused time: 60 simulated seconds of the live mode run in milliseconds.
    #[tokio::test(start_paused = true)]
    async fn live_mode_logs_queries_and_pool_status() {
        let dir = tempfile::tempdir().unwrap();
        let mut args = CommonArgs::new(dir.path());
        args.seed = Some(4);
        args.duration_secs = Some(60);
        run(args, Heartbeat::disabled(), std::future::pending())
            .await
            .unwrap();

        let queries = std::fs::read_to_string(dir.path().join(FILE_NAMES[QUERIES_LOG])).unwrap();
        let performance =
            std::fs::read_to_string(dir.path().join(FILE_NAMES[PERFORMANCE_LOG])).unwrap();
        let started = queries.matches(r#""event":"query_started""#).count();
        let finished = queries.matches(r#""event":"query_completed""#).count()
            + queries.matches(r#""event":"query_failed""#).count();
        assert!((80..250).contains(&started), "started: {started}");
        assert!(started - finished <= MAX_CONNECTIONS as usize);
        assert_eq!(
            performance.matches(r#""event":"query_metrics""#).count(),
            finished
        );
        // Every 10 s for 60 s; the sixth coincides with the deadline and may lose the race.
        let pool_status = performance.matches(r#""event":"pool_status""#).count();
        assert!((5..=6).contains(&pool_status), "pool_status: {pool_status}");
    }
}

//! The traffic generator: a request mix for the web API, and the loop that sends it over HTTP.
//!
//! [`plan_request`] decides what to send, without I/O, so the web API's synthetic mode replays
//! the same mix. The one thing easy to get wrong: the generator usually starts before the web
//! API is ready (same pod, or `kubectl apply` of both at once), so a refused connection is
//! counted and retried quietly, never fatal.

use std::collections::BTreeMap;
use std::fmt;
use std::future::Future;
use std::time::Duration;

use rand::Rng;
use tokio::task::JoinSet;
use tokio::time::{interval, sleep, Instant, MissedTickBehavior};

use crate::cli::{seeded_rng, TrafficArgs};
use crate::heartbeat::{Heartbeat, BEAT_PERIOD};
use crate::simulation::pick_weighted;
use crate::web::api::SEED_USERS;

/// User agents requests claim to come from.
pub const USER_AGENTS: [&str; 5] = [
    "curl/8.5.0",
    "python-requests/2.31.0",
    "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0",
    "Go-http-client/1.1",
    "okhttp/4.12.0",
];

/// How long one request may take; above the web API's slowest simulated latency.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// Pause between readiness probes while the web API is not up.
const READINESS_RETRY: Duration = Duration::from_millis(500);

/// How long requests in flight at shutdown may still finish.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(3);

/// Fewest requests per second accepted, so the interval between requests stays finite.
const MIN_REQUESTS_PER_SEC: f64 = 0.01;

const FIRST_NAMES: [&str; 8] = ["Ana", "Ben", "Chloe", "Dev", "Elif", "Femi", "Gus", "Hana"];
const LAST_NAMES: [&str; 8] = [
    "Kim", "Lopez", "Novak", "Okafor", "Patel", "Rossi", "Sato", "Weber",
];

/// The web API's routes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Route {
    /// `GET /health`
    Health,
    /// `GET /users`
    ListUsers,
    /// `GET /users/{id}`
    GetUser,
    /// `POST /users`
    CreateUser,
    /// `GET /simulate-load`
    SimulateLoad,
}

/// One request to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlannedRequest {
    /// Which route it exercises.
    pub route: Route,
    /// `GET` or `POST`.
    pub method: &'static str,
    /// Path, e.g. `/users/7`.
    pub path: String,
    /// Raw query string without `?`; empty when none.
    pub query: String,
    /// Body of a `POST` (meant as JSON, though possibly malformed on purpose).
    pub body: Option<String>,
    /// The `User-Agent` header.
    pub user_agent: &'static str,
}

impl PlannedRequest {
    /// The last path segment, e.g. the `7` of `/users/7`.
    pub fn path_id(&self) -> &str {
        self.path.rsplit('/').next().unwrap_or_default()
    }

    /// The full URL below `base` (e.g. `http://127.0.0.1:8080`).
    pub fn url(&self, base: &str) -> String {
        let base = base.trim_end_matches('/');
        if self.query.is_empty() {
            format!("{base}{}", self.path)
        } else {
            format!("{base}{}?{}", self.path, self.query)
        }
    }
}

/// A random request: 30% list users (half with paging, a few with a bad limit), 30% get a user
/// (mostly existing ids, some missing, a few malformed), 15% create a user (70% good, 10%
/// invalid JSON, 10% missing email, 10% duplicate email), 10% simulate load, 15% health.
pub fn plan_request(rng: &mut impl Rng) -> PlannedRequest {
    let route = pick_weighted(
        rng,
        &[
            (Route::ListUsers, 30),
            (Route::GetUser, 30),
            (Route::CreateUser, 15),
            (Route::SimulateLoad, 10),
            (Route::Health, 15),
        ],
    );
    let user_agent = USER_AGENTS[rng.random_range(0..USER_AGENTS.len())];
    let get = |path: String, query: String| PlannedRequest {
        route,
        method: "GET",
        path,
        query,
        body: None,
        user_agent,
    };
    match route {
        Route::Health => get("/health".to_owned(), String::new()),
        Route::SimulateLoad => get("/simulate-load".to_owned(), String::new()),
        Route::ListUsers => {
            let query = match rng.random_range(0..100) {
                0..50 => String::new(),
                50..97 => format!(
                    "page={}&limit={}",
                    rng.random_range(1..=4),
                    [5, 10, 20][rng.random_range(0..3)]
                ),
                _ => "page=1&limit=500".to_owned(),
            };
            get("/users".to_owned(), query)
        }
        Route::GetUser => {
            let id = match rng.random_range(0..100) {
                0..75 => rng.random_range(1..=SEED_USERS.len()).to_string(),
                75..95 => rng.random_range(1_000..10_000).to_string(),
                _ => "abc".to_owned(),
            };
            get(format!("/users/{id}"), String::new())
        }
        Route::CreateUser => {
            let first = FIRST_NAMES[rng.random_range(0..FIRST_NAMES.len())];
            let last = LAST_NAMES[rng.random_range(0..LAST_NAMES.len())];
            let number = rng.random_range(0..100_000);
            let email = format!(
                "{}.{}{number}@example.com",
                first.to_lowercase(),
                last.to_lowercase()
            );
            let body = match rng.random_range(0..10) {
                0..7 => format!(r#"{{"name":"{first} {last}","email":"{email}"}}"#),
                7 => format!(r#"{{"name":"{first} {last}","email":"{email}""#),
                8 => format!(r#"{{"name":"{first} {last}"}}"#),
                _ => {
                    let (name, email) = SEED_USERS[rng.random_range(0..SEED_USERS.len())];
                    format!(r#"{{"name":"{name}","email":"{email}"}}"#)
                }
            };
            PlannedRequest {
                route,
                method: "POST",
                path: "/users".to_owned(),
                query: String::new(),
                body: Some(body),
                user_agent,
            }
        }
    }
}

/// The error bursts: `length` out of every `every` (the first one `every` after the start).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BurstSchedule {
    every: Duration,
    length: Duration,
}

impl BurstSchedule {
    /// The schedule from the flags; `None` when bursts are off.
    ///
    /// # Errors
    /// When a burst would not end before the next begins, or the burst rate is not positive.
    pub fn from_args(args: &TrafficArgs) -> anyhow::Result<Option<Self>> {
        if args.error_burst_every_secs == 0 {
            return Ok(None);
        }
        if args.error_burst_secs == 0 || args.error_burst_secs >= args.error_burst_every_secs {
            anyhow::bail!(
                "--error-burst-secs {} must be at least 1 and less than --error-burst-every-secs {}",
                args.error_burst_secs,
                args.error_burst_every_secs
            );
        }
        if !(args.error_burst_per_sec.is_finite()
            && args.error_burst_per_sec >= MIN_REQUESTS_PER_SEC)
        {
            anyhow::bail!(
                "--error-burst-per-sec {} must be at least {MIN_REQUESTS_PER_SEC}",
                args.error_burst_per_sec
            );
        }
        Ok(Some(Self {
            every: Duration::from_secs(args.error_burst_every_secs),
            length: Duration::from_secs(args.error_burst_secs),
        }))
    }

    /// Whether a burst runs `elapsed` after the start.
    pub fn bursting(&self, elapsed: Duration) -> bool {
        elapsed >= self.every
            && Duration::from_nanos((elapsed.as_nanos() % self.every.as_nanos()) as u64)
                < self.length
    }
}

/// A request of an error burst: a user whose JSON body is cut short, which the web API
/// rejects and logs at ERROR.
pub fn plan_burst_request(rng: &mut impl Rng) -> PlannedRequest {
    let first = FIRST_NAMES[rng.random_range(0..FIRST_NAMES.len())];
    PlannedRequest {
        route: Route::CreateUser,
        method: "POST",
        path: "/users".to_owned(),
        query: String::new(),
        body: Some(format!(r#"{{"name":"{first}","email":"#)),
        user_agent: USER_AGENTS[rng.random_range(0..USER_AGENTS.len())],
    }
}

/// What the traffic generator saw: responses by status code, and requests that got none.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Summary {
    /// Responses per HTTP status code.
    pub statuses: BTreeMap<u16, u64>,
    /// Requests that got no response (refused, reset, timed out).
    pub failed: u64,
    /// Seconds from start to finish.
    pub elapsed_secs: u64,
}

impl Summary {
    /// Requests sent, answered or not.
    pub fn requests(&self) -> u64 {
        self.statuses.values().sum::<u64>() + self.failed
    }

    fn count(&mut self, outcome: Result<u16, reqwest::Error>) {
        match outcome {
            Ok(status) => *self.statuses.entry(status).or_default() += 1,
            Err(_) => self.failed += 1,
        }
    }
}

impl fmt::Display for Summary {
    /// One line: `traffic-generator: 150 requests in 30s: 200=90 201=10 400=12 failed=0`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "traffic-generator: {} requests in {}s:",
            self.requests(),
            self.elapsed_secs
        )?;
        for (status, count) in &self.statuses {
            write!(f, " {status}={count}")?;
        }
        write!(f, " failed={}", self.failed)
    }
}

/// Sends the request mix to `args.target` at `args.requests_per_sec` until `shutdown` or
/// `--duration-secs`, first waiting quietly for `GET /health` to answer; returns the tally.
/// Both the waiting and the sending loop beat `heartbeat`.
///
/// # Errors
///
/// When the HTTP client cannot be built.
pub async fn run(
    args: TrafficArgs,
    mut heartbeat: Heartbeat,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<Summary> {
    let started = Instant::now();
    let client = reqwest::Client::builder()
        .timeout(REQUEST_TIMEOUT)
        .build()?;
    let bursts = BurstSchedule::from_args(&args)?;
    let mut rng = seeded_rng(args.seed);
    let deadline = sleep(
        args.duration_secs
            .map_or(Duration::MAX / 4, Duration::from_secs),
    );
    tokio::pin!(shutdown, deadline);
    let mut summary = Summary::default();

    let ready = tokio::select! {
        () = wait_until_ready(&client, &args.target, &mut heartbeat) => true,
        () = &mut shutdown => false,
        () = &mut deadline => false,
    };
    if ready {
        let period = Duration::from_secs_f64(1.0 / args.requests_per_sec.max(MIN_REQUESTS_PER_SEC));
        let mut ticks = interval(period);
        ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
        // At a low --requests-per-sec the request ticks alone would leave the heartbeat stale.
        let mut beats = interval(BEAT_PERIOD);
        beats.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let mut burst_ticks = interval(Duration::from_secs_f64(
            1.0 / args.error_burst_per_sec.max(MIN_REQUESTS_PER_SEC),
        ));
        burst_ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let sending = Instant::now();
        let mut was_bursting = false;
        let mut in_flight = JoinSet::new();
        loop {
            heartbeat.beat();
            tokio::select! {
                () = &mut shutdown => break,
                () = &mut deadline => break,
                _ = ticks.tick() => {
                    let request = plan_request(&mut rng);
                    in_flight.spawn(send(client.clone(), args.target.clone(), request));
                }
                _ = burst_ticks.tick(), if bursts.is_some() => {
                    let bursting = bursts.is_some_and(|b| b.bursting(sending.elapsed()));
                    if bursting != was_bursting {
                        tracing::info!(bursting, "Error burst {}.", if bursting { "started" } else { "ended" });
                        was_bursting = bursting;
                    }
                    if bursting {
                        let request = plan_burst_request(&mut rng);
                        in_flight.spawn(send(client.clone(), args.target.clone(), request));
                    }
                }
                Some(done) = in_flight.join_next() => {
                    summary.count(done.expect("request tasks do not panic"));
                }
                _ = beats.tick() => {}
            }
        }
        let drained = tokio::time::timeout(DRAIN_TIMEOUT, async {
            while let Some(done) = in_flight.join_next().await {
                summary.count(done.expect("request tasks do not panic"));
            }
        })
        .await;
        if drained.is_err() {
            summary.failed += in_flight.len() as u64;
            in_flight.shutdown().await;
        }
    }
    summary.elapsed_secs = started.elapsed().as_secs();
    Ok(summary)
}

/// Probes `GET /health` until it answers with a success status. Waiting is progress: the
/// heartbeat goes on, or the kubelet would restart this container while web-api starts.
async fn wait_until_ready(client: &reqwest::Client, target: &str, heartbeat: &mut Heartbeat) {
    let url = format!("{}/health", target.trim_end_matches('/'));
    let mut logged = false;
    loop {
        heartbeat.beat();
        match client.get(&url).send().await {
            Ok(response) if response.status().is_success() => return,
            _ if !logged => {
                tracing::info!(url, "Web API not ready yet; retrying quietly.");
                logged = true;
            }
            _ => {}
        }
        sleep(READINESS_RETRY).await;
    }
}

async fn send(
    client: reqwest::Client,
    target: String,
    request: PlannedRequest,
) -> Result<u16, reqwest::Error> {
    let url = request.url(&target);
    let builder = match request.body {
        Some(body) => client
            .post(url)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(body),
        None => client.get(url),
    };
    let response = builder
        .header(reqwest::header::USER_AGENT, request.user_agent)
        .send()
        .await?;
    let status = response.status().as_u16();
    // Read the body so the connection can be reused.
    response.bytes().await?;
    Ok(status)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::rngs::SmallRng;
    use rand::SeedableRng;
    use std::collections::HashMap;

    #[test]
    fn mix_covers_every_route_and_both_kinds_of_bad_body() {
        let mut rng = SmallRng::seed_from_u64(1);
        let requests: Vec<_> = (0..2_000).map(|_| plan_request(&mut rng)).collect();
        let mut routes: HashMap<Route, usize> = HashMap::new();
        for request in &requests {
            *routes.entry(request.route).or_default() += 1;
        }
        assert_eq!(routes.len(), 5);
        let bodies: Vec<_> = requests.iter().filter_map(|r| r.body.as_deref()).collect();
        let invalid_json = bodies
            .iter()
            .filter(|body| serde_json::from_str::<serde_json::Value>(body).is_err())
            .count();
        let missing_email = bodies.iter().filter(|body| !body.contains("email")).count();
        let duplicate = bodies
            .iter()
            .filter(|body| SEED_USERS.iter().any(|(_, email)| body.contains(email)))
            .count();
        assert!(invalid_json > 0 && missing_email > 0 && duplicate > 0);
        assert!(requests
            .iter()
            .any(|r| r.route == Route::ListUsers && r.query.is_empty()));
        assert!(requests.iter().any(|r| r.query.starts_with("page=")));
    }

    #[test]
    fn bursts_come_every_period_after_the_first_and_last_their_length() {
        let schedule = BurstSchedule {
            every: Duration::from_secs(60),
            length: Duration::from_secs(20),
        };
        let at = |s: u64| schedule.bursting(Duration::from_secs(s));
        assert!(!at(0) && !at(59) && at(60) && at(79) && !at(80) && at(120) && !at(140));
        let body = plan_burst_request(&mut SmallRng::seed_from_u64(3))
            .body
            .unwrap();
        assert!(serde_json::from_str::<serde_json::Value>(&body).is_err());
    }

    #[test]
    fn urls_join_path_and_query() {
        let mut request = plan_request(&mut SmallRng::seed_from_u64(0));
        request.path = "/users/7".to_owned();
        request.query = String::new();
        assert_eq!(request.url("http://h:1/"), "http://h:1/users/7");
        assert_eq!(request.path_id(), "7");
        request.query = "page=2".to_owned();
        assert_eq!(request.url("http://h:1"), "http://h:1/users/7?page=2");
    }

    #[test]
    fn summary_prints_one_line() {
        let mut summary = Summary::default();
        summary.statuses.insert(200, 3);
        summary.statuses.insert(500, 1);
        summary.failed = 2;
        summary.elapsed_secs = 5;
        assert_eq!(
            summary.to_string(),
            "traffic-generator: 6 requests in 5s: 200=3 500=1 failed=2"
        );
    }
}

//! What the web API does per route, independent of HTTP: the user store, injected failures,
//! and the error and application lines each request produces.
//!
//! The HTTP handlers and the synthetic generator both call [`Api`], so synthetic load has the
//! same line mix and proportions as real requests. The one thing easy to get wrong: nothing
//! here may read the wall clock or sleep, or seeded synthetic output would stop being
//! deterministic; latency is returned in [`Reply::delay_ms`] for the caller to sleep or simulate.

use std::collections::{BTreeMap, HashSet};

use rand::Rng;
use serde::Serialize;
use serde_json::{json, Value};

use super::{RequestId, APPLICATION_LOG, APP_LOGGER, ERROR_LOG, ERROR_LOGGER};
use crate::logfile::{printable, Batch, Level};

/// The users the store starts with, as `(name, email)`.
pub const SEED_USERS: [(&str, &str); 20] = [
    ("Alice Johnson", "alice.johnson@example.com"),
    ("Bob Smith", "bob.smith@example.com"),
    ("Carol Williams", "carol.williams@example.com"),
    ("David Brown", "david.brown@example.com"),
    ("Eve Davis", "eve.davis@example.com"),
    ("Frank Miller", "frank.miller@example.com"),
    ("Grace Wilson", "grace.wilson@example.com"),
    ("Henry Moore", "henry.moore@example.com"),
    ("Irene Taylor", "irene.taylor@example.com"),
    ("Jack Anderson", "jack.anderson@example.com"),
    ("Karen Thomas", "karen.thomas@example.com"),
    ("Leo Jackson", "leo.jackson@example.com"),
    ("Mia White", "mia.white@example.com"),
    ("Noah Harris", "noah.harris@example.com"),
    ("Olivia Martin", "olivia.martin@example.com"),
    ("Paul Thompson", "paul.thompson@example.com"),
    ("Quinn Garcia", "quinn.garcia@example.com"),
    ("Rosa Martinez", "rosa.martinez@example.com"),
    ("Sam Robinson", "sam.robinson@example.com"),
    ("Tina Clark", "tina.clark@example.com"),
];

/// Page size when `?limit=` is absent.
pub const DEFAULT_PAGE_LIMIT: u32 = 10;

/// Largest `?limit=` accepted; larger values are a validation error.
pub const MAX_PAGE_LIMIT: u32 = 100;

/// Chance that listing users fails with a database timeout (500), in percent.
const LIST_FAILURE_PERCENT: u32 = 10;

/// Chance that a valid new user still gets a 409, as if another replica inserted the same
/// email first, in percent.
const RANDOM_CONFLICT_PERCENT: u32 = 5;

/// Chance that the cache connection resets while fetching a user, in percent (logged as an
/// error; the request is still served from the database).
const CACHE_RESET_PERCENT: u32 = 2;

/// What `logger.exception` adds to the line of a listing that timed out: the log files then
/// show the multi-line records a real Python service writes, which the sidecars must keep whole.
const LIST_TIMEOUT_TRACEBACK: &str = "Traceback (most recent call last):
  File \"/app/web_api/handlers.py\", line 88, in list_users
    rows = db.fetch_page(page, limit)
  File \"/app/web_api/db.py\", line 41, in fetch_page
    return self.pool.execute(query, timeout=30)
  File \"/usr/lib/python3.12/site-packages/psycopg_pool/pool.py\", line 204, in execute
    raise TimeoutError(f\"couldn't get a connection after {timeout:.2f} sec\")
TimeoutError: couldn't get a connection after 30.00 sec";

/// The same for a cache read the upstream cut off (the user is then read from the database).
const CACHE_RESET_TRACEBACK: &str = "Traceback (most recent call last):
  File \"/app/web_api/cache.py\", line 57, in get
    return self.client.get(key)
  File \"/usr/lib/python3.12/site-packages/redis/connection.py\", line 512, in read_response
    response = self._parser.read_response()
ConnectionResetError: [Errno 104] Connection reset by peer";

/// A stored user.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct User {
    /// Sequential id, from 1.
    pub id: u64,
    /// Display name.
    pub name: String,
    /// Unique email address.
    pub email: String,
}

/// In-memory users, unique by email.
#[derive(Debug, Clone)]
pub struct UserStore {
    users: BTreeMap<u64, User>,
    emails: HashSet<String>,
    next_id: u64,
}

impl UserStore {
    /// A store holding the [`SEED_USERS`] with ids 1 to 20.
    pub fn seeded() -> Self {
        let mut store = UserStore {
            users: BTreeMap::new(),
            emails: HashSet::new(),
            next_id: 1,
        };
        for (name, email) in SEED_USERS {
            store.insert(name, email);
        }
        store
    }

    /// Users stored.
    pub fn len(&self) -> usize {
        self.users.len()
    }

    /// Whether the store is empty.
    pub fn is_empty(&self) -> bool {
        self.users.is_empty()
    }

    /// The user with `id`.
    pub fn get(&self, id: u64) -> Option<&User> {
        self.users.get(&id)
    }

    /// Whether some user has `email`.
    pub fn has_email(&self, email: &str) -> bool {
        self.emails.contains(email)
    }

    /// Page `page` (from 1) of `limit` users, by id.
    pub fn page(&self, page: u32, limit: u32) -> Vec<&User> {
        let skip = (page.saturating_sub(1) as usize).saturating_mul(limit as usize);
        self.users
            .values()
            .skip(skip)
            .take(limit as usize)
            .collect()
    }

    /// Adds a user unless the email is taken; returns the new user.
    pub fn insert(&mut self, name: &str, email: &str) -> Option<&User> {
        if !self.emails.insert(email.to_owned()) {
            return None;
        }
        let id = self.next_id;
        self.next_id += 1;
        let user = User {
            id,
            name: name.to_owned(),
            email: email.to_owned(),
        };
        Some(self.users.entry(id).or_insert(user))
    }
}

/// What a route answers: status, JSON body, and latency the caller should add.
#[derive(Debug, Clone, PartialEq)]
pub struct Reply {
    /// HTTP status code.
    pub status: u16,
    /// JSON body.
    pub body: Value,
    /// Latency to add before answering (slept by the server, simulated synthetically), in ms.
    pub delay_ms: u64,
    /// CPU work to do before answering (only `/simulate-load`), in [`busy_work`] units.
    pub work_units: u32,
}

impl Reply {
    fn new(status: u16, body: Value, delay_ms: u64) -> Self {
        Reply {
            status,
            body,
            delay_ms,
            work_units: 0,
        }
    }

    /// Length in bytes of the serialised body, as sent in the response.
    pub fn content_length(&self) -> u64 {
        serde_json::to_vec(&self.body).map_or(0, |body| body.len() as u64)
    }
}

/// The web API's behaviour per route.
#[derive(Debug, Clone)]
pub struct Api {
    users: UserStore,
}

impl Api {
    /// An API whose store holds the [`SEED_USERS`].
    pub fn seeded() -> Self {
        Api {
            users: UserStore::seeded(),
        }
    }

    /// Users stored.
    pub fn user_count(&self) -> usize {
        self.users.len()
    }

    /// `GET /health`.
    pub fn health(&self, uptime_secs: u64) -> Reply {
        let body =
            json!({"status": "healthy", "users": self.users.len(), "uptime_secs": uptime_secs});
        Reply::new(200, body, 0)
    }

    /// The periodic `Health check passed: 20 users, uptime 300s` line.
    pub fn log_health_check(&self, uptime_secs: u64, out: &mut Batch) {
        out.push_text(
            APPLICATION_LOG,
            APP_LOGGER,
            Level::Info,
            format_args!(
                "Health check passed: {} users, uptime {uptime_secs}s",
                self.users.len()
            ),
        );
    }

    /// `GET /users?page=N&limit=N` with the raw query string (`""` when none). 10% fail
    /// with a database timeout (500).
    pub fn list_users(
        &mut self,
        rng: &mut impl Rng,
        query: &str,
        request_id: RequestId,
        out: &mut Batch,
    ) -> Reply {
        let (page, limit) = match parse_page(query) {
            Ok(paging) => paging,
            Err(problem) => return validation_failed("GET /users", &problem, request_id, out),
        };
        if rng.random_ratio(LIST_FAILURE_PERCENT, 100) {
            out.push_exception(
                ERROR_LOG,
                ERROR_LOGGER,
                format_args!(
                    "Database connection timeout while listing users (request_id={request_id})"
                ),
                LIST_TIMEOUT_TRACEBACK,
            );
            let body = json!({"error": "Internal server error", "request_id": request_id});
            return Reply::new(500, body, rng.random_range(1_000..3_000));
        }
        let cache = if rng.random_bool(0.4) { "hit" } else { "miss" };
        out.push_text(
            APPLICATION_LOG,
            APP_LOGGER,
            Level::Debug,
            format_args!("Cache lookup for users page {page}: {cache}"),
        );
        let users = self.users.page(page, limit);
        out.push_text(
            APPLICATION_LOG,
            APP_LOGGER,
            Level::Info,
            format_args!("Listed {} users (page {page})", users.len()),
        );
        let body = json!({"users": users, "page": page, "limit": limit, "total": self.users.len()});
        let delay_ms = if cache == "hit" {
            rng.random_range(1..5)
        } else {
            rng.random_range(5..40)
        };
        Reply::new(200, body, delay_ms)
    }

    /// `GET /users/{id}` with the raw path segment.
    pub fn get_user(
        &mut self,
        rng: &mut impl Rng,
        id: &str,
        request_id: RequestId,
        out: &mut Batch,
    ) -> Reply {
        let Some(id) = id.parse::<u64>().ok().filter(|&id| id > 0) else {
            let route = format!("GET /users/{}", printable(id));
            return validation_failed(&route, "id must be a positive integer", request_id, out);
        };
        if rng.random_ratio(CACHE_RESET_PERCENT, 100) {
            out.push_exception(
                ERROR_LOG,
                ERROR_LOGGER,
                format_args!(
                    "Connection reset by upstream cache while fetching user {id} \
                     (request_id={request_id})"
                ),
                CACHE_RESET_TRACEBACK,
            );
        } else {
            let cache = if rng.random_bool(0.6) { "hit" } else { "miss" };
            out.push_text(
                APPLICATION_LOG,
                APP_LOGGER,
                Level::Debug,
                format_args!("Cache lookup for user {id}: {cache}"),
            );
        }
        let delay_ms = rng.random_range(2..20);
        match self.users.get(id) {
            Some(user) => Reply::new(200, json!(user), delay_ms),
            None => {
                out.push_text(
                    APPLICATION_LOG,
                    APP_LOGGER,
                    Level::Warning,
                    format_args!("User {id} not found"),
                );
                let body = json!({"error": format!("User {id} not found")});
                Reply::new(404, body, delay_ms)
            }
        }
    }

    /// `POST /users` with the raw body, expected to be `{"name": …, "email": …}`. A bad body is
    /// a 400, a taken email (or, 5% of the time, a lost race) a 409.
    pub fn create_user(
        &mut self,
        rng: &mut impl Rng,
        body: &[u8],
        request_id: RequestId,
        out: &mut Batch,
    ) -> Reply {
        let (name, email) = match parse_new_user(body) {
            Ok(user) => user,
            Err(problem) => return validation_failed("POST /users", &problem, request_id, out),
        };
        let delay_ms = rng.random_range(10..60);
        let lost_race = rng.random_ratio(RANDOM_CONFLICT_PERCENT, 100);
        if lost_race || self.users.has_email(&email) {
            out.push_text(
                ERROR_LOG,
                ERROR_LOGGER,
                Level::Error,
                format_args!(
                    "Conflict on POST /users: Email already exists: {} (request_id={request_id})",
                    printable(&email)
                ),
            );
            let body = json!({"error": "Email already exists", "email": email});
            return Reply::new(409, body, delay_ms);
        }
        let user = self
            .users
            .insert(&name, &email)
            .expect("the email was checked to be free above");
        out.push_text(
            APPLICATION_LOG,
            APP_LOGGER,
            Level::Info,
            format_args!("Created user {}", user.id),
        );
        Reply::new(201, json!(user), delay_ms)
    }

    /// `GET /simulate-load`: some CPU work and a latency of 50–900 ms, or 20% of the time
    /// 900–2500 ms.
    pub fn simulate_load(
        &mut self,
        rng: &mut impl Rng,
        request_id: RequestId,
        out: &mut Batch,
    ) -> Reply {
        let work_units = rng.random_range(1..=20);
        let delay_ms = if rng.random_ratio(1, 5) {
            rng.random_range(900..2_500)
        } else {
            rng.random_range(50..900)
        };
        out.push_text(
            APPLICATION_LOG,
            APP_LOGGER,
            Level::Info,
            format_args!("Simulating load: {work_units} work units, {delay_ms} ms latency"),
        );
        let body = json!({
            "status": "ok",
            "work_units": work_units,
            "latency_ms": delay_ms,
            "request_id": request_id,
        });
        Reply {
            work_units,
            ..Reply::new(200, body, delay_ms)
        }
    }
}

/// Burns CPU for `/simulate-load`: `units` fixed slices of 200 000 xorshift rounds (about a
/// millisecond each in a debug build). Returns a checksum so the work is not optimised away.
pub fn busy_work(units: u32) -> u64 {
    let mut state = 0x9E37_79B9_7F4A_7C15_u64;
    for _ in 0..u64::from(units) * 200_000 {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
    }
    std::hint::black_box(state)
}

fn validation_failed(route: &str, problem: &str, request_id: RequestId, out: &mut Batch) -> Reply {
    out.push_text(
        ERROR_LOG,
        ERROR_LOGGER,
        Level::Error,
        format_args!("Validation failed for {route}: {problem} (request_id={request_id})"),
    );
    let body = json!({"error": "Validation failed", "detail": problem, "request_id": request_id});
    Reply::new(400, body, 1)
}

/// Reads `page` and `limit` from a raw query string; other keys are ignored.
fn parse_page(query: &str) -> Result<(u32, u32), String> {
    let mut page = 1;
    let mut limit = DEFAULT_PAGE_LIMIT;
    for pair in query.split('&').filter(|pair| !pair.is_empty()) {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        let parsed = value.parse::<u32>().ok();
        match key {
            "page" => {
                page = parsed.filter(|&n| n >= 1).ok_or_else(|| {
                    format!(
                        "page must be a positive integer, got '{}'",
                        printable(value)
                    )
                })?;
            }
            "limit" => {
                limit = parsed
                    .filter(|n| (1..=MAX_PAGE_LIMIT).contains(n))
                    .ok_or_else(|| {
                        format!(
                            "limit must be between 1 and {MAX_PAGE_LIMIT}, got '{}'",
                            printable(value)
                        )
                    })?;
            }
            _ => {}
        }
    }
    Ok((page, limit))
}

/// Reads `{"name": …, "email": …}`, naming the first problem found.
fn parse_new_user(body: &[u8]) -> Result<(String, String), String> {
    let value: Value =
        serde_json::from_slice(body).map_err(|error| format!("invalid JSON body: {error}"))?;
    let Value::Object(fields) = value else {
        return Err("body must be a JSON object".to_owned());
    };
    let text = |key: &str| match fields.get(key) {
        None | Some(Value::Null) => Err(format!("missing field '{key}'")),
        Some(Value::String(text)) if !text.trim().is_empty() => Ok(text.clone()),
        Some(_) => Err(format!("field '{key}' must be a non-empty string")),
    };
    let name = text("name")?;
    let email = text("email")?;
    if !email.contains('@') {
        return Err(format!("invalid email address '{}'", printable(&email)));
    }
    Ok((name, email))
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::rngs::SmallRng;
    use rand::SeedableRng;

    fn request_id() -> RequestId {
        RequestId::random(&mut SmallRng::seed_from_u64(0))
    }

    #[test]
    fn store_pages_by_id_and_rejects_taken_emails() {
        let mut store = UserStore::seeded();
        assert_eq!(store.len(), 20);
        let page: Vec<_> = store.page(2, 5).iter().map(|user| user.id).collect();
        assert_eq!(page, [6, 7, 8, 9, 10]);
        assert!(store.page(3, 10).is_empty());
        assert!(store.insert("Bob", "bob.smith@example.com").is_none());
        assert_eq!(
            store.insert("New", "new@example.com").map(|u| u.id),
            Some(21)
        );
    }

    #[test]
    fn bad_bodies_name_their_problem() {
        assert!(parse_new_user(b"{\"name\": \"x\"")
            .unwrap_err()
            .starts_with("invalid JSON body: "));
        assert_eq!(
            parse_new_user(br#"{"name":"Bob"}"#).unwrap_err(),
            "missing field 'email'"
        );
        assert_eq!(
            parse_new_user(b"[1]").unwrap_err(),
            "body must be a JSON object"
        );
        assert!(parse_new_user(br#"{"name":"Bob","email":"nope"}"#).is_err());
        assert_eq!(
            parse_new_user(br#"{"name":"Bob","email":"b@x.io"}"#).unwrap(),
            ("Bob".to_owned(), "b@x.io".to_owned())
        );
    }

    #[test]
    fn paging_is_validated() {
        assert_eq!(parse_page(""), Ok((1, DEFAULT_PAGE_LIMIT)));
        assert_eq!(parse_page("page=2&limit=5&sort=name"), Ok((2, 5)));
        assert!(parse_page("page=0").is_err());
        assert!(parse_page("limit=1000").is_err());
        assert!(parse_page("limit=abc").is_err());
    }

    #[test]
    fn failures_are_logged_with_the_request_id() {
        let mut api = Api::seeded();
        let mut rng = SmallRng::seed_from_u64(3);
        let id = request_id();
        let mut out = Batch::new();

        let reply = api.create_user(&mut rng, b"not json", id, &mut out);
        assert_eq!(reply.status, 400);
        let (file, line) = out.lines().last().unwrap();
        assert_eq!(file, ERROR_LOG);
        assert!(line
            .contains(" - web-api - ERROR - Validation failed for POST /users: invalid JSON body"));
        assert!(line.ends_with(&format!("(request_id={id})")));

        let duplicate = br#"{"name":"Alice","email":"alice.johnson@example.com"}"#;
        let reply = api.create_user(&mut rng, duplicate, id, &mut out);
        assert_eq!(reply.status, 409);
        let line = out.lines().last().unwrap().1;
        assert!(line
            .contains("Conflict on POST /users: Email already exists: alice.johnson@example.com"));

        let reply = api.get_user(&mut rng, "4242", id, &mut out);
        assert_eq!(reply.status, 404);
        assert!(out
            .lines()
            .last()
            .unwrap()
            .1
            .ends_with(" - application - WARNING - User 4242 not found"));
    }

    #[test]
    fn about_one_listing_in_ten_times_out() {
        let mut api = Api::seeded();
        let mut rng = SmallRng::seed_from_u64(4);
        let mut out = Batch::new();
        let failed = (0..5_000)
            .filter(|_| {
                api.list_users(&mut rng, "page=1", request_id(), &mut out)
                    .status
                    == 500
            })
            .count();
        assert!((350..650).contains(&failed), "failed: {failed}");
    }

    #[test]
    fn content_length_matches_the_sent_body() {
        let reply = Api::seeded().health(7);
        let sent = serde_json::to_vec(&reply.body).unwrap();
        assert_eq!(reply.content_length(), sent.len() as u64);
    }
}

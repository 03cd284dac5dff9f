//! The ingest endpoint: `POST /logs` with one JSON object or an NDJSON batch, for apps that
//! push records instead of writing a file. Off unless `--ingest-listen` is given.
//!
//! Records go through the collector loop into the collected journal like tailed lines, as a
//! source named after their `service`, and the HTTP answer is sent only after the journal
//! commit that holds them: a 200 means the records are durable (a kill -9 right after cannot
//! take them back). A failed or interrupted commit answers 503, and the client retries.
//!
//! Easy to get wrong: ids. A record id is a source id and an offset that must never repeat
//! for that source. An ingested source has no file, so its source id is a hash of the service
//! name and its "offset" comes from one sequence that is reserved on disk in blocks *before*
//! use (`ingest_ids.json`); a restart continues after the reserved block, so an id is never
//! handed out twice, even after a crash.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver, SyncSender, TrySendError};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::Context as _;
use axum::body::Body;
use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Router;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};
use sidecar_core::checkpoint::{self, Durability};
use sidecar_core::journal::JournalWriter;
use sidecar_core::record::{CollectedRecordOut, LineFlags, RecordId};
use sidecar_core::signal::Wakeup;
use sidecar_core::source::TailPosition;
use tokio::sync::oneshot;
use tracing::{info, warn};

/// The file holding the reserved end of the id sequence, in the journal directory.
pub const IDS_FILE: &str = "ingest_ids.json";
/// Ids are reserved this many at a time: one fsynced file write per million records.
const ID_BLOCK: u64 = 1 << 20;
/// Batches waiting for the collector loop at most; more get 503 so memory stays bounded.
const INBOX_CAPACITY: usize = 64;
/// Ingested bytes added to one commit at most, like the tailer's batch limit.
const TAKE_MAX_BYTES: usize = 4 << 20;
/// How long a request waits for the collector to take its records by default before
/// answering 503 (the collector may be paused by backpressure; the client retries).
pub const DEFAULT_ACK_TIMEOUT: Duration = Duration::from_secs(30);
/// The service of records that name none.
pub const UNKNOWN_SERVICE: &str = "unknown";
/// Service names become source names (and file names in sinks): short and plain.
const MAX_SERVICE_LEN: usize = 128;
/// Content types accepted, without parameters.
const CONTENT_TYPES: [&str; 5] = [
    "application/json",
    "application/x-ndjson",
    "application/ndjson",
    "application/jsonl",
    "application/x-jsonlines",
];

/// Settings of the ingest endpoint.
#[derive(Debug, Clone)]
pub struct IngestOptions {
    /// Where to listen.
    pub listen: SocketAddr,
    /// Larger bodies get 413.
    pub max_body_bytes: usize,
    /// When set, requests must carry `Authorization: Bearer <token>`.
    pub token: Option<String>,
    /// A request whose records were not taken into the journal this long is answered 503 and
    /// its records dropped (default [`DEFAULT_ACK_TIMEOUT`]).
    pub ack_timeout: Duration,
}

impl IngestOptions {
    /// Builds the options, reading the token file when one is given.
    ///
    /// # Errors
    /// When the token file cannot be read or is empty.
    pub fn load(
        listen: SocketAddr,
        max_body_bytes: u64,
        token_file: Option<&Path>,
    ) -> anyhow::Result<Self> {
        let token = match token_file {
            Some(path) => {
                let text = std::fs::read_to_string(path).with_context(|| {
                    format!("--ingest-token-file: cannot read {}", path.display())
                })?;
                let token = text.trim().to_owned();
                anyhow::ensure!(
                    !token.is_empty(),
                    "--ingest-token-file: {} is empty",
                    path.display()
                );
                Some(token)
            }
            None => None,
        };
        Ok(Self {
            listen,
            max_body_bytes: max_body_bytes as usize,
            ack_timeout: DEFAULT_ACK_TIMEOUT,
            token,
        })
    }
}

/// A record to ingest: its service and the JSON object.
pub type ServiceRecord = (String, Map<String, Value>);

/// One request's records on their way to the collector loop.
struct Batch {
    /// (service, JSON object) per record.
    records: Vec<ServiceRecord>,
    /// Answered after the commit with the records' ids.
    ack: oneshot::Sender<Vec<String>>,
    /// Set when the client was told 503 before the batch was taken: it is then dropped, so the
    /// client's retry does not repeat it.
    withdrawn: Arc<AtomicBool>,
}

/// The collector loop's side: takes batches into the journal and acknowledges them after
/// the commit.
pub struct Inbox {
    rx: Receiver<Batch>,
    ids: IdSequence,
    waiting: VecDeque<(oneshot::Sender<Vec<String>>, Vec<String>)>,
    line: String,
}

impl Inbox {
    /// Adds waiting batches' records (about one commit's worth) to the journal's pending
    /// batch; they must be committed before [`Inbox::committed`] is called. Returns whether
    /// more batches are still waiting.
    ///
    /// # Errors
    /// When the id reservation cannot be written.
    pub fn take(
        &mut self,
        journal: &mut JournalWriter<TailPosition>,
        collected_at: &str,
    ) -> anyhow::Result<bool> {
        // One commit's worth at a time; the rest waits in the channel for the next turn.
        while journal.pending_bytes() < TAKE_MAX_BYTES {
            let Ok(batch) = self.rx.try_recv() else {
                break;
            };
            // Taking and withdrawing race; whoever swaps first decides.
            if batch.withdrawn.swap(true, Ordering::AcqRel) {
                continue;
            }
            let mut ids = Vec::with_capacity(batch.records.len());
            for (service, record) in &batch.records {
                let id = RecordId {
                    source_id: service_source_id(service),
                    offset: self.ids.next()?,
                };
                self.line.clear();
                python_logging_line(record, &mut self.line);
                journal.push(&CollectedRecordOut::new(
                    id,
                    service,
                    collected_at,
                    self.line.as_bytes(),
                    LineFlags::default(),
                ));
                ids.push(id.to_string());
            }
            self.waiting.push_back((batch.ack, ids));
        }
        Ok(journal.pending_bytes() >= TAKE_MAX_BYTES)
    }

    /// Everything taken so far is committed: answer the requests.
    pub fn committed(&mut self) {
        for (ack, ids) in self.waiting.drain(..) {
            // The client may have given up; its records are committed all the same.
            let _ = ack.send(ids);
        }
    }
}

/// The source id of an ingested service: stable across restarts, distinct from any file's
/// (those hash device, inode and content).
pub fn service_source_id(service: &str) -> u64 {
    xxhash_rust::xxh3::xxh3_64(format!("ingest/{service}").as_bytes())
}

/// The sequence the offsets of ingested records come from, reserved on disk in blocks.
struct IdSequence {
    path: PathBuf,
    next: u64,
    reserved_until: u64,
}

#[derive(Debug, Serialize, Deserialize)]
struct IdReservation {
    version: u32,
    reserved_until: u64,
}

impl IdSequence {
    fn open(dir: &Path) -> anyhow::Result<Self> {
        let path = dir.join(IDS_FILE);
        let saved = match checkpoint::load_json_or_backup::<IdReservation>(&path) {
            Ok(loaded) => loaded.map_or(0, |l| l.into_value().reserved_until),
            Err(e) => {
                // The clock below still keeps new ids above any handed out before.
                warn!(error = %e, "The ingest id reservation is unreadable; continuing from the clock.");
                0
            }
        };
        // Microseconds since the epoch as a floor: even a lost file cannot bring back old ids.
        let floor = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_micros() as u64);
        let start = saved.max(floor);
        let mut sequence = Self {
            path,
            next: start,
            reserved_until: start,
        };
        sequence.reserve()?;
        Ok(sequence)
    }

    fn reserve(&mut self) -> anyhow::Result<()> {
        let until = self.reserved_until + ID_BLOCK;
        let reservation = IdReservation {
            version: 1,
            reserved_until: until,
        };
        checkpoint::store_json_with_backup(&self.path, &reservation, Durability::Fsync)
            .context("reserving ingest record ids")?;
        self.reserved_until = until;
        Ok(())
    }

    fn next(&mut self) -> anyhow::Result<u64> {
        if self.next >= self.reserved_until {
            self.reserve()?;
        }
        let id = self.next;
        self.next += 1;
        Ok(id)
    }
}

/// Writes the record as the collector's line: the Python-logging JSON layout
/// `2026-11-22 10:30:45,123 - {…}` that the processor's rules already parse, with the record's
/// own RFC 3339 `timestamp` moved into the prefix.
fn python_logging_line(record: &Map<String, Value>, out: &mut String) {
    let parsed = record
        .get("timestamp")
        .and_then(Value::as_str)
        .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok());
    let time = parsed.map_or_else(chrono::Utc::now, |t| t.with_timezone(&chrono::Utc));
    out.push_str(&time.format("%Y-%m-%d %H:%M:%S,%3f - ").to_string());
    let payload = if parsed.is_some() {
        let mut rest = record.clone();
        rest.remove("timestamp");
        serde_json::to_string(&rest)
    } else {
        serde_json::to_string(record)
    };
    out.push_str(&payload.expect("a JSON map serialises"));
}

/// Metrics of the ingest endpoint.
#[derive(Debug, Clone, Default)]
pub struct IngestMetrics {
    requests: Family<Vec<(String, String)>, Counter>,
    records: Counter,
}

impl IngestMetrics {
    /// Registers the metrics.
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "collector_ingest_requests",
            "POST /logs requests, per status",
            self.requests.clone(),
        );
        registry.register(
            "collector_ingest_records",
            "Records ingested and committed",
            self.records.clone(),
        );
    }
}

#[derive(Clone)]
struct IngestState {
    tx: SyncSender<Batch>,
    wakeup: Wakeup,
    options: Arc<IngestOptions>,
    metrics: IngestMetrics,
}

/// Opens the id sequence in `journal_dir`, binds the endpoint and serves it in the background.
/// Returns the collector loop's side.
///
/// # Errors
/// When the address cannot be bound or the id reservation cannot be written.
pub async fn serve(
    options: IngestOptions,
    journal_dir: &Path,
    wakeup: Wakeup,
    metrics: IngestMetrics,
) -> anyhow::Result<(Inbox, SocketAddr)> {
    let ids = IdSequence::open(journal_dir)?;
    let listener = tokio::net::TcpListener::bind(options.listen)
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen on {} for ingest: {e}", options.listen))?;
    let bound = listener.local_addr()?;
    let (tx, rx) = mpsc::sync_channel(INBOX_CAPACITY);
    let state = IngestState {
        tx,
        wakeup,
        options: Arc::new(options),
        metrics,
    };
    let app = Router::new()
        .route("/logs", post(ingest))
        .route("/healthz", axum::routing::get(|| async { "ok\n" }))
        .with_state(state);
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            tracing::error!(error = %e, "The ingest server stopped.");
        }
    });
    info!(listen = %bound, "Ingest endpoint started.");
    let inbox = Inbox {
        rx,
        ids,
        waiting: VecDeque::new(),
        line: String::new(),
    };
    Ok((inbox, bound))
}

fn refuse(status: StatusCode, message: impl Into<String>) -> Response {
    let body = json!({ "error": message.into(), "status": status.as_u16() });
    (status, axum::Json(body)).into_response()
}

async fn ingest(State(state): State<IngestState>, headers: HeaderMap, body: Body) -> Response {
    let response = ingest_response(&state, &headers, body).await;
    state
        .metrics
        .requests
        .get_or_create(&vec![(
            "status".to_owned(),
            response.status().as_u16().to_string(),
        )])
        .inc();
    response
}

async fn ingest_response(state: &IngestState, headers: &HeaderMap, body: Body) -> Response {
    if let Some(token) = &state.options.token {
        let given = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "));
        if !given.is_some_and(|g| constant_time_eq(g.trim().as_bytes(), token.as_bytes())) {
            let mut response = refuse(
                StatusCode::UNAUTHORIZED,
                "missing or wrong bearer token (Authorization: Bearer …)",
            );
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                header::HeaderValue::from_static("Bearer"),
            );
            return response;
        }
    }
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let media = content_type
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    if !CONTENT_TYPES.contains(&media.as_str()) {
        return refuse(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            format!(
                "content type {content_type:?} is not accepted (use {})",
                CONTENT_TYPES.join(", ")
            ),
        );
    }
    let limit = state.options.max_body_bytes;
    let bytes = match axum::body::to_bytes(body, limit).await {
        Ok(b) => b,
        Err(_) => {
            return refuse(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("body larger than {limit} bytes; send smaller batches"),
            )
        }
    };
    let records = match parse_body(&bytes) {
        Ok(r) if r.is_empty() => return refuse(StatusCode::BAD_REQUEST, "body holds no records"),
        Ok(r) => r,
        Err(message) => return refuse(StatusCode::BAD_REQUEST, message),
    };
    let count = records.len();
    let (ack, acked) = oneshot::channel();
    let withdrawn = Arc::new(AtomicBool::new(false));
    let batch = Batch {
        records,
        ack,
        withdrawn: withdrawn.clone(),
    };
    match state.tx.try_send(batch) {
        Ok(()) => state.wakeup.wake(),
        Err(TrySendError::Full(_)) => {
            return refuse(
                StatusCode::SERVICE_UNAVAILABLE,
                "too many batches waiting for the journal; retry shortly",
            )
        }
        Err(TrySendError::Disconnected(_)) => {
            return refuse(StatusCode::SERVICE_UNAVAILABLE, "the collector is stopping")
        }
    }
    let mut acked = acked;
    match tokio::time::timeout(state.options.ack_timeout, &mut acked).await {
        Ok(Ok(ids)) => {
            state.metrics.records.inc_by(count as u64);
            (
                StatusCode::OK,
                axum::Json(json!({ "accepted": count, "ids": ids })),
            )
                .into_response()
        }
        Ok(Err(_)) => refuse(
            StatusCode::SERVICE_UNAVAILABLE,
            "the records were not committed (the collector is stopping or its journal failed); retry",
        ),
        Err(_) if !withdrawn.swap(true, Ordering::AcqRel) => refuse(
            StatusCode::SERVICE_UNAVAILABLE,
            "the journal did not take the records in time (backpressure); none were kept, retry",
        ),
        // Taken just now: the commit is under way, so wait for it after all.
        Err(_) => match acked.await {
            Ok(ids) => {
                state.metrics.records.inc_by(count as u64);
                (
                    StatusCode::OK,
                    axum::Json(json!({ "accepted": count, "ids": ids })),
                )
                    .into_response()
            }
            Err(_) => refuse(
                StatusCode::SERVICE_UNAVAILABLE,
                "the records were not committed (the collector is stopping or its journal failed); retry",
            ),
        },
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Parses one JSON object, a JSON array of objects, or NDJSON (one object per line). Each
/// record gets its `service` checked (or `unknown`) and a `timestamp` (now) when it has none.
///
/// # Errors
/// A message naming the line (1-based) and what is wrong.
pub fn parse_body(bytes: &[u8]) -> Result<Vec<ServiceRecord>, String> {
    let text = std::str::from_utf8(bytes).map_err(|e| {
        let line = bytes[..e.valid_up_to()]
            .iter()
            .filter(|&&b| b == b'\n')
            .count()
            + 1;
        format!("line {line}: not valid UTF-8")
    })?;
    let mut records = Vec::new();
    if text.trim_start().starts_with('[') {
        let values: Vec<Value> = serde_json::from_str(text)
            .map_err(|e| format!("line {}: {}", e.line(), strip_position(&e)))?;
        for (i, value) in values.into_iter().enumerate() {
            records.push(checked_record(value).map_err(|m| format!("item {}: {m}", i + 1))?);
        }
        return Ok(records);
    }
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let value: Value = serde_json::from_str(line)
            .map_err(|e| format!("line {}: {}", i + 1, strip_position(&e)))?;
        records.push(checked_record(value).map_err(|m| format!("line {}: {m}", i + 1))?);
    }
    Ok(records)
}

fn strip_position(e: &serde_json::Error) -> String {
    let text = e.to_string();
    match text.rfind(" at line ") {
        Some(i) => text[..i].to_owned(),
        None => text,
    }
}

fn checked_record(value: Value) -> Result<ServiceRecord, String> {
    let Value::Object(mut record) = value else {
        return Err("expected a JSON object".to_owned());
    };
    let service = match record.get("service") {
        None | Some(Value::Null) => UNKNOWN_SERVICE.to_owned(),
        Some(Value::String(s)) => check_service(s)?,
        Some(_) => return Err("service must be a string".to_owned()),
    };
    record.insert("service".to_owned(), Value::from(service.clone()));
    if !record.contains_key("timestamp") {
        record.insert(
            "timestamp".to_owned(),
            Value::from(sidecar_core::record::timestamp_now()),
        );
    }
    Ok((service, record))
}

fn check_service(name: &str) -> Result<String, String> {
    let plain = name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
    if name.is_empty() || name.len() > MAX_SERVICE_LEN || !plain || name.starts_with('.') {
        return Err(format!(
            "service {name:?} must be 1 to {MAX_SERVICE_LEN} letters, digits, '.', '_' or '-' (it becomes a source name)"
        ));
    }
    Ok(name.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bodies_are_objects_arrays_or_ndjson_with_line_numbers_in_errors() {
        let one = parse_body(br#"{"service":"billing","message":"hi"}"#).unwrap();
        assert_eq!(one[0].0, "billing");
        assert!(one[0].1.contains_key("timestamp"));
        let batch = parse_body(b"{\"message\":\"a\"}\n\n{\"service\":\"b\",\"timestamp\":\"t\"}\n")
            .unwrap();
        assert_eq!(batch[0].0, UNKNOWN_SERVICE);
        assert_eq!(batch[1].1["timestamp"], "t");
        assert_eq!(parse_body(br#"[{"service":"x"},{}]"#).unwrap().len(), 2);
        let e = parse_body(b"{\"a\":1}\n{\"a\":\n").unwrap_err();
        assert!(e.starts_with("line 2: "), "{e}");
        assert!(parse_body(b"{}\n42\n")
            .unwrap_err()
            .starts_with("line 2: expected a JSON object"));
        assert!(parse_body(br#"{"service":"../etc"}"#)
            .unwrap_err()
            .contains("service"));
        assert!(parse_body(br#"{"service":7}"#).is_err());
    }

    #[test]
    fn lines_use_the_python_logging_layout_with_the_records_time() {
        let mut record = Map::new();
        record.insert("service".into(), "billing".into());
        record.insert("timestamp".into(), "2026-11-22T10:30:45.123+01:00".into());
        record.insert("level".into(), "error".into());
        let mut line = String::new();
        python_logging_line(&record, &mut line);
        assert_eq!(
            line,
            r#"2026-11-22 09:30:45,123 - {"level":"error","service":"billing"}"#
        );
    }

    #[test]
    fn ids_never_repeat_across_restarts() {
        let dir = tempfile::tempdir().unwrap();
        let mut first = IdSequence::open(dir.path()).unwrap();
        let a = first.next().unwrap();
        let b = first.next().unwrap();
        drop(first);
        let mut second = IdSequence::open(dir.path()).unwrap();
        let c = second.next().unwrap();
        assert!(a < b && b < c, "{a} {b} {c}");
        assert!(c >= a + ID_BLOCK, "a restart skips the reserved block");
    }
}

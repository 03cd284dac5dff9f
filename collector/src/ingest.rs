//! The ingest endpoint: `POST /logs` with one JSON object, a JSON array of objects, or an
//! NDJSON batch, for apps that push records instead of writing a file. Off unless
//! `--ingest-listen` is given.
//!
//! Records go through the collector loop into the collected journal like tailed lines, as a
//! source named after their `service` and marked `pushed`, and the HTTP answer is sent only
//! after the journal commit that holds them: a 200 means the records are durable (a kill -9
//! right after cannot take them back). A failed or interrupted commit answers 503, and the
//! client retries.
//!
//! Memory is bounded per request and in total (issue 11). A request is charged, before its
//! body is read, the most its body, its decoded body and its prepared records can take
//! ([`IngestLimits::charge`]), against one semaphore of `--ingest-max-inflight` bytes; once its
//! records are prepared (each one serialised into its journal line at once, so no JSON tree
//! outlives its record) the charge shrinks to what they hold, and it is released after the
//! answer. Requests past the bound wait briefly, then get 503 with `Retry-After`.
//!
//! Easy to get wrong: ids. A record id is a source id and an offset that must never repeat
//! for that source. An ingested source has no file, so its source id is a hash of the service
//! name and its "offset" comes from one sequence that is reserved on disk in blocks *before*
//! use (`ingest_ids.json`); a restart continues after the reserved block, so an id is never
//! handed out twice, even after a crash.

use std::collections::{HashMap, VecDeque};
use std::future::poll_fn;
use std::io::Read as _;
use std::net::SocketAddr;
use std::path::Path;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver, SyncSender, TrySendError};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::file_list::CommittedPosition;
use anyhow::Context as _;
use axum::body::{Body, HttpBody as _};
use axum::extract::{RawQuery, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Router;
use globset::{Glob, GlobSet, GlobSetBuilder};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use serde::de::{self, SeqAccess, Visitor};
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};
use sidecar_common::access::{self, AccessError, AccessFlags, Tokens};
use sidecar_common::checkpoint::{self, CheckpointFile, Durability};
use sidecar_common::config::ByteSize;
use sidecar_common::signal::{Background, Wakeup};
use sidecar_journal::JournalWriter;
use sidecar_record::{CollectedRecordOut, LineFlags, RecordId};
use tokio::sync::{oneshot, OwnedSemaphorePermit, Semaphore};
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
/// How long a request waits for room under `--ingest-max-inflight` before 503: long enough
/// for the requests ahead of it to be prepared (milliseconds each), short enough that a
/// client is not left hanging while the collector is saturated.
const INFLIGHT_WAIT: Duration = Duration::from_secs(2);
/// What a 503 asks the client to wait before retrying, in seconds.
const RETRY_AFTER_SECS: &str = "1";
/// The most a prepared record adds to its line beyond its own JSON: the time prefix
/// `2026-11-22 10:30:45,123 - ` (26 bytes) and a `"service":"unknown",` the record lacked (20).
const LINE_BYTES_PER_RECORD: usize = 48;
/// A record's entry in the index of line ends (16 bytes), twice over while the index grows.
const INDEX_BYTES_PER_RECORD: usize = 32;
/// The fewest body bytes one record takes: `{}` and a separator.
const MIN_RECORD_BYTES: usize = 3;

/// Default of `--ingest-max-records`: a generous batch for a shipper (Fluent Bit, Vector and
/// the OpenTelemetry collector send a few hundred to a few thousand) that keeps a request's
/// journal lines (~200 bytes each for the smallest record) near 2 MB.
pub const DEFAULT_MAX_RECORDS: u64 = 10_000;
/// Default of `--ingest-max-inflight`: a few largest requests at once, leaving the collector
/// well inside the pod's 64 MiB limit (see the README for the measured peak).
pub const DEFAULT_MAX_INFLIGHT_BYTES: u64 = 16 << 20;
/// `--ingest-max-body` at most: request sizes are counted in u32 permits, and a larger body
/// would not be a log batch.
const MAX_BODY_CEILING: u64 = 64 << 20;
/// `--ingest-max-records` at most.
const MAX_RECORDS_CEILING: u64 = 1_000_000;

/// A flag of the ingest endpoint that does not make sense.
#[derive(Debug, thiserror::Error)]
pub enum IngestConfigError {
    /// `--ingest-max-body` out of range.
    #[error(
        "--ingest-max-body: must be between 1KiB and {}, got {given}",
        ByteSize(MAX_BODY_CEILING)
    )]
    MaxBody {
        /// What was given.
        given: ByteSize,
    },
    /// `--ingest-max-records` out of range.
    #[error("--ingest-max-records: must be between 1 and {MAX_RECORDS_CEILING}, got {given}")]
    MaxRecords {
        /// What was given.
        given: u64,
    },
    /// `--ingest-max-inflight` cannot hold even one largest request.
    #[error("--ingest-max-inflight: must be at least {needed} (what one request of --ingest-max-body {max_body} and --ingest-max-records {max_records} is charged) and at most 4GiB, got {given}")]
    MaxInflight {
        /// What was given.
        given: ByteSize,
        /// The charge of the largest request.
        needed: ByteSize,
        /// `--ingest-max-body`.
        max_body: ByteSize,
        /// `--ingest-max-records`.
        max_records: u64,
    },
    /// The token file cannot be read, or the address is off loopback without a token.
    #[error(transparent)]
    Access(#[from] AccessError),
    /// A `--watch` glob's file-name part does not compile (the tailer reports it too).
    #[error("--watch: {pattern:?} does not compile as a glob")]
    Watch {
        /// The pattern.
        pattern: String,
        /// Why.
        #[source]
        source: globset::Error,
    },
}

/// The size limits of the ingest endpoint, checked.
#[derive(Debug, Clone, Copy)]
pub struct IngestLimits {
    /// Bodies larger than this get 413; a gzip body's decoded size is held to it too.
    pub max_body_bytes: usize,
    /// Requests with more records get 413 (default [`DEFAULT_MAX_RECORDS`]).
    pub max_records: usize,
    /// What requests being read, decoded, or waiting for their commit may be charged in all
    /// (default [`DEFAULT_MAX_INFLIGHT_BYTES`]).
    pub max_inflight_bytes: usize,
}

impl IngestLimits {
    /// Checks the three limits against each other.
    ///
    /// # Errors
    /// [`IngestConfigError`] naming the flag that is out of range.
    pub fn try_new(
        max_body: ByteSize,
        max_records: u64,
        max_inflight: ByteSize,
    ) -> Result<Self, IngestConfigError> {
        if !(1024..=MAX_BODY_CEILING).contains(&max_body.0) {
            return Err(IngestConfigError::MaxBody { given: max_body });
        }
        if !(1..=MAX_RECORDS_CEILING).contains(&max_records) {
            return Err(IngestConfigError::MaxRecords { given: max_records });
        }
        let limits = Self {
            max_body_bytes: max_body.0 as usize,
            max_records: max_records as usize,
            max_inflight_bytes: max_inflight.0 as usize,
        };
        let needed = limits.charge(limits.max_body_bytes, Encoding::Gzip);
        if max_inflight.0 < needed as u64 || max_inflight.0 > u64::from(u32::MAX) {
            return Err(IngestConfigError::MaxInflight {
                given: max_inflight,
                needed: ByteSize(needed as u64),
                max_body,
                max_records,
            });
        }
        Ok(limits)
    }

    /// What a request with a body of `body_bytes` (as sent) is charged before it is read: the
    /// body (for gzip also its decoded copy, held to `max_body_bytes`), plus its prepared lines
    /// and their index: the records' JSON (no longer than the decoded body, since
    /// re-serialising drops whitespace) plus [`LINE_BYTES_PER_RECORD`] and
    /// [`INDEX_BYTES_PER_RECORD`] each, for as many records as the decoded body can hold.
    /// Numbers that grow when re-serialised (`1e15`) are the exception; [`resize`] takes what
    /// they need once the lines exist.
    pub fn charge(&self, body_bytes: usize, encoding: Encoding) -> usize {
        let decoded = match encoding {
            Encoding::Identity => body_bytes,
            Encoding::Gzip => self.max_body_bytes,
        };
        let copies = match encoding {
            Encoding::Identity => body_bytes,
            Encoding::Gzip => body_bytes + decoded,
        };
        let records = self.most_records(decoded);
        copies + decoded + records * (LINE_BYTES_PER_RECORD + INDEX_BYTES_PER_RECORD)
    }

    /// How many records `decoded_bytes` of body can hold under `max_records`.
    fn most_records(&self, decoded_bytes: usize) -> usize {
        self.max_records.min(decoded_bytes / MIN_RECORD_BYTES + 1)
    }
}

/// The names the collector's `--watch` globs match (their file-name parts): a pushed record
/// may not take one as its service, so the query API, the sinks and the stats never mix a
/// pushed record into a tailed file's stream.
#[derive(Debug, Clone)]
pub struct WatchedNames {
    patterns: Vec<String>,
    globs: GlobSet,
}

impl WatchedNames {
    /// Compiles the file-name part of each `--watch` pattern (`/logs/*.log` → `*.log`), as the
    /// tailer does.
    ///
    /// # Errors
    /// [`IngestConfigError::Watch`] naming a pattern that does not compile.
    pub fn compile(watch: &[String]) -> Result<Self, IngestConfigError> {
        let mut builder = GlobSetBuilder::new();
        let mut patterns = Vec::new();
        for pattern in watch {
            let name = pattern.rsplit('/').next().unwrap_or(pattern);
            let glob = Glob::new(name).map_err(|source| IngestConfigError::Watch {
                pattern: pattern.clone(),
                source,
            })?;
            builder.add(glob);
            patterns.push(name.to_owned());
        }
        let globs = builder.build().map_err(|source| IngestConfigError::Watch {
            pattern: watch.join(","),
            source,
        })?;
        Ok(Self { patterns, globs })
    }

    /// The first pattern that matches `name`, if any.
    fn matching(&self, name: &str) -> Option<&str> {
        self.globs
            .matches(name)
            .first()
            .map(|&index| self.patterns[index].as_str())
    }
}

/// Settings of the ingest endpoint.
#[derive(Debug, Clone)]
pub struct IngestOptions {
    /// Where to listen.
    pub listen: SocketAddr,
    /// Body, record and in-flight limits.
    pub limits: IngestLimits,
    /// When set, requests must carry `Authorization: Bearer <one of the tokens>`.
    pub tokens: Option<Arc<Tokens>>,
    /// A request whose records were not taken into the journal this long is answered 503 and
    /// its records dropped (default [`DEFAULT_ACK_TIMEOUT`]).
    pub ack_timeout: Duration,
    /// Service names that are refused because the tailer watches files of that name.
    pub watched: WatchedNames,
}

impl IngestOptions {
    /// Builds the options, reading the token file when one is given.
    ///
    /// # Errors
    /// When the token file cannot be read, or `listen` is off loopback without a token and
    /// without `anonymous`.
    pub fn load(
        listen: SocketAddr,
        limits: IngestLimits,
        token_file: Option<&Path>,
        anonymous: bool,
        watched: WatchedNames,
    ) -> Result<Self, IngestConfigError> {
        access::check_listen(listen, token_file.is_some(), anonymous, ACCESS_FLAGS)?;
        let tokens = token_file
            .map(|path| Tokens::load(ACCESS_FLAGS.tokens_file, path).map(Arc::new))
            .transpose()?;
        Ok(Self {
            listen,
            limits,
            ack_timeout: DEFAULT_ACK_TIMEOUT,
            tokens,
            watched,
        })
    }
}

/// The ingest endpoint's access flags, for messages.
const ACCESS_FLAGS: AccessFlags = AccessFlags {
    listen: "--ingest-listen",
    tokens_file: "--ingest-token-file",
    anonymous: "--ingest-anonymous",
};

/// How a request body is encoded (`Content-Encoding`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    /// As is.
    Identity,
    /// gzip, what HTTP log shippers send.
    Gzip,
}

/// Why a request is refused; each answers with one status and a JSON `error`.
#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    /// No or a wrong bearer token.
    #[error("missing or wrong bearer token (Authorization: Bearer …)")]
    Unauthorized,
    /// A content type other than JSON or NDJSON.
    #[error("content type {given:?} is not accepted (use {})", CONTENT_TYPES.join(", "))]
    ContentType {
        /// The `Content-Type` sent.
        given: String,
    },
    /// A content encoding other than gzip.
    #[error("content encoding {given:?} is not accepted (send the body as is, or gzip with Content-Encoding: gzip)")]
    ContentEncoding {
        /// The `Content-Encoding` sent.
        given: String,
    },
    /// A gzip body that does not decode.
    #[error("the gzip body does not decode")]
    Gzip(#[source] std::io::Error),
    /// The body is larger than `--ingest-max-body`.
    #[error("body larger than {limit} bytes (--ingest-max-body); send smaller batches")]
    BodyTooLarge {
        /// The limit.
        limit: usize,
    },
    /// The decoded gzip body is larger than `--ingest-max-body`.
    #[error(
        "gzip body decodes to more than {limit} bytes (--ingest-max-body); send smaller batches"
    )]
    DecodedTooLarge {
        /// The limit.
        limit: usize,
    },
    /// More records than `--ingest-max-records`.
    #[error(
        "more than {limit} records in one request (--ingest-max-records); send smaller batches"
    )]
    TooManyRecords {
        /// The limit.
        limit: usize,
    },
    /// A query parameter that is not understood.
    #[error("query parameter {name:?}: {reason}")]
    Query {
        /// The parameter.
        name: String,
        /// What is wrong.
        reason: &'static str,
    },
    /// The body is not valid JSON, or a record is not acceptable.
    #[error("{place}: {reason}")]
    Record {
        /// `line 3` or `item 2` (1-based).
        place: String,
        /// What is wrong.
        reason: String,
    },
    /// A record's `service` is the name of a watched file.
    #[error("{place}: service {service:?} is a name the collector's --watch glob {glob:?} tails; pushed records cannot take a watched file's name (its rules and its stream are the file's)")]
    WatchedService {
        /// Where.
        place: String,
        /// The service.
        service: String,
        /// The `--watch` file-name glob it matches.
        glob: String,
    },
    /// Nothing to ingest.
    #[error("body holds no records")]
    Empty,
    /// `--ingest-max-inflight` is taken by other requests.
    #[error(
        "the collector is busy with other ingest requests (--ingest-max-inflight); retry shortly"
    )]
    Busy,
    /// The inbox holds [`INBOX_CAPACITY`] batches.
    #[error("too many batches waiting for the journal; retry shortly")]
    Queued,
    /// The collector is shutting down.
    #[error("the collector is stopping")]
    Stopping,
    /// The commit failed or the collector stopped before it.
    #[error(
        "the records were not committed (the collector is stopping or its journal failed); retry"
    )]
    NotCommitted,
    /// The journal did not take the records within `--ingest-ack-timeout`.
    #[error("the journal did not take the records in time (backpressure); none were kept, retry")]
    Backpressure,
}

impl IngestError {
    /// The HTTP status this refusal answers with.
    pub fn status(&self) -> StatusCode {
        match self {
            Self::Unauthorized => StatusCode::UNAUTHORIZED,
            Self::ContentType { .. } | Self::ContentEncoding { .. } => {
                StatusCode::UNSUPPORTED_MEDIA_TYPE
            }
            Self::BodyTooLarge { .. }
            | Self::DecodedTooLarge { .. }
            | Self::TooManyRecords { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            Self::Gzip(_)
            | Self::Query { .. }
            | Self::Record { .. }
            | Self::WatchedService { .. }
            | Self::Empty => StatusCode::BAD_REQUEST,
            Self::Busy
            | Self::Queued
            | Self::Stopping
            | Self::NotCommitted
            | Self::Backpressure => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    fn record(place: impl Into<String>, reason: impl Into<String>) -> Self {
        Self::Record {
            place: place.into(),
            reason: reason.into(),
        }
    }
}

impl IntoResponse for IngestError {
    fn into_response(self) -> Response {
        let status = self.status();
        // `{:#}` adds the source (the gzip error) once.
        let message = format!("{:#}", anyhow::Error::from(self));
        let body = json!({ "error": message, "status": status.as_u16() });
        let mut response = (status, axum::Json(body)).into_response();
        let headers = response.headers_mut();
        if status == StatusCode::UNAUTHORIZED {
            headers.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        if status == StatusCode::SERVICE_UNAVAILABLE {
            headers.insert(
                header::RETRY_AFTER,
                HeaderValue::from_static(RETRY_AFTER_SECS),
            );
        }
        response
    }
}

/// One request's records, ready for the journal: each record's line (the Python-logging
/// layout, see [`write_line`]) back to back, and per record where its line ends and which
/// service it has. About the size of the records' JSON plus a few dozen bytes each: no JSON
/// tree is kept.
#[derive(Debug, Default)]
pub struct Prepared {
    lines: Vec<u8>,
    /// Per record: the end of its line in `lines`, and its index in `services`.
    ends: Vec<(usize, u32)>,
    services: Vec<Box<str>>,
}

impl Prepared {
    /// How many records.
    pub fn len(&self) -> usize {
        self.ends.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.ends.is_empty()
    }

    /// The records as (service, line).
    pub fn records(&self) -> impl Iterator<Item = (&str, &[u8])> {
        let starts = std::iter::once(0).chain(self.ends.iter().map(|&(end, _)| end));
        starts.zip(&self.ends).map(|(start, &(end, service))| {
            (&*self.services[service as usize], &self.lines[start..end])
        })
    }

    /// The heap bytes it holds.
    fn footprint(&self) -> usize {
        self.lines.capacity()
            + self.ends.capacity() * std::mem::size_of::<(usize, u32)>()
            + self
                .services
                .iter()
                .map(|s| s.len() + std::mem::size_of::<Box<str>>())
                .sum::<usize>()
    }
}

/// Turns records into a [`Prepared`] batch one at a time, counting them.
struct Preparer<'a> {
    limits: IngestLimits,
    watched: &'a WatchedNames,
    /// `now` in the line layout's prefix, for records without their own time.
    now_prefix: String,
    service_index: HashMap<String, u32>,
    prepared: Prepared,
}

impl<'a> Preparer<'a> {
    fn new(limits: IngestLimits, watched: &'a WatchedNames, body_bytes: usize) -> Self {
        let records = limits.most_records(body_bytes);
        let mut now_prefix = String::new();
        write_prefix(&chrono::Utc::now(), &mut now_prefix);
        Self {
            limits,
            watched,
            now_prefix,
            service_index: HashMap::new(),
            // The charge covers this much; most bodies need no more, so no regrowth copies.
            prepared: Prepared {
                lines: Vec::with_capacity(body_bytes + records * LINE_BYTES_PER_RECORD),
                ends: Vec::new(),
                services: Vec::new(),
            },
        }
    }

    /// Checks one record and appends its line. `place` names it in errors.
    fn push(&mut self, value: Value, place: &dyn Fn() -> String) -> Result<(), IngestError> {
        if self.prepared.len() == self.limits.max_records {
            return Err(IngestError::TooManyRecords {
                limit: self.limits.max_records,
            });
        }
        let Value::Object(mut record) = value else {
            return Err(IngestError::record(place(), "expected a JSON object"));
        };
        let service = match record.get("service") {
            None | Some(Value::Null) => {
                record.insert("service".to_owned(), Value::from(UNKNOWN_SERVICE));
                UNKNOWN_SERVICE
            }
            Some(Value::String(s)) => {
                check_service(s).map_err(|reason| IngestError::record(place(), reason))?;
                if let Some(glob) = self.watched.matching(s) {
                    return Err(IngestError::WatchedService {
                        place: place(),
                        service: s.clone(),
                        glob: glob.to_owned(),
                    });
                }
                s.as_str()
            }
            Some(_) => return Err(IngestError::record(place(), "service must be a string")),
        };
        let index = match self.service_index.get(service) {
            Some(&index) => index,
            None => {
                let index = self.prepared.services.len() as u32;
                self.prepared.services.push(service.into());
                self.service_index.insert(service.to_owned(), index);
                index
            }
        };
        write_line(&mut record, &self.now_prefix, &mut self.prepared.lines);
        self.prepared.ends.push((self.prepared.lines.len(), index));
        Ok(())
    }

    fn finish(mut self) -> Result<Prepared, IngestError> {
        if self.prepared.is_empty() {
            return Err(IngestError::Empty);
        }
        // Until the answer the request is charged what these hold: no spare capacity.
        self.prepared.lines.shrink_to_fit();
        self.prepared.ends.shrink_to_fit();
        Ok(self.prepared)
    }
}

/// Decodes the body (gzip, held to `max_body_bytes` decoded) and prepares its records.
///
/// # Errors
/// What [`IngestError`] says: the body does not decode or parse, a record is not acceptable,
/// or there are too many.
pub fn prepare(
    body: Vec<u8>,
    encoding: Encoding,
    limits: IngestLimits,
    watched: &WatchedNames,
) -> Result<Prepared, IngestError> {
    let body = match encoding {
        Encoding::Identity => body,
        Encoding::Gzip => {
            let limit = limits.max_body_bytes;
            // Room for one byte past the limit, so a larger body shows without the buffer
            // ever growing (a gzip bomb stops there: 1 KiB of gzip can decode to 1 MiB).
            let mut decoded = Vec::with_capacity(limit + 1);
            flate2::read::MultiGzDecoder::new(&body[..])
                .take(limit as u64 + 1)
                .read_to_end(&mut decoded)
                .map_err(IngestError::Gzip)?;
            if decoded.len() > limit {
                return Err(IngestError::DecodedTooLarge { limit });
            }
            decoded
        }
    };
    let mut preparer = Preparer::new(limits, watched, body.len());
    parse_into(&body, &mut preparer)?;
    preparer.finish()
}

/// Parses one JSON object, a JSON array of objects, or NDJSON (one object per line), handing
/// each record to `preparer` as soon as it is parsed.
fn parse_into(bytes: &[u8], preparer: &mut Preparer<'_>) -> Result<(), IngestError> {
    let text = std::str::from_utf8(bytes).map_err(|e| {
        let line = bytes[..e.valid_up_to()]
            .iter()
            .filter(|&&b| b == b'\n')
            .count()
            + 1;
        IngestError::record(format!("line {line}"), "not valid UTF-8")
    })?;
    if text.trim_start().starts_with('[') {
        let mut failure = None;
        let mut de = serde_json::Deserializer::from_str(text);
        let parsed = de::Deserializer::deserialize_seq(
            &mut de,
            ArrayRecords {
                preparer: &mut *preparer,
                failure: &mut failure,
            },
        )
        .and_then(|()| de.end());
        return match (failure, parsed) {
            (Some(refusal), _) => Err(refusal),
            (None, Err(e)) => Err(IngestError::record(
                format!("line {}", e.line()),
                strip_position(&e),
            )),
            (None, Ok(())) => Ok(()),
        };
    }
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let place = || format!("line {}", i + 1);
        let value: Value = serde_json::from_str(line)
            .map_err(|e| IngestError::record(place(), strip_position(&e)))?;
        preparer.push(value, &place)?;
    }
    Ok(())
}

/// Visits a JSON array's items one at a time, so a large array never becomes a `Vec<Value>`.
struct ArrayRecords<'p, 'a> {
    preparer: &'p mut Preparer<'a>,
    /// The refusal that stopped the visit, when it was not a JSON syntax error.
    failure: &'p mut Option<IngestError>,
}

impl<'de> Visitor<'de> for ArrayRecords<'_, '_> {
    type Value = ();

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("an array of JSON objects")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        let mut item = 0usize;
        while let Some(value) = seq.next_element::<Value>()? {
            item += 1;
            if let Err(refusal) = self.preparer.push(value, &|| format!("item {item}")) {
                *self.failure = Some(refusal);
                return Err(de::Error::custom("refused"));
            }
        }
        Ok(())
    }
}

fn strip_position(e: &serde_json::Error) -> String {
    let text = e.to_string();
    match text.rfind(" at line ") {
        Some(i) => text[..i].to_owned(),
        None => text,
    }
}

fn check_service(name: &str) -> Result<(), String> {
    let plain = name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
    if name.is_empty() || name.len() > MAX_SERVICE_LEN || !plain || name.starts_with('.') {
        return Err(format!(
            "service {name:?} must be 1 to {MAX_SERVICE_LEN} letters, digits, '.', '_' or '-' (it becomes a source name)"
        ));
    }
    Ok(())
}

/// The line layout's time prefix: `2026-11-22 10:30:45,123 - `.
fn write_prefix(time: &chrono::DateTime<chrono::Utc>, out: &mut String) {
    use std::fmt::Write as _;
    let _ = write!(out, "{}", time.format("%Y-%m-%d %H:%M:%S,%3f - "));
}

/// Appends the record as the collector's line: the Python-logging JSON layout
/// `2026-11-22 10:30:45,123 - {…}` that the processor's rules already parse, with the record's
/// own RFC 3339 `timestamp` moved into the prefix (`now_prefix` when it has none).
fn write_line(record: &mut Map<String, Value>, now_prefix: &str, out: &mut Vec<u8>) {
    let parsed = record
        .get("timestamp")
        .and_then(Value::as_str)
        .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok());
    match parsed {
        Some(time) => {
            let mut prefix = String::new();
            write_prefix(&time.with_timezone(&chrono::Utc), &mut prefix);
            out.extend_from_slice(prefix.as_bytes());
            record.remove("timestamp");
        }
        None => out.extend_from_slice(now_prefix.as_bytes()),
    }
    serde_json::to_writer(&mut *out, record).expect("a JSON map serialises into a Vec");
}

/// One request's records on their way to the collector loop.
struct Batch {
    prepared: Prepared,
    /// Whether the answer lists every id.
    want_ids: bool,
    /// Answered after the commit.
    ack: oneshot::Sender<Accepted>,
    /// Set when the client was told 503 before the batch was taken: it is then dropped, so the
    /// client's retry does not repeat it.
    withdrawn: Arc<AtomicBool>,
}

/// The answer to an accepted request: how many records, the first and last id, and every id
/// when asked (`?ids=true`).
#[derive(Debug, Serialize)]
pub struct Accepted {
    accepted: usize,
    first_id: RecordId,
    last_id: RecordId,
    #[serde(skip_serializing_if = "Option::is_none")]
    ids: Option<Vec<RecordId>>,
}

/// The collector loop's side: takes batches into the journal and acknowledges them after
/// the commit.
pub struct Inbox {
    rx: Receiver<Batch>,
    ids: IdSequence,
    waiting: VecDeque<(oneshot::Sender<Accepted>, Accepted)>,
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
        journal: &mut JournalWriter<CommittedPosition>,
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
            let source_ids: Vec<u64> = batch
                .prepared
                .services
                .iter()
                .map(|s| service_source_id(s))
                .collect();
            let mut ids = batch
                .want_ids
                .then(|| Vec::with_capacity(batch.prepared.len()));
            let mut first = None;
            let mut last = None;
            for ((service, line), &(_, index)) in batch.prepared.records().zip(&batch.prepared.ends)
            {
                let id = RecordId {
                    source_id: source_ids[index as usize],
                    offset: self.ids.next()?,
                };
                let record =
                    CollectedRecordOut::new(id, service, collected_at, line, LineFlags::default())
                        .mark_pushed();
                journal.push_with(|out| record.write(out));
                first.get_or_insert(id);
                last = Some(id);
                if let Some(ids) = ids.as_mut() {
                    ids.push(id);
                }
            }
            let (Some(first_id), Some(last_id)) = (first, last) else {
                // prepare() refuses empty bodies, so a batch has records.
                continue;
            };
            let accepted = Accepted {
                accepted: batch.prepared.len(),
                first_id,
                last_id,
                ids,
            };
            self.waiting.push_back((batch.ack, accepted));
        }
        Ok(journal.pending_bytes() >= TAKE_MAX_BYTES)
    }

    /// Whether records taken wait for their commit (their clients wait for the answer).
    pub fn awaits_commit(&self) -> bool {
        !self.waiting.is_empty()
    }

    /// Everything taken so far is committed: answer the requests.
    pub fn committed(&mut self) {
        for (ack, accepted) in self.waiting.drain(..) {
            // The client may have given up; its records are committed all the same.
            let _ = ack.send(accepted);
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
    file: CheckpointFile,
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
        let saved = match checkpoint::load_or_backup::<IdReservation>(&path) {
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
            file: CheckpointFile::new(path),
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
        self.file
            .store(&reservation, Durability::Fsync)
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

/// Metrics of the ingest endpoint.
#[derive(Debug, Clone, Default)]
pub struct IngestMetrics {
    requests: Family<Vec<(String, String)>, Counter>,
    records: Counter,
    inflight_bytes: Gauge,
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
        registry.register(
            "collector_ingest_inflight_bytes",
            "Bytes charged to ingest requests being read, prepared or waiting for their commit (at most --ingest-max-inflight)",
            self.inflight_bytes.clone(),
        );
    }
}

#[derive(Clone)]
struct IngestState {
    tx: SyncSender<Batch>,
    wakeup: Wakeup,
    options: Arc<IngestOptions>,
    metrics: IngestMetrics,
    /// Bytes of `--ingest-max-inflight`, one permit each.
    inflight: Arc<Semaphore>,
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
    background: &Background,
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
        inflight: Arc::new(Semaphore::new(options.limits.max_inflight_bytes)),
        options: Arc::new(options),
        metrics,
    };
    let app = Router::new()
        .route("/logs", post(ingest))
        .route("/healthz", axum::routing::get(|| async { "ok\n" }))
        .with_state(state);
    background.spawn_graceful(|stopping| async move {
        let server = axum::serve(listener, app).with_graceful_shutdown(stopping);
        if let Err(e) = server.await {
            tracing::error!(error = %e, "The ingest server stopped.");
        }
    });
    info!(listen = %bound, "Ingest endpoint started.");
    let inbox = Inbox {
        rx,
        ids,
        waiting: VecDeque::new(),
    };
    Ok((inbox, bound))
}

async fn ingest(
    State(state): State<IngestState>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let response = match ingest_response(&state, query.as_deref(), &headers, body).await {
        Ok(accepted) => {
            state.metrics.records.inc_by(accepted.accepted as u64);
            (StatusCode::OK, axum::Json(accepted)).into_response()
        }
        Err(refusal) => refusal.into_response(),
    };
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

async fn ingest_response(
    state: &IngestState,
    query: Option<&str>,
    headers: &HeaderMap,
    body: Body,
) -> Result<Accepted, IngestError> {
    let options = &state.options;
    if let Some(tokens) = &options.tokens {
        if !tokens.allows(headers.get(header::AUTHORIZATION)) {
            return Err(IngestError::Unauthorized);
        }
    }
    check_content_type(headers)?;
    let encoding = content_encoding(headers)?;
    let want_ids = wants_ids(query)?;
    let limits = options.limits;
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|n| n > limits.max_body_bytes) {
        return Err(IngestError::BodyTooLarge {
            limit: limits.max_body_bytes,
        });
    }
    // Charged before the body is read; a body without a length is charged as the largest.
    let charge = limits.charge(declared.unwrap_or(limits.max_body_bytes), encoding);
    let mut permit = acquire(&state.inflight, charge).await?;
    let counted = InflightCount::new(&state.metrics.inflight_bytes, charge);
    let raw = read_body(body, limits.max_body_bytes, declared).await?;
    let watched = options.watched.clone();
    // Decoding and parsing up to a MiB is CPU work: off the runtime's thread.
    let prepared = tokio::task::spawn_blocking(move || prepare(raw, encoding, limits, &watched))
        .await
        .map_err(|_| IngestError::NotCommitted)??;
    drop(counted);
    // The body is gone; what the request holds now is its prepared records, until answered.
    resize(&state.inflight, &mut permit, prepared.footprint())?;
    let _counted = InflightCount::new(&state.metrics.inflight_bytes, permit.num_permits());
    let (ack, acked) = oneshot::channel();
    let withdrawn = Arc::new(AtomicBool::new(false));
    let batch = Batch {
        prepared,
        want_ids,
        ack,
        withdrawn: withdrawn.clone(),
    };
    match state.tx.try_send(batch) {
        Ok(()) => state.wakeup.wake(),
        Err(TrySendError::Full(_)) => return Err(IngestError::Queued),
        Err(TrySendError::Disconnected(_)) => return Err(IngestError::Stopping),
    }
    let mut acked = acked;
    match tokio::time::timeout(options.ack_timeout, &mut acked).await {
        Ok(Ok(accepted)) => Ok(accepted),
        Ok(Err(_)) => Err(IngestError::NotCommitted),
        Err(_) if !withdrawn.swap(true, Ordering::AcqRel) => Err(IngestError::Backpressure),
        // Taken just now: the commit is under way, so wait for it after all.
        Err(_) => acked.await.map_err(|_| IngestError::NotCommitted),
    }
}

/// Bytes charged to requests in flight, in the gauge while this lives.
struct InflightCount<'a> {
    gauge: &'a Gauge,
    bytes: i64,
}

impl<'a> InflightCount<'a> {
    fn new(gauge: &'a Gauge, bytes: usize) -> Self {
        let bytes = bytes as i64;
        gauge.inc_by(bytes);
        Self { gauge, bytes }
    }
}

impl Drop for InflightCount<'_> {
    fn drop(&mut self) {
        self.gauge.dec_by(self.bytes);
    }
}

/// Waits up to [`INFLIGHT_WAIT`] for `bytes` of the in-flight bound.
async fn acquire(
    inflight: &Arc<Semaphore>,
    bytes: usize,
) -> Result<OwnedSemaphorePermit, IngestError> {
    let permits = u32::try_from(bytes).map_err(|_| IngestError::Busy)?;
    match tokio::time::timeout(INFLIGHT_WAIT, inflight.clone().acquire_many_owned(permits)).await {
        Ok(Ok(permit)) => Ok(permit),
        Ok(Err(_)) => Err(IngestError::Stopping),
        Err(_) => Err(IngestError::Busy),
    }
}

/// Makes `permit` hold `bytes`: gives back what the charge overestimated, or takes what it
/// underestimated (records that grew when rewritten, such as `1e15` → `1000000000000000.0`)
/// if that much is free, without waiting.
fn resize(
    inflight: &Arc<Semaphore>,
    permit: &mut OwnedSemaphorePermit,
    bytes: usize,
) -> Result<(), IngestError> {
    let held = permit.num_permits();
    if bytes <= held {
        drop(permit.split(held - bytes));
        return Ok(());
    }
    let more = u32::try_from(bytes - held).map_err(|_| IngestError::Busy)?;
    let extra = inflight
        .clone()
        .try_acquire_many_owned(more)
        .map_err(|_| IngestError::Busy)?;
    permit.merge(extra);
    Ok(())
}

/// Reads the body into one buffer sized from its declared length, refusing it as soon as it
/// passes `limit` (a body without a length too).
async fn read_body(
    mut body: Body,
    limit: usize,
    declared: Option<usize>,
) -> Result<Vec<u8>, IngestError> {
    let too_large = IngestError::BodyTooLarge { limit };
    let mut bytes = Vec::with_capacity(declared.unwrap_or(0).min(limit));
    while let Some(frame) = poll_fn(|cx| Pin::new(&mut body).poll_frame(cx)).await {
        // A connection that breaks mid-body: the client sees no answer anyway.
        let frame = frame
            .map_err(|_| IngestError::record("body", "the connection broke while reading it"))?;
        if let Ok(data) = frame.into_data() {
            if bytes.len() + data.len() > limit {
                return Err(too_large);
            }
            bytes.extend_from_slice(&data);
        }
    }
    Ok(bytes)
}

fn check_content_type(headers: &HeaderMap) -> Result<(), IngestError> {
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
    if CONTENT_TYPES.contains(&media.as_str()) {
        Ok(())
    } else {
        Err(IngestError::ContentType {
            given: content_type.to_owned(),
        })
    }
}

/// The body's `Content-Encoding`: none or `identity` as is, `gzip` (or `x-gzip`); anything
/// else, a list of encodings included, is refused.
fn content_encoding(headers: &HeaderMap) -> Result<Encoding, IngestError> {
    let mut values = headers.get_all(header::CONTENT_ENCODING).iter();
    let (Some(value), None) = (values.next(), values.next()) else {
        let given: Vec<_> = headers
            .get_all(header::CONTENT_ENCODING)
            .iter()
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
            .collect();
        return if given.is_empty() {
            Ok(Encoding::Identity)
        } else {
            Err(IngestError::ContentEncoding {
                given: given.join(", "),
            })
        };
    };
    let given = String::from_utf8_lossy(value.as_bytes());
    match given.trim().to_ascii_lowercase().as_str() {
        "" | "identity" => Ok(Encoding::Identity),
        "gzip" | "x-gzip" => Ok(Encoding::Gzip),
        _ => Err(IngestError::ContentEncoding {
            given: given.into_owned(),
        }),
    }
}

/// `ids=true` asks for every id in the answer; other parameters are refused, so a typo is not
/// silently ignored.
fn wants_ids(query: Option<&str>) -> Result<bool, IngestError> {
    let mut want = false;
    for pair in query.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
        let (name, value) = pair.split_once('=').unwrap_or((pair, "true"));
        if name != "ids" {
            return Err(IngestError::Query {
                name: name.to_owned(),
                reason: "unknown (the only parameter is ids=true|false)",
            });
        }
        want = match value {
            "true" | "1" => true,
            "false" | "0" => false,
            _ => {
                return Err(IngestError::Query {
                    name: name.to_owned(),
                    reason: "must be true or false",
                })
            }
        };
    }
    Ok(want)
}

#[cfg(test)]
mod tests {
    use std::io::Write as _;

    use super::*;

    fn limits(max_records: u64) -> IngestLimits {
        IngestLimits::try_new(ByteSize(1 << 20), max_records, ByteSize(64 << 20)).unwrap()
    }

    fn watched(patterns: &[&str]) -> WatchedNames {
        let patterns: Vec<String> = patterns.iter().map(|&p| p.to_owned()).collect();
        WatchedNames::compile(&patterns).unwrap()
    }

    fn parse(body: &[u8]) -> Result<Vec<(String, String)>, IngestError> {
        let prepared = prepare(
            body.to_vec(),
            Encoding::Identity,
            limits(100),
            &watched(&[]),
        )?;
        Ok(prepared
            .records()
            .map(|(service, line)| {
                (
                    service.to_owned(),
                    String::from_utf8(line.to_vec()).unwrap(),
                )
            })
            .collect())
    }

    fn message(refusal: IngestError) -> String {
        refusal.to_string()
    }

    #[test]
    fn bodies_are_objects_arrays_or_ndjson_with_line_numbers_in_errors() {
        let one = parse(br#"{"service":"billing","message":"hi"}"#).unwrap();
        assert_eq!(one[0].0, "billing");
        assert!(
            one[0]
                .1
                .ends_with(r#" - {"message":"hi","service":"billing"}"#),
            "{}",
            one[0].1
        );
        let batch =
            parse(b"{\"message\":\"a\"}\n\n{\"service\":\"b\",\"timestamp\":\"t\"}\n").unwrap();
        assert_eq!(batch[0].0, UNKNOWN_SERVICE);
        assert!(batch[0]
            .1
            .ends_with(r#"{"message":"a","service":"unknown"}"#));
        assert!(
            batch[1].1.ends_with(r#"{"service":"b","timestamp":"t"}"#),
            "an unparsed time stays"
        );
        assert_eq!(parse(br#"[{"service":"x"},{}]"#).unwrap().len(), 2);
        let e = message(parse(b"{\"a\":1}\n{\"a\":\n").unwrap_err());
        assert!(e.starts_with("line 2: "), "{e}");
        assert!(
            message(parse(b"{}\n42\n").unwrap_err()).starts_with("line 2: expected a JSON object")
        );
        assert!(
            message(parse(b"[{}, 42]").unwrap_err()).starts_with("item 2: expected a JSON object")
        );
        assert!(message(parse(b"[{}, {]").unwrap_err()).starts_with("line 1: "));
        assert!(message(parse(b"[{}] x").unwrap_err()).starts_with("line 1: trailing"));
        assert!(message(parse(br#"{"service":"../etc"}"#).unwrap_err()).contains("service"));
        assert!(parse(br#"{"service":7}"#).is_err());
        assert!(matches!(parse(b"\n \n"), Err(IngestError::Empty)));
        assert!(matches!(parse(b"[]"), Err(IngestError::Empty)));
    }

    /// Issue 11: the limit holds in both layouts, at the first record past it.
    #[test]
    fn one_record_past_the_limit_is_refused_in_either_layout() {
        let ndjson = "{}\n".repeat(100);
        assert_eq!(parse(ndjson.as_bytes()).unwrap().len(), 100);
        let refusal = parse("{}\n".repeat(101).as_bytes()).unwrap_err();
        assert_eq!(refusal.status(), StatusCode::PAYLOAD_TOO_LARGE);
        assert!(message(refusal).contains("more than 100 records"));
        let array = format!("[{}{{}}]", "{},".repeat(100));
        let refusal = parse(array.as_bytes()).unwrap_err();
        assert!(
            matches!(refusal, IngestError::TooManyRecords { limit: 100 }),
            "{refusal}"
        );
    }

    #[test]
    fn lines_use_the_python_logging_layout_with_the_records_time() {
        let mut record = Map::new();
        record.insert("service".into(), "billing".into());
        record.insert("timestamp".into(), "2026-11-22T10:30:45.123+01:00".into());
        record.insert("level".into(), "error".into());
        let mut line = Vec::new();
        write_line(&mut record, "unused - ", &mut line);
        assert_eq!(
            String::from_utf8(line).unwrap(),
            r#"2026-11-22 09:30:45,123 - {"level":"error","service":"billing"}"#
        );
    }

    /// Issue 11: a pushed record cannot take a name the tailer watches.
    #[test]
    fn a_service_the_watch_globs_match_is_refused_naming_the_field() {
        let names = watched(&["/logs/*.log", "/var/log/app/access*"]);
        let refusal = prepare(
            b"{\"service\":\"billing\"}\n{\"service\":\"access.log\"}\n".to_vec(),
            Encoding::Identity,
            limits(100),
            &names,
        )
        .unwrap_err();
        assert_eq!(refusal.status(), StatusCode::BAD_REQUEST);
        let text = message(refusal);
        assert!(text.starts_with("line 2: service \"access.log\""), "{text}");
        assert!(text.contains("\"*.log\""), "{text}");
        assert!(prepare(
            br#"{"service":"access"}"#.to_vec(),
            Encoding::Identity,
            limits(1),
            &names
        )
        .is_err());
        assert!(prepare(
            br#"{"service":"billing"}"#.to_vec(),
            Encoding::Identity,
            limits(1),
            &names
        )
        .is_ok());
    }

    #[test]
    fn gzip_bodies_decode_and_a_bomb_stops_at_the_body_limit() {
        let gzip = |data: &[u8]| {
            let mut encoder =
                flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
            encoder.write_all(data).unwrap();
            encoder.finish().unwrap()
        };
        let body = gzip(b"{\"service\":\"a\"}\n{\"service\":\"b\"}\n");
        let prepared = prepare(body, Encoding::Gzip, limits(10), &watched(&[])).unwrap();
        assert_eq!(prepared.len(), 2);
        // 1 MiB + 1 byte of spaces: a few KiB of gzip.
        let bomb = gzip(&vec![b' '; (1 << 20) + 1]);
        assert!(bomb.len() < 8 << 10, "{}", bomb.len());
        let refusal = prepare(bomb, Encoding::Gzip, limits(10), &watched(&[])).unwrap_err();
        assert!(
            matches!(refusal, IngestError::DecodedTooLarge { .. }),
            "{refusal}"
        );
        let refusal = prepare(
            b"not gzip".to_vec(),
            Encoding::Gzip,
            limits(10),
            &watched(&[]),
        )
        .unwrap_err();
        assert_eq!(refusal.status(), StatusCode::BAD_REQUEST);
    }

    /// The charge before reading covers what preparing holds at its peak (the body, the lines
    /// and the index before it is trimmed), for the smallest records and for plain ones.
    #[test]
    fn the_charge_covers_the_prepared_records() {
        let limits = limits(10_000);
        let names = watched(&[]);
        let plain = r#"{"service":"billing","level":"info","message":"card declined"}"#;
        for body in ["{}\n".repeat(10_000), format!("{plain}\n").repeat(5_000)] {
            let charge = limits.charge(body.len(), Encoding::Identity);
            let mut preparer = Preparer::new(limits, &names, body.len());
            parse_into(body.as_bytes(), &mut preparer).unwrap();
            let peak = body.len() + preparer.prepared.footprint();
            assert!(peak <= charge, "{peak} > {charge}");
            let kept = preparer.finish().unwrap().footprint();
            assert!(kept < peak, "trimmed: {kept}");
        }
    }

    #[test]
    fn limits_are_checked_naming_the_flag() {
        let e = IngestLimits::try_new(ByteSize(1 << 20), 0, ByteSize(64 << 20)).unwrap_err();
        assert!(e.to_string().starts_with("--ingest-max-records: "), "{e}");
        let e = IngestLimits::try_new(ByteSize(10), 10, ByteSize(64 << 20)).unwrap_err();
        assert!(e.to_string().starts_with("--ingest-max-body: "), "{e}");
        let e = IngestLimits::try_new(ByteSize(1 << 20), 10_000, ByteSize(1 << 20)).unwrap_err();
        assert!(
            e.to_string()
                .starts_with("--ingest-max-inflight: must be at least "),
            "{e}"
        );
        let defaults = IngestLimits::try_new(
            ByteSize(1 << 20),
            DEFAULT_MAX_RECORDS,
            ByteSize(DEFAULT_MAX_INFLIGHT_BYTES),
        );
        assert!(defaults.is_ok(), "the defaults fit together");
    }

    #[test]
    fn only_gzip_or_no_encoding_is_accepted() {
        let with = |values: &[&str]| {
            let mut headers = HeaderMap::new();
            for v in values {
                headers.append(header::CONTENT_ENCODING, HeaderValue::from_str(v).unwrap());
            }
            content_encoding(&headers)
        };
        assert_eq!(with(&[]).unwrap(), Encoding::Identity);
        assert_eq!(with(&["GZIP"]).unwrap(), Encoding::Gzip);
        assert_eq!(with(&["identity"]).unwrap(), Encoding::Identity);
        let refusal = with(&["br"]).unwrap_err();
        assert_eq!(refusal.status(), StatusCode::UNSUPPORTED_MEDIA_TYPE);
        assert!(message(refusal).starts_with("content encoding \"br\""));
        assert!(with(&["gzip", "gzip"]).is_err());
        assert!(with(&["gzip, br"]).is_err());
    }

    #[test]
    fn ids_are_listed_only_on_request() {
        assert!(!wants_ids(None).unwrap());
        assert!(wants_ids(Some("ids=true")).unwrap());
        assert!(wants_ids(Some("ids")).unwrap());
        assert!(!wants_ids(Some("ids=0")).unwrap());
        assert!(wants_ids(Some("ids=yes")).is_err());
        assert!(message(wants_ids(Some("id=true")).unwrap_err()).contains("\"id\""));
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

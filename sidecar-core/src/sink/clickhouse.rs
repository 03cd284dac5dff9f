//! The clickhouse sink: `INSERT INTO <table> FORMAT JSONEachRow` over ClickHouse's HTTP
//! interface, one row per record, typed columns for the well-known fields and the whole record
//! in `fields`. The table layout is `docs/clickhouse-table.sql` (see `docs/clickhouse.md`).
//!
//! Easy to get wrong: what a refused insert means. An insert is atomic, and ClickHouse answers
//! a table that does not fit the rows (a missing column, a column type that cannot hold the
//! value) with 400 or 500 and an exception text. That is the table's fault, not the records':
//! dead-lettering would empty the journal into the dead-letter journal, so the sink names the
//! column in an ERROR line and a metric and keeps retrying with backoff until an operator fixes
//! the table. A retried insert after a crash repeats rows; the table is a `ReplacingMergeTree`
//! ordered by the record id, so `SELECT … FINAL` sees each record once.

use std::borrow::Cow;
use std::fmt;
use std::io::Write as _;
use std::sync::LazyLock;
use std::time::{Duration, Instant};

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;
use reqwest::Url;
use serde::de::{IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde::{Deserialize, Deserializer};
use tracing::error;

use super::dead_letter::DeadLetterSpec;
use super::network::{
    BatchSpec, EndpointSpec, HttpEndpointFields, NetworkSink, NoOtherKeys, Protocol, Reply,
};
use super::{OutRecord, SinkError};
use crate::config::{ByteSize, FieldError, HumanDuration};

/// `type: clickhouse` in the forwarder's config file.
#[derive(Debug, Clone, Deserialize)]
pub struct ClickHouseSpec {
    /// Unique name (default `clickhouse`).
    #[serde(default = "default_name")]
    pub name: String,
    /// The table, `table` or `database.table`.
    pub table: String,
    /// The database, when `table` does not name one (default: the server's default database
    /// for the user).
    #[serde(default)]
    pub database: Option<String>,
    /// Records and bytes per insert, with ClickHouse's own defaults (see
    /// [`ClickHouseBatch`]). Taken here so that the shared `batch:` defaults do not apply.
    #[serde(default = "default_batch", deserialize_with = "deserialize_batch")]
    pub batch: BatchSpec,
    /// `url`, `headers`, `gzip`, `auth`, `tls`, `timeouts`, `retry`.
    #[serde(flatten)]
    pub endpoint: HttpEndpointFields,
    /// Refuses any other key.
    #[serde(flatten)]
    pub _no_other_keys: NoOtherKeys,
}

fn default_name() -> String {
    "clickhouse".into()
}

/// `batch:` of the clickhouse sink. ClickHouse writes every insert as a new part on disk and
/// merges them later; its docs ask for inserts of at least a thousand rows, about one per
/// second, so the defaults are larger and slower than the other network sinks'.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClickHouseBatch {
    /// Rows per insert at most (default 10000).
    #[serde(default = "default_max_records")]
    pub max_records: usize,
    /// Uncompressed body bytes per insert at most (default 4 MiB; the forwarder reads as much
    /// journal per batch for this sink, so inserts can be that large).
    #[serde(default = "default_max_bytes")]
    pub max_bytes: ByteSize,
    /// How long to let records gather after new ones arrive (default 1 s: a trickle of lines
    /// makes about one insert a second, as ClickHouse asks).
    #[serde(default = "default_linger")]
    pub linger: HumanDuration,
}

fn default_max_records() -> usize {
    10_000
}
fn default_max_bytes() -> ByteSize {
    ByteSize(4 << 20)
}
fn default_linger() -> HumanDuration {
    HumanDuration(Duration::from_secs(1))
}

impl From<ClickHouseBatch> for BatchSpec {
    fn from(b: ClickHouseBatch) -> Self {
        BatchSpec {
            max_records: b.max_records,
            max_bytes: b.max_bytes,
            linger: b.linger,
        }
    }
}

fn default_batch() -> BatchSpec {
    BatchSpec {
        max_records: default_max_records(),
        max_bytes: default_max_bytes(),
        linger: default_linger(),
    }
}

fn deserialize_batch<'de, D: Deserializer<'de>>(deserializer: D) -> Result<BatchSpec, D::Error> {
    ClickHouseBatch::deserialize(deserializer).map(BatchSpec::from)
}

impl ClickHouseSpec {
    /// The shared network settings, with this sink's `batch:`.
    pub fn endpoint_spec(&self) -> EndpointSpec<'_> {
        let mut spec = self.endpoint.spec(&self.name);
        spec.batch = &self.batch;
        spec
    }

    /// Checks the table and database names.
    ///
    /// # Errors
    /// The field and what is wrong with it.
    pub fn validate(&self) -> Result<(), FieldError> {
        self.endpoint_spec().validate()?;
        self.qualified_table().map(|_| ())
    }

    /// `database.table` or `table`, checked.
    fn qualified_table(&self) -> Result<String, FieldError> {
        qualified_table(&self.table, self.database.as_deref())
    }

    /// Builds the sink.
    ///
    /// # Errors
    /// When the client or the dead-letter journal cannot be set up.
    pub fn build(&self, dead_letter: &DeadLetterSpec) -> Result<Box<dyn super::Sink>, SinkError> {
        let setup = |message: String| SinkError::Setup {
            sink: self.name.clone(),
            source: message.into(),
        };
        let table = self.qualified_table().map_err(|e| setup(e.to_string()))?;
        let url = insert_url(&self.endpoint.url, &table).map_err(setup)?;
        let protocol = InsertProtocol {
            url,
            table,
            metrics: SchemaMetrics::for_sink(&self.name),
            sink: self.name.clone(),
            last_logged: None,
        };
        Ok(Box::new(NetworkSink::new(
            &self.endpoint_spec(),
            protocol,
            dead_letter,
        )?))
    }
}

/// Whether `name` is a plain ClickHouse identifier: a letter or `_`, then letters, digits and
/// `_`. Quoted identifiers could hold more, but a table named like that is rare and would
/// need quoting rules in every query an operator writes.
fn is_identifier(name: &str) -> bool {
    let mut bytes = name.bytes();
    matches!(bytes.next(), Some(b) if b.is_ascii_alphabetic() || b == b'_')
        && bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_')
        && name.len() <= 255
}

fn qualified_table(table: &str, database: Option<&str>) -> Result<String, FieldError> {
    let check = |field: &str, name: &str| {
        if is_identifier(name) {
            Ok(())
        } else {
            Err(FieldError::new(
                field,
                format!("{name:?} is not a table identifier (letters, digits and _, not starting with a digit)"),
            ))
        }
    };
    match (table.split_once('.'), database) {
        (Some(_), Some(_)) => Err(FieldError::new(
            "database",
            "give the database either in table (db.table) or in database, not both",
        )),
        (Some((db, t)), None) => {
            check("table", db)?;
            check("table", t)?;
            Ok(format!("{db}.{t}"))
        }
        (None, Some(db)) => {
            check("database", db)?;
            check("table", table)?;
            Ok(format!("{db}.{table}"))
        }
        (None, None) => {
            check("table", table)?;
            Ok(table.to_owned())
        }
    }
}

/// `<url>/?query=INSERT INTO <table> FORMAT JSONEachRow`, keeping query parameters the URL
/// already has (ClickHouse settings such as `insert_quorum=2`).
fn insert_url(base: &str, table: &str) -> Result<Url, String> {
    let mut url = Url::parse(base).map_err(|e| format!("url: {e}"))?;
    if url.path().is_empty() {
        url.set_path("/");
    }
    url.query_pairs_mut()
        .append_pair("query", &format!("INSERT INTO {table} FORMAT JSONEachRow"));
    Ok(url)
}

/// Counts inserts refused because the table does not fit the rows.
#[derive(Debug)]
struct SchemaMetrics {
    family: Family<Vec<(String, String)>, Counter>,
    sink: String,
}

static SCHEMA_ERRORS: LazyLock<Family<Vec<(String, String)>, Counter>> =
    LazyLock::new(Family::default);

/// Registers `forwarder_sink_schema_errors_total{sink,column}`.
pub fn register_metrics(registry: &mut Registry) {
    registry.register(
        "forwarder_sink_schema_errors",
        "Inserts ClickHouse refused because the table does not fit the rows (a missing column, a column type that cannot hold the value); retried until the table is fixed",
        SCHEMA_ERRORS.clone(),
    );
}

impl SchemaMetrics {
    fn for_sink(sink: &str) -> Self {
        Self {
            family: SCHEMA_ERRORS.clone(),
            sink: sink.to_owned(),
        }
    }

    fn count(&self, column: Option<&str>) {
        let label = vec![
            ("sink".to_owned(), self.sink.clone()),
            ("column".to_owned(), column.unwrap_or("").to_owned()),
        ];
        self.family.get_or_create(&label).inc();
    }
}

/// What a ClickHouse exception text says, as far as the sink cares.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Exception {
    code: u32,
    /// The table does not fit the rows: the operator must change the table (or the sink).
    schema: bool,
    /// The column named in the text, when there is one.
    column: Option<String>,
    /// `e.displayText()`, without ClickHouse's repetitions.
    text: String,
}

/// Codes that mean the table does not fit the rows (ClickHouse `ErrorCodes.cpp`):
/// 6 CANNOT_PARSE_TEXT, 16 NO_SUCH_COLUMN_IN_TABLE, 26 CANNOT_PARSE_QUOTED_STRING,
/// 27 CANNOT_PARSE_INPUT_ASSERTION_FAILED, 38 CANNOT_PARSE_DATE, 41 CANNOT_PARSE_DATETIME,
/// 53 TYPE_MISMATCH, 69 ARGUMENT_OUT_OF_BOUND, 70 CANNOT_CONVERT_TYPE, 72 CANNOT_PARSE_NUMBER,
/// 117 INCORRECT_DATA (an unknown field in JSONEachRow).
const SCHEMA_CODES: [u32; 11] = [6, 16, 26, 27, 38, 41, 53, 69, 70, 72, 117];

/// Reads `Code: N, e.displayText() = DB::Exception: …` (18.x) or `Code: N. DB::Exception: …`
/// (newer servers).
fn read_exception(text: &str) -> Option<Exception> {
    let start = text.find("Code: ")?;
    let rest = &text[start + 6..];
    let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
    let code: u32 = rest[..digits].parse().ok()?;
    let mut message = rest[digits..].trim_start_matches([',', '.', ' ']);
    message = message
        .strip_prefix("e.displayText() = ")
        .unwrap_or(message);
    message = message.strip_prefix("DB::Exception: ").unwrap_or(message);
    // 18.x appends `, e.what() = DB::Exception`; newer ones a version in parentheses.
    let message = message
        .split(", e.what() = ")
        .next()
        .unwrap_or(message)
        .trim();
    let schema = SCHEMA_CODES.contains(&code);
    let column = schema.then(|| column_in(message)).flatten();
    Some(Exception {
        code,
        schema,
        column,
        text: message.replace('\n', " "),
    })
}

/// The column an exception text names: `… JSONEachRow format: <col>: …`, `(while read the
/// value of key <col>)`, `No such column <col> in table`.
fn column_in(message: &str) -> Option<String> {
    let after = |marker: &str, ends: &[char]| {
        let at = message.find(marker)? + marker.len();
        let name: String = message[at..]
            .chars()
            .take_while(|c| !ends.contains(c))
            .collect();
        let name = name.trim().trim_matches('`');
        (!name.is_empty()).then(|| name.to_owned())
    };
    after("JSONEachRow format: ", &[':', ' ', '\n'])
        .or_else(|| after("while read the value of key ", &[')', ':', ' ', '\n']))
        .or_else(|| after("No such column ", &[' ', ',', '\n']))
}

/// JSONEachRow inserts into one table.
#[derive(Debug)]
struct InsertProtocol {
    url: Url,
    table: String,
    metrics: SchemaMetrics,
    sink: String,
    /// The last schema error logged and when, so a table that stays wrong is logged once a
    /// minute rather than at every retry.
    last_logged: Option<(String, Instant)>,
}

/// How often the same schema error is logged again.
const SCHEMA_LOG_EVERY: Duration = Duration::from_secs(60);

impl InsertProtocol {
    /// Turns a ClickHouse exception into a retry: see the module docs.
    fn review_failure(&mut self, status: Option<u16>, reason: String) -> Reply {
        let Some(e) = read_exception(&reason) else {
            return match status {
                Some(status) => Reply::Refused { status, reason },
                None => Reply::Unavailable {
                    reason,
                    retry_after: None,
                },
            };
        };
        if !e.schema {
            return Reply::Unavailable {
                reason,
                retry_after: None,
            };
        }
        self.metrics.count(e.column.as_deref());
        let column = e.column.as_deref().unwrap_or("(not named)");
        let reason = format!(
            "table {} does not fit the rows: column {column}: ClickHouse code {}: {}",
            self.table, e.code, e.text
        );
        let repeat = self
            .last_logged
            .as_ref()
            .is_some_and(|(last, at)| *last == reason && at.elapsed() < SCHEMA_LOG_EVERY);
        if !repeat {
            error!(sink = %self.sink, table = %self.table, column, code = e.code, reason = %e.text, "ClickHouse refused the insert because the table does not fit the rows; the records stay in the journal and are retried until the table is fixed.");
            self.last_logged = Some((reason.clone(), Instant::now()));
        }
        Reply::Unavailable {
            reason,
            retry_after: None,
        }
    }
}

impl Protocol for InsertProtocol {
    fn content_type(&self) -> &'static str {
        "application/x-ndjson"
    }

    fn url(&self) -> &Url {
        &self.url
    }

    fn encode(&mut self, records: &[&OutRecord<'_>], body: &mut Vec<u8>) {
        for record in records {
            encode_row(record, body);
        }
    }

    fn review(&mut self, reply: Reply, _count: usize) -> Reply {
        match reply {
            Reply::Refused { status, reason } => self.review_failure(Some(status), reason),
            Reply::Unavailable {
                reason,
                retry_after: None,
            } => self.review_failure(None, reason),
            other => other,
        }
    }

    fn record_bytes(&self, record: &OutRecord<'_>) -> usize {
        // `fields` carries the record escaped, the typed columns copy parts of it again, and
        // the column names add about 250 bytes.
        2 * record.raw.len() + 256
    }
}

/// A string-ish field: a string as it is, a number or bool as its text, anything else
/// (object, array, null) as absent, so one odd field never hides the others.
#[derive(Debug, Default)]
struct Text<'a>(Option<Cow<'a, str>>);

impl<'de: 'a, 'a> Deserialize<'de> for Text<'a> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct V<'a>(std::marker::PhantomData<&'a ()>);
        impl<'de: 'a, 'a> Visitor<'de> for V<'a> {
            type Value = Text<'a>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("any JSON value")
            }
            fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Self::Value, E> {
                Ok(Text(Some(Cow::Borrowed(v))))
            }
            fn visit_str<E>(self, v: &str) -> Result<Self::Value, E> {
                Ok(Text(Some(Cow::Owned(v.to_owned()))))
            }
            fn visit_string<E>(self, v: String) -> Result<Self::Value, E> {
                Ok(Text(Some(Cow::Owned(v))))
            }
            fn visit_i64<E>(self, v: i64) -> Result<Self::Value, E> {
                Ok(Text(Some(Cow::Owned(v.to_string()))))
            }
            fn visit_u64<E>(self, v: u64) -> Result<Self::Value, E> {
                Ok(Text(Some(Cow::Owned(v.to_string()))))
            }
            fn visit_f64<E>(self, v: f64) -> Result<Self::Value, E> {
                Ok(Text(Some(Cow::Owned(v.to_string()))))
            }
            fn visit_bool<E>(self, v: bool) -> Result<Self::Value, E> {
                Ok(Text(Some(Cow::Owned(v.to_string()))))
            }
            fn visit_unit<E>(self) -> Result<Self::Value, E> {
                Ok(Text(None))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
                while seq.next_element::<IgnoredAny>()?.is_some() {}
                Ok(Text(None))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
                Ok(Text(None))
            }
        }
        deserializer.deserialize_any(V(std::marker::PhantomData))
    }
}

impl Text<'_> {
    fn get(&self) -> &str {
        self.0.as_deref().unwrap_or("")
    }
}

/// The fields of `kubernetes` that get columns; anything else in it stays in `fields`.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct Kubernetes<'a> {
    #[serde(borrow)]
    namespace: Text<'a>,
    #[serde(borrow)]
    pod_name: Text<'a>,
    #[serde(borrow)]
    container_name: Text<'a>,
    #[serde(borrow)]
    node_name: Text<'a>,
}

/// `kubernetes` when it is an object; otherwise nothing, so the other columns survive.
#[derive(Debug, Default)]
struct MaybeKubernetes<'a>(Kubernetes<'a>);

impl<'de: 'a, 'a> Deserialize<'de> for MaybeKubernetes<'a> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct V<'a>(std::marker::PhantomData<&'a ()>);
        impl<'de: 'a, 'a> Visitor<'de> for V<'a> {
            type Value = MaybeKubernetes<'a>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("any JSON value")
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
                Kubernetes::deserialize(serde::de::value::MapAccessDeserializer::new(map))
                    .map(MaybeKubernetes)
            }
            fn visit_borrowed_str<E>(self, _: &'de str) -> Result<Self::Value, E> {
                Ok(MaybeKubernetes::default())
            }
            fn visit_str<E>(self, _: &str) -> Result<Self::Value, E> {
                Ok(MaybeKubernetes::default())
            }
            fn visit_i64<E>(self, _: i64) -> Result<Self::Value, E> {
                Ok(MaybeKubernetes::default())
            }
            fn visit_u64<E>(self, _: u64) -> Result<Self::Value, E> {
                Ok(MaybeKubernetes::default())
            }
            fn visit_f64<E>(self, _: f64) -> Result<Self::Value, E> {
                Ok(MaybeKubernetes::default())
            }
            fn visit_bool<E>(self, _: bool) -> Result<Self::Value, E> {
                Ok(MaybeKubernetes::default())
            }
            fn visit_unit<E>(self) -> Result<Self::Value, E> {
                Ok(MaybeKubernetes::default())
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
                while seq.next_element::<IgnoredAny>()?.is_some() {}
                Ok(MaybeKubernetes::default())
            }
        }
        deserializer.deserialize_any(V(std::marker::PhantomData))
    }
}

/// The record's fields that get columns, borrowed from the line; the rest is skipped by the
/// parser without being built.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct Known<'a> {
    #[serde(borrow)]
    id: Text<'a>,
    #[serde(borrow)]
    source_file: Text<'a>,
    #[serde(borrow)]
    collected_at: Text<'a>,
    #[serde(borrow)]
    timestamp: Text<'a>,
    #[serde(borrow)]
    log_level: Text<'a>,
    #[serde(borrow)]
    log_category: Text<'a>,
    #[serde(borrow)]
    message: Text<'a>,
    #[serde(borrow)]
    line: Text<'a>,
    #[serde(borrow)]
    stream: Text<'a>,
    #[serde(borrow)]
    kubernetes: MaybeKubernetes<'a>,
}

/// Days from 1970-01-01 to a proleptic Gregorian date (H. Hinnant's `days_from_civil`).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * (m + if m > 2 { -3 } else { 9 }) + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// Unix milliseconds of `collected_at`. The collector always writes
/// `YYYY-MM-DDTHH:MM:SS.mmmZ`, read here by hand (a chrono parse per row cost more than the
/// rest of the row); anything else goes through chrono; a record without a readable time gets
/// the time it is sent.
fn unix_millis(text: &str) -> i64 {
    let b = text.as_bytes();
    let num = |r: std::ops::Range<usize>| -> Option<i64> {
        let part = b.get(r)?;
        part.iter()
            .all(u8::is_ascii_digit)
            .then(|| part.iter().fold(0, |n, d| n * 10 + i64::from(d - b'0')))
    };
    let fast = (|| {
        if b.len() != 24 || b[4] != b'-' || b[7] != b'-' || b[10] != b'T' || b[19] != b'.' {
            return None;
        }
        if b[13] != b':' || b[16] != b':' || b[23] != b'Z' {
            return None;
        }
        let days = days_from_civil(num(0..4)?, num(5..7)?, num(8..10)?);
        let secs = days * 86_400 + num(11..13)? * 3600 + num(14..16)? * 60 + num(17..19)?;
        Some(secs * 1000 + num(20..23)?)
    })();
    fast.or_else(|| {
        chrono::DateTime::parse_from_rfc3339(text)
            .ok()
            .map(|t| t.timestamp_millis())
    })
    .unwrap_or_else(|| chrono::Utc::now().timestamp_millis())
}

fn push_str(body: &mut Vec<u8>, text: &str) {
    serde_json::to_writer(&mut *body, text).expect("writing to a Vec cannot fail");
}

/// Appends one JSONEachRow line for `record`: every column of the documented layout, always,
/// so a table missing one fails loudly instead of losing that field quietly.
fn encode_row(record: &OutRecord<'_>, body: &mut Vec<u8>) {
    let known: Known<'_> = if record.is_decoded() {
        serde_json::from_slice(record.raw).unwrap_or_default()
    } else {
        Known::default()
    };
    let raw = String::from_utf8_lossy(record.raw);
    let id = match known.id.0 {
        Some(id) => id,
        // Every processed record has an id; a line without one gets the hash of its bytes so
        // that it does not collapse with the others under ReplacingMergeTree.
        None => Cow::Owned(format!(
            "raw-{:016x}",
            xxhash_rust::xxh3::xxh3_64(record.raw)
        )),
    };
    let millis = unix_millis(known.collected_at.get()).max(0);
    let message = match &known.message.0 {
        Some(m) => m.as_ref(),
        None => known.line.get(),
    };
    let k = &known.kubernetes.0;
    body.extend_from_slice(b"{\"id\":");
    push_str(body, &id);
    body.extend_from_slice(b",\"source_file\":");
    push_str(body, known.source_file.get());
    // DateTime as Unix seconds: a number is read the same whatever the server's time zone.
    write!(
        body,
        ",\"collected_at\":{},\"collected_at_ms\":{millis}",
        millis / 1000
    )
    .expect("writing to a Vec cannot fail");
    for (name, value) in [
        ("timestamp", known.timestamp.get()),
        ("log_level", known.log_level.get()),
        ("log_category", known.log_category.get()),
        ("message", message),
        ("stream", known.stream.get()),
        ("kubernetes_namespace", k.namespace.get()),
        ("kubernetes_pod_name", k.pod_name.get()),
        ("kubernetes_container_name", k.container_name.get()),
        ("kubernetes_node_name", k.node_name.get()),
    ] {
        body.extend_from_slice(b",\"");
        body.extend_from_slice(name.as_bytes());
        body.extend_from_slice(b"\":");
        push_str(body, value);
    }
    body.extend_from_slice(b",\"fields\":");
    push_str(body, &raw);
    body.extend_from_slice(b"}\n");
}

#[cfg(test)]
mod tests {
    use serde_json::{json, Value};

    use super::*;

    fn row(raw: &[u8]) -> Value {
        let record = OutRecord::decode(raw);
        let mut body = Vec::new();
        encode_row(&record, &mut body);
        assert_eq!(body.last(), Some(&b'\n'));
        assert_eq!(body.iter().filter(|&&b| b == b'\n').count(), 1);
        serde_json::from_slice(&body).unwrap()
    }

    #[test]
    fn rows_carry_typed_columns_and_the_whole_record() {
        let raw = br#"{"id":"00ab-10","source_file":"access.log","collected_at":"2026-11-22T10:30:45.123Z","timestamp":"2026-11-22 10:30:45,123","log_level":"ERROR","log_category":"api","message":"say \"hi\"","stream":"stderr","kubernetes":{"namespace":"shop","pod_name":"web-0","container_name":"api","labels":{"a":"b"}},"n":[1,2]}"#;
        let r = row(raw);
        assert_eq!(
            r,
            json!({
                "id": "00ab-10", "source_file": "access.log",
                "collected_at": 1_795_343_445, "collected_at_ms": 1_795_343_445_123_i64,
                "timestamp": "2026-11-22 10:30:45,123", "log_level": "ERROR",
                "log_category": "api", "message": "say \"hi\"", "stream": "stderr",
                "kubernetes_namespace": "shop", "kubernetes_pod_name": "web-0",
                "kubernetes_container_name": "api", "kubernetes_node_name": "",
                "fields": std::str::from_utf8(raw).unwrap(),
            })
        );
    }

    #[test]
    fn odd_records_still_make_full_rows() {
        // A number where a string is expected, kubernetes not an object, no message but a line.
        let r = row(
            br#"{"id":"x-1","timestamp":1700000000,"kubernetes":"n/a","line":"raw text","collected_at":"2026-11-22T11:30:45.5+01:00"}"#,
        );
        assert_eq!(r["timestamp"], "1700000000");
        assert_eq!(r["kubernetes_namespace"], "");
        assert_eq!(r["message"], "raw text");
        assert_eq!(r["collected_at_ms"], 1_795_343_445_500_i64);
        assert_eq!(r["log_level"], "");
        // Not JSON: an id from its bytes, the line in `fields`.
        let a = row(b"plain text");
        let b = row(b"other text");
        assert!(a["id"].as_str().unwrap().starts_with("raw-"));
        assert_ne!(a["id"], b["id"]);
        assert_eq!(a["fields"], "plain text");
        assert_eq!(a.as_object().unwrap().len(), 14);
    }

    #[test]
    fn collection_times_are_read_by_hand_like_chrono() {
        for t in [
            "1970-01-01T00:00:00.000Z",
            "2000-02-29T23:59:59.999Z",
            "2026-11-22T10:30:45.123Z",
            "2100-03-01T00:00:00.001Z",
        ] {
            let want = chrono::DateTime::parse_from_rfc3339(t)
                .unwrap()
                .timestamp_millis();
            assert_eq!(unix_millis(t), want, "{t}");
        }
        let now = chrono::Utc::now().timestamp_millis();
        assert!((unix_millis("garbage") - now).abs() < 60_000);
    }

    #[test]
    fn config_takes_clickhouse_batch_defaults_and_checks_the_table() {
        use crate::sink::{ForwarderFile, SinkSpec};
        let path = std::path::Path::new("forwarder.yaml");
        let parse = |text: &str| -> Result<ForwarderFile, String> {
            let f: ForwarderFile =
                crate::config::parse_text(text, path).map_err(|e| e.to_string())?;
            f.validate(path).map_err(|e| e.to_string())?;
            Ok(f)
        };
        let spec = |f: &ForwarderFile| match &f.sinks[0] {
            SinkSpec::Clickhouse(s) => s.clone(),
            _ => panic!("not a clickhouse sink"),
        };
        let f = parse("sinks:\n  - {type: clickhouse, url: 'http://ch:8123', table: logs.records, gzip: true}\n").unwrap();
        let s = spec(&f);
        assert_eq!(s.name, "clickhouse");
        assert!(s.endpoint.gzip);
        let batch = s.endpoint_spec().batch.clone();
        assert_eq!(batch.max_records, 10_000);
        assert_eq!(batch.max_bytes.0, 4 << 20);
        assert_eq!(batch.linger.0, Duration::from_secs(1));
        let f = parse("sinks:\n  - {type: clickhouse, url: 'http://ch:8123', table: t, batch: {max_records: 500}}\n").unwrap();
        let batch = spec(&f).endpoint_spec().batch.clone();
        assert_eq!((batch.max_records, batch.max_bytes.0), (500, 4 << 20));
        let err = parse("sinks:\n  - {type: clickhouse, url: 'http://ch:8123', table: 'logs-x'}\n")
            .unwrap_err();
        assert!(
            err.starts_with("forwarder.yaml: sinks[0].table: \"logs-x\" is not"),
            "{err}"
        );
        let err = parse("sinks:\n  - {type: clickhouse, url: 'http://ch:8123', table: t, batch: {max_records: 0}}\n")
            .unwrap_err();
        assert_eq!(
            err,
            "forwarder.yaml: sinks[0].batch.max_records: must be at least 1"
        );
        let err =
            parse("sinks:\n  - {type: clickhouse, url: 'http://ch:8123', table: t, tabel: u}\n")
                .unwrap_err();
        assert!(err.contains("unknown field `tabel`"), "{err}");
        let err = parse("sinks:\n  - {type: clickhouse, url: 'http://ch:8123'}\n").unwrap_err();
        assert!(err.contains("table"), "{err}");
    }

    #[test]
    fn table_names_are_identifiers() {
        assert_eq!(qualified_table("logs", None).unwrap(), "logs");
        assert_eq!(qualified_table("db.logs", None).unwrap(), "db.logs");
        assert_eq!(qualified_table("logs", Some("db")).unwrap(), "db.logs");
        assert_eq!(qualified_table("_l2", Some("d_1")).unwrap(), "d_1._l2");
        for bad in [
            "",
            "2logs",
            "lo gs",
            "logs;DROP",
            "a.b.c",
            "db.",
            ".t",
            "lögs",
        ] {
            let e = qualified_table(bad, None).unwrap_err();
            assert_eq!(e.field, "table", "{bad}");
        }
        let e = qualified_table("db.logs", Some("db")).unwrap_err();
        assert_eq!(e.field, "database");
        let e = qualified_table("logs", Some("my-db")).unwrap_err();
        assert_eq!(e.field, "database");
        let url = insert_url("http://ch:8123", "db.logs").unwrap();
        assert_eq!(
            url.as_str(),
            "http://ch:8123/?query=INSERT+INTO+db.logs+FORMAT+JSONEachRow"
        );
        let url = insert_url("https://ch:8443/?insert_quorum=2", "t").unwrap();
        assert_eq!(
            url.as_str(),
            "https://ch:8443/?insert_quorum=2&query=INSERT+INTO+t+FORMAT+JSONEachRow"
        );
    }

    #[test]
    fn exceptions_are_read_and_schema_errors_name_the_column() {
        // As ClickHouse 18.16 answers (HTTP 500 or 400).
        let unknown = "HTTP 500: Code: 117, e.displayText() = DB::Exception: Unknown field found while parsing JSONEachRow format: stream: (at row 1)\n, e.what() = DB::Exception";
        let e = read_exception(unknown).unwrap();
        assert_eq!((e.code, e.schema), (117, true));
        assert_eq!(e.column.as_deref(), Some("stream"));
        assert!(e.text.starts_with("Unknown field found"), "{}", e.text);
        let parse = "Code: 27, e.displayText() = DB::Exception: Cannot parse input: expected \" before: abc\"}: (while read the value of key collected_at_ms): (at row 1)\n, e.what() = DB::Exception";
        let e = read_exception(parse).unwrap();
        assert_eq!((e.code, e.schema), (27, true));
        assert_eq!(e.column.as_deref(), Some("collected_at_ms"));
        let e = read_exception(
            "Code: 16. DB::Exception: No such column foo in table logs (version 23.8)",
        )
        .unwrap();
        assert_eq!(e.column.as_deref(), Some("foo"));
        let e = read_exception("Code: 60, e.displayText() = DB::Exception: Table default.logs doesn't exist., e.what() = DB::Exception").unwrap();
        assert_eq!((e.code, e.schema, e.column), (60, false, None));
        assert!(read_exception("<html>Bad Gateway</html>").is_none());
    }

    #[test]
    fn schema_errors_are_retried_and_plain_refusals_keep_the_shared_rules() {
        let mut p = InsertProtocol {
            url: Url::parse("http://ch:8123/").unwrap(),
            table: "logs".into(),
            metrics: SchemaMetrics::for_sink("ch-test"),
            sink: "ch-test".into(),
            last_logged: None,
        };
        let reply = p.review(
            Reply::Refused {
                status: 400,
                reason: "Code: 41, e.displayText() = DB::Exception: Cannot parse datetime: (while read the value of key collected_at): (at row 1)".into(),
            },
            1,
        );
        match reply {
            Reply::Unavailable { reason, .. } => assert!(
                reason.starts_with(
                    "table logs does not fit the rows: column collected_at: ClickHouse code 41"
                ),
                "{reason}"
            ),
            other => panic!("{other:?}"),
        }
        let counted = SCHEMA_ERRORS
            .get_or_create(&vec![
                ("sink".to_owned(), "ch-test".to_owned()),
                ("column".to_owned(), "collected_at".to_owned()),
            ])
            .get();
        assert_eq!(counted, 1);
        // Another exception (too many parts, memory): retried as it is.
        let reply = p.review(
            Reply::Unavailable {
                reason: "HTTP 500: Code: 252, e.displayText() = DB::Exception: Too many parts"
                    .into(),
                retry_after: None,
            },
            1,
        );
        assert!(
            matches!(reply, Reply::Unavailable { reason, .. } if reason.contains("Too many parts"))
        );
        // No ClickHouse text (a proxy's 413): the shared rules decide.
        let reply = p.review(
            Reply::Refused {
                status: 413,
                reason: "Request Entity Too Large".into(),
            },
            1,
        );
        assert!(matches!(reply, Reply::Refused { status: 413, .. }));
    }
}

//! The redis sink: every record `PUBLISH`ed to a channel (live subscribers) and/or appended
//! with `XADD` to a stream trimmed to an approximate length.
//!
//! A whole batch travels as one `EVAL` of a small Lua script that does the `XADD`s and
//! `PUBLISH`es in record order: one round trip and one answer per batch, so one
//! `response_timeout` bounds it, and redis applies the batch whole once it has received it.
//! `send` returns once redis answered with the batch's record count. Delivery is **at least
//! once**: when the answer is lost (connection cut, timeout, redis restarted after running the
//! script), the forwarder offers the same batch again and its records are added twice. Every
//! stream entry and every published message carries the record's `id`, so consumers drop what
//! they saw.
//!
//! Easy to get wrong: secrets. The password comes from a file or an environment variable and
//! the URL's userinfo is stripped before the URL appears in any log line or error.

use std::borrow::Cow;
use std::io::{self, Write as _};
use std::path::PathBuf;
use std::sync::LazyLock;
use std::time::{Duration, Instant};

use prometheus_client::registry::Registry;
use redis::{ConnectionLike as _, IntoConnectionInfo as _, Value as RedisValue};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tracing::{error, info, warn};

use super::batch_metrics::{BatchFamilies, BatchMetrics};
use super::{OutRecord, Sink, SinkError};
use crate::config::{FieldError, HumanDuration};

/// A redis sink in `forwarder.yaml` (`type: redis`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RedisSpec {
    /// Unique name (default `redis`).
    #[serde(default = "default_name")]
    pub name: String,
    /// `redis://host:port/db` or `rediss://…` for TLS. A password here works but is better
    /// kept in `password_file` or `password_env`; either way it is never logged.
    pub url: String,
    /// `PUBLISH` each record (its JSON) to this channel.
    #[serde(default)]
    pub channel: Option<String>,
    /// `XADD` each record to this stream, as the fields `id` and `record`.
    #[serde(default)]
    pub stream: Option<String>,
    /// Trim the stream to about this many entries (`MAXLEN ~`); 0 never trims
    /// (default 1,000,000).
    #[serde(default = "default_stream_max_len")]
    pub stream_max_len: u64,
    /// ACL user name (redis 6+); default the URL's, else `default`.
    #[serde(default)]
    pub username: Option<String>,
    /// A file whose content (trailing newline removed) is the password, e.g. a mounted Secret.
    #[serde(default)]
    pub password_file: Option<PathBuf>,
    /// An environment variable holding the password.
    #[serde(default)]
    pub password_env: Option<String>,
    /// PEM file of the CA that signed the server's certificate (`rediss://` only; default the
    /// system's roots).
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// Connecting may take this long, and so may each handshake step (AUTH, SELECT) after it
    /// (default 3 s: with both steps still below the forwarder's 8 s grace period).
    #[serde(default = "default_connect_timeout")]
    pub connect_timeout: HumanDuration,
    /// Writing a batch and reading every answer may each take this long (default 5 s).
    #[serde(default = "default_response_timeout")]
    pub response_timeout: HumanDuration,
}

fn default_name() -> String {
    "redis".into()
}
/// Large enough to hold hours of a busy pod's records for a consumer that fell behind, small
/// enough (about 1 GB at 1 KB per record) not to fill a typical redis.
fn default_stream_max_len() -> u64 {
    1_000_000
}
fn default_connect_timeout() -> HumanDuration {
    HumanDuration(Duration::from_secs(3))
}
/// Below the forwarder's default 8 s grace period, so a hung redis cannot hold shutdown.
fn default_response_timeout() -> HumanDuration {
    HumanDuration(Duration::from_secs(5))
}

impl RedisSpec {
    /// Checks values the types cannot; the error names the field (relative to the sink) and
    /// what is wrong. The password file is read and the variable looked up, so a missing
    /// secret stops the forwarder at start rather than at the first batch.
    ///
    /// # Errors
    /// `(field, message)` for the first unacceptable value.
    pub fn validate(&self) -> Result<(), FieldError> {
        if !(self.url.starts_with("redis://") || self.url.starts_with("rediss://")) {
            return Err(FieldError::new(
                "url",
                format!(
                    "{:?} must start with redis:// or rediss:// (TLS)",
                    redact_url(&self.url)
                ),
            ));
        }
        if self.url.as_str().into_connection_info().is_err() {
            return Err(FieldError::new(
                "url",
                format!(
                    "{:?} is not a valid redis URL (redis://host:port/db)",
                    redact_url(&self.url)
                ),
            ));
        }
        if self.channel.is_none() && self.stream.is_none() {
            return Err(FieldError::new(
                "channel",
                "set a channel, a stream or both (nothing would be sent)",
            ));
        }
        if self.channel.as_deref() == Some("") {
            return Err(FieldError::new("channel", "must not be empty"));
        }
        if self.stream.as_deref() == Some("") {
            return Err(FieldError::new("stream", "must not be empty"));
        }
        if self.ca_file.is_some() && !self.url.starts_with("rediss://") {
            return Err(FieldError::new("ca_file", "needs a rediss:// (TLS) url"));
        }
        if let Some(ca) = &self.ca_file {
            std::fs::metadata(ca).map_err(|e| {
                FieldError::new("ca_file", format!("cannot read {}: {e}", ca.display()))
            })?;
        }
        for (field, timeout) in [
            ("connect_timeout", self.connect_timeout),
            ("response_timeout", self.response_timeout),
        ] {
            if timeout.0 < Duration::from_millis(10) {
                return Err(FieldError::new(field, "must be at least 10ms"));
            }
        }
        self.read_password().map(|_| ())
    }

    /// The password from `password_file` or `password_env`, if one is configured.
    fn read_password(&self) -> Result<Option<String>, FieldError> {
        match (&self.password_file, &self.password_env) {
            (Some(_), Some(_)) => Err(FieldError::new(
                "password_env",
                "set password_file or password_env, not both",
            )),
            (Some(path), None) => std::fs::read_to_string(path)
                .map(|text| Some(text.trim_end_matches(['\r', '\n']).to_owned()))
                .map_err(|e| {
                    FieldError::new(
                        "password_file",
                        format!("cannot read {}: {e}", path.display()),
                    )
                }),
            (None, Some(var)) => std::env::var(var).map(Some).map_err(|_| {
                FieldError::new(
                    "password_env",
                    format!("environment variable {var} is not set (or not UTF-8)"),
                )
            }),
            (None, None) => Ok(None),
        }
    }
}

/// `url` without its userinfo (`redis://user:secret@host/0` → `redis://host/0`), for logs.
pub fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    match rest[..authority_end].rfind('@') {
        Some(at) => format!("{scheme}://{}", &rest[at + 1..]),
        None => url.to_owned(),
    }
}

/// What the sink counts; committed with the forwarder's position (see [`Sink::state`]) so the
/// totals survive restarts.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
struct RedisCounters {
    /// Records acknowledged by redis.
    records: u64,
    /// Record bytes (the JSON lines) acknowledged.
    bytes: u64,
    /// Batches acknowledged.
    batches: u64,
    /// Failed attempts (each retried).
    failures: u64,
    /// Connections made.
    connects: u64,
}

/// The redis sinks' metric families.
static METRICS: LazyLock<BatchFamilies> = LazyLock::new(|| BatchFamilies::new("redis"));

/// Registers the redis sinks' metrics in the forwarder's `registry` (once per registry).
pub fn register_metrics(registry: &mut Registry) {
    METRICS.register(registry, "Record bytes a redis sink delivered");
}

/// Publishes and appends records to redis.
pub struct RedisSink {
    spec: RedisSpec,
    /// The URL without userinfo, for logs and errors.
    target: String,
    client: redis::Client,
    connection: Option<redis::Connection>,
    /// The encoded commands of the current batch, reused between batches.
    buf: Vec<u8>,
    counters: RedisCounters,
    /// The previous attempt failed: say so when the next one succeeds.
    failing: bool,
    metrics: BatchMetrics,
}

impl RedisSink {
    /// Prepares the client; connecting waits for the first batch, so a redis that is down
    /// does not keep the forwarder (and its other sinks) from starting. `saved` restores the
    /// counters.
    ///
    /// # Errors
    /// When the password cannot be read or the client cannot be set up (bad URL, CA file).
    pub fn open(spec: RedisSpec, saved: Option<&Value>) -> Result<Self, SinkError> {
        let target = redact_url(&spec.url);
        let failure = |detail: String| setup_error(&spec.name, &target, detail);
        let password = spec.read_password().map_err(|e| failure(e.to_string()))?;
        let mut info = spec
            .url
            .as_str()
            .into_connection_info()
            .map_err(|e| failure(format!("url: {e}")))?;
        // redis-rs applies the connect timeout to each handshake command in turn; without the
        // CLIENT SETINFO pair only AUTH and SELECT remain, so a silent server costs at most
        // twice the timeout.
        let mut settings = info.redis_settings().clone().set_skip_set_lib_name();
        if let Some(user) = &spec.username {
            settings = settings.set_username(user);
        }
        if let Some(password) = password {
            settings = settings.set_password(password);
        }
        info = info.set_redis_settings(settings);
        let client = if spec.url.starts_with("rediss://") {
            // redis' rustls needs a process-wide provider; another sink may have installed
            // one already, which is just as good.
            let _ = rustls::crypto::ring::default_provider().install_default();
            let root_cert = match &spec.ca_file {
                Some(path) => Some(
                    std::fs::read(path)
                        .map_err(|e| failure(format!("ca_file {}: {e}", path.display())))?,
                ),
                None => None,
            };
            redis::Client::build_with_tls(
                info,
                redis::TlsCertificates {
                    client_tls: None,
                    root_cert,
                },
            )
        } else {
            redis::Client::open(info)
        }
        .map_err(|e| failure(format!("{e}")))?;
        let counters = saved
            .and_then(|v| serde_json::from_value(v.clone()).ok())
            .unwrap_or_default();
        Ok(Self {
            target,
            client,
            connection: None,
            buf: Vec::with_capacity(64 << 10),
            counters,
            failing: false,
            metrics: METRICS.for_sink(&spec.name),
            spec,
        })
    }

    /// The connection, made (with timeouts) when there is none.
    fn connection(&mut self) -> redis::RedisResult<&mut redis::Connection> {
        let connection = match self.connection.take() {
            Some(connection) => connection,
            None => {
                let connection = self
                    .client
                    .get_connection_with_timeout(self.spec.connect_timeout.0)?;
                connection.set_read_timeout(Some(self.spec.response_timeout.0))?;
                connection.set_write_timeout(Some(self.spec.response_timeout.0))?;
                self.counters.connects += 1;
                info!(sink = %self.spec.name, url = %self.target, "Connected to redis.");
                connection
            }
        };
        Ok(self.connection.insert(connection))
    }

    /// Sends the encoded batch and checks the answer: how many records the script took.
    fn round_trip(&mut self, records: usize) -> Result<(), RedisFailure> {
        let buf = std::mem::take(&mut self.buf);
        let result = self.connection().and_then(|c| c.req_packed_command(&buf));
        self.buf = buf;
        match result {
            Ok(RedisValue::Int(n)) if usize::try_from(n) == Ok(records) => Ok(()),
            Ok(RedisValue::ServerError(e)) => Err(RedisFailure::Server {
                code: e.code().to_owned(),
                answer: e.to_string(),
            }),
            Ok(other) => {
                self.connection = None;
                Err(RedisFailure::Answer(format!("{other:?}")))
            }
            Err(e) => {
                // The answer may still come: only a fresh connection is in a known state.
                self.connection = None;
                Err(RedisFailure::Connection(e))
            }
        }
    }
}

/// Why a batch was not acknowledged.
#[derive(Debug, thiserror::Error)]
enum RedisFailure {
    #[error("redis connection failed")]
    Connection(#[source] redis::RedisError),
    #[error("redis refused the batch: {answer}")]
    Server {
        /// The error's code, its first word (`WRONGTYPE`, `NOPERM`, `OOM`, …).
        code: String,
        /// The whole answer, for people.
        answer: String,
    },
    #[error("redis answered the batch with {0} instead of its record count")]
    Answer(String),
}

/// `e` and its causes, `: `-separated.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        text.push_str(": ");
        text.push_str(&c.to_string());
        cause = c.source();
    }
    text
}

fn setup_error(sink: &str, target: &str, detail: String) -> SinkError {
    SinkError::Io {
        sink: sink.to_owned(),
        path: PathBuf::from(target),
        source: io::Error::new(io::ErrorKind::InvalidInput, detail),
    }
}

impl RedisSink {
    /// Says why redis did not take a batch: an error for an answer only a change on the
    /// redis side or in the sink's settings cures, a warning otherwise. Both are retried:
    /// the records stay in the journal until redis takes them.
    fn report_failure(&self, failure: &RedisFailure) {
        let (sink, url, error) = (&self.spec.name, &self.target, error_chain(failure));
        match failure {
            RedisFailure::Server { code, .. } => match needs_fixing(code, &self.spec) {
                Some(fix) => {
                    error!(sink = %sink, url = %url, error = %error, fix = %fix, "Redis refuses the batch and will until this is fixed; retrying it with backoff meanwhile (no record is dropped; the pipeline backs up).");
                }
                None => {
                    warn!(sink = %sink, url = %url, error = %error, "Redis did not take the batch; retrying it (records redis already took are sent again).");
                }
            },
            _ => {
                warn!(sink = %sink, url = %url, error = %error, "Redis did not take the batch; reconnecting and retrying it (records redis already took are sent again).");
            }
        }
    }
}

/// What an operator must change when redis answers with an error that retrying cannot cure
/// (the key's type, the ACL, the password); `None` for a passing condition (OOM, LOADING,
/// BUSY, READONLY during a failover, ...).
fn needs_fixing(code: &str, spec: &RedisSpec) -> Option<String> {
    let stream = spec.stream.as_deref().unwrap_or("");
    match code {
        "WRONGTYPE" => Some(format!("the key {stream:?} holds a value that is not a stream: delete or rename it, or point `stream:` at another key")),
        "NOPERM" => Some("the redis user may not run EVAL, XADD or PUBLISH on this key or channel: grant them in its ACL".into()),
        "NOAUTH" | "WRONGPASS" => Some("redis wants a (different) password: check password_file / password_env or the URL's user".into()),
        _ => None,
    }
}

impl Sink for RedisSink {
    fn name(&self) -> &str {
        &self.spec.name
    }

    fn send(&mut self, batch: &[OutRecord<'_>]) -> Result<(), SinkError> {
        if batch.is_empty() {
            return Ok(());
        }
        self.buf.clear();
        encode_batch(&mut self.buf, &self.spec, batch);
        let started = Instant::now();
        let reused = self.connection.is_some();
        let mut result = self.round_trip(batch.len());
        if reused
            && matches!(&result, Err(RedisFailure::Connection(e)) if e.is_connection_dropped() && !e.is_timeout())
        {
            // Redis closed an idle connection (its `timeout`, a restart, a proxy): the batch
            // never ran, so send it on a new one now instead of after a backoff and a warning.
            result = self.round_trip(batch.len());
        }
        match result {
            Ok(()) => {
                if std::mem::replace(&mut self.failing, false) {
                    info!(sink = %self.spec.name, url = %self.target, "Redis accepts batches again.");
                }
                let bytes = batch.iter().map(|r| r.raw.len() as u64).sum::<u64>();
                self.counters.records += batch.len() as u64;
                self.counters.bytes += bytes;
                self.counters.batches += 1;
                self.metrics.records.inc_by(batch.len() as u64);
                self.metrics.bytes.inc_by(bytes);
                self.metrics.batches.inc();
                self.metrics
                    .duration
                    .observe(started.elapsed().as_secs_f64());
                Ok(())
            }
            Err(e) => {
                if !std::mem::replace(&mut self.failing, true) {
                    // The forwarder logs every retry; the cause is said here, once per outage.
                    self.report_failure(&e);
                }
                self.counters.failures += 1;
                self.metrics.failures.inc();
                Err(SinkError::Io {
                    sink: self.spec.name.clone(),
                    path: PathBuf::from(&self.target),
                    source: io::Error::other(e),
                })
            }
        }
    }

    fn state(&self) -> Value {
        serde_json::to_value(&self.counters).expect("counters serialise")
    }

    fn close(&mut self) {
        if self.connection.take().is_some() {
            info!(sink = %self.spec.name, records = self.counters.records, "Redis connection closed.");
        }
    }
}

/// Only the id, borrowed; every other field is skipped.
#[derive(Deserialize)]
struct RecordId<'a> {
    #[serde(borrow, default)]
    id: Option<Cow<'a, str>>,
}

/// The record's `id` (empty when the line is not a JSON object with one).
fn record_id(raw: &[u8]) -> Cow<'_, str> {
    serde_json::from_slice::<RecordId<'_>>(raw)
        .ok()
        .and_then(|r| r.id)
        .unwrap_or_default()
}

/// The batch as one server-side step: a Lua script over the records. One command means one
/// answer, so one `response_timeout` bounds the whole batch (pipelined commands are read one
/// answer at a time, each with its own timeout, so a silent server would hold a batch of N
/// records for N timeouts). Redis runs a script whole once it has all of it.
/// KEYS: the stream, if any. ARGV: MAXLEN (`0`: no trim), the channel (empty: none), then an
/// id and a record per record.
const BATCH_SCRIPT: &str = "local maxlen, channel = ARGV[1], ARGV[2]
for i = 3, #ARGV, 2 do
  if KEYS[1] then
    if maxlen == '0' then
      redis.call('XADD', KEYS[1], '*', 'id', ARGV[i], 'record', ARGV[i + 1])
    else
      redis.call('XADD', KEYS[1], 'MAXLEN', '~', maxlen, '*', 'id', ARGV[i], 'record', ARGV[i + 1])
    end
  end
  if channel ~= '' then
    redis.call('PUBLISH', channel, ARGV[i + 1])
  end
end
return (#ARGV - 2) / 2
";

/// Appends to `buf` the one `EVAL` command that delivers `batch` (no allocation per record
/// once `buf` has grown).
fn encode_batch(buf: &mut Vec<u8>, spec: &RedisSpec, batch: &[OutRecord<'_>]) {
    let keys = usize::from(spec.stream.is_some());
    // EVAL, the script, numkeys, the keys, MAXLEN, the channel, then two per record.
    let args = 3 + keys + 2 + 2 * batch.len();
    // Writing to a Vec cannot fail.
    let _ = write!(buf, "*{args}\r\n");
    write_bulk(buf, b"EVAL");
    write_bulk(buf, BATCH_SCRIPT.as_bytes());
    write_bulk(buf, itoa_buf(keys as u64).as_str().as_bytes());
    if let Some(stream) = &spec.stream {
        write_bulk(buf, stream.as_bytes());
    }
    write_bulk(buf, itoa_buf(spec.stream_max_len).as_str().as_bytes());
    write_bulk(buf, spec.channel.as_deref().unwrap_or("").as_bytes());
    for record in batch {
        // Only the stream stores the id apart; a published message carries it in the JSON.
        let id = match spec.stream {
            Some(_) => record_id(record.raw),
            None => Cow::Borrowed(""),
        };
        write_bulk(buf, id.as_bytes());
        write_bulk(buf, record.raw);
    }
}

/// A small stack buffer holding a number's decimal digits.
struct Digits {
    bytes: [u8; 20],
    start: usize,
}

impl Digits {
    fn as_str(&self) -> &str {
        std::str::from_utf8(&self.bytes[self.start..]).expect("digits are ASCII")
    }
}

fn itoa_buf(mut n: u64) -> Digits {
    let mut d = Digits {
        bytes: [0; 20],
        start: 20,
    };
    loop {
        d.start -= 1;
        d.bytes[d.start] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            return d;
        }
    }
}

/// One RESP bulk string: `$len\r\n` the bytes `\r\n`.
fn write_bulk(buf: &mut Vec<u8>, arg: &[u8]) {
    let _ = write!(buf, "${}\r\n", arg.len());
    buf.extend_from_slice(arg);
    buf.extend_from_slice(b"\r\n");
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(yaml: &str) -> RedisSpec {
        serde_saphyr::from_str(yaml).unwrap()
    }

    #[test]
    fn urls_lose_their_userinfo_when_logged() {
        assert_eq!(
            redact_url("redis://user:s3cret@cache:6379/0"),
            "redis://cache:6379/0"
        );
        assert_eq!(redact_url("rediss://:p@ss@cache"), "rediss://cache");
        assert_eq!(redact_url("redis://cache:6379"), "redis://cache:6379");
        assert_eq!(
            redact_url("redis://cache/0?user=x@y"),
            "redis://cache/0?user=x@y"
        );
    }

    /// The RESP bulk strings of one command, parsed back.
    fn parse_command(buf: &[u8]) -> Vec<String> {
        let text = std::str::from_utf8(buf).unwrap();
        let (count, mut rest) = text[1..].split_once("\r\n").unwrap();
        let mut args = Vec::new();
        for _ in 0..count.parse::<usize>().unwrap() {
            let (len, after) = rest[1..].split_once("\r\n").unwrap();
            let len: usize = len.parse().unwrap();
            args.push(after[..len].to_owned());
            assert_eq!(&after[len..len + 2], "\r\n");
            rest = &after[len + 2..];
        }
        assert!(rest.is_empty(), "trailing bytes: {rest:?}");
        args
    }

    #[test]
    fn answers_no_retry_cures_name_the_fix() {
        let spec = spec("url: redis://127.0.0.1/\nstream: logs\n");
        // The code is the answer's first word, as redis' error type gives it.
        let fix = |answer: &str| needs_fixing(answer.split(' ').next().unwrap_or(""), &spec);
        assert!(
            fix("WRONGTYPE Operation against a key holding the wrong kind of value")
                .is_some_and(|f| f.contains("\"logs\" holds a value that is not a stream"))
        );
        assert!(
            fix("NOPERM User log has no permissions to run the 'xadd' command")
                .is_some_and(|f| f.contains("ACL"))
        );
        assert!(fix("WRONGPASS invalid username-password pair").is_some());
        for passing in [
            "OOM command not allowed when used memory > 'maxmemory'",
            "LOADING Redis is loading the dataset in memory",
            "BUSY Redis is busy running a script",
            "READONLY You can't write against a read only replica.",
        ] {
            assert_eq!(fix(passing), None, "{passing}");
        }
    }

    #[test]
    fn a_batch_is_one_eval_command() {
        let raw = r#"{"id":"00ab-7","message":"hi"}"#;
        let records = [
            OutRecord::decode(raw.as_bytes()),
            OutRecord::decode(b"not json"),
        ];
        let mut buf = Vec::new();
        let s = spec("url: redis://h\nchannel: live\nstream: logs\nstream_max_len: 500\n");
        encode_batch(&mut buf, &s, &records);
        let args = parse_command(&buf);
        assert_eq!(args[0], "EVAL");
        assert_eq!(args[1], BATCH_SCRIPT);
        assert_eq!(
            &args[2..],
            ["1", "logs", "500", "live", "00ab-7", raw, "", "not json"]
        );
        buf.clear();
        let s = spec("url: redis://h\nchannel: live\n");
        encode_batch(&mut buf, &s, &records[..1]);
        assert_eq!(&parse_command(&buf)[2..], ["0", "1000000", "live", "", raw]);
        assert_eq!(itoa_buf(0).as_str(), "0");
        assert_eq!(itoa_buf(u64::MAX).as_str(), u64::MAX.to_string());
    }

    #[test]
    fn validation_names_the_field() {
        let err = |yaml: &str| spec(yaml).validate().unwrap_err();
        assert_eq!(err("url: http://h\nchannel: c\n").field, "url");
        let FieldError { field, message } =
            err("url: redis://u:topsecret@h:notaport\nchannel: c\n");
        assert_eq!(field, "url");
        assert!(!message.contains("topsecret"), "{message}");
        assert_eq!(err("url: redis://h\n").field, "channel");
        assert_eq!(err("url: redis://h\nstream: ''\n").field, "stream");
        assert_eq!(
            err("url: redis://h\nstream: s\nca_file: /x\n").field,
            "ca_file"
        );
        assert_eq!(
            err("url: redis://h\nstream: s\nresponse_timeout: 1ms\n").field,
            "response_timeout"
        );
        let FieldError { field, message } =
            err("url: redis://h\nstream: s\npassword_file: /nonexistent/pw\n");
        assert_eq!(field, "password_file");
        assert!(message.contains("/nonexistent/pw"), "{message}");
        let FieldError { field, message } =
            err("url: redis://h\nstream: s\npassword_env: LOG_SIDECARS_TEST_UNSET_VAR\n");
        assert_eq!(field, "password_env");
        assert!(message.contains("LOG_SIDECARS_TEST_UNSET_VAR"), "{message}");
        assert_eq!(
            err("url: redis://h\nstream: s\npassword_env: A\npassword_file: /b\n").field,
            "password_env"
        );
        assert!(serde_saphyr::from_str::<RedisSpec>("url: redis://h\nchanel: c\n").is_err());
        spec("url: rediss://h:6380/2\nchannel: c\n")
            .validate()
            .unwrap();
    }

    #[test]
    fn forwarder_yaml_errors_name_the_sink_and_field() {
        let path = std::path::Path::new("forwarder.yaml");
        let load = |text: &str| -> Result<super::super::ForwarderFile, crate::config::ConfigError> {
            let file: super::super::ForwarderFile = crate::config::parse_text(text, path)?;
            file.validate(path)?;
            Ok(file)
        };
        let err = load("sinks:\n  - {type: syslog, address: 'h:514'}\n  - {type: redis, url: 'redis://h', stream: ''}\n")
            .unwrap_err()
            .to_string();
        assert_eq!(err, "forwarder.yaml: sinks[1].stream: must not be empty");
        let err = load("sinks:\n  - {type: redis, url: 'redis://h', stream: s, chanel: c}\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("chanel"), "{err}");
        let err = load("sinks:\n  - {type: redis, url: 'redis://h', stream: s}\n  - {type: syslog, name: redis, address: 'h:1'}\n")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("sinks[1].name: \"redis\" is used twice"),
            "{err}"
        );
        let file = load("sinks:\n  - {type: redis, url: 'redis://h', channel: logs}\n  - {type: syslog, address: 'h:514', transport: udp}\n").unwrap();
        assert_eq!(file.sinks.len(), 2);
    }

    #[test]
    fn the_password_file_is_read_without_its_newline() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("pw");
        std::fs::write(&path, "hunter2\n").unwrap();
        let s = spec(&format!(
            "url: redis://h\nstream: s\npassword_file: {}\n",
            path.display()
        ));
        assert_eq!(s.read_password().unwrap().as_deref(), Some("hunter2"));
        let sink = RedisSink::open(s, None).unwrap();
        assert_eq!(
            sink.client
                .get_connection_info()
                .redis_settings()
                .password(),
            Some("hunter2")
        );
    }

    #[test]
    fn a_redis_that_never_answers_fails_the_batch_within_the_timeouts() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let held = std::thread::spawn(move || listener.accept().map(|(s, _)| s));
        let s = spec(&format!(
            "url: redis://127.0.0.1:{port}\nstream: s\nconnect_timeout: 300ms\nresponse_timeout: 300ms\n"
        ));
        let mut sink = RedisSink::open(s, None).unwrap();
        let started = std::time::Instant::now();
        let raw = br#"{"id":"a-1"}"#;
        let batch: Vec<OutRecord<'_>> = (0..50).map(|_| OutRecord::decode(raw)).collect();
        let err = sink.send(&batch);
        let err = err.unwrap_err();
        let chain = error_chain(std::error::Error::source(&err).unwrap());
        assert!(
            chain.contains("timed out") || chain.contains("temporarily"),
            "{chain}"
        );
        // No handshake step is sent for db 0 without a password, and the batch is one command:
        // one timeout, not one per record.
        assert!(
            started.elapsed() < Duration::from_millis(550),
            "{:?}",
            started.elapsed()
        );
        drop(held);
    }

    /// Stands in for redis: answers each EVAL with the record count it names, then closes
    /// the connection after the first batch, as redis does with an idle client (`timeout`).
    #[test]
    fn a_connection_closed_while_idle_is_replaced_without_a_failure() {
        use std::io::{BufRead as _, BufReader};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let server = std::thread::spawn(move || {
            for _ in 0..2 {
                let (stream, _) = listener.accept().unwrap();
                let mut reader = BufReader::new(stream.try_clone().unwrap());
                let mut line = String::new();
                reader.read_line(&mut line).unwrap();
                let args: usize = line.trim()[1..].parse().unwrap();
                let mut last = String::new();
                for _ in 0..args {
                    let mut len = String::new();
                    reader.read_line(&mut len).unwrap();
                    let len: usize = len.trim()[1..].parse().unwrap();
                    let mut arg = vec![0; len + 2];
                    std::io::Read::read_exact(&mut reader, &mut arg).unwrap();
                    last = String::from_utf8_lossy(&arg[..len]).into_owned();
                }
                assert_eq!(last, r#"{"id":"a-1"}"#);
                (&stream)
                    .write_all(format!(":{}\r\n", (args - 6) / 2).as_bytes())
                    .unwrap();
            }
        });
        let s = spec(&format!("url: redis://127.0.0.1:{port}\nstream: s\n"));
        let mut sink = RedisSink::open(s, None).unwrap();
        let raw = br#"{"id":"a-1"}"#;
        sink.send(&[OutRecord::decode(raw)]).unwrap();
        std::thread::sleep(Duration::from_millis(100));
        sink.send(&[OutRecord::decode(raw), OutRecord::decode(raw)])
            .unwrap();
        server.join().unwrap();
        let state = sink.state();
        assert_eq!(
            (
                state["records"].as_u64(),
                state["failures"].as_u64(),
                state["connects"].as_u64()
            ),
            (Some(3), Some(0), Some(2))
        );
    }

    #[test]
    fn a_redis_that_is_down_fails_the_batch_and_counts_it() {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let s = spec(&format!(
            "url: redis://u:topsecret@127.0.0.1:{port}\nstream: s\nconnect_timeout: 1s\nname: down\n"
        ));
        let mut sink = RedisSink::open(s, None).unwrap();
        let raw = br#"{"id":"a-1"}"#;
        let err = sink.send(&[OutRecord::decode(raw)]).unwrap_err();
        let text = format!("{err}");
        assert!(
            text.contains(&format!("redis://127.0.0.1:{port}")),
            "{text}"
        );
        assert!(!text.contains("topsecret"), "{text}");
        assert_eq!(sink.state()["failures"], 1);
        assert_eq!(sink.state()["records"], 0);
        let mut registry = Registry::default();
        register_metrics(&mut registry);
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
        assert!(
            text.contains("forwarder_redis_failures_total{sink=\"down\"} 1"),
            "{text}"
        );
    }
}

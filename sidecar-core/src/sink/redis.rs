//! The redis sink: every record `PUBLISH`ed to a channel (live subscribers) and/or appended
//! with `XADD` to a stream trimmed to an approximate length.
//!
//! A whole batch is encoded into one buffer of pipelined commands and sent in one round trip;
//! `send` returns once redis answered every command. Delivery is **at least once**: when a
//! batch fails part way (connection lost, timeout, redis restarted), the forwarder offers the
//! same batch again and the commands redis had already executed run twice. Every stream entry
//! and every published message carries the record's `id`, so consumers drop what they saw.
//!
//! Easy to get wrong: secrets. The password comes from a file or an environment variable and
//! the URL's userinfo is stripped before the URL appears in any log line or error.

use std::borrow::Cow;
use std::io::{self, Write as _};
use std::path::PathBuf;
use std::time::Duration;

use redis::{ConnectionLike as _, IntoConnectionInfo as _, Value as RedisValue};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tracing::{info, warn};

use super::{OutRecord, Sink, SinkError};
use crate::config::HumanDuration;

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
    /// Connecting, TLS and AUTH included, may take this long (default 5 s).
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
    HumanDuration(Duration::from_secs(5))
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
    pub fn validate(&self) -> Result<(), (&'static str, String)> {
        if !(self.url.starts_with("redis://") || self.url.starts_with("rediss://")) {
            return Err((
                "url",
                format!(
                    "{:?} must start with redis:// or rediss:// (TLS)",
                    redact_url(&self.url)
                ),
            ));
        }
        if self.url.as_str().into_connection_info().is_err() {
            return Err((
                "url",
                format!(
                    "{:?} is not a valid redis URL (redis://host:port/db)",
                    redact_url(&self.url)
                ),
            ));
        }
        if self.channel.is_none() && self.stream.is_none() {
            return Err((
                "channel",
                "set a channel, a stream or both (nothing would be sent)".into(),
            ));
        }
        if self.channel.as_deref() == Some("") {
            return Err(("channel", "must not be empty".into()));
        }
        if self.stream.as_deref() == Some("") {
            return Err(("stream", "must not be empty".into()));
        }
        if self.ca_file.is_some() && !self.url.starts_with("rediss://") {
            return Err(("ca_file", "needs a rediss:// (TLS) url".into()));
        }
        if let Some(ca) = &self.ca_file {
            std::fs::metadata(ca)
                .map_err(|e| ("ca_file", format!("cannot read {}: {e}", ca.display())))?;
        }
        for (field, timeout) in [
            ("connect_timeout", self.connect_timeout),
            ("response_timeout", self.response_timeout),
        ] {
            if timeout.0 < Duration::from_millis(10) {
                return Err((field, "must be at least 10ms".into()));
            }
        }
        self.read_password().map(|_| ())
    }

    /// The password from `password_file` or `password_env`, if one is configured.
    fn read_password(&self) -> Result<Option<String>, (&'static str, String)> {
        match (&self.password_file, &self.password_env) {
            (Some(_), Some(_)) => Err((
                "password_env",
                "set password_file or password_env, not both".into(),
            )),
            (Some(path), None) => std::fs::read_to_string(path)
                .map(|text| Some(text.trim_end_matches(['\r', '\n']).to_owned()))
                .map_err(|e| {
                    (
                        "password_file",
                        format!("cannot read {}: {e}", path.display()),
                    )
                }),
            (None, Some(var)) => std::env::var(var).map(Some).map_err(|_| {
                (
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
        let password = spec
            .read_password()
            .map_err(|(field, e)| failure(format!("{field}: {e}")))?;
        let mut info = spec
            .url
            .as_str()
            .into_connection_info()
            .map_err(|e| failure(format!("url: {e}")))?;
        let mut settings = info.redis_settings().clone();
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
            spec,
            target,
            client,
            connection: None,
            buf: Vec::with_capacity(64 << 10),
            counters,
            failing: false,
        })
    }

    /// The connection, made (with timeouts) when there is none.
    fn connection(&mut self) -> redis::RedisResult<&mut redis::Connection> {
        if self.connection.is_none() {
            let connection = self
                .client
                .get_connection_with_timeout(self.spec.connect_timeout.0)?;
            connection.set_read_timeout(Some(self.spec.response_timeout.0))?;
            connection.set_write_timeout(Some(self.spec.response_timeout.0))?;
            self.counters.connects += 1;
            info!(sink = %self.spec.name, url = %self.target, "Connected to redis.");
            self.connection = Some(connection);
        }
        Ok(self
            .connection
            .as_mut()
            .expect("a connection was stored just above"))
    }

    /// Sends the encoded batch and checks every answer.
    fn round_trip(&mut self, commands: usize) -> Result<(), RedisFailure> {
        let buf = std::mem::take(&mut self.buf);
        let result = self
            .connection()
            .and_then(|c| c.req_packed_commands(&buf, 0, commands));
        self.buf = buf;
        let answers = match result {
            Ok(answers) => answers,
            Err(e) => {
                // The stream may be mid-answer: only a fresh connection is in a known state.
                self.connection = None;
                return Err(RedisFailure::Connection(e));
            }
        };
        if answers.len() != commands {
            self.connection = None;
            return Err(RedisFailure::Answers {
                expected: commands,
                got: answers.len(),
            });
        }
        match answers.into_iter().find_map(|a| match a {
            RedisValue::ServerError(e) => Some(e),
            _ => None,
        }) {
            Some(e) => Err(RedisFailure::Server(e.to_string())),
            None => Ok(()),
        }
    }
}

/// Why a batch was not acknowledged.
#[derive(Debug, thiserror::Error)]
enum RedisFailure {
    #[error("redis connection failed")]
    Connection(#[source] redis::RedisError),
    #[error("redis refused a command: {0}")]
    Server(String),
    #[error("redis answered {got} of {expected} commands")]
    Answers { expected: usize, got: usize },
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

impl Sink for RedisSink {
    fn name(&self) -> &str {
        &self.spec.name
    }

    fn send(&mut self, batch: &[OutRecord<'_>]) -> Result<(), SinkError> {
        if batch.is_empty() {
            return Ok(());
        }
        self.buf.clear();
        let commands = encode_batch(&mut self.buf, &self.spec, batch);
        match self.round_trip(commands) {
            Ok(()) => {
                if std::mem::replace(&mut self.failing, false) {
                    info!(sink = %self.spec.name, url = %self.target, "Redis accepts batches again.");
                }
                self.counters.records += batch.len() as u64;
                self.counters.bytes += batch.iter().map(|r| r.raw.len() as u64).sum::<u64>();
                self.counters.batches += 1;
                Ok(())
            }
            Err(e) => {
                if !std::mem::replace(&mut self.failing, true) {
                    // The forwarder logs every retry; the cause is said here, once per outage.
                    warn!(sink = %self.spec.name, url = %self.target, error = %error_chain(&e), "Redis did not take the batch; reconnecting and retrying it (records redis already took are sent again).");
                }
                self.counters.failures += 1;
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

/// Appends the RESP commands for `batch` to `buf` (no allocation per record once `buf` has
/// grown); returns how many commands.
fn encode_batch(buf: &mut Vec<u8>, spec: &RedisSpec, batch: &[OutRecord<'_>]) -> usize {
    let mut commands = 0;
    for record in batch {
        if let Some(stream) = &spec.stream {
            let id = record_id(record.raw);
            let id = id.as_bytes();
            if spec.stream_max_len > 0 {
                let len = itoa_buf(spec.stream_max_len);
                let len = len.as_str();
                let args: [&[u8]; 10] = [
                    b"XADD",
                    stream.as_bytes(),
                    b"MAXLEN",
                    b"~",
                    len.as_bytes(),
                    b"*",
                    b"id",
                    id,
                    b"record",
                    record.raw,
                ];
                write_command(buf, &args);
            } else {
                let args: [&[u8]; 7] = [
                    b"XADD",
                    stream.as_bytes(),
                    b"*",
                    b"id",
                    id,
                    b"record",
                    record.raw,
                ];
                write_command(buf, &args);
            }
            commands += 1;
        }
        if let Some(channel) = &spec.channel {
            write_command(buf, &[b"PUBLISH", channel.as_bytes(), record.raw]);
            commands += 1;
        }
    }
    commands
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

/// One command as a RESP array of bulk strings: `*N\r\n` then `$len\r\narg\r\n` per argument.
fn write_command(buf: &mut Vec<u8>, args: &[&[u8]]) {
    // Writing to a Vec cannot fail.
    let _ = write!(buf, "*{}\r\n", args.len());
    for arg in args {
        let _ = write!(buf, "${}\r\n", arg.len());
        buf.extend_from_slice(arg);
        buf.extend_from_slice(b"\r\n");
    }
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

    #[test]
    fn a_batch_is_one_buffer_of_pipelined_commands() {
        let raw = br#"{"id":"00ab-7","message":"hi"}"#;
        let records = [OutRecord::decode(raw)];
        let mut buf = Vec::new();
        let s = spec("url: redis://h\nchannel: live\nstream: logs\nstream_max_len: 500\n");
        assert_eq!(encode_batch(&mut buf, &s, &records), 2);
        let expected = format!(
            "*10\r\n$4\r\nXADD\r\n$4\r\nlogs\r\n$6\r\nMAXLEN\r\n$1\r\n~\r\n$3\r\n500\r\n$1\r\n*\r\n$2\r\nid\r\n$6\r\n00ab-7\r\n$6\r\nrecord\r\n${}\r\n{}\r\n*3\r\n$7\r\nPUBLISH\r\n$4\r\nlive\r\n${}\r\n{}\r\n",
            raw.len(),
            std::str::from_utf8(raw).unwrap(),
            raw.len(),
            std::str::from_utf8(raw).unwrap()
        );
        assert_eq!(String::from_utf8(buf).unwrap(), expected);
    }

    #[test]
    fn an_untrimmed_stream_and_a_line_without_id() {
        let records = [OutRecord::decode(b"not json")];
        let mut buf = Vec::new();
        let s = spec("url: redis://h\nstream: logs\nstream_max_len: 0\n");
        assert_eq!(encode_batch(&mut buf, &s, &records), 1);
        assert_eq!(
            String::from_utf8(buf).unwrap(),
            "*7\r\n$4\r\nXADD\r\n$4\r\nlogs\r\n$1\r\n*\r\n$2\r\nid\r\n$0\r\n\r\n$6\r\nrecord\r\n$8\r\nnot json\r\n"
        );
        assert_eq!(itoa_buf(0).as_str(), "0");
        assert_eq!(itoa_buf(u64::MAX).as_str(), u64::MAX.to_string());
    }

    #[test]
    fn validation_names_the_field() {
        let err = |yaml: &str| spec(yaml).validate().unwrap_err();
        assert_eq!(err("url: http://h\nchannel: c\n").0, "url");
        let (field, message) = err("url: redis://u:topsecret@h:notaport\nchannel: c\n");
        assert_eq!(field, "url");
        assert!(!message.contains("topsecret"), "{message}");
        assert_eq!(err("url: redis://h\n").0, "channel");
        assert_eq!(err("url: redis://h\nstream: ''\n").0, "stream");
        assert_eq!(err("url: redis://h\nstream: s\nca_file: /x\n").0, "ca_file");
        assert_eq!(
            err("url: redis://h\nstream: s\nresponse_timeout: 1ms\n").0,
            "response_timeout"
        );
        let (field, message) = err("url: redis://h\nstream: s\npassword_file: /nonexistent/pw\n");
        assert_eq!(field, "password_file");
        assert!(message.contains("/nonexistent/pw"), "{message}");
        let (field, message) =
            err("url: redis://h\nstream: s\npassword_env: LOG_SIDECARS_TEST_UNSET_VAR\n");
        assert_eq!(field, "password_env");
        assert!(message.contains("LOG_SIDECARS_TEST_UNSET_VAR"), "{message}");
        assert_eq!(
            err("url: redis://h\nstream: s\npassword_env: A\npassword_file: /b\n").0,
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
    fn a_redis_that_is_down_fails_the_batch_and_counts_it() {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let s = spec(&format!(
            "url: redis://u:topsecret@127.0.0.1:{port}\nstream: s\nconnect_timeout: 1s\n"
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
    }
}

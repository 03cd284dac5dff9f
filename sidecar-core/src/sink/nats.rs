//! The nats sink: every record published to a JetStream stream with the header
//! `Nats-Msg-Id` = the record's `id`, so the stream's duplicate window turns the forwarder's
//! retries (and its re-sends after a crash) into exactly-once storage.
//!
//! A batch is published without waiting for each ack (at most `max_in_flight` acks pending),
//! then every ack is awaited; `send` returns once JetStream acknowledged every record (a
//! duplicate ack counts: the stream holds the record). Records whose ack failed or did not
//! come in time are owed and re-published, alone, when the forwarder offers the batch again.
//! A record the server refuses for good (larger than the server's or the stream's maximum
//! message size) goes to the dead-letter journal.
//!
//! Easy to get wrong: the duplicate window is the horizon of exactly-once. A record re-sent
//! after the stream's `duplicate_window` has passed since its first publish is stored twice;
//! the window must outlast the longest outage the forwarder is expected to retry through.
//! The other: the stream is the operators'. The sink checks that it exists and captures the
//! subjects, and never creates or changes it (a sidecar in every pod creating streams would
//! race over replicas, limits and retention that belong to whoever runs the cluster).

mod subject;

use std::collections::VecDeque;
use std::future::IntoFuture as _;
use std::path::PathBuf;
use std::str::FromStr as _;
use std::sync::{Arc, LazyLock};
use std::time::{Duration, Instant};

use async_nats::jetstream::{self, message::PublishMessage};
use async_nats::{Auth, AuthError, ConnectOptions, ServerAddr};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;
use serde::Deserialize;
use serde_json::Value;
use tracing::{error, info, warn};

use super::batch_metrics::{BatchFamilies, BatchMetrics};
use super::dead_letter::{DeadLetter, DeadLetterSpec};
use super::network::{RetrySpec, TlsSpec};
use super::owed::Owed;
use super::runtime::CLIENT_RUNTIME;
use super::{OutRecord, Sink, SinkError};
use crate::backoff::Backoff;
use crate::config::{FieldError, HumanDuration};
use crate::signal::CancellationToken;

pub use subject::{Coverage, SubjectTemplate};

/// A nats sink in `forwarder.yaml` (`type: nats`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NatsSpec {
    /// Unique name (default `nats`).
    #[serde(default = "default_name")]
    pub name: String,
    /// The servers: `nats://host:port` (or `tls://host:port`), one, several comma-separated,
    /// or a list. The client also learns the cluster's other servers from them.
    pub url: Servers,
    /// The JetStream stream that must capture the subjects. It must exist: the sink never
    /// creates one.
    pub stream: String,
    /// The subject of each record, with `{field}` placeholders for record fields (default
    /// `logs`). See [`SubjectTemplate`] for how values become subject tokens.
    #[serde(default = "default_subject")]
    pub subject: String,
    /// A file holding the token (trailing newline ignored), re-read at each connect.
    #[serde(default)]
    pub token_file: Option<PathBuf>,
    /// The user name, with `password_file`.
    #[serde(default)]
    pub user: Option<String>,
    /// A file holding `user`'s password, re-read at each connect.
    #[serde(default)]
    pub password_file: Option<PathBuf>,
    /// A NATS credentials file (user JWT and NKey seed), re-read at each connect.
    #[serde(default)]
    pub creds_file: Option<PathBuf>,
    /// TLS files; any of them (or a `tls://` URL) makes TLS required.
    #[serde(default)]
    pub tls: TlsSpec,
    /// Connecting to a server may take this long (default 3 s).
    #[serde(default = "default_connect_timeout")]
    pub connect_timeout: HumanDuration,
    /// JetStream's ack of a publish may take this long before the record is owed again
    /// (default 5 s).
    #[serde(default = "default_ack_timeout")]
    pub ack_timeout: HumanDuration,
    /// Publishes whose ack is still pending, at most (default 256).
    #[serde(default = "default_max_in_flight")]
    pub max_in_flight: usize,
    /// The pace of retries (`initial_backoff`, `max_backoff`); they never give up.
    #[serde(default)]
    pub retry: RetrySpec,
}

/// `url:` as one string (servers comma-separated) or a list.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum Servers {
    /// `nats://a:4222,nats://b:4222`.
    One(String),
    /// `[nats://a:4222, nats://b:4222]`.
    List(Vec<String>),
}

impl Servers {
    /// Each server URL, trimmed.
    pub fn urls(&self) -> Vec<&str> {
        match self {
            Servers::One(s) => s.split(',').map(str::trim).collect(),
            Servers::List(list) => list.iter().map(|s| s.trim()).collect(),
        }
    }
}

fn default_name() -> String {
    "nats".into()
}
fn default_subject() -> String {
    "logs".into()
}
fn default_connect_timeout() -> HumanDuration {
    HumanDuration(Duration::from_secs(3))
}
/// Below the forwarder's default 8 s grace period, so a silent server cannot hold shutdown.
fn default_ack_timeout() -> HumanDuration {
    HumanDuration(Duration::from_secs(5))
}
/// Enough to keep a loopback-to-regional round trip busy at tens of thousands of records a
/// second, small enough that a batch owed after an outage stays a few hundred KB in flight.
fn default_max_in_flight() -> usize {
    256
}

impl NatsSpec {
    /// Checks values the types cannot; the error names the field relative to the sink.
    /// Secret and certificate files are read now, so a missing one stops the forwarder at
    /// start rather than at the first connect.
    ///
    /// # Errors
    /// The first unacceptable value.
    pub fn validate(&self) -> Result<(), FieldError> {
        self.servers()?;
        if self.stream.is_empty()
            || self
                .stream
                .contains(|c: char| c.is_whitespace() || matches!(c, '.' | '*' | '>' | '/' | '\\'))
        {
            return Err(FieldError::new(
                "stream",
                format!(
                    "{:?} is not a stream name (non-empty, no spaces, '.', '*', '>', '/' or '\\')",
                    self.stream
                ),
            ));
        }
        SubjectTemplate::parse(&self.subject).map_err(|m| FieldError::new("subject", m))?;
        if self.max_in_flight == 0 {
            return Err(FieldError::new("max_in_flight", "must be at least 1"));
        }
        for (field, timeout) in [
            ("connect_timeout", self.connect_timeout),
            ("ack_timeout", self.ack_timeout),
        ] {
            if timeout.0 < Duration::from_millis(10) {
                return Err(FieldError::new(field, "must be at least 10ms"));
            }
        }
        if self.retry.initial_backoff.0 > self.retry.max_backoff.0 {
            return Err(FieldError::new(
                "retry.initial_backoff",
                "must not exceed retry.max_backoff",
            ));
        }
        let tls = &self.tls;
        if tls.client_cert_file.is_some() != tls.client_key_file.is_some() {
            return Err(FieldError::new(
                "tls.client_key_file",
                "set client_cert_file and client_key_file together",
            ));
        }
        for (field, file) in [
            ("tls.ca_file", &tls.ca_file),
            ("tls.client_cert_file", &tls.client_cert_file),
            ("tls.client_key_file", &tls.client_key_file),
        ] {
            if let Some(path) = file {
                std::fs::metadata(path).map_err(|e| {
                    FieldError::new(field, format!("cannot read {}: {e}", path.display()))
                })?;
            }
        }
        let credentials = self.credentials()?;
        credentials.read(None).map_err(|e| e.field_error())?;
        Ok(())
    }

    /// The server addresses.
    fn servers(&self) -> Result<Vec<ServerAddr>, FieldError> {
        let urls = self.url.urls();
        if urls.iter().all(|u| u.is_empty()) {
            return Err(FieldError::new("url", "must name at least one server"));
        }
        urls.iter()
            .map(|url| {
                if url.contains('@') {
                    return Err(FieldError::new(
                        "url",
                        format!("{url:?}: put credentials in token_file, password_file or creds_file, not in the URL"),
                    ));
                }
                let addr = ServerAddr::from_str(url).map_err(|e| {
                    FieldError::new("url", format!("{url:?} is not a server URL: {e}"))
                })?;
                match addr.scheme() {
                    "nats" | "tls" => Ok(addr),
                    other => Err(FieldError::new(
                        "url",
                        format!("{url:?}: scheme {other:?} is not nats or tls"),
                    )),
                }
            })
            .collect()
    }

    /// The one way of authenticating configured.
    fn credentials(&self) -> Result<Credentials, FieldError> {
        match (
            &self.token_file,
            &self.user,
            &self.password_file,
            &self.creds_file,
        ) {
            (None, None, None, None) => Ok(Credentials::None),
            (Some(token), None, None, None) => Ok(Credentials::Token(token.clone())),
            (None, Some(user), Some(password), None) => {
                Ok(Credentials::UserPassword(user.clone(), password.clone()))
            }
            (None, Some(_), None, None) => Err(FieldError::new(
                "password_file",
                "user needs a password_file",
            )),
            (None, None, Some(_), None) => {
                Err(FieldError::new("user", "password_file needs a user"))
            }
            (None, None, None, Some(creds)) => Ok(Credentials::Creds(creds.clone())),
            _ => Err(FieldError::new(
                "token_file",
                "set one of token_file, user + password_file, or creds_file",
            )),
        }
    }

    /// The URLs as logged (credentials are refused in URLs, so nothing to hide).
    fn shown_urls(&self) -> String {
        self.url.urls().join(",")
    }
}

/// How the sink proves who it is; the files are read at every connect, so a rotated Secret
/// is used from the next (re)connect on. NATS checks credentials only when a connection is
/// made, and a server that revokes them or sees a JWT expire closes the connection, which
/// makes the client reconnect with what the files hold then.
#[derive(Debug, Clone)]
enum Credentials {
    None,
    Token(PathBuf),
    UserPassword(String, PathBuf),
    Creds(PathBuf),
}

/// Why a secret file could not be used.
#[derive(Debug, thiserror::Error)]
#[error("{field}: {message}")]
struct CredentialsError {
    field: &'static str,
    message: String,
}

impl CredentialsError {
    fn field_error(&self) -> FieldError {
        FieldError::new(self.field, self.message.clone())
    }
}

impl Credentials {
    /// The `CONNECT` fields; with `nonce`, a creds file's seed signs it (without, the file is
    /// only checked).
    fn read(&self, nonce: Option<&[u8]>) -> Result<Auth, CredentialsError> {
        let secret = |field: &'static str, path: &PathBuf| {
            std::fs::read_to_string(path)
                .map(|text| text.trim_end_matches(['\r', '\n']).to_owned())
                .map_err(|e| CredentialsError {
                    field,
                    message: format!("cannot read {}: {e}", path.display()),
                })
        };
        let mut auth = Auth::new();
        match self {
            Credentials::None => {}
            Credentials::Token(path) => auth.token = Some(secret("token_file", path)?),
            Credentials::UserPassword(user, path) => {
                auth.username = Some(user.clone());
                auth.password = Some(secret("password_file", path)?);
            }
            Credentials::Creds(path) => {
                let text = secret("creds_file", path)?;
                let invalid = |message: &str| CredentialsError {
                    field: "creds_file",
                    message: format!("{}: {message}", path.display()),
                };
                let jwt = creds_section(&text, "JWT")
                    .ok_or_else(|| invalid("holds no user JWT (not a .creds file)"))?;
                let seed = creds_section(&text, "SEED")
                    .ok_or_else(|| invalid("holds no NKey seed (not a .creds file)"))?;
                // The message must not echo the seed: it is the secret.
                let key = nkeys::KeyPair::from_seed(seed)
                    .map_err(|_| invalid("its NKey seed is not valid"))?;
                auth.jwt = Some(jwt.to_owned());
                if let Some(nonce) = nonce {
                    auth.signature = Some(
                        key.sign(nonce)
                            .map_err(|_| invalid("cannot sign with its NKey seed"))?,
                    );
                }
            }
        }
        Ok(auth)
    }
}

/// The first line inside the `-----BEGIN … {kind}-----` block of a creds file.
fn creds_section<'a>(text: &'a str, kind: &str) -> Option<&'a str> {
    let mut lines = text.lines().map(str::trim);
    lines.find(|l| l.starts_with("-----BEGIN") && l.contains(kind))?;
    lines
        .find(|l| !l.is_empty())
        .filter(|l| !l.starts_with("---"))
}

/// The nats sinks' batch metrics (records, bytes, batches, failures, duration).
static METRICS: LazyLock<BatchFamilies> = LazyLock::new(|| BatchFamilies::new("nats"));

type Labels = Vec<(String, String)>;

/// What JetStream said per publish, beyond the batch metrics.
struct AckFamilies {
    acks: Family<Labels, Counter>,
    duplicates: Family<Labels, Counter>,
    retried: Family<Labels, Counter>,
    dead_lettered: Family<Labels, Counter>,
}

static ACKS: LazyLock<AckFamilies> = LazyLock::new(|| AckFamilies {
    acks: Family::default(),
    duplicates: Family::default(),
    retried: Family::default(),
    dead_lettered: Family::default(),
});

/// Registers the nats sinks' metrics in the forwarder's `registry` (once per registry).
pub fn register_metrics(registry: &mut Registry) {
    METRICS.register(registry, "Payload bytes a nats sink had acknowledged");
    let a = &*ACKS;
    registry.register(
        "forwarder_nats_acks",
        "Publish acks a nats sink received from JetStream (duplicates included)",
        a.acks.clone(),
    );
    registry.register(
        "forwarder_nats_duplicate_acks",
        "Publish acks that said duplicate: a re-sent record the stream already held",
        a.duplicates.clone(),
    );
    registry.register(
        "forwarder_nats_retried_records",
        "Records owed again after a failed or missing ack",
        a.retried.clone(),
    );
    registry.register(
        "forwarder_nats_dead_lettered_records",
        "Records the server refused for good, kept in the dead-letter journal",
        a.dead_lettered.clone(),
    );
}

/// The connected client and its JetStream context.
struct Connection {
    js: jetstream::Context,
    /// The stream exists and captures the subjects (checked once per sink).
    checked: bool,
}

/// One record ready to publish.
struct Prepared {
    index: usize,
    subject: String,
    id: Option<String>,
    payload: bytes::Bytes,
}

/// The outcome of one publishing round.
#[derive(Default)]
struct Round {
    delivered: u64,
    duplicates: u64,
    bytes: u64,
    retry: Vec<usize>,
    refused: Vec<(usize, u16, String)>,
    unavailable: Option<String>,
}

/// Publishes records to JetStream.
pub struct NatsSink {
    spec: NatsSpec,
    shown: String,
    template: SubjectTemplate,
    servers: Vec<ServerAddr>,
    credentials: Credentials,
    connection: Option<Connection>,
    backoff: Backoff,
    delay: Option<Duration>,
    owed: Owed,
    dead_letter: DeadLetter,
    cancel: CancellationToken,
    /// The previous attempt failed: say so when the next one succeeds.
    failing: bool,
    metrics: BatchMetrics,
    acks: Counter,
    duplicates: Counter,
    retried: Counter,
    dead_lettered: Counter,
}

/// The status dead letters of this sink carry: no HTTP here, so HTTP's word for the one
/// permanent refusal there is (a message above the server's or the stream's size limit).
const TOO_LARGE: u16 = 413;

/// Why the sink could not start or publish.
#[derive(Debug, thiserror::Error)]
pub enum NatsError {
    /// The stream does not exist.
    #[error("stream {stream:?} does not exist on {urls} (the sink never creates it): {answer}")]
    Stream {
        /// The configured stream.
        stream: String,
        /// The servers.
        urls: String,
        /// The server's answer.
        answer: String,
    },
    /// JetStream did not answer about the stream for now (no leader, a timeout).
    #[error("cannot look up stream {stream:?} on {urls}: {answer}")]
    StreamUnknown {
        /// The configured stream.
        stream: String,
        /// The servers.
        urls: String,
        /// Why.
        answer: String,
    },
    /// The stream does not capture the configured subject.
    #[error(
        "stream {stream:?} captures {subjects:?}, which never match subject {subject:?}; add the subject to the stream or change `subject:`"
    )]
    Subject {
        /// The configured stream.
        stream: String,
        /// Its subjects.
        subjects: Vec<String>,
        /// The configured subject template.
        subject: String,
    },
    /// No connection could be made.
    #[error("cannot connect to {urls}: {reason}")]
    Connect {
        /// The servers.
        urls: String,
        /// Why.
        reason: String,
    },
    /// The client's runtime could not start.
    #[error("cannot start the network sinks' runtime: {0}")]
    Runtime(String),
}

impl NatsSink {
    /// Prepares the client and, when a server answers within `connect_timeout`, checks the
    /// stream: a stream that does not exist, or captures none of the subjects, stops the
    /// forwarder at start with the sink, the stream and the server's answer named. Servers
    /// that are all down only delay that check to the first batch, so an outage does not keep
    /// the forwarder (and its other sinks) from starting.
    ///
    /// # Errors
    /// A bad setting, a dead-letter journal that cannot be opened, or a stream check that
    /// failed on a server that answered.
    pub fn open(spec: NatsSpec, dead_letter: &DeadLetterSpec) -> Result<Self, SinkError> {
        let name = spec.name.clone();
        let setup = |e: Box<dyn std::error::Error + Send + Sync>| SinkError::Setup {
            sink: name.clone(),
            source: e,
        };
        let servers = spec.servers().map_err(|e| setup(e.to_string().into()))?;
        let credentials = spec
            .credentials()
            .map_err(|e| setup(e.to_string().into()))?;
        let template = SubjectTemplate::parse(&spec.subject)
            .map_err(|m| setup(format!("subject: {m}").into()))?;
        let dead_letter = DeadLetter::open(&spec.name, dead_letter)?;
        let labels = vec![("sink".to_owned(), spec.name.clone())];
        let mut sink = Self {
            shown: spec.shown_urls(),
            template,
            servers,
            credentials,
            connection: None,
            backoff: Backoff::new(spec.retry.initial_backoff.0, spec.retry.max_backoff.0),
            delay: None,
            owed: Owed::default(),
            dead_letter,
            cancel: CancellationToken::new(),
            failing: false,
            metrics: METRICS.for_sink(&spec.name),
            acks: ACKS.acks.get_or_create(&labels).clone(),
            duplicates: ACKS.duplicates.get_or_create(&labels).clone(),
            retried: ACKS.retried.get_or_create(&labels).clone(),
            dead_lettered: ACKS.dead_lettered.get_or_create(&labels).clone(),
            spec,
        };
        // `open` may run inside the forwarder's own runtime, where blocking on another one is
        // refused; a thread of its own is outside any.
        let checked = std::thread::scope(|scope| {
            scope
                .spawn(|| sink.ready())
                .join()
                .expect("the stream check does not panic")
        });
        match checked {
            Ok(()) => {}
            Err(e @ (NatsError::Stream { .. } | NatsError::Subject { .. })) => {
                return Err(setup(Box::new(e)));
            }
            Err(e) => {
                warn!(sink = %sink.spec.name, error = %e, "NATS or JetStream does not answer yet; the stream is checked at the first batch.");
            }
        }
        Ok(sink)
    }

    fn runtime() -> Result<&'static tokio::runtime::Runtime, NatsError> {
        CLIENT_RUNTIME
            .as_ref()
            .map_err(|e| NatsError::Runtime(e.to_string()))
    }

    /// Connects when not connected, and checks the stream once.
    fn ready(&mut self) -> Result<(), NatsError> {
        let runtime = Self::runtime()?;
        if self.connection.is_none() {
            let options = self.options();
            let servers = self.servers.clone();
            let timeout = self.spec.connect_timeout.0;
            let cancel = self.cancel.clone();
            // Every server gets its own connect timeout; one more covers DNS and the handshake.
            let limit = timeout * (servers.len() as u32 + 1);
            let client = runtime
                .handle()
                .block_on(async move {
                    tokio::select! {
                        r = tokio::time::timeout(limit, options.connect(servers)) => match r {
                            Ok(r) => r.map_err(|e| error_chain(&e)),
                            Err(_) => Err(format!("no server answered within {limit:?}")),
                        },
                        () = cancel.cancelled() => Err("shutting down".into()),
                    }
                })
                .map_err(|reason| NatsError::Connect {
                    urls: self.shown.clone(),
                    reason,
                })?;
            info!(sink = %self.spec.name, urls = %self.shown, "Connected to NATS.");
            // The context spawns its ack task on the runtime it is built in.
            let _runtime = runtime.enter();
            let js = jetstream::ContextBuilder::new()
                .timeout(self.spec.ack_timeout.0)
                .ack_timeout(self.spec.ack_timeout.0)
                // Our own loop bounds the acks in flight; the client's bound only backs it up.
                .max_ack_inflight(self.spec.max_in_flight)
                .backpressure_on_inflight(true)
                .build(client);
            self.connection = Some(Connection { js, checked: false });
        }
        let connection = self.connection.as_mut().expect("connected just above");
        if !connection.checked {
            let js = connection.js.clone();
            let stream = self.spec.stream.clone();
            let info = runtime.handle().block_on(async move {
                use jetstream::context::GetStreamErrorKind;
                let mut stream = js.get_stream(&stream).await.map_err(|e| {
                    let missing = matches!(e.kind(), GetStreamErrorKind::JetStream(j)
                        if j.error_code() == jetstream::ErrorCode::STREAM_NOT_FOUND);
                    (missing, error_chain(&e))
                })?;
                stream
                    .info()
                    .await
                    .cloned()
                    .map_err(|e| (false, error_chain(&e)))
            });
            let info = info.map_err(|(missing, answer)| {
                let (stream, urls) = (self.spec.stream.clone(), self.shown.clone());
                if missing {
                    NatsError::Stream {
                        stream,
                        urls,
                        answer,
                    }
                } else {
                    NatsError::StreamUnknown {
                        stream,
                        urls,
                        answer,
                    }
                }
            })?;
            let mut subjects = info.config.subjects.clone();
            if subjects.is_empty() {
                // A stream made without subjects captures its own name.
                subjects.push(info.config.name.clone());
            }
            match self.template.coverage(&subjects) {
                Coverage::Full => {}
                Coverage::Partial => {
                    warn!(sink = %self.spec.name, stream = %self.spec.stream, subjects = ?subjects, subject = %self.spec.subject, "The stream captures only some of the subjects the template can make; records on the others are retried until the stream captures them.");
                }
                Coverage::None => {
                    return Err(NatsError::Subject {
                        stream: self.spec.stream.clone(),
                        subjects,
                        subject: self.spec.subject.clone(),
                    });
                }
            }
            let window = info.config.duplicate_window;
            info!(sink = %self.spec.name, stream = %self.spec.stream, replicas = info.config.num_replicas, duplicate_window = ?window, "The stream is there; records are deduplicated by id within its duplicate window.");
            connection.checked = true;
        }
        Ok(())
    }

    fn options(&self) -> ConnectOptions {
        let credentials = Arc::new(self.credentials.clone());
        let sink = self.spec.name.clone();
        let mut options = match *credentials {
            Credentials::None => ConnectOptions::new(),
            _ => ConnectOptions::with_auth_callback(move |nonce: Vec<u8>| {
                let credentials = credentials.clone();
                let sink = sink.clone();
                // Small files, read on the client's thread once per connect.
                async move {
                    credentials.read(Some(&nonce)).map_err(|e| {
                        warn!(sink = %sink, error = %e, "Cannot read the NATS credentials; the connect attempt fails and is retried.");
                        AuthError::new(e.to_string())
                    })
                }
            }),
        };
        options = options
            .name(format!("log-sidecars-forwarder/{}", self.spec.name))
            .connection_timeout(self.spec.connect_timeout.0)
            .max_reconnects(None);
        let tls = &self.spec.tls;
        let tls_url = self.servers.iter().any(ServerAddr::tls_required);
        if tls_url || tls.ca_file.is_some() || tls.client_cert_file.is_some() {
            // The client's rustls needs a process-wide provider; another sink may have
            // installed one already, which is just as good.
            let _ = rustls::crypto::ring::default_provider().install_default();
            options = options.require_tls(true);
        }
        if let Some(ca) = &tls.ca_file {
            options = options.add_root_certificates(ca.clone());
        }
        if let (Some(cert), Some(key)) = (&tls.client_cert_file, &tls.client_key_file) {
            options = options.add_client_certificate(cert.clone(), key.clone());
        }
        options
    }

    /// Subject, id and payload of each owed record.
    fn prepare(&self, batch: &[OutRecord<'_>], owed: &[usize]) -> Vec<Prepared> {
        owed.iter()
            .map(|&index| {
                let record = &batch[index];
                let (subject, id) = self.template.render(record);
                Prepared {
                    index,
                    subject,
                    id,
                    payload: bytes::Bytes::copy_from_slice(record.raw),
                }
            })
            .collect()
    }

    /// Publishes `records`, at most `max_in_flight` acks pending, and sorts out the acks.
    fn publish(&self, records: Vec<Prepared>) -> Round {
        let all: Vec<usize> = records.iter().map(|p| p.index).collect();
        let unavailable = |reason: String| Round {
            retry: all.clone(),
            unavailable: Some(reason),
            ..Round::default()
        };
        let runtime = match Self::runtime() {
            Ok(runtime) => runtime,
            Err(e) => return unavailable(e.to_string()),
        };
        let js = self
            .connection
            .as_ref()
            .expect("publish runs after ready()")
            .js
            .clone();
        let max_in_flight = self.spec.max_in_flight;
        let ack_timeout = self.spec.ack_timeout.0;
        let cancel = self.cancel.clone();
        let outcome = runtime.handle().block_on(async move {
            let work = publish_all(&js, records, max_in_flight, ack_timeout);
            tokio::select! {
                round = work => Some(round),
                () = cancel.cancelled() => None,
            }
        });
        outcome.unwrap_or_else(|| unavailable("publishing abandoned at shutdown".into()))
    }
}

/// The ack of one publish, pending.
type AckFuture = std::pin::Pin<
    Box<
        dyn std::future::Future<Output = Result<jetstream::publish::PublishAck, PublishError>>
            + Send,
    >,
>;
type PublishError = jetstream::context::PublishError;

async fn publish_all(
    js: &jetstream::Context,
    records: Vec<Prepared>,
    max_in_flight: usize,
    ack_timeout: Duration,
) -> Round {
    let mut round = Round::default();
    let mut pending: VecDeque<(usize, u64, tokio::time::Instant, AckFuture)> = VecDeque::new();
    for record in records {
        while pending.len() >= max_in_flight {
            let (index, bytes, deadline, ack) = pending.pop_front().expect("not empty");
            settle(&mut round, index, bytes, deadline, ack).await;
        }
        if round.unavailable.is_some() {
            // The server is not answering: owe the rest without knocking again this round.
            round.retry.push(record.index);
            continue;
        }
        let bytes = record.payload.len() as u64;
        let mut message = PublishMessage::build().payload(record.payload);
        if let Some(id) = &record.id {
            message = message.message_id(id);
        }
        match js.send_publish(record.subject, message).await {
            Ok(ack) => {
                // Each ack's deadline runs from its publish, so a silent server costs one
                // ack_timeout per round, not one per record.
                let deadline = tokio::time::Instant::now() + ack_timeout;
                pending.push_back((record.index, bytes, deadline, ack.into_future()));
            }
            Err(e) => failed(&mut round, record.index, &e),
        }
    }
    while let Some((index, bytes, deadline, ack)) = pending.pop_front() {
        settle(&mut round, index, bytes, deadline, ack).await;
    }
    round
}

async fn settle(
    round: &mut Round,
    index: usize,
    bytes: u64,
    deadline: tokio::time::Instant,
    ack: AckFuture,
) {
    match tokio::time::timeout_at(deadline, ack).await {
        Ok(Ok(ack)) => {
            round.delivered += 1;
            round.bytes += bytes;
            if ack.duplicate {
                round.duplicates += 1;
            }
        }
        Ok(Err(e)) => failed(round, index, &e),
        Err(_) => {
            round.retry.push(index);
            round
                .unavailable
                .get_or_insert_with(|| "no publish ack within ack_timeout".into());
        }
    }
}

/// Sorts a failed publish: too large for good, anything else owed again.
fn failed(round: &mut Round, index: usize, e: &PublishError) {
    use async_nats::jetstream::context::PublishErrorKind;
    let too_large = match e.kind() {
        PublishErrorKind::MaxPayloadExceeded => true,
        PublishErrorKind::Other => std::error::Error::source(e)
            .and_then(|s| s.downcast_ref::<jetstream::Error>())
            .is_some_and(|j| {
                j.error_code() == jetstream::ErrorCode::STREAM_MESSAGE_EXCEEDS_MAXIMUM
            }),
        _ => false,
    };
    if too_large {
        round.refused.push((index, TOO_LARGE, error_chain(e)));
    } else {
        round.retry.push(index);
        round.unavailable.get_or_insert_with(|| error_chain(e));
    }
}

impl Sink for NatsSink {
    fn name(&self) -> &str {
        &self.spec.name
    }

    fn send(&mut self, batch: &[OutRecord<'_>]) -> Result<(), SinkError> {
        if batch.is_empty() {
            return Ok(());
        }
        let (id, owed) = self.owed.take_for(batch);
        let started = Instant::now();
        let mut round = match self.ready() {
            Ok(()) => {
                let records = self.prepare(batch, &owed);
                self.publish(records)
            }
            Err(e) => {
                if !self.failing {
                    match &e {
                        NatsError::Stream { .. } | NatsError::Subject { .. } => {
                            error!(sink = %self.spec.name, error = %e, "The stream cannot take the records until this is fixed; retrying with backoff meanwhile (no record is dropped; the pipeline backs up).");
                        }
                        _ => {}
                    }
                }
                Round {
                    retry: owed,
                    unavailable: Some(e.to_string()),
                    ..Round::default()
                }
            }
        };
        self.metrics.records.inc_by(round.delivered);
        self.metrics.bytes.inc_by(round.bytes);
        self.acks.inc_by(round.delivered);
        self.duplicates.inc_by(round.duplicates);
        if !round.refused.is_empty() {
            let count = round.refused.len();
            match self
                .dead_letter
                .keep(&self.spec.name, batch, &round.refused)
            {
                Ok(()) => {
                    self.dead_lettered.inc_by(count as u64);
                    let (_, _, reason) = &round.refused[0];
                    error!(sink = %self.spec.name, records = count, first_reason = %reason, dead_letter = %self.dead_letter.dir().display(), "NATS refused records for good (too large); they are kept in the dead-letter journal.");
                }
                Err(e) => {
                    // Not kept, so not done with: they are published (and refused) again.
                    round.retry.extend(round.refused.iter().map(|(i, _, _)| *i));
                    round.unavailable = Some(format!("{e:#}"));
                }
            }
        }
        if round.retry.is_empty() {
            self.metrics.batches.inc();
            self.metrics
                .duration
                .observe(started.elapsed().as_secs_f64());
            if std::mem::replace(&mut self.failing, false) {
                info!(sink = %self.spec.name, urls = %self.shown, "JetStream acknowledges publishes again.");
            }
            self.backoff.reset();
            self.delay = None;
            return Ok(());
        }
        let reason = round
            .unavailable
            .unwrap_or_else(|| "some publishes were not acknowledged".into());
        if !std::mem::replace(&mut self.failing, true) {
            // The forwarder logs every retry; the cause is said here, once per outage.
            warn!(sink = %self.spec.name, urls = %self.shown, owed = round.retry.len(), error = %reason, "JetStream did not acknowledge every record; re-publishing the rest (the stream drops the duplicates by id).");
        }
        self.metrics.failures.inc();
        self.retried.inc_by(round.retry.len() as u64);
        self.delay = Some(self.backoff.next_delay());
        let owed = round.retry.len();
        self.owed.keep(id, round.retry);
        Err(SinkError::Unavailable {
            sink: self.spec.name.clone(),
            url: self.shown.clone(),
            owed,
            reason,
        })
    }

    fn state(&self) -> Value {
        Value::Null
    }

    fn retry_delay(&self) -> Option<Duration> {
        self.delay
    }

    fn cancel_handle(&self) -> Option<CancellationToken> {
        Some(self.cancel.clone())
    }

    fn close(&mut self) {
        if let Some(connection) = self.connection.take() {
            let client = connection.js.client();
            if let Ok(runtime) = Self::runtime() {
                // Flushes what the client still buffers; every publish of a committed batch
                // was acknowledged already, so this only tidies up.
                let _ = runtime.handle().block_on(async move {
                    tokio::time::timeout(Duration::from_secs(1), client.drain()).await
                });
            }
            info!(sink = %self.spec.name, "NATS connection closed.");
        }
    }
}

/// `e` and its causes, `: `-separated.
fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut text = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        let next = c.to_string();
        if !text.ends_with(&next) {
            text.push_str(": ");
            text.push_str(&next);
        }
        cause = c.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(yaml: &str) -> NatsSpec {
        serde_saphyr::from_str(yaml).unwrap()
    }

    #[test]
    fn validation_names_the_field() {
        let err = |yaml: &str| spec(yaml).validate().unwrap_err();
        assert_eq!(err("url: http://h:1\nstream: S\n").field, "url");
        assert_eq!(err("url: ''\nstream: S\n").field, "url");
        assert_eq!(err("url: nats://u:p@h:4222\nstream: S\n").field, "url");
        assert_eq!(err("url: nats://h:4222\nstream: 'a.b'\n").field, "stream");
        assert_eq!(err("url: nats://h:4222\nstream: ''\n").field, "stream");
        let e = err("url: nats://h:4222\nstream: S\nsubject: 'logs.{'\n");
        assert_eq!(e.field, "subject");
        assert_eq!(
            err("url: nats://h\nstream: S\nsubject: 'logs..x'\n").field,
            "subject"
        );
        assert_eq!(
            err("url: nats://h\nstream: S\nmax_in_flight: 0\n").field,
            "max_in_flight"
        );
        assert_eq!(
            err("url: nats://h\nstream: S\nack_timeout: 1ms\n").field,
            "ack_timeout"
        );
        assert_eq!(
            err("url: nats://h\nstream: S\nuser: u\n").field,
            "password_file"
        );
        assert_eq!(
            err("url: nats://h\nstream: S\ntoken_file: /a\ncreds_file: /b\n").field,
            "token_file"
        );
        let e = err("url: nats://h\nstream: S\ntoken_file: /nonexistent/token\n");
        assert_eq!(e.field, "token_file");
        assert!(e.message.contains("/nonexistent/token"), "{}", e.message);
        assert_eq!(
            err("url: nats://h\nstream: S\ntls: {client_cert_file: /a}\n").field,
            "tls.client_key_file"
        );
        assert!(
            serde_saphyr::from_str::<NatsSpec>("url: nats://h\nstream: S\nstrem: x\n").is_err()
        );
        let ok = spec("url: 'nats://a:4222, nats://b:4222'\nstream: LOGS\n");
        ok.validate().unwrap();
        assert_eq!(ok.url.urls(), ["nats://a:4222", "nats://b:4222"]);
        assert_eq!(ok.subject, "logs");
        assert_eq!(ok.max_in_flight, 256);
        assert_eq!(ok.ack_timeout.0, Duration::from_secs(5));
        let ok = spec(
            "url: [nats://a:4222, 'tls://b:4443']\nstream: LOGS\nsubject: 'logs.{source_file}'\n",
        );
        ok.validate().unwrap();
        assert_eq!(ok.servers().unwrap().len(), 2);
    }

    #[test]
    fn forwarder_yaml_errors_name_the_sink_and_field() {
        let path = std::path::Path::new("forwarder.yaml");
        let load = |text: &str| -> Result<super::super::ForwarderFile, crate::config::ConfigError> {
            let file: super::super::ForwarderFile = crate::config::parse_text(text, path)?;
            file.validate(path)?;
            Ok(file)
        };
        let err = load("sinks:\n  - {type: nats, url: 'nats://h:4222', stream: LOGS, subject: 'logs.{level'}\n")
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with("forwarder.yaml: sinks[0].subject: "),
            "{err}"
        );
        let file = load("sinks:\n  - {type: nats, url: 'nats://h:4222', stream: LOGS}\n").unwrap();
        assert_eq!(file.sinks[0].name(), "nats");
    }

    #[test]
    fn secrets_are_read_without_their_newline_and_creds_sign_the_nonce() {
        let dir = tempfile::tempdir().unwrap();
        let token = dir.path().join("token");
        std::fs::write(&token, "s3cret\n").unwrap();
        let auth = Credentials::Token(token).read(None).unwrap();
        assert_eq!(auth.token.as_deref(), Some("s3cret"));
        let key = nkeys::KeyPair::new_user();
        let seed = key.seed().unwrap();
        let creds = dir.path().join("user.creds");
        std::fs::write(
            &creds,
            format!("-----BEGIN NATS USER JWT-----\neyJhbGciOi.x.y\n------END NATS USER JWT------\n\n************************* IMPORTANT *************************\n\n-----BEGIN USER NKEY SEED-----\n{seed}\n------END USER NKEY SEED------\n"),
        )
        .unwrap();
        let auth = Credentials::Creds(creds.clone())
            .read(Some(b"nonce"))
            .unwrap();
        assert_eq!(auth.jwt.as_deref(), Some("eyJhbGciOi.x.y"));
        key.verify(b"nonce", auth.signature.as_deref().unwrap())
            .unwrap();
        std::fs::write(&creds, "not a creds file").unwrap();
        let e = Credentials::Creds(creds).read(None).err().unwrap();
        assert_eq!(e.field, "creds_file");
    }
}

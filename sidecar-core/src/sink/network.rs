//! What every HTTP-based sink shares: the client (timeouts, TLS, auth), splitting a journal
//! batch into requests, gzip, classifying replies, backoff, cancellation, dead letters and
//! metrics. [`NetworkSink`] drives a [`Protocol`] (http, loki, elasticsearch) through all of it.
//!
//! Easy to get wrong: what a failed `send` leaves behind. A batch is split into requests; some
//! may be taken, some refused for a while (429/5xx, timeouts), some refused for good (other
//! 4xx), and Elasticsearch answers per item. The sink remembers which records of the batch are
//! still owed and, when the forwarder offers the same batch again, sends only those. Records a
//! server refuses for good go to the dead-letter journal before `send` reports success, so the
//! forwarder's commit never passes a record that is neither delivered nor kept.

use std::collections::{BTreeMap, VecDeque};
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::{Arc, LazyLock};
use std::time::{Duration, Instant};

use flate2::write::GzEncoder;
use flate2::Compression;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;
use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
use reqwest::{StatusCode, Url};
use serde::Deserialize;
use serde_json::Value;
use tracing::{error, info, warn};

use super::dead_letter::{DeadLetter, DeadLetterSpec};
use super::{OutRecord, Sink, SinkError};
use crate::backoff::Backoff;
use crate::config::{ByteSize, HumanDuration};
use crate::mounted::FileWatch;

/// `tls:` of a network sink. Without it, https URLs are checked against the bundled Mozilla
/// roots.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsSpec {
    /// PEM file with the CA certificate(s) the server's certificate must chain to, added to
    /// the bundled roots (e.g. a cluster's own CA).
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// PEM client certificate (chain), for servers that require mutual TLS.
    #[serde(default)]
    pub client_cert_file: Option<PathBuf>,
    /// PEM private key of the client certificate.
    #[serde(default)]
    pub client_key_file: Option<PathBuf>,
}

/// `auth:` of a network sink; secrets come from a file (a mounted Secret) or an environment
/// variable, never from the config file itself, and are never logged.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum AuthSpec {
    /// HTTP basic auth.
    Basic {
        /// The user name (not a secret).
        username: String,
        /// File holding the password (trailing newline ignored).
        #[serde(default)]
        password_file: Option<PathBuf>,
        /// Environment variable holding the password.
        #[serde(default)]
        password_env: Option<String>,
    },
    /// `Authorization: Bearer <token>`.
    Bearer {
        /// File holding the token (trailing newline ignored).
        #[serde(default)]
        token_file: Option<PathBuf>,
        /// Environment variable holding the token.
        #[serde(default)]
        token_env: Option<String>,
    },
    /// `Authorization: ApiKey <key>` (Elasticsearch API keys, the encoded form).
    ApiKey {
        /// File holding the key (trailing newline ignored).
        #[serde(default)]
        key_file: Option<PathBuf>,
        /// Environment variable holding the key.
        #[serde(default)]
        key_env: Option<String>,
    },
}

/// `batch:` of a network sink: how a journal batch is cut into requests.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BatchSpec {
    /// Records per request at most (default 1000).
    #[serde(default = "default_max_records")]
    pub max_records: usize,
    /// Uncompressed body bytes per request at most (default 1 MiB; a single larger record
    /// goes alone). Elasticsearch suggests bulk bodies of a few MiB, Loki's default push limit
    /// is 4 MiB.
    #[serde(default = "default_max_bytes")]
    pub max_bytes: ByteSize,
    /// After new records arrive, wait this long for more before sending (default 200 ms), so
    /// a trickle of lines becomes a few requests a second rather than one per line. A backlog
    /// is sent without waiting.
    #[serde(default = "default_linger")]
    pub linger: HumanDuration,
}

impl Default for BatchSpec {
    fn default() -> Self {
        Self {
            max_records: default_max_records(),
            max_bytes: default_max_bytes(),
            linger: default_linger(),
        }
    }
}

fn default_linger() -> HumanDuration {
    HumanDuration(Duration::from_millis(200))
}

fn default_max_records() -> usize {
    1000
}
fn default_max_bytes() -> ByteSize {
    ByteSize(1 << 20)
}

/// `retry:` of a network sink. Retries never give up (the journal is the buffer); this only
/// shapes their pace.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetrySpec {
    /// First delay after a failure (default 200 ms); doubled per failure in a row.
    #[serde(default = "default_initial_backoff")]
    pub initial_backoff: HumanDuration,
    /// The cap of the doubling (default 30 s). A server's `Retry-After` is honoured up to
    /// ten times this.
    #[serde(default = "default_max_backoff")]
    pub max_backoff: HumanDuration,
}

impl Default for RetrySpec {
    fn default() -> Self {
        Self {
            initial_backoff: default_initial_backoff(),
            max_backoff: default_max_backoff(),
        }
    }
}

fn default_initial_backoff() -> HumanDuration {
    HumanDuration(Duration::from_millis(200))
}
fn default_max_backoff() -> HumanDuration {
    HumanDuration(Duration::from_secs(30))
}

/// `timeouts:` of a network sink.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TimeoutSpec {
    /// TCP (and TLS) connect (default 5 s).
    #[serde(default = "default_connect_timeout")]
    pub connect: HumanDuration,
    /// A whole request, from connect to the last byte of the reply (default 30 s).
    #[serde(default = "default_request_timeout")]
    pub request: HumanDuration,
}

impl Default for TimeoutSpec {
    fn default() -> Self {
        Self {
            connect: default_connect_timeout(),
            request: default_request_timeout(),
        }
    }
}

fn default_connect_timeout() -> HumanDuration {
    HumanDuration(Duration::from_secs(5))
}
fn default_request_timeout() -> HumanDuration {
    HumanDuration(Duration::from_secs(30))
}

/// The settings every network sink has, gathered from its config entry.
#[derive(Debug, Clone)]
pub struct EndpointSpec<'a> {
    /// The sink's name.
    pub name: &'a str,
    /// The URL requests go to.
    pub url: &'a str,
    /// Extra request headers.
    pub headers: BTreeMap<String, String>,
    /// Credentials.
    pub auth: Option<&'a AuthSpec>,
    /// TLS settings.
    pub tls: &'a TlsSpec,
    /// Timeouts.
    pub timeouts: &'a TimeoutSpec,
    /// Backoff.
    pub retry: &'a RetrySpec,
    /// Request sizes.
    pub batch: &'a BatchSpec,
    /// gzip request bodies.
    pub gzip: bool,
}

impl EndpointSpec<'_> {
    /// Checks what serde cannot; `field` prefixes each error (e.g. `sinks[2]`).
    ///
    /// # Errors
    /// A `(field, message)` pair naming what is wrong.
    pub fn validate(&self, field: &str) -> Result<(), (String, String)> {
        let bad = |f: &str, m: String| Err((format!("{field}.{f}"), m));
        match Url::parse(self.url) {
            Ok(url) if matches!(url.scheme(), "http" | "https") => {}
            Ok(url) => {
                return bad(
                    "url",
                    format!("scheme {:?} is not http or https", url.scheme()),
                )
            }
            Err(e) => return bad("url", format!("not a URL: {e}")),
        }
        for (name, value) in &self.headers {
            if HeaderName::from_bytes(name.as_bytes()).is_err() {
                return bad("headers", format!("{name:?} is not a valid header name"));
            }
            if HeaderValue::from_str(value).is_err() {
                return bad(
                    &format!("headers.{name}"),
                    "is not a valid header value".into(),
                );
            }
        }
        if self.batch.max_records == 0 {
            return bad("batch.max_records", "must be at least 1".into());
        }
        if self.batch.max_bytes.0 < 1024 {
            return bad("batch.max_bytes", "must be at least 1KiB".into());
        }
        if self.batch.linger.0 > Duration::from_secs(60) {
            return bad("batch.linger", "must be at most 60s".into());
        }
        if self.retry.initial_backoff.0.is_zero()
            || self.retry.max_backoff.0 < self.retry.initial_backoff.0
        {
            return bad(
                "retry",
                "initial_backoff must be above 0 and max_backoff at least initial_backoff".into(),
            );
        }
        if self.timeouts.connect.0.is_zero() || self.timeouts.request.0.is_zero() {
            return bad("timeouts", "must be above 0".into());
        }
        match (&self.tls.client_cert_file, &self.tls.client_key_file) {
            (Some(_), None) | (None, Some(_)) => {
                return bad(
                    "tls",
                    "client_cert_file and client_key_file go together".into(),
                )
            }
            _ => {}
        }
        match self.auth {
            Some(AuthSpec::Basic {
                password_file,
                password_env,
                ..
            }) if password_file.is_some() == password_env.is_some() => {
                return bad(
                    "auth.basic",
                    "set exactly one of password_file and password_env".into(),
                )
            }
            Some(AuthSpec::Bearer {
                token_file,
                token_env,
            }) if token_file.is_some() == token_env.is_some() => {
                return bad(
                    "auth.bearer",
                    "set exactly one of token_file and token_env".into(),
                )
            }
            Some(AuthSpec::ApiKey { key_file, key_env })
                if key_file.is_some() == key_env.is_some() =>
            {
                return bad(
                    "auth.api_key",
                    "set exactly one of key_file and key_env".into(),
                )
            }
            _ => {}
        }
        Ok(())
    }
}

/// The URL as it may be logged: without user name and password.
pub fn redact_url(url: &Url) -> String {
    let mut shown = url.clone();
    let _ = shown.set_username("");
    let _ = shown.set_password(None);
    shown.to_string()
}

/// Fires once the forwarder gives up waiting for in-flight requests at shutdown; a request
/// then ends at once instead of at its timeout.
#[derive(Debug, Clone)]
pub struct Cancel {
    tx: Arc<tokio::sync::watch::Sender<bool>>,
}

impl Default for Cancel {
    fn default() -> Self {
        Self::new()
    }
}

impl Cancel {
    /// A token not fired yet.
    pub fn new() -> Self {
        Self {
            tx: Arc::new(tokio::sync::watch::channel(false).0),
        }
    }

    /// Fires the token: requests in flight and later ones end at once.
    pub fn cancel(&self) {
        self.tx.send_replace(true);
    }

    /// Whether [`Cancel::cancel`] was called.
    pub fn is_cancelled(&self) -> bool {
        *self.tx.borrow()
    }

    async fn cancelled(&self) {
        let mut rx = self.tx.subscribe();
        let _ = rx.wait_for(|fired| *fired).await;
    }
}

/// Per-sink metrics of the network sinks, labelled `sink`.
#[derive(Debug)]
struct NetworkMetrics {
    records: Family<Vec<(String, String)>, Counter>,
    bytes: Family<Vec<(String, String)>, Counter>,
    requests: Family<Vec<(String, String)>, Counter>,
    retries: Family<Vec<(String, String)>, Counter>,
    failures: Family<Vec<(String, String)>, Counter>,
    dead_lettered: Family<Vec<(String, String)>, Counter>,
    latency: Family<Vec<(String, String)>, Histogram>,
}

fn latency_histogram() -> Histogram {
    // 1 ms to ~33 s: loopback to a far, slow cluster.
    Histogram::new(exponential_buckets(0.001, 2.0, 16))
}

static METRICS: LazyLock<NetworkMetrics> = LazyLock::new(|| NetworkMetrics {
    records: Family::default(),
    bytes: Family::default(),
    requests: Family::default(),
    retries: Family::default(),
    failures: Family::default(),
    dead_lettered: Family::default(),
    latency: Family::new_with_constructor(latency_histogram),
});

/// Registers the network sinks' metrics (one family each, labelled by sink) in `registry`.
pub fn register_metrics(registry: &mut Registry) {
    let m = &*METRICS;
    registry.register(
        "forwarder_sink_sent_records",
        "Records a network sink's server accepted",
        m.records.clone(),
    );
    registry.register(
        "forwarder_sink_sent_bytes",
        "Request body bytes sent by a network sink (after gzip)",
        m.bytes.clone(),
    );
    registry.register(
        "forwarder_sink_requests",
        "Requests a network sink made",
        m.requests.clone(),
    );
    registry.register(
        "forwarder_sink_retries",
        "Requests or bulk items scheduled again after a retryable failure",
        m.retries.clone(),
    );
    registry.register(
        "forwarder_sink_request_failures",
        "Requests that failed (connection, timeout, or a status other than 2xx)",
        m.failures.clone(),
    );
    registry.register(
        "forwarder_sink_dead_lettered_records",
        "Records a server refused for good, kept in the dead-letter journal",
        m.dead_lettered.clone(),
    );
    registry.register(
        "forwarder_sink_request_duration_seconds",
        "Time from sending a request to its complete reply",
        m.latency.clone(),
    );
}

/// Counter handles of one sink.
struct SinkMetrics {
    records: Counter,
    bytes: Counter,
    requests: Counter,
    retries: Counter,
    failures: Counter,
    dead_lettered: Counter,
    latency: Histogram,
}

impl SinkMetrics {
    fn for_sink(name: &str) -> Self {
        let label = vec![("sink".to_owned(), name.to_owned())];
        let m = &*METRICS;
        Self {
            records: m.records.get_or_create(&label).clone(),
            bytes: m.bytes.get_or_create(&label).clone(),
            requests: m.requests.get_or_create(&label).clone(),
            retries: m.retries.get_or_create(&label).clone(),
            failures: m.failures.get_or_create(&label).clone(),
            dead_lettered: m.dead_lettered.get_or_create(&label).clone(),
            latency: m.latency.get_or_create(&label).clone(),
        }
    }
}

/// How a server answered one request.
#[derive(Debug)]
pub enum Reply {
    /// 2xx, with the body.
    Accepted(Vec<u8>),
    /// A status that will not change by retrying the same request (4xx other than those
    /// listed at [`is_retryable`]).
    Refused {
        /// The status.
        status: u16,
        /// The start of the reply body.
        reason: String,
    },
    /// Worth retrying later: 429, 5xx, a timeout or a connection error.
    Unavailable {
        /// What happened, without credentials.
        reason: String,
        /// The server's `Retry-After`, if it sent one.
        retry_after: Option<Duration>,
    },
}

/// Whether a status is retried rather than dead-lettered: 429 and 5xx as the protocols ask,
/// 408/425 (timing), and 401/403/404/407 because they mean our configuration (credentials, URL)
/// is wrong for every record alike: dead-lettering would empty the journal into the dead-letter
/// journal, while retrying keeps the records until an operator fixes it.
pub fn is_retryable(status: u16) -> bool {
    matches!(status, 401 | 403 | 404 | 407 | 408 | 425 | 429) || status >= 500
}

/// The first bytes of a reply body, as text for a log line or a dead letter.
pub fn excerpt(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(&body[..body.len().min(512)]);
    text.trim().to_owned()
}

/// Parses `Retry-After`: delay-seconds or an HTTP date (RFC 9110 §10.2.3).
fn parse_retry_after(value: &str) -> Option<Duration> {
    let value = value.trim();
    if let Ok(seconds) = value.parse::<u64>() {
        return Some(Duration::from_secs(seconds));
    }
    let date = chrono::DateTime::parse_from_rfc2822(value).ok()?;
    let wait = date.timestamp_millis() - chrono::Utc::now().timestamp_millis();
    Some(Duration::from_millis(wait.max(0) as u64))
}

/// An HTTP endpoint: the client with its timeouts, TLS and auth, and the runtime it runs on.
pub struct Endpoint {
    url: Url,
    shown_url: String,
    client: reqwest::Client,
    headers: HeaderMap,
    auth: Option<RotatingAuth>,
    gzip: bool,
    runtime: Option<tokio::runtime::Runtime>,
    cancel: Cancel,
    metrics: SinkMetrics,
}

/// Why an endpoint could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum EndpointError {
    /// A credential or certificate file could not be read.
    #[error("sink {sink}: cannot read {field} {}", .path.display())]
    Read {
        /// The sink.
        sink: String,
        /// The config field naming the file.
        field: &'static str,
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// Something else about the settings (an unset variable, a bad certificate).
    #[error("sink {sink}: {field}: {message}")]
    Invalid {
        /// The sink.
        sink: String,
        /// The config field.
        field: &'static str,
        /// What is wrong (never a secret).
        message: String,
    },
}

impl Endpoint {
    /// Builds the client: reads the CA and client certificate and the credentials now, so a
    /// missing file fails the start with its name rather than the first request.
    ///
    /// # Errors
    /// When a file cannot be read or parsed, or a variable is unset.
    pub fn new(spec: &EndpointSpec<'_>) -> Result<Self, EndpointError> {
        let sink = spec.name.to_owned();
        let invalid = field_error(&sink);
        let read = field_reader(&sink);
        let url = Url::parse(spec.url).map_err(|e| invalid("url", e.to_string()))?;
        let mut builder = reqwest::Client::builder()
            .use_rustls_tls()
            .connect_timeout(spec.timeouts.connect.0)
            .timeout(spec.timeouts.request.0)
            .redirect(reqwest::redirect::Policy::none())
            .pool_idle_timeout(Duration::from_secs(50));
        if let Some(path) = &spec.tls.ca_file {
            let pem = read("tls.ca_file", path)?;
            let certs = reqwest::Certificate::from_pem_bundle(&pem)
                .map_err(|e| invalid("tls.ca_file", format!("not a PEM certificate: {e}")))?;
            if certs.is_empty() {
                return Err(invalid(
                    "tls.ca_file",
                    "holds no PEM certificate".to_owned(),
                ));
            }
            for cert in certs {
                builder = builder.add_root_certificate(cert);
            }
        }
        if let (Some(cert), Some(key)) = (&spec.tls.client_cert_file, &spec.tls.client_key_file) {
            let mut pem = read("tls.client_cert_file", cert)?;
            pem.push(b'\n');
            pem.extend(read("tls.client_key_file", key)?);
            let identity = reqwest::Identity::from_pem(&pem).map_err(|e| {
                invalid(
                    "tls.client_cert_file",
                    format!("not a PEM certificate and key: {e}"),
                )
            })?;
            builder = builder.identity(identity);
        }
        let client = builder
            .build()
            .map_err(|e| invalid("tls", e.without_url().to_string()))?;
        let mut headers = HeaderMap::new();
        for (name, value) in &spec.headers {
            let name = HeaderName::from_bytes(name.as_bytes())
                .map_err(|e| invalid("headers", e.to_string()))?;
            let value =
                HeaderValue::from_str(value).map_err(|e| invalid("headers", e.to_string()))?;
            headers.insert(name, value);
        }
        if let Some(auth) = spec.auth {
            headers.insert(
                reqwest::header::AUTHORIZATION,
                sensitive_auth_header(auth, &read, &invalid)?,
            );
        }
        Ok(Self {
            shown_url: redact_url(&url),
            url,
            client,
            headers,
            auth: spec.auth.map(|auth| RotatingAuth::new(&sink, auth)),
            gzip: spec.gzip,
            runtime: None,
            cancel: Cancel::new(),
            metrics: SinkMetrics::for_sink(&sink),
        })
    }

    /// The configured URL.
    pub fn url(&self) -> &Url {
        &self.url
    }

    /// The URL as logged (no credentials).
    pub fn shown_url(&self) -> &str {
        &self.shown_url
    }

    /// The endpoint with `cancel` ending its requests, for a sink with several endpoints and
    /// one token.
    #[must_use]
    pub fn with_cancel(mut self, cancel: Cancel) -> Self {
        self.cancel = cancel;
        self
    }

    /// The token that ends this endpoint's requests at once.
    pub fn cancel_handle(&self) -> Cancel {
        self.cancel.clone()
    }

    /// POSTs `body` (uncompressed; gzipped here when configured) to `url` and waits for the
    /// reply, the timeout, or cancellation.
    pub fn post(&mut self, url: &Url, content_type: &'static str, body: Vec<u8>) -> Reply {
        if self.cancel.is_cancelled() {
            return Reply::Unavailable {
                reason: "shutting down".into(),
                retry_after: None,
            };
        }
        if let Some(value) = self.auth.as_mut().and_then(RotatingAuth::renewed) {
            self.headers.insert(reqwest::header::AUTHORIZATION, value);
        }
        let body = if self.gzip { gzip(&body) } else { body };
        let sent_bytes = body.len() as u64;
        let mut request = self
            .client
            .post(url.clone())
            .headers(self.headers.clone())
            .header(reqwest::header::CONTENT_TYPE, content_type)
            .body(body);
        if self.gzip {
            request = request.header(reqwest::header::CONTENT_ENCODING, "gzip");
        }
        if let Err(e) = self.ensure_runtime() {
            return Reply::Unavailable {
                reason: format!("cannot start the client's runtime: {e}"),
                retry_after: None,
            };
        }
        let runtime = self.runtime.as_ref().expect("the runtime was just made");
        let cancel = self.cancel.clone();
        let started = Instant::now();
        let outcome = runtime.block_on(async move {
            let exchange = async {
                let response = request.send().await?;
                let status = response.status();
                let retry_after = response
                    .headers()
                    .get(reqwest::header::RETRY_AFTER)
                    .and_then(|v| v.to_str().ok())
                    .and_then(parse_retry_after);
                let body = response.bytes().await?;
                Ok::<_, reqwest::Error>((status, retry_after, body))
            };
            tokio::select! {
                result = exchange => Some(result),
                () = cancel.cancelled() => None,
            }
        });
        self.metrics.requests.inc();
        self.metrics
            .latency
            .observe(started.elapsed().as_secs_f64());
        let reply = match outcome {
            None => Reply::Unavailable {
                reason: "request abandoned at shutdown".into(),
                retry_after: None,
            },
            // without_url: the URL may carry credentials.
            Some(Err(e)) => Reply::Unavailable {
                reason: describe_error(&e.without_url()),
                retry_after: None,
            },
            Some(Ok((status, retry_after, body))) => classify(status, retry_after, &body),
        };
        match &reply {
            Reply::Accepted(_) => self.metrics.bytes.inc_by(sent_bytes),
            _ => self.metrics.failures.inc(),
        };
        reply
    }

    fn ensure_runtime(&mut self) -> std::io::Result<()> {
        // Made on first use, on the forwarder's blocking thread: a runtime may not be dropped
        // inside the async context that builds the sinks.
        if self.runtime.is_none() {
            self.runtime = Some(
                tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()?,
            );
        }
        Ok(())
    }
}

impl Drop for Endpoint {
    fn drop(&mut self) {
        // A runtime may not be dropped where blocking is not allowed (inside async code).
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

fn classify(status: StatusCode, retry_after: Option<Duration>, body: &[u8]) -> Reply {
    let code = status.as_u16();
    if status.is_success() {
        Reply::Accepted(body.to_vec())
    } else if is_retryable(code) {
        Reply::Unavailable {
            reason: format!("HTTP {code}: {}", excerpt(body)),
            retry_after,
        }
    } else {
        Reply::Refused {
            status: code,
            reason: excerpt(body),
        }
    }
}

/// A reqwest error with its causes (timeout, connection refused, TLS), one line.
fn describe_error(e: &reqwest::Error) -> String {
    let mut text = if e.is_timeout() {
        "timed out".to_owned()
    } else if e.is_connect() {
        "cannot connect".to_owned()
    } else {
        "request failed".to_owned()
    };
    let mut source = std::error::Error::source(e);
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// Reads a file named by a config field.
type ReadField<'a> = &'a dyn Fn(&'static str, &Path) -> Result<Vec<u8>, EndpointError>;

/// Reads the file a config field of `sink` names; the error carries both.
fn field_reader(sink: &str) -> impl Fn(&'static str, &Path) -> Result<Vec<u8>, EndpointError> + '_ {
    move |field, path| {
        std::fs::read(path).map_err(|source| EndpointError::Read {
            sink: sink.to_owned(),
            field,
            path: path.to_owned(),
            source,
        })
    }
}

/// What is wrong with a config field of `sink`.
fn field_error(sink: &str) -> impl Fn(&'static str, String) -> EndpointError + '_ {
    move |field, message| EndpointError::Invalid {
        sink: sink.to_owned(),
        field,
        message,
    }
}

/// How often a secret file is checked for a new version: a stat per check, at most once a
/// second, so the cost does not grow with the request rate.
const SECRET_CHECK_INTERVAL: Duration = Duration::from_secs(1);

/// The `Authorization` header's source, re-read when its file changes: a mounted Secret
/// rotated by the kubelet (a `..data` symlink swap), a token a Vault agent renews.
#[derive(Debug)]
struct RotatingAuth {
    sink: String,
    spec: AuthSpec,
    /// The secret's file; `None` for a secret from the environment, which never changes.
    file: Option<FileWatch>,
    checked_at: Instant,
}

impl RotatingAuth {
    fn new(sink: &str, spec: &AuthSpec) -> RotatingAuth {
        RotatingAuth {
            sink: sink.to_owned(),
            file: spec.secret_file().map(FileWatch::new),
            spec: spec.clone(),
            checked_at: Instant::now(),
        }
    }

    /// A new header when the secret file changed since the last look. A new version that
    /// cannot be used (unreadable, not UTF-8) keeps the one in force, with a warning.
    fn renewed(&mut self) -> Option<HeaderValue> {
        let file = self.file.as_mut()?;
        if self.checked_at.elapsed() < SECRET_CHECK_INTERVAL {
            return None;
        }
        self.checked_at = Instant::now();
        if !file.changed() {
            return None;
        }
        let sink = self.sink.as_str();
        match sensitive_auth_header(&self.spec, &field_reader(sink), &field_error(sink)) {
            Ok(value) => {
                info!(
                    sink,
                    "The secret file changed; requests carry the new credentials."
                );
                Some(value)
            }
            Err(e) => {
                warn!(sink, error = %e, "The secret file changed but cannot be used; keeping the credentials in force.");
                None
            }
        }
    }
}

impl AuthSpec {
    /// The file the secret comes from, if it comes from a file.
    fn secret_file(&self) -> Option<&Path> {
        match self {
            AuthSpec::Basic { password_file, .. } => password_file.as_deref(),
            AuthSpec::Bearer { token_file, .. } => token_file.as_deref(),
            AuthSpec::ApiKey { key_file, .. } => key_file.as_deref(),
        }
    }
}

/// The `Authorization` header, marked sensitive: hyper and reqwest then leave it out of their
/// Debug output.
fn sensitive_auth_header(
    auth: &AuthSpec,
    read: ReadField<'_>,
    invalid: &dyn Fn(&'static str, String) -> EndpointError,
) -> Result<HeaderValue, EndpointError> {
    let mut value = auth_header(auth, read, invalid)?;
    value.set_sensitive(true);
    Ok(value)
}

fn auth_header(
    auth: &AuthSpec,
    read: ReadField<'_>,
    invalid: &dyn Fn(&'static str, String) -> EndpointError,
) -> Result<HeaderValue, EndpointError> {
    let secret = |file: &Option<PathBuf>,
                  env: &Option<String>,
                  file_field: &'static str,
                  env_field: &'static str|
     -> Result<String, EndpointError> {
        let text = match (file, env) {
            (Some(path), _) => String::from_utf8(read(file_field, path)?)
                .map_err(|_| invalid(file_field, "is not UTF-8 text".into()))?,
            (None, Some(var)) => std::env::var(var).map_err(|_| {
                invalid(env_field, format!("environment variable {var} is not set"))
            })?,
            (None, None) => return Err(invalid(file_field, "no secret configured".into())),
        };
        Ok(text.trim_end_matches(['\r', '\n']).to_owned())
    };
    let value = match auth {
        AuthSpec::Basic {
            username,
            password_file,
            password_env,
        } => {
            use base64::Engine as _;
            let password = secret(
                password_file,
                password_env,
                "auth.basic.password_file",
                "auth.basic.password_env",
            )?;
            let encoded =
                base64::engine::general_purpose::STANDARD.encode(format!("{username}:{password}"));
            format!("Basic {encoded}")
        }
        AuthSpec::Bearer {
            token_file,
            token_env,
        } => {
            let token = secret(
                token_file,
                token_env,
                "auth.bearer.token_file",
                "auth.bearer.token_env",
            )?;
            format!("Bearer {token}")
        }
        AuthSpec::ApiKey { key_file, key_env } => {
            let key = secret(
                key_file,
                key_env,
                "auth.api_key.key_file",
                "auth.api_key.key_env",
            )?;
            format!("ApiKey {key}")
        }
    };
    // The message must not echo the value: it holds the secret.
    HeaderValue::from_str(&value).map_err(|_| {
        invalid(
            "auth",
            "the secret holds characters not allowed in a header".into(),
        )
    })
}

/// gzip at the fastest level: the sidecar's CPU is the scarce resource, and level 1 already
/// shrinks repetitive JSON logs several times.
pub fn gzip(body: &[u8]) -> Vec<u8> {
    let mut encoder = GzEncoder::new(Vec::with_capacity(body.len() / 4), Compression::fast());
    encoder
        .write_all(body)
        .expect("writing to a Vec cannot fail");
    encoder.finish().expect("writing to a Vec cannot fail")
}

/// What a protocol makes of a 2xx reply, per record of the request.
#[derive(Debug, Default)]
pub struct ItemResults {
    /// Positions (in the request's record list) the server asks to send again.
    pub retry: Vec<(usize, String)>,
    /// Positions the server refused for good, with status and reason.
    pub refused: Vec<(usize, u16, String)>,
}

/// One wire protocol on top of the shared machinery.
pub trait Protocol: Send {
    /// The MIME type of the request body.
    fn content_type(&self) -> &'static str;

    /// Where requests go.
    fn url(&self) -> &Url;

    /// Writes the request body for `records` into `body` (cleared by the caller).
    fn encode(&mut self, records: &[&OutRecord<'_>], body: &mut Vec<u8>);

    /// Reads a 2xx reply to a request of `count` records; by default the whole request was
    /// taken.
    ///
    /// # Errors
    /// When the reply cannot be understood; the request is then retried as a whole.
    fn accepted(&mut self, reply: &[u8], count: usize) -> Result<ItemResults, String> {
        let _ = (reply, count);
        Ok(ItemResults::default())
    }

    /// Bytes a record adds to a body (for cutting requests by size).
    fn record_bytes(&self, record: &OutRecord<'_>) -> usize {
        record.raw.len() + 1
    }
}

/// The records of the current batch still owed, kept across `send` calls.
#[derive(Debug)]
struct Owed {
    batch: BatchId,
    records: Vec<usize>,
}

/// Identifies a batch well enough to know that the forwarder offers the same one again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct BatchId {
    len: usize,
    first: u64,
    last: u64,
}

impl BatchId {
    pub(super) fn of(batch: &[OutRecord<'_>]) -> Self {
        let hash = |r: Option<&OutRecord<'_>>| r.map_or(0, |r| xxhash_rust::xxh3::xxh3_64(r.raw));
        Self {
            len: batch.len(),
            first: hash(batch.first()),
            last: hash(batch.last()),
        }
    }
}

/// A sink speaking `P` over HTTP: requests cut by size, retried with backoff, refused
/// records dead-lettered.
pub struct NetworkSink<P> {
    name: String,
    endpoint: Endpoint,
    protocol: P,
    batch: BatchSpec,
    backoff: Backoff,
    dead_letter: DeadLetter,
    owed: Option<Owed>,
    delay: Option<Duration>,
    body: Vec<u8>,
}

impl<P: Protocol> NetworkSink<P> {
    /// A sink for `spec` speaking `protocol`, dead-lettering into `dead_letter`'s directory.
    ///
    /// # Errors
    /// When the endpoint cannot be set up or the dead-letter journal cannot be opened.
    pub fn new(
        spec: &EndpointSpec<'_>,
        protocol: P,
        dead_letter: &DeadLetterSpec,
    ) -> Result<Self, SinkError> {
        let endpoint = Endpoint::new(spec).map_err(|e| SinkError::Setup {
            sink: spec.name.to_owned(),
            source: Box::new(e),
        })?;
        let dead_letter = DeadLetter::open(spec.name, dead_letter)?;
        Ok(Self {
            name: spec.name.to_owned(),
            endpoint,
            protocol,
            batch: spec.batch.clone(),
            backoff: Backoff::new(spec.retry.initial_backoff.0, spec.retry.max_backoff.0),
            dead_letter,
            owed: None,
            delay: None,
            body: Vec::new(),
        })
    }

    /// Cuts `owed` (positions in `batch`) into requests of at most `max_records` records and
    /// about `max_bytes` bytes.
    fn requests(&self, batch: &[OutRecord<'_>], owed: Vec<usize>) -> VecDeque<Vec<usize>> {
        let mut requests = VecDeque::new();
        let mut current = Vec::new();
        let mut bytes = 0;
        for i in owed {
            let size = self.protocol.record_bytes(&batch[i]);
            if !current.is_empty()
                && (current.len() >= self.batch.max_records
                    || bytes + size > self.batch.max_bytes.0 as usize)
            {
                requests.push_back(std::mem::take(&mut current));
                bytes = 0;
            }
            bytes += size;
            current.push(i);
        }
        if !current.is_empty() {
            requests.push_back(current);
        }
        requests
    }
}

/// The outcome of delivering what was owed of a batch.
#[derive(Default)]
struct Round {
    retry: Vec<usize>,
    refused: Vec<(usize, u16, String)>,
    unavailable: Option<(String, Option<Duration>)>,
}

impl<P: Protocol> NetworkSink<P> {
    fn deliver_round(&mut self, batch: &[OutRecord<'_>], owed: Vec<usize>) -> Round {
        let mut round = Round::default();
        let mut queue = self.requests(batch, owed);
        while let Some(request) = queue.pop_front() {
            if round.unavailable.is_some() {
                // The server is down: do not knock again within this round.
                round.retry.extend(request);
                continue;
            }
            let records: Vec<&OutRecord<'_>> = request.iter().map(|&i| &batch[i]).collect();
            let mut body = std::mem::take(&mut self.body);
            body.clear();
            self.protocol.encode(&records, &mut body);
            let url = self.protocol.url().clone();
            let content_type = self.protocol.content_type();
            // The body goes to the client; keep the allocation's size for the next one.
            self.body = Vec::with_capacity(body.capacity());
            match self.endpoint.post(&url, content_type, body) {
                Reply::Accepted(reply) => match self.protocol.accepted(&reply, request.len()) {
                    Ok(items) => {
                        let bad = items.retry.len() + items.refused.len();
                        self.endpoint
                            .metrics
                            .records
                            .inc_by((request.len() - bad) as u64);
                        if let Some((_, reason)) = items.retry.first() {
                            warn!(sink = %self.name, items = items.retry.len(), first_reason = %reason, "The server refused some items for now; retrying those alone.");
                            self.endpoint
                                .metrics
                                .retries
                                .inc_by(items.retry.len() as u64);
                        }
                        round
                            .retry
                            .extend(items.retry.iter().map(|(i, _)| request[*i]));
                        round.refused.extend(
                            items
                                .refused
                                .into_iter()
                                .map(|(i, status, reason)| (request[i], status, reason)),
                        );
                    }
                    Err(reason) => {
                        self.endpoint.metrics.retries.inc();
                        round.unavailable = Some((reason, None));
                        round.retry.extend(request);
                    }
                },
                Reply::Refused { status, reason } if request.len() > 1 => {
                    // Which record is bad? Halve until each refusal names one record; the
                    // good halves are delivered on the way.
                    let (left, right) = request.split_at(request.len() / 2);
                    warn!(sink = %self.name, status, records = request.len(), reason = %reason, "The server refused a request; splitting it to find the records it refuses.");
                    queue.push_front(right.to_vec());
                    queue.push_front(left.to_vec());
                }
                Reply::Refused { status, reason } => {
                    round.refused.push((request[0], status, reason));
                }
                Reply::Unavailable {
                    reason,
                    retry_after,
                } => {
                    self.endpoint.metrics.retries.inc();
                    round.unavailable = Some((reason, retry_after));
                    round.retry.extend(request);
                }
            }
        }
        round
    }
}

impl<P: Protocol> Sink for NetworkSink<P> {
    fn name(&self) -> &str {
        &self.name
    }

    fn send(&mut self, batch: &[OutRecord<'_>]) -> Result<(), SinkError> {
        let id = BatchId::of(batch);
        let owed = match self.owed.take() {
            Some(owed) if owed.batch == id => owed.records,
            _ => (0..batch.len()).collect(),
        };
        let mut round = self.deliver_round(batch, owed);
        if !round.refused.is_empty() {
            let count = round.refused.len();
            if let Err(e) = self.dead_letter.keep(&self.name, batch, &round.refused) {
                // Not kept, so not done with: they are sent (and refused) again next time.
                round.retry.extend(round.refused.iter().map(|(i, _, _)| *i));
                round.unavailable = Some((format!("{e:#}"), None));
            } else {
                self.endpoint.metrics.dead_lettered.inc_by(count as u64);
                let (_, status, reason) = &round.refused[0];
                error!(sink = %self.name, records = count, status, first_reason = %reason, dead_letter = %self.dead_letter.dir().display(), "The server refused records for good; they are kept in the dead-letter journal.");
            }
        }
        if round.retry.is_empty() {
            self.backoff.reset();
            self.delay = None;
            return Ok(());
        }
        let (reason, retry_after) = round
            .unavailable
            .unwrap_or_else(|| ("some items were refused for now".into(), None));
        self.delay = Some(match retry_after {
            Some(after) => self.backoff.server_delay(after),
            None => self.backoff.next_delay(),
        });
        let owed = round.retry.len();
        round.retry.sort_unstable();
        self.owed = Some(Owed {
            batch: id,
            records: round.retry,
        });
        Err(SinkError::Unavailable {
            sink: self.name.clone(),
            url: self.endpoint.shown_url().to_owned(),
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

    fn linger(&self) -> Duration {
        self.batch.linger.0
    }

    fn cancel_handle(&self) -> Option<Cancel> {
        Some(self.endpoint.cancel_handle())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_reads_seconds_and_http_dates() {
        assert_eq!(parse_retry_after(" 7 "), Some(Duration::from_secs(7)));
        assert_eq!(
            parse_retry_after("Sun, 06 Nov 1994 08:49:37 GMT"),
            Some(Duration::ZERO),
            "a date in the past means now"
        );
        assert_eq!(parse_retry_after("soon"), None);
    }

    #[test]
    fn statuses_split_into_retried_and_refused() {
        for s in [429, 500, 502, 503, 504, 401, 403, 404, 408] {
            assert!(is_retryable(s), "{s}");
        }
        for s in [400, 409, 413, 422] {
            assert!(!is_retryable(s), "{s}");
        }
    }

    #[test]
    fn logged_urls_lose_their_credentials() {
        let url = Url::parse("https://elastic:s3cret@es.example:9200/_bulk").unwrap();
        let shown = redact_url(&url);
        assert_eq!(shown, "https://es.example:9200/_bulk");
    }

    fn spec_with<'a>(
        url: &'a str,
        auth: Option<&'a AuthSpec>,
        parts: &'a (
            BTreeMap<String, String>,
            TlsSpec,
            TimeoutSpec,
            RetrySpec,
            BatchSpec,
        ),
    ) -> EndpointSpec<'a> {
        EndpointSpec {
            name: "t",
            url,
            headers: parts.0.clone(),
            auth,
            tls: &parts.1,
            timeouts: &parts.2,
            retry: &parts.3,
            batch: &parts.4,
            gzip: false,
        }
    }

    #[test]
    fn secrets_are_read_from_files_and_never_shown() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("token"), "t0ps3cret\n").unwrap();
        let parts = Default::default();
        let auth = AuthSpec::Bearer {
            token_file: Some(dir.path().join("token")),
            token_env: None,
        };
        let endpoint =
            Endpoint::new(&spec_with("http://127.0.0.1:1/x", Some(&auth), &parts)).unwrap();
        let header = &endpoint.headers[reqwest::header::AUTHORIZATION];
        assert_eq!(header.to_str().unwrap(), "Bearer t0ps3cret");
        assert!(header.is_sensitive());
        assert!(!format!("{:?}", endpoint.headers).contains("t0ps3cret"));

        let auth = AuthSpec::Basic {
            username: "u".into(),
            password_file: None,
            password_env: Some("SIDECAR_TEST_UNSET_VARIABLE".into()),
        };
        let err = Endpoint::new(&spec_with("http://127.0.0.1:1/x", Some(&auth), &parts))
            .err()
            .unwrap()
            .to_string();
        assert_eq!(
            err,
            "sink t: auth.basic.password_env: environment variable SIDECAR_TEST_UNSET_VARIABLE is not set"
        );
    }

    #[test]
    fn a_missing_ca_file_is_named() {
        let mut parts: (
            BTreeMap<String, String>,
            TlsSpec,
            TimeoutSpec,
            RetrySpec,
            BatchSpec,
        ) = Default::default();
        parts.1.ca_file = Some(PathBuf::from("/nonexistent/ca.pem"));
        let err = Endpoint::new(&spec_with("https://es:9200", None, &parts))
            .err()
            .unwrap()
            .to_string();
        assert_eq!(err, "sink t: cannot read tls.ca_file /nonexistent/ca.pem");
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("ca.pem"), "not a certificate").unwrap();
        parts.1.ca_file = Some(dir.path().join("ca.pem"));
        let err = Endpoint::new(&spec_with("https://es:9200", None, &parts))
            .err()
            .unwrap()
            .to_string();
        assert!(err.starts_with("sink t: tls.ca_file: "), "{err}");
    }

    struct Lines(Url);

    impl Protocol for Lines {
        fn content_type(&self) -> &'static str {
            "text/plain"
        }
        fn url(&self) -> &Url {
            &self.0
        }
        fn encode(&mut self, records: &[&OutRecord<'_>], body: &mut Vec<u8>) {
            for r in records {
                body.extend_from_slice(r.raw);
            }
        }
    }

    #[test]
    fn batches_are_cut_into_requests_by_records_and_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let mut parts: (
            BTreeMap<String, String>,
            TlsSpec,
            TimeoutSpec,
            RetrySpec,
            BatchSpec,
        ) = Default::default();
        parts.4 = BatchSpec {
            max_records: 3,
            max_bytes: ByteSize(2048),
            ..BatchSpec::default()
        };
        let spec = spec_with("http://127.0.0.1:1/", None, &parts);
        let dead = DeadLetterSpec {
            directory: Some(dir.path().to_owned()),
            ..DeadLetterSpec::default()
        };
        let sink = NetworkSink::new(
            &spec,
            Lines(Url::parse("http://127.0.0.1:1/").unwrap()),
            &dead,
        )
        .unwrap();
        let small = vec![b'a'; 100];
        let big = vec![b'b'; 1500];
        let raws: Vec<&[u8]> = vec![&small, &small, &small, &small, &big, &small, &big, &big];
        let batch: Vec<OutRecord<'_>> = raws.iter().map(|r| OutRecord::decode(r)).collect();
        let requests: Vec<Vec<usize>> = sink.requests(&batch, (0..8).collect()).into();
        // 3 records at most; 2048 bytes at most, except a record alone.
        assert_eq!(
            requests,
            vec![vec![0, 1, 2], vec![3, 4, 5], vec![6], vec![7]]
        );
        let requests: Vec<Vec<usize>> = sink.requests(&batch, vec![1, 5]).into();
        assert_eq!(requests, vec![vec![1, 5]], "only what is owed");
    }

    #[test]
    fn gzip_round_trips() {
        let body = b"{\"a\":1}\n".repeat(1000);
        let packed = gzip(&body);
        assert!(packed.len() < body.len() / 10);
        let mut out = Vec::new();
        std::io::Read::read_to_end(&mut flate2::read::GzDecoder::new(&packed[..]), &mut out)
            .unwrap();
        assert_eq!(out, body);
    }
}

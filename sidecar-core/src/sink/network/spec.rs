//! The settings every network sink shares: `tls:`, `auth:`, `batch:`, `retry:`, `timeout:`,
//! and the endpoint they describe together.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use reqwest::header::{HeaderName, HeaderValue};
use reqwest::Url;
use serde::Deserialize;

use crate::config::{ByteSize, FieldError, HumanDuration};

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
    /// `Authorization: Splunk <token>` (a Splunk HTTP Event Collector token).
    Splunk {
        /// File holding the token (trailing newline ignored).
        #[serde(default)]
        token_file: Option<PathBuf>,
        /// Environment variable holding the token.
        #[serde(default)]
        token_env: Option<String>,
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

/// The keys every HTTP sink's entry has besides its own (`url`, `headers`, `gzip`, `auth`,
/// `tls`, `timeouts`, `retry`, `batch`), flattened into each sink's spec so they are written
/// and documented once.
#[derive(Debug, Clone, Deserialize)]
pub struct HttpEndpointFields {
    /// Where requests go (each sink says which path it appends).
    pub url: String,
    /// Extra request headers.
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// gzip request bodies (`Content-Encoding: gzip`; default false).
    #[serde(default)]
    pub gzip: bool,
    /// Basic, bearer or API-key auth.
    #[serde(default)]
    pub auth: Option<AuthSpec>,
    /// CA and client certificate.
    #[serde(default)]
    pub tls: TlsSpec,
    /// Connect and request timeouts.
    #[serde(default)]
    pub timeouts: TimeoutSpec,
    /// Backoff between retries.
    #[serde(default)]
    pub retry: RetrySpec,
    /// Records and bytes per request.
    #[serde(default)]
    pub batch: BatchSpec,
}

impl HttpEndpointFields {
    /// The endpoint of the sink called `name`.
    pub fn spec<'a>(&'a self, name: &'a str) -> EndpointSpec<'a> {
        EndpointSpec {
            name,
            url: &self.url,
            headers: self.headers.clone(),
            auth: self.auth.as_ref(),
            tls: &self.tls,
            timeouts: &self.timeouts,
            retry: &self.retry,
            batch: &self.batch,
            gzip: self.gzip,
        }
    }
}

/// The last flattened field of a sink's spec: refuses any key no other field took, because
/// serde's `deny_unknown_fields` does nothing once a struct has a flattened field, and a
/// misspelt `timeout:` must not be ignored silently.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoOtherKeys;

impl<'de> Deserialize<'de> for NoOtherKeys {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Refuse;
        impl<'de> serde::de::Visitor<'de> for Refuse {
            type Value = NoOtherKeys;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("no keys besides the sink's own")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut map: A,
            ) -> Result<NoOtherKeys, A::Error> {
                match map.next_key::<String>()? {
                    Some(key) => Err(serde::de::Error::custom(format!("unknown field `{key}`"))),
                    None => Ok(NoOtherKeys),
                }
            }
        }
        deserializer.deserialize_map(Refuse)
    }
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
    /// Checks what serde cannot.
    ///
    /// # Errors
    /// The first field (under the sink) that is not acceptable.
    pub fn validate(&self) -> Result<(), FieldError> {
        let bad = |f: &str, m: String| Err(FieldError::new(f, m));
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
            Some(AuthSpec::Splunk {
                token_file,
                token_env,
            }) if token_file.is_some() == token_env.is_some() => {
                return bad(
                    "auth.splunk",
                    "set exactly one of token_file and token_env".into(),
                )
            }
            _ => {}
        }
        Ok(())
    }
}

//! An HTTP endpoint: the client with its timeouts, TLS and auth, and the runtime every
//! endpoint's requests run on.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
use reqwest::Url;

use super::auth::{sensitive_auth_header, RotatingAuth};
use super::gzip;
use super::metrics::SinkMetrics;
use super::reply::{classify, describe_error, parse_retry_after, Reply};
use super::spec::EndpointSpec;
use crate::signal::CancellationToken;
use crate::sink::runtime::CLIENT_RUNTIME;

/// An HTTP endpoint: the client with its timeouts, TLS and auth.
pub struct Endpoint {
    url: Url,
    shown_url: String,
    client: reqwest::Client,
    pub(super) headers: HeaderMap,
    auth: Option<RotatingAuth>,
    gzip: bool,
    cancel: CancellationToken,
    pub(super) metrics: SinkMetrics,
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
            cancel: CancellationToken::new(),
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
    pub fn with_cancel(mut self, cancel: CancellationToken) -> Self {
        self.cancel = cancel;
        self
    }

    /// The token that ends this endpoint's requests at once.
    pub fn cancel_handle(&self) -> CancellationToken {
        self.cancel.clone()
    }

    /// Waits `duration` unless the endpoint is cancelled first; false when it was.
    pub fn pause(&self, duration: Duration) -> bool {
        let Ok(runtime) = &*CLIENT_RUNTIME else {
            std::thread::sleep(duration);
            return !self.cancel.is_cancelled();
        };
        let cancel = self.cancel.clone();
        runtime.handle().block_on(async move {
            tokio::select! {
                () = tokio::time::sleep(duration) => true,
                () = cancel.cancelled() => false,
            }
        })
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
        let runtime = match &*CLIENT_RUNTIME {
            Ok(runtime) => runtime,
            Err(e) => {
                return Reply::Unavailable {
                    reason: format!("cannot start the HTTP client's runtime: {e}"),
                    retry_after: None,
                }
            }
        };
        let cancel = self.cancel.clone();
        let started = Instant::now();
        let outcome = runtime.handle().block_on(async move {
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
}

/// The URL as it may be logged: without user name and password.
pub fn redact_url(url: &Url) -> String {
    let mut shown = url.clone();
    let _ = shown.set_username("");
    let _ = shown.set_password(None);
    shown.to_string()
}

/// Reads a file named by a config field.
pub(super) type ReadField<'a> = &'a dyn Fn(&'static str, &Path) -> Result<Vec<u8>, EndpointError>;

/// Reads the file a config field of `sink` names; the error carries both.
pub(super) fn field_reader(
    sink: &str,
) -> impl Fn(&'static str, &Path) -> Result<Vec<u8>, EndpointError> + '_ {
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
pub(super) fn field_error(sink: &str) -> impl Fn(&'static str, String) -> EndpointError + '_ {
    move |field, message| EndpointError::Invalid {
        sink: sink.to_owned(),
        field,
        message,
    }
}

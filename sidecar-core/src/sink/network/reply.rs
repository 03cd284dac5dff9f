//! What a server's answer means for the records of a request: taken, to retry, or refused for
//! good.

use std::time::Duration;

use reqwest::StatusCode;

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
    /// The server took part of the request and says what became of the rest (made by a
    /// protocol's `review` only, from an error reply that names the records).
    Partial(super::ItemResults),
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
pub(super) fn parse_retry_after(value: &str) -> Option<Duration> {
    let value = value.trim();
    if let Ok(seconds) = value.parse::<u64>() {
        return Some(Duration::from_secs(seconds));
    }
    let date = chrono::DateTime::parse_from_rfc2822(value).ok()?;
    let wait = date.timestamp_millis() - chrono::Utc::now().timestamp_millis();
    Some(Duration::from_millis(wait.max(0) as u64))
}

pub(super) fn classify(status: StatusCode, retry_after: Option<Duration>, body: &[u8]) -> Reply {
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
pub(super) fn describe_error(e: &reqwest::Error) -> String {
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

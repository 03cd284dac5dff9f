//! Who may use an endpoint that hands logs out or takes them in (the forwarder's query API,
//! the collector's ingest): bearer tokens from a file of one token per line (a mounted
//! Secret, re-read when the kubelet swaps in a new version), and where such an endpoint may
//! listen without them.
//!
//! Easy to get wrong: the defaults. Without tokens an endpoint must stay on loopback (what
//! `kubectl port-forward` and `kubectl exec` reach), unless anonymous access is asked for by
//! name; a tokens file that is missing or empty at start (an optional Secret not created yet)
//! refuses every request rather than opening the endpoint, and a rotated file takes effect
//! without a restart. Tokens are compared in constant time and never logged.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use parking_lot::Mutex;
use prometheus_client::metrics::counter::Counter;
use subtle::ConstantTimeEq as _;
use tracing::{info, warn};

use crate::mounted::FileWatch;

/// How often the tokens file is checked for a new version: a stat at most once a second,
/// whatever the request rate.
const RELOAD_CHECK_INTERVAL: Duration = Duration::from_secs(1);

/// The flags of one endpoint, for messages that tell people what to set.
#[derive(Debug, Clone, Copy)]
pub struct AccessFlags {
    /// The listen address flag, e.g. `--api-listen`.
    pub listen: &'static str,
    /// The tokens file flag, e.g. `--api-tokens-file`.
    pub tokens_file: &'static str,
    /// The flag that allows anonymous access off loopback, e.g. `--api-anonymous`.
    pub anonymous: &'static str,
}

/// Why an endpoint cannot start with its access settings.
#[derive(Debug, thiserror::Error)]
pub enum AccessError {
    /// The tokens file exists but cannot be read.
    #[error("{flag}: cannot read {}", .path.display())]
    Read {
        /// The flag naming the file.
        flag: &'static str,
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// An address off loopback without tokens, and anonymous access not asked for.
    #[error("{listen} {addr}: an address other than loopback serves every client on the network; give {tokens_file} (one bearer token per line), or {anonymous} to allow anonymous access")]
    Exposed {
        /// The listen flag.
        listen: &'static str,
        /// The address.
        addr: SocketAddr,
        /// The tokens file flag.
        tokens_file: &'static str,
        /// The anonymous flag.
        anonymous: &'static str,
    },
}

/// Checks where an endpoint may listen: anywhere with tokens or anonymous access asked for,
/// loopback only otherwise.
///
/// # Errors
/// [`AccessError::Exposed`] for an address off loopback.
pub fn check_listen(
    addr: SocketAddr,
    has_tokens: bool,
    anonymous: bool,
    flags: AccessFlags,
) -> Result<(), AccessError> {
    if has_tokens || anonymous || addr.ip().is_loopback() {
        return Ok(());
    }
    Err(AccessError::Exposed {
        listen: flags.listen,
        addr,
        tokens_file: flags.tokens_file,
        anonymous: flags.anonymous,
    })
}

/// The bearer tokens that open an endpoint, re-read when their file changes.
#[derive(Debug)]
pub struct Tokens {
    flag: &'static str,
    state: Mutex<TokenFile>,
}

#[derive(Debug)]
struct TokenFile {
    watch: FileWatch,
    tokens: Vec<Vec<u8>>,
    checked_at: Instant,
}

impl Tokens {
    /// Reads the tokens in `path` (the file of flag `flag`): one per line, blank lines and
    /// lines starting with `#` ignored. A missing or empty file is no error, with a warning:
    /// every request is refused until a token appears.
    ///
    /// # Errors
    /// When the file exists but cannot be read.
    pub fn load(flag: &'static str, path: &Path) -> Result<Tokens, AccessError> {
        let tokens = match read_tokens(path) {
            Ok(tokens) => tokens,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(source) => {
                return Err(AccessError::Read {
                    flag,
                    path: path.to_owned(),
                    source,
                })
            }
        };
        if tokens.is_empty() {
            warn!(file = %path.display(), "{flag}: no token in the file yet; every request is refused until the file holds one (it is re-read when it changes).");
        } else {
            info!(file = %path.display(), tokens = tokens.len(), "{flag}: requests need one of the bearer tokens in the file.");
        }
        Ok(Tokens {
            flag,
            state: Mutex::new(TokenFile {
                watch: FileWatch::new(path),
                tokens,
                checked_at: Instant::now(),
            }),
        })
    }

    /// Whether `authorization` (the request's header) carries one of the tokens.
    pub fn allows(&self, authorization: Option<&HeaderValue>) -> bool {
        let Some(presented) = authorization.and_then(bearer_token) else {
            return false;
        };
        let mut state = self.state.lock();
        self.reload_if_changed(&mut state);
        // Every token is compared, so the time taken does not say which one came close.
        state.tokens.iter().fold(false, |found, token| {
            found | bool::from(token.ct_eq(presented))
        })
    }

    fn reload_if_changed(&self, state: &mut TokenFile) {
        if state.checked_at.elapsed() < RELOAD_CHECK_INTERVAL {
            return;
        }
        state.checked_at = Instant::now();
        if !state.watch.changed() {
            return;
        }
        let flag = self.flag;
        match read_tokens(state.watch.path()) {
            Ok(tokens) => {
                info!(file = %state.watch.path().display(), tokens = tokens.len(), "{flag}: the tokens file changed; requests are checked against the new tokens.");
                state.tokens = tokens;
            }
            Err(e) => {
                warn!(file = %state.watch.path().display(), error = %e, "{flag}: the tokens file changed but cannot be read; keeping the tokens in force.");
            }
        }
    }
}

/// The first token of a tokens file (what a client of such an endpoint sends); `None` when the
/// file holds none.
///
/// # Errors
/// When the file cannot be read.
pub fn first_token(path: &Path) -> std::io::Result<Option<String>> {
    Ok(read_tokens(path)?
        .into_iter()
        .next()
        .map(|token| String::from_utf8_lossy(&token).into_owned()))
}

fn read_tokens(path: &Path) -> std::io::Result<Vec<Vec<u8>>> {
    let text = std::fs::read(path)?;
    Ok(text
        .split(|&b| b == b'\n')
        .map(|line| line.trim_ascii())
        .filter(|line| !line.is_empty() && !line.starts_with(b"#"))
        .map(<[u8]>::to_vec)
        .collect())
}

/// The token of an `Authorization: Bearer <token>` header (the scheme in any case).
fn bearer_token(value: &HeaderValue) -> Option<&[u8]> {
    let value = value.as_bytes();
    let (scheme, token) = value.split_at_checked(7)?;
    scheme
        .eq_ignore_ascii_case(b"bearer ")
        .then(|| token.trim_ascii())
        .filter(|t| !t.is_empty())
}

/// The access rule of one HTTP server, for [`require_token`].
#[derive(Debug)]
pub struct Access {
    /// The tokens; `None` serves everyone (loopback, or anonymous access asked for).
    pub tokens: Option<Tokens>,
    /// Paths served without a token (health checks, static pages that hold no logs).
    pub public: fn(&str) -> bool,
    /// Requests refused for a missing or wrong token.
    pub refused: Counter,
}

/// Axum middleware: answers 401 to a request without one of the tokens, unless its path is
/// public. CORS preflights are answered before this runs (their layer is outside it).
pub async fn require_token(
    State(access): State<Arc<Access>>,
    request: Request,
    next: Next,
) -> Response {
    let Some(tokens) = &access.tokens else {
        return next.run(request).await;
    };
    if (access.public)(request.uri().path())
        || tokens.allows(request.headers().get(header::AUTHORIZATION))
    {
        return next.run(request).await;
    }
    access.refused.inc();
    let message = if request.headers().contains_key(header::AUTHORIZATION) {
        "the token is not one of the configured tokens"
    } else {
        "this endpoint needs a token: Authorization: Bearer <token>"
    };
    let body = serde_json::json!({ "error": message, "status": 401 }).to_string();
    (
        StatusCode::UNAUTHORIZED,
        [
            (header::WWW_AUTHENTICATE, "Bearer"),
            (header::CONTENT_TYPE, "application/json"),
        ],
        Body::from(body),
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(text: &str) -> HeaderValue {
        HeaderValue::from_str(text).unwrap()
    }

    #[test]
    fn tokens_come_one_per_line_and_follow_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tokens");
        std::fs::write(&path, "# readers\nalpha-1\n\n  beta-2  \n").unwrap();
        let tokens = Tokens::load("--api-tokens-file", &path).unwrap();
        assert!(tokens.allows(Some(&header("Bearer alpha-1"))));
        assert!(tokens.allows(Some(&header("bearer beta-2"))));
        for refused in [
            "Bearer alpha",
            "Bearer # readers",
            "Bearer ",
            "Basic alpha-1",
            "alpha-1",
        ] {
            assert!(!tokens.allows(Some(&header(refused))), "{refused}");
        }
        assert!(!tokens.allows(None));
        // The kubelet's swap: a new file in place of the old.
        let next = dir.path().join("tokens.next");
        std::fs::write(&next, "gamma-3\n").unwrap();
        std::fs::rename(&next, &path).unwrap();
        tokens.state.lock().checked_at -= RELOAD_CHECK_INTERVAL;
        assert!(tokens.allows(Some(&header("Bearer gamma-3"))));
        assert!(!tokens.allows(Some(&header("Bearer alpha-1"))));
    }

    #[test]
    fn a_missing_file_refuses_everything_until_it_appears() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tokens");
        let tokens = Tokens::load("--api-tokens-file", &path).unwrap();
        assert!(!tokens.allows(Some(&header("Bearer anything"))));
        std::fs::write(&path, "late\n").unwrap();
        tokens.state.lock().checked_at -= RELOAD_CHECK_INTERVAL;
        assert!(tokens.allows(Some(&header("Bearer late"))));
    }

    #[test]
    fn only_loopback_is_open_without_tokens() {
        let flags = AccessFlags {
            listen: "--api-listen",
            tokens_file: "--api-tokens-file",
            anonymous: "--api-anonymous",
        };
        let lo: SocketAddr = "127.0.0.1:9104".parse().unwrap();
        let lo6: SocketAddr = "[::1]:9104".parse().unwrap();
        let any: SocketAddr = "0.0.0.0:9104".parse().unwrap();
        assert!(check_listen(lo, false, false, flags).is_ok());
        assert!(check_listen(lo6, false, false, flags).is_ok());
        assert!(check_listen(any, true, false, flags).is_ok());
        assert!(check_listen(any, false, true, flags).is_ok());
        let err = check_listen(any, false, false, flags)
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with("--api-listen 0.0.0.0:9104: an address other than loopback")
                && err.contains("--api-tokens-file")
                && err.contains("--api-anonymous"),
            "{err}"
        );
    }
}

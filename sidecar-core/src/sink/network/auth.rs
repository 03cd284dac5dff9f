//! The `Authorization` header, from config or from a file re-read when it changes.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use reqwest::header::HeaderValue;
use tracing::{info, warn};

use super::endpoint::{field_error, field_reader, EndpointError, ReadField};
use super::spec::AuthSpec;
use crate::mounted::FileWatch;

/// How often a secret file is checked for a new version: a stat per check, at most once a
/// second, so the cost does not grow with the request rate.
const SECRET_CHECK_INTERVAL: Duration = Duration::from_secs(1);

/// The `Authorization` header's source, re-read when its file changes: a mounted Secret
/// rotated by the kubelet (a `..data` symlink swap), a token a Vault agent renews.
#[derive(Debug)]
pub(super) struct RotatingAuth {
    sink: String,
    spec: AuthSpec,
    /// The secret's file; `None` for a secret from the environment, which never changes.
    file: Option<FileWatch>,
    checked_at: Instant,
}

impl RotatingAuth {
    pub(super) fn new(sink: &str, spec: &AuthSpec) -> RotatingAuth {
        RotatingAuth {
            sink: sink.to_owned(),
            file: spec.secret_file().map(FileWatch::new),
            spec: spec.clone(),
            checked_at: Instant::now(),
        }
    }

    /// A new header when the secret file changed since the last look. A new version that
    /// cannot be used (unreadable, not UTF-8) keeps the one in force, with a warning.
    pub(super) fn renewed(&mut self) -> Option<HeaderValue> {
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
    pub(super) fn secret_file(&self) -> Option<&Path> {
        match self {
            AuthSpec::Basic { password_file, .. } => password_file.as_deref(),
            AuthSpec::Bearer { token_file, .. } => token_file.as_deref(),
            AuthSpec::ApiKey { key_file, .. } => key_file.as_deref(),
            AuthSpec::Splunk { token_file, .. } => token_file.as_deref(),
        }
    }
}

/// The `Authorization` header, marked sensitive: hyper and reqwest then leave it out of their
/// Debug output.
pub(super) fn sensitive_auth_header(
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
        // The schemes that send the secret as it is, after their name.
        AuthSpec::Bearer {
            token_file: file,
            token_env: env,
        } => format!(
            "Bearer {}",
            secret(file, env, "auth.bearer.token_file", "auth.bearer.token_env")?
        ),
        AuthSpec::ApiKey {
            key_file: file,
            key_env: env,
        } => format!(
            "ApiKey {}",
            secret(file, env, "auth.api_key.key_file", "auth.api_key.key_env")?
        ),
        AuthSpec::Splunk {
            token_file: file,
            token_env: env,
        } => format!(
            "Splunk {}",
            secret(file, env, "auth.splunk.token_file", "auth.splunk.token_env")?
        ),
    };
    // The message must not echo the value: it holds the secret.
    HeaderValue::from_str(&value).map_err(|_| {
        invalid(
            "auth",
            "the secret holds characters not allowed in a header".into(),
        )
    })
}

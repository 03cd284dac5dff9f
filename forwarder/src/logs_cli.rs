//! `forwarder logs [SOURCE…]`: the pod's processed records the way `kubectl logs` and
//! `docker logs` show them, read from the journal directory or from a forwarder's query API.
//!
//! Easy to get wrong: exit codes and messages are the interface. A usage error (bad flag
//! value, unknown source) is one line on stderr and exit code 2, Ctrl+C is 130, a closed pipe
//! (`| head`) is a quiet 0; the flags become the same named parameters the HTTP API checks,
//! so both refuse the same things with the same words.

use std::io::{IsTerminal as _, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, SystemTime};

use clap::Args;
use sidecar_core::config::ByteSize;
use sidecar_core::query::index::SourceIndex;
use sidecar_core::query::request::{self, LogsRequest, QueryLimits, QueryOutput};
use sidecar_core::query::scan::{self, Follower};
use sidecar_core::query::{Level, ParamError};
use sidecar_core::signal::{DirWatcher, Wakeup};

use crate::fanout::{self, Event, Selection};

/// How often a local follow re-reads the commit file when no file event woke it (the watch
/// is the fast path; this backs up a lost event).
const FOLLOW_POLL: Duration = Duration::from_millis(500);

/// The most a tail holds in memory (see `local`).
const TAIL_MAX_BYTES: usize = 32 << 20;

/// Flags of `forwarder logs`.
#[derive(Debug, Clone, Args)]
#[command(after_help = "\
Filters combine: a record must pass each one given; several values of one filter (SOURCE…,
--container, --pod, --namespace) keep records of any of them.

Examples:
  forwarder logs -f -n 20 access.log               last 20 records of access.log, then new ones
  forwarder logs --stderr --container web          one container's stderr (node mode)
  forwarder logs --namespace shop --pod shop-7d9f  one pod's records, every container
  forwarder logs --server http://pod-ip:9104 -c web -c db --since 10m")]
pub struct LogsArgs {
    /// Source file names (e.g. access.log); none: every source. A container runtime's files
    /// are all named 0.log: select a container with --container instead.
    #[arg(value_name = "SOURCE")]
    pub sources: Vec<String>,
    /// Keep printing records as they are committed, until Ctrl+C.
    #[arg(short = 'f', long)]
    pub follow: bool,
    /// Only the last N matching records.
    #[arg(
        short = 'n',
        long = "tail",
        value_name = "N",
        allow_hyphen_values = true
    )]
    pub tail: Option<String>,
    /// Records collected since a time: 30s, 5m, 1h, 7d (ago) or RFC 3339.
    #[arg(long, allow_hyphen_values = true)]
    pub since: Option<String>,
    /// Records collected until a time (same forms as --since).
    #[arg(long, allow_hyphen_values = true)]
    pub until: Option<String>,
    /// Start each text line with the record's time: the container runtime's for a container's
    /// line, else collected_at.
    #[arg(short = 't', long)]
    pub timestamps: bool,
    /// Only what containers wrote to stdout (with --stderr too: both, the default).
    #[arg(long)]
    pub stdout: bool,
    /// Only what containers wrote to stderr (with --stdout too: both, the default).
    #[arg(long)]
    pub stderr: bool,
    /// Only records of this container (kubernetes.container_name, set in node mode); repeat
    /// it for several.
    #[arg(short = 'c', long = "container", value_name = "NAME")]
    pub containers: Vec<String>,
    /// Only records of this pod (kubernetes.pod_name, set when the processor adds Kubernetes
    /// metadata); repeat it for several.
    #[arg(long = "pod", value_name = "NAME")]
    pub pods: Vec<String>,
    /// Only records of this namespace (kubernetes.namespace); repeat it for several. Long
    /// form only: -n is --tail.
    #[arg(long = "namespace", value_name = "NS")]
    pub namespaces: Vec<String>,
    /// Minimum level: DEBUG, INFO, WARNING, ERROR or CRITICAL.
    #[arg(long)]
    pub level: Option<String>,
    /// Only records whose message matches this regex.
    #[arg(long, allow_hyphen_values = true)]
    pub grep: Option<String>,
    /// Only records of this category (log_category).
    #[arg(long)]
    pub category: Option<String>,
    /// Only these fields, comma-separated.
    #[arg(long)]
    pub fields: Option<String>,
    /// Output: text (human lines) or json (NDJSON records).
    #[arg(short = 'o', long, default_value = "text", value_parser = ["text", "json"])]
    pub output: String,
    /// Ask a forwarder's query API (e.g. http://pod-ip:9104) instead of reading the journal.
    #[arg(long, env = "FORWARDER_LOGS_SERVER")]
    pub server: Option<String>,
    /// Ask every pod this Kubernetes label selector finds (e.g. app=logging-demo) through its
    /// query API; the answers are merged by time, each line marked with its pod.
    #[arg(long, value_name = "LABELS")]
    pub selector: Option<String>,
    /// The namespace --selector looks in (default: this pod's, from POD_NAMESPACE or the
    /// service account).
    #[arg(long, value_name = "NS")]
    pub selector_namespace: Option<String>,
    /// With --selector: ask at most this many pods (the first by name).
    #[arg(long, default_value_t = 20)]
    pub max_pods: usize,
    /// With --selector: read at most this much from each pod.
    #[arg(long, default_value = "4MiB")]
    pub max_bytes_per_pod: ByteSize,
    /// The Kubernetes API server --selector lists pods from (plain HTTP, no credentials, for
    /// tests); default: the in-cluster address and service account.
    #[arg(long, env = "FORWARDER_KUBERNETES_API", hide = true)]
    pub kubernetes_api: Option<String>,
    /// With --server or --selector: a file whose first token line is sent as
    /// `Authorization: Bearer` (the API's --api-tokens-file, or one line of it).
    #[arg(long, env = "FORWARDER_LOGS_TOKEN_FILE", value_name = "FILE")]
    pub token_file: Option<PathBuf>,
    /// The processed journal to read (without --server).
    #[arg(long, env = "FORWARDER_INPUT_DIR", default_value = "/processed-logs")]
    pub input_dir: PathBuf,
    /// No colors, even on a terminal (also when NO_COLOR is set).
    #[arg(long)]
    pub no_color: bool,
}

/// Why the command failed: a usage error (exit 2) or a runtime one (exit 1).
#[derive(Debug)]
pub enum CliError {
    /// The user asked for something that cannot be: exit code 2.
    Usage(String),
    /// Something went wrong reading: exit code 1.
    Failed(String),
}

impl CliError {
    /// Prints the error as one line and returns the exit code.
    pub fn report(&self, command: &str) -> ExitCode {
        match self {
            Self::Usage(m) => {
                eprintln!("forwarder {command}: {m}");
                ExitCode::from(2)
            }
            Self::Failed(m) => {
                eprintln!("forwarder {command}: error: {m}");
                ExitCode::from(1)
            }
        }
    }
}

fn usage(e: &ParamError) -> CliError {
    let flag = match e.parameter.as_str() {
        "source" => "SOURCE".to_owned(),
        "format" => "--output".to_owned(),
        other => format!("--{other}"),
    };
    CliError::Usage(format!("{flag}: {}", e.message))
}

impl LogsArgs {
    /// The flags as the API's named parameters.
    pub fn params(&self) -> Vec<(String, String)> {
        let mut params = Vec::new();
        let mut add = |k: &str, v: &str| params.push((k.to_owned(), v.to_owned()));
        for source in &self.sources {
            add("source", source);
        }
        for (name, values) in [
            ("container", &self.containers),
            ("pod", &self.pods),
            ("namespace", &self.namespaces),
        ] {
            for value in values {
                add(name, value);
            }
        }
        if let Some(n) = &self.tail {
            add("tail", n);
        }
        for (name, value) in [
            ("since", &self.since),
            ("until", &self.until),
            ("level", &self.level),
            ("grep", &self.grep),
            ("category", &self.category),
            ("fields", &self.fields),
        ] {
            if let Some(v) = value {
                add(name, v);
            }
        }
        match (self.stdout, self.stderr) {
            (true, false) => add("stream", "stdout"),
            (false, true) => add("stream", "stderr"),
            _ => {}
        }
        if self.follow {
            add("follow", "true");
        }
        if self.timestamps {
            add("timestamps", "true");
        }
        add("format", &self.output);
        params
    }

    fn color(&self) -> bool {
        !self.no_color
            && self.output == "text"
            && std::env::var_os("NO_COLOR").is_none()
            && std::io::stdout().is_terminal()
    }
}

/// Runs `forwarder logs`, blocking, until done (or forever with --follow).
///
/// # Errors
/// A usage error or a failure, see [`CliError`].
pub fn run(args: &LogsArgs) -> Result<(), CliError> {
    let params = args.params();
    let request = LogsRequest::from_params(&params, SystemTime::now()).map_err(|e| usage(&e))?;
    let mut out = Printer::new(args.color(), args.timestamps);
    let token = args.token_file.as_deref().map(read_token).transpose()?;
    match (&args.selector, &args.server) {
        (Some(_), Some(_)) => Err(CliError::Usage(
            "--selector and --server: give one (--selector finds the servers)".into(),
        )),
        (Some(selector), None) => {
            let selection = Selection {
                selector: selector.clone(),
                namespace: selector_namespace(args.selector_namespace.as_deref())?,
                api_server: args
                    .kubernetes_api
                    .as_deref()
                    .map(str::parse)
                    .transpose()
                    .map_err(|e| CliError::Usage(format!("--kubernetes-api: {e}")))?,
                max_pods: args.max_pods.max(1),
                max_bytes_per_pod: args.max_bytes_per_pod.0 as usize,
                token,
            };
            fan_out(&selection, &request, &params, &mut out)
        }
        (None, Some(server)) => remote(server, token.as_deref(), &params, &mut out),
        (None, None) => local(args, &request, &mut out),
    }
}

/// The namespace `--selector` looks in: the flag, else this pod's own.
pub fn selector_namespace(flag: Option<&str>) -> Result<String, CliError> {
    const SERVICE_ACCOUNT_NAMESPACE: &str =
        "/var/run/secrets/kubernetes.io/serviceaccount/namespace";
    if let Some(namespace) = flag {
        return Ok(namespace.to_owned());
    }
    std::env::var("POD_NAMESPACE")
        .ok()
        .filter(|n| !n.is_empty())
        .or_else(|| {
            std::fs::read_to_string(SERVICE_ACCOUNT_NAMESPACE)
                .ok()
                .map(|n| n.trim().to_owned())
        })
        .ok_or_else(|| {
            CliError::Usage(
                "--selector-namespace: not running in a pod (no POD_NAMESPACE); give the namespace"
                    .into(),
            )
        })
}

/// `--selector`: every pod's answer, merged by time (a follow prints each pod's lines as they
/// come); pods that do not answer are named on stderr.
fn fan_out(
    selection: &Selection,
    request: &LogsRequest,
    params: &[(String, String)],
    out: &mut Printer,
) -> Result<(), CliError> {
    let runtime = client_runtime()?;
    runtime.block_on(async {
        let found = fanout::find_pods(selection)
            .await
            .map_err(|e| CliError::Failed(format!("--selector: {e:#}")))?;
        for (pod, why) in &found.left_out {
            eprintln!("forwarder logs: pod {pod} not asked: {why}");
        }
        if found.pods.is_empty() {
            return Err(CliError::Failed(format!(
                "--selector {}: no running pod in namespace {}",
                selection.selector, selection.namespace
            )));
        }
        let mut events = fanout::ask_pods(&found.pods, fanout::pod_params(params), selection);
        let (mut open, mut problems, mut records) = (found.pods.len(), 0, Vec::new());
        let mut line = Vec::new();
        while open > 0 {
            match events.recv().await {
                Some(Event::Record { pod, raw }) if request.follow => {
                    line.clear();
                    fanout::write_marked(&request.output, &pod, &raw, &mut line);
                    out.print(&line)?;
                }
                Some(Event::Record { pod, raw }) => records.push((pod, raw)),
                Some(Event::Problem { pod, reason }) => {
                    problems += 1;
                    eprintln!("forwarder logs: pod {pod}: {reason}");
                }
                Some(Event::Done) => open -= 1,
                None => break,
            }
        }
        if problems == found.pods.len() && records.is_empty() {
            return Err(CliError::Failed("no pod answered".into()));
        }
        let mut text = Vec::new();
        for (pod, raw) in fanout::merge(records, request.tail) {
            fanout::write_marked(&request.output, &pod, &raw, &mut text);
        }
        out.print(&text)
    })
}

/// The first token in a tokens file (one per line, `#` comments).
fn read_token(path: &std::path::Path) -> Result<String, CliError> {
    sidecar_core::access::first_token(path)
        .map_err(|e| {
            CliError::Failed(format!("--token-file: cannot read {}: {e}", path.display()))
        })?
        .ok_or_else(|| CliError::Failed(format!("--token-file: {} holds no token", path.display())))
}

fn local(args: &LogsArgs, request: &LogsRequest, out: &mut Printer) -> Result<(), CliError> {
    let dir = &args.input_dir;
    if !dir.join(sidecar_core::journal::COMMIT_FILE).exists() {
        return Err(CliError::Failed(format!(
            "no processed journal in {} yet (use --input-dir DIR, or --server URL for a remote forwarder)",
            dir.display()
        )));
    }
    check_sources(dir, request)?;
    if let Some(category) = &request.filter.category {
        check_category(dir, category)?;
    }
    // A tail is gathered newest first, so it is held in memory: bound it, since this runs
    // inside the forwarder's container and shares its memory limit. A window streams.
    let limits = QueryLimits {
        max_output_bytes: if request.tail.is_some() {
            TAIL_MAX_BYTES
        } else {
            usize::MAX
        },
        ..QueryLimits::default()
    };
    let mut streamed = Streamed {
        printer: out,
        buf: Vec::new(),
        error: None,
    };
    let end = request::run(dir, request, limits, &mut streamed);
    streamed.flush();
    if let Some(e) = streamed.error {
        return Err(e);
    }
    let end = end.map_err(|e| CliError::Failed(format!("{e:#}")))?;
    if end.truncated {
        eprintln!(
            "forwarder logs: only the newest {} MiB of the tail are shown; narrow it with --since, a source, --level or --grep",
            TAIL_MAX_BYTES >> 20
        );
    }
    let mut buf = Vec::new();
    if !request.follow {
        return Ok(());
    }
    let start = request::follow_start(dir, request, request.tail.map(|_| end.end))
        .map_err(|e| CliError::Failed(format!("{e:#}")))?;
    let mut follower = Follower::new(dir, start);
    // A commit writes commit.json: the watch wakes us within milliseconds.
    let wakeup = Wakeup::new();
    let _watcher = DirWatcher::start([dir.as_path()], &wakeup);
    let mut skipped = 0;
    loop {
        buf.clear();
        let before = follower.position();
        let going = request::follow_step(&mut follower, request, 1 << 20, &mut buf)
            .map_err(|e| CliError::Failed(format!("{e:#}")))?;
        out.print(&buf)?;
        if follower.skipped_segments() > skipped {
            skipped = follower.skipped_segments();
            eprintln!("forwarder logs: journal segments were deleted by retention before they were read; some records were skipped");
        }
        if !going {
            return Ok(());
        }
        if follower.position() == before {
            wakeup.wait(FOLLOW_POLL);
        }
    }
}

/// Formatted records on their way to stdout in 64 KiB pieces.
struct Streamed<'a> {
    printer: &'a mut Printer,
    buf: Vec<u8>,
    error: Option<CliError>,
}

impl Streamed<'_> {
    fn flush(&mut self) {
        if self.error.is_none() {
            if let Err(e) = self.printer.print(&self.buf) {
                self.error = Some(e);
            }
        }
        self.buf.clear();
    }
}

impl QueryOutput for Streamed<'_> {
    fn record(&mut self, formatted: &[u8]) -> bool {
        self.buf.extend_from_slice(formatted);
        if self.buf.len() >= 64 << 10 {
            self.flush();
        }
        self.error.is_none()
    }
}

/// An unknown source is a usage error that lists the known ones; when no container is selected
/// and the name is a container's, it also says to use --container.
fn check_sources(dir: &std::path::Path, request: &LogsRequest) -> Result<(), CliError> {
    let mut missing = Vec::new();
    for source in &request.filter.sources {
        // A backward look finds a source that logged lately at once.
        let found = scan::has_source(dir, source, scan::DEFAULT_CHUNK_BYTES)
            .map_err(|e| CliError::Failed(format!("{e:#}")))?;
        if !found {
            missing.push(source);
        }
    }
    if missing.is_empty() {
        return Ok(());
    }
    let mut index = SourceIndex::open(dir).map_err(|e| CliError::Failed(format!("{e:#}")))?;
    index
        .update(usize::MAX)
        .map_err(|e| CliError::Failed(format!("{e:#}")))?;
    let Some(unknown) = missing.iter().find(|s| !index.knows(s)) else {
        return Ok(());
    };
    let known = index.names();
    let mut message = format!(
        "unknown source {unknown:?}; known sources: {}",
        sidecar_core::query::known_list(&known)
    );
    if request.filter.containers.is_empty()
        && scan::has_container(dir, unknown, scan::DEFAULT_CHUNK_BYTES)
            .map_err(|e| CliError::Failed(format!("{e:#}")))?
    {
        message.push_str(&format!(
            "; {unknown:?} is a container: use --container {unknown}"
        ));
    }
    Err(CliError::Usage(message))
}

/// An unknown category is a usage error that lists the known ones, as an unknown source is.
fn check_category(dir: &std::path::Path, category: &str) -> Result<(), CliError> {
    let mut index = SourceIndex::open(dir).map_err(|e| CliError::Failed(format!("{e:#}")))?;
    index
        .update(usize::MAX)
        .map_err(|e| CliError::Failed(format!("{e:#}")))?;
    if index.knows_category(category) {
        return Ok(());
    }
    Err(CliError::Usage(unknown_category(
        category,
        &index.category_names(),
    )))
}

/// The message for a category no retained record has.
pub fn unknown_category(category: &str, known: &[String]) -> String {
    format!(
        "--category: unknown category {category:?}; known categories: {}",
        sidecar_core::query::known_list(known)
    )
}

/// A request error as a person reads it: reqwest's own text ("error sending request for url")
/// hides the cause, which is the useful part ("Connection refused").
pub fn describe_request_error(error: &reqwest::Error) -> String {
    let mut text = error.to_string();
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

/// The runtime a remote or fan-out query's client runs on, in this thread.
fn client_runtime() -> Result<tokio::runtime::Runtime, CliError> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| CliError::Failed(e.to_string()))
}

fn remote(
    server: &str,
    token: Option<&str>,
    params: &[(String, String)],
    out: &mut Printer,
) -> Result<(), CliError> {
    let runtime = client_runtime()?;
    runtime.block_on(remote_async(server, token, params, out))
}

async fn remote_async(
    server: &str,
    token: Option<&str>,
    params: &[(String, String)],
    out: &mut Printer,
) -> Result<(), CliError> {
    let url = format!("{}/logs", server.trim_end_matches('/'));
    let mut request = reqwest::Client::new().get(&url).query(params);
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    let mut response = request.send().await.map_err(|e| {
        CliError::Failed(format!(
            "cannot reach {url}: {}",
            describe_request_error(&e)
        ))
    })?;
    let status = response.status();
    if status == reqwest::StatusCode::UNAUTHORIZED {
        let hint = if token.is_some() {
            "the token from --token-file is not one of the API's tokens"
        } else {
            "the API needs a token: give --token-file FILE"
        };
        return Err(CliError::Failed(format!("{url}: {hint}")));
    }
    if !status.is_success() {
        let body = response.text().await.unwrap_or_default();
        let message = serde_json::from_str::<serde_json::Value>(&body)
            .ok()
            .and_then(|v| v["error"].as_str().map(str::to_owned))
            .unwrap_or_else(|| format!("{url} answered {status}: {}", body.trim()));
        return Err(if status.is_client_error() {
            CliError::Usage(remote_message(&message))
        } else {
            CliError::Failed(message)
        });
    }
    if response.headers().contains_key("x-logs-truncated") {
        eprintln!("forwarder logs: the answer was cut at the server's size limit; narrow it with --tail, --since or a source");
    }
    let mut pending: Vec<u8> = Vec::new();
    while let Some(chunk) = response
        .chunk()
        .await
        .map_err(|e| CliError::Failed(format!("reading from {url}: {e}")))?
    {
        pending.extend_from_slice(&chunk);
        if let Some(i) = memchr_last_newline(&pending) {
            let rest = pending.split_off(i + 1);
            out.print(&pending)?;
            pending = rest;
        }
    }
    out.print(&pending)
}

/// The API names parameters; the CLI user typed flags.
fn remote_message(message: &str) -> String {
    match message.split_once(": ") {
        Some(("source", rest)) => rest
            .replacen(" (known: ", "; known sources: ", 1)
            .replace(')', "")
            .replacen(": use container=", ": use --container ", 1),
        Some(("category", rest)) => format!(
            "--category: {}",
            rest.replacen(" (known: ", "; known categories: ", 1)
                .replace(')', "")
        ),
        Some(("format", rest)) => format!("--output: {rest}"),
        Some((p, rest)) if request::PARAMETERS.contains(&p) => format!("--{p}: {rest}"),
        _ => message.to_owned(),
    }
}

fn memchr_last_newline(bytes: &[u8]) -> Option<usize> {
    bytes.iter().rposition(|&b| b == b'\n')
}

/// Writes formatted records to stdout, colored by level on a terminal.
struct Printer {
    color: bool,
    timestamps: bool,
    stdout: std::io::Stdout,
}

impl Printer {
    fn new(color: bool, timestamps: bool) -> Self {
        Self {
            color,
            timestamps,
            stdout: std::io::stdout(),
        }
    }

    fn print(&mut self, text: &[u8]) -> Result<(), CliError> {
        if text.is_empty() {
            return Ok(());
        }
        let mut lock = self.stdout.lock();
        let written = if self.color {
            let mut colored = Vec::with_capacity(text.len() + text.len() / 8);
            for line in text.split_inclusive(|&b| b == b'\n') {
                match color_of(line, self.timestamps) {
                    Some(code) => {
                        colored.extend_from_slice(code.as_bytes());
                        colored.extend_from_slice(line.strip_suffix(b"\n").unwrap_or(line));
                        colored.extend_from_slice(b"\x1b[0m\n");
                    }
                    None => colored.extend_from_slice(line),
                }
            }
            lock.write_all(&colored)
        } else {
            lock.write_all(text)
        };
        match written.and_then(|()| lock.flush()) {
            Ok(()) => Ok(()),
            // `forwarder logs | head`: the reader is gone, which is not an error.
            Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => std::process::exit(0),
            Err(e) => Err(CliError::Failed(format!("writing to stdout: {e}"))),
        }
    }
}

/// The ANSI color of a text line by its level column (`[time ]source LEVEL …`).
fn color_of(line: &[u8], timestamps: bool) -> Option<&'static str> {
    let text = std::str::from_utf8(line).ok()?;
    let level = text
        .split_whitespace()
        .nth(if timestamps { 2 } else { 1 })?;
    Some(match Level::parse(level)? {
        Level::Trace | Level::Debug => "\x1b[2m",
        Level::Info => return None,
        Level::Warning => "\x1b[33m",
        Level::Error | Level::Critical => "\x1b[31m",
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_are_colored_by_their_level_column() {
        assert_eq!(color_of(b"a.log ERROR   boom\n", false), Some("\x1b[31m"));
        assert_eq!(
            color_of(b"2026-11-22T10:00:00.000Z a.log WARNING x\n", true),
            Some("\x1b[33m")
        );
        assert_eq!(color_of(b"a.log INFO    fine\n", false), None);
    }

    #[test]
    fn api_messages_name_the_flag() {
        assert_eq!(
            remote_message("since: cannot read \"x\" as a time"),
            "--since: cannot read \"x\" as a time"
        );
        assert_eq!(
            remote_message("source: unknown source \"x\" (known: a.log, b.log)"),
            "unknown source \"x\"; known sources: a.log, b.log"
        );
        assert_eq!(
            remote_message(
                "source: unknown source \"web\" (known: 0.log); \"web\" is a container: use container=web"
            ),
            "unknown source \"web\"; known sources: 0.log; \"web\" is a container: use --container web"
        );
        assert_eq!(
            remote_message("container: \"Web\" is not a Kubernetes container name (…)"),
            "--container: \"Web\" is not a Kubernetes container name (…)"
        );
    }
}

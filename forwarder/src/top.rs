//! `forwarder top`: a terminal view of the pod's logs refreshed every second — per-source
//! rates, levels and errors, the sinks' committed state and the forwarder's lag — from the
//! journal directory or a forwarder's `/stats`.
//!
//! Easy to get wrong: the terminal. The view redraws with plain ANSI (home, clear) only on a
//! terminal; piped (or with `--once`) it prints frames one after another, so it can be logged
//! and tested.

use std::io::{IsTerminal as _, Write};
use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use clap::Args;
use serde_json::Value;
use sidecar_core::query::index::SourceIndex;

use crate::api;
use crate::logs_cli::CliError;

/// Flags of `forwarder top`.
#[derive(Debug, Clone, Args)]
pub struct TopArgs {
    /// Ask a forwarder's query API (e.g. http://pod-ip:9104) instead of reading the journal.
    #[arg(long, env = "FORWARDER_LOGS_SERVER")]
    pub server: Option<String>,
    /// The processed journal to read (without --server).
    #[arg(long, env = "FORWARDER_INPUT_DIR", default_value = "/processed-logs")]
    pub input_dir: PathBuf,
    /// Seconds between refreshes.
    #[arg(long, default_value_t = 1.0)]
    pub interval: f64,
    /// Print one frame and exit.
    #[arg(long)]
    pub once: bool,
}

/// Runs the view until Ctrl+C (or after one frame with `--once`).
///
/// # Errors
/// When the journal or the server cannot be read.
pub fn run(args: &TopArgs) -> Result<(), CliError> {
    if !(0.1..=3600.0).contains(&args.interval) {
        return Err(CliError::Usage(format!(
            "--interval: must be between 0.1 and 3600 seconds, got {}",
            args.interval
        )));
    }
    let mut source = match &args.server {
        Some(url) => StatsSource::Remote(format!("{}/stats", url.trim_end_matches('/'))),
        None => StatsSource::Local(
            args.input_dir.clone(),
            Box::new(
                SourceIndex::open(&args.input_dir)
                    .map_err(|e| CliError::Failed(format!("{e:#}")))?,
            ),
        ),
    };
    let redraw = !args.once && std::io::stdout().is_terminal();
    loop {
        let stats = source.fetch()?;
        let frame = render(&stats, SystemTime::now());
        let mut out = std::io::stdout().lock();
        let prefix = if redraw { "\x1b[H\x1b[2J" } else { "" };
        if write!(out, "{prefix}{frame}")
            .and_then(|()| out.flush())
            .is_err()
        {
            return Ok(()); // The terminal or pipe is gone.
        }
        if args.once {
            return Ok(());
        }
        std::thread::sleep(Duration::from_secs_f64(args.interval));
    }
}

/// Puts the terminal back after Ctrl+C (colors off).
pub fn restore_terminal() {
    if std::io::stdout().is_terminal() {
        print!("\x1b[0m");
        let _ = std::io::stdout().flush();
    }
}

enum StatsSource {
    /// The journal read here (its index is large: boxed).
    Local(PathBuf, Box<SourceIndex>),
    Remote(String),
}

impl StatsSource {
    fn fetch(&mut self) -> Result<Value, CliError> {
        match self {
            Self::Local(dir, index) => {
                index
                    .update(usize::MAX)
                    .map_err(|e| CliError::Failed(format!("{e:#}")))?;
                let snapshot = index.snapshot(SystemTime::now());
                Ok(api::stats_body(snapshot, api::forwarder_progress(dir)))
            }
            Self::Remote(url) => {
                get_json(url).map_err(|e| CliError::Failed(format!("cannot read {url}: {e}")))
            }
        }
    }
}

/// Blocking GET of a JSON document without reqwest's blocking client: a small runtime per
/// call is cheap at one call per second.
fn get_json(url: &str) -> Result<Value, String> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    runtime.block_on(async {
        let describe = |e: reqwest::Error| crate::logs_cli::describe_request_error(&e);
        let response = reqwest::get(url).await.map_err(describe)?;
        response.json().await.map_err(describe)
    })
}

/// One frame of the view.
pub fn render(stats: &Value, now: SystemTime) -> String {
    let mut frame = String::new();
    let total = stats["records"].as_u64().unwrap_or(0);
    frame.push_str(&format!(
        "forwarder top — {}   records: {}   rate: {:.1}/s   since {}\n\n",
        humantime::format_rfc3339_seconds(now),
        total,
        stats["rate_per_s"].as_f64().unwrap_or(0.0),
        stats["since"].as_str().unwrap_or("-"),
    ));
    frame.push_str(&format!(
        "{:<28} {:>8} {:>10} {:>7} {:>7} {:>7} {:>7}  {:<12} {}\n",
        "SOURCE", "RATE/s", "RECORDS", "ERROR", "WARNING", "INFO", "DEBUG", "CATEGORY", "LAST"
    ));
    for source in stats["sources"].as_array().into_iter().flatten() {
        let level = |l: &str| source["levels"][l].as_u64().unwrap_or(0);
        frame.push_str(&format!(
            "{:<28} {:>8.1} {:>10} {:>7} {:>7} {:>7} {:>7}  {:<12} {}\n",
            source["name"].as_str().unwrap_or("-"),
            source["rate_per_s"].as_f64().unwrap_or(0.0),
            source["records"].as_u64().unwrap_or(0),
            level("ERROR") + level("CRITICAL"),
            level("WARNING"),
            level("INFO"),
            level("DEBUG") + level("TRACE"),
            source["category"].as_str().unwrap_or("-"),
            source["last_at"].as_str().unwrap_or("-"),
        ));
    }
    let fwd = &stats["forwarder"];
    frame.push_str(&format!(
        "\nforwarder: {} bytes of the processed journal not delivered yet; delivered up to segment {} byte {}, of segment {} byte {}; last checkpoint {}\n",
        fwd["lag_bytes"].as_u64().unwrap_or(0),
        fwd["position"]["segment"],
        fwd["position"]["offset"],
        fwd["committed_end"]["segment"],
        fwd["committed_end"]["offset"],
        fwd["updated_at"]
            .as_str()
            .filter(|s| !s.is_empty())
            .unwrap_or("never"),
    ));
    match fwd["sinks"].as_object() {
        Some(sinks) if !sinks.is_empty() => {
            for (name, state) in sinks {
                frame.push_str(&format!("  sink {name:<20} {}\n", sink_state(state)));
            }
        }
        _ => frame.push_str("  sinks: none committed yet\n"),
    }
    frame
}

/// A sink's committed state as a line a person reads: the file sink's streams as
/// `access.log file #3 at 1.2 MB`, any other state as `key=value` pairs.
fn sink_state(state: &Value) -> String {
    let Some(fields) = state.as_object() else {
        return state.to_string();
    };
    if fields.is_empty() {
        return "nothing committed yet".into();
    }
    let file_streams = fields
        .values()
        .all(|v| v.get("seq").is_some() && v.get("len").is_some());
    let parts: Vec<String> = if file_streams {
        fields
            .iter()
            .map(|(stream, v)| {
                format!(
                    "{stream} file #{} at {:.1} MB",
                    v["seq"],
                    v["len"].as_u64().unwrap_or(0) as f64 / 1e6
                )
            })
            .collect()
    } else {
        fields
            .iter()
            .map(|(key, v)| match v {
                Value::String(text) => format!("{key}={text}"),
                Value::Object(inner) => format!("{key}=({} entries)", inner.len()),
                other => format!("{key}={other}"),
            })
            .collect()
    };
    parts.join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_frame_shows_sources_levels_and_sinks() {
        let stats = serde_json::json!({
            "records": 10, "rate_per_s": 2.5, "since": "2026-11-22T10:00:00.000Z",
            "sources": [{"name": "access.log", "rate_per_s": 2.5, "records": 10, "category": "access",
                         "last_at": "2026-11-22T10:00:01.000Z", "levels": {"ERROR": 3, "INFO": 7}}],
            "forwarder": {"lag_bytes": 42, "position": {"segment": 0, "offset": 10},
                          "committed_end": {"segment": 0, "offset": 52}, "updated_at": "t",
                          "sinks": {"archive": {"file": "x"}}},
        });
        let frame = render(&stats, SystemTime::UNIX_EPOCH);
        assert!(frame.contains("access.log"), "{frame}");
        assert!(
            frame.contains("42 bytes of the processed journal not delivered yet"),
            "{frame}"
        );
        assert!(frame.contains("sink archive"), "{frame}");
        let row = frame.lines().find(|l| l.starts_with("access.log")).unwrap();
        assert_eq!(
            row.split_whitespace().collect::<Vec<_>>()[..7],
            ["access.log", "2.5", "10", "3", "0", "7", "0"]
        );
    }

    #[test]
    fn sink_states_read_as_words() {
        let file = serde_json::json!({"access.log": {"seq": 3, "len": 1_200_000}});
        assert_eq!(sink_state(&file), "access.log file #3 at 1.2 MB");
        let other = serde_json::json!({"delivered": 10, "stream": "logs", "totals": {"a": 1}});
        assert_eq!(
            sink_state(&other),
            "delivered=10, stream=logs, totals=(1 entries)"
        );
        assert_eq!(sink_state(&serde_json::json!({})), "nothing committed yet");
    }
}

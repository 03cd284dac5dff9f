//! The traffic-generator binary: sends a mix of good and bad requests to the web API until
//! SIGTERM or `--duration-secs`, then prints a one-line tally of status codes. Writes no logs.
//!
//! Run with:
//!
//! ```text
//! cargo run -p demo-apps --bin traffic-generator -- --target http://127.0.0.1:8080 --requests-per-sec 20
//! ```
//!
//! (The traffic generator takes `--requests-per-sec` rather than a line `--rate`; start
//! `web-api` first with `--log-dir /tmp/logs`, or let this retry until it is up.)
//!
//! While its main loop runs it refreshes a heartbeat file about once a second: `--heartbeat-file`,
//! or `/run/heartbeat/traffic-generator` if that directory exists (the pod mounts it);
//! `traffic-generator --check-heartbeat <file> --max-age 30s` checks that, for an exec liveness
//! probe.

use std::process::ExitCode;

use clap::Parser;
use demo_apps::heartbeat::Heartbeat;

/// Sends demo traffic to the web API.
#[derive(Debug, Parser)]
#[command(name = "traffic-generator", version)]
struct Cli {
    #[command(flatten)]
    args: demo_apps::cli::TrafficArgs,

    #[command(flatten)]
    heartbeat: demo_apps::heartbeat::HeartbeatArgs,
}

fn main() -> anyhow::Result<ExitCode> {
    let cli = Cli::parse();
    cli.heartbeat
        .check_or_run(env!("CARGO_BIN_NAME"), |heartbeat| run(cli.args, heartbeat))
}

#[tokio::main]
async fn run(args: demo_apps::cli::TrafficArgs, heartbeat: Heartbeat) -> anyhow::Result<()> {
    demo_apps::cli::init_tracing();
    let shutdown = demo_apps::signal::shutdown()?;
    let summary = demo_apps::traffic::run(args, heartbeat, shutdown).await?;
    println!("{summary}");
    Ok(())
}

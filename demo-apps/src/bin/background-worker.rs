//! The background-worker binary: runs a job queue on three workers and logs to
//! `job-execution.log` and `job-metrics.log` until SIGTERM.
//!
//! Run with:
//!
//! ```text
//! cargo run -p demo-apps --bin background-worker -- --log-dir /tmp/logs --rate 1000
//! ```
//!
//! Without `--rate` it queues a job every second or two and sleeps through each step.
//!
//! While its main loop runs it refreshes a heartbeat file about once a second: `--heartbeat-file`,
//! or `/run/heartbeat/background-worker` if that directory exists (the pod mounts it);
//! `background-worker --check-heartbeat <file> --max-age 30s` checks that, for an exec liveness
//! probe.

use std::process::ExitCode;

use clap::Parser;
use demo_apps::heartbeat::Heartbeat;

/// Demo background worker writing job execution and metrics logs.
#[derive(Debug, Parser)]
#[command(name = "background-worker", version)]
struct Cli {
    #[command(flatten)]
    args: demo_apps::cli::CommonArgs,

    #[command(flatten)]
    heartbeat: demo_apps::heartbeat::HeartbeatArgs,
}

fn main() -> anyhow::Result<ExitCode> {
    let cli = Cli::parse();
    cli.heartbeat
        .check_or_run(env!("CARGO_BIN_NAME"), |heartbeat| run(cli.args, heartbeat))
}

#[tokio::main]
async fn run(args: demo_apps::cli::CommonArgs, heartbeat: Heartbeat) -> anyhow::Result<()> {
    demo_apps::cli::init_tracing();
    let shutdown = demo_apps::signal::shutdown()?;
    demo_apps::worker::run(args, heartbeat, shutdown).await
}

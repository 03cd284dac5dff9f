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

use clap::Parser;

/// Demo background worker writing job execution and metrics logs.
#[derive(Debug, Parser)]
#[command(name = "background-worker", version)]
struct Cli {
    #[command(flatten)]
    args: demo_apps::cli::CommonArgs,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    demo_apps::cli::init_tracing();
    let shutdown = demo_apps::signal::shutdown()?;
    demo_apps::worker::run(cli.args, shutdown).await
}

//! The database-client binary: runs simulated SQL queries and logs them to
//! `database-queries.log` and `database-performance.log` until SIGTERM.
//!
//! Run with:
//!
//! ```text
//! cargo run -p demo-apps --bin database-client -- --log-dir /tmp/logs --rate 1000
//! ```
//!
//! Without `--rate` it runs a few queries per second and sleeps through their durations.
//!
//! While its main loop runs it refreshes a heartbeat file about once a second: `--heartbeat-file`,
//! or `/run/heartbeat/database-client` if that directory exists (the pod mounts it);
//! `database-client --check-heartbeat <file> --max-age 30s` checks that, for an exec liveness
//! probe.

use std::process::ExitCode;

use clap::Parser;
use demo_apps::heartbeat::Heartbeat;

/// Demo database client writing query and performance logs.
#[derive(Debug, Parser)]
#[command(name = "database-client", version)]
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
    demo_apps::database::run(args, heartbeat, shutdown).await
}

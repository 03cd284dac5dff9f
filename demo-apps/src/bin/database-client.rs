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

use clap::Parser;

/// Demo database client writing query and performance logs.
#[derive(Debug, Parser)]
#[command(name = "database-client", version)]
struct Cli {
    #[command(flatten)]
    args: demo_apps::cli::CommonArgs,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    demo_apps::cli::init_tracing();
    let shutdown = demo_apps::signal::shutdown()?;
    demo_apps::database::run(cli.args, shutdown).await
}

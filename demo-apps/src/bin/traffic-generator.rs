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

use clap::Parser;

/// Sends demo traffic to the web API.
#[derive(Debug, Parser)]
#[command(name = "traffic-generator", version)]
struct Cli {
    #[command(flatten)]
    args: demo_apps::cli::TrafficArgs,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    demo_apps::cli::init_tracing();
    let shutdown = demo_apps::signal::shutdown()?;
    let summary = demo_apps::traffic::run(cli.args, shutdown).await?;
    println!("{summary}");
    Ok(())
}

//! The web-api binary: serves the demo user API and logs every request to `access.log`,
//! `error.log` and `application.log` until SIGTERM.
//!
//! Run with:
//!
//! ```text
//! cargo run -p demo-apps --bin web-api -- --log-dir /tmp/logs --rate 1000
//! ```
//!
//! Without `--rate` only real requests are logged (drive it with `traffic-generator`); with
//! it, synthetic requests are also logged at that many lines per second.

use clap::Parser;

/// Demo web API writing access, error and application logs.
#[derive(Debug, Parser)]
#[command(name = "web-api", version)]
struct Cli {
    #[command(flatten)]
    args: demo_apps::cli::WebApiArgs,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    demo_apps::cli::init_tracing();
    let shutdown = demo_apps::signal::shutdown()?;
    demo_apps::web::run(cli.args, shutdown).await
}

//! The collector binary: reads flags, then runs `collector::run` until SIGTERM.

use std::process::ExitCode;

use clap::Parser;

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let cli = collector::Cli::parse();
    let result = async {
        sidecar_common::telemetry::init(&cli.log_level, cli.log_json)?;
        collector::run(cli.into_config()?, sidecar_common::signal::shutdown()).await
    };
    sidecar_common::telemetry::exit_code("collector", result.await)
}

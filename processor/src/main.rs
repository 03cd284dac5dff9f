//! The processor binary: reads flags and rules, then runs `processor::run` until SIGTERM.

use std::process::ExitCode;

use clap::Parser;

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let cli = processor::Cli::parse();
    let result = async {
        sidecar_core::telemetry::init(&cli.log_level, cli.log_json)?;
        processor::run(cli.into_config()?, sidecar_core::signal::shutdown()).await
    };
    sidecar_core::telemetry::exit_code("processor", result.await)
}

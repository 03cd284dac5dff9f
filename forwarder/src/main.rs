//! The forwarder binary: reads flags and sink config, then runs `forwarder::run` until SIGTERM.

use std::process::ExitCode;

use clap::Parser;

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let cli = forwarder::Cli::parse();
    let result = async {
        sidecar_core::telemetry::init(&cli.log_level, cli.log_json)?;
        forwarder::run(cli.into_config()?, sidecar_core::signal::shutdown()).await
    };
    sidecar_core::telemetry::exit_code("forwarder", result.await)
}

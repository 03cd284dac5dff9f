//! The forwarder binary: reads flags and sink config, then runs `forwarder::run` until SIGTERM;
//! `forwarder logs …` and `forwarder top` are tools for operators instead.

use std::process::ExitCode;

use clap::Parser;

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let mut cli = forwarder::Cli::parse();
    if let Some(command) = cli.command.take() {
        return forwarder::commands::run(command).await;
    }
    let result = async {
        sidecar_core::telemetry::init(&cli.log_level, cli.log_json)?;
        forwarder::run(cli.into_config()?, sidecar_core::signal::shutdown()).await
    };
    sidecar_core::telemetry::exit_code("forwarder", result.await)
}

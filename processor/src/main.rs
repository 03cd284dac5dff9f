//! The processor binary: reads flags and rules, then runs `processor::run` until SIGTERM; or
//! runs one of the operator tools (`validate`, `test`, `explain`) and exits.

use std::process::ExitCode;

use clap::Parser;

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let cli = processor::Cli::parse();
    if let Some(tool) = cli.tool {
        return processor::tools::run(tool);
    }
    let stage = cli.stage;
    let result = async {
        sidecar_common::telemetry::init(&stage.log_level, stage.log_json)?;
        processor::run(stage.into_config()?, sidecar_common::signal::shutdown()).await
    };
    sidecar_common::telemetry::exit_code("processor", result.await)
}

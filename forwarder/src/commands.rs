//! The forwarder's subcommands for people at a terminal: `forwarder logs` and `forwarder top`.
//! Plain `forwarder [flags]` (no subcommand) runs the stage.
//!
//! Easy to get wrong: Ctrl+C. The command runs on a blocking thread while the main task waits
//! for SIGINT, so an interrupted follow exits at once with 130, as shells expect.

use std::process::ExitCode;

use clap::Subcommand;

use crate::logs_cli::{self, LogsArgs};
use crate::top::{self, TopArgs};

/// A subcommand.
#[derive(Debug, Clone, Subcommand)]
pub enum Command {
    /// Print processed records, like `kubectl logs` (from the journal, or --server URL).
    Logs(Box<LogsArgs>),
    /// A live view of rates, levels, errors, sinks and lag, refreshed every second.
    Top(TopArgs),
}

/// Runs `command` until it ends or Ctrl+C (exit code 130).
pub async fn run(command: Command) -> ExitCode {
    let name = match &command {
        Command::Logs(_) => "logs",
        Command::Top(_) => "top",
    };
    let work = tokio::task::spawn_blocking(move || match &command {
        Command::Logs(args) => logs_cli::run(args),
        Command::Top(args) => top::run(args),
    });
    tokio::select! {
        done = work => match done {
            Ok(Ok(())) => ExitCode::SUCCESS,
            Ok(Err(e)) => e.report(name),
            Err(e) => {
                eprintln!("forwarder {name}: error: {e}");
                ExitCode::FAILURE
            }
        },
        _ = tokio::signal::ctrl_c() => {
            top::restore_terminal();
            // The blocking thread may sit in a sleep or a read: leave without joining it.
            std::process::exit(130);
        }
    }
}

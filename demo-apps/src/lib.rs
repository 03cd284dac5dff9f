//! Demo applications that write realistic, mixed-format logs for the sidecars to collect.
//!
//! Three apps share one library so tests and benchmarks can call log generation directly:
//! [`web`] (an HTTP user service), [`database`] (a simulated query client) and [`worker`] (a
//! background job queue). Each writes Python-logging-style lines ([`logfile`]) into a log
//! directory, either as real work happens or, with a rate, synthetically ([`simulation`]) paced
//! by [`rate`]. [`traffic`] drives the web app over HTTP. The apps that serve no port refresh a
//! [`heartbeat`] file from their main loop, for an exec liveness probe.
//!
//! The one thing easy to get wrong: a sidecar tails these files while they grow, so every line
//! is written whole and flushed only at line boundaries; see [`logfile::LogFiles`].

pub mod cli;
pub mod clock;
pub mod database;
pub mod heartbeat;
pub mod logfile;
pub mod rate;
pub mod signal;
pub mod simulation;
pub mod traffic;
pub mod web;
pub mod worker;

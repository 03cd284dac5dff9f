//! Shared library of the log sidecars.
//!
//! Each module is one noun of the domain: a [`record`] travels through [`journal`]s between
//! stages; the collector tails a [`source`] and the forwarder ships to a [`sink`]; [`checkpoint`]
//! files make progress durable; [`rules`] enrich records in the processor; a [`query`] reads
//! a journal back for people (`forwarder logs`, the query API); [`alerts`] fire on what the
//! records say.
//!
//! The one thing easy to get wrong everywhere: progress is committed only after what a stage
//! produced is durable, so a crash at any point neither loses nor repeats a line.

#![warn(missing_docs)]

pub mod alerts;
pub mod backoff;
pub mod checkpoint;
pub mod config;
pub mod journal;
pub mod mounted;
pub mod query;
pub mod record;
pub mod rules;
pub mod signal;
pub mod sink;
pub mod source;
pub mod telemetry;

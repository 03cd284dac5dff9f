//! The processor's and the forwarder's library: the [`rules`] that enrich records, the
//! [`sink`]s that ship them, the [`query`] that reads a journal back for people (`forwarder
//! logs`, the query API) and the [`alerts`] that fire on what the records say.
//!
//! The crates below it each have one job, and the collector links only those: the record
//! ([`record`], `sidecar-record`), the journal between stages ([`journal`], `sidecar-journal`),
//! the tailed files ([`source`], `sidecar-source`) and what every stage shares (checkpoints,
//! config, signals, backoff, telemetry: `sidecar-common`). They are re-exported here under
//! their module names, so the processor and the forwarder reach everything through this crate.
//!
//! The one thing easy to get wrong everywhere: progress is committed only after what a stage
//! produced is durable, so a crash at any point neither loses nor repeats a line.

#![warn(missing_docs)]

pub mod alerts;
pub mod query;
pub mod sink;

pub use sidecar_common::{access, backoff, checkpoint, config, mounted, signal, telemetry};
pub use sidecar_journal as journal;
pub use sidecar_record as record;
pub use sidecar_rules as rules;
pub use sidecar_source as source;

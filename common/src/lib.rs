//! What every stage of the log sidecars shares, whatever its job: [`checkpoint`] files that
//! survive a crash whole, [`config`] values as people write them, [`signal`]s and wake-ups for
//! the stage loops, the one [`backoff`] of every retry, [`telemetry`] (logs, `/healthz`,
//! `/metrics`), files the kubelet [`mounted`], the [`time`] records are stamped with, and the
//! [`access`] rule of the endpoints that hand logs out or take them in.

#![warn(missing_docs)]

pub mod access;
pub mod backoff;
pub mod checkpoint;
pub mod config;
pub mod mounted;
pub mod signal;
pub mod telemetry;
pub mod time;

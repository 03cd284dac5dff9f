//! The one async runtime every network sink's client runs on (HTTP, NATS, …).
//!
//! Easy to get wrong: making another. Sinks call it from their lanes' blocking threads with
//! `Handle::block_on`; a runtime per sink would multiply threads and timers in a small sidecar.

use std::sync::LazyLock;

/// One worker thread for all network sinks, made on first use and never dropped, so no sink
/// owns or shuts down a runtime. Sinks wait on it from their lanes' threads
/// (`Handle::block_on`), which are outside any async context.
pub(crate) static CLIENT_RUNTIME: LazyLock<std::io::Result<tokio::runtime::Runtime>> =
    LazyLock::new(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("network-sinks")
            .enable_all()
            .build()
    });

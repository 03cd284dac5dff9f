//! Shutdown on SIGTERM (what the kubelet sends) or SIGINT (Ctrl-C).
//!
//! The one thing easy to get wrong: the handlers must be installed before the app starts
//! working, or a SIGTERM that arrives early kills the process with its buffers unflushed. So
//! [`shutdown`] installs them when called and returns a future that only waits.

use std::future::Future;
use std::io;

use tokio::signal::unix::{signal, SignalKind};

/// Installs SIGTERM and SIGINT handlers now and returns a future that resolves on the first of
/// either. Must be called inside a Tokio runtime.
///
/// # Errors
///
/// When a handler cannot be installed.
pub fn shutdown() -> io::Result<impl Future<Output = ()> + Send + 'static> {
    let mut terminate = signal(SignalKind::terminate())?;
    let mut interrupt = signal(SignalKind::interrupt())?;
    Ok(async move {
        tokio::select! {
            _ = terminate.recv() => tracing::info!("SIGTERM received; shutting down."),
            _ = interrupt.recv() => tracing::info!("SIGINT received; shutting down."),
        }
    })
}

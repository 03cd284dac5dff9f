//! Ending in-flight requests at once when the forwarder stops waiting for them.

use std::sync::Arc;

/// Fires once the forwarder gives up waiting for in-flight requests at shutdown; a request
/// then ends at once instead of at its timeout.
#[derive(Debug, Clone)]
pub struct Cancel {
    tx: Arc<tokio::sync::watch::Sender<bool>>,
}

impl Default for Cancel {
    fn default() -> Self {
        Self::new()
    }
}

impl Cancel {
    /// A token not fired yet.
    pub fn new() -> Self {
        Self {
            tx: Arc::new(tokio::sync::watch::channel(false).0),
        }
    }

    /// Fires the token: requests in flight and later ones end at once.
    pub fn cancel(&self) {
        self.tx.send_replace(true);
    }

    /// Whether [`Cancel::cancel`] was called.
    pub fn is_cancelled(&self) -> bool {
        *self.tx.borrow()
    }

    pub(super) async fn cancelled(&self) {
        let mut rx = self.tx.subscribe();
        let _ = rx.wait_for(|fired| *fired).await;
    }
}

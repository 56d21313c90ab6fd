//! The in-process bus: the single-node default, and a fabric that can host several nodes in one
//! process (each with its own subscriptions), which the tests use to check cross-node delivery.

use std::collections::HashSet;
use std::sync::{Arc, OnceLock, RwLock};

use async_trait::async_trait;

use super::{Bus, BusError, BusEvent, BusHandler, Topic};

/// The shared medium that local nodes publish through.
#[derive(Default)]
pub struct LocalFabric {
    nodes: RwLock<Vec<Arc<NodeState>>>,
}

#[derive(Default)]
struct NodeState {
    handler: OnceLock<BusHandler>,
    topics: RwLock<HashSet<Topic>>,
}

impl LocalFabric {
    /// A new, empty fabric.
    pub fn new() -> Arc<Self> {
        Arc::new(LocalFabric::default())
    }

    /// Attaches a new node to the fabric.
    pub fn node(self: &Arc<Self>) -> LocalBus {
        let state = Arc::new(NodeState::default());
        if let Ok(mut nodes) = self.nodes.write() {
            nodes.push(state.clone());
        }
        LocalBus { fabric: self.clone(), state }
    }
}

/// One node's handle on a [`LocalFabric`].
pub struct LocalBus {
    fabric: Arc<LocalFabric>,
    state: Arc<NodeState>,
}

impl LocalBus {
    /// A single-node bus on a fabric of its own: the embedded default.
    pub fn standalone() -> Self {
        LocalFabric::new().node()
    }
}

fn poisoned() -> BusError {
    BusError::Unavailable("local bus lock poisoned".into())
}

#[async_trait]
impl Bus for LocalBus {
    fn set_handler(&self, handler: BusHandler) {
        if self.state.handler.set(handler).is_err() {
            tracing::warn!("local bus: handler already set; keeping the first");
        }
    }

    async fn publish(&self, event: BusEvent) -> Result<(), BusError> {
        let nodes = self.fabric.nodes.read().map_err(|_| poisoned())?;
        for node in nodes.iter() {
            let subscribed = node.topics.read().map_err(|_| poisoned())?.contains(&event.topic);
            if let (true, Some(handler)) = (subscribed, node.handler.get()) {
                handler(event.clone());
            }
        }
        Ok(())
    }

    async fn subscribe(&self, topics: &[Topic]) -> Result<(), BusError> {
        self.state.topics.write().map_err(|_| poisoned())?.extend(topics.iter().cloned());
        Ok(())
    }

    async fn unsubscribe(&self, topics: &[Topic]) -> Result<(), BusError> {
        let mut subscribed = self.state.topics.write().map_err(|_| poisoned())?;
        for t in topics {
            subscribed.remove(t);
        }
        Ok(())
    }

    async fn ping(&self) -> Result<(), BusError> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn fabric() -> ((), impl Fn() -> Arc<dyn Bus>) {
        let fabric = LocalFabric::new();
        ((), move || Arc::new(fabric.node()) as Arc<dyn Bus>)
    }

    crate::bus_conformance!(fabric);
}

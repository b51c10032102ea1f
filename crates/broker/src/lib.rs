//! Brokers behind natter-core's [`Broker`] seam.
//!
//! [`LocalBroker`] is the single-instance broker: publishing hands the event
//! straight to this instance's [`Delivery`], with no copy and no queue, so
//! the order of publishes is the order of delivery. A Redis broker for
//! several instances will live beside it.

use std::sync::Arc;

use natter_core::{Broker, Delivery, Event};

/// In-process fan-out for `natter serve` on one machine.
pub struct LocalBroker {
    /// This instance's connections: the only ones there are.
    delivery: Arc<dyn Delivery>,
}

impl LocalBroker {
    pub fn new(delivery: Arc<dyn Delivery>) -> Self {
        Self { delivery }
    }
}

impl Broker for LocalBroker {
    fn publish(&self, event: Event) {
        self.delivery.deliver(&event);
    }

    fn is_healthy(&self) -> bool {
        true
    }

    fn is_shared(&self) -> bool {
        false
    }
}

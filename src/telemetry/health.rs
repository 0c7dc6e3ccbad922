//! Health and readiness: the conditions `/readyz` reports.

use std::sync::atomic::{AtomicBool, Ordering};

/// What `/readyz` reports: ready only when every condition holds.
#[derive(Default, Debug)]
pub struct Health {
    /// The Kafka consumer reached the brokers recently.
    pub connected: AtomicBool,
    /// The consumer group gave this instance at least one partition.
    pub assigned: AtomicBool,
    /// The last publish and store commit succeeded.
    pub committing: AtomicBool,
    /// An assigned partition is being restored from the changelog.
    pub restoring: AtomicBool,
}

impl Health {
    /// Ready when connected, assigned and committing; else the reasons.
    pub fn check(&self) -> Result<(), Vec<&'static str>> {
        let mut why = Vec::new();
        if !self.connected.load(Ordering::Relaxed) {
            why.push("not connected to Kafka");
        }
        if !self.assigned.load(Ordering::Relaxed) {
            why.push("no partitions assigned");
        }
        if !self.committing.load(Ordering::Relaxed) {
            why.push("cannot publish or commit (retrying)");
        }
        if self.restoring.load(Ordering::Relaxed) {
            why.push("restoring partition state from the changelog");
        }
        if why.is_empty() {
            Ok(())
        } else {
            Err(why)
        }
    }
}

//! Health and readiness: the conditions `/readyz` reports, and the
//! progress `/healthz` watches.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// What `/readyz` and `/healthz` report.
#[derive(Debug)]
pub struct Health {
    /// The Kafka consumer reached the brokers recently.
    pub connected: AtomicBool,
    /// The consumer group gave this instance at least one partition.
    pub assigned: AtomicBool,
    /// The last publish and store commit succeeded.
    pub committing: AtomicBool,
    /// An assigned partition is being restored from the changelog.
    pub restoring: AtomicBool,
    /// When this started (the origin of `work_since_ms`).
    origin: Instant,
    /// Milliseconds after `origin` at which the loop took the work in
    /// hand (a batch or sweep) that it has not finished yet, plus one;
    /// 0 while it has no work in hand.
    work_since_ms: AtomicU64,
    /// Work in hand for longer than this means the loop is stuck; 0: never.
    stall_after_ms: AtomicU64,
}

impl Default for Health {
    fn default() -> Self {
        Self {
            connected: AtomicBool::new(false),
            assigned: AtomicBool::new(false),
            committing: AtomicBool::new(false),
            restoring: AtomicBool::new(false),
            origin: Instant::now(),
            work_since_ms: AtomicU64::new(0),
            stall_after_ms: AtomicU64::new(0),
        }
    }
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

    /// Sets how long work may stay in hand before `/healthz` fails
    /// (`Duration::ZERO`: never).
    pub fn stall_after(&self, d: Duration) {
        self.stall_after_ms
            .store(d.as_millis() as u64, Ordering::Relaxed);
    }

    fn now_ms(&self) -> u64 {
        self.origin.elapsed().as_millis() as u64 + 1
    }

    /// The loop took work in hand (kept if it already had some).
    pub fn working(&self) {
        let now = self.now_ms();
        let _ = self
            .work_since_ms
            .compare_exchange(0, now, Ordering::Relaxed, Ordering::Relaxed);
    }

    /// The loop finished the work in hand.
    pub fn progressed(&self) {
        self.work_since_ms.store(0, Ordering::Relaxed);
    }

    /// Live unless the loop has had work in hand, without finishing it,
    /// for longer than the stall limit; then how long.
    pub fn live(&self) -> Result<(), Duration> {
        let limit = self.stall_after_ms.load(Ordering::Relaxed);
        let since = self.work_since_ms.load(Ordering::Relaxed);
        if limit == 0 || since == 0 {
            return Ok(());
        }
        let held = self.now_ms().saturating_sub(since);
        if held > limit {
            Err(Duration::from_millis(held))
        } else {
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_loop_holding_work_past_the_limit_is_not_live() {
        let h = Health::default();
        h.stall_after(Duration::from_secs(3600));
        assert!(h.live().is_ok(), "idle is live");
        h.working();
        assert!(h.live().is_ok(), "within the limit");
        h.stall_after(Duration::from_millis(30));
        std::thread::sleep(Duration::from_millis(60));
        let held = h.live().expect_err("stuck past the limit");
        assert!(held >= Duration::from_millis(30));
        h.progressed();
        assert!(h.live().is_ok(), "progress makes it live again");
        h.stall_after(Duration::ZERO);
        h.working();
        std::thread::sleep(Duration::from_millis(40));
        assert!(h.live().is_ok(), "no limit: never stalled");
    }
}

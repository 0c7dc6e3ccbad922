//! One batch through to its commit: publish the outputs and the changed
//! states to the changelog, close the batch there with a meta record per
//! partition, write state and offsets in one store commit, then commit the
//! offsets to Kafka for lag. A failing step waits and retries (reporting
//! not ready); nothing is skipped.

use std::sync::atomic::Ordering;

use tokio_util::sync::CancellationToken;

use crate::kafka::record::{InMessage, OutRecord};
use crate::kafka::source::{Input, Publisher};
use crate::pipeline::error::Failure;
use crate::pipeline::event::wall_now;
use crate::service::processor::{Batch, Processor};
use crate::store::PartitionMeta;
use crate::telemetry::events::{BatchDone, Dependency, DependencyFailed};
use crate::telemetry::health::Health;
use crate::telemetry::metrics::Metrics;

/// Publishes and commits batches.
pub struct Committer<'a> {
    /// Commit offsets to Kafka too (for lag only).
    pub commit_to_kafka: bool,
    /// Flush the store at every commit.
    pub flush_on_commit: bool,
    pub input: &'a Input,
    pub publisher: &'a Publisher,
    pub health: &'a Health,
    pub metrics: &'a Metrics,
    pub shutdown: &'a CancellationToken,
    /// This instance's `admin.advertised_url`, written into meta records.
    pub owner: Option<String>,
}

impl Committer<'_> {
    /// Waits before the next attempt; false if the service is stopping.
    async fn backoff(
        &self,
        attempt: &mut u32,
        dependency: Dependency,
        error: &(dyn Failure + Sync),
    ) -> bool {
        self.health.committing.store(false, Ordering::Relaxed);
        let wait = std::time::Duration::from_millis((100u64 << (*attempt).min(6)).min(5_000));
        *attempt += 1;
        let action = format!(
            "attempt {attempt}, waiting {} ms and retrying (nothing is skipped)",
            wait.as_millis()
        );
        self.metrics.emit(DependencyFailed {
            dependency,
            error,
            partition: None,
            action: &action,
        });
        tokio::select! {
            _ = self.shutdown.cancelled() => false,
            _ = tokio::time::sleep(wait) => true,
        }
    }

    /// Publishes records until every one is delivered; where each went, or
    /// `None` if the service is stopping first.
    pub async fn deliver(
        &self,
        records: Vec<OutRecord>,
        attempt: &mut u32,
    ) -> Option<Vec<(i32, i64)>> {
        let mut pending = records;
        let mut written = Vec::with_capacity(pending.len());
        while !pending.is_empty() {
            match self.publisher.publish(&pending).await {
                Ok(w) => {
                    written.extend(w);
                    break;
                }
                Err((again, e)) => {
                    // Only the records that failed are sent again.
                    if !self.backoff(attempt, Dependency::KafkaProduce, &e).await {
                        return None;
                    }
                    pending = again;
                }
            }
        }
        Some(written)
    }

    /// Processes one batch (or a sweep when `msgs` is `None`) through to its
    /// commit. Returns false when stopped before the batch was committed (it
    /// is then replayed on the next start).
    pub async fn handle(&self, processor: &mut Processor, msgs: Option<Vec<InMessage>>) -> bool {
        let started = std::time::Instant::now();
        let mut attempt = 0;
        let mut batch: Batch = loop {
            let res = match &msgs {
                Some(m) => processor.process(m, wall_now()),
                None => processor.sweep_only(&self.input.context().active(), wall_now()),
            };
            match res {
                Ok(b) => break b,
                Err(e) => {
                    if !self.backoff(&mut attempt, Dependency::Store, &e).await {
                        return false;
                    }
                }
            }
        };
        if batch.commits.is_empty() && batch.records.is_empty() {
            return true;
        }
        if !self.publish(processor, &mut batch, &mut attempt).await {
            return false;
        }
        while let Err(e) = processor.commit(&batch) {
            if !self.backoff(&mut attempt, Dependency::Store, &e).await {
                return false;
            }
        }
        // The commit point: durable before anything newer is fetched.
        if self.flush_on_commit {
            while let Err(e) = processor.store.flush() {
                if !self.backoff(&mut attempt, Dependency::Store, &e).await {
                    return false;
                }
            }
        }
        self.health.committing.store(true, Ordering::Relaxed);
        if self.commit_to_kafka && msgs.is_some() {
            let next: Vec<(i32, i64)> = batch
                .commits
                .iter()
                .map(|(p, c)| (*p, c.meta.next_offset))
                .collect();
            if let Err(e) = self.input.commit_for_lag(&next) {
                tracing::debug!(error = %e, "offset commit to Kafka failed (used for lag only)");
            }
        }
        emit_done(self.metrics, &batch, started);
        true
    }

    /// Publishes the outputs and the changelog's state records, then, once
    /// those are delivered, one meta record per partition closing its batch
    /// (see [`crate::kafka::changelog`]), whose offsets the commit records
    /// as where the changelog now ends. False when stopped first.
    async fn publish(
        &self,
        processor: &mut Processor,
        batch: &mut Batch,
        attempt: &mut u32,
    ) -> bool {
        let mut first = std::mem::take(&mut batch.records);
        let mut metas = Vec::new();
        for (p, c) in &batch.commits {
            let before = processor.meta(*p).unwrap_or_default();
            let moved = PartitionMeta {
                changelog_next: before.changelog_next,
                ..c.meta
            } != before;
            if c.states.is_empty() && !moved {
                continue; // nothing new for the changelog
            }
            first.extend(crate::kafka::changelog::state_records(*p, c));
            metas.push(crate::kafka::changelog::meta_record(
                *p,
                &c.meta,
                self.owner.as_deref(),
            ));
        }
        // Records are counted before they are moved out for publishing.
        batch.published = first.len();
        if self.deliver(first, attempt).await.is_none() {
            return false;
        }
        let Some(written) = self.deliver(metas, attempt).await else {
            return false;
        };
        for (p, offset) in written {
            if let Some(c) = batch.commits.get_mut(&p) {
                c.meta.changelog_next = offset + 1;
            }
        }
        true
    }
}

/// The batch's telemetry: duration, and latency from each message's Kafka
/// timestamp to its commit.
fn emit_done(metrics: &Metrics, batch: &Batch, started: std::time::Instant) {
    let now = wall_now();
    let latencies: Vec<f64> = batch
        .timestamps
        .iter()
        .map(|ts| ((now - ts).max(0) as f64) / 1000.0)
        .collect();
    metrics.emit(BatchDone {
        consumed: batch.consumed,
        records: batch.published,
        seconds: started.elapsed().as_secs_f64(),
        latencies: &latencies,
    });
}

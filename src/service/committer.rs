//! One batch through to its commit: publish the outputs and the changed
//! states to the changelog, close the batch there with a meta record per
//! partition, write state and offsets in one store commit, then commit the
//! offsets to Kafka for lag.
//!
//! The store write runs on a blocking thread while the loop gathers and
//! processes the next batch, which reads the written states through the
//! committer's staged view ([`StagedStore::stage`]); that batch is published
//! only once the write has landed ([`Committer::land`]). Outputs, changelog
//! and store still follow batch order, and a crash while a write is under
//! way is the same as a crash between delivery and commit: the batch is
//! taken again from the input (its changelog records are already there).
//!
//! Failures are settled by their class (see [`crate::pipeline::error`]):
//! - transient (brokers down, timeouts, a disk hiccup): wait and retry,
//!   reporting not ready; nothing is skipped;
//! - a fatal producer error: the producer is replaced and the records not
//!   yet delivered are sent again;
//! - an alert, trigger or outcome the broker refuses for good (too large,
//!   invalid): it goes to the dead-letter topic with the reason
//!   `unpublishable`, and the batch goes on; a dead letter it refuses is
//!   sent again without its payload (the headers keep its size and hash);
//! - anything else no retry can fix (not authorized, a changelog record
//!   refused, a corrupt store): the service stops with that error, and the
//!   uncommitted batch is replayed by the next start.

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use crate::kafka::outputs::{without_payload, Outputs};
use crate::kafka::record::{InMessage, OutKind, OutRecord};
use crate::kafka::source::{Input, Publisher};
use crate::kafka::KafkaError;
use crate::pipeline::error::{Classify, ErrorClass, Failure};
use crate::pipeline::event::wall_now;
use crate::service::processor::{Batch, Processor};
use crate::service::staged_store::StagedStore;
use crate::store::{Commit, PartitionMeta, Store, StoreError};
use crate::telemetry::events::{
    BatchDone, Dependency, DependencyFailed, OutputRefused, ProducerRecreated,
};
use crate::telemetry::health::Health;
use crate::telemetry::metrics::Metrics;

/// Why a batch did not reach its commit.
#[derive(Debug)]
pub enum Stopped {
    /// The service is stopping; the batch is replayed on the next start.
    Shutdown,
    /// A failure no retry can fix: the service stops with it.
    Halted(Halted),
}

/// A failure no retry can fix, which stops the service (the batch in hand
/// is not committed, so the next start replays it).
#[derive(Debug, thiserror::Error)]
pub enum Halted {
    #[error("the broker refused a {kind} record for good: {source}")]
    Refused {
        kind: &'static str,
        #[source]
        source: KafkaError,
    },
    #[error("the state store failed in a way no retry can fix: {0}")]
    Store(#[source] StoreError),
    #[error("{0}")]
    Registry(#[source] crate::registry::RegistryError),
}

impl Classify for Halted {
    fn class(&self) -> ErrorClass {
        match self {
            Self::Refused { source, .. } => source.class(),
            Self::Store(e) => e.class(),
            Self::Registry(e) => e.class(),
        }
    }
}

/// What to do with a record the broker did not take.
enum Settle {
    /// Send it again (after a wait).
    Retry,
    /// Send this instead (a dead letter in its place, or without payload).
    Replace(OutRecord, &'static str),
    Halt,
}

/// A batch whose records are delivered and whose state and offsets are
/// being written to the store on a blocking thread.
struct InFlight {
    /// The batch, less its commits (for its telemetry).
    batch: Batch,
    commits: Arc<BTreeMap<i32, Commit>>,
    write: tokio::task::JoinHandle<Result<(), StoreError>>,
    started: std::time::Instant,
    from_input: bool,
}

impl InFlight {
    /// The write's outcome (awaited once).
    async fn written(&mut self) -> Result<(), StoreError> {
        match (&mut self.write).await {
            Ok(res) => res,
            Err(e) => match e.try_into_panic() {
                Ok(panic) => std::panic::resume_unwind(panic),
                Err(e) => Err(StoreError::Io(std::io::Error::other(e))),
            },
        }
    }
}

/// Writes commits and, when asked, makes them durable.
fn write_durably(
    store: &dyn Store,
    commits: &BTreeMap<i32, Commit>,
    flush: bool,
) -> Result<(), StoreError> {
    StagedStore::write(store, commits)?;
    if flush {
        store.flush()?;
    }
    Ok(())
}

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
    /// Encodes the dead letters of outputs the broker refuses.
    pub outputs: Outputs,
    /// Where the schemas of framed messages come from (`schema_registry`).
    pub registry: Option<&'a crate::registry::Registry>,
    /// The store as the processor reads it, with the batch being written.
    pub view: StagedStore,
    /// The batch whose store write is under way, if any.
    pub in_flight: WriteUnderWay,
}

/// The batch whose store write is under way: at most one, landed before
/// the next batch is published and before partitions change hands.
#[derive(Default)]
pub struct WriteUnderWay(Option<InFlight>);

impl Committer<'_> {
    /// Fetches the schemas of the batch's framed messages that the
    /// processor does not know yet. A registry that cannot be reached is
    /// waited for (nothing is decoded, so nothing is dead-lettered for
    /// it); credentials it refuses stop the service.
    async fn resolve_schemas(
        &self,
        processor: &mut Processor,
        msgs: &[InMessage],
        attempt: &mut u32,
    ) -> Result<(), Stopped> {
        let Some(registry) = self.registry else {
            return Ok(());
        };
        let mut wanted: Vec<u32> = msgs
            .iter()
            .filter_map(|m| crate::pipeline::wire::framed_id(m.payload.as_deref()?))
            .filter(|id| !processor.schemas.contains_key(id))
            .collect();
        wanted.sort_unstable();
        wanted.dedup();
        crate::pipeline::wire::make_room(&mut processor.schemas, wanted.len());
        for id in wanted {
            let entry = loop {
                let fetched = tokio::select! {
                    _ = self.shutdown.cancelled() => return Err(Stopped::Shutdown),
                    f = registry.fetch(id) => f,
                };
                match fetched {
                    Ok(entry) => break entry,
                    Err(e) if e.class().retry_helps() => {
                        self.backoff(attempt, Dependency::SchemaRegistry, &e)
                            .await?
                    }
                    Err(e) => return Err(Stopped::Halted(Halted::Registry(e))),
                }
            };
            if let crate::pipeline::wire::SchemaEntry::Unusable(why) = &entry {
                tracing::warn!(schema_id = id, reason = %why, "schema cannot be used; its messages are dead-lettered as unknown_schema");
            }
            // Ids never change what they name.
            processor.schemas.insert(id, entry);
        }
        Ok(())
    }

    /// Waits before the next attempt ([`retry_delay`]);
    /// `Stopped::Shutdown` if the service is stopping.
    async fn backoff(
        &self,
        attempt: &mut u32,
        dependency: Dependency,
        error: &(dyn Failure + Sync),
    ) -> Result<(), Stopped> {
        self.health.committing.store(false, Ordering::Relaxed);
        let wait = retry_delay(*attempt);
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
            _ = self.shutdown.cancelled() => Err(Stopped::Shutdown),
            _ = tokio::time::sleep(wait) => Ok(()),
        }
    }

    /// Publishes records until every one is delivered or settled (see
    /// the module's doc); where each delivered record went.
    pub async fn deliver(
        &self,
        records: Vec<OutRecord>,
        attempt: &mut u32,
    ) -> Result<Vec<(i32, i64)>, Stopped> {
        let mut pending = records;
        let mut written = Vec::with_capacity(pending.len());
        while !pending.is_empty() {
            let delivery = self.publisher.publish(&pending).await;
            written.extend(delivery.written);
            if delivery.failed.is_empty() {
                break;
            }
            if let Some(reason) = self.publisher.fatal_error() {
                // The producer is dead: a new one sends the records that
                // were not delivered (after a wait, so a fault that kills
                // every new producer is not a busy loop).
                self.metrics.emit(ProducerRecreated { reason: &reason });
                if let Err(e) = self.publisher.recreate() {
                    return Err(Stopped::Halted(Halted::Refused {
                        kind: "producer",
                        source: e,
                    }));
                }
                let (again, errors): (Vec<_>, Vec<_>) = delivery.failed.into_iter().unzip();
                pending = again;
                if *attempt > 0 {
                    self.backoff(attempt, Dependency::KafkaProduce, &errors[0])
                        .await?;
                } else {
                    *attempt += 1;
                }
                continue;
            }
            pending = Vec::new();
            let mut transient = None;
            for (record, e) in delivery.failed {
                let topic = self.publisher.topic(record.kind);
                match settle(&record, &e, topic, &self.outputs) {
                    Settle::Retry => {
                        pending.push(record);
                        transient.get_or_insert(e);
                    }
                    Settle::Replace(instead, action) => {
                        self.metrics.emit(OutputRefused {
                            kind: record.kind.as_str(),
                            action,
                            error: &e,
                        });
                        pending.push(instead);
                    }
                    Settle::Halt => {
                        self.metrics.emit(OutputRefused {
                            kind: record.kind.as_str(),
                            action: "stopped",
                            error: &e,
                        });
                        return Err(Stopped::Halted(Halted::Refused {
                            kind: record.kind.as_str(),
                            source: e,
                        }));
                    }
                }
            }
            if let Some(e) = transient {
                // Only the records that failed are sent again.
                self.backoff(attempt, Dependency::KafkaProduce, &e).await?;
            }
        }
        Ok(written)
    }

    /// Waits before retrying a store failure a retry can fix; stops the
    /// service on one it cannot.
    async fn store_retry(&self, attempt: &mut u32, e: StoreError) -> Result<(), Stopped> {
        if e.class().retry_helps() {
            self.backoff(attempt, Dependency::Store, &e).await
        } else {
            Err(Stopped::Halted(Halted::Store(e)))
        }
    }

    /// Processes one batch (or a sweep when `msgs` is `None`) through to its
    /// commit. An error when stopped before the batch was committed (it is
    /// then replayed on the next start).
    pub async fn handle(
        &mut self,
        processor: &mut Processor,
        msgs: Option<Vec<InMessage>>,
    ) -> Result<(), Stopped> {
        self.health.working();
        // Sweeps (mostly empty) are spans only at debug level.
        let span = match &msgs {
            Some(m) => tracing::info_span!("batch", messages = m.len()),
            None => tracing::debug_span!("sweep"),
        };
        let done = tracing::Instrument::instrument(self.handle_inner(processor, msgs), span).await;
        // Work stays in hand while a batch's write is under way (see
        // `finish`), so a write that keeps failing reads as a stall.
        if done.is_ok() && !self.writing() {
            self.health.progressed();
        }
        done
    }

    async fn handle_inner(
        &mut self,
        processor: &mut Processor,
        msgs: Option<Vec<InMessage>>,
    ) -> Result<(), Stopped> {
        let started = std::time::Instant::now();
        let mut attempt = 0;
        if let Some(m) = &msgs {
            self.resolve_schemas(processor, m, &mut attempt).await?;
        }
        let mut batch: Batch = loop {
            let res = match &msgs {
                Some(m) => processor.process(&mut self.view, m, wall_now()),
                None => {
                    let active = self.input.context().active();
                    processor.sweep_only(&mut self.view, &active, wall_now())
                }
            };
            match res {
                Ok(b) => break b,
                Err(e) => self.store_retry(&mut attempt, e).await?,
            }
        };
        // The previous batch's write lands before this one is published;
        // this one is still in hand (its publish may wait for the broker).
        self.land().await?;
        self.health.working();
        if batch.commits.is_empty() && batch.records.is_empty() {
            return Ok(());
        }
        self.publish(&mut batch, &mut attempt).await?;
        let commits = Arc::new(std::mem::take(&mut batch.commits));
        self.view.stage(commits.clone());
        self.health.working();
        let write = {
            let (store, commits, flush) = (
                self.view.store().clone(),
                commits.clone(),
                self.flush_on_commit,
            );
            tokio::task::spawn_blocking(move || write_durably(&*store, &commits, flush))
        };
        self.in_flight.0 = Some(InFlight {
            batch,
            commits,
            write,
            started,
            from_input: msgs.is_some(),
        });
        Ok(())
    }

    /// Whether a batch's store write is under way.
    pub fn writing(&self) -> bool {
        self.in_flight.0.is_some()
    }

    /// The outcome of the store write under way (pending forever when
    /// there is none); hand it to [`Committer::finish`].
    pub async fn written(&mut self) -> Result<(), StoreError> {
        match &mut self.in_flight.0 {
            Some(f) => f.written().await,
            None => std::future::pending().await,
        }
    }

    /// Waits for the batch in flight (if any) to be written.
    pub async fn land(&mut self) -> Result<(), Stopped> {
        if !self.writing() {
            return Ok(());
        }
        let res = self.written().await;
        self.finish(res).await
    }

    /// Completes the batch in flight, whose write returned `res`: a failed
    /// write is tried again (whole) while a retry can fix it. Then the
    /// batch is committed: the commit point, durable before anything newer
    /// is published.
    pub async fn finish(&mut self, mut res: Result<(), StoreError>) -> Result<(), Stopped> {
        let Some(f) = self.in_flight.0.take() else {
            return Ok(());
        };
        let mut attempt = 0;
        while let Err(e) = res {
            // Stopped here, the batch is not committed: the next start
            // replays it.
            self.store_retry(&mut attempt, e).await?;
            res = write_durably(&**self.view.store(), &f.commits, self.flush_on_commit);
        }
        self.view.landed();
        self.health.progressed();
        self.health.committing.store(true, Ordering::Relaxed);
        if self.commit_to_kafka && f.from_input {
            let next: Vec<(i32, i64)> = f
                .commits
                .iter()
                .map(|(p, c)| (*p, c.meta.next_offset))
                .collect();
            if let Err(e) = self.input.commit_for_lag(&next) {
                tracing::debug!(error = %e, "offset commit to Kafka failed (used for lag only)");
            }
        }
        emit_done(self.metrics, &f.batch, f.started);
        Ok(())
    }

    /// Publishes the outputs and the changelog's state records, then, once
    /// those are delivered, one meta record per partition closing its batch
    /// (see [`crate::kafka::changelog`]), whose offsets the commit records
    /// as where the changelog now ends.
    async fn publish(&mut self, batch: &mut Batch, attempt: &mut u32) -> Result<(), Stopped> {
        let mut first = std::mem::take(&mut batch.records);
        let mut metas = Vec::new();
        for (p, c) in &batch.commits {
            let before = self.view.meta(*p).unwrap_or_default();
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
        // A span per output (not per changelog record), kept until delivered.
        let spans: Vec<tracing::Span> = first
            .iter_mut()
            .filter(|r| r.kind != OutKind::Changelog)
            .map(|r| crate::telemetry::trace::publish_span(r.kind.as_str(), &mut r.headers))
            .collect();
        self.deliver(first, attempt).await?;
        drop(spans);
        let written = self.deliver(metas, attempt).await?;
        for (p, offset) in written {
            if let Some(c) = batch.commits.get_mut(&p) {
                c.meta.changelog_next = offset + 1;
            }
        }
        Ok(())
    }
}

/// What to do with a record (bound for `topic`) that failed with `e`.
fn settle(record: &OutRecord, e: &KafkaError, topic: &str, outputs: &Outputs) -> Settle {
    match (e.class(), record.kind) {
        (ErrorClass::Transient, _) => Settle::Retry,
        (ErrorClass::Rejected, OutKind::Alert | OutKind::Trigger | OutKind::Outcome) => {
            Settle::Replace(outputs.unpublishable(record, e, topic), "dead_lettered")
        }
        (ErrorClass::Rejected, OutKind::DeadLetter) => match without_payload(record, e) {
            Some(bare) => Settle::Replace(bare, "payload_dropped"),
            None => Settle::Halt,
        },
        _ => Settle::Halt,
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

/// The wait before retry number `attempt` (0 first): 100 ms doubling up to
/// 4 s, each with a random part of up to as much again, so that instances
/// which lost the same broker or registry do not all retry at once.
pub fn retry_delay(attempt: u32) -> std::time::Duration {
    use backon::BackoffBuilder as _;
    backon::ExponentialBuilder::default()
        .with_min_delay(std::time::Duration::from_millis(100))
        .with_max_delay(std::time::Duration::from_secs(4))
        .with_factor(2.0)
        .with_jitter()
        .without_max_times()
        .build()
        // Past 6 doublings the delay is at its cap.
        .nth(attempt.min(8) as usize)
        .unwrap_or(std::time::Duration::from_secs(4))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kafka::RDKafkaErrorCode as C;

    fn record(kind: OutKind) -> OutRecord {
        OutRecord {
            kind,
            key: Some(b"c-1".to_vec()),
            payload: vec![b'a'; 5000],
            headers: vec![("dlq-reason-code".into(), b"undecodable".to_vec())],
            partition: None,
        }
    }

    fn header<'a>(r: &'a OutRecord, k: &str) -> &'a str {
        std::str::from_utf8(&r.headers.iter().find(|(n, _)| n == k).expect(k).1).unwrap()
    }

    /// Retries back off exponentially to a cap, and two instances with the
    /// same failure do not wait the same time.
    #[test]
    fn retry_delays_grow_to_a_cap_with_jitter() {
        use std::time::Duration;
        for attempt in 0..20 {
            let base = Duration::from_millis(100 << attempt.min(6)).min(Duration::from_secs(4));
            for _ in 0..50 {
                let d = retry_delay(attempt);
                assert!(d >= base && d <= base * 2, "attempt {attempt}: {d:?}");
            }
        }
        let waits: std::collections::BTreeSet<Duration> = (0..20).map(|_| retry_delay(3)).collect();
        assert!(waits.len() > 10, "{waits:?}");
    }

    #[test]
    fn each_failure_class_is_settled_its_own_way() {
        let too_large = KafkaError::MessageProduction(C::MessageSizeTooLarge);
        let invalid = KafkaError::MessageProduction(C::InvalidRecord);
        let denied = KafkaError::MessageProduction(C::TopicAuthorizationFailed);
        let timeout = KafkaError::MessageProduction(C::MessageTimedOut);
        let down = KafkaError::MessageProduction(C::AllBrokersDown);
        let outputs = Outputs::new("customer-events", 1000);
        // Transient: retried, whatever the record.
        for kind in [OutKind::Alert, OutKind::Changelog, OutKind::DeadLetter] {
            for e in [&timeout, &down] {
                assert!(matches!(
                    settle(&record(kind), e, "t", &outputs),
                    Settle::Retry
                ));
            }
        }
        // An output refused for good becomes a dead letter, cut to size,
        // naming the topic it was meant for and why.
        for kind in [OutKind::Alert, OutKind::Trigger, OutKind::Outcome] {
            for e in [&too_large, &invalid] {
                let Settle::Replace(dl, "dead_lettered") =
                    settle(&record(kind), e, "churn-alerts", &outputs)
                else {
                    panic!("{kind:?} {e}: not dead-lettered");
                };
                assert_eq!(dl.kind, OutKind::DeadLetter);
                assert_eq!(dl.payload.len(), 1000);
                assert_eq!(dl.key.as_deref(), Some(&b"c-1"[..]));
                assert_eq!(header(&dl, "dlq-reason-code"), "unpublishable");
                assert_eq!(header(&dl, "dlq-output-topic"), "churn-alerts");
                assert_eq!(header(&dl, "dlq-original-size"), "5000");
                assert!(header(&dl, "dlq-reason").contains(kind.as_str()));
            }
        }
        // A dead letter refused for good goes again without its payload,
        // once; refused again, the service stops.
        let Settle::Replace(bare, "payload_dropped") =
            settle(&record(OutKind::DeadLetter), &too_large, "dlq", &outputs)
        else {
            panic!("dead letter not sent bare");
        };
        assert!(bare.payload.is_empty());
        assert_eq!(header(&bare, "dlq-reason-code"), "undecodable");
        assert!(matches!(
            settle(&bare, &too_large, "dlq", &outputs),
            Settle::Halt
        ));
        // Refused state, or not authorized: no retry can help; stop.
        assert!(matches!(
            settle(&record(OutKind::Changelog), &too_large, "cl", &outputs),
            Settle::Halt
        ));
        for kind in [OutKind::Alert, OutKind::DeadLetter, OutKind::Changelog] {
            assert!(matches!(
                settle(&record(kind), &denied, "t", &outputs),
                Settle::Halt
            ));
        }
    }
}

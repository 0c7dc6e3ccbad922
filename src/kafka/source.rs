//! The Kafka edge: consumer (with a context that restores offsets from the
//! state store on assignment) and the publisher of alerts, triggers and
//! dead letters.

use std::collections::BTreeSet;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rdkafka::client::ClientContext;
use rdkafka::config::RDKafkaLogLevel;
use rdkafka::consumer::{
    BaseConsumer, CommitMode, Consumer, ConsumerContext, RebalanceProtocol, StreamConsumer,
};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{BorrowedMessage, Header, Headers, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord, Producer as _};
use rdkafka::statistics::Statistics;
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use rdkafka::types::RDKafkaRespErr;
use rdkafka::Message;

use crate::kafka::client::{client_config, consumer_defaults, producer_defaults, Role};
use crate::kafka::record::{InMessage, OutKind, OutRecord};
use crate::kafka::settings::{KafkaConfig, OffsetReset};
use crate::store::Store;
use crate::telemetry::events::{
    ConsumerLag, Dependency, DependencyFailed, PartitionsAssigned, PartitionsHeld,
    PartitionsRevoked, Readiness,
};
use crate::telemetry::health::Health;
use crate::telemetry::metrics::Metrics;

/// Consumer callbacks: rebalances, statistics, errors.
pub struct ConsumerCtx {
    pub store: Arc<dyn Store>,
    pub health: Arc<Health>,
    pub metrics: Metrics,
    pub topic: String,
    /// Where a partition with no stored state starts (from
    /// `kafka.auto_offset_reset`). Kafka's committed offsets are never used
    /// to start: they may be ahead of state a crash took back.
    pub start_without_state: Offset,
    /// The partitions and what happened to them since the loop last looked
    /// (shared with the operator endpoints).
    pub assignment: Arc<Mutex<Assignment>>,
    /// Wakes the service loop when the assignment changed, so restores
    /// start at once.
    pub wake: Arc<tokio::sync::Notify>,
}

/// Input partitions held by this instance.
#[derive(Debug, Default)]
pub struct Assignment {
    /// Assigned to this instance.
    pub owned: BTreeSet<i32>,
    /// Assigned, paused, waiting for their restore.
    pub restoring: BTreeSet<i32>,
    /// Assigned or revoked since the loop last looked: cached metadata and
    /// messages in hand for them are stale.
    pub changed: BTreeSet<i32>,
    /// Counts assignments, so a restore started before the partition went
    /// and came back is recognised as stale.
    pub epoch: u64,
}

impl Assignment {
    /// Owned and not restoring: the partitions to process.
    pub fn active(&self) -> Vec<i32> {
        self.owned.difference(&self.restoring).copied().collect()
    }
}

impl ConsumerCtx {
    /// Works on the assignment and updates health and metrics after.
    pub fn with_assignment<T>(&self, f: impl FnOnce(&mut Assignment) -> T) -> T {
        let mut a = self.assignment.lock().unwrap_or_else(|e| e.into_inner());
        let out = f(&mut a);
        if !a.changed.is_empty() {
            self.wake.notify_one();
        }
        self.metrics.emit(PartitionsHeld {
            owned: a.owned.len(),
            restoring: a.restoring.len(),
        });
        self.health
            .assigned
            .store(!a.owned.is_empty(), Ordering::Relaxed);
        self.health
            .restoring
            .store(!a.restoring.is_empty(), Ordering::Relaxed);
        out
    }

    /// The assigned input partitions that are not restoring.
    pub fn active(&self) -> Vec<i32> {
        self.with_assignment(|a| a.active())
    }
}

impl ClientContext for ConsumerCtx {
    fn stats(&self, s: Statistics) {
        let up = s.brokers.values().any(|b| b.nodeid >= 0 && b.state == "UP");
        self.health.connected.store(up, Ordering::Relaxed);
        self.metrics.emit(Readiness {
            ready: self.health.check().is_ok(),
        });
        if let Some(t) = s.topics.get(&self.topic) {
            for (p, part) in &t.partitions {
                if *p >= 0 && part.consumer_lag >= 0 {
                    self.metrics.emit(ConsumerLag {
                        partition: *p,
                        lag: part.consumer_lag,
                    });
                }
            }
        }
    }

    fn error(&self, error: KafkaError, reason: &str) {
        if matches!(
            error,
            KafkaError::Global(RDKafkaErrorCode::AllBrokersDown)
                | KafkaError::Global(RDKafkaErrorCode::BrokerTransportFailure)
        ) {
            self.health.connected.store(false, Ordering::Relaxed);
        }
        let action = format!("the client retries ({reason})");
        self.metrics.emit(DependencyFailed {
            dependency: Dependency::KafkaConsume,
            error: &error,
            partition: None,
            action: &action,
        });
    }

    fn log(&self, level: RDKafkaLogLevel, fac: &str, message: &str) {
        match level {
            RDKafkaLogLevel::Emerg
            | RDKafkaLogLevel::Alert
            | RDKafkaLogLevel::Critical
            | RDKafkaLogLevel::Error => {
                tracing::error!(target: "librdkafka", fac, "{message}")
            }
            RDKafkaLogLevel::Warning => tracing::warn!(target: "librdkafka", fac, "{message}"),
            _ => tracing::debug!(target: "librdkafka", fac, "{message}"),
        }
    }
}

impl ConsumerContext for ConsumerCtx {
    /// On assignment, each input partition starts at the offset stored with
    /// its state (Kafka's committed offset is never used), paused until the
    /// service loop has restored it from the changelog. On revoke, every
    /// batch the loop took from these partitions is in the changelog (the
    /// callback runs between batches; the last one's store write may still
    /// be landing, and lands before the loop takes the revoke in), and the
    /// loop drops any messages in hand for them.
    fn rebalance(
        &self,
        base: &BaseConsumer<Self>,
        err: RDKafkaRespErr,
        tpl: &mut TopicPartitionList,
    ) {
        let cooperative = matches!(base.rebalance_protocol(), RebalanceProtocol::Cooperative);
        let ours: Vec<i32> = tpl
            .elements()
            .iter()
            .filter(|e| e.topic() == self.topic)
            .map(|e| e.partition())
            .collect();
        match err {
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS => {
                for p in &ours {
                    let start = match self.store.meta(*p) {
                        Ok(Some(meta)) => Offset::Offset(meta.next_offset),
                        Ok(None) => self.start_without_state,
                        Err(e) => {
                            // Always correct: the processor skips whatever
                            // the stored state already holds.
                            tracing::error!(partition = p, error = %e, "cannot read the stored offset; starting from the beginning");
                            Offset::Beginning
                        }
                    };
                    if let Err(e) = tpl.set_partition_offset(&self.topic, *p, start) {
                        tracing::error!(partition = p, error = %e, "cannot set the start offset");
                    }
                }
                let res = if cooperative {
                    base.incremental_assign(tpl)
                } else {
                    base.assign(tpl)
                };
                if let Err(e) = res {
                    tracing::error!(error = %e, "assign failed");
                }
                // Paused until the service loop has brought their state up
                // to date from the changelog (see `crate::kafka::changelog`).
                if !ours.is_empty() {
                    let mut paused = TopicPartitionList::new();
                    for p in &ours {
                        paused.add_partition(&self.topic, *p);
                    }
                    if let Err(e) = base.pause(&paused) {
                        tracing::error!(error = %e, "cannot pause partitions for their restore");
                    }
                }
                self.metrics.emit(PartitionsAssigned { partitions: &ours });
                self.with_assignment(|a| {
                    a.epoch += 1;
                    if !cooperative {
                        a.changed.extend(a.owned.iter().copied());
                        a.owned.clear();
                        a.restoring.clear();
                    }
                    a.owned.extend(ours.iter().copied());
                    a.changed.extend(ours.iter().copied());
                    a.restoring.extend(ours.iter().copied());
                });
            }
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS => {
                let lost = base.assignment_lost();
                self.metrics.emit(PartitionsRevoked {
                    partitions: &ours,
                    lost,
                });
                let res = if cooperative {
                    base.incremental_unassign(tpl)
                } else {
                    base.unassign()
                };
                if let Err(e) = res {
                    tracing::error!(error = %e, "unassign failed");
                }
                self.with_assignment(|a| {
                    let gone: Vec<i32> = if cooperative {
                        ours.clone()
                    } else {
                        a.owned.iter().copied().collect()
                    };
                    for p in gone {
                        a.owned.remove(&p);
                        a.restoring.remove(&p);
                        a.changed.insert(p);
                    }
                });
            }
            other => {
                tracing::error!(error = ?other, "rebalance error");
                let _ = base.unassign();
                self.with_assignment(|a| {
                    a.changed.extend(a.owned.iter().copied());
                    a.owned.clear();
                    a.restoring.clear();
                });
            }
        }
    }
}

/// The input consumer as the service uses it: messages come out detached
/// from the client, and partitions are sought, resumed and committed by
/// number.
pub struct Input {
    consumer: StreamConsumer<ConsumerCtx>,
    topic: String,
}

impl Input {
    /// Creates the consumer (see [`consumer`]) with its callbacks.
    pub fn new(
        cfg: &KafkaConfig,
        advertised_url: Option<&str>,
        shared: Shared,
    ) -> Result<Self, KafkaError> {
        let ctx = ConsumerCtx {
            store: shared.store,
            health: shared.health,
            metrics: shared.metrics,
            topic: cfg.input_topic.clone(),
            start_without_state: if cfg.auto_offset_reset == OffsetReset::Latest {
                Offset::End
            } else {
                Offset::Beginning
            },
            assignment: shared.assignment,
            wake: Arc::default(),
        };
        Ok(Self {
            consumer: consumer(cfg, advertised_url, ctx)?,
            topic: cfg.input_topic.clone(),
        })
    }

    /// The callbacks' side: assignment, health, wake-ups.
    pub fn context(&self) -> &ConsumerCtx {
        self.consumer.context()
    }

    /// The next message.
    pub async fn recv(&self) -> Result<InMessage, KafkaError> {
        self.consumer.recv().await.map(|m| detach(&m))
    }

    /// Continues partition `p` from `offset`.
    pub fn seek(&self, p: i32, offset: i64) -> Result<(), KafkaError> {
        self.consumer.seek(
            &self.topic,
            p,
            Offset::Offset(offset),
            Duration::from_secs(5),
        )
    }

    /// Resumes a partition paused for its restore.
    pub fn resume(&self, p: i32) -> Result<(), KafkaError> {
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition(&self.topic, p);
        self.consumer.resume(&tpl)
    }

    /// Commits next offsets to Kafka, asynchronously (for lag only: starts
    /// use the offsets in the store).
    pub fn commit_for_lag(&self, offsets: &[(i32, i64)]) -> Result<(), KafkaError> {
        if offsets.is_empty() {
            return Ok(());
        }
        let mut tpl = TopicPartitionList::new();
        for (p, next) in offsets {
            // One partition refused here does not hold back the others.
            let _ = tpl.add_partition_offset(&self.topic, *p, Offset::Offset(*next));
        }
        if tpl.count() == 0 {
            return Ok(());
        }
        self.consumer.commit(&tpl, CommitMode::Async)
    }
}

/// What the consumer's callbacks share with the rest of the service.
pub struct Shared {
    pub store: Arc<dyn Store>,
    pub health: Arc<Health>,
    pub metrics: Metrics,
    pub assignment: Arc<Mutex<Assignment>>,
}

/// Creates the input consumer (manual offsets, statistics for lag).
pub fn consumer(
    cfg: &KafkaConfig,
    advertised_url: Option<&str>,
    ctx: ConsumerCtx,
) -> Result<StreamConsumer<ConsumerCtx>, KafkaError> {
    let mut defaults = consumer_defaults(cfg);
    if let Some(id) = &cfg.instance_id {
        defaults.push(("group.instance.id", id));
    }
    if let Some(url) = advertised_url {
        // Shown to the group (DescribeGroups), so that every instance can
        // name the owner of a partition by its admin address.
        defaults.push(("client.id", url));
    }
    let consumer: StreamConsumer<ConsumerCtx> =
        client_config(cfg, Role::Consumer, &defaults, &[]).create_with_context(ctx)?;
    consumer.subscribe(&[&cfg.input_topic])?;
    Ok(consumer)
}

/// Creates the idempotent producer for outputs.
pub fn producer(cfg: &KafkaConfig) -> Result<FutureProducer, KafkaError> {
    client_config(cfg, Role::Producer, &producer_defaults(cfg), &[]).create()
}

/// Copies what the processor needs out of a Kafka message.
pub fn detach(m: &BorrowedMessage<'_>) -> InMessage {
    let headers: Vec<(String, Vec<u8>)> = m
        .headers()
        .map(|h| {
            h.iter()
                .map(|h| (h.key.to_string(), h.value.unwrap_or_default().to_vec()))
                .collect()
        })
        .unwrap_or_default();
    let content_type = headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case("content-type"))
        .map(|(_, v)| String::from_utf8_lossy(v).into_owned());
    InMessage {
        partition: m.partition(),
        offset: m.offset(),
        key: m.key().map(<[u8]>::to_vec),
        payload: m.payload().map(<[u8]>::to_vec),
        content_type,
        timestamp: m.timestamp().to_millis(),
        headers,
    }
}

/// Publishes output records and waits until every one is delivered.
/// Clones share one producer, which [`Publisher::recreate`] replaces after
/// a fatal error.
#[derive(Clone)]
pub struct Publisher {
    producer: Arc<std::sync::RwLock<FutureProducer>>,
    config: Arc<KafkaConfig>,
    pub input_topic: String,
    pub alerts_topic: String,
    pub triggers_topic: String,
    pub outcomes_topic: String,
    pub dlq_topic: String,
    pub changelog_topic: String,
}

/// What one [`Publisher::publish`] did: where the delivered records went,
/// and the records that failed with their errors.
#[derive(Default)]
pub struct Delivery {
    /// (partition, offset) of each delivered record, in input order.
    pub written: Vec<(i32, i64)>,
    pub failed: Vec<(OutRecord, KafkaError)>,
}

impl Publisher {
    /// The idempotent producer (see [`producer`]) and the configured topics.
    pub fn new(cfg: &KafkaConfig) -> Result<Self, KafkaError> {
        Ok(Self {
            producer: Arc::new(std::sync::RwLock::new(producer(cfg)?)),
            config: Arc::new(cfg.clone()),
            input_topic: cfg.input_topic.clone(),
            alerts_topic: cfg.alerts_topic.clone(),
            triggers_topic: cfg.triggers_topic.clone(),
            outcomes_topic: cfg.outcomes_topic.clone(),
            dlq_topic: cfg.dlq_topic.clone(),
            changelog_topic: cfg.changelog_topic.clone(),
        })
    }

    /// The producer in use (a cheap handle).
    fn current(&self) -> FutureProducer {
        self.producer
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// The producer's fatal error, if it had one: an idempotent producer
    /// that hit one (e.g. after a long outage) refuses every record from
    /// then on, so it must be replaced.
    pub fn fatal_error(&self) -> Option<String> {
        self.current()
            .client()
            .fatal_error()
            .map(|(code, reason)| format!("{code:?}: {reason}"))
    }

    /// Replaces the producer with a new one; records still queued in the
    /// old one are purged (the caller sends again what was not delivered).
    pub fn recreate(&self) -> Result<(), KafkaError> {
        let fresh = producer(&self.config)?;
        let old = std::mem::replace(
            &mut *self.producer.write().unwrap_or_else(|e| e.into_inner()),
            fresh,
        );
        rdkafka::producer::Producer::purge(
            &old,
            rdkafka::producer::PurgeConfig::default().queue().inflight(),
        );
        Ok(())
    }

    /// Raises a fatal error in the producer in use, as librdkafka does for
    /// an idempotent producer that lost its sequence (librdkafka's own
    /// fault injection, for tests).
    #[doc(hidden)]
    pub fn inject_fatal_error(&self) {
        let p = self.current();
        // SAFETY: the handle is a live producer for the duration of the
        // call; the function only records an error on it.
        unsafe {
            rdkafka::bindings::rd_kafka_test_fatal_error(
                p.client().native_ptr(),
                rdkafka::types::RDKafkaRespErr::RD_KAFKA_RESP_ERR_OUT_OF_ORDER_SEQUENCE_NUMBER,
                c"injected by a test".as_ptr(),
            );
        }
    }

    /// Sends one event to the input topic, keyed by customer id (an
    /// erasure requested over HTTP), and awaits its delivery.
    /// A producer with a fatal error is replaced and the send tried again
    /// once.
    pub async fn send_input(&self, key: &[u8], payload: &[u8]) -> Result<(), KafkaError> {
        let send = async || {
            let record = FutureRecord::to(&self.input_topic)
                .key(key)
                .payload(payload);
            self.current()
                .send(record, Duration::from_secs(10))
                .await
                .map(|_| ())
                .map_err(|(e, _)| e)
        };
        match send().await {
            Err(_) if self.fatal_error().is_some() => {
                self.recreate()?;
                send().await
            }
            done => done,
        }
    }

    /// Sends events to the input topic (keyed records; `None`: no key)
    /// all at once and awaits their delivery; returns how many were
    /// delivered, or the first error.
    pub async fn send_inputs(
        &self,
        records: &[(Option<Vec<u8>>, Vec<u8>)],
    ) -> Result<usize, KafkaError> {
        let producer = self.current();
        let sends = records.iter().map(|(key, payload)| {
            let mut rec = FutureRecord::<[u8], [u8]>::to(&self.input_topic).payload(payload);
            if let Some(k) = key {
                rec = rec.key(k);
            }
            producer.send(rec, Duration::from_secs(30))
        });
        let mut sent = 0;
        for r in futures::future::join_all(sends).await {
            r.map_err(|(e, _)| e)?;
            sent += 1;
        }
        Ok(sent)
    }

    /// Waits up to `timeout` for records still in flight.
    pub fn flush(&self, timeout: Duration) {
        let _ = rdkafka::producer::Producer::flush(&self.current(), timeout);
    }

    /// The topic records of kind `k` go to.
    pub fn topic(&self, k: OutKind) -> &str {
        match k {
            OutKind::Alert => &self.alerts_topic,
            OutKind::Trigger => &self.triggers_topic,
            OutKind::Outcome => &self.outcomes_topic,
            OutKind::DeadLetter => &self.dlq_topic,
            OutKind::Changelog => &self.changelog_topic,
        }
    }

    /// Sends all records and awaits their delivery: where each delivered
    /// record was written, and the records that failed with their errors
    /// (for the caller to retry or settle by the error's class).
    pub async fn publish(&self, records: &[OutRecord]) -> Delivery {
        let producer = self.current();
        let sends = records.iter().map(|r| {
            let mut headers = OwnedHeaders::new_with_capacity(r.headers.len());
            for (k, v) in &r.headers {
                headers = headers.insert(Header {
                    key: k,
                    value: Some(v.as_slice()),
                });
            }
            let mut rec = FutureRecord::<[u8], [u8]>::to(self.topic(r.kind)).headers(headers);
            if !r.payload.is_empty() || r.kind == OutKind::DeadLetter {
                rec = rec.payload(&r.payload);
            }
            if let Some(k) = &r.key {
                rec = rec.key(k);
            }
            if let Some(p) = r.partition {
                rec = rec.partition(p);
            }
            producer.send(rec, Duration::from_secs(5))
        });
        let results = futures::future::join_all(sends).await;
        let mut d = Delivery::default();
        for (r, res) in records.iter().zip(results) {
            match res {
                Ok(w) => d.written.push((w.partition, w.offset)),
                Err((e, _)) => d.failed.push((r.clone(), e)),
            }
        }
        d
    }
}

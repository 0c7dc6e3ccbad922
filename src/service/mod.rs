//! The long-running service: consume, process, publish, commit.
//!
//! Order of every batch, which gives exact state and at-least-once outputs:
//! 1. process the messages (pure steps, state loaded from the store);
//! 2. publish alerts, triggers, dead letters and the changed states to the
//!    changelog, and wait for delivery; then one meta record per partition
//!    closing the batch in the changelog (see [`crate::kafka::changelog`]);
//! 3. write the state, due index, next offsets and changelog position of
//!    each partition in one atomic store commit;
//! 4. commit the offsets to Kafka (for lag tracking only: on assignment the
//!    consumer starts from the offsets in the store, after bringing the
//!    partition up to date from the changelog).
//!
//! A failing dependency (broker, disk) stops the loop at the step that failed;
//! it retries with backoff, reports not ready, and never skips data.

pub mod processor;
pub mod reload;

use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use rdkafka::consumer::{CommitMode, Consumer, StreamConsumer};
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use tokio_util::sync::CancellationToken;

use crate::admin::Health;
use crate::config::{Config, ConfigError, KafkaConfig};
use crate::kafka::changelog::{Plan, RestoreError, Restored};
use crate::kafka::source::{self, ConsumerCtx, Publisher};
use crate::pipeline::event::wall_now;
use crate::pipeline::model::{Model, ModelError};
use crate::service::processor::{Batch, ClockMode, InMessage, OutRecord, Processor};
use crate::store::{Commit, MemStore, PartitionMeta, SledStore, Store, StoreError};
use crate::telemetry::events::{
    BatchDone, Dependency, DependencyFailed, ModelInUse, PartitionReleased, PartitionRestored,
};
use crate::telemetry::metrics::Metrics;

/// Why the service could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Model(#[from] ModelError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("kafka client: {0}")]
    Kafka(#[from] rdkafka::error::KafkaError),
    #[error(transparent)]
    Topic(#[from] crate::kafka::topics::TopicError),
    #[error("admin server cannot listen on {addr}: {source}")]
    Admin {
        addr: String,
        source: std::io::Error,
    },
}

/// Everything the service runs with.
pub struct Service {
    pub config: Config,
    pub model: Arc<Model>,
    pub store: Arc<dyn Store>,
    pub metrics: Metrics,
    pub health: Arc<Health>,
    /// What the admin server's operator endpoints work with.
    pub control: Arc<crate::admin::control::Control>,
}

/// Opens the configured store.
pub fn open_store(config: &Config) -> Result<Arc<dyn Store>, StoreError> {
    Ok(match config.store.engine.as_str() {
        "memory" => Arc::new(MemStore::default()),
        _ => Arc::new(SledStore::open_with(
            &config.store.path,
            Some(config.store.flush_every_ms),
        )?),
    })
}

impl Service {
    /// Loads the model named in the config (refused if it does not match the
    /// feature spec) and opens the store.
    pub fn new(config: Config) -> Result<Self, StartError> {
        let model = Model::load(&config.model.path, &config.feature_spec())?;
        Self::with_model(config, model)
    }

    /// Like [`Service::new`] with a model already in hand.
    pub fn with_model(config: Config, model: Model) -> Result<Self, StartError> {
        let store = open_store(&config)?;
        let model = Arc::new(model);
        let metrics = Metrics::new();
        let control = Arc::new(crate::admin::control::Control::new(
            config.clone(),
            store.clone(),
            metrics.clone(),
            model.clone(),
        ));
        Ok(Self {
            config,
            model,
            store,
            metrics,
            health: Arc::new(Health::default()),
            control,
        })
    }

    /// Starts the admin HTTP server; returns its address.
    pub async fn serve_admin(
        &self,
        shutdown: CancellationToken,
    ) -> Result<std::net::SocketAddr, StartError> {
        let (addr, _task) = crate::admin::serve(
            &self.config.admin.listen,
            self.metrics.clone(),
            self.health.clone(),
            self.control.clone(),
            shutdown,
        )
        .await
        .map_err(|source| StartError::Admin {
            addr: self.config.admin.listen.clone(),
            source,
        })?;
        tracing::info!(%addr, "admin server listening (/metrics, /healthz, /readyz, /customers, /model, /policy)");
        Ok(addr)
    }

    /// Runs until `shutdown` is cancelled; then finishes the batch in hand,
    /// writes state and offsets, flushes and returns.
    pub async fn run(self, shutdown: CancellationToken) -> Result<(), StartError> {
        let cfg = self.config.kafka.clone();
        if crate::kafka::topics::ensure(&cfg, &shutdown).await?
            == crate::kafka::topics::Checked::Stopped
        {
            return Ok(());
        }
        let ctx = ConsumerCtx {
            store: self.store.clone(),
            health: self.health.clone(),
            metrics: self.metrics.clone(),
            topic: cfg.input_topic.clone(),
            start_without_state: if cfg.auto_offset_reset == "latest" {
                rdkafka::topic_partition_list::Offset::End
            } else {
                rdkafka::topic_partition_list::Offset::Beginning
            },
            assignment: self.control.assignment.clone(),
            wake: Arc::default(),
        };
        let wake = ctx.wake.clone();
        let consumer = source::consumer(&cfg, self.config.admin.advertised_url.as_deref(), ctx)?;
        let publisher = Publisher {
            producer: source::producer(&cfg)?,
            alerts_topic: cfg.alerts_topic.clone(),
            triggers_topic: cfg.triggers_topic.clone(),
            outcomes_topic: cfg.outcomes_topic.clone(),
            dlq_topic: cfg.dlq_topic.clone(),
            changelog_topic: cfg.changelog_topic.clone(),
        };
        *self.control.producer.lock().expect("not poisoned") =
            Some((publisher.producer.clone(), cfg.input_topic.clone()));
        let mut config = self.config.clone();
        let clock = if self.config.clock.mode == "event" {
            ClockMode::Event
        } else {
            ClockMode::Wall
        };
        let mut processor = Processor::new(
            self.config.feature_spec(),
            self.config.validator(),
            self.config.policy_for(Some(self.model.file())),
            self.model.clone(),
            self.store.clone(),
            self.metrics.clone(),
            clock,
            cfg.input_topic.clone(),
        );
        self.health.committing.store(true, Ordering::Relaxed);
        tracing::info!(
            brokers = %cfg.brokers,
            topic = %cfg.input_topic,
            group = %cfg.group_id,
            model = %self.model.version(),
            clock = ?clock,
            "churn-alert started"
        );
        self.metrics.emit(ModelInUse {
            from: None,
            to: self.model.version(),
        });
        let mut models = crate::service::reload::ModelWatcher {
            path: self.config.model.path.clone(),
            spec: self.config.feature_spec(),
            metrics: self.metrics.clone(),
            every: Duration::from_secs_f64(self.config.model.reload_check_seconds),
            requests: self.control.model_reload.clone(),
        }
        .spawn(self.model.clone(), shutdown.clone());
        let mut tick =
            tokio::time::interval(Duration::from_millis(self.config.clock.sweep_interval_ms));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        let linger = Duration::from_millis(cfg.batch_linger_ms);
        let mut runner = Runner {
            // Kafka's committed offsets are for lag only (starts use the
            // stored or restored offsets); the memory engine keeps the old
            // behaviour of not committing them.
            commit_to_kafka: self.config.store.engine != "memory",
            flush_on_commit: self.config.store.flush_on_commit,
            consumer: &consumer,
            publisher: &publisher,
            health: &self.health,
            metrics: &self.metrics,
            topic: &cfg.input_topic,
            shutdown: &shutdown,
            kafka: &cfg,
            store: self.store.clone(),
            owner: self.config.admin.advertised_url.clone(),
            restores: HashMap::new(),
            unowned_since: HashMap::new(),
            release_after: Duration::from_secs(cfg.release_unowned_after_seconds),
        };
        loop {
            let new_policy = self.control.take_pending_policy();
            if let Some(new) = &new_policy {
                config.policy = new.policy.clone();
                config.segments = new.segments.clone();
            }
            if new_policy.is_some() || models.has_changed().unwrap_or(false) {
                let m = models.borrow_and_update().clone();
                processor.policy = config.policy_for(Some(m.file()));
                processor.model = m.clone();
                self.control.set_current(m, processor.policy.clone());
                if new_policy.is_some() {
                    tracing::info!(
                        rules = processor.policy.campaigns.len(),
                        "policy reloaded; it applies from this batch on"
                    );
                }
            }
            let restoring = !runner.restores.is_empty();
            let first = tokio::select! {
                biased;
                _ = shutdown.cancelled() => break,
                // Start restores as soon as partitions are assigned, and
                // resume restored partitions promptly.
                _ = wake.notified() => {
                    runner.follow_assignment(&mut processor).await;
                    continue;
                }
                _ = tokio::time::sleep(Duration::from_millis(20)), if restoring => {
                    runner.follow_assignment(&mut processor).await;
                    continue;
                }
                _ = tick.tick() => {
                    runner.follow_assignment(&mut processor).await;
                    runner.release_unowned(&mut processor);
                    if clock == ClockMode::Wall && !runner.handle(&mut processor, None).await {
                        break;
                    }
                    continue;
                }
                m = consumer.recv() => m,
            };
            let mut msgs: Vec<InMessage> = Vec::with_capacity(cfg.batch_max_messages);
            match first {
                Ok(m) => {
                    self.health.connected.store(true, Ordering::Relaxed);
                    msgs.push(source::detach(&m));
                }
                Err(e) => {
                    self.metrics.emit(DependencyFailed {
                        dependency: Dependency::KafkaConsume,
                        error: &e,
                        partition: None,
                        action: "retrying",
                    });
                    tokio::time::sleep(Duration::from_millis(500)).await;
                    continue;
                }
            }
            let deadline = tokio::time::Instant::now() + linger;
            while msgs.len() < cfg.batch_max_messages {
                match tokio::time::timeout_at(deadline, consumer.recv()).await {
                    Ok(Ok(m)) => msgs.push(source::detach(&m)),
                    Ok(Err(e)) => {
                        tracing::warn!(error = %e, "consume failed");
                        break;
                    }
                    Err(_) => break,
                }
            }
            // Messages of partitions assigned or revoked while this batch
            // was gathered are dropped: their owner (maybe this instance
            // again, after its restore) fetches them from the stored offset.
            let stale = runner.follow_assignment(&mut processor).await;
            let active = runner.consumer.context().active();
            msgs.retain(|m| !stale.contains(&m.partition) && active.contains(&m.partition));
            if msgs.is_empty() {
                continue;
            }
            if !runner.handle(&mut processor, Some(msgs)).await {
                break;
            }
        }
        runner.cancel_restores();
        tracing::info!("stopping: flushing state");
        if let Err(e) = self.store.flush() {
            tracing::error!(error = %e, "final flush failed; the next start replays from the last durable commit");
        }
        let _ = rdkafka::producer::Producer::flush(&publisher.producer, Duration::from_secs(5));
        tracing::info!("stopped");
        Ok(())
    }
}

struct Runner<'a> {
    commit_to_kafka: bool,
    flush_on_commit: bool,
    consumer: &'a StreamConsumer<ConsumerCtx>,
    publisher: &'a Publisher,
    health: &'a Health,
    metrics: &'a Metrics,
    topic: &'a str,
    shutdown: &'a CancellationToken,
    kafka: &'a KafkaConfig,
    store: Arc<dyn Store>,
    /// This instance's `admin.advertised_url`, written into meta records.
    owner: Option<String>,
    /// Restores under way, by partition.
    restores: HashMap<i32, RestoreTask>,
    /// Partitions with local state that this instance does not own, and
    /// since when.
    unowned_since: HashMap<i32, std::time::Instant>,
    release_after: Duration,
}

/// A partition being brought up to date on a blocking thread.
struct RestoreTask {
    epoch: u64,
    cancel: Arc<AtomicBool>,
    handle: tokio::task::JoinHandle<Result<Restored, RestoreError>>,
    /// Not before this instant (a retry after a failed attempt).
    started: std::time::Instant,
}

impl Runner<'_> {
    /// Takes in what rebalances changed: cached metadata of those
    /// partitions is forgotten, restores of partitions that went are
    /// cancelled, newly assigned partitions start restoring, and finished
    /// restores resume their partitions. Returns the changed partitions.
    async fn follow_assignment(&mut self, processor: &mut Processor) -> BTreeSet<i32> {
        let ctx = self.consumer.context();
        let (changed, restoring, epoch) =
            ctx.with_assignment(|a| (std::mem::take(&mut a.changed), a.restoring.clone(), a.epoch));
        for p in &changed {
            processor.forget(*p);
            if let Some(t) = self.restores.remove(p) {
                t.cancel.store(true, Ordering::Relaxed);
            }
        }
        for p in restoring {
            if !self.restores.contains_key(&p) {
                self.start_restore(p, epoch, Duration::ZERO);
            }
        }
        self.finish_restores(processor).await;
        changed
    }

    fn start_restore(&mut self, p: i32, epoch: u64, delay: Duration) {
        let cancel = Arc::new(AtomicBool::new(false));
        let (cfg, store, metrics, c) = (
            self.kafka.clone(),
            self.store.clone(),
            self.metrics.clone(),
            cancel.clone(),
        );
        let handle = tokio::task::spawn_blocking(move || {
            std::thread::sleep(delay);
            crate::kafka::changelog::restore(&cfg, p, store.as_ref(), &metrics, &c)
        });
        self.restores.insert(
            p,
            RestoreTask {
                epoch,
                cancel,
                handle,
                started: std::time::Instant::now(),
            },
        );
    }

    async fn finish_restores(&mut self, processor: &mut Processor) {
        let done: Vec<i32> = self
            .restores
            .iter()
            .filter(|(_, t)| t.handle.is_finished())
            .map(|(p, _)| *p)
            .collect();
        let ctx = self.consumer.context();
        for p in done {
            let t = self.restores.remove(&p).expect("listed above");
            let result = futures::FutureExt::now_or_never(t.handle)
                .expect("finished")
                .unwrap_or_else(|e| Err(RestoreError::Store(StoreError::Io(e.to_string()))));
            let current = ctx.with_assignment(|a| a.restoring.contains(&p) && a.epoch == t.epoch);
            if !current {
                continue; // revoked or reassigned meanwhile
            }
            match result {
                Ok(r) => {
                    processor.forget(p);
                    self.metrics.emit(PartitionRestored {
                        partition: p,
                        plan: &r.plan,
                        records: r.records,
                        customers: r.meta.map(|m| m.customers),
                        seconds: r.seconds,
                    });
                    let mut tpl = TopicPartitionList::new();
                    tpl.add_partition(self.topic, p);
                    if let Some(m) = r.meta {
                        // Where the restored state continues (the offset the
                        // partition was assigned at was the local one).
                        if let Err(e) = self.consumer.seek(
                            self.topic,
                            p,
                            Offset::Offset(m.next_offset),
                            Duration::from_secs(5),
                        ) {
                            // Still correct: offsets the state holds are skipped.
                            tracing::warn!(partition = p, error = %e, "seek after restore failed");
                        }
                    }
                    if r.plan == Plan::Seed {
                        if let Err(e) = self.seed(p).await {
                            tracing::warn!(partition = p, error = %e, "cannot write local state to the changelog; retrying");
                            self.start_restore(p, t.epoch, Duration::from_secs(2));
                            continue;
                        }
                    }
                    // Name the new owner in the changelog at once (for the
                    // owner lookup); it changes no state.
                    if let (Some(m), Some(_)) = (r.meta, &self.owner) {
                        let claim =
                            crate::kafka::changelog::meta_record(p, &m, self.owner.as_deref());
                        if let Err((_, e)) = self.publisher.publish(&[claim]).await {
                            tracing::warn!(partition = p, error = %e, "cannot name this instance as the owner in the changelog");
                        }
                    }
                    if let Err(e) = self.consumer.resume(&tpl) {
                        tracing::error!(partition = p, error = %e, "cannot resume partition");
                    }
                    ctx.with_assignment(|a| a.restoring.remove(&p));
                }
                Err(e) => {
                    self.metrics.emit(DependencyFailed {
                        dependency: Dependency::Changelog,
                        error: &e,
                        partition: Some(p),
                        action: "retrying the restore (the partition stays paused)",
                    });
                    let wait = Duration::from_secs(2).saturating_sub(t.started.elapsed());
                    self.start_restore(p, t.epoch, wait);
                }
            }
        }
    }

    /// Writes a partition's whole local state to the changelog (state the
    /// changelog does not have, e.g. from before it existed), closed by a
    /// meta record, and records where the changelog now ends.
    async fn seed(&self, p: i32) -> Result<(), StoreError> {
        let Some(meta) = self.store.meta(p)? else {
            return Ok(());
        };
        let commit = Commit {
            states: self
                .store
                .customers(p)?
                .into_iter()
                .map(|(id, s)| (id, Some(s)))
                .collect(),
            meta,
            ..Default::default()
        };
        let mut attempt = 0;
        let stopped = || StoreError::Io("stopping".into());
        for chunk in crate::kafka::changelog::state_records(p, &commit).chunks(10_000) {
            self.deliver(chunk.to_vec(), &mut attempt)
                .await
                .ok_or_else(stopped)?;
        }
        let closing = crate::kafka::changelog::meta_record(p, &meta, self.owner.as_deref());
        let written = self
            .deliver(vec![closing], &mut attempt)
            .await
            .ok_or_else(stopped)?;
        let next = written.first().map_or(meta.changelog_next, |(_, o)| o + 1);
        self.store.commit(
            p,
            &Commit {
                meta: PartitionMeta {
                    changelog_next: next,
                    ..meta
                },
                ..Default::default()
            },
        )?;
        tracing::info!(
            partition = p,
            customers = commit.states.len(),
            "local state written to the changelog"
        );
        Ok(())
    }

    fn cancel_restores(&mut self) {
        for (_, t) in self.restores.drain() {
            t.cancel.store(true, Ordering::Relaxed);
        }
    }

    /// Deletes local state of partitions another instance has owned for
    /// `kafka.release_unowned_after_seconds`.
    fn release_unowned(&mut self, processor: &mut Processor) {
        let Ok(local) = processor.store.partitions() else {
            return;
        };
        let held: BTreeSet<i32> = self
            .consumer
            .context()
            .with_assignment(|a| a.owned.union(&a.restoring).copied().collect());
        let now = std::time::Instant::now();
        self.unowned_since
            .retain(|p, _| local.contains(p) && !held.contains(p));
        for p in local.into_iter().filter(|p| !held.contains(p)) {
            let since = *self.unowned_since.entry(p).or_insert(now);
            if now.duration_since(since) >= self.release_after {
                match processor.store.drop_partition(p) {
                    Ok(()) => {
                        processor.forget(p);
                        self.unowned_since.remove(&p);
                        self.metrics.emit(PartitionReleased { partition: p });
                    }
                    Err(e) => {
                        tracing::warn!(partition = p, error = %e, "cannot release partition state")
                    }
                }
            }
        }
    }

    /// Waits before the next attempt; false if the service is stopping.
    async fn backoff(
        &self,
        attempt: &mut u32,
        dependency: Dependency,
        error: &(dyn std::fmt::Display + Sync),
    ) -> bool {
        self.health.committing.store(false, Ordering::Relaxed);
        let wait = Duration::from_millis((100u64 << (*attempt).min(6)).min(5_000));
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
    async fn deliver(&self, records: Vec<OutRecord>, attempt: &mut u32) -> Option<Vec<(i32, i64)>> {
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
    async fn handle(&mut self, processor: &mut Processor, msgs: Option<Vec<InMessage>>) -> bool {
        let started = std::time::Instant::now();
        let mut attempt = 0;
        let batch: Batch = loop {
            let res = match &msgs {
                Some(m) => processor.process(m, wall_now()),
                None => processor.sweep_only(&self.consumer.context().active(), wall_now()),
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
        let mut batch = batch;
        // 1. Outputs and the changelog's state records; 2. once those are
        // delivered, one meta record per partition closing its batch (see
        // `crate::kafka::changelog`); 3. the local commit, which records where the
        // changelog now ends.
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
        if self.deliver(first, &mut attempt).await.is_none() {
            return false;
        }
        let Some(written) = self.deliver(metas, &mut attempt).await else {
            return false;
        };
        for (p, offset) in written {
            if let Some(c) = batch.commits.get_mut(&p) {
                c.meta.changelog_next = offset + 1;
            }
        }
        loop {
            match processor.commit(&batch) {
                Ok(()) => break,
                Err(e) => {
                    if !self.backoff(&mut attempt, Dependency::Store, &e).await {
                        return false;
                    }
                }
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
        let mut tpl = TopicPartitionList::new();
        for (p, c) in &batch.commits {
            let _ = tpl.add_partition_offset(self.topic, *p, Offset::Offset(c.meta.next_offset));
        }
        if self.commit_to_kafka && msgs.is_some() && tpl.count() > 0 {
            if let Err(e) = self.consumer.commit(&tpl, CommitMode::Async) {
                tracing::debug!(error = %e, "offset commit to Kafka failed (used for lag only)");
            }
        }
        let now = wall_now();
        let latencies: Vec<f64> = batch
            .timestamps
            .iter()
            .map(|ts| ((now - ts).max(0) as f64) / 1000.0)
            .collect();
        self.metrics.emit(BatchDone {
            consumed: batch.consumed,
            records: batch.records.len(),
            seconds: started.elapsed().as_secs_f64(),
            latencies: &latencies,
        });
        true
    }
}

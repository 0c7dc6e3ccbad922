//! Batch processing between the Kafka edge and the store.
//!
//! A batch of input messages is split by partition; every customer touched is
//! loaded once, the pure [`crate::pipeline::step`] functions run on each event, due
//! silent customers are re-scored, and the result is a set of output records
//! plus one [`Commit`] per partition (state, due index, next offset).
//! The caller publishes the records, waits for delivery, then calls
//! [`Processor::commit`]: outputs are at least once, state exactly once.
//!
//! The service overlaps a batch's store write with the next batch's
//! processing: once a batch's records are delivered it is *staged*
//! ([`Processor::stage`]), and reads see the store as if the staged
//! commits were applied, while they are written on another thread. The
//! next batch is published only once that write has landed
//! ([`Processor::landed`]), so commits still happen one after the other.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

use crate::kafka::changelog::RestoreError;
use crate::kafka::record::{
    cloudevents_headers, dead_letter_body, original_headers, trace_context, Versioned,
    SCHEMA_VERSION,
};
pub use crate::kafka::record::{InMessage, OutKind, OutRecord};
use crate::pipeline::decode::{RejectCode, Rejection, Validator};
use crate::pipeline::error::{Classify, ErrorClass};
pub use crate::pipeline::event::ClockMode;
use crate::pipeline::event::Millis;
use crate::pipeline::features::{CustomerState, FeatureSpec};
use crate::pipeline::model::Model;
use crate::pipeline::policy::Policy;
use crate::pipeline::step::{self, Outcome, Output};
use crate::store::{Commit, PartitionMeta, Store, StoreError};
use crate::telemetry::events::{
    AlertInCooldown, AlertPublished, CustomerErased, DeadLettered, DuplicateDropped, EventConsumed,
    OffsetGap, OutcomeDecided, PartitionCommitted, ScoreCause, Scored, SilentRescored,
    StateQuarantined, StoreCommitted, TriggerHeld, TriggerPublished, TriggerSuppressed,
};
use crate::telemetry::metrics::Metrics;

/// With the event-time clock, silent customers are swept each time a
/// partition's watermark crosses a multiple of this.
pub const SWEEP_TICK_MS: Millis = 3_600_000;

/// An output keyed by customer id: JSON with its `schema_version`, the
/// `alert-id` header and CloudEvents headers (`ce_id` = `id`, `ce_time` =
/// `time`, the event time it refers to).
struct Publishable<'a> {
    kind: OutKind,
    customer_id: &'a str,
    alert_id: &'a str,
    id: &'a str,
    time: &'a str,
}

impl Publishable<'_> {
    fn record(self, source: &str, body: &impl serde::Serialize) -> OutRecord {
        let payload = serde_json::to_vec(&Versioned {
            schema_version: SCHEMA_VERSION,
            body,
        })
        .expect("outputs serialise");
        let mut headers = vec![
            ("content-type".into(), b"application/json".to_vec()),
            ("alert-id".into(), self.alert_id.as_bytes().to_vec()),
        ];
        headers.extend(cloudevents_headers(self.kind, self.id, source, self.time));
        OutRecord {
            kind: self.kind,
            key: Some(self.customer_id.as_bytes().to_vec()),
            payload,
            headers,
            partition: None,
        }
    }
}

/// State writes in a batch from which its partitions are committed on
/// threads of their own (measured: batches of 2,000 events gain 11%,
/// batches of 50 lose 20% to the threads).
const PARALLEL_COMMIT_WRITES: usize = 500;

/// Batches of this many messages or more process their partitions on
/// threads of their own.
const PARALLEL_PROCESS_MESSAGES: usize = 1_000;

/// What one batch produced, before anything is published or written.
#[derive(Debug, Default)]
pub struct Batch {
    /// Records to publish, in order.
    pub records: Vec<OutRecord>,
    /// Per-partition commits to apply once the records are delivered.
    pub commits: BTreeMap<i32, Commit>,
    /// Input messages applied (not skipped as already applied).
    pub consumed: usize,
    /// Records published (set when they are handed to the publisher).
    pub published: usize,
    /// Kafka timestamps of the messages, for the latency metric.
    pub timestamps: Vec<Millis>,
}

/// The machine's cores (1 when unknown), read once.
fn cores() -> usize {
    static CORES: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    *CORES.get_or_init(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
}

/// `f` of each item, in their order. When `side_by_side`, the items are
/// cut into runs of neighbours of equal length (but the last), at most as
/// many as the machine has cores, each run on a thread of its own, inside
/// the caller's tracing span; a panic in one is raised here.
fn map_side_by_side<T: Sync, R: Send>(
    items: &[T],
    side_by_side: bool,
    f: impl Fn(&T) -> R + Sync,
) -> Vec<R> {
    if !side_by_side || items.len() < 2 {
        return items.iter().map(f).collect();
    }
    let threads = cores();
    if threads < 2 {
        return items.iter().map(f).collect();
    }
    let run = items.len().div_ceil(threads.min(items.len()));
    let (f, span) = (&f, tracing::Span::current());
    std::thread::scope(|scope| {
        let workers: Vec<_> = items
            .chunks(run)
            .map(|chunk| {
                let span = span.clone();
                scope.spawn(move || span.in_scope(|| chunk.iter().map(f).collect::<Vec<R>>()))
            })
            .collect();
        workers
            .into_iter()
            .flat_map(|w| w.join().unwrap_or_else(|p| std::panic::resume_unwind(p)))
            .collect()
    })
}

impl Batch {
    /// Appends another partition's part of the batch.
    fn join(&mut self, part: Batch) {
        // Named field by field, so a new field cannot be left out here.
        let Batch {
            records,
            commits,
            consumed,
            published,
            timestamps,
        } = part;
        self.records.extend(records);
        self.commits.extend(commits);
        self.consumed += consumed;
        self.published += published;
        self.timestamps.extend(timestamps);
    }
}

/// A second copy of the committed customer states (the changelog, in the
/// service), read again when a stored state is corrupt.
pub trait StateBackup: Send + Sync {
    /// The customer's state as of the partition's last commit, whose
    /// changelog position is `upto`; `Ok(None)` when the copy has none.
    fn committed(
        &self,
        partition: i32,
        customer: &str,
        upto: i64,
    ) -> Result<Option<CustomerState>, RestoreError>;
}

/// The changelog as the backup of committed states.
pub struct ChangelogBackup(pub crate::kafka::settings::KafkaConfig);

impl StateBackup for ChangelogBackup {
    fn committed(
        &self,
        partition: i32,
        customer: &str,
        upto: i64,
    ) -> Result<Option<CustomerState>, RestoreError> {
        crate::kafka::changelog::committed_state(&self.0, partition, customer, upto)
    }
}

/// The commits of a batch whose records are delivered and whose store
/// write is under way: reads see them as applied.
struct Staged {
    commits: Arc<BTreeMap<i32, Commit>>,
    /// Per partition, the due-index entries the staged commit removes.
    removed: HashMap<i32, HashSet<(Millis, String)>>,
}

struct Slot {
    /// `next_due` as stored, i.e. the due-index entry to replace.
    stored_due: Option<Millis>,
    existed: bool,
    state: Option<CustomerState>,
}

/// Turns message batches into outputs and commits.
pub struct Processor {
    pub spec: FeatureSpec,
    pub validator: Validator,
    pub policy: Policy,
    pub model: Arc<Model>,
    pub store: Arc<dyn Store>,
    pub metrics: Metrics,
    pub clock: ClockMode,
    pub input_topic: String,
    /// The CloudEvents `ce_source` of the outputs: `/churn-alert/` and the
    /// input topic.
    pub ce_source: String,
    /// Most silent customers re-scored per partition per batch.
    pub sweep_limit: usize,
    /// Largest payload a dead letter carries (`kafka.dead_letter_max_bytes`).
    pub dead_letter_max_bytes: usize,
    /// Where a corrupt stored state is read again (none: it starts afresh).
    pub backup: Option<Arc<dyn StateBackup>>,
    /// The schemas of framed messages fetched so far, by id.
    pub schemas: crate::pipeline::wire::Schemas,
    metas: HashMap<i32, PartitionMeta>,
    staged: Option<Staged>,
}

impl Processor {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        spec: FeatureSpec,
        validator: Validator,
        policy: Policy,
        model: Arc<Model>,
        store: Arc<dyn Store>,
        metrics: Metrics,
        clock: ClockMode,
        input_topic: String,
    ) -> Self {
        Self {
            spec,
            validator,
            policy,
            model,
            store,
            metrics,
            clock,
            ce_source: format!("/churn-alert/{input_topic}"),
            input_topic,
            sweep_limit: 10_000,
            dead_letter_max_bytes: crate::kafka::settings::KafkaConfig::default()
                .dead_letter_max_bytes,
            backup: None,
            schemas: crate::pipeline::wire::Schemas::new(),
            metas: HashMap::new(),
            staged: None,
        }
    }

    /// The committed metadata of a partition (cached).
    pub fn meta(&mut self, partition: i32) -> Result<PartitionMeta, StoreError> {
        if let Some(m) = self.metas.get(&partition) {
            return Ok(*m);
        }
        let m = self.store.meta(partition)?.unwrap_or_default();
        self.metas.insert(partition, m);
        Ok(m)
    }

    /// Forgets cached metadata (after a rebalance, state may have changed).
    /// Never while a staged commit of the partition is being written: the
    /// caller waits for it to land first.
    pub fn forget(&mut self, partition: i32) {
        debug_assert!(
            self.staged_commit(partition).is_none(),
            "partition {partition} forgotten while its commit is being written"
        );
        self.metas.remove(&partition);
    }

    /// Stages a batch's commits (its records delivered, its changelog
    /// closed): until [`Processor::landed`], reads see them as applied and
    /// the partitions' metadata is theirs, while the caller writes them
    /// with [`Processor::write`] on another thread.
    pub fn stage(&mut self, commits: Arc<BTreeMap<i32, Commit>>) {
        debug_assert!(self.staged.is_none(), "one staged batch at a time");
        let mut removed = HashMap::new();
        for (p, c) in commits.iter() {
            self.metas.insert(*p, c.meta);
            removed.insert(*p, c.due_remove.iter().cloned().collect());
        }
        self.staged = Some(Staged { commits, removed });
    }

    /// The staged commits were written: reads go to the store again.
    pub fn landed(&mut self) {
        if let Some(st) = self.staged.take() {
            self.committed(&st.commits);
        }
    }

    fn staged_commit(&self, p: i32) -> Option<&Commit> {
        self.staged.as_ref().and_then(|s| s.commits.get(&p))
    }

    /// A customer's state, staged or stored.
    fn read(&self, p: i32, id: &str) -> Result<Option<CustomerState>, StoreError> {
        if let Some(c) = self.staged_commit(p) {
            // A commit's states are sorted by customer id.
            if let Ok(i) = c.states.binary_search_by(|(k, _)| k.as_str().cmp(id)) {
                return Ok(c.states[i].1.clone());
            }
        }
        self.store.get(p, id)
    }

    /// Due-index entries in `[from, to]`, earliest first, at most `limit`,
    /// with any staged commit applied; and whether they are all there are.
    fn due_between(
        &self,
        p: i32,
        from: Millis,
        to: Millis,
        limit: usize,
    ) -> Result<(Vec<(Millis, String)>, bool), StoreError> {
        let Some(c) = self.staged_commit(p) else {
            let due = self.store.due_between(p, from, to, limit)?;
            let all = due.len() < limit;
            return Ok((due, all));
        };
        let removed = &self.staged.as_ref().expect("staged").removed[&p];
        // Asking for as many more as the staged commit removes still yields
        // the earliest `limit` of what remains.
        let asked = limit.saturating_add(removed.len());
        let stored = self.store.due_between(p, from, to, asked)?;
        let all = stored.len() < asked;
        let mut due: Vec<(Millis, String)> = stored
            .into_iter()
            .filter(|e| !removed.contains(e))
            .collect();
        due.extend(
            c.due_add
                .iter()
                .filter(|(t, _)| (from..=to).contains(t))
                .cloned(),
        );
        due.sort();
        let all = all && due.len() <= limit;
        due.truncate(limit);
        Ok((due, all))
    }

    /// Processes input messages; `wall_now` is the wall clock.
    pub fn process(&mut self, msgs: &[InMessage], wall_now: Millis) -> Result<Batch, StoreError> {
        let mut by_part: BTreeMap<i32, Vec<&InMessage>> = BTreeMap::new();
        for m in msgs {
            by_part.entry(m.partition).or_default().push(m);
        }
        let mut parts = Vec::with_capacity(by_part.len());
        for (p, msgs) in by_part {
            parts.push((p, self.meta(p)?, msgs));
        }
        let this = &*self;
        let run = |(p, meta, msgs): &(i32, PartitionMeta, Vec<&InMessage>)| {
            let mut part = Batch::default();
            this.process_partition(*p, *meta, msgs, wall_now, &mut part)
                .map(|()| part)
        };
        // Partitions are independent: those of a large batch are processed
        // side by side, and their outputs joined in partition order, as
        // one after the other would give them. Two things differ: alerts
        // of different partitions enter the status page's recent list in
        // the order they are raised, and when one partition fails (a store
        // read), the others still run (their work is discarded with the
        // batch, which is tried again whole; the events and alerts they
        // counted in the metrics are counted again then, as those of the
        // partitions before a failing one always were).
        let side_by_side = parts.len() > 1 && msgs.len() >= PARALLEL_PROCESS_MESSAGES;
        let parts = map_side_by_side(&parts, side_by_side, run);
        let mut batch = Batch::default();
        for part in parts {
            batch.join(part?);
        }
        Ok(batch)
    }

    /// One partition's messages of a batch, from its committed metadata.
    fn process_partition(
        &self,
        p: i32,
        mut meta: PartitionMeta,
        msgs: &[&InMessage],
        wall_now: Millis,
        batch: &mut Batch,
    ) -> Result<(), StoreError> {
        let mut slots: HashMap<String, Slot> = HashMap::new();
        // Stored due entries before this time are in `slots` already.
        let mut swept = Millis::MIN;
        for &m in msgs {
            if m.offset < meta.next_offset {
                continue; // already in the state: a redelivery after restart
            }
            if m.offset > meta.next_offset && meta.next_offset > 0 {
                // Offsets can skip (compaction, transaction markers), but
                // a gap after a restart would mean skipped input: say so.
                self.metrics.emit(OffsetGap {
                    partition: p,
                    expected: meta.next_offset,
                    got: m.offset,
                });
            }
            meta.next_offset = m.offset + 1;
            batch.consumed += 1;
            if let Some(ts) = m.timestamp {
                batch.timestamps.push(ts);
            }
            let before = meta.watermark;
            self.apply_message(m, &mut meta, &mut slots, &mut batch.records, wall_now)?;
            // Event time: sweep whenever the watermark crosses a tick
            // boundary. Those points follow from the message sequence
            // alone, so a replay cut into other batches (after a crash,
            // say) re-scores at the same points and gives the same state
            // and outputs, late events included.
            if self.clock == ClockMode::Event
                && meta.watermark.div_euclid(SWEEP_TICK_MS) > before.div_euclid(SWEEP_TICK_MS)
            {
                self.sweep(
                    p,
                    meta.watermark,
                    &mut swept,
                    &mut slots,
                    &mut batch.records,
                )?;
            }
        }
        if self.clock == ClockMode::Wall {
            self.sweep(p, wall_now, &mut swept, &mut slots, &mut batch.records)?;
        }
        batch.commits.insert(p, self.build_commit(meta, slots));
        Ok(())
    }

    /// The live-mode sweep: re-scores due silent customers of the given
    /// partitions as of the wall clock, without input. With the event-time
    /// clock sweeps happen only where the watermark moves (in `process`), so
    /// this does nothing.
    pub fn sweep_only(
        &mut self,
        partitions: &[i32],
        wall_now: Millis,
    ) -> Result<Batch, StoreError> {
        let mut batch = Batch::default();
        if self.clock == ClockMode::Event {
            return Ok(batch);
        }
        for &p in partitions {
            let meta = self.meta(p)?;
            if meta == PartitionMeta::default() {
                continue;
            }
            let now = wall_now;
            let mut slots = HashMap::new();
            let mut from = Millis::MIN;
            self.sweep(p, now, &mut from, &mut slots, &mut batch.records)?;
            if !slots.is_empty() {
                batch.commits.insert(p, self.build_commit(meta, slots));
            }
        }
        Ok(batch)
    }

    /// Writes a batch's commits (after its records were delivered).
    pub fn commit(&mut self, batch: &Batch) -> Result<(), StoreError> {
        debug_assert!(self.staged.is_none(), "a staged batch lands first");
        Self::write(&*self.store, &batch.commits)?;
        self.committed(&batch.commits);
        Ok(())
    }

    /// Writes commits to the store (the part of [`Processor::commit`] that
    /// can run on another thread). Each partition's commit is atomic on its
    /// own, so the partitions of a large batch are committed side by side:
    /// their states are encoded and their engine batches built in parallel
    /// (both engines then apply a batch under a lock of their own). For a
    /// small batch the threads would cost more than they save. A failed
    /// partition fails the whole write, which is tried again whole:
    /// committing the same changes twice leaves the same state.
    pub fn write(store: &dyn Store, commits: &BTreeMap<i32, Commit>) -> Result<(), StoreError> {
        let writes: usize = commits.values().map(|c| c.states.len()).sum();
        let commits: Vec<(&i32, &Commit)> = commits.iter().collect();
        let side_by_side = commits.len() > 1 && writes >= PARALLEL_COMMIT_WRITES;
        map_side_by_side(&commits, side_by_side, |(p, c)| store.commit(**p, c))
            .into_iter()
            .collect()
    }

    /// Notes written commits: their metadata, and the metrics.
    fn committed(&mut self, commits: &BTreeMap<i32, Commit>) {
        for (p, c) in commits {
            self.metas.insert(*p, c.meta);
            self.metrics.emit(PartitionCommitted {
                partition: *p,
                customers: c.meta.customers,
                next_offset: c.meta.next_offset,
            });
        }
        self.metrics.emit(StoreCommitted);
    }

    fn slot<'a>(
        &self,
        p: i32,
        slots: &'a mut HashMap<String, Slot>,
        id: &str,
    ) -> Result<&'a mut Slot, StoreError> {
        if !slots.contains_key(id) {
            let slot = match self.read(p, id) {
                Ok(state) => Slot {
                    stored_due: state.as_ref().and_then(|s| s.next_due),
                    existed: state.is_some(),
                    state,
                },
                Err(e) if e.class() == ErrorClass::Corrupt => self.quarantine(p, id, &e)?,
                Err(e) => return Err(e),
            };
            slots.insert(id.to_string(), slot);
        }
        Ok(slots.get_mut(id).expect("inserted above"))
    }

    /// Copies a customer's corrupt stored state aside (trying again would
    /// read the same bytes) and rebuilds it from the backup when that holds
    /// it; otherwise the customer starts afresh. The batch's commit then
    /// replaces the stored bytes; a batch that fails before it finds them
    /// again and rebuilds again. A backup that cannot be read for now is an
    /// error of class Transient, so the batch is tried again.
    fn quarantine(&self, p: i32, id: &str, error: &StoreError) -> Result<Slot, StoreError> {
        // The committed metadata, loaded when the batch began.
        let upto = self.metas.get(&p).map_or(0, |m| m.changelog_next);
        let (state, unavailable) = match &self.backup {
            Some(b) if upto > 0 => match b.committed(p, id, upto) {
                Ok(s) => (s, None),
                Err(e) if e.class() == ErrorClass::Transient => {
                    return Err(StoreError::BackupUnavailable {
                        customer: id.to_string(),
                        message: e.to_string(),
                    })
                }
                Err(e) => (None, Some(e.to_string())),
            },
            _ => (None, None),
        };
        // An error here is the store's, settled by its class.
        self.store.quarantine(p, id)?;
        self.metrics.emit(StateQuarantined {
            partition: p,
            customer: id,
            error,
            rebuilt: state.is_some(),
            backup_error: unavailable.as_deref(),
        });
        Ok(Slot {
            // The quarantine removed its due-index entries.
            stored_due: None,
            // Counted among the partition's customers when it was stored.
            existed: true,
            state,
        })
    }

    /// Keeps a fetched schema (ids never change what they name).
    pub fn remember_schema(&mut self, id: u32, entry: crate::pipeline::wire::SchemaEntry) {
        self.schemas.insert(id, entry);
    }

    /// Before `more` ids are fetched for a batch: past 10,000 ids, those
    /// that could not be had are forgotten (asked for again when met
    /// again), so a stream of made-up ids cannot grow memory without
    /// bound. Never during a batch, which needs its own.
    pub fn make_room_for_schemas(&mut self, more: usize) {
        use crate::pipeline::wire::SchemaEntry;
        if self.schemas.len() + more > 10_000 {
            self.schemas
                .retain(|_, e| matches!(e, SchemaEntry::Ready(_)));
        }
    }

    fn apply_message(
        &self,
        m: &InMessage,
        meta: &mut PartitionMeta,
        slots: &mut HashMap<String, Slot>,
        records: &mut Vec<OutRecord>,
        wall_now: Millis,
    ) -> Result<(), StoreError> {
        let payload = m.payload.as_deref().unwrap_or(&[]);
        let event = match self.validator.decode_with(
            m.key.as_deref(),
            payload,
            m.content_type.as_deref(),
            wall_now,
            &self.schemas,
        ) {
            Ok(e) => e,
            Err(rej) => {
                records.push(self.dead_letter(m, &rej));
                return Ok(());
            }
        };
        let now = match self.clock {
            ClockMode::Wall => wall_now,
            ClockMode::Event => meta.watermark.max(event.occurred_at),
        };
        let slot = self.slot(m.partition, slots, &event.customer_id)?;
        // An erasure carries the time it was requested, not an event time
        // of the stream: it neither scores the customer first nor moves the
        // partition's event-time clock.
        let erasure = matches!(event.kind, crate::pipeline::event::EventKind::Erasure);
        if self.clock == ClockMode::Event && !erasure {
            // Silent spells before this event are scored first, as of their
            // due times, so the event does not leak into them.
            self.catch_up(
                &event.customer_id,
                slot,
                event.occurred_at.min(now),
                records,
            );
        }
        let (state, out) = step::step(
            slot.state.take(),
            &event,
            now,
            &self.model,
            &self.policy,
            &self.spec,
        );
        slot.state = state;
        match out.outcome {
            Outcome::Duplicate => {
                self.metrics.emit(DuplicateDropped {
                    event_id: &event.event_id,
                });
                return Ok(());
            }
            Outcome::TooLate => {
                let rej = Rejection::new(
                    RejectCode::TooLate,
                    format!(
                        "occurred_at is more than features.dedup_window_days ({} days) behind the customer's newest event, so it cannot be told apart from a duplicate",
                        self.spec.dedup_window_ms as f64 / crate::pipeline::event::DAY_MS as f64
                    ),
                );
                records.push(self.dead_letter(m, &rej));
                return Ok(());
            }
            Outcome::Erased => {
                self.metrics.emit(CustomerErased {
                    partition: m.partition,
                    offset: m.offset,
                });
                self.metrics.recent_alerts.forget(&event.customer_id);
                for kind in [OutKind::Alert, OutKind::Trigger, OutKind::Outcome] {
                    records.push(OutRecord {
                        kind,
                        key: Some(event.customer_id.clone().into_bytes()),
                        payload: Vec::new(),
                        headers: vec![("erasure".into(), b"true".to_vec())],
                        partition: None,
                    });
                }
            }
            Outcome::Applied => {}
        }
        if !erasure {
            meta.watermark = meta.watermark.max(event.occurred_at);
        }
        self.metrics.emit(EventConsumed {
            kind: event.kind.type_name(),
        });
        let from = records.len();
        self.outputs(&out, ScoreCause::Event, records);
        // What the event caused continues its trace: its alert, and a
        // trigger sent now (not one it released from quiet hours, nor an
        // outcome, which belong to an earlier alert).
        let trace = trace_context(&m.headers);
        let released = out
            .trigger
            .as_ref()
            .is_some_and(|t| t.released_at.is_some());
        if !trace.is_empty() {
            for r in &mut records[from..] {
                let caused = match r.kind {
                    OutKind::Alert => true,
                    OutKind::Trigger => !released,
                    _ => false,
                };
                if caused {
                    r.headers.extend(trace.iter().cloned());
                }
            }
        }
        Ok(())
    }

    /// Re-scores every customer of partition `p` who is due at or before
    /// `now`: those in the stored due index and those touched in this batch.
    ///
    /// `swept` is where the stored due index is still to be read from:
    /// a batch adds no due entries to the store (its commit does), and the
    /// only ones it removes (a quarantine's) belong to customers then in
    /// `slots`; so the entries an earlier sweep of the same batch read are
    /// in `slots` by now, with their current due times in the states.
    fn sweep(
        &self,
        p: i32,
        now: Millis,
        swept: &mut Millis,
        slots: &mut HashMap<String, Slot>,
        records: &mut Vec<OutRecord>,
    ) -> Result<(), StoreError> {
        // The limit bounds one live sweep; in event time everything due is
        // swept, so the sweep does not depend on what is stored yet.
        let limit = match self.clock {
            ClockMode::Wall => self.sweep_limit,
            ClockMode::Event => usize::MAX,
        };
        let (mut due, all) = self.due_between(p, *swept, now, limit)?;
        if all {
            *swept = (*swept).max(now.saturating_add(1));
        }
        due.extend(slots.iter().filter_map(|(id, s)| {
            let d = s.state.as_ref()?.next_due?;
            (d <= now).then(|| (d, id.clone()))
        }));
        due.sort();
        due.dedup_by(|a, b| a.1 == b.1);
        for (_, id) in due {
            let slot = self.slot(p, slots, &id)?;
            self.catch_up(&id, slot, now, records);
        }
        Ok(())
    }

    /// Re-scores a silent customer at each due time up to `until`. With the
    /// event-time clock each re-score happens as of its due time, so outputs
    /// do not depend on how the stream was cut into batches; with the wall
    /// clock it is one re-score as of `until`.
    fn catch_up(&self, id: &str, slot: &mut Slot, until: Millis, records: &mut Vec<OutRecord>) {
        let due = slot.state.as_ref().and_then(|s| s.next_due);
        if due.is_none_or(|d| d > until) {
            return; // erased, or nothing due
        }
        let Some(mut state) = slot.state.take() else {
            return;
        };
        while let Some(due) = state.next_due.filter(|d| *d <= until) {
            let at = match self.clock {
                ClockMode::Event => due,
                ClockMode::Wall => until,
            };
            let (s, out) = step::rescore(state, id, at, &self.model, &self.policy, &self.spec);
            state = s;
            self.metrics.emit(SilentRescored);
            self.outputs(&out, ScoreCause::Silence, records);
        }
        slot.state = Some(state);
    }

    /// The records of one step's outputs, counted.
    fn outputs(&self, out: &Output, cause: ScoreCause, records: &mut Vec<OutRecord>) {
        if let Some(probability) = out.probability {
            self.metrics.emit(Scored { cause, probability });
        }
        if out.cooldown {
            self.metrics.emit(AlertInCooldown);
        }
        if let Some(a) = &out.alert {
            self.metrics.emit(AlertPublished { tier: &a.risk_tier });
            self.metrics.recent_alerts.note(
                a,
                crate::pipeline::event::rfc3339(crate::pipeline::event::wall_now()),
            );
            records.push(
                Publishable {
                    kind: OutKind::Alert,
                    customer_id: &a.customer_id,
                    alert_id: &a.alert_id,
                    id: &a.alert_id,
                    time: &a.as_of,
                }
                .record(&self.ce_source, a),
            );
        }
        if let Some(t) = &out.trigger {
            self.metrics.emit(TriggerPublished {
                campaign_id: &t.campaign_id,
            });
            records.push(
                Publishable {
                    kind: OutKind::Trigger,
                    customer_id: &t.customer_id,
                    alert_id: &t.alert_id,
                    id: &t.trigger_id,
                    time: t.released_at.as_deref().unwrap_or(&t.as_of),
                }
                .record(&self.ce_source, t),
            );
        }
        if out.held {
            self.metrics.emit(TriggerHeld);
        }
        if let Some(o) = &out.decided {
            self.metrics.emit(OutcomeDecided {
                campaign_id: o.campaign_id.as_deref().unwrap_or("none"),
                group: o.group.as_str(),
                outcome: o.outcome.as_str(),
            });
            records.push(
                Publishable {
                    kind: OutKind::Outcome,
                    customer_id: &o.customer_id,
                    alert_id: &o.alert_id,
                    id: &o.outcome_id,
                    time: &o.decided_at,
                }
                .record(&self.ce_source, o),
            );
        }
        if let Some(why) = out.suppressed {
            self.metrics.emit(TriggerSuppressed {
                reason: why.as_str(),
            });
        }
    }

    fn dead_letter(&self, m: &InMessage, rej: &Rejection) -> OutRecord {
        self.metrics.emit(DeadLettered { reason: rej.code });
        let mut headers = vec![
            (
                "dlq-reason-code".to_string(),
                rej.code.as_str().as_bytes().to_vec(),
            ),
            ("dlq-reason".to_string(), rej.reason.clone().into_bytes()),
            (
                "dlq-source-topic".to_string(),
                self.input_topic.clone().into_bytes(),
            ),
            (
                "dlq-source-partition".to_string(),
                m.partition.to_string().into_bytes(),
            ),
            (
                "dlq-source-offset".to_string(),
                m.offset.to_string().into_bytes(),
            ),
        ];
        if let Some(ct) = &m.content_type {
            headers.push(("content-type".to_string(), ct.clone().into_bytes()));
        }
        // The original's own headers and timestamp, to trace it back to
        // its producer. (The record's Kafka timestamp stays the time it was
        // dead-lettered, so the topic's retention counts from then.)
        if let Some(ts) = m.timestamp {
            headers.push((
                "dlq-original-timestamp".to_string(),
                ts.to_string().into_bytes(),
            ));
        }
        headers.extend(original_headers(&m.headers));
        headers.extend(trace_context(&m.headers));
        let (payload, about) = dead_letter_body(
            m.payload.as_deref().unwrap_or(&[]),
            self.dead_letter_max_bytes,
        );
        headers.extend(about);
        let id = format!("{}-{}-{}", self.input_topic, m.partition, m.offset);
        let time = m
            .timestamp
            .map(crate::pipeline::event::rfc3339)
            .unwrap_or_default();
        headers.extend(cloudevents_headers(
            OutKind::DeadLetter,
            &id,
            &self.ce_source,
            &time,
        ));
        OutRecord {
            kind: OutKind::DeadLetter,
            key: m.key.clone(),
            payload,
            headers,
            partition: None,
        }
    }

    fn build_commit(&self, mut meta: PartitionMeta, slots: HashMap<String, Slot>) -> Commit {
        let mut c = Commit::default();
        let mut customers = meta.customers as i64;
        for (id, slot) in slots {
            let new_due = slot.state.as_ref().and_then(|s| s.next_due);
            if slot.stored_due != new_due {
                if let Some(t) = slot.stored_due {
                    c.due_remove.push((t, id.clone()));
                }
                if let Some(t) = new_due {
                    c.due_add.push((t, id.clone()));
                }
            }
            customers += i64::from(slot.state.is_some()) - i64::from(slot.existed);
            c.states.push((id, slot.state));
        }
        c.states.sort_by(|a, b| a.0.cmp(&b.0));
        meta.customers = customers.max(0) as u64;
        c.meta = meta;
        c
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipeline::event::DAY_MS;
    use crate::store::MemStore;

    const T0: Millis = 1_790_000_000_000;

    fn processor(store: Arc<dyn Store>) -> Processor {
        let cfg = crate::config::Config::default();
        let spec = cfg.feature_spec();
        let model = crate::pipeline::model::tests::silence_model(&spec, "t");
        Processor::new(
            spec,
            cfg.validator(),
            cfg.policy(),
            Arc::new(model),
            store,
            Metrics::new(),
            ClockMode::Event,
            "customer-events".into(),
        )
    }

    /// A memory store whose commit of partition 1 fails once.
    struct FailsOnce {
        inner: MemStore,
        failed: std::sync::atomic::AtomicBool,
    }

    impl Store for FailsOnce {
        fn meta(&self, p: i32) -> Result<Option<crate::store::PartitionMeta>, StoreError> {
            self.inner.meta(p)
        }
        fn get(&self, p: i32, c: &str) -> Result<Option<CustomerState>, StoreError> {
            self.inner.get(p, c)
        }
        fn due_between(
            &self,
            p: i32,
            from: Millis,
            up_to: Millis,
            limit: usize,
        ) -> Result<Vec<(Millis, String)>, StoreError> {
            self.inner.due_between(p, from, up_to, limit)
        }
        fn commit(&self, p: i32, c: &crate::store::Commit) -> Result<(), StoreError> {
            if p == 1 && !self.failed.swap(true, std::sync::atomic::Ordering::SeqCst) {
                return Err(StoreError::Io(std::io::Error::other("disk full")));
            }
            self.inner.commit(p, c)
        }
        fn flush(&self) -> Result<(), StoreError> {
            self.inner.flush()
        }
        fn partitions(&self) -> Result<Vec<i32>, StoreError> {
            self.inner.partitions()
        }
        fn drop_partition(&self, p: i32) -> Result<(), StoreError> {
            self.inner.drop_partition(p)
        }
        fn customers(&self, p: i32) -> Result<Vec<(String, CustomerState)>, StoreError> {
            self.inner.customers(p)
        }
        fn size_on_disk(&self) -> u64 {
            0
        }
        fn quarantine(&self, p: i32, c: &str) -> Result<(), StoreError> {
            self.inner.quarantine(p, c)
        }
    }

    #[test]
    fn a_large_batch_whose_partition_fails_to_commit_commits_whole_when_tried_again() {
        let store = Arc::new(FailsOnce {
            inner: MemStore::default(),
            failed: false.into(),
        });
        let mut p = processor(store.clone());
        let msgs: Vec<InMessage> = (0..PARALLEL_COMMIT_WRITES as i64 * 2)
            .map(|i| {
                let part = (i % 3) as i32;
                msg(
                    part,
                    i / 3,
                    &format!("c{i}"),
                    &format!("e{i}"),
                    1,
                    "session",
                )
            })
            .collect();
        let batch = p.process(&msgs, T0 + 2 * DAY_MS).unwrap();
        assert_eq!(batch.commits.len(), 3);
        let err = p.commit(&batch).unwrap_err();
        assert!(err.to_string().contains("disk full"), "{err}");
        // The partitions that did commit are written; partition 1 is not.
        assert!(store.meta(0).unwrap().is_some() && store.meta(2).unwrap().is_some());
        assert_eq!(store.meta(1).unwrap(), None);
        // Tried again, the whole batch commits and every customer is there.
        p.commit(&batch).unwrap();
        for (part, c) in &batch.commits {
            assert_eq!(store.meta(*part).unwrap(), Some(c.meta));
            assert_eq!(store.customers(*part).unwrap().len(), c.states.len());
        }
        let all: usize = (0..3).map(|q| store.customers(q).unwrap().len()).sum();
        assert_eq!(all, msgs.len());
    }

    fn msg(partition: i32, offset: i64, cust: &str, id: &str, day: i64, ty: &str) -> InMessage {
        let extra = if ty == "purchase" {
            r#","amount":10"#
        } else {
            ""
        };
        InMessage {
            partition,
            offset,
            key: Some(cust.as_bytes().to_vec()),
            payload: Some(
                format!(
                    r#"{{"event_id":"{id}","customer_id":"{cust}","type":"{ty}","occurred_at":{}{extra}}}"#,
                    T0 + day * DAY_MS
                )
                .into_bytes(),
            ),
            content_type: None,
            timestamp: None,
            headers: Vec::new(),
        }
    }

    fn run(p: &mut Processor, msgs: &[InMessage]) -> Batch {
        let b = p.process(msgs, T0 + 1000 * DAY_MS).unwrap();
        p.commit(&b).unwrap();
        b
    }

    #[test]
    fn redelivered_offsets_are_not_applied_twice() {
        let store: Arc<dyn Store> = Arc::new(MemStore::default());
        let mut p = processor(store.clone());
        let msgs: Vec<_> = (0..5)
            .map(|i| msg(0, i, "c", &format!("e{i}"), 0, "purchase"))
            .collect();
        run(&mut p, &msgs[..3]);
        // A restart re-reads from an older offset: only 3 and 4 are new.
        let mut p2 = processor(store.clone());
        let b = run(&mut p2, &msgs);
        assert_eq!(b.consumed, 2);
        let s = store.get(0, "c").unwrap().unwrap();
        assert_eq!(s.purchases, 5);
        assert_eq!(store.meta(0).unwrap().unwrap().next_offset, 5);
    }

    #[test]
    fn silent_customers_are_swept_as_event_time_moves() {
        let store: Arc<dyn Store> = Arc::new(MemStore::default());
        let mut p = processor(store.clone());
        run(
            &mut p,
            &[
                msg(0, 0, "quiet", "q0", 0, "session"),
                msg(0, 1, "busy", "b0", 0, "session"),
            ],
        );
        let mut alerts = Vec::new();
        for day in 1..30 {
            let b = run(
                &mut p,
                &[msg(0, 1 + day, "busy", &format!("b{day}"), day, "session")],
            );
            alerts.extend(b.records.into_iter().filter(|r| r.kind == OutKind::Alert));
        }
        assert_eq!(alerts.len(), 1, "only the silent customer is alerted");
        let a: crate::pipeline::step::Alert = serde_json::from_slice(&alerts[0].payload).unwrap();
        assert_eq!(a.customer_id, "quiet");
        assert_eq!(a.cause, crate::pipeline::output::Cause::Silence);
        assert_eq!(alerts[0].key.as_deref(), Some(&b"quiet"[..]));
        // The due index follows the state: one entry per customer.
        assert_eq!(store.due(0, i64::MAX, 100).unwrap().len(), 2);
        assert_eq!(store.meta(0).unwrap().unwrap().customers, 2);
    }

    #[test]
    fn outputs_do_not_depend_on_batch_boundaries() {
        let mut msgs = Vec::new();
        let mut off = 0;
        for day in 0..40 {
            for c in 0..6 {
                // c-k stops after day 5k: staggered silences, some alerts.
                if day <= 5 * c + 1 {
                    msgs.push(msg(
                        0,
                        off,
                        &format!("c{c}"),
                        &format!("e{day}-{c}"),
                        day,
                        "session",
                    ));
                    off += 1;
                }
            }
            msgs.push(msg(0, off, "busy", &format!("b{day}"), day, "session"));
            off += 1;
            // A customer whose events always arrive three days late, and
            // sparsely: sweeps and late events interleave.
            if day % 2 == 0 && day >= 3 {
                let id = format!("l{day}");
                msgs.push(msg(0, off, "lagging", &id, day - 3, "session"));
                off += 1;
            }
        }
        // `staged`: as the service runs, each batch is processed while the
        // one before is staged and not yet written.
        let run_in = |size: usize, staged: bool| {
            let store: Arc<dyn Store> = Arc::new(MemStore::default());
            let mut p = processor(store.clone());
            // Outputs are keyed by customer: each customer's sequence counts,
            // not how different customers interleave.
            let mut out: BTreeMap<Vec<u8>, Vec<String>> = BTreeMap::new();
            let mut writing: Option<Arc<BTreeMap<i32, Commit>>> = None;
            for chunk in msgs.chunks(size) {
                let mut b = p.process(chunk, T0 + 1000 * DAY_MS).unwrap();
                if let Some(c) = writing.take() {
                    Processor::write(&*store, &c).unwrap();
                    p.landed();
                }
                if staged {
                    let c = Arc::new(std::mem::take(&mut b.commits));
                    p.stage(c.clone());
                    writing = Some(c);
                } else {
                    p.commit(&b).unwrap();
                }
                for r in b.records {
                    let text = String::from_utf8(r.payload).unwrap();
                    out.entry(r.key.unwrap()).or_default().push(text);
                }
            }
            if let Some(c) = writing.take() {
                Processor::write(&*store, &c).unwrap();
                p.landed();
            }
            let due = store.due(0, Millis::MAX, usize::MAX).unwrap();
            (out, store.customers(0).unwrap(), due)
        };
        let (one, s1, d1) = run_in(1, false);
        assert!(one.len() >= 5, "silent customers alerted: {}", one.len());
        assert!(!one.contains_key(&b"busy"[..]));
        for size in [1, 7, 50, msgs.len()] {
            for staged in [false, true] {
                if (size, staged) == (1, false) {
                    continue;
                }
                let (other, s2, d2) = run_in(size, staged);
                assert_eq!(one, other, "batch size {size}, staged {staged}");
                assert_eq!(s1, s2, "batch size {size}, staged {staged}");
                assert_eq!(d1, d2, "batch size {size}, staged {staged}");
            }
        }
    }

    #[test]
    fn side_by_side_keeps_the_order_and_uses_threads() {
        let items: Vec<usize> = (0..10).collect();
        let run = |side_by_side| {
            map_side_by_side(&items, side_by_side, |i| (*i, std::thread::current().id()))
        };
        let (one, many) = (run(false), run(true));
        let order =
            |r: &[(usize, std::thread::ThreadId)]| r.iter().map(|x| x.0).collect::<Vec<_>>();
        assert_eq!(order(&one), items);
        assert_eq!(order(&many), items);
        let threads: HashSet<_> = many.iter().map(|x| x.1).collect();
        let cores = cores();
        if cores >= 2 {
            assert!(
                (2..=cores).contains(&threads.len()),
                "{} threads",
                threads.len()
            );
            assert!(!threads.contains(&std::thread::current().id()));
        }
    }

    #[test]
    fn a_large_batch_of_several_partitions_gives_what_one_partition_at_a_time_gives() {
        // Three partitions of about 500 messages: together they are
        // processed side by side, alone each is below the threshold.
        let mut msgs = Vec::new();
        for p in 0..3 {
            let mut off = 0;
            for day in 0..80 {
                for c in 0..12 {
                    // Customer c goes silent after day 7c + 2: sweeps and alerts.
                    if day <= 7 * c + 2 {
                        let id = format!("p{p}-c{c}");
                        msgs.push(msg(p, off, &id, &format!("e{p}-{day}-{c}"), day, "session"));
                        off += 1;
                    }
                }
            }
        }
        assert!(msgs.len() >= PARALLEL_PROCESS_MESSAGES);
        let now = T0 + 1000 * DAY_MS;
        let together = processor(Arc::new(MemStore::default()))
            .process(&msgs, now)
            .unwrap();
        let mut alone = processor(Arc::new(MemStore::default()));
        let mut records = Vec::new();
        let mut commits = BTreeMap::new();
        for p in 0..3 {
            let part: Vec<InMessage> = msgs.iter().filter(|m| m.partition == p).cloned().collect();
            assert!(part.len() < PARALLEL_PROCESS_MESSAGES);
            let b = alone.process(&part, now).unwrap();
            records.extend(b.records);
            commits.extend(b.commits);
        }
        assert!(together.records.iter().any(|r| r.kind == OutKind::Alert));
        assert_eq!(together.records, records);
        // The due changes come in no particular order.
        let sorted = |mut c: BTreeMap<i32, Commit>| {
            for c in c.values_mut() {
                c.due_add.sort();
                c.due_remove.sort();
            }
            c
        };
        assert_eq!(sorted(together.commits), sorted(commits));
        assert_eq!(together.consumed, msgs.len());
    }

    /// The customers a batch writes in partition `p`.
    fn customers_of(b: &Batch, p: i32) -> Vec<&str> {
        b.commits[&p]
            .states
            .iter()
            .map(|(id, _)| id.as_str())
            .collect()
    }

    #[test]
    fn a_live_sweep_over_a_staged_batch_sees_its_due_changes_within_its_limit() {
        let store: Arc<dyn Store> = Arc::new(MemStore::default());
        let mut p = processor(store.clone());
        p.clock = ClockMode::Wall;
        p.sweep_limit = 2;
        // Six customers, each due a day after their event.
        let msgs: Vec<InMessage> = (0..6)
            .map(|i| msg(0, i, &format!("c{i}"), &format!("e{i}"), 1, "session"))
            .collect();
        let b = p.process(&msgs, T0 + DAY_MS + 1).unwrap();
        p.commit(&b).unwrap();
        // Two of them act again (their due entries move later), staged only.
        let again = [
            msg(0, 6, "c0", "f0", 3, "session"),
            msg(0, 7, "c1", "f1", 3, "session"),
        ];
        let mut b = p.process(&again, T0 + 3 * DAY_MS).unwrap();
        let c = Arc::new(std::mem::take(&mut b.commits));
        p.stage(c.clone());
        // A sweep before the write lands re-scores the two earliest still
        // due (not c0 and c1, whose entries moved), and knows there are more.
        let swept = p.sweep_only(&[0], T0 + 3 * DAY_MS + 1).unwrap();
        assert_eq!(customers_of(&swept, 0), ["c2", "c3"]);
        Processor::write(&*store, &c).unwrap();
        p.landed();
        p.commit(&swept).unwrap();
        let next = p.sweep_only(&[0], T0 + 3 * DAY_MS + 1).unwrap();
        assert_eq!(customers_of(&next, 0), ["c4", "c5"]);
    }

    /// A processor on a sled store in a temporary directory, after one
    /// purchase of customer `c`.
    fn one_purchase_on_sled() -> (
        tempfile::TempDir,
        Arc<crate::store::SledStore>,
        Arc<dyn Store>,
        Processor,
    ) {
        let dir = tempfile::tempdir().unwrap();
        let sled = Arc::new(crate::store::SledStore::open(dir.path()).unwrap());
        let store: Arc<dyn Store> = sled.clone();
        let mut p = processor(store.clone());
        run(&mut p, &[msg(0, 0, "c", "e0", 0, "purchase")]);
        (dir, sled, store, p)
    }

    #[test]
    fn a_corrupt_stored_state_is_quarantined_and_the_partition_goes_on() {
        let (_dir, sled, store, mut p) = one_purchase_on_sled();
        sled.put_raw_state(0, "c", b"\xff not a state").unwrap();
        assert!(store.get(0, "c").is_err(), "the damage is seen on read");
        // Events for the damaged customer and another are applied: the
        // batch commits instead of retrying the same bytes forever.
        let b = run(
            &mut p,
            &[
                msg(0, 1, "c", "e1", 1, "purchase"),
                msg(0, 2, "d", "e2", 1, "purchase"),
            ],
        );
        assert_eq!(b.consumed, 2);
        assert_eq!(
            store.get(0, "c").unwrap().unwrap().purchases,
            1,
            "c starts afresh"
        );
        assert_eq!(store.get(0, "d").unwrap().unwrap().purchases, 1);
        assert_eq!(store.meta(0).unwrap().unwrap().next_offset, 3);
        // The damaged state's due-index entry went with it: one entry per
        // customer.
        let due = store.due(0, i64::MAX, 100).unwrap();
        assert_eq!(due.len(), 2, "{due:?}");
        let q = sled.quarantined().unwrap();
        assert_eq!(q.len(), 1);
        assert!(q[0].0.starts_with("0/c/"), "{}", q[0].0);
        assert_eq!(q[0].1, b"\xff not a state");
        assert_eq!(
            p.metrics.count(
                crate::telemetry::metrics::Count::StatesQuarantined,
                &[("state", "afresh")]
            ),
            1
        );
        assert_eq!(store.meta(0).unwrap().unwrap().customers, 2);
    }

    /// A changelog copy that cannot be read the first time it is asked.
    struct FlakyCopy {
        state: CustomerState,
        calls: std::sync::Mutex<Vec<(i32, String, i64)>>,
    }

    impl StateBackup for FlakyCopy {
        fn committed(
            &self,
            partition: i32,
            customer: &str,
            upto: i64,
        ) -> Result<Option<CustomerState>, RestoreError> {
            let mut calls = self.calls.lock().unwrap();
            calls.push((partition, customer.to_string(), upto));
            if calls.len() == 1 {
                return Err(RestoreError::Stalled {
                    partition,
                    at: 0,
                    high: upto,
                    seconds: 60,
                });
            }
            Ok(Some(self.state.clone()))
        }
    }

    #[test]
    fn a_corrupt_stored_state_is_rebuilt_from_the_changelog_copy() {
        let (_dir, sled, store, mut p) = one_purchase_on_sled();
        let committed = store.get(0, "c").unwrap().unwrap();
        // As after a batch whose changelog records end at offset 7.
        let meta = store.meta(0).unwrap().unwrap();
        let c = Commit {
            meta: PartitionMeta {
                changelog_next: 7,
                ..meta
            },
            ..Default::default()
        };
        store.commit(0, &c).unwrap();
        p.forget(0);
        let copy = Arc::new(FlakyCopy {
            state: committed,
            calls: Default::default(),
        });
        p.backup = Some(copy.clone());
        sled.put_raw_state(0, "c", b"\xff not a state").unwrap();
        let next = [msg(0, 1, "c", "e1", 1, "purchase")];
        // The copy cannot be read yet: the batch fails as a transient
        // store error and nothing is moved.
        let e = p.process(&next, T0 + 1000 * DAY_MS).unwrap_err();
        assert_eq!(e.class(), ErrorClass::Transient, "{e}");
        assert!(sled.quarantined().unwrap().is_empty());
        // Tried again: rebuilt from the copy. A batch that then fails before
        // its commit (dropped here) leaves the damage in place, and the
        // next try rebuilds again: no event is lost either way.
        let _failed_later = p.process(&next, T0 + 1000 * DAY_MS).unwrap();
        assert!(store.get(0, "c").is_err(), "still damaged until a commit");
        run(&mut p, &next);
        assert_eq!(store.get(0, "c").unwrap().unwrap().purchases, 2);
        assert_eq!(
            copy.calls.lock().unwrap().last(),
            Some(&(0, "c".to_string(), 7))
        );
        assert_eq!(sled.quarantined().unwrap().len(), 1);
        assert_eq!(store.meta(0).unwrap().unwrap().customers, 1);
        assert_eq!(store.due(0, i64::MAX, 100).unwrap().len(), 1);
        assert_eq!(
            p.metrics.count(
                crate::telemetry::metrics::Count::StatesQuarantined,
                &[("state", "rebuilt")]
            ),
            2,
            "each try that rebuilt counts"
        );
    }

    #[test]
    fn a_dead_letter_carries_at_most_its_limit_and_the_original_size_and_hash() {
        let store: Arc<dyn Store> = Arc::new(MemStore::default());
        let mut p = processor(store);
        p.dead_letter_max_bytes = 1024;
        let mut big = msg(0, 0, "c", "e0", 0, "purchase");
        big.payload = Some(vec![b'{'; 2 * 1024 * 1024]);
        let b = p.process(&[big], T0).unwrap();
        let dl: Vec<_> = b
            .records
            .iter()
            .filter(|r| r.kind == OutKind::DeadLetter)
            .collect();
        assert_eq!(dl.len(), 1);
        assert_eq!(dl[0].payload.len(), 1024);
        let h = |k: &str| {
            let v = &dl[0].headers.iter().find(|(n, _)| n == k).expect(k).1;
            String::from_utf8(v.clone()).unwrap()
        };
        assert_eq!(h("dlq-reason-code"), "too_large");
        assert_eq!(h("dlq-original-size"), (2 * 1024 * 1024).to_string());
        assert_eq!(h("dlq-truncated"), "true");
        assert_eq!(h("dlq-original-sha256").len(), 64);
        assert_eq!(h("dlq-source-offset"), "0");
    }

    #[test]
    fn bad_messages_become_dead_letters_with_source_and_reason() {
        let store: Arc<dyn Store> = Arc::new(MemStore::default());
        let mut p = processor(store.clone());
        let mut bad = msg(2, 7, "c", "e1", 0, "purchase");
        bad.payload = Some(b"{not json".to_vec());
        let dup = msg(2, 9, "c", "e2", 0, "session");
        let b = run(
            &mut p,
            &[
                bad,
                msg(2, 8, "c", "e2", 0, "session"),
                dup,
                msg(2, 10, "c", "old", -30, "session"),
            ],
        );
        let dl: Vec<_> = b
            .records
            .iter()
            .filter(|r| r.kind == OutKind::DeadLetter)
            .collect();
        assert_eq!(dl.len(), 2);
        let h = |r: &OutRecord, k: &str| {
            String::from_utf8(r.headers.iter().find(|(n, _)| n == k).unwrap().1.clone()).unwrap()
        };
        assert_eq!(h(dl[0], "dlq-reason-code"), "undecodable");
        assert_eq!(h(dl[0], "dlq-source-offset"), "7");
        assert_eq!(h(dl[0], "dlq-source-partition"), "2");
        assert_eq!(dl[0].payload, b"{not json");
        assert_eq!(h(dl[1], "dlq-reason-code"), "too_late");
        assert_eq!(
            p.metrics
                .count(crate::telemetry::metrics::Count::Duplicates, &[]),
            1
        );
        assert_eq!(store.meta(2).unwrap().unwrap().next_offset, 11);
    }

    #[test]
    fn erasure_removes_state_and_due_entry() {
        let store: Arc<dyn Store> = Arc::new(MemStore::default());
        let mut p = processor(store.clone());
        run(&mut p, &[msg(0, 0, "c", "e0", 0, "purchase")]);
        assert_eq!(store.meta(0).unwrap().unwrap().customers, 1);
        run(&mut p, &[msg(0, 1, "c", "e1", 1, "erasure")]);
        assert_eq!(store.get(0, "c").unwrap(), None);
        assert!(store.due(0, i64::MAX, 10).unwrap().is_empty());
        assert_eq!(store.meta(0).unwrap().unwrap().customers, 0);
    }
}

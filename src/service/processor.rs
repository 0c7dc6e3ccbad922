//! The fold: a batch of input messages through the pure
//! [`crate::pipeline::step`] functions, into output records and one
//! [`Commit`] per partition.
//!
//! A batch is split by partition; every customer touched is loaded once
//! from the [`StagedStore`], each event is decoded and applied, due silent
//! customers are re-scored, and the outputs are encoded at the edge
//! ([`Outputs`]). Nothing is published or written here: the committer
//! publishes the records, waits for delivery, then writes the commits, so
//! outputs are at least once and state exactly once.

use std::collections::{BTreeMap, HashMap};

pub use crate::kafka::outputs::Outputs;
use crate::kafka::record::trace_context;
pub use crate::kafka::record::{InMessage, OutKind, OutRecord};
use crate::pipeline::decode::{RejectCode, Rejection, Validator};
pub use crate::pipeline::event::ClockMode;
use crate::pipeline::event::{EventKind, Millis, DAY_MS};
pub use crate::pipeline::step::Rules;
use crate::pipeline::step::{Outcome, Output};
use crate::pipeline::wire::Schemas;
use crate::service::side_by_side::map_side_by_side;
use crate::service::staged_store::Slot;
pub use crate::service::staged_store::StagedStore;
use crate::store::{Commit, PartitionMeta, StoreError};
use crate::telemetry::events::{
    AlertInCooldown, AlertPublished, CustomerErased, DeadLettered, DuplicateDropped, EventConsumed,
    OffsetGap, OutcomeDecided, ScoreCause, Scored, SilentRescored, TriggerHeld, TriggerPublished,
    TriggerSuppressed,
};
use crate::telemetry::metrics::Metrics;

/// With the event-time clock, silent customers are swept each time a
/// partition's watermark crosses a multiple of this.
pub const SWEEP_TICK_MS: Millis = 3_600_000;

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

/// Turns message batches into outputs and commits.
pub struct Processor {
    pub rules: Rules,
    pub validator: Validator,
    pub metrics: Metrics,
    pub clock: ClockMode,
    pub outputs: Outputs,
    /// Most silent customers re-scored per partition per batch.
    pub sweep_limit: usize,
    /// The schemas of framed messages fetched so far, by id (the committer
    /// fetches those a batch needs before it is processed).
    pub schemas: Schemas,
}

/// A partition's customers loaded for a batch, by id.
type Slots = HashMap<String, Slot>;

impl Processor {
    pub fn new(
        rules: Rules,
        validator: Validator,
        metrics: Metrics,
        clock: ClockMode,
        outputs: Outputs,
    ) -> Self {
        Self {
            rules,
            validator,
            metrics,
            clock,
            outputs,
            sweep_limit: 10_000,
            schemas: Schemas::new(),
        }
    }

    /// Processes input messages; `wall_now` is the wall clock.
    pub fn process(
        &self,
        view: &mut StagedStore,
        msgs: &[InMessage],
        wall_now: Millis,
    ) -> Result<Batch, StoreError> {
        let mut by_part: BTreeMap<i32, Vec<&InMessage>> = BTreeMap::new();
        for m in msgs {
            by_part.entry(m.partition).or_default().push(m);
        }
        let mut parts = Vec::with_capacity(by_part.len());
        for (p, msgs) in by_part {
            parts.push((p, view.meta(p)?, msgs));
        }
        let view = &*view;
        let run = |(p, meta, msgs): &(i32, PartitionMeta, Vec<&InMessage>)| {
            let mut part = Batch::default();
            self.process_partition(view, *p, *meta, msgs, wall_now, &mut part)
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
        view: &StagedStore,
        p: i32,
        mut meta: PartitionMeta,
        msgs: &[&InMessage],
        wall_now: Millis,
        batch: &mut Batch,
    ) -> Result<(), StoreError> {
        let mut slots = Slots::new();
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
            self.apply_message(view, m, &mut meta, &mut slots, &mut batch.records, wall_now)?;
            // Event time: sweep whenever the watermark crosses a tick
            // boundary. Those points follow from the message sequence
            // alone, so a replay cut into other batches (after a crash,
            // say) re-scores at the same points and gives the same state
            // and outputs, late events included.
            if self.clock == ClockMode::Event
                && meta.watermark.div_euclid(SWEEP_TICK_MS) > before.div_euclid(SWEEP_TICK_MS)
            {
                self.sweep(
                    view,
                    p,
                    meta.watermark,
                    &mut swept,
                    &mut slots,
                    &mut batch.records,
                )?;
            }
        }
        if self.clock == ClockMode::Wall {
            self.sweep(
                view,
                p,
                wall_now,
                &mut swept,
                &mut slots,
                &mut batch.records,
            )?;
        }
        batch.commits.insert(p, self.build_commit(meta, slots));
        Ok(())
    }

    /// The live-mode sweep: re-scores due silent customers of the given
    /// partitions as of the wall clock, without input. With the event-time
    /// clock sweeps happen only where the watermark moves (in `process`), so
    /// this does nothing.
    pub fn sweep_only(
        &self,
        view: &mut StagedStore,
        partitions: &[i32],
        wall_now: Millis,
    ) -> Result<Batch, StoreError> {
        let mut batch = Batch::default();
        if self.clock == ClockMode::Event {
            return Ok(batch);
        }
        for &p in partitions {
            let meta = view.meta(p)?;
            if meta == PartitionMeta::default() {
                continue;
            }
            let mut slots = Slots::new();
            let mut from = Millis::MIN;
            self.sweep(view, p, wall_now, &mut from, &mut slots, &mut batch.records)?;
            if !slots.is_empty() {
                batch.commits.insert(p, self.build_commit(meta, slots));
            }
        }
        Ok(batch)
    }

    /// A customer's slot in `slots`, loaded on first use.
    fn slot<'a>(
        view: &StagedStore,
        p: i32,
        slots: &'a mut Slots,
        id: &str,
    ) -> Result<&'a mut Slot, StoreError> {
        if !slots.contains_key(id) {
            slots.insert(id.to_string(), view.load(p, id)?);
        }
        Ok(slots.get_mut(id).expect("inserted above"))
    }

    fn apply_message(
        &self,
        view: &StagedStore,
        m: &InMessage,
        meta: &mut PartitionMeta,
        slots: &mut Slots,
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
        let slot = Self::slot(view, m.partition, slots, &event.customer_id)?;
        // An erasure carries the time it was requested, not an event time
        // of the stream: it neither scores the customer first nor moves the
        // partition's event-time clock.
        let erasure = matches!(event.kind, EventKind::Erasure);
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
        let (state, out) = self.rules.step(slot.state.take(), &event, now);
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
                        self.rules.spec.dedup_window_ms as f64 / DAY_MS as f64
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
                records.extend(self.outputs.tombstones(&event.customer_id));
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
        self.encode(&out, ScoreCause::Event, records);
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
        view: &StagedStore,
        p: i32,
        now: Millis,
        swept: &mut Millis,
        slots: &mut Slots,
        records: &mut Vec<OutRecord>,
    ) -> Result<(), StoreError> {
        // The limit bounds one live sweep; in event time everything due is
        // swept, so the sweep does not depend on what is stored yet.
        let limit = match self.clock {
            ClockMode::Wall => self.sweep_limit,
            ClockMode::Event => usize::MAX,
        };
        let (mut due, all) = view.due_between(p, *swept, now, limit)?;
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
            let slot = Self::slot(view, p, slots, &id)?;
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
            let (s, out) = self.rules.rescore(state, id, at);
            state = s;
            self.metrics.emit(SilentRescored);
            self.encode(&out, ScoreCause::Silence, records);
        }
        slot.state = Some(state);
    }

    /// The records of one step's outputs, encoded and counted.
    fn encode(&self, out: &Output, cause: ScoreCause, records: &mut Vec<OutRecord>) {
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
            records.push(self.outputs.alert(a));
        }
        if let Some(t) = &out.trigger {
            self.metrics.emit(TriggerPublished {
                campaign_id: &t.campaign_id,
            });
            records.push(self.outputs.trigger(t));
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
            records.push(self.outputs.outcome(o));
        }
        if let Some(why) = out.suppressed {
            self.metrics.emit(TriggerSuppressed {
                reason: why.as_str(),
            });
        }
    }

    fn dead_letter(&self, m: &InMessage, rej: &Rejection) -> OutRecord {
        self.metrics.emit(DeadLettered { reason: rej.code });
        self.outputs.dead_letter(m, rej)
    }

    fn build_commit(&self, mut meta: PartitionMeta, slots: Slots) -> Commit {
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
mod tests;

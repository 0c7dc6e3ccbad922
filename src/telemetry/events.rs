//! Typed telemetry: one struct per thing that happens. Its `emit` changes
//! the metrics and, for a problem or a change of state, writes the log line
//! too, so the count and the log can never disagree. Call sites are one
//! line: `metrics.emit(PartitionReleased { partition })`.
//!
//! Hot-path events (one per message or per batch) log at trace level at
//! most; problems log at warn or error, changes of state at info.

use std::fmt::Display;

use crate::pipeline::decode::RejectCode;
use crate::pipeline::error::Failure;
pub use crate::pipeline::output::Cause as ScoreCause;
pub use crate::telemetry::metrics::Dependency;
use crate::telemetry::metrics::Metrics;

/// Something that happened, as metrics and (for some) a log line.
pub trait TelemetryEvent {
    fn emit(self, m: &Metrics);
}

impl Metrics {
    /// Records `event`: its metrics and its log line.
    pub fn emit(&self, event: impl TelemetryEvent) {
        event.emit(self);
    }
}

/// The result of a reload (the `result` label).
fn result_label(ok: bool) -> &'static str {
    if ok {
        "ok"
    } else {
        "error"
    }
}

/// Events that only count, one line each: `Name => metric field`.
macro_rules! counted {
    ($($(#[$m:meta])* $name:ident => $field:ident;)+) => {$(
        $(#[$m])*
        pub struct $name;

        impl TelemetryEvent for $name {
            fn emit(self, m: &Metrics) {
                m.$field.inc();
            }
        }
    )+};
}

/// Events that count under one label: `Name { label } => metric field`.
macro_rules! counted_by {
    ($($(#[$m:meta])* $name:ident { $label:ident } => $field:ident;)+) => {$(
        $(#[$m])*
        pub struct $name<'a> {
            pub $label: &'a str,
        }

        impl TelemetryEvent for $name<'_> {
            fn emit(self, m: &Metrics) {
                m.$field.with_label_values(&[self.$label]).inc();
            }
        }
    )+};
}

counted! {
    /// A silent customer was re-scored.
    SilentRescored => rescored_silent;
    /// A score crossed the threshold within the cooldown: no alert.
    AlertInCooldown => alerts_cooldown;
    /// A trigger was held until the customer's quiet hours end.
    TriggerHeld => triggers_held;
    /// A changelog record was applied during a restore.
    RestoreRecordApplied => restore_records;
    /// A batch's store commit is done.
    StoreCommitted => commits;
}

counted_by! {
    /// A valid event was applied to its customer's state (`kind`: the event type).
    EventConsumed { kind } => events_consumed;
    /// An alert was published.
    AlertPublished { tier } => alerts;
    /// A retention trigger was published.
    TriggerPublished { campaign_id } => triggers;
    /// A trigger was not sent, and why (`no_consent`, `holdout`, …).
    TriggerSuppressed { reason } => triggers_suppressed;
}

// ---- per message (hot path: no log above trace) ----

/// An event whose id was already applied was dropped.
pub struct DuplicateDropped<'a> {
    pub event_id: &'a str,
}

impl TelemetryEvent for DuplicateDropped<'_> {
    fn emit(self, m: &Metrics) {
        m.duplicates.inc();
        tracing::trace!(event_id = self.event_id, "duplicate dropped");
    }
}

/// A message went to the dead-letter topic (its reason travels with it).
pub struct DeadLettered {
    pub reason: RejectCode,
}

impl TelemetryEvent for DeadLettered {
    fn emit(self, m: &Metrics) {
        m.dlq.with_label_values(&[self.reason.as_str()]).inc();
        tracing::trace!(reason = self.reason.as_str(), "dead-lettered");
    }
}

/// A broker refused an output record for good; `action` says what was
/// done instead (`dead_lettered`, `payload_dropped` or `stopped`).
pub struct OutputRefused<'a> {
    pub kind: &'a str,
    pub action: &'a str,
    pub error: &'a dyn Failure,
}

impl TelemetryEvent for OutputRefused<'_> {
    fn emit(self, m: &Metrics) {
        m.outputs_refused
            .with_label_values(&[self.kind, self.action])
            .inc();
        tracing::error!(
            kind = self.kind,
            action = self.action,
            class = self.error.class().as_str(),
            error = %self.error,
            "output refused for good by the broker"
        );
    }
}

/// The producer had a fatal error and was replaced.
pub struct ProducerRecreated<'a> {
    pub reason: &'a str,
}

impl TelemetryEvent for ProducerRecreated<'_> {
    fn emit(self, m: &Metrics) {
        m.producer_recreated.inc();
        tracing::warn!(
            reason = self.reason,
            "producer had a fatal error: replaced it; the batch in hand is sent again"
        );
    }
}

/// A stored state could not be decoded: it was copied aside, and the
/// customer was rebuilt from the changelog or starts afresh.
pub struct StateQuarantined<'a> {
    pub partition: i32,
    pub customer: &'a str,
    pub error: &'a dyn Failure,
    /// Whether the state was rebuilt from the changelog (else it starts
    /// afresh).
    pub rebuilt: bool,
    /// Why the changelog could not be read, when it could not.
    pub backup_error: Option<&'a str>,
}

impl TelemetryEvent for StateQuarantined<'_> {
    fn emit(self, m: &Metrics) {
        let state = if self.rebuilt { "rebuilt" } else { "afresh" };
        m.states_quarantined.with_label_values(&[state]).inc();
        if self.rebuilt {
            tracing::error!(
                partition = self.partition,
                customer = self.customer,
                error = %self.error,
                "stored state is corrupt: copied to the store's quarantine and rebuilt from the changelog"
            );
        } else {
            tracing::error!(
                partition = self.partition,
                customer = self.customer,
                error = %self.error,
                changelog_error = self.backup_error.unwrap_or("no copy there"),
                "stored state is corrupt: copied to the store's quarantine; the customer's state starts afresh"
            );
        }
    }
}

/// A churn probability was computed.
pub struct Scored {
    pub cause: ScoreCause,
    pub probability: f64,
}

impl TelemetryEvent for Scored {
    fn emit(self, m: &Metrics) {
        m.scores
            .with_label_values(&[self.cause.as_str()])
            .observe(self.probability);
    }
}

/// The outcome of an alert was decided.
pub struct OutcomeDecided<'a> {
    pub campaign_id: &'a str,
    pub group: &'a str,
    pub outcome: &'a str,
}

impl TelemetryEvent for OutcomeDecided<'_> {
    fn emit(self, m: &Metrics) {
        m.outcomes
            .with_label_values(&[self.campaign_id, self.group, self.outcome])
            .inc();
    }
}

// ---- per batch (hot path: no log above trace) ----

/// A partition's state was committed to the store.
pub struct PartitionCommitted {
    pub partition: i32,
    pub customers: u64,
    /// The next input offset (everything before is in the state).
    pub next_offset: i64,
}

impl TelemetryEvent for PartitionCommitted {
    fn emit(self, m: &Metrics) {
        let p = self.partition.to_string();
        m.customers
            .with_label_values(&[&p])
            .set(self.customers as i64);
        m.committed_offset
            .with_label_values(&[&p])
            .set(self.next_offset);
    }
}

/// A batch went through publish, changelog and commit.
pub struct BatchDone<'a> {
    pub consumed: usize,
    pub records: usize,
    pub seconds: f64,
    /// Seconds from each message's Kafka timestamp to the commit.
    pub latencies: &'a [f64],
}

impl TelemetryEvent for BatchDone<'_> {
    fn emit(self, m: &Metrics) {
        m.batch_seconds.observe(self.seconds);
        for l in self.latencies {
            m.event_latency_seconds.observe(*l);
        }
        tracing::trace!(
            consumed = self.consumed,
            records = self.records,
            seconds = self.seconds,
            "batch committed"
        );
    }
}

/// The consumer's lag on one partition (from librdkafka's statistics).
pub struct ConsumerLag {
    pub partition: i32,
    pub lag: i64,
}

impl TelemetryEvent for ConsumerLag {
    fn emit(self, m: &Metrics) {
        m.consumer_lag
            .with_label_values(&[&self.partition.to_string()])
            .set(self.lag);
    }
}

/// Readiness as last checked.
pub struct Readiness {
    pub ready: bool,
}

impl TelemetryEvent for Readiness {
    fn emit(self, m: &Metrics) {
        m.ready.set(i64::from(self.ready));
    }
}

/// How many partitions this instance owns and how many are restoring.
pub struct PartitionsHeld {
    pub owned: usize,
    pub restoring: usize,
}

impl TelemetryEvent for PartitionsHeld {
    fn emit(self, m: &Metrics) {
        m.partitions_owned.set(self.owned as i64);
        m.partitions_restoring.set(self.restoring as i64);
    }
}

// ---- problems (warn or error) ----

/// A dependency failed; what the service does about it is in `action`.
pub struct DependencyFailed<'a> {
    pub dependency: Dependency,
    pub error: &'a dyn Failure,
    /// The partition concerned, if one is.
    pub partition: Option<i32>,
    /// What happens now, e.g. "retrying (nothing is skipped)".
    pub action: &'a str,
}

impl TelemetryEvent for DependencyFailed<'_> {
    fn emit(self, m: &Metrics) {
        m.failures
            .with_label_values(&[self.dependency.as_str()])
            .inc();
        tracing::warn!(
            dependency = self.dependency.as_str(),
            partition = self.partition,
            error = %self.error,
            class = self.error.class().as_str(),
            "{} failed; {}",
            self.dependency.as_str(),
            self.action
        );
    }
}

/// A message's offset is not the one after the last applied.
pub struct OffsetGap {
    pub partition: i32,
    pub expected: i64,
    pub got: i64,
}

impl TelemetryEvent for OffsetGap {
    fn emit(self, m: &Metrics) {
        m.offset_gaps.inc();
        tracing::warn!(
            partition = self.partition,
            expected = self.expected,
            got = self.got,
            "input offset gap"
        );
    }
}

/// What an operator can reload while the service runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reloadable {
    Model,
    Policy,
}

/// A reload was refused; the model or policy in use stays.
pub struct ReloadRefused<'a> {
    pub what: Reloadable,
    pub error: &'a dyn Display,
}

impl TelemetryEvent for ReloadRefused<'_> {
    fn emit(self, m: &Metrics) {
        let (counter, name) = match self.what {
            Reloadable::Model => (&m.model_reloads, "model"),
            Reloadable::Policy => (&m.policy_reloads, "policy"),
        };
        counter.with_label_values(&[result_label(false)]).inc();
        tracing::error!(error = %self.error, "{name} reload refused; the {name} in use stays");
    }
}

// ---- changes of state (info) ----

/// The consumer group assigned partitions to this instance.
pub struct PartitionsAssigned<'a> {
    pub partitions: &'a [i32],
}

impl TelemetryEvent for PartitionsAssigned<'_> {
    fn emit(self, m: &Metrics) {
        m.rebalances.with_label_values(&["assigned"]).inc();
        tracing::info!(partitions = ?self.partitions, "partitions assigned");
    }
}

/// The consumer group took partitions away (`lost`: without a clean
/// hand-over).
pub struct PartitionsRevoked<'a> {
    pub partitions: &'a [i32],
    pub lost: bool,
}

impl TelemetryEvent for PartitionsRevoked<'_> {
    fn emit(self, m: &Metrics) {
        let kind = if self.lost { "lost" } else { "revoked" };
        m.rebalances.with_label_values(&[kind]).inc();
        tracing::info!(partitions = ?self.partitions, lost = self.lost, "partitions revoked");
    }
}

/// A partition's state was brought up to date from the changelog.
pub struct PartitionRestored<'a> {
    pub partition: i32,
    pub plan: &'a dyn std::fmt::Display,
    pub records: u64,
    pub customers: Option<u64>,
    pub seconds: f64,
}

impl TelemetryEvent for PartitionRestored<'_> {
    fn emit(self, m: &Metrics) {
        m.restore_seconds.observe(self.seconds);
        if let Some(c) = self.customers {
            m.customers
                .with_label_values(&[&self.partition.to_string()])
                .set(c as i64);
        }
        tracing::info!(
            partition = self.partition,
            plan = %self.plan,
            records = self.records,
            customers = self.customers.unwrap_or(0),
            seconds = self.seconds,
            "partition state is up to date"
        );
    }
}

/// The local state of a partition owned elsewhere was deleted.
pub struct PartitionReleased {
    pub partition: i32,
}

impl TelemetryEvent for PartitionReleased {
    fn emit(self, m: &Metrics) {
        m.partitions_released.inc();
        m.customers
            .with_label_values(&[&self.partition.to_string()])
            .set(0);
        tracing::info!(
            partition = self.partition,
            "released local state of a partition owned elsewhere"
        );
    }
}

/// A customer's data was erased on request (audited without personal
/// data: where the request came from).
pub struct CustomerErased {
    pub partition: i32,
    pub offset: i64,
}

impl TelemetryEvent for CustomerErased {
    fn emit(self, m: &Metrics) {
        m.erasures.inc();
        tracing::info!(
            target: "audit",
            partition = self.partition,
            offset = self.offset,
            "customer erased: state removed, tombstones published"
        );
    }
}

/// The model in use changed (`from`: `None` at start).
pub struct ModelInUse<'a> {
    pub from: Option<&'a str>,
    pub to: &'a str,
}

impl TelemetryEvent for ModelInUse<'_> {
    fn emit(self, m: &Metrics) {
        if let Some(old) = self.from.filter(|o| *o != self.to) {
            let _ = m.model_info.remove_label_values(&[old]);
        }
        m.model_info.with_label_values(&[self.to]).set(1);
        match self.from {
            Some(from) => {
                m.model_reloads
                    .with_label_values(&[result_label(true)])
                    .inc();
                tracing::info!(from, to = self.to, "model reloaded");
            }
            None => tracing::info!(version = self.to, "model in use"),
        }
    }
}

/// The policy in use: at start, and after a model or policy reload. Its
/// thresholds are exported, and the series of its tiers and campaigns
/// exist from now on (at 0), so dashboards and rules see them before the
/// first alert.
pub struct PolicyInUse<'a> {
    pub policy: &'a crate::pipeline::policy::Policy,
}

impl TelemetryEvent for PolicyInUse<'_> {
    fn emit(self, m: &Metrics) {
        use crate::pipeline::output::{Group, Retention};
        let p = self.policy;
        m.model_threshold.with_label_values(&["enter"]).set(p.enter);
        m.model_threshold.with_label_values(&["exit"]).set(p.exit);
        for t in &p.tiers {
            m.alerts.with_label_values(&[t.name.as_str()]);
        }
        // Outcomes of the groups a campaign can have: one that contacts
        // nobody (channel `none`), and alerts with no campaign (`none`),
        // only have customers not contacted.
        let mut outcomes = vec![("none", &[Group::NotContacted][..])];
        for c in &p.campaigns {
            let id = c.campaign_id.as_str();
            if c.channel == "none" {
                outcomes.push((id, &[Group::NotContacted][..]));
            } else {
                m.triggers.with_label_values(&[id]);
                outcomes.push((id, Group::ALL));
            }
        }
        for (c, groups) in outcomes {
            for g in groups {
                for o in Retention::ALL {
                    m.outcomes.with_label_values(&[c, g.as_str(), o.as_str()]);
                }
            }
        }
    }
}

/// A new policy was accepted (it takes effect with the next batch).
pub struct PolicyReloaded {
    pub campaign_rules: usize,
}

impl TelemetryEvent for PolicyReloaded {
    fn emit(self, m: &Metrics) {
        m.policy_reloads
            .with_label_values(&[result_label(true)])
            .inc();
        tracing::info!(campaign_rules = self.campaign_rules, "policy reloaded");
    }
}

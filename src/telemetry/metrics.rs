//! Every Prometheus metric the service exports, defined in one place.
//!
//! Names follow `churn_alert_<name>_<unit>`; labels are of low cardinality
//! (event type, reason code, tier, campaign, partition), never a customer id.
//! The fields are private to `telemetry/`: every change goes through a
//! typed event (see [`crate::telemetry::events`]); [`Metrics::count`] reads
//! counters back for summaries and tests.

use prometheus::{
    Encoder, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry, TextEncoder,
};

use crate::pipeline::decode::RejectCode;
use crate::pipeline::event::EVENT_TYPES;

/// The service's metrics and their registry.
#[derive(Clone)]
pub struct Metrics {
    registry: Registry,
    pub(super) events_consumed: IntCounterVec,
    pub(super) dlq: IntCounterVec,
    pub(super) duplicates: IntCounter,
    pub(super) batch_seconds: Histogram,
    pub(super) event_latency_seconds: Histogram,
    pub(super) scores: HistogramVec,
    pub(super) alerts: IntCounterVec,
    pub(super) triggers: IntCounterVec,
    pub(super) triggers_suppressed: IntCounterVec,
    pub(super) triggers_held: IntCounter,
    pub(super) outcomes: IntCounterVec,
    pub(super) policy_reloads: IntCounterVec,
    pub(super) erasures: IntCounter,
    pub(super) alerts_cooldown: IntCounter,
    pub(super) rescored_silent: IntCounter,
    pub(super) consumer_lag: IntGaugeVec,
    pub(super) customers: IntGaugeVec,
    pub(super) committed_offset: IntGaugeVec,
    pub(super) partitions_owned: IntGauge,
    pub(super) partitions_restoring: IntGauge,
    pub(super) rebalances: IntCounterVec,
    pub(super) restore_records: IntCounter,
    pub(super) restore_seconds: Histogram,
    pub(super) partitions_released: IntCounter,
    pub(super) failures: IntCounterVec,
    pub(super) ready: IntGauge,
    stalled: IntGauge,
    pub(super) commits: IntCounter,
    pub(super) offset_gaps: IntCounter,
    pub(super) outputs_refused: IntCounterVec,
    pub(super) producer_recreated: IntCounter,
    pub(super) states_quarantined: IntCounterVec,
    pub(super) model_reloads: IntCounterVec,
    pub(super) model_info: IntGaugeVec,
    pub(super) model_threshold: prometheus::GaugeVec,
    build_info: IntGaugeVec,
    /// The latest alerts, for the status page.
    pub recent_alerts: crate::telemetry::recent::RecentAlerts,
    /// The experiment readout from the outcomes topic.
    pub experiments: crate::telemetry::experiments::ExperimentBoard,
}

fn float_gauge_vec(r: &Registry, name: &str, help: &str, labels: &[&str]) -> prometheus::GaugeVec {
    let g = prometheus::GaugeVec::new(Opts::new(name, help), labels).expect("valid metric");
    r.register(Box::new(g.clone())).expect("unique metric");
    g
}

fn counter_vec(r: &Registry, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    let m = IntCounterVec::new(Opts::new(name, help), labels).expect("valid metric");
    r.register(Box::new(m.clone())).expect("unique metric");
    m
}

fn counter(r: &Registry, name: &str, help: &str) -> IntCounter {
    let m = IntCounter::new(name, help).expect("valid metric");
    r.register(Box::new(m.clone())).expect("unique metric");
    m
}

fn gauge_vec(r: &Registry, name: &str, help: &str, labels: &[&str]) -> IntGaugeVec {
    let m = IntGaugeVec::new(Opts::new(name, help), labels).expect("valid metric");
    r.register(Box::new(m.clone())).expect("unique metric");
    m
}

fn gauge(r: &Registry, name: &str, help: &str) -> IntGauge {
    let m = IntGauge::new(name, help).expect("valid metric");
    r.register(Box::new(m.clone())).expect("unique metric");
    m
}

fn histogram(r: &Registry, name: &str, help: &str, buckets: Vec<f64>) -> Histogram {
    let m = Histogram::with_opts(HistogramOpts::new(name, help).buckets(buckets))
        .expect("valid metric");
    r.register(Box::new(m.clone())).expect("unique metric");
    m
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Creates and registers every metric (label sets that are known in
    /// advance start at zero, so dashboards see them before they happen).
    pub fn new() -> Self {
        let r = Registry::new();
        let latency_buckets =
            prometheus::exponential_buckets(0.0005, 2.0, 16).expect("valid buckets");
        let scores = HistogramVec::new(
            HistogramOpts::new(
                "churn_alert_score_ratio",
                "Churn probabilities computed, by cause (event or silence).",
            )
            // i/20, not i*0.05: the bounds print exactly (le="0.7", which
            // dashboards select, not le="0.7000000000000001").
            .buckets((1..=20).map(|i| f64::from(i) / 20.0).collect()),
            &["cause"],
        )
        .expect("valid metric");
        r.register(Box::new(scores.clone())).expect("unique metric");
        let m = Self {
            events_consumed: counter_vec(
                &r,
                "churn_alert_events_consumed_total",
                "Valid events consumed, by event type.",
                &["type"],
            ),
            dlq: counter_vec(
                &r,
                "churn_alert_dlq_total",
                "Messages sent to the dead-letter topic, by reason code.",
                &["reason"],
            ),
            duplicates: counter(
                &r,
                "churn_alert_duplicates_total",
                "Events dropped because their event_id was already applied.",
            ),
            batch_seconds: histogram(
                &r,
                "churn_alert_batch_duration_seconds",
                "Time to process one batch: decode, step, publish, commit.",
                latency_buckets.clone(),
            ),
            event_latency_seconds: histogram(
                &r,
                "churn_alert_processing_latency_seconds",
                "From an event's Kafka timestamp to the commit of its batch.",
                latency_buckets,
            ),
            scores,
            alerts: counter_vec(
                &r,
                "churn_alert_alerts_published_total",
                "Churn alerts published, by risk tier.",
                &["tier"],
            ),
            triggers: counter_vec(
                &r,
                "churn_alert_triggers_published_total",
                "Retention triggers published, by campaign.",
                &["campaign"],
            ),
            triggers_suppressed: counter_vec(
                &r,
                "churn_alert_triggers_suppressed_total",
                "Alerts that got no trigger, by reason.",
                &["reason"],
            ),
            triggers_held: counter(
                &r,
                "churn_alert_triggers_held_total",
                "Triggers held back until the customer's quiet hours end.",
            ),
            outcomes: counter_vec(
                &r,
                "churn_alert_outcomes_total",
                "Alert outcomes by campaign, group (treated, holdout, not_contacted) and outcome (retained, churned): retention of treated vs holdout is the campaign's uplift.",
                &["campaign", "group", "outcome"],
            ),
            policy_reloads: counter_vec(
                &r,
                "churn_alert_policy_reloads_total",
                "Policy reloads by result (ok, error).",
                &["result"],
            ),
            erasures: counter(
                &r,
                "churn_alert_erasures_total",
                "Customers erased (erasure events and DELETE /customers/{id}).",
            ),
            alerts_cooldown: counter(
                &r,
                "churn_alert_alerts_cooldown_total",
                "Threshold crossings held back by the per-customer cooldown.",
            ),
            rescored_silent: counter(
                &r,
                "churn_alert_rescored_silent_total",
                "Silent customers re-scored by the due-time sweep.",
            ),
            consumer_lag: gauge_vec(
                &r,
                "churn_alert_consumer_lag_messages",
                "Messages behind the partition's end, by partition.",
                &["partition"],
            ),
            customers: gauge_vec(
                &r,
                "churn_alert_customers",
                "Customers held in state, by partition.",
                &["partition"],
            ),
            committed_offset: gauge_vec(
                &r,
                "churn_alert_committed_offset",
                "The next input offset of each partition whose events are all in the committed state (the point a restart resumes from).",
                &["partition"],
            ),
            partitions_owned: gauge(
                &r,
                "churn_alert_partitions_owned",
                "Input partitions assigned to this instance.",
            ),
            partitions_restoring: gauge(
                &r,
                "churn_alert_partitions_restoring",
                "Assigned input partitions whose state is being restored from the changelog (not processed meanwhile; the instance reports not ready).",
            ),
            rebalances: counter_vec(
                &r,
                "churn_alert_rebalances_total",
                "Consumer group rebalance events: assigned, revoked, lost (revoked without a clean hand-over).",
                &["kind"],
            ),
            restore_records: counter(
                &r,
                "churn_alert_restore_records_total",
                "Changelog records read while restoring partitions.",
            ),
            restore_seconds: histogram(
                &r,
                "churn_alert_restore_seconds",
                "Time to bring one assigned partition's state up to date from the changelog (0 when local state was current).",
                prometheus::exponential_buckets(0.01, 2.0, 16).expect("valid buckets"),
            ),
            partitions_released: counter(
                &r,
                "churn_alert_partitions_released_total",
                "Local partition state deleted after the partition stayed with another instance for kafka.release_unowned_after_seconds.",
            ),
            failures: counter_vec(
                &r,
                "churn_alert_dependency_failures_total",
                "Failed attempts at a dependency (kafka_produce, kafka_consume, store, changelog, schema_registry), retried.",
                &["dependency"],
            ),
            ready: gauge(
                &r,
                "churn_alert_ready",
                "1 when connected, assigned and able to commit; 0 otherwise.",
            ),
            stalled: gauge(
                &r,
                "churn_alert_stalled",
                "1 while the loop has held a batch longer than service.stall_seconds (/healthz fails); 0 otherwise.",
            ),
            outputs_refused: counter_vec(
                &r,
                "churn_alert_outputs_refused_total",
                "Output records a broker refused for good (too large, invalid, not authorized), by kind and what was done: dead_lettered, payload_dropped or stopped.",
                &["kind", "action"],
            ),
            producer_recreated: counter(
                &r,
                "churn_alert_producer_recreated_total",
                "Times the producer was replaced after a fatal error.",
            ),
            states_quarantined: counter_vec(
                &r,
                "churn_alert_states_quarantined_total",
                "Stored customer states that could not be decoded and were copied aside, by what became of the customer: rebuilt from the changelog, or afresh (a batch tried again counts again).",
                &["state"],
            ),
            offset_gaps: counter(
                &r,
                "churn_alert_offset_gaps_total",
                "Input messages that skipped past the next expected offset of their partition.",
            ),
            commits: counter(
                &r,
                "churn_alert_commits_total",
                "Batches whose state and offsets were committed.",
            ),
            model_reloads: counter_vec(
                &r,
                "churn_alert_model_reloads_total",
                "Model file reloads: ok, or error (the previous model stays in use).",
                &["result"],
            ),
            model_info: gauge_vec(
                &r,
                "churn_alert_model_info",
                "1 for the model version in use.",
                &["version"],
            ),
            model_threshold: {
                let g = prometheus::GaugeVec::new(
                    Opts::new(
                        "churn_alert_model_threshold",
                        "The alert thresholds in use (kind: enter, exit), for dashboards and rules that compare scores with them.",
                    ),
                    &["kind"],
                )
                .expect("valid metric");
                r.register(Box::new(g.clone())).expect("unique metric");
                g
            },
            build_info: gauge_vec(
                &r,
                "churn_alert_build_info",
                "1, labelled with the version and commit of the running binary.",
                &["version", "commit"],
            ),
            experiments: {
                let g = crate::telemetry::experiments::Gauges {
                    customers: float_gauge_vec(
                        &r,
                        "churn_alert_experiment_customers",
                        "Customers whose first alert in the experiment has its outcome, by arm (holdout or variant).",
                        &["experiment", "arm"],
                    ),
                    retained_rate: float_gauge_vec(
                        &r,
                        "churn_alert_experiment_retained_rate",
                        "Share of the arm's customers retained.",
                        &["experiment", "arm"],
                    ),
                    lift: float_gauge_vec(
                        &r,
                        "churn_alert_experiment_lift",
                        "Retention of the variant minus the holdout's (absolute).",
                        &["experiment", "arm"],
                    ),
                    lift_bound: float_gauge_vec(
                        &r,
                        "churn_alert_experiment_lift_bound",
                        "Bounds (low, high) of the absolute lift's always-valid 95% interval.",
                        &["experiment", "arm", "bound"],
                    ),
                    p_value: float_gauge_vec(
                        &r,
                        "churn_alert_experiment_sequential_p_value",
                        "Always-valid p-value of the variant against the holdout.",
                        &["experiment", "arm"],
                    ),
                    guardrail: float_gauge_vec(
                        &r,
                        "churn_alert_experiment_guardrail_customers",
                        "Customers who unsubscribed or complained between the alert and its outcome, by arm.",
                        &["experiment", "arm", "guardrail"],
                    ),
                    srm_p_value: float_gauge_vec(
                        &r,
                        "churn_alert_experiment_srm_p_value",
                        "Chi-square p-value of the observed split against the weights (below 0.001: sample-ratio mismatch).",
                        &["experiment"],
                    ),
                };
                crate::telemetry::experiments::ExperimentBoard::new(g)
            },
            registry: r,
            recent_alerts: Default::default(),
        };
        m.build_info
            .with_label_values(&[super::VERSION, super::COMMIT])
            .set(1);
        // process_cpu_seconds_total, process_resident_memory_bytes,
        // process_open_fds, process_start_time_seconds, ...
        #[cfg(target_os = "linux")]
        m.registry
            .register(Box::new(
                prometheus::process_collector::ProcessCollector::for_self(),
            ))
            .expect("unique metrics");
        for t in EVENT_TYPES {
            m.events_consumed.with_label_values(&[t]);
        }
        for c in RejectCode::ALL {
            m.dlq.with_label_values(&[c.as_str()]);
        }
        for result in ["ok", "error"] {
            m.model_reloads.with_label_values(&[result]);
        }
        for result in ["ok", "error"] {
            m.policy_reloads.with_label_values(&[result]);
        }
        for reason in crate::pipeline::output::Suppression::ALL {
            m.triggers_suppressed.with_label_values(&[reason.as_str()]);
        }
        for kind in ["assigned", "revoked", "lost"] {
            m.rebalances.with_label_values(&[kind]);
        }
        for kind in ["alert", "trigger", "outcome", "dead_letter", "changelog"] {
            for action in ["dead_lettered", "payload_dropped", "stopped"] {
                m.outputs_refused.with_label_values(&[kind, action]);
            }
        }
        for d in Dependency::ALL {
            m.failures.with_label_values(&[d.as_str()]);
        }
        for state in ["rebuilt", "afresh"] {
            m.states_quarantined.with_label_values(&[state]);
        }
        m
    }

    /// The Prometheus text exposition of every metric.
    /// Sets `churn_alert_stalled` from the loop's progress (at each scrape).
    pub fn set_stalled(&self, stalled: bool) {
        self.stalled.set(i64::from(stalled));
    }

    pub fn render(&self) -> String {
        let mut buf = Vec::new();
        TextEncoder::new()
            .encode(&self.registry.gather(), &mut buf)
            .expect("encoding to a Vec cannot fail");
        String::from_utf8(buf).expect("the text format is UTF-8")
    }

    /// The name of every metric family the service exports (histograms
    /// also export `_bucket`, `_sum` and `_count` series).
    pub fn names(&self) -> Vec<String> {
        use prometheus::core::Collector;
        let all: [&dyn Collector; 36] = [
            &self.stalled,
            &self.events_consumed,
            &self.dlq,
            &self.duplicates,
            &self.batch_seconds,
            &self.event_latency_seconds,
            &self.scores,
            &self.alerts,
            &self.triggers,
            &self.triggers_suppressed,
            &self.triggers_held,
            &self.outcomes,
            &self.policy_reloads,
            &self.erasures,
            &self.alerts_cooldown,
            &self.rescored_silent,
            &self.consumer_lag,
            &self.customers,
            &self.committed_offset,
            &self.partitions_owned,
            &self.partitions_restoring,
            &self.rebalances,
            &self.restore_records,
            &self.restore_seconds,
            &self.partitions_released,
            &self.failures,
            &self.ready,
            &self.commits,
            &self.offset_gaps,
            &self.outputs_refused,
            &self.producer_recreated,
            &self.states_quarantined,
            &self.model_reloads,
            &self.model_info,
            &self.model_threshold,
            &self.build_info,
        ];
        all.iter()
            .flat_map(|c| c.desc())
            .chain(self.experiments.gauges().iter().flat_map(|g| g.desc()))
            .map(|d| d.fq_name.clone())
            .collect()
    }

    /// A counter's value summed over the label sets that have every
    /// `(name, value)` given (all of them for `&[]`).
    pub fn count(&self, counter: Count, labels: &[(&str, &str)]) -> u64 {
        use prometheus::core::Collector;
        let c: &dyn Collector = match counter {
            Count::EventsConsumed => &self.events_consumed,
            Count::DeadLettered => &self.dlq,
            Count::Duplicates => &self.duplicates,
            Count::Alerts => &self.alerts,
            Count::Triggers => &self.triggers,
            Count::TriggersSuppressed => &self.triggers_suppressed,
            Count::Outcomes => &self.outcomes,
            Count::SilentRescores => &self.rescored_silent,
            Count::OutputsRefused => &self.outputs_refused,
            Count::ProducerRecreated => &self.producer_recreated,
            Count::StatesQuarantined => &self.states_quarantined,
        };
        c.collect()
            .iter()
            .flat_map(|f| f.get_metric())
            .filter(|m| {
                labels.iter().all(|(k, v)| {
                    m.get_label()
                        .iter()
                        .any(|l| l.name() == *k && l.value() == *v)
                })
            })
            .map(|m| m.get_counter().get_value() as u64)
            .sum()
    }
}

/// The counters [`Metrics::count`] reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Count {
    /// `churn_alert_events_consumed_total` (label `type`).
    EventsConsumed,
    /// `churn_alert_dlq_total` (label `reason`).
    DeadLettered,
    /// `churn_alert_duplicates_total`.
    Duplicates,
    /// `churn_alert_alerts_published_total` (label `tier`).
    Alerts,
    /// `churn_alert_triggers_published_total` (label `campaign`).
    Triggers,
    /// `churn_alert_triggers_suppressed_total` (label `reason`).
    TriggersSuppressed,
    /// `churn_alert_outcomes_total` (labels `campaign`, `group`, `outcome`).
    Outcomes,
    /// `churn_alert_rescored_silent_total`.
    SilentRescores,
    /// `churn_alert_outputs_refused_total` (labels `kind`, `action`).
    OutputsRefused,
    /// `churn_alert_producer_recreated_total`.
    ProducerRecreated,
    /// `churn_alert_states_quarantined_total` (label `state`).
    StatesQuarantined,
}

/// An outside system the service depends on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dependency {
    KafkaProduce,
    KafkaConsume,
    Store,
    Changelog,
    SchemaRegistry,
}

impl Dependency {
    pub const ALL: [Dependency; 5] = [
        Self::KafkaProduce,
        Self::KafkaConsume,
        Self::Store,
        Self::Changelog,
        Self::SchemaRegistry,
    ];

    /// The `dependency` label.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::KafkaProduce => "kafka_produce",
            Self::KafkaConsume => "kafka_consume",
            Self::Store => "store",
            Self::Changelog => "changelog",
            Self::SchemaRegistry => "schema_registry",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exports_the_documented_names() {
        let m = Metrics::new();
        m.dlq.with_label_values(&["too_large"]).inc();
        m.alerts.with_label_values(&["high"]).inc_by(2);
        let text = m.render();
        for name in [
            "churn_alert_events_consumed_total{type=\"purchase\"} 0",
            "churn_alert_dlq_total{reason=\"too_large\"} 1",
            "churn_alert_alerts_published_total{tier=\"high\"} 2",
            "churn_alert_duplicates_total 0",
            concat!(
                "churn_alert_build_info{commit=\"",
                env!("CHURN_ALERT_COMMIT"),
                "\",version=\"",
                env!("CARGO_PKG_VERSION"),
                "\"} 1"
            ),
        ] {
            assert!(text.contains(name), "missing {name} in\n{text}");
        }
        assert_eq!(m.count(Count::Alerts, &[]), 2);
        // Score bucket bounds print exactly, as queries select them.
        m.scores.with_label_values(&["event"]).observe(0.65);
        let text = m.render();
        for le in ["0.05", "0.3", "0.7", "0.85", "1"] {
            let series = format!("churn_alert_score_ratio_bucket{{cause=\"event\",le=\"{le}\"}}");
            assert!(text.contains(&series), "missing {series} in\n{text}");
        }
        assert!(!text.contains("0000000"), "inexact bucket bound in\n{text}");
        assert_eq!(m.count(Count::Alerts, &[("tier", "high")]), 2);
        assert_eq!(m.count(Count::Alerts, &[("tier", "low")]), 0);
    }
}

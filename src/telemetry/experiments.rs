//! The live experiment readout (`GET /experiments`, the status page's
//! panel and the `churn_alert_experiment_*` series): the outcomes topic,
//! read whole from its start by every instance, folded into a
//! [`Tally`]. So the readout is the same on every instance, and exact
//! after a restart; it moves only when outcomes arrive.

use std::sync::{Arc, Mutex};

use prometheus::GaugeVec;

use crate::pipeline::output::OutcomeRecord;
use crate::pipeline::readout::{ExperimentReadout, ReadoutSettings, Tally};

/// One record of the outcomes topic.
#[derive(Debug, Clone)]
pub enum OutcomeChange {
    Outcome(Box<OutcomeRecord>),
    /// A tombstone: the customer was erased.
    Erased(String),
}

/// The series the readout sets (made and registered with the other metrics).
#[derive(Clone)]
pub(super) struct Gauges {
    pub customers: GaugeVec,
    pub retained_rate: GaugeVec,
    pub lift: GaugeVec,
    pub lift_bound: GaugeVec,
    pub p_value: GaugeVec,
    pub guardrail: GaugeVec,
    pub srm_p_value: GaugeVec,
}

#[derive(Default)]
struct Inner {
    tally: Tally,
    readout: Vec<ExperimentReadout>,
    /// Whether the reader has reached the end of the topic once.
    caught_up: bool,
    /// The tally changed since `readout` was computed.
    dirty: bool,
    refreshed_at: Option<std::time::Instant>,
}

/// Least time between two recomputations while records stream in (a
/// reader catching up with a long topic would otherwise recompute the
/// whole readout for every batch).
const REFRESH_EVERY: std::time::Duration = std::time::Duration::from_secs(1);

/// Shared by clones: the outcomes reader writes, the admin server reads.
#[derive(Clone)]
pub struct ExperimentBoard {
    inner: Arc<Mutex<Inner>>,
    settings: Arc<Mutex<ReadoutSettings>>,
    gauges: Gauges,
}

impl ExperimentBoard {
    pub(super) fn new(gauges: Gauges) -> Self {
        Self {
            inner: Arc::default(),
            settings: Arc::default(),
            gauges,
        }
    }

    /// How results are judged (from the config's `[experiments]`).
    pub fn set_settings(&self, s: ReadoutSettings) {
        *self.settings.lock().unwrap_or_else(|e| e.into_inner()) = s;
        self.refresh();
    }

    /// Folds a batch of records in; the readout and series are recomputed
    /// when they are read, and at most once a second as records stream in.
    pub fn apply(&self, changes: impl IntoIterator<Item = OutcomeChange>) {
        let due = {
            let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
            for c in changes {
                inner.dirty |= match c {
                    OutcomeChange::Outcome(o) => inner.tally.add(&o),
                    OutcomeChange::Erased(id) => inner.tally.forget(&id),
                };
            }
            inner.dirty
                && inner
                    .refreshed_at
                    .is_none_or(|t| t.elapsed() >= REFRESH_EVERY)
        };
        if due {
            self.refresh();
        }
    }

    pub(super) fn gauges(&self) -> [&GaugeVec; 7] {
        let g = &self.gauges;
        [
            &g.customers,
            &g.retained_rate,
            &g.lift,
            &g.lift_bound,
            &g.p_value,
            &g.guardrail,
            &g.srm_p_value,
        ]
    }

    /// Records read so far (repeats and records of no experiment included).
    pub fn records(&self) -> u64 {
        self.inner
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .tally
            .records
    }

    /// Notes that the reader reached the end of the topic.
    pub fn caught_up(&self) {
        self.inner
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .caught_up = true;
    }

    /// The readout of every experiment, and whether it covers the whole
    /// topic yet.
    pub fn readout(&self) -> (Vec<ExperimentReadout>, bool) {
        if self.inner.lock().unwrap_or_else(|e| e.into_inner()).dirty {
            self.refresh();
        }
        let inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        (inner.readout.clone(), inner.caught_up)
    }

    fn refresh(&self) {
        let settings = self
            .settings
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        inner.readout = inner.tally.readout(&settings);
        inner.dirty = false;
        inner.refreshed_at = Some(std::time::Instant::now());
        let g = &self.gauges;
        for e in &inner.readout {
            let name = e.experiment.as_str();
            g.srm_p_value.with_label_values(&[name]).set(e.srm_p_value);
            for a in &e.arms {
                let l = [name, a.arm.as_str()];
                g.customers.with_label_values(&l).set(a.customers as f64);
                g.retained_rate.with_label_values(&l).set(a.retained_rate);
                for (guardrail, n) in [
                    ("unsubscribed", a.unsubscribed),
                    ("complained", a.complained),
                ] {
                    g.guardrail
                        .with_label_values(&[name, a.arm.as_str(), guardrail])
                        .set(n as f64);
                }
                if let Some(lift) = &a.absolute_lift {
                    g.lift.with_label_values(&l).set(lift.estimate);
                    g.p_value.with_label_values(&l).set(lift.sequential_p_value);
                    for (bound, v) in [
                        ("low", lift.sequential_ci[0]),
                        ("high", lift.sequential_ci[1]),
                    ] {
                        g.lift_bound
                            .with_label_values(&[name, a.arm.as_str(), bound])
                            .set(v);
                    }
                }
            }
        }
    }
}

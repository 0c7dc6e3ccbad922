//! Fitting the churn model from event history, through the same feature code
//! that serves.
//!
//! **Replay.** Events come in event-time order ([`crate::offline::history`] sorts any
//! history first) and are applied with [`crate::pipeline::step::ingest`], the
//! function the service uses. At each observation date every customer in the
//! population gets a point-in-time snapshot of features, taken before any
//! later event is applied, so no snapshot sees its future.
//!
//! **Labels.** [`Label::Onset`]: a snapshot is labelled churned when the
//! customer's churn onset falls within the horizon: the silence under way
//! at the date, or one that starts within the horizon, lasts at least the
//! churn gap, or the subscription is cancelled ([`crate::pipeline::onset`]).
//! [`Label::Silence`]: no purchase, session or activity within the
//! horizon. [`Label::Cancel`]: a cancel within it. `train`'s default picks
//! onset when the churn gap fits within the horizon (a business whose
//! customers engage often: a churn that starts within the horizon can be
//! told from the silence that follows), and silence otherwise (a silence
//! longer than the horizon is normal there, and what can be asked is
//! whether the customer engages at all within it).
//!
//! **Population.** For the onset and silence labels: customers still there
//! at the date, who engaged within the churn gap before it or have an
//! active subscription, and first seen at least the minimum tenure before
//! it. Those past onset are churned already: the service does not alert
//! them; the win-back model, fitted on their snapshots, gives them the
//! chance of no engagement within the horizon. For the cancel label:
//! customers whose subscription is active. Erased customers are left out
//! entirely.
//!
//! **Fit.** A standardised L2 logistic regression (linfa-logistic) whose
//! weights keep the signs the features' meanings give them
//! ([`FeatureSpec::expected_sign`]): a weight fitted against its sign is
//! held at zero and the rest refitted. Two plain baselines (recency,
//! frequency, monetary; 28-day counts and tenure) are fitted on the same
//! rows and reported beside it.
//!
//! **Split.** Observation dates are spaced `snapshot_step` apart and end at
//! the last date whose labels are fully known (as-of minus the horizon, and
//! minus the churn gap for the onset label). The latest date is the
//! held-out test window; the one before it validates (it chooses the L2
//! strength and the alert thresholds); earlier dates train. Later dates
//! always judge earlier ones.

use std::collections::HashMap;

use linfa::prelude::*;
use linfa_logistic::LogisticRegression;
use ndarray::{Array1, Array2};
use serde::Serialize;

use crate::pipeline::event::{rfc3339, Event, EventKind, Millis, SubscriptionAction, DAY_MS};
use crate::pipeline::features::{CustomerState, FeatureSpec, SubStatus, BGNBD_NO_PURCHASE};
use crate::pipeline::model::{sigmoid, ModelFile};
use crate::pipeline::step::ingest;

use crate::offline::evaluate::{
    choose_thresholds, evaluate, pr_auc, roc_auc, Evaluation, ThresholdTarget,
};

/// Why training could not produce a model.
#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    #[error("no usable history: {0}")]
    NoData(String),
    #[error("only one outcome in the {0} data (all churned or none): a model cannot be learned")]
    OneClass(&'static str),
    #[error("fitting failed: {0}")]
    Fit(String),
}

/// What "churned" means for a snapshot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Label {
    /// Churn onset within the horizon: the customer's current silence, or
    /// one that starts within the horizon, lasts at least the churn gap, or
    /// the subscription is cancelled (see [`crate::pipeline::onset`]). The default:
    /// it asks who is about to leave while they are still there.
    Onset,
    /// No purchase, session or activity event within the horizon.
    Silence,
    /// A subscription cancel within the horizon.
    Cancel,
}

impl Label {
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "onset" => Some(Label::Onset),
            "silence" => Some(Label::Silence),
            "cancel" => Some(Label::Cancel),
            _ => None,
        }
    }

    pub fn describe(self) -> &'static str {
        match self {
            Label::Onset => "churn onset within the horizon: the silence under way, or one starting within the horizon, lasts at least the churn gap (no purchase, session or activity), or the subscription is cancelled",
            Label::Silence => "no purchase, session or activity event within the horizon (the same event for customers past onset, so every customer's probability is on one scale)",
            Label::Cancel => "a subscription cancel within the horizon",
        }
    }

    pub fn population(self) -> &'static str {
        match self {
            Label::Onset | Label::Silence => "customers still there at the date: they engaged (purchase, session or activity) within the churn gap before it and their silence is not unusual for them (it has not cost the missed-days limit of their usual active days), or their subscription is active; and they did not cancel within the churn gap",
            Label::Cancel => "customers whose subscription is active at the date",
        }
    }

    fn marks(self, kind: &EventKind) -> bool {
        match self {
            Label::Silence | Label::Onset => kind.is_engagement(),
            Label::Cancel => matches!(
                kind,
                EventKind::Subscription {
                    action: SubscriptionAction::Cancel,
                    ..
                }
            ),
        }
    }
}

/// Training settings.
#[derive(Debug, Clone)]
pub struct TrainConfig {
    /// The end of the history read: labels are known up to here.
    pub as_of: Millis,
    /// How far ahead the label looks.
    pub horizon_ms: Millis,
    /// Number of observation dates (at least 3: train, validation, test).
    pub snapshots: usize,
    /// Spacing of observation dates.
    pub snapshot_step_ms: Millis,
    /// The onset label: a silence this long is churn.
    pub churn_gap_ms: Millis,
    /// Customers whose silence has cost this many of their usual active
    /// days are past onset too (not scored; see [`crate::pipeline::model::Population`]).
    pub churn_missed_days: Option<f64>,
    /// Customers first seen less than this long before a date are new:
    /// left out of the snapshots, and not alerted by the service (see
    /// [`crate::pipeline::model::ModelFile::min_tenure_days`]).
    pub min_tenure_ms: Millis,
    /// Dates earlier than this after the first event are skipped (features
    /// need history to mean anything).
    pub warm_up_ms: Millis,
    /// L2 strengths to try, per training row.
    pub alphas: Vec<f64>,
    /// Model version to write.
    pub version: String,
    pub label: Label,
    pub target: ThresholdTarget,
    /// Features to fit, by name (default: the spec's model features).
    pub features: Vec<String>,
}

impl TrainConfig {
    /// How much history these settings need, in words: the first event at
    /// least this long before `--as-of`.
    pub fn history_needed(&self) -> String {
        let days = |ms: Millis| ms / DAY_MS;
        let gap = if self.label == Label::Onset {
            self.churn_gap_ms
        } else {
            0
        };
        let need = self.warm_up_ms + 2 * self.snapshot_step_ms + self.horizon_ms + gap;
        let gap_text = if gap > 0 {
            format!(" + the churn gap ({} d)", days(gap))
        } else {
            String::new()
        };
        format!(
            "These settings need events from at least {} days before --as-of ({}): warm-up ({} d) + 3 observation dates --snapshot-step ({} d) apart + --horizon ({} d){gap_text}. Lower --snapshot-step or --horizon for a shorter history.",
            days(need),
            &rfc3339(self.as_of - need)[..10],
            days(self.warm_up_ms),
            days(self.snapshot_step_ms),
            days(self.horizon_ms),
        )
    }

    pub fn new(as_of: Millis, horizon_ms: Millis, spec: &FeatureSpec) -> Self {
        Self {
            as_of,
            horizon_ms,
            snapshots: 12,
            snapshot_step_ms: 14 * DAY_MS,
            churn_gap_ms: 30 * DAY_MS,
            churn_missed_days: Some(DEFAULT_CHURN_MISSED_DAYS),
            warm_up_ms: 30 * DAY_MS,
            min_tenure_ms: DEFAULT_MIN_TENURE_DAYS * DAY_MS,
            alphas: vec![1e-6, 1e-5, 1e-4, 1e-3],
            version: format!("churn-{}", &rfc3339(as_of)[..10]),
            label: Label::Onset,
            target: ThresholdTarget::Precision(0.8),
            features: spec.model_features(),
        }
    }

    /// Observation dates, earliest first. The last is the latest date whose
    /// label is fully known by as-of: as-of minus the horizon, and for the
    /// onset label minus the churn gap too (a silence is churn only once it
    /// has lasted the gap).
    pub fn observation_dates(&self) -> Vec<Millis> {
        let known = match self.label {
            Label::Onset => self.horizon_ms + self.churn_gap_ms,
            _ => self.horizon_ms,
        };
        let last = self.as_of - known;
        let mut v: Vec<Millis> = (0..self.snapshots)
            .map(|k| last - k as Millis * self.snapshot_step_ms)
            .collect();
        v.reverse();
        v
    }

    /// The model's population for the onset label.
    pub fn population(&self) -> Option<crate::pipeline::model::Population> {
        (self.label != Label::Cancel).then(|| crate::pipeline::model::Population {
            churned_after_days: self.churn_gap_ms as f64 / DAY_MS as f64,
            churned_after_missed_days: self.churn_missed_days,
            horizon_days: self.horizon_ms as f64 / DAY_MS as f64,
            return_rates: Vec::new(),
            win_back: None,
        })
    }
}

/// The default of [`TrainConfig::min_tenure_ms`], in days: two weeks, so
/// that a customer's first events never read as risk (a weekly habit has
/// shown itself twice), and customers of their third week on are alerted
/// by a model that saw such customers.
pub const DEFAULT_MIN_TENURE_DAYS: i64 = 14;

/// The default of [`TrainConfig::churn_missed_days`]: a silence that
/// unusual (chance about e^-6, 0.25%) for an active customer.
pub const DEFAULT_CHURN_MISSED_DAYS: f64 = 6.0;

/// Columns of the plain baselines: recency (days since the last purchase,
/// or tenure without one), frequency (purchases), monetary (net spend);
/// then 28-day counts of each event kind and tenure in days.
pub const BASELINE_COLUMNS: [&str; 12] = [
    "recency_days",
    "frequency",
    "monetary",
    "sessions_28d",
    "purchases_28d",
    "activity_28d",
    "email_opens_28d",
    "email_clicks_28d",
    "tickets_28d",
    "complaints_28d",
    "payment_failures_28d",
    "tenure_days",
];

/// The two plain baselines, as column ranges of [`BASELINE_COLUMNS`].
pub const BASELINES: [(&str, std::ops::Range<usize>); 2] = [
    ("recency, frequency, monetary", 0..3),
    ("28-day counts and tenure", 3..12),
];

/// Days of event counts the baselines look at.
const COUNT_WINDOW_MS: Millis = 28 * DAY_MS;

/// The count column of an event (index into the counts part of
/// [`BASELINE_COLUMNS`]), if it is counted.
fn count_kind(kind: &EventKind) -> Option<u8> {
    Some(match kind {
        EventKind::Session { .. } => 0,
        EventKind::Purchase { .. } => 1,
        EventKind::Activity { .. } => 2,
        EventKind::Email {
            action: crate::pipeline::event::EmailAction::Open,
            ..
        } => 3,
        EventKind::Email {
            action: crate::pipeline::event::EmailAction::Click,
            ..
        } => 4,
        EventKind::SupportTicket { is_complaint, .. } => 5 + u8::from(*is_complaint),
        EventKind::Subscription {
            action: SubscriptionAction::PaymentFailed,
            ..
        } => 7,
        _ => return None,
    })
}

/// One customer during replay.
struct Customer {
    state: Option<CustomerState>,
    /// Bit `i`: a label event happened in `(date_i, date_i + horizon]`.
    marked: u64,
    erased: bool,
    /// Onsets, for the onset label.
    track: crate::pipeline::onset::Track,
    /// Counted events of the last 28 days: minutes since the epoch << 8 |
    /// count kind (see [`count_kind`]).
    recent: std::collections::VecDeque<u64>,
}

/// Counts for progress and the report.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ReplayStats {
    pub events: u64,
    pub first_event: Option<Millis>,
    pub last_event: Option<Millis>,
    pub snapshots_taken: usize,
    pub dates_skipped: usize,
}

/// A customer at an observation date who is outside the population
/// (already past churn onset, for the onset label).
#[derive(Debug, Clone)]
pub struct Outside {
    pub date: u8,
    pub customer: u32,
    /// Days since the last engagement at the date.
    pub silent_days: f32,
    /// Engaged again within the horizon.
    pub returned: bool,
    /// Baseline columns.
    pub base: [f32; BASELINE_COLUMNS.len()],
}

/// Labelled point-in-time snapshots, features stored compactly.
#[derive(Debug, Clone, Default)]
pub struct Snapshots {
    /// Feature names of the columns of `x`.
    pub names: Vec<String>,
    /// Feature count per row.
    pub width: usize,
    /// Observation dates that got snapshots, earliest first.
    pub dates: Vec<Millis>,
    /// Row-major features (f32 keeps a million-customer history in memory).
    pub x: Vec<f32>,
    /// Per row: date index into `dates`, customer, label.
    pub rows: Vec<(u8, u32, bool)>,
    /// Per row: no engagement within the horizon (the label of customers
    /// past onset, whatever the main label), for the win-back fit.
    pub quiet: Vec<bool>,
    /// Per row: the baseline columns, row-major.
    pub base: Vec<f32>,
    /// Per row: the last engagement at the date (the start of the silence
    /// under way).
    pub anchors: Vec<Millis>,
    /// Customers outside the population at each date.
    pub outside: Vec<Outside>,
    /// Per outside row: its features (the columns of `x`), row-major.
    pub outside_x: Vec<f32>,
    /// Customer ids by index.
    pub customers: Vec<String>,
    /// Every purchaser's purchases as of the end of the history, in
    /// BG/NBD's terms (for the model file's BG/NBD fit).
    pub final_rfm: Vec<crate::pipeline::bgnbd::Rfm>,
}

impl Snapshots {
    pub fn len(&self) -> usize {
        self.rows.len()
    }

    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    fn row(&self, i: usize) -> &[f32] {
        &self.x[i * self.width..(i + 1) * self.width]
    }

    fn base_row(&self, i: usize) -> &[f32] {
        let w = BASELINE_COLUMNS.len();
        &self.base[i * w..(i + 1) * w]
    }

    fn outside_row(&self, i: usize) -> &[f32] {
        &self.outside_x[i * self.width..(i + 1) * self.width]
    }

    /// Drops each feature column that equals an earlier one in every
    /// snapshot, in and outside the population (purchases are the only
    /// engagement in a purchase-only shop, so their rates and all
    /// engagement's are the same numbers): two copies split one weight and
    /// one reason. Returns (dropped, the column it equals).
    pub fn drop_duplicate_columns(&mut self) -> Vec<(String, String)> {
        let w = self.width;
        if self.x.is_empty() && self.outside_x.is_empty() {
            return Vec::new();
        }
        let same = |a: usize, b: usize| {
            self.x
                .chunks(w.max(1))
                .chain(self.outside_x.chunks(w.max(1)))
                .all(|r| r[a] == r[b])
        };
        let mut twin: Vec<Option<usize>> = vec![None; w];
        for j in 0..w {
            twin[j] = (0..j).find(|k| twin[*k].is_none() && same(*k, j));
        }
        let keep: Vec<usize> = (0..w).filter(|j| twin[*j].is_none()).collect();
        if keep.len() == w {
            return Vec::new();
        }
        let dropped = (0..w)
            .filter_map(|j| twin[j].map(|k| (self.names[j].clone(), self.names[k].clone())))
            .collect();
        self.select_columns(&keep);
        dropped
    }

    fn select_columns(&mut self, keep: &[usize]) {
        let w = self.width;
        let select = |x: &[f32]| -> Vec<f32> {
            x.chunks(w)
                .flat_map(|r| keep.iter().map(move |j| r[*j]))
                .collect()
        };
        self.x = select(&self.x);
        self.outside_x = select(&self.outside_x);
        self.names = keep.iter().map(|j| self.names[*j].clone()).collect();
        self.width = keep.len();
    }

    /// Adds the [`BGNBD_NO_PURCHASE`] column: on each observation date,
    /// BG/NBD is fitted on every purchaser's history as known then (in and
    /// outside the population, so no label leaks into it), and each
    /// snapshot gets its log-odds of no purchase within `horizon_days`
    /// under that date's fit, as the service computes it under the model
    /// file's fit at as-of. Adds nothing, and says why, when a date has too
    /// few repeat buyers for a fit.
    pub fn add_purchase_rhythm(&mut self, horizon_days: f64) -> Result<(), String> {
        let mut fits = Vec::with_capacity(self.dates.len());
        for d in 0..self.dates.len() {
            let date = d as u8;
            let inside = (0..self.len())
                .filter(|i| self.rows[*i].0 == date)
                .map(|i| self.base_row(i));
            let outside = self
                .outside
                .iter()
                .filter(|o| o.date == date)
                .map(|o| &o.base[..]);
            match fit_bgnbd(inside.chain(outside)) {
                Some(m) => fits.push(m),
                None => {
                    return Err(format!(
                        "BG/NBD could not be fitted on the purchases known on {}",
                        &rfc3339(self.dates[d])[..10]
                    ))
                }
            }
        }
        let w = self.width;
        let logit = |date: u8, base: &[f32]| {
            fits[date as usize].no_purchase_logit(&rfm_of(base), horizon_days) as f32
        };
        let mut x = Vec::with_capacity(self.x.len() + self.len());
        for i in 0..self.len() {
            x.extend_from_slice(self.row(i));
            x.push(logit(self.rows[i].0, self.base_row(i)));
        }
        let mut outside_x = Vec::with_capacity(self.outside_x.len() + self.outside.len());
        for (i, o) in self.outside.iter().enumerate() {
            outside_x.extend_from_slice(&self.outside_x[i * w..(i + 1) * w]);
            outside_x.push(logit(o.date, &o.base));
        }
        self.x = x;
        self.outside_x = outside_x;
        self.names.push(BGNBD_NO_PURCHASE.to_string());
        self.width += 1;
        Ok(())
    }

    /// Drops the feature columns that carry nothing: the same value in
    /// every snapshot, in and outside the population (a signal the history
    /// never has, such as sessions in a purchase-only shop). A model fitted
    /// on them would still name them in its reasons. Returns their names.
    pub fn drop_constant_columns(&mut self) -> Vec<String> {
        let w = self.width;
        let rows = self
            .x
            .chunks(w.max(1))
            .chain(self.outside_x.chunks(w.max(1)));
        let mut first: Option<Vec<f32>> = None;
        let mut varies = vec![false; w];
        for r in rows {
            match &first {
                None => first = Some(r.to_vec()),
                Some(f) => {
                    for (j, v) in varies.iter_mut().enumerate() {
                        *v |= r[j] != f[j];
                    }
                }
            }
        }
        let keep: Vec<usize> = (0..w).filter(|j| varies[*j]).collect();
        if keep.len() == w || keep.is_empty() {
            return Vec::new();
        }
        let dropped = (0..w)
            .filter(|j| !varies[*j])
            .map(|j| self.names[j].clone())
            .collect();
        self.select_columns(&keep);
        dropped
    }
}

/// Streams events, in event-time order, through the feature code and takes
/// the snapshots.
pub struct Replay<'a> {
    spec: &'a FeatureSpec,
    cfg: &'a TrainConfig,
    dates: Vec<Millis>,
    /// Indices of `cfg.features` in the spec's feature vector.
    columns: Vec<usize>,
    next: usize,
    index: HashMap<String, u32>,
    customers: Vec<Customer>,
    out: Snapshots,
    taken: Vec<Millis>,
    /// Progress figures.
    pub stats: ReplayStats,
}

impl<'a> Replay<'a> {
    /// Fails when a feature to fit is not computed by the spec.
    pub fn new(spec: &'a FeatureSpec, cfg: &'a TrainConfig) -> Result<Self, TrainError> {
        let columns = cfg
            .features
            .iter()
            .map(|f| {
                spec.names().iter().position(|n| n == f).ok_or_else(|| {
                    TrainError::NoData(format!("feature {f:?} is not computed by this service"))
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self {
            spec,
            cfg,
            dates: cfg.observation_dates(),
            columns,
            next: 0,
            index: HashMap::new(),
            customers: Vec::new(),
            out: Snapshots {
                names: cfg.features.clone(),
                width: cfg.features.len(),
                ..Snapshots::default()
            },
            taken: Vec::new(),
            stats: ReplayStats::default(),
        })
    }

    /// Takes the next event; events must come in event-time order (see
    /// [`crate::offline::history`]), so that every snapshot sees exactly the events
    /// up to its date.
    pub fn push(&mut self, e: Event) {
        let t = e.occurred_at;
        debug_assert!(
            self.stats.last_event.is_none_or(|l| t >= l),
            "events in time order"
        );
        while self.dates.get(self.next).is_some_and(|d| t > *d) {
            self.advance();
        }
        self.stats.events += 1;
        self.stats.first_event = Some(self.stats.first_event.map_or(t, |f| f.min(t)));
        self.stats.last_event = Some(self.stats.last_event.map_or(t, |l| l.max(t)));
        let idx = match self.index.get(&e.customer_id) {
            Some(i) => *i as usize,
            None => {
                self.index
                    .insert(e.customer_id.clone(), self.customers.len() as u32);
                self.out.customers.push(e.customer_id.clone());
                self.customers.push(Customer {
                    state: None,
                    marked: 0,
                    erased: false,
                    track: Default::default(),
                    recent: Default::default(),
                });
                self.customers.len() - 1
            }
        };
        let c = &mut self.customers[idx];
        if self.cfg.label.marks(&e.kind) {
            for (i, d) in self.dates.iter().enumerate() {
                if t > *d && t <= d + self.cfg.horizon_ms {
                    c.marked |= 1 << i;
                }
            }
        }
        c.track.push(&e, self.cfg.churn_gap_ms);
        if let Some(k) = count_kind(&e.kind) {
            let minutes = (t.max(0) / 60_000) as u64;
            while c
                .recent
                .front()
                .is_some_and(|r| ((r >> 8) as i64) * 60_000 <= t - COUNT_WINDOW_MS)
            {
                c.recent.pop_front();
            }
            c.recent.push_back(minutes << 8 | u64::from(k));
        }
        if c.erased {
            return;
        }
        let (s, _) = ingest(c.state.take(), &e, self.spec);
        c.state = s;
        if c.state.is_none() {
            c.erased = true;
        }
    }

    /// Takes the snapshot of the next date.
    fn advance(&mut self) {
        let d = self.dates[self.next];
        let warm = self
            .stats
            .first_event
            .is_some_and(|f| d >= f + self.cfg.warm_up_ms);
        if warm {
            self.snapshot(d);
        } else {
            self.stats.dates_skipped += 1;
        }
        self.next += 1;
    }

    fn baseline(c: &Customer, s: &CustomerState, d: Millis) -> [f32; BASELINE_COLUMNS.len()] {
        let days = |ms: Millis| ms.max(0) as f64 / DAY_MS as f64;
        let tenure = days(d - s.first_seen);
        let mut b = [0f32; BASELINE_COLUMNS.len()];
        b[0] = s.last_purchase.map_or(tenure, |t| days(d - t)) as f32;
        b[1] = s.purchases as f32;
        b[2] = (s.gross - s.refunded).max(0.0) as f32;
        for r in &c.recent {
            if ((r >> 8) as i64) * 60_000 > d - COUNT_WINDOW_MS {
                b[3 + (r & 0xff) as usize] += 1.0;
            }
        }
        b[11] = tenure as f32;
        b
    }

    fn snapshot(&mut self, d: Millis) {
        let date_idx = self.taken.len() as u8;
        self.taken.push(d);
        let population = self.cfg.population();
        let mut buf = Vec::with_capacity(self.spec.names().len());
        for (i, c) in self.customers.iter().enumerate() {
            let Some(s) = &c.state else { continue };
            if s.first_seen > d {
                continue;
            }
            let in_population = match self.cfg.label {
                Label::Onset | Label::Silence => {
                    let p = population
                        .as_ref()
                        .expect("onset and silence have a population");
                    if let Some(silent) = p.past_onset(s, d) {
                        self.spec.extract_into(s, d, &mut buf);
                        self.out
                            .outside_x
                            .extend(self.columns.iter().map(|j| buf[*j] as f32));
                        self.out.outside.push(Outside {
                            date: date_idx,
                            customer: i as u32,
                            silent_days: silent as f32,
                            returned: false,
                            base: Self::baseline(c, s, d),
                        });
                        false
                    } else {
                        true
                    }
                }
                Label::Cancel => s
                    .subscription
                    .as_ref()
                    .is_some_and(|l| l.value == SubStatus::Active && l.at <= d),
            };
            if !in_population || d - s.first_seen < self.cfg.min_tenure_ms {
                continue;
            }
            self.spec.extract_into(s, d, &mut buf);
            self.out
                .x
                .extend(self.columns.iter().map(|j| buf[*j] as f32));
            self.out.base.extend(Self::baseline(c, s, d));
            self.out
                .anchors
                .push(s.last_engaged.unwrap_or(s.first_seen));
            // The label is filled in at the end.
            self.out.rows.push((date_idx, i as u32, false));
            self.stats.snapshots_taken += 1;
        }
    }

    /// Takes the remaining snapshots and labels every row.
    pub fn finish(mut self) -> Snapshots {
        while self.next < self.dates.len() {
            self.advance();
        }
        let mut out = self.out;
        out.dates = self.taken.clone();
        // Map taken-date index back to the bit of its observation date.
        let bits: Vec<usize> = self
            .taken
            .iter()
            .map(|d| self.dates.iter().position(|x| x == d).expect("taken date"))
            .collect();
        let label = self.cfg.label;
        let (h, gap, end) = (self.cfg.horizon_ms, self.cfg.churn_gap_ms, self.cfg.as_of);
        let onsets: Vec<Vec<Millis>> = match label {
            Label::Onset => self
                .customers
                .iter()
                .map(|c| c.track.candidates(end, gap))
                .collect(),
            _ => Vec::new(),
        };
        let w = BASELINE_COLUMNS.len();
        let mut keep = Vec::with_capacity(out.rows.len());
        let mut quiet = Vec::with_capacity(out.rows.len());
        let mut x = Vec::with_capacity(out.x.len());
        let mut base = Vec::with_capacity(out.base.len());
        let mut anchors = Vec::with_capacity(out.anchors.len());
        for (i, (date, cust, _)) in out.rows.iter().enumerate() {
            let c = &self.customers[*cust as usize];
            if c.erased {
                continue;
            }
            let marked = c.marked & (1 << bits[*date as usize]) != 0;
            let churned = match label {
                Label::Onset => {
                    let d = out.dates[*date as usize];
                    crate::pipeline::onset::first_from(&onsets[*cust as usize], out.anchors[i])
                        .is_some_and(|o| o <= d + h)
                }
                Label::Silence => !marked,
                Label::Cancel => marked,
            };
            keep.push((*date, *cust, churned));
            quiet.push(!marked);
            x.extend_from_slice(&out.x[i * out.width..(i + 1) * out.width]);
            base.extend_from_slice(&out.base[i * w..(i + 1) * w]);
            anchors.push(out.anchors[i]);
        }
        out.rows = keep;
        out.quiet = quiet;
        out.x = x;
        out.base = base;
        out.anchors = anchors;
        let customers = &self.customers;
        let mut outside_x = Vec::with_capacity(out.outside_x.len());
        let mut kept = Vec::with_capacity(out.outside.len());
        for (i, mut o) in std::mem::take(&mut out.outside).into_iter().enumerate() {
            let c = &customers[o.customer as usize];
            if c.erased {
                continue;
            }
            o.returned = c.marked & (1 << bits[o.date as usize]) != 0;
            outside_x.extend_from_slice(&out.outside_x[i * out.width..(i + 1) * out.width]);
            kept.push(o);
        }
        out.outside = kept;
        out.outside_x = outside_x;
        let end = self.cfg.as_of;
        out.final_rfm = customers
            .iter()
            .filter(|c| !c.erased)
            .filter_map(|c| c.state.as_ref().map(|s| Self::baseline(c, s, end)))
            .filter(|b| b[1] >= 1.0)
            .map(|b| rfm_of(&b))
            .filter(|r| r.t > 0.0)
            .collect();
        out
    }
}

/// Replays `events` and builds labelled snapshots; the events are sorted
/// by event time first, as the offline commands read them.
pub fn build_examples(
    events: impl IntoIterator<Item = Event>,
    spec: &FeatureSpec,
    cfg: &TrainConfig,
) -> Result<Snapshots, TrainError> {
    let mut events: Vec<Event> = events.into_iter().collect();
    events.sort_by(|a, b| {
        a.occurred_at
            .cmp(&b.occurred_at)
            .then_with(|| a.customer_id.cmp(&b.customer_id))
            .then_with(|| a.event_id.cmp(&b.event_id))
    });
    let mut r = Replay::new(spec, cfg)?;
    for e in events {
        r.push(e);
    }
    Ok(r.finish())
}

/// A fitted model with how it was chosen and how it did.
#[derive(Debug, Clone)]
pub struct Trained {
    pub model: ModelFile,
    pub alpha: f64,
    /// Validation log loss of each L2 strength tried.
    pub alpha_scores: Vec<(f64, f64)>,
    pub train: Evaluation,
    pub validation: Evaluation,
    pub test: Evaluation,
    /// The plain baselines ([`BASELINES`]) on the held-out date, fitted
    /// on the same training rows and label.
    pub baselines: Vec<(String, Evaluation)>,
    /// Features whose fitted weight came out against its expected sign
    /// ([`FeatureSpec::expected_sign`]), held at zero and refitted without.
    pub held_at_zero: Vec<String>,
    /// Held-out date, its scores and labels (for plots and the oracle).
    pub test_date: Millis,
    pub test_scores: Vec<f64>,
    pub test_labels: Vec<bool>,
    pub test_customers: Vec<u32>,
    pub dates: Vec<Millis>,
    /// The baselines as fitted: (columns, mean, scale, weights, intercept).
    pub baseline_models: Vec<PlainModel>,
    /// BG/NBD fitted on the customers' purchases as of the held-out date
    /// (it ranks by expected purchases within the horizon); `None` when
    /// the history has too few repeat purchases to fit it.
    pub bgnbd_test: Option<crate::pipeline::bgnbd::BgNbd>,
    /// The win-back model of customers past onset, and how it did.
    pub win_back: Option<WinBackFit>,
    /// Why there is no win-back model, when there is none.
    pub win_back_missing: Option<String>,
    /// Feature columns dropped because they never vary in the history.
    pub dropped_constant: Vec<String>,
    /// Feature columns left out as copies of another (dropped, kept).
    pub dropped_duplicate: Vec<(String, String)>,
}

/// The win-back model: the chance that a customer past onset stays gone
/// (no engagement within the horizon), fitted on the customers past onset
/// of the training dates.
#[derive(Debug, Clone)]
pub struct WinBackFit {
    pub alpha: f64,
    /// On the held-out date, among customers past onset.
    pub test: Evaluation,
    /// The same customers ranked by the training share that came back per
    /// band of silence (the older models' table).
    pub table_test: Evaluation,
    /// The same customers ranked by BG/NBD's expected purchases within
    /// the horizon (fewest first), when it could be fitted.
    pub bgnbd_test: Option<Evaluation>,
}

/// A plain standardised logistic regression on baseline columns.
#[derive(Debug, Clone)]
pub struct PlainModel {
    pub name: String,
    pub columns: std::ops::Range<usize>,
    pub mean: Vec<f64>,
    pub scale: Vec<f64>,
    pub weights: Vec<f64>,
    pub intercept: f64,
}

impl PlainModel {
    /// The probability for baseline columns `b` (all of them).
    pub fn predict(&self, b: &[f32]) -> f64 {
        standardised_logistic(
            self.intercept,
            &self.mean,
            &self.scale,
            &self.weights,
            &b[self.columns.clone()],
        )
    }
}

/// Most training rows used to choose the L2 strength.
pub const SELECTION_ROWS: usize = 200_000;

/// The model's probability for a feature row (columns of the snapshots).
fn predict(m: &ModelFile, x: &[f32]) -> f64 {
    standardised_logistic(m.intercept, &m.mean, &m.scale, &m.weights, x)
}

/// A [`Linear`](crate::pipeline::model::Linear) model's probability for a
/// feature row whose columns are its features.
fn predict_linear(m: &crate::pipeline::model::Linear, x: &[f32]) -> f64 {
    standardised_logistic(m.intercept, &m.mean, &m.scale, &m.weights, x)
}

/// A standardised logistic regression's probability for a row of f32
/// columns (one per weight): the one sum behind every model `train` fits.
fn standardised_logistic(
    intercept: f64,
    mean: &[f64],
    scale: &[f64],
    weights: &[f64],
    x: &[f32],
) -> f64 {
    let z: f64 = intercept
        + x.iter()
            .zip(mean)
            .zip(scale.iter().zip(weights))
            .map(|((v, mu), (s, w))| w * (f64::from(*v) - mu) / s)
            .sum::<f64>();
    sigmoid(z)
}

/// A customer's purchases in BG/NBD's terms (repeat purchases, time of
/// the last since the first, age), in days, from the baseline columns.
/// The first event stands for the first purchase.
pub fn rfm_of(base: &[f32]) -> crate::pipeline::bgnbd::Rfm {
    crate::pipeline::bgnbd::Rfm::of(f64::from(base[1]), f64::from(base[0]), f64::from(base[11]))
}

/// BG/NBD's churn score for ranking: fewer expected purchases within the
/// horizon rank higher, as e^(−expected) (a score in (0, 1], not a
/// probability).
pub fn bgnbd_score(m: &crate::pipeline::bgnbd::BgNbd, base: &[f32], horizon_days: f64) -> f64 {
    (-m.expected_purchases(&rfm_of(base), horizon_days)).exp()
}

/// Fits BG/NBD on the repeat-purchase histories of `bases` (baseline
/// columns); `None` when it cannot be fitted (too few customers or repeat
/// purchases).
pub fn fit_bgnbd<'a>(
    bases: impl Iterator<Item = &'a [f32]>,
) -> Option<crate::pipeline::bgnbd::BgNbd> {
    let rfm: Vec<crate::pipeline::bgnbd::Rfm> = bases
        .filter(|b| b[1] >= 1.0)
        .map(rfm_of)
        .filter(|r| r.t > 0.0)
        .collect();
    crate::pipeline::bgnbd::BgNbd::fit(&rfm)
        .ok()
        .map(|(m, _)| m)
}

/// Means and standard deviations (1 where constant) of columns.
fn standardisation(n: usize, d: usize, get: impl Fn(usize, usize) -> f64) -> (Vec<f64>, Vec<f64>) {
    let mut mean = vec![0.0; d];
    for i in 0..n {
        for (j, m) in mean.iter_mut().enumerate() {
            *m += get(i, j) / n as f64;
        }
    }
    let mut scale = vec![0.0; d];
    for i in 0..n {
        for (j, s) in scale.iter_mut().enumerate() {
            *s += (get(i, j) - mean[j]).powi(2) / n as f64;
        }
    }
    for s in scale.iter_mut() {
        *s = if *s > 1e-12 { s.sqrt() } else { 1.0 };
    }
    (mean, scale)
}

/// Weights, intercept and the columns held at zero.
type Fitted = (Vec<f64>, f64, Vec<usize>);

/// Fits an L2 logistic regression on standardised columns `x` (rows ×
/// features) with labels `y`, keeping the weights whose expected sign is
/// given to that sign: weights that come out against it are held at zero
/// and the rest refitted (from the previous solution), until none is. Returns weights (in column order), the intercept and the
/// columns held at zero.
fn fit_signed(
    x: &Array2<f64>,
    y: &Array1<bool>,
    alpha: f64,
    signs: &[Option<f64>],
) -> Result<Fitted, TrainError> {
    let mut active: Vec<usize> = (0..x.ncols()).collect();
    let mut held = Vec::new();
    let mut start: Option<Array1<f64>> = None;
    loop {
        let data = Dataset::new(x.select(ndarray::Axis(1), &active), y.clone());
        // linfa's loss is a sum over rows: scale the per-row strength so
        // that a sample and the full set are regularised alike.
        let mut params = LogisticRegression::default()
            .alpha(alpha * data.nsamples() as f64)
            .max_iterations(300);
        if let Some(p) = start.take() {
            params = params.initial_params(p);
        }
        let fitted = params
            .fit(&data)
            .map_err(|e| TrainError::Fit(e.to_string()))?;
        // linfa reports the probability of its "positive" class (the larger one).
        let sign = if fitted.labels().pos.class { 1.0 } else { -1.0 };
        let w: Vec<f64> = fitted.params().iter().map(|w| sign * w).collect();
        let wrong: Vec<usize> = active
            .iter()
            .zip(&w)
            .enumerate()
            .filter(|(_, (j, w))| signs[**j].is_some_and(|s| s * **w < 0.0))
            .map(|(k, _)| k)
            .collect();
        if wrong.is_empty() {
            let mut weights = vec![0.0; x.ncols()];
            for (j, w) in active.iter().zip(w) {
                weights[*j] = w;
            }
            held.sort_unstable();
            return Ok((weights, sign * fitted.intercept(), held));
        }
        let mut keep = Vec::with_capacity(active.len());
        let mut p: Vec<f64> = Vec::with_capacity(active.len() + 1);
        for (k, j) in active.iter().enumerate() {
            if wrong.contains(&k) {
                held.push(*j);
            } else {
                keep.push(*j);
                p.push(fitted.params()[k]);
            }
        }
        active = keep;
        // Warm start: the solution without the dropped columns.
        p.push(fitted.intercept());
        start = Some(Array1::from(p));
    }
}

/// Fits a standardised L2 logistic regression: earlier dates train, the
/// second-latest validates (L2 strength, thresholds), the latest is held out.
pub fn fit(
    snaps: &Snapshots,
    spec: &FeatureSpec,
    cfg: &TrainConfig,
) -> Result<Trained, TrainError> {
    let nd = snaps.dates.len();
    if snaps.is_empty() {
        return Err(TrainError::NoData(format!(
            "no snapshots: the history is empty or too short. {}",
            cfg.history_needed()
        )));
    }
    if nd < 3 {
        return Err(TrainError::NoData(format!(
            "{nd} observation date(s) fit in the history; need at least 3 (train, validation, test). {}",
            cfg.history_needed()
        )));
    }
    let (test_d, valid_d) = ((nd - 1) as u8, (nd - 2) as u8);
    let pick = |f: &dyn Fn(u8) -> bool| -> Vec<usize> {
        (0..snaps.len()).filter(|i| f(snaps.rows[*i].0)).collect()
    };
    let train = pick(&|d| d < valid_d);
    let valid = pick(&|d| d == valid_d);
    let test = pick(&|d| d == test_d);
    let labels_of = |set: &[usize]| -> Vec<bool> { set.iter().map(|i| snaps.rows[*i].2).collect() };
    for (name, set) in [
        ("training", &train),
        ("validation", &valid),
        ("test", &test),
    ] {
        let pos = set.iter().filter(|i| snaps.rows[**i].2).count();
        if pos == 0 || pos == set.len() {
            return Err(TrainError::OneClass(name));
        }
    }
    let d = snaps.width;
    let (mean, scale) = standardisation(train.len(), d, |i, j| f64::from(snaps.row(train[i])[j]));
    let matrix = |rows: &[usize]| {
        Array2::from_shape_fn((rows.len(), d), |(r, j)| {
            (f64::from(snaps.row(rows[r])[j]) - mean[j]) / scale[j]
        })
    };
    let targets =
        |rows: &[usize]| -> Array1<bool> { rows.iter().map(|i| snaps.rows[*i].2).collect() };
    let signs: Vec<Option<f64>> = snaps.names.iter().map(|n| spec.expected_sign(n)).collect();
    let model_of = |(weights, intercept, _): &Fitted| ModelFile {
        version: cfg.version.clone(),
        features: snaps.names.clone(),
        mean: mean.clone(),
        scale: scale.clone(),
        weights: weights.clone(),
        intercept: *intercept,
        thresholds: None,
        segments: None,
        population: cfg.population(),
        min_tenure_days: (cfg.min_tenure_ms > 0).then(|| cfg.min_tenure_ms as f64 / DAY_MS as f64),
        bgnbd: None,
        training: None,
    };
    let scores_of = |m: &ModelFile, set: &[usize]| -> Vec<f64> {
        set.iter().map(|i| predict(m, snaps.row(*i))).collect()
    };
    // The L2 strength is chosen on an evenly spread sample of the training
    // rows when there are many (the choice is stable; the time is not), and
    // the chosen strength is then fitted on all of them.
    let step = train.len().div_ceil(SELECTION_ROWS);
    let sample: Vec<usize> = train.iter().step_by(step).copied().collect();
    let (full_x, full_y) = (matrix(&train), targets(&train));
    let sampled = (step > 1).then(|| (matrix(&sample), targets(&sample)));
    let (sel_x, sel_y) = sampled.as_ref().map_or((&full_x, &full_y), |(x, y)| (x, y));
    let valid_labels = labels_of(&valid);
    let mut best: Option<(f64, f64, Fitted)> = None;
    let mut alpha_scores = Vec::new();
    for &alpha in &cfg.alphas {
        let fitted = fit_signed(sel_x, sel_y, alpha, &signs)?;
        let ll = evaluate(&scores_of(&model_of(&fitted), &valid), &valid_labels, None).log_loss;
        alpha_scores.push((alpha, ll));
        if best.as_ref().is_none_or(|b| ll < b.1) {
            best = Some((alpha, ll, fitted));
        }
    }
    let (alpha, _, fitted) = best.expect("at least one alpha");
    let fitted = if sampled.is_some() {
        fit_signed(&full_x, &full_y, alpha, &signs)?
    } else {
        fitted
    };
    let mut model = model_of(&fitted);
    let held_at_zero = fitted.2.iter().map(|j| snaps.names[*j].clone()).collect();
    let valid_scores = scores_of(&model, &valid);
    let thresholds = choose_thresholds(&valid_scores, &valid_labels, cfg.target);
    let enter = Some(thresholds.enter);
    let test_scores = scores_of(&model, &test);
    let test_labels = labels_of(&test);
    // The plain baselines, on the same rows and label.
    let mut baselines = Vec::new();
    let mut baseline_models = Vec::new();
    for (name, cols) in BASELINES {
        let bw = cols.len();
        let (bm, bs) = standardisation(train.len(), bw, |i, j| {
            f64::from(snaps.base_row(train[i])[cols.start + j])
        });
        let bx = Array2::from_shape_fn((sample.len(), bw), |(r, j)| {
            (f64::from(snaps.base_row(sample[r])[cols.start + j]) - bm[j]) / bs[j]
        });
        let (weights, intercept, _) = fit_signed(&bx, &targets(&sample), 1e-4, &vec![None; bw])?;
        let plain = PlainModel {
            name: name.to_string(),
            columns: cols.clone(),
            mean: bm,
            scale: bs,
            weights,
            intercept,
        };
        let scores: Vec<f64> = test
            .iter()
            .map(|i| plain.predict(snaps.base_row(*i)))
            .collect();
        baselines.push((name.to_string(), evaluate(&scores, &test_labels, None)));
        baseline_models.push(plain);
    }
    // BG/NBD, fitted on the purchases as of the held-out date, ranks the
    // same customers by expected purchases within the horizon.
    let horizon_days = cfg.horizon_ms as f64 / DAY_MS as f64;
    let test_bases = test.iter().map(|i| snaps.base_row(*i)).chain(
        snaps
            .outside
            .iter()
            .filter(|o| o.date == test_d)
            .map(|o| &o.base[..]),
    );
    let bgnbd_test = fit_bgnbd(test_bases);
    if let Some(m) = &bgnbd_test {
        let scores: Vec<f64> = test
            .iter()
            .map(|i| bgnbd_score(m, snaps.base_row(*i), horizon_days))
            .collect();
        baselines.push((
            BGNBD_BASELINE.to_string(),
            evaluate(&scores, &test_labels, None),
        ));
    }
    let mut win_back = None;
    let mut win_back_missing = None;
    if let Some(p) = model.population.as_mut() {
        p.return_rates = return_rates(snaps, valid_d, p.churned_after_days);
        match fit_win_back(snaps, &signs, cfg, p, bgnbd_test.as_ref()) {
            Ok((linear, fit)) => {
                p.win_back = Some(linear);
                win_back = Some(fit);
            }
            Err(why) => win_back_missing = Some(why),
        }
    }
    let t = Trained {
        train: evaluate(&scores_of(&model, &train), &labels_of(&train), enter),
        validation: evaluate(&valid_scores, &valid_labels, enter),
        test: evaluate(&test_scores, &test_labels, enter),
        baselines,
        baseline_models,
        held_at_zero,
        test_date: snaps.dates[test_d as usize],
        test_customers: test.iter().map(|i| snaps.rows[*i].1).collect(),
        test_scores,
        test_labels,
        dates: snaps.dates.clone(),
        alpha,
        alpha_scores,
        bgnbd_test,
        win_back,
        win_back_missing,
        dropped_constant: Vec::new(),
        dropped_duplicate: Vec::new(),
        model: {
            model.thresholds = Some(thresholds);
            model.segments = Some(learn_segments(snaps, &train, valid_d - 1, cfg));
            model
        },
    };
    Ok(t)
}

/// The name of the BG/NBD baseline in reports.
pub const BGNBD_BASELINE: &str = "BG/NBD expected purchases within the horizon";

/// Most snapshots, of customers still there and of those past onset each,
/// in the win-back fit (an evenly spread sample beyond it: the fit is
/// tried at seven strengths, and the shape is stable).
const WIN_BACK_INSIDE_ROWS: usize = 20_000;

/// Stronger L2 penalties (per training row) the win-back fit also tries,
/// beyond the main model's grid.
const WIN_BACK_EXTRA_ALPHAS: [f64; 3] = [1e-2, 1e-1, 1.0];

/// Fewest customers past onset (and of each outcome) on the training dates
/// for a win-back model; with fewer, churned customers keep the table of
/// return rates by silence.
pub const MIN_WIN_BACK_ROWS: usize = 30;

/// Fits the win-back model on the customers past onset: earlier dates
/// train, the second-latest chooses the L2 strength, the latest judges it
/// beside the table of return rates and BG/NBD. Its label is staying gone:
/// no purchase, session or activity within the horizon. The weights keep
/// the signs of the main model (a longer silence never raises the chance of
/// coming back).
fn fit_win_back(
    snaps: &Snapshots,
    signs: &[Option<f64>],
    cfg: &TrainConfig,
    population: &crate::pipeline::model::Population,
    bgnbd: Option<&crate::pipeline::bgnbd::BgNbd>,
) -> Result<(crate::pipeline::model::Linear, WinBackFit), String> {
    let nd = snaps.dates.len() as u8;
    let (test_d, valid_d) = (nd - 1, nd - 2);
    let pick = |f: &dyn Fn(u8) -> bool| -> Vec<usize> {
        (0..snaps.outside.len())
            .filter(|i| f(snaps.outside[*i].date))
            .collect()
    };
    let (train, valid, test) = (
        pick(&|d| d < valid_d),
        pick(&|d| d == valid_d),
        pick(&|d| d == test_d),
    );
    let gone = |i: &usize| !snaps.outside[*i].returned;
    for (name, set) in [
        ("training", &train),
        ("validation", &valid),
        ("held-out", &test),
    ] {
        let n = set.iter().filter(|i| gone(i)).count();
        if set.len() < MIN_WIN_BACK_ROWS || n == 0 || n == set.len() {
            return Err(format!(
                "{} customers past onset on the {name} date(s), {n} of them stayed gone: too few, or only one outcome, for a win-back model; churned customers are ranked by the share that came back per band of silence",
                set.len()
            ));
        }
    }
    // Trained on every snapshot of the training dates, in and outside the
    // population, on whether the customer stayed gone: past onset at the
    // scoring date can mean a longer silence, or a rarer kind of customer,
    // than the training dates' customers past onset show (a gap long
    // against the history), and a fit on those few would extrapolate
    // wildly. Chosen and judged on the customers past onset.
    let d = snaps.width;
    let fit_rows: Vec<(&[f32], bool)> = train
        .iter()
        .step_by(train.len().div_ceil(WIN_BACK_INSIDE_ROWS).max(1))
        .map(|i| (snaps.outside_row(*i), gone(i)))
        .chain({
            // An evenly spread sample of those still there, when many.
            let inside: Vec<usize> = (0..snaps.len())
                .filter(|i| snaps.rows[*i].0 < valid_d)
                .collect();
            let step = inside.len().div_ceil(WIN_BACK_INSIDE_ROWS).max(1);
            inside
                .into_iter()
                .step_by(step)
                .map(|i| (snaps.row(i), snaps.quiet[i]))
        })
        .collect();
    let (mean, scale) = standardisation(fit_rows.len(), d, |i, j| f64::from(fit_rows[i].0[j]));
    let x = Array2::from_shape_fn((fit_rows.len(), d), |(r, j)| {
        (f64::from(fit_rows[r].0[j]) - mean[j]) / scale[j]
    });
    let y: Array1<bool> = fit_rows.iter().map(|r| r.1).collect();
    let labels = |rows: &[usize]| -> Vec<bool> { rows.iter().map(gone).collect() };
    let linear_of = |(weights, intercept, _): Fitted| crate::pipeline::model::Linear {
        features: snaps.names.clone(),
        mean: mean.clone(),
        scale: scale.clone(),
        weights,
        intercept,
    };
    let scores = |m: &crate::pipeline::model::Linear, rows: &[usize]| -> Vec<f64> {
        rows.iter()
            .map(|i| predict_linear(m, snaps.outside_row(*i)))
            .collect()
    };
    let mut best: Option<(f64, f64, crate::pipeline::model::Linear)> = None;
    // Fewer rows than the main model has, so the grid reaches stronger
    // penalties.
    for &alpha in cfg.alphas.iter().chain(&WIN_BACK_EXTRA_ALPHAS) {
        let m = linear_of(fit_signed(&x, &y, alpha, signs).map_err(|e| e.to_string())?);
        let ll = evaluate(&scores(&m, &valid), &labels(&valid), None).log_loss;
        if best.as_ref().is_none_or(|b| ll < b.1) {
            best = Some((alpha, ll, m));
        }
    }
    let (alpha, _, linear) = best.expect("at least one alpha");
    let test_labels = labels(&test);
    let table: Vec<f64> = test
        .iter()
        .map(|i| 1.0 - population.return_probability(f64::from(snaps.outside[*i].silent_days)))
        .collect();
    let horizon_days = cfg.horizon_ms as f64 / DAY_MS as f64;
    let fit = WinBackFit {
        alpha,
        test: evaluate(&scores(&linear, &test), &test_labels, None),
        table_test: evaluate(&table, &test_labels, None),
        bgnbd_test: bgnbd.map(|m| {
            let s: Vec<f64> = test
                .iter()
                .map(|i| bgnbd_score(m, &snaps.outside[*i].base, horizon_days))
                .collect();
            evaluate(&s, &test_labels, None)
        }),
    };
    Ok((linear, fit))
}

/// The share of customers past onset who engaged again within the
/// horizon, on the training dates, for silences shorter than the churn gap
/// (an unusual silence, or a cancel) and of at least 1, 2 and 4 gaps.
fn return_rates(
    snaps: &Snapshots,
    before: u8,
    gap_days: f64,
) -> Vec<crate::pipeline::model::ReturnRate> {
    let bands = [0.0, gap_days, 2.0 * gap_days, 4.0 * gap_days];
    let mut counts = [(0u64, 0u64); 4];
    for o in snaps.outside.iter().filter(|o| o.date < before) {
        let b = bands
            .iter()
            .rposition(|from| f64::from(o.silent_days) >= *from)
            .unwrap_or(0);
        counts[b].0 += 1;
        counts[b].1 += u64::from(o.returned);
    }
    bands
        .iter()
        .zip(counts)
        .filter(|(_, (n, _))| *n > 0)
        .map(|(from, (n, back))| crate::pipeline::model::ReturnRate {
            silent_days_from: *from,
            rate: (back as f64 / n as f64 * 10_000.0).round() / 10_000.0,
            snapshots: n,
        })
        .collect()
}

/// Figures against an external truth on the held-out date: every customer
/// seen by the date and still there in truth is ranked by the chance of
/// churning within the horizon, and judged by whether the truth says they
/// churned within it.
#[derive(Debug, Clone, Serialize)]
pub struct TruthEvaluation {
    pub date: String,
    pub customers: usize,
    pub churn_rate: f64,
    /// (name, ROC AUC, PR AUC): the model, the baselines, the oracle.
    pub scores: Vec<(String, f64, f64)>,
}

/// Ranks everyone still there (per `churned_at`: customer → churn time,
/// absent for those who never churned) on the held-out date: the model's
/// probability for customers in its population, the chance of staying gone
/// (one minus the return rate) for those past onset, the baselines for
/// all, and the oracle's probability when given.
pub fn truth_evaluation(
    snaps: &Snapshots,
    t: &Trained,
    cfg: &TrainConfig,
    churned_at: &HashMap<String, Option<Millis>>,
    oracle: Option<&HashMap<String, f64>>,
) -> Result<TruthEvaluation, TrainError> {
    let d = t.test_date;
    let date = (snaps.dates.len() - 1) as u8;
    let h = cfg.horizon_ms;
    let mut labels = Vec::new();
    let mut model = Vec::new();
    let mut base: Vec<Vec<f64>> = vec![Vec::new(); t.baseline_models.len()];
    let mut orc = Vec::new();
    let mut bgnbd = Vec::new();
    let horizon_days = h as f64 / DAY_MS as f64;
    let mut take = |cust: u32, p: f64, b: &[f32]| -> Result<(), TrainError> {
        let id = &snaps.customers[cust as usize];
        let Some(churn) = churned_at.get(id) else {
            return Err(TrainError::NoData(format!(
                "the truth has no row for customer {id}"
            )));
        };
        if churn.is_some_and(|c| c < d) {
            return Ok(()); // already gone in truth
        }
        labels.push(churn.is_some_and(|c| c < d + h));
        model.push(p);
        for (v, m) in base.iter_mut().zip(&t.baseline_models) {
            v.push(m.predict(b));
        }
        if let Some(m) = &t.bgnbd_test {
            bgnbd.push(bgnbd_score(m, b, horizon_days));
        }
        if let Some(o) = oracle {
            orc.push(*o.get(id).ok_or_else(|| {
                TrainError::NoData(format!("the oracle has no row for customer {id}"))
            })?);
        }
        Ok(())
    };
    for (i, (dt, cust, _)) in snaps.rows.iter().enumerate() {
        if *dt == date {
            take(*cust, predict(&t.model, snaps.row(i)), snaps.base_row(i))?;
        }
    }
    let pop = t.model.population.clone();
    for (i, o) in snaps
        .outside
        .iter()
        .enumerate()
        .filter(|(_, o)| o.date == date)
    {
        let gone = match pop.as_ref() {
            Some(p) => match &p.win_back {
                Some(w) => predict_linear(w, snaps.outside_row(i)),
                None => 1.0 - p.return_probability(f64::from(o.silent_days)),
            },
            None => 1.0,
        };
        take(o.customer, gone, &o.base)?;
    }
    let mut scores = vec![(
        "model".to_string(),
        roc_auc(&model, &labels),
        pr_auc(&model, &labels),
    )];
    for (v, m) in base.iter().zip(&t.baseline_models) {
        scores.push((
            format!("baseline: {}", m.name),
            roc_auc(v, &labels),
            pr_auc(v, &labels),
        ));
    }
    if t.bgnbd_test.is_some() {
        scores.push((
            format!("baseline: {BGNBD_BASELINE}"),
            roc_auc(&bgnbd, &labels),
            pr_auc(&bgnbd, &labels),
        ));
    }
    if oracle.is_some() {
        scores.push((
            "oracle".into(),
            roc_auc(&orc, &labels),
            pr_auc(&orc, &labels),
        ));
    }
    Ok(TruthEvaluation {
        date: rfc3339(d)[..10].to_string(),
        customers: labels.len(),
        churn_rate: labels.iter().filter(|l| **l).count() as f64 / labels.len().max(1) as f64,
        scores,
    })
}

/// RFM quintile cut points of the population on the latest training date,
/// and the expected lifetime from the training churn rate: with a share
/// `p` churning within the horizon `h`, the annual churn rate is
/// 1 − (1 − p)^(365/h) and the expected lifetime its inverse (0.25 to 50
/// years).
fn learn_segments(
    snaps: &Snapshots,
    train: &[usize],
    date: u8,
    cfg: &TrainConfig,
) -> crate::pipeline::segments::Learned {
    use crate::pipeline::segments::{quintile_cuts, Learned, RfmBounds};
    let (mut r, mut f, mut m) = (Vec::new(), Vec::new(), Vec::new());
    for i in train.iter().filter(|i| snaps.rows[**i].0 == date) {
        // The baseline columns hold plain recency, frequency and monetary.
        let b = snaps.base_row(*i);
        let purchases = f64::from(b[1]);
        if purchases >= 1.0 {
            r.push(f64::from(b[0]));
        }
        f.push(purchases);
        m.push(f64::from(b[2]));
    }
    let round = |c: [f64; 4]| c.map(|x| (x * 100.0).round() / 100.0);
    let positives = train.iter().filter(|i| snaps.rows[**i].2).count();
    let p = positives as f64 / train.len().max(1) as f64;
    let h_days = cfg.horizon_ms as f64 / crate::pipeline::event::DAY_MS as f64;
    let annual = 1.0 - (1.0 - p).powf(365.0 / h_days.max(1.0));
    Learned {
        rfm: RfmBounds {
            recency_days: round(quintile_cuts(&mut r)),
            frequency: round(quintile_cuts(&mut f)),
            monetary: round(quintile_cuts(&mut m)),
        },
        expected_lifetime_years: ((1.0 / annual.max(1e-9)).clamp(0.25, 50.0) * 100.0).round()
            / 100.0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn simulated(customers: usize, days: u32, seed: u64) -> (Vec<Event>, Millis) {
        let mut sim_cfg = crate::offline::simulate::SimConfig::new(customers, days, seed);
        sim_cfg.end = 1_790_000_000_000 - 1_790_000_000_000 % DAY_MS;
        sim_cfg.late_rate = 0.02;
        let end = sim_cfg.end;
        let mut sim = crate::offline::simulate::Simulator::new(sim_cfg);
        let v = crate::config::Config::default().validator();
        let mut events = Vec::new();
        while !sim.done() {
            for e in sim.next_day() {
                events.push(
                    v.decode(Some(e.customer_id.as_bytes()), e.json.as_bytes(), None, end)
                        .unwrap(),
                );
            }
        }
        (events, end)
    }

    #[test]
    fn snapshots_never_see_their_future() {
        let (events, end) = simulated(200, 150, 5);
        let spec = crate::config::Config::default().feature_spec();
        let mut tc = TrainConfig::new(end, 30 * DAY_MS, &spec);
        tc.features = spec.names().to_vec();
        let snaps = build_examples(events.clone(), &spec, &tc).unwrap();
        assert!(snaps.dates.len() >= 3, "{:?}", snaps.dates);
        // Rebuild each snapshot from only the events up to its date, in
        // time order, and compare.
        let mut sorted = events;
        sorted.sort_by_key(|e| e.occurred_at);
        let names = spec.names();
        let recency = names.iter().position(|n| n == "recency_days").unwrap();
        let mut checked = 0;
        for (i, (date, cust, _)) in snaps.rows.iter().enumerate().step_by(7) {
            let d = snaps.dates[*date as usize];
            let id = &snaps.customers[*cust as usize];
            let mut s = None;
            for e in sorted
                .iter()
                .filter(|e| &e.customer_id == id && e.occurred_at <= d)
            {
                s = ingest(s, e, &spec).0;
            }
            let want = spec.extract(&s.unwrap(), d);
            let got = snaps.row(i);
            for (j, (w, g)) in want.iter().zip(got).enumerate() {
                assert!(
                    (*w as f32 - g).abs() <= 1e-4 * w.abs().max(1.0) as f32,
                    "{id} at {d}: {} = {g}, want {w}",
                    names[j]
                );
            }
            assert!(got[recency] >= 0.0);
            checked += 1;
        }
        assert!(checked > 50, "{checked}");
    }

    #[test]
    fn onset_labels_follow_the_silences_in_the_data() {
        let (events, end) = simulated(300, 200, 9);
        let spec = crate::config::Config::default().feature_spec();
        let tc = TrainConfig::new(end, 30 * DAY_MS, &spec);
        let snaps = build_examples(events.clone(), &spec, &tc).unwrap();
        let gap = tc.churn_gap_ms;
        let mut engaged: HashMap<&str, Vec<Millis>> = HashMap::new();
        for e in events.iter().filter(|e| e.kind.is_engagement()) {
            engaged
                .entry(&e.customer_id)
                .or_default()
                .push(e.occurred_at);
        }
        let (mut pos, mut checked) = (0, 0);
        for (i, (date, cust, churned)) in snaps.rows.iter().enumerate() {
            let d = snaps.dates[*date as usize];
            let id = snaps.customers[*cust as usize].as_str();
            let mut times = engaged.get(id).cloned().unwrap_or_default();
            times.sort_unstable();
            // In the population: engaged within the gap before the date, or
            // subscribed.
            let last = times.iter().rev().find(|t| **t <= d).copied();
            assert_eq!(last.unwrap_or(snaps.anchors[i]), snaps.anchors[i]);
            // Churned: some silence from the last engagement on, starting
            // within the horizon, lasts the gap (cancels aside).
            let silence = times.windows(2).any(|w| {
                w[0] >= snaps.anchors[i] && w[0] <= d + tc.horizon_ms && w[1] - w[0] >= gap
            }) || times.last().is_some_and(|l| {
                *l >= snaps.anchors[i] && *l <= d + tc.horizon_ms && end - l >= gap
            });
            if silence {
                assert!(
                    churned,
                    "{id} at {d}: a silence of the gap starts within the horizon"
                );
            }
            pos += usize::from(*churned);
            checked += 1;
        }
        assert!(pos > 10 && pos < checked / 2, "{pos} of {checked} churned");
        assert!(!snaps.outside.is_empty(), "some customers are past onset");
    }

    #[test]
    fn learns_churn_from_simulated_history() {
        let (events, end) = simulated(1500, 240, 11);
        let spec = crate::config::Config::default().feature_spec();
        let tc = TrainConfig::new(end, 30 * DAY_MS, &spec);
        let snaps = build_examples(events, &spec, &tc).unwrap();
        let t = fit(&snaps, &spec, &tc).unwrap();
        assert!(t.test.roc_auc > 0.75, "held-out AUC {}", t.test.roc_auc);
        // Every weight keeps the sign its meaning gives it.
        for (f, w) in t.model.features.iter().zip(&t.model.weights) {
            if let Some(sign) = spec.expected_sign(f) {
                assert!(sign * w >= 0.0, "{f}: weight {w} against its sign");
            }
        }
        let i = t
            .model
            .features
            .iter()
            .position(|n| n == "silence_surprise")
            .unwrap();
        assert!(
            t.model.weights[i] > 0.0,
            "a longer silence means higher risk"
        );
        let th = t.model.thresholds.as_ref().unwrap();
        assert!(th.exit < th.enter && th.enter < 1.0);
        let p = t.model.population.as_ref().unwrap();
        assert_eq!(p.churned_after_days, 30.0);
        assert!(!p.return_rates.is_empty());
        assert_eq!(t.baselines.len(), 3);
        assert_eq!(t.baselines[2].0, BGNBD_BASELINE);
        assert!(crate::pipeline::model::Model::new(t.model, &spec).is_ok());
    }

    #[test]
    fn the_purchase_rhythm_column_is_what_the_service_computes() {
        let (events, end) = simulated(1500, 240, 11);
        let spec = crate::config::Config::default().feature_spec();
        let tc = TrainConfig::new(end, 30 * DAY_MS, &spec);
        let mut snaps = build_examples(events, &spec, &tc).unwrap();
        let width = snaps.width;
        snaps.add_purchase_rhythm(30.0).unwrap();
        assert_eq!(snaps.width, width + 1);
        assert_eq!(snaps.names.last().unwrap(), BGNBD_NO_PURCHASE);
        let t = fit(&snaps, &spec, &tc).unwrap();
        let mut file = t.model.clone();
        // Without the BG/NBD fit the model cannot compute the feature.
        let err = crate::pipeline::model::Model::new(file.clone(), &spec).unwrap_err();
        assert_eq!(err.0, "bgnbd");
        // With the held-out date's fit, the service's value of the feature
        // for a snapshot's customer is the column's: a model that weighs
        // only that feature scores the snapshot as `predict` does.
        let m = t.bgnbd_test.expect("BG/NBD fits this history");
        file.bgnbd = Some(m);
        let k = file.features.len() - 1;
        for (j, w) in file.weights.iter_mut().enumerate() {
            *w = if j == k { 1.0 } else { 0.0 };
        }
        let model = crate::pipeline::model::Model::new(file.clone(), &spec).unwrap();
        let test_d = (snaps.dates.len() - 1) as u8;
        let i = (0..snaps.len())
            .find(|i| snaps.rows[*i].0 == test_d)
            .unwrap();
        let b = snaps.base_row(i);
        let mut x = vec![0.0; spec.names().len()];
        let at = |n: &str| spec.names().iter().position(|x| x == n).unwrap();
        x[at("purchase_count_log")] = f64::from(b[1]).ln_1p();
        x[at("purchase_recency_days")] = f64::from(b[0]);
        x[at("tenure_days")] = f64::from(b[11]);
        let served = model.probability(&x);
        let column =
            sigmoid(file.intercept + (f64::from(snaps.row(i)[k]) - file.mean[k]) / file.scale[k]);
        assert!((served - column).abs() < 1e-4, "{served} vs {column}");
    }

    #[test]
    fn one_class_history_is_refused() {
        let spec = crate::config::Config::default().feature_spec();
        let w = spec.names().len();
        let bw = BASELINE_COLUMNS.len();
        let snaps = Snapshots {
            names: spec.names().to_vec(),
            width: w,
            dates: vec![0, DAY_MS, 2 * DAY_MS],
            x: vec![0.0; w * 12],
            base: vec![0.0; bw * 12],
            anchors: vec![0; 12],
            rows: (0..12).map(|i| ((i % 3) as u8, i as u32, false)).collect(),
            customers: (0..12).map(|i| format!("c{i}")).collect(),
            ..Default::default()
        };
        let tc = TrainConfig::new(10 * DAY_MS, DAY_MS, &spec);
        let err = fit(&snaps, &spec, &tc).unwrap_err();
        assert!(matches!(err, TrainError::OneClass(_)), "{err}");
        let two_dates = Snapshots {
            dates: vec![0, DAY_MS],
            rows: (0..12)
                .map(|i| ((i % 2) as u8, i as u32, i % 3 == 0))
                .collect(),
            ..snaps
        };
        let err = fit(&two_dates, &spec, &tc).unwrap_err();
        assert!(err.to_string().contains("at least 3"), "{err}");
    }
}

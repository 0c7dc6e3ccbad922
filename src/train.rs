//! Fitting the churn model from event history, through the same feature code
//! that serves.
//!
//! Events are replayed in event-time order with [`crate::pipeline::ingest`].
//! At each observation date every customer in the population gets a
//! point-in-time snapshot of features (nothing after the date is visible),
//! labelled by what happens next: churned = no purchase, session or activity
//! within the horizon. The population at a date is every customer seen by
//! then who engaged within `active_within` before it: customers already long
//! gone are not "about to leave" and would only teach the model the obvious.
//! The latest observation date is held out for validation; the L2 strength is
//! chosen on it.

use std::collections::HashMap;

use linfa::prelude::*;
use linfa_logistic::LogisticRegression;
use ndarray::{Array1, Array2};

use crate::event::{rfc3339, Event, Millis, DAY_MS};
use crate::features::{CustomerState, FeatureSpec};
use crate::model::{sigmoid, ModelFile};
use crate::pipeline::ingest;

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

/// Training settings.
#[derive(Debug, Clone)]
pub struct TrainConfig {
    /// Last date whose labels are fully known is `as_of - horizon`.
    pub as_of: Millis,
    /// How far ahead the label looks.
    pub horizon_ms: Millis,
    /// Number of observation dates.
    pub snapshots: usize,
    /// Spacing of observation dates.
    pub snapshot_step_ms: Millis,
    /// Population: engaged within this span before the observation date.
    pub active_within_ms: Millis,
    /// L2 strengths to try.
    pub alphas: Vec<f64>,
    /// Model version to write.
    pub version: String,
}

impl TrainConfig {
    pub fn new(as_of: Millis, horizon_ms: Millis) -> Self {
        Self {
            as_of,
            horizon_ms,
            snapshots: 4,
            snapshot_step_ms: 14 * DAY_MS,
            active_within_ms: 60 * DAY_MS,
            alphas: vec![0.01, 0.1, 1.0, 10.0],
            version: format!("churn-{}", &rfc3339(as_of)[..10]),
        }
    }

    /// Observation dates, earliest first.
    pub fn observation_dates(&self) -> Vec<Millis> {
        let last = self.as_of - self.horizon_ms;
        let mut v: Vec<Millis> = (0..self.snapshots)
            .map(|k| last - k as Millis * self.snapshot_step_ms)
            .collect();
        v.reverse();
        v
    }
}

/// One labelled snapshot.
#[derive(Debug, Clone)]
pub struct Example {
    pub customer_id: String,
    pub at: Millis,
    pub x: Vec<f64>,
    pub churned: bool,
}

/// Replays `events` (any order; sorted here) and builds labelled snapshots.
pub fn build_examples(
    mut events: Vec<Event>,
    spec: &FeatureSpec,
    cfg: &TrainConfig,
) -> Vec<Example> {
    events.sort_by_key(|e| e.occurred_at);
    let Some(first) = events.first().map(|e| e.occurred_at) else {
        return Vec::new();
    };
    let dates: Vec<Millis> = cfg
        .observation_dates()
        .into_iter()
        .filter(|d| *d > first + 30 * DAY_MS)
        .collect();
    let mut states: HashMap<String, CustomerState> = HashMap::new();
    let mut engaged: HashMap<String, Vec<Millis>> = HashMap::new();
    let mut snaps: Vec<(String, Millis, Vec<f64>)> = Vec::new();
    let mut next = 0;
    let take = |states: &HashMap<String, CustomerState>, d: Millis, snaps: &mut Vec<_>| {
        let mut ids: Vec<&String> = states.keys().collect();
        ids.sort();
        for id in ids {
            let s = &states[id];
            let last = s.last_engaged.unwrap_or(s.first_seen);
            if s.first_seen <= d && d - last <= cfg.active_within_ms {
                snaps.push((id.clone(), d, spec.extract(s, d)));
            }
        }
    };
    for e in &events {
        while next < dates.len() && e.occurred_at > dates[next] {
            take(&states, dates[next], &mut snaps);
            next += 1;
        }
        let (s, _) = ingest(states.remove(&e.customer_id), e, spec);
        if e.kind.is_engagement() {
            engaged
                .entry(e.customer_id.clone())
                .or_default()
                .push(e.occurred_at);
        }
        if let Some(s) = s {
            states.insert(e.customer_id.clone(), s);
        } else {
            engaged.remove(&e.customer_id);
        }
    }
    while next < dates.len() {
        take(&states, dates[next], &mut snaps);
        next += 1;
    }
    snaps
        .into_iter()
        .map(|(id, at, x)| {
            let times = engaged.get(&id).map(Vec::as_slice).unwrap_or(&[]);
            let i = times.partition_point(|t| *t <= at);
            let active_after = times.get(i).is_some_and(|t| *t <= at + cfg.horizon_ms);
            Example {
                customer_id: id,
                at,
                x,
                churned: !active_after,
            }
        })
        .collect()
}

/// Validation figures of a fitted model.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Evaluation {
    pub examples: usize,
    pub churn_rate: f64,
    pub roc_auc: f64,
    pub brier: f64,
}

/// A fitted model with how it was chosen.
#[derive(Debug, Clone)]
pub struct Trained {
    pub model: ModelFile,
    pub alpha: f64,
    pub train: Evaluation,
    pub validation: Evaluation,
}

/// Area under the ROC curve (ties count half).
pub fn roc_auc(scores: &[f64], labels: &[bool]) -> f64 {
    let mut idx: Vec<usize> = (0..scores.len()).collect();
    idx.sort_by(|a, b| scores[*a].total_cmp(&scores[*b]));
    let (mut rank_sum, mut pos) = (0.0, 0usize);
    let mut i = 0;
    while i < idx.len() {
        let mut j = i;
        while j + 1 < idx.len() && scores[idx[j + 1]] == scores[idx[i]] {
            j += 1;
        }
        let avg_rank = (i + j) as f64 / 2.0 + 1.0;
        for k in &idx[i..=j] {
            if labels[*k] {
                rank_sum += avg_rank;
                pos += 1;
            }
        }
        i = j + 1;
    }
    let neg = scores.len() - pos;
    if pos == 0 || neg == 0 {
        return f64::NAN;
    }
    (rank_sum - (pos * (pos + 1)) as f64 / 2.0) / (pos * neg) as f64
}

fn evaluate(m: &ModelFile, xs: &[&Example]) -> Evaluation {
    let scores: Vec<f64> = xs.iter().map(|e| predict(m, &e.x)).collect();
    let labels: Vec<bool> = xs.iter().map(|e| e.churned).collect();
    let n = xs.len().max(1) as f64;
    Evaluation {
        examples: xs.len(),
        churn_rate: labels.iter().filter(|l| **l).count() as f64 / n,
        roc_auc: roc_auc(&scores, &labels),
        brier: scores
            .iter()
            .zip(&labels)
            .map(|(p, l)| (p - f64::from(u8::from(*l))).powi(2))
            .sum::<f64>()
            / n,
    }
}

/// The model's probability for a feature vector in spec order (all features).
fn predict(m: &ModelFile, x: &[f64]) -> f64 {
    let z: f64 = m.intercept
        + x.iter()
            .zip(&m.mean)
            .zip(m.scale.iter().zip(&m.weights))
            .map(|((v, mu), (s, w))| w * (v - mu) / s)
            .sum::<f64>();
    sigmoid(z)
}

/// Fits a standardised L2 logistic regression on all but the latest
/// observation date and chooses the L2 strength on the latest.
pub fn fit(
    examples: &[Example],
    spec: &FeatureSpec,
    cfg: &TrainConfig,
) -> Result<Trained, TrainError> {
    let last = examples.iter().map(|e| e.at).max().ok_or_else(|| {
        TrainError::NoData(
            "no snapshots: the history is shorter than warm-up plus horizon, or empty".into(),
        )
    })?;
    let train: Vec<&Example> = examples.iter().filter(|e| e.at < last).collect();
    let valid: Vec<&Example> = examples.iter().filter(|e| e.at == last).collect();
    if train.is_empty() {
        return Err(TrainError::NoData(
            "only one observation date fits in the history; need at least two".into(),
        ));
    }
    for (name, set) in [("training", &train), ("validation", &valid)] {
        let pos = set.iter().filter(|e| e.churned).count();
        if pos == 0 || pos == set.len() {
            return Err(TrainError::OneClass(name));
        }
    }
    let d = spec.names().len();
    let n = train.len() as f64;
    let mut mean = vec![0.0; d];
    for e in &train {
        for (m, v) in mean.iter_mut().zip(&e.x) {
            *m += v / n;
        }
    }
    let mut scale = vec![0.0; d];
    for e in &train {
        for ((s, v), m) in scale.iter_mut().zip(&e.x).zip(&mean) {
            *s += (v - m).powi(2) / n;
        }
    }
    for s in scale.iter_mut() {
        *s = if *s > 1e-12 { s.sqrt() } else { 1.0 };
    }
    let x = Array2::from_shape_fn((train.len(), d), |(i, j)| {
        (train[i].x[j] - mean[j]) / scale[j]
    });
    let y: Array1<bool> = train.iter().map(|e| e.churned).collect();
    let data = Dataset::new(x, y);
    let mut best: Option<Trained> = None;
    for &alpha in &cfg.alphas {
        let fitted = LogisticRegression::default()
            .alpha(alpha)
            .max_iterations(300)
            .fit(&data)
            .map_err(|e| TrainError::Fit(e.to_string()))?;
        // linfa reports the probability of its "positive" class (the larger one).
        let sign = if fitted.labels().pos.class { 1.0 } else { -1.0 };
        let model = ModelFile {
            version: cfg.version.clone(),
            features: spec.names().to_vec(),
            mean: mean.clone(),
            scale: scale.clone(),
            weights: fitted.params().iter().map(|w| sign * w).collect(),
            intercept: sign * fitted.intercept(),
            training: None,
        };
        let v = evaluate(&model, &valid);
        let better = best.as_ref().is_none_or(|b| v.brier < b.validation.brier);
        if better {
            best = Some(Trained {
                train: evaluate(&model, &train),
                validation: v,
                model,
                alpha,
            });
        }
    }
    let mut t = best.expect("at least one alpha");
    t.model.training = Some(serde_json::json!({
        "as_of": rfc3339(cfg.as_of),
        "horizon_days": cfg.horizon_ms as f64 / DAY_MS as f64,
        "label": "no purchase, session or activity within the horizon",
        "observation_dates": cfg.observation_dates().iter().map(|d| rfc3339(*d)).collect::<Vec<_>>(),
        "l2_alpha": t.alpha,
        "train": t.train,
        "validation": t.validation,
    }));
    Ok(t)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auc_of_perfect_random_and_inverted_scores() {
        let labels = [false, false, true, true];
        assert_eq!(roc_auc(&[0.1, 0.2, 0.8, 0.9], &labels), 1.0);
        assert_eq!(roc_auc(&[0.9, 0.8, 0.2, 0.1], &labels), 0.0);
        assert_eq!(roc_auc(&[0.5, 0.5, 0.5, 0.5], &labels), 0.5);
    }

    #[test]
    fn learns_churn_from_simulated_history() {
        let mut sim_cfg = crate::simulate::SimConfig::new(1500, 240, 11);
        sim_cfg.end = 1_790_000_000_000 - 1_790_000_000_000 % DAY_MS;
        let end = sim_cfg.end;
        let mut sim = crate::simulate::Simulator::new(sim_cfg);
        let cfg = crate::config::Config::default();
        let v = cfg.validator();
        let spec = cfg.feature_spec();
        let mut events = Vec::new();
        while !sim.done() {
            for e in sim.next_day() {
                events.push(
                    v.decode(Some(e.customer_id.as_bytes()), e.json.as_bytes(), None, end)
                        .unwrap(),
                );
            }
        }
        let tc = TrainConfig::new(end, 60 * DAY_MS);
        let ex = build_examples(events, &spec, &tc);
        // Snapshots never see the future: each one's recency is measured at its date.
        assert!(ex.iter().all(|e| e.x[0] >= 0.0));
        let t = fit(&ex, &spec, &tc).unwrap();
        assert!(
            t.validation.roc_auc > 0.75,
            "validation AUC {}",
            t.validation.roc_auc
        );
        // Longer silence means higher risk.
        let i = spec
            .names()
            .iter()
            .position(|n| n == "recency_days")
            .unwrap();
        assert!(t.model.weights[i] > 0.0);
        assert!(crate::model::Model::new(t.model, &spec).is_ok());
    }

    #[test]
    fn one_class_history_is_refused() {
        let spec = crate::config::Config::default().feature_spec();
        let ex: Vec<Example> = (0..10)
            .map(|i| Example {
                customer_id: format!("c{i}"),
                at: (i % 2) * DAY_MS,
                x: vec![0.0; spec.names().len()],
                churned: false,
            })
            .collect();
        let err = fit(&ex, &spec, &TrainConfig::new(10 * DAY_MS, DAY_MS)).unwrap_err();
        assert!(matches!(err, TrainError::OneClass(_)), "{err}");
    }
}

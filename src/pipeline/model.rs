//! The churn model: a standardised logistic regression read from JSON.
//!
//! The file names its features; they must all be features the code computes
//! (see [`crate::pipeline::features::FeatureSpec::names`]), otherwise the model is
//! refused at load with the offending field.

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::pipeline::features::{CustomerState, FeatureSpec, BGNBD_NO_PURCHASE};

/// Why a model file was refused.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    #[error("cannot read model file {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("model file {path} is not a valid model: {message}")]
    Parse { path: String, message: String },
    #[error("model file {path}: field `{field}`: {message}")]
    Field {
        path: String,
        field: String,
        message: String,
    },
}

impl crate::pipeline::error::Classify for ModelError {
    /// A model file is the operator's to fix (or to retrain).
    fn class(&self) -> crate::pipeline::error::ErrorClass {
        crate::pipeline::error::ErrorClass::Config
    }
}

/// The model file format (`models/*.json`).
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct ModelFile {
    /// Stamped on every alert.
    pub version: String,
    /// Feature names, in the order of the arrays below.
    pub features: Vec<String>,
    /// Mean of each feature in the training data (standardisation).
    pub mean: Vec<f64>,
    /// Standard deviation of each feature in the training data (> 0).
    pub scale: Vec<f64>,
    /// Weight of each standardised feature.
    pub weights: Vec<f64>,
    /// Intercept (log-odds at the mean customer).
    pub intercept: f64,
    /// Alert thresholds chosen by `train`; used when the config sets none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub thresholds: Option<Thresholds>,
    /// RFM cut points and expected lifetime learned by `train`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub segments: Option<crate::pipeline::segments::Learned>,
    /// Who the model scores: customers past churn onset are churned, not
    /// scored. Absent in models trained on the old silence label, which
    /// score everyone.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub population: Option<Population>,
    /// Customers first seen less than this many days ago are new: scored,
    /// but not alerted (a first event says little, and a model asked about
    /// a customer unlike any it was trained on extrapolates). `train`
    /// leaves them out of its snapshots too. Absent: no such limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_tenure_days: Option<f64>,
    /// BG/NBD fitted on the customers' purchases up to the training
    /// cut-off: each customer's expected purchases within the horizon
    /// (`score`'s `expected_purchases`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bgnbd: Option<crate::pipeline::bgnbd::BgNbd>,
    /// How the model was made: training window, data hash, metrics.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub training: Option<serde_json::Value>,
}

/// The customers a model speaks for, and what it says of the others.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct Population {
    /// Silent this many days (no purchase, session or activity) and no
    /// active subscription, or cancelled within this many days: past churn
    /// onset. Such a customer is shown as churned, with the chance of
    /// coming back, and is not alerted.
    pub churned_after_days: f64,
    /// Also past onset: a silence that has cost this many active days at
    /// the customer's lifetime share of active days (a silence that
    /// unusual for them, chance about e^-n, means they have most likely
    /// gone), before the churn gap is reached.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub churned_after_missed_days: Option<f64>,
    /// Days ahead the probabilities look (the label's horizon).
    pub horizon_days: f64,
    /// The share of churned customers who came back within the horizon
    /// in the training history, by length of silence, shortest first
    /// (what a model without `win_back` tells churned customers).
    #[serde(default)]
    pub return_rates: Vec<ReturnRate>,
    /// The win-back model: for a customer past onset, the probability of
    /// no engagement within the horizon (staying gone), from the features
    /// of their history. Trained by `train` on the same snapshots as the
    /// main model; absent in older models, which use `return_rates`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub win_back: Option<Linear>,
}

/// A standardised logistic regression over named features.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct Linear {
    /// Feature names, in the order of the arrays below.
    pub features: Vec<String>,
    /// Mean of each feature in the training data.
    pub mean: Vec<f64>,
    /// Standard deviation of each feature in the training data (> 0).
    pub scale: Vec<f64>,
    /// Weight of each standardised feature.
    pub weights: Vec<f64>,
    /// Intercept (log-odds at the mean customer).
    pub intercept: f64,
}

/// How often churned customers came back, for one band of silence.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct ReturnRate {
    /// Silences of at least this many days (up to the next band's).
    pub silent_days_from: f64,
    /// Share that engaged again within the horizon.
    pub rate: f64,
    /// Training snapshots behind the share.
    pub snapshots: u64,
}

impl Population {
    /// Whether a customer is past churn onset as of `now` (and if so, the
    /// days of silence): silent at least `churned_after_days`, or for
    /// `churned_after_missed_days` of their usual active days, with no
    /// active subscription; or a subscription cancelled less than
    /// `churned_after_days` ago (a cancel is an onset; after that long the
    /// silence rule decides).
    pub fn past_onset(
        &self,
        s: &CustomerState,
        now: crate::pipeline::event::Millis,
    ) -> Option<f64> {
        use crate::pipeline::features::SubStatus;
        let silent = silent_days(s, now);
        let gap = self.churned_after_days * crate::pipeline::event::DAY_MS as f64;
        let (subscribed, cancelled) = match &s.subscription {
            Some(l) if l.value == SubStatus::Active => (true, false),
            Some(l) => (false, l.at <= now && ((now - l.at) as f64) < gap),
            None => (false, false),
        };
        let unusual = self
            .churned_after_missed_days
            .is_some_and(|n| s.missed_active_days(now) >= n);
        (((silent >= self.churned_after_days || unusual) && !subscribed) || cancelled)
            .then_some(silent)
    }

    /// The chance that a customer silent `silent` days comes back within
    /// the horizon.
    pub fn return_probability(&self, silent: f64) -> f64 {
        self.return_rates
            .iter()
            .rev()
            .find(|r| silent >= r.silent_days_from)
            .or(self.return_rates.first())
            .map_or(0.0, |r| r.rate)
    }
}

/// Days since the last purchase, session or activity (since first seen if
/// none).
pub fn silent_days(s: &CustomerState, now: crate::pipeline::event::Millis) -> f64 {
    let engaged = s.last_engaged.unwrap_or(s.first_seen);
    (now - engaged).max(0) as f64 / crate::pipeline::event::DAY_MS as f64
}

/// What the model says of one customer.
#[derive(Debug, Clone, PartialEq)]
pub enum Assessment {
    /// In the model's population: the probability of churn onset within
    /// the horizon, with reasons.
    Scored(Score),
    /// Past churn onset: not alerted. `probability` is on the same scale
    /// as a scored customer's: the chance that the customer is gone at the
    /// horizon (here: no engagement within it), so that one sort ranks
    /// everyone.
    Churned {
        /// Days since the last engagement.
        silent_days: f64,
        /// Chance of coming back within the horizon (1 − `probability`).
        return_probability: f64,
        /// Chance of staying gone through the horizon.
        probability: f64,
    },
}

/// Enter and exit thresholds for alerts, with how they were chosen.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct Thresholds {
    /// Probability at which a customer is alerted.
    pub enter: f64,
    /// Probability below which an alerted customer is re-armed.
    pub exit: f64,
    /// How they were chosen.
    #[serde(default)]
    pub basis: String,
}

/// One behaviour's part in a score: every feature of one signal (its
/// 7/30/90-day windows, level and changes) together.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct Reason {
    /// The behaviour (`sessions`, `silence`, `complaints`, ...; see
    /// `FeatureSpec::group_of`).
    pub feature: String,
    /// The feature of that behaviour that pushed the score up most.
    #[serde(default)]
    pub top_feature: String,
    /// The customer's value of `top_feature`.
    pub value: f64,
    /// The behaviour's contribution to the log-odds (sum over its features
    /// of weight × standardised value): positive, since only behaviours
    /// that raise this customer's risk are reasons.
    pub contribution: f64,
}

/// A probability and what drove it.
#[derive(Debug, Clone, PartialEq)]
pub struct Score {
    pub probability: f64,
    /// Features by contribution, largest first (only those pushing up).
    pub reasons: Vec<Reason>,
}

/// A model checked against the code's feature spec, ready to score.
#[derive(Debug, Clone)]
pub struct Model {
    file: ModelFile,
    /// For each win-back feature, its index in the spec's feature vector.
    win_back: Vec<usize>,
    /// For each model feature, its index in the spec's feature vector.
    index: Vec<usize>,
    /// For each model feature, the index of its behaviour in `groups`.
    group: Vec<usize>,
    /// Behaviour names (reasons), in first-seen order.
    groups: Vec<String>,
    /// How to compute [`BGNBD_NO_PURCHASE`] when a model uses it.
    rhythm: Option<Rhythm>,
}

/// Index, in [`check_linear`]'s result, of the feature the model computes
/// itself ([`BGNBD_NO_PURCHASE`]) rather than reads from the spec's vector.
const COMPUTED: usize = usize::MAX;

/// What [`BGNBD_NO_PURCHASE`] is computed from: the model file's BG/NBD
/// fit and horizon, and where the spec's vector holds the purchase count,
/// purchase recency and tenure.
#[derive(Debug, Clone)]
struct Rhythm {
    fit: crate::pipeline::bgnbd::BgNbd,
    horizon_days: f64,
    count: usize,
    recency: usize,
    tenure: usize,
}

impl Rhythm {
    fn value(&self, x: &[f64]) -> f64 {
        let c = crate::pipeline::bgnbd::Rfm::of(
            x[self.count].exp_m1().round(),
            x[self.recency],
            x[self.tenure],
        );
        self.fit.no_purchase_logit(&c, self.horizon_days)
    }
}

impl Model {
    /// Reads and checks a model file.
    pub fn load(path: &Path, spec: &FeatureSpec) -> Result<Self, ModelError> {
        let p = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| ModelError::Read {
            path: p.clone(),
            source,
        })?;
        let de = &mut serde_json::Deserializer::from_str(&text);
        let file: ModelFile = serde_path_to_error::deserialize(de).map_err(|e| {
            let field = e.path().to_string();
            let broken = e.inner().is_syntax() || e.inner().is_eof();
            let message = e.into_inner().to_string();
            if broken || field == "." {
                ModelError::Parse {
                    path: p.clone(),
                    message,
                }
            } else {
                ModelError::Field {
                    path: p.clone(),
                    field,
                    message,
                }
            }
        })?;
        if let Some(l) = &file.segments {
            l.rfm.check().map_err(|m| ModelError::Field {
                path: p.clone(),
                field: "segments.rfm".into(),
                message: m,
            })?;
        }
        Self::new(file, spec).map_err(|(field, message)| ModelError::Field {
            path: p,
            field,
            message,
        })
    }

    /// Checks a model against the spec; the error names the field.
    pub fn new(file: ModelFile, spec: &FeatureSpec) -> Result<Self, (String, String)> {
        let index = check_linear(
            "",
            &file.features,
            &file.mean,
            &file.scale,
            &file.weights,
            file.intercept,
            spec,
        )?;
        if let Some(t) = &file.thresholds {
            if !(0.0..=1.0).contains(&t.enter) {
                return Err((
                    "thresholds.enter".into(),
                    format!("must be a probability, got {}", t.enter),
                ));
            }
            if !(0.0..=t.enter).contains(&t.exit) {
                return Err((
                    "thresholds.exit".into(),
                    format!("must be between 0 and thresholds.enter, got {}", t.exit),
                ));
            }
        }
        if let Some(d) = file.min_tenure_days {
            if !(d.is_finite() && d >= 0.0) {
                return Err((
                    "min_tenure_days".into(),
                    format!("must be a number of days (0 or more), got {d}"),
                ));
            }
        }
        if file.version.trim().is_empty() {
            return Err(("version".into(), "must not be empty".into()));
        }
        if let Some(p) = &file.population {
            if !(p.churned_after_days.is_finite() && p.churned_after_days > 0.0) {
                return Err((
                    "population.churned_after_days".into(),
                    format!(
                        "must be a positive number of days, got {}",
                        p.churned_after_days
                    ),
                ));
            }
            if let Some(n) = p.churned_after_missed_days {
                if !(n.is_finite() && n > 0.0) {
                    return Err((
                        "population.churned_after_missed_days".into(),
                        format!("must be a positive number of days, got {n}"),
                    ));
                }
            }
            if !(p.horizon_days.is_finite() && p.horizon_days > 0.0) {
                return Err((
                    "population.horizon_days".into(),
                    format!("must be a positive number of days, got {}", p.horizon_days),
                ));
            }
            for (i, r) in p.return_rates.iter().enumerate() {
                if !(0.0..=1.0).contains(&r.rate) {
                    return Err((
                        format!("population.return_rates[{i}].rate"),
                        format!("must be a share between 0 and 1, got {}", r.rate),
                    ));
                }
                if !r.silent_days_from.is_finite()
                    || (i > 0 && r.silent_days_from <= p.return_rates[i - 1].silent_days_from)
                {
                    return Err((
                        format!("population.return_rates[{i}].silent_days_from"),
                        "must be larger than the band before".into(),
                    ));
                }
            }
        }
        let mut groups: Vec<String> = Vec::new();
        let group = file
            .features
            .iter()
            .map(|f| {
                let g = spec.group_of(f);
                match groups.iter().position(|x| x == g) {
                    Some(i) => i,
                    None => {
                        groups.push(g.to_string());
                        groups.len() - 1
                    }
                }
            })
            .collect();
        let win_back = match file.population.as_ref().and_then(|p| p.win_back.as_ref()) {
            Some(w) => check_linear(
                "population.win_back.",
                &w.features,
                &w.mean,
                &w.scale,
                &w.weights,
                w.intercept,
                spec,
            )?,
            None => Vec::new(),
        };
        if let Some(f) = &file.bgnbd {
            for (name, v) in [("r", f.r), ("alpha", f.alpha), ("a", f.a), ("b", f.b)] {
                if !(v.is_finite() && v > 0.0) {
                    return Err((
                        format!("bgnbd.{name}"),
                        format!("must be finite and > 0, got {v}"),
                    ));
                }
            }
        }
        let rhythm = if index.contains(&COMPUTED) || win_back.contains(&COMPUTED) {
            let Some(fit) = file.bgnbd else {
                return Err((
                    "bgnbd".into(),
                    format!("the feature {BGNBD_NO_PURCHASE} needs the BG/NBD fit"),
                ));
            };
            let Some(p) = &file.population else {
                return Err((
                    "population".into(),
                    format!("the feature {BGNBD_NO_PURCHASE} needs the horizon (population.horizon_days)"),
                ));
            };
            let at = |n: &str| {
                spec.names()
                    .iter()
                    .position(|x| x == n)
                    .expect("the spec computes purchase count, recency and tenure")
            };
            Some(Rhythm {
                fit,
                horizon_days: p.horizon_days,
                count: at("purchase_count_log"),
                recency: at("purchase_recency_days"),
                tenure: at("tenure_days"),
            })
        } else {
            None
        };
        Ok(Self {
            file,
            win_back,
            index,
            group,
            groups,
            rhythm,
        })
    }

    /// What the model says of a customer as of `now`: churned when past
    /// onset (for models with a population), else scored.
    pub fn assess(
        &self,
        s: &CustomerState,
        x: &[f64],
        now: crate::pipeline::event::Millis,
        top: usize,
    ) -> Assessment {
        if let Some(p) = &self.file.population {
            if let Some(silent) = p.past_onset(s, now) {
                let (back, gone) = match &p.win_back {
                    Some(w) => {
                        let gone = linear_probability(w, &self.win_back, x, self.computed(x));
                        (1.0 - gone, gone)
                    }
                    None => {
                        let back = p.return_probability(silent);
                        (back, 1.0 - back)
                    }
                };
                return Assessment::Churned {
                    silent_days: silent,
                    return_probability: back,
                    probability: gone,
                };
            }
        }
        Assessment::Scored(self.score(x, top))
    }

    /// Whether a customer is too new to alert at `now` (see
    /// [`ModelFile::min_tenure_days`]).
    pub fn is_new(&self, s: &CustomerState, now: crate::pipeline::event::Millis) -> bool {
        self.file.min_tenure_days.is_some_and(|d| {
            ((now - s.first_seen) as f64) < d * crate::pipeline::event::DAY_MS as f64
        })
    }

    /// The model's version string.
    pub fn version(&self) -> &str {
        &self.file.version
    }

    /// The file contents.
    pub fn file(&self) -> &ModelFile {
        &self.file
    }

    /// The value of [`BGNBD_NO_PURCHASE`] for `x` (0 for models without it).
    fn computed(&self, x: &[f64]) -> f64 {
        self.rhythm.as_ref().map_or(0.0, |r| r.value(x))
    }

    fn contribution(&self, k: usize, x: &[f64], computed: f64) -> f64 {
        let f = &self.file;
        f.weights[k] * (value_at(self.index[k], x, computed) - f.mean[k]) / f.scale[k]
    }

    /// The churn probability of a feature vector (in spec order). Summed
    /// in the same order as [`Model::score`], so a projection and the score
    /// it projects agree to the last bit.
    pub fn probability(&self, x: &[f64]) -> f64 {
        let computed = self.computed(x);
        let mut z = self.file.intercept;
        for k in 0..self.index.len() {
            z += self.contribution(k, x, computed);
        }
        sigmoid(z)
    }

    /// Scores a feature vector (in spec order); keeps the `top` reasons:
    /// the behaviours whose features together raise the score most. With
    /// `top` 0 it only computes the probability (no allocation), which is
    /// what a re-score that raises no alert needs.
    pub fn score(&self, x: &[f64], top: usize) -> Score {
        let probability = self.probability(x);
        if top == 0 {
            return Score {
                probability,
                reasons: Vec::new(),
            };
        }
        let f = &self.file;
        let computed = self.computed(x);
        // Per behaviour: total contribution, and its strongest feature.
        let mut by_group = vec![(0.0f64, None::<(usize, f64)>); self.groups.len()];
        for k in 0..self.index.len() {
            let c = self.contribution(k, x, computed);
            let g = &mut by_group[self.group[k]];
            g.0 += c;
            if g.1.is_none_or(|(_, best)| c > best) {
                g.1 = Some((k, c));
            }
        }
        let mut up: Vec<(usize, f64, usize)> = by_group
            .iter()
            .enumerate()
            .filter_map(|(g, (total, best))| {
                let (k, _) = (*best)?;
                (*total > 0.0).then_some((g, *total, k))
            })
            .collect();
        up.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
        let reasons = up
            .into_iter()
            .take(top)
            .map(|(g, c, k)| Reason {
                feature: self.groups[g].clone(),
                top_feature: f.features[k].clone(),
                value: value_at(self.index[k], x, computed),
                contribution: c,
            })
            .collect();
        Score {
            probability,
            reasons,
        }
    }
}

/// Checks one standardised logistic regression of a model file (the main
/// model, fields at the top level, or `population.win_back`, whose field
/// names carry `prefix`) and returns each feature's index in the spec's
/// feature vector.
fn check_linear(
    prefix: &str,
    features: &[String],
    mean: &[f64],
    scale: &[f64],
    weights: &[f64],
    intercept: f64,
    spec: &FeatureSpec,
) -> Result<Vec<usize>, (String, String)> {
    let n = features.len();
    if n == 0 {
        return Err((
            format!("{prefix}features"),
            "the model has no features".into(),
        ));
    }
    for (field, len) in [
        ("mean", mean.len()),
        ("scale", scale.len()),
        ("weights", weights.len()),
    ] {
        if len != n {
            return Err((
                format!("{prefix}{field}"),
                format!("has {len} values but there are {n} features"),
            ));
        }
    }
    let names = spec.names();
    let mut index = Vec::with_capacity(n);
    for (i, f) in features.iter().enumerate() {
        let at = if f == BGNBD_NO_PURCHASE {
            Some(COMPUTED)
        } else {
            names.iter().position(|x| x == f)
        };
        match at {
            Some(j) if index.contains(&j) => {
                return Err((
                    format!("{prefix}features[{i}]"),
                    format!("feature {f:?} is listed twice"),
                ))
            }
            Some(j) => index.push(j),
            None => {
                return Err((
                    format!("{prefix}features[{i}]"),
                    format!(
                        "unknown feature {f:?}: this service computes {}, {BGNBD_NO_PURCHASE} (activity features follow features.activity_names)",
                        names.join(", ")
                    ),
                ))
            }
        }
    }
    for (i, (m, (s, w))) in mean.iter().zip(scale.iter().zip(weights)).enumerate() {
        if !m.is_finite() {
            return Err((
                format!("{prefix}mean[{i}]"),
                format!("must be finite, got {m}"),
            ));
        }
        if !(s.is_finite() && *s > 0.0) {
            return Err((
                format!("{prefix}scale[{i}]"),
                format!("must be finite and > 0, got {s}"),
            ));
        }
        if !w.is_finite() {
            return Err((
                format!("{prefix}weights[{i}]"),
                format!("must be finite, got {w}"),
            ));
        }
    }
    if !intercept.is_finite() {
        return Err((format!("{prefix}intercept"), "must be finite".into()));
    }
    Ok(index)
}

/// The probability of a [`Linear`] model for a feature vector in spec
/// order (`index`: each model feature's place in it).
fn linear_probability(m: &Linear, index: &[usize], x: &[f64], computed: f64) -> f64 {
    let mut z = m.intercept;
    for (k, j) in index.iter().enumerate() {
        z += m.weights[k] * (value_at(*j, x, computed) - m.mean[k]) / m.scale[k];
    }
    sigmoid(z)
}

/// A model feature's value: `x[j]`, or the computed feature's.
fn value_at(j: usize, x: &[f64], computed: f64) -> f64 {
    if j == COMPUTED {
        computed
    } else {
        x[j]
    }
}

/// The logistic function, stable for large |z|.
pub fn sigmoid(z: f64) -> f64 {
    if z >= 0.0 {
        1.0 / (1.0 + (-z).exp())
    } else {
        let e = z.exp();
        e / (1.0 + e)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::pipeline::event::DAY_MS;

    /// A model whose probability rises with days of silence: 0.5 at 10
    /// days of recency, 0.7 at about 11.7.
    pub(crate) fn silence_model(spec: &FeatureSpec, version: &str) -> Model {
        Model::new(
            ModelFile {
                version: version.into(),
                features: vec!["recency_days".into()],
                mean: vec![10.0],
                scale: vec![2.0],
                weights: vec![1.0],
                intercept: 0.0,
                thresholds: None,
                segments: None,
                population: None,
                min_tenure_days: None,
                bgnbd: None,
                training: None,
            },
            spec,
        )
        .unwrap()
    }

    fn spec() -> FeatureSpec {
        FeatureSpec::new(&[7.0, 30.0], &[], 7 * DAY_MS)
    }

    fn file() -> ModelFile {
        ModelFile {
            version: "t-1".into(),
            features: vec!["recency_days".into(), "sessions_rate_7d".into()],
            mean: vec![10.0, 1.0],
            scale: vec![5.0, 0.5],
            weights: vec![1.5, -2.0],
            intercept: -1.0,
            thresholds: None,
            segments: None,
            population: None,
            min_tenure_days: None,
            bgnbd: None,
            training: None,
        }
    }

    #[test]
    fn scores_with_standardisation_and_reasons() {
        let spec = spec();
        let m = Model::new(file(), &spec).unwrap();
        let mut x = vec![0.0; spec.names().len()];
        let ri = spec
            .names()
            .iter()
            .position(|n| n == "recency_days")
            .unwrap();
        let si = spec
            .names()
            .iter()
            .position(|n| n == "sessions_rate_7d")
            .unwrap();
        x[ri] = 20.0;
        x[si] = 0.0;
        let s = m.score(&x, 3);
        let z: f64 = -1.0 + 1.5 * (20.0 - 10.0) / 5.0 + -2.0 * (0.0 - 1.0) / 0.5;
        assert!((s.probability - 1.0 / (1.0 + (-z).exp())).abs() < 1e-12);
        assert_eq!(s.reasons[0].feature, "sessions");
        assert_eq!(s.reasons[0].top_feature, "sessions_rate_7d");
        assert_eq!(s.reasons[1].feature, "silence");
        assert_eq!(s.reasons[1].top_feature, "recency_days");
        assert_eq!(s.reasons[1].value, 20.0);
    }

    #[test]
    fn refuses_models_that_do_not_match_the_code() {
        let spec = spec();
        let mut f = file();
        f.features[1] = "shoe_size".into();
        let (field, msg) = Model::new(f, &spec).unwrap_err();
        assert_eq!(field, "features[1]");
        assert!(msg.contains("shoe_size"));
        let mut f = file();
        f.weights.pop();
        assert_eq!(Model::new(f, &spec).unwrap_err().0, "weights");
        let mut f = file();
        f.scale[0] = 0.0;
        assert_eq!(Model::new(f, &spec).unwrap_err().0, "scale[0]");
        let mut f = file();
        f.thresholds = Some(Thresholds {
            enter: 0.6,
            exit: 0.7,
            basis: String::new(),
        });
        assert_eq!(Model::new(f, &spec).unwrap_err().0, "thresholds.exit");
    }

    #[test]
    fn load_names_the_file_and_field() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("m.json");
        let mut f = file();
        f.features[0] = "nope".into();
        std::fs::write(&p, serde_json::to_string(&f).unwrap()).unwrap();
        let err = Model::load(&p, &spec()).unwrap_err().to_string();
        assert!(
            err.contains("m.json") && err.contains("features[0]"),
            "{err}"
        );
        std::fs::write(&p, "{").unwrap();
        assert!(matches!(
            Model::load(&p, &spec()),
            Err(ModelError::Parse { .. })
        ));
    }

    #[test]
    fn a_behaviour_is_a_reason_only_when_its_windows_together_raise_the_risk() {
        let spec = spec();
        // The 7-day window alone pushes up, but with the 30-day one the
        // sessions lower this customer's risk: not a reason.
        let mut f = file();
        f.features = vec![
            "sessions_rate_7d".into(),
            "sessions_rate_30d".into(),
            "recency_days".into(),
        ];
        f.mean = vec![1.0, 1.0, 10.0];
        f.scale = vec![1.0, 1.0, 5.0];
        f.weights = vec![0.5, -2.0, 1.0];
        let m = Model::new(f, &spec).unwrap();
        let mut x = vec![0.0; spec.names().len()];
        let at = |n: &str| spec.names().iter().position(|x| x == n).unwrap();
        x[at("sessions_rate_7d")] = 3.0;
        x[at("sessions_rate_30d")] = 3.0;
        x[at("recency_days")] = 20.0;
        let s = m.score(&x, 3);
        assert_eq!(s.reasons.len(), 1, "{:?}", s.reasons);
        assert_eq!(s.reasons[0].feature, "silence");
        // Fewer sessions than usual in both windows: sessions are a reason,
        // their total contribution shown, the window that pushed most named.
        x[at("sessions_rate_7d")] = 0.0;
        x[at("sessions_rate_30d")] = 0.0;
        let s = m.score(&x, 3);
        let r = s.reasons.iter().find(|r| r.feature == "sessions").unwrap();
        assert_eq!(r.top_feature, "sessions_rate_30d");
        assert!((r.contribution - (-0.5 + 2.0)).abs() < 1e-12);
    }

    #[test]
    fn customers_past_onset_are_churned_not_scored() {
        use crate::pipeline::event::{Millis, DAY_MS};
        use crate::pipeline::features::{Latest, SubStatus};
        let spec = spec();
        let mut f = file();
        f.population = Some(Population {
            churned_after_days: 30.0,
            churned_after_missed_days: None,
            horizon_days: 30.0,
            win_back: None,
            return_rates: vec![
                ReturnRate {
                    silent_days_from: 30.0,
                    rate: 0.1,
                    snapshots: 10,
                },
                ReturnRate {
                    silent_days_from: 60.0,
                    rate: 0.02,
                    snapshots: 10,
                },
            ],
        });
        let m = Model::new(f, &spec).unwrap();
        let t0: Millis = 1_700_000_000_000;
        let s = CustomerState {
            first_seen: t0,
            last_seen: t0,
            last_engaged: Some(t0),
            ..Default::default()
        };
        let x = vec![0.0; spec.names().len()];
        assert!(matches!(
            m.assess(&s, &x, t0 + 29 * DAY_MS, 3),
            Assessment::Scored(_)
        ));
        assert_eq!(
            m.assess(&s, &x, t0 + 45 * DAY_MS, 3),
            Assessment::Churned {
                silent_days: 45.0,
                return_probability: 0.1,
                probability: 0.9
            }
        );
        assert!(matches!(
            m.assess(&s, &x, t0 + 90 * DAY_MS, 3),
            Assessment::Churned {
                return_probability: 0.02,
                ..
            }
        ));
        // An active subscription keeps a silent customer in the population;
        // a cancel puts an engaged one out of it for the churn gap.
        let mut sub = s.clone();
        sub.subscription = Some(Latest {
            value: SubStatus::Active,
            at: t0,
            tie: 0,
        });
        assert!(matches!(
            m.assess(&sub, &x, t0 + 45 * DAY_MS, 3),
            Assessment::Scored(_)
        ));
        sub.subscription = Some(Latest {
            value: SubStatus::Cancelled,
            at: t0 + 40 * DAY_MS,
            tie: 0,
        });
        sub.last_engaged = Some(t0 + 44 * DAY_MS);
        assert!(matches!(
            m.assess(&sub, &x, t0 + 45 * DAY_MS, 3),
            Assessment::Churned { .. }
        ));
        assert!(matches!(
            m.assess(&sub, &x, t0 + 71 * DAY_MS, 3),
            Assessment::Scored(_)
        ));
        // A population that makes no sense is refused, naming the field.
        let mut bad = m.file().clone();
        bad.population.as_mut().unwrap().return_rates[1].rate = 1.5;
        assert_eq!(
            Model::new(bad, &spec).unwrap_err().0,
            "population.return_rates[1].rate"
        );
    }

    #[test]
    fn a_win_back_model_puts_churned_customers_on_the_scale_of_active_ones() {
        use crate::pipeline::event::{Millis, DAY_MS};
        let spec = spec();
        let mut f = file();
        f.population = Some(Population {
            churned_after_days: 30.0,
            churned_after_missed_days: None,
            horizon_days: 30.0,
            return_rates: Vec::new(),
            // Staying gone grows with the silence: 0.5 at 60 days.
            win_back: Some(Linear {
                features: vec!["recency_days".into()],
                mean: vec![60.0],
                scale: vec![10.0],
                weights: vec![1.0],
                intercept: 0.0,
            }),
        });
        let m = Model::new(f, &spec).unwrap();
        let t0: Millis = 1_700_000_000_000;
        let s = CustomerState {
            first_seen: t0,
            last_seen: t0,
            last_engaged: Some(t0),
            ..Default::default()
        };
        let gone_at = |days: i64| {
            let now = t0 + days * DAY_MS;
            match m.assess(&s, &spec.extract(&s, now), now, 3) {
                Assessment::Churned {
                    probability,
                    return_probability,
                    ..
                } => {
                    assert!((probability + return_probability - 1.0).abs() < 1e-12);
                    probability
                }
                a => panic!("{days} days silent: {a:?}"),
            }
        };
        assert!((gone_at(60) - 0.5).abs() < 1e-12);
        assert!(gone_at(40) < gone_at(60) && gone_at(60) < gone_at(90));
        // A win-back model that names a feature the code lacks is refused,
        // naming the field.
        let mut bad = m.file().clone();
        bad.population
            .as_mut()
            .unwrap()
            .win_back
            .as_mut()
            .unwrap()
            .features[0] = "x".into();
        assert_eq!(
            Model::new(bad, &spec).unwrap_err().0,
            "population.win_back.features[0]"
        );
    }

    #[test]
    fn sigmoid_is_stable() {
        assert_eq!(sigmoid(1000.0), 1.0);
        assert_eq!(sigmoid(-1000.0), 0.0);
        assert!((sigmoid(0.0) - 0.5).abs() < 1e-15);
    }
}

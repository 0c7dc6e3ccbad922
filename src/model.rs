//! The churn model: a standardised logistic regression read from JSON.
//!
//! The file names its features; they must all be features the code computes
//! (see [`crate::features::FeatureSpec::names`]), otherwise the model is
//! refused at load with the offending field.

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::features::FeatureSpec;

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
    pub segments: Option<crate::segments::Learned>,
    /// How the model was made: training window, data hash, metrics.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub training: Option<serde_json::Value>,
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

/// One feature's part in a score.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct Reason {
    /// Feature name.
    pub feature: String,
    /// The customer's value of it.
    pub value: f64,
    /// Its contribution to the log-odds (weight × standardised value).
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
    /// For each model feature, its index in the spec's feature vector.
    index: Vec<usize>,
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
        let n = file.features.len();
        if n == 0 {
            return Err(("features".into(), "the model has no features".into()));
        }
        for (field, len) in [
            ("mean", file.mean.len()),
            ("scale", file.scale.len()),
            ("weights", file.weights.len()),
        ] {
            if len != n {
                return Err((
                    field.into(),
                    format!("has {len} values but there are {n} features"),
                ));
            }
        }
        let names = spec.names();
        let mut index = Vec::with_capacity(n);
        for (i, f) in file.features.iter().enumerate() {
            match names.iter().position(|x| x == f) {
                Some(j) if index.contains(&j) => {
                    return Err((format!("features[{i}]"), format!("feature {f:?} is listed twice")))
                }
                Some(j) => index.push(j),
                None => {
                    return Err((
                        format!("features[{i}]"),
                        format!(
                            "unknown feature {f:?}: this service computes {} (activity features follow features.activity_names)",
                            names.join(", ")
                        ),
                    ))
                }
            }
        }
        for (i, (m, (s, w))) in file
            .mean
            .iter()
            .zip(file.scale.iter().zip(&file.weights))
            .enumerate()
        {
            if !m.is_finite() {
                return Err((format!("mean[{i}]"), format!("must be finite, got {m}")));
            }
            if !(s.is_finite() && *s > 0.0) {
                return Err((
                    format!("scale[{i}]"),
                    format!("must be finite and > 0, got {s}"),
                ));
            }
            if !w.is_finite() {
                return Err((format!("weights[{i}]"), format!("must be finite, got {w}")));
            }
        }
        if !file.intercept.is_finite() {
            return Err(("intercept".into(), "must be finite".into()));
        }
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
        if file.version.trim().is_empty() {
            return Err(("version".into(), "must not be empty".into()));
        }
        Ok(Self { file, index })
    }

    /// The model's version string.
    pub fn version(&self) -> &str {
        &self.file.version
    }

    /// The file contents.
    pub fn file(&self) -> &ModelFile {
        &self.file
    }

    fn contribution(&self, k: usize, x: &[f64]) -> f64 {
        let f = &self.file;
        f.weights[k] * (x[self.index[k]] - f.mean[k]) / f.scale[k]
    }

    /// The churn probability of a feature vector (in spec order).
    pub fn probability(&self, x: &[f64]) -> f64 {
        let z: f64 = (0..self.index.len()).map(|k| self.contribution(k, x)).sum();
        sigmoid(self.file.intercept + z)
    }

    /// Scores a feature vector (in spec order); keeps the `top` reasons.
    pub fn score(&self, x: &[f64], top: usize) -> Score {
        let f = &self.file;
        let mut z = f.intercept;
        let mut up: Vec<(usize, f64)> = Vec::new();
        for k in 0..self.index.len() {
            let c = self.contribution(k, x);
            z += c;
            if c > 0.0 {
                up.push((k, c));
            }
        }
        up.sort_by(|a, b| b.1.total_cmp(&a.1));
        let reasons = up
            .into_iter()
            .take(top)
            .map(|(k, c)| Reason {
                feature: f.features[k].clone(),
                value: x[self.index[k]],
                contribution: c,
            })
            .collect();
        Score {
            probability: sigmoid(z),
            reasons,
        }
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
    use crate::event::DAY_MS;

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
        assert_eq!(s.reasons[0].feature, "sessions_rate_7d");
        assert_eq!(s.reasons[1].feature, "recency_days");
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
    fn sigmoid_is_stable() {
        assert_eq!(sigmoid(1000.0), 1.0);
        assert_eq!(sigmoid(-1000.0), 0.0);
        assert!((sigmoid(0.0) - 0.5).abs() < 1e-15);
    }
}

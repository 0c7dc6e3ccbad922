//! The experiment readout: from outcome records to what a retention team
//! decides on. Per experiment and arm: customers exposed, retention, the
//! lift of each variant over the holdout (absolute and relative, 95%
//! intervals), a sequential test that stays valid however often it is
//! read, a sample-ratio-mismatch check, guardrails and the sample a lift
//! of a given size needs.
//!
//! The statistics follow GrowthBook's `gbstats` (the frequentist engine,
//! proportions): Welch's t for fixed-horizon intervals and p-values, the
//! delta method for relative lift, the asymptotic confidence sequences of
//! Waudby-Smith et al. (2023) as `SequentialTwoSidedTTest` computes them,
//! and a chi-square sample-ratio check. `src/pipeline/readout/gbstats.json`,
//! written by `scripts/gbstats_fixtures.py` with `gbstats` itself, pins the
//! numbers.
//!
//! The unit is the customer: a customer's first alert in an experiment
//! (earliest alert time, then outcome id) is the one counted, so repeats,
//! redeliveries and the order records arrive in do not change the result.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use statrs::distribution::{ChiSquared, ContinuousCDF, Normal, StudentsT};

use crate::pipeline::experiment::HOLDOUT_ARM;
use crate::pipeline::output::{OutcomeRecord, Retention};

/// How results are judged.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct ReadoutSettings {
    /// Significance level of intervals and tests (two-sided).
    pub alpha: f64,
    /// The sample size the sequential test is tuned for (gbstats'
    /// `sequential_tuning_parameter`).
    pub sequential_tuning: f64,
    /// The lift, in points of retention (0.03 = 3 points), the power line
    /// sizes for.
    pub minimum_lift: f64,
    /// Power the sample size is for.
    pub power: f64,
    /// A sample-ratio-mismatch p-value below this is flagged.
    pub srm_alpha: f64,
}

impl Default for ReadoutSettings {
    fn default() -> Self {
        Self {
            alpha: 0.05,
            sequential_tuning: 5000.0,
            minimum_lift: 0.03,
            power: 0.8,
            srm_alpha: 0.001,
        }
    }
}

/// Counts of a proportion: `n` customers, `hits` of whom had it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Proportion {
    pub n: u64,
    pub hits: u64,
}

impl Proportion {
    pub fn mean(&self) -> f64 {
        if self.n == 0 {
            0.0
        } else {
            self.hits as f64 / self.n as f64
        }
    }

    fn variance(&self) -> f64 {
        let m = self.mean();
        m * (1.0 - m)
    }
}

/// A difference with its fixed-horizon and sequential inference.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, utoipa::ToSchema)]
pub struct Estimate {
    /// Variant minus holdout (absolute), or that over the holdout's rate
    /// (relative).
    pub estimate: f64,
    /// Fixed-horizon interval: valid when read once, at a sample size
    /// chosen in advance.
    pub ci: [f64; 2],
    pub p_value: f64,
    /// Always-valid interval: may be read every day.
    pub sequential_ci: [f64; 2],
    pub sequential_p_value: f64,
}

/// Compares variant `b` with control `a`, as gbstats' `TwoSidedTTest`
/// and `SequentialTwoSidedTTest` do. `None` where gbstats gives its
/// uninformative default: a control rate of 0, or a rate of 0 or 1 (no
/// variance) in either arm.
pub fn compare(
    a: Proportion,
    b: Proportion,
    relative: bool,
    alpha: f64,
    tuning: f64,
) -> Option<Estimate> {
    let (ma, mb, va, vb) = (a.mean(), b.mean(), a.variance(), b.variance());
    if ma == 0.0 || va <= 0.0 || vb <= 0.0 || a.n < 2 || b.n < 2 {
        return None;
    }
    let (na, nb) = (a.n as f64, b.n as f64);
    let (estimate, variance) = if relative {
        (
            (mb - ma) / ma,
            vb / (ma * ma * nb) + va * mb * mb / (ma.powi(4) * na),
        )
    } else {
        (mb - ma, vb / nb + va / na)
    };
    let se = variance.sqrt();
    // Welch–Satterthwaite degrees of freedom (of the plain variances).
    let dof = (vb / nb + va / na).powi(2)
        / (vb * vb / (nb * nb * (nb - 1.0)) + va * va / (na * na * (na - 1.0)));
    let t = StudentsT::new(0.0, 1.0, dof).ok()?;
    let width = t.inverse_cdf(1.0 - alpha / 2.0) * se;
    let p_value = 2.0 * t.sf((estimate / se).abs());
    // Confidence sequence (Waudby-Smith et al. 2023, eqs 9, 155, 161).
    let n = na + nb;
    let rho2 = (-2.0 * alpha.ln() + (1.0 - 2.0 * alpha.ln()).ln()) / tuning;
    let tr2p1 = n * rho2 + 1.0;
    let s2 = variance * n;
    let seq_width = (s2 * 2.0 * tr2p1 * (tr2p1.sqrt() / alpha).ln() / (n * n * rho2)).sqrt();
    let st2 = estimate * estimate * n / variance;
    let e_value = (rho2 * st2 / (2.0 * tr2p1)).exp() / tr2p1.sqrt();
    Some(Estimate {
        estimate,
        ci: [estimate - width, estimate + width],
        p_value,
        sequential_ci: [estimate - seq_width, estimate + seq_width],
        sequential_p_value: (1.0 / e_value).min(1.0),
    })
}

/// The chi-square test of observed counts against expected shares
/// (gbstats' `check_srm`): its p-value; 1 with nothing observed.
pub fn srm_p_value(observed: &[u64], weights: &[f64]) -> f64 {
    let total: f64 = observed.iter().sum::<u64>() as f64;
    let weight: f64 = weights.iter().sum();
    if total == 0.0 || observed.len() < 2 || weight <= 0.0 {
        return 1.0;
    }
    let x: f64 = observed
        .iter()
        .zip(weights)
        .filter(|(_, w)| **w > 0.0)
        .map(|(o, w)| {
            let e = w / weight * total;
            (*o as f64 - e).powi(2) / e
        })
        .sum();
    ChiSquared::new((observed.len() - 1) as f64).map_or(1.0, |c| c.sf(x))
}

/// Customers a pair of arms needs in all (split `share_a : share_b`) for
/// a two-sided test at level `alpha` to find a lift of `lift` points over
/// base rate `base` with probability `power`, each arm's variance at its
/// own rate. With `sequential` (the tuning parameter) the test is the
/// always-valid one, read once at that size: the lift must clear the
/// confidence sequence's half-width, as gbstats' mid-experiment power
/// computes it; without, the fixed-horizon one. `None` when the lift
/// cannot exist at that base rate.
pub fn sample_size(
    base: f64,
    lift: f64,
    (share_a, share_b): (f64, f64),
    alpha: f64,
    power: f64,
    sequential: Option<f64>,
) -> Option<f64> {
    let treated = base + lift;
    if !(0.0..1.0).contains(&base) || !(0.0..=1.0).contains(&treated) || lift == 0.0 {
        return None;
    }
    let fa = share_a / (share_a + share_b);
    if !(fa > 0.0 && fa < 1.0) {
        return None;
    }
    let normal = Normal::new(0.0, 1.0).ok()?;
    let z = normal.inverse_cdf(1.0 - alpha / 2.0);
    let power_at = |n: f64| {
        let variance =
            base * (1.0 - base) / (fa * n) + treated * (1.0 - treated) / ((1.0 - fa) * n);
        let se = variance.sqrt();
        let half = match sequential {
            Some(tuning) => {
                let rho2 = (-2.0 * alpha.ln() + (1.0 - 2.0 * alpha.ln()).ln()) / tuning;
                let tr2p1 = n * rho2 + 1.0;
                (variance * n * 2.0 * tr2p1 * (tr2p1.sqrt() / alpha).ln() / (n * n * rho2)).sqrt()
            }
            None => z * se,
        };
        normal.cdf((lift.abs() - half) / se) + normal.cdf((-lift.abs() - half) / se)
    };
    let (mut lo, mut hi) = (4.0, 8.0);
    while power_at(hi) < power {
        (lo, hi) = (hi, hi * 2.0);
        if hi > 1e12 {
            return None;
        }
    }
    for _ in 0..100 {
        let mid = (lo + hi) / 2.0;
        if power_at(mid) < power {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    Some(hi.ceil())
}

/// One arm of an experiment.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, utoipa::ToSchema)]
pub struct ArmReadout {
    /// `holdout` (the control) or a variant's name.
    pub arm: String,
    /// Customers whose first alert in the experiment has its outcome.
    pub customers: u64,
    pub retained: u64,
    pub retained_rate: f64,
    /// The arm's share of customers, and the share its weights expect.
    pub observed_share: f64,
    pub expected_share: f64,
    /// Guardrails: customers who unsubscribed or complained between the
    /// alert and its outcome.
    pub unsubscribed: u64,
    pub complained: u64,
    /// Against the holdout (variants only, once both arms have outcomes
    /// of each kind).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub absolute_lift: Option<Estimate>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub relative_lift: Option<Estimate>,
    /// `better`, `worse` (the sequential test rejects no difference) or
    /// `inconclusive`; `control` for the holdout.
    pub verdict: String,
    /// Customers the whole experiment needs for this variant's sequential
    /// test to find a lift of `minimum_lift` at the holdout's rate with
    /// the settings' power, and how many more than now.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub customers_needed: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub customers_more: Option<u64>,
}

/// One experiment's readout.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, utoipa::ToSchema)]
pub struct ExperimentReadout {
    pub experiment: String,
    pub customers: u64,
    /// The holdout first, then the variants by name.
    pub arms: Vec<ArmReadout>,
    /// Chi-square p-value of the observed split against the expected one.
    pub srm_p_value: f64,
    /// `srm_p_value` below the settings' `srm_alpha`: the split is not what
    /// the weights say, and the lifts are not to be trusted.
    pub sample_ratio_mismatch: bool,
    /// The lift the power lines size for, in points of retention.
    pub minimum_lift: f64,
}

/// The outcome counted for one customer in one experiment.
#[derive(Debug, Clone)]
struct Entry {
    /// The alert's time: epoch ms when it parses as RFC 3339, then the text.
    alerted_at: (Option<i64>, String),
    outcome_id: String,
    arm: String,
    retained: bool,
    unsubscribed: bool,
    complained: bool,
    split: BTreeMap<String, f64>,
}

/// Outcome records folded into per-experiment counts; the same records in
/// any order, any number of times, give the same readout.
#[derive(Debug, Default, Clone)]
pub struct Tally {
    /// By experiment, then customer: ordered, so sums over customers come
    /// out the same to the last bit on every instance.
    experiments: BTreeMap<String, BTreeMap<String, Entry>>,
    /// Records taken (repeats included).
    pub records: u64,
}

impl Tally {
    /// Takes one outcome record; returns whether the readout may change
    /// (it belongs to an experiment and is the customer's first there).
    pub fn add(&mut self, o: &OutcomeRecord) -> bool {
        self.records += 1;
        let (Some(experiment), Some(arm)) = (&o.experiment, &o.variant) else {
            return false;
        };
        let ms = crate::pipeline::event::parse_rfc3339(&o.alerted_at).ok();
        let entry = Entry {
            alerted_at: (ms, o.alerted_at.clone()),
            outcome_id: o.outcome_id.clone(),
            arm: arm.clone(),
            retained: o.outcome == Retention::Retained,
            unsubscribed: o.unsubscribed,
            complained: o.complained,
            split: o.split.clone().unwrap_or_default(),
        };
        let customers = self.experiments.entry(experiment.clone()).or_default();
        match customers.get(&o.customer_id) {
            Some(e) if (&e.alerted_at, &e.outcome_id) <= (&entry.alerted_at, &entry.outcome_id) => {
                false
            }
            _ => {
                customers.insert(o.customer_id.clone(), entry);
                true
            }
        }
    }

    /// Forgets an erased customer's outcomes; returns whether any were
    /// counted.
    pub fn forget(&mut self, customer_id: &str) -> bool {
        let mut any = false;
        for customers in self.experiments.values_mut() {
            any |= customers.remove(customer_id).is_some();
        }
        any
    }

    /// Names of the experiments seen.
    pub fn experiments(&self) -> impl Iterator<Item = &str> {
        self.experiments.keys().map(String::as_str)
    }

    /// The readout of every experiment, by name.
    pub fn readout(&self, settings: &ReadoutSettings) -> Vec<ExperimentReadout> {
        self.experiments
            .iter()
            .map(|(name, customers)| readout_of(name, customers, settings))
            .collect()
    }
}

fn readout_of(
    name: &str,
    customers: &BTreeMap<String, Entry>,
    s: &ReadoutSettings,
) -> ExperimentReadout {
    #[derive(Default)]
    struct Counts {
        n: u64,
        retained: u64,
        unsubscribed: u64,
        complained: u64,
        expected: f64,
    }
    let mut arms: BTreeMap<&str, Counts> = BTreeMap::new();
    arms.entry(HOLDOUT_ARM).or_default();
    for e in customers.values() {
        let c = arms.entry(&e.arm).or_default();
        c.n += 1;
        c.retained += u64::from(e.retained);
        c.unsubscribed += u64::from(e.unsubscribed);
        c.complained += u64::from(e.complained);
        for arm in e.split.keys() {
            arms.entry(arm).or_default();
        }
    }
    // Expected shares: the mean of the splits in force at each alert.
    let total = customers.len() as u64;
    for e in customers.values() {
        for (arm, share) in &e.split {
            if let Some(c) = arms.get_mut(arm.as_str()) {
                c.expected += share / total as f64;
            }
        }
    }
    let order: Vec<&str> = std::iter::once(HOLDOUT_ARM)
        .chain(arms.keys().copied().filter(|a| *a != HOLDOUT_ARM))
        .collect();
    let observed: Vec<u64> = order.iter().map(|a| arms[a].n).collect();
    let expected: Vec<f64> = order.iter().map(|a| arms[a].expected).collect();
    let srm = srm_p_value(&observed, &expected);
    let control = &arms[HOLDOUT_ARM];
    let control_p = Proportion {
        n: control.n,
        hits: control.retained,
    };
    let control_share = control.expected;
    let rows = order
        .iter()
        .map(|arm| {
            let c = &arms[arm];
            let p = Proportion {
                n: c.n,
                hits: c.retained,
            };
            let is_control = *arm == HOLDOUT_ARM;
            let vs = |relative| {
                (!is_control)
                    .then(|| compare(control_p, p, relative, s.alpha, s.sequential_tuning))
                    .flatten()
            };
            let absolute_lift = vs(false);
            let verdict = match (&absolute_lift, is_control) {
                (_, true) => "control",
                (Some(l), _) if l.sequential_p_value < s.alpha && l.estimate > 0.0 => "better",
                (Some(l), _) if l.sequential_p_value < s.alpha && l.estimate < 0.0 => "worse",
                _ => "inconclusive",
            };
            let needed = (!is_control && control.n > 0)
                .then(|| {
                    sample_size(
                        control_p.mean(),
                        s.minimum_lift,
                        (control_share, c.expected),
                        s.alpha,
                        s.power,
                        Some(s.sequential_tuning),
                    )
                    .map(|pair| (pair / (control_share + c.expected)).ceil() as u64)
                })
                .flatten();
            ArmReadout {
                arm: arm.to_string(),
                customers: c.n,
                retained: c.retained,
                retained_rate: p.mean(),
                observed_share: if total == 0 {
                    0.0
                } else {
                    c.n as f64 / total as f64
                },
                expected_share: c.expected,
                unsubscribed: c.unsubscribed,
                complained: c.complained,
                relative_lift: vs(true),
                absolute_lift,
                verdict: verdict.into(),
                customers_needed: needed,
                customers_more: needed.map(|n| n.saturating_sub(total)),
            }
        })
        .collect();
    ExperimentReadout {
        experiment: name.to_string(),
        customers: total,
        arms: rows,
        srm_p_value: srm,
        sample_ratio_mismatch: srm < s.srm_alpha,
        minimum_lift: s.minimum_lift,
    }
}

#[cfg(test)]
mod tests;

//! How well scores rank and where to cut them: ROC and PR AUC, the ROC
//! curve, calibration, figures at a threshold, and the choice of the alert
//! thresholds on the validation date.

use serde::Serialize;

use crate::pipeline::model::Thresholds;

/// How the alert thresholds are chosen on the validation date.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum ThresholdTarget {
    /// The lowest threshold whose alerts are at least this precise.
    Precision(f64),
    /// The threshold that alerts this share of the population.
    Budget(f64),
}

/// One bin of a calibration table.
#[derive(Debug, Clone, Serialize)]
pub struct CalibrationBin {
    pub from: f64,
    pub to: f64,
    pub count: usize,
    pub mean_predicted: f64,
    pub observed_rate: f64,
}

/// Precision, recall and reach of alerting at a threshold.
#[derive(Debug, Clone, Serialize)]
pub struct AtThreshold {
    pub threshold: f64,
    /// Share of the population at or above the threshold.
    pub share: f64,
    pub precision: f64,
    pub recall: f64,
    /// Precision over the churn rate.
    pub lift: f64,
    /// Churn rate of customers scoring within 0.05 of the threshold: what a
    /// new alert, fired at the crossing, can expect.
    pub precision_near: f64,
}

/// How well scores predict the outcome on one set of snapshots.
#[derive(Debug, Clone, Serialize)]
pub struct Evaluation {
    pub examples: usize,
    pub churn_rate: f64,
    pub roc_auc: f64,
    /// Average precision.
    pub pr_auc: f64,
    pub brier: f64,
    pub log_loss: f64,
    /// Expected calibration error over ten equal-width bins.
    pub calibration_error: f64,
    pub calibration: Vec<CalibrationBin>,
    /// Alerting the top 10% of scores.
    pub top_decile: AtThreshold,
    /// Alerting at the chosen enter threshold.
    pub at_enter: Option<AtThreshold>,
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

/// Indices by score, highest first (ties by index, so results are stable).
fn by_score_desc(scores: &[f64]) -> Vec<usize> {
    let mut idx: Vec<usize> = (0..scores.len()).collect();
    idx.sort_by(|a, b| scores[*b].total_cmp(&scores[*a]).then(a.cmp(b)));
    idx
}

/// Average precision: the mean of precision at each positive, scores
/// descending, tied scores taken as one step.
pub fn pr_auc(scores: &[f64], labels: &[bool]) -> f64 {
    let idx = by_score_desc(scores);
    let total = labels.iter().filter(|l| **l).count();
    if total == 0 {
        return f64::NAN;
    }
    let (mut tp, mut seen, mut ap) = (0usize, 0usize, 0.0);
    let mut i = 0;
    while i < idx.len() {
        let mut j = i;
        let mut new_tp = 0;
        while j < idx.len() && scores[idx[j]] == scores[idx[i]] {
            new_tp += usize::from(labels[idx[j]]);
            j += 1;
        }
        tp += new_tp;
        seen += j - i;
        ap += new_tp as f64 / total as f64 * tp as f64 / seen as f64;
        i = j;
    }
    ap
}

/// Points of the ROC curve (false positive rate, true positive rate).
pub fn roc_curve(scores: &[f64], labels: &[bool]) -> Vec<(f64, f64)> {
    let idx = by_score_desc(scores);
    let pos = labels.iter().filter(|l| **l).count().max(1) as f64;
    let neg = (labels.len() as f64 - pos).max(1.0);
    let (mut tp, mut fp) = (0.0, 0.0);
    let mut pts = vec![(0.0, 0.0)];
    let mut i = 0;
    while i < idx.len() {
        let mut j = i;
        while j < idx.len() && scores[idx[j]] == scores[idx[i]] {
            if labels[idx[j]] {
                tp += 1.0;
            } else {
                fp += 1.0;
            }
            j += 1;
        }
        pts.push((fp / neg, tp / pos));
        i = j;
    }
    // Enough points to draw, not one per customer.
    let step = (pts.len() / 400).max(1);
    let last = *pts.last().expect("non-empty");
    let mut out: Vec<_> = pts.into_iter().step_by(step).collect();
    if out.last() != Some(&last) {
        out.push(last);
    }
    out
}

/// Precision, recall and share at `threshold`.
pub fn at_threshold(scores: &[f64], labels: &[bool], threshold: f64) -> AtThreshold {
    let total = labels.iter().filter(|l| **l).count();
    let (mut n, mut tp, mut near, mut near_tp) = (0usize, 0usize, 0usize, 0usize);
    for (s, l) in scores.iter().zip(labels) {
        if *s >= threshold {
            n += 1;
            tp += usize::from(*l);
        }
        if (s - threshold).abs() <= 0.05 {
            near += 1;
            near_tp += usize::from(*l);
        }
    }
    let rate = total as f64 / labels.len().max(1) as f64;
    let precision = if n == 0 { 0.0 } else { tp as f64 / n as f64 };
    AtThreshold {
        threshold,
        share: n as f64 / labels.len().max(1) as f64,
        precision,
        recall: if total == 0 {
            0.0
        } else {
            tp as f64 / total as f64
        },
        lift: if rate > 0.0 { precision / rate } else { 0.0 },
        precision_near: if near == 0 {
            0.0
        } else {
            near_tp as f64 / near as f64
        },
    }
}

/// Scores how well `scores` (probabilities) predict `labels`.
pub fn evaluate(scores: &[f64], labels: &[bool], enter: Option<f64>) -> Evaluation {
    let n = scores.len().max(1) as f64;
    let mut bins: Vec<(usize, f64, f64)> = vec![(0, 0.0, 0.0); 10];
    for (p, l) in scores.iter().zip(labels) {
        let b = ((p * 10.0) as usize).min(9);
        bins[b].0 += 1;
        bins[b].1 += p;
        bins[b].2 += f64::from(u8::from(*l));
    }
    let calibration: Vec<CalibrationBin> = bins
        .iter()
        .enumerate()
        .map(|(i, (c, sp, sl))| CalibrationBin {
            from: i as f64 / 10.0,
            to: (i + 1) as f64 / 10.0,
            count: *c,
            mean_predicted: if *c > 0 { sp / *c as f64 } else { 0.0 },
            observed_rate: if *c > 0 { sl / *c as f64 } else { 0.0 },
        })
        .collect();
    let calibration_error = calibration
        .iter()
        .map(|b| b.count as f64 / n * (b.mean_predicted - b.observed_rate).abs())
        .sum();
    let idx = by_score_desc(scores);
    let top = idx
        .get((scores.len() / 10).max(1) - 1)
        .map_or(1.0, |i| scores[*i]);
    let eps = 1e-12;
    Evaluation {
        examples: scores.len(),
        churn_rate: labels.iter().filter(|l| **l).count() as f64 / n,
        roc_auc: roc_auc(scores, labels),
        pr_auc: pr_auc(scores, labels),
        brier: scores
            .iter()
            .zip(labels)
            .map(|(p, l)| (p - f64::from(u8::from(*l))).powi(2))
            .sum::<f64>()
            / n,
        log_loss: -scores
            .iter()
            .zip(labels)
            .map(|(p, l)| {
                let p = p.clamp(eps, 1.0 - eps);
                if *l {
                    p.ln()
                } else {
                    (1.0 - p).ln()
                }
            })
            .sum::<f64>()
            / n,
        calibration_error,
        calibration,
        top_decile: at_threshold(scores, labels, top),
        at_enter: enter.map(|t| at_threshold(scores, labels, t)),
    }
}

/// The least share of the customers a precision target must alert on the
/// validation date; below it, the target falls back to twice the base rate
/// (said in the thresholds' basis).
pub const MIN_ALERT_SHARE: f64 = 0.01;

/// Chooses enter and exit thresholds on validation scores.
///
/// An alert fires when a customer's score crosses the enter threshold, so
/// the precision that matters is that of customers *at* the threshold, not
/// of everyone above it (who include the near-certain). For a precision
/// target the enter threshold is therefore the lowest score at which the
/// churn rate, fitted as a non-decreasing function of the score (isotonic
/// regression, centred: each pooled block's rate stands at the block's
/// mean score and the fit is linear between them, so that a coarse step
/// does not jump the threshold to the top of a wide block; Oron and
/// Flournoy, "Centered isotonic regression", 2017), reaches the target; the
/// exit threshold is where it falls to the validation date's base rate. For an alert budget, enter alerts that share of the validation
/// population and exit 1.5 times it.
pub fn choose_thresholds(scores: &[f64], labels: &[bool], target: ThresholdTarget) -> Thresholds {
    let idx = by_score_desc(scores);
    let n = idx.len();
    let score_at = |k: usize| scores[idx[k.min(n.saturating_sub(1))]];
    // The churn rate as a non-decreasing function of the score (isotonic
    // regression by pool-adjacent-violators): blocks of (lowest score, rows,
    // churned, sum of scores), ascending. Sparse stretches pool with their
    // neighbours.
    let mut blocks: Vec<(f64, usize, usize, f64)> = Vec::new();
    for i in idx.iter().rev() {
        blocks.push((scores[*i], 1, usize::from(labels[*i]), scores[*i]));
        while blocks.len() >= 2 {
            let (b, a) = (blocks[blocks.len() - 1], blocks[blocks.len() - 2]);
            // Merge while the lower block's rate is not below the upper's.
            if a.2 * b.1 < b.2 * a.1 {
                break;
            }
            blocks.pop();
            let last = blocks.last_mut().expect("two blocks");
            *last = (a.0.min(b.0), a.1 + b.1, a.2 + b.2, a.3 + b.3);
        }
    }
    // The lowest score from which the fitted churn rate is at least p: in
    // the first block that reaches it, or, linearly, between the centres of
    // that block and the one below.
    let rate = |b: &(f64, usize, usize, f64)| b.2 as f64 / b.1 as f64;
    let centre = |b: &(f64, usize, usize, f64)| b.3 / b.1 as f64;
    let deepest = |p: f64| {
        let k = blocks.iter().position(|b| rate(b) >= p)?;
        Some(match k.checked_sub(1).map(|j| &blocks[j]) {
            None => blocks[k].0,
            Some(below) => {
                let (r0, r1) = (rate(below), rate(&blocks[k]));
                let (s0, s1) = (centre(below), centre(&blocks[k]));
                s0 + (p - r0) / (r1 - r0) * (s1 - s0)
            }
        })
    };
    let base = labels.iter().filter(|l| **l).count() as f64 / n.max(1) as f64;
    let share_at = |t: f64| scores.iter().filter(|s| **s >= t).count() as f64 / n.max(1) as f64;
    // A precision target that only a sliver of the customers reach would
    // alert almost no one: the target falls back to twice the base rate.
    let (target, fell_back) = match target {
        ThresholdTarget::Precision(p) if 2.0 * base < p => {
            let share = deepest(p).map_or(0.0, share_at);
            if share < MIN_ALERT_SHARE {
                let why = format!(
                    "the target precision {p} is reached by only {:.2}% of the customers on the validation date, too few to act on (the base rate is {base:.3}); ",
                    share * 100.0
                );
                (ThresholdTarget::Precision(2.0 * base), why)
            } else {
                (target, String::new())
            }
        }
        _ => (target, String::new()),
    };
    let (enter, exit, basis) = match target {
        ThresholdTarget::Precision(p) => match deepest(p) {
            Some(enter) => {
                // Re-armed only once the customer's risk is back down to
                // the population's: a wide band, so that a customer whose
                // score wobbles about the threshold is not alerted again.
                let exit = deepest(base.min(p)).unwrap_or(0.0);
                (
                    enter,
                    exit,
                    format!("{fell_back}lowest score whose churn rate (centred isotonic fit on the validation date) is >= {p:.3}{}, alerting {:.1}% of the customers there; exit where it falls to the base rate {base:.3}", if fell_back.is_empty() { "" } else { " (twice the base rate)" }, share_at(enter) * 100.0),
                )
            }
            None => {
                let k = n / 20;
                (
                    score_at(k),
                    score_at(k + k / 2),
                    format!("no score band reaches a churn rate of {p} on the validation date; fell back to alerting the top 5%"),
                )
            }
        },
        ThresholdTarget::Budget(share) => {
            let k = ((share * n as f64).ceil() as usize).max(1) - 1;
            (
                score_at(k),
                score_at(k + k / 2),
                format!("alert budget: the top {:.1}% of the validation date; exit at 1.5 times that reach", share * 100.0),
            )
        }
    };
    // Keep a band between the two, so a score that wobbles does not flap.
    let exit = exit.min(enter - 0.05).max(0.0);
    Thresholds { enter, exit, basis }
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
        assert_eq!(pr_auc(&[0.1, 0.2, 0.8, 0.9], &labels), 1.0);
        // Positives ranked 2nd and 4th: (1/2 + 2/4) / 2.
        assert_eq!(
            pr_auc(&[0.9, 0.8, 0.2, 0.1], &[false, true, false, true]),
            0.5
        );
        assert_eq!(pr_auc(&[0.5; 4], &labels), 0.5);
    }

    #[test]
    fn a_precision_only_a_sliver_reaches_falls_back_to_twice_the_base_rate() {
        // 1,000 customers: the top 3 churn, and one in 20 of the upper 300;
        // a 1.8% base rate. A 0.45 target alerts 0.3%: too few.
        let scores: Vec<f64> = (0..1000).map(|i| i as f64 / 1000.0).collect();
        let labels: Vec<bool> = (0..1000)
            .map(|i| i >= 997 || (i > 700 && i % 20 == 0))
            .collect();
        let t = choose_thresholds(&scores, &labels, ThresholdTarget::Precision(0.45));
        let share = scores.iter().filter(|s| **s >= t.enter).count() as f64 / 1000.0;
        assert!((MIN_ALERT_SHARE..0.5).contains(&share), "{share} {t:?}");
        assert!(t.basis.contains("too few to act on"), "{}", t.basis);
        // A target that a fair share reaches is kept.
        let t = choose_thresholds(&scores, &labels, ThresholdTarget::Precision(0.04));
        assert!(!t.basis.contains("too few"), "{}", t.basis);
    }

    #[test]
    fn calibration_and_top_decile() {
        // 100 scores: 0.05 (none churn) x 50, 0.95 (all churn) x 50.
        let scores: Vec<f64> = (0..100).map(|i| if i < 50 { 0.05 } else { 0.95 }).collect();
        let labels: Vec<bool> = (0..100).map(|i| i >= 50).collect();
        let e = evaluate(&scores, &labels, Some(0.5));
        assert!((e.calibration_error - 0.05).abs() < 1e-9);
        assert_eq!(e.calibration[0].count, 50);
        assert_eq!(e.calibration[9].observed_rate, 1.0);
        assert_eq!(e.top_decile.precision, 1.0);
        assert!((e.top_decile.lift - 2.0).abs() < 1e-9);
        let a = e.at_enter.unwrap();
        assert_eq!((a.precision, a.recall, a.share), (1.0, 1.0, 0.5));
    }

    #[test]
    fn the_threshold_lies_between_the_centres_of_the_blocks_about_the_target() {
        // Two flat blocks: scores 0.1..0.3 churn at 0.2, scores 0.6..0.8 at
        // 0.6 (centres 0.2 and 0.7). A target of 0.4 is met half-way
        // between the centres (0.45), not at the upper block's lowest
        // score (0.6).
        let mut scores = Vec::new();
        let mut labels = Vec::new();
        for i in 0..100 {
            scores.push(0.1 + 0.2 * i as f64 / 99.0);
            labels.push(i % 5 == 0);
            scores.push(0.6 + 0.2 * i as f64 / 99.0);
            labels.push(i % 5 < 3);
        }
        let t = choose_thresholds(&scores, &labels, ThresholdTarget::Precision(0.4));
        assert!((t.enter - 0.45).abs() < 1e-9, "{t:?}");
        // A target the lowest block already meets: its lowest score.
        let t = choose_thresholds(&scores, &labels, ThresholdTarget::Precision(0.1));
        assert!((t.enter - 0.1).abs() < 1e-9, "{t:?}");
    }

    #[test]
    fn thresholds_meet_the_target_on_validation() {
        // A calibrated score: score i/2000 churns with probability i/2000.
        let scores: Vec<f64> = (0..2000).map(|i| i as f64 / 2000.0).collect();
        let labels: Vec<bool> = (0..2000u64)
            .map(|i| (crate::pipeline::event::stable_hash(&[&i.to_be_bytes()]) % 2000) < i)
            .collect();
        let t = choose_thresholds(&scores, &labels, ThresholdTarget::Precision(0.8));
        // Customers at the threshold churn at about the target rate...
        assert!((t.enter - 0.8).abs() < 0.06, "{t:?}");
        let at = at_threshold(&scores, &labels, t.enter);
        assert!((at.precision_near - 0.8).abs() < 0.06, "{at:?}");
        // ...and everyone above it at a higher one.
        assert!(at.precision > 0.85, "{at:?}");
        // Re-armed where the rate is back to the base rate (here 0.5).
        assert!(
            t.exit <= t.enter - 0.05 && (t.exit - 0.5).abs() < 0.06,
            "{t:?}"
        );
        let b = choose_thresholds(&scores, &labels, ThresholdTarget::Budget(0.1));
        assert!((at_threshold(&scores, &labels, b.enter).share - 0.1).abs() < 0.002);
        assert!(b.exit < b.enter);
    }
}

//! Who a customer is, beside how likely they are to leave: RFM scores and a
//! named segment, a lifecycle stage and a lifetime value estimate, all in
//! event time and computed from the same state the model scores.
//!
//! RFM: each dimension is scored 1–5 against four ascending cut points
//! (quintile boundaries learned by `train` and stored in the model file, or
//! configured). Recency is days since the last purchase (fewer is better),
//! frequency the number of purchases, monetary the net spend.
//!
//! Segments, first rule that holds (R, F, M are the 1–5 scores):
//!
//! | segment | rule |
//! |---|---|
//! | champions | R ≥ 4, F ≥ 4, M ≥ 4 |
//! | loyal | R ≥ 3, F ≥ 4 |
//! | new | R ≥ 4, F = 1 |
//! | potential | R ≥ 4 |
//! | at_risk | R ≤ 2, F ≥ 3 |
//! | hibernating | R = 2 |
//! | lost | R = 1 |
//! | needs_attention | everything else (R = 3, F ≤ 3) |
//!
//! Lifecycle, first that holds: `churned` (no purchase, session or activity
//! for `churned_after_days`), `at_risk` (alerted and not yet back below the
//! exit threshold), `new` (first seen less than `new_days` ago),
//! `reactivated` (came back within `reactivated_days` after a silence of at
//! least `churned_after_days`), else `active`.
//!
//! Lifetime value: `margin × (average order value × purchases per year +
//! 12 × subscription monthly value) × expected lifetime in years −
//! acquisition cost`. Purchases per year are counted over the customer's
//! tenure (at least 30 days). The expected lifetime is configured or learned
//! by `train` as 1 / annual churn rate of the training population.

use serde::{Deserialize, Serialize};

use crate::pipeline::event::{Millis, DAY_MS};
use crate::pipeline::features::CustomerState;

/// Segment names, in rule order.
pub const SEGMENTS: [&str; 8] = [
    "champions",
    "loyal",
    "new",
    "potential",
    "at_risk",
    "hibernating",
    "lost",
    "needs_attention",
];

/// Lifecycle stages.
pub const LIFECYCLE: [&str; 5] = ["new", "active", "at_risk", "churned", "reactivated"];

/// Shortest tenure purchase frequency is counted over.
const MIN_TENURE_MS: Millis = 30 * DAY_MS;

/// Four ascending cut points per RFM dimension.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RfmBounds {
    /// Days since the last purchase: at or below the first cut scores 5.
    pub recency_days: [f64; 4],
    /// Purchase count: above the last cut scores 5.
    pub frequency: [f64; 4],
    /// Net spend, base currency: above the last cut scores 5.
    pub monetary: [f64; 4],
}

impl Default for RfmBounds {
    fn default() -> Self {
        Self {
            recency_days: [14.0, 30.0, 60.0, 120.0],
            frequency: [1.0, 2.0, 4.0, 8.0],
            monetary: [50.0, 150.0, 400.0, 1000.0],
        }
    }
}

impl RfmBounds {
    /// The first cut list that is not ascending, by name.
    pub fn check(&self) -> Result<(), String> {
        for (name, cuts) in [
            ("recency_days", &self.recency_days),
            ("frequency", &self.frequency),
            ("monetary", &self.monetary),
        ] {
            if cuts.iter().any(|c| !c.is_finite()) || cuts.windows(2).any(|w| w[0] > w[1]) {
                return Err(format!(
                    "{name}: cut points must be finite and ascending, got {cuts:?}"
                ));
            }
        }
        Ok(())
    }
}

/// What `train` learns for segments and value, stored in the model file.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Learned {
    /// Quintile boundaries of the training population.
    pub rfm: RfmBounds,
    /// 1 / annual churn rate of the training population.
    pub expected_lifetime_years: f64,
}

/// RFM scores, 1–5 each.
#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rfm {
    pub r: u8,
    pub f: u8,
    pub m: u8,
}

/// Segment, lifecycle and value of one customer at one time.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct Profile {
    pub rfm: Rfm,
    pub segment: String,
    pub lifecycle: String,
    /// Estimated customer lifetime value, base currency.
    pub clv: f64,
    /// `low`, `medium` or `high` (see `segments.value_bands`).
    pub value_band: String,
}

/// The settings the profile is computed with.
#[derive(Debug, Clone, PartialEq)]
pub struct Segmenter {
    pub rfm: RfmBounds,
    pub new_ms: Millis,
    pub churned_after_ms: Millis,
    pub reactivated_ms: Millis,
    pub expected_lifetime_years: f64,
    pub acquisition_cost: f64,
    pub margin: f64,
    /// CLV at which `medium` and `high` start.
    pub value_bands: [f64; 2],
}

impl Default for Segmenter {
    fn default() -> Self {
        Self {
            rfm: RfmBounds::default(),
            new_ms: 30 * DAY_MS,
            churned_after_ms: 60 * DAY_MS,
            reactivated_ms: 30 * DAY_MS,
            expected_lifetime_years: 3.0,
            acquisition_cost: 0.0,
            margin: 1.0,
            value_bands: [200.0, 1000.0],
        }
    }
}

/// Score 1–5 of `x` against ascending cuts; `higher_is_better` says which
/// end scores 5.
fn quintile(x: f64, cuts: &[f64; 4], higher_is_better: bool) -> u8 {
    let above = cuts.iter().filter(|c| x > **c).count() as u8; // 0..=4
    if higher_is_better {
        1 + above
    } else {
        5 - above
    }
}

/// The segment of an RFM score (see the module table).
pub fn segment(rfm: Rfm) -> &'static str {
    let Rfm { r, f, m } = rfm;
    if r >= 4 && f >= 4 && m >= 4 {
        "champions"
    } else if r >= 3 && f >= 4 {
        "loyal"
    } else if r >= 4 && f == 1 {
        "new"
    } else if r >= 4 {
        "potential"
    } else if r <= 2 && f >= 3 {
        "at_risk"
    } else if r == 2 {
        "hibernating"
    } else if r == 1 {
        "lost"
    } else {
        "needs_attention"
    }
}

impl Segmenter {
    /// RFM scores of `s` at `now`.
    pub fn rfm(&self, s: &CustomerState, now: Millis) -> Rfm {
        let days = |ms: Millis| ms.max(0) as f64 / DAY_MS as f64;
        let recency = days(now - s.last_purchase.unwrap_or(s.first_seen));
        let recency = if s.purchases == 0 {
            f64::INFINITY
        } else {
            recency
        };
        Rfm {
            r: quintile(recency, &self.rfm.recency_days, false),
            f: quintile(s.purchases as f64, &self.rfm.frequency, true),
            m: quintile(s.gross - s.refunded, &self.rfm.monetary, true),
        }
    }

    /// Lifecycle stage at `now` (see the module docs).
    pub fn lifecycle(&self, s: &CustomerState, now: Millis) -> &'static str {
        let engaged = s.last_engaged.unwrap_or(s.first_seen);
        if now - engaged >= self.churned_after_ms {
            "churned"
        } else if s.alert.active {
            "at_risk"
        } else if now - s.first_seen < self.new_ms {
            "new"
        } else if s
            .returned_at
            .is_some_and(|t| now - t < self.reactivated_ms && now >= t)
        {
            "reactivated"
        } else {
            "active"
        }
    }

    /// Estimated lifetime value at `now` (see the module docs).
    pub fn clv(&self, s: &CustomerState, now: Millis) -> f64 {
        let tenure_years = (now - s.first_seen).max(MIN_TENURE_MS) as f64 / (365.0 * DAY_MS as f64);
        let aov = if s.purchases > 0 {
            (s.gross - s.refunded).max(0.0) / s.purchases as f64
        } else {
            0.0
        };
        let per_year = s.purchases as f64 / tenure_years;
        let subscribed = s
            .subscription
            .as_ref()
            .is_some_and(|l| l.value == crate::pipeline::features::SubStatus::Active);
        let plan = if subscribed {
            s.plan_value.as_ref().map_or(0.0, |l| l.value)
        } else {
            0.0
        };
        self.margin * (aov * per_year + 12.0 * plan) * self.expected_lifetime_years
            - self.acquisition_cost
    }

    /// The value band of a CLV.
    pub fn value_band(&self, clv: f64) -> &'static str {
        if clv >= self.value_bands[1] {
            "high"
        } else if clv >= self.value_bands[0] {
            "medium"
        } else {
            "low"
        }
    }

    /// Everything at once.
    pub fn profile(&self, s: &CustomerState, now: Millis) -> Profile {
        let rfm = self.rfm(s, now);
        let clv = self.clv(s, now);
        Profile {
            rfm,
            segment: segment(rfm).into(),
            lifecycle: self.lifecycle(s, now).into(),
            clv: (clv * 100.0).round() / 100.0,
            value_band: self.value_band(clv).into(),
        }
    }
}

/// Quintile cut points (20/40/60/80%) of `xs` (sorted in place).
pub fn quintile_cuts(xs: &mut [f64]) -> [f64; 4] {
    xs.sort_by(f64::total_cmp);
    let at = |q: f64| {
        if xs.is_empty() {
            0.0
        } else {
            xs[((xs.len() - 1) as f64 * q).round() as usize]
        }
    };
    [at(0.2), at(0.4), at(0.6), at(0.8)]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipeline::features::{AlertState, Latest, SubStatus};

    const NOW: Millis = 1_800_000_000_000;

    fn customer(
        purchases: u32,
        spend: f64,
        last_purchase_days: i64,
        tenure_days: i64,
    ) -> CustomerState {
        CustomerState {
            first_seen: NOW - tenure_days * DAY_MS,
            last_seen: NOW - last_purchase_days * DAY_MS,
            last_engaged: Some(NOW - last_purchase_days * DAY_MS),
            last_purchase: (purchases > 0).then_some(NOW - last_purchase_days * DAY_MS),
            purchases,
            gross: spend,
            ..Default::default()
        }
    }

    #[test]
    fn quintiles_score_each_end_correctly() {
        let cuts = [1.0, 2.0, 4.0, 8.0];
        assert_eq!(quintile(0.0, &cuts, true), 1);
        assert_eq!(quintile(1.0, &cuts, true), 1);
        assert_eq!(quintile(3.0, &cuts, true), 3);
        assert_eq!(quintile(9.0, &cuts, true), 5);
        assert_eq!(quintile(0.0, &cuts, false), 5);
        assert_eq!(quintile(9.0, &cuts, false), 1);
    }

    #[test]
    fn every_rfm_combination_has_a_documented_segment() {
        let mut seen = std::collections::BTreeSet::new();
        for r in 1..=5 {
            for f in 1..=5 {
                for m in 1..=5 {
                    let s = segment(Rfm { r, f, m });
                    assert!(SEGMENTS.contains(&s));
                    seen.insert(s);
                }
            }
        }
        assert_eq!(seen.len(), SEGMENTS.len(), "every segment is reachable");
    }

    #[test]
    fn segments_of_typical_customers() {
        let g = Segmenter::default();
        let seg = |s: &CustomerState| segment(g.rfm(s, NOW));
        assert_eq!(seg(&customer(20, 3000.0, 3, 400)), "champions");
        assert_eq!(seg(&customer(12, 300.0, 40, 400)), "loyal");
        assert_eq!(seg(&customer(1, 30.0, 2, 5)), "new");
        assert_eq!(seg(&customer(5, 200.0, 100, 400)), "at_risk");
        assert_eq!(seg(&customer(1, 20.0, 300, 400)), "lost");
        assert_eq!(seg(&customer(0, 0.0, 10, 400)), "lost", "never bought");
    }

    #[test]
    fn lifecycle_stages_follow_event_time() {
        let g = Segmenter::default();
        let mut s = customer(3, 90.0, 5, 10);
        assert_eq!(g.lifecycle(&s, NOW), "new");
        assert_eq!(g.lifecycle(&s, NOW + 30 * DAY_MS), "active");
        assert_eq!(g.lifecycle(&s, NOW + 55 * DAY_MS), "churned");
        s.alert = AlertState {
            active: true,
            ..Default::default()
        };
        assert_eq!(g.lifecycle(&s, NOW + 30 * DAY_MS), "at_risk");
        s.alert.active = false;
        s.returned_at = Some(NOW + 20 * DAY_MS);
        s.last_engaged = Some(NOW + 20 * DAY_MS);
        assert_eq!(g.lifecycle(&s, NOW + 40 * DAY_MS), "reactivated");
        assert_eq!(g.lifecycle(&s, NOW + 60 * DAY_MS), "active");
    }

    #[test]
    fn clv_is_order_value_times_frequency_times_lifetime_minus_cost() {
        let g = Segmenter {
            acquisition_cost: 50.0,
            margin: 0.5,
            ..Default::default()
        };
        // 10 orders of 40 over 365 days, 3-year lifetime.
        let s = customer(10, 400.0, 1, 365);
        let want = 0.5 * (40.0 * 10.0) * 3.0 - 50.0;
        assert!((g.clv(&s, NOW) - want).abs() < 1e-9);
        let mut sub = s.clone();
        sub.subscription = Some(Latest {
            value: SubStatus::Active,
            at: NOW,
            tie: 0,
        });
        sub.plan_value = Some(Latest {
            value: 10.0,
            at: NOW,
            tie: 0,
        });
        assert!((g.clv(&sub, NOW) - (want + 0.5 * 120.0 * 3.0)).abs() < 1e-9);
        assert_eq!(g.value_band(g.clv(&s, NOW)), "medium");
    }

    #[test]
    fn quintile_cuts_split_a_population_evenly() {
        let mut xs: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(quintile_cuts(&mut xs), [21.0, 41.0, 60.0, 80.0]);
        let b = RfmBounds {
            frequency: [3.0, 2.0, 4.0, 5.0],
            ..Default::default()
        };
        assert!(b.check().unwrap_err().contains("frequency"));
    }
}

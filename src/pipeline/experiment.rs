//! Campaign experiments: a campaign rule may split the customers it
//! contacts between weighted variants (their own channel, offer and
//! template), against the policy's holdout as control.
//!
//! A customer's variant is a stable hash of (experiment, customer id) into
//! bucket ranges laid out by the weights (as GrowthBook and Optimizely do),
//! so every instance draws the same one; a weight change moves only the
//! share between the old and the new range ends. Once drawn, the variant
//! is kept in the customer's state ([`Enrolments`]), so a customer keeps
//! it through restarts, rebalances (state follows its partition) and any
//! later weight change or policy reload.

use serde::{Deserialize, Serialize};

use crate::pipeline::event::{parse_rfc3339, stable_hash, Millis};

/// The arm name of holdout customers in an experiment's readout.
pub const HOLDOUT_ARM: &str = "holdout";

/// One variant of an experiment.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Variant {
    /// Published on triggers and outcomes (`variant`).
    pub name: String,
    /// Relative weight (> 0); shares are weight / sum of weights.
    pub weight: f64,
    /// email | sms | call | in_app; the rule's when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub channel: Option<String>,
    /// Offer text or code; the rule's when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub offer: Option<String>,
    /// Message template id for the campaign tool.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub template_id: Option<String>,
}

/// A campaign rule's experiment: the contacted customers are split between
/// the variants; the holdout is the control.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Experiment {
    /// Published on triggers and outcomes (`experiment`); the hash seed.
    pub name: String,
    /// Event time (RFC 3339) from which alerts are assigned arms; before
    /// it the rule runs without the experiment. Absent: from the start.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start: Option<String>,
    pub variants: Vec<Variant>,
}

/// Most experiments a customer's state remembers a variant for (the
/// oldest is forgotten first).
pub const ENROLMENTS_KEPT: usize = 16;

/// A uniform number in [0, 1) from a stable hash (a SplitMix64 finaliser
/// spreads FNV's bits).
fn unit(parts: &[&[u8]]) -> f64 {
    let mut z = stable_hash(parts);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^= z >> 31;
    (z >> 11) as f64 / (1u64 << 53) as f64
}

fn parse_start(s: &str) -> Option<Millis> {
    parse_rfc3339(s).ok()
}

impl Experiment {
    /// Whether alerts at event time `now` are in the experiment.
    pub fn running(&self, now: Millis) -> bool {
        self.start
            .as_deref()
            .is_none_or(|s| parse_start(s).is_some_and(|t| now >= t))
    }

    /// The variant a customer draws: the bucket range its hash falls in.
    pub fn draw(&self, customer_id: &str) -> &Variant {
        let total: f64 = self.variants.iter().map(|v| v.weight).sum();
        let u = unit(&[b"variant", self.name.as_bytes(), customer_id.as_bytes()]) * total;
        let mut edge = 0.0;
        for v in &self.variants {
            edge += v.weight;
            if u < edge {
                return v;
            }
        }
        self.variants.last().expect("experiments have variants")
    }

    /// The share of each arm among customers the rule would contact:
    /// the holdout's, then each variant's of the rest.
    pub fn split(&self, holdout_share: f64) -> Vec<(String, f64)> {
        let total: f64 = self.variants.iter().map(|v| v.weight).sum();
        std::iter::once((HOLDOUT_ARM.to_string(), holdout_share))
            .chain(
                self.variants
                    .iter()
                    .map(|v| (v.name.clone(), (1.0 - holdout_share) * v.weight / total)),
            )
            .collect()
    }

    /// Checks names, weights and channels; the error names the field.
    pub fn check(&self, channels: &[&str]) -> Result<(), (String, String)> {
        if self.name.trim().is_empty() {
            return Err(("experiment.name".into(), "must not be empty".into()));
        }
        if let Some(s) = self.start.as_deref().filter(|s| parse_start(s).is_none()) {
            return Err((
                "experiment.start".into(),
                format!("{s:?} is not an RFC 3339 time like 2026-12-01T00:00:00Z"),
            ));
        }
        if self.variants.is_empty() {
            return Err((
                "experiment.variants".into(),
                "an experiment needs at least one variant".into(),
            ));
        }
        for (i, v) in self.variants.iter().enumerate() {
            let field = |f: &str| format!("experiment.variants[{i}].{f}");
            if v.name.trim().is_empty() || v.name == HOLDOUT_ARM {
                return Err((
                    field("name"),
                    format!("must be a non-empty name other than {HOLDOUT_ARM:?} (the control's)"),
                ));
            }
            if self.variants[..i].iter().any(|w| w.name == v.name) {
                return Err((field("name"), format!("{:?} is used twice", v.name)));
            }
            if !(v.weight.is_finite() && v.weight > 0.0) {
                return Err((
                    field("weight"),
                    format!("must be a number above 0, got {}", v.weight),
                ));
            }
            if let Some(c) = &v.channel {
                if c == "none" || !channels.contains(&c.as_str()) {
                    return Err((
                        field("channel"),
                        format!(
                            "must be one of {} (the holdout is the no-contact arm), got {c:?}",
                            channels
                                .iter()
                                .filter(|c| **c != "none")
                                .copied()
                                .collect::<Vec<_>>()
                                .join(", ")
                        ),
                    ));
                }
            }
        }
        Ok(())
    }
}

/// An experiment arm an alert was assigned to, with the split in force.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct Arm {
    pub experiment: String,
    pub variant: String,
    /// The share of every arm when this one was assigned.
    pub split: Vec<(String, f64)>,
}

/// What an alert's outcome is compared against: the guardrail counts at
/// alert time, and the experiment arm if any.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct AlertBaseline {
    pub alert_id: String,
    pub complaints: u32,
    pub unsubscribed: bool,
    pub arm: Option<Arm>,
}

/// A customer's experiment memory, part of the stored state.
#[derive(Serialize, Deserialize, Debug, Clone, Default, PartialEq)]
pub struct Enrolments {
    /// (experiment, variant) drawn, oldest first; kept for good.
    pub assigned: Vec<(String, String)>,
    /// The baseline of the alert awaiting its outcome.
    pub baseline: Option<AlertBaseline>,
}

impl Enrolments {
    /// The customer's variant in `e`: the one drawn before, or a new draw
    /// (remembered). `None` when a remembered variant no longer exists
    /// (the customer then stays out of the experiment, uncontacted by it).
    pub fn variant<'e>(&mut self, e: &'e Experiment, customer_id: &str) -> Option<&'e Variant> {
        if let Some((_, v)) = self.assigned.iter().find(|(x, _)| *x == e.name) {
            return e.variants.iter().find(|w| w.name == *v);
        }
        let v = e.draw(customer_id);
        if self.assigned.len() >= ENROLMENTS_KEPT {
            self.assigned.remove(0);
        }
        self.assigned.push((e.name.clone(), v.name.clone()));
        Some(v)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn experiment(weights: &[f64]) -> Experiment {
        Experiment {
            name: "winback-offer".into(),
            start: None,
            variants: weights
                .iter()
                .enumerate()
                .map(|(i, w)| Variant {
                    name: format!("v{i}"),
                    weight: *w,
                    channel: None,
                    offer: None,
                    template_id: None,
                })
                .collect(),
        }
    }

    #[test]
    fn draws_follow_the_weights_and_a_weight_change_moves_only_the_share_needed() {
        let ids: Vec<String> = (0..20_000).map(|i| format!("c-{i:05}")).collect();
        let before = experiment(&[50.0, 50.0]);
        let after = experiment(&[70.0, 30.0]);
        let share = |e: &Experiment, v: &str| {
            ids.iter().filter(|c| e.draw(c).name == v).count() as f64 / ids.len() as f64
        };
        assert!((share(&before, "v0") - 0.5).abs() < 0.015);
        assert!((share(&after, "v0") - 0.7).abs() < 0.015);
        let moved: Vec<&String> = ids
            .iter()
            .filter(|c| before.draw(c).name != after.draw(c).name)
            .collect();
        // Only the 20% between the old and the new edge move, all to v0.
        assert!((moved.len() as f64 / ids.len() as f64 - 0.2).abs() < 0.015);
        assert!(moved.iter().all(|c| after.draw(c).name == "v0"));
        // Another experiment's draw is independent of this one's.
        let mut other = experiment(&[50.0, 50.0]);
        other.name = "subject-line".into();
        let same = ids
            .iter()
            .filter(|c| other.draw(c).name == before.draw(c).name)
            .count() as f64;
        assert!((same / ids.len() as f64 - 0.5).abs() < 0.015);
    }

    #[test]
    fn a_drawn_variant_is_kept_whatever_the_weights_become() {
        let mut memory = Enrolments::default();
        let e = experiment(&[50.0, 50.0]);
        let id = (0..)
            .map(|i| format!("c-{i}"))
            .find(|c| e.draw(c).name == "v1")
            .unwrap();
        assert_eq!(memory.variant(&e, &id).unwrap().name, "v1");
        let shifted = experiment(&[99.0, 1.0]);
        assert_eq!(shifted.draw(&id).name, "v0", "a new draw would move it");
        assert_eq!(memory.variant(&shifted, &id).unwrap().name, "v1");
        // A removed variant leaves the customer out, not moved.
        let mut fewer = experiment(&[1.0]);
        fewer.variants[0].name = "v0".into();
        assert!(memory.variant(&fewer, &id).is_none());
        assert_eq!(memory.assigned.len(), 1);
    }

    #[test]
    fn the_split_counts_the_holdout_first() {
        let split = experiment(&[1.0, 3.0]).split(0.2);
        assert_eq!(split[0], (HOLDOUT_ARM.into(), 0.2));
        assert!((split[1].1 - 0.2).abs() < 1e-12 && (split[2].1 - 0.6).abs() < 1e-12);
    }

    #[test]
    fn bad_experiments_are_refused_naming_the_field() {
        let ch = ["email", "sms", "none"];
        let mut e = experiment(&[1.0, 0.0]);
        assert_eq!(e.check(&ch).unwrap_err().0, "experiment.variants[1].weight");
        e = experiment(&[1.0, 1.0]);
        e.variants[1].name = "v0".into();
        assert_eq!(e.check(&ch).unwrap_err().0, "experiment.variants[1].name");
        e.variants[1].name = HOLDOUT_ARM.into();
        assert_eq!(e.check(&ch).unwrap_err().0, "experiment.variants[1].name");
        e = experiment(&[1.0]);
        e.variants[0].channel = Some("none".into());
        assert_eq!(
            e.check(&ch).unwrap_err().0,
            "experiment.variants[0].channel"
        );
        e.variants[0].channel = Some("sms".into());
        assert!(e.check(&ch).is_ok());
        assert_eq!(
            experiment(&[]).check(&ch).unwrap_err().0,
            "experiment.variants"
        );
        e.start = Some("next monday".into());
        assert_eq!(e.check(&ch).unwrap_err().0, "experiment.start");
        e.start = Some("2026-12-01T00:00:00Z".into());
        assert!(e.check(&ch).is_ok());
        assert!(!e.running(1_796_083_200_000 - 1) && e.running(1_796_083_200_000));
    }
}

//! The pure core's own settings: the `[policy]` and `[segments]` sections
//! of the config, and the [`Policy`] they build.

use serde::{Deserialize, Serialize};

use crate::pipeline::event::{Millis, DAY_MS};
use crate::pipeline::model::ModelFile;
use crate::pipeline::policy::{CampaignRule, ContactRules, Holdout, Policy, Tier};
use crate::pipeline::segments::{RfmBounds, Segmenter};

fn days_ms(d: f64) -> Millis {
    (d * DAY_MS as f64) as Millis
}

/// Enter threshold when neither the config nor the model sets one.
pub const DEFAULT_ENTER: f64 = 0.7;
/// Exit threshold when neither the config nor the model sets one.
pub const DEFAULT_EXIT: f64 = 0.5;

/// When scores become alerts and triggers.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct PolicyConfig {
    /// Probability at which a customer is alerted. When neither threshold
    /// is set, the model's (chosen by `train`) are used; failing those,
    /// 0.7 and 0.5.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub enter_threshold: Option<f64>,
    /// Probability below which an alerted customer is re-armed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub exit_threshold: Option<f64>,
    /// Least time, in days of event time, between two alerts for one customer.
    pub cooldown_days: f64,
    /// How often, in hours of event time, a silent customer is re-scored.
    pub rescore_interval_hours: f64,
    /// A customer silent for this many days is no longer re-scored.
    pub rescore_stop_after_days: f64,
    /// How many reasons each alert lists.
    pub top_reasons: usize,
    /// Risk tiers, highest first; the last should start at 0.
    pub tiers: Vec<Tier>,
    /// Campaign rules; the first that matches an alert is triggered.
    /// Every combination of tier, segment, value band, lifecycle stage,
    /// consent and channel preference must be matched by some rule.
    pub campaigns: Vec<CampaignRule>,
    /// Cooldown, cap and quiet hours of triggers.
    pub contact: ContactRules,
    /// Control group that gets no triggers.
    pub holdout: Holdout,
    /// Days after an alert at which its outcome (retained or churned) is
    /// published.
    pub outcome_window_days: f64,
}

/// RFM scores, segments, lifecycle stages and lifetime value.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct SegmentsConfig {
    /// RFM cut points; when absent, the model's (learned by `train`), else
    /// built-in defaults.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rfm: Option<RfmBounds>,
    /// A customer first seen less than this many days ago is `new`.
    pub new_days: f64,
    /// No engagement for this many days: `churned`; coming back after such
    /// a silence: `reactivated`.
    pub churned_after_days: f64,
    /// How long a customer stays `reactivated` after coming back.
    pub reactivated_days: f64,
    /// Expected customer lifetime in years for CLV; when absent, the
    /// model's (1 / annual churn rate in training), else 3.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expected_lifetime_years: Option<f64>,
    /// Subtracted from CLV, base currency.
    pub acquisition_cost: f64,
    /// Share of revenue that is margin (0–1].
    pub margin: f64,
    /// CLV at which the `medium` and `high` value bands start.
    pub value_bands: [f64; 2],
}

impl Default for SegmentsConfig {
    fn default() -> Self {
        let d = Segmenter::default();
        Self {
            rfm: None,
            new_days: 30.0,
            churned_after_days: 60.0,
            reactivated_days: 30.0,
            expected_lifetime_years: None,
            acquisition_cost: d.acquisition_cost,
            margin: d.margin,
            value_bands: d.value_bands,
        }
    }
}

impl PolicyConfig {
    /// Runs `experiment` on every campaign rule that contacts customers.
    pub fn run_experiment(&mut self, experiment: &crate::pipeline::experiment::Experiment) {
        for rule in self.campaigns.iter_mut().filter(|r| r.channel != "none") {
            rule.experiment = Some(experiment.clone());
        }
    }
}

impl Default for PolicyConfig {
    fn default() -> Self {
        let tier = |name: &str, min: f64| Tier {
            name: name.into(),
            min_probability: min,
        };
        let rule = |tier: &str, band: &str, pref: &str, id: &str, channel: &str, offer: &str| {
            let list = |v: &str| {
                if v.is_empty() {
                    Vec::new()
                } else {
                    vec![v.to_string()]
                }
            };
            CampaignRule {
                tiers: list(tier),
                segments: Vec::new(),
                value_bands: list(band),
                lifecycle: Vec::new(),
                consent: Some(channel != "none"),
                channel_preference: list(pref),
                campaign_id: id.into(),
                channel: channel.into(),
                offer: (!offer.is_empty()).then(|| offer.into()),
                experiment: None,
            }
        };
        Self {
            enter_threshold: None,
            exit_threshold: None,
            cooldown_days: 14.0,
            rescore_interval_hours: 24.0,
            rescore_stop_after_days: 365.0,
            top_reasons: 3,
            tiers: vec![
                tier("critical", 0.9),
                tier("high", 0.8),
                tier("elevated", 0.5),
                tier("low", 0.0),
            ],
            campaigns: vec![
                rule(
                    "critical",
                    "high",
                    "",
                    "vip-account-manager-call",
                    "call",
                    "personal call and loyalty credit",
                ),
                rule(
                    "critical",
                    "",
                    "",
                    "winback-discount-20",
                    "email",
                    "20% off the next order",
                ),
                rule(
                    "high",
                    "",
                    "sms",
                    "winback-sms-10",
                    "sms",
                    "10% off the next order",
                ),
                rule(
                    "high",
                    "",
                    "",
                    "winback-discount-10",
                    "email",
                    "10% off the next order",
                ),
                rule(
                    "",
                    "",
                    "",
                    "reengagement-nudge",
                    "in_app",
                    "what's new since your last visit",
                ),
                rule("", "", "", "no-contact", "none", ""),
            ],
            contact: ContactRules::default(),
            holdout: Holdout::default(),
            outcome_window_days: 30.0,
        }
    }
}

impl PolicyConfig {
    /// The thresholds this section sets, if it sets either (the other
    /// takes its default).
    pub fn configured_thresholds(&self) -> Option<(f64, f64)> {
        let p = self;
        (p.enter_threshold.is_some() || p.exit_threshold.is_some()).then(|| {
            (
                p.enter_threshold.unwrap_or(DEFAULT_ENTER),
                p.exit_threshold.unwrap_or(DEFAULT_EXIT),
            )
        })
    }

    /// The alert policy for a model: these thresholds if set, else the
    /// model's, else the defaults.
    pub fn build(&self, segments: &SegmentsConfig, model: Option<&ModelFile>) -> Policy {
        let p = self;
        let (enter, exit) = self
            .configured_thresholds()
            .or_else(|| {
                model
                    .and_then(|m| m.thresholds.as_ref())
                    .map(|t| (t.enter, t.exit))
            })
            .unwrap_or((DEFAULT_ENTER, DEFAULT_EXIT));
        let learned = model.and_then(|m| m.segments.as_ref());
        let g = segments;
        let segments = Segmenter {
            rfm: g
                .rfm
                .clone()
                .or_else(|| learned.map(|l| l.rfm.clone()))
                .unwrap_or_default(),
            new_ms: days_ms(g.new_days),
            churned_after_ms: days_ms(g.churned_after_days),
            reactivated_ms: days_ms(g.reactivated_days),
            expected_lifetime_years: g
                .expected_lifetime_years
                .or_else(|| learned.map(|l| l.expected_lifetime_years))
                .unwrap_or(Segmenter::default().expected_lifetime_years),
            acquisition_cost: g.acquisition_cost,
            margin: g.margin,
            value_bands: g.value_bands,
        };
        Policy {
            enter,
            exit,
            cooldown_ms: days_ms(p.cooldown_days),
            tiers: p.tiers.clone(),
            campaigns: p.campaigns.clone(),
            contact: p.contact.clone(),
            default_tz: p
                .contact
                .default_timezone
                .parse()
                .unwrap_or(chrono_tz::Tz::UTC),
            holdout: p.holdout.clone(),
            outcome_window_ms: days_ms(p.outcome_window_days),
            segments,
            rescore_interval_ms: (p.rescore_interval_hours * 3_600_000.0) as Millis,
            rescore_stop_after_ms: days_ms(p.rescore_stop_after_days),
            top_reasons: p.top_reasons,
        }
    }
}

/// The policy of the default `[policy]` and `[segments]` sections, with no
/// model.
impl Default for Policy {
    fn default() -> Self {
        PolicyConfig::default().build(&SegmentsConfig::default(), None)
    }
}

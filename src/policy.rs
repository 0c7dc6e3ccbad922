//! Alert thresholds, risk tiers and campaign choice: when a score becomes an
//! alert, and which retention action it triggers.

use serde::{Deserialize, Serialize};

use crate::event::Millis;
use crate::features::{AlertState, CustomerState};

/// A named band of probability.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Tier {
    /// Tier name as published (`risk_tier`).
    pub name: String,
    /// Lowest probability in the tier.
    pub min_probability: f64,
}

/// A retention campaign rule; the first rule that matches an alert wins.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct CampaignRule {
    /// Matches only this risk tier (any tier when absent).
    #[serde(default)]
    pub tier: Option<String>,
    /// Matches only customers whose net spend is at least this (base currency).
    #[serde(default)]
    pub min_customer_value: Option<f64>,
    /// Campaign id published on the trigger.
    pub campaign_id: String,
    /// email | sms | call | in_app
    pub channel: String,
    /// Offer text or code for the campaign tool.
    #[serde(default)]
    pub offer: Option<String>,
}

/// The decision rules, from the `policy` config.
#[derive(Debug, Clone, PartialEq)]
pub struct Policy {
    /// Probability at which an alert is raised.
    pub enter: f64,
    /// Probability below which the customer leaves the alerted state.
    pub exit: f64,
    /// Minimum event time between two alerts for one customer.
    pub cooldown_ms: Millis,
    /// Tiers, highest first.
    pub tiers: Vec<Tier>,
    /// Campaign rules in order.
    pub campaigns: Vec<CampaignRule>,
    /// How often a silent customer is re-scored (event time).
    pub rescore_interval_ms: Millis,
    /// Silent customers are no longer re-scored after this long.
    pub rescore_stop_after_ms: Millis,
    /// How many reasons an alert carries.
    pub top_reasons: usize,
}

/// What the hysteresis decided for one score.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Publish an alert.
    Alert,
    /// Above the threshold but within the cooldown of the last alert.
    Cooldown,
    /// Nothing to publish.
    Quiet,
}

impl Policy {
    /// Updates the alert state with a new probability and decides.
    pub fn decide(&self, a: &mut AlertState, p: f64, now: Millis) -> Decision {
        a.last_probability = p;
        a.last_scored_at = now;
        if p < self.exit {
            a.active = false;
        }
        if p < self.enter || a.active {
            return Decision::Quiet;
        }
        let cooled = a.last_alert_at.is_none_or(|t| now - t >= self.cooldown_ms);
        if !cooled {
            return Decision::Cooldown;
        }
        a.active = true;
        a.count += 1;
        a.last_alert_at = Some(now);
        Decision::Alert
    }

    /// The tier a probability falls in.
    pub fn tier(&self, p: f64) -> &str {
        self.tiers
            .iter()
            .find(|t| p >= t.min_probability)
            .or(self.tiers.last())
            .map(|t| t.name.as_str())
            .unwrap_or("elevated")
    }

    /// The campaign for an alert, or why there is none.
    pub fn campaign(&self, tier: &str, s: &CustomerState) -> Result<&CampaignRule, &'static str> {
        if s.is_unsubscribed() {
            return Err("unsubscribed");
        }
        if !s.has_marketing_consent() {
            return Err("no_consent");
        }
        let value = s.gross - s.refunded;
        self.campaigns
            .iter()
            .find(|r| {
                r.tier.as_deref().is_none_or(|t| t == tier)
                    && r.min_customer_value.is_none_or(|v| value >= v)
            })
            .ok_or("no_matching_campaign")
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::event::DAY_MS;
    use crate::features::Latest;

    pub fn policy() -> Policy {
        Policy {
            enter: 0.7,
            exit: 0.5,
            cooldown_ms: 14 * DAY_MS,
            tiers: vec![
                Tier {
                    name: "critical".into(),
                    min_probability: 0.9,
                },
                Tier {
                    name: "high".into(),
                    min_probability: 0.8,
                },
                Tier {
                    name: "elevated".into(),
                    min_probability: 0.0,
                },
            ],
            campaigns: vec![
                CampaignRule {
                    tier: Some("critical".into()),
                    min_customer_value: Some(500.0),
                    campaign_id: "vip-call".into(),
                    channel: "call".into(),
                    offer: None,
                },
                CampaignRule {
                    tier: None,
                    min_customer_value: None,
                    campaign_id: "winback-email".into(),
                    channel: "email".into(),
                    offer: Some("10% off".into()),
                },
            ],
            rescore_interval_ms: DAY_MS,
            rescore_stop_after_ms: 365 * DAY_MS,
            top_reasons: 3,
        }
    }

    #[test]
    fn hysteresis_and_cooldown_prevent_flapping() {
        let p = policy();
        let mut a = AlertState::default();
        let d = |n: i64| n * DAY_MS;
        assert_eq!(p.decide(&mut a, 0.6, d(0)), Decision::Quiet);
        assert_eq!(p.decide(&mut a, 0.75, d(1)), Decision::Alert);
        // Hovering around the enter threshold does not alert again.
        assert_eq!(p.decide(&mut a, 0.65, d(2)), Decision::Quiet);
        assert_eq!(p.decide(&mut a, 0.8, d(3)), Decision::Quiet);
        // Falling below exit re-arms, but the cooldown still holds.
        assert_eq!(p.decide(&mut a, 0.4, d(4)), Decision::Quiet);
        assert_eq!(p.decide(&mut a, 0.9, d(5)), Decision::Cooldown);
        assert_eq!(p.decide(&mut a, 0.9, d(15)), Decision::Alert);
        assert_eq!(a.count, 2);
        assert_eq!(a.last_alert_at, Some(d(15)));
    }

    #[test]
    fn tiers_and_campaigns() {
        let p = policy();
        assert_eq!(p.tier(0.95), "critical");
        assert_eq!(p.tier(0.85), "high");
        assert_eq!(p.tier(0.71), "elevated");
        let mut s = CustomerState::default();
        assert_eq!(p.campaign("critical", &s).unwrap_err(), "no_consent");
        s.consent = Some(Latest {
            value: true,
            at: 1,
            tie: 0,
        });
        assert_eq!(
            p.campaign("critical", &s).unwrap().campaign_id,
            "winback-email"
        );
        s.gross = 800.0;
        assert_eq!(p.campaign("critical", &s).unwrap().campaign_id, "vip-call");
        s.unsubscribed = Some(Latest {
            value: true,
            at: 2,
            tie: 0,
        });
        assert_eq!(p.campaign("critical", &s).unwrap_err(), "unsubscribed");
    }
}

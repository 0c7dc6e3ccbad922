//! Alert thresholds, risk tiers and campaign choice: when a score becomes an
//! alert, and which retention action it triggers.

use serde::{Deserialize, Serialize};

use crate::pipeline::event::Millis;
use crate::pipeline::experiment::Experiment;
use crate::pipeline::features::{AlertState, CustomerState};

/// A named band of probability.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Tier {
    /// Tier name as published (`risk_tier`).
    pub name: String,
    /// Lowest probability in the tier.
    pub min_probability: f64,
}

/// Contact channels a rule may choose; `none` means "do not contact".
pub const CHANNELS: [&str; 5] = ["email", "sms", "call", "in_app", "none"];

/// A retention campaign rule. Every list left empty matches anything; the
/// first rule that matches an alerted customer wins.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct CampaignRule {
    /// Risk tiers this rule takes.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tiers: Vec<String>,
    /// RFM segments (`champions`, `loyal`, ... see docs/outputs.md).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub segments: Vec<String>,
    /// Lifetime value bands: `low`, `medium`, `high`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub value_bands: Vec<String>,
    /// Lifecycle stages: `new`, `active`, `at_risk`, `churned`, `reactivated`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub lifecycle: Vec<String>,
    /// Marketing consent; absent matches both. A rule that can match a
    /// customer without consent must have channel `none`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub consent: Option<bool>,
    /// The customer's preferred channel (attribute, see
    /// `policy.contact.channel_attribute`); `none` = not stated.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub channel_preference: Vec<String>,
    /// Campaign id published on the trigger.
    pub campaign_id: String,
    /// email | sms | call | in_app | none (no contact)
    pub channel: String,
    /// Offer text or code for the campaign tool.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub offer: Option<String>,
    /// An experiment between variants of this campaign (see
    /// docs/experiments.md); the holdout is its control.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub experiment: Option<Experiment>,
}

/// One combination of the things rules match on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Case<'a> {
    pub tier: &'a str,
    pub segment: &'a str,
    pub value_band: &'a str,
    pub lifecycle: &'a str,
    pub consent: bool,
    pub channel_preference: &'a str,
}

impl std::fmt::Display for Case<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "tier={} segment={} value_band={} lifecycle={} consent={} channel_preference={}",
            self.tier,
            self.segment,
            self.value_band,
            self.lifecycle,
            self.consent,
            self.channel_preference
        )
    }
}

impl CampaignRule {
    /// Whether the rule takes this case.
    pub fn matches(&self, c: &Case) -> bool {
        let any = |list: &[String], v: &str| list.is_empty() || list.iter().any(|x| x == v);
        any(&self.tiers, c.tier)
            && any(&self.segments, c.segment)
            && any(&self.value_bands, c.value_band)
            && any(&self.lifecycle, c.lifecycle)
            && self.consent.is_none_or(|x| x == c.consent)
            && any(&self.channel_preference, c.channel_preference)
    }
}

/// Checks a rule list against every case: each value a rule names must
/// exist, no rule may contact a customer without consent, and every case
/// must be matched. The error names the rule field or the unmatched case.
pub fn check_rules(rules: &[CampaignRule], tiers: &[Tier]) -> Result<(), (String, String)> {
    use crate::pipeline::segments::{LIFECYCLE, SEGMENTS};
    const BANDS: [&str; 3] = ["low", "medium", "high"];
    let tier_names: Vec<&str> = tiers.iter().map(|t| t.name.as_str()).collect();
    for (i, r) in rules.iter().enumerate() {
        for (field, list, known) in [
            ("tiers", &r.tiers, &tier_names[..]),
            ("segments", &r.segments, &SEGMENTS[..]),
            ("value_bands", &r.value_bands, &BANDS[..]),
            ("lifecycle", &r.lifecycle, &LIFECYCLE[..]),
            ("channel_preference", &r.channel_preference, &CHANNELS[..]),
        ] {
            if let Some(bad) = list.iter().find(|v| !known.contains(&v.as_str())) {
                return Err((
                    format!("[{i}].{field}"),
                    format!("unknown value {bad:?}; known: {}", known.join(", ")),
                ));
            }
        }
        if !CHANNELS.contains(&r.channel.as_str()) {
            return Err((
                format!("[{i}].channel"),
                format!(
                    "must be one of {}, got {:?}",
                    CHANNELS.join(", "),
                    r.channel
                ),
            ));
        }
        if let Some(e) = &r.experiment {
            e.check(&CHANNELS)
                .map_err(|(f, m)| (format!("[{i}].{f}"), m))?;
            if r.channel == "none" {
                return Err((
                    format!("[{i}].channel"),
                    "a rule with an experiment contacts customers: its channel cannot be \"none\""
                        .into(),
                ));
            }
            // Several rules may run one experiment, with the same variants.
            if rules[..i].iter().any(|o| {
                o.experiment.as_ref().is_some_and(|x| {
                    x.name == e.name && (&x.variants, &x.start) != (&e.variants, &e.start)
                })
            }) {
                return Err((
                    format!("[{i}].experiment.variants"),
                    format!("experiment {:?} is run by an earlier rule with other variants or start; rules that share an experiment share its variants and start", e.name),
                ));
            }
        }
        if r.consent != Some(true) && r.channel != "none" {
            return Err((
                format!("[{i}].consent"),
                format!(
                    "rule {:?} could contact a customer without marketing consent: set consent = true, or channel = \"none\"",
                    r.campaign_id
                ),
            ));
        }
    }
    for tier in &tier_names {
        for segment in SEGMENTS {
            for value_band in BANDS {
                for lifecycle in LIFECYCLE {
                    for consent in [true, false] {
                        for channel_preference in CHANNELS {
                            let case = Case {
                                tier,
                                segment,
                                value_band,
                                lifecycle,
                                consent,
                                channel_preference,
                            };
                            if !rules.iter().any(|r| r.matches(&case)) {
                                return Err((
                                    String::new(),
                                    format!("no rule matches the case {case}; add a rule for it or a catch-all rule at the end"),
                                ));
                            }
                        }
                    }
                }
            }
        }
    }
    Ok(())
}

/// Limits on how often and when a customer is contacted.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct ContactRules {
    /// Least time, in days, between two triggers for one customer.
    pub cooldown_days: f64,
    /// Most triggers per customer within `period_days`.
    pub max_triggers: usize,
    /// The window of `max_triggers`, in days.
    pub period_days: f64,
    /// Local hours `[start, end)` in which no trigger goes out (held until
    /// `end`); `[]` for none. `[21, 8]` spans midnight.
    pub quiet_hours: Vec<u32>,
    /// Customer attribute holding an IANA time zone (`Europe/Berlin`).
    pub timezone_attribute: String,
    /// Time zone of customers without a valid one.
    pub default_timezone: String,
    /// Customer attribute holding the preferred channel.
    pub channel_attribute: String,
}

impl Default for ContactRules {
    fn default() -> Self {
        Self {
            cooldown_days: 30.0,
            max_triggers: 3,
            period_days: 180.0,
            quiet_hours: vec![21, 8],
            timezone_attribute: "timezone".into(),
            default_timezone: "UTC".into(),
            channel_attribute: "preferred_channel".into(),
        }
    }
}

/// The share of alerted customers who get no trigger, for measuring uplift.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Holdout {
    /// Share of customers, 0 to 0.5.
    pub share: f64,
    /// Experiment name; changing it draws a new group.
    pub experiment: String,
}

impl Default for Holdout {
    fn default() -> Self {
        Self {
            share: 0.1,
            experiment: "retention-holdout".into(),
        }
    }
}

impl Holdout {
    /// Whether the customer is in the control group: a stable hash of the
    /// experiment and customer id, the same on every instance and restart.
    pub fn contains(&self, customer_id: &str) -> bool {
        let h = crate::pipeline::event::stable_hash(&[
            self.experiment.as_bytes(),
            customer_id.as_bytes(),
        ]);
        (h % 1_000_000) as f64 / 1_000_000.0 < self.share
    }
}

/// The next instant at or after `t` (epoch ms) outside the quiet hours
/// `[start, end)` of time zone `tz`; `t` itself when it is outside.
pub fn after_quiet_hours(t: Millis, quiet: &[u32], tz: chrono_tz::Tz) -> Millis {
    use chrono::{Duration, TimeZone, Timelike};
    let [start, end] = match quiet {
        [s, e] if s != e => [*s, *e],
        _ => return t,
    };
    let Some(local) = tz.timestamp_millis_opt(t).single() else {
        return t;
    };
    let h = local.hour();
    let quiet_now = if start < end {
        h >= start && h < end
    } else {
        h >= start || h < end
    };
    if !quiet_now {
        return t;
    }
    let day = if start > end && h >= start {
        local.date_naive() + Duration::days(1)
    } else {
        local.date_naive()
    };
    let naive = day
        .and_hms_opt(end, 0, 0)
        .expect("hours are checked at load");
    // A DST gap at `end` moves release to the first valid instant after.
    (0..3)
        .find_map(|k| {
            tz.from_local_datetime(&(naive + Duration::hours(k)))
                .earliest()
        })
        .map_or(t, |d| d.timestamp_millis().max(t))
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
    /// Contact limits.
    pub contact: ContactRules,
    /// Customer time zone when the attribute is missing or unknown.
    pub default_tz: chrono_tz::Tz,
    /// Control group.
    pub holdout: Holdout,
    /// Event time after an alert at which its outcome is decided.
    pub outcome_window_ms: Millis,
    /// Segments, lifecycle and value.
    pub segments: crate::pipeline::segments::Segmenter,
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
            .unwrap_or("low")
    }

    /// The first rule that matches (rules are checked at load to cover
    /// every case, so this is `None` only for an unchecked rule list).
    pub fn rule_for(&self, case: &Case) -> Option<&CampaignRule> {
        self.campaigns.iter().find(|r| r.matches(case))
    }

    /// The customer's time zone from the configured attribute.
    pub fn timezone(&self, s: &CustomerState) -> chrono_tz::Tz {
        s.attributes
            .get(&self.contact.timezone_attribute)
            .and_then(|l| l.value.parse().ok())
            .unwrap_or(self.default_tz)
    }

    /// The customer's preferred channel, `none` when unknown.
    pub fn channel_preference<'a>(&self, s: &'a CustomerState) -> &'a str {
        s.attributes
            .get(&self.contact.channel_attribute)
            .map(|l| l.value.as_str())
            .filter(|v| CHANNELS.contains(v))
            .unwrap_or("none")
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::pipeline::event::DAY_MS;
    use crate::pipeline::features::Latest;

    /// The default policy with thresholds 0.7/0.5, no quiet hours and no
    /// holdout (tests of those set them).
    pub fn policy() -> Policy {
        let mut p = Policy::default();
        p.contact.quiet_hours.clear();
        p.holdout.share = 0.0;
        p
    }

    fn consenting() -> CustomerState {
        CustomerState {
            consent: Some(Latest {
                value: true,
                at: 1,
                tie: 0,
            }),
            ..Default::default()
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

    fn case<'a>(tier: &'a str, band: &'a str, consent: bool, pref: &'a str) -> Case<'a> {
        Case {
            tier,
            segment: "loyal",
            value_band: band,
            lifecycle: "at_risk",
            consent,
            channel_preference: pref,
        }
    }

    #[test]
    fn default_rules_first_match_wins() {
        let p = policy();
        assert_eq!(p.tier(0.95), "critical");
        assert_eq!(p.tier(0.85), "high");
        assert_eq!(p.tier(0.71), "elevated");
        assert_eq!(p.tier(0.5), "elevated");
        assert_eq!(p.tier(0.02), "low");
        let id = |c: Case| p.rule_for(&c).unwrap().campaign_id.clone();
        assert_eq!(
            id(case("critical", "high", true, "none")),
            "vip-account-manager-call"
        );
        assert_eq!(
            id(case("critical", "low", true, "sms")),
            "winback-discount-20"
        );
        assert_eq!(id(case("high", "low", true, "sms")), "winback-sms-10");
        assert_eq!(
            id(case("high", "low", true, "email")),
            "winback-discount-10"
        );
        assert_eq!(
            id(case("elevated", "high", true, "none")),
            "reengagement-nudge"
        );
        assert_eq!(id(case("critical", "high", false, "none")), "no-contact");
        assert!(check_rules(&p.campaigns, &p.tiers).is_ok());
    }

    #[test]
    fn each_match_field_selects() {
        let p = policy();
        let rule = |id: &str| CampaignRule {
            campaign_id: id.into(),
            ..p.campaigns[4].clone()
        };
        let rules = [
            CampaignRule {
                lifecycle: vec!["churned".into()],
                ..rule("winback-letter")
            },
            CampaignRule {
                segments: vec!["champions".into()],
                ..rule("thanks")
            },
            CampaignRule {
                channel_preference: vec!["sms".into()],
                ..rule("sms")
            },
            rule("default"),
        ];
        let pick = |c: Case| {
            rules
                .iter()
                .find(|r| r.matches(&c))
                .unwrap()
                .campaign_id
                .clone()
        };
        let base = case("high", "low", true, "email");
        assert_eq!(pick(base.clone()), "default");
        assert_eq!(
            pick(Case {
                lifecycle: "churned",
                ..base.clone()
            }),
            "winback-letter"
        );
        assert_eq!(
            pick(Case {
                segment: "champions",
                ..base.clone()
            }),
            "thanks"
        );
        assert_eq!(
            pick(Case {
                channel_preference: "sms",
                ..base.clone()
            }),
            "sms"
        );
        // Consent: the consenting rules do not take a customer without it.
        assert!(!rules[3].matches(&Case {
            consent: false,
            ..base
        }));
    }

    #[test]
    fn a_rule_set_with_a_gap_is_refused_naming_the_case() {
        let p = policy();
        // Without the final no-contact rule, customers without consent
        // are matched by nothing.
        let rules = &p.campaigns[..p.campaigns.len() - 1];
        let (at, why) = check_rules(rules, &p.tiers).unwrap_err();
        assert_eq!(at, "");
        assert!(why.contains("consent=false"), "{why}");
        // A segment-only rule set misses the other segments.
        let only = p.campaigns[5].clone();
        let champions = CampaignRule {
            segments: vec!["champions".into()],
            consent: Some(true),
            channel: "email".into(),
            campaign_id: "thanks".into(),
            ..only.clone()
        };
        let (_, why) = check_rules(&[champions, only.clone()], &p.tiers).unwrap_err();
        assert!(why.contains("segment=loyal"), "{why}");
    }

    #[test]
    fn rules_are_checked_field_by_field() {
        let p = policy();
        let mut bad = p.campaigns.clone();
        bad[1].segments = vec!["vip".into()];
        let (at, why) = check_rules(&bad, &p.tiers).unwrap_err();
        assert_eq!(at, "[1].segments");
        assert!(why.contains("\"vip\""), "{why}");
        let mut bad = p.campaigns.clone();
        bad[0].tiers = vec!["urgent".into()];
        assert_eq!(check_rules(&bad, &p.tiers).unwrap_err().0, "[0].tiers");
        let mut bad = p.campaigns.clone();
        bad[4].consent = None;
        let (at, why) = check_rules(&bad, &p.tiers).unwrap_err();
        assert_eq!(at, "[4].consent");
        assert!(why.contains("without marketing consent"), "{why}");
        let mut bad = p.campaigns.clone();
        bad[2].channel = "pigeon".into();
        assert_eq!(check_rules(&bad, &p.tiers).unwrap_err().0, "[2].channel");
    }

    #[test]
    fn attributes_give_time_zone_and_channel_preference() {
        let p = policy();
        let mut s = consenting();
        assert_eq!(p.timezone(&s), chrono_tz::Tz::UTC);
        assert_eq!(p.channel_preference(&s), "none");
        for (k, v) in [("timezone", "Asia/Tokyo"), ("preferred_channel", "sms")] {
            s.attributes.insert(
                k.into(),
                Latest {
                    value: v.into(),
                    at: 1,
                    tie: 0,
                },
            );
        }
        assert_eq!(p.timezone(&s), chrono_tz::Tz::Asia__Tokyo);
        assert_eq!(p.channel_preference(&s), "sms");
        s.attributes.get_mut("timezone").unwrap().value = "Mars/Olympus".into();
        assert_eq!(
            p.timezone(&s),
            chrono_tz::Tz::UTC,
            "unknown zones fall back"
        );
    }

    #[test]
    fn quiet_hours_release_at_local_morning() {
        use chrono::TimeZone;
        let berlin = chrono_tz::Tz::Europe__Berlin;
        let at = |y, mo, d, h, mi| {
            berlin
                .with_ymd_and_hms(y, mo, d, h, mi, 0)
                .unwrap()
                .timestamp_millis()
        };
        let quiet = [21, 8];
        // 23:30 local: held until 08:00 next day.
        assert_eq!(
            after_quiet_hours(at(2026, 1, 10, 23, 30), &quiet, berlin),
            at(2026, 1, 11, 8, 0)
        );
        // 06:00 local: held until 08:00 the same day.
        assert_eq!(
            after_quiet_hours(at(2026, 1, 10, 6, 0), &quiet, berlin),
            at(2026, 1, 10, 8, 0)
        );
        // 12:00 local: goes at once.
        let noon = at(2026, 7, 1, 12, 0);
        assert_eq!(after_quiet_hours(noon, &quiet, berlin), noon);
        assert_eq!(after_quiet_hours(noon, &[], berlin), noon);
        // 14:00 in Berlin (12:00 UTC) is 21:00 in Tokyo: quiet there.
        let two = at(2026, 7, 1, 14, 0);
        assert_eq!(after_quiet_hours(two, &quiet, berlin), two);
        assert!(after_quiet_hours(two, &quiet, chrono_tz::Tz::Asia__Tokyo) > two);
        // A window within one day.
        assert_eq!(
            after_quiet_hours(at(2026, 1, 10, 13, 15), &[12, 14], berlin),
            at(2026, 1, 10, 14, 0)
        );
    }

    #[test]
    fn holdout_is_a_stable_share() {
        let h = Holdout {
            share: 0.2,
            experiment: "exp-a".into(),
        };
        let ids: Vec<String> = (0..20_000).map(|i| format!("c-{i}")).collect();
        let held: Vec<bool> = ids.iter().map(|c| h.contains(c)).collect();
        let share = held.iter().filter(|x| **x).count() as f64 / ids.len() as f64;
        assert!((share - 0.2).abs() < 0.01, "{share}");
        // The same customer, the same group, every time it is asked.
        assert!(ids.iter().zip(&held).all(|(c, x)| h.contains(c) == *x));
        // Another experiment draws another group.
        let other = Holdout {
            experiment: "exp-b".into(),
            ..h.clone()
        };
        let same = ids
            .iter()
            .filter(|c| h.contains(c) == other.contains(c))
            .count();
        assert!(same < ids.len() * 9 / 10);
        assert!(!ids.iter().any(|c| Holdout {
            share: 0.0,
            ..h.clone()
        }
        .contains(c)));
    }
}

//! The pure core: `step(state, event, now, model, policy)` and `rescore`.
//!
//! No I/O happens here. The runner loads state, calls these, publishes the
//! outputs and writes the new state back; tests call them directly.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::pipeline::event::{rfc3339, stable_hash, Event, EventKind, Millis, DAY_MS};
use crate::pipeline::experiment::{AlertBaseline, HOLDOUT_ARM};
use crate::pipeline::features::{
    Awaiting, CustomerState, FeatureSpec, HeldTrigger, PastAlert, Seen, ALERT_HISTORY,
};
use crate::pipeline::model::{Assessment, Model, Reason};
pub use crate::pipeline::output::{Cause, Group, OutcomeRecord, Retention, Suppression, Trigger};
use crate::pipeline::policy::{after_quiet_hours, Case, Decision, Policy};
use crate::pipeline::segments::{Profile, Rfm};

/// A churn alert as published on the alerts topic (JSON).
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct Alert {
    /// Deterministic: the same crossing of the same customer always has the
    /// same id, so a redelivered alert is recognisable.
    pub alert_id: String,
    pub customer_id: String,
    /// Churn probability at `as_of`.
    pub probability: f64,
    pub risk_tier: String,
    pub model_version: String,
    /// Features that pushed the score up most, largest first.
    pub reasons: Vec<Reason>,
    /// Event time the score refers to (RFC 3339).
    pub as_of: String,
    /// The same as epoch milliseconds.
    pub as_of_ms: Millis,
    /// What woke the score: `event` or `silence` (re-scored with no event).
    pub cause: Cause,
    /// Net spend, base currency.
    pub customer_value: f64,
    /// Whether the customer may receive marketing.
    pub marketing_consent: bool,
    /// RFM scores 1–5.
    pub rfm: Rfm,
    pub segment: String,
    pub lifecycle: String,
    /// Estimated lifetime value, base currency.
    pub clv: f64,
    pub value_band: String,
    /// The campaign the rules chose (`no-contact` style rules included).
    pub campaign_id: Option<String>,
    /// In the control group: no trigger is sent, the outcome is tracked.
    pub holdout: bool,
    /// Every feature value at `as_of`.
    pub features: BTreeMap<String, f64>,
}

/// What happened to an event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Applied to the state.
    Applied,
    /// Same event id seen before for this customer: dropped.
    Duplicate,
    /// Older than the de-duplication window: goes to the dead-letter topic.
    TooLate,
    /// The customer's state was deleted.
    Erased,
}

/// Outputs of one step.
#[derive(Debug, Clone, PartialEq)]
pub struct Output {
    pub outcome: Outcome,
    /// The probability computed, if the customer was scored.
    pub probability: Option<f64>,
    pub alert: Option<Alert>,
    pub trigger: Option<Trigger>,
    /// Why an alert got no trigger (`no_consent`, `holdout`, ...).
    pub suppressed: Option<Suppression>,
    /// The trigger was held back by quiet hours.
    pub held: bool,
    /// An alert's outcome came due.
    pub decided: Option<OutcomeRecord>,
    /// An alert was due but held back by the cooldown.
    pub cooldown: bool,
}

impl Output {
    fn bare(outcome: Outcome) -> Self {
        Self {
            outcome,
            probability: None,
            alert: None,
            trigger: None,
            suppressed: None,
            held: false,
            decided: None,
            cooldown: false,
        }
    }
}

/// What the fold decides with: the feature spec, the model and the
/// retention policy, replaced together when the model or policy reloads.
#[derive(Debug, Clone)]
pub struct Rules {
    pub spec: FeatureSpec,
    pub model: std::sync::Arc<Model>,
    pub policy: Policy,
}

impl Rules {
    /// [`step`] with these rules.
    pub fn step(
        &self,
        state: Option<CustomerState>,
        event: &Event,
        now: Millis,
    ) -> (Option<CustomerState>, Output) {
        step(state, event, now, &self.model, &self.policy, &self.spec)
    }

    /// [`rescore`] with these rules.
    pub fn rescore(
        &self,
        state: CustomerState,
        customer_id: &str,
        now: Millis,
    ) -> (CustomerState, Output) {
        rescore(
            state,
            customer_id,
            now,
            &self.model,
            &self.policy,
            &self.spec,
        )
    }
}

/// Applies one event to a customer's state, scores the customer as of `now`
/// and decides on alerts. `state` is `None` for a customer never seen.
///
/// Returns the new state (`None` after erasure) and the outputs.
pub fn step(
    state: Option<CustomerState>,
    event: &Event,
    now: Millis,
    model: &Model,
    policy: &Policy,
    spec: &FeatureSpec,
) -> (Option<CustomerState>, Output) {
    let (state, outcome) = ingest(state, event, spec);
    let mut s = match (state, outcome) {
        (Some(s), Outcome::Applied) => s,
        (state, outcome) => return (state, Output::bare(outcome)),
    };
    let now = now.max(event.occurred_at);
    let out = score(
        &mut s,
        &event.customer_id,
        now,
        model,
        policy,
        spec,
        Cause::Event,
    );
    (Some(s), out)
}

/// Applies one event to a customer's state without scoring: de-duplication,
/// erasure and the feature update. `step` and training both go through here.
pub fn ingest(
    state: Option<CustomerState>,
    event: &Event,
    spec: &FeatureSpec,
) -> (Option<CustomerState>, Outcome) {
    if matches!(event.kind, EventKind::Erasure) {
        return (None, Outcome::Erased);
    }
    let mut s = state.unwrap_or_default();
    match s.check_and_record(&event.event_id, event.occurred_at, spec.dedup_window_ms) {
        Seen::New => {}
        Seen::Duplicate => return (Some(s), Outcome::Duplicate),
        Seen::TooLate => return (Some(s), Outcome::TooLate),
    }
    spec.apply(&mut s, event);
    (Some(s), Outcome::Applied)
}

/// Re-scores a customer who sent nothing, as of `now`: churn is mostly
/// silence, and the score must rise while nothing arrives.
pub fn rescore(
    mut s: CustomerState,
    customer_id: &str,
    now: Millis,
    model: &Model,
    policy: &Policy,
    spec: &FeatureSpec,
) -> (CustomerState, Output) {
    let out = score(
        &mut s,
        customer_id,
        now,
        model,
        policy,
        spec,
        Cause::Silence,
    );
    (s, out)
}

/// A customer's features at event time `now` and what the model says of
/// them (a score, or churned when past onset): exactly what the service
/// computes whenever it scores.
pub fn features_and_score(
    s: &CustomerState,
    now: Millis,
    model: &Model,
    top_reasons: usize,
    spec: &FeatureSpec,
) -> (Vec<f64>, Assessment) {
    let x = spec.extract(s, now);
    let a = model.assess(s, &x, now, top_reasons);
    (x, a)
}

/// What the model says of a customer at event time `now` (see
/// [`features_and_score`]); `score` and backtests use it.
pub fn score_at(
    s: &CustomerState,
    now: Millis,
    model: &Model,
    top_reasons: usize,
    spec: &FeatureSpec,
) -> Assessment {
    features_and_score(s, now, model, top_reasons, spec).1
}

fn score(
    s: &mut CustomerState,
    customer_id: &str,
    now: Millis,
    model: &Model,
    policy: &Policy,
    spec: &FeatureSpec,
    cause: Cause,
) -> Output {
    // A customer past churn onset is churned: given the win-back model's
    // chance of staying gone, not alerted, not re-scored until they engage
    // again.
    // Reasons are worked out only for an alert (below): most scores raise
    // none, and the reasons cost more than the probability.
    let (x, assessment) = features_and_score(s, now, model, 0, spec);
    let sc = match assessment {
        Assessment::Scored(sc) => Some(sc),
        Assessment::Churned { .. } => None,
    };
    let engaged = s.last_engaged.unwrap_or(s.first_seen);
    s.next_due = if sc.is_none() || now - engaged >= policy.rescore_stop_after_ms {
        None
    } else {
        Some(now + policy.rescore_interval_ms)
    };
    let decision = match &sc {
        // Too new to alert: the score is kept, nothing is decided.
        Some(sc) if model.is_new(s, now) && !s.alert.active => {
            s.alert.last_probability = sc.probability;
            s.alert.last_scored_at = now;
            Decision::Quiet
        }
        Some(sc) => policy.decide(&mut s.alert, sc.probability, now),
        None => Decision::Quiet,
    };
    if cause == Cause::Silence && s.next_due.is_some() {
        s.next_due = Some(next_wake(s, now, model, policy, spec));
    }
    let mut out = Output::bare(Outcome::Applied);
    out.probability = sc.as_ref().map(|sc| sc.probability);
    out.cooldown = decision == Decision::Cooldown;
    if s.contact.awaiting.as_ref().is_some_and(|a| a.due <= now) {
        out.decided = decide_outcome(s, customer_id, now);
    }
    if let Some(h) = s.contact.held.take_if(|h| h.release_at <= now) {
        let mut t = h.trigger;
        if s.alert.active && s.has_marketing_consent() {
            t.released_at = Some(rfc3339(now));
            out.trigger = Some(t);
        } else {
            out.suppressed = Some(if s.alert.active {
                Suppression::NoConsent
            } else {
                Suppression::RecoveredWhileHeld
            });
            // Never sent: the alert's outcome counts it as not contacted,
            // and it uses up no contact budget.
            let c = &mut s.contact;
            if let Some(a) = c.awaiting.as_mut().filter(|a| a.alert_id == t.alert_id) {
                a.group = Group::NotContacted;
                let at = a.alerted_at;
                c.sent.retain(|x| *x != at);
            }
            if let Some(h) = c.history.iter_mut().find(|h| h.alert_id == t.alert_id) {
                h.group = Group::NotContacted;
            }
        }
    }
    if let (Decision::Alert, Some(sc)) = (decision, sc) {
        alert(
            s,
            customer_id,
            now,
            sc.probability,
            model.score(&x, policy.top_reasons).reasons,
            x,
            model,
            policy,
            spec,
            cause,
            &mut out,
        );
    }
    // Held triggers and outcomes wake the customer even when silence alone
    // would not.
    let wake = [
        s.contact.held.as_ref().map(|h| h.release_at),
        s.contact.awaiting.as_ref().map(|a| a.due),
    ];
    for t in wake.into_iter().flatten() {
        s.next_due = Some(s.next_due.map_or(t, |d| d.min(t)));
    }
    out
}

/// Decides the outcome of the alert awaiting one, and notes it in the
/// alert history.
fn decide_outcome(s: &mut CustomerState, customer_id: &str, now: Millis) -> Option<OutcomeRecord> {
    let a = s.contact.awaiting.take()?;
    let o = outcome_of(s, customer_id, &a, now);
    s.experiments.baseline = None;
    if let Some(h) = s
        .contact
        .history
        .iter_mut()
        .find(|h| h.alert_id == a.alert_id)
    {
        h.outcome = Some(o.outcome);
    }
    Some(o)
}

fn outcome_of(s: &CustomerState, customer_id: &str, a: &Awaiting, now: Millis) -> OutcomeRecord {
    let back = s.last_engaged.is_some_and(|t| t > a.alerted_at);
    let base = s
        .experiments
        .baseline
        .as_ref()
        .filter(|b| b.alert_id == a.alert_id);
    let arm = base.and_then(|b| b.arm.as_ref());
    OutcomeRecord {
        outcome_id: format!("{:016x}", stable_hash(&[a.alert_id.as_bytes(), b"outcome"])),
        alert_id: a.alert_id.clone(),
        customer_id: customer_id.to_string(),
        outcome: if back {
            Retention::Retained
        } else {
            Retention::Churned
        },
        group: a.group,
        campaign_id: a.campaign_id.clone(),
        alerted_at: rfc3339(a.alerted_at),
        decided_at: rfc3339(now),
        experiment: arm.map(|a| a.experiment.clone()),
        variant: arm.map(|a| a.variant.clone()),
        split: arm.map(|a| a.split.iter().cloned().collect()),
        unsubscribed: base.is_some_and(|b| !b.unsubscribed) && s.is_unsubscribed(),
        complained: base.is_some_and(|b| s.complaints > b.complaints),
    }
}

/// Builds the alert, picks the campaign and applies holdout and the contact
/// rules.
#[allow(clippy::too_many_arguments)]
fn alert(
    s: &mut CustomerState,
    customer_id: &str,
    now: Millis,
    p: f64,
    reasons: Vec<crate::pipeline::model::Reason>,
    x: Vec<f64>,
    model: &Model,
    policy: &Policy,
    spec: &FeatureSpec,
    cause: Cause,
    out: &mut Output,
) {
    let alert_id = format!(
        "{:016x}",
        stable_hash(&[
            customer_id.as_bytes(),
            &s.first_seen.to_be_bytes(),
            &s.alert.count.to_be_bytes(),
        ])
    );
    // An earlier alert still awaiting its outcome is decided now.
    if s.contact.awaiting.is_some() {
        out.decided = decide_outcome(s, customer_id, now);
    }
    s.contact.held = None;
    let tier = policy.tier(p).to_string();
    let value = s.gross - s.refunded;
    let as_of = rfc3339(now);
    let profile: Profile = policy.segments.profile(s, now);
    let consent = s.has_marketing_consent();
    let case = Case {
        tier: &tier,
        segment: &profile.segment,
        value_band: &profile.value_band,
        lifecycle: &profile.lifecycle,
        consent,
        channel_preference: policy.channel_preference(s),
    };
    let rule = policy.rule_for(&case);
    let holdout = policy.holdout.contains(customer_id);
    let c = &policy.contact;
    let period_ms = (c.period_days * DAY_MS as f64) as Millis;
    let cooldown_ms = (c.cooldown_days * DAY_MS as f64) as Millis;
    s.contact
        .sent
        .retain(|t| now - *t < period_ms.max(cooldown_ms));
    let mut blocked = if s.is_unsubscribed() {
        Some(Suppression::Unsubscribed)
    } else if !consent {
        Some(Suppression::NoConsent)
    } else if rule.is_none_or(|r| r.channel == "none") {
        Some(Suppression::NoContactRule)
    } else if s.contact.sent.last().is_some_and(|t| now - t < cooldown_ms) {
        Some(Suppression::ContactCooldown)
    } else if s
        .contact
        .sent
        .iter()
        .filter(|t| now - **t < period_ms)
        .count()
        >= c.max_triggers
    {
        Some(Suppression::ContactCap)
    } else if holdout {
        Some(Suppression::Holdout)
    } else {
        None
    };
    // The experiment arm: holdout customers are its control; the others
    // whom the rule contacts draw a variant (kept for good).
    let experiment = rule
        .and_then(|r| r.experiment.as_ref())
        .filter(|e| e.running(now));
    let variant = match (blocked, experiment) {
        (None, Some(e)) => match s.experiments.variant(e, customer_id) {
            Some(v) => Some(v),
            // A remembered variant was removed from the policy: no contact.
            None => {
                blocked = Some(Suppression::NoContactRule);
                None
            }
        },
        _ => None,
    };
    let arm = experiment
        .filter(|_| matches!(blocked, None | Some(Suppression::Holdout)))
        .map(|e| crate::pipeline::experiment::Arm {
            experiment: e.name.clone(),
            variant: variant.map_or(HOLDOUT_ARM, |v| v.name.as_str()).to_string(),
            split: e.split(policy.holdout.share),
        });
    s.experiments.baseline = Some(AlertBaseline {
        alert_id: alert_id.clone(),
        complaints: s.complaints,
        unsubscribed: s.is_unsubscribed(),
        arm,
    });
    let group = Suppression::group(blocked);
    if group != Group::NotContacted {
        // Holdout customers use up their contact budget as if they had been
        // contacted, so caps shape both groups alike.
        s.contact.sent.push(now);
    }
    let campaign_id = rule.map(|r| r.campaign_id.clone());
    s.contact.awaiting = Some(Awaiting {
        alert_id: alert_id.clone(),
        alerted_at: now,
        due: now + policy.outcome_window_ms,
        campaign_id: campaign_id.clone(),
        group,
    });
    if s.contact.history.len() >= ALERT_HISTORY {
        s.contact.history.remove(0);
    }
    s.contact.history.push(PastAlert {
        alert_id: alert_id.clone(),
        at: now,
        probability: p,
        risk_tier: tier.clone(),
        campaign_id: campaign_id.clone(),
        group,
        outcome: None,
    });
    out.suppressed = blocked;
    if let (None, Some(rule)) = (blocked, rule) {
        let trigger = Trigger {
            trigger_id: format!("{:016x}", stable_hash(&[alert_id.as_bytes(), b"trigger"])),
            alert_id: alert_id.clone(),
            customer_id: customer_id.to_string(),
            campaign_id: rule.campaign_id.clone(),
            channel: variant
                .and_then(|v| v.channel.clone())
                .unwrap_or_else(|| rule.channel.clone()),
            offer: variant
                .and_then(|v| v.offer.clone())
                .or_else(|| rule.offer.clone()),
            risk_tier: tier.clone(),
            probability: p,
            customer_value: value,
            segment: profile.segment.clone(),
            lifecycle: profile.lifecycle.clone(),
            clv: profile.clv,
            value_band: profile.value_band.clone(),
            as_of: as_of.clone(),
            released_at: None,
            experiment: experiment.map(|e| e.name.clone()),
            variant: variant.map(|v| v.name.clone()),
            template_id: variant.and_then(|v| v.template_id.clone()),
        };
        let release_at = after_quiet_hours(now, &c.quiet_hours, policy.timezone(s));
        if release_at > now {
            out.held = true;
            s.contact.held = Some(HeldTrigger {
                release_at,
                trigger,
            });
        } else {
            out.trigger = Some(trigger);
        }
    }
    out.alert = Some(Alert {
        alert_id,
        customer_id: customer_id.to_string(),
        probability: p,
        risk_tier: tier,
        model_version: model.version().to_string(),
        reasons,
        as_of,
        as_of_ms: now,
        cause,
        customer_value: value,
        marketing_consent: consent,
        rfm: profile.rfm,
        segment: profile.segment,
        lifecycle: profile.lifecycle,
        clv: profile.clv,
        value_band: profile.value_band,
        campaign_id,
        holdout,
        features: spec.names().iter().cloned().zip(x).collect(),
    });
}

/// Longest a silent customer goes without a re-score, in re-score intervals.
pub const MAX_SKIP_INTERVALS: i64 = 28;

/// When a silent customer next needs a re-score: projects the score forward
/// one interval at a time with the same feature and model code (no events
/// can arrive in between, or they would re-score the customer themselves)
/// and returns the first time a re-score could change something: cross the
/// enter threshold, fall below the exit threshold, or reach the silence
/// limit. So alerts happen exactly when interval-by-interval re-scoring
/// would raise them, with one state write instead of one per interval.
fn next_wake(
    s: &CustomerState,
    now: Millis,
    model: &Model,
    policy: &Policy,
    spec: &FeatureSpec,
) -> Millis {
    let engaged = s.last_engaged.unwrap_or(s.first_seen);
    let step = policy.rescore_interval_ms;
    let mut x = Vec::with_capacity(spec.names().len());
    for k in 1..=MAX_SKIP_INTERVALS {
        let t = now + k * step;
        let past_onset = model
            .file()
            .population
            .as_ref()
            .is_some_and(|p| p.past_onset(s, t).is_some());
        if t - engaged >= policy.rescore_stop_after_ms || past_onset {
            return t;
        }
        spec.extract_into(s, t, &mut x);
        let p = model.probability(&x);
        let wake = if s.alert.active {
            p < policy.exit
        } else {
            p >= policy.enter && !model.is_new(s, t)
        };
        if wake {
            return t;
        }
    }
    now + MAX_SKIP_INTERVALS * step
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipeline::event::DAY_MS;

    fn spec() -> FeatureSpec {
        FeatureSpec::new(&[7.0, 30.0, 90.0], &[], 7 * DAY_MS)
    }

    fn model(spec: &FeatureSpec) -> Model {
        crate::pipeline::model::tests::silence_model(spec, "test-1")
    }

    const T0: Millis = 1_700_000_000_000;

    fn ev(id: &str, cust: &str, day: i64, kind: EventKind) -> Event {
        Event {
            event_id: id.into(),
            customer_id: cust.into(),
            occurred_at: T0 + day * DAY_MS,
            attributes: BTreeMap::new(),
            kind,
        }
    }

    fn session(id: &str, day: i64) -> Event {
        ev(
            id,
            "c-1",
            day,
            EventKind::Session {
                duration_seconds: 1.0,
                page_views: 1,
                channel: None,
            },
        )
    }

    #[test]
    fn silent_customer_is_alerted_once_with_reasons() {
        let (spec, policy) = (spec(), crate::pipeline::policy::tests::policy());
        let m = model(&spec);
        let (s, out) = step(None, &session("e1", 0), T0, &m, &policy, &spec);
        assert_eq!(out.outcome, Outcome::Applied);
        assert!(out.probability.unwrap() < 0.01);
        let mut s = s.unwrap();
        assert_eq!(s.next_due, Some(T0 + DAY_MS));
        let mut alerts = Vec::new();
        for day in 1..=20 {
            let (ns, out) = rescore(s, "c-1", T0 + day * DAY_MS, &m, &policy, &spec);
            s = ns;
            alerts.extend(out.alert);
        }
        assert_eq!(alerts.len(), 1, "one alert, no flapping: {alerts:?}");
        let a = &alerts[0];
        // 0.7 is crossed at recency 10 + 2·ln(7/3) ≈ 11.7 days → day 12.
        assert_eq!(a.as_of_ms, T0 + 12 * DAY_MS);
        assert_eq!(a.cause, Cause::Silence);
        assert_eq!(a.reasons[0].feature, "silence");
        assert_eq!(a.reasons[0].top_feature, "recency_days");
        assert_eq!(a.reasons[0].value, 12.0);
        assert_eq!(a.model_version, "test-1");
        assert_eq!(a.features["recency_days"], 12.0);
    }

    #[test]
    fn projected_wake_up_alerts_on_the_same_day_as_daily_rescoring() {
        let (spec, policy) = (spec(), crate::pipeline::policy::tests::policy());
        let m = model(&spec);
        let (s, _) = step(None, &session("e1", 0), T0, &m, &policy, &spec);
        let mut s = s.unwrap();
        // Follow next_due as the service does: few re-scores, same alert day.
        let (mut rescores, mut alert_at) = (0, None);
        while let Some(due) = s.next_due.filter(|d| *d <= T0 + 60 * DAY_MS) {
            let (ns, out) = rescore(s, "c-1", due, &m, &policy, &spec);
            s = ns;
            rescores += 1;
            if let Some(a) = out.alert {
                alert_at.get_or_insert(a.as_of_ms);
            }
        }
        assert_eq!(
            alert_at,
            Some(T0 + 12 * DAY_MS),
            "same day as daily re-scoring"
        );
        assert!(rescores <= 5, "{rescores} re-scores instead of 60");
    }

    #[test]
    fn alert_ids_are_deterministic_and_distinct_per_crossing() {
        let (spec, policy) = (spec(), crate::pipeline::policy::tests::policy());
        let m = model(&spec);
        let run = || {
            let (s, _) = step(None, &session("e1", 0), T0, &m, &policy, &spec);
            let (s, o1) = rescore(s.unwrap(), "c-1", T0 + 12 * DAY_MS, &m, &policy, &spec);
            // Comes back, then goes silent again past the cooldown.
            let (s, _) = step(
                Some(s),
                &session("e2", 13),
                T0 + 13 * DAY_MS,
                &m,
                &policy,
                &spec,
            );
            let (_, o2) = rescore(s.unwrap(), "c-1", T0 + 30 * DAY_MS, &m, &policy, &spec);
            (o1.alert.unwrap().alert_id, o2.alert.unwrap().alert_id)
        };
        let (a1, a2) = run();
        assert_ne!(a1, a2);
        assert_eq!(run(), (a1, a2));
    }

    #[test]
    fn duplicates_are_not_applied_twice_and_erasure_deletes() {
        let (spec, policy) = (spec(), crate::pipeline::policy::tests::policy());
        let m = model(&spec);
        let buy = ev(
            "p1",
            "c-1",
            0,
            EventKind::Purchase {
                amount: 10.0,
                order_id: None,
            },
        );
        let (s, _) = step(None, &buy, T0, &m, &policy, &spec);
        let (s, out) = step(s, &buy, T0, &m, &policy, &spec);
        assert_eq!(out.outcome, Outcome::Duplicate);
        assert_eq!(s.as_ref().unwrap().purchases, 1);
        assert_eq!(s.as_ref().unwrap().gross, 10.0);
        let old = ev(
            "p0",
            "c-1",
            -30,
            EventKind::Purchase {
                amount: 1.0,
                order_id: None,
            },
        );
        let (s, out) = step(s, &old, T0, &m, &policy, &spec);
        assert_eq!(out.outcome, Outcome::TooLate);
        assert_eq!(s.as_ref().unwrap().purchases, 1);
        let (s, out) = step(
            s,
            &ev("x", "c-1", 1, EventKind::Erasure),
            T0,
            &m,
            &policy,
            &spec,
        );
        assert_eq!(out.outcome, Outcome::Erased);
        assert!(s.is_none());
    }

    #[test]
    fn triggers_respect_consent() {
        let (spec, policy) = (spec(), crate::pipeline::policy::tests::policy());
        let m = model(&spec);
        let (s, _) = step(None, &session("e1", 0), T0, &m, &policy, &spec);
        let (_, out) = rescore(
            s.clone().unwrap(),
            "c-1",
            T0 + 12 * DAY_MS,
            &m,
            &policy,
            &spec,
        );
        assert!(out.alert.is_some());
        assert!(out.trigger.is_none());
        assert_eq!(out.suppressed, Some(Suppression::NoConsent));
        let (s, _) = step(
            s,
            &ev("k", "c-1", 0, EventKind::Consent { marketing: true }),
            T0,
            &m,
            &policy,
            &spec,
        );
        let (_, out) = rescore(s.unwrap(), "c-1", T0 + 12 * DAY_MS, &m, &policy, &spec);
        let t = out.trigger.expect("consenting customer gets a trigger");
        assert_eq!(t.alert_id, out.alert.unwrap().alert_id);
        assert_eq!(t.campaign_id, "reengagement-nudge");
    }

    /// Runs customer `c-1` (consenting) day by day to `days`: sessions on
    /// `session_days`, a silent re-score every day in between. Returns
    /// every output with its day.
    fn run(policy: &Policy, session_days: &[i64], days: i64) -> Vec<(i64, Output)> {
        let spec = spec();
        let m = model(&spec);
        let consent = ev("k", "c-1", 0, EventKind::Consent { marketing: true });
        let (mut s, _) = step(None, &consent, T0, &m, policy, &spec);
        let mut outs = Vec::new();
        for day in 0..=days {
            let now = T0 + day * DAY_MS;
            let (next, out) = if session_days.contains(&day) {
                let e = session(&format!("s{day}"), day);
                step(s, &e, now, &m, policy, &spec)
            } else {
                let (st, out) = rescore(s.unwrap(), "c-1", now, &m, policy, &spec);
                (Some(st), out)
            };
            s = next;
            outs.push((day, out));
        }
        outs
    }

    fn days_with(outs: &[(i64, Output)], f: impl Fn(&Output) -> bool) -> Vec<i64> {
        outs.iter().filter(|(_, o)| f(o)).map(|(d, _)| *d).collect()
    }

    #[test]
    fn contact_cooldown_and_cap_limit_triggers_not_alerts() {
        let mut policy = crate::pipeline::policy::tests::policy();
        policy.cooldown_ms = 5 * DAY_MS;
        policy.contact.cooldown_days = 30.0;
        policy.contact.max_triggers = 2;
        policy.contact.period_days = 100.0;
        // Silent spells of 12 days after each session: an alert each time.
        let sessions = [0, 20, 40, 60, 80];
        let outs = run(&policy, &sessions, 95);
        let alerts = days_with(&outs, |o| o.alert.is_some());
        assert_eq!(alerts, vec![12, 32, 52, 72, 92]);
        assert_eq!(days_with(&outs, |o| o.trigger.is_some()), vec![12, 52]);
        let why = |day| outs[day as usize].1.suppressed;
        assert_eq!(
            why(32),
            Some(Suppression::ContactCooldown),
            "20 days after a trigger"
        );
        assert_eq!(why(72), Some(Suppression::ContactCooldown));
        assert_eq!(
            why(92),
            Some(Suppression::ContactCap),
            "two in 100 days already"
        );
    }

    #[test]
    fn an_experiment_splits_contacted_customers_and_outcomes_carry_the_arm() {
        use crate::pipeline::experiment::{Experiment, Variant};
        let variant = |name: &str, channel: &str| Variant {
            name: name.into(),
            weight: 1.0,
            channel: Some(channel.into()),
            offer: Some(format!("{name}-offer")),
            template_id: Some(format!("tpl-{name}")),
        };
        let experiment = Experiment {
            name: "nudge-test".into(),
            start: None,
            variants: vec![variant("discount", "email"), variant("shipping", "sms")],
        };
        let mut policy = crate::pipeline::policy::tests::policy();
        for r in policy.campaigns.iter_mut().filter(|r| r.channel != "none") {
            r.experiment = Some(experiment.clone());
        }
        let drawn = experiment.draw("c-1").clone();
        for holdout in [false, true] {
            policy.holdout.share = if holdout { 1.0 } else { 0.0 };
            let outs = run(&policy, &[0, 20, 25, 30, 35, 40, 45, 50], 50);
            let o = outs[42].1.decided.clone().expect("outcome on day 42");
            assert_eq!(o.experiment.as_deref(), Some("nudge-test"));
            let split = o.split.clone().unwrap();
            assert_eq!(split["holdout"], policy.holdout.share);
            assert!(!o.unsubscribed && !o.complained);
            if holdout {
                assert!(outs[12].1.trigger.is_none());
                assert_eq!(o.variant.as_deref(), Some(HOLDOUT_ARM));
            } else {
                let t = outs[12].1.trigger.clone().expect("trigger on day 12");
                assert_eq!(t.experiment.as_deref(), Some("nudge-test"));
                assert_eq!(t.variant.as_deref(), Some(drawn.name.as_str()));
                assert_eq!(t.channel, drawn.channel.clone().unwrap());
                assert_eq!(t.offer, drawn.offer);
                assert_eq!(t.template_id, drawn.template_id);
                assert_eq!(o.variant.as_deref(), Some(drawn.name.as_str()));
                assert_eq!(split[&drawn.name], 0.5);
            }
        }
        // Without consent nobody is in the experiment: no arm, no trigger.
        let spec = spec();
        let m = model(&spec);
        policy.holdout.share = 0.0;
        let e = session("s0", 0);
        let (mut s, _) = step(None, &e, T0, &m, &policy, &spec);
        let mut arms = Vec::new();
        for day in 1..=45 {
            let (st, out) = rescore(s.unwrap(), "c-1", T0 + day * DAY_MS, &m, &policy, &spec);
            assert!(out.trigger.is_none());
            arms.extend(out.decided.map(|o| o.variant));
            s = Some(st);
        }
        assert_eq!(arms, vec![None], "one outcome, outside the experiment");
    }

    #[test]
    fn holdout_customers_are_alerted_without_a_trigger_and_tracked() {
        let mut policy = crate::pipeline::policy::tests::policy();
        policy.holdout.share = 0.5;
        let held = policy.holdout.contains("c-1");
        policy.holdout.share = if held { 0.5 } else { 0.0 };
        let in_group = policy.holdout.contains("c-1");
        // Comes back on day 20, after the day-12 alert, and stays.
        let outs = run(&policy, &[0, 20, 25, 30, 35, 40, 45, 50], 50);
        let alert = outs[12].1.alert.clone().expect("alert on day 12");
        assert_eq!(alert.holdout, in_group);
        assert_eq!(alert.campaign_id.as_deref(), Some("reengagement-nudge"));
        assert_eq!(outs[12].1.trigger.is_some(), !in_group);
        let decided = days_with(&outs, |o| o.decided.is_some());
        assert_eq!(decided, vec![42], "30 days after the alert");
        let o = outs[42].1.decided.clone().unwrap();
        assert_eq!(o.alert_id, alert.alert_id);
        assert_eq!(o.outcome, Retention::Retained);
        assert_eq!(
            o.group,
            if in_group {
                Group::Holdout
            } else {
                Group::Treated
            }
        );
        let spec = spec();
        let m = model(&spec);
        let mut s = None;
        for (day, e) in [(0, "k"), (0, "s0")] {
            let e = if e == "k" {
                ev("k", "c-1", day, EventKind::Consent { marketing: true })
            } else {
                session(e, day)
            };
            s = step(s, &e, T0, &m, &policy, &spec).0;
        }
        let (s, _) = rescore(s.unwrap(), "c-1", T0 + 12 * DAY_MS, &m, &policy, &spec);
        assert_eq!(s.contact.history.len(), 1);
        assert_eq!(s.contact.history[0].outcome, None);
        let (s, _) = rescore(s, "c-1", T0 + 42 * DAY_MS, &m, &policy, &spec);
        let h = &s.contact.history[0];
        assert_eq!((h.outcome, h.group), (Some(Retention::Churned), o.group));
        assert_eq!(o.campaign_id.as_deref(), Some("reengagement-nudge"));
    }

    #[test]
    fn outcome_is_churned_when_the_customer_stays_away() {
        let policy = crate::pipeline::policy::tests::policy();
        let outs = run(&policy, &[0], 45);
        let o = outs[42].1.decided.clone().expect("outcome on day 42");
        assert_eq!(
            (o.outcome.as_str(), o.group.as_str()),
            ("churned", "treated")
        );
        // The outcome wakes a silent customer on its day.
        let spec = spec();
        let m = model(&spec);
        let consent = ev("k", "c-1", 0, EventKind::Consent { marketing: true });
        let (s, _) = step(None, &consent, T0, &m, &policy, &spec);
        let (s, out) = rescore(s.unwrap(), "c-1", T0 + 12 * DAY_MS, &m, &policy, &spec);
        assert!(out.alert.is_some());
        assert!(s.next_due.unwrap() <= T0 + 42 * DAY_MS);
    }

    #[test]
    fn quiet_hours_hold_a_trigger_until_local_morning() {
        let mut policy = crate::pipeline::policy::tests::policy();
        policy.contact.quiet_hours = vec![21, 8];
        let spec = spec();
        let m = model(&spec);
        // T0 is 22:13 UTC: quiet for a customer in UTC.
        let consent = ev("k", "c-1", 0, EventKind::Consent { marketing: true });
        let (s, _) = step(None, &consent, T0, &m, &policy, &spec);
        let (s, out) = rescore(s.unwrap(), "c-1", T0 + 12 * DAY_MS, &m, &policy, &spec);
        assert!(out.alert.is_some() && out.held && out.trigger.is_none());
        let release = s.next_due.unwrap();
        let hour = (release % DAY_MS) / 3_600_000;
        assert_eq!((hour, release % 3_600_000), (8, 0), "08:00 UTC");
        assert!(release - (T0 + 12 * DAY_MS) < 10 * 3_600_000);
        let (s, out) = rescore(s, "c-1", release, &m, &policy, &spec);
        let t = out.trigger.expect("released in the morning");
        assert_eq!(t.alert_id, out_alert_id(&policy, &spec, &m));
        assert_eq!(t.released_at.as_deref(), Some(rfc3339(release).as_str()));
        assert!(s.contact.held.is_none());
        // Back before the morning: the held trigger is dropped and the
        // alert counts as not contacted.
        let (s, _) = step(
            {
                let consent = ev("k", "c-1", 0, EventKind::Consent { marketing: true });
                let (s, _) = step(None, &consent, T0, &m, &policy, &spec);
                Some(rescore(s.unwrap(), "c-1", T0 + 12 * DAY_MS, &m, &policy, &spec).0)
            },
            &session("back", 12),
            T0 + 12 * DAY_MS + 3_600_000,
            &m,
            &policy,
            &spec,
        );
        let s = s.unwrap();
        assert!(!s.alert.active, "the session brought the score down");
        let (s, out) = rescore(s, "c-1", release, &m, &policy, &spec);
        assert_eq!(out.suppressed, Some(Suppression::RecoveredWhileHeld));
        assert!(out.trigger.is_none() && s.contact.held.is_none());
        assert_eq!(
            s.contact.awaiting.as_ref().unwrap().group,
            Group::NotContacted
        );
        assert!(s.contact.sent.is_empty());
        // A customer in Los Angeles (14:13 local) gets it at once.
        let mut e = ev("k", "c-1", 0, EventKind::Consent { marketing: true });
        e.attributes
            .insert("timezone".into(), "America/Los_Angeles".into());
        let (s, _) = step(None, &e, T0, &m, &policy, &spec);
        let (_, out) = rescore(s.unwrap(), "c-1", T0 + 12 * DAY_MS, &m, &policy, &spec);
        assert!(out.trigger.is_some() && !out.held);
    }

    fn out_alert_id(policy: &Policy, spec: &FeatureSpec, m: &Model) -> String {
        let consent = ev("k", "c-1", 0, EventKind::Consent { marketing: true });
        let (s, _) = step(None, &consent, T0, m, policy, spec);
        let (_, out) = rescore(s.unwrap(), "c-1", T0 + 12 * DAY_MS, m, policy, spec);
        out.alert.unwrap().alert_id
    }

    #[test]
    fn alerts_carry_segment_lifecycle_and_value() {
        let policy = crate::pipeline::policy::tests::policy();
        let outs = run(&policy, &[0], 13);
        let a = outs[12].1.alert.clone().unwrap();
        assert_eq!(a.lifecycle, "at_risk");
        assert_eq!(a.segment, "lost", "never bought");
        assert_eq!((a.clv, a.value_band.as_str()), (0.0, "low"));
        let t = outs[12].1.trigger.clone().unwrap();
        assert_eq!((t.segment, t.lifecycle), (a.segment, a.lifecycle));
    }
}

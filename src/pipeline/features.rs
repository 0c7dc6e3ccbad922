//! Per-customer feature state and the feature vector the model scores.
//!
//! Everything here is in event time and gives the same state whatever the
//! order in which a customer's events arrive: counts and sums commute,
//! "latest value" fields keep the value with the newest event time (ties
//! broken by a hash of the event id), and decayed rates are exponentially
//! decayed sums referred to one anchor time per customer, which is the same
//! sum whichever event moved the anchor last.
//!
//! The same code serves the live service, `train` and `score`, so there is no
//! train/serve skew.

use std::collections::{BTreeMap, HashMap};

use serde::{Deserialize, Serialize};

pub use crate::pipeline::contact::{
    AlertState, Awaiting, ContactState, HeldTrigger, PastAlert, ALERT_HISTORY,
};
use crate::pipeline::event::{EmailAction, Event, EventKind, Millis, SubscriptionAction, DAY_MS};

/// The model feature that is not in [`FeatureSpec::names`]: the log-odds
/// of no purchase within the horizon under the model file's BG/NBD fit, of
/// the customer's purchase count, purchase recency and tenure. The model
/// computes it (`Model`), and `train` adds its column, with one BG/NBD fit
/// per observation date on what was known then.
pub const BGNBD_NO_PURCHASE: &str = "bgnbd_no_purchase_logit";

/// Signals with decayed rates, in storage order.
pub const SIGNALS: [&str; 8] = [
    "sessions",
    "purchases",
    "email_opens",
    "email_clicks",
    "support_tickets",
    "complaints",
    "payment_failures",
    "activity_other",
];
const SESSIONS: usize = 0;
const PURCHASES: usize = 1;
const EMAIL_OPENS: usize = 2;
const EMAIL_CLICKS: usize = 3;
const TICKETS: usize = 4;
const COMPLAINTS: usize = 5;
const PAYMENT_FAILURES: usize = 6;
const ACTIVITY_OTHER: usize = 7;

/// Most half-lives a spec may have.
pub const MAX_HALF_LIVES: usize = 8;

/// Shortest observed span a rate is normalised by (see `extract`).
const MIN_RATE_SPAN_MS: Millis = 7 * DAY_MS;

/// Added to rates before taking the trend's log ratio, in events per day.
const TREND_EPSILON: f64 = 0.01;

/// Days of engagement history kept as a bitmap (one bit per UTC day).
pub const DAY_BITS: i64 = 128;

pub use crate::pipeline::feature_defs::{ACTIVE_WINDOWS, ENGAGEMENT};

/// Added to active-day shares before taking their log ratio.
const SHARE_EPSILON: f64 = 0.02;

/// Engaged days before a customer's habits say how unusual a silence is
/// (states migrated from version 2 count them from the migration on).
pub const MIN_HABIT_DAYS: u32 = 5;

/// Largest value of the plain ratios of recent to usual activity.
const RATIO_CAP: f64 = 4.0;

/// Which features exist: fixed by the code plus the configured half-lives
/// and activity names.
#[derive(Debug, Clone, PartialEq)]
pub struct FeatureSpec {
    /// Half-lives of the decayed rates, in days, shortest first.
    pub half_lives_days: Vec<f64>,
    /// `activity` names that get rates of their own; others count as
    /// `activity_other`.
    pub activity_names: Vec<String>,
    /// Event-time span within which duplicate event ids are recognised.
    pub dedup_window_ms: Millis,
    /// A silence at least this long, ended by engagement, is a return
    /// (`returned_at`; lifecycle stage `reactivated`).
    pub return_gap_ms: Millis,
    lambdas: Vec<f64>,
    names: Vec<String>,
    /// Each name's behaviour (and [`BGNBD_NO_PURCHASE`]'s).
    groups: HashMap<String, String>,
}

impl FeatureSpec {
    /// Builds the spec; half-lives are sorted, activity names de-duplicated.
    pub fn new(
        half_lives_days: &[f64],
        activity_names: &[String],
        dedup_window_ms: Millis,
    ) -> Self {
        let mut half_lives_days = half_lives_days.to_vec();
        half_lives_days.sort_by(f64::total_cmp);
        half_lives_days.dedup();
        let mut activity_names = activity_names.to_vec();
        activity_names.sort();
        activity_names.dedup();
        let lambdas = half_lives_days
            .iter()
            .map(|h| std::f64::consts::LN_2 / (h * DAY_MS as f64))
            .collect();
        let mut spec = Self {
            half_lives_days,
            activity_names,
            dedup_window_ms,
            return_gap_ms: 60 * DAY_MS,
            lambdas,
            names: Vec::new(),
            groups: HashMap::new(),
        };
        (spec.names, spec.groups) = spec.build_names();
        spec
    }

    /// Feature names, in the order of [`FeatureSpec::extract`]'s output
    /// (the model's [`BGNBD_NO_PURCHASE`] is not among them: the model
    /// computes it from these).
    pub fn names(&self) -> &[String] {
        &self.names
    }

    fn signal_names(&self) -> Vec<String> {
        SIGNALS
            .iter()
            .map(|s| s.to_string())
            .chain(self.activity_names.iter().map(|n| format!("activity_{n}")))
            .collect()
    }

    /// The features `train` fits by default: levels on log scales, changes
    /// against the customer's own longer-run rates, and engagement against
    /// the customer's own habits. Every other computed feature stays
    /// available to model files that name it.
    pub fn model_features(&self) -> Vec<String> {
        let legacy_rate =
            |n: &str| (n.contains("_rate_") && !n.ends_with("_log")) || n.ends_with("_trend");
        self.names
            .iter()
            .filter(|n| {
                !legacy_rate(n)
                    && !matches!(
                        n.as_str(),
                        "recency_days" | "purchase_recency_days" | "tenure_days"
                    )
            })
            .cloned()
            .collect()
    }

    /// The names and behaviours of [`crate::pipeline::feature_defs::FEATURES`]
    /// with this spec's signals and half-lives.
    fn build_names(&self) -> (Vec<String>, HashMap<String, String>) {
        let defs = crate::pipeline::feature_defs::expand(
            &self.signal_names(),
            &self.half_lives_days,
            fmt_days,
        );
        let names = defs.iter().map(|(n, _)| n.clone()).collect();
        let mut groups: HashMap<String, String> = defs.into_iter().collect();
        groups.insert(BGNBD_NO_PURCHASE.into(), "purchase_rhythm".into());
        (names, groups)
    }

    /// The behaviour a feature describes, so that the 7/30/90-day windows
    /// and the changes of one behaviour make one reason: a signal name
    /// (`sessions`, `activity_login`, `engagement`, ...), or `silence`,
    /// `active_days`, `purchase_recency`, `purchase_rhythm`, `tenure`,
    /// `spend`, `refunds`, `subscription`, `nps`, `marketing` (see
    /// [`crate::pipeline::feature_defs`]); a name the spec does not compute
    /// is its own.
    pub fn group_of<'a>(&'a self, name: &'a str) -> &'a str {
        self.groups.get(name).map_or(name, String::as_str)
    }

    /// The direction in which a feature may move the churn risk, where the
    /// meaning is not in doubt: more engagement (any window, any change
    /// upwards) never raises it, a longer silence and more complaints,
    /// tickets or failed payments never lower it. `train` holds fitted
    /// weights to these signs, so reasons never read backwards.
    pub fn expected_sign(&self, name: &str) -> Option<f64> {
        crate::pipeline::feature_defs::sign_of(self.group_of(name))
    }

    /// Feature values of `state` as of `now`, in [`FeatureSpec::names`] order.
    pub fn extract(&self, s: &CustomerState, now: Millis) -> Vec<f64> {
        let mut out = Vec::with_capacity(self.names.len());
        self.extract_into(s, now, &mut out);
        out
    }

    /// Like [`Self::extract`], into a reused buffer (cleared first).
    pub fn extract_into(&self, s: &CustomerState, now: Millis, out: &mut Vec<f64>) {
        out.clear();
        let days = |ms: Millis| (ms.max(0) as f64) / DAY_MS as f64;
        let tenure = days(now - s.first_seen);
        let engaged = s.last_engaged.unwrap_or(s.first_seen);
        out.push(days(now - engaged));
        out.push(s.last_purchase.map(|t| days(now - t)).unwrap_or(tenure));
        out.push(tenure);
        out.push((s.purchases as f64).ln_1p());
        out.push((s.gross - s.refunded).max(0.0).ln_1p());
        let aov = if s.purchases > 0 {
            s.gross / s.purchases as f64
        } else {
            0.0
        };
        out.push(aov.ln_1p());
        out.push(if s.gross > 0.0 {
            (s.refunded / s.gross).min(1.0)
        } else {
            0.0
        });
        let nh = self.half_lives_days.len();
        // Observed span, so a new customer's rates are not diluted by the
        // part of a long half-life before they existed. The floor keeps a
        // customer's very first events from reading as huge daily rates.
        let span = (now - s.first_seen).max(MIN_RATE_SPAN_MS) as f64;
        let since_anchor = (now - s.rate_anchor) as f64;
        // One factor per half-life turns a stored decayed sum into a rate at
        // `now`: decay since the anchor, and per day. A decayed sum with
        // half-life h of a steady rate r over a span T equals
        // r·(h/ln2)·(1 − 2^(−T/h)), so the result is events per day.
        let mut factor = [0.0f64; MAX_HALF_LIVES];
        let factor = &mut factor[..nh];
        for (i, (l, h)) in self.lambdas.iter().zip(&self.half_lives_days).enumerate() {
            let coverage = 1.0 - (-l * span).exp();
            factor[i] = (-l * since_anchor).exp() * std::f64::consts::LN_2 / h / coverage;
        }
        let factor = &*factor;
        let mut push_rates = |sums: &[f64]| {
            let first = out.len();
            for (i, f) in factor.iter().enumerate() {
                out.push(sums.get(i).copied().unwrap_or(0.0) * f);
            }
            if nh > 1 {
                let short = out[first];
                let long = out[first + nh - 1];
                out.push(((short + TREND_EPSILON) / (long + TREND_EPSILON)).ln());
            }
        };
        for sig in 0..SIGNALS.len() {
            push_rates(s.rates.get(sig * nh..(sig + 1) * nh).unwrap_or(&[]));
        }
        for name in &self.activity_names {
            let sums = s
                .activity_rates
                .iter()
                .find(|(n, _)| n == name)
                .map(|(_, v)| v.as_slice())
                .unwrap_or(&[]);
            push_rates(sums);
        }
        let status = s.subscription.as_ref().map(|l| l.value);
        out.push(f64::from(u8::from(status == Some(SubStatus::Active))));
        out.push(f64::from(u8::from(status == Some(SubStatus::Cancelled))));
        out.push(s.plan_value.as_ref().map(|l| l.value).unwrap_or(0.0));
        let nps = s.nps.as_ref().map(|l| l.value);
        out.push(f64::from(u8::from(nps.is_some())));
        out.push(f64::from(u8::from(nps.is_some_and(|n| n <= 6))));
        out.push(f64::from(u8::from(nps.is_some_and(|n| n >= 9))));
        out.push(f64::from(u8::from(s.has_marketing_consent())));
        out.push(f64::from(u8::from(s.is_unsubscribed())));
        // Engagement against the customer's own habits.
        let recency = out[0];
        out.push(recency.ln_1p());
        out.push(out[1].ln_1p());
        out.push(tenure.ln_1p());
        let now_day = now.div_euclid(DAY_MS);
        let lived_days = (now_day - s.first_seen.div_euclid(DAY_MS) + 1).max(1);
        let mut shares = [0.0; ACTIVE_WINDOWS.len()];
        for (share, w) in shares.iter_mut().zip(ACTIVE_WINDOWS) {
            *share = s.active_days(now_day, w) as f64 / w.min(lived_days) as f64;
            out.push(*share);
        }
        let (short, mid, long) = (shares[0], shares[1], shares[ACTIVE_WINDOWS.len() - 1]);
        out.push(((mid + SHARE_EPSILON) / (long + SHARE_EPSILON)).ln());
        // The same as plain ratios (churn risk rises about linearly as
        // activity falls against its usual level), capped.
        out.push(((mid + SHARE_EPSILON) / (long + SHARE_EPSILON)).min(RATIO_CAP));
        out.push(((short + SHARE_EPSILON) / (mid + SHARE_EPSILON)).min(RATIO_CAP));
        let engaged_span = s
            .last_engaged
            .zip(s.first_engaged)
            .map_or(0, |(l, f)| l.div_euclid(DAY_MS) - f.div_euclid(DAY_MS) + 1);
        let life = match s.first_engaged {
            Some(f) if s.engaged_days > 0 => {
                f64::from(s.engaged_days)
                    / (now_day - f.div_euclid(DAY_MS) + 1)
                        .max(engaged_span)
                        .max(1) as f64
            }
            _ => 0.0,
        };
        out.push(((mid + SHARE_EPSILON) / (life + SHARE_EPSILON)).ln());
        // How many active days the silence has cost, at the customer's own
        // lifetime share of active days; and the silence against the
        // customer's usual gap between active days.
        let span_days = match (s.first_engaged, s.last_engaged) {
            (Some(f), Some(l)) => (l.div_euclid(DAY_MS) - f.div_euclid(DAY_MS)) as f64,
            _ => 0.0,
        };
        out.push((recency * s.active_share()).ln_1p());
        let usual_gap = if s.engaged_days > 1 {
            span_days / f64::from(s.engaged_days - 1)
        } else {
            tenure
        }
        .max(1.0);
        out.push((recency / usual_gap).ln_1p());
        out.push(match (&s.plan_value, &s.plan_value_first) {
            (Some(l), Some(f)) if f.value > 0.0 && l.value > 0.0 => (l.value / f.value).ln(),
            _ => 0.0,
        });
        // Levels on a log scale and changes against the longest half-life,
        // per signal and for all engagement together.
        let nsig = SIGNALS.len() + self.activity_names.len();
        let block = nh + usize::from(nh > 1);
        // Each signal's rates, then all engagement's, copied to the stack
        // (an extraction allocates nothing: the re-score projection runs it
        // up to 28 times a customer).
        let rate = |out: &[f64], sig: usize, h: usize| out[7 + sig * block + h];
        let mut eng = [0.0f64; MAX_HALF_LIVES];
        for (h, e) in eng.iter_mut().enumerate().take(nh) {
            *e = [SESSIONS, PURCHASES, ACTIVITY_OTHER]
                .into_iter()
                .chain(SIGNALS.len()..nsig)
                .map(|sig| rate(out, sig, h))
                .sum();
        }
        let eng = &eng[..nh];
        if nh > 0 {
            for sig in 0..=nsig {
                let mut rates = [0.0f64; MAX_HALF_LIVES];
                for (h, r) in rates.iter_mut().enumerate().take(nh) {
                    *r = if sig < nsig {
                        rate(out, sig, h)
                    } else {
                        eng[h]
                    };
                }
                let long = rates[nh - 1] + TREND_EPSILON;
                out.push(long.ln());
                for r in &rates[..nh - 1] {
                    out.push(((r + TREND_EPSILON) / long).ln());
                }
            }
            let long = eng[nh - 1] + TREND_EPSILON;
            for r in &eng[..nh - 1] {
                out.push(((r + TREND_EPSILON) / long).min(RATIO_CAP));
            }
            // The same change as a Poisson deviation: events in the short
            // window against those the usual rate expects there, in
            // standard deviations, so a change means as much for a quiet
            // customer as for a busy one.
            for (r, h) in eng[..nh - 1].iter().zip(&self.half_lives_days) {
                let window = h / std::f64::consts::LN_2;
                let (seen, expected) = (r * window, eng[nh - 1] * window);
                out.push((seen - expected) / (expected + 1.0).sqrt());
            }
            // Recent engagement against the customer's lifetime average
            // rate, which a fade under way has not yet pulled down much.
            let lived = (now - s.first_seen).max(MIN_RATE_SPAN_MS) as f64 / DAY_MS as f64;
            let life = s.engagement_events / lived + TREND_EPSILON;
            for r in &eng[..nh - 1] {
                out.push(((r + TREND_EPSILON) / life).ln());
            }
        }
        let expected = 14.0 * long;
        out.push(
            (f64::from(s.active_days(now_day, 14)) - expected)
                / (expected * (1.0 - long) + 1.0).sqrt(),
        );
        debug_assert_eq!(out.len(), self.names.len());
    }

    /// Adds weight `w` at time `t` to the decayed sums `sums` anchored at
    /// `anchor` (the caller moves the anchor first with [`Self::advance`]).
    fn add(&self, sums: &mut Vec<f64>, anchor: Millis, t: Millis, w: f64) {
        sums.resize(self.lambdas.len(), 0.0);
        for (sum, lambda) in sums.iter_mut().zip(&self.lambdas) {
            *sum += w * (-lambda * (anchor - t) as f64).exp();
        }
    }

    /// Moves every decayed sum of `s` to the anchor `t` if `t` is later.
    fn advance(&self, s: &mut CustomerState, t: Millis) {
        if t <= s.rate_anchor {
            return;
        }
        let dt = (t - s.rate_anchor) as f64;
        let factors: Vec<f64> = self.lambdas.iter().map(|l| (-l * dt).exp()).collect();
        let nh = factors.len();
        for (i, v) in s.rates.iter_mut().enumerate() {
            *v *= factors[i % nh];
        }
        for (_, sums) in s.activity_rates.iter_mut() {
            for (v, f) in sums.iter_mut().zip(&factors) {
                *v *= f;
            }
        }
        s.rate_anchor = t;
    }

    /// Adds an event to a signal's decayed rate.
    fn bump(&self, s: &mut CustomerState, signal: usize, t: Millis, w: f64) {
        let nh = self.lambdas.len();
        s.rates.resize(SIGNALS.len() * nh, 0.0);
        let mut sums = s.rates[signal * nh..(signal + 1) * nh].to_vec();
        self.add(&mut sums, s.rate_anchor, t, w);
        s.rates[signal * nh..(signal + 1) * nh].copy_from_slice(&sums);
    }

    fn bump_activity(&self, s: &mut CustomerState, name: &str, t: Millis, w: f64) {
        let anchor = s.rate_anchor;
        let idx = match s
            .activity_rates
            .binary_search_by(|(n, _)| n.as_str().cmp(name))
        {
            Ok(i) => i,
            Err(i) => {
                s.activity_rates.insert(i, (name.to_string(), Vec::new()));
                i
            }
        };
        let sums = &mut s.activity_rates[idx].1;
        self.add(sums, anchor, t, w);
    }

    /// Applies one validated, non-duplicate event to the state.
    ///
    /// Erasure is handled by the pipeline (it removes the state).
    pub fn apply(&self, s: &mut CustomerState, e: &Event) {
        let t = e.occurred_at;
        let tie = crate::pipeline::event::stable_hash(&[e.event_id.as_bytes()]);
        if s.first_seen == 0 || t < s.first_seen {
            s.first_seen = t;
        }
        s.last_seen = s.last_seen.max(t);
        if e.kind.is_engagement() {
            if let Some(prev) = s
                .last_engaged
                .or((s.first_seen < t).then_some(s.first_seen))
            {
                if t - prev >= self.return_gap_ms {
                    s.returned_at = Some(s.returned_at.map_or(t, |r| r.max(t)));
                }
            }
            s.last_engaged = Some(s.last_engaged.map_or(t, |l| l.max(t)));
            s.first_engaged = Some(s.first_engaged.map_or(t, |f| f.min(t)));
            s.mark_active_day(t);
            s.engagement_events += match &e.kind {
                EventKind::Activity { count, .. } => *count as f64,
                _ => 1.0,
            };
        }
        for (k, v) in &e.attributes {
            set_latest_in(&mut s.attributes, k, v.clone(), t, tie);
        }
        self.advance(s, t);
        match &e.kind {
            EventKind::Purchase { amount, .. } => {
                s.purchases += 1;
                s.gross += amount;
                s.last_purchase = Some(s.last_purchase.map_or(t, |l| l.max(t)));
                self.bump(s, PURCHASES, t, 1.0);
            }
            EventKind::Refund { amount, .. } => {
                s.refunds += 1;
                s.refunded += amount;
            }
            EventKind::Session { .. } => self.bump(s, SESSIONS, t, 1.0),
            EventKind::Email { action, .. } => match action {
                EmailAction::Open => self.bump(s, EMAIL_OPENS, t, 1.0),
                EmailAction::Click => self.bump(s, EMAIL_CLICKS, t, 1.0),
                EmailAction::Unsubscribe => set_latest(&mut s.unsubscribed, true, t, tie),
                EmailAction::Delivered | EmailAction::Bounce => {}
            },
            EventKind::SupportTicket { is_complaint, .. } => {
                s.tickets += 1;
                self.bump(s, TICKETS, t, 1.0);
                if *is_complaint {
                    s.complaints += 1;
                    self.bump(s, COMPLAINTS, t, 1.0);
                }
            }
            EventKind::Subscription {
                action,
                monthly_value,
                ..
            } => {
                let status = match action {
                    SubscriptionAction::Cancel => Some(SubStatus::Cancelled),
                    SubscriptionAction::PaymentFailed => None,
                    _ => Some(SubStatus::Active),
                };
                if let Some(status) = status {
                    set_latest(&mut s.subscription, status, t, tie);
                }
                if *action == SubscriptionAction::PaymentFailed {
                    s.payment_failures += 1;
                    self.bump(s, PAYMENT_FAILURES, t, 1.0);
                }
                if let Some(v) = monthly_value {
                    set_latest(&mut s.plan_value, *v, t, tie);
                    set_earliest(&mut s.plan_value_first, *v, t, tie);
                }
            }
            EventKind::Survey { nps } => set_latest(&mut s.nps, *nps, t, tie),
            EventKind::Activity { name, count } => {
                let w = *count as f64;
                if self.activity_names.iter().any(|n| n == name) {
                    self.bump_activity(s, name, t, w);
                } else {
                    self.bump(s, ACTIVITY_OTHER, t, w);
                }
            }
            EventKind::Consent { marketing } => {
                set_latest(&mut s.consent, *marketing, t, tie);
                if *marketing {
                    // Opting in again also lifts an earlier email unsubscribe.
                    set_latest(&mut s.unsubscribed, false, t, tie);
                }
            }
            EventKind::Erasure => {}
        }
    }
}

fn fmt_days(h: f64) -> String {
    if h.fract() == 0.0 {
        format!("{}", h as i64)
    } else {
        format!("{h}")
    }
}

/// Subscription status, from the newest subscription event.
#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
pub enum SubStatus {
    Active,
    Cancelled,
}

/// A value with the event time (and event-id hash, for ties) that set it.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct Latest<T> {
    pub value: T,
    pub at: Millis,
    #[serde(with = "fixed_hash")]
    pub tie: u64,
}

fn set_latest<T>(slot: &mut Option<Latest<T>>, value: T, at: Millis, tie: u64) {
    let newer = match slot {
        None => true,
        Some(l) => (at, tie) > (l.at, l.tie),
    };
    if newer {
        *slot = Some(Latest { value, at, tie });
    }
}

fn set_earliest<T>(slot: &mut Option<Latest<T>>, value: T, at: Millis, tie: u64) {
    if slot.as_ref().is_none_or(|l| (at, tie) < (l.at, l.tie)) {
        *slot = Some(Latest { value, at, tie });
    }
}

fn set_latest_in(
    map: &mut BTreeMap<String, Latest<String>>,
    key: &str,
    value: String,
    at: Millis,
    tie: u64,
) {
    match map.get_mut(key) {
        Some(l) if (at, tie) <= (l.at, l.tie) => {}
        Some(l) => *l = Latest { value, at, tie },
        None => {
            map.insert(key.to_string(), Latest { value, at, tie });
        }
    }
}

/// Everything the service keeps about one customer.
#[derive(Serialize, Deserialize, Debug, Clone, Default, PartialEq)]
pub struct CustomerState {
    /// Earliest event time seen.
    pub first_seen: Millis,
    /// Latest event time seen (any type).
    pub last_seen: Millis,
    /// Latest purchase, session or activity.
    pub last_engaged: Option<Millis>,
    /// Latest purchase.
    pub last_purchase: Option<Millis>,
    /// Purchases counted.
    pub purchases: u32,
    /// Refunds counted.
    pub refunds: u32,
    /// Sum of purchase amounts, base currency.
    pub gross: f64,
    /// Sum of refund amounts, base currency.
    pub refunded: f64,
    /// Support tickets counted.
    pub tickets: u32,
    /// Tickets flagged as complaints.
    pub complaints: u32,
    /// Failed subscription payments counted.
    pub payment_failures: u32,
    /// The time all decayed sums are referred to.
    pub rate_anchor: Millis,
    /// Decayed sums: `SIGNALS` × half-lives.
    pub rates: Vec<f64>,
    /// Decayed sums of configured activity names, sorted by name.
    pub activity_rates: Vec<(String, Vec<f64>)>,
    /// Subscription status.
    pub subscription: Option<Latest<SubStatus>>,
    /// Monthly value of the plan, base currency.
    pub plan_value: Option<Latest<f64>>,
    /// Latest NPS answer.
    pub nps: Option<Latest<u8>>,
    /// Marketing consent (absent: never stated).
    pub consent: Option<Latest<bool>>,
    /// Unsubscribed from email.
    pub unsubscribed: Option<Latest<bool>>,
    /// Latest value per attribute key.
    pub attributes: BTreeMap<String, Latest<String>>,
    /// Recent (event time, event-id hash) pairs for de-duplication, sorted.
    /// A hash is stored as its 8 bytes (a varint of a random number takes
    /// 10).
    #[serde(with = "fixed_hashes")]
    pub seen: Vec<(Millis, u64)>,
    /// Alert hysteresis state.
    pub alert: AlertState,
    /// When this customer is next re-scored if nothing arrives.
    pub next_due: Option<Millis>,
    /// Latest engagement that ended a silence of at least the spec's
    /// `return_gap_ms` (in event order; a late event filling the gap does
    /// not undo it).
    pub returned_at: Option<Millis>,
    /// Campaign contacts, held triggers and alerts awaiting an outcome.
    pub contact: ContactState,
    /// Earliest purchase, session or activity.
    pub first_engaged: Option<Millis>,
    /// Distinct UTC days with a purchase, session or activity.
    pub engaged_days: u32,
    /// Engaged days of the last [`DAY_BITS`] days: bit `i` is the day
    /// `day_anchor - i`.
    pub day_bits: u128,
    /// UTC day index of bit 0: the newest engaged day.
    pub day_anchor: i64,
    /// The earliest monthly plan value (a rise since is a price rise).
    pub plan_value_first: Option<Latest<f64>>,
    /// Purchases, sessions and activity counts over the customer's life.
    pub engagement_events: f64,
    /// Experiment variants drawn, and the baseline of the alert awaiting
    /// its outcome (state version 5).
    pub experiments: crate::pipeline::experiment::Enrolments,
}

/// An event-id hash stored as its 8 little-endian bytes. For bincode's
/// fixed-width integers that is the same layout as a `u64`, so states
/// written before this stay readable.
mod fixed_hash {
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    pub fn serialize<S: Serializer>(h: &u64, s: S) -> Result<S::Ok, S::Error> {
        h.to_le_bytes().serialize(s)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
        <[u8; 8]>::deserialize(d).map(u64::from_le_bytes)
    }
}

/// The de-duplication pairs, each hash as in [`fixed_hash`].
mod fixed_hashes {
    use serde::{Deserialize, Deserializer, Serializer};

    use crate::pipeline::event::Millis;

    pub fn serialize<S: Serializer>(seen: &[(Millis, u64)], s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(seen.iter().map(|&(t, h)| (t, h.to_le_bytes())))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<(Millis, u64)>, D::Error> {
        let pairs = Vec::<(Millis, [u8; 8])>::deserialize(d)?;
        Ok(pairs
            .into_iter()
            .map(|(t, h)| (t, u64::from_le_bytes(h)))
            .collect())
    }
}

/// Result of the de-duplication check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Seen {
    /// Not seen before: apply it.
    New,
    /// The same event id was already applied.
    Duplicate,
    /// Older than the window: cannot be told from a duplicate.
    TooLate,
}

impl CustomerState {
    /// Records engagement on the UTC day of `t`. The same in any order:
    /// a day is counted once, and days older than [`DAY_BITS`] behind the
    /// newest engaged day are never marked (events that old are refused as
    /// too late, as long as `features.dedup_window_days` stays below
    /// [`DAY_BITS`] days).
    fn mark_active_day(&mut self, t: Millis) {
        let day = t.div_euclid(DAY_MS);
        if self.day_bits == 0 || day > self.day_anchor {
            let shift = if self.day_bits == 0 {
                DAY_BITS
            } else {
                day - self.day_anchor
            };
            self.day_bits = if shift >= DAY_BITS {
                0
            } else {
                self.day_bits << shift
            };
            self.day_anchor = day;
        }
        let i = self.day_anchor - day;
        if i < DAY_BITS && self.day_bits & (1u128 << i) == 0 {
            self.day_bits |= 1u128 << i;
            self.engaged_days += 1;
        }
    }

    /// The share of days with engagement from the first engaged day to the
    /// last (0 before any engagement).
    pub fn active_share(&self) -> f64 {
        match (self.first_engaged, self.last_engaged) {
            (Some(f), Some(l)) if self.engaged_days > 0 => {
                let span = (l.div_euclid(DAY_MS) - f.div_euclid(DAY_MS)) as f64;
                f64::from(self.engaged_days) / (span + 1.0)
            }
            _ => 0.0,
        }
    }

    /// The active days a silence up to `now` has cost the customer at
    /// their lifetime share of active days: how unusual it is for them (a
    /// silence of `k` such days has a chance of about e^-k).
    /// 0 until the customer has [`MIN_HABIT_DAYS`] engaged days: too few to
    /// call a silence unusual for them.
    pub fn missed_active_days(&self, now: Millis) -> f64 {
        if self.engaged_days < MIN_HABIT_DAYS {
            return 0.0;
        }
        let engaged = self.last_engaged.unwrap_or(self.first_seen);
        (now - engaged).max(0) as f64 / DAY_MS as f64 * self.active_share()
    }

    /// Days with engagement in the `window` days ending with `today`.
    pub fn active_days(&self, today: i64, window: i64) -> u32 {
        // Bits for days in (today - window, today]: i in [anchor - today,
        // anchor - today + window).
        let lo = (self.day_anchor - today).clamp(0, DAY_BITS);
        let hi = (self.day_anchor - today + window).clamp(0, DAY_BITS);
        if hi <= lo {
            return 0;
        }
        let span = hi - lo;
        let mask = if span >= DAY_BITS {
            u128::MAX
        } else {
            (1u128 << span) - 1
        };
        ((self.day_bits >> lo) & mask).count_ones()
    }

    /// Whether the customer may receive marketing: explicit consent and not
    /// unsubscribed.
    pub fn has_marketing_consent(&self) -> bool {
        self.consent.as_ref().is_some_and(|l| l.value) && !self.is_unsubscribed()
    }

    /// Whether the latest email status is unsubscribed.
    pub fn is_unsubscribed(&self) -> bool {
        self.unsubscribed.as_ref().is_some_and(|l| l.value)
    }

    /// Checks the event id against the recent ids and records it if new.
    ///
    /// Ids are kept for `window` of event time behind the newest event of the
    /// customer. An event older than that is [`Seen::TooLate`].
    pub fn check_and_record(&mut self, event_id: &str, t: Millis, window: Millis) -> Seen {
        let newest = self.last_seen.max(t);
        if self.first_seen != 0 && t < self.last_seen - window {
            return Seen::TooLate;
        }
        let h = crate::pipeline::event::stable_hash(&[event_id.as_bytes()]);
        if self.seen.iter().any(|(_, x)| *x == h) {
            return Seen::Duplicate;
        }
        let pos = self.seen.partition_point(|(at, _)| *at <= t);
        self.seen.insert(pos, (t, h));
        let keep_from = self.seen.partition_point(|(at, _)| *at < newest - window);
        self.seen.drain(..keep_from);
        Seen::New
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipeline::event::EventKind;

    pub fn spec() -> FeatureSpec {
        FeatureSpec::new(&[7.0, 30.0, 90.0], &["login".to_string()], 7 * DAY_MS)
    }

    /// Model files name features, and `extract` fills them by position:
    /// the names and their order are pinned here (a reordered feature
    /// table fails this before it moves values under other names).
    #[test]
    fn the_feature_names_and_their_order_are_pinned() {
        const NAMES: &str = "\
        recency_days purchase_recency_days tenure_days purchase_count_log monetary_log \
        avg_order_value_log refund_share sessions_rate_7d sessions_rate_30d \
        sessions_rate_90d sessions_trend purchases_rate_7d purchases_rate_30d \
        purchases_rate_90d purchases_trend email_opens_rate_7d email_opens_rate_30d \
        email_opens_rate_90d email_opens_trend email_clicks_rate_7d email_clicks_rate_30d \
        email_clicks_rate_90d email_clicks_trend support_tickets_rate_7d \
        support_tickets_rate_30d support_tickets_rate_90d support_tickets_trend \
        complaints_rate_7d complaints_rate_30d complaints_rate_90d complaints_trend \
        payment_failures_rate_7d payment_failures_rate_30d payment_failures_rate_90d \
        payment_failures_trend activity_other_rate_7d activity_other_rate_30d \
        activity_other_rate_90d activity_other_trend activity_login_rate_7d \
        activity_login_rate_30d activity_login_rate_90d activity_login_trend \
        subscription_active subscription_cancelled subscription_monthly_value nps_known \
        nps_detractor nps_promoter marketing_consent unsubscribed recency_days_log \
        purchase_recency_days_log tenure_days_log active_share_7d active_share_28d \
        active_share_112d active_share_change active_share_ratio active_share_recent_ratio \
        active_share_vs_life silence_surprise recency_vs_gap_log plan_value_change \
        sessions_rate_90d_log sessions_change_7d sessions_change_30d purchases_rate_90d_log \
        purchases_change_7d purchases_change_30d email_opens_rate_90d_log \
        email_opens_change_7d email_opens_change_30d email_clicks_rate_90d_log \
        email_clicks_change_7d email_clicks_change_30d support_tickets_rate_90d_log \
        support_tickets_change_7d support_tickets_change_30d complaints_rate_90d_log \
        complaints_change_7d complaints_change_30d payment_failures_rate_90d_log \
        payment_failures_change_7d payment_failures_change_30d activity_other_rate_90d_log \
        activity_other_change_7d activity_other_change_30d activity_login_rate_90d_log \
        activity_login_change_7d activity_login_change_30d engagement_rate_90d_log \
        engagement_change_7d engagement_change_30d engagement_ratio_7d engagement_ratio_30d \
        engagement_deviation_7d engagement_deviation_30d engagement_vs_life_7d \
        engagement_vs_life_30d active_days_deviation_14d";
        let pinned: Vec<&str> = NAMES.split_whitespace().collect();
        assert_eq!(spec().names(), pinned.as_slice());
        let s = spec();
        let values = s.extract(&CustomerState::default(), 0);
        assert_eq!(values.len(), pinned.len());
        // Every stored signal is a behaviour of the table.
        for signal in SIGNALS {
            assert!(
                crate::pipeline::feature_defs::BEHAVIOURS
                    .iter()
                    .any(|b| b.name == signal),
                "{signal}"
            );
        }
    }

    fn ev(id: &str, day: f64, kind: EventKind) -> Event {
        Event {
            event_id: id.into(),
            customer_id: "c".into(),
            occurred_at: 1_700_000_000_000 + (day * DAY_MS as f64) as Millis,
            attributes: BTreeMap::new(),
            kind,
        }
    }

    fn history() -> Vec<Event> {
        let mut v = Vec::new();
        for d in 0..40 {
            v.push(ev(
                &format!("s{d}"),
                d as f64 * 1.5,
                EventKind::Session {
                    duration_seconds: 60.0,
                    page_views: 3,
                    channel: None,
                },
            ));
            if d % 5 == 0 {
                v.push(ev(
                    &format!("p{d}"),
                    d as f64 * 1.5 + 0.1,
                    EventKind::Purchase {
                        amount: 10.0 + d as f64,
                        order_id: None,
                    },
                ));
            }
            if d % 7 == 0 {
                v.push(ev(
                    &format!("a{d}"),
                    d as f64 * 1.5 + 0.2,
                    EventKind::Activity {
                        name: if d % 2 == 0 {
                            "login".into()
                        } else {
                            "post".into()
                        },
                        count: 2,
                    },
                ));
            }
        }
        v.push(ev(
            "r",
            20.0,
            EventKind::Refund {
                amount: 5.0,
                order_id: None,
            },
        ));
        v.push(ev("n1", 10.0, EventKind::Survey { nps: 3 }));
        v.push(ev("n2", 30.0, EventKind::Survey { nps: 9 }));
        v.push(ev("c1", 1.0, EventKind::Consent { marketing: true }));
        v.sort_by_key(|e| e.occurred_at);
        v
    }

    fn run(events: &[Event]) -> CustomerState {
        let spec = spec();
        let mut s = CustomerState::default();
        for e in events {
            if s.check_and_record(&e.event_id, e.occurred_at, spec.dedup_window_ms) == Seen::New {
                spec.apply(&mut s, e);
            }
        }
        s
    }

    fn close(a: &[f64], b: &[f64]) -> bool {
        a.len() == b.len()
            && a.iter()
                .zip(b)
                .all(|(x, y)| (x - y).abs() <= 1e-9 * (1.0 + x.abs().max(y.abs())))
    }

    #[test]
    fn names_match_values() {
        let spec = spec();
        let s = run(&history());
        assert_eq!(spec.extract(&s, s.last_seen).len(), spec.names().len());
        assert!(spec
            .names()
            .contains(&"activity_login_rate_30d".to_string()));
        assert!(spec.names().contains(&"sessions_trend".to_string()));
    }

    #[test]
    fn state_does_not_depend_on_event_order() {
        let spec = spec();
        let events = history();
        let forward = run(&events);
        let mut rev = events.clone();
        rev.reverse();
        // Reversed order is far outside the 7-day window for the oldest events,
        // so compare with a window covering the history.
        let wide = FeatureSpec::new(&[7.0, 30.0, 90.0], &["login".to_string()], 365 * DAY_MS);
        let run_wide = |evs: &[Event]| {
            let mut s = CustomerState::default();
            for e in evs {
                if s.check_and_record(&e.event_id, e.occurred_at, wide.dedup_window_ms) == Seen::New
                {
                    wide.apply(&mut s, e);
                }
            }
            s
        };
        let a = run_wide(&events);
        let b = run_wide(&rev);
        let now = a.last_seen + 3 * DAY_MS;
        assert!(close(&wide.extract(&a, now), &wide.extract(&b, now)));
        assert_eq!(a.nps, b.nps);
        assert_eq!(
            (a.purchases, a.gross, a.first_seen),
            (b.purchases, b.gross, b.first_seen)
        );
        // And the narrow window gives the same features in order.
        assert!(close(&spec.extract(&forward, now), &wide.extract(&a, now)));
    }

    #[test]
    fn decayed_rate_halves_after_one_half_life() {
        let spec = spec();
        let s = run(&[ev(
            "s",
            0.0,
            EventKind::Session {
                duration_seconds: 1.0,
                page_views: 1,
                channel: None,
            },
        )]);
        let names = spec.names();
        let i = names.iter().position(|n| n == "sessions_rate_7d").unwrap();
        let r0 = spec.extract(&s, s.last_seen)[i];
        let r7 = spec.extract(&s, s.last_seen + 7 * DAY_MS)[i];
        // Both readings use the 7-day floor of the observed span.
        assert!((r7 / r0 - 0.5).abs() < 1e-12, "{r0} {r7}");
    }

    #[test]
    fn rfm_and_latest_values() {
        let spec = spec();
        let s = run(&history());
        let f = spec.extract(&s, s.last_seen);
        let get = |n: &str| f[spec.names().iter().position(|x| x == n).unwrap()];
        assert_eq!(s.purchases, 8);
        let gross: f64 = (0..40)
            .filter(|d| d % 5 == 0)
            .map(|d| 10.0 + d as f64)
            .sum();
        assert!((s.gross - gross).abs() < 1e-9);
        assert!((get("monetary_log") - (gross - 5.0).ln_1p()).abs() < 1e-9);
        // The later survey wins even though both arrive.
        assert_eq!(s.nps.as_ref().unwrap().value, 9);
        assert_eq!(get("nps_promoter"), 1.0);
        assert_eq!(get("marketing_consent"), 1.0);
        assert_eq!(get("recency_days"), 0.0);
    }

    #[test]
    fn fading_customer_has_negative_trend() {
        let spec = spec();
        let mut events = Vec::new();
        for d in 0..90 {
            // Daily sessions for 80 days, then nothing.
            if d < 80 {
                events.push(ev(
                    &format!("s{d}"),
                    d as f64,
                    EventKind::Session {
                        duration_seconds: 1.0,
                        page_views: 1,
                        channel: None,
                    },
                ));
            }
        }
        let s = run(&events);
        let at = |day: f64| {
            let now = 1_700_000_000_000 + (day * DAY_MS as f64) as Millis;
            spec.extract(&s, now)[spec
                .names()
                .iter()
                .position(|n| n == "sessions_trend")
                .unwrap()]
        };
        assert!(
            at(79.5).abs() < 0.5,
            "steady customer trend near 0: {}",
            at(79.5)
        );
        assert!(
            at(100.0) < -1.0,
            "faded customer trend negative: {}",
            at(100.0)
        );
    }

    #[test]
    fn habit_features_read_the_right_values_by_name() {
        let spec = spec();
        // A session every day for 100 days, then 10 silent days.
        let events: Vec<Event> = (0..100)
            .map(|d| {
                ev(
                    &format!("s{d}"),
                    d as f64 + 0.5,
                    EventKind::Session {
                        duration_seconds: 1.0,
                        page_views: 1,
                        channel: None,
                    },
                )
            })
            .collect();
        let s = run(&events);
        assert_eq!(s.engaged_days, 100);
        assert_eq!(s.active_share(), 1.0);
        let now = 1_700_000_000_000 + 110 * DAY_MS;
        let f = spec.extract(&s, now);
        let get = |n: &str| f[spec.names().iter().position(|x| x == n).unwrap()];
        assert_eq!(get("active_share_7d"), 0.0);
        assert!(
            (get("active_share_28d") - 18.0 / 28.0).abs() < 0.04,
            "{}",
            get("active_share_28d")
        );
        // 14-day window: 4 active days where the 112-day share expects ~12.6.
        let dev = get("active_days_deviation_14d");
        assert!(dev < -4.0 && dev > -8.0, "{dev}");
        let silent = get("recency_days");
        assert!((silent - 10.5).abs() < 0.6, "{silent}");
        assert!((get("silence_surprise") - silent.ln_1p()).abs() < 1e-9);
        assert!((s.missed_active_days(now) - silent).abs() < 1e-9);
        // Recent engagement far below the lifetime rate of one a day.
        assert!(
            get("engagement_vs_life_7d") < -0.5,
            "{}",
            get("engagement_vs_life_7d")
        );
        assert!(
            get("engagement_change_7d") < -0.5,
            "{}",
            get("engagement_change_7d")
        );
        assert_eq!(spec.group_of("active_days_deviation_14d"), "active_days");
        assert_eq!(spec.group_of("engagement_vs_life_7d"), "engagement");
    }

    #[test]
    fn duplicates_and_too_late_events_are_recognised() {
        let mut s = CustomerState::default();
        let w = 7 * DAY_MS;
        let spec = spec();
        let e = ev("x", 10.0, EventKind::Survey { nps: 5 });
        assert_eq!(s.check_and_record("x", e.occurred_at, w), Seen::New);
        spec.apply(&mut s, &e);
        assert_eq!(s.check_and_record("x", e.occurred_at, w), Seen::Duplicate);
        let late = e.occurred_at - 8 * DAY_MS;
        assert_eq!(s.check_and_record("y", late, w), Seen::TooLate);
        // Within the window, out of order, still new.
        assert_eq!(
            s.check_and_record("z", e.occurred_at - 6 * DAY_MS, w),
            Seen::New
        );
        // Old ids are pruned once the customer moves on.
        let later = e.occurred_at + 30 * DAY_MS;
        assert_eq!(s.check_and_record("w", later, w), Seen::New);
        assert_eq!(s.seen.len(), 1);
    }
}

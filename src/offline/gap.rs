//! The churn gap read from the history itself (`train --churn-gap auto`).
//!
//! **The return curve.** For a silence of `d` days, the share of the
//! customers who were ever silent that long (between two engagements, or
//! still silent at the end of the history) who came back afterwards: an
//! engagement (purchase, session or activity) ended such a silence at
//! least once. Short silences are nearly always followed by a return; past
//! some length few customers ever come back.
//!
//! **The choice.** The gap is the shortest silence after which at most
//! [`RETURN_SHARE`] of the customers came back: days for a daily app,
//! weeks for a weekly shop, months for a furniture shop. A silence still
//! running at the end of the history counts as no return (yet), so the
//! curve reads a little low for long silences in a short history; the
//! training report shows it with the choice.

use std::collections::HashMap;

use serde::Serialize;

use crate::pipeline::event::{Event, DAY_MS};

/// The share of customers who come back after a silence at which it is
/// called churn.
pub const RETURN_SHARE: f64 = 0.10;

/// The shortest churn gap chosen, in days: a silence of a few days is
/// never churn, even for a daily app.
pub const MIN_GAP_DAYS: i64 = 7;

/// The share of customers with subscription events from which a history
/// is a subscription business's (see [`ReturnCurve::subscriptions`]).
pub const SUBSCRIBER_SHARE: f64 = 0.5;

/// Customers who cancelled needed before `--label auto` learns cancels.
pub const MIN_CANCELS: usize = 30;

/// Customers needed before the curve says anything.
pub const MIN_CUSTOMERS: usize = 50;

/// Collects each customer's silences from events in time order.
#[derive(Debug, Default)]
pub struct ReturnCurve {
    /// Customer → (last engaged day, longest silence ended by a return, in days).
    customers: HashMap<String, (i64, u32)>,
    first_day: Option<i64>,
    /// Every customer seen, those with any subscription event, and those
    /// who cancelled.
    seen: std::collections::HashSet<String>,
    subscribers: std::collections::HashSet<String>,
    cancelled: std::collections::HashSet<String>,
}

/// One point of the curve.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct CurvePoint {
    pub silent_days: i64,
    /// Customers who were silent at least this long.
    pub customers: usize,
    /// Of those, the share who came back afterwards.
    pub came_back: f64,
}

/// The gap chosen from the curve, with why.
#[derive(Debug, Clone, Serialize)]
pub struct GapChoice {
    pub days: i64,
    /// The shortest silence after which at most [`RETURN_SHARE`] came
    /// back, when the history shows one.
    pub from_curve: Option<i64>,
    /// The longest gap the history allows for training, when that was
    /// shorter than the curve's choice.
    pub limited_to: Option<i64>,
    pub basis: String,
    pub curve: Vec<CurvePoint>,
}

impl ReturnCurve {
    /// Takes the next event (time order).
    pub fn push(&mut self, e: &Event) {
        let day = e.occurred_at.div_euclid(DAY_MS);
        self.first_day = Some(self.first_day.map_or(day, |f| f.min(day)));
        if !self.seen.contains(&e.customer_id) {
            self.seen.insert(e.customer_id.clone());
        }
        if let crate::pipeline::event::EventKind::Subscription { action, .. } = &e.kind {
            if !self.subscribers.contains(&e.customer_id) {
                self.subscribers.insert(e.customer_id.clone());
            }
            if matches!(action, crate::pipeline::event::SubscriptionAction::Cancel)
                && !self.cancelled.contains(&e.customer_id)
            {
                self.cancelled.insert(e.customer_id.clone());
            }
        }
        if !e.kind.is_engagement() {
            return;
        }
        match self.customers.get_mut(&e.customer_id) {
            Some((last, longest)) => {
                let gap = (day - *last).max(0) as u32;
                *longest = (*longest).max(gap);
                *last = (*last).max(day);
            }
            None => {
                self.customers.insert(e.customer_id.clone(), (day, 0));
            }
        }
    }

    /// The curve as of `end` (the end of the history), for silences of 1
    /// day up to the longest seen.
    pub fn curve(&self, end: crate::pipeline::event::Millis) -> Vec<CurvePoint> {
        let end_day = end.div_euclid(DAY_MS);
        let longest = self
            .customers
            .values()
            .map(|(last, back)| (*back as i64).max(end_day - last))
            .max()
            .unwrap_or(0);
        // Per length: customers whose longest return ends there, and
        // customers whose longest silence (returned or not) ends there.
        let n = longest.max(0) as usize + 1;
        let (mut back_at, mut silent_at) = (vec![0usize; n], vec![0usize; n]);
        for (last, back) in self.customers.values() {
            let open = (end_day - last).max(0) as usize;
            back_at[*back as usize] += 1;
            silent_at[open.max(*back as usize)] += 1;
        }
        // Suffix sums: customers back after a silence of at least d, and
        // customers ever silent at least d.
        let mut out = Vec::with_capacity(n);
        let (mut back, mut silent) = (0usize, 0usize);
        for d in (1..n).rev() {
            back += back_at[d];
            silent += silent_at[d];
            out.push(CurvePoint {
                silent_days: d as i64,
                customers: silent,
                came_back: back as f64 / silent.max(1) as f64,
            });
        }
        out.reverse();
        out
    }

    /// Chooses the gap: the shortest silence after which at most
    /// [`RETURN_SHARE`] came back, at least [`MIN_GAP_DAYS`], and at most
    /// `max_days` (the longest the history allows for training; said when
    /// it binds). Without a usable curve (too few customers, no silence
    /// long enough), `fallback_days`, said so.
    pub fn choose(
        &self,
        end: crate::pipeline::event::Millis,
        max_days: i64,
        fallback_days: i64,
    ) -> GapChoice {
        let curve = self.curve(end);
        let from_curve = (self.customers.len() >= MIN_CUSTOMERS)
            .then(|| {
                curve
                    .iter()
                    .find(|p| p.silent_days >= MIN_GAP_DAYS && p.came_back <= RETURN_SHARE)
                    .map(|p| p.silent_days)
            })
            .flatten();
        let wanted = from_curve.unwrap_or(fallback_days);
        // A history too short for even the shortest gap keeps the wanted
        // one, and `train` then refuses it, saying how much history it
        // needs.
        let days = if max_days >= MIN_GAP_DAYS {
            wanted.min(max_days)
        } else {
            wanted
        };
        let limited_to = (days < wanted).then_some(days);
        let mut basis = match from_curve {
            Some(d) => format!(
                "after {d} days of silence at most {:.0}% of the customers ever came back (the return curve of {} customers)",
                RETURN_SHARE * 100.0,
                self.customers.len()
            ),
            None => format!(
                "the history shows no silence after which at most {:.0}% came back ({} customers); used {fallback_days} days",
                RETURN_SHARE * 100.0,
                self.customers.len()
            ),
        };
        if let Some(d) = limited_to {
            basis.push_str(&format!(
                "; the history is too short for a {wanted}-day gap with these settings, so the longest it allows, {d} days, is used (a longer history, or a shorter --horizon or --snapshot-step, allows more)"
            ));
        }
        // The curve at a readable set of silences for the report.
        let marks = [
            1, 3, 7, 14, 21, 30, 45, 60, 90, 120, 150, 180, 240, 300, 365, 450, 540, 730,
        ];
        let curve = curve
            .into_iter()
            .filter(|p| marks.contains(&p.silent_days) || Some(p.silent_days) == from_curve)
            .collect();
        GapChoice {
            days,
            from_curve,
            limited_to,
            basis,
            curve,
        }
    }

    /// Whether this is a subscription business's history: most customers
    /// (at least [`SUBSCRIBER_SHARE`]) have subscription events and at
    /// least [`MIN_CANCELS`] customers cancelled. Then a cancellation is
    /// the churn that business counts, and `--label auto` predicts it.
    /// Returns the share of subscribers and the customers who cancelled.
    pub fn subscriptions(&self) -> Option<(f64, usize)> {
        let share = self.subscribers.len() as f64 / self.seen.len().max(1) as f64;
        let cancelled = self.cancelled.len();
        (share >= SUBSCRIBER_SHARE && cancelled >= MIN_CANCELS).then_some((share, cancelled))
    }

    /// The first day with any event.
    pub fn first_day(&self) -> Option<i64> {
        self.first_day
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipeline::event::EventKind;
    use std::collections::BTreeMap;

    fn purchase(c: usize, day: i64) -> Event {
        Event {
            event_id: format!("{c}-{day}"),
            customer_id: format!("c{c}"),
            occurred_at: day * DAY_MS + 3_600_000,
            attributes: BTreeMap::new(),
            kind: EventKind::Purchase {
                amount: 10.0,
                order_id: None,
            },
        }
    }

    /// Customers who buy every `every` days for a while; a share of them
    /// stops for good, the rest keep buying.
    fn history(every: i64, customers: usize, days: i64) -> Vec<Event> {
        let mut out = Vec::new();
        for c in 0..customers {
            let stop = if c % 3 == 0 { days / 3 } else { days };
            let offset = c as i64 % every;
            let mut d = offset;
            while d < stop {
                out.push(purchase(c, d));
                // A longer pause now and then (one in four), so the curve
                // falls gradually.
                d += if (d / every) % 4 == 3 {
                    2 * every
                } else {
                    every
                };
            }
        }
        out.sort_by_key(|e| e.occurred_at);
        out
    }

    fn subscription(
        c: usize,
        day: i64,
        action: crate::pipeline::event::SubscriptionAction,
    ) -> Event {
        Event {
            kind: EventKind::Subscription {
                action,
                plan: None,
                monthly_value: None,
            },
            event_id: format!("s{c}-{day}"),
            ..purchase(c, day)
        }
    }

    #[test]
    fn a_subscription_business_is_told_by_its_customers_not_its_events() {
        use crate::pipeline::event::SubscriptionAction::{Cancel, Start};
        let mut shop = ReturnCurve::default();
        let mut saas = ReturnCurve::default();
        for c in 0..200 {
            shop.push(&purchase(c, 1));
            saas.push(&purchase(c, 1));
            saas.push(&subscription(c, 2, Start));
        }
        // 20 customers cancel, each three times (redeliveries): 20, not 60.
        for c in 0..20 {
            for day in [3, 3, 4] {
                saas.push(&subscription(c, day, Cancel));
            }
        }
        assert_eq!(saas.subscriptions(), None, "20 customers cancelled");
        // A few subscribers among many buyers are not a subscription
        // business, however many cancel.
        for c in 0..60 {
            shop.push(&subscription(c, 2, Start));
            shop.push(&subscription(c, 3, Cancel));
        }
        assert_eq!(shop.subscriptions(), None);
        for c in 20..40 {
            saas.push(&subscription(c, 5, Cancel));
        }
        assert_eq!(saas.subscriptions(), Some((1.0, 40)));
    }

    #[test]
    fn the_gap_follows_the_business_rhythm() {
        for (every, lo, hi) in [(2, 7, 7), (7, 14, 21), (60, 120, 180)] {
            let days = 40 * every;
            let mut curve = ReturnCurve::default();
            for e in history(every, 300, days) {
                curve.push(&e);
            }
            let g = curve.choose(days * DAY_MS, 10_000, 30);
            assert!(
                (lo..=hi).contains(&g.days),
                "buying every {every} days: gap {} ({})",
                g.days,
                g.basis
            );
            assert_eq!(g.from_curve, Some(g.days));
            // The curve falls: nearly everyone returns after a day.
            assert!(g.curve[0].came_back > 0.6, "{:?}", g.curve[0]);
        }
    }

    #[test]
    fn a_short_history_gets_the_longest_gap_it_allows_and_says_so() {
        let mut curve = ReturnCurve::default();
        for e in history(60, 300, 2400) {
            curve.push(&e);
        }
        let g = curve.choose(2400 * DAY_MS, 90, 30);
        assert_eq!(g.days, 90);
        assert_eq!(g.limited_to, Some(90));
        assert!(g.basis.contains("too short"), "{}", g.basis);
        // Too few customers: the fallback, said.
        let mut few = ReturnCurve::default();
        for e in history(7, 10, 100) {
            few.push(&e);
        }
        let g = few.choose(100 * DAY_MS, 1000, 30);
        assert_eq!((g.days, g.from_curve), (30, None));
        assert!(g.basis.contains("no silence"), "{}", g.basis);
    }
}

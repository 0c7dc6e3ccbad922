//! Churn onsets read from the data itself, for training labels and
//! backtests.
//!
//! A customer's churn **onset** is the last engagement (purchase, session or
//! activity) before a silence of at least `gap`, or a subscription cancel,
//! whichever comes first in an episode. Onsets closer than `gap` to an
//! earlier one belong to the same episode and are dropped; a customer who
//! engages again after the silence has returned, and a later onset starts a
//! new episode.
//!
//! Events must be fed in event-time order (the offline commands sort their
//! history first). A silence still running at the end of the history counts
//! only once it has lasted `gap`: before that it is not yet known.

use crate::pipeline::event::{Event, EventKind, Millis, SubscriptionAction};

/// One customer's onsets, built from its events in time order.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Track {
    last_engaged: Option<Millis>,
    silences: Vec<Millis>,
    cancels: Vec<Millis>,
}

impl Track {
    /// Takes the customer's next event (time order).
    pub fn push(&mut self, e: &Event, gap: Millis) {
        let t = e.occurred_at;
        if e.kind.is_engagement() {
            if let Some(l) = self.last_engaged {
                if t - l >= gap {
                    self.silences.push(l);
                }
            }
            self.last_engaged = Some(self.last_engaged.map_or(t, |l| l.max(t)));
        } else if matches!(
            e.kind,
            EventKind::Subscription {
                action: SubscriptionAction::Cancel,
                ..
            }
        ) {
            self.cancels.push(t);
        }
    }

    /// Every point known by `end` (the end of the history) that starts a
    /// churn: the start of each silence of at least `gap` and each cancel,
    /// earliest first. Labels use these: whatever the customer did last,
    /// a churn that follows it is found.
    pub fn candidates(&self, end: Millis, gap: Millis) -> Vec<Millis> {
        let mut all: Vec<Millis> = self.silences.iter().chain(&self.cancels).copied().collect();
        if let Some(l) = self.last_engaged.filter(|l| end - l >= gap) {
            all.push(l);
        }
        all.sort_unstable();
        all
    }

    /// Whether `t` is a subscription cancel (not the start of a silence).
    pub fn is_cancel(&self, t: Millis) -> bool {
        self.cancels.contains(&t)
    }

    /// The onsets known by `end`, one per episode (the earliest point of
    /// each; later ones within `gap` of it are the same episode), earliest
    /// first. Lead times are measured to these.
    pub fn onsets(&self, end: Millis, gap: Millis) -> Vec<Millis> {
        let mut out: Vec<Millis> = Vec::new();
        for t in self.candidates(end, gap) {
            if out.last().is_none_or(|k| t - k >= gap) {
                out.push(t);
            }
        }
        out
    }
}

/// The first onset at or after `from`, if any (`onsets` sorted).
pub fn first_from(onsets: &[Millis], from: Millis) -> Option<Millis> {
    onsets.get(onsets.partition_point(|o| *o < from)).copied()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipeline::event::DAY_MS;
    use std::collections::BTreeMap;

    fn ev(day: i64, kind: EventKind) -> Event {
        Event {
            event_id: format!("e{day}"),
            customer_id: "c".into(),
            occurred_at: day * DAY_MS,
            attributes: BTreeMap::new(),
            kind,
        }
    }

    fn session(day: i64) -> Event {
        ev(
            day,
            EventKind::Session {
                duration_seconds: 1.0,
                page_views: 1,
                channel: None,
            },
        )
    }

    #[test]
    fn silences_cancels_and_returns() {
        let gap = 30 * DAY_MS;
        let mut t = Track::default();
        for d in [0, 5, 10, 50, 55] {
            t.push(&session(d), gap);
        }
        // Silent from day 10 to 50: an onset at 10, a return at 50; the
        // silence after 55 is known only once it has lasted 30 days.
        assert_eq!(t.onsets(80 * DAY_MS, gap), vec![10 * DAY_MS]);
        assert_eq!(t.onsets(85 * DAY_MS, gap), vec![10 * DAY_MS, 55 * DAY_MS]);
        // A cancel starts an episode; the silence that follows it within the
        // gap is the same episode.
        let mut s = Track::default();
        s.push(&session(0), gap);
        s.push(
            &ev(
                3,
                EventKind::Subscription {
                    action: SubscriptionAction::Cancel,
                    plan: None,
                    monthly_value: None,
                },
            ),
            gap,
        );
        s.push(&session(5), gap);
        assert_eq!(s.onsets(100 * DAY_MS, gap), vec![3 * DAY_MS]);
        // Seen from the last session, the churn is that session's silence.
        assert_eq!(
            first_from(&s.candidates(100 * DAY_MS, gap), 5 * DAY_MS),
            Some(5 * DAY_MS)
        );
        assert_eq!(first_from(&[3, 9], 4), Some(9));
        assert_eq!(first_from(&[3, 9], 10), None);
    }
}

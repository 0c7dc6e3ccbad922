//! Property tests: hostile bytes never crash the decoders, and a customer's
//! state does not depend on the order its events arrive in.

use churn_alert::config::Config;
use churn_alert::pipeline::event::{Event, EventKind, DAY_MS};
use churn_alert::pipeline::features::CustomerState;
use churn_alert::pipeline::step::ingest;
use proptest::prelude::*;
use prost::Message as _;

const NOW: i64 = 1_795_000_000_000;

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn arbitrary_bytes_are_decoded_or_refused_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512), pb in any::<bool>()) {
        let v = Config::default().validator();
        let ct = if pb { Some("application/x-protobuf") } else { None };
        let _ = v.decode(Some(b"c"), &bytes, ct, NOW);
    }

    #[test]
    fn json_with_arbitrary_field_values_is_decoded_or_refused(
        ty in prop::sample::select(vec!["purchase", "refund", "session", "email", "support_ticket", "subscription", "survey", "activity", "consent", "erasure", "x"]),
        amount in prop_oneof![any::<f64>().prop_map(|f| serde_json::json!(f)), any::<i64>().prop_map(|i| serde_json::json!(i)), ".*".prop_map(|s| serde_json::json!(s))],
        nps in any::<i64>(),
        action in ".{0,12}",
        time in prop_oneof![any::<i64>().prop_map(|i| serde_json::json!(i)), ".{0,30}".prop_map(|s| serde_json::json!(s))],
    ) {
        let v = Config::default().validator();
        let body = serde_json::json!({"event_id":"e","customer_id":"c","type":ty,"occurred_at":time,"amount":amount,"nps":nps,"action":action});
        if let Ok(e) = v.decode(Some(b"c"), body.to_string().as_bytes(), None, NOW) {
            // Whatever is accepted is within the contract.
            match e.kind {
                EventKind::Purchase { amount, .. } | EventKind::Refund { amount, .. } => prop_assert!(amount.is_finite() && amount >= 0.0),
                EventKind::Survey { nps } => prop_assert!(nps <= 10),
                _ => {}
            }
            prop_assert!(e.occurred_at <= NOW + 300_000);
        }
    }

    #[test]
    fn protobuf_round_trips_to_the_same_event_as_json(amount in 0.0f64..1e6, nps in 0i64..=10, ms in 0i64..NOW) {
        let v = Config::default().validator();
        let pb = churn_alert::pipeline::proto::CustomerEvent {
            event_id: "e".into(),
            customer_id: "c".into(),
            r#type: "purchase".into(),
            occurred: Some(churn_alert::pipeline::proto::customer_event::Occurred::OccurredAtMs(ms)),
            amount: Some(amount),
            nps: Some(nps),
            ..Default::default()
        };
        let json = serde_json::json!({"event_id":"e","customer_id":"c","type":"purchase","occurred_at":ms,"amount":amount,"nps":nps});
        let a = v.decode(Some(b"c"), &pb.encode_to_vec(), None, NOW).unwrap();
        let b = v.decode(Some(b"c"), json.to_string().as_bytes(), None, NOW).unwrap();
        prop_assert_eq!(a, b);
    }
}

fn events() -> impl Strategy<Value = Vec<Event>> {
    let kind = prop_oneof![
        (0.0f64..500.0).prop_map(|amount| EventKind::Purchase {
            amount,
            order_id: None
        }),
        (0.0f64..100.0).prop_map(|amount| EventKind::Refund {
            amount,
            order_id: None
        }),
        Just(EventKind::Session {
            duration_seconds: 1.0,
            page_views: 1,
            channel: None
        }),
        (0u8..=10).prop_map(|nps| EventKind::Survey { nps }),
        any::<bool>().prop_map(|marketing| EventKind::Consent { marketing }),
        any::<bool>().prop_map(|c| EventKind::SupportTicket {
            severity: churn_alert::pipeline::event::Severity::Low,
            category: None,
            is_complaint: c,
            satisfaction: None
        }),
        (0u64..5).prop_map(|count| EventKind::Activity {
            name: if count % 2 == 0 {
                "login".into()
            } else {
                "post".into()
            },
            count
        }),
    ];
    // Up to 40 events within 6 days, so every order stays inside the 7-day window.
    proptest::collection::vec((kind, 0i64..6 * DAY_MS), 1..40).prop_map(|v| {
        v.into_iter()
            .enumerate()
            .map(|(i, (kind, dt))| Event {
                event_id: format!("e{i}"),
                customer_id: "c".into(),
                occurred_at: 1_790_000_000_000 + dt,
                attributes: [("k".to_string(), format!("v{i}"))].into_iter().collect(),
                kind,
            })
            .collect()
    })
}

fn replay(evs: &[Event]) -> CustomerState {
    let spec = Config::default().feature_spec();
    let mut s = None;
    for e in evs {
        s = ingest(s, e, &spec).0;
    }
    s.unwrap()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    #[test]
    fn state_is_the_same_in_any_arrival_order(evs in events(), seed in any::<u64>(), dup in 0usize..40) {
        let spec = Config::default().feature_spec();
        let a = replay(&evs);
        let mut shuffled = evs.clone();
        // A deterministic shuffle from the seed, plus a redelivered event.
        let mut x = seed | 1;
        for i in (1..shuffled.len()).rev() {
            x ^= x << 13; x ^= x >> 7; x ^= x << 17;
            shuffled.swap(i, (x % (i as u64 + 1)) as usize);
        }
        shuffled.push(evs[dup % evs.len()].clone());
        let b = replay(&shuffled);
        prop_assert_eq!((a.purchases, a.refunds, a.tickets, a.complaints), (b.purchases, b.refunds, b.tickets, b.complaints));
        prop_assert!((a.gross - b.gross).abs() < 1e-6 && (a.refunded - b.refunded).abs() < 1e-6);
        prop_assert_eq!((a.first_seen, a.last_seen, a.last_engaged), (b.first_seen, b.last_seen, b.last_engaged));
        prop_assert_eq!(&a.consent, &b.consent);
        prop_assert_eq!(&a.nps, &b.nps);
        prop_assert_eq!(&a.attributes, &b.attributes);
        let now = a.last_seen + DAY_MS;
        for (x, y) in spec.extract(&a, now).iter().zip(spec.extract(&b, now)) {
            prop_assert!((x - y).abs() <= 1e-9 * (1.0 + x.abs()), "{} vs {}", x, y);
        }
    }
}

//! Fuzzes the event decoders (JSON and protobuf) with arbitrary bytes: they
//! must never panic, and whatever they accept must be a valid event.
#![no_main]

use libfuzzer_sys::fuzz_target;

use churn_alert::config::Config;
use churn_alert::pipeline::decode::Validator;
use churn_alert::pipeline::event::EventKind;

const NOW: i64 = 1_790_000_000_000;

fn check(v: &Validator, data: &[u8], key: Option<&[u8]>, content_type: Option<&str>) {
    match v.decode(key, data, content_type, NOW) {
        Ok(e) => {
            assert!(!e.event_id.is_empty() && !e.customer_id.is_empty());
            assert!(e.occurred_at <= NOW + v.max_future_skew_ms);
            match e.kind {
                EventKind::Purchase { amount, .. } | EventKind::Refund { amount, .. } => {
                    assert!(amount.is_finite() && amount >= 0.0, "{amount}")
                }
                EventKind::Survey { nps } => assert!(nps <= 10),
                _ => {}
            }
        }
        Err(r) => assert!(!r.reason.is_empty()),
    }
}

fuzz_target!(|data: &[u8]| {
    thread_local! {
        static V: Validator = Config::default().validator();
    }
    V.with(|v| {
        // The key is the bytes' first customer-looking prefix, or none.
        let key = data.split(|b| *b == 0).next();
        for ct in [
            None,
            Some("application/json"),
            Some("application/x-protobuf"),
        ] {
            check(v, data, key, ct);
            check(v, data, None, ct);
        }
    });
});

//! End-to-end scenarios through the Kafka protocol: every scenario runs
//! against librdkafka's mock cluster and against a real tansu broker process.

mod common;

use std::collections::BTreeMap;

use common::*;
use prost::Message as _;

/// Every class of bad input, each expected in the dead-letter topic with its
/// reason code, between good events that must all be applied.
async fn bad_input_is_dead_lettered_and_the_service_keeps_going(broker: Broker) {
    let dir = tempfile::tempdir().unwrap();
    let cfg = test_config(&broker, dir.path());
    broker.create_topics(&cfg).await;
    let svc = start(&cfg).await;

    let nan_amount = churn_alert::pipeline::proto::CustomerEvent {
        event_id: "pb-nan".into(),
        customer_id: "c-1".into(),
        r#type: "purchase".into(),
        occurred: Some(churn_alert::pipeline::proto::customer_event::Occurred::OccurredAt(at(1.0))),
        amount: Some(f64::NAN),
        ..Default::default()
    };
    let good_pb = churn_alert::pipeline::proto::CustomerEvent {
        event_id: "pb-ok".into(),
        customer_id: "c-1".into(),
        r#type: "purchase".into(),
        occurred: Some(
            churn_alert::pipeline::proto::customer_event::Occurred::OccurredAtMs(T0 + 86_400_000),
        ),
        amount: Some(7.5),
        ..Default::default()
    };
    let pb = |e: &churn_alert::pipeline::proto::CustomerEvent| Msg {
        key: Some("c-1".into()),
        payload: e.encode_to_vec(),
        content_type: Some("application/x-protobuf"),
        partition: None,
    };
    let big = format!(
        r#"{{"event_id":"big","customer_id":"c-1","type":"session","occurred_at":"{}","attributes":{{"x":"{}"}}}}"#,
        at(1.0),
        "y".repeat(3000)
    );
    // (message, expected reason code or None for a good one)
    let cases: Vec<(Msg, Option<&str>)> = vec![
        (event("c-1", "e1", 1.0, "purchase", r#""amount":10,"currency":"EUR""#), None),
        (json("c-1", "\u{1}\u{2} not an event".into()), Some("undecodable")),
        (json("c-1", "[1,2,3]".into()), Some("undecodable")),
        (Msg { key: Some("c-1".into()), payload: vec![0xff, 0xff, 0x01], content_type: Some("application/x-protobuf"), partition: None }, Some("undecodable")),
        (json("c-1", format!(r#"{{"customer_id":"c-1","type":"session","occurred_at":"{}"}}"#, at(1.0))), Some("missing_id")),
        (json("", format!(r#"{{"event_id":"x1","customer_id":"","type":"session","occurred_at":"{}"}}"#, at(1.0))), Some("missing_id")),
        (event("c-1", "x2", 1.0, "teleport", ""), Some("unknown_type")),
        (event("c-1", "x3", 1.0, "purchase", r#""amount":-3"#), Some("invalid_field")),
        (event("c-1", "x4", 1.0, "purchase", ""), Some("invalid_field")),
        (pb(&nan_amount), Some("invalid_field")),
        (event("c-1", "x5", 1.0, "survey", r#""nps":11"#), Some("invalid_field")),
        (event("c-1", "x6", 1.0, "email", r#""action":"opened""#), Some("invalid_field")),
        (event("c-1", "x7", 1.0, "session", r#""channel":"fax""#), Some("invalid_field")),
        (json("c-1", r#"{"event_id":"x8","customer_id":"c-1","type":"session","occurred_at":"last tuesday"}"#.into()), Some("invalid_time")),
        (json("c-1", r#"{"event_id":"x9","customer_id":"c-1","type":"session","occurred_at":"2999-01-01T00:00:00Z"}"#.into()), Some("future_time")),
        (event("c-1", "x10", 1.0, "purchase", r#""amount":5,"currency":"XYZ""#), Some("unknown_currency")),
        (json("c-1", big), Some("too_large")),
        (event("c-1", "x11", 1.0, "session", "").with_key("c-2"), Some("key_mismatch")),
        (event("c-1", "x12", 1.0, "session", "").with_key_none(), Some("key_mismatch")),
        (event("c-1", "e1", 1.0, "purchase", r#""amount":10,"currency":"EUR""#), None), // duplicate: dropped, not dead-lettered
        (pb(&good_pb), None),
        (event("c-1", "e2", 20.0, "purchase", r#""amount":5,"currency":"USD""#), None),
        (event("c-1", "x13", 2.0, "session", ""), Some("too_late")), // 18 days behind the newest, window 7
        (event("c-1", "e3", 19.0, "session", ""), None),             // late but inside the window: applied
    ];
    let msgs: Vec<Msg> = cases.iter().map(|(m, _)| m.clone()).collect();
    let (positions, high) = produce(&broker, &cfg.kafka.input_topic, &msgs).await;
    svc.wait_committed(&high).await;

    let dlq = read_all(&broker, &cfg.kafka.dlq_topic);
    let expected: Vec<(usize, &str)> = cases
        .iter()
        .enumerate()
        .filter_map(|(i, (_, code))| code.map(|c| (i, c)))
        .collect();
    assert_eq!(
        dlq.len(),
        expected.len(),
        "one dead letter per bad message: {dlq:#?}"
    );
    for (i, code) in expected {
        let (p, o) = positions[i];
        let r = dlq
            .iter()
            .find(|r| {
                r.headers.get("dlq-source-partition") == Some(&p.to_string())
                    && r.headers.get("dlq-source-offset") == Some(&o.to_string())
            })
            .unwrap_or_else(|| panic!("no dead letter for case {i} ({code}) at {p}/{o}"));
        assert_eq!(
            r.headers["dlq-reason-code"], code,
            "case {i}: {}",
            r.headers["dlq-reason"]
        );
        assert!(!r.headers["dlq-reason"].is_empty());
        assert_eq!(r.headers["dlq-source-topic"], cfg.kafka.input_topic);
        assert_eq!(r.payload, cases[i].0.payload, "original bytes kept");
        assert_matches_schema("dead-letter", r, None);
        // The original's timestamp and own headers are kept, prefixed.
        assert!(r.headers["dlq-original-timestamp"].parse::<i64>().unwrap() > 0);
        assert_eq!(
            r.headers.get("dlq-header-content-type").map(String::as_str),
            cases[i].0.content_type,
            "case {i}"
        );
        assert_eq!(
            r.headers["ce_id"],
            format!("{}-{p}-{o}", cfg.kafka.input_topic)
        );
        assert_eq!(
            r.key.as_deref(),
            cases[i].0.key.as_deref().map(str::as_bytes),
            "original key kept"
        );
    }
    // Every good event is applied exactly once.
    let s = customer(svc.store.as_ref(), "c-1").expect("c-1 has state");
    assert_eq!(s.purchases, 3, "e1 once, pb-ok, e2");
    assert!(
        (s.gross - (10.0 + 7.5 + 5.0 * 0.92)).abs() < 1e-9,
        "gross {}",
        s.gross
    );
    assert_eq!(s.last_seen, T0 + 20 * 86_400_000);
    assert_eq!(svc.metric("churn_alert_duplicates_total", "").await, 1.0);
    assert_eq!(
        svc.metric("churn_alert_dlq_total", "reason=\"invalid_field\"")
            .await,
        6.0
    );
    assert_eq!(
        svc.metric("churn_alert_dlq_total", "").await,
        dlq.len() as f64
    );
    assert_eq!(
        svc.metric("churn_alert_events_consumed_total", "type=\"purchase\"")
            .await,
        3.0
    );
    let (status, _) = svc.http_get("/readyz").await;
    assert_eq!(status, 200);
    svc.stop().await;
}

/// Poison pills (a 2 MB event, binary garbage over the producer's 1 MB
/// limit, deeply nested JSON) between good events: each is dead-lettered
/// cut to `kafka.dead_letter_max_bytes`, with its original size and hash,
/// every good event is applied once, and the service stays ready.
async fn poison_pills_are_dead_lettered_cut_to_size_and_nothing_stops(broker: Broker) {
    use sha2::{Digest, Sha256};
    let dir = tempfile::tempdir().unwrap();
    let cfg = test_config(&broker, dir.path());
    broker.create_topics(&cfg).await;
    let svc = start(&cfg).await;
    let two_mb = format!(
        r#"{{"event_id":"huge","customer_id":"c-1","type":"session","occurred_at":"{}","attributes":{{"x":"{}"}}}}"#,
        at(1.0),
        "y".repeat(2 * 1024 * 1024)
    );
    let garbage: Vec<u8> = (0..1_200_000u32)
        .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
        .collect();
    // Under the test config's 2 KiB limit, far past serde_json's depth limit.
    let nested = format!("{}{}", "[".repeat(1000), "]".repeat(1000));
    let cases: Vec<(Msg, Option<&str>)> = vec![
        (event("c-1", "e1", 1.0, "purchase", r#""amount":10"#), None),
        (json("c-1", two_mb), Some("too_large")),
        (event("c-1", "e2", 2.0, "purchase", r#""amount":10"#), None),
        (
            Msg {
                key: Some("c-1".into()),
                payload: garbage,
                content_type: None,
                partition: None,
            },
            Some("too_large"),
        ),
        (json("c-1", nested), Some("undecodable")),
        (event("c-1", "e3", 3.0, "purchase", r#""amount":10"#), None),
    ];
    let msgs: Vec<Msg> = cases.iter().map(|(m, _)| m.clone()).collect();
    let (positions, high) = produce(&broker, &cfg.kafka.input_topic, &msgs).await;
    svc.wait_committed(&high).await;

    let dlq = read_all(&broker, &cfg.kafka.dlq_topic);
    assert_eq!(dlq.len(), 3, "one dead letter per poison pill");
    for (i, (m, code)) in cases.iter().enumerate() {
        let Some(code) = code else { continue };
        let (p, o) = positions[i];
        let r = dlq
            .iter()
            .find(|r| {
                r.headers.get("dlq-source-offset") == Some(&o.to_string())
                    && r.headers.get("dlq-source-partition") == Some(&p.to_string())
            })
            .unwrap_or_else(|| panic!("no dead letter for case {i}"));
        assert_eq!(r.headers["dlq-reason-code"], *code);
        let limit = cfg.kafka.dead_letter_max_bytes;
        let cut = m.payload.len() > limit;
        assert_eq!(
            r.payload,
            m.payload[..m.payload.len().min(limit)],
            "case {i}: the first bytes, cut to the limit"
        );
        assert_eq!(r.headers["dlq-truncated"], cut.to_string());
        assert_eq!(r.headers["dlq-original-size"], m.payload.len().to_string());
        let sha: String = Sha256::digest(&m.payload)
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        assert_eq!(
            r.headers["dlq-original-sha256"], sha,
            "case {i}: the original can be checked"
        );
    }
    let s = customer(svc.store.as_ref(), "c-1").expect("c-1 has state");
    assert_eq!(s.purchases, 3, "every good event applied once");
    assert_eq!(
        svc.metric("churn_alert_outputs_refused_total", "").await,
        0.0
    );
    svc.wait_ready().await;
    svc.stop().await;
}

/// Customers who go silent are alerted once, keyed by customer id, with
/// reasons; triggers go only to customers with marketing consent.
async fn silent_customers_are_alerted_and_triggers_respect_consent(broker: Broker) {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = test_config(&broker, dir.path());
    // Outcomes of the day-11 alerts are decided within the 30 days.
    cfg.policy.outcome_window_days = 10.0;
    broker.create_topics(&cfg).await;
    let svc = start(&cfg).await;
    let msgs = three_go_silent();
    let (_, high) = produce(&broker, &cfg.kafka.input_topic, &msgs).await;
    svc.wait_committed(&high).await;

    let alerts = read_all(&broker, &cfg.kafka.alerts_topic);
    let mut who: Vec<String> = alerts
        .iter()
        .map(|r| r.json()["customer_id"].as_str().unwrap().to_string())
        .collect();
    who.sort();
    assert_eq!(
        who,
        ["quiet-consent", "quiet-no-consent", "quiet-unsub"],
        "one alert per silent customer, none for busy ones"
    );
    for r in &alerts {
        let a = r.json();
        assert_eq!(
            r.key.as_deref(),
            Some(a["customer_id"].as_str().unwrap().as_bytes()),
            "keyed by customer id"
        );
        assert!(a["probability"].as_f64().unwrap() >= 0.7);
        assert_eq!(a["cause"], "silence");
        assert_eq!(a["model_version"], "test-silence-1");
        assert_eq!(a["reasons"][0]["feature"], "silence");
        assert_eq!(a["reasons"][0]["top_feature"], "recency_days");
        assert!(a["features"]["recency_days"].as_f64().unwrap() >= 11.0);
        assert!(a["as_of"].as_str().unwrap().starts_with("2026-09-1"));
        assert_eq!(r.headers["alert-id"], a["alert_id"].as_str().unwrap());
        for field in ["alert_id", "risk_tier", "as_of_ms", "customer_value"] {
            assert!(!a[field].is_null(), "alert has {field}");
        }
        assert_matches_schema("alert", r, Some("alert_id"));
        assert_eq!(r.headers["ce_time"], a["as_of"].as_str().unwrap());
    }
    let triggers = read_all(&broker, &cfg.kafka.triggers_topic);
    assert_eq!(
        triggers.len(),
        1,
        "only the consenting, subscribed customer: {triggers:?}"
    );
    let t = triggers[0].json();
    assert_matches_schema("trigger", &triggers[0], Some("trigger_id"));
    assert_eq!(t["customer_id"], "quiet-consent");
    assert_eq!(triggers[0].key.as_deref(), Some(&b"quiet-consent"[..]));
    let alert = alerts
        .iter()
        .map(Record::json)
        .find(|a| a["customer_id"] == "quiet-consent")
        .unwrap();
    assert_eq!(t["alert_id"], alert["alert_id"]);
    assert!(!t["campaign_id"].as_str().unwrap().is_empty());
    assert_eq!(
        svc.metric(
            "churn_alert_triggers_suppressed_total",
            "reason=\"no_consent\""
        )
        .await,
        1.0
    );
    assert_eq!(
        svc.metric(
            "churn_alert_triggers_suppressed_total",
            "reason=\"unsubscribed\""
        )
        .await,
        1.0
    );
    assert!(svc.metric("churn_alert_rescored_silent_total", "").await > 0.0);
    // Ten days on, each alert's outcome: churned (no activity since).
    let outcomes = read_all(&broker, &cfg.kafka.outcomes_topic);
    assert_eq!(outcomes.len(), 3, "{outcomes:?}");
    for o in &outcomes {
        assert_matches_schema("outcome", o, Some("outcome_id"));
        assert_eq!(o.json()["outcome"], "churned");
    }
    svc.stop().await;
}

/// State survives a restart: nothing is applied twice, nothing lost, and an
/// alerted customer is not alerted again.
async fn restart_keeps_state(broker: Broker) {
    let dir = tempfile::tempdir().unwrap();
    let cfg = test_config(&broker, dir.path());
    broker.create_topics(&cfg).await;
    let first: Vec<Msg> = (0..20)
        .map(|i| {
            event(
                &format!("c-{}", i % 4),
                &format!("p{i}"),
                i as f64 * 0.5,
                "purchase",
                r#""amount":10"#,
            )
        })
        .collect();
    let svc = start(&cfg).await;
    let (_, high) = produce(&broker, &cfg.kafka.input_topic, &first).await;
    svc.wait_committed(&high).await;
    svc.stop().await;

    // Second run: the same sled directory, more events (including a replay of
    // an old event id) and enough time for the silent c-3 to be alerted.
    let svc = start(&cfg).await;
    let second_ids: Vec<i32> = (20..50).collect();
    let mut second: Vec<Msg> = second_ids
        .iter()
        .map(|i| {
            event(
                &format!("c-{}", i % 3),
                &format!("p{i}"),
                *i as f64 * 0.5,
                "purchase",
                r#""amount":10"#,
            )
        })
        .collect();
    second.push(event("c-0", "p36", 18.0, "purchase", r#""amount":10"#)); // duplicate id
    let (_, high) = produce(&broker, &cfg.kafka.input_topic, &second).await;
    svc.wait_committed(&high).await;
    let mut counts = BTreeMap::new();
    for c in 0..4 {
        let s = customer(svc.store.as_ref(), &format!("c-{c}")).unwrap();
        counts.insert(c, (s.purchases, s.gross));
    }
    svc.stop().await;
    // Each distinct purchase counted once over both runs (the duplicate id not at all).
    for c in 0..4 {
        let n = (0..20).filter(|i| i % 4 == c).count()
            + second_ids.iter().filter(|i| *i % 3 == c).count();
        assert_eq!(counts[&c], (n as u32, 10.0 * n as f64), "customer c-{c}");
    }
    assert_eq!(counts[&3], (5, 50.0));

    // A third run with no new input publishes nothing new.
    let before = read_all(&broker, &cfg.kafka.alerts_topic).len();
    assert_eq!(before, 1, "only the silent c-3 is alerted");
    let svc = start(&cfg).await;
    let (_, high) = produce(
        &broker,
        &cfg.kafka.input_topic,
        &[event("c-0", "p99", 25.0, "session", "")],
    )
    .await;
    svc.wait_committed(&high).await;
    svc.stop().await;
    assert_eq!(read_all(&broker, &cfg.kafka.alerts_topic).len(), before);
}

/// `n` purchases of 1 spread over customers c-0, c-1 and c-2.
fn purchases(n: usize) -> Vec<Msg> {
    (0..n)
        .map(|i| {
            event(
                &format!("c-{}", i % 3),
                &format!("p{i}"),
                i as f64 * 0.1,
                "purchase",
                r#""amount":1"#,
            )
        })
        .collect()
}

/// Kafka's committed offsets are for lag only: an instance whose state is
/// gone (new disk, or a crash before sled's first flush) restores it from
/// the state changelog and continues at the offset stored there, instead of
/// resuming where the group had committed or reading the input again.
async fn lost_state_is_restored_from_the_changelog(broker: Broker) {
    let dir = tempfile::tempdir().unwrap();
    let cfg = test_config(&broker, dir.path());
    broker.create_topics(&cfg).await;
    let msgs = purchases(12);
    let svc = start(&cfg).await;
    let (_, high) = produce(&broker, &cfg.kafka.input_topic, &msgs).await;
    svc.wait_committed(&high).await;
    // Let the asynchronous offset commit to Kafka land.
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    svc.stop().await;

    // Same consumer group, empty state directory.
    std::fs::remove_dir_all(&cfg.store.path).unwrap();
    let svc = start(&cfg).await;
    svc.wait_committed(&high).await;
    for c in 0..3 {
        let s = customer(svc.store.as_ref(), &format!("c-{c}")).expect("state restored");
        assert_eq!(s.purchases, 4, "c-{c}: every event counted once");
    }
    // Ready once every partition is restored and resumed.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while svc.http_get("/readyz").await.0 != 200 {
        assert!(
            std::time::Instant::now() < deadline,
            "{:?}",
            svc.http_get("/readyz").await
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert_eq!(
        svc.metric("churn_alert_partitions_restoring", "").await,
        0.0
    );
    // Three customers' states and at least one meta record were read.
    assert!(svc.metric("churn_alert_restore_records_total", "").await >= 4.0);
    assert_eq!(
        svc.metric("churn_alert_restore_seconds_count", "").await,
        3.0
    );
    assert_eq!(
        svc.metric("churn_alert_events_consumed_total", "").await,
        0.0,
        "no input was read again"
    );
    svc.stop().await;
}

/// A customer's stored state that no longer decodes (a damaged disk) is
/// moved aside and rebuilt from the changelog: the customer's next events
/// add to everything before, and the partition goes on.
async fn a_corrupt_state_is_rebuilt_from_the_changelog(broker: Broker) {
    let dir = tempfile::tempdir().unwrap();
    let cfg = test_config(&broker, dir.path());
    broker.create_topics(&cfg).await;
    let svc = start(&cfg).await;
    let (_, high) = produce(&broker, &cfg.kafka.input_topic, &purchases(12)).await;
    svc.wait_committed(&high).await;
    svc.stop().await;

    let sled = churn_alert::store::SledStore::open(&cfg.store.path).unwrap();
    let store: &dyn churn_alert::store::Store = &sled;
    let p = (0..PARTITIONS)
        .find(|p| store.get(*p, "c-1").unwrap().is_some())
        .expect("c-1 is stored");
    sled.put_raw_state(p, "c-1", b"\xff damaged").unwrap();
    drop(sled);

    let svc = start(&cfg).await;
    let more: Vec<Msg> = (0..3)
        .map(|i| {
            event(
                "c-1",
                &format!("q{i}"),
                2.0 + f64::from(i) * 0.1,
                "purchase",
                r#""amount":1"#,
            )
        })
        .collect();
    let (_, high) = produce(&broker, &cfg.kafka.input_topic, &more).await;
    svc.wait_committed(&high).await;
    let s = customer(svc.store.as_ref(), "c-1").expect("c-1 is stored");
    assert_eq!(s.purchases, 4 + 3, "the purchases before the damage count");
    assert_eq!(s.gross, 7.0);
    assert_eq!(
        svc.metric("churn_alert_states_quarantined_total", r#"state="rebuilt""#)
            .await,
        1.0
    );
    // The partition goes on: the service is (or soon becomes) ready. An
    // immediate check raced the readiness report on a loaded machine.
    svc.wait_ready().await;
    svc.stop().await;
}

macro_rules! on_both_brokers {
    ($($scenario:ident),+) => {
        mod mock {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $scenario() {
                    super::$scenario(super::Broker::mock()).await;
                }
            )+
        }
        mod tansu {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                #[cfg_attr(not(feature = "e2e"), ignore = "needs tansu: --features e2e (scripts/test.sh)")]
                async fn $scenario() {
                    super::$scenario(super::Broker::tansu()).await;
                }
            )+
        }
    };
}

on_both_brokers!(
    bad_input_is_dead_lettered_and_the_service_keeps_going,
    poison_pills_are_dead_lettered_cut_to_size_and_nothing_stops,
    silent_customers_are_alerted_and_triggers_respect_consent,
    restart_keeps_state,
    lost_state_is_restored_from_the_changelog,
    a_corrupt_state_is_rebuilt_from_the_changelog
);

/// Local state from before the changelog existed (an upgrade): kept at the
/// first start and written to the changelog, so an instance with an empty
/// disk restores it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn state_from_before_the_changelog_is_written_to_it() {
    let broker = Broker::mock();
    let dir = tempfile::tempdir().unwrap();
    let cfg = test_config(&broker, dir.path());
    broker.create_topics(&cfg).await;
    let msgs = purchases(9);
    let (_, high) = produce(&broker, &cfg.kafka.input_topic, &msgs).await;
    // Another changelog topic for the first run: the real one stays empty,
    // as it is for state written by a version without a changelog.
    let mut old = cfg.clone();
    old.kafka.changelog_topic = "elsewhere".into();
    broker.create(&[old.kafka.changelog_topic.as_str()]).await;
    let svc = start(&old).await;
    svc.wait_committed(&high).await;
    svc.stop().await;
    let sled = churn_alert::store::SledStore::open(&cfg.store.path).unwrap();
    let store: &dyn churn_alert::store::Store = &sled;
    for p in 0..PARTITIONS {
        if let Some(mut m) = store.meta(p).unwrap() {
            m.changelog_next = 0; // as written before the changelog existed
            let c = churn_alert::store::Commit {
                meta: m,
                ..Default::default()
            };
            store.commit(p, &c).unwrap();
        }
    }
    drop(sled);

    // First start with the changelog: local state is kept and written out.
    let svc = start(&cfg).await;
    svc.wait_ready().await;
    svc.stop().await;
    // An empty disk restores it from there.
    std::fs::remove_dir_all(&cfg.store.path).unwrap();
    let svc = start(&cfg).await;
    svc.wait_ready().await;
    for c in 0..3 {
        let s = customer(svc.store.as_ref(), &format!("c-{c}")).expect("state restored");
        assert_eq!(s.purchases, 3, "c-{c}");
    }
    assert_eq!(
        svc.metric("churn_alert_events_consumed_total", "").await,
        0.0
    );
    svc.stop().await;
}

/// A fatal error of the idempotent producer (raised by librdkafka's fault
/// injection, as after a long outage) replaces the producer: the batch in
/// hand is sent again, nothing is lost or applied twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fatal_producer_error_replaces_the_producer_and_loses_nothing() {
    let broker = Broker::mock();
    let dir = tempfile::tempdir().unwrap();
    let cfg = test_config(&broker, dir.path());
    broker.create_topics(&cfg).await;
    let svc = start(&cfg).await;
    let one_each = |r: std::ops::Range<usize>| -> Vec<Msg> {
        r.map(|i| {
            event(
                &format!("c-{i}"),
                &format!("p{i}"),
                1.0,
                "purchase",
                r#""amount":1"#,
            )
        })
        .collect()
    };
    let (_, high) = produce(&broker, &cfg.kafka.input_topic, &one_each(0..5)).await;
    svc.wait_committed(&high).await;
    let publisher = svc.control.publisher().cloned().expect("running");
    publisher.inject_fatal_error();
    assert!(publisher.fatal_error().is_some(), "the producer is dead");
    let (_, high) = produce(&broker, &cfg.kafka.input_topic, &one_each(5..10)).await;
    svc.wait_committed(&high).await;
    assert!(
        publisher.fatal_error().is_none(),
        "a new producer is in use"
    );
    assert_eq!(
        svc.metric("churn_alert_producer_recreated_total", "").await,
        1.0
    );
    for i in 0..10 {
        let s = customer(svc.store.as_ref(), &format!("c-{i}")).expect("applied");
        assert_eq!(s.purchases, 1, "c-{i} applied once");
    }
    // The new producer's records reached the changelog: an instance with
    // an empty disk restores every customer.
    svc.wait_ready().await;
    svc.stop().await;
    std::fs::remove_dir_all(&cfg.store.path).unwrap();
    let restored = start(&cfg).await;
    restored.wait_committed(&high).await;
    restored.wait_ready().await;
    for i in 0..10 {
        assert!(
            customer(restored.store.as_ref(), &format!("c-{i}")).is_some(),
            "c-{i} restored"
        );
    }
    restored.stop().await;
}

/// A topic the broker refuses for good (not authorized) stops the service
/// with that error instead of retrying forever; nothing is committed, so a
/// fixed deployment replays the batch.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_topic_refused_for_good_stops_the_service_with_its_error() {
    let broker = Broker::mock();
    let dir = tempfile::tempdir().unwrap();
    let cfg = test_config(&broker, dir.path());
    broker.create_topics(&cfg).await;
    let svc = start(&cfg).await;
    svc.wait_ready().await;
    let Broker::Mock(cluster) = &broker else {
        unreachable!()
    };
    cluster
        .topic_error(
            &cfg.kafka.changelog_topic,
            rdkafka::types::RDKafkaRespErr::RD_KAFKA_RESP_ERR_TOPIC_AUTHORIZATION_FAILED,
        )
        .unwrap();
    let (_, _) = produce(&broker, &cfg.kafka.input_topic, &purchases(3)).await;
    let store = svc.store.clone();
    let err = svc.finished().await.expect_err("stopped with an error");
    let text = err.to_string();
    assert!(
        text.contains("changelog") && text.contains("refused"),
        "{text}"
    );
    assert_eq!(
        churn_alert::pipeline::error::Classify::class(&err),
        churn_alert::pipeline::error::ErrorClass::Config
    );
    for p in 0..PARTITIONS {
        let next = store.meta(p).unwrap().map_or(0, |m| m.next_offset);
        assert_eq!(next, 0, "nothing committed in partition {p}");
    }
}

//! The broker stops for more than 30 s mid-stream and comes back with its
//! data (tansu on SQLite): the service reports not ready meanwhile, then
//! catches up with nothing lost or counted twice.

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use common::*;

/// Purchases of `c-0` .. `c-19`, `n` of them from `first`, one per
/// message; returns them and adds their expected totals to `want`.
fn purchases(first: usize, n: usize, want: &mut BTreeMap<String, (u32, f64)>) -> Vec<Msg> {
    (first..first + n)
        .map(|i| {
            let c = format!("c-{}", i % 20);
            let amount = (i % 7 + 1) as f64;
            let w = want.entry(c.clone()).or_default();
            w.0 += 1;
            w.1 += amount;
            event(
                &c,
                &format!("p{i}"),
                i as f64 / 100.0,
                "purchase",
                &format!(r#""amount":{amount}"#),
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broker_outage_waits_then_catches_up_exactly() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let storage = "sqlite://tansu.db";
    let broker = Broker::tansu_at(port, dir.path(), storage);
    let cfg = test_config(&broker, dir.path());
    broker.create_topics(&cfg).await;
    let svc = start(&cfg).await;
    let mut want = BTreeMap::new();

    let (_, high) = produce(
        &broker,
        &cfg.kafka.input_topic,
        &purchases(0, 300, &mut want),
    )
    .await;
    svc.wait_committed(&high).await;
    assert_eq!(svc.http_get("/readyz").await.0, 200);

    // The broker goes away for 35 s.
    drop(broker);
    let down = Instant::now();
    let mut saw_unready = false;
    while down.elapsed() < Duration::from_secs(35) {
        let (status, body) = svc.http_get("/readyz").await;
        if status == 503 {
            saw_unready = true;
            assert!(body.contains("not connected"), "{body}");
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert!(saw_unready, "/readyz stayed 200 while the broker was down");
    assert_eq!(svc.metric("churn_alert_ready", "").await, 0.0);
    assert_eq!(svc.http_get("/healthz").await.0, 200);

    // Back on the same port with the same data; the rest of the stream.
    let broker = Broker::tansu_at(port, dir.path(), storage);
    let (_, high) = produce(
        &broker,
        &cfg.kafka.input_topic,
        &purchases(300, 300, &mut want),
    )
    .await;
    svc.wait_committed(&high).await;
    let deadline = Instant::now() + Duration::from_secs(60);
    while svc.http_get("/readyz").await.0 != 200 {
        assert!(Instant::now() < deadline, "never ready again");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(
        svc.metric("churn_alert_events_consumed_total", "").await,
        600.0
    );
    for (c, (n, sum)) in &want {
        let s = customer(svc.store.as_ref(), c).unwrap();
        assert_eq!(s.purchases, *n, "{c}: purchases");
        assert!(
            (s.gross - sum).abs() < 1e-9,
            "{c}: spend {} vs {sum}",
            s.gross
        );
    }
    svc.stop().await;
}

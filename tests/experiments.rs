//! Experiment assignment on a real broker (tansu): a customer keeps their
//! variant through a restart, a rebalance to another instance and a weight
//! change by `POST /policy/reload`, while customers first drawn after the
//! change follow the new weights; and every instance reads the same
//! readout from the outcomes topic, the one `churn-alert experiments`
//! computes from it.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use churn_alert::config::Config;
use churn_alert::offline::simulate::{SimConfig, Simulator};
use churn_alert::pipeline::event::{parse_rfc3339, DAY_MS};
use churn_alert::pipeline::experiment::{Experiment, Variant};
use common::*;

const PARTS: i32 = 4;
const TOKEN: &str = "experiments-admin-token-0123";

fn experiment(weights: [f64; 2]) -> Experiment {
    let v = |name: &str, weight| Variant {
        name: name.into(),
        weight,
        channel: None,
        offer: Some(format!("{name}-offer")),
        template_id: Some(format!("tpl-{name}")),
    };
    Experiment {
        name: "offer-test".into(),
        start: None,
        variants: vec![v("a", weights[0]), v("b", weights[1])],
    }
}

/// Writes the policy (with the experiment at `weights`) where the services
/// reload it from.
fn write_policy(cfg: &mut Config, weights: [f64; 2]) {
    cfg.policy.run_experiment(&experiment(weights));
    let text = policy_toml(&cfg.policy);
    std::fs::write(cfg.source.as_ref().unwrap(), text).unwrap();
}

/// Waits until, for every partition, one of the instances' committed
/// state covers `high`.
async fn wait_committed(instances: &[&Running], high: &BTreeMap<i32, i64>) {
    let deadline = Instant::now() + Duration::from_secs(180);
    loop {
        let done = high.iter().all(|(p, h)| {
            instances.iter().any(|i| {
                i.store
                    .meta(*p)
                    .unwrap()
                    .is_some_and(|m| m.next_offset >= *h)
            })
        });
        if done {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "not committed up to {high:?} within 180 s"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    not(feature = "e2e"),
    ignore = "needs the tansu broker: --features e2e (scripts/test.sh)"
)]
async fn variants_survive_restart_rebalance_and_weight_change() {
    let broker = Broker::tansu();
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = test_config(&broker, dir.path());
    cfg.admin.token = Some(TOKEN.into());
    cfg.policy.holdout.share = 0.2;
    // Low thresholds and short limits, so customers are triggered again
    // and again.
    cfg.policy.enter_threshold = Some(0.3);
    cfg.policy.exit_threshold = Some(0.2);
    cfg.policy.cooldown_days = 3.0;
    cfg.policy.contact.cooldown_days = 3.0;
    cfg.policy.contact.max_triggers = 1000;
    cfg.source = Some(dir.path().join("policy.toml"));
    write_policy(&mut cfg, [1.0, 1.0]);
    broker.create_topics_with(&cfg, PARTS).await;
    let model = shipped_model(&cfg);

    // 800 simulated customers over 240 days, in four spans of 60 days.
    let mut sc = SimConfig::new(800, 240, 17);
    sc.end = 1_790_000_000_000 - 1_790_000_000_000 % DAY_MS;
    let start = sc.start();
    let mut sim = Simulator::new(sc);
    let mut events = Vec::new();
    while !sim.done() {
        events.extend(sim.next_day());
    }
    let span_of = |at: i64| ((at - start) / (60 * DAY_MS)).clamp(0, 3) as usize;
    let spans: Vec<Vec<_>> = (0..4)
        .map(|k| {
            events
                .iter()
                .filter(|e| span_of(e.at) == k)
                .cloned()
                .collect()
        })
        .collect();
    let producer = one_record_batches(&broker);
    let mut high = BTreeMap::new();
    let with_store = |name: &str| {
        let mut c = cfg.clone();
        c.store.path = dir.path().join(name);
        c
    };

    // 1. One instance.
    let a = start_with_model(&with_store("a"), model.clone()).await;
    produce_events(&producer, &cfg.kafka.input_topic, &spans[0], &mut high).await;
    wait_committed(&[&a], &high).await;
    // 2. Restarted.
    a.stop().await;
    let a = start_with_model(&with_store("a"), model.clone()).await;
    produce_events(&producer, &cfg.kafka.input_topic, &spans[1], &mut high).await;
    wait_committed(&[&a], &high).await;
    // 3. A second instance joins: partitions move to it, their state
    // restored from the changelog.
    let b = start_with_model(&with_store("b"), model.clone()).await;
    let deadline = Instant::now() + Duration::from_secs(240);
    while a.metric("churn_alert_partitions_owned", "").await < 1.0
        || b.metric("churn_alert_partitions_owned", "").await < 1.0
        || a.metric("churn_alert_partitions_owned", "").await
            + b.metric("churn_alert_partitions_owned", "").await
            != f64::from(PARTS)
    {
        assert!(Instant::now() < deadline, "the rebalance never settled");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    produce_events(&producer, &cfg.kafka.input_topic, &spans[2], &mut high).await;
    wait_committed(&[&a, &b], &high).await;
    // 4. The weights change to 90/10, reloaded on both.
    write_policy(&mut cfg, [9.0, 1.0]);
    for svc in [&a, &b] {
        let (status, body) = http(svc.admin, "POST", "/policy/reload", Some(TOKEN))
            .await
            .unwrap();
        assert_eq!(status, 200, "{body}");
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    for svc in [&a, &b] {
        loop {
            let (_, p) = svc.http_get("/policy").await;
            let p: serde_json::Value = serde_json::from_str(&p).unwrap();
            if p["campaigns"]
                .as_array()
                .unwrap()
                .iter()
                .any(|r| r["experiment"]["variants"][0]["weight"] == 9.0)
            {
                break;
            }
            assert!(Instant::now() < deadline, "the reload was never applied");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    produce_events(&producer, &cfg.kafka.input_topic, &spans[3], &mut high).await;
    wait_committed(&[&a, &b], &high).await;

    // Every customer's triggers carry one variant, whatever span they fell in.
    let triggers = read_all_of(&broker, &cfg.kafka.triggers_topic, PARTS);
    let mut by_customer: BTreeMap<String, Vec<(usize, String)>> = BTreeMap::new();
    for t in &triggers {
        let t = t.json();
        assert_eq!(t["experiment"], "offer-test", "{t}");
        let ms = parse_rfc3339(t["as_of"].as_str().unwrap()).unwrap();
        by_customer
            .entry(t["customer_id"].as_str().unwrap().to_string())
            .or_default()
            .push((span_of(ms), t["variant"].as_str().unwrap().to_string()));
    }
    let mut across = [0usize; 3];
    for (customer, seen) in &by_customer {
        let variants: BTreeSet<&String> = seen.iter().map(|(_, v)| v).collect();
        assert_eq!(variants.len(), 1, "{customer} changed variant: {seen:?}");
        let spans: BTreeSet<usize> = seen.iter().map(|(s, _)| *s).collect();
        let (first, last) = (spans.first().unwrap(), spans.last().unwrap());
        // Triggered before and after the restart, the rebalance, the change.
        for (k, boundary) in [1, 2, 3].into_iter().enumerate() {
            if *first < boundary && *last >= boundary {
                across[k] += 1;
            }
        }
    }
    eprintln!(
        "{} triggers of {} customers; customers triggered on both sides of the restart / the rebalance / the weight change: {across:?}",
        triggers.len(),
        by_customer.len()
    );
    assert!(across.iter().all(|n| *n >= 20), "{across:?}");
    // Customers first drawn after the change follow 90/10.
    let new: Vec<&String> = by_customer
        .values()
        .filter(|seen| seen.iter().all(|(s, _)| *s == 3))
        .map(|seen| &seen[0].1)
        .collect();
    let share_a = new.iter().filter(|v| v.as_str() == "a").count() as f64 / new.len() as f64;
    eprintln!(
        "first drawn after the change: {} customers, {:.0}% in a",
        new.len(),
        share_a * 100.0
    );
    assert!(
        new.len() >= 30 && share_a >= 0.75,
        "{share_a} of {}",
        new.len()
    );

    // Both instances read the outcomes topic into the same readout: the
    // one computed from the topic's records.
    let (changes, skipped) = churn_alert::kafka::outcomes::read_all(&cfg.kafka).unwrap();
    assert_eq!(skipped, 0);
    let expected = churn_alert::offline::experiments::readout(changes, &cfg.experiments);
    assert!(
        expected.first().is_some_and(|e| e.customers >= 50),
        "{expected:?}"
    );
    let expected = serde_json::to_value(&expected).unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    for svc in [&a, &b] {
        loop {
            let (_, body) = svc.http_get("/experiments").await;
            let body: serde_json::Value = serde_json::from_str(&body).unwrap();
            if body["experiments"] == expected && body["complete"] == true {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "the readout differs from the topic's:\n{body:#}\nagainst\n{expected:#}"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    a.stop().await;
    b.stop().await;
}

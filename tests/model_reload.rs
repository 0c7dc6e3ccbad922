//! The running service picks up a new model file, stamps its version on
//! alerts, and keeps the old model when the new file is invalid.

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use common::*;

async fn wait_metric(svc: &Running, name: &str, labels: &str, want: f64) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while svc.metric(name, labels).await < want {
        assert!(
            Instant::now() < deadline,
            "{name}{{{labels}}} never reached {want}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Alerts by customer: model versions stamped on them.
fn versions(broker: &Broker, topic: &str) -> BTreeMap<String, Vec<String>> {
    let mut out: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for r in read_all(broker, topic) {
        let a = r.json();
        out.entry(a["customer_id"].as_str().unwrap().to_string())
            .or_default()
            .push(a["model_version"].as_str().unwrap().to_string());
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn new_model_files_are_used_and_invalid_ones_refused() {
    let broker = Broker::mock();
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = test_config(&broker, dir.path());
    cfg.model.path = dir.path().join("model.json");
    cfg.model.reload_check_seconds = 0.1;
    let mut file = test_model(&cfg).file().clone();
    file.version = "v1".into();
    std::fs::write(&cfg.model.path, serde_json::to_string(&file).unwrap()).unwrap();
    broker.create_topics(&cfg).await;
    let service = churn_alert::service::Service::new(cfg.clone()).unwrap();
    let stop = tokio_util::sync::CancellationToken::new();
    let admin = service.serve_admin(stop.clone()).await.unwrap();
    let svc = Running::spawn(service, admin, stop);
    let topic = cfg.kafka.input_topic.clone();
    // Customer `c` is active on `day`; a later event of another customer on
    // the same partition moves event time on by 15 days, so `c` is
    // re-scored silent and alerted.
    let alert_for = |c: &str, day: f64| {
        vec![
            event(c, &format!("{c}-a"), day, "session", "").on_partition(0),
            event(
                &format!("{c}-clock"),
                &format!("{c}-b"),
                day + 15.0,
                "session",
                "",
            )
            .on_partition(0),
        ]
    };
    let (_, high) = produce(&broker, &topic, &alert_for("c-1", 0.0)).await;
    svc.wait_committed(&high).await;
    assert_eq!(
        svc.metric("churn_alert_model_info", "version=\"v1\"").await,
        1.0
    );
    // The thresholds in use are exported, for dashboards and rules.
    let p1 = cfg.policy_for(Some(&file));
    assert_eq!(
        svc.metric("churn_alert_model_threshold", "kind=\"enter\"")
            .await,
        p1.enter
    );
    assert_eq!(
        svc.metric("churn_alert_model_threshold", "kind=\"exit\"")
            .await,
        p1.exit
    );

    // A model whose features the code does not compute: refused, v1 stays.
    let mut bad = file.clone();
    bad.version = "bad".into();
    bad.features[0] = "shoe_size".into();
    std::fs::write(&cfg.model.path, serde_json::to_string(&bad).unwrap()).unwrap();
    wait_metric(
        &svc,
        "churn_alert_model_reloads_total",
        "result=\"error\"",
        1.0,
    )
    .await;
    let (_, high) = produce(&broker, &topic, &alert_for("c-2", 20.0)).await;
    svc.wait_committed(&high).await;

    // A valid new model: used from the next batch on.
    file.version = "v2".into();
    // With thresholds of its own (lower: c-3 is still alerted).
    file.thresholds = Some(churn_alert::pipeline::model::Thresholds {
        enter: 0.6,
        exit: 0.5,
        basis: "test".into(),
    });
    std::fs::write(&cfg.model.path, serde_json::to_string(&file).unwrap()).unwrap();
    wait_metric(
        &svc,
        "churn_alert_model_reloads_total",
        "result=\"ok\"",
        1.0,
    )
    .await;
    assert_eq!(
        svc.metric("churn_alert_model_info", "version=\"v2\"").await,
        1.0
    );
    assert_eq!(
        svc.metric("churn_alert_model_info", "version=\"v1\"").await,
        0.0
    );
    // The new model's thresholds are the ones in use now.
    let p2 = cfg.policy_for(Some(&file));
    assert_ne!(p2.enter, p1.enter);
    let deadline = Instant::now() + Duration::from_secs(30);
    while svc
        .metric("churn_alert_model_threshold", "kind=\"enter\"")
        .await
        != p2.enter
    {
        assert!(
            Instant::now() < deadline,
            "the threshold metric was not updated"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (_, high) = produce(&broker, &topic, &alert_for("c-3", 40.0)).await;
    svc.wait_committed(&high).await;
    svc.stop().await;

    let v = versions(&broker, &cfg.kafka.alerts_topic);
    assert_eq!(v.get("c-1"), Some(&vec!["v1".to_string()]), "{v:?}");
    assert_eq!(v.get("c-2"), Some(&vec!["v1".to_string()]), "{v:?}");
    assert_eq!(v.get("c-3"), Some(&vec!["v2".to_string()]), "{v:?}");
    assert!(v.values().flatten().all(|x| x != "bad"), "{v:?}");
}

//! The operator's view over HTTP: one customer's features, score, segment
//! and alert state; erasure that leaves nothing behind; the model and
//! policy endpoints; and the bearer token on everything that changes state.

mod common;

use std::time::{Duration, Instant};

use common::*;
use serde_json::Value;

const TOKEN: &str = "test-token-0123456789";

async fn call(svc: &Running, method: &str, path: &str, token: Option<&str>) -> (u16, Value) {
    let (status, body) = http(svc.admin, method, path, token)
        .await
        .expect("admin server answers");
    (
        status,
        serde_json::from_str(&body).unwrap_or(Value::String(body)),
    )
}

fn events() -> Vec<Msg> {
    let mut v = vec![event("c-1", "k1", 0.0, "consent", r#""marketing":true"#)];
    for d in 0..5 {
        v.push(event(
            "c-1",
            &format!("p{d}"),
            d as f64 * 3.0,
            "purchase",
            r#""amount":40"#,
        ));
        v.push(event("c-2", &format!("s{d}"), d as f64, "session", ""));
    }
    // Advances every partition's event time, so c-1 goes silent long
    // enough to be alerted.
    for (i, c) in ["c-3", "c-4", "c-5", "c-6", "c-7", "c-8"]
        .iter()
        .enumerate()
    {
        v.push(event(c, &format!("late{i}"), 40.0, "session", ""));
    }
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn customer_view_erasure_and_control_endpoints() {
    let broker = Broker::mock();
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = test_config(&broker, dir.path());
    cfg.admin.token = Some(TOKEN.into());
    let file = dir.path().join("churn-alert.toml");
    std::fs::write(&file, "").unwrap();
    cfg.source = Some(file.clone());
    cfg.model.path = dir.path().join("model.json");
    std::fs::copy(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("models/churn-model.json"),
        &cfg.model.path,
    )
    .unwrap();
    broker.create_topics(&cfg).await;
    let svc = start(&cfg).await;
    let (_, high) = produce(&broker, &cfg.kafka.input_topic, &events()).await;
    svc.wait_committed(&high).await;

    // The customer view.
    let (status, v) = call(&svc, "GET", "/customers/c-1", Some(TOKEN)).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["customer_id"], "c-1");
    assert_eq!(v["totals"]["purchases"], 5);
    assert_eq!(v["totals"]["net_spend"], 200.0);
    assert_eq!(v["model_version"], "test-silence-1");
    let p = v["probability"].as_f64().unwrap();
    assert!(p > 0.7, "silent for 28 days: {p}");
    assert_eq!(v["alert"]["active"], true);
    assert_eq!(v["alert"]["alerts_published"], 1);
    assert_eq!(v["lifecycle"], "at_risk");
    assert!(v["segment"].is_string() && v["rfm"]["r"].is_u64());
    assert!(v["clv"].as_f64().unwrap() > 0.0);
    assert!(v["reasons"][0]["feature"] == "silence", "{v}");
    assert_eq!(v["status"], "active", "{v}");
    assert!(v["features"]["recency_days"].as_f64().unwrap() > 27.0);
    assert_eq!(v["last_events"]["last_purchase"], at(12.0));
    let awaiting = &v["contact"]["awaiting_outcome"];
    assert!(awaiting["alert_id"].is_string());
    let history = v["contact"]["alert_history"].as_array().unwrap();
    assert_eq!(history.len(), 1);
    assert_eq!(history[0]["alert_id"], awaiting["alert_id"]);
    assert!(history[0]["outcome"].is_null(), "not decided yet");
    let (status, _) = call(&svc, "GET", "/customers/nobody", Some(TOKEN)).await;
    assert_eq!(status, 404);

    // Model and policy.
    let (status, m) = call(&svc, "GET", "/model", None).await;
    assert_eq!(
        (status, m["version"].clone()),
        (200, "test-silence-1".into())
    );
    let (status, pol) = call(&svc, "GET", "/policy", None).await;
    assert_eq!(status, 200);
    assert_eq!(pol["holdout"]["share"], 0.0);
    assert!(pol["campaigns"].as_array().unwrap().len() >= 2);

    // Mutating endpoints need the token.
    for (method, path) in [
        ("DELETE", "/customers/c-1"),
        ("POST", "/policy/reload"),
        ("POST", "/model/reload"),
    ] {
        assert_eq!(call(&svc, method, path, None).await.0, 401, "{path}");
        assert_eq!(
            call(&svc, method, path, Some("wrong-token-0123456789"))
                .await
                .0,
            401,
            "{path}"
        );
    }

    // A policy reload: valid file applies, a rule set with a gap is refused.
    std::fs::write(&file, "[policy.holdout]\nshare = 0.25\n").unwrap();
    let (status, r) = call(&svc, "POST", "/policy/reload", Some(TOKEN)).await;
    assert_eq!(status, 200, "{r}");
    let deadline = Instant::now() + Duration::from_secs(20);
    while call(&svc, "GET", "/policy", None).await.1["holdout"]["share"] != 0.25 {
        assert!(
            Instant::now() < deadline,
            "the new policy was never applied"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    std::fs::write(
        &file,
        "[[policy.campaigns]]\ntiers = [\"critical\"]\nconsent = true\ncampaign_id = \"only-critical\"\nchannel = \"email\"\n",
    )
    .unwrap();
    let (status, r) = call(&svc, "POST", "/policy/reload", Some(TOKEN)).await;
    assert_eq!(status, 422, "{r}");
    let why = r["error"].as_str().unwrap();
    assert!(
        why.contains("policy.campaigns") && why.contains("no rule matches the case tier="),
        "{why}"
    );
    assert_eq!(
        call(&svc, "GET", "/policy", None).await.1["holdout"]["share"],
        0.25,
        "the refused file changed nothing"
    );
    assert_eq!(
        svc.metric("churn_alert_policy_reloads_total", "result=\"error\"")
            .await,
        1.0
    );
    // A model reload: a valid file applies, a broken one is refused.
    let (status, r) = call(&svc, "POST", "/model/reload", Some(TOKEN)).await;
    assert_eq!(status, 200, "{r}");
    let deadline = Instant::now() + Duration::from_secs(20);
    while call(&svc, "GET", "/model", None).await.1["version"] != r["version"] {
        assert!(Instant::now() < deadline, "the new model was never applied");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    std::fs::write(&cfg.model.path, "{\"version\": 3}").unwrap();
    let (status, r) = call(&svc, "POST", "/model/reload", Some(TOKEN)).await;
    assert_eq!(status, 422, "{r}");
    assert!(r["error"].as_str().unwrap().contains("version"), "{r}");

    // Erasure: state, due index and keyed outputs.
    let (status, r) = call(&svc, "DELETE", "/customers/c-1", Some(TOKEN)).await;
    assert_eq!(status, 202, "{r}");
    let deadline = Instant::now() + Duration::from_secs(30);
    while call(&svc, "GET", "/customers/c-1", Some(TOKEN)).await.0 != 404 {
        assert!(Instant::now() < deadline, "the customer was never erased");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(customer(svc.store.as_ref(), "c-1").is_none());
    for p in 0..PARTITIONS {
        let due = svc.store.due(p, i64::MAX, usize::MAX).unwrap();
        assert!(
            due.iter().all(|(_, c)| c != "c-1"),
            "c-1 left in the due index"
        );
    }
    assert_eq!(svc.metric("churn_alert_erasures_total", "").await, 1.0);
    // The erasure (stamped with today's wall time) did not move event time:
    // nobody else was re-scored into the present and alerted.
    let mut alerted: Vec<String> = read_all(&broker, &cfg.kafka.alerts_topic)
        .iter()
        .filter(|r| !r.payload.is_empty())
        .map(|r| r.json()["customer_id"].as_str().unwrap().to_string())
        .collect();
    alerted.sort();
    assert_eq!(alerted, ["c-1", "c-2"], "only c-1 and c-2 went silent");
    assert_eq!(
        call(&svc, "GET", "/customers/c-2", Some(TOKEN)).await.0,
        200
    );
    let k = &cfg.kafka;
    for topic in [&k.alerts_topic, &k.triggers_topic, &k.outcomes_topic] {
        let last = read_all(&broker, topic)
            .into_iter()
            .rfind(|r| r.key.as_deref() == Some(b"c-1".as_slice()))
            .unwrap_or_else(|| panic!("nothing keyed c-1 on {topic}"));
        assert!(
            last.payload.is_empty(),
            "{topic}: the last c-1 record is not a tombstone"
        );
        assert_eq!(
            last.headers.get("erasure").map(String::as_str),
            Some("true")
        );
    }
    // The state changelog forgets c-1 too (compaction drops the tombstone
    // and everything before it), so no instance can restore c-1.
    let last = read_all(&broker, &k.changelog_topic)
        .into_iter()
        .rfind(|r| r.key.as_deref() == Some(b"c-1".as_slice()))
        .expect("c-1 in the changelog");
    assert!(
        last.payload.is_empty(),
        "changelog: the last c-1 record is not a tombstone"
    );
    let alerts = read_all(&broker, &k.alerts_topic);
    assert!(
        alerts
            .iter()
            .any(|r| r.key.as_deref() == Some(b"c-1".as_slice()) && !r.payload.is_empty()),
        "c-1 had been alerted before the erasure"
    );
    svc.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutating_endpoints_are_disabled_without_a_token() {
    let broker = Broker::mock();
    let dir = tempfile::tempdir().unwrap();
    let cfg = test_config(&broker, dir.path());
    broker.create_topics(&cfg).await;
    let svc = start(&cfg).await;
    for (method, path) in [
        ("DELETE", "/customers/c-1"),
        ("POST", "/policy/reload"),
        ("POST", "/model/reload"),
    ] {
        let (status, body) = call(&svc, method, path, Some("anything-at-all-12345")).await;
        assert_eq!(status, 403, "{path}: {body}");
        assert!(body["error"].as_str().unwrap().contains("admin.token"));
    }
    assert_eq!(call(&svc, "GET", "/model", None).await.0, 200);
    svc.stop().await;
}

/// With `admin.read_token` set, a customer's personal data is shown only to
/// that token (or the admin token); without it the view stays open, as the
/// docs/configuration.md says. Metrics and health stay open for Prometheus either way.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn customer_data_needs_the_read_token_when_one_is_set() {
    const READ: &str = "read-token-0123456789";
    let broker = Broker::mock();
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = test_config(&broker, dir.path());
    cfg.admin.token = Some(TOKEN.into());
    cfg.admin.read_token = Some(READ.into());
    broker.create_topics(&cfg).await;
    let svc = start(&cfg).await;
    let (_, high) = produce(&broker, &cfg.kafka.input_topic, &events()).await;
    svc.wait_committed(&high).await;
    for token in [
        None,
        Some("wrong-token-0123456789"),
        Some("read-token-012345678"),
    ] {
        let (status, body) = call(&svc, "GET", "/customers/c-1", token).await;
        assert_eq!(status, 401, "{token:?}: {body}");
        assert!(body.get("features").is_none(), "no data leaks: {body}");
    }
    for token in [READ, TOKEN] {
        let (status, body) = call(&svc, "GET", "/customers/c-1", Some(token)).await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["customer_id"], "c-1", "{body}");
    }
    // The read token does not allow changes.
    assert_eq!(
        call(&svc, "DELETE", "/customers/c-1", Some(READ)).await.0,
        401
    );
    assert_eq!(svc.http_get("/metrics").await.0, 200);
    assert_eq!(svc.http_get("/healthz").await.0, 200);
    svc.stop().await;

    // No read token: the admin token reads; with no token at all,
    // personal data is never open (401, saying which key to set).
    cfg.admin.read_token = None;
    let svc = start(&cfg).await;
    svc.wait_ready().await;
    let (status, body) = call(&svc, "GET", "/customers/c-1", None).await;
    assert_eq!(status, 401, "{body}");
    let (status, body) = call(&svc, "GET", "/customers/c-1", Some(TOKEN)).await;
    assert_eq!(status, 200, "{body}");
    svc.stop().await;
    cfg.admin.token = None;
    let svc = start(&cfg).await;
    svc.wait_ready().await;
    let (status, body) = call(&svc, "GET", "/customers/c-1", None).await;
    assert_eq!(status, 401, "{body}");
    assert!(
        body["error"].as_str().unwrap().contains("admin.read_token"),
        "{body}"
    );
    assert!(body.get("features").is_none(), "no data leaks: {body}");
    svc.stop().await;
}

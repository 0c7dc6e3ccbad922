//! `churn-alert score` on an event history reproduces the probabilities the
//! running service computed for the same customers at the same event time,
//! and `churn-alert backtest` reproduces the alerts it published.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::Command;

use churn_alert::offline::flags::ModelArg;
use churn_alert::offline::simulate::{SimConfig, Simulator};
use churn_alert::pipeline::event::{rfc3339, DAY_MS};
use churn_alert::pipeline::model::Model;
use common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn score_reproduces_the_live_services_probabilities() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let model_path = root.join("models/churn-model.json");
    let broker = Broker::mock();
    let dir = tempfile::tempdir().unwrap();
    let cfg = test_config(&broker, dir.path());
    broker.create_topics(&cfg).await;
    let model = Model::load(&model_path, &cfg.feature_spec()).unwrap();
    let svc = start_with_model(&cfg, model).await;

    // A simulated history, in event-time order, through the service.
    let mut sim_cfg = SimConfig::new(300, 150, 21);
    sim_cfg.end = T0 + 150 * DAY_MS;
    let mut sim = Simulator::new(sim_cfg);
    let mut events = Vec::new();
    while !sim.done() {
        events.extend(sim.next_day());
    }
    let history = dir.path().join("history.jsonl");
    let lines: Vec<&str> = events.iter().map(|e| e.json.as_str()).collect();
    std::fs::write(&history, lines.join("\n") + "\n").unwrap();
    let producer = broker.producer();
    let mut high = BTreeMap::new();
    for day in events.chunks(5000) {
        produce_events(&producer, &cfg.kafka.input_topic, day, &mut high).await;
    }
    svc.wait_committed(&high).await;
    let alerts: Vec<serde_json::Value> = read_all(&broker, &cfg.kafka.alerts_topic)
        .iter()
        .map(Record::json)
        .collect();
    svc.stop().await;

    // `backtest` replays the same history through the service's own
    // processing: the very alerts the service published, no more, no less.
    let bt = dir.path().join("backtest");
    churn_alert::offline::backtest::run(
        churn_alert::offline::backtest::BacktestOptions {
            history: churn_alert::offline::history::HistoryArgs {
                events: vec![history.clone()],
                sort_buffer_mb: 64,
            },
            model: ModelArg {
                path: Some(model_path.clone()),
            },
            from: None,
            to: None,
            horizon: None,
            churn_gap: None,
            lookback: 90 * DAY_MS,
            lead_to: None,
            partitions: PARTITIONS as usize,
            truth: None,
            oracle: None,
            out: bt.clone(),
        },
        &cfg,
    )
    .unwrap();
    let replayed: BTreeSet<(String, String, String)> =
        std::fs::read_to_string(bt.join("alerts.csv"))
            .unwrap()
            .lines()
            .skip(1)
            .map(|l| {
                let f: Vec<&str> = l.split(',').collect();
                (f[0].to_string(), f[2].to_string(), f[3].to_string())
            })
            .collect();
    let live: BTreeSet<(String, String, String)> = alerts
        .iter()
        .map(|a| {
            (
                a["alert_id"].as_str().unwrap().to_string(),
                rfc3339(a["as_of_ms"].as_i64().unwrap()),
                a["probability"].as_f64().unwrap().to_string(),
            )
        })
        .collect();
    assert!(live.len() > 20, "{} alerts: too few to compare", live.len());
    assert_eq!(live.len(), alerts.len(), "no alert published twice");
    assert_eq!(
        replayed, live,
        "the backtest's alerts (id, time, probability) are the live service's"
    );

    // Alerts of both causes, at distinct times; at most 12 of each.
    let mut picked = Vec::new();
    for cause in ["silence", "event"] {
        let mut times = BTreeSet::new();
        picked.extend(
            alerts
                .iter()
                .filter(|a| a["cause"] == cause && times.insert(a["as_of_ms"].as_i64().unwrap()))
                .take(12)
                .cloned(),
        );
    }
    let silence = picked.iter().filter(|a| a["cause"] == "silence").count();
    assert!(
        silence >= 5 && picked.len() > silence,
        "{} alerts, {silence} of them for silence: too few to compare",
        alerts.len()
    );
    for a in &picked {
        let id = a["customer_id"].as_str().unwrap();
        let as_of = rfc3339(a["as_of_ms"].as_i64().unwrap());
        let out = Command::new(env!("CARGO_BIN_EXE_churn-alert"))
            .args(["score", "--events"])
            .arg(&history)
            .arg("--model")
            .arg(&model_path)
            .args(["--as-of", &as_of, "--out", "-"])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let csv = String::from_utf8(out.stdout).unwrap();
        assert!(csv.starts_with("customer_id,probability,risk_tier,"));
        let row: Vec<&str> = csv
            .lines()
            .find(|l| l.starts_with(&format!("{id},")))
            .unwrap_or_else(|| panic!("{id} missing from the scores at {as_of}"))
            .split(',')
            .collect();
        assert_eq!(
            row[5], "active",
            "an alerted customer is in the model's population"
        );
        let p: f64 = row[1].parse().unwrap();
        let live = a["probability"].as_f64().unwrap();
        assert!(
            (p - live).abs() <= 1e-9,
            "{id} at {as_of} ({}): score says {p}, the service said {live}",
            a["cause"]
        );
        assert_eq!(row[2], a["risk_tier"].as_str().unwrap(), "{id} tier");
        // The first reason is the alert's first reason.
        let first = a["reasons"][0]["feature"].as_str().unwrap();
        assert!(
            row[4].starts_with(&format!("{first}=")),
            "{row:?} vs {first}"
        );
    }
}

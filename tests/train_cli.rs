//! `simulate` then `train` with the real binary, as a user runs them: the
//! model loads in the service, the report and its plots are written, the
//! oracle is compared, reruns are identical, and unusable histories are
//! refused with a reason.

use std::path::Path;
use std::process::{Command, Output};

fn churn_alert(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_churn-alert"))
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .env_remove("CHURN_ALERT_CONFIG")
        .output()
        .expect("run churn-alert")
}

fn ok(o: Output) -> String {
    assert!(
        o.status.success(),
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

#[test]
fn simulate_train_and_score_from_the_command_line() {
    let dir = tempfile::tempdir().unwrap();
    let hist = dir.path().join("hist");
    ok(churn_alert(&[
        "simulate",
        "--customers",
        "3000",
        "--days",
        "240",
        "--seed",
        "9",
        "--end",
        "2026-09-01",
        "--late",
        "0.01",
        "--duplicates",
        "0.01",
        "--oracle-at",
        "2026-06-03",
        "--out",
        s(&hist),
    ]));
    let events = hist.join("events.jsonl");
    let oracle = hist.join("oracle-2026-06-03.csv");
    let header = std::fs::read_to_string(&oracle).unwrap();
    assert!(header.starts_with("customer_id,as_of,churned,hazard,p_churn_90d,p_silent_90d\n"));

    let model = dir.path().join("m/churn-model.json");
    let train = |out: &Path| {
        ok(churn_alert(&[
            "train",
            "--events",
            s(&events),
            "--as-of",
            "2026-09-01",
            "--horizon",
            "90d",
            "--oracle",
            s(&oracle),
            "--out",
            s(out),
        ]))
    };
    let printed = train(&model);
    assert!(printed.contains("held out 2026-06-03"), "{printed}");

    // The model is one the service accepts, with thresholds and provenance.
    let m: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&model).unwrap()).unwrap();
    let cfg = churn_alert::config::Config::default();
    let file: churn_alert::model::ModelFile = serde_json::from_value(m.clone()).unwrap();
    churn_alert::model::Model::new(file.clone(), &cfg.feature_spec()).unwrap();
    let th = file.thresholds.as_ref().unwrap();
    assert!(
        0.0 < th.exit && th.exit < th.enter && th.enter < 1.0,
        "{th:?}"
    );
    // Segments learned from the population: quintile cuts that split it.
    let seg = file.segments.as_ref().expect("segments learned");
    seg.rfm.check().unwrap();
    assert!(seg.rfm.frequency[0] < seg.rfm.frequency[3], "{seg:?}");
    assert!(seg.rfm.monetary[0] < seg.rfm.monetary[3], "{seg:?}");
    assert!(seg.rfm.recency_days[0] < seg.rfm.recency_days[3], "{seg:?}");
    assert!(
        (0.25..=50.0).contains(&seg.expected_lifetime_years),
        "{seg:?}"
    );
    let policy = cfg.policy_for(Some(&file));
    assert_eq!(policy.segments.rfm, seg.rfm, "the service uses them");
    let training = &m["training"];
    assert_eq!(training["data"]["sha256"].as_str().unwrap().len(), 64);
    assert_eq!(training["test_date"], "2026-06-03T00:00:00.000Z");
    let test = &training["metrics"]["test"];
    let oracle_test = &training["metrics"]["oracle_test"];
    let auc = test["roc_auc"].as_f64().unwrap();
    let oracle_auc = oracle_test["roc_auc"].as_f64().unwrap();
    assert!(auc > 0.85, "held-out AUC {auc}");
    assert!(
        oracle_auc > auc - 0.01,
        "oracle {oracle_auc} vs model {auc}"
    );
    assert_eq!(test["examples"], oracle_test["examples"]);
    for k in ["pr_auc", "brier", "calibration_error"] {
        assert!(test[k].as_f64().is_some(), "{k}");
    }
    assert_eq!(test["calibration"].as_array().unwrap().len(), 10);

    // The report and its three plots sit beside the model.
    let report = std::fs::read_to_string(dir.path().join("m/churn-model.report.md")).unwrap();
    for want in [
        "## Held-out figures",
        "oracle, held-out date",
        "## Thresholds",
        "## Calibration",
    ] {
        assert!(report.contains(want), "report lacks {want:?}");
    }
    for plot in ["roc", "calibration", "scores"] {
        let name = format!("churn-model-{plot}.svg");
        assert!(
            report.contains(&format!("]({name})")),
            "report does not show {name}"
        );
        let svg = std::fs::read_to_string(dir.path().join("m").join(&name)).unwrap();
        assert!(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"));
        assert!(svg.contains("<polyline"), "{name} draws nothing");
    }

    // Seeded data, deterministic fit: the same bytes again.
    let again = dir.path().join("again/churn-model.json");
    train(&again);
    let strip = |p: &Path| {
        let mut v: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap();
        v["training"]["data"]["file"] = serde_json::Value::Null;
        v
    };
    assert_eq!(strip(&model), strip(&again));

    // `score` writes every customer in the history once, with a probability.
    let scores = dir.path().join("scores.csv");
    ok(churn_alert(&[
        "score",
        "--events",
        s(&events),
        "--model",
        s(&model),
        "--as-of",
        "2026-09-01",
        "--out",
        s(&scores),
    ]));
    let csv = std::fs::read_to_string(&scores).unwrap();
    let rows: Vec<&str> = csv.lines().skip(1).collect();
    let ids: std::collections::BTreeSet<&str> =
        rows.iter().map(|r| r.split(',').next().unwrap()).collect();
    assert_eq!(ids.len(), rows.len());
    assert!(rows.len() > 2500, "{} customers scored", rows.len());
    assert!(rows.iter().all(|r| {
        let p: f64 = r.split(',').nth(1).unwrap().parse().unwrap();
        (0.0..=1.0).contains(&p)
    }));
}

#[test]
fn unusable_histories_are_refused_with_a_reason() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("m.json");
    let empty = dir.path().join("empty.jsonl");
    std::fs::write(&empty, "").unwrap();
    let o = churn_alert(&[
        "train",
        "--events",
        s(&empty),
        "--as-of",
        "2026-09-01",
        "--out",
        s(&out),
    ]);
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("no valid events"), "{err}");

    // Everyone active every day: nobody churns, one class only.
    let mut lines = String::new();
    for day in 0..200i64 {
        for c in 0..20 {
            let t = churn_alert::event::rfc3339(1_767_225_600_000 + day * 86_400_000);
            lines.push_str(&format!(
                r#"{{"event_id":"e{day}-{c}","customer_id":"c{c}","type":"session","occurred_at":"{t}"}}"#
            ));
            lines.push('\n');
        }
    }
    let loyal = dir.path().join("loyal.jsonl");
    std::fs::write(&loyal, lines).unwrap();
    let o = churn_alert(&[
        "train",
        "--events",
        s(&loyal),
        "--as-of",
        "2026-07-01",
        "--horizon",
        "30d",
        "--out",
        s(&out),
    ]);
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("only one outcome"), "{err}");
    assert!(!out.exists(), "no model is written");
}

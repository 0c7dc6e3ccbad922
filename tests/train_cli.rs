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
        "2026-07-03",
        "--oracle-horizon",
        "30d",
        "--out",
        s(&hist),
    ]));
    let events = hist.join("events.jsonl");
    let oracle = hist.join("oracle-2026-07-03.csv");
    let header = std::fs::read_to_string(&oracle).unwrap();
    assert!(header.starts_with("customer_id,as_of,churned,hazard,p_churn_30d,p_silent_30d\n"));

    let model = dir.path().join("m/churn-model.json");
    let train = |out: &Path| {
        ok(churn_alert(&[
            "train",
            "--events",
            s(&events),
            "--as-of",
            "2026-09-01",
            // The simulator's oracle counts churn by a 30-day silence.
            "--churn-gap",
            "30d",
            "--oracle",
            s(&oracle),
            "--truth",
            s(&hist.join("truth.csv")),
            "--out",
            s(out),
        ]))
    };
    let printed = train(&model);
    // Written atomically (no temporary file left beside it) and readable
    // by the service's user, as a plain write would leave it.
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(&model).unwrap().permissions().mode();
        assert_eq!(mode & 0o044, 0o044, "model file mode {mode:o}");
    }
    let left: Vec<_> = std::fs::read_dir(model.parent().unwrap())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(".tmp"))
        .collect();
    assert!(left.is_empty(), "temporary files left: {left:?}");
    // The default label: churn onset within 30 days, known 30 + 30 days
    // before as-of.
    assert!(printed.contains("held out 2026-07-03"), "{printed}");
    assert!(
        printed.contains("baselines on the same snapshots"),
        "{printed}"
    );

    // The model is one the service accepts, with thresholds and provenance.
    let m: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&model).unwrap()).unwrap();
    let cfg = churn_alert::config::Config::default();
    let file: churn_alert::pipeline::model::ModelFile = serde_json::from_value(m.clone()).unwrap();
    churn_alert::pipeline::model::Model::new(file.clone(), &cfg.feature_spec()).unwrap();
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
    assert_eq!(
        training["data"]["sha256_sorted_events"]
            .as_str()
            .unwrap()
            .len(),
        64
    );
    assert_eq!(training["test_date"], "2026-07-03T00:00:00.000Z");
    let population = file
        .population
        .as_ref()
        .expect("the onset label's population");
    assert_eq!(population.churned_after_days, 30.0);
    let test = &training["metrics"]["test"];
    let oracle_test = &training["metrics"]["oracle_test"];
    let auc = test["roc_auc"].as_f64().unwrap();
    let oracle_auc = oracle_test["roc_auc"].as_f64().unwrap();
    assert!(auc > 0.78, "held-out AUC {auc}");
    // The model beats both plain baselines on the same snapshots, and on
    // the ground truth too.
    for b in training["metrics"]["baselines_test"].as_array().unwrap() {
        let base = b["roc_auc"].as_f64().unwrap();
        assert!(auc > base + 0.02, "model {auc} vs {}: {base}", b["name"]);
    }
    let truth = training["metrics"]["truth_test"]["scores"]
        .as_array()
        .unwrap();
    let model_truth = truth[0][1].as_f64().unwrap();
    for row in &truth[1..3] {
        assert!(model_truth > row[1].as_f64().unwrap(), "{truth:?}");
    }
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
        "### Plain baselines",
        "### Against the ground truth",
        "## Customers past onset",
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
    assert_eq!(
        std::fs::read(&model).unwrap(),
        std::fs::read(&again).unwrap()
    );

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
    // Every customer has a probability of the same event (no engagement
    // within the horizon): those still there from the model, those past
    // onset from the win-back model, as 1 − their chance of coming back.
    let mut churned = 0;
    let mut ranked: Vec<(f64, bool)> = Vec::new();
    for r in &rows {
        let f: Vec<&str> = r.split(',').collect();
        let p: f64 = f[1]
            .parse()
            .unwrap_or_else(|_| panic!("no probability: {r}"));
        assert!((0.0..=1.0).contains(&p), "{r}");
        match f[5] {
            "active" => assert!(f[7].is_empty(), "{r}"),
            "churned" => {
                assert_eq!(f[2], "churned", "{r}");
                let back: f64 = f[7].parse().unwrap();
                assert!((p - (1.0 - back)).abs() < 1e-9, "{r}");
                churned += 1;
            }
            other => panic!("status {other}: {r}"),
        }
        ranked.push((p, f[5] == "churned"));
    }
    assert!(
        churned > 100 && churned < rows.len() - 100,
        "{churned} churned"
    );
    // One sort ranks everyone: customers past onset are not all put above
    // (or below) those still there, but among them by their own chance.
    ranked.sort_by(|a, b| b.0.total_cmp(&a.0));
    let top_churned = ranked[..churned].iter().filter(|r| r.1).count();
    assert!(
        top_churned > churned / 4 && top_churned < churned,
        "{top_churned} of the {churned} highest are past onset"
    );
}

/// Reorders the lines of a JSON-lines file by a key.
fn reorder(src: &Path, dst: &Path, key: impl Fn(&str) -> String) {
    let text = std::fs::read_to_string(src).unwrap();
    let mut lines: Vec<&str> = text.lines().collect();
    lines.sort_by_cached_key(|l| key(l));
    std::fs::write(dst, lines.join("\n") + "\n").unwrap();
}

#[test]
fn history_in_any_order_or_split_gives_identical_results() {
    let dir = tempfile::tempdir().unwrap();
    let hist = dir.path().join("hist");
    ok(churn_alert(&[
        "simulate",
        "--customers",
        "500",
        "--days",
        "200",
        "--seed",
        "4",
        "--end",
        "2026-09-01",
        "--late",
        "0.01",
        "--duplicates",
        "0.01",
        "--out",
        s(&hist),
    ]));
    let events = hist.join("events.jsonl");
    // By customer, as warehouse exports are; shuffled; and one file per
    // source system (event type), each in customer order.
    let field = |l: &str, name: &str| {
        let v: serde_json::Value = serde_json::from_str(l).unwrap();
        v[name].as_str().unwrap_or_default().to_string()
    };
    let by_customer = dir.path().join("by-customer.jsonl");
    reorder(&events, &by_customer, |l| field(l, "customer_id"));
    let shuffled = dir.path().join("shuffled.jsonl");
    reorder(&events, &shuffled, |l| {
        format!(
            "{:016x}",
            churn_alert::pipeline::event::stable_hash(&[l.as_bytes()])
        )
    });
    let split = dir.path().join("by-source");
    std::fs::create_dir(&split).unwrap();
    let text = std::fs::read_to_string(&by_customer).unwrap();
    let mut files: std::collections::BTreeMap<String, String> = Default::default();
    for l in text.lines() {
        let f = files.entry(field(l, "type")).or_default();
        f.push_str(l);
        f.push('\n');
    }
    assert!(files.len() >= 5, "{:?}", files.keys());
    for (t, body) in &files {
        std::fs::write(split.join(format!("{t}.jsonl")), body).unwrap();
    }
    let run = |name: &str, input: &Path, extra: &[&str]| -> Vec<Vec<u8>> {
        let out = dir.path().join(name);
        let model = out.join("churn-model.json");
        let with_extra = |args: Vec<&str>| ok(churn_alert(&[&args[..], extra].concat()));
        let (scores, bt) = (out.join("scores.csv"), out.join("bt"));
        let (input, m) = (s(input), s(&model));
        with_extra(vec![
            "train",
            "--events",
            input,
            "--as-of",
            "2026-09-01",
            "--out",
            m,
        ]);
        with_extra(vec![
            "score",
            "--events",
            input,
            "--model",
            m,
            "--as-of",
            "2026-08-01",
            "--out",
            s(&scores),
        ]);
        let printed = with_extra(vec![
            "backtest",
            "--events",
            input,
            "--model",
            m,
            "--partitions",
            "3",
            "--out",
            s(&bt),
        ]);
        assert!(printed.contains("churners"), "{printed}");
        [model, scores, bt.join("alerts.csv")]
            .iter()
            .map(|p| std::fs::read(p).unwrap())
            .collect()
    };
    let time_order = run("time", &events, &[]);
    assert!(
        time_order[2].len() > 1000,
        "the backtest alerted: {} bytes",
        time_order[2].len()
    );
    for (name, input, extra) in [
        ("customer", &by_customer, &[][..]),
        ("shuffled", &shuffled, &["--sort-buffer-mb", "1"][..]),
        ("split", &split, &[][..]),
    ] {
        let got = run(name, input, extra);
        for (k, what) in ["model file", "scores", "backtest alerts"]
            .iter()
            .enumerate()
        {
            assert!(got[k] == time_order[k], "{name} order: the {what} differ");
        }
    }
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
    // Input the user gave that cannot train: exit 2, as a bad flag.
    assert_eq!(o.status.code(), Some(2));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("no valid events"), "{err}");

    // Too short a history: the error says how much these flags need.
    let short = dir.path().join("short.jsonl");
    std::fs::write(
        &short,
        "{\"event_id\":\"e1\",\"customer_id\":\"c1\",\"type\":\"session\",\"occurred_at\":\"2026-07-20T00:00:00Z\"}\n",
    )
    .unwrap();
    for (flags, days, from) in [
        (&[][..], 118, "2026-05-06"),
        (
            &[
                "--horizon",
                "14d",
                "--snapshot-step",
                "7d",
                "--label",
                "silence",
            ][..],
            58,
            "2026-07-05",
        ),
    ] {
        let mut args = vec![
            "train",
            "--events",
            s(&short),
            "--as-of",
            "2026-09-01",
            "--out",
            s(&out),
        ];
        args.extend_from_slice(flags);
        let o = churn_alert(&args);
        assert_eq!(o.status.code(), Some(2));
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(
            err.contains(&format!("at least {days} days before --as-of ({from})")),
            "{flags:?}: {err}"
        );
    }

    // Everyone active every day: nobody churns, one class only.
    let mut lines = String::new();
    for day in 0..200i64 {
        for c in 0..20 {
            let t = churn_alert::pipeline::event::rfc3339(1_767_225_600_000 + day * 86_400_000);
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
    assert_eq!(o.status.code(), Some(2));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("only one outcome"), "{err}");
    assert!(!out.exists(), "no model is written");
}

//! The offline commands over event files, `train` and `score`, and
//! `check-config`.
//!
//! Both read JSON lines of the event contract, validate them with the
//! service's rules and replay them through the service's feature code.

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::Context;

use crate::config::Config;
use crate::offline::evaluate::{self, ThresholdTarget};
use crate::offline::history::{read_sorted, HistoryArgs};
use crate::offline::simulate::{csv_line, csv_reader, read_truth};
use crate::offline::train::{self, Label, TrainConfig};
use crate::pipeline::event::{rfc3339, Millis, DAY_MS};
use crate::pipeline::model::Assessment;
use crate::pipeline::model::Model;
use crate::pipeline::step::{ingest, score_at};

pub use crate::offline::flags::{
    parse_auto_days, parse_days, parse_days_or_zero, parse_time, AutoDays, ModelArg, Usage,
};

/// Flags of `churn-alert train`.
#[derive(Debug, Clone, clap::Args)]
pub struct TrainOptions {
    #[command(flatten)]
    pub history: HistoryArgs,
    /// Training cut-off, YYYY-MM-DD: events after it are not read. The
    /// last observation date is the latest whose label is known by then
    /// (as-of minus the horizon, minus the churn gap for `onset`).
    #[arg(long, value_parser = parse_time)]
    pub as_of: Millis,
    /// Label horizon, e.g. 30d: how far ahead the model looks.
    #[arg(long, default_value = "30d", value_parser = parse_days)]
    pub horizon: Millis,
    /// What counts as churn: `onset` (the customer's churn onset, a silence
    /// of at least --churn-gap or a cancel, falls within the horizon),
    /// `silence` (no purchase, session or activity within the horizon) or
    /// `cancel` (a subscription cancel within it). `auto`: cancel in a
    /// subscription business (at least half the customers have
    /// subscription events, and 30 or more cancelled); else onset when the
    /// churn gap is no longer than the horizon (customers who engage
    /// often), else silence (a silence longer than the horizon is normal
    /// for the business, so the model asks whether the customer engages
    /// within it at all).
    #[arg(long, default_value = "auto", value_parser = ["auto", "onset", "silence", "cancel"])]
    pub label: String,
    /// For `onset`: how long a silence (no purchase, session or activity)
    /// must last to be churn, e.g. 30d. Customers silent this long are past
    /// onset (churned). `auto` reads it from the history: the shortest
    /// silence after which at most 10% of the customers ever came back
    /// (the report shows the return curve), limited to what the history
    /// allows.
    #[arg(long, default_value = "auto", value_parser = parse_auto_days)]
    pub churn_gap: AutoDays,
    /// For `onset`: a silence that has cost this many of the customer's
    /// usual active days (at their lifetime share of active days) also puts
    /// them past onset, before the churn gap; 0 turns this off.
    #[arg(long, default_value_t = train::DEFAULT_CHURN_MISSED_DAYS)]
    pub churn_missed_days: f64,
    /// Customers first seen less than this long ago are new: left out of
    /// training, scored but not alerted by the service (0d turns this
    /// off). A first event says little about a customer; two weeks see a
    /// weekly habit twice.
    #[arg(long, default_value = "14d", value_parser = parse_days_or_zero)]
    pub min_tenure: Millis,
    /// Number of observation dates (the latest is held out, the one before
    /// it validates, the rest train).
    #[arg(long, default_value_t = 12)]
    pub snapshots: usize,
    /// Days between observation dates.
    #[arg(long, default_value = "14d", value_parser = parse_days)]
    pub snapshot_step: Millis,
    /// Choose the enter threshold as the lowest whose customers churn at
    /// least at this rate on the validation date.
    #[arg(long, default_value_t = DEFAULT_TARGET_PRECISION, conflicts_with = "alert_budget")]
    pub target_precision: f64,
    /// Or: choose it so that this share of the population is alerted.
    #[arg(long)]
    pub alert_budget: Option<f64>,
    /// The simulator's oracle at the held-out date (`simulate --oracle-at`),
    /// to compare the model with the best possible score.
    #[arg(long)]
    pub oracle: Option<PathBuf>,
    /// Ground truth (`truth.csv` of `simulate`: customer_id and churned_at
    /// columns): also rank everyone still there on the held-out date by
    /// churn within the horizon, model beside baselines and oracle.
    #[arg(long)]
    pub truth: Option<PathBuf>,
    /// Model version (default churn-<as-of>).
    #[arg(long)]
    pub model_version: Option<String>,
    /// Where to write the model; the report and plots go beside it.
    #[arg(long)]
    pub out: PathBuf,
}

/// The default precision target of the enter threshold.
pub const DEFAULT_TARGET_PRECISION: f64 = 0.45;

/// Reads an oracle CSV: customer id -> the column for `label`.
fn read_oracle(path: &Path, label: Label, at: Millis) -> anyhow::Result<HashMap<String, f64>> {
    let reading = || format!("reading {}", path.display());
    let mut rows = csv_reader(path).with_context(reading)?;
    let want = match label {
        Label::Silence => "p_silent_",
        Label::Cancel | Label::Onset => "p_churn_",
    };
    let col = rows
        .headers()
        .with_context(reading)?
        .iter()
        .position(|h| h.starts_with(want))
        .with_context(|| format!("{}: no {want}* column", path.display()))?;
    let date = &rfc3339(at)[..10];
    let mut out = HashMap::new();
    for row in rows.records() {
        let row = row.with_context(reading)?;
        let line = csv_line(&row);
        anyhow::ensure!(
            row.get(1) == Some(date),
            "{} line {line}: the oracle is for {:?}, but the held-out date is {date}; simulate with --oracle-at {date}",
            path.display(),
            row.get(1).unwrap_or("")
        );
        let p: f64 = row
            .get(col)
            .and_then(|v| v.parse().ok())
            .with_context(|| format!("{} line {line}: bad number", path.display()))?;
        out.insert(row.get(0).unwrap_or("").to_string(), p);
    }
    Ok(out)
}

/// `churn-alert train`.
pub fn train(opts: TrainOptions, config: &Config) -> anyhow::Result<()> {
    let started = std::time::Instant::now();
    let as_of = opts.as_of;
    let spec = config.feature_spec();
    let mut tc = TrainConfig::new(as_of, opts.horizon, &spec);
    anyhow::ensure!(
        (3..=64).contains(&opts.snapshots),
        "--snapshots must be 3 to 64 (train, validation and test dates at least)"
    );
    tc.snapshots = opts.snapshots;
    tc.snapshot_step_ms = opts.snapshot_step;
    tc.min_tenure_ms = opts.min_tenure;
    let auto_gap = opts.churn_gap == AutoDays::Auto;
    if let AutoDays::Days(gap) = opts.churn_gap {
        tc.churn_gap_ms = gap;
    }
    anyhow::ensure!(
        opts.churn_missed_days >= 0.0 && opts.churn_missed_days.is_finite(),
        "--churn-missed-days must be 0 (off) or a positive number of days"
    );
    tc.churn_missed_days = (opts.churn_missed_days > 0.0).then_some(opts.churn_missed_days);
    let auto_label = opts.label == "auto";
    tc.label = Label::parse(&opts.label).unwrap_or(Label::Onset);
    tc.target = match opts.alert_budget {
        Some(b) => {
            anyhow::ensure!(b > 0.0 && b < 1.0, "--alert-budget must be between 0 and 1");
            ThresholdTarget::Budget(b)
        }
        None => {
            anyhow::ensure!(
                opts.target_precision > 0.0 && opts.target_precision < 1.0,
                "--target-precision must be between 0 and 1"
            );
            ThresholdTarget::Precision(opts.target_precision)
        }
    };
    if let Some(v) = &opts.model_version {
        tc.version = v.clone();
    }
    // One pass over the history for the return curve (the churn gap) and
    // whether customers subscribe (the label).
    let curve = if (auto_gap && tc.label != Label::Cancel) || auto_label {
        if opts.history.events.iter().any(|p| p == Path::new("-")) {
            return Err(Usage(
                "--churn-gap auto and --label auto read the history twice (once for the return curve): give the history as files, or set --churn-gap, e.g. 30d, and --label".into(),
            )
            .into());
        }
        let mut curve = crate::offline::gap::ReturnCurve::default();
        read_sorted(&opts.history, config, as_of - 1, |e, _| curve.push(&e))?;
        Some(curve)
    } else {
        None
    };
    let subscriptions = curve.as_ref().and_then(|c| c.subscriptions());
    if auto_label && subscriptions.is_some() {
        tc.label = Label::Cancel;
    }
    let gap_choice = match &curve {
        Some(curve) if auto_gap && tc.label != Label::Cancel => {
            // The longest gap that leaves three observation dates after the
            // warm-up: history − warm-up − 2 steps − horizon.
            let span = curve
                .first_day()
                .map_or(0, |f| as_of.div_euclid(DAY_MS) - f);
            // (less a day: the warm-up counts from the first event's time).
            let max_days =
                span - 1 - (tc.warm_up_ms + 2 * tc.snapshot_step_ms + tc.horizon_ms) / DAY_MS;
            let mut g = curve.choose(as_of, i64::MAX, 30);
            if auto_label {
                tc.label = auto_label_for(g.days * DAY_MS, tc.horizon_ms);
            }
            // Only the onset label waits for the gap to know its labels.
            if tc.label == Label::Onset && g.days > max_days {
                g = curve.choose(as_of, max_days.max(1), 30);
            }
            tc.churn_gap_ms = g.days * DAY_MS;
            eprintln!("churn gap: {} days: {}", g.days, g.basis);
            Some(g)
        }
        _ => {
            if auto_label && tc.label != Label::Cancel {
                tc.label = auto_label_for(tc.churn_gap_ms, tc.horizon_ms);
            }
            None
        }
    };
    if auto_label {
        match (tc.label, subscriptions) {
            (Label::Cancel, Some((share, cancels))) => eprintln!(
                "label: cancel ({:.0}% of the customers subscribe and {cancels} cancelled: a subscription business, whose churn is a cancellation)",
                share * 100.0
            ),
            (label, _) => eprintln!(
                "label: {} (the churn gap, {} days, is {} the horizon, {} days)",
                match label {
                    Label::Onset => "onset",
                    _ => "silence",
                },
                tc.churn_gap_ms / DAY_MS,
                if label == Label::Onset {
                    "within"
                } else {
                    "longer than"
                },
                tc.horizon_ms / DAY_MS
            ),
        }
    }
    let dates = tc.observation_dates();
    eprintln!(
        "observation dates {} .. {} every {} days; label: churned = {}",
        &rfc3339(dates[0])[..10],
        &rfc3339(*dates.last().expect("dates"))[..10],
        tc.snapshot_step_ms / DAY_MS,
        tc.label.describe()
    );
    let mut replay = train::Replay::new(&spec, &tc)?;
    // Events after as-of are not read: labels end there.
    let read = read_sorted(&opts.history, config, as_of - 1, |e, _| replay.push(e))?;
    eprintln!(
        "read {} lines in {} file(s): {} events before as-of, {} refused by validation {:?}{}",
        read.lines,
        read.files,
        read.used,
        read.refused,
        read.refused_by,
        if read.spilled_runs > 0 {
            format!("; sorted on disk in {} runs", read.spilled_runs)
        } else {
            String::new()
        }
    );
    if read.used == 0 {
        return Err(crate::offline::train::TrainError::NoData(format!(
            "{} has no valid events before {}: nothing to learn from",
            opts.history.describe(),
            rfc3339(opts.as_of)
        ))
        .into());
    }
    let stats = replay.stats.clone();
    let mut snaps = replay.finish();
    let dropped = snaps.drop_constant_columns();
    if !dropped.is_empty() {
        eprintln!(
            "left out {} feature(s) that never vary in this history (signals it does not carry): {}",
            dropped.len(),
            dropped.join(", ")
        );
    }
    let twins = snaps.drop_duplicate_columns();
    if !twins.is_empty() {
        eprintln!(
            "left out {} feature(s) that equal another in this history: {}",
            twins.len(),
            twins
                .iter()
                .map(|(a, b)| format!("{a} (= {b})"))
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    eprintln!(
        "built {} labelled snapshots on {} dates ({:.0} s)",
        snaps.len(),
        snaps.dates.len(),
        started.elapsed().as_secs_f64()
    );
    // BG/NBD on every purchaser's history up to as-of: `score`'s expected
    // purchases, and the fit under which the service computes the
    // purchase-rhythm feature (with a population, whose horizon it needs).
    let bgnbd = crate::pipeline::bgnbd::BgNbd::fit(&snaps.final_rfm)
        .ok()
        .map(|(m, _)| m);
    if bgnbd.is_some() && tc.population().is_some() {
        let horizon_days = tc.horizon_ms as f64 / DAY_MS as f64;
        if let Err(why) = snaps.add_purchase_rhythm(horizon_days) {
            eprintln!("left out the purchase-rhythm feature: {why}");
        }
    }
    let mut t = train::fit(&snaps, &spec, &tc)?;
    t.dropped_constant = dropped;
    t.dropped_duplicate = twins;
    t.model.bgnbd = bgnbd;
    eprintln!(
        "fitted with L2 alpha {} ({:.0} s)",
        t.alpha,
        started.elapsed().as_secs_f64()
    );
    let oracle_map = match &opts.oracle {
        Some(p) => Some(read_oracle(p, tc.label, t.test_date)?),
        None => None,
    };
    let oracle = match (&opts.oracle, &oracle_map) {
        (Some(p), Some(map)) => {
            let scores = t
                .test_customers
                .iter()
                .map(|c| {
                    let id = &snaps.customers[*c as usize];
                    map.get(id).copied().with_context(|| {
                        format!("{}: no oracle row for customer {id}", p.display())
                    })
                })
                .collect::<anyhow::Result<Vec<f64>>>()?;
            let enter = t.model.thresholds.as_ref().map(|th| th.enter);
            Some((evaluate::evaluate(&scores, &t.test_labels, enter), scores))
        }
        _ => None,
    };
    let truth = match &opts.truth {
        Some(p) => Some(train::truth_evaluation(
            &snaps,
            &t,
            &tc,
            &read_truth(p)?,
            oracle_map.as_ref(),
        )?),
        None => None,
    };
    let mut model = t.model.clone();
    // Nothing here depends on how the history was ordered or split into
    // files: the same events give the same file.
    model.training = Some(serde_json::json!({
        "data": {
            "sha256_sorted_events": read.sha256,
            "events": read.used,
            "refused": read.refused,
            "first_event": stats.first_event.map(rfc3339),
            "last_event": stats.last_event.map(rfc3339),
        },
        "as_of": rfc3339(as_of),
        "horizon_days": tc.horizon_ms as f64 / DAY_MS as f64,
        "label": tc.label.describe(),
        "churn_gap_days": (tc.label != Label::Cancel).then(|| tc.churn_gap_ms as f64 / DAY_MS as f64),
        "churn_gap_choice": gap_choice,
        "features_left_out": t.dropped_constant,
        "features_left_out_as_copies": t.dropped_duplicate.iter().map(|(a, b)| serde_json::json!({"feature": a, "same_as": b})).collect::<Vec<_>>(),
        "win_back": t.win_back.as_ref().map(|w| serde_json::json!({
            "l2_alpha": w.alpha,
            "test": w.test,
            "table_test_roc_auc": w.table_test.roc_auc,
            "bgnbd_test_roc_auc": w.bgnbd_test.as_ref().map(|e| e.roc_auc),
        })),
        "win_back_missing": t.win_back_missing,
        "population": tc.label.population(),
        "observation_dates": t.dates.iter().map(|d| rfc3339(*d)).collect::<Vec<_>>(),
        "validation_date": rfc3339(t.dates[t.dates.len() - 2]),
        "test_date": rfc3339(t.test_date),
        "l2_alpha": t.alpha,
        "held_at_zero": t.held_at_zero,
        "metrics": {
            "train": t.train,
            "validation": t.validation,
            "test": t.test,
            "baselines_test": t.baselines.iter().map(|(n, e)| serde_json::json!({"name": n, "roc_auc": e.roc_auc, "pr_auc": e.pr_auc})).collect::<Vec<_>>(),
            "oracle_test": oracle.as_ref().map(|o| &o.0),
            "truth_test": truth,
        },
    }));
    // Refuse to write a model the service would refuse.
    Model::new(model.clone(), &spec)
        .map_err(|(f, m)| anyhow::anyhow!("the fitted model is invalid at {f}: {m}"))?;
    let dir = opts
        .out
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir)?;
    // Written beside and renamed into place, so a service that watches the
    // file never reads half of it.
    let mut tmp = tempfile::NamedTempFile::new_in(dir)
        .with_context(|| format!("writing {}", opts.out.display()))?;
    std::io::Write::write_all(
        &mut tmp,
        (serde_json::to_string_pretty(&model)? + "\n").as_bytes(),
    )
    .and_then(|_| {
        // Readable by the service's user, as a plain write would leave it
        // (a temporary file is created private).
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            tmp.as_file()
                .set_permissions(std::fs::Permissions::from_mode(0o644))?;
        }
        tmp.as_file().sync_all()
    })
    .with_context(|| format!("writing {}", opts.out.display()))?;
    tmp.persist(&opts.out)
        .with_context(|| format!("writing {}", opts.out.display()))?;
    let stem = opts
        .out
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "model".into());
    let t = train::Trained { model, ..t };
    let written = crate::offline::report::write(
        dir,
        &stem,
        &crate::offline::report::ReportInput {
            events_file: &opts.history.describe(),
            sha256: &read.sha256,
            stats: &stats,
            cfg: &tc,
            trained: &t,
            oracle: oracle.as_ref().map(|(e, s)| (e, s.as_slice())),
            truth: truth.as_ref(),
            gap: gap_choice.as_ref(),
            model_file: &opts.out.display().to_string(),
        },
    )?;
    let th = t.model.thresholds.as_ref().expect("fit sets thresholds");
    println!(
        "wrote {} ({}) and {}\n  held out {}: ROC AUC {:.4}, PR AUC {:.4}, Brier {:.4}, calibration error {:.4}, top-decile lift {:.2}\n  baselines on the same snapshots: {}{}{}\n  thresholds: enter {:.3}, exit {:.3} ({})\n  took {:.0} s",
        opts.out.display(),
        t.model.version,
        written[0].display(),
        &rfc3339(t.test_date)[..10],
        t.test.roc_auc,
        t.test.pr_auc,
        t.test.brier,
        t.test.calibration_error,
        t.test.top_decile.lift,
        t.baselines
            .iter()
            .map(|(n, e)| format!("{n}: ROC AUC {:.4}", e.roc_auc))
            .collect::<Vec<_>>()
            .join("; "),
        oracle
            .as_ref()
            .map(|(o, _)| format!(
                "\n  oracle on the same snapshots: ROC AUC {:.4}, PR AUC {:.4}, Brier {:.4}, calibration error {:.4}",
                o.roc_auc, o.pr_auc, o.brier, o.calibration_error
            ))
            .unwrap_or_default(),
        truth
            .as_ref()
            .map(|tr| format!(
                "\n  truth, everyone still there on {} ({} customers, {:.3} churn within the horizon): {}",
                tr.date,
                tr.customers,
                tr.churn_rate,
                tr.scores
                    .iter()
                    .map(|(n, auc, _)| format!("{n} ROC AUC {auc:.4}"))
                    .collect::<Vec<_>>()
                    .join("; ")
            ))
            .unwrap_or_default(),
        th.enter,
        th.exit,
        th.basis,
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// `--label auto`: churn onset when the churn gap fits within the horizon,
/// else no engagement within the horizon.
pub fn auto_label_for(gap_ms: Millis, horizon_ms: Millis) -> Label {
    if gap_ms <= horizon_ms {
        Label::Onset
    } else {
        Label::Silence
    }
}

/// Flags of `churn-alert score`.
#[derive(Debug, Clone, clap::Args)]
pub struct ScoreOptions {
    #[command(flatten)]
    pub history: HistoryArgs,
    #[command(flatten)]
    pub model: ModelArg,
    /// Score as of this event time: YYYY-MM-DD (midnight UTC) or RFC 3339.
    /// Events after it are ignored.
    #[arg(long, value_parser = parse_time)]
    pub as_of: Millis,
    /// CSV to write (`-` for stdout).
    #[arg(long, default_value = "-")]
    pub out: PathBuf,
}

/// `churn-alert score`: every customer's probability at as-of, computed
/// the way the service computes it, on one scale: customers past churn
/// onset are listed as churned, with their chance of staying gone as the
/// probability and of coming back beside it.
pub fn score(opts: ScoreOptions, config: &Config) -> anyhow::Result<()> {
    let spec = config.feature_spec();
    let model = opts.model.load(config)?;
    let policy = config.policy_for(Some(model.file()));
    let as_of = opts.as_of;
    let mut index: HashMap<String, usize> = HashMap::new();
    let mut states = Vec::new();
    let read = read_sorted(&opts.history, config, as_of, |e, _| {
        let i = *index.entry(e.customer_id.clone()).or_insert_with(|| {
            states.push((e.customer_id.clone(), None));
            states.len() - 1
        });
        let slot = &mut states[i].1;
        *slot = ingest(slot.take(), &e, &spec).0;
    })?;
    // Nothing to score is a mistake in the flags, not a result.
    if read.used == 0 {
        return Err(Usage(format!(
            "no valid event at or before --as-of {} ({} valid events after it, {} refused, in {} lines): choose a date within the history",
            rfc3339(as_of),
            read.after,
            read.refused,
            read.lines
        ))
        .into());
    }
    states.sort_by(|a, b| a.0.cmp(&b.0));
    // The csv writer buffers: no BufWriter under it.
    let out: Box<dyn Write> = if opts.out == Path::new("-") {
        Box::new(std::io::stdout())
    } else {
        Box::new(
            std::fs::File::create(&opts.out)
                .with_context(|| format!("creating {}", opts.out.display()))?,
        )
    };
    let mut out = csv::Writer::from_writer(out);
    out.write_record([
        "customer_id",
        "probability",
        "risk_tier",
        "above_enter_threshold",
        "top_reasons",
        "status",
        "silent_days",
        "return_probability",
        "expected_purchases",
    ])?;
    let horizon_days = model
        .file()
        .population
        .as_ref()
        .map_or(30.0, |p| p.horizon_days);
    // BG/NBD's expected purchases within the horizon, from the state's
    // purchases (first event for the first purchase), when the model has it.
    let expected = |s: &crate::pipeline::features::CustomerState| -> String {
        let Some(m) = &model.file().bgnbd else {
            return String::new();
        };
        let days = |ms: Millis| ms.max(0) as f64 / DAY_MS as f64;
        let t = days(as_of - s.first_seen);
        let rfm = crate::pipeline::bgnbd::Rfm::of(
            f64::from(s.purchases),
            s.last_purchase.map_or(t, |l| days(as_of - l)),
            t,
        );
        format!("{:.4}", m.expected_purchases(&rfm, horizon_days))
    };
    let (mut n, mut above, mut churned) = (0u64, 0u64, 0u64);
    for (id, s) in &states {
        let Some(s) = s else { continue };
        match score_at(s, as_of, &model, policy.top_reasons, &spec) {
            Assessment::Scored(sc) => {
                let p = sc.probability;
                let reasons: Vec<String> = sc
                    .reasons
                    .iter()
                    .map(|r| format!("{}={:+.3}", r.feature, r.contribution))
                    .collect();
                out.write_record([
                    id.clone(),
                    p.to_string(),
                    policy.tier(p).to_string(),
                    (p >= policy.enter).to_string(),
                    reasons.join(";"),
                    "active".to_string(),
                    String::new(),
                    String::new(),
                    expected(s),
                ])?;
                above += u64::from(p >= policy.enter);
            }
            Assessment::Churned {
                silent_days,
                return_probability,
                probability,
            } => {
                out.write_record([
                    id.clone(),
                    probability.to_string(),
                    "churned".to_string(),
                    "false".to_string(),
                    String::new(),
                    "churned".to_string(),
                    format!("{silent_days:.2}"),
                    return_probability.to_string(),
                    expected(s),
                ])?;
                churned += 1;
            }
        }
        n += 1;
    }
    out.flush()?;
    eprintln!(
        "scored {n} customers as of {} with model {} from {} events ({} refused); {above} at or above the enter threshold {:.3}; {churned} past churn onset (churned)",
        rfc3339(as_of),
        model.version(),
        read.used,
        read.refused,
        policy.enter
    );
    Ok(())
}

/// `churn-alert check-config`: loads the model the config names against
/// the feature code, checks the Kafka client settings by creating each
/// client, and prints the thresholds and policy the service would use.
pub fn check_config(config: &Config) -> anyhow::Result<()> {
    let spec = config.feature_spec();
    let model = Model::load(&config.model.path, &spec)?;
    crate::kafka::client::check(&config.kafka)?;
    let policy = config.policy_for(Some(model.file()));
    println!(
        "config ok; model {} ({} features) matches the feature code; alerts at {:.3}, re-armed below {:.3} ({})",
        model.version(),
        model.file().features.len(),
        policy.enter,
        policy.exit,
        if config.policy.enter_threshold.is_some() || config.policy.exit_threshold.is_some() {
            "from the config"
        } else if model.file().thresholds.is_some() {
            "from the model"
        } else {
            "defaults"
        }
    );
    let c = &policy.contact;
    println!(
        "policy: {} campaign rules cover every case; holdout {:.0}% ({:?}); triggers at most {} per {} days, {} days apart, quiet hours {:?} ({} by default); outcomes after {} days; mutating admin endpoints {}",
        policy.campaigns.len(),
        policy.holdout.share * 100.0,
        policy.holdout.experiment,
        c.max_triggers,
        c.period_days,
        c.cooldown_days,
        c.quiet_hours,
        c.default_timezone,
        config.policy.outcome_window_days,
        if config.admin.token.is_some() { "enabled (token set)" } else { "disabled (no admin.token)" }
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_and_spans() {
        assert_eq!(parse_time("1970-01-02").unwrap(), DAY_MS);
        assert_eq!(parse_time("1970-01-01T00:00:01.5Z").unwrap(), 1500);
        assert!(parse_time("yesterday").is_err());
        assert_eq!(parse_days("90d").unwrap(), 90 * DAY_MS);
        assert!(parse_days("-1d").is_err());
        assert_eq!(parse_days_or_zero("0d").unwrap(), 0);
        assert_eq!(parse_days_or_zero("14d").unwrap(), 14 * DAY_MS);
        assert!(parse_days("0d").is_err());
        assert_eq!(parse_auto_days("auto").unwrap(), AutoDays::Auto);
        assert_eq!(parse_auto_days("30d").unwrap(), AutoDays::Days(30 * DAY_MS));
        assert!(parse_auto_days("soon").is_err());
        // Dates, the year optionally signed, and times with an offset.
        assert_eq!(parse_time("2026-06-30").unwrap(), 1_782_777_600_000);
        assert_eq!(parse_time("+2026-06-30").unwrap(), 1_782_777_600_000);
        assert_eq!(parse_time("-0001-01-01").unwrap(), -62_198_755_200_000);
        assert_eq!(
            parse_time("2026-06-30T12:00:00+02:00").unwrap(),
            1_782_777_600_000 + 10 * 3_600_000
        );
        for bad in [
            "2026-02-30",
            "2026-6-30",
            "2026-06-30 ",
            "20260630",
            "2026-06-30T12:00",
        ] {
            assert!(parse_time(bad).is_err(), "{bad}");
        }
    }

    use crate::offline::simulate::csv_fixtures::{with_awkward_id, AWKWARD_ID};

    #[test]
    fn oracle_round_trips_awkward_ids() {
        let sim = with_awkward_id();
        let at = sim.day_start(0);
        let rows = sim.oracle_rows(0);
        assert!(rows.iter().any(|r| r.customer_id == AWKWARD_ID));
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("oracle.csv");
        std::fs::write(&path, sim.oracle_csv(at, &rows)).unwrap();
        for label in [Label::Onset, Label::Silence] {
            let read = read_oracle(&path, label, at).unwrap();
            assert_eq!(read.len(), rows.len());
            for r in &rows {
                let want = match label {
                    Label::Silence => r.p_silent,
                    _ => r.p_churn,
                };
                assert!((read[&r.customer_id] - want).abs() < 1e-8, "{r:?}");
            }
        }
        let err = read_oracle(&path, Label::Onset, at + DAY_MS)
            .unwrap_err()
            .to_string();
        assert!(err.contains("line 2: the oracle is for"), "{err}");
    }
}

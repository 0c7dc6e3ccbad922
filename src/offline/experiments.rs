//! `churn-alert experiments`: the experiment readout from the outcomes
//! topic (read from its start) or a file of outcome records, as a table,
//! JSON or CSV. The same numbers as `GET /experiments`.

use std::io::BufRead;
use std::path::PathBuf;

use crate::config::Config;
use crate::pipeline::readout::{ExperimentReadout, ReadoutSettings, Tally};
use crate::telemetry::experiments::OutcomeChange;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    Table,
    Json,
    Csv,
}

/// The `experiments` command's flags.
#[derive(Debug, Clone, clap::Args)]
pub struct ExperimentsOptions {
    /// JSONL of outcome records, as published on the outcomes topic;
    /// without it the config's `kafka.outcomes_topic` is read from its start.
    #[arg(long, value_name = "FILE")]
    pub outcomes: Option<PathBuf>,
    #[arg(long, value_enum, default_value_t = Format::Table)]
    pub format: Format,
    /// The lift, in points of retention (0.03 = 3 points), the power line
    /// sizes for; default the config's `experiments.minimum_lift`.
    #[arg(long)]
    pub minimum_lift: Option<f64>,
}

/// Reads the outcome records of a JSONL file; a line that is not one is
/// an error naming the line.
pub fn read_file(path: &std::path::Path) -> anyhow::Result<Vec<OutcomeChange>> {
    let file = std::fs::File::open(path)
        .map_err(|e| anyhow::anyhow!("--outcomes {}: {e}", path.display()))?;
    let mut out = Vec::new();
    for (i, line) in std::io::BufReader::new(file).lines().enumerate() {
        let line = line?;
        if line.trim().is_empty() {
            continue;
        }
        let o = serde_json::from_str(&line).map_err(|e| {
            anyhow::anyhow!(
                "--outcomes {} line {}: not an outcome record: {e}",
                path.display(),
                i + 1
            )
        })?;
        out.push(OutcomeChange::Outcome(Box::new(o)));
    }
    Ok(out)
}

/// Folds records into a readout.
pub fn readout(
    changes: impl IntoIterator<Item = OutcomeChange>,
    settings: &ReadoutSettings,
) -> Vec<ExperimentReadout> {
    let mut tally = Tally::default();
    for c in changes {
        match c {
            OutcomeChange::Outcome(o) => tally.add(&o),
            OutcomeChange::Erased(id) => tally.forget(&id),
        };
    }
    tally.readout(settings)
}

pub fn run(opts: ExperimentsOptions, config: &Config) -> anyhow::Result<()> {
    let mut settings = config.experiments.clone();
    if let Some(l) = opts.minimum_lift {
        anyhow::ensure!(
            l > 0.0 && l < 1.0,
            "--minimum-lift must be between 0 and 1 (0.03 = 3 points), got {l}"
        );
        settings.minimum_lift = l;
    }
    let changes = match &opts.outcomes {
        Some(path) => read_file(path)?,
        None => {
            crate::kafka::client::check(&config.kafka)?;
            let (changes, skipped) = crate::kafka::outcomes::read_all(&config.kafka)?;
            if skipped > 0 {
                eprintln!(
                    "{skipped} records of {} are not outcome records; left out",
                    config.kafka.outcomes_topic
                );
            }
            changes
        }
    };
    let r = readout(changes, &settings);
    let text = match opts.format {
        Format::Json => serde_json::to_string_pretty(&r)? + "\n",
        Format::Csv => csv_text(&r)?,
        Format::Table => table(&r, &settings),
    };
    print!("{text}");
    Ok(())
}

fn pts(x: f64) -> String {
    format!("{:+.1}", x * 100.0)
}

/// The readout as a table a person reads: one block per experiment.
pub fn table(readouts: &[ExperimentReadout], s: &ReadoutSettings) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    if readouts.is_empty() {
        out.push_str("no experiment outcomes yet (outcomes are published policy.outcome_window_days after an alert)\n");
    }
    let level = format!("{:.0}%", (1.0 - s.alpha) * 100.0);
    for e in readouts {
        let split = e
            .arms
            .iter()
            .map(|a| {
                format!(
                    "{} {:.1}% (expected {:.1}%)",
                    a.arm,
                    a.observed_share * 100.0,
                    a.expected_share * 100.0
                )
            })
            .collect::<Vec<_>>()
            .join(", ");
        let _ = writeln!(
            out,
            "experiment {}: {} customers; split {split}; sample ratio {} (p = {:.2e})",
            e.experiment,
            e.customers,
            if e.sample_ratio_mismatch {
                "MISMATCH: do not trust the lifts"
            } else {
                "ok"
            },
            e.srm_p_value
        );
        let _ = writeln!(
            out,
            "  {:<14} {:>9} {:>9} {:>10} {:>17} {:>17} {:>9} {:>13} {:>6} {:>6} {:>9}",
            "arm",
            "customers",
            "retained",
            "lift pts",
            format!("{level} CI"),
            format!("always-valid"),
            "p (seq)",
            "verdict",
            "unsub",
            "compl",
            "needs"
        );
        for a in &e.arms {
            let (lift, ci, seq, p) = match &a.absolute_lift {
                Some(l) => (
                    pts(l.estimate),
                    format!("[{}, {}]", pts(l.ci[0]), pts(l.ci[1])),
                    format!("[{}, {}]", pts(l.sequential_ci[0]), pts(l.sequential_ci[1])),
                    format!("{:.4}", l.sequential_p_value),
                ),
                None => ("-".into(), "-".into(), "-".into(), "-".into()),
            };
            let _ = writeln!(
                out,
                "  {:<14} {:>9} {:>8.1}% {:>10} {:>17} {:>17} {:>9} {:>13} {:>6} {:>6} {:>9}",
                a.arm,
                a.customers,
                a.retained_rate * 100.0,
                lift,
                ci,
                seq,
                p,
                a.verdict,
                a.unsubscribed,
                a.complained,
                a.customers_more
                    .map_or("-".to_string(), |m| format!("+{m}"))
            );
        }
        if let Some(more) = e
            .arms
            .iter()
            .filter(|a| a.verdict == "inconclusive")
            .filter_map(|a| a.customers_more)
            .max()
        {
            let _ = writeln!(
                out,
                "  needs {more} more customers to detect a lift of {:.1} points at the holdout's retention ({:.0}% power, always-valid test)",
                e.minimum_lift * 100.0,
                s.power * 100.0
            );
        }
    }
    out
}

/// One row per experiment and arm.
pub fn csv_text(readouts: &[ExperimentReadout]) -> anyhow::Result<String> {
    let mut w = csv::Writer::from_writer(Vec::new());
    w.write_record([
        "experiment",
        "arm",
        "customers",
        "retained",
        "retained_rate",
        "observed_share",
        "expected_share",
        "lift",
        "lift_ci_low",
        "lift_ci_high",
        "p_value",
        "sequential_ci_low",
        "sequential_ci_high",
        "sequential_p_value",
        "relative_lift",
        "relative_ci_low",
        "relative_ci_high",
        "verdict",
        "unsubscribed",
        "complained",
        "customers_needed",
        "srm_p_value",
        "sample_ratio_mismatch",
    ])?;
    let num = |x: Option<f64>| x.map_or(String::new(), |x| x.to_string());
    for e in readouts {
        for a in &e.arms {
            let l = a.absolute_lift.as_ref();
            let r = a.relative_lift.as_ref();
            w.write_record([
                e.experiment.clone(),
                a.arm.clone(),
                a.customers.to_string(),
                a.retained.to_string(),
                a.retained_rate.to_string(),
                a.observed_share.to_string(),
                a.expected_share.to_string(),
                num(l.map(|l| l.estimate)),
                num(l.map(|l| l.ci[0])),
                num(l.map(|l| l.ci[1])),
                num(l.map(|l| l.p_value)),
                num(l.map(|l| l.sequential_ci[0])),
                num(l.map(|l| l.sequential_ci[1])),
                num(l.map(|l| l.sequential_p_value)),
                num(r.map(|r| r.estimate)),
                num(r.map(|r| r.ci[0])),
                num(r.map(|r| r.ci[1])),
                a.verdict.clone(),
                a.unsubscribed.to_string(),
                a.complained.to_string(),
                a.customers_needed.map_or(String::new(), |n| n.to_string()),
                e.srm_p_value.to_string(),
                e.sample_ratio_mismatch.to_string(),
            ])?;
        }
    }
    Ok(String::from_utf8(w.into_inner()?)?)
}

//! The training report: markdown with the figures and SVG plots (ROC,
//! calibration, score distribution by outcome), written beside the model.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use crate::offline::evaluate::{roc_curve, Evaluation};
use crate::offline::train::{ReplayStats, TrainConfig, Trained};
use crate::pipeline::event::rfc3339;

/// One line on a plot.
pub struct Series {
    pub name: String,
    pub color: &'static str,
    pub points: Vec<(f64, f64)>,
    pub dashed: bool,
    pub markers: bool,
}

const W: f64 = 640.0;
const H: f64 = 480.0;
const LEFT: f64 = 70.0;
const RIGHT: f64 = 20.0;
const TOP: f64 = 50.0;
const BOTTOM: f64 = 60.0;

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// A line chart over `[0, x_max] x [0, y_max]` with grid, axis titles and a
/// legend.
pub fn chart(
    title: &str,
    x_label: &str,
    y_label: &str,
    y_max: f64,
    legend_top: bool,
    series: &[Series],
) -> String {
    chart_range(
        title,
        x_label,
        y_label,
        (0.0, 1.0),
        y_max,
        legend_top,
        series,
    )
}

/// A line chart over `[x_min, x_max] x [0, y_max]`.
pub fn chart_range(
    title: &str,
    x_label: &str,
    y_label: &str,
    (x_min, x_max): (f64, f64),
    y_max: f64,
    legend_top: bool,
    series: &[Series],
) -> String {
    let (pw, ph) = (W - LEFT - RIGHT, H - TOP - BOTTOM);
    let px = |x: f64| LEFT + ((x - x_min) / (x_max - x_min)).clamp(0.0, 1.0) * pw;
    let py = |y: f64| TOP + ph - (y / y_max).clamp(0.0, 1.0) * ph;
    let mut s = String::new();
    let _ = writeln!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" viewBox="0 0 {W} {H}" font-family="Helvetica, Arial, sans-serif" font-size="13">"#
    );
    let _ = writeln!(s, r#"<rect width="{W}" height="{H}" fill="white"/>"#);
    let _ = writeln!(
        s,
        r#"<text x="{}" y="28" text-anchor="middle" font-size="17" font-weight="bold">{}</text>"#,
        W / 2.0,
        esc(title)
    );
    for k in 0..=10 {
        let f = k as f64 / 10.0;
        let xv = x_min + f * (x_max - x_min);
        let (x, y) = (px(xv), py(f * y_max));
        let _ = writeln!(
            s,
            r##"<line x1="{x:.1}" y1="{TOP}" x2="{x:.1}" y2="{:.1}" stroke="#e5e5e5"/><line x1="{LEFT}" y1="{y:.1}" x2="{:.1}" y2="{y:.1}" stroke="#e5e5e5"/>"##,
            TOP + ph,
            LEFT + pw
        );
        if k % 2 == 0 {
            let _ = writeln!(
                s,
                r#"<text x="{x:.1}" y="{:.1}" text-anchor="middle">{}</text><text x="{:.1}" y="{:.1}" text-anchor="end">{}</text>"#,
                TOP + ph + 18.0,
                fmt_tick(xv),
                LEFT - 8.0,
                y + 4.0,
                fmt_tick(f * y_max)
            );
        }
    }
    let _ = writeln!(
        s,
        r#"<rect x="{LEFT}" y="{TOP}" width="{pw}" height="{ph}" fill="none" stroke="black"/>"#
    );
    let _ = writeln!(
        s,
        r#"<text x="{:.1}" y="{:.1}" text-anchor="middle">{}</text>"#,
        LEFT + pw / 2.0,
        H - 15.0,
        esc(x_label)
    );
    let _ = writeln!(
        s,
        r#"<text x="18" y="{:.1}" text-anchor="middle" transform="rotate(-90 18 {:.1})">{}</text>"#,
        TOP + ph / 2.0,
        TOP + ph / 2.0,
        esc(y_label)
    );
    for sr in series {
        if sr.points.is_empty() {
            continue;
        }
        let pts: Vec<String> = sr
            .points
            .iter()
            .map(|(x, y)| format!("{:.1},{:.1}", px(*x), py(*y)))
            .collect();
        let dash = if sr.dashed {
            r#" stroke-dasharray="6 4""#
        } else {
            ""
        };
        let _ = writeln!(
            s,
            r#"<polyline points="{}" fill="none" stroke="{}" stroke-width="2.2"{dash}/>"#,
            pts.join(" "),
            sr.color
        );
        if sr.markers {
            for (x, y) in &sr.points {
                let _ = writeln!(
                    s,
                    r#"<circle cx="{:.1}" cy="{:.1}" r="4" fill="{}"/>"#,
                    px(*x),
                    py(*y),
                    sr.color
                );
            }
        }
    }
    // Legend inside the plot: bottom right, or top middle where curves
    // would run under it.
    let lx = if legend_top {
        LEFT + pw / 2.0 - 120.0
    } else {
        LEFT + pw - 250.0
    };
    let mut ly = if legend_top {
        TOP + 14.0
    } else {
        TOP + ph - 18.0 * series.len() as f64 - 8.0
    };
    let _ = writeln!(
        s,
        r##"<rect x="{:.1}" y="{:.1}" width="242" height="{:.1}" fill="white" fill-opacity="0.9" stroke="#999"/>"##,
        lx - 6.0,
        ly - 6.0,
        18.0 * series.len() as f64 + 8.0
    );
    for sr in series {
        let dash = if sr.dashed {
            r#" stroke-dasharray="6 4""#
        } else {
            ""
        };
        let _ = writeln!(
            s,
            r#"<line x1="{lx:.1}" y1="{:.1}" x2="{:.1}" y2="{:.1}" stroke="{}" stroke-width="2.2"{dash}/><text x="{:.1}" y="{:.1}">{}</text>"#,
            ly + 6.0,
            lx + 24.0,
            ly + 6.0,
            sr.color,
            lx + 30.0,
            ly + 10.0,
            esc(&sr.name)
        );
        ly += 18.0;
    }
    s.push_str("</svg>\n");
    s
}

fn fmt_tick(v: f64) -> String {
    if v.abs() >= 10.0 {
        format!("{v:.0}")
    } else {
        format!("{v:.2}")
    }
}

/// Share of each class's scores per bin of width 0.05, as step points.
fn distribution(scores: &[f64], labels: &[bool], want: bool) -> Vec<(f64, f64)> {
    const BINS: usize = 20;
    let mut counts = [0usize; BINS];
    let mut n = 0usize;
    for (s, l) in scores.iter().zip(labels) {
        if *l == want {
            counts[((s * BINS as f64) as usize).min(BINS - 1)] += 1;
            n += 1;
        }
    }
    let mut pts = Vec::new();
    for (i, c) in counts.iter().enumerate() {
        let share = *c as f64 / n.max(1) as f64;
        pts.push((i as f64 / BINS as f64, share));
        pts.push(((i + 1) as f64 / BINS as f64, share));
    }
    pts
}

/// What the report says about where the data came from.
pub struct ReportInput<'a> {
    pub events_file: &'a str,
    pub sha256: &'a str,
    pub stats: &'a ReplayStats,
    pub cfg: &'a TrainConfig,
    pub trained: &'a Trained,
    /// Held-out figures and scores of the oracle, when one was given.
    pub oracle: Option<(&'a Evaluation, &'a [f64])>,
    /// Everyone still there per a ground truth, when one was given.
    pub truth: Option<&'a crate::offline::train::TruthEvaluation>,
    /// The churn gap read from the history (`--churn-gap auto`).
    pub gap: Option<&'a crate::offline::gap::GapChoice>,
    pub model_file: &'a str,
}

fn metrics_row(name: &str, e: &Evaluation) -> String {
    format!(
        "| {name} | {} | {:.3} | {:.4} | {:.4} | {:.4} | {:.4} | {:.4} | {:.2} |\n",
        e.examples,
        e.churn_rate,
        e.roc_auc,
        e.pr_auc,
        e.brier,
        e.log_loss,
        e.calibration_error,
        e.top_decile.lift
    )
}

/// One calibration curve: observed churn rate against mean predicted score
/// per non-empty bin.
fn calibration_series(who: &str, color: &'static str, e: &Evaluation) -> Series {
    Series {
        name: format!("{who} (error {:.3})", e.calibration_error),
        color,
        points: e
            .calibration
            .iter()
            .filter(|b| b.count > 0)
            .map(|b| (b.mean_predicted, b.observed_rate))
            .collect(),
        dashed: false,
        markers: true,
    }
}

/// Writes `<stem>.report.md` and three SVGs into `dir`; returns their paths.
pub fn write(dir: &Path, stem: &str, r: &ReportInput) -> std::io::Result<Vec<PathBuf>> {
    let t = r.trained;
    let date = |m: i64| rfc3339(m)[..10].to_string();
    let mut roc = vec![
        Series {
            name: format!("model (AUC {:.3})", t.test.roc_auc),
            color: "#1f5fbf",
            points: roc_curve(&t.test_scores, &t.test_labels),
            dashed: false,
            markers: false,
        },
        Series {
            name: "chance".into(),
            color: "#888888",
            points: vec![(0.0, 0.0), (1.0, 1.0)],
            dashed: true,
            markers: false,
        },
    ];
    let mut cal = vec![
        Series {
            name: "perfectly calibrated".into(),
            color: "#888888",
            points: vec![(0.0, 0.0), (1.0, 1.0)],
            dashed: true,
            markers: false,
        },
        calibration_series("model", "#1f5fbf", &t.test),
    ];
    if let Some((oe, os)) = r.oracle {
        roc.insert(
            1,
            Series {
                name: format!("oracle (AUC {:.3})", oe.roc_auc),
                color: "#d9822b",
                points: roc_curve(os, &t.test_labels),
                dashed: false,
                markers: false,
            },
        );
        cal.push(calibration_series("oracle", "#d9822b", oe));
    }
    let held = format!("held out: {}", date(t.test_date));
    let churned = distribution(&t.test_scores, &t.test_labels, true);
    let stayed = distribution(&t.test_scores, &t.test_labels, false);
    let y_max = 1.0;
    let mut dist = vec![
        Series {
            name: "churned".into(),
            color: "#c0392b",
            points: churned,
            dashed: false,
            markers: false,
        },
        Series {
            name: "stayed".into(),
            color: "#27ae60",
            points: stayed,
            dashed: false,
            markers: false,
        },
    ];
    if let Some(th) = &t.model.thresholds {
        dist.push(Series {
            name: format!("enter threshold {:.2}", th.enter),
            color: "#333333",
            points: vec![(th.enter, 0.0), (th.enter, y_max)],
            dashed: true,
            markers: false,
        });
    }
    let files = [
        (
            format!("{stem}-roc.svg"),
            chart(
                &format!("ROC curve ({held})"),
                "false positive rate",
                "true positive rate",
                1.0,
                false,
                &roc,
            ),
        ),
        (
            format!("{stem}-calibration.svg"),
            chart(
                &format!("Calibration ({held})"),
                "predicted churn probability (bin mean)",
                "observed churn rate",
                1.0,
                false,
                &cal,
            ),
        ),
        (
            format!("{stem}-scores.svg"),
            chart(
                &format!("Score distribution by outcome ({held})"),
                "predicted churn probability",
                "share of the outcome's customers",
                y_max,
                true,
                &dist,
            ),
        ),
    ];
    let mut paths = Vec::new();
    for (name, svg) in &files {
        let p = dir.join(name);
        std::fs::write(&p, svg)?;
        paths.push(p);
    }

    let cfg = r.cfg;
    let mut md = String::new();
    let _ = writeln!(md, "# Training report: {}\n", t.model.version);
    let _ = writeln!(
        md,
        "Model file: `{}`. Written by `churn-alert train`.\n",
        r.model_file
    );
    let _ = writeln!(md, "## Data\n");
    let st = r.stats;
    let _ = writeln!(
        md,
        "- Events: `{}` (SHA-256 `{}`), {} events read before as-of, from {} to {}.",
        r.events_file,
        r.sha256,
        st.events,
        st.first_event.map(date).unwrap_or_default(),
        st.last_event.map(date).unwrap_or_default()
    );
    let _ = writeln!(
        md,
        "- As-of {}, horizon {} days. Label: churned = {}.",
        date(cfg.as_of),
        cfg.horizon_ms / crate::pipeline::event::DAY_MS,
        cfg.label.describe()
    );
    let _ = writeln!(
        md,
        "- Population at each date: {} ({}).",
        cfg.label.population(),
        match cfg.label {
            crate::offline::train::Label::Cancel => "every subscriber".to_string(),
            _ => format!(
                "churn gap {} days",
                cfg.churn_gap_ms / crate::pipeline::event::DAY_MS
            ),
        }
    );
    let n = t.dates.len();
    let list = |ds: &[i64]| ds.iter().map(|d| date(*d)).collect::<Vec<_>>().join(", ");
    let _ = writeln!(
        md,
        "- Observation dates: training {}; validation {}; held-out test {}. {} snapshots in all; {} dates skipped for lack of warm-up.\n",
        list(&t.dates[..n - 2]),
        date(t.dates[n - 2]),
        date(t.dates[n - 1]),
        st.snapshots_taken,
        st.dates_skipped
    );
    let _ = writeln!(md, "## Fit\n");
    let _ = writeln!(
        md,
        "Standardised L2 logistic regression (linfa-logistic). L2 strength per training row, chosen by validation log loss{}: {}. Chosen: **{}**.\n",
        if t.train.examples > crate::offline::train::SELECTION_ROWS {
            format!(" (fitted on an evenly spread {} of the {} training rows; the chosen strength is then fitted on all)", crate::offline::train::SELECTION_ROWS, t.train.examples)
        } else {
            String::new()
        },
        t.alpha_scores
            .iter()
            .map(|(a, l)| format!("{a} → {l:.4}"))
            .collect::<Vec<_>>()
            .join(", "),
        t.alpha
    );
    let _ = writeln!(md, "## Held-out figures\n");
    let _ = writeln!(
        md,
        "| scores | snapshots | churn rate | ROC AUC | PR AUC | Brier | log loss | calibration error | top-decile lift |\n|---|---|---|---|---|---|---|---|---|"
    );
    md.push_str(&metrics_row("model, training dates", &t.train));
    md.push_str(&metrics_row("model, validation date", &t.validation));
    md.push_str(&metrics_row("**model, held-out date**", &t.test));
    if let Some((oe, _)) = r.oracle {
        md.push_str(&metrics_row("oracle, held-out date", oe));
        let _ = writeln!(
            md,
            "\nThe oracle is the simulator's true churn risk from each customer's hidden state at the held-out date (`simulate --oracle-at`). Model ROC AUC minus oracle: **{:+.4}**.",
            t.test.roc_auc - oe.roc_auc
        );
    }
    let _ = writeln!(
        md,
        "\nCalibration error: the mean, weighted by count, of |mean predicted − observed rate| over ten equal-width probability bins."
    );
    let _ = writeln!(
        md,
        "\n### Plain baselines\n\nPlain L2 logistic regressions on the same training rows and label, judged on the same held-out snapshots: a model that does not beat them is not worth its features.\n\n| baseline | ROC AUC | PR AUC |\n|---|---|---|\n| **model** | {:.4} | {:.4} |",
        t.test.roc_auc, t.test.pr_auc
    );
    for (name, e) in &t.baselines {
        let _ = writeln!(md, "| {name} | {:.4} | {:.4} |", e.roc_auc, e.pr_auc);
    }
    if let Some(tr) = r.truth {
        let _ = writeln!(
            md,
            "\n### Against the ground truth\n\nEveryone seen by {} and still there per the truth file ({} customers; {:.1}% churned within {} days), ranked by the chance of churning within the horizon: the model's probability, or for customers already past onset one minus their return rate; the baselines and the oracle score everyone.\n\n| ranking | ROC AUC | PR AUC |\n|---|---|---|",
            tr.date,
            tr.customers,
            tr.churn_rate * 100.0,
            cfg.horizon_ms / crate::pipeline::event::DAY_MS
        );
        for (name, auc, pr) in &tr.scores {
            let _ = writeln!(md, "| {name} | {auc:.4} | {pr:.4} |");
        }
    }
    let _ = writeln!(md, "\n## Thresholds\n");
    if let Some(th) = &t.model.thresholds {
        let _ = writeln!(
            md,
            "enter **{:.4}**, exit **{:.4}**: {}.\n",
            th.enter, th.exit, th.basis
        );
        let _ = writeln!(
            md,
            "| date | share above enter | precision above enter | recall | lift | churn rate at enter (±0.05) |\n|---|---|---|---|---|---|"
        );
        for (name, e) in [("validation", &t.validation), ("held-out", &t.test)] {
            if let Some(a) = &e.at_enter {
                let _ = writeln!(
                    md,
                    "| {name} | {:.3} | {:.3} | {:.3} | {:.2} | {:.3} |",
                    a.share, a.precision, a.recall, a.lift, a.precision_near
                );
            }
        }
        let _ = writeln!(
            md,
            "\nThe service alerts when a score crosses the enter threshold, once per crossing (with a cooldown), so a new alert can expect the churn rate *at* the threshold (last column); everyone above it on a date includes the near-certain and churns more. The config's `policy.enter_threshold` and `policy.exit_threshold`, when set, override these."
        );
    }
    if let Some(g) = &t.model.segments {
        let _ = writeln!(md, "\n## Segments and value\n");
        let _ = writeln!(
            md,
            "RFM quintile cut points on the latest training date (scores 1–5; the service uses them unless `segments.rfm` is configured):\n\n| dimension | cut points |\n|---|---|\n| recency (days since last purchase; fewer is better) | {:?} |\n| frequency (purchases) | {:?} |\n| monetary (net spend) | {:?} |\n\nExpected customer lifetime for CLV: {} years (1 / annual churn rate of the training population; `segments.expected_lifetime_years` overrides it).",
            g.rfm.recency_days, g.rfm.frequency, g.rfm.monetary, g.expected_lifetime_years
        );
    }
    let d = &t.test.top_decile;
    let _ = writeln!(
        md,
        "\nTop decile on the held-out date (score ≥ {:.3}): precision {:.3}, recall {:.3}, lift {:.2}.",
        d.threshold, d.precision, d.recall, d.lift
    );
    let _ = writeln!(md, "\n## Calibration (held-out)\n");
    let _ = writeln!(
        md,
        "| predicted | snapshots | mean predicted | observed |\n|---|---|---|---|"
    );
    for b in &t.test.calibration {
        let _ = writeln!(
            md,
            "| {:.1}–{:.1} | {} | {:.3} | {:.3} |",
            b.from, b.to, b.count, b.mean_predicted, b.observed_rate
        );
    }
    let _ = writeln!(md, "\n## Strongest weights (per standard deviation)\n");
    let mut w: Vec<(&String, f64)> = t
        .model
        .features
        .iter()
        .zip(&t.model.weights)
        .map(|(f, w)| (f, *w))
        .collect();
    w.sort_by(|a, b| b.1.abs().total_cmp(&a.1.abs()));
    let _ = writeln!(md, "| feature | weight |\n|---|---|");
    for (f, v) in w.iter().take(12) {
        let _ = writeln!(md, "| {f} | {v:+.3} |");
    }
    if !t.held_at_zero.is_empty() {
        let _ = writeln!(
            md,
            "\nHeld at zero because their fitted weight came out against the sign their meaning gives them (so that no reason reads backwards): {}.",
            t.held_at_zero.join(", ")
        );
    }
    if !t.dropped_constant.is_empty() {
        let _ = writeln!(
            md,
            "\nLeft out because they never vary in this history (signals it does not carry, such as sessions in a purchase-only shop): {}.",
            t.dropped_constant.join(", ")
        );
    }
    if !t.dropped_duplicate.is_empty() {
        let _ = writeln!(
            md,
            "\nLeft out because they equal another feature in every snapshot (purchases are all the engagement in a purchase-only shop): {}.",
            t.dropped_duplicate
                .iter()
                .map(|(a, b)| format!("{a} (= {b})"))
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    if let Some(g) = r.gap {
        let _ = writeln!(
            md,
            "\n## The churn gap\n\n**{} days**: {}.\n\nThe return curve: of the customers ever silent at least this long (between two engagements, or still silent at the end of the history), the share who came back afterwards.\n\n| silent at least (days) | customers | came back |\n|---|---|---|",
            g.days, g.basis
        );
        for c in &g.curve {
            let mark = if Some(c.silent_days) == g.from_curve {
                " **(chosen)**"
            } else {
                ""
            };
            let _ = writeln!(
                md,
                "| {}{mark} | {} | {:.3} |",
                c.silent_days, c.customers, c.came_back
            );
        }
    }
    if let Some(w) = &t.win_back {
        let _ = writeln!(
            md,
            "\n## Win-back: customers past onset\n\nA second logistic regression (L2 alpha {}) gives every customer past onset the chance of staying gone (no purchase, session or activity within the horizon), from the features of their history: the same scale as the active customers' probability, so one sort ranks everyone. On the held-out date, among the customers past onset:\n\n| ranking | customers | stayed gone | ROC AUC | PR AUC |\n|---|---|---|---|---|",
            w.alpha
        );
        let mut rows = vec![
            ("win-back model", &w.test),
            ("share that came back, by silence", &w.table_test),
        ];
        if let Some(b) = &w.bgnbd_test {
            rows.push(("BG/NBD expected purchases", b));
        }
        for (name, e) in rows {
            let _ = writeln!(
                md,
                "| {name} | {} | {:.3} | {:.4} | {:.4} |",
                e.examples, e.churn_rate, e.roc_auc, e.pr_auc
            );
        }
    } else if let Some(why) = &t.win_back_missing {
        let _ = writeln!(
            md,
            "\n## Win-back: customers past onset\n\nNo win-back model: {why}."
        );
    }
    if let Some(p) = &t.model.population {
        let _ = writeln!(
            md,
            "\n## Customers past onset\n\nCustomers silent {} days or more{} without an active subscription, or who cancelled within {} days, are churned: the service does not alert them. Without a win-back model they are shown with the chance of coming back within {} days found on the training dates (the first band holds the silences shorter than the gap):\n\n| silent at least (days) | came back | snapshots |\n|---|---|---|",
            p.churned_after_days,
            p.churned_after_missed_days
                .map(|n| format!(", or for {n} of their usual active days (a silence that unusual for them),"))
                .unwrap_or_default(),
            p.churned_after_days,
            p.horizon_days
        );
        for r in &p.return_rates {
            let _ = writeln!(
                md,
                "| {} | {:.3} | {} |",
                r.silent_days_from, r.rate, r.snapshots
            );
        }
    }
    let _ = writeln!(md, "\n## Plots\n");
    for (name, _) in &files {
        let _ = writeln!(md, "![{name}]({name})\n");
    }
    let p = dir.join(format!("{stem}.report.md"));
    std::fs::write(&p, md)?;
    paths.insert(0, p);
    Ok(paths)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chart_is_well_formed_svg_with_legend() {
        let s = chart(
            "T <1>",
            "x",
            "y",
            1.0,
            false,
            &[Series {
                name: "a & b".into(),
                color: "#000",
                points: vec![(0.0, 0.0), (0.5, 0.7), (1.0, 1.0)],
                dashed: false,
                markers: true,
            }],
        );
        assert!(s.starts_with("<svg") && s.trim_end().ends_with("</svg>"));
        assert!(s.contains("T &lt;1&gt;") && s.contains("a &amp; b"));
        // The point (0.5, 0.7) lands inside the plot area.
        assert!(s.contains(&format!(
            "{:.1},{:.1}",
            LEFT + 0.5 * (W - LEFT - RIGHT),
            TOP + (H - TOP - BOTTOM) * 0.3
        )));
        assert_eq!(s.matches("<circle").count(), 3);
    }
}

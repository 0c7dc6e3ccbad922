//! `churn-alert backtest`: how early the service's alerts come.
//!
//! The history is read in event-time order ([`crate::offline::history`]), cut into
//! input partitions by the upstream partitioner and fed, as messages, to the
//! service's own [`Processor`] with the event-time clock, the model and the
//! full alert policy (thresholds, hysteresis, cooldown, silence re-scoring)
//! on an in-memory store. Its alerts are therefore the alerts the live
//! service sends for the same partitions and messages (a test checks this
//! against the service on a Kafka cluster).
//!
//! Each alert is then set against the customer's churn onsets: read from
//! the data ([`crate::pipeline::onset`]: the last engagement before a silence of the
//! churn gap, or a cancel), or, with `--truth`, the simulator's churn time.
//! Leads run to the onset or, when the gap is longer than the horizon, to
//! the lapse: the day the silence reaches the gap ([`LeadTo`]).
//! The report gives, for the churners whose onset falls in the window, the
//! lead time of their first alert; for the alerts in the window, the share
//! sent after onset and the share followed by onset within the horizon; and
//! alerts per 1,000 customers per month. With the simulator's daily oracle
//! (`simulate --oracle-daily`), the oracle alerts as many customers the same
//! way and its figures stand beside the model's.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context;
use serde::Serialize;

use crate::config::Config;
use crate::offline::commands::{parse_days, parse_time, ModelArg};
use crate::offline::history::{read_sorted, HistoryArgs};
use crate::offline::report::{chart_range, Series};
use crate::offline::simulate::{csv_line, csv_reader, read_truth};
use crate::pipeline::event::{rfc3339, Millis, DAY_MS};
use crate::pipeline::onset::Track;
use crate::pipeline::step::Alert;
use crate::service::processor::{
    ClockMode, InMessage, OutKind, Outputs, Processor, Rules, StagedStore,
};

/// Flags of `churn-alert backtest`.
#[derive(Debug, Clone, clap::Args)]
pub struct BacktestOptions {
    #[command(flatten)]
    pub history: HistoryArgs,
    #[command(flatten)]
    pub model: ModelArg,
    /// Start of the window judged, YYYY-MM-DD (default: 60 days after the
    /// first event, so features have history).
    #[arg(long, value_parser = parse_time)]
    pub from: Option<Millis>,
    /// End of the window judged (exclusive; default: the churn gap before
    /// the last event, the last time an onset can be known; with --truth,
    /// the last event).
    #[arg(long, value_parser = parse_time)]
    pub to: Option<Millis>,
    /// How soon after an alert an onset makes it a correct warning
    /// (default: the model's horizon, else 30d).
    #[arg(long, value_parser = parse_days)]
    pub horizon: Option<Millis>,
    /// How long a silence must last to be churn (default: the model's,
    /// else 30d).
    #[arg(long, value_parser = parse_days)]
    pub churn_gap: Option<Millis>,
    /// How far before an onset an alert still counts as the warning of it.
    #[arg(long, default_value = "90d", value_parser = parse_days)]
    pub lookback: Millis,
    /// What lead times are measured to: `onset` (the last engagement
    /// before the churn's silence, or the cancel) or `lapse` (the day the
    /// silence reaches the churn gap). Default: `lapse` when the gap is
    /// longer than the horizon (the model then predicts "no engagement
    /// within the horizon", which only turns at the onset itself, so no
    /// alert can precede it), else `onset`; always `onset` with --truth.
    #[arg(long, value_enum)]
    pub lead_to: Option<LeadTo>,
    /// Input partitions, as the live topic has them (the event-time clock
    /// is per partition).
    #[arg(long, default_value_t = 1)]
    pub partitions: usize,
    /// Ground truth (`truth.csv` of `simulate`): onsets are the churn times
    /// it gives instead of those read from the data.
    #[arg(long)]
    pub truth: Option<PathBuf>,
    /// The simulator's daily oracle (`oracle-daily.csv` of `simulate
    /// --oracle-daily`): it alerts as many times, and its figures are shown
    /// beside the model's.
    #[arg(long)]
    pub oracle: Option<PathBuf>,
    /// Directory for alerts.csv, backtest.md and the plots.
    #[arg(long)]
    pub out: PathBuf,
}

/// The point of a churn that lead times are measured to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LeadTo {
    /// The churn onset: the last engagement before the silence, or the cancel.
    Onset,
    /// The day the silence reaches the churn gap: the customer is lost by
    /// the business's own definition (few come back after it).
    Lapse,
}

/// One alert, set against the customer's onsets.
#[derive(Debug, Clone, PartialEq)]
pub struct Judged {
    pub alert_id: String,
    pub customer_id: String,
    pub at: Millis,
    pub probability: f64,
    pub risk_tier: String,
    pub cause: crate::pipeline::output::Cause,
    pub reason: String,
    /// The onset this alert warned of or came after, if any.
    pub onset: Option<Millis>,
    pub class: Class,
}

/// What an alert turned out to be.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Class {
    /// Onset followed within the horizon (or, with leads measured to the
    /// lapse, the customer was silent since an onset and the silence had
    /// not yet reached the gap).
    Early,
    /// Sent after the onset (or the lapse) of a churn the customer had not
    /// come back from.
    Late,
    /// Neither: the customer stayed (for the horizon at least).
    NoChurn,
}

impl Class {
    fn as_str(self) -> &'static str {
        match self {
            Class::Early => "early",
            Class::Late => "late",
            Class::NoChurn => "no_churn",
        }
    }
}

/// The figures of one alerting (the model's, or the oracle's).
#[derive(Debug, Clone, Default, Serialize)]
pub struct Figures {
    pub alerts: usize,
    pub alerts_per_1000_per_month: f64,
    /// Share of alerts followed by onset within the horizon.
    pub precision: f64,
    /// Share of alerts sent after onset.
    pub too_late: f64,
    pub churners: usize,
    pub churners_alerted: usize,
    /// Share of churners whose first alert came at least 7, 14, 30 days
    /// before onset (with leads to the lapse, at least three quarters, half
    /// and a quarter of the churn gap before it: in the first quarter, half
    /// or three quarters of the silence; see [`Window::bands`]).
    pub ahead_7: f64,
    pub ahead_14: f64,
    pub ahead_30: f64,
    /// Median lead time of churners' first alerts (days; negative: after).
    pub median_lead_days: Option<f64>,
    /// Lead times of churners' first alerts, days.
    #[serde(skip)]
    pub leads: Vec<f64>,
}

/// Alert precision against chance: random alerts of the same volume, and
/// the alerts on new customers beside the rest.
#[derive(Debug, Clone, Default, Serialize)]
pub struct AgainstChance {
    /// Precision of random alerts (a random customer seen by then, at a
    /// random time in the window): the base rate an alert must beat.
    pub random_precision: f64,
    /// The random alerts drawn to measure it.
    pub random_alerts: usize,
    /// Model precision over the random precision.
    pub lift: f64,
    /// Alerts on customers first seen less than [`NEW_CUSTOMER_DAYS`]
    /// before, and their precision.
    pub new_alerts: usize,
    pub new_precision: f64,
    /// The other alerts, and their precision.
    pub other_alerts: usize,
    pub other_precision: f64,
}

/// A customer is new for [`AgainstChance`] for this many days after their
/// first event.
pub const NEW_CUSTOMER_DAYS: i64 = 14;

/// Random alerts drawn per model alert (at least [`MIN_RANDOM_ALERTS`]),
/// so that the random precision varies little.
const RANDOM_PER_ALERT: usize = 20;
const MIN_RANDOM_ALERTS: usize = 20_000;

/// Judges the window's alerts against chance and splits them by the
/// customers' age. `seen`: each customer's first and last event.
fn against_chance(
    alerts: &[Keyed],
    judged: &[(Class, Option<Millis>)],
    seen: &HashMap<String, (Millis, Millis)>,
    churns: &HashMap<String, Churns>,
    w: &Window,
    precision: f64,
) -> AgainstChance {
    use rand::{Rng, SeedableRng};
    let mut out = AgainstChance::default();
    let (mut new_early, mut other_early) = (0usize, 0usize);
    for ((id, at), (class, _)) in alerts.iter().zip(judged) {
        if !(w.from..w.to).contains(at) {
            continue;
        }
        let young = seen
            .get(id)
            .is_some_and(|(first, _)| at - first < NEW_CUSTOMER_DAYS * DAY_MS);
        let early = usize::from(*class == Class::Early);
        if young {
            out.new_alerts += 1;
            new_early += early;
        } else {
            out.other_alerts += 1;
            other_early += early;
        }
    }
    out.new_precision = new_early as f64 / out.new_alerts.max(1) as f64;
    out.other_precision = other_early as f64 / out.other_alerts.max(1) as f64;
    // Customers there during the window, in a fixed order.
    let mut there: Vec<(&String, Millis)> = seen
        .iter()
        .filter(|(_, (a, b))| *a < w.to && *b >= w.from)
        .map(|(id, (a, _))| (id, (*a).max(w.from)))
        .collect();
    there.sort();
    if there.is_empty() {
        return out;
    }
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(0);
    let n = (alerts.len() * RANDOM_PER_ALERT).max(MIN_RANDOM_ALERTS);
    let mut early = 0usize;
    for _ in 0..n {
        let (id, from) = there[rng.gen_range(0..there.len())];
        let at = rng.gen_range(from..w.to);
        early += usize::from(judge_one(churns.get(id), at, w).0 == Class::Early);
    }
    out.random_alerts = n;
    out.random_precision = early as f64 / n as f64;
    out.lift = precision / out.random_precision.max(1e-9);
    out
}

/// Onsets and returns of one customer.
struct Churns {
    /// Onsets, earliest first.
    onsets: Vec<Millis>,
    /// Engagement times after which the customer was back: for each onset,
    /// the first engagement after it (`Millis::MAX` if none).
    returns: Vec<Millis>,
    /// The onsets that are subscription cancels: the churn itself, so
    /// leads run to them even when other onsets' run to the lapse.
    cancels: Vec<Millis>,
}

impl Churns {
    /// The point the lead of onset `o` is measured to: the lapse (`o` plus
    /// the window's lapse), or `o` itself for a cancel.
    fn due(&self, o: Millis, w: &Window) -> Millis {
        if self.cancels.contains(&o) {
            o
        } else {
            o + w.lapse
        }
    }
}

/// What the judge needs of the history.
struct Window {
    from: Millis,
    to: Millis,
    horizon: Millis,
    lookback: Millis,
    /// From an onset to the point leads are measured to: 0 (the onset),
    /// or the churn gap (the lapse).
    lapse: Millis,
    /// Customers with at least one event in the window.
    customers: usize,
}

impl Window {
    fn months(&self) -> f64 {
        (self.to - self.from) as f64 / DAY_MS as f64 / (365.25 / 12.0)
    }

    /// A median lead, in days; with leads to the lapse, also how long after
    /// the onset that first alert came.
    fn describe_lead(&self, median: Option<f64>) -> String {
        match median {
            None => "none".into(),
            Some(d) if self.lapse > 0 => {
                format!("{d:.1} days (the first alert {})", self.against_onset(d))
            }
            Some(d) => format!("{d:.1} days"),
        }
    }

    /// Where a first alert `lead` days before the lapse stands against the
    /// onset of a silence.
    fn against_onset(&self, lead: f64) -> String {
        let after = (self.lapse / DAY_MS) as f64 - lead;
        if after >= 0.0 {
            format!("{after:.1} days after the onset")
        } else {
            format!("{:.1} days before the onset", -after)
        }
    }

    /// The leads (days) the shares of churners alerted ahead are counted
    /// at: 7, 14 and 30 days before onset, or, with leads to the lapse,
    /// three quarters, half and a quarter of the gap before it (alerted
    /// within the first quarter, half or three quarters of the silence).
    fn bands(&self) -> [f64; 3] {
        if self.lapse > 0 {
            let g = (self.lapse / DAY_MS) as f64;
            [(g * 0.75).round(), (g * 0.5).round(), (g * 0.25).round()]
        } else {
            [7.0, 14.0, 30.0]
        }
    }

    /// The bands as a label.
    fn bands_label(&self) -> String {
        let [a, b, c] = self.bands();
        format!("{a} / {b} / {c} days")
    }

    /// The name of the point leads are measured to.
    fn point(&self) -> &'static str {
        if self.lapse > 0 {
            "lapse"
        } else {
            "onset"
        }
    }
}

/// Classifies alerts (customer, time) against the churns.
fn judge_one(c: Option<&Churns>, at: Millis, w: &Window) -> (Class, Option<Millis>) {
    let Some(c) = c else {
        return (Class::NoChurn, None);
    };
    // The latest onset before the alert whose silence it falls in (an
    // alert at the very moment of onset still came in time, with no lead).
    let k = c.onsets.partition_point(|o| *o < at);
    if k > 0 && at < c.returns[k - 1] {
        let o = c.onsets[k - 1];
        let class = if at < c.due(o, w) {
            Class::Early
        } else {
            Class::Late
        };
        return (class, Some(o));
    }
    match c.onsets.get(k) {
        Some(o) if *o <= at + w.horizon => (Class::Early, Some(*o)),
        _ => (Class::NoChurn, None),
    }
}

/// The figures for alerts `(customer, time)` (sorted by time) in the window.
fn figures(
    alerts: &[(String, Millis)],
    churns: &HashMap<String, Churns>,
    w: &Window,
) -> (Figures, Vec<(Class, Option<Millis>)>) {
    let mut f = Figures::default();
    let mut judged = Vec::with_capacity(alerts.len());
    let (mut early, mut late) = (0usize, 0usize);
    let mut by_customer: HashMap<&str, Vec<Millis>> = HashMap::new();
    for (id, at) in alerts {
        let j = judge_one(churns.get(id), *at, w);
        if (w.from..w.to).contains(at) {
            f.alerts += 1;
            early += usize::from(j.0 == Class::Early);
            late += usize::from(j.0 == Class::Late);
        }
        by_customer.entry(id).or_default().push(*at);
        judged.push(j);
    }
    f.alerts_per_1000_per_month =
        f.alerts as f64 / (w.customers.max(1) as f64 / 1000.0) / w.months().max(1e-9);
    f.precision = early as f64 / f.alerts.max(1) as f64;
    f.too_late = late as f64 / f.alerts.max(1) as f64;
    let mut ids: Vec<&String> = churns.keys().collect();
    ids.sort();
    for id in ids {
        let c = &churns[id];
        for (k, o) in c.onsets.iter().enumerate() {
            if !(w.from..w.to).contains(o) {
                continue;
            }
            f.churners += 1;
            // The first alert within the look-back before the onset (and
            // after the customer came back from an earlier churn), up to
            // the customer's return.
            let start = (o - w.lookback).max(if k > 0 { c.returns[k - 1] } else { Millis::MIN });
            let end = c.returns[k].min(c.due(*o, w) + w.lookback);
            let first = by_customer
                .get(id.as_str())
                .and_then(|ts| ts.iter().copied().find(|t| *t >= start && *t < end));
            if let Some(t) = first {
                f.churners_alerted += 1;
                f.leads.push((c.due(*o, w) - t) as f64 / DAY_MS as f64);
            }
        }
    }
    let share = |days: f64| {
        f.leads.iter().filter(|l| **l >= days).count() as f64 / f.churners.max(1) as f64
    };
    let [a, b, c] = w.bands();
    (f.ahead_7, f.ahead_14, f.ahead_30) = (share(a), share(b), share(c));
    let mut sorted = f.leads.clone();
    sorted.sort_by(f64::total_cmp);
    f.median_lead_days = (!sorted.is_empty()).then(|| sorted[sorted.len() / 2]);
    (f, judged)
}

/// The figures of alerts `(customer, time)` against known churn times
/// (customers who churn never come back), over the window `from..to` in
/// which `customers` customers had events: as the backtest with `--truth`
/// computes them.
pub fn truth_figures(
    alerts: &[(String, Millis)],
    churned_at: &HashMap<String, Millis>,
    (from, to): (Millis, Millis),
    horizon: Millis,
    customers: usize,
) -> Figures {
    let churns = churned_at
        .iter()
        .map(|(id, t)| {
            (
                id.clone(),
                Churns {
                    onsets: vec![*t],
                    returns: vec![Millis::MAX],
                    cancels: Vec::new(),
                },
            )
        })
        .collect();
    let mut sorted = alerts.to_vec();
    sorted.sort_by(|a, b| a.1.cmp(&b.1).then_with(|| a.0.cmp(&b.0)));
    let w = Window {
        from,
        to,
        horizon,
        lookback: DEFAULT_LOOKBACK_DAYS * DAY_MS,
        lapse: 0,
        customers,
    };
    figures(&sorted, &churns, &w).0
}

/// How far before an onset an alert still counts as its warning, by default.
pub const DEFAULT_LOOKBACK_DAYS: i64 = 90;

/// The oracle's alerts at a threshold, with the policy's hysteresis (re-armed
/// below 0.8 × the threshold) and cooldown, on each day's rows.
fn oracle_alerts(
    daily: &BTreeMap<String, Vec<(Millis, f32)>>,
    threshold: f64,
    cooldown: Millis,
) -> Vec<(String, Millis)> {
    let mut out = Vec::new();
    for (id, days) in daily {
        let (mut active, mut last): (bool, Option<Millis>) = (false, None);
        for (t, p) in days {
            let p = f64::from(*p);
            if p < threshold * 0.8 {
                active = false;
            }
            if p >= threshold && !active && last.is_none_or(|l| t - l >= cooldown) {
                active = true;
                last = Some(*t);
                out.push((id.clone(), *t));
            }
        }
    }
    out.sort_by(|a, b| a.1.cmp(&b.1).then_with(|| a.0.cmp(&b.0)));
    out
}

/// Reads `oracle-daily.csv`: customer_id,date,p_churn_<h>d.
fn read_daily_oracle(path: &Path) -> anyhow::Result<BTreeMap<String, Vec<(Millis, f32)>>> {
    let reading = || format!("reading {}", path.display());
    let mut rows = csv_reader(path).with_context(|| format!("opening {}", path.display()))?;
    let header = rows.headers().with_context(reading)?;
    let is_daily = header.get(0) == Some("customer_id")
        && header.get(1) == Some("date")
        && header.get(2).is_some_and(|h| h.starts_with("p_churn_"));
    // An empty file is an oracle without rows.
    anyhow::ensure!(
        is_daily || header.is_empty(),
        "{}: not a daily oracle (simulate --oracle-daily)",
        path.display()
    );
    let mut out: BTreeMap<String, Vec<(Millis, f32)>> = BTreeMap::new();
    for row in rows.records() {
        let row = row.with_context(reading)?;
        let line = csv_line(&row);
        let (Some(id), Some(d), Some(p)) = (row.get(0), row.get(1), row.get(2)) else {
            anyhow::bail!("{} line {line}: three columns expected", path.display());
        };
        let p: f32 = p
            .parse()
            .with_context(|| format!("{} line {line}: bad probability", path.display()))?;
        out.entry(id.to_string())
            .or_default()
            .push((parse_time(d)?, p));
    }
    Ok(out)
}

/// `churn-alert backtest`.
pub fn run(opts: BacktestOptions, config: &Config) -> anyhow::Result<()> {
    let started = std::time::Instant::now();
    let spec = config.feature_spec();
    let model = opts.model.load(config)?;
    let population = model.file().population.clone();
    let horizon = match opts.horizon {
        Some(h) => h,
        None => population
            .as_ref()
            .map_or(30 * DAY_MS, |p| (p.horizon_days * DAY_MS as f64) as Millis),
    };
    let gap = match opts.churn_gap {
        Some(g) => g,
        None => population.as_ref().map_or(30 * DAY_MS, |p| {
            (p.churned_after_days * DAY_MS as f64) as Millis
        }),
    };
    anyhow::ensure!(
        (1..=1024).contains(&opts.partitions),
        "--partitions must be 1 to 1024"
    );
    let partitioner = config.kafka.partitioner;
    let metrics = crate::telemetry::metrics::Metrics::new();
    let processor = Processor::new(
        Rules {
            spec: spec.clone(),
            model: Arc::new(model.clone()),
            policy: config.policy_for(Some(model.file())),
        },
        config.validator(),
        metrics.clone(),
        ClockMode::Event,
        Outputs::new(
            &config.kafka.input_topic,
            config.kafka.dead_letter_max_bytes,
        ),
    );
    let mut view = StagedStore::new(Arc::new(crate::store::MemStore::default()), metrics);
    let mut offsets = vec![0i64; opts.partitions];
    let mut batch: Vec<InMessage> = Vec::with_capacity(BATCH);
    let mut alerts: Vec<Alert> = Vec::new();
    let mut tracks: HashMap<String, Track> = HashMap::new();
    let mut engaged: HashMap<String, Vec<Millis>> = HashMap::new();
    let mut seen: HashMap<String, (Millis, Millis)> = HashMap::new();
    let mut failed: Option<anyhow::Error> = None;
    // Scores follow event time; the wall clock only refuses events from the
    // future, as the live service does.
    let wall_now = crate::pipeline::event::wall_now();
    let mut flush = |batch: &mut Vec<InMessage>, alerts: &mut Vec<Alert>| -> anyhow::Result<()> {
        let b = processor.process(&mut view, batch, wall_now)?;
        for r in &b.records {
            if r.kind == OutKind::Alert && !r.payload.is_empty() {
                alerts.push(serde_json::from_slice(&r.payload).context("reading an alert")?);
            }
        }
        view.commit(&b.commits)?;
        batch.clear();
        Ok(())
    };
    let read = read_sorted(&opts.history, config, Millis::MAX, |e, line| {
        if failed.is_some() {
            return;
        }
        let p = partitioner.partition(e.customer_id.as_bytes(), opts.partitions);
        let off = &mut offsets[p as usize];
        batch.push(InMessage {
            partition: p,
            offset: *off,
            key: Some(e.customer_id.as_bytes().to_vec()),
            payload: Some(line.to_vec()),
            content_type: None,
            timestamp: None,
            headers: Vec::new(),
        });
        *off += 1;
        let span = seen
            .entry(e.customer_id.clone())
            .or_insert((e.occurred_at, e.occurred_at));
        span.1 = span.1.max(e.occurred_at);
        if e.kind.is_engagement() {
            engaged
                .entry(e.customer_id.clone())
                .or_default()
                .push(e.occurred_at);
        }
        tracks
            .entry(e.customer_id.clone())
            .or_default()
            .push(&e, gap);
        if batch.len() >= BATCH {
            if let Err(err) = flush(&mut batch, &mut alerts) {
                failed = Some(err);
            }
        }
    })?;
    if let Some(err) = failed {
        return Err(err);
    }
    flush(&mut batch, &mut alerts)?;
    let first = seen
        .values()
        .map(|s| s.0)
        .min()
        .context("the history has no valid events")?;
    let last = seen.values().map(|s| s.1).max().expect("non-empty");
    let truth = opts.truth.as_deref().map(read_truth).transpose()?;
    let from = match opts.from {
        Some(f) => f,
        None => first + 60 * DAY_MS,
    };
    let to = match opts.to {
        Some(t) => t,
        None if truth.is_some() => last + 1,
        None => last - gap + 1,
    };
    anyhow::ensure!(
        from < to,
        "the window {} .. {} is empty",
        rfc3339(from),
        rfc3339(to)
    );
    let lookback = opts.lookback;
    let lead_to = match (opts.lead_to, &truth) {
        (Some(l), _) => l,
        (None, Some(_)) => LeadTo::Onset,
        (None, None) if gap > horizon => LeadTo::Lapse,
        (None, None) => LeadTo::Onset,
    };
    if lead_to == LeadTo::Lapse && truth.is_some() {
        return Err(crate::offline::commands::Usage(
            "--lead-to lapse needs onsets read from the data (the truth file gives churn times, not silences)".into(),
        )
        .into());
    }
    // Churns: from the truth, or read from the data.
    let mut churns: HashMap<String, Churns> = HashMap::new();
    for id in seen.keys() {
        let onsets = match &truth {
            Some(t) => t.get(id).copied().flatten().into_iter().collect(),
            None => tracks[id].onsets(last, gap),
        };
        if onsets.is_empty() {
            continue;
        }
        let times = engaged.get(id).map(Vec::as_slice).unwrap_or(&[]);
        let points = match &truth {
            Some(_) => Vec::new(),
            None => tracks[id].candidates(last, gap),
        };
        let returns = onsets
            .iter()
            .enumerate()
            .map(|(i, o)| {
                if truth.is_some() {
                    return Millis::MAX;
                }
                // Back with the first engagement after the episode's last
                // point (a cancel and the silence that follows it are one
                // episode).
                let next = onsets.get(i + 1).copied().unwrap_or(Millis::MAX);
                let end = points
                    .iter()
                    .copied()
                    .filter(|p| p >= o && *p < next)
                    .max()
                    .unwrap_or(*o);
                let k = times.partition_point(|t| *t <= end);
                times.get(k).copied().unwrap_or(Millis::MAX)
            })
            .collect();
        let cancels = match &truth {
            Some(_) => Vec::new(),
            None => onsets
                .iter()
                .copied()
                .filter(|o| tracks[id].is_cancel(*o))
                .collect(),
        };
        churns.insert(
            id.clone(),
            Churns {
                onsets,
                returns,
                cancels,
            },
        );
    }
    let customers = seen.values().filter(|(a, b)| *a < to && *b >= from).count();
    let w = Window {
        from,
        to,
        horizon,
        lookback,
        lapse: if lead_to == LeadTo::Lapse { gap } else { 0 },
        customers,
    };
    alerts.sort_by(|a, b| {
        a.as_of_ms
            .cmp(&b.as_of_ms)
            .then_with(|| a.customer_id.cmp(&b.customer_id))
    });
    let keys: Vec<(String, Millis)> = alerts
        .iter()
        .map(|a| (a.customer_id.clone(), a.as_of_ms))
        .collect();
    let (model_figures, judged) = figures(&keys, &churns, &w);
    let chance = against_chance(&keys, &judged, &seen, &churns, &w, model_figures.precision);
    let oracle = match &opts.oracle {
        Some(p) => {
            let daily = read_daily_oracle(p)?;
            let cooldown = config.policy_for(Some(model.file())).cooldown_ms;
            // The threshold at which the oracle alerts as often in the
            // window as the model (the count is not monotone in the
            // threshold: hysteresis re-arms more often at higher ones), on a
            // grid of 0.005: the closest count not above the model's, else
            // the closest.
            let counts: Vec<(f64, usize)> = (1..200)
                .map(|k| {
                    let th = k as f64 / 200.0;
                    let n = oracle_alerts(&daily, th, cooldown)
                        .iter()
                        .filter(|(_, t)| (from..to).contains(t))
                        .count();
                    (th, n)
                })
                .collect();
            let target = model_figures.alerts;
            let hi = counts
                .iter()
                .filter(|(_, n)| *n <= target)
                .max_by_key(|(_, n)| *n)
                .or_else(|| counts.iter().min_by_key(|(_, n)| n.abs_diff(target)))
                .map_or(0.5, |(th, _)| *th);
            let oa = oracle_alerts(&daily, hi, cooldown);
            Some((hi, figures(&oa, &churns, &w).0, oa))
        }
        None => None,
    };
    std::fs::create_dir_all(&opts.out)
        .with_context(|| format!("creating {}", opts.out.display()))?;
    let csv_path = opts.out.join("alerts.csv");
    let mut alerts_csv = csv::Writer::from_path(&csv_path)
        .with_context(|| format!("creating {}", csv_path.display()))?;
    alerts_csv.write_record(ALERT_COLUMNS)?;
    let mut rows = Vec::with_capacity(alerts.len());
    for (a, (class, onset)) in alerts.iter().zip(&judged) {
        let j = Judged {
            alert_id: a.alert_id.clone(),
            customer_id: a.customer_id.clone(),
            at: a.as_of_ms,
            probability: a.probability,
            risk_tier: a.risk_tier.clone(),
            cause: a.cause,
            reason: a
                .reasons
                .first()
                .map(|r| r.feature.clone())
                .unwrap_or_default(),
            onset: *onset,
            class: *class,
        };
        alerts_csv.write_record(alert_row(
            &j,
            a.features.get("recency_days").copied().unwrap_or(f64::NAN),
            a.features
                .get("silence_surprise")
                .map_or(f64::NAN, |v| v.exp_m1()),
            j.onset
                .zip(churns.get(&j.customer_id))
                .map(|(o, c)| (c.due(o, &w) - j.at) as f64 / DAY_MS as f64),
            (from..to).contains(&j.at),
        ))?;
        rows.push(j);
    }
    alerts_csv.flush()?;
    let report = write_report(
        &opts.out,
        &ReportInput {
            model: model.version(),
            history: &opts.history.describe(),
            sha256: &read.sha256,
            events: read.used,
            window: &w,
            gap,
            partitions: opts.partitions,
            truth: opts.truth.is_some(),
            figures: &model_figures,
            chance: &chance,
            rows: &rows,
            churns: &churns,
            oracle: oracle.as_ref().map(|(th, f, a)| (*th, f, a.as_slice())),
        },
    )?;
    let f = &model_figures;
    println!(
        "backtest of {} over {} .. {} ({} customers, onsets {}, leads to the {point}):\n  alerts {} ({:.1} per 1,000 customers per month); precision {:.3}; after the {point} {:.3}\n  against chance: random alerts of the same volume {:.3} precise, lift {:.2}; on customers in their first {NEW_CUSTOMER_DAYS} days {} alerts, precision {:.3} (the rest {} alerts, {:.3})\n  churners {}: alerted {}; at least {bands} ahead {:.3} / {:.3} / {:.3}; median lead {}\n{}  wrote {} and {} ({:.0} s)",
        model.version(),
        &rfc3339(from)[..10],
        &rfc3339(to)[..10],
        w.customers,
        if opts.truth.is_some() { "from the truth file" } else { "read from the data" },
        f.alerts,
        f.alerts_per_1000_per_month,
        f.precision,
        f.too_late,
        chance.random_precision,
        chance.lift,
        chance.new_alerts,
        chance.new_precision,
        chance.other_alerts,
        chance.other_precision,
        f.churners,
        f.churners_alerted,
        f.ahead_7,
        f.ahead_14,
        f.ahead_30,
        w.describe_lead(f.median_lead_days),
        oracle
            .as_ref()
            .map(|(th, o, _)| format!(
                "  oracle at the same number of alerts (threshold {th:.3}): alerts {}; precision {:.3}; after the onset {:.3}; ahead {} {:.3} / {:.3} / {:.3}; median lead {}\n",
                o.alerts,
                o.precision,
                o.too_late,
                w.bands_label(),
                o.ahead_7,
                o.ahead_14,
                o.ahead_30,
                o.median_lead_days.map_or("none".into(), |d| format!("{d:.1} days"))
            ))
            .unwrap_or_default(),
        csv_path.display(),
        report.display(),
        started.elapsed().as_secs_f64(),
        point = w.point(),
        bands = w.bands_label(),
    );
    Ok(())
}

/// The columns of alerts.csv.
const ALERT_COLUMNS: [&str; 13] = [
    "alert_id",
    "customer_id",
    "as_of",
    "probability",
    "risk_tier",
    "cause",
    "silent_days",
    "missed_active_days",
    "top_reason",
    "onset",
    "lead_days",
    "class",
    "in_window",
];

/// One alert's row of alerts.csv: the judged alert, the customer's silence
/// then (days, and usual active days missed; NaN without those features),
/// the lead to the onset in days, and whether it falls in the window.
fn alert_row(
    j: &Judged,
    silent_days: f64,
    missed_active_days: f64,
    lead_days: Option<f64>,
    in_window: bool,
) -> [String; 13] {
    [
        j.alert_id.clone(),
        j.customer_id.clone(),
        rfc3339(j.at),
        j.probability.to_string(),
        j.risk_tier.clone(),
        j.cause.to_string(),
        format!("{silent_days:.2}"),
        format!("{missed_active_days:.2}"),
        j.reason.clone(),
        j.onset.map(rfc3339).unwrap_or_default(),
        lead_days.map(|d| format!("{d:.2}")).unwrap_or_default(),
        j.class.as_str().to_string(),
        in_window.to_string(),
    ]
}

/// An alert as (customer, time).
type Keyed = (String, Millis);

/// Messages per processed batch (outputs do not depend on it).
const BATCH: usize = 2000;

struct ReportInput<'a> {
    chance: &'a AgainstChance,
    model: &'a str,
    history: &'a str,
    sha256: &'a str,
    events: u64,
    window: &'a Window,
    gap: Millis,
    partitions: usize,
    truth: bool,
    figures: &'a Figures,
    rows: &'a [Judged],
    churns: &'a HashMap<String, Churns>,
    /// The oracle's threshold, figures and alerts.
    oracle: Option<(f64, &'a Figures, &'a [Keyed])>,
}

/// Lead-time histogram: share of churners per week of lead, from 4 weeks
/// after the point leads are measured to, to 13 weeks (and the lapse)
/// before, as step points.
fn lead_histogram(f: &Figures, w: &Window) -> Vec<(f64, f64)> {
    let mut pts = Vec::new();
    for k in -4..13 + (w.lapse + 7 * DAY_MS - 1) / (7 * DAY_MS) {
        let (lo, hi) = (k as f64 * 7.0, (k + 1) as f64 * 7.0);
        let n = f.leads.iter().filter(|l| **l >= lo && **l < hi).count();
        let share = n as f64 / f.churners.max(1) as f64;
        pts.push((lo, share));
        pts.push((hi, share));
    }
    pts
}

/// Share of the window's alerts followed by the point leads are measured
/// to at least `d` days later (and by onset at most the horizon later), for
/// d = 0..horizon (+ the lapse).
fn precision_by_lead(
    alerts: &[(String, Millis)],
    churns: &HashMap<String, Churns>,
    w: &Window,
) -> Vec<(f64, f64)> {
    let in_window: Vec<&(String, Millis)> = alerts
        .iter()
        .filter(|(_, t)| (w.from..w.to).contains(t))
        .collect();
    let h_days = (w.horizon + w.lapse) / DAY_MS;
    (0..=h_days)
        .map(|d| {
            let ok = in_window
                .iter()
                .filter(|(id, t)| {
                    churns.get(id).is_some_and(|c| {
                        c.onsets.iter().zip(&c.returns).any(|(o, back)| {
                            c.due(*o, w) >= t + d * DAY_MS
                                && *o <= t + w.horizon
                                && (*o >= *t || *back > *t)
                        })
                    })
                })
                .count();
            (d as f64, ok as f64 / in_window.len().max(1) as f64)
        })
        .collect()
}

/// Alerts per week of the window.
fn per_week(alerts: &[(String, Millis)], w: &Window) -> Vec<(f64, f64)> {
    let weeks = ((w.to - w.from) / (7 * DAY_MS)).max(1);
    let mut counts = vec![0usize; weeks as usize + 1];
    for (_, t) in alerts.iter().filter(|(_, t)| (w.from..w.to).contains(t)) {
        counts[((t - w.from) / (7 * DAY_MS)) as usize] += 1;
    }
    counts
        .iter()
        .enumerate()
        .map(|(i, c)| (i as f64, *c as f64))
        .collect()
}

fn write_report(dir: &Path, r: &ReportInput) -> anyhow::Result<PathBuf> {
    let w = r.window;
    let model_alerts: Vec<(String, Millis)> = r
        .rows
        .iter()
        .map(|j| (j.customer_id.clone(), j.at))
        .collect();
    let mut hist = vec![Series {
        name: format!("model ({} churners)", r.figures.churners),
        color: "#1f5fbf",
        points: lead_histogram(r.figures, w),
        dashed: false,
        markers: false,
    }];
    let mut prec = vec![Series {
        name: "model".into(),
        color: "#1f5fbf",
        points: precision_by_lead(&model_alerts, r.churns, w),
        dashed: false,
        markers: false,
    }];
    let mut weekly = vec![Series {
        name: "model".into(),
        color: "#1f5fbf",
        points: per_week(&model_alerts, w),
        dashed: false,
        markers: false,
    }];
    if let Some((_, of, oa)) = r.oracle {
        hist.push(Series {
            name: "oracle, as many alerts".into(),
            color: "#d9822b",
            points: lead_histogram(of, w),
            dashed: true,
            markers: false,
        });
        prec.push(Series {
            name: "oracle".into(),
            color: "#d9822b",
            points: precision_by_lead(oa, r.churns, w),
            dashed: true,
            markers: false,
        });
        weekly.push(Series {
            name: "oracle".into(),
            color: "#d9822b",
            points: per_week(oa, w),
            dashed: true,
            markers: false,
        });
    }
    let top = |s: &[Series]| {
        s.iter()
            .flat_map(|s| s.points.iter().map(|p| p.1))
            .fold(0.0f64, f64::max)
    };
    let nice = |v: f64| if v <= 0.0 { 1.0 } else { v * 1.15 };
    let weeks = ((w.to - w.from) / (7 * DAY_MS)) as f64 + 1.0;
    let plots = [
        (
            "backtest-lead-times.svg",
            chart_range(
                "Lead time of churners' first alert",
                &format!("days before {} (negative: after)", w.point()),
                "share of churners",
                (-28.0, 91.0 + (w.lapse / DAY_MS) as f64),
                nice(top(&hist)),
                true,
                &hist,
            ),
        ),
        (
            "backtest-precision.svg",
            chart_range(
                "Precision against lead time",
                &format!(
                    "alert followed by the {} at least this many days later (and by onset within the horizon)",
                    w.point()
                ),
                "share of alerts",
                (0.0, ((w.horizon + w.lapse) / DAY_MS) as f64),
                nice(top(&prec)),
                true,
                &prec,
            ),
        ),
        (
            "backtest-alerts-per-week.svg",
            chart_range(
                "Alerts per week",
                &format!("week since {}", &rfc3339(w.from)[..10]),
                "alerts",
                (0.0, weeks),
                nice(top(&weekly)),
                true,
                &weekly,
            ),
        ),
    ];
    for (name, svg) in &plots {
        std::fs::write(dir.join(name), svg)?;
    }
    let mut md = String::new();
    let _ = writeln!(md, "# Backtest: {}\n", r.model);
    let _ = writeln!(
        md,
        "History `{}` ({} events, SHA-256 of the sorted events `{}`), replayed through the service's own processing with the event-time clock over {} partition(s). Window judged: {} to {} ({:.1} months, {} customers with events in it). Onsets: {}. Horizon {} days; an alert counts as the warning of an onset up to {} days before it. {}\n",
        r.history,
        r.events,
        r.sha256,
        r.partitions,
        &rfc3339(w.from)[..10],
        &rfc3339(w.to)[..10],
        w.months(),
        w.customers,
        if r.truth {
            "the churn times of the truth file".to_string()
        } else {
            format!(
                "read from the data (the last engagement before a silence of {} days, or a cancel)",
                r.gap / DAY_MS
            )
        },
        w.horizon / DAY_MS,
        w.lookback / DAY_MS,
        if w.lapse > 0 {
            format!("Lead times are measured to the *lapse*: the day the silence reaches the churn gap ({} days after the onset), when the customer is lost by the history's own measure (a cancel is the churn itself: its lead runs to the cancel). The gap is longer than the horizon, so `train --label auto` fits \"no engagement within the horizon\", which only turns at the onset itself: no alert can precede an onset except by chance, and the time a retention team has is from the onset to the lapse (`--lead-to onset` measures to the onset instead, as suits a model trained with `--label onset`). The shares alerted ahead are counted at three quarters, half and a quarter of the gap before the lapse: churners alerted within the first quarter, half or three quarters of their silence.", w.lapse / DAY_MS)
        } else {
            "Lead times are measured to the onset.".to_string()
        }
    );
    let _ = writeln!(
        md,
        "| | alerts | per 1,000 customers per month | precision ({}) | after the {} | churners | alerted | ≥ {} days ahead | ≥ {} days ahead | ≥ {} days ahead | median lead (days) |\n|---|---|---|---|---|---|---|---|---|---|---|",
        if w.lapse > 0 {
            "onset within the horizon, or silent since an onset and before the lapse"
        } else {
            "onset within the horizon"
        },
        w.point(),
        w.bands()[0],
        w.bands()[1],
        w.bands()[2]
    );
    let row = |name: &str, f: &Figures| {
        format!(
            "| {name} | {} | {:.1} | {:.3} | {:.3} | {} | {} | {:.3} | {:.3} | {:.3} | {} |",
            f.alerts,
            f.alerts_per_1000_per_month,
            f.precision,
            f.too_late,
            f.churners,
            f.churners_alerted,
            f.ahead_7,
            f.ahead_14,
            f.ahead_30,
            f.median_lead_days.map_or("–".into(), |d| if w.lapse > 0 {
                format!("{d:.1} ({})", w.against_onset(d))
            } else {
                format!("{d:.1}")
            })
        )
    };
    let _ = writeln!(md, "{}", row("**model**", r.figures));
    if let Some((th, of, _)) = r.oracle {
        let _ = writeln!(md, "{}", row(&format!("oracle (p ≥ {th:.3})"), of));
    }
    let c = r.chance;
    let _ = writeln!(
        md,
        "\n**Against chance.** {} random alerts (a random customer there during the window, at a random time in it) are {:.3} precise: that is the base rate. The model's alerts are {:.3} precise, a lift of **{:.2}**.\n\n| alerts on | alerts | precision |\n|---|---|---|\n| customers in their first {NEW_CUSTOMER_DAYS} days | {} | {:.3} |\n| the other customers | {} | {:.3} |\n| random, same window | {} | {:.3} |",
        c.random_alerts,
        c.random_precision,
        r.figures.precision,
        c.lift,
        c.new_alerts,
        c.new_precision,
        c.other_alerts,
        c.other_precision,
        c.random_alerts,
        c.random_precision
    );
    if r.oracle.is_some() {
        let _ = writeln!(
            md,
            "\nThe oracle is the simulator's true probability of churning within the horizon, from each customer's hidden state, recorded daily; it alerts when that probability crosses the threshold that gives as many alerts in the window as the model sent (re-armed below 0.8 × the threshold, with the policy's cooldown)."
        );
    }
    let _ = writeln!(
        md,
        "\nHow to read it: *precision* is the share of the window's alerts after which the customer's churn onset followed within the horizon{}; *after the {point}* the share sent when the customer had already {} (too late to keep them); a churner's *lead* is the time from their first alert (within the look-back) to their {point}. `alerts.csv` lists every alert with its onset, lead and class (`early`, `late`, `no_churn`).\n",
        if w.lapse > 0 {
            " (or who had been silent since an onset, not yet for the gap)"
        } else {
            ""
        },
        if w.lapse > 0 {
            "been silent for the churn gap"
        } else {
            "begun the silence they did not come back from"
        },
        point = w.point()
    );
    for (name, _) in &plots {
        let _ = writeln!(md, "![{name}]({name})\n");
    }
    let p = dir.join("backtest.md");
    std::fs::write(&p, md)?;
    Ok(p)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn alerts_are_judged_against_onsets() {
        let d = DAY_MS;
        let w = Window {
            from: 0,
            to: 1000 * d,
            horizon: 30 * d,
            lookback: 90 * d,
            lapse: 0,
            customers: 1000,
        };
        let churns = HashMap::from([(
            "a".to_string(),
            Churns {
                onsets: vec![100 * d, 300 * d],
                returns: vec![200 * d, Millis::MAX],
                cancels: Vec::new(),
            },
        )]);
        let c = churns.get("a");
        assert_eq!(judge_one(c, 80 * d, &w), (Class::Early, Some(100 * d)));
        assert_eq!(judge_one(c, 60 * d, &w), (Class::NoChurn, None));
        assert_eq!(judge_one(c, 150 * d, &w), (Class::Late, Some(100 * d)));
        assert_eq!(judge_one(c, 250 * d, &w), (Class::NoChurn, None));
        assert_eq!(judge_one(c, 400 * d, &w), (Class::Late, Some(300 * d)));
        assert_eq!(judge_one(None, 400 * d, &w).0, Class::NoChurn);
        let alerts = vec![
            ("a".to_string(), 60 * d),
            ("a".to_string(), 80 * d),
            ("b".to_string(), 90 * d),
            ("a".to_string(), 305 * d),
        ];
        let (f, _) = figures(&alerts, &churns, &w);
        assert_eq!((f.alerts, f.churners, f.churners_alerted), (4, 2, 2));
        // The first alert within 90 days before day 100 is day 60: 40 days.
        assert_eq!(f.leads, vec![40.0, -5.0]);
        assert_eq!((f.ahead_30, f.precision, f.too_late), (0.5, 0.25, 0.25));
        assert!((f.alerts_per_1000_per_month - 4.0 / (1000.0 / 30.4375)).abs() < 1e-9);
    }

    #[test]
    fn with_a_gap_longer_than_the_horizon_leads_run_to_the_lapse() {
        // A shop whose churn gap is 160 days and horizon 90: the customer
        // last bought on day 100 and never came back, so they lapse on day
        // 260. An alert on day 150 came in the silence, 110 days before the
        // lapse: in time. One on day 300 came after the lapse.
        let d = DAY_MS;
        let w = Window {
            from: 0,
            to: 1000 * d,
            horizon: 90 * d,
            lookback: 90 * d,
            lapse: 160 * d,
            customers: 1000,
        };
        let churns = HashMap::from([(
            "a".to_string(),
            Churns {
                onsets: vec![100 * d],
                returns: vec![Millis::MAX],
                cancels: Vec::new(),
            },
        )]);
        let c = churns.get("a");
        assert_eq!(judge_one(c, 150 * d, &w), (Class::Early, Some(100 * d)));
        assert_eq!(judge_one(c, 50 * d, &w), (Class::Early, Some(100 * d)));
        assert_eq!(judge_one(c, 300 * d, &w), (Class::Late, Some(100 * d)));
        assert_eq!(judge_one(c, 5 * d, &w), (Class::NoChurn, None));
        let alerts = vec![("a".to_string(), 150 * d), ("a".to_string(), 300 * d)];
        let (f, _) = figures(&alerts, &churns, &w);
        assert_eq!(f.leads, vec![110.0]);
        assert_eq!((f.precision, f.too_late), (0.5, 0.5));
        // Alerted within the first half of the 160-day silence, not its
        // first quarter.
        assert_eq!(w.bands(), [120.0, 80.0, 40.0]);
        assert_eq!((f.ahead_7, f.ahead_14, f.ahead_30), (0.0, 1.0, 1.0));
        // A cancel is the churn itself: its lead runs to the cancel, and
        // an alert after it is late, gap or not.
        let cancelled = Churns {
            onsets: vec![100 * d],
            returns: vec![Millis::MAX],
            cancels: vec![100 * d],
        };
        assert_eq!(judge_one(Some(&cancelled), 101 * d, &w).0, Class::Late);
        assert_eq!(judge_one(Some(&cancelled), 95 * d, &w).0, Class::Early);
        let churns = HashMap::from([("a".to_string(), cancelled)]);
        let (f, _) = figures(&[("a".to_string(), 95 * d)], &churns, &w);
        assert_eq!(f.leads, vec![5.0]);
    }

    #[test]
    fn oracle_alerts_follow_hysteresis_and_cooldown() {
        let d = DAY_MS;
        let daily = BTreeMap::from([(
            "a".to_string(),
            vec![
                (0, 0.1f32),
                (d, 0.6),
                (2 * d, 0.7),
                (3 * d, 0.3),
                (4 * d, 0.6),
                (40 * d, 0.2),
                (41 * d, 0.9),
            ],
        )]);
        let got = oracle_alerts(&daily, 0.5, 14 * d);
        // Day 1 alerts; day 4 is re-armed but within the cooldown; day 41 alerts.
        assert_eq!(got, vec![("a".to_string(), d), ("a".to_string(), 41 * d)]);
    }

    use crate::offline::simulate::csv_fixtures::{with_awkward_id, AWKWARD_ID};

    #[test]
    fn daily_oracle_round_trips_awkward_ids() {
        let sim = with_awkward_id();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("oracle-daily.csv");
        let mut w = csv::Writer::from_path(&path).unwrap();
        w.write_record(sim.daily_oracle_header()).unwrap();
        let mut written = 0;
        for day in 0..2 {
            for row in sim.daily_oracle_rows(day) {
                w.write_record(row).unwrap();
                written += 1;
            }
        }
        w.flush().unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.starts_with("customer_id,date,p_churn_30d\n"), "{text}");
        let daily = read_daily_oracle(&path).unwrap();
        assert_eq!(daily.values().map(Vec::len).sum::<usize>(), written);
        let times: Vec<Millis> = daily[AWKWARD_ID].iter().map(|(t, _)| *t).collect();
        assert_eq!(times, vec![sim.day_start(0), sim.day_start(1)]);
    }

    #[test]
    fn alert_rows_quote_awkward_ids_only() {
        let d = DAY_MS;
        let j = Judged {
            alert_id: "a".into(),
            customer_id: AWKWARD_ID.into(),
            at: 0,
            probability: 0.75,
            risk_tier: "hi".into(),
            cause: crate::pipeline::output::Cause::Silence,
            reason: "r".into(),
            onset: Some(20 * d),
            class: Class::Early,
        };
        let plain = Judged {
            customer_id: "c-1".into(),
            onset: None,
            class: Class::NoChurn,
            ..j.clone()
        };
        let mut w = csv::Writer::from_writer(Vec::new());
        w.write_record(ALERT_COLUMNS).unwrap();
        w.write_record(alert_row(&j, 12.5, f64::NAN, Some(20.0), true))
            .unwrap();
        w.write_record(alert_row(&plain, 1.0, 0.25, None, false))
            .unwrap();
        let text = String::from_utf8(w.into_inner().unwrap()).unwrap();
        // Ordinary fields are written as they always were, unquoted.
        let epoch = "1970-01-01T00:00:00.000Z";
        let plain_row = format!("a,c-1,{epoch},0.75,hi,silence,1.00,0.25,r,,,no_churn,false");
        assert!(text.ends_with(&format!("\n{plain_row}\n")), "{text}");
        let mut r = csv::Reader::from_reader(text.as_bytes());
        let header: Vec<String> = r.headers().unwrap().iter().map(String::from).collect();
        assert_eq!(header, ALERT_COLUMNS);
        let rows = r
            .records()
            .collect::<Result<Vec<csv::StringRecord>, _>>()
            .unwrap();
        assert_eq!(rows.len(), 2);
        let first: Vec<&str> = rows[0].iter().collect();
        assert_eq!(
            first,
            [
                "a",
                AWKWARD_ID,
                "1970-01-01T00:00:00.000Z",
                "0.75",
                "hi",
                "silence",
                "12.50",
                "NaN",
                "r",
                "1970-01-21T00:00:00.000Z",
                "20.00",
                "early",
                "true",
            ]
        );
    }
}

//! `churn-alert demo`: the whole pipeline on librdkafka's in-process mock
//! cluster, with nothing to install.
//!
//! 1. simulates a seeded population (some customers fade, complain, cancel);
//! 2. fits a model with linfa-logistic on the first part of that history;
//! 3. produces every event (plus a few malformed ones) to the mock cluster;
//! 4. runs the real service against it (event-time clock, sled state in a
//!    temporary directory) and prints alerts as they are published;
//! 5. prints a summary checked against the simulation's ground truth.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use prost::Message as _;

use crate::kafka::mock::{MockKafka, TopicReader, Upstream};
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::offline::simulate::{SimConfig, Simulator, VariantEffect};
use crate::offline::train::{build_examples, fit, TrainConfig};
use crate::pipeline::event::{rfc3339, DAY_MS};
use crate::pipeline::experiment::{Experiment, Variant};
use crate::pipeline::model::Model;
use crate::pipeline::output::Trigger;
use crate::pipeline::readout::ExperimentReadout;
use crate::pipeline::step::Alert;
use crate::service::Service;
use crate::telemetry::metrics::{Count, Metrics};

/// Demo settings (the `demo` command's flags).
#[derive(Debug, Clone, clap::Args)]
pub struct DemoOptions {
    /// Simulated customers.
    #[arg(long, default_value_t = 1000)]
    pub customers: usize,
    /// Simulated days of history.
    #[arg(long, default_value_t = 180)]
    pub days: u32,
    /// Simulation seed.
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// Partitions of the demo topics.
    #[arg(long, default_value_t = 4)]
    pub partitions: i32,
    /// Address of /metrics while the demo runs.
    #[arg(long, default_value = "127.0.0.1:9898")]
    pub admin: String,
    /// Print every alert (else the first 25 and then a count).
    #[arg(long)]
    pub all_alerts: bool,
    /// Keep serving /metrics after the summary until Ctrl-C.
    #[arg(long)]
    pub keep_running: bool,
}

/// What the demo measured (also printed).
#[derive(Debug, Clone)]
pub struct DemoSummary {
    pub events_produced: usize,
    /// Valid events applied by the service.
    pub consumed: u64,
    pub bad_produced: usize,
    pub alerts: usize,
    pub triggers: u64,
    pub dlq: u64,
    pub duplicates: u64,
    /// Churners of the last third (the part the model never saw).
    pub churners: usize,
    /// Of them, alerted at least 14 days before they churned.
    pub churners_alerted_ahead_14d: usize,
    pub alerted_never_churned: usize,
    /// The readout of the demo's experiment.
    pub experiment: Vec<ExperimentReadout>,
    /// The variant with the higher retention in the readout.
    pub leader: Option<String>,
    /// The variant the simulation made better (saves more, pushes fewer away).
    pub better_variant: String,
    pub seconds: f64,
}

/// The demo's experiment: a discount against a plain reminder.
pub fn demo_experiment() -> Experiment {
    let variant = |name: &str, offer: Option<&str>| Variant {
        name: name.into(),
        weight: 1.0,
        channel: None,
        offer: offer.map(Into::into),
        template_id: Some(format!("winback-{name}-v1")),
    };
    Experiment {
        name: "winback-offer".into(),
        start: None,
        variants: vec![
            variant("discount", Some("15% off the next order")),
            variant("reminder", None),
        ],
    }
}

/// The simulation's truth about the demo's variants: the discount wins
/// back 70% of the slipping customers it reaches, the reminder one in ten
/// and pushes more away.
pub fn demo_effects() -> Vec<VariantEffect> {
    ["discount=0.7:0.01", "reminder=0.1:0.05"]
        .iter()
        .map(|e| e.parse().expect("valid effects"))
        .collect()
}

/// Shortest simulated history the demo can train on.
pub const MIN_DAYS: u32 = 150;

/// Malformed messages mixed into the demo stream, one per reason.
fn bad_messages(t: &str) -> Vec<(&'static str, Vec<u8>)> {
    vec![
        ("c-bad-1", b"{\"event_id\": \"broken".to_vec()),
        ("c-bad-2", format!(r#"{{"event_id":"b2","customer_id":"c-bad-2","type":"teleport","occurred_at":"{t}"}}"#).into_bytes()),
        ("c-bad-3", format!(r#"{{"event_id":"b3","customer_id":"c-bad-3","type":"purchase","amount":-5,"occurred_at":"{t}"}}"#).into_bytes()),
        ("c-bad-4", format!(r#"{{"event_id":"b4","customer_id":"c-bad-4","type":"survey","nps":11,"occurred_at":"{t}"}}"#).into_bytes()),
        ("c-bad-5", format!(r#"{{"event_id":"b5","customer_id":"c-bad-5","type":"purchase","amount":5,"currency":"XYZ","occurred_at":"{t}"}}"#).into_bytes()),
        ("c-bad-6", br#"{"event_id":"b6","customer_id":"c-bad-6","type":"session","occurred_at":"2999-01-01T00:00:00Z"}"#.to_vec()),
        ("c-bad-7", format!(r#"{{"event_id":"","customer_id":"c-bad-7","type":"session","occurred_at":"{t}"}}"#).into_bytes()),
    ]
}

/// Runs the demo; returns its summary.
pub async fn run(opts: DemoOptions, shutdown: CancellationToken) -> anyhow::Result<DemoSummary> {
    let started = Instant::now();
    if opts.days < MIN_DAYS {
        return Err(crate::offline::flags::Usage(format!(
            "--days {} is too short: the demo trains on the first two thirds of the history (30 days of warm-up, three weekly snapshots, then the churn gap and the label horizon, each a sixth of the history up to 30 days) and needs at least {MIN_DAYS} days",
            opts.days
        ))
        .into());
    }
    println!(
        "churn-alert demo: {} customers over {} days (seed {})",
        opts.customers, opts.days, opts.seed
    );

    // 1. Simulate the part of the history the model is fitted on; the
    // rest is simulated day by day while the service runs, so that its
    // triggers reach the simulated customers (the closed loop).
    let mut sim_cfg = SimConfig::new(opts.customers, opts.days, opts.seed);
    sim_cfg.duplicate_rate = 0.01;
    sim_cfg.late_rate = 0.01;
    sim_cfg.effects = demo_effects();
    let end = sim_cfg.end;
    let days = i64::from(opts.days);
    let live_from = i64::from(opts.days) - days / 3;
    let mut sim = Simulator::new(sim_cfg);
    let mut events = Vec::new();
    while sim.current_day() < live_from {
        events.extend(sim.next_day());
    }
    println!(
        "  simulated {} events of the first {live_from} days; the last {} are simulated live, and the service's triggers reach the customers",
        events.len(),
        days - live_from
    );
    // 2. Fit the model on the first part of the history; the last third is
    // never seen in training.
    let mut config = Config::default();
    let spec = config.feature_spec();
    let validator = config.validator();
    let history: Vec<_> = events
        .iter()
        .filter_map(|e| {
            validator
                .decode(Some(e.customer_id.as_bytes()), e.json.as_bytes(), None, end)
                .ok()
        })
        .collect();
    let horizon = (days / 6).min(30) * DAY_MS;
    let mut tc = TrainConfig::new(end - days / 3 * DAY_MS, horizon, &spec);
    // Short histories: a shorter churn gap leaves room for observation dates.
    tc.churn_gap_ms = horizon;
    tc.snapshot_step_ms = 7 * DAY_MS;
    tc.version = format!("demo-{}", &rfc3339(tc.as_of)[..10]);
    let examples = build_examples(history, &spec, &tc)?;
    let trained = fit(&examples, &spec, &tc)?;
    let th = trained
        .model
        .thresholds
        .clone()
        .expect("fit sets thresholds");
    println!(
        "  fitted {} with linfa-logistic on {} snapshots up to {}: held-out ROC AUC {:.3}, Brier {:.3}; alerts at p >= {:.2} (re-armed below {:.2})",
        trained.model.version,
        trained.train.examples + trained.validation.examples + trained.test.examples,
        &rfc3339(tc.as_of)[..10],
        trained.test.roc_auc,
        trained.test.brier,
        th.enter,
        th.exit
    );
    let model = Model::new(trained.model, &spec)
        .map_err(|(f, m)| anyhow::anyhow!("model field {f}: {m}"))?;

    // 3. The mock cluster and the input stream.
    let cluster = MockKafka::start(&config.kafka.topics(), opts.partitions)?;
    let brokers = cluster.bootstrap();
    // 4. Run the real service.
    let state_dir = tempfile::tempdir()?;
    config.kafka.brokers = brokers.clone();
    config.kafka.group_id = "churn-alert-demo".into();
    config.clock.mode = crate::config::ClockMode::Event;
    config.store.path = state_dir.path().join("state");
    config.admin.listen = opts.admin.clone();
    // A two-variant experiment on every campaign that contacts customers,
    // from the first live day (before it, the simulated customers never
    // see the triggers), read at 14 days.
    config.policy.holdout.share = 0.2;
    config.policy.outcome_window_days = 14.0;
    let mut experiment = demo_experiment();
    experiment.start = Some(rfc3339(end - days / 3 * DAY_MS));
    config.policy.run_experiment(&experiment);
    let service = Service::with_model(config.clone(), model)?;
    let metrics = service.metrics.clone();
    let store = service.store.clone();
    let stop_service = CancellationToken::new();
    let admin_addr: SocketAddr = service.serve_admin(stop_service.clone()).await?;
    println!("  service running; metrics at http://{admin_addr}/metrics\n");
    let svc = tokio::spawn(service.run(stop_service.clone()));
    let seen: Seen = Arc::default();
    let printer = tokio::spawn(print_alerts(
        brokers.clone(),
        config.kafka.alerts_topic.clone(),
        opts.all_alerts,
        seen.clone(),
        stop_service.clone(),
    ));

    // 5. Stream the events day by day. The mock broker keeps only the last
    // 5 MB of each partition, so production waits while the service is more
    // than a few thousand messages behind (as a live source would be paced).
    let producer = Upstream::new(&brokers, config.kafka.partitioner)?;
    let topic = config.kafka.input_topic.clone();
    let mut high = vec![0i64; opts.partitions as usize];
    // The next offset the service's committed state holds for a partition.
    let committed = |p: i32| store.meta(p).ok().flatten().map_or(0, |m| m.next_offset);
    let mid_at = end - 30 * DAY_MS;
    let bad = bad_messages(&rfc3339(mid_at));
    let mut bad_sent = false;
    let triggers: Triggers = Arc::default();
    let trigger_reader = tokio::spawn(read_triggers(
        brokers.clone(),
        config.kafka.triggers_topic.clone(),
        triggers.clone(),
        stop_service.clone(),
    ));
    // Variant → what the contacts did (the simulation's truth).
    let mut contacts: BTreeMap<String, BTreeMap<&'static str, usize>> = BTreeMap::new();
    let mut triggers_taken = 0;
    let history_len = events.len();
    let live_start = rfc3339(end - days / 3 * DAY_MS);
    let mut day_start = 0;
    loop {
        // The next day: from the simulated history, then simulated live.
        let live = day_start >= history_len;
        let day_end = if !live {
            let day = events[day_start].at.div_euclid(DAY_MS);
            day_start
                + events[day_start..history_len]
                    .partition_point(|e| e.at.div_euclid(DAY_MS) <= day)
                    .max(1)
        } else if !sim.done() {
            let today = sim.next_day();
            events.extend(today);
            events.len()
        } else {
            break;
        };
        let mut msgs: Vec<(&str, &[u8])> = events[day_start..day_end]
            .iter()
            .map(|e| (e.customer_id.as_str(), e.json.as_bytes()))
            .collect();
        if !bad_sent && events[day_start..day_end].iter().any(|e| e.at >= mid_at) {
            msgs.extend(bad.iter().map(|(k, p)| (*k, p.as_slice())));
            bad_sent = true;
        }
        for (p, offset) in producer.send(&topic, &msgs, None).await? {
            high[p as usize] = high[p as usize].max(offset + 1);
        }
        day_start = day_end;
        // Live days wait for the service to take the whole day in, then
        // hand its triggers to the simulated customers before the next
        // day is simulated.
        let behind = if live { 0 } else { 5_000 };
        while !shutdown.is_cancelled()
            && (0..opts.partitions).any(|p| committed(p) + behind < high[p as usize])
        {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        if live {
            let published = metrics.count(Count::Triggers, &[]) as usize;
            let deadline = Instant::now() + Duration::from_secs(10);
            let read = || triggers.lock().unwrap_or_else(|e| e.into_inner()).len();
            while read() < published && Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            let new: Vec<Trigger> =
                triggers.lock().unwrap_or_else(|e| e.into_inner())[triggers_taken..].to_vec();
            triggers_taken += new.len();
            // Triggers of the replayed history never reached anyone.
            for t in new.iter().filter(|t| t.as_of >= live_start) {
                if let Some(r) = sim.contact(&t.customer_id, t.variant.as_deref()) {
                    *contacts
                        .entry(t.variant.clone().unwrap_or_else(|| "(none)".into()))
                        .or_default()
                        .entry(r.as_str())
                        .or_default() += 1;
                }
            }
        }
    }
    let churners: HashMap<String, i64> = sim
        .customers
        .iter()
        .filter_map(|c| c.churn_day.map(|d| (c.id.clone(), sim.day_start(d))))
        .collect();
    // One valid event as protobuf, to show both encodings are accepted.
    let pb = crate::pipeline::proto::CustomerEvent {
        event_id: "pb-1".into(),
        customer_id: "c-protobuf".into(),
        r#type: "session".into(),
        occurred: Some(
            crate::pipeline::proto::customer_event::Occurred::OccurredAt(rfc3339(end - DAY_MS)),
        ),
        ..Default::default()
    };
    let bytes = pb.encode_to_vec();
    let sent = producer
        .send(
            &topic,
            &[("c-protobuf", bytes.as_slice())],
            Some("application/x-protobuf"),
        )
        .await?;
    for (p, offset) in sent {
        high[p as usize] = high[p as usize].max(offset + 1);
    }
    let produced = events.len() + bad.len() + 1;

    // Wait until every produced message is in the committed state.
    loop {
        let done = (0..opts.partitions).all(|p| committed(p) >= high[p as usize]);
        if done || shutdown.is_cancelled() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    println!(
        "\n  produced {produced} messages to {topic} ({} malformed on purpose, 1 protobuf)",
        bad.len()
    );
    let published = metrics.count(Count::Alerts, &[]) as usize;
    // Let the printer catch up with everything published.
    let deadline = Instant::now() + Duration::from_secs(10);
    let printed = || seen.lock().unwrap_or_else(|e| e.into_inner()).len();
    while printed() < published && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let alerts = seen.lock().unwrap_or_else(|e| e.into_inner()).clone();

    // 5. Summary against the ground truth: how early the alerts came, for
    // the churners of the part of the history the model never saw.
    let alerted: HashSet<&str> = alerts.iter().map(|a| a.customer_id.as_str()).collect();
    let unseen = (end - days / 3 * DAY_MS, end);
    let active_then = events
        .iter()
        .filter(|e| (unseen.0..unseen.1).contains(&e.at))
        .map(|e| e.customer_id.as_str())
        .collect::<HashSet<_>>()
        .len();
    let leads = crate::offline::backtest::truth_figures(
        &alerts
            .iter()
            .map(|a| (a.customer_id.clone(), a.as_of_ms))
            .collect::<Vec<_>>(),
        &churners,
        unseen,
        tc.horizon_ms,
        active_then,
    );
    let false_alarms = alerted
        .iter()
        .filter(|id| !churners.contains_key(**id))
        .count();
    // The experiment readout, as the service keeps it from the outcomes
    // topic (what GET /experiments serves).
    let outcomes_published = metrics.count(Count::Outcomes, &[]);
    let deadline = Instant::now() + Duration::from_secs(15);
    while metrics.experiments.records() < outcomes_published && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (experiment, _) = metrics.experiments.readout();
    let leader = experiment
        .iter()
        .flat_map(|e| e.arms.iter())
        .filter(|a| a.arm != crate::pipeline::experiment::HOLDOUT_ARM && a.customers > 0)
        .max_by(|a, b| a.retained_rate.total_cmp(&b.retained_rate))
        .map(|a| a.arm.clone());
    let better_variant = demo_effects()
        .into_iter()
        .max_by(|a, b| (a.saves - a.pushes_away).total_cmp(&(b.saves - b.pushes_away)))
        .map(|e| e.variant)
        .unwrap_or_default();
    let summary = DemoSummary {
        events_produced: produced,
        consumed: metrics.count(Count::EventsConsumed, &[]),
        bad_produced: bad.len(),
        alerts: published,
        triggers: metrics.count(Count::Triggers, &[]),
        dlq: metrics.count(Count::DeadLettered, &[]),
        duplicates: metrics.count(Count::Duplicates, &[]),
        churners: leads.churners,
        churners_alerted_ahead_14d: (leads.ahead_14 * leads.churners as f64).round() as usize,
        alerted_never_churned: false_alarms,
        experiment,
        leader,
        better_variant,
        seconds: started.elapsed().as_secs_f64(),
    };
    println!("\n== summary ==");
    println!("  events consumed      {}", summary.consumed);
    println!("  duplicates dropped   {}", summary.duplicates);
    println!(
        "  dead-lettered        {} (by reason: {})",
        summary.dlq,
        reasons(&metrics)
    );
    println!(
        "  silent re-scores     {}",
        metrics.count(Count::SilentRescores, &[])
    );
    println!(
        "  alerts published     {} ({} customers)",
        summary.alerts,
        alerted.len()
    );
    println!(
        "  triggers published   {} (no trigger: {})",
        summary.triggers,
        [
            "unsubscribed",
            "no_consent",
            "no_contact_rule",
            "contact_cooldown",
            "contact_cap",
            "holdout"
        ]
        .iter()
        .map(|r| format!(
            "{r}={}",
            metrics.count(Count::TriggersSuppressed, &[("reason", r)])
        ))
        .collect::<Vec<_>>()
        .join(", ")
    );
    let outcome = |group: &str, outcome: &str| -> u64 {
        let labels: Vec<(&str, &str)> = [("group", group), ("outcome", outcome)]
            .into_iter()
            .filter(|(_, v)| !v.is_empty())
            .collect();
        metrics.count(Count::Outcomes, &labels)
    };
    println!(
        "  outcomes published   {} (retained: treated {} of {}, holdout {} of {})",
        outcome("", ""),
        outcome("treated", "retained"),
        outcome("treated", ""),
        outcome("holdout", "retained"),
        outcome("holdout", ""),
    );
    println!(
        "  alerts with consent  {} of {}",
        alerts.iter().filter(|a| a.marketing_consent).count(),
        alerts.len()
    );
    println!(
        "  early warning        last {} days (not seen in training): {} churners; first alert at least 7 / 14 / 30 days before churning: {:.0}% / {:.0}% / {:.0}%; median lead {}",
        days / 3,
        leads.churners,
        leads.ahead_7 * 100.0,
        leads.ahead_14 * 100.0,
        leads.ahead_30 * 100.0,
        leads.median_lead_days.map_or("none".into(), |d| format!("{d:.0} days"))
    );
    println!(
        "  alerts then          {} ({:.0} per 1,000 customers per month): {:.0}% followed by churn within {} days, {:.0}% after the customer had churned",
        leads.alerts,
        leads.alerts_per_1000_per_month,
        leads.precision * 100.0,
        tc.horizon_ms / DAY_MS,
        leads.too_late * 100.0
    );
    println!(
        "  alerted, not churned {} (by the end of the simulation)",
        summary.alerted_never_churned
    );
    let states: Vec<_> = (0..opts.partitions)
        .filter_map(|p| store.customers(p).ok())
        .flatten()
        .collect();
    println!(
        "  customers in state   {} ({} with marketing consent)",
        states.len(),
        states
            .iter()
            .filter(|(_, s)| s.has_marketing_consent())
            .count()
    );
    println!("\n== experiment (the readout of GET /experiments and `churn-alert experiments`) ==");
    for line in crate::offline::experiments::table(&summary.experiment, &config.experiments).lines()
    {
        println!("  {line}");
    }
    println!("  the simulation's truth (hidden from the service):");
    for e in demo_effects() {
        let c = contacts.get(&e.variant).cloned().unwrap_or_default();
        println!(
            "    {:<9} wins back {:.0}% of the slipping customers it reaches (more among occasional buyers), pushes {:.0}% away; its {} contacts: {} persuadable, {} sure things, {} lost causes, {} sleeping dogs",
            e.variant,
            e.saves * 100.0,
            e.pushes_away * 100.0,
            c.values().sum::<usize>(),
            c.get("persuadable").unwrap_or(&0),
            c.get("sure_thing").unwrap_or(&0),
            c.get("lost_cause").unwrap_or(&0),
            c.get("sleeping_dog").unwrap_or(&0),
        );
    }
    println!(
        "  leader by retention: {} (the better variant by the simulation: {})",
        summary.leader.as_deref().unwrap_or("none yet"),
        summary.better_variant
    );
    println!("  took                 {:.1} s", summary.seconds);

    if opts.keep_running {
        println!("\n  still serving http://{admin_addr}/metrics; Ctrl-C to stop");
        shutdown.cancelled().await;
    }
    stop_service.cancel();
    svc.await??;
    printer.abort();
    trigger_reader.abort();
    drop(producer);
    drop(cluster);
    Ok(summary)
}

fn reasons(m: &Metrics) -> String {
    crate::pipeline::decode::RejectCode::ALL
        .iter()
        .filter_map(|c| {
            let n = m.count(Count::DeadLettered, &[("reason", c.as_str())]);
            (n > 0).then(|| format!("{}={n}", c.as_str()))
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// Triggers read back from the triggers topic.
type Triggers = Arc<Mutex<Vec<Trigger>>>;

/// Reads the triggers topic from the start and keeps every trigger.
async fn read_triggers(
    brokers: String,
    topic: String,
    seen: Triggers,
    stop: CancellationToken,
) -> anyhow::Result<()> {
    let reader = TopicReader::from_start(&brokers, &topic, "churn-alert-demo-triggers")?;
    loop {
        let payload = tokio::select! {
            _ = stop.cancelled() => return Ok(()),
            m = reader.next() => m?,
        };
        if let Some(Ok(t)) = payload.map(|p| serde_json::from_slice::<Trigger>(&p)) {
            seen.lock().unwrap_or_else(|e| e.into_inner()).push(t);
        }
    }
}

/// Alerts read back from the alerts topic by the printer.
type Seen = Arc<Mutex<Vec<Alert>>>;

/// Reads the alerts topic from the start, prints each alert and keeps it.
async fn print_alerts(
    brokers: String,
    topic: String,
    all: bool,
    seen: Seen,
    stop: CancellationToken,
) -> anyhow::Result<()> {
    let reader = TopicReader::from_start(&brokers, &topic, "churn-alert-demo-printer")?;
    loop {
        let payload = tokio::select! {
            _ = stop.cancelled() => return Ok(()),
            m = reader.next() => m?,
        };
        let Some(Ok(a)) = payload.map(|p| serde_json::from_slice::<Alert>(&p)) else {
            continue;
        };
        let n = seen.lock().unwrap_or_else(|e| e.into_inner()).len() + 1;
        if all || n <= 25 {
            let why: Vec<String> = a
                .reasons
                .iter()
                .map(|r| format!("{} ({}={:.2})", r.feature, r.top_feature, r.value))
                .collect();
            println!(
                "  ALERT {} {:<10} p={:.2} {:<8} as_of={} cause={:<7} reasons: {}",
                &a.alert_id[..8],
                a.customer_id,
                a.probability,
                a.risk_tier,
                &a.as_of[..10],
                a.cause,
                why.join(", ")
            );
        } else if n == 26 {
            println!("  ... (further alerts counted in the summary; --all-alerts prints them)");
        }
        seen.lock().unwrap_or_else(|e| e.into_inner()).push(a);
    }
}

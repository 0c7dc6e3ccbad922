//! `churn-alert demo`: the whole pipeline on librdkafka's in-process mock
//! cluster, with nothing to install.
//!
//! 1. simulates a seeded population (some customers fade, complain, cancel);
//! 2. fits a model with linfa-logistic on the first part of that history;
//! 3. produces every event (plus a few malformed ones) to the mock cluster;
//! 4. runs the real service against it (event-time clock, sled state in a
//!    temporary directory) and prints alerts as they are published;
//! 5. prints a summary checked against the simulation's ground truth.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use prost::Message as _;

use crate::kafka::mock::{MockKafka, TopicReader, Upstream};
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::offline::simulate::{SimConfig, Simulator};
use crate::offline::train::{build_examples, fit, TrainConfig};
use crate::pipeline::event::{rfc3339, DAY_MS};
use crate::pipeline::model::Model;
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
    pub seconds: f64,
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
    anyhow::ensure!(
        opts.days >= MIN_DAYS,
        "--days {} is too short: the demo trains on the first two thirds of the history (30 days of warm-up, three weekly snapshots, then the churn gap and the label horizon, each a sixth of the history up to 30 days) and needs at least {MIN_DAYS} days",
        opts.days
    );
    println!(
        "churn-alert demo: {} customers over {} days (seed {})",
        opts.customers, opts.days, opts.seed
    );

    // 1. Simulate.
    let mut sim_cfg = SimConfig::new(opts.customers, opts.days, opts.seed);
    sim_cfg.duplicate_rate = 0.01;
    sim_cfg.late_rate = 0.01;
    let end = sim_cfg.end;
    let mut sim = Simulator::new(sim_cfg);
    let mut events = Vec::new();
    while !sim.done() {
        events.extend(sim.next_day());
    }
    let churners: HashMap<String, i64> = sim
        .customers
        .iter()
        .filter_map(|c| c.churn_day.map(|d| (c.id.clone(), sim.day_start(d))))
        .collect();
    println!(
        "  simulated {} events; {} customers churned (ground truth)",
        events.len(),
        churners.len()
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
    let days = i64::from(opts.days);
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
    let mid = rfc3339(end - 30 * DAY_MS);
    let bad = bad_messages(&mid);
    let mid_day = events.partition_point(|e| e.at < end - 30 * DAY_MS);
    let mut day_start = 0;
    while day_start < events.len() {
        let day = events[day_start].at.div_euclid(DAY_MS);
        let day_end = day_start
            + events[day_start..]
                .partition_point(|e| e.at.div_euclid(DAY_MS) <= day)
                .max(1);
        let mut msgs: Vec<(&str, &[u8])> = events[day_start..day_end]
            .iter()
            .map(|e| (e.customer_id.as_str(), e.json.as_bytes()))
            .collect();
        if day_start <= mid_day && mid_day < day_end {
            msgs.extend(bad.iter().map(|(k, p)| (*k, p.as_slice())));
        }
        for (p, offset) in producer.send(&topic, &msgs, None).await? {
            high[p as usize] = high[p as usize].max(offset + 1);
        }
        day_start = day_end;
        while !shutdown.is_cancelled()
            && (0..opts.partitions).any(|p| committed(p) + 5_000 < high[p as usize])
        {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
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
        "  outcomes published   {} (retained: treated {} of {}, holdout {} of {}; no campaign effect is simulated)",
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
    println!("  took                 {:.1} s", summary.seconds);

    if opts.keep_running {
        println!("\n  still serving http://{admin_addr}/metrics; Ctrl-C to stop");
        shutdown.cancelled().await;
    }
    stop_service.cancel();
    svc.await??;
    printer.abort();
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

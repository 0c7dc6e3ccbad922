//! Throughput figures (events per second) on this machine:
//!   (a) the pure step with in-memory state,
//!   (b) the batch processor with sled state (decode, step, one write per
//!       customer per batch, offsets in the same batch),
//!   (c) end to end through a real tansu broker, state committed, beside
//!       a plain rdkafka consumer reading the same topic in the same run
//!       (the ceiling the broker sets) and as a ratio of it,
//!   (c') a Quix Streams peer doing the same job on the same topic
//!       (benches/quix_peer.py, in a venv the script makes),
//!   (c'') event-to-commit latency, p50/p99, of a live stream sent at half
//!       of the end-to-end rate (c) measured,
//!   (d) restoring partitions' state from the changelog on a real tansu
//!       broker into an empty sled store (customers per second), one
//!       partition and four at once, beside a plain consumer reading the
//!       same partitions,
//! and the bytes of sled state per customer for 1M customers.
//!
//! `cargo bench --bench throughput` prints the figures (tansu must be
//! installed: `scripts/tansu.sh install`). `BENCH_ROWS=d,size` (any of
//! `a`, `b`, `size`, `c`, `d`, `latency`) prints only those rows; `latency`
//! (not in the default set) measures event to commit for several
//! `kafka.batch_linger_ms` (`BENCH_LATENCY_LINGERS`, 50,20,5,0 if unset) at
//! `BENCH_LATENCY_RATE` events/s (31,000 if unset), for a live stream and
//! a replay (`BENCH_LATENCY_STREAMS=live` or `replay` for one; see
//! [`Stream`]), over the whole simulation or its first
//! `BENCH_LATENCY_SECONDS`, with sled state (`BENCH_LATENCY_ENGINE=fjall`
//! for fjall's). Under `cargo test`
//! it runs a small smoke pass that checks the same paths work.

#[path = "../tests/common/mod.rs"]
mod common;

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use churn_alert::config::{Config, StoreEngine};
use churn_alert::offline::simulate::{SimConfig, SimEvent, Simulator};
use churn_alert::pipeline::event::{Event, DAY_MS};
use churn_alert::pipeline::features::CustomerState;
use churn_alert::pipeline::model::Model;
use churn_alert::pipeline::step;
use churn_alert::service::processor::{
    ClockMode, InMessage, Outputs, Processor, Rules, StagedStore,
};
use churn_alert::store::{Commit, PartitionMeta, Store};
use churn_alert::telemetry::metrics::Count;
use churn_alert::telemetry::metrics::Metrics;
use rdkafka::config::ClientConfig;
use rdkafka::producer::FutureProducer;

fn simulate(customers: usize, days: u32) -> (Vec<SimEvent>, i64) {
    let mut cfg = SimConfig::new(customers, days, 5);
    cfg.end = 1_790_000_000_000 - 1_790_000_000_000 % DAY_MS;
    let end = cfg.end;
    let mut sim = Simulator::new(cfg);
    let mut out = Vec::new();
    while !sim.done() {
        out.extend(sim.next_day());
    }
    (out, end)
}

fn per_sec(n: usize, d: Duration) -> f64 {
    n as f64 / d.as_secs_f64()
}

fn model(cfg: &Config) -> Model {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    Model::load(&root.join("models/churn-model.json"), &cfg.feature_spec()).unwrap()
}

fn messages(events: &[SimEvent], partitions: i32) -> Vec<InMessage> {
    events
        .iter()
        .enumerate()
        .map(|(i, e)| InMessage {
            partition: (churn_alert::pipeline::event::stable_hash(&[e.customer_id.as_bytes()])
                % partitions as u64) as i32,
            offset: i as i64,
            key: Some(e.customer_id.clone().into_bytes()),
            payload: Some(e.json.clone().into_bytes()),
            content_type: None,
            timestamp: None,
            headers: Vec::new(),
        })
        .collect()
}

fn bench_step(events: &[Event], cfg: &Config, model: &Model, rounds: usize) -> f64 {
    let spec = cfg.feature_spec();
    let policy = cfg.policy();
    let start = Instant::now();
    let mut alerts = 0usize;
    for _ in 0..rounds {
        let mut states: HashMap<&str, CustomerState> = HashMap::new();
        for e in events {
            let s = states.remove(e.customer_id.as_str());
            let (s, out) = step::step(s, e, e.occurred_at, model, &policy, &spec);
            alerts += usize::from(out.alert.is_some());
            if let Some(s) = s {
                states.insert(e.customer_id.as_str(), s);
            }
        }
    }
    std::hint::black_box(alerts);
    per_sec(events.len() * rounds, start.elapsed())
}

/// A fresh store of the engine in `dir`.
fn open_engine(engine: StoreEngine, dir: &std::path::Path) -> Arc<dyn Store> {
    let mut cfg = Config::default();
    cfg.store.engine = engine;
    cfg.store.path = dir.to_path_buf();
    churn_alert::service::open_store(&cfg).unwrap()
}

const ENGINES: [StoreEngine; 2] = [StoreEngine::Sled, StoreEngine::Fjall];

fn bench_store(
    engine: StoreEngine,
    msgs: &[InMessage],
    cfg: &Config,
    model: &Model,
    batch: usize,
    clock: ClockMode,
    flush_on_commit: bool,
) -> (f64, u64, usize) {
    let dir = tempfile::tempdir().unwrap();
    let store = open_engine(engine, dir.path());
    let p = Processor::new(
        Rules {
            spec: cfg.feature_spec(),
            model: Arc::new(model.clone()),
            policy: cfg.policy(),
        },
        cfg.validator(),
        Metrics::new(),
        clock,
        Outputs::new("customer-events", cfg.kafka.dead_letter_max_bytes),
    );
    let mut view = StagedStore::new(store.clone(), p.metrics.clone());
    let now = churn_alert::pipeline::event::wall_now();
    let start = Instant::now();
    let mut writes = 0;
    for chunk in msgs.chunks(batch) {
        let b = p.process(&mut view, chunk, now).unwrap();
        writes += b.commits.values().map(|c| c.states.len()).sum::<usize>();
        view.commit(&b.commits).unwrap();
        if flush_on_commit {
            store.flush().unwrap();
        }
    }
    store.flush().unwrap();
    (
        per_sec(msgs.len(), start.elapsed()),
        p.metrics.count(Count::SilentRescores, &[]),
        writes,
    )
}

/// Writes `n` customers (copies of real simulated states) and measures the
/// engine's size on disk once it is closed.
fn bytes_per_customer(engine: StoreEngine, sample: &[CustomerState], n: usize) -> (f64, f64) {
    let dir = tempfile::tempdir().unwrap();
    let store = open_engine(engine, dir.path());
    let encoded: usize = sample
        .iter()
        .map(|s| churn_alert::store::encode_state(s).len())
        .sum();
    let mut i = 0;
    while i < n {
        let mut c = Commit::default();
        for j in i..(i + 1000).min(n) {
            let s = sample[j % sample.len()].clone();
            c.due_add
                .push((s.next_due.unwrap_or(0), format!("c-{j:08}")));
            c.states.push((format!("c-{j:08}"), Some(s)));
        }
        i += 1000;
        c.meta = PartitionMeta {
            next_offset: i as i64,
            watermark: 0,
            customers: i as u64,
            changelog_next: 0,
        };
        store.commit((i / 1000 % 8) as i32, &c).unwrap();
    }
    store.flush().unwrap();
    drop(store);
    let disk: u64 = walk(dir.path());
    (disk as f64 / n as f64, encoded as f64 / sample.len() as f64)
}

fn walk(p: &std::path::Path) -> u64 {
    std::fs::read_dir(p)
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            let m = e.metadata().unwrap();
            if m.is_dir() {
                walk(&e.path())
            } else {
                m.len()
            }
        })
        .sum()
}

/// A plain consumer (no group, no processing) reading `topic` from the
/// start to `high` on every partition: events per second.
fn raw_consume(bootstrap: &str, topic: &str, high: &BTreeMap<i32, i64>) -> f64 {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", "raw-bench")
        .set("enable.auto.commit", "false")
        .set("enable.partition.eof", "false")
        .create()
        .unwrap();
    let mut tpl = rdkafka::TopicPartitionList::new();
    for p in high.keys() {
        tpl.add_partition_offset(topic, *p, rdkafka::Offset::Beginning)
            .unwrap();
    }
    consumer.assign(&tpl).unwrap();
    let total: i64 = high.values().sum();
    let mut seen = 0i64;
    let start = Instant::now();
    while seen < total {
        assert!(
            start.elapsed() < Duration::from_secs(600),
            "the raw consumer read {seen} of {total}"
        );
        if let Some(Ok(_)) = consumer.poll(Duration::from_millis(100)) {
            seen += 1;
        }
    }
    per_sec(total as usize, start.elapsed())
}

/// Creates `topic` with 4 partitions and `retention.ms` set.
async fn create_with_retention(broker: &common::Broker, topic: &str) {
    use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
    let admin: AdminClient<rdkafka::client::DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", broker.bootstrap())
        .create()
        .unwrap();
    let t = NewTopic::new(topic, 4, TopicReplication::Fixed(1)).set("retention.ms", "-1");
    for r in admin
        .create_topics([&t], &AdminOptions::new())
        .await
        .unwrap()
    {
        r.map_err(|(_, e)| e).unwrap();
    }
}

/// The Quix Streams peer on the same topic: its result line.
fn quix_peer(bootstrap: &str, topic: &str, total: usize) -> String {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let out = std::process::Command::new(root.join("benches/quix_peer.sh"))
        .args(["--bootstrap", bootstrap, "--topic", topic])
        .args(["--total", &total.to_string()])
        .stderr(std::process::Stdio::inherit())
        .output()
        .expect("run benches/quix_peer.sh");
    assert!(
        out.status.success(),
        "the Quix peer failed: {:?}",
        out.status
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// A field `name=value` of the peer's result line.
fn field(line: &str, name: &str) -> f64 {
    line.split_whitespace()
        .find_map(|kv| kv.strip_prefix(name)?.strip_prefix('='))
        .and_then(|v| v.parse().ok())
        .unwrap_or(f64::NAN)
}

/// How the latency rows send the simulated events.
#[derive(Clone, Copy, PartialEq)]
enum Stream {
    /// A live stream: each event happens when it is sent (its
    /// `occurred_at` is its send time), and the service runs on the wall
    /// clock, as `churn-alert run` does by default. A simulated customer
    /// becomes a new one each simulated week (`c17-w<week>`, the week
    /// counted from 1970, so a customer's first week may be a short one):
    /// sent in seconds, 5,000 customers would each send
    /// several events a second, every one inside the 7-day de-duplication
    /// window, which no real stream does; 130k customers sending a week of
    /// events each are closer to one.
    Live,
    /// A replay: the simulated 180 days sent in seconds, and the service
    /// on the event-time clock (the config of (c)), so every batch also
    /// re-scores the customers who went silent in the hours it spans.
    Replay,
}

impl Stream {
    fn name(self) -> &'static str {
        match self {
            Stream::Live => "live",
            Stream::Replay => "replay",
        }
    }
}

/// Event-to-commit latency of a stream: `events` sent at `rate` a second
/// into a fresh topic that a service reads from its start. For each event,
/// the time from the producer's `send` call to the first moment the
/// store's committed offset of its partition passes it (polled every
/// millisecond). Returns (p50, p99, max) in ms for the service, and the
/// same for a plain consumer of the stream.
#[allow(clippy::too_many_arguments)]
async fn bench_latency(
    broker: &common::Broker,
    events: &[SimEvent],
    cfg_base: &Config,
    model: &Model,
    rate: f64,
    fetch_wait_ms: Option<u32>,
    linger_ms: u64,
    stream: Stream,
) -> (Quantiles, Quantiles) {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = common::test_config(broker, dir.path());
    cfg.features = cfg_base.features.clone();
    cfg.store.engine = cfg_base.store.engine;
    if stream == Stream::Live {
        cfg.clock = Config::default().clock;
    }
    // A live event happens when it is sent: its `occurred_at` is written
    // in at the send.
    const SENT_AT: &str = "@sent-at@";
    let payloads: Vec<(String, String)> = events
        .iter()
        .map(|e| match stream {
            Stream::Replay => (e.customer_id.clone(), e.json.clone()),
            Stream::Live => {
                let mut v: serde_json::Value = serde_json::from_str(&e.json).unwrap();
                let id = format!("{}-w{}", e.customer_id, e.at.div_euclid(7 * DAY_MS));
                v["occurred_at"] = SENT_AT.into();
                v["customer_id"] = id.clone().into();
                (id, v.to_string())
            }
        })
        .collect();
    cfg.kafka.batch_linger_ms = linger_ms;
    let run = format!(
        "latency-{}-{}-{linger_ms}",
        stream.name(),
        fetch_wait_ms.unwrap_or(0)
    );
    common::own_topics(&mut cfg, &run);
    cfg.kafka.input_topic = format!("{run}-in");
    if let Some(ms) = fetch_wait_ms {
        cfg.kafka
            .consumer_properties
            .insert("fetch.wait.max.ms".into(), ms.to_string());
    }
    broker.create_topics_with(&cfg, 4).await;
    let service = churn_alert::service::Service::with_model(cfg.clone(), model.clone()).unwrap();
    let (store, health) = (service.store.clone(), service.health.clone());
    let stop = tokio_util::sync::CancellationToken::new();
    let task = tokio::spawn(service.run(stop.clone()));
    // The stream starts once the service is ready (its group joined, its
    // partitions assigned): the figure is the steady state, not the join.
    let deadline = Instant::now() + Duration::from_secs(120);
    while health.check().is_err() {
        assert!(Instant::now() < deadline, "the service never became ready");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Committed offsets, sampled.
    let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let sampler = {
        let (store, done) = (store.clone(), done.clone());
        std::thread::spawn(move || {
            let mut samples: Vec<(Instant, [i64; 4])> = Vec::new();
            loop {
                // Read after `done` is seen, so the last commit is sampled.
                let last = done.load(std::sync::atomic::Ordering::Relaxed);
                let mut next = [0i64; 4];
                for (p, n) in next.iter_mut().enumerate() {
                    *n = store.meta(p as i32).unwrap().map_or(0, |m| m.next_offset);
                }
                if samples.last().is_none_or(|(_, last)| *last != next) {
                    samples.push((Instant::now(), next));
                }
                if last {
                    break samples;
                }
                std::thread::sleep(Duration::from_millis(1));
            }
        })
    };
    // The broker's own floor: a plain consumer (no group, no processing)
    // reading the same stream as it is sent, with the same fetch wait.
    let plain = {
        let (bootstrap, topic, n) = (
            broker.bootstrap(),
            cfg.kafka.input_topic.clone(),
            events.len(),
        );
        let (ready_tx, ready) = std::sync::mpsc::channel();
        let plain = std::thread::spawn(move || {
            plain_arrivals(&bootstrap, &topic, fetch_wait_ms, n, ready_tx)
        });
        // Like the service, the plain consumer is connected before the
        // stream starts: its first fetch is not counted as latency.
        ready
            .recv_timeout(Duration::from_secs(60))
            .expect("the plain consumer never connected");
        plain
    };
    // An upstream producer with librdkafka's default linger (tansu takes
    // records one batch at a time, so a producer without linger sends
    // fewer than its intake).
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", broker.bootstrap())
        .set("linger.ms", "5")
        .create()
        .unwrap();
    let start = Instant::now();
    let mut sent = Vec::with_capacity(events.len());
    for (i, (customer, payload)) in payloads.iter().enumerate() {
        let due = start + Duration::from_secs_f64(i as f64 / rate);
        let now = Instant::now();
        if due > now {
            tokio::time::sleep(due - now).await;
        }
        let at = Instant::now();
        let live;
        let payload = match stream {
            Stream::Replay => payload,
            Stream::Live => {
                let now = churn_alert::pipeline::event::wall_now();
                live = payload.replace(SENT_AT, &churn_alert::pipeline::event::rfc3339(now));
                &live
            }
        };
        let f = producer.send_result(
            rdkafka::producer::FutureRecord::to(&cfg.kafka.input_topic)
                .key(customer)
                .payload(payload),
        );
        sent.push((at, f.map_err(|(e, _)| e).unwrap()));
    }
    let mut offsets = Vec::with_capacity(sent.len());
    for (at, f) in sent {
        let d = f.await.unwrap().map_err(|(e, _)| e).unwrap();
        offsets.push((at, d.partition as usize, d.offset));
    }
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let all = offsets
            .iter()
            .all(|(_, p, o)| store.meta(*p as i32).unwrap().map_or(0, |m| m.next_offset) > *o);
        if all {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the service did not commit the stream"
        );
        if task.is_finished() {
            panic!("the service stopped: {:?}", task.await);
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    done.store(true, std::sync::atomic::Ordering::Relaxed);
    let samples = sampler.join().unwrap();
    stop.cancel();
    task.await.unwrap().unwrap();
    let committed = quantiles(offsets.iter().map(|(at, p, o)| {
        let i = samples.partition_point(|(_, next)| next[*p] <= *o);
        let committed = samples.get(i).map_or(Instant::now(), |(t, _)| *t);
        committed.saturating_duration_since(*at)
    }));
    let arrived = plain.join().unwrap();
    let floor = quantiles(offsets.iter().map(|(at, p, o)| {
        let got = arrived
            .get(&(*p as i32, *o))
            .copied()
            .unwrap_or_else(Instant::now);
        got.saturating_duration_since(*at)
    }));
    (committed, floor)
}

/// p50, p99 and max, in milliseconds.
type Quantiles = (f64, f64, f64);

fn quantiles(d: impl Iterator<Item = Duration>) -> Quantiles {
    let mut ms: Vec<f64> = d.map(|d| d.as_secs_f64() * 1000.0).collect();
    ms.sort_by(f64::total_cmp);
    let q = |f: f64| ms[((ms.len() - 1) as f64 * f).round() as usize];
    (q(0.5), q(0.99), q(1.0))
}

/// When a plain consumer of `topic` (partitions 0-3, from the start) got
/// each of the first `n` records, by partition and offset.
fn plain_arrivals(
    bootstrap: &str,
    topic: &str,
    fetch_wait_ms: Option<u32>,
    n: usize,
    ready: std::sync::mpsc::Sender<()>,
) -> HashMap<(i32, i64), Instant> {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    use rdkafka::Message;
    let mut config = ClientConfig::new();
    config
        .set("bootstrap.servers", bootstrap)
        .set("group.id", "latency-floor")
        .set("enable.auto.commit", "false");
    if let Some(ms) = fetch_wait_ms {
        config.set("fetch.wait.max.ms", ms.to_string());
    }
    let consumer: BaseConsumer = config.create().unwrap();
    let mut tpl = rdkafka::TopicPartitionList::new();
    for p in 0..4 {
        tpl.add_partition_offset(topic, p, rdkafka::Offset::Offset(0))
            .unwrap();
    }
    consumer.assign(&tpl).unwrap();
    // Connected (a watermark request answered), the partitions assigned
    // and polled once: its first fetches are under way, as far as a
    // client can tell without data.
    consumer
        .fetch_watermarks(topic, 0, Duration::from_secs(30))
        .unwrap();
    let _ = consumer.poll(Duration::from_millis(200));
    ready.send(()).unwrap();
    let mut got = HashMap::with_capacity(n);
    let deadline = Instant::now() + Duration::from_secs(300);
    while got.len() < n && Instant::now() < deadline {
        if let Some(Ok(m)) = consumer.poll(Duration::from_millis(100)) {
            got.insert((m.partition(), m.offset()), Instant::now());
        }
    }
    got
}

/// End to end through tansu: (all events / wall time, events / time after
/// the first commit, the raw consumer's rate on the same topic, the Quix
/// peer's result line).
async fn bench_broker(
    events: &[SimEvent],
    cfg_base: &Config,
    model: &Model,
) -> (f64, f64, f64, String) {
    let broker = common::Broker::tansu();
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = common::test_config(&broker, dir.path());
    cfg.features = cfg_base.features.clone();
    // The peer (c') reads the input topic's `retention.ms`, which tansu
    // describes only when the topic was created with it.
    create_with_retention(&broker, &cfg.kafka.input_topic).await;
    broker.create_topics_with(&cfg, 4).await;
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", broker.bootstrap())
        .set("linger.ms", "20")
        .set("batch.num.messages", "10000")
        .create()
        .unwrap();
    let mut high = BTreeMap::new();
    for chunk in events.chunks(20_000) {
        common::produce_events(&producer, &cfg.kafka.input_topic, chunk, &mut high).await;
    }
    let (bootstrap, topic, h) = (
        broker.bootstrap(),
        cfg.kafka.input_topic.clone(),
        high.clone(),
    );
    let raw = tokio::task::spawn_blocking(move || raw_consume(&bootstrap, &topic, &h))
        .await
        .unwrap();
    let service = churn_alert::service::Service::with_model(cfg.clone(), model.clone()).unwrap();
    let store = service.store.clone();
    let stop = tokio_util::sync::CancellationToken::new();
    let start = Instant::now();
    let task = tokio::spawn(service.run(stop.clone()));
    let mut first: Option<(Instant, i64)> = None;
    loop {
        let done: i64 = high
            .keys()
            .map(|p| store.meta(*p).unwrap().map(|m| m.next_offset).unwrap_or(0))
            .sum();
        if first.is_none() && done > 0 {
            first = Some((Instant::now(), done));
        }
        if high
            .iter()
            .all(|(p, h)| store.meta(*p).unwrap().map(|m| m.next_offset).unwrap_or(0) >= *h)
        {
            break;
        }
        if task.is_finished() {
            panic!("the service stopped: {:?}", task.await);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let end = Instant::now();
    stop.cancel();
    task.await.unwrap().unwrap();
    let (t1, n1) = first.unwrap();
    let total = events.len();
    let (bootstrap, topic) = (broker.bootstrap(), cfg.kafka.input_topic.clone());
    let peer = tokio::task::spawn_blocking(move || quix_peer(&bootstrap, &topic, total))
        .await
        .unwrap();
    (
        per_sec(total, end - start),
        per_sec(total - n1 as usize, end - t1),
        raw,
        peer,
    )
}

/// Writes `n` customers' states to each of `partitions` changelog
/// partitions as the service does (batches of 2,000 states, each closed by
/// a meta record), then times full restores of every partition at once
/// into an empty sled store, as the service runs them after a rebalance.
/// Returns (seconds, records, a plain consumer's records per second on the
/// same partitions).
async fn bench_restore(
    broker: &common::Broker,
    sample: &[CustomerState],
    n: usize,
    partitions: i32,
    engines: &[StoreEngine],
) -> (Vec<(f64, u64)>, f64) {
    let mut cfg = Config::default();
    cfg.kafka.brokers = broker.bootstrap();
    cfg.kafka.changelog_topic = format!("restore-bench-{n}-{partitions}");
    broker
        .create_with(&[&cfg.kafka.changelog_topic], partitions)
        .await;
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", broker.bootstrap())
        .set("linger.ms", "20")
        .set("enable.idempotence", "true")
        .create()
        .unwrap();
    for (p, i) in (0..partitions).flat_map(|p| (0..n).step_by(2000).map(move |i| (p, i))) {
        let mut c = Commit::default();
        for j in i..(i + 2000).min(n) {
            c.states.push((
                format!("c-{p}-{j:08}"),
                Some(sample[j % sample.len()].clone()),
            ));
        }
        let i = i + c.states.len();
        c.meta = PartitionMeta {
            next_offset: i as i64,
            watermark: 0,
            customers: i as u64,
            changelog_next: 0,
        };
        let mut records = churn_alert::kafka::changelog::state_records(p, &c);
        records.push(churn_alert::kafka::changelog::meta_record(p, &c.meta, None));
        let sends = records.iter().map(|r| {
            let mut rec =
                rdkafka::producer::FutureRecord::<[u8], [u8]>::to(&cfg.kafka.changelog_topic)
                    .partition(p)
                    .key(r.key.as_deref().unwrap());
            if !r.payload.is_empty() {
                rec = rec.payload(&r.payload);
            }
            producer.send(rec, Duration::from_secs(30))
        });
        for r in futures::future::join_all(sends).await {
            r.map_err(|(e, _)| e).unwrap();
        }
    }
    let written = i64::try_from(n + n.div_ceil(2000)).unwrap();
    let raw = raw_consume(
        &broker.bootstrap(),
        &cfg.kafka.changelog_topic,
        &(0..partitions).map(|p| (p, written)).collect(),
    );
    let restored = engines
        .iter()
        .map(|&engine| restore_into(engine, &cfg, n, partitions))
        .collect();
    (restored, raw)
}

/// Restores `partitions` changelog partitions at once into a fresh store of
/// the engine: (seconds, records read).
fn restore_into(engine: StoreEngine, cfg: &Config, n: usize, partitions: i32) -> (f64, u64) {
    let dir = tempfile::tempdir().unwrap();
    let store = open_engine(engine, dir.path());
    let store = store.as_ref();
    let metrics = Metrics::new();
    let cancel = std::sync::atomic::AtomicBool::new(false);
    let start = Instant::now();
    let records: u64 = std::thread::scope(|scope| {
        let restores: Vec<_> = (0..partitions)
            .map(|p| {
                let (metrics, cancel) = (&metrics, &cancel);
                scope.spawn(move || {
                    churn_alert::kafka::changelog::restore(&cfg.kafka, p, store, metrics, cancel)
                        .unwrap()
                })
            })
            .collect();
        restores
            .into_iter()
            .map(|r| {
                let r = r.join().unwrap();
                assert_eq!(r.meta.unwrap().customers as usize, n);
                r.records
            })
            .sum()
    });
    let seconds = start.elapsed().as_secs_f64();
    for p in 0..partitions {
        assert_eq!(store.customers(p).unwrap().len(), n);
    }
    (seconds, records)
}

fn main() {
    let full = std::env::args().any(|a| a == "--bench");
    let rows = std::env::var("BENCH_ROWS").unwrap_or_default();
    let picked: Vec<&str> = rows
        .split(',')
        .map(str::trim)
        .filter(|r| !r.is_empty())
        .collect();
    if let Some(bad) = picked
        .iter()
        .find(|r| !["a", "b", "size", "c", "d", "latency"].contains(r))
    {
        panic!("BENCH_ROWS: unknown row {bad:?} (rows: a, b, size, c, d, latency)");
    }
    let row = |r: &str| picked.is_empty() || picked.contains(&r);
    let cfg = Config::default();
    let model = model(&cfg);
    let (customers, days) = if full { (5000, 180) } else { (200, 60) };
    let (sim, end) = simulate(customers, days);
    let v = cfg.validator();
    let events: Vec<Event> = sim
        .iter()
        .map(|e| {
            v.decode(Some(e.customer_id.as_bytes()), e.json.as_bytes(), None, end)
                .unwrap()
        })
        .collect();
    println!(
        "workload: {} events of {customers} simulated customers over {days} days",
        events.len()
    );

    let mut a = None;
    if !full || row("a") {
        let start = Instant::now();
        let mut ok = 0usize;
        for e in &sim {
            ok += usize::from(
                v.decode(Some(e.customer_id.as_bytes()), e.json.as_bytes(), None, end)
                    .is_ok(),
            );
        }
        println!(
            "    decode + validate only (JSON):     {:>10.0} events/s",
            per_sec(ok, start.elapsed())
        );

        let rounds = if full { 5 } else { 1 };
        let a = *a.insert(bench_step(&events, &cfg, &model, rounds));
        println!(
            "(a) pure step, in-memory state:        {:>10.0} events/s",
            a
        );
    }
    let mut b = None;
    if !full || row("b") {
        let msgs = messages(&sim, 4);
        let sled = StoreEngine::Sled;
        let (bw, _, writes) = bench_store(sled, &msgs, &cfg, &model, 2000, ClockMode::Wall, true);
        let b = *b.insert(bw);
        println!("(b) decode + step + sled commit:       {:>10.0} events/s (batches of 2000, flushed at each commit, {writes} state writes)", b);
        let (lazy, _, _) = bench_store(sled, &msgs, &cfg, &model, 2000, ClockMode::Wall, false);
        println!(
            "    the same, background flush only:   {:>10.0} events/s (store.flush_on_commit = false)",
            lazy
        );
        // Small batches (a quiet live stream): one fsync per 50 events.
        let few = &msgs[..msgs.len().min(if full { 100_000 } else { 5_000 })];
        let (small, _, _) = bench_store(sled, few, &cfg, &model, 50, ClockMode::Wall, true);
        let (small_lazy, _, _) = bench_store(sled, few, &cfg, &model, 50, ClockMode::Wall, false);
        println!(
            "    batches of 50, flushed / not:      {small:>10.0} / {small_lazy:.0} events/s ({} events)",
            few.len()
        );
        let (replay, rescored, writes) =
            bench_store(sled, &msgs, &cfg, &model, 2000, ClockMode::Event, true);
        println!(
            "    the same replayed in event time:   {:>10.0} events/s (+{rescored} silent re-scores, {writes} state writes)",
            replay
        );
        let fjall = StoreEngine::Fjall;
        let (fw, _, _) = bench_store(fjall, &msgs, &cfg, &model, 2000, ClockMode::Wall, true);
        let (fs, _, _) = bench_store(fjall, few, &cfg, &model, 50, ClockMode::Wall, true);
        println!(
            "    fjall instead of sled:             {fw:>10.0} events/s (batches of 2000, flushed at each commit); batches of 50: {fs:.0}"
        );
    }

    // Realistic states: the simulated customers at the end of their history.
    let spec = cfg.feature_spec();
    let mut states: HashMap<&str, CustomerState> = HashMap::new();
    for e in &events {
        let (s, _) = step::ingest(states.remove(e.customer_id.as_str()), e, &spec);
        if let Some(mut s) = s {
            s.next_due = Some(s.last_seen + DAY_MS);
            states.insert(e.customer_id.as_str(), s);
        }
    }
    let sample: Vec<CustomerState> = states.into_values().collect();
    let n = if full { 1_000_000 } else { 10_000 };
    let mut disk = None;
    if !full || row("size") {
        for engine in ENGINES {
            let (d, enc) = bytes_per_customer(engine, &sample, n);
            disk = Some(disk.map_or(d, |m: f64| m.min(d)));
            println!(
                "{engine:?} state: {d:.0} bytes/customer on disk for {n} customers ({enc:.0} bytes encoded)"
            );
        }
    }

    if full {
        let rt = tokio::runtime::Runtime::new().unwrap();
        if row("c") {
            broker_rows(&rt, &sim, &cfg, &model);
        }
        if picked.contains(&"latency") {
            latency_rows(&rt, &sim, &cfg, &model);
        }
        if row("d") {
            let broker = common::Broker::tansu();
            for (n, partitions) in [(100_000, 1), (400_000, 1), (100_000, 4)] {
                let (restored, raw) =
                    rt.block_on(bench_restore(&broker, &sample, n, partitions, &ENGINES));
                let all = n * partitions as usize;
                for (engine, (secs, records)) in ENGINES.iter().zip(restored) {
                    println!(
                        "(d) restore from the changelog (tansu) into {engine:?}: {partitions} partition(s) of {n} customers at once ({records} records) in {secs:.2} s = {:.0} customers/s; a plain consumer reads the same partitions at {raw:.0} records/s",
                        all as f64 / secs,
                    );
                }
            }
        }
    } else {
        let rt = tokio::runtime::Runtime::new().unwrap();
        let broker = common::Broker::mock();
        let (restored, _) = rt.block_on(bench_restore(&broker, &sample, 5_000, 2, &ENGINES));
        for (engine, (secs, _)) in ENGINES.iter().zip(restored) {
            println!(
                "(d) restore smoke pass (mock cluster) into {engine:?}: 2 partitions of 5000 customers in {secs:.2} s"
            );
        }
        assert!(a > Some(0.0) && b > Some(0.0) && disk > Some(0.0));
        println!("(c) skipped in the smoke pass; run `cargo bench --bench throughput`");
    }
}

/// Event to commit for several batch lingers, fetch.wait.max.ms 10.
fn latency_rows(rt: &tokio::runtime::Runtime, sim: &[SimEvent], cfg: &Config, model: &Model) {
    let rate: f64 = std::env::var("BENCH_LATENCY_RATE")
        .map(|r| r.parse().expect("BENCH_LATENCY_RATE: events per second"))
        .unwrap_or(31_000.0);
    assert!(
        rate > 0.0,
        "BENCH_LATENCY_RATE: more than 0 events per second"
    );
    let lingers: Vec<u64> = std::env::var("BENCH_LATENCY_LINGERS")
        .unwrap_or_else(|_| "50,20,5,0".into())
        .split(',')
        .map(|l| {
            l.trim()
                .parse()
                .expect("BENCH_LATENCY_LINGERS: milliseconds, comma-separated")
        })
        .collect();
    // The first seconds of the stream only, if asked: tansu's memory
    // engine slows as a topic fills, for any consumer.
    let sim = match std::env::var("BENCH_LATENCY_SECONDS") {
        Ok(secs) => {
            let secs: f64 = secs.parse().expect("BENCH_LATENCY_SECONDS: seconds");
            assert!(secs > 0.0, "BENCH_LATENCY_SECONDS: more than 0 seconds");
            &sim[..sim.len().min(((rate * secs) as usize).max(1))]
        }
        Err(_) => sim,
    };
    let mut cfg = cfg.clone();
    cfg.store.engine = match std::env::var("BENCH_LATENCY_ENGINE").as_deref() {
        Ok("sled") | Err(_) => StoreEngine::Sled,
        Ok("fjall") => StoreEngine::Fjall,
        Ok(other) => panic!("BENCH_LATENCY_ENGINE: sled or fjall, not {other:?}"),
    };
    let cfg = &cfg;
    let streams: Vec<Stream> = match std::env::var("BENCH_LATENCY_STREAMS").as_deref() {
        Ok("live") => vec![Stream::Live],
        Ok("replay") => vec![Stream::Replay],
        Ok("" | "live,replay" | "replay,live") | Err(_) => vec![Stream::Live, Stream::Replay],
        Ok(other) => panic!("BENCH_LATENCY_STREAMS: live, replay or both, not {other:?}"),
    };
    for &stream in &streams {
        for &linger in &lingers {
            // A broker of its own, as tansu's memory engine slows as it fills.
            let broker = &common::Broker::tansu();
            let ((p50, p99, max), (f50, f99, _)) = rt.block_on(bench_latency(
                broker,
                sim,
                cfg,
                model,
                rate,
                Some(10),
                linger,
                stream,
            ));
            println!(
                "(latency) {} stream, {:?} store, event to commit at {rate:.0} events/s, batch_linger_ms {linger}, fetch.wait.max.ms 10: p50 {p50:.0} ms, p99 {p99:.0} ms, max {max:.0} ms; a plain consumer of the same stream gets it at p50 {f50:.0} ms, p99 {f99:.0} ms",
                stream.name(),
                cfg.store.engine,
            );
        }
    }
}

/// Rows (c), (c') and (c'') on the tansu broker.
fn broker_rows(rt: &tokio::runtime::Runtime, sim: &[SimEvent], cfg: &Config, model: &Model) {
    let (total, steady, raw, peer) = rt.block_on(bench_broker(sim, cfg, model));
    println!("(c) end to end via tansu, committed:   {:>10.0} events/s ({steady:.0}/s after the consumer group joined)", total);
    println!(
        "    a plain consumer, the same topic:  {raw:>10.0} events/s; end to end is {:.2} of it ({:.2} after the join)",
        total / raw,
        steady / raw
    );
    println!(
        "(c') Quix Streams peer, the same topic: {:>9.0} events/s ({:.0}/s with its start-up; {} alerts) [{peer}]",
        field(&peer, "events_per_s"),
        field(&peer, "wall_events_per_s"),
        field(&peer, "alerts"),
    );
    let rate = (total / 2.0).round();
    // tansu answers a fetch at the end of a partition only after the
    // consumer's fetch.wait.max.ms (500 ms by default), even when
    // records arrive meanwhile; Kafka answers as soon as they do.
    let linger = Config::default().kafka.batch_linger_ms;
    for (stream, wait) in [
        (Stream::Live, Some(10)),
        (Stream::Live, None),
        (Stream::Replay, Some(10)),
    ] {
        // A broker of its own, as tansu's memory engine slows as it fills.
        let broker = &common::Broker::tansu();
        let ((p50, p99, max), (f50, f99, _)) = rt.block_on(bench_latency(
            broker, sim, cfg, model, rate, wait, linger, stream,
        ));
        let fetch = wait.map_or("librdkafka's default fetch.wait.max.ms (500)".into(), |w| {
            format!("fetch.wait.max.ms = {w}")
        });
        println!(
            "(c'') {} stream, event to commit at {rate:.0} events/s (half of (c)), batch_linger_ms {linger} (the default), {fetch}: p50 {p50:.0} ms, p99 {p99:.0} ms, max {max:.0} ms; a plain consumer of the same stream gets it at p50 {f50:.0} ms, p99 {f99:.0} ms",
            stream.name()
        );
    }
}

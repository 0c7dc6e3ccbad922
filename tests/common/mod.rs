//! Shared harness for the integration tests: a Kafka broker (librdkafka's
//! mock cluster, or a real tansu process on 127.0.0.1), helpers to produce
//! and read topics, and the service started in-process on a sled directory.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use churn_alert::config::Config;
use churn_alert::pipeline::event::{rfc3339, Millis, DAY_MS};
use churn_alert::pipeline::model::{Model, ModelFile};
use churn_alert::service::Service;
use churn_alert::store::Store;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Header, Headers, OwnedHeaders};
use rdkafka::mocking::MockCluster;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use rdkafka::Message;
use tokio_util::sync::CancellationToken;

/// Input partitions in every test.
pub const PARTITIONS: i32 = 3;
/// Event time of "day 0" in the tests: fixed, in the past.
pub const T0: Millis = 1_788_220_800_000; // 2026-09-01T00:00:00Z

pub fn at(day: f64) -> String {
    rfc3339(T0 + (day * DAY_MS as f64) as Millis)
}

/// A running broker.
pub enum Broker {
    Mock(MockCluster<'static, rdkafka::producer::DefaultProducerContext>),
    Tansu {
        child: Child,
        addr: String,
        _dir: Option<tempfile::TempDir>,
    },
}

/// A free loopback port.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Where the tansu binary is: `$TANSU_BIN`, else on PATH, else cargo's bin dir.
pub fn tansu_bin() -> PathBuf {
    if let Ok(p) = std::env::var("TANSU_BIN") {
        return PathBuf::from(p);
    }
    if let Ok(path) = std::env::var("PATH") {
        for dir in std::env::split_paths(&path) {
            let p = dir.join("tansu");
            if p.is_file() {
                return p;
            }
        }
    }
    let home = std::env::var("CARGO_HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|_| {
            PathBuf::from(std::env::var("HOME").unwrap_or_default()).join(".cargo")
        });
    let p = home.join("bin/tansu");
    assert!(
        p.is_file(),
        "the tansu broker is not installed: run `scripts/tansu.sh install` (the README's test command does)"
    );
    p
}

impl Broker {
    pub fn mock() -> Self {
        Broker::Mock(MockCluster::new(1).unwrap())
    }

    /// Starts `tansu broker` with the in-memory engine on a free loopback port.
    pub fn tansu() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let mut b = Self::tansu_at(free_port(), dir.path(), "memory://tansu/");
        if let Broker::Tansu { _dir, .. } = &mut b {
            *_dir = Some(dir);
        }
        b
    }

    /// Starts `tansu broker` on `port` with a storage engine URL, in `dir`
    /// (where a relative `sqlite://FILE` lives, so a restart keeps the data).
    pub fn tansu_at(port: u16, dir: &Path, storage: &str) -> Self {
        let url = format!("tcp://127.0.0.1:{port}");
        let child = Command::new(tansu_bin())
            .args([
                "broker",
                "--listener-url",
                &url,
                "--advertised-listener-url",
                &url,
                "--storage-engine",
                storage,
            ])
            .current_dir(dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start tansu");
        let addr = format!("127.0.0.1:{port}");
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(&addr).is_err() {
            assert!(
                Instant::now() < deadline,
                "tansu did not start listening on {addr}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        Broker::Tansu {
            child,
            addr,
            _dir: None,
        }
    }

    /// An idempotent producer to this broker.
    pub fn producer(&self) -> FutureProducer {
        ClientConfig::new()
            .set("bootstrap.servers", self.bootstrap())
            .set("enable.idempotence", "true")
            // As the service's default `kafka.partitioner` expects.
            .set("partitioner", "murmur2_random")
            .create()
            .unwrap()
    }

    pub fn bootstrap(&self) -> String {
        match self {
            Broker::Mock(c) => c.bootstrap_servers(),
            Broker::Tansu { addr, .. } => addr.clone(),
        }
    }

    /// Creates the service's topics with `PARTITIONS` partitions.
    pub async fn create_topics(&self, cfg: &Config) {
        self.create_topics_with(cfg, PARTITIONS).await
    }

    /// Creates the service's topics with `partitions` partitions.
    pub async fn create_topics_with(&self, cfg: &Config, partitions: i32) {
        let k = &cfg.kafka;
        self.create_with(
            &[
                &k.input_topic,
                &k.alerts_topic,
                &k.triggers_topic,
                &k.outcomes_topic,
                &k.dlq_topic,
                &k.changelog_topic,
            ],
            partitions,
        )
        .await;
    }

    /// Creates `topics` with `PARTITIONS` partitions.
    pub async fn create(&self, topics: &[&String]) {
        self.create_with(topics, PARTITIONS).await
    }

    /// Creates `topics` with `partitions` partitions.
    pub async fn create_with(&self, topics: &[&String], partitions: i32) {
        match self {
            Broker::Mock(c) => {
                for t in topics {
                    c.create_topic(t, partitions, 1).unwrap();
                }
            }
            Broker::Tansu { addr, .. } => {
                let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
                    .set("bootstrap.servers", addr)
                    .create()
                    .unwrap();
                let new: Vec<NewTopic> = topics
                    .iter()
                    .map(|t| NewTopic::new(t, partitions, TopicReplication::Fixed(1)))
                    .collect();
                for r in admin
                    .create_topics(&new, &AdminOptions::new())
                    .await
                    .unwrap()
                {
                    match r {
                        Ok(_) | Err((_, rdkafka::types::RDKafkaErrorCode::TopicAlreadyExists)) => {}
                        Err(e) => panic!("create topic: {e:?}"),
                    }
                }
            }
        }
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        if let Broker::Tansu { child, .. } = self {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// A test model: the churn probability rises with days of silence
/// (0.5 at 10 days, 0.7 at about 11.7 days).
pub fn test_model(cfg: &Config) -> Model {
    Model::new(
        ModelFile {
            version: "test-silence-1".into(),
            features: vec!["recency_days".into(), "complaints_rate_30d".into()],
            mean: vec![10.0, 0.0],
            scale: vec![2.0, 0.05],
            weights: vec![1.0, 0.5],
            intercept: 0.0,
            thresholds: None,
            segments: None,
            population: None,
            training: None,
        },
        &cfg.feature_spec(),
    )
    .unwrap()
}

/// Config for a test run against `broker`, state in `dir`.
pub fn test_config(broker: &Broker, dir: &Path) -> Config {
    let mut c = Config::default();
    c.kafka.brokers = broker.bootstrap();
    c.kafka.batch_linger_ms = 20;
    c.clock.mode = "event".into();
    c.store.path = dir.join("state");
    c.admin.listen = "127.0.0.1:0".into();
    c.validation.max_message_bytes = 2048;
    c.policy.contact.quiet_hours.clear();
    c.policy.holdout.share = 0.0;
    c
}

/// A service running in this process.
pub struct Running {
    pub store: Arc<dyn Store>,
    pub admin: std::net::SocketAddr,
    stop: CancellationToken,
    task: tokio::task::JoinHandle<Result<(), churn_alert::service::StartError>>,
}

pub async fn start(cfg: &Config) -> Running {
    start_with_model(cfg, test_model(cfg)).await
}

pub async fn start_with_model(cfg: &Config, model: Model) -> Running {
    let service = Service::with_model(cfg.clone(), model).unwrap();
    let stop = CancellationToken::new();
    let admin = service.serve_admin(stop.clone()).await.unwrap();
    Running::spawn(service, admin, stop)
}

impl Running {
    /// Runs a service whose admin server is already up.
    pub fn spawn(service: Service, admin: std::net::SocketAddr, stop: CancellationToken) -> Self {
        let store = service.store.clone();
        let task = tokio::spawn(service.run(stop.clone()));
        Running {
            store,
            admin,
            stop,
            task,
        }
    }

    /// Graceful stop; releases the sled directory.
    pub async fn stop(self) {
        self.stop.cancel();
        self.task.await.unwrap().unwrap();
        drop(self.store);
    }

    /// Waits until the committed state covers every offset in `high`.
    pub async fn wait_committed(&self, high: &BTreeMap<i32, i64>) {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let done = high.iter().all(|(p, h)| {
                self.store
                    .meta(*p)
                    .unwrap()
                    .map(|m| m.next_offset)
                    .unwrap_or(0)
                    >= *h
            });
            if done {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "service did not commit up to {high:?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Waits until `/readyz` answers 200 (assigned, every partition
    /// restored, committing).
    pub async fn wait_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let (status, why) = self.http_get("/readyz").await;
            if status == 200 {
                return;
            }
            assert!(Instant::now() < deadline, "not ready: {why}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// GET a path of the admin server: (status, body).
    pub async fn http_get(&self, path: &str) -> (u16, String) {
        http_get(self.admin, path)
            .await
            .expect("admin server answers")
    }

    /// A metric's value from /metrics (sum over label sets that contain `labels`).
    pub async fn metric(&self, name: &str, labels: &str) -> f64 {
        let (_, body) = self.http_get("/metrics").await;
        metric_value(&body, name, labels)
    }
}

/// A metric's value in a Prometheus text exposition (sum over the label
/// sets that contain `labels`).
pub fn metric_value(body: &str, name: &str, labels: &str) -> f64 {
    body.lines()
        .filter(|l| l.starts_with(name) && !l.starts_with('#'))
        .filter(|l| {
            let series = l.split_whitespace().next().unwrap();
            series == name || (series.starts_with(&format!("{name}{{")) && series.contains(labels))
        })
        .map(|l| l.split_whitespace().last().unwrap().parse::<f64>().unwrap())
        .sum()
}

/// GET `path` from an HTTP server on `addr`: (status, body), or `None`
/// when it does not answer.
pub async fn http_get(addr: std::net::SocketAddr, path: &str) -> Option<(u16, String)> {
    http(addr, "GET", path, None).await
}

/// `method` `path` with an optional bearer token: (status, body).
pub async fn http(
    addr: std::net::SocketAddr,
    method: &str,
    path: &str,
    token: Option<&str>,
) -> Option<(u16, String)> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.ok()?;
    let auth = token.map_or(String::new(), |t| format!("Authorization: Bearer {t}\r\n"));
    s.write_all(
        format!("{method} {path} HTTP/1.1\r\nHost: x\r\n{auth}Content-Length: 0\r\nConnection: close\r\n\r\n")
            .as_bytes(),
    )
    .await
    .ok()?;
    let mut buf = String::new();
    s.read_to_string(&mut buf).await.ok()?;
    let status = buf.split_whitespace().nth(1)?.parse().ok()?;
    Some((
        status,
        buf.split("\r\n\r\n").nth(1).unwrap_or("").to_string(),
    ))
}

/// One message to produce.
#[derive(Clone, Debug)]
pub struct Msg {
    pub key: Option<String>,
    pub payload: Vec<u8>,
    pub content_type: Option<&'static str>,
    /// Explicit partition (else the producer's partitioner picks by key).
    pub partition: Option<i32>,
}

impl Msg {
    pub fn with_key(mut self, key: &str) -> Self {
        self.key = Some(key.into());
        self
    }

    pub fn with_key_none(mut self) -> Self {
        self.key = None;
        self
    }

    pub fn on_partition(mut self, p: i32) -> Self {
        self.partition = Some(p);
        self
    }
}

pub fn json(key: &str, payload: String) -> Msg {
    Msg {
        key: Some(key.into()),
        payload: payload.into_bytes(),
        content_type: None,
        partition: None,
    }
}

pub fn event(cust: &str, id: &str, day: f64, ty: &str, extra: &str) -> Msg {
    let extra = if extra.is_empty() {
        String::new()
    } else {
        format!(",{extra}")
    };
    json(
        cust,
        format!(
            r#"{{"event_id":"{id}","customer_id":"{cust}","type":"{ty}","occurred_at":"{}"{extra}}}"#,
            at(day)
        ),
    )
}

/// Produces messages in order; returns each one's (partition, offset) and
/// the high watermark per partition.
pub async fn produce(
    broker: &Broker,
    topic: &str,
    msgs: &[Msg],
) -> (Vec<(i32, i64)>, BTreeMap<i32, i64>) {
    let producer = broker.producer();
    let mut out = Vec::new();
    let mut high = BTreeMap::new();
    for m in msgs {
        let mut rec = FutureRecord::to(topic).payload(&m.payload);
        if let Some(k) = &m.key {
            rec = rec.key(k);
        }
        if let Some(p) = m.partition.or(if m.key.is_none() { Some(0) } else { None }) {
            rec = rec.partition(p);
        }
        if let Some(ct) = m.content_type {
            rec = rec.headers(OwnedHeaders::new().insert(Header {
                key: "content-type",
                value: Some(ct),
            }));
        }
        let d = producer
            .send(rec, Duration::from_secs(10))
            .await
            .map_err(|(e, _)| e)
            .unwrap();
        out.push((d.partition, d.offset));
        let h = high.entry(d.partition).or_insert(0);
        *h = (*h).max(d.offset + 1);
    }
    (out, high)
}

/// Produces simulated events keyed by customer and raises `high` (the next
/// offset per partition) to cover them.
pub async fn produce_events(
    producer: &FutureProducer,
    topic: &str,
    events: &[churn_alert::offline::simulate::SimEvent],
    high: &mut BTreeMap<i32, i64>,
) {
    let sends = events.iter().map(|e| {
        producer.send(
            FutureRecord::to(topic).key(&e.customer_id).payload(&e.json),
            Duration::from_secs(30),
        )
    });
    for r in futures::future::join_all(sends).await {
        let d = r.map_err(|(e, _)| e).unwrap();
        let h = high.entry(d.partition).or_insert(0);
        *h = (*h).max(d.offset + 1);
    }
}

/// A record read back from an output topic.
#[derive(Debug, Clone)]
pub struct Record {
    pub partition: i32,
    pub key: Option<Vec<u8>>,
    pub payload: Vec<u8>,
    pub headers: BTreeMap<String, String>,
}

impl Record {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.payload).unwrap()
    }
}

/// Reads every record of a topic: all partitions from the start until no
/// new record has arrived for a quiet period. Callers read only after
/// everything they expect was acknowledged by the broker. (The broker's high
/// watermark is not used: tansu 0.6 reports it as the last record batch's
/// base offset + 1, short of the end when records were batched.)
pub fn read_all(broker: &Broker, topic: &str) -> Vec<Record> {
    read_all_of(broker, topic, PARTITIONS)
}

/// [`read_all`] for a topic of `partitions` partitions.
pub fn read_all_of(broker: &Broker, topic: &str, partitions: i32) -> Vec<Record> {
    let c: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", broker.bootstrap())
        .set("group.id", format!("reader-{}", free_port()))
        .set("enable.auto.commit", "false")
        .create()
        .unwrap();
    let mut tpl = TopicPartitionList::new();
    for p in 0..partitions {
        tpl.add_partition_offset(topic, p, Offset::Beginning)
            .unwrap();
    }
    c.assign(&tpl).unwrap();
    let quiet = Duration::from_millis(1500);
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut last = Instant::now();
    let mut out = Vec::new();
    while last.elapsed() < quiet {
        assert!(Instant::now() < deadline, "{topic} kept growing");
        let Some(m) = c.poll(Duration::from_millis(100)) else {
            continue;
        };
        let m = m.unwrap();
        last = Instant::now();
        let headers = m
            .headers()
            .map(|h| {
                h.iter()
                    .map(|h| {
                        (
                            h.key.to_string(),
                            String::from_utf8_lossy(h.value.unwrap_or_default()).into_owned(),
                        )
                    })
                    .collect()
            })
            .unwrap_or_default();
        out.push(Record {
            partition: m.partition(),
            key: m.key().map(<[u8]>::to_vec),
            payload: m.payload().unwrap_or_default().to_vec(),
            headers,
        });
    }
    out
}

/// The committed state of one customer (searching all partitions).
pub fn customer(
    store: &dyn Store,
    id: &str,
) -> Option<churn_alert::pipeline::features::CustomerState> {
    (0..PARTITIONS).find_map(|p| store.get(p, id).unwrap())
}

/// The config of a real `churn-alert run` process started by
/// [`spawn_service`] (default policy and validation: it is configured by
/// its environment only), for runs that compare with it.
pub fn process_config(broker: &Broker, dir: &Path) -> Config {
    let mut c = test_config(broker, dir);
    c.policy = Config::default().policy;
    c.validation = Config::default().validation;
    c
}

/// `base` as run `run`: its own group, topics and state directory.
pub fn named_run(base: &Config, run: &str, dir: &Path) -> Config {
    let mut c = base.clone();
    own_topics(&mut c, run);
    c.store.path = dir.join(run);
    c
}

/// Gives a run its own consumer group and output and changelog topics, so
/// runs on one broker do not see each other.
pub fn own_topics(cfg: &mut Config, run: &str) {
    cfg.kafka.group_id = format!("{run}-group");
    cfg.kafka.alerts_topic = format!("{run}-alerts");
    cfg.kafka.triggers_topic = format!("{run}-triggers");
    cfg.kafka.dlq_topic = format!("{run}-dlq");
    cfg.kafka.outcomes_topic = format!("{run}-outcomes");
    cfg.kafka.changelog_topic = format!("{run}-changelog");
}

/// Starts the real `churn-alert run` process, configured by its
/// environment only (default policy), in event time, with its admin server
/// on `port`; its log goes to `log`.
pub fn spawn_service(cfg: &Config, port: u16, log: &Path) -> Child {
    let k = &cfg.kafka;
    let mut c = Command::new(env!("CARGO_BIN_EXE_churn-alert"));
    c.arg("run")
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .env_remove("CHURN_ALERT_CONFIG")
        .env("CHURN_ALERT__KAFKA__BROKERS", &k.brokers)
        .env("CHURN_ALERT__KAFKA__GROUP_ID", &k.group_id)
        .env("CHURN_ALERT__KAFKA__INPUT_TOPIC", &k.input_topic)
        .env("CHURN_ALERT__KAFKA__ALERTS_TOPIC", &k.alerts_topic)
        .env("CHURN_ALERT__KAFKA__TRIGGERS_TOPIC", &k.triggers_topic)
        .env("CHURN_ALERT__KAFKA__DLQ_TOPIC", &k.dlq_topic)
        .env("CHURN_ALERT__KAFKA__OUTCOMES_TOPIC", &k.outcomes_topic)
        .env("CHURN_ALERT__KAFKA__CHANGELOG_TOPIC", &k.changelog_topic)
        .env("CHURN_ALERT__STORE__PATH", &cfg.store.path)
        .env("CHURN_ALERT__CLOCK__MODE", "event")
        .env("CHURN_ALERT__ADMIN__LISTEN", format!("127.0.0.1:{port}"))
        .env("RUST_LOG", "warn,churn_alert=info")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(log).unwrap());
    if let Some(id) = &k.instance_id {
        c.env("CHURN_ALERT__KAFKA__INSTANCE_ID", id);
    }
    if let Some(url) = &cfg.admin.advertised_url {
        c.env("CHURN_ALERT__ADMIN__ADVERTISED_URL", url);
    }
    c.spawn().unwrap()
}

/// The shipped model, as the real process loads it.
pub fn shipped_model(cfg: &Config) -> Model {
    Model::load(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("models/churn-model.json"),
        &cfg.feature_spec(),
    )
    .unwrap()
}

/// Every customer's state in partitions `0..partitions` of a store.
pub fn states(
    store: &dyn Store,
    partitions: i32,
) -> BTreeMap<String, churn_alert::pipeline::features::CustomerState> {
    (0..partitions)
        .flat_map(|p| store.customers(p).unwrap())
        .collect()
}

/// Runs the service in this process until every partition's state reaches
/// `high`; returns the final states.
pub async fn run_to_end(
    cfg: &Config,
    high: &BTreeMap<i32, i64>,
    partitions: i32,
) -> BTreeMap<String, churn_alert::pipeline::features::CustomerState> {
    let service = Service::with_model(cfg.clone(), shipped_model(cfg)).unwrap();
    let store = service.store.clone();
    let stop = CancellationToken::new();
    let task = tokio::spawn(service.run(stop.clone()));
    let deadline = Instant::now() + Duration::from_secs(300);
    while !high
        .iter()
        .all(|(p, h)| store.meta(*p).unwrap().is_some_and(|m| m.next_offset >= *h))
    {
        assert!(Instant::now() < deadline, "run did not finish");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    stop.cancel();
    task.await.unwrap().unwrap();
    let s = states(store.as_ref(), partitions);
    drop(store);
    s
}

/// A producer that sends each record in a batch of its own (tansu 0.6
/// answers a fetch from an offset inside a record batch with the next
/// batch, so every offset a consumer may resume at must start a batch).
pub fn one_record_batches(broker: &Broker) -> FutureProducer {
    ClientConfig::new()
        .set("bootstrap.servers", broker.bootstrap())
        .set("linger.ms", "0")
        .set("batch.num.messages", "1")
        .set("enable.idempotence", "true")
        .set("partitioner", "murmur2_random")
        .create()
        .unwrap()
}

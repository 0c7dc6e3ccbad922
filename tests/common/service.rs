//! The service under test: in this process, or as the real binary.

use super::*;

/// A service running in this process.
pub struct Running {
    pub store: Arc<dyn Store>,
    /// What the admin endpoints work with (the publisher among it).
    pub control: Arc<churn_alert::admin::control::Control>,
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
        let control = service.control.clone();
        let task = tokio::spawn(service.run(stop.clone()));
        Running {
            store,
            control,
            admin,
            stop,
            task,
        }
    }

    /// Graceful stop; releases the sled directory (waits until nothing
    /// else holds the store: the admin server's task drops its handle when
    /// its own graceful shutdown ends).
    pub async fn stop(self) {
        self.stop.cancel();
        self.task.await.unwrap().unwrap();
        drop(self.control);
        let deadline = Instant::now() + Duration::from_secs(30);
        while Arc::strong_count(&self.store) > 1 {
            assert!(
                Instant::now() < deadline,
                "the store is still held 30 s after the stop"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        drop(self.store);
    }

    /// Waits for the service to stop by itself; its result.
    pub async fn finished(self) -> Result<(), churn_alert::service::StartError> {
        tokio::time::timeout(Duration::from_secs(60), self.task)
            .await
            .expect("the service stopped by itself")
            .unwrap()
    }

    /// Waits until the committed state covers every offset in `high`
    /// (generously: after a broker restart, tansu can take a while to give
    /// the group its partitions back on a loaded machine).
    pub async fn wait_committed(&self, high: &BTreeMap<i32, i64>) {
        let deadline = Instant::now() + Duration::from_secs(120);
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

/// A child process that is killed and reaped when dropped, whether the
/// test passed or panicked, so no process outlives its test.
pub struct Proc(pub Child);

impl std::ops::Deref for Proc {
    type Target = Child;
    fn deref(&self) -> &Child {
        &self.0
    }
}

impl std::ops::DerefMut for Proc {
    fn deref_mut(&mut self) -> &mut Child {
        &mut self.0
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if matches!(self.0.try_wait(), Ok(None)) {
            let _ = self.0.kill();
        }
        let _ = self.0.wait();
    }
}

/// Starts the real `churn-alert run` process, configured by its
/// environment (and, when `cfg.policy` is not the default, a config file
/// with that `[policy]` beside `log`), in event time, with its admin
/// server on `port`; its log goes to `log`.
pub fn spawn_service(cfg: &Config, port: u16, log: &Path) -> Proc {
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
        .env(
            "CHURN_ALERT__STORE__ENGINE",
            serde_json::to_value(cfg.store.engine)
                .unwrap()
                .as_str()
                .unwrap(),
        )
        .env("CHURN_ALERT__CLOCK__MODE", "event")
        .env("CHURN_ALERT__ADMIN__LISTEN", format!("127.0.0.1:{port}"))
        .env("RUST_LOG", "warn,churn_alert=info")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(log).unwrap());
    if let Some(id) = &k.instance_id {
        c.env("CHURN_ALERT__KAFKA__INSTANCE_ID", id);
    }
    if cfg.policy != Config::default().policy {
        let file = log.with_extension("policy.toml");
        let text = policy_toml(&cfg.policy);
        std::fs::write(&file, text).unwrap();
        c.env("CHURN_ALERT_CONFIG", &file);
    }
    if let Some(url) = &cfg.admin.advertised_url {
        c.env("CHURN_ALERT__ADMIN__ADVERTISED_URL", url);
    }
    // librdkafka properties, by name (dots and all).
    for (section, props) in [
        ("CLIENT", &k.client_properties),
        ("CONSUMER", &k.consumer_properties),
        ("PRODUCER", &k.producer_properties),
    ] {
        for (name, v) in props {
            c.env(
                format!("CHURN_ALERT__KAFKA__{section}_PROPERTIES__{name}"),
                v,
            );
        }
    }
    if let Some(t) = &cfg.admin.token {
        c.env("CHURN_ALERT__ADMIN__TOKEN", t);
    }
    if let Some(t) = &cfg.admin.read_token {
        c.env("CHURN_ALERT__ADMIN__READ_TOKEN", t);
    }
    Proc(c.spawn().unwrap())
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

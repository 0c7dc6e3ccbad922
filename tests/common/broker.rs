//! The broker of a test: librdkafka's mock cluster, or a real tansu
//! process on 127.0.0.1 that is stopped when the test drops it.

use super::*;

/// A running broker.
pub enum Broker {
    Mock(MockCluster<'static, rdkafka::producer::DefaultProducerContext>),
    Tansu {
        child: Child,
        addr: String,
        /// Where the broker's own log goes (`$TANSU_LOG` sets its level,
        /// e.g. `tansu_broker::coordinator=debug`; warnings by default).
        log: PathBuf,
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
        Self::tansu_advertising(port, port, dir, storage)
    }

    /// [`Broker::tansu_at`], telling clients to connect to `advertised`
    /// (say a TLS terminator's port in front of it) instead.
    pub fn tansu_advertising(port: u16, advertised: u16, dir: &Path, storage: &str) -> Self {
        let url = format!("tcp://127.0.0.1:{port}");
        let advertised = format!("tcp://127.0.0.1:{advertised}");
        let log = dir.join(format!("tansu-{port}.log"));
        // Appended to, so a broker restarted in the same place keeps it.
        let out = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .expect("tansu's log file");
        let child = Command::new(tansu_bin())
            .args([
                "broker",
                "--listener-url",
                &url,
                "--advertised-listener-url",
                &advertised,
                "--storage-engine",
                storage,
            ])
            .current_dir(dir)
            .env(
                "RUST_LOG",
                std::env::var("TANSU_LOG").unwrap_or_else(|_| "warn".into()),
            )
            // tansu logs to stdout; a panic goes to stderr.
            .stdout(out.try_clone().expect("tansu's log file"))
            .stderr(out)
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
            log,
            _dir: None,
        }
    }

    /// An idempotent producer to this broker.
    pub fn producer(&self) -> FutureProducer {
        ClientConfig::new()
            .set("bootstrap.servers", self.bootstrap())
            .set("enable.idempotence", "true")
            // Poison pills of several MB are test input too.
            .set("message.max.bytes", "4000000")
            // As the service's default `kafka.partitioner` expects.
            .set("partitioner", "murmur2_random")
            .create()
            .unwrap()
    }

    /// The last `lines` lines of a tansu broker's log (empty for the mock).
    pub fn log_tail(&self, lines: usize) -> String {
        match self {
            Broker::Mock(_) => String::new(),
            Broker::Tansu { log, .. } => {
                let text = std::fs::read_to_string(log).unwrap_or_default();
                let all: Vec<&str> = text.lines().collect();
                all[all.len().saturating_sub(lines)..].join("\n")
            }
        }
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
        self.create_with(&cfg.kafka.topics(), partitions).await;
    }

    /// Creates `topics` with `PARTITIONS` partitions.
    pub async fn create(&self, topics: &[&str]) {
        self.create_with(topics, PARTITIONS).await
    }

    /// Creates `topics` with `partitions` partitions.
    pub async fn create_with(&self, topics: &[&str], partitions: i32) {
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

//! TLS end to end against real processes: tansu behind Debian's stunnel (a
//! real TLS terminator; tansu itself speaks plaintext only), the broker
//! advertising the TLS port, a CA the test makes with openssl, and the
//! real binary producing input (`produce`), consuming, creating topics and
//! publishing through it. A CA
//! that did not sign the broker's certificate stops the start with exit
//! code 2 and librdkafka's reason, instead of waiting forever.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use rdkafka::Message;

fn on_path(names: &[&str]) -> PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    for dir in std::env::split_paths(&path) {
        for n in names {
            let p = dir.join(n);
            if p.is_file() {
                return p;
            }
        }
    }
    panic!(
        "{} is not installed: run scripts/test.sh (it installs it from Debian's packages)",
        names[0]
    )
}

fn openssl(dir: &Path, args: &[&str]) {
    let o = Command::new(on_path(&["openssl"]))
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
}

/// A CA named `name` in `dir`: `name.pem`, `name.key`.
fn make_ca(dir: &Path, name: &str) {
    openssl(
        dir,
        &[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "2",
            "-keyout",
            &format!("{name}.key"),
            "-out",
            &format!("{name}.pem"),
            "-subj",
            &format!("/CN={name}"),
        ],
    );
}

/// The broker's certificate for 127.0.0.1, signed by the CA `ca`.
fn make_server_cert(dir: &Path, ca: &str) {
    openssl(
        dir,
        &[
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "server.key",
            "-out",
            "server.csr",
            "-subj",
            "/CN=127.0.0.1",
        ],
    );
    std::fs::write(dir.join("san.cnf"), "subjectAltName=IP:127.0.0.1\n").unwrap();
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            &format!("{ca}.pem"),
            "-CAkey",
            &format!("{ca}.key"),
            "-CAcreateserial",
            "-days",
            "2",
            "-out",
            "server.pem",
            "-extfile",
            "san.cnf",
        ],
    );
}

/// tansu on a plaintext port behind stunnel on a TLS port: the broker
/// advertises the TLS port, so every client goes through TLS.
struct TlsBroker {
    dir: tempfile::TempDir,
    tls_port: u16,
    _tansu: Broker,
    _stunnel: Proc,
}

impl TlsBroker {
    fn start() -> Self {
        let dir = tempfile::tempdir().unwrap();
        make_ca(dir.path(), "ca");
        make_ca(dir.path(), "other-ca");
        make_server_cert(dir.path(), "ca");
        let (plain, tls_port) = (free_port(), free_port());
        let tansu = Broker::tansu_advertising(plain, tls_port, dir.path(), "memory://tansu/");
        let conf = dir.path().join("stunnel.conf");
        std::fs::write(
            &conf,
            format!(
                "foreground = yes\npid =\noutput = {}\n[kafka]\naccept = 127.0.0.1:{tls_port}\nconnect = 127.0.0.1:{plain}\ncert = {}\nkey = {}\n",
                dir.path().join("stunnel.log").display(),
                dir.path().join("server.pem").display(),
                dir.path().join("server.key").display(),
            ),
        )
        .unwrap();
        let stunnel = Proc(
            Command::new(on_path(&["stunnel4", "stunnel"]))
                .arg(&conf)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("start stunnel"),
        );
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(("127.0.0.1", tls_port)).is_err() {
            assert!(Instant::now() < deadline, "stunnel did not start listening");
            std::thread::sleep(Duration::from_millis(50));
        }
        TlsBroker {
            dir,
            tls_port,
            _tansu: tansu,
            _stunnel: stunnel,
        }
    }

    fn bootstrap(&self) -> String {
        format!("127.0.0.1:{}", self.tls_port)
    }

    /// A client of the test's own, through TLS with the right CA.
    fn client(&self) -> ClientConfig {
        let mut c = ClientConfig::new();
        c.set("bootstrap.servers", self.bootstrap())
            .set("security.protocol", "SSL")
            .set(
                "ssl.ca.location",
                self.dir.path().join("ca.pem").display().to_string(),
            );
        c
    }

    /// A config file for the real binary in `run_dir`, trusting `ca`
    /// (given relative to the config file, as a user would).
    fn service_config(&self, run_dir: &Path, ca: &str, admin_port: u16) -> PathBuf {
        std::fs::copy(self.dir.path().join(ca), run_dir.join(ca)).unwrap();
        let model = Path::new(env!("CARGO_MANIFEST_DIR")).join("models/churn-model.json");
        let p = run_dir.join("churn-alert.toml");
        std::fs::write(
            &p,
            format!(
                "[kafka]\nbrokers = \"{}\"\nbatch_linger_ms = 20\n[kafka.client_properties]\n\"security.protocol\" = \"SSL\"\n\"ssl.ca.location\" = \"{ca}\"\n[store]\npath = \"state\"\n[model]\npath = \"{}\"\n[clock]\nmode = \"event\"\n[admin]\nlisten = \"127.0.0.1:{admin_port}\"\n",
                self.bootstrap(),
                model.display()
            ),
        )
        .unwrap();
        p
    }
}

fn spawn(config: &Path, log: &Path) -> Proc {
    Proc(
        Command::new(env!("CARGO_BIN_EXE_churn-alert"))
            .args(["--config", config.to_str().unwrap(), "run"])
            .env_remove("CHURN_ALERT_CONFIG")
            .env("RUST_LOG", "warn,churn_alert=info")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(log).unwrap())
            .spawn()
            .unwrap(),
    )
}

#[tokio::test(flavor = "multi_thread")]
#[cfg_attr(
    not(feature = "e2e"),
    ignore = "needs tansu, stunnel and openssl: --features e2e (scripts/test.sh)"
)]
async fn the_service_consumes_and_publishes_through_tls() {
    let broker = TlsBroker::start();
    let admin: rdkafka::admin::AdminClient<rdkafka::client::DefaultClientContext> =
        broker.client().create().unwrap();
    let input = rdkafka::admin::NewTopic::new(
        "customer-events",
        2,
        rdkafka::admin::TopicReplication::Fixed(1),
    );
    for r in admin
        .create_topics([&input], &rdkafka::admin::AdminOptions::new())
        .await
        .unwrap()
    {
        r.unwrap();
    }
    let run = tempfile::tempdir().unwrap();
    let port = free_port();
    let config = broker.service_config(run.path(), "ca.pem", port);
    let log = run.path().join("service.log");
    let _service = spawn(&config, &log);

    // The events go in through TLS with the binary's own `produce`, on the
    // same config file.
    let bad = r#"{"customer_id":"c-1","type":"session"}"#;
    let good = 20;
    let mut lines: Vec<Vec<u8>> = (0..good)
        .map(|i| {
            event(
                &format!("c-{}", i % 4),
                &format!("e{i}"),
                i as f64 * 0.5,
                "session",
                "",
            )
            .payload
        })
        .collect();
    lines.push(bad.as_bytes().to_vec());
    let history = run.path().join("events.jsonl");
    std::fs::write(&history, lines.join(&b'\n')).unwrap();
    let o = Command::new(env!("CARGO_BIN_EXE_churn-alert"))
        .args([
            "--config",
            config.to_str().unwrap(),
            "produce",
            "--events",
            history.to_str().unwrap(),
        ])
        .env_remove("CHURN_ALERT_CONFIG")
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "produce: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(String::from_utf8_lossy(&o.stderr).contains(&format!("sent {} events", good + 1)));

    // Consumed through TLS: every good event applied.
    let addr: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let consumed = match http_get(addr, "/metrics").await {
            Some((200, body)) => metric_value(&body, "churn_alert_events_consumed_total", ""),
            _ => 0.0,
        };
        if consumed == good as f64 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{consumed} of {good} events consumed through TLS; log:\n{}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(http_get(addr, "/readyz").await.map(|r| r.0), Some(200));

    // Published through TLS: the bad message's dead letter, on the topic
    // the service itself created through TLS.
    let reader: BaseConsumer = broker
        .client()
        .set("group.id", "tls-reader")
        .set("enable.auto.commit", "false")
        .create()
        .unwrap();
    let mut tpl = TopicPartitionList::new();
    for p in 0..2 {
        tpl.add_partition_offset("customer-events-dlq", p, Offset::Beginning)
            .unwrap();
    }
    reader.assign(&tpl).unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    let dead_letter = loop {
        assert!(Instant::now() < deadline, "no dead letter read through TLS");
        if let Some(Ok(m)) = reader.poll(Duration::from_millis(200)) {
            break m.detach();
        }
    };
    assert_eq!(dead_letter.payload(), Some(bad.as_bytes()));
    assert_eq!(dead_letter.key(), Some(&b"c-1"[..]));
}

#[tokio::test(flavor = "multi_thread")]
#[cfg_attr(
    not(feature = "e2e"),
    ignore = "needs tansu, stunnel and openssl: --features e2e (scripts/test.sh)"
)]
async fn a_wrong_ca_stops_the_start_with_a_clear_error() {
    let broker = TlsBroker::start();
    let run = tempfile::tempdir().unwrap();
    let config = broker.service_config(run.path(), "other-ca.pem", free_port());
    let log = run.path().join("service.log");
    let mut service = spawn(&config, &log);
    let deadline = Instant::now() + Duration::from_secs(120);
    let status = loop {
        if let Some(s) = service.try_wait().unwrap() {
            break s;
        }
        assert!(
            Instant::now() < deadline,
            "still running with a CA that did not sign the broker's certificate; log:\n{}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let err = std::fs::read_to_string(&log).unwrap();
    assert_eq!(status.code(), Some(2), "{err}");
    let last = err.lines().last().unwrap_or_default();
    assert!(
        last.starts_with("error: config key `kafka.client_properties`"),
        "{err}"
    );
    assert!(last.contains("certificate verify failed"), "{err}");
    assert!(last.contains(&broker.bootstrap()), "{err}");
}

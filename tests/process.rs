//! The real `churn-alert run` process against a real broker: it becomes
//! ready, reloads its model on SIGHUP, reports not ready when the broker
//! goes away, and stops gracefully on SIGTERM with its state on disk.

mod common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use churn_alert::store::{SledStore, Store};
use common::*;

/// The read token of the processes these tests start (customer views).
const READ_TOKEN: &str = "read-token-0123456789";

async fn http(port: u16, path: &str) -> Option<(u16, String)> {
    http_get(([127, 0, 0, 1], port).into(), path).await
}

async fn wait_for(what: &str, secs: u64, mut f: impl AsyncFnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !f().await {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn metric(body: &str, name: &str) -> f64 {
    body.lines()
        .filter(|l| l.starts_with(name) && !l.starts_with('#'))
        .map(|l| l.split_whitespace().last().unwrap().parse::<f64>().unwrap())
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    not(feature = "e2e"),
    ignore = "needs tansu: --features e2e (scripts/test.sh)"
)]
async fn service_process_is_ready_reports_broker_loss_and_stops_on_sigterm() {
    let broker = Broker::tansu();
    let dir = tempfile::tempdir().unwrap();
    let cfg = test_config(&broker, dir.path());
    broker.create_topics(&cfg).await;
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let state = dir.path().join("state");
    let model_path = dir.path().join("model.json");
    let shipped = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("models/churn-model.json");
    std::fs::copy(&shipped, &model_path).unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_churn-alert"))
        .arg("run")
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .env_remove("CHURN_ALERT_CONFIG")
        .env("CHURN_ALERT__KAFKA__BROKERS", broker.bootstrap())
        .env("CHURN_ALERT__STORE__PATH", &state)
        .env("CHURN_ALERT__ADMIN__LISTEN", format!("127.0.0.1:{port}"))
        .env("CHURN_ALERT__CLOCK__MODE", "event")
        .env("CHURN_ALERT__MODEL__PATH", &model_path)
        .env("CHURN_ALERT__MODEL__RELOAD_CHECK_SECONDS", "0")
        .env("CHURN_ALERT__ADMIN__READ_TOKEN", READ_TOKEN)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map(Proc)
        .unwrap();

    wait_for("ready", 60, async || {
        matches!(http(port, "/readyz").await, Some((200, _)))
    })
    .await;
    let msgs: Vec<Msg> = (0..30)
        .map(|i| {
            event(
                &format!("c-{}", i % 5),
                &format!("e{i}"),
                i as f64 * 0.2,
                "purchase",
                r#""amount":2"#,
            )
        })
        .collect();
    produce(&broker, &cfg.kafka.input_topic, &msgs).await;
    wait_for("30 events consumed", 60, async || {
        http(port, "/metrics")
            .await
            .is_some_and(|(_, b)| metric(&b, "churn_alert_events_consumed_total") == 30.0)
    })
    .await;
    // Consumed is not yet committed: the state on disk holds the events
    // once their outputs are published and their offsets committed.
    wait_for("30 events committed", 60, async || {
        committed_purchases(port).await == 30
    })
    .await;
    assert_eq!(http(port, "/healthz").await.unwrap().0, 200);

    // SIGHUP: the new model file is loaded (polling is off).
    let mut m: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&model_path).unwrap()).unwrap();
    m["version"] = "churn-hup".into();
    std::fs::write(&model_path, m.to_string()).unwrap();
    send_signal(child.id(), "HUP");
    wait_for("the new model in use", 30, async || {
        http(port, "/metrics").await.is_some_and(|(_, b)| {
            metric(&b, "churn_alert_model_info{version=\"churn-hup\"}") == 1.0
        })
    })
    .await;

    // The broker goes away: the service stays up and says it is not ready.
    drop(broker);
    wait_for("not ready", 60, async || {
        matches!(http(port, "/readyz").await, Some((503, _)))
    })
    .await;
    // Either reason is right while the broker is gone: which one shows
    // first depends on whether a batch was in hand (a busy machine).
    let (_, why) = http(port, "/readyz").await.unwrap();
    assert!(
        why.contains("not connected") || why.contains("cannot publish or commit"),
        "{why}"
    );
    assert_eq!(http(port, "/healthz").await.unwrap().0, 200);

    // SIGTERM: a clean exit, with every applied event in the state on disk.
    let started = Instant::now();
    send_signal(child.id(), "TERM");
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "did not stop within 30 s of SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(status.success(), "exit status {status}");
    let store = SledStore::open(&state).unwrap();
    let total: u32 = (0..PARTITIONS)
        .flat_map(|p| store.customers(p).unwrap())
        .map(|(_, s)| s.purchases)
        .sum();
    assert_eq!(total, 30);
}

/// Purchases in the committed state of customers c-0..c-4, read through
/// the admin API (which reads the store).
async fn committed_purchases(port: u16) -> u64 {
    let mut total = 0;
    for c in 0..5 {
        let path = format!("/customers/c-{c}");
        if let Some((200, body)) = common::http(
            ([127, 0, 0, 1], port).into(),
            "GET",
            &path,
            Some(READ_TOKEN),
        )
        .await
        {
            let v: serde_json::Value = serde_json::from_str(&body).unwrap();
            total += v["totals"]["purchases"].as_u64().unwrap_or(0);
        }
    }
    total
}

/// Sends a signal with the system `kill` command (no libc binding needed).
fn send_signal(pid: u32, sig: &str) {
    let ok = Command::new("kill")
        .args([&format!("-{sig}"), &pid.to_string()])
        .status()
        .unwrap();
    assert!(ok.success());
}

fn spawn_service(broker: &Broker, state: &std::path::Path, port: u16) -> Proc {
    spawn_service_with(broker, state, port, &[])
}

fn spawn_service_with(
    broker: &Broker,
    state: &std::path::Path,
    port: u16,
    env: &[(&str, &str)],
) -> Proc {
    Command::new(env!("CARGO_BIN_EXE_churn-alert"))
        .envs(env.iter().copied())
        .arg("run")
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .env_remove("CHURN_ALERT_CONFIG")
        .env("CHURN_ALERT__KAFKA__BROKERS", broker.bootstrap())
        .env("CHURN_ALERT__KAFKA__BATCH_MAX_MESSAGES", "20")
        .env("CHURN_ALERT__KAFKA__INSTANCE_ID", "graceful-1")
        .env("CHURN_ALERT__STORE__PATH", state)
        .env("CHURN_ALERT__ADMIN__LISTEN", format!("127.0.0.1:{port}"))
        .env("CHURN_ALERT__ADMIN__READ_TOKEN", READ_TOKEN)
        .env("CHURN_ALERT__CLOCK__MODE", "event")
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map(Proc)
        .unwrap()
}

/// `total` purchases of `amount` spread over customers c-0..c-(customers-1),
/// 200 a day of event time.
fn purchases(total: u64, customers: u64, amount: u32) -> Vec<Msg> {
    (0..total)
        .map(|i| {
            event(
                &format!("c-{}", i % customers),
                &format!("e{i}"),
                i as f64 / 200.0,
                "purchase",
                &format!(r#""amount":{amount}"#),
            )
        })
        .collect()
}

async fn consumed(port: u16) -> f64 {
    http(port, "/metrics").await.map_or(0.0, |(_, b)| {
        metric(&b, "churn_alert_events_consumed_total")
    })
}

/// SIGTERM while the stream is being consumed: the batch in hand is
/// committed and the restart resumes exactly there, neither re-reading
/// (no duplicates) nor skipping anything.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    not(feature = "e2e"),
    ignore = "needs tansu: --features e2e (scripts/test.sh)"
)]
async fn sigterm_mid_stream_then_restart_resumes_exactly() {
    const TOTAL: usize = 3000;
    let broker = Broker::tansu();
    let dir = tempfile::tempdir().unwrap();
    let cfg = test_config(&broker, dir.path());
    broker.create_topics(&cfg).await;
    produce(
        &broker,
        &cfg.kafka.input_topic,
        &purchases(TOTAL as u64, 50, 3),
    )
    .await;
    let state = dir.path().join("state");
    let port = free_port();
    let mut child = spawn_service(&broker, &state, port);
    wait_for("consumption under way", 60, async || {
        consumed(port).await >= 200.0
    })
    .await;
    send_signal(child.id(), "TERM");
    let started = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "no exit within 30 s"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(status.success(), "exit status {status}");
    let first_run: i64 = {
        let store = SledStore::open(&state).unwrap();
        (0..PARTITIONS)
            .map(|p| store.meta(p).unwrap().map_or(0, |m| m.next_offset))
            .sum()
    };
    assert!(
        first_run > 0 && (first_run as usize) < TOTAL,
        "the stop was not mid-stream: {first_run} of {TOTAL} committed"
    );

    let port = free_port();
    let mut child = spawn_service(&broker, &state, port);
    let rest = (TOTAL as i64 - first_run) as f64;
    wait_for("the rest consumed", 90, async || {
        consumed(port).await >= rest
    })
    .await;
    // Nothing more arrives: exactly the rest was read, none of it twice.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (_, body) = http(port, "/metrics").await.unwrap();
    assert_eq!(metric(&body, "churn_alert_events_consumed_total"), rest);
    assert_eq!(metric(&body, "churn_alert_duplicates_total"), 0.0);
    send_signal(child.id(), "TERM");
    assert!(child.wait().unwrap().success());
    let store = SledStore::open(&state).unwrap();
    let custs: Vec<_> = (0..PARTITIONS)
        .flat_map(|p| store.customers(p).unwrap())
        .collect();
    assert_eq!(custs.len(), 50);
    for (id, s) in custs {
        assert_eq!(s.purchases as usize, TOTAL / 50, "{id}");
        assert!((s.gross - 3.0 * (TOTAL / 50) as f64).abs() < 1e-9, "{id}");
    }
}

/// A stop that cannot finish, because the broker hangs mid-stream
/// (connections open, no answers: the process frozen with SIGSTOP) while a
/// batch is being published, still ends within
/// `service.stop_timeout_seconds`; the restart then goes on from the
/// stored offsets: every event applied once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    not(feature = "e2e"),
    ignore = "needs tansu: --features e2e (scripts/test.sh)"
)]
async fn a_stop_is_bounded_by_the_stop_timeout_when_the_broker_hangs() {
    const TOTAL: u64 = 3000;
    let broker = Broker::tansu();
    let dir = tempfile::tempdir().unwrap();
    let cfg = test_config(&broker, dir.path());
    broker.create_topics(&cfg).await;
    produce(&broker, &cfg.kafka.input_topic, &purchases(TOTAL, 5, 2)).await;
    let state = dir.path().join("state");
    let port = free_port();
    let env = [("CHURN_ALERT__SERVICE__STOP_TIMEOUT_SECONDS", "3")];
    let mut child = spawn_service_with(&broker, &state, port, &env);
    wait_for("consumption under way", 60, async || {
        consumed(port).await >= 200.0
    })
    .await;
    let Broker::Tansu { child: tansu, .. } = &broker else {
        unreachable!()
    };
    let tansu_pid = tansu.id();
    send_signal(tansu_pid, "STOP");
    send_signal(child.id(), "TERM");
    let started = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if started.elapsed() > Duration::from_secs(60) {
            send_signal(tansu_pid, "CONT");
            panic!("no exit within 60 s of SIGTERM with a 3 s stop timeout");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let took = started.elapsed();
    send_signal(tansu_pid, "CONT");
    eprintln!("stopped in {took:?} with {status}");
    // 0: the batch in hand finished in time; 124: the stop timeout ended
    // the stop (the usual case: the publish waits on the frozen broker).
    assert!(
        matches!(status.code(), Some(0 | 124)),
        "exit status {status}"
    );
    // The broker answers again: the restart applies the rest, each once.
    // tansu 0.6 now and then leaves a restarted static member without
    // partitions for minutes (its known bug: dead members are never
    // expired); such a start is stopped and made again, at most twice.
    let port = free_port();
    let mut child = spawn_service(&broker, &state, port);
    for _ in 0..2 {
        let ready = async || matches!(http(port, "/readyz").await, Some((200, _)));
        let deadline = Instant::now() + Duration::from_secs(60);
        let mut up = false;
        while Instant::now() < deadline {
            if ready().await {
                up = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        if up {
            break;
        }
        eprintln!("the restart was left without partitions by tansu: starting it again");
        child.kill().unwrap();
        child.wait().unwrap();
        child = spawn_service(&broker, &state, port);
    }
    wait_for("every event committed once", 90, async || {
        committed_purchases(port).await == TOTAL
    })
    .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(committed_purchases(port).await, TOTAL, "none twice");
    send_signal(child.id(), "TERM");
    assert!(child.wait().unwrap().success());
}

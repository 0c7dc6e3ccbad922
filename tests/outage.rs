//! Failing dependencies: the broker stops for more than 30 s mid-stream and
//! comes back with its data (tansu on SQLite), or the disk refuses writes.
//! The service reports not ready meanwhile, commits nothing past what it
//! could not write, then catches up with nothing lost or counted twice.

mod common;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use churn_alert::pipeline::event::Millis;
use churn_alert::pipeline::features::CustomerState;
use churn_alert::store::{Commit, PartitionMeta, Store, StoreError};
use common::*;

/// Purchases of `c-0` .. `c-19`, `n` of them from `first`, one per
/// message; returns them and adds their expected totals to `want`.
fn purchases(first: usize, n: usize, want: &mut BTreeMap<String, (u32, f64)>) -> Vec<Msg> {
    (first..first + n)
        .map(|i| {
            let c = format!("c-{}", i % 20);
            let amount = (i % 7 + 1) as f64;
            let w = want.entry(c.clone()).or_default();
            w.0 += 1;
            w.1 += amount;
            event(
                &c,
                &format!("p{i}"),
                i as f64 / 100.0,
                "purchase",
                &format!(r#""amount":{amount}"#),
            )
        })
        .collect()
}

/// Produces [`purchases`] to the input topic; returns the high watermarks.
async fn produce_purchases(
    broker: &Broker,
    cfg: &churn_alert::config::Config,
    first: usize,
    n: usize,
    want: &mut BTreeMap<String, (u32, f64)>,
) -> BTreeMap<i32, i64> {
    let msgs = purchases(first, n, want);
    produce(broker, &cfg.kafka.input_topic, &msgs).await.1
}

async fn wait_ready_again(svc: &Running) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while svc.http_get("/readyz").await.0 != 200 {
        assert!(Instant::now() < deadline, "never ready again");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Every customer's purchase count and spend equal what was produced.
fn assert_totals(store: &dyn Store, want: &BTreeMap<String, (u32, f64)>) {
    for (c, (n, sum)) in want {
        let s = customer(store, c).unwrap();
        assert_eq!(s.purchases, *n, "{c}: purchases");
        assert!(
            (s.gross - sum).abs() < 1e-9,
            "{c}: spend {} vs {sum}",
            s.gross
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    not(feature = "e2e"),
    ignore = "needs tansu: --features e2e (scripts/test.sh)"
)]
async fn broker_outage_waits_then_catches_up_exactly() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let storage = "sqlite://tansu.db";
    let broker = Broker::tansu_at(port, dir.path(), storage);
    let cfg = test_config(&broker, dir.path());
    broker.create_topics(&cfg).await;
    let svc = start(&cfg).await;
    let mut want = BTreeMap::new();

    let high = produce_purchases(&broker, &cfg, 0, 300, &mut want).await;
    svc.wait_committed(&high).await;
    assert_eq!(svc.http_get("/readyz").await.0, 200);

    // The broker goes away for 35 s.
    drop(broker);
    let down = Instant::now();
    let mut saw_unready = false;
    while down.elapsed() < Duration::from_secs(35) {
        let (status, body) = svc.http_get("/readyz").await;
        if status == 503 {
            saw_unready = true;
            assert!(body.contains("not connected"), "{body}");
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert!(saw_unready, "/readyz stayed 200 while the broker was down");
    assert_eq!(svc.metric("churn_alert_ready", "").await, 0.0);
    assert_eq!(svc.http_get("/healthz").await.0, 200);

    // Back on the same port with the same data; the rest of the stream.
    let broker = Broker::tansu_at(port, dir.path(), storage);
    let high = produce_purchases(&broker, &cfg, 300, 300, &mut want).await;
    svc.wait_committed(&high).await;
    wait_ready_again(&svc).await;
    assert_eq!(
        svc.metric("churn_alert_events_consumed_total", "").await,
        600.0
    );
    assert_totals(svc.store.as_ref(), &want);
    svc.stop().await;
}

/// A store whose writes fail while `failing` is set, like a full disk.
struct FailingDisk {
    inner: Arc<dyn Store>,
    failing: Arc<AtomicBool>,
}

impl FailingDisk {
    fn check(&self) -> Result<(), StoreError> {
        if self.failing.load(Ordering::SeqCst) {
            // ENOSPC, as a full disk answers.
            Err(StoreError::Io(std::io::Error::from_raw_os_error(28)))
        } else {
            Ok(())
        }
    }
}

impl Store for FailingDisk {
    fn meta(&self, p: i32) -> Result<Option<PartitionMeta>, StoreError> {
        self.inner.meta(p)
    }
    fn get(&self, p: i32, c: &str) -> Result<Option<CustomerState>, StoreError> {
        self.inner.get(p, c)
    }
    fn due_between(
        &self,
        p: i32,
        from: Millis,
        up_to: Millis,
        limit: usize,
    ) -> Result<Vec<(Millis, String)>, StoreError> {
        self.inner.due_between(p, from, up_to, limit)
    }
    fn commit(&self, p: i32, c: &Commit) -> Result<(), StoreError> {
        self.check()?;
        self.inner.commit(p, c)
    }
    fn flush(&self) -> Result<(), StoreError> {
        self.check()?;
        self.inner.flush()
    }
    fn partitions(&self) -> Result<Vec<i32>, StoreError> {
        self.inner.partitions()
    }
    fn drop_partition(&self, p: i32) -> Result<(), StoreError> {
        self.check()?;
        self.inner.drop_partition(p)
    }
    fn customers(&self, p: i32) -> Result<Vec<(String, CustomerState)>, StoreError> {
        self.inner.customers(p)
    }
    fn size_on_disk(&self) -> u64 {
        self.inner.size_on_disk()
    }
    fn quarantine(&self, p: i32, c: &str) -> Result<(), StoreError> {
        self.check()?;
        self.inner.quarantine(p, c)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failing_disk_waits_unready_and_skips_nothing() {
    let broker = Broker::mock();
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = test_config(&broker, dir.path());
    // A batch held this long without a commit fails the liveness check.
    cfg.service.stall_seconds = 2;
    broker.create_topics(&cfg).await;
    let mut service =
        churn_alert::service::Service::with_model(cfg.clone(), test_model(&cfg)).unwrap();
    let failing = Arc::new(AtomicBool::new(false));
    let disk = service.store.clone();
    service.store = Arc::new(FailingDisk {
        inner: disk.clone(),
        failing: failing.clone(),
    });
    let stop = tokio_util::sync::CancellationToken::new();
    let admin = service.serve_admin(stop.clone()).await.unwrap();
    let svc = Running::spawn(service, admin, stop);
    let mut want = BTreeMap::new();
    let high = produce_purchases(&broker, &cfg, 0, 100, &mut want).await;
    svc.wait_committed(&high).await;
    let offsets = |s: &dyn Store| -> Vec<i64> {
        (0..PARTITIONS)
            .map(|p| s.meta(p).unwrap().map_or(0, |m| m.next_offset))
            .collect()
    };
    let before = offsets(disk.as_ref());

    // The disk fills up: the next batch cannot be written.
    failing.store(true, Ordering::SeqCst);
    let high = produce_purchases(&broker, &cfg, 100, 100, &mut want).await;
    let deadline = Instant::now() + Duration::from_secs(30);
    while svc
        .metric(
            "churn_alert_dependency_failures_total",
            "dependency=\"store\"",
        )
        .await
        < 3.0
    {
        assert!(
            Instant::now() < deadline,
            "the store failures were not retried"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (status, why) = svc.http_get("/readyz").await;
    assert_eq!(status, 503, "{why}");
    // Held past service.stall_seconds, the loop is reported stuck, so an
    // orchestrator would restart the instance.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (status, body) = svc.http_get("/healthz").await;
        if status == 503 {
            assert!(body.contains("stalled"), "{body}");
            break;
        }
        assert!(Instant::now() < deadline, "/healthz never failed: {body}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        offsets(disk.as_ref()),
        before,
        "nothing is committed past the failure"
    );

    // Space again: it resumes by itself and applies everything exactly once.
    failing.store(false, Ordering::SeqCst);
    svc.wait_committed(&high).await;
    wait_ready_again(&svc).await;
    assert_eq!(svc.http_get("/healthz").await.0, 200, "live again");
    assert_totals(disk.as_ref(), &want);
    svc.stop().await;
}

//! Crash loop: the service process is killed with SIGKILL at random moments
//! while it consumes a stream with duplicates and late events, and restarted
//! each time. Afterwards every customer's state must equal that of one clean,
//! uninterrupted run, and every alert of the clean run must have been
//! published at least once.

mod common;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::{Duration, Instant};

use churn_alert::config::StoreEngine;
use churn_alert::offline::simulate::{SimConfig, Simulator};
use churn_alert::service::open_store;
use common::*;
use rand::{Rng, SeedableRng};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "about 3 minutes; scripts/test.sh runs it with --ignored"]
async fn sigkill_loop_leaves_state_exact_and_loses_no_alert() {
    crash_loop(StoreEngine::Sled, 12).await;
}

/// The same with the fjall engine, killed 4 times (a restart's length is
/// mostly the broker's group join, the same for either engine, so fewer
/// kills keep the suite's time).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "about 2 minutes; scripts/test.sh runs it with --ignored"]
async fn sigkill_loop_on_fjall_leaves_state_exact_and_loses_no_alert() {
    crash_loop(StoreEngine::Fjall, 4).await;
}

async fn crash_loop(engine: StoreEngine, kills: usize) {
    let broker = Broker::tansu();
    let dir = tempfile::tempdir().unwrap();
    // The killed process is configured by its environment only (default
    // policy: quiet hours, a 10% holdout); the clean run must match it.
    let mut base = process_config(&broker, dir.path());
    base.store.engine = engine;
    // The reference runs on sled whatever the engine under test, so a
    // fault of that engine cannot hide in both runs alike.
    let mut clean = named_run(&base, "clean", dir.path());
    clean.store.engine = StoreEngine::Sled;
    let mut crash = named_run(&base, "crash", dir.path());
    broker.create_topics(&clean).await;
    broker.create_topics(&crash).await;

    // The stream: simulated customers with redeliveries and late events.
    let mut sim_cfg = SimConfig::new(5000, 55, 17);
    sim_cfg.duplicate_rate = 0.02;
    sim_cfg.late_rate = 0.02;
    let mut sim = Simulator::new(sim_cfg);
    let mut events = Vec::new();
    while !sim.done() {
        events.extend(sim.next_day());
    }
    assert!(events.len() >= 200_000, "{} events", events.len());
    let customers: HashSet<&str> = events.iter().map(|e| e.customer_id.as_str()).collect();
    assert!(customers.len() >= 4900);
    let producer = one_record_batches(&broker);
    let mut high = BTreeMap::new();
    let mut chunks = events.chunks(events.len() / (kills + 1) + 1);

    // The crash loop: the real binary (a static group member, as in the
    // StatefulSet) consumes while more events arrive, and is killed at a
    // random moment after it became ready, again and again.
    crash.kafka.instance_id = Some("crash-0".into());
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(99);
    let port = free_port();
    let admin: std::net::SocketAddr = ([127, 0, 0, 1], port).into();
    let (mut progress, mut recovery) = (Vec::new(), Vec::new());
    let mut stuck = 0;
    for _ in 0..kills {
        produce_events(
            &producer,
            &base.kafka.input_topic,
            chunks.next().unwrap(),
            &mut high,
        )
        .await;
        let started = Instant::now();
        let log = dir.path().join(format!("crash-{}.log", recovery.len()));
        let mut child = spawn_service(&crash, port, &log);
        let mut attempt = Instant::now();
        while !matches!(http_get(admin, "/readyz").await, Some((200, _))) {
            assert!(
                child.try_wait().unwrap().is_none(),
                "the service exited by itself"
            );
            // tansu 0.6's group coordinator now and then leaves a restarted
            // static member without an assignment for minutes. Such a
            // process is killed again (one more SIGKILL at a random
            // moment, counted) and restarted; only a service that never
            // becomes ready fails.
            if attempt.elapsed() > Duration::from_secs(60) {
                if started.elapsed() > Duration::from_secs(240) {
                    let _ = child.kill();
                    let log = std::fs::read_to_string(&log).unwrap_or_default();
                    panic!(
                        "not ready within 240 s of restart {}; its log:\n{log}",
                        recovery.len()
                    );
                }
                stuck += 1;
                child.kill().unwrap();
                child.wait().unwrap();
                child = spawn_service(&crash, port, &log);
                attempt = Instant::now();
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        recovery.push(started.elapsed());
        tokio::time::sleep(Duration::from_millis(rng.gen_range(0..1500))).await;
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        let store = open_store(&crash).unwrap();
        progress.push(
            (0..PARTITIONS)
                .map(|p| store.meta(p).unwrap().map_or(0, |m| m.next_offset))
                .sum::<i64>(),
        );
    }
    for chunk in chunks {
        produce_events(&producer, &base.kafka.input_topic, chunk, &mut high).await;
    }
    recovery.sort();
    eprintln!(
        "restart to ready after a SIGKILL: min {:?}, median {:?}, max {:?} (over 60 s: {}; restarts left unassigned by the broker and killed again: {stuck})",
        recovery[0],
        recovery[recovery.len() / 2],
        recovery[recovery.len() - 1],
        recovery
            .iter()
            .filter(|r| **r > Duration::from_secs(60))
            .count()
    );
    eprintln!(
        "committed offsets after each kill: {progress:?} of {}",
        high.values().sum::<i64>()
    );
    assert!(
        progress.windows(2).any(|w| w[1] > w[0]),
        "work was committed between kills"
    );
    let got = run_to_end(&crash, &high, PARTITIONS).await;

    // The reference: one clean, uninterrupted run over the same stream.
    let expected = run_to_end(&clean, &high, PARTITIONS).await;

    // Every customer's state is exactly that of the clean run.
    let mismatched: Vec<&String> = expected
        .keys()
        .filter(|id| got.get(*id) != expected.get(*id))
        .collect();
    if !mismatched.is_empty() {
        for i in 0..kills {
            let log = std::fs::read_to_string(dir.path().join(format!("crash-{i}.log")))
                .unwrap_or_default();
            for l in log
                .lines()
                .filter(|l| {
                    l.contains("gap")
                        || l.contains("assigned")
                        || l.contains("WARN")
                        || l.contains("ERROR")
                })
                .take(6)
            {
                eprintln!("run {i}: {l}");
            }
        }
    }
    if let Some(id) = mismatched.first() {
        let (x, y) = (
            format!("{:?}", expected[*id]),
            format!("{:?}", got.get(*id).cloned().unwrap_or_default()),
        );
        let at = x
            .bytes()
            .zip(y.bytes())
            .position(|(a, b)| a != b)
            .unwrap_or(x.len().min(y.len()));
        let from = at.saturating_sub(120);
        eprintln!(
            "{id} differs at byte {at}:\n clean ...{}\n crash ...{}",
            &x[from..(at + 200).min(x.len())],
            &y[from..(at + 200).min(y.len())]
        );
    }
    assert_eq!(got.len(), expected.len(), "customers in state");
    assert!(
        mismatched.is_empty(),
        "{} customers differ, e.g. {:?}",
        mismatched.len(),
        &mismatched[..mismatched.len().min(5)]
    );

    // Every alert of the clean run was published at least once.
    let ids = |topic: &str| -> Vec<String> {
        read_all(&broker, topic)
            .iter()
            .map(|r| r.headers["alert-id"].clone())
            .collect()
    };
    let clean_alerts = ids(&clean.kafka.alerts_topic);
    let crash_alerts = ids(&crash.kafka.alerts_topic);
    let mut counts: HashMap<&str, usize> = HashMap::new();
    for id in &crash_alerts {
        *counts.entry(id).or_default() += 1;
    }
    let missing: Vec<&String> = clean_alerts
        .iter()
        .filter(|id| !counts.contains_key(id.as_str()))
        .collect();
    assert!(!clean_alerts.is_empty());
    assert!(
        missing.is_empty(),
        "{} alerts of the clean run never published",
        missing.len()
    );
    let unknown = counts
        .keys()
        .filter(|id| !clean_alerts.iter().any(|c| c == *id))
        .count();
    assert_eq!(unknown, 0, "alerts the clean run did not raise");
    // Holdout membership is the same on every process and restart: each
    // published copy says what the clean run said, and what the hash says.
    let groups = |topic: &str| -> Vec<(String, bool, String)> {
        read_all(&broker, topic)
            .iter()
            .map(|r| {
                let a = r.json();
                (
                    a["alert_id"].as_str().unwrap().to_string(),
                    a["holdout"].as_bool().unwrap(),
                    a["customer_id"].as_str().unwrap().to_string(),
                )
            })
            .collect()
    };
    let clean_groups: HashMap<String, bool> = groups(&clean.kafka.alerts_topic)
        .into_iter()
        .map(|(id, h, _)| (id, h))
        .collect();
    let holdout = churn_alert::pipeline::policy::Holdout::default();
    let mut held_out = 0;
    for (id, h, customer) in groups(&crash.kafka.alerts_topic) {
        assert_eq!(clean_groups[&id], h, "{id}: holdout differs between runs");
        assert_eq!(holdout.contains(&customer), h, "{customer}");
        held_out += usize::from(h);
    }
    assert!(held_out > 0, "the default 10% holdout drew nobody");
    let duplicated: usize = counts.values().map(|n| n - 1).sum();
    eprintln!(
        "crash loop ({engine:?}): {kills} SIGKILLs, {} events, {} customers, 0 state mismatches, {} alerts, {} redelivered copies",
        events.len(),
        expected.len(),
        clean_alerts.len(),
        duplicated
    );
}

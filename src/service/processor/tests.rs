//! The fold's tests: batches of messages through [`Processor`] on a
//! [`StagedStore`], as the committer and the backtest run it.

use std::collections::BTreeMap;
use std::sync::Arc;

use super::*;
use crate::kafka::changelog::RestoreError;
use crate::pipeline::error::{Classify, ErrorClass};
use crate::pipeline::features::CustomerState;
use crate::store::{BackupError, MemStore, StateBackup, Store};

const T0: Millis = 1_790_000_000_000;

/// A processor with the store it reads, as the committer holds them.
struct Fold {
    processor: Processor,
    view: StagedStore,
}

impl Fold {
    fn process(&mut self, msgs: &[InMessage], wall_now: Millis) -> Result<Batch, StoreError> {
        self.processor.process(&mut self.view, msgs, wall_now)
    }

    fn commit(&mut self, b: &Batch) -> Result<(), StoreError> {
        self.view.commit(&b.commits)
    }

    fn sweep_only(&mut self, partitions: &[i32], wall_now: Millis) -> Result<Batch, StoreError> {
        self.processor
            .sweep_only(&mut self.view, partitions, wall_now)
    }

    fn metrics(&self) -> &Metrics {
        &self.processor.metrics
    }
}

fn processor(store: Arc<dyn Store>) -> Fold {
    let cfg = crate::config::Config::default();
    let spec = cfg.feature_spec();
    let model = crate::pipeline::model::tests::silence_model(&spec, "t");
    let metrics = Metrics::new();
    Fold {
        processor: Processor::new(
            Rules {
                spec,
                model: Arc::new(model),
                policy: cfg.policy(),
            },
            cfg.validator(),
            metrics.clone(),
            ClockMode::Event,
            Outputs::new("customer-events", cfg.kafka.dead_letter_max_bytes),
        ),
        view: StagedStore::new(store, metrics),
    }
}

fn msg(partition: i32, offset: i64, cust: &str, id: &str, day: i64, ty: &str) -> InMessage {
    let extra = if ty == "purchase" {
        r#","amount":10"#
    } else {
        ""
    };
    InMessage {
        partition,
        offset,
        key: Some(cust.as_bytes().to_vec()),
        payload: Some(
            format!(
                r#"{{"event_id":"{id}","customer_id":"{cust}","type":"{ty}","occurred_at":{}{extra}}}"#,
                T0 + day * DAY_MS
            )
            .into_bytes(),
        ),
        content_type: None,
        timestamp: None,
        headers: Vec::new(),
    }
}

fn run(p: &mut Fold, msgs: &[InMessage]) -> Batch {
    let b = p.process(msgs, T0 + 1000 * DAY_MS).unwrap();
    p.commit(&b).unwrap();
    b
}

#[test]
fn redelivered_offsets_are_not_applied_twice() {
    let store: Arc<dyn Store> = Arc::new(MemStore::default());
    let mut p = processor(store.clone());
    let msgs: Vec<_> = (0..5)
        .map(|i| msg(0, i, "c", &format!("e{i}"), 0, "purchase"))
        .collect();
    run(&mut p, &msgs[..3]);
    // A restart re-reads from an older offset: only 3 and 4 are new.
    let mut p2 = processor(store.clone());
    let b = run(&mut p2, &msgs);
    assert_eq!(b.consumed, 2);
    let s = store.get(0, "c").unwrap().unwrap();
    assert_eq!(s.purchases, 5);
    assert_eq!(store.meta(0).unwrap().unwrap().next_offset, 5);
}

#[test]
fn silent_customers_are_swept_as_event_time_moves() {
    let store: Arc<dyn Store> = Arc::new(MemStore::default());
    let mut p = processor(store.clone());
    run(
        &mut p,
        &[
            msg(0, 0, "quiet", "q0", 0, "session"),
            msg(0, 1, "busy", "b0", 0, "session"),
        ],
    );
    let mut alerts = Vec::new();
    for day in 1..30 {
        let b = run(
            &mut p,
            &[msg(0, 1 + day, "busy", &format!("b{day}"), day, "session")],
        );
        alerts.extend(b.records.into_iter().filter(|r| r.kind == OutKind::Alert));
    }
    assert_eq!(alerts.len(), 1, "only the silent customer is alerted");
    let a: crate::pipeline::step::Alert = serde_json::from_slice(&alerts[0].payload).unwrap();
    assert_eq!(a.customer_id, "quiet");
    assert_eq!(a.cause, crate::pipeline::output::Cause::Silence);
    assert_eq!(alerts[0].key.as_deref(), Some(&b"quiet"[..]));
    // The due index follows the state: one entry per customer.
    assert_eq!(store.due(0, i64::MAX, 100).unwrap().len(), 2);
    assert_eq!(store.meta(0).unwrap().unwrap().customers, 2);
}

#[test]
fn outputs_do_not_depend_on_batch_boundaries() {
    let mut msgs = Vec::new();
    let mut off = 0;
    for day in 0..40 {
        for c in 0..6 {
            // c-k stops after day 5k: staggered silences, some alerts.
            if day <= 5 * c + 1 {
                msgs.push(msg(
                    0,
                    off,
                    &format!("c{c}"),
                    &format!("e{day}-{c}"),
                    day,
                    "session",
                ));
                off += 1;
            }
        }
        msgs.push(msg(0, off, "busy", &format!("b{day}"), day, "session"));
        off += 1;
        // A customer whose events always arrive three days late, and
        // sparsely: sweeps and late events interleave.
        if day % 2 == 0 && day >= 3 {
            let id = format!("l{day}");
            msgs.push(msg(0, off, "lagging", &id, day - 3, "session"));
            off += 1;
        }
    }
    // `staged`: as the service runs, each batch is processed while the
    // one before is staged and not yet written.
    let run_in = |size: usize, staged: bool| {
        let store: Arc<dyn Store> = Arc::new(MemStore::default());
        let mut p = processor(store.clone());
        // Outputs are keyed by customer: each customer's sequence counts,
        // not how different customers interleave.
        let mut out: BTreeMap<Vec<u8>, Vec<String>> = BTreeMap::new();
        let mut writing: Option<Arc<BTreeMap<i32, Commit>>> = None;
        for chunk in msgs.chunks(size) {
            let mut b = p.process(chunk, T0 + 1000 * DAY_MS).unwrap();
            if let Some(c) = writing.take() {
                StagedStore::write(&*store, &c).unwrap();
                p.view.landed();
            }
            if staged {
                let c = Arc::new(std::mem::take(&mut b.commits));
                p.view.stage(c.clone());
                writing = Some(c);
            } else {
                p.commit(&b).unwrap();
            }
            for r in b.records {
                let text = String::from_utf8(r.payload).unwrap();
                out.entry(r.key.unwrap()).or_default().push(text);
            }
        }
        if let Some(c) = writing.take() {
            StagedStore::write(&*store, &c).unwrap();
            p.view.landed();
        }
        let due = store.due(0, Millis::MAX, usize::MAX).unwrap();
        (out, store.customers(0).unwrap(), due)
    };
    let (one, s1, d1) = run_in(1, false);
    assert!(one.len() >= 5, "silent customers alerted: {}", one.len());
    assert!(!one.contains_key(&b"busy"[..]));
    for size in [1, 7, 50, msgs.len()] {
        for staged in [false, true] {
            if (size, staged) == (1, false) {
                continue;
            }
            let (other, s2, d2) = run_in(size, staged);
            assert_eq!(one, other, "batch size {size}, staged {staged}");
            assert_eq!(s1, s2, "batch size {size}, staged {staged}");
            assert_eq!(d1, d2, "batch size {size}, staged {staged}");
        }
    }
}

#[test]
fn a_large_batch_of_several_partitions_gives_what_one_partition_at_a_time_gives() {
    // Three partitions of about 500 messages: together they are
    // processed side by side, alone each is below the threshold.
    let mut msgs = Vec::new();
    for p in 0..3 {
        let mut off = 0;
        for day in 0..80 {
            for c in 0..12 {
                // Customer c goes silent after day 7c + 2: sweeps and alerts.
                if day <= 7 * c + 2 {
                    let id = format!("p{p}-c{c}");
                    msgs.push(msg(p, off, &id, &format!("e{p}-{day}-{c}"), day, "session"));
                    off += 1;
                }
            }
        }
    }
    assert!(msgs.len() >= PARALLEL_PROCESS_MESSAGES);
    let now = T0 + 1000 * DAY_MS;
    let together = processor(Arc::new(MemStore::default()))
        .process(&msgs, now)
        .unwrap();
    let mut alone = processor(Arc::new(MemStore::default()));
    let mut records = Vec::new();
    let mut commits = BTreeMap::new();
    for p in 0..3 {
        let part: Vec<InMessage> = msgs.iter().filter(|m| m.partition == p).cloned().collect();
        assert!(part.len() < PARALLEL_PROCESS_MESSAGES);
        let b = alone.process(&part, now).unwrap();
        records.extend(b.records);
        commits.extend(b.commits);
    }
    assert!(together.records.iter().any(|r| r.kind == OutKind::Alert));
    assert_eq!(together.records, records);
    // The due changes come in no particular order.
    let sorted = |mut c: BTreeMap<i32, Commit>| {
        for c in c.values_mut() {
            c.due_add.sort();
            c.due_remove.sort();
        }
        c
    };
    assert_eq!(sorted(together.commits), sorted(commits));
    assert_eq!(together.consumed, msgs.len());
}

/// The customers a batch writes in partition `p`.
fn customers_of(b: &Batch, p: i32) -> Vec<&str> {
    b.commits[&p]
        .states
        .iter()
        .map(|(id, _)| id.as_str())
        .collect()
}

#[test]
fn a_live_sweep_over_a_staged_batch_sees_its_due_changes_within_its_limit() {
    let store: Arc<dyn Store> = Arc::new(MemStore::default());
    let mut p = processor(store.clone());
    p.processor.clock = ClockMode::Wall;
    p.processor.sweep_limit = 2;
    // Six customers, each due a day after their event.
    let msgs: Vec<InMessage> = (0..6)
        .map(|i| msg(0, i, &format!("c{i}"), &format!("e{i}"), 1, "session"))
        .collect();
    let b = p.process(&msgs, T0 + DAY_MS + 1).unwrap();
    p.commit(&b).unwrap();
    // Two of them act again (their due entries move later), staged only.
    let again = [
        msg(0, 6, "c0", "f0", 3, "session"),
        msg(0, 7, "c1", "f1", 3, "session"),
    ];
    let mut b = p.process(&again, T0 + 3 * DAY_MS).unwrap();
    let c = Arc::new(std::mem::take(&mut b.commits));
    p.view.stage(c.clone());
    // A sweep before the write lands re-scores the two earliest still
    // due (not c0 and c1, whose entries moved), and knows there are more.
    let swept = p.sweep_only(&[0], T0 + 3 * DAY_MS + 1).unwrap();
    assert_eq!(customers_of(&swept, 0), ["c2", "c3"]);
    StagedStore::write(&*store, &c).unwrap();
    p.view.landed();
    p.commit(&swept).unwrap();
    let next = p.sweep_only(&[0], T0 + 3 * DAY_MS + 1).unwrap();
    assert_eq!(customers_of(&next, 0), ["c4", "c5"]);
}

/// A processor on a sled store in a temporary directory, after one
/// purchase of customer `c`.
fn one_purchase_on_sled() -> (
    tempfile::TempDir,
    Arc<crate::store::SledStore>,
    Arc<dyn Store>,
    Fold,
) {
    let dir = tempfile::tempdir().unwrap();
    let sled = Arc::new(crate::store::SledStore::open(dir.path()).unwrap());
    let store: Arc<dyn Store> = sled.clone();
    let mut p = processor(store.clone());
    run(&mut p, &[msg(0, 0, "c", "e0", 0, "purchase")]);
    (dir, sled, store, p)
}

#[test]
fn a_corrupt_stored_state_is_quarantined_and_the_partition_goes_on() {
    let (_dir, sled, store, mut p) = one_purchase_on_sled();
    sled.put_raw_state(0, "c", b"\xff not a state").unwrap();
    assert!(store.get(0, "c").is_err(), "the damage is seen on read");
    // Events for the damaged customer and another are applied: the
    // batch commits instead of retrying the same bytes forever.
    let b = run(
        &mut p,
        &[
            msg(0, 1, "c", "e1", 1, "purchase"),
            msg(0, 2, "d", "e2", 1, "purchase"),
        ],
    );
    assert_eq!(b.consumed, 2);
    assert_eq!(
        store.get(0, "c").unwrap().unwrap().purchases,
        1,
        "c starts afresh"
    );
    assert_eq!(store.get(0, "d").unwrap().unwrap().purchases, 1);
    assert_eq!(store.meta(0).unwrap().unwrap().next_offset, 3);
    // The damaged state's due-index entry went with it: one entry per
    // customer.
    let due = store.due(0, i64::MAX, 100).unwrap();
    assert_eq!(due.len(), 2, "{due:?}");
    let q = sled.quarantined().unwrap();
    assert_eq!(q.len(), 1);
    assert!(q[0].0.starts_with("0/c/"), "{}", q[0].0);
    assert_eq!(q[0].1, b"\xff not a state");
    assert_eq!(
        p.metrics().count(
            crate::telemetry::metrics::Count::StatesQuarantined,
            &[("state", "afresh")]
        ),
        1
    );
    assert_eq!(store.meta(0).unwrap().unwrap().customers, 2);
}

/// A changelog copy that cannot be read the first time it is asked.
struct FlakyCopy {
    state: CustomerState,
    calls: std::sync::Mutex<Vec<(i32, String, i64)>>,
}

impl StateBackup for FlakyCopy {
    fn committed(
        &self,
        partition: i32,
        customer: &str,
        upto: i64,
    ) -> Result<Option<CustomerState>, BackupError> {
        let mut calls = self.calls.lock().unwrap();
        calls.push((partition, customer.to_string(), upto));
        if calls.len() == 1 {
            return Err(Box::new(RestoreError::Stalled {
                partition,
                at: 0,
                high: upto,
                seconds: 60,
            }));
        }
        Ok(Some(self.state.clone()))
    }
}

#[test]
fn a_corrupt_stored_state_is_rebuilt_from_the_changelog_copy() {
    let (_dir, sled, store, mut p) = one_purchase_on_sled();
    let committed = store.get(0, "c").unwrap().unwrap();
    // As after a batch whose changelog records end at offset 7.
    let meta = store.meta(0).unwrap().unwrap();
    let c = Commit {
        meta: PartitionMeta {
            changelog_next: 7,
            ..meta
        },
        ..Default::default()
    };
    store.commit(0, &c).unwrap();
    p.view.forget(0);
    let copy = Arc::new(FlakyCopy {
        state: committed,
        calls: Default::default(),
    });
    p.view = StagedStore::new(store.clone(), p.metrics().clone()).with_backup(copy.clone());
    sled.put_raw_state(0, "c", b"\xff not a state").unwrap();
    let next = [msg(0, 1, "c", "e1", 1, "purchase")];
    // The copy cannot be read yet: the batch fails as a transient
    // store error and nothing is moved.
    let e = p.process(&next, T0 + 1000 * DAY_MS).unwrap_err();
    assert_eq!(e.class(), ErrorClass::Transient, "{e}");
    assert!(sled.quarantined().unwrap().is_empty());
    // Tried again: rebuilt from the copy. A batch that then fails before
    // its commit (dropped here) leaves the damage in place, and the
    // next try rebuilds again: no event is lost either way.
    let _failed_later = p.process(&next, T0 + 1000 * DAY_MS).unwrap();
    assert!(store.get(0, "c").is_err(), "still damaged until a commit");
    run(&mut p, &next);
    assert_eq!(store.get(0, "c").unwrap().unwrap().purchases, 2);
    assert_eq!(
        copy.calls.lock().unwrap().last(),
        Some(&(0, "c".to_string(), 7))
    );
    assert_eq!(sled.quarantined().unwrap().len(), 1);
    assert_eq!(store.meta(0).unwrap().unwrap().customers, 1);
    assert_eq!(store.due(0, i64::MAX, 100).unwrap().len(), 1);
    assert_eq!(
        p.metrics().count(
            crate::telemetry::metrics::Count::StatesQuarantined,
            &[("state", "rebuilt")]
        ),
        2,
        "each try that rebuilt counts"
    );
}

#[test]
fn a_dead_letter_carries_at_most_its_limit_and_the_original_size_and_hash() {
    let store: Arc<dyn Store> = Arc::new(MemStore::default());
    let mut p = processor(store);
    p.processor.outputs = Outputs::new("customer-events", 1024);
    let mut big = msg(0, 0, "c", "e0", 0, "purchase");
    big.payload = Some(vec![b'{'; 2 * 1024 * 1024]);
    let b = p.process(&[big], T0).unwrap();
    let dl: Vec<_> = b
        .records
        .iter()
        .filter(|r| r.kind == OutKind::DeadLetter)
        .collect();
    assert_eq!(dl.len(), 1);
    assert_eq!(dl[0].payload.len(), 1024);
    let h = |k: &str| {
        let v = &dl[0].headers.iter().find(|(n, _)| n == k).expect(k).1;
        String::from_utf8(v.clone()).unwrap()
    };
    assert_eq!(h("dlq-reason-code"), "too_large");
    assert_eq!(h("dlq-original-size"), (2 * 1024 * 1024).to_string());
    assert_eq!(h("dlq-truncated"), "true");
    assert_eq!(h("dlq-original-sha256").len(), 64);
    assert_eq!(h("dlq-source-offset"), "0");
}

#[test]
fn bad_messages_become_dead_letters_with_source_and_reason() {
    let store: Arc<dyn Store> = Arc::new(MemStore::default());
    let mut p = processor(store.clone());
    let mut bad = msg(2, 7, "c", "e1", 0, "purchase");
    bad.payload = Some(b"{not json".to_vec());
    let dup = msg(2, 9, "c", "e2", 0, "session");
    let b = run(
        &mut p,
        &[
            bad,
            msg(2, 8, "c", "e2", 0, "session"),
            dup,
            msg(2, 10, "c", "old", -30, "session"),
        ],
    );
    let dl: Vec<_> = b
        .records
        .iter()
        .filter(|r| r.kind == OutKind::DeadLetter)
        .collect();
    assert_eq!(dl.len(), 2);
    let h = |r: &OutRecord, k: &str| {
        String::from_utf8(r.headers.iter().find(|(n, _)| n == k).unwrap().1.clone()).unwrap()
    };
    assert_eq!(h(dl[0], "dlq-reason-code"), "undecodable");
    assert_eq!(h(dl[0], "dlq-source-offset"), "7");
    assert_eq!(h(dl[0], "dlq-source-partition"), "2");
    assert_eq!(dl[0].payload, b"{not json");
    assert_eq!(h(dl[1], "dlq-reason-code"), "too_late");
    assert_eq!(
        p.metrics()
            .count(crate::telemetry::metrics::Count::Duplicates, &[]),
        1
    );
    assert_eq!(store.meta(2).unwrap().unwrap().next_offset, 11);
}

#[test]
fn erasure_removes_state_and_due_entry() {
    let store: Arc<dyn Store> = Arc::new(MemStore::default());
    let mut p = processor(store.clone());
    run(&mut p, &[msg(0, 0, "c", "e0", 0, "purchase")]);
    assert_eq!(store.meta(0).unwrap().unwrap().customers, 1);
    run(&mut p, &[msg(0, 1, "c", "e1", 1, "erasure")]);
    assert_eq!(store.get(0, "c").unwrap(), None);
    assert!(store.due(0, i64::MAX, 10).unwrap().is_empty());
    assert_eq!(store.meta(0).unwrap().unwrap().customers, 0);
}

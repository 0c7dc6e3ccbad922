//! The state changelog: every committed state change is also written to a
//! compacted Kafka topic, so a partition's state can follow the partition to
//! another instance.
//!
//! Layout: changelog partition `p` holds input partition `p`'s state.
//! - A state record: key = customer id, value = the stored state encoding
//!   (version byte + postcard); a tombstone (null value) when the customer
//!   was erased.
//! - A meta record, written after each batch's state records were
//!   delivered: key = [`META_KEY`] (a single space, never a customer id),
//!   header `churn-alert-record: meta`, value = the partition's metadata
//!   (next input offset, watermark, customers) as JSON.
//!
//! A batch's state records are delivered before its meta record is sent,
//! and both before the local commit, so a meta record always closes a
//! complete batch. A restore applies records in those units: records after
//! the last meta record (a batch cut short by a crash) are left out; the
//! input from the meta record's offset is processed again and writes them
//! anew.
//!
//! On assignment ([`plan`]): local state that has seen the whole changelog
//! is reused as it is; local state that is older catches up from its own
//! changelog position; an empty disk restores from the start.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::Headers;
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use rdkafka::Message;

use crate::kafka::record::{OutKind, OutRecord};
use crate::kafka::settings::KafkaConfig;
use crate::pipeline::error::{Classify, ErrorClass};
use crate::pipeline::event::Millis;
use crate::pipeline::features::CustomerState;
use crate::store::{
    decode_state, encode_state, BackupError, Commit, PartitionMeta, StateBackup, Store, StoreError,
};
use crate::telemetry::events::{Dependency, DependencyFailed, RestoreRecordApplied};
use crate::telemetry::metrics::Metrics;

/// Key of the meta records: whitespace only, which no customer id can be.
pub const META_KEY: &[u8] = b" ";
/// Header naming the record kind (`state` or `meta`).
pub const KIND_HEADER: &str = "churn-alert-record";

/// The state records of one partition's commit.
pub fn state_records(partition: i32, commit: &Commit) -> Vec<OutRecord> {
    commit
        .states
        .iter()
        .map(|(id, s)| OutRecord {
            kind: OutKind::Changelog,
            key: Some(id.clone().into_bytes()),
            payload: s.as_ref().map(encode_state).unwrap_or_default(),
            headers: vec![(KIND_HEADER.into(), b"state".to_vec())],
            partition: Some(partition),
        })
        .collect()
}

/// The value of a meta record.
#[derive(serde::Serialize, serde::Deserialize, Debug, Clone, PartialEq)]
pub struct MetaValue {
    #[serde(flatten)]
    pub meta: PartitionMeta,
    /// The admin address of the instance that wrote it (its
    /// `admin.advertised_url`): the partition's owner, as far as the
    /// changelog knows.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<String>,
}

/// The meta record closing one partition's batch (also written, with the
/// partition's current metadata, when an instance takes a partition over,
/// so the changelog names the new owner at once).
pub fn meta_record(partition: i32, meta: &PartitionMeta, owner: Option<&str>) -> OutRecord {
    OutRecord {
        kind: OutKind::Changelog,
        key: Some(META_KEY.to_vec()),
        payload: serde_json::to_vec(&MetaValue {
            meta: PartitionMeta {
                changelog_next: 0,
                ..*meta
            },
            owner: owner.map(str::to_string),
        })
        .expect("metadata serialises"),
        headers: vec![(KIND_HEADER.into(), b"meta".to_vec())],
        partition: Some(partition),
    }
}

/// What to do with a newly assigned partition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Plan {
    /// Local state has seen the whole changelog: use it as it is.
    Reuse,
    /// Local state the changelog does not have (written before the
    /// changelog existed, or the changelog was recreated): use it, and
    /// write all of it to the changelog so other instances can restore it.
    Seed,
    /// Local state is older: apply the changelog from this offset on.
    CatchUp(i64),
    /// No usable local state: drop what is there and restore from this
    /// offset (the changelog's start).
    Full(i64),
}

/// As the restore's log line says it.
impl std::fmt::Display for Plan {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Plan::Reuse => f.write_str("local state is current"),
            Plan::Seed => f.write_str("local state seeds the changelog"),
            Plan::CatchUp(o) => write!(f, "catch up from changelog offset {o}"),
            Plan::Full(o) => write!(f, "full restore from changelog offset {o}"),
        }
    }
}

/// Decides how to bring a partition up to date, from the local metadata
/// and the changelog partition's low and high watermarks.
pub fn plan(local: Option<PartitionMeta>, low: i64, high: i64) -> Plan {
    match local {
        None => Plan::Full(low),
        // The changelog is behind what local state says it wrote, or empty
        // while local state predates it: the changelog lost it or never had it.
        Some(m) if m.changelog_next > high || (m.changelog_next == 0 && high == low) => Plan::Seed,
        Some(m) if m.changelog_next == high => Plan::Reuse,
        // Written before the changelog existed, or the changelog lost its
        // start (deleted records): local state cannot be matched to it.
        Some(m) if m.changelog_next == 0 || m.changelog_next < low => Plan::Full(low),
        Some(m) => Plan::CatchUp(m.changelog_next),
    }
}

/// Applies changelog records to the store, one batch (closed by a meta
/// record) at a time.
pub struct Applier<'a> {
    store: &'a dyn Store,
    partition: i32,
    pending: HashMap<String, Option<CustomerState>>,
    /// Into a partition that was empty when the restore began: hashes of
    /// the customers written since. A customer not among them has no
    /// stored state, so its old due time needs no read (a hash shared by
    /// two customers only costs a read).
    written: Option<std::collections::HashSet<u64>>,
    /// Records read (state and meta).
    pub records: u64,
    /// Batches applied.
    pub batches: u64,
}

impl<'a> Applier<'a> {
    pub fn new(store: &'a dyn Store, partition: i32) -> Self {
        Self {
            store,
            partition,
            pending: HashMap::new(),
            written: None,
            records: 0,
            batches: 0,
        }
    }

    /// An applier into a partition that holds nothing yet (a full
    /// restore): a customer's first record reads no state back.
    pub fn into_empty(store: &'a dyn Store, partition: i32) -> Self {
        Self {
            written: Some(Default::default()),
            ..Self::new(store, partition)
        }
    }

    /// The due time of a customer's stored state.
    fn stored_due(&mut self, id: &str) -> Result<Option<Millis>, StoreError> {
        if let Some(written) = &mut self.written {
            use std::hash::BuildHasher;
            let h = std::hash::BuildHasherDefault::<std::collections::hash_map::DefaultHasher>::default()
                .hash_one(id);
            if written.insert(h) {
                return Ok(None);
            }
        }
        Ok(self.store.get(self.partition, id)?.and_then(|s| s.next_due))
    }

    /// Takes one record; a meta record commits the batch it closes.
    pub fn push(
        &mut self,
        key: &[u8],
        value: Option<&[u8]>,
        is_meta: bool,
        offset: i64,
    ) -> Result<(), StoreError> {
        self.records += 1;
        if is_meta || key == META_KEY {
            let meta: PartitionMeta = match value.map(serde_json::from_slice::<MetaValue>) {
                Some(Ok(m)) => m.meta,
                Some(Err(e)) => {
                    return Err(StoreError::Corrupt {
                        what: format!("changelog meta record at offset {offset}"),
                        message: e.to_string(),
                    })
                }
                None => return Ok(()),
            };
            return self.commit(PartitionMeta {
                changelog_next: offset + 1,
                ..meta
            });
        }
        let id = String::from_utf8_lossy(key).into_owned();
        let state = match value {
            Some(v) if !v.is_empty() => Some(decode_state(v)?),
            _ => None,
        };
        self.pending.insert(id, state);
        Ok(())
    }

    /// State records read after the last meta record (not applied).
    pub fn unclosed(&self) -> usize {
        self.pending.len()
    }

    fn commit(&mut self, meta: PartitionMeta) -> Result<(), StoreError> {
        let mut c = Commit {
            meta,
            ..Default::default()
        };
        let pending = std::mem::take(&mut self.pending);
        for (id, new) in pending {
            let old_due = self.stored_due(&id)?;
            let new_due = new.as_ref().and_then(|s| s.next_due);
            if old_due != new_due {
                if let Some(t) = old_due {
                    c.due_remove.push((t, id.clone()));
                }
                if let Some(t) = new_due {
                    c.due_add.push((t, id.clone()));
                }
            }
            c.states.push((id, new));
        }
        c.states.sort_by(|a, b| a.0.cmp(&b.0));
        self.store.commit(self.partition, &c)?;
        self.batches += 1;
        Ok(())
    }
}

/// Reads the newest meta record of a changelog partition from its tail
/// (blocking): the partition's metadata and owner as last written.
pub fn last_meta(cfg: &KafkaConfig, partition: i32) -> Result<Option<MetaValue>, KafkaError> {
    let consumer = restore_consumer(cfg)?;
    let topic = &cfg.changelog_topic;
    let timeout = Duration::from_secs(5);
    let (low, high) = consumer.fetch_watermarks(topic, partition, timeout)?;
    // Each batch ends with its meta record; a batch cut short by a crash
    // leaves state records after it, so look back a little further.
    for back in [1, 4096] {
        let from = (high - back).max(low);
        if from >= high {
            return Ok(None);
        }
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition_offset(topic, partition, Offset::Offset(from))?;
        consumer.assign(&tpl)?;
        let deadline = Instant::now() + timeout;
        let mut found = None;
        while Instant::now() < deadline {
            match consumer.poll(Duration::from_millis(200)) {
                Some(Ok(m)) => {
                    if m.key() == Some(META_KEY) {
                        found = m.payload().and_then(|v| serde_json::from_slice(v).ok());
                    }
                    if m.offset() + 1 >= high {
                        break;
                    }
                }
                Some(Err(KafkaError::PartitionEOF(_))) => break,
                Some(Err(e)) => return Err(e),
                None => {}
            }
        }
        if found.is_some() || from == low {
            return Ok(found);
        }
    }
    Ok(None)
}

/// The changelog as the backup of committed states (see
/// [`committed_state`]).
pub struct ChangelogBackup(pub KafkaConfig);

impl StateBackup for ChangelogBackup {
    fn committed(
        &self,
        partition: i32,
        customer: &str,
        upto: i64,
    ) -> Result<Option<CustomerState>, BackupError> {
        committed_state(&self.0, partition, customer, upto).map_err(|e| Box::new(e) as BackupError)
    }
}

/// One customer's state as the changelog holds it for the partition's
/// records before offset `upto` (blocking): the value of its newest record
/// there. With `upto` a local commit's `changelog_next` (the offset after
/// the meta record that closed its batch) this is the state of that commit,
/// read again when the stored copy is corrupt; it needs no meta record of
/// its own, which compaction may have removed (all meta records share one
/// key). `None` when the changelog has no such record, only a tombstone,
/// or ends before `upto` (it was recreated or lost records: no record for
/// a few seconds after the broker said it ends); a record that does not
/// decode is an error of class Corrupt.
pub fn committed_state(
    cfg: &KafkaConfig,
    partition: i32,
    customer: &str,
    upto: i64,
) -> Result<Option<CustomerState>, RestoreError> {
    let topic = &cfg.changelog_topic;
    let consumer = restore_consumer(cfg)?;
    let (low, _) = consumer.fetch_watermarks(topic, partition, Duration::from_secs(10))?;
    if upto <= low {
        return Ok(None);
    }
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(topic, partition, Offset::Offset(low))?;
    consumer.assign(&tpl)?;
    let mut newest: Option<Vec<u8>> = None;
    let mut next = low;
    let mut last_progress = Instant::now();
    // Since when the broker has said the partition ends (some brokers,
    // tansu 0.6 among them, say so before their last records).
    let mut ended: Option<Instant> = None;
    const STALL: Duration = Duration::from_secs(60);
    const END_GRACE: Duration = Duration::from_secs(5);
    while next < upto {
        match consumer.poll(Duration::from_millis(500)) {
            Some(Ok(m)) => {
                next = m.offset() + 1;
                last_progress = Instant::now();
                ended = None;
                if m.offset() >= upto {
                    break;
                }
                if !is_meta(&m) && m.key() == Some(customer.as_bytes()) {
                    newest = Some(m.payload().unwrap_or_default().to_vec());
                }
            }
            Some(Err(KafkaError::PartitionEOF(_))) => {
                ended.get_or_insert_with(Instant::now);
            }
            Some(Err(e)) => return Err(e.into()),
            None => {}
        }
        if ended.is_some_and(|t| t.elapsed() > END_GRACE) {
            // It ends before `upto`: recreated, or it lost records.
            return Ok(None);
        }
        if last_progress.elapsed() > STALL {
            return Err(RestoreError::Stalled {
                partition,
                at: next,
                high: upto,
                seconds: STALL.as_secs(),
            });
        }
    }
    Ok(match newest {
        Some(v) if !v.is_empty() => Some(decode_state(&v)?),
        _ => None,
    })
}

/// Whether a changelog record is a meta record (by its header or key).
fn is_meta(m: &impl Message) -> bool {
    m.key() == Some(META_KEY)
        || m.headers()
            .and_then(|h| h.iter().find(|h| h.key == KIND_HEADER))
            .is_some_and(|h| h.value == Some(b"meta".as_slice()))
}

/// Why a restore did not finish.
#[derive(Debug, thiserror::Error)]
pub enum RestoreError {
    #[error("changelog: {0}")]
    Kafka(#[from] KafkaError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(
        "changelog partition {partition}: no progress for {seconds} s at offset {at} of {high}"
    )]
    Stalled {
        partition: i32,
        at: i64,
        high: i64,
        seconds: u64,
    },
    #[error("restore cancelled (partition revoked)")]
    Cancelled,
    #[error("restore task failed: {0}")]
    Task(String),
}

impl Classify for RestoreError {
    fn class(&self) -> ErrorClass {
        match self {
            Self::Kafka(e) => e.class(),
            Self::Store(e) => e.class(),
            Self::Stalled { .. } | Self::Cancelled => ErrorClass::Transient,
            // A panic in the restore code: a retry runs the same code.
            Self::Task(_) => ErrorClass::Corrupt,
        }
    }
}

/// How a partition was brought up to date.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Restored {
    pub plan: Plan,
    /// Changelog records read.
    pub records: u64,
    /// The partition's metadata afterwards (`None`: no state anywhere).
    pub meta: Option<PartitionMeta>,
    pub seconds: f64,
}

fn restore_consumer(cfg: &KafkaConfig) -> Result<BaseConsumer, KafkaError> {
    crate::kafka::client::hand_assigned_consumer(cfg, "restore")
}

/// Brings one partition's local state up to date with the changelog
/// (blocking; run it on a blocking thread). `cancel` stops it between
/// records, leaving whole batches applied.
pub fn restore(
    cfg: &KafkaConfig,
    partition: i32,
    store: &dyn Store,
    metrics: &Metrics,
    cancel: &AtomicBool,
) -> Result<Restored, RestoreError> {
    let started = Instant::now();
    let topic = &cfg.changelog_topic;
    let consumer = restore_consumer(cfg)?;
    let (low, high) = consumer.fetch_watermarks(topic, partition, Duration::from_secs(10))?;
    let local = store.meta(partition)?;
    let mut plan = plan(local, low, high);
    if matches!(plan, Plan::Full(_)) && local.is_some() && last_meta(cfg, partition)?.is_none() {
        // The changelog holds no complete batch (e.g. writing local state
        // to it was cut short): local state is all there is.
        plan = Plan::Seed;
    }
    let from = match plan {
        Plan::Reuse | Plan::Seed => {
            return Ok(Restored {
                plan,
                records: 0,
                meta: local,
                seconds: started.elapsed().as_secs_f64(),
            })
        }
        Plan::CatchUp(from) => from,
        Plan::Full(from) => {
            if local.is_some() {
                store.drop_partition(partition)?;
            }
            from
        }
    };
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(topic, partition, Offset::Offset(from))?;
    consumer.assign(&tpl)?;
    let mut applier = match plan {
        Plan::Full(_) => Applier::into_empty(store, partition),
        _ => Applier::new(store, partition),
    };
    let mut next = from;
    let mut last_progress = Instant::now();
    const STALL: Duration = Duration::from_secs(60);
    // Read to the end the broker reports when it gets there (some brokers,
    // tansu 0.6 among them, report a high watermark short of the last
    // record batch's end), and at least to the watermark read above.
    let mut reading = from < high;
    while reading {
        if cancel.load(Ordering::Relaxed) {
            return Err(RestoreError::Cancelled);
        }
        match consumer.poll(Duration::from_millis(500)) {
            Some(Ok(m)) => {
                applier.push(
                    m.key().unwrap_or_default(),
                    m.payload(),
                    is_meta(&m),
                    m.offset(),
                )?;
                metrics.emit(RestoreRecordApplied);
                next = m.offset() + 1;
                last_progress = Instant::now();
            }
            Some(Err(KafkaError::PartitionEOF(_))) if next >= high => reading = false,
            Some(Err(KafkaError::PartitionEOF(_))) => {}
            Some(Err(e)) => {
                metrics.emit(DependencyFailed {
                    dependency: Dependency::Changelog,
                    error: &e,
                    partition: Some(partition),
                    action: "retrying the read",
                });
            }
            None => {}
        }
        if last_progress.elapsed() > STALL {
            return Err(RestoreError::Stalled {
                partition,
                at: next,
                high,
                seconds: STALL.as_secs(),
            });
        }
    }
    if applier.unclosed() > 0 {
        tracing::info!(
            partition,
            records = applier.unclosed(),
            "changelog ends with a batch that was never committed; its input is processed again"
        );
    }
    Ok(Restored {
        plan,
        records: applier.records,
        meta: store.meta(partition)?,
        seconds: started.elapsed().as_secs_f64(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::MemStore;

    fn meta(next_offset: i64, customers: u64, changelog_next: i64) -> PartitionMeta {
        PartitionMeta {
            next_offset,
            watermark: 100,
            customers,
            changelog_next,
        }
    }

    #[test]
    fn plan_reuses_current_state_and_catches_up_older() {
        assert_eq!(plan(None, 0, 0), Plan::Full(0));
        assert_eq!(plan(None, 0, 50), Plan::Full(0));
        assert_eq!(plan(Some(meta(9, 1, 50)), 0, 50), Plan::Reuse);
        assert_eq!(plan(Some(meta(9, 1, 30)), 0, 50), Plan::CatchUp(30));
        // Local ahead of a changelog that was recreated, or local state
        // from before the changelog existed: keep it and write it out.
        assert_eq!(plan(Some(meta(9, 1, 80)), 0, 50), Plan::Seed);
        assert_eq!(plan(Some(meta(9, 1, 0)), 0, 0), Plan::Seed);
        assert_eq!(plan(Some(meta(9, 1, 0)), 7, 7), Plan::Seed);
        // From before the changelog while the changelog has other data, or
        // its start was deleted: the changelog wins.
        assert_eq!(plan(Some(meta(9, 1, 0)), 0, 50), Plan::Full(0));
        assert_eq!(plan(Some(meta(9, 1, 10)), 20, 50), Plan::Full(20));
    }

    fn state(purchases: u32, due: i64) -> CustomerState {
        CustomerState {
            purchases,
            next_due: Some(due),
            ..Default::default()
        }
    }

    /// Writes commits as the service would and returns the changelog.
    fn changelog(commits: &[Commit]) -> Vec<OutRecord> {
        let mut log = Vec::new();
        for c in commits {
            log.extend(state_records(0, c));
            log.push(meta_record(0, &c.meta, Some("http://a:1")));
        }
        log
    }

    fn replay(store: &dyn Store, log: &[OutRecord], from: usize) -> usize {
        replay_with(Applier::new(store, 0), log, from)
    }

    fn replay_with(mut a: Applier<'_>, log: &[OutRecord], from: usize) -> usize {
        for (off, r) in log.iter().enumerate().skip(from) {
            let is_meta = r
                .headers
                .iter()
                .any(|(k, v)| k == KIND_HEADER && v == b"meta");
            let value = (!r.payload.is_empty()).then_some(r.payload.as_slice());
            a.push(r.key.as_deref().unwrap(), value, is_meta, off as i64)
                .unwrap();
        }
        a.unclosed()
    }

    #[test]
    fn restore_rebuilds_state_due_index_and_offsets_in_whole_batches() {
        let c1 = Commit {
            states: vec![
                ("a".into(), Some(state(1, 50))),
                ("b".into(), Some(state(2, 60))),
            ],
            meta: meta(10, 2, 0),
            ..Default::default()
        };
        let c2 = Commit {
            states: vec![("a".into(), Some(state(3, 90))), ("b".into(), None)],
            meta: meta(20, 1, 0),
            ..Default::default()
        };
        // A batch cut short by a crash: state records, no meta record.
        let cut = Commit {
            states: vec![("a".into(), Some(state(99, 1)))],
            ..Default::default()
        };
        let mut log = changelog(&[c1, c2]);
        log.extend(state_records(0, &cut));
        let store = MemStore::default();
        assert_eq!(replay(&store, &log, 0), 1, "the cut batch is left out");
        assert_eq!(store.get(0, "a").unwrap().unwrap().purchases, 3);
        assert_eq!(store.get(0, "b").unwrap(), None, "tombstone applied");
        assert_eq!(
            store.due(0, i64::MAX, 10).unwrap(),
            vec![(90, "a".to_string())]
        );
        let m = store.meta(0).unwrap().unwrap();
        assert_eq!((m.next_offset, m.customers, m.changelog_next), (20, 1, 6));
        // A full restore, which reads state back only for a customer met
        // again, gives the same.
        let fresh = MemStore::default();
        assert_eq!(replay_with(Applier::into_empty(&fresh, 0), &log, 0), 1);
        assert_eq!(fresh.customers(0).unwrap(), store.customers(0).unwrap());
        assert_eq!(
            fresh.due(0, i64::MAX, 10).unwrap(),
            store.due(0, i64::MAX, 10).unwrap()
        );
        assert_eq!(fresh.meta(0).unwrap(), store.meta(0).unwrap());

        // Processing resumes at input offset 20: the cut batch's input is
        // processed again and rewrites "a", then a new customer arrives.
        // Catching up from the local position gives what a full restore
        // gives.
        let c3 = Commit {
            states: vec![
                ("a".into(), Some(state(4, 95))),
                ("c".into(), Some(state(1, 70))),
            ],
            meta: meta(30, 2, 0),
            ..Default::default()
        };
        log.extend(changelog(&[c3]));
        let at = m.changelog_next as usize;
        assert_eq!(plan(Some(m), 0, log.len() as i64), Plan::CatchUp(at as i64));
        assert_eq!(replay(&store, &log, at), 0);
        let full = MemStore::default();
        replay(&full, &log, 0);
        assert_eq!(store.customers(0).unwrap(), full.customers(0).unwrap());
        assert_eq!(
            store.due(0, i64::MAX, 10).unwrap(),
            full.due(0, i64::MAX, 10).unwrap()
        );
        assert_eq!(store.meta(0).unwrap(), full.meta(0).unwrap());
        assert_eq!(full.get(0, "a").unwrap().unwrap().purchases, 4);
        assert_eq!(full.meta(0).unwrap().unwrap().next_offset, 30);
    }
}

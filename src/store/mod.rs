//! Where customer state lives: a trait with a sled and an in-memory
//! implementation, so the same scenarios run against both.
//!
//! State is owned per input partition. Each partition has its own keyspace
//! holding its customers, its due-time index and its metadata (the next
//! offset to consume and the event-time watermark). A [`Commit`] for one
//! partition is applied atomically: the offset a partition has consumed is
//! always stored together with the state it produced.

mod backup;
mod fjall_store;
mod keys;
mod mem;
mod sled_store;

pub use backup::{BackupError, StateBackup};
pub use fjall_store::FjallStore;
pub use mem::MemStore;
pub use sled_store::SledStore;

use serde::{Deserialize, Serialize};

use crate::pipeline::error::{Classify, ErrorClass};
use crate::pipeline::event::Millis;
use crate::pipeline::features::CustomerState;

/// Storage failures, each with its class: whether a retry can help.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The sled engine failed (`context`: what was being done).
    #[error("state store: {context}: {source}")]
    Sled {
        context: String,
        #[source]
        source: sled::Error,
    },
    /// The fjall engine failed (`context`: what was being done).
    #[error("state store: {context}: {source}")]
    Fjall {
        context: String,
        #[source]
        source: fjall::Error,
    },
    /// The state directory belongs to the other on-disk engine.
    #[error("state directory {path} holds a {found} database, not {wanted}: set store.engine = \"{found}\", or point store.path at an empty directory (its partitions then restore from the changelog)")]
    OtherEngine {
        path: String,
        found: &'static str,
        wanted: &'static str,
    },
    /// An I/O failure outside the engine (or injected by a test).
    #[error("state store I/O failed: {0}")]
    Io(#[from] std::io::Error),
    #[error("stored state is corrupt ({what}): {message}")]
    Corrupt { what: String, message: String },
    /// The second copy of a corrupt state (the changelog) cannot be read
    /// for now.
    #[error("customer {customer}'s stored state is corrupt and its changelog copy cannot be read yet: {message}")]
    BackupUnavailable { customer: String, message: String },
}

impl Classify for StoreError {
    fn class(&self) -> ErrorClass {
        match self {
            Self::Sled {
                source: sled::Error::Corruption { .. } | sled::Error::ReportableBug(_),
                ..
            }
            | Self::Corrupt { .. } => ErrorClass::Corrupt,
            Self::OtherEngine { .. } => ErrorClass::Config,
            Self::Sled {
                source: sled::Error::Unsupported(_),
                ..
            } => ErrorClass::Config,
            // A failed write or fsync poisons fjall: it takes no more
            // writes until reopened, which recovers from its journal. No
            // retry helps, so the service stops and its restart reopens.
            Self::Fjall {
                source: fjall::Error::Poisoned,
                ..
            } => ErrorClass::Rejected,
            // What fjall cannot read back is damaged.
            Self::Fjall {
                source:
                    fjall::Error::Unrecoverable
                    | fjall::Error::JournalRecovery(_)
                    | fjall::Error::InvalidVersion(_)
                    | fjall::Error::Decompress(_)
                    | fjall::Error::InvalidTrailer
                    | fjall::Error::InvalidTag(_),
                ..
            } => ErrorClass::Corrupt,
            Self::Sled { .. }
            | Self::Fjall { .. }
            | Self::Io(_)
            | Self::BackupUnavailable { .. } => ErrorClass::Transient,
        }
    }
}

/// Per-partition metadata, written with every commit of that partition.
#[derive(Serialize, Deserialize, Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PartitionMeta {
    /// The next input offset to consume (everything before is in the state).
    pub next_offset: i64,
    /// Largest event time applied in this partition.
    pub watermark: Millis,
    /// Customers held in this partition.
    pub customers: u64,
    /// The changelog offset after the last record this state reflects
    /// (0: nothing written to the changelog yet). A changelog whose end is
    /// beyond it holds newer state for this partition.
    pub changelog_next: i64,
}

/// Encodes partition metadata for storage: its four numbers as 8
/// little-endian bytes each (the layout bincode gave it before).
pub fn encode_meta(m: &PartitionMeta) -> Vec<u8> {
    [
        m.next_offset,
        m.watermark,
        m.customers as i64,
        m.changelog_next,
    ]
    .iter()
    .flat_map(|n| n.to_le_bytes())
    .collect()
}

/// Decodes stored partition metadata; metadata written before the
/// changelog existed (three numbers) reads with `changelog_next` 0.
pub fn decode_meta(bytes: &[u8], partition: i32) -> Result<PartitionMeta, StoreError> {
    if bytes.len() != 24 && bytes.len() != 32 {
        return Err(StoreError::Corrupt {
            what: format!("partition {partition} metadata"),
            message: format!("{} bytes, not 24 or 32", bytes.len()),
        });
    }
    let n = |i: usize| {
        bytes
            .get(i * 8..i * 8 + 8)
            .map_or(0, |b| i64::from_le_bytes(b.try_into().expect("8 bytes")))
    };
    Ok(PartitionMeta {
        next_offset: n(0),
        watermark: n(1),
        customers: n(2) as u64,
        changelog_next: n(3),
    })
}

/// Everything one batch changed in one partition, applied atomically.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Commit {
    /// New state per customer; `None` deletes the customer.
    pub states: Vec<(String, Option<CustomerState>)>,
    /// Due-index entries to remove.
    pub due_remove: Vec<(Millis, String)>,
    /// Due-index entries to add.
    pub due_add: Vec<(Millis, String)>,
    /// The partition's metadata after the batch.
    pub meta: PartitionMeta,
}

/// Customer state storage, partitioned by input partition.
pub trait Store: Send + Sync + 'static {
    /// The partition's metadata, if it was ever committed.
    fn meta(&self, partition: i32) -> Result<Option<PartitionMeta>, StoreError>;
    /// One customer's state.
    fn get(&self, partition: i32, customer: &str) -> Result<Option<CustomerState>, StoreError>;
    /// Due-index entries with a due time at or before `up_to`, earliest first.
    fn due(
        &self,
        partition: i32,
        up_to: Millis,
        limit: usize,
    ) -> Result<Vec<(Millis, String)>, StoreError> {
        self.due_between(partition, Millis::MIN, up_to, limit)
    }
    /// Due-index entries with a due time from `from` to `up_to` (both
    /// included), earliest first.
    fn due_between(
        &self,
        partition: i32,
        from: Millis,
        up_to: Millis,
        limit: usize,
    ) -> Result<Vec<(Millis, String)>, StoreError>;
    /// Applies a commit atomically.
    fn commit(&self, partition: i32, commit: &Commit) -> Result<(), StoreError>;
    /// Makes every commit so far durable.
    fn flush(&self) -> Result<(), StoreError>;
    /// Partitions that have state.
    fn partitions(&self) -> Result<Vec<i32>, StoreError>;
    /// Removes everything held for a partition (state, due index, metadata).
    fn drop_partition(&self, partition: i32) -> Result<(), StoreError>;
    /// Every customer of a partition (for inspection and tests).
    fn customers(&self, partition: i32) -> Result<Vec<(String, CustomerState)>, StoreError>;
    /// Bytes the store occupies on disk (0 in memory).
    fn size_on_disk(&self) -> u64;
    /// Copies a customer's stored state aside (it could not be decoded),
    /// for inspection, and removes the customer's due-index entries (their
    /// times were in the state). The stored bytes stay until the next
    /// commit of the customer replaces them.
    fn quarantine(&self, partition: i32, customer: &str) -> Result<(), StoreError>;
}

// Compile-time check that the trait stays usable as `dyn Store`.
const _: Option<&dyn Store> = None;

/// State encoding version, the first byte of every stored state and
/// changelog record. Version 4 is postcard (varint integers, one-byte
/// lengths). Versions 1-3 were bincode 1 and are still read: version 1
/// lacked the trailing `returned_at` and `contact` fields; version 2 the
/// engagement-day fields (`first_engaged`, `engaged_days`, `day_bits`,
/// `day_anchor`), `plan_value_first` and `engagement_events`, which a
/// migrated state starts empty. Version 5 added the trailing `experiments`
/// field; a version 4 state is read with it empty.
const STATE_VERSION: u8 = 5;

type V3Tail = (
    Option<Millis>,
    u32,
    u128,
    i64,
    Option<crate::pipeline::features::Latest<f64>>,
    f64,
);

/// The fields version 2 lacked, as their defaults.
fn v3_tail() -> V3Tail {
    (None, 0, 0, 0, None, 0.0)
}

/// A version 3 state (bincode 1), read with the later `experiments` empty.
fn from_v3(mut v3: Vec<u8>) -> Result<CustomerState, StoreError> {
    bincode::serialize_into(&mut v3, &crate::pipeline::experiment::Enrolments::default())
        .expect("serialising to a Vec cannot fail");
    bincode::deserialize(&v3).map_err(corrupt_state)
}

/// Encodes a customer state for storage (version byte + postcard).
pub fn encode_state(s: &CustomerState) -> Vec<u8> {
    let mut out = Vec::with_capacity(512);
    out.push(STATE_VERSION);
    postcard::to_extend(s, out).expect("serialising to a Vec cannot fail")
}

fn corrupt_state(message: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt {
        what: "customer state".into(),
        message: message.to_string(),
    }
}

/// Decodes a stored customer state, of any version.
pub fn decode_state(bytes: &[u8]) -> Result<CustomerState, StoreError> {
    match bytes.split_first() {
        Some((&STATE_VERSION, rest)) => match postcard::take_from_bytes(rest) {
            Ok((s, [])) => Ok(s),
            Ok((_, extra)) => Err(corrupt_state(format!(
                "{} bytes after the end of the state",
                extra.len()
            ))),
            Err(e) => Err(corrupt_state(e)),
        },
        // postcard writes fields back to back too: a version 4 state
        // followed by an empty `experiments` is a version 5 state.
        Some((4, rest)) => {
            let mut v5 = rest.to_vec();
            v5.extend(
                postcard::to_allocvec(&crate::pipeline::experiment::Enrolments::default())
                    .expect("serialising to a Vec cannot fail"),
            );
            match postcard::take_from_bytes(&v5) {
                Ok((s, [])) => Ok(s),
                Ok((_, extra)) => Err(corrupt_state(format!(
                    "{} bytes after the end of the state",
                    extra.len()
                ))),
                Err(e) => Err(corrupt_state(e)),
            }
        }
        Some((3, rest)) => from_v3(rest.to_vec()),
        // bincode writes fields back to back, so an older state followed by
        // the later fields' defaults is a version 3 state.
        Some((2, rest)) => {
            let mut v3 = rest.to_vec();
            bincode::serialize_into(&mut v3, &v3_tail()).expect("serialising to a Vec cannot fail");
            from_v3(v3)
        }
        Some((1, rest)) => {
            let mut v3 = rest.to_vec();
            bincode::serialize_into(
                &mut v3,
                &(
                    None::<crate::pipeline::event::Millis>,
                    crate::pipeline::features::ContactState::default(),
                    v3_tail(),
                ),
            )
            .expect("serialising to a Vec cannot fail");
            from_v3(v3)
        }
        Some((v, _)) => Err(corrupt_state(format!("unknown state version {v}"))),
        None => Err(corrupt_state("empty value")),
    }
}

/// The version 3 encoding (bincode 1), for tests that migrate old states.
#[cfg(test)]
pub(crate) fn encode_state_v3(s: &CustomerState) -> Vec<u8> {
    assert_eq!(
        s.experiments,
        Default::default(),
        "version 3 had no experiments"
    );
    let mut out = vec![3];
    bincode::serialize_into(&mut out, s).expect("serialising to a Vec cannot fail");
    let tail = bincode::serialize(&s.experiments).expect("serialising to a Vec cannot fail");
    out.truncate(out.len() - tail.len());
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state(purchases: u32) -> CustomerState {
        CustomerState {
            purchases,
            first_seen: 5,
            next_due: Some(100),
            ..Default::default()
        }
    }

    /// The same scenario for every implementation.
    fn scenario(store: &dyn Store) {
        assert_eq!(store.meta(0).unwrap(), None);
        let c = Commit {
            states: vec![("a".into(), Some(state(1))), ("b".into(), Some(state(2)))],
            due_add: vec![(100, "a".into()), (50, "b".into())],
            due_remove: vec![],
            meta: PartitionMeta {
                next_offset: 10,
                watermark: 7,
                customers: 2,
                changelog_next: 4,
            },
        };
        store.commit(3, &c).unwrap();
        assert_eq!(store.meta(3).unwrap().unwrap().next_offset, 10);
        assert_eq!(store.get(3, "b").unwrap().unwrap().purchases, 2);
        assert_eq!(store.get(2, "b").unwrap(), None, "partitions are separate");
        assert_eq!(store.due(3, 60, 10).unwrap(), vec![(50, "b".to_string())]);
        assert_eq!(store.due(3, 1000, 10).unwrap().len(), 2);
        assert_eq!(store.due(3, 1000, 1).unwrap().len(), 1);
        assert_eq!(
            store.due_between(3, 51, 1000, 10).unwrap(),
            vec![(100, "a".to_string())]
        );
        assert!(store.due_between(3, 51, 99, 10).unwrap().is_empty());
        let c2 = Commit {
            states: vec![("b".into(), None)],
            due_remove: vec![(50, "b".into())],
            due_add: vec![],
            meta: PartitionMeta {
                next_offset: 11,
                watermark: 8,
                customers: 1,
                changelog_next: 6,
            },
        };
        store.commit(3, &c2).unwrap();
        store.flush().unwrap();
        assert_eq!(store.meta(3).unwrap().unwrap(), c2.meta);
        assert_eq!(store.get(3, "b").unwrap(), None);
        assert_eq!(
            store.due(3, 1000, 10).unwrap(),
            vec![(100, "a".to_string())]
        );
        assert_eq!(store.partitions().unwrap(), vec![3]);
        let all = store.customers(3).unwrap();
        assert_eq!(all.len(), 1);
        assert_eq!(all[0].0, "a");
        // A second partition, then one dropped: nothing of it is left.
        store.commit(5, &c).unwrap();
        store.drop_partition(3).unwrap();
        assert_eq!(store.partitions().unwrap(), vec![5]);
        assert_eq!(store.meta(3).unwrap(), None);
        assert_eq!(store.get(3, "a").unwrap(), None);
        assert!(store.due(3, i64::MAX, 10).unwrap().is_empty());
        assert_eq!(store.get(5, "a").unwrap().unwrap().purchases, 1);
    }

    #[test]
    fn metadata_from_before_the_changelog_still_loads() {
        let old = bincode::serialize(&(11i64, 8i64, 1u64)).unwrap();
        let m = decode_meta(&old, 0).unwrap();
        assert_eq!(
            (m.next_offset, m.watermark, m.customers, m.changelog_next),
            (11, 8, 1, 0)
        );
        let new = PartitionMeta {
            changelog_next: 9,
            watermark: -3,
            ..m
        };
        assert_eq!(decode_meta(&encode_meta(&new), 0).unwrap(), new);
        // The layout is the one bincode wrote, so stores from before read.
        assert_eq!(encode_meta(&new), bincode::serialize(&new).unwrap());
        let err = decode_meta(&[1, 2, 3], 4).unwrap_err().to_string();
        assert!(err.contains("partition 4 metadata"), "{err}");
    }

    #[test]
    fn memory_store_scenario() {
        scenario(&MemStore::default());
    }

    #[test]
    fn sled_store_scenario_and_restart() {
        let dir = tempfile::tempdir().unwrap();
        {
            let s = SledStore::open(dir.path()).unwrap();
            scenario(&s);
        }
        let s = SledStore::open(dir.path()).unwrap();
        assert_eq!(s.meta(5).unwrap().unwrap().next_offset, 10);
        assert_eq!(s.get(5, "a").unwrap().unwrap().purchases, 1);
        assert_eq!(s.meta(3).unwrap(), None, "dropped partitions stay dropped");
    }

    #[test]
    fn fjall_store_scenario_and_restart() {
        let dir = tempfile::tempdir().unwrap();
        {
            let s = FjallStore::open_with(dir.path(), Some(5)).unwrap();
            scenario(&s);
        }
        let s = FjallStore::open(dir.path()).unwrap();
        assert_eq!(s.meta(5).unwrap().unwrap().next_offset, 10);
        assert_eq!(s.get(5, "a").unwrap().unwrap().purchases, 1);
        assert_eq!(s.meta(3).unwrap(), None, "dropped partitions stay dropped");
        assert_eq!(s.partitions().unwrap(), vec![5]);
        // A quarantined state is kept aside and its due entries go.
        s.quarantine(5, "a").unwrap();
        assert_eq!(s.quarantined().unwrap().len(), 1);
        assert_eq!(s.due(5, i64::MAX, 10).unwrap(), vec![(50, "b".into())]);
    }

    #[test]
    fn one_engine_refuses_the_others_directory() {
        let dir = tempfile::tempdir().unwrap();
        let sled_dir = dir.path().join("sled");
        scenario(&SledStore::open(&sled_dir).unwrap());
        let err = FjallStore::open(&sled_dir).err().expect("refused");
        assert!(err.to_string().contains("holds a sled database"), "{err}");
        assert_eq!(err.class(), ErrorClass::Config);
        let fjall_dir = dir.path().join("fjall");
        scenario(&FjallStore::open(&fjall_dir).unwrap());
        let err = SledStore::open(&fjall_dir).err().expect("refused");
        assert!(err.to_string().contains("holds a fjall database"), "{err}");
    }

    #[test]
    fn state_encoding_round_trips_and_refuses_unknown_versions() {
        let s = state(3);
        assert_eq!(decode_state(&encode_state(&s)).unwrap(), s);
        let mut bad = encode_state(&s);
        bad[0] = 9;
        assert!(decode_state(&bad).is_err());
    }

    /// A state with every field set, hashes and times at the extremes.
    fn busy_state() -> CustomerState {
        use crate::pipeline::contact::{Awaiting, PastAlert};
        use crate::pipeline::features::{Latest, SubStatus};
        use crate::pipeline::output::{Group, Retention};
        let at = 1_764_000_000_000;
        fn latest<T>(value: T) -> Latest<T> {
            Latest {
                value,
                at: 1_764_000_000_000,
                tie: u64::MAX - 7,
            }
        }
        let mut s = CustomerState {
            first_seen: i64::MIN,
            last_seen: at,
            last_engaged: Some(at - 5),
            last_purchase: Some(-1),
            purchases: u32::MAX,
            refunds: 2,
            gross: 1234.5678,
            refunded: f64::MIN_POSITIVE,
            tickets: 3,
            complaints: 1,
            payment_failures: 4,
            rate_anchor: at,
            rates: vec![0.0, 1.0 / 3.0, 7.25e-300, f64::MAX],
            activity_rates: vec![("login".into(), vec![0.5, 0.0])],
            subscription: Some(latest(SubStatus::Cancelled)),
            plan_value: Some(latest(19.99)),
            nps: Some(latest(9)),
            consent: Some(latest(true)),
            unsubscribed: Some(latest(false)),
            seen: vec![(at, 0), (at, u64::MAX), (i64::MAX, 0x0123_4567_89ab_cdef)],
            next_due: Some(i64::MAX),
            returned_at: Some(at - 86_400_000),
            first_engaged: Some(at - 10),
            engaged_days: 17,
            day_bits: u128::MAX >> 3,
            day_anchor: 20_400,
            plan_value_first: Some(latest(9.99)),
            engagement_events: 41.0,
            ..Default::default()
        };
        s.attributes
            .insert("country".into(), latest("ü-ß \"x\"".to_string()));
        s.alert.active = true;
        s.alert.count = 2;
        s.alert.last_alert_at = Some(at);
        s.alert.last_probability = 0.8125;
        s.contact.sent = vec![at - 1, at];
        s.contact.awaiting = Some(Awaiting {
            alert_id: "a-1".into(),
            alerted_at: at,
            due: at + 1,
            campaign_id: Some("winback".into()),
            group: Group::Treated,
        });
        s.contact.history = vec![PastAlert {
            alert_id: "a-0".into(),
            at: at - 100,
            probability: 0.75,
            risk_tier: "high".into(),
            campaign_id: None,
            group: Group::Holdout,
            outcome: Some(Retention::Retained),
        }];
        s
    }

    #[test]
    fn every_field_survives_the_compact_encoding_and_a_v3_migration() {
        let s = busy_state();
        let v4 = encode_state(&s);
        assert_eq!(v4[0], 5);
        assert_eq!(decode_state(&v4).unwrap(), s);
        // A version 4 state (no experiments yet) reads with them empty.
        let mut old = v4.clone();
        old[0] = 4;
        old.truncate(old.len() - postcard::to_allocvec(&s.experiments).unwrap().len());
        assert_eq!(decode_state(&old).unwrap(), s, "a version 4 state reads");
        let mut enrolled = s.clone();
        enrolled.experiments.assigned = vec![("winback-offer".into(), "discount".into())];
        enrolled.experiments.baseline = Some(crate::pipeline::experiment::AlertBaseline {
            alert_id: "a-1".into(),
            complaints: 1,
            unsubscribed: false,
            arm: Some(crate::pipeline::experiment::Arm {
                experiment: "winback-offer".into(),
                variant: "discount".into(),
                split: vec![("holdout".into(), 0.1), ("discount".into(), 0.9)],
            }),
        });
        assert_eq!(decode_state(&encode_state(&enrolled)).unwrap(), enrolled);
        let v3 = encode_state_v3(&s);
        assert_eq!(decode_state(&v3).unwrap(), s, "a version 3 state reads");
        assert!(
            v4.len() < v3.len() * 3 / 4,
            "compact: {} bytes against {} before",
            v4.len(),
            v3.len()
        );
        // Truncated or padded bytes are refused, not misread.
        assert!(decode_state(&v4[..v4.len() - 1]).is_err());
        let mut padded = v4.clone();
        padded.push(0);
        let err = decode_state(&padded).unwrap_err().to_string();
        assert!(err.contains("after the end"), "{err}");
    }

    #[test]
    fn version_1_and_2_states_still_load() {
        let s = state(3);
        let v3 = encode_state_v3(&s);
        let v3_fields = bincode::serialize(&v3_tail()).unwrap();
        assert!(v3.ends_with(&v3_fields));
        let mut v2 = v3[..v3.len() - v3_fields.len()].to_vec();
        v2[0] = 2;
        assert_eq!(decode_state(&v2).unwrap(), s);
        let v2_fields = bincode::serialize(&(
            None::<crate::pipeline::event::Millis>,
            crate::pipeline::features::ContactState::default(),
        ))
        .unwrap();
        assert!(v2.ends_with(&v2_fields));
        let mut v1 = v2[..v2.len() - v2_fields.len()].to_vec();
        v1[0] = 1;
        assert_eq!(decode_state(&v1).unwrap(), s);
    }

    #[test]
    fn a_migrated_state_keeps_its_engagement_days_empty() {
        let mut s = state(3);
        s.first_engaged = Some(5);
        s.engaged_days = 9;
        s.day_bits = 0b1011;
        s.day_anchor = 20_000;
        let v3 = encode_state_v3(&s);
        let tail = bincode::serialize(&(
            Some(5i64),
            9u32,
            0b1011u128,
            20_000i64,
            None::<crate::pipeline::features::Latest<f64>>,
            0.0f64,
        ))
        .unwrap();
        assert!(
            v3.ends_with(&tail),
            "the engagement days are the last fields"
        );
        let mut v2 = v3[..v3.len() - tail.len()].to_vec();
        v2[0] = 2;
        let back = decode_state(&v2).unwrap();
        assert_eq!((back.first_engaged, back.engaged_days), (None, 0));
        assert_eq!(back.contact, s.contact);
    }
}

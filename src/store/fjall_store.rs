//! fjall-backed [`Store`]: one fjall keyspace (an LSM tree of its own) per
//! input partition, keyed as in [`keys`](super::keys).
//!
//! A commit is one fjall write batch across the partition's keyspace, so
//! state, due index and offset change together or not at all. fjall hands
//! the batch to the operating system at once (it survives the process
//! dying) and makes it durable (fsync) at the next flush: every
//! `store.flush_every_ms` on a thread of the store's own, and on
//! [`Store::flush`].
//!
//! States that cannot be decoded are copied to the `quarantine` keyspace,
//! keyed as sled keys them.

use std::collections::HashMap;
use std::path::Path;
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::Mutex;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use fjall::{Database, Keyspace, KeyspaceCreateOptions, PersistMode};

use super::keys::{
    customer_of, due_key, due_key_is_for, due_range, parse_due_key, partition_name, partition_of,
    quarantine_key, refuse_other_engine, state_key, DUE_PREFIX, META_KEY, QUARANTINE, STATE_PREFIX,
};
use super::{
    decode_meta, decode_state, encode_meta, encode_state, Commit, PartitionMeta, Store, StoreError,
};
use crate::pipeline::event::Millis;
use crate::pipeline::features::CustomerState;

/// Customer state in a fjall database on disk.
pub struct FjallStore {
    db: Database,
    keyspaces: Mutex<HashMap<String, Keyspace>>,
    /// The background flusher, stopped (its channel closed) and joined on
    /// drop, so the database is closed when the store is.
    flusher: Option<(mpsc::Sender<()>, JoinHandle<()>)>,
}

fn io(source: fjall::Error) -> StoreError {
    StoreError::Fjall {
        context: "read or write".into(),
        source,
    }
}

impl FjallStore {
    /// Opens (or creates) the database in `dir`, made durable every
    /// `flush_every_ms` (`None`: only on [`Store::flush`]).
    pub fn open_with(dir: &Path, flush_every_ms: Option<u64>) -> Result<Self, StoreError> {
        refuse_other_engine(dir, "fjall")?;
        // As with sled, a store closed in this process may hold the
        // directory's lock for a moment after it is dropped.
        let deadline = Instant::now() + Duration::from_secs(10);
        let db = loop {
            match Database::builder(dir).cache_size(256 * 1024 * 1024).open() {
                Err(fjall::Error::Locked) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(50));
                }
                other => {
                    break other.map_err(|source| StoreError::Fjall {
                        context: format!("cannot open state directory {}", dir.display()),
                        source,
                    })?
                }
            }
        };
        let flusher = match flush_every_ms {
            None => None,
            Some(ms) => {
                let (stop, stopped) = mpsc::channel::<()>();
                let db = db.clone();
                let every = Duration::from_millis(ms.max(1));
                let thread = std::thread::Builder::new()
                    .name("fjall-flush".into())
                    .spawn(move || {
                        while let Err(RecvTimeoutError::Timeout) = stopped.recv_timeout(every) {
                            if let Err(e) = db.persist(PersistMode::SyncAll) {
                                tracing::error!(error = %e, "state store flush failed");
                            }
                        }
                    })?;
                Some((stop, thread))
            }
        };
        Ok(Self {
            db,
            keyspaces: Mutex::new(HashMap::new()),
            flusher,
        })
    }

    /// Opens with no background flush (durable on [`Store::flush`]).
    pub fn open(dir: &Path) -> Result<Self, StoreError> {
        Self::open_with(dir, None)
    }

    fn keyspace(&self, name: &str) -> Result<Keyspace, StoreError> {
        let mut open = self.keyspaces.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(k) = open.get(name) {
            return Ok(k.clone());
        }
        let k = self
            .db
            .keyspace(name, KeyspaceCreateOptions::default)
            .map_err(io)?;
        open.insert(name.to_string(), k.clone());
        Ok(k)
    }

    fn partition(&self, partition: i32) -> Result<Keyspace, StoreError> {
        self.keyspace(&partition_name(partition))
    }

    /// The quarantined states: (key `partition/customer/hash`, raw bytes).
    pub fn quarantined(&self) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
        self.keyspace(QUARANTINE)?
            .iter()
            .map(|kv| {
                let (k, v) = kv.into_inner().map_err(io)?;
                Ok((String::from_utf8_lossy(&k).into_owned(), v.to_vec()))
            })
            .collect()
    }
}

impl Drop for FjallStore {
    fn drop(&mut self) {
        if let Some((stop, thread)) = self.flusher.take() {
            drop(stop);
            let _ = thread.join();
        }
    }
}

impl Store for FjallStore {
    fn quarantine(&self, partition: i32, customer: &str) -> Result<(), StoreError> {
        let ks = self.partition(partition)?;
        let mut b = self.db.batch();
        if let Some(raw) = ks.get(state_key(customer)).map_err(io)? {
            // The state itself stays until the batch's commit replaces it.
            b.insert(
                &self.keyspace(QUARANTINE)?,
                quarantine_key(partition, customer, &raw),
                raw,
            );
        }
        for item in ks.prefix(DUE_PREFIX) {
            let k = item.key().map_err(io)?;
            if due_key_is_for(&k, customer) {
                b.remove(&ks, k);
            }
        }
        b.commit().map_err(io)
    }

    fn meta(&self, partition: i32) -> Result<Option<PartitionMeta>, StoreError> {
        match self.partition(partition)?.get(META_KEY).map_err(io)? {
            None => Ok(None),
            Some(v) => decode_meta(&v, partition).map(Some),
        }
    }

    fn get(&self, partition: i32, customer: &str) -> Result<Option<CustomerState>, StoreError> {
        match self
            .partition(partition)?
            .get(state_key(customer))
            .map_err(io)?
        {
            None => Ok(None),
            Some(v) => decode_state(&v).map(Some),
        }
    }

    fn due_between(
        &self,
        partition: i32,
        from: Millis,
        up_to: Millis,
        limit: usize,
    ) -> Result<Vec<(Millis, String)>, StoreError> {
        if from > up_to {
            return Ok(Vec::new());
        }
        let (start, end) = due_range(from, up_to);
        let mut out = Vec::new();
        for item in self.partition(partition)?.range(start..end).take(limit) {
            out.extend(parse_due_key(&item.key().map_err(io)?));
        }
        Ok(out)
    }

    fn commit(&self, partition: i32, c: &Commit) -> Result<(), StoreError> {
        let ks = self.partition(partition)?;
        let mut b = self.db.batch();
        for (id, s) in &c.states {
            match s {
                Some(s) => b.insert(&ks, state_key(id), encode_state(s)),
                None => b.remove(&ks, state_key(id)),
            }
        }
        for (t, id) in &c.due_remove {
            b.remove(&ks, due_key(*t, id));
        }
        for (t, id) in &c.due_add {
            b.insert(&ks, due_key(*t, id), &[] as &[u8]);
        }
        b.insert(&ks, META_KEY, encode_meta(&c.meta));
        b.commit().map_err(io)
    }

    fn flush(&self) -> Result<(), StoreError> {
        self.db.persist(PersistMode::SyncAll).map_err(io)
    }

    fn partitions(&self) -> Result<Vec<i32>, StoreError> {
        let mut v: Vec<i32> = self
            .db
            .list_keyspace_names()
            .iter()
            .filter_map(|n| partition_of(n.as_bytes()))
            .filter(|p| self.meta(*p).ok().flatten().is_some())
            .collect();
        v.sort();
        Ok(v)
    }

    fn drop_partition(&self, partition: i32) -> Result<(), StoreError> {
        // Emptied rather than deleted: fjall's keyspace deletion is hidden
        // from its documented API. With no metadata left the partition is
        // not listed.
        if !self.db.keyspace_exists(&partition_name(partition)) {
            return Ok(());
        }
        self.partition(partition)?.clear().map_err(io)
    }

    fn customers(&self, partition: i32) -> Result<Vec<(String, CustomerState)>, StoreError> {
        let mut out = Vec::new();
        for item in self.partition(partition)?.prefix(STATE_PREFIX) {
            let (k, v) = item.into_inner().map_err(io)?;
            out.push((customer_of(&k), decode_state(&v)?));
        }
        Ok(out)
    }

    fn size_on_disk(&self) -> u64 {
        self.db.disk_space().unwrap_or(0)
    }
}

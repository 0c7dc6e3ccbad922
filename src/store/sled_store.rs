//! sled-backed [`Store`]: one sled tree per input partition, keyed as in
//! [`keys`](super::keys).
//!
//! States that cannot be decoded are copied to the `quarantine` tree, keyed
//! by partition, customer id and the first 8 bytes of their SHA-256 (hex).
//!
//! A commit is one `sled::Batch` on the partition's tree, so state, due index
//! and offset change together or not at all. sled writes it to its log at
//! once and makes it durable at the next flush (every
//! `store.flush_every_ms`, and on [`Store::flush`]).

use std::collections::HashMap;
use std::path::Path;
use std::sync::Mutex;

use super::keys::{
    customer_of, due_key, due_key_is_for, due_range, parse_due_key, partition_name, partition_of,
    quarantine_key, refuse_other_engine, state_key, DUE_PREFIX, META_KEY, QUARANTINE, STATE_PREFIX,
};
use super::{
    decode_meta, decode_state, encode_meta, encode_state, Commit, PartitionMeta, Store, StoreError,
};
use crate::pipeline::event::Millis;
use crate::pipeline::features::CustomerState;

/// Customer state in a sled database on disk.
pub struct SledStore {
    db: sled::Db,
    trees: Mutex<HashMap<i32, sled::Tree>>,
}

fn io(source: sled::Error) -> StoreError {
    StoreError::Sled {
        context: "read or write".into(),
        source,
    }
}

impl SledStore {
    /// Opens (or creates) the database in `dir`.
    ///
    /// `flush_every_ms` is sled's background flush interval (`None` keeps
    /// sled's default of 500 ms).
    pub fn open_with(dir: &Path, flush_every_ms: Option<u64>) -> Result<Self, StoreError> {
        refuse_other_engine(dir, "sled")?;
        let mut cfg = sled::Config::new()
            .path(dir)
            .cache_capacity(256 * 1024 * 1024);
        if let Some(ms) = flush_every_ms {
            cfg = cfg.flush_every_ms(Some(ms));
        }
        // The directory's lock is released when the last handle of a
        // closed store goes, which sled's background flusher may hold for
        // a moment after the store is dropped (a restart in the same
        // process): wait a little for it, as for any short-lived holder.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        let db = loop {
            match cfg.open() {
                Err(sled::Error::Io(e))
                    if e.to_string().contains("could not acquire lock")
                        && std::time::Instant::now() < deadline =>
                {
                    std::thread::sleep(std::time::Duration::from_millis(50));
                }
                other => {
                    break other.map_err(|source| StoreError::Sled {
                        context: format!("cannot open state directory {}", dir.display()),
                        source,
                    })?
                }
            }
        };
        Ok(Self {
            db,
            trees: Mutex::new(HashMap::new()),
        })
    }

    /// The quarantined states: (key `partition/customer/hash`, raw bytes).
    pub fn quarantined(&self) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
        let q = self.db.open_tree(QUARANTINE).map_err(io)?;
        q.iter()
            .map(|kv| {
                let (k, v) = kv.map_err(io)?;
                Ok((String::from_utf8_lossy(&k).into_owned(), v.to_vec()))
            })
            .collect()
    }

    /// Writes raw bytes as a customer's stored state (for tests of what a
    /// damaged store does).
    #[doc(hidden)]
    pub fn put_raw_state(
        &self,
        partition: i32,
        customer: &str,
        bytes: &[u8],
    ) -> Result<(), StoreError> {
        self.tree(partition)?
            .insert(state_key(customer), bytes)
            .map_err(io)?;
        Ok(())
    }

    /// Opens with the default flush interval.
    pub fn open(dir: &Path) -> Result<Self, StoreError> {
        Self::open_with(dir, None)
    }

    fn tree(&self, partition: i32) -> Result<sled::Tree, StoreError> {
        let mut trees = self.trees.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(t) = trees.get(&partition) {
            return Ok(t.clone());
        }
        let t = self.db.open_tree(partition_name(partition)).map_err(io)?;
        trees.insert(partition, t.clone());
        Ok(t)
    }
}

impl Store for SledStore {
    fn quarantine(&self, partition: i32, customer: &str) -> Result<(), StoreError> {
        let tree = self.tree(partition)?;
        let key = state_key(customer);
        if let Some(raw) = tree.get(key).map_err(io)? {
            // The state itself stays until the batch's commit replaces it,
            // so a batch that fails before its commit finds the damage
            // again.
            self.db
                .open_tree(QUARANTINE)
                .map_err(io)?
                .insert(quarantine_key(partition, customer, &raw), raw)
                .map_err(io)?;
        }
        // Its due-index entries (their time was in the state that cannot
        // be read): found by the customer id that ends their keys.
        for item in tree.scan_prefix(DUE_PREFIX) {
            let (k, _) = item.map_err(io)?;
            if due_key_is_for(&k, customer) {
                tree.remove(k).map_err(io)?;
            }
        }
        Ok(())
    }

    fn meta(&self, partition: i32) -> Result<Option<PartitionMeta>, StoreError> {
        match self.tree(partition)?.get(META_KEY).map_err(io)? {
            None => Ok(None),
            Some(v) => decode_meta(&v, partition).map(Some),
        }
    }

    fn get(&self, partition: i32, customer: &str) -> Result<Option<CustomerState>, StoreError> {
        match self.tree(partition)?.get(state_key(customer)).map_err(io)? {
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
        for item in self.tree(partition)?.range(start..end).take(limit) {
            let (k, _) = item.map_err(io)?;
            out.extend(parse_due_key(&k));
        }
        Ok(out)
    }

    fn commit(&self, partition: i32, c: &Commit) -> Result<(), StoreError> {
        let tree = self.tree(partition)?;
        let mut b = sled::Batch::default();
        for (id, s) in &c.states {
            match s {
                Some(s) => b.insert(state_key(id), encode_state(s)),
                None => b.remove(state_key(id)),
            }
        }
        for (t, id) in &c.due_remove {
            b.remove(due_key(*t, id));
        }
        for (t, id) in &c.due_add {
            b.insert(due_key(*t, id), &[] as &[u8]);
        }
        b.insert(META_KEY, encode_meta(&c.meta));
        tree.apply_batch(b).map_err(io)
    }

    fn flush(&self) -> Result<(), StoreError> {
        self.db.flush().map(|_| ()).map_err(io)
    }

    fn partitions(&self) -> Result<Vec<i32>, StoreError> {
        let mut v: Vec<i32> = self
            .db
            .tree_names()
            .iter()
            .filter_map(|n| partition_of(n))
            .filter(|p| self.meta(*p).ok().flatten().is_some())
            .collect();
        v.sort();
        Ok(v)
    }

    fn drop_partition(&self, partition: i32) -> Result<(), StoreError> {
        self.trees
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&partition);
        self.db
            .drop_tree(partition_name(partition))
            .map(|_| ())
            .map_err(io)
    }

    fn customers(&self, partition: i32) -> Result<Vec<(String, CustomerState)>, StoreError> {
        let mut out = Vec::new();
        for item in self.tree(partition)?.scan_prefix(STATE_PREFIX) {
            let (k, v) = item.map_err(io)?;
            out.push((customer_of(&k), decode_state(&v)?));
        }
        Ok(out)
    }

    fn size_on_disk(&self) -> u64 {
        self.db.size_on_disk().unwrap_or(0)
    }
}

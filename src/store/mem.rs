//! In-memory [`Store`]: for tests, benchmarks and replays that need no disk.

use std::collections::{BTreeSet, HashMap};
use std::sync::Mutex;

use super::{Commit, PartitionMeta, Store, StoreError};
use crate::pipeline::event::Millis;
use crate::pipeline::features::CustomerState;

#[derive(Default)]
struct Partition {
    meta: Option<PartitionMeta>,
    states: HashMap<String, CustomerState>,
    due: BTreeSet<(Millis, String)>,
}

/// Customer state in memory, lost when the process ends.
#[derive(Default)]
pub struct MemStore {
    parts: Mutex<HashMap<i32, Partition>>,
}

impl MemStore {
    fn with<T>(&self, partition: i32, f: impl FnOnce(&mut Partition) -> T) -> T {
        let mut parts = self.parts.lock().unwrap_or_else(|e| e.into_inner());
        f(parts.entry(partition).or_default())
    }
}

impl Store for MemStore {
    fn meta(&self, partition: i32) -> Result<Option<PartitionMeta>, StoreError> {
        Ok(self.with(partition, |p| p.meta))
    }

    fn get(&self, partition: i32, customer: &str) -> Result<Option<CustomerState>, StoreError> {
        Ok(self.with(partition, |p| p.states.get(customer).cloned()))
    }

    fn due_between(
        &self,
        partition: i32,
        from: Millis,
        up_to: Millis,
        limit: usize,
    ) -> Result<Vec<(Millis, String)>, StoreError> {
        Ok(self.with(partition, |p| {
            p.due
                .range((from, String::new())..)
                .take_while(|(t, _)| *t <= up_to)
                .take(limit)
                .cloned()
                .collect()
        }))
    }

    fn commit(&self, partition: i32, c: &Commit) -> Result<(), StoreError> {
        self.with(partition, |p| {
            for (id, s) in &c.states {
                match s {
                    Some(s) => p.states.insert(id.clone(), s.clone()),
                    None => p.states.remove(id),
                };
            }
            for d in &c.due_remove {
                p.due.remove(d);
            }
            p.due.extend(c.due_add.iter().cloned());
            p.meta = Some(c.meta);
        });
        Ok(())
    }

    fn flush(&self) -> Result<(), StoreError> {
        Ok(())
    }

    fn partitions(&self) -> Result<Vec<i32>, StoreError> {
        let parts = self.parts.lock().unwrap_or_else(|e| e.into_inner());
        let mut v: Vec<i32> = parts
            .iter()
            .filter(|(_, p)| p.meta.is_some())
            .map(|(k, _)| *k)
            .collect();
        v.sort();
        Ok(v)
    }

    fn drop_partition(&self, partition: i32) -> Result<(), StoreError> {
        self.parts
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&partition);
        Ok(())
    }

    /// Nothing in memory is ever undecodable: the state is just dropped.
    fn quarantine(&self, _partition: i32, _customer: &str) -> Result<(), StoreError> {
        // States in memory are never undecodable: nothing to copy aside.
        Ok(())
    }

    fn customers(&self, partition: i32) -> Result<Vec<(String, CustomerState)>, StoreError> {
        Ok(self.with(partition, |p| {
            let mut v: Vec<_> = p
                .states
                .iter()
                .map(|(k, s)| (k.clone(), s.clone()))
                .collect();
            v.sort_by(|a, b| a.0.cmp(&b.0));
            v
        }))
    }

    fn size_on_disk(&self) -> u64 {
        0
    }
}

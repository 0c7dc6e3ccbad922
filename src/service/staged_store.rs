//! The store as the fold reads it: committed partition metadata (cached),
//! customer states and the due index, with the commits of a batch whose
//! store write is under way seen as already applied.
//!
//! The service overlaps a batch's store write with the next batch's
//! processing: once a batch's records are delivered it is *staged*
//! ([`StagedStore::stage`]), and reads see the store as if the staged
//! commits were applied, while [`StagedStore::write`] writes them on another
//! thread. The next batch is published only once that write has landed
//! ([`StagedStore::landed`]), so commits still happen one after the other.
//! The committer owns it, with the write under way.
//!
//! A stored state that is corrupt is copied aside and rebuilt from the
//! [`StateBackup`] (the changelog, in the service) when it holds it
//! ([`StagedStore::load`]).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

use crate::pipeline::error::{Classify, ErrorClass};
use crate::pipeline::event::Millis;
use crate::pipeline::features::CustomerState;
use crate::service::side_by_side::map_side_by_side;
use crate::store::{Commit, PartitionMeta, StateBackup, Store, StoreError};
use crate::telemetry::events::{PartitionCommitted, StateQuarantined, StoreCommitted};
use crate::telemetry::metrics::Metrics;

/// State writes in a batch from which its partitions are committed on
/// threads of their own (measured: batches of 2,000 events gain 11%,
/// batches of 50 lose 20% to the threads).
pub const PARALLEL_COMMIT_WRITES: usize = 500;

/// The commits of a batch whose records are delivered and whose store
/// write is under way: reads see them as applied.
struct Staged {
    commits: Arc<BTreeMap<i32, Commit>>,
    /// Per partition, the due-index entries the staged commit removes.
    removed: HashMap<i32, HashSet<(Millis, String)>>,
}

/// A customer's state as a batch loaded it.
pub struct Slot {
    /// `next_due` as stored, i.e. the due-index entry to replace.
    pub stored_due: Option<Millis>,
    /// Counted among the partition's customers.
    pub existed: bool,
    pub state: Option<CustomerState>,
}

/// The store with a staged batch seen as applied (see the module's doc).
pub struct StagedStore {
    store: Arc<dyn Store>,
    metrics: Metrics,
    /// Where a corrupt stored state is read again (none: it starts afresh).
    backup: Option<Arc<dyn StateBackup>>,
    metas: HashMap<i32, PartitionMeta>,
    staged: Option<Staged>,
}

impl StagedStore {
    pub fn new(store: Arc<dyn Store>, metrics: Metrics) -> Self {
        Self {
            store,
            metrics,
            backup: None,
            metas: HashMap::new(),
            staged: None,
        }
    }

    /// Rebuilds corrupt stored states from `backup`.
    pub fn with_backup(mut self, backup: Arc<dyn StateBackup>) -> Self {
        self.backup = Some(backup);
        self
    }

    /// The store itself (for what is not about a batch: partitions held,
    /// releases).
    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    /// The committed (or staged) metadata of a partition, cached.
    pub fn meta(&mut self, partition: i32) -> Result<PartitionMeta, StoreError> {
        if let Some(m) = self.metas.get(&partition) {
            return Ok(*m);
        }
        let m = self.store.meta(partition)?.unwrap_or_default();
        self.metas.insert(partition, m);
        Ok(m)
    }

    /// Forgets cached metadata (after a rebalance or a restore, the stored
    /// state may have changed). Never while a staged commit of the
    /// partition is being written: the caller waits for it to land first.
    pub fn forget(&mut self, partition: i32) {
        debug_assert!(
            self.staged_commit(partition).is_none(),
            "partition {partition} forgotten while its commit is being written"
        );
        self.metas.remove(&partition);
    }

    /// Stages a batch's commits (its records delivered, its changelog
    /// closed): until [`StagedStore::landed`], reads see them as applied
    /// and the partitions' metadata is theirs, while the caller writes
    /// them with [`StagedStore::write`] on another thread.
    pub fn stage(&mut self, commits: Arc<BTreeMap<i32, Commit>>) {
        debug_assert!(self.staged.is_none(), "one staged batch at a time");
        let mut removed = HashMap::new();
        for (p, c) in commits.iter() {
            self.metas.insert(*p, c.meta);
            removed.insert(*p, c.due_remove.iter().cloned().collect());
        }
        self.staged = Some(Staged { commits, removed });
    }

    /// The staged commits were written: reads go to the store again.
    pub fn landed(&mut self) {
        if let Some(st) = self.staged.take() {
            self.committed(&st.commits);
        }
    }

    /// Writes commits and notes them (no batch may be staged).
    pub fn commit(&mut self, commits: &BTreeMap<i32, Commit>) -> Result<(), StoreError> {
        debug_assert!(self.staged.is_none(), "a staged batch lands first");
        Self::write(&*self.store, commits)?;
        self.committed(commits);
        Ok(())
    }

    /// Writes commits to the store (the part of [`StagedStore::commit`]
    /// that can run on another thread). Each partition's commit is atomic
    /// on its own, so the partitions of a large batch are committed side
    /// by side: their states are encoded and their engine batches built in
    /// parallel (both engines then apply a batch under a lock of their
    /// own). For a small batch the threads would cost more than they save.
    /// A failed partition fails the whole write, which is tried again
    /// whole: committing the same changes twice leaves the same state.
    pub fn write(store: &dyn Store, commits: &BTreeMap<i32, Commit>) -> Result<(), StoreError> {
        let writes: usize = commits.values().map(|c| c.states.len()).sum();
        let commits: Vec<(&i32, &Commit)> = commits.iter().collect();
        let side_by_side = commits.len() > 1 && writes >= PARALLEL_COMMIT_WRITES;
        map_side_by_side(&commits, side_by_side, |(p, c)| store.commit(**p, c))
            .into_iter()
            .collect()
    }

    /// Notes written commits: their metadata, and the metrics.
    fn committed(&mut self, commits: &BTreeMap<i32, Commit>) {
        for (p, c) in commits {
            self.metas.insert(*p, c.meta);
            self.metrics.emit(PartitionCommitted {
                partition: *p,
                customers: c.meta.customers,
                next_offset: c.meta.next_offset,
            });
        }
        self.metrics.emit(StoreCommitted);
    }

    fn staged_commit(&self, p: i32) -> Option<&Commit> {
        self.staged.as_ref().and_then(|s| s.commits.get(&p))
    }

    /// A customer's state, staged or stored.
    pub fn get(&self, p: i32, id: &str) -> Result<Option<CustomerState>, StoreError> {
        if let Some(c) = self.staged_commit(p) {
            // A commit's states are sorted by customer id.
            if let Ok(i) = c.states.binary_search_by(|(k, _)| k.as_str().cmp(id)) {
                return Ok(c.states[i].1.clone());
            }
        }
        self.store.get(p, id)
    }

    /// A customer's state for a batch; a corrupt stored one is quarantined
    /// (see [`StagedStore::quarantine`]).
    pub fn load(&self, p: i32, id: &str) -> Result<Slot, StoreError> {
        match self.get(p, id) {
            Ok(state) => Ok(Slot {
                stored_due: state.as_ref().and_then(|s| s.next_due),
                existed: state.is_some(),
                state,
            }),
            Err(e) if e.class() == ErrorClass::Corrupt => self.quarantine(p, id, &e),
            Err(e) => Err(e),
        }
    }

    /// Copies a customer's corrupt stored state aside (trying again would
    /// read the same bytes) and rebuilds it from the backup when that holds
    /// it; otherwise the customer starts afresh. The batch's commit then
    /// replaces the stored bytes; a batch that fails before it finds them
    /// again and rebuilds again. A backup that cannot be read for now is an
    /// error of class Transient, so the batch is tried again.
    fn quarantine(&self, p: i32, id: &str, error: &StoreError) -> Result<Slot, StoreError> {
        // The committed metadata, loaded when the batch began.
        let upto = self.metas.get(&p).map_or(0, |m| m.changelog_next);
        let (state, unavailable) = match &self.backup {
            Some(b) if upto > 0 => match b.committed(p, id, upto) {
                Ok(s) => (s, None),
                Err(e) if e.class() == ErrorClass::Transient => {
                    return Err(StoreError::BackupUnavailable {
                        customer: id.to_string(),
                        message: e.to_string(),
                    })
                }
                Err(e) => (None, Some(e.to_string())),
            },
            _ => (None, None),
        };
        // An error here is the store's, settled by its class.
        self.store.quarantine(p, id)?;
        self.metrics.emit(StateQuarantined {
            partition: p,
            customer: id,
            error,
            rebuilt: state.is_some(),
            backup_error: unavailable.as_deref(),
        });
        Ok(Slot {
            // The quarantine removed its due-index entries.
            stored_due: None,
            // Counted among the partition's customers when it was stored.
            existed: true,
            state,
        })
    }

    /// Due-index entries in `[from, to]`, earliest first, at most `limit`,
    /// with any staged commit applied; and whether they are all there are.
    pub fn due_between(
        &self,
        p: i32,
        from: Millis,
        to: Millis,
        limit: usize,
    ) -> Result<(Vec<(Millis, String)>, bool), StoreError> {
        let Some(c) = self.staged_commit(p) else {
            let due = self.store.due_between(p, from, to, limit)?;
            let all = due.len() < limit;
            return Ok((due, all));
        };
        let removed = &self.staged.as_ref().expect("staged").removed[&p];
        // Asking for as many more as the staged commit removes still yields
        // the earliest `limit` of what remains.
        let asked = limit.saturating_add(removed.len());
        let stored = self.store.due_between(p, from, to, asked)?;
        let all = stored.len() < asked;
        let mut due: Vec<(Millis, String)> = stored
            .into_iter()
            .filter(|e| !removed.contains(e))
            .collect();
        due.extend(
            c.due_add
                .iter()
                .filter(|(t, _)| (from..=to).contains(t))
                .cloned(),
        );
        due.sort();
        let all = all && due.len() <= limit;
        due.truncate(limit);
        Ok((due, all))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::MemStore;

    fn state(next_due: Option<Millis>) -> CustomerState {
        CustomerState {
            next_due,
            ..CustomerState::default()
        }
    }

    /// A commit of partition 0 at `next_offset` that writes `states` and
    /// moves due entries.
    fn commit(
        next_offset: i64,
        states: &[(&str, Option<Millis>)],
        due_remove: &[(Millis, &str)],
    ) -> Commit {
        let mut states: Vec<(String, Option<CustomerState>)> = states
            .iter()
            .map(|(id, due)| (id.to_string(), Some(state(*due))))
            .collect();
        states.sort_by(|a, b| a.0.cmp(&b.0));
        Commit {
            due_add: states
                .iter()
                .filter_map(|(id, s)| Some((s.as_ref()?.next_due?, id.clone())))
                .collect(),
            due_remove: due_remove
                .iter()
                .map(|(t, id)| (*t, id.to_string()))
                .collect(),
            meta: PartitionMeta {
                next_offset,
                customers: states.len() as u64,
                ..PartitionMeta::default()
            },
            states,
        }
    }

    #[test]
    fn a_staged_commit_reads_as_applied_until_it_lands() {
        let store: Arc<dyn Store> = Arc::new(MemStore::default());
        let mut view = StagedStore::new(store.clone(), Metrics::new());
        let first = commit(3, &[("a", Some(10)), ("b", Some(20)), ("c", Some(30))], &[]);
        view.commit(&BTreeMap::from([(0, first)])).unwrap();
        // a acts again (due later), d arrives; only staged.
        let second = commit(5, &[("a", Some(40)), ("d", Some(25))], &[(10, "a")]);
        let staged = Arc::new(BTreeMap::from([(0, second)]));
        view.stage(staged.clone());
        assert_eq!(view.meta(0).unwrap().next_offset, 5);
        assert_eq!(view.get(0, "a").unwrap().unwrap().next_due, Some(40));
        assert!(view.get(0, "d").unwrap().is_some());
        assert_eq!(store.get(0, "d").unwrap(), None, "not written yet");
        // The due index as if applied, the earliest `limit` of it, and
        // whether that is all of it.
        let ids = |(due, all): (Vec<(Millis, String)>, bool)| {
            let ids: Vec<String> = due.into_iter().map(|(_, id)| id).collect();
            (ids, all)
        };
        assert_eq!(
            ids(view.due_between(0, 0, 35, 2).unwrap()),
            (vec!["b".to_string(), "d".to_string()], false)
        );
        assert_eq!(
            ids(view.due_between(0, 0, 35, 10).unwrap()),
            (vec!["b".into(), "d".into(), "c".into()], true)
        );
        StagedStore::write(&*store, &staged).unwrap();
        view.landed();
        assert_eq!(store.get(0, "a").unwrap().unwrap().next_due, Some(40));
        assert_eq!(
            ids(view.due_between(0, 0, 35, 10).unwrap()),
            (vec!["b".into(), "d".into(), "c".into()], true)
        );
        // After a rebalance the metadata is read from the store again.
        view.forget(0);
        assert_eq!(view.meta(0).unwrap().next_offset, 5);
    }

    /// A memory store whose commit of partition 1 fails once.
    struct FailsOnce {
        inner: MemStore,
        failed: std::sync::atomic::AtomicBool,
    }

    impl Store for FailsOnce {
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
            if p == 1 && !self.failed.swap(true, std::sync::atomic::Ordering::SeqCst) {
                return Err(StoreError::Io(std::io::Error::other("disk full")));
            }
            self.inner.commit(p, c)
        }
        fn flush(&self) -> Result<(), StoreError> {
            self.inner.flush()
        }
        fn partitions(&self) -> Result<Vec<i32>, StoreError> {
            self.inner.partitions()
        }
        fn drop_partition(&self, p: i32) -> Result<(), StoreError> {
            self.inner.drop_partition(p)
        }
        fn customers(&self, p: i32) -> Result<Vec<(String, CustomerState)>, StoreError> {
            self.inner.customers(p)
        }
        fn size_on_disk(&self) -> u64 {
            0
        }
        fn quarantine(&self, p: i32, c: &str) -> Result<(), StoreError> {
            self.inner.quarantine(p, c)
        }
    }

    #[test]
    fn a_large_write_whose_partition_fails_commits_whole_when_tried_again() {
        let store = Arc::new(FailsOnce {
            inner: MemStore::default(),
            failed: false.into(),
        });
        let mut view = StagedStore::new(store.clone(), Metrics::new());
        // Three partitions, enough states in all to commit side by side.
        let commits: BTreeMap<i32, Commit> = (0..3)
            .map(|p| {
                let ids: Vec<String> = (0..PARALLEL_COMMIT_WRITES / 2)
                    .map(|i| format!("p{p}-c{i}"))
                    .collect();
                let states: Vec<(&str, Option<Millis>)> =
                    ids.iter().map(|id| (id.as_str(), Some(7))).collect();
                (p, commit(ids.len() as i64, &states, &[]))
            })
            .collect();
        let err = view.commit(&commits).unwrap_err();
        assert!(err.to_string().contains("disk full"), "{err}");
        // The partitions that did commit are written; partition 1 is not.
        assert!(store.meta(0).unwrap().is_some() && store.meta(2).unwrap().is_some());
        assert_eq!(store.meta(1).unwrap(), None);
        // Tried again, the whole write commits and every customer is there.
        view.commit(&commits).unwrap();
        for (p, c) in &commits {
            assert_eq!(store.meta(*p).unwrap(), Some(c.meta));
            assert_eq!(store.customers(*p).unwrap().len(), c.states.len());
        }
        let all: usize = (0..3).map(|p| store.customers(p).unwrap().len()).sum();
        assert_eq!(all, 3 * (PARALLEL_COMMIT_WRITES / 2));
    }
}

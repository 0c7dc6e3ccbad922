//! The partitions this instance holds: newly assigned ones are brought up
//! to date from the changelog before their events are processed (each
//! restore a task in a `JoinSet` whose completion the main loop awaits),
//! and local state of partitions owned elsewhere is released after a while.

use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::task::JoinSet;

use crate::kafka::changelog::{Plan, RestoreError, Restored};
use crate::kafka::settings::KafkaConfig;
use crate::kafka::source::Input;
use crate::service::committer::{Committer, Stopped};
use crate::service::staged_store::StagedStore;
use crate::store::{Commit, PartitionMeta, Store, StoreError};
use crate::telemetry::events::{
    Dependency, DependencyFailed, PartitionCommitted, PartitionReleased, PartitionRestored,
};
use crate::telemetry::metrics::Metrics;

/// A restore that ended (done, failed or cancelled).
pub struct Finished {
    partition: i32,
    /// Which task this was (a partition may have had several).
    id: u64,
    /// The assignment epoch it started in.
    epoch: u64,
    started: Instant,
    result: Result<Restored, RestoreError>,
}

/// Whether a partition's local state reached the changelog.
enum Seeded {
    Done,
    /// The service is stopping (or must stop); the next start seeds again.
    Stopped(Stopped),
}

/// A restore under way.
struct Running {
    id: u64,
    cancel: Arc<AtomicBool>,
}

/// Partitions assigned or revoked, those restoring, and the assignment
/// epoch.
pub type Changes = (BTreeSet<i32>, BTreeSet<i32>, u64);

/// Restores and releases of partitions.
pub struct Partitions {
    kafka: KafkaConfig,
    store: Arc<dyn Store>,
    metrics: Metrics,
    /// This instance's `admin.advertised_url`, written into meta records.
    owner: Option<String>,
    tasks: JoinSet<Finished>,
    running: HashMap<i32, Running>,
    next_id: u64,
    /// Partitions with local state that this instance does not own, and
    /// since when.
    unowned_since: HashMap<i32, Instant>,
    release_after: Duration,
}

impl Partitions {
    pub fn new(
        kafka: KafkaConfig,
        store: Arc<dyn Store>,
        metrics: Metrics,
        owner: Option<String>,
        release_after: Duration,
    ) -> Self {
        Self {
            kafka,
            store,
            metrics,
            owner,
            tasks: JoinSet::new(),
            running: HashMap::new(),
            next_id: 0,
            unowned_since: HashMap::new(),
            release_after,
        }
    }

    /// Takes in what rebalances changed: cached metadata of those
    /// partitions is forgotten, restores of partitions that went are
    /// cancelled, and newly assigned partitions start restoring. Returns
    /// the changed partitions.
    pub fn follow(&mut self, input: &Input, view: &mut StagedStore) -> BTreeSet<i32> {
        let changes = Self::changes(input);
        self.apply(changes, view)
    }

    /// What rebalances changed since the last look, taken (for
    /// [`Partitions::apply`]; the caller may wait for a write in between).
    pub fn changes(input: &Input) -> Changes {
        input
            .context()
            .with_assignment(|a| (std::mem::take(&mut a.changed), a.restoring.clone(), a.epoch))
    }

    /// Takes in changes (see [`Partitions::follow`]).
    pub fn apply(&mut self, changes: Changes, view: &mut StagedStore) -> BTreeSet<i32> {
        let (changed, restoring, epoch) = changes;
        for p in &changed {
            view.forget(*p);
            if let Some(r) = self.running.remove(p) {
                r.cancel.store(true, Ordering::Relaxed);
            }
        }
        for p in restoring {
            if !self.running.contains_key(&p) {
                self.start(p, epoch, Duration::ZERO);
            }
        }
        changed
    }

    /// The next restore to end; pending forever while none runs (for
    /// `select!`).
    pub async fn next_restored(&mut self) -> Option<Finished> {
        loop {
            match self.tasks.join_next().await {
                Some(Ok(done)) => return Some(done),
                // Only an abort ends a task without its result.
                Some(Err(_)) => continue,
                None => std::future::pending::<()>().await,
            }
        }
    }

    /// Starts restoring `p` after `delay` (a retry waits).
    fn start(&mut self, p: i32, epoch: u64, delay: Duration) {
        let cancel = Arc::new(AtomicBool::new(false));
        self.next_id += 1;
        let id = self.next_id;
        self.running.insert(
            p,
            Running {
                id,
                cancel: cancel.clone(),
            },
        );
        let (cfg, store, metrics) = (self.kafka.clone(), self.store.clone(), self.metrics.clone());
        // A retry is due 2 s after the failed attempt started (see
        // `restored`), counting this delay.
        let started = Instant::now();
        self.tasks.spawn(async move {
            tokio::time::sleep(delay).await;
            let result = tokio::task::spawn_blocking(move || {
                crate::kafka::changelog::restore(&cfg, p, store.as_ref(), &metrics, &cancel)
            })
            .await
            .unwrap_or_else(|e| Err(RestoreError::Task(e.to_string())));
            Finished {
                partition: p,
                id,
                epoch,
                started,
                result,
            }
        });
    }

    /// Resumes a partition whose restore finished, or retries a failed one.
    pub async fn restored(
        &mut self,
        done: Finished,
        committer: &mut Committer<'_>,
    ) -> Result<(), Stopped> {
        let p = done.partition;
        if self.running.get(&p).is_none_or(|r| r.id != done.id) {
            return Ok(()); // cancelled: revoked or reassigned meanwhile
        }
        self.running.remove(&p);
        let input = committer.input;
        let ctx = input.context();
        if !ctx.with_assignment(|a| a.restoring.contains(&p) && a.epoch == done.epoch) {
            return Ok(()); // the assignment moved on; `follow` starts a new one
        }
        let r = match done.result {
            Ok(r) => r,
            Err(e) => {
                self.metrics.emit(DependencyFailed {
                    dependency: Dependency::Changelog,
                    error: &e,
                    partition: Some(p),
                    action: "retrying the restore (the partition stays paused)",
                });
                let wait = Duration::from_secs(2).saturating_sub(done.started.elapsed());
                self.start(p, done.epoch, wait);
                return Ok(());
            }
        };
        committer.view.forget(p);
        self.metrics.emit(PartitionRestored {
            partition: p,
            plan: &r.plan,
            records: r.records,
            customers: r.meta.map(|m| m.customers),
            seconds: r.seconds,
        });
        if let Some(m) = r.meta {
            self.metrics.emit(PartitionCommitted {
                partition: p,
                customers: m.customers,
                next_offset: m.next_offset,
            });
            // Where the restored state continues (the offset the partition
            // was assigned at was the local one).
            if let Err(e) = input.seek(p, m.next_offset) {
                // Still correct: offsets the state holds are skipped.
                tracing::warn!(partition = p, error = %e, "seek after restore failed");
            }
        }
        if r.plan == Plan::Seed {
            match self.seed(p, committer).await {
                Ok(Seeded::Done) => {}
                Ok(Seeded::Stopped(stop)) => return Err(stop),
                Err(e) => {
                    tracing::warn!(partition = p, error = %e, "cannot write local state to the changelog; retrying");
                    self.start(p, done.epoch, Duration::from_secs(2));
                    return Ok(());
                }
            }
        }
        // Name the new owner in the changelog at once (for the owner
        // lookup); it changes no state.
        if let (Some(m), Some(_)) = (r.meta, &self.owner) {
            let claim = crate::kafka::changelog::meta_record(p, &m, self.owner.as_deref());
            if let Some((_, e)) = committer.publisher.publish(&[claim]).await.failed.first() {
                tracing::warn!(partition = p, error = %e, "cannot name this instance as the owner in the changelog");
            }
        }
        if let Err(e) = input.resume(p) {
            tracing::error!(partition = p, error = %e, "cannot resume partition");
        }
        ctx.with_assignment(|a| a.restoring.remove(&p));
        Ok(())
    }

    /// Writes a partition's whole local state to the changelog (state the
    /// changelog does not have, e.g. from before it existed), closed by a
    /// meta record, and records where the changelog now ends.
    async fn seed(&self, p: i32, committer: &Committer<'_>) -> Result<Seeded, StoreError> {
        let Some(meta) = self.store.meta(p)? else {
            return Ok(Seeded::Done);
        };
        let commit = Commit {
            states: self
                .store
                .customers(p)?
                .into_iter()
                .map(|(id, s)| (id, Some(s)))
                .collect(),
            meta,
            ..Default::default()
        };
        let mut attempt = 0;
        for chunk in crate::kafka::changelog::state_records(p, &commit).chunks(10_000) {
            if let Err(stop) = committer.deliver(chunk.to_vec(), &mut attempt).await {
                return Ok(Seeded::Stopped(stop));
            }
        }
        let closing = crate::kafka::changelog::meta_record(p, &meta, self.owner.as_deref());
        let written = match committer.deliver(vec![closing], &mut attempt).await {
            Ok(w) => w,
            Err(stop) => return Ok(Seeded::Stopped(stop)),
        };
        let next = written.first().map_or(meta.changelog_next, |(_, o)| o + 1);
        self.store.commit(
            p,
            &Commit {
                meta: PartitionMeta {
                    changelog_next: next,
                    ..meta
                },
                ..Default::default()
            },
        )?;
        tracing::info!(
            partition = p,
            customers = commit.states.len(),
            "local state written to the changelog"
        );
        Ok(Seeded::Done)
    }

    /// Stops every restore (between records, leaving whole batches).
    pub fn cancel_all(&mut self) {
        for (_, r) in self.running.drain() {
            r.cancel.store(true, Ordering::Relaxed);
        }
        self.tasks.abort_all();
    }

    /// Deletes local state of partitions another instance has owned for
    /// `kafka.release_unowned_after_seconds`.
    pub fn release_unowned(&mut self, input: &Input, view: &mut StagedStore) {
        let Ok(local) = view.store().partitions() else {
            return;
        };
        let held: BTreeSet<i32> = input
            .context()
            .with_assignment(|a| a.owned.union(&a.restoring).copied().collect());
        let now = Instant::now();
        self.unowned_since
            .retain(|p, _| local.contains(p) && !held.contains(p));
        for p in local.into_iter().filter(|p| !held.contains(p)) {
            let since = *self.unowned_since.entry(p).or_insert(now);
            if now.duration_since(since) >= self.release_after {
                match view.store().drop_partition(p) {
                    Ok(()) => {
                        view.forget(p);
                        self.unowned_since.remove(&p);
                        self.metrics.emit(PartitionReleased { partition: p });
                    }
                    Err(e) => {
                        tracing::warn!(partition = p, error = %e, "cannot release partition state")
                    }
                }
            }
        }
    }
}

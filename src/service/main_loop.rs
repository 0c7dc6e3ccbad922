//! The service's one `select!` loop: shutdown, rebalances, finished
//! restores, commands (reloads), the sweep tick and the next batch of
//! messages.

use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio::sync::mpsc::UnboundedReceiver;
use tokio_util::sync::CancellationToken;

use crate::admin::control::{Command, Control};
use crate::config::Config;
use crate::kafka::record::InMessage;
use crate::service::committer::{Committer, Halted, Stopped};
use crate::service::partitions::Partitions;
use crate::service::processor::{ClockMode, Processor};
use crate::telemetry::events::{Dependency, DependencyFailed, PolicyInUse};

/// The loop and what it works with.
pub struct MainLoop<'a> {
    pub config: Config,
    pub control: &'a Control,
    /// Reloads from the admin server and the model watcher.
    pub commands: UnboundedReceiver<Command>,
    pub processor: Processor,
    pub committer: Committer<'a>,
    pub partitions: Partitions,
    pub shutdown: &'a CancellationToken,
}

impl MainLoop<'_> {
    /// Runs until shutdown (a batch not committed by then is replayed on
    /// the next start), or until a failure no retry can fix.
    pub async fn run(mut self) -> Result<(), Halted> {
        let c = &self.config;
        let mut tick = tokio::time::interval(Duration::from_millis(c.clock.sweep_interval_ms));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        let wake = self.committer.input.context().wake.clone();
        let sweeps = self.processor.clock == ClockMode::Wall;
        // A batch's store write may be under way (the committer holds it):
        // it lands before the next batch is published, and before
        // partitions are taken or given up.

        // When the last batch was closed (see `gather`).
        let mut last_batch: Option<tokio::time::Instant> = None;
        let stopped = loop {
            self.take_commands();
            let input = self.committer.input;
            let writing = self.committer.writing();
            tokio::select! {
                biased;
                _ = self.shutdown.cancelled() => break Ok(()),
                Some(command) = self.commands.recv() => self.apply(command),
                // Restores start as soon as partitions are assigned.
                _ = wake.notified() => {
                    if let Err(stop) = self.committer.land().await {
                        break Err(stop);
                    }
                    self.partitions.follow(input, &mut self.committer.view);
                }
                Some(done) = self.partitions.next_restored() => {
                    if let Err(stop) = self.committer.land().await {
                        break Err(stop);
                    }
                    if let Err(stop) = self.partitions.restored(done, &mut self.committer).await {
                        break Err(stop);
                    }
                    self.partitions.follow(input, &mut self.committer.view);
                }
                _ = tick.tick() => {
                    if let Err(stop) = self.committer.land().await {
                        break Err(stop);
                    }
                    self.partitions.follow(input, &mut self.committer.view);
                    self.partitions.release_unowned(input, &mut self.committer.view);
                    if sweeps {
                        self.take_commands();
                        if let Err(stop) = self.committer.handle(&mut self.processor, None).await {
                            break Err(stop);
                        }
                    }
                }
                // A write that lands while no input comes is committed now.
                res = self.committer.written(), if writing => {
                    if let Err(stop) = self.committer.finish(res).await {
                        break Err(stop);
                    }
                }
                first = input.recv() => {
                    let msgs = match self.gather(first, &mut last_batch).await {
                        Ok(Some(msgs)) => msgs,
                        Ok(None) => continue,
                        Err(stop) => break Err(stop),
                    };
                    // A reload that came while the batch was gathered
                    // applies to this batch.
                    self.take_commands();
                    if let Err(stop) = self.committer.handle(&mut self.processor, Some(msgs)).await {
                        break Err(stop);
                    }
                }
            }
        };
        // A clean stop keeps the batch whose records were delivered.
        let stopped = match stopped {
            Ok(()) | Err(Stopped::Shutdown) => self.committer.land().await.and(stopped),
            halted => halted,
        };
        self.partitions.cancel_all();
        match stopped {
            Ok(()) | Err(Stopped::Shutdown) => Ok(()),
            Err(Stopped::Halted(h)) => Err(h),
        }
    }

    /// Applies the commands that came, from the next batch on.
    fn take_commands(&mut self) {
        while let Ok(command) = self.commands.try_recv() {
            self.apply(command);
        }
    }

    /// Applies a policy or model reload: the policy follows from the
    /// config's `[policy]` and the model file's thresholds.
    fn apply(&mut self, command: Command) {
        let model = match command {
            Command::ReloadPolicy(new) => {
                self.config.policy = new.policy;
                self.config.segments = new.segments;
                self.processor.rules.model.clone()
            }
            Command::ReloadModel(m) => m,
        };
        let rules = &mut self.processor.rules;
        rules.policy = self.config.policy_for(Some(model.file()));
        self.committer.metrics.emit(PolicyInUse {
            policy: &rules.policy,
        });
        rules.model = model.clone();
        self.control.set_current(model, rules.policy.clone());
    }

    /// The batch that starts with `first`: more messages until the batch
    /// is full or `kafka.batch_linger_ms` passed since the previous batch
    /// was closed (`last`, when its gathering ended), less those of
    /// partitions not (or no longer) active here. `None`: nothing to
    /// process.
    ///
    /// The linger counts from the previous batch's close, not from this
    /// one's first message: a batch that is not full closes at most once a
    /// linger, and when processing the previous batch took longer than the
    /// linger, the messages that came meanwhile have waited already, so
    /// they are taken as they are, without waiting more. Batches then grow with the rate
    /// and the time a batch takes, and a live stream's latency is about the
    /// time of two batches rather than two batches and a linger. After a
    /// pause longer than the linger, the first message is taken at once.
    async fn gather(
        &mut self,
        first: Result<InMessage, crate::kafka::KafkaError>,
        last: &mut Option<tokio::time::Instant>,
    ) -> Result<Option<Vec<InMessage>>, Stopped> {
        let k = &self.config.kafka;
        let input = self.committer.input;
        let mut msgs = Vec::with_capacity(k.batch_max_messages);
        match first {
            Ok(m) => {
                self.committer
                    .health
                    .connected
                    .store(true, Ordering::Relaxed);
                msgs.push(m);
            }
            Err(e) => {
                self.committer.metrics.emit(DependencyFailed {
                    dependency: Dependency::KafkaConsume,
                    error: &e,
                    partition: None,
                    action: "retrying",
                });
                tokio::time::sleep(Duration::from_millis(500)).await;
                return Ok(None);
            }
        }
        let deadline = linger_deadline(
            *last,
            tokio::time::Instant::now(),
            Duration::from_millis(k.batch_linger_ms),
        );
        while msgs.len() < k.batch_max_messages {
            match tokio::time::timeout_at(deadline, input.recv()).await {
                Ok(Ok(m)) => msgs.push(m),
                Ok(Err(e)) => {
                    tracing::warn!(error = %e, "consume failed");
                    break;
                }
                Err(_) => break,
            }
        }
        *last = Some(tokio::time::Instant::now());
        // Messages of partitions assigned or revoked while this batch was
        // gathered are dropped: their owner (maybe this instance again,
        // after its restore) fetches them from the stored offset. A write
        // under way lands before partitions change hands.
        let changes = Partitions::changes(input);
        if !changes.0.is_empty() {
            self.committer.land().await?;
        }
        let stale = self.partitions.apply(changes, &mut self.committer.view);
        let active = input.context().active();
        msgs.retain(|m| !stale.contains(&m.partition) && active.contains(&m.partition));
        Ok((!msgs.is_empty()).then_some(msgs))
    }
}

/// When a batch stops waiting for more messages: a linger after the
/// previous batch was closed (`last`), or at once (`now`) when that has
/// passed; a linger after `now` for the first batch. (The config refuses
/// a linger over a minute.)
fn linger_deadline(
    last: Option<tokio::time::Instant>,
    now: tokio::time::Instant,
    linger: Duration,
) -> tokio::time::Instant {
    match last {
        None => now + linger,
        Some(l) => (l + linger).max(now),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_batch_lingers_from_the_previous_close_and_never_into_the_past() {
        let now = tokio::time::Instant::now();
        let ms = Duration::from_millis;
        // The first batch waits a whole linger.
        assert_eq!(linger_deadline(None, now, ms(50)), now + ms(50));
        // Closed 20 ms ago: 30 ms more.
        assert_eq!(
            linger_deadline(Some(now - ms(20)), now, ms(50)),
            now + ms(30)
        );
        // Processing the previous batch (or a quiet spell) took longer
        // than the linger: what is there is taken at once.
        assert_eq!(linger_deadline(Some(now - ms(80)), now, ms(50)), now);
        // No linger: at once.
        assert_eq!(linger_deadline(Some(now - ms(1)), now, ms(0)), now);
        assert_eq!(linger_deadline(None, now, ms(0)), now);
    }
}

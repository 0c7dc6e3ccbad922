//! Reads the outcomes topic whole, from its start, for the experiment
//! readout: `follow` keeps the service's readout up to date, `read_all`
//! serves `churn-alert experiments`. Partitions are assigned by hand and
//! nothing is committed, so every reader sees every record.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};

use crate::kafka::settings::KafkaConfig;
use crate::pipeline::output::OutcomeRecord;
use crate::telemetry::experiments::{ExperimentBoard, OutcomeChange};

/// What one record of the topic means: an outcome, an erasure (a
/// tombstone), or nothing usable (`None`: not an outcome record).
pub fn change(key: Option<&[u8]>, payload: Option<&[u8]>) -> Option<OutcomeChange> {
    match payload {
        None | Some([]) => key
            .and_then(|k| std::str::from_utf8(k).ok())
            .map(|id| OutcomeChange::Erased(id.to_string())),
        // JSON, or a registry frame (`[outputs] format`).
        Some(p) => crate::pipeline::output_format::decode_any(
            crate::pipeline::output_format::Shape::Outcome,
            p,
        )
        .and_then(|v| serde_json::from_value::<OutcomeRecord>(v).ok())
        .map(|o| OutcomeChange::Outcome(Box::new(o))),
    }
}

fn reader(cfg: &KafkaConfig) -> Result<(BaseConsumer, usize), KafkaError> {
    let consumer = crate::kafka::client::hand_assigned_consumer(cfg, "readout")?;
    let topic = cfg.outcomes_topic.as_str();
    let md = consumer.fetch_metadata(Some(topic), Duration::from_secs(10))?;
    let mut tpl = TopicPartitionList::new();
    for t in md.topics() {
        if let Some(e) = t.error() {
            return Err(KafkaError::MetadataFetch(e.into()));
        }
        for p in t.partitions() {
            tpl.add_partition_offset(topic, p.id(), Offset::Beginning)?;
        }
    }
    let partitions = tpl.count();
    consumer.assign(&tpl)?;
    Ok((consumer, partitions))
}

/// Polls records into `batch` until the consumer has nothing more for now
/// (or a thousand records); a partition that reports its end is noted in
/// `at_end` until a record of it arrives.
fn poll_into(
    consumer: &BaseConsumer,
    batch: &mut Vec<OutcomeChange>,
    at_end: &mut std::collections::BTreeSet<i32>,
    skipped: &mut u64,
) -> Result<(), KafkaError> {
    for _ in 0..1000 {
        match consumer.poll(Duration::from_millis(200)) {
            Some(Ok(m)) => {
                at_end.remove(&m.partition());
                match change(m.key(), m.payload()) {
                    Some(c) => batch.push(c),
                    None => *skipped += 1,
                }
            }
            Some(Err(KafkaError::PartitionEOF(p))) => {
                at_end.insert(p);
                return Ok(());
            }
            Some(Err(e)) => return Err(e),
            None => return Ok(()),
        }
    }
    Ok(())
}

/// Every record of the outcomes topic up to its end (blocking). Records
/// that are not outcomes are counted in the second value.
pub fn read_all(cfg: &KafkaConfig) -> Result<(Vec<OutcomeChange>, u64), KafkaError> {
    let (consumer, partitions) = reader(cfg)?;
    let (mut out, mut skipped) = (Vec::new(), 0);
    let mut at_end = std::collections::BTreeSet::new();
    let mut idle = 0;
    while at_end.len() < partitions {
        let before = out.len() + skipped as usize;
        poll_into(&consumer, &mut out, &mut at_end, &mut skipped)?;
        idle = if out.len() + skipped as usize == before {
            idle + 1
        } else {
            0
        };
        // No record and no end for half a minute: the broker stopped
        // answering.
        if idle > 150 {
            return Err(KafkaError::MessageConsumption(
                rdkafka::types::RDKafkaErrorCode::OperationTimedOut,
            ));
        }
    }
    Ok((out, skipped))
}

/// Keeps `board` up to date with the outcomes topic until `stop` is set
/// (blocking; run it on its own thread). A broker that cannot be reached
/// at first is retried every few seconds; later read errors are retried
/// where the reader stands, the readout keeping what it has.
pub fn follow(cfg: &KafkaConfig, board: &ExperimentBoard, stop: &AtomicBool) {
    while !stop.load(Ordering::Relaxed) {
        let (consumer, partitions) = match reader(cfg) {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!(error = %e, topic = %cfg.outcomes_topic, "experiment readout: cannot read the outcomes topic yet; retrying");
                for _ in 0..50 {
                    if stop.load(Ordering::Relaxed) {
                        return;
                    }
                    std::thread::sleep(Duration::from_millis(100));
                }
                continue;
            }
        };
        let (mut at_end, mut skipped) = (std::collections::BTreeSet::new(), 0);
        while !stop.load(Ordering::Relaxed) {
            let mut batch = Vec::new();
            // librdkafka recovers from broker and transport errors by
            // itself: the reader keeps its position and the readout what
            // it has.
            if let Err(e) = poll_into(&consumer, &mut batch, &mut at_end, &mut skipped) {
                tracing::warn!(error = %e, "experiment readout: reading the outcomes topic failed; retrying");
                std::thread::sleep(Duration::from_millis(500));
            }
            board.apply(batch);
            if at_end.len() >= partitions {
                board.caught_up();
            }
        }
        return;
    }
}

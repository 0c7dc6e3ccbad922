//! Which instance owns a customer: the customer's input partition (from
//! the configured key partitioner), and the instance that last wrote that
//! partition's state, as named in the changelog's newest meta record
//! (written with every batch, and when an instance takes a partition over).
//! This works on any Kafka-compatible broker, including ones that do not
//! describe consumer groups.

use std::time::Duration;

use rdkafka::consumer::{BaseConsumer, Consumer};

use crate::kafka::client::{client_config, Role};
use crate::kafka::settings::KafkaConfig;
use crate::pipeline::error::{Classify, ErrorClass};

/// Where a customer lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Located {
    pub partition: i32,
    /// The admin address of the instance that last wrote the partition's
    /// state (`None`: no state yet, or that instance advertises none).
    pub owner: Option<String>,
}

/// Why the owner of a customer could not be found.
#[derive(Debug, thiserror::Error)]
pub enum OwnerError {
    #[error("kafka: {0}")]
    Kafka(#[from] rdkafka::error::KafkaError),
    #[error("input topic {0:?} has no partitions")]
    NoPartitions(String),
}

impl Classify for OwnerError {
    fn class(&self) -> ErrorClass {
        match self {
            Self::Kafka(e) => e.class(),
            Self::NoPartitions(_) => ErrorClass::Config,
        }
    }
}

/// Looks up the partition and owner of a customer id (blocking).
pub fn locate(cfg: &KafkaConfig, key: &[u8]) -> Result<Located, OwnerError> {
    let client: BaseConsumer = client_config(cfg, Role::Consumer, &[], &[]).create()?;
    let md = client.fetch_metadata(Some(&cfg.input_topic), Duration::from_secs(5))?;
    let partitions = md
        .topics()
        .iter()
        .find(|t| t.name() == cfg.input_topic)
        .map_or(0, |t| t.partitions().len());
    if partitions == 0 {
        return Err(OwnerError::NoPartitions(cfg.input_topic.clone()));
    }
    let partition = cfg.partitioner.partition(key, partitions);
    let owner = crate::kafka::changelog::last_meta(cfg, partition)?.and_then(|m| m.owner);
    Ok(Located { partition, owner })
}

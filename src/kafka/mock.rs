//! librdkafka's in-process mock cluster, for the demo: a broker with the
//! given topics, an upstream producer that sends keyed events the way
//! upstream systems do, and a reader of an output topic from its start.

use std::time::Duration;

use rdkafka::config::ClientConfig;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::error::KafkaError;
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::mocking::MockCluster;
use rdkafka::producer::{DefaultProducerContext, FutureProducer, FutureRecord};
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use rdkafka::Message;

use crate::kafka::partitioner::Partitioner;

/// A mock cluster of one broker, alive while this value is.
pub struct MockKafka {
    cluster: MockCluster<'static, DefaultProducerContext>,
}

impl MockKafka {
    /// Starts the cluster with `topics`, each of `partitions` partitions.
    pub fn start(topics: &[&str], partitions: i32) -> Result<Self, KafkaError> {
        let cluster = MockCluster::new(1)?;
        for t in topics {
            cluster.create_topic(t, partitions, 1)?;
        }
        Ok(Self { cluster })
    }

    /// Its `bootstrap.servers`.
    pub fn bootstrap(&self) -> String {
        self.cluster.bootstrap_servers()
    }
}

/// A producer of input events, partitioning as upstream producers do.
pub struct Upstream {
    producer: FutureProducer,
}

impl Upstream {
    pub fn new(bootstrap: &str, partitioner: Partitioner) -> Result<Self, KafkaError> {
        let producer = ClientConfig::new()
            .set("bootstrap.servers", bootstrap)
            .set("linger.ms", "20")
            .set("enable.idempotence", "true")
            .set("partitioner", partitioner.librdkafka_name())
            .create()?;
        Ok(Self { producer })
    }

    /// Sends `(key, payload)` messages, with a `content-type` header when
    /// given; returns where each went (partition, offset).
    pub async fn send(
        &self,
        topic: &str,
        msgs: &[(&str, &[u8])],
        content_type: Option<&str>,
    ) -> Result<Vec<(i32, i64)>, KafkaError> {
        let sends = msgs.iter().map(|(k, p)| {
            let mut r = FutureRecord::to(topic).key(*k).payload(*p);
            if let Some(ct) = content_type {
                r = r.headers(OwnedHeaders::new().insert(Header {
                    key: "content-type",
                    value: Some(ct),
                }));
            }
            self.producer.send(r, Duration::from_secs(30))
        });
        futures::future::join_all(sends)
            .await
            .into_iter()
            .map(|r| r.map(|d| (d.partition, d.offset)).map_err(|(e, _)| e))
            .collect()
    }
}

/// Reads one topic from the start of every partition.
pub struct TopicReader {
    consumer: StreamConsumer,
}

impl TopicReader {
    pub fn from_start(bootstrap: &str, topic: &str, group: &str) -> Result<Self, KafkaError> {
        let consumer: StreamConsumer = ClientConfig::new()
            .set("bootstrap.servers", bootstrap)
            .set("group.id", group)
            .set("enable.auto.commit", "false")
            .create()?;
        let md = consumer.fetch_metadata(Some(topic), Duration::from_secs(5))?;
        let mut tpl = TopicPartitionList::new();
        for t in md.topics() {
            for p in t.partitions() {
                tpl.add_partition_offset(topic, p.id(), Offset::Beginning)?;
            }
        }
        consumer.assign(&tpl)?;
        Ok(Self { consumer })
    }

    /// The next record's payload (`None`: a tombstone).
    pub async fn next(&self) -> Result<Option<Vec<u8>>, KafkaError> {
        let m = self.consumer.recv().await?;
        Ok(m.payload().map(<[u8]>::to_vec))
    }
}
